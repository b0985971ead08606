//! Who belongs to a conversation and since when (the read window of each
//! member), and the group changes the groups service applies.

use shared::db::AnyPool;
use shared::group::Role;
use shared::ids::{ConversationId, UserId};

use super::MessageRow;

/// The seqs a member may read: from `joined` on, and up to `left` once it
/// left (or was removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadWindow {
    pub joined: i64,
    pub left: Option<i64>,
}

impl ReadWindow {
    /// The window of a direct chat without messages yet: all of it.
    pub const WHOLE: ReadWindow = ReadWindow {
        joined: 1,
        left: None,
    };

    /// From the columns `joined_seq` and `left_seq` (0 = still a member).
    pub fn from_columns(joined_seq: i64, left_seq: i64) -> Self {
        Self {
            joined: joined_seq,
            left: (left_seq > 0).then_some(left_seq),
        }
    }

    pub fn contains(&self, seq: i64) -> bool {
        seq >= self.joined && self.left.is_none_or(|left| seq <= left)
    }

    /// The last seq the member may read when the conversation's is `last`.
    pub fn last_of(&self, last: i64) -> i64 {
        self.left.map_or(last, |left| left.min(last))
    }

    /// Still a member.
    pub fn is_current(&self) -> bool {
        self.left.is_none()
    }
}

/// A user's membership of a conversation.
#[derive(Clone, Debug)]
pub struct Member {
    pub window: ReadWindow,
    pub role: Role,
    pub muted_until_ms: i64,
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    joined_seq: i64,
    left_seq: i64,
    role: String,
    muted_until_ms: i64,
}

pub async fn member(
    pool: &AnyPool,
    conversation: &ConversationId,
    user_id: &UserId,
) -> Result<Option<Member>, sqlx::Error> {
    let row: Option<MemberRow> = sqlx::query_as(
        "SELECT joined_seq, left_seq, role, muted_until_ms FROM conversation_members
         WHERE conversation_id = $1 AND user_id = $2",
    )
    .bind(conversation.as_str())
    .bind(user_id.as_str())
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        let role = Role::parse(&row.role)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown role {:?}", row.role).into()))?;
        Ok(Member {
            window: ReadWindow::from_columns(row.joined_seq, row.left_seq),
            role,
            muted_until_ms: row.muted_until_ms,
        })
    })
    .transpose()
}

/// A conversation's own state.
#[derive(Clone, Debug)]
pub struct ConversationState {
    pub last_seq: i64,
    /// Only owners and admins may speak.
    pub muted_all: bool,
    pub dismissed: bool,
}

pub async fn conversation(
    pool: &AnyPool,
    conversation: &ConversationId,
) -> Result<Option<ConversationState>, sqlx::Error> {
    let row: Option<(i64, i64, i64)> =
        sqlx::query_as("SELECT last_seq, muted_all, dismissed FROM conversations WHERE id = $1")
            .bind(conversation.as_str())
            .fetch_optional(pool)
            .await?;
    Ok(
        row.map(|(last_seq, muted_all, dismissed)| ConversationState {
            last_seq,
            muted_all: muted_all != 0,
            dismissed: dismissed != 0,
        }),
    )
}

/// Who receives message `seq` of a group conversation: those who were
/// members when it was written (a member removed by it is told too).
pub async fn group_recipients(
    pool: &AnyPool,
    conversation: &ConversationId,
    seq: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT user_id FROM conversation_members
         WHERE conversation_id = $1 AND joined_seq <= $2 AND (left_seq = 0 OR left_seq >= $2)",
    )
    .bind(conversation.as_str())
    .bind(seq)
    .fetch_all(pool)
    .await
}

/// What applying a group change did.
pub enum Applied {
    /// Stored as the system message `row`.
    Done(MessageRow),
    /// This version (or a later one) was applied already.
    Duplicate,
    /// An earlier version is missing: the last applied one.
    Gap(i64),
}

/// A group change, as the store applies it.
pub struct Change<'a> {
    pub conversation_id: &'a str,
    pub version: i64,
    pub message_id: &'a str,
    pub actor_id: &'a str,
    pub client_msg_id: &'a str,
    /// (user, present, role, muted_until_ms)
    pub members: Vec<(&'a str, bool, &'a str, i64)>,
    pub muted_all: Option<bool>,
    pub title: Option<&'a str>,
    pub dismissed: bool,
    /// The system notice body in its JSON mapping.
    pub body: &'a str,
    pub now_ms: i64,
    /// Read fan-out from this many current members on, write fan-out below half.
    pub large_at: i64,
}

