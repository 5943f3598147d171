//! The recent window the rules look at: the device ledger, gauge readings,
//! today's registers and recent events, as polars frames.
//!
//! [`Window`] is plain data; [`load`] is the only part that reads the
//! database, so the evaluation is tested on frames built by hand.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Timelike, Utc};
use chrono_tz::Tz;
use estatemon_domain::rules::{Condition, DeviceLabels, RuleSet};
use polars::prelude::*;
use tokio_postgres::Client;

/// The ledger: each device's labels and its site's time zone.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    pub labels: HashMap<String, DeviceLabels>,
    pub zones: HashMap<String, Tz>,
}

impl Devices {
    pub fn zone_of(&self, device: &str) -> Tz {
        self.labels
            .get(device)
            .and_then(|d| d.site.as_ref())
            .and_then(|s| self.zones.get(s))
            .copied()
            .unwrap_or(chrono_tz::UTC)
    }

    /// Local minute of the day of `ts` at the device's site.
    pub fn local_minute(&self, device: &str, ts: DateTime<Utc>) -> i32 {
        let local = ts.with_timezone(&self.zone_of(device));
        (local.hour() * 60 + local.minute()) as i32
    }

    /// Start of the local day containing `now` at the device's site.
    pub fn local_midnight(&self, device: &str, now: DateTime<Utc>) -> DateTime<Utc> {
        let tz = self.zone_of(device);
        let date = now.with_timezone(&tz).date_naive();
        date.and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_local_timezone(tz).earliest())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(now - Duration::hours(24))
    }
}

/// One event row, as the event rules need it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub device: String,
    pub ts: DateTime<Utc>,
    pub event_type: String,
    pub code: Option<String>,
    pub result: Option<String>,
    pub credential: Option<String>,
    pub credential_expired: bool,
    pub duration_s: Option<f64>,
    /// For `state` events (only idle and moving are loaded: back in service).
    pub state: Option<String>,
}

/// Register readings per (device, metric), sorted by time.
pub type Registers = HashMap<(String, String), Vec<(DateTime<Utc>, f64)>>;

/// Everything one evaluation cycle sees.
#[derive(Debug, Clone)]
pub struct Window {
    pub now: DateTime<Utc>,
    pub devices: Devices,
    /// Every reading since `now - gauge_lookback`: `device`, `metric`, `ts`
    /// (epoch seconds), `value`, `minute` (local minute of the day).
    pub readings: DataFrame,
    /// Register readings of the consumption rules' metrics since the local
    /// midnight, per device, sorted by time.
    pub registers: Registers,
    pub events: Vec<EventRow>,
    /// The start of the readings frame.
    pub readings_since: DateTime<Utc>,
    /// For stale-rule devices with nothing in the frame: their last reading
    /// in the 30 days before it. A device absent here has never reported
    /// (not commissioned): it is not called stale.
    pub last_seen_before: HashMap<String, DateTime<Utc>>,
    /// When ingest last received a message from each stale-rule device
    /// (`devices.last_message_at`), whatever time its data carries; loaded
    /// only when the window is evaluated live (a replay of the past must
    /// not see today's traffic).
    pub last_message: HashMap<String, DateTime<Utc>>,
    /// Stale-rule devices that said they went offline (a Last Will) and
    /// have not come back (`devices.offline_since`); live only, as above.
    pub offline: HashMap<String, DateTime<Utc>>,
    /// What the `mode` and `expect` rules read, as of `now`.
    pub history: History,
}

/// The event history the `mode` and `expect` rules need, per device they
/// watch, as of the window's `now` (data time: a replay sees its past).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// The latest state and when the device entered it (the first event of
    /// the run of that state).
    pub state: HashMap<String, (String, DateTime<Utc>)>,
    /// Per `expect` rule, per device: the latest event that counts.
    pub last: HashMap<String, HashMap<String, DateTime<Utc>>>,
    /// Per `expect` rule, per device: its first event of the last 400
    /// days (a device that never sent the expected one is overdue `every`
    /// after it began to report; one that never reported is not
    /// commissioned).
    pub first: HashMap<String, HashMap<String, DateTime<Utc>>>,
    /// Devices with an inspection cycle, for the `inspection` rules.
    pub inspections: HashMap<String, Inspected>,
}

