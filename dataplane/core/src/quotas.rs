//! Per-app message quotas (per calendar day and month) and a prepaid
//! balance in segments, and the ledger that counts them.
//!
//! Counting is done with the decision, in one atomic step of the ledger
//! (one Redis script call, or one embedded write transaction): when
//! [`QuotaLedger::charge`] answers [`QuotaDecision::Charged`], the
//! message has already been counted against its day and month and its
//! segments taken from the balance. If a later step does not store the
//! message (a contact-policy refusal, a repeated transaction id, a store
//! failure), the caller hands the [`QuotaReceipt`] to
//! [`QuotaLedger::refund`], which gives the count and the segments back.
//! Two concurrent messages can therefore never both take the last unit.
//!
//! Units: the day and month quotas count **messages** (a message of three
//! segments counts 1), as Kannel and Jasmin users think of quotas; the
//! balance is in **segments** (what an SMSC bills).

use crate::users::StoreError;
use serde::{Deserialize, Serialize};

/// An app's quota settings, as stored on its user record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLimits {
    /// Messages per calendar day (UTC); `None`: no daily cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u64>,
    /// Messages per calendar month (UTC); `None`: no monthly cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<u64>,
    /// The app sends only while its prepaid balance covers the message's
    /// segments, which are taken from it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prepaid: bool,
}

impl QuotaLimits {
    /// True when the app has no quota at all: nothing is counted for it
    /// (the send path makes no ledger call).
    pub fn is_unlimited(&self) -> bool {
        self.daily.is_none() && self.monthly.is_none() && !self.prepaid
    }
}

/// The calendar periods containing an instant, named and with their ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaPeriods {
    /// The day, `YYYYMMDD`.
    pub day: String,
    /// When the day ends (next midnight), Unix ms.
    pub day_end_ms: u64,
    /// The month, `YYYYMM`.
    pub month: String,
    /// When the month ends (the first of the next month, 00:00), Unix ms.
    pub month_end_ms: u64,
}

/// Which quota period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum QuotaPeriod {
    /// The calendar day.
    Daily,
    /// The calendar month.
    Monthly,
}

impl QuotaPeriod {
    /// `daily` or `monthly`.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaPeriod::Daily => "daily",
            QuotaPeriod::Monthly => "monthly",
        }
    }
}

/// One message to count: its app, the periods it falls in, the app's
/// limits and its segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaCharge<'a> {
    /// The sending app.
    pub app_id: &'a str,
    /// The periods of now.
    pub periods: &'a QuotaPeriods,
    /// The app's limits (not [`QuotaLimits::is_unlimited`]).
    pub limits: QuotaLimits,
    /// Segments of the message, taken from the balance when prepaid.
    pub segments: u64,
}

/// What a charge counted, so [`QuotaLedger::refund`] can give it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaReceipt {
    /// The app.
    pub app_id: String,
    /// Day counted (`YYYYMMDD`).
    pub day: String,
    /// Month counted (`YYYYMM`).
    pub month: String,
    /// Segments taken from the balance (0 when not prepaid).
    pub segments: u64,
}

/// The ledger's answer to a charge.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuotaDecision {
    /// Counted; give it back with the receipt if the message is not kept.
    Charged(QuotaReceipt),
    /// The period's quota is used up; nothing was counted.
    Exceeded {
        /// Which period.
        period: QuotaPeriod,
        /// Its quota, in messages.
        limit: u64,
    },
    /// The balance does not cover the message; nothing was counted.
    InsufficientBalance {
        /// Segments left.
        balance: u64,
        /// Segments the message needs.
        needed: u64,
    },
}

/// An app's counts in the current periods and its balance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaUsage {
    /// Messages counted today.
    pub day_used: u64,
    /// Messages counted this month.
    pub month_used: u64,
    /// Prepaid segments left.
    pub balance: u64,
}

/// The answer to a top-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopUp {
    /// The balance after it, in segments (for a repeated top-up id: after
    /// its first application).
    pub balance: u64,
    /// False when the top-up id had been applied before (nothing added).
    pub applied: bool,
}

/// Largest single top-up, in segments.
pub const MAX_TOP_UP: u64 = 1_000_000_000_000;

