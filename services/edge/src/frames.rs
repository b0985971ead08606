//! WebSocket frame codec: client frames arrive as protobuf (binary messages)
//! or as their canonical protobuf JSON mapping (text messages); server frames
//! leave in the format the client used last.

use prost::Message;
use shared::RpcError;
use shared::proto::edge::{ClientFrame, ServerFrame, client_frame, server_frame};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Binary,
}

/// A frame the edge could not understand: the id to answer (0 if unknown)
/// and the error.
pub struct BadFrame {
    pub id: u64,
    pub error: RpcError,
}

/// Decodes one client frame; a frame without a known kind is an error.
pub fn decode(format: Format, bytes: &[u8]) -> Result<ClientFrame, BadFrame> {
    let frame = match format {
        Format::Binary => ClientFrame::decode(bytes).map_err(|e| BadFrame {
            id: 0,
            error: RpcError::bad_request(format!("malformed protobuf frame: {e}")),
        })?,
        Format::Json => serde_json::from_slice::<ClientFrame>(bytes).map_err(|e| BadFrame {
            id: json_id(bytes),
            error: RpcError::bad_request(format!("malformed JSON frame: {e}")),
        })?,
    };
    if frame.kind.is_none() {
        return Err(BadFrame {
            id: frame.id,
            error: RpcError::bad_request("unknown frame type"),
        });
    }
    Ok(frame)
}

/// The `id` of a JSON frame that failed to decode as a whole, so the error
/// can still name the frame it answers.
fn json_id(bytes: &[u8]) -> u64 {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return 0;
    };
    match value.get("id") {
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

pub fn encode(format: Format, frame: &ServerFrame) -> Vec<u8> {
    match format {
        Format::Binary => frame.encode_to_vec(),
        Format::Json => serde_json::to_vec(frame).expect("server frames always serialize"),
    }
}

pub fn error(reply_to: u64, error: &RpcError) -> ServerFrame {
    ServerFrame {
        reply_to,
        kind: Some(server_frame::Kind::Error(error.to_proto())),
    }
}

pub fn reply(reply_to: u64, kind: server_frame::Kind) -> ServerFrame {
    ServerFrame {
        reply_to,
        kind: Some(kind),
    }
}

/// A short name of a client frame's kind, for logs.
pub fn kind_name(kind: &client_frame::Kind) -> &'static str {
    match kind {
        client_frame::Kind::Send(_) => "send",
        client_frame::Kind::Ack(_) => "ack",
        client_frame::Kind::Resume(_) => "resume",
        client_frame::Kind::Ping(_) => "ping",
        client_frame::Kind::Typing(_) => "typing",
        client_frame::Kind::Auth(_) => "auth",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::proto::edge::Ping;

    #[test]
    fn json_frames_use_the_canonical_mapping() {
        let frame = decode(Format::Json, br#"{"id":"7","ping":{"clientTsMs":"5"}}"#)
            .ok()
            .unwrap();
        assert_eq!(frame.id, 7);
        assert_eq!(
            frame.kind,
            Some(client_frame::Kind::Ping(Ping { client_ts_ms: 5 }))
        );
        // Numbers are accepted for 64-bit fields too, and snake_case names.
        let frame = decode(Format::Json, br#"{"id":8,"ping":{"client_ts_ms":6}}"#)
            .ok()
            .unwrap();
        assert_eq!(frame.id, 8);
    }

    #[test]
    fn bad_frames_say_what_is_wrong() {
        let bad = decode(Format::Json, b"{not json").err().unwrap();
        assert!(bad.error.message.starts_with("malformed JSON frame"));
        let bad = decode(Format::Json, br#"{"id":3,"fly":{}}"#).err().unwrap();
        assert_eq!(bad.id, 3);
        let bad = decode(Format::Json, br#"{"id":4}"#).err().unwrap();
        assert_eq!(
            (bad.id, bad.error.message.as_str()),
            (4, "unknown frame type")
        );
        let bad = decode(Format::Binary, &[0xff, 0xff, 0xff]).err().unwrap();
        assert!(bad.error.message.starts_with("malformed protobuf frame"));
    }
}
