//! Group fan-out: for each group size, a fresh system; register that many
//! users, put them in one group, connect all of them, then the owner sends
//! messages over HTTP, one at a time (latency: send→ack and send→last
//! member) and back to back (throughput), while every member's connection
//! records when each message arrives.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use e2e::{Client, Format, User};
use futures::StreamExt;
use serde_json::{Value, json};
use shared::proto::edge::server_frame;
use tokio::sync::mpsc;

use crate::Plan;
use crate::report::{percentile, round};
use crate::target::{External, Target, cpu_ms, unique, used};

pub async fn run(external: Option<&External>, plan: &Plan) -> anyhow::Result<Value> {
    println!(
        "\ngroup fan-out (read fan-out from {} members)",
        plan.large_group_members
    );
    println!(
        "{:>7} {:>10} {:>10} {:>11} {:>11} {:>12} {:>22}",
        "members",
        "ack p50",
        "ack p99",
        "last p50",
        "last p99",
        "deliveries/s",
        "CPU ms nats/natter/us"
    );
    let mut rows = Vec::new();
    for &size in &plan.group_sizes {
        let target = Target::start(external, plan).await?;
        let r = group_fanout(&target, size, plan.group_messages).await;
        target.stop().await;
        let r = r?;
        println!(
            "{:>7} {:>10.2} {:>10.2} {:>11.2} {:>11.2} {:>12.0} {:>22}",
            size,
            r.ack_p50,
            r.ack_p99,
            r.last_p50,
            r.last_p99,
            r.deliveries_per_sec,
            r.cpu_ms
                .map(|c| c.map_or("?".to_owned(), |c| c.to_string()))
                .join("/")
        );
        rows.push(json!({
            "members": size,
            "read_fanout": size >= plan.large_group_members as usize,
            "messages": plan.group_messages,
            "send_to_ack_p50_ms": round(r.ack_p50),
            "send_to_ack_p99_ms": round(r.ack_p99),
            "send_to_last_member_p50_ms": round(r.last_p50),
            "send_to_last_member_p99_ms": round(r.last_p99),
            "deliveries_per_sec": round(r.deliveries_per_sec),
            "cpu_ms": { "nats": r.cpu_ms[0], "natter": r.cpu_ms[1], "bench": r.cpu_ms[2] },
        }));
    }
    Ok(json!({ "large_group_members": plan.large_group_members, "groups": rows }))
}

struct FanoutResult {
    ack_p50: f64,
    ack_p99: f64,
    last_p50: f64,
    last_p99: f64,
    deliveries_per_sec: f64,
    /// CPU time used during the throughput phase by nats-server, natter and
    /// this process, milliseconds.
    cpu_ms: [Option<u64>; 3],
}

fn cpu_now(target: &Target) -> [Option<u64>; 3] {
    [
        target.nats_pid().and_then(cpu_ms),
        target.natter_pid().and_then(cpu_ms),
        cpu_ms(std::process::id()),
    ]
}

