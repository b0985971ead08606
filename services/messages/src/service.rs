//! The messages service: its state, its endpoints (`im.v1.message.*` and
//! `im.v1.conversation.*`, defined in [`shared::endpoint::endpoints`]) and
//! its background work (the periodic fan-out sweep, the relation cache).
//!
//! One idea per file below: [`send`], [`batch`] (an edge's batch of sends),
//! [`apply`] (group changes),
//! [`fanout`] (deliver, the pending set, the sweep), [`files`] (the files
//! a message references), [`history`],
//! [`reads`] (read positions and receipts), [`recall`] (recall and delete
//! for me), [`transcripts`] (voice messages' text) and [`conversation`] (the list, flags, typing, large groups).

mod apply;
mod batch;
mod conversation;
mod fanout;
mod files;
mod history;
mod reads;
mod recall;
mod search;
mod send;
mod transcripts;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use shared::endpoint::Server;
use shared::endpoint::endpoints::*;
use shared::proto::message as pb;
use shared::rpc::{Caller, internal};
use shared::service::StartError;
use shared::{Nats, RpcError, db, ids};
use tokio_util::sync::CancellationToken;

pub use fanout::FanoutError;

use crate::Config;
use crate::relations::Relations;
use crate::store::{self, MessageRow};
use crate::writer::Writer;
use shared::inbox::Inboxes;
use shared::push_routes::PushRoutes;

struct State {
    config: Config,
    /// Reads; writes go through `write` (see [`db::Pools`]).
    pool: db::AnyPool,
    write: db::AnyPool,
    writer: Writer,
    relations: Relations,
    /// Which senders have several devices (their messages get a copy in
    /// their own inbox).
    devices: crate::devices::Devices,
    /// Conversations with a message stored but not fanned out: their last
    /// fan-out here failed, or a sweep found one left over (a crash, another
    /// instance). Their next send or change fans out what is pending first,
    /// so inbox order follows seq order.
    pending: std::sync::Mutex<HashSet<String>>,
    /// Whether `pending` is complete: false until a sweep has read the
    /// conversations left pending; meanwhile every send asks the database.
    pending_known: AtomicBool,
    inboxes: Inboxes,
    jetstream: async_nats::jetstream::Context,
    caller: Caller,
    /// Per-conversation ordering: a send (or a batch) holds its
    /// conversations from storing through fan-out, so inbox entries follow
    /// seq order.
    order: shared::sync::KeyLocks,
    shutdown: CancellationToken,
}

