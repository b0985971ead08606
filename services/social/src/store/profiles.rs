//! Profiles and user search.

use shared::db::AnyPool;
use sqlx::AssertSqlSafe;

use super::*;

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
        "INSERT INTO profiles (user_id, username, username_norm, nickname, nickname_norm,
                               nickname_pinyin, nickname_initials, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(username)
    .bind(shared::text::fold(username))
    .bind(nickname)
    .bind(shared::text::fold(nickname))
    .bind(shared::text::pinyin(nickname).0)
    .bind(shared::text::pinyin(nickname).1)
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
            updated_at_ms = $6,
            nickname_pinyin = COALESCE($7, nickname_pinyin),
            nickname_initials = COALESCE($8, nickname_initials)
         WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(update.nickname)
    .bind(update.nickname.map(shared::text::fold))
    .bind(update.signature)
    .bind(update.avatar)
    .bind(now_ms)
    .bind(update.nickname.map(|n| shared::text::pinyin(n).0))
    .bind(update.nickname.map(|n| shared::text::pinyin(n).1))
    .execute(pool)
    .await?;
    Ok(())
}

/// Users other than `me` whose username starts with `query` or whose
/// nickname contains it (both compared lowercased), or, for a query in
/// Latin letters, whose nickname's pinyin contains it whole or by initials
/// (`xiaoming`, `xm` find 王小明), by username, after the username `after`.
pub async fn search(
    pool: &AnyPool,
    me: &str,
    query: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<ProfileRow>, sqlx::Error> {
    let folded = shared::text::fold(query);
    let typed = shared::text::compact(&folded);
    let latin = typed.chars().all(|c| c.is_ascii_alphanumeric());
    let (literal, pinyin) = (like_literal(&folded), like_literal(&typed));
    // A query that is not Latin letters matches no pinyin ('' never does).
    let pinyin = if latin && !typed.is_empty() {
        format!("%{pinyin}%")
    } else {
        String::new()
    };
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {PROFILE_COLUMNS} FROM profiles
         WHERE user_id <> $1 AND username_norm > $2
           AND (username_norm LIKE $3 ESCAPE '\\' OR nickname_norm LIKE $4 ESCAPE '\\'
                OR nickname_pinyin LIKE $6 ESCAPE '\\' OR nickname_initials LIKE $6 ESCAPE '\\')
         ORDER BY username_norm LIMIT $5"
    )))
    .bind(me)
    .bind(after)
    .bind(format!("{literal}%"))
    .bind(format!("%{literal}%"))
    .bind(limit)
    .bind(pinyin)
    .fetch_all(pool)
    .await
}

/// Gives the profiles made before nicknames had pinyin theirs, a page at a
/// time; how many it filled.
pub async fn fill_pinyin(pool: &AnyPool) -> Result<u64, sqlx::Error> {
    let mut filled = 0;
    loop {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT user_id, nickname FROM profiles WHERE nickname_pinyin IS NULL LIMIT 500",
        )
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            return Ok(filled);
        }
        let mut tx = pool.begin().await?;
        for (user_id, nickname) in &rows {
            let (full, initials) = shared::text::pinyin(nickname);
            sqlx::query(
                "UPDATE profiles SET nickname_pinyin = $2, nickname_initials = $3 WHERE user_id = $1",
            )
            .bind(user_id)
            .bind(full)
            .bind(initials)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        filled += rows.len() as u64;
    }
}

/// Which of `files` are someone's avatar.
pub async fn avatars_used(pool: &AnyPool, files: &[String]) -> Result<Vec<String>, sqlx::Error> {
    let mut used = Vec::new();
    for file in files {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM profiles WHERE avatar = $1 LIMIT 1")
                .bind(file)
                .fetch_optional(pool)
                .await?;
        if found.is_some() {
            used.push(file.clone());
        }
    }
    Ok(used)
}
