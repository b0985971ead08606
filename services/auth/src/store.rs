//! The auth service's SQL. Runs on SQLite and PostgreSQL alike.

use shared::db::AnyPool;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/auth");

#[derive(Debug, sqlx::FromRow)]
pub struct Credentials {
    pub id: String,
    pub password_hash: String,
}

#[derive(Debug, sqlx::FromRow)]
pub struct KeyRow {
    pub kid: String,
    pub private_der: String,
    pub public_raw: String,
}

pub struct NewUser<'a> {
    pub id: &'a str,
    pub username: &'a str,
    pub password_hash: &'a str,
    pub nickname: &'a str,
    pub now_ms: i64,
}

/// Inserts a user; a taken username is a unique violation.
pub async fn insert_user(pool: &AnyPool, user: &NewUser<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (id, username, username_norm, password_hash, nickname, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(user.id)
    .bind(user.username)
    .bind(user.username.to_ascii_lowercase())
    .bind(user.password_hash)
    .bind(user.nickname)
    .bind(user.now_ms)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn credentials(
    pool: &AnyPool,
    username: &str,
) -> Result<Option<Credentials>, sqlx::Error> {
    sqlx::query_as("SELECT id, password_hash FROM users WHERE username_norm = $1")
        .bind(username.to_ascii_lowercase())
        .fetch_optional(pool)
        .await
}

pub async fn insert_device(
    pool: &AnyPool,
    id: &str,
    user_id: &str,
    name: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO devices (id, user_id, name, created_at_ms, last_login_at_ms)
         VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(id)
    .bind(user_id)
    .bind(name)
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks a login on an existing device of `user_id`; false if it is not theirs.
pub async fn touch_device(
    pool: &AnyPool,
    id: &str,
    user_id: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE devices SET last_login_at_ms = $1 WHERE id = $2 AND user_id = $3")
            .bind(now_ms)
            .bind(id)
            .bind(user_id)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Which of `ids` are existing users.
pub async fn existing_users(pool: &AnyPool, ids: &[String]) -> Result<Vec<String>, sqlx::Error> {
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        let hit: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
        found.extend(hit);
    }
    Ok(found)
}

pub async fn signing_keys(pool: &AnyPool) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as("SELECT kid, private_der, public_raw FROM signing_keys ORDER BY kid")
        .fetch_all(pool)
        .await
}

pub async fn insert_signing_key(
    pool: &AnyPool,
    key: &KeyRow,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, private_der, public_raw, created_at_ms) VALUES ($1, $2, $3, $4)",
    )
    .bind(&key.kid)
    .bind(&key.private_der)
    .bind(&key.public_raw)
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(())
}
