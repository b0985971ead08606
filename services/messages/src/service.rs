//! The messages service's NATS micro endpoints: `im.v1.message.send`,
//! `.history`, `.recall`, `.delete`, `.reads`; `im.v1.conversation.list`,
//! `.read`, `.settings`, `.typing`, and (for the groups service) `.apply`;
//! plus the sweep that fans out messages a crash left stored but undelivered.
//! The conversation features besides sending live in [`conversation`].

mod conversation;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::{Request, ServiceExt};
use futures::StreamExt;
use prost::Message as _;
use shared::db::{self, AnyPool};
use shared::proto::{delivery, message as pb};
use shared::rpc::internal;
use shared::rpc::{Caller, Identity};
use shared::{Nats, RpcError, ids, rpc, subject};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::relations::Relations;
use crate::store::{self, MessageRow};
use crate::writer::Writer;
use crate::{Config, validate};
use shared::inbox::{DeliveryError, Inboxes};

const ORDER_SHARDS: usize = 256;
/// Inbox appends in flight for one message.
const FANOUT_CONCURRENCY: usize = 128;
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;
/// Room left in a NATS message for a reply's headers and framing.
const REPLY_HEADROOM: usize = 8 * 1024;

/// Why a stored message is not (yet) in every inbox and the event stream.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error(transparent)]
    Deliver(#[from] DeliveryError),
    #[error("{0}")]
    Event(String),
}

