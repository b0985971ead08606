//! Configuration of the presence service.

use serde::{Deserialize, Serialize};
use shared::config::{ConfigError, within};
use shared::nats::StreamsConfig;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Seconds a device stays online without a heartbeat (whole seconds; the
    /// edge heartbeats at a third of this).
    pub device_ttl_secs: u64,
    #[serde(skip)]
    pub streams: StreamsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            device_ttl_secs: 90,
            streams: StreamsConfig::default(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        within("presence.device_ttl_secs", self.device_ttl_secs, 2..=3600)?;
        self.streams.validate()
    }
}
