//! What a client asks over its WebSocket: sends (forwarded in order by one
//! task per connection, started at the first send), acks, typing, resumes,
//! pings, and fresh access tokens.

use super::*;

/// Handles one client message; false when the connection should end.
pub(super) async fn handle_message(
    state: &Arc<EdgeState>,
    conn: &Arc<Conn>,
    format: Format,
    bytes: &[u8],
    sends: &mut Option<Sends>,
    resumes: &mpsc::Sender<u64>,
) -> bool {
    let frame = match frames::decode(format, bytes) {
        Ok(frame) => frame,
        Err(bad) => return conn.send(frames::error(bad.id, &bad.error)).await,
    };
    let id = frame.id;
    let Some(kind) = frame.kind else { return true };
    tracing::trace!(kind = frames::kind_name(&kind), id, "frame");
    let error = match kind {
        // A full queue of sends waiting for their ack stops this reader until
        // one is answered: back-pressure on a client that pipelines too much.
        client_frame::Kind::Send(send) => {
            if let Err(e) = state.limits.send(&conn.who.user_id) {
                return conn.send(frames::error(id, &e)).await;
            }
            let sends = sends.get_or_insert_with(|| Sends::start(state, conn));
            return tokio::select! {
                _ = conn.cancel.cancelled() => false,
                sent = sends.tx.send((id, Box::new(send))) => sent.is_ok(),
            };
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
            Ok(()) => match resumes.try_send(resume.cursor) {
                Ok(()) => return true,
                Err(_) => {
                    RpcError::rate_limited("too many resumes at once", Duration::from_secs(1))
                }
            },
        },
        client_frame::Kind::Typing(typing) => {
            if let Err(e) = state.limits.typing(&conn.who.user_id) {
                e
            } else {
                // Off the reader: a slow service must not stall this connection.
                let (caller, conn) = (state.caller.clone(), conn.clone());
                tokio::spawn(async move {
                    let result = caller
                        .call_as::<ConversationTyping>(&conn.who, &typing)
                        .await;
                    if let Err(e) = result {
                        conn.send(frames::error(id, &e)).await;
                    }
                });
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

/// A connection's sender task and its queue.
pub(super) struct Sends {
    tx: mpsc::Sender<(u64, Box<msg_pb::SendRequest>)>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl Sends {
    pub(super) fn start(state: &Arc<EdgeState>, conn: &Arc<Conn>) -> Self {
        let (tx, rx) = mpsc::channel(state.config.max_inflight_sends);
        let task = tokio::spawn(send_loop(state.clone(), conn.clone(), rx));
        Self { tx, task }
    }
}

/// Queues the connection's sends on the edge's batcher as they come, up to
/// `edge.max_inflight_sends` unanswered, and answers each (ack or error) in
/// the order they were sent.
pub(super) async fn send_loop(
    state: Arc<EdgeState>,
    conn: Arc<Conn>,
    mut sends: mpsc::Receiver<(u64, Box<msg_pb::SendRequest>)>,
) {
    let sender = state.batcher.sender();
    let window = state.config.max_inflight_sends.max(1);
    let mut answers = futures::stream::FuturesOrdered::new();
    loop {
        tokio::select! {
            _ = conn.cancel.cancelled() => return,
            Some((id, client_msg_id, answer)) = answers.next(), if !answers.is_empty() => {
                let client_msg_id: String = client_msg_id;
                let frame = match answer {
                    Ok(Ok(ack)) => frames::reply(id, server_frame::Kind::Ack(ack)),
                    Ok(Err(e)) => {
                        conn.not_sent(&client_msg_id);
                        frames::error(id, &e)
                    }
                    Err(_) => {
                        conn.not_sent(&client_msg_id);
                        frames::error(id, &RpcError::unavailable("the edge is stopping"))
                    }
                };
                if !conn.send(frame).await {
                    return;
                }
            }
            next = sends.recv(), if answers.len() < window => {
                let Some((id, request)) = next else { return };
                let client_msg_id: String = request.client_msg_id.clone();
                conn.sending(&client_msg_id);
                match sender.send(&conn.who, *request).await {
                    Ok(answer) => {
                        let sent = client_msg_id.clone();
                        answers.push_back(async move { (id, sent, answer.await) });
                    }
                    Err(e) => {
                        conn.not_sent(&client_msg_id);
                        if !conn.send(frames::error(id, &e)).await {
                            return;
                        }
                    }
                }
            }
        }
    }
}
