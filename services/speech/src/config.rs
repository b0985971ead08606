//! Configuration of the speech service.

use serde::{Deserialize, Serialize};
use shared::config::{ConfigError, Secret, within};
use shared::nats::StreamsConfig;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The engine's base URL (`http://127.0.0.1:8178` serves
    /// `/v1/audio/transcriptions`); empty = no transcripts.
    pub engine_url: String,
    /// Transcribe every voice message as it comes (false: only when a
    /// member asks, `POST /v1/messages/{id}/transcribe`).
    pub automatic: bool,
    /// The model the engine is asked for (`whisper-1` for hosted APIs).
    pub model: String,
    /// Sent as `Authorization: Bearer ...` when set.
    pub api_key: Secret,
    /// A language hint (ISO 639-1: `zh`, `en`); empty = the engine guesses.
    pub language: String,
    /// Longer recordings are not sent to the engine.
    pub max_audio_secs: u64,
    /// How long one transcription may take.
    pub timeout_secs: u64,
    pub streams: StreamsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            engine_url: String::new(),
            automatic: true,
            model: "whisper-1".into(),
            api_key: Secret::default(),
            language: String::new(),
            max_audio_secs: 300,
            timeout_secs: 120,
            streams: StreamsConfig::default(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.engine_url;
        let web = url.starts_with("http://") || url.starts_with("https://");
        if !url.is_empty() && !web {
            return Err(ConfigError::Invalid(
                "speech.engine_url must be an http:// or https:// URL (or empty)".into(),
            ));
        }
        if self.model.trim().is_empty() {
            return Err(ConfigError::Invalid("speech.model is empty".into()));
        }
        let code = self.language.len() <= 8
            && self
                .language
                .bytes()
                .all(|b| b.is_ascii_alphabetic() || b == b'-');
        if !code {
            return Err(ConfigError::Invalid(
                "speech.language must be a language code like zh or en".into(),
            ));
        }
        within("speech.max_audio_secs", self.max_audio_secs, 1..=3600)?;
        within("speech.timeout_secs", self.timeout_secs, 1..=3600)?;
        self.streams.validate()
    }

    /// Whether transcripts are on.
    pub fn enabled(&self) -> bool {
        !self.engine_url.is_empty()
    }
}
