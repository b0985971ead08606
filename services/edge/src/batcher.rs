//! Sends from every connection of this edge go to the messages service in
//! batches: a batch leaves when none is in flight, or beside those in
//! flight once enough sends wait ([`MORE_AT`], [`IN_FLIGHT`] at once), with
//! whatever queued meanwhile (no timer: a lone send leaves at once when
//! nothing is in flight).
//! Each connection keeps many sends in flight. Order per conversation by
//! construction: a conversation is in at most one batch in flight (its
//! later sends wait for that batch's answer), and the messages service
//! stores a batch's sends of one conversation in the batch's order.
//!
//! A send that fails for a reason a retry can mend (not a refusal such as
//! a bad request) marks its conversation on its connection: the
//! connection's later sends there are refused ("send again in order")
//! until that send comes again with its `clientMsgId`, so a client that
//! pipelines its sends and sends again from the first failure keeps its
//! order, even for sends it made before it saw the failure (the messages
//! service does the same within a batch). The marks live as long as the
//! connection.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use prost::Message as _;
use shared::RpcError;
use shared::endpoint::endpoints::MessageSendBatch;
use shared::ids::{ConversationId, UserId};
use shared::proto::message as pb;
use shared::rpc::{Caller, Identity};
use tokio::sync::{mpsc, oneshot};

/// Sends per batch at most (as many as the messages service takes), and
/// their encoded bytes (a batch is one NATS message: it must stay under the
/// server's `max_payload`). Under a saturating load the batches are full,
/// and the messages service's fan-out rounds per batch are what bounds the
/// rate: batches of 1,024 delivered 22,000–22,800 messages/s where batches
/// of 256 delivered 16,600–17,200 (docs/bench.md).
const MAX_ITEMS: usize = shared::endpoint::SEND_BATCH_MAX_ITEMS;
const MAX_BYTES: usize = 512 * 1024;
/// Sends queued for the next batch, from all connections.
const QUEUE: usize = 8192;
/// Sends taken off the queue, waiting for a batch (their conversation's
/// previous batch may still be in flight).
const MAX_WAITING: usize = 8192;
/// Batches in flight at once, at most.
const IN_FLIGHT: usize = 4;
/// A further batch goes out beside those in flight only while at least
/// this many sends wait per batch in flight; otherwise the sends wait for
/// the batch in flight to return and leave together. Under a moderate load
/// a batch then holds what came during one round trip instead of one or two
/// sends (at 3,000/s: 15 % less CPU per message, fewer slow windows);
/// under a heavy one, up to [`IN_FLIGHT`] batches keep the messages service
/// busy as before.
const MORE_AT: usize = 16;

/// A send's ack, and whether the message has no copy in the sender's inbox
/// (then no push of it comes to this edge); or why it failed.
pub type Answer = Result<(pb::SendAck, bool), RpcError>;

/// One send, queued.
pub struct Queued {
    item: pb::SendItem,
    /// The conversation, for failing the connection's later sends.
    conversation: String,
    /// This send's number on its connection.
    number: u64,
    /// The connection's conversations with a send to come again.
    failed: Failed,
    done: oneshot::Sender<Answer>,
}

/// A send that failed and must come again before the later ones.
struct Mark {
    number: u64,
    client_msg_id: String,
}

type Failed = Arc<Mutex<HashMap<String, Mark>>>;

/// A connection's side: numbers its sends and queues them.
pub struct Sender {
    batcher: Batcher,
    newest: Arc<AtomicU64>,
    failed: Failed,
}

