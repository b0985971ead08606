//! Files through the edge: tus uploads (creation, resume after a cut body,
//! termination), streamed downloads with ranges and ETags, and who may
//! touch them, against a real system (nats-server and its object store).

use bytes::Bytes;
use e2e::{Mode, Service, System, User};
use reqwest::StatusCode;

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

/// Bytes that sniff as a PNG image, `len` long (more than one chunk of the
/// edge's 512 KiB when large).
fn png(len: usize) -> Vec<u8> {
    let mut bytes = PNG_MAGIC.to_vec();
    bytes.extend((0..len - PNG_MAGIC.len()).map(|i| (i % 253) as u8));
    bytes
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

struct Files {
    http: reqwest::Client,
    base: String,
}

impl Files {
    fn new(system: &System) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: system.api().base().to_owned(),
        }
    }

    fn tus(&self, method: reqwest::Method, path: &str, user: &User) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&user.token)
            .header("tus-resumable", "1.0.0")
    }

    /// Creates an upload; its path.
    async fn create(
        &self,
        user: &User,
        name: &str,
        kind: &str,
        length: usize,
    ) -> anyhow::Result<String> {
        let response = self
            .tus(reqwest::Method::POST, "/v1/files/uploads", user)
            .header("upload-length", length.to_string())
            .header(
                "upload-metadata",
                format!("filename {},kind {}", b64(name), b64(kind)),
            )
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == StatusCode::CREATED,
            "create: {}",
            response.status()
        );
        let location = response.headers()["location"].to_str()?.to_owned();
        anyhow::ensure!(response.headers().contains_key("upload-expires"));
        Ok(location)
    }

    async fn offset(&self, user: &User, upload: &str) -> anyhow::Result<u64> {
        let response = self.tus(reqwest::Method::HEAD, upload, user).send().await?;
        anyhow::ensure!(
            response.status() == StatusCode::OK,
            "head: {}",
            response.status()
        );
        Ok(response.headers()["upload-offset"].to_str()?.parse()?)
    }

    async fn patch(
        &self,
        user: &User,
        upload: &str,
        offset: u64,
        body: reqwest::Body,
    ) -> reqwest::Result<reqwest::Response> {
        self.tus(reqwest::Method::PATCH, upload, user)
            .header("upload-offset", offset.to_string())
            .header("content-type", "application/offset+octet-stream")
            .body(body)
            .send()
            .await
    }

    async fn get(
        &self,
        user: Option<&User>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(user) = user {
            request = request.bearer_auth(&user.token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Ok(request.send().await?)
    }
}

fn file_path(upload: &str) -> String {
    upload.replace("/v1/files/uploads/", "/v1/files/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_goes_up_with_tus_and_comes_down_whole_in_ranges_and_only_to_its_owner()
-> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let files = Files::new(&system);

    // Discovery.
    let options = files
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/files/uploads", files.base),
        )
        .send()
        .await?;
    assert_eq!(options.status(), StatusCode::NO_CONTENT);
    assert_eq!(options.headers()["tus-version"], "1.0.0");
    assert!(
        options.headers()["tus-extension"]
            .to_str()?
            .contains("termination")
    );

    let bytes = png(1_300_000);
    let upload = files
        .create(&alice, "假期 照片.png", "image", bytes.len())
        .await?;
    assert!(upload.starts_with("/v1/files/uploads/"), "{upload}");
    assert_eq!(files.offset(&alice, &upload).await?, 0);
    // Not a stranger's to look at or write.
    let peek = files
        .tus(reqwest::Method::HEAD, &upload, &bob)
        .send()
        .await?;
    assert_eq!(peek.status(), StatusCode::NOT_FOUND);
    let intrude = files.patch(&bob, &upload, 0, bytes.clone().into()).await?;
    assert_eq!(intrude.status(), StatusCode::NOT_FOUND);
    // Not without tus, not with another body type, not at another offset.
    let plain = files
        .http
        .head(format!("{}{upload}", files.base))
        .bearer_auth(&alice.token)
        .send()
        .await?;
    assert_eq!(plain.status(), StatusCode::PRECONDITION_FAILED);
    let typed = files
        .tus(reqwest::Method::PATCH, &upload, &alice)
        .header("upload-offset", "0")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await?;
    assert_eq!(typed.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let ahead = files
        .patch(&alice, &upload, 5, Bytes::from_static(b"x").into())
        .await?;
    assert_eq!(ahead.status(), StatusCode::CONFLICT);
    assert_eq!(ahead.headers()["upload-offset"], "0");

    // The body is cut after 700,000 bytes: what arrived is kept.
    let first = Bytes::copy_from_slice(&bytes[..700_000]);
    let cut = futures::stream::iter(vec![
        Ok::<Bytes, std::io::Error>(first),
        Err(std::io::Error::other("the connection dropped")),
    ]);
    let _ = files
        .patch(&alice, &upload, 0, reqwest::Body::wrap_stream(cut))
        .await;
    // The edge writes what arrived after the client is gone.
    let mut kept = 0;
    for _ in 0..100 {
        kept = files.offset(&alice, &upload).await?;
        if kept > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(kept > 0 && kept <= 700_000, "kept {kept}");
    // Resumed from there.
    let rest = files
        .patch(
            &alice,
            &upload,
            kept,
            bytes[kept as usize..].to_vec().into(),
        )
        .await?;
    assert_eq!(rest.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        rest.headers()["upload-offset"],
        bytes.len().to_string().as_str()
    );
    assert_eq!(files.offset(&alice, &upload).await?, bytes.len() as u64);

    // Down, whole.
    let path = file_path(&upload);
    let whole = files.get(Some(&alice), &path, &[]).await?;
    assert_eq!(whole.status(), StatusCode::OK);
    let headers = whole.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(
        headers["content-disposition"],
        "inline; filename=\"__ __.png\"; filename*=UTF-8''%E5%81%87%E6%9C%9F%20%E7%85%A7%E7%89%87.png"
    );
    let etag = headers["etag"].to_str()?.to_owned();
    assert_eq!(whole.bytes().await?.as_ref(), bytes.as_slice());
    // A range across the chunk boundary, and a suffix.
    let range = files
        .get(Some(&alice), &path, &[("range", "bytes=524000-525000")])
        .await?;
    assert_eq!(range.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        range.headers()["content-range"],
        format!("bytes 524000-525000/{}", bytes.len()).as_str()
    );
    assert_eq!(range.bytes().await?.as_ref(), &bytes[524_000..=525_000]);
    let tail = files
        .get(Some(&alice), &path, &[("range", "bytes=-10")])
        .await?;
    assert_eq!(tail.bytes().await?.as_ref(), &bytes[bytes.len() - 10..]);
    let beyond = files
        .get(Some(&alice), &path, &[("range", "bytes=9999999-")])
        .await?;
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    // Unchanged since the last time.
    let again = files
        .get(Some(&alice), &path, &[("if-none-match", &etag)])
        .await?;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    // Nobody else's.
    let theirs = files.get(Some(&bob), &path, &[]).await?;
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
    let nobody = files.get(None, &path, &[]).await?;
    assert_eq!(nobody.status(), StatusCode::UNAUTHORIZED);

    // Anything that is not an image or audio goes as an attachment.
    let page = b"<html><script>alert(1)</script></html>".to_vec();
    let html = files
        .create(&alice, "page.html", "file", page.len())
        .await?;
    let done = files.patch(&alice, &html, 0, page.clone().into()).await?;
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    let served = files.get(Some(&alice), &file_path(&html), &[]).await?;
    let disposition = served.headers()["content-disposition"].to_str()?.to_owned();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    // Even opened directly, a served page runs nothing.
    let policy = served.headers()["content-security-policy"].to_str()?;
    assert!(policy.contains("sandbox"), "{policy}");

    // Terminated uploads are gone.
    let dropped = files.create(&alice, "drop.bin", "file", 10).await?;
    let ended = files
        .tus(reqwest::Method::DELETE, &dropped, &alice)
        .send()
        .await?;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    let gone = files
        .tus(reqwest::Method::HEAD, &dropped, &alice)
        .send()
        .await?;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    Ok(())
}

/// Writes `bytes` to `upload` from its offset in PATCHes of `piece` bytes,
/// asking where it stands again after any refusal; `between` runs after
/// each PATCH.
async fn upload_in_pieces(
    files: &Files,
    user: &User,
    upload: &str,
    bytes: &[u8],
    piece: usize,
    mut between: impl FnMut(usize),
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut round = 0;
    loop {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no progress");
        let offset = match files.offset(user, upload).await {
            Ok(offset) => offset as usize,
            Err(_) => {
                // The files service is restarting.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if offset == bytes.len() {
            return Ok(());
        }
        let end = (offset + piece).min(bytes.len());
        let _ = files
            .patch(
                user,
                upload,
                offset as u64,
                bytes[offset..end].to_vec().into(),
            )
            .await;
        round += 1;
        between(round);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_survive_files_instances_coming_and_going() -> anyhow::Result<()> {
    let (mut system, [alice]) = System::with_users(Mode::Split, ["alice"]).await?;
    // Two instances: writes land on either, so the one that completes an
    // upload has not seen every write and reads the digest back.
    system.spawn_process(Service::Files)?;
    system.wait_ready().await?;
    let files = Files::new(&system);
    let bytes = png(3_000_000);
    let upload = files
        .create(&alice, "two.png", "image", bytes.len())
        .await?;
    upload_in_pieces(&files, &alice, &upload, &bytes, 600_000, |_| {}).await?;
    let path = file_path(&upload);
    let whole = files.get(Some(&alice), &path, &[]).await?;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.bytes().await?.as_ref(), bytes.as_slice());

    // An instance killed between the PATCHes of another upload, and started
    // again: the upload goes on from its last stored part.
    let other = png(2_500_000);
    let upload = files
        .create(&alice, "killed.png", "image", other.len())
        .await?;
    let mut killed = 0;
    upload_in_pieces(&files, &alice, &upload, &other, 700_000, |round| {
        if round <= 2 {
            system.kill_one_process(Service::Files);
            system.spawn_process(Service::Files).expect("files starts");
            killed += 1;
        }
    })
    .await?;
    assert_eq!(killed, 2);
    let whole = files.get(Some(&alice), &file_path(&upload), &[]).await?;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.bytes().await?.as_ref(), other.as_slice());
    Ok(())
}
