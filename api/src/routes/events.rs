//! Counts of discrete events per step for panels: gate traffic (granted,
//! denied), forced and held-open doors, lift faults; and lift states for
//! a state timeline.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::extract::Q;
use crate::routes::series::{calendar, device_ids, window};
use crate::{ApiResult, AppState};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    pub site: Option<String>,
    pub building: Option<String>,
    pub area: Option<String>,
    pub device: Option<String>,
    /// `access_gate` (default) or `lift`.
    pub kind: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub interval: Option<String>,
    pub interval_ms: Option<i64>,
    pub max_points: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventCounts {
    pub time: DateTime<Utc>,
    pub granted: i64,
    pub denied: i64,
    pub forced: i64,
    pub held_open: i64,
    pub faults: i64,
}

impl EventCounts {
    fn zero(time: DateTime<Utc>) -> Self {
        Self {
            time,
            granted: 0,
            denied: 0,
            forced: 0,
            held_open: 0,
            faults: 0,
        }
    }
}

/// Events per step of the selected gates or lifts, on the site's calendar
/// as consumption is (steps from local midnight, weeks from Monday, shorter
/// steps on whole local hours and minutes), every step of the range given:
/// a step without events is 0, never a hole.
#[utoipa::path(get, path = "/api/v1/events", tag = "series", params(EventQuery),
    responses((status = 200, body = [EventCounts]), (status = 400, body = crate::error::ErrorBody)))]
