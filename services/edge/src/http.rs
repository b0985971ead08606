//! The HTTP JSON API and the WebSocket endpoint.
//!
//! Bodies and answers are the protobuf messages in their canonical JSON
//! mapping; errors are `{"error": {"code": "...", "message": "..."}}` with
//! the matching HTTP status.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use fastwebsockets::upgrade::IncomingUpgrade;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use shared::endpoint::endpoints::*;
use shared::endpoint::{self, Endpoint};
use shared::proto::{
    auth as auth_pb, group as group_pb, message as msg_pb, presence as presence_pb,
    social as social_pb,
};
use shared::rpc::Identity;
use shared::{RpcError, subject};

use crate::EdgeState;
use crate::frames::Format;

pub fn router(state: Arc<EdgeState>) -> Router {
    Router::new()
        .route("/v1/auth/register", post(register))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/password", post(change_password))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/profile", get(my_profile).patch(update_profile))
        .route("/v1/profiles", get(profiles))
        .route("/v1/users/search", get(search_users))
        .route("/v1/users/{id}", get(user_profile))
        .route("/v1/friends", get(friends))
        .route("/v1/friends/{id}", delete(delete_friend))
        .route(
            "/v1/friends/requests",
            get(friend_requests).post(request_friend),
        )
        .route("/v1/friends/requests/{id}/accept", post(accept_friend))
        .route("/v1/friends/requests/{id}/reject", post(reject_friend))
        .route("/v1/blocks", get(blocked))
        .route("/v1/blocks/{id}", axum::routing::put(block).delete(unblock))
        .route("/v1/groups", get(my_groups).post(create_group))
        .route(
            "/v1/groups/{id}",
            get(group).patch(update_group).delete(dismiss_group),
        )
        .route(
            "/v1/groups/{id}/members",
            get(group_members).post(invite_members),
        )
        .route("/v1/groups/{id}/members/{user}", delete(remove_member))
        .route(
            "/v1/groups/{id}/members/{user}/role",
            axum::routing::put(set_member_role),
        )
        .route("/v1/groups/{id}/leave", post(leave_group))
        .route("/v1/groups/{id}/transfer", post(transfer_group))
        .route("/v1/groups/{id}/mute", post(mute_group))
        .route("/v1/messages", post(send))
        .route("/v1/conversations", get(conversations))
        .route("/v1/conversations/{id}/messages", get(history))
        .route("/v1/conversations/{id}/read", post(read_conversation))
        .route(
            "/v1/conversations/{id}/settings",
            axum::routing::patch(conversation_settings),
        )
        .route(
            "/v1/conversations/{id}/messages/delete",
            post(delete_messages),
        )
        .route(
            "/v1/conversations/{id}/messages/{seq}/recall",
            post(recall_message),
        )
        .route(
            "/v1/conversations/{id}/messages/{seq}/reads",
            get(message_reads),
        )
        .route("/v1/presence", get(presence))
        .route("/v1/ws", get(websocket))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/", get(crate::web::index))
        .route("/assets/{name}", get(crate::web::asset))
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
        (status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Parses a JSON body into a wire type, with a clear error.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError(RpcError::bad_request(format!("malformed JSON body: {e}"))))
}

/// The caller, from a verified `Authorization: Bearer <token>` header.
pub struct Caller(pub Identity);

impl FromRequestParts<Arc<EdgeState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<EdgeState>,
    ) -> Result<Self, ApiError> {
        let token =
            bearer(&parts.headers).ok_or_else(|| RpcError::unauthorized("missing access token"))?;
        Ok(Caller(state.keyring.verify(token).await?))
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim()).filter(|t| !t.is_empty())
}

async fn register(
    State(state): State<Arc<EdgeState>>,
    body: Bytes,
) -> Result<(StatusCode, Json<auth_pb::RegisterResponse>), ApiError> {
    let request: auth_pb::RegisterRequest = parse(&body)?;
    let reply = state.caller.call_to::<AuthRegister>(&request).await?;
    Ok((StatusCode::CREATED, Json(reply)))
}

async fn login(
    State(state): State<Arc<EdgeState>>,
    body: Bytes,
) -> ApiResult<auth_pb::LoginResponse> {
    let request: auth_pb::LoginRequest = parse(&body)?;
    Ok(Json(state.caller.call_to::<AuthLogin>(&request).await?))
}

/// Calls endpoint `E` as the caller and answers with its reply.
async fn forward_as<E>(
    state: &EdgeState,
    me: &Identity,
    request: &E::Request,
) -> ApiResult<E::Reply>
where
    E: Endpoint<Access = endpoint::User>,
{
    Ok(Json(state.caller.call_as::<E>(me, request).await?))
}

