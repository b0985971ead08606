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

use std::collections::HashMap;

use shared::RpcError;
use shared::db::AnyPool;
use shared::rpc::internal;
use tokio::sync::{mpsc, oneshot};

use crate::store::{self, MessageRow, NewMessage};

/// Sends stored per transaction at most.
const MAX_BATCH: usize = 256;
const QUEUE: usize = 4096;
/// How long fan-out watermarks wait for a transaction to join (well within
/// the inbox's two-minute dedup window: a crash meanwhile only makes the
/// sweep deliver those messages again, which the dedup ids absorb).
const MARKS_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

type Stored = Result<Option<MessageRow>, sqlx::Error>;

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
    /// Starts the writer task on `pool`; it ends when the handle is dropped.
    pub fn start(pool: AnyPool) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, rx));
        Self { jobs }
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
    /// only makes the sweep deliver the messages again, which the inbox
    /// dedup ids absorb.
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

async fn run(pool: AnyPool, mut jobs: mpsc::Receiver<Job>) {
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
                    write_marks(&pool, &mut fanned).await;
                    continue;
                }
            }
        };
        let Some(first) = first else {
            write_marks(&pool, &mut fanned).await;
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
        let mut stored = write(&pool, &messages, fanned).await.into_iter();
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
async fn write_marks(pool: &AnyPool, fanned: &mut HashMap<String, i64>) {
    write(pool, &[], std::mem::take(fanned).into_iter().collect()).await;
}

async fn write(pool: &AnyPool, messages: &[NewMessage], fanned: Vec<(String, i64)>) -> Vec<Stored> {
    if messages.is_empty() && fanned.is_empty() {
        return Vec::new();
    }
    let batch: Vec<&NewMessage> = messages.iter().collect();
    let error = match store::store_batch(pool, &fanned, &batch).await {
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
        && let Err(e) = store::store_batch(pool, &fanned, &[]).await
    {
        tracing::warn!(error = %e, "marking messages fanned out failed; the sweep redoes them");
    }
    let mut failed: std::collections::HashSet<(&str, &str)> = std::collections::HashSet::new();
    let mut results = Vec::with_capacity(batch.len());
    for message in batch {
        let key = (
            message.sender_device_id.as_str(),
            message.conversation_id.as_str(),
        );
        if failed.contains(&key) {
            results.push(Err(sqlx::Error::Protocol(
                "an earlier message of this device to this conversation was not stored".into(),
            )));
            continue;
        }
        let result = store::store_batch(pool, &[], &[message])
            .await
            .map(|mut rows| rows.pop().flatten());
        if result.is_err() {
            failed.insert(key);
        }
        results.push(result);
    }
    results
}
