//! The files service: its state, its endpoints (`im.v1.file.*`) and the
//! sweep of expired uploads.
//!
//! An upload's bytes arrive as writes at its offset (the edge turns a tus
//! PATCH into writes of at most [`MAX_CHUNK`]); each write is stored as a
//! part of its own in the object store (`parts/<upload_id>/<offset>`) and
//! recorded before the upload's offset moves, so an upload survives any
//! instance and resumes from its last stored part. When the last byte
//! comes, the parts' SHA-256 (kept running by the instance that saw every
//! write, else read back) names the content: if those bytes are stored
//! already the new parts go, else they become the content, read in place
//! (never copied). The type is sniffed from the first bytes, never taken
//! from the client.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use shared::db::{self, AnyPool};
use shared::endpoint::Server;
use shared::endpoint::endpoints::{
    FileDescribe, FileInfo, FileRead, FileUploadCreate, FileUploadDelete, FileUploadStatus,
    FileUploadWrite, MessageFileAccess, MessageFilesUsed, ProfileAvatarsUsed,
};
use shared::ids::now_ms;
use shared::proto::file as pb;
use shared::rpc::Identity;
use shared::service::StartError;
use shared::sync::KeyLocks;
use shared::{Nats, RpcError};
use tokio_util::sync::CancellationToken;

use crate::store::{self, FileRow, UploadRow};
use crate::{Config, backend, media};

/// The most bytes one write or read carries.
pub const MAX_CHUNK: usize = 512 * 1024;
/// How many first bytes the type is sniffed from.
const SNIFF_BYTES: usize = 8192;
/// Files looked at per round of the sweep of unused files.
const UNUSED_PER_ROUND: i64 = 200;
/// Running digests kept at most (each about 8 KiB); uploads past it are
/// read back when they complete.
const MAX_RUNNING_DIGESTS: usize = 4096;
/// How many media are decoded at once.
const MEDIA_AT_ONCE: usize = 2;
/// The most files one describe asks about.
const MAX_DESCRIBE: usize = 16;
/// The longest file name, in characters.
const MAX_NAME_CHARS: usize = 255;

struct State {
    config: Config,
    pool: AnyPool,
    bytes: backend::Store,
    /// One write at a time per upload in this instance (the conditional
    /// update of its offset orders writers across instances).
    uploads: KeyLocks,
    /// Asks the messages service who may read a file through a message.
    caller: shared::rpc::Caller,
    /// Media decoded at once (each may take a few hundred MB).
    media: tokio::sync::Semaphore,
    /// The digests of the uploads this instance has seen every write of.
    digests: std::sync::Mutex<HashMap<String, Running>>,
}

/// An upload's digest so far, and its first bytes.
struct Running {
    offset: i64,
    digest: Sha256,
    head: Vec<u8>,
    /// When a write last fed it (the sweep drops it a day later: the upload
    /// was finished by another instance, or abandoned).
    touched_ms: i64,
}

impl Default for Running {
    fn default() -> Self {
        Self {
            offset: 0,
            digest: Sha256::new(),
            head: Vec::with_capacity(SNIFF_BYTES),
            touched_ms: now_ms(),
        }
    }
}

/// Runs the files service until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    nats: Nats,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    config.validate()?;
    let pool = db::connect(&config.database_url, 8, &store::MIGRATOR).await?;
    let bytes = backend::open(
        &config.store_url,
        nats.jetstream.clone(),
        config.store_replicas,
        &config.store_options,
    )
    .await
    .map_err(|e| StartError::setup("the files store", e))?;
    let state = Arc::new(State {
        config,
        pool,
        bytes,
        uploads: KeyLocks::default(),
        caller: nats.caller(),
        media: tokio::sync::Semaphore::new(MEDIA_AT_ONCE),
        digests: Default::default(),
    });
    let server = Server::start(
        &nats.client,
        crate::MICRO_NAME,
        "natter files: uploads and downloads",
        state.clone(),
        shutdown.clone(),
    )
    .await?
    .serve::<FileUploadCreate, _, _>(32, State::create_upload)
    .serve::<FileUploadStatus, _, _>(64, State::upload_status)
    .serve::<FileUploadWrite, _, _>(32, State::write)
    .serve::<FileUploadDelete, _, _>(16, State::delete_upload)
    .serve::<FileInfo, _, _>(64, State::info)
    .serve::<FileRead, _, _>(64, State::read)
    .serve::<FileDescribe, _, _>(64, State::describe)
    .listen()
    .await?;
    tracing::info!("files service ready");
    let every = Duration::from_secs(state.config.sweep_interval_secs);
    let sweep = shared::service::every(every, shutdown, || {
        let state = state.clone();
        async move {
            state.sweep().await;
            state.sweep_unused().await;
        }
    });
    tokio::join!(server.run(), sweep);
    tracing::info!("files service stopped");
    Ok(())
}

