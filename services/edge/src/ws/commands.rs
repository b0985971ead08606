//! What a client asks over its WebSocket: sends (queued on the edge's
//! batcher, many in flight, answered in order), acks, typing, resumes,
//! pings, and fresh access tokens.

use super::task::{Sending, Task};
use super::*;

impl Task<'_> {
    /// Handles one client message; false when the connection should end.
    pub(super) async fn handle_message(&mut self, format: Format, bytes: &[u8]) -> bool {
        let (state, conn) = (self.state(), self.conn());
        let frame = match frames::decode(format, bytes) {
            Ok(frame) => frame,
            Err(bad) => return conn.send(frames::error(bad.id, &bad.error)).await,
        };
        let id = frame.id;
        let Some(kind) = frame.kind else { return true };
        tracing::trace!(kind = frames::kind_name(&kind), id, "frame");
        let error = match kind {
            // While `edge.max_inflight_sends` wait for their answer, the task
            // reads no more frames: back-pressure on a client that
            // pipelines too much.
            client_frame::Kind::Send(send) => {
                if let Err(e) = state.limits.send(&conn.who.user_id) {
                    return conn.send(frames::error(id, &e)).await;
                }
                return self.send(id, send).await;
            }
            client_frame::Kind::Auth(auth) => match state.authenticate(&auth.access_token).await {
                Ok(verified) if verified.who == conn.who => {
                    let expires = verified.expires_at_secs.saturating_mul(1000);
                    conn.expires_at_ms.fetch_max(expires, Ordering::AcqRel);
                    let session = pb::Session {
                        expires_at_ms: conn.expires_at_ms.load(Ordering::Acquire),
                    };
                    let frame = frames::reply(id, server_frame::Kind::Session(session));
                    return conn.send(frame).await;
                }
                Ok(_) => RpcError::forbidden("the token is another device's"),
                Err(e) => e,
            },
            client_frame::Kind::Ack(ack) => {
                if ack.cursor > conn.delivered.load(Ordering::Acquire) {
                    RpcError::bad_request("cursor is ahead of what was delivered")
                } else {
                    conn.acked.fetch_max(ack.cursor, Ordering::AcqRel);
                    return true;
                }
            }
            client_frame::Kind::Resume(resume) => match state.limits.resume(&conn.who.user_id) {
                Err(e) => e,
                Ok(()) => return self.resume(resume.cursor).await,
            },
            client_frame::Kind::Typing(typing) => {
                if let Err(e) = state.limits.typing(&conn.who.user_id) {
                    e
                } else {
                    // Answered when the call ends: a slow service must not
                    // stall this connection.
                    self.typing(id, typing);
                    return true;
                }
            }
            client_frame::Kind::Ping(ping) => {
                let pong = pb::Pong {
                    client_ts_ms: ping.client_ts_ms,
                    server_ts_ms: ids::now_ms(),
                };
                return conn
                    .send(frames::reply(id, server_frame::Kind::Pong(pong)))
                    .await;
            }
        };
        conn.send(frames::error(id, &error)).await
    }

    /// Queues a send on the edge's batcher; its answer comes in order
    /// ([`Task::on_answer`]).
    async fn send(&mut self, id: u64, send: msg_pb::SendRequest) -> bool {
        let (state, conn) = (self.state(), self.conn());
        let sends = self.sends.get_or_insert_with(|| {
            Box::new(Sending {
                sender: state.batcher.sender(),
                answers: Default::default(),
                waiting: Default::default(),
            })
        });
        let client_msg_id = send.client_msg_id.clone();
        conn.sending(&client_msg_id);
        let sole_connection = state.devices.connections(&conn.who) <= 1;
        match sends.sender.send(&conn.who, send, sole_connection).await {
            Ok(answer) => {
                sends.answers.push_back(answer);
                sends.waiting.push_back((id, client_msg_id));
                true
            }
            Err(e) => {
                conn.not_sent(&client_msg_id);
                conn.send(frames::error(id, &e)).await
            }
        }
    }
}
