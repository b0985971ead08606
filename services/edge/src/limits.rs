//! What one user may do on this edge, over all of their devices: open
//! WebSockets (at once and per minute), send messages, send typing
//! indicators, and ask for inbox replays. Each limit answers `rate_limited`
//! with the wait (an HTTP 429 with `Retry-After` before an upgrade, an
//! `error` frame on a socket). The counts are per edge, in memory, bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::RpcError;
use shared::ids::UserId;
use shared::limit::PerKey;

use crate::config::PerUser;

pub struct UserLimits {
    config: PerUser,
    open: Mutex<HashMap<UserId, usize>>,
    opens: PerKey<UserId>,
    sends: PerKey<UserId>,
    typing: PerKey<UserId>,
    resumes: PerKey<UserId>,
}

/// One open WebSocket of a user, counted until dropped.
pub struct SocketSlot {
    limits: Arc<UserLimits>,
    user: UserId,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = shared::sync::lock(&self.limits.open);
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
        if open.is_empty() {
            // A flood of sockets is over: give its memory back.
            open.shrink_to_fit();
        }
    }
}

impl UserLimits {
    pub fn new(config: PerUser) -> Self {
        let every = |per_second: u32| Duration::from_secs(1) / per_second.max(1);
        Self {
            opens: PerKey::per_minute("new connections", config.socket_opens_per_minute),
            sends: PerKey::new(
                "messages sent: slow down",
                config.send_burst,
                every(config.sends_per_second),
            ),
            typing: PerKey::new("typing indicators", 3, Duration::from_secs(1)),
            resumes: PerKey::new(
                "resumes",
                config.resume_burst,
                Duration::from_secs(60) / config.resumes_per_minute.max(1),
            ),
            open: Mutex::new(HashMap::new()),
            config,
        }
    }

    /// Counts a new WebSocket of `user`; refused over the user's limits.
    pub fn open_socket(self: &Arc<Self>, user: &UserId) -> Result<SocketSlot, RpcError> {
        let mut open = shared::sync::lock(&self.open);
        if open.get(user).copied().unwrap_or(0) >= self.config.sockets {
            let wait = Duration::from_secs(5);
            return Err(RpcError::rate_limited(
                format!(
                    "too many open connections ({} at most): close one",
                    self.config.sockets
                ),
                wait,
            ));
        }
        self.opens.check(user)?;
        *open.entry(user.clone()).or_default() += 1;
        Ok(SocketSlot {
            limits: self.clone(),
            user: user.clone(),
        })
    }

    pub fn send(&self, user: &UserId) -> Result<(), RpcError> {
        self.sends.check(user)
    }

    pub fn typing(&self, user: &UserId) -> Result<(), RpcError> {
        self.typing.check(user)
    }

    pub fn resume(&self, user: &UserId) -> Result<(), RpcError> {
        self.resumes.check(user)
    }

    /// Forgets users whose buckets are full again; run now and then.
    pub fn prune(&self) {
        for limit in [&self.opens, &self.sends, &self.typing, &self.resumes] {
            limit.prune();
        }
    }
}