/// One tracked device: its class and cycle, its site's zone, and its
/// inspections (and, for lifts, its maintenance-mode entries: a
/// technician's visit is its check) over the windows the rules look at.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspected {
    /// Its class's cycle and its own, each judged on its own windows.
    pub tracks: Vec<estatemon_domain::inspection::Track>,
    pub zone: Tz,
    pub times: Vec<DateTime<Utc>>,
    /// When it began to report or was first inspected, within the windows
    /// looked at: earlier windows are not its (it was not commissioned).
    /// Never: not tracked yet.
    pub since: Option<DateTime<Utc>>,
}

/// When each tracked device began to report (kept across cycles).
pub type Commissioned = HashMap<String, DateTime<Utc>>;

/// How many past windows the `inspection` rules look at.
pub const INSPECTION_WINDOWS: i32 = 10;

impl Window {
    /// The readings frame in (device, metric, ts) order, for comparing two
    /// windows.
    pub fn readings_sorted(&self) -> PolarsResult<DataFrame> {
        self.readings
            .sort(["device", "metric", "ts"], SortMultipleOptions::default())
    }
}

/// How far back each part of the window must reach for these rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookback {
    pub readings: Duration,
    /// Per event type (`fault`, `access`, …; `state` follows `fault`).
    pub events: std::collections::BTreeMap<&'static str, Duration>,
}

impl Lookback {
    /// Readings: the longest `for`, rate window or stale limit, plus an
    /// hour, so a breach run's start is seen. Events: per type, the longest
    /// `resolve_after` or burst window of the rules on it, plus an hour, so
    /// a lift's access swipes are not read for 12 hours because its faults
    /// are.
    pub fn of(rules: &RuleSet) -> Lookback {
        let mut readings = Duration::hours(1);
        let mut events = std::collections::BTreeMap::new();
        let mut need = |t: &'static str, d: Duration| {
            let e = events.entry(t).or_insert(Duration::zero());
            *e = (*e).max(d + Duration::hours(1));
        };
        for rule in &rules.rules {
            match &rule.condition {
                Condition::Threshold(t) => readings = readings.max(t.for_.chrono()),
                Condition::Rate(r) => readings = readings.max(r.window.chrono()),
                Condition::Stale(s) => readings = readings.max(s.after.chrono()),
                Condition::Consumption(_) => {}
                Condition::Event(e) => {
                    let t = e.event_type.0.as_str();
                    need(t, e.resolve_after.chrono());
                    if t == "fault" {
                        // Back in service: the state events after a fault.
                        need("state", e.resolve_after.chrono());
                    }
                }
                Condition::Denied(d) => {
                    need("access", d.within.chrono().max(d.resolve_after.chrono()))
                }
                // Read as the latest event per device (`History`).
                Condition::Mode(_) | Condition::Expect(_) | Condition::Inspection(_) => {}
            }
        }
        Lookback {
            readings: readings + Duration::hours(1),
            events,
        }
    }
}

/// Builds the readings frame from rows (used by [`load`] and by tests).
pub fn readings_frame(
    devices: &Devices,
    rows: impl IntoIterator<Item = (String, String, DateTime<Utc>, f64)>,
) -> PolarsResult<DataFrame> {
    let (mut device, mut metric, mut ts, mut value, mut minute) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (d, m, t, v) in rows {
        minute.push(devices.local_minute(&d, t));
        device.push(d);
        metric.push(m);
        ts.push(t.timestamp());
        value.push(v);
    }
    df!(
        "device" => device,
        "metric" => metric,
        "ts" => ts,
        "value" => value,
        "minute" => minute,
    )
}

/// Register metrics of the consumption rules, and the devices they select.
pub(crate) type Scope = (Vec<String>, Vec<String>);

/// What the consumption rules read: their register metrics and the devices
/// they select (only those devices' registers are read).
pub(crate) fn consumption_scope(rules: &RuleSet, devices: &Devices) -> Scope {
    let mut metrics = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for rule in &rules.rules {
        if let Condition::Consumption(c) = &rule.condition {
            if !metrics.iter().any(|m: &String| m == c.metric.as_str()) {
                metrics.push(c.metric.as_str().to_owned());
            }
            ids.extend(
                devices
                    .labels
                    .values()
                    .filter(|d| rule.applies_to(d))
                    .map(|d| d.id.clone()),
            );
        }
    }
    (metrics, ids.into_iter().collect())
}

