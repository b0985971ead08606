//! An [`ObjectStore`] on a NATS JetStream object store bucket, so that files
//! need nothing but nats-server (and are replicated with its cluster).
//!
//! The layout is the NATS object store's own (`$O.<bucket>.M.<name>` holds an
//! object's description, `$O.<bucket>.C.<nuid>` its chunks, in the stream
//! `OBJ_<bucket>`), so `nats object get` reads what natter wrote and the
//! other way round. What the NATS object store has no operation for is built
//! on what JetStream does have:
//!
//! - **Conditional puts** (`PutMode::Create`, `PutMode::Update`, and
//!   `CopyMode::Create`): the chunks go first, under a fresh nuid; the
//!   description is then published with `Nats-Expected-Last-Subject-Sequence`,
//!   so the server decides atomically which writer wins, and a loser's chunks
//!   are purged. An object's ETag is its nuid (new with every write); an
//!   update names the ETag it replaces.
//!   Plain overwrites use the same check in a loop, so each write knows which
//!   object it replaced and purges exactly its chunks (two racing writers
//!   never leave orphaned chunks behind).
//! - **Range reads**: chunks may differ in size (other writers' chunks do),
//!   so a read from an offset into a large object first walks its chunks
//!   with a headers-only consumer (each header carries `Nats-Msg-Size`), then
//!   reads from the chunk that holds the offset: no byte before it crosses
//!   the network. A small object (up to [`DIRECT_CHUNKS`] chunks, such as
//!   the files service's parts) is read by direct gets alone, no consumer.
//!   The chunks of a replaced or deleted object stay readable for
//!   [`READ_GRACE`] (reads that began before it was replaced finish), then
//!   are purged by the process that replaced it.
//! - **Copy and rename**: no server-side copy, so the bytes are read and
//!   written again, streamed.
//! - **Multipart uploads**: parts are published in the order they were
//!   handed over (each part's task waits for the one before), into the
//!   chunks of one new object described when the upload completes.
//!
//! Not kept: tags (ignored, as the local filesystem backend does) and older
//! versions (a get naming a version that is no longer the current one finds
//! nothing). Attributes are kept in the object's metadata.
//!
//! Memory per transfer is bounded: a writer holds one chunk being filled and
//! at most [`IN_FLIGHT`] published chunks awaiting their acks; a reader pulls
//! [`READ_BATCH`] chunks at a time through a channel of [`READ_AHEAD`].

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::object_store::{ObjectInfo, ObjectOptions};
use async_nats::jetstream::stream::DirectGetErrorKind;
use async_nats::jetstream::{self, context::PublishAckFuture};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, CopyMode, CopyOptions, GetOptions, GetResult,
    GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, oneshot};

/// The size of every chunk this store writes but an object's last.
pub const CHUNK: usize = 128 * 1024;

/// The most chunks of one object (128 GiB), the bucket's limit of messages
/// per subject: a write past it is refused rather than letting the stream
/// drop the object's first chunks.
const MAX_CHUNKS: usize = 1 << 20;
/// Chunks published and not yet acked, per write.
pub const IN_FLIGHT: usize = 16;
/// Chunks a read pulls from the server at a time.
pub const READ_BATCH: i64 = 8;
/// Objects of at most this many chunks are read by direct gets, one chunk
/// after another; larger ones through a consumer.
const DIRECT_CHUNKS: usize = 8;
/// Chunks a read holds for its caller.
pub const READ_AHEAD: usize = 4;
/// How long the chunks of a replaced or deleted object stay, for the reads
/// that began before (the NATS object store itself purges them at once).
pub const READ_GRACE: Duration = Duration::from_secs(60);
/// How long a read waits for its next chunk.
const CHUNK_WAIT: Duration = Duration::from_secs(10);

const STORE: &str = "NATS";
/// How many times a write retries its description after another writer's
/// moved it (each retry re-reads what it replaces).
const DESCRIBE_ATTEMPTS: usize = 16;
const ROLLUP: &str = "Nats-Rollup";
const MSG_SIZE: &str = "Nats-Msg-Size";
/// Attributes, kept in the object's metadata under these keys.
const ATTRIBUTE_PREFIX: &str = "attr.";
const USER_METADATA_PREFIX: &str = "meta.";

