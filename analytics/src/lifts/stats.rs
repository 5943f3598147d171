//! Lift statistics over a period, per lift, per building and for the site:
//! availability, trips and door cycles (from the cumulative counters,
//! through the counter engine's reset and rollover handling), faults per
//! 1,000 trips and mean time between faults.
//!
//! - **Availability** is the time in normal service (idle, moving, doors
//!   open) over the time the lift was expected in service: the period less
//!   planned work (maintenance, inspection). Fault, out of service and fire
//!   service count against it. Before its first state event in the
//!   period, a lift is in the state its last earlier event gave (in
//!   service when it never reported one).
//! - **Faults** are fault events (entrapments included, and counted apart).
//!   A fault raised while the lift was in maintenance or inspection is
//!   counted apart (`faults_in_maintenance`) and, by default
//!   (`lifts.maintenance_faults = "exclude"`), not in the faults, MTBF and
//!   faults per 1,000 trips: a technician's tests are not breakdowns.
//! - **MTBF** is the hours in service per fault.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use estatemon_domain::config::MaintenanceFaults;
use estatemon_domain::consumption::{derive, RegisterPolicy, RegisterSample};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

/// One row: a lift, a building's lifts or the site's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiftStats {
    /// `lift`, `building` or `site`.
    #[serde(deserialize_with = "crate::static_str::deserialize")]
    pub scope: crate::static_str::Label,
    /// The lift's id, the building's id, or the site's.
    pub id: String,
    pub building: Option<String>,
    pub lifts: usize,
    /// Hours of the period (per lift, summed over lifts for a group).
    pub period_hours: f64,
    pub in_service_hours: f64,
    /// Maintenance and inspection: planned, not counted against.
    pub planned_hours: f64,
    /// Fault, out of service, fire service.
    pub down_hours: f64,
    /// In service ÷ (period − planned), 0–1.
    pub availability: Option<f64>,
    pub trips: f64,
    pub door_cycles: f64,
    /// Faults counted (see `faults_in_maintenance`).
    pub faults: u64,
    pub entrapments: u64,
    /// Faults raised while the lift was in maintenance or inspection;
    /// included in `faults` only with `maintenance_faults = "count"`.
    #[serde(default)]
    pub faults_in_maintenance: u64,
    pub faults_per_1000_trips: Option<f64>,
    /// Hours in service per fault; none without faults.
    pub mtbf_hours: Option<f64>,
    /// Per lift and day.
    pub trips_per_day: f64,
    pub door_cycles_per_day: f64,
}

