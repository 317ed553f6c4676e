//! Login throttling, as a pure decision of (state, attempt, now).
//!
//! Wrong passwords are counted per **source** (the peer's IP address) and
//! per **name**. After [`FREE_FAILURES`] of them a key waits before its next
//! attempt is even checked: 1 s, doubling with each further failure, up to
//! [`MAX_SOURCE_WAIT_MS`] for a source and [`MAX_NAME_WAIT_MS`] for a name.
//! That is back-off, not lock-out: an attacker guessing a real operator's
//! name from elsewhere slows that name to one attempt every few seconds,
//! never locks its owner out, and is slowed far more at its own address.
//! An attempt during a wait is answered `429` with `Retry-After`, without
//! spending an argon2 check on it.
//!
//! **No bypass past a table size.** Every key is tracked: a full table
//! first forgets keys quiet for [`FORGET_AFTER_MS`], then the least recently
//! failed one. An attacker who wants its target's count forgotten must fail
//! [`MAX_KEYS`] other keys between two guesses at it, each a throttled,
//! argon2-priced attempt.
//!
//! The shell (`engine/operators.rs`) also bounds the argon2 work: at most one
//! login per source in flight, and a bounded queue for the two argon2 slots
//! (`503` with `Retry-After` beyond it), so a flood cannot starve the logins
//! behind it.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

/// Failures a key may have before it waits.
pub const FREE_FAILURES: u32 = 3;
/// The longest wait of a source.
pub const MAX_SOURCE_WAIT_MS: u64 = 60_000;
/// The longest wait of a name (short: its owner must still get in).
pub const MAX_NAME_WAIT_MS: u64 = 8_000;
/// A key with no failure for this long is forgotten.
pub const FORGET_AFTER_MS: u64 = 15 * 60 * 1000;
/// Keys tracked per kind (sources, names).
pub const MAX_KEYS: usize = 10_000;

/// Whether an attempt may be checked now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Check the password.
    Go,
    /// Answer `429`; the next attempt is checked no sooner than this.
    Wait {
        /// Milliseconds to wait.
        retry_after_ms: u64,
    },
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    last_ms: u64,
}

impl Entry {
    fn wait_until(&self, cap_ms: u64) -> u64 {
        if self.failures <= FREE_FAILURES {
            return 0;
        }
        let doublings = (self.failures - FREE_FAILURES - 1).min(20);
        self.last_ms
            .saturating_add((1000u64 << doublings).min(cap_ms))
    }
}

#[derive(Debug)]
struct Tracker<K> {
    map: HashMap<K, Entry>,
    cap_ms: u64,
    max_keys: usize,
}

impl<K: Eq + Hash + Clone> Tracker<K> {
    fn new(cap_ms: u64, max_keys: usize) -> Self {
        Self {
            map: HashMap::new(),
            cap_ms,
            max_keys,
        }
    }

    fn wait(&self, key: &K, now_ms: u64) -> u64 {
        self.map
            .get(key)
            .map_or(0, |e| e.wait_until(self.cap_ms).saturating_sub(now_ms))
    }