/// Durable counters of quotas and balances, shared by every pod using the
/// same backend.
#[async_trait::async_trait]
pub trait QuotaLedger: Send + Sync + 'static {
    /// Checks and counts one message atomically: within the day's and the
    /// month's quota and (prepaid) the balance → counted and
    /// [`QuotaDecision::Charged`]; else nothing is counted.
    async fn charge(&self, charge: &QuotaCharge<'_>) -> Result<QuotaDecision, StoreError>;
    /// Gives back what a charge counted (its message was not stored). A
    /// period that has ended meanwhile is left alone.
    async fn refund(&self, receipt: &QuotaReceipt) -> Result<(), StoreError>;
    /// The app's counts in `periods` and its balance.
    async fn usage(&self, app_id: &str, periods: &QuotaPeriods) -> Result<QuotaUsage, StoreError>;
    /// Adds `add` segments (1..=[`MAX_TOP_UP`]) to the app's balance. With
    /// a `top_up_id`, a repeat of the same id adds nothing and answers the
    /// balance after its first application (retries are safe).
    async fn top_up(
        &self,
        app_id: &str,
        add: u64,
        top_up_id: Option<&str>,
    ) -> Result<TopUp, StoreError>;
}

/// An in-process ledger (tests, and a gateway wired without a store
/// ledger): counts live only as long as the process.
#[derive(Default)]
pub struct MemoryLedger {
    inner: std::sync::Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    /// app → (day, count), (month, count), balance.
    apps: std::collections::HashMap<String, MemoryApp>,
    top_ups: std::collections::HashMap<(String, String), u64>,
}

#[derive(Default, Clone)]
struct MemoryApp {
    day: (String, u64),
    month: (String, u64),
    balance: u64,
}

/// The pure decision every ledger makes, over the app's current counts
/// (already reset when their period changed): the outcome and, when
/// charged, the new day count, month count and balance.
pub fn decide(
    charge: &QuotaCharge<'_>,
    day_used: u64,
    month_used: u64,
    balance: u64,
) -> Result<(u64, u64, u64), QuotaDecision> {
    let l = &charge.limits;
    if let Some(limit) = l.daily
        && day_used >= limit
    {
        return Err(QuotaDecision::Exceeded {
            period: QuotaPeriod::Daily,
            limit,
        });
    }
    if let Some(limit) = l.monthly
        && month_used >= limit
    {
        return Err(QuotaDecision::Exceeded {
            period: QuotaPeriod::Monthly,
            limit,
        });
    }
    let balance = if l.prepaid {
        balance
            .checked_sub(charge.segments)
            .ok_or(QuotaDecision::InsufficientBalance {
                balance,
                needed: charge.segments,
            })?
    } else {
        balance
    };
    Ok((day_used + 1, month_used + 1, balance))
}

/// The receipt of a charge that passed.
pub fn receipt_of(charge: &QuotaCharge<'_>) -> QuotaReceipt {
    QuotaReceipt {
        app_id: charge.app_id.to_owned(),
        day: charge.periods.day.clone(),
        month: charge.periods.month.clone(),
        segments: if charge.limits.prepaid {
            charge.segments
        } else {
            0
        },
    }
}

/// A stored period count, read as of `period`: 0 when it is of another
/// (earlier) period.
pub fn count_in(stored: &(String, u64), period: &str) -> u64 {
    if stored.0 == period { stored.1 } else { 0 }
}

