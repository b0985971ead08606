//! Connecting to NATS and declaring the JetStream streams natter shares.
//!
//! Connection events (reconnects, slow consumers) are re-broadcast so that a
//! component which depends on live pushes (the edge) can replay what it may
//! have missed.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{ConnectOptions, Event};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::config::{ConfigError, NatsConfig, within};
use crate::subject;

/// A connection event worth reacting to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionEvent {
    Connected,
    Disconnected,
    /// A subscription overflowed and the client dropped messages.
    SlowConsumer,
}

/// Reads the connection events received so far: true when subscribed
/// messages may have been missed meanwhile (a reconnect, a subscription
/// that overflowed, or more connection events than were kept), so what a
/// cache learned from them must be dropped.
pub fn events_missed(events: &mut broadcast::Receiver<ConnectionEvent>) -> bool {
    let mut missed = false;
    loop {
        match events.try_recv() {
            Ok(ConnectionEvent::Disconnected) => {}
            Ok(ConnectionEvent::Connected | ConnectionEvent::SlowConsumer)
            | Err(broadcast::error::TryRecvError::Lagged(_)) => missed = true,
            Err(_) => return missed,
        }
    }
}

/// A connected client, its JetStream context and its events.
#[derive(Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub config: NatsConfig,
    events: broadcast::Sender<ConnectionEvent>,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("url", &self.config.url)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot connect to nats at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot read nats credentials: {0}")]
    Credentials(std::io::Error),
    #[error("jetstream setup of {name} failed: {message}")]
    JetStream { name: String, message: String },
}

impl Nats {
    /// Connects with `config`; `name` shows up in the server's connection list.
    pub async fn connect(config: &NatsConfig, name: &str) -> Result<Self, NatsError> {
        config.validate()?;
        let (events, _) = broadcast::channel(64);
        let sender = events.clone();
        let mut options = ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(config.request_timeout()))
            .subscription_capacity(config.subscription_capacity)
            .retry_on_initial_connect()
            .custom_inbox_prefix(config.inbox_prefix())
            .event_callback(move |event| {
                let sender = sender.clone();
                async move {
                    let mapped = match event {
                        Event::Connected => Some(ConnectionEvent::Connected),
                        Event::Disconnected => Some(ConnectionEvent::Disconnected),
                        Event::SlowConsumer(_) => Some(ConnectionEvent::SlowConsumer),
                        Event::ServerError(async_nats::ServerError::SlowConsumer(_)) => {
                            Some(ConnectionEvent::SlowConsumer)
                        }
                        other => {
                            tracing::info!(event = %other, "nats event");
                            None
                        }
                    };
                    if let Some(event) = mapped {
                        tracing::info!(?event, "nats connection event");
                        let _ = sender.send(event);
                    }
                }
            });
        if let Some(file) = &config.creds_file {
            options = options
                .credentials_file(file)
                .await
                .map_err(NatsError::Credentials)?;
        }
        if let (Some(user), Some(password)) = (&config.user, &config.password) {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        if let Some(file) = &config.nkey_file {
            let seed = std::fs::read_to_string(file).map_err(NatsError::Credentials)?;
            options = options.nkey(seed.trim().to_owned());
        }
        let client = options
            .connect(config.url.as_str())
            .await
            .map_err(|source| NatsError::Connect {
                url: config.url.clone(),
                source,
            })?;
        let jetstream = match &config.jetstream_domain {
            Some(domain) => jetstream::with_domain(client.clone(), domain),
            None => jetstream::new(client.clone()),
        };
        Ok(Self {
            client,
            jetstream,
            config: config.clone(),
            events,
        })
    }

    /// Subscribes to connection events from now on.
    pub fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.events.subscribe()
    }

    /// A caller for request-reply with the configured timeout.
    pub fn caller(&self) -> crate::rpc::Caller {
        crate::rpc::Caller::new(self.client.clone(), self.config.request_timeout())
    }
}

