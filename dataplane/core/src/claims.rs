//! Source addresses an app registered through the API claims for its
//! mobile-originated (MO) messages: an E.164 number, a short code, or a
//! keyword on one of them.
//!
//! The rule, safe for a gateway shared by many tenants:
//! - a claim is unique: the store takes it with a put-if-absent, so of two
//!   apps (on any pods) claiming one address exactly one gets it and the
//!   other a conflict;
//! - an address a managed `User` resource lists in `sourceAddresses` cannot
//!   be claimed at all (the resource owns the whole address, keywords
//!   included), and MO routing consults those resources first;
//! - a claim is [`ClaimStatus::Pending`] until an admin approves it; only an
//!   approved claim receives MO. An admin rejects by deleting it, an app
//!   releases its own the same way;
//! - an app holds at most [`MAX_CLAIMS_PER_APP`] claims, pending or not.
//!
//! A keyword claim (`4444` + `STOP`) takes the MO to that address whose
//! first word is the keyword (letters and digits, case-insensitive); the
//! claim of the bare address takes the rest. Both may belong to different
//! apps.

use serde::{Deserialize, Serialize};

/// Claims one app may hold at once, pending and approved together.
pub const MAX_CLAIMS_PER_APP: usize = 50;

/// Longest keyword, in characters.
pub const MAX_KEYWORD_LEN: usize = 20;

/// What kind of address a claim is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AddressKind {
    /// An E.164 number (7 to 15 digits, written with or without `+`).
    Number,
    /// A short code: 3 to 6 digits, no `+`.
    ShortCode,
}

impl AddressKind {
    /// The word the APIs use: `number` or `short_code`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Number => "number",
            Self::ShortCode => "short_code",
        }
    }
}

/// Where a claim stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ClaimStatus {
    /// Waiting for an admin; receives nothing yet.
    Pending,
    /// Approved by an admin: MO to the address reaches the app.
    Approved,
}

impl ClaimStatus {
    /// The word the APIs use: `pending` or `approved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
        }
    }
}

/// A claim as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressClaim {
    /// The address as digits only (no `+`).
    pub address: String,
    /// Number or short code.
    pub kind: AddressKind,
    /// Upper-case keyword, when the claim is on a keyword of the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword: Option<String>,
    /// The claiming app.
    pub app_id: String,
    /// The user whose app it is.
    pub user_id: String,
    /// Pending or approved.
    pub status: ClaimStatus,
    /// When it was claimed, Unix seconds.
    pub created_at: u64,
    /// When an admin approved it, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<u64>,
}

impl AddressClaim {
    /// Its unique key and id: [`claim_id`] of address and keyword.
    pub fn id(&self) -> String {
        claim_id(&self.address, self.keyword.as_deref())
    }
}

/// The id (and store key) of a claim: the digits, or `digits:KEYWORD`.
pub fn claim_id(address: &str, keyword: Option<&str>) -> String {
    match keyword {
        Some(k) => format!("{address}:{k}"),
        None => address.to_owned(),
    }
}

/// Why a claim request is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimInputError {
    /// The address is neither a short code nor an E.164 number.
    #[error(
        "address {0:?} is neither a short code (3 to 6 digits) nor an E.164 number (7 to 15 digits, optional '+')"
    )]
    Address(String),
    /// The keyword is empty, too long, or not only letters and digits.
    #[error("keyword {0:?} must be 1 to 20 ASCII letters or digits")]
    Keyword(String),
    /// A claim id that is not `digits` or `digits:KEYWORD`.
    #[error("claim id {0:?} is not an address or address:KEYWORD")]
    Id(String),
}

impl ClaimInputError {
    /// The request field at fault (`address`, `keyword`, `claim_id`).
    pub fn field(&self) -> &'static str {
        match self {
            Self::Address(_) => "address",
            Self::Keyword(_) => "keyword",
            Self::Id(_) => "claim_id",
        }
    }
}

