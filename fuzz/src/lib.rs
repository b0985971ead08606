//! Fuzzing the decoders that face clients, on stable Rust: WebSocket
//! frames (JSON and protobuf), HTTP JSON bodies, query strings and path
//! parameters of every request type the edge forwards.
//!
//! Each input is either built from the structure of the protocol (random
//! frames and requests through `arbitrary`, then encoded), or a file of the
//! corpus (`fuzz/corpus/<target>/`), and then mutated at the byte level
//! (flips, interesting values, protocol tokens, cuts, repeats, splices).
//! A decoder must answer every input with a value or an error: a panic is
//! a finding, saved to `fuzz/findings/` with the input that caused it. What
//! decodes must also survive a round trip through its encoding.
//!
//! Layout: [`targets`] (what is decoded, and the round-trip checks),
//! [`inputs`] (structure-aware generation and mutation), [`run`] (the loop).

pub mod inputs;
pub mod targets;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng as _, SeedableRng as _};

pub use targets::Target;

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub inputs: u64,
    pub decoded: u64,
    pub elapsed: Duration,
    /// Inputs that made a decoder panic or break a round trip.
    pub findings: Vec<(String, Vec<u8>)>,
}

/// The seeds of a target: the files in `corpus/<target>/`.
pub fn corpus(dir: &Path, target: Target) -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir.join(target.name())) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            if let Ok(bytes) = std::fs::read(&path) {
                seeds.push(bytes);
            }
        }
    }
    seeds
}

/// Runs `inputs` inputs through `target` (deterministic for a `seed`).
pub fn run(target: Target, seeds: &[Vec<u8>], inputs: u64, seed: u64) -> Report {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut report = Report::default();
    let started = Instant::now();
    let mut input = Vec::with_capacity(4096);
    for _ in 0..inputs {
        input.clear();
        if seeds.is_empty() || rng.gen_bool(0.5) {
            inputs::generate(target, &mut rng, &mut input);
        } else {
            input.extend_from_slice(&seeds[rng.gen_range(0..seeds.len())]);
        }
        if rng.gen_bool(0.8) {
            inputs::mutate(&mut rng, &mut input, seeds);
        }
        report.inputs += 1;
        match std::panic::catch_unwind(|| targets::check(target, &input)) {
            Ok(Ok(true)) => report.decoded += 1,
            Ok(Ok(false)) => {}
            Ok(Err(broken)) => report.findings.push((broken, input.clone())),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panic".into());
                report
                    .findings
                    .push((format!("panic: {what}"), input.clone()));
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// Saves findings as `<dir>/<target>-<sha256 prefix>`; returns the paths.
pub fn save(dir: &Path, target: Target, report: &Report) -> std::io::Result<Vec<PathBuf>> {
    use sha2::Digest as _;
    std::fs::create_dir_all(dir)?;
    let mut saved = Vec::new();
    for (_, input) in &report.findings {
        let hash = sha2::Sha256::digest(input);
        let name: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("{}-{name}", target.name()));
        std::fs::write(&path, input)?;
        saved.push(path);
    }
    Ok(saved)
}
