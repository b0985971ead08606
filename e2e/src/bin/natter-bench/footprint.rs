//! Footprint: the time from starting the all-in-one natter process to its
//! readiness, and the idle resident memory of natter and nats-server.

use std::time::Duration;

use serde_json::{Value, json};

use crate::report::round;
use crate::target::rss_bytes;

pub async fn run() -> anyhow::Result<Value> {
    let settings = e2e::Settings {
        quick_timings: false,
        ..e2e::Settings::default()
    };
    let system = e2e::System::start_with(e2e::Mode::AllInOne, settings).await?;
    let ready_ms = system.ready_in.map(|d| round(d.as_secs_f64() * 1000.0));
    // Idle for a moment: start-up allocations settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let natter = system.natter_pids().first().copied().and_then(rss_bytes);
    let nats = system.nats.pid().and_then(rss_bytes);
    system.stop().await;
    let mb = |b: Option<u64>| b.map_or("?".into(), |b| format!("{:.1} MB", b as f64 / 1e6));
    println!(
        "\nfootprint: start → ready {} ms; idle RSS natter {}, nats-server {}",
        ready_ms.map_or("?".into(), |m| m.to_string()),
        mb(natter),
        mb(nats)
    );
    Ok(json!({
        "start_to_ready_ms": ready_ms,
        "natter_idle_rss_bytes": natter,
        "nats_server_idle_rss_bytes": nats,
    }))
}
