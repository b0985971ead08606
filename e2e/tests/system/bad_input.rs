//! Bad input on the WebSocket and the HTTP API gets a clear error, fails
//! alone, and leaves the server and other clients unaffected.

use std::time::Duration;

use e2e::{Client, Format, Mode, System, User, text_of};
use serde_json::json;
use shared::proto::edge::server_frame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

async fn expect_http_status(url: &str, status: u16) {
    match tokio_tungstenite::connect_async(url).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), status, "{url}")
        }
        Err(e) => panic!("expected HTTP {status} for {url}, got {e}"),
        Ok(_) => panic!("expected HTTP {status} for {url}, got a WebSocket"),
    }
}

/// A token signed by the real key but already expired, and one signed by a
/// key the auth service never had.
async fn bad_tokens(system: &System, user: &User) -> anyhow::Result<(String, String)> {
    let pool = shared::db::connect(&system.auth_db_url(), 1, &auth::store::MIGRATOR).await?;
    let keys = auth::keys::KeySet::load_or_generate(&pool).await?;
    let now = shared::ids::now_ms() / 1000;
    let claims = |exp| auth::Claims {
        sub: user.user_id.clone(),
        did: user.device_id.clone(),
        iss: "natter".into(),
        iat: now - 7200,
        iat_ms: 0,
        exp,
    };
    let expired = keys.sign(&claims(now - 3600))?;
    // A fresh database generates a different key with its own kid.
    let other_dir = tempfile::tempdir()?;
    let other = shared::db::connect(
        &shared::db::sqlite_url(&other_dir.path().join("a.db")),
        1,
        &auth::store::MIGRATOR,
    )
    .await?;
    let forged = auth::keys::KeySet::load_or_generate(&other)
        .await?
        .sign(&claims(now + 3600))?;
    Ok((expired, forged))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshake_refuses_bad_tokens() -> anyhow::Result<()> {
    let (system, [alice]) = System::with_users(Mode::InProcess, ["alice"]).await?;
    let api = system.api();
    let ws = system.ws_url();
    expect_http_status(&ws, 401).await;
    expect_http_status(&format!("{ws}?token="), 401).await;
    expect_http_status(&format!("{ws}?token=not.a.jwt"), 401).await;
    let (expired, forged) = bad_tokens(&system, &alice).await?;
    expect_http_status(&format!("{ws}?token={expired}"), 401).await;
    expect_http_status(&format!("{ws}?token={forged}"), 401).await;
    // A tampered payload breaks the signature.
    let mut parts: Vec<String> = alice.token.split('.').map(String::from).collect();
    parts[1] = parts[1].chars().rev().collect();
    expect_http_status(&format!("{ws}?token={}", parts.join(".")), 401).await;
    expect_http_status(&format!("{ws}?token={}&format=xml", alice.token), 400).await;

    // The HTTP API says why.
    let (status, body) = api.get("/v1/conversations", None).await?;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(body["error"]["message"], "missing access token");
    let (status, body) = api.get("/v1/conversations", Some(&expired)).await?;
    assert_eq!(
        (status.as_u16(), body["error"]["message"].as_str()),
        (401, Some("access token expired"))
    );
    let (status, body) = api.get("/v1/conversations", Some(&forged)).await?;
    assert_eq!(
        (status.as_u16(), body["error"]["message"].as_str()),
        (401, Some("invalid access token"))
    );
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_the_connection_survives() -> anyhow::Result<()> {
    let (system, [alice, bob, carol]) =
        System::with_users(Mode::InProcess, ["alice", "bob", "carol"]).await?;
    // carol is connected throughout and must not notice anything.
    let mut c = Client::connect(&system.ws_url(), &carol, Format::Json).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Binary).await?;
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;

    let error = |frame: shared::proto::edge::ServerFrame| match frame.kind {
        Some(server_frame::Kind::Error(e)) => (frame.reply_to, e.code, e.message),
        other => panic!("expected an error frame, got {other:?}"),
    };
    a.send_raw(WsMessage::text("{this is not json")).await?;
    let (_, code, message) = error(a.next().await?);
    assert_eq!(code, "bad_request");
    assert!(message.starts_with("malformed JSON frame"), "{message}");

    a.send_raw(WsMessage::text(r#"{"id": 9, "teleport": {}}"#))
        .await?;
    let (reply_to, _, message) = error(a.next().await?);
    assert_eq!(reply_to, 9);
    assert!(message.contains("unknown field"), "{message}");

    a.send_raw(WsMessage::text(r#"{"id": 10}"#)).await?;
    assert_eq!(
        error(a.next().await?),
        (10, "bad_request".into(), "unknown frame type".into())
    );

    a.send_raw(WsMessage::binary(vec![0x0a, 0xff, 0xff, 0xff]))
        .await?;
    let (_, _, message) = error(a.next().await?);
    assert!(message.starts_with("malformed protobuf frame"), "{message}");
    // The edge now answers in protobuf, the format of the last frame.
    a.format = Format::Binary;
    // Field 99 (a kind from a future protocol version) alone: id 11, no known kind.
    a.send_raw(WsMessage::binary(vec![0x08, 11, 0x98, 0x06, 0x01]))
        .await?;
    assert_eq!(
        error(a.next().await?),
        (11, "bad_request".into(), "unknown frame type".into())
    );

    // Sends that break the rules.
    let send = |to: &str, id: &str, body: serde_json::Value| {
        WsMessage::text(
            json!({"id": 20, "send": {"toUserId": to, "clientMsgId": id, "body": body}})
                .to_string(),
        )
    };
    a.format = Format::Json;
    for (frame, code, needle) in [
        (
            send(&bob.user_id, "e1", json!({})),
            "bad_request",
            "message body is empty",
        ),
        (
            send(&bob.user_id, "e2", json!({"text": {"text": "   "}})),
            "bad_request",
            "message text is empty",
        ),
        (
            send(
                &bob.user_id,
                "e3",
                json!({"text": {"text": "字".repeat(4001)}}),
            ),
            "too_large",
            "longer than 4000",
        ),
        (
            send(&bob.user_id, "", json!({"text": {"text": "x"}})),
            "bad_request",
            "client_msg_id",
        ),
        (
            send("no-such-user", "e4", json!({"text": {"text": "x"}})),
            "not_found",
            "no such user",
        ),
        (
            send("a.b", "e5", json!({"text": {"text": "x"}})),
            "bad_request",
            "malformed user id",
        ),
        (
            send(&alice.user_id, "e6", json!({"text": {"text": "x"}})),
            "bad_request",
            "yourself",
        ),
    ] {
        a.send_raw(frame).await?;
        let (reply_to, got, message) = error(a.next().await?);
        assert_eq!((reply_to, got.as_str()), (20, code), "{message}");
        assert!(
            message.contains(needle),
            "{message} should mention {needle}"
        );
    }
    // Someone else's conversation.
    let theirs = shared::ids::direct_conversation(&bob.user_id, &carol.user_id);
    a.send_raw(WsMessage::text(
        json!({"id": 21, "send": {"conversationId": theirs, "clientMsgId": "e7", "body": {"text": {"text": "x"}}}}).to_string(),
    ))
    .await?;
    assert_eq!(error(a.next().await?).1, "forbidden");
    // Acking a cursor that was never delivered.
    let id = a.ack(1_000_000).await?;
    assert_eq!(a.error_of(id).await?.code, "bad_request");

    // The connection still works, and so does everyone else's.
    let id = a.ping().await?;
    assert!(matches!(
        a.reply(id).await?.kind,
        Some(server_frame::Kind::Pong(_))
    ));
    assert_eq!(a.send_acked(&bob, "ok-1", "still here").await?.seq, 1);
    let got = b.messages(1).await?;
    assert_eq!(text_of(&got[0].1), "still here");
    let id = c.ping().await?;
    assert!(matches!(
        c.reply(id).await?.kind,
        Some(server_frame::Kind::Pong(_))
    ));
    let frames = c.drain(Duration::from_millis(200)).await?;
    assert!(frames.is_empty(), "carol saw {frames:?}");
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_close_only_that_connection() -> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;

    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    let limit = a.welcome.max_frame_bytes as usize;
    a.send_raw(WsMessage::text("x".repeat(limit + 1))).await?;
    let close = a.closed().await?.expect("a close frame");
    assert_eq!(u16::from(close.code), 1009);
    assert_eq!(close.reason.as_str(), "frame too large");

    // The same through fragments that are each small.
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    let chunk = "y".repeat(limit / 4);
    for i in 0..5 {
        let fragment = tungstenite::protocol::frame::Frame::message(
            chunk.clone().into_bytes(),
            if i == 0 {
                tungstenite::protocol::frame::coding::OpCode::Data(
                    tungstenite::protocol::frame::coding::Data::Text,
                )
            } else {
                tungstenite::protocol::frame::coding::OpCode::Data(
                    tungstenite::protocol::frame::coding::Data::Continue,
                )
            },
            false,
        );
        if a.send_raw(WsMessage::Frame(fragment)).await.is_err() {
            break;
        }
    }
    let close = a.closed().await?.expect("a close frame");
    assert_eq!(u16::from(close.code), 1009);

    // bob is unaffected and alice can reconnect and chat.
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    a.send_acked(&bob, "after", "after the big one").await?;
    assert_eq!(text_of(&b.messages(1).await?[0].1), "after the big one");
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_rejects_bad_input_clearly() -> anyhow::Result<()> {
    let (system, [alice, bob, carol]) =
        System::with_users(Mode::InProcess, ["alice", "bob", "carol"]).await?;
    let api = system.api();

    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "/v1/auth/register",
            "{nope".into(),
            400,
            "malformed JSON body",
        ),
        (
            "/v1/auth/register",
            json!({"username": "dave", "password": "password1", "admin": true}).to_string(),
            400,
            "unknown field",
        ),
        (
            "/v1/auth/register",
            json!({"username": "x", "password": "password1"}).to_string(),
            400,
            "username must be",
        ),
        (
            "/v1/auth/register",
            json!({"username": "dave", "password": "short"}).to_string(),
            400,
            "password must be",
        ),
        (
            "/v1/auth/register",
            json!({"username": "alice", "password": "password1"}).to_string(),
            409,
            "username is taken",
        ),
        (
            "/v1/auth/register",
            json!({"username": "ALICE", "password": "password1"}).to_string(),
            409,
            "username is taken",
        ),
        (
            "/v1/auth/register",
            json!({"username": "erin", "password": "password1", "nickname": "字".repeat(65)})
                .to_string(),
            400,
            "nickname",
        ),
        (
            "/v1/auth/login",
            json!({"username": "alice", "password": "wrong-password"}).to_string(),
            401,
            "invalid username or password",
        ),
        (
            "/v1/auth/login",
            json!({"username": "nobody", "password": "password1"}).to_string(),
            401,
            "invalid username or password",
        ),
        ("/v1/auth/register", "x".repeat(70_000), 413, ""),
    ];
    for (path, body, status, needle) in cases {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", api.base()))
            .body(body.clone())
            .send()
            .await?;
        assert_eq!(
            response.status().as_u16(),
            status,
            "{path} {}",
            &body[..body.len().min(80)]
        );
        let text = response.text().await?;
        assert!(text.contains(needle), "{text} should mention {needle}");
    }
    // A Chinese nickname is fine.
    let (status, _) = api
        .post(
            "/v1/auth/register",
            None,
            json!({"username": "zhang", "password": "密码密码密码密码", "nickname": "张三"})
                .to_string(),
        )
        .await?;
    assert_eq!(status, 201);
    api.login("zhang", "密码密码密码密码").await?;

    // History is for participants only.
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    let id = a.send_text(&bob, "m1", "private").await?;
    let conversation = a.ack_of(id).await?.conversation_id;
    let (status, body) = api.history(&carol, &conversation, "").await?;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    for bad in ["g:nothing", "d:x:y", "random"] {
        let (status, _) = api.history(&carol, bad, "").await?;
        assert_eq!(status.as_u16(), 403, "{bad}");
    }
    let (status, body) = api.history(&bob, &conversation, "limit=100000").await?;
    assert_eq!(status.as_u16(), 400, "{body}");
    let (status, body) = api.history(&bob, &conversation, "before_seq=abc").await?;
    assert_eq!(status.as_u16(), 400, "{body}");
    let (status, body) = api.history(&bob, &conversation, "").await?;
    assert_eq!(status.as_u16(), 200);
    assert_eq!(body["messages"][0]["body"]["text"]["text"], "private");
    let (status, _) = api.get("/v1/nothing-here", None).await?;
    assert_eq!(status.as_u16(), 404);
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_closed_after_the_idle_timeout() -> anyhow::Result<()> {
    use fastwebsockets::{OpCode, handshake};
    use http_body_util::Empty;
    use hyper::body::Bytes;

    let system = System::start_with(
        Mode::InProcess,
        e2e::Settings {
            idle_timeout_secs: 2,
            ..Default::default()
        },
    )
    .await?;
    let api = system.api();
    let alice = api.user("alice").await?;
    let bob = api.user("bob").await?;
    api.befriend(&alice, &bob).await?;
    // alice's client reads frames but never answers the edge's pings
    // (fastwebsockets with auto-pong off); bob keeps talking.
    let started = std::time::Instant::now();
    let stream = tokio::net::TcpStream::connect(system.edge_addr).await?;
    let request = hyper::Request::builder()
        .uri(format!("/v1/ws?token={}", alice.token))
        .header("Host", system.edge_addr.to_string())
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "upgrade")
        .header("Sec-WebSocket-Key", handshake::generate_key())
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())?;
    let (mut quiet, _) =
        handshake::client(&hyper_util::rt::TokioExecutor::new(), request, stream).await?;
    quiet.set_auto_pong(false);
    quiet.set_auto_close(false);
    let mut chatty = Client::connect(&system.ws_url(), &bob, Format::Json).await?;
    let mut pings = 0;
    let close = loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), quiet.read_frame()).await??;
        match frame.opcode {
            OpCode::Ping => pings += 1,
            OpCode::Close => break frame.payload.to_vec(),
            _ => {}
        }
        let id = chatty.ping().await?;
        chatty.reply(id).await?;
    };
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(pings >= 1, "the edge pings");
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 4000);
    assert_eq!(&close[2..], b"idle timeout");
    // bob, who answers pings (tungstenite does), is still connected.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let id = chatty.ping().await?;
        chatty.reply(id).await?;
    }
    let id = chatty.ping().await?;
    assert!(matches!(
        chatty.reply(id).await?.kind,
        Some(server_frame::Kind::Pong(_))
    ));
    system.stop().await;
    Ok(())
}

