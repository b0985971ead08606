//! The deployment's NATS users and subject permissions (`nats/users.conf`,
//! used by compose.yaml): the system works with each service as its own
//! user, and a user cannot do what it is not meant to.

use std::time::Duration;

use async_nats::HeaderMap;
use e2e::{Format, Mode, Settings, System, chat};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_works_with_per_service_users_and_others_are_kept_out() -> anyhow::Result<()> {
    let settings = Settings {
        permissions: true,
        ..Settings::default()
    };
    let system = System::start_with(Mode::Split, settings).await?;
    chat(&system, 30, Format::Json).await?;

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
    api.user("dave").await?;
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