/// Calls a service as the caller and answers with its reply.
async fn forward<Req, Resp>(
    state: &EdgeState,
    subject: &'static str,
    me: &Identity,
    request: &Req,
) -> ApiResult<Resp>
where
    Req: prost::Message,
    Resp: prost::Message + Default,
{
    Ok(Json(state.caller.call(subject, Some(me), request).await?))
}

async fn refresh(
    State(state): State<Arc<EdgeState>>,
    body: Bytes,
) -> ApiResult<auth_pb::LoginResponse> {
    let request: auth_pb::RefreshRequest = parse(&body)?;
    Ok(Json(state.caller.call_to::<AuthRefresh>(&request).await?))
}

async fn logout(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    body: Bytes,
) -> ApiResult<auth_pb::LogoutResponse> {
    let request: auth_pb::LogoutRequest = if body.is_empty() {
        auth_pb::LogoutRequest {}
    } else {
        parse(&body)?
    };
    Ok(Json(
        state.caller.call_as::<AuthLogout>(&me, &request).await?,
    ))
}

async fn change_password(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    body: Bytes,
) -> ApiResult<auth_pb::ChangePasswordResponse> {
    let request: auth_pb::ChangePasswordRequest = parse(&body)?;
    Ok(Json(
        state.caller.call_as::<AuthPassword>(&me, &request).await?,
    ))
}

async fn my_profile(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
) -> ApiResult<social_pb::Profile> {
    one_profile(&state, &me, Vec::new()).await
}