/// A raw NATS connection as `user`, logged in with its nkey by hand: it can
/// send what no client library would, such as a lone CR in a header value.
async fn raw_nats(system: &System, user: &str) -> anyhow::Result<tokio::net::TcpStream> {
    use base64::Engine as _;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let seed = std::fs::read_to_string(system.keys.seed_file(user))?;
    let pair = nkeys::KeyPair::from_seed(seed.trim())?;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", system.nats.port())).await?;
    let mut lines = BufReader::new(&mut stream);
    let mut info = String::new();
    lines.read_line(&mut info).await?;
    let info: serde_json::Value = serde_json::from_str(info.trim_start_matches("INFO "))?;
    let nonce = info["nonce"].as_str().unwrap_or_default();
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.sign(nonce.as_bytes())?);
    let connect = json!({
        "verbose": false, "pedantic": false, "headers": true, "protocol": 1,
        "nkey": pair.public_key(), "sig": sig,
    });
    stream
        .write_all(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())
        .await?;
    let mut lines = BufReader::new(&mut stream);
    let mut answer = String::new();
    lines.read_line(&mut answer).await?;
    anyhow::ensure!(answer.starts_with("PONG"), "login as {user}: {answer}");
    Ok(stream)
}

/// A header value with a lone CR (any publisher can send one) breaks no
/// subscriber: async-nats before 0.52 panicked in its connection task on
/// it, and the service or edge that subscribed stopped hearing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_cr_in_a_header_breaks_no_subscriber() -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (system, [alice, bob]) = System::with_users(Mode::Split, ["alice", "bob"]).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;
    let mut raw = raw_nats(&system, "natter").await?;
    let header = "NATS/1.0\r\nNatter-User-Id: a\rb\r\nX-Bad: c\rd\r\n\r\n";
    let payload = "{}";
    let mut out = String::new();
    for subject in [
        shared::subject::call::MESSAGE_HISTORY.to_owned(),
        shared::subject::call::AUTH_KEYS.to_owned(),
        shared::subject::push_entry(&bob.user_id),
        shared::subject::push_signal(&bob.user_id),
        shared::subject::event::FRIEND_ADDED.to_owned(),
    ] {
        out.push_str(&format!(
            "HPUB {subject} {} {}\r\n{header}{payload}\r\n",
            header.len(),
            header.len() + payload.len()
        ));
    }
    out.push_str("PING\r\n");
    raw.write_all(out.as_bytes()).await?;
    let mut pong = String::new();
    BufReader::new(&mut raw).read_line(&mut pong).await?;
    assert!(pong.starts_with("PONG"), "{pong}");

    // The messages service, the edge and auth still work: a message goes
    // through live, the history answers, and a new login succeeds.
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    let ack = a.send_acked(&bob, "after-cr", "还活着").await?;
    assert_eq!(b.messages(1).await?[0].1.id, ack.message_id);
    let (status, body) = system
        .api()
        .history(&bob, &ack.conversation_id, "limit=5")
        .await?;
    assert_eq!(status, 200, "{body}");
    system.api().login("bob", &bob.password).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_message_that_is_not_utf8_closes_with_1007() -> anyhow::Result<()> {
    use tungstenite::protocol::frame::Frame as RawFrame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;
    let bad = b"{\"id\": 1, \"ping\": {\"clientTsMs\": \"\xff\xfe\"}}".to_vec();

    // Whole, and split over two fragments (each half checked only once
    // reassembled).
    let whole = vec![RawFrame::message(
        bad.clone(),
        OpCode::Data(Data::Text),
        true,
    )];
    let (head, tail) = bad.split_at(10);
    let split = vec![
        RawFrame::message(head.to_vec(), OpCode::Data(Data::Text), false),
        RawFrame::message(tail.to_vec(), OpCode::Data(Data::Continue), true),
    ];
    for frames in [whole, split] {
        let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
        for frame in frames {
            a.send_raw(WsMessage::Frame(frame)).await?;
        }
        let close = a.closed().await?.expect("a close frame");
        assert_eq!(u16::from(close.code), 1007);
        assert_eq!(close.reason.as_str(), "text message is not UTF-8");
    }
    // bob noticed nothing, and alice reconnects and chats.
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    a.send_acked(&bob, "fine", "fine again").await?;
    assert_eq!(text_of(&b.messages(1).await?[0].1), "fine again");
    system.stop().await;
    Ok(())
}
