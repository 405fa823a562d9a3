//! SMSC message ids and their normalisation for receipt correlation.
//!
//! SMSCs disagree with themselves: an id may come back in `submit_sm_resp` as
//! hex (`"7B"`) and in the receipt as decimal (`"123"`, or `"0000000123"`),
//! in upper or lower case. Correlation therefore never uses the raw string but
//! a *normalised key*: numeric ids become their decimal value without leading
//! zeros; opaque ids are trimmed and lower-cased.

use serde::Deserialize;

/// How an SMSC spells its message ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdFormat {
    /// Hexadecimal digits, any case, possibly zero padded (`"00007B"`).
    Hex,
    /// Decimal digits, possibly zero padded (`"0123"`).
    Decimal,
    /// Anything else (UUIDs, alphanumerics): compared trimmed and lower-cased.
    #[default]
    Opaque,
}

/// A message id as the SMSC sent it, and the key used for correlation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SmscMessageId {
    /// Exactly as received.
    pub raw: String,
    /// [`normalize_message_id`] of `raw`.
    pub normalized: String,
}

impl SmscMessageId {
    /// Normalises `raw` read in `format`.
    pub fn new(raw: impl Into<String>, format: IdFormat) -> Self {
        let raw = raw.into();
        let normalized = normalize_message_id(&raw, format);
        Self { raw, normalized }
    }
}

/// Normalises an SMSC message id to a correlation key.
///
/// * [`IdFormat::Decimal`]: leading zeros dropped (`"0123"` → `"123"`).
/// * [`IdFormat::Hex`]: read as a hexadecimal number and written in decimal
///   (`"7B"`, `"7b"`, `"007B"` → `"123"`), so a hex `submit_sm_resp` id and a
///   decimal receipt id of the same message meet at the same key. Hex ids
///   longer than 128 bits become lower-case hex without leading zeros,
///   prefixed with `x`.
/// * [`IdFormat::Opaque`], or an id that does not parse in the declared
///   format: trimmed (whitespace and NULs) and lower-cased.
pub fn normalize_message_id(raw: &str, format: IdFormat) -> String {
    let s = raw.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    match format {
        IdFormat::Decimal if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            let t = s.trim_start_matches('0');
            if t.is_empty() { "0".into() } else { t.into() }
        }
        IdFormat::Hex if !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            let t = s.trim_start_matches('0');
            if t.is_empty() {
                return "0".into();
            }
            match u128::from_str_radix(t, 16) {
                Ok(v) => v.to_string(),
                Err(_) => format!("x{}", t.to_ascii_lowercase()),
            }
        }
        _ => s.to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_with_leading_zeros_and_hex_meet_at_the_same_key() {
        assert_eq!(normalize_message_id("0123", IdFormat::Decimal), "123");
        assert_eq!(normalize_message_id("7B", IdFormat::Hex), "123");
        assert_eq!(normalize_message_id("007b", IdFormat::Hex), "123");
        assert_eq!(normalize_message_id("0000", IdFormat::Decimal), "0");
    }

    #[test]
    fn opaque_ids_are_trimmed_and_lowercased() {
        assert_eq!(
            normalize_message_id(" AbC-12\0", IdFormat::Opaque),
            "abc-12"
        );
        // Not parseable in the declared format: falls back to opaque.
        assert_eq!(normalize_message_id("XYZ", IdFormat::Hex), "xyz");
    }

    #[test]
    fn very_long_hex_ids_do_not_overflow() {
        let id = "0".repeat(3) + &"F".repeat(40);
        assert_eq!(
            normalize_message_id(&id, IdFormat::Hex),
            format!("x{}", "f".repeat(40))
        );
    }
}
