//! The floor under the edge's memory per idle connection: the crates the
//! edge is built on (tokio, axum, hyper, fastwebsockets), serving WebSockets
//! that only greet, answer a resume with `caughtUp`, and wait for the next
//! frame. Run as its own process (`natter-bench ws-floor`, hidden), driven
//! by the same idle clients as the edge; what natter adds per connection
//! is the edge's figure minus this one.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use axum::response::IntoResponse;
use fastwebsockets::upgrade::IncomingUpgrade;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use serde_json::{Value, json};
use shared::proto::edge::{CaughtUp, ServerFrame, Welcome, server_frame};

use crate::idle::{Helper, open_idle, until_stdin_closes};
use crate::report::round;
use crate::target::rss_bytes;

/// `natter-bench ws-floor`: serves on a free loopback port, prints the
/// address, and runs until its stdin closes (or ten minutes pass).
pub async fn serve() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    println!("{}", listener.local_addr()?);
    let app = axum::Router::new().route("/v1/ws", axum::routing::get(upgrade));
    tokio::select! {
        served = axum::serve(listener, app) => served?,
        _ = until_stdin_closes() => {}
    }
    Ok(())
}

async fn upgrade(upgrade: IncomingUpgrade) -> axum::response::Response {
    match upgrade.upgrade() {
        Ok((response, ws)) => {
            tokio::spawn(async move {
                if let Ok(ws) = ws.await {
                    hold(ws).await;
                }
            });
            response.into_response()
        }
        Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn hold(mut ws: WebSocket<TokioIo<Upgraded>>) {
    ws.set_auto_pong(true);
    let frame = |kind| {
        let bytes = ServerFrame {
            reply_to: 0,
            kind: Some(kind),
        }
        .encode_to_vec();
        Frame::binary(Payload::Owned(bytes))
    };
    if ws
        .write_frame(frame(server_frame::Kind::Welcome(Welcome::default())))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let opcode = match ws.read_frame().await {
            Ok(frame) => frame.opcode,
            Err(_) => return,
        };
        match opcode {
            OpCode::Close => return,
            OpCode::Binary | OpCode::Text => {
                let caught_up = frame(server_frame::Kind::CaughtUp(CaughtUp::default()));
                if ws.write_frame(caught_up).await.is_err() {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// Measures the floor with `n` idle connections (one process's worth):
/// the server's RSS growth per connection.
pub async fn measure(n: usize) -> anyhow::Result<Value> {
    let mut server = Helper::start(&["ws-floor"], &[])?;
    let pid = server.pid().context("ws-floor pid")?;
    let line = server
        .line(Duration::from_secs(10))
        .await
        .context("the ws-floor server")?;
    let addr: SocketAddr = line.trim().parse()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_bytes(pid);
    // Sources apart from the edges' (127.0.x.y), whose ports may still be
    // in TIME_WAIT.
    let tokens = ["floor".to_owned()];
    let (live, _, _) = open_idle(addr, &tokens, n, Ipv4Addr::new(127, 1, 0, 10)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_bytes(pid);
    drop(live);
    server.stop().await;
    let per_connection = match (before, after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / n as f64),
        _ => None,
    };
    println!(
        "  floor: a bare tokio + axum + hyper + fastwebsockets server holding {n} such connections: {} per connection",
        per_connection.map_or("?".into(), |p| format!("{:.1} KB", p / 1024.0)),
    );
    Ok(json!({
        "connections": n,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "rss_per_connection_bytes": per_connection.map(round),
    }))
}
