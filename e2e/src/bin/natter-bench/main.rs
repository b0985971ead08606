//! natter-bench: drives a real natter the way clients do (HTTP API and
//! WebSocket connections with protobuf frames) and reports what it measured,
//! next to the raw NATS limit measured in the same run on a nats-server
//! started the same way (or the running one).
//!
//! By default it starts its own systems: a nats-server on a free port and
//! one all-in-one `natter` process from the same target directory, in a
//! temporary data dir (a fresh one per scenario that needs a clean slate).
//! With `--url` and `--nats-url` it drives a running natter instead (`just
//! up`); figures that need the processes (RSS, CPU) are then left out.
//! Traffic goes to loopback only, and every loop is bounded in count and time.
//!
//! Layout: `target.rs` (what is measured: own system or a running one),
//! `wire.rs` (a lean WebSocket client), one module per scenario
//! (`baseline`, `direct`, `groups`, `offline`, `idle`, `footprint`,
//! `files`, `speech`, `search`),
//! `report.rs` (percentiles, the table and the JSON file).

mod baseline;
mod direct;
mod files;
mod floor;
mod footprint;
mod groups;
mod idle;
mod offline;
mod report;
mod search;
mod speech;
mod target;
mod wire;

use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// A smoke run: small sizes, short phases (about a minute).
    Quick,
    /// The figures: the sizes the targets are stated for.
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Scenario {
    Footprint,
    Baseline,
    Direct,
    Groups,
    Offline,
    Idle,
    Files,
    Speech,
    Search,
}

#[derive(Parser)]
#[command(name = "natter-bench", about = "Measure natter as clients see it")]
struct Args {
    #[arg(long, value_enum, default_value_t = Mode::Full)]
    mode: Mode,
    /// Scenarios to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/bench/latest.json")]
    out: PathBuf,
    /// Drive a running natter at this base URL (e.g. http://127.0.0.1:8080)
    /// instead of starting one; needs --nats-url.
    #[arg(long, requires = "nats_url")]
    url: Option<String>,
    /// The NATS server of the running natter (for the raw baseline).
    #[arg(long, requires = "url")]
    nats_url: Option<String>,
    /// Group sizes of the group scenario (default: 100 in quick mode,
    /// 100,500,1000 in full mode).
    #[arg(long, value_delimiter = ',')]
    group_sizes: Vec<usize>,
    /// Groups of this many members use read fan-out (own systems only); a
    /// size above every group measures write fan-out alone.
    #[arg(long, default_value_t = messages::Config::default().large_group_members)]
    large_group_members: u32,
    /// One-to-one pair counts (default: 4 quick, 16,100 full).
    #[arg(long, value_delimiter = ',')]
    pairs: Vec<usize>,
    /// Keep files on the local filesystem (`files.store_url = file://...`)
    /// instead of the NATS object store (own systems only): what the files
    /// scenario costs without nats-server in the bytes' path.
    #[arg(long)]
    files_on_disk: bool,
    /// Messages the search scenario indexes (default: 20,000 quick,
    /// 1,000,000 full).
    #[arg(long)]
    search_messages: Option<usize>,
    /// The one-to-one rate the search scenario's index must follow,
    /// messages/s (default: 1500, half of natter's one-to-one saturation
    /// when search was added; it takes about 22,000/s since: docs/bench.md).
    #[arg(long, default_value_t = 1500)]
    search_rate: u64,
    /// One-to-one open-loop rates, messages/s in all (default: 200 quick,
    /// 3000,6000,10000 full).
    #[arg(long, value_delimiter = ',')]
    rates: Vec<u64>,
    /// Seconds of each measured phase (default: 2 quick, 5 full; 150
    /// includes JetStream's periodic sync, every 2 minutes).
    #[arg(long)]
    phase_secs: Option<u64>,
    /// Idle connection counts (default: 1000 quick, 10000,50000 full).
    #[arg(long, value_delimiter = ',')]
    idle: Vec<usize>,
    /// Also write every message of the one-to-one open-loop phases into
    /// this directory, a file per phase (`direct-<pairs>-pairs-<rate>.tsv`:
    /// its scheduled time from the phase's start and its latency, in µs),
    /// to match slow moments with what the servers did at the time.
    #[arg(long)]
    latencies: Option<PathBuf>,
    /// The ways of appending the baseline's batched model measures
    /// (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    appends: Vec<baseline::Appends>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Holds idle connections for the idle scenario when they take more
    /// than one process (started by the bench itself).
    #[command(hide = true)]
    IdleWorker {
        #[arg(long)]
        edge: std::net::SocketAddr,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        source: std::net::Ipv4Addr,
    },
    /// Serves bare WebSockets for the idle scenario's floor (started by the
    /// bench itself).
    #[command(hide = true)]
    WsFloor,
}

