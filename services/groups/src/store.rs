//! The groups service's SQL. Runs on SQLite and PostgreSQL alike.
//!
//! Every change runs in one transaction that first bumps the group's
//! `version` (taking SQLite's write lock, or PostgreSQL's row lock, so
//! changes to one group are serialized), then reads what the rules need,
//! writes the result and appends the change to `group_changes`.

use std::collections::HashMap;

use shared::db::AnyPool;
use sqlx::AssertSqlSafe;

use crate::plan::{Group, Member, Plan, Role};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/groups");

pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

const GROUP_COLUMNS: &str =
    "id, name, description, announcement, owner_id, muted_all, max_members, created_at_ms";

#[derive(sqlx::FromRow)]
struct GroupRow {
    id: String,
    name: String,
    description: String,
    announcement: String,
    owner_id: String,
    muted_all: i64,
    max_members: i64,
    created_at_ms: i64,
}

impl From<GroupRow> for Group {
    fn from(r: GroupRow) -> Self {
        Group {
            id: r.id,
            name: r.name,
            description: r.description,
            announcement: r.announcement,
            owner_id: r.owner_id,
            muted_all: r.muted_all != 0,
            max_members: r.max_members,
            created_at_ms: r.created_at_ms,
        }
    }
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    user_id: String,
    role: String,
    muted_until_ms: i64,
    joined_at_ms: i64,
}

impl From<MemberRow> for Member {
    fn from(r: MemberRow) -> Self {
        Member {
            user_id: r.user_id,
            role: Role::parse(&r.role).unwrap_or(Role::Member),
            muted_until_ms: r.muted_until_ms,
            joined_at_ms: r.joined_at_ms,
        }
    }
}

/// A pending change of a group's conversation.
#[derive(sqlx::FromRow)]
pub struct ChangeRow {
    pub version: i64,
    /// Base64 of the encoded ConversationChange.
    pub change: String,
}

pub async fn insert_group(tx: &mut Tx, group: &Group, now_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO chat_groups (id, name, description, announcement, owner_id, muted_all, max_members, version, dismissed, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, '', $4, 0, $5, 1, 0, $6, $6)",
    )
    .bind(&group.id)
    .bind(&group.name)
    .bind(&group.description)
    .bind(&group.owner_id)
    .bind(group.max_members)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Bumps the version of a live group (the transaction's first write) and
/// returns the new version with the group; None if there is no such live group.
pub async fn lock_group(tx: &mut Tx, id: &str) -> Result<Option<(i64, Group)>, sqlx::Error> {
    let version: Option<i64> = sqlx::query_scalar(
        "UPDATE chat_groups SET version = version + 1 WHERE id = $1 AND dismissed = 0 RETURNING version",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(version) = version else {
        return Ok(None);
    };
    let row: GroupRow = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {GROUP_COLUMNS} FROM chat_groups WHERE id = $1"
    )))
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(Some((version, row.into())))
}

/// A live group, outside any change.
pub async fn group(pool: &AnyPool, id: &str) -> Result<Option<Group>, sqlx::Error> {
    let row: Option<GroupRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {GROUP_COLUMNS} FROM chat_groups WHERE id = $1 AND dismissed = 0"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Group::from))
}

/// The rows of `users` who are members of `group`.
pub async fn members_of<'e, E>(
    executor: E,
    group: &str,
    users: &[String],
) -> Result<HashMap<String, Member>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    if users.is_empty() {
        return Ok(HashMap::new());
    }
    let list = (2..users.len() + 2)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT user_id, role, muted_until_ms, joined_at_ms FROM group_members
         WHERE group_id = $1 AND user_id IN ({list})"
    );
    let mut query = sqlx::query_as::<_, MemberRow>(AssertSqlSafe(sql)).bind(group);
    for user in users {
        query = query.bind(user);
    }
    Ok(query
        .fetch_all(executor)
        .await?
        .into_iter()
        .map(|r| (r.user_id.clone(), Member::from(r)))
        .collect())
}

