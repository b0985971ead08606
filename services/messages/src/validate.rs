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

/// A body of a known kind within the size limits.
pub fn body(body: Option<&MessageBody>, max_text_chars: usize) -> Result<(), RpcError> {
    match body.and_then(|b| b.kind.as_ref()) {
        None => Err(RpcError::bad_request("message body is empty")),
        Some(Kind::Text(text)) => {
            if text.text.trim().is_empty() {
                return Err(RpcError::bad_request("message text is empty"));
            }
            if text.text.chars().count() > max_text_chars {
                return Err(RpcError::too_large(format!(
                    "message text is longer than {max_text_chars} characters"
                )));
            }
            Ok(())
        }
        Some(Kind::System(_)) => Err(RpcError::bad_request(
            "system notices are written by the server only",
        )),
    }
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

    #[test]
    fn bodies() {
        assert!(body(Some(&text("你好 👋")), 10).is_ok());
        assert!(body(Some(&text("  ")), 10).is_err());
        assert!(body(None, 10).is_err());
        assert!(body(Some(&MessageBody { kind: None }), 10).is_err());
        assert!(body(Some(&text(&"字".repeat(10))), 10).is_ok());
        let err = body(Some(&text(&"字".repeat(11))), 10).unwrap_err();
        assert_eq!(err.code, shared::ErrorCode::TooLarge);
    }

    #[test]
    fn client_msg_ids() {
        assert!(client_msg_id("c-1").is_ok());
        assert!(client_msg_id("").is_err());
        assert!(client_msg_id("a b").is_err());
        assert!(client_msg_id(&"x".repeat(65)).is_err());
    }
}