#[derive(Debug, thiserror::Error)]
pub enum MessagesError {
    #[error(transparent)]
    Config(#[from] shared::config::ConfigError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Nats(#[from] shared::nats::NatsError),
    #[error("nats service: {0}")]
    Service(String),
}

struct State {
    config: Config,
    /// Reads; writes go through `write` (see [`db::Pools`]).
    pool: AnyPool,
    write: AnyPool,
    writer: Writer,
    relations: Relations,
    /// Conversations with a message stored but not fanned out: their last
    /// fan-out here failed, or a sweep found one left over (a crash, another
    /// instance). Their next send or change fans out what is pending first,
    /// so inbox order follows seq order.
    unsent: std::sync::Mutex<HashSet<String>>,
    /// Whether `unsent` is complete: false until a sweep has read the
    /// conversations left pending; meanwhile every send asks the database.
    unsent_known: std::sync::atomic::AtomicBool,
    inboxes: Inboxes,
    jetstream: async_nats::jetstream::Context,
    caller: Caller,
    /// Per-conversation ordering: a send holds its conversation's shard from
    /// storing through fan-out, so inbox entries follow seq order.
    order: Vec<Mutex<()>>,
    shutdown: CancellationToken,
}

/// Runs the messages service until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    nats: Nats,
    shutdown: CancellationToken,
) -> Result<(), MessagesError> {
    config.validate()?;
    let pools = db::connect_pools(&config.database_url, 8, &store::MIGRATOR).await?;
    let stream = shared::nats::inbox_stream(&nats.jetstream, &config.streams).await?;
    shared::nats::events_stream(&nats.jetstream, &config.streams).await?;
    let state = Arc::new(State {
        inboxes: Inboxes::new(nats.client.clone(), nats.jetstream.clone(), stream),
        jetstream: nats.jetstream.clone(),
        caller: nats.caller(),
        order: (0..ORDER_SHARDS).map(|_| Mutex::new(())).collect(),
        shutdown: shutdown.clone(),
        config,
        writer: Writer::start(pools.write.clone()),
        relations: Relations::subscribe(&nats.client, nats.events())
            .await
            .map_err(|e| MessagesError::Service(format!("subscribe to social events: {e}")))?,
        unsent: std::sync::Mutex::new(HashSet::new()),
        unsent_known: std::sync::atomic::AtomicBool::new(false),
        pool: pools.read,
        write: pools.write,
    });

    // Deliver whatever a crash left undelivered. A conversation this fails
    // for is retried by the periodic sweep, or by its next send (which fans
    // out the earlier messages first: the sweep notes which are left).
    if let Err(e) = state.sweep(i64::MAX).await {
        tracing::warn!(error = %e, "startup fan-out sweep failed; retrying later");
    }

    let service = nats
        .client
        .service_builder()
        .description("natter conversations and messages")
        .start("natter-messages", env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| MessagesError::Service(e.to_string()))?;
    let err = |e: async_nats::Error| MessagesError::Service(e.to_string());
    let message = service.group("im.v1.message");
    let send = message.endpoint("send").await.map_err(err)?;
    let history = message.endpoint("history").await.map_err(err)?;
    let conversation = service.group("im.v1.conversation");
    let list = conversation.endpoint("list").await.map_err(err)?;
    let apply = conversation.endpoint("apply").await.map_err(err)?;
    macro_rules! serve {
        ($group:expr, $name:literal, $limit:expr, $handler:ident) => {{
            let endpoint = $group.endpoint($name).await.map_err(err)?;
            shared::service::serve_with(
                endpoint,
                $limit,
                shutdown.clone(),
                state.clone(),
                |s, req| async move { s.$handler(&req).await },
            )
        }};
    }
    let more: Vec<futures::future::BoxFuture<'static, ()>> = vec![
        Box::pin(serve!(message, "recall", 32, recall)),
        Box::pin(serve!(message, "delete", 32, delete)),
        Box::pin(serve!(message, "reads", 32, reads)),
        Box::pin(serve!(conversation, "read", 64, read)),
        Box::pin(serve!(conversation, "settings", 32, settings)),
        Box::pin(serve!(conversation, "typing", 64, typing)),
        Box::pin(serve!(conversation, "large", 64, large_groups)),
        Box::pin(serve!(conversation, "heads", 16, group_heads)),
    ];
    tracing::info!("messages service ready");

    let send = shared::service::serve_with(
        send,
        state.config.max_concurrent_sends,
        shutdown.clone(),
        state.clone(),
        |s, req| async move { s.send(&req).await },
    );
    let history = shared::service::serve_with(
        history,
        64,
        shutdown.clone(),
        state.clone(),
        |s, req| async move { s.history(&req).await },
    );
    let list = shared::service::serve_with(
        list,
        64,
        shutdown.clone(),
        state.clone(),
        |s, req| async move { s.conversations(&req).await },
    );
    let apply = shared::service::serve_with(
        apply,
        32,
        shutdown.clone(),
        state.clone(),
        |s, req| async move { s.apply(&req).await },
    );
    let s = state.clone();
    let sweeper = shutdown.clone();
    let sweep = async move {
        let mut tick = tokio::time::interval(Duration::from_secs(s.config.sweep_interval_secs));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = sweeper.cancelled() => break,
                _ = tick.tick() => {
                    // Only messages old enough that their own send has given up.
                    let before = ids::now_ms() - 10_000;
                    if let Err(e) = s.sweep(before).await {
                        tracing::warn!(error = %e, "fan-out sweep failed");
                    }
                }
            }
        }
    };
    let s = state.clone();
    let drainer = shutdown.clone();
    let drain = async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = drainer.cancelled() => break,
                _ = tick.tick() => s.relations.drain(),
            }
        }
    };
    tokio::join!(
        drain,
        send,
        history,
        list,
        apply,
        sweep,
        futures::future::join_all(more)
    );
    let _ = service.stop().await;
    state.writer.flush().await;
    tracing::info!("messages service stopped");
    Ok(())
}

impl State {
    async fn send(&self, req: &Request) -> Result<pb::SendAck, RpcError> {
        let me = Identity::from_headers(req.message.headers.as_ref())?;
        let input: pb::SendRequest = rpc::decode(&req.message.payload)?;
        validate::client_msg_id(&input.client_msg_id)?;
        validate::body(input.body.as_ref(), &self.limits())?;
        let (conversation_id, kind, members) = match ids::group_of(&input.conversation_id) {
            Some(_) if input.to_user_id.is_empty() => {
                self.may_speak(&me, &input.conversation_id).await?;
                (input.conversation_id.clone(), "group", Vec::new())
            }
            _ => {
                let peer = self.direct_peer(&me, &input)?;
                self.may_message(&me.user_id, &peer).await?;
                let members = vec![me.user_id.clone(), peer.clone()];
                (
                    ids::direct_conversation(&me.user_id, &peer),
                    "direct",
                    members,
                )
            }
        };
        let body = serde_json::to_string(&input.body).map_err(|e| internal("encode body", e))?;
        let reply_to = self
            .quote(&me, &conversation_id, input.reply_to_seq)
            .await?;

        let _order = self.order[shard_of(&conversation_id)].lock().await;
        // An earlier message whose fan-out failed goes out first, so this one
        // cannot overtake it in the inboxes.
        self.fan_out_pending(&conversation_id).await?;
        let new = store::NewMessage {
            id: ids::new_id(),
            conversation_id: conversation_id.clone(),
            kind,
            members,
            sender_id: me.user_id.clone(),
            sender_device_id: me.device_id.clone(),
            client_msg_id: input.client_msg_id.clone(),
            body,
            reply_to,
            now_ms: ids::now_ms(),
        };
        let Some(row) = self.writer.store(new).await? else {
            // A repeated send (or another instance stored it first).
            return match self
                .existing(&me, &input.client_msg_id, &conversation_id)
                .await?
            {
                Some(existing) => Ok(ack(&existing, true)),
                None => Err(RpcError::unavailable("message not stored; retry")),
            };
        };
        self.fan_out(&row).await.map_err(|e| {
            tracing::warn!(error = %e, message_id = %row.id, "fan-out failed; left to retry or sweep");
            RpcError::unavailable("message stored but not yet delivered; retry with the same client_msg_id")
        })?;
        Ok(ack(&row, false))
    }

