//! The WebSocket transport of one connection: reading frames (with the
//! idle timeout, the size limit and the reassembly of fragmented messages)
//! and writing them (coalesced into few syscalls) from the outgoing queue.

use super::*;

pub(super) async fn read_loop(
    state: &Arc<EdgeState>,
    conn: &Arc<Conn>,
    reader: &mut fastwebsockets::WebSocketRead<tokio::io::ReadHalf<TokioIo<Upgraded>>>,
    sends: &mut Option<Sends>,
    resumes: &mpsc::Sender<u64>,
) {
    let idle = Duration::from_secs(state.config.idle_timeout_secs);
    let max = state.config.max_frame_bytes;
    // A message split over several frames: its kind and the bytes so far.
    let mut partial: Option<(Format, Vec<u8>)> = None;
    let out = conn.out.clone();
    let mut obligated = move |frame: Frame<'_>| {
        // Pongs and the close echo the protocol requires.
        let _ = out.try_send(Out::Control(Box::new((
            frame.opcode,
            frame.payload.to_vec(),
        ))));
        std::future::ready(Ok::<(), &'static str>(()))
    };
    loop {
        let read = tokio::select! {
            _ = conn.cancel.cancelled() => return,
            read = tokio::time::timeout(idle, reader.read_frame(&mut obligated)) => read,
        };
        let frame = match read {
            Err(_) => return conn.close(close::IDLE, "idle timeout"),
            Ok(Err(WebSocketError::FrameTooLarge)) => {
                return conn.close(close::TOO_BIG, "frame too large");
            }
            Ok(Err(WebSocketError::UnexpectedEOF | WebSocketError::ConnectionClosed)) => return,
            Ok(Err(WebSocketError::IoError(_))) => return,
            Ok(Err(WebSocketError::InvalidUTF8)) => return close_invalid_utf8(conn),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "websocket protocol error");
                return conn.close(close::PROTOCOL, "protocol error");
            }
            Ok(Ok(frame)) => frame,
        };
        let complete = match frame.opcode {
            OpCode::Close => return,
            OpCode::Ping | OpCode::Pong => continue,
            OpCode::Text | OpCode::Binary => {
                let format = if frame.opcode == OpCode::Text {
                    Format::Json
                } else {
                    Format::Binary
                };
                if partial.is_some() {
                    return conn.close(close::PROTOCOL, "new message inside a fragmented one");
                }
                if frame.fin {
                    Some((format, frame.payload.to_vec()))
                } else {
                    partial = Some((format, frame.payload.to_vec()));
                    None
                }
            }
            OpCode::Continuation => {
                let Some((_, bytes)) = partial.as_mut() else {
                    return conn.close(close::PROTOCOL, "continuation without a message");
                };
                if bytes.len() + frame.payload.len() > max {
                    return conn.close(close::TOO_BIG, "frame too large");
                }
                bytes.extend_from_slice(&frame.payload);
                if !frame.fin {
                    None
                } else {
                    // The reader checks whole text messages, not
                    // reassembled ones.
                    let done = partial.take();
                    if done.as_ref().is_some_and(|(format, bytes)| {
                        *format == Format::Json && std::str::from_utf8(bytes).is_err()
                    }) {
                        return close_invalid_utf8(conn);
                    }
                    done
                }
            }
        };
        let Some((format, bytes)) = complete else {
            continue;
        };
        conn.binary
            .store(format == Format::Binary, Ordering::Relaxed);
        if !Box::pin(handle_message(state, conn, format, &bytes, sends, resumes)).await {
            return;
        }
    }
}

fn close_invalid_utf8(conn: &Conn) {
    conn.close(close::INVALID_DATA, "text message is not UTF-8");
}

pub(super) async fn write_loop(
    mut writer: Writer,
    mut queue: mpsc::Receiver<Out>,
    conn: Arc<Conn>,
    ping_every: Duration,
) {
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let mut closed = false;
    loop {
        let first = tokio::select! {
            biased;
            _ = conn.cancel.cancelled() => break,
            out = queue.recv() => match out {
                None => break,
                Some(out) => out,
            },
            _ = ping.tick() => Out::Control(Box::new((OpCode::Ping, Vec::new()))),
        };
        // Frames queued meanwhile go out in the same write.
        let write = async {
            writer
                .write_frame(to_frame(&conn, first, &mut closed))
                .await?;
            for _ in 1..COALESCED_FRAMES {
                if closed {
                    break;
                }
                let Ok(next) = queue.try_recv() else { break };
                writer
                    .write_frame(to_frame(&conn, next, &mut closed))
                    .await?;
            }
            writer.flush().await
        };
        match tokio::time::timeout(conn.slow_timeout, write).await {
            Ok(Ok(())) if !closed => {}
            Ok(Ok(())) => return,
            Ok(Err(_)) => return conn.cancel.cancel(),
            Err(_) => {
                conn.close(close::SLOW_CLIENT, "slow client: resume from your cursor");
                return;
            }
        }
    }
    if !closed {
        let (code, reason) = shared::sync::lock(&conn.close_reason)
            .clone()
            .unwrap_or((close::GOING_AWAY, "server shutting down".into()));
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            writer
                .write_frame(Frame::close(code, reason.as_bytes()))
                .await?;
            writer.flush().await
        })
        .await;
    }
}

pub(super) fn to_frame(conn: &Conn, out: Out, closed: &mut bool) -> Frame<'static> {
    match out {
        Out::Frame(frame) => {
            let format = conn.format();
            let bytes = frames::encode(format, &frame);
            match format {
                Format::Json => Frame::text(Payload::Owned(bytes)),
                Format::Binary => Frame::binary(Payload::Owned(bytes)),
            }
        }
        Out::Control(control) => {
            let (opcode, payload) = *control;
            *closed |= opcode == OpCode::Close;
            Frame::new(true, opcode, None, Payload::Owned(payload))
        }
    }
}
