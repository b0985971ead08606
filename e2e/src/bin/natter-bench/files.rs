//! Files through the edge: one upload of a large file with tus (one PATCH,
//! as tus-js-client sends it) and its download, each timed end to end, with
//! the resident memory of natter and nats-server sampled throughout (the
//! bytes must stream, never sit whole in a process).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Plan;
use crate::report::round;
use crate::target::{Target, rss_bytes, unique};

const MIB: usize = 1024 * 1024;

/// The file's bytes, a MiB at a time, different in every run (so the
/// store's deduplication does not skip the work).
fn content(size: usize, seed: u64) -> impl Iterator<Item = Bytes> {
    (0..size.div_ceil(MIB)).map(move |i| {
        let len = MIB.min(size - i * MIB);
        let mut hasher = Sha256::new();
        hasher.update(seed.to_le_bytes());
        hasher.update((i as u64).to_le_bytes());
        let block = hasher.finalize();
        Bytes::from(block.iter().cycle().take(len).copied().collect::<Vec<u8>>())
    })
}

/// The peak of natter's and nats-server's resident memory, together and
/// each, while it runs, sampled every 20 ms.
struct Peak {
    stop: Arc<AtomicBool>,
    /// Together, then each process.
    peaks: Arc<[AtomicU64; 3]>,
    task: tokio::task::JoinHandle<()>,
}

impl Peak {
    fn start(pids: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
        let task = tokio::spawn({
            let (stop, peaks) = (stop.clone(), peaks.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let each: Vec<u64> = pids.iter().map(|&p| rss_bytes(p).unwrap_or(0)).collect();
                    peaks[0].fetch_max(each.iter().sum(), Ordering::Relaxed);
                    for (peak, rss) in peaks[1..].iter().zip(each) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Self { stop, peaks, task }
    }

    /// The peaks: together, natter's, nats-server's.
    async fn end(self) -> [u64; 3] {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        [0, 1, 2].map(|i| self.peaks[i].load(Ordering::Relaxed))
    }
}

pub async fn run(target: &Target, plan: &Plan) -> anyhow::Result<Value> {
    let size = if plan.quick { 8 * MIB } else { 100 * MIB };
    let api = target.api();
    let user = api.user(&unique("files")).await?;
    let http = reqwest::Client::new();
    let base = api.base().to_owned();
    let pids: Vec<u32> = [target.natter_pid(), target.nats_pid()]
        .into_iter()
        .flatten()
        .collect();
    let before: Vec<u64> = pids.iter().map(|&p| rss_bytes(p).unwrap_or(0)).collect();
    let rss_before: u64 = before.iter().sum();
    let before = [
        rss_before,
        before.first().copied().unwrap_or(0),
        before.get(1).copied().unwrap_or(0),
    ];
    let seed = rand::random::<u64>();
    let mut digest = Sha256::new();
    for chunk in content(size, seed) {
        digest.update(&chunk);
    }
    let sha256: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    // Up: creation, then the whole file in one PATCH.
    let peak = Peak::start(pids.clone());
    let started = Instant::now();
    let created = http
        .post(format!("{base}/v1/files/uploads"))
        .bearer_auth(&user.token)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", size.to_string())
        .header("upload-metadata", "filename YmVuY2guYmlu")
        .send()
        .await?;
    ensure!(
        created.status() == 201,
        "upload creation: {}",
        created.status()
    );
    let location = created.headers()["location"].to_str()?.to_owned();
    let body = futures::stream::iter(content(size, seed).map(Ok::<Bytes, std::io::Error>));
    let written = http
        .patch(format!("{base}{location}"))
        .bearer_auth(&user.token)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    ensure!(written.status() == 204, "upload: {}", written.status());
    let upload_secs = started.elapsed().as_secs_f64();
    let upload_peak = peak.end().await;

    // Down, whole, checked.
    let path = location.replace("/v1/files/uploads/", "/v1/files/");
    let peak = Peak::start(pids.clone());
    let started = Instant::now();
    let response = http
        .get(format!("{base}{path}"))
        .bearer_auth(&user.token)
        .send()
        .await?;
    ensure!(response.status() == 200, "download: {}", response.status());
    let etag = response.headers()["etag"]
        .to_str()?
        .trim_matches('"')
        .to_owned();
    let mut stream = response.bytes_stream();
    let (mut got, mut digest) = (0usize, Sha256::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("download body")?;
        got += chunk.len();
        digest.update(&chunk);
    }
    let download_secs = started.elapsed().as_secs_f64();
    let download_peak = peak.end().await;
    let downloaded: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    ensure!(got == size, "downloaded {got} of {size} bytes");
    ensure!(
        downloaded == sha256 && etag == sha256,
        "the bytes came back changed"
    );

    let mb = size as f64 / 1e6;
    let growth = |peaks: [u64; 3]| [0, 1, 2].map(|i| peaks[i].saturating_sub(before[i]));
    let (up, down) = (growth(upload_peak), growth(download_peak));
    println!(
        "files: {} MiB up at {:.1} MB/s, down at {:.1} MB/s; natter + nats-server resident memory grew by at most {:.1} MB up (natter {:.1}, nats-server {:.1}), {:.1} MB down (natter {:.1}, nats-server {:.1})",
        size / MIB,
        mb / upload_secs,
        mb / download_secs,
        up[0] as f64 / 1e6,
        up[1] as f64 / 1e6,
        up[2] as f64 / 1e6,
        down[0] as f64 / 1e6,
        down[1] as f64 / 1e6,
        down[2] as f64 / 1e6,
    );
    Ok(json!({
        "size_bytes": size,
        "upload_mb_per_s": round(mb / upload_secs),
        "download_mb_per_s": round(mb / download_secs),
        "rss_before_bytes": rss_before,
        "upload_peak_rss_growth_bytes": up[0],
        "upload_peak_rss_growth_natter_bytes": up[1],
        "upload_peak_rss_growth_nats_bytes": up[2],
        "download_peak_rss_growth_bytes": down[0],
        "download_peak_rss_growth_natter_bytes": down[1],
        "download_peak_rss_growth_nats_bytes": down[2],
    }))
}