impl Sender {
    /// Queues one send; returns the receiver of its answer.
    /// `sole_connection`: the device has no other connection here (see
    /// `SendItem.sole_connection`).
    pub async fn send(
        &self,
        who: &Identity,
        send: pb::SendRequest,
        sole_connection: bool,
    ) -> Result<oneshot::Receiver<Answer>, RpcError> {
        let number = self.newest.fetch_add(1, Ordering::AcqRel) + 1;
        let (done, answer) = oneshot::channel();
        let queued = Queued {
            conversation: conversation_key(who, &send),
            item: pb::SendItem {
                user_id: who.user_id.to_string(),
                device_id: who.device_id.to_string(),
                send: Some(send),
                sole_connection,
            },
            number,
            failed: self.failed.clone(),
            done,
        };
        self.batcher
            .queue
            .send(queued)
            .await
            .map_err(|_| RpcError::unavailable("the edge is stopping"))?;
        Ok(answer)
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

/// What one batch in flight waits for.
type Flight = (
    Vec<String>,
    Vec<Waiting>,
    Result<pb::SendBatchResponse, RpcError>,
);
/// A send in a batch: its conversation, number and `clientMsgId`, its
/// connection's marks, where its answer goes.
type Waiting = (String, u64, String, Failed, oneshot::Sender<Answer>);

async fn run(caller: Caller, mut queue: mpsc::Receiver<Queued>) {
    let mut waiting = Pending::default();
    // Conversations with sends in a batch in flight: a later send to one
    // waits for that batch (order by construction, however many fly).
    let mut busy: HashMap<String, usize> = HashMap::new();
    let mut flying = futures::stream::FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            Some(flight) = flying.next(), if !flying.is_empty() => {
                let (conversations, answered, result): Flight = flight;
                answer(answered, result);
                for conversation in conversations {
                    if let Some(n) = busy.get_mut(&conversation) {
                        *n -= 1;
                        if *n == 0 {
                            busy.remove(&conversation);
                        }
                    }
                }
            }
            next = queue.recv(), if open && waiting.len() < MAX_WAITING => match next {
                Some(queued) => {
                    waiting.push(queued);
                    while waiting.len() < MAX_WAITING {
                        match queue.try_recv() {
                            Ok(queued) => waiting.push(queued),
                            Err(_) => break,
                        }
                    }
                }
                None => open = false,
            },
        }
        if !open && waiting.is_empty() && flying.is_empty() {
            return;
        }
        while flying.len() < IN_FLIGHT
            && (flying.is_empty() || waiting.len() >= MORE_AT * flying.len())
        {
            let (batch, conversations) = waiting.take_batch(&busy);
            if batch.is_empty() {
                break;
            }
            for conversation in &conversations {
                *busy.entry(conversation.clone()).or_default() += 1;
            }
            let (items, answered): (Vec<pb::SendItem>, Vec<Waiting>) = batch
                .into_iter()
                .map(|q| {
                    let client_msg_id = client_msg_id(&q.item).to_owned();
                    (
                        q.item,
                        (q.conversation, q.number, client_msg_id, q.failed, q.done),
                    )
                })
                .unzip();
            let caller = caller.clone();
            flying.push(async move {
                let request = pb::SendBatchRequest { items };
                let result = caller.call_to::<MessageSendBatch>(&request).await;
                (conversations, answered, result)
            });
        }
    }
}

/// Sends waiting for a batch: each conversation's in the order they came,
/// and the conversations in the order their oldest waiting send came. A
/// batch is taken conversation by conversation, so sends to conversations
/// with a batch in flight stay where they are (with thousands waiting under
/// load, a batch once moved every one of them).
#[derive(Default)]
struct Pending {
    sends: HashMap<String, VecDeque<Queued>>,
    order: VecDeque<String>,
    count: usize,
}

