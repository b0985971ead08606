//! Large groups (read fan-out): with the threshold set to 4 members, a group
//! that grows to 4 stops appending its messages to every member's inbox.
//! Its members still get every message once, in seq order; a late joiner
//! starts at its join; a removed member stops at its removal; an offline
//! member is told where the group stands and reads the rest from the
//! history; below half the threshold the group goes back to the inbox.

use std::time::Duration;

use e2e::{Api, Client, Format, Mode, Settings, System, User, text_of};
use prost::Message as _;
use reqwest::Method;
use serde_json::{Value, json};
use shared::proto::delivery::inbox_entry::Event;
use shared::proto::edge::{ServerFrame, server_frame};
use shared::proto::message::{GroupHead, Message, message_body};

async fn remove(api: &Api, members: &str, owner: &User, who: &User) -> anyhow::Result<()> {
    let (status, body) = api
        .send_method(
            Method::DELETE,
            &format!("{members}/{}", who.user_id),
            Some(&owner.token),
            None,
        )
        .await?;
    anyhow::ensure!(status == 200, "remove: {status} {body}");
    Ok(())
}

fn notice(message: &Message) -> &str {
    match message.body.as_ref().and_then(|b| b.kind.as_ref()) {
        Some(message_body::Kind::System(n)) => &n.kind,
        _ => "",
    }
}

/// `n` messages: their seqs, and whether each came through the inbox
/// (with a cursor) rather than as a large group's message.
async fn seqs(client: &mut Client, n: usize) -> anyhow::Result<Vec<(u64, bool)>> {
    Ok(client
        .messages(n)
        .await?
        .iter()
        .map(|(cursor, m)| (m.seq, *cursor > 0))
        .collect())
}

fn range(from: u64, to: u64, inbox: bool) -> Vec<(u64, bool)> {
    (from..=to).map(|s| (s, inbox)).collect()
}

