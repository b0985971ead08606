//! Configuration of the messages service.

use serde::{Deserialize, Serialize};
use shared::config::{ConfigError, required, within};
use shared::nats::StreamsConfig;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `sqlite://...` or `postgres://...`; empty = `messages.db` in the data dir.
    pub database_url: String,
    /// Longest text message, in characters.
    pub max_text_chars: usize,
    /// Sends handled at once by this instance.
    pub max_concurrent_sends: usize,
    /// Seconds between sweeps for stored messages not yet fanned out.
    pub sweep_interval_secs: u64,
    /// One-to-one messages only between friends (blocks always apply).
    pub require_friendship: bool,
    /// How long after sending a sender may recall a message.
    pub recall_window_secs: u64,
    /// Largest file a media message may reference, in bytes.
    pub max_file_bytes: u64,
    /// Typing indicators are not forwarded in groups larger than this.
    pub typing_max_members: u32,
    /// Groups with at least this many members use read fan-out: a message is
    /// published once for the group instead of appended to every member's
    /// inbox (they go back to write fan-out below half of it).
    pub large_group_members: u32,
    #[serde(skip)]
    pub streams: StreamsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: String::new(),
            max_text_chars: 4000,
            max_concurrent_sends: 256,
            sweep_interval_secs: 30,
            require_friendship: true,
            recall_window_secs: 120,
            max_file_bytes: 100 * 1024 * 1024,
            typing_max_members: 200,
            large_group_members: 200,
            streams: StreamsConfig::default(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        required("messages.database_url", &self.database_url)?;
        within("messages.max_text_chars", self.max_text_chars, 1..=100_000)?;
        within(
            "messages.max_concurrent_sends",
            self.max_concurrent_sends,
            1..=10_000,
        )?;
        within(
            "messages.sweep_interval_secs",
            self.sweep_interval_secs,
            1..=3600,
        )?;
        within(
            "messages.recall_window_secs",
            self.recall_window_secs,
            1..=7 * 24 * 3600,
        )?;
        within(
            "messages.large_group_members",
            self.large_group_members,
            2..=1_000_000,
        )?;
        within(
            "messages.max_file_bytes",
            self.max_file_bytes,
            1..=(1u64 << 40),
        )?;
        self.streams.validate()
    }
}
