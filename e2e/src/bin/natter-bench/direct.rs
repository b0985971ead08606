//! One-to-one chat: pairs of friends, each user sending to its peer over
//! its own WebSocket, for each pair count of the plan (16 and 100 in full
//! mode). First at saturation (as fast as the edge takes sends: 64 unacked
//! per connection), counting messages delivered to the peers per second;
//! then open loop at fixed rates (3k, 6k and 10k messages/s in full mode):
//! every message has a scheduled send time, latency counts from it (so a
//! stall shows as latency, not as messages sent later), in an HdrHistogram.
//!
//! Each phase also reports what a message costs the server: CPU of natter
//! and nats-server per 1,000 delivered messages (from /proc), messages into
//! nats-server per chat message (its `/varz`), and bytes natter had written
//! to storage per message, in 4 KiB pages (SQLite's WAL and checkpoints).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use shared::proto::delivery::inbox_entry;
use shared::proto::edge::server_frame;
use tokio::sync::Semaphore;

use crate::baseline::Baseline;
use crate::report::{ratio, round};
use crate::target::{Target, cpu_ms, unique, used, write_bytes};
use crate::{Plan, wire};

/// Unacked sends per connection (the edge stops reading beyond 64).
const WINDOW: usize = 64;

/// What one connection saw, as (sent, arrived) pairs: its peer's messages,
/// and the acks of its own sends. "Sent" is the scheduled send time.
#[derive(Default)]
struct Seen {
    received: Vec<(Instant, Instant)>,
    acked: Vec<(Instant, Instant)>,
}

/// One user's connection.
struct Peer {
    sink: tokio::sync::Mutex<wire::Sink>,
    /// Free send slots; the reader gives one back per ack or error.
    window: Arc<Semaphore>,
    sent_at: Arc<Mutex<HashMap<u64, Instant>>>,
    seen: Arc<Mutex<Seen>>,
    to: String,
    /// The next frame id (1 was the resume).
    next_id: AtomicU64,
    /// Messages sent so far (all phases).
    sent: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
}

pub async fn run(target: &Target, plan: &Plan, base: Option<&Baseline>) -> anyhow::Result<Value> {
    let mut runs = Vec::new();
    for &pairs in &plan.pairs {
        runs.push(run_pairs(target, plan, base, pairs).await?);
    }
    Ok(json!({ "window": WINDOW, "runs": runs }))
}

/// Readings of what the server has used so far.
#[derive(Clone, Copy)]
struct Usage {
    at: Instant,
    cpu: [Option<u64>; 2],
    nats: Option<[u64; 2]>,
    written: Option<u64>,
}

impl Usage {
    async fn now(target: &Target) -> Self {
        Self {
            at: Instant::now(),
            cpu: cpu(target),
            nats: target.nats_messages().await,
            written: target.natter_pid().and_then(write_bytes),
        }
    }

    /// What a phase cost, per message delivered in it.
    fn per_message(&self, after: &Usage, delivered: usize) -> Value {
        let n = delivered.max(1) as f64;
        let nats_cpu = used(self.cpu[0], after.cpu[0]);
        let natter_cpu = used(self.cpu[1], after.cpu[1]);
        let both = nats_cpu.zip(natter_cpu).map(|(a, b)| a + b);
        let messages = self
            .nats
            .zip(after.nats)
            .map(|(a, b)| b[0].saturating_sub(a[0]));
        let out = self
            .nats
            .zip(after.nats)
            .map(|(a, b)| b[1].saturating_sub(a[1]));
        let written = used(self.written, after.written);
        json!({
            "cpu_ms": { "nats": nats_cpu, "natter": natter_cpu },
            "cpu_ms_per_1000_messages": both.map(|ms| round(ms as f64 * 1000.0 / n)),
            "nats_messages_in_per_message": messages.map(|m| round(m as f64 / n)),
            "nats_messages_out_per_message": out.map(|m| round(m as f64 / n)),
            "storage_pages_per_message": written.map(|b| round(b as f64 / 4096.0 / n)),
        })
    }
}

