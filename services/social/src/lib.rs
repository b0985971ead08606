//! The social service: profiles, user search, friend requests, friends and
//! blocks. It answers the other services' questions about relations (may
//! this user message that one, who sees whose presence) and tells users
//! about requests and new or ended friendships through their inboxes.
//!
//! Layout:
//! - [`config`]: what an operator sets;
//! - [`store`]: the SQL (profiles, requests, friends, blocks);
//! - [`service`]: the NATS micro endpoints and the consumer that creates a
//!   profile for every `im.evt.v1.user.registered` event.
//!
//! Invariants: a friendship is two rows written and removed together; a
//! block is invisible to the blocked user beyond the refusal it meets;
//! profiles never carry private account fields (phone, password).

pub mod config;
pub mod service;
pub mod store;

pub use config::Config;
pub use service::run;

/// The micro service name its instances register (what `$SRV.PING` answers).
pub const MICRO_NAME: &str = "natter-social";