pub async fn member_count<'e, E>(executor: E, group: &str) -> Result<i64, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query_scalar("SELECT COUNT(*) FROM group_members WHERE group_id = $1")
        .bind(group)
        .fetch_one(executor)
        .await
}

/// Writes a plan's member and group changes.
pub async fn write_plan(
    tx: &mut Tx,
    group: &str,
    plan: &Plan,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    for m in &plan.upserts {
        sqlx::query(
            "INSERT INTO group_members (group_id, user_id, role, muted_until_ms, joined_at_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (group_id, user_id) DO UPDATE SET
                role = excluded.role, muted_until_ms = excluded.muted_until_ms",
        )
        .bind(group)
        .bind(&m.user_id)
        .bind(m.role.as_str())
        .bind(m.muted_until_ms)
        .bind(m.joined_at_ms)
        .execute(&mut **tx)
        .await?;
    }
    for user in &plan.removals {
        sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
            .bind(group)
            .bind(user)
            .execute(&mut **tx)
            .await?;
    }
    let g = &plan.group;
    sqlx::query(
        "UPDATE chat_groups SET
            name = COALESCE($2, name),
            description = COALESCE($3, description),
            announcement = COALESCE($4, announcement),
            owner_id = COALESCE($5, owner_id),
            muted_all = COALESCE($6, muted_all),
            dismissed = CASE WHEN $7 = 1 THEN 1 ELSE dismissed END,
            updated_at_ms = $8
         WHERE id = $1",
    )
    .bind(group)
    .bind(g.name.as_deref())
    .bind(g.description.as_deref())
    .bind(g.announcement.as_deref())
    .bind(g.owner_id.as_deref())
    .bind(g.muted_all.map(i64::from))
    .bind(i64::from(g.dismissed))
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    if g.dismissed {
        sqlx::query("DELETE FROM group_members WHERE group_id = $1")
            .bind(group)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub async fn insert_change(
    tx: &mut Tx,
    group: &str,
    version: i64,
    change: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO group_changes (group_id, version, change, applied, created_at_ms)
         VALUES ($1, $2, $3, 0, $4)",
    )
    .bind(group)
    .bind(version)
    .bind(change)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The changes of `group` not yet applied to its conversation, in order.
pub async fn pending_changes(pool: &AnyPool, group: &str) -> Result<Vec<ChangeRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT version, change FROM group_changes WHERE group_id = $1 AND applied = 0 ORDER BY version",
    )
    .bind(group)
    .fetch_all(pool)
    .await
}

pub async fn mark_applied(pool: &AnyPool, group: &str, version: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE group_changes SET applied = 1 WHERE group_id = $1 AND version = $2")
        .bind(group)
        .bind(version)
        .execute(pool)
        .await?;
    Ok(())
}

/// Groups with changes waiting to be applied (for the sweep).
pub async fn groups_with_pending(pool: &AnyPool, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT group_id FROM group_changes WHERE applied = 0 LIMIT $1")
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// A page of members by user id.
pub async fn members_page(
    pool: &AnyPool,
    group: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<Member>, sqlx::Error> {
    let rows: Vec<MemberRow> = sqlx::query_as(
        "SELECT user_id, role, muted_until_ms, joined_at_ms FROM group_members
         WHERE group_id = $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
    )
    .bind(group)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Member::from).collect())
}

/// The live groups `user` is a member of, with the membership.
pub async fn groups_of(pool: &AnyPool, user: &str, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT m.group_id FROM group_members m JOIN chat_groups g ON g.id = m.group_id
         WHERE m.user_id = $1 AND g.dismissed = 0 ORDER BY m.joined_at_ms DESC LIMIT $2",
    )
    .bind(user)
    .bind(limit)
    .fetch_all(pool)
    .await
}