/// Gauge readings with `from < ts <= to`.
pub(crate) async fn fetch_readings(
    client: &Client,
    devices: &Devices,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<DataFrame> {
    // The frame holds whole seconds (`ts.timestamp()`), and the cached
    // window keeps and drops rows by them: select by the same second, so a
    // reading stamped within a boundary's second (12:00:00.400 against a
    // boundary of 12:00:00) lands on exactly one side — kept or fetched,
    // never both or neither.
    let (from, to) = (after_second(from), after_second(to));
    let rows = client
        .query(
            "SELECT device_id, metric, ts, value FROM readings WHERE ts >= $1 AND ts < $2",
            &[&from, &to],
        )
        .await?;
    Ok(readings_frame(
        devices,
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))),
    )?)
}

/// The start of the second after the one `t` is in: rows whose whole
/// second is after `t`'s are those at or after it.
pub(crate) fn after_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp() + 1, 0).expect("a time within chrono's range")
}

/// Appends the consumption rules' register readings with `from < ts <= to`
/// (in time order per device and metric).
pub(crate) async fn fetch_registers(
    client: &Client,
    scope: &Scope,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    registers: &mut Registers,
) -> anyhow::Result<()> {
    let (metrics, ids) = scope;
    if metrics.is_empty() || ids.is_empty() {
        return Ok(());
    }
    let rows = client
        .query(
            "SELECT device_id, metric, ts, value FROM readings
              WHERE metric = ANY($1) AND device_id = ANY($2) AND ts > $3 AND ts <= $4
              ORDER BY device_id, metric, ts",
            &[metrics, ids, &from, &to],
        )
        .await?;
    for r in &rows {
        registers
            .entry((r.get(0), r.get(1)))
            .or_default()
            .push((r.get(2), r.get(3)));
    }
    Ok(())
}

/// Keeps, per register, the readings since the site's local midnight (and
/// the one just before it, which anchors the first interval).
fn trim_registers(registers: &mut Registers, devices: &Devices, now: DateTime<Utc>) {
    registers.retain(|(device, _), series| {
        let midnight = devices.local_midnight(device, now);
        series.retain(|(ts, _)| *ts + Duration::minutes(30) >= midnight);
        !series.is_empty()
    });
}

/// Events of the rules' types with `from < ts <= to` and within each type's
/// lookback of `now`, in time order.
async fn fetch_events(
    client: &Client,
    lookback: &Lookback,
    from: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<EventRow>> {
    fetch_events_for(client, lookback, from, now, now).await
}

/// Events of the rules' types with `from < ts <= now`, within each type's
/// lookback of `earliest` (the first of the times they are read for: a
/// replay reads them for a span of steps at once), in time order.
pub(crate) async fn fetch_events_for(
    client: &Client,
    lookback: &Lookback,
    from: Option<DateTime<Utc>>,
    earliest: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<EventRow>> {
    let (types, since_by_type): (Vec<&str>, Vec<DateTime<Utc>>) = lookback
        .events
        .iter()
        .map(|(t, d)| (*t, earliest - *d))
        .unzip();
    let floor = since_by_type.iter().min().copied().unwrap_or(earliest);
    let from = from.map_or(floor, |f| f.max(floor));
    let rows = client
        .query(
            "SELECT e.device_id, e.ts, e.event_type, e.code, e.result, e.credential,
                    coalesce(e.credential_expired, false), e.duration_s, e.state
               FROM events e
               JOIN unnest($1::text[], $2::timestamptz[]) AS w(event_type, since)
                 ON e.event_type = w.event_type AND e.ts > w.since
              WHERE e.ts > $3 AND e.ts <= $4
                AND (e.event_type <> 'state' OR e.state IN ('idle', 'moving'))
              ORDER BY e.ts",
            &[&types, &since_by_type, &from, &now],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| EventRow {
            device: r.get(0),
            ts: r.get(1),
            event_type: r.get(2),
            code: r.get(3),
            result: r.get(4),
            credential: r.get(5),
            credential_expired: r.get(6),
            duration_s: r.get(7),
            state: r.get(8),
        })
        .collect())
}

/// The ids of the devices some stale rule watches.
pub(crate) fn stale_watched<'a>(
    rules: &'a RuleSet,
    devices: &'a Devices,
) -> impl Iterator<Item = &'a str> {
    devices
        .labels
        .values()
        .filter(|d| {
            rules
                .rules
                .iter()
                .any(|r| matches!(r.condition, Condition::Stale(_)) && r.applies_to(d))
        })
        .map(|d| d.id.as_str())
}

