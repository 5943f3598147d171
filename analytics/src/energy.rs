//! What savings and reports read: a site, its meters, and consumption per
//! interval derived from the meters' registers (the one derivation in
//! `estatemon_domain::consumption`, so rollovers, resets and gaps are
//! handled as everywhere else), plus the drivers that explain use — gate
//! entries and outdoor temperature per local day.
//!
//! Registers come from raw `readings` (15-minute detail, for the report's
//! own quarter) or from `readings_hourly` (the register at each hour start,
//! for long histories: a year of a thousand meters is 8.8 M hourly rows
//! instead of 35 M readings). Rollups are brought up to date first.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc};
use chrono_tz::Tz;
use estatemon_domain::consumption::{derive, Correction, RegisterPolicy, RegisterSample};
use estatemon_domain::device::{Purpose, Utility};
use estatemon_domain::schema::{self, rollups};
use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

#[derive(Debug, thiserror::Error)]
pub enum EnergyError {
    #[error("site `{0}` is not in the registry (load it with `estatemon registry load`)")]
    UnknownSite(String),
    #[error("site `{site}` has time zone `{tz}`, which is not an IANA zone")]
    BadZone { site: String, tz: String },
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("schema: {0}")]
    Schema(#[from] schema::SchemaError),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BuildingInfo {
    pub id: String,
    pub name: String,
    pub floor_area_m2: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SiteInfo {
    pub id: String,
    pub name: String,
    pub tz: Tz,
    pub latitude: f64,
    pub longitude: f64,
    pub floor_area_m2: Option<f64>,
    pub buildings: Vec<BuildingInfo>,
    /// The registry's outdoor temperature sensors (`[[site]] weather`).
    pub weather_devices: Vec<String>,
    /// The registry's `electricity_supplier`: its tariff and grid factor.
    pub electricity_supplier: Option<String>,
}

/// Local midnight starting `date` in `tz`, in UTC.
pub fn midnight_in(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    estatemon_domain::calendar::local_midnight(date, tz)
}

impl SiteInfo {
    /// Local midnight starting `date` at the site, in UTC.
    pub fn midnight(&self, date: NaiveDate) -> DateTime<Utc> {
        midnight_in(self.tz, date)
    }

    pub fn local_date(&self, ts: DateTime<Utc>) -> NaiveDate {
        ts.with_timezone(&self.tz).date_naive()
    }
}

/// A meter of the site (electricity, water or gas).
#[derive(Debug, Clone, PartialEq)]
pub struct Meter {
    pub id: String,
    pub name: Option<String>,
    pub utility: Utility,
    pub building: Option<String>,
    pub area: String,
    pub purpose: Option<Purpose>,
}

impl Meter {
    pub fn purpose_str(&self) -> &'static str {
        self.purpose.map_or("unassigned", Purpose::as_str)
    }
}

fn parse_enum<T: serde::de::DeserializeOwned>(s: Option<String>) -> Option<T> {
    s.and_then(|s| serde_json::from_value(serde_json::Value::String(s)).ok())
}

/// A site's time zone from its registry text.
pub fn parse_zone(site: &str, tz: String) -> Result<Tz, EnergyError> {
    tz.parse::<Tz>().map_err(|_| EnergyError::BadZone {
        site: site.to_owned(),
        tz,
    })
}

