//! `estatemon bench portfolio`: a property company's portfolio (by default
//! 200 sites, 20,000 meters, two years of 15-minute registers) in a
//! private PostgreSQL primary with a streaming standby, once on plain
//! PostgreSQL and once on TimescaleDB with compression (when the extension
//! is installed). For each: bytes per reading stored, a year-long panel's
//! latency, the API's mixed panels under `wrk` read from the primary and
//! from the standby (`database.read_url`), every site's quarterly report
//! (time and peak memory) and one alert cycle over the whole portfolio.
//! The capacity figures in BENCHMARKS.md and deploy/CLUSTER.md come from
//! its output.
//!
//! The servers are the machine's own PostgreSQL binaries, started for the
//! run on their own ports and directories and removed afterwards; writes
//! use the product's paths (binary COPY into `readings`, the rollup
//! refresh, TimescaleDB's compression policy run as a job).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Duration as Span, NaiveDate, Utc};
use estatemon_domain::config::{Config, StorageModeSetting};
use estatemon_domain::device::{DeviceKind, Registry};
use estatemon_domain::rules::RuleSet;
use estatemon_domain::schema::{self, partitions, StorageMode};
use estatemon_simulators::pg_cluster::{self, PostgresNode};
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use super::api::get;
use super::report::{estate, load, local_midnight};
use super::{free_port, machine_description};