    fn limits(&self) -> validate::Limits {
        validate::Limits {
            max_text_chars: self.config.max_text_chars,
            max_file_bytes: self.config.max_file_bytes,
        }
    }

    /// The quote of message `seq` for a reply (JSON, "" for no reply): it
    /// must be a message of the same conversation that `me` may read.
    async fn quote(
        &self,
        me: &Identity,
        conversation_id: &str,
        seq: u64,
    ) -> Result<String, RpcError> {
        if seq == 0 {
            return Ok(String::new());
        }
        let seq = to_i64(seq)?;
        let (joined, left) = self.readable(me, conversation_id).await?;
        let quoted = store::message_at(&self.pool, conversation_id, seq)
            .await
            .map_err(|e| internal("load quoted message", e))?
            .filter(|m| m.seq >= joined && (left == 0 || m.seq <= left))
            .ok_or_else(|| RpcError::not_found("no such message to reply to"))?;
        let body: Option<pb::MessageBody> =
            serde_json::from_str(&quoted.body).map_err(|e| internal("decode quoted body", e))?;
        let quote = pb::Quote {
            seq: quoted.seq as u64,
            message_id: quoted.id,
            sender_id: quoted.sender_id,
            preview: validate::preview(body.as_ref()),
        };
        serde_json::to_string(&quote).map_err(|e| internal("encode quote", e))
    }

