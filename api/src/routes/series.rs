//! Time series for panels, downsampled to the panel's interval and max
//! data points so that a year-long panel gets hundreds of points, not
//! millions: gauges (`/series`, mean/min/max per step) and consumption from
//! the registers (`/consumption`, per step, summed over the selected
//! meters). Steps of an hour or more read the rollups.

use std::str::FromStr;

use crate::extract::Q;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Duration, DurationRound, Utc};
use estatemon_domain::Metric;
use serde::{Deserialize, Serialize};

use crate::params;
use crate::{ApiError, ApiResult, AppState};

/// Longest range a panel may ask for.
const MAX_RANGE_DAYS: i64 = 3 * 366;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// Metric name, e.g. `power_kw`, `motor_temp_c`, `pressure_mpa`.
    pub metric: String,
    /// One device; otherwise every device matching the filters below.
    pub device: Option<String>,
    pub site: Option<String>,
    pub building: Option<String>,
    pub area: Option<String>,
    pub purpose: Option<String>,
    /// Epoch ms (`${__from}`), RFC 3339 or a date.
    pub from: Option<String>,
    /// Epoch ms (`${__to}`), RFC 3339 or a date.
    pub to: Option<String>,
    /// `$__interval`, e.g. `1h`.
    pub interval: Option<String>,
    /// `$__interval_ms`.
    pub interval_ms: Option<i64>,
    /// The panel's max data points.
    pub max_points: Option<usize>,
    /// `avg` (default), `min` or `max` within each step.
    pub agg: Option<String>,
    /// `device` to get one series per device (rows carry `device`).
    pub by: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Point {
    /// Start of the step (RFC 3339, UTC).
    pub time: DateTime<Utc>,
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The building of a row of a per-building answer (`by=building`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub building: Option<String>,
}

pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The step's length (a month step's nominal 30 days a month).
    pub step: Duration,
    /// Calendar months a step holds, or 0 for a fixed step.
    pub months: u32,
    /// The calendar steps start on (set by [`Window::align`]).
    pub tz: chrono_tz::Tz,
}

impl Window {
    /// Starts the window at the start of its first step on the calendar of
    /// `tz`: local midnight for days, Monday for weeks, the 1st for months.
    pub fn align(&mut self, tz: chrono_tz::Tz) {
        self.tz = tz;
        self.from = if self.months > 0 {
            params::month_start(self.from, tz)
        } else {
            params::align(self.from, self.step, tz)
        };
    }

    /// The step the database bins by: the step itself, or hours for a
    /// month step (then regrouped into months by [`Window::bin`]).
    pub fn sql_step(&self) -> Duration {
        if self.months > 0 {
            Duration::hours(1)
        } else {
            self.step
        }
    }

    /// The start of the step after the one starting at `t`.
    pub fn next(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        if self.months > 0 {
            params::add_months(t, self.months, self.tz)
        } else {
            t + self.step
        }
    }

    /// The start of the month step holding `t` (a database bin), or `t`
    /// itself for a fixed step.
    pub fn bin(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        if self.months == 0 {
            return t;
        }
        let n = i64::from(self.months);
        let k = params::months_between(self.from, t, self.tz).div_euclid(n) * n;
        params::add_months(self.from, k.max(0) as u32, self.tz)
    }

    /// Every step start of the window (at most 100,001).
    pub fn starts(&self) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = self.from;
        while t < self.to && out.len() <= 100_000 {
            out.push(t);
            t = self.next(t);
        }
        out
    }
}

pub fn window(
    state: &AppState,
    from: Option<&str>,
    to: Option<&str>,
    interval: Option<&str>,
    interval_ms: Option<i64>,
    max_points: Option<usize>,
) -> Result<Window, ApiError> {
    let (from, to) = params::range(from, to, MAX_RANGE_DAYS)?;
    let requested = match (interval, interval_ms) {
        (Some(i), _) => Some(params::interval("interval", i)?),
        (None, Some(ms)) => Some(params::interval_ms("interval_ms", ms)?),
        (None, None) => None,
    };
    if max_points == Some(0) {
        return Err(ApiError::BadRequest(
            "`max_points` must be at least 1".into(),
        ));
    }
    let max = max_points
        .unwrap_or(state.config.api.max_points)
        .min(state.config.api.max_points);
    let step = params::step(from, to, requested, max);
    Ok(Window {
        from,
        to,
        step: step.length,
        months: step.months,
        tz: chrono_tz::UTC,
    })
}

