//! What a scenario drives: a system of its own (nats-server + one
//! all-in-one natter process in a temporary data dir) or a running natter.

use std::net::SocketAddr;

use anyhow::Context;
use e2e::{Api, Mode, Settings, System};

use crate::Plan;

/// A running natter given on the command line.
pub struct External {
    pub url: String,
    pub nats_url: String,
}

pub enum Target {
    Own(Box<System>),
    External {
        url: String,
        nats_url: String,
        edge: SocketAddr,
    },
}

/// The settings of the systems the bench starts: production timings, long
/// idle timeout (a loaded bench client may answer pings late).
pub fn settings(plan: &Plan) -> Settings {
    Settings {
        invite_friends_only: false,
        quick_timings: false,
        idle_timeout_secs: 600,
        group_max_members: 5000,
        large_group_members: plan.large_group_members,
        files_on_disk: plan.files_on_disk,
        send_queue: 1024,
        ..Settings::default()
    }
}

impl Target {
    pub async fn start(external: Option<&External>, plan: &Plan) -> anyhow::Result<Self> {
        match external {
            Some(e) => {
                let authority = e
                    .url
                    .strip_prefix("http://")
                    .context("--url must be http://host:port")?;
                let edge = loopback(authority).await.context("--url")?;
                let nats = e
                    .nats_url
                    .strip_prefix("nats://")
                    .context("--nats-url must be nats://host:port")?;
                let nats = loopback(nats).await.context("--nats-url")?;
                Ok(Self::External {
                    url: format!("http://{edge}"),
                    nats_url: format!("nats://{nats}"),
                    edge,
                })
            }
            None => Ok(Self::Own(Box::new(
                System::start_with(Mode::AllInOne, settings(plan)).await?,
            ))),
        }
    }

    pub fn api(&self) -> Api {
        match self {
            Self::Own(system) => system.api(),
            Self::External { url, .. } => Api::new(url.clone()),
        }
    }

    pub fn ws_url(&self) -> String {
        match self {
            Self::Own(system) => system.ws_url(),
            Self::External { edge, .. } => format!("ws://{edge}/v1/ws"),
        }
    }

    pub fn edge_addr(&self) -> SocketAddr {
        match self {
            Self::Own(system) => system.edge_addr,
            Self::External { edge, .. } => *edge,
        }
    }

    pub fn nats_url(&self) -> String {
        match self {
            Self::Own(system) => system.nats.url(),
            Self::External { nats_url, .. } => nats_url.clone(),
        }
    }

    /// How to connect to its NATS: as the all-services user on an own
    /// system (which, like `just up`, requires an nkey), anonymously otherwise.
    pub fn nats_options(&self) -> anyhow::Result<async_nats::ConnectOptions> {
        match self {
            Self::Own(system) => system.nats_options(natter::nats_users::ALL_IN_ONE),
            Self::External { .. } => Ok(async_nats::ConnectOptions::new()),
        }
    }

    /// The natter process (own systems only).
    pub fn natter_pid(&self) -> Option<u32> {
        match self {
            Self::Own(system) => system.natter_pids().first().copied(),
            Self::External { .. } => None,
        }
    }

    pub fn nats_pid(&self) -> Option<u32> {
        match self {
            Self::Own(system) => system.nats.pid(),
            Self::External { .. } => None,
        }
    }

    /// Messages published into the nats-server and delivered out of it so
    /// far, from its `/varz` (own systems only).
    pub async fn nats_messages(&self) -> Option<[u64; 2]> {
        let Self::Own(system) = self else { return None };
        let url = format!("{}/varz", system.nats.monitoring_url()?);
        let varz: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
        Some([varz["in_msgs"].as_u64()?, varz["out_msgs"].as_u64()?])
    }

    /// Starts one more edge process beside the system's (own systems
    /// only): its address and process id.
    pub async fn add_edge(&mut self) -> anyhow::Result<(SocketAddr, u32)> {
        match self {
            Self::Own(system) => system.spawn_edge().await,
            Self::External { .. } => anyhow::bail!("more edges need a system of the bench's own"),
        }
    }

    pub async fn nats_version(&self) -> String {
        let Ok(options) = self.nats_options() else {
            return String::new();
        };
        match options.connect(self.nats_url()).await {
            Ok(client) => client.server_info().version,
            Err(_) => String::new(),
        }
    }

    pub async fn stop(self) {
        if let Self::Own(system) = self {
            system.stop().await;
        }
    }
}

/// The address behind `authority` (host:port), which must resolve to
/// loopback addresses only: the bench sends traffic nowhere else.
async fn loopback(authority: &str) -> anyhow::Result<SocketAddr> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host(authority).await?.collect();
    anyhow::ensure!(!addresses.is_empty(), "{authority} has no address");
    anyhow::ensure!(
        addresses.iter().all(|a| a.ip().is_loopback()),
        "{authority} is not a loopback address: the bench drives loopback addresses only"
    );
    Ok(addresses[0])
}

/// A username unique to this run (a running natter may know the plain one
/// from an earlier run).
pub fn unique(name: &str) -> String {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let tag = TAG.get_or_init(|| {
        let id = shared::ids::new_id().replace('-', "");
        id[id.len() - 8..].to_owned()
    });
    format!("{name}_{tag}")
}

/// Resident memory of a process, bytes (Linux).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time used between two readings, when both were possible.
pub fn used(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    after?.checked_sub(before?)
}

/// CPU time (user + system) of a process so far, milliseconds (Linux).
pub fn cpu_ms(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on Linux.
    Some((user + system) * 10)
}

/// Bytes a process has caused to be written to storage so far (Linux:
/// `write_bytes` of `/proc/<pid>/io`).
pub fn write_bytes(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let line = io.lines().find(|l| l.starts_with("write_bytes:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Raises this process's open-file limit (inherited by the processes it
/// starts) towards `want`, as far as the hard limit allows (raising that
/// needs CAP_SYS_RESOURCE). Returns the limit now in force.
pub fn raise_fd_limit(want: u64) -> anyhow::Result<u64> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if soft >= want {
        return Ok(soft);
    }
    if rlimit::setrlimit(rlimit::Resource::NOFILE, want, hard.max(want)).is_ok() {
        return Ok(want);
    }
    let limit = want.min(hard);
    rlimit::setrlimit(rlimit::Resource::NOFILE, limit, hard)
        .with_context(|| format!("raising the open-file limit to {limit}"))?;
    Ok(limit)
}
