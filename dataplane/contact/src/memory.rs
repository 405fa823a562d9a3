//! The in-process engine (standalone mode): the native rules over maps in
//! memory, one lock per decision, expired entries swept as it goes.

use crate::policies::{Plan, SharedPolicies};
use crate::redis_engine::Clock;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use jiff::Timestamp;
use smsgw_core::policy::{
    BlacklistLoad, BlacklistSink, Decision, PolicyEngine, PolicyError, PolicyRequest, PolicyState,
    Reservation, Verdict,
};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Numbers and prefixes of one list.
#[derive(Debug, Default)]
struct ListSet {
    numbers: HashSet<String>,
    prefixes: HashSet<String>,
    longest_prefix: usize,
}

impl ListSet {
    fn contains(&self, dest: &str) -> bool {
        if self.numbers.contains(dest) {
            return true;
        }
        (1..=dest.len().min(self.longest_prefix)).any(|l| self.prefixes.contains(&dest[..l]))
    }
}

/// Blacklists in memory, each swapped in whole when a load commits.
/// Clones share the lists.
#[derive(Clone, Debug, Default)]
pub struct InProcessBlacklists {
    lists: Arc<ArcSwap<HashMap<String, Arc<ListSet>>>>,
}

impl InProcessBlacklists {
    /// No lists.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `destination` (normalised digits) is on list `name`; an
    /// unknown list holds nothing.
    pub fn contains(&self, name: &str, destination: &str) -> bool {
        self.lists
            .load()
            .get(name)
            .is_some_and(|l| l.contains(destination))
    }

    /// Numbers and prefixes on list `name`.
    pub fn len(&self, name: &str) -> (usize, usize) {
        self.lists
            .load()
            .get(name)
            .map_or((0, 0), |l| (l.numbers.len(), l.prefixes.len()))
    }
}

struct InProcessLoad {
    target: InProcessBlacklists,
    name: String,
    set: ListSet,
}

#[async_trait]
impl BlacklistLoad for InProcessLoad {
    async fn add(&mut self, numbers: &[String], prefixes: &[String]) -> Result<(), PolicyError> {
        self.set.numbers.extend(numbers.iter().cloned());
        for p in prefixes {
            self.set.longest_prefix = self.set.longest_prefix.max(p.len());
            self.set.prefixes.insert(p.clone());
        }
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), PolicyError> {
        let InProcessLoad { target, name, set } = *self;
        let set = Arc::new(set);
        target.lists.rcu(|old| {
            let mut m = HashMap::clone(old);
            m.insert(name.clone(), set.clone());
            m
        });
        Ok(())
    }
}

#[async_trait]
impl BlacklistSink for InProcessBlacklists {
    async fn begin(&self, name: &str) -> Result<Box<dyn BlacklistLoad>, PolicyError> {
        Ok(Box::new(InProcessLoad {
            target: self.clone(),
            name: name.to_owned(),
            set: ListSet::default(),
        }))
    }
}

#[derive(Default)]
struct State {
    /// `policy\0dest\0period` → (count, expires at ms).
    counters: HashMap<String, (u32, i64)>,
    /// `policy\0hash` → expires at ms.
    dedup: HashMap<String, i64>,
    ops: u64,
    /// Bytes of the keys held (for the gauge).
    key_bytes: usize,
    /// When a full table was last swept (ms).
    full_sweep_ms: i64,
}

/// Counters and dedup keys the in-process engine holds at most unless told
/// otherwise (about 100 bytes each): two per destination and policy
/// (daily, weekly) for a week, so about 250,000 destinations a week.
/// Past it, checks that need a new entry fail (`PolicyError::Backend`:
/// the message is refused, never counted wrong); use the Redis engine for
/// more.
pub const DEFAULT_MAX_ENTRIES: usize = 500_000;

/// Approximate bytes of one entry besides its key.
const ENTRY_BYTES: usize = 48;

impl State {
    fn entries(&self) -> usize {
        self.counters.len() + self.dedup.len()
    }
    fn sweep(&mut self, now_ms: i64) {
        let mut freed = 0;
        self.counters.retain(|k, (_, exp)| {
            let keep = *exp > now_ms;
            if !keep {
                freed += k.len();
            }
            keep
        });
        self.dedup.retain(|k, exp| {
            let keep = *exp > now_ms;
            if !keep {
                freed += k.len();
            }
            keep
        });
        self.key_bytes -= freed;
    }

    fn count(&self, key: &str, now_ms: i64) -> u32 {
        match self.counters.get(key) {
            Some((n, exp)) if *exp > now_ms => *n,
            _ => 0,
        }
    }
}

fn counter_key(policy: &str, dest: &str, period: &str) -> String {
    format!("{policy}\0{dest}\0{period}")
}

fn dedup_key(policy: &str, hash: &str) -> String {
    format!("{policy}\0{hash}")
}

/// The native rules in process memory: for one pod alone (standalone).
pub struct InProcessEngine {
    policies: SharedPolicies,
    blacklists: InProcessBlacklists,
    state: Mutex<State>,
    clock: Clock,
    max_entries: usize,
}

