//! `estatemon bench report`: the quarterly report of a synthetic estate of
//! N meters with 15-minute registers — the quarter's raw readings plus a
//! year of hourly history (the rollups the comparisons and baselines read)
//! — written straight into a fresh database by binary COPY, then the report
//! timed in a process of its own, with its peak memory.

use std::process::Stdio;
use std::time::Instant;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use estatemon_domain::config::Config;
use estatemon_domain::device::{Building, Device, DeviceKind, Purpose, Registry, Site};
use estatemon_domain::retrofit::Retrofit;
use estatemon_domain::schema::{self, partitions, StorageMode};
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use super::{bench_config, drop_database, machine_description};

#[derive(clap::Args)]
pub struct ReportBenchArgs {
    /// Meters in the synthetic estate (10 buildings share them).
    #[arg(long, default_value_t = 1000)]
    meters: usize,
    /// Report runs to time.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Reuse the data of an earlier run of the same size.
    #[arg(long)]
    keep: bool,
}

const SITE: &str = "bench-estate";
const QUARTER: &str = "2026Q1";

pub(super) fn tz() -> chrono_tz::Tz {
    chrono_tz::Asia::Hong_Kong
}

pub(super) fn local_midnight(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    tz().with_ymd_and_hms(y, m, d, 0, 0, 0)
        .single()
        .expect("no DST in Hong Kong")
        .with_timezone(&Utc)
}

/// The estate: per building 40 lighting meters (corridor, garage, lobby,
/// stairwell), 20 lift, 15 pump, 10 HVAC and 15 water meters.
fn registry(meters: usize) -> Registry {
    estate(
        SITE,
        10,
        meters,
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
    )
}

/// One site `site` of `meters` meters over `buildings` buildings (filled a
/// hundred at a time in the layout below), and two retrofits on `retrofit_date` with a year's baseline
/// before it: all lighting (35 % target) and all domestic water (25 %).
pub(super) fn estate(
    site: &str,
    buildings: usize,
    meters: usize,
    retrofit_date: NaiveDate,
) -> Registry {
    let buildings: Vec<Building> = (0..buildings)
        .map(|b| Building {
            id: format!("b{b:02}"),
            name: format!("Block {b}"),
            floor_area_m2: Some(20_000.0),
        })
        .collect();
    let layout: [(usize, DeviceKind, Purpose, &str); 8] = [
        (
            15,
            DeviceKind::ElectricityMeter,
            Purpose::PublicLighting,
            "corridor",
        ),
        (
            10,
            DeviceKind::ElectricityMeter,
            Purpose::PublicLighting,
            "garage",
        ),
        (
            5,
            DeviceKind::ElectricityMeter,
            Purpose::PublicLighting,
            "lobby",
        ),
        (
            10,
            DeviceKind::ElectricityMeter,
            Purpose::PublicLighting,
            "stairwell",
        ),
        (
            20,
            DeviceKind::ElectricityMeter,
            Purpose::Lifts,
            "machine_room",
        ),
        (
            15,
            DeviceKind::ElectricityMeter,
            Purpose::Pumps,
            "pump_room",
        ),
        (10, DeviceKind::ElectricityMeter, Purpose::Hvac, "clubhouse"),
        (
            15,
            DeviceKind::WaterMeter,
            Purpose::DomesticWater,
            "pump_room",
        ),
    ];
    let mut devices = Vec::new();
    let mut k = 0;
    'outer: loop {
        for (b, building) in buildings.iter().enumerate() {
            for (n, kind, purpose, area) in layout {
                for i in 0..n {
                    if devices.len() == meters {
                        break 'outer;
                    }
                    devices.push(Device {
                        id: format!("m{b:02}-{}-{area}-{k}-{i:02}", purpose.as_str()),
                        kind,
                        site: site.into(),
                        building: Some(building.id.clone()),
                        area: area.into(),
                        purpose,
                        name: None,
                        model: None,
                        install_date: None,
                        maintenance_cycle: None,
                        responsible: None,
                        source_id: None,
                        class: None,
                        inspection_cycle: None,
                        checklist: Vec::new(),
                    });
                }
            }
        }
        k += 1;
    }
    let date = retrofit_date;
    let retrofit = |id: &str, purpose, target| Retrofit {
        id: id.into(),
        name: id.into(),
        site: site.into(),
        purpose,
        building: None,
        area: None,
        devices: vec![],
        date,
        baseline_from: date.with_year(date.year() - 1),
        baseline_to: None,
        reporting_from: None,
        reporting_to: None,
        target: Some(target),
        drivers: vec![],
    };
    Registry {
        sites: vec![Site {
            id: site.into(),
            name: format!("Benchmark estate {site} ({meters} meters)"),
            time_zone: "Asia/Hong_Kong".into(),
            latitude: 22.28,
            longitude: 114.16,
            floor_area_m2: Some(20_000.0 * buildings.len() as f64),
            weather: Vec::new(),
            electricity_supplier: Some("clp".into()),
            buildings,
        }],
        devices,
        retrofits: vec![
            retrofit("led-all", Purpose::PublicLighting, 0.35),
            retrofit("water-all", Purpose::DomesticWater, 0.25),
        ],
        scenario: None,
    }
}

