//! The natter binary: runs any subset of the services in one process (all of
//! them by default: the `just up` and edge-box mode) or one per process (the
//! scale-out mode). The subjects are the same either way.
//!
//! It only wires things: arguments -> configuration -> telemetry -> NATS ->
//! each selected service's `run(config, nats, shutdown)` until a signal.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use natter::nats_users::LeafLogin;
use natter::{NatterConfig, Service};

#[derive(Parser)]
#[command(
    name = "natter",
    version,
    about = "natter: an instant-messaging server on NATS"
)]
struct Cli {
    /// TOML configuration file; NATTER_* environment variables override it.
    #[arg(long, short, env = "NATTER_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run services (the default command).
    Run {
        /// Services to run in this process, comma-separated (default: all).
        #[arg(long, short, value_delimiter = ',')]
        services: Vec<Service>,
    },
    /// Add a new token signing key; it signs after the auth service restarts,
    /// and tokens signed by older keys stay valid until they expire.
    RotateKey,
    /// Print the effective configuration (secrets hidden) and exit.
    Config,
    /// The search index of a running search service (reached over NATS).
    Search {
        #[command(subcommand)]
        action: SearchAction,
    },
    /// Write a nats-server config for this data dir (`<data>/nats/server.conf`)
    /// with an nkey per NATS user (`<data>/nats/keys`, made once and kept):
    /// `just up` and standalone edge boxes run nats-server with it.
    NatsSetup {
        /// Where nats-server listens.
        #[arg(long, default_value = "127.0.0.1:4222")]
        listen: String,
        /// Also accept edge boxes' leaf node links on this address (they
        /// log in as `leaf`, with the edge's permissions).
        #[arg(long, conflicts_with = "leaf")]
        leafnodes: Option<String>,
        /// Write an edge box's config instead: a leaf node of the hub, no
        /// JetStream of its own. The hub's URL (with `leaf:<password>@`) is
        /// read from $NATTER_HUB_URL when nats-server starts, unless --hub
        /// and --hub-seed are given.
        #[arg(long)]
        leaf: bool,
        /// The hub's leaf node URL (nats-leaf://host:7422), with --hub-seed.
        #[arg(long, requires_all = ["leaf", "hub_seed"])]
        hub: Option<String>,
        /// The seed file of the hub's `leaf` user (an nkey hub), with --hub.
        #[arg(long, requires = "hub")]
        hub_seed: Option<PathBuf>,
        /// Print `nats/users.conf` (the cluster's users, with passwords) instead.
        #[arg(long)]
        users_conf: bool,
    },
}

#[derive(Subcommand)]
enum SearchAction {
    /// Where the index stands: messages indexed, events not yet applied,
    /// a rebuild's progress.
    Status,
    /// Empty the index and rebuild it from the messages service's history,
    /// showing its progress until it is done (searches go on meanwhile).
    Reindex,
}

/// jemalloc gives freed memory back to the system within seconds (its
/// background thread purges pages unused for `dirty_decay_ms`; see
/// `.cargo/config.toml`), where glibc's allocator kept a burst of 5,000
/// connections' ~110 MB after they closed: a small edge box needs it back.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(start(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(cli: Cli) -> anyhow::Result<()> {
    let config = NatterConfig::load(cli.config.as_deref())?;
    shared::telemetry::init(config.log_json);
    match cli.command.unwrap_or(Command::Run {
        services: Vec::new(),
    }) {
        Command::Run { services } => {
            let services = if services.is_empty() {
                if !Service::Search.built() {
                    tracing::info!(
                        "built without the search feature: search calls go to a search service elsewhere on the cluster"
                    );
                }
                Service::ALL.into_iter().filter(|s| s.built()).collect()
            } else {
                services
            };
            run(config, &services).await
        }
        Command::RotateKey => {
            let auth = config.auth();
            let pool = shared::db::connect(&auth.database_url, 1, &auth::store::MIGRATOR).await?;
            let kid = auth::keys::generate(&pool).await?;
            println!("new signing key {kid}; restart the auth service to sign with it");
            Ok(())
        }
        Command::Config => {
            println!("{}", config.to_toml()?);
            Ok(())
        }
        Command::Search { action } => search(config, action).await,
        Command::NatsSetup {
            users_conf: true, ..
        } => {
            print!("{}", natter::nats_users::users_conf());
            Ok(())
        }
        Command::NatsSetup {
            listen,
            leafnodes,
            leaf,
            hub,
            hub_seed,
            ..
        } => {
            let seed = match &hub_seed {
                Some(file) => Some(
                    std::fs::read_to_string(file)
                        .with_context(|| format!("reading {}", file.display()))?,
                ),
                None => None,
            };
            let role = match (leaf, &hub, &seed) {
                (false, _, _) => Role::Hub { leafnodes },
                (true, Some(url), Some(seed)) => Role::Leaf(LeafLogin::Nkey {
                    url,
                    seed: seed.trim(),
                }),
                (true, _, _) => Role::Leaf(LeafLogin::UrlFromEnvironment),
            };
            nats_setup(&config, &listen, role)
        }
    }
}