/// Ids of the devices matching the filters (resolved first, so the time
/// series query is a plain index scan). Kept for a few seconds per filter:
/// panels repeat the same filters on every refresh, and the ledger changes
/// rarely (an admin's change through the API clears the cache at once).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn device_ids(
    state: &AppState,
    client: &deadpool_postgres::Client,
    device: Option<&String>,
    site: Option<&String>,
    building: Option<&String>,
    area: Option<&String>,
    purpose: Option<&String>,
    kinds: &[&str],
) -> ApiResult<std::sync::Arc<Vec<String>>> {
    let key = format!("{device:?}|{site:?}|{building:?}|{area:?}|{purpose:?}|{kinds:?}");
    state
        .ledger_cache
        .get_or_load(key, async {
            let kinds: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
            let (device, site, building, area, purpose) = (
                choice(device),
                choice(site),
                choice(building),
                choice(area),
                choice(purpose),
            );
            let rows = crate::query(
                client,
                "SELECT device_id FROM devices
                  WHERE ($1::text[] IS NULL OR device_id = ANY($1))
                    AND ($2::text[] IS NULL OR site_id = ANY($2))
                    AND ($3::text[] IS NULL OR building_id = ANY($3))
                    AND ($4::text[] IS NULL OR area = ANY($4))
                    AND ($5::text[] IS NULL OR purpose = ANY($5))
                    AND (cardinality($6::text[]) = 0 OR kind = ANY($6))",
                &[&device, &site, &building, &area, &purpose, &kinds],
            )
            .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
        .await
}

/// A dashboard variable's value: `None` for no choice (empty, Grafana's
/// "All": `$__all`, `All`, `*`), else its values (a multi-select comes
/// comma-separated, as `${var:csv}` formats it).
pub(crate) fn choice(v: Option<&String>) -> Option<Vec<String>> {
    let v = v?.trim();
    if matches!(v, "" | "$__all" | "All" | "all" | "*") {
        return None;
    }
    let values: Vec<String> = v
        .split(',')
        .map(|x| x.trim().trim_matches(|c| c == '{' || c == '}').to_owned())
        .filter(|x| !x.is_empty())
        .collect();
    (!values.is_empty()).then_some(values)
}

/// A step as SQL receives it: `make_interval(secs => $n::float8)` (a
/// number, not interval text, which PostgreSQL would parse once per row).
pub(crate) fn step_secs(step: Duration) -> f64 {
    step.num_seconds() as f64
}

/// The calendar steps start on: the site's time zone when the panel asks
/// for one site, else UTC. Kept with the device ids.
pub(crate) async fn calendar(
    state: &AppState,
    client: &deadpool_postgres::Client,
    site: Option<&String>,
) -> ApiResult<chrono_tz::Tz> {
    let Some(sites) = choice(site) else {
        return Ok(chrono_tz::UTC);
    };
    let [site] = &sites[..] else {
        return Ok(chrono_tz::UTC);
    };
    let zone = state
        .ledger_cache
        .get_or_load(format!("time_zone|{site}"), async {
            let rows = crate::query(
                client,
                "SELECT time_zone FROM sites WHERE site_id = $1",
                &[&site],
            )
            .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
        .await?;
    Ok(zone
        .first()
        .and_then(|z| z.parse().ok())
        .unwrap_or(chrono_tz::UTC))
}

/// Every step of the window, `None` where nothing was measured (a gap is
/// drawn as a gap, not as a line across it); points off the steps (a
/// local day of 23 or 25 hours) are kept in order.
fn fill(w: &Window, rows: Vec<Point>) -> Vec<Point> {
    let mut by_time: std::collections::HashMap<DateTime<Utc>, Option<f64>> =
        rows.into_iter().map(|p| (p.time, p.value)).collect();
    let mut out: Vec<Point> = w
        .starts()
        .into_iter()
        .map(|time| Point {
            time,
            value: by_time.remove(&time).flatten(),
            device: None,
            building: None,
        })
        .collect();
    if !by_time.is_empty() {
        out.retain(|p| p.value.is_some());
        out.extend(by_time.into_iter().map(|(time, value)| Point {
            time,
            value,
            device: None,
            building: None,
        }));
        out.sort_by_key(|p| p.time);
    }
    out
}

/// Hour totals regrouped into month steps: a month's total is the sum of
/// its hours when the month ends within the range, else `None` (the last,
/// partial month is left out rather than drawn as a dip).
fn month_totals(w: &Window, hours: Vec<Point>) -> Vec<Point> {
    let mut sums: std::collections::BTreeMap<DateTime<Utc>, f64> = Default::default();
    for p in hours {
        if let Some(v) = p.value {
            *sums.entry(w.bin(p.time)).or_default() += v;
        }
    }
    sums.into_iter()
        .map(|(time, v)| Point {
            time,
            value: (w.next(time) <= w.to).then_some(v),
            device: None,
            building: None,
        })
        .collect()
}

/// A gauge metric per step: mean (weighted by samples), min or max.
#[utoipa::path(get, path = "/api/v1/series", tag = "series", params(SeriesQuery),
    responses((status = 200, body = [Point]), (status = 400, body = crate::error::ErrorBody)))]
pub async fn series(
    State(state): State<AppState>,
    Q(q): Q<SeriesQuery>,
) -> ApiResult<Json<Vec<Point>>> {
    let metric =
        Metric::from_str(&q.metric).map_err(|e| ApiError::BadRequest(format!("`metric`: {e}")))?;
    let w = window(
        &state,
        q.from.as_deref(),
        q.to.as_deref(),
        q.interval.as_deref(),
        q.interval_ms,
        q.max_points,
    )?;
    let mut w = w;
    let agg = q.agg.as_deref().unwrap_or("avg");
    if !matches!(agg, "avg" | "min" | "max") {
        return Err(ApiError::BadRequest(format!(
            "`agg={agg}`: expected avg, min or max"
        )));
    }
    let by_device = match q.by.as_deref() {
        None | Some("") => false,
        Some("device") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`by={other}`: expected `device`"
            )))
        }
    };
    let client = state.read_pool.get().await?;
    let ids = device_ids(
        &state,
        &client,
        q.device.as_ref(),
        q.site.as_ref(),
        q.building.as_ref(),
        q.area.as_ref(),
        q.purpose.as_ref(),
        &[],
    )
    .await?;
    if ids.is_empty() {
        if let Some(d) = &q.device {
            return Err(ApiError::NotFound(format!("no device `{d}`")));
        }
        return Ok(Json(Vec::new()));
    }
    // Steps on the site's calendar: local hours, days from local midnight.
    w.align(calendar(&state, &client, q.site.as_ref()).await?);
    let step = w.sql_step();
    let utc_days = w.from.duration_trunc(Duration::days(1)).ok() == Some(w.from);
    let (table, time, value) = if step >= Duration::days(1) && utc_days {
        ("readings_daily", "bucket", agg_expr(agg, true))
    } else if step >= Duration::hours(1) {
        ("readings_hourly", "bucket", agg_expr(agg, true))
    } else {
        ("readings", "ts", agg_expr(agg, false))
    };
    let device_col = if by_device { ", device_id" } else { "" };
    let weight = if table == "readings" {
        "count(*)::float8"
    } else {
        "sum(samples)::float8"
    };
    let sql = format!(
        "SELECT date_bin(make_interval(secs => $1::float8), {time}, $4) AS t{device_col}, {value}, {weight}
           FROM {table}
          WHERE device_id = ANY($2) AND metric = $3 AND {time} >= $4 AND {time} < $5
          GROUP BY 1{group} ORDER BY 1{group}",
        group = if by_device { ", 2" } else { "" },
    );
    let rows = crate::query(
        &client,
        &sql,
        &[&step_secs(step), &*ids, &metric.as_str(), &w.from, &w.to],
    )
    .await?;
    let value_col = if by_device { 2 } else { 1 };
    let points = months_of_gauges(
        &w,
        agg,
        rows.iter().map(|r| {
            (
                Point {
                    time: r.get(0),
                    device: by_device.then(|| r.get(1)),
                    building: None,
                    value: r.get(value_col),
                },
                r.get::<_, Option<f64>>(value_col + 1).unwrap_or(0.0),
            )
        }),
    );
    Ok(Json(if by_device { points } else { fill(&w, points) }))
}

