//! The files service's NATS contract, against a real nats-server and its
//! object store: what it serves, what each endpoint refuses, and uploads
//! written in chunks, resumed, completed, read back and stored once.

use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use shared::endpoint::endpoints::*;
use shared::proto::file as pb;
use shared::rpc::{Caller, ErrorCode, Identity};
use shared::testing::contract::{Running, someone};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

/// Bytes that sniff as a PNG image, `len` long.
fn png(len: usize, seed: u8) -> Vec<u8> {
    let mut bytes = PNG_MAGIC.to_vec();
    bytes.extend((0..len - PNG_MAGIC.len()).map(|i| (i as u8).wrapping_mul(31) ^ seed));
    bytes
}

async fn create(
    caller: &Caller,
    me: &Identity,
    name: &str,
    kind: &str,
    length: usize,
) -> pb::Upload {
    caller
        .call_as::<FileUploadCreate>(
            me,
            &pb::CreateUploadRequest {
                name: name.into(),
                length: length as u64,
                kind: kind.into(),
            },
        )
        .await
        .expect("create an upload")
}

async fn write(
    caller: &Caller,
    me: &Identity,
    upload: &pb::Upload,
    offset: usize,
    data: &[u8],
) -> Result<pb::Upload, shared::RpcError> {
    caller
        .call_as::<FileUploadWrite>(
            me,
            &pb::WriteRequest {
                file_id: upload.file_id.clone(),
                offset: offset as u64,
                data: data.to_vec(),
            },
        )
        .await
}

/// Uploads `bytes` in writes of `chunk` and returns the finished upload.
async fn upload(
    caller: &Caller,
    me: &Identity,
    kind: &str,
    bytes: &[u8],
    chunk: usize,
) -> pb::Upload {
    let mut upload = create(caller, me, "photo.png", kind, bytes.len()).await;
    let mut offset = 0;
    while offset < bytes.len() {
        let end = (offset + chunk).min(bytes.len());
        upload = write(caller, me, &upload, offset, &bytes[offset..end])
            .await
            .expect("write");
        offset = end;
        assert_eq!(upload.offset as usize, offset);
    }
    upload
}

async fn read_all(
    caller: &Caller,
    me: &Identity,
    file_id: &str,
) -> Result<Vec<u8>, shared::RpcError> {
    let mut bytes = Vec::new();
    loop {
        let reply = caller
            .call_as::<FileRead>(
                me,
                &pb::ReadRequest {
                    file_id: file_id.into(),
                    offset: bytes.len() as u64,
                    length: 100_000,
                },
            )
            .await?;
        if reply.data.is_empty() {
            return Ok(bytes);
        }
        bytes.extend_from_slice(&reply.data);
    }
}

