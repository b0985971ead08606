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
//!
//! An entry is stored once. A message's entries carry their id
//! (`<message id>:<user>`) in a header, [`subject::header::ENTRY_ID`], and
//! not the server's dedup id: the server would keep every id of its
//! duplicate window in memory (at 3,000 messages/s over 120 s, 360,000
//! map entries that its collector marks through on every cycle), and a
//! redo after the window (a fan-out left pending over a longer outage)
//! would pass it. Instead, an append that an earlier attempt may have
//! stored (a retry, the sweep) first looks for its id among the user's
//! entries stored since its message was (a walk: an ordered consumer of
//! headers only), and so does every append the server refuses for a moved
//! chain. The first attempt of an append trusts the cached last sequence
//! when that came from this process's own appends and walks (a walk
//! remembers the ids it saw, so an entry another instance appended
//! meanwhile is known), and walks otherwise. Rare entries (notices) keep
//! the server's dedup id ([`Once::Window`]); refused twice because a
//! stream of messages keeps moving the chain, a notice goes in off it
//! (see [`UNCHAINED_AFTER`]).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::proto::delivery::{InboxEntry, Push, PushBatch, Signal, UserPush};
use crate::push_routes::{PushRoutes, Route};
use crate::subject;
use crate::sync::KeyLocks;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use bytes::Bytes;
use futures::StreamExt as _;
use prost::Message;
use std::sync::Arc;

const SHARDS: usize = 64;
/// Entries per cache shard before it is cleared (a miss costs a walk, or a
/// direct get for a notice).
const SHARD_CAPACITY: usize = 16384;
const MAX_ATTEMPTS: usize = 8;
/// Attempts of an append the server refuses because another appender
/// moved the user's chain first, at most (see [`backoff`]).
const CONFLICT_ATTEMPTS: usize = 16;
/// The longest pause before the next attempt after a conflict.
const MAX_BACKOFF_MS: u64 = 32;
/// Refusals after which a notice ([`Once::Window`]) is appended without
/// stating its user's previous sequence. A user whose inbox a stream of
/// messages fills moves on before a second appender's retry arrives (the
/// streaming appender sends its next entry as soon as the last is acked),
/// so a notice on the chain could wait for the stream's end. Off the chain
/// its push names no predecessor (edges read the inbox to place it), the
/// stream's next append is refused and walks, and the server's dedup id
/// still keeps it from being stored twice.
const UNCHAINED_AFTER: usize = 2;
/// How far before its message's time a walk looks for an entry (clocks of
/// the stamping hosts apart, at most).
const WALK_MARGIN_MS: i64 = 60_000;
/// How long a walk waits for the next entry.
const WALK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Entry ids a walk remembers per user, at most.
const SEEN_CAPACITY: usize = 4096;
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
    last: Vec<std::sync::Mutex<HashMap<String, Known>>>,
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
    /// How the entry is kept from being stored twice.
    pub once: Once,
}

/// How an append is kept from being stored twice.
#[derive(Clone, Debug)]
pub enum Once {
    /// The stream's duplicate window (`Nats-Msg-Id`): for rare entries
    /// (notices) whose repeats come within it.
    Window(String),
    /// The entry's id (unique in its inbox) in a header, looked for among
    /// the inbox's entries from `since_ms` on (a minute earlier, for
    /// clocks) when an earlier attempt may have stored it. `first`: no
    /// earlier attempt can have (the append right after its message's
    /// commit).
    Entry {
        id: String,
        since_ms: i64,
        first: bool,
    },
}

/// What is known of a user's inbox here.
#[derive(Clone, Debug, Default)]
struct Known {
    /// Its last entry's sequence.
    last: u64,
    /// The entries the last walk saw (id → sequence), when `last` rests on
    /// a walk: what others appended since `walked_from_ms`. `None` when it
    /// rests on a read of the last entry alone (a first attempt then
    /// walks).
    seen: Option<Arc<HashMap<String, u64>>>,
    /// Where that walk started (Unix ms).
    walked_from_ms: i64,
}

