//! What the social service says of two users (friends, blocks), cached for
//! one-to-one sends, which ask it on every message.
//!
//! Social publishes `im.evt.v1.friend.{added,removed}` and
//! `im.evt.v1.block.{added,removed}` before it answers the call that made the
//! change. This service subscribes to them on the connection its endpoints
//! use, and every lookup first applies the events already received. A send
//! made after the caller saw its block (or friendship) succeed reaches this
//! connection after the event, so it sees the change: a block still applies
//! at once (on one NATS server; in a cluster the event and the send may take
//! different routes, so a block applies within the event's propagation
//! time). Entries also expire after [`TTL`], and the cache is emptied after a
//! reconnect or a slow-consumer event (events may have been missed).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::StreamExt;
use prost::Message as _;
use shared::nats::ConnectionEvent;
use shared::proto::social as social_pb;
use shared::subject;
use tokio::sync::broadcast;

/// How long a cached relation is trusted without an event.
const TTL: Duration = Duration::from_secs(10);
/// Entries before the cache is emptied.
const CAPACITY: usize = 100_000;

const EVENTS: [&str; 4] = [
    subject::event::FRIEND_ADDED,
    subject::event::FRIEND_REMOVED,
    subject::event::BLOCK_ADDED,
    subject::event::BLOCK_REMOVED,
];

type Relation = social_pb::RelationResponse;

pub struct Relations {
    inner: Mutex<Inner>,
}

struct Inner {
    events: Vec<async_nats::Subscriber>,
    connection: broadcast::Receiver<ConnectionEvent>,
    cached: HashMap<(String, String), (Relation, Instant)>,
    /// When an event (or a reconnect) last invalidated entries.
    last_change: Instant,
}

impl Relations {
    pub async fn subscribe(
        client: &async_nats::Client,
        connection: broadcast::Receiver<ConnectionEvent>,
    ) -> Result<Self, async_nats::SubscribeError> {
        let mut events = Vec::new();
        for name in EVENTS {
            events.push(client.subscribe(name).await?);
        }
        Ok(Self {
            inner: Mutex::new(Inner {
                events,
                connection,
                cached: HashMap::new(),
                last_change: Instant::now(),
            }),
        })
    }

    /// The cached relation of `user` to `other`, if still valid.
    pub fn get(&self, user: &str, other: &str) -> Option<Relation> {
        let mut inner = self.lock();
        inner.apply_events();
        let key = (user.to_owned(), other.to_owned());
        match inner.cached.get(&key) {
            Some((relation, at)) if at.elapsed() < TTL => Some(*relation),
            Some(_) => {
                inner.cached.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Caches what social answered, unless an event about the pair arrived
    /// since `asked` (the answer may predate it).
    pub fn put(&self, user: &str, other: &str, relation: Relation, asked: Instant) {
        let mut inner = self.lock();
        inner.apply_events();
        if inner.last_change >= asked {
            return;
        }
        if inner.cached.len() >= CAPACITY {
            inner.cached.clear();
        }
        inner
            .cached
            .insert((user.to_owned(), other.to_owned()), (relation, asked));
    }

    /// Applies the events received so far (called periodically, so the
    /// subscriptions never fill up while no one sends).
    pub fn drain(&self) {
        self.lock().apply_events();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        shared::sync::lock(&self.inner)
    }
}

impl Inner {
    /// Drops the entries the received events concern.
    fn apply_events(&mut self) {
        let mut changed = false;
        if shared::nats::events_missed(&mut self.connection) {
            self.cached.clear();
            changed = true;
        }
        for events in &mut self.events {
            // Unconstrained: tokio's per-task budget must not make a queued
            // event look absent.
            while let Some(Some(event)) = tokio::task::unconstrained(events.next()).now_or_never() {
                changed = true;
                match pair_of(&event) {
                    Some((a, b)) => {
                        self.cached.remove(&(a.clone(), b.clone()));
                        self.cached.remove(&(b, a));
                    }
                    None => self.cached.clear(),
                }
            }
        }
        if changed {
            self.last_change = Instant::now();
        }
    }
}

/// The two users an event is about; None for an event that cannot be read.
fn pair_of(event: &async_nats::Message) -> Option<(String, String)> {
    if event.subject.as_str().starts_with("im.evt.v1.friend.") {
        let f = social_pb::Friendship::decode(event.payload.clone()).ok()?;
        Some((f.user_id, f.friend_id))
    } else {
        let b = social_pb::Block::decode(event.payload.clone()).ok()?;
        Some((b.user_id, b.blocked_user_id))
    }
}
