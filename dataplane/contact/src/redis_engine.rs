//! The native engine on Redis: one Lua script decides and counts the
//! messages waiting at that moment (one round trip each, batched across
//! concurrent sends), another takes a count back; blacklists are sets
//! swapped in with `RENAME`.
//!
//! Every key carries the hash tag `{<prefix>:cp}`, so the scripts touch
//! one slot and run unchanged on Redis Cluster (at the price of keeping
//! contact-policy state on one shard).

use crate::policies::{CompiledPolicy, Plan, SharedPolicies};
use async_trait::async_trait;
use jiff::Timestamp;
use redis::Script;
use redis::aio::ConnectionManager;
use smsgw_core::policy::{
    BlacklistLoad, BlacklistSink, Decision, PolicyEngine, PolicyError, PolicyRequest, PolicyState,
    Reservation, Verdict,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Where "now" comes from (tests replace it).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Key layout of the contact-policy state in Redis, shared with the
/// blacklist loader and the Node-RED flow (`mcp/flows.json`).
pub mod redis_keys {
    /// Hash tag of every key: `{<prefix>:cp}`.
    pub fn tag(prefix: &str) -> String {
        format!("{{{prefix}:cp}}")
    }
    /// Daily counter of `dest` under `policy` for `day` (`YYYYMMDD`).
    pub fn daily(prefix: &str, policy: &str, dest: &str, day: &str) -> String {
        format!("{}:d:{policy}:{dest}:{day}", tag(prefix))
    }
    /// Weekly counter of `dest` under `policy` for `week` (`YYYYWww`).
    pub fn weekly(prefix: &str, policy: &str, dest: &str, week: &str) -> String {
        format!("{}:w:{policy}:{dest}:{week}", tag(prefix))
    }
    /// Dedup key of a (destination, text[, source]) hash under `policy`.
    pub fn dedup(prefix: &str, policy: &str, hash: &str) -> String {
        format!("{}:dd:{policy}:{hash}", tag(prefix))
    }
    /// Set of the numbers on blacklist `name`.
    pub fn bl_numbers(prefix: &str, name: &str) -> String {
        format!("{}:bl:{name}:n", tag(prefix))
    }
    /// Set of the prefixes on blacklist `name`.
    pub fn bl_prefixes(prefix: &str, name: &str) -> String {
        format!("{}:bl:{name}:p", tag(prefix))
    }
    /// A placeholder key in the same slot, for unused script slots.
    pub fn none(prefix: &str) -> String {
        format!("{}:none", tag(prefix))
    }
}

/// Decides and counts a batch of messages in one call (one round trip for
/// every check waiting when the call starts).
///
/// ARGV[1]: messages in the batch. Per message, seven ARGV (daily cap
/// (-1: none), daily expiry ms, weekly cap, weekly expiry ms, dedup window
/// ms (0: none), destination, blacklist count `nbl`) and `3 + 2 * nbl`
/// KEYS (daily, weekly, dedup, then numbers and prefixes per blacklist),
/// in message order. Returns one code per message: 0 ok, 1 daily, 2
/// weekly, 3 blacklist, 4 duplicate.
///
/// A counter is incremented first and taken back when it went past its
/// cap (no read before the write), and its expiry is set when it is
/// created: two to four commands for a message that passes.
pub(crate) const CHECK: &str = r"
local function check(k, dcap, dend, wcap, wend, window, dest, nbl)
  for i = 0, nbl - 1 do
    if redis.call('SISMEMBER', KEYS[k + 4 + 2 * i], dest) == 1 then return 3 end
    local pre = KEYS[k + 5 + 2 * i]
    if redis.call('EXISTS', pre) == 1 then
      local cands = {}
      for l = 1, #dest do cands[l] = string.sub(dest, 1, l) end
      local hits = redis.call('SMISMEMBER', pre, unpack(cands))
      for _, h in ipairs(hits) do if h == 1 then return 3 end end
    end
  end
  if window > 0 and redis.call('EXISTS', KEYS[k + 3]) == 1 then return 4 end
  if dcap >= 0 then
    local v = redis.call('INCR', KEYS[k + 1])
    if v == 1 then redis.call('PEXPIREAT', KEYS[k + 1], dend) end
    if v > dcap then
      redis.call('DECR', KEYS[k + 1])
      return 1
    end
  end
  if wcap >= 0 then
    local v = redis.call('INCR', KEYS[k + 2])
    if v == 1 then redis.call('PEXPIREAT', KEYS[k + 2], wend) end
    if v > wcap then
      redis.call('DECR', KEYS[k + 2])
      if dcap >= 0 then redis.call('DECR', KEYS[k + 1]) end
      return 2
    end
  end
  if window > 0 then redis.call('SET', KEYS[k + 3], '1', 'PX', window) end
  return 0
end
local out = {}
local k = 0
for m = 0, tonumber(ARGV[1]) - 1 do
  local a = 1 + 7 * m
  local nbl = tonumber(ARGV[a + 7])
  out[m + 1] = check(k, tonumber(ARGV[a + 1]), ARGV[a + 2], tonumber(ARGV[a + 3]),
    ARGV[a + 4], tonumber(ARGV[a + 5]), ARGV[a + 6], nbl)
  k = k + 3 + 2 * nbl
end
return out
";

/// Checks one script call carries at most.
const MAX_BATCH: usize = 128;
/// Script calls in flight at once; checks arriving meanwhile wait and
/// form the next batch.
const MAX_CALLS_IN_FLIGHT: usize = 4;

/// One message's share of a [`CHECK`] call.
struct CheckJob {
    keys: Vec<String>,
    dcap: i64,
    dend: i64,
    wcap: i64,
    wend: i64,
    window_ms: u64,
    destination: String,
    answer: oneshot::Sender<Result<i64, PolicyError>>,
}

/// Collects waiting checks into batches and runs each as one script call.
/// Ends when the engine (every sender) is dropped.
async fn run_checks(mut rx: mpsc::Receiver<CheckJob>, conn: ConnectionManager, script: Script) {
    let calls = Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT));
    loop {
        let Ok(permit) = calls.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let (mut conn, script) = (conn.clone(), script.clone());
        tokio::spawn(async move {
            let mut inv = script.prepare_invoke();
            inv.arg(batch.len());
            for j in &batch {
                for k in &j.keys {
                    inv.key(k);
                }
                inv.arg(j.dcap)
                    .arg(j.dend)
                    .arg(j.wcap)
                    .arg(j.wend)
                    .arg(j.window_ms)
                    .arg(&j.destination)
                    .arg((j.keys.len() - 3) / 2);
            }
            let codes: Result<Vec<i64>, _> = inv.invoke_async(&mut conn).await;
            drop(permit);
            match codes {
                Ok(codes) if codes.len() == batch.len() => {
                    for (j, c) in batch.into_iter().zip(codes) {
                        let _ = j.answer.send(Ok(c));
                    }
                }
                Ok(codes) => {
                    let e = format!(
                        "check script answered {} codes for {}",
                        codes.len(),
                        batch.len()
                    );
                    for j in batch {
                        let _ = j.answer.send(Err(backend(&e)));
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    for j in batch {
                        let _ = j.answer.send(Err(backend(&e)));
                    }
                }
            }
        });
    }
}

