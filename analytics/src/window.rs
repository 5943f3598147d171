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

/// Reads the window for `rules` at `now` from the database.
pub async fn load(client: &Client, rules: &RuleSet, now: DateTime<Utc>) -> anyhow::Result<Window> {
    let devices = load_devices(client).await?;
    let lookback = Lookback::of(rules);
    let since = now - lookback.readings;
    let rows = client
        .query(
            "SELECT device_id, metric, ts, value FROM readings WHERE ts > $1 AND ts <= $2",
            &[&since, &now],
        )
        .await?;
    let readings = readings_frame(
        &devices,
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))),
    )?;

    let mut registers = Registers::new();
    let metrics: Vec<&str> = rules
        .rules
        .iter()
        .filter_map(|r| match &r.condition {
            Condition::Consumption(c) => Some(c.metric.as_str()),
            _ => None,
        })
        .collect();
    if !metrics.is_empty() {
        // A day and a bit covers every site's local midnight.
        let day_ago = now - Duration::hours(26);
        let rows = client
            .query(
                "SELECT device_id, metric, ts, value FROM readings
                  WHERE metric = ANY($1) AND ts > $2 AND ts <= $3 ORDER BY device_id, metric, ts",
                &[&metrics, &day_ago, &now],
            )
            .await?;
        for r in &rows {
            let device: String = r.get(0);
            let ts: DateTime<Utc> = r.get(2);
            // One reading before midnight anchors the first interval.
            if ts + Duration::minutes(30) < devices.local_midnight(&device, now) {
                continue;
            }
            registers
                .entry((device, r.get(1)))
                .or_default()
                .push((ts, r.get(3)));
        }
    }

    // Devices watched by stale rules with nothing in the frame.
    let present: std::collections::HashSet<&str> = rows.iter().map(|r| r.get(0)).collect();
    let absent: Vec<&str> = devices
        .labels
        .values()
        .filter(|d| !present.contains(d.id.as_str()))
        .filter(|d| {
            rules
                .rules
                .iter()
                .any(|r| matches!(r.condition, Condition::Stale(_)) && r.select.matches(d))
        })
        .map(|d| d.id.as_str())
        .collect();
    let mut last_seen_before = HashMap::new();
    if !absent.is_empty() {
        let rows = client
            .query(
                "SELECT d.id, (SELECT max(r.ts) FROM readings r
                                WHERE r.device_id = d.id AND r.ts <= $2
                                  AND r.ts > $2 - interval '30 days')
                   FROM unnest($1::text[]) AS d(id)",
                &[&absent, &since],
            )
            .await?;
        for r in &rows {
            if let Some(ts) = r.get::<_, Option<DateTime<Utc>>>(1) {
                last_seen_before.insert(r.get::<_, String>(0), ts);
            }
        }
    }

    let (types, since_by_type): (Vec<&str>, Vec<DateTime<Utc>>) =
        lookback.events.iter().map(|(t, d)| (*t, now - *d)).unzip();
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
            &[
                &types,
                &since_by_type,
                &since_by_type.iter().min().copied().unwrap_or(now),
                &now,
            ],
        )
        .await?;
    let events = rows
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
        .collect();
    Ok(Window {
        now,
        devices,
        readings,
        registers,
        events,
        readings_since: since,
        last_seen_before,
    })
}

/// The ledger with each site's time zone.
pub async fn load_devices(client: &Client) -> anyhow::Result<Devices> {
    let rows = client
        .query(
            "SELECT d.device_id, d.kind, d.site_id, d.building_id, d.area, d.purpose
               FROM devices d",
            &[],
        )
        .await?;
    let labels = rows
        .iter()
        .map(|r| {
            let d = DeviceLabels {
                id: r.get(0),
                kind: r.get(1),
                site: r.get(2),
                building: r.get(3),
                area: r.get(4),
                purpose: r.get(5),
            };
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
