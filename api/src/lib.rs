//! # estatemon-api
//!
//! The HTTP API: REST and JSON under `/api/v1` for Grafana (through its
//! Infinity datasource, bearer token) and for operators, with its OpenAPI
//! document at `/api/v1/openapi.json` and Prometheus `/metrics`.
//!
//! - [`auth`]: bearer tokens with roles (viewer, operator, admin), stored
//!   hashed and compared in constant time.
//! - [`audit`]: every request (who, what, when, outcome) into `audit_log`.
//! - [`params`]: Grafana's time range, `$__interval` and max data points.
//! - [`routes`]: one module per resource; handlers are a few lines over
//!   the database and the analytics crate.
//! - [`metrics`]: request counts and latency by route.
//!
//! Reads `sites`, `buildings`, `devices`, `readings`, `readings_hourly`,
//! `readings_daily`, `alerts`, `silences`, `reports`, `report_files`,
//! `retrofits`, `rule_sets`, `dead_letters`, `api_tokens`; writes `devices`,
//! `retrofits`, `rule_sets` and `api_tokens` (admins), `alerts`
//! (acknowledgement) and `silences` (operators), `audit_log`. It never
//! talks to MQTT: ingest and analytics read the rules admins put in
//! `rule_sets`.

pub mod audit;
pub mod auth;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod params;
pub mod routes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use estatemon_domain::config::Config;
use estatemon_domain::schema;

pub use error::{ApiError, ApiResult};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: deadpool_postgres::Pool,
    /// Panel and report reads (`database.read_url`, a standby; else `pool`).
    pub read_pool: deadpool_postgres::Pool,
    pub tokens: auth::Tokens,
    pub audit: audit::Audit,
    pub metrics: metrics::Metrics,
    /// `timescaledb` or `plain`.
    pub storage_mode: &'static str,
    pub config: Arc<Config>,
    pub ledger_cache: LedgerCache,
    /// Savings panels' answers, kept for `api.response_cache_s`.
    pub savings_cache: ResponseCache,
    /// Requests without a valid token, limited per client address.
    pub anonymous: Arc<audit::AnonymousLimiter>,
}

/// Ledger lookups panels repeat on every refresh (device ids per filter,
/// a site's time zone), kept for a few seconds (see
/// `routes::series::device_ids`).
#[derive(Clone, Default)]
pub struct LedgerCache {
    inner: Arc<std::sync::Mutex<LedgerMap>>,
}

/// Lookup key → (when resolved, the ids or names found).
type LedgerMap = std::collections::HashMap<String, (Instant, Arc<Vec<String>>)>;

impl LedgerCache {
    const TTL: Duration = Duration::from_secs(10);

    /// What `key` found less than [`Self::TTL`] ago, or else what `load`
    /// finds now (kept for the next caller).
    pub async fn get_or_load(
        &self,
        key: String,
        load: impl std::future::Future<Output = ApiResult<Vec<String>>>,
    ) -> ApiResult<Arc<Vec<String>>> {
        if let Some(found) = self.get(&key) {
            return Ok(found);
        }
        let found = Arc::new(load.await?);
        self.put(key, found.clone());
        Ok(found)
    }

    fn get(&self, key: &str) -> Option<Arc<Vec<String>>> {
        let map = self.inner.lock().expect("ledger cache lock");
        map.get(key)
            .filter(|(at, _)| at.elapsed() < Self::TTL)
            .map(|(_, found)| found.clone())
    }

    fn put(&self, key: String, found: Arc<Vec<String>>) {
        let mut map = self.inner.lock().expect("ledger cache lock");
        if map.len() > 10_000 {
            map.retain(|_, (at, _)| at.elapsed() < Self::TTL);
        }
        map.insert(key, (Instant::now(), found));
    }

    /// After a change to the ledger.
    pub fn clear(&self) {
        self.inner.lock().expect("ledger cache lock").clear();
    }
}

