//! The connection's one task: a loop that selects over everything the
//! connection waits for, handles what came, handles the pushes queued
//! meanwhile, and flushes what it wrote in one system call.

use std::collections::VecDeque;

use futures::stream::{FuturesOrdered, FuturesUnordered};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::*;
use crate::batcher::Answer;
use crate::push_hub::{Mailbox, PushNews};

/// Pushes handled after a step before its frames are flushed: a burst of
/// pushes goes out in one write.
const COALESCED_PUSHES: usize = 64;

/// The sends of a connection waiting for their answer, in the order they
/// were made (made at the first send: an idle connection has none).
pub(super) struct Sending {
    pub(super) sender: crate::batcher::Sender,
    pub(super) answers: FuturesOrdered<oneshot::Receiver<Answer>>,
    /// Each answer's frame id and `client_msg_id`, in the same order.
    pub(super) waiting: VecDeque<(u64, String)>,
}

/// A typing call in flight: the frame's id and the call's error.
type Typing = futures::future::BoxFuture<'static, (u64, Option<RpcError>)>;

/// When the connection's periodic work is due. One timer wakes the task at
/// the earliest; a deadline that moved later (a frame came) is read when
/// the timer fires, so most steps do not touch the timer at all.
struct Timers {
    ping: Instant,
    cursor_flush: Instant,
    inbox_check: Instant,
    last_frame: Instant,
    /// When the access token expires, as read last (an `auth` frame may
    /// move the expiry on: it is read again when this passes).
    expiry: Instant,
}

pub(super) struct Task<'a> {
    state: &'a Arc<EdgeState>,
    conn: &'a Arc<Conn>,
    mailbox: Arc<Mailbox>,
    /// The acked cursor last stored.
    pub(super) stored: u64,
    /// A resume came: live pushes are delivered from now on.
    pub(super) started: bool,
    /// A message split over several frames: its kind and the bytes so far.
    pub(super) partial: Option<(Format, Vec<u8>)>,
    pub(super) sends: Option<Box<Sending>>,
    typing: Option<FuturesUnordered<Typing>>,
    group_rx: Option<mpsc::Receiver<GroupPush>>,
    /// The NATS connection's events (none once their sender is gone).
    events: Option<broadcast::Receiver<ConnectionEvent>>,
    timers: Timers,
    /// The pending read has a frame reader (and its buffer).
    reader_held: bool,
}

impl<'a> Task<'a> {
    pub(super) fn new(
        state: &'a Arc<EdgeState>,
        conn: &'a Arc<Conn>,
        mailbox: Arc<Mailbox>,
        stored: u64,
    ) -> Self {
        let config = &state.config;
        let now = Instant::now();
        // A push can be lost without any event reaching this edge (the
        // publisher's connection dropped after its inbox append, or a leaf
        // link went down): now and then, compare the inbox's end with what
        // was delivered. The first check comes soon: the services route
        // pushes by the edges they know hold a user (see
        // `shared::push_routes`), and a push routed before this
        // connection's presence reached them is read from the inbox then.
        let every = Duration::from_secs(config.inbox_check_secs);
        let first = shared::push_routes::FIRST_CHECK.min(every);
        let jitter = Duration::from_millis(delivery::rand_millis(first.as_millis() as u64 / 2));
        Self {
            state,
            conn,
            mailbox,
            stored,
            started: false,
            partial: None,
            sends: None,
            typing: None,
            group_rx: None,
            events: Some(state.nats.events()),
            timers: Timers {
                ping: now + Duration::from_secs(config.ping_interval_secs),
                cursor_flush: now + Duration::from_secs(config.cursor_flush_secs),
                inbox_check: now + first + jitter,
                last_frame: now,
                expiry: expiry_instant(conn),
            },
            reader_held: false,
        }
    }

