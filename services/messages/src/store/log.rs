//! Reading the message log: one message, a page of history, the messages
//! left to fan out; recalls and deletions for oneself.

use shared::db::AnyPool;
use shared::ids::{ConversationId, UserId};

use super::{MESSAGE_COLUMNS, MessageRow};

pub async fn by_client_msg_id(
    pool: &AnyPool,
    sender_id: &UserId,
    client_msg_id: &str,
) -> Result<Option<MessageRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender_id = $1 AND client_msg_id = $2"
    )))
    .bind(sender_id.as_str())
    .bind(client_msg_id)
    .fetch_optional(pool)
    .await
}

/// Messages stored but not fanned out (past their conversation's
/// watermark), stored before `before_ms`, in seq order per conversation.
pub async fn not_fanned_out(
    pool: &AnyPool,
    before_ms: i64,
    limit: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m
         WHERE m.conversation_id IN (SELECT id FROM conversations WHERE fanned_seq < last_seq)
           AND m.seq > (SELECT c.fanned_seq FROM conversations c WHERE c.id = m.conversation_id)
           AND m.server_ts_ms < $1
         ORDER BY m.conversation_id, m.seq LIMIT $2"
    )))
    .bind(before_ms)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The conversations whose first message not fanned out was stored before
/// `before_ms`.
pub async fn pending_conversations(
    pool: &AnyPool,
    before_ms: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT c.id FROM conversations c
         WHERE c.fanned_seq < c.last_seq
           AND EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id
                       AND m.seq = c.fanned_seq + 1 AND m.server_ts_ms < $1)
         LIMIT 100000",
    )
    .bind(before_ms)
    .fetch_all(pool)
    .await
}

/// The messages of one conversation not yet fanned out, in seq order.
pub async fn not_fanned_out_in(
    pool: &AnyPool,
    conversation: &ConversationId,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
         WHERE conversation_id = $1
           AND seq > (SELECT fanned_seq FROM conversations WHERE id = $1)
         ORDER BY seq"
    )))
    .bind(conversation.as_str())
    .fetch_all(pool)
    .await
}

/// Up to which seq `conversation` is fanned out (0: nothing yet).
pub async fn fanned_seq(pool: &AnyPool, conversation: &str) -> Result<i64, sqlx::Error> {
    Ok(
        sqlx::query_scalar("SELECT fanned_seq FROM conversations WHERE id = $1")
            .bind(conversation)
            .fetch_optional(pool)
            .await?
            .unwrap_or(0),
    )
}

/// A page of `reader`'s history: seq in `(after, before)`, `limit` rows,
/// ascending, without the messages the reader deleted for itself.
/// `newest_first` picks the page next to `before` instead of next to `after`.
pub async fn history(
    pool: &AnyPool,
    reader: &UserId,
    conversation: &ConversationId,
    after: i64,
    before: i64,
    limit: i64,
    newest_first: bool,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    let order = if newest_first { "DESC" } else { "ASC" };
    let columns = MESSAGE_COLUMNS
        .split(", ")
        .map(|c| format!("m.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut rows: Vec<MessageRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {columns} FROM messages m
         WHERE m.conversation_id = $1 AND m.seq > $2 AND m.seq < $3
           AND NOT EXISTS (SELECT 1 FROM hidden_messages h
               WHERE h.user_id = $5 AND h.conversation_id = m.conversation_id AND h.seq = m.seq)
         ORDER BY m.seq {order} LIMIT $4"
    )))
    .bind(conversation.as_str())
    .bind(after)
    .bind(before)
    .bind(limit)
    .bind(reader.as_str())
    .fetch_all(pool)
    .await?;
    if newest_first {
        rows.reverse();
    }
    Ok(rows)
}

