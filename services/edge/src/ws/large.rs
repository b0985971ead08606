//! One connection's large groups (read fan-out). Their messages do not pass
//! through the user's inbox: the edge's [`GroupHub`](crate::groups::GroupHub)
//! hands each live group message to the connections of its members, and
//! this module forwards them as `groupMessage` frames in seq order without
//! gaps or repeats. A gap (a lost or dropped push) is filled from the
//! conversation's history, read as the user, so a connection only ever gets
//! what its user may read.
//!
//! Which groups a connection follows comes from the messages service
//! (`im.v1.conversation.large`), asked again after each resume and whenever
//! a group notice or a membership marker passes by (someone joined or left,
//! a group grew into read fan-out or shrank out of it, a dismissal).

use std::collections::HashMap;
use std::sync::Arc;

use shared::RpcError;
use shared::proto::edge::{self as pb, server_frame};
use shared::proto::message as msg_pb;
use shared::subject;
use tokio::sync::mpsc;

use super::Conn;
use crate::EdgeState;
use crate::frames;

/// Group messages queued for one connection before pushes are dropped (and
/// later read from the history).
pub(super) const QUEUE: usize = 1024;

/// Most history pages one gap fill reads (200 messages each); the rest
/// follows at the next push or resume.
const FILL_PAGES: usize = 100;

/// A group notice or membership marker seen in the inbox: the large groups
/// need a look.
#[derive(Debug)]
pub(super) struct News {
    pub conversation: String,
    pub seq: u64,
    /// The notice itself reached the client through the inbox (a join, or a
    /// group growing into read fan-out); otherwise it was a membership marker
    /// (the user left) and the notice comes as a group message.
    pub delivered: bool,
}

/// The large groups one connection follows and the seq it forwarded last in each.
pub(super) struct Large {
    id: u64,
    tx: mpsc::Sender<Arc<msg_pb::Message>>,
    delivered: HashMap<String, u64>,
}

impl Large {
    pub fn new(state: &EdgeState) -> (Self, mpsc::Receiver<Arc<msg_pb::Message>>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let large = Self {
            id: state.groups.connection_id(),
            tx,
            delivered: HashMap::new(),
        };
        (large, rx)
    }

    async fn heads(state: &EdgeState, conn: &Conn) -> Result<HashMap<String, u64>, RpcError> {
        let reply: msg_pb::LargeGroupsResponse = state
            .caller
            .call(
                subject::call::CONVERSATION_LARGE,
                Some(&conn.who),
                &msg_pb::LargeGroupsRequest {},
            )
            .await?;
        Ok(reply
            .heads
            .into_iter()
            .map(|h| (h.conversation_id, h.last_seq))
            .collect())
    }

