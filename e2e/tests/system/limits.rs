//! Limits against abuse: every one answers 429 with `Retry-After`, holds the
//! client that went over it, and leaves everyone else alone.

use std::net::IpAddr;
use std::time::Duration;

use e2e::{Api, Client, Format, Mode, Settings, System, User, text_of};
use reqwest::StatusCode;
use shared::proto::edge::server_frame;
use tokio_tungstenite::tungstenite;

/// The production limits (the harness lifts the login rate, as its tests
/// make many users from one address).
fn limited() -> Settings {
    Settings {
        lift_limits: false,
        ..Settings::default()
    }
}

fn from(system: &System, address: &str) -> Api {
    let local: IpAddr = address.parse().expect("an address");
    Api::from_address(system.api().base().to_owned(), local)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_waits_and_a_stranger_cannot_lock_a_user_out() -> anyhow::Result<()> {
    let (system, [alice]) =
        System::with_settings_and_users(Mode::InProcess, limited(), ["alice"]).await?;
    let attacker = from(&system, "127.0.0.2");
    for _ in 0..5 {
        let (status, body, _) = attacker.login_attempt("alice", "guess").await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    // Now the guessing address waits, even with the right password.
    let (status, body, wait) = attacker.login_attempt("alice", &alice.password).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(wait, Some(1));
    // Alice, from her own address, is not held.
    let (status, body, _) = system.api().login_attempt("alice", &alice.password).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The wait ends, and the next failure doubles it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, _) = attacker.login_attempt("alice", "guess").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, wait) = attacker.login_attempt("alice", "guess").await?;
    assert_eq!((status, wait), (StatusCode::TOO_MANY_REQUESTS, Some(2)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_from_one_address_leaves_other_logins_flowing() -> anyhow::Result<()> {
    let (system, [bob]) =
        System::with_settings_and_users(Mode::InProcess, limited(), ["bob"]).await?;
    let flooder = from(&system, "127.0.0.3");
    // 200 logins at once to a username that does not exist (each would
    // cost a full password hash), while bob logs in from elsewhere.
    let flood: Vec<_> = (0..200)
        .map(|i| {
            let flooder = flooder.clone();
            tokio::spawn(async move {
                flooder
                    .login_attempt(&format!("nobody{}", i % 7), "wrong password")
                    .await
            })
        })
        .collect();
    let (status, body, _) = system.api().login_attempt("bob", &bob.password).await?;
    assert_eq!(
        status,
        StatusCode::OK,
        "bob's login during the flood: {body}"
    );
    let mut refused = 0;
    for attempt in flood {
        let (status, body, wait) = attempt.await??;
        match status {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(wait.is_some_and(|w| w >= 1), "{body}");
                refused += 1;
            }
            other => panic!("flood answered {other}: {body}"),
        }
    }
    // At most a minute's worth got through to a hash, fewer with the
    // address's share of hash slots.
    let rate = auth::config::LoginLimits::default().per_address_per_minute;
    assert!(refused >= 200 - rate, "only {refused} of 200 refused");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_numbers_cannot_be_enumerated() -> anyhow::Result<()> {
    let (system, [alice, bob]) =
        System::with_settings_and_users(Mode::InProcess, limited(), ["alice", "bob"]).await?;
    let api = system.api();
    let code = system.phone_code("+8613800138000").await?;
    let (status, body) = api
        .post(
            "/v1/auth/register",
            None,
            serde_json::json!({ "username": "carol", "password": "carol-password", "phone": "+8613800138000", "phoneCode": code })
                .to_string(),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let search = "/v1/users/search?q=%2B8613800138000";
    let per_minute = social::Config::default().phone_searches_per_minute;
    for _ in 0..per_minute {
        let (status, found) = api.get(search, Some(&alice.token)).await?;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_eq!(found["users"].as_array().map(Vec::len), Some(1), "{found}");
    }
    let (status, refused) = api.get(search, Some(&alice.token)).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{refused}");
    assert_eq!(refused["error"]["code"], "rate_limited");
    // Searching by name is not held, nor is another user elsewhere.
    let (status, _) = api
        .get("/v1/users/search?q=car", Some(&alice.token))
        .await?;
    assert_eq!(status, StatusCode::OK);
    let (status, found) = from(&system, "127.0.0.4")
        .get(search, Some(&bob.token))
        .await?;
    assert_eq!(status, StatusCode::OK, "{found}");
    Ok(())
}

/// Connects `user`'s WebSocket, or returns the HTTP status and
/// `Retry-After` of the refusal.
async fn try_socket(system: &System, user: &User) -> Result<Client, (u16, Option<u64>)> {
    match Client::connect(&system.ws_url(), user, Format::Json).await {
        Ok(client) => Ok(client),
        Err(e) => match e.downcast::<tungstenite::Error>() {
            Ok(tungstenite::Error::Http(response)) => Err((
                response.status().as_u16(),
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok()),
            )),
            Ok(other) => panic!("websocket failed: {other}"),
            Err(other) => panic!("websocket failed: {other}"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_hold_many_sockets() -> anyhow::Result<()> {
    let (system, [alice, bob]) =
        System::with_settings_and_users(Mode::InProcess, limited(), ["alice", "bob"]).await?;
    let most = edge::config::PerUser::default().sockets;
    let mut open = Vec::new();
    for _ in 0..most {
        open.push(try_socket(&system, &alice).await.expect("under the limit"));
    }
    let refused = try_socket(&system, &alice).await.err();
    assert!(
        matches!(refused, Some((429, Some(wait))) if wait >= 1),
        "{refused:?}"
    );
    // bob is not held, and alice's open sockets still work.
    let mut b = try_socket(&system, &bob).await.expect("bob connects");
    open[0].send_acked(&bob, "still", "still here").await?;
    b.resume(0).await?;
    let texts: Vec<String> = b
        .messages(1)
        .await?
        .iter()
        .map(|(_, m)| text_of(m).to_owned())
        .collect();
    assert_eq!(texts, ["still here"]);
    // Closing one frees its place.
    open.pop().expect("one").close().await;
    let mut again = None;
    for _ in 0..50 {
        if let Ok(client) = try_socket(&system, &alice).await {
            again = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "a closed socket's place is never freed");
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_flood_sends_resumes_or_typing() -> anyhow::Result<()> {
    let (system, [alice, bob, carol]) =
        System::with_settings_and_users(Mode::InProcess, limited(), ["alice", "bob", "carol"])
            .await?;
    let limits = edge::config::PerUser::default();
    let mut a = Client::connect_live(&system.ws_url(), &alice, Format::Json).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Binary).await?;
    b.drain(Duration::from_millis(200)).await?;

    // Sends: a burst, then each refused one says how long to wait; every
    // send gets exactly one answer and bob gets exactly the accepted ones.
    let flood = limits.send_burst as usize + 40;
    let mut ids = Vec::new();
    for i in 0..flood {
        ids.push(
            a.send_text(&bob, &format!("f{i}"), &format!("flood {i}"))
                .await?,
        );
    }
    let mut accepted = Vec::new();
    let mut refused = 0;
    for (i, id) in ids.into_iter().enumerate() {
        match a.reply(id).await?.kind {
            Some(server_frame::Kind::Ack(_)) => accepted.push(format!("flood {i}")),
            Some(server_frame::Kind::Error(e)) => {
                assert_eq!(e.code, "rate_limited", "{e:?}");
                assert!(e.message.contains("retry after"), "{e:?}");
                refused += 1;
            }
            other => panic!("send {i} answered {other:?}"),
        }
    }
    assert!(refused >= 20, "only {refused} of {flood} sends refused");
    assert!(
        accepted.len() >= limits.send_burst as usize,
        "{}",
        accepted.len()
    );
    let got: Vec<String> = b
        .messages(accepted.len())
        .await?
        .iter()
        .map(|(_, m)| text_of(m).to_owned())
        .collect();
    assert_eq!(got, accepted);
    b.expect_no_more_pushes().await?;
    // The wait passes and sending works again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    a.send_acked(&bob, "later", "after the wait").await?;

    // Resumes: carol, over two sockets, asks for far more replays than the
    // burst; the rest are refused.
    let mut c1 = Client::connect(&system.ws_url(), &carol, Format::Json).await?;
    let mut c2 = Client::connect(&system.ws_url(), &carol, Format::Binary).await?;
    // One at a time (each answered before the next), so the cap on
    // replays queued per socket is not what refuses them.
    let tries = limits.resume_burst as usize + 10;
    let mut refused = 0;
    for i in 0..tries {
        let client = if i % 2 == 0 { &mut c1 } else { &mut c2 };
        let id = client.resume(0).await?;
        loop {
            let frame = client.next().await?;
            match frame.kind {
                Some(server_frame::Kind::CaughtUp(_)) => break,
                Some(server_frame::Kind::Error(e)) if frame.reply_to == id => {
                    assert_eq!(e.code, "rate_limited", "{e:?}");
                    refused += 1;
                    break;
                }
                _ => {}
            }
        }
    }
    assert!(
        (9..=10).contains(&refused),
        "{refused} of {tries} resumes refused"
    );

    // Typing: the limit is the user's, not the socket's.
    let conversation = shared::ids::direct_conversation(&carol.user_id, &alice.user_id);
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push((0, c1.typing(&conversation).await?));
        ids.push((1, c2.typing(&conversation).await?));
    }
    let mut refused = 0;
    for (which, id) in ids {
        let client = if which == 0 { &mut c1 } else { &mut c2 };
        if let Ok(Ok(e)) =
            tokio::time::timeout(Duration::from_millis(500), client.error_of(id)).await
        {
            assert_eq!(e.code, "rate_limited", "{e:?}");
            refused += 1;
        }
    }
    assert!(refused >= 4, "only {refused} of 8 typing frames refused");
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_session_cannot_guess_the_current_password() -> anyhow::Result<()> {
    let (system, [alice]) =
        System::with_settings_and_users(Mode::InProcess, limited(), ["alice"]).await?;
    let api = system.api();
    let change = |current: &str| {
        serde_json::json!({ "currentPassword": current, "newPassword": "a-new-long-password" })
            .to_string()
    };
    let free = auth::config::LoginLimits::default().free_failures;
    for i in 0..free {
        let (status, body) = api
            .post(
                "/v1/auth/password",
                Some(&alice.token),
                change(&format!("guess{i}")),
            )
            .await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let (status, body) = api
        .post(
            "/v1/auth/password",
            Some(&alice.token),
            change(&alice.password),
        )
        .await?;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right one waits: {body}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = api
        .post(
            "/v1/auth/password",
            Some(&alice.token),
            change(&alice.password),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    Ok(())
}
