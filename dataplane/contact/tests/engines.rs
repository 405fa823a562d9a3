//! One contract suite for the native engines: in process, and on a real
//! redis-server started for the test.

use jiff::Timestamp;
use smsgw_contact::{InProcessBlacklists, InProcessEngine, Policies, RedisBlacklists, RedisEngine};
use smsgw_core::policy::{
    BlacklistSink, PolicyEngine, PolicyError, PolicyRequest, PolicyState, Verdict,
};
use smsgw_store::testing::RedisServer;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

const POLICIES: &str = r#"
cp1:
  frequency: {daily: 2, weekly: 3, timeZone: Europe/Paris}
  blacklists: [default]
cp2:
  dedup: {window: 300ms}
dedup_src:
  dedup: {window: 1h, includeSource: true}
blacklist:
  blacklists: [default, vip]
quiet:
  quietHours: {start: '22:00', end: '07:00'}
onbuild-cp1:
  frequency: {daily: 2}
  strategies: [onbuild_cp1]
health:
  passAll: true
  strategies: [health_check]
"#;

fn policies() -> Policies {
    let specs: BTreeMap<String, smsgw_crds::ContactPolicySpec> =
        serde_yaml::from_str(POLICIES).unwrap();
    let (p, errs) = Policies::compile(&specs);
    assert!(errs.is_empty(), "{errs:?}");
    p
}

/// A settable clock; starts on Monday 2030-01-07 12:00 Paris (after the
/// real time, since Redis expiry instants follow this clock).
#[derive(Clone)]
struct FakeClock(Arc<AtomicI64>);

impl FakeClock {
    fn new() -> Self {
        let t: Timestamp = "2030-01-07T11:00:00Z".parse().unwrap();
        Self(Arc::new(AtomicI64::new(t.as_millisecond())))
    }
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
    fn clock(&self) -> smsgw_contact::Clock {
        let c = self.0.clone();
        Arc::new(move || Timestamp::from_millisecond(c.load(Ordering::SeqCst)).unwrap())
    }
}

fn req<'a>(strategy: &'a str, dest: &'a str, text: &'a str) -> PolicyRequest<'a> {
    PolicyRequest {
        strategy,
        app_id: "app",
        source: "ACME",
        destination: dest,
        text,
        destination_time_zone: None,
    }
}

async fn state(e: &dyn PolicyEngine, r: PolicyRequest<'_>) -> PolicyState {
    let d = e.check(&r).await.unwrap();
    assert_eq!(d.verdict.pass, d.verdict.state == PolicyState::Ok);
    d.verdict.state
}

async fn load(sink: &dyn BlacklistSink, name: &str, numbers: &[&str], prefixes: &[&str]) {
    let mut l = sink.begin(name).await.unwrap();
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    l.add(&own(numbers), &own(prefixes)).await.unwrap();
    l.commit().await.unwrap();
}