async fn run_pairs(
    target: &Target,
    plan: &Plan,
    base: Option<&Baseline>,
    pairs: usize,
) -> anyhow::Result<Value> {
    let api = target.api();
    let users: Vec<e2e::User> = futures::stream::iter(0..pairs * 2)
        .map(|i| {
            let api = api.clone();
            async move { api.user(&unique(&format!("p{pairs}n{i}"))).await }
        })
        .buffered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    for pair in users.chunks(2) {
        api.befriend(&pair[0], &pair[1]).await?;
    }
    let epoch = Instant::now();
    let mut peers = Vec::new();
    for (i, user) in users.iter().enumerate() {
        peers.push(connect(target, user, &users[i ^ 1].user_id, epoch).await?);
    }
    let peers = Arc::new(peers);
    let phase = Duration::from_secs(plan.phase_secs);

    // Saturation.
    let before = Usage::now(target).await;
    let sent = blast(&peers, epoch, before.at + phase).await?;
    let after = Usage::now(target).await;
    settle(&peers).await;
    let saturated_secs = (after.at - before.at).as_secs_f64();
    let delivered = count(&peers, |s| {
        s.received
            .iter()
            .filter(|(sent, got)| *sent >= before.at && *got <= after.at)
            .count()
    });
    let delivered_per_sec = delivered as f64 / saturated_secs;
    anyhow::ensure!(
        delivered_per_sec >= 2.0,
        "almost nothing was delivered at saturation"
    );
    let cost = before.per_message(&after, delivered);

    let base_rate = base.map(|b| b.request_reply_per_sec);
    let js_rate = base.and_then(|b| b.jetstream_per_sec);
    let path_rate = base.and_then(|b| b.message_path_per_sec).map(|r| r[0]);
    let ratios = match base {
        Some(_) => format!(
            " ({}x raw request-reply, {}x raw JetStream publishes, {}x the raw NATS work of a message)",
            ratio(delivered_per_sec, base_rate),
            ratio(delivered_per_sec, js_rate),
            ratio(delivered_per_sec, path_rate),
        ),
        None => " (no baseline in this run)".to_owned(),
    };
    println!(
        "\none-to-one ({pairs} pairs): {delivered_per_sec:.0} delivered/s at saturation{ratios}, {:.0} sent/s",
        sent as f64 / saturated_secs
    );
    println!("  cost at saturation: {}", describe(&cost));

    // Open loop at fixed rates.
    let mut open = Vec::new();
    for &rate in &plan.rates {
        let before = Usage::now(target).await;
        let start = before.at + Duration::from_millis(20);
        let (sent, late, lag) = open_loop(&peers, epoch, start, start + phase, rate as f64).await?;
        let after = Usage::now(target).await;
        settle(&peers).await;
        let end = start + phase;
        let in_phase = |sent: &Instant| *sent >= start && *sent < end;
        let (mut receive, mut ack) = (histogram(), histogram());
        let mut delivered = 0usize;
        // The slowest delivery of each window of send times: a stall shows
        // as a run of slow windows, and stalls that recur as their period.
        let mut windows: std::collections::BTreeMap<u128, u64> = Default::default();
        // Every delivery (scheduled time from the start, latency), for
        // `--latencies`.
        let mut rows: Vec<(u64, u64)> = Vec::new();
        for peer in peers.iter() {
            let seen = peer.seen.lock().expect("seen lock");
            for (sent, got) in seen.received.iter().filter(|(sent, _)| in_phase(sent)) {
                receive.saturating_record(micros(*got - *sent));
                delivered += 1;
                if plan.latencies.is_some() {
                    rows.push((micros(*sent - start), micros(*got - *sent)));
                }
                let window = windows
                    .entry((*sent - start).as_millis() / STALL_WINDOW_MS)
                    .or_default();
                *window = (*window).max(micros(*got - *sent));
            }
            for (sent, got) in seen.acked.iter().filter(|(sent, _)| in_phase(sent)) {
                ack.saturating_record(micros(*got - *sent));
            }
        }
        let latencies = match &plan.latencies {
            Some(dir) => Some(write_latencies(dir, pairs, rate, rows, start)?),
            None => None,
        };
        let cost = before.per_message(&after, delivered);
        let receive = percentiles(&receive);
        let ack = percentiles(&ack);
        let lag_ms = percentiles(&lag);
        let stalls: Vec<Value> = windows
            .iter()
            .filter(|(_, slowest)| **slowest > STALL_MICROS)
            .map(|(window, slowest)| {
                json!({
                    "at_ms": window * STALL_WINDOW_MS,
                    "slowest_ms": round(*slowest as f64 / 1000.0),
                })
            })
            .collect();
        println!(
            "  open loop at {rate}/s: {delivered} of {sent} delivered, {late} sends behind schedule \
             (schedule to write p50 {} p99 {} ms); send→receive p50 {} p99 {} p99.9 {} max {} ms; send→ack p99 {} ms; \
             {} of {} {STALL_WINDOW_MS} ms windows with a delivery over {} ms; {}",
            lag_ms["p50_ms"],
            lag_ms["p99_ms"],
            receive["p50_ms"],
            receive["p99_ms"],
            receive["p999_ms"],
            receive["max_ms"],
            ack["p99_ms"],
            stalls.len(),
            windows.len(),
            STALL_MICROS / 1000,
            describe(&cost)
        );
        open.push(json!({
            "rate_per_sec": rate,
            "seconds": plan.phase_secs,
            "sent": sent,
            "delivered": delivered,
            "sends_behind_schedule": late,
            "send_lag": lag_ms,
            "send_to_receive": receive,
            "send_to_ack": ack,
            "stalls": { "window_ms": STALL_WINDOW_MS, "over_ms": STALL_MICROS / 1000, "windows": stalls },
            "cost": cost,
            "latencies_file": latencies,
        }));
    }
    for peer in peers.iter() {
        peer.reader.abort();
    }

    Ok(json!({
        "pairs": pairs,
        "saturation": {
            "seconds": round(saturated_secs),
            "sent_per_sec": round(sent as f64 / saturated_secs),
            "delivered_per_sec": round(delivered_per_sec),
            "ratio_to_request_reply": ratio(delivered_per_sec, base_rate),
            "ratio_to_jetstream_publish": ratio(delivered_per_sec, js_rate),
            "ratio_to_message_path": ratio(delivered_per_sec, path_rate),
            "cost": cost,
        },
        "open_loop": open,
    }))
}

