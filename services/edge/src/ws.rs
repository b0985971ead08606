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
type Reader = fastwebsockets::WebSocketRead<transport::ReadSide>;

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
    /// Bytes written since the last flush (about: frame headers counted at
    /// their largest).
    buffered: usize,
}

impl Output {
    /// Writes a frame into the buffer, which takes it without waiting;
    /// false when the connection is closed.
    fn put(&mut self, frame: Frame<'static>, cancel: &CancellationToken) -> bool {
        use futures::FutureExt;
        if self.closed {
            return false;
        }
        let closing = frame.opcode == OpCode::Close;
        let size = frame.payload.len() + 14;
        match self.writer.write_frame(frame).now_or_never() {
            Some(Ok(())) => {
                self.dirty = true;
                self.closed = closing;
                self.buffered += size;
                true
            }
            // The buffer never waits, so this is an error of the socket.
            Some(Err(_)) | None => {
                self.closed = true;
                cancel.cancel();
                false
            }
        }
    }
}

/// A write done at once, or what is left to wait for.
enum Now {
    Done(bool),
    /// The frame, if the writer was busy, then the flush of a full buffer.
    Later(Option<Frame<'static>>),
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

    /// Forgets a send whose push will not come: it was not stored, or its
    /// sender's inbox has no copy of it.
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
    fn send(&self, frame: pb::ServerFrame) -> impl Future<Output = bool> + Send + '_ {
        let format = self.format();
        let bytes = frames::encode(format, &frame);
        let frame = match format {
            Format::Json => Frame::text(Payload::Owned(bytes)),
            Format::Binary => Frame::binary(Payload::Owned(bytes)),
        };
        self.write(frame)
    }

    /// Writes any frame (see [`Conn::send`]). Writing into the buffer needs
    /// no waiting, so it is done before the returned future is polled, and
    /// that future (kept in the connection's task while it waits) only
    /// holds the rare wait for a client to take a full buffer.
    fn write(&self, frame: Frame<'static>) -> impl Future<Output = bool> + Send + '_ {
        let now = self.write_now(frame);
        async move {
            match now {
                Now::Done(ok) => ok,
                Now::Later(frame) => Box::pin(self.write_later(frame)).await,
            }
        }
    }

    fn write_now(&self, frame: Frame<'static>) -> Now {
        if self.cancel.is_cancelled() {
            return Now::Done(false);
        }
        let Ok(mut out) = self.out.try_lock() else {
            return Now::Later(Some(frame));
        };
        let ok = out.put(frame, &self.cancel);
        if ok && out.buffered >= coalesce::LIMIT {
            return Now::Later(None);
        }
        Now::Done(ok)
    }

    /// Writes `frame` (when it could not be written at once), then sends
    /// everything buffered.
    async fn write_later(&self, frame: Option<Frame<'static>>) -> bool {
        let mut out = self.out.lock().await;
        if let Some(frame) = frame
            && !out.put(frame, &self.cancel)
        {
            return false;
        }
        self.drain(&mut out).await
    }

    /// Sends what was written; false when the connection is closing.
    fn flush(&self) -> impl Future<Output = bool> + Send + '_ {
        let now = self.flush_now();
        async move {
            match now {
                Some(ok) => ok,
                None => Box::pin(async { self.drain(&mut *self.out.lock().await).await }).await,
            }
        }
    }

    /// [`Conn::flush`] when the socket takes everything at once; None when
    /// it has to wait.
    fn flush_now(&self) -> Option<bool> {
        use futures::FutureExt;
        let mut out = self.out.try_lock().ok()?;
        if !out.dirty {
            return Some(!out.closed);
        }
        // Polled once: what the socket took is remembered (`Coalesce`).
        match out.writer.flush().now_or_never()? {
            Ok(()) => {
                out.dirty = false;
                out.buffered = 0;
                Some(!out.closed)
            }
            Err(_) => {
                out.closed = true;
                self.cancel.cancel();
                Some(false)
            }
        }
    }

