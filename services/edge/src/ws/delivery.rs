//! Delivery to one connection: the inbox replayed from a cursor, then live
//! pushes forwarded only when they follow the last entry delivered (or a
//! catch-up from the inbox), signals (typing, presence), and the acked
//! cursor kept in the cursor bucket.

use super::*;
use crate::push_hub::PushNews;

pub(super) async fn delivery_loop(
    state: Arc<EdgeState>,
    conn: Arc<Conn>,
    mut entries: mpsc::Receiver<PushNews>,
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
    // The first check comes soon: the services route pushes by the edges
    // they know hold a user (see `shared::push_routes`), and a push routed
    // before this connection's presence reached them is read from the
    // inbox then.
    let every = Duration::from_secs(state.config.inbox_check_secs);
    let first = shared::push_routes::FIRST_CHECK.min(every);
    let jitter = Duration::from_millis(rand_millis(first.as_millis() as u64 / 2));
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + first + jitter, every);
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
            // Before the first resume, entries are dropped (the replay reads
            // them from the inbox); signals are forwarded at once.
            news = entries.recv() => match news {
                None => {
                    conn.close(close::INTERNAL, "push subscription ended");
                    break;
                }
                Some(PushNews::Entry(push)) => {
                    !started || Box::pin(on_push(&state, &conn, (*push).clone())).await
                }
                Some(PushNews::Dropped) => !started || Box::pin(catch_up(&state, &conn, true)).await,
                Some(PushNews::Signal(signal)) => {
                    Box::pin(conn.send(frames::reply(0, server_frame::Kind::Signal((*signal).clone())))).await
                }
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
            _ = token_expiry(&conn) => {
                conn.close(
                    crate::sessions::SESSION_ENDED,
                    "access token expired: refresh it, then reconnect (or send `auth` before it expires)",
                );
                false
            }
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
pub(super) async fn next_group(rx: &mut Option<mpsc::Receiver<GroupPush>>) -> Option<GroupPush> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the connection's access token has expired (an `auth` frame
/// may move the expiry on meanwhile: it is read again when the wait ends).
pub(super) async fn token_expiry(conn: &Conn) {
    loop {
        let expires = conn.expires_at_ms.load(Ordering::Acquire);
        let left = expires.saturating_sub(shared::ids::now_ms());
        if left <= 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(left as u64)).await;
    }
}

/// Compares the inbox's end with what was delivered; catches up if behind.
pub(super) async fn check_inbox(state: &EdgeState, conn: &Conn) -> bool {
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

pub(super) async fn flush_cursor(state: &EdgeState, conn: &Conn, stored: u64) -> u64 {
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
pub(super) async fn resume(state: &EdgeState, conn: &Conn, cursor: u64) -> bool {
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
pub(super) async fn catch_up(state: &EdgeState, conn: &Conn, live: bool) -> bool {
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

pub(super) async fn on_push(state: &EdgeState, conn: &Conn, push: Push) -> bool {
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

/// Sends one inbox entry. A live entry's group news moves the large groups
/// in inbox order: a group leaving read fan-out (or the user leaving it)
/// first gets what it had before the entry, a group entering it is followed
/// after the entry.
pub(super) async fn deliver(
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
    if live && conn.is_echo(&entry) {
        // The sender's own connection has its ack. Its cursor moves past the
        // entry as if it had acked it, when it acked everything before.
        let before = conn.delivered.load(Ordering::Acquire);
        let _ = conn
            .acked
            .compare_exchange(before, cursor, Ordering::AcqRel, Ordering::Acquire);
    } else {
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
    }
    match after {
        Some(news) => conn.large.lock().await.apply(state, conn, news).await,
        None => true,
    }
}

/// A pseudo-random number of milliseconds below `max` (spreads periodic work).
pub(super) fn rand_millis(max: u64) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) % max.max(1)
}
