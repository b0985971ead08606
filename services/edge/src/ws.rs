//! One WebSocket connection: a reader (this task), a writer task fed by a
//! bounded queue, a sender task that forwards sends to the messages service in
//! order (started at the first send: an idle connection has none), and a
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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fastwebsockets::upgrade::UpgradeFut;
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError, WebSocketWrite};
use futures::StreamExt;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use shared::endpoint::endpoints::{ConversationTyping, MessageSend};
use shared::nats::ConnectionEvent;
use shared::proto::delivery::{InboxEntry, Push};
use shared::proto::edge::{self as pb, client_frame, server_frame};
use shared::proto::message as msg_pb;
use shared::rpc::Identity;
use shared::{RpcError, ids, subject};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::EdgeState;
use crate::frames::{self, Format};
use crate::inbox::Start;

mod coalesce;
mod large;
use crate::groups::GroupPush;
use coalesce::Coalesce;
use large::{Large, News};

type Writer = WebSocketWrite<Coalesce<tokio::io::WriteHalf<TokioIo<Upgraded>>>>;
/// Frames already queued are written together, up to this many.
const COALESCED_FRAMES: usize = 64;

/// Close codes the edge uses besides the standard ones.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    /// The client did not read its frames in time; resume later.
    pub const SLOW_CLIENT: u16 = 4008;
    /// No frame from the client within the idle timeout.
    pub const IDLE: u16 = 4000;
}

enum Out {
    /// Boxed: queue slots stay small (a connection's queue holds many).
    Frame(Box<pb::ServerFrame>),
    Control(OpCode, Vec<u8>),
}

/// What the tasks of one connection share.
struct Conn {
    who: Identity,
    binary: AtomicBool,
    out: mpsc::Sender<Out>,
    cancel: CancellationToken,
    close_reason: Mutex<Option<(u16, String)>>,
    /// Cursor of the last inbox entry handed to the writer.
    delivered: AtomicU64,
    /// Highest cursor the client acked.
    acked: AtomicU64,
    slow_timeout: Duration,
    /// Typing indicators this client may send.
    typing: governor::DefaultDirectRateLimiter,
    /// The large groups this connection follows (used by the delivery task
    /// only; behind a lock so inbox delivery can reach it too).
    large: tokio::sync::Mutex<Large>,
}

/// Typing indicators per connection: one a second, bursts of three.
fn typing_limiter() -> governor::DefaultDirectRateLimiter {
    let burst = std::num::NonZeroU32::new(3).expect("non-zero");
    let quota = governor::Quota::per_second(std::num::NonZeroU32::MIN).allow_burst(burst);
    governor::RateLimiter::direct(quota)
}

impl Conn {
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
        let mut slot = self.close_reason.lock().expect("close lock");
        if slot.is_none() {
            *slot = Some((code, reason.to_owned()));
        }
        drop(slot);
        self.cancel.cancel();
    }
}

/// Runs a connection to its end. `cancel` is a child of the edge's shutdown.
pub async fn run(
    state: Arc<EdgeState>,
    who: Identity,
    upgrade: UpgradeFut,
    format: Format,
    cancel: CancellationToken,
) {
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

    let push_sub = match Box::pin(state.nats.client.subscribe(subject::push(&who.user_id))).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::warn!(error = %e, "cannot subscribe to pushes");
            return;
        }
    };
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
        binary: AtomicBool::new(format == Format::Binary),
        out: out_tx,
        cancel,
        close_reason: Mutex::new(None),
        delivered: AtomicU64::new(0),
        acked: AtomicU64::new(acked),
        slow_timeout: Duration::from_secs(config.slow_client_timeout_secs),
        typing: typing_limiter(),
        large: tokio::sync::Mutex::new(large),
    });
    tracing::debug!(user = %who.user_id, device = %who.device_id, "connected");
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
        push_sub,
        resume_rx,
        state.nats.events(),
        acked,
    ));

    let welcome = pb::Welcome {
        user_id: who.user_id.clone(),
        device_id: who.device_id.clone(),
        acked_cursor: acked,
        idle_timeout_secs: config.idle_timeout_secs as u32,
        max_frame_bytes: config.max_frame_bytes as u32,
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
        state.devices.disconnected(&who).await;
    })
    .await;
    tracing::debug!(user = %who.user_id, device = %who.device_id, "disconnected");
}

