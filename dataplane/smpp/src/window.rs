//! A session's send window: `size` slots for `submit_sm` awaiting their
//! response. A submit waiting for a slot gets it by priority (the
//! request's `priority_flag`, higher first) and in arrival order within a
//! priority, so when a link is backed up (a slow SMSC, or a rate whose
//! pacing holds the slots) urgent messages overtake the queue instead of
//! waiting behind it. A slot is handed straight to the next waiter when
//! it frees, so a newcomer never takes it from one already waiting.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Priorities: 0 (lowest) to 3 (`priority_flag` values).
const LEVELS: usize = 4;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Window {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Slots nobody holds. Positive only while no live waiter queues.
    free: usize,
    /// Waiters by priority, oldest first. An entry whose waiter gave up
    /// (timed out) stays until a release or a purge passes it.
    waiting: [VecDeque<oneshot::Sender<()>>; LEVELS],
}

/// A slot of a [`Window`]; freed (handed to the next waiter) on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    window: Arc<Window>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.window.release();
    }
}

/// A queued acquisition; gives back a slot handed to it after it stopped
/// waiting (cancelled by a timeout), so no slot is lost.
struct Waiting {
    rx: Option<oneshot::Receiver<()>>,
    window: Arc<Window>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.window.release();
            }
        }
    }
}

impl Window {
    /// A window of `size` slots.
    pub(crate) fn new(size: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                free: size,
                waiting: Default::default(),
            }),
        })
    }

    /// Slots free now.
    pub(crate) fn available(&self) -> usize {
        self.lock().free
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot at `priority` (0 to 3; higher values count as 3).
    /// Cancel-safe: dropping the future gives up its place, and a slot
    /// handed to it meanwhile goes to the next waiter.
    pub(crate) async fn acquire(self: &Arc<Self>, priority: u8) -> Permit {
        let rx = {
            let mut st = self.lock();
            if st.free > 0 {
                st.free -= 1;
                return Permit {
                    window: self.clone(),
                };
            }
            let (tx, rx) = oneshot::channel();
            let queue = &mut st.waiting[usize::from(priority).min(LEVELS - 1)];
            // Waiters that gave up are dropped as the queue grows.
            if queue.len() >= 64 && queue.len().is_power_of_two() {
                queue.retain(|tx| !tx.is_closed());
            }
            queue.push_back(tx);
            rx
        };
        let mut waiting = Waiting {
            rx: Some(rx),
            window: self.clone(),
        };
        let handed = waiting.rx.as_mut().expect("receiver").await;
        waiting.rx = None;
        debug_assert!(
            handed.is_ok(),
            "a waiter's sender is only dropped by a send"
        );
        Permit {
            window: self.clone(),
        }
    }

    /// Hands a freed slot to the oldest live waiter of the highest
    /// priority, or keeps it free.
    fn release(&self) {
        let mut st = self.lock();
        for queue in st.waiting.iter_mut().rev() {
            while let Some(tx) = queue.pop_front() {
                if tx.send(()).is_ok() {
                    return;
                }
            }
        }
        st.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_goes_to_the_highest_priority_waiter_then_in_arrival_order() {
        let w = Window::new(1);
        let held = w.acquire(0).await;
        assert_eq!(w.available(), 0);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, priority) in [("a0", 0), ("b3", 3), ("c1", 1), ("d3", 3), ("e0", 0)] {
            let (w, order) = (w.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let p = w.acquire(priority).await;
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(p);
            }));
            // Arrival order is the spawn order.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["b3", "d3", "c1", "a0", "e0"]);
        assert_eq!(w.available(), 1, "every slot back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_loses_no_slot() {
        let w = Window::new(2);
        let a = w.acquire(0).await;
        let b = w.acquire(0).await;
        let timed_out = tokio::time::timeout(Duration::from_millis(5), w.acquire(3)).await;
        assert!(timed_out.is_err());
        drop(a);
        assert_eq!(w.available(), 1, "the slot skips the waiter that left");
        // A slot handed to a waiter just as it gives up comes back too.
        let mut late = Box::pin(w.acquire(2));
        let _ = futures::poll!(late.as_mut());
        let c = w.acquire(0).await;
        assert_eq!(w.available(), 0);
        drop(b);
        drop(late);
        assert_eq!(w.available(), 1);
        drop(c);
        assert_eq!(w.available(), 2);
        // Newcomers never overtake a queued waiter.
        let x = w.acquire(0).await;
        let y = w.acquire(0).await;
        let mut queued = Box::pin(w.acquire(0));
        assert!(futures::poll!(queued.as_mut()).is_pending());
        drop(x);
        assert_eq!(w.available(), 0, "handed to the queued waiter");
        let _q = queued.await;
        drop(y);
        assert_eq!(w.available(), 1);
    }
}
