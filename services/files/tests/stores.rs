//! The stores files' bytes go to, held to `object_store`'s own conformance
//! functions (the `integration` module of the pinned version): the NATS
//! object store backend against a real nats-server, and the local
//! filesystem backend as `files.store_url` opens it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use files::nats_store::{CHUNK, NatsStore};
use futures::TryStreamExt;
use object_store::integration::*;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use shared::testing::NatsServer;

async fn nats_store(server: &NatsServer, bucket: &str) -> NatsStore {
    let client = async_nats::connect(server.url()).await.expect("connect");
    NatsStore::open(async_nats::jetstream::new(client), bucket, 1)
        .await
        .expect("open the bucket")
}

/// Replaced chunks are purged after this grace in the tests that count them.
const GRACE: Duration = Duration::from_millis(200);

/// The messages of a bucket's stream once replaced chunks are purged.
async fn stored_messages(server: &NatsServer, bucket: &str) -> u64 {
    tokio::time::sleep(GRACE * 3).await;
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(format!("OBJ_{bucket}"))
        .await
        .expect("stream");
    stream.info().await.expect("info").state.messages
}

/// One conformance function of `object_store` against a fresh bucket on a
/// fresh server, as a test of its own.
macro_rules! conformance {
    ($($name:ident: |$store:ident| $call:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let server = NatsServer::start();
            let $store = nats_store(&server, stringify!($name)).await;
            $call.await;
        }
    )*};
}

