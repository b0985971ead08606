//! Identifiers: app-generated UUIDv7 strings (portable across SQLite and
//! PostgreSQL, time-ordered, safe as NATS subject tokens) and conversation ids.

/// A fresh time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The id of the one-to-one conversation between two users: `d:<a>:<b>` with
/// the two ids in ascending order, so both sides compute the same id.
pub fn direct_conversation(a: &str, b: &str) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    format!("d:{lo}:{hi}")
}

/// The two participants of a direct conversation id, if it is one.
pub fn direct_participants(conversation_id: &str) -> Option<(&str, &str)> {
    let rest = conversation_id.strip_prefix("d:")?;
    let (a, b) = rest.split_once(':')?;
    let valid = crate::subject::is_valid_token;
    (valid(a) && valid(b) && a < b).then_some((a, b))
}

/// The conversation of a group.
pub fn group_conversation(group_id: &str) -> String {
    format!("g:{group_id}")
}

/// The group of a group conversation id, if it is one.
pub fn group_of(conversation_id: &str) -> Option<&str> {
    conversation_id
        .strip_prefix("g:")
        .filter(|g| crate::subject::is_valid_token(g))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_ids_are_symmetric_and_parse_back() {
        let id = direct_conversation("bob", "alice");
        assert_eq!(id, direct_conversation("alice", "bob"));
        assert_eq!(direct_participants(&id), Some(("alice", "bob")));
    }

    #[test]
    fn group_conversation_ids() {
        assert_eq!(group_of(&group_conversation("g1")), Some("g1"));
        for bad in ["g:", "g:a.b", "d:a:b", "x"] {
            assert_eq!(group_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn malformed_direct_ids_are_rejected() {
        for bad in ["g:1", "d:a", "d:b:a", "d:a:a", "d:a.b:c", "d::x"] {
            assert_eq!(direct_participants(bad), None, "{bad}");
        }
    }
}
