//! Verifying access tokens with the public keys of the auth service.
//!
//! The edge fetches the key set from `im.v1.auth.keys` at start and again
//! when a token names a key it does not know (at most once per
//! [`REFRESH_GAP`]), so keys can rotate without restarting edges.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use shared::RpcError;
use shared::endpoint::endpoints::AuthKeys;
use shared::ids::{DeviceId, UserId};
use shared::proto::auth as pb;
use shared::rpc::{Caller, Identity};
use shared::token::Claims;

/// A verified access token.
#[derive(Clone, Debug)]
pub struct Verified {
    pub who: Identity,
    /// When it was issued, Unix ms.
    pub issued_at_ms: i64,
    pub expires_at_secs: i64,
}
use tokio::sync::Mutex;

const REFRESH_GAP: Duration = Duration::from_secs(5);

pub struct KeyRing {
    caller: Caller,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_refresh: Mutex<Option<Instant>>,
    validation: Validation,
}

impl KeyRing {
    pub fn new(caller: Caller) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        Self {
            caller,
            keys: RwLock::new(HashMap::new()),
            last_refresh: Mutex::new(None),
            validation,
        }
    }

    /// Fetches the key set; fails when the auth service does not answer.
    pub async fn refresh(&self) -> Result<usize, RpcError> {
        let reply = self
            .caller
            .call_to::<AuthKeys>(&pb::PublicKeysRequest {})
            .await?;
        let keys: HashMap<String, DecodingKey> = reply
            .keys
            .into_iter()
            .filter(|k| k.ed25519.len() == 32)
            .map(|k| (k.kid, DecodingKey::from_ed_der(&k.ed25519)))
            .collect();
        let n = keys.len();
        *shared::sync::write(&self.keys) = keys;
        Ok(n)
    }

    pub fn is_loaded(&self) -> bool {
        !shared::sync::read(&self.keys).is_empty()
    }

    /// Verifies a token and returns the identity it carries.
    pub async fn verify(&self, token: &str) -> Result<Identity, RpcError> {
        Ok(self.verify_token(token).await?.who)
    }

    /// [`KeyRing::verify`], with when the token was issued and expires.
    pub async fn verify_token(&self, token: &str) -> Result<Verified, RpcError> {
        let invalid = || RpcError::unauthorized("invalid access token");
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        if header.alg != Algorithm::EdDSA {
            return Err(invalid());
        }
        let kid = header.kid.ok_or_else(invalid)?;
        if !shared::sync::read(&self.keys).contains_key(&kid) {
            self.refresh_if_due().await;
        }
        let claims = {
            let keys = shared::sync::read(&self.keys);
            let key = keys.get(&kid).ok_or_else(invalid)?;
            match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
                Ok(data) => data.claims,
                Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => {
                    return Err(RpcError::unauthorized("access token expired"));
                }
                Err(_) => return Err(invalid()),
            }
        };
        match (UserId::parse(claims.sub), DeviceId::parse(claims.did)) {
            (Ok(user_id), Ok(device_id)) => Ok(Verified {
                who: Identity { user_id, device_id },
                issued_at_ms: if claims.iat_ms > 0 {
                    claims.iat_ms
                } else {
                    claims.iat.saturating_mul(1000)
                },
                expires_at_secs: claims.exp,
            }),
            _ => Err(invalid()),
        }
    }

    async fn refresh_if_due(&self) {
        let mut last = self.last_refresh.lock().await;
        if last.is_some_and(|t| t.elapsed() < REFRESH_GAP) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "cannot refresh token keys");
        }
    }
}