    /// Applies a group change (from the groups service): membership, roles,
    /// mutes, title, dismissal, and the system notice at the next seq, in one
    /// transaction, then fans the notice out (to removed members too).
    async fn apply(&self, req: &Request) -> Result<pb::ConversationChangeAck, RpcError> {
        Identity::refuse_user(req.message.headers.as_ref())?;
        let input: pb::ConversationChange = rpc::decode(&req.message.payload)?;
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
        let _order = self.order[shard_of(&input.conversation_id)].lock().await;
        self.fan_out_pending(&input.conversation_id).await?;
        match store::apply_change(&self.write, &change).await {
            Ok(store::Applied::Done(row)) => {
                self.fan_out(&row).await.map_err(|e| {
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

    /// The earlier send with this client_msg_id, fanned out if it was not yet.
    async fn existing(
        &self,
        me: &Identity,
        client_msg_id: &str,
        conversation_id: &str,
    ) -> Result<Option<MessageRow>, RpcError> {
        let Some(row) = store::by_client_msg_id(&self.pool, &me.user_id, client_msg_id)
            .await
            .map_err(|e| internal("load message", e))?
        else {
            return Ok(None);
        };
        if row.conversation_id != conversation_id {
            return Err(RpcError::conflict(
                "client_msg_id was already used in another conversation",
            ));
        }
        if row.fanned_out == 0 {
            self.fan_out(&row).await.map_err(|e| {
                tracing::warn!(error = %e, message_id = %row.id, "fan-out retry failed");
                RpcError::unavailable(
                    "message stored but not yet delivered; retry with the same client_msg_id",
                )
            })?;
        }
        Ok(Some(row))
    }

    /// The other participant of the one-to-one chat this send targets.
    fn direct_peer(&self, me: &Identity, input: &pb::SendRequest) -> Result<String, RpcError> {
        let peer = match (
            input.conversation_id.is_empty(),
            input.to_user_id.is_empty(),
        ) {
            (true, false) => input.to_user_id.clone(),
            (false, true) => {
                let (a, b) = ids::direct_participants(&input.conversation_id)
                    .ok_or_else(|| RpcError::bad_request("unknown conversation id format"))?;
                if a == me.user_id {
                    b.to_owned()
                } else if b == me.user_id {
                    a.to_owned()
                } else {
                    return Err(RpcError::forbidden(
                        "not a participant of this conversation",
                    ));
                }
            }
            _ => {
                return Err(RpcError::bad_request(
                    "set exactly one of conversation_id and to_user_id",
                ));
            }
        };
        if !subject::is_valid_token(&peer) {
            return Err(RpcError::bad_request("malformed user id"));
        }
        if peer == me.user_id {
            return Err(RpcError::bad_request("cannot message yourself"));
        }
        Ok(peer)
    }

    /// Whether `me` may send a one-to-one message to `peer`: the peer exists,
    /// neither blocks the other, and (by default) they are friends. Asked
    /// on every send, so a block or an ended friendship applies at once.
    async fn may_message(&self, me: &str, peer: &str) -> Result<(), RpcError> {
        let relation = match self.relations.get(me, peer) {
            Some(relation) => relation,
            None => {
                let asked = std::time::Instant::now();
                let relation = self.caller.relation(me, peer).await?;
                self.relations.put(me, peer, relation, asked);
                relation
            }
        };
        if !relation.exists {
            return Err(RpcError::not_found("no such user"));
        }
        if relation.blocking {
            return Err(RpcError::forbidden(
                "you blocked this user; unblock them first",
            ));
        }
        if self.config.require_friendship && (relation.blocked_by || !relation.friends) {
            // One refusal for both, so a block stays invisible to the blocked.
            return Err(RpcError::forbidden(
                "you can only message your friends: send a friend request first",
            ));
        }
        if relation.blocked_by {
            return Err(RpcError::forbidden(
                "this user does not accept your messages",
            ));
        }
        Ok(())
    }

    /// Whether `me` may send to group conversation `conversation_id`: a
    /// current member of a group that is not dismissed, and not muted (the
    /// owner and admins may always speak).
    async fn may_speak(&self, me: &Identity, conversation_id: &str) -> Result<(), RpcError> {
        let member = store::member(&self.pool, conversation_id, &me.user_id)
            .await
            .map_err(|e| internal("load membership", e))?
            .filter(|m| m.left_seq == 0)
            .ok_or_else(|| RpcError::forbidden("not a member of this group"))?;
        let conversation = store::conversation(&self.pool, conversation_id)
            .await
            .map_err(|e| internal("load conversation", e))?
            .ok_or_else(|| RpcError::forbidden("not a member of this group"))?;
        if conversation.dismissed != 0 {
            return Err(RpcError::forbidden("the group was dismissed"));
        }
        if member.role == "member" {
            if conversation.muted_all != 0 {
                return Err(RpcError::forbidden(
                    "the group is muted: only admins may speak",
                ));
            }
            if member.muted_until_ms > ids::now_ms() {
                return Err(RpcError::forbidden("you are muted in this group"));
            }
        }
        Ok(())
    }

    /// Who receives a stored message: both participants of a direct chat,
    /// the members of a group at the time of the message.
    async fn recipients(&self, row: &MessageRow) -> Result<Vec<String>, FanoutError> {
        if let Some((a, b)) = ids::direct_participants(&row.conversation_id) {
            return Ok(vec![a.to_owned(), b.to_owned()]);
        }
        if ids::group_of(&row.conversation_id).is_some() {
            return store::group_recipients(&self.pool, &row.conversation_id, row.seq)
                .await
                .map_err(|e| FanoutError::Event(format!("load recipients: {e}")));
        }
        Err(FanoutError::Event(format!(
            "bad conversation {}",
            row.conversation_id
        )))
    }

    /// Delivers a stored message the way it was stored to be delivered,
    /// announces it, then marks it fanned out. Write fan-out: appended to
    /// every recipient's inbox. Read fan-out (large groups): published once
    /// on the group's subject, where each edge with members subscribes;
    /// members read what they missed from the history. Membership changes
    /// also reach the inboxes of the users concerned (see below), so their
    /// edges and their offline devices learn of them.
    async fn fan_out(&self, row: &MessageRow) -> Result<(), FanoutError> {
        let result = self.deliver(row).await;
        if result.is_err() {
            self.unsent_set().insert(row.conversation_id.clone());
        }
        result
    }

    fn unsent_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.unsent.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn deliver(&self, row: &MessageRow) -> Result<(), FanoutError> {
        let message = to_proto(row).map_err(|e| FanoutError::Event(e.message))?;
        let (entry, recipients) = match ids::group_of(&row.conversation_id) {
            Some(group) if row.delivery != 0 => {
                if let Err(e) = self
                    .caller
                    .client
                    .publish(subject::group_push(group), message.encode_to_vec().into())
                    .await
                {
                    // Best effort: edges fill gaps from the history.
                    tracing::warn!(error = %e, "group push failed");
                }
                // Users who join get the notice itself in their inbox (their
                // edges do not follow the group yet); users who leave or are
                // removed get a marker (their edges follow the group and
                // forward the notice as a group message). A dismissal, like
                // any switch back to write fan-out, is not delivered here.
                let marker = || {
                    delivery::inbox_entry::Event::Membership(pb::GroupMembershipChanged {
                        conversation_id: row.conversation_id.clone(),
                        seq: row.seq as u64,
                    })
                };
                match message.body.as_ref().and_then(|b| b.kind.as_ref()) {
                    Some(pb::message_body::Kind::System(n)) => match n.kind.as_str() {
                        "member_added" => (
                            delivery::inbox_entry::Event::Message(message.clone()),
                            n.user_ids.clone(),
                        ),
                        "member_removed" | "member_left" => (marker(), n.user_ids.clone()),
                        _ => (marker(), Vec::new()),
                    },
                    _ => (marker(), Vec::new()),
                }
            }
            _ => (
                delivery::inbox_entry::Event::Message(message.clone()),
                self.recipients(row).await?,
            ),
        };
        let entry = delivery::InboxEntry { event: Some(entry) };
        // Appends for different users run side by side (each user's chain is
        // serialized inside `Inboxes`), beside the event; all must succeed
        // before the ack.
        let appends = async {
            let mut pending = futures::stream::FuturesUnordered::new();
            for user in recipients {
                if pending.len() >= FANOUT_CONCURRENCY
                    && let Some(result) = pending.next().await
                {
                    let _: u64 = result?;
                }
                let dedup = format!("{}:{user}", row.id);
                pending.push(self.deliver_to(user, &entry, dedup));
            }
            while let Some(result) = pending.next().await {
                result?;
            }
            Ok::<(), FanoutError>(())
        };
        let event = async {
            shared::nats::publish_event(
                &self.jetstream,
                subject::event::MESSAGE_CREATED,
                message.encode_to_vec().into(),
                &row.id,
            )
            .await
            .map_err(|e| FanoutError::Event(e.to_string()))
        };
        let (appended, announced) = futures::join!(appends, event);
        appended?;
        announced?;
        self.writer.fanned_out(row.id.clone()).await;
        Ok(())
    }

    async fn deliver_to(
        &self,
        user: String,
        entry: &delivery::InboxEntry,
        dedup: String,
    ) -> Result<u64, DeliveryError> {
        self.inboxes.deliver(&user, entry, &dedup).await
    }

    /// Fans out the pending messages of one conversation, in seq order
    /// (the caller holds the conversation's order lock).
    async fn fan_out_pending(&self, conversation_id: &str) -> Result<(), RpcError> {
        if self.unsent_known.load(std::sync::atomic::Ordering::Acquire)
            && !self.unsent_set().contains(conversation_id)
        {
            return Ok(());
        }
        let pending = store::not_fanned_out_in(&self.pool, conversation_id)
            .await
            .map_err(|e| internal("load pending messages", e))?;
        for row in &pending {
            self.fan_out(row).await.map_err(|e| {
                tracing::warn!(error = %e, message_id = %row.id, "fan-out of a pending message failed");
                RpcError::unavailable("an earlier message is not yet delivered; retry")
            })?;
        }
        self.unsent_set().remove(conversation_id);
        Ok(())
    }

    /// Fans out messages stored before `before_ms` that are not fanned out.
    /// A conversation whose fan-out fails is left for the next sweep (its
    /// later messages too, to keep their order); the others go on.
    async fn sweep(&self, before_ms: i64) -> Result<usize, FanoutError> {
        let result = self.sweep_pages(before_ms).await;
        // The fanned-out marks are written, then whatever is still pending
        // is noted, so the next send of those conversations delivers it first.
        self.writer.flush().await;
        match store::pending_conversations(&self.pool, before_ms).await {
            Ok(left) => {
                self.unsent_set().extend(left);
                self.unsent_known
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            Err(e) => tracing::warn!(error = %e, "cannot list conversations left pending"),
        }
        result
    }

    async fn sweep_pages(&self, before_ms: i64) -> Result<usize, FanoutError> {
        let mut done = 0;
        loop {
            let rows = store::not_fanned_out(&self.pool, before_ms, 500)
                .await
                .map_err(|e| FanoutError::Event(format!("load pending: {e}")))?;
            let mut failed: HashSet<&str> = HashSet::new();
            let mut progress = 0;
            for row in &rows {
                if self.shutdown.is_cancelled() {
                    return Ok(done);
                }
                if failed.contains(row.conversation_id.as_str()) {
                    continue;
                }
                let _order = self.order[shard_of(&row.conversation_id)].lock().await;
                match self.fan_out(row).await {
                    Ok(()) => progress += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, message_id = %row.id, "sweep fan-out failed");
                        failed.insert(&row.conversation_id);
                    }
                }
            }
            done += progress;
            if rows.len() < 500 || progress == 0 {
                break;
            }
            // The next page must not list this page's messages again.
            self.writer.flush().await;
        }
        if done > 0 {
            tracing::info!(messages = done, "fanned out messages left pending");
        }
        Ok(done)
    }

    async fn history(&self, req: &Request) -> Result<pb::HistoryResponse, RpcError> {
        let me = Identity::from_headers(req.message.headers.as_ref())?;
        let input: pb::HistoryRequest = rpc::decode(&req.message.payload)?;
        let (joined, left) = self.readable(&me, &input.conversation_id).await?;
        let limit = page(input.limit)?;
        let newest_first = input.before_seq > 0 || input.after_seq == 0;
        let before = if input.before_seq > 0 {
            to_i64(input.before_seq)?
        } else {
            i64::MAX
        };
        // A former member reads up to the message that ended its membership.
        let before = if left > 0 {
            before.min(left + 1)
        } else {
            before
        };
        let after = to_i64(input.after_seq)?.max(joined - 1);
        let mut rows = store::history(
            &self.pool,
            &me.user_id,
            &input.conversation_id,
            after,
            before,
            limit + 1,
            newest_first,
        )
        .await
        .map_err(|e| internal("load history", e))?;
        let has_more = rows.len() as i64 > limit;
        if has_more {
            if newest_first {
                rows.remove(0);
            } else {
                rows.pop();
            }
        }
        let mut messages: Vec<pb::Message> = rows.iter().map(to_proto).collect::<Result<_, _>>()?;
        // Long messages: a whole page may not fit in one NATS message.
        let budget = self
            .caller
            .client
            .server_info()
            .max_payload
            .saturating_sub(REPLY_HEADROOM);
        let has_more = fit_page(&mut messages, budget, newest_first) || has_more;
        Ok(pb::HistoryResponse { messages, has_more })
    }

    /// The first seq `me` may read in a conversation; `forbidden` for non-members.
    /// The seqs `me` may read in a conversation: from the first, up to the
    /// second (0 = no end: still a member); `forbidden` for non-members.
    async fn readable(&self, me: &Identity, conversation_id: &str) -> Result<(i64, i64), RpcError> {
        if conversation_id.is_empty() || conversation_id.len() > 200 {
            return Err(RpcError::bad_request(
                "conversation_id is missing or too long",
            ));
        }
        let member = store::member(&self.pool, conversation_id, &me.user_id)
            .await
            .map_err(|e| internal("load membership", e))?;
        match member {
            Some(m) => Ok((m.joined_seq, m.left_seq)),
            // A direct chat that has no message yet: readable, and empty.
            None if ids::direct_participants(conversation_id)
                .is_some_and(|(a, b)| a == me.user_id || b == me.user_id) =>
            {
                Ok((1, 0))
            }
            None => Err(RpcError::forbidden(
                "not a participant of this conversation",
            )),
        }
    }
}

fn ack(row: &MessageRow, duplicate: bool) -> pb::SendAck {
    pb::SendAck {
        message_id: row.id.clone(),
        conversation_id: row.conversation_id.clone(),
        seq: row.seq as u64,
        server_ts_ms: row.server_ts_ms,
        client_msg_id: row.client_msg_id.clone(),
        duplicate,
    }
}

fn to_proto(row: &MessageRow) -> Result<pb::Message, RpcError> {
    let body: Option<pb::MessageBody> =
        serde_json::from_str(&row.body).map_err(|e| internal("decode stored body", e))?;
    let reply_to: Option<pb::Quote> = if row.reply_to.is_empty() {
        None
    } else {
        Some(serde_json::from_str(&row.reply_to).map_err(|e| internal("decode stored quote", e))?)
    };
    Ok(pb::Message {
        id: row.id.clone(),
        conversation_id: row.conversation_id.clone(),
        seq: row.seq as u64,
        sender_id: row.sender_id.clone(),
        sender_device_id: row.sender_device_id.clone(),
        client_msg_id: row.client_msg_id.clone(),
        body,
        server_ts_ms: row.server_ts_ms,
        reply_to,
        group_large: row.group_large != 0,
    })
}

/// Keeps the messages of a page that fit in `budget` encoded bytes, those
/// nearest the page's anchor first: the newest of a `newest_first` page, the
/// oldest of one read forwards. At least one stays (a single message always
/// fits). True when some were left out.
fn fit_page(messages: &mut Vec<pb::Message>, budget: usize, newest_first: bool) -> bool {
    let size = |m: &pb::Message| {
        let len = m.encoded_len();
        1 + prost::length_delimiter_len(len) + len
    };
    let (mut used, mut keep) = (0, 0);
    for i in 0..messages.len() {
        let nearest = if newest_first {
            messages.len() - 1 - i
        } else {
            i
        };
        used += size(&messages[nearest]);
        if keep > 0 && used > budget {
            break;
        }
        keep += 1;
    }
    let left_out = messages.len() - keep;
    if newest_first {
        messages.drain(..left_out);
    } else {
        messages.truncate(keep);
    }
    left_out > 0
}

fn page(limit: u32) -> Result<i64, RpcError> {
    match limit {
        0 => Ok(DEFAULT_PAGE as i64),
        1..=MAX_PAGE => Ok(limit as i64),
        _ => Err(RpcError::bad_request(format!(
            "limit must be within 1..={MAX_PAGE}"
        ))),
    }
}

fn to_i64(seq: u64) -> Result<i64, RpcError> {
    i64::try_from(seq).map_err(|_| RpcError::bad_request("seq out of range"))
}

fn shard_of(key: &str) -> usize {
    shared::inbox::shard_of(key, ORDER_SHARDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_of(seqs: std::ops::RangeInclusive<u64>, text_bytes: usize) -> Vec<pb::Message> {
        seqs.map(|seq| pb::Message {
            seq,
            body: Some(pb::MessageBody {
                kind: Some(pb::message_body::Kind::Text(pb::Text {
                    text: "长".repeat(text_bytes / 3),
                })),
            }),
            ..Default::default()
        })
        .collect()
    }

    fn seqs(messages: &[pb::Message]) -> Vec<u64> {
        messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn a_page_is_cut_to_the_budget_at_its_far_end() {
        // Ten messages of ~12 KB in a 50 KB budget: four fit.
        let mut forwards = page_of(1..=10, 12_000);
        assert!(fit_page(&mut forwards, 50_000, false));
        assert_eq!(seqs(&forwards), [1, 2, 3, 4]);
        let encoded = pb::HistoryResponse {
            messages: forwards,
            has_more: true,
        }
        .encoded_len();
        assert!(encoded <= 50_000, "{encoded}");

        let mut newest = page_of(1..=10, 12_000);
        assert!(fit_page(&mut newest, 50_000, true));
        assert_eq!(seqs(&newest), [7, 8, 9, 10]);
    }

    #[test]
    fn a_page_that_fits_is_left_whole_and_one_message_always_stays() {
        let mut small = page_of(1..=200, 30);
        assert!(!fit_page(&mut small, 1_000_000, false));
        assert_eq!(small.len(), 200);

        let mut huge = page_of(1..=3, 12_000);
        assert!(fit_page(&mut huge, 100, true));
        assert_eq!(seqs(&huge), [3]);
        let mut empty = Vec::new();
        assert!(!fit_page(&mut empty, 0, false));
    }
}