/// A bucket of the NATS object store as an [`ObjectStore`].
#[derive(Clone)]
pub struct NatsStore {
    inner: Arc<Inner>,
}

struct Inner {
    bucket: String,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    /// How long the chunks of a replaced or deleted object stay readable.
    grace: Duration,
}

/// The current description of an object: deleted ones too (the NATS object
/// store keeps a tombstone), with the sequence it was stored at.
struct Current {
    info: ObjectInfo,
    seq: u64,
}

impl NatsStore {
    /// Opens the bucket, creating it (file storage, `replicas` copies) when it
    /// does not exist.
    pub async fn open(
        js: jetstream::Context,
        bucket: &str,
        replicas: usize,
    ) -> Result<Self, async_nats::Error> {
        let name = format!("OBJ_{bucket}");
        let stream = match js.get_stream(&name).await {
            Ok(mut stream) => {
                // A bucket made before the limit (or by another client)
                // gets it; nats-server sizes its blocks by it when it next
                // loads the stream (a restart).
                let mut config = stream.cached_info().config.clone();
                if config.max_messages_per_subject <= 0 {
                    config.max_messages_per_subject = MAX_CHUNKS as i64;
                    match js.update_stream(config).await {
                        Ok(_) => stream = js.get_stream(&name).await?,
                        Err(e) => {
                            tracing::warn!(error = %e, stream = name, "the bucket's limit not set")
                        }
                    }
                }
                stream
            }
            Err(_) => {
                // The NATS object store's stream (as `create_object_store`
                // makes it), with a limit of messages per subject that no
                // object reaches: nats-server then keeps the stream in
                // blocks of 4 MiB instead of 8 MiB, and a block being read
                // or written is what it holds in memory.
                let config = jetstream::stream::Config {
                    name: name.clone(),
                    description: Some("natter's files".into()),
                    subjects: vec![format!("$O.{bucket}.C.>"), format!("$O.{bucket}.M.>")],
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas.max(1),
                    discard: jetstream::stream::DiscardPolicy::New,
                    allow_rollup: true,
                    allow_direct: true,
                    max_messages_per_subject: MAX_CHUNKS as i64,
                    ..Default::default()
                };
                match js.create_stream(config).await {
                    Ok(stream) => stream,
                    // Another instance may have made it meanwhile.
                    Err(e) => js.get_stream(&name).await.map_err(|_| e)?,
                }
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                bucket: bucket.to_owned(),
                js,
                stream,
                grace: READ_GRACE,
            }),
        })
    }

    /// The same store, keeping a replaced or deleted object's chunks for
    /// `grace` (by default [`READ_GRACE`]) before purging them.
    pub fn with_grace(self, grace: Duration) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                bucket: inner.bucket.clone(),
                js: inner.js.clone(),
                stream: inner.stream.clone(),
                grace,
            }),
        }
    }

    fn meta_subject(&self, location: &Path) -> String {
        format!(
            "$O.{}.M.{}",
            self.inner.bucket,
            URL_SAFE.encode(location.as_ref())
        )
    }

    fn chunk_subject(&self, nuid: &str) -> String {
        format!("$O.{}.C.{nuid}", self.inner.bucket)
    }

    async fn current(&self, location: &Path) -> object_store::Result<Option<Current>> {
        match self
            .inner
            .stream
            .direct_get_last_for_subject(self.meta_subject(location))
            .await
        {
            Ok(message) => {
                let info: ObjectInfo = serde_json::from_slice(&message.payload).map_err(generic)?;
                Ok(Some(Current {
                    info,
                    seq: message.sequence,
                }))
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(generic(e)),
        }
    }

    /// The live object at `location`, or `NotFound`.
    async fn live(&self, location: &Path) -> object_store::Result<Current> {
        match self.current(location).await? {
            Some(current) if !current.info.deleted => Ok(current),
            _ => Err(not_found(location)),
        }
    }

    fn meta(&self, location: &Path, current: &Current) -> ObjectMeta {
        ObjectMeta {
            location: location.clone(),
            last_modified: current.info.modified.map(to_chrono).unwrap_or_default(),
            size: current.info.size as u64,
            e_tag: Some(current.info.nuid.clone()),
            // Older versions are not kept, so none is named.
            version: None,
        }
    }

    /// Publishes the description of `info` at `location` on the condition
    /// `expect` and purges the chunks of the live object it replaced.
    async fn describe(
        &self,
        location: &Path,
        mut info: ObjectInfo,
        expect: Expect,
    ) -> object_store::Result<PutResult> {
        for _ in 0..DESCRIBE_ATTEMPTS {
            let replaced = self.current(location).await?;
            let after = match (&expect, &replaced) {
                (Expect::Any, _) => replaced.as_ref().map_or(0, |r| r.seq),
                (Expect::Absent, Some(r)) if !r.info.deleted => {
                    return Err(object_store::Error::AlreadyExists {
                        path: location.to_string(),
                        source: "the object exists".into(),
                    });
                }
                (Expect::Absent, _) => replaced.as_ref().map_or(0, |r| r.seq),
                (Expect::Tag(tag), Some(r)) if r.info.nuid == *tag && !r.info.deleted => r.seq,
                (Expect::Tag(_), _) => {
                    return Err(object_store::Error::Precondition {
                        path: location.to_string(),
                        source: "the object is not at that ETag".into(),
                    });
                }
            };
            if !self.publish_description(location, &mut info, after).await? {
                // Another writer got in first: decide again against it.
                continue;
            }
            if let Some(old) = replaced.filter(|r| !r.info.deleted) {
                self.retire_chunks(old.info.nuid);
            }
            return Ok(PutResult {
                e_tag: Some(info.nuid),
                version: None,
            });
        }
        Err(generic(format!(
            "{location}: other writers kept replacing it"
        )))
    }

    /// Publishes `info` (stamped now) as the description at `location` if
    /// the last one is still the one stored at `after` (0: none); false
    /// when another writer's came first.
    async fn publish_description(
        &self,
        location: &Path,
        info: &mut ObjectInfo,
        after: u64,
    ) -> object_store::Result<bool> {
        info.modified = Some(time::OffsetDateTime::now_utc());
        let payload = serde_json::to_vec(&info).map_err(generic)?;
        let mut headers = HeaderMap::new();
        headers.insert(ROLLUP, "sub");
        let published = self
            .inner
            .js
            .send_publish(
                self.meta_subject(location),
                PublishMessage::build()
                    .payload(payload.into())
                    .headers(headers)
                    .expected_last_subject_sequence(after),
            )
            .await
            .map_err(generic)?
            .await;
        match published {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(false),
            Err(e) => Err(generic(e)),
        }
    }

    /// Purges the chunks of an object that was replaced or deleted once
    /// the reads that began before have had [`Inner::grace`] to finish.
    fn retire_chunks(&self, nuid: String) {
        let store = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(store.inner.grace).await;
            store.purge_chunks(&nuid).await;
        });
    }

    async fn purge_chunks(&self, nuid: &str) {
        if nuid.is_empty() {
            return;
        }
        if let Err(e) = self
            .inner
            .stream
            .purge()
            .filter(self.chunk_subject(nuid))
            .await
        {
            // Orphaned chunks take room but are never read.
            tracing::warn!(error = %e, nuid, "object chunks not purged");
        }
    }

    /// Writes `data` as a new object at `location`.
    async fn write(
        &self,
        location: &Path,
        data: impl IntoIterator<Item = Bytes>,
        attributes: &Attributes,
        expect: Expect,
    ) -> object_store::Result<PutResult> {
        let mut writer = ChunkWriter::new(self.clone());
        let written = async {
            for bytes in data {
                writer.write(bytes).await?;
            }
            writer.finish().await
        }
        .await;
        let info = match written {
            Ok(()) => writer.info(location, attributes),
            Err(e) => {
                writer.abort().await;
                return Err(e);
            }
        };
        let nuid = info.nuid.clone();
        let described = self.describe(location, info, expect).await;
        if described.is_err() {
            self.purge_chunks(&nuid).await;
        }
        described
    }

    /// The bytes in `range` of an object this store wrote, named by the
    /// ETag its write returned and by its size, read without looking up its
    /// description: for callers that never replace an object and record
    /// both when they write it (the files service's parts).
    ///
    /// Why: a description is the last message of its subject, and reading
    /// it before the chunks is a read out of the stream's order; nats-server
    /// then keeps every block it touched cached until a 10 s timer instead
    /// of letting each go when a read reaches its end. Downloading 100 MiB
    /// that way held 24 MiB of blocks in nats-server (its heap profile);
    /// reading the chunks alone holds about one block.
    ///
    /// An object deleted since is an error once its chunks are purged.
    pub fn read_written(
        &self,
        e_tag: &str,
        size: u64,
        range: Range<u64>,
    ) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>> {
        let nuid_like = !e_tag.is_empty()
            && e_tag.len() <= 64
            && e_tag.bytes().all(|b| b.is_ascii_alphanumeric());
        if !nuid_like {
            return Err(generic(format!(
                "{e_tag:?} is not an ETag this store wrote"
            )));
        }
        if range.start > range.end || range.end > size {
            return Err(generic(format!(
                "the range {range:?} is not within an object of {size} bytes"
            )));
        }
        let chunks = usize::try_from(size.div_ceil(CHUNK as u64)).unwrap_or(usize::MAX);
        Ok(self.read(self.chunk_subject(e_tag), chunks, range))
    }

    /// The bytes in `range` of the `chunks` chunks on `subject`, pulled as
    /// they are read.
    fn read(
        &self,
        subject: String,
        chunks: usize,
        range: Range<u64>,
    ) -> BoxStream<'static, object_store::Result<Bytes>> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let store = self.clone();
        tokio::spawn(async move {
            if let Err(e) = store.send_chunks(subject, chunks, range, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
    }

    async fn send_chunks(
        &self,
        subject: String,
        chunks: usize,
        range: Range<u64>,
        tx: &tokio::sync::mpsc::Sender<object_store::Result<Bytes>>,
    ) -> object_store::Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        if chunks <= DIRECT_CHUNKS {
            return self.send_direct(subject, chunks, range, tx).await;
        }
        let (start_sequence, mut offset, skip) = self.locate(&subject, range.start).await?;
        let consumer = self
            .inner
            .stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject,
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence },
                max_batch: READ_BATCH,
                ..Default::default()
            })
            .await
            .map_err(generic)?;
        let name = consumer.cached_info().name.clone();
        let pending = consumer.cached_info().num_pending;
        let read: object_store::Result<()> = async {
            let mut left = chunks.saturating_sub(skip);
            if pending < left as u64 {
                return Err(gone());
            }
            let mut messages = consumer.messages().await.map_err(generic)?;
            while offset < range.end && left > 0 {
                let message = next_chunk(&mut messages).await?;
                left -= 1;
                let chunk = message.payload.clone();
                let chunk_end = offset + chunk.len() as u64;
                let from = range.start.saturating_sub(offset) as usize;
                let to = (range.end.min(chunk_end) - offset) as usize;
                offset = chunk_end;
                if from >= to {
                    continue;
                }
                if tx.send(Ok(chunk.slice(from..to))).await.is_err() {
                    return Ok(()); // the reader went away
                }
            }
            if offset < range.end {
                return Err(gone());
            }
            Ok(())
        }
        .await;
        let _ = self.inner.stream.delete_consumer(&name).await;
        read
    }

    /// [`NatsStore::send_chunks`] for a small object: its chunks one direct
    /// get after another (each the subject's next message), no consumer.
    async fn send_direct(
        &self,
        subject: String,
        chunks: usize,
        range: Range<u64>,
        tx: &tokio::sync::mpsc::Sender<object_store::Result<Bytes>>,
    ) -> object_store::Result<()> {
        let (mut next, mut offset) = (1u64, 0u64);
        for read in 1..=chunks {
            if offset >= range.end {
                break;
            }
            let message = self
                .inner
                .stream
                .direct_get_next_for_subject(subject.clone(), Some(next))
                .await
                .map_err(|e| match e.kind() {
                    DirectGetErrorKind::NotFound => gone(),
                    _ => generic(e),
                })?;
            next = message.sequence + 1;
            let chunk = message.payload;
            let chunk_end = offset + chunk.len() as u64;
            let from = range.start.saturating_sub(offset) as usize;
            let to = (range.end.min(chunk_end) - offset) as usize;
            offset = chunk_end;
            if from < to && tx.send(Ok(chunk.slice(from..to))).await.is_err() {
                return Ok(()); // the reader went away
            }
            if read == chunks {
                // nats-server lets go of a block's cache when a read reaches
                // the block's last message from the one before it. A read
                // that steps over a message (this object's description,
                // between its chunks and the next object's) would keep
                // every block read after it cached until a timer. Asking
                // for the message after the last chunk by its sequence
                // keeps the reads adjacent, so reading parts one after
                // another holds one block in nats-server's memory (what it
                // answers is not needed).
                let _ = self.inner.stream.direct_get(next).await;
            }
        }
        if offset < range.end {
            return Err(gone());
        }
        Ok(())
    }

    /// Where the chunk that holds byte `at` starts: its stream sequence, its
    /// offset, and how many chunks come before it. Walks the headers only.
    async fn locate(&self, subject: &str, at: u64) -> object_store::Result<(u64, u64, usize)> {
        if at == 0 {
            return Ok((1, 0, 0));
        }
        let consumer = self
            .inner
            .stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject.to_owned(),
                headers_only: true,
                ..Default::default()
            })
            .await
            .map_err(generic)?;
        let name = consumer.cached_info().name.clone();
        let pending = consumer.cached_info().num_pending;
        let found: object_store::Result<_> = async {
            let mut messages = consumer.messages().await.map_err(generic)?;
            let mut offset = 0u64;
            for skipped in 0..pending as usize {
                let message = next_chunk(&mut messages).await?;
                let size: u64 = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(MSG_SIZE))
                    .and_then(|v| v.as_str().parse().ok())
                    .ok_or_else(|| generic("a chunk without its size"))?;
                if offset + size > at {
                    let seq = message.info().map_err(generic)?.stream_sequence;
                    return Ok((seq, offset, skipped));
                }
                offset += size;
            }
            Err(gone())
        }
        .await;
        let _ = self.inner.stream.delete_consumer(&name).await;
        found
    }

    /// Every live object under `prefix`, with its description's sequence.
    async fn all(&self, prefix: Option<&Path>) -> object_store::Result<Vec<(Path, Current)>> {
        let consumer = self
            .inner
            .stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: format!("$O.{}.M.>", self.inner.bucket),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(generic)?;
        let name = consumer.cached_info().name.clone();
        let mut left = consumer.cached_info().num_pending;
        let listed: object_store::Result<Vec<_>> = async {
            let mut found = Vec::new();
            if left == 0 {
                return Ok(found);
            }
            let mut messages = consumer.messages().await.map_err(generic)?;
            while let Some(message) = messages.next().await {
                let message = message.map_err(generic)?;
                let pending = message.info().map_err(generic)?;
                let seq = pending.stream_sequence;
                left = pending.pending;
                let info: ObjectInfo = serde_json::from_slice(&message.payload).map_err(generic)?;
                if let Ok(location) = Path::parse(&info.name)
                    && !info.deleted
                    && prefix.is_none_or(|p| location.prefix_matches(p) && &location != p)
                {
                    found.push((location, Current { info, seq }));
                }
                if left == 0 {
                    break;
                }
            }
            Ok(found)
        }
        .await;
        let _ = self.inner.stream.delete_consumer(&name).await;
        let mut found = listed?;
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }
}

