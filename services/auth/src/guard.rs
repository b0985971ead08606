//! What keeps password guessing and login floods from costing the users:
//! refusals that cost nothing come before any password hash.
//!
//! - **Per client address** at most `login.per_address_per_minute` attempts
//!   (logins and registrations, any username), a token bucket (`governor`).
//! - **Failures in a row**: after `login.free_failures` wrong passwords for
//!   one username from one address, each further attempt from there waits a
//!   doubling time (1 s, 2 s, 4 s ... up to `login.max_wait_secs`); an
//!   address that fails for many usernames (`free_failures` × 4) waits the
//!   same way for all of them. A success ends both.
//! - **A stranger cannot lock a user out**: the waits hold only the
//!   failing address. Many failures for one username from many addresses
//!   (`free_failures` × 10 within an hour) make every address the user has
//!   not logged in from recently wait; the addresses the user did log in from
//!   keep working.
//! - **Hashing** runs in `max_concurrent_hashes` slots with a bounded queue
//!   (`login.max_waiting_hashes`; when it is full the answer is an immediate
//!   `rate_limited`, not a timeout), and one address holds at most
//!   `login.hashes_per_address` of slots and queue at once, so one address
//!   cannot crowd out the others.
//!
//! The state is per auth instance and in memory (bounded); with several
//! instances each counts what it sees.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shared::RpcError;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::LoginLimits;

/// Remembered keys per map before the oldest half is forgotten.
const MAX_ENTRIES: usize = 100_000;
/// How long a run of failures is remembered after its last failure.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// How long an address a user logged in from counts as theirs.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 86_400);
/// Addresses remembered per user.
const KNOWN_PER_USER: usize = 8;

#[derive(Clone, Copy, Debug)]
struct Strikes {
    count: u32,
    last: Instant,
}

pub struct LoginGuard {
    limits: LoginLimits,
    attempts: shared::limit::PerKey<IpAddr>,
    state: Mutex<Memory>,
    slots: Semaphore,
    waiting: AtomicUsize,
}

#[derive(Default)]
struct Memory {
    /// Failures in a row per (lower-case username, address).
    pairs: HashMap<(String, IpAddr), Strikes>,
    /// Failures in a row per address, any username.
    addresses: HashMap<IpAddr, Strikes>,
    /// Failures per username, any address.
    users: HashMap<String, Strikes>,
    /// Addresses each user logged in from, with when.
    known: HashMap<String, Vec<(IpAddr, Instant)>>,
    /// Hashes each address has running or waiting.
    hashing: HashMap<IpAddr, usize>,
}

/// A hash slot, held while a password is hashed or verified.
pub struct Slot<'a> {
    guard: &'a LoginGuard,
    ip: IpAddr,
    _permit: SemaphorePermit<'a>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.guard.release(self.ip);
    }
}

/// The address of a call without one (a call between services).
fn or_unknown(ip: Option<IpAddr>) -> IpAddr {
    ip.map_or(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        shared::limit::address_key,
    )
}

/// The wait after `count` failures in a row when `free` are free.
fn wait_after(count: u32, free: u32, max: Duration) -> Option<Duration> {
    let over = count.checked_sub(free)?;
    Some(
        Duration::from_secs(1)
            .saturating_mul(1u32.checked_shl(over.min(20)).unwrap_or(u32::MAX))
            .min(max),
    )
}

/// Keeps a full map bounded: first the runs old enough to be over go, then
/// (someone filling the map on purpose) the older half, never the newest
/// runs, which are what a flood would want wiped.
fn forget_old<K: Clone + Eq + std::hash::Hash>(map: &mut HashMap<K, Strikes>, now: Instant) {
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, s| now.duration_since(s.last) < FORGET_AFTER);
    }
    if map.len() >= MAX_ENTRIES {
        let mut times: Vec<Instant> = map.values().map(|s| s.last).collect();
        let middle = times.len() / 2;
        let (_, cut, _) = times.select_nth_unstable(middle);
        let cut = *cut;
        map.retain(|_, s| s.last > cut);
    }
}

fn strike<K: Clone + Eq + std::hash::Hash>(map: &mut HashMap<K, Strikes>, key: K, now: Instant) {
    forget_old(map, now);
    let entry = map.entry(key).or_insert(Strikes {
        count: 0,
        last: now,
    });
    if now.duration_since(entry.last) >= FORGET_AFTER {
        entry.count = 0;
    }
    entry.count = entry.count.saturating_add(1);
    entry.last = now;
}

