//! A send request as either API delivers it, and its normalisation: the
//! names in it are trimmed once, here, and every later stage works on the
//! typed result.

use crate::MessagingError;
use serde::Deserialize;
use smsgw_core::links::Address;

/// A message to send, from either API.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendRequest {
    /// Campaign id.
    #[serde(default)]
    pub task_id: String,
    /// Idempotency key; generated when empty.
    #[serde(default)]
    pub transaction_id: String,
    /// Target link or pool. Optional when Routes are configured: a send
    /// without it goes where the first matching Route says (the answer's
    /// `esme` names the target chosen).
    #[serde(default)]
    pub esme: String,
    /// Source address.
    #[serde(default, alias = "saddr")]
    pub source: String,
    /// Destination address.
    #[cfg_attr(feature = "openapi", schema(required))]
    #[serde(default, alias = "daddr")]
    pub destination: String,
    /// Text.
    #[cfg_attr(feature = "openapi", schema(required))]
    #[serde(default)]
    pub message: Option<String>,
    /// Source TON (default 0; 5 for alphanumeric senders).
    #[serde(default)]
    pub ston: Option<u8>,
    /// Source NPI (default 0).
    #[serde(default)]
    pub snpi: Option<u8>,
    /// Destination TON (default: the link's, normally 1).
    #[serde(default)]
    pub dton: Option<u8>,
    /// Destination NPI (default: the link's, normally 1).
    #[serde(default)]
    pub dnpi: Option<u8>,
    /// Contact-policy strategy; empty for none.
    #[serde(default)]
    pub strategy: String,
    /// Answer only once every segment has an SMSC outcome.
    #[serde(default)]
    pub wait_for_submit: bool,
    /// Over the rate limit, wait (up to 5 s) for capacity instead of 429.
    #[serde(default)]
    pub wait_for_capacity: bool,
    /// This message's events go to this `http(s)://` URL instead of the
    /// app's webhook (checked like the webhook: no private, loopback,
    /// link-local or metadata address unless allowed). Signed with the
    /// app's webhook secret when it has one.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// With `callback_url`: the event kinds it gets (`pending`,
    /// `delivered`, `failed`, `rejected`, `unknown`, or `final`); absent:
    /// every kind.
    #[serde(default)]
    pub callback_events: Option<Vec<String>>,
    /// When the client created the message, by its own clock: RFC 3339
    /// with an offset (`2026-12-07T08:30:00.250Z`). Kept on the record as
    /// given (to the millisecond) and shown by lookups as `sent_at_ms`;
    /// not checked against the gateway's clock. Absent: none is kept.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    #[serde(default)]
    pub sent_at: Option<SentAt>,
    /// How long the SMSC keeps trying to deliver the message, in whole
    /// seconds from its submission: 60 (1 minute) to 604800 (7 days); sent
    /// as the SMPP relative `validity_period`. Absent: the SMSC's default.
    /// Anything else is refused as `invalid_validity_period`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>, minimum = 60, maximum = 604800))]
    #[serde(default)]
    pub validity_period: Option<serde_json::Value>,
    /// When to deliver the message: RFC 3339 with an offset, in the
    /// future, at most 7 days ahead and within the message's lifetime
    /// (`--message-ttl`) less an hour. The gateway holds the message
    /// (persisted, status `accepted`, surviving restarts) and submits it
    /// once due; a link with `scheduleAtSmsc: true` gets it at once, with
    /// this as the SMPP `schedule_delivery_time`. Anything else is refused
    /// as `invalid_schedule_delivery_time`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    #[serde(default)]
    pub schedule_delivery_time: Option<SentAt>,
    /// 0 (default, lowest) to 3: the SMPP `priority_flag`, and the order
    /// in which messages waiting for a backed-up link's send window get
    /// it (higher first). Anything else is refused as `invalid_priority`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u8>, minimum = 0, maximum = 3))]
    #[serde(default)]
    pub priority: Option<serde_json::Value>,
    /// A flash message (message class 0: the handset shows it at once and
    /// does not store it): data_coding 0x10 (GSM 7-bit) or 0x18 (UCS-2;
    /// a text that would need Latin-1 goes as UCS-2). Not a boolean:
    /// `invalid_flash`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<bool>))]
    #[serde(default)]
    pub flash: Option<serde_json::Value>,
}

