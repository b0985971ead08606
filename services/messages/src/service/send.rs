//! Sending: who may send where (friendship and blocks for one-to-one chats,
//! membership and mutes in groups), replies that quote, and the repeat of a
//! send with the same `client_msg_id`.

use std::sync::Arc;

use shared::endpoint::endpoints::FriendRelation;
use shared::ids::{ConversationId, UserId};
use shared::proto::message as pb;
use shared::rpc::{Identity, internal};
use shared::{RpcError, ids};

use super::{State, to_i64, wire};
use crate::store::{self, MessageRow};
use crate::validate;

impl State {
    pub(super) async fn send(
        self: Arc<Self>,
        me: Identity,
        input: pb::SendRequest,
    ) -> Result<pb::SendAck, RpcError> {
        let conversation = target(&me, &input)?;
        let Prepared { new, body, quote } = self.prepare(&me, &conversation, &input).await?;

        let _order = self.order.lock([conversation.as_str()]).await;
        // An earlier message whose fan-out failed goes out first, so this one
        // cannot overtake it in the inboxes.
        self.fan_out_pending(&conversation).await?;
        let Some(row) = self.writer.store(new).await? else {
            // A repeated send (or another instance stored it first).
            return match self
                .existing(&me, &input.client_msg_id, &conversation)
                .await?
            {
                Some(existing) => Ok(ack(&existing, true, self.recall_window_ms())),
                None => Err(RpcError::unavailable("message not stored; retry")),
            };
        };
        // The fan-out uses the body and quote this send has, not the stored
        // JSON decoded again; behind others, it goes out with them.
        let message = wire(&row, Some(body), quote, self.recall_window_ms());
        self.fan_out_stored(&row, Some(message)).await.map_err(|e| {
            tracing::warn!(error = %e, message_id = %row.id, "fan-out failed; left to retry or sweep");
            RpcError::unavailable("message stored but not yet delivered; retry with the same client_msg_id")
        })?;
        Ok(ack(&row, false, self.recall_window_ms()))
    }

    /// Validates and authorizes a send of `me` to `conversation`, and makes
    /// what it stores.
    pub(super) async fn prepare(
        &self,
        me: &Identity,
        conversation: &ConversationId,
        input: &pb::SendRequest,
    ) -> Result<Prepared, RpcError> {
        validate::client_msg_id(&input.client_msg_id)?;
        validate::body(input.body.as_ref(), &self.limits())?;
        let (kind, members) = self.may_send(me, conversation).await?;
        let mut body = input.body.clone().unwrap_or_default();
        let files = self.attach_files(me, &mut body).await?;
        if !files.is_empty() {
            // What the files service filled in is held to the same limits
            // (a recording longer than a voice message may be).
            validate::body(Some(&body), &self.limits())?;
        }
        let json = serde_json::to_string(&Some(&body)).map_err(|e| internal("encode body", e))?;
        let quote = self.quote(me, conversation, input.reply_to_seq).await?;
        let reply_to = match &quote {
            Some(quote) => serde_json::to_string(quote).map_err(|e| internal("encode quote", e))?,
            None => String::new(),
        };
        Ok(Prepared {
            new: store::NewMessage {
                id: ids::new_id(),
                conversation_id: conversation.as_str().to_owned(),
                kind,
                members,
                sender_id: me.user_id.to_string(),
                sender_device_id: me.device_id.to_string(),
                client_msg_id: input.client_msg_id.clone(),
                body: json,
                reply_to,
                now_ms: ids::now_ms(),
                files,
            },
            body,
            quote,
        })
    }

    /// Whether `me` may send to `conversation`: its kind and, for a direct
    /// chat, its participants.
    pub(super) async fn may_send(
        &self,
        me: &Identity,
        conversation: &ConversationId,
    ) -> Result<(&'static str, Vec<String>), RpcError> {
        match conversation {
            ConversationId::Group { .. } => {
                self.may_speak(me, conversation).await?;
                Ok(("group", Vec::new()))
            }
            ConversationId::Direct { low, high, .. } => {
                let peer = if *low == me.user_id { high } else { low };
                self.may_message(&me.user_id, peer).await?;
                Ok(("direct", vec![low.to_string(), high.to_string()]))
            }
        }
    }

    pub(super) fn limits(&self) -> validate::Limits {
        validate::Limits {
            max_text_chars: self.config.max_text_chars,
            max_file_bytes: self.config.max_file_bytes,
        }
    }

    /// The quote of message `seq` for a reply (None for no reply): it must
    /// be a message of the same conversation that `me` may read.
    pub(super) async fn quote(
        &self,
        me: &Identity,
        conversation: &ConversationId,
        seq: u64,
    ) -> Result<Option<pb::Quote>, RpcError> {
        if seq == 0 {
            return Ok(None);
        }
        let seq = to_i64(seq)?;
        let window = self.readable(me, conversation).await?;
        let quoted = store::message_at(&self.pool, conversation, seq)
            .await?
            .filter(|m| window.contains(m.seq))
            .ok_or_else(|| RpcError::not_found("no such message to reply to"))?;
        let body: Option<pb::MessageBody> =
            serde_json::from_str(&quoted.body).map_err(|e| internal("decode quoted body", e))?;
        Ok(Some(pb::Quote {
            seq: quoted.seq as u64,
            message_id: quoted.id,
            sender_id: quoted.sender_id,
            preview: validate::preview(body.as_ref()),
        }))
    }

