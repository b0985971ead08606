//! The groups service's NATS contract, against a real nats-server: what it
//! serves, what each endpoint refuses, and what a user in no group sees.

use shared::endpoint::endpoints::*;
use shared::proto::group as pb;
use shared::rpc::ErrorCode;
use shared::testing::contract::{Running, someone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_keeps_its_contract() {
    let groups = Running::start(|nats, stop, url| {
        let config = groups::Config {
            database_url: url,
            ..groups::Config::default()
        };
        groups::run(config, nats, stop)
    })
    .await;
    let caller = &groups.caller;
    shared::assert_contract!(
        caller,
        groups::MICRO_NAME,
        GroupCreate,
        GroupGet,
        GroupMine,
        GroupMembers,
        GroupInvite,
        GroupRemove,
        GroupLeave,
        GroupRole,
        GroupTransfer,
        GroupUpdate,
        GroupMute,
        GroupDismiss,
    );

    let me = someone();
    let mine = caller
        .call_as::<GroupMine>(&me, &pb::MyGroupsRequest {})
        .await
        .expect("my groups");
    assert!(mine.groups.is_empty());
    let missing = caller
        .call_as::<GroupGet>(
            &me,
            &pb::GroupRequest {
                group_id: "no-such-group".into(),
            },
        )
        .await
        .expect_err("no such group");
    assert!(
        matches!(missing.code, ErrorCode::NotFound | ErrorCode::Forbidden),
        "{missing:?}"
    );
    let unnamed = caller
        .call_as::<GroupCreate>(&me, &pb::CreateGroupRequest::default())
        .await
        .expect_err("a group needs a name");
    assert_eq!(unnamed.code, ErrorCode::BadRequest);
    groups.stop().await;
}
