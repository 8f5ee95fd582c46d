//! Wall-clock time as unix nanoseconds, and the calendar conversions the wire formats need
//! (RFC 3339 in query parameters and JSON, HTTP-dates in `Retry-After`), without a time crate.
//!
//! Dates are proleptic Gregorian and UTC throughout; the day arithmetic is Howard Hinnant's
//! (`days_from_civil` / `civil_from_days` in his "chrono-Compatible Low-Level Date Algorithms").

use std::time::{SystemTime, UNIX_EPOCH};

const NANOS_PER_SECOND: u64 = 1_000_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// Unix nanoseconds now; 0 when the clock is set before 1970 (a broken clock must not panic).
pub fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Unix milliseconds now; 0 when the clock is set before 1970.
pub fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Days since 1970-01-01 of a date (`month` 1–12, `day` 1–31, not checked against the month:
/// 31 February is 2 or 3 March). Exact for years within ±10^13, far beyond any timestamp.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month 1–12, day 1–31) of a day counted from 1970-01-01 (negative before).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// `2024-05-01T12:00:00Z` or `2024-05-01T12:00:00.5+02:00` as unix nanoseconds; `None` when it
/// is not such a timestamp or lies before 1970. The separator may be `T`, `t` or a space and
/// the zone `Z`, `z` or `±hh:mm`; fractional digits past nanoseconds are dropped, and a leap
/// second (`:60`) reads as the first second of the next minute.
pub fn parse_rfc3339(v: &str) -> Option<u64> {
    let b = v.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = v.get(r)?;
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Bytes 17..19 are ASCII digits, so 19 is a character boundary.
    let mut rest = &v[19..];
    let mut nanos = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let kept = &frac[..digits.min(9)];
        nanos = kept.parse::<i64>().ok()? * 10i64.pow(9 - kept.len() as u32);
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let (h, m) = (rest[1..3].parse::<i64>().ok()?, rest[4..6].parse::<i64>().ok()?);
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month as u32, day as u32);
    let secs = days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(secs).ok()?.checked_mul(NANOS_PER_SECOND)?.checked_add(nanos as u64)
}

/// Unix nanoseconds as RFC 3339 in UTC: `2024-02-29T12:34:56Z`, with a fraction only when
/// there is one and without its trailing zeros (`…:56.5Z`), as Go's `RFC3339Nano` writes it.
/// [`parse_rfc3339`] reads it back exactly.
pub fn format_rfc3339(ns: u64) -> String {
    let secs = ns / NANOS_PER_SECOND;
    let frac = ns % NANOS_PER_SECOND;
    // u64 nanoseconds end in 2554: the day count always fits.
    let (year, month, day) = civil_from_days((secs / SECONDS_PER_DAY as u64) as i64);
    let rem = secs % SECONDS_PER_DAY as u64;
    let mut out = format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    if frac != 0 {
        let digits = format!("{frac:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Unix seconds of an HTTP-date: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), and the
/// obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`)
/// forms recipients must accept (RFC 9110 §5.6.7). The weekday is not checked; dates before
/// 1970 give `None`.
pub fn parse_http_date(value: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = |m: &str| MONTHS.iter().position(|&n| n == m).map(|i| i as u32 + 1);
    let words: Vec<&str> = value.split_whitespace().collect();
    let (day, mon, year, time): (u32, u32, i64, &str) = match words.as_slice() {
        [_, d, m, y, t, "GMT"] => (d.parse().ok()?, month(m)?, y.parse().ok()?, *t),
        [_, dmy, t, "GMT"] => {
            let mut it = dmy.split('-');
            let (d, m, y) = (it.next()?, it.next()?, it.next()?);
            let y: i64 = y.parse().ok()?;
            // Two-digit years: RFC 9110 says to take the one that is not more than 50 years ahead.
            let y = if y < 70 {
                2000 + y
            } else if y < 100 {
                1900 + y
            } else {
                y
            };
            (d.parse().ok()?, month(m)?, y, *t)
        }
        [_, m, d, t, y] => (d.parse().ok()?, month(m)?, y.parse().ok()?, *t),
        _ => return None,
    };
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, mi, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 || year < 1970 {
        return None;
    }
    // The header comes from a peer: a year whose seconds overflow u64 is refused, not wrapped
    // (it also keeps `days_from_civil` far inside its range).
    if year > 1_000_000_000_000 {
        return None;
    }
    let days = days_from_civil(year, mon, day) as u64;
    days.checked_mul(SECONDS_PER_DAY as u64)?.checked_add(h * 3600 + mi * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NANOS_PER_SECOND;

    #[test]
    fn days_from_civil_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(1600, 2, 29), -135_081);
        assert_eq!(days_from_civil(1, 1, 1), -719_162);
        assert_eq!(days_from_civil(9999, 12, 31), 2_932_896);
    }

    #[test]
    fn civil_from_days_known_dates_and_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-719_162), (1, 1, 1));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
        for days in (-800_000..3_000_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-05-01T12:00:00Z"), Some(1_714_564_800 * S));
        assert_eq!(parse_rfc3339("2024-05-01t12:00:00z"), Some(1_714_564_800 * S));
        assert_eq!(parse_rfc3339("2024-05-01 12:00:00Z"), Some(1_714_564_800 * S));
        assert_eq!(parse_rfc3339("2024-05-01T12:00:00.5+02:00"), Some((1_714_564_800 - 7200) * S + S / 2));
        assert_eq!(parse_rfc3339("2024-05-01T12:00:00-01:30"), Some((1_714_564_800 + 5400) * S));
        assert_eq!(parse_rfc3339("2024-05-01T12:00:00.123456789123Z"), Some(1_714_564_800 * S + 123_456_789));
        assert_eq!(parse_rfc3339("2016-12-31T23:59:60Z"), Some(1_483_228_800 * S));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
    }

    #[test]
    fn refuses_what_is_not_rfc3339() {
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00:00+0200",
            "2024-05-01T12:00:00.Z",
            "2024-13-01T12:00:00Z",
            "2024-05-00T12:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:60:00Z",
            "2024/05/01T12:00:00Z",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00+00:01",
            "2024-05-01T12:00:00Zjunk",
            "2024-05-01T12:00:00\u{e9}Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_709_210_096 * S), "2024-02-29T12:34:56Z");
        assert_eq!(format_rfc3339(1_709_210_096 * S + S / 2), "2024-02-29T12:34:56.5Z");
        assert_eq!(format_rfc3339(1), "1970-01-01T00:00:00.000000001Z");
        assert_eq!(format_rfc3339(4_102_444_799 * S), "2099-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(u64::MAX), "2554-07-21T23:34:33.709551615Z");
        for ns in [0, 1, 999_999_999, 1_709_210_096 * S + 120_000, u64::MAX] {
            assert_eq!(parse_rfc3339(&format_rfc3339(ns)), Some(ns));
        }
    }

    #[test]
    fn parses_http_dates() {
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(784_111_777));
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("Tue, 29 Feb 2028 23:59:59 GMT"), Some(1_835_481_599));
        assert_eq!(parse_http_date("Thursday, 01-Jan-70 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(parse_http_date("Wed, 31 Dec 1969 23:59:59 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nox 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 99999999999999999 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("tomorrow"), None);
    }

    #[test]
    fn clocks_read_unix_time() {
        // 2020-01-01: any working clock is past it.
        assert!(now_nanos() > 1_577_836_800 * S);
        assert!(now_millis() > 1_577_836_800_000);
    }
}
