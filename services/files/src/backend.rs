//! Where a file's bytes go, chosen by URL in the configuration.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::ObjectStore;

use crate::nats_store::NatsStore;

/// What [`open`] refuses.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("files.store_url {0:?}: {1}")]
    Url(String, String),
    #[error("files.store_url {0:?}: {1}")]
    Open(String, String),
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
) -> Result<Arc<dyn ObjectStore>, StoreError> {
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
        return Ok(Arc::new(store));
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
        return Ok(Arc::new(store));
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
        return Ok(Arc::new(store));
    }
    Err(bad(
        "unknown scheme: use nats://BUCKET, file:///PATH or s3://BUCKET",
    ))
}
