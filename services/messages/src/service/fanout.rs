//! Fan-out: a stored message into every recipient's inbox (or onto a large
//! group's subject) and the event stream, in seq order per conversation;
//! the set of conversations with messages left to fan out; the sweep that
//! finds them after a crash.

use std::collections::HashSet;

use prost::Message as _;
use shared::group::NoticeKind;
use shared::ids::ConversationId;
use shared::inbox::DeliveryError;
use shared::proto::{delivery, message as pb};
use shared::{RpcError, subject};

use async_nats::jetstream::message::PublishMessage;
use shared::inbox::{Append, Once};

use super::{State, to_proto};
use crate::store::{self, MessageRow};

/// Why a stored message is not (yet) in every inbox and the event stream.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    /// An inbox append failed.
    #[error(transparent)]
    Deliver(#[from] DeliveryError),
    /// An earlier message of the conversation is not fanned out yet.
    #[error("an earlier message of this conversation is not delivered yet")]
    Earlier,
    /// The `messages.created` event carrying the message was not stored.
    #[error("event: {0}")]
    Event(String),
    /// What to deliver, or to whom, could not be read.
    #[error("{0}")]
    Store(String),
}

impl State {
    /// Who receives a stored message: both participants of a direct chat,
    /// the members of a group at the time of the message.
    pub(super) async fn recipients(
        &self,
        conversation: &ConversationId,
        seq: i64,
    ) -> Result<Vec<String>, FanoutError> {
        match conversation {
            ConversationId::Direct { low, high, .. } => Ok(vec![low.to_string(), high.to_string()]),
            ConversationId::Group { .. } => store::group_recipients(&self.pool, conversation, seq)
                .await
                .map_err(|e| FanoutError::Store(format!("load recipients: {e}"))),
        }
    }

    /// Delivers a stored message the way it was stored to be delivered,
    /// announces it, then marks it fanned out. Write fan-out: appended to
    /// every recipient's inbox. Read fan-out (large groups): published once
    /// on the group's subject, where each edge with members subscribes;
    /// members read what they missed from the history. Membership changes
    /// also reach the inboxes of the users concerned (see below), so their
    /// edges and their offline devices learn of them.
    /// `first`: right after the message's commit, so no earlier attempt
    /// can have put it into an inbox (see [`Once::Entry`]).
    pub(super) async fn fan_out(&self, row: &MessageRow, first: bool) -> Result<(), FanoutError> {
        let message =
            to_proto(row, self.recall_window_ms()).map_err(|e| FanoutError::Store(e.message))?;
        self.fan_out_message(row, message, first).await
    }

    /// [`State::fan_out`] of a message whose wire form the caller has.
    pub(super) async fn fan_out_message(
        &self,
        row: &MessageRow,
        message: pb::Message,
        first: bool,
    ) -> Result<(), FanoutError> {
        let mut results = self
            .fan_out_rows(vec![(row.clone(), message)], &HashSet::new(), first)
            .await;
        results.pop().unwrap_or(Ok(()))
    }

    /// Fans out a message its caller just stored: alone, or, stored behind
    /// messages not fanned out ([`MessageRow::behind`]), with them
    /// (the caller holds the conversation's order lock). `message`: its wire
    /// form when the caller has it.
    pub(super) async fn fan_out_stored(
        &self,
        row: &MessageRow,
        message: Option<pb::Message>,
    ) -> Result<(), String> {
        if row.behind {
            let conversation =
                ConversationId::parse(&row.conversation_id).map_err(|e| e.message)?;
            return self
                .fan_out_left(&conversation)
                .await
                .map_err(|e| e.to_string());
        }
        match message {
            Some(message) => self.fan_out_message(row, message, true).await,
            None => self.fan_out(row, true).await,
        }
        .map_err(|e| e.to_string())
    }