/// Applies a group change and stores its system message, in one
/// transaction, if it is the next version of the conversation.
pub async fn apply_change(pool: &AnyPool, c: &Change<'_>) -> Result<Applied, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The first write takes SQLite's write lock up front.
    sqlx::query(
        "INSERT INTO conversations (id, kind, last_seq, last_activity_ms, created_at_ms)
         VALUES ($1, 'group', 0, $2, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(c.conversation_id)
    .bind(c.now_ms)
    .execute(&mut *tx)
    .await?;
    let (applied, large_before): (i64, i64) =
        sqlx::query_as("SELECT applied_version, read_fanout FROM conversations WHERE id = $1")
            .bind(c.conversation_id)
            .fetch_one(&mut *tx)
            .await?;
    if applied >= c.version {
        return Ok(Applied::Duplicate);
    }
    if applied != c.version - 1 {
        return Ok(Applied::Gap(applied));
    }
    // Conditional on the version read above: with two instances on
    // PostgreSQL (read committed) the other may have applied it meanwhile.
    let numbered: Option<(i64, i64)> = sqlx::query_as(
        "UPDATE conversations SET last_seq = last_seq + 1, last_activity_ms = $2,
            applied_version = $3,
            muted_all = COALESCE($4, muted_all),
            title = COALESCE($5, title),
            dismissed = CASE WHEN $6 = 1 THEN 1 ELSE dismissed END
         WHERE id = $1 AND applied_version = $3 - 1 RETURNING last_seq, fanned_seq",
    )
    .bind(c.conversation_id)
    .bind(c.now_ms)
    .bind(c.version)
    .bind(c.muted_all.map(i64::from))
    .bind(c.title)
    .bind(i64::from(c.dismissed))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((seq, fanned)) = numbered else {
        return Ok(Applied::Duplicate);
    };
    for (user, present, role, muted_until) in &c.members {
        if *present {
            sqlx::query(
                "INSERT INTO conversation_members (conversation_id, user_id, joined_seq, left_seq, role, muted_until_ms)
                 VALUES ($1, $2, $3, 0, $4, $5)
                 ON CONFLICT (conversation_id, user_id) DO UPDATE SET
                    role = excluded.role,
                    muted_until_ms = excluded.muted_until_ms,
                    joined_seq = CASE WHEN conversation_members.left_seq > 0
                        THEN excluded.joined_seq ELSE conversation_members.joined_seq END,
                    left_seq = 0",
            )
            .bind(c.conversation_id)
            .bind(*user)
            .bind(seq)
            .bind(*role)
            .bind(*muted_until)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE conversation_members SET left_seq = $3
                 WHERE conversation_id = $1 AND user_id = $2 AND left_seq = 0",
            )
            .bind(c.conversation_id)
            .bind(*user)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        }
    }
    if c.dismissed {
        sqlx::query(
            "UPDATE conversation_members SET left_seq = $2 WHERE conversation_id = $1 AND left_seq = 0",
        )
        .bind(c.conversation_id)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    }
    // Large from `large_at` current members on, small again below half of
    // it (a group near the threshold does not switch back and forth).
    let large_after: i64 = sqlx::query_scalar(
        "UPDATE conversations SET read_fanout = CASE
            WHEN (SELECT COUNT(*) FROM conversation_members
                  WHERE conversation_id = $1 AND left_seq = 0) >= $2 THEN 1
            WHEN (SELECT COUNT(*) FROM conversation_members
                  WHERE conversation_id = $1 AND left_seq = 0) * 2 < $2 THEN 0
            ELSE read_fanout END
         WHERE id = $1 RETURNING read_fanout",
    )
    .bind(c.conversation_id)
    .bind(c.large_at)
    .fetch_one(&mut *tx)
    .await?;
    // The notice of a switch goes through every member's inbox, so each
    // edge learns of it in order with the user's other news.
    let delivery = i64::from(large_before != 0 && large_after != 0);
    sqlx::query(
        "INSERT INTO messages (id, conversation_id, seq, sender_id, sender_device_id, client_msg_id, body, server_ts_ms, delivery, group_large)
         VALUES ($1, $2, $3, $4, '', $5, $6, $7, $8, $9)",
    )
    .bind(c.message_id)
    .bind(c.conversation_id)
    .bind(seq)
    .bind(c.actor_id)
    .bind(c.client_msg_id)
    .bind(c.body)
    .bind(c.now_ms)
    .bind(delivery)
    .bind(large_after)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Applied::Done(MessageRow {
        id: c.message_id.to_owned(),
        conversation_id: c.conversation_id.to_owned(),
        seq,
        sender_id: c.actor_id.to_owned(),
        sender_device_id: String::new(),
        client_msg_id: c.client_msg_id.to_owned(),
        body: c.body.to_owned(),
        server_ts_ms: c.now_ms,
        reply_to: String::new(),
        read_fanout: delivery != 0,
        group_large: large_after != 0,
        // Without the marks the writer holds back (at worst, a redo that
        // finds its entries).
        behind: fanned < seq - 1,
    }))
}

/// The caller's current large groups (read fan-out) and their last seq.
pub async fn large_groups(
    pool: &AnyPool,
    user_id: &UserId,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.id, c.last_seq FROM conversation_members m JOIN conversations c ON c.id = m.conversation_id
         WHERE m.user_id = $1 AND m.left_seq = 0 AND c.read_fanout = 1 AND c.dismissed = 0",
    )
    .bind(user_id.as_str())
    .fetch_all(pool)
    .await
}

/// The last seq of each of `conversations` that exists.
pub async fn heads(
    pool: &AnyPool,
    conversations: &[String],
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    if conversations.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = (1..=conversations.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT id, last_seq FROM conversations WHERE id IN ({placeholders})");
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
    for conversation in conversations {
        query = query.bind(conversation);
    }
    query.fetch_all(pool).await
}

/// The current members of a conversation.
pub async fn current_members(
    pool: &AnyPool,
    conversation: &ConversationId,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT user_id FROM conversation_members WHERE conversation_id = $1 AND left_seq = 0",
    )
    .bind(conversation.as_str())
    .fetch_all(pool)
    .await
}
