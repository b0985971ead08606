//! One connection's large groups (read fan-out). Their messages do not pass
//! through the user's inbox: the edge's [`GroupHub`](crate::group_hub::GroupHub)
//! hands each live group message to the connections of its members, and
//! this module forwards them as `groupMessage` frames in seq order without
//! gaps or repeats. A gap (a lost or dropped push) is filled from the
//! conversation's history, read as the user, so a connection only ever gets
//! what its user may read.
//!
//! Which groups a connection follows changes only with what the user's
//! inbox says, as each entry is delivered, so no extra call is made per
//! notice and the client sees each group in seq order:
//! - after a resume, the messages service lists the user's large groups and
//!   the client is told where each stands (`groupHeads`); the replay before
//!   it moves nothing;
//! - a group notice through the inbox with `group_large` set (the user
//!   joined, or the group grew) starts following the group after it;
//! - one without it (the group shrank or was dismissed) ends it: the
//!   messages before it are forwarded first, then the notice;
//! - a membership marker (the user left or was removed), or that notice
//!   forwarded as a group message, ends it after the notice.
//!
//! A history fill never forwards a message without `group_large`: from
//! there on the inbox delivers the group. A fill that fails (the messages
//! service is busy or away) is tried again after a backoff, so a gap never
//! waits for the group's next message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shared::endpoint::endpoints::{ConversationLarge, MessageHistory};
use shared::proto::delivery::InboxEntry;
use shared::proto::delivery::inbox_entry::Event;
use shared::proto::edge::{self as pb, server_frame};
use shared::proto::message as msg_pb;
use shared::{RpcError, ids};
use tokio::sync::mpsc;

use super::{Conn, close};
use crate::EdgeState;
use crate::frames;
use crate::group_hub::GroupPush;

mod fill;

use fill::Retry;

/// Group messages queued for one connection before pushes are dropped (and
/// later read from the history).
const QUEUE: usize = 1024;

/// What an inbox entry says about a group.
#[derive(Debug)]
pub(super) enum News {
    /// A group notice passed through the inbox; `large` is its `group_large`.
    Notice {
        conversation: String,
        seq: u64,
        large: bool,
    },
    /// A membership marker: the user left the large group at `seq`.
    Left { conversation: String, seq: u64 },
}

impl News {
    /// The group news of an inbox entry, if any.
    pub fn of(entry: &InboxEntry) -> Option<News> {
        match &entry.event {
            Some(Event::Message(m))
                if ids::group_of(&m.conversation_id).is_some()
                    && matches!(
                        m.body.as_ref().and_then(|b| b.kind.as_ref()),
                        Some(msg_pb::message_body::Kind::System(_))
                    ) =>
            {
                Some(News::Notice {
                    conversation: m.conversation_id.clone(),
                    seq: m.seq,
                    large: m.group_large,
                })
            }
            Some(Event::Membership(m)) => Some(News::Left {
                conversation: m.conversation_id.clone(),
                seq: m.seq,
            }),
            _ => None,
        }
    }

    /// Whether it ends a followed group (applied before its entry is sent,
    /// so the client gets the group's messages in seq order).
    pub fn ends(&self) -> bool {
        !matches!(self, News::Notice { large: true, .. })
    }
}

/// The large groups one connection follows and the seq it forwarded last in each.
pub(super) struct Large {
    id: u64,
    /// The queue the hub hands this connection's group messages to, made
    /// when the connection first follows a large group (most never do).
    tx: Option<mpsc::Sender<GroupPush>>,
    /// Its receiving end, until the delivery loop takes it.
    rx: Option<mpsc::Receiver<GroupPush>>,
    delivered: HashMap<String, u64>,
    /// Groups whose last gap fill failed.
    retries: HashMap<String, Retry>,
}

impl Large {
    pub fn new(state: &EdgeState) -> Self {
        Self {
            id: state.group_hub.connection_id(),
            tx: None,
            rx: None,
            delivered: HashMap::new(),
            retries: HashMap::new(),
        }
    }

