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
    /// Normalized phone number, or "".
    pub phone: &'a str,
    pub now_ms: i64,
}

/// An account's public fields.
#[derive(Debug, sqlx::FromRow)]
pub struct AccountRow {
    pub id: String,
    pub username: String,
    pub nickname: String,
    pub created_at_ms: i64,
}

/// Inserts a user; a taken username or phone is a unique violation.
pub async fn insert_user(pool: &AnyPool, user: &NewUser<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (id, username, username_norm, password_hash, nickname, phone, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(user.id)
    .bind(user.username)
    .bind(user.username.to_ascii_lowercase())
    .bind(user.password_hash)
    .bind(user.nickname)
    .bind(user.phone)
    .bind(user.now_ms)
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether an account already has this (normalized) phone number.
pub async fn phone_taken(pool: &AnyPool, phone: &str) -> Result<bool, sqlx::Error> {
    Ok(by_phone(pool, phone).await?.is_some())
}

pub async fn by_phone(pool: &AnyPool, phone: &str) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, username, nickname, created_at_ms FROM users WHERE phone = $1")
        .bind(phone)
        .fetch_optional(pool)
        .await
}

/// Sets a user's (normalized, proven) phone number; false: no such user.
pub async fn set_phone(pool: &AnyPool, user_id: &str, phone: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE users SET phone = $1 WHERE id = $2")
        .bind(phone)
        .bind(user_id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn password_hash(pool: &AnyPool, user_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await
}

pub async fn set_password_hash(
    pool: &AnyPool,
    user_id: &str,
    hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
        .bind(hash)
        .bind(user_id)
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

/// The accounts among `ids` that exist, in the order asked.
pub async fn accounts(pool: &AnyPool, ids: &[String]) -> Result<Vec<AccountRow>, sqlx::Error> {
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        let hit: Option<AccountRow> =
            sqlx::query_as("SELECT id, username, nickname, created_at_ms FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
        found.extend(hit);
    }
    Ok(found)
}

/// How many devices `user_id` has (logged out ones included).
pub async fn device_count(pool: &AnyPool, user_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(pool)
        .await
}

/// Which of `ids` have two devices or more (one query for them all).
pub async fn with_several_devices(
    pool: &AnyPool,
    ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT user_id FROM devices WHERE user_id IN ({}) GROUP BY user_id HAVING COUNT(*) > 1",
        placeholders.join(", ")
    );
    // Only numbered placeholders are formatted in; the ids are bound.
    let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(id);
    }
    query.fetch_all(pool).await
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

/// Stores a device's new refresh token (the hash of its secret).
pub async fn set_refresh(
    pool: &AnyPool,
    device_id: &str,
    hash: &str,
    expires_at_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE devices SET refresh_hash = $2, refresh_expires_at_ms = $3, used_refresh_hashes = ''
         WHERE id = $1",
    )
    .bind(device_id)
    .bind(hash)
    .bind(expires_at_ms)
    .execute(pool)
    .await?;
    Ok(())
}

/// Used refresh hashes kept per device: 8 hex SHA-256 and their spaces.
const USED_HASHES_CHARS: i64 = 8 * 65 - 1;

/// Replaces a device's refresh token if `old_hash` is still its current one
/// and unexpired (and remembers `old_hash` as used); returns the device's
/// user, None when the token is not valid.
pub async fn rotate_refresh(
    pool: &AnyPool,
    device_id: &str,
    old_hash: &str,
    new_hash: &str,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE devices SET refresh_hash = $3, refresh_expires_at_ms = $5, last_login_at_ms = $4,
                used_refresh_hashes = substr($2 || ' ' || used_refresh_hashes, 1, CAST($6 AS INTEGER))
         WHERE id = $1 AND refresh_hash = $2 AND refresh_hash <> '' AND refresh_expires_at_ms > $4
         RETURNING user_id",
    )
    .bind(device_id)
    .bind(old_hash)
    .bind(new_hash)
    .bind(now_ms)
    .bind(expires_at_ms)
    .bind(USED_HASHES_CHARS)
    .fetch_optional(pool)
    .await
}

/// The user of a signed-in device whose refresh token `hash` was already
/// exchanged: a copy of a token is being used.
pub async fn reused_refresh(
    pool: &AnyPool,
    device_id: &str,
    hash: &str,
) -> Result<Option<String>, sqlx::Error> {
    // (`hash` is hex: nothing in it is special to LIKE)
    sqlx::query_scalar(
        "SELECT user_id FROM devices
         WHERE id = $1 AND refresh_hash <> ''
           AND ' ' || used_refresh_hashes || ' ' LIKE '% ' || $2 || ' %'",
    )
    .bind(device_id)
    .bind(hash)
    .fetch_optional(pool)
    .await
}

/// Which devices of a user to log out.
#[derive(Clone, Copy, Debug)]
pub enum Devices<'a> {
    /// This one.
    Only(&'a str),
    /// Every one but this one.
    AllBut(&'a str),
}

/// Logs devices of `user_id` out: their refresh tokens stop working.
/// Returns how many were logged in.
pub async fn revoke(
    pool: &AnyPool,
    user_id: &str,
    devices: Devices<'_>,
) -> Result<u64, sqlx::Error> {
    let (test, device) = match devices {
        Devices::Only(device) => ("=", device),
        Devices::AllBut(device) => ("<>", device),
    };
    let sql = format!(
        "UPDATE devices SET refresh_hash = '', refresh_expires_at_ms = 0
         WHERE user_id = $1 AND id {test} $2 AND refresh_hash <> ''"
    );
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(device)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// One of a user's devices.
#[derive(Debug, sqlx::FromRow)]
pub struct DeviceRow {
    pub id: String,
    pub name: String,
    pub created_at_ms: i64,
    pub last_login_at_ms: i64,
    /// 1 when its refresh token works.
    pub signed_in: i64,
}

/// A user's devices, most recently active first.
pub async fn devices(pool: &AnyPool, user_id: &str) -> Result<Vec<DeviceRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, created_at_ms, last_login_at_ms,
                CASE WHEN refresh_hash <> '' THEN 1 ELSE 0 END AS signed_in
         FROM devices WHERE user_id = $1 ORDER BY last_login_at_ms DESC, id",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}

/// Whether `device_id` is one of `user_id`'s devices.
pub async fn owns_device(
    pool: &AnyPool,
    user_id: &str,
    device_id: &str,
) -> Result<bool, sqlx::Error> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT id FROM devices WHERE id = $1 AND user_id = $2")
            .bind(device_id)
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
    Ok(found.is_some())
}

/// Keeps an ended session (see `revocations`), and forgets those older
/// than `forget_before_ms`.
pub async fn record_revocation(
    pool: &AnyPool,
    event: &shared::proto::auth::DevicesRevoked,
    forget_before_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO revocations (id, user_id, device_ids, every_device_but, at_ms)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(shared::ids::new_id())
    .bind(&event.user_id)
    .bind(event.device_ids.join(" "))
    .bind(&event.every_device_but)
    .bind(event.at_ms)
    .execute(pool)
    .await?;
    sqlx::query("DELETE FROM revocations WHERE at_ms < $1")
        .bind(forget_before_ms)
        .execute(pool)
        .await?;
    Ok(())
}

/// Ended sessions since `since_ms`, oldest first.
pub async fn revocations(
    pool: &AnyPool,
    since_ms: i64,
) -> Result<Vec<shared::proto::auth::DevicesRevoked>, sqlx::Error> {
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT user_id, device_ids, every_device_but, at_ms FROM revocations
         WHERE at_ms >= $1 ORDER BY at_ms",
    )
    .bind(since_ms)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(user_id, devices, every_device_but, at_ms)| shared::proto::auth::DevicesRevoked {
                user_id,
                device_ids: devices.split_whitespace().map(str::to_owned).collect(),
                every_device_but,
                at_ms,
            },
        )
        .collect())
}
