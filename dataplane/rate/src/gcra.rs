//! The generic cell rate algorithm on one key, in microseconds. The Redis
//! script (`gcra.lua`) implements the very same arithmetic.
//!
//! A key with `rate` r and `burst` b has an emission interval T = 1/r and a
//! tolerance τ = b·T. Its state is one number, the theoretical arrival time
//! (TAT). Taking n tokens at time t is allowed when max(TAT, t) + n·T − τ ≤
//! t, and sets TAT to max(TAT, t) + n·T. So at most b + r·Δt tokens pass in
//! any window Δt: exact, with no refill timer.

use smsgw_core::limits::RateLimit;

/// One key's limit and theoretical arrival time (µs on the limiter's clock).
#[derive(Clone, Debug, Default)]
pub(crate) struct Bucket {
    pub limit: Option<RateLimit>,
    pub tat: f64,
}

/// When `cost` tokens of one key can be taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Earliest {
    /// No limit: always.
    Unlimited,
    /// Rate 0: never.
    Never,
    /// At this time (µs; at or before `now` means at once).
    At(f64),
}

/// Emission interval (µs per token) and tolerance (µs) of a limit for a
/// request of `cost`; `None` for rate 0. A burst of 0 counts as 1, and the
/// tolerance is at least one request's worth, so a request costing more
/// than the burst passes when the bucket is full.
pub(crate) fn interval_and_tolerance(limit: &RateLimit, cost: u32) -> Option<(f64, f64)> {
    if limit.is_zero() || !limit.rate.is_finite() {
        return None;
    }
    let t = 1e6 / limit.rate;
    let inc = f64::from(cost) * t;
    let tau = (f64::from(limit.burst.max(1)) * t).max(inc);
    Some((t, tau))
}

impl Bucket {
    /// Earliest time `cost` tokens can be taken.
    pub fn earliest(&self, now: f64, cost: u32) -> Earliest {
        let Some(limit) = &self.limit else {
            return Earliest::Unlimited;
        };
        match interval_and_tolerance(limit, cost) {
            None => Earliest::Never,
            // `inc - tau` first: it is exactly 0 when the request takes the
            // whole bucket, so a full bucket answers exactly `now` (summed
            // left to right, `now + inc - tau` may round just past `now`
            // and refuse a request the bucket holds).
            Some((t, tau)) => Earliest::At(self.tat.max(now) + (f64::from(cost) * t - tau)),
        }
    }

    /// Takes `cost` tokens at time `at` (≥ the earliest time).
    pub fn book(&mut self, at: f64, cost: u32) {
        if let Some((t, _)) = self
            .limit
            .as_ref()
            .and_then(|l| interval_and_tolerance(l, cost))
        {
            self.tat = self.tat.max(at) + f64::from(cost) * t;
        }
    }

    /// Gives back `cost` tokens taken but not used, never filling the
    /// bucket beyond its burst.
    pub fn refund(&mut self, now: f64, cost: u32) {
        if let Some((t, _)) = self
            .limit
            .as_ref()
            .and_then(|l| interval_and_tolerance(l, cost))
        {
            self.tat = (self.tat - f64::from(cost) * t).max(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(rate: f64, burst: u32) -> Bucket {
        Bucket {
            limit: Some(RateLimit::new(rate, burst)),
            tat: 0.0,
        }
    }

    /// Takes one token at a time at `now` until refused; returns how many.
    fn drain(b: &mut Bucket, now: f64) -> u32 {
        let mut n = 0;
        while let Earliest::At(at) = b.earliest(now, 1) {
            if at > now {
                break;
            }
            b.book(now, 1);
            n += 1;
        }
        n
    }

    #[test]
    fn a_full_bucket_should_give_exactly_its_burst() {
        let mut b = bucket(500.0, 50);
        assert_eq!(drain(&mut b, 1e6), 50);
    }

    #[test]
    fn a_full_bucket_of_one_should_pass_one_request_at_any_time() {
        for i in 0..10_000u32 {
            let now = f64::from(i) * 1_234.567_89;
            let b = bucket(1.0, 1);
            assert!(
                matches!(b.earliest(now, 1), Earliest::At(at) if at <= now),
                "refused at {now}"
            );
        }
    }

    #[test]
    fn the_bucket_should_refill_at_the_rate() {
        let mut b = bucket(500.0, 50);
        drain(&mut b, 1e6);
        // 100 ms later: 50 more tokens (one per 2 ms).
        assert_eq!(drain(&mut b, 1e6 + 100_000.0), 50);
        // and the next one is due 2 ms after that
        assert_eq!(
            b.earliest(1e6 + 100_000.0, 1),
            Earliest::At(1e6 + 102_000.0)
        );
    }

    #[test]
    fn a_request_above_the_burst_should_pass_on_a_full_bucket_only() {
        let mut b = bucket(10.0, 2);
        assert!(matches!(b.earliest(0.0, 5), Earliest::At(at) if at <= 0.0));
        b.book(0.0, 5);
        // The bucket of 2 is at -3: one token is back after 4 × 100 ms.
        assert_eq!(b.earliest(0.0, 1), Earliest::At(400_000.0));
    }

    #[test]
    fn rate_zero_should_never_pass_and_no_limit_always() {
        let b = bucket(0.0, 0);
        assert_eq!(b.earliest(0.0, 1), Earliest::Never);
        assert_eq!(Bucket::default().earliest(0.0, 1000), Earliest::Unlimited);
    }

    #[test]
    fn refunds_should_not_overfill_the_bucket() {
        let mut b = bucket(100.0, 5);
        b.book(0.0, 1);
        b.refund(0.0, 3);
        assert_eq!(b.tat, 0.0);
        assert_eq!(drain(&mut b, 0.0), 5);
    }
}
