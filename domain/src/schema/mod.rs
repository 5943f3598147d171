//! The database schema: versioned migrations, the storage mode, partitions
//! and rollups.
//!
//! estatemon runs on TimescaleDB when the extension can be created
//! (hypertables, compression, retention and continuous aggregates) and on
//! plain PostgreSQL otherwise (native range partitions and rollup tables kept
//! by the program). The mode is decided once, when the schema is first
//! created, and recorded in `estatemon_meta`: tables partitioned one way
//! cannot silently become the other.
//!
//! Both modes expose the same relations (`readings`, `events`,
//! `readings_hourly`, `readings_daily`, …) with the same columns, so every
//! query in estatemon works on either.

pub mod alerts;
pub mod coverage;
pub mod inspections;
pub mod partitions;
pub mod reader;
pub mod registry;
pub mod rollups;
pub mod rule_sets;

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::config::{redact_url, DatabaseConfig, StorageConfig, StorageModeSetting};

/// Which engine holds the time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageMode {
    Plain,
    Timescaledb,
}

impl StorageMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageMode::Plain => "plain",
            StorageMode::Timescaledb => "timescaledb",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Connecting failed: the server is down or unreachable, refused the
    /// role or its password, or asked for a password the URL lacks. The
    /// message carries the driver's whole reason and what to do about it.
    #[error("cannot connect to PostgreSQL at {target}: {}. {}", pg_message(.error), connect_hint(.error))]
    Unreachable {
        target: String,
        error: tokio_postgres::Error,
    },
    #[error("invalid database.url `{url}`: {}", pg_message(.error))]
    BadUrl {
        url: String,
        error: tokio_postgres::Error,
    },
    #[error("storage.mode is timescaledb but the extension cannot be used: {0}")]
    TimescaleUnavailable(String),
    #[error(
        "the schema was created in {existing} mode; storage.mode = {wanted} cannot change it \
         (migrate the data to a new database instead)"
    )]
    ModeMismatch { existing: String, wanted: String },
    #[error("migration {version} ({name}) failed: {}", pg_message(.error))]
    Migration {
        version: i32,
        name: &'static str,
        error: tokio_postgres::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// A driver error with its reasons: tokio-postgres prints only its kind
/// ("db error", "invalid configuration"); the server's message or the
/// missing setting is in its sources.
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}

/// What to do when connecting failed with `e`: by the server's SQLSTATE
/// when it answered, else by what the driver could not do.
fn connect_hint(e: &tokio_postgres::Error) -> &'static str {
    use tokio_postgres::error::SqlState;
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        return if code.code().starts_with("28") || *code == SqlState::INVALID_CATALOG_NAME {
            // Authorization (class 28) or a database that does not exist.
            "Check the user, password and database in ESTATEMON_DATABASE_URL (or database.url in the config file)"
        } else if *code == SqlState::CANNOT_CONNECT_NOW {
            "The server is starting, stopping or recovering (a standby being promoted takes seconds): try again once it is up"
        } else if *code == SqlState::TOO_MANY_CONNECTIONS {
            "The server has no connection slot left: raise its max_connections, or lower api.pool_size and the number of estatemon processes"
        } else {
            "The server refused the connection for the reason above"
        };
    }
    if matches!(
        std::error::Error::source(e)
            .map(|c| c.to_string())
            .as_deref(),
        Some("password missing")
    ) {
        "The server asks for a password: put it in ESTATEMON_DATABASE_URL (or database.url in the config file), postgres://user:password@host/database"
    } else {
        "Start PostgreSQL, or point ESTATEMON_DATABASE_URL (or database.url in the config file) at a running server"
    }
}

/// Connects, spawning the connection task. Errors say where we tried to go.
pub async fn connect(config: &DatabaseConfig) -> Result<Client, SchemaError> {
    connect_url(&config.url, Duration::from_secs(config.connect_timeout_s)).await
}