/// Load (kW or m³/h) of a meter in the 15 minutes ending at `t`; lighting
/// and water use less from `retrofit` on.
pub(super) fn load(
    d: &Device,
    rate: f64,
    t: DateTime<Utc>,
    dark: bool,
    retrofit: DateTime<Utc>,
) -> f64 {
    let local = t.with_timezone(&tz());
    let weekend = local.weekday().number_from_monday() >= 6;
    let h = local.hour();
    let occ = if (7..23).contains(&h) {
        if weekend {
            0.6
        } else {
            0.9
        }
    } else {
        0.15
    };
    let after = t >= retrofit;
    let base = match d.purpose {
        Purpose::PublicLighting => rate * (0.3 + 0.7 * f64::from(u8::from(dark))),
        _ => rate * (0.3 + 0.7 * occ),
    };
    let saving = match (d.purpose, after) {
        (Purpose::PublicLighting, true) => 0.35,
        (Purpose::DomesticWater, true) => 0.25,
        _ => 0.0,
    };
    base * (1.0 - saving)
}

async fn generate(
    client: &tokio_postgres::Client,
    reg: &Registry,
    mode: StorageMode,
) -> anyhow::Result<(u64, u64)> {
    let history_from = local_midnight(2025, 1, 1);
    let quarter_from = local_midnight(2026, 1, 1);
    let quarter_to = local_midnight(2026, 4, 1);
    if mode == StorageMode::Plain {
        let days = schema::recorded_chunk_days(client).await?;
        for i in partitions::chunk_index(quarter_from - Duration::days(1), days)
            ..=partitions::chunk_index(quarter_to + Duration::days(1), days)
        {
            partitions::ensure_chunk(client, i, days).await?;
        }
    }
    // Darkness per 15-minute step, shared by all meters.
    let steps: Vec<DateTime<Utc>> = {
        let mut v = Vec::new();
        let mut t = history_from;
        while t <= quarter_to {
            v.push(t);
            t += Duration::minutes(15);
        }
        v
    };
    let dark: Vec<bool> = steps
        .iter()
        .map(|t| estatemon_domain::sun::is_dark(*t, 22.28, 114.16))
        .collect();
    let raw_sink = client
        .copy_in("COPY readings (device_id, metric, ts, value) FROM STDIN (FORMAT binary)")
        .await?;
    let raw = BinaryCopyInWriter::new(
        raw_sink,
        &[Type::TEXT, Type::TEXT, Type::TIMESTAMPTZ, Type::FLOAT8],
    );
    pin_mut!(raw);
    let (mut n_raw, mut n_hourly) = (0u64, 0u64);
    let bar = crate::progress::bar(
        reg.devices.len() as u64,
        "{spinner} generating [{bar:30}] {pos}/{len} meters ({eta})",
    );
    // One COPY at a time on a connection: hourly rows are kept per meter
    // and written after the raw COPY ends.
    let mut all_hourly: Vec<Vec<(DateTime<Utc>, [f64; 5])>> = Vec::with_capacity(reg.devices.len());
    for (i, d) in reg.devices.iter().enumerate() {
        let metric = if d.kind == DeviceKind::WaterMeter {
            "volume_m3"
        } else {
            "energy_kwh"
        };
        let rate = 2.0 + (i * 7919 % 97) as f64 / 12.0;
        let mut register = 1000.0 + (i * 31 % 500) as f64;
        let mut hour: Option<(DateTime<Utc>, Vec<f64>)> = None;
        let mut rows = Vec::with_capacity(steps.len() / 4 + 1);
        for (k, t) in steps.iter().enumerate() {
            if k > 0 {
                let noise = 1.0 + ((i * 131 + k * 17) % 41) as f64 / 1000.0 - 0.02;
                register += load(d, rate, *t, dark[k], quarter_from) * 0.25 * noise;
            }
            let value = (register * 1000.0).round() / 1000.0;
            if *t >= quarter_from - Duration::hours(3) && *t <= quarter_to {
                raw.as_mut().write(&[&d.id, &metric, t, &value]).await?;
                n_raw += 1;
            }
            let bucket = *t - Duration::minutes(t.minute() as i64);
            match &mut hour {
                Some((b, vals)) if *b == bucket => vals.push(value),
                _ => {
                    if let Some((b, vals)) = hour.take() {
                        rows.push((b, summarise(&vals)));
                    }
                    hour = Some((bucket, vec![value]));
                }
            }
        }
        if let Some((b, vals)) = hour.take() {
            rows.push((b, summarise(&vals)));
        }
        all_hourly.push(rows);
        bar.inc(1);
    }
    raw.finish().await?;
    bar.finish_and_clear();
    let sink = client
        .copy_in(
            "COPY readings_hourly (device_id, metric, bucket, samples, avg, min, max, first, last)
             FROM STDIN (FORMAT binary)",
        )
        .await?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::INT8,
            Type::FLOAT8,
            Type::FLOAT8,
            Type::FLOAT8,
            Type::FLOAT8,
            Type::FLOAT8,
        ],
    );
    pin_mut!(writer);
    for (i, rows) in all_hourly.iter().enumerate() {
        let d = &reg.devices[i];
        let metric = if d.kind == DeviceKind::WaterMeter {
            "volume_m3"
        } else {
            "energy_kwh"
        };
        for (bucket, [samples, avg, min, max, first]) in rows {
            let last = *max;
            writer
                .as_mut()
                .write(&[
                    &d.id,
                    &metric,
                    bucket,
                    &(*samples as i64),
                    avg,
                    min,
                    max,
                    first,
                    &last,
                ])
                .await?;
            n_hourly += 1;
        }
    }
    writer.finish().await?;
    Ok((n_raw, n_hourly))
}

