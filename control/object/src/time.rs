//! Swift's timestamps: seconds since the epoch with five decimals, kept as
//! integers in units of 10 µs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Units of a timestamp per second.
pub const PER_SEC: i64 = 100_000;

/// Now, as a timestamp.
pub fn now() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    d.as_secs() as i64 * PER_SEC + (d.subsec_micros() / 10) as i64
}

/// Now, in whole seconds.
pub fn now_secs() -> i64 {
    now() / PER_SEC
}

/// `X-Timestamp`'s form: `1700000000.12345`.
pub fn x_timestamp(t: i64) -> String {
    format!("{:010}.{:05}", t / PER_SEC, t % PER_SEC)
}

/// `Last-Modified`: the timestamp rounded up to the second, as an HTTP date.
pub fn http_date(t: i64) -> String {
    let secs = (t + PER_SEC - 1) / PER_SEC;
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
}

/// A listing's `last_modified`: `2024-01-02T03:04:05.123450`.
pub fn iso(t: i64) -> String {
    use chrono::{Datelike, Timelike};
    let secs = t / PER_SEC;
    let micros = (t % PER_SEC) * 10;
    let dt = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    // Written field by field: a listing formats thousands of these.
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        micros
    )
}

/// An HTTP date (`If-Modified-Since`), in whole seconds; `None` when it
/// does not parse (and the header is then ignored, as Swift does).
pub fn parse_http_date(s: &str) -> Option<i64> {
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let t = 1_700_000_000 * PER_SEC + 12_345;
        assert_eq!(x_timestamp(t), "1700000000.12345");
        assert_eq!(iso(t), "2023-11-14T22:13:20.123450");
        assert_eq!(http_date(t), "Tue, 14 Nov 2023 22:13:21 GMT");
        assert_eq!(
            http_date(1_700_000_000 * PER_SEC),
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
        assert_eq!(
            parse_http_date("Tue, 14 Nov 2023 22:13:21 GMT"),
            Some(1_700_000_001)
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }
}
