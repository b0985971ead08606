//! The social service's SQL. Runs on SQLite and PostgreSQL alike.

use shared::db::AnyPool;
use sqlx::AssertSqlSafe;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/social");

const PROFILE_COLUMNS: &str =
    "user_id, username, nickname, signature, avatar, created_at_ms, updated_at_ms";
const REQUEST_COLUMNS: &str =
    "id, from_user_id, to_user_id, greeting, status, created_at_ms, updated_at_ms";

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ProfileRow {
    pub user_id: String,
    pub username: String,
    pub nickname: String,
    pub signature: String,
    pub avatar: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RequestRow {
    pub id: String,
    pub from_user_id: String,
    pub to_user_id: String,
    pub greeting: String,
    pub status: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

pub const PENDING: &str = "pending";
pub const ACCEPTED: &str = "accepted";
pub const REJECTED: &str = "rejected";

/// `$first, $first+1, ...` for `n` values of an `IN (...)` list.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Creates a profile from an account, unless it exists already.
pub async fn create_profile(
    pool: &AnyPool,
    user_id: &str,
    username: &str,
    nickname: &str,
    created_at_ms: i64,
) -> Result<(), sqlx::Error> {
    let nickname = if nickname.is_empty() {
        username
    } else {
        nickname
    };
    sqlx::query(
        "INSERT INTO profiles (user_id, username, username_norm, nickname, nickname_norm, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(username)
    .bind(shared::text::fold(username))
    .bind(nickname)
    .bind(shared::text::fold(nickname))
    .bind(created_at_ms)
    .execute(pool)
    .await?;
    Ok(())
}

/// The profiles of `ids` that exist (in no particular order).
pub async fn profiles(pool: &AnyPool, ids: &[String]) -> Result<Vec<ProfileRow>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {PROFILE_COLUMNS} FROM profiles WHERE user_id IN ({})",
        placeholders(1, ids.len())
    );
    let mut query = sqlx::query_as(AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(id);
    }
    query.fetch_all(pool).await
}

pub struct ProfileUpdate<'a> {
    pub nickname: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub avatar: Option<&'a str>,
}

pub async fn update_profile(
    pool: &AnyPool,
    user_id: &str,
    update: &ProfileUpdate<'_>,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE profiles SET
            nickname = COALESCE($2, nickname),
            nickname_norm = COALESCE($3, nickname_norm),
            signature = COALESCE($4, signature),
            avatar = COALESCE($5, avatar),
            updated_at_ms = $6
         WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(update.nickname)
    .bind(update.nickname.map(shared::text::fold))
    .bind(update.signature)
    .bind(update.avatar)
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(())
}

/// Users other than `me` whose username starts with `query` or whose
/// nickname contains it (both compared lowercased), by username, after the
/// username `after`.
pub async fn search(
    pool: &AnyPool,
    me: &str,
    query: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<ProfileRow>, sqlx::Error> {
    let folded = like_literal(&shared::text::fold(query));
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {PROFILE_COLUMNS} FROM profiles
         WHERE user_id <> $1 AND username_norm > $2
           AND (username_norm LIKE $3 ESCAPE '\\' OR nickname_norm LIKE $4 ESCAPE '\\')
         ORDER BY username_norm LIMIT $5"
    )))
    .bind(me)
    .bind(after)
    .bind(format!("{folded}%"))
    .bind(format!("%{folded}%"))
    .bind(limit)
    .fetch_all(pool)
    .await
}

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

/// A repeated request: new greeting, new time.
pub async fn renew_request(
    pool: &AnyPool,
    id: &str,
    greeting: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE friend_requests SET greeting = $2, updated_at_ms = $3 WHERE id = $1")
        .bind(id)
        .bind(greeting)
        .bind(now_ms)
        .execute(pool)
        .await?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_literal("a%b_c\\"), "a\\%b\\_c\\\\");
        assert_eq!(like_literal("小明"), "小明");
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
    }
}
