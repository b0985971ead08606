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

/// A batch committed and never fanned out (its fault returns before the
/// fan-out, and the conversation is not in the pending set), then its send
/// again in one batch with the device's next: the new message is stored
/// behind the old one and they go out together, in seq order; the
/// watermark never passes the old one (without this, the new one went out
/// alone and the old one was answered as a duplicate and never delivered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_again_beside_the_next_delivers_both_in_order() -> anyhow::Result<()> {
    use e2e::{Client, Format};
    use shared::endpoint::endpoints::MessageSendBatch;
    use shared::proto::message as pb;
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;
    let caller = shared::rpc::Caller::new(
        system.nats_client("natter").await?,
        std::time::Duration::from_secs(5),
    );
    let direct = shared::ids::direct_conversation(&alice.user_id, &bob.user_id);
    // As alice's edge sends them.
    let item = |client_msg_id: &str| pb::SendItem {
        user_id: alice.user_id.clone(),
        device_id: alice.device_id.clone(),
        send: Some(pb::SendRequest {
            conversation_id: direct.clone(),
            client_msg_id: client_msg_id.to_owned(),
            body: Some(pb::MessageBody {
                kind: Some(pb::message_body::Kind::Text(pb::Text {
                    text: format!("{client_msg_id} 你好"),
                })),
            }),
            ..Default::default()
        }),
        sole_connection: false,
    };
    let acked = |answer: &pb::SendBatchResponse| -> Vec<Option<(u64, bool)>> {
        answer
            .results
            .iter()
            .map(|r| match &r.result {
                Some(pb::send_result::Result::Ack(ack)) => Some((ack.seq, ack.duplicate)),
                _ => None,
            })
            .collect()
    };
    let first = caller
        .call_to::<MessageSendBatch>(&pb::SendBatchRequest {
            items: vec![item("m1")],
        })
        .await?;
    assert_eq!(acked(&first), [Some((1, false))]);
    fail::cfg("messages::batch::after_commit", "1*return").map_err(anyhow::Error::msg)?;
    let failed = caller
        .call_to::<MessageSendBatch>(&pb::SendBatchRequest {
            items: vec![item("m2")],
        })
        .await;
    fail::remove("messages::batch::after_commit");
    let failed = failed.expect_err("the fault answers the batch");
    assert_eq!(failed.code, shared::ErrorCode::Unavailable, "{failed}");
    let again = caller
        .call_to::<MessageSendBatch>(&pb::SendBatchRequest {
            items: vec![item("m2"), item("m3")],
        })
        .await?;
    assert_eq!(acked(&again), [Some((2, true)), Some((3, false))]);
    let got: Vec<(u64, String)> = b
        .messages(3)
        .await?
        .iter()
        .map(|(_, m)| (m.seq, e2e::text_of(m).to_owned()))
        .collect();
    assert_eq!(
        got,
        [
            (1, "m1 你好".to_owned()),
            (2, "m2 你好".to_owned()),
            (3, "m3 你好".to_owned())
        ]
    );
    b.expect_no_more_pushes().await?;
    system.stop().await;
    Ok(())
}
