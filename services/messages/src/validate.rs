//! What a sender may send.

use shared::RpcError;
use shared::proto::message::{MessageBody, message_body::Kind};

pub const CLIENT_MSG_ID_MAX: usize = 64;

/// Prefix of the client_msg_id of system notices (not for clients).
pub const SYSTEM_PREFIX: &str = "sys:";

/// 1..=64 printable ASCII characters, not starting with "sys:".
pub fn client_msg_id(id: &str) -> Result<(), RpcError> {
    if id.is_empty() || id.len() > CLIENT_MSG_ID_MAX || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RpcError::bad_request(format!(
            "client_msg_id must be 1-{CLIENT_MSG_ID_MAX} printable ASCII characters"
        )));
    }
    if id.starts_with(SYSTEM_PREFIX) {
        return Err(RpcError::bad_request(
            "client_msg_id must not start with \"sys:\"",
        ));
    }
    Ok(())
}

/// Limits a body is checked against.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_text_chars: usize,
    pub max_file_bytes: u64,
}

const FILE_ID_MAX: usize = 128;
const FILE_NAME_MAX: usize = 255;
const MIME_MAX: usize = 100;
const PIXELS_MAX: u32 = 100_000;
const VOICE_MS_MAX: u32 = 3_600_000;
const VIDEO_MS_MAX: u32 = 86_400_000;
const PLACE_TITLE_MAX: usize = 100;
const PLACE_ADDRESS_MAX: usize = 200;

fn bad(message: impl Into<String>) -> RpcError {
    RpcError::bad_request(message)
}

/// A file id as the files service hands them out.
fn file_id(field: &str, id: &str, required: bool) -> Result<(), RpcError> {
    if id.is_empty() && !required {
        return Ok(());
    }
    let ok = !id.is_empty()
        && id.len() <= FILE_ID_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "{field} must be a file id (1-{FILE_ID_MAX} letters, digits, '-', '_', '.', ':')"
        )))
    }
}

/// "type/subtype" with the given type (any when `kind` is empty); empty
/// allowed when not `required`.
fn mime(kind: &str, value: &str, required: bool) -> Result<(), RpcError> {
    if value.is_empty() && !required {
        return Ok(());
    }
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    let ok = value.len() <= MIME_MAX
        && value
            .split_once('/')
            .is_some_and(|(t, sub)| token(t) && token(sub) && (kind.is_empty() || t == kind));
    if ok {
        Ok(())
    } else if kind.is_empty() {
        Err(bad("mime_type must look like type/subtype"))
    } else {
        Err(bad(format!("mime_type must be {kind}/<subtype>")))
    }
}

/// A size the client gave (0: none; the files service's replaces it).
fn size(bytes: u64, limits: &Limits) -> Result<(), RpcError> {
    if bytes > limits.max_file_bytes {
        return Err(RpcError::too_large(format!(
            "files may be at most {} bytes",
            limits.max_file_bytes
        )));
    }
    Ok(())
}

/// A size the client gave (0 by 0: none; the files service's replaces it
/// where it read one).
fn dimensions(width: u32, height: u32) -> Result<(), RpcError> {
    if (width, height) == (0, 0)
        || ((1..=PIXELS_MAX).contains(&width) && (1..=PIXELS_MAX).contains(&height))
    {
        Ok(())
    } else {
        Err(bad(format!(
            "width and height must be within 1..={PIXELS_MAX} (or both 0)"
        )))
    }
}

/// A duration the client gave (0: none; the files service's replaces it
/// where it read one).
fn duration(ms: u32, max: u32) -> Result<(), RpcError> {
    if ms <= max {
        Ok(())
    } else {
        Err(bad(format!("duration_ms must be within 0..={max}")))
    }
}

fn text_field(field: &str, text: &str, max: usize) -> Result<(), RpcError> {
    if text.chars().count() > max {
        return Err(RpcError::too_large(format!(
            "{field} is longer than {max} characters"
        )));
    }
    Ok(())
}

