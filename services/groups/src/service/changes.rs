//! What members change: invitations, removals, leaving, roles, ownership,
//! name and announcement, mutes and dismissal. Each is a [`crate::plan`]
//! (the rules) committed by [`State::change`], then synced.

use super::*;

impl State {
    pub(super) async fn invite(
        self: Arc<Self>,
        me: Identity,
        input: pb::MembersRequest,
    ) -> Result<pb::Group, RpcError> {
        user_ids(&input.user_ids, MAX_USERS_PER_CALL)?;
        if input.user_ids.is_empty() {
            return Err(RpcError::bad_request("name at least one user"));
        }
        // Cheap refusals first: a non-member or a plain member learns
        // nothing about the invited users.
        let group = self.readable(&me, &input.group_id).await?;
        let mine = store::members_of(&self.pool, &group.id, &[me.user_id.to_string()]).await?;
        if mine
            .get(me.user_id.as_str())
            .is_some_and(|m| m.role == Role::Member)
        {
            return Err(RpcError::forbidden("only the owner and admins may do this"));
        }
        let current = store::members_of(&self.pool, &group.id, &input.user_ids).await?;
        let new: Vec<String> = input
            .user_ids
            .iter()
            .filter(|u| !current.contains_key(*u))
            .cloned()
            .collect();
        self.may_add(&me.user_id, &new).await?;
        let (group, _) = self
            .change(&me, &input.group_id, Op::Invite(input.user_ids))
            .await?;
        self.view(group, &me.user_id).await
    }

    pub(super) async fn remove(
        self: Arc<Self>,
        me: Identity,
        input: pb::MembersRequest,
    ) -> Result<pb::Group, RpcError> {
        user_ids(&input.user_ids, MAX_USERS_PER_CALL)?;
        let (group, _) = self
            .change(&me, &input.group_id, Op::Remove(input.user_ids))
            .await?;
        self.view(group, &me.user_id).await
    }

    pub(super) async fn leave(
        self: Arc<Self>,
        me: Identity,
        input: pb::GroupRequest,
    ) -> Result<pb::Empty, RpcError> {
        self.change(&me, &input.group_id, Op::Leave).await?;
        Ok(pb::Empty {})
    }

    pub(super) async fn set_role(
        self: Arc<Self>,
        me: Identity,
        input: pb::SetRoleRequest,
    ) -> Result<pb::Group, RpcError> {
        user_ids(std::slice::from_ref(&input.user_id), 1)?;
        let role = Role::parse(&input.role)
            .filter(|r| *r != Role::Owner)
            .ok_or_else(|| RpcError::bad_request("role must be admin or member"))?;
        let op = Op::SetRole {
            user: input.user_id,
            role,
        };
        let (group, _) = self.change(&me, &input.group_id, op).await?;
        self.view(group, &me.user_id).await
    }

    pub(super) async fn transfer(
        self: Arc<Self>,
        me: Identity,
        input: pb::TransferRequest,
    ) -> Result<pb::Group, RpcError> {
        user_ids(std::slice::from_ref(&input.user_id), 1)?;
        let (group, _) = self
            .change(&me, &input.group_id, Op::Transfer(input.user_id))
            .await?;
        self.view(group, &me.user_id).await
    }

    pub(super) async fn update(
        self: Arc<Self>,
        me: Identity,
        input: pb::UpdateGroupRequest,
    ) -> Result<pb::Group, RpcError> {
        let op = Op::Update {
            name: input.name,
            description: input.description,
            announcement: input.announcement,
        };
        let (group, _) = self.change(&me, &input.group_id, op).await?;
        self.view(group, &me.user_id).await
    }

    pub(super) async fn mute(
        self: Arc<Self>,
        me: Identity,
        input: pb::MuteRequest,
    ) -> Result<pb::Group, RpcError> {
        if input.duration_secs > MAX_MUTE_SECS {
            return Err(RpcError::bad_request(
                "duration_secs must be at most a year",
            ));
        }
        let user = if input.user_id.is_empty() {
            None
        } else {
            user_ids(std::slice::from_ref(&input.user_id), 1)?;
            Some(input.user_id)
        };
        let until_ms = match (input.muted, input.duration_secs) {
            (false, _) => 0,
            (true, 0) => i64::MAX,
            (true, secs) => ids::now_ms() + secs as i64 * 1000,
        };
        let (group, _) = self
            .change(&me, &input.group_id, Op::Mute { user, until_ms })
            .await?;
        self.view(group, &me.user_id).await
    }

    pub(super) async fn dismiss(
        self: Arc<Self>,
        me: Identity,
        input: pb::GroupRequest,
    ) -> Result<pb::Empty, RpcError> {
        self.change(&me, &input.group_id, Op::Dismiss).await?;
        Ok(pb::Empty {})
    }
}
