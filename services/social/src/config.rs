//! Configuration of the social service.

use serde::{Deserialize, Serialize};
use shared::config::{ConfigError, required, within};
use shared::nats::StreamsConfig;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `sqlite://...` or `postgres://...`; empty = `social.db` in the data dir.
    pub database_url: String,
    /// Most friends one user may have.
    pub max_friends: u32,
    /// Exact phone-number searches one user may make per minute (a number
    /// finds its account: more would let a user enumerate numbers).
    pub phone_searches_per_minute: u32,
    /// The same per client address, any users.
    pub phone_searches_per_address_per_minute: u32,
    /// Seconds before a repeated friend request notifies its recipient
    /// again (asking sooner only changes the greeting).
    pub request_notice_interval_secs: u64,
    /// Seconds after a rejection before the same user may ask again.
    pub request_after_rejection_secs: u64,
    #[serde(skip)]
    pub streams: StreamsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: String::new(),
            max_friends: 5000,
            phone_searches_per_minute: 10,
            phone_searches_per_address_per_minute: 30,
            request_notice_interval_secs: 3600,
            request_after_rejection_secs: 86_400,
            streams: StreamsConfig::default(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        required("social.database_url", &self.database_url)?;
        within("social.max_friends", self.max_friends, 1..=100_000)?;
        within(
            "social.phone_searches_per_minute",
            self.phone_searches_per_minute,
            1..=10_000,
        )?;
        within(
            "social.phone_searches_per_address_per_minute",
            self.phone_searches_per_address_per_minute,
            1..=100_000,
        )?;
        within(
            "social.request_notice_interval_secs",
            self.request_notice_interval_secs,
            0..=30 * 86_400,
        )?;
        within(
            "social.request_after_rejection_secs",
            self.request_after_rejection_secs,
            0..=365 * 86_400,
        )?;
        self.streams.validate()
    }
}
