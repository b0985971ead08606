//! Profiles, user search, friend requests, friends, blocks, the friendship
//! policy for messages and presence seen by friends only.

use std::time::Duration;

use e2e::{Api, Client, Format, Mode, System, User};
use reqwest::Method;
use serde_json::{Value, json};
use shared::proto::delivery::{inbox_entry, signal};
use shared::proto::social::{SocialNotice, social_notice};

/// Registers with a nickname and an optional phone (proven with the code
/// sent to it), then logs in.
async fn register(
    system: &System,
    username: &str,
    nickname: &str,
    phone: &str,
) -> anyhow::Result<User> {
    let api = system.api();
    let password = format!("{username}-password");
    let code = if phone.is_empty() {
        String::new()
    } else {
        let normalized = shared::text::phone(phone).expect("a phone number");
        system.phone_code(&normalized).await?
    };
    let (status, body) = api
        .post(
            "/v1/auth/register",
            None,
            json!({ "username": username, "password": password, "nickname": nickname, "phone": phone, "phoneCode": code })
                .to_string(),
        )
        .await?;
    anyhow::ensure!(status == 201, "register {username}: {status} {body}");
    api.login(username, &password).await
}

/// Searches until `check` holds: profiles are created from the
/// user.registered event, a moment after registration.
async fn search_until(
    api: &Api,
    who: &User,
    query: &str,
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let mut last = Value::Null;
    for _ in 0..100 {
        let path = format!("/v1/users/search?q={}", urlencode(query));
        let (status, body) = api.get(&path, Some(&who.token)).await?;
        anyhow::ensure!(status == 200, "search {query}: {status} {body}");
        if check(&body) {
            return Ok(body);
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("search {query} never matched; last: {last}")
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn usernames(body: &Value) -> Vec<String> {
    body["users"]
        .as_array()
        .map(|users| {
            users
                .iter()
                .filter_map(|u| u["username"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The next social notice pushed to a client.
async fn next_notice(client: &mut Client) -> anyhow::Result<social_notice::Kind> {
    loop {
        let push = client.next_push().await?;
        if let Some(inbox_entry::Event::Social(SocialNotice { kind: Some(kind) })) =
            push.entry.and_then(|e| e.event)
        {
            return Ok(kind);
        }
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_public_and_only_mine_to_change() -> anyhow::Result<()> {
    let system = System::start(Mode::InProcess).await?;
    let api = system.api();
    let alice = register(&system, "alice", "爱丽丝", "+86 138 0013 8000").await?;
    let bob = api.user("bob").await?;

    let (status, mine) = api.get("/v1/profile", Some(&alice.token)).await?;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["username"], "alice");
    assert_eq!(mine["nickname"], "爱丽丝");
    let (_, theirs) = api.get("/v1/profile", Some(&bob.token)).await?;
    assert_eq!(
        theirs["nickname"], "bob",
        "the nickname defaults to the username"
    );

    // An avatar is an image uploaded as one: then everyone sees it, in
    // two thumbnail sizes.
    let files = e2e::files::Files::new(&system);
    let avatar = files
        .upload(&alice, "me.png", "avatar", e2e::files::png(20_000))
        .await?;
    let update = json!({ "nickname": "小爱", "signature": "今天天气很好 ☀️", "avatar": avatar });
    let (status, updated) = api
        .send_method(
            Method::PATCH,
            "/v1/profile",
            Some(&alice.token),
            Some(update),
        )
        .await?;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["nickname"], "小爱");
    assert_eq!(updated["signature"], "今天天气很好 ☀️");
    assert_eq!(updated["avatar"], avatar.as_str());
    for variant in ["small", "large"] {
        let seen = files
            .get(
                Some(&bob),
                &format!("/v1/files/{avatar}/thumbnails/{variant}"),
                &[],
            )
            .await?;
        assert_eq!(seen.status(), 200, "{variant}");
    }
    // Not someone else's file, nor an image uploaded as a message's.
    let photo = files
        .upload(&bob, "p.png", "image", e2e::files::png(3000))
        .await?;
    let bobs_avatar = files
        .upload(&bob, "b.png", "avatar", e2e::files::png(4000))
        .await?;
    for other in [&photo, &bobs_avatar] {
        let (status, body) = api
            .send_method(
                Method::PATCH,
                "/v1/profile",
                Some(&alice.token),
                Some(json!({ "avatar": other })),
            )
            .await?;
        assert_eq!(status, 400, "{body}");
    }
    // Only the fields given change.
    let (_, updated) = api
        .send_method(
            Method::PATCH,
            "/v1/profile",
            Some(&alice.token),
            Some(json!({ "signature": "" })),
        )
        .await?;
    assert_eq!(updated["nickname"], "小爱");
    assert_eq!(updated["signature"].as_str().unwrap_or(""), "", "{updated}");

    // Anyone sees the public profile; nothing private is in it.
    let (status, seen) = api
        .get(&format!("/v1/users/{}", alice.user_id), Some(&bob.token))
        .await?;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["nickname"], "小爱");
    let text = seen.to_string();
    assert!(
        // Not "138" alone: a random user id may hold those digits.
        !text.contains("13800138000") && !text.contains("phone") && !text.contains("password"),
        "{text}"
    );
    let (_, many) = api
        .get(
            &format!("/v1/profiles?user_ids={},{}", alice.user_id, bob.user_id),
            Some(&bob.token),
        )
        .await?;
    let many = json!({ "users": many["profiles"] });
    assert_eq!(usernames(&many), ["alice", "bob"]);

    // Bad updates are refused with the field named.
    for (update, field) in [
        (json!({ "nickname": "字".repeat(65) }), "nickname"),
        (json!({ "nickname": "a\u{7}b" }), "nickname"),
        (json!({ "signature": "s".repeat(201) }), "signature"),
        (json!({ "avatar": "../../etc/passwd" }), "avatar"),
    ] {
        let (status, body) = api
            .send_method(
                Method::PATCH,
                "/v1/profile",
                Some(&alice.token),
                Some(update),
            )
            .await?;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(field),
            "{body}"
        );
    }
    let (status, body) = api.get("/v1/users/not-a-user", Some(&bob.token)).await?;
    assert_eq!((status.as_u16(), code(&body)), (404, "not_found"), "{body}");
    let (status, _) = api.get("/v1/profile", None).await?;
    assert_eq!(status, 401);
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_usernames_nicknames_and_exact_phones_and_leaks_nothing() -> anyhow::Result<()>
{
    let system = System::start(Mode::InProcess).await?;
    let api = system.api();
    let me = api.user("searcher").await?;
    register(&system, "wangxiaoming", "王小明", "+8613800138000").await?;
    register(&system, "xiaoming", "Xiao Ming", "").await?;
    register(&system, "xiaohong", "小红", "").await?;
    register(&system, "zhangsan", "张三", "+1 415 555 0100").await?;

    // Chinese inside a nickname, without spaces around it.
    let found = search_until(&api, &me, "小明", |b| usernames(b) == ["wangxiaoming"]).await?;
    assert_eq!(found["users"][0]["nickname"], "王小明");
    // Username prefix (case-insensitive), nickname substring, and the
    // pinyin of a Chinese nickname (王小明: wangxiaoming, wxm).
    search_until(&api, &me, "XIAO", |b| {
        usernames(b) == ["wangxiaoming", "xiaohong", "xiaoming"]
    })
    .await?;
    search_until(&api, &me, "ming", |b| {
        usernames(b) == ["wangxiaoming", "xiaoming"]
    })
    .await?;
    search_until(&api, &me, "zs", |b| usernames(b) == ["zhangsan"]).await?;
    // Wildcards are literal characters.
    search_until(&api, &me, "%", |b| usernames(b).is_empty()).await?;
    // The exact phone number, however it is written, finds its account only.
    search_until(&api, &me, "+86 138-0013-8000", |b| {
        usernames(b) == ["wangxiaoming"]
    })
    .await?;
    search_until(&api, &me, "+8613800", |b| usernames(b).is_empty()).await?;
    // The searcher never finds itself.
    search_until(&api, &me, "searcher", |b| usernames(b).is_empty()).await?;

    // Pages of one.
    let first = search_until(&api, &me, "ming", |b| usernames(b).len() == 2).await?;
    assert!(first["nextCursor"].as_str().unwrap_or("").is_empty());
    let (_, page1) = api
        .get("/v1/users/search?q=ming&limit=1", Some(&me.token))
        .await?;
    assert_eq!(usernames(&page1), ["wangxiaoming"]);
    let cursor = page1["nextCursor"].as_str().unwrap_or("").to_owned();
    assert!(!cursor.is_empty());
    let (_, page2) = api
        .get(
            &format!("/v1/users/search?q=ming&limit=1&cursor={cursor}"),
            Some(&me.token),
        )
        .await?;
    assert_eq!(usernames(&page2), ["xiaoming"]);
    assert!(
        page2["nextCursor"].as_str().unwrap_or("").is_empty(),
        "{page2}"
    );

    // Results carry public fields only.
    let mut text = String::new();
    for query in ["xiao", "小", "zhang", "+8613800138000", "+14155550100"] {
        let found = search_until(&api, &me, query, |b| !usernames(b).is_empty()).await?;
        text.push_str(&found.to_string());
    }
    for private in ["phone", "password", "13800138000", "4155550100", "argon2"] {
        assert!(!text.contains(private), "{private} leaked in {text}");
    }
    // Bad queries are refused.
    for (query, status) in [("", 400), (&"x".repeat(65)[..], 400)] {
        let (got, body) = api
            .get(&format!("/v1/users/search?q={query}"), Some(&me.token))
            .await?;
        assert_eq!(got.as_u16(), status, "{body}");
    }
    let (got, _) = api
        .get("/v1/users/search?q=xiao&limit=51", Some(&me.token))
        .await?;
    assert_eq!(got, 400);
    let (got, _) = api
        .get("/v1/users/search?q=xiao&bogus=1", Some(&me.token))
        .await?;
    assert_eq!(got, 400);
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friend_requests_accept_reject_and_cross_requests() -> anyhow::Result<()> {
    let system = System::start(Mode::InProcess).await?;
    let api = system.api();
    let alice = api.user("alice").await?;
    let bob = api.user("bob").await?;
    let carol = api.user("carol").await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;
    let mut a = Client::connect_live(&system.ws_url(), &alice, Format::Binary).await?;

    // A stranger cannot be messaged while friendship is required.
    let id = a.send_text(&bob, "early", "hello?").await?;
    let refused = a.error_of(id).await?;
    assert_eq!(refused.code, "forbidden", "{refused:?}");

    let (status, sent) = api.request_friend(&alice, &bob, "你好，我是爱丽丝").await?;
    assert_eq!(status, 200, "{sent}");
    // (false fields are left out of the JSON mapping)
    assert!(!sent["becameFriends"].as_bool().unwrap_or(false), "{sent}");
    let request_id = sent["request"]["id"].as_str().unwrap_or("").to_owned();
    assert_eq!(sent["request"]["status"], "pending");
    assert_eq!(sent["request"]["peer"]["username"], "bob");

    // bob is told live, with alice's profile and the greeting.
    match next_notice(&mut b).await? {
        social_notice::Kind::RequestReceived(r) => {
            assert_eq!(r.id, request_id);
            assert_eq!(r.greeting, "你好，我是爱丽丝");
            assert_eq!(r.peer.map(|p| p.username).as_deref(), Some("alice"));
        }
        other => panic!("expected a request, got {other:?}"),
    }
    let (_, incoming) = api.get("/v1/friends/requests", Some(&bob.token)).await?;
    assert_eq!(incoming["requests"][0]["id"], request_id.as_str());
    assert_eq!(incoming["requests"][0]["peer"]["username"], "alice");
    let (_, outgoing) = api
        .get(
            "/v1/friends/requests?direction=outgoing",
            Some(&alice.token),
        )
        .await?;
    assert_eq!(outgoing["requests"][0]["id"], request_id.as_str());
    // Asking again renews the same request.
    let (_, again) = api.request_friend(&alice, &bob, "还在吗？").await?;
    assert_eq!(again["request"]["id"], request_id.as_str());
    assert_eq!(again["request"]["greeting"], "还在吗？");
    // Asking again and again tells bob nothing more for a while.
    for i in 0..5 {
        let (status, again) = api
            .request_friend(&alice, &bob, &format!("在吗{i}"))
            .await?;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["request"]["id"], request_id.as_str());
    }
    b.expect_no_more_pushes().await?;
    let (_, incoming) = api.get("/v1/friends/requests", Some(&bob.token)).await?;
    assert_eq!(incoming["requests"][0]["greeting"], "在吗4", "{incoming}");

    // Only bob may answer it.
    let accept = format!("/v1/friends/requests/{request_id}/accept");
    let (status, body) = api.post(&accept, Some(&carol.token), "").await?;
    assert_eq!((status.as_u16(), code(&body)), (404, "not_found"), "{body}");
    let (status, body) = api.post(&accept, Some(&alice.token), "").await?;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api.post(&accept, Some(&bob.token), "").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["request"]["status"], "accepted");
    let (status, body) = api.post(&accept, Some(&bob.token), "").await?;
    assert_eq!((status.as_u16(), code(&body)), (409, "conflict"), "{body}");

    // Both are told, and both lists show the other one.
    for (client, other) in [(&mut a, &bob), (&mut b, &alice)] {
        loop {
            match next_notice(client).await? {
                social_notice::Kind::FriendAdded(p) => {
                    assert_eq!(p.user_id, other.user_id);
                    break;
                }
                social_notice::Kind::RequestReceived(_) => continue,
                other => panic!("unexpected notice {other:?}"),
            }
        }
    }
    for (me, other) in [(&alice, &bob), (&bob, &alice)] {
        let (_, list) = api.get("/v1/friends", Some(&me.token)).await?;
        assert_eq!(list["friends"].as_array().map(Vec::len), Some(1), "{list}");
        assert_eq!(
            list["friends"][0]["profile"]["userId"],
            other.user_id.as_str()
        );
        assert_eq!(list["friends"][0]["presence"]["online"], true, "{list}");
    }
    let (status, body) = api.request_friend(&alice, &bob, "").await?;
    assert_eq!((status.as_u16(), code(&body)), (409, "conflict"), "{body}");
    // Now they can talk.
    assert_eq!(a.send_acked(&bob, "m1", "终于").await?.seq, 1);

    // Two requests the two ways make a friendship at once.
    let (status, _) = api.request_friend(&carol, &alice, "hi alice").await?;
    assert_eq!(status, 200);
    let (status, crossed) = api.request_friend(&alice, &carol, "hi carol").await?;
    assert_eq!(status, 200, "{crossed}");
    assert_eq!(crossed["becameFriends"], true);
    assert_eq!(crossed["request"]["status"], "accepted");
    let (_, pending) = api.get("/v1/friends/requests", Some(&alice.token)).await?;
    assert!(
        pending["requests"].as_array().is_none_or(Vec::is_empty),
        "{pending}"
    );

    // A rejected request: the sender sees it answered, it cannot be accepted.
    let (_, sent) = api.request_friend(&bob, &carol, "").await?;
    let id = sent["request"]["id"].as_str().unwrap_or("").to_owned();
    let (status, body) = api
        .post(
            &format!("/v1/friends/requests/{id}/reject"),
            Some(&carol.token),
            "",
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["request"]["status"], "rejected");
    let (status, _) = api
        .post(
            &format!("/v1/friends/requests/{id}/accept"),
            Some(&carol.token),
            "",
        )
        .await?;
    assert_eq!(status, 409);
    let (_, answered) = api
        .get(
            "/v1/friends/requests?direction=outgoing&include_answered=true",
            Some(&bob.token),
        )
        .await?;
    assert_eq!(answered["requests"][0]["status"], "rejected", "{answered}");
    // Asking again right after the rejection waits a day.
    let (status, body) = api.request_friend(&bob, &carol, "再试一次").await?;
    assert_eq!(
        (status.as_u16(), code(&body)),
        (429, "rate_limited"),
        "{body}"
    );
    let wait = social::Config::default().request_after_rejection_secs;
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.ends_with(&format!("retry after {wait} s"))
            || message.ends_with(&format!("retry after {} s", wait - 1)),
        "{body}"
    );

    // Bad requests.
    for (to, status) in [(bob.user_id.as_str(), 400), ("nobody", 404), ("a.b", 400)] {
        let (got, body) = api
            .post(
                "/v1/friends/requests",
                Some(&bob.token),
                json!({ "toUserId": to }).to_string(),
            )
            .await?;
        assert_eq!(got.as_u16(), status, "{to}: {body}");
    }
    let (got, body) = api
        .post(
            "/v1/friends/requests",
            Some(&bob.token),
            json!({ "toUserId": carol.user_id, "greeting": "长".repeat(201) }).to_string(),
        )
        .await?;
    assert_eq!(got, 400, "{body}");
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_friend_ends_it_on_both_sides() -> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let api = system.api();
    let mut a = Client::connect_live(&system.ws_url(), &alice, Format::Json).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;
    assert_eq!(a.send_acked(&bob, "m1", "bye soon").await?.seq, 1);

    let (status, body) = api
        .send_method(
            Method::DELETE,
            &format!("/v1/friends/{}", bob.user_id),
            Some(&alice.token),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    for (client, other) in [(&mut a, &bob), (&mut b, &alice)] {
        loop {
            match next_notice(client).await? {
                social_notice::Kind::FriendRemoved(id) => {
                    assert_eq!(id, other.user_id);
                    break;
                }
                _ => continue,
            }
        }
    }
    for me in [&alice, &bob] {
        let (_, list) = api.get("/v1/friends", Some(&me.token)).await?;
        assert!(
            list["friends"].as_array().is_none_or(Vec::is_empty),
            "{list}"
        );
    }
    // Neither can message the other any more; history stays readable.
    let id = b.send_text(&alice, "m2", "wait").await?;
    assert_eq!(b.error_of(id).await?.code, "forbidden");
    let (status, history) = api
        .history(
            &bob,
            &shared::ids::direct_conversation(&alice.user_id, &bob.user_id),
            "",
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(1));
    let (status, _) = api
        .send_method(
            Method::DELETE,
            &format!("/v1/friends/{}", bob.user_id),
            Some(&alice.token),
            None,
        )
        .await?;
    assert_eq!(status, 404);
    system.stop().await;
    Ok(())
}

/// A changed profile reaches the user's friends' devices and its own other
/// devices live (a new name or avatar shows without a reload); a stranger
/// is told nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_profile_reaches_friends_devices() -> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let api = system.api();
    let carol = api.user("carol").await?;
    let mut a = Client::connect_live(&system.ws_url(), &alice, Format::Json).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Binary).await?;
    let mut c = Client::connect_live(&system.ws_url(), &carol, Format::Json).await?;
    let (status, body) = api
        .send_method(
            Method::PATCH,
            "/v1/profile",
            Some(&alice.token),
            Some(json!({ "nickname": "爱丽丝 Alice", "signature": "新的一天" })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    for client in [&mut a, &mut b] {
        let updated = loop {
            if let social_notice::Kind::ProfileUpdated(p) =
                tokio::time::timeout(Duration::from_secs(10), next_notice(client)).await??
            {
                break p;
            }
        };
        assert_eq!(updated.user_id, alice.user_id);
        assert_eq!(updated.nickname, "爱丽丝 Alice");
        assert_eq!(updated.signature, "新的一天");
    }
    c.expect_no_more_pushes().await?;
    system.stop().await;
    Ok(())
}

/// The messages service caches friendships and blocks for one-to-one sends;
/// a change still applies to the very next send, each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_or_unfriending_applies_to_the_very_next_message() -> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let api = system.api();
    let mut a = Client::connect_live(&system.ws_url(), &alice, Format::Binary).await?;
    let mut seq = 0;
    for round in 0..10 {
        // Allowed (and cached), then blocked: refused at once.
        seq += 1;
        let ack = a.send_acked(&bob, &format!("ok{round}"), "hi").await?;
        assert_eq!(ack.seq, seq);
        assert_eq!(api.set_block(&bob, &alice, true).await?, 200);
        let id = a.send_text(&bob, &format!("no{round}"), "hi?").await?;
        assert_eq!(a.error_of(id).await?.code, "forbidden", "round {round}");
        // Unblocked: allowed at once (the refusal was cached too).
        assert_eq!(api.set_block(&bob, &alice, false).await?, 200);
        seq += 1;
        let ack = a.send_acked(&bob, &format!("again{round}"), "hi!").await?;
        assert_eq!(ack.seq, seq, "round {round}");
    }
    // No longer friends: refused at once; friends again: allowed at once.
    let (status, _) = api
        .send_method(
            Method::DELETE,
            &format!("/v1/friends/{}", bob.user_id),
            Some(&alice.token),
            None,
        )
        .await?;
    assert_eq!(status, 200);
    let id = a.send_text(&bob, "unfriended", "hi?").await?;
    assert_eq!(a.error_of(id).await?.code, "forbidden");
    api.befriend(&alice, &bob).await?;
    assert_eq!(a.send_acked(&bob, "friends", "hi").await?.seq, seq + 1);
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_user_can_neither_message_nor_request_and_is_not_told_why() -> anyhow::Result<()>
{
    let (system, [alice, bob, carol]) =
        System::with_users(Mode::InProcess, ["alice", "bob", "carol"]).await?;
    let api = system.api();
    let mut a = Client::connect_live(&system.ws_url(), &alice, Format::Json).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;

    let (status, body) = api
        .send_method(
            Method::PUT,
            &format!("/v1/blocks/{}", alice.user_id),
            Some(&bob.token),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let (_, blocked) = api.get("/v1/blocks", Some(&bob.token)).await?;
    assert_eq!(usernames(&blocked), ["alice"]);

    // alice's message is refused the way a stranger's is.
    let id = a.send_text(&bob, "m1", "hello").await?;
    let refused = a.error_of(id).await?;
    assert_eq!(refused.code, "forbidden");
    assert!(!refused.message.contains("block"), "{refused:?}");
    // Over HTTP too, and her friend requests.
    let (status, body) = api
        .post(
            "/v1/messages",
            Some(&alice.token),
            json!({ "toUserId": bob.user_id, "clientMsgId": "h1", "body": { "text": { "text": "hi" } } })
                .to_string(),
        )
        .await?;
    assert_eq!(status, 403, "{body}");
    api.send_method(
        Method::DELETE,
        &format!("/v1/friends/{}", bob.user_id),
        Some(&alice.token),
        None,
    )
    .await?;
    let (status, body) = api.request_friend(&alice, &bob, "please").await?;
    assert_eq!(status, 403, "{body}");
    assert!(!body.to_string().contains("block"), "{body}");
    // bob cannot message alice either until he unblocks her (he is told why).
    let id = b.send_text(&alice, "m1", "hm").await?;
    let own = b.error_of(id).await?;
    assert!(own.message.contains("unblock"), "{own:?}");
    // Nothing reached bob; carol is unaffected.
    assert!(b.drain(Duration::from_millis(300)).await?.iter().all(|f| {
        !matches!(&f.kind, Some(shared::proto::edge::server_frame::Kind::Push(p))
            if matches!(p.entry.as_ref().and_then(|e| e.event.as_ref()), Some(inbox_entry::Event::Message(_))))
    }));
    let mut c = Client::connect_live(&system.ws_url(), &carol, Format::Json).await?;
    assert_eq!(c.send_acked(&bob, "c1", "carol here").await?.seq, 1);

    // Unblocked and friends again: messages flow.
    let (status, _) = api
        .send_method(
            Method::DELETE,
            &format!("/v1/blocks/{}", alice.user_id),
            Some(&bob.token),
            None,
        )
        .await?;
    assert_eq!(status, 200);
    api.befriend(&alice, &bob).await?;
    assert_eq!(a.send_acked(&bob, "m2", "hello again").await?.seq, 1);
    let got = b.messages(2).await?;
    assert!(got.iter().any(|(_, m)| e2e::text_of(m) == "hello again"));

    // Blocking yourself or nobody is refused.
    let (status, _) = api
        .send_method(
            Method::PUT,
            &format!("/v1/blocks/{}", bob.user_id),
            Some(&bob.token),
            None,
        )
        .await?;
    assert_eq!(status, 400);
    let (status, _) = api
        .send_method(Method::PUT, "/v1/blocks/nobody", Some(&bob.token), None)
        .await?;
    assert_eq!(status, 404);
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reaches_friends_only() -> anyhow::Result<()> {
    let (system, [alice, bob]) = System::with_users(Mode::InProcess, ["alice", "bob"]).await?;
    let api = system.api();
    let carol = api.user("carol").await?;
    let mut a = Client::connect_live(&system.ws_url(), &alice, Format::Json).await?;
    let mut c = Client::connect_live(&system.ws_url(), &carol, Format::Json).await?;
    // Whatever was said about earlier connections is past.
    a.signals_within(Duration::from_millis(500)).await?;
    c.signals_within(Duration::from_millis(100)).await?;

    let is_bob = |online: bool| {
        let id = bob.user_id.clone();
        move |s: &shared::proto::delivery::Signal| matches!(&s.kind, Some(signal::Kind::Presence(p)) if p.user_id == id && p.online == online)
    };
    let b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;
    a.signal_where(Duration::from_secs(10), is_bob(true))
        .await?;
    drop(b);
    let offline = a
        .signal_where(Duration::from_secs(10), is_bob(false))
        .await?;
    let Some(signal::Kind::Presence(p)) = offline.kind else {
        unreachable!()
    };
    assert!(p.last_seen_ms > 0);
    // carol, a stranger, heard nothing about bob and may not ask.
    let heard = c.signals_within(Duration::from_millis(300)).await?;
    assert!(
        heard.iter().all(|s| !is_bob(true)(s) && !is_bob(false)(s)),
        "{heard:?}"
    );
    let (status, body) = api
        .get(
            &format!("/v1/presence?user_ids={}", bob.user_id),
            Some(&carol.token),
        )
        .await?;
    assert_eq!((status.as_u16(), code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = api
        .get(
            &format!("/v1/presence?user_ids={}", bob.user_id),
            Some(&alice.token),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let (status, _) = api
        .get(
            &format!("/v1/presence?user_ids={}", carol.user_id),
            Some(&carol.token),
        )
        .await?;
    assert_eq!(status, 200, "everyone sees their own presence");

    // Blocking hides presence from the blocked friend.
    api.send_method(
        Method::PUT,
        &format!("/v1/blocks/{}", alice.user_id),
        Some(&bob.token),
        None,
    )
    .await?;
    let (status, _) = api
        .get(
            &format!("/v1/presence?user_ids={}", bob.user_id),
            Some(&alice.token),
        )
        .await?;
    assert_eq!(status, 403);
    let _b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;
    let heard = a.signals_within(Duration::from_millis(800)).await?;
    assert!(heard.iter().all(|s| !is_bob(true)(s)), "{heard:?}");
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_password_needs_the_current_one() -> anyhow::Result<()> {
    let (system, [alice]) = System::with_users(Mode::InProcess, ["alice"]).await?;
    let api = system.api();
    let phone = api.another_device(&alice).await?;
    let refresh = |token: &str| json!({ "refreshToken": token }).to_string();
    // A refresh token works once: it is rotated.
    let (status, renewed) = api
        .post("/v1/auth/refresh", None, refresh(&phone.refresh_token))
        .await?;
    assert_eq!(status, 200, "{renewed}");
    let phone_token = renewed["refreshToken"].as_str().unwrap_or("").to_owned();
    assert_ne!(phone_token, phone.refresh_token);
    assert!(
        renewed["accessToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    for garbage in [
        "",
        "x",
        "a.b.c",
        "nodot",
        &format!("{}.wrong", phone.device_id),
    ] {
        let (status, _) = api.post("/v1/auth/refresh", None, refresh(garbage)).await?;
        assert_eq!(status, 401, "{garbage}");
    }
    let change = |current: &str, new: &str| {
        json!({ "currentPassword": current, "newPassword": new }).to_string()
    };
    let (status, body) = api
        .post(
            "/v1/auth/password",
            Some(&alice.token),
            change("wrong-password", "新的密码很长很长"),
        )
        .await?;
    assert_eq!((status.as_u16(), code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = api
        .post(
            "/v1/auth/password",
            Some(&alice.token),
            change(&alice.password, "short"),
        )
        .await?;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api
        .post(
            "/v1/auth/password",
            None,
            change(&alice.password, "新的密码很长很长"),
        )
        .await?;
    assert_eq!(status, 401, "{body}");
    let (status, body) = api
        .post(
            "/v1/auth/password",
            Some(&alice.token),
            change(&alice.password, "新的密码很长很长"),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert!(api.login("alice", &alice.password).await.is_err());
    api.login("alice", "新的密码很长很长").await?;
    // The other device cannot refresh any more; this one still can.
    let (status, _) = api
        .post("/v1/auth/refresh", None, refresh(&phone_token))
        .await?;
    assert_eq!(status, 401);
    let (status, _) = api
        .post("/v1/auth/refresh", None, refresh(&alice.refresh_token))
        .await?;
    assert_eq!(status, 200);
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_ends_the_devices_session_only() -> anyhow::Result<()> {
    let (system, [alice]) = System::with_users(Mode::InProcess, ["alice"]).await?;
    let api = system.api();
    let phone = api.another_device(&alice).await?;
    let refresh = |token: &str| json!({ "refreshToken": token }).to_string();
    let (status, _) = api.post("/v1/auth/logout", None, String::new()).await?;
    assert_eq!(status, 401, "logout needs a caller");
    let (status, body) = api
        .post("/v1/auth/logout", Some(&phone.token), String::new())
        .await?;
    assert_eq!(status, 200, "{body}");
    let (status, _) = api
        .post("/v1/auth/refresh", None, refresh(&phone.refresh_token))
        .await?;
    assert_eq!(status, 401, "a logged-out device cannot refresh");
    // The logged-out device's access token is refused from then on.
    let (status, body) = api
        .post("/v1/auth/logout", Some(&phone.token), "{}".to_owned())
        .await?;
    assert_eq!(
        (status.as_u16(), code(&body)),
        (401, "unauthorized"),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/v1/auth/logout",
            Some(&alice.token),
            r#"{"all":true}"#.to_owned(),
        )
        .await?;
    assert_eq!(
        (status.as_u16(), code(&body)),
        (400, "bad_request"),
        "{body}"
    );
    let (status, body) = api
        .post("/v1/auth/refresh", None, refresh(&alice.refresh_token))
        .await?;
    assert_eq!(status, 200, "the other device still refreshes: {body}");
    system.stop().await;
    Ok(())
}
