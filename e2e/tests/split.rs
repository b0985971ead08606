//! The same system with every service in its own `natter` process: chat
//! works, and killing the messages service while alice sends loses nothing
//! that was acked and repeats nothing.

use std::time::Duration;

use e2e::{
    Client, Format, Mode, Service, System, chat, no_pushes, spawn_reader, spawn_reliable_sender,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_works_with_one_process_per_service() -> anyhow::Result<()> {
    let system = System::start(Mode::Split).await?;
    chat(&system, 100, Format::Binary).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_messages_service_loses_no_acked_message() -> anyhow::Result<()> {
    let (mut system, [alice, bob]) = System::with_users(Mode::Split, ["alice", "bob"]).await?;
    const N: u64 = 150;
    let b = Client::connect_live(&system.ws_url(), &bob, Format::Binary).await?;
    let reader = spawn_reader(b, N as usize);
    let (sender, mut progress) =
        spawn_reliable_sender(system.ws_url(), alice, bob, N, &["unavailable", "internal"]);

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
    assert!(no_pushes(&extra), "no duplicates: {extra:?}");
    Ok(())
}
