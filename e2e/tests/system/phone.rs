//! Phone login: codes sent through a real (loopback) SMS gateway over the
//! signed webhook, registering and logging in with them, their limits, and
//! changing one's number.

use std::time::Duration;

use e2e::{Client, Format, Mode, Settings, System};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn post(system: &System, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let (status, body) = system
        .api()
        .post(path, token, body.to_string())
        .await
        .expect("the edge answers");
    (status.as_u16(), body)
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_log_in_with_a_code_sent_to_the_phone() -> anyhow::Result<()> {
    let system = System::start(Mode::InProcess).await?;
    let phone = "+8613912345678";

    // Asking for a code says nothing about the number: the same answer for
    // one without an account as for one with (below).
    let (status, fresh) = post(
        &system,
        "/v1/auth/phone/code",
        None,
        json!({ "phone": "+86 139 1234 5678" }),
    )
    .await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(
        fresh,
        json!({ "resendAfterSecs": 60, "expiresInSecs": 300 })
    );
    let code = system.sms.code_after(phone, 0).await?;
    assert_eq!(code.len(), 6);
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    assert_eq!(system.sms.forged(), 0, "every webhook call was signed");

    // The right code for a number without an account: register with it.
    let (status, body) = post(
        &system,
        "/v1/auth/phone/login",
        None,
        json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(
        &system,
        "/v1/auth/phone/register",
        None,
        json!({ "phone": phone, "code": code, "username": "meimei", "nickname": "韩梅梅", "deviceName": "小米手机" }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let token = body["accessToken"].as_str().unwrap_or("").to_owned();
    let (status, profile) = system.api().get("/v1/profile", Some(&token)).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(profile["nickname"], "韩梅梅");
    // A code works once.
    let (status, _) = post(
        &system,
        "/v1/auth/phone/login",
        None,
        json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(status, 401);
    // No password was set: password logins are refused like any other.
    let (status, _, _) = system.api().login_attempt("meimei", "").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Another device logs in with a new code, after the resend wait.
    let (status, body) = post(
        &system,
        "/v1/auth/phone/code",
        None,
        json!({ "phone": phone }),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert!(message(&body).contains("retry after"), "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_takes_five_tries_at_most_and_expires_with_use() -> anyhow::Result<()> {
    let system = System::start(Mode::InProcess).await?;
    let phone = "+8613700000001";
    let code = system.phone_code(phone).await?;
    let (status, _) = post(
        &system,
        "/v1/auth/phone/register",
        None,
        json!({ "phone": phone, "code": code, "username": "lilei", "password": "lilei-password" }),
    )
    .await;
    assert_eq!(status, 201);
    // The account has a password too, and it works.
    system.api().login("lilei", "lilei-password").await?;

    // Guesses at another number's code.
    let other = "+8613700000002";
    let code = system.phone_code(other).await?;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let (status, body) = post(
            &system,
            "/v1/auth/phone/login",
            None,
            json!({ "phone": other, "code": wrong }),
        )
        .await;
        assert_eq!(status, 401, "{body}");
    }
    // The five tries are spent: the right code no longer works.
    let (status, body) = post(
        &system,
        "/v1/auth/phone/login",
        None,
        json!({ "phone": other, "code": code }),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(message(&body).contains("ask for a new one"), "{body}");
    for bad in ["12345", "abcdef", "1234567", ""] {
        let (status, _) = post(
            &system,
            "/v1/auth/phone/login",
            None,
            json!({ "phone": other, "code": bad }),
        )
        .await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, _) = post(
        &system,
        "/v1/auth/phone/code",
        None,
        json!({ "phone": "13800138000" }),
    )
    .await;
    assert_eq!(status, 400, "a number without its country code");
    // A password registration cannot claim a number without its code.
    let (status, body) = post(
        &system,
        "/v1/auth/register",
        None,
        json!({ "username": "squatter", "password": "squatter-password", "phone": phone }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        &system,
        "/v1/auth/register",
        None,
        json!({ "username": "squatter", "password": "squatter-password", "phone": phone, "phoneCode": "123456" }),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_my_number_needs_its_code_and_ends_my_other_sessions() -> anyhow::Result<()> {
    let settings = Settings {
        sms_resend_secs: 1,
        ..Settings::default()
    };
    let (system, [alice, bob]) =
        System::with_settings_and_users(Mode::InProcess, settings, ["alice", "bob"]).await?;
    let api = system.api();
    let tablet = api.another_device(&alice).await?;
    let mut on_tablet = Client::connect_live(&system.ws_url(), &tablet, Format::Json).await?;
    let (taken, mine) = ("+447700900123", "+447700900456");

    // bob holds a number; alice proves it too, but it is taken.
    let code = system.phone_code(taken).await?;
    let (status, body) = post(
        &system,
        "/v1/auth/phone",
        Some(&bob.token),
        json!({ "phone": taken, "code": code }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["phone"], taken);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let code = system.phone_code(taken).await?;
    let (status, body) = post(
        &system,
        "/v1/auth/phone",
        Some(&alice.token),
        json!({ "phone": taken, "code": code }),
    )
    .await;
    assert_eq!(status, 409, "{body}");

    // Her own number: a wrong code changes nothing, the right one does.
    let code = system.phone_code(mine).await?;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (status, _) = post(
        &system,
        "/v1/auth/phone",
        Some(&alice.token),
        json!({ "phone": mine, "code": wrong }),
    )
    .await;
    assert_eq!(status, 401);
    on_tablet.ping().await?;
    let (status, body) = post(
        &system,
        "/v1/auth/phone",
        Some(&alice.token),
        json!({ "phone": mine, "code": code }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The tablet's session ended; this device goes on.
    let close = on_tablet.closed().await?.expect("a close frame");
    assert_eq!(u16::from(close.code), 4001);
    assert_eq!(
        api.get("/v1/profile", Some(&alice.token)).await?.0,
        StatusCode::OK
    );
    let (status, _) = post(
        &system,
        "/v1/auth/refresh",
        None,
        json!({ "refreshToken": tablet.refresh_token }),
    )
    .await;
    assert_eq!(status, 401, "the tablet's refresh token");

    // The number now logs alice in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let code = system.phone_code(mine).await?;
    let (status, body) = post(
        &system,
        "/v1/auth/phone/login",
        None,
        json!({ "phone": mine, "code": code, "deviceName": "phone" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["userId"], alice.user_id.as_str());
    Ok(())
}