    /// Sends everything buffered, waiting up to the slow-client timeout.
    async fn drain(&self, out: &mut Output) -> bool {
        if !out.dirty {
            return !out.closed;
        }
        match tokio::time::timeout(self.slow_timeout, out.writer.flush()).await {
            Ok(Ok(())) => {
                out.dirty = false;
                out.buffered = 0;
                !out.closed
            }
            Ok(Err(_)) => {
                out.closed = true;
                self.cancel.cancel();
                false
            }
            // The goodbye still tries to send the close frame (for a second).
            Err(_) => {
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

/// Leaves the push hub when dropped, however the connection ends (and
/// drops the guard [`run`] was given).
struct Joined {
    state: Arc<EdgeState>,
    user: shared::ids::UserId,
    id: u64,
    _guard: Box<dyn Send + Sync>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.state.push_hub.leave(self.user.as_str(), self.id);
    }
}

/// A connection set up and greeted: what it needs for the rest of its life.
struct Live {
    joined: Joined,
    conn: Arc<Conn>,
    mailbox: Arc<crate::push_hub::Mailbox>,
    side: transport::ReadSide,
    acked: u64,
}

/// Runs a connection to its end. `cancel` is a child of the edge's
/// shutdown; `guard` is held until the connection ends.
///
/// The set-up is a boxed future of its own, freed once it is done, and the
/// arguments go into it: the future an idle connection keeps holds only
/// what its life needs: 1.35 KB (with the set-up's steps and arguments
/// inline it was 5 KB).
pub fn run(
    state: Arc<EdgeState>,
    verified: crate::keyring::Verified,
    upgrade: UpgradeFut,
    format: Format,
    cancel: CancellationToken,
    guard: Box<dyn Send + Sync>,
) -> impl Future<Output = ()> + Send {
    let setup = Box::pin(set_up(state, verified, upgrade, format, cancel, guard));
    async move {
        let Some(Live {
            joined,
            conn,
            mailbox,
            side,
            acked,
        }) = setup.await
        else {
            return;
        };
        let mut task = task::Task::new(&joined.state, &conn, mailbox, acked);
        task.run(side).await;
        let stored = task.stored;
        Box::pin(Ended { joined, conn }.end(stored)).await;
    }
}

/// Upgrades, joins the push hub, reads the acked cursor and greets; None
/// when the connection ended meanwhile.
async fn set_up(
    state: Arc<EdgeState>,
    verified: crate::keyring::Verified,
    upgrade: UpgradeFut,
    format: Format,
    cancel: CancellationToken,
    guard: Box<dyn Send + Sync>,
) -> Option<Live> {
    let who = verified.who;
    let ws = match upgrade.await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return None;
        }
    };
    let config = &state.config;
    // Frames are read by readers made and dropped as the connection wakes
    // and sleeps (see `transport::ReadSide`); the writer stays.
    let (read, write) = tokio::io::split(ws.into_inner());
    let side = transport::ReadSide::new(read);
    let (_, mut writer) = fastwebsockets::after_handshake_split(
        tokio::io::empty(),
        Coalesce::new(write),
        fastwebsockets::Role::Server,
    );
    // Every frame with a payload goes to the write buffer as a header and
    // its payload: the writer's own frame buffer, which grows to the
    // largest frame under the threshold and stays, stays empty.
    writer.set_writev_threshold(0);

    let id = state.group_hub.connection_id();
    let mailbox = state
        .push_hub
        .join(who.user_id.as_str(), id, config.send_queue);
    let joined = Joined {
        state: state.clone(),
        user: who.user_id.clone(),
        id,
        _guard: guard,
    };
    let conn = Arc::new(Conn {
        who: who.clone(),
        id,
        expires_at_ms: AtomicI64::new(verified.expires_at_secs.saturating_mul(1000)),
        binary: AtomicBool::new(format == Format::Binary),
        out: tokio::sync::Mutex::new(Output {
            writer,
            dirty: false,
            closed: false,
            buffered: 0,
        }),
        cancel,
        close_reason: Mutex::new(None),
        delivered: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        echoes: Mutex::new(std::collections::VecDeque::new()),
        slow_timeout: Duration::from_secs(config.slow_client_timeout_secs),
        large: tokio::sync::Mutex::new(Large::new(&state)),
    });
    if let Err(e) = state.push_hub.subscribe(who.user_id.as_str()).await {
        tracing::warn!(error = %e, "cannot subscribe to pushes");
        return None;
    }
    // Without the stored cursor a `resume` from it could replay the whole
    // inbox: better to close and let the client retry.
    let acked = match state.inbox.acked_cursor(&who.user_id, &who.device_id).await {
        Ok(cursor) => cursor,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read acked cursor");
            conn.close(close::INTERNAL, "cursor store unavailable: retry");
            conn.say_goodbye().await;
            return None;
        }
    };
    conn.acked.store(acked, Ordering::Release);
    tracing::debug!(user = %who.user_id, device = %who.device_id, "connected");
    let session: std::sync::Weak<dyn crate::sessions::Session> = Arc::downgrade(&conn) as _;
    state.sessions.opened(&who, conn.id, session);
    let live = Live {
        joined,
        conn,
        mailbox,
        side,
        acked,
    };
    // A session that ended while this one was being set up.
    if state.sessions.is_revoked(&who, verified.issued_at_ms) {
        live.conn.close(
            crate::sessions::SESSION_ENDED,
            "session ended: log in again",
        );
    }
    state.devices.connected(&who).await;

    let welcome = pb::Welcome {
        user_id: who.user_id.to_string(),
        device_id: who.device_id.to_string(),
        acked_cursor: acked,
        idle_timeout_secs: config.idle_timeout_secs as u32,
        max_frame_bytes: config.max_frame_bytes as u32,
        expires_at_ms: live.conn.expires_at_ms.load(Ordering::Acquire),
    };
    let conn = &live.conn;
    let greeted = conn
        .send(frames::reply(0, server_frame::Kind::Welcome(welcome)))
        .await
        && conn.flush().await;
    if !greeted {
        // Registered above: the ending is the same as after a life.
        let ended = Ended {
            joined: live.joined,
            conn: live.conn,
        };
        Box::pin(ended.end(acked)).await;
        return None;
    }
    Some(live)
}

/// A connection whose life is over: its goodbye and its leaving.
struct Ended {
    joined: Joined,
    conn: Arc<Conn>,
}

impl Ended {
    async fn end(self, stored: u64) {
        let (state, conn) = (&self.joined.state, &self.conn);
        let who = &conn.who;
        if state.shutdown.is_cancelled() {
            conn.close(close::GOING_AWAY, "server shutting down");
        } else {
            conn.close(close::NORMAL, "bye");
        }
        conn.say_goodbye().await;
        conn.large.lock().await.leave_all(state).await;
        delivery::flush_cursor(state, conn, stored).await;
        state.sessions.closed(who, conn.id);
        state.devices.disconnected(who).await;
        tracing::debug!(user = %who.user_id, device = %who.device_id, "disconnected");
    }
}
