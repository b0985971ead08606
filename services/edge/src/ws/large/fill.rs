//! Filling a gap of a large group from its history: read as the user (so
//! a connection only gets what its user may read), forwarded oldest first,
//! and, when the history call fails, tried again after a growing wait.

use super::*;

/// Most history pages one gap fill reads (200 messages each); the rest
/// follows at the next push or resume.
const FILL_PAGES: usize = 100;

/// The first wait before a failed gap fill is tried again; it doubles with
/// each failure in a row, up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(super) struct Retry {
    /// Failed fills in a row.
    pub(super) failures: u32,
    /// A [`GroupPush::Retry`] is on its way.
    pub(super) scheduled: bool,
}

/// How long to wait after `failures` failed fills in a row, before jitter.
fn backoff(failures: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

impl Large {
    /// Fills every followed group from the history (after a NATS reconnect
    /// or a slow-consumer event, when live group messages may have been lost).
    pub async fn fill_all(&mut self, state: &EdgeState, conn: &Conn) -> bool {
        let conversations: Vec<String> = self.delivered.keys().cloned().collect();
        for conversation in conversations {
            if !self.fill(state, conn, &conversation, 0).await {
                return false;
            }
        }
        true
    }

    /// Forwards what the history has after the delivered seq and before
    /// `before` (0: up to the newest), oldest first. It stops at a message
    /// that ends read fan-out (the inbox delivers that one and what follows).
    /// A history call that fails is tried again later. False when the
    /// connection is closing.
    pub(super) async fn fill(
        &mut self,
        state: &EdgeState,
        conn: &Conn,
        conversation: &str,
        before: u64,
    ) -> bool {
        match self.read_history(state, conn, conversation, before).await {
            Ok(open) => {
                if let Some(retry) = self.retries.get_mut(conversation) {
                    retry.failures = 0;
                    if !retry.scheduled {
                        self.retries.remove(conversation);
                    }
                }
                open
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot fill a large group's gap; trying again later");
                self.retry_later(conversation);
                true
            }
        }
    }

    /// Schedules a [`GroupPush::Retry`] of `conversation`, unless one is on
    /// its way. The wait has up to as much again at random, so the members
    /// of a group whose fills failed together do not all come back at once.
    pub(super) fn retry_later(&mut self, conversation: &str) {
        let retry = self.retries.entry(conversation.to_owned()).or_default();
        retry.failures = retry.failures.saturating_add(1);
        if retry.scheduled {
            return;
        }
        retry.scheduled = true;
        let wait = backoff(retry.failures);
        let wait = wait
            + Duration::from_millis(super::super::delivery::rand_millis(wait.as_millis() as u64));
        let (tx, conversation) = (self.sender(), Arc::<str>::from(conversation));
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = tx.send(GroupPush::Retry(conversation)).await;
        });
    }

    /// [`Large::fill`]'s reading: Ok(false) when the connection is closing.
    pub(super) async fn read_history(
        &mut self,
        state: &EdgeState,
        conn: &Conn,
        conversation: &str,
        before: u64,
    ) -> Result<bool, RpcError> {
        for _ in 0..FILL_PAGES {
            let Some(&after) = self.delivered.get(conversation) else {
                return Ok(true);
            };
            if before != 0 && after + 1 >= before {
                return Ok(true);
            }
            let page = state
                .caller
                .call_as::<MessageHistory>(
                    &conn.who,
                    // Ascending from `after` (with a `before_seq` the
                    // history would page from the newest end).
                    &msg_pb::HistoryRequest {
                        conversation_id: conversation.to_owned(),
                        after_seq: Some(after),
                        before_seq: 0,
                        limit: 200,
                    },
                )
                .await;
            let page = page?;
            let more = page.has_more && !page.messages.is_empty();
            for message in page.messages {
                if before != 0 && message.seq >= before {
                    return Ok(true);
                }
                if !self.forward(state, conn, message).await {
                    return Ok(false);
                }
            }
            if !more {
                return Ok(true);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn the_wait_doubles_up_to_its_cap() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(
            waits,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(backoff(u32::MAX), RETRY_MAX);
    }
}
