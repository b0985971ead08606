//! Delivery survives what can go wrong between the services and the edge:
//! lost, duplicated and garbage pushes, and a crash of the NATS server itself.

use std::time::Duration;

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
/// SIGKILLed and restarted in the middle (whole batches of appends fail).
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
        e2e::BatchedStreams::start(&system, &users, 90, 16, &["unavailable", "internal"]).await?;
    streams.a_third_in().await?;
    system.nats.restart();
    let failures = streams.finish().await?;
    assert!(failures > 0, "the crash should have failed some sends");
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