/// Gauge points with their sample counts, regrouped into month steps when
/// the window has them: the mean weighted by samples, the min of the mins,
/// the max of the maxes, per device when rows carry one.
fn months_of_gauges(w: &Window, agg: &str, rows: impl Iterator<Item = (Point, f64)>) -> Vec<Point> {
    if w.months == 0 {
        return rows.map(|(p, _)| p).collect();
    }
    // (sum or extreme, samples) per (device, month).
    let mut acc: std::collections::BTreeMap<(Option<String>, DateTime<Utc>), (f64, f64)> =
        Default::default();
    for (p, samples) in rows {
        let Some(v) = p.value else { continue };
        let e = acc.entry((p.device, w.bin(p.time))).or_insert(match agg {
            "min" => (f64::INFINITY, 0.0),
            "max" => (f64::NEG_INFINITY, 0.0),
            _ => (0.0, 0.0),
        });
        match agg {
            "min" => e.0 = e.0.min(v),
            "max" => e.0 = e.0.max(v),
            _ => e.0 += v * samples,
        }
        e.1 += samples;
    }
    let mut out: Vec<Point> = acc
        .into_iter()
        .map(|((device, time), (v, samples))| Point {
            time,
            device,
            building: None,
            value: match agg {
                "min" | "max" => Some(v),
                _ => (samples > 0.0).then(|| v / samples),
            },
        })
        .collect();
    out.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.device.cmp(&b.device)));
    out
}

