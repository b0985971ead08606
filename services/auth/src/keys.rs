//! Ed25519 signing keys and access tokens.
//!
//! Keys live in the auth database (so every auth instance shares them); the
//! newest signs, all are published so tokens signed by an older key stay
//! valid until they expire. `natter auth rotate-key` adds a new key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use shared::db::AnyPool;
use shared::proto::auth::PublicKey;
pub use shared::token::Claims;

use crate::store::{self, KeyRow};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored key {kid} is corrupt: {reason}")]
    Corrupt { kid: String, reason: String },
    #[error("cannot encode key: {0}")]
    Encode(String),
    #[error("cannot sign token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// The keys loaded from the database: the newest one signs.
pub struct KeySet {
    signing_kid: String,
    signing: EncodingKey,
    public: Vec<PublicKey>,
}

impl KeySet {
    /// Loads the keys, generating the first one if there is none.
    pub async fn load_or_generate(pool: &AnyPool) -> Result<Self, KeyError> {
        let mut rows = store::signing_keys(pool).await?;
        if rows.is_empty() {
            generate(pool).await?;
            rows = store::signing_keys(pool).await?;
        }
        let mut public = Vec::with_capacity(rows.len());
        for row in &rows {
            let raw = decode(&row.kid, &row.public_raw)?;
            if raw.len() != 32 {
                return Err(corrupt(&row.kid, "public key is not 32 bytes"));
            }
            public.push(PublicKey {
                kid: row.kid.clone(),
                ed25519: raw,
            });
        }
        // Kids are UUIDv7, so the last one in kid order is the newest.
        let newest = rows.last().expect("at least one key");
        let der = decode(&newest.kid, &newest.private_der)?;
        Ok(Self {
            signing_kid: newest.kid.clone(),
            signing: EncodingKey::from_ed_der(&der),
            public,
        })
    }

    pub fn public_keys(&self) -> &[PublicKey] {
        &self.public
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.signing_kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.signing)?)
    }
}

/// Generates a new signing key and stores it; it signs from the next load on.
pub async fn generate(pool: &AnyPool) -> Result<String, KeyError> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let der = key
        .to_pkcs8_der()
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    let row = KeyRow {
        kid: shared::ids::new_id(),
        private_der: B64.encode(der.as_bytes()),
        public_raw: B64.encode(key.verifying_key().to_bytes()),
    };
    store::insert_signing_key(pool, &row, shared::ids::now_ms()).await?;
    tracing::info!(kid = %row.kid, "generated a new token signing key");
    Ok(row.kid)
}

fn decode(kid: &str, text: &str) -> Result<Vec<u8>, KeyError> {
    B64.decode(text).map_err(|e| corrupt(kid, &e.to_string()))
}

fn corrupt(kid: &str, reason: &str) -> KeyError {
    KeyError::Corrupt {
        kid: kid.to_owned(),
        reason: reason.to_owned(),
    }
}