    /// Brings the followed groups up to date with the messages service,
    /// given the group notices and markers the inbox brought (`news`). A
    /// group joined continues after the notice that brought it; any other
    /// continues from its current head, which the client is told
    /// (`groupHeads`) so it can read what lies before. With `tell_all`
    /// (after a resume) the client is told every head. False when the
    /// connection is closing.
    pub async fn refresh(
        &mut self,
        state: &EdgeState,
        conn: &Conn,
        news: &[News],
        tell_all: bool,
    ) -> bool {
        let wanted = match Self::heads(state, conn).await {
            Ok(heads) => heads,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list large groups");
                return true;
            }
        };
        let gone: Vec<String> = self
            .delivered
            .keys()
            .filter(|c| !wanted.contains_key(*c))
            .cloned()
            .collect();
        for conversation in gone {
            // The user left (a marker says so): what it may still read, up to
            // the notice of its leaving, is forwarded first. A group that only
            // shrank back to write fan-out continues through the inbox.
            let left = news
                .iter()
                .any(|n| n.conversation == conversation && !n.delivered);
            if left && !self.fill(state, conn, &conversation).await {
                return false;
            }
            state.groups.leave(&conversation, self.id).await;
            self.delivered.remove(&conversation);
        }
        // A notice that reached a followed group's client through the inbox
        // (the group grew back into read fan-out) moves it on.
        for n in news.iter().filter(|n| n.delivered) {
            if let Some(delivered) = self.delivered.get_mut(&n.conversation) {
                *delivered = (*delivered).max(n.seq);
            }
        }
        let mut new = Vec::new();
        for conversation in wanted.keys() {
            if self.delivered.contains_key(conversation) {
                continue;
            }
            match state
                .groups
                .join(conversation, self.id, self.tx.clone())
                .await
            {
                Ok(()) => new.push(conversation.clone()),
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to a large group"),
            }
        }
        if new.is_empty() && !tell_all {
            return true;
        }
        // Heads read after subscribing: nothing falls between the two.
        let heads = match Self::heads(state, conn).await {
            Ok(heads) => heads,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list large groups");
                wanted
            }
        };
        let mut told = Vec::new();
        let mut fill = Vec::new();
        for conversation in new {
            let head = heads.get(&conversation).copied().unwrap_or(0);
            // The notice that brought the group here (the user joined, or it
            // grew into read fan-out) reached the client through the inbox.
            match news
                .iter()
                .rev()
                .find(|n| n.conversation == conversation && n.delivered)
            {
                Some(n) => {
                    self.delivered.insert(conversation.clone(), n.seq);
                    fill.push(conversation);
                }
                None => {
                    self.delivered.insert(conversation.clone(), head);
                    told.push(conversation);
                }
            }
        }
        if tell_all {
            told = self.delivered.keys().cloned().collect();
        }
        if !told.is_empty() {
            let heads = told
                .into_iter()
                .map(|c| msg_pb::GroupHead {
                    last_seq: heads.get(&c).copied().unwrap_or(0),
                    conversation_id: c,
                })
                .collect();
            let frame = frames::reply(0, server_frame::Kind::GroupHeads(pb::GroupHeads { heads }));
            if !conn.send(frame).await {
                return false;
            }
        }
        for conversation in fill {
            if !self.fill(state, conn, &conversation).await {
                return false;
            }
        }
        true
    }

    /// A live group message: forwarded when it is the next one, ignored when
    /// already forwarded; after a gap the missing ones come from the history.
    pub async fn on_message(
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
        self.fill(state, conn, &message.conversation_id).await
    }

    /// Fills every followed group from the history (after a NATS reconnect
    /// or a slow-consumer event, when live group messages may have been lost).
    pub async fn fill_all(&mut self, state: &EdgeState, conn: &Conn) -> bool {
        let conversations: Vec<String> = self.delivered.keys().cloned().collect();
        for conversation in conversations {
            if !self.fill(state, conn, &conversation).await {
                return false;
            }
        }
        true
    }

    /// Forwards everything after the delivered seq, from the history.
    async fn fill(&mut self, state: &EdgeState, conn: &Conn, conversation: &str) -> bool {
        for _ in 0..FILL_PAGES {
            let Some(&after) = self.delivered.get(conversation) else {
                return true;
            };
            let page: Result<msg_pb::HistoryResponse, RpcError> = state
                .caller
                .call(
                    subject::call::MESSAGE_HISTORY,
                    Some(&conn.who),
                    &msg_pb::HistoryRequest {
                        conversation_id: conversation.to_owned(),
                        after_seq: after,
                        before_seq: 0,
                        limit: 200,
                    },
                )
                .await;
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    // The next push (or reconnect) tries again.
                    tracing::debug!(error = %e, "cannot fill a large group's gap");
                    return true;
                }
            };
            let more = page.has_more && !page.messages.is_empty();
            for message in page.messages {
                if !self.forward(state, conn, message).await {
                    return false;
                }
            }
            if !more {
                return true;
            }
        }
        true
    }

    /// Sends one group message and moves the delivered seq; a system notice
    /// (someone joined or left, the group was dismissed) refreshes the set.
    async fn forward(&mut self, state: &EdgeState, conn: &Conn, message: msg_pb::Message) -> bool {
        let Some(delivered) = self.delivered.get_mut(&message.conversation_id) else {
            return true;
        };
        if message.seq <= *delivered {
            return true;
        }
        *delivered = message.seq;
        let notice = matches!(
            message.body.as_ref().and_then(|b| b.kind.as_ref()),
            Some(msg_pb::message_body::Kind::System(_))
        );
        let frame = frames::reply(0, server_frame::Kind::GroupMessage(message));
        if !conn.send(frame).await {
            return false;
        }
        if notice {
            return Box::pin(self.refresh(state, conn, &[], false)).await;
        }
        true
    }

    /// Stops following every group (the connection ends).
    pub async fn leave_all(&mut self, state: &EdgeState) {
        for conversation in self.delivered.keys() {
            state.groups.leave(conversation, self.id).await;
        }
        self.delivered.clear();
    }
}