/// Shortest `validity_period`, in seconds (1 minute).
pub const MIN_VALIDITY_PERIOD_S: u32 = 60;
/// Longest `validity_period`, in seconds (7 days).
pub const MAX_VALIDITY_PERIOD_S: u32 = 604_800;
/// Furthest ahead a `schedule_delivery_time` may be (7 days; less when
/// the message lifetime is shorter, see [`Normalized::options`]).
pub const MAX_SCHEDULE_AHEAD: std::time::Duration = std::time::Duration::from_secs(604_800);
/// What a scheduled message's lifetime keeps free after its due time, to
/// be submitted and get its receipts.
pub const SCHEDULE_MARGIN: std::time::Duration = std::time::Duration::from_secs(3_600);

/// The message options of a request as its transport delivered them,
/// checked by [`Normalized::options`].
#[derive(Debug, Clone, Default)]
pub struct RawOptions {
    /// `validity_period` as given.
    pub validity_period: Option<serde_json::Value>,
    /// `schedule_delivery_time` as given.
    pub schedule_delivery_time: Option<SentAt>,
    /// `priority` as given.
    pub priority: Option<serde_json::Value>,
    /// `flash` as given.
    pub flash: Option<serde_json::Value>,
}

/// A send's `sent_at` as its transport delivers it; checked by
/// [`Normalized::sent_at_ms`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SentAt {
    /// RFC 3339 text with an offset (REST).
    Rfc3339(String),
    /// Seconds and nanoseconds since the Unix epoch (a gRPC
    /// `google.protobuf.Timestamp`).
    #[serde(skip)]
    Unix {
        /// Whole seconds.
        seconds: i64,
        /// Nanoseconds within the second, 0 to 999,999,999.
        nanos: i32,
    },
    /// Any other JSON value (refused as `invalid_sent_at`).
    Other(serde_json::Value),
}

/// Latest `sent_at` accepted: 9999-12-31T23:59:59.999Z.
const MAX_SENT_AT_MS: u64 = 253_402_300_799_999;

/// Longest transaction id a client may give.
pub const MAX_TRANSACTION_ID: usize = 128;

/// A [`SendRequest`] with its names trimmed: what every stage after the
/// transport reads. Values that need the configuration or the sender to be
/// judged (target, addresses, text) are checked by the accept stage, in a
/// fixed order, so a request with several faults always gets the same
/// refusal.
#[derive(Debug, Clone)]
pub struct Normalized {
    /// Target link or pool, trimmed; empty means the routing table
    /// chooses (refused as `invalid_esme` when no Route is configured,
    /// `no_route` when none matches).
    pub esme: String,
    /// Contact-policy strategy, trimmed; `None` when none is named.
    pub strategy: Option<String>,
    /// The client's idempotency key, trimmed; `None` when none was given
    /// (one is generated). Its length is checked by
    /// [`Normalized::transaction_id`].
    pub given_transaction_id: Option<String>,
    /// Campaign id; `None` when empty.
    pub task_id: Option<String>,
    /// Source as given.
    pub source: String,
    /// Destination as given.
    pub destination: String,
    /// Text as given.
    pub message: Option<String>,
    /// Source TON/NPI as given.
    pub source_ton_npi: (Option<u8>, Option<u8>),
    /// Destination TON/NPI as given.
    pub destination_ton_npi: (Option<u8>, Option<u8>),
    /// Answer only once every segment has an SMSC outcome.
    pub wait_for_submit: bool,
    /// Over the rate limit, wait for capacity instead of refusing.
    pub wait_for_capacity: bool,
    /// The message's own callback URL, trimmed; `None` when none.
    pub callback_url: Option<String>,
    /// Event kinds for the callback, as given.
    pub callback_events: Option<Vec<String>>,
    /// The client's `sent_at` as given.
    pub sent_at: Option<SentAt>,
    /// The message options as given.
    pub options: RawOptions,
}