/// For stale-rule devices with nothing in the readings frame: their last
/// reading in the 30 days before `since`.
async fn fetch_last_seen(
    client: &Client,
    rules: &RuleSet,
    devices: &Devices,
    readings: &DataFrame,
    since: DateTime<Utc>,
) -> anyhow::Result<HashMap<String, DateTime<Utc>>> {
    let device = readings.column("device")?.str()?;
    let present: std::collections::HashSet<&str> =
        (0..device.len()).filter_map(|i| device.get(i)).collect();
    let absent: Vec<&str> = stale_watched(rules, devices)
        .filter(|id| !present.contains(id))
        .collect();
    let mut last_seen_before = HashMap::new();
    if !absent.is_empty() {
        let rows = client
            .query(
                "SELECT d.id, (SELECT max(r.ts) FROM readings r
                                WHERE r.device_id = d.id AND r.ts < $2
                                  AND r.ts > $2 - interval '30 days')
                   FROM unnest($1::text[]) AS d(id)",
                &[&absent, &after_second(since)],
            )
            .await?;
        for r in &rows {
            if let Some(ts) = r.get::<_, Option<DateTime<Utc>>>(1) {
                last_seen_before.insert(r.get::<_, String>(0), ts);
            }
        }
    }
    Ok(last_seen_before)
}

/// The ids of the devices `rule` watches.
pub(crate) fn watched<'a>(
    rule: &estatemon_domain::rules::Rule,
    devices: &'a Devices,
) -> Vec<&'a str> {
    devices
        .labels
        .values()
        .filter(|d| rule.applies_to(d))
        .map(|d| d.id.as_str())
        .collect()
}

