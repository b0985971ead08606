//! Configuration of the auth service.

use serde::{Deserialize, Serialize};
use shared::config::{ConfigError, required, within};
use shared::nats::StreamsConfig;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `sqlite://...` or `postgres://...`; empty = `auth.db` in the data dir.
    pub database_url: String,
    /// Lifetime of access tokens, seconds: short, as a copied token cannot
    /// be recalled (ended sessions are refused by every edge at once anyway).
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token (each refresh issues a new one).
    pub refresh_token_ttl_secs: u64,
    /// The `iss` claim of tokens.
    pub issuer: String,
    /// Password hashes computed at once; each takes one core for ~50 ms and
    /// ~19 MiB of working memory while it runs (given back when it ends).
    pub max_concurrent_hashes: usize,
    /// Limits on logins and registrations (see `guard`).
    pub login: LoginLimits,
    /// Phone codes and the SMS provider (see `codes`, `sms`).
    pub sms: crate::sms::SmsConfig,
    #[serde(skip)]
    pub streams: StreamsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: String::new(),
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 86_400,
            issuer: "natter".into(),
            max_concurrent_hashes: 2,
            login: LoginLimits::default(),
            sms: crate::sms::SmsConfig::default(),
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
        self.login.validate()?;
        self.sms.validate()?;
        self.streams.validate()
    }
}

/// Limits on logins and registrations; every refusal is `rate_limited`
/// with the wait (HTTP 429 and `Retry-After` at the edge).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginLimits {
    /// Logins and registrations one client address may try per minute.
    pub per_address_per_minute: u32,
    /// Wrong passwords in a row for one username from one address before
    /// each further try from there waits (1 s, doubling).
    pub free_failures: u32,
    /// The longest wait, seconds.
    pub max_wait_secs: u64,
    /// Logins waiting for a hash slot before more are refused at once.
    pub max_waiting_hashes: usize,
    /// Hash slots and queue places one address may hold at once.
    pub hashes_per_address: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            per_address_per_minute: 60,
            free_failures: 5,
            max_wait_secs: 900,
            max_waiting_hashes: 64,
            hashes_per_address: 4,
        }
    }
}

impl LoginLimits {
    pub fn validate(&self) -> Result<(), ConfigError> {
        within(
            "auth.login.per_address_per_minute",
            self.per_address_per_minute,
            1..=100_000,
        )?;
        within("auth.login.free_failures", self.free_failures, 1..=1000)?;
        within("auth.login.max_wait_secs", self.max_wait_secs, 1..=86_400)?;
        within(
            "auth.login.max_waiting_hashes",
            self.max_waiting_hashes,
            1..=100_000,
        )?;
        within(
            "auth.login.hashes_per_address",
            self.hashes_per_address,
            1..=64,
        )
    }
}
