//! Voice messages to text: how long a recording takes from its send to its
//! transcript on the recipient's device, with the test engine (pocketsphinx
//! on this machine's CPU), against the engine alone on the same recording.

use std::time::{Duration, Instant};

use anyhow::ensure;
use serde_json::{Value, json};

use e2e::speech::{Engine, missed, send_voice, spoken};
use e2e::{Client, Format, Mode, Settings, System};
use shared::proto::delivery::inbox_entry;

use crate::Plan;
use crate::report::round;
use crate::target::{External, settings};

/// What the recording says.
const SAID: &str = "hello world this is a test";

pub async fn run(external: Option<&External>, plan: &Plan) -> anyhow::Result<Value> {
    if external.is_some() {
        return Ok(json!({ "skipped": "needs its own system (and its speech engine)" }));
    }
    let count = if plan.quick { 2 } else { 6 };
    let engine = Engine::start(0)?;
    let wav = spoken(SAID)?;

    // The engine alone, called as the speech service calls it.
    let http = reqwest::Client::new();
    let mut alone = Vec::new();
    for _ in 0..count {
        let started = Instant::now();
        let form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(wav.clone())
                    .file_name("voice.wav")
                    .mime_str("audio/wav")?,
            )
            .text("model", "whisper-1");
        let answer = http
            .post(format!("{}/v1/audio/transcriptions", engine.url))
            .multipart(form)
            .send()
            .await?;
        ensure!(answer.status().is_success(), "engine: {}", answer.status());
        answer.text().await?;
        alone.push(started.elapsed());
    }

    // Through natter: the send answered, then the transcript on the
    // recipient's connection.
    let system = System::start_with(
        Mode::AllInOne,
        Settings {
            speech_engine_url: engine.url.clone(),
            ..settings(plan)
        },
    )
    .await?;
    let api = system.api();
    let (alice, bob) = (api.user("alice").await?, api.user("bob").await?);
    api.befriend(&alice, &bob).await?;
    let mut listener = Client::connect_live(&system.ws_url(), &bob, Format::Binary).await?;
    let files = e2e::files::Files::new(&system);
    let mut through = Vec::new();
    let mut worst_missed = 0f64;
    for i in 0..count {
        let voice = files
            .upload(&alice, "hello.wav", "voice", wav.clone())
            .await?;
        let started = Instant::now();
        let sent = send_voice(&system, &alice, &bob, &format!("voice-{i}"), &voice).await?;
        let id = sent["messageId"].as_str().unwrap_or_default().to_owned();
        let heard = loop {
            let notice =
                tokio::time::timeout(Duration::from_secs(60), listener.next_notice()).await??;
            if let inbox_entry::Event::Transcribed(t) = notice
                && t.message_id == id
            {
                break t.transcript;
            }
        };
        through.push(started.elapsed());
        worst_missed = worst_missed.max(missed(SAID, &heard));
    }
    system.stop().await;

    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        ms(&v[v.len() / 2])
    };
    let max = |v: &[Duration]| v.iter().map(ms).fold(0f64, f64::max);
    let (alone_p50, alone_max) = (median(alone.clone()), max(&alone));
    let (through_p50, through_max) = (median(through.clone()), max(&through));
    println!(
        "speech: a {:.1} s recording, {count} times: the engine alone answers in {alone_p50:.0} ms (median; slowest {alone_max:.0}); \
         from the send to the transcript on the recipient's device {through_p50:.0} ms (slowest {through_max:.0}); \
         at most {:.0} % of its words missed",
        wav_secs(&wav),
        worst_missed * 100.0,
    );
    Ok(json!({
        "recording_secs": round(wav_secs(&wav)),
        "count": count,
        "engine_alone_ms_p50": round(alone_p50),
        "engine_alone_ms_max": round(alone_max),
        "send_to_transcript_ms_p50": round(through_p50),
        "send_to_transcript_ms_max": round(through_max),
        "words_missed_max": round(worst_missed),
    }))
}

/// The length of a 16-bit mono WAV from flite (its data after a 44-byte
/// header, at the rate its header says).
fn wav_secs(wav: &[u8]) -> f64 {
    let rate = wav
        .get(24..28)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0);
    if rate == 0 {
        return 0.0;
    }
    wav.len().saturating_sub(44) as f64 / 2.0 / f64::from(rate)
}
