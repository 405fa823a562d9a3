//! Apps' message quotas and prepaid balances on the send path, the app's
//! view of them (`GET /api/v1/account`) and admins' top-ups.
//!
//! A message is charged after the contact policy passed and before it is
//! stored: 1 against the calendar day's and month's quotas (UTC), its
//! segments against the balance of a prepaid app, in one atomic ledger
//! call. If it is then not stored (a repeated transaction id, a store
//! failure) the charge is given back. Apps without quotas make no ledger
//! call at all.

use crate::MessagingError;
use crate::service::{Messaging, Sender};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::Serialize;
use smsgw_core::quotas::{
    MAX_TOP_UP, QuotaCharge, QuotaDecision, QuotaLimits, QuotaPeriod, QuotaPeriods, QuotaReceipt,
};

/// The UTC calendar day and month containing `now_ms` (Unix ms), with
/// their ends.
pub fn periods_at(now_ms: u64) -> QuotaPeriods {
    let now = Timestamp::from_millisecond(now_ms as i64).unwrap_or(Timestamp::UNIX_EPOCH);
    let date = now.to_zoned(TimeZone::UTC).date();
    let start_ms = |d: jiff::civil::Date| {
        d.to_zoned(TimeZone::UTC).map_or(now_ms + 86_400_000, |z| {
            z.timestamp().as_millisecond() as u64
        })
    };
    let tomorrow = date.tomorrow().unwrap_or(date);
    let next_month = date
        .first_of_month()
        .checked_add(1.month())
        .unwrap_or(tomorrow);
    QuotaPeriods {
        day: format!("{:04}{:02}{:02}", date.year(), date.month(), date.day()),
        day_end_ms: start_ms(tomorrow),
        month: format!("{:04}{:02}", date.year(), date.month()),
        month_end_ms: start_ms(next_month),
    }
}

/// RFC 3339 (UTC) of a Unix ms instant.
fn rfc3339(ms: u64) -> String {
    Timestamp::from_millisecond(ms as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// One quota period as the app sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeriodQuota {
    /// Messages allowed in the period (a message counts once, whatever its
    /// segments).
    pub limit: u64,
    /// Messages counted in the current period.
    pub used: u64,
    /// Messages left in it.
    pub remaining: u64,
    /// The current period: `YYYY-MM-DD` (day) or `YYYY-MM` (month), UTC.
    #[cfg_attr(feature = "openapi", schema(example = "2026-12-07"))]
    pub period: String,
    /// When it resets, RFC 3339 UTC.
    #[cfg_attr(feature = "openapi", schema(example = "2026-12-08T00:00:00Z"))]
    pub resets_at: String,
}

/// An app's quotas, what it used of them, and its prepaid balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Account {
    /// The app.
    pub app_id: String,
    /// Its name.
    pub app_name: String,
    /// Its rate cap, messages (segments) per second; null: none.
    pub rate: Option<u32>,
    /// The daily quota (UTC calendar day); null: none.
    pub daily: Option<PeriodQuota>,
    /// The monthly quota (UTC calendar month); null: none.
    pub monthly: Option<PeriodQuota>,
    /// Whether sends are paid from the balance.
    pub prepaid: bool,
    /// Prepaid segments left; null when the app is not prepaid.
    pub balance: Option<u64>,
}

/// The answer to a top-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BalanceView {
    /// The app.
    pub app_id: String,
    /// Segments now on the balance.
    pub balance: u64,
    /// False when this `top_up_id` was applied before (nothing added now).
    pub applied: bool,
}

impl Messaging {
    /// Charges a message to its app's quotas and balance; `None` when the
    /// app has none (no ledger call). Refusals: 403 `quota_exceeded`
    /// (which period, when it resets), 402 `insufficient_balance`.
    pub(crate) async fn charge_quota(
        &self,
        app_id: &str,
        limits: QuotaLimits,
        segments: usize,
    ) -> Result<Option<QuotaReceipt>, MessagingError> {
        if limits.is_unlimited() {
            return Ok(None);
        }
        let periods = periods_at(smsgw_core::messages::unix_now_ms());
        let decision = self
            .quotas
            .charge(&QuotaCharge {
                app_id,
                periods: &periods,
                limits,
                segments: segments as u64,
            })
            .await
            .map_err(|e| MessagingError::Unavailable(format!("quota ledger unavailable: {e}")))?;
        match decision {
            QuotaDecision::Charged(r) => Ok(Some(r)),
            QuotaDecision::Exceeded { period, limit } => {
                let resets = match period {
                    QuotaPeriod::Daily => periods.day_end_ms,
                    _ => periods.month_end_ms,
                };
                tracing::info!(%app_id, period = period.as_str(), limit, "refused: quota exceeded");
                Err(MessagingError::forbidden(
                    "quota_exceeded",
                    format!(
                        "{} quota of {limit} messages reached; it resets at {}",
                        period.as_str(),
                        rfc3339(resets)
                    ),
                ))
            }
            QuotaDecision::InsufficientBalance { balance, needed } => {
                tracing::info!(%app_id, balance, needed, "refused: insufficient balance");
                Err(MessagingError::PaymentRequired {
                    code: "insufficient_balance",
                    message: format!(
                        "prepaid balance of {balance} segments does not cover this message's {needed}"
                    ),
                })
            }
            _ => Err(MessagingError::Internal("unknown quota decision".into())),
        }
    }

