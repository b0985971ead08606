//! Sessions that end. The auth service announces ended sessions on
//! `im.evt.v1.device.revoked` (a logout, "log out my other devices", a
//! password change); every edge then closes those devices' WebSockets at
//! once (4001) and refuses their access tokens issued before the end, for as
//! long as such a token can live. A WebSocket also closes when its access
//! token expires, unless the client brought a fresh one over the socket.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};

use prost::Message as _;
use shared::ids::{DeviceId, UserId};
use shared::proto::auth::DevicesRevoked;
use shared::rpc::Identity;

/// Close code of a connection whose session ended or whose token expired.
pub const SESSION_ENDED: u16 = 4001;

/// How long a revocation is kept: the longest an access token can live.
const KEEP_MS: i64 = 7 * 86_400 * 1000;
/// Users with revocations kept before the oldest are forgotten.
const MAX_USERS: usize = 100_000;
/// Revocations kept per user; beyond, the older half become one that
/// covers every device (refusing a little more: those devices refresh).
const MAX_PER_USER: usize = 64;

/// Something a session can end: an open connection.
pub trait Session: Send + Sync {
    fn end(&self, code: u16, reason: &str);
}

#[derive(Clone)]
struct Revocation {
    /// The devices; empty with `all_but` or `all`.
    devices: Vec<DeviceId>,
    all_but: Option<DeviceId>,
    /// Every device (older revocations merged).
    all: bool,
    at_ms: i64,
}

impl Revocation {
    fn covers(&self, device: &DeviceId) -> bool {
        if self.all {
            return true;
        }
        match &self.all_but {
            Some(kept) => kept != device,
            None => self.devices.contains(device),
        }
    }
}

/// Keeps a user's revocations bounded: the older half merged into one for
/// every device at the newest of their times (it refuses at least what
/// they did).
fn compact(list: &mut Vec<Revocation>) {
    if list.len() <= MAX_PER_USER {
        return;
    }
    list.sort_by_key(|r| r.at_ms);
    let older: Vec<Revocation> = list.drain(..list.len() - MAX_PER_USER / 2).collect();
    let at_ms = older.iter().map(|r| r.at_ms).max().unwrap_or(0);
    list.insert(
        0,
        Revocation {
            devices: Vec::new(),
            all_but: None,
            all: true,
            at_ms,
        },
    );
}

struct Open {
    device: DeviceId,
    id: u64,
    session: Weak<dyn Session>,
}

#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<UserId, Vec<Open>>>,
    revoked: Mutex<HashMap<UserId, Vec<Revocation>>>,
    /// Whether the sessions ended before this edge started are known
    /// (read from the auth service once, see [`Sessions::load`]).
    loaded: std::sync::atomic::AtomicBool,
}

impl Sessions {
    /// Notes an open connection of `who` (until [`Sessions::closed`]).
    pub fn opened(&self, who: &Identity, id: u64, session: Weak<dyn Session>) {
        shared::sync::lock(&self.open)
            .entry(who.user_id.clone())
            .or_default()
            .push(Open {
                device: who.device_id.clone(),
                id,
                session,
            });
    }

    pub fn closed(&self, who: &Identity, id: u64) {
        let mut open = shared::sync::lock(&self.open);
        if let Some(list) = open.get_mut(&who.user_id) {
            list.retain(|o| o.id != id);
            if list.is_empty() {
                open.remove(&who.user_id);
            }
        }
    }

    /// Whether an access token of `who` issued at `issued_at_ms` belongs
    /// to a session that ended since (both times are the auth service's).
    pub fn is_revoked(&self, who: &Identity, issued_at_ms: i64) -> bool {
        let revoked = shared::sync::lock(&self.revoked);
        revoked.get(&who.user_id).is_some_and(|list| {
            list.iter()
                .any(|r| r.covers(&who.device_id) && issued_at_ms < r.at_ms)
        })
    }

    /// Applies an announcement: ends the connections it covers and keeps it
    /// for the tokens still around.
    pub fn revoke(&self, event: &DevicesRevoked, now_ms: i64) {
        let Ok(user) = UserId::parse(&event.user_id) else {
            tracing::warn!("device.revoked event for a malformed user id ignored");
            return;
        };
        let revocation = Revocation {
            devices: event
                .device_ids
                .iter()
                .filter_map(|d| DeviceId::parse(d).ok())
                .collect(),
            all_but: (!event.every_device_but.is_empty())
                .then(|| DeviceId::parse(&event.every_device_but).ok())
                .flatten(),
            all: false,
            at_ms: event.at_ms,
        };
        // Recorded before the open connections are read: one being set up
        // meanwhile either is read here or sees the record in its own check.
        let mut revoked = shared::sync::lock(&self.revoked);
        if revoked.len() >= MAX_USERS {
            revoked.retain(|_, list| {
                list.retain(|r| now_ms - r.at_ms < KEEP_MS);
                !list.is_empty()
            });
            if revoked.len() >= MAX_USERS {
                revoked.clear();
            }
        }
        let list = revoked.entry(user.clone()).or_default();
        list.retain(|r| now_ms - r.at_ms < KEEP_MS);
        list.push(revocation.clone());
        compact(list);
        drop(revoked);
        let ended: Vec<_> = shared::sync::lock(&self.open)
            .get(&user)
            .map(|list| {
                list.iter()
                    .filter(|o| revocation.covers(&o.device))
                    .filter_map(|o| o.session.upgrade())
                    .collect()
            })
            .unwrap_or_default();
        for session in ended {
            session.end(SESSION_ENDED, "session ended: log in again");
        }
    }

