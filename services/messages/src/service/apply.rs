//! Group changes from the groups service: membership, roles, mutes, title
//! and dismissal applied with their system notice at the next seq.

use std::sync::Arc;

use shared::ids::ConversationId;
use shared::proto::message as pb;
use shared::rpc::internal;
use shared::{RpcError, db, ids};

use super::{State, to_i64};
use crate::{store, validate};

impl State {
    /// Applies a group change (from the groups service): membership, roles,
    /// mutes, title, dismissal, and the system notice at the next seq, in one
    /// transaction, then fans the notice out (to removed members too).
    pub(super) async fn apply(
        self: Arc<Self>,
        _: (),
        input: pb::ConversationChange,
    ) -> Result<pb::ConversationChangeAck, RpcError> {
        validate::change(&input)?;
        let version = to_i64(input.version)?;
        let body = serde_json::to_string(&Some(pb::MessageBody {
            kind: Some(pb::message_body::Kind::System(
                input.notice.clone().unwrap_or_default(),
            )),
        }))
        .map_err(|e| internal("encode notice", e))?;
        let id = ids::new_id();
        let client_msg_id = format!("{}{}", validate::SYSTEM_PREFIX, input.change_id);
        let change = store::Change {
            conversation_id: &input.conversation_id,
            version,
            message_id: &id,
            actor_id: &input.actor_id,
            client_msg_id: &client_msg_id,
            members: input
                .members
                .iter()
                .map(|m| {
                    (
                        m.user_id.as_str(),
                        m.present,
                        m.role.as_str(),
                        m.muted_until_ms,
                    )
                })
                .collect(),
            muted_all: input.muted_all,
            title: input.title.as_deref(),
            dismissed: input.dismissed,
            body: &body,
            now_ms: ids::now_ms(),
            large_at: i64::from(self.config.large_group_members),
        };
        let conversation = ConversationId::parse(&input.conversation_id)?;
        let _order = self.order.lock([conversation.as_str()]).await;
        self.fan_out_pending(&conversation).await?;
        match store::apply_change(&self.write, &change).await {
            Ok(store::Applied::Done(row)) => {
                self.fan_out_stored(&row, None).await.map_err(|e| {
                    tracing::warn!(error = %e, message_id = %row.id, "notice fan-out failed; left to the sweep");
                    RpcError::unavailable("change applied but not yet delivered")
                })?;
                Ok(pb::ConversationChangeAck {
                    seq: row.seq as u64,
                })
            }
            Ok(store::Applied::Duplicate) => Ok(pb::ConversationChangeAck { seq: 0 }),
            Ok(store::Applied::Gap(applied)) => Err(RpcError::conflict(format!(
                "version {} of {} is not applied yet",
                applied + 1,
                input.conversation_id
            ))),
            Err(e) if db::is_unique_violation(&e) => {
                Err(RpcError::conflict("change id already used"))
            }
            Err(e) => Err(internal("apply change", e)),
        }
    }
}
