//! Delivery to users: append an entry to a user's inbox and push it live
//! (durable news), or push a signal (ephemeral news). Every service that tells
//! users something (messages, social, groups) delivers through this.
//!
//! Each user's inbox entries form a chain: every append states the stream
//! sequence of the user's previous entry (`Nats-Expected-Last-Subject-Sequence`),
//! and the push carries it as `prev`. An edge that has delivered exactly up to
//! `prev` forwards the push as is; any other edge reads the inbox to fill the
//! gap. So pushes may be lost or reordered without a device ever seeing a gap
//! or a duplicate. The last sequence per user is cached here and refreshed
//! when the server refuses an append because another instance appended first.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::proto::delivery::{InboxEntry, Push, PushBatch, Signal, UserPush};
use crate::push_routes::{PushRoutes, Route};
use crate::subject;
use crate::sync::KeyLocks;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use bytes::Bytes;
use prost::Message;
use std::sync::Arc;

const SHARDS: usize = 64;
/// Entries per cache shard before it is cleared (a miss costs one direct get).
const SHARD_CAPACITY: usize = 16384;
const MAX_ATTEMPTS: usize = 8;
/// Appends sent before their acks are awaited, at most.
const MAX_IN_FLIGHT: usize = 1024;

#[derive(Clone, Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("inbox append for {user} failed: {message}")]
    Append { user: String, message: String },
    #[error("reading the last inbox entry of {user} failed: {message}")]
    Last { user: String, message: String },
}

/// Appends to user inboxes in chain order.
pub struct Inboxes {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    stream: Stream,
    /// Last known inbox sequence per user, sharded (never held across an
    /// await).
    last: Vec<std::sync::Mutex<HashMap<String, u64>>>,
    /// Users whose inbox a task here is appending to: appends for one user
    /// are serialized, for different users they run side by side.
    busy: KeyLocks,
    /// Where pushes go: per edge when known, else per shard of users.
    routes: Option<Arc<PushRoutes>>,
}

/// One entry for one user's inbox, in [`Inboxes::deliver_many`].
pub struct Append {
    pub user: String,
    /// Index of the entry in the `entries` given beside it.
    pub entry: usize,
    /// The JetStream dedup id (`Nats-Msg-Id`) of this append.
    pub dedup_id: String,
}

impl Inboxes {
    pub fn new(
        client: async_nats::Client,
        jetstream: async_nats::jetstream::Context,
        stream: Stream,
    ) -> Self {
        Self {
            client,
            jetstream,
            stream,
            last: (0..SHARDS)
                .map(|_| std::sync::Mutex::new(HashMap::new()))
                .collect(),
            busy: KeyLocks::default(),
            routes: None,
        }
    }

    /// Pushes go per edge where `routes` knows the user's edges.
    pub fn with_routes(mut self, routes: Arc<PushRoutes>) -> Self {
        self.routes = Some(routes);
        self
    }

    /// Where `user`'s pushes go.
    fn routes_of(&self, user: &str, now: std::time::Instant) -> Vec<Route> {
        match &self.routes {
            Some(routes) => routes.routes(user, now),
            None => vec![Route::Shard(subject::push_shard(user))],
        }
    }

    /// Appends `entry` to `user`'s inbox (deduplicated by `dedup_id`) and
    /// pushes it live. Returns the entry's cursor.
    pub async fn deliver(
        &self,
        user: &str,
        entry: &InboxEntry,
        dedup_id: &str,
    ) -> Result<u64, DeliveryError> {
        let append = Append {
            user: user.to_owned(),
            entry: 0,
            dedup_id: dedup_id.to_owned(),
        };
        self.deliver_many(std::slice::from_ref(entry), std::slice::from_ref(&append))
            .await
            .pop()
            .unwrap_or_else(|| {
                Err(DeliveryError::Append {
                    user: user.to_owned(),
                    message: "nothing appended".into(),
                })
            })
    }

