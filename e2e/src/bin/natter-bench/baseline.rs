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
use hdrhistogram::Histogram;
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
    /// The batched shape of the message path (see [`batched_path`]):
    /// messages per second for each way of appending and each batch size
    /// of [`BATCH_SIZES`]; None as above.
    pub batched_path_per_sec: Option<Vec<(Appends, usize, f64)>>,
    /// The batched model (one append per message) driven open loop at the
    /// one-to-one scenario's rates: the send→push latency of natter's NATS
    /// shape alone (see [`model_latency`]); None as above.
    pub model_latency: Option<Vec<(Appends, u64, Value)>>,
}

/// How the batched model makes a batch's durable appends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Appends {
    /// Two inbox entries per message as one atomic JetStream batch, then
    /// one event per message, pipelined.
    Atomic,
    /// Two inbox entries per message as pipelined publishes with dedup ids,
    /// then one event per message, pipelined; every ack awaited at the end.
    Pipelined,
    /// As [`Appends::Pipelined`], with one event per batch carrying all its
    /// messages (natter's way since 2026-12-06).
    PipelinedBatchEvent,
    /// As [`Appends::PipelinedBatchEvent`] with the recipient's entry only:
    /// one append per message (no copy for the sender's other devices).
    PipelinedOneAppend,
    /// As [`Appends::PipelinedOneAppend`], into a stream that republishes
    /// every entry it stores (as [`Appends::OneAckRepublished`]): the
    /// server makes the pushes, no entry states its predecessor, and the
    /// responder publishes no push of its own.
    OneAppendRepublished,
    /// As [`Appends::PipelinedOneAppend`], each message first appended to
    /// a log of record (a stream with a subject per conversation; each
    /// append states its conversation's last sequence and carries a dedup
    /// id, every ack awaited) before its inbox entry: the NATS shape of a
    /// design whose durable numbering is a JetStream append instead of
    /// natter's SQLite commit.
    LoggedOneAppend,
    /// The same without the events: two appends per message.
    PipelinedNoEvents,
    /// As [`Appends::Pipelined`], but every ack comes to one subscription
    /// of the responder's (the reply subject ends with the entry's index)
    /// instead of a request future with a timer each.
    OneAckSubscription,
    /// Inbox entries as in [`Appends::OneAckSubscription`], the events as
    /// one JetStream fast-ingest batch per request (acks every N events and
    /// one at the end; events need no sequence of their own), both read
    /// from the one subscription.
    OneAckFastEvents,
    /// As [`Appends::OneAckSubscription`], to a stream that republishes
    /// every entry it stores (`republish`, with its sequence and the
    /// previous sequence of its subject in headers), so the server makes
    /// the pushes and no entry states its predecessor.
    OneAckRepublished,
    /// As [`Appends::Unacked`], to the republishing stream.
    UnackedRepublished,
    /// Two inbox entries per message as one JetStream fast-ingest batch
    /// (nats-server 2.14+, `allow_batched`; acks every N messages, gaps
    /// fail the batch), each entry stating the stream's last sequence so
    /// that every entry's sequence is known without an ack of its own;
    /// no events (compare with [`Appends::PipelinedNoEvents`]).
    FastNoEvents,
    /// Both inbox entries and the event published without asking for an
    /// ack, then one flush: what the appends cost the server with no
    /// acks at all, the ceiling of any way of acknowledging them in bulk.
    /// Not a safe way to append (a refused entry goes unnoticed).
    Unacked,
}

impl Appends {
    pub const ALL: [Appends; 13] = [
        Appends::Atomic,
        Appends::Pipelined,
        Appends::PipelinedBatchEvent,
        Appends::PipelinedOneAppend,
        Appends::OneAppendRepublished,
        Appends::LoggedOneAppend,
        Appends::PipelinedNoEvents,
        Appends::OneAckSubscription,
        Appends::OneAckFastEvents,
        Appends::OneAckRepublished,
        Appends::Unacked,
        Appends::UnackedRepublished,
        Appends::FastNoEvents,
    ];

    /// Whether the stream makes the pushes.
    fn republished(self) -> bool {
        matches!(
            self,
            Appends::OneAckRepublished
                | Appends::UnackedRepublished
                | Appends::OneAppendRepublished
        )
    }

    /// One inbox entry per message (the recipient's), not two.
    fn one_append(self) -> bool {
        matches!(
            self,
            Appends::PipelinedOneAppend | Appends::OneAppendRepublished | Appends::LoggedOneAppend
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Appends::Atomic => "atomic",
            Appends::Pipelined => "pipelined",
            Appends::PipelinedBatchEvent => "pipelined, one event per batch",
            Appends::PipelinedOneAppend => "pipelined, one append per message, one event per batch",
            Appends::OneAppendRepublished => {
                "pipelined, one append per message, one event per batch, pushes republished"
            }
            Appends::LoggedOneAppend => {
                "a log append per message, then as pipelined, one append per message"
            }
            Appends::PipelinedNoEvents => "pipelined without events",
            Appends::OneAckSubscription => "pipelined, acks on one subscription",
            Appends::OneAckFastEvents => "acks on one subscription, events as a fast batch",
            Appends::OneAckRepublished => "acks on one subscription, pushes republished",
            Appends::UnackedRepublished => "unacked, pushes republished",
            Appends::FastNoEvents => "fast-ingest batch without events",
            Appends::Unacked => "unacked",
        }
    }
}