    /// Applies the sessions ended before this edge started (within an
    /// access token's lifetime), as the auth service keeps them.
    pub async fn load(&self, caller: &shared::rpc::Caller) -> Result<usize, shared::RpcError> {
        let reply = caller
            .call_to::<shared::endpoint::endpoints::AuthRevocations>(
                &shared::proto::auth::RevocationsRequest {},
            )
            .await?;
        let now = shared::ids::now_ms();
        for event in &reply.revocations {
            self.revoke(event, now);
        }
        self.loaded
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(reply.revocations.len())
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Applies the announcements `events` (a subscription to
    /// `im.evt.v1.device.revoked`) brings, until `shutdown`.
    pub async fn listen(
        &self,
        mut events: async_nats::Subscriber,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        use futures::StreamExt as _;
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                message = events.next() => message,
            };
            let Some(message) = message else {
                return;
            };
            match DevicesRevoked::decode(message.payload.as_ref()) {
                Ok(event) => self.revoke(&event, shared::ids::now_ms()),
                Err(e) => tracing::warn!(error = %e, "undecodable device.revoked event"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU16, Ordering};

    struct Probe(AtomicU16);
    impl Session for Probe {
        fn end(&self, code: u16, _: &str) {
            self.0.store(code, Ordering::SeqCst);
        }
    }

    fn who(user: &str, device: &str) -> Identity {
        Identity {
            user_id: UserId::parse(user).unwrap(),
            device_id: DeviceId::parse(device).unwrap(),
        }
    }

    #[test]
    fn a_revocation_ends_the_devices_it_names_and_their_older_tokens() {
        let sessions = Sessions::default();
        let (phone, laptop) = (who("u1", "phone"), who("u1", "laptop"));
        let (a, b) = (
            Arc::new(Probe(AtomicU16::new(0))),
            Arc::new(Probe(AtomicU16::new(0))),
        );
        let (wa, wb): (Weak<dyn Session>, Weak<dyn Session>) =
            (Arc::downgrade(&a) as _, Arc::downgrade(&b) as _);
        sessions.opened(&phone, 1, wa);
        sessions.opened(&laptop, 2, wb);
        let event = DevicesRevoked {
            user_id: "u1".into(),
            device_ids: Vec::new(),
            every_device_but: "laptop".into(),
            at_ms: 10_000_500,
        };
        sessions.revoke(&event, 10_000_500);
        assert_eq!(a.0.load(Ordering::SeqCst), SESSION_ENDED);
        assert_eq!(b.0.load(Ordering::SeqCst), 0, "the kept device stays");
        assert!(sessions.is_revoked(&phone, 10_000_499));
        assert!(
            !sessions.is_revoked(&phone, 10_000_500),
            "a login right after stands"
        );
        assert!(!sessions.is_revoked(&laptop, 9_999_000));
        assert!(!sessions.is_revoked(&who("u2", "phone"), 1));
        sessions.closed(&phone, 1);
        sessions.closed(&laptop, 2);
        assert!(shared::sync::lock(&sessions.open).is_empty());
    }

    #[test]
    fn many_revocations_of_one_user_stay_bounded_and_still_refuse() {
        let sessions = Sessions::default();
        for i in 0..1000i64 {
            let event = DevicesRevoked {
                user_id: "u1".into(),
                device_ids: vec![format!("d{i}")],
                every_device_but: String::new(),
                at_ms: 1_000_000 + i,
            };
            sessions.revoke(&event, 1_000_000 + i);
        }
        let kept = shared::sync::lock(&sessions.revoked)
            .get(&UserId::parse("u1").unwrap())
            .map_or(0, Vec::len);
        assert!(kept <= MAX_PER_USER, "{kept}");
        // Every revoked device's older tokens are still refused.
        for i in [0i64, 500, 999] {
            assert!(sessions.is_revoked(&who("u1", &format!("d{i}")), 1_000_000 + i - 1));
        }
        assert!(!sessions.is_revoked(&who("u1", "d999"), 1_000_999));
    }
}
