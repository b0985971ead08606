//! The messages service's SQL. Runs on SQLite and PostgreSQL alike.
//!
//! - [`append`]: sends stored in one transaction per batch, each with the
//!   next gapless seq of its conversation;
//!   ([`store_batch_sqlite`]: the same on the SQLite writer's own connection);
//! - [`log`]: reading the message log (history, pending fan-out, recalls and
//!   deletions for oneself);
//! - [`members`]: who belongs to a conversation and since when, and group
//!   changes applied from the groups service;
//! - [`reads`]: the conversation list, read positions and per-user flags.

mod append;
mod append_sqlite;
mod log;
mod members;
mod reads;

pub use append::*;
pub use append_sqlite::*;
pub use log::*;
pub use members::*;
pub use reads::*;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/messages");
