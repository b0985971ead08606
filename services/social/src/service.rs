//! The social service: its state, its endpoints (`im.v1.profile.*`,
//! `im.v1.user.search`, `im.v1.friend.*`, `im.v1.block.*`) and the consumer
//! of `im.evt.v1.user.registered` that creates profiles.
//!
//! By domain: [`profiles`], [`requests`], [`friends`], [`blocks`].

mod blocks;
mod friends;
mod profiles;
mod requests;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use prost::Message as _;
use shared::db::{self, AnyPool};
use shared::endpoint::Server;
use shared::endpoint::endpoints::{
    BlockAdd, BlockList, BlockRemove, FriendAccept, FriendAsk, FriendAudience, FriendDelete,
    FriendList, FriendReject, FriendRelation, FriendRequests, FriendVisible, ProfileAvatarsUsed,
    ProfileGet, ProfileUpdate, UserSearch,
};
use shared::inbox::{Append, Inboxes, Once};
use shared::proto::social::{self as pb, social_notice};
use shared::proto::{auth as auth_pb, delivery};
use shared::rpc::Caller;
use shared::service::StartError;
use shared::{Nats, RpcError, subject};
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::store;

const MAX_IDS: usize = 200;
/// The durable consumer (one for all instances) that creates profiles.
const CONSUMER: &str = "natter-social";
/// The durable consumer that tells friends of profile changes.
const PROFILES_CONSUMER: &str = "natter-social-profiles";
/// The inboxes one round of a profile change is appended to at once.
const PROFILE_FANOUT: usize = 500;
/// How long a profile change that could not be delivered waits to be tried
/// again, and how many times it is tried: all within the inboxes' duplicate
/// window (2 minutes).
const RETRY_AFTER: Duration = Duration::from_secs(5);
const PROFILE_ATTEMPTS: i64 = 10;

struct State {
    config: Config,
    pool: AnyPool,
    nats: Nats,
    caller: Caller,
    inboxes: Inboxes,
    /// Exact phone-number searches, per user and per client address.
    phone_searches: PhoneSearches,
}

struct PhoneSearches {
    by_user: shared::limit::PerKey<String>,
    by_address: shared::limit::PerKey<std::net::IpAddr>,
}

impl PhoneSearches {
    fn new(config: &Config) -> Self {
        const WHAT: &str = "phone-number searches";
        Self {
            by_user: shared::limit::PerKey::per_minute(WHAT, config.phone_searches_per_minute),
            by_address: shared::limit::PerKey::per_minute(
                WHAT,
                config.phone_searches_per_address_per_minute,
            ),
        }
    }

    /// Counts one search by `user` from `ip`; refuses it over either limit.
    fn check(&self, user: &str, ip: Option<std::net::IpAddr>) -> Result<(), RpcError> {
        self.by_user.check(&user.to_owned())?;
        match ip {
            Some(ip) => self.by_address.check(&shared::limit::address_key(ip)),
            None => Ok(()),
        }
    }
}

/// Runs the social service until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    nats: Nats,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    config.validate()?;
    let pool = db::connect(&config.database_url, 8, &store::MIGRATOR).await?;
    // Profiles made before nicknames had pinyin get it (a no-op after).
    match store::fill_pinyin(&pool).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(profiles = n, "nicknames' pinyin filled in"),
        Err(e) => return Err(StartError::setup("filling in nicknames' pinyin", e)),
    }
    let inbox = shared::nats::inbox_stream(&nats.jetstream, &config.streams).await?;
    let events = shared::nats::events_stream(&nats.jetstream, &config.streams).await?;
    // Made before the service answers, so no profile changed once it is
    // ready goes unseen (it takes only new changes); made again later by
    // the consumer's loop if this fails.
    if let Err(e) = events
        .get_or_create_consumer(PROFILES_CONSUMER, profile_updates_config())
        .await
    {
        tracing::warn!(error = %e, "the profile changes consumer is not made yet");
    }
    let state = Arc::new(State {
        phone_searches: PhoneSearches::new(&config),
        inboxes: Inboxes::new(nats.client.clone(), nats.jetstream.clone(), inbox),
        caller: nats.caller(),
        nats: nats.clone(),
        config,
        pool,
    });

    let server = Server::start(
        &nats.client,
        crate::MICRO_NAME,
        "natter profiles, friends and blocks",
        state.clone(),
        shutdown.clone(),
    )
    .await?
    .serve::<ProfileGet, _, _>(64, State::get_profiles)
    .serve::<ProfileUpdate, _, _>(16, State::update_profile)
    .serve::<ProfileAvatarsUsed, _, _>(4, State::avatars_used)
    .serve::<UserSearch, _, _>(32, State::search)
    .serve::<FriendAsk, _, _>(32, State::request_friend)
    .serve::<FriendRequests, _, _>(32, State::list_requests)
    .serve::<FriendAccept, _, _>(32, State::accept)
    .serve::<FriendReject, _, _>(32, State::reject)
    .serve::<FriendList, _, _>(32, State::list_friends)
    .serve::<FriendDelete, _, _>(32, State::delete_friend)
    .serve::<FriendRelation, _, _>(256, State::relation)
    .serve::<FriendAudience, _, _>(64, State::audience)
    .serve::<FriendVisible, _, _>(64, State::visible)
    .serve::<BlockAdd, _, _>(16, State::block_user)
    .serve::<BlockRemove, _, _>(16, State::unblock_user)
    .serve::<BlockList, _, _>(16, State::list_blocked)
    .listen()
    .await?;
    tracing::info!("social service ready");
    let registrations = consume_registrations(state.clone(), events.clone(), shutdown.clone());
    let updates = consume_profile_updates(state.clone(), events, shutdown.clone());
    tokio::join!(server.run(), registrations, updates);
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
    let config = pull::Config {
        durable_name: Some(CONSUMER.into()),
        description: Some("natter social: profiles of new users".into()),
        filter_subject: subject::event::USER_REGISTERED.into(),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ..Default::default()
    };
    shared::service::consume(&events, config, &shutdown, |message| {
        let state = state.clone();
        async move {
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
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "undecodable user.registered skipped"),
            }
            if let Err(e) = message.ack().await {
                tracing::debug!(error = %e, "registration ack failed");
            }
        }
    })
    .await;
}

