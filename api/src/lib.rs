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
    pub tokens: auth::Tokens,
    pub audit: audit::Audit,
    pub metrics: metrics::Metrics,
    /// `timescaledb` or `plain`.
    pub storage_mode: &'static str,
    pub config: Arc<Config>,
    pub ledger_cache: LedgerCache,
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

/// Routes that answer without a token: health for load balancers, the
/// OpenAPI document, and `/metrics` for Prometheus.
fn is_public(path: &str) -> bool {
    matches!(path, "/api/v1/health" | "/api/v1/openapi.json" | "/metrics")
}

/// Authentication, audit and metrics, around every request.
async fn around(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let mut actor: Option<auth::Actor> = None;
    let response = if is_public(req.uri().path()) {
        next.run(req).await
    } else {
        let header = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok());
        match auth::bearer(header) {
            None => ApiError::Unauthenticated.into_response(),
            Some(token) => match state.tokens.authenticate(&state.pool, token).await {
                Ok(a) => {
                    actor = Some(a.clone());
                    req.extensions_mut().insert(a);
                    next.run(req).await
                }
                Err(e) => e.into_response(),
            },
        }
    };
    let status = response.status().as_u16();
    state
        .metrics
        .requests
        .get_or_create(&metrics::RequestLabels {
            route: route.clone(),
            method: method.clone(),
            status,
        })
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&metrics::RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    if route != "/metrics" && route != "/api/v1/health" {
        state.audit.record(audit::Record {
            at: chrono::Utc::now(),
            actor: actor
                .as_ref()
                .map_or_else(|| "anonymous".to_owned(), |a| a.name.clone()),
            role: actor.as_ref().map(|a| a.role.as_str().to_owned()),
            method,
            path,
            status: status as i32,
            detail: String::new(),
        });
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
    let pg: tokio_postgres::Config = config.database.url.parse()?;
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
    let mode = {
        let client = pool.get().await?;
        schema::recorded_mode(&client).await?.as_str()
    };
    let metrics = metrics::Metrics::new();
    let (audit, writer) = audit::Audit::start(
        pool.clone(),
        Duration::from_millis(config.api.audit_flush_ms.max(10)),
        metrics.clone(),
    );
    Ok((
        AppState {
            pool,
            tokens: auth::Tokens::new(Duration::from_secs(5)),
            audit,
            metrics,
            storage_mode: mode,
            config: Arc::new(config),
            ledger_cache: LedgerCache::default(),
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
    let (state, writer) = state(config).await?;
    tracing::info!(%listen, storage = state.storage_mode, "API listening");
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
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
