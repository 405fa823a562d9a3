//! Specs of the four resource kinds, as written in manifests (camelCase),
//! with their field-level validation.

use crate::Duration;
use serde::{Deserialize, Serialize};

/// A field that failed validation: its path under the resource
/// (`spec.port`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `spec.members[1].link`.
    pub field: String,
    /// Why the value is refused.
    pub reason: String,
}

impl FieldError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Reference to one key of a Kubernetes Secret (in the resource's namespace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key within the Secret.
    pub key: String,
}

/// How a link's sessions bind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BindMode {
    /// One transceiver bind per session (submit and receive on one socket).
    #[default]
    Transceiver,
    /// A transmitter bind plus a receiver bind per session.
    TransmitterReceiver,
}

/// SMPP interface version announced in the bind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InterfaceVersion {
    /// SMPP 3.4 (interface_version 0x34).
    #[default]
    #[serde(rename = "3.4")]
    V34,
    /// SMPP 5.0 (interface_version 0x50).
    #[serde(rename = "5.0")]
    V50,
}

/// How long messages are concatenated on a link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Concatenation {
    /// User data header with an 8-bit reference (IEI 0x00).
    #[default]
    Udh8,
    /// User data header with a 16-bit reference (IEI 0x08).
    Udh16,
    /// SAR TLVs (sar_msg_ref_num, sar_total_segments, sar_segment_seqnum).
    Sar,
    /// One submit_sm carrying the whole text in the message_payload TLV.
    MessagePayload,
}

/// Format of the message ids an SMSC returns, so receipts can be matched
/// whatever form they quote the id in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MessageIdFormat {
    /// Opaque string, compared as is.
    #[default]
    String,
    /// Hexadecimal number (case and leading zeros do not matter).
    Hex,
    /// Decimal number (leading zeros do not matter).
    Decimal,
}

/// Reconnect backoff: exponential from `initial` to `max`, jittered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backoff {
    /// First delay after a failure. Default 1s.
    #[serde(default = "defaults::backoff_initial")]
    pub initial: Duration,
    /// Cap of the delay. Default 60s.
    #[serde(default = "defaults::backoff_max")]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: defaults::backoff_initial(),
            max: defaults::backoff_max(),
        }
    }
}

/// Default TON/NPI applied when a request leaves them out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddressDefaults {
    /// Source type of number. Default 0 (unknown).
    #[serde(default)]
    pub source_ton: u8,
    /// Source numbering plan. Default 0 (unknown).
    #[serde(default)]
    pub source_npi: u8,
    /// Destination type of number. Default 1 (international).
    #[serde(default = "defaults::one")]
    pub dest_ton: u8,
    /// Destination numbering plan. Default 1 (E.164).
    #[serde(default = "defaults::one")]
    pub dest_npi: u8,
}

impl Default for AddressDefaults {
    fn default() -> Self {
        Self {
            source_ton: 0,
            source_npi: 0,
            dest_ton: 1,
            dest_npi: 1,
        }
    }
}

/// Encoding options of a link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncodingOptions {
    /// Whether the SMSC accepts Latin-1 (data_coding 3). Default false.
    #[serde(default)]
    pub latin1: bool,
    /// National language shift tables the SMSC and handsets support
    /// (`turkish`, `spanish`, `portuguese`). Default none.
    #[serde(default)]
    pub national_languages: Vec<String>,
    /// Concatenation method for long texts. Default `udh8`.
    #[serde(default)]
    pub concatenation: Concatenation,
    /// Most segments one message may take. Default 10.
    #[serde(default = "defaults::max_segments")]
    pub max_segments: u16,
}

impl Default for EncodingOptions {
    fn default() -> Self {
        Self {
            latin1: false,
            national_languages: Vec::new(),
            concatenation: Concatenation::default(),
            max_segments: defaults::max_segments(),
        }
    }
}

/// National languages whose shift tables the text engine implements.
pub const NATIONAL_LANGUAGES: &[&str] = &["turkish", "spanish", "portuguese"];

