//! A batch of sends from an edge: every send its connections made since its
//! previous batch, each with the identity the edge verified. One request
//! and one reply per batch instead of per message, and no limit of one send
//! in flight per connection: order comes from here. The items of one
//! conversation are sent one after another, in the batch's order (so a
//! device's messages keep theirs); different conversations go side by side.
//! After an item fails, the same device's later items to that conversation
//! fail too, so the client sends them again in order.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use shared::RpcError;
use shared::ids::{DeviceId, UserId};
use shared::proto::message as pb;
use shared::rpc::Identity;

use super::State;
use super::send::target;

/// Items per batch at most (an edge sends fewer: see its batcher).
pub const MAX_ITEMS: usize = 1024;

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
        let mut results: Vec<Option<pb::send_result::Result>> = vec![None; input.items.len()];
        // The items of each conversation, in order; an item that names no
        // valid conversation fails at once.
        let mut conversations: HashMap<String, Vec<(usize, Identity, pb::SendRequest)>> =
            HashMap::new();
        let mut order = Vec::new();
        for (i, item) in input.items.into_iter().enumerate() {
            let prepared = identity(&item).and_then(|me| {
                let send = item.send.unwrap_or_default();
                let conversation = target(&me, &send)?;
                Ok((me, send, conversation))
            });
            match prepared {
                Ok((me, send, conversation)) => {
                    let key = conversation.as_str().to_owned();
                    let items = conversations.entry(key.clone()).or_insert_with(|| {
                        order.push(key);
                        Vec::new()
                    });
                    items.push((i, me, send));
                }
                Err(e) => results[i] = Some(pb::send_result::Result::Error(e.to_proto())),
            }
        }
        let limit = self.config.max_concurrent_sends.max(1);
        let mut done = futures::stream::iter(order.into_iter().map(|key| {
            let items = conversations.remove(&key).unwrap_or_default();
            let state = self.clone();
            async move { state.send_in_order(items).await }
        }))
        .buffer_unordered(limit);
        while let Some(answers) = done.next().await {
            for (i, answer) in answers {
                results[i] = Some(answer);
            }
        }
        Ok(pb::SendBatchResponse {
            results: results
                .into_iter()
                .map(|result| pb::SendResult { result })
                .collect(),
        })
    }

    /// One conversation's items, one after another.
    async fn send_in_order(
        self: &Arc<Self>,
        items: Vec<(usize, Identity, pb::SendRequest)>,
    ) -> Vec<(usize, pb::send_result::Result)> {
        let mut failed: Vec<Identity> = Vec::new();
        let mut answers = Vec::with_capacity(items.len());
        for (i, me, send) in items {
            let answer = if failed.contains(&me) {
                Err(RpcError::unavailable(
                    "an earlier message to this conversation was not sent; send again in order",
                ))
            } else {
                self.clone().send(me.clone(), send).await
            };
            answers.push((
                i,
                match answer {
                    Ok(ack) => pb::send_result::Result::Ack(ack),
                    Err(e) => {
                        if !failed.contains(&me) {
                            failed.push(me);
                        }
                        pb::send_result::Result::Error(e.to_proto())
                    }
                },
            ));
        }
        answers
    }
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