/// The site and its meters (devices of a meter kind), in id order.
pub async fn load_site(client: &Client, site: &str) -> Result<(SiteInfo, Vec<Meter>), EnergyError> {
    let row = client
        .query_opt(
            "SELECT name, time_zone, latitude, longitude, floor_area_m2, weather_devices,
                    electricity_supplier
               FROM sites WHERE site_id = $1",
            &[&site],
        )
        .await?
        .ok_or_else(|| EnergyError::UnknownSite(site.to_owned()))?;
    let tz = parse_zone(site, row.get(1))?;
    let buildings = client
        .query(
            "SELECT building_id, name, floor_area_m2 FROM buildings WHERE site_id = $1 ORDER BY building_id",
            &[&site],
        )
        .await?
        .iter()
        .map(|r| BuildingInfo {
            id: r.get(0),
            name: r.get(1),
            floor_area_m2: r.get(2),
        })
        .collect();
    let info = SiteInfo {
        id: site.to_owned(),
        name: row.get(0),
        tz,
        latitude: row.get::<_, Option<f64>>(2).unwrap_or(0.0),
        longitude: row.get::<_, Option<f64>>(3).unwrap_or(0.0),
        floor_area_m2: row.get(4),
        buildings,
        weather_devices: row.get(5),
        electricity_supplier: row.get(6),
    };
    let meters = client
        .query(
            "SELECT device_id, name, kind, building_id, area, purpose FROM devices
              WHERE site_id = $1 AND kind IN ('electricity_meter', 'water_meter', 'gas_meter')
              ORDER BY device_id",
            &[&site],
        )
        .await?
        .into_iter()
        .filter_map(|r| {
            let kind: estatemon_domain::device::DeviceKind = parse_enum(r.get(2))?;
            Some(Meter {
                id: r.get(0),
                name: r.get(1),
                utility: kind.utility()?,
                building: r.get(3),
                area: r.get::<_, Option<String>>(4).unwrap_or_default(),
                purpose: parse_enum(r.get(5)),
            })
        })
        .collect();
    Ok((info, meters))
}

/// Where registers are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `readings`: every register reading (15-minute detail).
    Raw,
    /// `readings_hourly`: the first register reading of each hour.
    Hourly,
}

/// Consumption intervals of many meters, column by column (one entry per
/// interval), ready to become a polars frame.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Index into the meter list.
    pub meter: Vec<u32>,
    /// Interval start, ms since the epoch.
    pub start_ms: Vec<i64>,
    /// Interval length in hours.
    pub hours: Vec<f64>,
    /// Consumed kWh or m³; `None` where it cannot be known.
    pub used: Vec<Option<f64>>,
    /// Corrections applied, per meter (rollovers, resets, gaps, spikes …).
    pub corrections: Vec<HashMap<Correction, u32>>,
    /// Each corrected interval, with its meter and time: what a report
    /// names (a bridged gap, a reset, a replacement).
    pub corrected: Vec<Corrected>,
}

/// One interval a correction was applied to.
#[derive(Debug, Clone, PartialEq)]
pub struct Corrected {
    /// Index into the meter list.
    pub meter: u32,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub correction: Correction,
    /// The interval's use as derived (estimated over a gap); `None`: unknown.
    pub used: Option<f64>,
}

impl Usage {
    pub fn len(&self) -> usize {
        self.meter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meter.is_empty()
    }
}

/// Brings hourly and daily rollups up to date (the dirty hours writers
/// marked), so a report sees every committed reading.
pub async fn refresh_rollups(client: &mut Client) -> Result<usize, EnergyError> {
    let mode = schema::recorded_mode(client).await?;
    let mut total = 0;
    loop {
        let n = rollups::refresh_dirty(client, mode, 2000).await?;
        total += n;
        if n == 0 {
            return Ok(total);
        }
    }
}