impl State {
    async fn create_upload(
        self: Arc<Self>,
        me: Identity,
        input: pb::CreateUploadRequest,
    ) -> Result<pb::Upload, RpcError> {
        let name = valid_name(&input.name)?;
        let limit = self.config.limit(&input.kind).ok_or_else(|| {
            RpcError::bad_request("kind is one of file, image, voice, video, avatar")
        })?;
        if input.length == 0 && input.kind != "file" {
            return Err(RpcError::bad_request(format!(
                "a {} has at least one byte",
                input.kind
            )));
        }
        if input.length > limit {
            return Err(RpcError::too_large(format!(
                "a {} is at most {limit} bytes",
                input.kind
            )));
        }
        let quota = self.config.quota_bytes_per_user;
        if quota > 0 {
            let used = store::used_bytes(&self.pool, &me.user_id).await?;
            if (used as u64).saturating_add(input.length) > quota {
                return Err(RpcError::too_large(format!(
                    "your files take {used} of your {quota} bytes: this one does not fit"
                )));
            }
        }
        let now = now_ms();
        let expiry = i64::try_from(self.config.upload_expiry_secs * 1000).unwrap_or(i64::MAX);
        let row = UploadRow {
            file_id: shared::ids::new_id(),
            owner_id: me.user_id.to_string(),
            name,
            kind: input.kind,
            length: to_i64(input.length)?,
            received: 0,
            created_at_ms: now,
            expires_at_ms: now.saturating_add(expiry),
        };
        store::insert_upload(&self.pool, &row).await?;
        if row.length == 0 {
            // An empty file is complete as soon as it begins.
            return Ok(done_reply(&self.compose(&row).await?));
        }
        Ok(upload_reply(&row, None))
    }

    /// The caller's upload, in progress or done.
    async fn upload_status(
        self: Arc<Self>,
        me: Identity,
        input: pb::UploadRef,
    ) -> Result<pb::Upload, RpcError> {
        let id = file_id(&input.file_id)?.to_owned();
        if let Some(row) = store::upload(&self.pool, &id).await? {
            if row.owner_id != me.user_id.as_str() || row.expires_at_ms <= now_ms() {
                return Err(no_upload());
            }
            if row.received < row.length {
                return Ok(upload_reply(&row, None));
            }
            // Every byte is stored: its last write is making the file (and
            // holds the upload), or failed to (a store or database error):
            // make it now, from the row as it is once the upload is ours.
            let _held = self.uploads.lock([id.as_str()]).await;
            if let Some(row) = store::upload(&self.pool, &id).await? {
                return self.finish(&row).await.map(|file| done_reply(&file));
            }
            // Made meanwhile: the file answers.
        }
        match store::file(&self.pool, &id).await? {
            Some(file) if file.owner_id == me.user_id.as_str() => Ok(done_reply(&file)),
            _ => Err(no_upload()),
        }
    }

