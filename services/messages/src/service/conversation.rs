//! The conversation list, each member's own flags (pin, mute), typing
//! signals, and the large groups an edge follows.
//!
//! A user's own state travels to its other devices through its inbox, so
//! every device shows the same list. Typing is a signal: never stored.

use std::sync::Arc;

use shared::ids::{ConversationId, UserId};
use shared::proto::{delivery, message as pb};
use shared::rpc::{Identity, internal};
use shared::{RpcError, ids};

use super::history::named;
use super::history::page;
use super::{State, to_proto};
use crate::store;

/// Most conversations one `heads` call asks about.
const MAX_HEADS: usize = 500;

impl State {
    pub(super) async fn conversations(
        self: Arc<Self>,
        me: Identity,
        input: pb::ConversationsRequest,
    ) -> Result<pb::ConversationsResponse, RpcError> {
        let limit = page(input.limit)?;
        if input.before_id.len() > 200 {
            return Err(RpcError::bad_request("before_id is too long"));
        }
        let first_page = input.before_activity_ms == 0 && input.before_id.is_empty();
        let before = if first_page {
            // Above any pinned flag: everything comes after it.
            (2, i64::MAX, "")
        } else {
            (
                i64::from(input.before_pinned),
                input.before_activity_ms,
                input.before_id.as_str(),
            )
        };
        let mut rows = store::conversations(&self.pool, &me.user_id, before, limit + 1).await?;
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let mut conversations = Vec::with_capacity(rows.len());
        for row in rows {
            // A former member sees the conversation as it was when it left.
            let window = row.window;
            let last_readable = window.last_of(row.last_seq);
            let id = ConversationId::parse(&row.id)
                .map_err(|e| internal("read a stored conversation id", e.message))?;
            let last = store::message_at(&self.pool, &id, last_readable).await?;
            let read_from = row.read_seq.max(window.joined - 1);
            let unread =
                store::unread(&self.pool, &id, &me.user_id, read_from, last_readable).await?;
            let peer = id.peer_of(&me.user_id);
            let peer_read_seq = match peer {
                Some(peer) => store::read_seq(&self.pool, &id, peer).await?,
                None => 0,
            };
            let peer = peer.map(UserId::to_string).unwrap_or_default();
            conversations.push(pb::Conversation {
                id: row.id,
                kind: row.kind,
                peer_user_id: peer,
                last_seq: last_readable as u64,
                last_message: last
                    .as_ref()
                    .map(|row| to_proto(row, self.recall_window_ms()))
                    .transpose()?,
                last_activity_ms: row.last_activity_ms,
                title: row.title,
                unread_count: unread as u64,
                read_seq: row.read_seq as u64,
                pinned: row.pinned,
                muted: row.muted,
                peer_read_seq: peer_read_seq as u64,
            });
        }
        Ok(pb::ConversationsResponse {
            conversations,
            has_more,
        })
    }

    /// Pins or mutes a conversation for the caller; its devices are told.
    pub(super) async fn settings(
        self: Arc<Self>,
        me: Identity,
        input: pb::SettingsRequest,
    ) -> Result<pb::SettingsChanged, RpcError> {
        let conversation = named(&input.conversation_id)?;
        self.readable(&me, &conversation).await?;
        if input.pinned.is_none() && input.muted.is_none() {
            return Err(RpcError::bad_request("set pinned or muted"));
        }
        let (pinned, muted) = store::set_flags(
            &self.write,
            &conversation,
            &me.user_id,
            input.pinned,
            input.muted,
        )
        .await?
        .ok_or_else(|| RpcError::not_found("no messages in this conversation yet"))?;
        let changed = pb::SettingsChanged {
            conversation_id: input.conversation_id.clone(),
            pinned,
            muted,
        };
        let dedup = format!("settings:{}:{}", input.conversation_id, ids::new_id());
        self.tell(
            std::slice::from_ref(&me.user_id),
            delivery::inbox_entry::Event::Settings(changed.clone()),
            &dedup,
        )
        .await?;
        Ok(changed)
    }