/// Consumption of `meters` in intervals starting in `[from, to)`.
///
/// Registers are read from a little before `from` (so the first interval
/// is anchored) to `to`; intervals are cut by the derivation, one per pair
/// of consecutive readings.
pub async fn load_usage(
    client: &Client,
    meters: &[Meter],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    source: Source,
) -> Result<Usage, EnergyError> {
    let ids: Vec<&str> = meters.iter().map(|m| m.id.as_str()).collect();
    let index: HashMap<&str, u32> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i as u32))
        .collect();
    let mut series: Vec<Vec<RegisterSample>> = vec![Vec::new(); meters.len()];
    let lead = Duration::hours(3);
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    // Each meter's own register: kWh for electricity, m³ for water and gas
    // (a device that reports both is read for the one its kind measures).
    let ids_of = |metric: estatemon_domain::Metric| {
        let list: Vec<String> = meters
            .iter()
            .filter(|m| m.utility.register() == metric)
            .map(|m| quote(&m.id))
            .collect();
        if list.is_empty() {
            "NULL".to_owned()
        } else {
            list.join(",")
        }
    };
    let (kwh_ids, m3_ids) = (
        ids_of(estatemon_domain::Metric::EnergyKwh),
        ids_of(estatemon_domain::Metric::VolumeM3),
    );
    if !ids.is_empty() {
        let (from_s, to_s) = (
            quote(&(from - lead).to_rfc3339()),
            quote(&(to + Duration::hours(1)).to_rfc3339()),
        );
        let registers = format!(
            "((metric = 'energy_kwh' AND device_id IN ({kwh_ids}))
               OR (metric = 'volume_m3' AND device_id IN ({m3_ids})))"
        );
        let sql = match source {
            Source::Raw => format!(
                "COPY (SELECT device_id, ts, value FROM readings
                        WHERE {registers} AND ts >= {from_s} AND ts <= {to_s})
                 TO STDOUT (FORMAT binary)"
            ),
            Source::Hourly => format!(
                "COPY (SELECT device_id, bucket, first FROM readings_hourly
                        WHERE {registers} AND bucket >= {from_s} AND bucket <= {to_s}
                          AND first IS NOT NULL)
                 TO STDOUT (FORMAT binary)"
            ),
        };
        let stream = client.copy_out(sql.as_str()).await?;
        let rows = BinaryCopyOutStream::new(stream, &[Type::TEXT, Type::TIMESTAMPTZ, Type::FLOAT8]);
        pin_mut!(rows);
        let mut last: Option<(String, u32)> = None;
        while let Some(row) = rows.try_next().await? {
            let id: &str = row.get(0);
            let i = match &last {
                Some((l, i)) if l == id => *i,
                _ => {
                    let Some(&i) = index.get(id) else { continue };
                    last = Some((id.to_owned(), i));
                    i
                }
            };
            series[i as usize].push(RegisterSample {
                ts: row.get(1),
                value: row.get(2),
            });
        }
    }
    let policy = RegisterPolicy {
        max_gap: match source {
            Source::Raw => Duration::hours(2),
            Source::Hourly => Duration::hours(3),
        },
        ..RegisterPolicy::default()
    };
    let mut usage = Usage {
        corrections: vec![HashMap::new(); meters.len()],
        ..Usage::default()
    };
    let (from_ms, to_ms) = (from.timestamp_millis(), to.timestamp_millis());
    // Each meter's readings are freed as soon as its intervals exist: a
    // quarter of a thousand meters is 8.6 M of them.
    for (i, mut samples) in series.into_iter().enumerate() {
        samples.sort_unstable_by_key(|s| s.ts);
        let intervals = derive(&samples, &policy);
        drop(samples);
        for interval in intervals {
            let start = interval.start.timestamp_millis();
            if start < from_ms || start >= to_ms {
                continue;
            }
            if interval.correction != Correction::None {
                *usage.corrections[i].entry(interval.correction).or_default() += 1;
                usage.corrected.push(Corrected {
                    meter: i as u32,
                    start: interval.start,
                    end: interval.end,
                    correction: interval.correction,
                    used: interval.consumption,
                });
            }
            usage.meter.push(i as u32);
            usage.start_ms.push(start);
            usage
                .hours
                .push((interval.end - interval.start).num_milliseconds() as f64 / 3.6e6);
            usage.used.push(interval.consumption);
        }
    }
    Ok(usage)
}