/// Messages per batch request in the batched model of the message path.
pub const BATCH_SIZES: [usize; 3] = [16, 64, 256];
/// Users of the batched model (100 pairs), and the push subjects' shards.
const MODEL_USERS: usize = 200;
const PUSH_SHARDS: usize = 16;

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
            "batched_path_per_sec": self.batched_path_per_sec.as_ref().map(|rates| {
                rates
                    .iter()
                    .map(|(appends, size, rate)| {
                        json!({ "appends": appends.name(), "batch": size, "messages_per_sec": round(*rate) })
                    })
                    .collect::<Vec<_>>()
            }),
            "model_open_loop": self.model_latency.as_ref().map(|rates| {
                rates
                    .iter()
                    .map(|(appends, rate, latency)| {
                        json!({ "appends": appends.name(), "rate_per_sec": rate, "send_to_push": latency })
                    })
                    .collect::<Vec<_>>()
            }),
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
    let batched_path_per_sec =
        match batched_path(target, &url, &inbox, &payload, phase, &plan.appends).await {
            Ok(rates) => Some(rates),
            Err(e) => {
                eprintln!("batched message path baseline skipped: {e:#}");
                None
            }
        };
    let model_latency = match model_latency(target, &url, &inbox, &payload, plan).await {
        Ok(rates) => Some(rates),
        Err(e) => {
            eprintln!("open-loop model skipped: {e:#}");
            None
        }
    };
    let result = Baseline {
        model_latency,
        batched_path_per_sec,
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
    if let Some(rates) = &result.batched_path_per_sec {
        let rates: Vec<String> = rates
            .iter()
            .map(|(appends, size, rate)| {
                format!("{rate:.0}/s {} in batches of {size}", appends.name())
            })
            .collect();
        println!(
            "raw NATS work of batched messages (a batch request, 2 inbox entries and 1 event per message appended in each way, pushes, one reply): {}",
            rates.join(", ")
        );
    }
    if let Some(rates) = &result.model_latency {
        let rates: Vec<String> = rates
            .iter()
            .map(|(appends, rate, l)| {
                let way = match appends {
                    Appends::OneAppendRepublished => "pushes republished",
                    Appends::LoggedOneAppend => "a log append first",
                    _ => "natter's shape",
                };
                format!(
                    "{rate}/s, {way}: p50 {} ms, p99 {} ms",
                    l["p50_ms"], l["p99_ms"]
                )
            })
            .collect();
        println!(
            "natter's NATS shape alone, open loop (batches, one append per message, one event per batch): {}",
            rates.join("; ")
        );
    }
    Ok(result)
}

/// The floor that natter's NATS shape puts under its one-to-one latency:
/// the batched model with one append per message, driven open loop at each
/// of the one-to-one scenario's rates. A pacer thread keeps the schedule (as
/// the one-to-one scenario's does) and hands each message to an "edge" task
/// that sends what waits as one batch request when the previous one has
/// returned (natter's batcher at these rates); the responder appends, sends
/// the event and the pushes and replies; the "edge" connection receives the
/// pushes. The latency runs from each message's scheduled time to its push:
/// no WebSocket, no SQLite, no checks, and one process fewer on the cores.
/// Each rate runs three ways: natter's (the responder's pushes); with
/// pushes the inbox stream republishes as it stores each entry
/// ([`Appends::OneAppendRepublished`]); and with each message appended to a
/// log of record before its inbox entry ([`Appends::LoggedOneAppend`]).
async fn model_latency(
    target: &Target,
    url: &str,
    id: &str,
    payload: &bytes::Bytes,
    plan: &Plan,
) -> anyhow::Result<Vec<(Appends, u64, Value)>> {
    let (edge, messages, js) = model_connections(target, url).await?;
    let id = format!("{id}l");
    let run = async {
        let mut rates = Vec::new();
        for &rate in &plan.rates {
            for (way, appends) in [
                ("p", Appends::PipelinedOneAppend),
                ("r", Appends::OneAppendRepublished),
                ("g", Appends::LoggedOneAppend),
            ] {
                let model = format!("{id}.{way}{rate}");
                let subject = format!("bench.lbatch.{model}");
                let requests = messages.subscribe(subject.clone()).await?;
                let responder = tokio::spawn(respond_batches(
                    messages.clone(),
                    js.clone(),
                    model.clone(),
                    requests,
                    appends,
                ));
                wait_for_responder(&edge, &subject, &batch_payload(payload, 1, 0)).await?;
                // After the responder's check, whose push is no sample (the
                // subscription reaches the server before the first request).
                let pushes = edge.subscribe(format!("bench.bpush.{model}.>")).await?;
                let latency = model_open_loop(&edge, &subject, pushes, payload, rate, plan).await;
                responder.abort();
                rates.push((appends, rate, latency?));
            }
        }
        anyhow::Ok(rates)
    };
    let (inboxes, events) = (format!("BENCH_LINBOX_{id}"), format!("BENCH_LEVENTS_{id}"));
    let republishing = format!("BENCH_LRINBOX_{id}");
    let log = format!("BENCH_LLOG_{id}");
    let with_log = with_stream(&js, log, format!("bench.log.{id}.>"), run);
    let republished = republishing_stream(
        republishing,
        format!("bench.rinbox.{id}.>"),
        format!("bench.bpush.{id}.>"),
    );
    let with_republishing = with_stream_config(&js, republished, with_log);
    let with_events = with_stream(&js, events, format!("bench.evt.{id}.>"), with_republishing);
    with_stream(&js, inboxes, format!("bench.inbox.{id}.>"), with_events).await
}

