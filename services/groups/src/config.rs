//! Configuration of the groups service.

use serde::{Deserialize, Serialize};
use shared::config::{ConfigError, required, within};
use shared::nats::StreamsConfig;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `sqlite://...` or `postgres://...`; empty = `groups.db` in the data dir.
    pub database_url: String,
    /// Most members of a new group (owner included).
    pub max_members: u32,
    /// Only friends of the inviter may be added to a group (blocks always apply).
    pub invite_friends_only: bool,
    /// Seconds between retries of changes not yet applied to conversations.
    pub sweep_interval_secs: u64,
    #[serde(skip)]
    pub streams: StreamsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: String::new(),
            max_members: 2000,
            invite_friends_only: true,
            sweep_interval_secs: 5,
            streams: StreamsConfig::default(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        required("groups.database_url", &self.database_url)?;
        within("groups.max_members", self.max_members, 2..=100_000)?;
        within(
            "groups.sweep_interval_secs",
            self.sweep_interval_secs,
            1..=3600,
        )?;
        self.streams.validate()
    }
}
