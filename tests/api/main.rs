//! The HTTP API end to end, in-process (tower's `oneshot`) against a real
//! database holding a week of the simulated site: every route Grafana and
//! the operators use, the roles, the audit log, bad input as 4xx.

mod admin;
#[path = "../common/mod.rs"]
mod common;
mod hostile;
mod lifts;
mod panels;
mod serve;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use estatemon_api::auth::Role;
use serde_json::Value;
use tower::ServiceExt;

struct Api {
    router: axum::Router,
    state: estatemon_api::AppState,
}

impl Api {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .unwrap()
            .to_vec();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json, bytes)
    }

    async fn get(&self, uri: &str, token: &str) -> (StatusCode, Value) {
        let (s, j, _) = self.call("GET", uri, Some(token), None).await;
        (s, j)
    }
}

fn ms(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .timestamp_millis()
}

/// A week of the simulated site (2026-06-01..08, site time) in `db`, with
/// rollups refreshed, and the API over it.
/// `site` backfilled at 15-minute steps over `[from, to)` straight into
/// `db`; the ground truth.
fn backfill_site(
    db: &TestDb,
    site: &std::path::Path,
    from: &str,
    to: &str,
) -> estatemon_simulators::truth::GroundTruth {
    backfill_site_every(db, site, from, to, "900")
}

/// [`backfill_site`] at steps of `interval_s` seconds.
fn backfill_site_every(
    db: &TestDb,
    site: &std::path::Path,
    from: &str,
    to: &str,
    interval_s: &str,
) -> estatemon_simulators::truth::GroundTruth {
    let truth = std::env::temp_dir().join(format!("{}.json", unique("truth")));
    run(estatemon(db)
        .args(["simulate", "backfill", "--direct", "--site-file"])
        .arg(site)
        .args([
            "--from",
            from,
            "--to",
            to,
            "--interval-s",
            interval_s,
            "--truth",
        ])
        .arg(&truth));
    let read = estatemon_simulators::truth::GroundTruth::read(&truth).unwrap();
    let _ = std::fs::remove_file(&truth);
    read
}

async fn week_of_the_site(db: &TestDb) -> (Api, tokio_postgres::Client) {
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("simulators/sites/harbour-view.toml");
    backfill_site(
        db,
        &shipped,
        "2026-06-01T00:00:00+08:00",
        "2026-06-08T00:00:00+08:00",
    );
    let mut client = db.client().await;
    estatemon_analytics::energy::refresh_rollups(&mut client)
        .await
        .unwrap();

    // With the shipped example on-call roster (the alerts dashboard's panel).
    let roster =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/oncall/roster.example.toml");
    (
        api_over(db, |c| c.oncall.roster = Some(roster)).await,
        client,
    )
}

/// The API over `db` (migrated), with the tests' audit flush and `tune`
/// applied to the configuration.
async fn api_over(db: &TestDb, tune: impl FnOnce(&mut estatemon_domain::config::Config)) -> Api {
    let mut config = estatemon_domain::config::Config::default();
    config.database.url = db.url.clone();
    config.api.audit_flush_ms = 20;
    tune(&mut config);
    let (state, _writer) = estatemon_api::state(config).await.unwrap();
    Api {
        router: estatemon_api::router(state.clone()),
        state,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An empty, migrated database and the API over it, with `tune` applied
/// to the configuration.
async fn empty_api(
    db: &TestDb,
    tune: impl FnOnce(&mut estatemon_domain::config::Config),
) -> (Api, tokio_postgres::Client) {
    let defaults = estatemon_domain::config::Config::default();
    let mut database = defaults.database.clone();
    database.url = db.url.clone();
    estatemon_domain::schema::ensure_database(&database)
        .await
        .unwrap();
    let mut client = db.client().await;
    estatemon_domain::schema::migrate(&mut client, &defaults.storage)
        .await
        .unwrap();
    (api_over(db, tune).await, client)
}
