//! The presence service's endpoints (`im.v1.presence.status`, `.heartbeat`,
//! `.query`); the bucket watcher is in [`watch`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;
use prost::Message as _;
use shared::endpoint::Server;
use shared::endpoint::endpoints::{
    FriendAudience, FriendVisible, PresenceHeartbeat, PresenceQuery, PresenceStatus,
};
use shared::proto::presence as pb;
use shared::rpc::Identity;
use shared::rpc::internal;
use shared::service::StartError;
use shared::subject::presence_key;
use shared::{Nats, RpcError, ids, subject};
use tokio_util::sync::CancellationToken;

use crate::Config;

mod watch;

use watch::tell_friends;

const MAX_QUERY: usize = 200;
const MAX_HEARTBEAT: usize = 10_000;

struct State {
    config: Config,
    nats: Nats,
    kv: kv::Store,
    /// Online devices per user, as seen by the watcher.
    online: Mutex<HashMap<String, HashSet<String>>>,
    caller: shared::rpc::Caller,
    /// Changes to tell the users' friends about, in order.
    news: tokio::sync::mpsc::Sender<pb::PresenceChanged>,
}

/// Changes waiting for the friend fan-out before new ones are dropped.
const NEWS_QUEUE: usize = 4096;

/// Runs the presence service until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    nats: Nats,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    config.validate()?;
    shared::nats::events_stream(&nats.jetstream, &config.streams).await?;
    let kv = bucket(&nats, &config).await?;
    let (news, news_rx) = tokio::sync::mpsc::channel(NEWS_QUEUE);
    let state = Arc::new(State {
        config,
        nats: nats.clone(),
        kv,
        online: Mutex::new(HashMap::new()),
        caller: nats.caller(),
        news,
    });

    let mut watch = state
        .kv
        .watch_with_history(presence_key::DEVICES)
        .await
        .map_err(|e| StartError::setup("presence bucket", e))?;

    let server = Server::start(
        &nats.client,
        crate::MICRO_NAME,
        "natter presence",
        state.clone(),
        shutdown.clone(),
    )
    .await?
    .serve::<PresenceStatus, _, _>(256, State::status)
    .serve::<PresenceHeartbeat, _, _>(16, State::heartbeat)
    .serve::<PresenceQuery, _, _>(64, State::query)
    .listen()
    .await?;
    tracing::info!("presence service ready");

    let s = state.clone();
    let stop = shutdown.clone();
    let watcher = async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => s.observe(entry).await,
                    Some(Err(e)) => tracing::warn!(error = %e, "presence watch error"),
                    None => {
                        tracing::warn!("presence watch ended; restarting");
                        match s.kv.watch_with_history(presence_key::DEVICES).await {
                            Ok(w) => watch = w,
                            Err(e) => {
                                tracing::warn!(error = %e, "presence watch restart failed");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                },
            }
        }
    };
    let fanout = tell_friends(state.clone(), news_rx, shutdown.clone());
    tokio::join!(server.run(), watcher, fanout);
    tracing::info!("presence service stopped");
    Ok(())
}

async fn bucket(nats: &Nats, config: &Config) -> Result<kv::Store, StartError> {
    if let Ok(store) = nats.jetstream.get_key_value(subject::PRESENCE_BUCKET).await {
        return Ok(store);
    }
    nats.jetstream
        .create_key_value(kv::Config {
            bucket: subject::PRESENCE_BUCKET.into(),
            description: "natter presence: dev.<user>.<device> with per-key TTL, seen.<user>"
                .into(),
            history: 1,
            num_replicas: config.streams.replicas,
            storage: async_nats::jetstream::stream::StorageType::File,
            limit_markers: Some(Duration::from_secs(config.device_ttl_secs.max(10))),
            ..Default::default()
        })
        .await
        .map_err(|e| StartError::setup("presence bucket", e))
}

fn valid(device: &pb::DeviceRef) -> bool {
    subject::is_valid_token(&device.user_id) && subject::is_valid_token(&device.device_id)
}

impl State {
    /// Writes a device key with the device TTL and waits for the write.
    pub(super) async fn touch(
        &self,
        device: &pb::DeviceRef,
        edge_id: &str,
    ) -> Result<(), RpcError> {
        let ack = self.publish_touch(device, edge_id).await?;
        ack.await.map_err(|e| internal("presence put ack", e))?;
        Ok(())
    }

    /// Publishes a device key with the device TTL; the write is done when the
    /// returned future resolves.
    pub(super) async fn publish_touch(
        &self,
        device: &pb::DeviceRef,
        edge_id: &str,
    ) -> Result<async_nats::jetstream::context::PublishAckFuture, RpcError> {
        let value = pb::DeviceStatus {
            device: Some(device.clone()),
            online: true,
            edge_id: edge_id.to_owned(),
        };
        let prefix = self.kv.put_prefix.as_ref().unwrap_or(&self.kv.prefix);
        let subject = format!(
            "{prefix}{}",
            presence_key::device(&device.user_id, &device.device_id)
        );
        let publish = PublishMessage::build()
            .payload(value.encode_to_vec().into())
            .ttl(Duration::from_secs(self.config.device_ttl_secs));
        self.nats
            .jetstream
            .send_publish(subject, publish)
            .await
            .map_err(|e| internal("presence put", e))
    }