/// Answers that change at most once a day (savings from the stored
/// measurement, a retrofit's daily baseline), which every dashboard asks
/// for on each refresh: kept for 30 s per query, cleared by a registry or
/// retrofit change through this API (another process's change shows
/// within 30 s).
#[derive(Clone)]
pub struct ResponseCache {
    inner: Arc<std::sync::Mutex<ResponseMap>>,
    /// How long an answer is kept (`api.response_cache_s`); zero keeps none.
    ttl: Duration,
    /// Bumped by [`ResponseCache::clear`]: an answer computed before a
    /// clear is not kept after it.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

/// Query key → (when answered, the body, the measurement's time).
type ResponseMap =
    std::collections::HashMap<String, (Instant, Arc<serde_json::Value>, Option<String>)>;

impl Default for ResponseCache {
    fn default() -> Self {
        ResponseCache::new(Duration::from_secs(30))
    }
}

impl ResponseCache {
    pub fn new(ttl: Duration) -> ResponseCache {
        ResponseCache {
            inner: Arc::default(),
            ttl,
            generation: Arc::default(),
        }
    }

    pub fn get(&self, key: &str) -> Option<(Arc<serde_json::Value>, Option<String>)> {
        let map = self.inner.lock().expect("response cache lock");
        map.get(key)
            .filter(|(at, _, _)| at.elapsed() < self.ttl)
            .map(|(_, body, stamp)| (body.clone(), stamp.clone()))
    }

    /// The generation to hand back to [`ResponseCache::put`]: read it
    /// before computing the answer.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Keeps the answer unless the cache was cleared since `generation`.
    pub fn put(
        &self,
        key: String,
        body: Arc<serde_json::Value>,
        stamp: Option<String>,
        generation: u64,
    ) {
        let mut map = self.inner.lock().expect("response cache lock");
        if self.generation() != generation || self.ttl.is_zero() {
            return;
        }
        if map.len() > 1_000 {
            let ttl = self.ttl;
            map.retain(|_, (at, _, _)| at.elapsed() < ttl);
        }
        map.insert(key, (Instant::now(), body, stamp));
    }

