//! natter-bench: drives a real natter the way clients do (HTTP API and
//! WebSocket connections with protobuf frames) and reports what it measured.
//!
//! It starts its own system: a nats-server on a free port and one `natter`
//! process (all services) from the same target directory, in a temporary
//! data dir. Traffic goes to loopback only, and every loop is bounded.
//!
//! Scenario `groups`: for each group size, register that many users, put
//! them in one group, connect all of them, then the owner sends messages
//! over HTTP, one at a time (latency) and back to back (throughput), while
//! every member's connection records when each message arrives.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use e2e::{Client, Format, Mode, Settings, System, User};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

#[derive(Parser)]
#[command(name = "natter-bench", about = "Measure natter as clients see it")]
struct Args {
    /// Group sizes (members, owner included) of the group fan-out scenario.
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 500, 1000])]
    group_sizes: Vec<usize>,
    /// Messages sent one at a time per group (latency), and back to back (throughput).
    #[arg(long, default_value_t = 20)]
    messages: usize,
    /// Groups of this many members use read fan-out (the messages service's
    /// `large_group_members`); a size above every group measures write fan-out.
    #[arg(long, default_value_t = messages::Config::default().large_group_members)]
    large_group_members: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.group_sizes.iter().any(|n| !(2..=5000).contains(n))
        || !(1..=1000).contains(&args.messages)
    {
        bail!("group sizes must be within 2..=5000 and messages within 1..=1000");
    }
    println!(
        "natter-bench: group fan-out, {} cores, read fan-out from {} members",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.large_group_members
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
    for &size in &args.group_sizes {
        let r = group_fanout(size, args.messages, args.large_group_members).await?;
        println!(
            "{:>7} {:>10.2} {:>10.2} {:>11.2} {:>11.2} {:>12.0} {:>22}",
            size,
            r.ack_p50,
            r.ack_p99,
            r.last_p50,
            r.last_p99,
            r.deliveries_per_sec,
            format!("{}/{}/{}", r.cpu_ms[0], r.cpu_ms[1], r.cpu_ms[2])
        );
    }
    Ok(())
}

struct FanoutResult {
    ack_p50: f64,
    ack_p99: f64,
    last_p50: f64,
    last_p99: f64,
    deliveries_per_sec: f64,
    /// CPU time used during the throughput phase by nats-server, natter and
    /// this process, milliseconds.
    cpu_ms: [u64; 3],
}

/// CPU time (user + system) of a process so far, milliseconds (Linux).
fn cpu_ms(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    ticks * 10
}

fn cpu_now(system: &System) -> [u64; 3] {
    [
        system.nats.pid().map_or(0, cpu_ms),
        system.natter_pids().into_iter().map(cpu_ms).sum(),
        cpu_ms(std::process::id()),
    ]
}

async fn group_fanout(
    size: usize,
    messages: usize,
    large_group_members: u32,
) -> anyhow::Result<FanoutResult> {
    let settings = Settings {
        large_group_members,
        group_max_members: size.max(2) as u32,
        invite_friends_only: false,
        quick_timings: false,
        idle_timeout_secs: 600,
        ..Settings::default()
    };
    let system = System::start_with(Mode::AllInOne, settings).await?;
    let api = system.api();
    let users: Vec<User> = futures::stream::iter(0..size)
        .map(|i| {
            let api = api.clone();
            async move { api.user(&format!("member{i}")).await }
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
    let url = system.ws_url();
    let clients: Vec<Client> = futures::stream::iter(users[1..].iter().cloned())
        .map(|user| {
            let url = url.clone();
            async move {
                let mut client = Client::connect_live(&url, &user, Format::Binary).await?;
                client.messages(1).await?; // the "created" notice
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
            for _ in 0..total {
                let got = client.messages(1).await?;
                let _ = tx.send((got[0].1.seq, Instant::now()));
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
            let (s, at) = tokio::time::timeout_at(deadline, receipts.recv())
                .await
                .context("members did not all receive in 30 s")?
                .context("readers ended")?;
            arrivals.entry(s).or_default().push(at);
        }
        let last = arrivals[&seq].iter().max().copied().unwrap_or(started);
        lasts.push(last.duration_since(started).as_secs_f64() * 1000.0);
    }

    // Throughput: back to back, until every member has every message.
    let cpu_before = cpu_now(&system);
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
        let (s, at) = tokio::time::timeout_at(deadline, receipts.recv())
            .await
            .context("throughput phase did not finish in 120 s")?
            .context("readers ended")?;
        arrivals.entry(s).or_default().push(at);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_now(&system);
    let cpu_ms = [0, 1, 2].map(|i| cpu_after[i] - cpu_before[i]);
    for reader in readers {
        reader.await??;
    }
    system.stop().await;
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

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
