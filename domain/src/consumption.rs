//! Consumption from cumulative registers: the one place that turns a series
//! of register readings into consumed kWh / m³ per interval.
//!
//! Registers are not well-behaved in the field. This module recognises:
//!
//! - **rollover**: the register wraps at its capacity (99 999.9 kWh on an old
//!   mechanical register): consumption is `capacity − before + after`;
//! - **meter replacement**: a recorded replacement between two readings; the
//!   new meter's first reading counts from its recorded start value;
//! - **reset**: the register restarts near zero (firmware update, battery
//!   change); consumption is the new value, counted from zero;
//! - **gap**: the meter was offline longer than `max_gap`. The register kept
//!   counting, so the delta is right for the whole gap; it is kept but
//!   flagged, since it cannot be placed within the gap;
//! - **spike**: a single reading out of line with both neighbours (a bit
//!   error, a mis-scaled value). It is dropped and the interval bridged from
//!   the readings around it;
//! - **implausible**: a rise faster than the meter's physical maximum rate,
//!   or a fall that fits none of the above: consumption is *missing*, never
//!   zero, so a report shows the hole instead of inventing a figure.
//!
//! Every interval says which correction, if any, produced it.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// One register reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegisterSample {
    pub ts: DateTime<Utc>,
    pub value: f64,
}

/// A recorded meter replacement: from `at` on, the register is a new meter
/// whose count started at `new_start`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Replacement {
    pub at: DateTime<Utc>,
    pub new_start: f64,
}

/// What the derivation may assume about a meter.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterPolicy {
    /// Value at which the register wraps to zero, if known.
    pub rollover_at: Option<f64>,
    /// Physical maximum consumption per hour (breaker rating × hours); rises
    /// faster than this are implausible.
    pub max_rate_per_hour: Option<f64>,
    /// Intervals longer than this are flagged as gaps.
    pub max_gap: Duration,
    /// A fall to at most this fraction of the previous value counts as a
    /// reset to zero; a smaller fall is implausible.
    pub reset_fraction: f64,
    pub replacements: Vec<Replacement>,
}

impl Default for RegisterPolicy {
    fn default() -> Self {
        RegisterPolicy {
            rollover_at: None,
            max_rate_per_hour: None,
            max_gap: Duration::hours(2),
            reset_fraction: 0.1,
            replacements: Vec::new(),
        }
    }
}

/// Why an interval's consumption is not a plain difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Correction {
    None,
    Rollover,
    Replacement,
    Reset,
    Gap,
    Spike,
    Implausible,
}

impl Correction {
    pub fn as_str(self) -> &'static str {
        match self {
            Correction::None => "none",
            Correction::Rollover => "rollover",
            Correction::Replacement => "replacement",
            Correction::Reset => "reset",
            Correction::Gap => "gap",
            Correction::Spike => "spike",
            Correction::Implausible => "implausible",
        }
    }
}

/// Consumption between two register readings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `None` when it cannot be known: shown as missing, never as zero.
    pub consumption: Option<f64>,
    pub correction: Correction,
}

/// Derives per-interval consumption from register readings sorted by time
/// (duplicates by timestamp are ignored).
///
/// A meter read less often than `max_gap` (a daily-read meter, a utility's
/// export) is held to its own cadence: with enough intervals to tell, a gap
/// is an interval over 1.5 × the median spacing, so every 24-hour interval
/// of a daily meter is not a "gap" but a missing day is.
pub fn derive(samples: &[RegisterSample], policy: &RegisterPolicy) -> Vec<Interval> {
    let samples = drop_spikes(samples);
    let mut out = Vec::with_capacity(samples.len().saturating_sub(1));
    let own;
    let policy = match cadence(&samples) {
        Some(c) if c * 3 / 2 > policy.max_gap => {
            own = RegisterPolicy {
                max_gap: c * 3 / 2,
                ..policy.clone()
            };
            &own
        }
        _ => policy,
    };
    for pair in samples.windows(2) {
        let ((a, _), (b, b_spike)) = (pair[0], pair[1]);
        let mut interval = between(a, b, policy);
        if b_spike && interval.correction == Correction::None {
            interval.correction = Correction::Spike;
        }
        out.push(interval);
    }
    out
}

