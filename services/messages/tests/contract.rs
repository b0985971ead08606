//! The messages service's NATS contract, against a real nats-server: what
//! it serves, what each endpoint refuses, and what a user with no messages
//! sees (the service alone: no social or groups service runs here).

use shared::endpoint::endpoints::*;
use shared::ids::{ConversationId, UserId};
use shared::proto::message as pb;
use shared::rpc::ErrorCode;
use shared::testing::contract::{Running, someone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_keeps_its_contract() {
    let messages = Running::start(|nats, stop, url| {
        let config = messages::Config {
            database_url: url,
            ..messages::Config::default()
        };
        messages::run(config, nats, stop)
    })
    .await;
    let caller = &messages.caller;
    shared::assert_contract!(
        caller,
        messages::MICRO_NAME,
        MessageSend,
        MessageSendBatch,
        MessageHistory,
        MessageRecall,
        MessageDelete,
        MessageReads,
        MessageFileAccess,
        MessageFilesUsed,
        MessageTranscript,
        MessageTranscribe,
        MessageSearchScope,
        MessageVisible,
        MessageExport,
        ConversationList,
        ConversationRead,
        ConversationSettings,
        ConversationTyping,
        ConversationLarge,
        ConversationHeads,
        ConversationApply,
    );

    let (me, other) = (someone(), someone());
    let list = caller
        .call_as::<ConversationList>(&me, &pb::ConversationsRequest::default())
        .await
        .expect("list");
    assert!(list.conversations.is_empty());
    // A direct chat without messages is readable by its two, and empty...
    let ours = ConversationId::direct(&me.user_id, &UserId::parse("peer").unwrap());
    let history = caller
        .call_as::<MessageHistory>(
            &me,
            &pb::HistoryRequest {
                conversation_id: ours.to_string(),
                ..Default::default()
            },
        )
        .await
        .expect("history");
    assert!(history.messages.is_empty() && !history.has_more);
    // ...and nobody else's.
    let refused = caller
        .call_as::<MessageHistory>(
            &other,
            &pb::HistoryRequest {
                conversation_id: ours.to_string(),
                ..Default::default()
            },
        )
        .await
        .expect_err("someone else's conversation");
    assert_eq!(refused.code, ErrorCode::Forbidden);
    // Sending needs the social service's answer about the two users.
    let send = caller
        .call_as::<MessageSend>(
            &me,
            &pb::SendRequest {
                to_user_id: "peer".into(),
                client_msg_id: "c1".into(),
                body: Some(pb::MessageBody {
                    kind: Some(pb::message_body::Kind::Text(pb::Text { text: "hi".into() })),
                }),
                ..Default::default()
            },
        )
        .await
        .expect_err("no social service");
    assert_eq!(send.code, ErrorCode::Unavailable);

    // What search asks: nobody's scope holds anything yet, nothing is
    // visible, nothing to export; internal only, and checked.
    let scope = caller
        .call_to::<MessageSearchScope>(&pb::SearchScopeRequest {
            user_id: me.user_id.to_string(),
        })
        .await
        .expect("scope");
    assert!(scope.windows.is_empty());
    let visible = caller
        .call_to::<MessageVisible>(&pb::VisibleRequest {
            user_id: me.user_id.to_string(),
            refs: vec![pb::MessageRef {
                conversation_id: ours.to_string(),
                seq: 1,
            }],
        })
        .await
        .expect("visible");
    assert!(visible.messages.is_empty());
    let export = caller
        .call_to::<MessageExport>(&pb::ExportRequest::default())
        .await
        .expect("export");
    assert!(export.messages.is_empty() && !export.more && export.total == 0);
    for bad in [
        pb::VisibleRequest {
            user_id: String::new(),
            ..Default::default()
        },
        pb::VisibleRequest {
            user_id: me.user_id.to_string(),
            refs: vec![pb::MessageRef::default(); 201],
        },
    ] {
        let refused = caller
            .call_to::<MessageVisible>(&bad)
            .await
            .expect_err("bad visible request");
        assert_eq!(refused.code, ErrorCode::BadRequest);
    }
    let refused = caller
        .call_to::<MessageExport>(&pb::ExportRequest {
            limit: 1001,
            ..Default::default()
        })
        .await
        .expect_err("too big a page");
    assert_eq!(refused.code, ErrorCode::BadRequest);
    messages.stop().await;
}
