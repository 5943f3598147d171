//! A device's own time in the forms devices send it.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    #[default]
    Rfc3339,
    EpochS,
    EpochMs,
    /// Seconds with a fraction (Shelly's `ts`).
    Epoch,
    /// A naive date-time in `time_zone` (as Tasmota sends it), or one with
    /// an offset (Tasmota with `TimeZone` set and SetOption52).
    Local,
    /// Whatever the device sends among these: RFC 3339 / ISO 8601 with an
    /// offset, a naive time in `time_zone`, epoch seconds (with a
    /// fraction) or milliseconds (told apart by size), as a number or a
    /// numeric string (Zigbee2MQTT's `last_seen`: ISO_8601,
    /// ISO_8601_local or epoch).
    Auto,
}

/// Device times before this are a clock that never synced (Tasmota's
/// `1970-01-01T…` before NTP, a Shelly's seconds since boot): the readings
/// are placed at their receipt and the device is reported.
pub fn plausible_since() -> DateTime<Utc> {
    DateTime::from_timestamp(1_262_304_000, 0).expect("2010-01-01")
}

/// Milliseconds from this size on (year 5138 in seconds).
const MS_FROM: f64 = 1e11;

fn naive(s: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()
}

fn in_zone(
    n: NaiveDateTime,
    tz: chrono_tz::Tz,
    received_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    // In the hour clocks go back, the reading nearest its arrival (the
    // other is an hour away from it).
    let r = tz.from_local_datetime(&n);
    match (r.earliest(), r.latest()) {
        (Some(a), Some(b)) => {
            let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
            Some(if (a - received_at).abs() <= (b - received_at).abs() {
                a
            } else {
                b
            })
        }
        (a, b) => a.or(b).map(|t| t.with_timezone(&Utc)),
    }
}

fn with_offset(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl TimeFormat {
    fn describe(self) -> &'static str {
        match self {
            TimeFormat::Rfc3339 => "an RFC 3339",
            TimeFormat::EpochS => "an epoch-seconds",
            TimeFormat::EpochMs => "an epoch-milliseconds",
            TimeFormat::Epoch => "an epoch (seconds with a fraction)",
            TimeFormat::Local => "a local (naive or with an offset)",
            TimeFormat::Auto => "an ISO 8601, epoch-seconds or epoch-milliseconds",
        }
    }

    /// Reads a time; `Err` says what the value is not.
    pub fn parse(
        self,
        v: &Value,
        time_zone: Option<&str>,
        received_at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, String> {
        let number = || {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .filter(|n: &f64| n.is_finite())
        };
        let seconds = |n: f64| DateTime::from_timestamp_millis((n * 1000.0).round() as i64);
        let millis = |n: f64| DateTime::from_timestamp_millis(n.round() as i64);
        let zone = || -> Option<chrono_tz::Tz> { time_zone.and_then(|z| z.parse().ok()) };
        let t = match self {
            TimeFormat::Rfc3339 => v.as_str().and_then(with_offset),
            TimeFormat::EpochS | TimeFormat::Epoch => {
                number().filter(|n| n.abs() < MS_FROM).and_then(seconds)
            }
            TimeFormat::EpochMs => number().filter(|n| n.abs() < 1e14).and_then(millis),
            TimeFormat::Local => v.as_str().and_then(|s| {
                with_offset(s).or_else(|| {
                    naive(s).and_then(|n| in_zone(n, zone().unwrap_or(chrono_tz::UTC), received_at))
                })
            }),
            TimeFormat::Auto => match number() {
                Some(n) if n.abs() >= MS_FROM => (n.abs() < 1e14).then(|| millis(n)).flatten(),
                Some(n) => seconds(n),
                None => v.as_str().and_then(|s| {
                    with_offset(s).or_else(|| {
                        let tz = zone()?;
                        naive(s).and_then(|n| in_zone(n, tz, received_at))
                    })
                }),
            },
        };
        t.ok_or_else(|| {
            let naive_without_zone = self == TimeFormat::Auto
                && time_zone.is_none()
                && v.as_str().and_then(naive).is_some();
            if naive_without_zone {
                format!("{v} has no offset and the mapping has no time_zone")
            } else {
                format!("{v} is not {} time", self.describe())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn every_documented_form() {
        let now = at("2026-03-01T03:00:00Z");
        let auto = |v: Value| TimeFormat::Auto.parse(&v, Some("Asia/Hong_Kong"), now);
        // Zigbee2MQTT's last_seen: ISO_8601, ISO_8601_local, epoch (ms).
        assert_eq!(
            auto(json!("2026-03-01T02:00:00.000Z")).unwrap(),
            at("2026-03-01T02:00:00Z")
        );
        assert_eq!(
            auto(json!("2026-03-01T10:00:00+08:00")).unwrap(),
            at("2026-03-01T02:00:00Z")
        );
        assert_eq!(
            auto(json!(1772330400000u64)).unwrap(),
            at("2026-03-01T02:00:00Z")
        );
        assert_eq!(
            auto(json!("1772330400000")).unwrap(),
            at("2026-03-01T02:00:00Z")
        );
        assert_eq!(
            auto(json!(1772330400.5)).unwrap(),
            at("2026-03-01T02:00:00.5Z")
        );
        assert_eq!(
            auto(json!("2026-03-01T10:00:00")).unwrap(),
            at("2026-03-01T02:00:00Z")
        );
        assert!(TimeFormat::Auto
            .parse(&json!("2026-03-01T10:00:00"), None, now)
            .unwrap_err()
            .contains("no time_zone"));
        // Tasmota with an offset (TimeZone set): taken as written.
        let local = |v: Value| TimeFormat::Local.parse(&v, Some("Asia/Hong_Kong"), now);
        assert_eq!(
            local(json!("2026-03-01T10:00:00+08:00")).unwrap(),
            at("2026-03-01T02:00:00Z")
        );
        assert_eq!(
            local(json!("2026-03-01T10:00:00")).unwrap(),
            at("2026-03-01T02:00:00Z")
        );
        assert!(local(json!("yesterday")).is_err());
        // A clock that never synced still parses: the caller judges it.
        assert!(local(json!("1970-01-01T00:00:12")).unwrap() < plausible_since());
    }
}
