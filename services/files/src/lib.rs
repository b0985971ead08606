//! The files service: uploads, downloads and media of natter's messages and
//! avatars. Its bytes go to an [`object_store::ObjectStore`] chosen by URL
//! ([`backend::open`]): the NATS object store by default ([`nats_store`]), so
//! an edge box needs nothing but nats-server.
//!
//! Layout:
//! - [`config`]: what an operator sets;
//! - [`backend`]: the store its bytes go to, and [`nats_store`], the NATS
//!   object store as an `ObjectStore`;
//! - [`media`]: what is read from images and recordings (size, thumbnails,
//!   metadata removed, duration);
//! - [`store`]: the SQL (uploads, parts, contents, files, thumbnails);
//! - [`service`]: the NATS micro endpoints and the sweep of expired uploads.
//!
//! Invariants: a content is stored once (the parts of the first upload of
//! its bytes), whoever uploads it; a file's type is sniffed from its bytes;
//! an upload's offset moves only after the bytes before it are stored, and
//! no write overwrites another's part.

pub mod backend;
pub mod config;
pub mod media;
pub mod nats_store;
pub mod service;
pub mod store;

pub use config::Config;
pub use service::run;

/// The micro service name its instances register (what `$SRV.PING` answers).
pub const MICRO_NAME: &str = "natter-files";
