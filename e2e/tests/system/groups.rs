//! Groups: creation, group chat through the same inbox delivery, roles,
//! removal and late joining, leaving, mutes, names, dismissal and limits,
//! with the refusals.

use e2e::{Api, Client, Format, Mode, Settings, System, User, text_of};
use reqwest::Method;
use serde_json::{Value, json};
use shared::proto::message::{Message, message_body};

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

/// The system notice kind of a message ("" for user messages).
fn notice(message: &Message) -> &str {
    match message.body.as_ref().and_then(|b| b.kind.as_ref()) {
        Some(message_body::Kind::System(n)) => &n.kind,
        _ => "",
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_chat_reaches_every_member_in_order_and_refuses_outsiders() -> anyhow::Result<()> {
    let (system, [alice, bob, carol, dave]) =
        System::with_users(Mode::InProcess, ["alice", "bob", "carol", "dave"]).await?;
    let api = system.api();
    let mut a = Client::connect_live(&system.ws_url(), &alice, Format::Binary).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;
    let mut c = Client::connect_live(&system.ws_url(), &carol, Format::Binary).await?;

    let group = api
        .create_group(&alice, "周末爬山", &[&bob, &carol])
        .await?;
    assert_eq!(group["memberCount"], 3);
    assert_eq!(group["me"]["role"], "owner");
    let conversation = str_of(&group, "conversationId").to_owned();
    let group_id = str_of(&group, "id").to_owned();
    for client in [&mut a, &mut b, &mut c] {
        let got = client.messages(1).await?;
        assert_eq!((got[0].1.seq, notice(&got[0].1)), (1, "created"));
    }

    for i in 1..=10u64 {
        let (client, who) = if i % 2 == 0 {
            (&mut b, "bob")
        } else {
            (&mut a, "alice")
        };
        let ack = client
            .post(&conversation, &format!("g{i}"), &format!("{who} 说 {i}"))
            .await?;
        assert_eq!(ack.seq, i + 1);
    }
    // Alice's messages are seqs 2, 4, .. 10, Bob's 3, 5, .. 11. The
    // connection that sent a message has its ack: it gets the others'.
    let theirs = |sender_parity: Option<u64>| -> Vec<u64> {
        (2..=11u64)
            .filter(|s| sender_parity.is_none_or(|p| s % 2 != p))
            .collect()
    };
    for (client, mine, last) in [
        (&mut a, Some(0), "bob 说 10"),
        (&mut b, Some(1), "alice 说 9"),
        (&mut c, None, "bob 说 10"),
    ] {
        let expected = theirs(mine);
        let got = client.messages(expected.len()).await?;
        let seqs: Vec<u64> = got.iter().map(|(_, m)| m.seq).collect();
        assert_eq!(seqs, expected);
        assert_eq!(got.last().map(|(_, m)| text_of(m)), Some(last));
    }
    a.expect_no_more_pushes().await?;
    b.expect_no_more_pushes().await?;

    // An outsider can neither send, read, nor look inside.
    let mut d = Client::connect_live(&system.ws_url(), &dave, Format::Json).await?;
    let id = d.send_to(&conversation, "x1", "let me in").await?;
    assert_eq!(d.error_of(id).await?.code, "forbidden");
    let (status, _) = api.history(&dave, &conversation, "").await?;
    assert_eq!(status, 403);
    let (status, _) = call(
        &api,
        Method::GET,
        &format!("/v1/groups/{group_id}"),
        &dave,
        None,
    )
    .await?;
    assert_eq!(status, 403);
    let (status, _) = call(
        &api,
        Method::GET,
        &format!("/v1/groups/{group_id}/members"),
        &dave,
        None,
    )
    .await?;
    assert_eq!(status, 403);
    c.expect_no_more_pushes().await?;

    // Members see the group, its members and its conversation.
    let (status, members) = call(
        &api,
        Method::GET,
        &format!("/v1/groups/{group_id}/members"),
        &carol,
        None,
    )
    .await?;
    assert_eq!(status, 200, "{members}");
    let mut roles: Vec<(String, String)> = members["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| (str_of(m, "userId").to_owned(), str_of(m, "role").to_owned()))
        .collect();
    roles.sort();
    let mut expected = vec![
        (alice.user_id.clone(), "owner".to_owned()),
        (bob.user_id.clone(), "member".to_owned()),
        (carol.user_id.clone(), "member".to_owned()),
    ];
    expected.sort();
    assert_eq!(roles, expected);
    let (_, mine) = call(&api, Method::GET, "/v1/groups", &bob, None).await?;
    assert_eq!(mine["groups"][0]["name"], "周末爬山");
    let (_, list) = api.get("/v1/conversations", Some(&carol.token)).await?;
    let entry = list["conversations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"] == conversation.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(entry["kind"], "group", "{list}");
    assert_eq!(entry["title"], "周末爬山", "{list}");
    let (status, history) = api.history(&carol, &conversation, "").await?;
    assert_eq!(status, 200);
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(11));
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_members_and_a_removed_member_stops_at_once() -> anyhow::Result<()> {
    let (system, [alice, bob, carol, dave]) =
        System::with_users(Mode::InProcess, ["alice", "bob", "carol", "dave"]).await?;
    let api = system.api();
    let group = api.create_group(&alice, "team", &[&bob, &carol]).await?;
    let (group_id, conversation) = (
        str_of(&group, "id").to_owned(),
        str_of(&group, "conversationId").to_owned(),
    );
    let members = format!("/v1/groups/{group_id}/members");
    let mut a = Client::connect_live(&system.ws_url(), &alice, Format::Json).await?;
    let mut c = Client::connect_live(&system.ws_url(), &carol, Format::Json).await?;
    a.messages(1).await?;
    c.messages(1).await?;

    // A plain member may neither invite nor remove.
    let invite = json!({ "userIds": [dave.user_id] });
    let (status, body) = call(&api, Method::POST, &members, &bob, Some(invite.clone())).await?;
    assert_eq!(status, 403, "{body}");
    let (status, _) = call(
        &api,
        Method::DELETE,
        &format!("{members}/{}", carol.user_id),
        &bob,
        None,
    )
    .await?;
    assert_eq!(status, 403);
    // The owner makes bob an admin; bob removes carol but not the owner.
    let (status, body) = call(
        &api,
        Method::PUT,
        &format!("{members}/{}/role", bob.user_id),
        &alice,
        Some(json!({ "role": "admin" })),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(
        &api,
        Method::DELETE,
        &format!("{members}/{}", alice.user_id),
        &bob,
        None,
    )
    .await?;
    assert_eq!(status, 403);
    let (status, body) = call(
        &api,
        Method::DELETE,
        &format!("{members}/{}", carol.user_id),
        &bob,
        None,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["memberCount"], 2);

    // carol hears of the role change and of her removal, and then nothing.
    let got = c.messages(2).await?;
    assert_eq!(notice(&got[0].1), "role_changed");
    assert_eq!(notice(&got[1].1), "member_removed");
    let removed_at = got[1].1.seq;
    let ack = a.post(&conversation, "after-1", "carol is gone").await?;
    assert_eq!(ack.seq, removed_at + 1);
    c.expect_no_more_pushes().await?;
    let id = c
        .send_to(&conversation, "c-late", "am I still here?")
        .await?;
    assert_eq!(c.error_of(id).await?.code, "forbidden");
    // Her history ends at her removal.
    let (status, history) = api.history(&carol, &conversation, "").await?;
    assert_eq!(status, 200, "{history}");
    let seqs: Vec<u64> = history["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["seq"].as_str()?.parse().ok())
        .collect();
    assert_eq!(seqs.last(), Some(&removed_at), "{history}");
    let (status, _) = api
        .history(&carol, &conversation, &format!("after_seq={removed_at}"))
        .await?;
    assert_eq!(status, 200);

    // dave, invited later, reads from his join point on.
    let (status, body) = call(&api, Method::POST, &members, &bob, Some(invite)).await?;
    assert_eq!(status, 200, "{body}");
    let (_, history) = api.history(&dave, &conversation, "").await?;
    let first = &history["messages"][0];
    assert_eq!(first["body"]["system"]["kind"], "member_added", "{history}");
    assert_eq!(first["seq"], (removed_at + 2).to_string());
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(1));
    let mut d = Client::connect_live(&system.ws_url(), &dave, Format::Json).await?;
    d.messages(1).await?;
    a.post(&conversation, "after-2", "welcome dave").await?;
    let got = d.messages(1).await?;
    assert_eq!(text_of(&got[0].1), "welcome dave");

    // A user who is not the inviter's friend cannot be added.
    let erin = api.user("erin").await?;
    let (status, body) = call(
        &api,
        Method::POST,
        &members,
        &alice,
        Some(json!({ "userIds": [erin.user_id] })),
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_mutes_names_and_dismissal() -> anyhow::Result<()> {
    let (system, [alice, bob, carol]) =
        System::with_users(Mode::InProcess, ["alice", "bob", "carol"]).await?;
    let api = system.api();
    let group = api
        .create_group(&alice, "book club", &[&bob, &carol])
        .await?;
    let (group_id, conversation) = (
        str_of(&group, "id").to_owned(),
        str_of(&group, "conversationId").to_owned(),
    );
    let path = format!("/v1/groups/{group_id}");
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;
    let mut c = Client::connect_live(&system.ws_url(), &carol, Format::Json).await?;

    // The owner leaves only after handing the group over.
    let (status, body) = call(&api, Method::POST, &format!("{path}/leave"), &alice, None).await?;
    assert_eq!(status, 409, "{body}");
    let (status, body) = call(
        &api,
        Method::POST,
        &format!("{path}/transfer"),
        &alice,
        Some(json!({ "userId": bob.user_id })),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ownerId"], bob.user_id.as_str());
    assert_eq!(body["me"]["role"], "admin");
    let (status, _) = call(&api, Method::POST, &format!("{path}/leave"), &alice, None).await?;
    assert_eq!(status, 200);
    let (status, _) = call(&api, Method::GET, &path, &alice, None).await?;
    assert_eq!(status, 403, "a former member cannot look inside");

    // Muting one member, then the whole group; the owner always speaks.
    let mute = |user: &str, muted: bool| json!({ "userId": user, "muted": muted });
    let (status, body) = call(
        &api,
        Method::POST,
        &format!("{path}/mute"),
        &carol,
        Some(mute(&bob.user_id, true)),
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(
        &api,
        Method::POST,
        &format!("{path}/mute"),
        &bob,
        Some(mute(&carol.user_id, true)),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let id = c.send_to(&conversation, "c1", "hello?").await?;
    let refused = c.error_of(id).await?;
    assert_eq!(refused.code, "forbidden");
    assert!(refused.message.contains("muted"), "{refused:?}");
    call(
        &api,
        Method::POST,
        &format!("{path}/mute"),
        &bob,
        Some(mute(&carol.user_id, false)),
    )
    .await?;
    c.post(&conversation, "c2", "I can talk again").await?;
    let (status, _) = call(
        &api,
        Method::POST,
        &format!("{path}/mute"),
        &bob,
        Some(json!({ "muted": true })),
    )
    .await?;
    assert_eq!(status, 200);
    let id = c.send_to(&conversation, "c3", "and now?").await?;
    assert_eq!(c.error_of(id).await?.code, "forbidden");
    b.post(&conversation, "b1", "only admins speak now").await?;
    call(
        &api,
        Method::POST,
        &format!("{path}/mute"),
        &bob,
        Some(json!({ "muted": false })),
    )
    .await?;
    c.post(&conversation, "c4", "free again").await?;

    // Names and announcements: managers only, told to everyone in order.
    let (status, _) = call(
        &api,
        Method::PATCH,
        &path,
        &carol,
        Some(json!({ "name": "mine now" })),
    )
    .await?;
    assert_eq!(status, 403);
    let (status, body) = call(
        &api,
        Method::PATCH,
        &path,
        &bob,
        Some(json!({ "name": "读书会" })),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "读书会");
    let (status, _) = call(
        &api,
        Method::PATCH,
        &path,
        &bob,
        Some(json!({ "announcement": "每周六下午三点\n带上你的书" })),
    )
    .await?;
    assert_eq!(status, 200);
    let (status, body) = call(
        &api,
        Method::PATCH,
        &path,
        &bob,
        Some(json!({ "name": "" })),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    // Carol's own messages ("I can talk again", "free again") are not
    // pushed back to her connection: their acks stand for them.
    let kinds: Vec<String> = c
        .messages(10)
        .await?
        .iter()
        .map(|(_, m)| {
            let kind = notice(m);
            if kind.is_empty() {
                text_of(m).to_owned()
            } else {
                kind.to_owned()
            }
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "owner_changed",
            "member_left",
            "muted",
            "unmuted",
            "muted_all",
            "only admins speak now",
            "unmuted_all",
            "renamed",
            "announcement",
        ]
    );
    let (_, list) = api.get("/v1/conversations", Some(&carol.token)).await?;
    assert_eq!(list["conversations"][0]["title"], "读书会", "{list}");

    // Only the owner dismisses; then nobody speaks and the group is gone.
    let (status, _) = call(&api, Method::DELETE, &path, &carol, None).await?;
    assert_eq!(status, 403);
    let (status, body) = call(&api, Method::DELETE, &path, &bob, None).await?;
    assert_eq!(status, 200, "{body}");
    let got = c.messages(1).await?;
    assert_eq!(notice(&got[0].1), "dismissed");
    let id = b.send_to(&conversation, "b2", "anyone?").await?;
    assert_eq!(b.error_of(id).await?.code, "forbidden");
    let (status, _) = call(&api, Method::GET, &path, &bob, None).await?;
    assert_eq!(status, 404);
    // The history stays readable up to the end.
    let (status, history) = api.history(&carol, &conversation, "").await?;
    assert_eq!(status, 200);
    let last = history["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["body"]["system"]["kind"], "dismissed");
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_have_a_size_limit_and_bad_requests_are_refused() -> anyhow::Result<()> {
    let settings = Settings {
        group_max_members: 3,
        ..Settings::default()
    };
    let (system, [alice, bob, carol, dave]) = System::with_settings_and_users(
        Mode::InProcess,
        settings,
        ["alice", "bob", "carol", "dave"],
    )
    .await?;
    let api = system.api();
    let too_many = api
        .post(
            "/v1/groups",
            Some(&alice.token),
            json!({ "name": "big", "memberIds": [bob.user_id, carol.user_id, dave.user_id] })
                .to_string(),
        )
        .await?;
    assert_eq!(too_many.0, 409, "{}", too_many.1);
    let group = api.create_group(&alice, "small", &[&bob]).await?;
    let members = format!("/v1/groups/{}/members", str_of(&group, "id"));
    let (status, _) = call(
        &api,
        Method::POST,
        &members,
        &alice,
        Some(json!({ "userIds": [carol.user_id] })),
    )
    .await?;
    assert_eq!(status, 200);
    let (status, body) = call(
        &api,
        Method::POST,
        &members,
        &alice,
        Some(json!({ "userIds": [dave.user_id] })),
    )
    .await?;
    assert_eq!(status, 409, "{body}");

    for (body, expected) in [
        (json!({ "name": "" }), 400),
        (json!({ "name": "群".repeat(65) }), 400),
        (json!({ "name": "x", "memberIds": ["a.b"] }), 400),
        (json!({ "name": "x", "memberIds": ["nobody"] }), 404),
        (json!({ "name": "x", "bogus": 1 }), 400),
    ] {
        let (status, answer) = api
            .post("/v1/groups", Some(&alice.token), body.to_string())
            .await?;
        assert_eq!(status.as_u16(), expected, "{body}: {answer}");
    }
    let (status, _) = call(&api, Method::GET, "/v1/groups/no-such-group", &alice, None).await?;
    assert_eq!(status, 404);
    let (status, _) = call(&api, Method::GET, "/v1/groups/a.b", &alice, None).await?;
    assert_eq!(status, 400);
    // Users cannot forge system notices.
    let mut a = Client::connect_live(&system.ws_url(), &alice, Format::Json).await?;
    let conversation = str_of(&group, "conversationId").to_owned();
    let id = a
        .send_frame(shared::proto::edge::client_frame::Kind::Send(
            shared::proto::message::SendRequest {
                conversation_id: conversation.clone(),
                client_msg_id: "forged".into(),
                body: Some(shared::proto::message::MessageBody {
                    kind: Some(message_body::Kind::System(Default::default())),
                }),
                ..Default::default()
            },
        ))
        .await?;
    assert_eq!(a.error_of(id).await?.code, "bad_request");
    let id = a.send_to(&conversation, "sys:x", "sneaky").await?;
    assert_eq!(a.error_of(id).await?.code, "bad_request");
    system.stop().await;
    Ok(())
}
