//! Alerts for the on-call table and Grafana annotations; acknowledging and
//! silencing need the operator role.

use std::collections::BTreeMap;

use crate::extract::{P, Q};
use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use estatemon_domain::schema::alerts as store;
use serde::{Deserialize, Serialize};

use crate::auth::{Actor, Role};
use crate::params;
use crate::{ApiError, ApiResult, AppState};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// `open` (default: firing or acknowledged), `resolved` or `all`.
    pub state: Option<String>,
    pub site: Option<String>,
    pub severity: Option<String>,
    /// Alerts started from (epoch ms, RFC 3339 or date).
    pub from: Option<String>,
    pub to: Option<String>,
    /// At most this many, newest first (default 500, at most 5,000).
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AlertOut {
    pub id: i64,
    pub rule: String,
    pub severity: String,
    pub state: String,
    pub summary: String,
    pub site: Option<String>,
    pub device: Option<String>,
    pub value: Option<f64>,
    pub started_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub response_deadline: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub escalated: bool,
    pub silenced: bool,
    pub labels: serde_json::Value,
}

/// Alerts, newest first.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", params(AlertQuery),
    responses((status = 200, body = [AlertOut]), (status = 400, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Q(q): Q<AlertQuery>,
) -> ApiResult<Json<Vec<AlertOut>>> {
    let which = q.state.as_deref().unwrap_or("open");
    if !matches!(which, "open" | "resolved" | "all") {
        return Err(ApiError::BadRequest(format!(
            "`state={which}`: expected open, resolved or all"
        )));
    }
    let (from, to) = params::bounds(q.from.as_deref(), q.to.as_deref())?;
    let limit = params::limit(q.limit, 500)?;
    let client = state.pool.get().await?;
    let rows = crate::query(&client,
            "SELECT id, rule, severity, state, summary, site_id, device_id, value, started_at,
                    resolved_at, response_deadline, acknowledged_at, acknowledged_by,
                    escalated_at IS NOT NULL, silenced_by IS NOT NULL, labels
               FROM alerts
              WHERE ($1 = 'all' OR ($1 = 'open' AND state <> 'resolved') OR ($1 = 'resolved' AND state = 'resolved'))
                AND ($2::text IS NULL OR site_id = $2) AND ($3::text IS NULL OR severity = $3)
                AND ($4::timestamptz IS NULL OR started_at >= $4) AND ($5::timestamptz IS NULL OR started_at < $5)
              ORDER BY started_at DESC, id DESC LIMIT $6",
            &[&which, &q.site, &q.severity, &from, &to, &limit],
        )
        .await?;
    Ok(Json(
        rows.iter()
            .map(|r| AlertOut {
                id: r.get(0),
                rule: r.get(1),
                severity: r.get(2),
                state: r.get(3),
                summary: r.get(4),
                site: r.get(5),
                device: r.get(6),
                value: r.get(7),
                started_at: r.get(8),
                resolved_at: r.get(9),
                response_deadline: r.get(10),
                acknowledged_at: r.get(11),
                acknowledged_by: r.get(12),
                escalated: r.get(13),
                silenced: r.get(14),
                labels: r.get(15),
            })
            .collect(),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Acknowledged {
    pub id: i64,
    pub acknowledged_by: String,
}

/// Acknowledges a firing alert (operators); the token's name is recorded.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/ack", tag = "alerts",
    security(("bearer" = ["operator"])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Acknowledged), (status = 409, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn acknowledge(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    P(id): P<String>,
) -> ApiResult<Json<Acknowledged>> {
    actor.require(Role::Operator, "acknowledge alerts")?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("alert id `{id}` is not a number")))?;
    let client = state.pool.get().await?;
    if store::acknowledge(&**client, id, &actor.name).await? {
        return Ok(Json(Acknowledged {
            id,
            acknowledged_by: actor.name,
        }));
    }
    let st: Option<String> = client
        .query_opt("SELECT state FROM alerts WHERE id = $1", &[&id])
        .await?
        .map(|r| r.get(0));
    Err(match st {
        None => ApiError::NotFound(format!("no alert {id}")),
        Some(s) => ApiError::Conflict(format!("alert {id} is {s}, not firing")),
    })
}

/// Unknown fields are refused: a stray `ends_at` must not be ignored while
/// the silence lasts `minutes`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceIn {
    /// Label → value; every one must match (labels: alertname, severity,
    /// subject, site, building, area, purpose, device).
    pub matchers: BTreeMap<String, String>,
    /// Minutes from now (1 .. 30 days).
    pub minutes: i64,
    #[serde(default)]
    pub comment: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SilenceOut {
    pub id: i64,
    pub ends_at: DateTime<Utc>,
    pub created_by: String,
}

/// A maintenance window (operators): matching alerts are recorded but do
/// not page until it ends.
#[utoipa::path(post, path = "/api/v1/silences", tag = "alerts", request_body = SilenceIn,
    security(("bearer" = ["operator"])),
    responses((status = 201, body = SilenceOut), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)))]
