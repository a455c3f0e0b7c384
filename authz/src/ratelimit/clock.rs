//! Clocks for the in-process store and the circuit breaker.
//!
//! Both only need a monotonic microsecond counter (their state never leaves the process), so the
//! production clock is [`MonotonicClock`], immune to wall-clock steps. Tests use [`ManualClock`]
//! and advance time instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A source of "now" in microseconds. Must never go backwards.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current reading in microseconds.
    fn now_us(&self) -> u64;
}

/// Microseconds since this clock was created, from [`Instant`].
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock starting at zero now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    /// The current reading in microseconds, shared by every clone (the test moves it).
    now_us: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `start_us`.
    pub fn new(start_us: u64) -> Self {
        Self {
            now_us: Arc::new(AtomicU64::new(start_us)),
        }
    }

    /// Moves time forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        let _ = self
            .now_us
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> u64 {
        self.now_us.load(Ordering::SeqCst)
    }
}
