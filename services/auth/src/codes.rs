//! Login codes sent to phone numbers: 6 digits, working `code_ttl_secs`
//! (5 minutes) for at most 5 tries, stored as a salted hash and compared in
//! constant time; one send per number per `resend_secs` (60 s), at most
//! `per_number_per_day` a day, and `per_address_per_hour` per client
//! address. Asking for a code answers the same whether the number has an
//! account or not.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use shared::db::AnyPool;
use shared::limit::PerKey;
use shared::proto::auth as pb;
use shared::{RpcError, ids};
use subtle::ConstantTimeEq as _;

use crate::sms::{Sender, SmsConfig};

/// Wrong codes compared before a code stops working.
pub const TRIES: i64 = 5;
const DAY_MS: i64 = 86_400_000;

#[derive(sqlx::FromRow)]
struct Row {
    code_hash: String,
    salt: String,
    sent_at_ms: i64,
    day_start_ms: i64,
    sent_today: i64,
}

pub struct Codes {
    config: SmsConfig,
    pool: AnyPool,
    sender: Arc<Sender>,
    per_address: PerKey<IpAddr>,
}

/// The error for a code that does not work, whatever the reason.
fn wrong() -> RpcError {
    RpcError::unauthorized("the code is wrong or has expired: ask for a new one")
}

fn hash(salt: &str, phone: &str, code: &str) -> String {
    crate::service::hash_secret(&format!("{salt}:{phone}:{code}"))
}

/// The number in international form, or a clear error.
pub fn phone_number(given: &str) -> Result<String, RpcError> {
    shared::text::phone(given.trim()).ok_or_else(|| {
        RpcError::bad_request("phone must be in international form, like +8613800138000")
    })
}

impl Codes {
    pub fn new(config: SmsConfig, pool: AnyPool) -> Self {
        let hourly = config.per_address_per_hour.max(1);
        Self {
            per_address: PerKey::new(
                "codes asked for from your address",
                hourly,
                Duration::from_secs(3600) / hourly,
            ),
            sender: Arc::new(Sender::new(config.clone())),
            config,
            pool,
        }
    }

    /// Sends a new code to `phone` (in the background: the answer does not
    /// wait for the gateway).
    pub async fn send(
        &self,
        ip: Option<IpAddr>,
        phone: &str,
    ) -> Result<pb::PhoneCodeResponse, RpcError> {
        let phone = phone_number(phone)?;
        if let Some(ip) = ip {
            self.per_address.check(&shared::limit::address_key(ip))?;
        }
        let now = ids::now_ms();
        let resend_ms = self.config.resend_secs as i64 * 1000;
        let row = self.row(&phone).await?;
        let (mut day_start, mut sent_today) = (now, 0);
        if let Some(row) = &row {
            let again_at = row.sent_at_ms + resend_ms;
            if now < again_at {
                return Err(RpcError::rate_limited(
                    "a code was just sent to this number",
                    Duration::from_millis((again_at - now) as u64),
                ));
            }
            if now - row.day_start_ms < DAY_MS {
                (day_start, sent_today) = (row.day_start_ms, row.sent_today);
            }
            if sent_today >= i64::from(self.config.per_number_per_day) {
                return Err(RpcError::rate_limited(
                    "too many codes sent to this number today",
                    Duration::from_millis((day_start + DAY_MS - now) as u64),
                ));
            }
        }
        let code = {
            use rand::Rng as _;
            format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32))
        };
        let salt = ids::new_id();
        let ttl_ms = self.config.code_ttl_secs as i64 * 1000;
        sqlx::query(
            "INSERT INTO phone_codes
                 (phone, code_hash, salt, expires_at_ms, tries_left, sent_at_ms, day_start_ms, sent_today)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (phone) DO UPDATE SET
                 code_hash = $2, salt = $3, expires_at_ms = $4, tries_left = $5,
                 sent_at_ms = $6, day_start_ms = $7, sent_today = $8",
        )
        .bind(&phone)
        .bind(hash(&salt, &phone, &code))
        .bind(&salt)
        .bind(now + ttl_ms)
        .bind(TRIES)
        .bind(now)
        .bind(day_start)
        .bind(sent_today + 1)
        .execute(&self.pool)
        .await?;
        let sender = self.sender.clone();
        tokio::spawn(async move { sender.send_code(&phone, &code).await });
        Ok(pb::PhoneCodeResponse {
            resend_after_secs: self.config.resend_secs as u32,
            expires_in_secs: self.config.code_ttl_secs as u32,
        })
    }

    async fn row(&self, phone: &str) -> Result<Option<Row>, RpcError> {
        Ok(sqlx::query_as(
            "SELECT code_hash, salt, sent_at_ms, day_start_ms, sent_today
             FROM phone_codes WHERE phone = $1",
        )
        .bind(phone)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Checks `code` for `phone` (normalized), counting a try; a right code
    /// gives its try back. The code keeps working until [`Codes::used`].
    pub async fn check(&self, phone: &str, code: &str) -> Result<(), RpcError> {
        let code = code.trim();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RpcError::bad_request("the code is 6 digits"));
        }
        let now = ids::now_ms();
        // The try is counted before the comparison: concurrent guesses
        // cannot get more than their share.
        let counted = sqlx::query(
            "UPDATE phone_codes SET tries_left = tries_left - 1
             WHERE phone = $1 AND tries_left > 0 AND code_hash <> '' AND expires_at_ms > $2",
        )
        .bind(phone)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if counted.rows_affected() != 1 {
            return Err(wrong());
        }
        let row = self.row(phone).await?.ok_or_else(wrong)?;
        let given = hash(&row.salt, phone, code);
        if !bool::from(given.as_bytes().ct_eq(row.code_hash.as_bytes())) {
            return Err(wrong());
        }
        sqlx::query("UPDATE phone_codes SET tries_left = tries_left + 1 WHERE phone = $1")
            .bind(phone)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends the code of `phone`: it was used.
    pub async fn used(&self, phone: &str) -> Result<(), RpcError> {
        sqlx::query("UPDATE phone_codes SET code_hash = '' WHERE phone = $1")
            .bind(phone)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
