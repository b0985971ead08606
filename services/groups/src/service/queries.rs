//! What members read: a group, the caller's groups, a page of members.

use super::*;

impl State {
    pub(super) async fn get(
        self: Arc<Self>,
        me: Identity,
        input: pb::GroupRequest,
    ) -> Result<pb::Group, RpcError> {
        let group = self.readable(&me, &input.group_id).await?;
        self.view(group, &me.user_id).await
    }

    pub(super) async fn mine(
        self: Arc<Self>,
        me: Identity,
        _: pb::MyGroupsRequest,
    ) -> Result<pb::MyGroupsResponse, RpcError> {
        let ids = store::groups_of(&self.pool, &me.user_id, 1000).await?;
        let mut groups = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(group) = store::group(&self.pool, &id).await? {
                groups.push(self.view(group, &me.user_id).await?);
            }
        }
        Ok(pb::MyGroupsResponse { groups })
    }

    pub(super) async fn members(
        self: Arc<Self>,
        me: Identity,
        input: pb::ListMembersRequest,
    ) -> Result<pb::ListMembersResponse, RpcError> {
        self.readable(&me, &input.group_id).await?;
        let limit = match input.limit {
            0 => 200,
            1..=500 => i64::from(input.limit),
            _ => return Err(RpcError::bad_request("limit must be within 1..=500")),
        };
        if input.after_user_id.len() > 64 {
            return Err(RpcError::bad_request("malformed after_user_id"));
        }
        let mut members =
            store::members_page(&self.pool, &input.group_id, &input.after_user_id, limit + 1)
                .await?;
        let has_more = members.len() as i64 > limit;
        members.truncate(limit as usize);
        Ok(pb::ListMembersResponse {
            members: members.iter().map(to_member).collect(),
            has_more,
        })
    }
}
