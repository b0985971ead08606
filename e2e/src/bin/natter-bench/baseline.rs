//! The raw NATS limit on the same server, with payloads the size of a chat
//! message: request-reply with 64 requests in flight, core pub/sub, and
//! JetStream publishes to a file stream with 64 acks awaited at once (the
//! durable append every natter message makes several of).
//! natter's figures are printed as ratios to these, because absolute
//! figures on a shared machine drift from run to run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::report::round;
use crate::target::Target;
use crate::{Plan, wire};

/// Requests in flight in the request-reply baseline.
const IN_FLIGHT: usize = 64;
/// Most messages published in the pub/sub baseline.
const MAX_PUBLISHED: u64 = 20_000_000;

pub struct Baseline {
    pub payload_bytes: usize,
    pub request_reply_per_sec: f64,
    pub publish_per_sec: f64,
    pub received_per_sec: f64,
    pub dropped: u64,
    /// Acked JetStream publishes per second; None when the server refused
    /// the bench's temporary stream.
    pub jetstream_per_sec: Option<f64>,
}

impl Baseline {
    pub fn to_json(&self) -> Value {
        json!({
            "payload_bytes": self.payload_bytes,
            "request_reply_in_flight": IN_FLIGHT,
            "request_reply_per_sec": round(self.request_reply_per_sec),
            "pubsub_published_per_sec": round(self.publish_per_sec),
            "pubsub_received_per_sec": round(self.received_per_sec),
            "pubsub_dropped": self.dropped,
            "jetstream_publish_per_sec": self.jetstream_per_sec.map(round),
        })
    }
}

pub async fn run(target: &Target, plan: &Plan) -> anyhow::Result<Baseline> {
    let payload = bytes::Bytes::from(wire::typical_payload());
    let phase = Duration::from_secs(plan.phase_secs);
    let url = target.nats_url();
    let inbox = shared::ids::new_id();

    // Request-reply: one responder connection, one requester connection.
    let responder = async_nats::connect(&url).await?;
    let requester = async_nats::connect(&url).await?;
    let subject = format!("bench.echo.{inbox}");
    let mut requests = responder.subscribe(subject.clone()).await?;
    let echo = {
        let responder = responder.clone();
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                if let Some(reply) = request.reply {
                    let _ = responder.publish(reply, request.payload).await;
                }
            }
        })
    };
    responder.flush().await?;
    let request_reply_per_sec = saturate(phase, |_| {
        requester.request(subject.clone(), payload.clone())
    })
    .await?;
    echo.abort();

    // Pub/sub: one publisher connection, one subscriber connection.
    let subscriber = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(&url)
        .await?;
    let publisher = async_nats::connect(&url).await?;
    let subject = format!("bench.pub.{inbox}");
    let mut messages = subscriber.subscribe(subject.clone()).await?;
    subscriber.flush().await?;
    let received = Arc::new(AtomicU64::new(0));
    let last = Arc::new(std::sync::Mutex::new(Instant::now()));
    let counter = {
        let (received, last) = (received.clone(), last.clone());
        tokio::spawn(async move {
            while messages.next().await.is_some() {
                received.fetch_add(1, Ordering::Relaxed);
                *last.lock().expect("last lock") = Instant::now();
            }
        })
    };
    let started = Instant::now();
    let mut published = 0u64;
    while started.elapsed() < phase && published < MAX_PUBLISHED {
        for _ in 0..1000 {
            publisher.publish(subject.clone(), payload.clone()).await?;
        }
        published += 1000;
    }
    publisher.flush().await?;
    let publish_secs = started.elapsed().as_secs_f64();
    // Wait (bounded) until the subscriber has everything or stops receiving.
    let mut seen = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = received.load(Ordering::Relaxed);
        if now >= published || now == seen {
            break;
        }
        seen = now;
    }
    counter.abort();
    let received = received.load(Ordering::Relaxed);
    let receive_secs = last
        .lock()
        .expect("last lock")
        .duration_since(started)
        .as_secs_f64()
        .max(publish_secs);
    let jetstream_per_sec = match jetstream(&publisher, &inbox, &payload, phase).await {
        Ok(rate) => Some(rate),
        Err(e) => {
            eprintln!("JetStream baseline skipped: {e:#}");
            None
        }
    };
    let result = Baseline {
        jetstream_per_sec,
        payload_bytes: payload.len(),
        request_reply_per_sec,
        publish_per_sec: published as f64 / publish_secs,
        received_per_sec: received as f64 / receive_secs,
        dropped: published.saturating_sub(received),
    };
    println!(
        "\nraw NATS ({} B payload): request-reply {:.0}/s with {IN_FLIGHT} in flight; pub/sub {:.0}/s published, {:.0}/s received ({} dropped)",
        result.payload_bytes,
        result.request_reply_per_sec,
        result.publish_per_sec,
        result.received_per_sec,
        result.dropped
    );
    if let Some(rate) = result.jetstream_per_sec {
        println!(
            "raw JetStream (file stream, {IN_FLIGHT} acks in flight): {rate:.0} acked publishes/s"
        );
    }
    Ok(result)
}

/// Acked publishes per second to a temporary file stream, deleted after.
async fn jetstream(
    client: &async_nats::Client,
    id: &str,
    payload: &bytes::Bytes,
    phase: Duration,
) -> anyhow::Result<f64> {
    use async_nats::jetstream::{self, message::PublishMessage, stream};
    let js = jetstream::new(client.clone());
    let name = format!("BENCH_{id}");
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("bench.js.{id}.>")],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(300),
        ..Default::default()
    })
    .await?;
    let publish = |n: u64| {
        let js = js.clone();
        // Spread over subjects the way inbox appends are.
        let subject = format!("bench.js.{id}.{}", n % 64);
        let message = PublishMessage::build()
            .payload(payload.clone())
            .message_id(format!("{id}:{n}"));
        async move { js.send_publish(subject, message).await?.await }
    };
    let rate = saturate(phase, publish).await;
    let _ = js.delete_stream(&name).await;
    rate
}

/// Completed operations per second with `IN_FLIGHT` of them running at
/// once for `phase`; `start(n)` starts the n-th.
async fn saturate<F, T, E>(phase: Duration, mut start: impl FnMut(u64) -> F) -> anyhow::Result<f64>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: Into<anyhow::Error>,
{
    let started = Instant::now();
    let (mut sent, mut done) = (0u64, 0u64);
    let mut pending = futures::stream::FuturesUnordered::new();
    while started.elapsed() < phase {
        while pending.len() < IN_FLIGHT {
            pending.push(start(sent));
            sent += 1;
        }
        if let Some(result) = pending.next().await {
            result.map_err(Into::into)?;
            done += 1;
        }
    }
    while let Some(result) = pending.next().await {
        result.map_err(Into::into)?;
        done += 1;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}