/// One rate of [`model_latency`]: send→push percentiles.
async fn model_open_loop(
    edge: &async_nats::Client,
    subject: &str,
    mut pushes: async_nats::Subscriber,
    payload: &bytes::Bytes,
    rate: u64,
    plan: &Plan,
) -> anyhow::Result<Value> {
    // Each message carries its scheduled time, in µs since `epoch`, in
    // its first 8 bytes; the pushes carry the messages back to back.
    let each = payload.len().max(8);
    let epoch = Instant::now();
    let start = epoch + Duration::from_millis(50);
    let end = start + Duration::from_secs(plan.phase_secs);
    let every = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let (due, mut waiting) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let pacer = crate::direct::pacer("bench-model-pacer", start, end, every, move |_, at| {
        due.send((at - epoch).as_micros() as u64).is_ok()
    })?;
    let batcher = {
        let (edge, subject, payload) = (edge.clone(), subject.to_owned(), payload.clone());
        tokio::spawn(async move {
            let mut first = 0u64;
            while let Some(at) = waiting.recv().await {
                let mut stamps = vec![at];
                while stamps.len() < shared::endpoint::SEND_BATCH_MAX_ITEMS {
                    match waiting.try_recv() {
                        Ok(at) => stamps.push(at),
                        Err(_) => break,
                    }
                }
                let mut batch = Vec::with_capacity(16 + stamps.len() * each);
                batch.extend_from_slice(&(stamps.len() as u64).to_be_bytes());
                batch.extend_from_slice(&first.to_be_bytes());
                for at in &stamps {
                    batch.extend_from_slice(&at.to_be_bytes());
                    batch.extend_from_slice(&payload[8.min(payload.len())..]);
                    batch.resize(batch.len() + each.saturating_sub(payload.len()), 0);
                }
                first += stamps.len() as u64;
                let reply = edge.request(subject.clone(), batch.into()).await?;
                anyhow::ensure!(reply.payload.as_ref() == b"ok", "batch failed");
            }
            anyhow::Ok(())
        })
    };
    let mut latency = crate::direct::histogram();
    let record = |latency: &mut Histogram<u64>, push: &async_nats::Message| {
        let now = epoch.elapsed().as_micros() as u64;
        for message in push.payload.chunks(each) {
            let at = u64::from_be_bytes(message[..8].try_into()?);
            latency.saturating_record(now.saturating_sub(at).max(1));
        }
        anyhow::Ok(())
    };
    // The phase, then up to 10 s for the last pushes.
    let deadline = end + Duration::from_secs(10);
    while Instant::now() < deadline && !(pacer.is_finished() && batcher.is_finished()) {
        let Ok(push) = tokio::time::timeout(Duration::from_millis(100), pushes.next()).await else {
            continue;
        };
        let push = push.ok_or_else(|| anyhow::anyhow!("push subscription closed"))?;
        record(&mut latency, &push)?;
    }
    let sent = pacer
        .join()
        .map_err(|_| anyhow::anyhow!("the model's pacer panicked"))?;
    batcher.await??;
    // The last batch's pushes come before its reply.
    while latency.len() < sent {
        let push = tokio::time::timeout(Duration::from_secs(1), pushes.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("push subscription closed"))?;
        record(&mut latency, &push)?;
    }
    anyhow::ensure!(
        latency.len() == sent,
        "open-loop model: {} of {sent} messages pushed",
        latency.len()
    );
    Ok(crate::direct::percentiles(&latency))
}

/// Creates a temporary file stream for `subjects`, deleted when `run` ends.
async fn with_stream<T>(
    js: &async_nats::jetstream::Context,
    name: String,
    subjects: String,
    run: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    use async_nats::jetstream::stream;
    let config = stream::Config {
        name,
        subjects: vec![subjects],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(300),
        ..Default::default()
    };
    with_stream_config(js, config, run).await
}

/// Creates the stream `config` describes, deleted when `run` ends.
async fn with_stream_config<T>(
    js: &async_nats::jetstream::Context,
    config: async_nats::jetstream::stream::Config,
    run: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let name = config.name.clone();
    js.create_stream(config).await?;
    let result = run.await;
    let _ = js.delete_stream(&name).await;
    result
}