enum Role<'a> {
    Hub { leafnodes: Option<String> },
    Leaf(LeafLogin<'a>),
}

/// See [`Command::NatsSetup`].
fn nats_setup(config: &NatterConfig, listen: &str, role: Role<'_>) -> anyhow::Result<()> {
    use natter::nats_users::{ALL_IN_ONE, Keys, leaf_conf, standalone_conf};
    let dir = std::path::absolute(config.data_dir.join("nats"))?;
    let keys = Keys::load_or_generate(&dir.join("keys"))
        .with_context(|| format!("keys in {}", dir.display()))?;
    let (text, user) = match role {
        Role::Hub { leafnodes } => (
            standalone_conf(&keys, listen, &dir.join("jetstream"), leafnodes.as_deref()),
            ALL_IN_ONE,
        ),
        Role::Leaf(login) => (leaf_conf(&keys, listen, &login), "edge"),
    };
    let file = dir.join("server.conf");
    natter::nats_users::write_config(&file, &text)
        .with_context(|| format!("writing {}", file.display()))?;
    println!("wrote {}", file.display());
    println!(
        "connect natter with NATTER_NATS__USER={user} NATTER_NATS__NKEY_FILE={}",
        keys.seed_file(user).display()
    );
    Ok(())
}

/// `natter search status|reindex`: asks the search service over NATS.
async fn search(config: NatterConfig, action: SearchAction) -> anyhow::Result<()> {
    use shared::endpoint::endpoints::{SearchReindex, SearchStatus};
    use shared::proto::search::{IndexStatus, IndexStatusRequest, ReindexRequest};
    let nats = shared::Nats::connect(&config.nats, "natter-cli")
        .await
        .context("connecting to NATS")?;
    let caller = nats.caller();
    let show = |s: &IndexStatus| {
        println!(
            "messages indexed: {}; events not yet applied: {}; {}",
            s.messages,
            s.lag,
            if s.rebuilding {
                format!("rebuilding: {}/{}", s.rebuilt_messages, s.rebuild_total)
            } else {
                "not rebuilding".to_owned()
            }
        );
    };
    match action {
        SearchAction::Status => {
            let status = caller
                .call_to::<SearchStatus>(&IndexStatusRequest {})
                .await
                .context("asking the search service")?;
            show(&status);
        }
        SearchAction::Reindex => {
            let mut status = caller
                .call_to::<SearchReindex>(&ReindexRequest {})
                .await
                .context("asking the search service to rebuild its index")?;
            show(&status);
            while status.rebuilding {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                status = caller
                    .call_to::<SearchStatus>(&IndexStatusRequest {})
                    .await
                    .context("asking the search service")?;
                show(&status);
            }
            println!("search index rebuilt");
        }
    }
    Ok(())
}

async fn run(config: NatterConfig, services: &[Service]) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let nats = shared::Nats::connect(&config.nats, "natter")
        .await
        .context("connecting to NATS")?;
    // Edges stop first, so their devices are announced offline and their
    // last cursors stored while the services still run.
    let shutdown = CancellationToken::new();
    let edge_shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let config = std::sync::Arc::new(config);
    for &service in services {
        let nats = nats.clone();
        // Edges stop on their own signal (see above).
        let stop = if service == Service::Edge {
            tracing::info!("natter edge at http://{}", config.edge.listen);
            edge_shutdown.clone()
        } else {
            shutdown.clone()
        };
        let config = config.clone();
        tasks.spawn(async move { (service, service.run(&config, nats, stop).await) });
    }
    tracing::info!(
        ?services,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "natter started"
    );

    let (signal, edge_signal) = (shutdown.clone(), edge_shutdown.clone());
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down (a second signal stops at once)");
        edge_signal.cancel();
        let first = std::time::Instant::now();
        loop {
            wait_for_signal().await;
            // One Ctrl-C often arrives twice (from the terminal and from a
            // wrapper script); only a later one means "now".
            if first.elapsed() > std::time::Duration::from_secs(1) {
                tracing::warn!("stopping at once");
                std::process::exit(130);
            }
        }
    });
    let mut failure = None;
    let edges = services.iter().filter(|s| **s == Service::Edge).count();
    let mut edges_done = 0;
    if edges == 0 {
        // Nothing to stop first: the signal stops the services directly.
        let (edge_signal, signal) = (edge_shutdown.clone(), signal.clone());
        tokio::spawn(async move {
            edge_signal.cancelled().await;
            signal.cancel();
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (service, result) = joined.context("service task panicked")?;
        let name = service.name();
        if let Err(e) = result {
            tracing::error!(service = name, error = %e, "service failed");
            failure.get_or_insert(anyhow::Error::from(e).context(format!("{name} service failed")));
        } else if !edge_shutdown.is_cancelled() {
            tracing::error!(service = name, "service stopped unexpectedly");
        }
        if service == Service::Edge {
            edges_done += 1;
        }
        // A failure stops everything; a finished edge stops the services.
        if failure.is_some() || edges_done == edges {
            edge_shutdown.cancel();
            signal.cancel();
        }
    }
    // NATS may be gone already (Ctrl-C reaches nats-server too): do not wait for it.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), nats.client.flush()).await;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
