//! Two users chat in real time and offline, end to end: real nats-server,
//! real services, real WebSocket clients.

use std::collections::HashSet;
use std::time::Duration;

use e2e::{Client, Format, Mode, Settings, System, chat, text_of};
use serde_json::Value;
use shared::proto::delivery::inbox_entry;
use shared::proto::edge::server_frame;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_chat_delivers_in_order_json() -> anyhow::Result<()> {
    let system = System::start(Mode::InProcess).await?;
    chat(&system, 100, Format::Json).await?;
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_chat_delivers_in_order_protobuf() -> anyhow::Result<()> {
    let system = System::start(Mode::InProcess).await?;
    chat(&system, 100, Format::Binary).await?;
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_user_receives_exactly_what_was_sent() -> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    for i in 1..=50 {
        assert_eq!(
            a.send_acked(&bob, &format!("m{i}"), &format!("offline {i}"))
                .await?
                .seq,
            i
        );
    }

    let mut b = Client::connect(&system.ws_url(), &bob, Format::Binary).await?;
    b.resume(0).await?;
    let received = b.messages(50).await?;
    let seqs: Vec<u64> = received.iter().map(|(_, m)| m.seq).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    let caught_up = b.caught_up().await?;
    assert_eq!(caught_up, received.last().unwrap().0);
    b.expect_no_more_pushes().await?;
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_with_cursor_loses_nothing_and_repeats_nothing() -> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;

    // alice streams 60 messages; bob reads 10, acks, and drops his connection
    // in the middle of the stream.
    let sender = tokio::spawn({
        let bob = bob.clone();
        async move {
            for i in 1..=60u64 {
                assert_eq!(
                    a.send_acked(&bob, &format!("m{i}"), &format!("stream {i}"))
                        .await?
                        .seq,
                    i
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::Ok(())
        }
    });
    let first = b.messages(10).await?;
    let cursor = first.last().unwrap().0;
    b.ack(cursor).await?;
    drop(b);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut b = Client::connect(&system.ws_url(), &bob, Format::Json).await?;
    b.resume(cursor).await?;
    sender.await??;
    let rest = b.messages(50).await?;
    let mut seqs: Vec<u64> = first.iter().map(|(_, m)| m.seq).collect();
    seqs.extend(rest.iter().map(|(_, m)| m.seq));
    assert_eq!(
        seqs,
        (1..=60).collect::<Vec<_>>(),
        "nothing lost, nothing twice, in order"
    );
    b.expect_no_more_pushes().await?;

    // The acked cursor was stored: a resume without a cursor starts after it.
    drop(b);
    let mut stored = 0;
    for _ in 0..50 {
        let probe = Client::connect(&system.ws_url(), &bob, Format::Json).await?;
        stored = probe.welcome.acked_cursor;
        if stored == cursor {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, cursor);
    let mut b = Client::connect(&system.ws_url(), &bob, Format::Json).await?;
    b.resume(0).await?;
    let again = b.messages(50).await?;
    assert_eq!(again.first().unwrap().1.seq, 11);
    system.stop().await;
    Ok(())
}

/// A client that stops reading while messages keep coming fills its
/// socket and then the edge's buffer: past the slow-client timeout the edge
/// lets it go, while the sender goes on unhindered, and when it comes back
/// it gets every message once, in order, from the inbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_let_go_and_loses_nothing() -> anyhow::Result<()> {
    let settings = Settings {
        slow_client_timeout_secs: 2,
        lift_limits: true,
        ..Settings::default()
    };
    let (system, [alice, bob]) =
        System::with_settings_and_users(Mode::InProcess, settings, ["alice", "bob"]).await?;
    let mut b =
        Client::connect_with_receive_buffer(&system.ws_url(), &bob, Format::Json, 4096).await?;
    b.resume(0).await?;
    b.caught_up().await?;
    // Far more than bob's socket and the edge's side of it hold (12 KB a
    // message), while bob reads nothing.
    const N: u64 = 1000;
    let text = "慢".repeat(4000);
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Binary).await?;
    for chunk in (1..=N).collect::<Vec<_>>().chunks(50) {
        let mut ids = Vec::new();
        for i in chunk {
            ids.push(a.send_text(&bob, &format!("m{i}"), &text).await?);
        }
        for (id, i) in ids.into_iter().zip(chunk) {
            assert_eq!(a.ack_of(id).await?.seq, *i, "the sender is not held up");
        }
    }
    // What reached bob's socket before the edge let go, then the end.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let mut read = 0;
    while b.next().await.is_ok() {
        read += 1;
        anyhow::ensure!(read <= N, "the connection was never let go");
    }
    assert!(read < N, "bob was let go before all {N} came ({read} read)");

    let mut b = Client::connect(&system.ws_url(), &bob, Format::Binary).await?;
    b.resume(0).await?;
    let seqs: Vec<u64> = b
        .messages(N as usize)
        .await?
        .iter()
        .map(|(_, m)| m.seq)
        .collect();
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>(), "each once, in order");
    b.caught_up().await?;
    b.expect_no_more_pushes().await?;
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_with_same_client_msg_id_is_delivered_once() -> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let api = system.api();
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;

    let first = a.send_text(&bob, "same-id", "hello").await?;
    let first = a.ack_of(first).await?;
    let retry = a.send_text(&bob, "same-id", "hello").await?;
    let retry = a.ack_of(retry).await?;
    assert_eq!(
        (retry.seq, &retry.message_id),
        (first.seq, &first.message_id)
    );
    assert!(retry.duplicate);
    // The same id over HTTP answers the same ack too.
    let (status, body) = api
        .post(
            "/v1/messages",
            Some(&alice.token),
            serde_json::json!({"toUserId": bob.user_id, "clientMsgId": "same-id", "body": {"text": {"text": "hello"}}}).to_string(),
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(body["seq"], "1");
    let marker = a.send_text(&bob, "marker", "after").await?;
    assert_eq!(a.ack_of(marker).await?.seq, 2);

    let received = b.messages(2).await?;
    assert_eq!(
        received.iter().map(|(_, m)| m.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(text_of(&received[1].1), "after");
    b.expect_no_more_pushes().await?;
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_of_both_users_receives() -> anyhow::Result<()> {
    let (system, [alice]) = System::with_users(Mode::InProcess, ["alice"]).await?;
    let api = system.api();
    let alice2 = api.another_device(&alice).await?;
    let bob = api.user("bob").await?;
    let bob2 = api.another_device(&bob).await?;
    api.befriend(&alice, &bob).await?;
    assert_ne!(bob.device_id, bob2.device_id);

    let mut a1 = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    let mut a2 = Client::connect(&system.ws_url(), &alice2, Format::Binary).await?;
    let mut b1 = Client::connect(&system.ws_url(), &bob, Format::Json).await?;
    let mut b2 = Client::connect(&system.ws_url(), &bob2, Format::Binary).await?;
    // A second connection of alice's first device (another tab).
    let mut a1_tab = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    for c in [&mut a1, &mut a1_tab, &mut a2, &mut b1, &mut b2] {
        c.resume(0).await?;
        c.caught_up().await?;
    }
    for i in 1..=20u64 {
        assert_eq!(
            a1.send_acked(&bob, &format!("m{i}"), &format!("to both {i}"))
                .await?
                .seq,
            i
        );
    }
    // The connection that sent them has their acks and gets no push of
    // them; every other connection does, the same device's too.
    let echoes: Vec<_> = a1
        .drain(Duration::from_millis(300))
        .await?
        .into_iter()
        .filter(|f| match &f.kind {
            Some(server_frame::Kind::Push(p)) => matches!(
                p.entry.as_ref().and_then(|e| e.event.as_ref()),
                Some(inbox_entry::Event::Message(_))
            ),
            _ => false,
        })
        .collect();
    assert!(echoes.is_empty(), "echoed to the sender: {echoes:?}");
    for (name, client) in [
        ("bob 1", &mut b1),
        ("bob 2", &mut b2),
        ("alice 2", &mut a2),
        ("alice 1, another tab", &mut a1_tab),
    ] {
        let got = client.messages(20).await?;
        let seqs: Vec<u64> = got.iter().map(|(_, m)| m.seq).collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>(), "{name}");
        let ids: HashSet<&str> = got
            .iter()
            .map(|(_, m)| m.sender_device_id.as_str())
            .collect();
        assert_eq!(ids, HashSet::from([alice.device_id.as_str()]), "{name}");
    }
    // bob answers from his second device; his first device sees it too.
    assert_eq!(b2.send_acked(&alice, "r1", "收到").await?.seq, 21);
    let got = b1.messages(1).await?;
    assert_eq!((got[0].1.seq, text_of(&got[0].1)), (21, "收到"));
    let got = a2.messages(1).await?;
    assert_eq!(got[0].1.sender_id, bob.user_id);
    system.stop().await;
    Ok(())
}

/// A page of long messages can be larger than one NATS message may be
/// (1 MB here): the page is cut short, says there is more, and paging on
/// reaches every message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_long_messages_is_cut_to_what_nats_carries() -> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let api = system.api();
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Binary).await?;
    // 100 messages of 12 KB each (4,000 three-byte characters).
    let text = "长".repeat(4000);
    for chunk in (1..=100u64).collect::<Vec<_>>().chunks(25) {
        let mut ids = Vec::new();
        for i in chunk {
            ids.push(a.send_text(&bob, &format!("m{i}"), &text).await?);
        }
        for id in ids {
            a.ack_of(id).await?;
        }
    }
    let conversation = shared::ids::direct_conversation(&alice.user_id, &bob.user_id);
    let seqs = |page: &Value| -> Vec<u64> {
        page["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| m["seq"].as_str().unwrap_or_default().parse().unwrap_or(0))
            .collect()
    };

    // Newest first, then older pages down to the first message.
    let mut seen = Vec::new();
    let mut query = "limit=200".to_owned();
    for _ in 0..10 {
        let (status, page) = api.history(&bob, &conversation, &query).await?;
        assert_eq!(status, 200, "{page}");
        let got = seqs(&page);
        assert!(!got.is_empty() && got.len() < 100, "{} messages", got.len());
        seen.splice(0..0, got.iter().copied());
        if page["hasMore"] != true {
            break;
        }
        query = format!("before_seq={}&limit=200", got[0]);
    }
    assert_eq!(seen, (1..=100).collect::<Vec<_>>());

    // Forwards from the start: the oldest that fit.
    let (status, page) = api
        .history(&bob, &conversation, "after_seq=1&limit=200")
        .await?;
    assert_eq!(status, 200, "{page}");
    let got = seqs(&page);
    assert_eq!(got, (2..2 + got.len() as u64).collect::<Vec<_>>());
    assert!(
        got.len() < 99 && page["hasMore"] == true,
        "{} messages",
        got.len()
    );
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_conversation_list() -> anyhow::Result<()> {
    let (system, [alice, bob, carol]) =
        System::with_users(Mode::InProcess, ["alice", "bob", "carol"]).await?;
    let api = system.api();
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    for i in 1..=30u64 {
        a.send_acked(&bob, &format!("m{i}"), &format!("h{i}"))
            .await?;
    }
    let id = a.send_text(&carol, "c1", "hi carol").await?;
    let carol_ack = a.ack_of(id).await?;
    let bob_conversation = shared::ids::direct_conversation(&alice.user_id, &bob.user_id);

    let (status, page) = api.history(&bob, &bob_conversation, "limit=10").await?;
    assert_eq!(status, 200);
    let seqs: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_str().unwrap())
        .collect();
    assert_eq!(seqs, (21..=30).map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(page["hasMore"], true);
    // Proto3 JSON leaves out fields at their default (false, 0, "").
    let (_, older) = api
        .history(&bob, &bob_conversation, "before_seq=21&limit=15")
        .await?;
    let seqs: Vec<&str> = older["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_str().unwrap())
        .collect();
    assert_eq!(seqs, (6..=20).map(|s| s.to_string()).collect::<Vec<_>>());
    let (_, newer) = api.history(&bob, &bob_conversation, "after_seq=25").await?;
    assert_eq!(newer["messages"].as_array().unwrap().len(), 5);
    assert_eq!(newer.get("hasMore"), None);
    // After 0 is the start of the conversation (a client with nothing
    // local reads forwards from there), not the newest page.
    let (_, first) = api
        .history(&bob, &bob_conversation, "after_seq=0&limit=3")
        .await?;
    let seqs: Vec<&str> = first["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_str().unwrap())
        .collect();
    assert_eq!(seqs, ["1", "2", "3"]);
    assert_eq!(first["hasMore"], true);

    let (status, list) = api.get("/v1/conversations", Some(&alice.token)).await?;
    assert_eq!(status, 200);
    let list = list["conversations"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        list[0]["id"], carol_ack.conversation_id,
        "most recent first"
    );
    assert_eq!(list[0]["lastMessage"]["body"]["text"]["text"], "hi carol");
    assert_eq!(list[1]["lastSeq"], "30");
    assert_eq!(list[1]["peerUserId"], bob.user_id);
    // Paging one at a time walks both, newest first.
    let (_, first) = api
        .get("/v1/conversations?limit=1", Some(&alice.token))
        .await?;
    assert_eq!(first["hasMore"], true);
    let last = &first["conversations"][0];
    let next = format!(
        "/v1/conversations?limit=1&before_activity_ms={}&before_id={}",
        last["lastActivityMs"].as_str().unwrap(),
        last["id"].as_str().unwrap()
    );
    let (_, second) = api.get(&next, Some(&alice.token)).await?;
    assert_eq!(second["conversations"][0]["id"], list[1]["id"]);
    assert_eq!(second.get("hasMore"), None);
    let (_, bobs) = api.get("/v1/conversations", Some(&bob.token)).await?;
    assert_eq!(bobs["conversations"].as_array().unwrap().len(), 1);
    system.stop().await;
    Ok(())
}

/// Many sends in flight on one connection (the edge batches them with
/// other connections' sends): answered in the order sent, stored in that
/// order, and a bad one fails alone or takes only the same connection's
/// later sends to that conversation with it, never reordering what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_keep_their_order_and_a_bad_one_fails_alone() -> anyhow::Result<()> {
    use shared::proto::edge::server_frame::Kind;
    let (system, [alice, bob, carol]) =
        System::with_users(Mode::InProcess, ["alice", "bob", "carol"]).await?;
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Binary).await?;
    let mut c = Client::connect(&system.ws_url(), &carol, Format::Json).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;

    // Alice and Carol each send 60 without waiting; Alice's 20th is bad.
    let mut ids = Vec::new();
    for i in 1..=60 {
        let id = if i == 20 {
            a.send_body(&bob, "a20", e2e::text(""), 0).await?
        } else {
            a.send_text(&bob, &format!("a{i}"), &format!("from alice {i}"))
                .await?
        };
        ids.push((i, id));
        c.send_text(&bob, &format!("c{i}"), &format!("from carol {i}"))
            .await?;
    }
    let mut stored = Vec::new();
    for (i, id) in ids {
        match a.reply(id).await?.kind {
            Some(Kind::Ack(ack)) => {
                assert!(i != 20, "the bad send was stored");
                stored.push((ack.seq, format!("from alice {i}")));
            }
            Some(Kind::Error(e)) if i == 20 => assert_eq!(e.code, "bad_request", "{e:?}"),
            Some(Kind::Error(e)) => {
                // Only sends after the bad one may fail with it, and they
                // fail as "not sent, send again in order".
                assert!(i > 20, "send {i} failed: {e:?}");
                assert_eq!(e.code, "unavailable", "{e:?}");
                assert!(e.message.contains("in order"), "{e:?}");
            }
            other => anyhow::bail!("send {i}: {other:?}"),
        }
    }
    // What was stored keeps the order sent: seqs rise.
    assert!(stored.windows(2).all(|w| w[0].0 < w[1].0), "{stored:?}");
    assert!(stored.len() >= 19, "alice's first 19 are stored");

    // Bob receives exactly what was stored, each sender in order.
    let expected = stored.len() + 60;
    let got = b.messages(expected).await?;
    let alices: Vec<&str> = got
        .iter()
        .map(|(_, m)| text_of(m))
        .filter(|t| t.starts_with("from alice"))
        .collect();
    let wanted: Vec<&str> = stored.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(alices, wanted);
    let carols: Vec<String> = got
        .iter()
        .map(|(_, m)| text_of(m).to_owned())
        .filter(|t| t.starts_with("from carol"))
        .collect();
    let in_order: Vec<String> = (1..=60).map(|i| format!("from carol {i}")).collect();
    assert_eq!(carols, in_order);
    b.expect_no_more_pushes().await?;
    system.stop().await;
    Ok(())
}

/// `im.evt.v1.messages.created`, read as an outside service would (the
/// observer, a durable pull consumer on `IM_EVENTS`): every stored message
/// exactly once, a repeated send not again, in seq order per conversation,
/// several messages per event when sends come together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_created_events_carry_each_stored_message_once() -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    use futures::StreamExt;
    use prost::Message as _;
    use shared::proto::message::MessagesCreated;
    // Split: each service with its own NATS user, so its permissions count.
    let (system, [alice, bob, carol]) =
        System::with_users(Mode::Split, ["alice", "bob", "carol"]).await?;
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Binary).await?;
    let mut c = Client::connect(&system.ws_url(), &carol, Format::Json).await?;

    // Alice and Carol each send 30 without waiting; Alice sends her 5th again.
    let (mut alices, mut carols) = (Vec::new(), Vec::new());
    for i in 1..=30 {
        alices.push(
            a.send_text(&bob, &format!("a{i}"), &format!("a {i}"))
                .await?,
        );
        carols.push(
            c.send_text(&bob, &format!("c{i}"), &format!("c {i}"))
                .await?,
        );
    }
    let mut stored = std::collections::HashMap::new();
    for id in alices {
        let ack = a.ack_of(id).await?;
        stored.insert(
            ack.message_id.clone(),
            (ack.conversation_id.clone(), ack.seq),
        );
    }
    for id in carols {
        let ack = c.ack_of(id).await?;
        stored.insert(
            ack.message_id.clone(),
            (ack.conversation_id.clone(), ack.seq),
        );
    }
    let again = a.send_acked(&bob, "a5", "a 5").await?;
    assert!(again.duplicate, "{again:?}");

    let observer = system.nats_client("observer").await?;
    let js = async_nats::jetstream::new(observer);
    let consumer = js
        .get_stream("IM_EVENTS")
        .await?
        .create_consumer(pull::Config {
            durable_name: Some("test-messages-created".into()),
            filter_subject: shared::subject::event::MESSAGES_CREATED.into(),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let mut events = consumer.messages().await?;
    let mut seen = std::collections::HashMap::new();
    let mut last_seq: std::collections::HashMap<String, u64> = Default::default();
    let mut count = 0;
    // (Other messages, such as notices of the users' friendships, may come too.)
    while stored.keys().any(|id| !seen.contains_key(id)) {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the consumer ended"))??;
        count += 1;
        let batch = MessagesCreated::decode(event.payload.as_ref())?;
        assert!(!batch.messages.is_empty());
        for message in batch.messages {
            let last = last_seq.entry(message.conversation_id.clone()).or_default();
            assert!(message.seq > *last, "seq {} after {}", message.seq, *last);
            *last = message.seq;
            let key = message.id.clone();
            assert!(
                seen.insert(key, (message.conversation_id, message.seq))
                    .is_none(),
                "{} twice",
                message.id
            );
        }
        event.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    seen.retain(|id, _| stored.contains_key(id));
    assert_eq!(seen, stored);
    assert!(
        count < stored.len(),
        "{count} events for {} messages",
        stored.len()
    );
    // The repeat made no event.
    let more = tokio::time::timeout(Duration::from_millis(500), events.next()).await;
    assert!(more.is_err(), "an event after the last message: {more:?}");
    system.stop().await;
    Ok(())
}

/// A sender with one device, sending from its only connection, gets no copy
/// of its messages in its own inbox (its ack says what it stored); a second
/// connection of the device, or a second device, does. A new device starts
/// at the end of its inbox and reads what came before from the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_with_one_device_gets_no_copy_of_its_own_messages() -> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::Split, ["alice", "bob"]).await?;
    let nats = system.nats_client("natter").await?;
    let inbox = async_nats::jetstream::new(nats)
        .get_stream(shared::subject::INBOX_STREAM)
        .await?;
    let entries_of = |user: &e2e::User| {
        let (inbox, subject) = (inbox.clone(), shared::subject::inbox(&user.user_id));
        async move {
            use futures::TryStreamExt;
            let counts: Vec<(String, usize)> = inbox
                .info_with_subjects(&subject)
                .await?
                .try_collect()
                .await?;
            anyhow::Ok(counts.into_iter().map(|(_, n)| n).sum::<usize>())
        }
    };
    // What is in their inboxes already (their friendship).
    let (alice_before, bob_before) = (entries_of(&alice).await?, entries_of(&bob).await?);
    let mut a = Client::connect_live(&system.ws_url(), &alice, Format::Json).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;
    for i in 1..=3u64 {
        let ack = a
            .send_acked(&bob, &format!("m{i}"), &format!("one device {i}"))
            .await?;
        assert_eq!(ack.seq, i);
    }
    assert_eq!(b.messages(3).await?.len(), 3);
    let copies = entries_of(&alice).await? - alice_before;
    assert_eq!(copies, 0, "alice's own messages were copied");
    assert_eq!(entries_of(&bob).await? - bob_before, 3);
    // bob's answer is in alice's inbox, as ever.
    assert_eq!(b.send_acked(&alice, "r1", "reply").await?.seq, 4);
    assert_eq!(a.messages(1).await?[0].1.seq, 4);
    assert_eq!(entries_of(&alice).await? - alice_before, 1);

    // A second connection of the same device (another tab) gets what the
    // first one sends; the first one gets no echo.
    // (It replays the device's inbox first: bob's answer.)
    let mut tab = Client::connect_live(&system.ws_url(), &alice, Format::Json).await?;
    assert_eq!(a.send_acked(&bob, "m5", "two tabs").await?.seq, 5);
    let got = tab.messages(2).await?;
    let got: Vec<(u64, &str)> = got.iter().map(|(_, m)| (m.seq, text_of(m))).collect();
    assert_eq!(got, [(4, "reply"), (5, "two tabs")]);
    a.expect_no_more_pushes().await?;
    assert_eq!(entries_of(&alice).await? - alice_before, 2);
    tab.close().await;

    // A new device starts at the end of the inbox: nothing is replayed, and
    // the history has everything.
    let alice2 = system.api().another_device(&alice).await?;
    let mut a2 = Client::connect_live(&system.ws_url(), &alice2, Format::Binary).await?;
    a2.expect_no_more_pushes().await?;
    let conversation = shared::ids::direct_conversation(&alice.user_id, &bob.user_id);
    let (status, page) = system
        .api()
        .history(&alice2, &conversation, "limit=50")
        .await?;
    assert_eq!(status, reqwest::StatusCode::OK, "{page}");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(5), "{page}");
    // With two devices, what alice sends from her first (its only
    // connection) reaches the second.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.send_acked(&bob, "m6", "two devices").await?.seq, 6);
    let got = a2.messages(1).await?;
    assert_eq!((got[0].1.seq, text_of(&got[0].1)), (6, "two devices"));
    assert_eq!(entries_of(&alice).await? - alice_before, 3);
    a.expect_no_more_pushes().await?;
    system.stop().await;
    Ok(())
}
