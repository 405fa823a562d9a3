//! The quota ledger ([`QuotaLedger`]) of each user store: message counts
//! per calendar day and month and the prepaid balance, next to the users.
//!
//! - Embedded (redb): one write transaction per charge, refund or top-up,
//!   committed durably before the answer (a balance is money: a restart
//!   must neither lose nor reset it). An app has one row per period kind
//!   (`app NUL d` / `app NUL m` → the period and its count), replaced when
//!   the period changes, so nothing piles up.
//! - Redis: one Lua script call per charge over keys of one hash tag per
//!   app (`{prefix:quota:<app>}`), so apps spread over a Redis Cluster
//!   and each app's check-and-count is atomic: `…:d:<YYYYMMDD>` and
//!   `…:m:<YYYYMM>` expire a day after their period ends; `…:bal` (the
//!   balance) and `…:topups` (top-up id → balance after it) never expire.

use crate::embedded::{EmbeddedUserStore, backend as embedded_backend};
use crate::redis_store::RedisUserStore;
use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use smsgw_core::quotas::{
    QuotaCharge, QuotaDecision, QuotaLedger, QuotaPeriod, QuotaPeriods, QuotaReceipt, QuotaUsage,
    TopUp, count_in, decide, receipt_of,
};
use smsgw_core::users::StoreError;

/// `app NUL d` / `app NUL m` → (period, messages counted in it).
pub(crate) const QUOTA_COUNTS: TableDefinition<&str, (&str, u64)> =
    TableDefinition::new("quota_counts");
/// App id → prepaid segments left.
pub(crate) const BALANCES: TableDefinition<&str, u64> = TableDefinition::new("quota_balances");
/// `app NUL top-up id` → the balance after that top-up.
pub(crate) const TOP_UPS: TableDefinition<&str, u64> = TableDefinition::new("quota_top_ups");

fn count_key(app_id: &str, kind: char) -> String {
    format!("{app_id}\0{kind}")
}

/// A stored period count: the period and the messages counted in it.
type Count = (String, u64);

/// The app's stored (day, month) counts and balance, in an open write or
/// read transaction's tables.
fn read_counts(
    counts: &impl ReadableTable<&'static str, (&'static str, u64)>,
    balances: &impl ReadableTable<&'static str, u64>,
    app_id: &str,
) -> Result<(Count, Count, u64), StoreError> {
    let get = |kind| -> Result<Count, StoreError> {
        Ok(counts
            .get(count_key(app_id, kind).as_str())
            .map_err(embedded_backend)?
            .map(|v| {
                let (p, n) = v.value();
                (p.to_owned(), n)
            })
            .unwrap_or_default())
    };
    let balance = balances
        .get(app_id)
        .map_err(embedded_backend)?
        .map_or(0, |v| v.value());
    Ok((get('d')?, get('m')?, balance))
}

#[async_trait]
impl QuotaLedger for EmbeddedUserStore {
    async fn charge(&self, charge: &QuotaCharge<'_>) -> Result<QuotaDecision, StoreError> {
        let app = charge.app_id.to_owned();
        let periods = charge.periods.clone();
        let (limits, segments) = (charge.limits, charge.segments);
        self.blocking(move |db| {
            let charge = QuotaCharge {
                app_id: &app,
                periods: &periods,
                limits,
                segments,
            };
            let txn = db.begin_write().map_err(embedded_backend)?;
            {
                let mut counts = txn.open_table(QUOTA_COUNTS).map_err(embedded_backend)?;
                let mut balances = txn.open_table(BALANCES).map_err(embedded_backend)?;
                let (day, month, balance) = read_counts(&counts, &balances, &app)?;
                let (d, m, b) = match decide(
                    &charge,
                    count_in(&day, &periods.day),
                    count_in(&month, &periods.month),
                    balance,
                ) {
                    Ok(next) => next,
                    // Nothing written: the transaction is dropped.
                    Err(refused) => return Ok(refused),
                };
                counts
                    .insert(count_key(&app, 'd').as_str(), (periods.day.as_str(), d))
                    .map_err(embedded_backend)?;
                counts
                    .insert(count_key(&app, 'm').as_str(), (periods.month.as_str(), m))
                    .map_err(embedded_backend)?;
                if b != balance {
                    balances.insert(app.as_str(), b).map_err(embedded_backend)?;
                }
            }
            txn.commit().map_err(embedded_backend)?;
            Ok(QuotaDecision::Charged(receipt_of(&charge)))
        })
        .await
    }