async fn user_profile(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> ApiResult<social_pb::Profile> {
    one_profile(&state, &me, vec![id]).await
}

async fn one_profile(
    state: &EdgeState,
    me: &Identity,
    user_ids: Vec<String>,
) -> ApiResult<social_pb::Profile> {
    let Json(reply) =
        forward_as::<ProfileGet>(state, me, &social_pb::GetProfilesRequest { user_ids }).await?;
    let profile = reply
        .profiles
        .into_iter()
        .next()
        .ok_or_else(|| RpcError::not_found("no such user"))?;
    Ok(Json(profile))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserIdsQuery {
    user_ids: String,
}

/// `a,b,c` as a list of ids.
fn id_list(ids: &str) -> Vec<String> {
    ids.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

async fn profiles(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    query: Result<Query<UserIdsQuery>, QueryRejection>,
) -> ApiResult<social_pb::GetProfilesResponse> {
    let Query(q) = query.map_err(bad_query)?;
    let user_ids = id_list(&q.user_ids);
    if user_ids.is_empty() {
        return Err(ApiError(RpcError::bad_request("user_ids is empty")));
    }
    let request = social_pb::GetProfilesRequest { user_ids };
    forward_as::<ProfileGet>(&state, &me, &request).await
}

async fn update_profile(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    body: Bytes,
) -> ApiResult<social_pb::Profile> {
    let request: social_pb::UpdateProfileRequest = parse(&body)?;
    forward_as::<ProfileUpdate>(&state, &me, &request).await
}

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
    Caller(me): Caller,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> ApiResult<social_pb::SearchResponse> {
    let Query(q) = query.map_err(bad_query)?;
    let request = social_pb::SearchRequest {
        query: q.q,
        limit: q.limit,
        cursor: q.cursor,
    };
    forward_as::<UserSearch>(&state, &me, &request).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FriendsQuery {
    #[serde(default)]
    limit: u32,
    #[serde(default)]
    after_user_id: String,
}

async fn friends(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    query: Result<Query<FriendsQuery>, QueryRejection>,
) -> ApiResult<social_pb::ListFriendsResponse> {
    let Query(q) = query.map_err(bad_query)?;
    let request = social_pb::ListFriendsRequest {
        limit: q.limit,
        after_user_id: q.after_user_id,
    };
    forward_as::<FriendList>(&state, &me, &request).await
}

async fn delete_friend(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(user_id): Path<String>,
) -> ApiResult<social_pb::Empty> {
    let request = social_pb::UserRequest { user_id };
    forward_as::<FriendDelete>(&state, &me, &request).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestsQuery {
    #[serde(default)]
    direction: String,
    #[serde(default)]
    include_answered: bool,
    #[serde(default)]
    limit: u32,
    #[serde(default)]
    before_ms: i64,
}

async fn friend_requests(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    query: Result<Query<RequestsQuery>, QueryRejection>,
) -> ApiResult<social_pb::ListFriendRequestsResponse> {
    let Query(q) = query.map_err(bad_query)?;
    let request = social_pb::ListFriendRequestsRequest {
        direction: q.direction,
        include_answered: q.include_answered,
        limit: q.limit,
        before_ms: q.before_ms,
    };
    forward_as::<FriendRequests>(&state, &me, &request).await
}

async fn request_friend(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    body: Bytes,
) -> ApiResult<social_pb::SendFriendRequestResponse> {
    let request: social_pb::SendFriendRequestRequest = parse(&body)?;
    forward_as::<FriendAsk>(&state, &me, &request).await
}

async fn accept_friend(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(request_id): Path<String>,
) -> ApiResult<social_pb::AnswerFriendRequestResponse> {
    let request = social_pb::AnswerFriendRequestRequest { request_id };
    forward_as::<FriendAccept>(&state, &me, &request).await
}

async fn reject_friend(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(request_id): Path<String>,
) -> ApiResult<social_pb::AnswerFriendRequestResponse> {
    let request = social_pb::AnswerFriendRequestRequest { request_id };
    forward_as::<FriendReject>(&state, &me, &request).await
}

async fn blocked(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
) -> ApiResult<social_pb::ListBlockedResponse> {
    forward_as::<BlockList>(&state, &me, &social_pb::Empty {}).await
}

async fn block(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(user_id): Path<String>,
) -> ApiResult<social_pb::Empty> {
    let request = social_pb::UserRequest { user_id };
    forward_as::<BlockAdd>(&state, &me, &request).await
}

async fn unblock(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(user_id): Path<String>,
) -> ApiResult<social_pb::Empty> {
    let request = social_pb::UserRequest { user_id };
    forward_as::<BlockRemove>(&state, &me, &request).await
}

async fn my_groups(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
) -> ApiResult<group_pb::MyGroupsResponse> {
    let request = group_pb::MyGroupsRequest {};
    forward_as::<GroupMine>(&state, &me, &request).await
}

async fn create_group(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<group_pb::Group>), ApiError> {
    let request: group_pb::CreateGroupRequest = parse(&body)?;
    let created = forward_as::<GroupCreate>(&state, &me, &request).await?;
    Ok((StatusCode::CREATED, created))
}

async fn group(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(group_id): Path<String>,
) -> ApiResult<group_pb::Group> {
    let request = group_pb::GroupRequest { group_id };
    forward_as::<GroupGet>(&state, &me, &request).await
}

async fn update_group(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(group_id): Path<String>,
    body: Bytes,
) -> ApiResult<group_pb::Group> {
    let request = group_pb::UpdateGroupRequest {
        group_id,
        ..parse(&body)?
    };
    forward_as::<GroupUpdate>(&state, &me, &request).await
}

async fn dismiss_group(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(group_id): Path<String>,
) -> ApiResult<group_pb::Empty> {
    let request = group_pb::GroupRequest { group_id };
    forward_as::<GroupDismiss>(&state, &me, &request).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersQuery {
    #[serde(default)]
    limit: u32,
    #[serde(default)]
    after_user_id: String,
}

async fn group_members(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(group_id): Path<String>,
    query: Result<Query<MembersQuery>, QueryRejection>,
) -> ApiResult<group_pb::ListMembersResponse> {
    let Query(q) = query.map_err(bad_query)?;
    let request = group_pb::ListMembersRequest {
        group_id,
        limit: q.limit,
        after_user_id: q.after_user_id,
    };
    forward_as::<GroupMembers>(&state, &me, &request).await
}

async fn invite_members(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(group_id): Path<String>,
    body: Bytes,
) -> ApiResult<group_pb::Group> {
    let request = group_pb::MembersRequest {
        group_id,
        ..parse(&body)?
    };
    forward_as::<GroupInvite>(&state, &me, &request).await
}

async fn remove_member(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path((group_id, user)): Path<(String, String)>,
) -> ApiResult<group_pb::Group> {
    let request = group_pb::MembersRequest {
        group_id,
        user_ids: vec![user],
    };
    forward_as::<GroupRemove>(&state, &me, &request).await
}

async fn set_member_role(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path((group_id, user_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<group_pb::Group> {
    let request = group_pb::SetRoleRequest {
        group_id,
        user_id,
        ..parse(&body)?
    };
    forward_as::<GroupRole>(&state, &me, &request).await
}

async fn leave_group(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(group_id): Path<String>,
) -> ApiResult<group_pb::Empty> {
    let request = group_pb::GroupRequest { group_id };
    forward_as::<GroupLeave>(&state, &me, &request).await
}

async fn transfer_group(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(group_id): Path<String>,
    body: Bytes,
) -> ApiResult<group_pb::Group> {
    let request = group_pb::TransferRequest {
        group_id,
        ..parse(&body)?
    };
    forward_as::<GroupTransfer>(&state, &me, &request).await
}

async fn mute_group(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(group_id): Path<String>,
    body: Bytes,
) -> ApiResult<group_pb::Group> {
    let request = group_pb::MuteRequest {
        group_id,
        ..parse(&body)?
    };
    forward_as::<GroupMute>(&state, &me, &request).await
}

/// A seq from a path segment.
fn seq_of(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| ApiError(RpcError::bad_request("seq must be a positive number")))
}

async fn read_conversation(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(conversation_id): Path<String>,
    body: Bytes,
) -> ApiResult<msg_pb::ReadResponse> {
    let request = msg_pb::ReadRequest {
        conversation_id,
        ..parse(&body)?
    };
    forward(&state, subject::call::CONVERSATION_READ, &me, &request).await
}

async fn conversation_settings(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(conversation_id): Path<String>,
    body: Bytes,
) -> ApiResult<msg_pb::SettingsChanged> {
    let request = msg_pb::SettingsRequest {
        conversation_id,
        ..parse(&body)?
    };
    forward(&state, subject::call::CONVERSATION_SETTINGS, &me, &request).await
}

async fn delete_messages(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(conversation_id): Path<String>,
    body: Bytes,
) -> ApiResult<msg_pb::MessagesDeleted> {
    let request = msg_pb::DeleteRequest {
        conversation_id,
        ..parse(&body)?
    };
    forward(&state, subject::call::MESSAGE_DELETE, &me, &request).await
}

async fn recall_message(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path((conversation_id, seq)): Path<(String, String)>,
) -> ApiResult<msg_pb::MessageRecalled> {
    let request = msg_pb::RecallRequest {
        conversation_id,
        seq: seq_of(&seq)?,
    };
    forward(&state, subject::call::MESSAGE_RECALL, &me, &request).await
}

async fn message_reads(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path((conversation_id, seq)): Path<(String, String)>,
) -> ApiResult<msg_pb::ReadsResponse> {
    let request = msg_pb::ReadsRequest {
        conversation_id,
        seq: seq_of(&seq)?,
    };
    forward(&state, subject::call::MESSAGE_READS, &me, &request).await
}

async fn send(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    body: Bytes,
) -> ApiResult<msg_pb::SendAck> {
    let request: msg_pb::SendRequest = parse(&body)?;
    Ok(Json(
        state
            .caller
            .call(subject::call::MESSAGE_SEND, Some(&me), &request)
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConversationsQuery {
    #[serde(default)]
    limit: u32,
    #[serde(default)]
    before_activity_ms: i64,
    #[serde(default)]
    before_id: String,
    #[serde(default)]
    before_pinned: bool,
}

async fn conversations(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    query: Result<Query<ConversationsQuery>, QueryRejection>,
) -> ApiResult<msg_pb::ConversationsResponse> {
    let Query(q) = query.map_err(bad_query)?;
    let request = msg_pb::ConversationsRequest {
        limit: q.limit,
        before_activity_ms: q.before_activity_ms,
        before_id: q.before_id,
        before_pinned: q.before_pinned,
    };
    Ok(Json(
        state
            .caller
            .call(subject::call::CONVERSATION_LIST, Some(&me), &request)
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    #[serde(default)]
    before_seq: u64,
    #[serde(default)]
    after_seq: u64,
    #[serde(default)]
    limit: u32,
}

async fn history(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<msg_pb::HistoryResponse> {
    let Query(q) = query.map_err(bad_query)?;
    let request = msg_pb::HistoryRequest {
        conversation_id: id,
        before_seq: q.before_seq,
        after_seq: q.after_seq,
        limit: q.limit,
    };
    Ok(Json(
        state
            .caller
            .call(subject::call::MESSAGE_HISTORY, Some(&me), &request)
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceQuery {
    user_ids: String,
}

async fn presence(
    State(state): State<Arc<EdgeState>>,
    Caller(me): Caller,
    query: Result<Query<PresenceQuery>, QueryRejection>,
) -> ApiResult<presence_pb::QueryResponse> {
    let Query(q) = query.map_err(bad_query)?;
    let request = presence_pb::QueryRequest {
        user_ids: id_list(&q.user_ids),
    };
    Ok(Json(
        state
            .caller
            .call(subject::call::PRESENCE_QUERY, Some(&me), &request)
            .await?,
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
    if connected && state.keyring.is_loaded() {
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
    let who = state.keyring.verify(token).await?;
    let format = match query.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("binary") | Some("protobuf") => Format::Binary,
        Some(_) => {
            return Err(ApiError(RpcError::bad_request(
                "format must be json or binary",
            )));
        }
    };
    let permit =
        state.connections.clone().try_acquire_owned().map_err(|_| {
            RpcError::unavailable("too many connections; try another edge or later")
        })?;
    let (response, upgrade) = upgrade
        .upgrade()
        .map_err(|e| RpcError::bad_request(format!("websocket upgrade: {e}")))?;
    let cancel = state.shutdown.child_token();
    let task_state = state.clone();
    state.tasks.spawn(async move {
        crate::ws::run(task_state, who, upgrade, format, cancel).await;
        drop(permit);
    });
    Ok(response.into_response())
}
