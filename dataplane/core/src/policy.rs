//! Contact policies: the check every message makes before it is routed
//! (frequency caps, deduplication, blacklists, quiet hours), and the sink a
//! blacklist import writes into.
//!
//! # Counting only accepted messages
//!
//! [`PolicyEngine::check`] decides *and* counts in one step (one Redis
//! round trip for the native engine): when the verdict passes, the message
//! has already been counted against the daily and weekly caps and its
//! deduplication key is set, and the returned [`Decision`] carries a
//! [`Reservation`] naming what was counted. If a later step refuses the
//! message (routing, persistence, submit), the caller hands the
//! reservation to [`PolicyEngine::release`], which takes the count back.
//! A message therefore counts against a limit only once it is accepted,
//! and two concurrent messages can never both take the last slot of a cap
//! (which a separate check-then-commit would allow).

use serde::{Deserialize, Serialize};
use std::fmt;

/// One message, as the contact policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyRequest<'a> {
    /// Strategy name (`cp1`, `blacklist`, …): a ContactPolicy resource name.
    pub strategy: &'a str,
    /// Application that sends.
    pub app_id: &'a str,
    /// Source address (sender id).
    pub source: &'a str,
    /// Destination address, as the client gave it; engines normalise it
    /// with [`normalize_e164`].
    pub destination: &'a str,
    /// Message text.
    pub text: &'a str,
    /// IANA time zone of the destination, when the caller knows it; quiet
    /// hours use it, else the policy's time zone.
    pub destination_time_zone: Option<&'a str>,
}

/// Outcome of a check, as the MCP contract spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PolicyState {
    /// Every check passed.
    Ok,
    /// The destination reached its daily cap.
    DailyCp,
    /// The destination reached its weekly cap.
    WeeklyCp,
    /// The destination is on a blacklist of the strategy.
    Blacklist,
    /// The same text went to the destination within the dedup window.
    Duplicate,
    /// The destination is inside the strategy's quiet hours.
    QuietHours,
}

impl PolicyState {
    /// The wire name (`ok`, `daily_cp`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyState::Ok => "ok",
            PolicyState::DailyCp => "daily_cp",
            PolicyState::WeeklyCp => "weekly_cp",
            PolicyState::Blacklist => "blacklist",
            PolicyState::Duplicate => "duplicate",
            PolicyState::QuietHours => "quiet_hours",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<PolicyState> {
        Some(match s {
            "ok" => PolicyState::Ok,
            "daily_cp" => PolicyState::DailyCp,
            "weekly_cp" => PolicyState::WeeklyCp,
            "blacklist" => PolicyState::Blacklist,
            "duplicate" => PolicyState::Duplicate,
            "quiet_hours" => PolicyState::QuietHours,
            _ => return None,
        })
    }
}