    pub(super) fn state(&self) -> &'a Arc<EdgeState> {
        self.state
    }

    pub(super) fn conn(&self) -> &'a Arc<Conn> {
        self.conn
    }

    /// Runs the connection until it ends.
    pub(super) async fn run(&mut self, side: transport::ReadSide) {
        let max = self.state.config.max_frame_bytes;
        let mut reading = std::pin::pin!(transport::read_next(side.clone(), None, max));
        let mut deadline = self.next_deadline();
        let timer = tokio::time::sleep_until(deadline);
        let mut timer = std::pin::pin!(timer);
        let window = self.state.config.max_inflight_sends.max(1);
        loop {
            let can_read = self.sends.as_ref().is_none_or(|s| s.answers.len() < window);
            let ok = tokio::select! {
                _ = self.conn.cancel.cancelled() => false,
                (reader, controls, read) = &mut reading, if can_read => {
                    self.reader_held = reader.is_some();
                    reading.set(transport::read_next(side.clone(), reader, max));
                    self.timers.last_frame = Instant::now();
                    Box::pin(self.on_read(controls, read)).await
                }
                news = self.mailbox.recv() => Box::pin(self.on_news(news)).await,
                Some(answer) = next_answer(&mut self.sends) => {
                    Box::pin(self.on_answer(answer)).await
                }
                Some((id, error)) = next_typing(&mut self.typing) => match error {
                    Some(e) => self.conn.send(frames::error(id, &e)).await,
                    None => true,
                },
                Some(push) = next_group(&mut self.group_rx) => {
                    let (state, conn) = (self.state, self.conn);
                    Box::pin(async { conn.large.lock().await.on_push(state, conn, push).await }).await
                }
                event = next_event(&mut self.events) => Box::pin(self.on_event(event)).await,
                () = &mut timer => Box::pin(self.on_timer()).await,
            };
            if !ok {
                break;
            }
            // Quiet, and nothing half read: the reader and its buffer go
            // (see `transport::ReadSide`).
            if self.reader_held
                && Instant::now() >= self.timers.last_frame + transport::QUIET
                && side.drained()
            {
                self.reader_held = false;
                reading.set(transport::read_next(side.clone(), None, max));
            }
            // Pushes that came meanwhile go out in the same write.
            let mut more = COALESCED_PUSHES;
            let mut ok = true;
            while more > 0
                && ok
                && let Some(news) = self.mailbox.try_recv()
            {
                ok = Box::pin(self.on_news(news)).await;
                more -= 1;
            }
            if !ok || !self.conn.flush().await {
                break;
            }
            // The step may have followed the connection's first large group.
            if self.group_rx.is_none()
                && let Ok(mut large) = self.conn.large.try_lock()
            {
                self.group_rx = large.take_receiver();
            }
            let next = self.next_deadline();
            if next < deadline || timer.is_elapsed() {
                deadline = next;
                timer.as_mut().reset(deadline);
            }
        }
    }

    /// The earliest time the timer has work.
    fn next_deadline(&self) -> Instant {
        let idle =
            self.timers.last_frame + Duration::from_secs(self.state.config.idle_timeout_secs);
        let quiet = if self.reader_held {
            self.timers.last_frame + transport::QUIET
        } else {
            idle
        };
        [
            quiet,
            self.timers.ping,
            self.timers.cursor_flush,
            self.timers.inbox_check,
            self.timers.expiry,
            idle,
        ]
        .into_iter()
        .min()
        .unwrap_or(idle)
    }

    /// Does whatever periodic work is due; false when the connection ends.
    async fn on_timer(&mut self) -> bool {
        let (state, conn) = (self.state, self.conn);
        let config = &state.config;
        let now = Instant::now();
        if now >= self.timers.last_frame + Duration::from_secs(config.idle_timeout_secs) {
            conn.close(close::IDLE, "idle timeout");
            return false;
        }
        if now >= self.timers.expiry {
            self.timers.expiry = expiry_instant(conn);
            if conn.expires_at_ms.load(Ordering::Acquire) <= ids::now_ms() {
                conn.close(
                    crate::sessions::SESSION_ENDED,
                    "access token expired: refresh it, then reconnect (or send `auth` before it expires)",
                );
                return false;
            }
        }
        if now >= self.timers.ping {
            self.timers.ping = now + Duration::from_secs(config.ping_interval_secs);
            if !conn
                .write(Frame::new(
                    true,
                    OpCode::Ping,
                    None,
                    Payload::Owned(Vec::new()),
                ))
                .await
            {
                return false;
            }
        }
        if now >= self.timers.cursor_flush {
            self.timers.cursor_flush = now + Duration::from_secs(config.cursor_flush_secs);
            self.stored = delivery::flush_cursor(state, conn, self.stored).await;
        }
        if now >= self.timers.inbox_check {
            self.timers.inbox_check = now + Duration::from_secs(config.inbox_check_secs);
            if self.started && !delivery::check_inbox(state, conn).await {
                return false;
            }
        }
        true
    }

    /// What the hub handed over. Before the first resume, entries are
    /// dropped (the replay reads them from the inbox); signals are
    /// forwarded at once.
    async fn on_news(&mut self, news: PushNews) -> bool {
        let (state, conn) = (self.state, self.conn);
        match news {
            PushNews::Entry(push) => {
                !self.started || delivery::on_push(state, conn, (*push).clone()).await
            }
            PushNews::Dropped => !self.started || delivery::catch_up(state, conn, true).await,
            PushNews::Signal(signal) => {
                conn.send(frames::reply(
                    0,
                    server_frame::Kind::Signal((*signal).clone()),
                ))
                .await
            }
        }
    }

    /// The NATS connection came back or lost messages: catch up.
    async fn on_event(
        &mut self,
        event: Result<ConnectionEvent, broadcast::error::RecvError>,
    ) -> bool {
        let (state, conn) = (self.state, self.conn);
        match event {
            Ok(ConnectionEvent::Disconnected) => true,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) if self.started => {
                delivery::catch_up(state, conn, true).await
                    && conn.large.lock().await.fill_all(state, conn).await
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => true,
            Err(broadcast::error::RecvError::Closed) => {
                self.events = None;
                true
            }
        }
    }

    /// A resume from `cursor` (0: from the acked cursor): the replay, then
    /// the large groups' heads.
    pub(super) async fn resume(&mut self, cursor: u64) -> bool {
        let (state, conn) = (self.state, self.conn);
        let from = if cursor == 0 {
            self.stored.max(conn.acked.load(Ordering::Acquire))
        } else {
            cursor
        };
        self.started = true;
        delivery::resume(state, conn, from).await
            && conn.large.lock().await.resume(state, conn).await
    }

    /// Starts a typing call; its error, if any, is answered later.
    pub(super) fn typing(&mut self, id: u64, typing: msg_pb::TypingRequest) {
        let (caller, who) = (self.state.caller.clone(), self.conn.who.clone());
        let call = Box::pin(async move {
            let result = caller.call_as::<ConversationTyping>(&who, &typing).await;
            (id, result.err())
        });
        self.typing
            .get_or_insert_with(FuturesUnordered::new)
            .push(call);
    }

    /// A send's answer, in the order the sends were made.
    async fn on_answer(&mut self, answer: Result<Answer, oneshot::error::RecvError>) -> bool {
        let conn = self.conn;
        let Some((id, client_msg_id)) = self.sends.as_mut().and_then(|s| s.waiting.pop_front())
        else {
            return true;
        };
        let frame = match answer {
            Ok(Ok((ack, not_copied))) => {
                if not_copied {
                    conn.not_sent(&client_msg_id);
                }
                frames::reply(id, server_frame::Kind::Ack(ack))
            }
            Ok(Err(e)) => {
                conn.not_sent(&client_msg_id);
                frames::error(id, &e)
            }
            Err(_) => {
                conn.not_sent(&client_msg_id);
                frames::error(id, &RpcError::unavailable("the edge is stopping"))
            }
        };
        conn.send(frame).await
    }
}

