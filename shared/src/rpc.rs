//! The request/error envelope of every call between natter processes.
//!
//! A call is a NATS request whose payload is a protobuf message. The caller's
//! verified identity travels in headers set by the edge ([`Identity`]).
//! Failures use the NATS micro error headers: `Nats-Service-Error` carries the
//! message and `Nats-Service-Error-Code` a numeric code that maps one to one to
//! a stable [`ErrorCode`]. [`call`] turns all of this back into a typed result
//! and tells "no responders" and "timed out" apart from application errors.

use std::time::Duration;

use async_nats::service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;
use prost::Message;

use crate::ids::{DeviceId, UserId};
use crate::proto::common;
use crate::subject::header;

/// Stable error codes shown to API clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    RateLimited,
    Internal,
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
        }
    }

    /// The numeric code, HTTP-like, used in `Nats-Service-Error-Code` and as
    /// the HTTP status of the edge's API.
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::TooLarge => 413,
            Self::RateLimited => 429,
            Self::Internal => 500,
            Self::Unavailable => 503,
        }
    }

    /// The code of [`ErrorCode::as_str`]; unknown codes are `internal`.
    pub fn parse(code: &str) -> Self {
        match code {
            "bad_request" => Self::BadRequest,
            "unauthorized" => Self::Unauthorized,
            "forbidden" => Self::Forbidden,
            "not_found" => Self::NotFound,
            "conflict" => Self::Conflict,
            "too_large" => Self::TooLarge,
            "rate_limited" => Self::RateLimited,
            "unavailable" => Self::Unavailable,
            _ => Self::Internal,
        }
    }

    pub fn from_status(status: u16) -> Self {
        match status {
            400 => Self::BadRequest,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            409 => Self::Conflict,
            413 => Self::TooLarge,
            429 => Self::RateLimited,
            503 => Self::Unavailable,
            _ => Self::Internal,
        }
    }
}

/// How a `rate_limited` error's message states its wait (it travels in the
/// NATS service error's text, the one field a reply error has).
const RETRY_AFTER: &str = "; retry after ";

/// An error a caller may see: a stable code and a readable message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct RpcError {
    pub code: ErrorCode,
    pub message: String,
}

impl RpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    /// Too many attempts: try again after `wait` (the edge answers 429 with
    /// `Retry-After`; see [`RpcError::retry_after`]).
    pub fn rate_limited(message: impl std::fmt::Display, wait: Duration) -> Self {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        Self::new(
            ErrorCode::RateLimited,
            format!("{message}{RETRY_AFTER}{secs} s"),
        )
    }

    /// The wait a `rate_limited` error asks for, in whole seconds.
    pub fn retry_after(&self) -> Option<u64> {
        if self.code != ErrorCode::RateLimited {
            return None;
        }
        let (_, tail) = self.message.rsplit_once(RETRY_AFTER)?;
        tail.strip_suffix(" s")?.parse().ok()
    }

    /// An internal failure: the caller sees only "internal error"; log the
    /// cause where it happened.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// An error as another process answered it.
    pub fn from_proto(error: &common::Error) -> Self {
        Self::new(ErrorCode::parse(&error.code), error.message.clone())
    }

    pub fn to_proto(&self) -> common::Error {
        common::Error {
            code: self.code.as_str().into(),
            message: self.message.clone(),
        }
    }
}

/// Logs an internal failure (`what` failed because of `err`) and returns the
/// `internal` error the caller sees.
pub fn internal(what: &str, err: impl std::fmt::Display) -> RpcError {
    tracing::error!(error = %err, "{what} failed");
    RpcError::internal()
}

/// A store failure is an internal error: the cause is logged with where it
/// happened (the `?` that met it), the caller sees `internal`.
impl From<sqlx::Error> for RpcError {
    #[track_caller]
    fn from(e: sqlx::Error) -> Self {
        let at = std::panic::Location::caller();
        tracing::error!(error = %e, %at, "store failed");
        RpcError::internal()
    }
}

/// Where a call comes from, as far as the edge can tell: the client's
/// address (set by the edge on every call it forwards; absent on calls
/// between services). Limits per address key on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Client {
    pub ip: Option<std::net::IpAddr>,
}

impl Client {
    pub fn new(ip: std::net::IpAddr) -> Self {
        Self { ip: Some(ip) }
    }

