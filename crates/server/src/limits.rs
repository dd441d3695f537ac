//! Rate limits: a token bucket per connection for requests, one per source address for
//! registrations and password logins (so that guessing passwords is slow), and one per
//! account for logins of any kind (so that a login/logout loop cannot flood friends with
//! presence events). And a cap on the connections one source address may hold at once,
//! so that one host cannot take every place under `--max-connections` (or the memory
//! of thousands of connections that never log in).
//!
//! A source address is keyed by [`address_key`]: an IPv6 client is one /64 (a host
//! usually holds a whole /64 and can pick any address in it).

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

/// Logins per account: a burst of this many, then [`LOGINS_PER_USER_RATE`] a second.
pub const LOGINS_PER_USER_BURST: f64 = 20.0;
/// Logins per account and second, after the burst.
pub const LOGINS_PER_USER_RATE: f64 = 1.0;

/// How many times its allowed rate a connection may keep sending, refused, before it is
/// closed.
pub const HARD_MULTIPLE: f64 = 4.0;

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a connection's request limit says about one more request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Allow,
    /// Refuse it with `rate_limited`.
    Refuse,
    /// The connection keeps on far past its limit: close it.
    Close,
}

/// A connection's request limit: a soft bucket whose excess is refused, and a hard one
/// (the same, [`HARD_MULTIPLE`] times larger) whose excess closes the connection.
#[derive(Debug, Clone)]
pub struct RequestLimit {
    soft: TokenBucket,
    hard: TokenBucket,
}

impl RequestLimit {
    pub fn new(rate: f64, burst: f64) -> RequestLimit {
        RequestLimit {
            soft: TokenBucket::new(rate, burst),
            hard: TokenBucket::new(rate * HARD_MULTIPLE, burst * HARD_MULTIPLE),
        }
    }

    pub fn check(&mut self) -> Verdict {
        if !self.hard.take() {
            Verdict::Close
        } else if self.soft.take() {
            Verdict::Allow
        } else {
            Verdict::Refuse
        }
    }
}

/// Token buckets by source address, for registrations and password logins.
pub type AddressLimits = KeyedLimits<IpAddr>;

/// What a source address counts as: an IPv4 address (IPv4-mapped IPv6 included) as it
/// is, an IPv6 address as its /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match crate::proxy::canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// How many connections each source address holds, capped at `max`.
#[derive(Debug)]
pub struct AddressSlots {
    max: usize,
    held: DashMap<IpAddr, usize>,
}

/// One connection's place under its address's cap, given back when dropped.
#[derive(Debug)]
pub struct AddressSlot {
    slots: Arc<AddressSlots>,
    key: IpAddr,
}

impl AddressSlots {
    pub fn new(max: usize) -> Arc<AddressSlots> {
        Arc::new(AddressSlots {
            max,
            held: DashMap::new(),
        })
    }

    /// A place for one more connection from `ip`, or `None` when its address holds
    /// `max` already.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = address_key(ip);
        let mut held = self.held.entry(key).or_insert(0);
        if *held >= self.max {
            return None;
        }
        *held += 1;
        drop(held);
        Some(AddressSlot {
            slots: self.clone(),
            key,
        })
    }

    /// How many connections `ip`'s address holds.
    pub fn held(&self, ip: IpAddr) -> usize {
        self.held.get(&address_key(ip)).map_or(0, |n| *n)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        // An address with no connection left has no entry: the map does not grow with
        // every address ever seen.
        if let dashmap::Entry::Occupied(mut held) = self.slots.held.entry(self.key) {
            *held.get_mut() = held.get().saturating_sub(1);
            if *held.get() == 0 {
                held.remove();
            }
        }
    }
}

/// Token buckets by key: a source address, or an account (logins per user).
#[derive(Debug)]
pub struct KeyedLimits<K: Hash + Eq> {
    rate: f64,
    burst: f64,
    buckets: DashMap<K, TokenBucket>,
    /// When idle buckets were last swept out.
    swept: Mutex<Instant>,
}

/// How often buckets of keys gone quiet are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl<K: Hash + Eq> KeyedLimits<K> {
    pub fn new(rate: f64, burst: f64) -> KeyedLimits<K> {
        KeyedLimits {
            rate,
            burst,
            buckets: DashMap::new(),
            swept: Mutex::new(Instant::now()),
        }
    }

    /// Takes a token for `key`; false when it has used up its attempts for now.
    pub fn take(&self, key: K) -> bool {
        self.sweep();
        self.buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst))
            .take()
    }

    /// Drops the buckets that have refilled (their keys have been quiet), so that the
    /// map does not grow with every key ever seen.
    fn sweep(&self) {
        let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        if swept.elapsed() < SWEEP_EVERY {
            return;
        }
        *swept = Instant::now();
        drop(swept);
        let full_after = Duration::from_secs_f64(self.burst / self.rate.max(f64::MIN_POSITIVE));
        self.buckets
            .retain(|_, bucket| bucket.at.elapsed() < full_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_refills_at_its_rate() {
        let mut bucket = TokenBucket::new(10.0, 2.0);
        assert!(bucket.take() && bucket.take());
        assert!(!bucket.take());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(bucket.take());
        assert!(!bucket.take());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_limit_refuses_then_closes() {
        let mut limit = RequestLimit::new(1.0, 2.0);
        assert_eq!(limit.check(), Verdict::Allow);
        assert_eq!(limit.check(), Verdict::Allow);
        // Past the soft burst: refused, up to the hard one (4 x 2 = 8 requests in all).
        for _ in 0..6 {
            assert_eq!(limit.check(), Verdict::Refuse);
        }
        assert_eq!(limit.check(), Verdict::Close);
    }

    #[tokio::test(start_paused = true)]
    async fn addresses_are_limited_apart() {
        let limits = AddressLimits::new(1.0, 1.0);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        assert!(limits.take(a));
        assert!(!limits.take(a));
        assert!(limits.take(b));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limits.take(a));
    }

    #[test]
    fn an_address_holds_at_most_max_connections() {
        let slots = AddressSlots::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = slots.take(a).unwrap();
        let _second = slots.take(a).unwrap();
        assert!(slots.take(a).is_none());
        assert!(slots.take(b).is_some());
        drop(first);
        assert_eq!(slots.held(a), 1);
        assert!(slots.take(a).is_some());
        // Every slot given back: nothing is left in the map.
        drop(_second);
        assert_eq!(slots.held(a), 0);
        assert!(slots.held.is_empty());
    }

    #[test]
    fn an_ipv6_host_is_its_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
