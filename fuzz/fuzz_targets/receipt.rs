//! Receipt text, `stat:` words, SMPP dates and message-id normalisation,
//! fed arbitrary text: nothing panics; every field found is a non-empty,
//! whitespace-free piece of the input; a date that parses re-formats to the
//! digits it came from; normalisation is idempotent.

#![no_main]

use std::time::UNIX_EPOCH;

use libfuzzer_sys::fuzz_target;
use smsgw_smpp::{
    IdFormat,
    deliver::{TextReceipt, format_smpp_date, parse_smpp_date, state_from_text},
    normalize_message_id,
};

fn check_date(s: &str) {
    if let Some(t) = parse_smpp_date(s) {
        assert!(t >= UNIX_EPOCH, "{s:?}");
        let again = format_smpp_date(t, true);
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
