//! The WebSocket transport of one connection: reading frames (the size
//! limit and the reassembly of fragmented messages; the idle timeout is the
//! task's timer). Writing is [`Conn::send`], coalesced into one system call
//! per step of the task ([`Coalesce`]).

use super::task::Task;
use super::*;

/// A frame read: its opcode, whether it ends its message, and its payload.
pub(super) struct Read {
    opcode: OpCode,
    fin: bool,
    payload: Vec<u8>,
}

/// Reads the next frame. The reader goes in and comes back out, so the task
/// can keep one read pending across its steps (a read is not cancel-safe:
/// dropping it halfway would lose the bytes of a frame header); the pongs
/// and close echo the protocol obliges come out beside the frame.
pub(super) async fn read_next(
    mut reader: Reader,
) -> (Reader, Vec<(OpCode, Vec<u8>)>, Result<Read, WebSocketError>) {
    let mut controls = Vec::new();
    let read = reader
        .read_frame(&mut |frame: Frame<'_>| {
            controls.push((frame.opcode, frame.payload.to_vec()));
            std::future::ready(Ok::<(), std::convert::Infallible>(()))
        })
        .await
        .map(|frame| Read {
            opcode: frame.opcode,
            fin: frame.fin,
            payload: frame.payload.to_vec(),
        });
    (reader, controls, read)
}

impl Task<'_> {
    /// One frame from the client (and the control frames owed before it);
    /// false when the connection ends.
    pub(super) async fn on_read(
        &mut self,
        controls: Vec<(OpCode, Vec<u8>)>,
        read: Result<Read, WebSocketError>,
    ) -> bool {
        let (state, conn) = (self.state(), self.conn());
        for (opcode, payload) in controls {
            if !conn
                .write(Frame::new(true, opcode, None, Payload::Owned(payload)))
                .await
            {
                return false;
            }
        }
        let frame = match read {
            Err(WebSocketError::FrameTooLarge) => {
                conn.close(close::TOO_BIG, "frame too large");
                return false;
            }
            Err(WebSocketError::UnexpectedEOF | WebSocketError::ConnectionClosed) => return false,
            Err(WebSocketError::IoError(_)) => return false,
            Err(WebSocketError::InvalidUTF8) => return close_invalid_utf8(conn),
            Err(e) => {
                tracing::debug!(error = %e, "websocket protocol error");
                conn.close(close::PROTOCOL, "protocol error");
                return false;
            }
            Ok(frame) => frame,
        };
        let max = state.config.max_frame_bytes;
        let complete = match frame.opcode {
            OpCode::Close => return false,
            OpCode::Ping | OpCode::Pong => return true,
            OpCode::Text | OpCode::Binary => {
                let format = if frame.opcode == OpCode::Text {
                    Format::Json
                } else {
                    Format::Binary
                };
                if self.partial.is_some() {
                    conn.close(close::PROTOCOL, "new message inside a fragmented one");
                    return false;
                }
                if frame.fin {
                    Some((format, frame.payload))
                } else {
                    self.partial = Some((format, frame.payload));
                    None
                }
            }
            OpCode::Continuation => {
                let Some((_, bytes)) = self.partial.as_mut() else {
                    conn.close(close::PROTOCOL, "continuation without a message");
                    return false;
                };
                if bytes.len() + frame.payload.len() > max {
                    conn.close(close::TOO_BIG, "frame too large");
                    return false;
                }
                bytes.extend_from_slice(&frame.payload);
                if !frame.fin {
                    None
                } else {
                    // The reader checks whole text messages, not
                    // reassembled ones.
                    let done = self.partial.take();
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
            return true;
        };
        conn.binary
            .store(format == Format::Binary, Ordering::Relaxed);
        Box::pin(self.handle_message(format, &bytes)).await
    }
}

fn close_invalid_utf8(conn: &Conn) -> bool {
    conn.close(close::INVALID_DATA, "text message is not UTF-8");
    false
}
