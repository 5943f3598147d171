//! `/api/v1` by resource: [`registry`] (sites, devices), [`series`]
//! (readings and consumption for panels), [`events`] (gate and lift event
//! counts, lift states), [`alerts`] (alerts, silences, annotations),
//! [`reports`] (quarterly reports, savings), [`admin`] (tokens, rules,
//! retrofits), [`dead_letters`].

pub mod admin;
pub mod alerts;
pub mod dead_letters;
pub mod events;
pub mod inspections;
pub mod intake;
pub mod oncall;
pub mod oncall_links;
pub mod registry;
pub mod reports;
pub mod series;
pub mod view;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::OpenApi;

use std::collections::HashMap;

use crate::auth::Role;
use crate::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` when the database answers, else `degraded`.
    pub status: &'static str,
    /// `timescaledb` or `plain` (PostgreSQL with native partitioning).
    pub database_mode: &'static str,
    pub database: &'static str,
    pub version: &'static str,
    /// Emergencies (entrapment, door_forced, fire_main_pressure_low) the
    /// rule set stored through the API does not page for, because an admin
    /// waived them; empty when every emergency pages. (Rules from a file
    /// are reported by ingest's own `/health`.)
    pub emergencies_waived: Vec<String>,
    /// Who stored the set with the waiver.
    pub emergencies_waived_by: Option<String>,
}

/// Liveness and the storage mode; no token needed.
#[utoipa::path(get, path = "/api/v1/health", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let (up, waived) = match state.pool.get().await {
        Ok(c) => match estatemon_domain::schema::rule_sets::latest(&**c).await {
            Ok(latest) => (
                true,
                latest
                    .filter(|s| !s.reset && !s.waived_emergencies.is_empty())
                    .map(|s| (s.waived_emergencies, s.created_by)),
            ),
            Err(_) => (false, None),
        },
        Err(_) => (false, None),
    };
    let (emergencies_waived, emergencies_waived_by) = match waived {
        Some((list, by)) => (list, Some(by)),
        None => (Vec::new(), None),
    };
    let body = Health {
        status: if up { "ok" } else { "degraded" },
        database_mode: state.storage_mode,
        database: if up { "up" } else { "down" },
        version: env!("CARGO_PKG_VERSION"),
        emergencies_waived,
        emergencies_waived_by,
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

/// The error answers every operation can give, documented once here rather
/// than on each route: 401 (bearer token missing, malformed or unknown, with
/// `WWW-Authenticate: Bearer`), 403 (the token's role may not), 400 (a parameter or body that does not
/// parse), 404 (an id in the path that names nothing), 413 (a body over the
/// limit), 429 (too many unauthenticated requests from one address) and 503
/// (database unavailable). All carry [`crate::error::ErrorBody`]. Public
/// routes (health, this document) get an empty security requirement.
struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{
            ContentBuilder, HeaderBuilder, Ref, RefOr, ResponseBuilder, SecurityRequirement,
        };
        let error = |description: &str, www_authenticate: bool| {
            let mut b = ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            );
            if www_authenticate {
                b = b.header(
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .description(Some("`Bearer` (RFC 6750)"))
                        .build(),
                );
            }
            RefOr::T(b.build())
        };
        // Handler names repeat across modules (`list`): operation ids must
        // be unique, so a repeated one is prefixed with its tag.
        let mut seen = std::collections::HashMap::<String, usize>::new();
        for item in openapi.paths.paths.values() {
            for op in [&item.get, &item.put, &item.post, &item.delete]
                .into_iter()
                .flatten()
            {
                if let Some(id) = &op.operation_id {
                    *seen.entry(id.clone()).or_default() += 1;
                }
            }
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let public = path == "/api/v1/health";
            let has_path_params = path.contains('{');
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                if let Some(id) = &op.operation_id {
                    if seen.get(id).is_some_and(|n| *n > 1) {
                        let tag = op
                            .tags
                            .as_ref()
                            .and_then(|t| t.first())
                            .cloned()
                            .unwrap_or_else(|| "api".into());
                        op.operation_id = Some(format!("{}_{id}", tag.replace(['-', ' '], "_")));
                    }
                }
                let r = &mut op.responses.responses;
                // OpenAPI requires a description on every response.
                for (code, response) in r.iter_mut() {
                    if let RefOr::T(response) = response {
                        if response.description.is_empty() {
                            response.description = code
                                .parse::<u16>()
                                .ok()
                                .and_then(|c| axum::http::StatusCode::from_u16(c).ok())
                                .and_then(|c| c.canonical_reason())
                                .unwrap_or("answer")
                                .to_owned();
                        }
                    }
                }
                if public {
                    op.security = Some(vec![SecurityRequirement::default()]);
                    continue;
                }
                let takes_input = op.parameters.as_ref().is_some_and(|p| !p.is_empty())
                    || op.request_body.is_some();
                r.entry("401".into())
                    .or_insert_with(|| error("missing, malformed or unknown bearer token", true));
                r.entry("403".into())
                    .or_insert_with(|| error("the token's role may not do this", false));
                r.entry("429".into()).or_insert_with(|| {
                    error("too many unauthenticated requests from this address", false)
                });
                r.entry("503".into())
                    .or_insert_with(|| error("database unavailable; try again", false));
                if takes_input {
                    r.entry("400".into())
                        .or_insert_with(|| error("a parameter or the body is malformed", false));
                }
                if has_path_params {
                    r.entry("404".into())
                        .or_insert_with(|| error("nothing by that name", false));
                }
                if op.request_body.is_some() {
                    r.entry("413".into())
                        .or_insert_with(|| error("the body is over the size limit", false));
                }
            }
        }
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
        events::counts, events::lift_states, events::lift_stats, events::lift_incidents,
        events::lift_replacements,
        dead_letters::list,
        oncall::now, oncall::pages, oncall::timeline, oncall::response, oncall::load,
        oncall::get_roster, oncall::put_roster,
        intake::alertmanager, intake::generic, intake::heartbeat,
        inspections::record, inspections::compliance, inspections::compliance_exceptions,
        inspections::work_items,
        inspections::close,
        admin::list_tokens, admin::create_token, admin::revoke_token,
        admin::rules, admin::put_rules, admin::reset_rules,
        admin::retrofits, admin::put_retrofit, admin::delete_retrofit,
    ),
    modifiers(&BearerAuth, &ErrorResponses),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

/// The role each documented operation declares in its OpenAPI security
/// requirement (`security(("bearer" = ["admin"]))` on its
/// `#[utoipa::path]`), keyed `"PUT /api/v1/rules"`: the document is the
/// one list of operations, so a new route states its role where it is
/// documented, and a write operation that states none fails the
/// `every_write_operation_declares_its_role` test.
static DECLARED_ROLES: std::sync::LazyLock<HashMap<String, Role>> =
    std::sync::LazyLock::new(|| declared_roles(&document()));

