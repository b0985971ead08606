//! The social service's NATS micro endpoints (`im.v1.profile.*`,
//! `im.v1.user.search`, `im.v1.friend.*`, `im.v1.block.*`) and the consumer
//! of `im.evt.v1.user.registered` that creates profiles.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures::StreamExt;
use prost::Message as _;
use shared::db::{self, AnyPool};
use shared::endpoint::Server;
use shared::endpoint::endpoints::{AuthLookup, AuthPhone, PresenceQuery};
use shared::endpoint::endpoints::{
    BlockAdd, BlockList, BlockRemove, FriendAccept, FriendAsk, FriendAudience, FriendDelete,
    FriendList, FriendReject, FriendRelation, FriendRequests, FriendVisible, ProfileGet,
    ProfileUpdate, UserSearch,
};
use shared::inbox::Inboxes;
use shared::proto::social::{self as pb, social_notice};
use shared::proto::{auth as auth_pb, delivery, presence as presence_pb};
use shared::rpc::{Caller, Identity, internal};
use shared::{Nats, RpcError, ids, subject};
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::store::{self, ProfileRow, RequestRow};

const MAX_IDS: usize = 200;
const NICKNAME_MAX: usize = 64;
const SIGNATURE_MAX: usize = 200;
const GREETING_MAX: usize = 200;
const QUERY_MAX: usize = 64;
const AVATAR_MAX: usize = 128;
/// The durable consumer (one for all instances) that creates profiles.
const CONSUMER: &str = "natter-social";

#[derive(Debug, thiserror::Error)]
pub enum SocialError {
    #[error(transparent)]
    Config(#[from] shared::config::ConfigError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Nats(#[from] shared::nats::NatsError),
    #[error("nats service: {0}")]
    Service(String),
}

impl From<async_nats::Error> for SocialError {
    fn from(e: async_nats::Error) -> Self {
        Self::Service(e.to_string())
    }
}

struct State {
    config: Config,
    pool: AnyPool,
    nats: Nats,
    caller: Caller,
    inboxes: Inboxes,
}

/// Runs the social service until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    nats: Nats,
    shutdown: CancellationToken,
) -> Result<(), SocialError> {
    config.validate()?;
    let pool = db::connect(&config.database_url, 8, &store::MIGRATOR).await?;
    let inbox = shared::nats::inbox_stream(&nats.jetstream, &config.streams).await?;
    let events = shared::nats::events_stream(&nats.jetstream, &config.streams).await?;
    let state = Arc::new(State {
        inboxes: Inboxes::new(nats.client.clone(), nats.jetstream.clone(), inbox),
        caller: nats.caller(),
        nats: nats.clone(),
        config,
        pool,
    });

    let mut server = Server::start(
        &nats.client,
        "natter-social",
        "natter profiles, friends and blocks",
        state.clone(),
        shutdown.clone(),
    )
    .await?;
    server
        .serve::<ProfileGet, _, _>(64, State::get_profiles)
        .await?;
    server
        .serve::<ProfileUpdate, _, _>(16, State::update_profile)
        .await?;
    server.serve::<UserSearch, _, _>(32, State::search).await?;
    server
        .serve::<FriendAsk, _, _>(32, State::request_friend)
        .await?;
    server
        .serve::<FriendRequests, _, _>(32, State::list_requests)
        .await?;
    server
        .serve::<FriendAccept, _, _>(32, State::accept)
        .await?;
    server
        .serve::<FriendReject, _, _>(32, State::reject)
        .await?;
    server
        .serve::<FriendList, _, _>(32, State::list_friends)
        .await?;
    server
        .serve::<FriendDelete, _, _>(32, State::delete_friend)
        .await?;
    server
        .serve::<FriendRelation, _, _>(256, State::relation)
        .await?;
    server
        .serve::<FriendAudience, _, _>(64, State::audience)
        .await?;
    server
        .serve::<FriendVisible, _, _>(64, State::visible)
        .await?;
    server
        .serve::<BlockAdd, _, _>(16, State::block_user)
        .await?;
    server
        .serve::<BlockRemove, _, _>(16, State::unblock_user)
        .await?;
    server
        .serve::<BlockList, _, _>(16, State::list_blocked)
        .await?;
    tracing::info!("social service ready");
    let registrations = consume_registrations(state.clone(), events, shutdown.clone());
    tokio::join!(server.run(), registrations);
    tracing::info!("social service stopped");
    Ok(())
}

