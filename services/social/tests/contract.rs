//! The social service's NATS contract, against a real nats-server: what it
//! serves, what each endpoint refuses, and what a new user starts with.

use shared::endpoint::endpoints::*;
use shared::proto::social as pb;
use shared::rpc::ErrorCode;
use shared::testing::contract::{Running, someone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn social_keeps_its_contract() {
    let social = Running::start(|nats, stop, url| {
        let config = social::Config {
            database_url: url,
            ..social::Config::default()
        };
        social::run(config, nats, stop)
    })
    .await;
    let caller = &social.caller;
    shared::assert_contract!(
        caller,
        social::MICRO_NAME,
        ProfileGet,
        ProfileUpdate,
        ProfileAvatarsUsed,
        UserSearch,
        FriendAsk,
        FriendRequests,
        FriendAccept,
        FriendReject,
        FriendList,
        FriendDelete,
        FriendRelation,
        FriendAudience,
        FriendVisible,
        BlockAdd,
        BlockRemove,
        BlockList,
    );

    let me = someone();
    let blocked = caller
        .call_as::<BlockList>(&me, &pb::Empty {})
        .await
        .expect("blocks");
    assert!(blocked.users.is_empty());
    let requests = caller
        .call_as::<FriendRequests>(&me, &pb::ListFriendRequestsRequest::default())
        .await
        .expect("requests");
    assert!(requests.requests.is_empty());
    let relation = caller
        .call_to::<FriendRelation>(&pb::RelationRequest {
            user_id: me.user_id.to_string(),
            other_user_id: "a.b".into(),
        })
        .await
        .expect_err("a malformed id");
    assert_eq!(relation.code, ErrorCode::BadRequest);
    let visible = caller
        .call_to::<FriendVisible>(&pb::VisibleRequest {
            viewer_id: me.user_id.to_string(),
            user_ids: vec![me.user_id.to_string(), "stranger".into()],
        })
        .await
        .expect("visible");
    assert_eq!(visible.user_ids, [me.user_id.to_string()], "only oneself");
    social.stop().await;
}
