//! Presence: devices are online while connected, offline when they leave or
//! when their edge dies (the KV key expires), with last seen and events.

use std::time::Duration;

use e2e::{Api, Client, Format, Mode, Service, System, User};
use futures::StreamExt;
use prost::Message as _;
use shared::proto::presence::PresenceChanged;

async fn presence_of(api: &Api, asker: &User, user: &User) -> anyhow::Result<serde_json::Value> {
    let (status, body) = api
        .get(
            &format!("/v1/presence?user_ids={}", user.user_id),
            Some(&asker.token),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    Ok(body["users"][0].clone())
}

/// The next presence event must say `user` went online (or offline).
async fn expect_event(
    events: &mut async_nats::Subscriber,
    user: &User,
    online: bool,
) -> anyhow::Result<()> {
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("event subscription ended"))?;
    let event = PresenceChanged::decode(event.payload.as_ref())?;
    assert_eq!(
        (event.user_id.as_str(), event.online),
        (user.user_id.as_str(), online)
    );
    Ok(())
}

/// Polls until `check` holds (presence is eventually consistent: it follows
/// the KV bucket through a watcher).
async fn eventually(
    api: &Api,
    asker: &User,
    user: &User,
    check: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        last = presence_of(api, asker, user).await?;
        if check(&last) {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("presence never matched; last: {last}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_come_and_go_with_last_seen_and_events() -> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let api = system.api();
    let bob2 = api.another_device(&bob).await?;
    let nats = system.nats_client("natter").await?;
    let mut events = nats
        .subscribe(shared::subject::event::PRESENCE_CHANGED)
        .await?;

    let never = presence_of(&api, &alice, &bob).await?;
    assert_eq!(never.get("online"), None, "offline: {never}");
    assert_eq!(never.get("lastSeenMs"), None, "never seen: {never}");

    let b1 = Client::connect(&system.ws_url(), &bob, Format::Json).await?;
    let b2 = Client::connect(&system.ws_url(), &bob2, Format::Json).await?;
    let online = eventually(&api, &alice, &bob, |p| {
        p["onlineDeviceIds"]
            .as_array()
            .is_some_and(|d| d.len() == 2)
    })
    .await?;
    assert_eq!(online["online"], true);
    expect_event(&mut events, &bob, true).await?;

    // One device leaves: still online.
    b1.close().await;
    eventually(&api, &alice, &bob, |p| {
        p["onlineDeviceIds"]
            .as_array()
            .is_some_and(|d| d.len() == 1)
    })
    .await?;
    // The last one leaves: offline, with a last-seen time, and an event.
    b2.close().await;
    let offline = eventually(&api, &alice, &bob, |p| p.get("online").is_none()).await?;
    let seen: i64 = offline["lastSeenMs"].as_str().unwrap().parse()?;
    assert!((shared::ids::now_ms() - seen).abs() < 60_000);
    expect_event(&mut events, &bob, false).await?;

    // Bad queries are refused.
    let (status, _) = api
        .get("/v1/presence?user_ids=", Some(&alice.token))
        .await?;
    assert_eq!(status, 400);
    let (status, _) = api
        .get("/v1/presence?user_ids=a.b", Some(&alice.token))
        .await?;
    assert_eq!(status, 400);
    let many = vec!["u"; 201].join(",");
    let (status, _) = api
        .get(&format!("/v1/presence?user_ids={many}"), Some(&alice.token))
        .await?;
    assert_eq!(status, 400);
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_edge_devices_expire() -> anyhow::Result<()> {
    let (mut system, [alice, bob]) = System::with_users(Mode::Split, ["alice", "bob"]).await?;
    let api = system.api();
    let _b = Client::connect(&system.ws_url(), &bob, Format::Json).await?;
    eventually(&api, &alice, &bob, |p| p["online"] == true).await?;

    // The edge dies without saying goodbye; its heartbeats stop and bob's key
    // expires after the device TTL (3 s in tests).
    system.kill_process(Service::Edge);
    system.spawn_process(Service::Edge)?;
    system.wait_ready().await?;
    let offline = eventually(&api, &alice, &bob, |p| p.get("online").is_none()).await?;
    assert!(offline["lastSeenMs"].as_str().is_some(), "{offline}");
    Ok(())
}
