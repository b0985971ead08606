//! A stand-in SMS gateway on loopback: it receives the auth service's
//! webhook POSTs, checks their Standard Webhooks signature, and keeps the
//! codes for the tests to read (as a person reads their phone).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

/// The signing secret every test system's auth service uses.
pub const SECRET: &str = "whsec_bmF0dGVyLWUyZS1zbXMtd2ViaG9vay1zZWNyZXQ=";

#[derive(Default)]
struct Inbox {
    /// Codes received per number, oldest first.
    codes: HashMap<String, Vec<String>>,
    /// Bodies whose signature did not verify.
    forged: usize,
}

pub struct Gateway {
    pub url: String,
    inbox: Arc<Mutex<Inbox>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(inbox): State<Arc<Mutex<Inbox>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let verifier = standardwebhooks::Webhook::new(SECRET).expect("the test secret");
    let mut inbox = shared::sync::lock(&inbox);
    if verifier.verify(&body, &headers).is_err() {
        inbox.forged += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(message) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let (Some(to), Some(code), Some(text)) = (
        message["to"].as_str(),
        message["code"].as_str(),
        message["text"].as_str(),
    ) else {
        return StatusCode::BAD_REQUEST;
    };
    if !text.contains(code) {
        return StatusCode::BAD_REQUEST;
    }
    inbox
        .codes
        .entry(to.to_owned())
        .or_default()
        .push(code.to_owned());
    StatusCode::NO_CONTENT
}

impl Gateway {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/sms", listener.local_addr()?);
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let app = axum::Router::new()
            .route("/sms", axum::routing::post(receive))
            .with_state(inbox.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, inbox, task })
    }

    /// The newest code sent to `phone` (international form), waiting for
    /// one to arrive after `seen` codes.
    pub async fn code_after(&self, phone: &str, seen: usize) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(code) = shared::sync::lock(&self.inbox)
                .codes
                .get(phone)
                .filter(|codes| codes.len() > seen)
                .and_then(|codes| codes.last().cloned())
            {
                return Ok(code);
            }
            if tokio::time::Instant::now() > deadline {
                return None.with_context(|| format!("no code reached {phone}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Codes sent to `phone` so far.
    pub fn count(&self, phone: &str) -> usize {
        shared::sync::lock(&self.inbox)
            .codes
            .get(phone)
            .map_or(0, Vec::len)
    }

    /// Webhook calls whose signature did not verify.
    pub fn forged(&self) -> usize {
        shared::sync::lock(&self.inbox).forged
    }
}
