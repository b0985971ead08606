//! Configuration of the edge.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shared::config::ConfigError;
use shared::nats::StreamsConfig;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP API and WebSocket endpoint.
    pub listen: SocketAddr,
    /// Largest WebSocket message (after reassembly) and HTTP body, bytes.
    pub max_frame_bytes: usize,
    /// Seconds without any frame from a client before the edge closes it.
    pub idle_timeout_secs: u64,
    /// Seconds between the edge's WebSocket pings.
    pub ping_interval_secs: u64,
    /// Frames queued for one client before it counts as slow.
    pub send_queue: usize,
    /// Seconds a full send queue may stay full before the client is
    /// disconnected (it resumes later from its cursor).
    pub slow_client_timeout_secs: u64,
    /// Sends one connection may have waiting for their ack.
    pub max_inflight_sends: usize,
    /// WebSocket connections this edge accepts at once.
    pub max_connections: usize,
    /// Seconds between presence heartbeats (a third of the presence TTL).
    pub heartbeat_interval_secs: u64,
    /// Seconds between writes of a device's acked cursor.
    pub cursor_flush_secs: u64,
    /// Seconds between checks that a connection has not missed a push (one
    /// direct get of the user's last inbox entry).
    pub inbox_check_secs: u64,
    /// Inbox replays (resumes and catch-ups) this edge runs at once.
    pub max_concurrent_replays: usize,
    #[serde(skip)]
    pub streams: StreamsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_frame_bytes: 64 * 1024,
            idle_timeout_secs: 60,
            ping_interval_secs: 20,
            send_queue: 256,
            slow_client_timeout_secs: 10,
            max_inflight_sends: 64,
            max_connections: 100_000,
            heartbeat_interval_secs: 30,
            cursor_flush_secs: 1,
            inbox_check_secs: 30,
            max_concurrent_replays: 64,
            streams: StreamsConfig::default(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid(what.into()))
            }
        };
        check(
            (1024..=16 << 20).contains(&self.max_frame_bytes),
            "edge.max_frame_bytes must be within 1024..=16777216",
        )?;
        check(
            (2..=3600).contains(&self.idle_timeout_secs),
            "edge.idle_timeout_secs must be within 2..=3600",
        )?;
        check(
            self.ping_interval_secs >= 1 && self.ping_interval_secs < self.idle_timeout_secs,
            "edge.ping_interval_secs must be at least 1 and below idle_timeout_secs",
        )?;
        check(
            (16..=65_536).contains(&self.send_queue),
            "edge.send_queue must be within 16..=65536",
        )?;
        check(
            (1..=300).contains(&self.slow_client_timeout_secs),
            "edge.slow_client_timeout_secs must be within 1..=300",
        )?;
        check(
            (1..=1024).contains(&self.max_inflight_sends),
            "edge.max_inflight_sends must be within 1..=1024",
        )?;
        check(
            self.max_connections >= 1,
            "edge.max_connections must be at least 1",
        )?;
        check(
            (1..=1200).contains(&self.heartbeat_interval_secs),
            "edge.heartbeat_interval_secs must be within 1..=1200",
        )?;
        check(
            (1..=60).contains(&self.cursor_flush_secs),
            "edge.cursor_flush_secs must be within 1..=60",
        )?;
        check(
            (1..=3600).contains(&self.inbox_check_secs),
            "edge.inbox_check_secs must be within 1..=3600",
        )?;
        check(
            (1..=10_000).contains(&self.max_concurrent_replays),
            "edge.max_concurrent_replays must be within 1..=10000",
        )?;
        self.streams.validate()
    }
}
