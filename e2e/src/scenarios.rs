//! Scenarios shared by several test files.

use std::time::Duration;

use shared::proto::edge::server_frame;

use crate::{Client, Format, System, text_of};

/// alice sends `n` messages to bob, both online; bob receives all of them in
/// order with seq 1..=n, and alice gets `n` acks with the same seqs.
pub async fn chat(system: &System, n: u64, format: Format) -> anyhow::Result<()> {
    let api = system.api();
    let alice = api.user("alice").await?;
    let bob = api.user("bob").await?;
    let mut a = Client::connect(&system.ws_url(), &alice, format).await?;
    let mut b = Client::connect(&system.ws_url(), &bob, format).await?;
    b.resume(0).await?;
    b.caught_up().await?;

    let mut ids = Vec::new();
    for i in 1..=n {
        ids.push(
            a.send_text(&bob, &format!("m{i}"), &format!("message {i} 你好"))
                .await?,
        );
    }
    for (i, id) in ids.into_iter().enumerate() {
        let ack = a.ack_of(id).await?;
        assert_eq!(ack.seq, i as u64 + 1);
        assert_eq!(ack.client_msg_id, format!("m{}", i + 1));
        assert!(!ack.duplicate);
        assert!(ack.server_ts_ms > 0);
    }
    let received = b.messages(n as usize).await?;
    let mut last_cursor = 0;
    for (i, (cursor, message)) in received.iter().enumerate() {
        assert_eq!(
            message.seq,
            i as u64 + 1,
            "bob got seq {} at position {i}",
            message.seq
        );
        assert_eq!(text_of(message), format!("message {} 你好", i + 1));
        assert_eq!(message.sender_id, alice.user_id);
        assert!(*cursor > last_cursor, "cursors increase");
        last_cursor = *cursor;
    }
    let extra = b.drain(Duration::from_millis(300)).await?;
    assert!(
        extra
            .iter()
            .all(|f| !matches!(f.kind, Some(server_frame::Kind::Push(_)))),
        "no extra pushes"
    );
    Ok(())
}
