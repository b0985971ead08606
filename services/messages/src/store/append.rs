//! Storing sends. `seq` is assigned by incrementing
//! `conversations.last_seq` inside the transaction that inserts the message,
//! so seqs are gapless and unique per conversation (also enforced by a
//! unique index). The increment is the first write of the transaction, so
//! SQLite takes its write lock up front instead of failing to upgrade a read
//! lock.

use shared::db::AnyPool;

/// A stored message.
#[derive(Clone, Debug)]
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
    /// The quoted message (Quote in its JSON mapping), "" = none.
    pub reply_to: String,
    /// Delivered by read fan-out (a large group's), not through the inboxes
    /// (the `delivery` column).
    pub read_fanout: bool,
    /// After this message its group is large.
    pub group_large: bool,
    /// Stored after messages of its conversation that were not fanned out
    /// when its transaction ran (a fan-out that never ran after its commit:
    /// a crash, a fault, another instance's): those go out before it. Set
    /// on the rows just stored; false on rows read back.
    pub behind: bool,
}

/// The 0/1 INTEGER columns (portable to SQLite and PostgreSQL) become
/// booleans here, where the row is read.
impl<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> for MessageRow {
    fn from_row(row: &'r sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let flag = |name: &str| row.try_get::<i64, _>(name).map(|v| v != 0);
        Ok(Self {
            id: row.try_get("id")?,
            conversation_id: row.try_get("conversation_id")?,
            seq: row.try_get("seq")?,
            sender_id: row.try_get("sender_id")?,
            sender_device_id: row.try_get("sender_device_id")?,
            client_msg_id: row.try_get("client_msg_id")?,
            body: row.try_get("body")?,
            server_ts_ms: row.try_get("server_ts_ms")?,
            reply_to: row.try_get("reply_to")?,
            read_fanout: flag("delivery")?,
            group_large: flag("group_large")?,
            behind: false,
        })
    }
}

pub(super) const MESSAGE_COLUMNS: &str = "id, conversation_id, seq, sender_id, sender_device_id, client_msg_id, body, server_ts_ms, reply_to, delivery, group_large";

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
    /// The files the body references (stored in `message_files` with it).
    pub files: Vec<String>,
}

