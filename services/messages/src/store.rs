//! The messages service's SQL. Runs on SQLite and PostgreSQL alike.
//!
//! `seq` is assigned by incrementing `conversations.last_seq` inside the
//! transaction that inserts the message, so seqs are gapless and unique per
//! conversation (also enforced by a unique index). The increment is the first
//! write of the transaction, so SQLite takes its write lock up front instead
//! of failing to upgrade a read lock.

use shared::db::AnyPool;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/messages");

/// A stored message.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MessageRow {
    pub id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub sender_id: String,
    pub sender_device_id: String,
    pub client_msg_id: String,
    /// The body in its JSON mapping.
    pub body: String,
    pub server_ts_ms: i64,
    pub fanned_out: i64,
    /// The quoted message (Quote in its JSON mapping), "" = none.
    pub reply_to: String,
    /// 1: delivered by read fan-out (a large group's), 0: through the inboxes.
    pub delivery: i64,
    /// 1: after this message its group is large.
    pub group_large: i64,
}

const MESSAGE_COLUMNS: &str = "id, conversation_id, seq, sender_id, sender_device_id, client_msg_id, body, server_ts_ms, fanned_out, reply_to, delivery, group_large";

/// What a send stores.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub id: String,
    pub conversation_id: String,
    pub kind: &'static str,
    /// The participants of a direct chat (members from its first message).
    pub members: Vec<String>,
    pub sender_id: String,
    pub sender_device_id: String,
    pub client_msg_id: String,
    pub body: String,
    pub reply_to: String,
    pub now_ms: i64,
}

