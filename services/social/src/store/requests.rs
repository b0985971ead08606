//! Friend requests and the friendship an accepted one makes.

use shared::db::AnyPool;
use sqlx::AssertSqlSafe;

use super::*;

pub async fn pending_request(
    pool: &AnyPool,
    from: &str,
    to: &str,
) -> Result<Option<RequestRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {REQUEST_COLUMNS} FROM friend_requests
         WHERE from_user_id = $1 AND to_user_id = $2 AND status = 'pending'"
    )))
    .bind(from)
    .bind(to)
    .fetch_optional(pool)
    .await
}

pub async fn request(pool: &AnyPool, id: &str) -> Result<Option<RequestRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {REQUEST_COLUMNS} FROM friend_requests WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Stores a new pending request; a pending one in the same direction is a
/// unique violation.
pub async fn insert_request(pool: &AnyPool, r: &RequestRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO friend_requests (id, from_user_id, to_user_id, greeting, status, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&r.id)
    .bind(&r.from_user_id)
    .bind(&r.to_user_id)
    .bind(&r.greeting)
    .bind(&r.status)
    .bind(r.created_at_ms)
    .bind(r.updated_at_ms)
    .execute(pool)
    .await?;
    Ok(())
}

/// A repeated request: a new greeting; `updated_at_ms`, the time of the
/// last notice to the recipient, only when the recipient is told again.
pub async fn renew_request(
    pool: &AnyPool,
    id: &str,
    greeting: &str,
    notified_at_ms: Option<i64>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE friend_requests SET greeting = $2, updated_at_ms = COALESCE($3, updated_at_ms)
         WHERE id = $1",
    )
    .bind(id)
    .bind(greeting)
    .bind(notified_at_ms)
    .execute(pool)
    .await?;
    Ok(())
}

/// When the last request from `from` to `to` was rejected, if one was.
pub async fn last_rejection(
    pool: &AnyPool,
    from: &str,
    to: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let at: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(updated_at_ms) FROM friend_requests
         WHERE from_user_id = $1 AND to_user_id = $2 AND status = 'rejected'",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;
    Ok(at)
}

/// Marks a pending request rejected; false when it was no longer pending.
pub async fn reject_request(pool: &AnyPool, id: &str, now_ms: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE friend_requests SET status = 'rejected', updated_at_ms = $2
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Rejects every pending request from `from` to `to` (on a block).
pub async fn reject_pending_from(
    pool: &AnyPool,
    from: &str,
    to: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE friend_requests SET status = 'rejected', updated_at_ms = $3
         WHERE from_user_id = $1 AND to_user_id = $2 AND status = 'pending'",
    )
    .bind(from)
    .bind(to)
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(())
}

/// Accepts a pending request and makes its two users friends, in one
/// transaction; false when the request was no longer pending.
pub async fn accept_request(
    pool: &AnyPool,
    r: &RequestRow,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "UPDATE friend_requests SET status = 'accepted', updated_at_ms = $2
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(&r.id)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    // A request the other way is answered by the friendship too.
    sqlx::query(
        "UPDATE friend_requests SET status = 'accepted', updated_at_ms = $3
         WHERE from_user_id = $1 AND to_user_id = $2 AND status = 'pending'",
    )
    .bind(&r.to_user_id)
    .bind(&r.from_user_id)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    for (a, b) in [
        (&r.from_user_id, &r.to_user_id),
        (&r.to_user_id, &r.from_user_id),
    ] {
        sqlx::query(
            "INSERT INTO friends (user_id, friend_id, created_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, friend_id) DO NOTHING",
        )
        .bind(a)
        .bind(b)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Requests to (`incoming`) or from `user`, newest first, before `before_ms`.
pub async fn requests(
    pool: &AnyPool,
    user: &str,
    incoming: bool,
    include_answered: bool,
    before_ms: i64,
    limit: i64,
) -> Result<Vec<RequestRow>, sqlx::Error> {
    let column = if incoming {
        "to_user_id"
    } else {
        "from_user_id"
    };
    let pending = if include_answered {
        ""
    } else {
        "AND status = 'pending'"
    };
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {REQUEST_COLUMNS} FROM friend_requests
         WHERE {column} = $1 AND created_at_ms < $2 {pending}
         ORDER BY created_at_ms DESC, id DESC LIMIT $3"
    )))
    .bind(user)
    .bind(before_ms)
    .bind(limit)
    .fetch_all(pool)
    .await
}
