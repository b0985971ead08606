//! A batch of sends from an edge: every send its connections made since its
//! previous batch, each with the identity the edge verified. One request
//! and one reply per batch instead of per message, and no limit of one send
//! in flight per connection: order comes from here.
//!
//! A batch goes through in four steps: each item is checked on its own
//! (validation and authorization, side by side); the batch's conversations
//! are locked and whatever is pending in them is fanned out first; the
//! items are stored in one transaction, numbered in the batch's order; and
//! the stored messages are fanned out together. After an item fails, the
//! same device's later items to that conversation fail too, so the client
//! sends them again in order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use shared::RpcError;
use shared::endpoint::SEND_BATCH_MAX_ITEMS as MAX_ITEMS;
use shared::ids::{ConversationId, DeviceId, UserId};
use shared::proto::message as pb;
use shared::rpc::Identity;

use super::send::{Prepared, ack, target};
use super::{State, wire};
use crate::store::NewMessage;

/// Items checked at once (each may ask the social service).
const CHECKS: usize = 64;

/// An item that passed its checks.
struct Checked {
    me: Identity,
    conversation: ConversationId,
    new: NewMessage,
    body: Option<pb::MessageBody>,
    quote: Option<pb::Quote>,
    /// Sent from its device's only connection on its edge.
    sole_connection: bool,
}

/// A checked item, or why not (with its sender and conversation when known).
type CheckResult = Result<Checked, (Option<(Identity, ConversationId)>, RpcError)>;

impl State {
    pub(super) async fn send_batch(
        self: Arc<Self>,
        _: (),
        input: pb::SendBatchRequest,
    ) -> Result<pb::SendBatchResponse, RpcError> {
        if input.items.len() > MAX_ITEMS {
            return Err(RpcError::bad_request(format!(
                "at most {MAX_ITEMS} sends a batch"
            )));
        }
        let count = input.items.len();
        let mut answers: Vec<Option<Result<pb::SendAck, RpcError>>> = vec![None; count];

        // 1. Each item on its own, side by side.
        let checked: Vec<CheckResult> =
            futures::stream::iter(input.items.into_iter().map(|item| {
                let state = self.clone();
                async move { state.check(item).await }
            }))
            .buffered(CHECKS)
            .collect()
            .await;
        let mut failed: HashSet<(String, String, String)> = HashSet::new();
        let mut accepted: Vec<(usize, Checked)> = Vec::new();
        for (i, item) in checked.into_iter().enumerate() {
            match item {
                Ok(item) => {
                    let key = order_key(&item.me, &item.conversation);
                    if failed.contains(&key) {
                        answers[i] = Some(Err(out_of_order()));
                    } else {
                        accepted.push((i, item));
                    }
                }
                Err((known, e)) => {
                    if let Some((me, conversation)) = known {
                        failed.insert(order_key(&me, &conversation));
                    }
                    answers[i] = Some(Err(e));
                }
            }
        }

        // 2. The conversations, locked; what is pending in them goes first.
        let conversations: Vec<String> = {
            let mut seen = HashSet::new();
            accepted
                .iter()
                .map(|(_, c)| c.conversation.as_str().to_owned())
                .filter(|c| seen.insert(c.clone()))
                .collect()
        };
        let _order = self.order.lock(&conversations).await;
        let mut blocked = HashSet::new();
        let mut cleared = HashSet::new();
        for (_, item) in &accepted {
            let id = item.conversation.as_str();
            if cleared.insert(id)
                && let Err(e) = self.fan_out_pending(&item.conversation).await
            {
                tracing::debug!(error = %e, conversation = id, "pending fan-out failed");
                blocked.insert(id.to_owned());
            }
        }
        let (blocked_items, accepted): (Vec<_>, Vec<_>) = accepted
            .into_iter()
            .partition(|(_, c)| blocked.contains(c.conversation.as_str()));
        for (i, _) in blocked_items {
            answers[i] = Some(Err(RpcError::unavailable(
                "an earlier message is not yet delivered; retry",
            )));
        }

        // 3. One transaction for the batch.
        let stored = self
            .writer
            .store_many(accepted.iter().map(|(_, c)| c.new.clone()).collect())
            .await;

        // Fault point: the batch is committed and the service stops before
        // any fan-out or reply (as a crash would; the sends are answered
        // unavailable and come again).
        fail::fail_point!("messages::batch::after_commit", |_| Err(
            RpcError::unavailable("fault point: after the commit")
        ));

        // 4. Fan out what is new, together.
        let mut fresh = Vec::new();
        // Stored behind messages not fanned out: they go out with those.
        let mut behind: Vec<(usize, crate::store::MessageRow, ConversationId)> = Vec::new();
        let mut repeats = Vec::new();
        let mut first: HashMap<(String, String), usize> = HashMap::new();
        // Items sent from their device's only connection on its edge (but
        // not to a large group: its messages go to no inbox, and the
        // group's push reaches the sending connection, where it is known
        // as its echo).
        let mut sole: HashSet<usize> = HashSet::new();
        for ((i, item), stored) in accepted.into_iter().zip(stored) {
            match stored {
                Ok(Some(row)) if row.behind => {
                    first.insert((row.sender_id.clone(), row.client_msg_id.clone()), i);
                    behind.push((i, row, item.conversation));
                }
                Ok(Some(row)) => {
                    if item.sole_connection && !row.read_fanout {
                        sole.insert(i);
                    }
                    first.insert((row.sender_id.clone(), row.client_msg_id.clone()), i);
                    let message = wire(&row, item.body, item.quote, self.recall_window_ms());
                    fresh.push((i, row, message));
                }
                Ok(None) => repeats.push((i, item)),
                Err(e) => answers[i] = Some(Err(e)),
            }
        }
        // Who sent from the only connection of their only device: their
        // messages need no copy in their own inbox.
        let senders: HashSet<String> = fresh
            .iter()
            .filter(|(i, _, _)| sole.contains(i))
            .map(|(_, row, _)| row.sender_id.clone())
            .collect();
        let single = self.devices.single(&self.caller, senders).await;
        let uncopied: HashSet<String> = fresh
            .iter()
            .filter(|(i, row, _)| sole.contains(i) && single.contains(&row.sender_id))
            .map(|(_, row, _)| row.id.clone())
            .collect();
        let mut not_copied = vec![false; count];
        for (i, row, _) in &fresh {
            not_copied[*i] = uncopied.contains(&row.id);
        }
        let (indexes, rows): (Vec<usize>, Vec<_>) = fresh
            .into_iter()
            .map(|(i, row, message)| (i, (row, message)))
            .unzip();
        let acks: Vec<pb::SendAck> = rows
            .iter()
            .map(|(row, _)| ack(row, false, self.recall_window_ms()))
            .collect();
        let delivered = self.fan_out_rows(rows, &uncopied, true).await;
        for ((i, ack), delivered) in indexes.into_iter().zip(acks).zip(delivered) {
            answers[i] = Some(match delivered {
                Ok(()) => Ok(ack),
                Err(e) => {
                    tracing::debug!(error = %e, message_id = %ack.message_id, "fan-out failed; left to retry or sweep");
                    Err(not_delivered())
                }
            });
        }
        // What was left before a behind conversation's new messages goes
        // out first, then they do, all in seq order.
        let mut left: HashMap<String, bool> = HashMap::new();
        for (i, row, conversation) in behind {
            let delivered = match left.get(&row.conversation_id) {
                Some(&delivered) => delivered,
                None => {
                    let delivered = self.fan_out_left(&conversation).await.is_ok();
                    left.insert(row.conversation_id.clone(), delivered);
                    delivered
                }
            };
            answers[i] = Some(if delivered {
                Ok(ack(&row, false, self.recall_window_ms()))
            } else {
                Err(not_delivered())
            });
        }
        // Repeats: of an item earlier in this batch (its answer), or of an
        // earlier batch's send (fanned out now if it was not yet).
        for (i, item) in repeats {
            let key = (item.me.user_id.to_string(), item.new.client_msg_id.clone());
            let answer = match first.get(&key).and_then(|&j| answers[j].clone()) {
                Some(Ok(ack)) => Ok(pb::SendAck {
                    duplicate: true,
                    ..ack
                }),
                Some(Err(e)) => Err(e),
                None => match self
                    .existing(&item.me, &item.new.client_msg_id, &item.conversation)
                    .await
                {
                    Ok(Some(existing)) => Ok(ack(&existing, true, self.recall_window_ms())),
                    Ok(None) => Err(RpcError::unavailable("message not stored; retry")),
                    Err(e) => Err(e),
                },
            };
            answers[i] = Some(answer);
        }
        // Fault point: everything is stored and delivered, the reply is lost.
        fail::fail_point!("messages::batch::before_reply", |_| Err(
            RpcError::unavailable("fault point: before the reply")
        ));
        Ok(pb::SendBatchResponse {
            results: answers
                .into_iter()
                .zip(not_copied)
                .map(|(answer, not_copied)| {
                    let answer = answer.unwrap_or_else(|| Err(not_delivered()));
                    pb::SendResult {
                        sender_not_copied: not_copied && answer.is_ok(),
                        result: Some(match answer {
                            Ok(ack) => pb::send_result::Result::Ack(ack),
                            Err(e) => pb::send_result::Result::Error(e.to_proto()),
                        }),
                    }
                })
                .collect(),
        })
    }

