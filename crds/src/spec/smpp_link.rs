//! `SmppLink`: one SMSC account — where to connect, how to bind, how fast
//! to send — with its field validation and text options.

// `#[kube(printcolumn(..), printcolumn(..))]` repeats `type_ = ..` by
// design; clippy reads that as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use super::shared::{FieldError, SecretKeyRef, defaults};
use crate::Duration;
use crate::status::SmppLinkStatus;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a link's sessions bind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BindMode {
    /// One transceiver bind per session (submit and receive on one socket).
    #[default]
    Transceiver,
    /// A transmitter bind plus a receiver bind per session.
    TransmitterReceiver,
}

/// SMPP interface version announced in the bind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

/// How much of an SMS each part of a message split with `concatenation:
/// sar` fills.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SarPartSize {
    /// Leave room for the concatenation header the SMSC adds when it turns
    /// the SAR TLVs into a UDH on the radio side: 153 GSM 7-bit, 134
    /// Latin-1 or 67 UCS-2 characters per part (as Jasmin splits).
    #[default]
    Udh,
    /// Fill the whole SMS: 160 GSM 7-bit, 140 Latin-1 or 70 UCS-2
    /// characters per part, for SMSCs that document that they take SAR
    /// parts of that size.
    Full,
}

/// Format of the message ids an SMSC returns, so receipts can be matched
/// whatever form they quote the id in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

/// What becomes of a submit_sm whose session closed before the SMSC
/// answered it (a dropped or stalled session): it may or may not have
/// reached the SMSC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum UnknownPolicy {
    /// Submit it again on a healthy session (at least once): the message is
    /// marked `possible_duplicate` in lookups, notifications and the
    /// journal.
    #[default]
    Resubmit,
    /// Leave it `unknown` for an operator.
    Hold,
}

/// Reconnect backoff: after a failed connect or bind, wait `initial`, then
/// double the delay on each further failure up to `max`, with jitter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backoff {
    /// First delay after a failure, as a duration string (`500ms`, `1s`).
    /// Must be positive. Default `1s`.
    #[serde(default = "defaults::backoff_initial")]
    pub initial: Duration,
    /// Longest delay between two attempts, as a duration string (`10s`,
    /// `1m`). Must be at least `initial`. Default `1m`.
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

/// Type of number (TON) and numbering plan (NPI) put into submit_sm when a
/// request does not set them (SMPP 3.4 section 5.2.5/5.2.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddressDefaults {
    /// source_addr_ton: 0 unknown, 1 international, 2 national, 3 network
    /// specific, 4 subscriber number, 5 alphanumeric, 6 abbreviated.
    /// Default 0.
    #[serde(default)]
    #[schemars(range(max = 6))]
    pub source_ton: u8,
    /// source_addr_npi: 0 unknown, 1 ISDN/E.164, 3 data, 4 telex, 6 land
    /// mobile, 8 national, 9 private, 10 ERMES, 14 internet, 18 WAP.
    /// Default 0.
    #[serde(default)]
    #[schemars(range(max = 18))]
    pub source_npi: u8,
    /// dest_addr_ton, same codes as `sourceTon`. Default 1 (international).
    #[serde(default = "defaults::one")]
    #[schemars(range(max = 6))]
    pub dest_ton: u8,
    /// dest_addr_npi, same codes as `sourceNpi`. Default 1 (ISDN/E.164).
    #[serde(default = "defaults::one")]
    #[schemars(range(max = 18))]
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

