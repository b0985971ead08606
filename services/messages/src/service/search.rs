//! What the search service asks of the owner of the messages: the
//! conversations a user may search (with read windows), which of its hits
//! the user may read now, and every message for rebuilding its index.

use std::sync::Arc;

use shared::RpcError;
use shared::ids::UserId;
use shared::proto::message as pb;

use super::history::fit_page;
use super::{State, to_i64, to_proto};
use crate::store;

/// The most messages one `visible` asks about.
const MAX_REFS: usize = 200;
/// The most messages one export page holds.
const MAX_EXPORT: u32 = 1000;

impl State {
    /// The conversations `user_id` belongs or belonged to, with the seqs it
    /// may read in each.
    pub(super) async fn search_scope(
        self: Arc<Self>,
        _: (),
        input: pb::SearchScopeRequest,
    ) -> Result<pb::SearchScopeReply, RpcError> {
        let user = user(&input.user_id)?;
        let windows = store::windows_of(&self.pool, user.as_str())
            .await?
            .into_iter()
            .map(|(conversation_id, joined, left)| pb::ReadWindow {
                conversation_id,
                from_seq: joined.max(1) as u64,
                to_seq: left.max(0) as u64,
            })
            .collect();
        Ok(pb::SearchScopeReply { windows })
    }

    /// Which of `refs` `user_id` may read now, as they are now: in its read
    /// window, not deleted for itself and not recalled.
    pub(super) async fn visible(
        self: Arc<Self>,
        _: (),
        input: pb::VisibleRequest,
    ) -> Result<pb::VisibleReply, RpcError> {
        let user = user(&input.user_id)?;
        if input.refs.len() > MAX_REFS {
            return Err(RpcError::bad_request(format!(
                "at most {MAX_REFS} messages at a time"
            )));
        }
        let refs = input
            .refs
            .iter()
            .map(|r| Ok((r.conversation_id.clone(), to_i64(r.seq)?)))
            .collect::<Result<Vec<_>, RpcError>>()?;
        let rows = store::visible_among(&self.pool, user.as_str(), &refs).await?;
        let mut messages = Vec::with_capacity(rows.len());
        for row in &rows {
            let message = to_proto(row, self.recall_window_ms())?;
            let recalled = matches!(
                message.body.as_ref().and_then(|b| b.kind.as_ref()),
                Some(pb::message_body::Kind::Recalled(_))
            );
            if !recalled {
                messages.push(message);
            }
        }
        Ok(pb::VisibleReply { messages })
    }

    /// A page of every stored message in id order.
    pub(super) async fn export(
        self: Arc<Self>,
        _: (),
        input: pb::ExportRequest,
    ) -> Result<pb::ExportReply, RpcError> {
        let limit = match input.limit {
            0 => 500,
            1..=MAX_EXPORT => input.limit,
            _ => {
                return Err(RpcError::bad_request(format!(
                    "limit must be within 1..={MAX_EXPORT}"
                )));
            }
        };
        let rows = store::export(&self.pool, &input.after_id, i64::from(limit) + 1).await?;
        let mut more = rows.len() > limit as usize;
        let mut messages: Vec<pb::Message> = rows
            .iter()
            .take(limit as usize)
            .map(|row| to_proto(row, self.recall_window_ms()))
            .collect::<Result<_, _>>()?;
        more |= fit_page(&mut messages, self.reply_budget(), false);
        // Counted for the first page only (a count is a whole scan).
        let total = if input.after_id.is_empty() {
            store::count(&self.pool).await?.max(0) as u64
        } else {
            0
        };
        Ok(pb::ExportReply {
            messages,
            total,
            more,
        })
    }
}

fn user(text: &str) -> Result<UserId, RpcError> {
    UserId::parse(text).map_err(|_| RpcError::bad_request("user_id is not a user id"))
}
