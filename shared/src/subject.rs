//! Every NATS subject, stream, bucket and header name natter uses, built in one place.
//!
//! Roots follow `<root>.<version>.<noun>.<verb>`, noun before verb, so
//! `nats sub 'im.v1.message.>'` filters naturally, and calls, events, pushes and
//! inboxes live under separate roots so each can get its own permissions:
//!
//! - calls (request-reply, NATS micro endpoints): `im.v1.<noun>.<verb>`
//! - events (JetStream stream `IM_EVENTS`, public contract): `im.evt.v1.<noun>.<past-tense>`
//! - live pushes to a user's devices (core NATS), in `PushBatch`es per shard
//!   of users: `im.push.v1.s<shard>.entry` (new inbox entries; also per edge,
//!   `im.push.v1.e<edge>.entry`) and `im.push.v1.s<shard>.signal` (typing,
//!   presence)
//! - per-user inbox, the offline queue (JetStream stream `IM_INBOX`): `im.inbox.v1.<user_id>`

/// The root of every call subject; micro service endpoint groups hang below it.
pub const CALL_ROOT: &str = "im.v1";

/// Call subjects, one per endpoint.
pub mod call {
    pub const AUTH_REGISTER: &str = "im.v1.auth.register";
    pub const AUTH_LOGIN: &str = "im.v1.auth.login";
    pub const AUTH_KEYS: &str = "im.v1.auth.keys";
    pub const AUTH_LOOKUP: &str = "im.v1.auth.lookup";
    pub const AUTH_PHONE: &str = "im.v1.auth.phone";
    pub const AUTH_MULTIPLE_DEVICES: &str = "im.v1.auth.devices.multiple";
    pub const AUTH_PASSWORD: &str = "im.v1.auth.password";
    pub const AUTH_REFRESH: &str = "im.v1.auth.refresh";
    pub const AUTH_LOGOUT: &str = "im.v1.auth.logout";
    pub const AUTH_DEVICES: &str = "im.v1.auth.devices";
    pub const AUTH_LOGOUT_DEVICE: &str = "im.v1.auth.logout_device";
    pub const AUTH_PHONE_CODE: &str = "im.v1.auth.phone_code";
    pub const AUTH_REVOCATIONS: &str = "im.v1.auth.revocations";
    pub const AUTH_PHONE_LOGIN: &str = "im.v1.auth.phone_login";
    pub const AUTH_PHONE_REGISTER: &str = "im.v1.auth.phone_register";
    pub const AUTH_CHANGE_PHONE: &str = "im.v1.auth.change_phone";
    pub const FILE_UPLOAD_CREATE: &str = "im.v1.file.upload.create";
    pub const FILE_UPLOAD_STATUS: &str = "im.v1.file.upload.status";
    pub const FILE_UPLOAD_WRITE: &str = "im.v1.file.upload.write";
    pub const FILE_UPLOAD_DELETE: &str = "im.v1.file.upload.delete";
    pub const FILE_INFO: &str = "im.v1.file.info";
    pub const FILE_READ: &str = "im.v1.file.read";
    pub const FILE_DESCRIBE: &str = "im.v1.file.describe";
    pub const PROFILE_GET: &str = "im.v1.profile.get";
    pub const PROFILE_UPDATE: &str = "im.v1.profile.update";
    pub const PROFILE_AVATARS_USED: &str = "im.v1.profile.avatars_used";
    pub const USER_SEARCH: &str = "im.v1.user.search";
    pub const FRIEND_REQUEST: &str = "im.v1.friend.request";
    pub const FRIEND_REQUESTS: &str = "im.v1.friend.requests";
    pub const FRIEND_ACCEPT: &str = "im.v1.friend.accept";
    pub const FRIEND_REJECT: &str = "im.v1.friend.reject";
    pub const FRIEND_LIST: &str = "im.v1.friend.list";
    pub const FRIEND_DELETE: &str = "im.v1.friend.delete";
    pub const BLOCK_ADD: &str = "im.v1.block.add";
    pub const BLOCK_REMOVE: &str = "im.v1.block.remove";
    pub const BLOCK_LIST: &str = "im.v1.block.list";
    /// Internal: how two users relate (friends, blocks).
    pub const FRIEND_RELATION: &str = "im.v1.friend.relation";
    /// Internal: who may see a user's presence.
    pub const FRIEND_AUDIENCE: &str = "im.v1.friend.audience";
    /// Internal: whose presence a viewer may see.
    pub const FRIEND_VISIBLE: &str = "im.v1.friend.visible";
    pub const MESSAGE_SEND: &str = "im.v1.message.send";
    pub const MESSAGE_SEND_BATCH: &str = "im.v1.message.send_batch";
    pub const MESSAGE_HISTORY: &str = "im.v1.message.history";
    pub const CONVERSATION_LIST: &str = "im.v1.conversation.list";
    pub const CONVERSATION_READ: &str = "im.v1.conversation.read";
    pub const CONVERSATION_SETTINGS: &str = "im.v1.conversation.settings";
    pub const CONVERSATION_TYPING: &str = "im.v1.conversation.typing";
    pub const MESSAGE_RECALL: &str = "im.v1.message.recall";
    /// The caller's large groups (read fan-out), for its edge.
    pub const CONVERSATION_LARGE: &str = "im.v1.conversation.large";
    /// Internal: the last seq of some large groups, for the edges' check.
    pub const CONVERSATION_HEADS: &str = "im.v1.conversation.heads";
    pub const MESSAGE_DELETE: &str = "im.v1.message.delete";
    pub const MESSAGE_READS: &str = "im.v1.message.reads";
    pub const MESSAGE_FILE_ACCESS: &str = "im.v1.message.file_access";
    pub const MESSAGE_FILES_USED: &str = "im.v1.message.files_used";
    pub const MESSAGE_TRANSCRIPT: &str = "im.v1.message.transcript";
    pub const MESSAGE_TRANSCRIBE: &str = "im.v1.message.transcribe";
    pub const SPEECH_TRANSCRIBE: &str = "im.v1.speech.transcribe";
    /// Internal: the conversations a user may search, with read windows.
    pub const MESSAGE_SEARCH_SCOPE: &str = "im.v1.message.search_scope";
    /// Internal: which of some messages a user may read now.
    pub const MESSAGE_VISIBLE: &str = "im.v1.message.visible";
    /// Internal: every stored message, a page at a time.
    pub const MESSAGE_EXPORT: &str = "im.v1.message.export";
    pub const SEARCH_MESSAGES: &str = "im.v1.search.messages";
    pub const SEARCH_CONVERSATIONS: &str = "im.v1.search.conversations";
    /// Internal: where the search index stands.
    pub const SEARCH_STATUS: &str = "im.v1.search.status";
    /// Internal: empty the search index and rebuild it.
    pub const SEARCH_REINDEX: &str = "im.v1.search.reindex";
    /// Internal: the groups service brings a group conversation in step.
    pub const CONVERSATION_APPLY: &str = "im.v1.conversation.apply";
    pub const GROUP_CREATE: &str = "im.v1.group.create";
    pub const GROUP_GET: &str = "im.v1.group.get";
    pub const GROUP_MINE: &str = "im.v1.group.mine";
    pub const GROUP_DISMISS: &str = "im.v1.group.dismiss";
    pub const GROUP_LEAVE: &str = "im.v1.group.leave";
    pub const GROUP_INVITE: &str = "im.v1.group.invite";
    pub const GROUP_REMOVE: &str = "im.v1.group.remove";
    pub const GROUP_ROLE: &str = "im.v1.group.role";
    pub const GROUP_TRANSFER: &str = "im.v1.group.transfer";
    pub const GROUP_UPDATE: &str = "im.v1.group.update";
    pub const GROUP_MUTE: &str = "im.v1.group.mute";
    pub const GROUP_MEMBERS: &str = "im.v1.group.members";
    pub const PRESENCE_QUERY: &str = "im.v1.presence.query";
    pub const PRESENCE_STATUS: &str = "im.v1.presence.status";
    pub const PRESENCE_HEARTBEAT: &str = "im.v1.presence.heartbeat";
}

