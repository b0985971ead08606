//! Friend requests: asking (with a greeting), crossing requests that become
//! a friendship, accepting and rejecting, and the lists in and out.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message as _;
use shared::proto::social::{self as pb, social_notice};
use shared::rpc::{Identity, internal};
use shared::{RpcError, db, ids, subject};

use super::profiles::to_profile;
use super::{State, page};
use crate::store::{self, RequestRow};

const GREETING_MAX: usize = 200;

impl State {
    pub(super) async fn request_friend(
        self: Arc<Self>,
        me: Identity,
        input: pb::SendFriendRequestRequest,
    ) -> Result<pb::SendFriendRequestResponse, RpcError> {
        let greeting = shared::text::display("greeting", &input.greeting, GREETING_MAX)?;
        let peer = self.other_user(&me, &input.to_user_id).await?;
        let (friends, blocking, blocked_by) =
            store::relation(&self.pool, &me.user_id, &peer.user_id).await?;
        if blocking {
            return Err(RpcError::forbidden(
                "you blocked this user; unblock them first",
            ));
        }
        if blocked_by {
            // Said the same way as any other refusal: the block stays invisible.
            return Err(RpcError::forbidden(
                "this user does not accept your friend request",
            ));
        }
        if friends {
            return Err(RpcError::conflict("you are already friends"));
        }
        let now = ids::now_ms();
        // They asked first: this request answers theirs.
        if let Some(theirs) = store::pending_request(&self.pool, &peer.user_id, &me.user_id).await?
        {
            self.check_friend_limit(&me.user_id, &peer.user_id).await?;
            let accepted = self.make_friends(&theirs, now).await?;
            return Ok(pb::SendFriendRequestResponse {
                request: Some(self.request_view(accepted, &me.user_id).await?),
                became_friends: true,
            });
        }
        let row = match store::pending_request(&self.pool, &me.user_id, &peer.user_id).await? {
            // Asking again renews the request; the recipient hears of it
            // again only after a while.
            Some(mut mine) => {
                let interval_ms = secs_to_ms(self.config.request_notice_interval_secs);
                let notify = now - mine.updated_at_ms >= interval_ms;
                let notified = notify.then_some(now);
                store::renew_request(&self.pool, &mine.id, greeting, notified).await?;
                mine.greeting = greeting.to_owned();
                if !notify {
                    return Ok(pb::SendFriendRequestResponse {
                        request: Some(self.request_view(mine, &me.user_id).await?),
                        became_friends: false,
                    });
                }
                mine.updated_at_ms = now;
                mine
            }
            None => {
                self.rejected_lately(&me.user_id, &peer.user_id, now)
                    .await?;
                let row = RequestRow {
                    id: ids::new_id(),
                    from_user_id: me.user_id.to_string(),
                    to_user_id: peer.user_id.clone(),
                    greeting: greeting.to_owned(),
                    status: store::PENDING.into(),
                    created_at_ms: now,
                    updated_at_ms: now,
                };
                match store::insert_request(&self.pool, &row).await {
                    Ok(()) => row,
                    Err(e) if db::is_unique_violation(&e) => {
                        return Err(RpcError::conflict(
                            "a request to this user is being sent; retry",
                        ));
                    }
                    Err(e) => return Err(internal("store request", e)),
                }
            }
        };
        // The recipient sees the request with the sender's profile.
        let received = self.request_view(row.clone(), &peer.user_id).await?;
        self.event(
            subject::event::FRIEND_REQUESTED,
            received.encode_to_vec(),
            &format!("fr:{}:{now}", row.id),
        )
        .await;
        self.notify(
            &peer.user_id,
            social_notice::Kind::RequestReceived(received),
            &format!("fr:{}:{now}", row.id),
        )
        .await?;
        Ok(pb::SendFriendRequestResponse {
            request: Some(self.request_view(row, &me.user_id).await?),
            became_friends: false,
        })
    }

    /// Refuses a new request to someone who rejected the last one, for
    /// `social.request_after_rejection_secs`.
    async fn rejected_lately(&self, me: &str, peer: &str, now: i64) -> Result<(), RpcError> {
        let Some(at) = store::last_rejection(&self.pool, me, peer).await? else {
            return Ok(());
        };
        let until = at + secs_to_ms(self.config.request_after_rejection_secs);
        if now >= until {
            return Ok(());
        }
        Err(RpcError::rate_limited(
            "this user declined your last request; ask again later",
            std::time::Duration::from_millis((until - now) as u64),
        ))
    }

    pub(super) async fn check_friend_limit(&self, a: &str, b: &str) -> Result<(), RpcError> {
        for user in [a, b] {
            let count = store::friend_count(&self.pool, user).await?;
            if count >= i64::from(self.config.max_friends) {
                return Err(RpcError::conflict(format!(
                    "a user may have at most {} friends",
                    self.config.max_friends
                )));
            }
        }
        Ok(())
    }

