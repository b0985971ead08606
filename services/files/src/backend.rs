//! Where a file's bytes go, chosen by URL in the configuration.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, TryStreamExt};
use object_store::ObjectStore;
use object_store::path::Path;

use crate::nats_store::NatsStore;
use crate::store::PartRow;

/// What [`open`] refuses.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("files.store_url {0:?}: {1}")]
    Url(String, String),
    #[error("files.store_url {0:?}: {1}")]
    Open(String, String),
}

/// The files service's store: any [`ObjectStore`], and the NATS bucket
/// itself when that is what it is, so that parts are read by the ETag
/// recorded when they were written ([`NatsStore::read_written`]).
#[derive(Clone)]
pub struct Store {
    pub objects: Arc<dyn ObjectStore>,
    nats: Option<NatsStore>,
}

impl Store {
    /// The bytes `range` of a stored part, streamed: by the ETag its write
    /// returned where that was recorded and the store is NATS, else by key.
    pub async fn read_part(
        &self,
        part: &PartRow,
        range: Range<u64>,
    ) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>> {
        if let (Some(nats), Some(e_tag)) = (&self.nats, &part.e_tag) {
            return nats.read_written(e_tag, part.size as u64, range);
        }
        let got = self
            .objects
            .get_opts(
                &Path::from(part.object_key.as_str()),
                object_store::GetOptions {
                    range: Some(range.into()),
                    ..Default::default()
                },
            )
            .await?;
        Ok(got.into_stream())
    }

    /// [`Store::read_part`], gathered (one piece is not copied).
    pub async fn read_part_bytes(
        &self,
        part: &PartRow,
        range: Range<u64>,
    ) -> object_store::Result<Bytes> {
        let pieces: Vec<Bytes> = self.read_part(part, range).await?.try_collect().await?;
        Ok(joined(pieces))
    }
}

/// `pieces` as one (a single piece is not copied).
pub fn joined(mut pieces: Vec<Bytes>) -> Bytes {
    match pieces.len() {
        0 => Bytes::new(),
        1 => pieces.remove(0),
        _ => Bytes::from(pieces.concat()),
    }
}

/// Opens the store `url` names:
///
/// - `nats://BUCKET` (the default, `nats://natter_files`): a bucket of the
///   NATS object store on the JetStream of `js`, made with `replicas`
///   copies if it does not exist;
/// - `file:///ABSOLUTE/PATH`: a directory of the local filesystem (made if
///   missing);
/// - `s3://BUCKET`: an S3-compatible bucket (AWS, MinIO, Ceph...), set up
///   by the standard `AWS_*` environment variables and then by `options`,
///   `object_store`'s own keys (`aws_endpoint`, `aws_region`,
///   `aws_access_key_id`, `aws_secret_access_key`, `aws_allow_http`...). An
///   unknown key is refused, as are options for the other schemes.
pub async fn open(
    url: &str,
    js: async_nats::jetstream::Context,
    replicas: usize,
    options: &BTreeMap<String, String>,
) -> Result<Store, StoreError> {
    let any = |objects: Arc<dyn ObjectStore>| Store {
        objects,
        nats: None,
    };
    let bad = |why: &str| StoreError::Url(url.to_owned(), why.to_owned());
    if let Some(bucket) = url.strip_prefix("s3://") {
        if bucket.is_empty() || bucket.contains('/') {
            return Err(bad("an S3 URL names a bucket: s3://BUCKET"));
        }
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_url(url);
        for (key, value) in options {
            let key = key
                .parse::<object_store::aws::AmazonS3ConfigKey>()
                .map_err(|e| bad(&format!("files.store_options: {e}")))?;
            builder = builder.with_config(key, value);
        }
        let store = builder
            .build()
            .map_err(|e| StoreError::Open(url.to_owned(), e.to_string()))?;
        return Ok(any(Arc::new(store)));
    }
    if !options.is_empty() {
        return Err(bad("files.store_options are for s3:// stores only"));
    }
    if let Some(bucket) = url.strip_prefix("nats://") {
        let valid = !bucket.is_empty()
            && bucket.len() <= 64
            && bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(bad(
                "the bucket name is 1 to 64 letters, digits, '_' or '-'",
            ));
        }
        let store = NatsStore::open(js, bucket, replicas)
            .await
            .map_err(|e| StoreError::Open(url.to_owned(), e.to_string()))?
            // The files service never replaces an object, and deletes only
            // parts nothing reads (a lost write's, a duplicate's, an
            // unfinished upload's): their chunks go at once.
            .with_grace(std::time::Duration::ZERO);
        return Ok(Store {
            objects: Arc::new(store.clone()),
            nats: Some(store),
        });
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(bad(
                "a file URL names an absolute path: file:///var/lib/natter/files",
            ));
        }
        std::fs::create_dir_all(path)
            .map_err(|e| StoreError::Open(url.to_owned(), e.to_string()))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(path)
            .map_err(|e| StoreError::Open(url.to_owned(), e.to_string()))?;
        return Ok(any(Arc::new(store)));
    }
    Err(bad(
        "unknown scheme: use nats://BUCKET, file:///PATH or s3://BUCKET",
    ))
}