#[derive(clap::Args, Clone)]
pub struct PortfolioBenchArgs {
    /// Sites of the portfolio.
    #[arg(long, default_value_t = 200)]
    sites: usize,
    /// Meters per site (a building per hundred).
    #[arg(long, default_value_t = 100)]
    devices_per_site: usize,
    /// Days of 15-minute history, ending 2026-10-01 00:00 (Hong Kong). The
    /// retrofits date from a year before the end; the report is 2026Q3.
    #[arg(long, default_value_t = 730)]
    days: i64,
    /// plain, timescaledb or both (default: both when the TimescaleDB
    /// extension is installed, plain otherwise).
    #[arg(long)]
    storage: Option<String>,
    /// Sequential requests per panel latency measurement.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// wrk duration in seconds, per read target.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Sites whose quarterly report is made and timed (default: all).
    #[arg(long)]
    reports: Option<usize>,
    /// Parallel COPY writers while loading.
    #[arg(long, default_value_t = 2)]
    writers: usize,
    /// Directory for the private servers' data (default: the temp
    /// directory); it needs room for both copies (primary and standby).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

const DB: &str = "estatemon_portfolio";
const QUARTER: &str = "2026Q3";

/// What one storage mode measured.
#[derive(Default, Clone)]
struct Figures {
    mode: String,
    readings: u64,
    load_s: f64,
    rollup_s: f64,
    compress_s: f64,
    standby_catch_up_s: f64,
    readings_bytes: i64,
    database_bytes: i64,
    panel_site_p50: f64,
    panel_site_p95: f64,
    panel_device_p95: f64,
    mix_primary_rps: f64,
    mix_primary_p99: String,
    mix_standby_rps: f64,
    mix_standby_p99: String,
    reports: usize,
    report_total_s: f64,
    report_median_s: f64,
    report_peak_mb: f64,
    cycle_ms: f64,
    cycle_findings: usize,
    /// TimescaleDB: the same reads with the rollups decompressed
    /// afterwards: what their compression costs the readers, on the same
    /// data.
    uncompressed: Option<Uncompressed>,
}

/// A site's year panel and the API mix from the primary, read again with
/// the rollups decompressed.
#[derive(Debug, Clone)]
struct Uncompressed {
    panel_site_p50: f64,
    panel_site_p95: f64,
    mix_rps: f64,
    mix_p99: String,
}

/// The rollups compression applies to, as a SQL array of tables.
const ROLLUPS: &str =
    "ARRAY['readings_hourly', 'readings_daily', 'consumption_hourly']::regclass[]";

fn end() -> DateTime<Utc> {
    local_midnight(2026, 10, 1)
}

/// The portfolio: sites s001… with `per_site` meters each, device ids
/// prefixed with the site's.
fn portfolio(sites: usize, per_site: usize) -> Registry {
    let retrofit = NaiveDate::from_ymd_opt(2025, 10, 1).expect("date");
    let mut all = Registry {
        sites: Vec::new(),
        devices: Vec::new(),
        retrofits: Vec::new(),
        scenario: None,
    };
    for s in 1..=sites {
        let id = format!("s{s:03}");
        let mut one = estate(&id, per_site.div_ceil(100).max(1), per_site, retrofit);
        // Ids as long as real ones (`hv-a-lift-1`, a Zigbee
        // `0x00158d0001a2b3c4`): the id is stored in every row and key,
        // so its length is part of the bytes a reading.
        for (n, d) in one.devices.iter_mut().enumerate() {
            d.id = format!("{id}-{}-{n:03}", d.area);
        }
        all.sites.extend(one.sites);
        all.devices.extend(one.devices);
        all.retrofits.extend(one.retrofits);
    }
    all
}

/// Pauses (false) or resumes TimescaleDB's policy jobs (ids from 1000:
/// compression, retention, continuous aggregates).
async fn schedule_policies(client: &tokio_postgres::Client, on: bool) -> anyhow::Result<()> {
    client
        .execute(
            "SELECT alter_job(job_id, scheduled => $1::bool)
               FROM timescaledb_information.jobs WHERE job_id >= 1000",
            &[&on],
        )
        .await?;
    Ok(())
}

/// A progress bar on a terminal (none under CI).
fn progress(len: usize, what: &str, unit: &str) -> indicatif::ProgressBar {
    crate::progress::bar(
        len as u64,
        &format!("{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{eta}})"),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn gb(bytes: i64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

/// Free bytes on the file system holding `dir`.
fn available_bytes(dir: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

pub async fn run(config: Config, args: PortfolioBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=2000).contains(&args.sites),
        "--sites must be between 1 and 2000"
    );
    anyhow::ensure!(
        (10..=1000).contains(&args.devices_per_site),
        "--devices-per-site must be between 10 and 1000"
    );
    anyhow::ensure!(
        (400..=3650).contains(&args.days),
        "--days must be between 400 and 3650 (the report compares with the year before, and the panels read a year)"
    );
    anyhow::ensure!(
        (1..=16).contains(&args.writers),
        "--writers must be between 1 and 16"
    );
    anyhow::ensure!(args.reports != Some(0), "--reports must be at least 1");
    anyhow::ensure!(args.requests >= 1, "--requests must be at least 1");
    let bin = pg_cluster::server_bin()?;
    let timescale_installed = pg_cluster::has_timescaledb(&bin);
    let modes: Vec<StorageModeSetting> = match args.storage.as_deref() {
        None if timescale_installed => {
            vec![StorageModeSetting::Plain, StorageModeSetting::Timescaledb]
        }
        None | Some("plain") => vec![StorageModeSetting::Plain],
        Some("timescaledb") => vec![StorageModeSetting::Timescaledb],
        Some("both") => vec![StorageModeSetting::Plain, StorageModeSetting::Timescaledb],
        Some(other) => anyhow::bail!("--storage: `{other}` is not plain, timescaledb or both"),
    };
    if modes.contains(&StorageModeSetting::Timescaledb) && !timescale_installed {
        anyhow::bail!(
            "--storage {}: the TimescaleDB extension is not installed for {} (no timescaledb.control)",
            args.storage.as_deref().unwrap_or(""),
            bin.display()
        );
    }
    let registry = portfolio(args.sites, args.devices_per_site);
    let steps = args.days * 96;
    let readings = registry.devices.len() as u64 * steps as u64;
    println!(
        "estatemon bench portfolio — {}",
        Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("machine: {}", machine_description());
    println!(
        "portfolio: {} sites, {} meters, {} days of 15-minute registers to {} (Hong Kong): {} readings per storage mode",
        args.sites,
        registry.devices.len(),
        args.days,
        end().with_timezone(&super::report::tz()).format("%Y-%m-%d %H:%M"),
        readings
    );
    if !timescale_installed {
        println!(
            "TimescaleDB: not installed for {}; plain PostgreSQL only",
            bin.display()
        );
    }
    let root = args
        .dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("estatemon-portfolio-{}", std::process::id()));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    // About 170 bytes a reading on plain PostgreSQL (row, key, rollups),
    // twice (primary and standby), and WAL.
    let need = readings * 170 * 2 + (8 << 30);
    if let Some(free) = available_bytes(&root) {
        if free < need {
            let _ = std::fs::remove_dir_all(&root);
            anyhow::bail!(
                "{} has {} free; this run needs about {} (primary, standby and WAL at ~170 bytes a reading): lower --sites or --days, or choose --dir",
                root.display(),
                gb(free as i64),
                gb(need as i64)
            );
        }
    }
    let mut all = Vec::new();
    let mut outcome = Ok(());
    for mode in modes {
        let dir = root.join(format!("{mode:?}").to_lowercase());
        // Ctrl-C drops the run, which stops its servers; the data goes
        // with them either way.
        let figures = tokio::select! {
            f = measure(&config, &args, &registry, mode, &dir) => f,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        let _ = std::fs::remove_dir_all(&dir);
        match figures {
            Ok(f) => all.push(f),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    outcome?;
    summary(&args, &registry, &all);
    Ok(())
}

/// One storage mode, from empty servers to the last figure.
async fn measure(
    config: &Config,
    args: &PortfolioBenchArgs,
    registry: &Registry,
    mode: StorageModeSetting,
    dir: &Path,
) -> anyhow::Result<Figures> {
    let timescale = mode == StorageModeSetting::Timescaledb;
    println!(
        "\n# {}",
        if timescale {
            "TimescaleDB with compression"
        } else {
            "plain PostgreSQL"
        }
    );
    // A server sized for the machine, the same for both modes.
    let mut settings = vec![
        ("shared_buffers", "2GB"),
        ("effective_cache_size", "8GB"),
        ("maintenance_work_mem", "512MB"),
        ("max_wal_size", "8GB"),
        ("checkpoint_timeout", "15min"),
        ("max_connections", "200"),
    ];
    if timescale {
        settings.push(("shared_preload_libraries", "timescaledb"));
        settings.push(("timescaledb.telemetry_level", "off"));
    }
    let primary = PostgresNode::primary(&dir.join("primary"), free_port()?, &settings)?;
    let mut c = config.clone();
    c.database.url = primary.url(DB);
    c.database.read_url = None;
    c.storage.mode = mode;
    let (mut client, migration) = schema::prepare(&c.database, &c.storage).await?;
    println!(
        "storage: {} ({})",
        migration.mode.as_str(),
        migration.reason
    );
    anyhow::ensure!(
        (migration.mode == StorageMode::Timescaledb) == timescale,
        "asked for {mode:?}, the schema is {}",
        migration.mode.as_str()
    );
    let standby = primary.standby(&dir.join("standby"), free_port()?)?;
    schema::registry::upsert(&mut client, registry).await?;
    let mut f = Figures {
        mode: migration.mode.as_str().to_owned(),
        ..Figures::default()
    };

    // History, time-major as ingest writes it.
    let to = end();
    let from = to - Span::days(args.days);
    if migration.mode == StorageMode::Plain {
        let days = schema::recorded_chunk_days(&client).await?;
        for i in partitions::chunk_index(from - Span::days(1), days)
            ..=partitions::chunk_index(to + Span::days(1), days)
        {
            partitions::ensure_chunk(&client, i, days).await?;
        }
    }
    if timescale {
        // The policies wait while the history is written, so the load's
        // time is the load's; compression is run (and timed) below.
        schedule_policies(&client, false).await?;
    }
    let started = Instant::now();
    f.readings = write_history(&c.database.url, registry, from, to, args.writers).await?;
    f.load_s = started.elapsed().as_secs_f64();
    println!(
        "history: {} readings written in {:.0} s ({:.0} readings/s, {} COPY writers)",
        f.readings,
        f.load_s,
        f.readings as f64 / f.load_s,
        args.writers
    );

    // Rollups as the writers' refresh makes them: every hour marked.
    let started = Instant::now();
    client
        .execute(
            "INSERT INTO rollup_dirty (bucket)
             SELECT generate_series(date_trunc('hour', $1::timestamptz), $2::timestamptz, interval '1 hour')
             ON CONFLICT DO NOTHING",
            &[&from, &to],
        )
        .await?;
    let hours = estatemon_analytics::energy::refresh_rollups(&mut client).await?;
    f.rollup_s = started.elapsed().as_secs_f64();
    println!("rollups: {hours} hours refreshed in {:.0} s", f.rollup_s);

    if timescale {
        // The compression policy, run now rather than waited for.
        let started = Instant::now();
        let jobs: Vec<i32> = client
            .query(
                "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for job in &jobs {
            client.execute("CALL run_job($1)", &[job]).await?;
        }
        f.compress_s = started.elapsed().as_secs_f64();
        schedule_policies(&client, true).await?;
        let (chunks, compressed): (i64, i64) = {
            let r = client
                .query_one(
                    "SELECT count(*), count(*) FILTER (WHERE is_compressed)
                       FROM timescaledb_information.chunks WHERE hypertable_name = 'readings'",
                    &[],
                )
                .await?;
            (r.get(0), r.get(1))
        };
        println!(
            "compression: {} policy jobs in {:.0} s; readings: {compressed} of {chunks} chunks compressed",
            jobs.len(),
            f.compress_s
        );
    }
    client.batch_execute("VACUUM ANALYZE").await?;
    client.batch_execute("CHECKPOINT").await?;

    // The standby has everything before it is read.
    let started = Instant::now();
    let lsn: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    let standby_client = schema::connect_url(&standby.url(DB), Duration::from_secs(10)).await?;
    loop {
        let behind: f64 = standby_client
            .query_one(
                "SELECT pg_wal_lsn_diff($1::text::pg_lsn, pg_last_wal_replay_lsn())::float8",
                &[&lsn],
            )
            .await?
            .get(0);
        if behind <= 0.0 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "the standby is still {behind} bytes behind after 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    f.standby_catch_up_s = started.elapsed().as_secs_f64();
    drop(standby_client);

    // Storage.
    let size_sql = if timescale {
        "SELECT hypertable_size('readings')"
    } else {
        "SELECT sum(pg_total_relation_size(relid))::int8 FROM pg_partition_tree('readings')"
    };
    f.readings_bytes = client.query_one(size_sql, &[]).await?.get(0);
    f.database_bytes = client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?
        .get(0);
    println!(
        "stored: readings {} ({:.1} bytes a reading); the database {} ({:.1} bytes a reading, rollups and all)",
        gb(f.readings_bytes),
        f.readings_bytes as f64 / f.readings as f64,
        gb(f.database_bytes),
        f.database_bytes as f64 / f.readings as f64
    );
    let largest = largest_tables(&client, timescale).await?;
    println!(
        "largest: {}",
        largest
            .iter()
            .take(6)
            .map(|(t, b)| format!(
                "{t} {} ({:.1} bytes a reading)",
                gb(*b),
                *b as f64 / f.readings as f64
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // One alert cycle over the portfolio, at the end of the history.
    let rules = RuleSet::load(config.alerts.rules_file.as_deref())?;
    let mut cycles = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let report =
            estatemon_analytics::job::cycle(&mut client, &rules, &[], to, None, None).await?;
        cycles.push(t.elapsed().as_secs_f64() * 1000.0);
        f.cycle_findings = report.findings;
    }
    cycles.sort_by(f64::total_cmp);
    f.cycle_ms = cycles[cycles.len() / 2];
    println!(
        "alert cycle ({} rules, {} meters, full window): {} ms (median of 3; {} findings)",
        rules.rules.len(),
        registry.devices.len(),
        cycles
            .iter()
            .map(|m| format!("{m:.0}"))
            .collect::<Vec<_>>()
            .join(" / "),
        f.cycle_findings
    );

    // The API: panels from the primary, then from the standby.
    let name = format!("bench-{}", std::process::id());
    let token =
        estatemon_api::create_token(&client, &name, estatemon_api::auth::Role::Viewer, "bench")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    {
        let api = Api::start(&primary.url(DB), None).await?;
        panels(&api, &token, registry, args, &mut f).await?;
        let (rps, p99) = mix(&api, &token, registry, args).await?;
        f.mix_primary_rps = rps;
        f.mix_primary_p99 = p99;
        println!(
            "API mix read from the primary: {:.0} req/s (p99 {})",
            f.mix_primary_rps, f.mix_primary_p99
        );
    }
    {
        let api = Api::start(&primary.url(DB), Some(&standby.url(DB))).await?;
        let (rps, p99) = mix(&api, &token, registry, args).await?;
        f.mix_standby_rps = rps;
        f.mix_standby_p99 = p99;
        println!(
            "API mix read from the standby: {:.0} req/s (p99 {})",
            f.mix_standby_rps, f.mix_standby_p99
        );
    }

    // Every site's quarterly report, one process each as a scheduler runs them.
    reports(&primary.url(DB), registry, args, dir, &mut f)?;

    // The peer of the compressed rollups, in the same run and on the same
    // data: the rollups decompressed, the panels and the mix again.
    if timescale {
        // The policies paused, so compression does not come back mid-read.
        schedule_policies(&client, false).await?;
        let started = Instant::now();
        let chunks: i64 = client
            .query_one(
                &format!(
                    "SELECT count(decompress_chunk(c, true))::int8 FROM (
                       SELECT show_chunks(h) AS c FROM unnest({ROLLUPS}) h) s"
                ),
                &[],
            )
            .await?
            .get(0);
        client.batch_execute("VACUUM ANALYZE").await?;
        println!(
            "rollups decompressed for the comparison: {chunks} chunks in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        let api = Api::start(&primary.url(DB), None).await?;
        let mut g = Figures::default();
        panels(&api, &token, registry, args, &mut g).await?;
        let (rps, p99) = mix(&api, &token, registry, args).await?;
        let still: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*)::int8
                   FROM unnest({ROLLUPS}) h
                  CROSS JOIN LATERAL show_chunks(h) c
                   JOIN timescaledb_information.chunks k
                     ON format('%I.%I', k.chunk_schema, k.chunk_name)::regclass = c
                  WHERE k.is_compressed"
                ),
                &[],
            )
            .await?
            .get(0);
        anyhow::ensure!(
            still == 0,
            "{still} rollup chunks were compressed again during the comparison"
        );
        schedule_policies(&client, true).await?;
        println!(
            "API mix read from the primary, rollups uncompressed: {rps:.0} req/s (p99 {p99}); \
             with them compressed: {:.0} req/s (p99 {})",
            f.mix_primary_rps, f.mix_primary_p99
        );
        f.uncompressed = Some(Uncompressed {
            panel_site_p50: g.panel_site_p50,
            panel_site_p95: g.panel_site_p95,
            mix_rps: rps,
            mix_p99: p99,
        });
    }
    drop(client);
    drop(standby);
    drop(primary);
    Ok(f)
}

/// The tables by size, largest first: partitions counted in their table,
/// hypertables (and continuous aggregates) with all their chunks.
async fn largest_tables(
    client: &tokio_postgres::Client,
    timescale: bool,
) -> anyhow::Result<Vec<(String, i64)>> {
    let mut out: Vec<(String, i64)> = client
        .query(
            "SELECT coalesce(pg_partition_root(c.oid), c.oid)::regclass::text,
                    sum(pg_total_relation_size(c.oid))::int8
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'r' AND n.nspname = 'public'
              GROUP BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if timescale {
        // The hypertables' own (empty) parents are in `out`; their chunks
        // live elsewhere.
        let hyper = client
            .query(
                "SELECT hypertable_name::text,
                        hypertable_size(format('%I.%I', hypertable_schema, hypertable_name)::regclass)
                   FROM timescaledb_information.hypertables
                  WHERE hypertable_schema = 'public'
                 UNION ALL
                 SELECT view_name::text,
                        hypertable_size(format('%I.%I', materialization_hypertable_schema,
                                               materialization_hypertable_name)::regclass)
                   FROM timescaledb_information.continuous_aggregates",
                &[],
            )
            .await?;
        for r in hyper {
            let (name, bytes): (String, Option<i64>) = (r.get(0), r.get(1));
            out.retain(|(t, _)| *t != name);
            out.push((name, bytes.unwrap_or(0)));
        }
    }
    out.sort_by_key(|t| std::cmp::Reverse(t.1));
    Ok(out)
}

/// Writes the registers of every meter from `from` to `to` (15 minutes),
/// time-major, split over `writers` connections, a COPY per week.
async fn write_history(
    url: &str,
    registry: &Registry,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    writers: usize,
) -> anyhow::Result<u64> {
    let steps: Arc<Vec<DateTime<Utc>>> = Arc::new({
        let mut v = Vec::new();
        let mut t = from;
        while t < to {
            v.push(t);
            t += Span::minutes(15);
        }
        v
    });
    let dark: Arc<Vec<bool>> = Arc::new(
        steps
            .iter()
            .map(|t| estatemon_domain::sun::is_dark(*t, 22.28, 114.16))
            .collect(),
    );
    let devices = Arc::new(registry.devices.clone());
    let bar = progress(steps.len(), "writing history", "15-minute steps");
    let retrofit = end() - Span::days(365);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (url, steps, dark, devices, bar) = (
            url.to_owned(),
            steps.clone(),
            dark.clone(),
            devices.clone(),
            bar.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = schema::connect_url(&url, Duration::from_secs(10)).await?;
            let mine: Vec<usize> = (w..devices.len()).step_by(writers).collect();
            let mut register: Vec<f64> = mine
                .iter()
                .map(|&i| 1000.0 + (i * 31 % 500) as f64)
                .collect();
            let metric: Vec<&str> = mine
                .iter()
                .map(|&i| {
                    if devices[i].kind == DeviceKind::WaterMeter {
                        "volume_m3"
                    } else {
                        "energy_kwh"
                    }
                })
                .collect();
            let mut written = 0u64;
            for week in (0..steps.len()).step_by(96 * 7) {
                let sink = client
                    .copy_in(
                        "COPY readings (device_id, metric, ts, value) FROM STDIN (FORMAT binary)",
                    )
                    .await?;
                let copy = BinaryCopyInWriter::new(
                    sink,
                    &[Type::TEXT, Type::TEXT, Type::TIMESTAMPTZ, Type::FLOAT8],
                );
                pin_mut!(copy);
                let last = (week + 96 * 7).min(steps.len());
                for k in week..last {
                    let t = &steps[k];
                    for (j, &i) in mine.iter().enumerate() {
                        let d = &devices[i];
                        if k > 0 {
                            let rate = 2.0 + (i * 7919 % 97) as f64 / 12.0;
                            let noise = 1.0 + ((i * 131 + k * 17) % 41) as f64 / 1000.0 - 0.02;
                            register[j] += load(d, rate, *t, dark[k], retrofit) * 0.25 * noise;
                        }
                        let value = (register[j] * 1000.0).round() / 1000.0;
                        copy.as_mut().write(&[&d.id, &metric[j], t, &value]).await?;
                    }
                    if w == 0 {
                        bar.inc(1);
                    }
                }
                written += copy.finish().await?;
            }
            anyhow::Ok(written)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    bar.finish_and_clear();
    Ok(total)
}

/// An `estatemon api` process for the run.
struct Api {
    child: tokio::process::Child,
    addr: String,
}

impl Api {
    async fn start(url: &str, read_url: Option<&str>) -> anyhow::Result<Api> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
        cmd.arg("api")
            .env("ESTATEMON_DATABASE_URL", url)
            .env("ESTATEMON_API_LISTEN", &addr)
            // A year of hourly points is 8,760: let the panel have them all.
            .env("ESTATEMON_API_MAX_POINTS", "10000")
            .env("ESTATEMON_API_RESPONSE_CACHE_S", "0")
            .env("ESTATEMON_LOG_FILTER", "warn")
            .env_remove("ESTATEMON_DATABASE_READ_URL")
            .stdout(Stdio::null())
            .kill_on_drop(true);
        if let Some(read) = read_url {
            cmd.env("ESTATEMON_DATABASE_READ_URL", read);
        }
        let child = cmd.spawn()?;
        let api = Api { child, addr };
        for _ in 0..150 {
            if super::http_get(&api.addr, "/api/v1/health").await.is_ok() {
                return Ok(api);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("estatemon api did not answer on {}", api.addr)
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The year-long panels: a site's hourly consumption (every meter of the
/// site) and one meter's hourly register, rotating over sites.
async fn panels(
    api: &Api,
    token: &str,
    registry: &Registry,
    args: &PortfolioBenchArgs,
    f: &mut Figures,
) -> anyhow::Result<()> {
    let to = end().timestamp_millis();
    let from = (end() - Span::days(365)).timestamp_millis();
    let sites = &registry.sites;
    let site_path = |i: usize| {
        format!(
            "/api/v1/consumption?site={}&from={from}&to={to}&interval=1h&max_points=10000",
            sites[i % sites.len()].id
        )
    };
    let device_path = |i: usize| {
        let d = &registry.devices[(i * 7919) % registry.devices.len()];
        let metric = if d.kind == DeviceKind::WaterMeter {
            "volume_m3"
        } else {
            "energy_kwh"
        };
        format!(
            "/api/v1/series?device={}&metric={metric}&from={from}&to={to}&interval=1h&max_points=10000",
            d.id
        )
    };
    println!(
        "\n| year-long panel, {} sequential requests | p50 | p95 | p99 | body |\n|---|---|---|---|---|",
        args.requests
    );
    for (label, which) in [
        ("a site's hourly consumption (8,760 points)", 0),
        ("a meter's hourly register (8,760 points)", 1),
    ] {
        let path = |i| {
            if which == 0 {
                site_path(i)
            } else {
                device_path(i)
            }
        };
        for i in 0..3 {
            get(&api.addr, &path(i), token).await?;
        }
        let mut times = Vec::with_capacity(args.requests);
        let mut bytes = 0;
        for i in 0..args.requests {
            let t = Instant::now();
            let (status, n) = get(&api.addr, &path(i), token).await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(status == 200, "{}: HTTP {status}", path(i));
            bytes = n;
        }
        times.sort_by(f64::total_cmp);
        let (p50, p95, p99) = (
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            percentile(&times, 0.99),
        );
        println!(
            "| {label} | {p50:.1} ms | **{p95:.1} ms** | {p99:.1} ms | {} kB |",
            bytes / 1024
        );
        if which == 0 {
            f.panel_site_p50 = p50;
            f.panel_site_p95 = p95;
        } else {
            f.panel_device_p95 = p95;
        }
    }
    Ok(())
}

/// A dashboard's mixed panels over the portfolio's sites under wrk:
/// requests per second and wrk's p99.
async fn mix(
    api: &Api,
    token: &str,
    registry: &Registry,
    args: &PortfolioBenchArgs,
) -> anyhow::Result<(f64, String)> {
    let to = end().timestamp_millis();
    let day = 86_400_000;
    let (week, year) = (to - 7 * day, to - 365 * day);
    let mut paths = Vec::new();
    for (n, site) in registry.sites.iter().take(25).enumerate() {
        let s = &site.id;
        let d = &registry
            .devices
            .iter()
            .filter(|d| d.site == *s && d.kind != DeviceKind::WaterMeter)
            .nth(n % 7)
            .expect("a site has meters")
            .id;
        paths.extend([
            format!("/api/v1/consumption?site={s}&from={week}&to={to}&interval=1h"),
            format!("/api/v1/consumption?site={s}&purpose=public_lighting&from={week}&to={to}&interval=1h"),
            format!("/api/v1/consumption?site={s}&from={year}&to={to}&interval=1d"),
            format!("/api/v1/series?device={d}&metric=energy_kwh&from={}&to={to}&interval=15m", to - day),
            format!("/api/v1/alerts?state=open&site={s}"),
            format!("/api/v1/savings?site={s}&summary=true"),
        ]);
    }
    paths.push("/api/v1/sites".to_owned());
    for p in &paths {
        let (status, _) = get(&api.addr, p, token).await?;
        anyhow::ensure!(status == 200, "{p}: HTTP {status}");
    }
    let text = super::api::wrk(&api.addr, token, &paths, args.connections, args.seconds)?;
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .context("wrk printed no Requests/sec")?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| "?".into());
    if let Some(errors) = text.lines().find(|l| l.contains("Non-2xx")) {
        anyhow::bail!("wrk saw errors: {}", errors.trim());
    }
    Ok((rps, p99))
}

/// Each site's quarterly report in a process of its own.
fn reports(
    url: &str,
    registry: &Registry,
    args: &PortfolioBenchArgs,
    dir: &Path,
    f: &mut Figures,
) -> anyhow::Result<()> {
    let sites: Vec<&str> = registry
        .sites
        .iter()
        .take(args.reports.unwrap_or(usize::MAX))
        .map(|s| s.id.as_str())
        .collect();
    let out = dir.join("reports");
    let bar = progress(sites.len(), "quarterly reports", "sites");
    let started = Instant::now();
    let mut times = Vec::new();
    for site in &sites {
        let t = Instant::now();
        let output = std::process::Command::new(std::env::current_exe()?)
            .args(["report", "--site", site, "--quarter", QUARTER, "--out"])
            .arg(&out)
            .env("ESTATEMON_DATABASE_URL", url)
            .env("ESTATEMON_LOG_FILTER", "warn")
            .env("CI", "true")
            .output()?;
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        anyhow::ensure!(
            output.status.success(),
            "report {site}: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        times.push(t.elapsed().as_secs_f64());
        let peak = text
            .split("peak memory ")
            .nth(1)
            .and_then(|s| s.split(" MB").next())
            .and_then(|s| s.parse::<f64>().ok())
            .context("the report printed no peak memory")?;
        f.report_peak_mb = f.report_peak_mb.max(peak);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&out);
    f.report_total_s = started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    f.reports = times.len();
    f.report_median_s = percentile(&times, 0.5);
    println!(
        "quarterly reports {QUARTER}: {} sites in {:.0} s (median {:.1} s a site, slowest {:.1} s), peak memory {:.0} MB",
        f.reports,
        f.report_total_s,
        f.report_median_s,
        times.last().copied().unwrap_or(f64::NAN),
        f.report_peak_mb
    );
    Ok(())
}

/// Side by side, and what the figures say at the configured portfolio's
/// full size.
fn summary(args: &PortfolioBenchArgs, registry: &Registry, all: &[Figures]) {
    let meters = registry.devices.len() as f64;
    println!(
        "\n## summary: {} sites, {} meters, {} days",
        args.sites, meters, args.days
    );
    let header: Vec<&str> = all.iter().map(|f| f.mode.as_str()).collect();
    println!("| | {} |", header.join(" | "));
    println!("|---|{}", "---|".repeat(all.len()));
    let row = |label: &str, cell: &dyn Fn(&Figures) -> String| {
        println!(
            "| {label} | {} |",
            all.iter().map(cell).collect::<Vec<_>>().join(" | ")
        );
    };
    row("readings", &|f| f.readings.to_string());
    row("history written (COPY)", &|f| {
        format!("{:.0} s ({:.0}/s)", f.load_s, f.readings as f64 / f.load_s)
    });
    row("rollup refresh", &|f| format!("{:.0} s", f.rollup_s));
    row("compression", &|f| {
        if f.compress_s > 0.0 {
            format!("{:.0} s", f.compress_s)
        } else {
            "–".into()
        }
    });
    row("standby caught up after the load and VACUUM", &|f| {
        format!("{:.1} s", f.standby_catch_up_s)
    });
    row("bytes a reading, readings table", &|f| {
        format!("{:.1}", f.readings_bytes as f64 / f.readings as f64)
    });
    row("bytes a reading, whole database", &|f| {
        format!("{:.1}", f.database_bytes as f64 / f.readings as f64)
    });
    row("year panel, a site (p50 / p95)", &|f| {
        format!("{:.0} / {:.0} ms", f.panel_site_p50, f.panel_site_p95)
    });
    row("year panel, a meter (p95)", &|f| {
        format!("{:.0} ms", f.panel_device_p95)
    });
    row("API mix from the primary", &|f| {
        format!("{:.0} req/s (p99 {})", f.mix_primary_rps, f.mix_primary_p99)
    });
    row("API mix from the standby", &|f| {
        format!("{:.0} req/s (p99 {})", f.mix_standby_rps, f.mix_standby_p99)
    });
    row(
        "same data, rollups decompressed: year panel, a site (p50 / p95)",
        &|f| {
            f.uncompressed
                .as_ref()
                .map(|u| format!("{:.0} / {:.0} ms", u.panel_site_p50, u.panel_site_p95))
                .unwrap_or_else(|| "–".into())
        },
    );
    row(
        "same data, rollups decompressed: API mix from the primary",
        &|f| {
            f.uncompressed
                .as_ref()
                .map(|u| format!("{:.0} req/s (p99 {})", u.mix_rps, u.mix_p99))
                .unwrap_or_else(|| "–".into())
        },
    );
    row("quarterly reports, all sites", &|f| {
        format!(
            "{} in {:.0} s, {:.1} s a site, peak {:.0} MB",
            f.reports, f.report_total_s, f.report_median_s, f.report_peak_mb
        )
    });
    row("alert cycle, full window", &|f| {
        format!("{:.0} ms", f.cycle_ms)
    });
    // Per meter, then at 20,000 meters and two years.
    let per_year = 35_040.0;
    println!("\nscaled to 20,000 meters (linear in meters; the panels and a site's report do not grow with the portfolio):");
    row("storage a year (whole database)", &|f| {
        gb((f.database_bytes as f64 / f.readings as f64 * per_year * 20_000.0) as i64)
    });
    row("alert cycle", &|f| {
        format!("{:.1} s", f.cycle_ms / meters * 20_000.0 / 1000.0)
    });
    row("every site's report (200 sites)", &|f| {
        format!("{:.0} min", f.report_median_s * 200.0 / 60.0)
    });
}
