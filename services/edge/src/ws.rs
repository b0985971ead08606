//! One WebSocket connection: a reader (this task), a writer task fed by a
//! bounded queue, a sender task that forwards sends to the messages service in
//! order through the edge's batcher (started at the first send: an idle
//! connection has none), and a
//! delivery task that replays the user's inbox from a cursor and
//! then forwards live pushes.
//!
//! Delivery never shows a device a gap or a duplicate: it tracks the cursor of
//! the last entry it delivered, forwards a live push only when the push says
//! its predecessor is exactly that cursor, and otherwise reads the inbox to
//! catch up. After a NATS reconnect or a slow-consumer event it catches up
//! too, so a lost push is never a lost message. Large groups (read fan-out)
//! bypass the inbox: see [`large`]. A client that does not drain
//! its queue in time is disconnected and resumes later from its cursor; it
//! never holds up anyone else.
//!
//! Files: [`transport`] (frames in and out), [`commands`] (what the client
//! asks), [`delivery`] (inbox and pushes to the client), [`large`] (large
//! groups), [`coalesce`] (few writes for many frames).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fastwebsockets::upgrade::UpgradeFut;
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError, WebSocketWrite};
use futures::StreamExt;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use shared::endpoint::endpoints::ConversationTyping;
use shared::nats::ConnectionEvent;
use shared::proto::delivery::{InboxEntry, Push};
use shared::proto::edge::{self as pb, client_frame, server_frame};
use shared::proto::message as msg_pb;
use shared::rpc::Identity;
use shared::{RpcError, ids};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::EdgeState;
use crate::frames::{self, Format};
use crate::inbox::Start;

mod coalesce;
mod commands;
mod delivery;
mod large;
mod transport;
use crate::group_hub::GroupPush;
use coalesce::Coalesce;
use commands::{Sends, handle_message};
use delivery::{delivery_loop, rand_millis};
use large::{Large, News};
use transport::{read_loop, write_loop};

type Writer = WebSocketWrite<Coalesce<tokio::io::WriteHalf<TokioIo<Upgraded>>>>;
/// Frames already queued are written together, up to this many.
const COALESCED_FRAMES: usize = 64;

/// Close codes the edge uses besides the standard ones.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    /// A text message that is not UTF-8 (RFC 6455 7.4.1).
    pub const INVALID_DATA: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    /// The client did not read its frames in time; resume later.
    pub const SLOW_CLIENT: u16 = 4008;
    /// No frame from the client within the idle timeout.
    pub const IDLE: u16 = 4000;
}

/// Both variants are boxed: a queue slot is 16 bytes, and the queue's
/// first block (32 slots, allocated with the queue) is 512 bytes of every
/// connection, idle or not. Control frames are rare (pings, pongs, the close).
enum Out {
    Frame(Box<pb::ServerFrame>),
    Control(Box<(OpCode, Vec<u8>)>),
}

const _: () = assert!(std::mem::size_of::<Out>() == 16);

/// What the tasks of one connection share.
struct Conn {
    who: Identity,
    /// Its id among the connections of this edge (see `Sessions`).
    id: u64,
    /// When its access token expires (Unix ms): the connection closes then,
    /// unless an `auth` frame brought a later token.
    expires_at_ms: AtomicI64,
    binary: AtomicBool,
    out: mpsc::Sender<Out>,
    cancel: CancellationToken,
    close_reason: Mutex<Option<(u16, String)>>,
    /// Cursor of the last inbox entry handed to the writer.
    delivered: AtomicU64,
    /// Highest cursor the client acked.
    acked: AtomicU64,
    /// The `client_msg_id`s of sends made on this connection whose push has
    /// not come yet: the connection that sent a message gets its ack, not
    /// the message again (the user's other connections get the push).
    echoes: Mutex<std::collections::VecDeque<String>>,
    slow_timeout: Duration,
    /// The large groups this connection follows (used by the delivery task
    /// only; behind a lock so inbox delivery can reach it too).
    large: tokio::sync::Mutex<Large>,
}

/// Sends remembered per connection for [`Conn::echoes`] at most (older ones
/// are forgotten: their push, if it comes, is forwarded).
const MAX_ECHOES: usize = 1024;

impl Conn {
    /// Notes a send made on this connection.
    fn sending(&self, client_msg_id: &str) {
        let mut echoes = shared::sync::lock(&self.echoes);
        if echoes.len() >= MAX_ECHOES {
            echoes.pop_front();
        }
        echoes.push_back(client_msg_id.to_owned());
    }

    /// Forgets a send that was not stored (no push will come).
    fn not_sent(&self, client_msg_id: &str) {
        let mut echoes = shared::sync::lock(&self.echoes);
        if let Some(i) = echoes.iter().position(|c| c == client_msg_id) {
            echoes.remove(i);
        }
    }

    /// Whether `entry` is a message this connection sent (and is waiting
    /// for): then it is not sent back to it.
    fn is_echo(&self, entry: &InboxEntry) -> bool {
        use shared::proto::delivery::inbox_entry::Event;
        match &entry.event {
            Some(Event::Message(m)) => self.is_echo_of(m),
            _ => false,
        }
    }

    /// [`Conn::is_echo`] of a message (of a large group, too).
    fn is_echo_of(&self, m: &msg_pb::Message) -> bool {
        if m.sender_device_id != self.who.device_id.as_str() || m.client_msg_id.is_empty() {
            return false;
        }
        let mut echoes = shared::sync::lock(&self.echoes);
        match echoes.iter().position(|c| *c == m.client_msg_id) {
            Some(i) => {
                echoes.remove(i);
                true
            }
            None => false,
        }
    }

