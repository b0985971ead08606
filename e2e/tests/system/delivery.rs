//! Delivery survives what can go wrong between the services and the edge:
//! lost, duplicated and garbage pushes, and a crash of the NATS server itself.

use std::time::Duration;

use futures::StreamExt as _;

use e2e::{Client, Format, Mode, Stream, System, text_of};
use prost::Message as _;
use shared::proto::delivery::{InboxEntry, Push, PushBatch, UserPush, inbox_entry};
use shared::proto::message::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_duplicated_and_garbage_pushes_change_nothing() -> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;
    a.send_acked(&bob, "m1", "first").await?;
    let first = b.messages(1).await?;

    let nats = system.nats_client("natter").await?;
    let push_subject = shared::subject::push_entry(&bob.user_id);
    // A duplicate of the push bob already has, and garbage.
    let duplicate = Push {
        cursor: first[0].0,
        entry: None,
        prev: Some(0),
        signal: None,
    };
    let duplicate = PushBatch {
        pushes: vec![UserPush {
            user_id: bob.user_id.clone(),
            push: Some(duplicate),
        }],
    };
    nats.publish(push_subject.clone(), duplicate.encode_to_vec().into())
        .await?;
    nats.publish(push_subject.clone(), vec![0xff, 0x01, 0x02].into())
        .await?;

    // A lost push: an entry lands in bob's inbox but its push never comes
    // (as when a messages service dies between the two).
    let js = async_nats::jetstream::new(nats.clone());
    let lost = InboxEntry {
        event: Some(inbox_entry::Event::Message(Message {
            id: "lost-1".into(),
            conversation_id: first[0].1.conversation_id.clone(),
            seq: 999,
            sender_id: alice.user_id.clone(),
            body: Some(e2e::text("lost push")),
            ..Default::default()
        })),
    };
    js.publish(
        shared::subject::inbox(&bob.user_id),
        lost.encode_to_vec().into(),
    )
    .await?
    .await?;
    nats.flush().await?;

    // The next real message's push names the lost entry as its predecessor:
    // the edge sees the gap and reads the inbox.
    a.send_acked(&bob, "m2", "second").await?;
    let got = b.messages(2).await?;
    assert_eq!(text_of(&got[0].1), "lost push");
    assert_eq!(text_of(&got[1].1), "second");
    assert!(first[0].0 < got[0].0 && got[0].0 < got[1].0);
    b.expect_no_more_pushes().await?;
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_crash_loses_no_acked_message() -> anyhow::Result<()> {
    let (mut system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let mut stream = Stream::start(&system, alice, bob, 60, &["unavailable"]).await?;
    // SIGKILL the NATS server a third of the way in and start it again on the
    // same port and JetStream store.
    stream.a_third_in().await?;
    system.nats.restart();
    stream.finish().await?;
    system.stop().await;
    Ok(())
}

/// The same under batched load: four pipelining senders, nats-server
/// SIGKILLed and restarted in the middle. Whole batches of appends fail, or
/// the client libraries carry them over a quick restart (sent again after
/// the reconnect, replies delivered late): either way nothing is lost or
/// repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_crash_under_batched_load_loses_and_repeats_nothing() -> anyhow::Result<()> {
    let (mut system, users) = System::with_users(
        Mode::InProcess,
        [
            "send1", "read1", "send2", "read2", "send3", "read3", "send4", "read4",
        ],
    )
    .await?;
    let mut streams =
        e2e::BatchedStreams::start(&system, &users, 600, 16, &["unavailable", "internal"]).await?;
    streams.a_third_in().await?;
    let acked = streams.acked();
    system.nats.restart();
    assert!(
        acked < streams.messages_per_pair(),
        "the crash came after the streams ended ({acked} acked)"
    );
    let failures = streams.finish().await?;
    eprintln!("{failures} sends failed and were sent again");
    system.stop().await;
    Ok(())
}

