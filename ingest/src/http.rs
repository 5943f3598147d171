//! `/metrics` (Prometheus text format) and `/health` (JSON) of the ingestor.

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
    pub draining: AtomicBool,
    /// Whether this ingestor needs an MQTT session (`ingest.source =
    /// "mqtt"`, or Sparkplug / discovery over a NATS node's listener) and
    /// the JetStream consumer (`"nats"`).
    pub needs_mqtt: bool,
    pub needs_nats: bool,
    /// Over NATS, also the consumer of the MQTT gateway's store
    /// (`nats.mqtt_gateway`).
    pub needs_gateway: bool,
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

/// 200 when connected to the database and to every transport this
/// ingestor reads (MQTT broker, NATS consumer), 503 otherwise, with the
/// storage mode either way.
async fn health(State(state): State<Arc<HealthState>>) -> impl IntoResponse {
    let mqtt = state.metrics.mqtt_connected.get() > 0;
    let subscribed = state.metrics.mqtt_subscribed.get() > 0;
    let nats = state.metrics.nats.connected.get() > 0;
    let consuming = state.metrics.nats.consuming.get() > 0
        && (!state.needs_gateway || state.metrics.nats.gateway_consuming.get() > 0);
    let db = state.metrics.db_connected.get() > 0;
    let draining = state.draining.load(Ordering::Relaxed);
    let ok = (!state.needs_mqtt || (mqtt && subscribed))
        && (!state.needs_nats || (nats && consuming))
        && db
        && !draining;
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "degraded" },
        "storage_mode": state.migration.mode.as_str(),
        "storage_detail": state.migration.reason,
        "schema_version": state.migration.schema_version,
        "mqtt_connected": mqtt,
        "mqtt_subscribed": subscribed,
        "source": if state.needs_nats { "nats" } else { "mqtt" },
        "nats_connected": nats,
        "nats_consuming": consuming,
        "database_connected": db,
        "draining": draining,
        "inflight_messages": state.metrics.inflight_messages.get(),
        // Emergencies the running rules do not page for: 0 unless an admin
        // waived them (the names are in the log and in `GET /api/v1/rules`).
        "emergency_rules_missing": state.metrics.emergency_rules_missing.get(),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
