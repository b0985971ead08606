//! Inputs: built from the protocol's structure (`arbitrary` frames and
//! JSON requests), then mutated at the byte level.

use arbitrary::{Arbitrary, Unstructured};
use prost::Message as _;
use rand::Rng;
use shared::proto::edge::{self as pb, client_frame};
use shared::proto::message::{self as msg, message_body};

use crate::targets::{PATH_NAMES, Target};

/// Words of the protocol a mutation may drop in.
const TOKENS: &[&[u8]] = &[
    b"\"id\"",
    b"\"send\"",
    b"\"ack\"",
    b"\"resume\"",
    b"\"ping\"",
    b"\"typing\"",
    b"\"auth\"",
    b"\"toUserId\"",
    b"\"conversationId\"",
    b"\"clientMsgId\"",
    b"\"body\"",
    b"\"text\"",
    b"\"cursor\"",
    b"\"replyToSeq\"",
    b"\"location\"",
    b"\"latitude\"",
    b"\"image\"",
    b"\"userIds\"",
    b"\"memberIds\"",
    b"\"name\"",
    b"\"phone\"",
    b"\"code\"",
    b"\"limit\"",
    b"\"18446744073709551615\"",
    b"18446744073709551616",
    b"-1",
    b"1e309",
    b"-0",
    b"\"NaN\"",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"\"\xe4\xbd\xa0\xe5\xa5\xbd\"",
    b"%00",
    b"%ff",
    b"%",
    b"&",
    b"=",
    b"+",
    b"d:",
    b"g:",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\x0a\x80\x80\x80\x80\x10",
];

#[derive(Arbitrary, Debug)]
enum Kind {
    Text(String),
    Location(f64, f64, String),
    Image(String, u32, u32),
    Ack(u64),
    Resume(u64),
    Ping(i64),
    Typing(String),
    Auth(String),
    Nothing,
}

#[derive(Arbitrary, Debug)]
struct Frame {
    id: u64,
    to: String,
    conversation: String,
    client_msg_id: String,
    reply_to_seq: u64,
    kind: Kind,
}

fn frame(f: Frame) -> pb::ClientFrame {
    let send = |body| {
        client_frame::Kind::Send(msg::SendRequest {
            conversation_id: f.conversation.clone(),
            to_user_id: f.to.clone(),
            client_msg_id: f.client_msg_id.clone(),
            body: Some(msg::MessageBody { kind: Some(body) }),
            reply_to_seq: f.reply_to_seq,
        })
    };
    let kind = match f.kind {
        Kind::Text(text) => Some(send(message_body::Kind::Text(msg::Text { text }))),
        Kind::Location(latitude, longitude, title) => {
            Some(send(message_body::Kind::Location(msg::Location {
                latitude,
                longitude,
                title,
                ..Default::default()
            })))
        }
        Kind::Image(file_id, width, height) => Some(send(message_body::Kind::Image(msg::Image {
            file_id,
            width,
            height,
            ..Default::default()
        }))),
        Kind::Ack(cursor) => Some(client_frame::Kind::Ack(pb::CursorAck { cursor })),
        Kind::Resume(cursor) => Some(client_frame::Kind::Resume(pb::Resume { cursor })),
        Kind::Ping(client_ts_ms) => Some(client_frame::Kind::Ping(pb::Ping { client_ts_ms })),
        Kind::Typing(conversation_id) => Some(client_frame::Kind::Typing(msg::TypingRequest {
            conversation_id,
        })),
        Kind::Auth(access_token) => Some(client_frame::Kind::Auth(pb::Auth { access_token })),
        Kind::Nothing => None,
    };
    pb::ClientFrame { id: f.id, kind }
}

