//! Configuration of the files service.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shared::config::{ConfigError, required, within};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `sqlite://...` or `postgres://...`; empty = `files.db` in the data dir.
    pub database_url: String,
    /// Where the bytes go: `nats://BUCKET` (the NATS object store, the
    /// default), `file:///PATH` or `s3://BUCKET` (see [`crate::backend::open`]).
    pub store_url: String,
    /// `object_store`'s options for an `s3://` store (`aws_endpoint`,
    /// `aws_region`, ...), over the `AWS_*` environment.
    pub store_options: BTreeMap<String, String>,
    /// Copies of a `nats://` bucket in a cluster (1..=5).
    pub store_replicas: usize,
    /// The largest upload of each kind, in bytes.
    pub max_file_bytes: u64,
    pub max_image_bytes: u64,
    pub max_voice_bytes: u64,
    pub max_video_bytes: u64,
    pub max_avatar_bytes: u64,
    /// Seconds an unfinished upload is kept after it began.
    pub upload_expiry_secs: u64,
    /// The most bytes one user's files and unfinished uploads may take
    /// (counted per file, even when its bytes are stored once for many);
    /// 0 = no limit.
    pub quota_bytes_per_user: u64,
    /// Seconds a finished file may go unreferenced (by no message that is
    /// not recalled, and for an avatar, by no profile) before it is
    /// deleted, with its bytes when no other file has them.
    pub unreferenced_file_secs: u64,
    /// Seconds between looks for expired uploads and unused files.
    pub sweep_interval_secs: u64,
}

const MIB: u64 = 1024 * 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: String::new(),
            store_url: "nats://natter_files".into(),
            store_options: BTreeMap::new(),
            store_replicas: 1,
            max_file_bytes: 200 * MIB,
            max_image_bytes: 20 * MIB,
            max_voice_bytes: 10 * MIB,
            max_video_bytes: 200 * MIB,
            max_avatar_bytes: 5 * MIB,
            upload_expiry_secs: 86_400,
            quota_bytes_per_user: 10 * 1024 * MIB,
            unreferenced_file_secs: 7 * 86_400,
            sweep_interval_secs: 60,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        required("files.database_url", &self.database_url)?;
        required("files.store_url", &self.store_url)?;
        within("files.store_replicas", self.store_replicas, 1..=5)?;
        for (name, value) in [
            ("files.max_file_bytes", self.max_file_bytes),
            ("files.max_image_bytes", self.max_image_bytes),
            ("files.max_voice_bytes", self.max_voice_bytes),
            ("files.max_video_bytes", self.max_video_bytes),
            ("files.max_avatar_bytes", self.max_avatar_bytes),
        ] {
            within(name, value, 1..=64 * 1024 * MIB)?;
        }
        within(
            "files.upload_expiry_secs",
            self.upload_expiry_secs,
            60..=30 * 86_400,
        )?;
        within(
            "files.quota_bytes_per_user",
            self.quota_bytes_per_user,
            0..=1024 * 1024 * MIB,
        )?;
        within(
            "files.unreferenced_file_secs",
            self.unreferenced_file_secs,
            1..=365 * 86_400,
        )?;
        within(
            "files.sweep_interval_secs",
            self.sweep_interval_secs,
            1..=3600,
        )
    }

    /// The largest upload of `kind`, or `None` for an unknown kind.
    pub fn limit(&self, kind: &str) -> Option<u64> {
        Some(match kind {
            "file" => self.max_file_bytes,
            "image" => self.max_image_bytes,
            "voice" => self.max_voice_bytes,
            "video" => self.max_video_bytes,
            "avatar" => self.max_avatar_bytes,
            _ => return None,
        })
    }
}
