//! The index: an embedded SurrealDB on disk (the SurrealKV engine), one
//! record per message with its terms (see [`crate::text`]) under a
//! full-text index (BM25), and what a search filters on.
//!
//! A message's record is `msg:<message id>`, so applying an event again
//! writes the same record: nothing changes. A recalled message keeps a
//! record with `recalled` set and no terms, so a late copy of its creation
//! (from a rebuild running beside the event feed) cannot bring its words
//! back.

use std::path::Path;

use serde_json::{Value, json};
use surrealdb::Surreal;
use surrealdb::engine::local::{Db, SurrealKv};
use surrealdb::types::SurrealValue;

/// What the index could not do.
#[derive(Debug, thiserror::Error)]
#[error("search index: {0}")]
pub struct IndexError(String);

impl From<surrealdb::Error> for IndexError {
    fn from(e: surrealdb::Error) -> Self {
        Self(e.to_string())
    }
}

/// A message as indexed.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    pub id: String,
    pub conversation_id: String,
    pub seq: u64,
    pub sender_id: String,
    /// text, file, voice, location (what has words); image, video.
    pub kind: &'static str,
    pub ts_ms: i64,
    /// Space-separated terms ([`crate::text::indexed_string`]).
    pub terms: String,
}

/// A change to the index, from one event.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A message as it is stored.
    Put(Doc),
    /// A message recalled: its words go for good.
    Recall(String),
    /// A voice message's transcript became its words.
    Transcribed {
        id: String,
        conversation_id: String,
        terms: String,
    },
}

/// Seqs `from..=to` of a conversation (`to` 0: no end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub conversation_id: String,
    pub from: u64,
    pub to: u64,
}

/// What a search asks of the index.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// The query's terms, each required.
    pub terms: Vec<String>,
    /// Only these seqs of these conversations (what the caller may read):
    /// applied in the index, so nothing outside them is even counted.
    pub windows: Vec<Window>,
    pub sender_id: Option<String>,
    pub kind: Option<String>,
    pub before_ms: Option<i64>,
    pub after_ms: Option<i64>,
    /// Newest first instead of best first.
    pub by_time: bool,
}

/// A message the index found.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// The message id.
    pub key: String,
    pub conv: String,
    pub seq: i64,
    pub ts: i64,
    /// Its relevance (0 when ordered by time).
    pub score: f64,
}

/// A candidate as the index returns it: any term of the query, in the
/// caller's windows.
#[derive(Debug, SurrealValue)]
struct Candidate {
    key: String,
    conv: String,
    seq: i64,
    ts: i64,
    terms: String,
}

/// Changes written in one transaction at most (an event may carry a
/// whole batch of messages, and a transaction's writes are held in memory
/// until it commits): about as many as one batch of sends.
const MAX_CHANGES: usize = 256;

/// BM25's parameters (the usual ones).
const K1: f64 = 1.2;
const B: f64 = 0.75;