/// The sizes of one run.
pub struct Plan {
    pub quick: bool,
    /// Seconds of each measured phase.
    pub phase_secs: u64,
    pub pairs: Vec<usize>,
    /// Open-loop rates of the one-to-one scenario, messages/s.
    pub rates: Vec<u64>,
    pub group_sizes: Vec<usize>,
    pub group_messages: usize,
    pub large_group_members: u32,
    /// Files on the local filesystem instead of the NATS object store.
    pub files_on_disk: bool,
    pub offline_messages: usize,
    pub idle: Vec<usize>,
    /// The open-file limit the idle scenario runs under.
    pub fd_limit: Option<u64>,
    /// Messages the search scenario indexes, and the rate it must follow.
    pub search_messages: usize,
    pub search_rate: u64,
    /// The ways of appending of the baseline's batched model.
    pub appends: Vec<baseline::Appends>,
    /// Where the open-loop phases' messages are written, if anywhere.
    pub latencies: Option<PathBuf>,
}

impl Plan {
    fn new(args: &Args) -> anyhow::Result<Self> {
        let quick = args.mode == Mode::Quick;
        let group_sizes = match (&args.group_sizes[..], quick) {
            ([], true) => vec![100],
            ([], false) => vec![100, 500, 1000],
            (sizes, _) => sizes.to_vec(),
        };
        let idle = match (&args.idle[..], quick) {
            ([], true) => vec![1000],
            ([], false) => vec![10_000, 50_000],
            (counts, _) => counts.to_vec(),
        };
        if group_sizes.iter().any(|n| !(2..=5000).contains(n)) {
            bail!("group sizes must be within 2..=5000");
        }
        let pairs = match (&args.pairs[..], quick) {
            ([], true) => vec![4],
            ([], false) => vec![16, 100],
            (counts, _) => counts.to_vec(),
        };
        if pairs.iter().any(|p| !(1..=1000).contains(p)) {
            bail!("pairs must be within 1..=1000");
        }
        let rates = match (&args.rates[..], quick) {
            ([], true) => vec![200],
            ([], false) => vec![3000, 6000, 10_000],
            (rates, _) => rates.to_vec(),
        };
        if rates.iter().any(|r| !(1..=100_000).contains(r)) {
            bail!("rates must be within 1..=100000 messages/s");
        }
        if args.phase_secs.is_some_and(|s| !(1..=600).contains(&s)) {
            bail!("phase seconds must be within 1..=600");
        }
        if idle.iter().any(|n| !(1..=100_000).contains(n)) {
            bail!("idle connection counts must be within 1..=100000");
        }
        let search_messages =
            args.search_messages
                .unwrap_or(if quick { 20_000 } else { 1_000_000 });
        if !(1000..=10_000_000).contains(&search_messages) {
            bail!("search messages must be within 1000..=10000000");
        }
        if !(1..=100_000).contains(&args.search_rate) {
            bail!("the search rate must be within 1..=100000 messages/s");
        }
        Ok(Self {
            quick,
            search_messages,
            search_rate: args.search_rate,
            phase_secs: args.phase_secs.unwrap_or(if quick { 2 } else { 5 }),
            pairs,
            rates,
            group_sizes,
            // At least 100 in full mode, so p99 is not just the maximum.
            group_messages: if quick { 10 } else { 100 },
            large_group_members: args.large_group_members,
            files_on_disk: args.files_on_disk,
            offline_messages: if quick { 1000 } else { 10_000 },
            idle,
            fd_limit: None,
            latencies: args.latencies.clone(),
            appends: if args.appends.is_empty() {
                baseline::Appends::ALL.to_vec()
            } else {
                args.appends.clone()
            },
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Command::IdleWorker {
            edge,
            count,
            source,
        }) => {
            idle::worker(edge, count, source).await?;
            // Leave without waiting for its stdin reader.
            std::process::exit(0);
        }
        Some(Command::WsFloor) => {
            floor::serve().await?;
            std::process::exit(0);
        }
        None => {}
    }
    let mut plan = Plan::new(&args)?;
    let external = match (&args.url, &args.nats_url) {
        (Some(url), Some(nats)) => Some(target::External {
            url: url.trim_end_matches('/').to_owned(),
            nats_url: nats.clone(),
        }),
        _ => None,
    };
    let mut scenarios = if args.only.is_empty() {
        vec![
            Scenario::Footprint,
            Scenario::Baseline,
            Scenario::Direct,
            Scenario::Groups,
            Scenario::Offline,
            Scenario::Idle,
            Scenario::Files,
            Scenario::Speech,
            Scenario::Search,
        ]
    } else {
        args.only.clone()
    };
    scenarios.sort();
    scenarios.dedup();
    // Idle connections need a file descriptor each, here and in the natter
    // process started from here: counts beyond the limit are capped (and
    // the report says so).
    if scenarios.contains(&Scenario::Idle) {
        let want = plan.idle.iter().max().copied().unwrap_or(0) as u64 + 4096;
        let limit = target::raise_fd_limit(want)?;
        plan.fd_limit = Some(limit);
    }
    println!(
        "natter-bench: {} mode, {} cores, load average {}",
        if plan.quick { "quick" } else { "full" },
        report::cores(),
        report::loadavg()
    );

    let mut results = serde_json::Map::new();
    // The raw NATS figures every natter figure is compared to.
    let mut base: Option<baseline::Baseline> = None;
    let mut nats_version = String::new();
    for scenario in scenarios {
        let value: Value = match scenario {
            Scenario::Footprint => match &external {
                Some(_) => json!({ "skipped": "needs its own system" }),
                None => footprint::run().await?,
            },
            Scenario::Baseline => {
                let target = target::Target::start(external.as_ref(), &plan).await?;
                nats_version = target.nats_version().await;
                let b = baseline::run(&target, &plan).await?;
                let value = b.to_json();
                base = Some(b);
                target.stop().await;
                value
            }
            Scenario::Direct => {
                let target = target::Target::start(external.as_ref(), &plan).await?;
                let value = direct::run(&target, &plan, base.as_ref()).await?;
                target.stop().await;
                value
            }
            Scenario::Groups => groups::run(external.as_ref(), &plan).await?,
            Scenario::Offline => {
                let target = target::Target::start(external.as_ref(), &plan).await?;
                let value = offline::run(&target, &plan).await?;
                target.stop().await;
                value
            }
            Scenario::Idle => idle::run(external.as_ref(), &plan).await?,
            Scenario::Files => {
                let target = target::Target::start(external.as_ref(), &plan).await?;
                let value = files::run(&target, &plan).await?;
                target.stop().await;
                value
            }
            Scenario::Speech => speech::run(external.as_ref(), &plan).await?,
            Scenario::Search => search::run(external.as_ref(), &plan).await?,
        };
        results.insert(format!("{scenario:?}").to_lowercase(), value);
    }
    if nats_version.is_empty() {
        // No baseline ran: ask a server for its version all the same.
        let target = target::Target::start(external.as_ref(), &plan).await?;
        nats_version = target.nats_version().await;
        target.stop().await;
    }

    let report = json!({
        "schema": 1,
        "mode": if plan.quick { "quick" } else { "full" },
        "machine": {
            "cores": report::cores(),
            "loadavg": report::loadavg(),
        },
        "versions": {
            "natter": env!("CARGO_PKG_VERSION"),
            "nats_server": nats_version,
        },
        "target": match &external {
            Some(e) => json!({ "url": e.url, "nats_url": e.nats_url }),
            None => json!("own system (all-in-one natter, nats-server -js, temporary data dir)"),
        },
        "results": Value::Object(results),
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("\nreport written to {}", args.out.display());
    Ok(())
}