/// Creates a profile for every registered user, from the event stream. A
/// profile asked for before its event arrives is created from the auth
/// service's lookup instead (see [`State::profiles`]).
async fn consume_registrations(
    state: Arc<State>,
    events: async_nats::jetstream::stream::Stream,
    shutdown: CancellationToken,
) {
    loop {
        let consumer = events
            .get_or_create_consumer(
                CONSUMER,
                pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    description: Some("natter social: profiles of new users".into()),
                    filter_subject: subject::event::USER_REGISTERED.into(),
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await;
        let mut messages = match consumer {
            Ok(consumer) => match consumer.messages().await {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::warn!(error = %e, "registration consumer: cannot pull");
                    if pause(&shutdown).await {
                        return;
                    }
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "registration consumer: cannot create");
                if pause(&shutdown).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    match auth_pb::UserRegistered::decode(message.payload.as_ref()) {
                        Ok(event) => {
                            let created = store::create_profile(
                                &state.pool,
                                &event.user_id,
                                &event.username,
                                &event.nickname,
                                event.created_at_ms,
                            )
                            .await;
                            if let Err(e) = created {
                                // Not acked: redelivered after the ack wait.
                                tracing::warn!(error = %e, "cannot create profile");
                                continue;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable user.registered skipped"),
                    }
                    if let Err(e) = message.ack().await {
                        tracing::debug!(error = %e, "registration ack failed");
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "registration consumer error"),
                None => break,
            }
        }
    }
}

/// Waits a second; true when shutting down.
async fn pause(shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(Duration::from_secs(1)) => false,
    }
}

impl State {
    /// The profiles of `ids` that exist, in the order asked, creating the
    /// ones whose registration event has not arrived yet.
    async fn profiles(&self, ids: &[String]) -> Result<Vec<ProfileRow>, RpcError> {
        let mut found: HashMap<String, ProfileRow> = store::profiles(&self.pool, ids)
            .await
            .map_err(|e| internal("load profiles", e))?
            .into_iter()
            .map(|p| (p.user_id.clone(), p))
            .collect();
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !found.contains_key(*id) && subject::is_valid_token(id))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let reply = self
                .caller
                .call_to::<AuthLookup>(&auth_pb::LookupRequest {
                    user_ids: missing.clone(),
                })
                .await?;
            for account in &reply.accounts {
                store::create_profile(
                    &self.pool,
                    &account.user_id,
                    &account.username,
                    &account.nickname,
                    account.created_at_ms,
                )
                .await
                .map_err(|e| internal("create profile", e))?;
            }
            if !reply.accounts.is_empty() {
                for p in store::profiles(&self.pool, &missing)
                    .await
                    .map_err(|e| internal("load profiles", e))?
                {
                    found.insert(p.user_id.clone(), p);
                }
            }
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    async fn profile(&self, id: &str) -> Result<Option<ProfileRow>, RpcError> {
        Ok(self.profiles(&[id.to_owned()]).await?.pop())
    }

    /// The other user of a call: a well-formed id other than the caller's,
    /// of an existing user.
    async fn other_user(&self, me: &Identity, id: &str) -> Result<ProfileRow, RpcError> {
        if !subject::is_valid_token(id) {
            return Err(RpcError::bad_request("malformed user id"));
        }
        if id == me.user_id {
            return Err(RpcError::bad_request("that is yourself"));
        }
        self.profile(id)
            .await?
            .ok_or_else(|| RpcError::not_found("no such user"))
    }

    async fn get_profiles(
        self: Arc<Self>,
        me: Identity,
        input: pb::GetProfilesRequest,
    ) -> Result<pb::GetProfilesResponse, RpcError> {
        let ids = if input.user_ids.is_empty() {
            vec![me.user_id]
        } else {
            input.user_ids
        };
        user_ids(&ids)?;
        let profiles = self.profiles(&ids).await?;
        Ok(pb::GetProfilesResponse {
            profiles: profiles.into_iter().map(to_profile).collect(),
        })
    }

    async fn update_profile(
        self: Arc<Self>,
        me: Identity,
        input: pb::UpdateProfileRequest,
    ) -> Result<pb::Profile, RpcError> {
        let current = self
            .profile(&me.user_id)
            .await?
            .ok_or_else(|| RpcError::not_found("no such user"))?;
        let nickname = match input.nickname.as_deref() {
            None => None,
            Some(n) => match shared::text::display("nickname", n, NICKNAME_MAX)? {
                "" => Some(current.username.as_str()),
                n => Some(n),
            },
        };
        let signature = input
            .signature
            .as_deref()
            .map(|s| shared::text::display("signature", s, SIGNATURE_MAX))
            .transpose()?;
        let avatar = input.avatar.as_deref().map(str::trim);
        if let Some(avatar) = avatar
            && !avatar.is_empty()
            && (avatar.len() > AVATAR_MAX
                || !avatar
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)))
        {
            return Err(RpcError::bad_request("avatar must be a file id"));
        }
        let update = store::ProfileUpdate {
            nickname,
            signature,
            avatar,
        };
        let now = ids::now_ms();
        store::update_profile(&self.pool, &me.user_id, &update, now)
            .await
            .map_err(|e| internal("update profile", e))?;
        let profile = self
            .profile(&me.user_id)
            .await?
            .map(to_profile)
            .ok_or_else(|| RpcError::not_found("no such user"))?;
        self.event(
            subject::event::PROFILE_UPDATED,
            profile.encode_to_vec(),
            &format!("profile:{}:{now}", me.user_id),
        )
        .await;
        Ok(profile)
    }

    async fn search(
        self: Arc<Self>,
        me: Identity,
        input: pb::SearchRequest,
    ) -> Result<pb::SearchResponse, RpcError> {
        let query = input.query.trim();
        if query.is_empty()
            || query.chars().count() > QUERY_MAX
            || query.chars().any(char::is_control)
        {
            return Err(RpcError::bad_request(format!(
                "query must be 1-{QUERY_MAX} characters"
            )));
        }
        let limit = match input.limit {
            0 => 20,
            1..=50 => input.limit as i64,
            _ => return Err(RpcError::bad_request("limit must be within 1..=50")),
        };
        if input.cursor.len() > 200 {
            return Err(RpcError::bad_request("malformed cursor"));
        }
        // A phone number finds exactly its account and nothing else.
        if let Some(phone) = shared::text::phone(query) {
            let reply = self
                .caller
                .call_to::<AuthPhone>(&auth_pb::PhoneLookupRequest { phone })
                .await?;
            let ids: Vec<String> = reply
                .account
                .map(|a| a.user_id)
                .filter(|id| *id != me.user_id && input.cursor.is_empty())
                .into_iter()
                .collect();
            let users = self
                .profiles(&ids)
                .await?
                .into_iter()
                .map(to_profile)
                .collect();
            return Ok(pb::SearchResponse {
                users,
                next_cursor: String::new(),
            });
        }
        let mut rows = store::search(&self.pool, &me.user_id, query, &input.cursor, limit + 1)
            .await
            .map_err(|e| internal("search", e))?;
        let next_cursor = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last()
                .map(|p| shared::text::fold(&p.username))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::SearchResponse {
            users: rows.into_iter().map(to_profile).collect(),
            next_cursor,
        })
    }

    async fn request_friend(
        self: Arc<Self>,
        me: Identity,
        input: pb::SendFriendRequestRequest,
    ) -> Result<pb::SendFriendRequestResponse, RpcError> {
        let greeting = shared::text::display("greeting", &input.greeting, GREETING_MAX)?;
        let peer = self.other_user(&me, &input.to_user_id).await?;
        let (friends, blocking, blocked_by) =
            store::relation(&self.pool, &me.user_id, &peer.user_id)
                .await
                .map_err(|e| internal("load relation", e))?;
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
        if let Some(theirs) = store::pending_request(&self.pool, &peer.user_id, &me.user_id)
            .await
            .map_err(|e| internal("load request", e))?
        {
            self.check_friend_limit(&me.user_id, &peer.user_id).await?;
            let accepted = self.make_friends(&theirs, now).await?;
            return Ok(pb::SendFriendRequestResponse {
                request: Some(self.request_view(accepted, &me.user_id).await?),
                became_friends: true,
            });
        }
        let row = match store::pending_request(&self.pool, &me.user_id, &peer.user_id)
            .await
            .map_err(|e| internal("load request", e))?
        {
            Some(mut mine) => {
                store::renew_request(&self.pool, &mine.id, greeting, now)
                    .await
                    .map_err(|e| internal("renew request", e))?;
                mine.greeting = greeting.to_owned();
                mine.updated_at_ms = now;
                mine
            }
            None => {
                let row = RequestRow {
                    id: ids::new_id(),
                    from_user_id: me.user_id.clone(),
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

    async fn check_friend_limit(&self, a: &str, b: &str) -> Result<(), RpcError> {
        for user in [a, b] {
            let count = store::friend_count(&self.pool, user)
                .await
                .map_err(|e| internal("count friends", e))?;
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
    async fn make_friends(&self, request: &RequestRow, now: i64) -> Result<RequestRow, RpcError> {
        if !store::accept_request(&self.pool, request, now)
            .await
            .map_err(|e| internal("accept request", e))?
        {
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
    async fn request_view(
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

    async fn list_requests(
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
        .await
        .map_err(|e| internal("load requests", e))?;
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
    async fn my_request(&self, me: &Identity, id: &str) -> Result<RequestRow, RpcError> {
        if id.is_empty() || id.len() > 64 {
            return Err(RpcError::bad_request("malformed request id"));
        }
        let row = store::request(&self.pool, id)
            .await
            .map_err(|e| internal("load request", e))?
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

    async fn accept(
        self: Arc<Self>,
        me: Identity,
        input: pb::AnswerFriendRequestRequest,
    ) -> Result<pb::AnswerFriendRequestResponse, RpcError> {
        let row = self.my_request(&me, &input.request_id).await?;
        let (_, _, blocked_by) = store::relation(&self.pool, &me.user_id, &row.from_user_id)
            .await
            .map_err(|e| internal("load relation", e))?;
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

    async fn reject(
        self: Arc<Self>,
        me: Identity,
        input: pb::AnswerFriendRequestRequest,
    ) -> Result<pb::AnswerFriendRequestResponse, RpcError> {
        let row = self.my_request(&me, &input.request_id).await?;
        let now = ids::now_ms();
        if !store::reject_request(&self.pool, &row.id, now)
            .await
            .map_err(|e| internal("reject request", e))?
        {
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

    async fn list_friends(
        self: Arc<Self>,
        me: Identity,
        input: pb::ListFriendsRequest,
    ) -> Result<pb::ListFriendsResponse, RpcError> {
        let limit = page(input.limit, 200)?;
        if input.after_user_id.len() > 64 {
            return Err(RpcError::bad_request("malformed after_user_id"));
        }
        let mut rows = store::friends(&self.pool, &me.user_id, &input.after_user_id, limit + 1)
            .await
            .map_err(|e| internal("load friends", e))?;
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

    async fn delete_friend(
        self: Arc<Self>,
        me: Identity,
        input: pb::UserRequest,
    ) -> Result<pb::Empty, RpcError> {
        if !subject::is_valid_token(&input.user_id) {
            return Err(RpcError::bad_request("malformed user id"));
        }
        if !store::remove_friendship(&self.pool, &me.user_id, &input.user_id)
            .await
            .map_err(|e| internal("remove friend", e))?
        {
            return Err(RpcError::not_found("not your friend"));
        }
        let now = ids::now_ms();
        let event = pb::Friendship {
            user_id: me.user_id.clone(),
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
        for (user, other) in [(&me.user_id, &input.user_id), (&input.user_id, &me.user_id)] {
            self.notify(
                user,
                social_notice::Kind::FriendRemoved(other.clone()),
                &dedup,
            )
            .await?;
        }
        Ok(pb::Empty {})
    }

    async fn block_user(
        self: Arc<Self>,
        me: Identity,
        input: pb::UserRequest,
    ) -> Result<pb::Empty, RpcError> {
        let other = self.other_user(&me, &input.user_id).await?;
        let now = ids::now_ms();
        let added = store::add_block(&self.pool, &me.user_id, &other.user_id, now)
            .await
            .map_err(|e| internal("block", e))?;
        store::reject_pending_from(&self.pool, &other.user_id, &me.user_id, now)
            .await
            .map_err(|e| internal("reject requests", e))?;
        if added {
            let event = pb::Block {
                user_id: me.user_id.clone(),
                blocked_user_id: other.user_id.clone(),
                at_ms: now,
            };
            self.event(
                subject::event::BLOCK_ADDED,
                event.encode_to_vec(),
                &format!("ba:{}:{}:{now}", me.user_id, other.user_id),
            )
            .await;
        }
        Ok(pb::Empty {})
    }

    async fn unblock_user(
        self: Arc<Self>,
        me: Identity,
        input: pb::UserRequest,
    ) -> Result<pb::Empty, RpcError> {
        if !subject::is_valid_token(&input.user_id) {
            return Err(RpcError::bad_request("malformed user id"));
        }
        let now = ids::now_ms();
        if store::remove_block(&self.pool, &me.user_id, &input.user_id)
            .await
            .map_err(|e| internal("unblock", e))?
        {
            let event = pb::Block {
                user_id: me.user_id.clone(),
                blocked_user_id: input.user_id.clone(),
                at_ms: now,
            };
            self.event(
                subject::event::BLOCK_REMOVED,
                event.encode_to_vec(),
                &format!("br:{}:{}:{now}", me.user_id, input.user_id),
            )
            .await;
        }
        Ok(pb::Empty {})
    }

    async fn list_blocked(
        self: Arc<Self>,
        me: Identity,
        _: pb::Empty,
    ) -> Result<pb::ListBlockedResponse, RpcError> {
        let ids = store::blocked(&self.pool, &me.user_id, 1000)
            .await
            .map_err(|e| internal("load blocks", e))?;
        let users = self
            .profiles(&ids)
            .await?
            .into_iter()
            .map(to_profile)
            .collect();
        Ok(pb::ListBlockedResponse { users })
    }

    async fn relation(
        self: Arc<Self>,
        (): (),
        input: pb::RelationRequest,
    ) -> Result<pb::RelationResponse, RpcError> {
        user_ids(&[input.user_id.clone(), input.other_user_id.clone()])?;
        let exists = self.profile(&input.other_user_id).await?.is_some();
        let (friends, blocking, blocked_by) =
            store::relation(&self.pool, &input.user_id, &input.other_user_id)
                .await
                .map_err(|e| internal("load relation", e))?;
        Ok(pb::RelationResponse {
            exists,
            friends,
            blocking,
            blocked_by,
        })
    }

    async fn audience(
        self: Arc<Self>,
        (): (),
        input: pb::AudienceRequest,
    ) -> Result<pb::AudienceResponse, RpcError> {
        user_ids(std::slice::from_ref(&input.user_id))?;
        let user_ids = store::audience(&self.pool, &input.user_id)
            .await
            .map_err(|e| internal("load audience", e))?;
        Ok(pb::AudienceResponse { user_ids })
    }

    async fn visible(
        self: Arc<Self>,
        (): (),
        input: pb::VisibleRequest,
    ) -> Result<pb::VisibleResponse, RpcError> {
        user_ids(std::slice::from_ref(&input.viewer_id))?;
        user_ids(&input.user_ids)?;
        let mut visible = store::visible_to(&self.pool, &input.viewer_id, &input.user_ids)
            .await
            .map_err(|e| internal("load visibility", e))?;
        if input.user_ids.contains(&input.viewer_id) {
            visible.push(input.viewer_id);
        }
        Ok(pb::VisibleResponse { user_ids: visible })
    }

    /// Tells `user`'s devices through the inbox (they see it after a
    /// reconnect too).
    async fn notify(
        &self,
        user: &str,
        kind: social_notice::Kind,
        dedup: &str,
    ) -> Result<(), RpcError> {
        let entry = delivery::InboxEntry {
            event: Some(delivery::inbox_entry::Event::Social(pb::SocialNotice {
                kind: Some(kind),
            })),
        };
        self.inboxes
            .deliver(user, &entry, &format!("{dedup}:{user}"))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, user, "social notice not delivered");
                RpcError::unavailable("saved, but the notification could not be delivered")
            })?;
        Ok(())
    }

    /// Publishes a public event; a lost event is logged, not fatal.
    async fn event(&self, subject: &'static str, payload: Vec<u8>, dedup: &str) {
        if let Err(e) =
            shared::nats::publish_event(&self.nats.jetstream, subject, payload.into(), dedup).await
        {
            tracing::warn!(error = %e, subject, "event not stored");
        }
    }
}

/// 1..=200 well-formed user ids.
fn user_ids(ids: &[String]) -> Result<(), RpcError> {
    if ids.len() > MAX_IDS {
        return Err(RpcError::bad_request(format!("at most {MAX_IDS} user ids")));
    }
    if ids.iter().any(|id| !subject::is_valid_token(id)) {
        return Err(RpcError::bad_request("malformed user id"));
    }
    Ok(())
}

fn page(limit: u32, default: u32) -> Result<i64, RpcError> {
    match limit {
        0 => Ok(i64::from(default)),
        1..=200 => Ok(i64::from(limit)),
        _ => Err(RpcError::bad_request("limit must be within 1..=200")),
    }
}

fn to_profile(row: ProfileRow) -> pb::Profile {
    pb::Profile {
        user_id: row.user_id,
        username: row.username,
        nickname: row.nickname,
        signature: row.signature,
        avatar: row.avatar,
        updated_at_ms: row.updated_at_ms,
    }
}

fn to_request(row: RequestRow, peer: Option<pb::Profile>) -> pb::FriendRequest {
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
