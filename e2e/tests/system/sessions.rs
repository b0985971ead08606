//! Sessions end: a logout, "log out my other devices" and a password change
//! close the affected devices' WebSockets and refuse their tokens; a socket
//! closes when its access token expires unless the client brought a fresh
//! one over it; a user sees and manages their devices.

use std::time::Duration;

use e2e::{Client, Format, Mode, System, User};
use reqwest::StatusCode;
use serde_json::json;
use shared::proto::edge::{Auth, client_frame, server_frame};

const SESSION_ENDED: u16 = 4001;

async fn closed_with(client: &mut Client) -> anyhow::Result<u16> {
    let frame = client
        .closed()
        .await?
        .ok_or_else(|| anyhow::anyhow!("closed without a code"))?;
    Ok(frame.code.into())
}

/// An access token for `user`'s device signed by the system's own key,
/// valid for `secs` more seconds (shorter than any configurable lifetime).
async fn token_expiring_in(system: &System, user: &User, secs: i64) -> anyhow::Result<String> {
    let pool = shared::db::connect(&system.auth_db_url(), 1, &auth::store::MIGRATOR).await?;
    let keys = auth::keys::KeySet::load_or_generate(&pool).await?;
    let now = shared::ids::now_ms() / 1000;
    Ok(keys.sign(&auth::Claims {
        sub: user.user_id.clone(),
        did: user.device_id.clone(),
        iss: "natter".into(),
        iat: now,
        iat_ms: now * 1000,
        exp: now + secs,
    })?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_and_password_changes_end_the_other_sessions_at_once() -> anyhow::Result<()> {
    let (system, [alice]) = System::with_users(Mode::Split, ["alice"]).await?;
    let api = system.api();
    let phone = api.another_device(&alice).await?;
    let tablet = api.another_device(&alice).await?;

    // The device list: three, this one marked.
    let (status, listed) = api.get("/v1/devices", Some(&alice.token)).await?;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let devices = listed["devices"].as_array().cloned().unwrap_or_default();
    assert_eq!(devices.len(), 3, "{listed}");
    let current: Vec<&str> = devices
        .iter()
        .filter(|d| d["current"] == true)
        .filter_map(|d| d["deviceId"].as_str())
        .collect();
    assert_eq!(current, [alice.device_id.as_str()]);
    assert!(devices.iter().all(|d| d["signedIn"] == true), "{listed}");

    // Logging the phone out from the laptop closes the phone's socket and
    // refuses its tokens; the others go on.
    let mut on_phone = Client::connect_live(&system.ws_url(), &phone, Format::Json).await?;
    let mut on_tablet = Client::connect_live(&system.ws_url(), &tablet, Format::Binary).await?;
    let (status, body) = api
        .delete(
            &format!("/v1/devices/{}", phone.device_id),
            Some(&alice.token),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(closed_with(&mut on_phone).await?, SESSION_ENDED);
    let (status, _) = api.get("/v1/devices", Some(&phone.token)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the phone's access token");
    let (status, _) = api
        .post(
            "/v1/auth/refresh",
            None,
            json!({ "refreshToken": phone.refresh_token }).to_string(),
        )
        .await?;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the phone's refresh token"
    );
    on_tablet.ping().await?;
    on_tablet.expect_no_more_pushes().await?;
    let (status, listed) = api.get("/v1/devices", Some(&alice.token)).await?;
    assert_eq!(status, StatusCode::OK);
    let phone_entry = listed["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["deviceId"] == phone.device_id.as_str()))
        .cloned()
        .unwrap_or_default();
    // (JSON leaves false out.)
    assert_eq!(
        phone_entry["deviceId"],
        phone.device_id.as_str(),
        "{listed}"
    );
    assert!(
        !phone_entry["signedIn"].as_bool().unwrap_or(false),
        "{listed}"
    );
    // Logging in again on the phone works at once.
    let again = api.login(&alice.username, &alice.password).await?;
    assert_eq!(
        api.get("/v1/devices", Some(&again.token)).await?.0,
        StatusCode::OK
    );

    // Someone else's device cannot be logged out.
    let bob = api.user("bob").await?;
    let (status, _) = api
        .delete(
            &format!("/v1/devices/{}", bob.device_id),
            Some(&alice.token),
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.get("/v1/devices", Some(&bob.token)).await?.0,
        StatusCode::OK
    );

    // A password change ends the tablet's session, not the laptop's.
    let mut on_laptop = Client::connect_live(&system.ws_url(), &alice, Format::Json).await?;
    let (status, body) = api
        .post(
            "/v1/auth/password",
            Some(&alice.token),
            json!({ "currentPassword": alice.password, "newPassword": "a new password 2" })
                .to_string(),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(closed_with(&mut on_tablet).await?, SESSION_ENDED);
    on_laptop.ping().await?;
    on_laptop.expect_no_more_pushes().await?;
    assert_eq!(
        api.get("/v1/devices", Some(&alice.token)).await?.0,
        StatusCode::OK
    );

    // "Log out my other devices", then logging out this one.
    let (status, _) = api
        .delete("/v1/devices?all_others=true", Some(&alice.token))
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        api.get("/v1/devices", Some(&again.token)).await?.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = api.post("/v1/auth/logout", Some(&alice.token), "").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(closed_with(&mut on_laptop).await?, SESSION_ENDED);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_closes_when_its_token_expires_unless_refreshed_over_it() -> anyhow::Result<()> {
    let (system, [alice]) = System::with_users(Mode::InProcess, ["alice"]).await?;
    let mut short = alice.clone();
    short.token = token_expiring_in(&system, &alice, 2).await?;
    let mut lapsing = Client::connect(&system.ws_url(), &short, Format::Json).await?;
    assert_eq!(closed_with(&mut lapsing).await?, SESSION_ENDED);

    // The same, but a fresh token arrives over the socket in time.
    short.token = token_expiring_in(&system, &alice, 3).await?;
    let mut kept = Client::connect(&system.ws_url(), &short, Format::Binary).await?;
    let fresh = token_expiring_in(&system, &alice, 3600).await?;
    let id = kept
        .send_frame(client_frame::Kind::Auth(Auth {
            access_token: fresh,
        }))
        .await?;
    match kept.reply(id).await?.kind {
        Some(server_frame::Kind::Session(s)) => {
            assert!(s.expires_at_ms > shared::ids::now_ms() + 3_000_000)
        }
        other => anyhow::bail!("expected session, got {other:?}"),
    }
    // Past the first token's expiry, it still answers.
    tokio::time::sleep(Duration::from_secs(4)).await;
    kept.ping().await?;
    kept.expect_no_more_pushes().await?;
    // Another device's token does not extend this socket.
    let bob = system.api().user("bob").await?;
    let id = kept
        .send_frame(client_frame::Kind::Auth(Auth {
            access_token: bob.token,
        }))
        .await?;
    assert_eq!(kept.error_of(id).await?.code, "forbidden");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_used_twice_logs_its_device_out() -> anyhow::Result<()> {
    let (system, [alice]) = System::with_users(Mode::InProcess, ["alice"]).await?;
    let api = system.api();
    let phone = api.another_device(&alice).await?;
    let refresh = |token: &str| json!({ "refreshToken": token }).to_string();
    // A thief copied the phone's refresh token and exchanged it first.
    let (status, stolen) = api
        .post("/v1/auth/refresh", None, refresh(&phone.refresh_token))
        .await?;
    assert_eq!(status, StatusCode::OK, "{stolen}");
    let thiefs_refresh = stolen["refreshToken"].as_str().unwrap_or("").to_owned();
    let thiefs_access = stolen["accessToken"].as_str().unwrap_or("").to_owned();
    let thief = User {
        token: thiefs_access.clone(),
        ..phone.clone()
    };
    let mut on_thief = Client::connect_live(&system.ws_url(), &thief, Format::Json).await?;
    // A made-up secret for the device is only refused: it proves nothing.
    let (status, _) = api
        .post(
            "/v1/auth/refresh",
            None,
            refresh(&format!("{}.made-up", phone.device_id)),
        )
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    on_thief.ping().await?;
    // The phone, holding the old token, refreshes: the reuse ends the whole
    // chain, the thief's session with it.
    let (status, body) = api
        .post("/v1/auth/refresh", None, refresh(&phone.refresh_token))
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("already used")),
        "{body}"
    );
    assert_eq!(closed_with(&mut on_thief).await?, SESSION_ENDED);
    let (status, _) = api
        .post("/v1/auth/refresh", None, refresh(&thiefs_refresh))
        .await?;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the thief's refresh token"
    );
    let (status, _) = api.get("/v1/devices", Some(&thiefs_access)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the thief's access token");
    // alice's other device is untouched.
    let (status, _) = api
        .post("/v1/auth/refresh", None, refresh(&alice.refresh_token))
        .await?;
    assert_eq!(status, StatusCode::OK);
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_started_after_a_logout_refuses_the_old_tokens_too() -> anyhow::Result<()> {
    let (mut system, [alice]) = System::with_users(Mode::InProcess, ["alice"]).await?;
    let api = system.api();
    let phone = api.another_device(&alice).await?;
    let (status, body) = api
        .delete(
            &format!("/v1/devices/{}", phone.device_id),
            Some(&alice.token),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    // An edge that was not running when the phone was logged out.
    let (addr, _) = system.spawn_edge().await?;
    let late = e2e::Api::new(format!("http://{addr}"));
    let (status, _) = late.get("/v1/devices", Some(&phone.token)).await?;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the phone's old access token"
    );
    let (status, _) = late.get("/v1/devices", Some(&alice.token)).await?;
    assert_eq!(status, StatusCode::OK, "alice's own device");
    system.stop().await;
    Ok(())
}