/// A body of a known kind, well-formed and within the limits. Server-only
/// kinds (system notices, recalls) are refused.
pub fn body(body: Option<&MessageBody>, limits: &Limits) -> Result<(), RpcError> {
    match body.and_then(|b| b.kind.as_ref()) {
        None => Err(bad("message body is empty")),
        Some(Kind::Text(text)) => {
            if text.text.trim().is_empty() {
                return Err(bad("message text is empty"));
            }
            text_field("message text", &text.text, limits.max_text_chars)
        }
        Some(Kind::Image(image)) => {
            file_id("file_id", &image.file_id, true)?;
            file_id("thumbnail_file_id", &image.thumbnail_file_id, false)?;
            dimensions(image.width, image.height)?;
            size(image.size_bytes, limits)?;
            mime("image", &image.mime_type, false)
        }
        Some(Kind::Voice(voice)) => {
            file_id("file_id", &voice.file_id, true)?;
            duration(voice.duration_ms, VOICE_MS_MAX)?;
            size(voice.size_bytes, limits)?;
            mime("audio", &voice.mime_type, false)?;
            text_field("transcript", &voice.transcript, limits.max_text_chars)
        }
        Some(Kind::Video(video)) => {
            file_id("file_id", &video.file_id, true)?;
            file_id("thumbnail_file_id", &video.thumbnail_file_id, false)?;
            duration(video.duration_ms, VIDEO_MS_MAX)?;
            dimensions(video.width, video.height)?;
            size(video.size_bytes, limits)?;
            mime("video", &video.mime_type, false)
        }
        Some(Kind::File(file)) => {
            file_id("file_id", &file.file_id, true)?;
            let name = file.name.trim();
            if name.is_empty()
                || name.chars().count() > FILE_NAME_MAX
                || name
                    .chars()
                    .any(|c| c.is_control() || c == '/' || c == '\\')
            {
                return Err(bad(format!(
                    "file name must be 1-{FILE_NAME_MAX} characters without '/' or control characters"
                )));
            }
            size(file.size_bytes, limits)?;
            mime("", &file.mime_type, false)
        }
        Some(Kind::Location(place)) => {
            let ok = place.latitude.is_finite()
                && place.longitude.is_finite()
                && (-90.0..=90.0).contains(&place.latitude)
                && (-180.0..=180.0).contains(&place.longitude);
            if !ok {
                return Err(bad(
                    "latitude must be within -90..=90 and longitude within -180..=180",
                ));
            }
            text_field("title", &place.title, PLACE_TITLE_MAX)?;
            text_field("address", &place.address, PLACE_ADDRESS_MAX)?;
            if place
                .title
                .chars()
                .chain(place.address.chars())
                .any(char::is_control)
            {
                return Err(bad("title and address must not contain control characters"));
            }
            Ok(())
        }
        Some(Kind::System(_) | Kind::Recalled(_)) => {
            Err(bad("this kind of body is written by the server only"))
        }
    }
}

/// A short preview of a body, for quotes and conversation lists.
pub fn preview(body: Option<&MessageBody>) -> String {
    const MAX: usize = 100;
    let text = match body.and_then(|b| b.kind.as_ref()) {
        Some(Kind::Text(t)) => t.text.trim().to_owned(),
        Some(Kind::Image(_)) => "[image]".into(),
        Some(Kind::Voice(_)) => "[voice]".into(),
        Some(Kind::Video(_)) => "[video]".into(),
        Some(Kind::File(f)) => format!("[file] {}", f.name),
        Some(Kind::Location(l)) => format!("[location] {}", l.title),
        Some(Kind::System(n)) => format!("[{}]", n.kind),
        Some(Kind::Recalled(_)) => "[recalled]".into(),
        None => String::new(),
    };
    text.chars().take(MAX).collect()
}

/// Most members one change may touch.
const CHANGE_MEMBERS_MAX: usize = 100_000;