    /// Accepts `request` and tells both users (and the event stream).
    pub(super) async fn make_friends(
        &self,
        request: &RequestRow,
        now: i64,
    ) -> Result<RequestRow, RpcError> {
        if !store::accept_request(&self.pool, request, now).await? {
            return Err(RpcError::conflict("the request was already answered"));
        }
        let (from, to) = (&request.from_user_id, &request.to_user_id);
        let event = pb::Friendship {
            user_id: to.clone(),
            friend_id: from.clone(),
            at_ms: now,
        };
        self.event(
            subject::event::FRIEND_ADDED,
            event.encode_to_vec(),
            &format!("fa:{}", request.id),
        )
        .await;
        let profiles = self.profiles(&[from.clone(), to.clone()]).await?;
        for (user, friend) in [(from, to), (to, from)] {
            if let Some(profile) = profiles.iter().find(|p| p.user_id == *friend) {
                self.notify(
                    user,
                    social_notice::Kind::FriendAdded(to_profile(profile.clone())),
                    &format!("fa:{}", request.id),
                )
                .await?;
            }
        }
        Ok(RequestRow {
            status: store::ACCEPTED.into(),
            updated_at_ms: now,
            ..request.clone()
        })
    }

    /// A request as `viewer` sees it: with the other side's profile.
    pub(super) async fn request_view(
        &self,
        row: RequestRow,
        viewer: &str,
    ) -> Result<pb::FriendRequest, RpcError> {
        let peer_id = if row.from_user_id == viewer {
            &row.to_user_id
        } else {
            &row.from_user_id
        };
        let peer = self.profile(peer_id).await?.map(to_profile);
        Ok(to_request(row, peer))
    }

    pub(super) async fn list_requests(
        self: Arc<Self>,
        me: Identity,
        input: pb::ListFriendRequestsRequest,
    ) -> Result<pb::ListFriendRequestsResponse, RpcError> {
        let incoming = match input.direction.as_str() {
            "" | "incoming" => true,
            "outgoing" => false,
            _ => {
                return Err(RpcError::bad_request(
                    "direction must be incoming or outgoing",
                ));
            }
        };
        let limit = page(input.limit, 50)?;
        let before = if input.before_ms > 0 {
            input.before_ms
        } else {
            i64::MAX
        };
        let mut rows = store::requests(
            &self.pool,
            &me.user_id,
            incoming,
            input.include_answered,
            before,
            limit + 1,
        )
        .await?;
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let peer_ids: Vec<String> = rows
            .iter()
            .map(|r| {
                if incoming {
                    r.from_user_id.clone()
                } else {
                    r.to_user_id.clone()
                }
            })
            .collect();
        let profiles: HashMap<String, pb::Profile> = self
            .profiles(&peer_ids)
            .await?
            .into_iter()
            .map(|p| (p.user_id.clone(), to_profile(p)))
            .collect();
        let requests = rows
            .into_iter()
            .zip(peer_ids)
            .map(|(row, peer)| {
                let profile = profiles.get(&peer).cloned();
                to_request(row, profile)
            })
            .collect();
        Ok(pb::ListFriendRequestsResponse { requests, has_more })
    }

    /// The recipient's pending request `id` (not found for anyone else).
    pub(super) async fn my_request(&self, me: &Identity, id: &str) -> Result<RequestRow, RpcError> {
        if id.is_empty() || id.len() > 64 {
            return Err(RpcError::bad_request("malformed request id"));
        }
        let row = store::request(&self.pool, id)
            .await?
            .filter(|r| r.to_user_id == me.user_id)
            .ok_or_else(|| RpcError::not_found("no such friend request"))?;
        if row.status != store::PENDING {
            return Err(RpcError::conflict(format!(
                "the request was already {}",
                row.status
            )));
        }
        Ok(row)
    }

    pub(super) async fn accept(
        self: Arc<Self>,
        me: Identity,
        input: pb::AnswerFriendRequestRequest,
    ) -> Result<pb::AnswerFriendRequestResponse, RpcError> {
        let row = self.my_request(&me, &input.request_id).await?;
        let (_, _, blocked_by) =
            store::relation(&self.pool, &me.user_id, &row.from_user_id).await?;
        if blocked_by {
            return Err(RpcError::forbidden(
                "this user does not accept your friend request",
            ));
        }
        self.check_friend_limit(&row.from_user_id, &row.to_user_id)
            .await?;
        let accepted = self.make_friends(&row, ids::now_ms()).await?;
        Ok(pb::AnswerFriendRequestResponse {
            request: Some(self.request_view(accepted, &me.user_id).await?),
        })
    }

    pub(super) async fn reject(
        self: Arc<Self>,
        me: Identity,
        input: pb::AnswerFriendRequestRequest,
    ) -> Result<pb::AnswerFriendRequestResponse, RpcError> {
        let row = self.my_request(&me, &input.request_id).await?;
        let now = ids::now_ms();
        if !store::reject_request(&self.pool, &row.id, now).await? {
            return Err(RpcError::conflict("the request was already answered"));
        }
        let rejected = RequestRow {
            status: store::REJECTED.into(),
            updated_at_ms: now,
            ..row
        };
        Ok(pb::AnswerFriendRequestResponse {
            request: Some(self.request_view(rejected, &me.user_id).await?),
        })
    }
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

pub(super) fn to_request(row: RequestRow, peer: Option<pb::Profile>) -> pb::FriendRequest {
    pb::FriendRequest {
        id: row.id,
        from_user_id: row.from_user_id,
        to_user_id: row.to_user_id,
        greeting: row.greeting,
        status: row.status,
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
        peer,
    }
}