impl LoginGuard {
    pub fn new(limits: LoginLimits, hash_slots: usize) -> Self {
        Self {
            attempts: shared::limit::PerKey::per_minute(
                "attempts from your address",
                limits.per_address_per_minute,
            ),
            state: Mutex::new(Memory::default()),
            slots: Semaphore::new(hash_slots),
            waiting: AtomicUsize::new(0),
            limits,
        }
    }

    fn max_wait(&self) -> Duration {
        Duration::from_secs(self.limits.max_wait_secs)
    }

    /// Counts one attempt from `ip` (login or registration); refuses it
    /// when the address is over its rate.
    pub fn attempt(&self, ip: Option<IpAddr>) -> Result<(), RpcError> {
        let ip = or_unknown(ip);
        self.attempts.check(&ip)?;
        Ok(())
    }

    /// Refuses a login for `username` from `ip` while a run of failures
    /// makes it wait.
    pub fn check(&self, username: &str, ip: Option<IpAddr>) -> Result<(), RpcError> {
        let ip = or_unknown(ip);
        let name = username.to_lowercase();
        let now = Instant::now();
        let memory = shared::sync::lock(&self.state);
        let free = self.limits.free_failures;
        let waits = [
            memory
                .pairs
                .get(&(name.clone(), ip))
                .and_then(|s| Some(s.last + wait_after(s.count, free, self.max_wait())?)),
            memory
                .addresses
                .get(&ip)
                .and_then(|s| Some(s.last + wait_after(s.count, free * 4, self.max_wait())?)),
            memory
                .users
                .get(&name)
                .filter(|_| !memory.is_known(&name, ip, now))
                .and_then(|s| Some(s.last + wait_after(s.count, free * 10, self.max_wait())?)),
        ];
        let until = waits.into_iter().flatten().max();
        match until {
            Some(until) if until > now => Err(RpcError::rate_limited(
                "too many failed logins; wait before trying again",
                until - now,
            )),
            _ => Ok(()),
        }
    }

    /// Notes a wrong password (or unknown username) for `username` from `ip`.
    pub fn failed(&self, username: &str, ip: Option<IpAddr>) {
        let ip = or_unknown(ip);
        let name = username.to_lowercase();
        let now = Instant::now();
        let mut memory = shared::sync::lock(&self.state);
        strike(&mut memory.pairs, (name.clone(), ip), now);
        strike(&mut memory.addresses, ip, now);
        strike(&mut memory.users, name, now);
    }

    /// Notes a login: the run of failures for this username from this
    /// address ends (the address's run over all usernames does not: a login
    /// to one's own account must not clear guesses at others), and the
    /// address counts as the user's.
    pub fn succeeded(&self, username: &str, ip: Option<IpAddr>) {
        let ip = or_unknown(ip);
        let name = username.to_lowercase();
        let now = Instant::now();
        let mut memory = shared::sync::lock(&self.state);
        memory.pairs.remove(&(name.clone(), ip));
        if memory.known.len() >= MAX_ENTRIES {
            memory.known.retain(|_, list| {
                list.iter()
                    .any(|(_, at)| now.duration_since(*at) < KNOWN_FOR)
            });
        }
        if memory.known.len() >= MAX_ENTRIES {
            // Filled on purpose: the one remembered longest goes.
            let oldest = memory
                .known
                .iter()
                .min_by_key(|(_, list)| list.iter().map(|(_, at)| *at).max())
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                memory.known.remove(&oldest);
            }
        }
        let known = memory.known.entry(name).or_default();
        known.retain(|(a, at)| *a != ip && now.duration_since(*at) < KNOWN_FOR);
        if known.len() >= KNOWN_PER_USER {
            known.remove(0);
        }
        known.push((ip, now));
    }

    /// A hash slot for `ip`, waiting in the bounded queue; refused at once
    /// when the queue is full or the address holds its share already.
    /// Without an address (a signed-in user changing a password), only the
    /// queue bounds it.
    pub async fn slot(&self, ip: Option<IpAddr>) -> Result<Slot<'_>, RpcError> {
        let ip = ip.map_or(IpAddr::V4(Ipv4Addr::BROADCAST), shared::limit::address_key);
        if ip != IpAddr::V4(Ipv4Addr::BROADCAST) {
            let mut memory = shared::sync::lock(&self.state);
            let held = memory.hashing.entry(ip).or_default();
            if *held >= self.limits.hashes_per_address {
                return Err(RpcError::rate_limited(
                    "too many logins from your address at once",
                    Duration::from_secs(1),
                ));
            }
            *held += 1;
        }
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        if queued >= self.limits.max_waiting_hashes {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.release(ip);
            return Err(RpcError::rate_limited(
                "the server is busy with logins",
                Duration::from_secs(1),
            ));
        }
        let permit = self.slots.acquire().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match permit {
            Ok(permit) => Ok(Slot {
                guard: self,
                ip,
                _permit: permit,
            }),
            Err(_) => {
                self.release(ip);
                Err(RpcError::unavailable("shutting down"))
            }
        }
    }

    fn release(&self, ip: IpAddr) {
        let mut memory = shared::sync::lock(&self.state);
        if let Some(held) = memory.hashing.get_mut(&ip) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                memory.hashing.remove(&ip);
            }
        }
    }
}

