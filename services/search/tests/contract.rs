//! The search service's NATS contract, against a real nats-server and an
//! index on disk: what it serves and refuses, and its index's state when
//! no messages service answers (the rebuild waits for one).

use shared::endpoint::endpoints::*;
use shared::proto::search as spb;
use shared::rpc::ErrorCode;
use shared::testing::contract::{Running, someone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_keeps_its_contract() {
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("index");
    let search = Running::start(move |nats, stop, _| {
        let config = search::Config {
            path,
            ..search::Config::default()
        };
        search::run(config, nats, stop)
    })
    .await;
    let caller = &search.caller;
    shared::assert_contract!(
        caller,
        search::MICRO_NAME,
        SearchMessages,
        SearchConversations,
        SearchStatus,
        SearchReindex,
    );
    let status = caller
        .call_to::<SearchStatus>(&spb::IndexStatusRequest {})
        .await
        .expect("status");
    assert_eq!(status.messages, 0);

    // Bad queries are refused before anything is asked of anyone.
    let me = someone();
    for bad in [
        spb::SearchMessagesRequest::default(),
        spb::SearchMessagesRequest {
            q: "。，！".into(),
            ..Default::default()
        },
        spb::SearchMessagesRequest {
            q: "a".repeat(201),
            ..Default::default()
        },
        spb::SearchMessagesRequest {
            q: "hello".into(),
            limit: 51,
            ..Default::default()
        },
        spb::SearchMessagesRequest {
            q: "hello".into(),
            cursor: "o99999999".into(),
            ..Default::default()
        },
    ] {
        let refused = caller
            .call_as::<SearchMessages>(&me, &bad)
            .await
            .expect_err("a bad query");
        assert_eq!(refused.code, ErrorCode::BadRequest, "{bad:?}");
    }
    // A good one needs the messages service, which is not running here.
    let unanswered = caller
        .call_as::<SearchMessages>(
            &me,
            &spb::SearchMessagesRequest {
                q: "hello".into(),
                ..Default::default()
            },
        )
        .await
        .expect_err("no messages service");
    assert_eq!(unanswered.code, ErrorCode::Unavailable);
    search.stop().await;
}