/// What the `mode` and `expect` rules read: one indexed lookup per
/// watched device (the events' primary key leads with the device).
async fn fetch_history(
    client: &Client,
    rules: &RuleSet,
    devices: &Devices,
    now: DateTime<Utc>,
    commissioned: &mut Commissioned,
) -> anyhow::Result<History> {
    let mut h = History::default();
    let mut mode_devices = std::collections::BTreeSet::new();
    let mut inspected = std::collections::BTreeSet::new();
    for rule in &rules.rules {
        match &rule.condition {
            Condition::Mode(_) => mode_devices.extend(watched(rule, devices)),
            // A fault alert stays open while its lift reports a down state.
            Condition::Event(e) if crate::evaluate::follows_state(e) => {
                mode_devices.extend(watched(rule, devices))
            }
            Condition::Inspection(_) => inspected.extend(watched(rule, devices)),
            Condition::Expect(e) => {
                let ids = watched(rule, devices);
                if ids.is_empty() {
                    continue;
                }
                let rows = client
                    .query(
                        "SELECT d.id,
                                (SELECT e.ts FROM events e
                                  WHERE e.device_id = d.id AND e.event_type = $2
                                    AND ($3::text IS NULL OR e.result = $3)
                                    AND e.ts <= $4::timestamptz AND e.ts > $4::timestamptz - interval '400 days'
                                  ORDER BY e.ts DESC LIMIT 1),
                                (SELECT e.ts FROM events e
                                  WHERE e.device_id = d.id
                                    AND e.ts <= $4::timestamptz AND e.ts > $4::timestamptz - interval '400 days'
                                  ORDER BY e.ts LIMIT 1)
                           FROM unnest($1::text[]) AS d(id)",
                        &[&ids, &e.event_type.0.as_str(), &e.result, &now],
                    )
                    .await?;
                let last = h.last.entry(rule.name.clone()).or_default();
                let first = h.first.entry(rule.name.clone()).or_default();
                for r in &rows {
                    let id: String = r.get(0);
                    if let Some(t) = r.get::<_, Option<DateTime<Utc>>>(1) {
                        last.insert(id.clone(), t);
                    }
                    if let Some(t) = r.get::<_, Option<DateTime<Utc>>>(2) {
                        first.insert(id, t);
                    }
                }
            }
            _ => {}
        }
    }
    if !mode_devices.is_empty() {
        let ids: Vec<&str> = mode_devices.into_iter().collect();
        let rows = client
            .query(
                "SELECT d.id, cur.state,
                        (SELECT min(e.ts) FROM events e
                          WHERE e.device_id = d.id AND e.event_type = 'state' AND e.ts <= cur.ts
                            AND e.ts > coalesce(
                                (SELECT max(p.ts) FROM events p
                                  WHERE p.device_id = d.id AND p.event_type = 'state'
                                    AND p.state <> cur.state AND p.ts < cur.ts
                                    AND p.ts > $2::timestamptz - interval '90 days'),
                                $2::timestamptz - interval '90 days'))
                   FROM unnest($1::text[]) AS d(id)
                   CROSS JOIN LATERAL (SELECT e.state, e.ts FROM events e
                                        WHERE e.device_id = d.id AND e.event_type = 'state'
                                          AND e.ts <= $2::timestamptz AND e.ts > $2::timestamptz - interval '90 days'
                                        ORDER BY e.ts DESC LIMIT 1) cur",
                &[&ids, &now],
            )
            .await?;
        for r in &rows {
            if let (Some(state), Some(since)) = (
                r.get::<_, Option<String>>(1),
                r.get::<_, Option<DateTime<Utc>>>(2),
            ) {
                h.state.insert(r.get(0), (state, since));
            }
        }
    }
    if !inspected.is_empty() {
        h.inspections = fetch_inspections(client, devices, inspected, now, commissioned).await?;
    }
    Ok(h)
}

/// The tracked devices among `ids`, with their inspections over the last
/// [`INSPECTION_WINDOWS`] windows of their own cycle.
async fn fetch_inspections(
    client: &Client,
    devices: &Devices,
    ids: std::collections::BTreeSet<&str>,
    now: DateTime<Utc>,
    commissioned: &mut Commissioned,
) -> anyhow::Result<HashMap<String, Inspected>> {
    let mut out = tracked_devices(client, devices, ids).await?;
    if out.is_empty() {
        return Ok(out);
    }
    let (tracked, since): (Vec<String>, Vec<DateTime<Utc>>) = out
        .iter()
        .map(|(id, i)| (id.clone(), inspection_span_start(i, now)))
        .unzip();
    for (id, t) in inspection_times(client, &tracked, &since, now).await? {
        if let Some(i) = out.get_mut(&id) {
            i.times.push(t);
        }
    }
    // When each began to report (its first hour of readings, or its first
    // event) within the span, for the devices not seen to before: once
    // known it is kept (an earlier start is harmless, windows are clamped
    // to the span), so steady cycles probe only devices still silent.
    let (unknown, unknown_since): (Vec<&String>, Vec<&DateTime<Utc>>) = tracked
        .iter()
        .zip(&since)
        .filter(|(id, _)| commissioned.get(*id).is_none_or(|t| *t > now))
        .unzip();
    probe_commissioned(client, &unknown, &unknown_since, now, commissioned).await?;
    for (id, i) in out.iter_mut() {
        let first = [commissioned.get(id).copied(), i.times.iter().min().copied()];
        i.since = first.into_iter().flatten().filter(|t| *t <= now).min();
    }
    Ok(out)
}

/// The start of the span whose inspections the window holds for `i` at
/// `now` (two windows more than the rules look at).
pub(crate) fn inspection_span_start(i: &Inspected, now: DateTime<Utc>) -> DateTime<Utc> {
    let longest = i
        .tracks
        .iter()
        .map(|(_, c)| c.longest())
        .max()
        .unwrap_or_else(|| Duration::days(1));
    now - longest * (INSPECTION_WINDOWS + 2)
}

