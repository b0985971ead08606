//! Which edges hold a user's devices, learned from the presence bucket, so
//! live pushes go as one `PushBatch` per edge (`im.push.v1.e<edge>.entry`)
//! instead of one per shard of users: with a few edges, a round of appends
//! costs a NATS message or two instead of one per shard it touches.
//!
//! Only a route known and unchanged for a while is used. A user not in the
//! bucket, or whose devices moved in the last [`PushRoutes::settle`], gets
//! the shard subject as before, to which every edge holding the user
//! subscribes; so does everyone while the bucket cannot be read. A push is
//! never the only way an entry reaches a device (the edge reads the inbox
//! when a push does not follow what it delivered, and checks the inbox a
//! little after each connection starts and then now and then), so a route
//! learned late costs latency, never an entry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Operation};
use futures::StreamExt;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use crate::proto::presence::DeviceStatus;
use crate::subject::{self, presence_key};

/// How long a changed route waits before it is used: longer than the
/// presence bucket takes to reach the services, shorter than the edge waits
/// for its first inbox check of a new connection ([`FIRST_CHECK`]).
pub const SETTLE: Duration = Duration::from_secs(2);

/// When an edge first compares a new connection's delivery with its inbox
/// (at most; then every `edge.inbox_check_secs`): a push routed by what a
/// service knew before this connection's presence reached it is read from
/// the inbox then.
pub const FIRST_CHECK: Duration = Duration::from_secs(3);

/// Where one user's pushes go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// Its shard's subject (see [`subject::push_shard`]).
    Shard(usize),
    /// The subject of one edge that holds its devices.
    Edge(String),
}

impl Route {
    /// The subject a `PushBatch` of this route goes to.
    pub fn subject(&self) -> String {
        match self {
            Route::Shard(shard) => subject::push_shard_entries(*shard),
            Route::Edge(edge) => subject::push_edge_entries(edge),
        }
    }
}

#[derive(Debug)]
struct UserRoute {
    /// device id → the edge holding it.
    devices: HashMap<String, String>,
    changed: Instant,
}

/// The user → edges map, fed by a watch of the presence bucket.
#[derive(Debug)]
pub struct PushRoutes {
    users: std::sync::Mutex<HashMap<String, UserRoute>>,
    settle: Duration,
}

impl PushRoutes {
    /// Routes that are used once unchanged for `settle`.
    pub fn new(settle: Duration) -> Self {
        Self {
            users: std::sync::Mutex::new(HashMap::new()),
            settle,
        }
    }

    /// How long a changed route waits before it is used.
    pub fn settle(&self) -> Duration {
        self.settle
    }

    /// A device of `user` is held by `edge` (`Some`) or by none (`None`).
    pub fn apply(&self, user: &str, device: &str, edge: Option<&str>, now: Instant) {
        let mut users = crate::sync::lock(&self.users);
        let route = users.entry(user.to_owned()).or_insert_with(|| UserRoute {
            devices: HashMap::new(),
            changed: now,
        });
        let changed = match edge {
            Some(edge) => {
                route
                    .devices
                    .insert(device.to_owned(), edge.to_owned())
                    .as_deref()
                    != Some(edge)
            }
            None => route.devices.remove(device).is_some(),
        };
        if changed {
            route.changed = now;
        }
        if route.devices.is_empty() {
            users.remove(user);
        }
    }

    /// Forgets every route (the bucket cannot be followed): shards for all.
    pub fn clear(&self) {
        crate::sync::lock(&self.users).clear();
    }

    /// The routes of `user`'s pushes: the edges holding its devices when
    /// known and settled, else its shard.
    pub fn routes(&self, user: &str, now: Instant) -> Vec<Route> {
        let users = crate::sync::lock(&self.users);
        match users.get(user) {
            Some(route) if now.saturating_duration_since(route.changed) >= self.settle => {
                let mut edges: Vec<&String> = route.devices.values().collect();
                edges.sort_unstable();
                edges.dedup();
                edges.into_iter().map(|e| Route::Edge(e.clone())).collect()
            }
            _ => vec![Route::Shard(subject::push_shard(user))],
        }
    }

