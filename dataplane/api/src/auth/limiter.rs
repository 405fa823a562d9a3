//! Throttles credential guessing: each attempt is reserved (counted as a
//! failure) *before* the slow hash runs, so a burst of parallel guesses
//! cannot all pass the check at once; a success gives its reservation
//! back. After `free` failures a key is not locked out: each further
//! attempt waits a backoff that doubles per failure, up to a ceiling.
//! In-process: each pod throttles on its own.

use smsgw_core::bounded::{BoundedMap, MemoryUse};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys held at most. Keys idle for a whole window are dropped as new ones
/// come; past the bound the key idle longest is forgotten (its next
/// attempt starts with its free failures again), so a spray of guesses
/// from ever new accounts or addresses cannot grow the map.
pub const MAX_KEYS: usize = 100_000;

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
    entries: Mutex<BoundedMap<String, Entry>>,
}

impl Throttle {
    /// `free` failures without delay; then the n-th further attempt waits
    /// `base × 2^(n-1)` (at most `ceiling`) after the previous failure. A
    /// key is forgotten `forget_after` after its last failure. `name`
    /// labels its `smsgw_memory_*` gauges.
    pub fn new(
        name: &'static str,
        free: u32,
        base: Duration,
        ceiling: Duration,
        forget_after: Duration,
    ) -> Self {
        Self {
            free,
            base,
            ceiling,
            forget_after,
            entries: Mutex::new(BoundedMap::new(name, MAX_KEYS, usize::MAX, forget_after)),
        }
    }

    /// What the throttle holds, for the `smsgw_memory_*` gauges.
    pub fn memory(&self) -> MemoryUse {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .memory()
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
        let key = key.to_owned();
        // Taken out and put back, so the key counts as recently active.
        let mut e = map
            .remove(&key)
            .filter(|e| now.saturating_duration_since(e.last) < self.forget_after)
            .unwrap_or(Entry {
                failures: 0,
                last: now,
            });
        let bytes = 2 * key.len() + std::mem::size_of::<Entry>();
        let ready = e.last + self.backoff(e.failures);
        if e.failures >= self.free && now < ready {
            map.insert(key, e, bytes, now);
            return Err((ready - now).max(Duration::from_secs(1)));
        }
        e.failures += 1;
        e.last = now;
        map.insert(key, e, bytes, now);
        Ok(())
    }

    /// Gives back one reservation (the attempt succeeded).
    pub fn release(&self, key: &str) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let key = key.to_owned();
        if let Some(e) = map.get_mut(&key, Instant::now()) {
            e.failures = e.failures.saturating_sub(1);
            if e.failures == 0 {
                map.remove(&key);
            }
        }
    }

    /// Forgets `key` entirely (its owner proved the credentials).
    pub fn reset(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key.to_owned());
    }

    /// Failures currently counted for `key`.
    #[cfg(test)]
    pub fn failures(&self, key: &str) -> u32 {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_with_time(&key.to_owned())
            .map_or(0, |(e, _)| e.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Throttle {
        Throttle::new(
            "t",
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

    #[test]
    fn a_spray_of_new_keys_cannot_grow_the_throttle_past_its_bound() {
        let l = t();
        let t0 = Instant::now();
        for i in 0..MAX_KEYS + 5_000 {
            l.reserve(&format!("k{i}"), t0).unwrap();
        }
        let m = l.memory();
        assert_eq!(m.entries, MAX_KEYS as u64);
        assert_eq!(m.evicted, 5_000);
        // The keys forgotten were the oldest: they start afresh.
        assert_eq!(l.failures("k0"), 0);
        assert_eq!(l.failures(&format!("k{}", MAX_KEYS + 4_999)), 1);
    }
}