pub async fn counts(
    State(state): State<AppState>,
    Q(q): Q<EventQuery>,
) -> ApiResult<Json<Vec<EventCounts>>> {
    let kind = match q.kind.as_deref().unwrap_or("access_gate") {
        k @ ("access_gate" | "lift") => k,
        other => {
            return Err(crate::ApiError::BadRequest(format!(
                "`kind={other}`: expected access_gate or lift"
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
    let client = state.read_pool.get().await?;
    w.align(calendar(&state, &client, q.site.as_ref()).await?);
    let ids = device_ids(
        &state,
        &client,
        q.device.as_ref(),
        q.site.as_ref(),
        q.building.as_ref(),
        q.area.as_ref(),
        None,
        &[kind],
    )
    .await?;
    if ids.is_empty() {
        return Ok(Json(Vec::new()));
    }
    let rows = crate::query(
        &client,
        "SELECT date_bin(make_interval(secs => $1::float8), ts, $3) AS t,
                count(*) FILTER (WHERE event_type = 'access' AND result = 'granted'),
                count(*) FILTER (WHERE event_type = 'access' AND result = 'denied'),
                count(*) FILTER (WHERE event_type = 'door_forced'),
                count(*) FILTER (WHERE event_type = 'door_held_open'),
                count(*) FILTER (WHERE event_type = 'fault')
           FROM events
          WHERE device_id = ANY($2) AND ts >= $3 AND ts < $4
          GROUP BY 1 ORDER BY 1",
        &[
            &crate::routes::series::step_secs(w.sql_step()),
            &*ids,
            &w.from,
            &w.to,
        ],
    )
    .await?;
    // Counts per step (a month step's hours added up into its month).
    let mut found: std::collections::HashMap<DateTime<Utc>, EventCounts> = Default::default();
    for r in &rows {
        let time = w.bin(r.get(0));
        let c = found.entry(time).or_insert_with(|| EventCounts::zero(time));
        c.granted += r.get::<_, i64>(1);
        c.denied += r.get::<_, i64>(2);
        c.forced += r.get::<_, i64>(3);
        c.held_open += r.get::<_, i64>(4);
        c.faults += r.get::<_, i64>(5);
    }
    let out = w
        .starts()
        .into_iter()
        .map(|t| found.remove(&t).unwrap_or_else(|| EventCounts::zero(t)))
        .collect();
    Ok(Json(out))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StateQuery {
    pub site: Option<String>,
    pub building: Option<String>,
    pub area: Option<String>,
    pub device: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub interval: Option<String>,
    pub interval_ms: Option<i64>,
    pub max_points: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema, Debug, PartialEq)]
pub struct StateChange {
    pub time: DateTime<Utc>,
    pub lift: String,
    /// idle, moving, door_open, fault, maintenance, or `unknown` before the
    /// first state a lift reported.
    pub state: String,
}

/// Lift states for a state-timeline panel: one row per change, per lift.
/// Each step shows a fault or maintenance when one happened in it, else the
/// last state reported; a lift starts the range in the state it was in
/// (from up to 30 days before). Rows are long (time, lift, state): the
/// panel partitions them by lift.
#[utoipa::path(get, path = "/api/v1/lifts/states", tag = "series", params(StateQuery),
    responses((status = 200, body = [StateChange]), (status = 400, body = crate::error::ErrorBody)))]
pub async fn lift_states(
    State(state): State<AppState>,
    Q(q): Q<StateQuery>,
) -> ApiResult<Json<Vec<StateChange>>> {
    let mut w = window(
        &state,
        q.from.as_deref(),
        q.to.as_deref(),
        q.interval.as_deref(),
        q.interval_ms,
        q.max_points,
    )?;
    let client = state.read_pool.get().await?;
    // Steps on the site's calendar, as every other panel's.
    w.align(calendar(&state, &client, q.site.as_ref()).await?);
    let ids = device_ids(
        &state,
        &client,
        q.device.as_ref(),
        q.site.as_ref(),
        q.building.as_ref(),
        q.area.as_ref(),
        None,
        &["lift"],
    )
    .await?;
    if ids.is_empty() {
        return Ok(Json(Vec::new()));
    }
    let rows = crate::query(
        &client,
        "(SELECT DISTINCT ON (device_id) device_id, $3::timestamptz, state, 0
            FROM events
           WHERE device_id = ANY($2) AND event_type = 'state'
             AND ts < $3 AND ts >= $3 - interval '30 days'
           ORDER BY device_id, ts DESC)
         UNION ALL
         (SELECT device_id, date_bin(make_interval(secs => $1::float8), ts, $3),
                 (array_agg(state ORDER BY CASE state WHEN 'fault' THEN 0
                                                     WHEN 'maintenance' THEN 1 ELSE 2 END,
                                           ts DESC))[1], 1
            FROM events
           WHERE device_id = ANY($2) AND event_type = 'state' AND ts >= $3 AND ts < $4
           GROUP BY 1, 2)
         ORDER BY 1, 2, 4",
        &[
            &crate::routes::series::step_secs(w.sql_step()),
            &*ids,
            &w.from,
            &w.to,
        ],
    )
    .await?;
    let steps = rows.iter().map(|r| {
        (
            r.get::<_, String>(0),
            w.bin(r.get::<_, DateTime<Utc>>(1)),
            r.get::<_, Option<String>>(2)
                .unwrap_or_else(|| "unknown".into()),
        )
    });
    Ok(Json(changes(months_of_states(steps), &ids, w.from)))
}

/// One state per lift and step where several rows share a step (hours
/// binned into a month step): a fault when one happened in it, else
/// maintenance, else the last state reported. Rows come sorted by lift,
/// then time.
fn months_of_states(
    steps: impl Iterator<Item = (String, DateTime<Utc>, String)>,
) -> impl Iterator<Item = (String, DateTime<Utc>, String)> {
    let rank = |s: &str| match s {
        "fault" => 0,
        "maintenance" => 1,
        _ => 2,
    };
    let mut out: Vec<(String, DateTime<Utc>, String)> = Vec::new();
    for (lift, time, state) in steps {
        match out.last_mut() {
            Some(last) if last.0 == lift && last.1 == time => {
                if rank(&state) <= rank(&last.2) {
                    last.2 = state;
                }
            }
            _ => out.push((lift, time, state)),
        }
    }
    out.into_iter()
}

/// Collapses per-step states (sorted by lift, then time) into changes, and
/// starts every lift of `ids` at `from` (`unknown` when nothing is known).
fn changes(
    steps: impl Iterator<Item = (String, DateTime<Utc>, String)>,
    ids: &[String],
    from: DateTime<Utc>,
) -> Vec<StateChange> {
    let mut out: Vec<StateChange> = Vec::new();
    let mut current: Option<(String, String)> = None;
    for (lift, time, state) in steps {
        let same_lift = current.as_ref().is_some_and(|(l, _)| *l == lift);
        if !same_lift && time > from {
            // Nothing before the range for this lift.
            out.push(StateChange {
                time: from,
                lift: lift.clone(),
                state: "unknown".into(),
            });
        } else if same_lift && current.as_ref().is_some_and(|(_, s)| *s == state) {
            continue;
        }
        current = Some((lift.clone(), state.clone()));
        out.push(StateChange { time, lift, state });
    }
    for id in ids {
        if !out.iter().any(|c| &c.lift == id) {
            out.push(StateChange {
                time: from,
                lift: id.clone(),
                state: "unknown".into(),
            });
        }
    }
    out.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.lift.cmp(&b.lift)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn state_steps_become_changes_per_lift() {
        let t = |h| Utc.with_ymd_and_hms(2026, 3, 1, h, 0, 0).unwrap();
        let s = |l: &str, h, st: &str| (l.to_owned(), t(h), st.to_owned());
        let steps = vec![
            s("a", 0, "idle"),
            s("a", 1, "idle"),
            s("a", 2, "fault"),
            s("a", 3, "idle"),
            s("b", 2, "moving"),
        ];
        let ids = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let out = changes(steps.into_iter(), &ids, t(0));
        let got: Vec<(u32, &str, &str)> = out
            .iter()
            .map(|c| {
                (
                    chrono::Timelike::hour(&c.time),
                    c.lift.as_str(),
                    c.state.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, "a", "idle"),
                (0, "b", "unknown"),
                (0, "c", "unknown"),
                (2, "a", "fault"),
                (2, "b", "moving"),
                (3, "a", "idle"),
            ]
        );
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiftStatsQuery {
    pub site: String,
    /// One building, several comma-separated, or `All`.
    pub building: Option<String>,
    /// Start: epoch ms, RFC 3339 or a date.
    pub from: Option<String>,
    /// End (exclusive); at most 400 days after `from`.
    pub to: Option<String>,
    /// `lift`, `building` or `site` rows only (all when unset).
    pub scope: Option<String>,
}

/// Lift statistics of a period: per lift, per building and for the site,
/// availability (in service ÷ (period − maintenance and inspection)),
/// trips and door cycles from the counters (resets and rollovers handled),
/// faults, entrapments, faults per 1,000 trips, mean hours in service
/// between faults, and trips and door cycles per lift and day.
#[utoipa::path(get, path = "/api/v1/lifts/stats", tag = "series", params(LiftStatsQuery),
    responses((status = 200, description = "one object per lift, building and site"),
              (status = 400, body = crate::error::ErrorBody)))]
pub async fn lift_stats(
    State(state): State<AppState>,
    Q(q): Q<LiftStatsQuery>,
) -> ApiResult<Json<Vec<estatemon_analytics::lifts::stats::LiftStats>>> {
    let (from, to) = crate::params::range(
        q.from.as_deref(),
        q.to.as_deref(),
        crate::params::MAX_INTERVAL_DAYS,
    )?;
    let scope = match q.scope.as_deref() {
        None | Some("" | "All" | "all" | "$__all") => None,
        Some(s @ ("lift" | "building" | "site")) => Some(s),
        Some(other) => {
            return Err(crate::ApiError::BadRequest(format!(
                "`scope={other}`: expected lift, building or site"
            )))
        }
    };
    let client = state.read_pool.get().await?;
    let buildings = crate::routes::series::choice(q.building.as_ref());
    let mut rows = estatemon_analytics::lifts::stats::site(
        &client,
        &q.site,
        buildings.as_deref(),
        from,
        to,
        state.config.lifts.maintenance_faults,
    )
    .await?;
    if let Some(s) = scope {
        rows.retain(|r| r.scope == s);
    }
    Ok(Json(rows))
}

/// Entrapments (困人) as incidents, oldest first: alarm, acknowledgement
/// (the rescue service's event or the on-call acknowledgement, whichever
/// came first, and by whom), rescuer on site, passenger released, lift
/// back in service; minutes from the alarm to the rescuer on site and to
/// the release, whether the 15-minute target was met; `status` open,
/// released, closed or false_alarm.
#[utoipa::path(get, path = "/api/v1/lifts/incidents", tag = "series", params(crate::params::SitePeriod),
    responses((status = 200, description = "one object per entrapment"),
              (status = 400, body = crate::error::ErrorBody)))]
