//! Delivery survives what can go wrong between the services and the edge:
//! lost, duplicated and garbage pushes, and a crash of the NATS server itself.

use std::time::Duration;

use e2e::{Client, Format, Mode, System, text_of};
use prost::Message as _;
use shared::proto::delivery::{InboxEntry, Push, inbox_entry};
use shared::proto::edge::server_frame;
use shared::proto::message::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_duplicated_and_garbage_pushes_change_nothing() -> anyhow::Result<()> {
    let system = System::start(Mode::InProcess).await?;
    let api = system.api();
    let alice = api.user("alice").await?;
    let bob = api.user("bob").await?;
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    let mut b = Client::connect(&system.ws_url(), &bob, Format::Json).await?;
    b.resume(0).await?;
    b.caught_up().await?;
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
    let extra = b.drain(Duration::from_millis(300)).await?;
    assert!(
        extra
            .iter()
            .all(|f| !matches!(f.kind, Some(server_frame::Kind::Push(_)))),
        "{extra:?}"
    );
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_crash_loses_no_acked_message() -> anyhow::Result<()> {
    let mut system = System::start(Mode::InProcess).await?;
    let api = system.api();
    let alice = api.user("alice").await?;
    let bob = api.user("bob").await?;
    let mut b = Client::connect(&system.ws_url(), &bob, Format::Binary).await?;
    b.resume(0).await?;
    b.caught_up().await?;
    const N: u64 = 60;
    let reader = tokio::spawn(async move {
        let received = b.messages(N as usize).await?;
        let extra = b.drain(Duration::from_millis(500)).await?;
        anyhow::Ok((received, extra))
    });

    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let sender = tokio::spawn({
        let (ws, alice, bob) = (system.ws_url(), alice.clone(), bob.clone());
        async move {
            let mut a = Client::connect(&ws, &alice, Format::Json).await?;
            for i in 1..=N {
                loop {
                    let id = a
                        .send_text(&bob, &format!("m{i}"), &format!("nats crash {i}"))
                        .await?;
                    match a.reply(id).await?.kind {
                        Some(server_frame::Kind::Ack(ack)) => {
                            assert_eq!(ack.seq, i);
                            break;
                        }
                        Some(server_frame::Kind::Error(e)) => {
                            assert_eq!(e.code, "unavailable", "{e:?}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        other => anyhow::bail!("unexpected {other:?}"),
                    }
                }
                let _ = progress_tx.send(i);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(())
        }
    });

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
    assert!(
        extra
            .iter()
            .all(|f| !matches!(f.kind, Some(server_frame::Kind::Push(_)))),
        "no duplicates"
    );
    system.stop().await;
    Ok(())
}