/// Moves the fan-out watermarks in `fanned` (conversation, seq: every
/// message up to it is fanned out) and stores `messages`, in one transaction
/// (group commit). Each message gets the next seq of its conversation, in
/// the order given; its conversation and members are created on first use.
/// `None` for a message whose `(sender, client_msg_id)` is stored already,
/// or came earlier in the batch (its seq is not used). A batch takes a few
/// statements, whatever its size: one read of the repeats, one update that
/// numbers every conversation, one insert of the messages (in chunks), one
/// update of the watermarks. Conversations are updated in id order, so two
/// instances batching on PostgreSQL cannot deadlock on them.
pub async fn store_batch(
    pool: &AnyPool,
    fanned: &[(String, i64)],
    messages: &[&NewMessage],
) -> Result<Vec<Option<MessageRow>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let marks = highest_marks(fanned);
    let rows = insert_batch(&mut tx, messages, &marks).await?;
    if !marks.is_empty() {
        let marks: Vec<(&str, i64)> = marks.into_iter().collect();
        let each = Each::of(&tx);
        // Only forward: a late mark never moves a watermark back.
        let sql = format!(
            "UPDATE conversations SET fanned_seq = CAST(j.value->>1 AS BIGINT)
             FROM {} WHERE conversations.id = j.value->>0
               AND conversations.fanned_seq < CAST(j.value->>1 AS BIGINT)",
            each.from(1)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(json(&marks)?)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(rows)
}

/// A batch's rows go to the database as one parameter, a JSON array of
/// arrays, read back as a table. The statement text is then the same
/// whatever the batch's size: prepared once and cached per connection,
/// with one parameter to bind (SQLite looks parameters up by name in a
/// list, so binding thousands of `$n` cost the writer more than storing
/// the rows).
#[derive(Clone, Copy)]
struct Each {
    postgres: bool,
}

impl Each {
    fn of(conn: &sqlx::AnyConnection) -> Self {
        Self {
            postgres: conn.backend_name() == "PostgreSQL",
        }
    }

    /// The `FROM` item reading parameter `$n` as rows `j`, each a JSON
    /// array in `j.value` (`j.value->>k` is its k-th element as text).
    fn from(self, n: usize) -> String {
        if self.postgres {
            format!("json_array_elements(CAST(${n} AS json)) AS j(value)")
        } else {
            // The binary form: `->>` then reads an element without
            // parsing the row's text again.
            format!("jsonb_each(${n}) AS j")
        }
    }
}

/// The JSON text of a batch's rows (tuples become arrays).
fn json<T: serde::Serialize>(rows: &T) -> Result<String, sqlx::Error> {
    serde_json::to_string(rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// Another instance stored one of the batch's `(sender, client_msg_id)`
/// between the check and the insert: the caller redoes the batch one send
/// at a time.
#[derive(Debug, thiserror::Error)]
#[error("a repeated send was stored beside this batch")]
pub struct RepeatRaced;

/// One watermark per conversation: the highest given.
pub(super) fn highest_marks(fanned: &[(String, i64)]) -> std::collections::BTreeMap<&str, i64> {
    let mut marks = std::collections::BTreeMap::<&str, i64>::new();
    for (conversation, seq) in fanned {
        let mark = marks.entry(conversation.as_str()).or_default();
        *mark = (*mark).max(*seq);
    }
    marks
}

/// Whether a conversation's first message of a transaction, at `seq`, comes
/// after messages not fanned out: its stored watermark and the one this
/// transaction moves it to (`marks`) are both short of `seq - 1`.
pub(super) fn is_behind(
    marks: &std::collections::BTreeMap<&str, i64>,
    conversation: &str,
    fanned_seq: i64,
    seq: i64,
) -> bool {
    fanned_seq.max(marks.get(conversation).copied().unwrap_or(0)) < seq - 1
}

async fn insert_batch(
    conn: &mut sqlx::AnyConnection,
    messages: &[&NewMessage],
    marks: &std::collections::BTreeMap<&str, i64>,
) -> Result<Vec<Option<MessageRow>>, sqlx::Error> {
    let mut rows: Vec<Option<MessageRow>> = vec![None; messages.len()];
    if messages.is_empty() {
        return Ok(rows);
    }
    // Repeats: stored already, or earlier in this batch.
    let stored = repeats(&mut *conn, messages).await?;
    let mut seen = std::collections::HashSet::new();
    let fresh: Vec<usize> = (0..messages.len())
        .filter(|&i| {
            let key = (
                messages[i].sender_id.as_str(),
                messages[i].client_msg_id.as_str(),
            );
            !stored.contains(&(key.0.to_owned(), key.1.to_owned())) && seen.insert(key)
        })
        .collect();
    // How many seqs each conversation takes.
    let mut counts: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for &i in &fresh {
        *counts
            .entry(messages[i].conversation_id.as_str())
            .or_default() += 1;
    }
    let now = messages.iter().map(|m| m.now_ms).max().unwrap_or_default();
    let mut last = number(&mut *conn, &counts, now).await?;
    let missing: Vec<&str> = counts
        .keys()
        .filter(|c| !last.contains_key(**c))
        .copied()
        .collect();
    if !missing.is_empty() {
        // First messages: their conversations start at 0, then take seqs
        // like the others.
        for &c in &missing {
            let Some(m) = fresh
                .iter()
                .map(|&i| messages[i])
                .find(|m| m.conversation_id == c)
            else {
                continue;
            };
            sqlx::query(
                "INSERT INTO conversations (id, kind, last_seq, last_activity_ms, created_at_ms)
                 VALUES ($1, $2, 0, $3, $3) ON CONFLICT (id) DO NOTHING",
            )
            .bind(c)
            .bind(m.kind)
            .bind(m.now_ms)
            .execute(&mut *conn)
            .await?;
        }
        let counts: std::collections::BTreeMap<&str, i64> =
            missing.iter().map(|c| (*c, counts[c])).collect();
        last.extend(number(&mut *conn, &counts, now).await?);
    }
    // Seqs in batch order, per conversation.
    let mut next: std::collections::HashMap<&str, (i64, i64, bool)> = counts
        .iter()
        .map(|(c, n)| {
            let (last, large, fanned) = last.get(*c).copied().unwrap_or_default();
            let first = last - n + 1;
            (*c, (first, large, is_behind(marks, c, fanned, first)))
        })
        .collect();
    let mut numbered = Vec::with_capacity(fresh.len());
    for &i in &fresh {
        let m = messages[i];
        let Some((seq, large, behind)) = next.get_mut(m.conversation_id.as_str()) else {
            return Err(sqlx::Error::RowNotFound);
        };
        rows[i] = Some(MessageRow {
            behind: *behind,
            ..row_of(m, *seq, *large)
        });
        numbered.push((m, *seq, *large));
        *seq += 1;
    }
    let inserted = insert_rows(&mut *conn, &numbered).await?.len();
    if inserted != numbered.len() {
        if let [(m, _, _)] = numbered.as_slice() {
            // The one send was stored beside it: nothing else saw its seq.
            give_back_seq(&mut *conn, m).await?;
            return Ok(vec![None; messages.len()]);
        }
        return Err(sqlx::Error::Decode(Box::new(RepeatRaced)));
    }
    for (m, seq, _) in &numbered {
        if *seq == 1 {
            add_members(&mut *conn, m).await?;
        }
    }
    let files: Vec<(&str, &str)> = numbered
        .iter()
        .flat_map(|(m, _, _)| m.files.iter().map(|f| (f.as_str(), m.id.as_str())))
        .collect();
    if !files.is_empty() {
        let sql = format!(
            "INSERT INTO message_files (file_id, message_id)
             SELECT j.value->>0, j.value->>1 FROM {} WHERE true
             ON CONFLICT (file_id, message_id) DO NOTHING",
            Each::of(conn).from(1)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(json(&files)?)
            .execute(&mut *conn)
            .await?;
    }
    Ok(rows)
}

/// The `(sender, client_msg_id)` pairs of `messages` already stored.
async fn repeats(
    conn: &mut sqlx::AnyConnection,
    messages: &[&NewMessage],
) -> Result<std::collections::HashSet<(String, String)>, sqlx::Error> {
    let pairs: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m.sender_id.as_str(), m.client_msg_id.as_str()))
        .collect();
    let sql = format!(
        "SELECT m.sender_id, m.client_msg_id FROM {} JOIN messages m
           ON m.sender_id = j.value->>0 AND m.client_msg_id = j.value->>1",
        Each::of(conn).from(1)
    );
    let found = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql))
        .bind(json(&pairs)?)
        .fetch_all(&mut *conn)
        .await?;
    Ok(found.into_iter().collect())
}