/// Which character sets and concatenation method the SMSC supports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.sarPartSize) || (has(self.concatenation) && self.concatenation == 'sar')",
    "message": "sarPartSize applies only to concatenation: sar",
    "fieldPath": ".sarPartSize"
}]))]
pub struct EncodingOptions {
    /// Whether the SMSC accepts ISO-8859-1 text (data_coding 3), used for
    /// texts outside GSM 03.38 but inside Latin-1 (140 characters per
    /// segment instead of 70 with UCS-2). Default false.
    #[serde(default)]
    pub latin1: bool,
    /// GSM national language shift tables (3GPP TS 23.038) the SMSC and
    /// handsets support, tried before falling back to UCS-2: any of
    /// `turkish`, `spanish`, `portuguese`. Default none.
    #[serde(default)]
    #[schemars(length(max = 3), extend("x-kubernetes-validations" = [{
        "rule": "self.all(l, l in ['turkish', 'spanish', 'portuguese'])",
        "message": "supported national languages: turkish, spanish, portuguese"
    }]))]
    pub national_languages: Vec<String>,
    /// How texts longer than one segment are split: `udh8` (user data
    /// header, 8-bit reference), `udh16` (16-bit reference), `sar` (SAR
    /// TLVs) or `messagePayload` (one submit_sm with the message_payload
    /// TLV). Default `udh8`.
    #[serde(default)]
    pub concatenation: Concatenation,
    /// With `concatenation: sar`, how much of an SMS each part fills:
    /// `udh` (the default) leaves room for the concatenation header the
    /// SMSC adds on the radio side (153 GSM 7-bit, 134 Latin-1 or 67 UCS-2
    /// characters per part); `full` fills 160/140/70, only for SMSCs that
    /// document that they take parts of that size. Not allowed with the
    /// other methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sar_part_size: Option<SarPartSize>,
    /// Most segments one message may take, 1 to 255; longer texts are
    /// refused. Default 10.
    #[serde(default = "defaults::max_segments")]
    #[schemars(range(min = 1, max = 255))]
    pub max_segments: u16,
}

impl Default for EncodingOptions {
    fn default() -> Self {
        Self {
            latin1: false,
            national_languages: Vec::new(),
            concatenation: Concatenation::default(),
            sar_part_size: None,
            max_segments: defaults::max_segments(),
        }
    }
}

/// National languages whose shift tables the text engine implements.
pub const NATIONAL_LANGUAGES: &[&str] = &["turkish", "spanish", "portuguese"];

