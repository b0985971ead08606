//! Limits against abuse: every one answers 429 with `Retry-After`, holds the
//! client that went over it, and leaves everyone else alone.

use std::net::IpAddr;
use std::time::Duration;

use e2e::{Api, Mode, Settings, System};
use reqwest::StatusCode;

/// The production limits (the harness lifts the login rate, as its tests
/// make many users from one address).
fn limited() -> Settings {
    Settings {
        lift_login_limits: false,
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
    let (status, body) = api
        .post(
            "/v1/auth/register",
            None,
            serde_json::json!({ "username": "carol", "password": "carol-password", "phone": "+8613800138000" })
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