/// KEYS: daily, weekly, dedup; ARGV: three flags ('1' = release it).
const RELEASE: &str = r"
for i = 1, 2 do
  if ARGV[i] == '1' and redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('DECR', KEYS[i]) <= 0 then redis.call('DEL', KEYS[i]) end
  end
end
if ARGV[3] == '1' then redis.call('DEL', KEYS[3]) end
return 0
";

/// KEYS: staged numbers, staged prefixes, live numbers, live prefixes.
const SWAP: &str = r"
for i = 1, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 2])
    redis.call('PERSIST', KEYS[i + 2])
  else
    redis.call('DEL', KEYS[i + 2])
  end
end
return 0
";

fn backend(e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Backend(e.to_string())
}

/// The native engine, shared by every pod on one Redis.
pub struct RedisEngine {
    conn: ConnectionManager,
    prefix: String,
    policies: SharedPolicies,
    check: Script,
    release: Script,
    clock: Clock,
    /// Feeds [`run_checks`], started by the first check (inside a runtime).
    checks: OnceLock<mpsc::Sender<CheckJob>>,
}

impl RedisEngine {
    /// An engine over `policies` on `conn`, keys under `prefix` (`smsgw`).
    pub fn new(
        conn: ConnectionManager,
        prefix: impl Into<String>,
        policies: SharedPolicies,
    ) -> Self {
        Self {
            conn,
            prefix: prefix.into(),
            policies,
            check: Script::new(CHECK),
            release: Script::new(RELEASE),
            clock: Arc::new(Timestamp::now),
            checks: OnceLock::new(),
        }
    }