    async fn write(
        self: Arc<Self>,
        me: Identity,
        input: pb::WriteRequest,
    ) -> Result<pb::Upload, RpcError> {
        let id = file_id(&input.file_id)?.to_owned();
        if input.data.is_empty() || input.data.len() > MAX_CHUNK {
            return Err(RpcError::bad_request(format!(
                "a write carries 1 to {MAX_CHUNK} bytes"
            )));
        }
        let _held = self.uploads.lock([id.as_str()]).await;
        let Some(mut row) = store::upload(&self.pool, &id).await? else {
            // Bytes past the end of a finished upload.
            return match store::file(&self.pool, &id).await? {
                Some(file) if file.owner_id == me.user_id.as_str() => {
                    Err(RpcError::conflict(format!(
                        "the upload is complete at offset {}",
                        done_reply(&file).offset
                    )))
                }
                _ => Err(no_upload()),
            };
        };
        if row.owner_id != me.user_id.as_str() {
            return Err(no_upload());
        }
        if row.expires_at_ms <= now_ms() {
            return Err(RpcError::not_found("the upload expired"));
        }
        if row.received == row.length {
            return self.finish(&row).await.map(|file| done_reply(&file));
        }
        let offset = to_i64(input.offset)?;
        if offset != row.received {
            return Err(RpcError::conflict(format!(
                "the upload is at offset {}",
                row.received
            )));
        }
        let end = offset.saturating_add(input.data.len() as i64);
        if end > row.length {
            return Err(RpcError::bad_request(format!(
                "the upload is {} bytes long",
                row.length
            )));
        }
        let data = input.data;
        // A key of this write's own: a write that loses the race for this
        // offset (another instance, a retry) never overwrites the winner's.
        let key = part_key(&id, offset);
        let put = self
            .bytes
            .objects
            .put(&key, PutPayload::from(data.clone()))
            .await
            .map_err(|e| shared::rpc::internal("storing a part", e))?;
        let advanced = store::advance_upload(
            &self.pool,
            &id,
            offset,
            end,
            key.as_ref(),
            put.e_tag.as_deref(),
        )
        .await?;
        if !advanced {
            // Another writer moved it meanwhile: the client asks again.
            self.delete_objects(vec![key.to_string()]).await;
            return Err(RpcError::conflict("the upload moved; ask for its offset"));
        }
        self.hash(&id, offset, &data);
        row.received = end;
        if end < row.length {
            return Ok(upload_reply(&row, None));
        }
        self.finish(&row).await.map(|file| done_reply(&file))
    }

    /// Makes a complete upload its file; an upload whose bytes can never
    /// be its kind goes (the client starts again with the right kind).
    async fn finish(&self, row: &UploadRow) -> Result<FileRow, RpcError> {
        match self.compose(row).await {
            Err(e) if e.code == shared::rpc::ErrorCode::BadRequest => {
                self.forget_upload(&row.file_id, None).await?;
                Err(e)
            }
            done => done,
        }
    }

