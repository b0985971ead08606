//! Offline drain: one user sends N messages to a friend who is offline;
//! then the friend connects and resumes from the start of its inbox. The
//! figure is the time from opening the connection to the last message.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use shared::proto::delivery::inbox_entry;
use shared::proto::edge::server_frame;

use crate::report::round;
use crate::target::{Target, unique};
use crate::{Plan, wire};

/// Unacked sends (the edge stops reading beyond 64).
const WINDOW: u64 = 64;

pub async fn run(target: &Target, plan: &Plan) -> anyhow::Result<Value> {
    let api = target.api();
    let sender = api.user(&unique("drain-sender")).await?;
    let receiver = api.user(&unique("drain-receiver")).await?;
    api.befriend(&sender, &receiver).await?;
    let n = plan.offline_messages as u64;

    // Queue N messages for the offline receiver, 64 in flight.
    let (mut sink, mut stream) = wire::connect(target.edge_addr(), &sender.token, None).await?;
    let epoch = Instant::now();
    let (mut sent, mut acked) = (0u64, 0u64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while acked < n {
        while sent < n && sent - acked < WINDOW {
            sent += 1;
            let text = wire::stamped_text(epoch, sent as usize);
            wire::send(
                &mut sink,
                wire::send_text(sent, &receiver.user_id, format!("d{sent}"), text),
            )
            .await?;
        }
        let frame = tokio::time::timeout_at(deadline, wire::next(&mut stream))
            .await
            .context("sending did not finish in 300 s")??;
        match frame.kind {
            Some(server_frame::Kind::Ack(_)) => acked += 1,
            Some(server_frame::Kind::Error(e)) => anyhow::bail!("send refused: {e:?}"),
            _ => {}
        }
    }
    let queued_secs = epoch.elapsed().as_secs_f64();
    drop((sink, stream));

    // The receiver comes online and drains its inbox.
    let started = Instant::now();
    let (mut sink, mut stream) = wire::connect(target.edge_addr(), &receiver.token, None).await?;
    wire::send(&mut sink, wire::resume(1, 0)).await?;
    let (mut got, mut last, mut caught_up) = (0u64, None, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while last.is_none() || caught_up.is_none() {
        let frame = tokio::time::timeout_at(deadline, wire::next(&mut stream))
            .await
            .context("the drain did not finish in 120 s")??;
        match frame.kind {
            Some(server_frame::Kind::Push(push)) => {
                if let Some(inbox_entry::Event::Message(m)) = push.entry.and_then(|e| e.event)
                    && m.sender_id == sender.user_id
                {
                    got += 1;
                    if got == n {
                        last = Some(started.elapsed());
                    }
                }
            }
            Some(server_frame::Kind::CaughtUp(_)) => caught_up = Some(started.elapsed()),
            _ => {}
        }
    }
    report(n, queued_secs, last.unwrap_or_default(), caught_up)
}

fn report(
    n: u64,
    queued_secs: f64,
    last: Duration,
    caught_up: Option<Duration>,
) -> anyhow::Result<Value> {
    let drain_ms = last.as_secs_f64() * 1000.0;
    println!(
        "\noffline drain: {n} messages queued in {queued_secs:.2} s ({:.0}/s); connect → last message {drain_ms:.0} ms ({:.0} messages/s)",
        n as f64 / queued_secs,
        n as f64 / last.as_secs_f64()
    );
    Ok(json!({
        "messages": n,
        "queue_seconds": round(queued_secs),
        "queue_per_sec": round(n as f64 / queued_secs),
        "connect_to_last_ms": round(drain_ms),
        "connect_to_caught_up_ms": caught_up.map(|d| round(d.as_secs_f64() * 1000.0)),
        "drain_per_sec": round(n as f64 / last.as_secs_f64()),
    }))
}
