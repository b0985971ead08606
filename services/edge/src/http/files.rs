//! Files over HTTP: resumable uploads with the tus 1.0 protocol (core,
//! creation, termination, expiration) at `/v1/files/uploads`, and streamed
//! downloads with ranges and ETags at `/v1/files/{file_id}`.
//!
//! The edge holds no file: an upload's body is read in chunks of at most
//! [`CHUNK`] and each is written to the files service before the next is
//! read (so a slow store slows the client, through TCP), and a download is
//! read from the files service a chunk at a time as the client takes it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use shared::RpcError;
use shared::endpoint::endpoints::{
    FileInfo, FileRead, FileUploadCreate, FileUploadDelete, FileUploadStatus, FileUploadWrite,
};
use shared::proto::file as pb;
use shared::rpc::{Caller, Identity};

use super::{ApiError, Authenticated};
use crate::EdgeState;

/// The most bytes one write to or read from the files service carries.
pub const CHUNK: usize = 512 * 1024;
const TUS_VERSION: &str = "1.0.0";
const TUS_EXTENSIONS: &str = "creation,termination,expiration";
const OFFSET_OCTETS: &str = "application/offset+octet-stream";
/// The write that completes an upload composes the file (a pass over its
/// bytes, two for new content): it may take longer than other calls.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(300);

/// A tus answer: its status and headers, no body.
fn tus(status: StatusCode) -> Response {
    let mut response = status.into_response();
    response
        .headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    response
}

fn set(response: &mut Response, name: &'static str, value: impl ToString) {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        response.headers_mut().insert(name, value);
    }
}

/// The refusal of a request that does not speak tus 1.0 (`412` with the
/// version this server speaks), if it does not.
fn refuse_non_tus(headers: &HeaderMap) -> Option<Response> {
    match headers.get("tus-resumable").and_then(|v| v.to_str().ok()) {
        Some(TUS_VERSION) => None,
        _ => {
            let mut refused = tus(StatusCode::PRECONDITION_FAILED);
            set(&mut refused, "tus-version", TUS_VERSION);
            Some(refused)
        }
    }
}

fn bad(message: impl Into<String>) -> Response {
    ApiError(RpcError::bad_request(message)).into_response()
}

fn http_date(ms: i64) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or_default());
    httpdate::fmt_http_date(at)
}