    pub fn clear(&self) {
        let mut map = self.inner.lock().expect("response cache lock");
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        map.clear();
    }
}

/// Routes that answer without a token: health for load balancers, the
/// OpenAPI document, `/metrics` for Prometheus, and the dashboards' pages
/// (static; their queries carry the token).
fn is_public(path: &str) -> bool {
    matches!(path, "/api/v1/health" | "/api/v1/openapi.json" | "/metrics")
        || path == "/dashboards"
        || path.starts_with("/dashboards/")
        // Signed, expiring, single-use: the token is the authority.
        || path.starts_with("/oncall/a/")
        // Signed by the SMS gateway (X-Twilio-Signature).
        || path == "/oncall/sms"
        // Signed per person (the calendar URL is the secret).
        || path.starts_with("/oncall/ical/")
}

/// Where a request came from (the peer address; a fixed key when the
/// router runs without connection info, as in in-process tests).
fn client_addr(req: &Request) -> std::net::IpAddr {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

/// The route label of a request no route matched (the fallback's 404).
const UNMATCHED: &str = "unmatched";

/// Writes the audit row of a request whose future is dropped before it
/// answered (the client went away: Grafana cancels queries it no longer
/// needs) with status 499; disarmed once the request completes.
struct AbandonGuard {
    audit: audit::Audit,
    record: Option<audit::Record>,
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if let Some(mut r) = self.record.take() {
            r.at = chrono::Utc::now();
            r.status = 499;
            r.detail = "abandoned: the client closed the connection before the answer".into();
            self.audit.record(r);
        }
    }
}

/// Authentication, the role the route needs (checked before the handler,
/// so before any extractor reads the body), audit and metrics, around
/// every request. The audit row and the request count take the status of
/// the answer as it leaves here, whichever path made it. Every request
/// that reaches the API leaves one audit row, whether it was answered, its
/// handler panicked (500) or its client gave up (499); the exceptions are
/// health and metrics scrapes, and unauthenticated requests beyond the
/// per-address limit (counted, one row per burst).
async fn around(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    use futures_util::FutureExt;
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| UNMATCHED.into());
    let method = req.method().as_str().to_owned();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| {
            if let Some(token) = p.path().strip_prefix("/oncall/a/") {
                // The token without its signature: the audit shows which
                // page and action, and cannot be replayed from.
                format!(
                    "/oncall/a/{}",
                    estatemon_analytics::oncall::links::redact(token)
                )
            } else if let Some(rest) = p.path().strip_prefix("/oncall/ical/") {
                let person = rest.split('/').next().unwrap_or_default();
                format!("/oncall/ical/{}/***", audit::truncate_path(person))
            } else {
                audit::truncate_path(p.as_str())
            }
        })
        .unwrap_or_default();
    let audited = route != "/metrics" && route != "/api/v1/health";
    let record =
        |actor: Option<&auth::Actor>, anonymous: &str, status: u16, detail: String| audit::Record {
            at: chrono::Utc::now(),
            actor: actor.map_or_else(|| anonymous.to_owned(), |a| a.name.clone()),
            role: actor.map(|a| a.role.as_str().to_owned()),
            method: method.clone(),
            path: path.clone(),
            status: status as i32,
            detail,
        };
    if audited && !state.audit.has_room() {
        // The audit log cannot keep up (table locked, disk slow): refuse
        // rather than serve unaudited or grow without bound.
        state.metrics.audit_refused.inc();
        let response = uniform(
            ApiError::Unavailable(
                "the audit log is behind (database slow); try again shortly".into(),
            )
            .into_response(),
        );
        count(&state, &route, &method, response.status().as_u16(), started);
        return response;
    }
    let mut actor: Option<auth::Actor> = None;
    // Who the audit row names when no token matched.
    let mut anonymous = "anonymous";
    let mut detail = String::new();
    let response = if is_public(req.uri().path()) {
        next.run(req).await
    } else {
        let header = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok());
        let verified = match (header, auth::bearer(header)) {
            (None, _) => Err((ApiError::Unauthenticated, "anonymous", "no bearer token")),
            (Some(_), None) => Err((
                ApiError::Unauthenticated,
                "anonymous",
                "malformed Authorization header",
            )),
            (Some(_), Some(token)) => match state.tokens.authenticate(&state.pool, token).await {
                Ok(a) => Ok(a),
                Err(ApiError::Unauthenticated) => Err((
                    ApiError::Unauthenticated,
                    "unknown-token",
                    "unknown or revoked token",
                )),
                Err(e) => Err((e, "anonymous", "token check failed")),
            },
        };
        match verified {
            Ok(a) => {
                actor = Some(a.clone());
                let need = routes::required_role(req.method(), &route);
                if route != UNMATCHED && a.role < need {
                    // Before the handler, so before any extractor reads
                    // or parses the body: a caller without the role
                    // learns nothing about it (issue 33).
                    detail = format!("refused before the handler: needs role {}", need.as_str());
                    ApiError::Forbidden {
                        have: a.role.as_str(),
                        need: need.as_str(),
                        what: format!("{method} {route}"),
                    }
                    .into_response()
                } else {
                    req.extensions_mut().insert(a.clone());
                    let mut guard = AbandonGuard {
                        audit: state.audit.clone(),
                        record: audited.then(|| record(Some(&a), "", 499, String::new())),
                    };
                    let outcome = std::panic::AssertUnwindSafe(next.run(req))
                        .catch_unwind()
                        .await;
                    guard.record = None;
                    match outcome {
                        Ok(response) => response,
                        Err(panic) => {
                            let what = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_else(|| "panic".into());
                            tracing::error!(%route, %method, panic = %what, "handler panicked");
                            state.metrics.panics.inc();
                            detail = format!("handler panicked: {what}");
                            ApiError::Internal.into_response()
                        }
                    }
                }
            }
            Err((error, who, why)) => {
                anonymous = who;
                detail = why.to_owned();
                if matches!(error, ApiError::Unauthenticated) {
                    match state.anonymous.check(client_addr(&req), Instant::now()) {
                        audit::Verdict::Answer => error.into_response(),
                        audit::Verdict::RefuseFirst => {
                            detail = format!(
                                "{why}; rate limited: further requests from this address \
                                 this minute are counted in \
                                 estatemon_api_unauthenticated_refused_total, not audited"
                            );
                            state.metrics.unauthenticated_refused.inc();
                            ApiError::TooManyRequests.into_response()
                        }
                        audit::Verdict::Refuse => {
                            state.metrics.unauthenticated_refused.inc();
                            let response = uniform(ApiError::TooManyRequests.into_response());
                            count(&state, &route, &method, response.status().as_u16(), started);
                            return response;
                        }
                    }
                } else {
                    error.into_response()
                }
            }
        }
    };
    let mut response = uniform(response);
    let status = response.status().as_u16();
    count(&state, &route, &method, status, started);
    if audited {
        if let Some(audit::Detail(d)) = response.extensions_mut().remove::<audit::Detail>() {
            detail = d;
        }
        let mut row = record(actor.as_ref(), anonymous, status, detail);
        if let Some(audit::LinkActor(a)) = response.extensions_mut().remove::<audit::LinkActor>() {
            row.actor = a;
        }
        state.audit.record(row);
    }
    response
}