    /// Replaces the clock (tests). Expiry instants follow it, so it must
    /// not run behind the Redis server's clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    async fn decide(
        &self,
        policy: &CompiledPolicy,
        plan: &Plan,
    ) -> Result<PolicyState, PolicyError> {
        if policy.blacklists.is_empty() && plan.periods.is_none() && plan.dedup.is_none() {
            return Ok(PolicyState::Ok);
        }
        let p = &self.prefix;
        let none = redis_keys::none(p);
        let mut keys = Vec::with_capacity(3 + 2 * policy.blacklists.len());
        let (dcap, wcap, dend, wend) = match &plan.periods {
            Some(per) => {
                keys.push(match policy.daily {
                    Some(_) => redis_keys::daily(p, &policy.name, &plan.destination, &per.day),
                    None => none.clone(),
                });
                keys.push(match policy.weekly {
                    Some(_) => redis_keys::weekly(p, &policy.name, &plan.destination, &per.week),
                    None => none.clone(),
                });
                (
                    policy.daily.map_or(-1, i64::from),
                    policy.weekly.map_or(-1, i64::from),
                    per.day_end_ms,
                    per.week_end_ms,
                )
            }
            None => {
                keys.push(none.clone());
                keys.push(none.clone());
                (-1, -1, 0, 0)
            }
        };
        let window_ms = match &plan.dedup {
            Some((h, w)) => {
                keys.push(redis_keys::dedup(p, &policy.name, h));
                w.as_millis().max(1) as u64
            }
            None => {
                keys.push(none);
                0
            }
        };
        for bl in &policy.blacklists {
            keys.push(redis_keys::bl_numbers(p, bl));
            keys.push(redis_keys::bl_prefixes(p, bl));
        }
        let (answer, answered) = oneshot::channel();
        let job = CheckJob {
            keys,
            dcap,
            dend,
            wcap,
            wend,
            window_ms,
            destination: plan.destination.clone(),
            answer,
        };
        let checks = self.checks.get_or_init(|| {
            let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
            tokio::spawn(run_checks(rx, self.conn.clone(), self.check.clone()));
            tx
        });
        checks
            .send(job)
            .await
            .map_err(|_| backend("the contact-policy batcher stopped"))?;
        let code = answered
            .await
            .map_err(|_| backend("the contact-policy batcher dropped a check"))??;
        Ok(match code {
            0 => PolicyState::Ok,
            1 => PolicyState::DailyCp,
            2 => PolicyState::WeeklyCp,
            3 => PolicyState::Blacklist,
            4 => PolicyState::Duplicate,
            other => return Err(backend(format!("check script answered {other}"))),
        })
    }
}

#[async_trait]
impl PolicyEngine for RedisEngine {
    async fn check(&self, req: &PolicyRequest<'_>) -> Result<Decision, PolicyError> {
        let policies = self.policies.load();
        let policy = policies
            .get(req.strategy)
            .ok_or_else(|| PolicyError::UnknownStrategy(req.strategy.to_owned()))?;
        let plan = match policy.plan(req, (self.clock)())? {
            Ok(p) => p,
            Err(state) => return Ok(Decision::uncounted(Verdict::refuse(state))),
        };
        Ok(match self.decide(policy, &plan).await? {
            PolicyState::Ok => Decision {
                verdict: Verdict::OK,
                reservation: plan.reservation(policy),
            },
            state => Decision::uncounted(Verdict::refuse(state)),
        })
    }

