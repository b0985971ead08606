//! Configuration loading: defaults, then an optional TOML file, then
//! environment variables (`NATTER_` prefix, `__` between levels, e.g.
//! `NATTER_NATS__URL=nats://10.0.0.5:4222`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// A configuration that could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Loads `T` from its defaults, then `file` (if given), then the environment.
///
/// Unknown keys in the file are errors. Of the environment, only `NATTER_*`
/// variables whose first part names a top-level key of `T` are read (so
/// `NATTER_CONFIG` or a password meant for nats-server is not mistaken for a
/// setting), and unknown keys below those are errors too.
pub fn load<T>(file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
{
    let defaults = T::default();
    let top_level: Vec<String> = match serde_json::to_value(&defaults) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(file) = file {
        if !file.exists() {
            return Err(ConfigError::Invalid(format!(
                "config file {} does not exist",
                file.display()
            )));
        }
        figment = figment.merge(Toml::file(file));
    }
    let env = Env::prefixed("NATTER_").split("__").filter(move |key| {
        let first = key.as_str().split('.').next().unwrap_or_default();
        top_level.iter().any(|k| k.eq_ignore_ascii_case(first))
    });
    figment
        .merge(env)
        .extract()
        .map_err(|e| ConfigError::Load(Box::new(e)))
}

/// A secret string that never prints.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How to reach NATS.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// One or more server URLs, comma-separated.
    pub url: String,
    /// A `.creds` file (JWT + nkey) for decentralized auth.
    pub creds_file: Option<PathBuf>,
    /// The NATS user this process connects as (`edge`, `messages`, ...,
    /// `natter` for every service in one process). It also names the
    /// process's reply subjects (`_INBOX_<user>.>`): each user may read only
    /// its own replies.
    pub user: Option<String>,
    /// The user's password (users with passwords: the cluster's `users.conf`).
    pub password: Option<Secret>,
    /// The user's nkey seed file (users with nkeys: what `natter nats-setup`
    /// generates for `just up` and edge boxes).
    pub nkey_file: Option<PathBuf>,
    /// The JetStream domain of the hub when this process runs on a leaf node.
    pub jetstream_domain: Option<String>,
    /// Timeout of calls between services, milliseconds.
    pub request_timeout_ms: u64,
    /// Messages a subscription buffers before the server reports a slow consumer.
    pub subscription_capacity: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            creds_file: None,
            user: None,
            password: None,
            nkey_file: None,
            jetstream_domain: None,
            request_timeout_ms: 5_000,
            subscription_capacity: 65_536,
        }
    }
}

impl NatsConfig {
    pub fn for_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.url.trim().is_empty() {
            return Err(ConfigError::Invalid("nats.url is empty".into()));
        }
        within(
            "nats.request_timeout_ms",
            self.request_timeout_ms,
            100..=120_000,
        )?;
        if self.subscription_capacity < 1024 {
            return Err(ConfigError::Invalid(
                "nats.subscription_capacity must be at least 1024".into(),
            ));
        }
        if self.password.is_some() && self.nkey_file.is_some() {
            return Err(ConfigError::Invalid(
                "nats.password and nats.nkey_file are two ways to log in: set one".into(),
            ));
        }
        if self.user.is_some() != (self.password.is_some() || self.nkey_file.is_some()) {
            return Err(ConfigError::Invalid(
                "nats.user goes with nats.password or nats.nkey_file".into(),
            ));
        }
        if let Some(user) = &self.user
            && !crate::subject::is_valid_token(user)
        {
            return Err(ConfigError::Invalid(format!(
                "nats.user {user:?} must be letters, digits, '-' or '_'"
            )));
        }
        Ok(())
    }

    /// The prefix of this process's reply subjects: `_INBOX_<user>`, which
    /// only that user may subscribe to (plain `_INBOX` without a user).
    pub fn inbox_prefix(&self) -> String {
        inbox_prefix(self.user.as_deref())
    }
}

/// The reply subject prefix of NATS user `user` (see [`NatsConfig::inbox_prefix`]).
pub fn inbox_prefix(user: Option<&str>) -> String {
    match user {
        Some(user) => format!("_INBOX_{user}"),
        None => "_INBOX".into(),
    }
}

/// Duration helper for configs given in seconds.
/// Checks that setting `key` is not empty.
pub fn required(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        Err(ConfigError::Invalid(format!("{key} is empty")))
    } else {
        Ok(())
    }
}

/// Checks that setting `key` lies within `range`, and says so when not:
/// `within("edge.send_queue", self.send_queue, 1..=65_536)?`.
pub fn within<T>(key: &str, value: T, range: std::ops::RangeInclusive<T>) -> Result<(), ConfigError>
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{key} must be within {}..={}",
            range.start(),
            range.end()
        )))
    }
}

pub fn secs(value: u64) -> Duration {
    Duration::from_secs(value)
}
