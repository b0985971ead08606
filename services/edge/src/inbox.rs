//! The edge's view of the per-user inboxes and of each device's acked cursor.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{kv, stream::Stream};
use futures::StreamExt;
use prost::Message;
use shared::proto::delivery::InboxEntry;
use shared::{Nats, subject};

/// How long a replay waits for the next entry it was told is pending.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("inbox read: {0}")]
    Read(String),
    #[error("cursor store: {0}")]
    Cursor(String),
}

pub struct Inbox {
    stream: Stream,
    cursors: kv::Store,
}

/// Where a replay has to start from.
pub enum Start {
    /// Entries after this cursor are all still retained.
    After(u64),
    /// Entries after the cursor may have expired; the client must resync and
    /// continue from the given cursor (the end of the inbox).
    Resync(u64),
}

impl Inbox {
    pub async fn open(
        nats: &Nats,
        streams: &shared::nats::StreamsConfig,
    ) -> Result<Self, shared::nats::NatsError> {
        let stream = shared::nats::inbox_stream(&nats.jetstream, streams).await?;
        let cursors = match nats.jetstream.get_key_value(subject::CURSOR_BUCKET).await {
            Ok(store) => store,
            Err(_) => nats
                .jetstream
                .create_key_value(kv::Config {
                    bucket: subject::CURSOR_BUCKET.into(),
                    description: "natter acked inbox cursor per device (<user>.<device>)".into(),
                    history: 1,
                    num_replicas: streams.replicas,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| shared::nats::NatsError::JetStream {
                    name: subject::CURSOR_BUCKET.into(),
                    message: e.to_string(),
                })?,
        };
        Ok(Self { stream, cursors })
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
        if cursor.saturating_add(1) < info.state.first_sequence {
            Ok(Start::Resync(info.state.last_sequence))
        } else {
            Ok(Start::After(cursor))
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
        let consumer = self
            .stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject::inbox(user),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| InboxError::Read(e.to_string()))?;
        let mut last = after;
        if consumer.cached_info().num_pending == 0 {
            return Ok(last);
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| InboxError::Read(e.to_string()))?;
        loop {
            let next = tokio::time::timeout(READ_TIMEOUT, messages.next()).await;
            let message = match next {
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

    pub async fn acked_cursor(&self, user: &str, device: &str) -> Result<u64, InboxError> {
        let value = self
            .cursors
            .get(subject::cursor_key(user, device))
            .await
            .map_err(|e| InboxError::Cursor(e.to_string()))?;
        Ok(value
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
            .unwrap_or(0))
    }

    pub async fn store_cursor(
        &self,
        user: &str,
        device: &str,
        cursor: u64,
    ) -> Result<(), InboxError> {
        self.cursors
            .put(subject::cursor_key(user, device), cursor.to_string().into())
            .await
            .map_err(|e| InboxError::Cursor(e.to_string()))?;
        Ok(())
    }
}
