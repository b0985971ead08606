//! `natter-fuzz`: runs the decoders that face clients on generated and
//! mutated inputs (see the library). `just fuzz` runs 10 million.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use natter_fuzz::Target;

#[derive(Parser)]
#[command(about = "Fuzz natter's client-facing decoders")]
struct Args {
    /// Inputs in all, shared among the targets.
    #[arg(long, default_value_t = 10_000_000)]
    inputs: u64,
    /// Targets (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    targets: Vec<Target>,
    /// The random seed (a run is repeatable with it).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seed inputs, one directory per target.
    #[arg(long, default_value = "fuzz/corpus")]
    corpus: PathBuf,
    /// Where inputs that break a decoder are saved.
    #[arg(long, default_value = "fuzz/findings")]
    findings: PathBuf,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let targets = if args.targets.is_empty() {
        Target::ALL.to_vec()
    } else {
        args.targets.clone()
    };
    // Panics are findings, reported below, not noise.
    std::panic::set_hook(Box::new(|_| {}));
    let per_target = args.inputs / targets.len() as u64;
    let threads = args.threads.max(1);
    let mut failed = false;
    for target in targets {
        let seeds = natter_fuzz::corpus(&args.corpus, target);
        let reports: Vec<_> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let seeds = &seeds;
                    let seed = args.seed.wrapping_mul(1000).wrapping_add(t);
                    scope.spawn(move || natter_fuzz::run(target, seeds, per_target / threads, seed))
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("worker"))
                .collect()
        });
        let inputs: u64 = reports.iter().map(|r| r.inputs).sum();
        let decoded: u64 = reports.iter().map(|r| r.decoded).sum();
        let secs = reports
            .iter()
            .map(|r| r.elapsed.as_secs_f64())
            .fold(0.0, f64::max);
        let findings: usize = reports.iter().map(|r| r.findings.len()).sum();
        println!(
            "{:<8} {inputs:>10} inputs in {secs:>6.1} s ({:>7.0}/s), {decoded} decoded, {} seeds, {findings} findings",
            target.name(),
            inputs as f64 / secs.max(1e-9),
            seeds.len(),
        );
        for report in &reports {
            for (what, _) in report.findings.iter().take(5) {
                println!("  {what}");
            }
            match natter_fuzz::save(&args.findings, target, report) {
                Ok(saved) => saved
                    .iter()
                    .for_each(|p| println!("  saved {}", p.display())),
                Err(e) => println!("  cannot save findings: {e}"),
            }
        }
        failed |= findings > 0;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
