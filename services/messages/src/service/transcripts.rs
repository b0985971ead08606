//! Transcripts of voice messages: the speech service hears a recording and
//! the messages service, which owns the message, puts the text in its body
//! and tells everyone who received it (through their inboxes, so devices
//! that were offline learn of it too), as a recall does.

use std::sync::Arc;

use std::time::Duration;

use shared::RpcError;
use shared::endpoint::endpoints::SpeechTranscribe;
use shared::ids::ConversationId;
use shared::proto::{delivery, message as pb};
use shared::rpc::{Caller, Identity, internal};

use super::{State, to_proto};

/// How long a transcription asked for may take (the engine's own timeout
/// is the speech service's, 120 s by default).
const TRANSCRIBE_TIMEOUT: Duration = Duration::from_secs(150);
use crate::store;

impl State {
    /// A voice message's transcript, asked for by a member who can read it:
    /// the one it has, or one the speech service makes now (and attaches,
    /// so every recipient gets it too).
    pub(super) async fn transcribe(
        self: Arc<Self>,
        me: Identity,
        input: pb::TranscribeRequest,
    ) -> Result<pb::MessageTranscribed, RpcError> {
        let not_found = || RpcError::not_found("no such message");
        let row = store::message_by_id(&self.pool, &input.message_id)
            .await?
            .ok_or_else(not_found)?;
        let conversation = ConversationId::parse(&row.conversation_id)?;
        // Someone who cannot read it learns nothing of it.
        let window = self
            .readable(&me, &conversation)
            .await
            .map_err(|_| not_found())?;
        if !window.contains(row.seq) {
            return Err(not_found());
        }
        let message = to_proto(&row, self.recall_window_ms())?;
        let Some(pb::message_body::Kind::Voice(voice)) =
            message.body.as_ref().and_then(|b| b.kind.as_ref())
        else {
            return Err(RpcError::bad_request(
                "only voice messages have transcripts",
            ));
        };
        let transcript = if voice.transcript.is_empty() {
            Caller::new(self.caller.client.clone(), TRANSCRIBE_TIMEOUT)
                .call_to::<SpeechTranscribe>(&pb::SpeechRequest {
                    message: Some(message.clone()),
                })
                .await?
                .transcript
        } else {
            voice.transcript.clone()
        };
        Ok(pb::MessageTranscribed {
            conversation_id: row.conversation_id,
            seq: row.seq as u64,
            message_id: row.id,
            transcript,
        })
    }

    /// Attaches a transcript to a voice message; attaching it again tells
    /// the recipients again (an earlier telling may have failed).
    pub(super) async fn transcript(
        self: Arc<Self>,
        _: (),
        input: pb::TranscriptRequest,
    ) -> Result<pb::MessageTranscribed, RpcError> {
        let text = input.transcript.trim();
        if text.is_empty() {
            return Err(RpcError::bad_request("the transcript is empty"));
        }
        if text.chars().count() > self.config.max_text_chars {
            return Err(RpcError::too_large(format!(
                "a transcript is at most {} characters",
                self.config.max_text_chars
            )));
        }
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(RpcError::bad_request(
                "a transcript has no control characters",
            ));
        }
        let found = store::message_by_id(&self.pool, &input.message_id)
            .await?
            .ok_or_else(|| RpcError::not_found("no such message"))?;
        let conversation = ConversationId::parse(&found.conversation_id)?;
        let _order = self.order.lock([found.conversation_id.as_str()]).await;
        // The message itself reaches every inbox before its transcript.
        self.fan_out_pending(&conversation).await?;
        // Read again under the lock: a recall may have come meanwhile.
        let row = store::message_by_id(&self.pool, &input.message_id)
            .await?
            .ok_or_else(|| RpcError::not_found("no such message"))?;
        let mut body: pb::MessageBody = serde_json::from_str::<Option<pb::MessageBody>>(&row.body)
            .map_err(|e| internal("decode stored body", e))?
            .unwrap_or_default();
        let Some(pb::message_body::Kind::Voice(voice)) = body.kind.as_mut() else {
            return Err(RpcError::conflict(
                "not a voice message (or it was recalled)",
            ));
        };
        if voice.transcript != text {
            voice.transcript = text.to_owned();
            let json =
                serde_json::to_string(&Some(&body)).map_err(|e| internal("encode body", e))?;
            store::set_body(&self.write, &row.id, &json).await?;
        }
        let news = pb::MessageTranscribed {
            conversation_id: row.conversation_id.clone(),
            seq: row.seq as u64,
            message_id: row.id.clone(),
            transcript: text.to_owned(),
        };
        let recipients = self
            .recipients(&conversation, row.seq)
            .await
            .map_err(|e| internal("load recipients", e))?;
        let dedup = format!("transcript:{}:{}", row.id, text.len());
        self.tell(
            &recipients,
            delivery::inbox_entry::Event::Transcribed(news.clone()),
            &dedup,
        )
        .await?;
        if let Err(e) = shared::nats::publish_event(
            &self.jetstream,
            shared::subject::event::MESSAGE_TRANSCRIBED,
            prost::Message::encode_to_vec(&news).into(),
            &dedup,
        )
        .await
        {
            tracing::warn!(error = %e, "message.transcribed event not stored");
        }
        Ok(news)
    }
}
