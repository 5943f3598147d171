//! Query parameters as Grafana sends them: time range as epoch
//! milliseconds (`${__from}`, `${__to}`) or RFC 3339, the interval as
//! `$__interval` (`30s`, `5m`, `1h`, `1d`, `1w`) or `$__interval_ms`, and
//! the panel's max data points. Every parse error names the parameter.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::error::ApiError;

fn bad(param: &str, value: &str, expected: &str) -> ApiError {
    ApiError::BadRequest(format!("`{param}={value}`: expected {expected}"))
}

/// Earliest instant a parameter may name: 1970-01-01 (epoch 0).
const EARLIEST_MS: i64 = 0;
/// Latest instant a parameter may name: 2200-01-01. Far beyond any data,
/// and far enough from chrono's limits that every step, range or local-day
/// computation built on it stays in range (no overflow, no panic).
const LATEST_MS: i64 = 7_258_118_400_000;

/// The longest interval (step) a panel may ask for: 400 days, the longest
/// range a panel route accepts.
pub const MAX_INTERVAL_DAYS: i64 = 400;

/// An instant: epoch milliseconds, RFC 3339, or a date (UTC midnight),
/// between 1970-01-01 and 2200-01-01.
pub fn instant(param: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    let v = value.trim();
    let parsed = if let Ok(ms) = v.parse::<i64>() {
        DateTime::from_timestamp_millis(ms)
    } else if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        Some(t.with_timezone(&Utc))
    } else if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0).map(|t| t.and_utc())
    } else {
        return Err(bad(
            param,
            value,
            "epoch milliseconds (Grafana's ${__from}), RFC 3339 or YYYY-MM-DD",
        ));
    };
    parsed
        .filter(|t| (EARLIEST_MS..=LATEST_MS).contains(&t.timestamp_millis()))
        .ok_or_else(|| bad(param, value, "an instant between 1970-01-01 and 2200-01-01"))
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

/// `site`, `from` and `to` of a route over a period (lift incidents,
/// inspection compliance).
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SitePeriod {
    pub site: String,
    /// From: epoch ms, RFC 3339 or a date.
    pub from: Option<String>,
    /// To (exclusive); at most 400 days after `from`.
    pub to: Option<String>,
}

impl SitePeriod {
    pub fn period(&self) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
        range(self.from.as_deref(), self.to.as_deref(), MAX_INTERVAL_DAYS)
    }
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

/// A step like Grafana's `$__interval`: `500ms`, `30s`, `5m`, `1h`, `1d`,
/// `1w`, `1y`; positive and at most [`MAX_INTERVAL_DAYS`].
pub fn interval(param: &str, value: &str) -> Result<Duration, ApiError> {
    let v = value.trim();
    let shape = "a number with a unit (30s, 5m, 1h, 1d, 1w)";
    let split = v
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| bad(param, value, shape))?;
    let (n, unit) = v.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad(param, value, shape))?;
    let ms_per_unit: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        // Grafana writes an interval of a year or more in years.
        "y" => 365 * 86_400_000,
        _ => return Err(bad(param, value, "a unit of ms, s, m, h, d, w or y")),
    };
    let ms = n
        .checked_mul(ms_per_unit)
        .ok_or_else(|| too_long(param, value))?;
    interval_from_ms(param, value, ms)
}

/// `$__interval_ms`: positive milliseconds, at most [`MAX_INTERVAL_DAYS`].
pub fn interval_ms(param: &str, ms: i64) -> Result<Duration, ApiError> {
    interval_from_ms(param, &ms.to_string(), ms)
}

fn interval_from_ms(param: &str, value: &str, ms: i64) -> Result<Duration, ApiError> {
    if ms <= 0 {
        return Err(bad(param, value, "a positive interval"));
    }
    if ms > MAX_INTERVAL_DAYS * 86_400_000 {
        return Err(too_long(param, value));
    }
    Duration::try_milliseconds(ms).ok_or_else(|| too_long(param, value))
}

