//! The raw NATS limit on the same server, with payloads the size of a chat
//! message: request-reply with 64 requests in flight, core pub/sub, and
//! JetStream publishes to a file stream with 64 acks awaited at once (the
//! durable append every natter message makes several of). Last, the NATS
//! work of one natter message without natter: a request whose responder
//! makes the message's durable appends and two pushes before it replies,
//! once with natter's three appends and once with one, to show what the
//! NATS traffic alone allows and what fewer appends would lift it to.
//! natter's figures are printed as ratios to these, because absolute
//! figures on a shared machine drift from run to run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
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
    /// Requests per second whose responder made three (then one) appends
    /// and two pushes; None as above.
    pub message_path_per_sec: Option<[f64; 2]>,
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
            "message_path_3_appends_per_sec": self.message_path_per_sec.map(|r| round(r[0])),
            "message_path_1_append_per_sec": self.message_path_per_sec.map(|r| round(r[1])),
        })
    }
}

pub async fn run(target: &Target, plan: &Plan) -> anyhow::Result<Baseline> {
    let payload = bytes::Bytes::from(wire::typical_payload());
    let phase = Duration::from_secs(plan.phase_secs);
    let url = target.nats_url();
    let inbox = shared::ids::new_id();

    // Request-reply: one responder connection, one requester connection.
    let responder = target.nats_options()?.connect(&url).await?;
    let requester = target.nats_options()?.connect(&url).await?;
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
    wait_for_responder(&requester, &subject, &payload).await?;
    let request_reply_per_sec = saturate(phase, |_| {
        requester.request(subject.clone(), payload.clone())
    })
    .await?;
    echo.abort();

    // Pub/sub: one publisher connection, one subscriber connection.
    let subscriber = target
        .nats_options()?
        .subscription_capacity(1 << 20)
        .connect(&url)
        .await?;
    let publisher = target.nats_options()?.connect(&url).await?;
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
    let message_path_per_sec = match message_path(target, &url, &inbox, &payload, phase).await {
        Ok(rates) => Some(rates),
        Err(e) => {
            eprintln!("message path baseline skipped: {e:#}");
            None
        }
    };
    let result = Baseline {
        jetstream_per_sec,
        message_path_per_sec,
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
    if let Some([three, one]) = result.message_path_per_sec {
        println!(
            "raw NATS work of one message (request, appends, 2 pushes, reply; {IN_FLIGHT} in flight): {three:.0}/s with 3 appends, {one:.0}/s with 1"
        );
    }
    Ok(result)
}

/// Creates a temporary file stream for `subjects`, deleted when `run` ends.
async fn with_stream<T>(
    js: &async_nats::jetstream::Context,
    name: String,
    subjects: String,
    run: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    use async_nats::jetstream::stream;
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![subjects],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(300),
        ..Default::default()
    })
    .await?;
    let result = run.await;
    let _ = js.delete_stream(&name).await;
    result
}

/// The NATS traffic of one natter message, without natter: the "edge"
/// connection sends a request; the "messages" connection's responder makes
/// `appends` acked JetStream publishes at once (recipient inbox, sender
/// inbox, event), publishes two pushes, which the edge connection receives,
/// and replies. Completed requests per second with three appends, then one.
async fn message_path(
    target: &Target,
    url: &str,
    id: &str,
    payload: &bytes::Bytes,
    phase: Duration,
) -> anyhow::Result<[f64; 2]> {
    let edge = target
        .nats_options()?
        .subscription_capacity(1 << 20)
        .connect(url)
        .await?;
    let messages = target.nats_options()?.connect(url).await?;
    let js = async_nats::jetstream::new(messages.clone());
    let mut pushes = edge.subscribe(format!("bench.push.{id}.>")).await?;
    let drain = tokio::spawn(async move { while pushes.next().await.is_some() {} });
    let mut rates = [0.0; 2];
    for (rate, appends) in rates.iter_mut().zip([3usize, 1]) {
        let subject = format!("bench.send.{id}.{appends}");
        let mut requests = messages.subscribe(subject.clone()).await?;
        let responder = {
            let (messages, js, id) = (messages.clone(), js.clone(), id.to_owned());
            tokio::spawn(async move {
                let mut n = 0u64;
                while let Some(request) = requests.next().await {
                    n += 1;
                    let (messages, js, id) = (messages.clone(), js.clone(), id.clone());
                    tokio::spawn(async move {
                        let acks = (0..appends).map(|i| {
                            let publish = PublishMessage::build()
                                .payload(request.payload.clone())
                                .message_id(format!("{id}:{appends}:{n}:{i}"));
                            let js = js.clone();
                            let subject = format!("bench.path.{id}.{}", (n * 3 + i as u64) % 64);
                            async move { js.send_publish(subject, publish).await?.await }
                        });
                        if futures::future::try_join_all(acks).await.is_err() {
                            return;
                        }
                        for to in ["a", "b"] {
                            let push = format!("bench.push.{id}.{to}");
                            let _ = messages.publish(push, request.payload.clone()).await;
                        }
                        if let Some(reply) = request.reply {
                            let _ = messages.publish(reply, request.payload).await;
                        }
                    });
                }
            })
        };
        let name = format!("BENCH_PATH_{id}_{appends}");
        let run = async {
            wait_for_responder(&edge, &subject, payload).await?;
            saturate(phase, |_| edge.request(subject.clone(), payload.clone())).await
        };
        let result = with_stream(&js, name, format!("bench.path.{id}.>"), run).await;
        responder.abort();
        *rate = result?;
    }
    drain.abort();
    Ok(rates)
}

/// Acked publishes per second to a temporary file stream, deleted after.
async fn jetstream(
    client: &async_nats::Client,
    id: &str,
    payload: &bytes::Bytes,
    phase: Duration,
) -> anyhow::Result<f64> {
    let js = async_nats::jetstream::new(client.clone());
    let publish = |n: u64| {
        let js = js.clone();
        // Spread over subjects the way inbox appends are.
        let subject = format!("bench.js.{id}.{}", n % 64);
        let message = PublishMessage::build()
            .payload(payload.clone())
            .message_id(format!("{id}:{n}"));
        async move { js.send_publish(subject, message).await?.await }
    };
    let run = saturate(phase, publish);
    with_stream(&js, format!("BENCH_{id}"), format!("bench.js.{id}.>"), run).await
}

/// Waits until a request to `subject` is answered: a subscription made on
/// another connection reaches the server in its own time, and until then
/// requests fail at once with "no responders".
async fn wait_for_responder(
    client: &async_nats::Client,
    subject: &str,
    payload: &bytes::Bytes,
) -> anyhow::Result<()> {
    use async_nats::RequestErrorKind;
    for _ in 0..500 {
        match client.request(subject.to_owned(), payload.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("nothing answers on {subject}")
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
