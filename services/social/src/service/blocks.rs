//! Blocks: a block rejects the blocked user's pending requests; blocking
//! and unblocking are events that the messages service's relation cache
//! follows.

use std::sync::Arc;

use prost::Message as _;
use shared::ids::UserId;
use shared::proto::social as pb;
use shared::rpc::Identity;
use shared::{RpcError, ids, subject};

use super::State;
use crate::store;

impl State {
    /// Blocks a user: their pending requests to the caller are rejected, and
    /// they can no longer message or ask the caller (and are not told why).
    pub(super) async fn block_user(
        self: Arc<Self>,
        me: Identity,
        input: pb::UserRequest,
    ) -> Result<pb::Empty, RpcError> {
        let other = self.other_user(&me, &input.user_id).await?;
        let now = ids::now_ms();
        let added = store::add_block(&self.pool, &me.user_id, &other.user_id, now).await?;
        store::reject_pending_from(&self.pool, &other.user_id, &me.user_id, now).await?;
        if added {
            self.block_event(subject::event::BLOCK_ADDED, &me, &other.user_id, now)
                .await;
        }
        Ok(pb::Empty {})
    }

    /// Unblocks a user (unblocking one who is not blocked changes nothing).
    pub(super) async fn unblock_user(
        self: Arc<Self>,
        me: Identity,
        input: pb::UserRequest,
    ) -> Result<pb::Empty, RpcError> {
        UserId::parse(input.user_id.as_str())?;
        let now = ids::now_ms();
        if store::remove_block(&self.pool, &me.user_id, &input.user_id).await? {
            self.block_event(subject::event::BLOCK_REMOVED, &me, &input.user_id, now)
                .await;
        }
        Ok(pb::Empty {})
    }

    pub(super) async fn list_blocked(
        self: Arc<Self>,
        me: Identity,
        _: pb::Empty,
    ) -> Result<pb::ListBlockedResponse, RpcError> {
        let ids = store::blocked(&self.pool, &me.user_id, 1000).await?;
        let users = self.public_profiles(&ids).await?;
        Ok(pb::ListBlockedResponse { users })
    }

    /// `block.added` or `block.removed`.
    async fn block_event(&self, subject: &'static str, me: &Identity, other: &str, now: i64) {
        let event = pb::Block {
            user_id: me.user_id.to_string(),
            blocked_user_id: other.to_owned(),
            at_ms: now,
        };
        let dedup = format!("{subject}:{}:{other}:{now}", me.user_id);
        self.event(subject, event.encode_to_vec(), &dedup).await;
    }
}
