//! Query-string parsing shared by the Tempo API handlers: lenient parameters, Go durations,
//! timestamps, size checks, and the plain-text error body Tempo answers with.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::config::SearchConfig;
use crate::error::{Error, Kind};

pub const SECOND: u64 = 1_000_000_000;

/// An error as Tempo's API answers it: plain text, or a bare 404.
pub fn text_error(e: Error) -> Response {
    let status = e.http_status();
    if status == StatusCode::NOT_FOUND {
        return status.into_response();
    }
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{e}\n")).into_response()
}

/// A query engine error as the client's fault (a query that cannot run) or ours.
pub fn query_error(e: spoor_query::Error) -> Error {
    let kind = if e.is_bad_request() { Kind::BadRequest } else { Kind::Internal };
    Error::new(kind, e.to_string()).with_source(e)
}

/// Query-string parameters, decoded leniently: one Grafana version sent `q` unencoded, so raw
/// `{`, `}`, `"` and spaces are accepted, and a `%` that starts no escape stays a `%`.
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(raw: &str) -> Params {
        Params(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (crate::http::percent_decode(k, true), crate::http::percent_decode(v, true))
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A positive integer parameter; absent or empty → None.
    pub fn uint(&self, name: &str) -> Result<Option<u32>, Error> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| Error::bad_request(format!("invalid {name}: {v:?} is not a non-negative integer"))),
        }
    }

    /// `start`/`end` in unix seconds as a nanosecond range (end inclusive to its last ns);
    /// None when neither is given.
    pub fn range(&self, max_hours: u64) -> Result<Option<(u64, u64)>, Error> {
        let (start, end) = (self.uint("start")?.unwrap_or(0), self.uint("end")?.unwrap_or(0));
        if start == 0 && end == 0 {
            return Ok(None);
        }
        if end <= start {
            return Err(Error::bad_request(format!("http parameter start must be before end: {start} >= {end}")));
        }
        if max_hours > 0 && u64::from(end - start) > max_hours * 3600 {
            return Err(Error::bad_request(format!(
                "range specified by start and end exceeds {max_hours}h. received start={start} end={end}"
            )));
        }
        Ok(Some((u64::from(start) * 1_000_000_000, u64::from(end) * 1_000_000_000 + 999_999_999)))
    }
}

/// Go's `time.ParseDuration`: `300ms`, `1.5h`, `2h45m`, units ns us µs ms s m h.
pub fn go_duration(s: &str) -> Option<u64> {
    spoor_process::duration::parse(s).map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `716.666666ms`, `1.5µs`, `0s`. Tempo reports
/// duration attributes this way.
pub fn go_duration_string(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    let frac = |v: u64, digits: u32| -> String {
        let div = 10u64.pow(digits);
        let (whole, rest) = (v / div, v % div);
        if rest == 0 {
            whole.to_string()
        } else {
            let s = format!("{whole}.{rest:0width$}", width = digits as usize);
            s.trim_end_matches('0').to_owned()
        }
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", frac(u, 3));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", frac(u, 6));
    }
    let (h, m) = (u / 3_600_000_000_000, (u / 60_000_000_000) % 60);
    let s = frac(u % 60_000_000_000, 9);
    match (h, m) {
        (0, 0) => format!("{sign}{s}s"),
        (0, m) => format!("{sign}{m}m{s}s"),
        (h, m) => format!("{sign}{h}h{m}m{s}s"),
    }
}

/// Refuses a TraceQL text longer than `search.max_query_expression_size_bytes`.
pub fn check_size(text: &str, cfg: &SearchConfig) -> Result<(), Error> {
    if text.len() > cfg.max_query_expression_size_bytes {
        return Err(Error::bad_request(format!(
            "query is {} bytes, more than max_query_expression_size_bytes ({})",
            text.len(),
            cfg.max_query_expression_size_bytes
        )));
    }
    Ok(())
}

/// Unix seconds (up to 10 digits), nanoseconds (more digits), fractional seconds or RFC3339.
pub fn timestamp(name: &str, v: &str) -> Result<u64, Error> {
    let bad = || Error::bad_request(format!("invalid {name}: {v:?} is not unix seconds, nanoseconds or RFC3339"));
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = v.parse().map_err(|_| bad())?;
        return if v.len() <= 10 { n.checked_mul(SECOND).ok_or_else(bad) } else { Ok(n) };
    }
    // Decimal seconds exactly: a float would round `1700000000.25` to a neighbouring ns.
    if let Some((whole, frac)) = v.split_once('.')
        && !whole.is_empty()
        && whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        let kept = &frac[..frac.len().min(9)];
        let nanos = if kept.is_empty() {
            0
        } else {
            kept.parse::<u64>().map_err(|_| bad())? * 10u64.pow(9 - kept.len() as u32)
        };
        return whole.parse::<u64>().ok().and_then(|s| s.checked_mul(SECOND)?.checked_add(nanos)).ok_or_else(bad);
    }
    if let Ok(secs) = v.parse::<f64>() {
        return if secs.is_finite() && secs >= 0.0 && secs < u64::MAX as f64 / SECOND as f64 {
            Ok((secs * SECOND as f64).round() as u64)
        } else {
            Err(bad())
        };
    }
    spoor_model::time::parse_rfc3339(v).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_query_strings() {
        let p = Params::parse("q={ name = \"a b\" }&limit=5&x=%7B%zz&y=a+b");
        assert_eq!(p.get("q"), Some("{ name = \"a b\" }"));
        assert_eq!(p.get("x"), Some("{%zz"));
        assert_eq!(p.get("y"), Some("a b"));
        assert_eq!(p.uint("limit").unwrap(), Some(5));
    }

    #[test]
    fn go_durations_both_ways() {
        assert_eq!(go_duration("100ms"), Some(100_000_000));
        assert_eq!(go_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(go_duration("2µs"), Some(2_000));
        assert_eq!(go_duration("10"), None);
        assert_eq!(go_duration_string(716_666_666), "716.666666ms");
        assert_eq!(go_duration_string(1_500_000_000), "1.5s");
        assert_eq!(go_duration_string(3_723_500_000_000), "1h2m3.5s");
        assert_eq!(go_duration_string(1_500), "1.5µs");
        assert_eq!(go_duration_string(0), "0s");
        assert_eq!(go_duration_string(120_000_000_000), "2m0s");
    }

    #[test]
    fn timestamps_in_every_form() {
        assert_eq!(timestamp("t", "1700000000").unwrap(), 1_700_000_000 * SECOND);
        assert_eq!(timestamp("t", "1700000000000000000").unwrap(), 1_700_000_000 * SECOND);
        assert_eq!(timestamp("t", "1700000000.25").unwrap(), 1_700_000_000 * SECOND + SECOND / 4);
        assert_eq!(timestamp("t", "2023-11-14T22:13:20Z").unwrap(), 1_700_000_000 * SECOND);
        assert_eq!(timestamp("t", "2023-11-14T23:13:20.5+01:00").unwrap(), 1_700_000_000 * SECOND + SECOND / 2);
        assert_eq!(timestamp("t", "1970-01-01T00:00:00Z").unwrap(), 0);
        for bad in ["soon", "-1", "2023-13-14T22:13:20Z", "2023-11-14T22:13:20", "NaN"] {
            assert!(timestamp("t", bad).is_err(), "{bad}");
        }
    }
}