/// What a walk found.
enum Walked {
    /// The entry is in the inbox, at this sequence.
    Found(u64),
    /// It is not, up to what is known.
    Absent(Known),
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
            once: Once::Window(dedup_id.to_owned()),
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
        // When a user's next attempt may go, after a conflict.
        let mut ready_at: Vec<Option<tokio::time::Instant>> = vec![None; queues.len()];
        loop {
            let round = tokio::time::Instant::now();
            let heads: Vec<(usize, usize)> = queues
                .iter()
                .enumerate()
                .filter(|(q, _)| ready_at[*q].is_none_or(|at| at <= round))
                .filter_map(|(q, (_, queue))| queue.front().map(|&i| (q, i)))
                .take(MAX_IN_FLIGHT)
                .collect();
            if heads.is_empty() {
                let waiting = queues
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, queue))| !queue.is_empty())
                    .filter_map(|(q, _)| ready_at[q])
                    .min();
                match waiting {
                    Some(at) => {
                        tokio::time::sleep_until(at).await;
                        continue;
                    }
                    None => break,
                }
            }
            let plans =
                futures::future::join_all(heads.iter().map(|&(_, i)| self.plan(&appends[i]))).await;
            // Every head goes out before any ack is awaited.
            let mut sent = Vec::with_capacity(heads.len());
            for (&(q, i), plan) in heads.iter().zip(plans) {
                let append = &appends[i];
                let ack = match plan {
                    Ok(Plan::Found(sequence)) => Ok(Sent::Found(sequence)),
                    Ok(Plan::After(expected)) => {
                        let publish =
                            PublishMessage::build().payload(payloads[append.entry].clone());
                        // A notice refused twice goes in off the chain (see
                        // `UNCHAINED_AFTER`).
                        let expected = match &append.once {
                            Once::Window(_) if attempts[q] >= UNCHAINED_AFTER => None,
                            _ => Some(expected),
                        };
                        let publish = match expected {
                            Some(expected) => publish.expected_last_subject_sequence(expected),
                            None => publish,
                        };
                        let publish = match &append.once {
                            Once::Window(id) => publish.message_id(id.as_str()),
                            Once::Entry { id, .. } => {
                                publish.header(subject::header::ENTRY_ID, id.as_str())
                            }
                        };
                        self.jetstream
                            .send_publish(subject::inbox(&append.user), publish)
                            .await
                            .map(|ack| Sent::Publish(expected, ack))
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
                        Ok(Sent::Found(sequence)) => Ok((sequence, None)),
                        Ok(Sent::Publish(expected, ack)) => ack
                            .await
                            .map(|ack| (ack.sequence, expected.filter(|_| !ack.duplicate)))
                            .map_err(|e| {
                                if e.kind() == PublishErrorKind::WrongLastSequence {
                                    Ok(stated_last(&e))
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
                    Ok((sequence, prev)) => {
                        // An entry found already there (a duplicate): its
                        // predecessor is unknown, the edge reads its inbox
                        // to place it.
                        if prev.is_some() {
                            self.advance(user, sequence);
                        } else {
                            self.forget(user);
                        }
                        let push = UserPush {
                            user_id: user.to_owned(),
                            push: Some(Push {
                                cursor: sequence,
                                entry: Some(entries[append.entry].clone()),
                                prev,
                                signal: None,
                            }),
                        };
                        for route in self.routes_of(user, now) {
                            pushes.entry(route).or_default().push(push.clone());
                        }
                        results[i] = Some(Ok(sequence));
                        queues[q].1.pop_front();
                        attempts[q] = 0;
                        ready_at[q] = None;
                    }
                    // Another appender (a service, an instance) moved the
                    // chain first. A notice goes again at once after the
                    // sequence the refusal names, then off the chain. An
                    // entry with an id of its own walks again, at once the
                    // first time, then after a random pause that grows.
                    Err(Ok(stated)) if attempts[q] + 1 < CONFLICT_ATTEMPTS => {
                        tracing::debug!(
                            user,
                            ?stated,
                            attempts = attempts[q],
                            "append refused: the chain moved"
                        );
                        attempts[q] += 1;
                        match (stated, &append.once) {
                            (Some(last), Once::Window(_)) => self.remember(
                                user,
                                Known {
                                    last,
                                    ..Known::default()
                                },
                            ),
                            (None, Once::Window(_)) => self.forget(user),
                            (_, Once::Entry { .. }) => {
                                self.forget(user);
                                ready_at[q] = backoff(attempts[q]).map(|pause| round + pause);
                            }
                        }
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

    fn cache(&self, user: &str) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        crate::sync::lock(&self.last[shard_of(user, SHARDS)])
    }

    fn remember(&self, user: &str, known: Known) {
        let mut cache = self.cache(user);
        if cache.len() >= SHARD_CAPACITY {
            cache.clear();
        }
        cache.insert(user.to_owned(), known);
    }

    /// `user`'s inbox ends with an entry appended here: what else is known
    /// of it stays.
    fn advance(&self, user: &str, sequence: u64) {
        let mut cache = self.cache(user);
        match cache.get_mut(user) {
            Some(known) => known.last = sequence,
            None => {
                if cache.len() >= SHARD_CAPACITY {
                    cache.clear();
                }
                cache.insert(
                    user.to_owned(),
                    Known {
                        last: sequence,
                        ..Known::default()
                    },
                );
            }
        }
    }

    fn forget(&self, user: &str) {
        self.cache(user).remove(user);
    }

    /// Where `append` goes: after which sequence of its user's inbox, or
    /// nowhere because it is there already.
    async fn plan(&self, append: &Append) -> Result<Plan, DeliveryError> {
        let user = append.user.as_str();
        let cached = self.cache(user).get(user).cloned();
        match &append.once {
            Once::Window(_) => match cached {
                Some(known) => Ok(Plan::After(known.last)),
                None => {
                    let last = self.last_entry(user).await?.map_or(0, |(seq, _)| seq);
                    self.remember(
                        user,
                        Known {
                            last,
                            ..Known::default()
                        },
                    );
                    Ok(Plan::After(last))
                }
            },
            Once::Entry {
                id,
                since_ms,
                first,
            } => {
                // A copy stored by another instance is stored after the
                // message: seen by the walk if the walk started before it.
                if *first
                    && let Some(Known {
                        last,
                        seen: Some(seen),
                        walked_from_ms,
                    }) = cached
                    && walked_from_ms <= walk_start(*since_ms)
                {
                    return Ok(match seen.get(id) {
                        Some(&sequence) => Plan::Found(sequence),
                        None => Plan::After(last),
                    });
                }
                match self.walk(user, id, *since_ms).await? {
                    Walked::Found(sequence) => Ok(Plan::Found(sequence)),
                    Walked::Absent(known) => {
                        let last = known.last;
                        self.remember(user, known);
                        Ok(Plan::After(last))
                    }
                }
            }
        }
    }

    /// Looks for the entry `id` among `user`'s entries stored since
    /// `since_ms` (a margin earlier), reading their headers only; when it
    /// is not there, what the walk saw: the inbox's last sequence and the
    /// ids after the start.
    async fn walk(&self, user: &str, id: &str, since_ms: i64) -> Result<Walked, DeliveryError> {
        let failed = |e: &dyn std::fmt::Display| DeliveryError::Last {
            user: user.to_owned(),
            message: format!("walking the inbox: {e}"),
        };
        let from_ms = walk_start(since_ms);
        let from_ns = i128::from(from_ms) * 1_000_000;
        let start =
            time::OffsetDateTime::from_unix_timestamp_nanos(from_ns).map_err(|e| failed(&e))?;
        // What came while a walk read is read by the next, from where the
        // last one ended.
        let mut from = DeliverPolicy::ByStartTime { start_time: start };
        let mut seen: Option<HashMap<String, u64>> = Some(HashMap::new());
        let mut seen_to: Option<u64> = None;
        for _ in 0..MAX_ATTEMPTS {
            let consumer = self
                .stream
                .create_consumer(pull::OrderedConfig {
                    filter_subject: subject::inbox(user),
                    deliver_policy: from,
                    headers_only: true,
                    ..Default::default()
                })
                .await
                .map_err(|e| failed(&e))?;
            let name = consumer.cached_info().name.clone();
            let read = if consumer.cached_info().num_pending == 0 {
                Ok((None, None))
            } else {
                read_ids(consumer, id, &mut seen)
                    .await
                    .map_err(|e| failed(&e))
            };
            // Ordered consumers expire on their own; deleting saves the
            // server from keeping one per walk for its inactivity threshold.
            if let Err(e) = self.stream.delete_consumer(&name).await {
                tracing::debug!(error = %e, "ordered consumer not deleted");
            }
            let (found, last_seen) = read?;
            if let Some(sequence) = found {
                return Ok(Walked::Found(sequence));
            }
            seen_to = last_seen.or(seen_to);
            // The walk read up to its end when it started: whatever came
            // since is walked again.
            let last = self.last_entry(user).await?;
            let complete = match (seen_to, last) {
                (_, None) => true,
                (Some(seen_to), Some((last, _))) => last <= seen_to,
                (None, Some((_, stored))) => stored < start,
            };
            if complete {
                return Ok(Walked::Absent(Known {
                    last: last.map_or(0, |(seq, _)| seq),
                    seen: seen.map(Arc::new),
                    walked_from_ms: from_ms,
                }));
            }
            if let Some(seen_to) = seen_to {
                from = DeliverPolicy::ByStartSequence {
                    start_sequence: seen_to + 1,
                };
            }
        }
        Err(DeliveryError::Append {
            user: user.to_owned(),
            message: "too much contention".into(),
        })
    }

    /// The sequence and time of `user`'s last inbox entry, if any.
    async fn last_entry(
        &self,
        user: &str,
    ) -> Result<Option<(u64, time::OffsetDateTime)>, DeliveryError> {
        match self
            .stream
            .direct_get_last_for_subject(subject::inbox(user))
            .await
        {
            Ok(message) => Ok(Some((message.sequence, message.time))),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(DeliveryError::Last {
                user: user.to_owned(),
                message: e.to_string(),
            }),
        }
    }
}

/// The pause before attempt `attempts + 1` of an append refused for a
/// moved chain: none after the first refusal, then a random one up to
/// 2, 4, 8... ms, at most [`MAX_BACKOFF_MS`].
fn backoff(attempts: usize) -> Option<std::time::Duration> {
    use rand::Rng as _;
    if attempts < 2 {
        return None;
    }
    let cap_ms = 1u64
        .checked_shl(u32::try_from(attempts - 1).unwrap_or(u32::MAX))
        .unwrap_or(u64::MAX)
        .min(MAX_BACKOFF_MS);
    Some(std::time::Duration::from_micros(
        rand::thread_rng().gen_range(0..=cap_ms * 1000),
    ))
}

/// The last sequence a refusal for a moved chain states (the server says
/// "wrong last sequence: N"), when it can be read.
fn stated_last(e: &async_nats::jetstream::context::PublishError) -> Option<u64> {
    let source = std::error::Error::source(e)?.to_string();
    let (_, rest) = source.split_once("wrong last sequence:")?;
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Where a walk for an entry of a message stored at `since_ms` starts.
fn walk_start(since_ms: i64) -> i64 {
    since_ms.saturating_sub(WALK_MARGIN_MS).max(0)
}

/// Where an append goes.
enum Plan {
    /// After this sequence of its user's inbox.
    After(u64),
    /// Nowhere: it is there, at this sequence.
    Found(u64),
}

/// An append on its way.
enum Sent {
    /// Published after `expected` (None: off the chain); its ack.
    Publish(
        Option<u64>,
        async_nats::jetstream::context::PublishAckFuture,
    ),
    /// Found already there.
    Found(u64),
}

/// Reads a walk's entries up to the end of the inbox as it was: the entry
/// `id`'s sequence if it is there, and the last sequence read. The other
/// entries' ids go into `seen` (`None` past [`SEEN_CAPACITY`]).
async fn read_ids(
    consumer: async_nats::jetstream::consumer::Consumer<pull::OrderedConfig>,
    id: &str,
    seen: &mut Option<HashMap<String, u64>>,
) -> Result<(Option<u64>, Option<u64>), String> {
    let mut last = None;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    loop {
        let message = match tokio::time::timeout(WALK_TIMEOUT, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(None) => return Ok((None, last)),
            Err(_) => return Err("timed out".into()),
        };
        let info = message.info().map_err(|e| e.to_string())?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        if let Some(entry) = message
            .headers
            .as_ref()
            .and_then(|h| h.get(subject::header::ENTRY_ID))
        {
            if entry.as_str() == id {
                return Ok((Some(sequence), Some(sequence)));
            }
            if let Some(ids) = seen {
                if ids.len() < SEEN_CAPACITY {
                    ids.insert(entry.as_str().to_owned(), sequence);
                } else {
                    *seen = None;
                }
            }
        }
        last = Some(sequence);
        if pending == 0 {
            return Ok((None, last));
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
    fn a_refusal_states_the_last_sequence_and_pauses_grow() {
        use async_nats::jetstream::context::{PublishError, PublishErrorKind};
        let refusal: async_nats::jetstream::Error = serde_json::from_str(
            r#"{"code":400,"err_code":10071,"description":"wrong last sequence: 4242"}"#,
        )
        .unwrap();
        let e = PublishError::with_source(PublishErrorKind::WrongLastSequence, refusal);
        assert_eq!(stated_last(&e), Some(4242));
        assert_eq!(
            stated_last(&PublishError::new(PublishErrorKind::WrongLastSequence)),
            None
        );
        assert_eq!(backoff(1), None);
        for attempts in 2..40 {
            let cap = (1u64 << (attempts - 1).min(20)).min(MAX_BACKOFF_MS);
            let pause = backoff(attempts).unwrap();
            assert!(
                pause <= std::time::Duration::from_millis(cap),
                "{attempts}: {pause:?}"
            );
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
