//! Idle connections: N WebSocket connections that resume and then only
//! answer pings. The figures are the connect rate and the edges' resident
//! memory per connection. Connections come from several loopback source
//! addresses (127.0.0.10, .11, ...) so N may pass the 64k ports one address
//! has; tokens are spread over a few users' devices (one login each: argon2
//! makes a login per connection too slow for a benchmark).
//!
//! Every connection takes a file descriptor in the client and in the edge.
//! When N passes what one process may open (the open-file limit, which only
//! CAP_SYS_RESOURCE raises), the bench's own system gets more edge
//! processes beside the all-in-one one, as behind a load balancer, and the
//! clients run in as many worker processes (`natter-bench idle-worker`),
//! each holding its share open until the bench closes its stdin. The memory
//! per connection is then the growth of all edges together.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::report::round;
use crate::target::{External, Target, raise_fd_limit, rss_bytes, unique};
use crate::{Plan, wire};

/// How long the connections sit idle after the last resume before the
/// edges' memory is read: an edge drops a quiet connection's frame reader
/// after a second, and its allocator gives the pages back a second or two
/// later; the figure is the memory of connections that stay idle.
const SETTLE: Duration = Duration::from_secs(5);
/// Connections opened at once (per client process).
const CONCURRENCY: usize = 256;
/// Connections per source address. Binding to an address with port 0 makes
/// the kernel search the ephemeral range for a port that address does not
/// use yet, and that search slows with every port taken: few connections
/// per address keep opening fast.
const PER_ADDRESS: usize = 2_000;
/// Descriptors a process keeps for everything but idle connections.
const SPARE_FDS: usize = 2048;
/// How long a worker may take to open and resume its share.
const WORKER_READY: Duration = Duration::from_secs(600);
/// Tokens handed to worker processes (comma-separated).
const TOKENS_ENV: &str = "NATTER_BENCH_TOKENS";

pub async fn run(external: Option<&External>, plan: &Plan) -> anyhow::Result<Value> {
    let per_process = plan
        .fd_limit
        .map_or(usize::MAX, |l| (l as usize).saturating_sub(SPARE_FDS))
        .max(1);
    let mut rounds = Vec::new();
    for &requested in &plan.idle {
        // A running natter has the edges it has: one process's worth.
        let n = match external {
            Some(_) => requested.min(per_process),
            None => requested,
        };
        if n < requested {
            println!(
                "\nidle connections: {requested} requested, {n} possible under the open-file limit of {} (raising it needs CAP_SYS_RESOURCE; the bench's own system would add edges)",
                plan.fd_limit.unwrap_or(0)
            );
        }
        let mut target = Target::start(external, plan).await?;
        let round = connections(&mut target, n, per_process).await;
        target.stop().await;
        let mut round = round?;
        round["requested"] = json!(requested);
        round["fd_limit"] = json!(plan.fd_limit);
        rounds.push(round);
    }
    // The same clients against the bare crates natter's edge is built on.
    let largest = plan.idle.iter().max().copied().unwrap_or(1);
    let floor = crate::floor::measure(largest.min(per_process)).await?;
    Ok(json!({ "rounds": rounds, "floor": floor }))
}

