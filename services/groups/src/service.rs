//! The groups service: its state, its endpoints (`im.v1.group.*`) and the sweep
//! that applies changes a failure left pending.
//!
//! A change is committed here first (group tables plus a row in
//! `group_changes`), then applied to the group's conversation in the messages
//! service with `im.v1.conversation.apply`, in version order, before the
//! caller gets its answer. If the messages service cannot be reached the
//! change stays pending and the sweep applies it; versions make a redo
//! harmless.
//!
//! Files: [`queries`] (reads), [`changes`] (writes, through
//! [`crate::plan`]), [`sync`] (applying changes to the conversation).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use prost::Message as _;
use shared::db::{self, AnyPool};
use shared::endpoint::Server;
use shared::endpoint::endpoints::{ConversationApply, FriendRelation};
use shared::endpoint::endpoints::{
    GroupCreate, GroupDismiss, GroupGet, GroupInvite, GroupLeave, GroupMembers, GroupMine,
    GroupMute, GroupRemove, GroupRole, GroupTransfer, GroupUpdate,
};
use shared::ids::{GroupId, UserId};
use shared::proto::{group as pb, message as msg_pb};
use shared::rpc::{Caller, Identity, internal};
use shared::service::StartError;
use shared::{Nats, RpcError, ids};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::plan::{self, Group, Member, Op, Plan, Role};
use crate::store;

mod changes;
mod queries;
mod sync;

use sync::{change_of, encode};

const SYNC_SHARDS: usize = 64;
const MAX_USERS_PER_CALL: usize = 200;
const MAX_MUTE_SECS: u64 = 366 * 24 * 3600;

struct State {
    config: Config,
    pool: AnyPool,
    nats: Nats,
    caller: Caller,
    /// Applying a group's pending changes runs once at a time per group here.
    sync: Vec<Mutex<()>>,
}

/// Runs the groups service until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    nats: Nats,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    config.validate()?;
    let pool = db::connect(&config.database_url, 8, &store::MIGRATOR).await?;
    shared::nats::events_stream(&nats.jetstream, &config.streams).await?;
    let state = Arc::new(State {
        caller: nats.caller(),
        nats: nats.clone(),
        sync: (0..SYNC_SHARDS).map(|_| Mutex::new(())).collect(),
        config,
        pool,
    });

    let server = Server::start(
        &nats.client,
        crate::MICRO_NAME,
        "natter groups",
        state.clone(),
        shutdown.clone(),
    )
    .await?
    .serve::<GroupCreate, _, _>(16, State::create)
    .serve::<GroupGet, _, _>(64, State::get)
    .serve::<GroupMine, _, _>(32, State::mine)
    .serve::<GroupMembers, _, _>(32, State::members)
    .serve::<GroupInvite, _, _>(16, State::invite)
    .serve::<GroupRemove, _, _>(16, State::remove)
    .serve::<GroupLeave, _, _>(16, State::leave)
    .serve::<GroupRole, _, _>(16, State::set_role)
    .serve::<GroupTransfer, _, _>(16, State::transfer)
    .serve::<GroupUpdate, _, _>(16, State::update)
    .serve::<GroupMute, _, _>(16, State::mute)
    .serve::<GroupDismiss, _, _>(16, State::dismiss)
    .listen()
    .await?;
    tracing::info!("groups service ready");
    let period = Duration::from_secs(state.config.sweep_interval_secs);
    let sweep = shared::service::every(period, shutdown.clone(), || {
        let state = state.clone();
        async move { state.sweep().await }
    });
    tokio::join!(server.run(), sweep);
    tracing::info!("groups service stopped");
    Ok(())
}

impl State {
    pub(super) async fn create(
        self: Arc<Self>,
        me: Identity,
        input: pb::CreateGroupRequest,
    ) -> Result<pb::Group, RpcError> {
        let name = plan::name(&input.name)?.to_owned();
        let description = plan::description(&input.description)?.to_owned();
        user_ids(&input.member_ids, self.config.max_members as usize)?;
        let others: Vec<String> = input
            .member_ids
            .iter()
            .filter(|id| **id != me.user_id)
            .cloned()
            .collect();
        self.may_add(&me.user_id, &others).await?;
        let now = ids::now_ms();
        let plan = plan::create(
            &me.user_id,
            &others,
            i64::from(self.config.max_members),
            now,
        )?;
        let group = Group {
            id: ids::new_id(),
            name: name.clone(),
            description,
            announcement: String::new(),
            owner_id: me.user_id.to_string(),
            muted_all: false,
            max_members: i64::from(self.config.max_members),
            created_at_ms: now,
        };
        let change = change_of(&group.id, 1, &me.user_id, &plan, Some(name));
        let mut tx = self.pool.begin().await.map_err(|e| internal("begin", e))?;
        store::insert_group(&mut tx, &group, now).await?;
        store::write_plan(&mut tx, &group.id, &plan, now).await?;
        store::insert_change(&mut tx, &group.id, 1, &encode(&change), now).await?;
        tx.commit().await.map_err(|e| internal("commit", e))?;
        tracing::info!(group_id = %group.id, members = plan.upserts.len(), "group created");
        self.sync(&group.id).await;
        self.event(&group, &me.user_id, &plan, 1).await;
        self.view(group, &me.user_id).await
    }