enum Expect {
    /// Whatever is there (or nothing).
    Any,
    /// Nothing live.
    Absent,
    /// The live object with this ETag (its nuid).
    Tag(String),
}

/// The chunks of one object being written: filled to [`CHUNK`], published
/// with up to [`IN_FLIGHT`] awaiting their acks.
struct ChunkWriter {
    store: NatsStore,
    nuid: String,
    subject: String,
    buffer: BytesMut,
    acks: std::collections::VecDeque<PublishAckFuture>,
    size: usize,
    chunks: usize,
    digest: Sha256,
}

impl ChunkWriter {
    fn new(store: NatsStore) -> Self {
        let nuid = uuid::Uuid::now_v7().simple().to_string();
        let subject = store.chunk_subject(&nuid);
        Self {
            store,
            nuid,
            subject,
            buffer: BytesMut::new(),
            acks: Default::default(),
            size: 0,
            chunks: 0,
            digest: Sha256::new(),
        }
    }

    async fn write(&mut self, mut data: Bytes) -> object_store::Result<()> {
        while !data.is_empty() {
            if self.buffer.is_empty() && data.len() >= CHUNK {
                let chunk = data.split_to(CHUNK);
                self.publish(chunk).await?;
                continue;
            }
            let take = (CHUNK - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data.split_to(take));
            if self.buffer.len() == CHUNK {
                let chunk = self.buffer.split().freeze();
                self.publish(chunk).await?;
            }
        }
        Ok(())
    }

