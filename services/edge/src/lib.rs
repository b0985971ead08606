//! The edge: the only part clients talk to. It holds WebSocket connections
//! and serves the HTTP JSON API, and keeps nothing that must survive it: it
//! may be killed at any moment and its clients resume on another edge.
//!
//! Layout:
//! - [`config`]: what an operator sets;
//! - [`keyring`]: verifying access tokens with the auth service's public keys;
//! - [`http`]: the HTTP routes (JSON API, health, WebSocket upgrade);
//! - [`ws`]: one WebSocket connection (reader, writer, sends, delivery);
//! - [`frames`]: the JSON / protobuf frame codec;
//! - [`inbox`]: replaying a user's inbox and storing device cursors;
//! - [`group_hub`]: one subscription per large group, shared by connections;
//! - [`push_hub`]: the edge's own subscription for inbox pushes and one per
//!   shard of users, shared by connections;
//! - [`limits`]: what one user may do (sockets, sends, typing, resumes);
//! - [`presence`]: announcing connected devices to the presence service;
//! - [`tls`]: TLS termination with certificate files reloaded on change;
//! - [`web`]: the embedded web client, served at `/`.
//!
//! Identity is established here and only here: the edge verifies the token
//! and sets the caller's user and device id in the headers of every call.

pub mod batcher;
pub mod config;
pub mod frames;
pub mod group_hub;
pub mod http;
pub mod inbox;
pub mod keyring;
pub mod limits;
pub mod presence;
pub mod push_hub;
pub mod sessions;
pub mod tls;
pub mod web;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shared::service::StartError;
use shared::{Nats, RpcError};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

