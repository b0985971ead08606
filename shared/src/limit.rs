//! Rate limits per key (a user, a client address): token buckets from
//! `governor`, refusing with `rate_limited` and the wait, and bounded in
//! memory (keys whose bucket is full again are forgotten).

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::RpcError;

/// The key of a client address for limits: an IPv4 address itself (also
/// when written IPv4-mapped, `::ffff:a.b.c.d`), an IPv6 address its /64 (one
/// subscriber usually holds a whole /64, and would otherwise have 2^64
/// addresses to spread over).
pub fn address_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Keys remembered before those with a full bucket are forgotten.
const MAX_KEYS: usize = 100_000;

/// A token bucket per key: `burst` at once, refilled at `per` a token.
pub struct PerKey<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    what: &'static str,
}

impl<K: Hash + Eq + Clone> PerKey<K> {
    /// `burst` at once, then one every `every`; `what` names what is
    /// limited in the refusal ("too many <what>").
    pub fn new(what: &'static str, burst: u32, every: Duration) -> Self {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(every.max(Duration::from_micros(1)))
            .expect("a positive period")
            .allow_burst(burst);
        Self {
            limiter: RateLimiter::keyed(quota),
            what,
        }
    }

    /// `n` a minute, all of them at once if need be.
    pub fn per_minute(what: &'static str, n: u32) -> Self {
        let n = n.max(1);
        Self::new(what, n, Duration::from_secs(60) / n)
    }

    /// Takes one token for `key`, or refuses with the time until one is back.
    pub fn check(&self, key: &K) -> Result<(), RpcError> {
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            RpcError::rate_limited(format!("too many {}", self.what), wait)
        })?;
        if self.limiter.len() > MAX_KEYS {
            self.prune();
        }
        Ok(())
    }

    /// Forgets the keys whose bucket is full again (they behave as new).
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_count_per_64_and_mapped_ipv4_as_itself() {
        let key = |a: &str| address_key(a.parse().unwrap()).to_string();
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:bbbb::9"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:3::1"), "2001:db8:1:3::");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
    }

    #[test]
    fn a_key_gets_its_burst_then_waits_and_others_are_untouched() {
        let limit = PerKey::new("sends", 3, Duration::from_secs(10));
        for _ in 0..3 {
            limit.check(&"alice").unwrap();
        }
        let refused = limit.check(&"alice").unwrap_err();
        assert_eq!(refused.code, crate::ErrorCode::RateLimited);
        assert!(refused.message.starts_with("too many sends"));
        let wait = refused.retry_after().unwrap();
        assert!((1..=10).contains(&wait), "{wait}");
        limit.check(&"bob").unwrap();
        assert_eq!(limit.len(), 2);
    }
}
