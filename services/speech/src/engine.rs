//! The engine's HTTP client: `POST {engine_url}/v1/audio/transcriptions`,
//! multipart with `file`, `model` and `language`, answering JSON `{"text"}`.

use std::time::Duration;

use crate::Config;

/// Why a transcription did not come.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Down, overloaded or timed out: worth another try later.
    #[error("the speech engine is unavailable: {0}")]
    Unavailable(String),
    /// It refused this recording: another try would fail the same.
    #[error("the speech engine refused the recording: {0}")]
    Refused(String),
}

pub struct Engine {
    http: reqwest::Client,
    url: String,
    config: Config,
}

impl Engine {
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(config.timeout_secs))
                .build()?,
            url: format!(
                "{}/v1/audio/transcriptions",
                config.engine_url.trim_end_matches('/')
            ),
            config: config.clone(),
        })
    }

    /// The text of the recording `audio` (named `name`, of `media_type`).
    pub async fn transcribe(
        &self,
        audio: Vec<u8>,
        name: &str,
        media_type: &str,
    ) -> Result<String, EngineError> {
        let file = reqwest::multipart::Part::bytes(audio)
            .file_name(name.to_owned())
            .mime_str(media_type)
            .map_err(|e| EngineError::Refused(e.to_string()))?;
        let mut form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("model", self.config.model.clone())
            .text("response_format", "json");
        if !self.config.language.is_empty() {
            form = form.text("language", self.config.language.clone());
        }
        let mut request = self.http.post(&self.url).multipart(form);
        if !self.config.api_key.expose().is_empty() {
            request = request.bearer_auth(self.config.api_key.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(EngineError::Unavailable(format!(
                "{status}: {}",
                cut(&body)
            )));
        }
        if !status.is_success() {
            return Err(EngineError::Refused(format!("{status}: {}", cut(&body))));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            text: String,
        }
        let answer: Answer = serde_json::from_str(&body)
            .map_err(|e| EngineError::Refused(format!("not a transcription: {e}")))?;
        Ok(answer.text.trim().to_owned())
    }
}

fn cut(text: &str) -> &str {
    match text.char_indices().nth(200) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
