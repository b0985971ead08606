//! History: a page of a conversation within the caller's read window, cut
//! to what fits in one NATS reply.

use std::sync::Arc;

use prost::Message as _;
use shared::RpcError;
use shared::ids::ConversationId;
use shared::proto::message as pb;
use shared::rpc::Identity;

use super::{State, to_i64, to_proto};
use crate::store::{self, ReadWindow};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;
/// Room left in a NATS message for a reply's headers and framing.
const REPLY_HEADROOM: usize = 8 * 1024;

impl State {
    pub(super) async fn history(
        self: Arc<Self>,
        me: Identity,
        input: pb::HistoryRequest,
    ) -> Result<pb::HistoryResponse, RpcError> {
        let conversation = named(&input.conversation_id)?;
        let window = self.readable(&me, &conversation).await?;
        let limit = page(input.limit)?;
        let newest_first = input.before_seq > 0 || input.after_seq.is_none();
        let before = if input.before_seq > 0 {
            to_i64(input.before_seq)?
        } else {
            i64::MAX
        };
        // A former member reads up to the message that ended its membership.
        let before = window.left.map_or(before, |left| before.min(left + 1));
        let after = to_i64(input.after_seq.unwrap_or(0))?.max(window.joined - 1);
        let mut rows = store::history(
            &self.pool,
            &me.user_id,
            &conversation,
            after,
            before,
            limit + 1,
            newest_first,
        )
        .await?;
        let has_more = rows.len() as i64 > limit;
        if has_more {
            if newest_first {
                rows.remove(0);
            } else {
                rows.pop();
            }
        }
        let mut messages: Vec<pb::Message> = rows
            .iter()
            .map(|row| to_proto(row, self.recall_window_ms()))
            .collect::<Result<_, _>>()?;
        // Long messages: a whole page may not fit in one NATS message.
        let has_more = fit_page(&mut messages, self.reply_budget(), newest_first) || has_more;
        Ok(pb::HistoryResponse { messages, has_more })
    }

    /// How many encoded bytes of messages fit in one reply.
    pub(super) fn reply_budget(&self) -> usize {
        self.caller
            .client
            .server_info()
            .max_payload
            .saturating_sub(REPLY_HEADROOM)
    }

    /// The seqs `me` may read in a conversation; `forbidden` for non-members.
    /// (Request ids go through [`named`] first.)
    pub(super) async fn readable(
        &self,
        me: &Identity,
        conversation: &ConversationId,
    ) -> Result<ReadWindow, RpcError> {
        let member = store::member(&self.pool, conversation, &me.user_id).await?;
        match member {
            Some(m) => Ok(m.window),
            // A direct chat that has no message yet: readable, and empty.
            None if conversation.peer_of(&me.user_id).is_some() => Ok(ReadWindow::WHOLE),
            None => Err(RpcError::forbidden(
                "not a participant of this conversation",
            )),
        }
    }
}

/// Keeps the messages of a page that fit in `budget` encoded bytes, those
/// nearest the page's anchor first: the newest of a `newest_first` page, the
/// oldest of one read forwards. At least one stays (a single message always
/// fits). True when some were left out.
pub(super) fn fit_page(messages: &mut Vec<pb::Message>, budget: usize, newest_first: bool) -> bool {
    let size = |m: &pb::Message| {
        let len = m.encoded_len();
        1 + prost::length_delimiter_len(len) + len
    };
    let (mut used, mut keep) = (0, 0);
    for i in 0..messages.len() {
        let nearest = if newest_first {
            messages.len() - 1 - i
        } else {
            i
        };
        used += size(&messages[nearest]);
        if keep > 0 && used > budget {
            break;
        }
        keep += 1;
    }
    let left_out = messages.len() - keep;
    if newest_first {
        messages.drain(..left_out);
    } else {
        messages.truncate(keep);
    }
    left_out > 0
}

pub(super) fn page(limit: u32) -> Result<i64, RpcError> {
    match limit {
        0 => Ok(DEFAULT_PAGE as i64),
        1..=MAX_PAGE => Ok(limit as i64),
        _ => Err(RpcError::bad_request(format!(
            "limit must be within 1..={MAX_PAGE}"
        ))),
    }
}

/// The conversation a request names to read or change: an id that does not
/// parse names none the caller takes part in (`forbidden`, as for any
/// conversation of others).
pub(super) fn named(text: &str) -> Result<ConversationId, RpcError> {
    if text.is_empty() || text.len() > 200 {
        return Err(RpcError::bad_request(
            "conversation_id is missing or too long",
        ));
    }
    ConversationId::parse(text)
        .map_err(|_| RpcError::forbidden("not a participant of this conversation"))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn page_of(
        seqs: std::ops::RangeInclusive<u64>,
        text_bytes: usize,
    ) -> Vec<pb::Message> {
        seqs.map(|seq| pb::Message {
            seq,
            body: Some(pb::MessageBody {
                kind: Some(pb::message_body::Kind::Text(pb::Text {
                    text: "长".repeat(text_bytes / 3),
                })),
            }),
            ..Default::default()
        })
        .collect()
    }

    pub(super) fn seqs(messages: &[pb::Message]) -> Vec<u64> {
        messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    pub(super) fn a_page_is_cut_to_the_budget_at_its_far_end() {
        // Ten messages of ~12 KB in a 50 KB budget: four fit.
        let mut forwards = page_of(1..=10, 12_000);
        assert!(fit_page(&mut forwards, 50_000, false));
        assert_eq!(seqs(&forwards), [1, 2, 3, 4]);
        let encoded = pb::HistoryResponse {
            messages: forwards,
            has_more: true,
        }
        .encoded_len();
        assert!(encoded <= 50_000, "{encoded}");

        let mut newest = page_of(1..=10, 12_000);
        assert!(fit_page(&mut newest, 50_000, true));
        assert_eq!(seqs(&newest), [7, 8, 9, 10]);
    }

    #[test]
    pub(super) fn a_page_that_fits_is_left_whole_and_one_message_always_stays() {
        let mut small = page_of(1..=200, 30);
        assert!(!fit_page(&mut small, 1_000_000, false));
        assert_eq!(small.len(), 200);

        let mut huge = page_of(1..=3, 12_000);
        assert!(fit_page(&mut huge, 100, true));
        assert_eq!(seqs(&huge), [3]);
        let mut empty = Vec::new();
        assert!(!fit_page(&mut empty, 0, false));
    }
}
