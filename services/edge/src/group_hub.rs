//! Large groups (read fan-out): their messages are published once on
//! `im.group.v1.<group>` instead of into every member's inbox. This edge
//! subscribes once per large group that any of its connections follows and
//! hands each message to those connections, which forward it in seq order
//! and fill gaps from the conversation's history (see `ws::large`).
//!
//! A live message can be lost on its way here without any event at this
//! edge (a leaf node's link to the hub went down for a moment), or dropped
//! for one connection whose queue was full, and then no later message
//! reveals the gap if it was the group's last. So every
//! `edge.inbox_check_secs` the edge asks the messages service for the last
//! seq of every group it follows (one call per 500 groups). A group whose
//! last seq at the previous check has still not arrived here lost a message:
//! all its connections are told to fill from the history.
//!
//! A message dropped for one connection (its queue was full) is not left to
//! that check: as soon as the queue has room again, the connection is told
//! the seq it missed and fills from the history.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use prost::Message as _;
use shared::endpoint::endpoints::ConversationHeads;
use shared::proto::message::{self as pb, Message};
use shared::rpc::Caller;
use shared::{ids, subject};
use tokio::sync::mpsc;

/// What a connection hears about one of its large groups.
#[derive(Debug)]
pub enum GroupPush {
    /// A live message of the group.
    Message(Arc<Message>),
    /// The group's last seq (from the periodic check), or the seq of a
    /// message dropped for this connection.
    Head { conversation: Arc<str>, seq: u64 },
    /// A gap fill of the group failed: time to try again.
    Retry(Arc<str>),
}

struct Member {
    tx: mpsc::Sender<GroupPush>,
    /// A message was dropped for it (queue full) and it has not been told yet.
    dropped: Arc<AtomicBool>,
}