/// samples, avg, min, max, first of a rising register's readings in an hour.
fn summarise(v: &[f64]) -> [f64; 5] {
    let n = v.len() as f64;
    [n, v.iter().sum::<f64>() / n, v[0], v[v.len() - 1], v[0]]
}

pub async fn run(config: Config, args: ReportBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (10..=20_000).contains(&args.meters),
        "--meters must be between 10 and 20000"
    );
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    let c = bench_config(&config, &format!("report_{}", args.meters));
    println!(
        "estatemon bench report — {}",
        Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("machine: {}", machine_description());
    let reuse = args.keep && schema::connect(&c.database).await.ok().is_some();
    let (mut client, migration) = if reuse {
        schema::prepare(&c.database, &c.storage).await?
    } else {
        drop_database(&config, &c.database.url).await;
        schema::prepare(&c.database, &c.storage).await?
    };
    println!(
        "storage: {} ({})",
        migration.mode.as_str(),
        migration.reason
    );
    anyhow::ensure!(
        migration.mode == StorageMode::Plain,
        "bench report writes hourly rollups directly, which TimescaleDB keeps as a continuous aggregate: run it against plain PostgreSQL"
    );
    let reg = registry(args.meters);
    let have: i64 = client
        .query_one("SELECT count(*) FROM readings_hourly", &[])
        .await?
        .get(0);
    if !reuse || have == 0 {
        schema::registry::upsert(&mut client, &reg).await?;
        let started = Instant::now();
        let (raw, hourly) = generate(&client, &reg, migration.mode).await?;
        client
            .batch_execute("ANALYZE readings; ANALYZE readings_hourly")
            .await?;
        println!(
            "data: {} meters; {QUARTER}: {raw} register readings (15 min); history 2025-01-01..2026-04-01: {hourly} hourly rows; written in {:.0} s",
            reg.devices.len(),
            started.elapsed().as_secs_f64()
        );
    } else {
        println!("data: reusing {have} hourly rows from an earlier run");
    }
    drop(client);
    let out = std::env::temp_dir().join(format!("estatemon-bench-report-{}", std::process::id()));
    let mut seconds = Vec::new();
    let mut peaks = Vec::new();
    for run in 0..args.runs {
        let started = Instant::now();
        let output = std::process::Command::new(std::env::current_exe()?)
            .args(["report", "--site", SITE, "--quarter", QUARTER, "--out"])
            .arg(&out)
            .env("ESTATEMON_DATABASE_URL", &c.database.url)
            .env("ESTATEMON_LOG_FILTER", "warn")
            .env("CI", "true")
            .stderr(Stdio::inherit())
            .output()?;
        let elapsed = started.elapsed().as_secs_f64();
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        anyhow::ensure!(output.status.success(), "report failed: {text}");
        let peak = text
            .split("peak memory ")
            .nth(1)
            .and_then(|s| s.split(" MB").next())
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        println!(
            "run {}: {elapsed:.1} s wall, peak memory {peak:.0} MB",
            run + 1
        );
        if run == 0 {
            for line in text.lines() {
                println!("    {line}");
            }
        }
        seconds.push(elapsed);
        peaks.push(peak);
    }
    let _ = std::fs::remove_dir_all(&out);
    seconds.sort_by(f64::total_cmp);
    println!(
        "\nreport {QUARTER} for {} meters: median {:.1} s (min {:.1}, max {:.1}), peak memory up to {:.0} MB",
        args.meters,
        seconds[seconds.len() / 2],
        seconds[0],
        seconds[seconds.len() - 1],
        peaks.iter().copied().fold(0.0, f64::max)
    );
    Ok(())
}