/// The candidates that hold every term, best first (or newest first).
///
/// Relevance is BM25 over the candidates themselves (every message in the
/// caller's windows with any of the terms): a term's weight comes from how
/// many of them hold it, a message's length from its terms. Nothing about
/// other users' conversations enters it, and SurrealDB does not read each
/// hit's postings again to score it (measured: scoring there took about
/// 70% of a query).
fn rank(candidates: Vec<Candidate>, terms: &[String], by_time: bool) -> Vec<Found> {
    // Term frequencies per candidate, and its length.
    let counted: Vec<(Candidate, Vec<u32>, usize)> = candidates
        .into_iter()
        .map(|c| {
            let mut tf = vec![0u32; terms.len()];
            let mut len = 0;
            for word in c.terms.split(' ').filter(|w| !w.is_empty()) {
                len += 1;
                for (i, t) in terms.iter().enumerate() {
                    if word == t {
                        tf[i] += 1;
                    }
                }
            }
            (c, tf, len)
        })
        .collect();
    let n = counted.len() as f64;
    let mut df = vec![0f64; terms.len()];
    let mut total_len = 0f64;
    for (_, tf, len) in &counted {
        total_len += *len as f64;
        for (i, f) in tf.iter().enumerate() {
            if *f > 0 {
                df[i] += 1.0;
            }
        }
    }
    let avg = (total_len / n.max(1.0)).max(1.0);
    let idf: Vec<f64> = df
        .iter()
        .map(|d| (1.0 + (n - d + 0.5) / (d + 0.5)).ln())
        .collect();
    let mut found: Vec<Found> = counted
        .into_iter()
        .filter(|(_, tf, _)| tf.iter().all(|f| *f > 0))
        .map(|(c, tf, len)| {
            let score = if by_time {
                0.0
            } else {
                tf.iter()
                    .zip(&idf)
                    .map(|(f, idf)| {
                        let f = 1.0 + f64::from(*f).ln();
                        idf * f * (K1 + 1.0) / (f + K1 * (1.0 - B + B * len as f64 / avg))
                    })
                    .sum()
            };
            Found {
                key: c.key,
                conv: c.conv,
                seq: c.seq,
                ts: c.ts,
                score,
            }
        })
        .collect();
    // The seq and the key last: equal scores and times keep one order, so
    // a page's offset means the same on the next call.
    found.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.ts.cmp(&a.ts))
            .then(b.seq.cmp(&a.seq))
            .then(a.key.cmp(&b.key))
    });
    found
}

#[derive(Debug, SurrealValue)]
struct Progress {
    done: bool,
    after_id: String,
    indexed: i64,
    total: i64,
}

/// How far a rebuild from the messages service got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rebuild {
    pub done: bool,
    /// The last message id read.
    pub after_id: String,
    pub indexed: u64,
    pub total: u64,
}

/// The layout of the records and indexes; an index written with another
/// is emptied at start and rebuilt.
const SCHEMA_VERSION: i64 = 3;

/// A plain index over each element of `tokens`, not a FULLTEXT index:
/// ranking is the service's (it reads the candidates' own terms), and
/// SurrealDB's full-text index folds every transaction's changes per term
/// into the term's document set afterwards, which took half of the search
/// process's CPU while indexing (docs/bench.md). An element index costs a
/// key per token, written once.
const SCHEMA: &str = "
DEFINE TABLE IF NOT EXISTS msg SCHEMALESS;
DEFINE INDEX IF NOT EXISTS msg_tokens ON msg FIELDS tokens.*;
DEFINE INDEX IF NOT EXISTS msg_conv ON msg FIELDS conv, seq;
DEFINE TABLE IF NOT EXISTS meta SCHEMALESS;
";

/// Index lookups (a term in a conversation) per statement of a search:
/// SurrealDB's parser refuses a chain of about 120 `OR`s.
const LOOKUPS_PER_STATEMENT: usize = 96;

/// A conversation's key in the index: 40 bits of its id's FNV-1a hash, in
/// hex. Two conversations may share one (a search also filters by the
/// conversation itself); it only has to be short and never change.
pub fn scope_key(conversation_id: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in conversation_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:010x}", hash >> 24)
}