/// The median spacing of the readings, from 8 intervals on (fewer cannot
/// tell a cadence from a gap).
fn cadence(samples: &[(RegisterSample, bool)]) -> Option<Duration> {
    if samples.len() < 9 {
        return None;
    }
    let mut spacings: Vec<Duration> = samples.windows(2).map(|w| w[1].0.ts - w[0].0.ts).collect();
    let mid = spacings.len() / 2;
    Some(*spacings.select_nth_unstable(mid).1)
}

/// Marks each kept sample with whether a spike was removed just before it.
fn drop_spikes(samples: &[RegisterSample]) -> Vec<(RegisterSample, bool)> {
    let mut kept: Vec<(RegisterSample, bool)> = Vec::with_capacity(samples.len());
    let mut i = 0;
    while i < samples.len() {
        let s = samples[i];
        if kept.last().is_some_and(|(k, _)| k.ts >= s.ts) {
            i += 1;
            continue;
        }
        // s is a spike when its neighbours are in order (prev <= next) and it
        // sits outside them: above both (a bit error) or below both (a
        // transient zero).
        if let (Some((prev, _)), Some(next)) = (kept.last(), samples.get(i + 1)) {
            if next.value >= prev.value && (s.value > next.value || s.value < prev.value) {
                i += 1;
                if let Some(next_kept) = samples.get(i) {
                    kept.push((*next_kept, true));
                    i += 1;
                }
                continue;
            }
        }
        kept.push((s, false));
        i += 1;
    }
    kept
}

fn between(a: RegisterSample, b: RegisterSample, policy: &RegisterPolicy) -> Interval {
    let hours = (b.ts - a.ts).num_milliseconds() as f64 / 3.6e6;
    let interval = |consumption: Option<f64>, correction| Interval {
        start: a.ts,
        end: b.ts,
        consumption,
        correction,
    };
    let plausible = |c: f64| policy.max_rate_per_hour.is_none_or(|max| c <= max * hours);

    if let Some(rep) = policy
        .replacements
        .iter()
        .find(|r| r.at > a.ts && r.at <= b.ts)
    {
        // The old meter's last counts between `a` and the swap are not known;
        // what the new meter counted since its start is.
        let c = b.value - rep.new_start;
        return if c >= 0.0 && plausible(c) {
            interval(Some(c), Correction::Replacement)
        } else {
            interval(None, Correction::Implausible)
        };
    }

    let delta = b.value - a.value;
    if delta >= 0.0 {
        if !plausible(delta) {
            return interval(None, Correction::Implausible);
        }
        let correction = if b.ts - a.ts > policy.max_gap {
            Correction::Gap
        } else {
            Correction::None
        };
        return interval(Some(delta), correction);
    }

    if let Some(capacity) = policy.rollover_at {
        let wrapped = capacity - a.value + b.value;
        // A wrap happens near the top of the register and lands near zero.
        if a.value > 0.9 * capacity && b.value < 0.1 * capacity && plausible(wrapped) {
            return interval(Some(wrapped), Correction::Rollover);
        }
    }
    if b.value <= a.value * policy.reset_fraction && plausible(b.value) {
        return interval(Some(b.value), Correction::Reset);
    }
    interval(None, Correction::Implausible)
}

/// One hour's use, apportioned from the intervals that overlap it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourUse {
    /// The hour's start (UTC, on the hour).
    pub hour: DateTime<Utc>,
    pub used: f64,
    /// Part of it comes from an interval bridged over a gap (spread evenly
    /// over the gap's hours): an estimate, not a measurement.
    pub estimated: bool,
}

/// The start of the UTC hour containing `t`.
pub fn hour_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp().div_euclid(3600) * 3600;
    DateTime::from_timestamp(s, 0).unwrap_or(t)
}

