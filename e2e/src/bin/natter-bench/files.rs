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

    let images = photos(target, plan, &http, &user).await?;

    let mb = size as f64 / 1e6;
    let growth = |peaks: [u64; 3]| [0, 1, 2].map(|i| peaks[i].saturating_sub(before[i]));
    let (up, down) = (growth(upload_peak), growth(download_peak));
    println!(
        "files: on the {} store, {} MiB up at {:.1} MB/s, down at {:.1} MB/s; natter + nats-server resident memory grew by at most {:.1} MB up (natter {:.1}, nats-server {:.1}), {:.1} MB down (natter {:.1}, nats-server {:.1})",
        if plan.files_on_disk {
            "file://"
        } else {
            "NATS object"
        },
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
        "store": if plan.files_on_disk { "file" } else { "nats" },
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
        "photos": images,
    }))
}

/// A 12-megapixel JPEG (4000 by 3000: a phone camera's), different for
/// each seed: gradients with noise, about what a photo weighs.
fn photo(seed: u32) -> anyhow::Result<Vec<u8>> {
    let mut state = seed.wrapping_mul(2_654_435_761) | 1;
    let pixels = image::RgbImage::from_fn(4000, 3000, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let noise = (state & 31) as u8;
        image::Rgb([
            ((x / 16) as u8).wrapping_add(noise),
            ((y / 12) as u8).wrapping_add(noise),
            (((x + y) / 28) as u8).wrapping_add(noise),
        ])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&pixels)?;
    Ok(jpeg)
}

/// Photos sent as images through the edge, one after another: each upload
/// ends when the files service has decoded it, made its two thumbnails and
/// stored it; and the same work on one core in this process, for the
/// decoder's own pace.
async fn photos(
    target: &Target,
    plan: &Plan,
    http: &reqwest::Client,
    user: &e2e::User,
) -> anyhow::Result<Value> {
    let count: u32 = if plan.quick { 2 } else { 8 };
    let base = target.api().base().to_owned();
    let seed = rand::random::<u32>();
    let shots: Vec<Vec<u8>> = (0..count)
        .map(|i| photo(seed.wrapping_add(i)))
        .collect::<anyhow::Result<_>>()?;
    let bytes = shots.first().map_or(0, Vec::len);
    let started = Instant::now();
    let mut slowest = 0f64;
    for shot in &shots {
        let one = Instant::now();
        let created = http
            .post(format!("{base}/v1/files/uploads"))
            .bearer_auth(&user.token)
            .header("tus-resumable", "1.0.0")
            .header("upload-length", shot.len().to_string())
            .header("upload-metadata", "filename cGhvdG8uanBn,kind aW1hZ2U=")
            .send()
            .await?;
        ensure!(
            created.status() == 201,
            "photo creation: {}",
            created.status()
        );
        let location = created.headers()["location"].to_str()?.to_owned();
        let written = http
            .patch(format!("{base}{location}"))
            .bearer_auth(&user.token)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", "0")
            .header("content-type", "application/offset+octet-stream")
            .body(shot.clone())
            .send()
            .await?;
        ensure!(
            written.status() == 204,
            "photo upload: {}",
            written.status()
        );
        slowest = slowest.max(one.elapsed().as_secs_f64());
    }
    let through_edge = count as f64 / started.elapsed().as_secs_f64();
    // The decode, thumbnails and metadata pass alone, here.
    let local = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let started = Instant::now();
        for shot in &shots {
            files::media::picture(&Bytes::from(shot.clone()))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(count as f64 / started.elapsed().as_secs_f64())
    })
    .await??;
    println!(
        "photos: {count} JPEGs of 12 MP ({:.1} MB each) sent as images at {through_edge:.2}/s through the edge (slowest {:.0} ms); decoded and thumbnailed at {local:.2}/s on one core",
        bytes as f64 / 1e6,
        slowest * 1e3,
    );
    Ok(json!({
        "count": count,
        "megapixels": 12,
        "jpeg_bytes": bytes,
        "per_second_through_edge": round(through_edge),
        "slowest_upload_ms": round(slowest * 1e3),
        "per_second_one_core": round(local),
    }))
}