fn agg_expr(agg: &str, rollup: bool) -> &'static str {
    match (agg, rollup) {
        ("min", true) => "min(min)",
        ("max", true) => "max(max)",
        (_, true) => "sum(avg * samples) / nullif(sum(samples::float8), 0)",
        ("min", false) => "min(value)",
        ("max", false) => "max(value)",
        _ => "avg(value)",
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsumptionQuery {
    pub site: Option<String>,
    pub building: Option<String>,
    pub area: Option<String>,
    pub purpose: Option<String>,
    pub device: Option<String>,
    /// `electricity` (kWh, default), `water` or `gas` (m³), or a lift's
    /// counter: `trips` or `door_cycles` (per step, from the register).
    pub utility: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// `$__interval`; consumption steps are at least an hour.
    pub interval: Option<String>,
    pub interval_ms: Option<i64>,
    pub max_points: Option<usize>,
    /// `step` (default): each point is the step's total (kWh per step);
    /// `hour` or `day`: the step's total over its length, kWh per hour (the
    /// mean kW) or per day, a point whose meaning does not change with the
    /// zoom.
    pub per: Option<String>,
    /// `building` for one series per building (rows carry `building`);
    /// otherwise one series summed over the selection.
    pub by: Option<String>,
}

/// Consumption per step summed over the selected meters: the difference
/// of each meter's register between step starts (hourly registers), a
/// negative difference (reset, replacement) left out rather than counted.
#[utoipa::path(get, path = "/api/v1/consumption", tag = "series", params(ConsumptionQuery),
    responses((status = 200, body = [Point]), (status = 400, body = crate::error::ErrorBody)))]
