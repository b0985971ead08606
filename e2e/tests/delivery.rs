//! Delivery survives what can go wrong between the services and the edge:
//! lost, duplicated and garbage pushes, and a crash of the NATS server itself.

use e2e::{Client, Format, Mode, System, no_pushes, spawn_reader, spawn_reliable_sender, text_of};
use prost::Message as _;
use shared::proto::delivery::{InboxEntry, Push, inbox_entry};
use shared::proto::message::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_duplicated_and_garbage_pushes_change_nothing() -> anyhow::Result<()> {
    let system = System::start(Mode::InProcess).await?;
    let api = system.api();
    let alice = api.user("alice").await?;
    let bob = api.user("bob").await?;
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;
    let id = a.send_text(&bob, "m1", "first").await?;
    a.ack_of(id).await?;
    let first = b.messages(1).await?;

    let nats = async_nats::connect(system.nats.url()).await?;
    let push_subject = shared::subject::push(&bob.user_id);
    // A duplicate of the push bob already has, and garbage.
    let duplicate = Push {
        cursor: first[0].0,
        entry: None,
        prev: Some(0),
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
    let id = a.send_text(&bob, "m2", "second").await?;
    a.ack_of(id).await?;
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
    let mut system = System::start(Mode::InProcess).await?;
    let api = system.api();
    let alice = api.user("alice").await?;
    let bob = api.user("bob").await?;
    const N: u64 = 60;
    let b = Client::connect_live(&system.ws_url(), &bob, Format::Binary).await?;
    let reader = spawn_reader(b, N as usize);
    let (sender, mut progress) =
        spawn_reliable_sender(system.ws_url(), alice, bob, N, &["unavailable"]);

    // SIGKILL the NATS server a third of the way in and start it again on the
    // same port and JetStream store.
    progress.wait_for(|n| *n >= N / 3).await?;
    system.nats.restart();
    sender.await??;
    let (received, extra) = reader.await??;
    let seqs: Vec<u64> = received.iter().map(|(_, m)| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=N).collect::<Vec<_>>(),
        "every acked message exactly once, in order"
    );
    assert!(no_pushes(&extra), "no duplicates: {extra:?}");
    system.stop().await;
    Ok(())
}