    fn fail(&mut self, key: &K, now_ms: u64) {
        if !self.map.contains_key(key) && self.map.len() >= self.max_keys {
            self.map
                .retain(|_, e| now_ms.saturating_sub(e.last_ms) < FORGET_AFTER_MS);
            if self.map.len() >= self.max_keys
                && let Some(oldest) = self
                    .map
                    .iter()
                    .min_by_key(|(_, e)| e.last_ms)
                    .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        let e = self.map.entry(key.clone()).or_insert(Entry {
            failures: 0,
            last_ms: now_ms,
        });
        e.failures = e.failures.saturating_add(1);
        e.last_ms = now_ms;
    }

    fn forget(&mut self, key: &K) {
        self.map.remove(key);
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The login throttle's state.
#[derive(Debug)]
pub struct Throttle {
    sources: Tracker<IpAddr>,
    names: Tracker<String>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::with_capacity(MAX_KEYS)
    }
}

impl Throttle {
    /// A throttle tracking at most `max_keys` sources and as many names.
    pub fn with_capacity(max_keys: usize) -> Self {
        Self {
            sources: Tracker::new(MAX_SOURCE_WAIT_MS, max_keys.max(1)),
            names: Tracker::new(MAX_NAME_WAIT_MS, max_keys.max(1)),
        }
    }

    /// Whether an attempt from `source` for `name` may be checked at `now_ms`.
    pub fn check(&self, source: IpAddr, name: &str, now_ms: u64) -> Verdict {
        let wait = self
            .sources
            .wait(&source, now_ms)
            .max(self.names.wait(&name_key(name), now_ms));
        if wait == 0 {
            Verdict::Go
        } else {
            Verdict::Wait {
                retry_after_ms: wait,
            }
        }
    }

    /// A wrong password (or unknown name) from `source` for `name`.
    pub fn failed(&mut self, source: IpAddr, name: &str, now_ms: u64) {
        self.sources.fail(&source, now_ms);
        self.names.fail(&name_key(name), now_ms);
    }

    /// A right password: the name's and the source's counts are forgotten.
    pub fn succeeded(&mut self, source: IpAddr, name: &str) {
        self.sources.forget(&source);
        self.names.forget(&name_key(name));
    }

    /// Keys tracked: (sources, names).
    pub fn tracked(&self) -> (usize, usize) {
        (self.sources.len(), self.names.len())
    }
}

/// Names are compared case-insensitively, so `Operator` and `operator`
/// share one count.
fn name_key(name: &str) -> String {
    name.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::{FREE_FAILURES, IpAddr, MAX_NAME_WAIT_MS, MAX_SOURCE_WAIT_MS, Throttle, Verdict};

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_few_mistakes_are_free_then_the_wait_doubles_up_to_its_cap() {
        let mut t = Throttle::default();
        let mut now = 1_000_000;
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.check(A, "operator", now), Verdict::Go);
            t.failed(A, "operator", now);
        }
        assert_eq!(t.check(A, "operator", now), Verdict::Go);
        let mut waits = Vec::new();
        for _ in 0..12 {
            t.failed(A, "operator", now);
            let Verdict::Wait { retry_after_ms } = t.check(A, "operator", now) else {
                panic!("no wait after a failure past the free ones");
            };
            waits.push(retry_after_ms);
            now += retry_after_ms;
            assert_eq!(t.check(A, "operator", now), Verdict::Go, "the wait ends");
        }
        assert_eq!(&waits[..4], &[1000, 2000, 4000, 8000]);
        assert_eq!(*waits.last().unwrap(), MAX_SOURCE_WAIT_MS);
    }

    #[test]
    fn an_attack_on_a_name_from_elsewhere_slows_its_owner_but_never_locks_them_out() {
        let mut t = Throttle::default();
        let now = 5_000_000;
        for _ in 0..50 {
            t.failed(A, "Meena", now);
        }
        // The attacker's own address waits the longest.
        assert_eq!(
            t.check(A, "anyone", now),
            Verdict::Wait {
                retry_after_ms: MAX_SOURCE_WAIT_MS
            }
        );
        // The owner, elsewhere, waits at most the name's cap, whatever the attack.
        assert_eq!(
            t.check(B, "meena", now),
            Verdict::Wait {
                retry_after_ms: MAX_NAME_WAIT_MS
            }
        );
        assert_eq!(t.check(B, "meena", now + MAX_NAME_WAIT_MS), Verdict::Go);
        t.succeeded(B, "meena");
        assert_eq!(t.check(B, "Meena", now), Verdict::Go);
    }

    #[test]
    fn a_full_table_never_lets_an_active_key_go_untracked() {
        let mut t = Throttle::with_capacity(100);
        let mut now = 9_000_000;
        for _ in 0..(FREE_FAILURES + 3) {
            t.failed(A, "target", now);
        }
        // The attacker fills the table with other names, guessing at the
        // target between every 50: the target's count is never forgotten.
        for i in 0..1_000 {
            now += 10;
            t.failed(B, &format!("junk-{i}"), now);
            if i % 50 == 0 {
                t.failed(A, "target", now);
            }
        }
        assert_eq!(t.tracked().1, 100);
        // Asked from a third address, only the name's count can make it wait.
        let c = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3));
        assert!(matches!(t.check(c, "target", now), Verdict::Wait { .. }));
    }
}
