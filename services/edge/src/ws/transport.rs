//! The WebSocket transport of one connection: reading frames (the size
//! limit and the reassembly of fragmented messages; the idle timeout is the
//! task's timer). Writing is [`Conn::send`], coalesced into one system call
//! per step of the task ([`Coalesce`]).

use tokio::io::AsyncRead as _;

use super::task::Task;
use super::*;

/// A frame read: its opcode, whether it ends its message, and its payload.
pub(super) struct Read {
    opcode: OpCode,
    fin: bool,
    payload: Vec<u8>,
}

/// How long a connection reads nothing before its frame reader (and the
/// reader's buffer) is dropped.
pub(super) const QUIET: Duration = Duration::from_secs(1);

/// The read half of a connection's socket, shared by the task and the frame
/// reader. fastwebsockets gives each reader a buffer of 8 KB (its size is
/// fixed by the crate), which an idle connection would keep for its whole
/// life, most of it for nothing. So the task drops the reader once the
/// connection is quiet and nothing is left in that buffer, waits for the
/// next byte with no buffer at all, and makes a new reader when it comes.
/// The bytes handed to the reader and the bytes of the frames it returned
/// tell when its buffer is empty.
#[derive(Clone)]
pub(super) struct ReadSide(Arc<Mutex<Source>>);

struct Source {
    io: tokio::io::ReadHalf<TokioIo<Upgraded>>,
    /// A byte read while no reader was there, for the next one.
    first: Option<u8>,
    /// Bytes handed to readers.
    delivered: u64,
    /// Bytes of the frames readers returned (headers included).
    consumed: u64,
}

impl ReadSide {
    pub(super) fn new(io: tokio::io::ReadHalf<TokioIo<Upgraded>>) -> Self {
        Self(Arc::new(Mutex::new(Source {
            io,
            first: None,
            delivered: 0,
            consumed: 0,
        })))
    }

    /// Whether a reader holds no byte it has not returned in a frame: then
    /// a read that waits is waiting for the socket, and dropping it (and
    /// its reader) loses nothing.
    pub(super) fn drained(&self) -> bool {
        let source = shared::sync::lock(&self.0);
        source.first.is_none() && source.delivered == source.consumed
    }

    /// Waits for the next byte without a buffer; false at the end of the
    /// stream. Dropping it loses nothing: a byte read is kept at once.
    async fn wait(&self) -> std::io::Result<bool> {
        std::future::poll_fn(|cx| {
            let mut source = shared::sync::lock(&self.0);
            if source.first.is_some() {
                return std::task::Poll::Ready(Ok(true));
            }
            let mut byte = [0u8; 1];
            let mut buf = tokio::io::ReadBuf::new(&mut byte);
            std::pin::Pin::new(&mut source.io)
                .poll_read(cx, &mut buf)
                .map_ok(|()| {
                    let got = buf.filled().first().copied();
                    source.first = got;
                    got.is_some()
                })
        })
        .await
    }

    /// A frame of `payload` bytes came out of the reader. A client's frames
    /// are masked and their lengths minimal; a frame that is not (against
    /// RFC 6455) makes the counts differ for good, so its connection only
    /// keeps its reader.
    fn consumed(&self, payload: usize) {
        let length = match payload {
            0..=125 => 0,
            126..=65_535 => 2,
            _ => 8,
        };
        shared::sync::lock(&self.0).consumed += (2 + length + 4 + payload) as u64;
    }
}

impl tokio::io::AsyncRead for ReadSide {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let mut source = shared::sync::lock(&self.0);
        if buf.remaining() > 0
            && let Some(byte) = source.first.take()
        {
            buf.put_slice(&[byte]);
            source.delivered += 1;
            return std::task::Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut source.io).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = polled {
            source.delivered += (buf.filled().len() - before) as u64;
        }
        polled
    }
}

/// Reads the next frame, with `reader` or, when there is none, with a new
/// one made when the first byte comes (see [`ReadSide`]). The reader goes
/// in and comes back out, so the task can keep one read pending across its
/// steps (a read is not cancel-safe: dropping it halfway would lose the
/// bytes of a frame header); the pongs and close echo the protocol obliges
/// come out beside the frame.
pub(super) async fn read_next(
    side: ReadSide,
    reader: Option<Reader>,
    max_frame_bytes: usize,
) -> (
    Option<Reader>,
    Vec<(OpCode, Vec<u8>)>,
    Result<Read, WebSocketError>,
) {
    let mut reader = match reader {
        Some(reader) => reader,
        None => {
            match side.wait().await {
                Ok(true) => {}
                Ok(false) => return (None, Vec::new(), Err(WebSocketError::UnexpectedEOF)),
                Err(e) => return (None, Vec::new(), Err(WebSocketError::IoError(e))),
            }
            let (mut reader, _) = fastwebsockets::after_handshake_split(
                side.clone(),
                tokio::io::sink(),
                fastwebsockets::Role::Server,
            );
            reader.set_max_message_size(max_frame_bytes);
            reader.set_auto_pong(true);
            reader.set_auto_close(true);
            reader
        }
    };
    let mut controls = Vec::new();
    let read = reader
        .read_frame(&mut |frame: Frame<'_>| {
            controls.push((frame.opcode, frame.payload.to_vec()));
            std::future::ready(Ok::<(), std::convert::Infallible>(()))
        })
        .await
        .map(|frame| {
            side.consumed(frame.payload.len());
            Read {
                opcode: frame.opcode,
                fin: frame.fin,
                payload: frame.payload.to_vec(),
            }
        });
    // Each pong answers a ping the reader took in.
    for (opcode, payload) in &controls {
        if *opcode == OpCode::Pong {
            side.consumed(payload.len());
        }
    }
    (Some(reader), controls, read)
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
