//! The web client, embedded in the binary and served at `/`.
//!
//! `web/dist` is the committed build of `web/` (TypeScript, built with
//! esbuild; `npm run build` writes it, `node build.mjs --check` fails when it
//! is stale). Running natter needs no node: the files are compiled in.
//!
//! `index.html` is never cached (it names the current assets); the assets
//! under `/assets/` carry a content hash in their names and are cached for a
//! year. Every answer carries a Content-Security-Policy that allows scripts
//! and styles from this origin only (no inline script), and connections
//! (HTTP API and WebSocket) to this origin only.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use include_dir::{Dir, include_dir};

static DIST: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../web/dist");

/// The policy for every page and asset of the client. `connect-src 'self'`
/// covers the WebSocket on the same host and port (CSP level 3).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; media-src 'self' blob:; font-src 'self'; connect-src 'self'; manifest-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /`: the client's page.
pub async fn index() -> Response {
    match DIST.get_file("index.html") {
        Some(file) => respond(file.contents(), "text/html; charset=utf-8", "no-cache"),
        None => (StatusCode::NOT_FOUND, "the web client is not built").into_response(),
    }
}

/// `GET /assets/{name}`: a hashed asset of the client.
pub async fn asset(Path(name): Path<String>) -> Response {
    let found = (!name.contains('/') && !name.starts_with('.'))
        .then(|| DIST.get_file(format!("assets/{name}")))
        .flatten();
    match found {
        Some(file) => respond(
            file.contents(),
            content_type(&name),
            "public, max-age=31536000, immutable",
        ),
        None => crate::http::ApiError(shared::RpcError::not_found("no such asset")).into_response(),
    }
}

fn respond(body: &'static [u8], content_type: &'static str, cache: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("woff2") => "font/woff2",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_build_has_a_page_and_its_assets() {
        let page = std::str::from_utf8(DIST.get_file("index.html").unwrap().contents()).unwrap();
        let assets: Vec<_> = DIST.get_dir("assets").unwrap().files().collect();
        assert!(!assets.is_empty());
        for file in assets {
            let name = file.path().file_name().unwrap().to_str().unwrap();
            if name.ends_with(".js") || name.ends_with(".css") {
                assert!(
                    page.contains(&format!("/assets/{name}")),
                    "{name} is not linked"
                );
            }
        }
        assert!(!page.contains("<script>"), "no inline script");
    }
}
