//! The same system with every service in its own `natter` process: chat
//! works, and killing the messages service while alice sends loses nothing
//! that was acked and repeats nothing.

use std::time::Duration;

use e2e::{Client, Format, Mode, Service, System, chat};
use shared::proto::edge::server_frame;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_works_with_one_process_per_service() -> anyhow::Result<()> {
    let system = System::start(Mode::Split).await?;
    chat(&system, 100, Format::Binary).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_messages_service_loses_no_acked_message() -> anyhow::Result<()> {
    let mut system = System::start(Mode::Split).await?;
    let api = system.api();
    let alice = api.user("alice").await?;
    let bob = api.user("bob").await?;
    let mut b = Client::connect(&system.ws_url(), &bob, Format::Binary).await?;
    b.resume(0).await?;
    b.caught_up().await?;

    // bob reads all along (so he answers the edge's pings).
    const N: u64 = 150;
    let reader = tokio::spawn(async move {
        let received = b.messages(N as usize).await?;
        let extra = b.drain(Duration::from_millis(500)).await?;
        anyhow::Ok((received, extra))
    });

    // alice sends 150 messages one after another, retrying each (same
    // client_msg_id) until it is acked, as a real client does.
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let sender = tokio::spawn({
        let (ws, alice, bob) = (system.ws_url(), alice.clone(), bob.clone());
        async move {
            let mut a = Client::connect(&ws, &alice, Format::Json).await?;
            let mut retries = 0;
            for i in 1..=N {
                loop {
                    let id = a
                        .send_text(&bob, &format!("m{i}"), &format!("crash test {i}"))
                        .await?;
                    match a.reply(id).await?.kind {
                        Some(server_frame::Kind::Ack(ack)) => {
                            assert_eq!(ack.seq, i, "acked seq");
                            break;
                        }
                        Some(server_frame::Kind::Error(e)) => {
                            assert!(
                                ["unavailable", "internal"].contains(&e.code.as_str()),
                                "{e:?}"
                            );
                            retries += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => anyhow::bail!("unexpected {other:?}"),
                    }
                }
                let _ = progress_tx.send(i);
            }
            anyhow::Ok(retries)
        }
    });

    // Kill the messages service (SIGKILL) a third of the way in, then restart it.
    progress.wait_for(|n| *n >= N / 3).await?;
    system.kill_process(Service::Messages);
    tokio::time::sleep(Duration::from_millis(300)).await;
    system.spawn_process(Service::Messages)?;
    let retries = sender.await??;
    assert!(retries > 0, "the kill should have made some sends fail");

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
    Ok(())
}
