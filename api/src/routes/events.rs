//! Counts of discrete events per step for panels: gate traffic (granted,
//! denied), forced and held-open doors, lift faults.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::extract::Q;
use crate::routes::series::{device_ids, window};
use crate::{ApiResult, AppState};

#[derive(Deserialize, utoipa::IntoParams)]
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

/// Events per step of the selected gates or lifts.
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
    let w = window(
        &state,
        q.from.as_deref(),
        q.to.as_deref(),
        q.interval.as_deref(),
        q.interval_ms,
        q.max_points,
    )?;
    let client = state.pool.get().await?;
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
        "SELECT date_bin(($1::text)::interval, ts, $3) AS t,
                count(*) FILTER (WHERE event_type = 'access' AND result = 'granted'),
                count(*) FILTER (WHERE event_type = 'access' AND result = 'denied'),
                count(*) FILTER (WHERE event_type = 'door_forced'),
                count(*) FILTER (WHERE event_type = 'door_held_open'),
                count(*) FILTER (WHERE event_type = 'fault')
           FROM events
          WHERE device_id = ANY($2) AND ts >= $3 AND ts < $4
          GROUP BY 1 ORDER BY 1",
        &[
            &format!("{} seconds", w.step.num_seconds()),
            &*ids,
            &w.from,
            &w.to,
        ],
    )
    .await?;
    Ok(Json(
        rows.iter()
            .map(|r| EventCounts {
                time: r.get(0),
                granted: r.get(1),
                denied: r.get(2),
                forced: r.get(3),
                held_open: r.get(4),
                faults: r.get(5),
            })
            .collect(),
    ))
}
