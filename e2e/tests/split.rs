//! The same system with every service in its own `natter` process: chat
//! works, and killing the messages service while alice sends loses nothing
//! that was acked and repeats nothing.

use std::time::Duration;

use e2e::{Format, Mode, Service, Stream, System, chat};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_works_with_one_process_per_service() -> anyhow::Result<()> {
    let system = System::start(Mode::Split).await?;
    chat(&system, 100, Format::Binary).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_messages_service_loses_no_acked_message() -> anyhow::Result<()> {
    let (mut system, [alice, bob]) = System::with_users(Mode::Split, ["alice", "bob"]).await?;
    let retry_on = &["unavailable", "internal"];
    let mut stream = Stream::start(&system, alice, bob, 150, retry_on).await?;
    // Kill the messages service (SIGKILL) a third of the way in, then restart it.
    stream.a_third_in().await?;
    system.kill_process(Service::Messages);
    tokio::time::sleep(Duration::from_millis(300)).await;
    system.spawn_process(Service::Messages)?;
    let retries = stream.finish().await?;
    assert!(retries > 0, "the kill should have made some sends fail");
    Ok(())
}
