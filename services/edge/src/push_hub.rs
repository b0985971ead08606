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
//! the chain or the periodic inbox check: as soon as the queue has room
//! again, the connection is told, and catches up from the inbox.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use prost::Message as _;
use shared::proto::delivery::{Push, PushBatch, Signal};
use shared::subject;
use tokio::sync::mpsc;

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

struct Listener {
    tx: mpsc::Sender<PushNews>,
    /// A push was dropped for it and it has not been told yet.
    dropped: Arc<AtomicBool>,
}

impl Listener {
    fn signal(&self, signal: Arc<Signal>) {
        let _ = self.tx.try_send(PushNews::Signal(signal));
    }

    fn hand(&self, push: Arc<Push>) {
        match self.tx.try_send(PushNews::Entry(push)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.dropped.swap(true, Ordering::AcqRel) {
                    let (tx, dropped) = (self.tx.clone(), self.dropped.clone());
                    tokio::spawn(async move {
                        let Ok(room) = tx.reserve().await else { return };
                        dropped.store(false, Ordering::Release);
                        room.send(PushNews::Dropped);
                    });
                }
            }
            // The connection ended; its leave follows.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// user id → connection id → listener.
type Users = Arc<RwLock<HashMap<String, HashMap<u64, Listener>>>>;

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

    /// Hands `user`'s pushes and signals to `connection` from now on (a
    /// queue of `queue`); subscribes to this edge's subject and the user's
    /// shard first if this edge has not.
    pub async fn join(
        &self,
        user: &str,
        connection: u64,
        queue: usize,
    ) -> Result<mpsc::Receiver<PushNews>, async_nats::SubscribeError> {
        {
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
        }
        let (tx, rx) = mpsc::channel(queue.max(1));
        shared::sync::write(&self.users)
            .entry(user.to_owned())
            .or_default()
            .insert(
                connection,
                Listener {
                    tx,
                    dropped: Arc::new(AtomicBool::new(false)),
                },
            );
        Ok(rx)
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
