//! The whole configuration of a natter process: one TOML file (see
//! `natter.example.toml`), overridden by `NATTER_*` environment variables
//! (`NATTER_DATA_DIR`, `NATTER_NATS__URL`, `NATTER_EDGE__LISTEN`, ...).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shared::config::{ConfigError, NatsConfig};
use shared::nats::StreamsConfig;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatterConfig {
    /// Where SQLite databases live unless a database_url says otherwise.
    pub data_dir: PathBuf,
    /// Logs as JSON lines instead of human-readable text.
    pub log_json: bool,
    pub nats: NatsConfig,
    pub streams: StreamsConfig,
    pub auth: auth::Config,
    pub messages: messages::Config,
    pub presence: presence::Config,
    pub edge: edge::Config,
}

impl Default for NatterConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            log_json: false,
            nats: NatsConfig::default(),
            streams: StreamsConfig::default(),
            auth: auth::Config::default(),
            messages: messages::Config::default(),
            presence: presence::Config::default(),
            edge: edge::Config::default(),
        }
    }
}

impl NatterConfig {
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Self = shared::config::load(file)?;
        config.nats.validate()?;
        config.streams.validate()?;
        config.auth().validate()?;
        config.messages().validate()?;
        config.presence().validate()?;
        config.edge().validate()?;
        Ok(config)
    }

    fn sqlite(&self, url: &str, file: &str) -> String {
        if url.is_empty() { shared::db::sqlite_url(&self.data_dir.join(file)) } else { url.to_owned() }
    }

    pub fn auth(&self) -> auth::Config {
        auth::Config { database_url: self.sqlite(&self.auth.database_url, "auth.db"), ..self.auth.clone() }
    }

    pub fn messages(&self) -> messages::Config {
        messages::Config {
            database_url: self.sqlite(&self.messages.database_url, "messages.db"),
            streams: self.streams.clone(),
            ..self.messages.clone()
        }
    }

    pub fn presence(&self) -> presence::Config {
        presence::Config { streams: self.streams.clone(), ..self.presence.clone() }
    }

    pub fn edge(&self) -> edge::Config {
        edge::Config { streams: self.streams.clone(), ..self.edge.clone() }
    }

    pub fn to_pretty(&self) -> Result<String, ConfigError> {
        // Serialize through JSON so that secrets print as their redacted form.
        let mut value = serde_json::to_value(self).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(password) = value.pointer_mut("/nats/password").filter(|p| !p.is_null()) {
            *password = "***".into();
        }
        Ok(serde_json::to_string_pretty(&value).map_err(|e| ConfigError::Invalid(e.to_string()))?)
    }
}
