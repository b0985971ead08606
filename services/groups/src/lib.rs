//! The groups service: creating and dismissing groups, members and roles
//! (owner, admin, member), invitations and removals, mutes, names and
//! announcements.
//!
//! Layout:
//! - [`config`]: what an operator sets;
//! - [`plan`]: the rules, as pure functions (who may do what, size limits);
//! - [`store`]: the SQL (groups, members, the change log);
//! - [`service`]: the NATS micro endpoints and the sweep.
//!
//! Invariants: the groups service is the authority on membership; the
//! messages service keeps the projection it needs to authorize and fan out
//! group messages, fed only through `im.v1.conversation.apply` with
//! versioned changes, applied in order and exactly once. Every change is
//! committed with its log row, so a crash between the two services never
//! loses one.

pub mod config;
pub mod plan;
pub mod service;
pub mod store;

pub use config::Config;
pub use service::run;

/// The micro service name its instances register (what `$SRV.PING` answers).
pub const MICRO_NAME: &str = "natter-groups";
