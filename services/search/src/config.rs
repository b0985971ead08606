//! Configuration of the search service.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use shared::config::{ConfigError, within};
use shared::nats::StreamsConfig;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The directory of the index (empty: `<data_dir>/search`).
    pub path: PathBuf,
    /// Rebuild the index from the messages service when it is empty or a
    /// rebuild was cut short (at start, in the background).
    pub rebuild_when_empty: bool,
    /// Messages asked of the messages service per page of a rebuild.
    pub rebuild_page: u32,
    pub streams: StreamsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            rebuild_when_empty: true,
            rebuild_page: 500,
            streams: StreamsConfig::default(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.path.as_os_str().is_empty() {
            return Err(ConfigError::Invalid("search.path is empty".into()));
        }
        within(
            "search.rebuild_page",
            u64::from(self.rebuild_page),
            1..=1000,
        )?;
        self.streams.validate()
    }
}
