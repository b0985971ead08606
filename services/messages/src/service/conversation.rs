//! What a user does with conversations besides sending: the conversation
//! list, read positions and receipts, per-user flags (pin, mute), recall,
//! delete-for-me and typing indicators.
//!
//! A user's own state travels to its other devices through its inbox (read
//! positions, flags, deletions), so every device shows the same list; a
//! recall travels through every recipient's inbox, so devices that were
//! offline learn of it too. Typing is a signal: never stored.

use async_nats::service::Request;
use shared::proto::{delivery, message as pb};
use shared::rpc::{Identity, internal};
use shared::{RpcError, ids, rpc};

use super::{State, page, shard_of, to_i64, to_proto};
use crate::store;

const MAX_DELETE: usize = 200;
const MAX_READERS_LISTED: usize = 200;
/// Most conversations one `heads` call asks about.
const MAX_HEADS: usize = 500;

impl State {
    pub(super) async fn conversations(
        &self,
        req: &Request,
    ) -> Result<pb::ConversationsResponse, RpcError> {
        let me = Identity::from_headers(req.message.headers.as_ref())?;
        let input: pb::ConversationsRequest = rpc::decode(&req.message.payload)?;
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
        let mut rows = store::conversations(&self.pool, &me.user_id, before, limit + 1)
            .await
            .map_err(|e| internal("load conversations", e))?;
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let mut conversations = Vec::with_capacity(rows.len());
        for row in rows {
            // A former member sees the conversation as it was when it left.
            let last_readable = if row.left_seq > 0 {
                row.left_seq.min(row.last_seq)
            } else {
                row.last_seq
            };
            let last = store::message_at(&self.pool, &row.id, last_readable)
                .await
                .map_err(|e| internal("load last message", e))?;
            let read_from = row.read_seq.max(row.joined_seq - 1);
            let unread = store::unread(&self.pool, &row.id, &me.user_id, read_from, last_readable)
                .await
                .map_err(|e| internal("count unread", e))?;
            let peer = ids::direct_participants(&row.id)
                .map(|(a, b)| if a == me.user_id { b } else { a }.to_owned())
                .unwrap_or_default();
            let peer_read_seq = if peer.is_empty() {
                0
            } else {
                store::read_seq(&self.pool, &row.id, &peer)
                    .await
                    .map_err(|e| internal("load peer read position", e))?
            };
            conversations.push(pb::Conversation {
                id: row.id,
                kind: row.kind,
                peer_user_id: peer,
                last_seq: last_readable as u64,
                last_message: last.as_ref().map(to_proto).transpose()?,
                last_activity_ms: row.last_activity_ms,
                title: row.title,
                unread_count: unread as u64,
                read_seq: row.read_seq as u64,
                pinned: row.pinned != 0,
                muted: row.notifications_muted != 0,
                peer_read_seq: peer_read_seq as u64,
            });
        }
        Ok(pb::ConversationsResponse {
            conversations,
            has_more,
        })
    }

    /// Moves the caller's read position forward and tells its devices (and
    /// the peer of a direct chat, whose messages are now read).
    pub(super) async fn read(&self, req: &Request) -> Result<pb::ReadResponse, RpcError> {
        let me = Identity::from_headers(req.message.headers.as_ref())?;
        let input: pb::ReadRequest = rpc::decode(&req.message.payload)?;
        let (joined, left) = self.readable(&me, &input.conversation_id).await?;
        let conversation = store::conversation(&self.pool, &input.conversation_id)
            .await
            .map_err(|e| internal("load conversation", e))?
            .ok_or_else(|| RpcError::not_found("no messages in this conversation yet"))?;
        let last = if left > 0 {
            left.min(conversation.last_seq)
        } else {
            conversation.last_seq
        };
        let seq = to_i64(input.seq)?;
        if seq > last {
            return Err(RpcError::bad_request(format!(
                "seq is beyond the last message ({last})"
            )));
        }
        let before = store::read_seq(&self.pool, &input.conversation_id, &me.user_id)
            .await
            .map_err(|e| internal("load read position", e))?;
        let now = store::mark_read(&self.write, &input.conversation_id, &me.user_id, seq)
            .await
            .map_err(|e| internal("store read position", e))?
            .ok_or_else(|| RpcError::not_found("no messages in this conversation yet"))?;
        if now > before {
            let position = pb::ReadPosition {
                conversation_id: input.conversation_id.clone(),
                user_id: me.user_id.clone(),
                read_seq: now as u64,
            };
            let mut told = vec![me.user_id.clone()];
            if let Some((a, b)) = ids::direct_participants(&input.conversation_id) {
                told.push(if a == me.user_id { b } else { a }.to_owned());
            }
            let entry = delivery::inbox_entry::Event::Read(position);
            let dedup = format!("read:{}:{}:{now}", input.conversation_id, me.user_id);
            self.tell(&told, entry, &dedup).await?;
        }
        let unread = store::unread(
            &self.pool,
            &input.conversation_id,
            &me.user_id,
            now.max(joined - 1),
            last,
        )
        .await
        .map_err(|e| internal("count unread", e))?;
        Ok(pb::ReadResponse {
            read_seq: now as u64,
            unread_count: unread as u64,
        })
    }