/// The parts in the bucket, by name.
async fn stored_parts(store: &files::nats_store::NatsStore) -> Vec<String> {
    let listed: Vec<_> = store
        .list(Some(&Path::from("parts")))
        .try_collect()
        .await
        .expect("list");
    listed.into_iter().map(|m| m.location.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_keeps_its_contract() {
    let files = Running::start(|nats, stop, url| {
        let config = files::Config {
            database_url: url,
            max_image_bytes: 1_000_000,
            ..files::Config::default()
        };
        files::run(config, nats, stop)
    })
    .await;
    let caller = &files.caller;
    shared::assert_contract!(
        caller,
        files::MICRO_NAME,
        FileUploadCreate,
        FileUploadStatus,
        FileUploadWrite,
        FileUploadDelete,
        FileInfo,
        FileRead,
    );

    let me = someone();
    let stranger = someone();
    let bytes = png(700_000, 1);

    // Written in chunks, with a stale offset refused on the way.
    let mut started = create(caller, &me, "假期.png", "image", bytes.len()).await;
    assert_eq!(started.offset, 0);
    started = write(caller, &me, &started, 0, &bytes[..300_000])
        .await
        .expect("first write");
    let stale = write(caller, &me, &started, 0, &bytes[..10])
        .await
        .expect_err("a stale offset");
    assert_eq!(stale.code, ErrorCode::Conflict);
    let past = write(caller, &me, &started, 300_000, &vec![0; 500_000])
        .await
        .expect_err("past the length");
    assert_eq!(past.code, ErrorCode::BadRequest);
    // Someone else's upload is not there for them.
    let theirs = caller
        .call_as::<FileUploadStatus>(
            &stranger,
            &pb::UploadRef {
                file_id: started.file_id.clone(),
            },
        )
        .await
        .expect_err("a stranger's look");
    assert_eq!(theirs.code, ErrorCode::NotFound);
    let intrude = write(
        caller,
        &stranger,
        &started,
        300_000,
        &bytes[300_000..310_000],
    )
    .await
    .expect_err("a stranger's write");
    assert_eq!(intrude.code, ErrorCode::NotFound);
    // Resumed from where it stands.
    let status = caller
        .call_as::<FileUploadStatus>(
            &me,
            &pb::UploadRef {
                file_id: started.file_id.clone(),
            },
        )
        .await
        .expect("status");
    assert_eq!(status.offset, 300_000);
    let done = write(caller, &me, &status, 300_000, &bytes[300_000..])
        .await
        .expect("last write");
    let file = done.file.clone().expect("a finished upload has its file");
    assert_eq!(file.size, bytes.len() as u64);
    assert_eq!(file.media_type, "image/png");
    assert_eq!(file.name, "假期.png");
    assert_eq!(
        read_all(caller, &me, &file.file_id).await.expect("read"),
        bytes
    );
    // A ranged read.
    let middle = caller
        .call_as::<FileRead>(
            &me,
            &pb::ReadRequest {
                file_id: file.file_id.clone(),
                offset: 123_456,
                length: 1000,
            },
        )
        .await
        .expect("a range");
    assert_eq!(middle.data, bytes[123_456..124_456]);
    let unread = read_all(caller, &stranger, &file.file_id)
        .await
        .expect_err("a stranger's read");
    assert_eq!(unread.code, ErrorCode::NotFound);

    // The same bytes again, from someone else: a file of their own, one content.
    let again = upload(caller, &stranger, "image", &bytes, 400_000).await;
    let again = again.file.expect("file");
    assert_ne!(again.file_id, file.file_id);
    assert_eq!(again.sha256, file.sha256);
    let store = files::nats_store::NatsStore::open(
        async_nats::jetstream::new(
            async_nats::connect(files.nats.url())
                .await
                .expect("connect"),
        ),
        "natter_files",
        1,
    )
    .await
    .expect("the bucket");
    // The first upload's two parts are the content; the second's went.
    let stored = stored_parts(&store).await;
    let first = format!("parts/{}/", file.file_id);
    assert_eq!(stored.len(), 2, "one content for two files: {stored:?}");
    assert!(stored.iter().all(|p| p.starts_with(&first)), "{stored:?}");

    // Bytes that are not what the upload said they are.
    let text = b"just some text, not an image".repeat(100);
    let lie = create(caller, &me, "fake.png", "image", text.len()).await;
    let refused = write(caller, &me, &lie, 0, &text)
        .await
        .expect_err("a type lie");
    assert_eq!(refused.code, ErrorCode::BadRequest, "{refused:?}");
    // Anything goes as a plain file, typed by its bytes.
    let plain = upload(caller, &me, "file", &text, 1000)
        .await
        .file
        .expect("file");
    assert_eq!(plain.media_type, "application/octet-stream");

    // Refused before any byte.
    for (name, kind, length, code) in [
        ("big.png", "image", 1_000_001, ErrorCode::TooLarge),
        ("a/b.png", "image", 10, ErrorCode::BadRequest),
        ("..", "file", 10, ErrorCode::BadRequest),
        ("", "file", 10, ErrorCode::BadRequest),
        ("tab\t.txt", "file", 10, ErrorCode::BadRequest),
        ("ok.txt", "sticker", 10, ErrorCode::BadRequest),
        ("ok.png", "image", 0, ErrorCode::BadRequest),
    ] {
        let refused = caller
            .call_as::<FileUploadCreate>(
                &me,
                &pb::CreateUploadRequest {
                    name: name.into(),
                    length,
                    kind: kind.into(),
                },
            )
            .await
            .expect_err(name);
        assert_eq!(refused.code, code, "{name} {kind} {length}");
    }
    let bad_id = caller
        .call_as::<FileInfo>(
            &me,
            &pb::FileRef {
                file_id: "../etc/passwd".into(),
            },
        )
        .await
        .expect_err("a malformed id");
    assert_eq!(bad_id.code, ErrorCode::BadRequest);

    // An empty file is whole from the start.
    let empty = create(caller, &me, "empty.txt", "file", 0).await;
    let empty = empty.file.expect("an empty file is done at once");
    assert_eq!(
        (empty.size, empty.media_type.as_str()),
        (0, "application/octet-stream")
    );
    assert!(
        read_all(caller, &me, &empty.file_id)
            .await
            .expect("read")
            .is_empty()
    );
    // Bytes past the end of a finished upload are refused.
    let past = write(caller, &me, &done, bytes.len(), b"more")
        .await
        .expect_err("past the end");
    assert_eq!(past.code, ErrorCode::Conflict);

    // Terminated: gone, with its parts.
    let dropped = create(caller, &me, "drop.bin", "file", 100).await;
    write(caller, &me, &dropped, 0, &[7; 50])
        .await
        .expect("write");
    caller
        .call_as::<FileUploadDelete>(
            &me,
            &pb::UploadRef {
                file_id: dropped.file_id.clone(),
            },
        )
        .await
        .expect("delete");
    let gone = caller
        .call_as::<FileUploadStatus>(
            &me,
            &pb::UploadRef {
                file_id: dropped.file_id.clone(),
            },
        )
        .await
        .expect_err("deleted");
    assert_eq!(gone.code, ErrorCode::NotFound);
    // Neither the refused nor the terminated upload left a part: the
    // photo's 2 and the plain file's 3 (2,800 bytes in writes of 1,000).
    assert_eq!(
        stored_parts(&store).await.len(),
        5,
        "the two files' parts only"
    );
    files.stop().await;
}