/// An entry in bob's inbox whose push never comes and that no later push
/// names as predecessor.
async fn append_without_push(system: &System, user: &e2e::User, text: &str) -> anyhow::Result<()> {
    let nats = system.nats_client("natter").await?;
    let js = async_nats::jetstream::new(nats);
    let entry = InboxEntry {
        event: Some(inbox_entry::Event::Message(Message {
            id: format!("silent-{text}"),
            conversation_id: "d:a:b".into(),
            seq: 1,
            body: Some(e2e::text(text)),
            ..Default::default()
        })),
    };
    js.publish(
        shared::subject::inbox(&user.user_id),
        entry.encode_to_vec().into(),
    )
    .await?
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_last_push_is_found_by_the_periodic_check() -> anyhow::Result<()> {
    let system = System::start(Mode::InProcess).await?;
    let bob = system.api().user("bob").await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;
    append_without_push(&system, &bob, "nobody pushed me").await?;
    // The edge checks each connection's inbox end every second in tests.
    let got = b.messages(1).await?;
    assert_eq!(text_of(&got[0].1), "nobody pushed me");
    b.expect_no_more_pushes().await?;
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_from_nowhere_resync_and_stored_cursors_only_grow() -> anyhow::Result<()> {
    use shared::proto::edge::server_frame::Kind;
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    for i in 1..=3 {
        a.send_acked(&bob, &format!("m{i}"), "hello").await?;
    }

    // A cursor beyond the end of the inbox (another server's, or garbage).
    for bogus in [1_000_000, u64::MAX] {
        let mut b = Client::connect(&system.ws_url(), &bob, Format::Json).await?;
        b.resume(bogus).await?;
        let end = match b.next().await?.kind {
            Some(Kind::ResyncRequired(r)) => r.cursor,
            other => panic!("expected resync_required, got {other:?}"),
        };
        assert!(end < bogus);
        assert_eq!(b.caught_up().await?, end);
        // Delivery goes on from the end.
        a.send_acked(&bob, &format!("after-{bogus}"), "after resync")
            .await?;
        assert_eq!(text_of(&b.messages(1).await?[0].1), "after resync");
    }

    // Stored cursors never move backwards: a stale session acking an older
    // cursor does not undo a newer ack.
    let mut b = Client::connect(&system.ws_url(), &bob, Format::Json).await?;
    b.resume(0).await?;
    let all = b.messages(5).await?;
    let (older, newer) = (all[1].0, all[4].0);
    b.ack(newer).await?;
    let mut stored = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stored = Client::connect(&system.ws_url(), &bob, Format::Json)
            .await?
            .welcome
            .acked_cursor;
        if stored == newer {
            break;
        }
    }
    assert_eq!(stored, newer);
    b.ack(older).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probe = Client::connect(&system.ws_url(), &bob, Format::Json).await?;
    assert_eq!(probe.welcome.acked_cursor, newer);
    system.stop().await;
    Ok(())
}

/// Pushes go to the edges that hold the user once the services know where
/// that is (`shared::push_routes`): a device that joins a second edge gets
/// what was sent at once (before the route to that edge is known), and
/// then each message travels as one push per edge, on the edges' own
/// subjects and no shard's, to every device exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_go_to_the_edges_that_hold_the_user() -> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let bob2 = system.api().another_device(&bob).await?;

    // A second edge on the same system.
    let config = e2e::edge_config(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        &system.settings,
    );
    let mut nats_config = system.nats_config();
    nats_config.user = Some("edge".into());
    nats_config.nkey_file = Some(system.keys.seed_file("edge"));
    let nats = shared::Nats::connect(&nats_config, "second-edge").await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let edge = edge::Edge::bind(config, nats, stop.clone()).await?;
    let second = edge.local_addr();
    let serving = tokio::spawn(edge.serve());
    let api = e2e::Api::new(format!("http://{second}"));
    for _ in 0..200 {
        if api.ready().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(api.ready().await, "the second edge is not ready");
    let second_ws = format!("ws://{second}/v1/ws");

    let observer = system.nats_client("natter").await?;
    let mut pushes = observer.subscribe(shared::subject::PUSH_ENTRIES).await?;
    observer.flush().await?;

    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    // A second connection of alice's device: her messages get a copy in
    // her own inbox (with one connection of one device they would not).
    let _a_tab = Client::connect_live(&system.ws_url(), &alice, Format::Json).await?;
    let mut b1 = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;
    let settled = shared::push_routes::SETTLE + Duration::from_secs(1);
    tokio::time::sleep(settled).await;

    // bob's route is now the first edge alone; his second device joins the
    // second edge and a message follows at once: it reaches that device
    // whatever route it took.
    let mut b2 = Client::connect_live(&second_ws, &bob2, Format::Binary).await?;
    a.send_acked(&bob, "m1", "joined").await?;
    for b in [&mut b1, &mut b2] {
        let got = b.messages(1).await?;
        assert_eq!(text_of(&got[0].1), "joined");
    }

    // Settled on both edges: one push per edge, on the edges' subjects.
    tokio::time::sleep(settled).await;
    while tokio::time::timeout(Duration::from_millis(200), pushes.next())
        .await
        .is_ok_and(|m| m.is_some())
    {}
    for i in 2..=6 {
        a.send_acked(&bob, &format!("m{i}"), &format!("routed {i}"))
            .await?;
    }
    for b in [&mut b1, &mut b2] {
        let got: Vec<String> = b
            .messages(5)
            .await?
            .iter()
            .map(|(_, m)| text_of(m).to_owned())
            .collect();
        assert_eq!(
            got,
            (2..=6).map(|i| format!("routed {i}")).collect::<Vec<_>>()
        );
        b.expect_no_more_pushes().await?;
    }
    // Which subjects carried bob's and alice's entries.
    let mut bobs = std::collections::BTreeMap::<String, usize>::new();
    let mut alices = std::collections::BTreeMap::<String, usize>::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), pushes.next()).await
    {
        let batch = PushBatch::decode(message.payload.as_ref())?;
        for push in batch.pushes {
            let counts = if push.user_id == bob.user_id {
                &mut bobs
            } else if push.user_id == alice.user_id {
                &mut alices
            } else {
                continue;
            };
            *counts.entry(message.subject.to_string()).or_default() += 1;
        }
    }
    assert_eq!(bobs.len(), 2, "bob's pushes went on {bobs:?}");
    assert!(
        bobs.iter()
            .all(|(subject, &n)| subject.starts_with("im.push.v1.e") && n == 5),
        "bob's pushes went on {bobs:?}"
    );
    assert_eq!(alices.len(), 1, "alice's pushes went on {alices:?}");
    assert!(
        alices
            .keys()
            .all(|s| s.starts_with("im.push.v1.e") && bobs.contains_key(s)),
        "alice's pushes went on {alices:?}, bob's on {bobs:?}"
    );
    stop.cancel();
    serving.await??;
    Ok(())
}

