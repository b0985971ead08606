//! One-to-one chat: pairs of friends, each user sending to its peer over
//! its own WebSocket. First at saturation (as fast as the edge takes sends:
//! 64 unacked per connection), counting messages delivered to the peers per
//! second; then at half that rate, measuring send→receive and send→ack
//! latency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use shared::proto::delivery::inbox_entry;
use shared::proto::edge::server_frame;
use tokio::sync::Semaphore;

use crate::baseline::Baseline;
use crate::report::{latency, ratio, round};
use crate::target::{Target, cpu_ms, unique, used};
use crate::{Plan, wire};

/// Unacked sends per connection (the edge stops reading beyond 64).
const WINDOW: usize = 64;

/// What one connection saw, as (sent, arrived) pairs: its peer's messages,
/// and the acks of its own sends.
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
    let api = target.api();
    let users: Vec<e2e::User> = futures::stream::iter(0..plan.pairs * 2)
        .map(|i| {
            let api = api.clone();
            async move { api.user(&unique(&format!("pair{i}"))).await }
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
    let cpu_before = cpu(target);
    let saturated = Instant::now();
    let sent = blast(&peers, epoch, saturated + phase, None).await?;
    let saturated_end = Instant::now();
    let cpu_after = cpu(target);
    settle(&peers).await;
    let saturated_secs = (saturated_end - saturated).as_secs_f64();
    let delivered = count(&peers, |s| {
        s.received
            .iter()
            .filter(|(sent, got)| *sent >= saturated && *got <= saturated_end)
            .count()
    });
    let delivered_per_sec = delivered as f64 / saturated_secs;

    // Half of that rate, for latency.
    anyhow::ensure!(
        delivered_per_sec >= 2.0,
        "almost nothing was delivered at saturation"
    );
    let half = delivered_per_sec / 2.0;
    let paced = Instant::now();
    let sent_paced = blast(&peers, epoch, paced + phase, Some(half)).await?;
    let paced_end = Instant::now();
    settle(&peers).await;
    let (mut receive, mut ack) = (Vec::new(), Vec::new());
    for peer in peers.iter() {
        let seen = peer.seen.lock().expect("seen lock");
        let in_phase = |sent: &Instant| *sent >= paced && *sent < paced_end;
        receive.extend(
            seen.received
                .iter()
                .filter(|(sent, _)| in_phase(sent))
                .map(|(sent, got)| (*got - *sent).as_secs_f64() * 1000.0),
        );
        ack.extend(
            seen.acked
                .iter()
                .filter(|(sent, _)| in_phase(sent))
                .map(|(sent, got)| (*got - *sent).as_secs_f64() * 1000.0),
        );
    }
    for peer in peers.iter() {
        peer.reader.abort();
    }

    let base_rate = base.map(|b| b.request_reply_per_sec);
    let js_rate = base.and_then(|b| b.jetstream_per_sec);
    let path_rate = base.and_then(|b| b.message_path_per_sec).map(|r| r[0]);
    let receive = latency(&mut receive);
    let ack = latency(&mut ack);
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
        "\none-to-one ({} pairs): {:.0} delivered/s at saturation{ratios}, {:.0} sent/s",
        plan.pairs,
        delivered_per_sec,
        sent as f64 / saturated_secs
    );
    println!(
        "  at {half:.0}/s: send→receive p50 {} p99 {} p99.9 {} ms; send→ack p50 {} p99 {} p99.9 {} ms",
        receive["p50_ms"],
        receive["p99_ms"],
        receive["p999_ms"],
        ack["p50_ms"],
        ack["p99_ms"],
        ack["p999_ms"]
    );
    Ok(json!({
        "pairs": plan.pairs,
        "window": WINDOW,
        "saturation": {
            "seconds": round(saturated_secs),
            "sent_per_sec": round(sent as f64 / saturated_secs),
            "delivered_per_sec": round(delivered_per_sec),
            "ratio_to_request_reply": ratio(delivered_per_sec, base_rate),
            "ratio_to_jetstream_publish": ratio(delivered_per_sec, js_rate),
            "ratio_to_message_path": ratio(delivered_per_sec, path_rate),
            "cpu_ms": {
                "nats": used(cpu_before[0], cpu_after[0]),
                "natter": used(cpu_before[1], cpu_after[1]),
            },
        },
        "paced": {
            "rate_per_sec": round(half),
            "sent": sent_paced,
            "send_to_receive": receive,
            "send_to_ack": ack,
        },
    }))
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

/// Every peer sends until `until`: as fast as its window allows, or at
/// `rate` messages/s in all. Returns how many were sent.
async fn blast(
    peers: &Arc<Vec<Peer>>,
    epoch: Instant,
    until: Instant,
    rate: Option<f64>,
) -> anyhow::Result<usize> {
    let mut tasks = Vec::new();
    for i in 0..peers.len() {
        let peers = peers.clone();
        let every = rate.map(|r| Duration::from_secs_f64(peers.len() as f64 / r.max(1.0)));
        tasks.push(tokio::spawn(async move {
            let peer = &peers[i];
            let mut sink = peer.sink.lock().await;
            // Peers tick in turn, not all at once: a fixed rate, not bursts
            // of one message per connection.
            let mut tick = every.map(|e| {
                let offset = e.mul_f64(i as f64 / peers.len() as f64);
                let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, e);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            let mut sent = 0usize;
            let deadline = tokio::time::Instant::from_std(until);
            while Instant::now() < until {
                if let Some(tick) = tick.as_mut()
                    && tokio::time::timeout_at(deadline, tick.tick())
                        .await
                        .is_err()
                {
                    break;
                }
                let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, peer.window.acquire()).await
                else {
                    break;
                };
                permit.forget();
                peer.sent.fetch_add(1, Ordering::Relaxed);
                let id = peer.next_id.fetch_add(1, Ordering::Relaxed);
                peer.sent_at
                    .lock()
                    .expect("sent lock")
                    .insert(id, Instant::now());
                let frame = wire::send_text(
                    id,
                    &peer.to,
                    format!("b{id}"),
                    wire::stamped_text(epoch, sent),
                );
                wire::send(&mut sink, frame).await?;
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
