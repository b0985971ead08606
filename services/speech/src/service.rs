//! The consumer of created messages: each voice message without a
//! transcript is heard by the engine and its text attached by the messages
//! service.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use prost::Message as _;
use shared::endpoint::Server;
use shared::endpoint::endpoints::{FileInfo, FileRead, MessageTranscript, SpeechTranscribe};
use shared::ids::{DeviceId, UserId};
use shared::proto::{file, message as pb};
use shared::rpc::{Caller, Identity};
use shared::service::StartError;
use shared::{Nats, RpcError, subject};
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, EngineError};
use crate::{CONSUMER, Config};

/// The most bytes read from the files service per request.
const CHUNK: u32 = 512 * 1024;
/// The longest wait before an event is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

struct State {
    config: Config,
    caller: Caller,
    engine: Engine,
}

/// Runs the speech service until `shutdown` is cancelled: its endpoint
/// (transcriptions asked for), and with an engine configured, the consumer
/// of created messages.
pub async fn run(
    config: Config,
    nats: Nats,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    config.validate()?;
    let state = Arc::new(State {
        engine: Engine::new(&config).map_err(|e| StartError::setup("the engine client", e))?,
        caller: nats.caller(),
        config,
    });
    let server = Server::start(
        &nats.client,
        crate::MICRO_NAME,
        "natter speech: voice messages to text",
        state.clone(),
        shutdown.clone(),
    )
    .await?
    .serve::<SpeechTranscribe, _, _>(4, State::on_demand)
    .listen()
    .await?;
    if !state.config.enabled() {
        tracing::info!("speech service: no engine configured (speech.engine_url); no transcripts");
        server.run().await;
        return Ok(());
    }
    if !state.config.automatic {
        tracing::info!("speech service ready: transcripts when asked for");
        server.run().await;
        return Ok(());
    }
    let events = shared::nats::events_stream(&nats.jetstream, &state.config.streams).await?;
    tracing::info!("speech service ready");
    tokio::join!(server.run(), consume(state, events, shutdown));
    tracing::info!("speech service stopped");
    Ok(())
}

/// Transcribes the voice messages of `im.evt.v1.messages.created`.
async fn consume(
    state: Arc<State>,
    events: async_nats::jetstream::stream::Stream,
    shutdown: CancellationToken,
) {
    let config = pull::Config {
        durable_name: Some(CONSUMER.into()),
        description: Some("natter speech: transcripts of voice messages".into()),
        filter_subject: subject::event::MESSAGES_CREATED.into(),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(state.config.timeout_secs + 30),
        max_ack_pending: 4,
        ..Default::default()
    };
    shared::service::consume(&events, config, &shutdown, |event| state.handle(event)).await;
}

