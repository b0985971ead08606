//! Voice messages turned into text: a real speech engine (pocketsphinx
//! behind the OpenAI-compatible endpoint, `e2e/engines/speech.py`) hears a
//! recording that flite speaks; the transcript reaches the recipient live
//! and stays in the history. An engine that is down is waited for.

use std::time::Duration;

use e2e::files::Files;
use e2e::speech::{Engine, missed, send_voice, spoken};
use e2e::{Client, Format, Mode, Settings, System};
use shared::proto::delivery::inbox_entry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_message_gets_its_transcript_once_the_engine_is_up() -> anyhow::Result<()> {
    // The engine's port is known, but it is not listening yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let settings = Settings {
        speech_engine_url: format!("http://127.0.0.1:{port}"),
        ..Settings::default()
    };
    let (system, [alice, bob]) =
        System::with_settings_and_users(Mode::InProcess, settings, ["alice", "bob"]).await?;
    let carol = system.api().user("carol").await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Json).await?;
    let files = Files::new(&system);
    let said = "hello world this is a test";
    let voice = files
        .upload(&alice, "hello.wav", "voice", spoken(said)?)
        .await?;
    send_voice(&system, &alice, &bob, "voice-1", &voice).await?;
    let (_, message) = b.messages(1).await?.remove(0);
    // Its length, read by the files service from the recording.
    let shared::proto::message::message_body::Kind::Voice(got) =
        message.body.and_then(|b| b.kind).expect("a body")
    else {
        panic!("not a voice message");
    };
    assert!(
        (1500..4000).contains(&got.duration_ms),
        "{}",
        got.duration_ms
    );
    assert!(got.transcript.is_empty());

    // Asked for while the engine is down: try later. Someone who cannot
    // read the message learns nothing of it; a text has no transcript.
    let transcribe = |who: &e2e::User, id: &str| {
        let api = system.api();
        let (token, path) = (who.token.clone(), format!("/v1/messages/{id}/transcribe"));
        async move {
            api.send_method(reqwest::Method::POST, &path, Some(&token), None)
                .await
        }
    };
    let (status, body) = transcribe(&bob, &message.id).await?;
    assert_eq!(status, 503, "{body}");
    let (status, _) = transcribe(&carol, &message.id).await?;
    assert_eq!(status, 404);
    let (_, text) = system
        .api()
        .send_method(
            reqwest::Method::POST,
            "/v1/messages",
            Some(&alice.token),
            Some(serde_json::json!({
                "toUserId": bob.user_id,
                "clientMsgId": "text-1",
                "body": { "text": { "text": "not a voice" } },
            })),
        )
        .await?;
    let text_id = text["messageId"].as_str().unwrap_or_default().to_owned();
    let (status, body) = transcribe(&bob, &text_id).await?;
    assert_eq!(status, 400, "{body}");

    // The engine comes up a little later: the transcription is retried.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _engine = Engine::start(port)?;
    let heard = loop {
        match tokio::time::timeout(Duration::from_secs(60), b.next_notice()).await?? {
            inbox_entry::Event::Transcribed(t) => {
                assert_eq!(t.message_id, message.id);
                break t.transcript;
            }
            _ => continue,
        }
    };
    assert!(missed(said, &heard) <= 0.2, "heard {heard:?}");
    // Asked for now: the one it has.
    let (status, body) = transcribe(&alice, &message.id).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["transcript"], heard.as_str());
    // In the history too, for devices that were offline.
    let conversation = shared::ids::direct_conversation(&alice.user_id, &bob.user_id);
    let (_, history) = system.api().history(&bob, &conversation, "").await?;
    assert_eq!(
        history["messages"][0]["body"]["voice"]["transcript"],
        heard.as_str(),
        "{history}"
    );
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_asks_for_a_transcript_when_they_are_not_automatic() -> anyhow::Result<()> {
    let engine = Engine::start(0)?;
    let settings = Settings {
        speech_engine_url: engine.url.clone(),
        speech_automatic: false,
        ..Settings::default()
    };
    let (system, [alice, bob]) =
        System::with_settings_and_users(Mode::InProcess, settings, ["alice", "bob"]).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Binary).await?;
    let files = Files::new(&system);
    let voice = files
        .upload(&alice, "t.wav", "voice", spoken("this is a test")?)
        .await?;
    send_voice(&system, &alice, &bob, "voice-2", &voice).await?;
    let (_, message) = b.messages(1).await?.remove(0);
    // Nothing comes by itself.
    b.expect_no_more_pushes().await?;
    let (status, body) = system
        .api()
        .send_method(
            reqwest::Method::POST,
            &format!("/v1/messages/{}/transcribe", message.id),
            Some(&bob.token),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let heard = body["transcript"].as_str().unwrap_or_default().to_owned();
    assert!(missed("this is a test", &heard) <= 0.25, "heard {heard:?}");
    // Every recipient's devices get it, the sender's too.
    match tokio::time::timeout(Duration::from_secs(10), b.next_notice()).await?? {
        inbox_entry::Event::Transcribed(t) => assert_eq!(t.transcript, heard),
        other => panic!("expected a transcript, got {other:?}"),
    }
    system.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chinese_goes_through_the_same_engine_interface() -> anyhow::Result<()> {
    // A stand-in engine that answers Chinese, and only to a "zh" hint.
    let said = "明天下午三点开会，别迟到 🙂";
    let engine = Engine::start_with(0, &["--fake", said, "--language", "zh"])?;
    let settings = Settings {
        speech_engine_url: engine.url.clone(),
        speech_language: "zh".into(),
        ..Settings::default()
    };
    let (system, [alice, bob]) =
        System::with_settings_and_users(Mode::InProcess, settings, ["alice", "bob"]).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, Format::Binary).await?;
    let voice = Files::new(&system)
        .upload(&alice, "语音.wav", "voice", e2e::files::wav(1200))
        .await?;
    send_voice(&system, &alice, &bob, "voice-zh", &voice).await?;
    let heard = loop {
        match tokio::time::timeout(Duration::from_secs(30), b.next_notice()).await?? {
            inbox_entry::Event::Transcribed(t) => break t.transcript,
            _ => continue,
        }
    };
    assert_eq!(heard, said);
    system.stop().await;
    Ok(())
}