fn too_long(param: &str, value: &str) -> ApiError {
    bad(
        param,
        value,
        &format!("an interval of at most {MAX_INTERVAL_DAYS} days"),
    )
}

/// The steps a series answer may use: whole calendar units (1 minute, 5
/// and 15 minutes, an hour, a day, a week, a month), so a point means the
/// same at every zoom and no step is 11 minutes or 3 hours because of a
/// panel's width. Beyond a week: whole calendar months in the site's time
/// zone (a year in 12 bars is 12 months starting on the 1st, not 35-day
/// steps starting on Mondays).
pub const LADDER_SECS: [i64; 6] = [60, 300, 900, 3_600, 86_400, 604_800];

/// A step: a fixed length, or `months` calendar months (then `length` is
/// their nominal length, 30 days each, for comparisons only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub length: Duration,
    pub months: u32,
}

impl Step {
    pub fn fixed(length: Duration) -> Self {
        Self { length, months: 0 }
    }
}

/// The step a series answer uses: the smallest step of the ladder at least
/// as long as the requested interval (`$__interval`) and long enough that
/// the range holds at most `max_points` steps (one partial step more).
/// Beyond a week, calendar months: as many as the requested interval needs
/// at 31 days a month (Grafana's `30d` is one month, `1y` twelve) and the
/// range's months need to fit in `max_points`.
pub fn step(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    requested: Option<Duration>,
    max_points: usize,
) -> Step {
    let span = (to - from).num_seconds().max(1);
    let slots = max_points.saturating_sub(1).max(1) as i64;
    let by_points = (span + slots - 1) / slots;
    let want = requested.map_or(0, |d| d.num_seconds());
    let secs = want.max(by_points).max(60);
    if let Some(s) = LADDER_SECS.iter().copied().find(|s| *s >= secs) {
        return Step::fixed(Duration::seconds(s));
    }
    let day = 86_400;
    // The range's months (of 30.44 days) over the points allowed.
    let span_months = span as f64 / (30.436_875 * day as f64);
    let by_points = (span_months / max_points.max(1) as f64).ceil() as i64;
    let months = ((want + 31 * day - 1) / (31 * day))
        .max(by_points)
        .clamp(1, 120);
    Step {
        length: Duration::days(30 * months),
        months: months as u32,
    }
}

/// The start of the calendar month holding `t` in `tz`, in UTC.
pub fn month_start(t: DateTime<Utc>, tz: chrono_tz::Tz) -> DateTime<Utc> {
    use chrono::Datelike;
    let local = t.with_timezone(&tz).date_naive();
    local_midnight(local.with_day(1).unwrap_or(local), tz)
}

/// `t` (a month start in `tz`) plus `n` calendar months, in UTC.
pub fn add_months(t: DateTime<Utc>, n: u32, tz: chrono_tz::Tz) -> DateTime<Utc> {
    let local = t.with_timezone(&tz).date_naive();
    match local.checked_add_months(chrono::Months::new(n)) {
        Some(day) => local_midnight(day, tz),
        None => t + Duration::days(30 * i64::from(n)),
    }
}

/// The count of calendar months in `tz` from the month of `a` to that of `b`.
pub fn months_between(a: DateTime<Utc>, b: DateTime<Utc>, tz: chrono_tz::Tz) -> i64 {
    use chrono::Datelike;
    let index = |t: DateTime<Utc>| {
        let d = t.with_timezone(&tz).date_naive();
        i64::from(d.year()) * 12 + i64::from(d.month0())
    };
    index(b) - index(a)
}

pub use estatemon_domain::calendar::local_midnight;

