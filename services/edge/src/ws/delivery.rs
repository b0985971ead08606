//! Delivery to one connection: the inbox replayed from a cursor, then live
//! pushes forwarded only when they follow the last entry delivered (or a
//! catch-up from the inbox), signals (typing, presence), and the acked
//! cursor kept in the cursor bucket.

use super::*;

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