async fn read_loop(
    state: &Arc<EdgeState>,
    conn: &Arc<Conn>,
    reader: &mut fastwebsockets::WebSocketRead<tokio::io::ReadHalf<TokioIo<Upgraded>>>,
    sends: &mut Option<Sends>,
    resumes: &mpsc::Sender<u64>,
) {
    let idle = Duration::from_secs(state.config.idle_timeout_secs);
    let max = state.config.max_frame_bytes;
    // A message split over several frames: its kind and the bytes so far.
    let mut partial: Option<(Format, Vec<u8>)> = None;
    let out = conn.out.clone();
    let mut obligated = move |frame: Frame<'_>| {
        // Pongs and the close echo the protocol requires.
        let _ = out.try_send(Out::Control(frame.opcode, frame.payload.to_vec()));
        std::future::ready(Ok::<(), &'static str>(()))
    };
    loop {
        let read = tokio::select! {
            _ = conn.cancel.cancelled() => return,
            read = tokio::time::timeout(idle, reader.read_frame(&mut obligated)) => read,
        };
        let frame = match read {
            Err(_) => return conn.close(close::IDLE, "idle timeout"),
            Ok(Err(WebSocketError::FrameTooLarge)) => {
                return conn.close(close::TOO_BIG, "frame too large");
            }
            Ok(Err(WebSocketError::UnexpectedEOF | WebSocketError::ConnectionClosed)) => return,
            Ok(Err(WebSocketError::IoError(_))) => return,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "websocket protocol error");
                return conn.close(close::PROTOCOL, "protocol error");
            }
            Ok(Ok(frame)) => frame,
        };
        let complete = match frame.opcode {
            OpCode::Close => return,
            OpCode::Ping | OpCode::Pong => continue,
            OpCode::Text | OpCode::Binary => {
                let format = if frame.opcode == OpCode::Text {
                    Format::Json
                } else {
                    Format::Binary
                };
                if partial.is_some() {
                    return conn.close(close::PROTOCOL, "new message inside a fragmented one");
                }
                if frame.fin {
                    Some((format, frame.payload.to_vec()))
                } else {
                    partial = Some((format, frame.payload.to_vec()));
                    None
                }
            }
            OpCode::Continuation => {
                let Some((_, bytes)) = partial.as_mut() else {
                    return conn.close(close::PROTOCOL, "continuation without a message");
                };
                if bytes.len() + frame.payload.len() > max {
                    return conn.close(close::TOO_BIG, "frame too large");
                }
                bytes.extend_from_slice(&frame.payload);
                if frame.fin { partial.take() } else { None }
            }
        };
        let Some((format, bytes)) = complete else {
            continue;
        };
        conn.binary
            .store(format == Format::Binary, Ordering::Relaxed);
        if !Box::pin(handle_message(state, conn, format, &bytes, sends, resumes)).await {
            return;
        }
    }
}

/// Handles one client message; false when the connection should end.
async fn handle_message(
    state: &Arc<EdgeState>,
    conn: &Arc<Conn>,
    format: Format,
    bytes: &[u8],
    sends: &mut Option<Sends>,
    resumes: &mpsc::Sender<u64>,
) -> bool {
    let frame = match frames::decode(format, bytes) {
        Ok(frame) => frame,
        Err(bad) => return conn.send(frames::error(bad.id, &bad.error)).await,
    };
    let id = frame.id;
    let Some(kind) = frame.kind else { return true };
    tracing::trace!(kind = frames::kind_name(&kind), id, "frame");
    let error = match kind {
        // A full queue of sends waiting for their ack stops this reader until
        // one is answered: back-pressure on a client that pipelines too much.
        client_frame::Kind::Send(send) => {
            let sends = sends.get_or_insert_with(|| Sends::start(state, conn));
            return tokio::select! {
                _ = conn.cancel.cancelled() => false,
                sent = sends.tx.send((id, Box::new(send))) => sent.is_ok(),
            };
        }
        client_frame::Kind::Ack(ack) => {
            if ack.cursor > conn.delivered.load(Ordering::Acquire) {
                RpcError::bad_request("cursor is ahead of what was delivered")
            } else {
                conn.acked.fetch_max(ack.cursor, Ordering::AcqRel);
                return true;
            }
        }
        client_frame::Kind::Resume(resume) => match resumes.try_send(resume.cursor) {
            Ok(()) => return true,
            Err(_) => RpcError::new(shared::ErrorCode::RateLimited, "too many resumes at once"),
        },
        client_frame::Kind::Typing(typing) => {
            if conn.typing.check().is_err() {
                RpcError::new(shared::ErrorCode::RateLimited, "typing too often")
            } else {
                // Off the reader: a slow service must not stall this connection.
                let (caller, conn) = (state.caller.clone(), conn.clone());
                tokio::spawn(async move {
                    let result = caller
                        .call_as::<ConversationTyping>(&conn.who, &typing)
                        .await;
                    if let Err(e) = result {
                        conn.send(frames::error(id, &e)).await;
                    }
                });
                return true;
            }
        }
        client_frame::Kind::Ping(ping) => {
            let pong = pb::Pong {
                client_ts_ms: ping.client_ts_ms,
                server_ts_ms: ids::now_ms(),
            };
            return conn
                .send(frames::reply(id, server_frame::Kind::Pong(pong)))
                .await;
        }
    };
    conn.send(frames::error(id, &error)).await
}

