//! Live pushes of inbox entries, per edge or per shard of users: the
//! services that append to inboxes publish one `PushBatch` per edge that
//! holds the users (`im.push.v1.e<edge>.entry`, where the presence bucket
//! says so, see `shared::push_routes`) or per shard of users
//! (`im.push.v1.s<shard>.entry`, see `shared::subject::push_shard`) per
//! batch of appends, instead of one message per user and entry. This edge
//! subscribes to its own subject and once to each shard that any of its
//! connected users falls in (and stays subscribed: there are `PUSH_SHARDS`
//! of them), and hands each push to the connections of its user. Signals
//! (typing, presence) come the same way on each shard's signal subject
//! (`im.push.v1.s<shard>.signal`), so a connection costs no NATS
//! subscription of its own.
//!
//! A push dropped for one connection (its queue was full) is not left to
//! the chain or the periodic inbox check: once the connection has taken
//! what is queued, it is told, and catches up from the inbox.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use prost::Message as _;
use shared::proto::delivery::{Push, PushBatch, Signal};
use shared::subject;

/// What a connection hears from the hub.
#[derive(Debug)]
pub enum PushNews {
    /// A live push of one of its user's inbox entries.
    Entry(Arc<Push>),
    /// A push was dropped for it (its queue was full): read the inbox.
    Dropped,
    /// A signal for its user (typing, presence): best effort, dropped
    /// when the queue is full.
    Signal(Arc<Signal>),
}

/// A connection's queue of what the hub hands it: bounded, and allocated
/// only when something comes (an idle connection holds no queue).
pub struct Mailbox {
    queue: std::sync::Mutex<VecDeque<PushNews>>,
    capacity: usize,
    /// A push was dropped (the queue was full) and the connection has not
    /// been told yet: it is, once it has taken what is queued.
    dropped: AtomicBool,
    ready: tokio::sync::Notify,
}

impl Mailbox {
    fn new(capacity: usize) -> Self {
        Self {
            queue: std::sync::Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            dropped: AtomicBool::new(false),
            ready: tokio::sync::Notify::new(),
        }
    }

    /// Queues unless full; false when full.
    fn put(&self, news: PushNews) -> bool {
        let mut queue = shared::sync::lock(&self.queue);
        if queue.len() >= self.capacity {
            return false;
        }
        queue.push_back(news);
        drop(queue);
        self.ready.notify_one();
        true
    }

    fn signal(&self, signal: Arc<Signal>) {
        // Best effort: dropped when the queue is full.
        let _ = self.put(PushNews::Signal(signal));
    }

    fn hand(&self, push: Arc<Push>) {
        if !self.put(PushNews::Entry(push)) {
            self.dropped.store(true, Ordering::Release);
            self.ready.notify_one();
        }
    }

    /// What is queued, without waiting: then, once the queue is empty, a
    /// [`PushNews::Dropped`] if a push was dropped.
    pub fn try_recv(&self) -> Option<PushNews> {
        let mut queue = shared::sync::lock(&self.queue);
        if let Some(news) = queue.pop_front() {
            if queue.is_empty() && queue.capacity() > SMALL {
                // A burst is over: give its memory back.
                *queue = VecDeque::new();
            }
            return Some(news);
        }
        drop(queue);
        self.dropped
            .swap(false, Ordering::AcqRel)
            .then_some(PushNews::Dropped)
    }

    /// The next news (cancel-safe: nothing is taken until it returns).
    pub async fn recv(&self) -> PushNews {
        loop {
            if let Some(news) = self.try_recv() {
                return news;
            }
            self.ready.notified().await;
        }
    }
}

/// A queue left with more room than this after a burst is freed.
const SMALL: usize = 16;

/// user id → connection id → listener.
type Users = Arc<RwLock<HashMap<String, HashMap<u64, Arc<Mailbox>>>>>;

/// The push shards this edge listens to, and which connections want whose
/// pushes.
pub struct PushHub {
    client: async_nats::Client,
    /// This edge's own push subject.
    own: String,
    users: Users,
    /// subject → the task routing its pushes.
    subscribed: tokio::sync::Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

impl PushHub {
    pub fn new(client: async_nats::Client, edge_id: &str) -> Self {
        Self {
            client,
            own: subject::push_edge_entries(edge_id),
            users: Arc::default(),
            subscribed: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Hands `user`'s pushes and signals to `connection` from now on, into
    /// a queue of `capacity` (see [`PushHub::subscribe`]).
    pub fn join(&self, user: &str, connection: u64, capacity: usize) -> Arc<Mailbox> {
        let mailbox = Arc::new(Mailbox::new(capacity));
        shared::sync::write(&self.users)
            .entry(user.to_owned())
            .or_default()
            .insert(connection, mailbox.clone());
        mailbox
    }

    /// Subscribes to this edge's subject and `user`'s shards if this edge
    /// has not.
    pub async fn subscribe(&self, user: &str) -> Result<(), async_nats::SubscribeError> {
        let mut subscribed = self.subscribed.lock().await;
        for (subject, kind) in [
            (self.own.clone(), Kind::Entries),
            (subject::push_entry(user), Kind::Entries),
            (subject::push_signal(user), Kind::Signals),
        ] {
            if let std::collections::hash_map::Entry::Vacant(slot) = subscribed.entry(subject) {
                let subscription = self.client.subscribe(slot.key().clone()).await?;
                slot.insert(tokio::spawn(route(subscription, kind, self.users.clone())));
            }
        }
        Ok(())
    }

    /// Stops handing `user`'s pushes to `connection`.
    pub fn leave(&self, user: &str, connection: u64) {
        let mut users = shared::sync::write(&self.users);
        if let Some(connections) = users.get_mut(user) {
            connections.remove(&connection);
            if connections.is_empty() {
                users.remove(user);
            }
        }
    }

    /// Ends every subscription (the edge stopped).
    pub async fn close(&self) {
        for (_, task) in self.subscribed.lock().await.drain() {
            task.abort();
        }
    }
}

/// What a subject carries.
#[derive(Clone, Copy)]
enum Kind {
    /// Pushes of inbox entries.
    Entries,
    /// Signals (a push there that carries none is ignored).
    Signals,
}

/// Hands each push of a subject's batches to its user's connections here.
async fn route(mut subscription: async_nats::Subscriber, kind: Kind, users: Users) {
    while let Some(message) = subscription.next().await {
        let Ok(batch) = PushBatch::decode(message.payload.as_ref()) else {
            tracing::warn!("undecodable push batch ignored");
            continue;
        };
        let users = shared::sync::read(&users);
        for push in batch.pushes {
            let (Some(connections), Some(entry)) = (users.get(&push.user_id), push.push) else {
                continue;
            };
            match kind {
                Kind::Entries => {
                    let entry = Arc::new(entry);
                    for listener in connections.values() {
                        listener.hand(entry.clone());
                    }
                }
                Kind::Signals => {
                    let Some(signal) = entry.signal else { continue };
                    let signal = Arc::new(signal);
                    for listener in connections.values() {
                        listener.signal(signal.clone());
                    }
                }
            }
        }
    }
}
