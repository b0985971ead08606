//! One WebSocket connection, run by one task: it selects over the
//! socket's next frame, the pushes the edge's hub hands it, the answers to
//! its sends, its large groups' messages and one timer (pings, the idle
//! timeout, the token's expiry, the cursor's flush, the inbox check), and
//! writes its frames itself, coalesced into one system call per step.
//!
//! Delivery never shows a device a gap or a duplicate: it tracks the cursor of
//! the last entry it delivered, forwards a live push only when the push says
//! its predecessor is exactly that cursor, and otherwise reads the inbox to
//! catch up. After a NATS reconnect or a slow-consumer event it catches up
//! too, so a lost push is never a lost message. Large groups (read fan-out)
//! bypass the inbox: see [`large`]. A client that does not read its frames
//! in time is disconnected and resumes later from its cursor; it never holds
//! up anyone else.
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
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::EdgeState;
use crate::frames::{self, Format};
use crate::inbox::Start;

mod coalesce;
mod commands;
mod delivery;
mod large;
mod task;
mod transport;
use crate::group_hub::GroupPush;
use coalesce::Coalesce;
use large::{Large, News};

type Writer = WebSocketWrite<Coalesce<tokio::io::WriteHalf<TokioIo<Upgraded>>>>;
type Reader = fastwebsockets::WebSocketRead<tokio::io::ReadHalf<TokioIo<Upgraded>>>;

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

/// The writing side of a connection: frames written go into its buffer
/// ([`Coalesce`]) and out at the end of the task's step ([`Conn::flush`]).
struct Output {
    writer: Writer,
    /// Frames were written since the last flush.
    dirty: bool,
    /// The close frame went out: nothing more may.
    closed: bool,
}

/// A connection's state, shared with the edge's session registry (which
/// may end it) and the steps of its task.
struct Conn {
    who: Identity,
    /// Its id among the connections of this edge (see `Sessions`).
    id: u64,
    /// When its access token expires (Unix ms): the connection closes then,
    /// unless an `auth` frame brought a later token.
    expires_at_ms: AtomicI64,
    binary: AtomicBool,
    out: tokio::sync::Mutex<Output>,
    cancel: CancellationToken,
    close_reason: Mutex<Option<(u16, String)>>,
    /// Cursor of the last inbox entry written to the client.
    delivered: AtomicU64,
    /// Highest cursor the client acked.
    acked: AtomicU64,
    /// The `client_msg_id`s of sends made on this connection whose push has
    /// not come yet: the connection that sent a message gets its ack, not
    /// the message again (the user's other connections get the push).
    echoes: Mutex<std::collections::VecDeque<String>>,
    slow_timeout: Duration,
    /// The large groups this connection follows.
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

    /// Writes a frame (it goes out at the step's flush, or at once when
    /// much is buffered); false when the connection is closing. A client
    /// that does not take what is written within the slow-client timeout
    /// is disconnected.
    async fn send(&self, frame: pb::ServerFrame) -> bool {
        let format = self.format();
        let bytes = frames::encode(format, &frame);
        let frame = match format {
            Format::Json => Frame::text(Payload::Owned(bytes)),
            Format::Binary => Frame::binary(Payload::Owned(bytes)),
        };
        self.write(frame).await
    }

    /// Writes any frame (see [`Conn::send`]).
    async fn write(&self, frame: Frame<'_>) -> bool {
        if self.cancel.is_cancelled() {
            return false;
        }
        let mut out = self.out.lock().await;
        if out.closed {
            return false;
        }
        let closing = frame.opcode == OpCode::Close;
        match tokio::time::timeout(self.slow_timeout, out.writer.write_frame(frame)).await {
            Ok(Ok(())) => {
                out.dirty = true;
                out.closed = closing;
                true
            }
            Ok(Err(_)) => {
                out.closed = true;
                self.cancel.cancel();
                false
            }
            Err(_) => {
                out.closed = true;
                drop(out);
                self.close(close::SLOW_CLIENT, "slow client: resume from your cursor");
                false
            }
        }
    }

