//! The messages service: one-to-one conversations, sending with a gapless
//! per-conversation `seq`, history and the conversation list.
//!
//! Layout:
//! - [`config`]: what an operator sets;
//! - [`validate`]: the rules for what a sender may send;
//! - [`store`]: the SQL (conversations, members, messages);
//! - [`service`]: the NATS micro endpoints (`im.v1.message.*`,
//!   `im.v1.conversation.*`) and the recovery sweep;
//! - `writer`: the group commit of sends and fan-out marks;
//! - `relations`: the cache of friendships and blocks for one-to-one sends;
//! - `devices`: whose messages need a copy in their sender's own inbox.
//!
//! Invariant: a message is acked to its sender only after it is stored and in
//! every inbox it goes to (its sender's too, unless the sender has one device
//! and sent from its only connection: see `devices`). A message stored but not yet fanned out (a crash
//! in between) is fanned out by a retried send, by the sweep at start, or by
//! the periodic sweep, or with the next message stored behind it; a redo
//! finds the entries already in the inboxes (`shared::inbox::Once::Entry`).

pub mod config;
mod devices;
mod relations;
pub mod service;
pub mod store;
pub mod validate;
mod writer;

pub use config::Config;
pub use service::run;

/// The micro service name its instances register (what `$SRV.PING` answers).
pub const MICRO_NAME: &str = "natter-messages";