/// Marks `fanned` fanned out and stores `messages`, in one transaction (group
/// commit). Each message gets the next seq of its conversation, in the order
/// given; its conversation and members are created on first use. `None` for
/// a message whose `(sender, client_msg_id)` is stored already (its seq is
/// given back). Conversations are updated in id order, so two instances
/// batching on PostgreSQL cannot deadlock on them.
pub async fn store_batch(
    pool: &AnyPool,
    fanned: &[String],
    messages: &[&NewMessage],
) -> Result<Vec<Option<MessageRow>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let conversations: std::collections::HashSet<&str> = messages
        .iter()
        .map(|m| m.conversation_id.as_str())
        .collect();
    let rows = if messages.len() > 1 && conversations.len() == messages.len() {
        insert_many(&mut tx, messages).await?
    } else {
        let mut order: Vec<usize> = (0..messages.len()).collect();
        order.sort_by(|a, b| {
            messages[*a]
                .conversation_id
                .cmp(&messages[*b].conversation_id)
        });
        let mut rows = vec![None; messages.len()];
        for i in order {
            rows[i] = insert_in(&mut tx, messages[i]).await?;
        }
        rows
    };
    for chunk in fanned.chunks(500) {
        let sql = format!(
            "UPDATE messages SET fanned_out = 1 WHERE id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id);
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(rows)
}

/// `$from, $from+1, ...`: `count` placeholders.
fn placeholders(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Messages to distinct conversations in a few statements: one update takes
/// the next seq of every existing conversation, one insert stores the
/// messages. A conversation's first message goes the one-by-one way.
async fn insert_many(
    conn: &mut sqlx::AnyConnection,
    messages: &[&NewMessage],
) -> Result<Vec<Option<MessageRow>>, sqlx::Error> {
    const ROWS: usize = 200;
    let now = messages.iter().map(|m| m.now_ms).max().unwrap_or_default();
    let mut sorted = messages.to_vec();
    sorted.sort_by(|a, b| a.conversation_id.cmp(&b.conversation_id));
    let postgres = conn.backend_name() == "PostgreSQL";
    let mut next = std::collections::HashMap::new();
    for chunk in sorted.chunks(ROWS) {
        if postgres {
            // Take the rows' locks in id order (an UPDATE takes them in
            // scan order), so two instances' batches cannot deadlock.
            let sql = format!(
                "SELECT id FROM conversations WHERE id IN ({}) ORDER BY id FOR UPDATE",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for m in chunk {
                query = query.bind(&m.conversation_id);
            }
            query.execute(&mut *conn).await?;
        }
        let sql = format!(
            "UPDATE conversations SET last_seq = last_seq + 1, last_activity_ms = $1
             WHERE id IN ({}) RETURNING id, last_seq, read_fanout",
            placeholders(2, chunk.len())
        );
        let mut query = sqlx::query_as::<_, (String, i64, i64)>(sqlx::AssertSqlSafe(sql)).bind(now);
        for m in chunk {
            query = query.bind(&m.conversation_id);
        }
        for (id, seq, large) in query.fetch_all(&mut *conn).await? {
            next.insert(id, (seq, large));
        }
    }
    let mut rows = vec![None; messages.len()];
    let mut numbered = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match next.get(&m.conversation_id) {
            Some(&(seq, large)) => {
                rows[i] = Some(row_of(m, seq, large));
                numbered.push(i);
            }
            None => rows[i] = insert_in(&mut *conn, m).await?,
        }
    }
    let mut stored = std::collections::HashSet::new();
    for chunk in numbered.chunks(ROWS) {
        let chunk: Vec<(&NewMessage, i64, i64)> = chunk
            .iter()
            .filter_map(|&i| rows[i].as_ref().map(|r| (messages[i], r.seq, r.delivery)))
            .collect();
        stored.extend(insert_rows(&mut *conn, &chunk).await?);
    }
    for i in numbered {
        let m = messages[i];
        if !stored.contains(&m.id) {
            give_back_seq(&mut *conn, m).await?;
            rows[i] = None;
        } else if rows[i].as_ref().is_some_and(|r| r.seq == 1) {
            add_members(&mut *conn, m).await?;
        }
    }
    Ok(rows)
}

/// Takes the next seq of `m`'s conversation: (seq, read fan-out), None
/// when the conversation does not exist yet.
async fn next_seq(
    conn: &mut sqlx::AnyConnection,
    m: &NewMessage,
) -> Result<Option<(i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE conversations SET last_seq = last_seq + 1, last_activity_ms = $2
         WHERE id = $1 RETURNING last_seq, read_fanout",
    )
    .bind(&m.conversation_id)
    .bind(m.now_ms)
    .fetch_optional(conn)
    .await
}

async fn insert_in(
    conn: &mut sqlx::AnyConnection,
    m: &NewMessage,
) -> Result<Option<MessageRow>, sqlx::Error> {
    let (seq, large) = match next_seq(&mut *conn, m).await? {
        Some(next) => next,
        None => {
            sqlx::query(
                "INSERT INTO conversations (id, kind, last_seq, last_activity_ms, created_at_ms)
                 VALUES ($1, $2, 0, $3, $3) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&m.conversation_id)
            .bind(m.kind)
            .bind(m.now_ms)
            .execute(&mut *conn)
            .await?;
            next_seq(&mut *conn, m)
                .await?
                .ok_or(sqlx::Error::RowNotFound)?
        }
    };
    let stored = insert_rows(&mut *conn, &[(m, seq, large)]).await?.len();
    if stored == 0 {
        give_back_seq(&mut *conn, m).await?;
        return Ok(None);
    }
    if seq == 1 {
        add_members(&mut *conn, m).await?;
    }
    Ok(Some(row_of(m, seq, large)))
}

/// Inserts messages with their (seq, read fan-out); returns the ids stored
/// (a repeated `(sender, client_msg_id)` is skipped).
async fn insert_rows(
    conn: &mut sqlx::AnyConnection,
    rows: &[(&NewMessage, i64, i64)],
) -> Result<Vec<String>, sqlx::Error> {
    let values = (0..rows.len())
        .map(|k| {
            let p: Vec<String> = (1..=10).map(|j| format!("${}", k * 10 + j)).collect();
            format!(
                "({}, {}, {}, {}, {}, {}, {}, {}, 0, {}, {}, {})",
                p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[9]
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO messages (id, conversation_id, seq, sender_id, sender_device_id, client_msg_id, body, server_ts_ms, fanned_out, reply_to, delivery, group_large)
         VALUES {values} ON CONFLICT (sender_id, client_msg_id) DO NOTHING RETURNING id"
    );
    let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
    for (m, seq, large) in rows {
        query = query
            .bind(&m.id)
            .bind(&m.conversation_id)
            .bind(*seq)
            .bind(&m.sender_id)
            .bind(&m.sender_device_id)
            .bind(&m.client_msg_id)
            .bind(&m.body)
            .bind(m.now_ms)
            .bind(&m.reply_to)
            .bind(*large);
    }
    query.fetch_all(conn).await
}

/// A repeated send gives its seq back (nothing else saw it: this
/// transaction holds the conversation's row).
async fn give_back_seq(conn: &mut sqlx::AnyConnection, m: &NewMessage) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE conversations SET last_seq = last_seq - 1 WHERE id = $1")
        .bind(&m.conversation_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The participants of a direct chat, from its first message on.
async fn add_members(conn: &mut sqlx::AnyConnection, m: &NewMessage) -> Result<(), sqlx::Error> {
    for member in &m.members {
        sqlx::query(
            "INSERT INTO conversation_members (conversation_id, user_id, joined_seq)
             VALUES ($1, $2, 1) ON CONFLICT (conversation_id, user_id) DO NOTHING",
        )
        .bind(&m.conversation_id)
        .bind(member)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

fn row_of(m: &NewMessage, seq: i64, large: i64) -> MessageRow {
    MessageRow {
        id: m.id.clone(),
        conversation_id: m.conversation_id.clone(),
        seq,
        sender_id: m.sender_id.clone(),
        sender_device_id: m.sender_device_id.clone(),
        client_msg_id: m.client_msg_id.clone(),
        body: m.body.clone(),
        server_ts_ms: m.now_ms,
        fanned_out: 0,
        reply_to: m.reply_to.clone(),
        delivery: large,
        group_large: large,
    }
}

pub async fn by_client_msg_id(
    pool: &AnyPool,
    sender_id: &str,
    client_msg_id: &str,
) -> Result<Option<MessageRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender_id = $1 AND client_msg_id = $2"
    )))
    .bind(sender_id)
    .bind(client_msg_id)
    .fetch_optional(pool)
    .await
}

/// Messages stored but not fanned out, stored before `before_ms`, oldest first.
pub async fn not_fanned_out(
    pool: &AnyPool,
    before_ms: i64,
    limit: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE fanned_out = 0 AND server_ts_ms < $1
         ORDER BY conversation_id, seq LIMIT $2"
    )))
    .bind(before_ms)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The conversations with a message stored before `before_ms` and not yet
