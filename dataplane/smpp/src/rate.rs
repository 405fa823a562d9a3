//! Pacing: link rate (GCRA), per-session AIMD after throttling, and rate
//! meters for status.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

/// Generic cell rate algorithm: `rate` per second with a burst of `burst`.
/// `reserve` books the next slot and returns when the caller may send.
#[derive(Debug)]
pub struct Gcra {
    interval: Duration,
    tolerance: Duration,
    tat: Mutex<Option<Instant>>,
}

impl Gcra {
    /// A limiter of `rate`/s with `burst` ≥ 1.
    pub fn new(rate: f64, burst: u32) -> Self {
        let interval = Duration::from_secs_f64(1.0 / rate);
        Self {
            interval,
            tolerance: interval * burst.saturating_sub(1),
            tat: Mutex::new(None),
        }
    }

    /// Books a slot; returns the instant at which it may be used.
    pub fn reserve(&self, now: Instant) -> Instant {
        let mut tat = self.tat.lock().expect("gcra lock");
        let t = tat.map_or(now, |t| t.max(now));
        let allowed = (t.checked_sub(self.tolerance).unwrap_or(now)).max(now);
        *tat = Some(t + self.interval);
        allowed
    }
}

/// Additive-increase / multiplicative-decrease cap on one session's send
/// rate, engaged by ESME_RTHROTTLED / ESME_RMSGQFUL.
///
/// On throttle the cap halves (starting from the session's measured rate);
/// every accepted submit adds `ceiling / (10 · cap)` so the cap climbs back
/// linearly by about a tenth of the pre-throttle rate per second, and is
/// lifted once it reaches that rate again.
#[derive(Debug, Default)]
pub struct Aimd {
    inner: Mutex<AimdState>,
}

#[derive(Debug, Default)]
struct AimdState {
    rate: Option<f64>,
    ceiling: f64,
    next: Option<Instant>,
}

/// Lowest rate AIMD goes down to (messages per second).
const MIN_RATE: f64 = 1.0;

impl Aimd {
    /// The current cap, if throttled.
    pub fn rate(&self) -> Option<f64> {
        self.inner.lock().expect("aimd lock").rate
    }

    /// Multiplicative decrease. `observed` is the session's recent rate.
    pub fn throttled(&self, observed: f64) {
        let mut s = self.inner.lock().expect("aimd lock");
        let current = s.rate.unwrap_or(observed.max(2.0 * MIN_RATE));
        if s.rate.is_none() {
            s.ceiling = current;
        }
        s.rate = Some((current / 2.0).max(MIN_RATE));
    }

    /// Additive increase after an accepted submit.
    pub fn accepted(&self) {
        let mut s = self.inner.lock().expect("aimd lock");
        if let Some(r) = s.rate {
            let r = r + (s.ceiling / 10.0) / r.max(MIN_RATE);
            if r >= s.ceiling {
                s.rate = None;
                s.next = None;
            } else {
                s.rate = Some(r);
            }
        }
    }

    /// Books a send slot under the cap; `None` when not throttled.
    pub fn reserve(&self, now: Instant) -> Option<Instant> {
        let mut s = self.inner.lock().expect("aimd lock");
        let r = s.rate?;
        let at = s.next.map_or(now, |n| n.max(now));
        s.next = Some(at + Duration::from_secs_f64(1.0 / r));
        Some(at)
    }
}

/// Counts events and reports an exponentially weighted rate (~10 s).
#[derive(Debug)]
pub struct RateMeter {
    total: AtomicU64,
    state: Mutex<MeterState>,
}

#[derive(Debug)]
struct MeterState {
    at: Instant,
    seen: u64,
    ewma: Option<f64>,
}

impl Default for RateMeter {
    fn default() -> Self {
        Self {
            total: AtomicU64::new(0),
            state: Mutex::new(MeterState {
                at: Instant::now(),
                seen: 0,
                ewma: None,
            }),
        }
    }
}

impl RateMeter {
    /// Counts one event.
    pub fn mark(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// Events counted so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Rate per second, sampled at most every 250 ms, smoothed over ~10 s.
    pub fn rate(&self) -> f64 {
        let now = Instant::now();
        let total = self.total();
        let mut s = self.state.lock().expect("meter lock");
        let dt = now.duration_since(s.at).as_secs_f64();
        if dt >= 0.25 {
            let inst = (total - s.seen) as f64 / dt;
            let alpha = 1.0 - (-dt / 10.0).exp();
            s.ewma = Some(match s.ewma {
                None => inst,
                Some(e) => e + alpha * (inst - e),
            });
            s.at = now;
            s.seen = total;
        }
        s.ewma.unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_a_burst_then_spaces_requests() {
        let g = Gcra::new(10.0, 3);
        let t0 = Instant::now();
        assert_eq!(g.reserve(t0), t0);
        assert_eq!(g.reserve(t0), t0);
        assert_eq!(g.reserve(t0), t0);
        let fourth = g.reserve(t0);
        assert_eq!(fourth, t0 + Duration::from_millis(100));
    }

    #[test]
    fn aimd_halves_on_throttle_and_recovers_additively() {
        let a = Aimd::default();
        assert!(a.reserve(Instant::now()).is_none());
        a.throttled(100.0);
        assert_eq!(a.rate(), Some(50.0));
        a.throttled(0.0);
        assert_eq!(a.rate(), Some(25.0));
        for _ in 0..10_000 {
            a.accepted();
        }
        assert_eq!(a.rate(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_sends_are_spaced_by_the_aimd_rate() {
        let a = Aimd::default();
        a.throttled(20.0); // cap: 10/s
        let t0 = Instant::now();
        for _ in 0..5 {
            if let Some(at) = a.reserve(Instant::now()) {
                tokio::time::sleep_until(at).await;
            }
        }
        assert_eq!(t0.elapsed(), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn link_rate_paces_after_the_burst() {
        let g = Gcra::new(100.0, 10);
        let t0 = Instant::now();
        for _ in 0..30 {
            tokio::time::sleep_until(g.reserve(Instant::now())).await;
        }
        // 10 at once, then 20 more at 10 ms spacing.
        assert_eq!(t0.elapsed(), Duration::from_millis(200));
    }
}
