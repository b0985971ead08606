//! Conversation features: typed bodies, replies, read receipts and unread
//! counts, pin and mute, recall, delete-for-me and typing indicators.

use std::time::Duration;

use e2e::files::{Files, TURNED_MP4, mp4, pdf, png, wav};
use e2e::{Api, Client, Format, Mode, Settings, System, User};
use reqwest::Method;
use serde_json::{Value, json};
use shared::ids::direct_conversation;
use shared::proto::delivery::{inbox_entry, signal};
use shared::proto::message::{
    File, Image, Location, MessageBody, Video, Voice, message_body::Kind,
};

fn body(kind: Kind) -> MessageBody {
    MessageBody { kind: Some(kind) }
}

fn image(file_id: &str) -> Image {
    Image {
        file_id: file_id.into(),
        width: 1280,
        height: 720,
        size_bytes: 204_800,
        mime_type: "image/jpeg".into(),
        thumbnail_file_id: String::new(),
    }
}

async fn call(
    api: &Api,
    method: Method,
    path: &str,
    who: &User,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let (status, body) = api
        .send_method(method, path, Some(&who.token), body)
        .await?;
    Ok((status.as_u16(), body))
}

/// The conversation list entry of `id`.
async fn listed(api: &Api, who: &User, id: &str) -> anyhow::Result<Value> {
    let (_, list) = api.get("/v1/conversations", Some(&who.token)).await?;
    list["conversations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"] == id)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("{id} not listed in {list}"))
}

