//! Group commit: one task stores the sends of every conversation that are
//! waiting at the same moment in one transaction, together with the
//! "fanned out" marks of messages delivered meanwhile. Under load a commit
//! (and, on SQLite, the hand-offs to its worker thread) is paid once per batch
//! instead of twice per message; a lone send waits for no one.
//!
//! A batch that fails is redone one send at a time, so a send that cannot be
//! stored fails alone.

use shared::RpcError;
use shared::db::AnyPool;
use shared::rpc::internal;
use tokio::sync::{mpsc, oneshot};

use crate::store::{self, MessageRow, NewMessage};

/// Sends stored per transaction at most.
const MAX_BATCH: usize = 256;
const QUEUE: usize = 4096;

type Stored = Result<Option<MessageRow>, sqlx::Error>;

enum Job {
    Store(Box<NewMessage>, oneshot::Sender<Stored>),
    Fanned(String),
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

    /// Marks a message fanned out, with the next batch. Lost in a crash, the
    /// mark only makes the sweep deliver the message again, which the inbox
    /// dedup ids absorb.
    pub async fn fanned_out(&self, id: String) {
        let _ = self.jobs.send(Job::Fanned(id)).await;
    }

    /// Waits until everything queued before it is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.jobs.send(Job::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(pool: AnyPool, mut jobs: mpsc::Receiver<Job>) {
    while let Some(first) = jobs.recv().await {
        let mut messages = Vec::new();
        let mut fanned = Vec::new();
        let mut flushed = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next {
            match job {
                Job::Store(message, done) => messages.push((message, done)),
                Job::Fanned(id) => fanned.push(id),
                Job::Flush(done) => flushed.push(done),
            }
            next = if messages.len() < MAX_BATCH {
                jobs.try_recv().ok()
            } else {
                None
            };
        }
        write(&pool, messages, fanned).await;
        for done in flushed {
            let _ = done.send(());
        }
    }
}

async fn write(
    pool: &AnyPool,
    messages: Vec<(Box<NewMessage>, oneshot::Sender<Stored>)>,
    fanned: Vec<String>,
) {
    if messages.is_empty() && fanned.is_empty() {
        return;
    }
    let batch: Vec<&NewMessage> = messages.iter().map(|(m, _)| m.as_ref()).collect();
    match store::store_batch(pool, &fanned, &batch).await {
        Ok(rows) => {
            for ((_, done), row) in messages.into_iter().zip(rows) {
                let _ = done.send(Ok(row));
            }
        }
        Err(e) if batch.len() == 1 && fanned.is_empty() => {
            if let Some((_, done)) = messages.into_iter().next() {
                let _ = done.send(Err(e));
            }
        }
        Err(e) if batch.is_empty() => {
            tracing::warn!(error = %e, "marking messages fanned out failed; the sweep redoes them");
        }
        Err(e) => {
            tracing::debug!(error = %e, sends = batch.len(), "batch failed; storing one by one");
            if !fanned.is_empty()
                && let Err(e) = store::store_batch(pool, &fanned, &[]).await
            {
                tracing::warn!(error = %e, "marking messages fanned out failed; the sweep redoes them");
            }
            for (message, done) in messages {
                let result = store::store_batch(pool, &[], &[message.as_ref()])
                    .await
                    .map(|mut rows| rows.pop().flatten());
                let _ = done.send(result);
            }
        }
    }
}
