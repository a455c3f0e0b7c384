//! The Generic Cell Rate Algorithm as pure integer arithmetic.
//!
//! A limit of `rate` requests per `period` with a `burst` becomes two numbers:
//!
//! - the **emission interval** `T = ceil(period / rate)`: the spacing of requests at the sustained
//!   rate (rounded *up*, so rounding can only make a limit stricter, never looser);
//! - the **capacity** `burst × T`: how far ahead of "now" the bucket may be filled.
//!
//! The only state per key is the *theoretical arrival time* (TAT). A request at `now` is admitted
//! when `max(TAT, now) + T - capacity <= now`, and then the stored TAT becomes `max(TAT, now) + T`.
//! A key whose TAT is in the past carries no information (it behaves exactly like a missing key),
//! which is why stores may expire or evict such keys freely.
//!
//! Everything is in whole **microseconds** (`u64`). The same formula runs in Lua inside Redis
//! (see [`super::scripts`]), where numbers are IEEE doubles; every value here therefore stays below
//! 2^53 so both sides compute bit-identical results: clock readings are clamped to
//! [`MAX_CLOCK_US`] (year 2112) and capacities are capped at [`MAX_CAPACITY_US`] (about 8.9 years).
//! Clamping the clock makes time stand still, which can only make a limit stricter.
//!
//! Guarantee (checked by property tests): over any window of length `w`, the number of admitted
//! requests for one key never exceeds `burst + floor(w / T)`, hence never `burst + rate × w / period`.

use std::time::Duration;

/// Largest clock value the arithmetic uses, in microseconds since the Unix epoch (2^52 µs, in 2112).
/// Later readings are treated as this value.
pub const MAX_CLOCK_US: u64 = 1 << 52;

/// Largest capacity (`burst × emission interval`) a limit may have, in microseconds (2^48 µs).
/// Keeps `clock + 2 × capacity` below 2^53, the range a Lua number represents exactly.
pub const MAX_CAPACITY_US: u64 = 1 << 48;

const MICROS_PER_SEC: u64 = 1_000_000;

/// Why a (rate, period, burst) triple is not a usable limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GcraError {
    /// `rate` was 0.
    #[error("rate must be at least 1")]
    ZeroRate,
    /// `burst` was 0: no request could ever be admitted.
    #[error("burst must be at least 1")]
    ZeroBurst,
    /// The period was shorter than one microsecond.
    #[error("period must be at least 1 microsecond")]
    ZeroPeriod,
    /// More than one request per microsecond: finer than the clock resolution.
    #[error("rate {rate} per {period_us} µs is more than one request per microsecond")]
    RateTooHigh {
        /// Requests per period as configured.
        rate: u64,
        /// The period in microseconds.
        period_us: u64,
    },
    /// `burst × period / rate` exceeds [`MAX_CAPACITY_US`].
    #[error("burst × period / rate is longer than {max_days} days", max_days = MAX_CAPACITY_US / MICROS_PER_SEC / 86_400)]
    CapacityTooLarge,
}

/// One limit in the form the algorithm uses. Construct with [`Gcra::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gcra {
    interval_us: u64,
    burst: u64,
    capacity_us: u64,
}

/// The result of one admission decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// The TAT the store must hold afterwards (the new TAT when admitted, the unchanged one
    /// otherwise). Always greater than `now_us` when admitted.
    pub tat_us: u64,
    /// The clock reading the decision was made at (after clamping).
    pub now_us: u64,
    /// Requests that could still be admitted right now after this one.
    pub remaining: u64,
    /// Time until the bucket is full again (no state left), in microseconds.
    pub reset_us: u64,
    /// When denied: how long until the same request would be admitted, in microseconds; 0 when
    /// admitted.
    pub retry_after_us: u64,
}

