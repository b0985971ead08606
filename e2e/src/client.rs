//! A WebSocket client of the edge (tokio-tungstenite: an independent
//! implementation of the protocol), speaking JSON text or protobuf binary frames.

use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use shared::proto::delivery::{Push, Signal, inbox_entry};
use shared::proto::edge::{
    ClientFrame, CursorAck, Ping, Resume, ServerFrame, Welcome, client_frame, server_frame,
};
use shared::proto::message::{Message, SendAck, SendRequest};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::User;

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Binary,
}

pub struct Client {
    ws: Ws,
    pub format: Format,
    next_id: u64,
    pub welcome: Welcome,
    /// Frames read while waiting for something else.
    backlog: std::collections::VecDeque<ServerFrame>,
    /// Signals (presence, typing) read so far: kept apart, so checks about
    /// replies and pushes are not disturbed by them.
    signals: std::collections::VecDeque<Signal>,
}

/// How long a test waits for one frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(15);

impl Client {
    /// Connects as `user` and reads the welcome frame.
    pub async fn connect(ws_url: &str, user: &User, format: Format) -> anyhow::Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(Self::url(ws_url, user, format)).await?;
        Self::greeted(ws, format).await
    }

    /// [`Client::connect`] over a socket whose receive buffer is `bytes`
    /// (the kernel's autotuning off): a client that stops reading fills it
    /// soon, as one on a slow link would.
    pub async fn connect_with_receive_buffer(
        ws_url: &str,
        user: &User,
        format: Format,
        bytes: u32,
    ) -> anyhow::Result<Self> {
        let url = Self::url(ws_url, user, format);
        let authority = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .context("a ws:// URL")?;
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(bytes)?;
        let tcp = socket.connect(authority.parse()?).await?;
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)).await?;
        Self::greeted(ws, format).await
    }

    fn url(ws_url: &str, user: &User, format: Format) -> String {
        let query = match format {
            Format::Json => "",
            Format::Binary => "&format=binary",
        };
        format!("{ws_url}?token={}{query}", user.token)
    }

    /// Reads the welcome frame.
    async fn greeted(ws: Ws, format: Format) -> anyhow::Result<Self> {
        let mut client = Self {
            ws,
            format,
            next_id: 0,
            welcome: Welcome::default(),
            backlog: Default::default(),
            signals: Default::default(),
        };
        match client.next().await?.kind {
            Some(server_frame::Kind::Welcome(welcome)) => client.welcome = welcome,
            other => bail!("expected welcome, got {other:?}"),
        }
        Ok(client)
    }

    /// Connects, resumes from the start of the inbox and waits until caught up.
    pub async fn connect_live(ws_url: &str, user: &User, format: Format) -> anyhow::Result<Self> {
        let mut client = Self::connect(ws_url, user, format).await?;
        client.resume(0).await?;
        client.caught_up().await?;
        Ok(client)
    }

    /// Fails if a push arrives within 300 ms.
    pub async fn expect_no_more_pushes(&mut self) -> anyhow::Result<()> {
        let frames = self.drain(Duration::from_millis(300)).await?;
        anyhow::ensure!(crate::no_pushes(&frames), "unexpected pushes: {frames:?}");
        Ok(())
    }

    /// Sends a frame and returns its id.
    pub async fn send_frame(&mut self, kind: client_frame::Kind) -> anyhow::Result<u64> {
        self.next_id += 1;
        let frame = ClientFrame {
            id: self.next_id,
            kind: Some(kind),
        };
        let message = match self.format {
            Format::Json => WsMessage::text(serde_json::to_string(&frame)?),
            Format::Binary => WsMessage::binary(frame.encode_to_vec()),
        };
        self.ws.send(message).await?;
        Ok(self.next_id)
    }

    /// Sends a raw WebSocket message (for bad-input tests).
    pub async fn send_raw(&mut self, message: WsMessage) -> anyhow::Result<()> {
        Ok(self.ws.send(message).await?)
    }

    pub async fn send_text(
        &mut self,
        to: &User,
        client_msg_id: &str,
        text: &str,
    ) -> anyhow::Result<u64> {
        self.send_frame(client_frame::Kind::Send(SendRequest {
            to_user_id: to.user_id.clone(),
            client_msg_id: client_msg_id.into(),
            body: Some(crate::text(text)),
            ..Default::default()
        }))
        .await
    }

    /// Sends a text to a conversation (a group's) and returns the frame id.
    pub async fn send_to(
        &mut self,
        conversation_id: &str,
        client_msg_id: &str,
        text: &str,
    ) -> anyhow::Result<u64> {
        self.send_frame(client_frame::Kind::Send(SendRequest {
            conversation_id: conversation_id.into(),
            client_msg_id: client_msg_id.into(),
            body: Some(crate::text(text)),
            ..Default::default()
        }))
        .await
    }

    /// Sends a text to a conversation and waits for its ack.
    pub async fn post(
        &mut self,
        conversation_id: &str,
        client_msg_id: &str,
        text: &str,
    ) -> anyhow::Result<SendAck> {
        let id = self.send_to(conversation_id, client_msg_id, text).await?;
        self.ack_of(id).await
    }

    /// Says "typing" in a conversation; returns the frame id.
    pub async fn typing(&mut self, conversation_id: &str) -> anyhow::Result<u64> {
        self.send_frame(client_frame::Kind::Typing(
            shared::proto::message::TypingRequest {
                conversation_id: conversation_id.into(),
            },
        ))
        .await
    }

    /// Sends any body (with an optional reply) and returns the frame id.
    pub async fn send_body(
        &mut self,
        to: &User,
        client_msg_id: &str,
        body: shared::proto::message::MessageBody,
        reply_to_seq: u64,
    ) -> anyhow::Result<u64> {
        self.send_frame(client_frame::Kind::Send(SendRequest {
            to_user_id: to.user_id.clone(),
            client_msg_id: client_msg_id.into(),
            body: Some(body),
            reply_to_seq,
            ..Default::default()
        }))
        .await
    }

    /// The next inbox entry about conversations that is not a message (read
    /// position, recall, settings, deletion); skips social notices.
    pub async fn next_notice(&mut self) -> anyhow::Result<inbox_entry::Event> {
        loop {
            let push = self.next_push().await?;
            match push.entry.and_then(|e| e.event) {
                Some(inbox_entry::Event::Message(_) | inbox_entry::Event::Social(_)) | None => {
                    continue;
                }
                Some(other) => return Ok(other),
            }
        }
    }

    /// Sends a text and waits for its ack.
    pub async fn send_acked(
        &mut self,
        to: &User,
        client_msg_id: &str,
        text: &str,
    ) -> anyhow::Result<SendAck> {
        let id = self.send_text(to, client_msg_id, text).await?;
        self.ack_of(id).await
    }

    pub async fn resume(&mut self, cursor: u64) -> anyhow::Result<u64> {
        self.send_frame(client_frame::Kind::Resume(Resume { cursor }))
            .await
    }

    pub async fn ack(&mut self, cursor: u64) -> anyhow::Result<u64> {
        self.send_frame(client_frame::Kind::Ack(CursorAck { cursor }))
            .await
    }

    pub async fn ping(&mut self) -> anyhow::Result<u64> {
        self.send_frame(client_frame::Kind::Ping(Ping { client_ts_ms: 1 }))
            .await
    }

    /// The next server frame (from the backlog first), skipping WebSocket
    /// control frames; fails on close or timeout.
    pub async fn next(&mut self) -> anyhow::Result<ServerFrame> {
        if let Some(frame) = self.backlog.pop_front() {
            return Ok(frame);
        }
        self.read(FRAME_TIMEOUT).await?.context("no frame in time")
    }

    /// Reads one frame from the socket, None on timeout; signals are put
    /// aside (see [`Client::signal_where`]).
    async fn read(&mut self, timeout: Duration) -> anyhow::Result<Option<ServerFrame>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_any(left).await? {
                Some(ServerFrame {
                    kind: Some(server_frame::Kind::Signal(signal)),
                    ..
                }) => self.signals.push_back(signal),
                other => return Ok(other),
            }
        }
    }

    /// Reads one frame of any kind from the socket, None on timeout.
    async fn read_any(&mut self, timeout: Duration) -> anyhow::Result<Option<ServerFrame>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => bail!("connection ended"),
                Ok(Some(message)) => message?,
            };
            let frame = match message {
                WsMessage::Text(text) => serde_json::from_str::<ServerFrame>(text.as_str())
                    .with_context(|| format!("bad JSON frame {text}"))?,
                WsMessage::Binary(bytes) => ServerFrame::decode(bytes.as_ref())?,
                WsMessage::Close(frame) => bail!("closed: {frame:?}"),
                _ => continue,
            };
            return Ok(Some(frame));
        }
    }

    /// The next signal matching `wanted`, skipping others; other frames stay
    /// in the backlog. Fails after `timeout`.
    pub async fn signal_where(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&Signal) -> bool,
    ) -> anyhow::Result<Signal> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(signal) = self.signals.pop_front() {
                if wanted(&signal) {
                    return Ok(signal);
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                bail!("no matching signal in time");
            }
            match self.read_any(left).await? {
                Some(ServerFrame {
                    kind: Some(server_frame::Kind::Signal(signal)),
                    ..
                }) => self.signals.push_back(signal),
                Some(frame) => self.backlog.push_back(frame),
                None => {}
            }
        }
    }

    /// Signals arriving within `window`, and those read before.
    pub async fn signals_within(&mut self, window: Duration) -> anyhow::Result<Vec<Signal>> {
        while let Some(frame) = self.read(window).await? {
            self.backlog.push_back(frame);
        }
        Ok(self.signals.drain(..).collect())
    }

    /// Frames arriving within `window` (for "nothing more" checks).
    pub async fn drain(&mut self, window: Duration) -> anyhow::Result<Vec<ServerFrame>> {
        let mut frames: Vec<ServerFrame> = self.backlog.drain(..).collect();
        while let Some(frame) = self.read(window).await? {
            frames.push(frame);
        }
        Ok(frames)
    }

    /// Waits for the answer to frame `id`, keeping other frames for later.
    pub async fn reply(&mut self, id: u64) -> anyhow::Result<ServerFrame> {
        if let Some(i) = self.backlog.iter().position(|f| f.reply_to == id) {
            return Ok(self.backlog.remove(i).expect("present"));
        }
        loop {
            let frame = self
                .read(FRAME_TIMEOUT)
                .await?
                .with_context(|| format!("no reply to {id}"))?;
            if frame.reply_to == id {
                return Ok(frame);
            }
            self.backlog.push_back(frame);
        }
    }

    /// The ack answering send `id`, or the error as Err.
    pub async fn ack_of(&mut self, id: u64) -> anyhow::Result<SendAck> {
        match self.reply(id).await?.kind {
            Some(server_frame::Kind::Ack(ack)) => Ok(ack),
            other => bail!("expected ack for {id}, got {other:?}"),
        }
    }

    /// The error answering frame `id`.
    pub async fn error_of(&mut self, id: u64) -> anyhow::Result<shared::proto::common::Error> {
        match self.reply(id).await?.kind {
            Some(server_frame::Kind::Error(error)) => Ok(error),
            other => bail!("expected an error for {id}, got {other:?}"),
        }
    }

    /// The next push, keeping other frames (acks, errors) in the backlog.
    pub async fn next_push(&mut self) -> anyhow::Result<Push> {
        if let Some(i) = self
            .backlog
            .iter()
            .position(|f| matches!(f.kind, Some(server_frame::Kind::Push(_))))
            && let Some(server_frame::Kind::Push(push)) =
                self.backlog.remove(i).and_then(|f| f.kind)
        {
            return Ok(push);
        }
        loop {
            let frame = self.read(FRAME_TIMEOUT).await?.context("no push in time")?;
            match frame.kind {
                Some(server_frame::Kind::Push(push)) => return Ok(push),
                _ => self.backlog.push_back(frame),
            }
        }
    }

    /// The next `n` messages with their cursors, skipping other inbox
    /// entries (social notices, read positions, recalls...). Messages of
    /// large groups (`groupMessage`, no inbox entry) come with cursor 0.
    pub async fn messages(&mut self, n: usize) -> anyhow::Result<Vec<(u64, Message)>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let frame = self
                .next_where(|f| {
                    matches!(
                        f.kind,
                        Some(server_frame::Kind::Push(_) | server_frame::Kind::GroupMessage(_))
                    )
                })
                .await
                .with_context(|| format!("after {} of {n} messages", out.len()))?;
            let push = match frame.kind {
                Some(server_frame::Kind::GroupMessage(message)) => {
                    out.push((0, message));
                    continue;
                }
                Some(server_frame::Kind::Push(push)) => push,
                other => bail!("expected a message, got {other:?}"),
            };
            match push.entry.and_then(|e| e.event) {
                Some(inbox_entry::Event::Message(message)) => out.push((push.cursor, message)),
                // Social notices, read positions, recalls, settings, deletions.
                Some(_) => {}
                None => bail!("empty inbox entry at cursor {}", push.cursor),
            }
        }
        Ok(out)
    }

    /// The next frame matching `wanted`, from the backlog first; other
    /// frames stay in the backlog, in order.
    pub async fn next_where(
        &mut self,
        wanted: impl Fn(&ServerFrame) -> bool,
    ) -> anyhow::Result<ServerFrame> {
        if let Some(i) = self.backlog.iter().position(&wanted) {
            return Ok(self.backlog.remove(i).expect("present"));
        }
        loop {
            let frame = self
                .read(FRAME_TIMEOUT)
                .await?
                .context("no such frame in time")?;
            if wanted(&frame) {
                return Ok(frame);
            }
            self.backlog.push_back(frame);
        }
    }

    /// Waits for the `caught_up` frame after a resume; returns its cursor.
    /// Other frames stay in the backlog, in order.
    pub async fn caught_up(&mut self) -> anyhow::Result<u64> {
        let is_caught_up =
            |f: &ServerFrame| matches!(f.kind, Some(server_frame::Kind::CaughtUp(_)));
        if let Some(i) = self.backlog.iter().position(is_caught_up)
            && let Some(server_frame::Kind::CaughtUp(c)) =
                self.backlog.remove(i).and_then(|f| f.kind)
        {
            return Ok(c.cursor);
        }
        loop {
            let frame = self
                .read(FRAME_TIMEOUT)
                .await?
                .context("no caught_up in time")?;
            match frame.kind {
                Some(server_frame::Kind::CaughtUp(c)) => return Ok(c.cursor),
                _ => self.backlog.push_back(frame),
            }
        }
    }

    /// Reads until the server closes; returns the close frame.
    pub async fn closed(&mut self) -> anyhow::Result<Option<CloseFrame>> {
        loop {
            match tokio::time::timeout(FRAME_TIMEOUT, self.ws.next()).await {
                Err(_) => bail!("not closed in time"),
                Ok(None) => return Ok(None),
                Ok(Some(Ok(WsMessage::Close(frame)))) => return Ok(frame),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                ))) => return Ok(None),
                Ok(Some(Err(e))) => bail!("error instead of close: {e}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