/// The devices among `ids` the ledger tracks for inspections (class or
/// cycle), with no inspection times yet.
pub(crate) async fn tracked_devices(
    client: &Client,
    devices: &Devices,
    ids: std::collections::BTreeSet<&str>,
) -> anyhow::Result<HashMap<String, Inspected>> {
    use estatemon_domain::inspection::from_ledger;
    let ids: Vec<&str> = ids.into_iter().collect();
    let mut out: HashMap<String, Inspected> = HashMap::new();
    for r in client
        .query(
            "SELECT device_id, class, inspection_cycle FROM devices
              WHERE device_id = ANY($1) AND (class IS NOT NULL OR inspection_cycle IS NOT NULL)",
            &[&ids],
        )
        .await?
    {
        let id: String = r.get(0);
        let tracks = from_ledger(r.get(1), r.get(2));
        if !tracks.is_empty() {
            let zone = devices.zone_of(&id);
            out.insert(
                id,
                Inspected {
                    tracks,
                    zone,
                    times: Vec::new(),
                    since: None,
                },
            );
        }
    }
    Ok(out)
}

/// Inspections and maintenance visits `(device, time)` of each tracked
/// device after its `since` and up to `until`.
pub(crate) async fn inspection_times(
    client: &Client,
    tracked: &[String],
    since: &[DateTime<Utc>],
    until: DateTime<Utc>,
) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
    use estatemon_domain::inspection::MAINTENANCE_VISIT_SQL;
    let rows = client
        .query(
            &format!(
                "SELECT i.device_id, i.inspected_at FROM inspections i
                   JOIN unnest($1::text[], $2::timestamptz[]) AS w(id, since)
                     ON i.device_id = w.id AND i.inspected_at > w.since
                  WHERE i.inspected_at <= $3
                 UNION ALL
                 SELECT e.device_id, e.ts FROM events e
                   JOIN unnest($1::text[], $2::timestamptz[]) AS w(id, since)
                     ON e.device_id = w.id AND e.ts > w.since
                  WHERE {MAINTENANCE_VISIT_SQL} AND e.ts <= $3"
            ),
            &[&tracked, &since, &until],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Finds when each of `unknown` began to report after its `since` and up
/// to `until` (its first hour of readings, or its first event) and records
/// it in `commissioned`.
pub(crate) async fn probe_commissioned(
    client: &Client,
    unknown: &[&String],
    unknown_since: &[&DateTime<Utc>],
    until: DateTime<Utc>,
    commissioned: &mut Commissioned,
) -> anyhow::Result<()> {
    if unknown.is_empty() {
        return Ok(());
    }
    for r in client
        .query(
            "SELECT w.id,
                    (SELECT min(h.bucket) FROM readings_hourly h WHERE h.device_id = w.id
                        AND h.bucket > w.since - interval '1 hour' AND h.bucket <= $3),
                    (SELECT e.ts FROM events e WHERE e.device_id = w.id AND e.ts > w.since
                        AND e.ts <= $3 ORDER BY e.ts LIMIT 1)
               FROM unnest($1::text[], $2::timestamptz[]) AS w(id, since)",
            &[&unknown, &unknown_since, &until],
        )
        .await?
    {
        let first = [r.get::<_, Option<DateTime<Utc>>>(1), r.get(2)]
            .into_iter()
            .flatten()
            .min();
        if let Some(t) = first {
            commissioned.insert(r.get(0), t);
        }
    }
    // Readings not yet rolled up (a backfill before the maintenance
    // round): the raw table, for the few devices still unknown.
    let (raw, raw_since): (Vec<&String>, Vec<&DateTime<Utc>>) = unknown
        .iter()
        .zip(unknown_since)
        .filter(|(id, _)| !commissioned.contains_key(**id))
        .map(|(id, s)| (*id, *s))
        .unzip();
    if !raw.is_empty() {
        for r in client
            .query(
                "SELECT w.id, (SELECT r.ts FROM readings r WHERE r.device_id = w.id
                                  AND r.ts > w.since AND r.ts <= $3 ORDER BY r.ts LIMIT 1)
                   FROM unnest($1::text[], $2::timestamptz[]) AS w(id, since)",
                &[&raw, &raw_since, &until],
            )
            .await?
        {
            if let Some(t) = r.get::<_, Option<DateTime<Utc>>>(1) {
                commissioned.insert(r.get(0), t);
            }
        }
    }
    Ok(())
}

