//! The HTTP JSON API and the WebSocket endpoint.
//!
//! The API is a route table over the endpoint definitions of
//! [`shared::endpoint::endpoints`]: most routes are one generic forwarder
//! ([`forward`]), so an endpoint reaches HTTP with one line. Bodies and
//! answers are the protobuf messages in their canonical JSON mapping; errors
//! are `{"error": {"code": "...", "message": "..."}}` with the matching HTTP
//! status.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, head, options, patch, post, put};
use axum::{Json, Router};
use fastwebsockets::upgrade::IncomingUpgrade;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use shared::RpcError;
use shared::endpoint::endpoints::*;
use shared::proto::{group as group_pb, presence as presence_pb, social as social_pb};
use shared::rpc::Identity;

use crate::EdgeState;
use crate::frames::Format;
use forward::{public, public_created, user, user_created};

pub mod files;
pub mod forward;

/// One route: a method, a path and what answers it.
type Route = (Method, &'static str, MethodRouter<Arc<EdgeState>>);

/// Every route the edge answers, in one table: [`router`] serves it and
/// [`route_table`] lists it (the authorization matrix in
/// `docs/authorization.md` must have a row for each).
fn routes() -> Vec<Route> {
    use Method as M;
    vec![
        (
            M::POST,
            "/v1/auth/register",
            post(public_created::<AuthRegister>),
        ),
        (M::POST, "/v1/auth/login", post(public::<AuthLogin>)),
        (M::POST, "/v1/auth/refresh", post(public::<AuthRefresh>)),
        (M::POST, "/v1/auth/password", post(user::<AuthPassword>)),
        (
            M::POST,
            "/v1/auth/phone/code",
            post(public::<AuthPhoneCode>),
        ),
        (
            M::POST,
            "/v1/auth/phone/login",
            post(public::<AuthPhoneLogin>),
        ),
        (
            M::POST,
            "/v1/auth/phone/register",
            post(public_created::<AuthPhoneRegister>),
        ),
        (M::POST, "/v1/auth/phone", post(user::<AuthChangePhone>)),
        (M::POST, "/v1/auth/logout", post(user::<AuthLogout>)),
        (M::GET, "/v1/devices", get(user::<AuthDevices>)),
        (M::DELETE, "/v1/devices", delete(user::<AuthLogoutDevice>)),
        (
            M::DELETE,
            "/v1/devices/{device_id}",
            delete(user::<AuthLogoutDevice>),
        ),
        (M::GET, "/v1/profile", get(my_profile)),
        (M::PATCH, "/v1/profile", patch(user::<ProfileUpdate>)),
        (M::GET, "/v1/profiles", get(profiles)),
        (M::GET, "/v1/users/search", get(search_users)),
        (M::GET, "/v1/search/messages", get(user::<SearchMessages>)),
        (
            M::GET,
            "/v1/search/conversations",
            get(user::<SearchConversations>),
        ),
        (M::GET, "/v1/users/{user_id}", get(user_profile)),
        (M::GET, "/v1/friends", get(user::<FriendList>)),
        (
            M::DELETE,
            "/v1/friends/{user_id}",
            delete(user::<FriendDelete>),
        ),
        (M::GET, "/v1/friends/requests", get(user::<FriendRequests>)),
        (M::POST, "/v1/friends/requests", post(user::<FriendAsk>)),
        (
            M::POST,
            "/v1/friends/requests/{request_id}/accept",
            post(user::<FriendAccept>),
        ),
        (
            M::POST,
            "/v1/friends/requests/{request_id}/reject",
            post(user::<FriendReject>),
        ),
        (M::GET, "/v1/blocks", get(user::<BlockList>)),
        (M::PUT, "/v1/blocks/{user_id}", put(user::<BlockAdd>)),
        (
            M::DELETE,
            "/v1/blocks/{user_id}",
            delete(user::<BlockRemove>),
        ),
        (M::GET, "/v1/groups", get(user::<GroupMine>)),
        (M::POST, "/v1/groups", post(user_created::<GroupCreate>)),
        (M::GET, "/v1/groups/{group_id}", get(user::<GroupGet>)),
        (
            M::PATCH,
            "/v1/groups/{group_id}",
            patch(user::<GroupUpdate>),
        ),
        (
            M::DELETE,
            "/v1/groups/{group_id}",
            delete(user::<GroupDismiss>),
        ),
        (
            M::GET,
            "/v1/groups/{group_id}/members",
            get(user::<GroupMembers>),
        ),
        (
            M::POST,
            "/v1/groups/{group_id}/members",
            post(user::<GroupInvite>),
        ),
        (
            M::DELETE,
            "/v1/groups/{group_id}/members/{user_id}",
            delete(remove_member),
        ),
        (
            M::PUT,
            "/v1/groups/{group_id}/members/{user_id}/role",
            put(user::<GroupRole>),
        ),
        (
            M::POST,
            "/v1/groups/{group_id}/leave",
            post(user::<GroupLeave>),
        ),
        (
            M::POST,
            "/v1/groups/{group_id}/transfer",
            post(user::<GroupTransfer>),
        ),
        (
            M::POST,
            "/v1/groups/{group_id}/mute",
            post(user::<GroupMute>),
        ),
        (M::POST, "/v1/messages", post(user::<MessageSend>)),
        (
            M::POST,
            "/v1/messages/{message_id}/transcribe",
            post(user::<MessageTranscribe>),
        ),
        (M::GET, "/v1/conversations", get(user::<ConversationList>)),
        (
            M::GET,
            "/v1/conversations/{conversation_id}/messages",
            get(user::<MessageHistory>),
        ),
        (
            M::POST,
            "/v1/conversations/{conversation_id}/read",
            post(user::<ConversationRead>),
        ),
        (
            M::PATCH,
            "/v1/conversations/{conversation_id}/settings",
            patch(user::<ConversationSettings>),
        ),
        (
            M::POST,
            "/v1/conversations/{conversation_id}/messages/delete",
            post(user::<MessageDelete>),
        ),
        (
            M::POST,
            "/v1/conversations/{conversation_id}/messages/{seq}/recall",
            post(user::<MessageRecall>),
        ),
        (
            M::GET,
            "/v1/conversations/{conversation_id}/messages/{seq}/reads",
            get(user::<MessageReads>),
        ),
        (M::OPTIONS, "/v1/files/uploads", options(files::options)),
        (M::POST, "/v1/files/uploads", post(files::create)),
        (M::HEAD, "/v1/files/uploads/{file_id}", head(files::status)),
        (
            M::PATCH,
            "/v1/files/uploads/{file_id}",
            // Streamed a chunk at a time: no body limit.
            patch(files::patch).layer(axum::extract::DefaultBodyLimit::disable()),
        ),
        (
            M::DELETE,
            "/v1/files/uploads/{file_id}",
            delete(files::terminate),
        ),
        (M::GET, "/v1/files/{file_id}", get(files::download)),
        (
            M::GET,
            "/v1/files/{file_id}/thumbnails/{variant}",
            get(files::thumbnail),
        ),
        (M::GET, "/v1/presence", get(presence)),
        (M::GET, "/v1/ws", get(websocket)),
        (M::GET, "/healthz", get(|| async { "ok" })),
        (M::GET, "/readyz", get(ready)),
        (M::GET, "/", get(crate::web::index)),
        (M::GET, "/assets/{name}", get(crate::web::asset)),
    ]
}

/// The method and path of every route, as [`router`] serves them.
pub fn route_table() -> Vec<(Method, &'static str)> {
    routes()
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect()
}

pub fn router(state: Arc<EdgeState>) -> Router {
    let mut router = Router::new();
    // Routes of one path with different methods merge into one.
    for (_, path, handler) in routes() {
        router = router.route(path, handler);
    }
    router
        .fallback(|| async { ApiError(RpcError::not_found("no such endpoint")) })
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.max_frame_bytes,
        ))
        .with_state(state)
}