/// The digits and kind of a claimable address. A short code is 3 to 6
/// digits without `+`; anything else must be an E.164 number of 7 to 15
/// digits (spaces, dashes and a leading `+` or `00` allowed).
pub fn parse_address(raw: &str) -> Result<(String, AddressKind), ClaimInputError> {
    let t = raw.trim();
    if (3..=6).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()) {
        return Ok((t.to_owned(), AddressKind::ShortCode));
    }
    match crate::policy::normalize_e164(t, None) {
        Some(d) if d.len() >= 7 && !d.starts_with('0') => Ok((d, AddressKind::Number)),
        _ => Err(ClaimInputError::Address(raw.to_owned())),
    }
}

/// A keyword upper-cased, or why it is not one.
pub fn parse_keyword(raw: &str) -> Result<String, ClaimInputError> {
    let t = raw.trim();
    if t.is_empty() || t.len() > MAX_KEYWORD_LEN || !t.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ClaimInputError::Keyword(raw.to_owned()));
    }
    Ok(t.to_ascii_uppercase())
}

/// Address digits and keyword of a claim id ([`claim_id`]).
pub fn parse_claim_id(id: &str) -> Result<(String, Option<String>), ClaimInputError> {
    let bad = || ClaimInputError::Id(id.to_owned());
    let (addr, kw) = match id.split_once(':') {
        Some((a, k)) => (a, Some(parse_keyword(k).map_err(|_| bad())?)),
        None => (id, None),
    };
    if addr.is_empty() || addr.len() > 15 || !addr.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok((addr.to_owned(), kw))
}

/// The keyword an MO text would match: its first word (the leading run of
/// ASCII letters and digits after white space), upper-cased; `None` when
/// the text does not start with one or it is longer than a keyword can be.
pub fn first_word(text: &str) -> Option<String> {
    let t = text.trim_start();
    let end = t
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(t.len());
    (1..=MAX_KEYWORD_LEN)
        .contains(&end)
        .then(|| t[..end].to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_codes_and_numbers_parse_to_digits_and_anything_else_is_refused() {
        assert_eq!(
            parse_address(" 4444 ").unwrap(),
            ("4444".into(), AddressKind::ShortCode)
        );
        assert_eq!(
            parse_address("+44 7700 900123").unwrap(),
            ("447700900123".into(), AddressKind::Number)
        );
        assert_eq!(
            parse_address("447700900123").unwrap().1,
            AddressKind::Number
        );
        for bad in [
            "",
            "12",
            "ACME",
            "+12",
            "0612345678",
            "1234567890123456",
            "44x4",
        ] {
            assert!(
                matches!(parse_address(bad), Err(ClaimInputError::Address(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn api_words_are_the_serde_names() {
        for k in [AddressKind::Number, AddressKind::ShortCode] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for s in [ClaimStatus::Pending, ClaimStatus::Approved] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn keywords_are_upper_cased_letters_and_digits() {
        assert_eq!(parse_keyword("stop").unwrap(), "STOP");
        assert_eq!(parse_keyword("Win2").unwrap(), "WIN2");
        for bad in ["", "two words", "caf\u{e9}", &"A".repeat(21), "a-b"] {
            assert!(parse_keyword(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn claim_ids_round_trip() {
        assert_eq!(claim_id("4444", Some("STOP")), "4444:STOP");
        assert_eq!(
            parse_claim_id("4444:stop").unwrap(),
            ("4444".into(), Some("STOP".into()))
        );
        assert_eq!(parse_claim_id("4444").unwrap(), ("4444".into(), None));
        for bad in ["", ":STOP", "44a4", "4444:", "4444:a b"] {
            assert!(parse_claim_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_first_word_of_a_text_is_its_keyword() {
        assert_eq!(first_word("  stop please").as_deref(), Some("STOP"));
        assert_eq!(first_word("Stop.").as_deref(), Some("STOP"));
        assert_eq!(first_word("WIN2 now").as_deref(), Some("WIN2"));
        assert_eq!(first_word("¿hola?"), None);
        assert_eq!(first_word(""), None);
        assert_eq!(first_word(&"A".repeat(21)), None);
    }
}
