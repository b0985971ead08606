//! The access token contract between the auth service (which signs) and the
//! edges (which verify): an EdDSA-signed JWT with these claims, its `kid`
//! header naming a key published on `im.v1.auth.keys`.

use serde::{Deserialize, Serialize};

/// The claims of an access token.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Device id.
    pub did: String,
    pub iss: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Issued at, Unix milliseconds (0 in tokens from before it existed):
    /// edges refuse a device's tokens issued before its session ended, and
    /// a login right after a logout must not look older than it.
    #[serde(default)]
    pub iat_ms: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
}
