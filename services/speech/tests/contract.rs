//! The speech service's NATS contract, against a real nats-server: what it
//! serves and refuses, and its answer when no engine is configured.

use shared::endpoint::endpoints::*;
use shared::proto::message as pb;
use shared::rpc::ErrorCode;
use shared::testing::contract::Running;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_keeps_its_contract() {
    let speech =
        Running::start(|nats, stop, _| speech::run(speech::Config::default(), nats, stop)).await;
    let caller = &speech.caller;
    shared::assert_contract!(caller, speech::MICRO_NAME, SpeechTranscribe);

    // No engine: a clear refusal, and nothing else breaks.
    let voice = pb::Message {
        id: "m-1".into(),
        body: Some(pb::MessageBody {
            kind: Some(pb::message_body::Kind::Voice(pb::Voice {
                file_id: "f".into(),
                duration_ms: 1000,
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    let refused = caller
        .call_to::<SpeechTranscribe>(&pb::SpeechRequest {
            message: Some(voice),
        })
        .await
        .expect_err("no engine");
    assert_eq!(refused.code, ErrorCode::Unavailable);
    assert!(
        refused.message.contains("no speech engine"),
        "{}",
        refused.message
    );
    speech.stop().await;
}
