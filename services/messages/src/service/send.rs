//! Sending: who may send where (friendship and blocks for one-to-one chats,
//! membership and mutes in groups), replies that quote, and the repeat of a
//! send with the same `client_msg_id`.

use std::sync::Arc;

use shared::proto::message as pb;
use shared::rpc::{Identity, internal};
use shared::{RpcError, ids, subject};

use super::{State, shard_of, to_i64};
use crate::store::{self, MessageRow};
use crate::validate;

impl State {
    pub(super) async fn send(
        self: Arc<Self>,
        me: Identity,
        input: pb::SendRequest,
    ) -> Result<pb::SendAck, RpcError> {
        validate::client_msg_id(&input.client_msg_id)?;
        validate::body(input.body.as_ref(), &self.limits())?;
        let (conversation_id, kind, members) = match ids::group_of(&input.conversation_id) {
            Some(_) if input.to_user_id.is_empty() => {
                self.may_speak(&me, &input.conversation_id).await?;
                (input.conversation_id.clone(), "group", Vec::new())
            }
            _ => {
                let peer = self.direct_peer(&me, &input)?;
                self.may_message(&me.user_id, &peer).await?;
                let members = vec![me.user_id.clone(), peer.clone()];
                (
                    ids::direct_conversation(&me.user_id, &peer),
                    "direct",
                    members,
                )
            }
        };
        let body = serde_json::to_string(&input.body).map_err(|e| internal("encode body", e))?;
        let reply_to = self
            .quote(&me, &conversation_id, input.reply_to_seq)
            .await?;

        let _order = self.order[shard_of(&conversation_id)].lock().await;
        // An earlier message whose fan-out failed goes out first, so this one
        // cannot overtake it in the inboxes.
        self.fan_out_pending(&conversation_id).await?;
        let new = store::NewMessage {
            id: ids::new_id(),
            conversation_id: conversation_id.clone(),
            kind,
            members,
            sender_id: me.user_id.clone(),
            sender_device_id: me.device_id.clone(),
            client_msg_id: input.client_msg_id.clone(),
            body,
            reply_to,
            now_ms: ids::now_ms(),
        };
        let Some(row) = self.writer.store(new).await? else {
            // A repeated send (or another instance stored it first).
            return match self
                .existing(&me, &input.client_msg_id, &conversation_id)
                .await?
            {
                Some(existing) => Ok(ack(&existing, true)),
                None => Err(RpcError::unavailable("message not stored; retry")),
            };
        };
        self.fan_out(&row).await.map_err(|e| {
            tracing::warn!(error = %e, message_id = %row.id, "fan-out failed; left to retry or sweep");
            RpcError::unavailable("message stored but not yet delivered; retry with the same client_msg_id")
        })?;
        Ok(ack(&row, false))
    }

    pub(super) fn limits(&self) -> validate::Limits {
        validate::Limits {
            max_text_chars: self.config.max_text_chars,
            max_file_bytes: self.config.max_file_bytes,
        }
    }

    /// The quote of message `seq` for a reply (JSON, "" for no reply): it
    /// must be a message of the same conversation that `me` may read.
    pub(super) async fn quote(
        &self,
        me: &Identity,
        conversation_id: &str,
        seq: u64,
    ) -> Result<String, RpcError> {
        if seq == 0 {
            return Ok(String::new());
        }
        let seq = to_i64(seq)?;
        let (joined, left) = self.readable(me, conversation_id).await?;
        let quoted = store::message_at(&self.pool, conversation_id, seq)
            .await
            .map_err(|e| internal("load quoted message", e))?
            .filter(|m| m.seq >= joined && (left == 0 || m.seq <= left))
            .ok_or_else(|| RpcError::not_found("no such message to reply to"))?;
        let body: Option<pb::MessageBody> =
            serde_json::from_str(&quoted.body).map_err(|e| internal("decode quoted body", e))?;
        let quote = pb::Quote {
            seq: quoted.seq as u64,
            message_id: quoted.id,
            sender_id: quoted.sender_id,
            preview: validate::preview(body.as_ref()),
        };
        serde_json::to_string(&quote).map_err(|e| internal("encode quote", e))
    }