    /// How many of the members who could read message `seq` have read it.
    pub(super) async fn reads(&self, req: &Request) -> Result<pb::ReadsResponse, RpcError> {
        let me = Identity::from_headers(req.message.headers.as_ref())?;
        let input: pb::ReadsRequest = rpc::decode(&req.message.payload)?;
        let (joined, left) = self.readable(&me, &input.conversation_id).await?;
        let seq = to_i64(input.seq)?;
        let message = store::message_at(&self.pool, &input.conversation_id, seq)
            .await
            .map_err(|e| internal("load message", e))?
            .filter(|m| m.seq >= joined && (left == 0 || m.seq <= left))
            .ok_or_else(|| RpcError::not_found("no such message"))?;
        let positions =
            store::read_positions(&self.pool, &input.conversation_id, seq, &message.sender_id)
                .await
                .map_err(|e| internal("load read positions", e))?;
        let readers: Vec<String> = positions
            .iter()
            .filter(|(_, read)| *read >= seq)
            .map(|(user, _)| user.clone())
            .collect();
        Ok(pb::ReadsResponse {
            read_count: readers.len() as u32,
            member_count: positions.len() as u32,
            reader_ids: if readers.len() <= MAX_READERS_LISTED {
                readers
            } else {
                Vec::new()
            },
        })
    }