/// Event subjects (published to the `IM_EVENTS` stream).
pub mod event {
    pub const ROOT: &str = "im.evt.v1";
    pub const ALL: &str = "im.evt.v1.>";
    pub const USER_REGISTERED: &str = "im.evt.v1.user.registered";
    pub const DEVICES_REVOKED: &str = "im.evt.v1.device.revoked";
    pub const DEVICE_ADDED: &str = "im.evt.v1.device.added";
    pub const MESSAGES_CREATED: &str = "im.evt.v1.messages.created";
    pub const MESSAGE_RECALLED: &str = "im.evt.v1.message.recalled";
    pub const MESSAGE_TRANSCRIBED: &str = "im.evt.v1.message.transcribed";
    pub const PRESENCE_CHANGED: &str = "im.evt.v1.presence.changed";
    pub const PROFILE_UPDATED: &str = "im.evt.v1.profile.updated";
    pub const FRIEND_REQUESTED: &str = "im.evt.v1.friend.requested";
    pub const FRIEND_ADDED: &str = "im.evt.v1.friend.added";
    pub const FRIEND_REMOVED: &str = "im.evt.v1.friend.removed";
    pub const BLOCK_ADDED: &str = "im.evt.v1.block.added";
    pub const BLOCK_REMOVED: &str = "im.evt.v1.block.removed";
    pub const GROUP_CREATED: &str = "im.evt.v1.group.created";
    pub const GROUP_MEMBER_ADDED: &str = "im.evt.v1.group.member_added";
    pub const GROUP_MEMBER_REMOVED: &str = "im.evt.v1.group.member_removed";
    pub const GROUP_MEMBER_LEFT: &str = "im.evt.v1.group.member_left";
    pub const GROUP_ROLE_CHANGED: &str = "im.evt.v1.group.role_changed";
    pub const GROUP_OWNER_CHANGED: &str = "im.evt.v1.group.owner_changed";
    pub const GROUP_UPDATED: &str = "im.evt.v1.group.updated";
    pub const GROUP_MUTED: &str = "im.evt.v1.group.muted";
    pub const GROUP_DISMISSED: &str = "im.evt.v1.group.dismissed";
}