pub async fn lift_incidents(
    State(state): State<AppState>,
    Q(q): Q<crate::params::SitePeriod>,
) -> ApiResult<Json<Vec<estatemon_analytics::lifts::incidents::Incident>>> {
    let (from, to) = q.period()?;
    let client = state.read_pool.get().await?;
    Ok(Json(
        estatemon_analytics::lifts::incidents::site(&client, &q.site, from, to).await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReplacementQuery {
    pub site: String,
    /// Days on each side of the replacement's date (1 to 400, default 90).
    pub days: Option<u32>,
    /// `rows`: one flat row per replacement and side (`before`, `after`),
    /// for a table panel.
    pub form: Option<String>,
}

/// Each lift replacement of the site (a retrofit of the `lifts` purpose)
/// with its lifts' statistics over equal spans before and after its date:
/// availability, faults per 1,000 trips, mean time between faults, trips
/// per day. The span is `days`, or what has passed since the date, limited
/// to the time each lift sent data (each side says what it covers, and
/// unequal spans are flagged).
#[utoipa::path(get, path = "/api/v1/lifts/replacements", tag = "series", params(ReplacementQuery),
    responses((status = 200, description = "one object per lift replacement"),
              (status = 400, body = crate::error::ErrorBody)))]
pub async fn lift_replacements(
    State(state): State<AppState>,
    Q(q): Q<ReplacementQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let days = q.days.unwrap_or(90);
    if !(1..=400).contains(&days) {
        return Err(crate::ApiError::BadRequest(format!(
            "`days={days}`: expected 1 to 400"
        )));
    }
    let rows = match q.form.as_deref() {
        None | Some("") => false,
        Some("rows") => true,
        Some(other) => {
            return Err(crate::ApiError::BadRequest(format!(
                "`form={other}`: expected rows, or none"
            )))
        }
    };
    let client = state.read_pool.get().await?;
    let found = estatemon_analytics::lifts::stats::replacements(
        &client,
        &q.site,
        days,
        chrono::Utc::now(),
        state.config.lifts.maintenance_faults,
    )
    .await
    .map_err(anyhow::Error::from)?;
    if !rows {
        return Ok(Json(
            serde_json::to_value(found).map_err(anyhow::Error::from)?,
        ));
    }
    let mut out = Vec::new();
    for r in &found {
        for (side, s, span) in [
            ("before", Some(&r.before), Some(&r.before_span)),
            ("after", r.after.as_ref(), r.after_span.as_ref()),
        ] {
            let (Some(s), Some(span)) = (s, span) else {
                continue;
            };
            out.push(serde_json::json!({
                "retrofit": r.retrofit,
                "name": r.name,
                "date": r.date,
                "side": side,
                "from": span.from,
                "to": span.to,
                "days": span.days,
                "equal_spans": r.equal_spans,
                "note": r.note,
                "lifts": r.lifts.len(),
                "availability": s.availability,
                "faults": s.faults,
                "faults_per_1000_trips": s.faults_per_1000_trips,
                "mtbf_hours": s.mtbf_hours,
                "trips_per_day": s.trips_per_day,
            }));
        }
    }
    Ok(Json(serde_json::Value::Array(out)))
}
