//! Read positions and receipts: a member's position moves forward only,
//! and reaches its other devices (and a direct chat's peer) through their
//! inboxes.

use std::sync::Arc;

use shared::RpcError;
use shared::proto::{delivery, message as pb};
use shared::rpc::Identity;

use super::history::named;
use super::{State, to_i64};
use crate::store;

const MAX_READERS_LISTED: usize = 200;

impl State {
    /// Moves the caller's read position forward and tells its devices (and
    /// the peer of a direct chat, whose messages are now read).
    pub(super) async fn read(
        self: Arc<Self>,
        me: Identity,
        input: pb::ReadRequest,
    ) -> Result<pb::ReadResponse, RpcError> {
        let conversation = named(&input.conversation_id)?;
        let window = self.readable(&me, &conversation).await?;
        let state = store::conversation(&self.pool, &conversation)
            .await?
            .ok_or_else(|| RpcError::not_found("no messages in this conversation yet"))?;
        let last = window.last_of(state.last_seq);
        let seq = to_i64(input.seq)?;
        if seq > last {
            return Err(RpcError::bad_request(format!(
                "seq is beyond the last message ({last})"
            )));
        }
        let before = store::read_seq(&self.pool, &conversation, &me.user_id).await?;
        let now = store::mark_read(&self.write, &conversation, &me.user_id, seq)
            .await?
            .ok_or_else(|| RpcError::not_found("no messages in this conversation yet"))?;
        if now > before {
            let position = pb::ReadPosition {
                conversation_id: input.conversation_id.clone(),
                user_id: me.user_id.to_string(),
                read_seq: now as u64,
            };
            let mut told = vec![me.user_id.clone()];
            told.extend(conversation.peer_of(&me.user_id).cloned());
            let entry = delivery::inbox_entry::Event::Read(position);
            let dedup = format!("read:{}:{}:{now}", input.conversation_id, me.user_id);
            self.tell(&told, entry, &dedup).await?;
        }
        let unread = store::unread(
            &self.pool,
            &conversation,
            &me.user_id,
            now.max(window.joined - 1),
            last,
        )
        .await?;
        Ok(pb::ReadResponse {
            read_seq: now as u64,
            unread_count: unread as u64,
        })
    }

    /// How many of the members who could read message `seq` have read it.
    pub(super) async fn reads(
        self: Arc<Self>,
        me: Identity,
        input: pb::ReadsRequest,
    ) -> Result<pb::ReadsResponse, RpcError> {
        let conversation = named(&input.conversation_id)?;
        let window = self.readable(&me, &conversation).await?;
        // Who has read what is the group's present: who left keeps the
        // messages they saw, not the members' reading since.
        if !window.is_current() {
            return Err(RpcError::forbidden(
                "you are no longer a member of this group",
            ));
        }
        let seq = to_i64(input.seq)?;
        let message = store::message_at(&self.pool, &conversation, seq)
            .await?
            .filter(|m| window.contains(m.seq))
            .ok_or_else(|| RpcError::not_found("no such message"))?;
        let positions =
            store::read_positions(&self.pool, &conversation, seq, &message.sender_id).await?;
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
}