/// A temporary file stream of `subjects` that republishes every entry it
/// stores to `destination` (the same wildcards).
fn republishing_stream(
    name: String,
    subjects: String,
    destination: String,
) -> async_nats::jetstream::stream::Config {
    use async_nats::jetstream::stream;
    stream::Config {
        name,
        subjects: vec![subjects.clone()],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(300),
        republish: Some(stream::Republish {
            source: subjects,
            destination,
            headers_only: false,
        }),
        ..Default::default()
    }
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
    let (edge, messages, js) = model_connections(target, url).await?;
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

/// The NATS traffic of the batched message path (issue 16's design),
/// without natter: the "edge" connection sends one batch request of `size`
/// messages when the previous one returns; the "messages" connection's
/// responder appends two inbox entries per message (the recipient's and the
/// sender's, each user's chain checked on its first entry) as one atomic
/// JetStream batch (or as pipelined publishes, the other variant),
/// publishes one event per message to a second stream with
/// the acks awaited together at the end, publishes the entries as one push
/// per user shard that has any, and replies once. Messages per second, for
/// each size of [`BATCH_SIZES`].
async fn batched_path(
    target: &Target,
    url: &str,
    id: &str,
    payload: &bytes::Bytes,
    phase: Duration,
    appends: &[Appends],
) -> anyhow::Result<Vec<(Appends, usize, f64)>> {
    use async_nats::jetstream::stream;
    let (edge, messages, js) = model_connections(target, url).await?;
    let (inboxes, events) = (format!("BENCH_INBOX_{id}"), format!("BENCH_EVENTS_{id}"));
    let republishing = format!("BENCH_RINBOX_{id}");
    let fast = format!("BENCH_FINBOX_{id}");
    let fast_events = format!("BENCH_FEVENTS_{id}");
    let log = format!("BENCH_LOG_{id}");
    for (name, subjects) in [
        (&fast, format!("bench.finbox.{id}.>")),
        (&fast_events, format!("bench.fevt.{id}.>")),
        (&log, format!("bench.log.{id}.>")),
    ] {
        js.create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subjects],
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(300),
            allow_batch_publish: true,
            ..Default::default()
        })
        .await?;
    }
    js.create_stream(republishing_stream(
        republishing.clone(),
        format!("bench.rinbox.{id}.>"),
        format!("bench.bpush.{id}.r.>"),
    ))
    .await?;
    for (name, subjects, atomic) in [
        (&inboxes, format!("bench.inbox.{id}.>"), true),
        (&events, format!("bench.evt.{id}.>"), false),
    ] {
        js.create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subjects],
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(300),
            allow_atomic_publish: atomic,
            ..Default::default()
        })
        .await?;
    }
    let mut pushes = edge.subscribe(format!("bench.bpush.{id}.>")).await?;
    let drain = tokio::spawn(async move { while pushes.next().await.is_some() {} });
    let run = async {
        let mut rates = Vec::new();
        for (appends, size) in appends
            .iter()
            .copied()
            .flat_map(|appends| BATCH_SIZES.map(|size| (appends, size)))
        {
            let mode = appends as u8;
            let subject = format!("bench.batch.{id}.{mode}.{size}");
            let requests = messages.subscribe(subject.clone()).await?;
            // Each run appends to inboxes of its own (its chains start empty).
            let responder = tokio::spawn(respond_batches(
                messages.clone(),
                js.clone(),
                format!("{id}.{mode}{size}"),
                requests,
                appends,
            ));
            wait_for_responder(&edge, &subject, &batch_payload(payload, 1, 0)).await?;
            let stream = match appends {
                Appends::FastNoEvents => &fast,
                _ if appends.republished() => &republishing,
                _ => &inboxes,
            };
            let stored_before = js.get_stream(stream).await?.info().await?.state.messages;
            let started = Instant::now();
            let (mut done, mut n) = (0usize, 0u64);
            while started.elapsed() < phase {
                let batch = batch_payload(payload, size, n);
                n += 1;
                let reply = edge.request(subject.clone(), batch).await?;
                anyhow::ensure!(reply.payload.as_ref() == b"ok", "batch failed");
                done += size;
            }
            rates.push((appends, size, done as f64 / started.elapsed().as_secs_f64()));
            responder.abort();
            // Unacked entries are only a fair ceiling if the server kept them.
            tokio::time::sleep(Duration::from_millis(200)).await;
            // (Counted in the stream this way appended to.)
            let stored = js
                .get_stream(stream)
                .await?
                .info()
                .await?
                .state
                .messages
                .saturating_sub(stored_before);
            let copies: u64 = if appends.one_append() { 1 } else { 2 };
            if stored < copies * done as u64 {
                eprintln!(
                    "batched model, {} in batches of {size}: {stored} of {} inbox entries stored",
                    appends.name(),
                    copies * done as u64
                );
            }
        }
        anyhow::Ok(rates)
    };
    let result = run.await;
    drain.abort();
    let _ = js.delete_stream(&inboxes).await;
    let _ = js.delete_stream(&events).await;
    let _ = js.delete_stream(&republishing).await;
    let _ = js.delete_stream(&fast).await;
    let _ = js.delete_stream(&fast_events).await;
    let _ = js.delete_stream(&log).await;
    result
}

/// A batch request: a count, the first message's number, then the messages.
fn batch_payload(payload: &bytes::Bytes, size: usize, n: u64) -> bytes::Bytes {
    let mut out = Vec::with_capacity(16 + size * payload.len());
    out.extend_from_slice(&(size as u64).to_be_bytes());
    out.extend_from_slice(&(n * size as u64).to_be_bytes());
    for _ in 0..size {
        out.extend_from_slice(payload);
    }
    out.into()
}