impl InProcessEngine {
    /// An engine over `policies`, reading `blacklists`, holding at most
    /// [`DEFAULT_MAX_ENTRIES`] counters and dedup keys.
    pub fn new(policies: SharedPolicies, blacklists: InProcessBlacklists) -> Self {
        Self {
            policies,
            blacklists,
            state: Mutex::new(State::default()),
            clock: Arc::new(Timestamp::now),
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }

    /// Holds at most `entries` counters and dedup keys (see
    /// [`DEFAULT_MAX_ENTRIES`] for what happens past it).
    pub fn with_max_entries(mut self, entries: usize) -> Self {
        self.max_entries = entries.max(1);
        self
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn decide(
        &self,
        policy: &crate::CompiledPolicy,
        plan: &Plan,
        now_ms: i64,
    ) -> Result<PolicyState, PolicyError> {
        for bl in &policy.blacklists {
            if self.blacklists.contains(bl, &plan.destination) {
                return Ok(PolicyState::Blacklist);
            }
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.ops += 1;
        if st.ops.is_multiple_of(65_536) {
            st.sweep(now_ms);
        }
        let dkey = plan
            .dedup
            .as_ref()
            .map(|(h, w)| (dedup_key(&policy.name, h), *w));
        if let Some((k, _)) = &dkey
            && st.dedup.get(k).is_some_and(|exp| *exp > now_ms)
        {
            return Ok(PolicyState::Duplicate);
        }
        let mut incr = Vec::with_capacity(2);
        if let Some(p) = &plan.periods {
            for (cap, period, end, state) in [
                (policy.daily, &p.day, p.day_end_ms, PolicyState::DailyCp),
                (policy.weekly, &p.week, p.week_end_ms, PolicyState::WeeklyCp),
            ] {
                if let Some(cap) = cap {
                    let k = counter_key(&policy.name, &plan.destination, period);
                    if st.count(&k, now_ms) >= cap {
                        return Ok(state);
                    }
                    incr.push((k, end));
                }
            }
        }
        let new = incr
            .iter()
            .filter(|(k, _)| !st.counters.contains_key(k))
            .count()
            + usize::from(
                dkey.as_ref()
                    .is_some_and(|(k, _)| !st.dedup.contains_key(k)),
            );
        if st.entries() + new > self.max_entries {
            // Expired entries make room; a full table of live ones is swept
            // at most once a second (a sweep reads every entry).
            if now_ms - st.full_sweep_ms >= 1_000 {
                st.full_sweep_ms = now_ms;
                st.sweep(now_ms);
            }
            if st.entries() + new > self.max_entries {
                return Err(PolicyError::Backend(format!(
                    "the in-process contact-policy state is full ({} counters and dedup keys); use --policy-engine redis for this many destinations",
                    self.max_entries
                )));
            }
        }
        for (k, end) in incr {
            if !st.counters.contains_key(&k) {
                st.key_bytes += k.len();
            }
            let e = st.counters.entry(k).or_insert((0, end));
            if e.1 <= now_ms {
                *e = (0, end);
            }
            e.0 += 1;
        }
        if let Some((k, w)) = dkey {
            let len = k.len();
            if st
                .dedup
                .insert(
                    k,
                    now_ms + i64::try_from(w.as_millis()).unwrap_or(i64::MAX / 2),
                )
                .is_none()
            {
                st.key_bytes += len;
            }
        }
        Ok(PolicyState::Ok)
    }
}

#[async_trait]
impl PolicyEngine for InProcessEngine {
    async fn check(&self, req: &PolicyRequest<'_>) -> Result<Decision, PolicyError> {
        let policies = self.policies.load();
        let policy = policies
            .get(req.strategy)
            .ok_or_else(|| PolicyError::UnknownStrategy(req.strategy.to_owned()))?;
        let now = (self.clock)();
        let plan = match policy.plan(req, now)? {
            Ok(p) => p,
            Err(state) => return Ok(Decision::uncounted(Verdict::refuse(state))),
        };
        Ok(match self.decide(policy, &plan, now.as_millisecond())? {
            PolicyState::Ok => Decision {
                verdict: Verdict::OK,
                reservation: plan.reservation(policy),
            },
            state => Decision::uncounted(Verdict::refuse(state)),
        })
    }

    async fn release(&self, r: &Reservation) -> Result<(), PolicyError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for period in [&r.day, &r.week].into_iter().flatten() {
            let k = counter_key(&r.strategy, &r.destination, period);
            if let Some(e) = st.counters.get_mut(&k) {
                e.0 = e.0.saturating_sub(1);
            }
        }
        if let Some(h) = &r.dedup {
            let k = dedup_key(&r.strategy, h);
            if st.dedup.remove(&k).is_some() {
                st.key_bytes -= k.len();
            }
        }
        Ok(())
    }

    fn memory(&self) -> Option<smsgw_core::bounded::MemoryUse> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Some(smsgw_core::bounded::MemoryUse {
            structure: "policy_counters",
            entries: st.entries() as u64,
            bytes: (st.key_bytes + st.entries() * ENTRY_BYTES) as u64,
            capacity: self.max_entries as u64,
            evicted: 0,
        })
    }
}