pub async fn consumption(
    State(state): State<AppState>,
    Q(q): Q<ConsumptionQuery>,
) -> ApiResult<Json<Vec<Point>>> {
    let (kind, metric) = match q.utility.as_deref().unwrap_or("electricity") {
        "electricity" => ("electricity_meter", "energy_kwh"),
        "water" => ("water_meter", "volume_m3"),
        "gas" => ("gas_meter", "volume_m3"),
        "trips" => ("lift", "trips"),
        "door_cycles" => ("lift", "door_cycles"),
        other => {
            return Err(ApiError::BadRequest(format!(
                "`utility={other}`: expected electricity, water, gas, trips or door_cycles"
            )))
        }
    };
    // A lift's counters have no hourly or daily consumption rollups: every
    // step is read from the register at the step boundaries.
    let counter = kind == "lift";
    let per_hours = match q.per.as_deref().unwrap_or("step") {
        "step" => None,
        "hour" => Some(1.0),
        "day" => Some(24.0),
        other => {
            return Err(ApiError::BadRequest(format!(
                "`per={other}`: expected step, hour or day"
            )))
        }
    };
    let by_building = match q.by.as_deref() {
        None | Some("") => false,
        Some("building") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`by={other}`: expected `building`"
            )))
        }
    };
    let mut w = window(
        &state,
        q.from.as_deref(),
        q.to.as_deref(),
        q.interval.as_deref(),
        q.interval_ms,
        q.max_points,
    )?;
    // At least an hour: the registers are read at hour starts.
    if w.step < Duration::hours(1) {
        w.step = Duration::hours(1);
    }
    let client = state.read_pool.get().await?;
    // Steps on the site's calendar (local days from local midnight, weeks
    // from Monday); Grafana's `${__from}` carries milliseconds.
    let tz = calendar(&state, &client, q.site.as_ref()).await?;
    w.align(tz);
    if w.from.duration_trunc(Duration::hours(1)).ok() != Some(w.from) {
        // A zone a half hour off UTC: registers are read at UTC hours.
        w.from = w.from.duration_trunc(Duration::hours(1)).unwrap_or(w.from);
    }
    let ids = device_ids(
        &state,
        &client,
        q.device.as_ref(),
        q.site.as_ref(),
        q.building.as_ref(),
        q.area.as_ref(),
        q.purpose.as_ref(),
        &[kind],
    )
    .await?;
    if ids.is_empty() {
        return Ok(Json(Vec::new()));
    }
    let on_site = q.site.is_some();
    if !by_building {
        return Ok(Json(
            meters_consumption(&client, &ids, metric, counter, on_site, &w, per_hours).await?,
        ));
    }
    // One series per building: the same sums over each building's meters,
    // rows labelled with the building.
    let groups = crate::query(
        &client,
        "SELECT coalesce(building_id, ''), array_agg(device_id ORDER BY device_id) FROM devices
          WHERE device_id = ANY($1) GROUP BY 1 ORDER BY 1",
        &[&*ids],
    )
    .await?;
    let mut out = Vec::new();
    for g in &groups {
        let (building, meters): (String, Vec<String>) = (g.get(0), g.get(1));
        let points =
            meters_consumption(&client, &meters, metric, counter, on_site, &w, per_hours).await?;
        out.extend(points.into_iter().map(|p| Point {
            building: Some(building.clone()),
            ..p
        }));
    }
    Ok(Json(out))
}

/// Consumption per step of the window summed over `ids` (meters, or lifts
/// for a counter), each point the step's total or per `per_hours`.
async fn meters_consumption(
    client: &deadpool_postgres::Client,
    ids: &[String],
    metric: &str,
    counter: bool,
    on_site: bool,
    w: &Window,
    per_hours: Option<f64>,
) -> ApiResult<Vec<Point>> {
    let ids = ids.to_vec();
    let tz = w.tz;
    // Whole-day steps on a site: local days, from the register at each
    // local midnight (registers_daily: 365 rows per meter for a year).
    if !counter && w.step.num_seconds() % 86_400 == 0 && on_site {
        let days = daily_consumption(client, tz, &ids, metric, w).await?;
        return Ok(per(days, w, per_hours));
    }
    // A month step is read by the hour and regrouped into months.
    let step = w.sql_step();
    let rows = if !counter && step == Duration::hours(1) {
        // Hourly steps: each meter's hourly consumption is kept with the
        // rollups (`consumption_hourly`, the same rule as below for steps
        // of one hour), so this is a sum per hour over a key range.
        crate::query(
            client,
            "SELECT bucket, sum(used) FROM consumption_hourly
              WHERE device_id = ANY($1) AND metric = $2 AND bucket >= $3 AND bucket < $4
              GROUP BY bucket ORDER BY bucket",
            &[&ids, &metric, &w.from, &w.to],
        )
        .await?
    } else if counter {
        // A counter's steps: the register at each step boundary is the
        // first reading of that hour (`readings_hourly.first`). A step
        // counts for a lift when its register is known at both ends
        // (adjacent boundaries: a missing boundary never stretches a step)
        // and did not fall. Boundaries are the hours `date_bin` leaves in
        // place: a filter on the range scan that costs the same in a
        // generic plan (an array of boundaries was searched linearly per row
        // there: 7× slower).
        crate::query(
            client,
            "WITH s AS (SELECT device_id, bucket AS b, first AS start_value FROM readings_hourly
                         WHERE device_id = ANY($2) AND metric = $3
                           AND date_bin(make_interval(secs => $1::float8), bucket, $4) = bucket
                           AND bucket >= $4 AND bucket <= $5::timestamptz + make_interval(secs => $1::float8)),
                  d AS (SELECT b, lead(start_value) OVER w - start_value AS used, lead(b) OVER w AS next_b
                          FROM s WINDOW w AS (PARTITION BY device_id ORDER BY b))
             SELECT b, sum(used) FROM d
              WHERE b < $5 AND next_b = b + make_interval(secs => $1::float8) AND used >= 0
              GROUP BY b ORDER BY b",
            &[&step_secs(step), &ids, &metric, &w.from, &w.to],
        )
        .await?
    } else {
        // Longer steps: the sum of each meter's hours (`consumption_hourly`,
        // so every zoom agrees with the hours and the days: a rollover, a
        // reset or a replaced meter counts the use before and after it). A
        // step counts for a meter when every hour of it is known, so a step
        // is never drawn from part of its hours (the last, partial one).
        crate::query(
            client,
            "SELECT b, sum(used) FROM (
                 SELECT device_id, date_bin(make_interval(secs => $1::float8), bucket, $4) AS b,
                        sum(used) AS used, count(*) AS hours
                   FROM consumption_hourly
                  WHERE device_id = ANY($2) AND metric = $3 AND bucket >= $4 AND bucket < $5
                  GROUP BY 1, 2) m
              WHERE hours = round($1::float8 / 3600)
              GROUP BY b ORDER BY b",
            &[&step_secs(w.step), &ids, &metric, &w.from, &w.to],
        )
        .await?
    };
    let mut points: Vec<Point> = rows
        .iter()
        .map(|r| Point {
            time: r.get(0),
            value: r.get(1),
            device: None,
            building: None,
        })
        .collect();
    if w.months > 0 {
        points = month_totals(w, points);
    }
    Ok(per(fill(w, points), w, per_hours))
}

