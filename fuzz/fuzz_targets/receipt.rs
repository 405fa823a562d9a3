//! Receipt text, `stat:` words, SMPP dates and message-id normalisation,
//! fed arbitrary text: nothing panics; every field found is a non-empty,
//! whitespace-free piece of the input; a date that parses re-formats to the
//! digits it came from; normalisation is idempotent.

#![no_main]

use std::time::UNIX_EPOCH;

use libfuzzer_sys::fuzz_target;
use smsgw_smpp::{
    IdFormat,
    deliver::{TextReceipt, parse_smpp_date, state_from_text},
    normalize_message_id,
};

/// `YYMMDDhhmmss` of a UTC instant after 2000 (civil_from_days, Hinnant).
fn smpp_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{:02}{m:02}{d:02}{:02}{:02}{:02}",
        y - 2000,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn check_date(s: &str) {
    if let Some(t) = parse_smpp_date(s) {
        let secs = t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
        let again = smpp_date(secs);
        // Day 31 of a 30-day month (and Feb 29-31) roll over, like the
        // SMSCs that send them; everything else must format back.
        let day: u32 = s[4..6].parse().unwrap();
        let sec: u32 = if s.len() == 12 {
            s[10..12].parse().unwrap()
        } else {
            0
        };
        if day <= 28 && sec < 60 {
            let want = if s.len() == 10 {
                format!("{s}00")
            } else {
                s.to_owned()
            };
            assert_eq!(again, want, "{s:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let r = TextReceipt::parse(&text);
    for v in [r.id, r.submit_date, r.done_date, r.stat, r.err]
        .into_iter()
        .flatten()
    {
        assert!(!v.is_empty());
        assert!(!v.contains(char::is_whitespace), "{v:?}");
        assert!(text.contains(v));
    }
    if let Some(s) = r.stat {
        let _ = state_from_text(s);
    }
    for d in [r.submit_date, r.done_date].into_iter().flatten() {
        check_date(d);
    }
    check_date(&text);
    let _ = state_from_text(&text);
    for f in [IdFormat::Hex, IdFormat::Decimal, IdFormat::Opaque] {
        let n = normalize_message_id(&text, f);
        if f != IdFormat::Hex {
            assert_eq!(normalize_message_id(&n, f), n, "{f:?} {text:?}");
        }
    }
});