/// The durable consumer of profile changes: new ones only (a profile's
/// history is not news), each delivery tried a few times within the
/// inboxes' duplicate window (an append that did go through is not stored
/// again), then given up: devices read profiles again on their next start.
fn profile_updates_config() -> pull::Config {
    pull::Config {
        durable_name: Some(PROFILES_CONSUMER.into()),
        description: Some("natter social: profile changes to friends' devices".into()),
        filter_subject: subject::event::PROFILE_UPDATED.into(),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        max_deliver: PROFILE_ATTEMPTS,
        ..Default::default()
    }
}

/// Tells the devices of a user who changed its profile, and its friends',
/// through their inboxes (so a new avatar or name shows without a reload,
/// and after a reconnect), from the event stream: one durable consumer,
/// and an update delivered again after a failure is stored once.
async fn consume_profile_updates(
    state: Arc<State>,
    events: async_nats::jetstream::stream::Stream,
    shutdown: CancellationToken,
) {
    shared::service::consume(&events, profile_updates_config(), &shutdown, |message| {
        let state = state.clone();
        async move {
            let Ok(profile) = pb::Profile::decode(message.payload.as_ref()) else {
                tracing::warn!("undecodable profile.updated skipped");
                let _ = message.ack().await;
                return;
            };
            let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            match state.tell_profile(&profile.user_id, seq).await {
                Ok(()) => {
                    if let Err(e) = message.ack().await {
                        tracing::debug!(error = %e, "profile update ack failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "profile update not delivered; again later");
                    let _ = message
                        .ack_with(async_nats::jetstream::AckKind::Nak(Some(RETRY_AFTER)))
                        .await;
                }
            }
        }
    })
    .await;
}

impl State {
    /// Appends `user`'s profile as it is now (so a late or repeated
    /// delivery never brings an older one back) to the inboxes of `user`
    /// and of the friends it does not block; `seq`, the event's sequence in
    /// the stream, keeps each append from being stored twice.
    async fn tell_profile(&self, user: &str, seq: u64) -> Result<(), String> {
        let Some(profile) = self.profile(user).await.map_err(|e| e.message)? else {
            return Ok(());
        };
        let profile = profiles::to_profile(profile);
        let mut users = store::audience(&self.pool, user)
            .await
            .map_err(|e| e.to_string())?;
        users.push(user.to_owned());
        let entries = [delivery::InboxEntry {
            event: Some(delivery::inbox_entry::Event::Social(pb::SocialNotice {
                kind: Some(social_notice::Kind::ProfileUpdated(profile)),
            })),
        }];
        for users in users.chunks(PROFILE_FANOUT) {
            let appends: Vec<Append> = users
                .iter()
                .map(|user| Append {
                    user: user.clone(),
                    entry: 0,
                    once: Once::Window(format!("profile:{seq}:{user}")),
                })
                .collect();
            for result in self.inboxes.deliver_many(&entries, &appends).await {
                result.map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Tells `user`'s devices through the inbox (they see it after a
    /// reconnect too).
    pub(super) async fn notify(
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
    pub(super) async fn event(&self, subject: &'static str, payload: Vec<u8>, dedup: &str) {
        if let Err(e) =
            shared::nats::publish_event(&self.nats.jetstream, subject, payload.into(), dedup).await
        {
            tracing::warn!(error = %e, subject, "event not stored");
        }
    }
}

/// 1..=200 well-formed user ids.
pub(super) fn user_ids(ids: &[String]) -> Result<(), RpcError> {
    shared::ids::UserId::parse_all(ids, MAX_IDS).map(drop)
}

pub(super) fn page(limit: u32, default: u32) -> Result<i64, RpcError> {
    match limit {
        0 => Ok(i64::from(default)),
        1..=200 => Ok(i64::from(limit)),
        _ => Err(RpcError::bad_request("limit must be within 1..=200")),
    }
}