/// The OpenAPI document as served, as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises")
}

/// `"METHOD /path"` → the role the operation's `bearer` scopes name. A
/// security requirement lists alternatives; within one, every scope is
/// needed: the role needed is the least, over the alternatives, of the
/// highest role each names.
fn declared_roles(doc: &serde_json::Value) -> HashMap<String, Role> {
    let mut roles = HashMap::new();
    let Some(paths) = doc["paths"].as_object() else {
        return roles;
    };
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, op) in item {
            let need = op["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|alternative| {
                    alternative["bearer"]
                        .as_array()?
                        .iter()
                        .filter_map(|scope| scope.as_str().and_then(Role::parse))
                        .max()
                })
                .min();
            if let Some(need) = need {
                roles.insert(format!("{} {path}", method.to_ascii_uppercase()), need);
            }
        }
    }
    roles
}

/// The role a request to `route` (the router's matched path, e.g.
/// `/api/v1/devices/{id}`) with `method` needs, checked by the middleware
/// before the handler runs (so before any extractor reads or parses the
/// body): what the operation declares; else `viewer` for reads and, failing
/// closed, `admin` for a write no operation documents.
pub fn required_role(method: &axum::http::Method, route: &str) -> Role {
    use axum::http::Method;
    let key = if method == Method::HEAD {
        Method::GET.as_str()
    } else {
        method.as_str()
    };
    if let Some(role) = DECLARED_ROLES.get(&format!("{key} {route}")) {
        return *role;
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        Role::Viewer
    } else {
        Role::Admin
    }
}

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
        .route("/api/v1/lifts/stats", get(events::lift_stats))
        .route("/api/v1/lifts/incidents", get(events::lift_incidents))
        .route("/api/v1/lifts/replacements", get(events::lift_replacements))
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
        .route("/api/v1/oncall/now", get(oncall::now))
        .route("/api/v1/oncall/pages", get(oncall::pages))
        .route(
            "/api/v1/oncall/roster",
            get(oncall::get_roster).put(oncall::put_roster),
        )
        .route("/api/v1/oncall/response", get(oncall::response))
        .route("/api/v1/oncall/load", get(oncall::load))
        .route("/api/v1/intake/alertmanager", post(intake::alertmanager))
        .route("/api/v1/intake/alerts", post(intake::generic))
        .route("/api/v1/intake/heartbeat/{name}", post(intake::heartbeat))
        .route("/api/v1/alerts/{id}/timeline", get(oncall::timeline))
        .route(
            "/oncall/a/{token}",
            get(oncall_links::show).post(oncall_links::act),
        )
        .route("/oncall/sms", post(oncall_links::sms_reply))
        .route("/oncall/ical/{person}/{token}", get(oncall_links::calendar))
        .route("/api/v1/inspections", post(inspections::record))
        .route("/api/v1/compliance", get(inspections::compliance))
        .route(
            "/api/v1/compliance/exceptions",
            get(inspections::compliance_exceptions),
        )
        .route("/api/v1/work-items", get(inspections::work_items))
        .route("/api/v1/work-items/{id}/close", post(inspections::close))
        .route("/dashboards", get(view::list))
        .route("/dashboards/{uid}", get(view::page))
        .fallback(|| async {
            crate::ApiError::NotFound("no such route; see /api/v1/openapi.json".into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    /// The methods that change something.
    const WRITE_METHODS: [&str; 4] = ["post", "put", "patch", "delete"];

    /// Every write operation in the document (so every write route: the
    /// contract test holds the router to the document) names the role it
    /// needs; a new one that does not fails here, not in production.
    #[test]
    fn every_write_operation_declares_its_role() {
        let doc = document();
        let roles = declared_roles(&doc);
        let mut writes = 0;
        let mut undeclared = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if !WRITE_METHODS.contains(&method.as_str()) {
                    continue;
                }
                writes += 1;
                let key = format!("{} {path}", method.to_ascii_uppercase());
                match roles.get(&key) {
                    Some(Role::Operator | Role::Admin) => {}
                    other => undeclared.push(format!("{key}: {other:?}")),
                }
            }
        }
        assert!(
            undeclared.is_empty(),
            "write operations without a declared operator or admin role \
             (add security((\"bearer\" = [\"…\"])) to their #[utoipa::path]): {undeclared:?}"
        );
        assert_eq!(writes, 16, "the write operations counted");
    }

    #[test]
    fn roles_come_from_the_document_and_unknown_writes_fail_closed() {
        assert_eq!(required_role(&Method::PUT, "/api/v1/rules"), Role::Admin);
        assert_eq!(required_role(&Method::GET, "/api/v1/rules"), Role::Viewer);
        assert_eq!(required_role(&Method::GET, "/api/v1/tokens"), Role::Admin);
        assert_eq!(required_role(&Method::HEAD, "/api/v1/tokens"), Role::Admin);
        assert_eq!(
            required_role(&Method::POST, "/api/v1/alerts/{id}/ack"),
            Role::Operator
        );
        assert_eq!(
            required_role(&Method::POST, "/api/v1/work-items/{id}/close"),
            Role::Operator
        );
        assert_eq!(
            required_role(&Method::DELETE, "/api/v1/devices/{id}"),
            Role::Admin
        );
        // Not documented: reads are open to viewers, writes need admin.
        assert_eq!(required_role(&Method::GET, "/api/v1/new"), Role::Viewer);
        assert_eq!(required_role(&Method::PATCH, "/api/v1/alerts"), Role::Admin);
        assert_eq!(required_role(&Method::POST, "/api/v1/new"), Role::Admin);
    }
}
