//! Pools: weighted sets of links, and the `Target` both answer to.

use std::sync::Mutex;

use crate::{
    error::{Error, Result},
    link::Link,
    types::{SegmentOutcome, SubmitRequest},
};

/// Smooth weighted round-robin (the nginx upstream algorithm).
///
/// Each pick adds every eligible member's weight to its current value,
/// chooses the largest (first on ties) and subtracts the eligible total from
/// it. Weights 5, 1, 1 give `a a b a c a a`. Ineligible (down) members are
/// skipped without accumulating, so traffic spreads over the live ones.
#[derive(Debug, Clone)]
pub struct SmoothWeightedRoundRobin {
    weights: Vec<i64>,
    current: Vec<i64>,
}

impl SmoothWeightedRoundRobin {
    /// A selector over members with these weights (0 = never chosen).
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let weights: Vec<i64> = weights.into_iter().map(i64::from).collect();
        let current = vec![0; weights.len()];
        Self { weights, current }
    }

    /// Picks the next member among those for which `eligible` is true.
    pub fn next(&mut self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let mut total = 0;
        let mut best: Option<usize> = None;
        for i in 0..self.weights.len() {
            if self.weights[i] <= 0 || !eligible(i) {
                continue;
            }
            self.current[i] += self.weights[i];
            total += self.weights[i];
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        self.current[b] -= total;
        Some(b)
    }
}

/// A weighted set of links. Opens no connections of its own.
#[derive(Debug)]
pub struct Pool {
    name: String,
    links: Vec<Link>,
    swrr: Mutex<SmoothWeightedRoundRobin>,
}

impl Pool {
    /// A pool over `(link, weight)` members.
    pub fn new(name: impl Into<String>, members: Vec<(Link, u32)>) -> Result<Self> {
        let name = name.into();
        if members.is_empty() || members.iter().all(|(_, w)| *w == 0) {
            return Err(Error::InvalidPool {
                pool: name,
                reason: "needs at least one member with weight > 0".into(),
            });
        }
        let (links, weights): (Vec<_>, Vec<_>) = members.into_iter().unzip();
        Ok(Self {
            name,
            links,
            swrr: Mutex::new(SmoothWeightedRoundRobin::new(weights)),
        })
    }

    /// Pool name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The member links.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// True when any member is up.
    pub fn is_up(&self) -> bool {
        self.links.iter().any(Link::is_up)
    }

    /// Sends through the next live member (smooth weighted round-robin);
    /// when a member refuses without sending anything (down, stopped, window
    /// full, not sent) the next one is tried, each at most once.
    pub async fn submit(&self, msg: SubmitRequest) -> Result<Vec<SegmentOutcome>> {
        self.submit_via(msg).await.map(|(_, outcomes)| outcomes)
    }

    /// Like [`Pool::submit`], also naming the member link that carried the
    /// message (receipts are correlated per link).
    pub async fn submit_via(&self, msg: SubmitRequest) -> Result<(String, Vec<SegmentOutcome>)> {
        let mut tried = vec![false; self.links.len()];
        loop {
            let pick = {
                let mut swrr = self.swrr.lock().expect("swrr lock");
                swrr.next(|i| !tried[i] && self.links[i].is_up())
            };
            let Some(i) = pick else {
                return Err(Error::NoLinkAvailable {
                    pool: self.name.clone(),
                });
            };
            tried[i] = true;
            match self.links[i].submit(msg.clone()).await {
                Err(
                    e @ (Error::LinkDown { .. }
                    | Error::LinkStopped { .. }
                    | Error::WindowFull { .. }
                    | Error::NotSent { .. }),
                ) => {
                    tracing::debug!(pool = %self.name, error = %e, "failing over");
                }
                other => return other.map(|o| (self.links[i].name().to_owned(), o)),
            }
        }
    }
}

/// Where a message can be sent: a link or a pool, same interface.
#[derive(Debug, Clone)]
pub enum Target {
    /// A single link.
    Link(Link),
    /// A pool of links.
    Pool(std::sync::Arc<Pool>),
}

impl Target {
    /// Name of the link or pool.
    pub fn name(&self) -> &str {
        match self {
            Target::Link(l) => l.name(),
            Target::Pool(p) => p.name(),
        }
    }

    /// True when a submit could go out now.
    pub fn is_up(&self) -> bool {
        match self {
            Target::Link(l) => l.is_up(),
            Target::Pool(p) => p.is_up(),
        }
    }

    /// Sends a message; see [`Link::submit`] and [`Pool::submit`].
    pub async fn submit(&self, msg: SubmitRequest) -> Result<Vec<SegmentOutcome>> {
        self.submit_via(msg).await.map(|(_, outcomes)| outcomes)
    }

    /// Sends a message and names the link that carried it.
    pub async fn submit_via(&self, msg: SubmitRequest) -> Result<(String, Vec<SegmentOutcome>)> {
        match self {
            Target::Link(l) => l.submit(msg).await.map(|o| (l.name().to_owned(), o)),
            Target::Pool(p) => p.submit_via(msg).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swrr_with_weights_5_1_1_gives_a_a_b_a_c_a_a() {
        let mut s = SmoothWeightedRoundRobin::new([5, 1, 1]);
        let seq: String = (0..7)
            .map(|_| (b'a' + s.next(|_| true).unwrap() as u8) as char)
            .collect();
        assert_eq!(seq, "aabacaa");
        // And it repeats.
        let again: String = (0..7)
            .map(|_| (b'a' + s.next(|_| true).unwrap() as u8) as char)
            .collect();
        assert_eq!(again, "aabacaa");
    }

    #[test]
    fn swrr_skips_members_that_are_down() {
        let mut s = SmoothWeightedRoundRobin::new([5, 1, 1]);
        let picks: Vec<usize> = (0..6).map(|_| s.next(|i| i != 0).unwrap()).collect();
        assert_eq!(picks, vec![1, 2, 1, 2, 1, 2]);
        assert_eq!(s.next(|_| false), None);
    }
}