    /// The earlier send with this client_msg_id, fanned out if it was not yet.
    pub(super) async fn existing(
        &self,
        me: &Identity,
        client_msg_id: &str,
        conversation: &ConversationId,
    ) -> Result<Option<MessageRow>, RpcError> {
        let Some(row) = store::by_client_msg_id(&self.pool, &me.user_id, client_msg_id).await?
        else {
            return Ok(None);
        };
        if row.conversation_id != conversation.as_str() {
            return Err(RpcError::conflict(
                "client_msg_id was already used in another conversation",
            ));
        }
        // Not fanned out yet: it goes out with whatever is pending before it
        // (the caller holds the conversation).
        if row.seq > store::fanned_seq(&self.pool, &row.conversation_id).await? {
            self.pending_set().insert(row.conversation_id.clone());
            self.fan_out_pending(conversation).await.map_err(|e| {
                tracing::warn!(error = %e, message_id = %row.id, "fan-out retry failed");
                RpcError::unavailable(
                    "message stored but not yet delivered; retry with the same client_msg_id",
                )
            })?;
        }
        Ok(Some(row))
    }

    /// Whether `me` may send a one-to-one message to `peer`: the peer exists,
    /// neither blocks the other, and (by default) they are friends. Asked
    /// on every send, so a block or an ended friendship applies at once.
    pub(super) async fn may_message(&self, me: &str, peer: &str) -> Result<(), RpcError> {
        let relation = match self.relations.get(me, peer) {
            Some(relation) => relation,
            None => {
                let asked = std::time::Instant::now();
                let relation = self
                    .caller
                    .call_to::<FriendRelation>(&shared::proto::social::RelationRequest {
                        user_id: me.to_string(),
                        other_user_id: peer.to_string(),
                    })
                    .await?;
                self.relations.put(me, peer, relation, asked);
                relation
            }
        };
        if !relation.exists {
            return Err(RpcError::not_found("no such user"));
        }
        if relation.blocking {
            return Err(RpcError::forbidden(
                "you blocked this user; unblock them first",
            ));
        }
        if self.config.require_friendship && (relation.blocked_by || !relation.friends) {
            // One refusal for both, so a block stays invisible to the blocked.
            return Err(RpcError::forbidden(
                "you can only message your friends: send a friend request first",
            ));
        }
        if relation.blocked_by {
            return Err(RpcError::forbidden(
                "this user does not accept your messages",
            ));
        }
        Ok(())
    }

    /// Whether `me` may send to a group conversation: a current member of a
    /// group that is not dismissed, and not muted (the owner and admins may
    /// always speak).
    pub(super) async fn may_speak(
        &self,
        me: &Identity,
        conversation: &ConversationId,
    ) -> Result<(), RpcError> {
        let member = store::member(&self.pool, conversation, &me.user_id)
            .await?
            .filter(|m| m.window.is_current())
            .ok_or_else(|| RpcError::forbidden("not a member of this group"))?;
        let state = store::conversation(&self.pool, conversation)
            .await?
            .ok_or_else(|| RpcError::forbidden("not a member of this group"))?;
        if state.dismissed {
            return Err(RpcError::forbidden("the group was dismissed"));
        }
        if !member.role.manages() {
            if state.muted_all {
                return Err(RpcError::forbidden(
                    "the group is muted: only admins may speak",
                ));
            }
            if member.muted_until_ms > ids::now_ms() {
                return Err(RpcError::forbidden("you are muted in this group"));
            }
        }
        Ok(())
    }
}

/// A send checked and ready to store, with the quote it carries.
pub(super) struct Prepared {
    pub new: store::NewMessage,
    /// The body as stored (with what the files service knows of its files).
    pub body: pb::MessageBody,
    pub quote: Option<pb::Quote>,
}

/// The conversation a send goes to: a group's or a one-to-one chat by
/// `conversation_id`, or the one-to-one chat with `to_user_id`.
pub(super) fn target(me: &Identity, input: &pb::SendRequest) -> Result<ConversationId, RpcError> {
    match (
        input.conversation_id.is_empty(),
        input.to_user_id.is_empty(),
    ) {
        (true, false) => {
            let peer = UserId::parse(input.to_user_id.as_str())?;
            if peer == me.user_id {
                return Err(RpcError::bad_request("cannot message yourself"));
            }
            Ok(ConversationId::direct(&me.user_id, &peer))
        }
        (false, true) => {
            let conversation = ConversationId::parse(&input.conversation_id)?;
            if conversation.participants().is_some() && conversation.peer_of(&me.user_id).is_none()
            {
                return Err(RpcError::forbidden(
                    "not a participant of this conversation",
                ));
            }
            Ok(conversation)
        }
        _ => Err(RpcError::bad_request(
            "set exactly one of conversation_id and to_user_id",
        )),
    }
}

pub(super) fn ack(row: &MessageRow, duplicate: bool, recall_window_ms: i64) -> pb::SendAck {
    pb::SendAck {
        recall_until_ms: row.server_ts_ms.saturating_add(recall_window_ms),
        message_id: row.id.clone(),
        conversation_id: row.conversation_id.clone(),
        seq: row.seq as u64,
        server_ts_ms: row.server_ts_ms,
        client_msg_id: row.client_msg_id.clone(),
        duplicate,
    }
}
