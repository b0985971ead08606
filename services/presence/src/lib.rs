//! The presence service: which devices are online, per user, and when a user
//! was last seen.
//!
//! State lives in the JetStream KV bucket `im_presence` (per-key TTL with
//! limit markers): `dev.<user>.<device>` while a device is connected,
//! refreshed by its edge's heartbeats and expiring on its own when the edge
//! dies; `seen.<user>` holds the last-seen time. Every instance watches the
//! bucket, keeps the online set in memory to answer queries, and announces
//! transitions on `im.evt.v1.presence.changed` (deduplicated across instances
//! by the KV revision).

pub mod config;
pub mod service;

pub use config::Config;
pub use service::run;

/// The micro service name its instances register (what `$SRV.PING` answers).
pub const MICRO_NAME: &str = "natter-presence";