/// Runs the messages service until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    nats: Nats,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    config.validate()?;
    let pools = db::connect_pools(&config.database_url, 8, &store::MIGRATOR).await?;
    let stream = shared::nats::inbox_stream(&nats.jetstream, &config.streams).await?;
    shared::nats::events_stream(&nats.jetstream, &config.streams).await?;
    // Pushes go per edge once the presence bucket says where users are.
    let routes = Arc::new(PushRoutes::new(shared::push_routes::SETTLE));
    let state = Arc::new(State {
        inboxes: Inboxes::new(nats.client.clone(), nats.jetstream.clone(), stream)
            .with_routes(routes.clone()),
        jetstream: nats.jetstream.clone(),
        caller: nats.caller(),
        order: shared::sync::KeyLocks::default(),
        shutdown: shutdown.clone(),
        writer: Writer::start(&pools)
            .map_err(|e| StartError::setup("open the SQLite writer", e))?,
        relations: Relations::subscribe(&nats.client, nats.events())
            .await
            .map_err(|e| StartError::setup("subscribe to social events", e))?,
        devices: crate::devices::Devices::subscribe(&nats.client, nats.events())
            .await
            .map_err(|e| StartError::setup("subscribe to device events", e))?,
        pending: std::sync::Mutex::new(HashSet::new()),
        pending_known: AtomicBool::new(false),
        pool: pools.read,
        write: pools.write,
        config,
    });

    // Deliver whatever a crash left undelivered. A conversation this fails
    // for is retried by the periodic sweep, or by its next send (which fans
    // out the earlier messages first: the sweep notes which are left).
    if let Err(e) = state.sweep(i64::MAX).await {
        tracing::warn!(error = %e, "startup fan-out sweep failed; retrying later");
    }

    let sends = state.config.max_concurrent_sends;
    let server = Server::start(
        &nats.client,
        crate::MICRO_NAME,
        "natter conversations and messages",
        state.clone(),
        shutdown.clone(),
    )
    .await?
    .serve::<MessageSend, _, _>(sends, State::send)
    .serve::<MessageSendBatch, _, _>(16, State::send_batch)
    .serve::<MessageHistory, _, _>(64, State::history)
    .serve::<MessageRecall, _, _>(32, State::recall)
    .serve::<MessageDelete, _, _>(32, State::delete)
    .serve::<MessageReads, _, _>(32, State::reads)
    .serve::<MessageFileAccess, _, _>(64, State::file_access)
    .serve::<MessageFilesUsed, _, _>(4, State::files_used)
    .serve::<MessageTranscript, _, _>(16, State::transcript)
    .serve::<MessageTranscribe, _, _>(16, State::transcribe)
    .serve::<MessageSearchScope, _, _>(32, State::search_scope)
    .serve::<MessageVisible, _, _>(32, State::visible)
    .serve::<MessageExport, _, _>(2, State::export)
    .serve::<ConversationList, _, _>(64, State::conversations)
    .serve::<ConversationRead, _, _>(64, State::read)
    .serve::<ConversationSettings, _, _>(32, State::settings)
    .serve::<ConversationTyping, _, _>(64, State::typing)
    .serve::<ConversationLarge, _, _>(64, State::large_groups)
    .serve::<ConversationHeads, _, _>(16, State::group_heads)
    .serve::<ConversationApply, _, _>(32, State::apply)
    .listen()
    .await?;
    tracing::info!("messages service ready");

    let sweep = periodic_sweep(state.clone(), shutdown.clone());
    let s = state.clone();
    let drainer = shutdown.clone();
    let drain = async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = drainer.cancelled() => break,
                _ = tick.tick() => {
                    s.relations.drain();
                    s.devices.drain();
                }
            }
        }
    };
    let follow = routes.follow(nats.jetstream.clone(), shutdown.clone());
    tokio::join!(server.run(), sweep, drain, follow);
    state.writer.flush().await;
    tracing::info!("messages service stopped");
    Ok(())
}

/// Every `sweep_interval_secs`, fans out the messages old enough that their
/// own send has given up.
async fn periodic_sweep(state: Arc<State>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(state.config.sweep_interval_secs));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                let before = ids::now_ms() - 10_000;
                if let Err(e) = state.sweep(before).await {
                    tracing::warn!(error = %e, "fan-out sweep failed");
                }
            }
        }
    }
}

impl State {
    /// How long a sender may recall its message, in milliseconds.
    fn recall_window_ms(&self) -> i64 {
        i64::try_from(self.config.recall_window_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

/// A stored message on the wire, its body and quote decoded from the row.
fn to_proto(row: &MessageRow, recall_window_ms: i64) -> Result<pb::Message, RpcError> {
    let body: Option<pb::MessageBody> =
        serde_json::from_str(&row.body).map_err(|e| internal("decode stored body", e))?;
    let reply_to: Option<pb::Quote> = if row.reply_to.is_empty() {
        None
    } else {
        Some(serde_json::from_str(&row.reply_to).map_err(|e| internal("decode stored quote", e))?)
    };
    Ok(wire(row, body, reply_to, recall_window_ms))
}

/// A stored message on the wire with the body and quote given.
fn wire(
    row: &MessageRow,
    body: Option<pb::MessageBody>,
    reply_to: Option<pb::Quote>,
    recall_window_ms: i64,
) -> pb::Message {
    use pb::message_body::Kind;
    let recallable = body.as_ref().is_some_and(|b| {
        !matches!(
            b.kind,
            Some(Kind::System(_)) | Some(Kind::Recalled(_)) | None
        )
    });
    pb::Message {
        id: row.id.clone(),
        conversation_id: row.conversation_id.clone(),
        seq: row.seq as u64,
        sender_id: row.sender_id.clone(),
        sender_device_id: row.sender_device_id.clone(),
        client_msg_id: row.client_msg_id.clone(),
        body,
        server_ts_ms: row.server_ts_ms,
        reply_to,
        group_large: row.group_large,
        recall_until_ms: if recallable {
            row.server_ts_ms.saturating_add(recall_window_ms)
        } else {
            0
        },
    }
}

fn to_i64(seq: u64) -> Result<i64, RpcError> {
    i64::try_from(seq).map_err(|_| RpcError::bad_request("seq out of range"))
}
