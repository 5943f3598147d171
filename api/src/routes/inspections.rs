//! Inspections technicians record, the work items a failed checklist item
//! opens, and each tracked device's compliance with its inspection cycle.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::{Actor, Role};
use crate::extract::Q;
use crate::{ApiError, ApiResult, AppState};

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
    /// Earlier work items of the device this inspection found fixed (their
    /// item `ok`), closed at its time.
    pub closed_work_items: Vec<i64>,
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
    security(("bearer" = ["operator"])),
    responses((status = 201, body = InspectionOut), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn record(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> ApiResult<(axum::http::StatusCode, Json<InspectionOut>)> {
    use estatemon_domain::inspection::{ItemResult, Report};
    use estatemon_domain::schema::inspections::{self, Refused};
    actor.require(Role::Operator, "record inspections")?;
    let i: InspectionIn = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("inspection: {e}")))?;
    let now = Utc::now();
    let mut results = BTreeMap::new();
    for (item, result) in &i.results {
        let r = ItemResult::parse(result).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`{item}`: `{result}` is not ok, fail or fail_large"
            ))
        })?;
        results.insert(item.clone(), r);
    }
    let report = Report {
        device: i.device,
        by: i.by.trim().to_owned(),
        at: i.at.unwrap_or(now),
        results,
        readings: i.readings,
        note: i.note,
    };
    report.check(now).map_err(ApiError::BadRequest)?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let recorded = match inspections::record(&*tx, &report, "api").await? {
        Ok(r) => r,
        Err(e @ Refused::NoDevice(_)) => return Err(ApiError::NotFound(e.to_string())),
        Err(e @ Refused::NotOnChecklist { .. }) => return Err(ApiError::BadRequest(e.to_string())),
        Err(e @ Refused::Duplicate { .. }) => return Err(ApiError::Conflict(e.to_string())),
    };
    tx.commit().await?;
    let work_items = recorded
        .work_items
        .into_iter()
        .map(|w| WorkItem {
            id: w.id,
            device: report.device.clone(),
            item: w.item,
            size: w.size.into(),
            opened_at: report.at,
            due_at: w.due_at,
            closed_at: None,
            overdue: w.due_at < now,
        })
        .collect();
    Ok((
        axum::http::StatusCode::CREATED,
        Json(InspectionOut {
            id: recorded.id,
            device: report.device,
            inspected_at: report.at,
            by: report.by,
            passed: recorded.passed,
            work_items,
            closed_work_items: recorded.closed,
        }),
    ))
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

/// One late or missed inspection window of a tracked device.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ExceptionRow {
    pub device: String,
    pub name: Option<String>,
    pub class: Option<String>,
    pub cycle: String,
    pub window_from: chrono::DateTime<Utc>,
    /// When the inspection was due (the window's end).
    pub due_by: chrono::DateTime<Utc>,
    /// `late` or `missed`.
    pub status: String,
    /// Late: when it came; missed: the first inspection after the window.
    pub inspected_at: Option<chrono::DateTime<Utc>>,
    pub inspector: Option<String>,
}

/// Every late or missed inspection window of the site's tracked devices in
/// the range, oldest first: device, when it was due, when the inspection
/// happened and by whom (the list behind `/api/v1/compliance`'s counts).
#[utoipa::path(get, path = "/api/v1/compliance/exceptions", tag = "maintenance", params(crate::params::SitePeriod),
    responses((status = 200, body = [ExceptionRow]),
              (status = 400, body = crate::error::ErrorBody)))]
pub async fn compliance_exceptions(
    State(state): State<AppState>,
    Q(q): Q<crate::params::SitePeriod>,
) -> ApiResult<Json<Vec<ExceptionRow>>> {
    let (from, to) = q.period()?;
    let client = state.pool.get().await?;
    let rows =
        estatemon_analytics::maintenance::compliance::site(&client, &q.site, from, to, Utc::now())
            .await?;
    let mut out: Vec<ExceptionRow> = rows
        .into_iter()
        .flat_map(|c| {
            c.exceptions
                .iter()
                .map(|e| ExceptionRow {
                    device: c.device.clone(),
                    name: c.name.clone(),
                    class: c.class.clone(),
                    cycle: c.cycle.clone(),
                    window_from: e.window_from,
                    due_by: e.due_by,
                    status: e.status.clone(),
                    inspected_at: e.inspected_at,
                    inspector: e.inspector.clone(),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort_by(|a, b| {
        a.due_by
            .cmp(&b.due_by)
            .then_with(|| a.device.cmp(&b.device))
    });
    Ok(Json(out))
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
        rows.iter().map(|r| WorkItem::from_row(r, now)).collect(),
    ))
}

impl WorkItem {
    /// From a row of `id, device_id, item, size, opened_at, due_at,
    /// closed_at`; overdue when closed after its deadline, or still open
    /// past it at `now`.
    fn from_row(r: &tokio_postgres::Row, now: DateTime<Utc>) -> WorkItem {
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
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseIn {
    /// What was done (1 to 500 characters).
    pub note: String,
}

/// Closes an open work item (operators): fixed, or not to be done, with a
/// note; the token's name is recorded with it. A later inspection that
/// finds the item `ok` closes it too.
#[utoipa::path(post, path = "/api/v1/work-items/{id}/close", tag = "maintenance",
    security(("bearer" = ["operator"])),
    params(("id" = i64, Path)), request_body = CloseIn,
    responses((status = 200, body = WorkItem), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn close(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    crate::extract::P(id): crate::extract::P<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<WorkItem>> {
    actor.require(Role::Operator, "close work items")?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("work item id `{id}` is not a number")))?;
    let c: CloseIn =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("close: {e}")))?;
    let note = c.note.trim();
    if note.is_empty() || note.chars().count() > 500 || note.contains('\0') {
        return Err(ApiError::BadRequest("`note`: 1 to 500 characters".into()));
    }
    let client = state.pool.get().await?;
    let now = Utc::now();
    let text = format!("closed by {}: {note}", actor.name);
    match estatemon_domain::schema::inspections::close(&**client, id, now, &text).await? {
        None => return Err(ApiError::NotFound(format!("no work item {id}"))),
        Some(false) => {
            return Err(ApiError::Conflict(format!(
                "work item {id} is closed already"
            )))
        }
        Some(true) => {}
    }
    let r = client
        .query_one(
            "SELECT id, device_id, item, size, opened_at, due_at, closed_at FROM work_items
              WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(Json(WorkItem::from_row(&r, now)))
}
