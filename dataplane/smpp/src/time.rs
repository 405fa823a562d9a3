//! SMPP time fields (SMPP 3.4 §7.1.1): `schedule_delivery_time` and
//! `validity_period` as absolute UTC times or relative durations.

use crate::deliver::{format_smpp_date, parse_smpp_date};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An absolute SMPP time in UTC, `YYMMDDhhmmsstnnp` with `t` the tenths
/// of a second, `nn` = `00` quarter hours from UTC and `p` = `+`.
pub fn absolute(t: SystemTime) -> String {
    let tenths = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_millis() / 100);
    format!("{}{tenths}00+", format_smpp_date(t, true))
}

/// A relative SMPP time, `YYMMDDhhmmss000R`: whole days (up to 99), then
/// hours, minutes and seconds; a duration of 100 days or more is written
/// in years of 365 days and months of 30 (as SMSCs read them), at most 99
/// years. Sub-second parts are dropped.
pub fn relative(d: Duration) -> String {
    let secs = d.as_secs();
    let (mut days, rem) = (secs / 86_400, secs % 86_400);
    let (mut years, mut months) = (0, 0);
    if days > 99 {
        years = (days / 365).min(99);
        days -= years * 365;
        months = days / 30;
        days %= 30;
        if months > 11 {
            // Only when the years were capped at 99.
            months = 11;
            days = 29;
        }
    }
    format!(
        "{years:02}{months:02}{days:02}{:02}{:02}{:02}000R",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Reads an SMPP time back: an absolute one as the instant it names
/// (honouring its offset), a relative one as `now` plus its duration
/// (years of 365 days, months of 30). `None` when it is neither (empty
/// included).
pub fn parse(s: &str, now: SystemTime) -> Option<SystemTime> {
    if s.len() != 16 || !s.is_char_boundary(12) {
        return None;
    }
    let (date, tail) = s.split_at(12);
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if !digits(date) || !digits(&tail[..3]) {
        return None;
    }
    let n = |i: usize| date[i..i + 2].parse::<u64>().ok();
    match tail.as_bytes()[3] {
        b'R' => {
            let secs = n(0)? * 365 * 86_400
                + n(2)? * 30 * 86_400
                + n(4)? * 86_400
                + n(6)? * 3600
                + n(8)? * 60
                + n(10)?;
            now.checked_add(Duration::from_secs(secs))
        }
        sign @ (b'+' | b'-') => {
            let at = parse_smpp_date(date)?;
            let tenths = u64::from(tail.as_bytes()[0] - b'0');
            let offset = Duration::from_secs(tail[1..3].parse::<u64>().ok()? * 15 * 60);
            let local = at + Duration::from_millis(tenths * 100);
            // The time is local to the offset: UTC = local - offset.
            if sign == b'+' {
                local.checked_sub(offset)
            } else {
                local.checked_add(offset)
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absolute_time_is_utc_with_tenths_and_reads_back() {
        // 2026-12-07T08:30:05.250Z
        let t = UNIX_EPOCH + Duration::from_millis(1_796_632_205_250);
        assert_eq!(absolute(t), "261207083005200+");
        let back = parse(&absolute(t), UNIX_EPOCH).unwrap();
        assert_eq!(back, UNIX_EPOCH + Duration::from_millis(1_796_632_205_200));
        // The same instant written one hour east of UTC.
        assert_eq!(parse("261207093005204+", UNIX_EPOCH), Some(back));
        assert_eq!(parse("261207073005204-", UNIX_EPOCH), Some(back));
    }

    #[test]
    fn a_relative_time_counts_days_hours_minutes_and_seconds() {
        assert_eq!(relative(Duration::from_secs(60)), "000000000100000R");
        assert_eq!(
            relative(Duration::from_secs(7 * 86_400)),
            "000007000000000R"
        );
        assert_eq!(
            relative(Duration::from_secs(86_400 + 2 * 3600 + 3 * 60 + 4)),
            "000001020304000R"
        );
        assert_eq!(
            relative(Duration::from_secs(400 * 86_400)),
            "010105000000000R"
        );
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        for secs in [60, 3_600, 7 * 86_400, 99 * 86_400 + 1, 400 * 86_400] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse(&relative(d), now), Some(now + d), "{secs} s");
        }
        assert_eq!(parse("", now), None);
        assert_eq!(parse("000000000100000X", now), None);
        assert_eq!(parse("0000000001000002", now), None);
    }
}