/// Two appenders on one chain: social notices (friend requests) go into a
/// reader's inbox while a batched stream of messages fills it. The reader
/// gets every message once, in seq order, and every notice once, with
/// cursors that only grow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_beside_a_batched_stream_keep_the_chain() -> anyhow::Result<()> {
    use shared::proto::edge::server_frame;
    const N: u64 = 300;
    const K: usize = 20;
    let (system, [sender, reader]) =
        System::with_users(Mode::InProcess, ["sender", "reader"]).await?;
    let api = system.api();
    let mut askers = Vec::with_capacity(K);
    for i in 0..K {
        askers.push(api.user(&format!("asker{i}")).await?);
    }
    let mut client = Client::connect_live(&system.ws_url(), &reader, Format::Json).await?;
    // What the inbox held before (the setup's friendship with the sender).
    let before = client.drain(Duration::from_millis(200)).await?;
    let pushes = |frames: &[shared::proto::edge::ServerFrame]| {
        frames
            .iter()
            .filter(|f| matches!(f.kind, Some(server_frame::Kind::Push(_))))
            .count()
    };
    anyhow::ensure!(pushes(&before) == 2, "before the stream: {before:?}");
    let (sending, _) = e2e::spawn_pipelined_sender(
        system.ws_url(),
        sender,
        reader.clone(),
        N,
        16,
        &["unavailable"],
    );
    let asking = tokio::spawn(async move {
        for asker in &askers {
            let (status, body) = api.request_friend(asker, &reader, "你好 hi").await?;
            anyhow::ensure!(status.is_success(), "friend request: {status} {body}");
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        anyhow::Ok(())
    });
    let mut messages = Vec::new();
    let mut notices = 0;
    // Notices that came between the stream's first and last message.
    let mut between = 0;
    let mut last = 0;
    while messages.len() < N as usize || notices < K {
        let frame = match client
            .next_where(|f| matches!(f.kind, Some(server_frame::Kind::Push(_))))
            .await
        {
            Ok(frame) => frame,
            Err(e) => {
                let sent = if sending.is_finished() {
                    format!("{:?}", sending.await)
                } else {
                    "still sending".to_owned()
                };
                let asked = if asking.is_finished() {
                    format!("{:?}", asking.await)
                } else {
                    "still asking".to_owned()
                };
                anyhow::bail!(
                    "{e:#} with {} messages and {notices} notices; the sender: {sent}; the askers: {asked}",
                    messages.len()
                );
            }
        };
        let Some(server_frame::Kind::Push(push)) = frame.kind else {
            anyhow::bail!("not a push");
        };
        anyhow::ensure!(push.cursor > last, "cursor {} after {last}", push.cursor);
        last = push.cursor;
        match push.entry.and_then(|e| e.event) {
            Some(inbox_entry::Event::Message(m)) => messages.push((m.seq, text_of(&m).to_owned())),
            Some(inbox_entry::Event::Social(_)) => {
                notices += 1;
                if (1..N as usize).contains(&messages.len()) {
                    between += 1;
                }
            }
            other => anyhow::bail!("unexpected entry {other:?}"),
        }
    }
    sending.await??;
    asking.await??;
    let expected: Vec<(u64, String)> = (1..=N).map(|i| (i, format!("pipelined {i}"))).collect();
    assert_eq!(messages, expected);
    assert_eq!(notices, K);
    assert!(between > 0, "no notice came while the stream ran");
    client.expect_no_more_pushes().await?;
    system.stop().await;
    Ok(())
}
