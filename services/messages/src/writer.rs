//! Group commit: one task stores the sends of every conversation that are
//! waiting at the same moment in one transaction (an edge's batch comes as
//! one job), together with the fan-out watermarks of the conversations
//! delivered meanwhile. The watermarks wait for the next transaction that
//! stores messages (up to `MARKS_WAIT`), so a fan-out costs no transaction of
//! its own. Under load a commit (and, on SQLite, the hand-offs to its worker
//! thread) is paid once per batch; a lone send waits for no one.
//!
//! A batch that fails is redone one send at a time, so a send that cannot be
//! stored fails alone (and a device's later sends to that conversation are
//! not stored after it).
//!
//! On SQLite the transactions run on a thread that owns a connection of its
//! own ([`shared::db::SqliteFile::open_writer`]): a batch is handed over
//! once and answered once, where through sqlx's worker thread each of its
//! statements (and the BEGIN and COMMIT) was a round trip of two thread
//! wake-ups. On PostgreSQL they go through the pool.

use std::collections::HashMap;
use std::sync::Arc;

use shared::RpcError;
use shared::db::{AnyPool, Pools, SqliteWriter};
use shared::rpc::internal;
use tokio::sync::{mpsc, oneshot};

use crate::store::{self, MessageRow, NewMessage};

/// Sends stored per transaction at most.
const MAX_BATCH: usize = 256;
const QUEUE: usize = 4096;
/// How long fan-out watermarks wait for a transaction to join (a crash
/// meanwhile only makes the sweep deliver those messages again, and it
/// finds their entries in the inboxes: `shared::inbox::Once::Entry`).
const MARKS_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

type Stored = Result<Option<MessageRow>, StoreError>;

/// Why a send was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("an earlier message of this device to this conversation was not stored")]
    AfterFailure,
    #[error("the SQLite writer thread stopped")]
    Stopped,
}

/// Where the writer's transactions run.
enum Store {
    /// Through sqlx's pool (PostgreSQL).
    Pool(AnyPool),
    /// On the thread that owns the SQLite connection.
    Thread(std::sync::mpsc::Sender<Request>),
}

/// A batch for the SQLite writer thread, and where its rows go.
struct Request {
    fanned: Vec<(String, i64)>,
    messages: Arc<[NewMessage]>,
    done: oneshot::Sender<Result<Vec<Option<MessageRow>>, rusqlite::Error>>,
}

impl Store {
    /// Stores `messages` and moves the watermarks in `fanned`, in one
    /// transaction.
    async fn batch(
        &self,
        fanned: Vec<(String, i64)>,
        messages: Arc<[NewMessage]>,
    ) -> Result<Vec<Option<MessageRow>>, StoreError> {
        match self {
            Self::Pool(pool) => {
                let batch: Vec<&NewMessage> = messages.iter().collect();
                Ok(store::store_batch(pool, &fanned, &batch).await?)
            }
            Self::Thread(requests) => {
                let (done, rows) = oneshot::channel();
                requests
                    .send(Request {
                        fanned,
                        messages,
                        done,
                    })
                    .map_err(|_| StoreError::Stopped)?;
                Ok(rows.await.map_err(|_| StoreError::Stopped)??)
            }
        }
    }
}

/// The SQLite writer thread: one transaction per request, until the
/// writer task drops its end.
fn serve(mut db: SqliteWriter, requests: std::sync::mpsc::Receiver<Request>) {
    while let Ok(request) = requests.recv() {
        let rows =
            db.transaction(|tx| store::store_batch_sqlite(tx, &request.fanned, &request.messages));
        let _ = request.done.send(rows);
    }
}

enum Job {
    Store(Box<NewMessage>, oneshot::Sender<Stored>),
    StoreMany(Vec<NewMessage>, oneshot::Sender<Vec<Stored>>),
    Fanned(String, i64),
    Flush(oneshot::Sender<()>),
}

/// The handle to the writer task.
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task on `pools` (and on SQLite its thread, with a
    /// connection of its own); they end when the handle is dropped.
    pub fn start(pools: &Pools) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let store = match &pools.sqlite {
            Some(file) => {
                let db = file.open_writer()?;
                let (requests, rx) = std::sync::mpsc::channel();
                std::thread::Builder::new()
                    .name("messages-writer".into())
                    .spawn(move || serve(db, rx))?;
                Store::Thread(requests)
            }
            None => Store::Pool(pools.write.clone()),
        };
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, rx));
        Ok(Self { jobs })
    }

    /// Stores `message` with the next seq of its conversation. `None` when
    /// its sender already stored a message with its `client_msg_id`.
    pub async fn store(&self, message: NewMessage) -> Result<Option<MessageRow>, RpcError> {
        let (done, result) = oneshot::channel();
        self.jobs
            .send(Job::Store(Box::new(message), done))
            .await
            .map_err(|_| RpcError::unavailable("the messages service is stopping"))?;
        result
            .await
            .map_err(|_| RpcError::unavailable("the messages service is stopping"))?
            .map_err(|e| internal("store message", e))
    }

    /// Stores `messages` in the order given, in one transaction (with
    /// whatever else is waiting): each as [`Writer::store`] would. When the
    /// transaction fails they are stored one at a time, and after a message
    /// that cannot be stored, its device's later messages to the same
    /// conversation are not stored either (they would overtake it).
    pub async fn store_many(
        &self,
        messages: Vec<NewMessage>,
    ) -> Vec<Result<Option<MessageRow>, RpcError>> {
        let count = messages.len();
        let (done, result) = oneshot::channel();
        let stopping = || RpcError::unavailable("the messages service is stopping");
        if self
            .jobs
            .send(Job::StoreMany(messages, done))
            .await
            .is_err()
        {
            return (0..count).map(|_| Err(stopping())).collect();
        }
        match result.await {
            Ok(stored) => stored
                .into_iter()
                .map(|r| r.map_err(|e| internal("store message", e)))
                .collect(),
            Err(_) => (0..count).map(|_| Err(stopping())).collect(),
        }
    }

    /// Moves `conversation`'s fan-out watermark to `seq` (every message up
    /// to it is fanned out), with the next batch. Lost in a crash, the mark
    /// only makes the sweep deliver the messages again, which finds their
    /// entries in the inboxes.
    pub async fn fanned_out(&self, conversation: String, seq: i64) {
        let _ = self.jobs.send(Job::Fanned(conversation, seq)).await;
    }

    /// Waits until everything queued before it is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.jobs.send(Job::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Who waits for which of a transaction's messages.