/// How a reported state counts.
fn class(state: &str) -> Class {
    match state {
        "maintenance" | "inspection" => Class::Planned,
        "fault" | "out_of_service" | "fire_service" => Class::Down,
        _ => Class::Service,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Service,
    Planned,
    Down,
}

/// Hours in service, planned and down over `[from, to)`, from the state
/// before `from` (if any) and the state events inside, sorted by time.
pub fn state_hours(
    before: Option<&str>,
    states: &[(DateTime<Utc>, String)],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> (f64, f64, f64) {
    let mut hours = [0.0f64; 3];
    let mut current = before.map(class).unwrap_or(Class::Service);
    let mut at = from;
    let mut add = |c: Class, a: DateTime<Utc>, b: DateTime<Utc>| {
        let h = (b - a).num_milliseconds().max(0) as f64 / 3.6e6;
        hours[c as usize] += h;
    };
    for (ts, state) in states {
        let ts = (*ts).clamp(from, to);
        add(current, at, ts);
        at = ts;
        current = class(state);
    }
    add(current, at, to);
    (hours[0], hours[1], hours[2])
}

/// Whether the lift was in maintenance or inspection at `t`, from the
/// state before the period and the state events (sorted by time).
fn planned_at(before: Option<&str>, states: &[(DateTime<Utc>, String)], t: DateTime<Utc>) -> bool {
    let state = states
        .iter()
        .take_while(|(ts, _)| *ts <= t)
        .last()
        .map(|(_, s)| s.as_str())
        .or(before);
    state.map(class) == Some(Class::Planned)
}

/// A counter's increase over the readings (resets and rollovers handled;
/// a gap in the readings still counts, the counter kept counting).
pub fn counter_increase(samples: &[RegisterSample]) -> f64 {
    let policy = RegisterPolicy {
        max_gap: Duration::days(400),
        ..RegisterPolicy::default()
    };
    derive(samples, &policy)
        .iter()
        .filter_map(|i| i.consumption)
        .sum()
}

impl LiftStats {
    fn finish(mut self) -> LiftStats {
        let expected = self.period_hours - self.planned_hours;
        self.availability = (expected > 0.0).then(|| self.in_service_hours / expected);
        self.faults_per_1000_trips =
            (self.trips > 0.0).then(|| self.faults as f64 * 1000.0 / self.trips);
        self.mtbf_hours = (self.faults > 0).then(|| self.in_service_hours / self.faults as f64);
        let days = self.period_hours / 24.0;
        if days > 0.0 {
            self.trips_per_day = self.trips / days;
            self.door_cycles_per_day = self.door_cycles / days;
        }
        self
    }

    /// The sum of lifts' rows (a building, the site).
    fn total(scope: &'static str, id: String, rows: &[&LiftStats]) -> LiftStats {
        let mut t = LiftStats {
            scope,
            id,
            building: None,
            ..LiftStats::default()
        };
        for r in rows {
            t.lifts += r.lifts;
            t.period_hours += r.period_hours;
            t.in_service_hours += r.in_service_hours;
            t.planned_hours += r.planned_hours;
            t.down_hours += r.down_hours;
            t.trips += r.trips;
            t.door_cycles += r.door_cycles;
            t.faults += r.faults;
            t.entrapments += r.entrapments;
            t.faults_in_maintenance += r.faults_in_maintenance;
        }
        // Per lift and day (the period's hours are summed over lifts), as
        // a lift's own figure reads.
        t.finish()
    }
}

/// One lift's row over `[from, to)`.
async fn lift_row(
    client: &Client,
    lift: &str,
    building: Option<String>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    policy: MaintenanceFaults,
) -> Result<LiftStats, tokio_postgres::Error> {
    let before: Option<String> = client
        .query_opt(
            "SELECT state FROM events
              WHERE device_id = $1 AND event_type = 'state' AND ts < $2
                AND ts > $2::timestamptz - interval '400 days'
              ORDER BY ts DESC LIMIT 1",
            &[&lift, &from],
        )
        .await?
        .map(|r| r.get(0));
    let states: Vec<(DateTime<Utc>, String)> = client
        .query(
            "SELECT ts, state FROM events
              WHERE device_id = $1 AND event_type = 'state' AND ts >= $2 AND ts < $3
              ORDER BY ts",
            &[&lift, &from, &to],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let (service, planned, down) = state_hours(before.as_deref(), &states, from, to);
    let (mut faults, mut entrapments, mut in_maintenance) = (0u64, 0u64, 0u64);
    for f in client
        .query(
            "SELECT ts, code = 'entrapment' FROM events
              WHERE device_id = $1 AND event_type = 'fault' AND ts >= $2 AND ts < $3",
            &[&lift, &from, &to],
        )
        .await?
    {
        let planned = planned_at(before.as_deref(), &states, f.get(0));
        in_maintenance += u64::from(planned);
        if planned && policy == MaintenanceFaults::Exclude {
            continue;
        }
        faults += 1;
        entrapments += u64::from(f.get::<_, Option<bool>>(1) == Some(true));
    }
    let mut counters = BTreeMap::new();
    for r in client
        .query(
            "SELECT metric, ts, value FROM readings
              WHERE device_id = $1 AND metric IN ('trips', 'door_cycles')
                AND ts >= $2 AND ts <= $3
              ORDER BY metric, ts",
            &[&lift, &from, &to],
        )
        .await?
    {
        counters
            .entry(r.get::<_, String>(0))
            .or_insert_with(Vec::new)
            .push(RegisterSample {
                ts: r.get(1),
                value: r.get(2),
            });
    }
    let increase = |m: &str| counters.get(m).map_or(0.0, |s| counter_increase(s));
    Ok(LiftStats {
        scope: "lift",
        id: lift.to_owned(),
        building,
        lifts: 1,
        period_hours: (to - from).num_milliseconds() as f64 / 3.6e6,
        in_service_hours: service,
        planned_hours: planned,
        down_hours: down,
        trips: increase("trips"),
        door_cycles: increase("door_cycles"),
        faults,
        entrapments,
        faults_in_maintenance: in_maintenance,
        ..LiftStats::default()
    }
    .finish())
}

/// A lift replacement (a retrofit of the site's `lifts` purpose) judged by
/// its lifts' statistics over equal spans before and after its date.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replacement {
    pub retrofit: String,
    pub name: String,
    /// The site-local date it took effect.
    pub date: chrono::NaiveDate,
    /// The date's local midnight.
    pub at: DateTime<Utc>,
    pub lifts: Vec<String>,
    /// The length asked of each span, in days: the asked length, or less
    /// when the replacement is more recent than that.
    pub days: f64,
    /// What the figures before cover: from the first data of the lifts
    /// (never time without data counted as service) to the date.
    #[serde(default)]
    pub before_span: Span,
    #[serde(default)]
    pub after_span: Option<Span>,
    /// Whether both sides cover the same time (within an hour or 1 %):
    /// when not, compare per-day and per-trip figures, not totals.
    #[serde(default)]
    pub equal_spans: bool,
    /// What limited the spans, in words; empty when nothing did.
    #[serde(default)]
    pub note: String,
    pub before: LiftStats,
    pub after: Option<LiftStats>,
}

/// The time a side's figures cover (per lift and summed over the lifts).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Span {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Days covered per lift (the mean over the lifts).
    pub days: f64,
}

/// The first and last time a lift sent anything (readings or events) in
/// `[from, to)`.
async fn data_bounds(
    client: &Client,
    lift: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT least(r.first, e.first), greatest(r.last, e.last)
               FROM (SELECT min(ts) AS first, max(ts) AS last FROM readings
                      WHERE device_id = $1 AND ts >= $2 AND ts < $3) r,
                    (SELECT min(ts) AS first, max(ts) AS last FROM events
                      WHERE device_id = $1 AND ts >= $2 AND ts < $3) e",
            &[&lift, &from, &to],
        )
        .await?;
    Ok(row
        .get::<_, Option<DateTime<Utc>>>(0)
        .zip(row.get::<_, Option<DateTime<Utc>>>(1)))
}

