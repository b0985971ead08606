//! The deployment's NATS users and subject permissions (`nats/users.conf`,
//! used by compose.yaml): the system works with each service as its own
//! user, and a user cannot do what it is not meant to.

use std::time::Duration;

use async_nats::HeaderMap;
use e2e::{Client, Format, Mode, Settings, System, chat};
use serde_json::json;
use shared::proto::delivery::{inbox_entry, signal};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_works_with_per_service_users_and_others_are_kept_out() -> anyhow::Result<()> {
    // Groups of two are "large": their messages take the read fan-out
    // subjects (messages publishes, edges subscribe).
    let settings = Settings {
        permissions: true,
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
