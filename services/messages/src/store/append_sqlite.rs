//! [`store_batch`](super::store_batch) on SQLite, for the writer thread
//! that owns its connection (see `crate::writer`): the same rows and seqs,
//! through prepared statements run one send at a time. Each statement is a
//! call into SQLite on this thread, where through sqlx each was a round trip
//! to its worker thread; a batch now costs one hand-off whatever its size.

use std::collections::{HashMap, HashSet};

use rusqlite::{OptionalExtension, Transaction, params};

use super::append::{MessageRow, NewMessage, highest_marks, is_behind, row_of};

/// Stores `messages` in the order given and moves the watermarks in
/// `fanned`, inside `tx`: as [`super::store_batch`] does.
pub fn store_batch_sqlite(
    tx: &Transaction<'_>,
    fanned: &[(String, i64)],
    messages: &[NewMessage],
) -> rusqlite::Result<Vec<Option<MessageRow>>> {
    let mut rows = Vec::with_capacity(messages.len());
    let marks = highest_marks(fanned);
    if !messages.is_empty() {
        // The message takes the next seq in the statement that stores it, so
        // a repeat (stored before, or beside this writer) takes none.
        let mut insert = tx.prepare_cached(
            "INSERT INTO messages (id, conversation_id, seq, sender_id, sender_device_id, client_msg_id, body, server_ts_ms, reply_to, delivery, group_large)
             SELECT ?1, ?2, c.last_seq + 1, ?3, ?4, ?5, ?6, ?7, ?8, c.read_fanout, c.read_fanout
             FROM conversations c WHERE c.id = ?2
             ON CONFLICT (sender_id, client_msg_id) DO NOTHING
             RETURNING seq, group_large",
        )?;
        let mut number = tx.prepare_cached(
            "UPDATE conversations SET last_seq = ?2, last_activity_ms = MAX(last_activity_ms, ?3)
             WHERE id = ?1 RETURNING fanned_seq",
        )?;
        let mut create = tx.prepare_cached(
            "INSERT INTO conversations (id, kind, last_seq, last_activity_ms, created_at_ms)
             VALUES (?1, ?2, 0, ?3, ?3) ON CONFLICT (id) DO NOTHING",
        )?;
        let mut member = tx.prepare_cached(
            "INSERT INTO conversation_members (conversation_id, user_id, joined_seq)
             VALUES (?1, ?2, 1) ON CONFLICT (conversation_id, user_id) DO NOTHING",
        )?;
        let mut file = tx.prepare_cached(
            "INSERT INTO message_files (file_id, message_id) VALUES (?1, ?2)
             ON CONFLICT (file_id, message_id) DO NOTHING",
        )?;
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        // Per conversation: whether its first message here is behind.
        let mut behind: HashMap<&str, bool> = HashMap::new();
        for m in messages {
            // A repeat earlier in this batch.
            if !seen.insert((&m.sender_id, &m.client_msg_id)) {
                rows.push(None);
                continue;
            }
            let store = |insert: &mut rusqlite::CachedStatement<'_>| {
                insert
                    .query_row(
                        params![
                            m.id,
                            m.conversation_id,
                            m.sender_id,
                            m.sender_device_id,
                            m.client_msg_id,
                            m.body,
                            m.now_ms,
                            m.reply_to,
                        ],
                        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                    )
                    .optional()
            };
            let mut stored = store(&mut insert)?;
            // Nothing stored: a repeat, or the conversation's first message
            // (the conversation starts at 0).
            if stored.is_none() && create.execute(params![m.conversation_id, m.kind, m.now_ms])? > 0
            {
                stored = store(&mut insert)?;
            }
            let Some((seq, large)) = stored else {
                rows.push(None);
                continue;
            };
            let fanned: i64 =
                number.query_row(params![m.conversation_id, seq, m.now_ms], |r| r.get(0))?;
            let behind = *behind
                .entry(&m.conversation_id)
                .or_insert_with(|| is_behind(&marks, &m.conversation_id, fanned, seq));
            if seq == 1 {
                for user in &m.members {
                    member.execute(params![m.conversation_id, user])?;
                }
            }
            for id in &m.files {
                file.execute(params![id, m.id])?;
            }
            rows.push(Some(MessageRow {
                behind,
                ..row_of(m, seq, large)
            }));
        }
    }
    if !marks.is_empty() {
        // One watermark per conversation, the highest; only forward.
        let mut mark = tx.prepare_cached(
            "UPDATE conversations SET fanned_seq = ?2 WHERE id = ?1 AND fanned_seq < ?2",
        )?;
        for (conversation, seq) in marks {
            mark.execute(params![conversation, seq])?;
        }
    }
    Ok(rows)
}