    async fn publish(&mut self, chunk: Bytes) -> object_store::Result<()> {
        if self.chunks >= MAX_CHUNKS {
            return Err(generic(format!(
                "an object of more than {MAX_CHUNKS} chunks of {CHUNK} bytes"
            )));
        }
        self.digest.update(&chunk);
        self.size += chunk.len();
        self.chunks += 1;
        let ack = self
            .store
            .inner
            .js
            .publish(self.subject.clone(), chunk)
            .await
            .map_err(generic)?;
        self.acks.push_back(ack);
        if self.acks.len() >= IN_FLIGHT
            && let Some(ack) = self.acks.pop_front()
        {
            ack.await.map_err(generic)?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> object_store::Result<()> {
        if !self.buffer.is_empty() {
            let chunk = self.buffer.split().freeze();
            self.publish(chunk).await?;
        }
        while let Some(ack) = self.acks.pop_front() {
            ack.await.map_err(generic)?;
        }
        Ok(())
    }

    async fn abort(&mut self) {
        // Let what was sent land before purging it.
        while let Some(ack) = self.acks.pop_front() {
            let _ = ack.await;
        }
        self.store.purge_chunks(&self.nuid).await;
    }

    fn info(&self, location: &Path, attributes: &Attributes) -> ObjectInfo {
        let digest = self.digest.clone().finalize();
        ObjectInfo {
            name: location.to_string(),
            description: None,
            metadata: attributes_to_metadata(attributes),
            headers: None,
            options: Some(ObjectOptions {
                link: None,
                max_chunk_size: Some(CHUNK),
            }),
            bucket: self.store.inner.bucket.clone(),
            nuid: self.nuid.clone(),
            size: self.size,
            chunks: self.chunks,
            modified: None,
            digest: Some(format!("SHA-256={}", URL_SAFE.encode(digest))),
            deleted: false,
        }
    }
}

impl fmt::Display for NatsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NatsStore({})", self.inner.bucket)
    }
}