/// Takes `counts[c]` seqs in each existing conversation `c`: its new last
/// seq, read fan-out flag and fan-out watermark. Conversations that do not
/// exist are left out.
async fn number(
    conn: &mut sqlx::AnyConnection,
    counts: &std::collections::BTreeMap<&str, i64>,
    now: i64,
) -> Result<std::collections::HashMap<String, (i64, i64, i64)>, sqlx::Error> {
    let each = Each::of(conn);
    let ids: Vec<(&str, i64)> = counts.iter().map(|(c, n)| (*c, *n)).collect();
    let rows = json(&ids)?;
    if each.postgres {
        // Take the rows' locks in id order (an UPDATE takes them in scan
        // order), so two instances' batches cannot deadlock.
        let sql = format!(
            "SELECT id FROM conversations WHERE id IN (SELECT j.value->>0 FROM {})
             ORDER BY id FOR UPDATE",
            each.from(1)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&rows)
            .execute(&mut *conn)
            .await?;
    }
    let sql = format!(
        "UPDATE conversations SET last_seq = last_seq + CAST(j.value->>1 AS BIGINT), last_activity_ms = $2
         FROM {} WHERE conversations.id = j.value->>0
         RETURNING conversations.id, conversations.last_seq, conversations.read_fanout,
                   conversations.fanned_seq",
        each.from(1)
    );
    let last = sqlx::query_as::<_, (String, i64, i64, i64)>(sqlx::AssertSqlSafe(sql))
        .bind(&rows)
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
    Ok(last
        .into_iter()
        .map(|(id, seq, large, fanned)| (id, (seq, large, fanned)))
        .collect())
}

/// Inserts messages with their (seq, read fan-out); returns the ids stored
/// (a repeated `(sender, client_msg_id)` is skipped).
async fn insert_rows(
    conn: &mut sqlx::AnyConnection,
    rows: &[(&NewMessage, i64, i64)],
) -> Result<Vec<String>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<_> = rows
        .iter()
        .map(|(m, seq, large)| {
            (
                &m.id,
                &m.conversation_id,
                seq,
                &m.sender_id,
                &m.sender_device_id,
                &m.client_msg_id,
                &m.body,
                m.now_ms,
                &m.reply_to,
                large,
            )
        })
        .collect();
    // `WHERE true`: SQLite reads an upsert's ON after a bare SELECT as a
    // join's.
    let sql = format!(
        "INSERT INTO messages (id, conversation_id, seq, sender_id, sender_device_id, client_msg_id, body, server_ts_ms, reply_to, delivery, group_large)
         SELECT j.value->>0, j.value->>1, CAST(j.value->>2 AS BIGINT), j.value->>3, j.value->>4,
                j.value->>5, j.value->>6, CAST(j.value->>7 AS BIGINT), j.value->>8,
                CAST(j.value->>9 AS BIGINT), CAST(j.value->>9 AS BIGINT)
         FROM {} WHERE true
         ON CONFLICT (sender_id, client_msg_id) DO NOTHING RETURNING id",
        Each::of(conn).from(1)
    );
    sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
        .bind(json(&values)?)
        .fetch_all(conn)
        .await
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

