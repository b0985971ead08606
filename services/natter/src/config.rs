//! The whole configuration of a natter process: one TOML file (see
//! `natter.example.toml`), overridden by `NATTER_*` environment variables
//! (`NATTER_DATA_DIR`, `NATTER_NATS__URL`, `NATTER_EDGE__LISTEN`, ...).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shared::config::{ConfigError, NatsConfig};
use shared::nats::StreamsConfig;

/// The `[search]` section. It is read (and kept) by a binary built without
/// the `search` feature too, so one configuration serves every process.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// The directory of the index (empty: `<data_dir>/search`).
    pub path: PathBuf,
    /// Rebuild the index from the messages service when it is empty or a
    /// rebuild was cut short.
    pub rebuild_when_empty: bool,
    /// Messages asked of the messages service per page of a rebuild.
    pub rebuild_page: u32,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            rebuild_when_empty: true,
            rebuild_page: 500,
        }
    }
}

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
    pub social: social::Config,
    pub groups: groups::Config,
    pub files: files::Config,
    pub speech: speech::Config,
    pub search: SearchConfig,
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
            social: social::Config::default(),
            groups: groups::Config::default(),
            files: files::Config::default(),
            speech: speech::Config::default(),
            search: SearchConfig::default(),
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
        config.social().validate()?;
        config.groups().validate()?;
        config.files().validate()?;
        config.speech().validate()?;
        #[cfg(feature = "search")]
        config.search().validate()?;
        config.edge().validate()?;
        if config.edge.heartbeat_interval_secs * 2 > config.presence.device_ttl_secs {
            return Err(ConfigError::Invalid(
                "edge.heartbeat_interval_secs must be at most half of presence.device_ttl_secs"
                    .into(),
            ));
        }
        Ok(config)
    }

    #[cfg(test)]
    fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let dir = std::env::temp_dir().join(format!("natter-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let file = dir.join(format!("{}.toml", shared::ids::new_id()));
        std::fs::write(&file, text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let result = Self::load(Some(&file));
        let _ = std::fs::remove_file(&file);
        result
    }

    fn sqlite(&self, url: &str, file: &str) -> String {
        if url.is_empty() {
            shared::db::sqlite_url(&self.data_dir.join(file))
        } else {
            url.to_owned()
        }
    }

    pub fn auth(&self) -> auth::Config {
        auth::Config {
            database_url: self.sqlite(&self.auth.database_url, "auth.db"),
            streams: self.streams.clone(),
            ..self.auth.clone()
        }
    }

    pub fn messages(&self) -> messages::Config {
        messages::Config {
            database_url: self.sqlite(&self.messages.database_url, "messages.db"),
            streams: self.streams.clone(),
            ..self.messages.clone()
        }
    }

    pub fn presence(&self) -> presence::Config {
        presence::Config {
            streams: self.streams.clone(),
            ..self.presence.clone()
        }
    }

    pub fn social(&self) -> social::Config {
        social::Config {
            database_url: self.sqlite(&self.social.database_url, "social.db"),
            streams: self.streams.clone(),
            ..self.social.clone()
        }
    }

    pub fn groups(&self) -> groups::Config {
        groups::Config {
            database_url: self.sqlite(&self.groups.database_url, "groups.db"),
            streams: self.streams.clone(),
            ..self.groups.clone()
        }
    }

    pub fn speech(&self) -> speech::Config {
        speech::Config {
            streams: self.streams.clone(),
            ..self.speech.clone()
        }
    }

    #[cfg(feature = "search")]
    pub fn search(&self) -> search::Config {
        let path = if self.search.path.as_os_str().is_empty() {
            self.data_dir.join("search")
        } else {
            self.search.path.clone()
        };
        search::Config {
            path,
            rebuild_when_empty: self.search.rebuild_when_empty,
            rebuild_page: self.search.rebuild_page,
            streams: self.streams.clone(),
        }
    }

    pub fn files(&self) -> files::Config {
        files::Config {
            database_url: self.sqlite(&self.files.database_url, "files.db"),
            ..self.files.clone()
        }
    }

    pub fn edge(&self) -> edge::Config {
        edge::Config {
            streams: self.streams.clone(),
            ..self.edge.clone()
        }
    }

    /// The configuration as TOML, with secrets replaced by `***`.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let mut value =
            serde_json::to_value(self).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(password) = value.pointer_mut("/nats/password").filter(|p| !p.is_null()) {
            *password = "***".into();
        }
        // TOML has no null: leave unset options out.
        fn strip_nulls(value: &mut serde_json::Value) {
            if let serde_json::Value::Object(map) = value {
                map.retain(|_, v| !v.is_null());
                map.values_mut().for_each(strip_nulls);
            }
        }
        strip_nulls(&mut value);
        toml::to_string(&value).map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::NatterConfig;

    #[test]
    fn the_example_file_is_the_defaults_and_valid() {
        let example =
            NatterConfig::from_toml(include_str!("../../../natter.example.toml")).unwrap();
        assert_eq!(
            example.to_toml().unwrap(),
            NatterConfig::default().to_toml().unwrap()
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_key_named() {
        for (text, needle) in [
            ("[edge]\nidle_timeout_secs = 0", "edge.idle_timeout_secs"),
            ("[edge]\nlisten = \"nowhere\"", "listen"),
            ("[nats]\nurl = \"\"", "nats.url"),
            ("[streams]\nreplicas = 9", "streams.replicas"),
            (
                "[edge]\nheartbeat_interval_secs = 60",
                "heartbeat_interval_secs",
            ),
            ("[edge]\nunknown_key = 1", "unknown_key"),
            ("[files]\nstore_replicas = 0", "files.store_replicas"),
            ("[files]\nmax_image_bytes = 0", "files.max_image_bytes"),
            (
                "[files]\nsweep_interval_secs = 0",
                "files.sweep_interval_secs",
            ),
            ("[speech]\nengine_url = \"ftp://x\"", "speech.engine_url"),
            ("[speech]\nlanguage = \"中文\"", "speech.language"),
            ("[speech]\nmax_audio_secs = 0", "speech.max_audio_secs"),
            (
                "[auth]\naccess_token_ttl_secs = 1",
                "auth.access_token_ttl_secs",
            ),
        ] {
            let err = NatterConfig::from_toml(text)
                .err()
                .unwrap_or_else(|| panic!("{text} accepted"));
            assert!(
                err.to_string().contains(needle),
                "{err} should name {needle}"
            );
        }
    }
}