impl SendRequest {
    /// Trims the request's names once (see [`Normalized`]).
    pub fn normalize(self) -> Normalized {
        let trimmed = |s: String| {
            let t = s.trim();
            (!t.is_empty()).then(|| t.to_owned())
        };
        Normalized {
            esme: self.esme.trim().to_owned(),
            strategy: trimmed(self.strategy),
            given_transaction_id: trimmed(self.transaction_id),
            task_id: (!self.task_id.is_empty()).then_some(self.task_id),
            source: self.source,
            destination: self.destination,
            message: self.message,
            source_ton_npi: (self.ston, self.snpi),
            destination_ton_npi: (self.dton, self.dnpi),
            wait_for_submit: self.wait_for_submit,
            wait_for_capacity: self.wait_for_capacity,
            callback_url: self.callback_url.and_then(trimmed),
            callback_events: self.callback_events,
            sent_at: self.sent_at,
            options: RawOptions {
                validity_period: self.validity_period,
                schedule_delivery_time: self.schedule_delivery_time,
                priority: self.priority,
                flash: self.flash,
            },
        }
    }
}

/// A time as a transport delivers it, in ms since the Unix epoch; the
/// reason it is not one from 1970 to 9999 otherwise.
fn time_ms(t: &SentAt) -> Result<u64, String> {
    let ms = match t {
        SentAt::Rfc3339(text) => {
            let t: jiff::Timestamp = text
                .trim()
                .parse()
                .map_err(|_| format!("{text:?} is not an RFC 3339 time with an offset"))?;
            t.as_millisecond()
        }
        SentAt::Unix { seconds, nanos } => {
            if !(0..1_000_000_000).contains(nanos) {
                return Err("nanos must be 0 to 999,999,999".into());
            }
            seconds
                .checked_mul(1000)
                .and_then(|ms| ms.checked_add(i64::from(*nanos / 1_000_000)))
                .ok_or("out of range")?
        }
        SentAt::Other(v) => return Err(format!("{v} is not a text")),
    };
    u64::try_from(ms)
        .ok()
        .filter(|ms| *ms <= MAX_SENT_AT_MS)
        .ok_or_else(|| "out of range".into())
}

impl Normalized {
    /// The message's own callback: `callback_url` with the kinds of
    /// `callback_events`. The URL's destination rules are the transport's
    /// (`smsgw-api` checks it like a webhook before the request gets here).
    pub fn callback(&self) -> Result<Option<smsgw_core::outbox::Callback>, MessagingError> {
        let events = match &self.callback_events {
            Some(words) => Some(smsgw_core::outbox::EventMask::parse(words).map_err(|e| {
                MessagingError::InvalidField {
                    field: "callback_events",
                    reason: e.to_string(),
                }
            })?),
            None => None,
        };
        match (&self.callback_url, events) {
            (Some(url), events) => Ok(Some(smsgw_core::outbox::Callback {
                url: url.clone(),
                events,
            })),
            (None, Some(_)) => Err(MessagingError::InvalidField {
                field: "callback_events",
                reason: "needs callback_url".into(),
            }),
            (None, None) => Ok(None),
        }
    }

    /// The transaction id the message is stored under: the client's (at
    /// most [`MAX_TRANSACTION_ID`] bytes), or a new UUID.
    pub fn transaction_id(&self) -> Result<String, MessagingError> {
        match &self.given_transaction_id {
            None => Ok(uuid::Uuid::new_v4().to_string()),
            Some(t) if t.len() > MAX_TRANSACTION_ID => Err(MessagingError::refused(
                "invalid_transaction_id",
                "transaction_id: at most 128 characters",
            )),
            Some(t) => Ok(t.clone()),
        }
    }

    /// The client's `sent_at` in ms since the Unix epoch (sub-millisecond
    /// digits dropped), `None` when none was given; refused as
    /// `invalid_sent_at` when it is not a time from 1970 to 9999 (RFC 3339
    /// with an offset over REST, a valid Timestamp over gRPC).
    pub fn sent_at_ms(&self) -> Result<Option<u64>, MessagingError> {
        self.sent_at
            .as_ref()
            .map(time_ms)
            .transpose()
            .map_err(|why| {
                MessagingError::refused(
                    "invalid_sent_at",
                    format!(
                        "sent_at: {why}; expected a time from 1970 to 9999 such as \"2026-12-07T08:30:00Z\""
                    ),
                )
            })
    }