/// Granted entries through the site's gates per local day in `[from, to)`
/// (direction `in`, or no direction given).
pub async fn gate_entries_by_day(
    client: &Client,
    site: &SiteInfo,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<HashMap<NaiveDate, f64>, EnergyError> {
    // The gates first, then their events by primary key: a join lets the
    // planner loop over every partition once per device when statistics
    // are stale (right after a backfill).
    let gates: Vec<String> = client
        .query(
            "SELECT device_id FROM devices WHERE site_id = $1 AND kind = 'access_gate'",
            &[&site.id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if gates.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = client
        .query(
            // A day appears when the gates reported anything that day (so
            // its count may be a true 0); a day they reported nothing is
            // absent: unknown occupancy, never read as zero.
            "SELECT (ts AT TIME ZONE $2)::date,
                    (count(*) FILTER (WHERE event_type = 'access' AND result = 'granted'
                                        AND (direction = 'in' OR direction IS NULL)))::float8
               FROM events
              WHERE device_id = ANY($1)
                AND ts >= $3 AND ts < $4
              GROUP BY 1",
            &[
                &gates,
                &site.tz.name(),
                &site.midnight(from),
                &site.midnight(to),
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The hourly mean outdoor temperatures of each local day (≥ 12 hours
/// known), from the site's named weather devices only.
pub async fn temperatures_by_day(
    client: &Client,
    site: &SiteInfo,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<HashMap<NaiveDate, Vec<f64>>, EnergyError> {
    let rows = client
        .query(
            "SELECT (bucket AT TIME ZONE $2)::date, array_agg(t ORDER BY bucket)
               FROM (SELECT h.bucket, avg(h.avg) AS t
                       FROM readings_hourly h JOIN devices d USING (device_id)
                      WHERE d.site_id = $1 AND h.metric = 'temperature_c'
                        AND d.device_id = ANY($5)
                        AND h.bucket >= $3 AND h.bucket < $4
                      GROUP BY h.bucket) hours
              GROUP BY 1 HAVING count(*) >= 12",
            &[
                &site.id,
                &site.tz.name(),
                &site.midnight(from),
                &site.midnight(to),
                &site.weather_devices,
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Outdoor temperature (°C) of each hour over `[from, to)` local dates,
/// keyed by the hour's start (ms since the epoch), from the site's named
/// weather devices (their mean where several).
pub async fn temperatures_by_hour(
    client: &Client,
    site: &SiteInfo,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<HashMap<i64, f64>, EnergyError> {
    let rows = client
        .query(
            "SELECT (extract(epoch FROM h.bucket) * 1000)::int8, avg(h.avg)
               FROM readings_hourly h JOIN devices d USING (device_id)
              WHERE d.site_id = $1 AND h.metric = 'temperature_c'
                AND d.device_id = ANY($4)
                AND h.bucket >= $2 AND h.bucket < $3
              GROUP BY h.bucket",
            &[
                &site.id,
                &site.midnight(from),
                &site.midnight(to),
                &site.weather_devices,
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Site-local calendar fields of an instant.
pub fn local_fields(tz: Tz, ms: i64) -> (NaiveDate, u32) {
    let t = DateTime::<Utc>::from_timestamp_millis(ms)
        .expect("a valid instant")
        .with_timezone(&tz);
    (t.date_naive(), t.hour())
}

/// Whether a date is Saturday or Sunday.
pub fn is_weekend(d: NaiveDate) -> bool {
    d.weekday().number_from_monday() >= 6
}

/// Usage as a polars frame with site-local calendar columns:
/// `meter` (u32), `start_ms` (i64), `day` (i32, days since 1970-01-01
/// local), `month` (i32, yyyymm), `hour` (i32, local hour), `weekday`
/// (bool, Monday..Friday), `hours` (f64), `used` (f64, null when unknown).
///
/// Takes the usage by value: its columns move into the frame, so a large
/// quarter is not held twice.
pub fn usage_frame(
    usage: Usage,
    tz: Tz,
) -> polars::prelude::PolarsResult<polars::prelude::DataFrame> {
    use polars::prelude::*;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
    let n = usage.len();
    let (mut day, mut month, mut hour, mut weekday) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    // Intervals come in time order per meter: cache the local fields per
    // UTC hour instead of converting every 15-minute start.
    let mut cache: HashMap<i64, (i32, i32, i32, bool)> = HashMap::new();
    for &ms in &usage.start_ms {
        let key = ms.div_euclid(900_000);
        let (d, m, h, w) = *cache.entry(key).or_insert_with(|| {
            let (date, h) = local_fields(tz, ms);
            (
                (date - epoch).num_days() as i32,
                date.year() * 100 + date.month() as i32,
                h as i32,
                !is_weekend(date),
            )
        });
        day.push(d);
        month.push(m);
        hour.push(h);
        weekday.push(w);
    }
    DataFrame::new(
        n,
        vec![
            Column::new("meter".into(), usage.meter),
            Column::new("start_ms".into(), usage.start_ms),
            Column::new("day".into(), day),
            Column::new("month".into(), month),
            Column::new("hour".into(), hour),
            Column::new("weekday".into(), weekday),
            Column::new("hours".into(), usage.hours),
            Column::new("used".into(), usage.used),
        ],
    )
}

/// Day number (since 1970-01-01) of a date, as in [`usage_frame`].
pub fn day_number(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

/// The date of a day number.
pub fn date_of(day: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + Duration::days(day as i64)
}
