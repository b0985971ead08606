//! Sends from every connection of this edge go to the messages service in
//! batches: one batch request at a time, sent as soon as the previous one
//! returns with whatever queued meanwhile (no timer: a lone send leaves at
//! once). Each connection keeps many sends in flight; order per
//! conversation comes from the messages service, which stores a batch's
//! items of one conversation in the batch's order.
//!
//! A send that fails fails the same connection's later sends to that
//! conversation that were queued before the failure came back (the
//! messages service does the same within a batch), so a client that sends
//! again after an error sends in order. The connection keeps those marks
//! and drops them once it has the answers of every send they cover.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prost::Message as _;
use shared::RpcError;
use shared::endpoint::endpoints::MessageSendBatch;
use shared::ids::{ConversationId, UserId};
use shared::proto::message as pb;
use shared::rpc::{Caller, Identity};
use tokio::sync::{mpsc, oneshot};

/// Sends per batch at most, and their encoded bytes (a batch is one NATS
/// message: it must stay under the server's `max_payload`).
const MAX_ITEMS: usize = 256;
const MAX_BYTES: usize = 512 * 1024;
/// Sends queued for the next batch, from all connections.
const QUEUE: usize = 8192;

pub type Answer = Result<pb::SendAck, RpcError>;

/// One send, queued.
pub struct Queued {
    item: pb::SendItem,
    /// The conversation, for failing the connection's later sends.
    conversation: String,
    /// This send's number on its connection, and the newest number queued.
    number: u64,
    newest: Arc<AtomicU64>,
    /// The connection's conversations whose sends up to a number fail.
    failed: Failed,
    done: oneshot::Sender<Answer>,
}

type Failed = Arc<Mutex<HashMap<String, u64>>>;

/// A connection's side: numbers its sends and queues them.
pub struct Sender {
    batcher: Batcher,
    newest: Arc<AtomicU64>,
    failed: Failed,
}

impl Sender {
    /// Queues one send: its number, and the receiver of its answer.
    pub async fn send(
        &self,
        who: &Identity,
        send: pb::SendRequest,
    ) -> Result<(u64, oneshot::Receiver<Answer>), RpcError> {
        let number = self.newest.fetch_add(1, Ordering::AcqRel) + 1;
        let (done, answer) = oneshot::channel();
        let queued = Queued {
            conversation: conversation_key(who, &send),
            item: pb::SendItem {
                user_id: who.user_id.to_string(),
                device_id: who.device_id.to_string(),
                send: Some(send),
            },
            number,
            newest: self.newest.clone(),
            failed: self.failed.clone(),
            done,
        };
        self.batcher
            .queue
            .send(queued)
            .await
            .map_err(|_| RpcError::unavailable("the edge is stopping"))?;
        Ok((number, answer))
    }

    /// The answers of every send up to `number` have arrived: marks that
    /// cover no later send go.
    pub fn answered(&self, number: u64) {
        let mut failed = shared::sync::lock(&self.failed);
        if !failed.is_empty() {
            failed.retain(|_, upto| *upto > number);
        }
    }
}

/// The edge's batcher: a handle to its task.
#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::Sender<Queued>,
}

impl Batcher {
    /// Starts the task; it ends when every handle is gone.
    pub fn start(caller: Caller) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(caller, rx));
        Self { queue }
    }

    /// A sender for one connection.
    pub fn sender(&self) -> Sender {
        Sender {
            batcher: self.clone(),
            newest: Arc::default(),
            failed: Arc::default(),
        }
    }
}

/// The conversation a send goes to, as the messages service will name it
/// (a one-to-one chat may be named by the peer or by its id).
fn conversation_key(who: &Identity, send: &pb::SendRequest) -> String {
    if send.conversation_id.is_empty()
        && let Ok(peer) = UserId::parse(send.to_user_id.as_str())
    {
        return ConversationId::direct(&who.user_id, &peer)
            .as_str()
            .to_owned();
    }
    send.conversation_id.clone()
}

async fn run(caller: Caller, mut queue: mpsc::Receiver<Queued>) {
    while let Some(first) = queue.recv().await {
        let mut bytes = first.item.encoded_len();
        let mut batch = vec![first];
        while batch.len() < MAX_ITEMS && bytes < MAX_BYTES {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += next.item.encoded_len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let (refused, batch): (Vec<Queued>, Vec<Queued>) = batch.into_iter().partition(|q| {
            shared::sync::lock(&q.failed)
                .get(&q.conversation)
                .is_some_and(|&upto| q.number <= upto)
        });
        for q in refused {
            let _ = q.done.send(Err(RpcError::unavailable(
                "an earlier message to this conversation was not sent; send again in order",
            )));
        }
        if batch.is_empty() {
            continue;
        }
        let (items, waiting): (Vec<pb::SendItem>, Vec<_>) = batch
            .into_iter()
            .map(|q| (q.item, (q.conversation, q.newest, q.failed, q.done)))
            .unzip();
        let request = pb::SendBatchRequest { items };
        let answers: Vec<Answer> = match caller.call_to::<MessageSendBatch>(&request).await {
            Ok(reply) if reply.results.len() == waiting.len() => reply
                .results
                .into_iter()
                .map(|r| match r.result {
                    Some(pb::send_result::Result::Ack(ack)) => Ok(ack),
                    Some(pb::send_result::Result::Error(e)) => Err(RpcError::from_proto(&e)),
                    None => Err(RpcError::internal()),
                })
                .collect(),
            Ok(reply) => {
                tracing::error!(
                    sent = waiting.len(),
                    answered = reply.results.len(),
                    "a batch answered the wrong number of sends"
                );
                waiting.iter().map(|_| Err(RpcError::internal())).collect()
            }
            Err(e) => waiting.iter().map(|_| Err(e.clone())).collect(),
        };
        for ((conversation, newest, failed, done), answer) in waiting.into_iter().zip(answers) {
            if answer.is_err() {
                // Before the client can know: every send numbered up to now.
                let upto = newest.load(Ordering::Acquire);
                shared::sync::lock(&failed).insert(conversation, upto);
            }
            let _ = done.send(answer);
        }
    }
}