/// The start of the step holding `from`, on the calendar of `tz`: steps
/// of a day or more start at local midnight (weeks on Monday), shorter
/// ones on whole local minutes or hours counted from that midnight.
pub fn align(from: DateTime<Utc>, step: Duration, tz: chrono_tz::Tz) -> DateTime<Utc> {
    use chrono::Datelike;
    let local = from.with_timezone(&tz).date_naive();
    let day = if step >= Duration::weeks(1) {
        local - Duration::days(i64::from(local.weekday().num_days_from_monday()))
    } else {
        local
    };
    let midnight = local_midnight(day, tz);
    if step >= Duration::days(1) {
        return midnight;
    }
    let n = (from - midnight)
        .num_seconds()
        .div_euclid(step.num_seconds().max(1));
    midnight + Duration::seconds(n * step.num_seconds())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_come_from_the_ladder_and_start_on_the_local_calendar() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let (from, to) = (t("2026-06-01T07:47:25.090Z"), t("2026-06-08T07:47:25.090Z"));
        // 7 days in 1,000 points asked at 10 minutes: 15 minutes, not 11.
        assert_eq!(
            step(from, to, Some(Duration::minutes(10)), 1000).length,
            Duration::minutes(15)
        );
        // 90 days at 1 h in 1,000 points: a day, not 3 hours.
        let q = t("2026-08-30T07:47:25.090Z");
        assert_eq!(
            step(from, q, Some(Duration::hours(1)), 1000).length,
            Duration::days(1)
        );
        assert_eq!(
            step(from, q, Some(Duration::hours(1)), 3000).length,
            Duration::hours(1)
        );
        // Two years in 50 points: calendar months, never 3-week steps.
        let two = t("2028-06-01T00:00:00Z");
        assert_eq!(step(from, two, None, 50).months, 1);
        assert_eq!(step(from, two, None, 20).months, 2);
        let hk: chrono_tz::Tz = "Asia/Hong_Kong".parse().unwrap();
        assert_eq!(
            align(from, Duration::minutes(15), hk),
            t("2026-06-01T07:45:00Z")
        );
        assert_eq!(
            align(from, Duration::hours(1), hk),
            t("2026-06-01T07:00:00Z")
        );
        // 07:47 UTC is 15:47 in Hong Kong: its day began at 16:00 UTC before.
        assert_eq!(
            align(from, Duration::days(1), hk),
            t("2026-05-31T16:00:00Z")
        );
        // 2026-06-01 is a Monday.
        assert_eq!(
            align(t("2026-06-04T12:00:00Z"), Duration::weeks(1), hk),
            t("2026-05-31T16:00:00Z")
        );
        let india: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
        assert_eq!(
            align(from, Duration::hours(1), india),
            t("2026-06-01T07:30:00Z")
        );
    }

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

    /// The values that used to panic the handler (chrono's constructors
    /// overflow): every one is a 400 naming the parameter.
    #[test]
    fn overflowing_values_are_refused_not_panicked() {
        for v in [
            "9223372036854775s",
            "9223372036854775807ms",
            "153722867280912930m",
            "106751991167300d",
            "15250284452471w",
            "99999999999999999999s",
            "401d",
        ] {
            let e = interval("interval", v).unwrap_err().to_string();
            assert!(e.contains("`interval="), "{v}: {e}");
        }
        assert!(interval("interval", "400d").is_ok());
        for ms in [i64::MAX, i64::MIN, -1, 0, 401 * 86_400_000] {
            assert!(interval_ms("interval_ms", ms).is_err(), "{ms}");
        }
        for v in [
            "9223372036854775807",
            "-9223372036854775808",
            "8210266876799999",
            "262142-12-31T23:59:59Z",
            "+262142-12-31",
            "9999-12-31T23:59:59Z",
            "1969-12-31",
            "-62135596800000",
        ] {
            let e = instant("from", v).unwrap_err().to_string();
            assert!(e.contains("`from="), "{v}: {e}");
        }
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
        // Hourly requested, 1,000 points allowed: 8,760 h needs ~8.8-hour
        // steps, and the ladder's next is a day.
        let s = step(from, to, Some(Duration::hours(1)), 1000).length;
        assert_eq!(s, Duration::days(1));
        // Aligned steps: at most one partial step more than the quotient.
        assert!((to - from).num_seconds() / s.num_seconds() < 1000);
        // Few points needed: the requested interval stands.
        assert_eq!(
            step(from, to, Some(Duration::hours(24)), 1000),
            Step::fixed(Duration::hours(24))
        );
        // Never below a minute.
        assert_eq!(
            step(from, from + Duration::minutes(10), None, 1000),
            Step::fixed(Duration::minutes(1))
        );
    }

    /// A year in 12 bars: Grafana sends `30d` (or `1y` for one bar).
    /// Each bar is a calendar month starting on the 1st at local midnight.
    #[test]
    fn a_month_step_is_a_calendar_month() {
        let (from, to) = range(Some("2025-01-01"), Some("2026-01-01"), 400).unwrap();
        let s = step(from, to, Some(interval("interval", "30d").unwrap()), 12);
        assert_eq!(s.months, 1);
        assert_eq!(
            step(from, to, Some(interval("interval", "1y").unwrap()), 1000).months,
            12
        );
        assert_eq!(
            step(from, to, Some(interval("interval", "90d").unwrap()), 1000).months,
            3
        );
        let hk: chrono_tz::Tz = "Asia/Hong_Kong".parse().unwrap();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        // 2025-03-17 in Hong Kong: its month began on 1 March, 00:00 +08.
        let m = month_start(t("2025-03-17T09:03:16.090Z"), hk);
        assert_eq!(m, t("2025-02-28T16:00:00Z"));
        assert_eq!(add_months(m, 1, hk), t("2025-03-31T16:00:00Z"));
        assert_eq!(add_months(m, 12, hk), t("2026-02-28T16:00:00Z"));
        assert_eq!(months_between(m, t("2025-12-31T16:30:00Z"), hk), 10);
        // A zone with summer time: months start at local midnight either side.
        let london: chrono_tz::Tz = "Europe/London".parse().unwrap();
        let m = month_start(t("2025-04-10T12:00:00Z"), london);
        assert_eq!(m, t("2025-03-31T23:00:00Z"));
        assert_eq!(add_months(m, 7, london), t("2025-11-01T00:00:00Z"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever Grafana or an attacker sends: an answer, never a
            /// panic (chrono's constructors and `DateTime` arithmetic
            /// panic on overflow).
            #[test]
            fn parameters_never_panic(
                text in ".{0,30}|[0-9]{1,25}(ms|s|m|h|d|w)?|-?[0-9]{1,20}",
                ms in any::<i64>(),
                max_points in any::<usize>(),
            ) {
                let _ = instant("from", &text);
                let _ = interval("interval", &text);
                let _ = interval_ms("interval_ms", ms);
                if let Ok((from, to)) = range(Some(&text), Some(&ms.to_string()), 400) {
                    let requested = interval("interval", &text).ok();
                    let step = step(from, to, requested, max_points);
                    prop_assert!(step.length >= Duration::minutes(1));
                }
            }

            #[test]
            fn intervals_round_trip(n in 1i64..=400, unit in prop_oneof![Just("s"), Just("m"), Just("h"), Just("d")]) {
                let per = match unit { "s" => 1, "m" => 60, "h" => 3600, _ => 86_400 };
                let got = interval("interval", &format!("{n}{unit}")).unwrap();
                prop_assert_eq!(got.num_seconds(), n * per);
                prop_assert_eq!(interval_ms("interval_ms", n * per * 1000).unwrap(), got);
            }

            #[test]
            fn instants_round_trip(ms in 0i64..=7_258_118_400_000) {
                let t = instant("from", &ms.to_string()).unwrap();
                prop_assert_eq!(t.timestamp_millis(), ms);
                prop_assert_eq!(instant("from", &t.to_rfc3339()).unwrap(), t);
            }
        }
    }
}
