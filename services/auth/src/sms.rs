//! Sending text messages (login codes) through the configured provider:
//! `log` writes them to the service's log (development: `just up` works
//! with no account anywhere); `webhook` POSTs a JSON body to any SMS
//! gateway, signed with the Standard Webhooks headers (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature`), with a timeout and retries.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::config::{ConfigError, within};

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Codes go to the log (development only).
    #[default]
    Log,
    /// Codes go to `webhook_url`.
    Webhook,
}

/// Phone codes and how they are sent (`auth.sms`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    pub provider: Provider,
    /// Where the `webhook` provider POSTs (`http://` or `https://`).
    pub webhook_url: String,
    /// The Standard Webhooks signing secret, `whsec_<base64>`.
    pub webhook_secret: String,
    /// Seconds one POST may take.
    pub timeout_secs: u64,
    /// POSTs tried before a message is given up (1 s, 2 s, 4 s ... apart).
    pub attempts: u32,
    /// Seconds a code works.
    pub code_ttl_secs: u64,
    /// Seconds before another code may be sent to the same number.
    pub resend_secs: u64,
    /// Codes sent to one number within a day.
    pub per_number_per_day: u32,
    /// Codes one client address may ask for within an hour.
    pub per_address_per_hour: u32,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            provider: Provider::Log,
            webhook_url: String::new(),
            webhook_secret: String::new(),
            timeout_secs: 5,
            attempts: 3,
            code_ttl_secs: 300,
            resend_secs: 60,
            per_number_per_day: 10,
            per_address_per_hour: 20,
        }
    }
}

impl SmsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        within("auth.sms.timeout_secs", self.timeout_secs, 1..=60)?;
        within("auth.sms.attempts", self.attempts, 1..=10)?;
        within("auth.sms.code_ttl_secs", self.code_ttl_secs, 60..=3600)?;
        within("auth.sms.resend_secs", self.resend_secs, 1..=3600)?;
        within(
            "auth.sms.per_number_per_day",
            self.per_number_per_day,
            1..=1000,
        )?;
        within(
            "auth.sms.per_address_per_hour",
            self.per_address_per_hour,
            1..=1_000_000,
        )?;
        if self.provider == Provider::Webhook {
            let url = reqwest::Url::parse(&self.webhook_url).map_err(|e| {
                ConfigError::Invalid(format!("auth.sms.webhook_url is not a URL: {e}"))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::Invalid(
                    "auth.sms.webhook_url must be http:// or https://".into(),
                ));
            }
            if !self.webhook_secret.starts_with("whsec_")
                || standardwebhooks::Webhook::new(&self.webhook_secret).is_err()
            {
                return Err(ConfigError::Invalid(
                    "auth.sms.webhook_secret must be whsec_ and base64 (Standard Webhooks)".into(),
                ));
            }
        }
        Ok(())
    }
}

/// The JSON body a `webhook` provider receives.
#[derive(Debug, Serialize)]
pub struct Message<'a> {
    /// The number, international form.
    pub to: &'a str,
    /// The full text, in Chinese and English.
    pub text: &'a str,
    /// The code alone, for gateways that fill their own template.
    pub code: &'a str,
}

pub struct Sender {
    config: SmsConfig,
    http: reqwest::Client,
    signer: Option<standardwebhooks::Webhook>,
}

impl Sender {
    /// A validated config's sender.
    pub fn new(config: SmsConfig) -> Self {
        let signer = match config.provider {
            Provider::Webhook => standardwebhooks::Webhook::new(&config.webhook_secret).ok(),
            Provider::Log => None,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .build()
            .unwrap_or_default();
        Self {
            config,
            http,
            signer,
        }
    }

    /// Sends `code` to `phone`, retrying; logs what could not be sent.
    pub async fn send_code(&self, phone: &str, code: &str) {
        let minutes = self.config.code_ttl_secs.div_ceil(60);
        let text = format!(
            "【natter】验证码 {code}，{minutes} 分钟内有效，请勿告诉他人。Your natter code is {code}; it expires in {minutes} minutes. Do not share it."
        );
        match self.config.provider {
            Provider::Log => {
                tracing::info!(phone, code, "sms code (log provider: nothing is sent)");
            }
            Provider::Webhook => {
                let message = Message {
                    to: phone,
                    text: &text,
                    code,
                };
                if let Err(e) = self.post(&message).await {
                    tracing::warn!(phone, error = %e, "sms code not sent");
                }
            }
        }
    }

    async fn post(&self, message: &Message<'_>) -> Result<(), String> {
        let body = serde_json::to_vec(message).map_err(|e| e.to_string())?;
        let id = format!("msg_{}", shared::ids::new_id());
        let mut delay = Duration::from_secs(1);
        let mut last = String::new();
        for attempt in 1..=self.config.attempts {
            let timestamp = shared::ids::now_ms() / 1000;
            let signature = self
                .signer
                .as_ref()
                .ok_or("no signing secret")?
                .sign(&id, timestamp, &body)
                .map_err(|e| e.to_string())?;
            let sent = self
                .http
                .post(&self.config.webhook_url)
                .header("content-type", "application/json")
                .header(standardwebhooks::HEADER_WEBHOOK_ID, &id)
                .header(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP, timestamp)
                .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => last = format!("gateway answered {}", response.status()),
                Err(e) => last = e.to_string(),
            }
            tracing::debug!(attempt, error = %last, "sms webhook failed");
            if attempt < self.config.attempts {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        Err(last)
    }
}
