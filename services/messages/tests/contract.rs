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
    messages.stop().await;
}