async fn contract(e: &dyn PolicyEngine, sink: &dyn BlacklistSink, clock: &FakeClock) {
    // Frequency: 2 a day, 3 a week, per destination.
    let a = "+33 6 00 00 00 01";
    assert_eq!(state(e, req("cp1", a, "x")).await, PolicyState::Ok);
    assert_eq!(state(e, req("cp1", a, "y")).await, PolicyState::Ok);
    assert_eq!(state(e, req("cp1", a, "z")).await, PolicyState::DailyCp);
    assert_eq!(
        state(e, req("cp1", "+33600000002", "z")).await,
        PolicyState::Ok,
        "another destination has its own counters"
    );
    // The next calendar day (Paris) opens the daily cap; the week's cap of
    // 3 is then reached.
    clock.advance(Duration::from_secs(13 * 3600)); // Tue 01:00 Paris
    assert_eq!(state(e, req("cp1", a, "x")).await, PolicyState::Ok);
    assert_eq!(state(e, req("cp1", a, "x")).await, PolicyState::WeeklyCp);
    // A refused message does not count: release gives a slot back.
    let b = "+33600000003";
    let d = e.check(&req("cp1", b, "x")).await.unwrap();
    assert_eq!(d.verdict, Verdict::OK);
    let r = d.reservation.expect("a counted message has a reservation");
    assert_eq!(r.destination, "33600000003");
    e.check(&req("cp1", b, "x")).await.unwrap();
    assert_eq!(state(e, req("cp1", b, "x")).await, PolicyState::DailyCp);
    e.release(&r).await.unwrap();
    assert_eq!(state(e, req("cp1", b, "x")).await, PolicyState::Ok);
    // Next Monday (Paris) opens the week.
    clock.advance(Duration::from_secs(6 * 86400)); // Mon 01:00 Paris
    assert_eq!(state(e, req("cp1", a, "x")).await, PolicyState::Ok);

    // Dedup: same destination and text within the window.
    let c = "+33600000004";
    assert_eq!(state(e, req("cp2", c, "hello")).await, PolicyState::Ok);
    assert_eq!(
        state(e, req("cp2", c, "hello")).await,
        PolicyState::Duplicate
    );
    assert_eq!(state(e, req("cp2", c, "other")).await, PolicyState::Ok);
    assert_eq!(
        state(e, req("cp2", "+33600000005", "hello")).await,
        PolicyState::Ok
    );
    // Releasing a dedup reservation lets the same text through again.
    let d = e.check(&req("cp2", c, "again")).await.unwrap();
    e.release(d.reservation.as_ref().unwrap()).await.unwrap();
    assert_eq!(state(e, req("cp2", c, "again")).await, PolicyState::Ok);
    // The window expires (Redis by its own clock, memory by the engine's).
    clock.advance(Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(state(e, req("cp2", c, "hello")).await, PolicyState::Ok);
    // includeSource: another sender id is not a duplicate.
    let mut r1 = req("dedup_src", c, "promo");
    assert_eq!(state(e, r1).await, PolicyState::Ok);
    assert_eq!(state(e, r1).await, PolicyState::Duplicate);
    r1.source = "OTHER";
    assert_eq!(state(e, r1).await, PolicyState::Ok);

    // Blacklists: numbers and prefixes, by reference, swapped whole.
    let bad = "+44 7911 123456";
    assert_eq!(state(e, req("blacklist", bad, "x")).await, PolicyState::Ok);
    load(sink, "default", &["447911123456"], &[]).await;
    load(sink, "vip", &[], &["4930"]).await;
    assert_eq!(
        state(e, req("blacklist", bad, "x")).await,
        PolicyState::Blacklist
    );
    assert_eq!(state(e, req("cp1", bad, "x")).await, PolicyState::Blacklist);
    assert_eq!(
        state(e, req("blacklist", "+4930123456", "x")).await,
        PolicyState::Blacklist
    );
    assert_eq!(
        state(e, req("cp1", "+4930123456", "x")).await,
        PolicyState::Ok,
        "cp1 does not use vip"
    );
    assert_eq!(
        state(e, req("blacklist", "+4940123456", "x")).await,
        PolicyState::Ok
    );
    load(sink, "default", &["33600000009"], &[]).await;
    assert_eq!(
        state(e, req("blacklist", bad, "x")).await,
        PolicyState::Ok,
        "the new list replaced the old"
    );
    assert_eq!(
        state(e, req("blacklist", "0033600000009", "x")).await,
        PolicyState::Blacklist
    );
    // A blacklisted message is not counted.
    let before = state(e, req("cp1", "+33600000009", "x")).await;
    assert_eq!(before, PolicyState::Blacklist);

    // Quiet hours: 22:00-07:00 in the policy zone (UTC here) or the
    // destination's zone.
    clock.advance(Duration::from_secs(10 * 3600)); // Mon 11:00 Paris = 10:00 UTC
    assert_eq!(state(e, req("quiet", c, "x")).await, PolicyState::Ok);
    let mut tokyo = req("quiet", c, "x");
    tokyo.destination_time_zone = Some("Asia/Tokyo"); // 19:00
    assert_eq!(state(e, tokyo).await, PolicyState::Ok);
    tokyo.destination_time_zone = Some("Pacific/Auckland"); // 23:00
    assert_eq!(state(e, tokyo).await, PolicyState::QuietHours);

    // Strategy names: every name of a policy counts against its caps
    // (and gives back to them), whichever name a request used.
    let f = "+33600000010";
    assert_eq!(state(e, req("onbuild_cp1", f, "x")).await, PolicyState::Ok);
    let d = e.check(&req("onbuild-cp1", f, "x")).await.unwrap();
    assert_eq!(d.verdict, Verdict::OK);
    assert_eq!(
        state(e, req("onbuild_cp1", f, "x")).await,
        PolicyState::DailyCp
    );
    e.release(d.reservation.as_ref().unwrap()).await.unwrap();
    assert_eq!(state(e, req("onbuild_cp1", f, "x")).await, PolicyState::Ok);
    assert_eq!(
        state(e, req("cp1", f, "x")).await,
        PolicyState::Ok,
        "cp1 counts apart"
    );
    // passAll: every message passes, counted nowhere.
    for _ in 0..3 {
        let d = e.check(&req("health_check", bad, "x")).await.unwrap();
        assert_eq!((d.verdict, d.reservation), (Verdict::OK, None));
    }

    // Errors.
    assert_eq!(
        e.check(&req("nope", c, "x")).await.unwrap_err(),
        PolicyError::UnknownStrategy("nope".into())
    );
    assert!(matches!(
        e.check(&req("cp1", "hello", "x")).await.unwrap_err(),
        PolicyError::InvalidDestination(_)
    ));
}

#[tokio::test]
async fn in_process_engine_should_keep_the_contract() {
    let clock = FakeClock::new();
    let bl = InProcessBlacklists::new();
    let e = InProcessEngine::new(policies().shared(), bl.clone()).with_clock(clock.clock());
    contract(&e, &bl, &clock).await;
}

/// A fresh `redis-server` and a connection to it.
async fn redis() -> (RedisServer, redis::aio::ConnectionManager) {
    let server = RedisServer::start();
    let conn = redis::Client::open(server.url())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    (server, conn)
}

#[tokio::test]
async fn redis_engine_should_keep_the_contract() {
    let (_server, conn) = redis().await;
    let clock = FakeClock::new();
    let e = RedisEngine::new(conn.clone(), "t", policies().shared()).with_clock(clock.clock());
    let bl = RedisBlacklists::new(conn.clone(), "t");
    contract(&e, &bl, &clock).await;
    assert_eq!(bl.len("default").await.unwrap(), (1, 0));
    assert!(bl.contains("vip", "4930555").await.unwrap());

    // Counters carry TTLs ending with their calendar period.
    let mut c = conn.clone();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("{t:cp}:d:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for k in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&k)
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(ttl > 0, "{k} has no TTL");
    }
}

#[tokio::test]
async fn concurrent_checks_should_never_exceed_the_cap() {
    let (_server, conn) = redis().await;
    let e = Arc::new(RedisEngine::new(conn, "t", policies().shared()));
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            e.check(&req("cp1", "+33611111111", "x"))
                .await
                .unwrap()
                .verdict
                .pass
        }));
    }
    let mut passed = 0;
    for t in tasks {
        passed += usize::from(t.await.unwrap());
    }
    assert_eq!(passed, 2, "daily cap of 2 under 40 concurrent checks");
}