impl Member {
    fn new(tx: mpsc::Sender<GroupPush>) -> Self {
        Self {
            tx,
            dropped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Hands over what the group's `seq` says (a live message, or a head
    /// from the check); when the queue is full, drops it and makes sure the
    /// connection hears of `seq` once there is room again.
    fn hand(&self, conversation: &Arc<str>, seq: u64, push: GroupPush) {
        match self.tx.try_send(push) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.dropped.swap(true, Ordering::AcqRel) {
                    tokio::spawn(tell_dropped(
                        self.tx.clone(),
                        self.dropped.clone(),
                        conversation.clone(),
                        seq,
                    ));
                }
            }
            // The connection ended; its leave follows.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Waits for room in a connection's queue, then tells it the seq of a
/// message it missed; it then fills from the history. The mark is cleared
/// before the notice is queued: a message dropped before that was already
/// stored (messages are stored before they are published), so the fill the
/// notice starts reads it; one dropped after it starts another notice.
async fn tell_dropped(
    tx: mpsc::Sender<GroupPush>,
    dropped: Arc<AtomicBool>,
    conversation: Arc<str>,
    seq: u64,
) {
    let Ok(room) = tx.reserve().await else { return };
    dropped.store(false, Ordering::Release);
    room.send(GroupPush::Head { conversation, seq });
}

type Members = Arc<Mutex<HashMap<u64, Member>>>;

struct Group {
    members: Members,
    /// The highest seq that arrived on the subscription.
    seen: Arc<AtomicU64>,
    /// The group's last seq at the previous check.
    checked: AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

impl Group {
    fn add(&self, connection: u64, tx: mpsc::Sender<GroupPush>) {
        shared::sync::lock(&self.members).insert(connection, Member::new(tx));
    }
}

/// Conversations per `im.v1.conversation.heads` call.
const HEADS_PER_CALL: usize = 500;

/// The large groups this edge listens to, and which connections want each.
pub struct GroupHub {
    client: async_nats::Client,
    groups: tokio::sync::Mutex<HashMap<String, Group>>,
    next_connection: AtomicU64,
}

impl GroupHub {
    pub fn new(client: async_nats::Client) -> Self {
        Self {
            client,
            groups: tokio::sync::Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
        }
    }

    /// A fresh id for a connection's registrations.
    pub fn connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// Hands the messages of `conversation` (a group's) to `tx` from now on;
    /// subscribes first when this edge had no member of the group yet.
    pub async fn join(
        &self,
        conversation: &str,
        connection: u64,
        tx: mpsc::Sender<GroupPush>,
    ) -> Result<(), async_nats::SubscribeError> {
        let Some(group) = ids::group_of(conversation) else {
            return Ok(());
        };
        if let Some(existing) = self.groups.lock().await.get(conversation) {
            existing.add(connection, tx);
            return Ok(());
        }
        // Subscribed without the lock: a slow NATS connection must not hold
        // up every other join and leave of this edge.
        let mut subscription = self.client.subscribe(subject::group_push(group)).await?;
        let mut groups = self.groups.lock().await;
        if let Some(existing) = groups.get(conversation) {
            // Another connection subscribed meanwhile; this subscription
            // ends when dropped.
            existing.add(connection, tx);
            return Ok(());
        }
        let members: Members = Arc::new(Mutex::new(HashMap::from([(connection, Member::new(tx))])));
        let seen = Arc::new(AtomicU64::new(0));
        let (listeners, highest) = (members.clone(), seen.clone());
        let name: Arc<str> = conversation.into();
        let task = tokio::spawn(async move {
            while let Some(push) = subscription.next().await {
                let Ok(message) = Message::decode(push.payload.as_ref()) else {
                    tracing::warn!("undecodable group push ignored");
                    continue;
                };
                highest.fetch_max(message.seq, Ordering::Relaxed);
                let message = Arc::new(message);
                let listeners = shared::sync::lock(&listeners);
                for member in listeners.values() {
                    member.hand(&name, message.seq, GroupPush::Message(message.clone()));
                }
            }
        });
        groups.insert(
            conversation.to_owned(),
            Group {
                members,
                seen,
                checked: AtomicU64::new(0),
                task,
            },
        );
        Ok(())
    }

    /// Stops handing `conversation` to `connection`; unsubscribes when no
    /// connection of this edge wants it any more.
    pub async fn leave(&self, conversation: &str, connection: u64) {
        let mut groups = self.groups.lock().await;
        let empty = match groups.get(conversation) {
            Some(group) => {
                let mut members = shared::sync::lock(&group.members);
                members.remove(&connection);
                members.is_empty()
            }
            None => false,
        };
        if empty && let Some(group) = groups.remove(conversation) {
            group.task.abort();
        }
    }

    /// The periodic check: tells the connections of each group that lost a
    /// message the group's last seq.
    pub async fn check(&self, caller: &Caller) {
        let followed: Vec<String> = self.groups.lock().await.keys().cloned().collect();
        for chunk in followed.chunks(HEADS_PER_CALL) {
            let request = pb::GroupHeadsRequest {
                conversation_ids: chunk.to_vec(),
            };
            let reply = match caller.call_to::<ConversationHeads>(&request).await {
                Ok(reply) => reply,
                Err(e) => {
                    tracing::debug!(error = %e, "large group check failed");
                    return;
                }
            };
            let groups = self.groups.lock().await;
            for head in reply.heads {
                let Some(group) = groups.get(&head.conversation_id) else {
                    continue;
                };
                let seen = group.seen.load(Ordering::Relaxed);
                // Messages in flight at the previous check have arrived by now.
                let lost = group.checked.swap(head.last_seq, Ordering::Relaxed) > seen;
                if !lost {
                    continue;
                }
                let conversation: Arc<str> = head.conversation_id.into();
                let seq = head.last_seq.max(seen);
                for member in shared::sync::lock(&group.members).values() {
                    let push = GroupPush::Head {
                        conversation: conversation.clone(),
                        seq,
                    };
                    member.hand(&conversation, seq, push);
                }
            }
        }
    }

    /// Runs [`GroupHub::check`] every `every` until `shutdown`.
    pub async fn check_loop(
        &self,
        caller: &Caller,
        every: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.check(caller) => {}
                },
            }
        }
    }

    /// Ends every subscription (the edge stopped; connections left over
    /// after the shutdown timeout get nothing more).
    pub async fn close(&self) {
        for (_, group) in self.groups.lock().await.drain() {
            group.task.abort();
        }
    }
}
