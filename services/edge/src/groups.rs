//! Large groups (read fan-out): their messages are published once on
//! `im.group.v1.<group>` instead of into every member's inbox. This edge
//! subscribes once per large group that any of its connections belongs to
//! and hands each message to those connections, which forward it in seq
//! order and fill gaps from the conversation's history (see `ws`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use prost::Message as _;
use shared::proto::message::Message;
use shared::{ids, subject};
use tokio::sync::mpsc;

type Members = Arc<Mutex<HashMap<u64, mpsc::Sender<Arc<Message>>>>>;

struct Group {
    members: Members,
    task: tokio::task::JoinHandle<()>,
}

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
        tx: mpsc::Sender<Arc<Message>>,
    ) -> Result<(), async_nats::SubscribeError> {
        let Some(group) = ids::group_of(conversation) else {
            return Ok(());
        };
        if let Some(existing) = self.groups.lock().await.get(conversation) {
            existing
                .members
                .lock()
                .expect("group members lock")
                .insert(connection, tx);
            return Ok(());
        }
        // Subscribed without the lock: a slow NATS connection must not hold
        // up every other join and leave of this edge.
        let mut subscription = self.client.subscribe(subject::group_push(group)).await?;
        let mut groups = self.groups.lock().await;
        if let Some(existing) = groups.get(conversation) {
            // Another connection subscribed meanwhile; this subscription
            // ends when dropped.
            existing
                .members
                .lock()
                .expect("group members lock")
                .insert(connection, tx);
            return Ok(());
        }
        let members: Members = Arc::new(Mutex::new(HashMap::from([(connection, tx)])));
        let listeners = members.clone();
        let task = tokio::spawn(async move {
            while let Some(push) = subscription.next().await {
                let Ok(message) = Message::decode(push.payload.as_ref()) else {
                    tracing::warn!("undecodable group push ignored");
                    continue;
                };
                let message = Arc::new(message);
                let listeners = listeners.lock().expect("group members lock");
                for tx in listeners.values() {
                    // A full queue drops this push; that connection fills
                    // the gap from the history at its next one.
                    let _ = tx.try_send(message.clone());
                }
            }
        });
        groups.insert(conversation.to_owned(), Group { members, task });
        Ok(())
    }

    /// Stops handing `conversation` to `connection`; unsubscribes when no
    /// connection of this edge wants it any more.
    pub async fn leave(&self, conversation: &str, connection: u64) {
        let mut groups = self.groups.lock().await;
        let empty = match groups.get(conversation) {
            Some(group) => {
                let mut members = group.members.lock().expect("group members lock");
                members.remove(&connection);
                members.is_empty()
            }
            None => false,
        };
        if empty && let Some(group) = groups.remove(conversation) {
            group.task.abort();
        }
    }
}