/// A phase's cost in a line.
fn describe(cost: &Value) -> String {
    format!(
        "{} ms CPU per 1,000 messages (natter + nats-server), {} NATS messages in per message, {} storage pages per message",
        cost["cpu_ms_per_1000_messages"],
        cost["nats_messages_in_per_message"],
        cost["storage_pages_per_message"]
    )
}

/// Writes a phase's deliveries (`rows`: scheduled time from `start` and
/// latency, µs) to a file of its own in `dir`, in the order of their
/// scheduled times, tab-separated under a header line that gives `start`
/// in Unix seconds. Returns the file's path.
fn write_latencies(
    dir: &std::path::Path,
    pairs: usize,
    rate: u64,
    mut rows: Vec<(u64, u64)>,
    start: Instant,
) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use std::fmt::Write as _;
    rows.sort_unstable();
    let unix_start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        - start.elapsed().as_secs_f64();
    let mut text = format!("# scheduled_us\tlatency_us (phase start {unix_start:.6} s)\n");
    for (at, latency) in rows {
        let _ = writeln!(text, "{at}\t{latency}");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("direct-{pairs}-pairs-{rate}.tsv"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.display().to_string())
}

/// The open loop's stall report: windows of send times this long whose
/// slowest delivery took over `STALL_MICROS`.
const STALL_WINDOW_MS: u128 = 10;
const STALL_MICROS: u64 = 10_000;

/// Latencies in microseconds, 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    d.as_micros().clamp(1, u64::MAX as u128) as u64
}

