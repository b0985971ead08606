//! Token signing keys rotate without restarting edges: after
//! `natter rotate-key` and an auth restart, new tokens carry the new key id,
//! edges fetch it when they first see it, and older tokens stay valid.

use e2e::{Client, Format, Mode, Service, System};

fn header(token: &str) -> &str {
    token.split('.').next().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_while_edges_keep_running() -> anyhow::Result<()> {
    let (mut system, [alice]) = System::with_users(Mode::Split, ["alice"]).await?;
    let api = system.api();
    Client::connect(&system.ws_url(), &alice, Format::Json).await?;

    let out = system.natter_command(&["rotate-key"])?;
    assert!(out.contains("new signing key"), "{out}");
    system.kill_process(Service::Auth);
    system.spawn_process(Service::Auth)?;
    system.wait_ready().await?;

    let bob = api.user("bob").await?;
    api.befriend(&alice, &bob).await?;
    assert_ne!(
        header(&alice.token),
        header(&bob.token),
        "a new key id signs new tokens"
    );
    // The edge has never seen bob's key: it fetches the key set and accepts it.
    let mut b = Client::connect(&system.ws_url(), &bob, Format::Json).await?;
    assert_eq!(b.welcome.user_id, bob.user_id);
    // alice's token, signed by the old key, still works.
    let mut a = Client::connect(&system.ws_url(), &alice, Format::Json).await?;
    a.send_acked(&bob, "k1", "after rotation").await?;
    b.resume(0).await?;
    assert_eq!(b.messages(1).await?[0].1.client_msg_id, "k1");
    Ok(())
}