/// The span a side's rows cover: earliest start, latest end, mean days.
fn span_of(bounds: &[(DateTime<Utc>, DateTime<Utc>)]) -> Option<Span> {
    let from = bounds.iter().map(|b| b.0).min()?;
    let to = bounds.iter().map(|b| b.1).max()?;
    let days = bounds
        .iter()
        .map(|(f, t)| (*t - *f).num_milliseconds() as f64 / 8.64e7)
        .sum::<f64>()
        / bounds.len() as f64;
    Some(Span { from, to, days })
}

/// Each lift replacement of the site with its lifts' statistics over the
/// `days` before its date and the same length after it (shorter when less
/// has passed by `now`; `after` absent when it lies in the future).
pub async fn replacements(
    client: &Client,
    site: &str,
    days: u32,
    now: DateTime<Utc>,
    policy: MaintenanceFaults,
) -> Result<Vec<Replacement>, estatemon_domain::schema::SchemaError> {
    use estatemon_domain::device::Purpose;
    let zone: chrono_tz::Tz = client
        .query_opt("SELECT time_zone FROM sites WHERE site_id = $1", &[&site])
        .await?
        .and_then(|r| r.get::<_, String>(0).parse().ok())
        .unwrap_or(chrono_tz::UTC);
    let lifts: Vec<(String, Option<String>, String)> = client
        .query(
            "SELECT device_id, building_id, coalesce(area, '') FROM devices
              WHERE kind = 'lift' AND site_id = $1 ORDER BY device_id",
            &[&site],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut out = Vec::new();
    for r in estatemon_domain::schema::registry::retrofits(client, site).await? {
        if r.purpose != Purpose::Lifts {
            continue;
        }
        let members: Vec<&(String, Option<String>, String)> = lifts
            .iter()
            .filter(|(id, b, area)| r.covers(id, Some(Purpose::Lifts), b.as_deref(), area))
            .collect();
        if members.is_empty() {
            continue;
        }
        // Local midnight, or the first hour after it where a clock change
        // skips midnight.
        let Some(date) = [0, 1]
            .into_iter()
            .filter_map(|h| r.date.and_hms_opt(h, 0, 0))
            .find_map(|d| d.and_local_timezone(zone).earliest())
            .map(|d| d.with_timezone(&Utc))
        else {
            continue;
        };
        let asked = Duration::days(days.max(1) as i64);
        let span = if now > date {
            asked.min(now - date)
        } else {
            asked
        };
        let mut before = Vec::new();
        let mut after = Vec::new();
        let (mut before_bounds, mut after_bounds) = (Vec::new(), Vec::new());
        let mut notes = Vec::new();
        // A replacement still to come: the span before ends now, not in
        // the future.
        let before_end = date.min(now);
        let asked_start = before_end - span;
        let fmt = |t: DateTime<Utc>| t.with_timezone(&zone).format("%Y-%m-%d %H:%M").to_string();
        // Each side covers only the time its lift sent data: the span
        // before starts at the lift's first data in it, the span after ends
        // at its last (time without data is not service).
        for (id, b, _) in &members {
            match data_bounds(client, id, asked_start, before_end).await? {
                Some((first, _)) => {
                    if first > asked_start + Duration::hours(1) {
                        notes.push(format!("{id}: data before start at {}", fmt(first)));
                    }
                    before.push(lift_row(client, id, b.clone(), first, before_end, policy).await?);
                    before_bounds.push((first, before_end));
                }
                None => notes.push(format!("{id}: no data before")),
            }
            if now > date {
                match data_bounds(client, id, date, date + span).await? {
                    Some((_, last)) => {
                        if last < date + span - Duration::hours(1) {
                            notes.push(format!("{id}: data after end at {}", fmt(last)));
                        }
                        after.push(lift_row(client, id, b.clone(), date, last, policy).await?);
                        after_bounds.push((date, last));
                    }
                    None => notes.push(format!("{id}: no data after")),
                }
            }
        }
        let total = |rows: &[LiftStats]| {
            let refs: Vec<&LiftStats> = rows.iter().collect();
            LiftStats::total("replacement", r.id.clone(), &refs)
        };
        let before_span = span_of(&before_bounds).unwrap_or(Span {
            from: asked_start,
            to: before_end,
            days: 0.0,
        });
        let after_span = span_of(&after_bounds);
        let equal_spans = after_span.as_ref().is_some_and(|a| {
            let d = (a.days - before_span.days).abs();
            d <= 1.0 / 24.0 || d <= 0.01 * a.days.max(before_span.days)
        });
        if let Some(a) = after_span.as_ref().filter(|_| !equal_spans) {
            notes.push(format!(
                "unequal spans: {:.1} days before, {:.1} days after; compare per day and per trip, not totals",
                before_span.days, a.days
            ));
        }
        out.push(Replacement {
            retrofit: r.id.clone(),
            name: r.name.clone(),
            date: r.date,
            at: date,
            lifts: members.iter().map(|(id, _, _)| id.clone()).collect(),
            days: span.num_milliseconds() as f64 / 8.64e7,
            before_span,
            after_span,
            equal_spans,
            note: notes.join("; "),
            before: total(&before),
            after: (!after.is_empty()).then(|| total(&after)),
        });
    }
    Ok(out)
}

/// The statistics of a site's lifts (one building's, when given) over
/// `[from, to)`: one row per lift, per building, and the site's.
pub async fn site(
    client: &Client,
    site: &str,
    building: Option<&[String]>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    policy: MaintenanceFaults,
) -> Result<Vec<LiftStats>, tokio_postgres::Error> {
    let lifts: Vec<(String, Option<String>)> = client
        .query(
            "SELECT device_id, building_id FROM devices
              WHERE kind = 'lift' AND site_id = $1
                AND ($2::text[] IS NULL OR building_id = ANY($2))
              ORDER BY device_id",
            &[&site, &building],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut rows = Vec::with_capacity(lifts.len());
    for (lift, building) in &lifts {
        rows.push(lift_row(client, lift, building.clone(), from, to, policy).await?);
    }
    let mut out = rows.clone();
    let buildings: std::collections::BTreeSet<Option<String>> =
        rows.iter().map(|r| r.building.clone()).collect();
    for b in buildings {
        let members: Vec<&LiftStats> = rows.iter().filter(|r| r.building == b).collect();
        let id = b.clone().unwrap_or_else(|| "(no building)".into());
        let mut t = LiftStats::total("building", id, &members);
        t.building = b;
        out.push(t);
    }
    if !rows.is_empty() {
        let all: Vec<&LiftStats> = rows.iter().collect();
        out.push(LiftStats::total("site", site.to_owned(), &all));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + Duration::hours(h)
    }

    #[test]
    fn hours_by_class_from_the_state_before_and_the_events() {
        // In fault from before the period until hour 2, in service, then 4
        // hours of maintenance, then in service to hour 24.
        let states = vec![
            (at(2), "idle".to_owned()),
            (at(10), "maintenance".to_owned()),
            (at(14), "moving".to_owned()),
            (at(15), "door_open".to_owned()),
        ];
        let (s, p, d) = state_hours(Some("fault"), &states, at(0), at(24));
        assert_eq!((s, p, d), (18.0, 4.0, 2.0));
        // Never reported a state: in service throughout.
        assert_eq!(state_hours(None, &[], at(0), at(24)), (24.0, 0.0, 0.0));
        let r = LiftStats {
            period_hours: 24.0,
            in_service_hours: 18.0,
            planned_hours: 4.0,
            down_hours: 2.0,
            trips: 400.0,
            faults: 2,
            ..LiftStats::default()
        }
        .finish();
        assert_eq!(r.availability, Some(0.9));
        assert_eq!(r.faults_per_1000_trips, Some(5.0));
        assert_eq!(r.mtbf_hours, Some(9.0));
        assert_eq!(r.trips_per_day, 400.0);
    }

    #[test]
    fn counters_through_a_reset_and_a_gap() {
        let s = |h: i64, v: f64| RegisterSample {
            ts: at(h),
            value: v,
        };
        // 100 → 150, reset to 0 → 30, a 30-hour gap, → 90.
        let samples = [s(0, 100.0), s(1, 150.0), s(2, 0.0), s(3, 30.0), s(33, 90.0)];
        assert_eq!(counter_increase(&samples), 50.0 + 30.0 + 60.0);
    }
}
