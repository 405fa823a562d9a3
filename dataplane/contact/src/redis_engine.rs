//! The native engine on Redis: one Lua script decides and counts a
//! message (one round trip), another takes a count back; blacklists are
//! sets swapped in with `RENAME`.
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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// KEYS: daily, weekly, dedup, then (numbers, prefixes) per blacklist.
/// ARGV: daily cap (-1: none), daily expiry ms, weekly cap, weekly expiry
/// ms, dedup window ms (0: none), destination, blacklist count.
/// Returns 0 ok, 1 daily, 2 weekly, 3 blacklist, 4 duplicate.
pub(crate) const CHECK: &str = r"
local dest = ARGV[6]
local nbl = tonumber(ARGV[7])
for i = 0, nbl - 1 do
  if redis.call('SISMEMBER', KEYS[4 + 2 * i], dest) == 1 then return 3 end
  local pre = KEYS[5 + 2 * i]
  if redis.call('EXISTS', pre) == 1 then
    local cands = {}
    for l = 1, #dest do cands[l] = string.sub(dest, 1, l) end
    local hits = redis.call('SMISMEMBER', pre, unpack(cands))
    for _, h in ipairs(hits) do if h == 1 then return 3 end end
  end
end
local window = tonumber(ARGV[5])
if window > 0 and redis.call('EXISTS', KEYS[3]) == 1 then return 4 end
local dcap = tonumber(ARGV[1])
if dcap >= 0 and tonumber(redis.call('GET', KEYS[1]) or '0') >= dcap then return 1 end
local wcap = tonumber(ARGV[3])
if wcap >= 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= wcap then return 2 end
if dcap >= 0 then
  redis.call('INCR', KEYS[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
end
if wcap >= 0 then
  redis.call('INCR', KEYS[2])
  redis.call('PEXPIREAT', KEYS[2], ARGV[4])
end
if window > 0 then redis.call('SET', KEYS[3], '1', 'PX', window) end
return 0
";

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
        let mut inv = self.check.prepare_invoke();
        let (dcap, wcap, dend, wend) = match &plan.periods {
            Some(per) => {
                inv.key(match policy.daily {
                    Some(_) => redis_keys::daily(p, &policy.name, &plan.destination, &per.day),
                    None => none.clone(),
                });
                inv.key(match policy.weekly {
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
                inv.key(&none).key(&none);
                (-1, -1, 0, 0)
            }
        };
        let window_ms = match &plan.dedup {
            Some((h, w)) => {
                inv.key(redis_keys::dedup(p, &policy.name, h));
                w.as_millis().max(1) as u64
            }
            None => {
                inv.key(&none);
                0
            }
        };
        for bl in &policy.blacklists {
            inv.key(redis_keys::bl_numbers(p, bl))
                .key(redis_keys::bl_prefixes(p, bl));
        }
        inv.arg(dcap)
            .arg(dend)
            .arg(wcap)
            .arg(wend)
            .arg(window_ms)
            .arg(&plan.destination)
            .arg(policy.blacklists.len());
        let mut conn = self.conn.clone();
        let code: i64 = inv.invoke_async(&mut conn).await.map_err(backend)?;
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
