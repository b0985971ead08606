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

/// A real PNG of `width` by `height` pixels of noise (it hardly
/// compresses: about 3 bytes a pixel), different for each seed.
fn png(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761) | 1;
    let pixels = image::RgbImage::from_fn(width, height, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [r, g, b, _] = state.to_le_bytes();
        image::Rgb([r, g, b])
    });
    let mut bytes = Vec::new();
    pixels
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .expect("encode a PNG");
    bytes
}

/// A JPEG taken sideways (EXIF orientation 6: turn it a quarter to the
/// right) with a GPS position and a camera model in its EXIF, and an XMP
/// packet.
fn sideways_jpeg_with_location() -> Vec<u8> {
    let pixels = image::RgbImage::from_fn(64, 32, |x, _| image::Rgb([(x * 4) as u8, 0, 0]));
    let mut jpeg = Vec::new();
    pixels
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .expect("encode a JPEG");
    // A little-endian TIFF block: IFD0 with Orientation = 6, Model and a
    // GPS IFD pointer; the GPS IFD with a latitude reference.
    let mut exif = b"II\x2a\0\x08\0\0\0".to_vec();
    exif.extend_from_slice(&[3, 0]);
    exif.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]);
    exif.extend_from_slice(&[0x10, 0x01, 2, 0, 4, 0, 0, 0, b'c', b'a', b'm', 0]);
    exif.extend_from_slice(&[0x25, 0x88, 4, 0, 1, 0, 0, 0, 50, 0, 0, 0]);
    exif.extend_from_slice(&[0, 0, 0, 0]);
    exif.extend_from_slice(&[1, 0, 0x01, 0, 2, 0, 2, 0, 0, 0, b'N', 0, 0, 0, 0, 0, 0, 0]);
    let mut segment = vec![0xFF, 0xE1];
    let body_len = 2 + 6 + exif.len();
    segment.extend_from_slice(&(body_len as u16).to_be_bytes());
    segment.extend_from_slice(b"Exif\0\0");
    segment.extend_from_slice(&exif);
    let xmp = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta><exif:GPSLatitude>31,14.0N</exif:GPSLatitude></x:xmpmeta>";
    segment.extend_from_slice(&[0xFF, 0xE1]);
    segment.extend_from_slice(&((xmp.len() + 2) as u16).to_be_bytes());
    segment.extend_from_slice(xmp);
    // Right after SOI.
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&segment);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A WAV recording of `ms` milliseconds (8 kHz, 16-bit mono).
fn wav(ms: u32) -> Vec<u8> {
    let data = 16 * ms;
    let mut bytes = b"RIFF".to_vec();
    bytes.extend_from_slice(&(36 + data).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt \x10\0\0\0\x01\0\x01\0");
    bytes.extend_from_slice(&8000u32.to_le_bytes());
    bytes.extend_from_slice(&16_000u32.to_le_bytes());
    bytes.extend_from_slice(b"\x02\0\x10\0data");
    bytes.extend_from_slice(&data.to_le_bytes());
    bytes.extend((0..data).map(|i| (i % 7) as u8));
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
                data: bytes::Bytes::copy_from_slice(data),
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
                    variant: String::new(),
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
    // Who may read a file through a message is the messages service's
    // answer (here: nobody but the uploader, as no message was sent).
    let stop_messages = tokio_util::sync::CancellationToken::new();
    let conversations = {
        let nats = shared::Nats::connect(
            &shared::config::NatsConfig::for_url(files.nats.url()),
            "messages",
        )
        .await
        .expect("connect");
        let config = messages::Config {
            database_url: shared::db::sqlite_url(&files.dir.path().join("messages.db")),
            ..messages::Config::default()
        };
        tokio::spawn(messages::run(config, nats, stop_messages.clone()))
    };
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
        FileDescribe,
    );

    let me = someone();
    let stranger = someone();
    let bytes = png(480, 480, 1);
    assert!(bytes.len() > 600_000, "{}", bytes.len());

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
    let past = write(caller, &me, &started, 300_000, &vec![0; bytes.len()])
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
                variant: String::new(),
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

    media(caller, &me, &stranger, &file).await;

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
    // photo's 2, the plain file's 3 (2,800 bytes in writes of 1,000), the
    // cleaned JPEG's 1 and the recording's 1.
    assert_eq!(
        stored_parts(&store).await.len(),
        7,
        "the files' parts only: {:?}",
        stored_parts(&store).await
    );
    // Two thumbnails per image content; the duplicate upload's went.
    let thumbs: Vec<_> = store
        .list(Some(&Path::from("thumbs")))
        .try_collect()
        .await
        .expect("list");
    assert_eq!(thumbs.len(), 4, "{thumbs:?}");
    stop_messages.cancel();
    conversations
        .await
        .expect("join")
        .expect("the messages service");
    files.stop().await;
}