#[tokio::test]
async fn a_blacklist_swap_should_be_all_or_nothing_for_readers() {
    let (_server, conn) = redis().await;
    let bl = RedisBlacklists::new(conn.clone(), "t");
    load(&bl, "default", &["33600000001"], &[]).await;
    // A load in progress is invisible; an abandoned one leaves the list.
    let mut l = bl.begin("default").await.unwrap();
    l.add(&["33600000002".into()], &[]).await.unwrap();
    assert!(bl.contains("default", "33600000001").await.unwrap());
    assert!(!bl.contains("default", "33600000002").await.unwrap());
    drop(l);
    assert_eq!(bl.len("default").await.unwrap(), (1, 0));
    // An empty load empties the list.
    bl.begin("default").await.unwrap().commit().await.unwrap();
    assert_eq!(bl.len("default").await.unwrap(), (0, 0));
}

#[test]
fn verdicts_should_use_the_mcp_wire_format() {
    assert_eq!(
        serde_json::to_string(&Verdict::refuse(PolicyState::DailyCp)).unwrap(),
        r#"{"state":"daily_cp","pass":false}"#
    );
    let v: Verdict = serde_json::from_str(r#"{"state":"ok","pass":true}"#).unwrap();
    assert_eq!(v, Verdict::OK);
}

#[tokio::test]
async fn concurrent_checks_should_share_script_calls_and_keep_every_cap() {
    let (_server, conn) = redis().await;
    let e = Arc::new(RedisEngine::new(conn.clone(), "t", policies().shared()));
    // 100 destinations, 3 checks each, all at once: the daily cap (2)
    // passes exactly two of each.
    let mut tasks = Vec::new();
    for round in 0..3 {
        for d in 0..100 {
            let e = e.clone();
            tasks.push(tokio::spawn(async move {
                let dest = format!("+3361000{d:04}");
                let text = format!("x{round}");
                let pass = e
                    .check(&req("cp1", &dest, &text))
                    .await
                    .unwrap()
                    .verdict
                    .pass;
                (d, pass)
            }));
        }
    }
    let mut passed = [0u32; 100];
    for t in tasks {
        let (d, pass) = t.await.unwrap();
        passed[d] += u32::from(pass);
    }
    assert!(passed.iter().all(|&p| p == 2), "{passed:?}");
    // The 300 checks went out in fewer script calls.
    let mut c = conn.clone();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    let calls: u64 = info
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        calls > 0 && calls < 300,
        "{calls} script calls for 300 checks\n{info}"
    );
}