    /// The earlier send with this client_msg_id, fanned out if it was not yet.
    pub(super) async fn existing(
        &self,
        me: &Identity,
        client_msg_id: &str,
        conversation_id: &str,
    ) -> Result<Option<MessageRow>, RpcError> {
        let Some(row) = store::by_client_msg_id(&self.pool, &me.user_id, client_msg_id)
            .await
            .map_err(|e| internal("load message", e))?
        else {
            return Ok(None);
        };
        if row.conversation_id != conversation_id {
            return Err(RpcError::conflict(
                "client_msg_id was already used in another conversation",
            ));
        }
        if row.fanned_out == 0 {
            self.fan_out(&row).await.map_err(|e| {
                tracing::warn!(error = %e, message_id = %row.id, "fan-out retry failed");
                RpcError::unavailable(
                    "message stored but not yet delivered; retry with the same client_msg_id",
                )
            })?;
        }
        Ok(Some(row))
    }

    /// The other participant of the one-to-one chat this send targets.
    pub(super) fn direct_peer(
        &self,
        me: &Identity,
        input: &pb::SendRequest,
    ) -> Result<String, RpcError> {
        let peer = match (
            input.conversation_id.is_empty(),
            input.to_user_id.is_empty(),
        ) {
            (true, false) => input.to_user_id.clone(),
            (false, true) => {
                let (a, b) = ids::direct_participants(&input.conversation_id)
                    .ok_or_else(|| RpcError::bad_request("unknown conversation id format"))?;
                if a == me.user_id {
                    b.to_owned()
                } else if b == me.user_id {
                    a.to_owned()
                } else {
                    return Err(RpcError::forbidden(
                        "not a participant of this conversation",
                    ));
                }
            }
            _ => {
                return Err(RpcError::bad_request(
                    "set exactly one of conversation_id and to_user_id",
                ));
            }
        };
        if !subject::is_valid_token(&peer) {
            return Err(RpcError::bad_request("malformed user id"));
        }
        if peer == me.user_id {
            return Err(RpcError::bad_request("cannot message yourself"));
        }
        Ok(peer)
    }

    /// Whether `me` may send a one-to-one message to `peer`: the peer exists,
    /// neither blocks the other, and (by default) they are friends. Asked
    /// on every send, so a block or an ended friendship applies at once.
    pub(super) async fn may_message(&self, me: &str, peer: &str) -> Result<(), RpcError> {
        let relation = match self.relations.get(me, peer) {
            Some(relation) => relation,
            None => {
                let asked = std::time::Instant::now();
                let relation = self.caller.relation(me, peer).await?;
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

    /// Whether `me` may send to group conversation `conversation_id`: a
    /// current member of a group that is not dismissed, and not muted (the
    /// owner and admins may always speak).
    pub(super) async fn may_speak(
        &self,
        me: &Identity,
        conversation_id: &str,
    ) -> Result<(), RpcError> {
        let member = store::member(&self.pool, conversation_id, &me.user_id)
            .await
            .map_err(|e| internal("load membership", e))?
            .filter(|m| m.left_seq == 0)
            .ok_or_else(|| RpcError::forbidden("not a member of this group"))?;
        let conversation = store::conversation(&self.pool, conversation_id)
            .await
            .map_err(|e| internal("load conversation", e))?
            .ok_or_else(|| RpcError::forbidden("not a member of this group"))?;
        if conversation.dismissed != 0 {
            return Err(RpcError::forbidden("the group was dismissed"));
        }
        if member.role == "member" {
            if conversation.muted_all != 0 {
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

fn ack(row: &MessageRow, duplicate: bool) -> pb::SendAck {
    pb::SendAck {
        message_id: row.id.clone(),
        conversation_id: row.conversation_id.clone(),
        seq: row.seq as u64,
        server_ts_ms: row.server_ts_ms,
        client_msg_id: row.client_msg_id.clone(),
        duplicate,
    }
}
