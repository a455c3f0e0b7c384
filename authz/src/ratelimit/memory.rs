//! [`MemoryStore`]: GCRA state in this process, the default when no Redis is configured.
//!
//! Semantics are identical to the Redis store (same [`Gcra::decide`], and [`Gcra::remaining`] for a
//! peek: a read of the key's TAT under its shard's lock that inserts nothing and sweeps nothing),
//! but state is per process: with several authz replicas each one enforces the full limit on its
//! own.
//!
//! Memory is bounded. A key whose TAT has passed carries no information (see [`super::gcra`]),
//! so such *idle* keys are dropped by a sweep each shard runs at most every
//! [`SWEEP_INTERVAL`]. When a shard is still full (more than `max_keys / SHARDS` busy keys), the
//! key closest to becoming idle is evicted: the principal it belonged to gets a fresh burst early.
//! That is the one place this store is looser than the arithmetic; size `max_keys` above the
//! number of (principal, model) pairs active within one limit capacity to never reach it.

use super::clock::Clock;
use super::gcra::{Decision, Gcra};
use super::store::{Store, StoreError};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Number of independently locked shards: enough to keep lock contention low on many cores.
pub const SHARDS: usize = 16;

/// How often each shard drops idle keys. Sweeping costs a pass over the shard, so it is amortized
/// over many checks; memory stays bounded by `max_keys` in between anyway.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// In-process GCRA store with bounded memory.
#[derive(Debug)]
pub struct MemoryStore {
    /// Shards chosen by key hash; each maps key -> TAT in microseconds. Sharded so concurrent
    /// checks rarely contend; a lock is held only for one key's arithmetic, never across an await.
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    max_per_shard: usize,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Default)]
struct Shard {
    tats: HashMap<String, u64>,
    next_sweep_us: u64,
}

impl MemoryStore {
    /// A store holding at most about `max_keys` keys (rounded up to a multiple of [`SHARDS`]),
    /// reading time from `clock`.
    pub fn new(max_keys: usize, clock: Arc<dyn Clock>) -> Self {
        let max_per_shard = max_keys.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            max_per_shard,
            clock,
        }
    }

    /// Number of keys currently held (idle ones included until swept).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).tats.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every idle key now (normally done lazily).
    pub fn sweep(&self) {
        let now = self.clock.now_us();
        for shard in self.shards.iter() {
            lock(shard).tats.retain(|_, tat| *tat > now);
        }
    }

    /// The shard holding `key`.
    fn shard(&self, key: &str) -> &Mutex<Shard> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        &self.shards[index]
    }

    fn decide(&self, key: &str, limit: Gcra) -> Decision {
        let mut shard = lock(self.shard(key));
        let now = self.clock.now_us();
        if now >= shard.next_sweep_us {
            shard.tats.retain(|_, tat| *tat > now);
            let sweep_us = u64::try_from(SWEEP_INTERVAL.as_micros()).unwrap_or(u64::MAX);
            shard.next_sweep_us = now.saturating_add(sweep_us);
        }
        let decision = limit.decide(now, shard.tats.get(key).copied());
        if decision.allowed {
            if let Some(tat) = shard.tats.get_mut(key) {
                *tat = decision.tat_us;
            } else {
                if shard.tats.len() >= self.max_per_shard {
                    make_room(&mut shard.tats, decision.now_us);
                }
                shard.tats.insert(key.to_owned(), decision.tat_us);
            }
        }
        decision
    }

    /// [`Store::peek`]: a read of the key's TAT under the shard lock; no sweep, no insert.
    fn remaining(&self, key: &str, limit: Gcra) -> u64 {
        let shard = lock(self.shard(key));
        limit.remaining(self.clock.now_us(), shard.tats.get(key).copied())
    }
}

/// Drops idle keys; if none were idle, evicts the key with the earliest TAT.
fn make_room(tats: &mut HashMap<String, u64>, now: u64) {
    let before = tats.len();
    tats.retain(|_, tat| *tat > now);
    if tats.len() < before {
        return;
    }
    let victim = tats
        .iter()
        .min_by_key(|(_, tat)| **tat)
        .map(|(key, _)| key.clone());
    if let Some(victim) = victim {
        tats.remove(&victim);
    }
}

/// Locks a shard. A poisoned lock only means another thread panicked while holding it; the map
/// is still a valid map (every update is a single insert/assign), so keep using it.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Store for MemoryStore {
    fn check<'a>(
        &'a self,
        key: &'a str,
        limit: Gcra,
    ) -> BoxFuture<'a, Result<Decision, StoreError>> {
        let decision = self.decide(key, limit);
        Box::pin(std::future::ready(Ok(decision)))
    }

    fn peek<'a>(&'a self, key: &'a str, limit: Gcra) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(std::future::ready(Ok(self.remaining(key, limit))))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::clock::ManualClock;

    fn store(max_keys: usize) -> (MemoryStore, ManualClock) {
        let clock = ManualClock::new(1_000_000);
        (MemoryStore::new(max_keys, Arc::new(clock.clone())), clock)
    }

    #[test]
    fn idle_keys_expire_and_limits_refill_as_time_advances() {
        let (store, clock) = store(1000);
        let limit = Gcra::new(1, Duration::from_secs(1), 2).unwrap();
        assert!(store.decide("k", limit).allowed);
        assert!(store.decide("k", limit).allowed);
        assert!(!store.decide("k", limit).allowed);
        clock.advance(Duration::from_secs(1));
        assert!(store.decide("k", limit).allowed);
        assert_eq!(store.len(), 1);
        clock.advance(Duration::from_secs(3));
        store.sweep();
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn peek_reads_the_remaining_quota_and_never_consumes_or_creates_a_key() {
        let (store, clock) = store(1000);
        let limit = Gcra::new(1, Duration::from_secs(1), 3).unwrap();
        assert_eq!(
            store.peek("k", limit).await.unwrap(),
            3,
            "unseen: full burst"
        );
        assert!(store.is_empty(), "a peek creates no key");
        let said = store.check("k", limit).await.unwrap().remaining;
        for _ in 0..5 {
            assert_eq!(store.peek("k", limit).await.unwrap(), said);
        }
        assert_eq!(said, 2);
        assert_eq!(store.check("k", limit).await.unwrap().remaining, 1);
        assert_eq!(store.check("k", limit).await.unwrap().remaining, 0);
        assert_eq!(store.peek("k", limit).await.unwrap(), 0);
        assert!(!store.check("k", limit).await.unwrap().allowed);
        clock.advance(Duration::from_secs(1));
        assert_eq!(store.peek("k", limit).await.unwrap(), 1, "refilled by one");
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_distinct_keys() {
        let (store, _clock) = store(64);
        let limit = Gcra::new(1, Duration::from_secs(3600), 5).unwrap();
        for i in 0..10_000 {
            store.decide(&format!("k{i}"), limit);
        }
        assert!(store.len() <= 64, "{} keys held", store.len());
    }

    #[test]
    fn idle_keys_are_dropped_before_busy_ones_are_evicted() {
        let (store, clock) = store(SHARDS); // one key per shard
        let short = Gcra::new(1, Duration::from_millis(10), 1).unwrap();
        let long = Gcra::new(1, Duration::from_secs(3600), 1).unwrap();
        // Fill every shard with idle-soon keys, then a busy key must still be admitted and kept.
        for i in 0..1000 {
            store.decide(&format!("idle{i}"), short);
        }
        clock.advance(Duration::from_secs(1));
        assert!(store.decide("busy", long).allowed);
        assert!(!store.decide("busy", long).allowed);
    }
}