    /// Reads the client header of a request (absent or malformed: unknown).
    pub fn from_headers(headers: Option<&HeaderMap>) -> Self {
        let ip = headers
            .and_then(|h| h.get(header::CLIENT_IP))
            .and_then(|v| v.as_str().parse().ok());
        Self { ip }
    }

    /// Puts the client header on a request (what an edge does).
    pub fn write(&self, headers: &mut HeaderMap) {
        if let Some(ip) = self.ip {
            headers.insert(header::CLIENT_IP, ip.to_string().as_str());
        }
    }
}

/// The verified caller of a call, set by the edge in headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user_id: UserId,
    pub device_id: DeviceId,
}

impl Identity {
    /// Reads the identity headers of a request; `unauthorized` when absent or malformed.
    pub fn from_headers(headers: Option<&HeaderMap>) -> Result<Self, RpcError> {
        let get = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        let user_id = get(header::USER_ID).and_then(|v| UserId::parse(v).ok());
        let device_id = get(header::DEVICE_ID).and_then(|v| DeviceId::parse(v).ok());
        match (user_id, device_id) {
            (Some(user_id), Some(device_id)) => Ok(Self { user_id, device_id }),
            _ => Err(RpcError::unauthorized("missing caller identity")),
        }
    }

    /// For internal endpoints (service to service): refuses calls made on a
    /// user's behalf, so that no client request can reach them through an edge.
    pub fn refuse_user(headers: Option<&HeaderMap>) -> Result<(), RpcError> {
        if headers.and_then(|h| h.get(header::USER_ID)).is_some() {
            return Err(RpcError::forbidden("internal endpoint"));
        }
        Ok(())
    }

    /// Puts the identity headers on a request (what an edge does).
    pub fn write(&self, headers: &mut HeaderMap) {
        headers.insert(header::USER_ID, self.user_id.as_str());
        headers.insert(header::DEVICE_ID, self.device_id.as_str());
    }
}

/// Decodes a request payload, mapping garbage to `bad_request`. Decoding
/// from the payload itself lets `bytes` fields kept as `Bytes` (a file's
/// data) share its memory instead of copying it.
pub fn decode<M: Message + Default>(payload: Bytes) -> Result<M, RpcError> {
    M::decode(payload).map_err(|e| RpcError::bad_request(format!("malformed request: {e}")))
}

/// Answers a micro service request with a message or an error.
pub async fn respond<M: Message>(
    request: &async_nats::service::Request,
    result: Result<M, RpcError>,
) {
    let reply = match result {
        Ok(message) => Ok(Bytes::from(message.encode_to_vec())),
        Err(err) => Err(async_nats::service::error::Error {
            status: err.message,
            code: err.code.status() as usize,
        }),
    };
    match request.respond(reply).await {
        Ok(()) => {}
        // Better a clear error than a caller left to time out.
        Err(e) if e.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
            tracing::warn!(subject = %request.message.subject, "reply larger than NATS's max_payload");
            let error = async_nats::service::error::Error {
                status: "the reply is larger than the server's max_payload".into(),
                code: crate::ErrorCode::Internal.status() as usize,
            };
            if let Err(e) = request.respond(Err(error)).await {
                tracing::debug!(error = %e, subject = %request.message.subject, "could not send reply");
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, subject = %request.message.subject, "could not send reply");
        }
    }
}

/// A NATS client plus the timeout of calls made through it.
#[derive(Clone, Debug)]
pub struct Caller {
    pub client: async_nats::Client,
    pub timeout: Duration,
}

impl Caller {
    pub fn new(client: async_nats::Client, timeout: Duration) -> Self {
        Self { client, timeout }
    }

    /// Calls endpoint `E` as the user `me` (through an edge).
    pub async fn call_as<E>(
        &self,
        me: &Identity,
        request: &E::Request,
    ) -> Result<E::Reply, RpcError>
    where
        E: crate::endpoint::Endpoint,
        E::Access: crate::endpoint::AsUser,
    {
        self.call(E::SUBJECT, Some(me), request).await
    }

    /// Calls an internal or public endpoint `E` (no user identity).
    pub async fn call_to<E>(&self, request: &E::Request) -> Result<E::Reply, RpcError>
    where
        E: crate::endpoint::Endpoint,
        E::Access: crate::endpoint::Anonymous,
    {
        self.call(E::SUBJECT, None, request).await
    }

