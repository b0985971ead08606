//! Identifiers: app-generated UUIDv7 strings (portable across SQLite and
//! PostgreSQL, time-ordered, safe as NATS subject tokens) and conversation ids.
//!
//! Ids arrive as strings from clients and other services; the types below
//! are what they become once checked ([`UserId::parse`],
//! [`ConversationId::parse`]), so code past the boundary never checks again.

use std::fmt;

use crate::rpc::RpcError;
use crate::subject::is_valid_token;

/// Defines an id that is one NATS subject token.
macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("Checks a ", $what, ": one NATS subject token (see [`is_valid_token`]).")]
            pub fn parse(text: impl Into<String>) -> Result<Self, RpcError> {
                let text = text.into();
                if is_valid_token(&text) {
                    Ok(Self(text))
                } else {
                    Err(RpcError::bad_request(concat!("malformed ", $what)))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

token_id!(
    /// A user's id.
    UserId,
    "user id"
);
token_id!(
    /// One device (login) of a user.
    DeviceId,
    "device id"
);
token_id!(
    /// A group's id.
    GroupId,
    "group id"
);

impl UserId {
    /// Checks a list of at most `max` user ids from a request.
    pub fn parse_all(ids: &[String], max: usize) -> Result<Vec<UserId>, RpcError> {
        if ids.len() > max {
            return Err(RpcError::bad_request(format!("at most {max} user ids")));
        }
        ids.iter().map(|id| UserId::parse(id.as_str())).collect()
    }
}

/// A conversation: one-to-one between two users, or a group's. Keeps its
/// text form (`d:<low>:<high>` or `g:<group>`) for storage and the wire.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConversationId {
    Direct {
        id: String,
        /// The participants, in ascending order.
        low: UserId,
        high: UserId,
    },
    Group {
        id: String,
        group: GroupId,
    },
}

impl ConversationId {
    /// Checks a conversation id from a request.
    pub fn parse(text: &str) -> Result<Self, RpcError> {
        if text.is_empty() {
            return Err(RpcError::bad_request("conversation_id is missing"));
        }
        if let Some((a, b)) = direct_participants(text) {
            return Ok(Self::Direct {
                id: text.to_owned(),
                low: UserId(a.to_owned()),
                high: UserId(b.to_owned()),
            });
        }
        if let Some(group) = group_of(text) {
            return Ok(Self::Group {
                id: text.to_owned(),
                group: GroupId(group.to_owned()),
            });
        }
        Err(RpcError::bad_request("unknown conversation id format"))
    }

    /// The one-to-one conversation of two users.
    pub fn direct(a: &UserId, b: &UserId) -> Self {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        Self::Direct {
            id: direct_conversation(low, high),
            low: low.clone(),
            high: high.clone(),
        }
    }

    /// A group's conversation.
    pub fn group(group: &GroupId) -> Self {
        Self::Group {
            id: group_conversation(group),
            group: group.clone(),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Direct { id, .. } | Self::Group { id, .. } => id,
        }
    }

    /// The group of a group conversation.
    pub fn group_id(&self) -> Option<&GroupId> {
        match self {
            Self::Group { group, .. } => Some(group),
            Self::Direct { .. } => None,
        }
    }

    /// The participants of a one-to-one conversation.
    pub fn participants(&self) -> Option<(&UserId, &UserId)> {
        match self {
            Self::Direct { low, high, .. } => Some((low, high)),
            Self::Group { .. } => None,
        }
    }

    /// In a one-to-one conversation `me` takes part in, the other one.
    pub fn peer_of(&self, me: &str) -> Option<&UserId> {
        let (low, high) = self.participants()?;
        if low == me {
            Some(high)
        } else if high == me {
            Some(low)
        } else {
            None
        }
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    fn conversation_ids_parse_once_into_their_kind() {
        let (a, b) = (
            UserId::parse("bob").unwrap(),
            UserId::parse("alice").unwrap(),
        );
        let direct = ConversationId::direct(&a, &b);
        assert_eq!(direct.as_str(), "d:alice:bob");
        assert_eq!(ConversationId::parse("d:alice:bob").unwrap(), direct);
        assert_eq!(direct.peer_of("alice").map(UserId::as_str), Some("bob"));
        assert_eq!(direct.peer_of("carol"), None);
        let group = ConversationId::parse("g:g1").unwrap();
        assert_eq!(group.group_id().map(GroupId::as_str), Some("g1"));
        assert_eq!(group.participants(), None);
        for bad in ["", "x", "d:b:a", "g:a.b"] {
            assert!(ConversationId::parse(bad).is_err(), "{bad}");
        }
        assert!(UserId::parse("a.b").is_err() && UserId::parse("").is_err());
    }

    #[test]
    fn malformed_direct_ids_are_rejected() {
        for bad in ["g:1", "d:a", "d:b:a", "d:a:a", "d:a.b:c", "d::x"] {
            assert_eq!(direct_participants(bad), None, "{bad}");
        }
    }
}
