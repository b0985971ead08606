//! The presence service's NATS contract, against a real nats-server: what
//! it serves, what each endpoint refuses, and a device going online and
//! offline as an edge reports it.

use std::time::Duration;

use shared::endpoint::endpoints::*;
use shared::proto::presence as pb;
use shared::testing::contract::{Running, someone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_keeps_its_contract() {
    let presence =
        Running::start(|nats, stop, _| presence::run(presence::Config::default(), nats, stop))
            .await;
    let caller = &presence.caller;
    shared::assert_contract!(
        caller,
        presence::MICRO_NAME,
        PresenceStatus,
        PresenceHeartbeat,
        PresenceQuery,
    );

    let me = someone();
    let device = pb::DeviceRef {
        user_id: me.user_id.to_string(),
        device_id: me.device_id.to_string(),
    };
    let online = |online: bool| pb::DeviceStatus {
        device: Some(device.clone()),
        online,
        edge_id: "edge-1".into(),
    };
    let query = pb::QueryRequest {
        user_ids: vec![me.user_id.to_string()],
    };
    caller
        .call_to::<PresenceStatus>(&online(true))
        .await
        .expect("online");
    // The watcher sees the bucket change a moment later.
    let mut seen = false;
    for _ in 0..100 {
        let reply = caller
            .call_to::<PresenceQuery>(&query)
            .await
            .expect("query");
        if reply.users[0].online {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "the device never showed online");
    caller
        .call_to::<PresenceStatus>(&online(false))
        .await
        .expect("offline");
    let mut gone = false;
    for _ in 0..100 {
        let reply = caller
            .call_to::<PresenceQuery>(&query)
            .await
            .expect("query");
        if !reply.users[0].online && reply.users[0].last_seen_ms > 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the device never went offline with a last-seen time");
    presence.stop().await;
}
