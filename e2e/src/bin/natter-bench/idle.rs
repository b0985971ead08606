//! Idle connections: N WebSocket connections that resume and then only
//! answer pings. The figures are the connect rate and the natter process's
//! resident memory per connection. Connections come from several loopback
//! source addresses (127.0.0.10, .11, ...) so N may pass the 64k ports one
//! address has; tokens are spread over a few users' devices (one login
//! each: argon2 makes a login per connection too slow for a benchmark).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::report::round;
use crate::target::{External, Target, rss_bytes, unique};
use crate::{Plan, wire};

/// Connections opened at once.
const CONCURRENCY: usize = 256;
/// Connections per source address (below the ~28k ephemeral ports).
const PER_ADDRESS: usize = 20_000;

pub async fn run(external: Option<&External>, plan: &Plan) -> anyhow::Result<Value> {
    let mut rounds = Vec::new();
    for &requested in &plan.idle {
        // One descriptor per connection in this process and in natter's,
        // with room for everything else.
        let most = plan
            .fd_limit
            .map_or(usize::MAX, |l| (l as usize).saturating_sub(2048));
        let n = requested.min(most);
        if n < requested {
            println!(
                "\nidle connections: {requested} requested, {n} possible under the open-file limit of {} (raising it needs CAP_SYS_RESOURCE)",
                plan.fd_limit.unwrap_or(0)
            );
        }
        let target = Target::start(external, plan).await?;
        let round = connections(&target, n).await;
        target.stop().await;
        let mut round = round?;
        round["requested"] = json!(requested);
        round["fd_limit"] = json!(plan.fd_limit);
        rounds.push(round);
    }
    Ok(json!({ "rounds": rounds }))
}

async fn connections(target: &Target, n: usize) -> anyhow::Result<Value> {
    let api = target.api();
    let users = (n / 500).clamp(1, 100);
    let mut tokens = Vec::new();
    for i in 0..users {
        tokens.push(api.user(&unique(&format!("idle{i}"))).await?.token);
    }
    // Settle, then the baseline memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = target.natter_pid().and_then(rss_bytes);
    let edge = target.edge_addr();

    let started = Instant::now();
    let opened: Vec<(wire::Sink, wire::Stream)> = futures::stream::iter(0..n)
        .map(|i| {
            let token = tokens[i % tokens.len()].clone();
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + (i / PER_ADDRESS) as u8));
            async move { wire::connect(edge, &token, Some(source)).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .context("opening idle connections")?;
    let connect_secs = started.elapsed().as_secs_f64();

    // Every connection resumes and waits until caught up, as a client does.
    let started = Instant::now();
    let live: Vec<(wire::Sink, tokio::task::JoinHandle<()>)> = futures::stream::iter(opened)
        .map(|(mut sink, mut stream)| async move {
            wire::send(&mut sink, wire::resume(1, 0)).await?;
            wire::caught_up(&mut stream).await?;
            // From now on only read (which answers the edge's pings).
            let reader =
                tokio::spawn(async move { while wire::next(&mut stream).await.is_ok() {} });
            anyhow::Ok((sink, reader))
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .context("resuming idle connections")?;
    let resume_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = target.natter_pid().and_then(rss_bytes);
    let per_connection = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / n as f64),
        _ => None,
    };
    for (_, reader) in &live {
        reader.abort();
    }
    drop(live);
    println!(
        "\nidle connections: {n} opened at {:.0}/s, resumed at {:.0}/s; natter RSS {} → {} MB, {} per connection",
        n as f64 / connect_secs,
        n as f64 / resume_secs,
        rss_before.map_or("?".into(), |b| format!("{:.1}", b as f64 / 1e6)),
        rss_after.map_or("?".into(), |a| format!("{:.1}", a as f64 / 1e6)),
        per_connection.map_or("?".into(), |p| format!("{:.1} KB", p / 1024.0)),
    );
    Ok(json!({
        "connections": n,
        "users": users,
        "source_addresses": n.div_ceil(PER_ADDRESS),
        "connect_per_sec": round(n as f64 / connect_secs),
        "resume_per_sec": round(n as f64 / resume_secs),
        "natter_rss_before_bytes": rss_before,
        "natter_rss_after_bytes": rss_after,
        "natter_rss_per_connection_bytes": per_connection.map(round),
    }))
}
