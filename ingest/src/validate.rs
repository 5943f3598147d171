//! Checks that need the time of arrival or knowledge of the metric: clocks
//! in the future or the distant past, negative registers. Pure: the caller
//! passes `now`.

use chrono::{DateTime, Duration, Utc};
use estatemon_domain::metric::MetricKind;

use crate::dead_letter::{Reason, Reject};
use crate::decode::Decoded;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_future_skew: Duration,
    pub max_age: Duration,
}

impl Limits {
    /// The age limit is also capped by retention: a reading older than the
    /// retention period would land in a partition that is about to be (or
    /// already was) dropped.
    pub fn from_config(
        c: &estatemon_domain::config::IngestConfig,
        storage: &estatemon_domain::config::StorageConfig,
    ) -> Limits {
        let mut days = c.max_age_days;
        if storage.retention_days > 0 {
            days = days.min(storage.retention_days as u64);
        }
        Limits {
            max_future_skew: Duration::seconds(c.max_future_skew_s as i64),
            max_age: Duration::days(days as i64),
        }
    }

    fn check_ts(&self, ts: DateTime<Utc>, now: DateTime<Utc>, what: &str) -> Option<Reject> {
        if ts > now + self.max_future_skew {
            Some(Reject::new(
                Reason::TimestampInFuture,
                format!(
                    "{what} at {} is {} s ahead of the ingestor's clock (limit {} s)",
                    ts.to_rfc3339(),
                    (ts - now).num_seconds(),
                    self.max_future_skew.num_seconds()
                ),
            ))
        } else if ts < now - self.max_age {
            Some(Reject::new(
                Reason::TimestampTooOld,
                format!(
                    "{what} at {} is older than {} days",
                    ts.to_rfc3339(),
                    self.max_age.num_days()
                ),
            ))
        } else {
            None
        }
    }
}

/// Moves readings and events that fail a check into `rejects`.
pub fn validate(decoded: &mut Decoded, now: DateTime<Utc>, limits: &Limits) {
    let mut rejects = Vec::new();
    decoded.readings.retain(|r| {
        let what = format!("{} {}", r.metric, r.value);
        if let Some(reject) = limits.check_ts(r.ts, now, &what) {
            rejects.push(reject);
            return false;
        }
        if r.metric.kind() == MetricKind::Cumulative && r.value < 0.0 {
            rejects.push(Reject::new(
                Reason::InvalidValue,
                format!(
                    "{} is a register and cannot be negative ({})",
                    r.metric, r.value
                ),
            ));
            return false;
        }
        true
    });
    decoded.events.retain(|e| {
        match limits.check_ts(e.ts, now, &format!("{} event", e.detail.event_type())) {
            Some(reject) => {
                rejects.push(reject);
                false
            }
            None => true,
        }
    });
    decoded.rejects.extend(rejects);
}

#[cfg(test)]
mod tests {
    use super::*;
    use estatemon_domain::{Metric, Reading};

    fn reading(metric: Metric, ts: DateTime<Utc>, value: f64) -> Reading {
        Reading {
            device_id: "m".into(),
            metric,
            ts,
            value,
        }
    }

    #[test]
    fn clocks_and_registers() {
        let now = Utc::now();
        let limits = Limits {
            max_future_skew: Duration::minutes(5),
            max_age: Duration::days(365),
        };
        let mut d = Decoded {
            readings: vec![
                reading(Metric::EnergyKwh, now, 1.0),
                reading(Metric::EnergyKwh, now + Duration::minutes(4), 1.0),
                reading(Metric::EnergyKwh, now + Duration::minutes(6), 1.0),
                reading(Metric::EnergyKwh, now - Duration::days(400), 1.0),
                reading(Metric::EnergyKwh, now, -1.0),
                reading(Metric::TemperatureC, now, -10.0),
            ],
            ..Default::default()
        };
        validate(&mut d, now, &limits);
        assert_eq!(d.readings.len(), 3);
        let reasons: Vec<Reason> = d.rejects.iter().map(|r| r.reason).collect();
        assert_eq!(
            reasons,
            vec![
                Reason::TimestampInFuture,
                Reason::TimestampTooOld,
                Reason::InvalidValue
            ]
        );
    }
}
