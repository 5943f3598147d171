//! Query parameters as Grafana sends them: time range as epoch
//! milliseconds (`${__from}`, `${__to}`) or RFC 3339, the interval as
//! `$__interval` (`30s`, `5m`, `1h`, `1d`, `1w`) or `$__interval_ms`, and
//! the panel's max data points. Every parse error names the parameter.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::error::ApiError;

fn bad(param: &str, value: &str, expected: &str) -> ApiError {
    ApiError::BadRequest(format!("`{param}={value}`: expected {expected}"))
}

/// An instant: epoch milliseconds, RFC 3339, or a date (UTC midnight).
pub fn instant(param: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    let v = value.trim();
    if let Ok(ms) = v.parse::<i64>() {
        return DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| bad(param, value, "epoch milliseconds in range"));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    Err(bad(
        param,
        value,
        "epoch milliseconds (Grafana's ${__from}), RFC 3339 or YYYY-MM-DD",
    ))
}

/// `[from, to)`, both required, from before to, at most `max_days` long.
pub fn range(
    from: Option<&str>,
    to: Option<&str>,
    max_days: i64,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let from = instant(
        "from",
        from.ok_or_else(|| ApiError::BadRequest("`from` is required (e.g. ${__from})".into()))?,
    )?;
    let to = instant(
        "to",
        to.ok_or_else(|| ApiError::BadRequest("`to` is required (e.g. ${__to})".into()))?,
    )?;
    if from >= to {
        return Err(ApiError::BadRequest(format!(
            "`from` ({from}) must be before `to` ({to})"
        )));
    }
    if to - from > Duration::days(max_days) {
        return Err(ApiError::BadRequest(format!(
            "the range is longer than {max_days} days"
        )));
    }
    Ok((from, to))
}

/// Optional `from` and `to` of a listing.
pub type Bounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// Optional `from` / `to` bounds of a listing.
pub fn bounds(from: Option<&str>, to: Option<&str>) -> Result<Bounds, ApiError> {
    Ok((
        from.map(|v| instant("from", v)).transpose()?,
        to.map(|v| instant("to", v)).transpose()?,
    ))
}

/// A listing's `limit`: `default` when absent, 1 ..= 5,000.
pub fn limit(value: Option<i64>, default: i64) -> Result<i64, ApiError> {
    let limit = value.unwrap_or(default);
    if (1..=5000).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadRequest(format!(
            "`limit={limit}`: expected 1..5000"
        )))
    }
}

/// A step like Grafana's `$__interval`: `500ms`, `30s`, `5m`, `1h`, `1d`, `1w`.
pub fn interval(param: &str, value: &str) -> Result<Duration, ApiError> {
    let v = value.trim();
    let split = v
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| bad(param, value, "a number with a unit (30s, 5m, 1h, 1d, 1w)"))?;
    let (n, unit) = v.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| bad(param, value, "a number with a unit (30s, 5m, 1h, 1d, 1w)"))?;
    let d = match unit {
        "ms" => Duration::milliseconds(n),
        "s" => Duration::seconds(n),
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        "w" => Duration::weeks(n),
        _ => return Err(bad(param, value, "a unit of ms, s, m, h, d or w")),
    };
    if d <= Duration::zero() {
        return Err(bad(param, value, "a positive interval"));
    }
    Ok(d)
}

/// The step a series answer uses: the requested interval (at least a
/// minute), coarsened so that the range holds at most `max_points` steps
/// even when they are aligned to a fixed origin (one partial step more),
/// and rounded up to a whole number of minutes.
pub fn step(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    requested: Option<Duration>,
    max_points: usize,
) -> Duration {
    let span = (to - from).num_seconds().max(1);
    let slots = max_points.saturating_sub(1).max(1) as i64;
    let by_points = (span + slots - 1) / slots;
    let want = requested.map_or(0, |d| d.num_seconds());
    let secs = want.max(by_points).max(60);
    Duration::seconds((secs + 59) / 60 * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grafana_style_parameters() {
        let t = instant("from", "1767225600000").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert_eq!(instant("from", "2026-01-01T08:00:00+08:00").unwrap(), t);
        assert_eq!(instant("from", "2026-01-01").unwrap(), t);
        let e = instant("from", "yesterday").unwrap_err().to_string();
        assert!(e.contains("`from=yesterday`"), "{e}");
        assert_eq!(interval("interval", "1h").unwrap(), Duration::hours(1));
        assert_eq!(interval("interval", "30s").unwrap(), Duration::seconds(30));
        assert!(interval("interval", "0s").is_err());
        assert!(interval("interval", "5y").is_err());
        assert!(interval("interval", "h").is_err());
    }

    #[test]
    fn ranges_are_checked() {
        assert!(range(Some("2026-01-02"), Some("2026-01-01"), 400).is_err());
        assert!(range(None, Some("2026-01-01"), 400).is_err());
        assert!(range(Some("2020-01-01"), Some("2026-01-01"), 400).is_err());
        assert!(range(Some("2025-01-01"), Some("2026-01-01"), 400).is_ok());
    }

    #[test]
    fn a_year_is_coarsened_to_the_max_points() {
        let (from, to) = range(Some("2025-01-01"), Some("2026-01-01"), 400).unwrap();
        // Hourly requested, 1,000 points allowed: 8,760 h → ~8.8-hour steps.
        let s = step(from, to, Some(Duration::hours(1)), 1000);
        assert_eq!(s, Duration::minutes(527));
        // Aligned steps: at most one partial step more than the quotient.
        assert!((to - from).num_seconds() / s.num_seconds() < 1000);
        // Few points needed: the requested interval stands.
        assert_eq!(
            step(from, to, Some(Duration::hours(24)), 1000),
            Duration::hours(24)
        );
        // Never below a minute.
        assert_eq!(
            step(from, from + Duration::minutes(10), None, 1000),
            Duration::minutes(1)
        );
    }
}
