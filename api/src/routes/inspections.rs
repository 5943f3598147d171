//! Inspections technicians record, the work items a failed checklist item
//! opens, and each tracked device's compliance with its inspection cycle.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::{Actor, Role};
use crate::extract::Q;
use crate::{ApiError, ApiResult, AppState};

/// "Small issues are not left overnight, large ones not beyond a week."
const LARGE_WITHIN: Duration = Duration::days(7);

/// An inspection as a technician (or a patrol app) reports it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InspectionIn {
    pub device: String,
    /// Who inspected (a name or staff number).
    pub by: String,
    /// When (RFC 3339); now when unset.
    pub at: Option<DateTime<Utc>>,
    /// Checklist item → `ok`, `fail` (a small issue: fixed before the
    /// night) or `fail_large` (within a week).
    #[serde(default)]
    pub results: BTreeMap<String, String>,
    /// Readings taken (lubricant level, tank level …), by name.
    #[serde(default)]
    pub readings: BTreeMap<String, f64>,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct InspectionOut {
    pub id: i64,
    pub device: String,
    pub inspected_at: DateTime<Utc>,
    pub by: String,
    pub passed: bool,
    /// Work items opened for failed items, with their deadlines.
    pub work_items: Vec<WorkItem>,
}

#[derive(Serialize, utoipa::ToSchema, Clone)]
pub struct WorkItem {
    pub id: i64,
    pub device: String,
    pub item: String,
    /// `small` (not left overnight) or `large` (not beyond a week).
    pub size: String,
    pub opened_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub overdue: bool,
}

/// Records an inspection (operators). Results must name the device's
/// checklist items when it has a checklist; each failed item opens a work
/// item: a small issue is due by the end of the local day, a large one
/// within 7 days.
#[utoipa::path(post, path = "/api/v1/inspections", tag = "maintenance", request_body = InspectionIn,
    responses((status = 201, body = InspectionOut), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn record(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> ApiResult<(axum::http::StatusCode, Json<InspectionOut>)> {
    actor.require(Role::Operator, "record inspections")?;
    let i: InspectionIn = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("inspection: {e}")))?;
    let by = i.by.trim();
    if by.is_empty() || by.len() > 100 {
        return Err(ApiError::BadRequest("`by`: 1 to 100 characters".into()));
    }
    let now = Utc::now();
    let at = i.at.unwrap_or(now);
    if at > now + Duration::minutes(5) || at < now - Duration::days(400) {
        return Err(ApiError::BadRequest(format!(
            "`at` ({at}) is in the future or over 400 days ago"
        )));
    }
    if let Some((k, v)) = i.readings.iter().find(|(_, v)| !v.is_finite()) {
        return Err(ApiError::BadRequest(format!(
            "reading `{k}` = {v} is not a number"
        )));
    }
    let mut client = state.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT d.checklist, s.time_zone FROM devices d LEFT JOIN sites s ON s.site_id = d.site_id
              WHERE d.device_id = $1",
            &[&i.device],
        )
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no device `{}`", i.device)))?;
    let checklist: Vec<String> = serde_json::from_value(row.get(0)).unwrap_or_default();
    let tz: chrono_tz::Tz = row
        .get::<_, Option<String>>(1)
        .and_then(|z| z.parse().ok())
        .unwrap_or(chrono_tz::UTC);
    for (item, result) in &i.results {
        if !checklist.is_empty() && !checklist.contains(item) {
            return Err(ApiError::BadRequest(format!(
                "`{item}` is not on {}'s checklist ({})",
                i.device,
                checklist.join(", ")
            )));
        }
        if !matches!(result.as_str(), "ok" | "fail" | "fail_large") {
            return Err(ApiError::BadRequest(format!(
                "`{item}`: `{result}` is not ok, fail or fail_large"
            )));
        }
    }
    let passed = i.results.values().all(|r| r == "ok");
    let tx = client.transaction().await?;
    let id: i64 = tx
        .query_opt(
            "INSERT INTO inspections (device_id, inspected_at, inspector, source, results, readings,
                                      note, passed)
             VALUES ($1, $2, $3, 'api', $4, $5, $6, $7)
             ON CONFLICT (device_id, inspected_at, inspector) DO NOTHING RETURNING id",
            &[
                &i.device,
                &at,
                &by,
                &serde_json::json!(i.results),
                &serde_json::json!(i.readings),
                &i.note,
                &passed,
            ],
        )
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(format!("{by} already recorded an inspection of {} at {at}", i.device))
        })?
        .get(0);
    let mut work_items = Vec::new();
    for (item, result) in i.results.iter().filter(|(_, r)| *r != "ok") {
        let (size, due) = if result == "fail_large" {
            ("large", at + LARGE_WITHIN)
        } else {
            ("small", end_of_local_day(at, tz))
        };
        let wid: i64 = tx
            .query_one(
                "INSERT INTO work_items (device_id, inspection_id, item, size, opened_at, due_at)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[&i.device, &id, item, &size, &at, &due],
            )
            .await?
            .get(0);
        work_items.push(WorkItem {
            id: wid,
            device: i.device.clone(),
            item: item.clone(),
            size: size.into(),
            opened_at: at,
            due_at: due,
            closed_at: None,
            overdue: due < now,
        });
    }
    tx.commit().await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(InspectionOut {
            id,
            device: i.device,
            inspected_at: at,
            by: by.to_owned(),
            passed,
            work_items,
        }),
    ))
}

