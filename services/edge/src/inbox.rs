//! The edge's view of the per-user inboxes and of each device's acked cursor.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use futures::StreamExt;
use prost::Message;
use shared::proto::delivery::InboxEntry;
use shared::{Nats, subject};
use tokio::sync::Semaphore;

/// How long a replay waits for the next entry it was told is pending.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at moving a stored cursor forward when another edge writes too.
const CURSOR_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("inbox read: {0}")]
    Read(String),
    #[error("cursor store: {0}")]
    Cursor(String),
}

pub struct InboxReader {
    stream: Stream,
    cursors: kv::Store,
    /// Bounds the replays running at once, so that a reconnect storm (every
    /// connection catching up together) cannot flood JetStream with consumers.
    replays: Semaphore,
}

/// Where a replay has to start from.
pub enum Start {
    /// Entries after this cursor are all still retained.
    After(u64),
    /// Entries after the cursor may have expired, or the cursor is from
    /// another inbox (beyond its end): the client must resync and continue
    /// from the given cursor (the end of the inbox).
    Resync(u64),
}

impl InboxReader {
    pub async fn open(
        nats: &Nats,
        streams: &shared::nats::StreamsConfig,
        max_concurrent_replays: usize,
    ) -> Result<Self, shared::nats::NatsError> {
        let stream = shared::nats::inbox_stream(&nats.jetstream, streams).await?;
        let cursors = shared::nats::cursor_bucket(&nats.jetstream, streams).await?;
        Ok(Self {
            stream,
            cursors,
            replays: Semaphore::new(max_concurrent_replays),
        })
    }

    /// Whether entries after `cursor` are still all retained.
    pub async fn start(&self, cursor: u64) -> Result<Start, InboxError> {
        if cursor == 0 {
            return Ok(Start::After(0));
        }
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| InboxError::Read(e.to_string()))?;
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        if cursor.saturating_add(1) < first || cursor > last {
            Ok(Start::Resync(last))
        } else {
            Ok(Start::After(cursor))
        }
    }

    /// The cursor of `user`'s last inbox entry (0 when there is none).
    pub async fn last_cursor(&self, user: &str) -> Result<u64, InboxError> {
        match self
            .stream
            .direct_get_last_for_subject(subject::inbox(user))
            .await
        {
            Ok(message) => Ok(message.sequence),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(0),
            Err(e) => Err(InboxError::Read(e.to_string())),
        }
    }

    /// Reads `user`'s entries after `after`, up to the end of the inbox, and
    /// hands each to `deliver` in order; stops early when `deliver` says so.
    /// Returns the cursor of the last entry handed over (or `after`).
    pub async fn replay<F, Fut>(
        &self,
        user: &str,
        after: u64,
        mut deliver: F,
    ) -> Result<u64, InboxError>
    where
        F: FnMut(u64, InboxEntry) -> Fut,
        Fut: Future<Output = bool>,
    {
        // Most catch-ups find nothing new: one direct get instead of a consumer.
        if self.last_cursor(user).await? <= after {
            return Ok(after);
        }
        let _permit = self
            .replays
            .acquire()
            .await
            .map_err(|_| InboxError::Read("edge shutting down".into()))?;
        let consumer = self
            .stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject::inbox(user),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: after.saturating_add(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|e| InboxError::Read(e.to_string()))?;
        let name = consumer.cached_info().name.clone();
        let result = if consumer.cached_info().num_pending == 0 {
            Ok(after)
        } else {
            read_all(consumer, after, &mut deliver).await
        };
        // Ordered consumers expire on their own; deleting saves the server
        // from keeping one per replay for its inactivity threshold.
        if let Err(e) = self.stream.delete_consumer(&name).await {
            tracing::debug!(error = %e, "ordered consumer not deleted");
        }
        result
    }

    pub async fn acked_cursor(&self, user: &str, device: &str) -> Result<u64, InboxError> {
        let value = self
            .cursors
            .get(subject::cursor_key(user, device))
            .await
            .map_err(|e| InboxError::Cursor(e.to_string()))?;
        Ok(parse_cursor(value.as_deref()))
    }

    /// Stores a device's acked cursor, never moving it backwards (an old
    /// session of the same device may still flush a lower one).
    pub async fn store_cursor(
        &self,
        user: &str,
        device: &str,
        cursor: u64,
    ) -> Result<(), InboxError> {
        let key = subject::cursor_key(user, device);
        let err = |e: &dyn std::fmt::Display| InboxError::Cursor(e.to_string());
        for _ in 0..CURSOR_ATTEMPTS {
            let entry = self.cursors.entry(&key).await.map_err(|e| err(&e))?;
            let value = cursor.to_string().into();
            let written = match entry {
                Some(entry) if entry.operation == kv::Operation::Put => {
                    if parse_cursor(Some(&entry.value)) >= cursor {
                        return Ok(());
                    }
                    self.cursors
                        .update(&key, value, entry.revision)
                        .await
                        .is_ok()
                }
                _ => self.cursors.create(&key, value).await.is_ok(),
            };
            if written {
                return Ok(());
            }
        }
        Err(InboxError::Cursor("concurrent cursor updates".into()))
    }
}

async fn read_all<F, Fut>(
    consumer: async_nats::jetstream::consumer::Consumer<pull::OrderedConfig>,
    after: u64,
    deliver: &mut F,
) -> Result<u64, InboxError>
where
    F: FnMut(u64, InboxEntry) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut last = after;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| InboxError::Read(e.to_string()))?;
    loop {
        let message = match tokio::time::timeout(READ_TIMEOUT, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(InboxError::Read(e.to_string())),
            Ok(None) => return Ok(last),
            Err(_) => return Err(InboxError::Read("timed out reading the inbox".into())),
        };
        let info = message
            .info()
            .map_err(|e| InboxError::Read(e.to_string()))?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        if seq > last {
            match InboxEntry::decode(message.payload.as_ref()) {
                Ok(entry) => {
                    if !deliver(seq, entry).await {
                        return Ok(last);
                    }
                }
                // Written by a newer or broken producer: skip, never stall.
                Err(e) => tracing::warn!(error = %e, seq, "undecodable inbox entry skipped"),
            }
            last = seq;
        }
        if pending == 0 {
            return Ok(last);
        }
    }
}

fn parse_cursor(value: Option<&[u8]>) -> u64 {
    value
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}