/// The responder of [`batched_path`]: one batch at a time.
async fn respond_batches(
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    id: String,
    mut requests: async_nats::Subscriber,
    appends: Appends,
) {
    use std::collections::HashMap;
    // The last inbox sequence per user, known from the batches' acks.
    let mut last: HashMap<usize, u64> = HashMap::new();
    // The stream's last sequence, known from the last fast batch's ack.
    let mut stream_last: Option<u64> = None;
    // The log's last sequence per conversation, from the log appends' acks.
    let mut logged: HashMap<usize, u64> = HashMap::new();
    let mut batches = 0u64;
    let ack_prefix = format!("bench.ack.{id}");
    let mut ack_inbox = match appends {
        Appends::OneAckSubscription
        | Appends::OneAckRepublished
        | Appends::FastNoEvents
        | Appends::OneAckFastEvents => match client.subscribe(format!("{ack_prefix}.>")).await {
            Ok(subscription) => Some(subscription),
            Err(e) => {
                eprintln!("batched path: {e:#}");
                return;
            }
        },
        _ => None,
    };
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply.clone() else {
            continue;
        };
        let data = &request.payload;
        let size = u64::from_be_bytes(data[..8].try_into().unwrap_or_default()) as usize;
        let first = u64::from_be_bytes(data[8..16].try_into().unwrap_or_default()) as usize;
        let body = &data[16..];
        let each = body.len() / size.max(1);
        let message = |i: usize| request.payload.slice(16 + i * each..16 + (i + 1) * each);
        batches += 1;
        let result: anyhow::Result<()> = async {
            // Two entries per message: the recipient's, then the sender's
            // (one, the recipient's, for `PipelinedOneAppend`).
            let entries: Vec<(usize, bytes::Bytes)> = (0..size)
                .flat_map(|i| {
                    let sender = (first + i) % MODEL_USERS;
                    let copies = if appends.one_append() { 1 } else { 2 };
                    [(sender ^ 1, message(i)), (sender, message(i))]
                        .into_iter()
                        .take(copies)
                })
                .collect();
            match appends {
                Appends::Atomic => {
                    append_atomic(&client, &id, batches, &entries, &mut last).await?
                }
                Appends::Pipelined
                | Appends::PipelinedBatchEvent
                | Appends::PipelinedOneAppend
                | Appends::PipelinedNoEvents => {
                    append_pipelined(&js, "inbox", &id, batches, &entries, Some(&mut last)).await?
                }
                Appends::OneAppendRepublished => {
                    append_pipelined(&js, "rinbox", &id, batches, &entries, None).await?
                }
                Appends::LoggedOneAppend => {
                    let senders = (0..size).map(|i| ((first + i) % MODEL_USERS, message(i)));
                    append_log(&js, &id, first, senders, &mut logged).await?;
                    append_pipelined(&js, "inbox", &id, batches, &entries, Some(&mut last)).await?
                }
                Appends::OneAckSubscription | Appends::OneAckRepublished => {
                    let acks = ack_inbox.as_mut().expect("an ack subscription");
                    append_one_subscription(
                        &client,
                        acks,
                        &ack_prefix,
                        &id,
                        batches,
                        &entries,
                        size,
                        &mut last,
                        appends.republished(),
                    )
                    .await?
                }
                Appends::OneAckFastEvents => {
                    let acks = ack_inbox.as_mut().expect("an ack subscription");
                    append_fast_events(
                        &client,
                        acks,
                        &ack_prefix,
                        &id,
                        batches,
                        &entries,
                        size,
                        &mut last,
                    )
                    .await?
                }
                Appends::FastNoEvents => {
                    let acks = ack_inbox.as_mut().expect("an ack subscription");
                    let batch = format!("{id}-{batches}");
                    append_fast(
                        &client,
                        acks,
                        &ack_prefix,
                        &batch,
                        &id,
                        &entries,
                        &mut last,
                        &mut stream_last,
                    )
                    .await?
                }
                Appends::Unacked | Appends::UnackedRepublished => {
                    let inbox = if appends.republished() {
                        "rinbox"
                    } else {
                        "inbox"
                    };
                    for (k, (user, entry)) in entries.iter().enumerate() {
                        let mut headers = async_nats::HeaderMap::new();
                        headers.insert("Nats-Msg-Id", format!("{id}:{batches}:{k}").as_str());
                        client
                            .publish_with_headers(
                                format!("bench.{inbox}.{id}.{user}"),
                                headers,
                                entry.clone(),
                            )
                            .await?;
                    }
                }
            }
            // Events, pipelined, awaited together.
            let subject = format!("bench.evt.{id}.created");
            match appends {
                // Sent with the entries, their acks awaited with theirs.
                Appends::PipelinedNoEvents
                | Appends::FastNoEvents
                | Appends::OneAckFastEvents
                | Appends::OneAckSubscription
                | Appends::OneAckRepublished => {}
                Appends::Unacked | Appends::UnackedRepublished => {
                    for i in 0..size {
                        client.publish(subject.clone(), message(i)).await?;
                    }
                    client.flush().await?;
                }
                Appends::PipelinedBatchEvent
                | Appends::PipelinedOneAppend
                | Appends::OneAppendRepublished
                | Appends::LoggedOneAppend => {
                    let event = request.payload.slice(16..);
                    js.publish(subject.clone(), event).await?.await?;
                }
                Appends::Atomic | Appends::Pipelined => {
                    let mut acks = Vec::with_capacity(size);
                    for i in 0..size {
                        acks.push(js.publish(subject.clone(), message(i)).await?);
                    }
                    for ack in acks {
                        ack.await?;
                    }
                }
            }
            // One push per shard that has entries, unless the stream
            // republishes them.
            if appends.republished() {
                return Ok(());
            }
            let mut shards: Vec<Vec<u8>> = vec![Vec::new(); PUSH_SHARDS];
            for (user, entry) in &entries {
                shards[user % PUSH_SHARDS].extend_from_slice(entry);
            }
            for (shard, bytes) in shards.into_iter().enumerate() {
                if !bytes.is_empty() {
                    client
                        .publish(format!("bench.bpush.{id}.{shard}"), bytes.into())
                        .await?;
                }
            }
            Ok(())
        }
        .await;
        let answer: &'static [u8] = if result.is_ok() { b"ok" } else { b"failed" };
        if let Err(e) = &result {
            eprintln!("batched path: {e:#}");
        }
        let _ = client.publish(reply, answer.into()).await;
    }
}

