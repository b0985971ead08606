//! Frames as a client's socket delivers them: in pieces, several in one
//! write, with pings between, and after quiet spells in which the edge has
//! dropped the connection's frame reader and its buffer (after a second of
//! quiet; see `edge::ws::transport::ReadSide`). Whatever the timing, every
//! byte reaches the frame it belongs to. Written by hand on a raw socket,
//! so the test decides where each write ends.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use e2e::{Mode, System};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longer than the edge's quiet time, so the reader goes between writes.
const QUIET: Duration = Duration::from_millis(1_500);

/// A client frame as RFC 6455 has it: masked, minimal length.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=65_535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn ping_request(id: u64, padding: usize) -> Vec<u8> {
    let mut text = format!(r#"{{"id": {id}, "ping": {{"clientTsMs": 1}}}}"#).into_bytes();
    // Trailing white space is still one JSON value: a long frame.
    text.resize(text.len() + padding, b' ');
    frame(0x1, &text)
}

struct Raw {
    tcp: TcpStream,
    read: Vec<u8>,
}

impl Raw {
    async fn connect(system: &System, token: &str) -> anyhow::Result<Self> {
        let mut tcp = TcpStream::connect(system.edge_addr).await?;
        tcp.set_nodelay(true)?;
        let request = format!(
            "GET /v1/ws?token={token} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            system.edge_addr
        );
        tcp.write_all(request.as_bytes()).await?;
        let mut raw = Self {
            tcp,
            read: Vec::new(),
        };
        let end = loop {
            if let Some(end) = raw.read.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            raw.fill().await?;
        };
        let head = String::from_utf8_lossy(&raw.read[..end]).into_owned();
        ensure!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
        raw.read.drain(..end);
        let welcome = raw.next_json().await?;
        ensure!(welcome.get("welcome").is_some(), "{welcome}");
        Ok(raw)
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), self.tcp.read(&mut chunk))
            .await
            .context("no frame from the edge")??;
        ensure!(n > 0, "the edge closed the connection");
        self.read.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// The next server frame (servers do not mask): opcode and payload.
    /// The edge's own pings are skipped, not answered: a pong written now
    /// could land inside a frame the test has only half written (the
    /// frames the test sends keep the connection alive).
    async fn next_frame(&mut self) -> anyhow::Result<(u8, Vec<u8>)> {
        loop {
            let (opcode, payload) = self.next_any().await?;
            if opcode != 0x9 {
                return Ok((opcode, payload));
            }
        }
    }

    async fn next_any(&mut self) -> anyhow::Result<(u8, Vec<u8>)> {
        loop {
            if self.read.len() >= 2 {
                let (opcode, code) = (self.read[0] & 0x0f, self.read[1] & 0x7f);
                let (start, len) = match code {
                    126 if self.read.len() >= 4 => {
                        (4, u16::from_be_bytes([self.read[2], self.read[3]]) as usize)
                    }
                    127 if self.read.len() >= 10 => (
                        10,
                        u64::from_be_bytes(self.read[2..10].try_into()?) as usize,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (2, n as usize),
                };
                if start != usize::MAX && self.read.len() >= start + len {
                    let payload = self.read[start..start + len].to_vec();
                    self.read.drain(..start + len);
                    return Ok((opcode, payload));
                }
            }
            self.fill().await?;
        }
    }

    /// The next text frame, as JSON (control frames are returned by
    /// [`Raw::next_frame`] only).
    async fn next_json(&mut self) -> anyhow::Result<Value> {
        match self.next_frame().await? {
            (0x1, payload) => Ok(serde_json::from_slice(&payload)?),
            (opcode, payload) => bail!("expected a text frame, got {opcode:#x}: {payload:?}"),
        }
    }

    async fn expect_pong(&mut self, id: u64) -> anyhow::Result<()> {
        let reply = self.next_json().await?;
        let to = reply["replyTo"].to_string().trim_matches('"').to_owned();
        ensure!(to == id.to_string(), "expected the reply to {id}: {reply}");
        ensure!(reply.get("pong").is_some(), "expected a pong: {reply}");
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.tcp.write_all(bytes).await?;
        Ok(())
    }
}

#[tokio::test]
async fn frames_in_pieces_and_after_quiet_spells_arrive_whole() -> anyhow::Result<()> {
    let (system, [alice]) = System::with_users(Mode::InProcess, ["alice"]).await?;
    let mut raw = Raw::connect(&system, &alice.token).await?;

    // The first frame after a quiet spell, its header cut after one byte
    // and again inside the mask, each piece after a quiet spell.
    tokio::time::sleep(QUIET).await;
    let one = ping_request(1, 0);
    raw.write(&one[..1]).await?;
    tokio::time::sleep(QUIET).await;
    raw.write(&one[1..4]).await?;
    tokio::time::sleep(QUIET).await;
    raw.write(&one[4..]).await?;
    raw.expect_pong(1).await?;

    // A ping, a whole frame and the start of the next in one write; the
    // rest after a quiet spell. The edge answers the ping with its payload.
    tokio::time::sleep(QUIET).await;
    let mut burst = frame(0x9, b"hello");
    burst.extend(ping_request(2, 0));
    let three = ping_request(3, 0);
    burst.extend_from_slice(&three[..3]);
    raw.write(&burst).await?;
    let (opcode, payload) = raw.next_frame().await?;
    ensure!(
        opcode == 0xA && payload == b"hello",
        "pong {opcode:#x} {payload:?}"
    );
    raw.expect_pong(2).await?;
    tokio::time::sleep(QUIET).await;
    raw.write(&three[3..]).await?;
    raw.expect_pong(3).await?;

    // Long frames (a 16-bit length, a payload past the reader's first
    // buffer), one cut in its payload across a quiet spell.
    let four = ping_request(4, 300);
    let five = ping_request(5, 20_000);
    raw.write(&four).await?;
    raw.write(&five[..9_000]).await?;
    raw.expect_pong(4).await?;
    tokio::time::sleep(QUIET).await;
    raw.write(&five[9_000..]).await?;
    raw.expect_pong(5).await?;

    // A fragmented message whose fragments straddle a quiet spell.
    tokio::time::sleep(QUIET).await;
    let text = br#"{"id": 6, "ping": {"clientTsMs": 1}}"#;
    let mut first = frame(0x1, &text[..10]);
    first[0] &= 0x7f; // not the final fragment
    raw.write(&first).await?;
    tokio::time::sleep(QUIET).await;
    raw.write(&frame(0x0, &text[10..])).await?;
    raw.expect_pong(6).await?;

    system.stop().await;
    Ok(())
}