/// Each hour's use in `[from, to)` (UTC hours), from derived intervals
/// sorted by time: every interval's consumption is shared among the hours
/// it overlaps in proportion to the time it spends in each, so a rollover,
/// a reset or a replacement inside an hour counts the use before and after
/// it, and a gap's use is spread over the gap's hours (marked estimated).
/// An hour is left out when any interval overlapping it has an unknown use,
/// or when the intervals do not cover it whole (before the first reading,
/// after the last): a partial hour is never given as a complete one. The
/// hours of a day sum to what the intervals inside that day sum to.
pub fn hourly(intervals: &[Interval], from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<HourUse> {
    use std::collections::BTreeMap;
    // hour -> (use, estimated, unknown, covered microseconds: readings
    // keep sub-millisecond digits, and an hour must add up exactly)
    let mut hours: BTreeMap<DateTime<Utc>, (f64, bool, bool, i64)> = BTreeMap::new();
    for i in intervals {
        let total = micros(i.end - i.start);
        if total <= 0 {
            continue;
        }
        let mut h = hour_floor(i.start).max(hour_floor(from));
        while h < i.end && h < to {
            let next = h + Duration::hours(1);
            let overlap = micros(i.end.min(next) - i.start.max(h));
            if overlap > 0 {
                let e = hours.entry(h).or_insert((0.0, false, false, 0));
                match i.consumption {
                    Some(c) => e.0 += c * overlap as f64 / total as f64,
                    None => e.2 = true,
                }
                e.1 |= i.correction == Correction::Gap;
                e.3 += overlap;
            }
            h = next;
        }
    }
    hours
        .into_iter()
        .filter(|(h, (_, _, unknown, covered))| *h >= from && !unknown && *covered >= 3_600_000_000)
        .map(|(hour, (used, estimated, _, _))| HourUse {
            hour,
            used,
            estimated,
        })
        .collect()
}

/// A span in whole microseconds (what PostgreSQL keeps of a timestamp).
fn micros(d: Duration) -> i64 {
    d.num_microseconds().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(minutes)
    }

    fn series(points: &[(i64, f64)]) -> Vec<RegisterSample> {
        points
            .iter()
            .map(|&(m, v)| RegisterSample { ts: t(m), value: v })
            .collect()
    }

    fn run(points: &[(i64, f64)], policy: &RegisterPolicy) -> Vec<(Option<f64>, Correction)> {
        derive(&series(points), policy)
            .into_iter()
            .map(|i| {
                (
                    i.consumption.map(|c| (c * 1000.0).round() / 1000.0),
                    i.correction,
                )
            })
            .collect()
    }

    use Correction as C;

    #[test]
    fn a_daily_meter_is_held_to_its_own_cadence() {
        let daily = |days: &[i64]| -> Vec<RegisterSample> {
            days.iter()
                .map(|&d| RegisterSample {
                    ts: t(d * 24 * 60),
                    value: 100.0 + 10.0 * d as f64,
                })
                .collect()
        };
        let every_day = derive(
            &daily(&(0..12).collect::<Vec<_>>()),
            &RegisterPolicy::default(),
        );
        assert_eq!(every_day.len(), 11);
        assert!(
            every_day.iter().all(|i| i.correction == C::None),
            "{every_day:?}"
        );
        // Day 6 missing: that one interval (48 h) is a gap, the rest not.
        let holed: Vec<i64> = (0..12).filter(|d| *d != 6).collect();
        let gaps: Vec<_> = derive(&daily(&holed), &RegisterPolicy::default())
            .into_iter()
            .filter(|i| i.correction == C::Gap)
            .collect();
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].start, t(5 * 24 * 60));
        assert_eq!(gaps[0].consumption, Some(20.0));
        // A 15-minute meter keeps the configured limit.
        let mut quarter: Vec<RegisterSample> = (0..12)
            .map(|k| RegisterSample {
                ts: t(k * 15),
                value: k as f64,
            })
            .collect();
        quarter.push(RegisterSample {
            ts: t(11 * 15 + 180),
            value: 20.0,
        });
        let last = derive(&quarter, &RegisterPolicy::default()).pop().unwrap();
        assert_eq!(last.correction, C::Gap);
    }

    #[test]
    fn table_of_register_behaviours() {
        let default = RegisterPolicy::default();
        let rollover = RegisterPolicy {
            rollover_at: Some(100_000.0),
            ..Default::default()
        };
        let capped = RegisterPolicy {
            max_rate_per_hour: Some(50.0),
            ..Default::default()
        };
        let replaced = RegisterPolicy {
            replacements: vec![Replacement {
                at: t(20),
                new_start: 3.0,
            }],
            ..Default::default()
        };
        type Case<'a> = (
            &'a str,
            &'a [(i64, f64)],
            &'a RegisterPolicy,
            &'a [(Option<f64>, Correction)],
        );
        let cases: &[Case] = &[
            (
                "steady",
                &[(0, 10.0), (15, 12.0), (30, 15.5)],
                &default,
                &[(Some(2.0), C::None), (Some(3.5), C::None)],
            ),
            (
                "flat",
                &[(0, 10.0), (15, 10.0)],
                &default,
                &[(Some(0.0), C::None)],
            ),
            (
                "rollover",
                &[(0, 99_998.0), (15, 3.0)],
                &rollover,
                &[(Some(5.0), C::Rollover)],
            ),
            (
                "reset to zero",
                &[(0, 5_000.0), (15, 2.0)],
                &default,
                &[(Some(2.0), C::Reset)],
            ),
            (
                "small fall is not a reset",
                &[(0, 5_000.0), (15, 4_990.0)],
                &default,
                &[(None, C::Implausible)],
            ),
            (
                "replacement",
                &[(0, 8_000.0), (30, 5.0)],
                &replaced,
                &[(Some(2.0), C::Replacement)],
            ),
            (
                "gap keeps the delta",
                &[(0, 100.0), (600, 140.0)],
                &default,
                &[(Some(40.0), C::Gap)],
            ),
            (
                "too fast",
                &[(0, 100.0), (60, 400.0)],
                &capped,
                &[(None, C::Implausible)],
            ),
            (
                "gap is not too fast",
                &[(0, 100.0), (600, 400.0)],
                &capped,
                &[(Some(300.0), C::Gap)],
            ),
            (
                "single spike bridged",
                &[(0, 100.0), (15, 99_999.0), (30, 102.0), (45, 103.0)],
                &default,
                &[(Some(2.0), C::Spike), (Some(1.0), C::None)],
            ),
            (
                "single dip bridged",
                &[(0, 100.0), (15, 0.0), (30, 101.0)],
                &default,
                &[(Some(1.0), C::Spike)],
            ),
            (
                "duplicate timestamps ignored",
                &[(0, 1.0), (0, 1.0), (15, 2.0)],
                &default,
                &[(Some(1.0), C::None)],
            ),
        ];
        for (name, points, policy, expected) in cases {
            assert_eq!(run(points, policy), *expected, "{name}");
        }
    }

    #[test]
    fn total_over_a_rollover_is_conserved() {
        let policy = RegisterPolicy {
            rollover_at: Some(1_000.0),
            ..Default::default()
        };
        let pts: Vec<(i64, f64)> = (0..40)
            .map(|i| (i * 15, (950.0 + 5.0 * i as f64) % 1_000.0))
            .collect();
        let total: f64 = derive(&series(&pts), &policy)
            .iter()
            .map(|i| i.consumption.unwrap())
            .sum();
        assert!((total - 5.0 * 39.0).abs() < 1e-9, "{total}");
    }

    #[test]
    fn an_hour_of_readings_with_microseconds_is_whole() {
        let at = |m: i64, us: i64| t(m) + Duration::microseconds(us);
        let samples: Vec<RegisterSample> =
            [(0, 0, 1.0), (20, 123_456, 2.0), (40, 0, 3.0), (60, 0, 4.0)]
                .iter()
                .map(|&(m, us, value)| RegisterSample {
                    ts: at(m, us),
                    value,
                })
                .collect();
        let hours = hourly(&derive(&samples, &RegisterPolicy::default()), t(0), t(60));
        assert_eq!(hours.len(), 1, "{hours:?}");
        assert!((hours[0].used - 3.0).abs() < 1e-12);
    }
}