pub fn percentiles(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| round(us as f64 / 1000.0);
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

fn cpu(target: &Target) -> [Option<u64>; 2] {
    [
        target.nats_pid().and_then(cpu_ms),
        target.natter_pid().and_then(cpu_ms),
    ]
}

fn count(peers: &[Peer], f: impl Fn(&Seen) -> usize) -> usize {
    peers
        .iter()
        .map(|p| f(&p.seen.lock().expect("seen lock")))
        .sum()
}

/// Connects `user`, resumes, waits until caught up, and starts its reader.
async fn connect(
    target: &Target,
    user: &e2e::User,
    to: &str,
    epoch: Instant,
) -> anyhow::Result<Peer> {
    let (mut sink, mut stream) = wire::connect(target.edge_addr(), &user.token, None).await?;
    wire::send(&mut sink, wire::resume(1, 0)).await?;
    wire::caught_up(&mut stream).await?;
    let window = Arc::new(Semaphore::new(WINDOW));
    let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let reader = {
        let (window, sent_at, seen) = (window.clone(), sent_at.clone(), seen.clone());
        let me = user.user_id.clone();
        tokio::spawn(async move {
            while let Ok(frame) = wire::next(&mut stream).await {
                let now = Instant::now();
                match frame.kind {
                    Some(server_frame::Kind::Ack(_)) | Some(server_frame::Kind::Error(_)) => {
                        let sent = sent_at.lock().expect("sent lock").remove(&frame.reply_to);
                        if let (Some(sent), Some(server_frame::Kind::Ack(_))) = (sent, &frame.kind)
                        {
                            seen.lock().expect("seen lock").acked.push((sent, now));
                        }
                        window.add_permits(1);
                    }
                    Some(server_frame::Kind::Push(push)) => {
                        if let Some(inbox_entry::Event::Message(m)) =
                            push.entry.and_then(|e| e.event)
                            && m.sender_id != me
                            && let Some(stamp) = wire::stamp_of(&m)
                        {
                            let sent = epoch + Duration::from_nanos(stamp as u64);
                            seen.lock().expect("seen lock").received.push((sent, now));
                        }
                    }
                    _ => {}
                }
            }
        })
    };
    Ok(Peer {
        sink: tokio::sync::Mutex::new(sink),
        window,
        sent_at,
        seen,
        to: to.to_owned(),
        next_id: AtomicU64::new(2),
        sent: AtomicU64::new(0),
        reader,
    })
}

/// Every peer sends as fast as its window allows until `until`. Returns
/// how many were sent.
async fn blast(peers: &Arc<Vec<Peer>>, epoch: Instant, until: Instant) -> anyhow::Result<usize> {
    let mut tasks = Vec::new();
    for i in 0..peers.len() {
        let peers = peers.clone();
        tasks.push(tokio::spawn(async move {
            let peer = &peers[i];
            let mut sink = peer.sink.lock().await;
            let mut sent = 0usize;
            let deadline = tokio::time::Instant::from_std(until);
            while Instant::now() < until {
                let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, peer.window.acquire()).await
                else {
                    break;
                };
                permit.forget();
                send_one(peer, &mut sink, epoch, Instant::now()).await?;
                sent += 1;
            }
            anyhow::Ok(sent)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total)
}

/// Sends one message stamped with its scheduled time `at`.
async fn send_one(
    peer: &Peer,
    sink: &mut wire::Sink,
    epoch: Instant,
    at: Instant,
) -> anyhow::Result<()> {
    let n = peer.sent.fetch_add(1, Ordering::Relaxed);
    let id = peer.next_id.fetch_add(1, Ordering::Relaxed);
    peer.sent_at.lock().expect("sent lock").insert(id, at);
    let frame = wire::send_text(
        id,
        &peer.to,
        format!("b{id}"),
        wire::stamped_text_at((at - epoch).as_nanos(), n as usize),
    );
    wire::send(sink, frame).await
}

/// Open loop: `rate` messages/s in all from `start` to `end`, the peers
/// in turn (send `j` is peer `j % n`'s, due at `start + j / rate`).
/// A send never waits for an answer, only for its time (and for the edge's
/// window, should 64 be unanswered); one that leaves late keeps its
/// scheduled time. The schedule is kept by a thread of its own that sleeps
/// until each send is due and wakes its peer's task: tokio's timers fire on
/// whole milliseconds, which added up to a millisecond of the bench's own
/// to every latency. Returns (sent, sent behind schedule by over 2 ms, the
/// delay from each send's time to its frame's write).
async fn open_loop(
    peers: &Arc<Vec<Peer>>,
    epoch: Instant,
    start: Instant,
    end: Instant,
    rate: f64,
) -> anyhow::Result<(usize, usize, Histogram<u64>)> {
    let every = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut due = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..peers.len() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        due.push(tx);
        let peers = peers.clone();
        tasks.push(tokio::spawn(async move {
            let peer = &peers[i];
            let mut sink = peer.sink.lock().await;
            let (mut sent, mut lag) = (0usize, histogram());
            while let Some(at) = rx.recv().await {
                peer.window.acquire().await?.forget();
                lag.saturating_record(micros(Instant::now().saturating_duration_since(at)));
                send_one(peer, &mut sink, epoch, at).await?;
                sent += 1;
            }
            anyhow::Ok((sent, lag))
        }));
    }
    let pacer = pacer("bench-pacer", start, end, every, move |j, at| {
        due[(j % due.len() as u64) as usize].send(at).is_ok()
    })?;
    let (mut sent, mut lag) = (0, histogram());
    for task in tasks {
        let (s, l) = task.await??;
        sent += s;
        lag.add(&l)?;
    }
    pacer
        .join()
        .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
    let late = lag.count_between(2_001, u64::MAX) as usize;
    Ok((sent, late, lag))
}

/// A thread that keeps an open loop's schedule: send `j` is due at
/// `start + j * every`, until `end`; it sleeps until each is due, then calls
/// `due(j, at)`, and stops early when that answers false. Returns how many
/// it handed over.
pub fn pacer(
    name: &str,
    start: Instant,
    end: Instant,
    every: Duration,
    mut due: impl FnMut(u64, Instant) -> bool + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<u64>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut sent = 0;
            loop {
                let at = start + every.mul_f64(sent as f64);
                if at >= end {
                    break;
                }
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                if !due(sent, at) {
                    break;
                }
                sent += 1;
            }
            sent
        })
}

/// Waits (at most 60 s) until every send is acked and every peer has
/// received what its partner sent, so one phase does not spill into the next.
async fn settle(peers: &[Peer]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = |i: usize, p: &Peer| {
        p.window.available_permits() == WINDOW
            && p.seen.lock().expect("seen lock").received.len() as u64
                >= peers[i ^ 1].sent.load(Ordering::Relaxed)
    };
    while Instant::now() < deadline && !peers.iter().enumerate().all(|(i, p)| done(i, p)) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
