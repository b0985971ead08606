//! The auth service's NATS contract, against a real nats-server: what it
//! serves, what each endpoint refuses, and an account's way from register
//! to logout.

use shared::endpoint::endpoints::*;
use shared::proto::auth as pb;
use shared::testing::contract::Running;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_keeps_its_contract() {
    let auth = Running::start(|nats, stop, url| {
        auth::run(
            auth::Config {
                database_url: url,
                ..auth::Config::default()
            },
            nats,
            stop,
        )
    })
    .await;
    let caller = &auth.caller;
    shared::assert_contract!(
        caller,
        auth::MICRO_NAME,
        AuthRegister,
        AuthLogin,
        AuthRefresh,
        AuthPhoneCode,
        AuthPhoneLogin,
        AuthPhoneRegister,
        AuthChangePhone,
        AuthLogout,
        AuthPassword,
        AuthDevices,
        AuthLogoutDevice,
        AuthKeys,
        AuthLookup,
        AuthRevocations,
        AuthPhone,
        AuthMultipleDevices,
    );

    let registered = caller
        .call_to::<AuthRegister>(&pb::RegisterRequest {
            username: "contract".into(),
            password: "password1".into(),
            ..Default::default()
        })
        .await
        .expect("register");
    let login = caller
        .call_to::<AuthLogin>(&pb::LoginRequest {
            username: "contract".into(),
            password: "password1".into(),
            ..Default::default()
        })
        .await
        .expect("log in");
    assert_eq!(login.user_id, registered.user_id);
    // One device (made by the login above), then two.
    let several = pb::MultipleDevicesRequest {
        user_ids: vec![login.user_id.clone(), "not a user".into()],
    };
    let answer = caller.call_to::<AuthMultipleDevices>(&several).await;
    assert_eq!(
        answer.expect("multiple devices").user_ids,
        Vec::<String>::new()
    );
    caller
        .call_to::<AuthLogin>(&pb::LoginRequest {
            username: "contract".into(),
            password: "password1".into(),
            ..Default::default()
        })
        .await
        .expect("log in on a second device");
    let answer = caller.call_to::<AuthMultipleDevices>(&several).await;
    assert_eq!(
        answer.expect("multiple devices").user_ids,
        vec![login.user_id.clone()]
    );
    let wrong = caller
        .call_to::<AuthLogin>(&pb::LoginRequest {
            username: "contract".into(),
            password: "password2".into(),
            ..Default::default()
        })
        .await
        .expect_err("a wrong password");
    assert_eq!(wrong.code, shared::rpc::ErrorCode::Unauthorized);
    let found = caller
        .call_to::<AuthLookup>(&pb::LookupRequest {
            user_ids: vec![registered.user_id.clone()],
        })
        .await
        .expect("look up");
    assert_eq!(found.accounts.len(), 1);
    let keys = caller
        .call_to::<AuthKeys>(&pb::PublicKeysRequest {})
        .await
        .expect("keys");
    assert!(!keys.keys.is_empty());
    auth.stop().await;
}