pub async fn connect_url(url: &str, timeout: Duration) -> Result<Client, SchemaError> {
    let mut pg: tokio_postgres::Config = url.parse().map_err(|error| SchemaError::BadUrl {
        url: redact_url(url),
        error,
    })?;
    pg.connect_timeout(timeout);
    pg.application_name("estatemon");
    // "relation already exists, skipping" and friends are not news.
    pg.options("-c client_min_messages=warning");
    // Notice a dead peer (failover, cable) in seconds rather than the
    // kernel's two hours, so writers reconnect instead of hanging.
    pg.keepalives_idle(Duration::from_secs(15));
    pg.keepalives_interval(Duration::from_secs(5));
    pg.tcp_user_timeout(Duration::from_secs(30));
    let (client, connection) =
        pg.connect(NoTls)
            .await
            .map_err(|error| SchemaError::Unreachable {
                target: describe(&pg),
                error,
            })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

fn describe(pg: &tokio_postgres::Config) -> String {
    let host = pg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port} (database `{}`, user `{}`)",
        pg.get_dbname().unwrap_or("?"),
        pg.get_user().unwrap_or("?")
    )
}

/// Creates the configured database if it does not exist yet.
pub async fn ensure_database(config: &DatabaseConfig) -> Result<(), SchemaError> {
    let pg: tokio_postgres::Config = config.url.parse().map_err(|error| SchemaError::BadUrl {
        url: redact_url(&config.url),
        error,
    })?;
    let Some(dbname) = pg.get_dbname().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = pg.clone();
    admin.dbname("postgres");
    admin.connect_timeout(Duration::from_secs(config.connect_timeout_s));
    let (client, connection) =
        admin
            .connect(NoTls)
            .await
            .map_err(|error| SchemaError::Unreachable {
                target: describe(&pg),
                error,
            })?;
    tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dbname])
        .await?
        .is_some();
    if !exists {
        let quoted = format!("\"{}\"", dbname.replace('"', "\"\""));
        match client
            .batch_execute(&format!("CREATE DATABASE {quoted}"))
            .await
        {
            Ok(()) => tracing::info!(database = %dbname, "created database"),
            // Another process created it between our check and our CREATE.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What every service does at start: create the database if allowed,
/// connect, apply pending migrations, and log the storage mode.
pub async fn prepare(
    database: &DatabaseConfig,
    storage: &StorageConfig,
) -> Result<(Client, MigrationReport), SchemaError> {
    if database.create_database {
        ensure_database(database).await?;
    }
    let mut client = connect(database).await?;
    let report = migrate(&mut client, storage).await?;
    tracing::info!(mode = report.mode.as_str(), detail = %report.reason, "storage mode");
    Ok((client, report))
}

struct Migration {
    version: i32,
    name: &'static str,
    common: Option<&'static str>,
    plain: Option<&'static str>,
    timescale: Option<&'static str>,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "registry",
        common: Some(include_str!("migrations/0001_registry.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 2,
        name: "timeseries",
        common: None,
        plain: Some(include_str!("migrations/0002_timeseries.plain.sql")),
        timescale: Some(include_str!("migrations/0002_timeseries.timescale.sql")),
    },
    Migration {
        version: 3,
        name: "alerts",
        common: Some(include_str!("migrations/0003_alerts.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 4,
        name: "savings_reports",
        common: Some(include_str!("migrations/0004_savings_reports.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 5,
        name: "api",
        common: Some(include_str!("migrations/0005_api.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 6,
        name: "registers_daily",
        common: Some(include_str!("migrations/0006_registers_daily.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 7,
        name: "rule_sets",
        common: Some(include_str!("migrations/0007_rule_sets.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 8,
        name: "outbox_order",
        common: Some(include_str!("migrations/0008_outbox_order.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 9,
        name: "rollup_lookup",
        common: None,
        // The plain rollups' primary key is this index already.
        plain: None,
        timescale: Some(include_str!("migrations/0009_rollup_lookup.timescale.sql")),
    },
    Migration {
        version: 10,
        name: "consumption_hourly",
        common: Some(include_str!("migrations/0010_consumption_hourly.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 11,
        name: "daily_use",
        common: Some(include_str!("migrations/0011_daily_use.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 12,
        name: "readings_time_brin",
        common: None,
        plain: Some(include_str!("migrations/0012_readings_time_brin.plain.sql")),
        // The hypertable's default index on ts does this job.
        timescale: None,
    },
    Migration {
        version: 13,
        name: "rule_set_waivers",
        common: Some(include_str!("migrations/0013_rule_set_waivers.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 14,
        name: "dead_letter_fingerprints",
        common: Some(include_str!("migrations/0014_dead_letter_fingerprints.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 15,
        name: "device_last_message",
        common: Some(include_str!("migrations/0015_device_last_message.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 16,
        name: "report_versions",
        common: Some(include_str!("migrations/0016_report_versions.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 17,
        name: "site_weather",
        common: Some(include_str!("migrations/0017_site_weather.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 18,
        name: "device_availability",
        common: Some(include_str!("migrations/0018_device_availability.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 19,
        name: "savings_results",
        common: Some(include_str!("migrations/0019_savings_results.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 20,
        name: "device_source_id",
        common: Some(include_str!("migrations/0020_device_source_id.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 21,
        name: "inspections",
        common: Some(include_str!("migrations/0021_inspections.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 22,
        name: "report_signatures",
        common: Some(include_str!("migrations/0022_report_signatures.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 23,
        name: "rule_coverage",
        common: Some(include_str!("migrations/0023_rule_coverage.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 24,
        name: "site_supplier",
        common: Some(include_str!("migrations/0024_site_supplier.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 25,
        name: "consumption_hourly_estimated",
        common: Some(include_str!(
            "migrations/0025_consumption_hourly_estimated.sql"
        )),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 26,
        name: "oncall_pages",
        common: Some(include_str!("migrations/0026_oncall_pages.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 27,
        name: "dead_letter_resolution",
        common: Some(include_str!("migrations/0027_dead_letter_resolution.sql")),
        plain: None,
        timescale: None,
    },
    Migration {
        version: 28,
        name: "rollup_compression",
        common: None,
        // Plain PostgreSQL has no compression.
        plain: None,
        timescale: Some(include_str!(
            "migrations/0028_rollup_compression.timescale.sql"
        )),
    },
];

/// What [`migrate`] found and did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrationReport {
    pub mode: StorageMode,
    /// Why this mode (e.g. "timescaledb 2.17.2" or "extension not installed").
    pub reason: String,
    pub applied: Vec<String>,
    pub schema_version: i32,
}

/// Arbitrary constant: serialises migrations of concurrent starters.
const MIGRATION_LOCK: i64 = 0x6573_7461_7465_6d6f;

/// Applies pending migrations and the storage policies. Safe to run from
/// several processes at once.
pub async fn migrate(
    client: &mut Client,
    storage: &StorageConfig,
) -> Result<MigrationReport, SchemaError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = migrate_locked(client, storage).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn migrate_locked(
    client: &mut Client,
    storage: &StorageConfig,
) -> Result<MigrationReport, SchemaError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let applied: Vec<i32> = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();

    let (mode, reason, chunk_days) = if applied.is_empty() {
        let (mode, reason) = choose_mode(client, storage.mode).await?;
        (mode, reason, storage.chunk_days)
    } else {
        let existing = recorded_mode(client).await?;
        let wanted = match storage.mode {
            StorageModeSetting::Auto => existing,
            StorageModeSetting::Plain => StorageMode::Plain,
            StorageModeSetting::Timescaledb => StorageMode::Timescaledb,
        };
        if wanted != existing {
            return Err(SchemaError::ModeMismatch {
                existing: existing.as_str().into(),
                wanted: wanted.as_str().into(),
            });
        }
        let reason = match existing {
            StorageMode::Timescaledb => timescale_version(client)
                .await?
                .map(|v| format!("timescaledb {v}"))
                .unwrap_or_else(|| "timescaledb (version unknown)".into()),
            StorageMode::Plain => "schema created on plain PostgreSQL".into(),
        };
        (existing, reason, recorded_chunk_days(client).await?)
    };

    let mut done = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let sql = match mode {
            StorageMode::Plain => m.plain,
            StorageMode::Timescaledb => m.timescale,
        };
        let tx = client.transaction().await?;
        let fail = |error| SchemaError::Migration {
            version: m.version,
            name: m.name,
            error,
        };
        for part in [m.common, sql].into_iter().flatten() {
            let part = part.replace("{chunk_days}", &chunk_days.to_string());
            tx.batch_execute(&part).await.map_err(fail)?;
        }
        if m.version == 1 {
            tx.execute(
                "INSERT INTO estatemon_meta (key, value) VALUES ('storage_mode', $1), ('chunk_days', $2)",
                &[&mode.as_str(), &chunk_days.to_string()],
            )
            .await
            .map_err(fail)?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            mode = mode.as_str(),
            "applied migration"
        );
        done.push(format!("{:04}_{}", m.version, m.name));
    }
    apply_policies(client, mode, storage).await?;
    Ok(MigrationReport {
        mode,
        reason,
        applied: done,
        schema_version: MIGRATIONS.last().map(|m| m.version).unwrap_or(0),
    })
}

async fn choose_mode(
    client: &Client,
    setting: StorageModeSetting,
) -> Result<(StorageMode, String), SchemaError> {
    if setting == StorageModeSetting::Plain {
        return Ok((StorageMode::Plain, "storage.mode = plain".into()));
    }
    // A DBA may have created the extension already (the normal case on
    // managed PostgreSQL, where estatemon's role is no superuser): then it
    // is loaded, and nothing else needs checking.
    if let Some(version) = timescale_version(client).await? {
        return Ok((StorageMode::Timescaledb, format!("timescaledb {version}")));
    }
    let available = client
        .query_opt(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'",
            &[],
        )
        .await?
        .is_some();
    // Without shared_preload_libraries, CREATE EXTENSION timescaledb is a
    // FATAL error that closes the connection: check first. pg_settings
    // hides the row from roles without pg_read_all_settings (where
    // current_setting() would fail the whole migration): unknown, then.
    let preloaded: Option<String> = client
        .query_opt(
            "SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'",
            &[],
        )
        .await?
        .map(|r| r.get(0));
    let outcome = if !available {
        Err("the timescaledb extension is not installed on this server".to_owned())
    } else {
        match preloaded {
            None => Err(
                "timescaledb is installed but not created in this database, and this role \
                 cannot read shared_preload_libraries to tell whether it may create it \
                 (ask a DBA to run CREATE EXTENSION timescaledb, or grant pg_read_all_settings)"
                    .to_owned(),
            ),
            Some(p) if !p.contains("timescaledb") => {
                Err("timescaledb is installed but not in shared_preload_libraries".to_owned())
            }
            Some(_) => match client
                .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                .await
            {
                Ok(()) => Ok(timescale_version(client).await?.unwrap_or_default()),
                Err(e) => Err(e
                    .as_db_error()
                    .map(|d| d.message().to_owned())
                    .unwrap_or_else(|| e.to_string())),
            },
        }
    };
    match (outcome, setting) {
        (Ok(version), _) => Ok((StorageMode::Timescaledb, format!("timescaledb {version}"))),
        (Err(why), StorageModeSetting::Timescaledb) => Err(SchemaError::TimescaleUnavailable(why)),
        (Err(why), _) => Ok((StorageMode::Plain, format!("plain PostgreSQL: {why}"))),
    }
}

async fn timescale_version(client: &Client) -> Result<Option<String>, SchemaError> {
    Ok(client
        .query_opt(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
            &[],
        )
        .await?
        .map(|r| r.get(0)))
}

/// The storage mode recorded when the schema was created.
pub async fn recorded_mode(client: &Client) -> Result<StorageMode, SchemaError> {
    let row = client
        .query_opt(
            "SELECT value FROM estatemon_meta WHERE key = 'storage_mode'",
            &[],
        )
        .await?;
    Ok(match row.map(|r| r.get::<_, String>(0)).as_deref() {
        Some("timescaledb") => StorageMode::Timescaledb,
        _ => StorageMode::Plain,
    })
}

/// Partition / chunk width recorded when the schema was created.
pub async fn recorded_chunk_days(client: &Client) -> Result<u32, SchemaError> {
    let row = client
        .query_opt(
            "SELECT value FROM estatemon_meta WHERE key = 'chunk_days'",
            &[],
        )
        .await?;
    Ok(row
        .and_then(|r| r.get::<_, String>(0).parse().ok())
        .unwrap_or(7))
}

/// Sets `table`'s compression policy to `after`, unless it is that already.
async fn compression_policy(client: &Client, table: &str, after: &str) -> Result<(), SchemaError> {
    if policy_is(
        client,
        table,
        "policy_compression",
        "compress_after",
        Some(after),
    )
    .await?
    {
        return Ok(());
    }
    client
        .execute(
            "SELECT remove_compression_policy($1::text::regclass, if_exists => true)",
            &[&table],
        )
        .await?;
    client
        .execute(
            "SELECT add_compression_policy($1::text::regclass, $2::text::interval)",
            &[&table, &after],
        )
        .await?;
    tracing::info!(table, compress_after = %after, "compression policy set");
    Ok(())
}

/// Compression and retention (TimescaleDB policies; in plain mode retention
/// is enforced by [`partitions::drop_expired`]). Checked at every start so
/// a changed configuration takes effect, but a policy is only replaced when
/// its setting differs: replacing it would lose a DBA's `alter_job` tuning
/// and cancel a compression run in progress.
async fn apply_policies(
    client: &Client,
    mode: StorageMode,
    storage: &StorageConfig,
) -> Result<(), SchemaError> {
    if mode != StorageMode::Timescaledb {
        return Ok(());
    }
    // The rollups as the readings: they are written as the readings come,
    // and an hour is refreshed again when late readings make it dirty
    // (TimescaleDB takes writes into compressed chunks).
    for table in ["readings_hourly", "readings_daily", "consumption_hourly"] {
        // A continuous aggregate's must start after its refresh policy's
        // window (the daily one's: 7 days).
        let days = if table == "readings_daily" {
            storage.compress_after_days.max(8)
        } else {
            storage.compress_after_days.max(4)
        };
        let after = format!("{days} days");
        compression_policy(client, table, &after).await?;
    }
    for table in ["readings", "events"] {
        let after = format!("{} days", storage.compress_after_days);
        compression_policy(client, table, &after).await?;
        let keep = (storage.retention_days > 0).then(|| format!("{} days", storage.retention_days));
        if !policy_is(
            client,
            table,
            "policy_retention",
            "drop_after",
            keep.as_deref(),
        )
        .await?
        {
            client
                .execute(
                    "SELECT remove_retention_policy($1::text::regclass, if_exists => true)",
                    &[&table],
                )
                .await?;
            if let Some(keep) = &keep {
                client
                    .execute(
                        "SELECT add_retention_policy($1::text::regclass, $2::text::interval)",
                        &[&table, keep],
                    )
                    .await?;
            }
            tracing::info!(table, drop_after = ?keep, "retention policy set");
        }
    }
    Ok(())
}

/// Whether `table` has exactly the policy wanted: one `proc` job whose
/// `key` equals `want` as an interval, or none when `want` is `None`.
async fn policy_is(
    client: &Client,
    table: &str,
    proc: &str,
    key: &str,
    want: Option<&str>,
) -> Result<bool, SchemaError> {
    let rows = client
        .query(
            "SELECT config->>$3 FROM timescaledb_information.jobs
              WHERE proc_name = $2
                AND ((hypertable_schema = current_schema() AND hypertable_name = $1)
                     -- a continuous aggregate's jobs name its materialization
                     OR (hypertable_schema, hypertable_name) IN (
                         SELECT materialization_hypertable_schema, materialization_hypertable_name
                           FROM timescaledb_information.continuous_aggregates
                          WHERE view_schema = current_schema() AND view_name = $1))",
            &[&table, &proc, &key],
        )
        .await?;
    let Some(want) = want else {
        return Ok(rows.is_empty());
    };
    let [row] = rows.as_slice() else {
        return Ok(false);
    };
    let Some(have) = row.get::<_, Option<String>>(0) else {
        return Ok(false);
    };
    let same: bool = client
        .query_one(
            "SELECT $1::text::interval = $2::text::interval",
            &[&have, &want],
        )
        .await?
        .get(0);
    Ok(same)
}