async fn write_loop(
    mut writer: Writer,
    mut queue: mpsc::Receiver<Out>,
    conn: Arc<Conn>,
    ping_every: Duration,
) {
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let mut closed = false;
    loop {
        let first = tokio::select! {
            biased;
            _ = conn.cancel.cancelled() => break,
            out = queue.recv() => match out {
                None => break,
                Some(out) => out,
            },
            _ = ping.tick() => Out::Control(OpCode::Ping, Vec::new()),
        };
        // Frames queued meanwhile go out in the same write.
        let write = async {
            writer
                .write_frame(to_frame(&conn, first, &mut closed))
                .await?;
            for _ in 1..COALESCED_FRAMES {
                if closed {
                    break;
                }
                let Ok(next) = queue.try_recv() else { break };
                writer
                    .write_frame(to_frame(&conn, next, &mut closed))
                    .await?;
            }
            writer.flush().await
        };
        match tokio::time::timeout(conn.slow_timeout, write).await {
            Ok(Ok(())) if !closed => {}
            Ok(Ok(())) => return,
            Ok(Err(_)) => return conn.cancel.cancel(),
            Err(_) => {
                conn.close(close::SLOW_CLIENT, "slow client: resume from your cursor");
                return;
            }
        }
    }
    if !closed {
        let (code, reason) = conn
            .close_reason
            .lock()
            .expect("close lock")
            .clone()
            .unwrap_or((close::GOING_AWAY, "server shutting down".into()));
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            writer
                .write_frame(Frame::close(code, reason.as_bytes()))
                .await?;
            writer.flush().await
        })
        .await;
    }
}

fn to_frame(conn: &Conn, out: Out, closed: &mut bool) -> Frame<'static> {
    match out {
        Out::Frame(frame) => {
            let format = conn.format();
            let bytes = frames::encode(format, &frame);
            match format {
                Format::Json => Frame::text(Payload::Owned(bytes)),
                Format::Binary => Frame::binary(Payload::Owned(bytes)),
            }
        }
        Out::Control(opcode, payload) => {
            *closed |= opcode == OpCode::Close;
            Frame::new(true, opcode, None, Payload::Owned(payload))
        }
    }
}

