//! `/api/v1` by resource: [`registry`] (sites, devices), [`series`]
//! (readings and consumption for panels), [`events`] (gate and lift event
//! counts, lift states), [`alerts`] (alerts, silences, annotations),
//! [`reports`] (quarterly reports, savings), [`admin`] (tokens, rules,
//! retrofits), [`dead_letters`].

pub mod admin;
pub mod alerts;
pub mod dead_letters;
pub mod events;
pub mod registry;
pub mod reports;
pub mod series;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::OpenApi;

use crate::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` when the database answers, else `degraded`.
    pub status: &'static str,
    /// `timescaledb` or `plain` (PostgreSQL with native partitioning).
    pub database_mode: &'static str,
    pub database: &'static str,
    pub version: &'static str,
}

/// Liveness and the storage mode; no token needed.
#[utoipa::path(get, path = "/api/v1/health", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let up = match state.pool.get().await {
        Ok(c) => c.query_one("SELECT 1", &[]).await.is_ok(),
        Err(_) => false,
    };
    let body = Health {
        status: if up { "ok" } else { "degraded" },
        database_mode: state.storage_mode,
        database: if up { "up" } else { "down" },
        version: env!("CARGO_PKG_VERSION"),
    };
    let code = if up {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "estatemon API",
        description = "Building telemetry: sites, devices, readings and consumption for Grafana panels, alerts, savings, quarterly reports, dead letters. Every route but health and this document needs `Authorization: Bearer <token>`; roles: viewer (read), operator (acknowledge, silence), admin (devices, rules, retrofits, tokens).",
    ),
    paths(
        health,
        registry::sites, registry::devices, registry::put_device, registry::delete_device,
        series::series, series::consumption,
        alerts::list, alerts::acknowledge, alerts::silence, alerts::annotations,
        reports::list, reports::file, reports::savings, reports::savings_daily,
        events::counts, events::lift_states,
        dead_letters::list,
        admin::list_tokens, admin::create_token, admin::revoke_token,
        admin::rules, admin::put_rules, admin::reset_rules,
        admin::retrofits, admin::put_retrofit, admin::delete_retrofit,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/api/v1/sites", get(registry::sites))
        .route("/api/v1/devices", get(registry::devices))
        .route(
            "/api/v1/devices/{id}",
            axum::routing::put(registry::put_device).delete(registry::delete_device),
        )
        .route("/api/v1/series", get(series::series))
        .route("/api/v1/consumption", get(series::consumption))
        .route("/api/v1/alerts", get(alerts::list))
        .route("/api/v1/alerts/{id}/ack", post(alerts::acknowledge))
        .route("/api/v1/silences", post(alerts::silence))
        .route("/api/v1/annotations", get(alerts::annotations))
        .route("/api/v1/reports", get(reports::list))
        .route(
            "/api/v1/reports/{site}/{quarter}/{file}",
            get(reports::file),
        )
        .route("/api/v1/savings", get(reports::savings))
        .route("/api/v1/savings/daily", get(reports::savings_daily))
        .route("/api/v1/events", get(events::counts))
        .route("/api/v1/lifts/states", get(events::lift_states))
        .route(
            "/api/v1/tokens",
            get(admin::list_tokens).post(admin::create_token),
        )
        .route(
            "/api/v1/tokens/{name}",
            axum::routing::delete(admin::revoke_token),
        )
        .route(
            "/api/v1/rules",
            get(admin::rules)
                .put(admin::put_rules)
                .delete(admin::reset_rules),
        )
        .route("/api/v1/retrofits", get(admin::retrofits))
        .route(
            "/api/v1/retrofits/{site}/{id}",
            axum::routing::put(admin::put_retrofit).delete(admin::delete_retrofit),
        )
        .route("/api/v1/dead-letters", get(dead_letters::list))
        .fallback(|| async {
            crate::ApiError::NotFound("no such route; see /api/v1/openapi.json".into())
        })
}