    /// Checks that `actor` may add `users` to a group: they exist, have not
    /// blocked the actor, and (by default) are the actor's friends.
    pub(super) async fn may_add(&self, actor: &str, users: &[String]) -> Result<(), RpcError> {
        for user in users {
            let relation = self
                .caller
                .call_to::<FriendRelation>(&shared::proto::social::RelationRequest {
                    user_id: actor.to_string(),
                    other_user_id: user.to_string(),
                })
                .await?;
            if !relation.exists {
                return Err(RpcError::not_found(format!("no such user {user}")));
            }
            if relation.blocked_by || (self.config.invite_friends_only && !relation.friends) {
                return Err(RpcError::forbidden(format!(
                    "you can only add your friends to a group ({user} is not)"
                )));
            }
        }
        Ok(())
    }

    /// Runs `op` by `me` on group `group_id`: plan, write, apply, announce.
    pub(super) async fn change(
        &self,
        me: &Identity,
        group_id: &str,
        op: Op,
    ) -> Result<(Group, Plan), RpcError> {
        group_id_ok(group_id)?;
        let mut named: Vec<String> = vec![me.user_id.to_string()];
        match &op {
            Op::Invite(users) | Op::Remove(users) => named.extend(users.iter().cloned()),
            Op::SetRole { user, .. } | Op::Transfer(user) => named.push(user.clone()),
            Op::Mute {
                user: Some(user), ..
            } => named.push(user.clone()),
            _ => {}
        }
        let now = ids::now_ms();
        let mut tx = self.pool.begin().await.map_err(|e| internal("begin", e))?;
        let (version, group) = store::lock_group(&mut tx, group_id)
            .await?
            .ok_or_else(|| RpcError::not_found("no such group"))?;
        let members = store::members_of(&mut *tx, group_id, &named).await?;
        let count = store::member_count(&mut *tx, group_id).await?;
        let plan = plan::plan(&group, &me.user_id, &op, &members, count, now)?;
        store::write_plan(&mut tx, group_id, &plan, now).await?;
        let change = change_of(
            group_id,
            version,
            &me.user_id,
            &plan,
            plan.group.name.clone(),
        );
        store::insert_change(&mut tx, group_id, version, &encode(&change), now).await?;
        tx.commit().await.map_err(|e| internal("commit", e))?;
        self.sync(group_id).await;
        let after = Group {
            name: plan.group.name.clone().unwrap_or(group.name),
            description: plan.group.description.clone().unwrap_or(group.description),
            announcement: plan
                .group
                .announcement
                .clone()
                .unwrap_or(group.announcement),
            owner_id: plan.group.owner_id.clone().unwrap_or(group.owner_id),
            muted_all: plan.group.muted_all.unwrap_or(group.muted_all),
            ..group
        };
        self.event(&after, &me.user_id, &plan, version).await;
        Ok((after, plan))
    }

    /// The group as `viewer` sees it (with its own membership).
    pub(super) async fn view(&self, group: Group, viewer: &str) -> Result<pb::Group, RpcError> {
        let count = store::member_count(&self.pool, &group.id).await?;
        let me = store::members_of(&self.pool, &group.id, &[viewer.to_owned()])
            .await?
            .remove(viewer);
        Ok(to_group(&group, count, me.as_ref()))
    }

    /// A live group and the caller's membership in it (members only).
    pub(super) async fn readable(&self, me: &Identity, group_id: &str) -> Result<Group, RpcError> {
        group_id_ok(group_id)?;
        let group = store::group(&self.pool, group_id)
            .await?
            .ok_or_else(|| RpcError::not_found("no such group"))?;
        let members = store::members_of(&self.pool, group_id, &[me.user_id.to_string()]).await?;
        if !members.contains_key(me.user_id.as_str()) {
            return Err(RpcError::forbidden("not a member of this group"));
        }
        Ok(group)
    }
}

pub(super) fn group_id_ok(id: &str) -> Result<(), RpcError> {
    GroupId::parse(id).map(drop)
}

pub(super) fn user_ids(ids: &[String], max: usize) -> Result<(), RpcError> {
    UserId::parse_all(ids, max).map(drop)
}

pub(super) fn to_member(m: &Member) -> pb::Member {
    pb::Member {
        user_id: m.user_id.clone(),
        role: m.role.as_str().to_owned(),
        muted_until_ms: m.muted_until_ms,
        joined_at_ms: m.joined_at_ms,
    }
}

pub(super) fn to_group(group: &Group, count: i64, me: Option<&Member>) -> pb::Group {
    pb::Group {
        id: group.id.clone(),
        conversation_id: ids::group_conversation(&group.id),
        name: group.name.clone(),
        description: group.description.clone(),
        announcement: group.announcement.clone(),
        owner_id: group.owner_id.clone(),
        muted_all: group.muted_all,
        member_count: count as u32,
        max_members: group.max_members as u32,
        created_at_ms: group.created_at_ms,
        me: me.map(to_member),
    }
}