/// One SMSC account: where to connect, how to bind, how fast to send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SmppLinkSpec {
    /// SMSC host name or address.
    pub host: String,
    /// SMSC TCP port.
    pub port: u16,
    /// Connect over TLS. Default false.
    #[serde(default)]
    pub tls: bool,
    /// system_id of the bind (at most 15 characters).
    pub system_id: String,
    /// Password inline (standalone files only; use `passwordSecretRef` in a
    /// cluster). At most 8 characters, as SMPP allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Password from a Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// system_type of the bind (at most 12 characters). Default empty.
    #[serde(default)]
    pub system_type: String,
    /// Transceiver, or transmitter + receiver. Default transceiver.
    #[serde(default)]
    pub bind_mode: BindMode,
    /// SMPP version. Default 3.4.
    #[serde(default)]
    pub interface_version: InterfaceVersion,
    /// Binds held across all pods. Default 1.
    #[serde(default = "defaults::one_u32")]
    pub sessions: u32,
    /// submit_sm in flight per session. Default 10.
    #[serde(default = "defaults::window")]
    pub window: u32,
    /// Messages per second over the whole link; absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
    /// Burst above the rate; absent means equal to the rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// How long to wait for a response PDU. Default 10s.
    #[serde(default = "defaults::response_timeout")]
    pub response_timeout: Duration,
    /// Interval of enquire_link keep-alives. Default 30s.
    #[serde(default = "defaults::enquire_link_interval")]
    pub enquire_link_interval: Duration,
    /// Reconnect backoff.
    #[serde(default)]
    pub reconnect: Backoff,
    /// Default TON/NPI.
    #[serde(default)]
    pub defaults: AddressDefaults,
    /// Encoding options.
    #[serde(default)]
    pub encoding: EncodingOptions,
    /// Format of the SMSC's message ids. Default `string`.
    #[serde(default)]
    pub message_id_format: MessageIdFormat,
}

impl SmppLinkSpec {
    /// Field-level checks that need no other resource.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.host.trim().is_empty() {
            errs.push(FieldError::new("spec.host", "must not be empty"));
        }
        if self.port == 0 {
            errs.push(FieldError::new("spec.port", "must be between 1 and 65535"));
        }
        if self.system_id.is_empty() || self.system_id.len() > 15 {
            errs.push(FieldError::new(
                "spec.systemId",
                "must be 1 to 15 characters",
            ));
        }
        if self.system_type.len() > 12 {
            errs.push(FieldError::new(
                "spec.systemType",
                "must be at most 12 characters",
            ));
        }
        match (&self.password, &self.password_secret_ref) {
            (Some(_), Some(_)) => errs.push(FieldError::new(
                "spec.password",
                "set either password or passwordSecretRef, not both",
            )),
            (Some(p), None) if p.len() > 8 => errs.push(FieldError::new(
                "spec.password",
                "must be at most 8 characters (SMPP limit)",
            )),
            _ => {}
        }
        if !(1..=64).contains(&self.sessions) {
            errs.push(FieldError::new("spec.sessions", "must be between 1 and 64"));
        }
        if !(1..=1024).contains(&self.window) {
            errs.push(FieldError::new("spec.window", "must be between 1 and 1024"));
        }
        if self.rate == Some(0) {
            errs.push(FieldError::new(
                "spec.rate",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        if self.burst.is_some() && self.rate.is_none() {
            errs.push(FieldError::new("spec.burst", "needs spec.rate"));
        }
        if self.response_timeout.get().is_zero() {
            errs.push(FieldError::new("spec.responseTimeout", "must be positive"));
        }
        if self.enquire_link_interval.get() < std::time::Duration::from_millis(100) {
            errs.push(FieldError::new(
                "spec.enquireLinkInterval",
                "must be at least 100ms",
            ));
        }
        if self.reconnect.initial.get().is_zero() || self.reconnect.max < self.reconnect.initial {
            errs.push(FieldError::new(
                "spec.reconnect",
                "initial must be positive and max at least initial",
            ));
        }
        for (i, lang) in self.encoding.national_languages.iter().enumerate() {
            if !NATIONAL_LANGUAGES.contains(&lang.as_str()) {
                errs.push(FieldError::new(
                    format!("spec.encoding.nationalLanguages[{i}]"),
                    format!(
                        "unknown language {lang:?}; supported: {}",
                        NATIONAL_LANGUAGES.join(", ")
                    ),
                ));
            }
        }
        if !(1..=255).contains(&self.encoding.max_segments) {
            errs.push(FieldError::new(
                "spec.encoding.maxSegments",
                "must be between 1 and 255",
            ));
        }
        errs
    }
}

/// A member of a pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolMember {
    /// Name of an SmppLink.
    pub link: String,
    /// Share of the traffic, relative to the other members. Default 1.
    #[serde(default = "defaults::one_u32")]
    pub weight: u32,
}