impl State {
    /// Transcribes the voice messages of one event; acks it when done or
    /// hopeless, asks for it again later when the engine is down.
    async fn handle(&self, event: async_nats::jetstream::Message) {
        let created = match pb::MessagesCreated::decode(event.payload.as_ref()) {
            Ok(created) => created,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable messages.created skipped");
                let _ = event.ack().await;
                return;
            }
        };
        let tries = event.info().map(|i| i.delivered).unwrap_or(1).max(1);
        tracing::debug!(messages = created.messages.len(), tries, "messages created");
        for message in &created.messages {
            match self.transcribe(message).await {
                Ok(_) => {}
                Err(Outcome::Later(why)) => {
                    let wait = Duration::from_secs(1u64 << (tries - 1).min(6)).min(MAX_BACKOFF);
                    tracing::warn!(error = %why, message_id = %message.id, ?wait, "transcription postponed");
                    let _ = event.ack_with(AckKind::Nak(Some(wait))).await;
                    return;
                }
                Err(Outcome::Never(why)) => {
                    tracing::info!(reason = %why, message_id = %message.id, "no transcript");
                }
            }
        }
        let _ = event.ack().await;
    }

    /// A voice message heard now, for the messages service (which checked
    /// that the caller may read it).
    async fn on_demand(
        self: Arc<Self>,
        _: (),
        input: pb::SpeechRequest,
    ) -> Result<pb::SpeechReply, RpcError> {
        if !self.config.enabled() {
            return Err(RpcError::unavailable(
                "no speech engine is configured: voice messages get no transcripts",
            ));
        }
        let message = input.message.unwrap_or_default();
        let voice = match message.body.as_ref().and_then(|b| b.kind.as_ref()) {
            Some(pb::message_body::Kind::Voice(voice)) => voice,
            _ => {
                return Err(RpcError::bad_request(
                    "only voice messages have transcripts",
                ));
            }
        };
        if u64::from(voice.duration_ms) > self.config.max_audio_secs * 1000 {
            return Err(RpcError::too_large(format!(
                "voice messages longer than {} s get no transcript",
                self.config.max_audio_secs
            )));
        }
        match self.transcribe(&message).await {
            Ok(text) => Ok(pb::SpeechReply {
                transcript: text.unwrap_or_default(),
            }),
            Err(Outcome::Later(why)) => {
                tracing::warn!(error = %why, message_id = %message.id, "transcription asked for failed");
                Err(RpcError::unavailable(
                    "the speech engine is unavailable: try again later",
                ))
            }
            Err(Outcome::Never(why)) => Err(RpcError::bad_request(format!(
                "no transcript for this recording: {why}"
            ))),
        }
    }

    /// Transcribes `message` if it is a voice message without a transcript
    /// (and attaches the text); the text, or `None` for other messages.
    async fn transcribe(&self, message: &pb::Message) -> Result<Option<String>, Outcome> {
        let Some(pb::message_body::Kind::Voice(voice)) =
            message.body.as_ref().and_then(|b| b.kind.as_ref())
        else {
            return Ok(None);
        };
        if !voice.transcript.is_empty() {
            return Ok(Some(voice.transcript.clone()));
        }
        if u64::from(voice.duration_ms) > self.config.max_audio_secs * 1000 {
            return Err(Outcome::Never(format!(
                "the recording is longer than {} s",
                self.config.max_audio_secs
            )));
        }
        // The sender may read the recording: the files service decides.
        let sender = Identity {
            user_id: UserId::parse(message.sender_id.as_str()).map_err(never)?,
            device_id: DeviceId::parse(message.sender_device_id.as_str()).map_err(never)?,
        };
        let (audio, info) = self.recording(&sender, &voice.file_id).await?;
        let text = self
            .engine
            .transcribe(audio, &info.name, &info.media_type)
            .await
            .map_err(|e| match e {
                EngineError::Unavailable(why) => Outcome::Later(why),
                EngineError::Refused(why) => Outcome::Never(why),
            })?;
        if text.is_empty() {
            return Err(Outcome::Never("the engine heard nothing".into()));
        }
        self.caller
            .call_to::<MessageTranscript>(&pb::TranscriptRequest {
                message_id: message.id.clone(),
                transcript: text.clone(),
            })
            .await
            .map_err(|e| {
                if e.code == shared::rpc::ErrorCode::Unavailable
                    || e.code == shared::rpc::ErrorCode::Internal
                {
                    Outcome::Later(e.message)
                } else {
                    Outcome::Never(e.message)
                }
            })?;
        tracing::info!(message_id = %message.id, "transcript attached");
        Ok(Some(text))
    }

    /// A voice message's recording, read a chunk at a time.
    async fn recording(
        &self,
        sender: &Identity,
        file_id: &str,
    ) -> Result<(Vec<u8>, file::FileInfo), Outcome> {
        let info = self
            .caller
            .call_as::<FileInfo>(
                sender,
                &file::FileRef {
                    file_id: file_id.to_owned(),
                },
            )
            .await
            .map_err(files_error)?;
        if info.size > self.config.max_audio_secs * 1024 * 1024 {
            return Err(Outcome::Never("the recording is too large".into()));
        }
        let mut audio = Vec::with_capacity(info.size as usize);
        while (audio.len() as u64) < info.size {
            let reply = self
                .caller
                .call_as::<FileRead>(
                    sender,
                    &file::ReadRequest {
                        file_id: file_id.to_owned(),
                        offset: audio.len() as u64,
                        length: CHUNK,
                        variant: String::new(),
                    },
                )
                .await
                .map_err(files_error)?;
            if reply.data.is_empty() {
                return Err(Outcome::Later("the recording ended early".into()));
            }
            audio.extend_from_slice(&reply.data);
        }
        Ok((audio, info))
    }
}

/// What became of a voice message.
enum Outcome {
    /// Try again later (the engine or a service is down).
    Later(String),
    /// Leave it without a transcript.
    Never(String),
}

fn never(e: impl std::fmt::Display) -> Outcome {
    Outcome::Never(e.to_string())
}

fn files_error(e: RpcError) -> Outcome {
    match e.code {
        shared::rpc::ErrorCode::Unavailable | shared::rpc::ErrorCode::Internal => {
            Outcome::Later(e.message)
        }
        _ => Outcome::Never(e.message),
    }
}
