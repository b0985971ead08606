//! Friends: the list with presence, ending a friendship, and the internal
//! questions other services ask (how two users relate, who sees whose
//! presence).

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message as _;
use shared::endpoint::endpoints::PresenceQuery;
use shared::ids::UserId;
use shared::proto::presence as presence_pb;
use shared::proto::social::{self as pb, social_notice};
use shared::rpc::Identity;
use shared::{RpcError, ids, subject};

use super::profiles::to_profile;
use super::{State, page, user_ids};
use crate::store::{self, ProfileRow};

impl State {
    pub(super) async fn list_friends(
        self: Arc<Self>,
        me: Identity,
        input: pb::ListFriendsRequest,
    ) -> Result<pb::ListFriendsResponse, RpcError> {
        let limit = page(input.limit, 200)?;
        if input.after_user_id.len() > 64 {
            return Err(RpcError::bad_request("malformed after_user_id"));
        }
        let mut rows =
            store::friends(&self.pool, &me.user_id, &input.after_user_id, limit + 1).await?;
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let ids: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
        let mut profiles: HashMap<String, ProfileRow> = self
            .profiles(&ids)
            .await?
            .into_iter()
            .map(|p| (p.user_id.clone(), p))
            .collect();
        // Presence is a nice-to-have here: without the presence service the
        // list still comes back, without it.
        let mut presence: HashMap<String, presence_pb::UserPresence> = if ids.is_empty() {
            HashMap::new()
        } else {
            match self
                .caller
                .call_to::<PresenceQuery>(&presence_pb::QueryRequest {
                    user_ids: ids.clone(),
                })
                .await
            {
                Ok(reply) => reply
                    .users
                    .into_iter()
                    .map(|u| (u.user_id.clone(), u))
                    .collect(),
                Err(e) => {
                    tracing::debug!(error = %e, "friend list without presence");
                    HashMap::new()
                }
            }
        };
        let friends = rows
            .into_iter()
            .filter_map(|(id, since)| {
                Some(pb::Friend {
                    profile: Some(to_profile(profiles.remove(&id)?)),
                    since_ms: since,
                    presence: presence.remove(&id),
                })
            })
            .collect();
        Ok(pb::ListFriendsResponse { friends, has_more })
    }

    pub(super) async fn delete_friend(
        self: Arc<Self>,
        me: Identity,
        input: pb::UserRequest,
    ) -> Result<pb::Empty, RpcError> {
        UserId::parse(input.user_id.as_str())?;
        if !store::remove_friendship(&self.pool, &me.user_id, &input.user_id).await? {
            return Err(RpcError::not_found("not your friend"));
        }
        let now = ids::now_ms();
        let event = pb::Friendship {
            user_id: me.user_id.to_string(),
            friend_id: input.user_id.clone(),
            at_ms: now,
        };
        let dedup = format!("fd:{}:{}:{now}", me.user_id, input.user_id);
        self.event(
            subject::event::FRIEND_REMOVED,
            event.encode_to_vec(),
            &dedup,
        )
        .await;
        for (user, other) in [
            (me.user_id.as_str(), input.user_id.as_str()),
            (input.user_id.as_str(), me.user_id.as_str()),
        ] {
            self.notify(
                user,
                social_notice::Kind::FriendRemoved(other.to_owned()),
                &dedup,
            )
            .await?;
        }
        Ok(pb::Empty {})
    }

    pub(super) async fn relation(
        self: Arc<Self>,
        (): (),
        input: pb::RelationRequest,
    ) -> Result<pb::RelationResponse, RpcError> {
        user_ids(&[input.user_id.clone(), input.other_user_id.clone()])?;
        let exists = self.profile(&input.other_user_id).await?.is_some();
        let (friends, blocking, blocked_by) =
            store::relation(&self.pool, &input.user_id, &input.other_user_id).await?;
        Ok(pb::RelationResponse {
            exists,
            friends,
            blocking,
            blocked_by,
        })
    }

    pub(super) async fn audience(
        self: Arc<Self>,
        (): (),
        input: pb::AudienceRequest,
    ) -> Result<pb::AudienceResponse, RpcError> {
        user_ids(std::slice::from_ref(&input.user_id))?;
        let user_ids = store::audience(&self.pool, &input.user_id).await?;
        Ok(pb::AudienceResponse { user_ids })
    }

    pub(super) async fn visible(
        self: Arc<Self>,
        (): (),
        input: pb::VisibleRequest,
    ) -> Result<pb::VisibleResponse, RpcError> {
        user_ids(std::slice::from_ref(&input.viewer_id))?;
        user_ids(&input.user_ids)?;
        let mut visible = store::visible_to(&self.pool, &input.viewer_id, &input.user_ids).await?;
        if input.user_ids.contains(&input.viewer_id) {
            visible.push(input.viewer_id);
        }
        Ok(pb::VisibleResponse { user_ids: visible })
    }
}