impl fmt::Display for PolicyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{state, pass}`, the answer of the MCP contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Why the message passes or not.
    pub state: PolicyState,
    /// Whether the message may be sent.
    pub pass: bool,
}

impl Verdict {
    /// The passing verdict.
    pub const OK: Verdict = Verdict {
        state: PolicyState::Ok,
        pass: true,
    };

    /// A refusal for `state`.
    pub fn refuse(state: PolicyState) -> Verdict {
        Verdict { state, pass: false }
    }
}

/// What a passing check counted, so [`PolicyEngine::release`] can take it
/// back. Engines fill in what applies to them; callers treat it as opaque.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Strategy the message was checked under.
    pub strategy: String,
    /// Normalised destination (E.164 digits, no `+`).
    pub destination: String,
    /// Calendar day counted (`YYYYMMDD` in the policy's time zone).
    pub day: Option<String>,
    /// Calendar week counted (`YYYYWww`, ISO week, in the policy's time
    /// zone).
    pub week: Option<String>,
    /// Dedup key set (hash of destination, text and maybe source).
    pub dedup: Option<String>,
}

/// A verdict plus, when it passed and counted something, the reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The answer.
    pub verdict: Verdict,
    /// What was counted; `None` when nothing was (refusal, external MCP,
    /// strategy without counters).
    pub reservation: Option<Reservation>,
}

impl Decision {
    /// A decision that counted nothing.
    pub fn uncounted(verdict: Verdict) -> Decision {
        Decision {
            verdict,
            reservation: None,
        }
    }
}

/// Why a policy check could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The request names a strategy no ContactPolicy defines.
    #[error("unknown contact-policy strategy {0:?}")]
    UnknownStrategy(String),
    /// The destination is not a phone number the policy can key on.
    #[error("destination {0:?} is not an E.164 number")]
    InvalidDestination(String),
    /// The backend (Redis, the external MCP) failed or answered nonsense,
    /// and the engine is configured to fail closed.
    #[error("contact-policy backend failed: {0}")]
    Backend(String),
    /// The external MCP did not answer in time (fail-closed mode).
    #[error("contact-policy backend timed out after {0:?}")]
    Timeout(std::time::Duration),
}

/// The contact-policy check. Implementations: the native engine on Redis,
/// the in-process engine (standalone), the external MCP client.
#[async_trait::async_trait]
pub trait PolicyEngine: Send + Sync + 'static {
    /// Decides one message and, when it passes, counts it (caps and dedup
    /// key) atomically with the decision. An empty strategy is not a call
    /// callers make: no strategy means no check.
    async fn check(&self, req: &PolicyRequest<'_>) -> Result<Decision, PolicyError>;

    /// Takes back what a passing check counted, for a message a later step
    /// refused. Idempotence is not guaranteed: release each reservation
    /// once.
    async fn release(&self, reservation: &Reservation) -> Result<(), PolicyError>;

    /// What the engine holds in this process's memory, for the
    /// `smsgw_memory_*` gauges; `None` when its state lives elsewhere.
    fn memory(&self) -> Option<crate::bounded::MemoryUse> {
        None
    }
}

/// Where a blacklist import writes: begins a load into staging, then
/// swaps the whole list in at once, so a check never sees half a list.
#[async_trait::async_trait]
pub trait BlacklistSink: Send + Sync + 'static {
    /// Starts loading a new version of list `name`.
    async fn begin(&self, name: &str) -> Result<Box<dyn BlacklistLoad>, PolicyError>;
}

/// A blacklist being loaded; dropped without [`commit`](Self::commit), it
/// leaves the current list in force (staging data may linger until the
/// next load overwrites it).
#[async_trait::async_trait]
pub trait BlacklistLoad: Send {
    /// Adds normalised numbers and prefixes (E.164 digits, no `+`).
    async fn add(&mut self, numbers: &[String], prefixes: &[String]) -> Result<(), PolicyError>;
    /// Swaps the loaded list in, replacing the previous one atomically.
    async fn commit(self: Box<Self>) -> Result<(), PolicyError>;
}

/// A line that was skipped as malformed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MalformedLine {
    /// Object key.
    pub object: String,
    /// Line number within the object, from 1.
    pub line: u64,
    /// The line's start (at most 64 characters).
    pub content: String,
}

/// What a load did.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// List name.
    pub list: String,
    /// Objects read.
    pub objects: usize,
    /// Lines read (all of them).
    pub lines: u64,
    /// Number entries loaded (before set deduplication).
    pub numbers: u64,
    /// Prefix entries loaded.
    pub prefixes: u64,
    /// Malformed lines skipped.
    pub malformed: u64,
    /// The first malformed lines.
    pub malformed_lines: Vec<MalformedLine>,
    /// Wall time, milliseconds.
    pub elapsed_ms: u64,
}

/// Why an on-demand blacklist reload failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// No list of that name is configured.
    #[error("no blacklist {0:?} is configured")]
    UnknownList(String),
    /// Reading the files or writing the list failed; the previous list
    /// stays in force.
    #[error("blacklist load failed: {0}")]
    Failed(String),
}

/// Loads the configured blacklists on demand (the admin API's reload; the
/// gateway's importer implements it).
#[async_trait::async_trait]
pub trait BlacklistReloader: Send + Sync + 'static {
    /// Names of the configured lists.
    fn lists(&self) -> Vec<String>;
    /// Loads list `name` now (after a load of it in progress) and reports
    /// what was loaded.
    async fn reload(&self, name: &str) -> Result<LoadReport, ReloadError>;
}

/// Normalises a phone number to E.164 digits without the `+`: drops
/// spaces, dashes, dots, slashes and parentheses, reads a leading `+` or
/// `00` as the international prefix, and, when `default_country` is given
/// (`"33"`), replaces a single national trunk `0` by it. The result has
/// 6 to 15 digits, else `None`.
pub fn normalize_e164(raw: &str, default_country: Option<&str>) -> Option<String> {
    let raw = raw.trim();
    let (international, rest) = match raw.strip_prefix('+') {
        Some(r) => (true, r),
        None => (false, raw),
    };
    let mut digits = String::with_capacity(rest.len() + 4);
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
            _ => return None,
        }
    }
    let digits = if international {
        digits
    } else if let Some(d) = digits.strip_prefix("00") {
        d.to_owned()
    } else if let (Some(cc), Some(national)) = (default_country, digits.strip_prefix('0')) {
        format!("{cc}{national}")
    } else {
        digits
    };
    (6..=15).contains(&digits.len()).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_should_normalise_to_e164_digits() {
        assert_eq!(
            normalize_e164("+33 6 12-34.56(78)", None).as_deref(),
            Some("33612345678")
        );
        assert_eq!(
            normalize_e164("0033612345678", None).as_deref(),
            Some("33612345678")
        );
        assert_eq!(
            normalize_e164("0612345678", Some("33")).as_deref(),
            Some("33612345678")
        );
        assert_eq!(
            normalize_e164("33612345678", None).as_deref(),
            Some("33612345678")
        );
        assert_eq!(normalize_e164("12ab", None), None);
        assert_eq!(normalize_e164("+1234", None), None);
        assert_eq!(normalize_e164("+1234567890123456", None), None);
        assert_eq!(normalize_e164("", None), None);
    }

    #[test]
    fn states_should_round_trip_their_wire_names() {
        for s in [
            PolicyState::Ok,
            PolicyState::DailyCp,
            PolicyState::WeeklyCp,
            PolicyState::Blacklist,
            PolicyState::Duplicate,
            PolicyState::QuietHours,
        ] {
            assert_eq!(PolicyState::parse(s.as_str()), Some(s));
        }
        assert_eq!(PolicyState::parse("nope"), None);
    }
}
