//! The generic forwarders the route table is made of: one request merged
//! from the path, the query (GET and DELETE) or the JSON body (the other
//! methods), sent to the endpoint's subject, its reply answered as JSON.
//!
//! Path parameters are named after the request's fields (`{group_id}`) and
//! win over the same field in the query or body. Query and body use the
//! canonical protobuf JSON mapping of the request, so unknown fields are
//! refused and 64-bit numbers may be strings.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, RawPathParams, State};
use axum::http::{Method, StatusCode, Uri};
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::RpcError;
use shared::endpoint::{Anonymous, AsUser, Endpoint};

use super::{ApiError, Authenticated, ClientAddr};
use crate::EdgeState;

/// Calls `E` as the authenticated user: `get(user::<GroupGet>)`.
pub async fn user<E>(
    State(state): State<Arc<EdgeState>>,
    Authenticated(me): Authenticated,
    ClientAddr(client): ClientAddr,
    method: Method,
    path: RawPathParams,
    uri: Uri,
    body: Bytes,
) -> Result<Json<E::Reply>, ApiError>
where
    E: Endpoint,
    E::Access: AsUser,
    E::Request: DeserializeOwned,
    E::Reply: Serialize,
{
    let request = request::<E::Request>(&method, &path, &uri, &body)?;
    Ok(Json(
        state
            .caller
            .call_for::<E>(client, Some(&me), &request)
            .await?,
    ))
}

/// [`user`], answered `201 Created` (the reply is what was created).
pub async fn user_created<E>(
    state: State<Arc<EdgeState>>,
    me: Authenticated,
    client: ClientAddr,
    method: Method,
    path: RawPathParams,
    uri: Uri,
    body: Bytes,
) -> Result<(StatusCode, Json<E::Reply>), ApiError>
where
    E: Endpoint,
    E::Access: AsUser,
    E::Request: DeserializeOwned,
    E::Reply: Serialize,
{
    let reply = user::<E>(state, me, client, method, path, uri, body).await?;
    Ok((StatusCode::CREATED, reply))
}

/// Calls `E` without an identity (register, log in, refresh).
pub async fn public<E>(
    State(state): State<Arc<EdgeState>>,
    ClientAddr(client): ClientAddr,
    method: Method,
    path: RawPathParams,
    uri: Uri,
    body: Bytes,
) -> Result<Json<E::Reply>, ApiError>
where
    E: Endpoint,
    E::Access: Anonymous,
    E::Request: DeserializeOwned,
    E::Reply: Serialize,
{
    let request = request::<E::Request>(&method, &path, &uri, &body)?;
    Ok(Json(
        state.caller.call_for::<E>(client, None, &request).await?,
    ))
}

/// [`public`], answered `201 Created`.
pub async fn public_created<E>(
    state: State<Arc<EdgeState>>,
    client: ClientAddr,
    method: Method,
    path: RawPathParams,
    uri: Uri,
    body: Bytes,
) -> Result<(StatusCode, Json<E::Reply>), ApiError>
where
    E: Endpoint,
    E::Access: Anonymous,
    E::Request: DeserializeOwned,
    E::Reply: Serialize,
{
    let reply = public::<E>(state, client, method, path, uri, body).await?;
    Ok((StatusCode::CREATED, reply))
}

/// The request of a call: the query (GET, DELETE) or the JSON body (an
/// empty body is `{}`), then the path parameters over it.
pub fn request<R>(
    method: &Method,
    path: &RawPathParams,
    uri: &Uri,
    body: &Bytes,
) -> Result<R, ApiError>
where
    R: Message + Default + DeserializeOwned,
{
    let params: Vec<(&str, &str)> = path.iter().collect();
    decode_request(method, &params, uri, body)
}

/// [`request`] from plain parts (what the fuzzer drives): `params` are the
/// path parameters, already percent-decoded.
pub fn decode_request<R>(
    method: &Method,
    params: &[(&str, &str)],
    uri: &Uri,
    body: &[u8],
) -> Result<R, ApiError>
where
    R: Message + Default + DeserializeOwned,
{
    let mut request: R = if method == Method::GET || method == Method::DELETE {
        let Query(request) = Query::<R>::try_from_uri(uri).map_err(super::bad_query)?;
        request
    } else if body.is_empty() {
        R::default()
    } else {
        super::parse(body)?
    };
    let fields: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).into()))
        .collect();
    if !fields.is_empty() {
        let from_path: R = serde_json::from_value(fields.into())
            .map_err(|e| ApiError(RpcError::bad_request(format!("malformed path: {e}"))))?;
        request
            .merge(from_path.encode_to_vec().as_slice())
            .map_err(|e| ApiError(RpcError::bad_request(format!("malformed path: {e}"))))?;
    }
    Ok(request)
}