    /// The message options, checked at `now_ms` (ms since the Unix
    /// epoch) for a message that lives `ttl`, each refused with its own
    /// code: `invalid_validity_period` (not whole seconds from
    /// [`MIN_VALIDITY_PERIOD_S`] to [`MAX_VALIDITY_PERIOD_S`]),
    /// `invalid_schedule_delivery_time` (not a time after `now_ms` and at
    /// most [`MAX_SCHEDULE_AHEAD`] ahead, nor `ttl` less
    /// [`SCHEDULE_MARGIN`]), `invalid_priority` (not 0 to 3),
    /// `invalid_flash` (not a boolean). Whether the SMSC keeps the
    /// schedule is the target's to say (`schedule_at_smsc` stays false).
    pub fn options(
        &self,
        now_ms: u64,
        ttl: std::time::Duration,
    ) -> Result<smsgw_core::messages::MessageOptions, MessagingError> {
        use serde_json::Value;
        let raw = &self.options;
        let validity_period_s = match &raw.validity_period {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|s| u32::try_from(s).ok())
                    .filter(|s| (MIN_VALIDITY_PERIOD_S..=MAX_VALIDITY_PERIOD_S).contains(s))
                    .ok_or_else(|| {
                        MessagingError::refused(
                            "invalid_validity_period",
                            format!(
                                "validity_period: {v} is not a whole number of seconds from {MIN_VALIDITY_PERIOD_S} (1 minute) to {MAX_VALIDITY_PERIOD_S} (7 days)"
                            ),
                        )
                    })?,
            ),
        };
        let ahead = MAX_SCHEDULE_AHEAD.min(ttl.saturating_sub(SCHEDULE_MARGIN));
        let latest = now_ms.saturating_add(ahead.as_millis() as u64);
        let schedule_delivery_ms = match &raw.schedule_delivery_time {
            None => None,
            Some(t) => {
                let invalid = |why: String| {
                    MessagingError::refused(
                        "invalid_schedule_delivery_time",
                        format!(
                            "schedule_delivery_time: {why}; expected a future time at most {} s ahead such as \"2026-12-07T08:30:00Z\"",
                            ahead.as_secs()
                        ),
                    )
                };
                let at = time_ms(t).map_err(invalid)?;
                if at <= now_ms {
                    return Err(invalid("is not in the future".into()));
                }
                if at > latest {
                    return Err(invalid("is too far ahead".into()));
                }
                Some(at)
            }
        };
        let priority = match &raw.priority {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_u64()
                .filter(|p| *p <= u64::from(smsgw_core::messages::MAX_PRIORITY))
                .map(|p| p as u8)
                .ok_or_else(|| {
                    MessagingError::refused(
                        "invalid_priority",
                        format!("priority: {v} is not 0, 1, 2 or 3"),
                    )
                })?,
        };
        let flash = match &raw.flash {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(MessagingError::refused(
                    "invalid_flash",
                    format!("flash: {v} is not true or false"),
                ));
            }
        };
        Ok(smsgw_core::messages::MessageOptions {
            validity_period_s,
            schedule_delivery_ms,
            schedule_at_smsc: false,
            priority,
            flash,
        })
    }

    /// The transaction id as given, empty when none was (for logs and the
    /// journal of a refusal).
    pub fn given_transaction_id(&self) -> &str {
        self.given_transaction_id.as_deref().unwrap_or("")
    }
}