/// The next local midnight after `at`: a small issue is not left overnight.
fn end_of_local_day(at: DateTime<Utc>, tz: chrono_tz::Tz) -> DateTime<Utc> {
    let next = at.with_timezone(&tz).date_naive() + Duration::days(1);
    tz.from_local_datetime(&next.and_hms_opt(0, 0, 0).expect("midnight"))
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(at + Duration::hours(24))
}

/// Per tracked device of a site (a class or its own cycle), how its
/// inspection windows in the range fared: due, on time, late (inspected
/// within half a window after it), missed, still open. A lift's
/// maintenance-mode visits count as inspections.
#[utoipa::path(get, path = "/api/v1/compliance", tag = "maintenance", params(crate::params::SitePeriod),
    responses((status = 200, description = "one object per tracked device"),
              (status = 400, body = crate::error::ErrorBody)))]
pub async fn compliance(
    State(state): State<AppState>,
    Q(q): Q<crate::params::SitePeriod>,
) -> ApiResult<Json<Vec<estatemon_analytics::maintenance::compliance::Compliance>>> {
    let (from, to) = q.period()?;
    let client = state.pool.get().await?;
    Ok(Json(
        estatemon_analytics::maintenance::compliance::site(&client, &q.site, from, to, Utc::now())
            .await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkItemQuery {
    pub site: String,
    /// Only items not yet closed.
    pub open: Option<bool>,
}

/// Work items of a site, oldest first, with whether each is overdue.
#[utoipa::path(get, path = "/api/v1/work-items", tag = "maintenance", params(WorkItemQuery),
    responses((status = 200, body = [WorkItem])))]
pub async fn work_items(
    State(state): State<AppState>,
    Q(q): Q<WorkItemQuery>,
) -> ApiResult<Json<Vec<WorkItem>>> {
    let client = state.pool.get().await?;
    let now = Utc::now();
    let rows = client
        .query(
            "SELECT w.id, w.device_id, w.item, w.size, w.opened_at, w.due_at, w.closed_at
               FROM work_items w JOIN devices d ON d.device_id = w.device_id
              WHERE d.site_id = $1 AND ($2::bool IS NOT TRUE OR w.closed_at IS NULL)
              ORDER BY w.opened_at, w.id LIMIT 1000",
            &[&q.site, &q.open],
        )
        .await?;
    Ok(Json(
        rows.iter()
            .map(|r| {
                let due: DateTime<Utc> = r.get(5);
                let closed: Option<DateTime<Utc>> = r.get(6);
                WorkItem {
                    id: r.get(0),
                    device: r.get(1),
                    item: r.get(2),
                    size: r.get(3),
                    opened_at: r.get(4),
                    due_at: due,
                    closed_at: closed,
                    overdue: closed.map_or(due < now, |c| c > due),
                }
            })
            .collect(),
    ))
}