/// The access token's expiry as a point on the monotonic clock.
fn expiry_instant(conn: &Conn) -> Instant {
    let left = conn
        .expires_at_ms
        .load(Ordering::Acquire)
        .saturating_sub(ids::now_ms())
        .max(0);
    // Far expiries are read again when they pass; this keeps the sum small.
    let left = Duration::from_millis(left as u64).min(Duration::from_secs(86_400));
    Instant::now() + left
}

/// The next answer to one of the connection's sends; never while none waits.
async fn next_answer(
    sends: &mut Option<Box<Sending>>,
) -> Option<Result<Answer, oneshot::error::RecvError>> {
    match sends {
        Some(sends) if !sends.answers.is_empty() => sends.answers.next().await,
        _ => std::future::pending().await,
    }
}

/// The next event of the NATS connection; never once they ended.
async fn next_event(
    events: &mut Option<broadcast::Receiver<ConnectionEvent>>,
) -> Result<ConnectionEvent, broadcast::error::RecvError> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// The next typing call that ended; never while none is in flight.
async fn next_typing(
    typing: &mut Option<FuturesUnordered<Typing>>,
) -> Option<(u64, Option<RpcError>)> {
    match typing {
        Some(calls) if !calls.is_empty() => calls.next().await,
        _ => std::future::pending().await,
    }
}

/// The next message for the connection's large groups; never while it
/// follows none.
async fn next_group(rx: &mut Option<mpsc::Receiver<GroupPush>>) -> Option<GroupPush> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
