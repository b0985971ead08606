//! Configuration of the auth service.

use serde::{Deserialize, Serialize};
use shared::config::{ConfigError, required, within};
use shared::nats::StreamsConfig;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `sqlite://...` or `postgres://...`; empty = `auth.db` in the data dir.
    pub database_url: String,
    /// Lifetime of access tokens, seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token (each refresh issues a new one).
    pub refresh_token_ttl_secs: u64,
    /// The `iss` claim of tokens.
    pub issuer: String,
    /// Password hashes computed at once; each takes one core for ~50 ms and
    /// ~19 MiB of working memory while it runs (given back when it ends).
    pub max_concurrent_hashes: usize,
    #[serde(skip)]
    pub streams: StreamsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: String::new(),
            access_token_ttl_secs: 3600,
            refresh_token_ttl_secs: 30 * 86_400,
            issuer: "natter".into(),
            max_concurrent_hashes: 2,
            streams: StreamsConfig::default(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        required("auth.database_url", &self.database_url)?;
        if !(3600..=365 * 86_400).contains(&self.refresh_token_ttl_secs)
            || self.refresh_token_ttl_secs <= self.access_token_ttl_secs
        {
            return Err(ConfigError::Invalid(
                "auth.refresh_token_ttl_secs must be within 3600..=31536000 and above access_token_ttl_secs".into(),
            ));
        }
        within(
            "auth.access_token_ttl_secs",
            self.access_token_ttl_secs,
            60..=7 * 86_400,
        )?;
        if self.issuer.is_empty() {
            return Err(ConfigError::Invalid("auth.issuer is empty".into()));
        }
        within(
            "auth.max_concurrent_hashes",
            self.max_concurrent_hashes,
            1..=64,
        )?;
        self.streams.validate()
    }
}
