//! Abuse limits as plain data structures: a rate limiter per key (source
//! address; later also wakes per tenant) and a counter of open connections
//! per key (server, tenant). The clock is a parameter (`now`), so tests
//! drive time; the caller holds them behind a lock.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The key a source address is limited under: IPv4 addresses (IPv4-mapped
/// IPv6 ones too) as they are, IPv6 addresses by their /64 — one
/// subscriber usually holds a whole /64, so per-address limits would be
/// none at all.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) & !(u128::MAX >> 64)).into()),
        v4 => v4,
    }
}

/// Whether an event may happen now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Refused; the next one would be allowed after this long.
    Limited {
        retry_after: Duration,
    },
}

/// A token bucket per key: `burst` events at once, then one per `interval`.
/// Kept as one instant per key (the generic cell rate algorithm: when the
/// bucket is next full), so a key costs a few dozen bytes.
#[derive(Debug)]
pub struct RateLimiter<K> {
    interval: Duration,
    /// How far ahead of `now` a key's full-bucket time may run: the burst.
    tolerance: Duration,
    max_keys: usize,
    /// Per key: when its bucket will be full again.
    full_at: HashMap<K, Instant>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `burst` (at least 1) events at once, one more per `interval`, for at
    /// most `max_keys` keys at once.
    pub fn new(interval: Duration, burst: u32, max_keys: usize) -> Self {
        RateLimiter { interval, tolerance: interval.saturating_mul(burst.max(1)), max_keys, full_at: HashMap::new() }
    }

    /// Takes a token of `key` at `now`, or says how long until one is free.
    /// A key not seen yet while `max_keys` keys are tracked is refused when
    /// pruning frees no room (a flood of distinct sources is refused rather
    /// than allowed to grow the table without bound).
    pub fn check(&mut self, key: &K, now: Instant) -> Decision {
        if !self.full_at.contains_key(key) && self.full_at.len() >= self.max_keys {
            self.prune(now);
            if self.full_at.len() >= self.max_keys {
                return Decision::Limited { retry_after: self.interval };
            }
        }
        let full = self.full_at.get(key).copied().filter(|t| *t > now).unwrap_or(now);
        let Some(after) = full.checked_add(self.interval) else {
            return Decision::Limited { retry_after: self.interval };
        };
        let ahead = after.saturating_duration_since(now);
        if ahead > self.tolerance {
            return Decision::Limited { retry_after: ahead - self.tolerance };
        }
        self.full_at.insert(key.clone(), after);
        Decision::Allowed
    }

    /// Forgets keys whose bucket is full again (they behave as new ones).
    pub fn prune(&mut self, now: Instant) {
        self.full_at.retain(|_, t| *t > now);
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.full_at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.full_at.is_empty()
    }
}

/// Open connections per key (a server, a tenant), each with an optional
/// limit. Keys with none open are forgotten.
#[derive(Debug)]
pub struct Concurrency<K> {
    open: HashMap<K, u32>,
}

impl<K> Default for Concurrency<K> {
    fn default() -> Self {
        Concurrency { open: HashMap::new() }
    }
}