/// Hides messages from one user's history.
pub async fn hide(
    pool: &AnyPool,
    user_id: &UserId,
    conversation: &ConversationId,
    seqs: &[i64],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for seq in seqs {
        sqlx::query(
            "INSERT INTO hidden_messages (user_id, conversation_id, seq, hidden_at_ms)
             VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, conversation_id, seq) DO NOTHING",
        )
        .bind(user_id.as_str())
        .bind(conversation.as_str())
        .bind(*seq)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Replaces a message's body with its recall; its files are no longer
/// read through it.
pub async fn recall(pool: &AnyPool, id: &str, body: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE messages SET body = $2 WHERE id = $1")
        .bind(id)
        .bind(body)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM message_files WHERE message_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Whether `user` may read file `file` through a message: one that
/// references it lies in the user's read window of its conversation (from
/// joining, up to leaving) and was not deleted by the user. Recalled
/// messages reference nothing.
pub async fn file_readable(pool: &AnyPool, user: &str, file: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM message_files f
         JOIN messages m ON m.id = f.message_id
         JOIN conversation_members c ON c.conversation_id = m.conversation_id AND c.user_id = $2
         WHERE f.file_id = $1
           AND m.seq >= c.joined_seq AND (c.left_seq = 0 OR m.seq <= c.left_seq)
           AND NOT EXISTS (SELECT 1 FROM hidden_messages h
                           WHERE h.user_id = $2 AND h.conversation_id = m.conversation_id
                             AND h.seq = m.seq)
         LIMIT 1",
    )
    .bind(file)
    .bind(user)
    .fetch_optional(pool)
    .await?;
    Ok(found.is_some())
}

pub async fn message_at(
    pool: &AnyPool,
    conversation: &ConversationId,
    seq: i64,
) -> Result<Option<MessageRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq = $2"
    )))
    .bind(conversation.as_str())
    .bind(seq)
    .fetch_optional(pool)
    .await
}

/// Which of `files` a message references (a recalled one references none).
pub async fn files_used(pool: &AnyPool, files: &[String]) -> Result<Vec<String>, sqlx::Error> {
    let mut used = Vec::new();
    for file in files {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM message_files WHERE file_id = $1 LIMIT 1")
                .bind(file)
                .fetch_optional(pool)
                .await?;
        if found.is_some() {
            used.push(file.clone());
        }
    }
    Ok(used)
}

/// A message by its id.
pub async fn message_by_id(pool: &AnyPool, id: &str) -> Result<Option<MessageRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Replaces a message's body (a transcript added).
pub async fn set_body(pool: &AnyPool, id: &str, body: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE messages SET body = $2 WHERE id = $1")
        .bind(id)
        .bind(body)
        .execute(pool)
        .await?;
    Ok(())
}

/// Every conversation `user` belongs or belonged to, with its read window
/// (`joined_seq`, `left_seq`; 0 = still a member).
pub async fn windows_of(
    pool: &AnyPool,
    user: &str,
) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT conversation_id, joined_seq, left_seq FROM conversation_members
         WHERE user_id = $1 ORDER BY conversation_id",
    )
    .bind(user)
    .fetch_all(pool)
    .await
}

/// Of the messages `refs` (conversation, seq), those `user` may read: in
/// its read window and not deleted by it for itself (recalled ones are
/// returned: the caller sees their body). One query for all of them.
pub async fn visible_among(
    pool: &AnyPool,
    user: &str,
    refs: &[(String, i64)],
) -> Result<Vec<MessageRow>, sqlx::Error> {
    if refs.is_empty() {
        return Ok(Vec::new());
    }
    let columns = MESSAGE_COLUMNS
        .split(", ")
        .map(|c| format!("m.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let pairs = (0..refs.len())
        .map(|i| {
            format!(
                "(m.conversation_id = ${} AND m.seq = ${})",
                2 + 2 * i,
                3 + 2 * i
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    let sql = format!(
        "SELECT {columns} FROM messages m
         JOIN conversation_members c ON c.conversation_id = m.conversation_id AND c.user_id = $1
         WHERE ({pairs})
           AND m.seq >= c.joined_seq AND (c.left_seq = 0 OR m.seq <= c.left_seq)
           AND NOT EXISTS (SELECT 1 FROM hidden_messages h
                           WHERE h.user_id = $1 AND h.conversation_id = m.conversation_id
                             AND h.seq = m.seq)"
    );
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user);
    for (conversation, seq) in refs {
        query = query.bind(conversation.as_str()).bind(*seq);
    }
    query.fetch_all(pool).await
}

/// A page of every stored message in id order, after `after_id`.
pub async fn export(
    pool: &AnyPool,
    after_id: &str,
    limit: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id > $1 ORDER BY id LIMIT $2"
    )))
    .bind(after_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// How many messages are stored.
pub async fn count(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM messages")
        .fetch_one(pool)
        .await
}