impl Gcra {
    /// A limit of `rate` requests per `period`, admitting up to `burst` at once.
    ///
    /// # Errors
    /// A [`GcraError`] when any input is zero, when the rate is finer than one request per
    /// microsecond, or when `burst × period / rate` exceeds [`MAX_CAPACITY_US`].
    pub fn new(rate: u64, period: Duration, burst: u64) -> Result<Self, GcraError> {
        if rate == 0 {
            return Err(GcraError::ZeroRate);
        }
        if burst == 0 {
            return Err(GcraError::ZeroBurst);
        }
        let period_us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX);
        if period_us == 0 {
            return Err(GcraError::ZeroPeriod);
        }
        if rate > period_us {
            return Err(GcraError::RateTooHigh { rate, period_us });
        }
        let interval_us = period_us.div_ceil(rate);
        let capacity_us = interval_us
            .checked_mul(burst)
            .filter(|c| *c <= MAX_CAPACITY_US)
            .ok_or(GcraError::CapacityTooLarge)?;
        Ok(Self {
            interval_us,
            burst,
            capacity_us,
        })
    }

    /// The emission interval `T` in microseconds (at least 1).
    pub fn interval_us(&self) -> u64 {
        self.interval_us
    }

    /// The burst: how many requests a fresh key admits at once.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// `burst × T` in microseconds (at most [`MAX_CAPACITY_US`]).
    pub fn capacity_us(&self) -> u64 {
        self.capacity_us
    }

    /// Decides one request at `now_us` given the stored TAT (`None` for a missing key).
    ///
    /// Total for every input: the clock is clamped to [`MAX_CLOCK_US`] and a stored TAT further
    /// ahead than `now + capacity` (only possible when a clock went backwards or the value was
    /// tampered with) is clamped to it, so no arithmetic can overflow and a denial never asks a
    /// client to wait longer than the capacity.
    pub fn decide(&self, now_us: u64, stored_tat_us: Option<u64>) -> Decision {
        let Clamped { now, horizon, tat } = self.clamp(now_us, stored_tat_us);
        let new_tat = tat + self.interval_us;
        let allow_at = new_tat.saturating_sub(self.capacity_us);
        if now < allow_at {
            Decision {
                allowed: false,
                tat_us: tat,
                now_us: now,
                remaining: 0,
                reset_us: tat - now,
                retry_after_us: allow_at - now,
            }
        } else {
            Decision {
                allowed: true,
                tat_us: new_tat,
                now_us: now,
                remaining: self.left_before(horizon, new_tat),
                reset_us: new_tat - now,
                retry_after_us: 0,
            }
        }
    }

    /// How many requests would be admitted at `now_us`, one after another, given the stored TAT
    /// (`None` for a missing key), without deciding or changing anything: what the
    /// `RateLimit-Remaining` of an admitted request says about the requests after it, asked
    /// without making one. A missing (or idle) key has the full burst; right after an admitted
    /// decision this equals that decision's `remaining`. Total for every input, like
    /// [`Gcra::decide`], whose clamping it shares.
    pub fn remaining(&self, now_us: u64, stored_tat_us: Option<u64>) -> u64 {
        let Clamped { horizon, tat, .. } = self.clamp(now_us, stored_tat_us);
        self.left_before(horizon, tat)
    }

    /// The clock reading and stored TAT as the arithmetic uses them: the clock clamped to
    /// [`MAX_CLOCK_US`], the TAT to `[now, now + capacity]` (a missing key is `now`).
    fn clamp(&self, now_us: u64, stored_tat_us: Option<u64>) -> Clamped {
        let now = now_us.min(MAX_CLOCK_US);
        // Bounded: now <= 2^52 and capacity <= 2^48, so nothing derived exceeds 2^53.
        let horizon = now + self.capacity_us;
        let tat = stored_tat_us.map_or(now, |t| t.min(horizon)).max(now);
        Clamped { now, horizon, tat }
    }

    /// Whole emission intervals between `tat` and the `horizon` (`now + capacity`): the requests
    /// a bucket filled up to `tat` still admits now. `tat <= horizon` always holds here.
    fn left_before(&self, horizon: u64, tat: u64) -> u64 {
        horizon.saturating_sub(tat) / self.interval_us
    }
}

/// The inputs of one decision after clamping (`Gcra::clamp`).
struct Clamped {
    now: u64,
    horizon: u64,
    tat: u64,
}