fn count(state: &AppState, route: &str, method: &str, status: u16, started: Instant) {
    state
        .metrics
        .requests
        .get_or_create(&metrics::RequestLabels {
            route: route.to_owned(),
            method: method.to_owned(),
            status,
        })
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&metrics::RouteLabels {
            route: route.to_owned(),
        })
        .observe(started.elapsed().as_secs_f64());
}

/// Every answer in one shape, whoever produced it: axum's own rejections
/// (413 for a body over the limit, 405 for a method the route lacks) become
/// the JSON [`error::ErrorBody`] the handlers give; a 401 says how to
/// authenticate (`WWW-Authenticate: Bearer`, RFC 6750); nothing is
/// content-sniffed, and HTML (the stored reports) runs no script and loads
/// nothing from elsewhere.
fn uniform(response: Response) -> Response {
    use axum::http::{header, HeaderValue, StatusCode};
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let keep = response.extensions().get::<audit::KeepHtml>().is_some();
    let mut response =
        if (status.is_client_error() || status.is_server_error()) && !is_json && !keep {
            let (kind, message) = match status {
                StatusCode::PAYLOAD_TOO_LARGE => (
                    "payload_too_large",
                    "the request body is over the limit (2 MB)".to_owned(),
                ),
                StatusCode::METHOD_NOT_ALLOWED => (
                    "method_not_allowed",
                    "this route does not take that method; see /api/v1/openapi.json".to_owned(),
                ),
                StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                    "unsupported_media_type",
                    "the body must be JSON (Content-Type: application/json)".to_owned(),
                ),
                other => (
                    "error",
                    other
                        .canonical_reason()
                        .unwrap_or("request failed")
                        .to_owned(),
                ),
            };
            let error = ApiError::Rejected {
                status,
                kind,
                message,
            };
            // Axum's own headers (e.g. 405's `Allow`) stay; the body becomes
            // the JSON error body.
            let (mut parts, _) = response.into_parts();
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let body = serde_json::to_vec(&error.body()).expect("error body serialises");
            Response::from_parts(parts, axum::body::Body::from(body))
        } else {
            response
        };
    let headers = response.headers_mut();
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"estatemon\""),
        );
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let is_html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html && !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        // The report is self-contained: inline styles and SVG, no script.
        // (A dashboard page sets its own, allowing its one script.)
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
                 font-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
        );
    }
    response
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    routes::router()
        .layer(axum::middleware::from_fn_with_state(state.clone(), around))
        .with_state(state)
}

/// Runs a statement prepared once per connection (deadpool's statement
/// cache): one round trip per query instead of two.
pub(crate) async fn query(
    client: &deadpool_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, ApiError> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query(&statement, params).await?)
}

/// A pool of database connections for the API.
pub fn pool(config: &Config) -> anyhow::Result<deadpool_postgres::Pool> {
    pool_of(&config.database.url, config)
}

/// A pool of connections to `url`.
fn pool_of(url: &str, config: &Config) -> anyhow::Result<deadpool_postgres::Pool> {
    let pg: tokio_postgres::Config = url.parse()?;
    let manager = deadpool_postgres::Manager::from_config(
        pg,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    Ok(deadpool_postgres::Pool::builder(manager)
        .max_size(config.api.pool_size)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(
            config.database.connect_timeout_s.max(1),
        )))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()?)
}

/// The state for a configuration (migrations must have run).
pub async fn state(config: Config) -> anyhow::Result<(AppState, tokio::task::JoinHandle<()>)> {
    let pool = pool(&config)?;
    let read_pool = match &config.database.read_url {
        Some(url) => {
            tracing::info!(read_url = %estatemon_domain::config::redact_url(url),
                "panel and report reads go to the read URL");
            pool_of(url, &config)?
        }
        None => pool.clone(),
    };
    let response_ttl = Duration::from_secs(config.api.response_cache_s);
    let mode = {
        let client = pool.get().await?;
        schema::recorded_mode(&client).await?.as_str()
    };
    let metrics = metrics::Metrics::new();
    let (audit, writer) = audit::Audit::start(
        pool.clone(),
        Duration::from_millis(config.api.audit_flush_ms.max(10)),
        config.api.audit_max_pending_mb.saturating_mul(1024 * 1024),
        metrics.clone(),
    );
    let anonymous = Arc::new(audit::AnonymousLimiter::new(
        config.api.unauthenticated_per_minute,
    ));
    Ok((
        AppState {
            pool,
            read_pool,
            tokens: auth::Tokens::new(Duration::from_secs(5)),
            audit,
            metrics,
            storage_mode: mode,
            config: Arc::new(config),
            ledger_cache: LedgerCache::default(),
            savings_cache: ResponseCache::new(response_ttl),
            anonymous,
        },
        writer,
    ))
}