    /// The sending end of this connection's queue (made on first use).
    pub(super) fn sender(&mut self) -> mpsc::Sender<GroupPush> {
        if let Some(tx) = &self.tx {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        self.tx = Some(tx.clone());
        self.rx = Some(rx);
        tx
    }

    /// The receiving end of the queue, once after it was made: the delivery
    /// loop takes it after each step.
    pub fn take_receiver(&mut self) -> Option<mpsc::Receiver<GroupPush>> {
        self.rx.take()
    }

    pub(super) async fn heads(
        state: &EdgeState,
        conn: &Conn,
    ) -> Result<HashMap<String, u64>, RpcError> {
        let reply = state
            .caller
            .call_as::<ConversationLarge>(&conn.who, &msg_pb::LargeGroupsRequest {})
            .await?;
        Ok(reply
            .heads
            .into_iter()
            .map(|h| (h.conversation_id, h.last_seq))
            .collect())
    }

    /// After a resume: follows exactly the user's large groups and tells the
    /// client where each stands (`groupHeads`): the last seq of a group it
    /// starts to follow, or the last one forwarded of a group it followed
    /// already. The connection closes (the client resumes again) when the
    /// messages service cannot say. False when the connection is closing.
    pub async fn resume(&mut self, state: &EdgeState, conn: &Conn) -> bool {
        let Some(wanted) = Self::heads_or_close(state, conn).await else {
            return false;
        };
        let gone: Vec<String> = self
            .delivered
            .keys()
            .filter(|c| !wanted.contains_key(*c))
            .cloned()
            .collect();
        for conversation in gone {
            self.unfollow(state, &conversation).await;
        }
        let mut new = Vec::new();
        for conversation in wanted.keys() {
            if !self.delivered.contains_key(conversation) {
                let tx = self.sender();
                match state.group_hub.join(conversation, self.id, tx).await {
                    Ok(()) => new.push(conversation.clone()),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot subscribe to a large group");
                        conn.close(close::INTERNAL, "large group unavailable: resume");
                        return false;
                    }
                }
            }
        }
        // Heads read after subscribing: nothing falls between the two.
        let heads = if new.is_empty() {
            wanted
        } else {
            match Self::heads_or_close(state, conn).await {
                Some(heads) => heads,
                None => return false,
            }
        };
        for conversation in new {
            match heads.get(&conversation) {
                Some(&head) => {
                    self.delivered.insert(conversation, head);
                }
                // Gone in between: its notice reaches the inbox.
                None => state.group_hub.leave(&conversation, self.id).await,
            }
        }
        let heads = self
            .delivered
            .iter()
            .map(|(c, &last_seq)| msg_pb::GroupHead {
                conversation_id: c.clone(),
                last_seq,
            })
            .collect();
        let frame = frames::reply(0, server_frame::Kind::GroupHeads(pb::GroupHeads { heads }));
        conn.send(frame).await
    }