/// A connection's sender task and its queue.
struct Sends {
    tx: mpsc::Sender<(u64, Box<msg_pb::SendRequest>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Sends {
    fn start(state: &Arc<EdgeState>, conn: &Arc<Conn>) -> Self {
        let (tx, rx) = mpsc::channel(state.config.max_inflight_sends);
        let task = tokio::spawn(send_loop(state.clone(), conn.clone(), rx));
        Self { tx, task }
    }
}

/// Forwards sends to the messages service one at a time, so a device's
/// messages keep the order it sent them in, and answers each with its ack.
async fn send_loop(
    state: Arc<EdgeState>,
    conn: Arc<Conn>,
    mut sends: mpsc::Receiver<(u64, Box<msg_pb::SendRequest>)>,
) {
    let caller = state.nats.caller();
    loop {
        let (id, request) = tokio::select! {
            _ = conn.cancel.cancelled() => return,
            next = sends.recv() => match next { Some(next) => next, None => return },
        };
        let result = caller.call_as::<MessageSend>(&conn.who, &request).await;
        let frame = match result {
            Ok(ack) => frames::reply(id, server_frame::Kind::Ack(ack)),
            Err(e) => frames::error(id, &e),
        };
        if !conn.send(frame).await {
            return;
        }
    }
}

async fn delivery_loop(
    state: Arc<EdgeState>,
    conn: Arc<Conn>,
    mut pushes: async_nats::Subscriber,
    mut resumes: mpsc::Receiver<u64>,
    mut events: broadcast::Receiver<ConnectionEvent>,
    mut stored: u64,
) {
    let mut started = false;
    let mut group_rx = None;
    let mut flush = tokio::time::interval(Duration::from_secs(state.config.cursor_flush_secs));
    // A push can be lost without any event reaching this edge (the
    // publisher's connection dropped after its inbox append, or a leaf link
    // went down): now and then, compare the inbox's end with what was delivered.
    let every = Duration::from_secs(state.config.inbox_check_secs);
    let jitter = Duration::from_millis(rand_millis(every.as_millis() as u64));
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + every + jitter, every);
    loop {
        let ok = tokio::select! {
            _ = conn.cancel.cancelled() => break,
            cursor = resumes.recv() => match cursor {
                None => break,
                Some(cursor) => {
                    let from = if cursor == 0 { stored.max(conn.acked.load(Ordering::Acquire)) } else { cursor };
                    started = true;
                    Box::pin(async {
                        resume(&state, &conn, from).await
                            && conn.large.lock().await.resume(&state, &conn).await
                    })
                    .await
                }
            },
            Some(push) = next_group(&mut group_rx) => {
                Box::pin(async { conn.large.lock().await.on_push(&state, &conn, push).await }).await
            }
            push = pushes.next() => match push {
                None => {
                    conn.close(close::INTERNAL, "push subscription ended");
                    break;
                }
                // Before the first resume, pushes are dropped (the replay reads
                // them from the inbox); signals are forwarded at once.
                Some(message) if started => Box::pin(on_push(&state, &conn, &message.payload)).await,
                Some(message) => Box::pin(on_signal(&conn, &message.payload)).await,
            },
            event = events.recv() => match event {
                Ok(ConnectionEvent::Disconnected) => true,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) if started => {
                    Box::pin(async {
                        catch_up(&state, &conn, true).await
                            && conn.large.lock().await.fill_all(&state, &conn).await
                    })
                    .await
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => true,
            },
            _ = flush.tick() => {
                stored = Box::pin(flush_cursor(&state, &conn, stored)).await;
                true
            }
            _ = check.tick(), if started => Box::pin(check_inbox(&state, &conn)).await,
        };
        if !ok {
            break;
        }
        // The step may have followed the connection's first large group.
        if group_rx.is_none()
            && let Ok(mut large) = conn.large.try_lock()
        {
            group_rx = large.take_receiver();
        }
    }
    // Boxed, like every step above: the loop's own future stays small
    // while it waits, and an idle connection holds just that.
    Box::pin(async {
        conn.large.lock().await.leave_all(&state).await;
        flush_cursor(&state, &conn, stored).await;
    })
    .await;
}

/// The next message for the connection's large groups; never while it
/// follows none.
async fn next_group(rx: &mut Option<mpsc::Receiver<GroupPush>>) -> Option<GroupPush> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Compares the inbox's end with what was delivered; catches up if behind.
async fn check_inbox(state: &EdgeState, conn: &Conn) -> bool {
    match state.inbox.last_cursor(&conn.who.user_id).await {
        Ok(last) if last > conn.delivered.load(Ordering::Acquire) => {
            catch_up(state, conn, true).await
        }
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(error = %e, "inbox check failed");
            true
        }
    }
}

async fn flush_cursor(state: &EdgeState, conn: &Conn, stored: u64) -> u64 {
    let acked = conn.acked.load(Ordering::Acquire);
    if acked <= stored {
        return stored;
    }
    match state
        .inbox
        .store_cursor(&conn.who.user_id, &conn.who.device_id, acked)
        .await
    {
        Ok(()) => acked,
        Err(e) => {
            tracing::warn!(error = %e, "cannot store acked cursor");
            stored
        }
    }
}