/// A JSON value of the shape requests have: objects with the protocol's
/// field names, strings, numbers, arrays.
fn json(u: &mut Unstructured<'_>, depth: u8) -> arbitrary::Result<serde_json::Value> {
    use serde_json::Value;
    Ok(match u.int_in_range(0..=7)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => Value::from(u.arbitrary::<u64>()?.to_string()),
        4 => Value::from(u.arbitrary::<f64>()?),
        5 if depth < 3 => {
            let n = u.int_in_range(0..=3)?;
            Value::Array(
                (0..n)
                    .map(|_| json(u, depth + 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        6 if depth < 3 => {
            let mut map = serde_json::Map::new();
            for _ in 0..u.int_in_range(0..=4)? {
                let key = String::from_utf8_lossy(u.choose(TOKENS)?)
                    .trim_matches('"')
                    .to_owned();
                map.insert(key, json(u, depth + 1)?);
            }
            Value::Object(map)
        }
        _ => Value::from(u.arbitrary::<String>()?),
    })
}

/// A new input for `target`, built from its structure, into `out`.
pub fn generate(target: Target, rng: &mut impl Rng, out: &mut Vec<u8>) {
    let mut raw = vec![0u8; rng.gen_range(16..512)];
    rng.fill(raw.as_mut_slice());
    let mut u = Unstructured::new(&raw);
    let selector: u8 = rng.r#gen();
    out.push(selector);
    match target {
        Target::Frames => {
            let Ok(f) = Frame::arbitrary(&mut u) else {
                return;
            };
            let frame = frame(f);
            if selector.is_multiple_of(2) {
                out.extend(serde_json::to_vec(&frame).unwrap_or_default());
            } else {
                out.extend(frame.encode_to_vec());
            }
        }
        Target::Bodies => {
            if let Ok(value) = json(&mut u, 0) {
                out.extend(serde_json::to_vec(&value).unwrap_or_default());
            }
        }
        Target::Queries => {
            let n = rng.gen_range(0..4);
            let mut parts = Vec::new();
            for _ in 0..n {
                let key = String::from_utf8_lossy(TOKENS[rng.gen_range(0..23)])
                    .trim_matches('"')
                    .to_owned();
                let value: String = u.arbitrary().unwrap_or_default();
                parts.push(format!("{key}={}", value.replace(['&', '#', ' '], "%20")));
            }
            out.extend(parts.join("&").into_bytes());
        }
        Target::Paths => {
            for _ in 0..rng.gen_range(1..3) {
                out.push(rng.gen_range(0..PATH_NAMES.len() as u8));
                let value: String = u.arbitrary().unwrap_or_default();
                out.extend(value.into_bytes());
                out.push(0xff);
            }
        }
    }
}

/// A few random byte-level changes to `input`.
pub fn mutate(rng: &mut impl Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    for _ in 0..rng.gen_range(1..=4) {
        let len = input.len();
        match rng.gen_range(0..9) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] =
                    [0, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'}', b'0'][rng.gen_range(0..9)];
            }
            2 => {
                let i = rng.gen_range(0..=len);
                let token = TOKENS[rng.gen_range(0..TOKENS.len())];
                input.splice(i..i, token.iter().copied());
            }
            3 if len > 1 => {
                let start = rng.gen_range(0..len);
                let end = rng.gen_range(start..=len.min(start + 32));
                input.drain(start..end);
            }
            4 if len > 0 => {
                input.truncate(rng.gen_range(0..len));
            }
            5 if len > 1 && len < 8192 => {
                let start = rng.gen_range(0..len);
                let end = rng.gen_range(start..=len.min(start + 64));
                let copy: Vec<u8> = input[start..end].to_vec();
                let at = rng.gen_range(0..=len);
                input.splice(at..at, copy);
            }
            6 if !seeds.is_empty() => {
                let other = &seeds[rng.gen_range(0..seeds.len())];
                if !other.is_empty() {
                    let from = rng.gen_range(0..other.len());
                    let at = rng.gen_range(0..=len);
                    input.truncate(at);
                    input.extend_from_slice(&other[from..]);
                }
            }
            7 => {
                let i = rng.gen_range(0..=len);
                let n = rng.gen_range(1..8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.r#gen()).collect();
                input.splice(i..i, bytes);
            }
            _ if len > 0 => {
                // An interesting integer over 8 bytes.
                let i = rng.gen_range(0..len);
                let value: u64 =
                    [0, 1, u64::MAX, i64::MAX as u64, 1 << 53, 0x8000_0000][rng.gen_range(0..6)];
                for (k, b) in value.to_le_bytes().iter().enumerate() {
                    if let Some(slot) = input.get_mut(i + k) {
                        *slot = *b;
                    }
                }
            }
            _ => {}
        }
    }
}
