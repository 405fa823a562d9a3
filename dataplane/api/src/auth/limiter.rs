//! Limits failed logins per email and per client address, so passwords
//! cannot be guessed at speed. In-process: each pod limits on its own.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per key within a window.
#[derive(Debug)]
pub struct FailureLimiter {
    max: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl FailureLimiter {
    /// At most `max` failures per key within `window`.
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(retry_after)` when `key` has used up its failures.
    pub fn check(&self, key: &str, now: Instant) -> Option<Duration> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let q = map.get_mut(key)?;
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        if q.len() >= self.max {
            let oldest = *q.front().expect("non-empty");
            return Some(
                (oldest + self.window)
                    .saturating_duration_since(now)
                    .max(Duration::from_secs(1)),
            );
        }
        None
    }

    /// Records a failure of `key`.
    pub fn fail(&self, key: &str, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            // Bound memory under a spray of keys: drop entries with no recent failure.
            let window = self.window;
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let q = map.entry(key.to_owned()).or_default();
        q.push_back(now);
        while q.len() > self.max {
            q.pop_front();
        }
    }

    /// Forgets `key`'s failures (after a successful login).
    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_until_the_window_passes() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(l.check("a", t0), None);
            l.fail("a", t0 + Duration::from_secs(i));
        }
        let retry = l.check("a", t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(retry, Duration::from_secs(50));
        assert_eq!(l.check("b", t0), None, "other keys are not affected");
        assert_eq!(l.check("a", t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn reset_clears_a_key() {
        let l = FailureLimiter::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        l.fail("a", t0);
        assert!(l.check("a", t0).is_some());
        l.reset("a");
        assert_eq!(l.check("a", t0), None);
    }
}