/// Fails if a message (through the inbox or as a group message) arrives
/// within 300 ms; other inbox entries (markers) are fine.
async fn no_more_messages(client: &mut Client) -> anyhow::Result<()> {
    for frame in client.drain(std::time::Duration::from_millis(300)).await? {
        match frame.kind {
            Some(server_frame::Kind::GroupMessage(m)) => anyhow::bail!("unexpected {m:?}"),
            Some(server_frame::Kind::Push(p)) => {
                if let Some(Event::Message(m)) = p.entry.and_then(|e| e.event) {
                    anyhow::bail!("unexpected {m:?}");
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The next `groupHeads` frame's heads.
async fn group_heads(client: &mut Client) -> anyhow::Result<Vec<GroupHead>> {
    let frame = client
        .next_where(|f| matches!(f.kind, Some(server_frame::Kind::GroupHeads(_))))
        .await?;
    match frame.kind {
        Some(server_frame::Kind::GroupHeads(h)) => Ok(h.heads),
        other => anyhow::bail!("expected group heads, got {other:?}"),
    }
}

/// `owner` makes a group with `member` alone (large from the start in
/// tests whose threshold is 2); the member connects and gets the "created"
/// notice through its inbox, then the group's head. Returns the group's
/// conversation and the member's connection.
async fn pair_group(
    system: &System,
    owner: &User,
    member: &User,
    name: &str,
) -> anyhow::Result<(String, Client)> {
    let group = system.api().create_group(owner, name, &[member]).await?;
    let conversation = group["conversationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut client = Client::connect_live(&system.ws_url(), member, Format::Binary).await?;
    assert_eq!(seqs(&mut client, 1).await?, vec![(1, true)]);
    group_heads(&mut client).await?;
    Ok((conversation, client))
}

fn history_seqs(history: &Value) -> Vec<u64> {
    history["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["seq"].as_str()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_groups_use_read_fan_out_with_the_same_guarantees() -> anyhow::Result<()> {
    let settings = Settings {
        large_group_members: 4,
        ..Settings::default()
    };
    let (system, [alice, bob, carol, dave, erin]) = System::with_settings_and_users(
        Mode::InProcess,
        settings,
        ["alice", "bob", "carol", "dave", "erin"],
    )
    .await?;
    let api = system.api();
    let url = system.ws_url();
    let alice2 = api.another_device(&alice).await?;
    let mut a = Client::connect_live(&url, &alice, Format::Binary).await?;
    let mut a2 = Client::connect_live(&url, &alice2, Format::Json).await?;
    let mut c = Client::connect_live(&url, &carol, Format::Json).await?;
    let mut d = Client::connect_live(&url, &dave, Format::Binary).await?;
    let mut e = Client::connect_live(&url, &erin, Format::Json).await?;

    // Three members: write fan-out, every message through the inbox.
    let group = api
        .create_group(&alice, "大群 big group", &[&bob, &carol])
        .await?;
    let group_id = group["id"].as_str().unwrap_or_default().to_owned();
    let conversation = group["conversationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let members = format!("/v1/groups/{group_id}/members");
    a.post(&conversation, "small-1", "还是小群 still small")
        .await?;
    // The connection that sent a message has its ack, not the message.
    assert_eq!(seqs(&mut a, 1).await?, range(1, 1, true));
    for client in [&mut a2, &mut c] {
        assert_eq!(seqs(client, 2).await?, range(1, 2, true));
    }

    // dave makes four: the notice still goes through the inboxes, and from
    // then on messages are published once for the group.
    let (status, body) = api
        .send_method(
            Method::POST,
            &members,
            Some(&alice.token),
            Some(json!({ "userIds": [dave.user_id] })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    for client in [&mut a, &mut a2, &mut c, &mut d] {
        let got = client.messages(1).await?;
        assert_eq!((got[0].1.seq, got[0].0 > 0), (3, true));
        assert!(
            got[0].1.group_large,
            "the notice says the group is large now"
        );
    }
    let mut ids = Vec::new();
    for i in 4..=13u64 {
        ids.push(
            a.send_to(&conversation, &format!("big-{i}"), &format!("大家好 {i}"))
                .await?,
        );
    }
    for (i, id) in ids.into_iter().enumerate() {
        assert_eq!(a.ack_of(id).await?.seq, i as u64 + 4);
    }
    for client in [&mut a2, &mut c, &mut d] {
        let got = client.messages(10).await?;
        let order: Vec<(u64, bool)> = got.iter().map(|(cur, m)| (m.seq, *cur > 0)).collect();
        assert_eq!(order, range(4, 13, false));
        assert_eq!(text_of(&got[9].1), "大家好 13");
    }
    no_more_messages(&mut a).await?;

    // Garbage, a repeat and a forged gap on the group's subject change nothing.
    let nats = system.nats_client("natter").await?;
    let subject = shared::subject::group_push(&group_id);
    nats.publish(subject.clone(), "garbage".into()).await?;
    let repeat = Message {
        conversation_id: conversation.clone(),
        seq: 5,
        ..Default::default()
    };
    nats.publish(subject.clone(), repeat.encode_to_vec().into())
        .await?;
    let forged = Message {
        conversation_id: conversation.clone(),
        seq: 99,
        body: Some(e2e::text("forged")),
        ..Default::default()
    };
    nats.publish(subject, forged.encode_to_vec().into()).await?;
    nats.flush().await?;
    c.expect_no_more_pushes().await?;

    // bob was offline all along: his inbox holds what came before the switch,
    // then he is told where the group stands and reads the rest.
    let mut b = Client::connect(&url, &bob, Format::Json).await?;
    b.resume(0).await?;
    b.caught_up().await?;
    assert_eq!(seqs(&mut b, 3).await?, range(1, 3, true));
    let heads = group_heads(&mut b).await?;
    assert_eq!(heads.len(), 1);
    assert_eq!(
        (heads[0].conversation_id.as_str(), heads[0].last_seq),
        (conversation.as_str(), 13)
    );
    let (_, history) = api.history(&bob, &conversation, "after_seq=3").await?;
    assert_eq!(history_seqs(&history), (4..=13).collect::<Vec<_>>());

    // erin joins: her notice comes through her inbox, then the group's
    // messages; her history starts at her join.
    let (status, body) = api
        .send_method(
            Method::POST,
            &members,
            Some(&alice.token),
            Some(json!({ "userIds": [erin.user_id] })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let got = e.messages(1).await?;
    assert_eq!((got[0].1.seq, got[0].0 > 0), (14, true));
    assert_eq!(notice(&got[0].1), "member_added");
    a.post(&conversation, "welcome", "欢迎 erin").await?;
    assert_eq!(seqs(&mut e, 1).await?, vec![(15, false)]);
    assert_eq!(seqs(&mut a, 1).await?, vec![(14, false)]);
    for client in [&mut a2, &mut b, &mut c, &mut d] {
        assert_eq!(seqs(client, 2).await?, range(14, 15, false));
    }
    let (_, history) = api.history(&erin, &conversation, "").await?;
    assert_eq!(history_seqs(&history), vec![14, 15]);

    // carol is removed: she gets the notice once, and a marker in her inbox
    // for her other devices, then nothing more.
    remove(&api, &members, &alice, &carol).await?;
    let (mut notices, mut markers) = (Vec::new(), Vec::new());
    while notices.is_empty() || markers.is_empty() {
        let frame = c
            .next_where(|f: &ServerFrame| {
                matches!(
                    f.kind,
                    Some(server_frame::Kind::Push(_) | server_frame::Kind::GroupMessage(_))
                )
            })
            .await?;
        match frame.kind {
            Some(server_frame::Kind::GroupMessage(m)) => {
                notices.push((m.seq, notice(&m).to_owned()))
            }
            Some(server_frame::Kind::Push(p)) => match p.entry.and_then(|e| e.event) {
                Some(Event::Membership(m)) => markers.push((m.conversation_id, m.seq)),
                other => anyhow::bail!("unexpected inbox entry {other:?}"),
            },
            _ => {}
        }
    }
    assert_eq!(notices, vec![(16, "member_removed".to_owned())]);
    assert_eq!(markers, vec![(conversation.clone(), 16)]);
    a.post(&conversation, "after-carol", "carol 走了").await?;
    assert_eq!(seqs(&mut a, 1).await?, vec![(16, false)]);
    for client in [&mut a2, &mut b, &mut d, &mut e] {
        assert_eq!(seqs(client, 2).await?, range(16, 17, false));
    }
    c.expect_no_more_pushes().await?;
    let id = c.send_to(&conversation, "c-late", "还在吗?").await?;
    assert_eq!(c.error_of(id).await?.code, "forbidden");
    let (_, history) = api.history(&carol, &conversation, "after_seq=13").await?;
    assert_eq!(history_seqs(&history), vec![14, 15, 16]);

    // Down to alice alone (below half the threshold): the notice that
    // shrinks the group goes through the inboxes again, and so does what follows.
    remove(&api, &members, &alice, &dave).await?;
    remove(&api, &members, &alice, &erin).await?;
    remove(&api, &members, &alice, &bob).await?;
    for client in [&mut a, &mut a2] {
        let got = client.messages(3).await?;
        let order: Vec<(u64, bool)> = got.iter().map(|(cur, m)| (m.seq, *cur > 0)).collect();
        assert_eq!(order, vec![(18, false), (19, false), (20, true)]);
        assert!(got[1].1.group_large && !got[2].1.group_large);
    }
    a.post(&conversation, "alone", "一个人").await?;
    assert_eq!(seqs(&mut a2, 1).await?, vec![(21, true)]);
    no_more_messages(&mut a).await?;
    // Each removed member saw the group up to its own removal, and not after.
    assert_eq!(seqs(&mut d, 1).await?, vec![(18, false)]);
    assert_eq!(seqs(&mut e, 2).await?, range(18, 19, false));
    assert_eq!(
        seqs(&mut b, 3).await?,
        vec![(18, false), (19, false), (20, true)]
    );
    for client in [&mut b, &mut d, &mut e] {
        no_more_messages(client).await?;
    }
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_and_the_dismissal_of_a_large_group() -> anyhow::Result<()> {
    let settings = Settings {
        large_group_members: 3,
        ..Settings::default()
    };
    let (system, [alice, bob, carol]) =
        System::with_settings_and_users(Mode::InProcess, settings, ["alice", "bob", "carol"])
            .await?;
    let api = system.api();
    let url = system.ws_url();
    // Created large: the creation notice goes through the inboxes (the
    // group was nothing before), then read fan-out.
    let group = api.create_group(&alice, "三人行", &[&bob, &carol]).await?;
    let group_id = group["id"].as_str().unwrap_or_default().to_owned();
    let conversation = group["conversationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut a = Client::connect_live(&url, &alice, Format::Json).await?;
    let got = a.messages(1).await?;
    assert_eq!(
        (got[0].1.seq, got[0].0 > 0, got[0].1.group_large),
        (1, true, true)
    );
    // Alice follows the group before she sends to it.
    assert_eq!(
        group_heads(&mut a)
            .await?
            .iter()
            .map(|h| h.last_seq)
            .collect::<Vec<_>>(),
        vec![1]
    );
    let mut b = Client::connect_live(&url, &bob, Format::Binary).await?;
    let cursor = b.messages(1).await?[0].0;
    let heads = group_heads(&mut b).await?;
    assert_eq!(
        heads.iter().map(|h| h.last_seq).collect::<Vec<_>>(),
        vec![1]
    );
    for i in 2..=4u64 {
        assert_eq!(
            a.post(&conversation, &format!("m{i}"), "你好").await?.seq,
            i
        );
    }
    assert_eq!(seqs(&mut b, 3).await?, range(2, 4, false));
    // The sending connection has its acks.
    no_more_messages(&mut a).await?;

    // A second resume on the same connection: the heads say what it has
    // (4), and nothing is sent twice.
    b.resume(cursor).await?;
    b.caught_up().await?;
    let heads = group_heads(&mut b).await?;
    assert_eq!(
        heads.iter().map(|h| h.last_seq).collect::<Vec<_>>(),
        vec![4]
    );
    a.post(&conversation, "m5", "继续").await?;
    assert_eq!(seqs(&mut b, 1).await?, vec![(5, false)]);
    no_more_messages(&mut b).await?;
    no_more_messages(&mut a).await?;

    // carol comes back with her cursor: her inbox has the creation, the
    // heads say 5.
    let mut c = Client::connect_live(&url, &carol, Format::Json).await?;
    assert_eq!(seqs(&mut c, 1).await?, vec![(1, true)]);
    let heads = group_heads(&mut c).await?;
    assert_eq!(
        heads
            .iter()
            .map(|h| (h.conversation_id.as_str(), h.last_seq))
            .collect::<Vec<_>>(),
        vec![(conversation.as_str(), 5)]
    );
    c.close().await;

    // The dismissal reaches everyone through the inbox, offline carol too.
    let (status, body) = api
        .send_method(
            Method::DELETE,
            &format!("/v1/groups/{group_id}"),
            Some(&alice.token),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    for client in [&mut a, &mut b] {
        let got = client.messages(1).await?;
        assert_eq!((got[0].1.seq, got[0].0 > 0), (6, true));
        assert_eq!(notice(&got[0].1), "dismissed");
        assert!(!got[0].1.group_large);
        no_more_messages(client).await?;
    }
    let mut c = Client::connect_live(&url, &carol, Format::Json).await?;
    let got = c.messages(2).await?;
    assert_eq!((got[1].1.seq, notice(&got[1].1)), (6, "dismissed"));
    let heads = group_heads(&mut c).await?;
    assert!(heads.is_empty(), "{heads:?}");
    system.stop().await;
    Ok(())
}

/// A message of a large group stored but never published live, as if its
/// push was lost on the way (a leaf node's link down for a moment): the
/// edge's periodic check finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_group_message_is_found_by_the_periodic_check() -> anyhow::Result<()> {
    let settings = Settings {
        large_group_members: 2,
        ..Settings::default()
    };
    let (system, [alice, bob]) =
        System::with_settings_and_users(Mode::InProcess, settings, ["alice", "bob"]).await?;
    let (conversation, mut b) = pair_group(&system, &alice, &bob, "两人").await?;

    sqlx::any::install_default_drivers();
    let mut db =
        <sqlx::AnyConnection as sqlx::Connection>::connect(&system.messages_db_url()).await?;
    sqlx::query("UPDATE conversations SET last_seq = 2, fanned_seq = 2 WHERE id = $1")
        .bind(&conversation)
        .execute(&mut db)
        .await?;
    sqlx::query(
        "INSERT INTO messages (id, conversation_id, seq, sender_id, sender_device_id, client_msg_id, body, server_ts_ms, reply_to, delivery, group_large)
         VALUES ('lost-1', $1, 2, $2, 'd', 'lost-1', $3, 1, '', 1, 1)",
    )
    .bind(&conversation)
    .bind(&alice.user_id)
    .bind(r#"{"text":{"text":"没人推送 nobody pushed me"}}"#)
    .execute(&mut db)
    .await?;
    // The edge checks its large groups every second in tests.
    let got = b.messages(1).await?;
    assert_eq!((got[0].0, got[0].1.seq), (0, 2));
    assert_eq!(text_of(&got[0].1), "没人推送 nobody pushed me");
    no_more_messages(&mut b).await?;
    system.stop().await;
    Ok(())
}

/// A member that stops reading falls so far behind that its connection's
/// queue of group messages overflows and messages are dropped for it. Once
/// it reads again it gets every message once, in order, and without waiting
/// for the periodic check (an hour away here), even though the history it
/// fills the gap from is away at first: the messages service is killed
/// before the member reads and started again 3 s later, and the edge
/// retries the failed fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_dropped_for_a_slow_member_follow_as_soon_as_it_reads() -> anyhow::Result<()> {
    let settings = Settings {
        large_group_members: 2,
        inbox_check_secs: 3600,
        send_queue: 16,
        slow_client_timeout_secs: 120,
        ..Settings::default()
    };
    let (mut system, [alice, bob]) =
        System::with_settings_and_users(Mode::Split, settings, ["alice", "bob"]).await?;
    let (conversation, mut b) = pair_group(&system, &alice, &bob, "慢读者").await?;

    // More than bob's socket buffers, its frame queue and its group queue
    // (1,024) hold together, while bob reads nothing.
    const N: u64 = 1600;
    let text = "满".repeat(4000);
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Binary).await?;
    for chunk in (1..=N).collect::<Vec<_>>().chunks(50) {
        let mut ids = Vec::new();
        for i in chunk {
            ids.push(a.send_to(&conversation, &format!("m{i}"), &text).await?);
        }
        for id in ids {
            a.ack_of(id).await?;
        }
    }
    system.kill_process(e2e::Service::Messages);
    let reader = tokio::spawn(async move {
        let got = seqs(&mut b, N as usize).await?;
        no_more_messages(&mut b).await?;
        anyhow::Ok(got)
    });
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    anyhow::ensure!(
        !reader.is_finished(),
        "the dropped messages came without the history"
    );
    system.spawn_process(e2e::Service::Messages)?;
    assert_eq!(reader.await??, range(2, N + 1, false));
    system.stop().await;
    Ok(())
}

/// The messages service is killed (SIGKILL) while a large group's messages
/// stream in, then restarted: every acked message reaches every connected
/// member once, in order (the sweep publishes what was stored but not
/// published; edges fill any gap from the history).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_messages_service_loses_no_group_message() -> anyhow::Result<()> {
    let settings = Settings {
        large_group_members: 2,
        ..Settings::default()
    };
    let (mut system, [alice, bob, carol]) =
        System::with_settings_and_users(Mode::Split, settings, ["alice", "bob", "carol"]).await?;
    let api = system.api();
    let group = api
        .create_group(&alice, "不怕崩溃", &[&bob, &carol])
        .await?;
    let conversation = group["conversationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    const N: u64 = 60;
    let mut readers = Vec::new();
    for user in [&bob, &carol] {
        let mut client = Client::connect_live(&system.ws_url(), user, Format::Binary).await?;
        assert_eq!(seqs(&mut client, 1).await?, vec![(1, true)]);
        // The group stands at seq 1 when the connection starts following
        // it: every later message reaches it as a group message. (A message
        // sent before this frame would be counted in its head instead.)
        let heads = group_heads(&mut client).await?;
        assert_eq!(
            heads
                .iter()
                .map(|h| (h.conversation_id.as_str(), h.last_seq))
                .collect::<Vec<_>>(),
            vec![(conversation.as_str(), 1)]
        );
        readers.push(tokio::spawn(async move {
            let got = seqs(&mut client, N as usize).await?;
            no_more_messages(&mut client).await?;
            anyhow::Ok(got)
        }));
    }
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let sender = {
        let (url, conversation) = (system.ws_url(), conversation.clone());
        tokio::spawn(async move {
            let mut client = Client::connect(&url, &alice, Format::Json).await?;
            let mut retries = 0;
            for i in 1..=N {
                loop {
                    let id = client
                        .send_to(&conversation, &format!("g{i}"), &format!("第 {i} 条"))
                        .await?;
                    match client.reply(id).await?.kind {
                        Some(server_frame::Kind::Ack(ack)) => {
                            anyhow::ensure!(
                                ack.seq == i + 1,
                                "message {i} acked with seq {}",
                                ack.seq
                            );
                            break;
                        }
                        Some(server_frame::Kind::Error(e))
                            if ["unavailable", "internal"].contains(&e.code.as_str()) =>
                        {
                            retries += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                        other => anyhow::bail!("unexpected answer to message {i}: {other:?}"),
                    }
                }
                let _ = progress_tx.send(i);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            anyhow::Ok(retries)
        })
    };
    progress.wait_for(|acked| *acked >= N / 3).await?;
    system.kill_process(e2e::Service::Messages);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    system.spawn_process(e2e::Service::Messages)?;
    let retries = sender.await??;
    assert!(retries > 0, "the kill should have made some sends fail");
    for reader in readers {
        assert_eq!(reader.await??, range(2, N + 1, false));
    }
    Ok(())
}

/// A sender with one device and one connection gets no inbox copy of what
/// it sends, but a large group's messages go to no inbox anyway: the
/// group's push reaches the sending connection, which knows it as its echo
/// only while the batch's answer does not say "no copy" (else, when the ack
/// overtakes the push at the edge, the push is shown again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_group_message_is_never_answered_as_not_copied() -> anyhow::Result<()> {
    use shared::endpoint::endpoints::MessageSendBatch;
    use shared::proto::message as msg_pb;
    let settings = Settings {
        large_group_members: 2,
        ..Settings::default()
    };
    let (system, [alice, bob]) =
        System::with_settings_and_users(Mode::InProcess, settings, ["alice", "bob"]).await?;
    let (group, mut b) = pair_group(&system, &alice, &bob, "两个人").await?;
    let direct = shared::ids::direct_conversation(&alice.user_id, &bob.user_id);
    let caller =
        shared::rpc::Caller::new(system.nats_client("natter").await?, Duration::from_secs(5));
    // As an edge would send them: from alice's only connection.
    let item = |conversation: &str, client_msg_id: &str| msg_pb::SendItem {
        user_id: alice.user_id.clone(),
        device_id: alice.device_id.clone(),
        send: Some(msg_pb::SendRequest {
            conversation_id: conversation.to_owned(),
            client_msg_id: client_msg_id.to_owned(),
            body: Some(msg_pb::MessageBody {
                kind: Some(msg_pb::message_body::Kind::Text(msg_pb::Text {
                    text: "回声?".into(),
                })),
            }),
            ..Default::default()
        }),
        sole_connection: true,
    };
    let answer = caller
        .call_to::<MessageSendBatch>(&msg_pb::SendBatchRequest {
            items: vec![item(&group, "g1"), item(&direct, "d1")],
        })
        .await?;
    let copied: Vec<(bool, bool)> = answer
        .results
        .iter()
        .map(|r| {
            let acked = matches!(r.result, Some(msg_pb::send_result::Result::Ack(_)));
            (acked, r.sender_not_copied)
        })
        .collect();
    // The group's message: acked, never "not copied"; the direct one: no copy.
    assert_eq!(copied, [(true, false), (true, true)]);
    assert_eq!(seqs(&mut b, 2).await?.len(), 2);
    system.stop().await;
    Ok(())
}