impl Memory {
    fn is_known(&self, name: &str, ip: IpAddr, now: Instant) -> bool {
        self.known.get(name).is_some_and(|addresses| {
            addresses
                .iter()
                .any(|(a, at)| *a == ip && now.duration_since(*at) < KNOWN_FOR)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> LoginGuard {
        LoginGuard::new(LoginLimits::default(), 2)
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    #[test]
    fn waits_double_after_the_free_failures_up_to_the_cap() {
        let max = Duration::from_secs(900);
        let waits: Vec<Option<u64>> = (4..=8)
            .map(|n| wait_after(n, 5, max).map(|d| d.as_secs()))
            .collect();
        assert_eq!(waits, [None, Some(1), Some(2), Some(4), Some(8)]);
        assert_eq!(wait_after(u32::MAX, 5, max), Some(max));
    }

    #[test]
    fn failures_hold_the_failing_address_only() {
        let g = guard();
        for _ in 0..6 {
            g.failed("Alice", ip(1));
        }
        let refused = g.check("alice", ip(1)).expect_err("waits");
        assert!(refused.retry_after().is_some_and(|s| s >= 1));
        assert!(g.check("alice", ip(2)).is_ok(), "another address is free");
        assert!(g.check("bob", ip(1)).is_ok(), "another user from there too");
    }

    #[test]
    fn a_user_attacked_from_everywhere_still_logs_in_from_home() {
        let g = guard();
        g.succeeded("alice", ip(1));
        for attacker in 10..70 {
            g.failed("alice", ip(attacker));
        }
        assert!(g.check("alice", ip(200)).is_err(), "a new address waits");
        assert!(g.check("alice", ip(1)).is_ok(), "home does not");
    }

    #[test]
    fn a_success_ends_the_run() {
        let g = guard();
        for _ in 0..6 {
            g.failed("alice", ip(1));
        }
        g.succeeded("alice", ip(1));
        assert!(g.check("alice", ip(1)).is_ok());
    }

    #[test]
    fn logging_in_to_ones_own_account_does_not_clear_guesses_at_others() {
        let g = guard();
        for victim in 0..25 {
            g.failed(&format!("victim{victim}"), ip(1));
            g.succeeded("mallory", ip(1));
        }
        assert!(g.check("victim99", ip(1)).is_err(), "the address waits");
    }

    #[test]
    fn an_ipv6_subscriber_cannot_dodge_by_changing_its_interface_id() {
        let g = guard();
        for i in 0..6u16 {
            let addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 7, 7, i, 1, 2, 3);
            g.failed("alice", Some(IpAddr::V6(addr)));
        }
        let other = std::net::Ipv6Addr::new(0x2001, 0xdb8, 7, 7, 99, 9, 9, 9);
        assert!(g.check("alice", Some(IpAddr::V6(other))).is_err());
    }

    #[test]
    fn filling_the_memory_forgets_old_runs_not_new_ones() {
        let mut map = HashMap::new();
        let start = Instant::now();
        for i in 0..MAX_ENTRIES {
            map.insert(
                i,
                Strikes {
                    count: 1,
                    last: start,
                },
            );
        }
        let later = start + Duration::from_secs(1);
        strike(&mut map, usize::MAX, later);
        assert!(map.len() < MAX_ENTRIES);
        assert_eq!(map.get(&usize::MAX).map(|s| s.count), Some(1));
    }

    #[tokio::test]
    async fn one_address_holds_its_share_of_hash_slots_only() {
        let limits = LoginLimits {
            hashes_per_address: 2,
            ..LoginLimits::default()
        };
        let g = LoginGuard::new(limits, 2);
        let a = g.slot(ip(1)).await.expect("first");
        let b = g.slot(ip(1)).await.expect("second");
        let refused = g.slot(ip(1)).await.err().expect("third refused");
        assert_eq!(refused.code, shared::ErrorCode::RateLimited);
        drop(a);
        let c = g.slot(ip(1)).await.expect("room again");
        drop((b, c));
    }
}