    /// Gives back a charge of a message that was not stored.
    pub(crate) async fn refund_quota(&self, receipt: Option<QuotaReceipt>) {
        if let Some(r) = receipt
            && let Err(e) = self.quotas.refund(&r).await
        {
            tracing::warn!(error = %e, app_id = %r.app_id, "quota charge not given back");
        }
    }

    /// The sender's app: its quotas, their use in the current periods and
    /// its balance (read from the ledger, not cached).
    pub async fn account(&self, sender: Sender<'_>) -> Result<Account, MessagingError> {
        let user = self
            .users
            .get(sender.user_id)
            .await
            .map_err(MessagingError::Users)?
            .ok_or(MessagingError::UnknownUser)?;
        self.account_view(user).await
    }

    /// An app's account as [`Self::account`] shows it to the app, for
    /// admins; `NotFound` for an unknown app.
    pub async fn account_of_app(&self, app_id: &str) -> Result<Account, MessagingError> {
        let user = self
            .users
            .by_app_id(app_id)
            .await
            .map_err(MessagingError::Users)?
            .ok_or_else(|| MessagingError::NotFound(format!("no app {app_id:?}")))?;
        self.account_view(user).await
    }

    async fn account_view(
        &self,
        user: smsgw_core::users::UserRecord,
    ) -> Result<Account, MessagingError> {
        let periods = periods_at(smsgw_core::messages::unix_now_ms());
        let l = user.quotas;
        let usage = if l.is_unlimited() {
            Default::default()
        } else {
            self.quotas
                .usage(&user.app_id, &periods)
                .await
                .map_err(|e| {
                    MessagingError::Unavailable(format!("quota ledger unavailable: {e}"))
                })?
        };
        let view = |limit: Option<u64>, used: u64, period: String, ends: u64| {
            limit.map(|limit| PeriodQuota {
                limit,
                used,
                remaining: limit.saturating_sub(used),
                period,
                resets_at: rfc3339(ends),
            })
        };
        let d = &periods.day;
        let m = &periods.month;
        Ok(Account {
            daily: view(
                l.daily,
                usage.day_used,
                format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..]),
                periods.day_end_ms,
            ),
            monthly: view(
                l.monthly,
                usage.month_used,
                format!("{}-{}", &m[..4], &m[4..]),
                periods.month_end_ms,
            ),
            prepaid: l.prepaid,
            balance: l.prepaid.then_some(usage.balance),
            rate: user.rate,
            app_id: user.app_id,
            app_name: user.app_name,
        })
    }

    /// Adds `add` segments (1 to 10¹²) to an app's prepaid balance; a
    /// repeated `top_up_id` adds nothing and answers the balance after its
    /// first application.
    pub async fn top_up(
        &self,
        app_id: &str,
        add: u64,
        top_up_id: Option<&str>,
    ) -> Result<BalanceView, MessagingError> {
        if !(1..=MAX_TOP_UP).contains(&add) {
            return Err(MessagingError::InvalidField {
                field: "add",
                reason: format!("must be between 1 and {MAX_TOP_UP} segments"),
            });
        }
        let top_up_id = top_up_id.map(str::trim).filter(|s| !s.is_empty());
        if top_up_id.is_some_and(|id| id.len() > 128) {
            return Err(MessagingError::InvalidField {
                field: "top_up_id",
                reason: "must be at most 128 bytes".into(),
            });
        }
        self.users
            .by_app_id(app_id)
            .await
            .map_err(MessagingError::Users)?
            .ok_or_else(|| MessagingError::NotFound(format!("no app {app_id:?}")))?;
        let t = self
            .quotas
            .top_up(app_id, add, top_up_id)
            .await
            .map_err(|e| MessagingError::Unavailable(format!("quota ledger unavailable: {e}")))?;
        tracing::info!(%app_id, add, applied = t.applied, balance = t.balance, "prepaid balance topped up");
        Ok(BalanceView {
            app_id: app_id.to_owned(),
            balance: t.balance,
            applied: t.applied,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_should_end_at_the_next_utc_midnight_and_first_of_month() {
        // 2026-12-31T23:59:59.999Z
        let p = periods_at(1_798_761_599_999);
        assert_eq!(p.day, "20261231");
        assert_eq!(p.month, "202612");
        assert_eq!(rfc3339(p.day_end_ms), "2027-01-01T00:00:00Z");
        assert_eq!(rfc3339(p.month_end_ms), "2027-01-01T00:00:00Z");
        // One ms later is the next day and month.
        let p = periods_at(1_798_761_600_000);
        assert_eq!((p.day.as_str(), p.month.as_str()), ("20270101", "202701"));
        assert_eq!(rfc3339(p.month_end_ms), "2027-02-01T00:00:00Z");
        // A leap February.
        let p = periods_at(1_835_395_200_000); // 2028-02-29T00:00:00Z
        assert_eq!(p.day, "20280229");
        assert_eq!(rfc3339(p.day_end_ms), "2028-03-01T00:00:00Z");
    }
}