/// The entries of a batch as one atomic JetStream batch: each user's first
/// entry carries the chain check, the sequences come back consecutive.
async fn append_atomic(
    client: &async_nats::Client,
    id: &str,
    batch: u64,
    entries: &[(usize, bytes::Bytes)],
    last: &mut std::collections::HashMap<usize, u64>,
) -> anyhow::Result<()> {
    let batch_id = format!("{id}-{batch}");
    let mut seen = std::collections::HashSet::new();
    for (k, (user, entry)) in entries.iter().enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Batch-Id", batch_id.as_str());
        headers.insert("Nats-Batch-Sequence", (k + 1).to_string().as_str());
        state_chain(&mut headers, &mut seen, last, *user);
        let subject = format!("bench.inbox.{id}.{user}");
        if k + 1 < entries.len() {
            client
                .publish_with_headers(subject, headers, entry.clone())
                .await?;
            continue;
        }
        headers.insert("Nats-Batch-Commit", "1");
        let ack = client
            .request_with_headers(subject, headers, entry.clone())
            .await?;
        let ack: serde_json::Value = serde_json::from_slice(&ack.payload)?;
        let seq = ack["seq"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("batch refused: {ack}"))?;
        // The entries have consecutive sequences ending at seq.
        let start = seq + 1 - entries.len() as u64;
        for (offset, (user, _)) in entries.iter().enumerate() {
            last.insert(*user, start + offset as u64);
        }
    }
    Ok(())
}

/// The entries of a batch as pipelined JetStream publishes to
/// `bench.<inbox>.<id>.<user>`, each with its dedup id, every ack awaited
/// at the end; with `last`, each user's first entry carries the chain check
/// (a republishing stream needs none: its pushes name their predecessor).
async fn append_pipelined(
    js: &async_nats::jetstream::Context,
    inbox: &str,
    id: &str,
    batch: u64,
    entries: &[(usize, bytes::Bytes)],
    mut last: Option<&mut std::collections::HashMap<usize, u64>>,
) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    let mut acks = Vec::with_capacity(entries.len());
    for (k, (user, entry)) in entries.iter().enumerate() {
        let mut publish = PublishMessage::build()
            .payload(entry.clone())
            .message_id(format!("{id}:{batch}:{k}"));
        if let Some(last) = last.as_deref()
            && seen.insert(*user)
        {
            publish = publish.expected_last_subject_sequence(last.get(user).copied().unwrap_or(0));
        }
        acks.push(
            js.send_publish(format!("bench.{inbox}.{id}.{user}"), publish)
                .await?,
        );
    }
    for ((user, _), ack) in entries.iter().zip(acks) {
        let sequence = ack.await?.sequence;
        if let Some(last) = last.as_deref_mut() {
            last.insert(*user, sequence);
        }
    }
    Ok(())
}

/// Each message into the log of record, `bench.log.<id>.<conversation>`
/// (a pair of users is a conversation): pipelined, each stating its
/// conversation's last sequence (the numbering's check) and carrying a
/// dedup id (its sender's message number: the repeat check), every ack
/// awaited before the inbox entries go.
async fn append_log(
    js: &async_nats::jetstream::Context,
    id: &str,
    first: usize,
    messages: impl Iterator<Item = (usize, bytes::Bytes)>,
    logged: &mut std::collections::HashMap<usize, u64>,
) -> anyhow::Result<()> {
    let mut acks = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (k, (sender, message)) in messages.enumerate() {
        let conversation = sender / 2;
        let mut publish = PublishMessage::build()
            .payload(message)
            .message_id(format!("{id}:{sender}:{}", first + k));
        if seen.insert(conversation) {
            publish = publish
                .expected_last_subject_sequence(logged.get(&conversation).copied().unwrap_or(0));
        }
        let ack = js
            .send_publish(format!("bench.log.{id}.{conversation}"), publish)
            .await?;
        acks.push((conversation, ack));
    }
    for (conversation, ack) in acks {
        logged.insert(conversation, ack.await?.sequence);
    }
    Ok(())
}