/// fanned out.
pub async fn pending_conversations(
    pool: &AnyPool,
    before_ms: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT conversation_id FROM messages
         WHERE fanned_out = 0 AND server_ts_ms < $1 LIMIT 100000",
    )
    .bind(before_ms)
    .fetch_all(pool)
    .await
}

/// The messages of one conversation not yet fanned out, in seq order.
pub async fn not_fanned_out_in(
    pool: &AnyPool,
    conversation_id: &str,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND fanned_out = 0
         ORDER BY seq"
    )))
    .bind(conversation_id)
    .fetch_all(pool)
    .await
}

/// One member's row of a conversation.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MemberRow {
    /// First seq the member may read.
    pub joined_seq: i64,
    /// 0 while a member, else the last seq it may read.
    pub left_seq: i64,
    pub role: String,
    pub muted_until_ms: i64,
}

pub async fn member(
    pool: &AnyPool,
    conversation_id: &str,
    user_id: &str,
) -> Result<Option<MemberRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT joined_seq, left_seq, role, muted_until_ms FROM conversation_members
         WHERE conversation_id = $1 AND user_id = $2",
    )
    .bind(conversation_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await
}

/// A conversation's own row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ConversationState {
    pub kind: String,
    pub last_seq: i64,
    pub muted_all: i64,
    pub dismissed: i64,
}

pub async fn conversation(
    pool: &AnyPool,
    id: &str,
) -> Result<Option<ConversationState>, sqlx::Error> {
    sqlx::query_as("SELECT kind, last_seq, muted_all, dismissed FROM conversations WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Who receives message `seq` of a group conversation: those who were
/// members when it was written (a member removed by it is told too).
pub async fn group_recipients(
    pool: &AnyPool,
    conversation_id: &str,
    seq: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT user_id FROM conversation_members
         WHERE conversation_id = $1 AND joined_seq <= $2 AND (left_seq = 0 OR left_seq >= $2)",
    )
    .bind(conversation_id)
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
    let seq: Option<i64> = sqlx::query_scalar(
        "UPDATE conversations SET last_seq = last_seq + 1, last_activity_ms = $2,
            applied_version = $3,
            muted_all = COALESCE($4, muted_all),
            title = COALESCE($5, title),
            dismissed = CASE WHEN $6 = 1 THEN 1 ELSE dismissed END
         WHERE id = $1 AND applied_version = $3 - 1 RETURNING last_seq",
    )
    .bind(c.conversation_id)
    .bind(c.now_ms)
    .bind(c.version)
    .bind(c.muted_all.map(i64::from))
    .bind(c.title)
    .bind(i64::from(c.dismissed))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(seq) = seq else {
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
        "INSERT INTO messages (id, conversation_id, seq, sender_id, sender_device_id, client_msg_id, body, server_ts_ms, fanned_out, delivery, group_large)
         VALUES ($1, $2, $3, $4, '', $5, $6, $7, 0, $8, $9)",
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
        fanned_out: 0,
        reply_to: String::new(),
        delivery,
        group_large: large_after,
    }))
}