    fn format(&self) -> Format {
        if self.binary.load(Ordering::Relaxed) {
            Format::Binary
        } else {
            Format::Json
        }
    }

    /// Queues a frame; false when the connection is closing. A queue that
    /// stays full for the slow-client timeout closes the connection.
    async fn send(&self, frame: pb::ServerFrame) -> bool {
        match self
            .out
            .send_timeout(Out::Frame(Box::new(frame)), self.slow_timeout)
            .await
        {
            Ok(()) => true,
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                self.close(close::SLOW_CLIENT, "slow client: resume from your cursor");
                false
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
        }
    }

    fn close(&self, code: u16, reason: &str) {
        let mut slot = shared::sync::lock(&self.close_reason);
        if slot.is_none() {
            *slot = Some((code, reason.to_owned()));
        }
        drop(slot);
        self.cancel.cancel();
    }
}

impl crate::sessions::Session for Conn {
    fn end(&self, code: u16, reason: &str) {
        self.close(code, reason);
    }
}

/// Runs a connection to its end. `cancel` is a child of the edge's shutdown.
pub async fn run(
    state: Arc<EdgeState>,
    verified: crate::keyring::Verified,
    upgrade: UpgradeFut,
    format: Format,
    cancel: CancellationToken,
) {
    let who = verified.who;
    // The one-off steps are boxed: a connection's future keeps only the
    // size of what it waits on for most of its life (the next frame).
    let ws = match Box::pin(upgrade).await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return;
        }
    };
    let config = &state.config;
    let mut ws = ws;
    ws.set_max_message_size(config.max_frame_bytes);
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    let (mut reader, writer) = ws.split(|io| {
        let (read, write) = tokio::io::split(io);
        (read, Coalesce::new(write))
    });

    let id = state.group_hub.connection_id();
    let entries = match Box::pin(
        state
            .push_hub
            .join(who.user_id.as_str(), id, config.send_queue),
    )
    .await
    {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(error = %e, "cannot subscribe to pushes");
            return;
        }
    };
    // Leaves the push hub however this function ends.
    struct Joined<'a>(&'a EdgeState, &'a str, u64);
    impl Drop for Joined<'_> {
        fn drop(&mut self) {
            self.0.push_hub.leave(self.1, self.2);
        }
    }
    let _joined = Joined(&state, who.user_id.as_str(), id);
    // Without the stored cursor a `resume` from it could replay the whole
    // inbox: better to close and let the client retry.
    let mut writer = writer;
    let acked = match Box::pin(state.inbox.acked_cursor(&who.user_id, &who.device_id)).await {
        Ok(cursor) => cursor,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read acked cursor");
            let close = Frame::close(close::INTERNAL, b"cursor store unavailable: retry");
            let _ = Box::pin(async {
                writer.write_frame(close).await?;
                writer.flush().await
            })
            .await;
            return;
        }
    };

    let (out_tx, out_rx) = mpsc::channel(config.send_queue);
    let large = Large::new(&state);
    let conn = Arc::new(Conn {
        who: who.clone(),
        id,
        expires_at_ms: AtomicI64::new(verified.expires_at_secs.saturating_mul(1000)),
        binary: AtomicBool::new(format == Format::Binary),
        out: out_tx,
        cancel,
        close_reason: Mutex::new(None),
        delivered: AtomicU64::new(0),
        acked: AtomicU64::new(acked),
        echoes: Mutex::new(std::collections::VecDeque::new()),
        slow_timeout: Duration::from_secs(config.slow_client_timeout_secs),
        large: tokio::sync::Mutex::new(large),
    });
    tracing::debug!(user = %who.user_id, device = %who.device_id, "connected");
    let session: std::sync::Weak<dyn crate::sessions::Session> = Arc::downgrade(&conn) as _;
    state.sessions.opened(&who, conn.id, session);
    // A session that ended while this one was being set up.
    if state.sessions.is_revoked(&who, verified.issued_at_ms) {
        conn.close(
            crate::sessions::SESSION_ENDED,
            "session ended: log in again",
        );
    }
    Box::pin(state.devices.connected(&who)).await;

    let writer = tokio::spawn(write_loop(
        writer,
        out_rx,
        conn.clone(),
        Duration::from_secs(config.ping_interval_secs),
    ));
    let mut sends = None;
    let (resume_tx, resume_rx) = mpsc::channel(4);
    let delivery = tokio::spawn(delivery_loop(
        state.clone(),
        conn.clone(),
        entries,
        resume_rx,
        state.nats.events(),
        acked,
    ));

    let welcome = pb::Welcome {
        user_id: who.user_id.to_string(),
        device_id: who.device_id.to_string(),
        acked_cursor: acked,
        idle_timeout_secs: config.idle_timeout_secs as u32,
        max_frame_bytes: config.max_frame_bytes as u32,
        expires_at_ms: conn.expires_at_ms.load(Ordering::Acquire),
    };
    if Box::pin(conn.send(frames::reply(0, server_frame::Kind::Welcome(welcome)))).await {
        read_loop(&state, &conn, &mut reader, &mut sends, &resume_tx).await;
    }

    if state.shutdown.is_cancelled() {
        conn.close(close::GOING_AWAY, "server shutting down");
    } else {
        conn.close(close::NORMAL, "bye");
    }
    drop(resume_tx);
    let sender = sends.map(|sends| sends.task);
    Box::pin(async {
        let sender = async {
            if let Some(task) = sender {
                let _ = task.await;
            }
        };
        let _ = tokio::join!(writer, sender, delivery);
        state.sessions.closed(&who, conn.id);
        state.devices.disconnected(&who).await;
    })
    .await;
    tracing::debug!(user = %who.user_id, device = %who.device_id, "disconnected");
}
