//! The index on disk (a real embedded SurrealDB): changes applied in one
//! batch keep their order, applying them again changes nothing, terms are
//! found only in the conversations asked for, and an index of another
//! layout starts empty.

use search::index::{Change, Doc, Index, Query, Window, scope_key, scoped};
use search::text;

fn doc(id: &str, conv: &str, seq: u64, words: &str) -> Doc {
    Doc {
        id: id.into(),
        conversation_id: conv.into(),
        seq,
        sender_id: "u1".into(),
        kind: "text",
        ts_ms: 1_000 + seq as i64,
        terms: text::indexed_string(words),
    }
}

fn whole(conv: &str) -> Window {
    Window {
        conversation_id: conv.into(),
        from: 1,
        to: 0,
    }
}

async fn ids(index: &Index, words: &str, windows: Vec<Window>) -> Vec<String> {
    let query = Query {
        terms: text::query(words),
        windows,
        ..Query::default()
    };
    let mut found: Vec<String> = index
        .search(&query)
        .await
        .expect("a search")
        .into_iter()
        .map(|f| f.key)
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_batch_applies_in_order_and_again_changes_nothing() {
    let dir = tempfile::tempdir().expect("a directory");
    let index = Index::open(dir.path()).await.expect("an index");
    let batch = vec![
        Change::Put(doc("m1", "d:a", 1, "明天开会 meeting")),
        Change::Put(doc("m2", "d:a", 2, "meeting notes")),
        Change::Recall("m2".into()),
        // A transcript before its message's record: kept when it comes.
        Change::Transcribed {
            id: "m3".into(),
            conversation_id: "d:a".into(),
            terms: text::indexed_string("voice about the meeting"),
        },
        Change::Put(doc("m3", "d:a", 3, "")),
        Change::Put(doc("m4", "d:b", 1, "meeting elsewhere")),
    ];
    index.apply(&batch).await.expect("applied");
    let both = || vec![whole("d:a")];
    assert_eq!(ids(&index, "meeting", both()).await, ["m1", "m3"]);
    // Again, and a late copy of the recalled message's creation.
    index.apply(&batch).await.expect("applied again");
    index
        .put(&[doc("m2", "d:a", 2, "meeting notes")])
        .await
        .expect("put");
    assert_eq!(ids(&index, "meeting", both()).await, ["m1", "m3"]);
    assert_eq!(index.count().await.expect("count"), 4);
    // Every term is required; Chinese inside unspaced text.
    assert_eq!(ids(&index, "开会 meeting", both()).await, ["m1"]);
    assert_eq!(
        ids(&index, "开会 notes", both()).await,
        Vec::<String>::new()
    );
    // Only the conversations asked for, each from its window.
    assert_eq!(ids(&index, "meeting", vec![whole("d:b")]).await, ["m4"]);
    let late = Window {
        conversation_id: "d:a".into(),
        from: 2,
        to: 0,
    };
    assert_eq!(ids(&index, "meeting", vec![late]).await, ["m3"]);
}

#[tokio::test]
async fn a_user_in_many_conversations_finds_hits_in_all_of_them() {
    let dir = tempfile::tempdir().expect("a directory");
    let index = Index::open(dir.path()).await.expect("an index");
    // More conversations than one statement asks about, and windows of
    // both kinds among them.
    let convs: Vec<String> = (0..150).map(|i| format!("d:c{i:03}")).collect();
    let mut docs = Vec::new();
    for (i, conv) in convs.iter().enumerate() {
        let words = if i % 50 == 7 {
            "budget review"
        } else {
            "lunch plans"
        };
        docs.push(doc(&format!("m{i:03}"), conv, 5, words));
    }
    // A conversation the user is not in, with the same words.
    docs.push(doc("stranger", "d:zzz", 5, "budget review"));
    index.put(&docs).await.expect("put");
    let mut windows: Vec<Window> = convs.iter().map(|c| whole(c)).collect();
    // Joined after the message in one, left before it in another.
    windows[57] = Window {
        conversation_id: convs[57].clone(),
        from: 6,
        to: 0,
    };
    windows[107] = Window {
        conversation_id: convs[107].clone(),
        from: 1,
        to: 4,
    };
    assert_eq!(ids(&index, "budget", windows).await, ["m007"]);
    let all: Vec<Window> = convs.iter().map(|c| whole(c)).collect();
    assert_eq!(
        ids(&index, "budget review", all).await,
        ["m007", "m057", "m107"]
    );
}

#[tokio::test]
async fn an_index_of_another_layout_starts_empty() {
    let dir = tempfile::tempdir().expect("a directory");
    {
        let index = Index::open(dir.path()).await.expect("an index");
        index
            .put(&[doc("m1", "d:a", 1, "hello")])
            .await
            .expect("put");
        index.set_layout_for_test(1).await.expect("an older layout");
    }
    // The store lets its lock go once it has shut down, in the background.
    let mut tries = 0;
    let index = loop {
        match Index::open(dir.path()).await {
            Ok(index) => break index,
            Err(e) if tries < 100 => {
                tries += 1;
                assert!(e.to_string().contains("locked"), "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("not opened again: {e}"),
        }
    };
    assert_eq!(index.count().await.expect("count"), 0);
    assert!(!index.rebuild().await.expect("rebuild state").done);
}

#[test]
fn scoped_terms_carry_their_conversation() {
    let key = scope_key("d:a:b");
    assert_eq!(key.len(), 10);
    assert_eq!(key, scope_key("d:a:b"), "stable");
    assert_ne!(key, scope_key("d:a:c"));
    assert_eq!(
        scoped("d:a:b", "明天 meet 明天"),
        [format!("{key}:meet"), format!("{key}:明天")],
        "each distinct term once"
    );
    assert!(scoped("d:a:b", "").is_empty());
}
