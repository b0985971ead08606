//! Friendships, blocks, and who may see whom: the relations other
//! services ask about.

use shared::db::AnyPool;
use sqlx::AssertSqlSafe;

use super::*;

/// How `a` relates to `b`: (friends, a blocks b, b blocks a).
pub async fn relation(pool: &AnyPool, a: &str, b: &str) -> Result<(bool, bool, bool), sqlx::Error> {
    let friends: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM friends WHERE user_id = $1 AND friend_id = $2")
            .bind(a)
            .bind(b)
            .fetch_optional(pool)
            .await?;
    let blocks: Vec<String> = sqlx::query_scalar(
        "SELECT user_id FROM blocks
         WHERE (user_id = $1 AND blocked_user_id = $2) OR (user_id = $2 AND blocked_user_id = $1)",
    )
    .bind(a)
    .bind(b)
    .fetch_all(pool)
    .await?;
    Ok((
        friends.is_some(),
        blocks.iter().any(|u| u == a),
        blocks.iter().any(|u| u == b),
    ))
}

pub async fn friend_count(pool: &AnyPool, user: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM friends WHERE user_id = $1")
        .bind(user)
        .fetch_one(pool)
        .await
}

/// A page of `user`'s friends by id: (friend id, since).
pub async fn friends(
    pool: &AnyPool,
    user: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT friend_id, created_at_ms FROM friends WHERE user_id = $1 AND friend_id > $2
         ORDER BY friend_id LIMIT $3",
    )
    .bind(user)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Ends a friendship on both sides; false when there was none.
pub async fn remove_friendship(pool: &AnyPool, a: &str, b: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM friends WHERE (user_id = $1 AND friend_id = $2) OR (user_id = $2 AND friend_id = $1)",
    )
    .bind(a)
    .bind(b)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Blocks; false when the block existed already.
pub async fn add_block(
    pool: &AnyPool,
    user: &str,
    blocked: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO blocks (user_id, blocked_user_id, created_at_ms) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, blocked_user_id) DO NOTHING",
    )
    .bind(user)
    .bind(blocked)
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Unblocks; false when there was no block.
pub async fn remove_block(pool: &AnyPool, user: &str, blocked: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM blocks WHERE user_id = $1 AND blocked_user_id = $2")
        .bind(user)
        .bind(blocked)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Who `user` blocks, most recent first (at most `limit`).
pub async fn blocked(pool: &AnyPool, user: &str, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT blocked_user_id FROM blocks WHERE user_id = $1 ORDER BY created_at_ms DESC LIMIT $2",
    )
    .bind(user)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The friends of `user` that `user` does not block: who sees its presence.
pub async fn audience(pool: &AnyPool, user: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT f.friend_id FROM friends f WHERE f.user_id = $1 AND NOT EXISTS
           (SELECT 1 FROM blocks b WHERE b.user_id = $1 AND b.blocked_user_id = f.friend_id)",
    )
    .bind(user)
    .fetch_all(pool)
    .await
}

/// Which of `ids` count `viewer` in their audience.
pub async fn visible_to(
    pool: &AnyPool,
    viewer: &str,
    ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT f.user_id FROM friends f WHERE f.friend_id = $1 AND f.user_id IN ({})
           AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.user_id = f.user_id AND b.blocked_user_id = $1)",
        placeholders(2, ids.len())
    );
    let mut query = sqlx::query_scalar(AssertSqlSafe(sql)).bind(viewer);
    for id in ids {
        query = query.bind(id);
    }
    query.fetch_all(pool).await
}
