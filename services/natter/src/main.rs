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
}

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
                Service::ALL.to_vec()
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
    }
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
