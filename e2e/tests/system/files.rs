//! Files through the edge: tus uploads (creation, resume after a cut body,
//! termination), streamed downloads with ranges and ETags, and who may
//! touch them, against a real system (nats-server and its object store).

use bytes::Bytes;
use e2e::files::{Files, file_path, png};
use e2e::{Mode, Service, System, User};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_goes_up_with_tus_and_comes_down_whole_in_ranges_and_only_to_its_owner()
-> anyhow::Result<()> {
    up_and_down(e2e::Settings::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_on_the_local_filesystem_store() -> anyhow::Result<()> {
    up_and_down(e2e::Settings {
        files_on_disk: true,
        ..e2e::Settings::default()
    })
    .await
}

/// The tus flow, a cut body resumed, downloads whole and in ranges, and who
/// may touch them, on the store `settings` choose.
async fn up_and_down(settings: e2e::Settings) -> anyhow::Result<()> {
    let (system, [alice, bob]) =
        System::with_settings_and_users(Mode::InProcess, settings, ["alice", "bob"]).await?;
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
    // The edge writes what arrived after the client is gone; the client
    // resumes from the offset it reads, as a tus client does: while the
    // edge is still writing, a PATCH at a stale offset is a 409, and the
    // client asks again.
    let mut kept = 0;
    let mut rest = None;
    for _ in 0..100 {
        kept = files.offset(&alice, &upload).await?;
        if kept == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        }
        let answer = files
            .patch(
                &alice,
                &upload,
                kept,
                bytes[kept as usize..].to_vec().into(),
            )
            .await?;
        if answer.status() != StatusCode::CONFLICT {
            rest = Some(answer);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(kept > 0 && kept <= 700_000, "kept {kept}");
    let rest = rest.expect("resumed");
    assert_eq!(rest.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        rest.headers()["upload-offset"],
        bytes.len().to_string().as_str()
    );
    assert_eq!(files.offset(&alice, &upload).await?, bytes.len() as u64);

    // The bytes are where the store says.
    let on_disk = std::fs::read_dir(system.files_dir().join("parts"))
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert_eq!(
        on_disk > 0,
        system.settings().files_on_disk,
        "{on_disk} uploads on disk"
    );

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

/// Sends an image message over HTTP; the status and the answer.
async fn send_image(
    system: &System,
    from: &User,
    to: (&str, &str),
    client_msg_id: &str,
    file_id: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let (field, target) = to;
    let (status, body) = system
        .api()
        .send_method(
            reqwest::Method::POST,
            "/v1/messages",
            Some(&from.token),
            Some(serde_json::json!({
                field: target,
                "clientMsgId": client_msg_id,
                "body": { "image": { "fileId": file_id, "width": 8, "height": 8 } },
            })),
        )
        .await?;
    Ok((status.as_u16(), body))
}

/// Recalls message `seq` of `conversation` as `user`; the status.
async fn recall(
    system: &System,
    user: &User,
    conversation: &str,
    seq: &str,
) -> anyhow::Result<u16> {
    let (status, body) = system
        .api()
        .send_method(
            reqwest::Method::POST,
            &format!("/v1/conversations/{conversation}/messages/{seq}/recall"),
            Some(&user.token),
            None,
        )
        .await?;
    anyhow::ensure!(
        status.is_success() || status.is_client_error(),
        "recall: {status} {body}"
    );
    Ok(status.as_u16())
}

/// The status of `user`'s download of `file_id`.
async fn fetch(files: &Files, user: &User, file_id: &str) -> anyhow::Result<u16> {
    let response = files
        .get(Some(user), &format!("/v1/files/{file_id}"), &[])
        .await?;
    Ok(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_read_through_the_messages_that_carry_them() -> anyhow::Result<()> {
    let (system, [alice, bob, carol]) =
        System::with_users(Mode::InProcess, ["alice", "bob", "carol"]).await?;
    let api = system.api();
    // A friend of alice's, in none of the conversations below.
    let stranger = api.user("mallory").await?;
    api.befriend(&alice, &stranger).await?;
    let files = Files::new(&system);
    let direct = shared::ids::direct_conversation(&alice.user_id, &bob.user_id);

    // Before any message, only the uploader reads it.
    let photo = files.upload(&alice, "p.png", "image", png(400_000)).await?;
    assert_eq!(fetch(&files, &alice, &photo).await?, 200);
    assert_eq!(fetch(&files, &bob, &photo).await?, 404);
    // Nobody sends a file that is not theirs, nor one that does not exist,
    // nor a file as the wrong kind.
    let (status, body) =
        send_image(&system, &bob, ("toUserId", &alice.user_id), "b-1", &photo).await?;
    assert_eq!(status, 404, "{body}");
    let missing = shared::ids::new_id();
    let (status, _) =
        send_image(&system, &alice, ("toUserId", &bob.user_id), "a-0", &missing).await?;
    assert_eq!(status, 404);
    let report = files
        .upload(&alice, "r.pdf", "file", e2e::files::pdf(500))
        .await?;
    let (status, body) =
        send_image(&system, &alice, ("toUserId", &bob.user_id), "a-00", &report).await?;
    assert_eq!(status, 400, "{body}");

    // A message grants its recipients; strangers still see nothing.
    let (status, sent) =
        send_image(&system, &alice, ("toUserId", &bob.user_id), "a-1", &photo).await?;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(fetch(&files, &bob, &photo).await?, 200);
    // Its thumbnails too: a JPEG, no larger than its variant.
    let small = files
        .get(
            Some(&bob),
            &format!("/v1/files/{photo}/thumbnails/small"),
            &[],
        )
        .await?;
    assert_eq!(small.status(), StatusCode::OK);
    assert_eq!(small.headers()["content-type"], "image/jpeg");
    let thumbnail = image::load_from_memory(&small.bytes().await?)?;
    assert!(thumbnail.width() <= 320 && thumbnail.height() <= 320);
    let none = files
        .get(
            Some(&bob),
            &format!("/v1/files/{photo}/thumbnails/huge"),
            &[],
        )
        .await?;
    assert_eq!(none.status(), StatusCode::NOT_FOUND);
    assert_eq!(fetch(&files, &carol, &photo).await?, 404);
    let hidden = files
        .get(
            Some(&carol),
            &format!("/v1/files/{photo}/thumbnails/small"),
            &[],
        )
        .await?;
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND);
    assert_eq!(fetch(&files, &stranger, &photo).await?, 404);
    // Who can read it may forward it, and then the new recipients read it.
    let (status, body) =
        send_image(&system, &bob, ("toUserId", &carol.user_id), "b-2", &photo).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fetch(&files, &carol, &photo).await?, 200);
    let (status, _) = send_image(
        &system,
        &stranger,
        ("toUserId", &alice.user_id),
        "m-1",
        &photo,
    )
    .await?;
    assert_eq!(status, 404);

    // A recall stops granting: bob's copy to carol still grants both.
    let seq = sent["seq"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| sent["seq"].to_string());
    assert_eq!(recall(&system, &alice, &direct, &seq).await?, 200);
    assert_eq!(fetch(&files, &carol, &photo).await?, 200);
    let secret = files.upload(&alice, "s.png", "image", png(700)).await?;
    let (status, sent) =
        send_image(&system, &alice, ("toUserId", &bob.user_id), "a-2", &secret).await?;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(fetch(&files, &bob, &secret).await?, 200);
    let seq = sent["seq"].as_str().map(str::to_owned).unwrap_or_default();
    assert_eq!(recall(&system, &alice, &direct, &seq).await?, 200);
    assert_eq!(fetch(&files, &bob, &secret).await?, 404);
    assert_eq!(
        fetch(&files, &alice, &secret).await?,
        200,
        "the uploader keeps it"
    );

    // Deleted for me: gone for bob, not for the sender.
    let note = files.upload(&alice, "n.png", "image", png(600)).await?;
    let (_, sent) = send_image(&system, &alice, ("toUserId", &bob.user_id), "a-3", &note).await?;
    let seq: u64 = sent["seq"].as_str().unwrap_or_default().parse()?;
    let (status, _) = api
        .send_method(
            reqwest::Method::POST,
            &format!("/v1/conversations/{direct}/messages/delete"),
            Some(&bob.token),
            Some(serde_json::json!({ "seqs": [seq] })),
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(fetch(&files, &bob, &note).await?, 404);

    // Groups: the read window. Carol joins late, bob is removed.
    let group = api.create_group(&alice, "team", &[&bob]).await?;
    let group_id = group["id"].as_str().unwrap_or_default().to_owned();
    let conversation = group["conversationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let early = files.upload(&alice, "e.png", "image", png(500)).await?;
    let (status, body) = send_image(
        &system,
        &alice,
        ("conversationId", &conversation),
        "g-1",
        &early,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let members = format!("/v1/groups/{group_id}/members");
    let (status, body) = api
        .send_method(
            reqwest::Method::POST,
            &members,
            Some(&alice.token),
            Some(serde_json::json!({ "userIds": [carol.user_id] })),
        )
        .await?;
    assert_eq!(status.as_u16(), 200, "{body}");
    assert_eq!(fetch(&files, &bob, &early).await?, 200);
    assert_eq!(
        fetch(&files, &carol, &early).await?,
        404,
        "sent before carol joined"
    );
    let (status, _) = api
        .send_method(
            reqwest::Method::DELETE,
            &format!("{members}/{}", bob.user_id),
            Some(&alice.token),
            None,
        )
        .await?;
    assert_eq!(status.as_u16(), 200);
    let late = files.upload(&alice, "l.png", "image", png(400)).await?;
    let (status, _) = send_image(
        &system,
        &alice,
        ("conversationId", &conversation),
        "g-2",
        &late,
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(fetch(&files, &carol, &late).await?, 200);
    assert_eq!(
        fetch(&files, &bob, &late).await?,
        404,
        "sent after bob was removed"
    );
    assert_eq!(
        fetch(&files, &bob, &early).await?,
        200,
        "history before removal stays"
    );
    system.stop().await;
    Ok(())
}

/// Sets `user`'s avatar; the status.
async fn set_avatar(system: &System, user: &User, file_id: &str) -> anyhow::Result<u16> {
    let (status, _) = system
        .api()
        .send_method(
            reqwest::Method::PATCH,
            "/v1/profile",
            Some(&user.token),
            Some(serde_json::json!({ "avatar": file_id })),
        )
        .await?;
    Ok(status.as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_nothing_uses_are_deleted_and_quotas_hold() -> anyhow::Result<()> {
    let settings = e2e::Settings {
        unreferenced_file_secs: 2,
        file_quota_bytes: 3_000_000,
        ..e2e::Settings::default()
    };
    let (system, [alice, bob]) =
        System::with_settings_and_users(Mode::InProcess, settings, ["alice", "bob"]).await?;
    let files = Files::new(&system);
    let direct = shared::ids::direct_conversation(&alice.user_id, &bob.user_id);

    let unsent = files.upload(&alice, "u.png", "image", png(1000)).await?;
    let sent = files.upload(&alice, "s.png", "image", png(1100)).await?;
    let recalled = files.upload(&alice, "r.png", "image", png(1200)).await?;
    let avatar = files.upload(&alice, "a.png", "avatar", png(1300)).await?;
    let old_avatar = files.upload(&alice, "o.png", "avatar", png(1400)).await?;
    // The same bytes twice: one copy sent, the other not.
    let twin_kept = files.upload(&alice, "t1.png", "image", png(1500)).await?;
    let twin_dropped = files.upload(&alice, "t2.png", "image", png(1500)).await?;
    assert_eq!(set_avatar(&system, &alice, &old_avatar).await?, 200);
    assert_eq!(set_avatar(&system, &alice, &avatar).await?, 200);
    for (n, file) in [&sent, &recalled, &twin_kept].into_iter().enumerate() {
        let (status, body) = send_image(
            &system,
            &alice,
            ("toUserId", &bob.user_id),
            &format!("k-{n}"),
            file,
        )
        .await?;
        assert_eq!(status, 200, "{body}");
    }
    let (_, history) = system.api().history(&alice, &direct, "").await?;
    let seq = history["messages"][1]["seq"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(recall(&system, &alice, &direct, &seq).await?, 200);

    // After the grace (2 s) and a sweep (every second), what nothing uses
    // is gone; the rest stays, to its owner and its readers.
    let gone = [&unsent, &recalled, &old_avatar, &twin_dropped];
    let mut left = Vec::new();
    for _ in 0..100 {
        left.clear();
        for file in gone {
            if fetch(&files, &alice, file).await? != 404 {
                left.push(file.clone());
            }
        }
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(left.is_empty(), "still there: {left:?}");
    for file in [&sent, &twin_kept] {
        assert_eq!(fetch(&files, &bob, file).await?, 200);
        let whole = files
            .get(Some(&bob), &format!("/v1/files/{file}"), &[])
            .await?;
        assert!(whole.bytes().await?.len() > 1000);
    }
    assert_eq!(fetch(&files, &bob, &avatar).await?, 200);

    // The quota: 3,000,000 bytes of files and unfinished uploads.
    let big = files.create(&alice, "big.bin", "file", 2_999_000).await;
    assert!(big.is_err(), "over the quota");
    let fits = files.create(&alice, "ok.bin", "file", 2_000_000).await?;
    assert!(
        files
            .create(&alice, "more.bin", "file", 1_000_000)
            .await
            .is_err(),
        "the unfinished upload counts"
    );
    files
        .tus(reqwest::Method::DELETE, &fits, &alice)
        .send()
        .await?;
    files.create(&alice, "more.bin", "file", 1_000_000).await?;
    // Another user's quota is their own.
    files.create(&bob, "b.bin", "file", 2_900_000).await?;
    system.stop().await;
    Ok(())
}

/// The only files instance SIGKILLed while a PATCH streams in: the PATCH
/// fails, the upload stands at its last stored write, and the client resumes
/// from there with a new instance. The file comes down whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_resumes_after_the_files_service_dies_mid_patch() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut system, [alice]) = System::with_users(Mode::Split, ["alice"]).await?;
    let files = Files::new(&system);
    let bytes = png(6_000_000);
    let sent = 3_000_000;
    let upload = files
        .create(&alice, "mid.png", "image", bytes.len())
        .await?;

    // One PATCH of the whole file, written by hand so that it can stop
    // halfway through its body.
    let host = files.base.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&host).await?;
    let head = format!(
        "PATCH {upload} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
         Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        alice.token,
        bytes.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(&bytes[..sent]).await?;
    // Some writes are stored before the kill.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while files.offset(&alice, &upload).await? == 0 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "nothing stored");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    system.kill_process(Service::Files);
    system.spawn_process(Service::Files)?;
    // The rest of the body may or may not be taken; the PATCH fails: a 5xx,
    // or the connection reset under the body the edge did not read.
    let _ = socket.write_all(&bytes[sent..]).await;
    let mut answer = vec![0; 1024];
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(60), socket.read(&mut answer)).await?;
    if let Ok(read) = read {
        let status = String::from_utf8_lossy(&answer[..read]);
        assert!(
            read == 0 || status.starts_with("HTTP/1.1 5"),
            "the PATCH should fail: {status}"
        );
    }
    drop(socket);

    // The upload stands where its stored writes end, within what was sent.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let stored = loop {
        match files.offset(&alice, &upload).await {
            Ok(offset) => break offset as usize,
            Err(_) => {
                anyhow::ensure!(tokio::time::Instant::now() < deadline, "no files service");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    assert!(stored > 0 && stored <= sent, "stored {stored} of {sent}");
    upload_in_pieces(&files, &alice, &upload, &bytes, 2_000_000, |_| {}).await?;
    let whole = files.get(Some(&alice), &file_path(&upload), &[]).await?;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.bytes().await?.as_ref(), bytes.as_slice());
    Ok(())
}
