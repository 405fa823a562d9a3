//! An SMSC that stalls, drops or half-answers (issue 21): the simulator's
//! fault injection, and a link taking a stalled session out of rotation.
//! Real SMPP over loopback TCP against the in-repo simulator.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use smsgw_smpp::{
    Error, Link, LinkConfig, LinkEvent, LinkState, SegmentOutcome, UnknownPolicy, UnknownReason,
    sim::{SimConfig, SimStall, StallScope},
};
use tokio::{sync::mpsc, time::Instant};

use common::{Fixture, WAIT, eventually, msg};

/// [`common::fixture`] with every session bound, and enquire_link far
/// away: it must not be what detects a stall here.
async fn fixture(sim_cfg: SimConfig, link_cfg: impl FnOnce(LinkConfig) -> LinkConfig) -> Fixture {
    let f = common::fixture(sim_cfg, |c| {
        link_cfg(c.enquire_link_interval(Duration::from_secs(60)))
    })
    .await;
    assert!(f.link.wait_all_bound(WAIT).await, "link binds");
    f
}

async fn submit_one(link: &Link, text: &str) -> SegmentOutcome {
    let mut out = link.submit(msg(text)).await.expect("sent");
    assert_eq!(out.len(), 1);
    out.remove(0)
}

/// The next `StateChanged` of `session` to `state`, with its reason.
async fn next_state(
    events: &mut mpsc::Receiver<LinkEvent>,
    session: Option<usize>,
    state: LinkState,
) -> (usize, Option<String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(LinkEvent::StateChanged {
                session: s,
                state: st,
                reason,
                ..
            })) if st == state && session.is_none_or(|x| x == s) => return (s, reason),
            Ok(Some(_)) => continue,
            other => panic!("no {state:?} for session {session:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn sim_drops_the_connection_right_after_the_kth_response() {
    let f = fixture(SimConfig::default().drop_after(3, false), |c| c).await;
    for i in 0..3 {
        let o = submit_one(&f.link, &format!("m{i}")).await;
        assert!(
            matches!(o, SegmentOutcome::Accepted { .. }),
            "submit {i}: {o:?}"
        );
    }
    eventually("the drop", || f.sim.counters().drops == 1).await;
    eventually("a rebind", || f.sim.binds() == 2).await;
    assert!(f.link.wait_bound(WAIT).await);
    let o = submit_one(&f.link, "after").await;
    assert!(matches!(o, SegmentOutcome::Accepted { .. }), "{o:?}");
    // Armed once: no further drop.
    assert_eq!(f.sim.counters().drops, 1);
    assert_eq!(f.sim.binds(), 2);
}

#[tokio::test]
async fn sim_drops_the_connection_between_a_submit_and_its_response() {
    let f = fixture(SimConfig::default().drop_after(2, true), |c| {
        c.unknown_policy(UnknownPolicy::Hold)
    })
    .await;
    let o = submit_one(&f.link, "first").await;
    assert!(matches!(o, SegmentOutcome::Accepted { .. }), "{o:?}");
    let started = Instant::now();
    let o = submit_one(&f.link, "second").await;
    // Read and counted by the SMSC, never answered, and the connection is
    // gone: unknown at once, not after the response timeout.
    assert!(
        matches!(
            o,
            SegmentOutcome::Unknown {
                reason: UnknownReason::ConnectionLost { .. },
                ..
            }
        ),
        "{o:?}"
    );
    assert!(started.elapsed() < f.link.config().response_timeout);
    assert_eq!(f.sim.submits(), 2);
    assert_eq!(f.sim.counters().drops, 1);
    eventually("a rebind", || f.sim.binds() == 2).await;
    assert!(f.link.wait_bound(WAIT).await);
    let o = submit_one(&f.link, "third").await;
    assert!(matches!(o, SegmentOutcome::Accepted { .. }), "{o:?}");
}