impl<K: Hash + Eq + Clone> Concurrency<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens one connection under every key of `claims` (a key and its
    /// limit, `None` for none), or under none of them: `Err` with the first
    /// key at its limit.
    pub fn try_acquire(&mut self, claims: &[(K, Option<u32>)]) -> Result<(), K> {
        for (k, limit) in claims {
            let open = self.open.get(k).copied().unwrap_or(0);
            // Counted once per claim of the same key in this call too.
            let repeats = claims.iter().filter(|(other, _)| other == k).count() as u32;
            if limit.is_some_and(|l| open.saturating_add(repeats) > l) {
                return Err(k.clone());
            }
        }
        for (k, _) in claims {
            *self.open.entry(k.clone()).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Closes one connection under each key (as acquired).
    pub fn release(&mut self, keys: &[K]) {
        for k in keys {
            if let Some(n) = self.open.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.open.remove(k);
                }
            }
        }
    }

    /// Connections open under `key`.
    pub fn open(&self, key: &K) -> u32 {
        self.open.get(key).copied().unwrap_or(0)
    }

    /// Keys with connections open.
    pub fn keys(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_burst_then_one_per_interval_per_key() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(S, 3, 100);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(r.check(&a, t0), Decision::Allowed);
        }
        assert_eq!(r.check(&a, t0), Decision::Limited { retry_after: S });
        // Another source is not affected by the first one's storm.
        assert_eq!(r.check(&b, t0), Decision::Allowed);
        assert_eq!(r.check(&a, t0 + S / 2), Decision::Limited { retry_after: S / 2 });
        assert_eq!(r.check(&a, t0 + S), Decision::Allowed);
        assert!(matches!(r.check(&a, t0 + S), Decision::Limited { .. }));
        // After a quiet spell the burst is back, and the key can be pruned.
        for _ in 0..3 {
            assert_eq!(r.check(&a, t0 + 10 * S), Decision::Allowed);
        }
        r.prune(t0 + 20 * S);
        assert!(r.is_empty());
        // An interval too long for the clock refuses rather than panics.
        let mut never = RateLimiter::new(Duration::MAX, 1, 1);
        assert!(matches!(never.check(&a, t0), Decision::Limited { .. }));
    }

    #[test]
    fn the_key_table_is_bounded() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(S, 1, 2);
        assert_eq!(r.check(&1, t0), Decision::Allowed);
        assert_eq!(r.check(&2, t0), Decision::Allowed);
        assert!(matches!(r.check(&3, t0), Decision::Limited { .. }), "table full");
        assert_eq!(r.len(), 2);
        // Once the others' buckets are full again, there is room.
        assert_eq!(r.check(&3, t0 + 2 * S), Decision::Allowed);
    }

    #[test]
    fn ipv6_sources_are_limited_by_their_64() {
        let k = |s: &str| source_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:bbbb::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.1"), k("192.0.2.1"));
        assert_ne!(k("192.0.2.1"), k("192.0.2.2"));
    }

    #[test]
    fn connections_are_counted_per_server_and_tenant_all_or_nothing() {
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        enum Key {
            Server(&'static str),
            Tenant(&'static str),
        }
        let mut c = Concurrency::new();
        let join = |s| [(Key::Server(s), Some(2)), (Key::Tenant("acme"), Some(3))];
        assert_eq!(c.try_acquire(&join("a")), Ok(()));
        assert_eq!(c.try_acquire(&join("a")), Ok(()));
        assert_eq!(c.try_acquire(&join("a")), Err(Key::Server("a")));
        assert_eq!(c.try_acquire(&join("b")), Ok(()));
        // The tenant is at 3: refused, and the server's count is untouched.
        assert_eq!(c.try_acquire(&join("b")), Err(Key::Tenant("acme")));
        assert_eq!(c.open(&Key::Server("b")), 1);
        c.release(&[Key::Server("a"), Key::Tenant("acme")]);
        assert_eq!(c.try_acquire(&join("b")), Ok(()));
        // Unlimited keys are still counted.
        assert_eq!(c.try_acquire(&[(Key::Server("free"), None)]), Ok(()));
        assert_eq!(c.open(&Key::Server("free")), 1);
        // Releasing what is not open does nothing.
        c.release(&[Key::Server("never")]);
        for _ in 0..4 {
            c.release(&[Key::Server("a"), Key::Server("b"), Key::Tenant("acme"), Key::Server("free")]);
        }
        assert_eq!(c.keys(), 0, "keys with nothing open are forgotten");
    }

    proptest! {
        /// Over any run of requests, at most `burst` plus one per elapsed
        /// interval are allowed, and a request is never refused when the
        /// bucket has a token.
        #[test]
        fn never_more_than_the_burst_and_the_rate(
            steps in proptest::collection::vec((0u64..3000, 0u8..3), 1..200),
            burst in 1u32..5,
        ) {
            let t0 = Instant::now();
            let interval = Duration::from_millis(1000);
            let mut r = RateLimiter::new(interval, burst, 10);
            let mut t = t0;
            let mut allowed = 0u64;
            for (dt, key) in steps {
                t += Duration::from_millis(dt);
                if key == 0 && r.check(&0u8, t) == Decision::Allowed {
                    allowed += 1;
                }
                if key != 0 {
                    let _ = r.check(&key, t);
                }
                let elapsed = t.duration_since(t0).as_millis() as u64;
                prop_assert!(allowed <= u64::from(burst) + elapsed / 1000);
            }
            // After a full refill the whole burst is available again.
            let later = t + interval * (burst + 1);
            for _ in 0..burst {
                prop_assert_eq!(r.check(&0u8, later), Decision::Allowed);
            }
        }

        /// Any sequence of acquires and releases keeps every count within
        /// its limit and equal to what was acquired minus released.
        #[test]
        fn counts_stay_within_limits(ops in proptest::collection::vec((any::<bool>(), 0u8..4, 0u8..2), 0..300)) {
            let mut c = Concurrency::new();
            let mut model = [0u32; 6];
            for (acquire, server, tenant) in ops {
                let (s, t) = (u32::from(server), 4 + u32::from(tenant));
                if acquire {
                    let ok = model[s as usize] < 2 && model[t as usize] < 3;
                    prop_assert_eq!(c.try_acquire(&[(s, Some(2)), (t, Some(3))]).is_ok(), ok);
                    if ok {
                        model[s as usize] += 1;
                        model[t as usize] += 1;
                    }
                } else if model[s as usize] > 0 && model[t as usize] > 0 {
                    c.release(&[s, t]);
                    model[s as usize] -= 1;
                    model[t as usize] -= 1;
                }
                for k in 0..6u32 {
                    prop_assert_eq!(c.open(&k), model[k as usize]);
                }
            }
        }
    }
}