/// A weighted set of links that answers like one link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EsmePoolSpec {
    /// The links and their weights.
    pub members: Vec<PoolMember>,
}

impl EsmePoolSpec {
    /// Field-level checks that need no other resource.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.members.is_empty() {
            errs.push(FieldError::new(
                "spec.members",
                "must hold at least one link",
            ));
        }
        for (i, m) in self.members.iter().enumerate() {
            if m.weight == 0 || m.weight > 1000 {
                errs.push(FieldError::new(
                    format!("spec.members[{i}].weight"),
                    "must be between 1 and 1000",
                ));
            }
            if self.members[..i].iter().any(|o| o.link == m.link) {
                errs.push(FieldError::new(
                    format!("spec.members[{i}].link"),
                    format!("link {:?} listed twice", m.link),
                ));
            }
        }
        errs
    }
}

/// What a user's app may do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quotas {
    /// Messages per second for the app; absent means no app-level cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
    /// Links and pools the app may send to; empty means all.
    #[serde(default)]
    pub allowed_targets: Vec<String>,
    /// Sender ids the app may use; empty means any.
    #[serde(default)]
    pub allowed_sender_ids: Vec<String>,
}

/// A user and its application, managed from configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserSpec {
    /// Login email, unique.
    pub email: String,
    /// Name of the user's application.
    pub app_name: String,
    /// Admin rights. Default false.
    #[serde(default)]
    pub admin: bool,
    /// Password inline (standalone files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Password from a Secret key; with neither, one is generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// Quotas.
    #[serde(default)]
    pub quotas: Quotas,
    /// Addresses (short codes, numbers) whose inbound messages go to this app.
    #[serde(default)]
    pub source_addresses: Vec<String>,
}

impl UserSpec {
    /// Field-level checks that need no other resource.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if !is_plausible_email(&self.email) {
            errs.push(FieldError::new(
                "spec.email",
                format!("{:?} is not an email address", self.email),
            ));
        }
        if self.app_name.trim().is_empty() {
            errs.push(FieldError::new("spec.appName", "must not be empty"));
        }
        if self.password.is_some() && self.password_secret_ref.is_some() {
            errs.push(FieldError::new(
                "spec.password",
                "set either password or passwordSecretRef, not both",
            ));
        }
        if let Some(p) = &self.password
            && p.chars().count() < 10
        {
            errs.push(FieldError::new(
                "spec.password",
                "must be at least 10 characters",
            ));
        }
        if self.quotas.rate == Some(0) {
            errs.push(FieldError::new(
                "spec.quotas.rate",
                "must be at least 1 (leave it out for no cap)",
            ));
        }
        errs
    }
}

/// `local@domain.tld`, without spaces: the check every signup form makes.
pub fn is_plausible_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@')
        && s.len() <= 254
}

/// Per-destination frequency caps over calendar periods.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Frequency {
    /// Messages per destination per calendar day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u32>,
    /// Messages per destination per calendar week (Monday first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly: Option<u32>,
    /// IANA time zone the calendar periods follow. Default `UTC`.
    #[serde(default = "defaults::utc")]
    pub time_zone: String,
}

