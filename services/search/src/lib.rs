//! The search service: the caller's messages by their words (Chinese and
//! English), and its groups and friends by name (pinyin too), on an
//! embedded SurrealDB.
//!
//! It reads `im.evt.v1.messages.created`, `message.recalled` and
//! `message.transcribed` with one durable consumer of its own and keeps one
//! record per message (see [`index`]). What a user may find is decided by
//! the messages service, which owns the messages: the conversations and
//! read windows before a search, and each hit (not recalled, not deleted
//! for oneself) after it. An index that is empty (or deleted) is rebuilt
//! from the messages service's history, in the background.
//!
//! Layout: [`config`], [`text`] (words: jieba for Chinese, stemming for
//! English), [`index`] (SurrealDB), [`service`] (endpoints, feed, rebuild).

pub mod config;
pub mod index;
pub mod service;
pub mod text;

pub use config::Config;
pub use service::run;

/// The micro service name its instances register (what `$SRV.PING` answers).
pub const MICRO_NAME: &str = "natter-search";

/// The durable consumer's name on `IM_EVENTS`.
pub const CONSUMER: &str = "natter-search";