impl Pending {
    fn len(&self) -> usize {
        self.count
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn push(&mut self, queued: Queued) {
        self.count += 1;
        if let Some(sends) = self.sends.get_mut(&queued.conversation) {
            sends.push_back(queued);
            return;
        }
        self.order.push_back(queued.conversation.clone());
        self.sends
            .insert(queued.conversation.clone(), VecDeque::from([queued]));
    }

    /// The next batch, and its conversations: the sends of conversations
    /// with no batch in flight, oldest conversation first, each
    /// conversation's in order. Sends that must be sent again in order (see
    /// the module) fail here.
    fn take_batch(&mut self, busy: &HashMap<String, usize>) -> (Vec<Queued>, Vec<String>) {
        let mut batch = Vec::new();
        let mut conversations = Vec::new();
        let mut bytes = 0;
        let mut kept = VecDeque::with_capacity(self.order.len());
        while let Some(conversation) = self.order.pop_front() {
            if batch.len() >= MAX_ITEMS || bytes >= MAX_BYTES {
                // Full: the rest waits, in order.
                kept.push_back(conversation);
                kept.append(&mut self.order);
                break;
            }
            if busy.contains_key(&conversation) {
                kept.push_back(conversation);
                continue;
            }
            let Some(sends) = self.sends.get_mut(&conversation) else {
                continue;
            };
            let before = batch.len();
            while batch.len() < MAX_ITEMS && bytes < MAX_BYTES {
                let Some(q) = sends.pop_front() else {
                    break;
                };
                self.count -= 1;
                if refused(&q) {
                    let _ = q.done.send(Err(RpcError::unavailable(
                        "an earlier message to this conversation was not sent; send again in order",
                    )));
                    continue;
                }
                bytes += q.item.encoded_len();
                batch.push(q);
            }
            if batch.len() > before {
                conversations.push(conversation.clone());
            }
            if sends.is_empty() {
                self.sends.remove(&conversation);
            } else {
                kept.push_back(conversation);
            }
        }
        self.order = kept;
        (batch, conversations)
    }
}

/// Whether `q` comes after a send of its connection to its conversation
/// that must be sent again first; the send that comes again lifts the mark.
fn refused(q: &Queued) -> bool {
    let mut failed = shared::sync::lock(&q.failed);
    match failed.get(&q.conversation) {
        Some(mark) if q.number > mark.number => {
            let again = client_msg_id(&q.item) == mark.client_msg_id;
            if again {
                failed.remove(&q.conversation);
            }
            !again
        }
        _ => false,
    }
}

/// Hands each send its answer; a failure a retry can mend marks the
/// conversation on the connection until that send comes again.
fn answer(answered: Vec<Waiting>, result: Result<pb::SendBatchResponse, RpcError>) {
    let answers: Vec<Answer> = match result {
        Ok(reply) if reply.results.len() == answered.len() => reply
            .results
            .into_iter()
            .map(|r| match r.result {
                Some(pb::send_result::Result::Ack(ack)) => Ok((ack, r.sender_not_copied)),
                Some(pb::send_result::Result::Error(e)) => Err(RpcError::from_proto(&e)),
                None => Err(RpcError::internal()),
            })
            .collect(),
        Ok(reply) => {
            tracing::error!(
                sent = answered.len(),
                answered = reply.results.len(),
                "a batch answered the wrong number of sends"
            );
            answered.iter().map(|_| Err(RpcError::internal())).collect()
        }
        Err(e) => answered.iter().map(|_| Err(e.clone())).collect(),
    };
    for ((conversation, number, client_msg_id, failed, done), answer) in
        answered.into_iter().zip(answers)
    {
        if let Err(e) = &answer
            && !is_refusal(e.code)
        {
            let mut failed = shared::sync::lock(&failed);
            let earlier = failed.get(&conversation).is_some_and(|m| m.number < number);
            if !earlier {
                failed.insert(
                    conversation,
                    Mark {
                        number,
                        client_msg_id,
                    },
                );
            }
        }
        let _ = done.send(answer);
    }
}

/// An answer that sending again cannot change: nothing needs to wait for
/// that send to come again.
fn is_refusal(code: shared::ErrorCode) -> bool {
    use shared::ErrorCode::*;
    matches!(
        code,
        BadRequest | Unauthorized | Forbidden | NotFound | Conflict | TooLarge
    )
}

fn client_msg_id(item: &pb::SendItem) -> &str {
    item.send.as_ref().map_or("", |s| s.client_msg_id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(
        conversation: &str,
        number: u64,
        client_msg_id: &str,
        failed: &Failed,
    ) -> (Queued, oneshot::Receiver<Answer>) {
        let (done, answer) = oneshot::channel();
        let queued = Queued {
            item: pb::SendItem {
                send: Some(pb::SendRequest {
                    conversation_id: conversation.into(),
                    client_msg_id: client_msg_id.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            conversation: conversation.into(),
            number,
            failed: failed.clone(),
            done,
        };
        (queued, answer)
    }

    fn ids(batch: &[Queued]) -> Vec<&str> {
        batch.iter().map(|q| client_msg_id(&q.item)).collect()
    }

    #[test]
    fn a_batch_keeps_each_conversations_order_and_skips_busy_ones() {
        let failed = Failed::default();
        let mut pending = Pending::default();
        let mut answers = Vec::new();
        for (conversation, id) in [
            ("a", "a1"),
            ("b", "b1"),
            ("a", "a2"),
            ("c", "c1"),
            ("b", "b2"),
        ] {
            let (q, answer) = send(conversation, 0, id, &failed);
            pending.push(q);
            answers.push(answer);
        }
        assert_eq!(pending.len(), 5);
        let busy = HashMap::from([("b".to_owned(), 1)]);
        let (batch, conversations) = pending.take_batch(&busy);
        assert_eq!(ids(&batch), ["a1", "a2", "c1"]);
        assert_eq!(conversations, ["a", "c"]);
        assert_eq!(pending.len(), 2);
        let (batch, conversations) = pending.take_batch(&busy);
        assert!(batch.is_empty() && conversations.is_empty());
        let (batch, conversations) = pending.take_batch(&HashMap::new());
        assert_eq!(ids(&batch), ["b1", "b2"]);
        assert_eq!(conversations, ["b"]);
        assert!(pending.is_empty());
    }

    #[test]
    fn a_full_batch_leaves_the_rest_in_order() {
        let failed = Failed::default();
        let mut pending = Pending::default();
        let mut answers = Vec::new();
        for i in 0..MAX_ITEMS + 10 {
            let (q, answer) = send("a", 0, &format!("a{i}"), &failed);
            pending.push(q);
            answers.push(answer);
        }
        let (q, answer) = send("b", 0, "b0", &failed);
        pending.push(q);
        answers.push(answer);
        let (batch, conversations) = pending.take_batch(&HashMap::new());
        assert_eq!(batch.len(), MAX_ITEMS);
        assert_eq!(client_msg_id(&batch[0].item), "a0");
        assert_eq!(conversations, ["a"]);
        let (batch, conversations) = pending.take_batch(&HashMap::new());
        let expected: Vec<String> = (MAX_ITEMS..MAX_ITEMS + 10)
            .map(|i| format!("a{i}"))
            .chain(["b0".to_owned()])
            .collect();
        assert_eq!(ids(&batch), expected);
        assert_eq!(conversations, ["a", "b"]);
        assert!(pending.is_empty());
    }

    #[test]
    fn sends_after_a_failed_one_fail_until_it_comes_again() {
        let failed = Failed::default();
        shared::sync::lock(&failed).insert(
            "a".into(),
            Mark {
                number: 1,
                client_msg_id: "x".into(),
            },
        );
        let mut pending = Pending::default();
        let (later, mut refused) = send("a", 2, "y", &failed);
        let (again, _a) = send("a", 3, "x", &failed);
        let (after, _b) = send("a", 4, "z", &failed);
        pending.push(later);
        pending.push(again);
        pending.push(after);
        let (batch, _) = pending.take_batch(&HashMap::new());
        assert_eq!(ids(&batch), ["x", "z"]);
        let answer = refused.try_recv().expect("the later send is answered");
        assert!(answer.is_err());
        assert!(shared::sync::lock(&failed).is_empty());
        assert!(pending.is_empty());
    }
}
