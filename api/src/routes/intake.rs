//! One intake for alerts that are not estatemon's own rules (see
//! `estatemon_analytics::oncall::intake`): Alertmanager's webhook, a
//! generic JSON alert, and heartbeats. Operators' tokens (Alertmanager's
//! `http_config.authorization` carries one). What arrives goes through the
//! same escalations and pages as any alert.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use estatemon_analytics::oncall::intake;
use serde::Serialize;

use crate::auth::{Actor, Role};
use crate::extract::P;
use crate::{ApiError, ApiResult, AppState};

/// Alertmanager's webhook body, version 4 (only what estatemon reads;
/// the rest is accepted and ignored).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AlertmanagerIn {
    /// `4`.
    pub version: String,
    pub receiver: Option<String>,
    pub alerts: Vec<AlertmanagerAlertIn>,
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerAlertIn {
    /// `firing` or `resolved`.
    pub status: String,
    /// `alertname`, `severity` (critical, warning, info), `site`, `device` …
    pub labels: BTreeMap<String, String>,
    /// `summary` or `description` becomes the alert's summary.
    pub annotations: Option<BTreeMap<String, String>>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    /// The alert's identity: one open alert per fingerprint.
    pub fingerprint: String,
}

/// A generic alert.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct GenericAlertIn {
    /// The system that raised it.
    pub source: String,
    /// Its identity at the source: one open alert per source and key.
    pub key: String,
    /// `firing` (default) or `resolved`.
    pub status: Option<String>,
    /// `emergency`, `ordinary`, `routine` (or critical, warning, info).
    pub severity: Option<String>,
    pub summary: String,
    pub site: Option<String>,
    pub building: Option<String>,
    pub device: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub at: Option<DateTime<Utc>>,
}

/// What the intake did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TakenOut {
    pub opened: usize,
    /// Already open: refreshed (a re-sent group, a repeat).
    pub refreshed: usize,
    pub resolved: usize,
    /// Resolved at the source but not open here.
    pub unknown: usize,
}

impl From<intake::Taken> for TakenOut {
    fn from(t: intake::Taken) -> TakenOut {
        TakenOut {
            opened: t.opened,
            refreshed: t.refreshed,
            resolved: t.resolved,
            unknown: t.unknown,
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("{what}: {e}")))
}

/// Alerts from Prometheus Alertmanager (its `webhook_config`), de-duplicated
/// by fingerprint, through the same escalations as estatemon's own.
#[utoipa::path(post, path = "/api/v1/intake/alertmanager", tag = "on call",
    request_body = AlertmanagerIn, security(("bearer" = ["operator"])),
    responses((status = 200, body = TakenOut), (status = 400, body = crate::error::ErrorBody)))]
pub async fn alertmanager(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> ApiResult<Json<TakenOut>> {
    actor.require(Role::Operator, "send alerts in")?;
    let w: intake::AlertmanagerWebhook = parse("Alertmanager webhook", &body)?;
    if w.version != "4" {
        return Err(ApiError::BadRequest(format!(
            "Alertmanager webhook version `{}`: version 4 is read",
            w.version
        )));
    }
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let taken = intake::alertmanager(&*tx, &w, &state.config.alerts.receivers()).await?;
    tx.commit().await?;
    Ok(Json(taken.into()))
}

/// A generic JSON alert from any system.
#[utoipa::path(post, path = "/api/v1/intake/alerts", tag = "on call",
    request_body = GenericAlertIn, security(("bearer" = ["operator"])),
    responses((status = 200, body = TakenOut), (status = 400, body = crate::error::ErrorBody)))]
pub async fn generic(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> ApiResult<Json<TakenOut>> {
    actor.require(Role::Operator, "send alerts in")?;
    let a: intake::GenericAlert = parse("alert", &body)?;
    if a.source.trim().is_empty() || a.key.trim().is_empty() || a.summary.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "`source`, `key` and `summary` may not be empty".into(),
        ));
    }
    if !matches!(a.status.as_deref(), None | Some("firing" | "resolved")) {
        return Err(ApiError::BadRequest(
            "`status`: `firing` or `resolved`".into(),
        ));
    }
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let taken = intake::generic(&*tx, &a, &state.config.alerts.receivers()).await?;
    tx.commit().await?;
    Ok(Json(taken.into()))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BeatOut {
    pub name: String,
    pub at: DateTime<Utc>,
}

/// A heartbeat: the monitor `name` (`[[oncall.heartbeat]]`) checked in; its
/// missed-heartbeat alert, if any, resolves.
#[utoipa::path(post, path = "/api/v1/intake/heartbeat/{name}", tag = "on call",
    security(("bearer" = ["operator"])),
    params(("name" = String, Path, description = "the monitor")),
    responses((status = 200, body = BeatOut), (status = 404, body = crate::error::ErrorBody)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    P(name): P<String>,
) -> ApiResult<Json<BeatOut>> {
    actor.require(Role::Operator, "check in")?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    if !intake::beat(&*tx, &name, &state.config.alerts.receivers()).await? {
        return Err(ApiError::NotFound(format!(
            "no heartbeat monitor `{name}` (declare it in [[oncall.heartbeat]])"
        )));
    }
    tx.commit().await?;
    Ok(Json(BeatOut {
        name,
        at: Utc::now(),
    }))
}