    /// Tells the other members' connected devices that the caller is typing
    /// (rate-limited by the edge; not in groups above the configured size).
    pub(super) async fn typing(
        self: Arc<Self>,
        me: Identity,
        input: pb::TypingRequest,
    ) -> Result<pb::Empty, RpcError> {
        let conversation = named(&input.conversation_id)?;
        let others: Vec<String> = match &conversation {
            ConversationId::Direct { .. } => {
                let peer = conversation
                    .peer_of(&me.user_id)
                    .ok_or_else(|| RpcError::forbidden("not a participant of this conversation"))?;
                self.may_message(&me.user_id, peer).await?;
                vec![peer.to_string()]
            }
            ConversationId::Group { .. } => {
                self.may_speak(&me, &conversation).await?;
                let members = store::current_members(&self.pool, &conversation).await?;
                if members.len() > self.config.typing_max_members as usize {
                    return Ok(pb::Empty {});
                }
                members.into_iter().filter(|m| *m != me.user_id).collect()
            }
        };
        let typing = pb::Typing {
            conversation_id: input.conversation_id,
            user_id: me.user_id.into(),
        };
        for user in others {
            let signal = delivery::Signal {
                kind: Some(delivery::signal::Kind::Typing(typing.clone())),
            };
            shared::inbox::signal(&self.caller.client, &user, signal).await;
        }
        Ok(pb::Empty {})
    }

    /// The caller's large groups (read fan-out) with their last seq: its
    /// edge subscribes to them and tells the client where each stands.
    pub(super) async fn large_groups(
        self: Arc<Self>,
        me: Identity,
        _: pb::LargeGroupsRequest,
    ) -> Result<pb::LargeGroupsResponse, RpcError> {
        let rows = store::large_groups(&self.pool, &me.user_id).await?;
        Ok(heads_of(rows))
    }

    /// Internal (edges): the last seq of the given large groups, so an edge
    /// can tell its connections that they missed a live group message.
    pub(super) async fn group_heads(
        self: Arc<Self>,
        _: (),
        input: pb::GroupHeadsRequest,
    ) -> Result<pb::LargeGroupsResponse, RpcError> {
        if input.conversation_ids.len() > MAX_HEADS {
            return Err(RpcError::bad_request(format!(
                "at most {MAX_HEADS} conversations at once"
            )));
        }
        if input
            .conversation_ids
            .iter()
            .any(|c| !matches!(ConversationId::parse(c), Ok(ConversationId::Group { .. })))
        {
            return Err(RpcError::bad_request("not a group conversation id"));
        }
        let rows = store::heads(&self.pool, &input.conversation_ids).await?;
        Ok(heads_of(rows))
    }

    /// Delivers one inbox entry to each of `users` (deduplicated per user).
    pub(super) async fn tell<U: AsRef<str>>(
        &self,
        users: &[U],
        event: delivery::inbox_entry::Event,
        dedup: &str,
    ) -> Result<(), RpcError> {
        let entry = delivery::InboxEntry { event: Some(event) };
        let mut pending = futures::stream::FuturesUnordered::new();
        for user in users {
            let user = user.as_ref();
            pending.push(self.deliver_to(user.to_owned(), &entry, format!("{dedup}:{user}")));
        }
        while let Some(result) = futures::StreamExt::next(&mut pending).await {
            result.map_err(|e| {
                tracing::warn!(error = %e, "inbox delivery failed");
                RpcError::unavailable("saved, but not yet delivered to every device; retry")
            })?;
        }
        Ok(())
    }
}

/// (conversation, last seq) rows as group heads.
fn heads_of(rows: Vec<(String, i64)>) -> pb::LargeGroupsResponse {
    let heads = rows
        .into_iter()
        .map(|(conversation_id, last_seq)| pb::GroupHead {
            conversation_id,
            last_seq: last_seq as u64,
        })
        .collect();
    pb::LargeGroupsResponse { heads }
}