/// Header names.
pub mod header {
    /// The caller's user id, set by the edge after it verified the token.
    /// Services never trust a user id in a request body.
    pub const USER_ID: &str = "Natter-User-Id";
    /// The caller's device id, set by the edge next to [`USER_ID`].
    pub const DEVICE_ID: &str = "Natter-Device-Id";
    /// The client's IP address as the edge saw it (its socket, or a trusted
    /// proxy's header), for limits per address.
    pub const CLIENT_IP: &str = "Natter-Client-Ip";
    /// An inbox entry's id (`<message id>:<user>`), by which an append that
    /// may have been stored already is found again (`shared::inbox`).
    pub const ENTRY_ID: &str = "Natter-Entry-Id";
}

/// JetStream stream holding every user's inbox.
pub const INBOX_STREAM: &str = "IM_INBOX";
/// JetStream stream holding the public events.
pub const EVENTS_STREAM: &str = "IM_EVENTS";
/// KV bucket holding per-device presence keys (owned by the presence service).
pub const PRESENCE_BUCKET: &str = "im_presence";
/// KV bucket holding each device's acked inbox cursor (owned by the edges).
pub const CURSOR_BUCKET: &str = "im_cursors";

/// Wildcard covering every user's inbox subject.
pub const INBOX_ALL: &str = "im.inbox.v1.>";
/// Wildcard covering every user's push subjects (entries and signals).
pub const PUSH_ALL: &str = "im.push.v1.>";
/// Wildcard covering every user's inbox-entry pushes: only the services that
/// append to inboxes may publish here, so a push of an entry comes from
/// whoever could have written it into the inbox.
pub const PUSH_ENTRIES: &str = "im.push.v1.*.entry";
/// Wildcard covering every user's signals (typing, presence: never stored).
pub const PUSH_SIGNALS: &str = "im.push.v1.*.signal";