async fn connections(target: &mut Target, n: usize, per_process: usize) -> anyhow::Result<Value> {
    let api = target.api();
    let users = (n / 500).clamp(1, 100);
    let mut tokens = Vec::new();
    for i in 0..users {
        tokens.push(api.user(&unique(&format!("idle{i}"))).await?.token);
    }
    let mut edges = vec![(target.edge_addr(), target.natter_pid())];
    while edges.len() < n.div_ceil(per_process) {
        let (addr, pid) = target.add_edge().await?;
        edges.push((addr, Some(pid)));
    }
    let shares: Vec<usize> = (0..edges.len())
        .map(|k| n / edges.len() + usize::from(k < n % edges.len()))
        .collect();
    let rss = || -> Option<u64> { edges.iter().map(|(_, pid)| pid.and_then(rss_bytes)).sum() };
    // Settle, then the baseline memory: once the processes have given back
    // what starting took (jemalloc returns pages in the background, later
    // on a loaded machine), or 10 s at most.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..40 {
        let first = rss().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let second = rss().unwrap_or(0);
        if first.abs_diff(second) <= (first / 200).max(256 * 1024) {
            break;
        }
    }
    let each = || -> Vec<Option<u64>> {
        edges
            .iter()
            .map(|(_, pid)| pid.and_then(rss_bytes))
            .collect()
    };
    let rss_before = rss();
    let each_before = each();

    let (connect_secs, resume_secs, rss_after, each_after, rss_closed) = if edges.len() == 1 {
        let source = Ipv4Addr::new(127, 0, 0, 10);
        let (live, connect_secs, resume_secs) = open_idle(edges[0].0, &tokens, n, source).await?;
        tokio::time::sleep(SETTLE).await;
        let rss_after = rss();
        let each_after = each();
        drop(live);
        (
            connect_secs,
            resume_secs,
            rss_after,
            each_after,
            closed_rss(&rss).await,
        )
    } else {
        let mut workers = Vec::new();
        for (k, ((edge, _), share)) in edges.iter().zip(&shares).enumerate() {
            workers.push(spawn_worker(*edge, *share, k, &tokens)?);
        }
        let (mut connect_secs, mut resume_secs) = (0f64, 0f64);
        for worker in &mut workers {
            let (c, r) = worker.ready().await?;
            connect_secs = connect_secs.max(c);
            resume_secs = resume_secs.max(r);
        }
        tokio::time::sleep(SETTLE).await;
        let rss_after = rss();
        let each_after = each();
        for worker in workers {
            worker.stop().await;
        }
        (
            connect_secs,
            resume_secs,
            rss_after,
            each_after,
            closed_rss(&rss).await,
        )
    };
    let per_connection = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / n as f64),
        _ => None,
    };
    // Per process: the first one runs every service (per-user and
    // per-device state of the services counts there), the others only an edge.
    let processes: Vec<Value> = each_before
        .iter()
        .zip(&each_after)
        .zip(&shares)
        .enumerate()
        .map(|(k, ((before, after), share))| {
            let per = match (before, after) {
                (Some(b), Some(a)) => Some(a.saturating_sub(*b) as f64 / *share as f64),
                _ => None,
            };
            json!({
                "all_services": k == 0,
                "connections": share,
                "rss_before_bytes": before,
                "rss_after_bytes": after,
                "rss_per_connection_bytes": per.map(round),
            })
        })
        .collect();
    let mb = |b: Option<u64>| b.map_or("?".into(), |b| format!("{:.1}", b as f64 / 1e6));
    println!(
        "\nidle connections: {n} on {} edge process(es), opened at {:.0}/s, resumed at {:.0}/s; edge RSS {} → {} MB, {} per connection; {} MB 5 s after they closed",
        edges.len(),
        n as f64 / connect_secs,
        n as f64 / resume_secs,
        mb(rss_before),
        mb(rss_after),
        per_connection.map_or("?".into(), |p| format!("{:.1} KB", p / 1024.0)),
        mb(rss_closed),
    );
    if processes.len() > 1 {
        for (k, p) in processes.iter().enumerate() {
            println!(
                "  edge process {k} ({}): {} connections, {} per connection",
                if k == 0 { "all services" } else { "edge only" },
                p["connections"],
                p["rss_per_connection_bytes"]
                    .as_f64()
                    .map_or("?".into(), |b| format!("{:.1} KB", b / 1024.0)),
            );
        }
    }
    Ok(json!({
        "connections": n,
        "users": users,
        "edge_processes": edges.len(),
        "client_processes": if edges.len() == 1 { 1 } else { edges.len() + 1 },
        "source_addresses": shares.iter().map(|s| s.div_ceil(PER_ADDRESS)).sum::<usize>(),
        "connect_per_sec": round(n as f64 / connect_secs),
        "resume_per_sec": round(n as f64 / resume_secs),
        "natter_rss_before_bytes": rss_before,
        "natter_rss_after_bytes": rss_after,
        "natter_rss_per_connection_bytes": per_connection.map(round),
        "natter_rss_after_close_bytes": rss_closed,
        "processes": processes,
    }))
}

/// The edges' memory once the connections are gone: given back or kept.
async fn closed_rss(rss: &impl Fn() -> Option<u64>) -> Option<u64> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    rss()
}

/// Open, resumed connections, each with a task that reads (and so answers
/// the edge's pings) until it is dropped.
pub struct Live(Vec<(wire::Sink, tokio::task::JoinHandle<()>)>);

impl Drop for Live {
    fn drop(&mut self) {
        for (_, reader) in &self.0 {
            reader.abort();
        }
    }
}

