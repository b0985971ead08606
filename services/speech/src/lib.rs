//! The speech service: voice messages turned into text by a pluggable
//! engine that speaks the OpenAI-compatible `POST /v1/audio/transcriptions`
//! (whisper.cpp's server, faster-whisper servers, hosted APIs).
//!
//! It reads `im.evt.v1.messages.created` with one durable consumer of its
//! own, fetches each voice message's recording from the files service (as
//! its sender, who may read it), sends it to the engine and hands the text
//! to the messages service (`im.v1.message.transcript`), which owns the
//! message and tells every recipient. An engine that is down is retried
//! with backoff (the event is redelivered later); a recording longer than
//! `max_audio_secs` or one the engine refuses is left without a transcript.
//! No engine configured: the service does nothing, and nothing else
//! breaks.
//!
//! Layout: [`config`] (what an operator sets), [`engine`] (the HTTP client
//! of the engine), [`service`] (the consumer).

pub mod config;
pub mod engine;
pub mod service;

pub use config::Config;
pub use service::run;

/// The micro service name its instances register (what `$SRV.PING` answers).
pub const MICRO_NAME: &str = "natter-speech";

/// The durable consumer's name on `IM_EVENTS`.
pub const CONSUMER: &str = "natter-speech";