    async fn release(&self, r: &Reservation) -> Result<(), PolicyError> {
        let p = &self.prefix;
        let none = redis_keys::none(p);
        let mut inv = self.release.prepare_invoke();
        inv.key(r.day.as_ref().map_or_else(
            || none.clone(),
            |d| redis_keys::daily(p, &r.strategy, &r.destination, d),
        ))
        .key(r.week.as_ref().map_or_else(
            || none.clone(),
            |w| redis_keys::weekly(p, &r.strategy, &r.destination, w),
        ))
        .key(
            r.dedup
                .as_ref()
                .map_or_else(|| none.clone(), |h| redis_keys::dedup(p, &r.strategy, h)),
        )
        .arg(if r.day.is_some() { "1" } else { "0" })
        .arg(if r.week.is_some() { "1" } else { "0" })
        .arg(if r.dedup.is_some() { "1" } else { "0" });
        let mut conn = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(backend)?;
        Ok(())
    }
}

/// Blacklists in Redis: a load fills uniquely named staging sets (which
/// expire if the load is abandoned) and the commit renames them over the
/// live sets in one script, so a check sees the old list or the new one.
#[derive(Clone)]
pub struct RedisBlacklists {
    conn: ConnectionManager,
    prefix: String,
    staging_ttl_ms: u64,
}

static LOAD_SEQ: AtomicU64 = AtomicU64::new(0);

impl RedisBlacklists {
    /// Blacklists under `prefix` on `conn`.
    pub fn new(conn: ConnectionManager, prefix: impl Into<String>) -> Self {
        Self {
            conn,
            prefix: prefix.into(),
            staging_ttl_ms: 15 * 60 * 1000,
        }
    }

    /// Whether `destination` (normalised) is on list `name`, by number or
    /// prefix (admin and test use; the engine checks inside its script).
    pub async fn contains(&self, name: &str, destination: &str) -> Result<bool, PolicyError> {
        let mut conn = self.conn.clone();
        let n: bool = redis::cmd("SISMEMBER")
            .arg(redis_keys::bl_numbers(&self.prefix, name))
            .arg(destination)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        if n {
            return Ok(true);
        }
        let cands: Vec<&str> = (1..=destination.len()).map(|l| &destination[..l]).collect();
        let hits: Vec<bool> = redis::cmd("SMISMEMBER")
            .arg(redis_keys::bl_prefixes(&self.prefix, name))
            .arg(cands)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(hits.into_iter().any(|h| h))
    }

    /// Numbers and prefixes on list `name`.
    pub async fn len(&self, name: &str) -> Result<(u64, u64), PolicyError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .cmd("SCARD")
            .arg(redis_keys::bl_numbers(&self.prefix, name))
            .cmd("SCARD")
            .arg(redis_keys::bl_prefixes(&self.prefix, name))
            .query_async(&mut conn)
            .await
            .map_err(backend)
    }
}

struct RedisLoad {
    conn: ConnectionManager,
    staged: [String; 2],
    live: [String; 2],
    ttl_ms: u64,
}

#[async_trait]
impl BlacklistLoad for RedisLoad {
    async fn add(&mut self, numbers: &[String], prefixes: &[String]) -> Result<(), PolicyError> {
        let mut pipe = redis::pipe();
        for (key, items) in self.staged.iter().zip([numbers, prefixes]) {
            if !items.is_empty() {
                pipe.cmd("SADD").arg(key).arg(items).ignore();
                pipe.cmd("PEXPIRE").arg(key).arg(self.ttl_ms).ignore();
            }
        }
        let () = pipe.query_async(&mut self.conn).await.map_err(backend)?;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), PolicyError> {
        let _: i64 = Script::new(SWAP)
            .key(&self.staged[0])
            .key(&self.staged[1])
            .key(&self.live[0])
            .key(&self.live[1])
            .invoke_async(&mut self.conn)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl BlacklistSink for RedisBlacklists {
    async fn begin(&self, name: &str) -> Result<Box<dyn BlacklistLoad>, PolicyError> {
        let nonce = format!(
            "{}-{}-{}",
            std::process::id(),
            Timestamp::now().as_millisecond(),
            LOAD_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let n = redis_keys::bl_numbers(&self.prefix, name);
        let p = redis_keys::bl_prefixes(&self.prefix, name);
        Ok(Box::new(RedisLoad {
            conn: self.conn.clone(),
            staged: [format!("{n}:load:{nonce}"), format!("{p}:load:{nonce}")],
            live: [n, p],
            ttl_ms: self.staging_ttl_ms,
        }))
    }
}