    pub(super) fn pending_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        shared::sync::lock(&self.pending)
    }

    /// Fans out stored messages, given in seq order per conversation, all
    /// at once: their inbox appends go out together (see
    /// [`shared::inbox::Inboxes::deliver_many`]) beside their events, so a
    /// batch costs a few round trips instead of a few per message. A message
    /// is fanned out when all its appends and its event are stored; after
    /// one that is not, the later messages of its conversation are not
    /// either (they wait in the pending set for it, so inboxes keep seq
    /// order). Marks what is fanned out; notes the conversations that are
    /// not. The messages named in `uncopied` get no entry in their sender's
    /// inbox (see `crate::devices`). `first`: as in [`State::fan_out`].
    pub(super) async fn fan_out_rows(
        &self,
        rows: Vec<(MessageRow, pb::Message)>,
        uncopied: &HashSet<String>,
        first: bool,
    ) -> Vec<Result<(), FanoutError>> {
        let mut results: Vec<Result<(), FanoutError>> = Vec::with_capacity(rows.len());
        let mut entries = Vec::new();
        let mut appends = Vec::new();
        let mut owners = Vec::new();
        let mut stopped: HashSet<&str> = HashSet::new();
        for (i, (row, message)) in rows.iter().enumerate() {
            if stopped.contains(row.conversation_id.as_str()) {
                results.push(Err(FanoutError::Earlier));
                continue;
            }
            match self.plan(row, message).await {
                Ok((event, recipients)) => {
                    let entry = entries.len();
                    entries.push(delivery::InboxEntry { event: Some(event) });
                    let uncopied = uncopied.contains(&row.id);
                    for user in recipients {
                        if uncopied && user == row.sender_id {
                            continue;
                        }
                        appends.push(Append {
                            once: Once::Entry {
                                id: format!("{}:{user}", row.id),
                                since_ms: row.server_ts_ms,
                                first,
                            },
                            user,
                            entry,
                        });
                        owners.push(i);
                    }
                    results.push(Ok(()));
                }
                Err(e) => {
                    stopped.insert(&row.conversation_id);
                    results.push(Err(e));
                }
            }
        }
        // One event for the batch (more when it would pass the server's
        // max_payload), beside the appends; a message is fanned out when the
        // event that carries it is stored.
        let announce = async {
            let limit = (self.caller.client.server_info().max_payload)
                .saturating_sub(1024)
                .max(1024);
            let mut announced: Vec<(usize, pb::Message)> = Vec::new();
            for (i, (_, message)) in rows.iter().enumerate() {
                if results[i].is_ok() {
                    announced.push((i, message.clone()));
                }
            }
            let mut acks = Vec::new();
            for run in shared::inbox::repeated_under(announced, limit, |(_, m)| m.encoded_len()) {
                let (owners, messages): (Vec<usize>, Vec<pb::Message>) = run.into_iter().unzip();
                let dedup = created_dedup_id(&messages);
                let event = pb::MessagesCreated { messages };
                let publish = PublishMessage::build()
                    .payload(event.encode_to_vec().into())
                    .message_id(dedup);
                let ack = self
                    .jetstream
                    .send_publish(subject::event::MESSAGES_CREATED, publish)
                    .await;
                acks.push((owners, ack));
            }
            // Side by side: an ack's timeout starts when it is awaited.
            futures::future::join_all(acks.into_iter().map(|(owners, ack)| async move {
                match ack {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| (owners, e.to_string())),
                    Err(e) => Err((owners, e.to_string())),
                }
            }))
            .await
            .into_iter()
            .filter_map(|stored| stored.err())
            .flat_map(|(owners, e)| {
                owners
                    .into_iter()
                    .map(move |i| (i, FanoutError::Event(e.clone())))
            })
            .collect::<Vec<_>>()
        };
        // Fault point: the batch's appends fail part way, from this
        // append on (as when the connection to NATS drops mid-batch).
        let appends_sent = (|| {
            fail::fail_point!("messages::fanout::append_cut", |cut| cut
                .and_then(|c| c.parse::<usize>().ok())
                .unwrap_or(appends.len() / 2)
                .min(appends.len()));
            appends.len()
        })();
        let (mut appended, unannounced) = futures::join!(
            self.inboxes
                .deliver_many(&entries, &appends[..appends_sent]),
            announce
        );
        appended.extend((appends_sent..appends.len()).map(|i| {
            Err(shared::inbox::DeliveryError::Append {
                user: appends[i].user.clone(),
                message: "fault point: the batch's appends were cut".into(),
            })
        }));
        for (i, error) in unannounced {
            results[i] = Err(error);
        }
        for (owner, appended) in owners.into_iter().zip(appended) {
            if let Err(e) = appended
                && results[owner].is_ok()
            {
                results[owner] = Err(e.into());
            }
        }
        // In seq order per conversation: nothing after a failure counts.
        let mut failed: HashSet<&str> = HashSet::new();
        for ((row, _), result) in rows.iter().zip(results.iter_mut()) {
            if failed.contains(row.conversation_id.as_str()) {
                if result.is_ok() {
                    *result = Err(FanoutError::Earlier);
                }
            } else if result.is_err() {
                failed.insert(&row.conversation_id);
            }
        }
        // The watermark of each conversation: its last message fanned out
        // (rows come in seq order per conversation).
        let mut marks: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
        for ((row, _), result) in rows.iter().zip(&results) {
            if result.is_ok() {
                let mark = marks.entry(&row.conversation_id).or_default();
                *mark = (*mark).max(row.seq);
            }
        }
        // Fault point: delivered, but the watermarks are not moved (as a
        // crash before they are written): the sweep delivers again, and
        // finds the entries already there.
        let mark = (|| {
            fail::fail_point!("messages::fanout::before_watermark", |_| false);
            true
        })();
        for (conversation, seq) in marks.into_iter().filter(|_| mark) {
            self.writer.fanned_out(conversation.to_owned(), seq).await;
        }
        if !failed.is_empty() {
            self.pending_set()
                .extend(failed.into_iter().map(str::to_owned));
        }
        results
    }

    /// What a stored message puts into inboxes, and whose. Write fan-out:
    /// the message, into every recipient's inbox. Read fan-out (large
    /// groups): published here once on the group's subject, where each edge
    /// with members subscribes; members read what they missed from the
    /// history. Membership changes also reach the inboxes of the users
    /// concerned (see below), so their edges and their offline devices
    /// learn of them.
    async fn plan(
        &self,
        row: &MessageRow,
        message: &pb::Message,
    ) -> Result<(delivery::inbox_entry::Event, Vec<String>), FanoutError> {
        let conversation = ConversationId::parse(&row.conversation_id)
            .map_err(|_| FanoutError::Store(format!("bad conversation {}", row.conversation_id)))?;
        Ok(match conversation.group_id() {
            Some(group) if row.read_fanout => {
                if let Err(e) = self
                    .caller
                    .client
                    .publish(subject::group_push(group), message.encode_to_vec().into())
                    .await
                {
                    // Best effort: edges fill gaps from the history.
                    tracing::warn!(error = %e, "group push failed");
                }
                // Users who join get the notice itself in their inbox (their
                // edges do not follow the group yet); users who leave or are
                // removed get a marker (their edges follow the group and
                // forward the notice as a group message). A dismissal, like
                // any switch back to write fan-out, is not delivered here.
                let marker = || {
                    delivery::inbox_entry::Event::Membership(pb::GroupMembershipChanged {
                        conversation_id: row.conversation_id.clone(),
                        seq: row.seq as u64,
                    })
                };
                match message.body.as_ref().and_then(|b| b.kind.as_ref()) {
                    Some(pb::message_body::Kind::System(n)) => match NoticeKind::parse(&n.kind) {
                        Some(NoticeKind::MemberAdded) => (
                            delivery::inbox_entry::Event::Message(message.clone()),
                            n.user_ids.clone(),
                        ),
                        Some(kind) if kind.ends_membership() => (marker(), n.user_ids.clone()),
                        _ => (marker(), Vec::new()),
                    },
                    _ => (marker(), Vec::new()),
                }
            }
            _ => (
                delivery::inbox_entry::Event::Message(message.clone()),
                self.recipients(&conversation, row.seq).await?,
            ),
        })
    }

    pub(super) async fn deliver_to(
        &self,
        user: String,
        entry: &delivery::InboxEntry,
        dedup: String,
    ) -> Result<u64, DeliveryError> {
        self.inboxes.deliver(&user, entry, &dedup).await
    }

    /// Fans out the pending messages of one conversation, in seq order
    /// (the caller holds the conversation's order lock).
    pub(super) async fn fan_out_pending(
        &self,
        conversation: &ConversationId,
    ) -> Result<(), RpcError> {
        let conversation_id = conversation.as_str();
        if self
            .pending_known
            .load(std::sync::atomic::Ordering::Acquire)
            && !self.pending_set().contains(conversation_id)
        {
            return Ok(());
        }
        self.fan_out_left(conversation).await
    }

    /// Fans out every message of `conversation` above its watermark, in seq
    /// order, whether or not the pending set names it (the caller holds the
    /// conversation's order lock): for a message just stored behind
    /// others ([`MessageRow::behind`]), which goes out with them.
    pub(super) async fn fan_out_left(&self, conversation: &ConversationId) -> Result<(), RpcError> {
        let conversation_id = conversation.as_str();
        // The watermarks of what went out meanwhile are written first.
        self.writer.flush().await;
        let pending = store::not_fanned_out_in(&self.pool, conversation).await?;
        if !pending.is_empty() {
            tracing::info!(
                conversation = conversation_id,
                messages = pending.len(),
                "fanning out messages left behind"
            );
        }
        for row in &pending {
            self.fan_out(row, false).await.map_err(|e| {
                tracing::warn!(error = %e, message_id = %row.id, "fan-out of a pending message failed");
                RpcError::unavailable("an earlier message is not yet delivered; retry")
            })?;
        }
        self.pending_set().remove(conversation_id);
        Ok(())
    }

    /// Fans out messages stored before `before_ms` that are not fanned out.
    /// A conversation whose fan-out fails is left for the next sweep (its
    /// later messages too, to keep their order); the others go on.
    pub(super) async fn sweep(&self, before_ms: i64) -> Result<usize, FanoutError> {
        let result = self.sweep_pages(before_ms).await;
        // The fanned-out marks are written, then whatever is still pending
        // is noted, so the next send of those conversations delivers it first.
        self.writer.flush().await;
        match store::pending_conversations(&self.pool, before_ms).await {
            Ok(left) => {
                self.pending_set().extend(left);
                self.pending_known
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            Err(e) => tracing::warn!(error = %e, "cannot list conversations left pending"),
        }
        result
    }

    pub(super) async fn sweep_pages(&self, before_ms: i64) -> Result<usize, FanoutError> {
        let mut done = 0;
        loop {
            let rows = store::not_fanned_out(&self.pool, before_ms, 500)
                .await
                .map_err(|e| FanoutError::Store(format!("load pending: {e}")))?;
            let mut failed: HashSet<&str> = HashSet::new();
            let mut progress = 0;
            for row in &rows {
                if self.shutdown.is_cancelled() {
                    return Ok(done);
                }
                if failed.contains(row.conversation_id.as_str()) {
                    continue;
                }
                let _order = self.order.lock([row.conversation_id.as_str()]).await;
                match self.fan_out(row, false).await {
                    Ok(()) => progress += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, message_id = %row.id, "sweep fan-out failed");
                        failed.insert(&row.conversation_id);
                    }
                }
            }
            done += progress;
            if rows.len() < 500 || progress == 0 {
                break;
            }
            // The next page must not list this page's messages again.
            self.writer.flush().await;
        }
        if done > 0 {
            tracing::info!(messages = done, "fanned out messages left pending");
        }
        Ok(done)
    }
}

/// The dedup id of a `messages.created` event: its messages' ids, hashed
/// (two events are duplicates only if they carry the same messages; a
/// message fanned out again with others is announced again).
fn created_dedup_id(messages: &[pb::Message]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    for message in messages {
        message.id.hash(&mut hasher);
    }
    format!(
        "created:{}:{}:{:016x}",
        messages.first().map(|m| m.id.as_str()).unwrap_or_default(),
        messages.len(),
        hasher.finish()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(ids: &[&str]) -> Vec<pb::Message> {
        ids.iter()
            .map(|id| pb::Message {
                id: (*id).to_owned(),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn created_events_are_duplicates_only_with_the_same_messages() {
        let ab = created_dedup_id(&messages(&["a", "b"]));
        assert_eq!(ab, created_dedup_id(&messages(&["a", "b"])));
        // The same first message and count, another second one.
        assert_ne!(ab, created_dedup_id(&messages(&["a", "c"])));
        assert_ne!(ab, created_dedup_id(&messages(&["a"])));
        assert!(ab.starts_with("created:a:2:"), "{ab}");
    }
}