/// As [`append_pipelined`], then one event per message, every ack read from
/// `acks` (reply subjects `<prefix>.<batch>.<index>`).
#[allow(clippy::too_many_arguments)]
async fn append_one_subscription(
    client: &async_nats::Client,
    acks: &mut async_nats::Subscriber,
    prefix: &str,
    id: &str,
    batch: u64,
    entries: &[(usize, bytes::Bytes)],
    events: usize,
    last: &mut std::collections::HashMap<usize, u64>,
    republished: bool,
) -> anyhow::Result<()> {
    // A republishing stream tells each push its predecessor: no chain.
    let (inbox, chained) = if republished {
        ("rinbox", false)
    } else {
        ("inbox", true)
    };
    let to = Entries {
        prefix,
        inbox,
        id,
        batch,
    };
    to.send(client, entries, chained.then_some(&*last)).await?;
    let event = entries.first().map(|(_, e)| e.clone()).unwrap_or_default();
    for k in 0..events {
        client
            .publish_with_reply(
                format!("bench.evt.{id}.created"),
                format!("{prefix}.{batch}.e{k}"),
                event.clone(),
            )
            .await?;
    }
    let mut sequences = vec![0u64; entries.len()];
    let mut left = entries.len() + events;
    while left > 0 {
        let ack = tokio::time::timeout(Duration::from_secs(5), acks.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("ack subscription closed"))?;
        let index = ack.subject.rsplit('.').next().unwrap_or_default();
        let seq = serde_json::from_slice::<Value>(&ack.payload)?["seq"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("append refused"))?;
        if let Ok(k) = index.parse::<usize>() {
            sequences[k] = seq;
        }
        left -= 1;
    }
    for ((user, _), seq) in entries.iter().zip(sequences) {
        last.insert(*user, seq);
    }
    Ok(())
}

/// The entries as in [`append_one_subscription`] without events, and
/// `events` events as one fast-ingest batch (see [`append_fast`]), every
/// answer read from `acks`: the entries' acks end in their index, the
/// batch's in `$FI`.
#[allow(clippy::too_many_arguments)]
async fn append_fast_events(
    client: &async_nats::Client,
    acks: &mut async_nats::Subscriber,
    prefix: &str,
    id: &str,
    batch: u64,
    entries: &[(usize, bytes::Bytes)],
    events: usize,
    last: &mut std::collections::HashMap<usize, u64>,
) -> anyhow::Result<()> {
    const FLOW: u64 = 64;
    let to = Entries {
        prefix,
        inbox: "inbox",
        id,
        batch,
    };
    to.send(client, entries, Some(&*last)).await?;
    let mut answers = Answers {
        sequences: vec![0u64; entries.len()],
        entries_left: entries.len(),
        opened: false,
        acked: 0,
        every: 1,
        committed: false,
    };
    let event = entries.first().map(|(_, e)| e.clone()).unwrap_or_default();
    let total = events as u64;
    let fast_batch = format!("{id}-{batch}e");
    for n in 1..=total {
        let operation = match (n, n == total) {
            (_, true) => 2,
            (1, false) => 0,
            _ => 1,
        };
        client
            .publish_with_reply(
                format!("bench.fevt.{id}.created"),
                format!("{prefix}.{fast_batch}.{FLOW}.fail.{n}.{operation}.$FI"),
                event.clone(),
            )
            .await?;
        // The first event's answer says the batch is open; later, no more
        // than two acks' worth of events go unacknowledged.
        if n < total {
            while !answers.committed
                && ((n == 1 && !answers.opened)
                    || (n > 1 && answers.acked + 2 * answers.every <= n))
            {
                answers.read(next_ack(acks).await?)?;
            }
        }
    }
    while !answers.committed || answers.entries_left > 0 {
        answers.read(next_ack(acks).await?)?;
    }
    for ((user, _), seq) in entries.iter().zip(answers.sequences) {
        last.insert(*user, seq);
    }
    Ok(())
}

/// What [`append_fast_events`] has heard back.
struct Answers {
    /// Each entry's sequence, and how many are still to come.
    sequences: Vec<u64>,
    entries_left: usize,
    /// The event batch: whether the server answered its first event (a
    /// flow ack of sequence 0), the highest batch sequence acked, the
    /// server's ack interval, and whether it is committed.
    opened: bool,
    acked: u64,
    every: u64,
    committed: bool,
}

impl Answers {
    fn read(&mut self, ack: async_nats::Message) -> anyhow::Result<()> {
        let value: Value = serde_json::from_slice(&ack.payload)?;
        if !ack.subject.ends_with(".$FI") {
            let k = ack
                .subject
                .rsplit('.')
                .next()
                .and_then(|k| k.parse::<usize>().ok())
                .ok_or_else(|| anyhow::anyhow!("ack on {}", ack.subject))?;
            self.sequences[k] = value["seq"]
                .as_u64()
                .ok_or_else(|| anyhow::anyhow!("append refused: {value}"))?;
            self.entries_left -= 1;
            return Ok(());
        }
        match value["type"].as_str() {
            Some("ack") => {
                self.opened = true;
                self.acked = self.acked.max(value["seq"].as_u64().unwrap_or(0));
                self.every = value["msgs"].as_u64().unwrap_or(1).max(1);
            }
            Some(_) => anyhow::bail!("event batch: {value}"),
            None if value["seq"].as_u64().is_some() => self.committed = true,
            None => anyhow::bail!("event batch refused: {value}"),
        }
        Ok(())
    }
}