/// One SMSC account: where to connect, how to bind, how fast to send.
///
/// In a cluster the operator spreads the link's `sessions` bind slots over
/// the ready proxy pods, guarding each slot with a Lease so that the
/// number of binds never exceeds `sessions`.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "smsgw.io",
    version = "v1alpha1",
    kind = "SmppLink",
    namespaced,
    status = "SmppLinkStatus",
    shortname = "smppl",
    shortname = "sl",
    category = "smsgw",
    doc = "An SMPP account at an SMSC: where to connect, how to bind, how fast to send. The proxy pods hold its binds.",
    scale(
        spec_replicas_path = ".spec.sessions",
        status_replicas_path = ".status.boundSessions"
    ),
    printcolumn(
        name = "Host",
        type_ = "string",
        json_path = ".spec.host",
        description = "SMSC host"
    ),
    printcolumn(
        name = "Port",
        type_ = "integer",
        json_path = ".spec.port",
        description = "SMSC port"
    ),
    printcolumn(
        name = "Sessions",
        type_ = "integer",
        json_path = ".spec.sessions",
        description = "Binds wanted across all pods"
    ),
    printcolumn(
        name = "Bound",
        type_ = "integer",
        json_path = ".status.boundSessions",
        description = "Binds currently up"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the link is configured and bound"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.password) && has(self.passwordSecretRef))",
        "message": "set either password or passwordSecretRef, not both",
        "fieldPath": ".password"
    },
    {
        "rule": "!has(self.burst) || has(self.rate)",
        "message": "burst needs rate",
        "fieldPath": ".burst"
    },
    {
        "rule": "!(has(self.tlsCa) && has(self.tlsCaSecretRef))",
        "message": "set either tlsCa or tlsCaSecretRef, not both",
        "fieldPath": ".tlsCa"
    },
    {
        "rule": "(has(self.tls) && self.tls) || !(has(self.tlsCa) || has(self.tlsCaSecretRef) || has(self.tlsServerName) || (has(self.tlsInsecureSkipVerify) && self.tlsInsecureSkipVerify))",
        "message": "tlsCa, tlsCaSecretRef, tlsServerName and tlsInsecureSkipVerify need tls: true",
        "fieldPath": ".tls"
    },
    {
        "rule": "!(has(self.tlsInsecureSkipVerify) && self.tlsInsecureSkipVerify) || !(has(self.tlsCa) || has(self.tlsCaSecretRef))",
        "message": "tlsInsecureSkipVerify checks no certificate, so a CA would be ignored: set one or the other",
        "fieldPath": ".tlsInsecureSkipVerify"
    }
]))]
pub struct SmppLinkSpec {
    /// Host name or IP address of the SMSC.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// TCP port of the SMSC, 1 to 65535 (2775 is the usual SMPP port).
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Whether to connect over TLS. The SMSC's certificate is checked
    /// against the system roots plus `tlsCa`/`tlsCaSecretRef`, for
    /// `tlsServerName` (default `host`). Default false.
    #[serde(default)]
    pub tls: bool,
    /// Extra CA certificates to trust for this SMSC besides the system
    /// roots, as an inline PEM bundle. Meant for standalone files; in a
    /// cluster use `tlsCaSecretRef`. Needs `tls: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
    /// Secret key holding a PEM bundle of extra CA certificates to trust
    /// (for example key `ca.crt`), resolved like `passwordSecretRef`. Needs
    /// `tls: true`; excludes `tlsCa`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_secret_ref: Option<SecretKeyRef>,
    /// Name the SMSC's certificate must be valid for, also sent as SNI: a
    /// DNS name or an IP address. Default `host`. Needs `tls: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub tls_server_name: Option<String>,
    /// Accept any certificate from the SMSC, unchecked (traffic is still
    /// encrypted, but anyone on the path can intercept it). For tests and
    /// SMSCs with broken certificates only; the link logs a warning. Needs
    /// `tls: true`; excludes a CA. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_insecure_skip_verify: bool,
    /// system_id sent in the bind: the account name at the SMSC, 1 to 15
    /// characters.
    #[schemars(length(min = 1, max = 15))]
    pub system_id: String,
    /// Password sent in the bind, inline, at most 8 characters (SMPP
    /// limit). Meant for standalone files; in a cluster use
    /// `passwordSecretRef`. At most one of the two may be set; with
    /// neither, the bind carries an empty password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8))]
    pub password: Option<String>,
    /// Secret key holding the bind password (at most 8 characters). The
    /// operator resolves it into the snapshot it pushes to the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// system_type sent in the bind, at most 12 characters; some SMSCs use
    /// it to select a service. Default empty.
    #[serde(default)]
    #[schemars(length(max = 12))]
    pub system_type: String,
    /// How each session binds: `transceiver` (one bind_transceiver that
    /// submits and receives) or `transmitterReceiver` (a bind_transmitter
    /// plus a bind_receiver). Default `transceiver`.
    #[serde(default)]
    pub bind_mode: BindMode,
    /// SMPP interface version announced in the bind: `"3.4"` or `"5.0"`.
    /// Default `"3.4"`.
    #[serde(default)]
    pub interface_version: InterfaceVersion,
    /// Number of sessions (binds) held across all proxy pods together,
    /// 1 to 64; the SMSC's per-account bind limit. Each session is one
    /// bind slot guarded by a Lease; exposed through the scale
    /// subresource (`kubectl scale smppl NAME --replicas N`). Default 1.
    #[serde(default = "defaults::one_u32")]
    #[schemars(range(min = 1, max = 64))]
    pub sessions: u32,
    /// Number of submit_sm PDUs awaiting their response per session, 1 to
    /// 1024. Default 10.
    #[serde(default = "defaults::window")]
    #[schemars(range(min = 1, max = 1024))]
    pub window: u32,
    /// Messages (segments) per second over the whole link, all pods
    /// together, at least 1. Absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rate: Option<u32>,
    /// Messages that may be sent at once above `rate` after a quiet
    /// period (token bucket size). Needs `rate`. Absent means equal to
    /// `rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// How long to wait for the response to a request PDU before counting
    /// it as failed, as a duration string (`5s`, `500ms`). Must be
    /// positive. Default `10s`.
    #[serde(default = "defaults::response_timeout")]
    pub response_timeout: Duration,
    /// This many submit_sm response timeouts in a row on one session mark
    /// it stalled: it takes no new submits at once, is closed and rebinds,
    /// and the other submits awaiting a response on it become unknown at
    /// once. 0 to 1000; 0 leaves stall detection to enquire_link alone.
    /// Default 1.
    #[serde(default = "defaults::one_u32")]
    #[schemars(range(max = 1000))]
    pub stall_after_timeouts: u32,
    /// What becomes of a submit_sm whose session closed (dropped, or closed
    /// as stalled) before the SMSC answered it: `resubmit` it on a healthy
    /// session and mark the message `possible_duplicate`, or `hold` it as
    /// `unknown` for an operator. A submit_sm that timed out on a session
    /// that stays open is always held (a late answer may settle it).
    /// Default `resubmit`.
    #[serde(default)]
    pub unknown_policy: UnknownPolicy,
    /// Suspended: every pod drains and unbinds the link's sessions and
    /// binds none until this is false again; sends to it wait as for a
    /// link that is down. The declarative form of the admin API's stop,
    /// kept in the resource (GitOps). Admin start and restart answer 409
    /// while it is set. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
    /// Who keeps a message's `schedule_delivery_time`: `false` (default)
    /// the gateway, which holds the message (persisted) and submits it
    /// once due; `true` the SMSC, which gets it at once with the time in
    /// the submit_sm (`schedule_delivery_time`, absolute UTC). A pool
    /// leaves it to the SMSC only when every member says so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub schedule_at_smsc: bool,
    /// Interval of enquire_link keep-alives on an idle session, as a
    /// duration string, at least `100ms`. Default `30s`.
    #[serde(default = "defaults::enquire_link_interval")]
    pub enquire_link_interval: Duration,
    /// Delay between reconnect attempts. Default `initial: 1s`, `max: 1m`.
    #[serde(default)]
    pub reconnect: Backoff,
    /// TON/NPI used when a request does not set them. Default source 0/0,
    /// destination 1/1.
    #[serde(default)]
    pub defaults: AddressDefaults,
    /// Character sets and concatenation supported by the SMSC. Default
    /// GSM 03.38 and UCS-2 only, `udh8`, 10 segments at most.
    #[serde(default)]
    pub encoding: EncodingOptions,
    /// Form of the message ids the SMSC returns in submit_sm_resp and
    /// quotes in delivery receipts, so both can be matched: `string`
    /// (compared as is), `hex` or `decimal` (compared as numbers).
    /// Default `string`.
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
        self.validate_tls(&mut errs);
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
        if self.stall_after_timeouts > 1000 {
            errs.push(FieldError::new(
                "spec.stallAfterTimeouts",
                "must be between 0 and 1000",
            ));
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
        if self.encoding.sar_part_size.is_some()
            && self.encoding.concatenation != Concatenation::Sar
        {
            errs.push(FieldError::new(
                "spec.encoding.sarPartSize",
                "applies only to concatenation: sar",
            ));
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

impl SmppLinkSpec {
    fn validate_tls(&self, errs: &mut Vec<FieldError>) {
        if !self.tls {
            for (set, field) in [
                (self.tls_ca.is_some(), "spec.tlsCa"),
                (self.tls_ca_secret_ref.is_some(), "spec.tlsCaSecretRef"),
                (self.tls_server_name.is_some(), "spec.tlsServerName"),
                (self.tls_insecure_skip_verify, "spec.tlsInsecureSkipVerify"),
            ] {
                if set {
                    errs.push(FieldError::new(field, "needs spec.tls: true"));
                }
            }
        }
        if self.tls_ca.is_some() && self.tls_ca_secret_ref.is_some() {
            errs.push(FieldError::new(
                "spec.tlsCa",
                "set either tlsCa or tlsCaSecretRef, not both",
            ));
        }
        if self.tls_insecure_skip_verify
            && (self.tls_ca.is_some() || self.tls_ca_secret_ref.is_some())
        {
            errs.push(FieldError::new(
                "spec.tlsInsecureSkipVerify",
                "checks no certificate, so a CA would be ignored: set one or the other",
            ));
        }
        if let Some(pem) = &self.tls_ca
            && !holds_pem_certificate(pem)
        {
            errs.push(FieldError::new("spec.tlsCa", NO_PEM_CERTIFICATE));
        }
        if let Some(name) = &self.tls_server_name
            && !is_tls_server_name(name)
        {
            errs.push(FieldError::new(
                "spec.tlsServerName",
                format!("{name:?} is not a DNS name or an IP address"),
            ));
        }
    }
}

/// What a CA bundle without any certificate is told.
pub(crate) const NO_PEM_CERTIFICATE: &str =
    "must hold PEM certificates (-----BEGIN CERTIFICATE-----)";

/// Whether `pem` has at least one PEM certificate block (the TLS stack
/// parses it when the link starts).
pub(crate) fn holds_pem_certificate(pem: &str) -> bool {
    pem.contains("-----BEGIN CERTIFICATE-----") && pem.contains("-----END CERTIFICATE-----")
}

/// A DNS name (labels of letters, digits, `-` and `_`, 1 to 63 characters,
/// not starting or ending with `-`) or an IP address.
fn is_tls_server_name(name: &str) -> bool {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
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
            sar_parts: match self.encoding.sar_part_size.unwrap_or_default() {
                SarPartSize::Udh => smsgw_text::SarParts::UdhSized,
                SarPartSize::Full => smsgw_text::SarParts::Full,
            },
        }
    }
}
