//! The mesh's NATS users and subject permissions (`natter::nats_users`,
//! rendered into `nats/users.conf` for a cluster and by `natter nats-setup`
//! for `just up`): the system works with each service as its own user (every
//! e2e system logs in with nkeys), and no user can do what it is not meant
//! to: read another user's replies, forge an identity, push to a device or
//! touch a stream it does not own.

use std::time::Duration;

use async_nats::HeaderMap;
use e2e::{Client, Format, Mode, Settings, System, chat};
use futures::StreamExt;
use prost::Message as _;
use serde_json::json;
use shared::proto::delivery::{InboxEntry, Push, inbox_entry, signal};
use shared::subject;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_works_with_per_service_users_and_others_are_kept_out() -> anyhow::Result<()> {
    // Groups of two are "large": their messages take the read fan-out
    // subjects (messages publishes, edges subscribe).
    let settings = Settings {
        large_group_members: 2,
        ..Settings::default()
    };
    let system = System::start_with(Mode::Split, settings).await?;
    chat(&system, 30, Format::Json).await?;

    // Social, presence, groups and conversation features pass the
    // permissions too (social -> auth and presence, presence -> social,
    // groups -> social and messages, messages -> social).
    let api = system.api();
    let carol = api.user("carol").await?;
    let dave = api.user("dave").await?;
    api.befriend(&carol, &dave).await?;
    let mut c = Client::connect_live(&system.ws_url(), &carol, Format::Json).await?;
    let mut d = Client::connect_live(&system.ws_url(), &dave, Format::Binary).await?;
    // messages hears social's block events (its cached relation is dropped).
    assert_eq!(c.send_acked(&dave, "d1", "hi").await?.seq, 1);
    assert_eq!(c.send_acked(&dave, "d2", "hi").await?.seq, 2);
    assert_eq!(api.set_block(&dave, &carol, true).await?, 200);
    let id = c.send_text(&dave, "d3", "hi?").await?;
    assert_eq!(c.error_of(id).await?.code, "forbidden");
    assert_eq!(api.set_block(&dave, &carol, false).await?, 200);
    assert_eq!(d.messages(2).await?[1].1.seq, 2);
    c.signal_where(Duration::from_secs(10), |s| {
        matches!(&s.kind, Some(signal::Kind::Presence(p)) if p.user_id == dave.user_id && p.online)
    })
    .await?;
    let (status, found) = api
        .get("/v1/users/search?q=dav", Some(&carol.token))
        .await?;
    assert_eq!(status, 200, "{found}");
    let (status, group) = api
        .post(
            "/v1/groups",
            Some(&carol.token),
            json!({ "name": "权限", "memberIds": [dave.user_id] }).to_string(),
        )
        .await?;
    assert_eq!(status, 201, "{group}");
    let conversation = group["conversationId"].as_str().unwrap_or("").to_owned();
    let ack = c.post(&conversation, "p1", "hello group").await?;
    let got = d.messages(2).await?;
    assert_eq!(got[1].1.seq, ack.seq);
    assert_eq!(got[1].0, 0, "a group message, not an inbox entry");
    c.typing(&conversation).await?;
    d.signal_where(Duration::from_secs(10), |s| {
        matches!(&s.kind, Some(signal::Kind::Typing(_)))
    })
    .await?;
    let (status, body) = api
        .post(
            &format!(
                "/v1/conversations/{conversation}/messages/{}/recall",
                ack.seq
            ),
            Some(&carol.token),
            "",
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert!(matches!(
        d.next_notice().await?,
        inbox_entry::Event::Recalled(_)
    ));

    // An outside consumer of events cannot call the API with a forged
    // identity, nor write into an inbox.
    let observer = system.nats_client("observer").await?;
    let mut headers = HeaderMap::new();
    headers.insert(shared::subject::header::USER_ID, "someone");
    headers.insert(shared::subject::header::DEVICE_ID, "device");
    let request = async_nats::Request::new()
        .headers(headers)
        .payload("".into())
        .timeout(Some(Duration::from_millis(500)));
    let forged = observer
        .send_request(shared::subject::call::MESSAGE_SEND, request)
        .await;
    assert!(
        forged.is_err(),
        "observer must not reach the messages service"
    );
    // It may read the public events.
    let mut events = observer.subscribe(shared::subject::event::ALL).await?;
    let api = system.api();
    api.user("erin").await?;
    let event = tokio::time::timeout(
        Duration::from_secs(5),
        futures::StreamExt::next(&mut events),
    )
    .await?;
    assert_eq!(
        event.unwrap().subject.as_str(),
        shared::subject::event::USER_REGISTERED
    );

    // The edge user cannot append to inboxes or publish events.
    let edge = system.nats_client("edge").await?;
    let js = async_nats::jetstream::new(edge);
    let append = js
        .publish(shared::subject::inbox("someone"), "x".into())
        .await;
    let refused = match append {
        Err(_) => true,
        Ok(ack) => ack.await.is_err(),
    };
    assert!(refused, "the edge must not write inboxes");
    Ok(())
}

/// Whether the messages service answers `client` calling as `user` (with
/// the identity headers only edges may set).
async fn answered_as(client: &async_nats::Client, user: &e2e::User) -> bool {
    let mut headers = HeaderMap::new();
    headers.insert(subject::header::USER_ID, user.user_id.as_str());
    headers.insert(subject::header::DEVICE_ID, user.device_id.as_str());
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(b"{}".as_slice().into())
        .timeout(Some(Duration::from_millis(500)));
    client
        .send_request(subject::call::MESSAGE_HISTORY, request)
        .await
        .is_ok()
}

/// Collects what `subscriber` gets within `window`.
async fn received(subscriber: &mut async_nats::Subscriber, window: Duration) -> usize {
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, subscriber.next()).await {
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_reads_replies_forges_pushes_or_touches_streams_not_theirs() -> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::Split, ["alice", "bob"]).await?;
    let api = system.api();

    // Nobody connects without a key.
    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(system.nats.url())
        .await;
    assert!(anonymous.is_err(), "an anonymous client connected");

    // An observer (and any service but the edge) cannot see the replies to
    // the edge's calls: a login's tokens travel there. The all-in-one user
    // can, which shows the login below does answer on that subject.
    let observer = system.nats_client("observer").await?;
    let social = system.nats_client("social").await?;
    let all = system.nats_client("natter").await?;
    let mut spies = Vec::new();
    for (client, subject) in [
        (&observer, "_INBOX.>"),
        (&observer, "_INBOX_edge.>"),
        (&observer, ">"),
        (&social, "_INBOX_edge.>"),
        (&social, "_INBOX_auth.>"),
    ] {
        spies.push((subject, client.subscribe(subject).await?));
    }
    let mut control = all.subscribe("_INBOX_edge.>").await?;
    observer.flush().await?;
    social.flush().await?;
    all.flush().await?;
    api.login("alice", &alice.password).await?;
    assert!(received(&mut control, Duration::from_millis(500)).await > 0);
    for (subject, spy) in &mut spies {
        assert_eq!(
            received(spy, Duration::from_millis(200)).await,
            0,
            "{subject}"
        );
    }

    // Forged inbox entries from the presence service (which may only
    // signal), at the inbox positions the next real message will take:
    // neither on the entry subject (refused by the server) nor dressed as a
    // signal (ignored by the edge) do they reach bob or move his cursor past
    // the real entries. The same forgery from a user allowed to push entries
    // reaches carol: only the permissions keep it out.
    let carol = api.user("carol").await?;
    let (mut b, mut c) = (
        Client::connect(&system.ws_url(), &bob, Format::Json).await?,
        Client::connect(&system.ws_url(), &carol, Format::Json).await?,
    );
    b.resume(0).await?;
    c.resume(0).await?;
    let (bob_last, carol_last) = (b.caught_up().await?, c.caught_up().await?);
    let mut inboxes = async_nats::jetstream::new(all.clone())
        .get_stream(subject::INBOX_STREAM)
        .await?;
    let next = inboxes.info().await?.state.last_sequence + 1;
    let forged = |prev: u64, cursor: u64| Push {
        cursor,
        prev: Some(prev),
        entry: Some(InboxEntry {
            event: Some(inbox_entry::Event::Message(
                shared::proto::message::Message {
                    id: "forged".into(),
                    conversation_id: "d:forged".into(),
                    seq: 1,
                    sender_id: alice.user_id.clone(),
                    body: Some(e2e::text("forged")),
                    ..Default::default()
                },
            )),
        }),
        signal: None,
    };
    let presence = system.nats_client("presence").await?;
    for (prev, cursor) in [(bob_last, next), (next, next + 1)] {
        // Entries and signals travel in batches per shard of users; an
        // entry on the signal subject is no signal.
        let entries = batch_for(&bob.user_id, forged(prev, cursor));
        presence
            .publish(subject::push_entry(&bob.user_id), entries.clone().into())
            .await?;
        presence
            .publish(subject::push_signal(&bob.user_id), entries.into())
            .await?;
    }
    presence.flush().await?;
    all.publish(
        subject::push_entry(&carol.user_id),
        batch_for(&carol.user_id, forged(carol_last, next + 100)).into(),
    )
    .await?;
    all.flush().await?;
    assert_eq!(
        c.messages(1).await?[0].1.id,
        "forged",
        "the control forgery"
    );
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    let ack = a.send_acked(&bob, "real-1", "real").await?;
    let got = b.messages(1).await?;
    assert_eq!(got[0].1.id, ack.message_id);
    assert!((next..=next + 1).contains(&got[0].0), "cursor {}", got[0].0);
    b.expect_no_more_pushes().await?;

    // Calls with a forged identity: only the edge may make them.
    for user in ["observer", "presence", "groups", "auth"] {
        let client = system.nats_client(user).await?;
        assert!(
            !answered_as(&client, &bob).await,
            "{user} called the messages service as bob"
        );
    }

    // The edge reads inboxes but cannot purge or delete them, nor the
    // events; the observer cannot either.
    for user in ["edge", "observer"] {
        let client = system.nats_client(user).await?;
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(800))
            .build(client);
        if user == "edge" {
            let mut inbox = js.get_stream(subject::INBOX_STREAM).await?;
            assert!(inbox.info().await?.state.messages > 0);
            assert!(inbox.purge().await.is_err(), "{user} purged the inboxes");
        }
        for stream in [subject::INBOX_STREAM, subject::EVENTS_STREAM] {
            assert!(
                js.delete_stream(stream).await.is_err(),
                "{user} deleted {stream}"
            );
        }
    }
    let js = async_nats::jetstream::new(all);
    assert!(js.get_stream(subject::INBOX_STREAM).await.is_ok());
    assert!(js.get_stream(subject::EVENTS_STREAM).await.is_ok());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_box_on_a_leaf_node_is_closed() -> anyhow::Result<()> {
    use natter::nats_users::{LEAF, LeafLogin, leaf_conf};
    let settings = Settings {
        leafnodes: true,
        ..Settings::default()
    };
    let (mut system, [alice, bob]) =
        System::with_settings_and_users(Mode::Split, settings, ["alice", "bob"]).await?;
    // The box: a nats-server of its own (what `natter nats-setup --leaf`
    // writes) linked to the hub as `leaf`, and an edge on it.
    let hub = format!(
        "nats-leaf://127.0.0.1:{}",
        system.leafnode_port.expect("leafnodes")
    );
    let seed = std::fs::read_to_string(system.keys.seed_file(LEAF))?;
    let login = LeafLogin::Nkey {
        url: &hub,
        seed: seed.trim(),
    };
    let leaf = shared::testing::NatsServer::start_configured(
        |_| leaf_conf(&system.keys, "127.0.0.1:4222", &login),
        &[],
    );
    let (edge, _) = system.spawn_edge_via(&leaf.url(), Some("hub")).await?;
    let ws = format!("ws://{edge}/v1/ws");

    // People chat through the box.
    let mut a = Client::connect(&ws, &alice, Format::Json).await?;
    let mut b = Client::connect_live(&ws, &bob, Format::Binary).await?;
    let ack = a.send_acked(&bob, "box-1", "来自边缘盒").await?;
    assert_eq!(b.messages(1).await?[0].1.id, ack.message_id);

    // Nobody gets into the box's server without a key, and its users keep
    // their roles there.
    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(leaf.url())
        .await;
    assert!(
        anonymous.is_err(),
        "an anonymous client connected to the box"
    );
    let connect = |user: &str| {
        let seed = std::fs::read_to_string(system.keys.seed_file(user));
        let (url, user) = (leaf.url(), user.to_owned());
        async move {
            anyhow::Ok(
                async_nats::ConnectOptions::new()
                    .nkey(seed?.trim().to_owned())
                    .custom_inbox_prefix(shared::config::inbox_prefix(Some(&user)))
                    .connect(url)
                    .await?,
            )
        }
    };
    let observer = connect("observer").await?;
    assert!(
        !answered_as(&observer, &bob).await,
        "an observer on the box called as bob"
    );

    // Whoever logs in on the box, the link carries no more than an edge
    // may do: no inbox writes, entry pushes or events reach the hub, and
    // the hub's streams cannot be deleted or purged from there. A call
    // subject (which an edge may publish) shows that the link does carry.
    let on_box = connect("natter").await?;
    let on_hub = system.nats_client("natter").await?;
    let forged = [
        subject::inbox("nobody"),
        subject::push_entry("nobody"),
        subject::event::USER_REGISTERED.to_owned(),
    ];
    let mut each = Vec::new();
    for subject in forged.iter().map(String::as_str).chain(["im.v1.probe.box"]) {
        each.push(on_hub.subscribe(subject.to_owned()).await?);
    }
    let mut seen = futures::stream::select_all(each);
    on_hub.flush().await?;
    // The link learns of the hub's interest.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for subject in forged {
        on_box.publish(subject, "forged".into()).await?;
    }
    on_box.publish("im.v1.probe.box", "call".into()).await?;
    on_box.flush().await?;
    let mut subjects = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, seen.next()).await {
        if message.payload.as_ref() == b"forged" || message.payload.as_ref() == b"call" {
            subjects.push(message.subject.to_string());
        }
    }
    assert_eq!(subjects, ["im.v1.probe.box"]);
    // JetStream from the box, as its edge reaches it: reading, yes;
    // purging or deleting, no. (Replies to anyone but the edge do not
    // even cross back.)
    let js = async_nats::jetstream::ContextBuilder::new()
        .domain("hub")
        .timeout(Duration::from_millis(800))
        .build(connect("edge").await?);
    let natter_js = async_nats::jetstream::ContextBuilder::new()
        .domain("hub")
        .timeout(Duration::from_millis(800))
        .build(on_box);
    assert!(natter_js.get_stream(subject::INBOX_STREAM).await.is_err());
    let mut inboxes = js.get_stream(subject::INBOX_STREAM).await?;
    assert!(inboxes.info().await?.state.messages > 0);
    assert!(inboxes.purge().await.is_err(), "the box purged the inboxes");
    assert!(js.delete_stream(subject::EVENTS_STREAM).await.is_err());
    Ok(())
}

/// One push for `user` as the services publish it: a batch of its shard.
fn batch_for(user: &str, push: shared::proto::delivery::Push) -> Vec<u8> {
    shared::proto::delivery::PushBatch {
        pushes: vec![shared::proto::delivery::UserPush {
            user_id: user.to_owned(),
            push: Some(push),
        }],
    }
    .encode_to_vec()
}