    async fn refund(&self, r: &QuotaReceipt) -> Result<(), StoreError> {
        let r = r.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(embedded_backend)?;
            {
                let mut counts = txn.open_table(QUOTA_COUNTS).map_err(embedded_backend)?;
                let mut balances = txn.open_table(BALANCES).map_err(embedded_backend)?;
                let (day, month, balance) = read_counts(&counts, &balances, &r.app_id)?;
                for (kind, stored, period) in [('d', day, &r.day), ('m', month, &r.month)] {
                    if stored.0 == *period && stored.1 > 0 {
                        counts
                            .insert(
                                count_key(&r.app_id, kind).as_str(),
                                (period.as_str(), stored.1 - 1),
                            )
                            .map_err(embedded_backend)?;
                    }
                }
                if r.segments > 0 {
                    balances
                        .insert(r.app_id.as_str(), balance.saturating_add(r.segments))
                        .map_err(embedded_backend)?;
                }
            }
            txn.commit().map_err(embedded_backend)
        })
        .await
    }

    async fn usage(&self, app_id: &str, periods: &QuotaPeriods) -> Result<QuotaUsage, StoreError> {
        let app = app_id.to_owned();
        let periods = periods.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(embedded_backend)?;
            let counts = txn.open_table(QUOTA_COUNTS).map_err(embedded_backend)?;
            let balances = txn.open_table(BALANCES).map_err(embedded_backend)?;
            let (day, month, balance) = read_counts(&counts, &balances, &app)?;
            Ok(QuotaUsage {
                day_used: count_in(&day, &periods.day),
                month_used: count_in(&month, &periods.month),
                balance,
            })
        })
        .await
    }

    async fn top_up(
        &self,
        app_id: &str,
        add: u64,
        top_up_id: Option<&str>,
    ) -> Result<TopUp, StoreError> {
        let app = app_id.to_owned();
        let id = top_up_id.map(|id| format!("{app_id}\0{id}"));
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(embedded_backend)?;
            let balance = {
                let mut top_ups = txn.open_table(TOP_UPS).map_err(embedded_backend)?;
                if let Some(id) = &id
                    && let Some(after) = top_ups.get(id.as_str()).map_err(embedded_backend)?
                {
                    return Ok(TopUp {
                        balance: after.value(),
                        applied: false,
                    });
                }
                let mut balances = txn.open_table(BALANCES).map_err(embedded_backend)?;
                let before = balances
                    .get(app.as_str())
                    .map_err(embedded_backend)?
                    .map_or(0, |v| v.value());
                let after = before.saturating_add(add);
                balances
                    .insert(app.as_str(), after)
                    .map_err(embedded_backend)?;
                if let Some(id) = &id {
                    top_ups
                        .insert(id.as_str(), after)
                        .map_err(embedded_backend)?;
                }
                after
            };
            txn.commit().map_err(embedded_backend)?;
            Ok(TopUp {
                balance,
                applied: true,
            })
        })
        .await
    }
}

/// Checks and counts one message. KEYS: day count, month count, balance.
/// ARGV: daily limit (0: none), monthly limit (0: none), prepaid (1/0),
/// segments, day key expiry and month key expiry (Unix ms).
/// Answers `{outcome, a, b}`: 0 charged; 1 daily / 2 monthly quota reached
/// (`a` = the limit); 3 balance short (`a` = balance, `b` = needed).
const CHARGE: &str = r"
local dl = tonumber(ARGV[1])
local ml = tonumber(ARGV[2])
if dl > 0 and tonumber(redis.call('GET', KEYS[1]) or '0') >= dl then return {1, dl, 0} end
if ml > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= ml then return {2, ml, 0} end
if ARGV[3] == '1' then
  local need = tonumber(ARGV[4])
  local b = tonumber(redis.call('GET', KEYS[3]) or '0')
  if b < need then return {3, b, need} end
  if need > 0 then redis.call('DECRBY', KEYS[3], need) end