    /// Appends many entries and pushes them live; returns each append's
    /// cursor, in the order given. A user's entries go into its inbox in
    /// the order given. The appends go out in rounds: each round sends the
    /// next entry of every user at once, each stating its user's previous
    /// sequence, and then awaits their acks, so a batch costs one round trip
    /// per entry of its busiest user, not one per entry. When an append
    /// fails, that user's later entries fail too (so none overtakes it).
    pub async fn deliver_many(
        &self,
        entries: &[InboxEntry],
        appends: &[Append],
    ) -> Vec<Result<u64, DeliveryError>> {
        let payloads: Vec<Bytes> = entries
            .iter()
            .map(|e| Bytes::from(e.encode_to_vec()))
            .collect();
        let _busy = self
            .busy
            .lock(appends.iter().map(|a| a.user.as_str()))
            .await;
        let mut results: Vec<Option<Result<u64, DeliveryError>>> = vec![None; appends.len()];
        // Each user's appends, in order.
        let mut queues: Vec<(&str, std::collections::VecDeque<usize>)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, append) in appends.iter().enumerate() {
            if append.entry >= payloads.len() {
                results[i] = Some(Err(DeliveryError::Append {
                    user: append.user.clone(),
                    message: "no such entry".into(),
                }));
                continue;
            }
            let q = *index.entry(append.user.as_str()).or_insert_with(|| {
                queues.push((append.user.as_str(), Default::default()));
                queues.len() - 1
            });
            queues[q].1.push_back(i);
        }
        let mut attempts = vec![0usize; queues.len()];
        loop {
            let heads: Vec<(usize, usize)> = queues
                .iter()
                .enumerate()
                .filter_map(|(q, (_, queue))| queue.front().map(|&i| (q, i)))
                .take(MAX_IN_FLIGHT)
                .collect();
            if heads.is_empty() {
                break;
            }
            let expected =
                futures::future::join_all(heads.iter().map(|&(q, _)| self.last_known(queues[q].0)))
                    .await;
            // Every head goes out before any ack is awaited.
            let mut sent = Vec::with_capacity(heads.len());
            for (&(q, i), expected) in heads.iter().zip(expected) {
                let append = &appends[i];
                let ack = match expected {
                    Ok(expected) => {
                        let publish = PublishMessage::build()
                            .payload(payloads[append.entry].clone())
                            .message_id(append.dedup_id.as_str())
                            .expected_last_subject_sequence(expected);
                        self.jetstream
                            .send_publish(subject::inbox(&append.user), publish)
                            .await
                            .map(|ack| (expected, ack))
                            .map_err(|e| Err(append_error(&append.user, e)))
                    }
                    Err(e) => Err(Err(e)),
                };
                sent.push((q, i, ack));
            }
            let mut pushes: HashMap<Route, Vec<UserPush>> = HashMap::new();
            let now = std::time::Instant::now();
            // The acks are awaited side by side: each one's timeout starts
            // when it is awaited, so after a lost connection awaiting them
            // one by one would wait a timeout per append.
            let outcomes = futures::future::join_all(sent.into_iter().map(|(q, i, ack)| {
                let user = appends[i].user.as_str();
                async move {
                    let outcome = match ack {
                        Ok((expected, ack)) => ack.await.map(|ack| (expected, ack)).map_err(|e| {
                            if e.kind() == PublishErrorKind::WrongLastSequence {
                                Ok(())
                            } else {
                                Err(append_error(user, e))
                            }
                        }),
                        Err(e) => Err(e),
                    };
                    (q, i, outcome)
                }
            }))
            .await;
            for (q, i, outcome) in outcomes {
                let append = &appends[i];
                let user = append.user.as_str();
                match outcome {
                    Ok((expected, ack)) => {
                        // A duplicate's predecessor is unknown: the edge reads
                        // its inbox to place it.
                        let prev = if ack.duplicate {
                            self.forget(user);
                            None
                        } else {
                            self.remember(user, ack.sequence);
                            Some(expected)
                        };
                        let push = UserPush {
                            user_id: user.to_owned(),
                            push: Some(Push {
                                cursor: ack.sequence,
                                entry: Some(entries[append.entry].clone()),
                                prev,
                                signal: None,
                            }),
                        };
                        for route in self.routes_of(user, now) {
                            pushes.entry(route).or_default().push(push.clone());
                        }
                        results[i] = Some(Ok(ack.sequence));
                        queues[q].1.pop_front();
                        attempts[q] = 0;
                    }
                    // Another instance appended first: read the last
                    // sequence again and retry in the next round.
                    Err(Ok(())) if attempts[q] + 1 < MAX_ATTEMPTS => {
                        self.forget(user);
                        attempts[q] += 1;
                    }
                    Err(e) => {
                        self.forget(user);
                        let error = e.err().unwrap_or_else(|| DeliveryError::Append {
                            user: user.to_owned(),
                            message: "too much contention".into(),
                        });
                        for i in queues[q].1.drain(..) {
                            results[i] = Some(Err(error.clone()));
                        }
                    }
                }
            }
            // The round's pushes: one message per edge or shard.
            for (route, pushes) in pushes {
                self.publish_pushes(&route, pushes).await;
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(DeliveryError::Append {
                        user: String::new(),
                        message: "not appended".into(),
                    })
                })
            })
            .collect()
    }

    /// Best effort: a lost push is recovered by the edge from the inbox.
    /// A round's pushes to one route go in as few messages as fit under the
    /// server's `max_payload` (a notice to a thousand members does not fit
    /// in one).
    async fn publish_pushes(&self, route: &Route, pushes: Vec<UserPush>) {
        let limit = (self.client.server_info().max_payload).max(1024);
        for batch in push_batches(pushes, limit) {
            if let Err(e) = self
                .client
                .publish(route.subject(), batch.encode_to_vec().into())
                .await
            {
                tracing::warn!(error = %e, ?route, "push publish failed");
            }
        }
    }

    fn cache(&self, user: &str) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        crate::sync::lock(&self.last[shard_of(user, SHARDS)])
    }

    fn remember(&self, user: &str, sequence: u64) {
        let mut cache = self.cache(user);
        if cache.len() >= SHARD_CAPACITY {
            cache.clear();
        }
        cache.insert(user.to_owned(), sequence);
    }

    fn forget(&self, user: &str) {
        self.cache(user).remove(user);
    }

    /// The sequence of `user`'s last inbox entry: cached, or read.
    async fn last_known(&self, user: &str) -> Result<u64, DeliveryError> {
        if let Some(seq) = self.cache(user).get(user) {
            return Ok(*seq);
        }
        self.last_sequence(user, &subject::inbox(user)).await
    }

    async fn last_sequence(&self, user: &str, inbox: &str) -> Result<u64, DeliveryError> {
        match self.stream.direct_get_last_for_subject(inbox).await {
            Ok(message) => Ok(message.sequence),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(0),
            Err(e) => Err(DeliveryError::Last {
                user: user.to_owned(),
                message: e.to_string(),
            }),
        }
    }
}