/// What every connection and handler of this edge shares.
pub struct EdgeState {
    pub config: Config,
    pub nats: Nats,
    pub caller: shared::rpc::Caller,
    /// Sends from every connection, batched to the messages service.
    pub batcher: batcher::Batcher,
    pub keyring: keyring::KeyRing,
    pub inbox: inbox::InboxReader,
    pub group_hub: group_hub::GroupHub,
    pub push_hub: push_hub::PushHub,
    pub devices: presence::Devices,
    pub connections: Arc<Semaphore>,
    pub sessions: sessions::Sessions,
    pub limits: Arc<limits::UserLimits>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

impl EdgeState {
    /// Verifies an access token and that its session has not ended.
    pub async fn authenticate(&self, token: &str) -> Result<keyring::Verified, RpcError> {
        // Until the sessions ended before this edge started are known, a
        // token cannot be told good.
        if !self.sessions.is_loaded() {
            return Err(RpcError::unavailable("the edge is starting: retry"));
        }
        let verified = self.keyring.verify_token(token).await?;
        if self
            .sessions
            .is_revoked(&verified.who, verified.issued_at_ms)
        {
            return Err(RpcError::unauthorized("session ended: log in again"));
        }
        Ok(verified)
    }
}

/// An edge bound to its address, not yet serving.
pub struct Edge {
    state: Arc<EdgeState>,
    listener: tokio::net::TcpListener,
    /// With `edge.tls_cert_file`: the certificates it serves.
    tls: Option<Arc<tls::Certificates>>,
}

impl Edge {
    /// Validates the config, binds the listener and prepares the shared state.
    pub async fn bind(
        config: Config,
        nats: Nats,
        shutdown: CancellationToken,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let tls = if config.tls() {
            let certificates = tls::Certificates::open(
                std::path::Path::new(&config.tls_cert_file),
                std::path::Path::new(&config.tls_key_file),
            )
            .map_err(|e| shared::config::ConfigError::Invalid(format!("edge TLS: {e}")))?;
            Some(certificates)
        } else {
            None
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| StartError::setup(format!("cannot listen on {}", config.listen), e))?;
        // JetStream may not answer yet (a box whose link to the hub is
        // still coming up, a cluster electing its leader): keep trying.
        let mut delay = Duration::from_millis(100);
        let inbox = loop {
            match inbox::InboxReader::open(&nats, &config.streams, config.max_concurrent_replays)
                .await
            {
                Ok(inbox) => break inbox,
                Err(e) if !shutdown.is_cancelled() => {
                    tracing::info!(error = %e, "waiting for JetStream");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let caller = nats.caller();
        let edge_id = shared::ids::new_id();
        let state = Arc::new(EdgeState {
            keyring: keyring::KeyRing::new(caller.clone()),
            batcher: batcher::Batcher::start(caller.clone()),
            devices: presence::Devices::new(edge_id.clone(), caller.clone()),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            sessions: sessions::Sessions::default(),
            limits: Arc::new(limits::UserLimits::new(config.per_user.clone())),
            group_hub: group_hub::GroupHub::new(nats.client.clone()),
            push_hub: push_hub::PushHub::new(nats.client.clone(), &edge_id),
            caller,
            inbox,
            config,
            nats,
            shutdown,
            tasks: TaskTracker::new(),
        });
        Ok(Self {
            state,
            listener,
            tls,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until shutdown, then closes every connection (1001) and waits
    /// for them.
    pub async fn serve(self) -> Result<(), StartError> {
        let Self {
            state,
            listener,
            tls,
        } = self;
        let shutdown = state.shutdown.clone();
        // Ended sessions: heard before the first connection is served.
        let revocations = state
            .nats
            .client
            .subscribe(shared::subject::event::DEVICES_REVOKED)
            .await
            .map_err(|e| StartError::setup("subscribing to device.revoked", e))?;
        let listener_state = state.clone();
        let revocation_listener = tokio::spawn(async move {
            let stop = listener_state.shutdown.clone();
            listener_state.sessions.listen(revocations, stop).await;
        });
        // Token keys: keep trying until the auth service answers.
        let keys = state.clone();
        let key_loader = tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            while !keys.shutdown.is_cancelled() {
                match keys.keyring.refresh().await {
                    Ok(n) if n > 0 => break,
                    Ok(_) => tracing::warn!("auth published no token keys yet"),
                    Err(e) => tracing::info!(error = %e, "waiting for the auth service"),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            // Then the sessions that ended before this edge started (new
            // ones are heard live: the subscription above came first).
            let mut delay = Duration::from_millis(100);
            while !keys.shutdown.is_cancelled() {
                match keys.sessions.load(&keys.caller).await {
                    Ok(n) => {
                        tracing::debug!(revocations = n, "ended sessions loaded");
                        break;
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "waiting for the auth service's revocations")
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
        let beat = state.clone();
        let heartbeat = tokio::spawn(async move {
            let every = Duration::from_secs(beat.config.heartbeat_interval_secs);
            beat.devices
                .heartbeat_loop(every, beat.shutdown.clone())
                .await;
        });
        // Users whose limits are back to full are forgotten now and then.
        let pruned = state.clone();
        let pruner = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = pruned.shutdown.cancelled() => return,
                    _ = every.tick() => pruned.limits.prune(),
                }
            }
        });
        let check = state.clone();
        let group_check = tokio::spawn(async move {
            let every = Duration::from_secs(check.config.inbox_check_secs);
            check
                .group_hub
                .check_loop(&check.caller, every, check.shutdown.clone())
                .await;
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(addr = %listener.local_addr().map_err(|e| StartError::setup("http server", e))?, scheme, "edge listening");
        let app = http::router(state.clone());
        let make = app.into_make_service_with_connect_info::<SocketAddr>();
        let graceful = shutdown.clone();
        let stopped = async move { graceful.cancelled().await };
        let served = match tls {
            // Frames are small and latency matters: no Nagle delay (with the
            // peer's delayed acks it held a push back up to 40 ms).
            None => {
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                });
                axum::serve(listener, make)
                    .with_graceful_shutdown(stopped)
                    .await
            }
            Some(certificates) => {
                let every = Duration::from_secs(state.config.tls_reload_secs);
                tokio::spawn(certificates.clone().watch(every, shutdown.clone()));
                let listener = tls::TlsListener::new(listener, certificates.acceptor())
                    .map_err(|e| StartError::setup("TLS listener", e))?;
                // (tap_io: the listener's peer address reaches ConnectInfo)
                let listener = axum::serve::ListenerExt::tap_io(listener, |_| {});
                axum::serve(listener, make)
                    .with_graceful_shutdown(stopped)
                    .await
            }
        };
        served.map_err(|e| StartError::setup("http server", e))?;
        state.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after shutdown timeout");
        }
        key_loader.abort();
        revocation_listener.abort();
        pruner.abort();
        let _ = heartbeat.await;
        let _ = group_check.await;
        state.group_hub.close().await;
        state.push_hub.close().await;
        tracing::info!("edge stopped");
        Ok(())
    }
}

/// Runs an edge until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    nats: Nats,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    Edge::bind(config, nats, shutdown).await?.serve().await
}