fn num(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_bodies_and_replies_arrive_as_sent() -> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let mut a = Client::connect_live(&system.ws_url(), &alice, Format::Binary).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;

    // Real uploads; the bodies' sizes and types are the client's guesses,
    // which the server replaces with what the files service found.
    let files = Files::new(&system);
    let image_bytes = png(2048);
    let picture = files
        .upload(&alice, "p.png", "image", image_bytes.clone())
        .await?;
    let thumb = files.upload(&alice, "t.png", "image", png(300)).await?;
    let recording = wav(1500);
    let speech = files
        .upload(&alice, "v.wav", "voice", recording.clone())
        .await?;
    let clip = files
        .upload(&alice, "c.mp4", "video", TURNED_MP4.to_vec())
        .await?;
    // A container the files service cannot read: the sender's figures stand.
    let odd = files.upload(&alice, "o.mp4", "video", mp4(4000)).await?;
    let report = files.upload(&alice, "r.pdf", "file", pdf(1500)).await?;
    let sent_and_got = [
        (
            Kind::Image(Image {
                thumbnail_file_id: thumb.clone(),
                ..image(&picture)
            }),
            Kind::Image(Image {
                thumbnail_file_id: thumb.clone(),
                size_bytes: image_bytes.len() as u64,
                mime_type: "image/png".into(),
                // What the files service read, not what the client said.
                width: 27,
                height: 27,
                ..image(&picture)
            }),
        ),
        (
            Kind::Voice(Voice {
                file_id: speech.clone(),
                duration_ms: 4200,
                size_bytes: 30_000,
                mime_type: "audio/mpeg".into(),
                transcript: "晚上一起吃饭吗".into(),
            }),
            Kind::Voice(Voice {
                file_id: speech.clone(),
                duration_ms: 1500,
                size_bytes: recording.len() as u64,
                mime_type: "audio/x-wav".into(),
                transcript: "晚上一起吃饭吗".into(),
            }),
        ),
        (
            Kind::Video(Video {
                file_id: clip.clone(),
                duration_ms: 15_000,
                width: 1920,
                height: 1080,
                size_bytes: 0,
                mime_type: String::new(),
                thumbnail_file_id: String::new(),
            }),
            Kind::Video(Video {
                file_id: clip.clone(),
                // What the video's container says, shown upright.
                duration_ms: 2000,
                width: 48,
                height: 64,
                size_bytes: TURNED_MP4.len() as u64,
                mime_type: "video/mp4".into(),
                thumbnail_file_id: String::new(),
            }),
        ),
        (
            Kind::Video(Video {
                file_id: odd.clone(),
                duration_ms: 15_000,
                width: 1920,
                height: 1080,
                size_bytes: 0,
                mime_type: String::new(),
                thumbnail_file_id: String::new(),
            }),
            Kind::Video(Video {
                file_id: odd.clone(),
                duration_ms: 15_000,
                width: 1920,
                height: 1080,
                size_bytes: 4000,
                mime_type: "video/mp4".into(),
                thumbnail_file_id: String::new(),
            }),
        ),
        (
            Kind::File(File {
                file_id: report.clone(),
                name: "季度报告 Q3.pdf".into(),
                size_bytes: 1_000_000,
                mime_type: "text/html".into(),
            }),
            Kind::File(File {
                file_id: report.clone(),
                name: "季度报告 Q3.pdf".into(),
                size_bytes: 1500,
                mime_type: "application/pdf".into(),
            }),
        ),
    ];
    let place = Kind::Location(Location {
        latitude: 31.2304,
        longitude: 121.4737,
        title: "外滩".into(),
        address: "上海市黄浦区中山东一路".into(),
    });
    let (bodies, expected): (Vec<_>, Vec<_>) = sent_and_got
        .into_iter()
        .chain([(place.clone(), place)])
        .map(|(sent, got)| (body(sent), body(got)))
        .unzip();
    for (i, sent) in bodies.iter().enumerate() {
        let id = a
            .send_body(&bob, &format!("media-{i}"), sent.clone(), 0)
            .await?;
        a.ack_of(id).await?;
    }
    let got = b.messages(bodies.len()).await?;
    for ((_, message), expected) in got.iter().zip(&expected) {
        assert_eq!(message.body.as_ref(), Some(expected));
    }

    // Bad shapes and sizes are refused with a clear error; nothing is sent.
    let broken = [
        (
            Image {
                mime_type: "text/plain".into(),
                ..image(&picture)
            },
            "bad_request",
        ),
        (
            Image {
                file_id: String::new(),
                ..image(&picture)
            },
            "bad_request",
        ),
        (
            Image {
                width: 0,
                ..image(&picture)
            },
            "bad_request",
        ),
        (
            Image {
                size_bytes: 200 * 1024 * 1024,
                ..image(&picture)
            },
            "too_large",
        ),
    ];
    for (i, (img, code)) in broken.into_iter().enumerate() {
        let id = a
            .send_body(&bob, &format!("bad-{i}"), body(Kind::Image(img)), 0)
            .await?;
        assert_eq!(a.error_of(id).await?.code, code);
    }
    let id = a
        .send_body(
            &bob,
            "bad-place",
            body(Kind::Location(Location {
                latitude: 123.0,
                ..Default::default()
            })),
            0,
        )
        .await?;
    assert_eq!(a.error_of(id).await?.code, "bad_request");
    b.expect_no_more_pushes().await?;

    // A reply quotes a message of the same conversation.
    let quoted = got[4].1.seq;
    let id = b
        .send_body(&alice, "reply-1", e2e::text("收到，谢谢"), quoted)
        .await?;
    b.ack_of(id).await?;
    // Alice's connection had acks for her six messages; only the reply
    // comes to it.
    let reply = a
        .messages(1)
        .await?
        .pop()
        .map(|(_, m)| m)
        .unwrap_or_default();
    assert_eq!(reply.client_msg_id, "reply-1");
    let quote = reply.reply_to.expect("a quote");
    assert_eq!(quote.seq, quoted);
    assert_eq!(quote.sender_id, alice.user_id);
    assert_eq!(quote.preview, "[file] 季度报告 Q3.pdf");
    let id = b.send_body(&alice, "reply-2", e2e::text("?"), 999).await?;
    assert_eq!(b.error_of(id).await?.code, "not_found");
    // The quote is in the history too.
    let (_, history) = system
        .api()
        .history(
            &alice,
            &direct_conversation(&alice.user_id, &bob.user_id),
            "",
        )
        .await?;
    let last = history["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(num(&last["replyTo"]["seq"]), quoted, "{last}");
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_positions_drive_unread_counts_and_receipts() -> anyhow::Result<()> {
    let (system, [alice, bob, carol]) =
        System::with_users(Mode::InProcess, ["alice", "bob", "carol"]).await?;
    let api = system.api();
    let bob2 = api.another_device(&bob).await?;
    let conversation = direct_conversation(&alice.user_id, &bob.user_id);
    let mut a = Client::connect_live(&system.ws_url(), &alice, Format::Json).await?;
    let mut b2 = Client::connect_live(&system.ws_url(), &bob2, Format::Binary).await?;
    for i in 1..=3 {
        a.send_acked(&bob, &format!("m{i}"), &format!("第{i}条"))
            .await?;
    }
    let entry = listed(&api, &bob, &conversation).await?;
    assert_eq!(num(&entry["unreadCount"]), 3, "{entry}");
    assert_eq!(entry["lastMessage"]["body"]["text"]["text"], "第3条");
    assert_eq!(
        num(&listed(&api, &alice, &conversation).await?["unreadCount"]),
        0
    );

    let read = format!("/v1/conversations/{conversation}/read");
    let (status, answer) = call(&api, Method::POST, &read, &bob, Some(json!({ "seq": 2 }))).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (num(&answer["readSeq"]), num(&answer["unreadCount"])),
        (2, 1)
    );
    // bob's other device and alice (the sender) are told.
    for client in [&mut b2, &mut a] {
        match client.next_notice().await? {
            inbox_entry::Event::Read(position) => {
                assert_eq!(
                    (position.user_id.as_str(), position.read_seq),
                    (bob.user_id.as_str(), 2)
                );
            }
            other => panic!("expected a read position, got {other:?}"),
        }
    }
    let seen_by_alice = listed(&api, &alice, &conversation).await?;
    assert_eq!(num(&seen_by_alice["peerReadSeq"]), 2);
    // Positions never go back; beyond the end is refused.
    let (_, answer) = call(&api, Method::POST, &read, &bob, Some(json!({ "seq": 1 }))).await?;
    assert_eq!(num(&answer["readSeq"]), 2);
    let (status, _) = call(&api, Method::POST, &read, &bob, Some(json!({ "seq": 9 }))).await?;
    assert_eq!(status, 400);
    let (status, _) = call(&api, Method::POST, &read, &carol, Some(json!({ "seq": 1 }))).await?;
    assert_eq!(status, 403, "a stranger to the conversation");

    // In a group, a read count per message on request.
    let (status, group) = api
        .post(
            "/v1/groups",
            Some(&alice.token),
            json!({ "name": "三人行", "memberIds": [bob.user_id, carol.user_id] }).to_string(),
        )
        .await?;
    assert_eq!(status, 201, "{group}");
    let group_conversation = group["conversationId"].as_str().unwrap_or("").to_owned();
    let ack = a.post(&group_conversation, "g1", "大家好").await?;
    let reads = format!(
        "/v1/conversations/{group_conversation}/messages/{}/reads",
        ack.seq
    );
    let (_, before) = call(&api, Method::GET, &reads, &alice, None).await?;
    assert_eq!(
        (num(&before["readCount"]), num(&before["memberCount"])),
        (0, 2),
        "{before}"
    );
    call(
        &api,
        Method::POST,
        &format!("/v1/conversations/{group_conversation}/read"),
        &carol,
        Some(json!({ "seq": ack.seq })),
    )
    .await?;
    let (_, after) = call(&api, Method::GET, &reads, &bob, None).await?;
    assert_eq!(num(&after["readCount"]), 1);
    assert_eq!(after["readerIds"], json!([carol.user_id]));
    let dave = api.user("dave").await?;
    let (status, _) = call(&api, Method::GET, &reads, &dave, None).await?;
    assert_eq!(status, 403);
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_conversations_come_first_on_every_device() -> anyhow::Result<()> {
    let (system, [alice, bob, carol]) =
        System::with_users(Mode::InProcess, ["alice", "bob", "carol"]).await?;
    let api = system.api();
    let alice2 = api.another_device(&alice).await?;
    let mut a = Client::connect_live(&system.ws_url(), &alice, Format::Json).await?;
    let mut a2 = Client::connect_live(&system.ws_url(), &alice2, Format::Json).await?;
    a.send_acked(&bob, "b1", "to bob").await?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    a.send_acked(&carol, "c1", "to carol").await?;
    let with_bob = direct_conversation(&alice.user_id, &bob.user_id);
    let with_carol = direct_conversation(&alice.user_id, &carol.user_id);
    let order = |list: &Value| -> Vec<String> {
        list["conversations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str().map(String::from))
            .collect()
    };
    let (_, list) = api.get("/v1/conversations", Some(&alice.token)).await?;
    assert_eq!(order(&list), [with_carol.clone(), with_bob.clone()]);

    let settings = format!("/v1/conversations/{with_bob}/settings");
    let (status, changed) = call(
        &api,
        Method::PATCH,
        &settings,
        &alice,
        Some(json!({ "pinned": true, "muted": true })),
    )
    .await?;
    assert_eq!(status, 200, "{changed}");
    match a2.next_notice().await? {
        inbox_entry::Event::Settings(s) => {
            assert!(s.pinned && s.muted && s.conversation_id == with_bob)
        }
        other => panic!("expected settings, got {other:?}"),
    }
    let (_, list) = api.get("/v1/conversations", Some(&alice2.token)).await?;
    assert_eq!(order(&list), [with_bob.clone(), with_carol.clone()]);
    assert_eq!(list["conversations"][0]["pinned"], true);
    assert_eq!(list["conversations"][0]["muted"], true);
    // Paging keeps the order across the pinned boundary.
    let (_, first) = api
        .get("/v1/conversations?limit=1", Some(&alice.token))
        .await?;
    assert_eq!(order(&first), [with_bob.as_str()]);
    let last = &first["conversations"][0];
    let next = format!(
        "/v1/conversations?limit=1&before_pinned=true&before_activity_ms={}&before_id={}",
        num(&last["lastActivityMs"]),
        with_bob
    );
    let (_, second) = api.get(&next, Some(&alice.token)).await?;
    assert_eq!(order(&second), [with_carol.as_str()], "{second}");
    // Unpinning only the pin keeps the mute.
    let (_, changed) = call(
        &api,
        Method::PATCH,
        &settings,
        &alice,
        Some(json!({ "pinned": false })),
    )
    .await?;
    assert_eq!(
        (changed["pinned"].as_bool(), changed["muted"].as_bool()),
        (None, Some(true))
    );
    let (status, _) = call(&api, Method::PATCH, &settings, &alice, Some(json!({}))).await?;
    assert_eq!(status, 400);
    let stranger = format!(
        "/v1/conversations/{}/settings",
        direct_conversation(&bob.user_id, &carol.user_id)
    );
    let (status, _) = call(
        &api,
        Method::PATCH,
        &stranger,
        &alice,
        Some(json!({ "pinned": true })),
    )
    .await?;
    assert_eq!(status, 403);
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_reaches_offline_devices_and_respects_the_window() -> anyhow::Result<()> {
    let settings = Settings {
        recall_window_secs: 2,
        ..Settings::default()
    };
    let (system, [alice, bob, carol]) =
        System::with_settings_and_users(Mode::InProcess, settings, ["alice", "bob", "carol"])
            .await?;
    let api = system.api();
    let bob2 = api.another_device(&bob).await?;
    let conversation = direct_conversation(&alice.user_id, &bob.user_id);
    let mut a = Client::connect_live(&system.ws_url(), &alice, Format::Json).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;
    let ack = a.send_acked(&bob, "oops", "发错了").await?;
    // The ack and the message say until when it can be recalled: the
    // server's window (2 s here), whatever a client assumes.
    assert_eq!(ack.recall_until_ms, ack.server_ts_ms + 2000);
    let received = b.messages(1).await?;
    assert_eq!(received[0].1.recall_until_ms, ack.server_ts_ms + 2000);

    let recall = format!(
        "/v1/conversations/{conversation}/messages/{}/recall",
        ack.seq
    );
    let (status, _) = call(&api, Method::POST, &recall, &bob, None).await?;
    assert_eq!(status, 403, "only the sender recalls in a direct chat");
    let (status, news) = call(&api, Method::POST, &recall, &alice, None).await?;
    assert_eq!(status, 200, "{news}");
    match b.next_notice().await? {
        inbox_entry::Event::Recalled(r) => assert_eq!(
            (r.seq, r.by_user_id.as_str()),
            (ack.seq, alice.user_id.as_str())
        ),
        other => panic!("expected a recall, got {other:?}"),
    }
    // A device that was offline gets the message and then its recall.
    let mut b2 = Client::connect_live(&system.ws_url(), &bob2, Format::Binary).await?;
    let got = b2.messages(1).await?;
    assert_eq!(got[0].1.seq, ack.seq);
    assert!(matches!(
        b2.next_notice().await?,
        inbox_entry::Event::Recalled(_)
    ));
    // The history shows it recalled, for both, no longer recallable.
    for who in [&alice, &bob] {
        let (_, history) = api.history(who, &conversation, "").await?;
        let message = &history["messages"][0];
        assert!(message["recallUntilMs"].is_null(), "{history}");
        assert_eq!(
            message["body"]["recalled"]["byUserId"],
            alice.user_id.as_str(),
            "{history}"
        );
        assert!(message["body"]["text"].is_null());
    }
    // Recalling again is harmless and answers the same.
    let (status, _) = call(&api, Method::POST, &recall, &alice, None).await?;
    assert_eq!(status, 200);

    // After the window, the sender may not recall...
    let late = a.send_acked(&bob, "late", "too late to take back").await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let path = format!(
        "/v1/conversations/{conversation}/messages/{}/recall",
        late.seq
    );
    let (status, body) = call(&api, Method::POST, &path, &alice, None).await?;
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("within 2 seconds"), "{body}");
    // ...but a group admin may recall any message of the group.
    let (_, group) = api
        .post(
            "/v1/groups",
            Some(&alice.token),
            json!({ "name": "管理", "memberIds": [bob.user_id, carol.user_id] }).to_string(),
        )
        .await?;
    let group_conversation = group["conversationId"].as_str().unwrap_or("").to_owned();
    let mut c = Client::connect_live(&system.ws_url(), &carol, Format::Json).await?;
    let carols = c.post(&group_conversation, "c1", "spam spam").await?;
    let path = format!(
        "/v1/conversations/{group_conversation}/messages/{}/recall",
        carols.seq
    );
    let (status, _) = call(&api, Method::POST, &path, &bob, None).await?;
    assert_eq!(status, 403, "a plain member cannot recall others' messages");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = call(&api, Method::POST, &path, &alice, None).await?;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(
        &api,
        Method::POST,
        &format!("/v1/conversations/{group_conversation}/messages/1/recall"),
        &alice,
        None,
    )
    .await?;
    assert_eq!(status, 400, "system notices stay");
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_cannot_recall_in_the_group() -> anyhow::Result<()> {
    let (system, [alice, bob, carol]) =
        System::with_users(Mode::InProcess, ["alice", "bob", "carol"]).await?;
    let api = system.api();
    let (_, group) = api
        .post(
            "/v1/groups",
            Some(&alice.token),
            json!({ "name": "临时", "memberIds": [bob.user_id, carol.user_id] }).to_string(),
        )
        .await?;
    let group_id = group["id"].as_str().unwrap_or("").to_owned();
    let conversation = group["conversationId"].as_str().unwrap_or("").to_owned();
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;
    let mut c = Client::connect_live(&system.ws_url(), &carol, Format::Json).await?;
    let bobs = b.post(&conversation, "b1", "said before leaving").await?;
    let (status, body) = call(
        &api,
        Method::DELETE,
        &format!("/v1/groups/{group_id}/members/{}", bob.user_id),
        &alice,
        None,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    // Once carol sees the notice of the removal, the conversation knows.
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|(_, m): &(u64, shared::proto::message::Message)| m.seq > bobs.seq)
    {
        seen.extend(c.messages(1).await?);
    }
    let path = format!(
        "/v1/conversations/{conversation}/messages/{}/recall",
        bobs.seq
    );
    let (status, body) = call(&api, Method::POST, &path, &bob, None).await?;
    assert_eq!(status, 403, "{body}");
    // The message stands for the members.
    let (_, history) = api.history(&carol, &conversation, "").await?;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["body"]["text"]["text"].as_str())
        .collect();
    assert!(texts.contains(&"said before leaving"), "{history}");
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_for_me_hides_only_from_me() -> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let api = system.api();
    let bob2 = api.another_device(&bob).await?;
    let conversation = direct_conversation(&alice.user_id, &bob.user_id);
    let mut a = Client::connect_live(&system.ws_url(), &alice, Format::Json).await?;
    let mut b2 = Client::connect_live(&system.ws_url(), &bob2, Format::Json).await?;
    for i in 1..=3 {
        a.send_acked(&bob, &format!("m{i}"), &format!("m{i}"))
            .await?;
    }
    b2.messages(3).await?;
    let delete = format!("/v1/conversations/{conversation}/messages/delete");
    let (status, body) = call(
        &api,
        Method::POST,
        &delete,
        &bob,
        Some(json!({ "seqs": [1, 3, 3] })),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    match b2.next_notice().await? {
        inbox_entry::Event::Deleted(d) => assert_eq!(d.seqs, [1, 3]),
        other => panic!("expected deleted, got {other:?}"),
    }
    let texts = |history: &Value| -> Vec<String> {
        history["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["body"]["text"]["text"].as_str().map(String::from))
            .collect()
    };
    let (_, mine) = api.history(&bob, &conversation, "").await?;
    assert_eq!(texts(&mine), ["m2"]);
    let (_, theirs) = api.history(&alice, &conversation, "").await?;
    assert_eq!(texts(&theirs), ["m1", "m2", "m3"]);
    for bad in [
        json!({ "seqs": [] }),
        json!({ "seqs": (1..=201).collect::<Vec<u32>>() }),
    ] {
        let (status, _) = call(&api, Method::POST, &delete, &bob, Some(bad)).await?;
        assert_eq!(status, 400);
    }
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_signalled_rate_limited_and_never_stored() -> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let api = system.api();
    let stranger = api.user("mallory").await?;
    let conversation = direct_conversation(&alice.user_id, &bob.user_id);
    let mut a = Client::connect_live(&system.ws_url(), &alice, Format::Json).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Binary).await?;
    // (the friend request and friendship of the setup)
    b.drain(Duration::from_millis(100)).await?;

    a.typing(&conversation).await?;
    let heard = b
        .signal_where(Duration::from_secs(5), |s| {
            matches!(&s.kind, Some(signal::Kind::Typing(_)))
        })
        .await?;
    let Some(signal::Kind::Typing(typing)) = heard.kind else {
        unreachable!()
    };
    assert_eq!(
        (typing.conversation_id.as_str(), typing.user_id.as_str()),
        (conversation.as_str(), alice.user_id.as_str())
    );
    // Too many in a row: refused with rate_limited.
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(a.typing(&conversation).await?);
    }
    let mut limited = 0;
    for id in ids {
        if tokio::time::timeout(Duration::from_millis(500), a.error_of(id))
            .await
            .is_ok_and(|e| e.is_ok_and(|e| e.code == "rate_limited"))
        {
            limited += 1;
        }
    }
    assert!(limited >= 3, "{limited} typing frames refused");
    // Never stored: no inbox entry and nothing in the history.
    b.expect_no_more_pushes().await?;
    let (_, history) = api.history(&bob, &conversation, "").await?;
    assert!(
        history["messages"].as_array().is_none_or(Vec::is_empty),
        "{history}"
    );
    // Someone who may not message bob may not type to him either.
    let mut m = Client::connect_live(&system.ws_url(), &stranger, Format::Json).await?;
    let id = m
        .typing(&direct_conversation(&stranger.user_id, &bob.user_id))
        .await?;
    assert_eq!(m.error_of(id).await?.code, "forbidden");
    let id = m.typing(&conversation).await?;
    assert_eq!(m.error_of(id).await?.code, "forbidden");
    let quiet = b.signals_within(Duration::from_millis(300)).await?;
    assert!(
        quiet.iter().all(
            |s| !matches!(&s.kind, Some(signal::Kind::Typing(t)) if t.user_id == stranger.user_id)
        ),
        "{quiet:?}"
    );
    system.stop().await;
    Ok(())
}
