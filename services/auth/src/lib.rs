//! The auth service: accounts, devices and access tokens.
//!
//! Layout:
//! - [`config`]: what an operator sets;
//! - [`validate`]: the rules for usernames, passwords and display text;
//! - [`store`]: the SQL (users, devices, signing keys);
//! - [`keys`]: Ed25519 signing keys, token minting, the public key set;
//! - [`guard`]: limits on logins and registrations, before any hash;
//! - [`codes`]: login codes sent to phone numbers; [`sms`]: sending them;
//! - [`service`]: the NATS micro endpoints (`im.v1.auth.*`).
//!
//! Auth alone holds the private signing keys (in its database, generated on
//! first start). Edges verify tokens locally with the public keys they fetch
//! from `im.v1.auth.keys`, so an edge cannot mint tokens and keys can rotate.

pub mod codes;
pub mod config;
pub mod guard;
mod hashing;
pub mod keys;
pub mod service;
pub mod sms;
pub mod store;
pub mod validate;

pub use config::Config;
pub use keys::Claims;
pub use service::run;

/// The micro service name its instances register (what `$SRV.PING` answers).
pub const MICRO_NAME: &str = "natter-auth";