async fn group_fanout(
    target: &Target,
    size: usize,
    messages: usize,
) -> anyhow::Result<FanoutResult> {
    let api = target.api();
    let users: Vec<User> = futures::stream::iter(0..size)
        .map(|i| {
            let api = api.clone();
            async move { api.user(&unique(&format!("member{i}"))).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let owner = &users[0];
    let ids: Vec<&str> = users[1..].iter().map(|u| u.user_id.as_str()).collect();
    let (status, group) = api
        .post(
            "/v1/groups",
            Some(&owner.token),
            json!({ "name": format!("bench {size}"), "memberIds": ids }).to_string(),
        )
        .await?;
    if status != 201 {
        bail!("create group: {status} {group}");
    }
    let conversation = group["conversationId"]
        .as_str()
        .context("conversation id")?
        .to_owned();

    // Every member but the owner listens; each reports (seq, arrival).
    let (receipts_tx, mut receipts) = mpsc::unbounded_channel::<(u64, Instant)>();
    let url = target.ws_url();
    let clients: Vec<Client> = futures::stream::iter(users[1..].iter().cloned())
        .map(|user| {
            let url = url.clone();
            async move {
                let mut client = Client::connect_live(&url, &user, Format::Binary).await?;
                client.messages(1).await?; // the "created" notice
                // Where the large groups stand (sent after every resume):
                // live group messages follow from there, and what a group
                // had before it a client reads from the history. Nothing is
                // sent before every member has it, so nothing is missed.
                client
                    .next_where(|f| matches!(f.kind, Some(server_frame::Kind::GroupHeads(_))))
                    .await?;
                anyhow::Ok(client)
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let total = messages * 2;
    let mut readers = Vec::new();
    for mut client in clients {
        let tx = receipts_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..total {
                let got = client.messages(1).await?;
                let seq = got[0].1.seq;
                anyhow::ensure!(seen.insert(seq), "seq {seq} was delivered twice");
                let _ = tx.send((seq, Instant::now()));
            }
            anyhow::Ok(())
        }));
    }
    drop(receipts_tx);
    let members = size - 1;
    let mut arrivals: HashMap<u64, Vec<Instant>> = HashMap::new();
    let send = |i: usize| {
        let (api, owner, conversation) = (api.clone(), owner.clone(), conversation.clone());
        async move {
            let body = json!({
                "conversationId": conversation,
                "clientMsgId": format!("b{i}"),
                "body": { "text": { "text": format!("消息 {i}: the quick brown fox") } }
            });
            let (status, ack) = api
                .post("/v1/messages", Some(&owner.token), body.to_string())
                .await?;
            if status != 200 {
                bail!("send: {status} {ack}");
            }
            let seq: u64 = ack["seq"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .context("seq")?;
            anyhow::Ok(seq)
        }
    };

    // Latency: one message at a time, each awaited by every member.
    let (mut acks, mut lasts) = (Vec::new(), Vec::new());
    for i in 0..messages {
        let started = Instant::now();
        let seq = send(i).await?;
        acks.push(started.elapsed().as_secs_f64() * 1000.0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while arrivals.get(&seq).map_or(0, Vec::len) < members {
            let Some((s, at)) = tokio::time::timeout_at(deadline, receipts.recv())
                .await
                .context("members did not all receive in 30 s")?
            else {
                let had = arrivals.get(&seq).map_or(0, Vec::len);
                return Err(readers_ended(readers)
                    .await
                    .context(format!("seq {seq} reached {had} of {members} members")));
            };
            arrivals.entry(s).or_default().push(at);
        }
        let last = arrivals[&seq].iter().max().copied().unwrap_or(started);
        lasts.push(last.duration_since(started).as_secs_f64() * 1000.0);
    }

    // Throughput: back to back, until every member has every message.
    let cpu_before = cpu_now(target);
    let started = Instant::now();
    let mut seqs = Vec::new();
    for i in messages..total {
        seqs.push(send(i).await?);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seqs
        .iter()
        .any(|s| arrivals.get(s).map_or(0, Vec::len) < members)
    {
        let Some((s, at)) = tokio::time::timeout_at(deadline, receipts.recv())
            .await
            .context("throughput phase did not finish in 120 s")?
        else {
            return Err(readers_ended(readers).await);
        };
        arrivals.entry(s).or_default().push(at);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_now(target);
    let cpu_ms = [0, 1, 2].map(|i| used(cpu_before[i], cpu_after[i]));
    for reader in readers {
        reader.await??;
    }
    acks.sort_by(f64::total_cmp);
    lasts.sort_by(f64::total_cmp);
    Ok(FanoutResult {
        ack_p50: percentile(&acks, 50.0),
        ack_p99: percentile(&acks, 99.0),
        last_p50: percentile(&lasts, 50.0),
        last_p99: percentile(&lasts, 99.0),
        deliveries_per_sec: (members * messages) as f64 / elapsed,
        cpu_ms,
    })
}

/// Why every member's reader stopped before all messages arrived: the first
/// reader's error (a lost connection, a timeout, a message twice).
async fn readers_ended(readers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>) -> anyhow::Error {
    for reader in readers {
        match reader.await {
            Ok(Err(e)) => return e.context("a member's reader failed"),
            Err(e) => return anyhow::Error::new(e).context("a member's reader panicked"),
            Ok(Ok(())) => {}
        }
    }
    anyhow::anyhow!("every member read all its messages, yet some were missing")
}