impl fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsStore")
            .field("bucket", &self.inner.bucket)
            .finish()
    }
}

#[async_trait]
impl ObjectStore for NatsStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let expect = match opts.mode {
            PutMode::Overwrite => Expect::Any,
            PutMode::Create => Expect::Absent,
            PutMode::Update(version) => {
                Expect::Tag(
                    version
                        .e_tag
                        .ok_or_else(|| object_store::Error::Precondition {
                            path: location.to_string(),
                            source: "an update names the ETag it replaces".into(),
                        })?,
                )
            }
        };
        self.write(location, payload, &opts.attributes, expect)
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(Upload {
            store: self.clone(),
            location: location.clone(),
            attributes: opts.attributes,
            writer: Arc::new(Mutex::new(Some(ChunkWriter::new(self.clone())))),
            previous: None,
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let current = self.live(location).await?;
        if options.version.is_some() {
            return Err(object_store::Error::NotImplemented {
                operation: "get_opts with a version".into(),
                implementer: "NatsStore (older versions are not kept)".into(),
            });
        }
        let meta = self.meta(location, &current);
        options.check_preconditions(&meta)?;
        let range = match &options.range {
            Some(range) => range
                .as_range(meta.size)
                .map_err(|e| object_store::Error::Generic {
                    store: STORE,
                    source: Box::new(e),
                })?,
            None => 0..meta.size,
        };
        let attributes = metadata_to_attributes(&current.info.metadata);
        let payload = if options.head {
            futures::stream::empty().boxed()
        } else {
            self.read(
                self.chunk_subject(&current.info.nuid),
                current.info.chunks,
                range.clone(),
            )
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(payload),
            meta,
            range,
            attributes,
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let store = self.clone();
        locations
            .then(move |location| {
                let store = store.clone();
                async move {
                    let location = location?;
                    store.delete_one(&location).await?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let store = self.clone();
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            let all = store.all(prefix.as_ref()).await?;
            let metas: Vec<_> = all
                .iter()
                .map(|(location, current)| Ok(store.meta(location, current)))
                .collect();
            Ok::<_, object_store::Error>(futures::stream::iter(metas))
        })
        .map(|listed| match listed {
            Ok(metas) => metas.boxed(),
            Err(e) => futures::stream::once(async { Err(e) }).boxed(),
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let root = Path::default();
        let base = prefix.unwrap_or(&root);
        let mut common_prefixes = BTreeSet::new();
        let mut objects = Vec::new();
        for (location, current) in self.all(prefix).await? {
            let Some(mut parts) = location.prefix_match(base) else {
                continue;
            };
            let Some(first) = parts.next() else {
                continue;
            };
            if parts.next().is_some() {
                common_prefixes.insert(base.clone().join(first));
            } else {
                objects.push(self.meta(&location, &current));
            }
        }
        Ok(ListResult {
            common_prefixes: common_prefixes.into_iter().collect(),
            objects,
        })
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let source = self.live(from).await?;
        let expect = match options.mode {
            CopyMode::Overwrite => Expect::Any,
            CopyMode::Create => Expect::Absent,
        };
        if matches!(expect, Expect::Absent) && self.live(to).await.is_ok() {
            return Err(object_store::Error::AlreadyExists {
                path: to.to_string(),
                source: "the object exists".into(),
            });
        }
        let attributes = metadata_to_attributes(&source.info.metadata);
        let mut bytes = self.read(
            self.chunk_subject(&source.info.nuid),
            source.info.chunks,
            0..source.info.size as u64,
        );
        let mut writer = ChunkWriter::new(self.clone());
        let copied = async {
            while let Some(chunk) = bytes.next().await {
                writer.write(chunk?).await?;
            }
            writer.finish().await
        }
        .await;
        if let Err(e) = copied {
            writer.abort().await;
            return Err(e);
        }
        let info = writer.info(to, &attributes);
        let nuid = info.nuid.clone();
        if let Err(e) = self.describe(to, info, expect).await {
            self.purge_chunks(&nuid).await;
            return Err(e);
        }
        Ok(())
    }
}

impl NatsStore {
    async fn delete_one(&self, location: &Path) -> object_store::Result<()> {
        for _ in 0..DESCRIBE_ATTEMPTS {
            let Some(current) = self.current(location).await? else {
                return Ok(());
            };
            if current.info.deleted {
                return Ok(());
            }
            let mut tombstone = current.info.clone();
            tombstone.deleted = true;
            tombstone.size = 0;
            tombstone.chunks = 0;
            if self
                .publish_description(location, &mut tombstone, current.seq)
                .await?
            {
                self.retire_chunks(current.info.nuid);
                return Ok(());
            }
        }
        Err(generic(format!(
            "{location}: other writers kept replacing it"
        )))
    }
}

/// A multipart upload: each part's task publishes its chunks once the part
/// before it has, so the chunks follow the order the parts were handed over
/// whatever order their futures are polled in.
struct Upload {
    store: NatsStore,
    location: Path,
    attributes: Attributes,
    writer: Arc<Mutex<Option<ChunkWriter>>>,
    /// Done when the last part handed over is written.
    previous: Option<oneshot::Receiver<()>>,
}

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upload")
            .field("location", &self.location)
            .finish()
    }
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let (done, next) = oneshot::channel();
        let previous = self.previous.replace(next);
        let writer = self.writer.clone();
        let task = tokio::spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let mut writer = writer.lock().await;
            let writer = writer
                .as_mut()
                .ok_or_else(|| generic("the upload is over"))?;
            for bytes in data {
                writer.write(bytes).await?;
            }
            let _ = done.send(());
            Ok(())
        });
        Box::pin(async move { task.await.map_err(generic)? })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        if let Some(previous) = self.previous.take() {
            let _ = previous.await;
        }
        let Some(mut writer) = self.writer.lock().await.take() else {
            return Err(generic("the upload is over"));
        };
        if let Err(e) = writer.finish().await {
            writer.abort().await;
            return Err(e);
        }
        let info = writer.info(&self.location, &self.attributes);
        let described = self.store.describe(&self.location, info, Expect::Any).await;
        if described.is_err() {
            self.store.purge_chunks(&writer.nuid).await;
        }
        described
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        if let Some(mut writer) = self.writer.lock().await.take() {
            writer.abort().await;
        }
        Ok(())
    }
}