impl Decision {
    /// `retry_after_us` in whole seconds, rounded up (the `Retry-After` header: waiting that long
    /// is always enough).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after_us.div_ceil(MICROS_PER_SEC)
    }

    /// `reset_us` in whole seconds, rounded up (the `RateLimit-Reset` header).
    pub fn reset_secs(&self) -> u64 {
        self.reset_us.div_ceil(MICROS_PER_SEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn per_sec(rate: u64, burst: u64) -> Gcra {
        Gcra::new(rate, Duration::from_secs(1), burst).unwrap()
    }

    #[test]
    fn fresh_key_admits_exactly_burst_then_denies_with_exact_retry_after() {
        let g = per_sec(10, 3); // T = 100 ms
        let now = 1_000_000_000;
        let mut tat = None;
        for expected_remaining in [2, 1, 0] {
            let d = g.decide(now, tat);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            tat = Some(d.tat_us);
        }
        let d = g.decide(now, tat);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_us, 100_000);
        assert_eq!(d.retry_after_secs(), 1);
        assert_eq!(d.reset_us, 300_000);
        assert!(!g.decide(now + 99_999, tat).allowed);
        assert!(g.decide(now + 100_000, tat).allowed);
    }

    #[test]
    fn remaining_reads_what_the_last_admitted_request_said_and_refills_with_time() {
        let g = per_sec(10, 3); // T = 100 ms
        let now = 1_000_000_000;
        assert_eq!(g.remaining(now, None), 3, "a fresh key has the full burst");
        let d = g.decide(now, None);
        assert_eq!((d.remaining, g.remaining(now, Some(d.tat_us))), (2, 2));
        let d = g.decide(now, Some(d.tat_us));
        let d = g.decide(now, Some(d.tat_us));
        assert_eq!(g.remaining(now, Some(d.tat_us)), 0, "burst spent");
        assert_eq!(g.remaining(now + 99_999, Some(d.tat_us)), 0);
        assert_eq!(g.remaining(now + 100_000, Some(d.tat_us)), 1);
        assert_eq!(
            g.remaining(now + 10_000_000, Some(d.tat_us)),
            3,
            "an idle key is a fresh key"
        );
        assert_eq!(g.remaining(u64::MAX, Some(u64::MAX)), 0, "total");
    }

    #[test]
    fn rounding_of_the_interval_is_up() {
        let g = Gcra::new(3, Duration::from_secs(1), 1).unwrap();
        assert_eq!(g.interval_us(), 333_334);
    }

    #[test]
    fn invalid_limits_are_rejected() {
        let s = Duration::from_secs(1);
        assert_eq!(Gcra::new(0, s, 1), Err(GcraError::ZeroRate));
        assert_eq!(Gcra::new(1, s, 0), Err(GcraError::ZeroBurst));
        assert_eq!(
            Gcra::new(1, Duration::from_nanos(10), 1),
            Err(GcraError::ZeroPeriod)
        );
        assert!(matches!(
            Gcra::new(2_000_000, s, 1),
            Err(GcraError::RateTooHigh { .. })
        ));
        assert_eq!(
            Gcra::new(1, Duration::from_secs(86_400 * 365), 10),
            Err(GcraError::CapacityTooLarge)
        );
        assert_eq!(
            Gcra::new(1, Duration::MAX, 1),
            Err(GcraError::CapacityTooLarge)
        );
    }

    /// Mixes small, large and extreme values so that a useful share of triples is valid.
    fn wide_u64() -> impl Strategy<Value = u64> {
        prop_oneof![
            1u64..=10,
            1u64..=1_000_000,
            1u64..=1 << 40,
            Just(u64::MAX),
            any::<u64>()
        ]
    }

    fn any_gcra() -> impl Strategy<Value = Gcra> {
        (wide_u64(), wide_u64(), wide_u64()).prop_filter_map(
            "valid limit",
            |(rate, period_us, burst)| {
                Gcra::new(rate, Duration::from_micros(period_us), burst).ok()
            },
        )
    }

    /// Limits in ranges where windows of interest actually see many decisions.
    fn practical_gcra() -> impl Strategy<Value = Gcra> {
        (1u64..=1_000, 1u64..=10_000_000, 1u64..=50).prop_filter_map(
            "valid limit",
            |(rate, period_us, burst)| {
                Gcra::new(rate, Duration::from_micros(period_us), burst).ok()
            },
        )
    }

    proptest! {
        #[test]
        fn new_is_total(rate in any::<u64>(), period_ns in any::<u64>(), burst in any::<u64>()) {
            if let Ok(g) = Gcra::new(rate, Duration::from_nanos(period_ns), burst) {
                prop_assert!(g.interval_us() >= 1);
                prop_assert!(g.capacity_us() <= MAX_CAPACITY_US);
            }
        }

        #[test]
        fn decide_is_total_at_extreme_inputs(
            g in any_gcra(),
            now in prop_oneof![Just(0u64), Just(u64::MAX), Just(MAX_CLOCK_US), any::<u64>()],
            stored in prop_oneof![Just(None), Just(Some(0u64)), Just(Some(u64::MAX)), any::<Option<u64>>()],
        ) {
            let d = g.decide(now, stored);
            prop_assert!(d.now_us <= MAX_CLOCK_US);
            prop_assert!(d.tat_us < 1 << 53, "values stay exact as Lua numbers");
            prop_assert!(d.retry_after_us <= g.capacity_us());
            prop_assert!(d.remaining < g.burst());
            if d.allowed {
                prop_assert!(d.tat_us > d.now_us);
                prop_assert_eq!(d.retry_after_us, 0);
            } else {
                prop_assert!(d.retry_after_us > 0);
            }
        }

        #[test]
        fn admitted_in_any_window_never_exceed_burst_plus_rate_times_window(
            g in practical_gcra(),
            start in 0u64..=MAX_CLOCK_US,
            gaps in proptest::collection::vec(0u64..200_000, 1..300),
        ) {
            let mut now = start;
            let mut tat = None;
            let mut admitted = Vec::new();
            for gap in gaps {
                now = now.saturating_add(gap).min(MAX_CLOCK_US);
                let d = g.decide(now, tat);
                tat = Some(d.tat_us);
                if d.allowed {
                    admitted.push(d.now_us);
                }
            }
            for (i, &a) in admitted.iter().enumerate() {
                for (j, &b) in admitted.iter().enumerate().skip(i) {
                    let count = (j - i + 1) as u64;
                    let window = b - a;
                    prop_assert!(
                        count <= g.burst() + window / g.interval_us(),
                        "{count} admitted within {window} µs ({g:?})"
                    );
                }
            }
        }

        #[test]
        fn remaining_is_exactly_the_requests_decide_would_admit_now(
            g in practical_gcra(),
            now in prop_oneof![0u64..MAX_CLOCK_US / 2, Just(MAX_CLOCK_US), Just(u64::MAX)],
            stored in prop_oneof![Just(None), any::<Option<u64>>(), (0u64..MAX_CLOCK_US).prop_map(Some)],
        ) {
            let peeked = g.remaining(now, stored);
            prop_assert!(peeked <= g.burst());
            let mut tat = stored;
            let mut admitted = 0;
            loop {
                let d = g.decide(now, tat);
                if !d.allowed {
                    break;
                }
                if admitted == 0 {
                    prop_assert_eq!(d.remaining + 1, peeked, "the header after one more");
                }
                admitted += 1;
                tat = Some(d.tat_us);
            }
            prop_assert_eq!(admitted, peeked);
        }

        #[test]
        fn retry_after_is_exact(g in practical_gcra(), now in 0u64..MAX_CLOCK_US / 2, n in 1u64..100) {
            let mut tat = None;
            for _ in 0..n {
                tat = Some(g.decide(now, tat).tat_us);
            }
            let d = g.decide(now, tat);
            if !d.allowed {
                let wait = d.retry_after_us;
                prop_assert!(!g.decide(now + wait - 1, tat).allowed);
                prop_assert!(g.decide(now + wait, tat).allowed);
                prop_assert!(d.retry_after_secs() * MICROS_PER_SEC >= wait);
            }
        }

        #[test]
        fn requests_at_the_sustained_rate_are_never_denied(g in practical_gcra(), start in 0u64..MAX_CLOCK_US / 2, n in 1u64..200) {
            let mut tat = None;
            for k in 0..n {
                let d = g.decide(start + k * g.interval_us(), tat);
                prop_assert!(d.allowed);
                tat = Some(d.tat_us);
            }
        }
    }
}
