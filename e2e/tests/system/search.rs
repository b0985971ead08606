//! Search: a user finds its own messages by their words, in Chinese,
//! English or both, and never what it may not read (before it joined, after
//! it left, recalled, deleted for itself, others' conversations). The index
//! is rebuilt from the messages service when it is deleted, and a search
//! service killed in the middle of the feed misses nothing.

use std::time::{Duration, Instant};

use e2e::{Api, Mode, System, User};
use reqwest::Method;
use serde_json::{Value, json};

/// Sends a text to a user (`to` a user id) or a conversation; the ack.
async fn say(api: &Api, from: &User, to: &str, cmid: &str, text: &str) -> anyhow::Result<Value> {
    let target = if to.starts_with("g:") || to.starts_with("d:") {
        json!({ "conversationId": to })
    } else {
        json!({ "toUserId": to })
    };
    let mut body = json!({ "clientMsgId": cmid, "body": { "text": { "text": text } } });
    body.as_object_mut()
        .expect("an object")
        .extend(target.as_object().expect("an object").clone());
    let (status, ack) = api
        .send_method(Method::POST, "/v1/messages", Some(&from.token), Some(body))
        .await?;
    anyhow::ensure!(status == 200, "send {text:?}: {status} {ack}");
    Ok(ack)
}

/// One search: the status and the reply.
async fn search(api: &Api, who: &User, query: &str) -> anyhow::Result<(u16, Value)> {
    let (status, body) = api
        .get(&format!("/v1/search/messages?{query}"), Some(&who.token))
        .await?;
    Ok((status.as_u16(), body))
}