/// `terms` as the index holds them: each distinct one within its
/// conversation (`<key>:<term>`), so a search reads only the index entries
/// of the caller's conversations.
pub fn scoped(conversation_id: &str, terms: &str) -> Vec<String> {
    let key = scope_key(conversation_id);
    let mut out: Vec<String> = terms
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(|term| format!("{key}:{term}"))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The index, shared by the feed, the rebuild and the searches.
#[derive(Clone)]
pub struct Index {
    db: Surreal<Db>,
}

impl Index {
    /// Opens (or makes) the index in directory `path`.
    pub async fn open(path: &Path) -> Result<Self, IndexError> {
        std::fs::create_dir_all(path)
            .map_err(|e| IndexError(format!("cannot make {}: {e}", path.display())))?;
        let db = Surreal::new::<SurrealKv>(path.to_string_lossy().as_ref()).await?;
        db.use_ns("natter").use_db("search").await?;
        db.query(SCHEMA).await?.check()?;
        let mut response = db
            .query("(SELECT version FROM ONLY meta:schema).version")
            .await?;
        let version: Option<i64> = response.take(0)?;
        if version != Some(SCHEMA_VERSION) {
            // Another layout (or none yet): start empty; the feed and a
            // rebuild fill it.
            db.query(
                "REMOVE INDEX IF EXISTS msg_terms ON msg; REMOVE INDEX IF EXISTS msg_scoped ON msg;
                 REMOVE ANALYZER IF EXISTS terms;
                 DELETE msg RETURN NONE; DELETE meta RETURN NONE;
                 UPSERT meta:schema SET version = $version RETURN NONE;",
            )
            .bind(("version", SCHEMA_VERSION))
            .await?
            .check()?;
        }
        Ok(Self { db })
    }

    /// Writes messages (again: the same record each time), but never the
    /// words of a recalled one.
    pub async fn put(&self, docs: &[Doc]) -> Result<(), IndexError> {
        let changes: Vec<Change> = docs.iter().cloned().map(Change::Put).collect();
        self.apply(&changes).await
    }

    /// Forgets a recalled message's words, for good.
    pub async fn recall(&self, id: &str) -> Result<(), IndexError> {
        self.apply(&[Change::Recall(id.to_owned())]).await
    }

    /// Applies changes in their order, up to [`MAX_CHANGES`] at a time in
    /// one transaction: a batch of events costs a write or a few. Each
    /// change can be applied again (a batch cut short is applied whole
    /// when its events come again).
    pub async fn apply(&self, changes: &[Change]) -> Result<(), IndexError> {
        for part in changes.chunks(MAX_CHANGES) {
            self.apply_at_once(part).await?;
            // A transaction's work runs on this task: let the process's
            // other services (one process on an edge box) have the thread.
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    async fn apply_at_once(&self, changes: &[Change]) -> Result<(), IndexError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut sql = String::from("BEGIN TRANSACTION;\n");
        let mut binds: Vec<(String, Value)> = Vec::new();
        let mut i = 0;
        while i < changes.len() {
            let n = binds.len();
            match &changes[i] {
                Change::Put(_) => {
                    // Consecutive messages in one statement.
                    let mut docs = Vec::new();
                    while let Some(Change::Put(d)) = changes.get(i) {
                        docs.push(json!({
                            "id": d.id, "conv": d.conversation_id, "seq": d.seq,
                            "sender": d.sender_id, "kind": d.kind, "ts": d.ts_ms,
                            "terms": d.terms, "tokens": scoped(&d.conversation_id, &d.terms),
                            "recalled": false,
                        }));
                        i += 1;
                    }
                    sql.push_str(&format!(
                        "INSERT INTO msg $b{n} ON DUPLICATE KEY UPDATE
                            conv = $input.conv, seq = $input.seq, sender = $input.sender,
                            kind = $input.kind, ts = $input.ts,
                            terms = IF recalled OR $input.terms = '' THEN terms ELSE $input.terms END,
                            tokens = IF recalled OR $input.terms = '' THEN tokens ELSE $input.tokens END
                         RETURN NONE;\n"
                    ));
                    binds.push((format!("b{n}"), Value::Array(docs)));
                    continue;
                }
                Change::Recall(id) => {
                    sql.push_str(&format!(
                        "UPSERT type::record('msg', $b{n}) SET recalled = true, terms = '', tokens = [] RETURN NONE;\n"
                    ));
                    binds.push((format!("b{n}"), json!(id)));
                }
                Change::Transcribed {
                    id,
                    conversation_id,
                    terms,
                } => {
                    // Written even before the message's own record (a
                    // rebuild may bring that later, without the
                    // transcript: a put keeps these words).
                    sql.push_str(&format!(
                        "UPSERT type::record('msg', $b{n})
                         SET terms = IF recalled = true THEN '' ELSE $b{t} END,
                             tokens = IF recalled = true THEN [] ELSE $b{s} END RETURN NONE;\n",
                        t = n + 1,
                        s = n + 2
                    ));
                    binds.push((format!("b{n}"), json!(id)));
                    binds.push((format!("b{}", n + 1), json!(terms)));
                    binds.push((format!("b{}", n + 2), json!(scoped(conversation_id, terms))));
                }
            }
            i += 1;
        }
        sql.push_str("COMMIT TRANSACTION;");
        let mut request = self.db.query(sql);
        for bind in binds {
            request = request.bind(bind);
        }
        request.await?.check()?;
        Ok(())
    }

    /// Every message that holds every term of `query`, in its order.
    pub async fn search(&self, query: &Query) -> Result<Vec<Found>, IndexError> {
        if query.terms.is_empty() || query.windows.is_empty() {
            return Ok(Vec::new());
        }
        // Each term within each conversation, conversation by conversation.
        let lookups: Vec<(&Window, String)> = query
            .windows
            .iter()
            .flat_map(|w| {
                let key = scope_key(&w.conversation_id);
                query.terms.iter().map(move |t| (w, format!("{key}:{t}")))
            })
            .collect();
        let mut candidates = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for part in lookups.chunks(LOOKUPS_PER_STATEMENT) {
            for candidate in self.candidates(query, part).await? {
                // A conversation's terms may be split between statements.
                if seen.insert(candidate.key.clone()) {
                    candidates.push(candidate);
                }
            }
        }
        Ok(rank(candidates, &query.terms, query.by_time))
    }

    /// The messages that hold any of `lookups` (a conversation's window
    /// and a term within it; one term may suffice for a match, [`rank`]
    /// requires every term) and every other condition of `query`.
    async fn candidates(
        &self,
        query: &Query,
        lookups: &[(&Window, String)],
    ) -> Result<Vec<Candidate>, IndexError> {
        // The lookups come conversation by conversation.
        let mut windows: Vec<&Window> = lookups.iter().map(|(w, _)| *w).collect();
        windows.dedup_by(|a, b| std::ptr::eq(*a, *b));
        // Whole conversations in one set; windows with a start or an end
        // (a late joiner, a former member) each as their own condition.
        let (whole, partial): (Vec<&Window>, Vec<&Window>) =
            windows.into_iter().partition(|w| w.from <= 1 && w.to == 0);
        let mut scope = vec!["conv IN $whole".to_owned()];
        for i in 0..partial.len() {
            scope.push(format!(
                "(conv = $c{i} AND seq >= $f{i} AND ($t{i} = 0 OR seq <= $t{i}))"
            ));
        }
        // One index lookup per term in each conversation: the planner
        // reads the union of those (a `CONTAINSANY` would scan the table).
        let tokens: Vec<&str> = lookups.iter().map(|(_, token)| token.as_str()).collect();
        let contains: Vec<String> = (0..tokens.len())
            .map(|i| format!("tokens CONTAINS $k[{i}]"))
            .collect();
        let mut sql = format!(
            "SELECT record::id(id) AS key, conv, seq, ts, terms FROM msg
             WHERE ({}) AND ({})",
            contains.join(" OR "),
            scope.join(" OR ")
        );
        if query.sender_id.is_some() {
            sql.push_str(" AND sender = $sender");
        }
        if query.kind.is_some() {
            sql.push_str(" AND kind = $kind");
        }
        if query.before_ms.is_some() {
            sql.push_str(" AND ts < $before");
        }
        if query.after_ms.is_some() {
            sql.push_str(" AND ts > $after");
        }
        let whole: Vec<String> = whole.iter().map(|w| w.conversation_id.clone()).collect();
        let mut request = self
            .db
            .query(sql)
            .bind(("k", tokens))
            .bind(("whole", whole))
            .bind(("sender", query.sender_id.clone().unwrap_or_default()))
            .bind(("kind", query.kind.clone().unwrap_or_default()))
            .bind(("before", query.before_ms.unwrap_or(0)))
            .bind(("after", query.after_ms.unwrap_or(0)));
        for (i, w) in partial.iter().enumerate() {
            request = request
                .bind((format!("c{i}"), w.conversation_id.clone()))
                .bind((format!("f{i}"), w.from as i64))
                .bind((format!("t{i}"), w.to as i64));
        }
        Ok(request.await?.take(0)?)
    }

    /// How many messages the index holds (recalled ones included).
    pub async fn count(&self) -> Result<u64, IndexError> {
        let mut response = self
            .db
            .query("(SELECT count() AS n FROM msg GROUP ALL)[0].n OR 0")
            .await?;
        let n: Option<i64> = response.take(0)?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Where a rebuild stands (none yet: not done, from the start).
    pub async fn rebuild(&self) -> Result<Rebuild, IndexError> {
        let mut response = self
            .db
            .query("SELECT done, after_id, indexed, total FROM ONLY meta:rebuild")
            .await?;
        let progress: Option<Progress> = response.take(0)?;
        Ok(progress.map_or_else(Rebuild::default, |p| Rebuild {
            done: p.done,
            after_id: p.after_id,
            indexed: p.indexed.max(0) as u64,
            total: p.total.max(0) as u64,
        }))
    }

    /// Records how far a rebuild got.
    pub async fn set_rebuild(&self, r: &Rebuild) -> Result<(), IndexError> {
        self.db
            .query(
                "UPSERT meta:rebuild CONTENT {
                    done: $done, after_id: $after_id, indexed: $indexed, total: $total
                 } RETURN NONE",
            )
            .bind(("done", r.done))
            .bind(("after_id", r.after_id.clone()))
            .bind(("indexed", r.indexed as i64))
            .bind(("total", r.total as i64))
            .await?
            .check()?;
        Ok(())
    }

    /// Marks the index as written with layout `version` (tests of the
    /// layout change only).
    #[doc(hidden)]
    pub async fn set_layout_for_test(&self, version: i64) -> Result<(), IndexError> {
        self.db
            .query("UPSERT meta:schema SET version = $version RETURN NONE")
            .bind(("version", version))
            .await?
            .check()?;
        Ok(())
    }

    /// Empties the index (before a rebuild asked for by an operator).
    pub async fn clear(&self) -> Result<(), IndexError> {
        self.db
            .query("DELETE msg RETURN NONE; DELETE meta RETURN NONE;")
            .await?
            .check()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(key: &str, ts: i64, terms: &str) -> Candidate {
        Candidate {
            key: key.into(),
            conv: "d:a".into(),
            seq: ts,
            ts,
            terms: terms.into(),
        }
    }

    fn keys(found: &[Found]) -> Vec<&str> {
        found.iter().map(|f| f.key.as_str()).collect()
    }

    #[test]
    fn every_term_is_required_and_the_best_match_comes_first() {
        let terms = vec!["meet".to_owned(), "friday".to_owned()];
        let found = rank(
            vec![
                candidate("only-one-term", 9, "meet"),
                candidate("long", 1, "meet friday a b c d e f g h"),
                candidate("short", 2, "meet friday"),
                candidate("twice", 3, "meet meet friday x y z"),
            ],
            &terms,
            false,
        );
        // Shorter beats longer; a term twice beats once at similar length.
        assert_eq!(keys(&found), ["short", "twice", "long"]);
        assert!(found[0].score > found[2].score);
    }

    #[test]
    fn equal_scores_go_newest_first_and_time_order_ignores_scores() {
        let terms = vec!["hi".to_owned()];
        let found = rank(
            vec![
                candidate("old", 1, "hi there"),
                candidate("new", 5, "hi there"),
                candidate("short", 3, "hi"),
            ],
            &terms,
            false,
        );
        assert_eq!(keys(&found), ["short", "new", "old"]);
        let by_time = rank(
            vec![
                candidate("old", 1, "hi there"),
                candidate("new", 5, "hi there"),
                candidate("short", 3, "hi"),
            ],
            &terms,
            true,
        );
        assert_eq!(keys(&by_time), ["new", "short", "old"]);
        assert!(by_time.iter().all(|f| f.score == 0.0));
    }
}
