//! The conversation list, read positions and each member's own flags.

use shared::db::AnyPool;
use shared::ids::{ConversationId, UserId};

use super::ReadWindow;

/// One conversation of a user's list, with the user's own state in it.
#[derive(Debug)]
pub struct ConversationRow {
    pub id: String,
    pub kind: String,
    pub title: String,
    pub last_seq: i64,
    pub last_activity_ms: i64,
    pub window: ReadWindow,
    pub read_seq: i64,
    pub pinned: bool,
    pub muted: bool,
}

impl<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> for ConversationRow {
    fn from_row(row: &'r sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(Self {
            id: row.try_get("id")?,
            kind: row.try_get("kind")?,
            title: row.try_get("title")?,
            last_seq: row.try_get("last_seq")?,
            last_activity_ms: row.try_get("last_activity_ms")?,
            window: ReadWindow::from_columns(row.try_get("joined_seq")?, row.try_get("left_seq")?),
            read_seq: row.try_get("read_seq")?,
            pinned: row.try_get::<i64, _>("pinned")? != 0,
            muted: row.try_get::<i64, _>("notifications_muted")? != 0,
        })
    }
}

/// The conversations of a user, pinned first, then most recent activity
/// first (ties by id), after the page boundary `(pinned, activity, id)`.
pub async fn conversations(
    pool: &AnyPool,
    user_id: &UserId,
    before: (i64, i64, &str),
    limit: i64,
) -> Result<Vec<ConversationRow>, sqlx::Error> {
    let (pinned, activity, id) = before;
    sqlx::query_as(
        "SELECT c.id, c.kind, c.title, c.last_seq, c.last_activity_ms,
                m.joined_seq, m.left_seq, m.read_seq, m.pinned, m.notifications_muted
         FROM conversation_members m JOIN conversations c ON c.id = m.conversation_id
         WHERE m.user_id = $1 AND c.last_seq > 0
           AND (m.pinned < $2 OR (m.pinned = $2 AND (c.last_activity_ms < $3
                OR (c.last_activity_ms = $3 AND c.id > $4))))
         ORDER BY m.pinned DESC, c.last_activity_ms DESC, c.id ASC LIMIT $5",
    )
    .bind(user_id.as_str())
    .bind(pinned)
    .bind(activity)
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Messages of others in `(after, upto]` of a conversation: the unread count.
pub async fn unread(
    pool: &AnyPool,
    conversation: &ConversationId,
    reader: &UserId,
    after: i64,
    upto: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM messages
         WHERE conversation_id = $1 AND seq > $2 AND seq <= $3 AND sender_id <> $4",
    )
    .bind(conversation.as_str())
    .bind(after)
    .bind(upto)
    .bind(reader.as_str())
    .fetch_one(pool)
    .await
}

/// Moves a member's read position forward to `seq`; returns the position
/// (unchanged when it was already there or beyond).
pub async fn mark_read(
    pool: &AnyPool,
    conversation: &ConversationId,
    user_id: &UserId,
    seq: i64,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE conversation_members
         SET read_seq = CASE WHEN read_seq < $3 THEN $3 ELSE read_seq END
         WHERE conversation_id = $1 AND user_id = $2 RETURNING read_seq",
    )
    .bind(conversation.as_str())
    .bind(user_id.as_str())
    .bind(seq)
    .fetch_optional(pool)
    .await
}

pub async fn read_seq(
    pool: &AnyPool,
    conversation: &ConversationId,
    user_id: &UserId,
) -> Result<i64, sqlx::Error> {
    let seq: Option<i64> = sqlx::query_scalar(
        "SELECT read_seq FROM conversation_members WHERE conversation_id = $1 AND user_id = $2",
    )
    .bind(conversation.as_str())
    .bind(user_id.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(seq.unwrap_or(0))
}

/// Sets a member's own flags; returns (pinned, muted), None for non-members.
pub async fn set_flags(
    pool: &AnyPool,
    conversation: &ConversationId,
    user_id: &UserId,
    pinned: Option<bool>,
    muted: Option<bool>,
) -> Result<Option<(bool, bool)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE conversation_members
         SET pinned = COALESCE($3, pinned), notifications_muted = COALESCE($4, notifications_muted)
         WHERE conversation_id = $1 AND user_id = $2 RETURNING pinned, notifications_muted",
    )
    .bind(conversation.as_str())
    .bind(user_id.as_str())
    .bind(pinned.map(i64::from))
    .bind(muted.map(i64::from))
    .fetch_optional(pool)
    .await
    .map(|flags: Option<(i64, i64)>| flags.map(|(pinned, muted)| (pinned != 0, muted != 0)))
}

/// The members (other than `sender`) who could read message `seq`, with
/// their read positions.
pub async fn read_positions(
    pool: &AnyPool,
    conversation: &ConversationId,
    seq: i64,
    sender: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, read_seq FROM conversation_members
         WHERE conversation_id = $1 AND user_id <> $3 AND joined_seq <= $2
           AND (left_seq = 0 OR left_seq >= $2)",
    )
    .bind(conversation.as_str())
    .bind(seq)
    .bind(sender)
    .fetch_all(pool)
    .await
}