/// The entries as one fast-ingest batch (ADR-50): reply subjects
/// `<prefix>.<batch>.<flow>.fail.<n>.<operation>.$FI`, the first message
/// awaited, then up to two flow acks outstanding, the last message
/// committing the batch. Each entry states the stream's last sequence, so
/// its own is known; each user's first entry its chain.
#[allow(clippy::too_many_arguments)]
async fn append_fast(
    client: &async_nats::Client,
    acks: &mut async_nats::Subscriber,
    prefix: &str,
    batch: &str,
    id: &str,
    entries: &[(usize, bytes::Bytes)],
    last: &mut std::collections::HashMap<usize, u64>,
    stream_last: &mut Option<u64>,
) -> anyhow::Result<()> {
    const FLOW: u64 = 64;
    let total = entries.len() as u64;
    // The highest batch sequence acked, and the server's ack interval.
    let (mut acked, mut every) = (0u64, 1u64);
    let mut final_seq = None;
    let mut seen = std::collections::HashSet::new();
    let read = |ack: async_nats::Message,
                acked: &mut u64,
                every: &mut u64,
                final_seq: &mut Option<u64>|
     -> anyhow::Result<()> {
        let value: Value = serde_json::from_slice(&ack.payload)?;
        match value["type"].as_str() {
            Some("ack") => {
                *acked = (*acked).max(value["seq"].as_u64().unwrap_or(0));
                *every = value["msgs"].as_u64().unwrap_or(1).max(1);
                Ok(())
            }
            Some(_) => anyhow::bail!("fast batch: {value}"),
            None => {
                let seq = value["seq"]
                    .as_u64()
                    .ok_or_else(|| anyhow::anyhow!("fast batch refused: {value}"))?;
                *final_seq = Some(seq);
                Ok(())
            }
        }
    };
    for (k, (user, entry)) in entries.iter().enumerate() {
        let n = k as u64 + 1;
        let operation = match (n, n == total) {
            (_, true) => 2,
            (1, false) => 0,
            _ => 1,
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{batch}:{k}").as_str());
        if let Some(stream_last) = *stream_last {
            headers.insert(
                "Nats-Expected-Last-Sequence",
                (stream_last + k as u64).to_string().as_str(),
            );
        }
        state_chain(&mut headers, &mut seen, last, *user);
        client
            .publish_with_reply_and_headers(
                format!("bench.finbox.{id}.{user}"),
                format!("{prefix}.{batch}.{FLOW}.fail.{n}.{operation}.$FI"),
                headers,
                entry.clone(),
            )
            .await?;
        // The first message's answer says the batch is open; later, no
        // more than two acks' worth of messages go unacknowledged.
        while final_seq.is_none() && (n == 1 || acked + 2 * every <= n) && n < total {
            let ack = next_ack(acks).await?;
            read(ack, &mut acked, &mut every, &mut final_seq)?;
            if n == 1 {
                break;
            }
        }
    }
    while final_seq.is_none() {
        let ack = next_ack(acks).await?;
        read(ack, &mut acked, &mut every, &mut final_seq)?;
    }
    let final_seq = final_seq.unwrap_or_default();
    // No other publisher came between (each entry stated its predecessor):
    // the entries have consecutive sequences ending at final_seq.
    let start = final_seq + 1 - total;
    for (offset, (user, _)) in entries.iter().enumerate() {
        last.insert(*user, start + offset as u64);
    }
    *stream_last = Some(final_seq);
    Ok(())
}

/// Where [`Entries::send`] appends a batch's entries, and where their acks go.
struct Entries<'a> {
    prefix: &'a str,
    inbox: &'a str,
    id: &'a str,
    batch: u64,
}

impl Entries<'_> {
    /// Publishes `entries` with their dedup ids, each asking for its ack at
    /// `<prefix>.<batch>.<index>`; with `chain`, each user's first entry
    /// states that user's last sequence.
    async fn send(
        &self,
        client: &async_nats::Client,
        entries: &[(usize, bytes::Bytes)],
        chain: Option<&std::collections::HashMap<usize, u64>>,
    ) -> anyhow::Result<()> {
        let Self {
            prefix,
            inbox,
            id,
            batch,
        } = self;
        let mut seen = std::collections::HashSet::new();
        for (k, (user, entry)) in entries.iter().enumerate() {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{id}:{batch}:{k}").as_str());
            if let Some(last) = chain {
                state_chain(&mut headers, &mut seen, last, *user);
            }
            client
                .publish_with_reply_and_headers(
                    format!("bench.{inbox}.{id}.{user}"),
                    format!("{prefix}.{batch}.{k}"),
                    headers,
                    entry.clone(),
                )
                .await?;
        }
        Ok(())
    }
}

/// On `user`'s first entry of a batch (`seen` keeps them), the chain check:
/// its inbox's last sequence as known from earlier acks.
fn state_chain(
    headers: &mut async_nats::HeaderMap,
    seen: &mut std::collections::HashSet<usize>,
    last: &std::collections::HashMap<usize, u64>,
    user: usize,
) {
    if seen.insert(user) {
        let expected = last.get(&user).copied().unwrap_or(0);
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            expected.to_string().as_str(),
        );
    }
}

/// The next message on an ack subscription, waited for 5 s at most.
async fn next_ack(acks: &mut async_nats::Subscriber) -> anyhow::Result<async_nats::Message> {
    tokio::time::timeout(Duration::from_secs(5), acks.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("ack subscription closed"))
}

/// The connections of a model of the message path: an "edge" one that
/// takes a flood of pushes, a "messages" one, and its JetStream context.
async fn model_connections(
    target: &Target,
    url: &str,
) -> anyhow::Result<(
    async_nats::Client,
    async_nats::Client,
    async_nats::jetstream::Context,
)> {
    let edge = target
        .nats_options()?
        .subscription_capacity(1 << 20)
        .connect(url)
        .await?;
    let messages = target.nats_options()?.connect(url).await?;
    let js = async_nats::jetstream::new(messages.clone());
    Ok((edge, messages, js))
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
