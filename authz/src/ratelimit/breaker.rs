//! A lock-free circuit breaker in front of the store.
//!
//! Closed: every check calls the store. After `failure_threshold` consecutive failures it opens:
//! checks fail at once with [`super::StoreError::CircuitOpen`] (so a dead Redis costs nothing per
//! check) until `cooldown` has passed. Then exactly one check is let through as a probe, and the
//! breaker re-arms for another cool-down at the same moment; the probe's success closes it, its
//! failure (or its being abandoned) just leaves the re-armed cool-down running. Recovery is
//! therefore automatic and needs no background task.

use super::clock::Clock;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// What [`CircuitBreaker::admit`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: call the store.
    Call,
    /// Cool-down over: call the store as the one probe.
    Probe,
    /// Open: do not call the store.
    Reject,
}

/// A state change worth logging and exporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The breaker just opened.
    Opened,
    /// The breaker just closed again.
    Closed,
}

/// The breaker. All methods are lock-free and cheap on the closed fast path.
#[derive(Debug)]
pub struct CircuitBreaker {
    failure_threshold: u32,
    cooldown_us: u64,
    clock: Arc<dyn Clock>,
    /// Consecutive failures since the last success.
    failures: AtomicU32,
    /// 0 while closed; otherwise the clock reading at which the next probe may go.
    open_until_us: AtomicU64,
}

impl CircuitBreaker {
    /// A closed breaker opening after `failure_threshold` (at least 1) consecutive failures for
    /// `cooldown`.
    pub fn new(failure_threshold: u32, cooldown: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            failure_threshold: failure_threshold.max(1),
            cooldown_us: u64::try_from(cooldown.as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
            clock,
            failures: AtomicU32::new(0),
            open_until_us: AtomicU64::new(0),
        }
    }

    /// Whether the breaker is open (or probing).
    pub fn is_open(&self) -> bool {
        self.open_until_us.load(Ordering::Acquire) != 0
    }

    /// Asks whether a store call may go out now.
    pub fn admit(&self) -> Admission {
        let until = self.open_until_us.load(Ordering::Acquire);
        if until == 0 {
            return Admission::Call;
        }
        let now = self.clock.now_us();
        if now < until {
            return Admission::Reject;
        }
        // Only the caller that moves the deadline forward probes; everyone else keeps failing fast.
        let rearmed = now.saturating_add(self.cooldown_us).max(1);
        match self.open_until_us.compare_exchange(
            until,
            rearmed,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Admission::Probe,
            Err(_) => Admission::Reject,
        }
    }

    /// Records a successful store call.
    pub fn on_success(&self) -> Option<Transition> {
        self.failures.store(0, Ordering::Release);
        (self.open_until_us.swap(0, Ordering::AcqRel) != 0).then_some(Transition::Closed)
    }

    /// Records a failed store call.
    pub fn on_failure(&self) -> Option<Transition> {
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if failures < self.failure_threshold {
            return None;
        }
        let until = self.clock.now_us().saturating_add(self.cooldown_us).max(1);
        self.open_until_us
            .compare_exchange(0, until, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then_some(Transition::Opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::clock::ManualClock;

    #[test]
    fn opens_after_threshold_probes_after_cooldown_and_closes_on_success() {
        let clock = ManualClock::new(10);
        let b = CircuitBreaker::new(3, Duration::from_millis(100), Arc::new(clock.clone()));
        assert_eq!(b.on_failure(), None);
        assert_eq!(b.on_failure(), None);
        assert_eq!(b.admit(), Admission::Call);
        assert_eq!(b.on_failure(), Some(Transition::Opened));
        assert_eq!(b.admit(), Admission::Reject);
        clock.advance(Duration::from_millis(100));
        assert_eq!(b.admit(), Admission::Probe);
        assert_eq!(b.admit(), Admission::Reject, "one probe at a time");
        // The probe fails: still open, next probe after another cool-down.
        assert_eq!(b.on_failure(), None);
        clock.advance(Duration::from_millis(99));
        assert_eq!(b.admit(), Admission::Reject);
        clock.advance(Duration::from_millis(1));
        assert_eq!(b.admit(), Admission::Probe);
        assert_eq!(b.on_success(), Some(Transition::Closed));
        assert_eq!(b.admit(), Admission::Call);
        assert!(!b.is_open());
    }

    #[test]
    fn an_abandoned_probe_does_not_wedge_the_breaker() {
        let clock = ManualClock::new(0);
        let b = CircuitBreaker::new(1, Duration::from_millis(10), Arc::new(clock.clone()));
        b.on_failure();
        clock.advance(Duration::from_millis(10));
        assert_eq!(b.admit(), Admission::Probe); // and then never reports
        clock.advance(Duration::from_millis(10));
        assert_eq!(b.admit(), Admission::Probe);
    }
}