pub async fn silence(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> ApiResult<(axum::http::StatusCode, Json<SilenceOut>)> {
    actor.require(Role::Operator, "silence alerts")?;
    let s: SilenceIn =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("silence: {e}")))?;
    if s.matchers.is_empty() {
        return Err(ApiError::BadRequest(
            "`matchers` may not be empty: it would silence everything".into(),
        ));
    }
    for (k, v) in &s.matchers {
        if !store::SILENCE_LABELS.contains(&k.as_str()) || v.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "matcher `{k}={v}`: label must be one of {} with a non-empty value",
                store::SILENCE_LABELS.join(", ")
            )));
        }
    }
    if !(1..=30 * 24 * 60).contains(&s.minutes) {
        return Err(ApiError::BadRequest(format!(
            "`minutes={}`: expected 1 .. 43200 (30 days)",
            s.minutes
        )));
    }
    let client = state.pool.get().await?;
    let now = Utc::now();
    let ends_at = now + chrono::Duration::minutes(s.minutes);
    let id = store::create_silence(
        &**client,
        &s.matchers,
        now,
        ends_at,
        &actor.name,
        &s.comment,
    )
    .await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(SilenceOut {
            id,
            ends_at,
            created_by: actor.name,
        }),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnnotationQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub site: Option<String>,
    /// Only these severities (comma-separated).
    pub severity: Option<String>,
    /// Only alerts of devices in these buildings (comma-separated; empty
    /// or "All": every building).
    pub building: Option<String>,
    /// Only alerts of devices of these kinds (comma-separated, e.g. `lift`
    /// on the lifts dashboard).
    pub kind: Option<String>,
    /// With `kind`: also the alerts of no device (consumption rules over an
    /// area or a purpose).
    pub site_wide: Option<bool>,
    /// With `site_wide`: only the device-less alerts about these metrics
    /// (comma-separated, e.g. `volume_m3` for the water panel), so a water
    /// limit is not drawn over electricity.
    pub metric: Option<String>,
}

/// One alert as a Grafana region annotation.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Annotation {
    /// Start, epoch ms.
    pub time: i64,
    /// End (resolution, or now while open), epoch ms.
    #[serde(rename = "timeEnd")]
    pub time_end: i64,
    pub title: String,
    pub text: String,
    pub tags: Vec<String>,
}

/// Alerts overlapping the range, as annotations (Infinity: time, timeEnd,
/// title, text, tags).
#[utoipa::path(get, path = "/api/v1/annotations", tag = "alerts", params(AnnotationQuery),
    responses((status = 200, body = [Annotation]), (status = 400, body = crate::error::ErrorBody)))]
pub async fn annotations(
    State(state): State<AppState>,
    Q(q): Q<AnnotationQuery>,
) -> ApiResult<Json<Vec<Annotation>>> {
    let (from, to) = params::range(q.from.as_deref(), q.to.as_deref(), 3 * 366)?;
    let severities: Option<Vec<String>> = q.severity.as_ref().map(|s| {
        s.split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect()
    });
    let buildings = crate::routes::series::choice(q.building.as_ref());
    let kinds = crate::routes::series::choice(q.kind.as_ref());
    let site_wide = q.site_wide.unwrap_or(false);
    let metrics = crate::routes::series::choice(q.metric.as_ref());
    let client = state.pool.get().await?;
    let rows = crate::query(&client,
            "SELECT a.started_at, coalesce(a.resolved_at, now()), a.rule, a.severity, a.summary,
                    coalesce(a.device_id, ''), a.state, a.labels->>'closed_by'
               FROM alerts a LEFT JOIN devices d ON d.device_id = a.device_id
              WHERE a.started_at < $2 AND coalesce(a.resolved_at, now()) >= $1
                AND ($3::text IS NULL OR a.site_id = $3) AND ($4::text[] IS NULL OR a.severity = ANY($4))
                AND ($5::text[] IS NULL OR d.building_id = ANY($5) OR (a.device_id IS NULL AND $7))
                AND ($6::text[] IS NULL OR d.kind = ANY($6) OR (a.device_id IS NULL AND $7))
                AND (a.device_id IS NOT NULL OR $8::text[] IS NULL OR a.labels->>'metric' = ANY($8))
              ORDER BY a.started_at LIMIT 5000",
            &[&from, &to, &q.site, &severities, &buildings, &kinds, &site_wide, &metrics],
        )
        .await?;
    Ok(Json(
        rows.iter()
            .map(|r| {
                let start: DateTime<Utc> = r.get(0);
                let end: DateTime<Utc> = r.get(1);
                let rule: String = r.get(2);
                let severity: String = r.get(3);
                let device: String = r.get(5);
                let mut text: String = r.get(4);
                if r.get::<_, Option<String>>(7).as_deref() == Some("replay_end") {
                    text.push_str(&format!(
                        " (replayed; still firing when the replay ended at {}, not evaluated after)",
                        end.format("%Y-%m-%d %H:%M UTC")
                    ));
                }
                Annotation {
                    time: start.timestamp_millis(),
                    time_end: end.timestamp_millis(),
                    title: format!("{rule} ({severity})"),
                    text,
                    tags: vec![rule, severity, device, r.get(6)],
                }
            })
            .collect(),
    ))
}
