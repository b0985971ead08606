//! Recall (for everyone, through every recipient's inbox, so devices that
//! were offline learn of it too) and delete for me.

use std::sync::Arc;

use shared::group::Role;
use shared::ids::ConversationId;
use shared::proto::{delivery, message as pb};
use shared::rpc::{Identity, internal};
use shared::{RpcError, ids};

use super::history::named;
use super::{State, to_i64};
use crate::store::{self, ReadWindow};

const MAX_DELETE: usize = 200;

impl State {
    /// Replaces a message with "recalled" for everyone who received it.
    /// Recalling again re-delivers the news (the first delivery may have
    /// failed) and answers the same.
    pub(super) async fn recall(
        self: Arc<Self>,
        me: Identity,
        input: pb::RecallRequest,
    ) -> Result<pb::MessageRecalled, RpcError> {
        let conversation = named(&input.conversation_id)?;
        let window = self.readable(&me, &conversation).await?;
        let seq = to_i64(input.seq)?;
        let _order = self.order.lock([input.conversation_id.as_str()]).await;
        // The message itself reaches every inbox before news of its recall.
        self.fan_out_pending(&conversation).await?;
        let mut row = store::message_at(&self.pool, &conversation, seq)
            .await?
            .filter(|m| window.contains(m.seq))
            .ok_or_else(|| RpcError::not_found("no such message"))?;
        let body: Option<pb::MessageBody> =
            serde_json::from_str(&row.body).map_err(|e| internal("decode stored body", e))?;
        let recalled = match body.and_then(|b| b.kind) {
            Some(pb::message_body::Kind::Recalled(r)) => Some(r),
            Some(pb::message_body::Kind::System(_)) => {
                return Err(RpcError::bad_request("system notices cannot be recalled"));
            }
            _ => None,
        };
        let recalled = match recalled {
            Some(done) => done,
            None => {
                self.may_recall(&me, &conversation, &row, window).await?;
                let done = pb::Recalled {
                    by_user_id: me.user_id.to_string(),
                    at_ms: ids::now_ms(),
                };
                let body = serde_json::to_string(&Some(pb::MessageBody {
                    kind: Some(pb::message_body::Kind::Recalled(done.clone())),
                }))
                .map_err(|e| internal("encode body", e))?;
                store::recall(&self.write, &row.id, &body).await?;
                row.body = body;
                done
            }
        };
        let news = pb::MessageRecalled {
            conversation_id: row.conversation_id.clone(),
            seq: row.seq as u64,
            message_id: row.id.clone(),
            by_user_id: recalled.by_user_id,
            at_ms: recalled.at_ms,
        };
        let recipients = self
            .recipients(&conversation, row.seq)
            .await
            .map_err(|e| internal("load recipients", e))?;
        self.tell(
            &recipients,
            delivery::inbox_entry::Event::Recalled(news.clone()),
            &format!("recall:{}", row.id),
        )
        .await?;
        if let Err(e) = shared::nats::publish_event(
            &self.jetstream,
            shared::subject::event::MESSAGE_RECALLED,
            prost::Message::encode_to_vec(&news).into(),
            &format!("recall:{}", row.id),
        )
        .await
        {
            tracing::warn!(error = %e, "message.recalled event not stored");
        }
        Ok(news)
    }

    /// The sender within the recall window, or at any time a current manager
    /// of the message's group who outranks the sender (the owner recalls
    /// anyone's message, an admin a plain member's).
    pub(super) async fn may_recall(
        &self,
        me: &Identity,
        conversation: &ConversationId,
        row: &store::MessageRow,
        window: ReadWindow,
    ) -> Result<(), RpcError> {
        if conversation.group_id().is_some() {
            // Who left the group keeps reading what they saw, no more.
            if !window.is_current() {
                return Err(RpcError::forbidden(
                    "you are no longer a member of this group",
                ));
            }
            let mine = store::member(&self.pool, conversation, &me.user_id)
                .await?
                .map(|m| m.role)
                .filter(|role| role.manages());
            if let Some(mine) = mine {
                if row.sender_id == me.user_id || mine == Role::Owner {
                    return Ok(());
                }
                // An admin recalls a plain (or former) member's message, not
                // the owner's or another admin's.
                let sender = ids::UserId::parse(row.sender_id.as_str())?;
                let theirs = store::member(&self.pool, conversation, &sender)
                    .await?
                    .filter(|m| m.window.is_current())
                    .map_or(Role::Member, |m| m.role);
                if theirs < mine {
                    return Ok(());
                }
                return Err(RpcError::forbidden(
                    "only the owner may recall the messages of the owner and admins",
                ));
            }
        }
        if row.sender_id != me.user_id {
            return Err(RpcError::forbidden(
                "only the sender may recall this message",
            ));
        }
        let window_ms = self.config.recall_window_secs as i64 * 1000;
        if ids::now_ms() - row.server_ts_ms > window_ms {
            return Err(RpcError::forbidden(format!(
                "messages can only be recalled within {} seconds",
                self.config.recall_window_secs
            )));
        }
        Ok(())
    }

    /// Hides messages from the caller's own history; its devices are told.
    pub(super) async fn delete(
        self: Arc<Self>,
        me: Identity,
        input: pb::DeleteRequest,
    ) -> Result<pb::MessagesDeleted, RpcError> {
        if input.seqs.is_empty() || input.seqs.len() > MAX_DELETE {
            return Err(RpcError::bad_request(format!("name 1..={MAX_DELETE} seqs")));
        }
        let conversation = named(&input.conversation_id)?;
        self.readable(&me, &conversation).await?;
        let mut seqs = input
            .seqs
            .iter()
            .map(|s| to_i64(*s))
            .collect::<Result<Vec<i64>, _>>()?;
        seqs.sort_unstable();
        seqs.dedup();
        store::hide(
            &self.write,
            &me.user_id,
            &conversation,
            &seqs,
            ids::now_ms(),
        )
        .await?;
        let deleted = pb::MessagesDeleted {
            conversation_id: input.conversation_id.clone(),
            seqs: seqs.iter().map(|s| *s as u64).collect(),
        };
        let dedup = format!("delete:{}:{}", input.conversation_id, ids::new_id());
        self.tell(
            std::slice::from_ref(&me.user_id),
            delivery::inbox_entry::Event::Deleted(deleted.clone()),
            &dedup,
        )
        .await?;
        Ok(deleted)
    }
}