conformance! {
    nats_put_get_delete_list: |store| put_get_delete_list(&store);
    nats_list_with_offset_exclusivity: |store| list_with_offset_exclusivity(&store);
    nats_get_opts: |store| get_opts(&store);
    nats_list_uses_directories_correctly: |store| list_uses_directories_correctly(&store);
    nats_list_with_delimiter: |store| list_with_delimiter(&store);
    nats_rename_and_copy: |store| rename_and_copy(&store);
    nats_copy_if_not_exists: |store| copy_if_not_exists(&store);
    nats_copy_rename_nonexistent_object: |store| copy_rename_nonexistent_object(&store);
    nats_stream_get: |store| stream_get(&store);
    nats_put_opts: |store| put_opts(&store, true);
    nats_put_get_attributes: |store| put_get_attributes(&store);
    nats_multipart_race_condition: |store| multipart_race_condition(&store, true);
    nats_multipart_out_of_order: |store| multipart_out_of_order(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_of_a_many_chunk_object_read_the_right_bytes() {
    let server = NatsServer::start();
    let store = nats_store(&server, "ranges").await.with_grace(GRACE);
    // A small object, read by direct gets, then a large one, through a
    // consumer: three and a half chunks and ten and a half, of bytes that
    // differ everywhere.
    for halves in [7, 21] {
        ranges_read_right(&store, CHUNK * halves / 2).await;
    }
    let location = Path::from("big/object");
    // Replacing the object leaves only the new object's chunks behind.
    store
        .put(&location, PutPayload::from_static(b"small"))
        .await
        .expect("overwrite");
    assert_eq!(
        stored_messages(&server, "ranges").await,
        2,
        "one chunk and one description"
    );
    store.delete(&location).await.expect("delete");
    assert_eq!(
        stored_messages(&server, "ranges").await,
        1,
        "the tombstone only"
    );
}

async fn ranges_read_right(store: &NatsStore, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let location = Path::from("big/object");
    let put = store
        .put(&location, PutPayload::from(data.clone()))
        .await
        .expect("put");
    let e_tag = put.e_tag.expect("the store names what it wrote");
    let len = data.len() as u64;
    let chunk = CHUNK as u64;
    for range in [
        0..1,
        0..len,
        chunk - 1..chunk + 1,
        chunk..2 * chunk,
        2 * chunk + 5..len,
        len - 1..len,
        3..3 * chunk + 17,
    ] {
        let got = store
            .get_range(&location, range.clone())
            .await
            .expect("range");
        let want = Bytes::copy_from_slice(&data[range.start as usize..range.end as usize]);
        assert_eq!(got, want, "range {range:?}");
        // The same bytes by the write's ETag, without the description.
        let pieces: Vec<Bytes> = store
            .read_written(&e_tag, len, range.clone())
            .expect("read by ETag")
            .try_collect()
            .await
            .expect("the chunks");
        assert_eq!(pieces.concat(), want, "range {range:?} by ETag");
    }
    let suffix = store
        .get_opts(
            &location,
            GetOptions {
                range: Some(GetRange::Suffix(chunk + 3)),
                ..Default::default()
            },
        )
        .await
        .expect("suffix");
    assert_eq!(suffix.range, len - chunk - 3..len);
    let bytes = suffix.bytes().await.expect("suffix bytes");
    assert_eq!(&bytes[..], &data[(len - chunk - 3) as usize..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_by_etag_refuses_what_the_store_never_wrote_and_finds_a_deleted_object_gone() {
    let server = NatsServer::start();
    // As the files service opens it: a deleted object's chunks go at once.
    let store = nats_store(&server, "etags")
        .await
        .with_grace(Duration::ZERO);
    let location = Path::from("parts/one");
    let data = vec![7u8; CHUNK + 10];
    let len = data.len() as u64;
    let e_tag = store
        .put(&location, PutPayload::from(data))
        .await
        .expect("put")
        .e_tag
        .expect("an ETag");
    for bad in ["", "a.b", "x>", "*", &"n".repeat(65)] {
        assert!(
            store.read_written(bad, len, 0..1).is_err(),
            "{bad:?} was read"
        );
    }
    assert!(
        store.read_written(&e_tag, len, 0..len + 1).is_err(),
        "past the end"
    );
    // A well-formed ETag of nothing stored reads nothing.
    let none: Result<Vec<Bytes>, _> = store
        .read_written("NoSuchObject0000", len, 0..len)
        .expect("well formed")
        .try_collect()
        .await;
    assert!(none.is_err(), "an object never written was read");
    store.delete(&location).await.expect("delete");
    // Its chunks are purged by a task of their own, just after.
    let mut gone = false;
    for _ in 0..50 {
        let read: Result<Vec<Bytes>, _> = store
            .read_written(&e_tag, len, 0..len)
            .expect("well formed")
            .try_collect()
            .await;
        if read.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "a deleted object was still read 5 s after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_reads_the_same_by_etag_and_by_key_on_nats_and_on_disk() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let dir = tempfile::tempdir().expect("temp dir");
    let none = Default::default();
    let data: Vec<u8> = (0..CHUNK * 3 + 7).map(|i| (i % 253) as u8).collect();
    for url in [
        "nats://parts".to_owned(),
        format!("file://{}/parts", dir.path().display()),
    ] {
        let store = files::backend::open(&url, js.clone(), 1, &none)
            .await
            .expect("open");
        let key = "parts/u1/0";
        let put = store
            .objects
            .put(&Path::from(key), PutPayload::from(data.clone()))
            .await
            .expect("put");
        // A row recorded with the write's ETag, and one from before ETags
        // were kept: both read the same bytes.
        for e_tag in [put.e_tag.clone(), None] {
            let part = files::store::PartRow {
                start: 0,
                size: data.len() as i64,
                object_key: key.to_owned(),
                e_tag,
            };
            for range in [0..data.len() as u64, CHUNK as u64 - 3..CHUNK as u64 * 2 + 1] {
                let got = store
                    .read_part_bytes(&part, range.clone())
                    .await
                    .expect("read");
                let want = &data[range.start as usize..range.end as usize];
                assert_eq!(&got[..], want, "{url} {range:?} e_tag {:?}", part.e_tag);
            }
        }
        // On NATS the ETag is what is read: one that names nothing fails.
        let stranger = files::store::PartRow {
            start: 0,
            size: data.len() as i64,
            object_key: key.to_owned(),
            e_tag: Some("NoSuchObject0".to_owned()),
        };
        let read = store.read_part_bytes(&stranger, 0..1).await;
        assert_eq!(read.is_err(), url.starts_with("nats://"), "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_leave_one_object_and_no_orphaned_chunks() {
    let server = NatsServer::start();
    let store = Arc::new(nats_store(&server, "race").await.with_grace(GRACE));
    let location = Path::from("contended");
    let writers: Vec<_> = (0..8u8)
        .map(|i| {
            let store = store.clone();
            let location = location.clone();
            tokio::spawn(async move {
                let body = vec![i; CHUNK + 10];
                store.put(&location, PutPayload::from(body)).await
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("join").expect("put");
    }
    let got = store
        .get(&location)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(got.len(), CHUNK + 10);
    assert!(
        got.iter().all(|b| *b == got[0]),
        "one writer's bytes, whole"
    );
    assert_eq!(
        stored_messages(&server, "race").await,
        3,
        "two chunks and one description"
    );
    let listed: Vec<_> = store.list(None).try_collect().await.expect("list");
    assert_eq!(listed.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_filesystem_store_opens_by_url_and_passes_conformance() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}/files", dir.path().display());
    let none = Default::default();
    let store = files::backend::open(&url, js.clone(), 1, &none)
        .await
        .expect("open")
        .objects;
    put_get_delete_list(&store).await;
    list_uses_directories_correctly(&store).await;
    list_with_delimiter(&store).await;
    rename_and_copy(&store).await;
    stream_get(&store).await;

    for bad in [
        "file://relative/path",
        "nats://",
        "nats://a.b",
        "s3://",
        "s3://bucket/key",
        "ftp://x",
        "",
    ] {
        let refused = files::backend::open(bad, js.clone(), 1, &none).await;
        assert!(refused.is_err(), "{bad:?} was accepted");
    }
    let stray = [("aws_region".to_owned(), "x".to_owned())].into();
    let refused = files::backend::open(&url, js.clone(), 1, &stray).await;
    assert!(refused.is_err(), "S3 options on a file store were accepted");
    let unknown = [("aws_colour".to_owned(), "x".to_owned())].into();
    let refused = files::backend::open("s3://bucket", js, 1, &unknown).await;
    assert!(refused.is_err(), "an unknown S3 option was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_begun_before_an_overwrite_reads_the_old_bytes_whole() {
    let server = NatsServer::start();
    let store = nats_store(&server, "grace").await;
    let location = Path::from("photo");
    let old: Vec<u8> = (0..CHUNK * 3).map(|i| (i % 7) as u8).collect();
    store
        .put(&location, PutPayload::from(old.clone()))
        .await
        .expect("put");
    let reading = store.get(&location).await.expect("get");
    store
        .put(&location, PutPayload::from_static(b"new"))
        .await
        .expect("overwrite");
    assert_eq!(reading.bytes().await.expect("old bytes"), Bytes::from(old));
    let now = store
        .get(&location)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(now, Bytes::from_static(b"new"));
}

/// moto's S3 server (`moto_server`, from PyPI: `pip install "moto[server]"`)
/// on a free loopback port, killed on drop.
struct S3Server {
    child: std::process::Child,
    port: u16,
}

impl S3Server {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server runs (pip install \"moto[server]\"; just deps does)");
        let server = Self { child, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "moto_server did not listen"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bucket's stream is kept in blocks of 4 MiB (a limit of messages per
/// subject that no object reaches makes nats-server pick that size): a
/// block being read or written is what nats-server holds in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_is_kept_in_blocks_of_4_mib() {
    let server = NatsServer::start();
    let store = nats_store(&server, "blocks").await;
    let bytes: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    store
        .put(&Path::from("big"), PutPayload::from(bytes.clone()))
        .await
        .expect("put");
    let blocks = block_files(&server.store_dir(), "OBJ_blocks");
    assert!(blocks.len() >= 3, "{blocks:?}");
    for (path, size) in &blocks {
        assert!(
            *size <= 4 * 1024 * 1024 + CHUNK as u64 + 1024,
            "{path:?} is {size} bytes"
        );
    }
    let back = store.get(&Path::from("big")).await.expect("get");
    assert_eq!(
        back.bytes().await.expect("bytes").as_ref(),
        bytes.as_slice()
    );
}

/// A bucket made before natter set a limit of messages per subject (or by
/// another client, as `create_object_store` makes it) gets the limit when
/// opened, and stays readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_bucket_gets_the_limit_that_sizes_its_blocks() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let old = js
        .create_object_store(async_nats::jetstream::object_store::Config {
            bucket: "older".into(),
            ..Default::default()
        })
        .await
        .expect("an object store made by async-nats");
    old.put("kept", &mut &b"before natter"[..])
        .await
        .expect("put");
    let store = nats_store(&server, "older").await;
    let mut stream = js.get_stream("OBJ_older").await.expect("stream");
    let limit = stream
        .info()
        .await
        .expect("info")
        .config
        .max_messages_per_subject;
    assert_eq!(limit, 1 << 20);
    let kept = store.get(&Path::from("kept")).await.expect("get");
    assert_eq!(
        kept.bytes().await.expect("bytes").as_ref(),
        b"before natter"
    );
}

/// The message block files (`*.blk`) of `stream` under `dir`, with sizes.
fn block_files(dir: &std::path::Path, stream: &str) -> Vec<(std::path::PathBuf, u64)> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "blk")
                && path.components().any(|c| c.as_os_str() == stream)
            {
                found.push((path.clone(), entry.metadata().expect("size").len()));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_bucket_opens_by_url_and_passes_conformance() {
    let s3 = S3Server::start().await;
    // moto takes any credentials; the bucket is made with a plain PUT.
    let made = reqwest::Client::new()
        .put(format!("{}/natter-files", s3.endpoint()))
        .send()
        .await
        .expect("create the bucket");
    assert!(made.status().is_success(), "{}", made.status());
    let options = [
        ("aws_endpoint", s3.endpoint()),
        ("aws_allow_http", "true".to_owned()),
        ("aws_region", "us-east-1".to_owned()),
        ("aws_access_key_id", "natter".to_owned()),
        ("aws_secret_access_key", "natter-secret".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let store = files::backend::open("s3://natter-files", js, 1, &options)
        .await
        .expect("open")
        .objects;
    put_get_delete_list(&store).await;
    get_opts(&store).await;
    list_uses_directories_correctly(&store).await;
    list_with_delimiter(&store).await;
    rename_and_copy(&store).await;
    stream_get(&store).await;
    multipart_out_of_order(&store).await;
}