/// The in-process engine's counters are bounded (issue 22): past its
/// entry bound a check needing a new counter fails (so the message is
/// refused, never counted wrong), destinations it already counts still
/// pass and are capped, and once entries expire there is room again.
#[tokio::test]
async fn the_in_process_state_holds_its_bound_and_frees_room_as_counters_expire() {
    let clock = FakeClock::new();
    let bl = InProcessBlacklists::new();
    // cp1 counts daily and weekly: two entries per destination.
    let e = InProcessEngine::new(policies().shared(), bl.clone())
        .with_clock(clock.clock())
        .with_max_entries(20);
    let dest = |i: u32| format!("+3361234{i:04}");
    for i in 0..10 {
        assert_eq!(state(&e, req("cp1", &dest(i), "x")).await, PolicyState::Ok);
    }
    let m = e.memory().unwrap();
    assert_eq!(
        (m.structure, m.entries, m.capacity),
        ("policy_counters", 20, 20)
    );
    assert!(m.bytes > 20 * 16, "{m:?}");
    let err = e.check(&req("cp1", &dest(10), "x")).await.unwrap_err();
    assert!(
        matches!(&err, PolicyError::Backend(why) if why.contains("full")),
        "{err:?}"
    );
    assert_eq!(e.memory().unwrap().entries, 20, "nothing counted for it");
    // A destination already counted is decided as before: its daily cap
    // of 2 still holds.
    assert_eq!(state(&e, req("cp1", &dest(0), "x")).await, PolicyState::Ok);
    assert_eq!(
        state(&e, req("cp1", &dest(0), "x")).await,
        PolicyState::DailyCp
    );
    // A week later every counter has expired: the next check sweeps them.
    clock.advance(Duration::from_secs(8 * 86_400));
    assert_eq!(state(&e, req("cp1", &dest(10), "x")).await, PolicyState::Ok);
    assert_eq!(e.memory().unwrap().entries, 2);
}