/// Opens `n` connections to `edge` from `source`, `source`+1, ... (one
/// address per `PER_ADDRESS`) and resumes each as a client does. Returns
/// them with the seconds opening and resuming took.
pub async fn open_idle(
    edge: SocketAddr,
    tokens: &[String],
    n: usize,
    source: Ipv4Addr,
) -> anyhow::Result<(Live, f64, f64)> {
    anyhow::ensure!(!tokens.is_empty(), "no tokens");
    let [a, b, c, d] = source.octets();
    let started = Instant::now();
    let opened: Vec<(wire::Sink, wire::Stream)> = futures::stream::iter(0..n)
        .map(|i| {
            let token = tokens[i % tokens.len()].clone();
            let last = usize::from(d) + i / PER_ADDRESS;
            let source = u8::try_from(last).map(|d| IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
            async move {
                let source = source.context("too many source addresses")?;
                wire::connect(edge, &token, Some(source)).await
            }
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
    let live = futures::stream::iter(opened)
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
    Ok((Live(live), connect_secs, started.elapsed().as_secs_f64()))
}

/// A process started from this binary for a hidden subcommand: it speaks in
/// lines on its stdout and ends when its stdin closes.
pub struct Helper {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Helper {
    /// Starts `natter-bench <args>` with `env` added.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting natter-bench {}", args.join(" ")))?;
        let stdout = child.stdout.take().context("helper stdout")?;
        Ok(Self {
            child,
            lines: tokio::io::BufReader::new(stdout).lines(),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Its next line, within `wait`.
    pub async fn line(&mut self, wait: Duration) -> anyhow::Result<String> {
        tokio::time::timeout(wait, self.lines.next_line())
            .await
            .context("a helper process took too long")??
            .context("a helper process exited early")
    }

    /// Closes its stdin (which ends it) and waits for it.
    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// In a helper process: returns when stdin closes, or after ten minutes.
pub async fn until_stdin_closes() {
    let closed = tokio::task::spawn_blocking(|| {
        use std::io::Read;
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    });
    let _ = tokio::time::timeout(Duration::from_secs(600), closed).await;
}

/// A client worker process holding a share of the idle connections.
struct Worker(Helper);

fn spawn_worker(
    edge: SocketAddr,
    count: usize,
    k: usize,
    tokens: &[String],
) -> anyhow::Result<Worker> {
    // Worker k's connections come from 127.0.k+1.10 and up.
    let source = Ipv4Addr::new(127, 0, u8::try_from(k + 1)?, 10);
    let (edge, count, source) = (edge.to_string(), count.to_string(), source.to_string());
    let args = [
        "idle-worker",
        "--edge",
        &edge,
        "--count",
        &count,
        "--source",
        &source,
    ];
    Ok(Worker(Helper::start(
        &args,
        &[(TOKENS_ENV, &tokens.join(","))],
    )?))
}

impl Worker {
    /// Waits for the worker's "ready <open secs> <resume secs>" line.
    async fn ready(&mut self) -> anyhow::Result<(f64, f64)> {
        let line = self.0.line(WORKER_READY).await.context("an idle worker")?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("ready"), Some(c), Some(r)) => Ok((c.parse()?, r.parse()?)),
            _ => anyhow::bail!("unexpected line from an idle worker: {line}"),
        }
    }

    async fn stop(self) {
        self.0.stop().await;
    }
}

/// `natter-bench idle-worker`: opens `count` idle connections to `edge`
/// with the tokens in `NATTER_BENCH_TOKENS`, prints "ready <open secs>
/// <resume secs>", and holds them until its stdin closes (or ten minutes
/// pass).
pub async fn worker(edge: SocketAddr, count: usize, source: Ipv4Addr) -> anyhow::Result<()> {
    anyhow::ensure!(
        edge.ip().is_loopback(),
        "the bench drives loopback addresses only"
    );
    raise_fd_limit((count + SPARE_FDS) as u64)?;
    let tokens: Vec<String> = std::env::var(TOKENS_ENV)
        .with_context(|| format!("{TOKENS_ENV} is not set"))?
        .split(',')
        .map(str::to_owned)
        .collect();
    let (live, connect_secs, resume_secs) = open_idle(edge, &tokens, count, source).await?;
    println!("ready {connect_secs} {resume_secs}");
    until_stdin_closes().await;
    drop(live);
    Ok(())
}
