//! `/metrics` (Prometheus text format) and `/health` (JSON) of the
//! analytics job.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use estatemon_domain::schema::MigrationReport;
use prometheus_client::registry::Registry;

use crate::metrics::Metrics;

pub struct HealthState {
    pub registry: Registry,
    pub metrics: Metrics,
    pub migration: MigrationReport,
    /// How many rules run, and where they came from.
    pub rules: std::sync::Mutex<(usize, String)>,
    pub stopping: AtomicBool,
}

pub fn router(state: Arc<HealthState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<HealthState>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// 200 while connected to the database, 503 otherwise; says which storage
/// mode runs and whether this process leads the evaluation.
async fn health(State(state): State<Arc<HealthState>>) -> impl IntoResponse {
    let m = &state.metrics;
    let db = m.db_connected.get() > 0;
    let stopping = state.stopping.load(Ordering::Relaxed);
    let ok = db && !stopping;
    let (rules, rules_from) = state.rules.lock().expect("rules lock").clone();
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "degraded" },
        "storage_mode": state.migration.mode.as_str(),
        "storage_detail": state.migration.reason,
        "schema_version": state.migration.schema_version,
        "database_connected": db,
        "leader": m.leader.get() > 0,
        "rules": rules,
        "rules_from": rules_from,
        "last_evaluation_unix": m.last_cycle_timestamp.get(),
        "alerts_open": m.alerts_open.get(),
        "deliveries_pending": m.deliveries_pending.get(),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