/// An API error as JSON with its HTTP status.
pub struct ApiError(pub RpcError);

impl From<RpcError> for ApiError {
    fn from(e: RpcError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "error": self.0.to_proto() });
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = self.0.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

/// Where a request comes from: the socket's peer, or the client a trusted
/// proxy names (see `edge.trusted_proxies`).
pub struct ClientAddr(pub shared::rpc::Client);

impl FromRequestParts<Arc<EdgeState>> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<EdgeState>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip());
        Ok(ClientAddr(shared::rpc::Client {
            ip: peer.map(|peer| state.config.client_ip(peer, &parts.headers)),
        }))
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Parses a JSON body into a wire type, with a clear error.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError(RpcError::bad_request(format!("malformed JSON body: {e}"))))
}

/// The user calling, from a verified `Authorization: Bearer <token>` header.
pub struct Authenticated(pub Identity);

impl FromRequestParts<Arc<EdgeState>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<EdgeState>,
    ) -> Result<Self, ApiError> {
        let token =
            bearer(&parts.headers).ok_or_else(|| RpcError::unauthorized("missing access token"))?;
        Ok(Authenticated(state.authenticate(token).await?.who))
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim()).filter(|t| !t.is_empty())
}

// The routes that are not one call with the request as it came.

/// `GET /v1/profile`: the caller's own profile.
async fn my_profile(
    State(state): State<Arc<EdgeState>>,
    Authenticated(me): Authenticated,
) -> ApiResult<social_pb::Profile> {
    one_profile(&state, &me, Vec::new()).await
}

