//! Storage modes. Run against the configured test server: with TimescaleDB
//! usable there (set ESTATEMON_TEST_DATABASE_URL to such a server), the
//! hypertables, policies and continuous aggregates are checked; on plain
//! PostgreSQL the test says so and checks the partitioned path instead.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use estatemon_domain::config::{StorageConfig, StorageModeSetting};
use estatemon_domain::schema::{self, partitions, SchemaError, StorageMode};

async fn timescale_usable(db: &TestDb) -> Result<(), String> {
    let c = estatemon_domain::schema::connect_url(&admin_url(), Duration::from_secs(5))
        .await
        .unwrap();
    let available = c
        .query_opt(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'",
            &[],
        )
        .await
        .unwrap()
        .is_some();
    let preload: String = c
        .query_one("SELECT current_setting('shared_preload_libraries')", &[])
        .await
        .unwrap()
        .get(0);
    let _ = db;
    match (available, preload.contains("timescaledb")) {
        (true, true) => Ok(()),
        (false, _) => Err("the timescaledb extension is not installed".into()),
        (true, false) => Err("timescaledb is installed but not preloaded".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_uses_timescaledb_where_it_can_and_partitions_where_it_cannot() {
    let db = TestDb::new(&admin_url());
    let mut config = config(&db, &broker_url());
    config.storage.retention_days = 400;
    schema::ensure_database(&config.database).await.unwrap();
    let mut client = db.client().await;
    let report = schema::migrate(&mut client, &config.storage).await.unwrap();
    match timescale_usable(&db).await {
        Ok(()) => {
            println!("TimescaleDB is usable here: checking hypertables, policies and aggregates");
            assert_eq!(report.mode, StorageMode::Timescaledb);
            let count = |sql: &'static str| {
                let client = &client;
                async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
            };
            assert_eq!(
                count("SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name IN ('readings', 'events')").await,
                2
            );
            assert_eq!(
                count("SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'readings' AND compression_enabled").await,
                1
            );
            assert_eq!(
                count("SELECT count(*) FROM timescaledb_information.continuous_aggregates WHERE view_name IN ('readings_hourly', 'readings_daily')").await,
                2
            );
            assert_eq!(
                count("SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention' AND hypertable_name = 'readings' AND config->>'drop_after' = '400 days'").await,
                1
            );
            assert_eq!(
                count("SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression' AND hypertable_name IN ('readings', 'events')").await,
                2
            );
            // The rollups are compressed too: both aggregates and the
            // hourly consumption (a hypertable since migration 28).
            assert_eq!(
                count("SELECT count(*) FROM timescaledb_information.jobs j
                        WHERE proc_name = 'policy_compression'
                          AND (hypertable_name IN ('consumption_hourly', 'readings_hourly', 'readings_daily')
                               -- versions that name an aggregate's materialization instead
                               OR hypertable_name IN (SELECT materialization_hypertable_name
                                                        FROM timescaledb_information.continuous_aggregates))").await,
                3
            );
            // Panels read the aggregates by device, metric and time.
            assert_eq!(
                count("SELECT count(*) FROM pg_indexes WHERE indexname IN ('readings_hourly_device_metric_bucket_idx', 'readings_daily_device_metric_bucket_idx')").await,
                2
            );
            compressed_rollups_take_late_readings(&mut client).await;
        }
        Err(why) => {
            println!("TimescaleDB is not usable on this server ({why}): checking the plain PostgreSQL path only");
            assert_eq!(report.mode, StorageMode::Plain);
            assert!(report.reason.contains("plain"), "{}", report.reason);
            let kind: i8 = client
                .query_one(
                    "SELECT relkind::\"char\" FROM pg_class WHERE relname = 'readings'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(kind as u8, b'p', "readings is a partitioned table");
            // Retention drops whole partitions past the limit, nothing newer.
            let old = partitions::chunk_index(Utc::now() - chrono::Duration::days(500), 7);
            let recent = partitions::chunk_index(Utc::now(), 7);
            partitions::ensure_chunk(&client, old, 7).await.unwrap();
            partitions::ensure_chunk(&client, recent, 7).await.unwrap();
            let dropped = partitions::drop_expired(&client, Utc::now(), 400, 7)
                .await
                .unwrap();
            assert_eq!(
                dropped,
                vec![
                    partitions::partition_name("readings", old, 7),
                    partitions::partition_name("events", old, 7)
                ]
            );
            assert_eq!(
                partitions::list(&client, "readings").await.unwrap().len(),
                1
            );
        }
    }
}

/// Writes meter `m-late`'s energy register and marks its hours dirty.
async fn write(client: &tokio_postgres::Client, rows: Vec<(chrono::DateTime<Utc>, f64)>) {
    for (ts, v) in rows {
        client
            .execute(
                "INSERT INTO readings (device_id, metric, ts, value) VALUES ('m-late', 'energy_kwh', $1, $2)",
                &[&ts, &v],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO rollup_dirty (bucket) VALUES (date_trunc('hour', $1::timestamptz))
                 ON CONFLICT DO NOTHING",
                &[&ts],
            )
            .await
            .unwrap();
    }
}

/// Meter `m-late`'s rollup samples and hourly use (and whether estimated)
/// in `hour`.
async fn hour1(
    client: &tokio_postgres::Client,
    hour: chrono::DateTime<Utc>,
) -> (Option<i64>, Option<(f64, bool)>) {
    let samples: Option<i64> = client
        .query_opt(
            "SELECT samples FROM readings_hourly WHERE device_id = 'm-late' AND bucket = $1",
            &[&hour],
        )
        .await
        .unwrap()
        .map(|r| r.get(0));
    let used: Option<(f64, bool)> = client
        .query_opt(
            "SELECT used, estimated FROM consumption_hourly WHERE device_id = 'm-late' AND bucket = $1",
            &[&hour],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1)));
    (samples, used)
}

/// TimescaleDB: a meter's hours 200 days ago are rolled up, the compression
/// policies compress the readings and the rollups, and readings that
/// arrive late for an hour in those compressed chunks still reach its
/// rollup and its consumption.
async fn compressed_rollups_take_late_readings(client: &mut tokio_postgres::Client) {
    use chrono::{DurationRound, TimeDelta};
    // Old enough that the rollups' 70-day chunks have ended.
    let h0 = (Utc::now() - chrono::Duration::days(200))
        .duration_trunc(TimeDelta::hours(1))
        .unwrap();
    let at = |hour: i64, quarter: i64| h0 + chrono::Duration::minutes(60 * hour + 15 * quarter);
    // Hours 0, 2 and 3 read every 15 minutes; hour 1 is missing.
    let mut rows = Vec::new();
    for (hour, start) in [(0, 0.0), (2, 8.0), (3, 12.0)] {
        for q in 0..4 {
            rows.push((at(hour, q), start + q as f64));
        }
    }
    write(client, rows).await;
    schema::rollups::refresh_dirty(client, StorageMode::Timescaledb, 10_000)
        .await
        .unwrap();
    let (samples, before) = hour1(client, at(1, 0)).await;
    assert_eq!(samples, None, "no reading in hour 1 yet");
    let before = before.expect("hour 1's use, spread across the gap").0;

    // The compression policies, run now.
    let jobs: Vec<i32> = client
        .query(
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for job in jobs {
        client.execute("CALL run_job($1)", &[&job]).await.unwrap();
    }
    let compressed = |name: &'static str| {
        let client = &*client;
        async move {
            client
                .query_one(
                    "SELECT count(*) FROM timescaledb_information.chunks c
                      WHERE c.is_compressed AND (c.hypertable_name = $1 OR c.hypertable_name IN (
                            SELECT materialization_hypertable_name FROM timescaledb_information.continuous_aggregates
                             WHERE view_name = $1))",
                    &[&name],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    for name in ["readings", "readings_hourly", "consumption_hourly"] {
        assert!(compressed(name).await >= 1, "{name} has a compressed chunk");
    }

    // Hour 1 arrives late, into compressed chunks.
    write(
        client,
        (0..4)
            .map(|q| (at(1, q), [3.5, 7.0, 7.5, 7.9][q as usize]))
            .collect(),
    )
    .await;
    schema::rollups::refresh_dirty(client, StorageMode::Timescaledb, 10_000)
        .await
        .unwrap();
    let (samples, after) = hour1(client, at(1, 0)).await;
    assert_eq!(samples, Some(4), "hour 1's rollup has its late readings");
    let (used, estimated) = after.expect("hour 1's use");
    // 4 of the 5 used from 03:45 to 02:00 fell in hour 1 by the spread; its
    // own readings say 4.5 (3.5 at its start, 8 at the next hour's).
    assert!(
        (before - 4.0).abs() < 1e-9 && (used - 4.5).abs() < 1e-9 && !estimated,
        "hour 1: {before} kWh spread, then {used} kWh measured (estimated: {estimated})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mode_is_decided_once() {
    let db = TestDb::new(&admin_url());
    let config = config(&db, &broker_url());
    schema::ensure_database(&config.database).await.unwrap();
    let mut client = db.client().await;
    let plain = StorageConfig {
        mode: StorageModeSetting::Plain,
        ..Default::default()
    };
    let first = schema::migrate(&mut client, &plain).await.unwrap();
    assert_eq!(first.mode, StorageMode::Plain);
    // Every migration, the last one's version being their count.
    assert_eq!(first.applied.len(), first.schema_version as usize);
    assert!(first.schema_version >= 7);
    // Migrating again is a no-op, and auto keeps what was chosen.
    let again = schema::migrate(&mut client, &StorageConfig::default())
        .await
        .unwrap();
    assert_eq!(again.mode, StorageMode::Plain);
    assert!(again.applied.is_empty());
    let forced = StorageConfig {
        mode: StorageModeSetting::Timescaledb,
        ..Default::default()
    };
    match schema::migrate(&mut client, &forced).await {
        Err(SchemaError::ModeMismatch { existing, .. }) => assert_eq!(existing, "plain"),
        other => panic!("expected a mode mismatch, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starters_migrate_once() {
    let db = TestDb::new(&admin_url());
    let config = config(&db, &broker_url());
    schema::ensure_database(&config.database).await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..4 {
        let url = db.url.clone();
        handles.push(tokio::spawn(async move {
            let mut c = schema::connect_url(&url, Duration::from_secs(5))
                .await
                .unwrap();
            let report = schema::migrate(&mut c, &StorageConfig::default())
                .await
                .unwrap();
            (report.applied.len(), report.schema_version)
        }));
    }
    let mut applied = 0;
    let mut version = 0;
    for h in handles {
        let (n, v) = h.await.unwrap();
        applied += n;
        version = v;
    }
    assert!(version >= 7);
    assert_eq!(
        applied, version as usize,
        "each migration applied by exactly one starter"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM schema_migrations").await,
        version as i64
    );
}

/// Issue 16: estatemon runs as an ordinary database role (no superuser, no
/// pg_read_all_settings, no CREATEDB), the normal case on managed
/// PostgreSQL: the role owns its database and nothing else (README,
/// "Database role"). Migrate, ingest (with the ingest-path alerts), the API
/// and an analytics cycle all work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordinary_role_that_owns_its_database_runs_everything() {
    let admin = estatemon_domain::schema::connect_url(&admin_url(), Duration::from_secs(5))
        .await
        .unwrap();
    let role = unique("em_role");
    let db = TestDb::new(&admin_url());
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
        ))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE \"{}\" OWNER {role}", db.name))
        .await
        .unwrap();
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_username(&role).unwrap();
    let mut c = config(&db, &broker_url());
    c.database.url = url.to_string();
    // Auto mode, then also the explicit plain mode: neither may need the
    // settings a superuser reads.
    let mut client = estatemon_domain::schema::connect_url(&c.database.url, Duration::from_secs(5))
        .await
        .unwrap();
    let is_super: bool = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!is_super);
    let report = schema::migrate(&mut client, &c.storage).await.unwrap();
    println!(
        "ordinary role: {} ({})",
        report.mode.as_str(),
        report.reason
    );
    // Ingest, with an immediate alert on the way.
    let ingestor = estatemon_ingest::Ingestor::start(c.clone()).await.unwrap();
    assert!(ingestor.subscribed(Duration::from_secs(10)).await);
    let ms = Utc::now().timestamp_millis();
    publish_all(
        &c.mqtt.url,
        vec![
            (topic(&c, "telemetry", "hv", "m-1"), energy(ms, 10.0)),
            (
                topic(&c, "events", "hv", "lift-x"),
                format!(r#"{{"ts":{ms},"type":"fault","code":"entrapment"}}"#).into_bytes(),
            ),
        ],
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            db.count("SELECT count(*) FROM readings").await == 1
                && db.count("SELECT count(*) FROM alerts").await == 1
        })
        .await,
        "stored and paged as an ordinary role"
    );
    ingestor.shutdown().await;
    // The API.
    let (state, _writer) = estatemon_api::state(c.clone()).await.unwrap();
    let token =
        estatemon_api::create_token(&client, "viewer", estatemon_api::auth::Role::Viewer, "test")
            .await
            .unwrap();
    let router = estatemon_api::router(state);
    use tower::ServiceExt;
    let resp = router
        .oneshot(
            axum::http::Request::builder()
                .uri("/api/v1/alerts")
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), axum::http::StatusCode::OK);
    // An analytics cycle (rollups, rules, deliveries queue).
    let rules = estatemon_domain::rules::RuleSet::defaults();
    estatemon_analytics::job::cycle(&mut client, &rules, &[], Utc::now(), None, None)
        .await
        .unwrap();
    drop(client);
    drop(db);
    admin
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await
        .unwrap();
}