end
redis.call('INCR', KEYS[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('INCR', KEYS[2])
redis.call('PEXPIREAT', KEYS[2], ARGV[6])
return {0, 0, 0}
";

/// Gives a charge back. KEYS: day count, month count, balance. ARGV:
/// segments. A count whose key expired (its period ended) is left alone.
const REFUND: &str = r"
for i = 1, 2 do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n > 0 then redis.call('DECR', KEYS[i]) end
end
local s = tonumber(ARGV[1])
if s > 0 then redis.call('INCRBY', KEYS[3], s) end
return 0
";

/// Adds to the balance once per top-up id. KEYS: balance, top-ups hash.
/// ARGV: segments, top-up id (empty: none). Answers `{balance, applied}`.
const TOP_UP: &str = r"
if ARGV[2] ~= '' then
  local seen = redis.call('HGET', KEYS[2], ARGV[2])
  if seen then return {tonumber(seen), 0} end
end
local b = redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], ARGV[2], b) end
return {b, 1}
";

/// A day past a period's end: a late refund still finds its count.
const GRACE_MS: u64 = 86_400_000;

/// The scripts of the Redis ledger.
#[derive(Clone)]
pub(crate) struct RedisQuotaScripts {
    charge: redis::Script,
    refund: redis::Script,
    top_up: redis::Script,
}

impl Default for RedisQuotaScripts {
    fn default() -> Self {
        Self {
            charge: redis::Script::new(CHARGE),
            refund: redis::Script::new(REFUND),
            top_up: redis::Script::new(TOP_UP),
        }
    }
}

fn redis_backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl RedisUserStore {
    /// The hash tag of an app's quota keys.
    fn quota_tag(&self, app_id: &str) -> String {
        format!("{{{}:quota:{app_id}}}", self.prefix)
    }
    /// Day count, month count and balance keys.
    fn quota_keys(&self, app_id: &str, day: &str, month: &str) -> [String; 3] {
        let tag = self.quota_tag(app_id);
        [
            format!("{tag}:d:{day}"),
            format!("{tag}:m:{month}"),
            format!("{tag}:bal"),
        ]
    }
}

#[async_trait]
impl QuotaLedger for RedisUserStore {
    async fn charge(&self, c: &QuotaCharge<'_>) -> Result<QuotaDecision, StoreError> {
        let p = c.periods;
        let [d, m, b] = self.quota_keys(c.app_id, &p.day, &p.month);
        let (outcome, a, n): (i64, u64, u64) = self
            .quota_scripts
            .charge
            .key(d)
            .key(m)
            .key(b)
            .arg(c.limits.daily.unwrap_or(0))
            .arg(c.limits.monthly.unwrap_or(0))
            .arg(u8::from(c.limits.prepaid))
            .arg(c.segments)
            .arg(p.day_end_ms + GRACE_MS)
            .arg(p.month_end_ms + GRACE_MS)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_backend)?;
        Ok(match outcome {
            0 => QuotaDecision::Charged(receipt_of(c)),
            1 | 2 => QuotaDecision::Exceeded {
                period: if outcome == 1 {
                    QuotaPeriod::Daily
                } else {
                    QuotaPeriod::Monthly
                },
                limit: a,
            },
            _ => QuotaDecision::InsufficientBalance {
                balance: a,
                needed: n,
            },
        })
    }

    async fn refund(&self, r: &QuotaReceipt) -> Result<(), StoreError> {
        let [d, m, b] = self.quota_keys(&r.app_id, &r.day, &r.month);
        let _: i64 = self
            .quota_scripts
            .refund
            .key(d)
            .key(m)
            .key(b)
            .arg(r.segments)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_backend)?;
        Ok(())
    }

    async fn usage(&self, app_id: &str, p: &QuotaPeriods) -> Result<QuotaUsage, StoreError> {
        let keys = self.quota_keys(app_id, &p.day, &p.month);
        let v: Vec<Option<u64>> = redis::cmd("MGET")
            .arg(&keys[..])
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_backend)?;
        let at = |i: usize| v.get(i).copied().flatten().unwrap_or(0);
        Ok(QuotaUsage {
            day_used: at(0),
            month_used: at(1),
            balance: at(2),
        })
    }

    async fn top_up(
        &self,
        app_id: &str,
        add: u64,
        top_up_id: Option<&str>,
    ) -> Result<TopUp, StoreError> {
        let tag = self.quota_tag(app_id);
        let (balance, applied): (u64, u8) = self
            .quota_scripts
            .top_up
            .key(format!("{tag}:bal"))
            .key(format!("{tag}:topups"))
            .arg(add)
            .arg(top_up_id.unwrap_or(""))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_backend)?;
        Ok(TopUp {
            balance,
            applied: applied == 1,
        })
    }
}