/// An E.164 destination: 4 to 15 digits after an optional `+` (dropped).
pub fn validate_destination(d: &str) -> Result<String, MessagingError> {
    let digits = d.trim().trim_start_matches('+');
    if digits.is_empty() {
        return Err(MessagingError::refused(
            "invalid_destination",
            "destination: is required",
        ));
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !(4..=15).contains(&digits.len()) {
        return Err(MessagingError::refused(
            "invalid_destination",
            format!("destination: {d:?} is not an E.164 number (4 to 15 digits, optional '+')"),
        ));
    }
    Ok(digits.to_owned())
}

/// Source address and its TON/NPI: digits (up to 15), or an alphanumeric
/// sender of up to 11 characters (TON 5, NPI 0 unless given).
pub fn validate_source(
    s: &str,
    ton: Option<u8>,
    npi: Option<u8>,
) -> Result<Address, MessagingError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(MessagingError::refused(
            "invalid_source",
            "source: is required",
        ));
    }
    let digits = s.trim_start_matches('+');
    if digits.bytes().all(|b| b.is_ascii_digit()) && !digits.is_empty() {
        if digits.len() > 15 {
            return Err(MessagingError::refused(
                "invalid_source",
                "source: a numeric sender has at most 15 digits",
            ));
        }
        return Ok(Address {
            addr: digits.to_owned(),
            ton: ton.unwrap_or(0),
            npi: npi.unwrap_or(0),
        });
    }
    if s.chars().count() > 11
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " -_.&".contains(c))
    {
        return Err(MessagingError::refused(
            "invalid_source",
            format!(
                "source: {s:?} is neither a number nor an alphanumeric sender of at most 11 characters"
            ),
        ));
    }
    Ok(Address {
        addr: s.to_owned(),
        ton: ton.unwrap_or(5),
        npi: npi.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_once_and_blank_ones_are_absent() {
        let n = SendRequest {
            esme: "  link-a ".into(),
            strategy: "   ".into(),
            transaction_id: " tx-1\t".into(),
            ..SendRequest::default()
        }
        .normalize();
        assert_eq!(n.esme, "link-a");
        assert_eq!(n.strategy, None);
        assert_eq!(n.given_transaction_id(), "tx-1");
        assert_eq!(n.transaction_id().unwrap(), "tx-1");
        let n = SendRequest::default().normalize();
        assert_eq!(n.given_transaction_id(), "");
        assert_eq!(n.transaction_id().unwrap().len(), 36, "a UUID is generated");
    }

    #[test]
    fn an_overlong_transaction_id_is_refused_with_its_code() {
        let n = SendRequest {
            transaction_id: "x".repeat(129),
            ..SendRequest::default()
        }
        .normalize();
        assert_eq!(
            n.transaction_id().unwrap_err().code(),
            "invalid_transaction_id"
        );
    }

    #[test]
    fn sent_at_is_read_from_rfc_3339_or_a_timestamp_and_refused_otherwise() {
        let at = |v: serde_json::Value| {
            serde_json::from_value::<SendRequest>(serde_json::json!({ "sent_at": v }))
                .unwrap()
                .normalize()
                .sent_at_ms()
        };
        assert_eq!(
            at("2026-12-07T08:30:00.250Z".into()).unwrap(),
            Some(1_796_632_200_250)
        );
        assert_eq!(
            at("2026-12-07T09:30:00.250+01:00".into()).unwrap(),
            Some(1_796_632_200_250),
            "an offset is honoured"
        );
        assert_eq!(
            at(serde_json::Value::Null).unwrap(),
            None,
            "null is no sent_at"
        );
        for bad in [
            serde_json::json!("yesterday"),
            serde_json::json!("2026-12-07T08:30:00"),
            serde_json::json!("1969-12-31T23:59:59Z"),
            serde_json::json!(1_796_632_200_250u64),
            serde_json::json!({"seconds": 1}),
        ] {
            assert_eq!(
                at(bad.clone()).unwrap_err().code(),
                "invalid_sent_at",
                "{bad}"
            );
        }
        let unix = |seconds, nanos| {
            SendRequest {
                sent_at: Some(SentAt::Unix { seconds, nanos }),
                ..SendRequest::default()
            }
            .normalize()
            .sent_at_ms()
        };
        assert_eq!(
            unix(1_796_632_200, 250_999_999).unwrap(),
            Some(1_796_632_200_250)
        );
        assert_eq!(unix(0, 0).unwrap(), Some(0));
        for (s, n) in [
            (-1, 0),
            (1, -1),
            (1, 1_000_000_000),
            (i64::MAX, 0),
            (253_402_300_800, 0),
        ] {
            assert_eq!(unix(s, n).unwrap_err().code(), "invalid_sent_at", "{s} {n}");
        }
    }

    #[test]
    fn message_options_are_read_and_each_fault_has_its_code() {
        const NOW: u64 = 1_796_632_200_000; // 2026-12-07T08:30:00Z
        const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);
        let opts = |v: serde_json::Value, ttl| {
            serde_json::from_value::<SendRequest>(v)
                .unwrap()
                .normalize()
                .options(NOW, ttl)
        };
        let o = opts(serde_json::json!({}), DAY).unwrap();
        assert!(o.is_default(), "none given: none kept");
        let o = opts(
            serde_json::json!({
                "validity_period": 3600, "priority": 3, "flash": true,
                "schedule_delivery_time": "2026-12-07T10:30:00+01:00",
            }),
            DAY,
        )
        .unwrap();
        assert_eq!(o.validity_period_s, Some(3_600));
        assert_eq!(o.priority, 3);
        assert!(o.flash);
        assert_eq!(o.schedule_delivery_ms, Some(NOW + 3_600_000));
        assert!(!o.schedule_at_smsc, "the target's to decide");
        let nulls = serde_json::json!({
            "validity_period": null, "priority": null, "flash": null,
            "schedule_delivery_time": null,
        });
        assert!(opts(nulls, DAY).unwrap().is_default());
        for (field, bad, code) in [
            (
                "validity_period",
                serde_json::json!(59),
                "invalid_validity_period",
            ),
            (
                "validity_period",
                serde_json::json!(604_801),
                "invalid_validity_period",
            ),
            (
                "validity_period",
                serde_json::json!("1h"),
                "invalid_validity_period",
            ),
            (
                "validity_period",
                serde_json::json!(90.5),
                "invalid_validity_period",
            ),
            (
                "validity_period",
                serde_json::json!(-60),
                "invalid_validity_period",
            ),
            ("priority", serde_json::json!(4), "invalid_priority"),
            ("priority", serde_json::json!(-1), "invalid_priority"),
            ("priority", serde_json::json!("high"), "invalid_priority"),
            ("flash", serde_json::json!("yes"), "invalid_flash"),
            ("flash", serde_json::json!(1), "invalid_flash"),
            (
                "schedule_delivery_time",
                serde_json::json!("2026-12-07T08:30:00Z"),
                "invalid_schedule_delivery_time",
            ),
            (
                "schedule_delivery_time",
                serde_json::json!("2026-12-07T08:29:00Z"),
                "invalid_schedule_delivery_time",
            ),
            (
                "schedule_delivery_time",
                serde_json::json!("2026-12-14T08:30:01Z"),
                "invalid_schedule_delivery_time",
            ),
            (
                "schedule_delivery_time",
                serde_json::json!("tomorrow"),
                "invalid_schedule_delivery_time",
            ),
            (
                "schedule_delivery_time",
                serde_json::json!(1_796_632_260),
                "invalid_schedule_delivery_time",
            ),
        ] {
            let err = opts(serde_json::json!({ field: bad }), 30 * DAY).unwrap_err();
            assert_eq!(err.code(), code, "{field}: {bad}");
        }
        // Seven days ahead with a long lifetime; with the default one day,
        // the lifetime less an hour.
        let at = |s: &str| serde_json::json!({ "schedule_delivery_time": s });
        assert!(opts(at("2026-12-14T08:30:00Z"), 30 * DAY).is_ok());
        assert!(opts(at("2026-12-08T07:30:00Z"), DAY).is_ok());
        assert_eq!(
            opts(at("2026-12-08T07:30:01Z"), DAY).unwrap_err().code(),
            "invalid_schedule_delivery_time"
        );
        // gRPC delivers a Timestamp.
        let n = SendRequest {
            schedule_delivery_time: Some(SentAt::Unix {
                seconds: (NOW / 1000 + 60) as i64,
                nanos: 0,
            }),
            ..SendRequest::default()
        }
        .normalize();
        assert_eq!(
            n.options(NOW, DAY).unwrap().schedule_delivery_ms,
            Some(NOW + 60_000)
        );
    }

    #[test]
    fn destinations_and_sources_are_checked_and_normalised() {
        assert_eq!(validate_destination(" +4917012345 ").unwrap(), "4917012345");
        for bad in ["", "+", "12", "49170x2345", "1234567890123456"] {
            assert_eq!(
                validate_destination(bad).unwrap_err().code(),
                "invalid_destination",
                "{bad:?}"
            );
        }
        let a = validate_source("+4917012345", None, None).unwrap();
        assert_eq!((a.addr.as_str(), a.ton, a.npi), ("4917012345", 0, 0));
        let a = validate_source("ACME Bank", None, None).unwrap();
        assert_eq!((a.addr.as_str(), a.ton, a.npi), ("ACME Bank", 5, 0));
        for bad in ["", "Twelve chars", "bad!", "1234567890123456"] {
            assert_eq!(
                validate_source(bad, None, None).unwrap_err().code(),
                "invalid_source",
                "{bad:?}"
            );
        }
    }
}
