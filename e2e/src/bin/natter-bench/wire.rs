//! A lean WebSocket client for load: binary protobuf frames, split into a
//! sink and a stream so one task sends while another reads, optionally
//! bound to a chosen loopback source address (to pass the 64k port limit).

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use shared::proto::edge::{ClientFrame, Resume, ServerFrame, client_frame, server_frame};
use shared::proto::message::SendRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;
pub type Sink = SplitSink<Ws, WsMessage>;
pub type Stream = SplitStream<Ws>;

/// Opens a WebSocket with binary frames as the holder of `token`, from
/// `source` when given, and reads the welcome.
pub async fn connect(
    edge: SocketAddr,
    token: &str,
    source: Option<IpAddr>,
) -> anyhow::Result<(Sink, Stream)> {
    tokio::time::timeout(WAIT, open(edge, token, source))
        .await
        .context("no welcome in time")?
}

/// How long the bench waits for any one answer.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

async fn open(
    edge: SocketAddr,
    token: &str,
    source: Option<IpAddr>,
) -> anyhow::Result<(Sink, Stream)> {
    let socket = match edge {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(edge).await?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{edge}/v1/ws?token={token}&format=binary");
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await?;
    let (sink, mut stream) = ws.split();
    match next(&mut stream).await?.kind {
        Some(server_frame::Kind::Welcome(_)) => Ok((sink, stream)),
        other => bail!("expected welcome, got {other:?}"),
    }
}

/// Reads until `caughtUp` (after a resume), at most [`WAIT`].
pub async fn caught_up(stream: &mut Stream) -> anyhow::Result<()> {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(server_frame::Kind::CaughtUp(_)) = next(stream).await?.kind {
                return anyhow::Ok(());
            }
        }
    })
    .await
    .context("no caughtUp in time")?
}

/// The next server frame (skipping WebSocket control frames).
pub async fn next(stream: &mut Stream) -> anyhow::Result<ServerFrame> {
    loop {
        match stream.next().await.context("connection ended")?? {
            WsMessage::Binary(bytes) => return Ok(ServerFrame::decode(bytes.as_ref())?),
            WsMessage::Text(text) => return Ok(serde_json::from_str(text.as_str())?),
            WsMessage::Close(frame) => bail!("closed: {frame:?}"),
            _ => continue,
        }
    }
}

pub fn frame(id: u64, kind: client_frame::Kind) -> WsMessage {
    WsMessage::binary(
        ClientFrame {
            id,
            kind: Some(kind),
        }
        .encode_to_vec(),
    )
}

pub fn resume(id: u64, cursor: u64) -> WsMessage {
    frame(id, client_frame::Kind::Resume(Resume { cursor }))
}

/// The text of a benchmark message: when it was sent (nanoseconds since
/// `epoch`) and some words, about as long as a chat message.
pub fn stamped_text(epoch: std::time::Instant, i: usize) -> String {
    stamped_text_at(epoch.elapsed().as_nanos(), i)
}

/// A text stamped with a given time since the epoch, nanoseconds (an open
/// loop's scheduled send time).
pub fn stamped_text_at(nanos: u128, i: usize) -> String {
    format!("{nanos} 消息 {i}: the quick brown fox jumps over the lazy dog")
}

/// The send time of a message made by [`stamped_text`], as nanoseconds since the epoch.
pub fn stamp_of(message: &shared::proto::message::Message) -> Option<u128> {
    e2e::text_of(message).split(' ').next()?.parse().ok()
}

/// A chat message's size on the wire (a send frame), for the baseline.
pub fn typical_payload() -> Vec<u8> {
    // A stamp as long as a minute into a run has (11 digits), so the size
    // does not change from run to run.
    let text = format!(
        "{} 消息 {}: the quick brown fox jumps over the lazy dog",
        60_000_000_000u64, 123_456
    );
    ClientFrame {
        id: 1,
        kind: Some(client_frame::Kind::Send(SendRequest {
            to_user_id: shared::ids::new_id(),
            client_msg_id: "c-123456".into(),
            body: Some(e2e::text(&text)),
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

/// A text message to a user, as a send frame.
pub fn send_text(id: u64, to_user_id: &str, client_msg_id: String, text: String) -> WsMessage {
    frame(
        id,
        client_frame::Kind::Send(SendRequest {
            to_user_id: to_user_id.to_owned(),
            client_msg_id,
            body: Some(e2e::text(&text)),
            ..Default::default()
        }),
    )
}

pub async fn send(sink: &mut Sink, message: WsMessage) -> anyhow::Result<()> {
    Ok(sink.send(message).await?)
}