/// The headers every answer about an upload carries.
fn upload_headers(response: &mut Response, upload: &pb::Upload) {
    set(response, "upload-offset", upload.offset);
    set(response, "upload-length", upload.length);
    if upload.expires_ms > 0 {
        set(response, "upload-expires", http_date(upload.expires_ms));
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// `OPTIONS /v1/files/uploads`: what this server speaks (tus discovery).
pub async fn options() -> Response {
    let mut response = tus(StatusCode::NO_CONTENT);
    set(&mut response, "tus-version", TUS_VERSION);
    set(&mut response, "tus-extension", TUS_EXTENSIONS);
    response
}

/// `POST /v1/files/uploads` (tus creation): `Upload-Length`, and in
/// `Upload-Metadata` the `filename` ("file" when absent) and the `kind`
/// (file, image, voice, video or avatar; file when absent). Answers `201` with the upload's URL
/// in `Location`; the URL ends with the file's id.
pub async fn create(
    State(state): State<Arc<EdgeState>>,
    Authenticated(me): Authenticated,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse_non_tus(&headers) {
        return refused;
    }
    if headers.contains_key("upload-defer-length") {
        return bad("Upload-Defer-Length is not supported: send Upload-Length");
    }
    let Some(length) = header_u64(&headers, "upload-length") else {
        return bad("Upload-Length is required: the upload's size in bytes");
    };
    let metadata = match metadata(&headers) {
        Ok(metadata) => metadata,
        Err(message) => return bad(message),
    };
    let find = |key: &str| {
        metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let request = pb::CreateUploadRequest {
        // A client that names nothing gets a plain name.
        name: find("filename")
            .or_else(|| find("name"))
            .unwrap_or_else(|| "file".into()),
        length,
        kind: find("kind").unwrap_or_else(|| "file".into()),
    };
    let created = state
        .caller
        .call_as::<FileUploadCreate>(&me, &request)
        .await;
    let mut response = upload_answer(StatusCode::CREATED, created.as_ref());
    if let Ok(upload) = created {
        set(
            &mut response,
            "location",
            format!("/v1/files/uploads/{}", upload.file_id),
        );
    }
    response
}

/// A tus answer about an upload (`status` and its headers), or the error.
fn upload_answer(status: StatusCode, upload: Result<&pb::Upload, &RpcError>) -> Response {
    match upload {
        Ok(upload) => {
            let mut response = tus(status);
            upload_headers(&mut response, upload);
            response
        }
        Err(e) => ApiError(e.clone()).into_response(),
    }
}

/// `HEAD /v1/files/uploads/{file_id}`: where the caller's upload stands.
pub async fn status(
    State(state): State<Arc<EdgeState>>,
    Authenticated(me): Authenticated,
    Path(file_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse_non_tus(&headers) {
        return refused;
    }
    let upload = state
        .caller
        .call_as::<FileUploadStatus>(&me, &pb::UploadRef { file_id })
        .await;
    upload_answer(StatusCode::OK, upload.as_ref())
}

/// `PATCH /v1/files/uploads/{file_id}`: bytes at `Upload-Offset`, written a
/// chunk at a time. A body cut short keeps what arrived (whole chunks and
/// the rest read so far), so the client resumes from there.
pub async fn patch(
    State(state): State<Arc<EdgeState>>,
    Authenticated(me): Authenticated,
    Path(file_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refused) = refuse_non_tus(&headers) {
        return refused;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type != Some(OFFSET_OCTETS) {
        return ApiError(RpcError::new(
            shared::rpc::ErrorCode::BadRequest,
            format!("Content-Type must be {OFFSET_OCTETS}"),
        ))
        .into_response()
        .map_status(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let Some(offset) = header_u64(&headers, "upload-offset") else {
        return bad("Upload-Offset is required");
    };
    // The body is taken by a task of its own: when the client goes away,
    // hyper drops this handler, and the task still writes what arrived.
    let written = state
        .tasks
        .spawn(write_body(state.clone(), me, file_id, offset, body));
    match written.await {
        Ok(Ok(upload)) => upload_answer(StatusCode::NO_CONTENT, Ok(&upload)),
        Ok(Err(e)) => {
            let mut response = ApiError(e.error).into_response();
            if let Some(offset) = e.offset {
                set(&mut response, "upload-offset", offset);
            }
            response
        }
        Err(_) => ApiError(RpcError::internal()).into_response(),
    }
}

/// A refused PATCH, with the upload's offset when it is the wrong one.
struct PatchError {
    error: RpcError,
    offset: Option<u64>,
}

impl From<RpcError> for PatchError {
    fn from(error: RpcError) -> Self {
        Self {
            error,
            offset: None,
        }
    }
}

async fn write_body(
    state: Arc<EdgeState>,
    me: Identity,
    file_id: String,
    offset: u64,
    body: Body,
) -> Result<pb::Upload, PatchError> {
    let upload = state
        .caller
        .call_as::<FileUploadStatus>(&me, &pb::UploadRef { file_id })
        .await?;
    if upload.offset != offset {
        return Err(PatchError {
            error: RpcError::conflict(format!("the upload is at offset {}", upload.offset)),
            offset: Some(upload.offset),
        });
    }
    let writer = Writer {
        caller: state.caller.clone(),
        last: Caller::new(state.caller.client.clone(), COMPLETE_TIMEOUT),
        me,
        upload,
    };
    Ok(writer.take(body).await?)
}

/// Writes an upload's chunks in order, remembering where it stands.
struct Writer {
    caller: Caller,
    /// The caller for the write that completes the upload.
    last: Caller,
    me: Identity,
    upload: pb::Upload,
}

impl Writer {
    /// Writes `body` from the upload's offset in chunks of [`CHUNK`]; a body
    /// cut short keeps what arrived (written, then refused as cut).
    async fn take(mut self, body: Body) -> Result<pb::Upload, RpcError> {
        let mut buffer = BytesMut::with_capacity(CHUNK);
        let mut frames = body.into_data_stream();
        let mut cut_short = false;
        while let Some(frame) = frames.next().await {
            let mut data = match frame {
                Ok(data) => data,
                Err(e) => {
                    tracing::debug!(error = %e, "upload body cut short");
                    cut_short = true;
                    break;
                }
            };
            while !data.is_empty() {
                let take = (CHUNK - buffer.len()).min(data.len());
                buffer.extend_from_slice(&data.split_to(take));
                if buffer.len() == CHUNK {
                    self.write(buffer.split().freeze()).await?;
                }
            }
        }
        if !buffer.is_empty() {
            self.write(buffer.split().freeze()).await?;
        }
        if cut_short {
            return Err(RpcError::bad_request("the body was cut short"));
        }
        Ok(self.upload)
    }

    async fn write(&mut self, data: Bytes) -> Result<(), RpcError> {
        let completes = self.upload.offset + data.len() as u64 >= self.upload.length;
        let caller = if completes { &self.last } else { &self.caller };
        self.upload = caller
            .call_as::<FileUploadWrite>(
                &self.me,
                &pb::WriteRequest {
                    file_id: self.upload.file_id.clone(),
                    offset: self.upload.offset,
                    data,
                },
            )
            .await?;
        Ok(())
    }
}

/// `DELETE /v1/files/uploads/{file_id}` (tus termination).
pub async fn terminate(
    State(state): State<Arc<EdgeState>>,
    Authenticated(me): Authenticated,
    Path(file_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse_non_tus(&headers) {
        return refused;
    }
    match state
        .caller
        .call_as::<FileUploadDelete>(&me, &pb::UploadRef { file_id })
        .await
    {
        Ok(_) => tus(StatusCode::NO_CONTENT),
        Err(e) => ApiError(e).into_response(),
    }
}

/// `GET /v1/files/{file_id}` (and `HEAD`): the file's bytes, streamed, with
/// a single `Range` (206), `If-None-Match` (304), its name in
/// `Content-Disposition` (UTF-8 `filename*`), images and audio inline,
/// everything else (HTML and SVG included) as an attachment.
pub async fn download(
    State(state): State<Arc<EdgeState>>,
    Authenticated(me): Authenticated,
    Path(file_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(state, me, file_id, String::new(), headers).await
}

/// `GET /v1/files/{file_id}/thumbnails/{variant}`: an image's thumbnail (a
/// JPEG), to whoever may read the image.
pub async fn thumbnail(
    State(state): State<Arc<EdgeState>>,
    Authenticated(me): Authenticated,
    Path((file_id, variant)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    serve(state, me, file_id, variant, headers).await
}

/// A file (or its thumbnail `variant`, when not empty), streamed.
async fn serve(
    state: Arc<EdgeState>,
    me: Identity,
    file_id: String,
    variant: String,
    headers: HeaderMap,
) -> Response {
    let mut file = match state
        .caller
        .call_as::<FileInfo>(&me, &pb::FileRef { file_id })
        .await
    {
        Ok(file) => file,
        Err(e) => return ApiError(e).into_response(),
    };
    if !variant.is_empty() {
        let Some(thumbnail) = file.thumbnails.iter().find(|t| t.variant == variant) else {
            return ApiError(shared::RpcError::not_found("no such thumbnail")).into_response();
        };
        let stem = file
            .name
            .rsplit_once('.')
            .map_or(file.name.as_str(), |(stem, _)| stem);
        file.name = format!("{stem}-{variant}.jpg");
        file.size = thumbnail.size;
        file.sha256 = format!("{}-{variant}", file.sha256);
        file.media_type = "image/jpeg".into();
    }
    let etag = format!("\"{}\"", file.sha256);
    if let Some(tags) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && tags
            .split(',')
            .map(str::trim)
            .any(|t| t == etag || t == "*")
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        set(&mut response, "etag", &etag);
        return response;
    }
    let size = file.size;
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(range) => match parse_range(range, size) {
            Ok(range) => range,
            Err(()) => {
                let mut refused = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                set(&mut refused, "content-range", format!("bytes */{size}"));
                return refused;
            }
        },
    };
    let (status, start, end) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end),
        None => (StatusCode::OK, 0, size),
    };
    let body = Body::from_stream(read_stream(
        state.caller.clone(),
        me,
        (file.file_id.clone(), variant),
        start,
        end,
    ));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    set(&mut response, "content-length", end - start);
    set(&mut response, "accept-ranges", "bytes");
    set(&mut response, "etag", &etag);
    set(&mut response, "content-type", &file.media_type);
    set(&mut response, "x-content-type-options", "nosniff");
    // A file opened in the browser runs nothing and reaches nothing.
    set(
        &mut response,
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; sandbox",
    );
    set(&mut response, "cache-control", "private, no-cache");
    set(
        &mut response,
        "content-disposition",
        content_disposition(&file.media_type, &file.name),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            &mut response,
            "content-range",
            format!("bytes {start}-{}/{size}", end.saturating_sub(1)),
        );
    }
    response
}

/// The bytes `start..end` of a file, read a chunk at a time as the body is
/// taken. A failed read ends the body early (the client resumes by range).
fn read_stream(
    caller: Caller,
    me: Identity,
    (file_id, variant): (String, String),
    start: u64,
    end: u64,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::try_unfold(start, move |offset| {
        let caller = caller.clone();
        let me = me.clone();
        let file_id = file_id.clone();
        let variant = variant.clone();
        async move {
            if offset >= end {
                return Ok(None);
            }
            let length = (end - offset).min(CHUNK as u64) as u32;
            let reply = caller
                .call_as::<FileRead>(
                    &me,
                    &pb::ReadRequest {
                        file_id,
                        offset,
                        length,
                        variant,
                    },
                )
                .await
                .map_err(std::io::Error::other)?;
            if reply.data.is_empty() {
                return Err(std::io::Error::other("the file ended early"));
            }
            let next = offset + reply.data.len() as u64;
            Ok(Some((reply.data, next)))
        }
    })
}

/// One `bytes=` range of a file of `size` bytes as `start..end`; `None` to
/// serve the whole file (several ranges, or another unit); `Err` when it
/// cannot be satisfied.
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (first, last) = spec.split_once('-').ok_or(())?;
    let (first, last) = (first.trim(), last.trim());
    let (start, end) = if first.is_empty() {
        let suffix: u64 = last.parse().map_err(|_| ())?;
        if suffix == 0 {
            return Err(());
        }
        (size.saturating_sub(suffix), size)
    } else {
        let start: u64 = first.parse().map_err(|_| ())?;
        let end = if last.is_empty() {
            size
        } else {
            let last: u64 = last.parse().map_err(|_| ())?;
            if last < start {
                return Err(());
            }
            last.saturating_add(1).min(size)
        };
        (start, end)
    };
    if start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// `inline` for images a browser shows safely and audio, `attachment` for
/// everything else (HTML, SVG, scripts...), with the name as UTF-8
/// (`filename*`) and an ASCII stand-in (`filename`).
fn content_disposition(media_type: &str, name: &str) -> String {
    let inline = (media_type.starts_with("image/") && media_type != "image/svg+xml")
        || media_type.starts_with("audio/");
    let disposition = if inline { "inline" } else { "attachment" };
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("{disposition}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// tus `Upload-Metadata`: `key base64,key base64,...` (a value may be absent).
fn metadata(headers: &HeaderMap) -> Result<Vec<(String, String)>, String> {
    let Some(value) = headers.get("upload-metadata") else {
        return Ok(Vec::new());
    };
    let value = value
        .to_str()
        .map_err(|_| "Upload-Metadata is not ASCII".to_owned())?;
    let mut pairs = Vec::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut parts = pair.split(' ');
        let key = parts.next().unwrap_or_default().to_owned();
        let decoded = match parts.next() {
            Some(encoded) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|_| format!("Upload-Metadata {key}: not base64"))?;
                String::from_utf8(bytes).map_err(|_| format!("Upload-Metadata {key}: not UTF-8"))?
            }
            None => String::new(),
        };
        pairs.push((key, decoded));
    }
    Ok(pairs)
}

trait MapStatus {
    fn map_status(self, status: StatusCode) -> Self;
}

impl MapStatus for Response {
    fn map_status(mut self, status: StatusCode) -> Self {
        *self.status_mut() = status;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_http_says() {
        assert_eq!(parse_range("bytes=0-0", 10), Ok(Some((0, 1))));
        assert_eq!(parse_range("bytes=2-", 10), Ok(Some((2, 10))));
        assert_eq!(parse_range("bytes=-3", 10), Ok(Some((7, 10))));
        assert_eq!(parse_range("bytes=-30", 10), Ok(Some((0, 10))));
        assert_eq!(parse_range("bytes=5-100", 10), Ok(Some((5, 10))));
        assert_eq!(parse_range("bytes=0-1,3-4", 10), Ok(None));
        assert_eq!(parse_range("items=0-1", 10), Ok(None));
        assert_eq!(parse_range("bytes=10-", 10), Err(()));
        assert_eq!(parse_range("bytes=5-2", 10), Err(()));
        assert_eq!(parse_range("bytes=-0", 10), Err(()));
        assert_eq!(parse_range("bytes=x-1", 10), Err(()));
    }

    #[test]
    fn names_are_given_safely_in_content_disposition() {
        assert_eq!(
            content_disposition("image/png", "假期 1.png"),
            "inline; filename=\"__ 1.png\"; filename*=UTF-8''%E5%81%87%E6%9C%9F%201.png"
        );
        assert!(content_disposition("image/svg+xml", "a.svg").starts_with("attachment"));
        assert!(content_disposition("text/html", "a.html").starts_with("attachment"));
        assert!(content_disposition("audio/ogg", "v.ogg").starts_with("inline"));
        let quoted = content_disposition("application/pdf", "a\"b\\c.pdf");
        assert!(quoted.contains("filename=\"a_b_c.pdf\""), "{quoted}");
    }
}