/// The caller's current large groups (read fan-out) and their last seq.
pub async fn large_groups(
    pool: &AnyPool,
    user_id: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.id, c.last_seq FROM conversation_members m JOIN conversations c ON c.id = m.conversation_id
         WHERE m.user_id = $1 AND m.left_seq = 0 AND c.read_fanout = 1 AND c.dismissed = 0",
    )
    .bind(user_id)
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

/// A page of `reader`'s history: seq in `(after, before)`, `limit` rows,
/// ascending, without the messages the reader deleted for itself.
/// `newest_first` picks the page next to `before` instead of next to `after`.
pub async fn history(
    pool: &AnyPool,
    reader: &str,
    conversation_id: &str,
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
    .bind(conversation_id)
    .bind(after)
    .bind(before)
    .bind(limit)
    .bind(reader)
    .fetch_all(pool)
    .await?;
    if newest_first {
        rows.reverse();
    }
    Ok(rows)
}

#[derive(Debug, sqlx::FromRow)]
pub struct ConversationRow {
    pub id: String,
    pub kind: String,
    pub title: String,
    pub last_seq: i64,
    pub last_activity_ms: i64,
    pub joined_seq: i64,
    pub left_seq: i64,
    pub read_seq: i64,
    pub pinned: i64,
    pub notifications_muted: i64,
}

/// The conversations of a user, pinned first, then most recent activity
/// first (ties by id), after the page boundary `(pinned, activity, id)`.
pub async fn conversations(
    pool: &AnyPool,
    user_id: &str,
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
    .bind(user_id)
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
    conversation_id: &str,
    reader: &str,
    after: i64,
    upto: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM messages
         WHERE conversation_id = $1 AND seq > $2 AND seq <= $3 AND sender_id <> $4",
    )
    .bind(conversation_id)
    .bind(after)
    .bind(upto)
    .bind(reader)
    .fetch_one(pool)
    .await
}

/// Moves a member's read position forward to `seq`; returns the position
/// (unchanged when it was already there or beyond).
pub async fn mark_read(
    pool: &AnyPool,
    conversation_id: &str,
    user_id: &str,
    seq: i64,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE conversation_members
         SET read_seq = CASE WHEN read_seq < $3 THEN $3 ELSE read_seq END
         WHERE conversation_id = $1 AND user_id = $2 RETURNING read_seq",
    )
    .bind(conversation_id)
    .bind(user_id)
    .bind(seq)
    .fetch_optional(pool)
    .await
}

pub async fn read_seq(
    pool: &AnyPool,
    conversation_id: &str,
    user_id: &str,
) -> Result<i64, sqlx::Error> {
    let seq: Option<i64> = sqlx::query_scalar(
        "SELECT read_seq FROM conversation_members WHERE conversation_id = $1 AND user_id = $2",
    )
    .bind(conversation_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    Ok(seq.unwrap_or(0))
}

/// Sets a member's own flags; returns (pinned, muted), None for non-members.
pub async fn set_flags(
    pool: &AnyPool,
    conversation_id: &str,
    user_id: &str,
    pinned: Option<bool>,
    muted: Option<bool>,
) -> Result<Option<(i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE conversation_members
         SET pinned = COALESCE($3, pinned), notifications_muted = COALESCE($4, notifications_muted)
         WHERE conversation_id = $1 AND user_id = $2 RETURNING pinned, notifications_muted",
    )
    .bind(conversation_id)
    .bind(user_id)
    .bind(pinned.map(i64::from))
    .bind(muted.map(i64::from))
    .fetch_optional(pool)
    .await
}