    /// Applies one entry of the presence bucket.
    fn observe(&self, entry: &kv::Entry, now: Instant) {
        let Some((user, device)) = entry
            .key
            .strip_prefix(presence_key::DEVICE_PREFIX)
            .and_then(|rest| rest.split_once('.'))
        else {
            return;
        };
        match entry.operation {
            Operation::Put => match DeviceStatus::decode(entry.value.as_ref()) {
                Ok(status) if status.online && subject::is_valid_token(&status.edge_id) => {
                    self.apply(user, device, Some(&status.edge_id), now)
                }
                _ => self.apply(user, device, None, now),
            },
            Operation::Delete | Operation::Purge => self.apply(user, device, None, now),
        }
    }

    /// Follows the presence bucket until `shutdown`: waits for the bucket,
    /// replays it, then applies each change. When the watch fails or ends,
    /// every route is forgotten (shards for all) and the watch starts again.
    pub async fn follow(
        self: Arc<Self>,
        jetstream: async_nats::jetstream::Context,
        shutdown: CancellationToken,
    ) {
        while !shutdown.is_cancelled() {
            let watch = async {
                let store = jetstream
                    .get_key_value(subject::PRESENCE_BUCKET)
                    .await
                    .map_err(|e| e.to_string())?;
                store
                    .watch_with_history(presence_key::DEVICES)
                    .await
                    .map_err(|e| e.to_string())
            };
            let mut watch = match watch.await {
                Ok(watch) => watch,
                Err(e) => {
                    tracing::debug!(error = %e, "presence bucket not followed yet; pushes go by shard");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    entry = watch.next() => match entry {
                        Some(Ok(entry)) => self.observe(&entry, Instant::now()),
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "presence watch failed; pushes go by shard");
                            break;
                        }
                        None => break,
                    },
                }
            }
            self.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(routes: &[Route]) -> Vec<&str> {
        routes
            .iter()
            .map(|r| match r {
                Route::Edge(e) => e.as_str(),
                Route::Shard(_) => "shard",
            })
            .collect()
    }

    #[test]
    fn a_route_is_used_once_settled_and_shards_cover_the_rest() {
        let routes = PushRoutes::new(Duration::from_secs(2));
        let t0 = Instant::now();
        assert_eq!(
            routes.routes("u1", t0),
            vec![Route::Shard(subject::push_shard("u1"))]
        );
        routes.apply("u1", "d1", Some("edge-a"), t0);
        // Just learned: the shard still.
        assert_eq!(
            edges(&routes.routes("u1", t0 + Duration::from_secs(1))),
            ["shard"]
        );
        assert_eq!(
            edges(&routes.routes("u1", t0 + Duration::from_secs(2))),
            ["edge-a"]
        );
        // A second device on another edge unsettles the route again.
        let t1 = t0 + Duration::from_secs(3);
        routes.apply("u1", "d2", Some("edge-b"), t1);
        assert_eq!(edges(&routes.routes("u1", t1)), ["shard"]);
        assert_eq!(
            edges(&routes.routes("u1", t1 + Duration::from_secs(2))),
            ["edge-a", "edge-b"]
        );
        // A refresh of the same device on the same edge changes nothing.
        let t2 = t1 + Duration::from_secs(3);
        routes.apply("u1", "d1", Some("edge-a"), t2);
        assert_eq!(edges(&routes.routes("u1", t2)), ["edge-a", "edge-b"]);
        // Two devices on one edge: one push to it.
        routes.apply("u1", "d2", Some("edge-a"), t2);
        assert_eq!(
            edges(&routes.routes("u1", t2 + Duration::from_secs(2))),
            ["edge-a"]
        );
        // Devices leaving: unsettled, then unknown (the shard again).
        let t3 = t2 + Duration::from_secs(5);
        routes.apply("u1", "d2", None, t3);
        assert_eq!(edges(&routes.routes("u1", t3)), ["shard"]);
        routes.apply("u1", "d1", None, t3);
        assert_eq!(
            edges(&routes.routes("u1", t3 + Duration::from_secs(60))),
            ["shard"]
        );
        // Others are untouched; clear forgets everyone.
        routes.apply("u2", "d1", Some("edge-c"), t0);
        assert_eq!(edges(&routes.routes("u2", t3)), ["edge-c"]);
        routes.clear();
        assert_eq!(edges(&routes.routes("u2", t3)), ["shard"]);
    }
}
