//! Behaviour of the Redis limiter, run against a single Redis and against
//! a Redis Cluster. Each function takes a way to make the configuration of
//! one more "pod" sharing the same Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use smsgw_core::limits::{LimiterMode, RateDecision, RateKey, RateLimit, RateLimiter};
use smsgw_rate::{HealthAdjuster, RateConfig, RedisLimiter, RedisLimiterConfig};

/// Makes the configuration of one pod.
pub type Pod = dyn Fn() -> RedisLimiterConfig;

/// A pod, connected (panics if Redis does not answer).
pub async fn pod(cfg: &Pod) -> RedisLimiter {
    let l = RedisLimiter::connect(cfg(), Duration::from_secs(10)).await;
    assert_eq!(l.mode(), LimiterMode::Shared, "{:?}", l.status());
    l
}

/// Takes one token at a time until refused; returns how many passed.
async fn drain(l: &dyn RateLimiter, keys: &[RateKey]) -> u32 {
    drain_until_refused(l, keys).await.0
}

/// Acquires until refused: how many were allowed, and the refusal.
async fn drain_until_refused(l: &dyn RateLimiter, keys: &[RateKey]) -> (u32, RateDecision) {
    let mut n = 0;
    loop {
        let d = l.try_acquire(keys, 1).await.unwrap();
        if !d.is_allowed() {
            return (n, d);
        }
        n += 1;
        assert!(n < 100_000);
    }
}