fn attributes_to_metadata(attributes: &Attributes) -> HashMap<String, String> {
    attributes
        .iter()
        .filter_map(|(key, value)| {
            let key = match key {
                Attribute::ContentDisposition => "content-disposition".to_owned(),
                Attribute::ContentEncoding => "content-encoding".to_owned(),
                Attribute::ContentLanguage => "content-language".to_owned(),
                Attribute::ContentType => "content-type".to_owned(),
                Attribute::CacheControl => "cache-control".to_owned(),
                Attribute::StorageClass => "storage-class".to_owned(),
                Attribute::Metadata(name) => {
                    return Some((
                        format!("{USER_METADATA_PREFIX}{name}"),
                        value.as_ref().to_owned(),
                    ));
                }
                _ => return None,
            };
            Some((
                format!("{ATTRIBUTE_PREFIX}{key}"),
                value.as_ref().to_owned(),
            ))
        })
        .collect()
}

fn metadata_to_attributes(metadata: &HashMap<String, String>) -> Attributes {
    let mut attributes = Attributes::new();
    for (key, value) in metadata {
        let attribute = if let Some(name) = key.strip_prefix(USER_METADATA_PREFIX) {
            Attribute::Metadata(name.to_owned().into())
        } else {
            match key.strip_prefix(ATTRIBUTE_PREFIX) {
                Some("content-disposition") => Attribute::ContentDisposition,
                Some("content-encoding") => Attribute::ContentEncoding,
                Some("content-language") => Attribute::ContentLanguage,
                Some("content-type") => Attribute::ContentType,
                Some("cache-control") => Attribute::CacheControl,
                Some("storage-class") => Attribute::StorageClass,
                _ => continue,
            }
        };
        attributes.insert(attribute, AttributeValue::from(value.clone()));
    }
    attributes
}

fn to_chrono(at: time::OffsetDateTime) -> chrono::DateTime<chrono::Utc> {
    let nanos = i64::try_from(at.unix_timestamp_nanos()).unwrap_or_default();
    chrono::DateTime::from_timestamp_nanos(nanos)
}

fn generic(
    e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: e.into(),
    }
}

/// The next chunk of a read, or an error when none comes in
/// [`CHUNK_WAIT`] (its object was purged under the read).
async fn next_chunk(
    messages: &mut async_nats::jetstream::consumer::pull::Ordered,
) -> object_store::Result<async_nats::jetstream::Message> {
    match tokio::time::timeout(CHUNK_WAIT, messages.next()).await {
        Ok(Some(message)) => message.map_err(generic),
        Ok(None) | Err(_) => Err(gone()),
    }
}

fn gone() -> object_store::Error {
    generic("the object's chunks are gone: it was replaced or deleted long before this read")
}

fn not_found(location: &Path) -> object_store::Error {
    object_store::Error::NotFound {
        path: location.to_string(),
        source: "no such object".into(),
    }
}