    /// Sends what was written; false when the connection is closing.
    async fn flush(&self) -> bool {
        let mut out = self.out.lock().await;
        if !out.dirty {
            return !out.closed;
        }
        out.dirty = false;
        match tokio::time::timeout(self.slow_timeout, out.writer.flush()).await {
            Ok(Ok(())) => !out.closed,
            Ok(Err(_)) => {
                out.closed = true;
                self.cancel.cancel();
                false
            }
            Err(_) => {
                out.closed = true;
                drop(out);
                self.close(close::SLOW_CLIENT, "slow client: resume from your cursor");
                false
            }
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

    /// Writes the close frame with the reason given to [`Conn::close`]
    /// (unless the connection is gone or closed already).
    async fn say_goodbye(&self) {
        let mut out = self.out.lock().await;
        if out.closed {
            return;
        }
        out.closed = true;
        let (code, reason) = shared::sync::lock(&self.close_reason)
            .clone()
            .unwrap_or((close::GOING_AWAY, "server shutting down".into()));
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            out.writer
                .write_frame(Frame::close(code, reason.as_bytes()))
                .await?;
            out.writer.flush().await
        })
        .await;
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
    // size of what it waits on for most of its life.
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
    let (reader, writer) = ws.split(|io| {
        let (read, write) = tokio::io::split(io);
        (read, Coalesce::new(write))
    });

    let id = state.group_hub.connection_id();
    let mailbox = state
        .push_hub
        .join(who.user_id.as_str(), id, config.send_queue);
    // Leaves the push hub however this function ends.
    struct Joined<'a>(&'a EdgeState, &'a str, u64);
    impl Drop for Joined<'_> {
        fn drop(&mut self) {
            self.0.push_hub.leave(self.1, self.2);
        }
    }
    let _joined = Joined(&state, who.user_id.as_str(), id);
    let conn = Arc::new(Conn {
        who: who.clone(),
        id,
        expires_at_ms: AtomicI64::new(verified.expires_at_secs.saturating_mul(1000)),
        binary: AtomicBool::new(format == Format::Binary),
        out: tokio::sync::Mutex::new(Output {
            writer,
            dirty: false,
            closed: false,
        }),
        cancel,
        close_reason: Mutex::new(None),
        delivered: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        echoes: Mutex::new(std::collections::VecDeque::new()),
        slow_timeout: Duration::from_secs(config.slow_client_timeout_secs),
        large: tokio::sync::Mutex::new(Large::new(&state)),
    });
    let subscribed = Box::pin(state.push_hub.subscribe(who.user_id.as_str())).await;
    // Without the stored cursor a `resume` from it could replay the whole
    // inbox: better to close and let the client retry.
    let acked = match subscribed {
        Err(e) => {
            tracing::warn!(error = %e, "cannot subscribe to pushes");
            return;
        }
        Ok(()) => Box::pin(state.inbox.acked_cursor(&who.user_id, &who.device_id)).await,
    };
    let acked = match acked {
        Ok(cursor) => cursor,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read acked cursor");
            conn.close(close::INTERNAL, "cursor store unavailable: retry");
            Box::pin(conn.say_goodbye()).await;
            return;
        }
    };
    conn.acked.store(acked, Ordering::Release);
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

    let welcome = pb::Welcome {
        user_id: who.user_id.to_string(),
        device_id: who.device_id.to_string(),
        acked_cursor: acked,
        idle_timeout_secs: config.idle_timeout_secs as u32,
        max_frame_bytes: config.max_frame_bytes as u32,
        expires_at_ms: conn.expires_at_ms.load(Ordering::Acquire),
    };
    let greeted = Box::pin(async {
        conn.send(frames::reply(0, server_frame::Kind::Welcome(welcome)))
            .await
            && conn.flush().await
    })
    .await;
    let mut stored = acked;
    if greeted {
        let mut task = task::Task::new(&state, &conn, mailbox, acked);
        task.run(reader).await;
        stored = task.stored;
    }

    if state.shutdown.is_cancelled() {
        conn.close(close::GOING_AWAY, "server shutting down");
    } else {
        conn.close(close::NORMAL, "bye");
    }
    Box::pin(async {
        conn.say_goodbye().await;
        conn.large.lock().await.leave_all(&state).await;
        delivery::flush_cursor(&state, &conn, stored).await;
        state.sessions.closed(&who, conn.id);
        state.devices.disconnected(&who).await;
    })
    .await;
    tracing::debug!(user = %who.user_id, device = %who.device_id, "disconnected");
}