/// The inbox (offline queue) subject of one user.
pub fn inbox(user_id: &str) -> String {
    format!("im.inbox.v1.{user_id}")
}

/// The live subject of one large group's messages (read fan-out): each edge
/// subscribes once per group it has members of.
pub fn group_push(group_id: &str) -> String {
    format!("im.group.v1.{group_id}")
}

/// Push shards: the live pushes of inbox entries travel as one `PushBatch`
/// per shard of users (per batch of appends), and an edge subscribes to the
/// shards of its connected users, not to each user.
pub const PUSH_SHARDS: usize = 64;

/// The push shard of a user: FNV-1a of its id, so every process of every
/// version agrees.
pub fn push_shard(user_id: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in user_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % PUSH_SHARDS as u64) as usize
}

/// The live subject of one push shard's inbox entries (`PushBatch`).
pub fn push_shard_entries(shard: usize) -> String {
    format!("im.push.v1.s{shard}.entry")
}

/// The live subject of the inbox entries (`PushBatch`) for the users one
/// edge holds (see `shared::push_routes`).
pub fn push_edge_entries(edge_id: &str) -> String {
    format!("im.push.v1.e{edge_id}.entry")
}

/// The live subject that carries one user's new inbox entries (its shard's).
pub fn push_entry(user_id: &str) -> String {
    push_shard_entries(push_shard(user_id))
}

/// The live subject of one push shard's signals (typing, presence: a
/// `PushBatch` of pushes that carry a signal).
pub fn push_shard_signals(shard: usize) -> String {
    format!("im.push.v1.s{shard}.signal")
}

/// The live subject that carries signals to one user's devices (its
/// shard's): an edge hears them with its shard's entries, so a connection
/// costs no subscription of its own.
pub fn push_signal(user_id: &str) -> String {
    push_shard_signals(push_shard(user_id))
}

/// The KV key of one device's acked cursor.
pub fn cursor_key(user_id: &str, device_id: &str) -> String {
    format!("{user_id}.{device_id}")
}

/// Keys of the presence bucket ([`PRESENCE_BUCKET`]).
pub mod presence_key {
    /// Every device key (what the presence watcher follows).
    pub const DEVICES: &str = "dev.>";
    /// The prefix of device keys.
    pub const DEVICE_PREFIX: &str = "dev.";

    /// The key of one online device (its value: the edge holding it).
    pub fn device(user_id: &str, device_id: &str) -> String {
        format!("dev.{user_id}.{device_id}")
    }

    /// The key of a user's last-seen time.
    pub fn seen(user_id: &str) -> String {
        format!("seen.{user_id}")
    }
}

/// True when `token` can be used as one NATS subject token: non-empty, at most
/// 64 bytes, only ASCII letters, digits, '-' and '_'. User and device ids are
/// checked with this before they are put into a subject.
pub fn is_valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 64
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_subjects() {
        assert_eq!(inbox("u1"), "im.inbox.v1.u1");
        assert_eq!(
            push_entry("u1"),
            format!("im.push.v1.s{}.entry", push_shard("u1"))
        );
        assert!(
            (0..1000)
                .map(|i| push_shard(&format!("user-{i}")))
                .all(|s| s < PUSH_SHARDS)
        );
        assert_eq!(
            push_signal("u1"),
            format!("im.push.v1.s{}.signal", push_shard("u1"))
        );
        assert_eq!(cursor_key("u1", "d1"), "u1.d1");
    }

    #[test]
    fn tokens_reject_subject_syntax() {
        assert!(is_valid_token("0193a4b2-7c1d-7000-8000-000000000000"));
        for bad in ["", "a.b", "a*", ">", "a b", "用户", &"x".repeat(65)] {
            assert!(!is_valid_token(bad), "{bad:?} accepted");
        }
    }
}
