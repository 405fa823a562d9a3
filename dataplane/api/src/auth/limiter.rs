//! Throttles credential guessing: each attempt is reserved (counted as a
//! failure) *before* the slow hash runs, so a burst of parallel guesses
//! cannot all pass the check at once; a success gives its reservation
//! back. After `free` failures a key is not locked out: each further
//! attempt waits a backoff that doubles per failure, up to a ceiling.
//! In-process: each pod throttles on its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys held at most; beyond it, keys idle for a whole window are dropped.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
}

/// Failures per key with exponential backoff.
#[derive(Debug)]
pub struct Throttle {
    free: u32,
    base: Duration,
    ceiling: Duration,
    forget_after: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Throttle {
    /// `free` failures without delay; then the n-th further attempt waits
    /// `base × 2^(n-1)` (at most `ceiling`) after the previous failure. A
    /// key is forgotten `forget_after` after its last failure.
    pub fn new(free: u32, base: Duration, ceiling: Duration, forget_after: Duration) -> Self {
        Self {
            free,
            base,
            ceiling,
            forget_after,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        if failures < self.free {
            return Duration::ZERO;
        }
        let exp = (failures - self.free).min(30);
        self.base.saturating_mul(1 << exp).min(self.ceiling)
    }

    /// Reserves one attempt of `key` (counted as a failure until
    /// [`Throttle::release`] or [`Throttle::reset`]), or says how long to
    /// wait. Check and count are one step, so concurrent attempts cannot
    /// all slip through.
    pub fn reserve(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get_mut(key) {
            if now.duration_since(e.last) >= self.forget_after {
                e.failures = 0;
            }
            let ready = e.last + self.backoff(e.failures);
            if e.failures >= self.free && now < ready {
                return Err((ready - now).max(Duration::from_secs(1)));
            }
            e.failures += 1;
            e.last = now;
            return Ok(());
        }
        if map.len() >= MAX_KEYS {
            let forget = self.forget_after;
            map.retain(|_, e| now.duration_since(e.last) < forget);
        }
        map.insert(
            key.to_owned(),
            Entry {
                failures: 1,
                last: now,
            },
        );
        Ok(())
    }

    /// Gives back one reservation (the attempt succeeded).
    pub fn release(&self, key: &str) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get_mut(key) {
            e.failures = e.failures.saturating_sub(1);
            if e.failures == 0 {
                map.remove(key);
            }
        }
    }

    /// Forgets `key` entirely (its owner proved the credentials).
    pub fn reset(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Failures currently counted for `key`.
    #[cfg(test)]
    pub fn failures(&self, key: &str) -> u32 {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map_or(0, |e| e.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Throttle {
        Throttle::new(
            3,
            Duration::from_secs(1),
            Duration::from_secs(60),
            Duration::from_secs(900),
        )
    }

    #[test]
    fn free_failures_then_a_doubling_backoff_not_a_lockout() {
        let l = t();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.reserve("a", t0), Ok(()));
        }
        // Fourth attempt at once: wait 1 s.
        assert_eq!(l.reserve("a", t0), Err(Duration::from_secs(1)));
        assert_eq!(l.reserve("a", t0 + Duration::from_secs(1)), Ok(()));
        // Then 2 s after that failure.
        let t1 = t0 + Duration::from_secs(1);
        assert!(l.reserve("a", t1 + Duration::from_millis(1500)).is_err());
        assert_eq!(l.reserve("a", t1 + Duration::from_secs(2)), Ok(()));
        assert_eq!(l.reserve("b", t0), Ok(()), "other keys are not affected");
    }

    #[test]
    fn the_backoff_has_a_ceiling_and_old_failures_are_forgotten() {
        let l = t();
        assert_eq!(l.backoff(40), Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            l.reserve("a", t0).unwrap();
        }
        assert!(l.reserve("a", t0).is_err());
        assert_eq!(l.reserve("a", t0 + Duration::from_secs(900)), Ok(()));
        assert_eq!(l.failures("a"), 1);
    }

    #[test]
    fn release_gives_back_a_reservation_and_reset_clears_the_key() {
        let l = t();
        let t0 = Instant::now();
        for _ in 0..3 {
            l.reserve("a", t0).unwrap();
        }
        l.release("a");
        assert_eq!(l.reserve("a", t0), Ok(()));
        l.reset("a");
        assert_eq!(l.failures("a"), 0);
    }
}