/// Starts delivery after `cursor`: replay, then a `caught_up` frame.
async fn resume(state: &EdgeState, conn: &Conn, cursor: u64) -> bool {
    let start = match state.inbox.start(cursor).await {
        Ok(start) => start,
        Err(e) => {
            tracing::warn!(error = %e, "cannot check inbox retention");
            conn.close(close::INTERNAL, "inbox unavailable: retry");
            return false;
        }
    };
    let after = match start {
        Start::After(after) => after,
        Start::Resync(end) => {
            let frame = frames::reply(
                0,
                server_frame::Kind::ResyncRequired(pb::ResyncRequired { cursor: end }),
            );
            if !conn.send(frame).await {
                return false;
            }
            end
        }
    };
    conn.delivered.store(after, Ordering::Release);
    // The replay does not move the large groups: `groupHeads` follows it.
    if !catch_up(state, conn, false).await {
        return false;
    }
    let cursor = conn.delivered.load(Ordering::Acquire);
    conn.send(frames::reply(
        0,
        server_frame::Kind::CaughtUp(pb::CaughtUp { cursor }),
    ))
    .await
}

/// Delivers every inbox entry after the delivered cursor; `live`: the
/// entries' group news moves the large groups (not during a resume's replay).
async fn catch_up(state: &EdgeState, conn: &Conn, live: bool) -> bool {
    let after = conn.delivered.load(Ordering::Acquire);
    tracing::debug!(user = %conn.who.user_id, after, "catching up from the inbox");
    let result = state
        .inbox
        .replay(&conn.who.user_id, after, |cursor, entry| async move {
            let ok = deliver(state, conn, cursor, entry, live).await;
            if ok {
                conn.delivered.store(cursor, Ordering::Release);
            }
            ok
        })
        .await;
    match result {
        Ok(_) => !conn.cancel.is_cancelled(),
        Err(e) => {
            tracing::warn!(error = %e, "inbox replay failed");
            conn.close(
                close::INTERNAL,
                "inbox unavailable: resume from your cursor",
            );
            false
        }
    }
}

async fn on_push(state: &EdgeState, conn: &Conn, payload: &[u8]) -> bool {
    let Ok(push) = Push::decode(payload) else {
        tracing::warn!("undecodable push ignored");
        return true;
    };
    if let Some(signal) = push.signal {
        return conn
            .send(frames::reply(0, server_frame::Kind::Signal(signal)))
            .await;
    }
    let delivered = conn.delivered.load(Ordering::Acquire);
    tracing::trace!(cursor = push.cursor, prev = ?push.prev, delivered, "push");
    if push.cursor <= delivered {
        return true;
    }
    match (push.prev, push.entry) {
        (Some(prev), Some(entry)) if prev == delivered => {
            let ok = deliver(state, conn, push.cursor, entry, true).await;
            if ok {
                conn.delivered.store(push.cursor, Ordering::Release);
            }
            ok
        }
        // A gap (or a push whose predecessor is unknown): read the inbox.
        _ => catch_up(state, conn, true).await,
    }
}

/// Forwards a push only if it is a signal (before delivery has started).
async fn on_signal(conn: &Conn, payload: &[u8]) -> bool {
    match Push::decode(payload) {
        Ok(Push {
            signal: Some(signal),
            ..
        }) => {
            conn.send(frames::reply(0, server_frame::Kind::Signal(signal)))
                .await
        }
        _ => true,
    }
}

/// Sends one inbox entry. A live entry's group news moves the large groups
/// in inbox order: a group leaving read fan-out (or the user leaving it)
/// first gets what it had before the entry, a group entering it is followed
/// after the entry.
async fn deliver(
    state: &EdgeState,
    conn: &Conn,
    cursor: u64,
    entry: InboxEntry,
    live: bool,
) -> bool {
    let news = if live { News::of(&entry) } else { None };
    let (before, after) = match news {
        Some(news) if news.ends() => (Some(news), None),
        news => (None, news),
    };
    if let Some(news) = before
        && !conn.large.lock().await.apply(state, conn, news).await
    {
        return false;
    }
    let push = Push {
        cursor,
        entry: Some(entry),
        prev: None,
        signal: None,
    };
    if !conn
        .send(frames::reply(0, server_frame::Kind::Push(push)))
        .await
    {
        return false;
    }
    match after {
        Some(news) => conn.large.lock().await.apply(state, conn, news).await,
        None => true,
    }
}

/// A pseudo-random number of milliseconds below `max` (spreads periodic work).
fn rand_millis(max: u64) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) % max.max(1)
}
