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

use crate::proto::delivery::{InboxEntry, Push, Signal};
use crate::subject;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use bytes::Bytes;
use prost::Message;
use tokio::sync::Mutex;

const SHARDS: usize = 1024;
/// Entries per cache shard before it is cleared (a miss costs one direct get).
const SHARD_CAPACITY: usize = 4096;
const MAX_ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
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
    /// Last known inbox sequence per user, sharded; a shard's lock is held for
    /// the whole append so appends for one user are serialized here.
    last: Vec<Mutex<HashMap<String, u64>>>,
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
            last: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
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
        let payload = Bytes::from(entry.encode_to_vec());
        let (cursor, prev) = self.append(user, payload, dedup_id).await?;
        let push = Push {
            cursor,
            entry: Some(entry.clone()),
            prev,
            signal: None,
        };
        // Best effort: a lost push is recovered by the edge from the inbox.
        if let Err(e) = self
            .client
            .publish(subject::push_entry(user), push.encode_to_vec().into())
            .await
        {
            tracing::warn!(error = %e, user, "push publish failed");
        }
        Ok(cursor)
    }

    /// Appends and returns `(cursor, prev)`; `prev` is None when the append
    /// was a duplicate of an earlier one (its predecessor is then unknown).
    async fn append(
        &self,
        user: &str,
        payload: Bytes,
        dedup_id: &str,
    ) -> Result<(u64, Option<u64>), DeliveryError> {
        let inbox = subject::inbox(user);
        let mut shard = self.last[shard_of(user, SHARDS)].lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let expected = match shard.get(user) {
                Some(seq) => *seq,
                None => self.last_sequence(user, &inbox).await?,
            };
            let publish = PublishMessage::build()
                .payload(payload.clone())
                .message_id(dedup_id)
                .expected_last_subject_sequence(expected);
            let result = match self.jetstream.send_publish(inbox.clone(), publish).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match result {
                Ok(ack) if ack.duplicate => return Ok((ack.sequence, None)),
                Ok(ack) => {
                    if shard.len() >= SHARD_CAPACITY {
                        shard.clear();
                    }
                    shard.insert(user.to_owned(), ack.sequence);
                    return Ok((ack.sequence, Some(expected)));
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    shard.remove(user);
                }
                Err(e) => {
                    shard.remove(user);
                    return Err(DeliveryError::Append {
                        user: user.to_owned(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Err(DeliveryError::Append {
            user: user.to_owned(),
            message: "too much contention".into(),
        })
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

/// Pushes something ephemeral to the connected devices of `user` (best
/// effort: nothing is stored, a lost signal is lost).
pub async fn signal(client: &async_nats::Client, user: &str, signal: Signal) {
    let push = Push {
        cursor: 0,
        entry: None,
        prev: None,
        signal: Some(signal),
    };
    if let Err(e) = client
        .publish(subject::push_signal(user), push.encode_to_vec().into())
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