pub(super) fn row_of(m: &NewMessage, seq: i64, large: i64) -> MessageRow {
    MessageRow {
        id: m.id.clone(),
        conversation_id: m.conversation_id.clone(),
        seq,
        sender_id: m.sender_id.clone(),
        sender_device_id: m.sender_device_id.clone(),
        client_msg_id: m.client_msg_id.clone(),
        body: m.body.clone(),
        server_ts_ms: m.now_ms,
        reply_to: m.reply_to.clone(),
        read_fanout: large != 0,
        group_large: large != 0,
        behind: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MIGRATOR, current_members, not_fanned_out};
    use shared::ids::ConversationId;

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
            files: Vec::new(),
        }
    }

    fn seqs(rows: &[Option<MessageRow>]) -> Vec<Option<i64>> {
        rows.iter().map(|r| r.as_ref().map(|r| r.seq)).collect()
    }

    /// How a test stores a batch: through sqlx, or on a writer's own
    /// connection (on a thread of its own, as the writer does).
    enum Via {
        Pool,
        Writer(shared::db::SqliteWriter),
    }

    async fn store_via(
        via: &mut Via,
        pool: &AnyPool,
        fanned: &[(String, i64)],
        messages: &[&NewMessage],
    ) -> anyhow::Result<Vec<Option<MessageRow>>> {
        Ok(match via {
            Via::Pool => store_batch(pool, fanned, messages).await?,
            Via::Writer(db) => {
                let owned: Vec<NewMessage> = messages.iter().map(|m| (*m).clone()).collect();
                std::thread::scope(|s| {
                    s.spawn(|| {
                        db.transaction(|tx| super::super::store_batch_sqlite(tx, fanned, &owned))
                    })
                    .join()
                })
                .map_err(|_| anyhow::anyhow!("the writer panicked"))??
            }
        })
    }

    /// A batch stores new and existing conversations' messages with gapless
    /// seqs, gives repeated sends none, and marks fan-outs, on real SQLite:
    /// through sqlx (as on PostgreSQL) and on the writer's own connection.
    #[tokio::test]
    async fn batches_number_gaplessly_and_skip_repeats_through_sqlx() -> anyhow::Result<()> {
        batches_number_gaplessly_and_skip_repeats(false).await
    }

    #[tokio::test]
    async fn batches_number_gaplessly_and_skip_repeats_on_the_writers_connection()
    -> anyhow::Result<()> {
        batches_number_gaplessly_and_skip_repeats(true).await
    }

    /// A fresh database: its directory and pools (kept while the test
    /// runs), the write pool, and how the test stores batches in it.
    async fn fresh_db(
        own_writer: bool,
    ) -> anyhow::Result<(tempfile::TempDir, shared::db::Pools, AnyPool, Via)> {
        let dir = tempfile::tempdir()?;
        let url = shared::db::sqlite_url(&dir.path().join("m.db"));
        let pools = shared::db::connect_pools(&url, 1, &MIGRATOR).await?;
        let pool = pools.write.clone();
        let via = match (&pools.sqlite, own_writer) {
            (Some(file), true) => Via::Writer(file.open_writer()?),
            _ => Via::Pool,
        };
        Ok((dir, pools, pool, via))
    }

    async fn batches_number_gaplessly_and_skip_repeats(own_writer: bool) -> anyhow::Result<()> {
        let (_dir, _pools, pool, mut via) = fresh_db(own_writer).await?;
        let (a, b) = (send("g:c1", "u1", "a"), send("g:c2", "u2", "b"));
        // New conversations: their first messages.
        let first = store_via(&mut via, &pool, &[], &[&a, &b]).await?;
        assert_eq!(seqs(&first), [Some(1), Some(1)]);
        // Existing ones in one statement, a new one beside them, a repeat
        // (same sender and client_msg_id) and a fan-out mark.
        let repeat = send("g:c2", "u2", "b");
        let marked = a.id.clone();
        let second = store_via(
            &mut via,
            &pool,
            &[("g:c1".to_owned(), 1)],
            &[&send("g:c1", "u1", "a2"), &repeat, &send("g:c3", "u3", "c")],
        )
        .await?;
        assert_eq!(seqs(&second), [Some(2), None, Some(1)]);
        // Two messages of one conversation in a batch keep their order.
        let third = store_via(
            &mut via,
            &pool,
            &[],
            &[&send("g:c1", "u1", "a3"), &send("g:c1", "peer", "a4")],
        )
        .await?;
        assert_eq!(seqs(&third), [Some(3), Some(4)]);
        // A client_msg_id already used elsewhere stores nothing, and leaves
        // no numbered conversation behind.
        let reused = store_via(
            &mut via,
            &pool,
            &[],
            &[&send("g:c4", "u1", "a"), &send("g:c3", "u3", "c2")],
        )
        .await?;
        assert_eq!(seqs(&reused), [None, Some(2)]);
        // The repeats gave their seqs back: c2 goes on at 2, c4 starts at 1
        // (with its members).
        let fourth = store_via(
            &mut via,
            &pool,
            &[],
            &[
                &send("g:c2", "u2", "b3"),
                &send("g:c1", "u1", "a5"),
                &send("g:c4", "u1", "x"),
            ],
        )
        .await?;
        assert_eq!(seqs(&fourth), [Some(2), Some(5), Some(1)]);
        assert_eq!(
            current_members(&pool, &ConversationId::parse("g:c4").unwrap())
                .await?
                .len(),
            2
        );
        assert_eq!(
            current_members(&pool, &ConversationId::parse("g:c3").unwrap())
                .await?
                .len(),
            2
        );
        // Messages of one conversation around repeats (one stored before,
        // one earlier in this batch) stay gapless.
        let fifth = store_via(
            &mut via,
            &pool,
            &[],
            &[
                &send("g:c1", "u1", "a6"),
                &send("g:c1", "u1", "a5"),
                &send("g:c1", "u1", "a6"),
                &send("g:c1", "peer", "a7"),
            ],
        )
        .await?;
        assert_eq!(seqs(&fifth), [Some(6), None, None, Some(7)]);
        let pending: Vec<String> = not_fanned_out(&pool, i64::MAX, 100)
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert!(!pending.contains(&marked) && pending.contains(&b.id));
        Ok(())
    }

    fn behind(rows: &[Option<MessageRow>]) -> Vec<Option<bool>> {
        rows.iter().map(|r| r.as_ref().map(|r| r.behind)).collect()
    }

    /// A conversation's messages stored after others that are not fanned
    /// out say so (all of them in the batch); the watermarks the same
    /// transaction moves count, through sqlx and on the writer's connection.
    #[tokio::test]
    async fn messages_stored_after_ones_not_fanned_out_are_behind() -> anyhow::Result<()> {
        for own_writer in [false, true] {
            let (_dir, _pools, pool, mut via) = fresh_db(own_writer).await?;
            // First messages: nothing before them.
            let first = store_via(
                &mut via,
                &pool,
                &[],
                &[&send("g:c1", "u1", "a1"), &send("g:c2", "u2", "b1")],
            )
            .await?;
            assert_eq!(behind(&first), [Some(false), Some(false)]);
            // c1's first is marked in the same transaction; c2's is not
            // (its fan-out never ran): c2's next two are behind, a repeat
            // is not numbered at all.
            let second = store_via(
                &mut via,
                &pool,
                &[("g:c1".to_owned(), 1)],
                &[
                    &send("g:c1", "u1", "a2"),
                    &send("g:c2", "u2", "b2"),
                    &send("g:c2", "u2", "b1"),
                    &send("g:c2", "u2", "b3"),
                ],
            )
            .await?;
            assert_eq!(
                behind(&second),
                [Some(false), Some(true), None, Some(true)],
                "own writer: {own_writer}"
            );
            // Once c2 is fanned out up to 3, its next is not behind; c1's
            // next is, since its 2 was never marked.
            let third = store_via(
                &mut via,
                &pool,
                &[("g:c2".to_owned(), 3)],
                &[&send("g:c2", "u2", "b4"), &send("g:c1", "u1", "a3")],
            )
            .await?;
            assert_eq!(behind(&third), [Some(false), Some(true)]);
        }
        Ok(())
    }
}
