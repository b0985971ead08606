//! Bringing a group's conversation in step: each committed change is
//! applied in the messages service in version order (then its event is
//! published); what a failure leaves pending, the sweep applies later.

use super::*;

impl State {
    /// Applies the group's pending changes to its conversation, in order.
    /// A failure leaves them for the next call or the sweep.
    pub(super) async fn sync(&self, group_id: &str) {
        let _one = self.sync[shared::inbox::shard_of(group_id, SYNC_SHARDS)]
            .lock()
            .await;
        let pending = match store::pending_changes(&self.pool, group_id).await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %e, group_id, "cannot load pending changes");
                return;
            }
        };
        for row in pending {
            let change = match decode(&row.change) {
                Some(change) => change,
                None => {
                    tracing::error!(group_id, version = row.version, "undecodable stored change");
                    return;
                }
            };
            let applied = self.caller.call_to::<ConversationApply>(&change).await;
            if let Err(e) = applied {
                tracing::warn!(error = %e, group_id, version = row.version, "change not applied yet");
                return;
            }
            if let Err(e) = store::mark_applied(&self.pool, group_id, row.version).await {
                tracing::warn!(error = %e, group_id, "cannot mark change applied");
                return;
            }
        }
    }

    pub(super) async fn sweep(&self) {
        match store::groups_with_pending(&self.pool, 100).await {
            Ok(groups) => {
                for group in groups {
                    self.sync(&group).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "group sweep failed"),
        }
    }

    pub(super) async fn event(&self, group: &Group, actor: &str, plan: &Plan, version: i64) {
        let (kind, subject) = plan.notice.event();
        let event = pb::GroupEvent {
            group_id: group.id.clone(),
            kind: kind.to_owned(),
            actor_id: actor.to_owned(),
            user_ids: plan.user_ids.clone(),
            group: Some(to_group(group, 0, None)),
            version: version as u64,
            at_ms: ids::now_ms(),
        };
        let dedup = format!("group:{}:{version}", group.id);
        if let Err(e) = shared::nats::publish_event(
            &self.nats.jetstream,
            subject,
            event.encode_to_vec().into(),
            &dedup,
        )
        .await
        {
            tracing::warn!(error = %e, subject, "group event not stored");
        }
    }
}

/// The conversation change that brings the group's conversation in step
/// with `plan`.
pub(super) fn change_of(
    group_id: &str,
    version: i64,
    actor: &str,
    plan: &Plan,
    title: Option<String>,
) -> msg_pb::ConversationChange {
    let mut members: Vec<msg_pb::MemberState> = plan
        .upserts
        .iter()
        .map(|m| msg_pb::MemberState {
            user_id: m.user_id.clone(),
            present: true,
            role: m.role.as_str().to_owned(),
            muted_until_ms: m.muted_until_ms,
        })
        .collect();
    members.extend(plan.removals.iter().map(|user| msg_pb::MemberState {
        user_id: user.clone(),
        present: false,
        role: String::new(),
        muted_until_ms: 0,
    }));
    msg_pb::ConversationChange {
        conversation_id: ids::group_conversation(group_id),
        version: version as u64,
        change_id: ids::new_id(),
        actor_id: actor.to_owned(),
        members,
        muted_all: plan.group.muted_all,
        title,
        dismissed: plan.group.dismissed,
        notice: Some(msg_pb::SystemNotice {
            kind: plan.notice.as_str().to_owned(),
            actor_id: actor.to_owned(),
            user_ids: plan.user_ids.clone(),
            text: plan.text.clone(),
        }),
    }
}

pub(super) fn encode(change: &msg_pb::ConversationChange) -> String {
    base64::engine::general_purpose::STANDARD.encode(change.encode_to_vec())
}

pub(super) fn decode(text: &str) -> Option<msg_pb::ConversationChange> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    msg_pb::ConversationChange::decode(bytes.as_slice()).ok()
}