    pub(super) async fn heads_or_close(
        state: &EdgeState,
        conn: &Conn,
    ) -> Option<HashMap<String, u64>> {
        match Self::heads(state, conn).await {
            Ok(heads) => Some(heads),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list large groups");
                conn.close(close::INTERNAL, "large groups unavailable: resume");
                None
            }
        }
    }

    /// Applies what an inbox entry said. False when the connection is closing.
    pub async fn apply(&mut self, state: &EdgeState, conn: &Conn, news: News) -> bool {
        match news {
            News::Notice {
                conversation,
                seq,
                large: true,
            } => self.follow(state, conn, conversation, seq).await,
            News::Notice {
                conversation,
                seq,
                large: false,
            } => self.end(state, conn, &conversation, seq).await,
            News::Left { conversation, seq } => self.end(state, conn, &conversation, seq + 1).await,
        }
    }

    /// Follows a group after `seq` (its client has it up to there).
    pub(super) async fn follow(
        &mut self,
        state: &EdgeState,
        conn: &Conn,
        conversation: String,
        seq: u64,
    ) -> bool {
        if let Some(delivered) = self.delivered.get_mut(&conversation) {
            *delivered = (*delivered).max(seq);
            return true;
        }
        let tx = self.sender();
        if let Err(e) = state.group_hub.join(&conversation, self.id, tx).await {
            tracing::warn!(error = %e, "cannot subscribe to a large group");
            conn.close(close::INTERNAL, "large group unavailable: resume");
            return false;
        }
        self.delivered.insert(conversation.clone(), seq);
        // What was published before the subscription is in the history.
        self.fill(state, conn, &conversation, 0).await
    }

    /// Stops following a group after forwarding what comes before `before`.
    pub(super) async fn end(
        &mut self,
        state: &EdgeState,
        conn: &Conn,
        conversation: &str,
        before: u64,
    ) -> bool {
        if !self.delivered.contains_key(conversation) {
            return true;
        }
        // No retry here: the group is left next. The client resumes and
        // is told where its groups stand, as after any closed connection.
        match self.read_history(state, conn, conversation, before).await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a large group's last messages");
                conn.close(close::INTERNAL, "group history unavailable: resume");
                return false;
            }
        }
        self.unfollow(state, conversation).await;
        true
    }

    pub(super) async fn unfollow(&mut self, state: &EdgeState, conversation: &str) {
        self.retries.remove(conversation);
        if self.delivered.remove(conversation).is_some() {
            state.group_hub.leave(conversation, self.id).await;
        }
    }

    /// What the hub hands over: a live message, a group's last seq (anything
    /// not forwarded yet comes from the history), or a retry of a failed fill.
    pub async fn on_push(&mut self, state: &EdgeState, conn: &Conn, push: GroupPush) -> bool {
        match push {
            GroupPush::Message(message) => self.on_message(state, conn, message).await,
            GroupPush::Retry(conversation) => {
                if let Some(retry) = self.retries.get_mut(conversation.as_ref()) {
                    retry.scheduled = false;
                    if retry.failures == 0 {
                        self.retries.remove(conversation.as_ref());
                    }
                }
                self.fill(state, conn, &conversation, 0).await
            }
            GroupPush::Head { conversation, seq } => {
                match self.delivered.get(conversation.as_ref()) {
                    Some(&delivered) if seq > delivered => {
                        self.fill(state, conn, &conversation, 0).await
                    }
                    _ => true,
                }
            }
        }
    }

    /// A live group message: forwarded when it is the next one, ignored when
    /// already forwarded; after a gap the missing ones come from the history.
    pub(super) async fn on_message(
        &mut self,
        state: &EdgeState,
        conn: &Conn,
        message: Arc<msg_pb::Message>,
    ) -> bool {
        let Some(&delivered) = self.delivered.get(&message.conversation_id) else {
            return true;
        };
        if message.seq <= delivered {
            return true;
        }
        if message.seq == delivered + 1 {
            return self.forward(state, conn, (*message).clone()).await;
        }
        self.fill(state, conn, &message.conversation_id, 0).await
    }

    /// Sends one group message and moves the delivered seq. The notice of
    /// the user's own leaving ends the group here and now.
    pub(super) async fn forward(
        &mut self,
        state: &EdgeState,
        conn: &Conn,
        message: msg_pb::Message,
    ) -> bool {
        let Some(delivered) = self.delivered.get_mut(&message.conversation_id) else {
            return true;
        };
        if message.seq <= *delivered {
            return true;
        }
        if !message.group_large {
            // The group left read fan-out here: the inbox brings this
            // message and the rest.
            let conversation = message.conversation_id.clone();
            self.unfollow(state, &conversation).await;
            return true;
        }
        *delivered = message.seq;
        let left = match message.body.as_ref().and_then(|b| b.kind.as_ref()) {
            Some(msg_pb::message_body::Kind::System(n)) => {
                shared::group::NoticeKind::parse(&n.kind).is_some_and(|k| k.ends_membership())
                    && n.user_ids.iter().any(|u| *u == conn.who.user_id)
            }
            _ => false,
        };
        let conversation = message.conversation_id.clone();
        // The connection that sent it has its ack.
        if !conn.is_echo_of(&message) {
            let frame = frames::reply(0, server_frame::Kind::GroupMessage(message));
            if !conn.send(frame).await {
                return false;
            }
        }
        if left {
            self.unfollow(state, &conversation).await;
        }
        true
    }

    /// Stops following every group (the connection ends).
    pub async fn leave_all(&mut self, state: &EdgeState) {
        for conversation in self.delivered.keys() {
            state.group_hub.leave(conversation, self.id).await;
        }
        self.delivered.clear();
    }
}