    /// Pins or mutes a conversation for the caller; its devices are told.
    pub(super) async fn settings(&self, req: &Request) -> Result<pb::SettingsChanged, RpcError> {
        let me = Identity::from_headers(req.message.headers.as_ref())?;
        let input: pb::SettingsRequest = rpc::decode(&req.message.payload)?;
        self.readable(&me, &input.conversation_id).await?;
        if input.pinned.is_none() && input.muted.is_none() {
            return Err(RpcError::bad_request("set pinned or muted"));
        }
        let (pinned, muted) = store::set_flags(
            &self.write,
            &input.conversation_id,
            &me.user_id,
            input.pinned,
            input.muted,
        )
        .await
        .map_err(|e| internal("store settings", e))?
        .ok_or_else(|| RpcError::not_found("no messages in this conversation yet"))?;
        let changed = pb::SettingsChanged {
            conversation_id: input.conversation_id.clone(),
            pinned: pinned != 0,
            muted: muted != 0,
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

    /// Replaces a message with "recalled" for everyone who received it.
    /// Recalling again re-delivers the news (the first delivery may have
    /// failed) and answers the same.
    pub(super) async fn recall(&self, req: &Request) -> Result<pb::MessageRecalled, RpcError> {
        let me = Identity::from_headers(req.message.headers.as_ref())?;
        let input: pb::RecallRequest = rpc::decode(&req.message.payload)?;
        let (joined, left) = self.readable(&me, &input.conversation_id).await?;
        let seq = to_i64(input.seq)?;
        let _order = self.order[shard_of(&input.conversation_id)].lock().await;
        // The message itself reaches every inbox before news of its recall.
        self.fan_out_pending(&input.conversation_id).await?;
        let mut row = store::message_at(&self.pool, &input.conversation_id, seq)
            .await
            .map_err(|e| internal("load message", e))?
            .filter(|m| m.seq >= joined && (left == 0 || m.seq <= left))
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
                self.may_recall(&me, &row, left).await?;
                let done = pb::Recalled {
                    by_user_id: me.user_id.clone(),
                    at_ms: ids::now_ms(),
                };
                let body = serde_json::to_string(&Some(pb::MessageBody {
                    kind: Some(pb::message_body::Kind::Recalled(done.clone())),
                }))
                .map_err(|e| internal("encode body", e))?;
                store::set_body(&self.write, &row.id, &body)
                    .await
                    .map_err(|e| internal("store recall", e))?;
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
            .recipients(&row)
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

    /// The sender within the recall window, or a current owner or admin of
    /// the message's group at any time.
    async fn may_recall(
        &self,
        me: &Identity,
        row: &store::MessageRow,
        left: i64,
    ) -> Result<(), RpcError> {
        if ids::group_of(&row.conversation_id).is_some() && left == 0 {
            let member = store::member(&self.pool, &row.conversation_id, &me.user_id)
                .await
                .map_err(|e| internal("load membership", e))?;
            if member.is_some_and(|m| m.role == "owner" || m.role == "admin") {
                return Ok(());
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
    pub(super) async fn delete(&self, req: &Request) -> Result<pb::MessagesDeleted, RpcError> {
        let me = Identity::from_headers(req.message.headers.as_ref())?;
        let input: pb::DeleteRequest = rpc::decode(&req.message.payload)?;
        if input.seqs.is_empty() || input.seqs.len() > MAX_DELETE {
            return Err(RpcError::bad_request(format!("name 1..={MAX_DELETE} seqs")));
        }
        self.readable(&me, &input.conversation_id).await?;
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
            &input.conversation_id,
            &seqs,
            ids::now_ms(),
        )
        .await
        .map_err(|e| internal("hide messages", e))?;
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

    /// Tells the other members' connected devices that the caller is typing
    /// (rate-limited by the edge; not in groups above the configured size).
    pub(super) async fn typing(&self, req: &Request) -> Result<pb::Empty, RpcError> {
        let me = Identity::from_headers(req.message.headers.as_ref())?;
        let input: pb::TypingRequest = rpc::decode(&req.message.payload)?;
        let others: Vec<String> =
            if let Some((a, b)) = ids::direct_participants(&input.conversation_id) {
                let peer = match (a == me.user_id, b == me.user_id) {
                    (true, _) => b,
                    (_, true) => a,
                    _ => {
                        return Err(RpcError::forbidden(
                            "not a participant of this conversation",
                        ));
                    }
                };
                self.may_message(&me.user_id, peer).await?;
                vec![peer.to_owned()]
            } else {
                self.may_speak(&me, &input.conversation_id).await?;
                let members = store::current_members(&self.pool, &input.conversation_id)
                    .await
                    .map_err(|e| internal("load members", e))?;
                if members.len() > self.config.typing_max_members as usize {
                    return Ok(pb::Empty {});
                }
                members.into_iter().filter(|m| *m != me.user_id).collect()
            };
        let typing = pb::Typing {
            conversation_id: input.conversation_id,
            user_id: me.user_id,
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
        &self,
        req: &Request,
    ) -> Result<pb::LargeGroupsResponse, RpcError> {
        let me = Identity::from_headers(req.message.headers.as_ref())?;
        let _: pb::LargeGroupsRequest = rpc::decode(&req.message.payload)?;
        let rows = store::large_groups(&self.pool, &me.user_id)
            .await
            .map_err(|e| internal("load large groups", e))?;
        Ok(heads_of(rows))
    }

    /// Internal (edges): the last seq of the given large groups, so an edge
    /// can tell its connections that they missed a live group message.
    pub(super) async fn group_heads(
        &self,
        req: &Request,
    ) -> Result<pb::LargeGroupsResponse, RpcError> {
        Identity::refuse_user(req.message.headers.as_ref())?;
        let input: pb::GroupHeadsRequest = rpc::decode(&req.message.payload)?;
        if input.conversation_ids.len() > MAX_HEADS {
            return Err(RpcError::bad_request(format!(
                "at most {MAX_HEADS} conversations at once"
            )));
        }
        if input
            .conversation_ids
            .iter()
            .any(|c| ids::group_of(c).is_none())
        {
            return Err(RpcError::bad_request("not a group conversation id"));
        }
        let rows = store::heads(&self.pool, &input.conversation_ids)
            .await
            .map_err(|e| internal("load heads", e))?;
        Ok(heads_of(rows))
    }

    /// Delivers one inbox entry to each of `users` (deduplicated per user).
    async fn tell(
        &self,
        users: &[String],
        event: delivery::inbox_entry::Event,
        dedup: &str,
    ) -> Result<(), RpcError> {
        let entry = delivery::InboxEntry { event: Some(event) };
        let mut pending = futures::stream::FuturesUnordered::new();
        for user in users {
            pending.push(self.deliver_to(user.clone(), &entry, format!("{dedup}:{user}")));
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