/// Publishes a public event (`im.evt.v1.*`) and waits until JetStream has
/// stored it. `dedup_id` becomes `Nats-Msg-Id`, so a redo within the stream's
/// duplicate window is stored once.
pub async fn publish_event(
    js: &jetstream::Context,
    subject: &'static str,
    payload: bytes::Bytes,
    dedup_id: &str,
) -> Result<(), NatsError> {
    let failed = |e: &dyn std::fmt::Display| NatsError::JetStream {
        name: subject.into(),
        message: e.to_string(),
    };
    let publish = jetstream::message::PublishMessage::build()
        .payload(payload)
        .message_id(dedup_id);
    let ack = js
        .send_publish(subject, publish)
        .await
        .map_err(|e| failed(&e))?;
    ack.await.map_err(|e| failed(&e))?;
    Ok(())
}

/// Retention and replication of the shared streams.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamsConfig {
    /// Replicas of every stream and bucket (1 for one server, 3 for a cluster).
    pub replicas: usize,
    /// How long a user's inbox keeps entries a device has not resumed from.
    pub inbox_max_age_secs: u64,
    /// How long the public event stream keeps events.
    pub events_max_age_secs: u64,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            replicas: 1,
            inbox_max_age_secs: 14 * 86_400,
            events_max_age_secs: 7 * 86_400,
        }
    }
}

impl StreamsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        within("streams.replicas", self.replicas, 1..=5)?;
        if self.inbox_max_age_secs < 60 || self.events_max_age_secs < 60 {
            return Err(ConfigError::Invalid(
                "stream max ages must be at least 60 s".into(),
            ));
        }
        Ok(())
    }
}

/// The per-user inbox stream: one subject per user, deduplicated by message id,
/// readable by direct get. Created if missing; an existing stream is left as is.
pub async fn inbox_stream(
    js: &jetstream::Context,
    config: &StreamsConfig,
) -> Result<stream::Stream, NatsError> {
    get_or_create(
        js,
        stream::Config {
            name: subject::INBOX_STREAM.into(),
            description: Some("natter per-user inboxes (offline queue)".into()),
            subjects: vec![subject::INBOX_ALL.into()],
            max_age: Duration::from_secs(config.inbox_max_age_secs),
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            ..Default::default()
        },
    )
    .await
}

/// The bucket of each device's acked inbox cursor (`<user>.<device>`).
/// Created if missing.
pub async fn cursor_bucket(
    js: &jetstream::Context,
    config: &StreamsConfig,
) -> Result<jetstream::kv::Store, NatsError> {
    if let Ok(store) = js.get_key_value(subject::CURSOR_BUCKET).await {
        return Ok(store);
    }
    js.create_key_value(jetstream::kv::Config {
        bucket: subject::CURSOR_BUCKET.into(),
        description: "natter acked inbox cursor per device (<user>.<device>)".into(),
        history: 1,
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| NatsError::JetStream {
        name: subject::CURSOR_BUCKET.into(),
        message: e.to_string(),
    })
}

/// Starts a new device of `user` at the end of the user's inbox: its
/// cursor is the inbox's last entry now (what came before is in the
/// history). Called after the device is stored, so that every message
/// whose sender's copy is left out because the user had one device
/// (`im.v1.auth.devices.multiple`) was stored before this, and is in the
/// history the device reads after logging in.
pub async fn start_device(
    inbox: &stream::Stream,
    cursors: &jetstream::kv::Store,
    user: &str,
    device: &str,
) -> Result<u64, String> {
    let last = match inbox
        .direct_get_last_for_subject(subject::inbox(user))
        .await
    {
        Ok(message) => message.sequence,
        Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => 0,
        Err(e) => return Err(format!("last inbox entry: {e}")),
    };
    if last > 0 {
        cursors
            .create(subject::cursor_key(user, device), last.to_string().into())
            .await
            .map_err(|e| format!("cursor: {e}"))?;
    }
    Ok(last)
}

/// The public event stream (`im.evt.v1.>`).
pub async fn events_stream(
    js: &jetstream::Context,
    config: &StreamsConfig,
) -> Result<stream::Stream, NatsError> {
    get_or_create(
        js,
        stream::Config {
            name: subject::EVENTS_STREAM.into(),
            description: Some("natter public events".into()),
            subjects: vec![subject::event::ALL.into()],
            max_age: Duration::from_secs(config.events_max_age_secs),
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            ..Default::default()
        },
    )
    .await
}

async fn get_or_create(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, NatsError> {
    let name = config.name.clone();
    js.get_or_create_stream(config)
        .await
        .map_err(|e| NatsError::JetStream {
            name,
            message: e.to_string(),
        })
}
