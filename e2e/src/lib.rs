//! End-to-end harness: a whole natter system against a real nats-server,
//! driven through real HTTP and WebSocket clients.
//!
//! - [`System`]: the services, in this process ([`Mode::InProcess`]) or one
//!   `natter` process per service ([`Mode::Split`]), on a fresh nats-server
//!   and a fresh data dir;
//! - [`Api`]: the HTTP JSON API;
//! - [`Client`]: a WebSocket client speaking JSON or protobuf frames;
//! - [`files`]: a tus client for uploads, and downloads;
//! - [`sms`]: a stand-in SMS gateway that receives the login codes;
//! - [`speech`]: a real speech engine, and speech to feed it.

mod api;
mod client;
pub mod files;
mod scenarios;
pub mod sms;
pub mod speech;
mod system;

pub use api::{Api, User};
pub use client::{Client, Format};
pub use scenarios::{
    BatchedStreams, Stream, chat, no_pushes, spawn_pipelined_sender, spawn_reader,
    spawn_reliable_sender,
};
pub use system::{Mode, Service, Settings, System, edge_config};

/// A text message body.
pub fn text(text: &str) -> shared::proto::message::MessageBody {
    use shared::proto::message::{MessageBody, Text, message_body::Kind};
    MessageBody {
        kind: Some(Kind::Text(Text { text: text.into() })),
    }
}

/// The text of a message body, or "" for other kinds.
pub fn text_of(message: &shared::proto::message::Message) -> &str {
    use shared::proto::message::message_body::Kind;
    match message.body.as_ref().and_then(|b| b.kind.as_ref()) {
        Some(Kind::Text(t)) => &t.text,
        _ => "",
    }
}
