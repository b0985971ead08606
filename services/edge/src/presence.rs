//! The devices this edge holds, announced to the presence service on connect
//! and disconnect and refreshed by a periodic heartbeat.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use shared::endpoint::endpoints::{PresenceHeartbeat, PresenceStatus};
use shared::ids::{DeviceId, UserId};
use shared::proto::presence as pb;
use shared::rpc::{Caller, Identity};
use tokio_util::sync::CancellationToken;

const HEARTBEAT_CHUNK: usize = 5_000;

pub struct Devices {
    edge_id: String,
    caller: Caller,
    connected: Mutex<HashMap<(UserId, DeviceId), usize>>,
}

impl Devices {
    pub fn new(edge_id: String, caller: Caller) -> Self {
        Self {
            edge_id,
            caller,
            connected: Mutex::new(HashMap::new()),
        }
    }

    pub fn count(&self) -> usize {
        shared::sync::lock(&self.connected).len()
    }

    /// The connections of `who`'s device on this edge.
    pub fn connections(&self, who: &Identity) -> usize {
        shared::sync::lock(&self.connected)
            .get(&(who.user_id.clone(), who.device_id.clone()))
            .copied()
            .unwrap_or(0)
    }

    pub async fn connected(&self, who: &Identity) {
        let first = {
            let mut map = shared::sync::lock(&self.connected);
            let n = map
                .entry((who.user_id.clone(), who.device_id.clone()))
                .or_insert(0);
            *n += 1;
            *n == 1
        };
        if first {
            self.announce(who, true).await;
        }
    }

    pub async fn disconnected(&self, who: &Identity) {
        let last = {
            let mut map = shared::sync::lock(&self.connected);
            let key = (who.user_id.clone(), who.device_id.clone());
            match map.get_mut(&key) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    map.remove(&key);
                    true
                }
                None => false,
            }
        };
        if last {
            self.announce(who, false).await;
        }
    }

    async fn announce(&self, who: &Identity, online: bool) {
        let status = pb::DeviceStatus {
            device: Some(pb::DeviceRef {
                user_id: who.user_id.to_string(),
                device_id: who.device_id.to_string(),
            }),
            online,
            edge_id: self.edge_id.clone(),
        };
        let result = self.caller.call_to::<PresenceStatus>(&status).await;
        if let Err(e) = result {
            // Presence is advisory: the heartbeat (or the TTL) repairs it.
            tracing::debug!(error = %e, online, "presence update failed");
        }
    }

    /// Refreshes every held device's presence until `shutdown`.
    pub async fn heartbeat_loop(&self, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let devices: Vec<pb::DeviceRef> = shared::sync::lock(&self.connected)
                .keys()
                .map(|(user_id, device_id)| pb::DeviceRef {
                    user_id: user_id.to_string(),
                    device_id: device_id.to_string(),
                })
                .collect();
            for chunk in devices.chunks(HEARTBEAT_CHUNK) {
                let beat = pb::Heartbeat {
                    edge_id: self.edge_id.clone(),
                    devices: chunk.to_vec(),
                };
                let result = self.caller.call_to::<PresenceHeartbeat>(&beat).await;
                if let Err(e) = result {
                    tracing::debug!(error = %e, "presence heartbeat failed");
                }
            }
        }
    }
}
