//! Fault points inside the messages service (`fail::fail_point!`, compiled
//! into the tests only: the `failpoints` feature of `messages`, a
//! dev-dependency here). Under batched, pipelined load from four senders,
//! a fault is switched on a third of the way in; the clients send again in
//! order from the first failure with the same `clientMsgId`s; every reader
//! must then get every message exactly once, in seq order, with its own
//! text, each ack carrying its message's own seq (`BatchedStreams::finish`).

use e2e::{Mode, System};

/// Runs the load with `action` on fault point `point` from a third in;
/// returns how many sends were answered with a failure.
async fn under_fault(point: &str, action: &str) -> anyhow::Result<u64> {
    let (system, users) = System::with_users(
        Mode::InProcess,
        [
            "send1", "read1", "send2", "read2", "send3", "read3", "send4", "read4",
        ],
    )
    .await?;
    let mut streams =
        e2e::BatchedStreams::start(&system, &users, 300, 16, &["unavailable"]).await?;
    streams.a_third_in().await?;
    fail::cfg(point, action).map_err(anyhow::Error::msg)?;
    let result = streams.finish().await;
    fail::remove(point);
    system.stop().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_committed_but_never_fanned_out_or_answered() -> anyhow::Result<()> {
    let failures = under_fault("messages::batch::after_commit", "2*return").await?;
    assert!(failures > 0, "the fault should have failed some sends");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_delivered_whose_reply_is_lost() -> anyhow::Result<()> {
    let failures = under_fault("messages::batch::before_reply", "2*return").await?;
    assert!(failures > 0, "the fault should have failed some sends");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_appends_stop_part_way() -> anyhow::Result<()> {
    let failures = under_fault("messages::fanout::append_cut", "3*return(1)").await?;
    assert!(failures > 0, "the fault should have failed some sends");
    Ok(())
}

/// The watermarks stay behind what was delivered for a while: what is
/// above them is fanned out again by a later sweep, which finds the
/// entries already in the inboxes (`shared::inbox`, `Once::Entry`; the
/// redo itself is played in `tests/system/inbox_once.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermarks_that_do_not_move() -> anyhow::Result<()> {
    under_fault("messages::fanout::before_watermark", "20*return").await?;
    Ok(())
}