    /// Validates and authorizes one item, and makes what it stores.
    async fn check(&self, item: pb::SendItem) -> CheckResult {
        let me = identity(&item).map_err(|e| (None, e))?;
        let send = item.send.unwrap_or_default();
        let conversation = target(&me, &send).map_err(|e| (None, e))?;
        let Prepared { new, body, quote } = match self.prepare(&me, &conversation, &send).await {
            Ok(prepared) => prepared,
            Err(e) => return Err((Some((me, conversation)), e)),
        };
        Ok(Checked {
            new,
            me,
            conversation,
            body: Some(body),
            quote,
            sole_connection: item.sole_connection,
        })
    }
}

/// A device's sends to a conversation, which keep their order.
fn order_key(me: &Identity, conversation: &ConversationId) -> (String, String, String) {
    (
        me.user_id.to_string(),
        me.device_id.to_string(),
        conversation.as_str().to_owned(),
    )
}

fn out_of_order() -> RpcError {
    RpcError::unavailable(
        "an earlier message to this conversation was not sent; send again in order",
    )
}

fn not_delivered() -> RpcError {
    RpcError::unavailable("message stored but not yet delivered; retry with the same client_msg_id")
}

/// The identity an edge verified for an item.
fn identity(item: &pb::SendItem) -> Result<Identity, RpcError> {
    Ok(Identity {
        user_id: UserId::parse(item.user_id.as_str())
            .map_err(|_| RpcError::bad_request("malformed user id in a batch item"))?,
        device_id: DeviceId::parse(item.device_id.as_str())
            .map_err(|_| RpcError::bad_request("malformed device id in a batch item"))?,
    })
}