/// Each point's total over its step's length in hours (then × `hours`):
/// kWh per hour or per day. The length is the time to the next point (a
/// local day of 23 or 25 hours is itself), the last one's the step.
fn per(mut points: Vec<Point>, w: &Window, hours: Option<f64>) -> Vec<Point> {
    let Some(unit) = hours else {
        return points;
    };
    let starts: Vec<DateTime<Utc>> = points.iter().map(|p| p.time).collect();
    for (i, p) in points.iter_mut().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or_else(|| w.next(p.time));
        let length = (end - p.time).num_seconds() as f64 / 3600.0;
        if length > 0.0 {
            p.value = p.value.map(|v| v / length * unit);
        }
    }
    points
}

/// Consumption per step of whole local days at `site`: the difference of
/// each meter's register between consecutive local midnights, summed over
/// the meters and grouped into steps of `w.step` days from the local day of
/// `w.from`. A day counts for a meter when both midnights are known and the
/// register did not fall: `registers_daily.used`, kept with the registers.
async fn daily_consumption(
    client: &deadpool_postgres::Client,
    tz: chrono_tz::Tz,
    ids: &[String],
    metric: &str,
    w: &Window,
) -> ApiResult<Vec<Point>> {
    let first_day = w.from.with_timezone(&tz).date_naive();
    let to_local = w.to.with_timezone(&tz);
    // A range ending inside a day includes that (partial) day.
    let end_day = if to_local.time() == chrono::NaiveTime::MIN {
        to_local.date_naive()
    } else {
        to_local.date_naive() + Duration::days(1)
    };
    // Month steps: days, regrouped into the site's calendar months.
    let n = if w.months > 0 {
        1
    } else {
        (w.step.num_seconds() / 86_400) as i32
    };
    let rows = crate::query(
        client,
        "SELECT ($3::date + ((day - $3::date) / $5::int) * $5::int)::date AS bin, sum(used) FROM registers_daily
          WHERE device_id = ANY($1) AND metric = $2 AND day >= $3 AND day < $4 AND used IS NOT NULL
          GROUP BY 1 ORDER BY 1",
        &[&ids, &metric, &first_day, &end_day, &n],
    )
    .await?;
    let found: std::collections::HashMap<chrono::NaiveDate, Option<f64>> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let midnight = |day: chrono::NaiveDate| params::local_midnight(day, tz);
    if w.months > 0 {
        let days = found
            .into_iter()
            .map(|(day, value)| Point {
                time: midnight(day),
                value,
                device: None,
                building: None,
            })
            .collect();
        return Ok(fill(w, month_totals(w, days)));
    }
    // Every step of the range, `None` where no meter's day was known.
    let mut out = Vec::new();
    let mut day = first_day;
    while day < end_day {
        out.push(Point {
            time: midnight(day),
            value: found.get(&day).copied().flatten(),
            device: None,
            building: None,
        });
        day += Duration::days(i64::from(n.max(1)));
    }
    Ok(out)
}