/// How close to the wall clock an evaluation must be to count as live.
const LIVE_WITHIN: Duration = Duration::minutes(2);

type Instants = HashMap<String, DateTime<Utc>>;

/// `devices.last_message_at` and `offline_since` of the stale-rule
/// devices, when `now` is live.
async fn fetch_last_message(
    client: &Client,
    rules: &RuleSet,
    devices: &Devices,
    now: DateTime<Utc>,
) -> anyhow::Result<(Instants, Instants)> {
    if (Utc::now() - now).abs() > LIVE_WITHIN {
        return Ok(Default::default());
    }
    let watched: Vec<&str> = stale_watched(rules, devices).collect();
    if watched.is_empty() {
        return Ok(Default::default());
    }
    let rows = client
        .query(
            "SELECT device_id, last_message_at, offline_since FROM devices
              WHERE device_id = ANY($1)
                AND (last_message_at IS NOT NULL OR offline_since IS NOT NULL)",
            &[&watched],
        )
        .await?;
    let pick = |k: usize| -> Instants {
        rows.iter()
            .filter_map(|r| {
                r.get::<_, Option<DateTime<Utc>>>(k)
                    .map(|t| (r.get::<_, String>(0), t))
            })
            .collect()
    };
    // Heard from after `now` (a batch committed while this cycle read its
    // window): heard from, all the same; the stale rule takes it as heard
    // at `now`. Dropping it made a meter sending old data (catching up,
    // or the demo's simulator running behind the clock) look silent and
    // raised a false meter_offline. An offline Will after `now` is not
    // yet news.
    let mut offline = pick(2);
    offline.retain(|_, t| *t <= now);
    Ok((pick(1), offline))
}

/// Reads the whole window for `rules` at `now` from the database.
pub async fn load(client: &Client, rules: &RuleSet, now: DateTime<Utc>) -> anyhow::Result<Window> {
    let devices = load_devices(client).await?;
    let scope = consumption_scope(rules, &devices);
    let mut commissioned = Commissioned::new();
    read_whole(
        client,
        rules,
        &Lookback::of(rules),
        &scope,
        devices,
        now,
        &mut commissioned,
    )
    .await
}

/// The whole window, given the ledger and what the rules read.
async fn read_whole(
    client: &Client,
    rules: &RuleSet,
    lookback: &Lookback,
    scope: &Scope,
    devices: Devices,
    now: DateTime<Utc>,
    commissioned: &mut Commissioned,
) -> anyhow::Result<Window> {
    let since = now - lookback.readings;
    let readings = fetch_readings(client, &devices, since, now).await?;
    let mut registers = Registers::new();
    // A day and a bit covers every site's local midnight.
    fetch_registers(
        client,
        scope,
        now - Duration::hours(26),
        now,
        &mut registers,
    )
    .await?;
    trim_registers(&mut registers, &devices, now);
    let last_seen_before = fetch_last_seen(client, rules, &devices, &readings, since).await?;
    let (last_message, offline) = fetch_last_message(client, rules, &devices, now).await?;
    let events = fetch_events(client, lookback, None, now).await?;
    let history = fetch_history(client, rules, &devices, now, commissioned).await?;
    Ok(Window {
        now,
        devices,
        readings,
        registers,
        events,
        readings_since: since,
        last_seen_before,
        last_message,
        offline,
        history,
    })
}

/// How late (by its own timestamp) a row may be committed and still be
/// seen by the next incremental cycle. Later rows are picked up by the
/// next full reload.
pub const ALLOWED_LATENESS: Duration = Duration::minutes(5);
/// How often the cached window is reloaded in full.
pub const FULL_RELOAD_EVERY: Duration = Duration::minutes(15);