impl MemoryLedger {
    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl QuotaLedger for MemoryLedger {
    async fn charge(&self, charge: &QuotaCharge<'_>) -> Result<QuotaDecision, StoreError> {
        let mut s = self.state();
        let app = s.apps.entry(charge.app_id.to_owned()).or_default();
        let p = charge.periods;
        match decide(
            charge,
            count_in(&app.day, &p.day),
            count_in(&app.month, &p.month),
            app.balance,
        ) {
            Ok((d, m, b)) => {
                app.day = (p.day.clone(), d);
                app.month = (p.month.clone(), m);
                app.balance = b;
                Ok(QuotaDecision::Charged(receipt_of(charge)))
            }
            Err(refused) => Ok(refused),
        }
    }

    async fn refund(&self, r: &QuotaReceipt) -> Result<(), StoreError> {
        let mut s = self.state();
        let app = s.apps.entry(r.app_id.clone()).or_default();
        if app.day.0 == r.day {
            app.day.1 = app.day.1.saturating_sub(1);
        }
        if app.month.0 == r.month {
            app.month.1 = app.month.1.saturating_sub(1);
        }
        app.balance = app.balance.saturating_add(r.segments);
        Ok(())
    }

    async fn usage(&self, app_id: &str, p: &QuotaPeriods) -> Result<QuotaUsage, StoreError> {
        let s = self.state();
        let app = s.apps.get(app_id).cloned().unwrap_or_default();
        Ok(QuotaUsage {
            day_used: count_in(&app.day, &p.day),
            month_used: count_in(&app.month, &p.month),
            balance: app.balance,
        })
    }

    async fn top_up(
        &self,
        app_id: &str,
        add: u64,
        top_up_id: Option<&str>,
    ) -> Result<TopUp, StoreError> {
        let mut s = self.state();
        if let Some(id) = top_up_id
            && let Some(balance) = s.top_ups.get(&(app_id.to_owned(), id.to_owned()))
        {
            return Ok(TopUp {
                balance: *balance,
                applied: false,
            });
        }
        let app = s.apps.entry(app_id.to_owned()).or_default();
        app.balance = app.balance.saturating_add(add);
        let balance = app.balance;
        if let Some(id) = top_up_id {
            s.top_ups
                .insert((app_id.to_owned(), id.to_owned()), balance);
        }
        Ok(TopUp {
            balance,
            applied: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn periods(day: &str, month: &str) -> QuotaPeriods {
        QuotaPeriods {
            day: day.into(),
            day_end_ms: 0,
            month: month.into(),
            month_end_ms: 0,
        }
    }

    fn charge<'a>(p: &'a QuotaPeriods, limits: QuotaLimits, segments: u64) -> QuotaCharge<'a> {
        QuotaCharge {
            app_id: "app",
            periods: p,
            limits,
            segments,
        }
    }

    #[test]
    fn the_daily_quota_should_be_checked_before_the_monthly_and_the_balance() {
        let p = periods("20261207", "202612");
        let l = QuotaLimits {
            daily: Some(2),
            monthly: Some(2),
            prepaid: true,
        };
        assert_eq!(
            decide(&charge(&p, l, 1), 2, 2, 0),
            Err(QuotaDecision::Exceeded {
                period: QuotaPeriod::Daily,
                limit: 2
            })
        );
        assert_eq!(
            decide(&charge(&p, l, 1), 1, 2, 0),
            Err(QuotaDecision::Exceeded {
                period: QuotaPeriod::Monthly,
                limit: 2
            })
        );
        assert_eq!(
            decide(&charge(&p, l, 3), 1, 1, 2),
            Err(QuotaDecision::InsufficientBalance {
                balance: 2,
                needed: 3
            })
        );
        assert_eq!(decide(&charge(&p, l, 2), 1, 1, 2), Ok((2, 2, 0)));
    }

    #[test]
    fn a_count_of_an_earlier_period_should_read_as_zero() {
        assert_eq!(count_in(&("20261206".into(), 5), "20261207"), 0);
        assert_eq!(count_in(&("20261207".into(), 5), "20261207"), 5);
    }

    #[tokio::test]
    async fn a_refund_should_give_back_the_count_and_the_segments() {
        let ledger = MemoryLedger::default();
        let p = periods("20261207", "202612");
        let l = QuotaLimits {
            daily: Some(1),
            monthly: None,
            prepaid: true,
        };
        ledger.top_up("app", 3, Some("t1")).await.unwrap();
        let again = ledger.top_up("app", 3, Some("t1")).await.unwrap();
        assert_eq!(
            again,
            TopUp {
                balance: 3,
                applied: false
            }
        );
        let QuotaDecision::Charged(r) = ledger.charge(&charge(&p, l, 2)).await.unwrap() else {
            panic!("not charged")
        };
        assert!(matches!(
            ledger.charge(&charge(&p, l, 1)).await.unwrap(),
            QuotaDecision::Exceeded { .. }
        ));
        ledger.refund(&r).await.unwrap();
        let u = ledger.usage("app", &p).await.unwrap();
        assert_eq!((u.day_used, u.month_used, u.balance), (0, 0, 3));
        // The next day starts from zero.
        let next = periods("20261208", "202612");
        ledger.charge(&charge(&next, l, 1)).await.unwrap();
        let u = ledger.usage("app", &next).await.unwrap();
        assert_eq!((u.day_used, u.month_used, u.balance), (1, 1, 2));
    }
}