/// Hides messages from one user's history.
pub async fn hide(
    pool: &AnyPool,
    user_id: &str,
    conversation_id: &str,
    seqs: &[i64],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for seq in seqs {
        sqlx::query(
            "INSERT INTO hidden_messages (user_id, conversation_id, seq, hidden_at_ms)
             VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, conversation_id, seq) DO NOTHING",
        )
        .bind(user_id)
        .bind(conversation_id)
        .bind(*seq)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Replaces a message's body (a recall).
pub async fn set_body(pool: &AnyPool, id: &str, body: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE messages SET body = $2 WHERE id = $1")
        .bind(id)
        .bind(body)
        .execute(pool)
        .await?;
    Ok(())
}

/// The members (other than `sender`) who could read message `seq`, with
/// their read positions.
pub async fn read_positions(
    pool: &AnyPool,
    conversation_id: &str,
    seq: i64,
    sender: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, read_seq FROM conversation_members
         WHERE conversation_id = $1 AND user_id <> $3 AND joined_seq <= $2
           AND (left_seq = 0 OR left_seq >= $2)",
    )
    .bind(conversation_id)
    .bind(seq)
    .bind(sender)
    .fetch_all(pool)
    .await
}

/// The current members of a conversation.
pub async fn current_members(
    pool: &AnyPool,
    conversation_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT user_id FROM conversation_members WHERE conversation_id = $1 AND left_seq = 0",
    )
    .bind(conversation_id)
    .fetch_all(pool)
    .await
}

pub async fn message_at(
    pool: &AnyPool,
    conversation_id: &str,
    seq: i64,
) -> Result<Option<MessageRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq = $2"
    )))
    .bind(conversation_id)
    .bind(seq)
    .fetch_optional(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(conversation: &str, sender: &str, client_msg_id: &str) -> NewMessage {
        NewMessage {
            id: shared::ids::new_id(),
            conversation_id: conversation.into(),
            kind: "direct",
            members: vec![sender.into(), "peer".into()],
            sender_id: sender.into(),
            sender_device_id: "d".into(),
            client_msg_id: client_msg_id.into(),
            body: "{}".into(),
            reply_to: String::new(),
            now_ms: 1,
        }
    }

    fn seqs(rows: &[Option<MessageRow>]) -> Vec<Option<i64>> {
        rows.iter().map(|r| r.as_ref().map(|r| r.seq)).collect()
    }

    /// A batch stores new and existing conversations' messages with gapless
    /// seqs, gives repeated sends none, and marks fan-outs, on real SQLite.
    #[tokio::test]
    async fn batches_number_gaplessly_and_skip_repeats() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let url = shared::db::sqlite_url(&dir.path().join("m.db"));
        let pool = shared::db::connect(&url, 1, &MIGRATOR).await?;
        let (a, b) = (send("c1", "u1", "a"), send("c2", "u2", "b"));
        // New conversations: their first messages.
        let first = store_batch(&pool, &[], &[&a, &b]).await?;
        assert_eq!(seqs(&first), [Some(1), Some(1)]);
        // Existing ones in one statement, a new one beside them, a repeat
        // (same sender and client_msg_id) and a fan-out mark.
        let repeat = send("c2", "u2", "b");
        let marked = a.id.clone();
        let second = store_batch(
            &pool,
            std::slice::from_ref(&marked),
            &[&send("c1", "u1", "a2"), &repeat, &send("c3", "u3", "c")],
        )
        .await?;
        assert_eq!(seqs(&second), [Some(2), None, Some(1)]);
        // Two messages of one conversation in a batch keep their order.
        let third = store_batch(
            &pool,
            &[],
            &[&send("c1", "u1", "a3"), &send("c1", "peer", "a4")],
        )
        .await?;
        assert_eq!(seqs(&third), [Some(3), Some(4)]);
        // A client_msg_id already used elsewhere stores nothing, and leaves
        // no numbered conversation behind.
        let reused = store_batch(
            &pool,
            &[],
            &[&send("c4", "u1", "a"), &send("c3", "u3", "c2")],
        )
        .await?;
        assert_eq!(seqs(&reused), [None, Some(2)]);
        // The repeats gave their seqs back: c2 goes on at 2, c4 starts at 1
        // (with its members).
        let fourth = store_batch(
            &pool,
            &[],
            &[
                &send("c2", "u2", "b3"),
                &send("c1", "u1", "a5"),
                &send("c4", "u1", "x"),
            ],
        )
        .await?;
        assert_eq!(seqs(&fourth), [Some(2), Some(5), Some(1)]);
        assert_eq!(current_members(&pool, "c4").await?.len(), 2);
        assert_eq!(current_members(&pool, "c3").await?.len(), 2);
        let pending: Vec<String> = not_fanned_out(&pool, i64::MAX, 100)
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert!(!pending.contains(&marked) && pending.contains(&b.id));
        Ok(())
    }
}