/// The window kept between cycles, so that each cycle reads only what
/// arrived since the last one (minus [`ALLOWED_LATENESS`]) instead of the
/// whole window: the analytics job's incremental evaluation.
#[derive(Default)]
pub struct WindowCache {
    window: Option<Window>,
    /// What the cached window was read for (a rules reload invalidates it).
    scope: Option<(Lookback, Scope)>,
    full_at: Option<DateTime<Utc>>,
    /// Whether the last [`WindowCache::load`] read everything.
    pub last_was_full: bool,
    /// When each tracked device began to report, once found.
    commissioned: Commissioned,
}

impl WindowCache {
    /// The window at `now`: the cached one brought forward, or a full load
    /// when there is none, the rules or devices changed, time went
    /// backwards, or [`FULL_RELOAD_EVERY`] has passed.
    pub async fn load(
        &mut self,
        client: &Client,
        rules: &RuleSet,
        now: DateTime<Utc>,
    ) -> anyhow::Result<&Window> {
        let devices = load_devices(client).await?;
        let lookback = Lookback::of(rules);
        let scope = consumption_scope(rules, &devices);
        let reusable = match (&self.window, &self.scope, self.full_at) {
            (Some(w), Some((l, sc)), Some(full_at)) => {
                *l == lookback
                    && *sc == scope
                    && w.devices.labels == devices.labels
                    && w.devices.zones == devices.zones
                    && now >= w.now
                    && now - full_at < FULL_RELOAD_EVERY
            }
            _ => false,
        };
        if !reusable {
            let whole = read_whole(
                client,
                rules,
                &lookback,
                &scope,
                devices,
                now,
                &mut self.commissioned,
            )
            .await?;
            self.window = Some(whole);
            self.scope = Some((lookback, scope));
            self.full_at = Some(now);
            self.last_was_full = true;
            return Ok(self.window.as_ref().expect("just loaded"));
        }
        let mut w = self.window.take().expect("checked above");
        let cut = w.now - ALLOWED_LATENESS;
        let since = now - lookback.readings;
        // Readings: keep (since, cut], read (cut, now].
        let kept = w
            .readings
            .lazy()
            .filter(
                col("ts")
                    .gt(lit(since.timestamp()))
                    .and(col("ts").lt_eq(lit(cut.timestamp()))),
            )
            .collect()?;
        let fresh = fetch_readings(client, &devices, cut, now).await?;
        let readings = kept.vstack(&fresh)?;
        // Registers: drop what will be re-read, read it and the new part.
        for series in w.registers.values_mut() {
            series.retain(|(ts, _)| *ts <= cut);
        }
        fetch_registers(client, &scope, cut, now, &mut w.registers).await?;
        trim_registers(&mut w.registers, &devices, now);
        // Events: the same, then each type's lookback.
        w.events.retain(|e| {
            e.ts <= cut
                && lookback
                    .events
                    .get(e.event_type.as_str())
                    .is_some_and(|d| e.ts > now - *d)
        });
        w.events
            .extend(fetch_events(client, &lookback, Some(cut), now).await?);
        let last_seen_before = fetch_last_seen(client, rules, &devices, &readings, since).await?;
        let (last_message, offline) = fetch_last_message(client, rules, &devices, now).await?;
        let history = fetch_history(client, rules, &devices, now, &mut self.commissioned).await?;
        self.window = Some(Window {
            now,
            devices,
            readings,
            registers: w.registers,
            events: w.events,
            readings_since: since,
            last_seen_before,
            last_message,
            offline,
            history,
        });
        self.last_was_full = false;
        Ok(self.window.as_ref().expect("just stored"))
    }
}

/// The ledger with each site's time zone.
pub async fn load_devices(client: &Client) -> anyhow::Result<Devices> {
    use estatemon_domain::schema::registry::{labels as device_labels, LABEL_COLUMNS};
    let rows = client
        .query(&format!("SELECT {LABEL_COLUMNS} FROM devices"), &[])
        .await?;
    let labels = rows
        .iter()
        .map(|r| {
            let d = device_labels(r);
            (d.id.clone(), d)
        })
        .collect();
    let zones = client
        .query("SELECT site_id, time_zone FROM sites", &[])
        .await?
        .iter()
        .filter_map(|r| {
            let tz: String = r.get(1);
            tz.parse::<Tz>().ok().map(|tz| (r.get::<_, String>(0), tz))
        })
        .collect();
    Ok(Devices { labels, zones })
}