/// Serves until `shutdown` resolves; flushes the audit log before returning.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listen = config.api.listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    serve_on(listener, config, shutdown).await
}

/// [`serve`] on a listener the caller bound (the demo binds first, so it
/// can print the address, port 0 included).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (state, writer) = state(config.clone()).await?;
    // Heartbeats and the pager: so a dead analytics job still pages.
    let (watch_stop, watch_stopped) = tokio::sync::oneshot::channel::<()>();
    // (Always: a roster may be stored through this API.)
    let watcher = tokio::spawn(estatemon_analytics::oncall::watch::run(config, async {
        let _ = watch_stopped.await;
    }));
    let listen = listener.local_addr()?;
    tracing::info!(%listen, storage = state.storage_mode, "API listening");
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    let _ = watch_stop.send(());
    let _ = watcher.await;
    // The router (and with it every audit sender) is gone: the writer
    // flushes what it holds and ends.
    let _ = writer.await;
    Ok(())
}

/// Creates a token and returns it (shown once; only its hash is kept).
pub async fn create_token(
    client: &tokio_postgres::Client,
    name: &str,
    role: auth::Role,
    created_by: &str,
) -> Result<String, ApiError> {
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::BadRequest(
            "a token name of 1 to 100 characters is required".into(),
        ));
    }
    let token = auth::new_token();
    client
        .execute(
            "INSERT INTO api_tokens (name, role, token_sha256, created_by) VALUES ($1, $2, $3, $4)",
            &[
                &name,
                &role.as_str(),
                &auth::hash(&token).to_vec(),
                &created_by,
            ],
        )
        .await?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    /// A handler that panics answers 500 with the JSON error body, is
    /// counted and leaves an audit record (the connection used to drop with
    /// no answer and no row). No database is needed: the record waits in
    /// the backlog.
    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_is_audited() {
        let mut config = Config::default();
        config.database.url = "postgres://nobody@127.0.0.1:1/none".into();
        let pool = pool(&config).unwrap();
        let metrics = metrics::Metrics::new();
        let (audit, _writer) = audit::Audit::start(
            pool.clone(),
            Duration::from_secs(3600),
            1 << 20,
            metrics.clone(),
        );
        let state = AppState {
            read_pool: pool.clone(),
            pool,
            tokens: auth::Tokens::new(Duration::from_secs(3600)),
            audit,
            metrics: metrics.clone(),
            storage_mode: "plain",
            config: Arc::new(config),
            ledger_cache: LedgerCache::default(),
            savings_cache: ResponseCache::default(),
            anonymous: Arc::new(audit::AnonymousLimiter::new(0)),
        };
        // A cached token, so authentication needs no database.
        let token = "emt_test";
        state.tokens.preload(vec![(
            auth::hash(token),
            auth::Actor {
                name: "tester".into(),
                role: auth::Role::Viewer,
            },
        )]);
        let app = Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    if true {
                        panic!("a bug");
                    }
                    "unreachable"
                }),
            )
            .layer(axum::middleware::from_fn_with_state(state.clone(), around))
            .with_state(state);
        let resp = app
            .oneshot(
                Request::builder()
                    .uri("/boom")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], "internal", "{json}");
        assert_eq!(metrics.panics.get(), 1);
        assert_eq!(metrics.audit_pending.get(), 1, "the 500 is audited");
    }
}

#[cfg(test)]
mod response_cache_tests {
    use super::*;

    #[test]
    fn an_answer_computed_before_a_clear_is_not_kept_after_it() {
        let cache = ResponseCache::default();
        let before = cache.generation();
        cache.clear(); // a retrofit changed while the answer was computed
        cache.put("k".into(), Arc::new(serde_json::json!(1)), None, before);
        assert!(cache.get("k").is_none());
        let now = cache.generation();
        cache.put("k".into(), Arc::new(serde_json::json!(2)), None, now);
        assert_eq!(
            cache.get("k").map(|(v, _)| (*v).clone()),
            Some(serde_json::json!(2))
        );
        cache.clear();
        assert!(cache.get("k").is_none());
    }
}
