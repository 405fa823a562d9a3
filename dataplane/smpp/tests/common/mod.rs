//! Fixtures shared by the link test targets (`link.rs`, `faults.rs`).

use std::time::Duration;

use smsgw_smpp::{
    Address, Link, LinkConfig, LinkEvent, Segment, SubmitRequest,
    sim::{self, SimConfig, SimHandle},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(5);

/// A simulator and a link bound to it; both stop when it is dropped.
pub struct Fixture {
    pub sim: SimHandle,
    pub link: Link,
    pub events: mpsc::Receiver<LinkEvent>,
    pub cancel: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts a simulator, stopped by `cancel`.
pub async fn start_sim(cfg: SimConfig, cancel: &CancellationToken) -> SimHandle {
    sim::run(cfg, cancel.clone())
        .await
        .expect("simulator starts")
}

/// A simulator with `sim_cfg` and a link to it with
/// `link_cfg(LinkConfig::test(..))`, once a session is bound.
pub async fn fixture(
    sim_cfg: SimConfig,
    link_cfg: impl FnOnce(LinkConfig) -> LinkConfig,
) -> Fixture {
    let cancel = CancellationToken::new();
    let sim = start_sim(sim_cfg, &cancel).await;
    let (tx, events) = mpsc::channel(100_000);
    let link = Link::spawn(link_cfg(LinkConfig::test(sim.addr())), tx, cancel.clone())
        .expect("link spawns");
    assert!(link.wait_bound(WAIT).await, "link binds");
    Fixture {
        sim,
        link,
        events,
        cancel,
    }
}

/// A one-segment message with `text`, to a fixed destination.
pub fn msg(text: &str) -> SubmitRequest {
    SubmitRequest::new(
        Address::new("smsgw", 5, 0),
        Address::new("4917012345", 1, 1),
        vec![Segment::new(text.as_bytes().to_vec())],
    )
}

/// Polls `f` every 10 ms until it holds; fails the test after [`WAIT`].
pub async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
