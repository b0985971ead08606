//! The same system with every service in its own `natter` process: chat
//! works, and killing the messages service while alice sends (one at a
//! time, or many pipelined clients whose sends the edge batches) loses
//! nothing that was acked and repeats nothing.

use std::time::Duration;

use e2e::{BatchedStreams, Format, Mode, Service, Stream, System, chat};

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

/// Four senders with 16 sends in flight each: the edge batches their sends,
/// the messages service stores and fans out each batch at once. A SIGKILL in
/// the middle fails whole batches; the clients send again in order from the
/// first failure. Every message arrives exactly once, in seq order, and
/// every ack carries the message's own number as its seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_messages_service_under_batched_load_loses_and_repeats_nothing()
-> anyhow::Result<()> {
    const N: u64 = 600;
    let (mut system, users) = System::with_users(
        Mode::Split,
        [
            "send1", "read1", "send2", "read2", "send3", "read3", "send4", "read4",
        ],
    )
    .await?;
    let mut streams =
        BatchedStreams::start(&system, &users, N, 16, &["unavailable", "internal"]).await?;
    streams.a_third_in().await?;
    system.kill_process(Service::Messages);
    tokio::time::sleep(Duration::from_millis(300)).await;
    system.spawn_process(Service::Messages)?;
    let failures = streams.finish().await?;
    assert!(failures > 0, "the kill should have failed some sends");
    Ok(())
}

/// Two messages instances share the load (one queue group, one database);
/// four times one is SIGKILLed and a new one started (which sweeps while
/// the other serves). A killed instance's batches committed and not fanned
/// out are sent again and land on the other, beside the devices' next
/// sends (stored behind them, they go out together), while two instances
/// append to the same inboxes: every message arrives exactly once, in seq
/// order. (Whether a kill finds a batch in flight is chance: the count of
/// failed sends is printed, not asserted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_messages_instances_loses_and_repeats_nothing() -> anyhow::Result<()> {
    const N: u64 = 600;
    let (mut system, users) = System::with_users(
        Mode::Split,
        [
            "send1", "read1", "send2", "read2", "send3", "read3", "send4", "read4",
        ],
    )
    .await?;
    system.spawn_process(Service::Messages)?;
    system.wait_ready().await?;
    let streams =
        BatchedStreams::start(&system, &users, N, 16, &["unavailable", "internal"]).await?;
    for k in 1..=4 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while streams.acked() < k * N / 5 {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        system.kill_one_process(Service::Messages);
        system.spawn_process(Service::Messages)?;
    }
    let failures = streams.finish().await?;
    eprintln!("{failures} sends failed and were sent again");
    Ok(())
}