/// Refusal of the same text to the same destination within a window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dedup {
    /// How long a sent text blocks its repeat.
    pub window: Duration,
    /// Whether the source address is part of the key. Default false.
    #[serde(default)]
    pub include_source: bool,
}

/// Hours during which messages are held back, in the destination's zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuietHours {
    /// Start, `HH:MM`.
    pub start: String,
    /// End, `HH:MM` (may be before start: the window spans midnight).
    pub end: String,
}

/// A named contact-policy strategy (the resource name is the strategy).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContactPolicySpec {
    /// Frequency caps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<Frequency>,
    /// Deduplication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<Dedup>,
    /// Names of blacklists to check.
    #[serde(default)]
    pub blacklists: Vec<String>,
    /// Quiet hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
}

impl ContactPolicySpec {
    /// Field-level checks that need no other resource.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Some(f) = &self.frequency {
            if f.daily.is_none() && f.weekly.is_none() {
                errs.push(FieldError::new(
                    "spec.frequency",
                    "set daily, weekly or both",
                ));
            }
            if let (Some(d), Some(w)) = (f.daily, f.weekly)
                && w < d
            {
                errs.push(FieldError::new(
                    "spec.frequency.weekly",
                    "must be at least the daily cap",
                ));
            }
            if f.time_zone.trim().is_empty() {
                errs.push(FieldError::new(
                    "spec.frequency.timeZone",
                    "must not be empty",
                ));
            }
        }
        if let Some(d) = &self.dedup
            && d.window.get().is_zero()
        {
            errs.push(FieldError::new("spec.dedup.window", "must be positive"));
        }
        if let Some(q) = &self.quiet_hours {
            for (field, v) in [
                ("spec.quietHours.start", &q.start),
                ("spec.quietHours.end", &q.end),
            ] {
                if parse_hh_mm(v).is_none() {
                    errs.push(FieldError::new(
                        field,
                        format!("{v:?} is not a time of day (HH:MM)"),
                    ));
                }
            }
        }
        if self.frequency.is_none()
            && self.dedup.is_none()
            && self.blacklists.is_empty()
            && self.quiet_hours.is_none()
        {
            errs.push(FieldError::new(
                "spec",
                "a policy needs frequency, dedup, blacklists or quietHours",
            ));
        }
        errs
    }
}

/// Minutes since midnight of an `HH:MM` time.
pub fn parse_hh_mm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.len() == 5).then_some(h * 60 + m)
}

mod defaults {
    use crate::Duration;
    pub fn one() -> u8 {
        1
    }
    pub fn one_u32() -> u32 {
        1
    }
    pub fn window() -> u32 {
        10
    }
    pub fn max_segments() -> u16 {
        10
    }
    pub fn response_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn enquire_link_interval() -> Duration {
        Duration::from_secs(30)
    }
    pub fn backoff_initial() -> Duration {
        Duration::from_secs(1)
    }
    pub fn backoff_max() -> Duration {
        Duration::from_secs(60)
    }
    pub fn utc() -> String {
        "UTC".to_owned()
    }
}

impl SmppLinkSpec {
    /// The text engine options this link's encoding settings stand for.
    /// Languages were checked by [`SmppLinkSpec::validate`]; unknown ones
    /// are ignored here.
    pub fn text_options(&self) -> smsgw_text::TextOptions {
        let mut national = smsgw_text::NationalLanguages::NONE;
        for lang in &self.encoding.national_languages {
            if let Ok(l) = lang.parse::<smsgw_text::Language>() {
                national.insert(l);
            }
        }
        smsgw_text::TextOptions {
            allow_latin1: self.encoding.latin1,
            national,
            concat: match self.encoding.concatenation {
                Concatenation::Udh8 => smsgw_text::Concat::Udh8,
                Concatenation::Udh16 => smsgw_text::Concat::Udh16,
                Concatenation::Sar => smsgw_text::Concat::Sar,
                Concatenation::MessagePayload => smsgw_text::Concat::MessagePayload,
            },
            max_segments: Some(self.encoding.max_segments),
        }
    }
}