/// Images: their size and thumbnails, their metadata gone; broken ones and
/// bombs refused. Recordings: their duration.
async fn media(caller: &Caller, me: &Identity, stranger: &Identity, photo: &pb::FileInfo) {
    assert_eq!((photo.width, photo.height), (480, 480));
    let variants: Vec<_> = photo
        .thumbnails
        .iter()
        .map(|t| (t.variant.as_str(), t.width, t.height))
        .collect();
    assert!(variants.is_empty(), "a write's reply has no thumbnails");
    let info = caller
        .call_as::<FileInfo>(
            me,
            &pb::FileRef {
                file_id: photo.file_id.clone(),
            },
        )
        .await
        .expect("info");
    let variants: Vec<_> = info
        .thumbnails
        .iter()
        .map(|t| (t.variant.as_str(), t.width, t.height))
        .collect();
    // Never enlarged: the large one is the image's size.
    assert_eq!(variants, [("small", 320, 320), ("large", 480, 480)]);
    let small = caller
        .call_as::<FileRead>(
            me,
            &pb::ReadRequest {
                file_id: photo.file_id.clone(),
                offset: 0,
                length: 500_000,
                variant: "small".into(),
            },
        )
        .await
        .expect("a thumbnail");
    let meta = small.file.expect("the thumbnail's description");
    assert_eq!(meta.media_type, "image/jpeg");
    assert_eq!(meta.size as usize, small.data.len());
    let decoded = image::load_from_memory(&small.data).expect("a JPEG");
    assert_eq!((decoded.width(), decoded.height()), (320, 320));
    let nothing = caller
        .call_as::<FileRead>(
            stranger,
            &pb::ReadRequest {
                file_id: photo.file_id.clone(),
                offset: 0,
                length: 1000,
                variant: "small".into(),
            },
        )
        .await
        .expect_err("a stranger's thumbnail");
    assert_eq!(nothing.code, ErrorCode::NotFound);

    // Location and camera gone, orientation kept; the size is upright.
    let sideways = sideways_jpeg_with_location();
    let done = upload(caller, me, "image", &sideways, 100_000).await;
    assert_eq!(
        done.offset as usize,
        sideways.len(),
        "tus sees what it sent"
    );
    let file = done.file.expect("file");
    assert_eq!((file.width, file.height), (32, 64));
    let stored = read_all(caller, me, &file.file_id).await.expect("read");
    assert!(stored.len() < sideways.len());
    assert_eq!(file.size as usize, stored.len());
    let has = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
    assert!(!has(b"xmpmeta") && !has(b"cam\0"), "metadata left");
    assert!(!has(&[0x25, 0x88]), "the GPS pointer is left");
    let upright = image::load_from_memory(&stored).expect("still a JPEG");
    assert_eq!(
        (upright.width(), upright.height()),
        (64, 32),
        "pixels untouched"
    );
    assert!(has(b"Exif\0\0"), "the orientation stays");

    // Broken images, and a bomb: a small PNG whose header says 100000 by
    // 100000 pixels.
    let whole = png(40, 40, 9);
    let truncated = whole[..whole.len() / 2].to_vec();
    let mut bomb = png(1, 1, 3);
    bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let mut garbage = whole.clone();
    for b in &mut garbage[40..] {
        *b = b.wrapping_mul(7);
    }
    for (name, bytes) in [
        ("truncated", truncated),
        ("bomb", bomb),
        ("garbage", garbage),
    ] {
        let upload = create(caller, me, "x.png", "image", bytes.len()).await;
        let refused = write(caller, me, &upload, 0, &bytes).await.expect_err(name);
        assert_eq!(refused.code, ErrorCode::BadRequest, "{name}: {refused:?}");
    }

    // A recording's length; a broken one is refused.
    let voice = upload(caller, me, "voice", &wav(2500), 100_000)
        .await
        .file
        .expect("file");
    assert_eq!(voice.duration_ms, 2500);
    let mut broken = wav(2500);
    broken.truncate(30);
    let upload = create(caller, me, "v.wav", "voice", broken.len()).await;
    let refused = write(caller, me, &upload, 0, &broken)
        .await
        .expect_err("a broken recording");
    assert_eq!(refused.code, ErrorCode::BadRequest, "{refused:?}");
}