/// A group change from the groups service: well-formed ids and roles.
pub fn change(change: &shared::proto::message::ConversationChange) -> Result<(), RpcError> {
    use shared::subject::is_valid_token;
    if shared::ids::group_of(&change.conversation_id).is_none() {
        return Err(RpcError::bad_request("not a group conversation"));
    }
    if change.version == 0
        || !is_valid_token(&change.change_id)
        || !is_valid_token(&change.actor_id)
    {
        return Err(RpcError::bad_request(
            "malformed version, change id or actor",
        ));
    }
    if change.notice.is_none() {
        return Err(RpcError::bad_request("a change needs its notice"));
    }
    if change.members.len() > CHANGE_MEMBERS_MAX {
        return Err(RpcError::too_large("too many members in one change"));
    }
    for m in &change.members {
        if !is_valid_token(&m.user_id) {
            return Err(RpcError::bad_request("malformed member id"));
        }
        if m.present && !matches!(m.role.as_str(), "owner" | "admin" | "member") {
            return Err(RpcError::bad_request("unknown role"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::proto::message::Text;

    fn text(t: &str) -> MessageBody {
        MessageBody {
            kind: Some(Kind::Text(Text { text: t.into() })),
        }
    }

    const LIMITS: Limits = Limits {
        max_text_chars: 10,
        max_file_bytes: 1000,
    };

    fn of(kind: Kind) -> MessageBody {
        MessageBody { kind: Some(kind) }
    }

    #[test]
    fn bodies() {
        assert!(body(Some(&text("你好 👋")), &LIMITS).is_ok());
        assert!(body(Some(&text("  ")), &LIMITS).is_err());
        assert!(body(None, &LIMITS).is_err());
        assert!(body(Some(&MessageBody { kind: None }), &LIMITS).is_err());
        assert!(body(Some(&text(&"字".repeat(10))), &LIMITS).is_ok());
        let err = body(Some(&text(&"字".repeat(11))), &LIMITS).unwrap_err();
        assert_eq!(err.code, shared::ErrorCode::TooLarge);
    }

    #[test]
    fn media_bodies_are_checked_for_shape_and_size() {
        use shared::proto::message::{File, Image, Location, Video, Voice};
        let image = Image {
            file_id: "f-1".into(),
            width: 640,
            height: 480,
            size_bytes: 1000,
            mime_type: "image/jpeg".into(),
            thumbnail_file_id: String::new(),
        };
        assert!(body(Some(&of(Kind::Image(image.clone()))), &LIMITS).is_ok());
        for broken in [
            Image {
                file_id: "../x".into(),
                ..image.clone()
            },
            Image {
                width: 0,
                ..image.clone()
            },
            Image {
                mime_type: "video/mp4".into(),
                ..image.clone()
            },
            Image {
                mime_type: "image".into(),
                ..image.clone()
            },
        ] {
            assert_eq!(
                body(Some(&of(Kind::Image(broken))), &LIMITS)
                    .unwrap_err()
                    .code,
                shared::ErrorCode::BadRequest
            );
        }
        let big = Image {
            size_bytes: 1001,
            ..image
        };
        assert_eq!(
            body(Some(&of(Kind::Image(big))), &LIMITS).unwrap_err().code,
            shared::ErrorCode::TooLarge
        );
        let voice = Voice {
            file_id: "v".into(),
            duration_ms: 3000,
            size_bytes: 10,
            mime_type: "audio/ogg".into(),
            transcript: "你好".into(),
        };
        assert!(body(Some(&of(Kind::Voice(voice.clone()))), &LIMITS).is_ok());
        assert!(
            body(
                Some(&of(Kind::Voice(Voice {
                    duration_ms: VOICE_MS_MAX + 1,
                    ..voice
                }))),
                &LIMITS
            )
            .is_err()
        );
        let video = Video {
            file_id: "v".into(),
            duration_ms: 1,
            width: 1,
            height: 1,
            size_bytes: 1,
            mime_type: "video/mp4".into(),
            thumbnail_file_id: "t".into(),
        };
        assert!(body(Some(&of(Kind::Video(video))), &LIMITS).is_ok());
        let file = File {
            file_id: "f".into(),
            name: "报告.pdf".into(),
            size_bytes: 5,
            mime_type: "application/pdf".into(),
        };
        assert!(body(Some(&of(Kind::File(file.clone()))), &LIMITS).is_ok());
        assert!(
            body(
                Some(&of(Kind::File(File {
                    name: "a/b".into(),
                    ..file.clone()
                }))),
                &LIMITS
            )
            .is_err()
        );
        assert!(
            body(
                Some(&of(Kind::File(File {
                    mime_type: String::new(),
                    ..file
                }))),
                &LIMITS
            )
            .is_ok()
        );
        let place = Location {
            latitude: 39.9,
            longitude: 116.4,
            title: "天安门".into(),
            address: String::new(),
        };
        assert!(body(Some(&of(Kind::Location(place.clone()))), &LIMITS).is_ok());
        assert!(
            body(
                Some(&of(Kind::Location(Location {
                    latitude: 91.0,
                    ..place.clone()
                }))),
                &LIMITS
            )
            .is_err()
        );
        assert!(
            body(
                Some(&of(Kind::Location(Location {
                    longitude: f64::NAN,
                    ..place
                }))),
                &LIMITS
            )
            .is_err()
        );
        assert!(body(Some(&of(Kind::Recalled(Default::default()))), &LIMITS).is_err());
    }

    #[test]
    fn previews_are_short() {
        assert_eq!(preview(Some(&text(&"长".repeat(300)))).chars().count(), 100);
        assert_eq!(
            preview(Some(&of(Kind::Image(Default::default())))),
            "[image]"
        );
    }

    #[test]
    fn client_msg_ids() {
        assert!(client_msg_id("c-1").is_ok());
        assert!(client_msg_id("").is_err());
        assert!(client_msg_id("a b").is_err());
        assert!(client_msg_id(&"x".repeat(65)).is_err());
    }
}