    pub(super) async fn status(
        self: Arc<Self>,
        _: (),
        input: pb::DeviceStatus,
    ) -> Result<pb::HeartbeatAck, RpcError> {
        let device = input
            .device
            .filter(valid)
            .ok_or_else(|| RpcError::bad_request("malformed device"))?;
        if input.online {
            self.touch(&device, &input.edge_id).await?;
            return Ok(pb::HeartbeatAck {});
        }
        // Only the edge that holds the device may take it offline: when a
        // device moved to another edge, the old edge's late goodbye is ignored.
        let key = presence_key::device(&device.user_id, &device.device_id);
        let entry = self
            .kv
            .entry(&key)
            .await
            .map_err(|e| internal("presence get", e))?;
        if let Some(entry) = entry.filter(|e| e.operation == Operation::Put) {
            let holder = pb::DeviceStatus::decode(entry.value.as_ref())
                .map(|s| s.edge_id)
                .unwrap_or_default();
            if holder == input.edge_id {
                // A failed expectation means another edge wrote in between: keep it.
                let _ = self
                    .kv
                    .delete_expect_revision(&key, Some(entry.revision))
                    .await;
            }
        }
        Ok(pb::HeartbeatAck {})
    }

    pub(super) async fn heartbeat(
        self: Arc<Self>,
        _: (),
        input: pb::Heartbeat,
    ) -> Result<pb::HeartbeatAck, RpcError> {
        if input.devices.len() > MAX_HEARTBEAT {
            return Err(RpcError::too_large(format!(
                "at most {MAX_HEARTBEAT} devices per heartbeat"
            )));
        }
        // Refresh every device even if some fail (a device skipped here would
        // expire and show offline by mistake): publish all, then collect acks.
        let mut acks = Vec::with_capacity(input.devices.len());
        let mut failed = 0;
        for device in input.devices.iter().filter(|d| valid(d)) {
            match self.publish_touch(device, &input.edge_id).await {
                Ok(ack) => acks.push(ack),
                Err(_) => failed += 1,
            }
        }
        // Side by side: an ack's timeout starts when it is awaited, so one
        // by one after a lost connection would wait a timeout per device.
        failed +=
            futures::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future))
                .await
                .iter()
                .filter(|ack| ack.is_err())
                .count();
        if failed > 0 {
            tracing::warn!(failed, "presence heartbeat: devices not refreshed");
            return Err(RpcError::unavailable(format!(
                "{failed} devices not refreshed"
            )));
        }
        Ok(pb::HeartbeatAck {})
    }

    /// Presence of up to 200 users. A user may see its own presence and its
    /// friends' (unless they blocked it); services (calls without a caller
    /// identity) see anyone's.
    pub(super) async fn query(
        self: Arc<Self>,
        me: Option<Identity>,
        input: pb::QueryRequest,
    ) -> Result<pb::QueryResponse, RpcError> {
        if input.user_ids.is_empty() || input.user_ids.len() > MAX_QUERY {
            return Err(RpcError::bad_request(format!(
                "ask for 1..={MAX_QUERY} users"
            )));
        }
        shared::ids::UserId::parse_all(&input.user_ids, MAX_QUERY)?;
        if let Some(me) = me {
            let visible = self
                .caller
                .call_to::<FriendVisible>(&shared::proto::social::VisibleRequest {
                    viewer_id: me.user_id.into(),
                    user_ids: input.user_ids.clone(),
                })
                .await?;
            if input
                .user_ids
                .iter()
                .any(|id| !visible.user_ids.contains(id))
            {
                return Err(RpcError::forbidden("presence is visible to friends only"));
            }
        }
        let mut users = Vec::with_capacity(input.user_ids.len());
        for user_id in input.user_ids {
            let mut devices: Vec<String> = shared::sync::lock(&self.online)
                .get(&user_id)
                .map(|d| d.iter().cloned().collect())
                .unwrap_or_default();
            devices.sort();
            let last_seen_ms = if devices.is_empty() {
                self.last_seen(&user_id).await?
            } else {
                ids::now_ms()
            };
            users.push(pb::UserPresence {
                online: !devices.is_empty(),
                online_device_ids: devices,
                last_seen_ms,
                user_id,
            });
        }
        Ok(pb::QueryResponse { users })
    }

    pub(super) async fn last_seen(&self, user_id: &str) -> Result<i64, RpcError> {
        let value = self
            .kv
            .get(presence_key::seen(user_id))
            .await
            .map_err(|e| internal("presence get", e))?;
        Ok(value
            .and_then(|v| std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()))
            .unwrap_or(0))
    }
}