    /// Calls endpoint `E` for a client (an edge forwarding a request): as
    /// the user `me` when there is one, with the client's address.
    pub async fn call_for<E>(
        &self,
        client: Client,
        me: Option<&Identity>,
        request: &E::Request,
    ) -> Result<E::Reply, RpcError>
    where
        E: crate::endpoint::Endpoint,
    {
        let mut headers = HeaderMap::new();
        if let Some(identity) = me {
            identity.write(&mut headers);
        }
        client.write(&mut headers);
        let reply = self
            .call_bytes(E::SUBJECT, headers, Bytes::from(request.encode_to_vec()))
            .await?;
        E::Reply::decode(reply).map_err(|e| {
            tracing::warn!(error = %e, subject = E::SUBJECT, "malformed reply");
            RpcError::internal()
        })
    }

    /// Calls `subject` with `request` as `identity` (None for anonymous calls
    /// such as login) and decodes the reply. Prefer the typed
    /// [`Caller::call_as`] and [`Caller::call_to`].
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        subject: &'static str,
        identity: Option<&Identity>,
        request: &Req,
    ) -> Result<Resp, RpcError> {
        let mut headers = HeaderMap::new();
        if let Some(identity) = identity {
            identity.write(&mut headers);
        }
        let reply = self
            .call_bytes(subject, headers, Bytes::from(request.encode_to_vec()))
            .await?;
        Resp::decode(reply).map_err(|e| {
            tracing::warn!(error = %e, subject, "malformed reply");
            RpcError::internal()
        })
    }

    /// Sends `payload` with `headers` to `subject` and returns the reply's
    /// payload, or the error the service answered. The typed calls use it;
    /// contract tests use it to send what no typed call would.
    pub async fn call_bytes(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<Bytes, RpcError> {
        let req = async_nats::Request::new()
            .payload(payload)
            .headers(headers)
            .timeout(Some(self.timeout));
        let reply = self
            .client
            .send_request(subject.to_owned(), req)
            .await
            .map_err(|e| match e.kind() {
                RequestErrorKind::NoResponders => {
                    RpcError::unavailable(format!("no service answers {subject}"))
                }
                RequestErrorKind::TimedOut => RpcError::unavailable(format!("{subject} timed out")),
                _ => {
                    tracing::warn!(error = %e, subject, "request failed");
                    RpcError::unavailable(format!("{subject} failed"))
                }
            })?;
        if let Some(headers) = reply.headers.as_ref()
            && let Some(code) = headers.get(NATS_SERVICE_ERROR_CODE)
        {
            let status = code.as_str().parse().unwrap_or(500);
            let message = headers
                .get(NATS_SERVICE_ERROR)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_else(|| "error".into());
            return Err(RpcError::new(ErrorCode::from_status(status), message));
        }
        Ok(reply.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_states_its_wait_in_whole_seconds() {
        let e = RpcError::rate_limited("too many login attempts", Duration::from_millis(1500));
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert_eq!(e.retry_after(), Some(2));
        assert!(e.message.starts_with("too many login attempts"));
        assert_eq!(
            RpcError::rate_limited("x", Duration::ZERO).retry_after(),
            Some(1)
        );
        assert_eq!(
            RpcError::bad_request("; retry after 3 s").retry_after(),
            None
        );
    }

    #[test]
    fn the_client_address_travels_in_a_header() {
        let mut headers = HeaderMap::new();
        let client = Client::new("2001:db8::7".parse().unwrap());
        client.write(&mut headers);
        assert_eq!(Client::from_headers(Some(&headers)), client);
        assert_eq!(Client::from_headers(None), Client::default());
        headers.insert(header::CLIENT_IP, "not an address");
        assert_eq!(Client::from_headers(Some(&headers)).ip, None);
    }

    #[test]
    fn codes_round_trip_through_status() {
        use ErrorCode::*;
        for code in [
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            TooLarge,
            RateLimited,
            Internal,
            Unavailable,
        ] {
            assert_eq!(ErrorCode::from_status(code.status()), code);
        }
    }

    #[test]
    fn identity_requires_both_valid_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::USER_ID, "u1");
        assert!(Identity::from_headers(Some(&h)).is_err());
        h.insert(header::DEVICE_ID, "d.1");
        assert!(Identity::from_headers(Some(&h)).is_err());
        h.insert(header::DEVICE_ID, "d1");
        assert_eq!(
            Identity::from_headers(Some(&h)).unwrap(),
            Identity {
                user_id: UserId::parse("u1").unwrap(),
                device_id: DeviceId::parse("d1").unwrap()
            }
        );
        assert!(Identity::from_headers(None).is_err());
    }
}