#[tokio::test]
async fn sim_stall_holds_every_answer_until_it_ends() {
    // Nothing on the link detects the stall here (no stall detection, no
    // enquire_link): the held response arrives once the stall is over.
    let f = fixture(
        SimConfig::default().stall(1, Duration::from_millis(800), StallScope::Connection),
        |c| {
            c.stall_after_timeouts(0)
                .response_timeout(Duration::from_secs(3))
        },
    )
    .await;
    let started = Instant::now();
    let o = submit_one(&f.link, "held").await;
    let waited = started.elapsed();
    assert!(matches!(o, SegmentOutcome::Accepted { .. }), "{o:?}");
    assert!(
        waited >= Duration::from_millis(750),
        "answered during the stall, after {waited:?}"
    );
    assert_eq!(f.sim.counters().stalls, 1);
    let conns = f.sim.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].submits, 1);
    assert!(!conns[0].stalled);
    // Answers at once again.
    let started = Instant::now();
    let o = submit_one(&f.link, "prompt").await;
    assert!(matches!(o, SegmentOutcome::Accepted { .. }), "{o:?}");
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn a_stalled_session_leaves_rotation_within_one_response_timeout_and_rebinds() {
    let response_timeout = Duration::from_millis(500);
    let window = 4;
    let mut f = fixture(SimConfig::default(), |c| {
        c.sessions(2)
            .window(window)
            .response_timeout(response_timeout)
            .unknown_policy(UnknownPolicy::Hold)
    })
    .await;
    let link = f.link.clone();

    // Steady traffic from 8 senders over both sessions.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let unknown = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for t in 0..8 {
        let (link, stop) = (link.clone(), stop.clone());
        let (accepted, unknown, refused) = (accepted.clone(), unknown.clone(), refused.clone());
        senders.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match link.submit(msg(&format!("t{t} m{i}"))).await {
                    Ok(o) => match &o[0] {
                        SegmentOutcome::Accepted { .. } => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        SegmentOutcome::Unknown { .. } => {
                            unknown.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("unexpected outcome {other:?}"),
                    },
                    Err(e @ (Error::LinkDown { .. } | Error::LinkStopped { .. })) => {
                        panic!("the other session must keep the link up: {e}")
                    }
                    Err(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    eventually("traffic on both connections", || {
        let c = f.sim.connections();
        c.len() == 2 && c.iter().all(|c| c.submits > 20)
    })
    .await;

    let conns = f.sim.connections();
    let (victim, other) = (conns[0].id, conns[1].id);
    let count = |id: u64| {
        f.sim
            .connections()
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.submits)
    };
    let stalled_at = Instant::now();
    f.sim.stall_connection(victim, Duration::from_secs(3));

    let (session, reason) = next_state(&mut f.events, None, LinkState::Stalled).await;
    let detected = stalled_at.elapsed();
    assert!(
        detected < response_timeout + Duration::from_millis(300),
        "stall detected after {detected:?}"
    );
    assert!(
        reason.as_deref().is_some_and(|r| r.contains("stalled")),
        "{reason:?}"
    );
    assert!(f.link.is_up(), "the other session stays in rotation");

    // Out of rotation: the stalled connection gets nothing new (it is
    // closed soon after), while the other one keeps receiving submits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let victim_then = count(victim);
    let other_then = count(other).expect("other connection open");
    tokio::time::sleep(Duration::from_millis(400)).await;
    if let Some(n) = count(victim) {
        assert_eq!(Some(n), victim_then, "submits went to the stalled session");
    }
    eventually("the stalled connection closed", || count(victim).is_none()).await;
    assert!(
        count(other).expect("other connection open") > other_then + 20,
        "the other session kept sending"
    );

    // The session rebinds on a fresh connection while the old one would
    // still be stalled.
    next_state(&mut f.events, Some(session), LinkState::Bound).await;
    assert!(stalled_at.elapsed() < Duration::from_secs(3));
    assert_eq!(f.sim.binds(), 3);
    assert!(f.link.wait_all_bound(WAIT).await);
    let fresh = f.sim.connections();
    assert_eq!(fresh.len(), 2);
    assert!(fresh.iter().all(|c| c.id != victim));
    eventually("traffic on the rebound session", || {
        f.sim
            .connections()
            .iter()
            .all(|c| c.id == other || c.submits > 10)
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.expect("sender");
    }
    assert!(accepted.load(Ordering::Relaxed) > 0);
    // Only what was in the stalled session's window is unknown.
    let unknown = unknown.load(Ordering::Relaxed);
    assert!(
        (1..=window as u64).contains(&unknown),
        "{unknown} unknown outcomes"
    );
    let st = f.link.status();
    assert_eq!(st.sessions[session].stalls, 1);
    assert_eq!(st.sessions.iter().map(|s| s.stalls).sum::<u64>(), 1);
    assert_eq!(st.state, LinkState::Bound);
}

#[tokio::test]
async fn a_whole_smsc_stall_shows_as_a_stalled_link_then_recovers() {
    let f = fixture(SimConfig::default(), |c| {
        c.response_timeout(Duration::from_millis(400))
            .unknown_policy(UnknownPolicy::Hold)
    })
    .await;
    f.sim.arm_stall(SimStall {
        after_submits: 0,
        duration: Duration::from_millis(1500),
        scope: StallScope::All,
    });
    let o = submit_one(&f.link, "lost in the stall").await;
    assert!(
        matches!(
            o,
            SegmentOutcome::Unknown {
                reason: UnknownReason::ResponseTimeout { .. },
                ..
            }
        ),
        "{o:?}"
    );
    let st = f.link.status();
    assert_eq!(st.state, LinkState::Stalled, "{st:?}");
    assert_eq!(st.sessions_bound, 0);
    assert!(!f.link.is_up());
    assert!(matches!(
        f.link.submit(msg("refused")).await,
        Err(Error::LinkDown { .. })
    ));
    assert!(f.link.wait_bound(WAIT).await, "bound again after the stall");
    let o = submit_one(&f.link, "after the stall").await;
    assert!(matches!(o, SegmentOutcome::Accepted { .. }), "{o:?}");
    assert_eq!(f.link.status().state, LinkState::Bound);
}

#[tokio::test]
async fn the_stalled_windows_other_submits_are_unknown_at_once() {
    let response_timeout = Duration::from_millis(800);
    let f = fixture(SimConfig::default(), |c| {
        c.response_timeout(response_timeout)
            .unknown_policy(UnknownPolicy::Hold)
    })
    .await;
    let victim = f.sim.connections()[0].id;
    f.sim.stall_connection(victim, Duration::from_secs(5));
    let started = Instant::now();
    let first = tokio::spawn({
        let link = f.link.clone();
        async move { submit_one(&link, "first").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = tokio::spawn({
        let link = f.link.clone();
        async move {
            let o = submit_one(&link, "second").await;
            (o, Instant::now())
        }
    });
    let first = first.await.expect("first");
    assert!(
        matches!(
            first,
            SegmentOutcome::Unknown {
                reason: UnknownReason::ResponseTimeout { .. },
                ..
            }
        ),
        "{first:?}"
    );
    let (second, settled) = second.await.expect("second");
    // Settled with the stall, not a response timeout after it was sent.
    assert!(
        matches!(
            second,
            SegmentOutcome::Unknown {
                reason: UnknownReason::ConnectionLost { .. },
                ..
            }
        ),
        "{second:?}"
    );
    let at = settled - started;
    assert!(
        at < response_timeout + Duration::from_millis(200),
        "second settled {at:?} after the first was sent"
    );
    eventually("stall counted", || f.link.status().sessions[0].stalls == 1).await;
    assert_eq!(f.link.status().sessions[0].stall_unknown, 1);
}

#[tokio::test]
async fn stall_after_two_timeouts_tolerates_one() {
    let response_timeout = Duration::from_millis(300);
    let mut f = fixture(SimConfig::default(), |c| {
        c.response_timeout(response_timeout)
            .stall_after_timeouts(2)
            .unknown_policy(UnknownPolicy::Hold)
    })
    .await;
    // One unanswered submit_sm, then answers again.
    f.sim.set_drop_responses(true);
    let o = submit_one(&f.link, "one").await;
    assert!(matches!(o, SegmentOutcome::Unknown { .. }), "{o:?}");
    f.sim.set_drop_responses(false);
    assert!(f.link.is_up());
    let o = submit_one(&f.link, "answered").await;
    assert!(matches!(o, SegmentOutcome::Accepted { .. }), "{o:?}");
    // An answer in between resets the count.
    f.sim.set_drop_responses(true);
    let o = submit_one(&f.link, "two").await;
    assert!(matches!(o, SegmentOutcome::Unknown { .. }), "{o:?}");
    assert!(f.link.is_up(), "one timeout in a row does not stall");
    assert_eq!(f.sim.binds(), 1);
    let o = submit_one(&f.link, "three").await;
    assert!(matches!(o, SegmentOutcome::Unknown { .. }), "{o:?}");
    next_state(&mut f.events, Some(0), LinkState::Stalled).await;
    f.sim.set_drop_responses(false);
    eventually("a rebind", || f.sim.binds() == 2).await;
    assert!(f.link.wait_bound(WAIT).await);
    assert_eq!(f.link.status().sessions[0].stalls, 1);
}

fn is_accepted(o: &SegmentOutcome) -> bool {
    matches!(o, SegmentOutcome::Accepted { .. })
}

#[tokio::test]
async fn a_submit_lost_with_its_dropped_connection_is_resubmitted_and_reported_so() {
    let f = fixture(SimConfig::default().drop_after(2, true), |c| c.sessions(2)).await;
    let o = submit_one(&f.link, "first").await;
    assert!(is_accepted(&o), "{o:?}");
    let o = submit_one(&f.link, "second").await;
    let SegmentOutcome::Resubmitted {
        first: UnknownReason::ConnectionLost { .. },
        resubmits: 1,
        outcome,
        ..
    } = &o
    else {
        panic!("{o:?}")
    };
    assert!(is_accepted(outcome), "{o:?}");
    assert!(o.is_resubmitted() && is_accepted(o.last()));
    // The SMSC read the lost copy and the resubmitted one.
    assert_eq!(f.sim.submits(), 3);
    assert_eq!(f.link.status().resubmitted, 1);
}

#[tokio::test]
async fn a_stalled_sessions_window_is_resubmitted_on_the_other_session_within_one_response_timeout()
{
    let response_timeout = Duration::from_millis(600);
    let f = fixture(SimConfig::default(), |c| {
        c.sessions(2).window(8).response_timeout(response_timeout)
    })
    .await;
    let conns = f.sim.connections();
    f.sim.stall_connection(conns[0].id, Duration::from_secs(10));
    let started = Instant::now();
    let sends: Vec<_> = (0..12)
        .map(|i| {
            let link = f.link.clone();
            tokio::spawn(async move { submit_one(&link, &format!("m{i}")).await })
        })
        .collect();
    let mut resubmitted: u64 = 0;
    for s in sends {
        let o = s.await.expect("sender");
        // Nothing stays unknown: what the stalled connection held went out
        // again on the healthy one.
        assert!(is_accepted(o.last()), "{o:?}");
        if o.is_resubmitted() {
            resubmitted += 1;
        }
    }
    let took = started.elapsed();
    assert!(resubmitted > 0, "some submits went to the stalled session");
    assert!(took < Duration::from_secs(5), "settled after {took:?}");
    assert_eq!(f.link.status().resubmitted, resubmitted);
    assert_eq!(f.sim.submits(), 12 + resubmitted);
}

#[tokio::test]
async fn a_whole_smsc_stall_resubmits_once_a_session_is_bound_again() {
    let f = fixture(SimConfig::default(), |c| {
        c.response_timeout(Duration::from_millis(400))
    })
    .await;
    f.sim.arm_stall(SimStall {
        after_submits: 0,
        duration: Duration::from_millis(1500),
        scope: StallScope::All,
    });
    let o = submit_one(&f.link, "sent twice").await;
    let SegmentOutcome::Resubmitted {
        first: UnknownReason::ResponseTimeout { .. },
        outcome,
        ..
    } = &o
    else {
        panic!("{o:?}")
    };
    assert!(is_accepted(outcome), "{o:?}");
    assert_eq!(f.link.status().state, LinkState::Bound);
}

#[tokio::test]
async fn with_hold_or_without_a_healthy_session_in_time_the_segment_stays_unknown() {
    let f = fixture(SimConfig::default(), |c| {
        c.response_timeout(Duration::from_millis(300))
            .resubmit_wait(Duration::from_millis(300))
    })
    .await;
    f.sim.arm_stall(SimStall {
        after_submits: 0,
        duration: Duration::from_secs(3),
        scope: StallScope::All,
    });
    let o = submit_one(&f.link, "no session to resubmit on").await;
    assert!(
        matches!(
            o,
            SegmentOutcome::Unknown {
                reason: UnknownReason::ResponseTimeout { .. },
                ..
            }
        ),
        "{o:?}"
    );
    assert_eq!(f.link.status().resubmitted, 0);
}