/// `GET /v1/users/{user_id}`: one profile.
async fn user_profile(
    State(state): State<Arc<EdgeState>>,
    Authenticated(me): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<social_pb::Profile> {
    one_profile(&state, &me, vec![id]).await
}

async fn one_profile(
    state: &EdgeState,
    me: &Identity,
    user_ids: Vec<String>,
) -> ApiResult<social_pb::Profile> {
    let reply = state
        .caller
        .call_as::<ProfileGet>(me, &social_pb::GetProfilesRequest { user_ids })
        .await?;
    let profile = reply
        .profiles
        .into_iter()
        .next()
        .ok_or_else(|| RpcError::not_found("no such user"))?;
    Ok(Json(profile))
}

/// A `user_ids=a,b,c` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserIdsQuery {
    user_ids: String,
}

impl UserIdsQuery {
    fn ids(&self) -> Vec<String> {
        self.user_ids
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }
}

/// `GET /v1/profiles?user_ids=a,b`.
async fn profiles(
    State(state): State<Arc<EdgeState>>,
    Authenticated(me): Authenticated,
    query: Result<Query<UserIdsQuery>, QueryRejection>,
) -> ApiResult<social_pb::GetProfilesResponse> {
    let Query(q) = query.map_err(bad_query)?;
    let user_ids = q.ids();
    if user_ids.is_empty() {
        return Err(ApiError(RpcError::bad_request("user_ids is empty")));
    }
    let request = social_pb::GetProfilesRequest { user_ids };
    Ok(Json(
        state.caller.call_as::<ProfileGet>(&me, &request).await?,
    ))
}

/// `GET /v1/presence?user_ids=a,b`.
async fn presence(
    State(state): State<Arc<EdgeState>>,
    Authenticated(me): Authenticated,
    query: Result<Query<UserIdsQuery>, QueryRejection>,
) -> ApiResult<presence_pb::QueryResponse> {
    let Query(q) = query.map_err(bad_query)?;
    let request = presence_pb::QueryRequest { user_ids: q.ids() };
    Ok(Json(
        state.caller.call_as::<PresenceQuery>(&me, &request).await?,
    ))
}

/// `GET /v1/users/search?q=`: `q` is the request's `query`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    q: String,
    #[serde(default)]
    limit: u32,
    #[serde(default)]
    cursor: String,
}

async fn search_users(
    State(state): State<Arc<EdgeState>>,
    Authenticated(me): Authenticated,
    ClientAddr(client): ClientAddr,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> ApiResult<social_pb::SearchResponse> {
    let Query(q) = query.map_err(bad_query)?;
    let request = social_pb::SearchRequest {
        query: q.q,
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(Json(
        state
            .caller
            .call_for::<UserSearch>(client, Some(&me), &request)
            .await?,
    ))
}

/// `DELETE /v1/groups/{group_id}/members/{user_id}`: one member removed.
async fn remove_member(
    State(state): State<Arc<EdgeState>>,
    Authenticated(me): Authenticated,
    Path((group_id, user_id)): Path<(String, String)>,
) -> ApiResult<group_pb::Group> {
    let request = group_pb::MembersRequest {
        group_id,
        user_ids: vec![user_id],
    };
    Ok(Json(
        state.caller.call_as::<GroupRemove>(&me, &request).await?,
    ))
}

type QueryRejection = axum::extract::rejection::QueryRejection;

fn bad_query(e: QueryRejection) -> ApiError {
    ApiError(RpcError::bad_request(format!(
        "malformed query: {}",
        e.body_text()
    )))
}

async fn ready(State(state): State<Arc<EdgeState>>) -> Response {
    let connected =
        state.nats.client.connection_state() == async_nats::connection::State::Connected;
    if connected && state.keyring.is_loaded() && state.sessions.is_loaded() {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
    format: Option<String>,
}

/// `GET /v1/ws?token=<access token>[&format=binary]`: the token is checked
/// before the upgrade; a bad one gets a 401 JSON error and no WebSocket.
async fn websocket(
    State(state): State<Arc<EdgeState>>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: IncomingUpgrade,
) -> Result<Response, ApiError> {
    let token = query
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .or_else(|| bearer(&headers))
        .ok_or_else(|| RpcError::unauthorized("missing access token"))?;
    let verified = state.authenticate(token).await?;
    let format = match query.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("binary") | Some("protobuf") => Format::Binary,
        Some(_) => {
            return Err(ApiError(RpcError::bad_request(
                "format must be json or binary",
            )));
        }
    };
    let slot = state.limits.open_socket(&verified.who.user_id)?;
    let permit =
        state.connections.clone().try_acquire_owned().map_err(|_| {
            RpcError::unavailable("too many connections; try another edge or later")
        })?;
    let (response, upgrade) = upgrade
        .upgrade()
        .map_err(|e| RpcError::bad_request(format!("websocket upgrade: {e}")))?;
    let cancel = state.shutdown.child_token();
    let task_state = state.clone();
    let guard = Box::new((permit, slot));
    state.tasks.spawn(crate::ws::run(
        task_state, verified, upgrade, format, cancel, guard,
    ));
    Ok(response.into_response())
}