    /// Forgets an unfinished upload (one expired by `expired_by`, when
    /// given) and deletes its parts.
    async fn forget_upload(&self, id: &str, expired_by: Option<i64>) -> Result<bool, RpcError> {
        shared::sync::lock(&self.digests).remove(id);
        match store::delete_upload(&self.pool, id, expired_by).await? {
            Some(keys) => {
                self.delete_objects(keys).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Feeds `data`, written at `offset`, to the upload's running digest
    /// (kept by this instance for the writes it serves in order; a write it
    /// did not see leaves the digest to be read back at the end).
    fn hash(&self, id: &str, offset: i64, data: &[u8]) {
        let mut running = shared::sync::lock(&self.digests);
        if offset == 0 {
            if running.len() >= MAX_RUNNING_DIGESTS {
                return;
            }
            running.insert(id.to_owned(), Running::default());
        }
        match running.get_mut(id) {
            Some(r) if r.offset == offset => {
                r.digest.update(data);
                let take = SNIFF_BYTES.saturating_sub(r.head.len()).min(data.len());
                r.head.extend_from_slice(&data[..take]);
                r.offset += data.len() as i64;
                r.touched_ms = now_ms();
            }
            Some(_) => {
                running.remove(id);
            }
            None => {}
        }
    }

    /// Turns a complete upload into its file: its parts become the content,
    /// or are deleted when the same bytes are stored already. Media are
    /// read first (an image's size, thumbnails and bytes without metadata,
    /// a recording's duration); media that cannot be read are refused.
    async fn compose(&self, upload: &UploadRow) -> Result<FileRow, RpcError> {
        let id = &upload.file_id;
        let running = shared::sync::lock(&self.digests).remove(id);
        let (digest, head) = match running {
            Some(r) if r.offset == upload.length => (r.digest, r.head),
            // Written through other instances too: read it back.
            _ => self.digest_parts(id, upload.length).await?,
        };
        let media_type = media_type_of(&upload.kind, sniff(&head));
        check_kind(&upload.kind, &media_type)?;
        let mut file = FileRow {
            file_id: id.clone(),
            owner_id: upload.owner_id.clone(),
            name: upload.name.clone(),
            kind: upload.kind.clone(),
            sha256: hex(&digest.finalize()),
            created_at_ms: now_ms(),
            media_type,
            size: upload.length,
            parts_of: id.clone(),
            width: 0,
            height: 0,
            duration_ms: 0,
            uploaded: upload.length,
        };
        let mut cleaned = None;
        let mut thumbnails = Vec::new();
        // The thumbnails' objects written, to delete where not recorded.
        let mut made = Vec::new();
        match upload.kind.as_str() {
            "image" | "avatar" => {
                let bytes = self.content(id, upload.length).await?;
                let picture = self.blocking(move || media::picture(&bytes)).await?;
                file.width = i64::from(picture.width);
                file.height = i64::from(picture.height);
                if let Some(bytes) = picture.cleaned {
                    // Others download it without its metadata: these bytes
                    // are the content (and name it), one part of their own.
                    file.sha256 = hex(&Sha256::digest(&bytes));
                    file.size = bytes.len() as i64;
                    let key = Path::from(format!("parts/{id}/clean-{}", uuid::Uuid::now_v7()));
                    let put = self
                        .bytes
                        .objects
                        .put(&key, PutPayload::from(bytes))
                        .await
                        .map_err(store_error)?;
                    cleaned = Some((key.to_string(), put.e_tag));
                }
                for t in picture.thumbnails {
                    let key = thumbnail_key(&file.sha256, t.variant.name);
                    made.push(key.clone());
                    let size = t.jpeg.len() as i64;
                    self.bytes
                        .objects
                        .put(&Path::from(key.as_str()), PutPayload::from(t.jpeg))
                        .await
                        .map_err(store_error)?;
                    thumbnails.push(store::ThumbnailRow {
                        variant: t.variant.name.to_owned(),
                        object_key: key,
                        size,
                        width: i64::from(t.width),
                        height: i64::from(t.height),
                    });
                }
            }
            "voice" => {
                let bytes = self.content(id, upload.length).await?;
                let ms = self.blocking(move || media::duration_ms(bytes)).await?;
                file.duration_ms = i64::try_from(ms).unwrap_or(i64::MAX);
            }
            "video" if media::reads_video(&file.media_type) => {
                // Read as it streams past: a video may be large.
                let content = self.streamed(id, upload.length).await?;
                let media_type = file.media_type.clone();
                // What the container does not tell (or a container that
                // cannot be read) the message's body may say.
                match self
                    .blocking(move || media::video(&media_type, content))
                    .await
                {
                    Ok(video) => {
                        file.width = i64::from(video.width);
                        file.height = i64::from(video.height);
                        file.duration_ms = i64::try_from(video.duration_ms).unwrap_or(i64::MAX);
                    }
                    Err(e) => tracing::warn!(error = %e.message, "a video's container not read"),
                }
            }
            _ => {}
        }
        let recorded = cleaned
            .as_ref()
            .map(|(key, e_tag)| (key.as_str(), e_tag.as_deref()));
        let completed = store::complete_upload(&self.pool, &file, recorded, &thumbnails).await?;
        let cleaned = cleaned.map(|(key, _)| key);
        match completed {
            store::Completed::Kept { obsolete, unused } => {
                self.delete_objects(obsolete.into_iter().chain(unused).collect())
                    .await;
            }
            // The same bytes are stored: this copy goes.
            store::Completed::Duplicate { parts, unused } => {
                let gone = parts.into_iter().chain(cleaned).chain(unused);
                self.delete_objects(gone.collect()).await;
            }
            store::Completed::Gone => {
                self.delete_objects(cleaned.into_iter().chain(made).collect())
                    .await;
                return Err(no_upload());
            }
        }
        store::file(&self.pool, id)
            .await?
            .ok_or_else(RpcError::internal)
    }

    /// The bytes `range` of a stored part, streamed.
    async fn read_part(
        &self,
        part: &store::PartRow,
        range: std::ops::Range<u64>,
    ) -> Result<BoxStream<'static, object_store::Result<Bytes>>, RpcError> {
        self.bytes.read_part(part, range).await.map_err(store_error)
    }

    /// The whole content of a complete upload, in memory (media only: the
    /// kinds' limits bound it).
    async fn content(&self, id: &str, length: i64) -> Result<Bytes, RpcError> {
        let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        for part in store::parts(&self.pool, id, 0, length).await? {
            let mut data = self.read_part(&part, 0..part.size as u64).await?;
            while let Some(piece) = data.try_next().await.map_err(store_error)? {
                bytes.extend_from_slice(&piece);
            }
        }
        Ok(Bytes::from(bytes))
    }

    /// The content of a complete upload as a blocking reader, fed from its
    /// parts a few chunks ahead by a task that stops when the reader goes.
    async fn streamed(&self, id: &str, length: i64) -> Result<media::Streamed, RpcError> {
        let parts = store::parts(&self.pool, id, 0, length).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let bytes = self.bytes.clone();
        tokio::spawn(async move {
            for part in parts {
                let mut chunks = match bytes.read_part(&part, 0..part.size as u64).await {
                    Ok(chunks) => chunks,
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e))).await;
                        return;
                    }
                };
                while let Some(chunk) = chunks.next().await {
                    let chunk = chunk.map_err(std::io::Error::other);
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(media::Streamed::new(rx))
    }

    /// Runs media work on a blocking thread, a few at a time; media that
    /// cannot be read are a bad request.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, media::MediaError> + Send + 'static,
    ) -> Result<T, RpcError> {
        let _permit = self
            .media
            .acquire()
            .await
            .map_err(|e| shared::rpc::internal("media work", e))?;
        match tokio::task::spawn_blocking(work).await {
            Ok(done) => done.map_err(|e| RpcError::bad_request(e.to_string())),
            // A decoder that panics on these bytes would panic again: they
            // are refused like bytes that cannot be read.
            Err(e) if e.is_panic() => {
                tracing::warn!("a media decoder panicked");
                Err(RpcError::bad_request("the media cannot be read"))
            }
            Err(e) => Err(shared::rpc::internal("media work", e)),
        }
    }

    /// The digest and first bytes of an upload's parts, read back.
    async fn digest_parts(&self, id: &str, length: i64) -> Result<(Sha256, Vec<u8>), RpcError> {
        let mut digest = Sha256::new();
        let mut head = Vec::with_capacity(SNIFF_BYTES);
        let mut size = 0i64;
        for part in store::parts(&self.pool, id, 0, length).await? {
            let mut stream = self.read_part(&part, 0..part.size as u64).await?;
            while let Some(bytes) = stream.try_next().await.map_err(store_error)? {
                digest.update(&bytes);
                size += bytes.len() as i64;
                let take = SNIFF_BYTES.saturating_sub(head.len()).min(bytes.len());
                head.extend_from_slice(&bytes[..take]);
            }
        }
        if size != length {
            return Err(shared::rpc::internal(
                "composing an upload",
                format!("{size} of {length} bytes found"),
            ));
        }
        Ok((digest, head))
    }

    /// Deletes objects nothing reads any more (their rows are gone).
    async fn delete_objects(&self, keys: Vec<String>) {
        for key in keys {
            if let Err(e) = self.bytes.objects.delete(&Path::from(key.as_str())).await {
                tracing::warn!(error = %e, key, "part not deleted");
            }
        }
    }

    async fn delete_upload(
        self: Arc<Self>,
        me: Identity,
        input: pb::UploadRef,
    ) -> Result<pb::DeleteUploadReply, RpcError> {
        let id = file_id(&input.file_id)?.to_owned();
        let _held = self.uploads.lock([id.as_str()]).await;
        match store::upload(&self.pool, &id).await? {
            Some(row) if row.owner_id == me.user_id.as_str() => {}
            _ => return Err(no_upload()),
        }
        if !self.forget_upload(&id, None).await? {
            // Finished or gone meanwhile.
            return Err(no_upload());
        }
        Ok(pb::DeleteUploadReply {})
    }

    /// A file the caller may read: its owner's, or any avatar.
    /// Anyone else's through a message they can read, which the messages
    /// service (the owner of conversations) decides on each call: a
    /// removal or a recall applies to the next read.
    async fn readable(&self, me: &Identity, id: &str) -> Result<FileRow, RpcError> {
        let Some(file) = store::file(&self.pool, id).await? else {
            return Err(no_file());
        };
        if file.owner_id == me.user_id.as_str() || file.kind == "avatar" {
            return Ok(file);
        }
        let access = self
            .caller
            .call_to::<MessageFileAccess>(&shared::proto::message::FileAccessRequest {
                user_id: me.user_id.to_string(),
                file_id: file.file_id.clone(),
            })
            .await?;
        if access.readable {
            Ok(file)
        } else {
            Err(no_file())
        }
    }

    /// What the given files are (for a service: the messages service
    /// checks the files a send references). Ids of no file are left out.
    async fn describe(
        self: Arc<Self>,
        _: (),
        input: pb::DescribeRequest,
    ) -> Result<pb::DescribeReply, RpcError> {
        if input.file_ids.len() > MAX_DESCRIBE {
            return Err(RpcError::bad_request(format!(
                "at most {MAX_DESCRIBE} files at a time"
            )));
        }
        let mut files = Vec::new();
        for id in &input.file_ids {
            if let Ok(id) = file_id(id)
                && let Some(file) = store::file(&self.pool, id).await?
            {
                files.push(self.described(&file).await?);
            }
        }
        Ok(pb::DescribeReply { files })
    }

    async fn info(
        self: Arc<Self>,
        me: Identity,
        input: pb::FileRef,
    ) -> Result<pb::FileInfo, RpcError> {
        let id = file_id(&input.file_id)?;
        let file = self.readable(&me, id).await?;
        self.described(&file).await
    }

    async fn read(
        self: Arc<Self>,
        me: Identity,
        input: pb::ReadRequest,
    ) -> Result<pb::ReadReply, RpcError> {
        let id = file_id(&input.file_id)?;
        let length = input.length as usize;
        if length == 0 || length > MAX_CHUNK {
            return Err(RpcError::bad_request(format!(
                "a read asks for 1 to {MAX_CHUNK} bytes"
            )));
        }
        let file = self.readable(&me, id).await?;
        if !input.variant.is_empty() {
            return self
                .read_thumbnail(&file, &input.variant, input.offset, length)
                .await;
        }
        let size = file.size as u64;
        let start = input.offset.min(size);
        let end = start.saturating_add(length as u64).min(size);
        // One part's range is answered as read (no copy); a read across
        // parts joins them.
        let mut pieces = Vec::new();
        for part in store::parts(&self.pool, &file.parts_of, start as i64, end as i64).await? {
            let (first, last) = (part.start as u64, (part.start + part.size) as u64);
            let range = start.max(first) - first..end.min(last) - first;
            let bytes = self
                .bytes
                .read_part_bytes(&part, range)
                .await
                .map_err(store_error)?;
            pieces.push(bytes);
        }
        let data = backend::joined(pieces);
        if data.len() as u64 != end - start {
            return Err(shared::rpc::internal(
                "reading a file",
                format!("{} of {} bytes found", data.len(), end - start),
            ));
        }
        Ok(pb::ReadReply {
            file: Some(file_info(&file)),
            offset: start,
            data,
        })
    }

    /// Bytes of a thumbnail; the reply describes the thumbnail.
    async fn read_thumbnail(
        &self,
        file: &FileRow,
        variant: &str,
        offset: u64,
        length: usize,
    ) -> Result<pb::ReadReply, RpcError> {
        let thumbnail = store::thumbnails(&self.pool, &file.sha256)
            .await?
            .into_iter()
            .find(|t| t.variant == variant)
            .ok_or_else(|| RpcError::not_found("no such thumbnail"))?;
        let size = thumbnail.size as u64;
        let start = offset.min(size);
        let end = start.saturating_add(length as u64).min(size);
        let data = if start == end {
            Bytes::new()
        } else {
            self.bytes
                .objects
                .get_range(&Path::from(thumbnail.object_key.as_str()), start..end)
                .await
                .map_err(store_error)?
        };
        let stem = file
            .name
            .rsplit_once('.')
            .map_or(file.name.as_str(), |(stem, _)| stem);
        Ok(pb::ReadReply {
            file: Some(pb::FileInfo {
                name: format!("{stem}-{variant}.jpg"),
                media_type: "image/jpeg".into(),
                size,
                sha256: format!("{}-{variant}", file.sha256),
                width: u32::try_from(thumbnail.width).unwrap_or(0),
                height: u32::try_from(thumbnail.height).unwrap_or(0),
                duration_ms: 0,
                ..file_info(file)
            }),
            offset: start,
            data,
        })
    }

    /// What a file is, with its thumbnails.
    async fn described(&self, file: &FileRow) -> Result<pb::FileInfo, RpcError> {
        let mut info = file_info(file);
        if matches!(file.kind.as_str(), "image" | "avatar") {
            info.thumbnails = store::thumbnails(&self.pool, &file.sha256)
                .await?
                .iter()
                .map(thumbnail_info)
                .collect();
        }
        Ok(info)
    }

    /// Deletes files nothing has used for `unreferenced_file_secs` (no
    /// message that is not recalled, no profile for an avatar), with their
    /// bytes when no other file has them. Which are used is the messages
    /// and social services' answer: when either cannot answer, nothing is
    /// deleted this round.
    async fn sweep_unused(&self) {
        if let Err(e) = self.collect_unused().await {
            tracing::warn!(error = %e.message, "looking for unused files");
        }
    }

    async fn collect_unused(&self) -> Result<(), RpcError> {
        let now = now_ms();
        let grace = i64::try_from(self.config.unreferenced_file_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        let before = now.saturating_sub(grace);
        let candidates =
            store::files_to_check(&self.pool, before, before, UNUSED_PER_ROUND).await?;
        if candidates.is_empty() {
            return Ok(());
        }
        let (avatars, others): (Vec<_>, Vec<_>) = candidates
            .into_iter()
            .partition(|(_, kind)| kind == "avatar");
        let ids = |files: Vec<(String, String)>| -> Vec<String> {
            files.into_iter().map(|(id, _)| id).collect()
        };
        let (avatars, others) = (ids(avatars), ids(others));
        let mut used = Vec::new();
        if !others.is_empty() {
            used.extend(
                self.caller
                    .call_to::<MessageFilesUsed>(&pb::FileIds {
                        file_ids: others.clone(),
                    })
                    .await?
                    .file_ids,
            );
        }
        if !avatars.is_empty() {
            used.extend(
                self.caller
                    .call_to::<ProfileAvatarsUsed>(&pb::FileIds {
                        file_ids: avatars.clone(),
                    })
                    .await?
                    .file_ids,
            );
        }
        store::mark_used(&self.pool, &used, now).await?;
        let used: std::collections::HashSet<String> = used.into_iter().collect();
        for id in others.into_iter().chain(avatars) {
            if used.contains(&id) {
                continue;
            }
            let keys = store::delete_file(&self.pool, &id).await?;
            tracing::info!(file_id = %id, objects = keys.len(), "deleted a file nothing uses");
            self.delete_objects(keys).await;
        }
        Ok(())
    }

    /// Deletes uploads past their expiry, with their parts.
    async fn sweep(&self) {
        let expired = match store::expired_uploads(&self.pool, now_ms(), 100).await {
            Ok(expired) => expired,
            Err(e) => {
                tracing::warn!(error = %e, "listing expired uploads");
                return;
            }
        };
        let now = now_ms();
        let stale = now.saturating_sub(
            i64::try_from(self.config.upload_expiry_secs * 1000).unwrap_or(i64::MAX),
        );
        shared::sync::lock(&self.digests).retain(|_, r| r.touched_ms > stale);
        for id in expired {
            let _held = self.uploads.lock([id.as_str()]).await;
            if let Err(e) = self.forget_upload(&id, Some(now)).await {
                tracing::warn!(error = %e.message, "deleting an expired upload");
            }
        }
    }
}

/// Where one write's bytes go: under its upload, at its offset, with an id
/// of the write's own.
fn part_key(id: &str, offset: i64) -> Path {
    Path::from(format!(
        "parts/{id}/{offset:020}-{}",
        uuid::Uuid::now_v7().simple()
    ))
}

/// A file name a user may give: no path, no control characters.
fn valid_name(name: &str) -> Result<String, RpcError> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(RpcError::bad_request(format!(
            "a file name is 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(RpcError::bad_request(
            "a file name has no '/', '\\' or control characters",
        ));
    }
    Ok(name.to_owned())
}

fn file_id(id: &str) -> Result<&str, RpcError> {
    uuid::Uuid::parse_str(id)
        .map(|_| id)
        .map_err(|_| RpcError::bad_request("file_id is not a file id"))
}

fn to_i64(value: u64) -> Result<i64, RpcError> {
    i64::try_from(value).map_err(|_| RpcError::bad_request("a length or offset out of range"))
}

/// The media type of content that begins with `head`.
fn sniff(head: &[u8]) -> String {
    infer::get(head)
        .map(|t| t.mime_type().to_owned())
        .unwrap_or_else(|| "application/octet-stream".to_owned())
}

/// The sniffed type as a file of `kind` is served: a browser's voice
/// recording is WebM with only audio, which sniffs as video.
fn media_type_of(kind: &str, sniffed: String) -> String {
    if kind == "voice" && sniffed == "video/webm" {
        "audio/webm".to_owned()
    } else {
        sniffed
    }
}

/// Refuses bytes whose type is not the upload's kind.
fn check_kind(kind: &str, media_type: &str) -> Result<(), RpcError> {
    let fits = match kind {
        "image" | "avatar" => media_type.starts_with("image/"),
        "voice" => media_type.starts_with("audio/"),
        "video" => media_type.starts_with("video/"),
        _ => true,
    };
    if fits {
        Ok(())
    } else {
        Err(RpcError::bad_request(format!(
            "the bytes are {media_type}, not a {kind}"
        )))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn upload_reply(row: &UploadRow, file: Option<pb::FileInfo>) -> pb::Upload {
    pb::Upload {
        file_id: row.file_id.clone(),
        name: row.name.clone(),
        kind: row.kind.clone(),
        length: row.length as u64,
        offset: row.received as u64,
        expires_ms: row.expires_at_ms,
        file,
    }
}

fn done_reply(file: &FileRow) -> pb::Upload {
    let length = if file.uploaded > 0 {
        file.uploaded
    } else {
        file.size
    } as u64;
    pb::Upload {
        file_id: file.file_id.clone(),
        name: file.name.clone(),
        kind: file.kind.clone(),
        length,
        offset: length,
        expires_ms: 0,
        file: Some(file_info(file)),
    }
}

/// What a file is, without its thumbnails (see [`State::described`]).
fn file_info(file: &FileRow) -> pb::FileInfo {
    pb::FileInfo {
        file_id: file.file_id.clone(),
        owner_id: file.owner_id.clone(),
        name: file.name.clone(),
        kind: file.kind.clone(),
        media_type: file.media_type.clone(),
        size: file.size as u64,
        sha256: file.sha256.clone(),
        created_at_ms: file.created_at_ms,
        width: u32::try_from(file.width).unwrap_or(0),
        height: u32::try_from(file.height).unwrap_or(0),
        duration_ms: u32::try_from(file.duration_ms).unwrap_or(0),
        thumbnails: Vec::new(),
    }
}

fn thumbnail_info(t: &store::ThumbnailRow) -> pb::Thumbnail {
    pb::Thumbnail {
        variant: t.variant.clone(),
        width: u32::try_from(t.width).unwrap_or(0),
        height: u32::try_from(t.height).unwrap_or(0),
        size: t.size as u64,
    }
}

/// Where an upload's thumbnail of a content is stored: a key of its own,
/// so a second upload of the same bytes never overwrites one being read.
fn thumbnail_key(sha256: &str, variant: &str) -> String {
    format!(
        "thumbs/{sha256}/{variant}-{}",
        uuid::Uuid::now_v7().simple()
    )
}

fn no_file() -> RpcError {
    RpcError::not_found("no such file")
}

fn no_upload() -> RpcError {
    RpcError::not_found("no such upload")
}

fn store_error(e: object_store::Error) -> RpcError {
    shared::rpc::internal("the files store", e)
}