pub async fn burst_then_rate(cfg: &Pod) {
    let l = pod(cfg).await;
    let link = [RateKey::link("burst")];
    l.set_limit(&link[0], Some(RateLimit::new(50.0, 50)))
        .await
        .unwrap();
    let (n, refusal) = drain_until_refused(&l, &link).await;
    // Sequential calls take a little time, during which tokens refill
    // (one per 20 ms).
    assert!((50..=54).contains(&n), "burst: {n}");
    // The refusal that ended the burst (a fresh call could already find
    // the next token, 20 ms later on a loaded machine).
    match refusal {
        RateDecision::Limited { retry_after, key } => {
            assert_eq!(key, link[0]);
            assert!(retry_after <= Duration::from_millis(20), "{retry_after:?}");
        }
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n = drain(&l, &link).await;
    assert!((9..=14).contains(&n), "after 200 ms: {n}");
}

pub async fn all_keys_or_none(cfg: &Pod) {
    let l = pod(cfg).await;
    let (app, link, pool) = (
        RateKey::app("aon"),
        RateKey::link("aon"),
        RateKey::pool("aon"),
    );
    l.set_limit(&app, Some(RateLimit::new(1.0, 2)))
        .await
        .unwrap();
    l.set_limit(&link, Some(RateLimit::new(1.0, 10)))
        .await
        .unwrap();
    l.set_limit(&pool, Some(RateLimit::new(1.0, 10)))
        .await
        .unwrap();
    let keys = [app.clone(), link.clone(), pool.clone()];
    assert!(l.try_acquire(&keys, 1).await.unwrap().is_allowed());
    assert!(l.try_acquire(&keys, 1).await.unwrap().is_allowed());
    let d = l.try_acquire(&keys, 1).await.unwrap();
    assert!(
        matches!(d, RateDecision::Limited { ref key, .. } if *key == app),
        "{d:?}"
    );
    // The refusal took nothing from the link or the pool: 8 left in each.
    assert_eq!(drain(&l, std::slice::from_ref(&link)).await, 8);
    assert_eq!(drain(&l, std::slice::from_ref(&pool)).await, 8);
    // Multi-segment messages cost their segments.
    l.set_limit(&app, None).await.unwrap();
    let d = l
        .try_acquire(std::slice::from_ref(&app), 1000)
        .await
        .unwrap();
    assert!(d.is_allowed(), "no limit, no count");
}

pub async fn limits_and_tokens_are_shared_by_pods(cfg: &Pod) {
    let a = pod(cfg).await;
    let b = pod(cfg).await;
    let link = [RateKey::link("shared")];
    a.set_limit(&link[0], Some(RateLimit::new(1.0, 20)))
        .await
        .unwrap();
    let na = drain(&a, &link).await;
    let nb = drain(&b, &link).await;
    assert_eq!((na, nb), (20, 0));
    // Rate 0 (a link that is down) refuses with the zero-rate retry.
    b.set_limit(&link[0], Some(RateLimit::ZERO)).await.unwrap();
    match a.try_acquire(&link, 1).await.unwrap() {
        RateDecision::Limited { retry_after, .. } => {
            assert_eq!(retry_after, Duration::from_secs(1))
        }
        other => panic!("{other:?}"),
    }
}

/// `pods` limiters (as many pods), `tasks` tasks each, flat out on one
/// link at 500/s with burst 50 for `secs`: returns (admitted, acquisitions,
/// round trips).
pub async fn flat_out(cfg: &Pod, pods: usize, tasks: usize, secs: f64) -> (u64, u64, u64) {
    let mut limiters = Vec::new();
    for _ in 0..pods {
        limiters.push(Arc::new(pod(cfg).await));
    }
    let link = RateKey::link("exact");
    limiters[0]
        .set_limit(&link, Some(RateLimit::new(500.0, 50)))
        .await
        .unwrap();
    let admitted = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + Duration::from_secs_f64(secs);
    let mut handles = Vec::new();
    for l in &limiters {
        for _ in 0..tasks {
            let (l, admitted, link) = (l.clone(), admitted.clone(), link.clone());
            handles.push(tokio::spawn(async move {
                tokio::time::sleep_until(start.into()).await;
                let keys = [link];
                while Instant::now() < end {
                    if l.try_acquire(&keys, 1).await.unwrap().is_allowed() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for h in handles {
        h.await.unwrap();
    }
    let (mut acquires, mut trips) = (0, 0);
    for l in &limiters {
        let st = l.status();
        assert_eq!(st.mode, LimiterMode::Shared, "{st:?}");
        acquires += st.acquires;
        trips += st.round_trips;
    }
    (admitted.load(Ordering::Relaxed), acquires, trips)
}

pub async fn three_pods_should_hold_the_link_rate_exactly(cfg: &Pod) {
    let secs = 3.0;
    let (admitted, acquires, trips) = flat_out(cfg, 3, 4, secs).await;
    let ideal = 50.0 + 500.0 * secs;
    eprintln!(
        "admitted {admitted} of {acquires} acquisitions (ideal {ideal}), {trips} round trips ({:.3} per acquisition)",
        trips as f64 / acquires as f64
    );
    // The acceptance window of the 10 s test, scaled: −6 % … +5 %.
    assert!(
        (ideal * 0.94..=ideal * 1.05).contains(&(admitted as f64)),
        "admitted {admitted}, ideal {ideal}"
    );
    assert!(trips <= acquires, "at most one round trip per acquisition");
}

pub async fn concurrent_acquisitions_should_share_round_trips(cfg: &Pod) {
    let l = Arc::new(pod(cfg).await);
    let link = RateKey::link("batch");
    l.set_limit(&link, Some(RateLimit::new(1e9, 1_000_000)))
        .await
        .unwrap();
    let mut handles = Vec::new();
    for _ in 0..64 {
        let (l, link) = (l.clone(), link.clone());
        handles.push(tokio::spawn(async move {
            for _ in 0..50 {
                assert!(
                    l.try_acquire(std::slice::from_ref(&link), 1)
                        .await
                        .unwrap()
                        .is_allowed()
                );
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let st = l.status();
    eprintln!(
        "{} acquisitions in {} round trips",
        st.acquires, st.round_trips
    );
    assert_eq!(st.acquires, 64 * 50);
    assert!(st.round_trips * 2 <= st.acquires, "{st:?}");
}

pub async fn waiting_should_book_slots_in_order(cfg: &Pod) {
    let l = pod(cfg).await;
    let link = [RateKey::link("wait")];
    l.set_limit(&link[0], Some(RateLimit::new(100.0, 1)))
        .await
        .unwrap();
    let mut waits = Vec::new();
    for _ in 0..5 {
        match l
            .acquire(&link, 1, Duration::from_millis(45))
            .await
            .unwrap()
        {
            RateDecision::Allowed { wait } => waits.push(wait.as_secs_f64() * 1000.0),
            other => panic!("{other:?}"),
        }
    }
    // Slots 10 ms apart, less the time the calls themselves take.
    for (i, w) in waits.iter().enumerate() {
        let expect = 10.0 * i as f64;
        assert!(*w <= expect + 0.5 && *w >= expect * 0.6, "{waits:?}");
    }
    let d = l
        .acquire(&link, 1, Duration::from_millis(20))
        .await
        .unwrap();
    assert!(!d.is_allowed(), "the next slot is ~50 ms away: {d:?}");
}

pub async fn health_should_halve_and_restore_a_pool(cfg: &Pod) {
    let l = Arc::new(pod(cfg).await);
    let mut rc = RateConfig::default();
    rc.links
        .insert("hx".into(), Some(RateLimit::new(250.0, 25)));
    rc.links
        .insert("hy".into(), Some(RateLimit::new(250.0, 25)));
    rc.pools.insert("hp".into(), vec!["hx".into(), "hy".into()]);
    let rc = Arc::new(rc);
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = down.clone();
    let health = Arc::new(move |link: &str| !(link == "hy" && d.load(Ordering::Relaxed)));
    let interval = Duration::from_millis(200);
    let adjuster = HealthAdjuster::new(l.clone(), health).interval(interval);
    let task = tokio::spawn(adjuster.run(move || rc.clone()));
    let pool = [RateKey::pool("hp")];
    tokio::time::sleep(Duration::from_millis(50)).await;
    let full = measure(&l, &pool).await;
    down.store(true, Ordering::Relaxed);
    tokio::time::sleep(interval + Duration::from_millis(20)).await;
    let half = measure(&l, &pool).await;
    down.store(false, Ordering::Relaxed);
    tokio::time::sleep(interval + Duration::from_millis(20)).await;
    let back = measure(&l, &pool).await;
    eprintln!("pool rate: {full:.0}/s, one member down {half:.0}/s, back {back:.0}/s");
    assert!((450.0..=540.0).contains(&full), "{full}");
    assert!((225.0..=275.0).contains(&half), "{half}");
    assert!((450.0..=540.0).contains(&back), "{back}");
    let d = l.try_acquire(&[RateKey::link("hy")], 1).await.unwrap();
    assert!(d.is_allowed());
    task.abort();
}

/// Rate measured over 400 ms after draining the burst.
async fn measure(l: &RedisLimiter, keys: &[RateKey]) -> f64 {
    drain(l, keys).await;
    let t = Instant::now();
    let mut n = 0u32;
    while t.elapsed() < Duration::from_millis(400) {
        if l.try_acquire(keys, 1).await.unwrap().is_allowed() {
            n += 1;
        }
    }
    f64::from(n) / t.elapsed().as_secs_f64()
}

pub async fn pods_should_agree_on_link_health(cfg: &Pod) {
    let (a, b) = (pod(cfg).await, pod(cfg).await);
    let ttl = Duration::from_millis(800);
    let report = |l1: bool, l2: bool| vec![("h1".to_owned(), l1), ("h2".to_owned(), l2)];
    // Pod a holds h1's session, nobody holds h2's: both pods see h1 up.
    assert_eq!(
        a.share_health(&report(true, false), ttl).await.unwrap(),
        [true, false]
    );
    assert_eq!(
        b.share_health(&report(false, false), ttl).await.unwrap(),
        [true, false]
    );
    // b binds h2 too.
    assert_eq!(
        b.share_health(&report(false, true), ttl).await.unwrap(),
        [true, true]
    );
    // a loses h1: down for everyone at once.
    assert_eq!(
        a.share_health(&report(false, false), ttl).await.unwrap(),
        [false, true]
    );
    // b dies without saying so: its report of h2 expires.
    drop(b);
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert_eq!(
        a.share_health(&report(false, false), ttl).await.unwrap(),
        [false, false]
    );
    assert!(a.share_health(&[], ttl).await.unwrap().is_empty());
}