/// `pushes` in batches of at most `limit` bytes encoded (a push larger than
/// that alone goes alone, and the server refuses it: the edge reads it from
/// the inbox).
fn push_batches(pushes: Vec<UserPush>, limit: usize) -> Vec<PushBatch> {
    repeated_under(pushes, limit, |push| push.encoded_len())
        .into_iter()
        .map(|pushes| PushBatch { pushes })
        .collect()
}

/// `items` in order, in runs whose encoding as a repeated field of one
/// message stays within `limit` bytes (an item larger than that alone goes
/// alone).
/// `encoded_len` tells an item's encoded size.
pub fn repeated_under<T>(
    items: Vec<T>,
    limit: usize,
    encoded_len: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut runs: Vec<Vec<T>> = Vec::new();
    let mut size = 0;
    for item in items {
        // The field's tag and length prefix: at most 1 + 10 bytes.
        let len = encoded_len(&item) + 11;
        match runs.last_mut() {
            Some(run) if size + len <= limit => {
                run.push(item);
                size += len;
            }
            _ => {
                size = len;
                runs.push(vec![item]);
            }
        }
    }
    runs
}

fn append_error(user: &str, e: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Append {
        user: user.to_owned(),
        message: e.to_string(),
    }
}

/// Pushes something ephemeral to the connected devices of `user` (best
/// effort: nothing is stored, a lost signal is lost).
pub async fn signal(client: &async_nats::Client, user: &str, signal: Signal) {
    let push = Push {
        cursor: 0,
        entry: None,
        prev: None,
        signal: Some(signal),
    };
    let batch = PushBatch {
        pushes: vec![UserPush {
            user_id: user.to_owned(),
            push: Some(push),
        }],
    };
    if let Err(e) = client
        .publish(subject::push_signal(user), batch.encode_to_vec().into())
        .await
    {
        tracing::debug!(error = %e, user, "signal publish failed");
    }
}

/// Which of `shards` locks guards `key` (users here, conversations in the
/// messages service's ordering locks).
pub fn shard_of(key: &str, shards: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() as usize) % shards
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(user: usize, text_bytes: usize) -> UserPush {
        UserPush {
            user_id: format!("u{user}"),
            push: Some(Push {
                cursor: user as u64,
                entry: Some(InboxEntry {
                    event: Some(crate::proto::delivery::inbox_entry::Event::Message(
                        crate::proto::message::Message {
                            id: "x".repeat(text_bytes),
                            ..Default::default()
                        },
                    )),
                }),
                prev: None,
                signal: None,
            }),
        }
    }

    #[test]
    fn push_batches_stay_under_the_limit_and_keep_every_push_in_order() {
        let pushes: Vec<UserPush> = (0..1000).map(|i| push(i, 1000 + i % 7)).collect();
        let batches = push_batches(pushes.clone(), 64 * 1024);
        assert!(batches.len() > 1, "{} batches", batches.len());
        for batch in &batches {
            assert!(batch.encoded_len() <= 64 * 1024, "{}", batch.encoded_len());
            assert!(!batch.pushes.is_empty());
        }
        let again: Vec<UserPush> = batches.into_iter().flat_map(|b| b.pushes).collect();
        assert_eq!(again, pushes);
        // A push over the limit goes alone; small ones fit in one batch.
        let big = push_batches(vec![push(1, 10), push(2, 5000), push(3, 10)], 1024);
        assert_eq!(
            big.iter().map(|b| b.pushes.len()).collect::<Vec<_>>(),
            [1, 1, 1]
        );
        assert_eq!(push_batches(vec![push(1, 10), push(2, 10)], 1024).len(), 1);
        assert!(push_batches(Vec::new(), 1024).is_empty());
    }
}