enum Waiter {
    One(oneshot::Sender<Stored>),
    Many(usize, oneshot::Sender<Vec<Stored>>),
}

async fn run(store: Store, mut jobs: mpsc::Receiver<Job>) {
    // Watermarks wait for the next transaction that stores messages (or
    // for MARKS_WAIT), so a fan-out costs no transaction of its own.
    let mut fanned: HashMap<String, i64> = HashMap::new();
    loop {
        let first = if fanned.is_empty() {
            jobs.recv().await
        } else {
            match tokio::time::timeout(MARKS_WAIT, jobs.recv()).await {
                Ok(job) => job,
                Err(_) => {
                    write_marks(&store, &mut fanned).await;
                    continue;
                }
            }
        };
        let Some(first) = first else {
            write_marks(&store, &mut fanned).await;
            return;
        };
        let mut messages = Vec::new();
        let mut waiters = Vec::new();
        let mut flushed = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next {
            match job {
                Job::Store(message, done) => {
                    messages.push(*message);
                    waiters.push(Waiter::One(done));
                }
                Job::StoreMany(many, done) => {
                    waiters.push(Waiter::Many(many.len(), done));
                    messages.extend(many);
                }
                Job::Fanned(conversation, seq) => {
                    let mark = fanned.entry(conversation).or_default();
                    *mark = (*mark).max(seq);
                }
                Job::Flush(done) => flushed.push(done),
            }
            next = if messages.len() < MAX_BATCH {
                jobs.try_recv().ok()
            } else {
                None
            };
        }
        if messages.is_empty() && flushed.is_empty() {
            continue;
        }
        let fanned: Vec<(String, i64)> = std::mem::take(&mut fanned).into_iter().collect();
        let mut stored = write(&store, messages.into(), fanned).await.into_iter();
        for waiter in waiters {
            match waiter {
                Waiter::One(done) => {
                    let _ = done.send(stored.next().unwrap_or(Ok(None)));
                }
                Waiter::Many(count, done) => {
                    let _ = done.send(stored.by_ref().take(count).collect());
                }
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// Writes the watermarks waiting, alone.
async fn write_marks(store: &Store, fanned: &mut HashMap<String, i64>) {
    let fanned = std::mem::take(fanned).into_iter().collect();
    write(store, Arc::new([]), fanned).await;
}

async fn write(store: &Store, batch: Arc<[NewMessage]>, fanned: Vec<(String, i64)>) -> Vec<Stored> {
    if batch.is_empty() && fanned.is_empty() {
        return Vec::new();
    }
    let error = match store.batch(fanned.clone(), batch.clone()).await {
        Ok(rows) => return rows.into_iter().map(Ok).collect(),
        Err(e) => e,
    };
    if batch.is_empty() {
        tracing::warn!(error = %error, "marking messages fanned out failed; the sweep redoes them");
        return Vec::new();
    }
    if batch.len() == 1 && fanned.is_empty() {
        return vec![Err(error)];
    }
    tracing::debug!(error = %error, sends = batch.len(), "batch failed; storing one by one");
    if !fanned.is_empty()
        && let Err(e) = store.batch(fanned, Arc::new([])).await
    {
        tracing::warn!(error = %e, "marking messages fanned out failed; the sweep redoes them");
    }
    let mut failed: std::collections::HashSet<(&str, &str)> = std::collections::HashSet::new();
    let mut results = Vec::with_capacity(batch.len());
    for message in batch.iter() {
        let key = (
            message.sender_device_id.as_str(),
            message.conversation_id.as_str(),
        );
        if failed.contains(&key) {
            results.push(Err(StoreError::AfterFailure));
            continue;
        }
        let result = store
            .batch(Vec::new(), Arc::new([message.clone()]))
            .await
            .map(|mut rows| rows.pop().flatten());
        if result.is_err() {
            failed.insert(key);
        }
        results.push(result);
    }
    results
}