fn q(words: &str) -> String {
    format!("q={}", urlencode(words))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The texts of the hits of a search.
fn texts(reply: &Value) -> Vec<String> {
    reply["hits"]
        .as_array()
        .map(|hits| {
            hits.iter()
                .map(|h| {
                    h["message"]["body"]["text"]["text"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One search's texts, as the index is now (for what must not be found:
/// asked after a later message was found, so the index is past it).
async fn now(api: &Api, who: &User, query: &str) -> anyhow::Result<Vec<String>> {
    let (status, reply) = search(api, who, query).await?;
    anyhow::ensure!(status == 200, "search {query}: {status} {reply}");
    Ok(texts(&reply))
}

/// Searches until `want` texts are found (the index follows the events).
async fn found(api: &Api, who: &User, query: &str, want: usize) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, reply) = search(api, who, query).await?;
        anyhow::ensure!(status == 200, "search {query}: {status} {reply}");
        let got = texts(&reply);
        if got.len() >= want || Instant::now() > deadline {
            return Ok(got);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_found_by_chinese_english_and_mixed_words() -> anyhow::Result<()> {
    let (system, [alice, bob, carol]) =
        System::with_users(Mode::InProcess, ["alice", "bob", "carol"]).await?;
    let api = system.api();
    say(&api, &alice, &bob.user_id, "1", "我们明天开会讨论项目").await?;
    say(&api, &bob, &alice.user_id, "2", "Meetings moved to Friday").await?;
    say(&api, &alice, &bob.user_id, "3", "明天 meeting 改到3点").await?;
    say(&api, &alice, &bob.user_id, "4", "周末一起去看电影吗").await?;
    // Carol talks with Alice about meetings too, but Bob is not in it.
    say(&api, &alice, &carol.user_id, "5", "明天的 meeting 我不去了").await?;

    // Chinese inside unspaced text; one character alone.
    assert_eq!(
        found(&api, &bob, &q("开会"), 1).await?,
        ["我们明天开会讨论项目"]
    );
    assert_eq!(
        found(&api, &bob, &q("项目"), 1).await?,
        ["我们明天开会讨论项目"]
    );
    assert_eq!(
        found(&api, &bob, &q("影"), 1).await?,
        ["周末一起去看电影吗"]
    );
    // English, stemmed and without case: "meeting" finds "Meetings".
    let mut meeting = found(&api, &bob, &q("MEETING"), 2).await?;
    meeting.sort();
    assert_eq!(
        meeting,
        ["Meetings moved to Friday", "明天 meeting 改到3点"]
    );
    // Mixed: every word must be there.
    assert_eq!(
        found(&api, &bob, &q("明天 meeting"), 1).await?,
        ["明天 meeting 改到3点"]
    );
    assert!(now(&api, &bob, &q("电影 meeting")).await?.is_empty());
    // Alice sees both of her conversations; Carol only hers.
    assert_eq!(found(&api, &alice, &q("明天 meeting"), 2).await?.len(), 2);
    assert_eq!(
        found(&api, &carol, &q("meeting"), 1).await?,
        ["明天的 meeting 我不去了"]
    );
    assert!(now(&api, &carol, &q("开会")).await?.is_empty());

    // The hit: the message as stored, a snippet with its match marked (in
    // characters); one conversation, by time.
    let (status, reply) = search(&api, &bob, &format!("{}&limit=5", q("开会"))).await?;
    assert_eq!(status, 200, "{reply}");
    let hit = &reply["hits"][0];
    assert_eq!(hit["snippet"], "我们明天开会讨论项目");
    assert_eq!(hit["highlights"], json!([{ "start": 4, "end": 6 }]));
    // No score: it would tell how common a word is where Bob cannot read.
    assert!(hit.get("score").is_none(), "{hit}");
    assert_eq!(hit["message"]["senderId"], alice.user_id.as_str());
    let conversation = hit["message"]["conversationId"]
        .as_str()
        .unwrap_or_default();
    let (_, by_time) = search(
        &api,
        &alice,
        &format!("{}&order=time&conversation_id={conversation}", q("meeting")),
    )
    .await?;
    assert_eq!(
        texts(&by_time),
        ["明天 meeting 改到3点", "Meetings moved to Friday"]
    );
    let (_, from_bob) = search(
        &api,
        &alice,
        &format!("{}&sender_id={}", q("meeting"), bob.user_id),
    )
    .await?;
    assert_eq!(texts(&from_bob), ["Meetings moved to Friday"]);

    // Pages: one hit each, the cursor leads on, then ends.
    let (_, first) = search(&api, &alice, &format!("{}&limit=1", q("meeting"))).await?;
    let cursor = first["nextCursor"].as_str().unwrap_or_default().to_owned();
    assert!(!cursor.is_empty(), "{first}");
    let mut seen = texts(&first);
    let mut cursor = cursor;
    while !cursor.is_empty() {
        let (_, page) = search(
            &api,
            &alice,
            &format!("{}&limit=1&cursor={cursor}", q("meeting")),
        )
        .await?;
        seen.extend(texts(&page));
        cursor = page["nextCursor"].as_str().unwrap_or_default().to_owned();
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "{seen:?}");

    // Bad input: a clear error each.
    for bad in [
        "q=".to_owned(),
        q(&"字".repeat(201)),
        q("  ，。！ "),
        format!("{}&limit=51", q("a")),
        format!("{}&order=sideways", q("a")),
        format!("{}&kind=image", q("a")),
        format!("{}&cursor=zzz", q("a")),
        format!("{}&sender_id=not%20a%20user", q("a")),
        format!("{}&nonsense=1", q("a")),
    ] {
        let (status, reply) = search(&api, &bob, &bad).await?;
        assert_eq!(status, 400, "{bad}: {reply}");
    }
    let (status, _) = api
        .get(&format!("/v1/search/messages?{}", q("a")), None)
        .await?;
    assert_eq!(status, 401);
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_member_may_not_read_is_never_found() -> anyhow::Result<()> {
    let (system, [alice, bob, carol, dave]) =
        System::with_users(Mode::InProcess, ["alice", "bob", "carol", "dave"]).await?;
    let api = system.api();
    let group = api.create_group(&alice, "team", &[&bob, &carol]).await?;
    let group_id = group["id"].as_str().unwrap_or_default().to_owned();
    let chat = group["conversationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    say(&api, &alice, &chat, "g1", "budget before dave joined").await?;
    let (status, body) = api
        .post(
            &format!("/v1/groups/{group_id}/members"),
            Some(&alice.token),
            json!({ "userIds": [dave.user_id] }).to_string(),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    say(&api, &alice, &chat, "g2", "budget after dave joined").await?;
    // Carol is removed; what is said after is not hers.
    let (status, body) = api
        .send_method(
            Method::DELETE,
            &format!("/v1/groups/{group_id}/members/{}", carol.user_id),
            Some(&alice.token),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    say(&api, &alice, &chat, "g3", "budget after carol left").await?;
    let recalled = say(&api, &alice, &chat, "g4", "budget to recall").await?;
    let hidden = say(&api, &alice, &chat, "g5", "budget bob deletes").await?;

    // Everything is indexed once Bob finds all four.
    let mut bob_sees = found(&api, &bob, &q("budget"), 5).await?;
    bob_sees.sort();
    assert_eq!(bob_sees.len(), 5, "{bob_sees:?}");

    // The late joiner: nothing from before it joined.
    let mut dave_sees = found(&api, &dave, &q("budget"), 4).await?;
    dave_sees.sort();
    assert_eq!(
        dave_sees,
        [
            "budget after carol left",
            "budget after dave joined",
            "budget bob deletes",
            "budget to recall"
        ]
    );
    // The removed member: what it could read, nothing after.
    let mut carol_sees = found(&api, &carol, &q("budget"), 2).await?;
    carol_sees.sort();
    assert_eq!(
        carol_sees,
        ["budget after dave joined", "budget before dave joined"]
    );
    // Not even counted: what was said after she left (newer, so first by
    // time) does not move her cursor.
    let (_, page) = search(&api, &carol, &format!("{}&order=time&limit=1", q("budget"))).await?;
    assert_eq!(texts(&page), ["budget after dave joined"]);
    assert_eq!(page["nextCursor"], "o1", "{page}");

    // Recalled: gone for everyone. Deleted by Bob for himself: gone for
    // Bob only.
    let seq = recalled["seq"].as_str().map_or_else(
        || recalled["seq"].as_u64().unwrap_or_default(),
        |s| s.parse().unwrap_or_default(),
    );
    let (status, body) = api
        .post(
            &format!("/v1/conversations/{chat}/messages/{seq}/recall"),
            Some(&alice.token),
            "{}",
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let hidden_seq = hidden["seq"].as_str().map_or_else(
        || hidden["seq"].as_u64().unwrap_or_default(),
        |s| s.parse().unwrap_or_default(),
    );
    let (status, body) = api
        .post(
            &format!("/v1/conversations/{chat}/messages/delete"),
            Some(&bob.token),
            json!({ "seqs": [hidden_seq] }).to_string(),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, reply) = search(&api, &bob, &q("budget")).await?;
        let got = texts(&reply);
        if !got.iter().any(|t| t == "budget to recall") || Instant::now() > deadline {
            let mut got = got;
            got.sort();
            assert_eq!(
                got,
                [
                    "budget after carol left",
                    "budget after dave joined",
                    "budget before dave joined"
                ]
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut alice_sees = found(&api, &alice, &q("budget"), 4).await?;
    alice_sees.sort();
    assert_eq!(
        alice_sees,
        [
            "budget after carol left",
            "budget after dave joined",
            "budget before dave joined",
            "budget bob deletes"
        ]
    );
    // A stranger's conversation never appears, even asked for by id.
    let eve = api.user("eve").await?;
    assert!(now(&api, &eve, &q("budget")).await?.is_empty());
    let (status, reply) = search(
        &api,
        &eve,
        &format!("{}&conversation_id={chat}", q("budget")),
    )
    .await?;
    assert_eq!(status, 200);
    assert!(texts(&reply).is_empty(), "{reply}");
    system.stop().await;
    Ok(())
}

/// Every hit of a search, page after page: message ids.
async fn all_ids(api: &Api, who: &User, words: &str) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = search(
            api,
            who,
            &format!("{}&limit=50&order=time&cursor={cursor}", q(words)),
        )
        .await?;
        anyhow::ensure!(status == 200, "{page}");
        for hit in page["hits"].as_array().into_iter().flatten() {
            ids.push(hit["message"]["id"].as_str().unwrap_or_default().to_owned());
        }
        cursor = page["nextCursor"].as_str().unwrap_or_default().to_owned();
        if cursor.is_empty() {
            return Ok(ids);
        }
    }
}

/// Waits until a search finds `want` distinct messages, then pages through
/// them once more (nothing arriving meanwhile: offsets stay put) and
/// returns that pass's ids, sorted, repeats included.
async fn all_found(api: &Api, who: &User, words: &str, want: usize) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // While the index still takes messages in, a newer one moves the
        // later pages' offsets: repeats are expected until it is done.
        let mut ids = all_ids(api, who, words).await?;
        ids.sort();
        ids.dedup();
        if ids.len() >= want || Instant::now() > deadline {
            let mut ids = all_ids(api, who, words).await?;
            ids.sort();
            return Ok(ids);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_feed_misses_nothing_and_a_deleted_index_is_rebuilt() -> anyhow::Result<()> {
    let (mut system, [alice, bob]) = System::with_users(Mode::Split, ["alice", "bob"]).await?;
    let api = system.api();
    for i in 0..40 {
        say(
            &api,
            &alice,
            &bob.user_id,
            &format!("a{i}"),
            &format!("北京 alpha {i}"),
        )
        .await?;
    }
    let alpha = all_found(&api, &bob, "北京 alpha", 40).await?;
    assert_eq!(alpha.len(), 40);

    // Killed in the middle of a burst: what it had not applied comes when
    // it is back, once.
    let sender = {
        let (api, alice, bob) = (api.clone(), alice.clone(), bob.clone());
        tokio::spawn(async move {
            for i in 0..150 {
                say(
                    &api,
                    &alice,
                    &bob.user_id,
                    &format!("b{i}"),
                    &format!("上海 beta {i}"),
                )
                .await?;
            }
            anyhow::Ok(())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    system.kill_process(e2e::Service::Search);
    sender.await??;
    system.spawn_process(e2e::Service::Search)?;
    system.wait_ready().await?;
    let beta = all_found(&api, &bob, "上海 beta", 150).await?;
    assert_eq!(beta.len(), 150);
    let mut unique = beta.clone();
    unique.dedup();
    assert_eq!(unique.len(), 150, "a message found twice");

    // The index deleted: rebuilt at start from the messages service, with
    // the same results.
    system.kill_process(e2e::Service::Search);
    std::fs::remove_dir_all(system.data_dir().join("search"))?;
    system.spawn_process(e2e::Service::Search)?;
    system.wait_ready().await?;
    assert_eq!(all_found(&api, &bob, "上海 beta", 150).await?, beta);
    assert_eq!(all_found(&api, &bob, "北京 alpha", 40).await?, alpha);

    // Rebuilt on demand, showing its progress.
    let out = system.natter_command(&["search", "reindex"])?;
    assert!(out.contains("search index rebuilt"), "{out}");
    assert!(out.contains("rebuilding"), "{out}");
    assert_eq!(all_found(&api, &bob, "上海 beta", 150).await?, beta);
    assert_eq!(all_found(&api, &bob, "北京 alpha", 40).await?, alpha);
    let status = system.natter_command(&["search", "status"])?;
    assert!(status.contains("messages indexed: 190"), "{status}");
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_friends_are_found_by_name_and_pinyin() -> anyhow::Result<()> {
    let (system, [alice, bob, carol]) =
        System::with_users(Mode::InProcess, ["alice", "bob", "carol"]).await?;
    let api = system.api();
    let (status, body) = api
        .send_method(
            Method::PATCH,
            "/v1/profile",
            Some(&alice.token),
            Some(json!({ "nickname": "王小明" })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let group = api.create_group(&bob, "项目组 Launch", &[&carol]).await?;
    // A group Bob is not in, with a name that would match.
    api.create_group(&alice, "项目 secret", &[&carol]).await?;
    let eve = api.user("eve").await?;

    let names = |reply: &Value| -> Vec<String> {
        reply["hits"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| {
                h["group"]["name"]
                    .as_str()
                    .or(h["peer"]["nickname"].as_str())
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    let find = |who: &User, typed: &str| {
        let (api, token, path) = (
            api.clone(),
            who.token.clone(),
            format!("/v1/search/conversations?q={}", urlencode(typed)),
        );
        async move { api.get(&path, Some(&token)).await }
    };
    for typed in ["小明", "xiaoming", "XIAOM", "alice"] {
        let (status, reply) = find(&bob, typed).await?;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(names(&reply), ["王小明"], "{typed}: {reply}");
        let hit = &reply["hits"][0];
        assert_eq!(
            hit["conversationId"],
            shared::ids::direct_conversation(&alice.user_id, &bob.user_id)
        );
        assert!(hit["peer"]["phone"].is_null(), "{hit}");
    }
    for typed in ["项目", "xiangmu", "xmz", "launch"] {
        let (_, reply) = find(&bob, typed).await?;
        assert_eq!(names(&reply), ["项目组 Launch"], "{typed}: {reply}");
        assert_eq!(reply["hits"][0]["conversationId"], group["conversationId"]);
    }
    // Initials: 王小明 (wxm) and 项目组 Launch (xmzlaunch) both hold "xm".
    let (_, reply) = find(&bob, "xm").await?;
    let mut got = names(&reply);
    got.sort();
    assert_eq!(got, ["王小明", "项目组 Launch"]);
    // Carol is in both groups; Eve is in none and has no friends.
    let (_, reply) = find(&carol, "xm").await?;
    let mut got = names(&reply);
    got.sort();
    assert_eq!(got, ["王小明", "项目 secret", "项目组 Launch"]);
    let (_, reply) = find(&eve, "xm").await?;
    assert!(names(&reply).is_empty(), "{reply}");
    // People search (anyone signed in): pinyin and initials too; a Chinese
    // query matches the nickname itself, not pinyin.
    for typed in ["xiaoming", "wangxiao", "wxm", "小明"] {
        let (status, reply) = api
            .get(
                &format!("/v1/users/search?q={}", urlencode(typed)),
                Some(&eve.token),
            )
            .await?;
        assert_eq!(status, 200, "{reply}");
        let nicknames: Vec<&str> = reply["users"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u["nickname"].as_str())
            .collect();
        assert_eq!(nicknames, ["王小明"], "{typed}: {reply}");
    }
    for bad in ["", "%20%20", &"a".repeat(101)] {
        let (status, reply) = api
            .get(
                &format!("/v1/search/conversations?q={bad}"),
                Some(&bob.token),
            )
            .await?;
        assert_eq!(status, 400, "{bad:?}: {reply}");
    }
    system.stop().await;
    Ok(())
}
