//! `estatemon import`: a meter's CSV export (utility, AMI, logger) into the
//! database through the ingest writer, so what lands is what MQTT would
//! have stored: the same validation, the same COPY and dedupe, dead letters
//! with a reason (and here the line number), rollups refreshed.

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use estatemon_domain::config::Config;
use estatemon_domain::schema;
use estatemon_domain::units::Unit;
use estatemon_domain::Metric;
use estatemon_ingest::batch::Batch;
use estatemon_ingest::dead_letter::DeadLetter;
use estatemon_ingest::import::{self, Format, Reads};
use estatemon_ingest::metrics::Metrics;
use estatemon_ingest::store::Writer;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The CSV file (`-` for standard input).
    file: PathBuf,
    /// The registered device the file belongs to.
    #[arg(long)]
    device: String,
    /// The metric (default: the device's register: energy_kwh for an
    /// electricity meter, volume_m3 for water and gas; temperature_c for a
    /// sensor).
    #[arg(long)]
    metric: Option<Metric>,
    /// interval (use per row), register (cumulative reads) or gauge
    /// (default: from the value column's header).
    #[arg(long)]
    reads: Option<Reads>,
    /// The values' unit, e.g. Wh, kWh, l, m3, °F (default: from the value
    /// column's header, else the metric's own).
    #[arg(long)]
    unit: Option<String>,
    /// The time column (default: start, timestamp, time, date, …).
    #[arg(long)]
    time_column: Option<String>,
    /// The date column when the time column holds times of day (Green
    /// Button CSV's DATE beside START TIME; default: found by its header).
    #[arg(long)]
    date_column: Option<String>,
    /// The utility's quality flag column (E estimated, A actual; default:
    /// quality, flag, notes, …).
    #[arg(long)]
    quality_column: Option<String>,
    /// Lines before the header (default: the first line naming a time and a
    /// value column, past a utility's preamble).
    #[arg(long)]
    skip_lines: Option<usize>,
    /// The value column (default: value, kwh, usage, consumption, …).
    #[arg(long)]
    value_column: Option<String>,
    /// Zone of times written without an offset (default: the site's).
    #[arg(long)]
    time_zone: Option<chrono_tz::Tz>,
    /// Accept history older than ingest.max_age_days (still within
    /// storage.retention_days, which would otherwise drop it; 0 keeps all).
    #[arg(long)]
    accept_history: bool,
    /// Read and check the file, print what it gives, store nothing.
    #[arg(long)]
    dry_run: bool,
}

/// The file cannot be imported as asked (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ImportRefused(pub String);

pub async fn run(config: Config, args: ImportArgs) -> anyhow::Result<()> {
    use std::io::Read;
    let mut bytes = Vec::new();
    if args.file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading standard input")?;
    } else if args.file.extension().is_some_and(|e| e == "gz") {
        let file = std::fs::File::open(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?;
        flate2::read::GzDecoder::new(file)
            .read_to_end(&mut bytes)
            .with_context(|| format!("decompressing {}", args.file.display()))?;
    } else {
        bytes = std::fs::read(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?;
    }
    let name = args
        .file
        .file_name()
        .map_or("stdin".into(), |n| n.to_string_lossy().into_owned());
    // A file that is not text is refused (exit 2) before anything is read.
    let (text, encoding) =
        import::decode_text(&bytes).map_err(|e| ImportRefused(format!("{name}: {e}")))?;
    let mut client = crate::prepare_database(&config).await?;
    let device = client
        .query_opt(
            "SELECT d.kind, s.time_zone FROM devices d LEFT JOIN sites s USING (site_id)
              WHERE d.device_id = $1",
            &[&args.device],
        )
        .await?
        .ok_or_else(|| {
            ImportRefused(format!(
                "device `{}` is not in the registry: load it first (`estatemon registry load FILE`)",
                args.device
            ))
        })?;
    let kind: String = device.get(0);
    let site_tz: Option<String> = device.get(1);
    let metric = match (args.metric, kind.as_str()) {
        (Some(m), _) => m,
        (None, "electricity_meter") => Metric::EnergyKwh,
        (None, "water_meter" | "gas_meter") => Metric::VolumeM3,
        (None, "sensor") => Metric::TemperatureC,
        (None, other) => {
            return Err(ImportRefused(format!(
                "device `{}` is a {other}: name the metric with --metric",
                args.device
            ))
            .into())
        }
    };
    let tz = match (args.time_zone, site_tz) {
        (Some(tz), _) => tz,
        (None, Some(tz)) => tz
            .parse()
            .map_err(|_| ImportRefused(format!("the site's time zone `{tz}` is not IANA")))?,
        (None, None) => {
            return Err(ImportRefused(format!(
                "device `{}` has no site: give --time-zone",
                args.device
            ))
            .into())
        }
    };
    let unit = match &args.unit {
        Some(u) => Some(Unit::parse(u).ok_or_else(|| {
            ImportRefused(format!(
                "unit `{u}` is unknown (kWh, Wh, MWh, m3, l, °F, Cel …)"
            ))
        })?),
        None => None,
    };
    let now = Utc::now();
    let retention = config.storage.retention_days;
    let oldest = if args.accept_history {
        if retention > 0 {
            (
                now - Duration::days(retention as i64),
                "storage.retention_days: older data would be dropped; 0 keeps everything",
            )
        } else {
            (
                DateTime::from_timestamp(0, 0).expect("epoch"),
                "1970 at the earliest",
            )
        }
    } else {
        let days = config.ingest.max_age_days.min(if retention > 0 {
            retention as u64
        } else {
            u64::MAX
        });
        (
            now - Duration::days(days as i64),
            "ingest.max_age_days / storage.retention_days: --accept-history takes older history",
        )
    };
    let mut format = Format {
        device_id: args.device.clone(),
        metric,
        time_column: args.time_column.clone(),
        date_column: args.date_column.clone(),
        value_column: args.value_column.clone(),
        quality_column: args.quality_column.clone(),
        skip_lines: args.skip_lines,
        reads: args.reads,
        unit,
        tz,
        register_base: 1_000_000.0,
        accept: (
            oldest.0,
            now + Duration::seconds(config.ingest.max_future_skew_s as i64),
            oldest.1,
        ),
    };
    let mut out =
        import::parse(&text, &format).map_err(|e| ImportRefused(format!("{name}: {e}")))?;
    if out.reads == Some(Reads::Interval) {
        if let (Some(first), Some(last)) = (out.first, out.last) {
            // A built register never mixes with a stored one.
            let overlap: i64 = client
                .query_one(
                    "SELECT count(*) FROM readings WHERE device_id = $1 AND metric = $2
                       AND ts > $3 AND ts <= $4",
                    &[&args.device, &metric.as_str(), &first, &last],
                )
                .await?
                .get(0);
            if overlap > 0 {
                return Err(ImportRefused(format!(
                    "{} already has {overlap} {metric} reading(s) between {} and {}: interval \
                     reads build a register, which cannot be mixed with a stored one",
                    args.device,
                    first.to_rfc3339(),
                    last.to_rfc3339()
                ))
                .into());
            }
            // The stored register the file follows on from: at its first
            // instant (the previous file's last end) the built register
            // continues from it; before it, a gap lies between them, so it
            // starts lower, which reads as unknown use, never as none.
            let before: Option<(DateTime<Utc>, f64)> = client
                .query_opt(
                    "SELECT ts, value FROM readings WHERE device_id = $1 AND metric = $2 AND ts <= $3
                      ORDER BY ts DESC LIMIT 1",
                    &[&args.device, &metric.as_str(), &first],
                )
                .await?
                .map(|r| (r.get(0), r.get(1)));
            if let Some((at, value)) = before.filter(|(_, v)| *v > 0.0) {
                format.register_base = if at == first { value } else { value * 0.5 };
                out = import::parse(&text, &format)
                    .map_err(|e| ImportRefused(format!("{name}: {e}")))?;
            }
        }
    }
    let received_at = Utc::now();
    let dead: Vec<DeadLetter> = out
        .rejects
        .iter()
        .map(|(_, raw, reject)| DeadLetter {
            received_at,
            topic: format!("import/{name}"),
            payload: raw.clone().into_bytes(),
            reason: reject.reason,
            detail: reject.detail.clone(),
            fingerprint: None,
        })
        .collect();
    if let Some(encoding) = encoding {
        out.notes.insert(0, format!("read as {encoding} text"));
    }
    let summary = summary(&name, &args.device, metric, tz, &out);
    // A file that gives nothing is refused whole: its dead letters are
    // printed, not stored, so that a wrong layout leaves no trace to clean.
    if out.readings.is_empty() {
        println!("{summary}");
        return Err(ImportRefused(format!(
            "{name}: nothing could be imported ({} dead letter(s), none stored){}",
            out.rejects.len(),
            if args.dry_run { " (dry run)" } else { "" }
        ))
        .into());
    }
    if args.dry_run {
        println!("{summary}\n(dry run: nothing stored)");
        return Ok(());
    }
    let mode = schema::recorded_mode(&client).await?;
    let chunk_days = schema::recorded_chunk_days(&client).await?;
    let metrics = Metrics::new(&mut prometheus_client::registry::Registry::default());
    let mut writer = Writer::new(config.database.clone(), mode, chunk_days);
    let (_never, shutdown) = tokio::sync::watch::channel(false);
    let max_backoff = std::time::Duration::from_secs(config.ingest.db_retry_max_backoff_s.max(1));
    let per_batch = config.ingest.batch_max_readings.max(1);
    let bar = crate::progress::bar(
        out.readings.len() as u64,
        "{spinner} import [{bar:30}] {pos}/{len} readings ({elapsed})",
    );
    let mut dead = Some(dead);
    for chunk in out.readings.chunks(per_batch) {
        let mut batch: Batch<()> = Batch {
            readings: chunk.to_vec(),
            dead_letters: dead.take().unwrap_or_default(),
            ..Batch::default()
        };
        batch.seal();
        writer
            .write_until_committed(&batch, &metrics, max_backoff, &shutdown)
            .await
            .context("storing the imported readings")?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    estatemon_ingest::maintenance::round(&mut client, &config.storage, mode, chunk_days).await?;
    println!("{summary}");
    Ok(())
}

fn summary(
    name: &str,
    device: &str,
    metric: Metric,
    tz: chrono_tz::Tz,
    out: &import::Imported,
) -> String {
    let span = match (out.first, out.last) {
        (Some(a), Some(b)) => format!(
            "{} to {} ({})",
            a.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
            b.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
            tz.name()
        ),
        _ => "no rows".into(),
    };
    let cadence = out.cadence.map_or("n/a".into(), |c| {
        if out.daily {
            "daily".to_owned()
        } else if c.num_minutes() % 60 == 0 {
            format!("{} h", c.num_hours())
        } else {
            format!("{} min", c.num_minutes())
        }
    });
    let mut s = format!(
        "{name} → {device}: {rows} row(s) from columns `{}` and `{}`, {reads} reads in {unit}, \
         {cadence}, {span}; {n} {metric} reading(s) stored",
        out.columns.0,
        out.columns.1,
        rows = out.rows,
        reads = out.reads.map_or("?", Reads::as_str),
        unit = out.unit.unwrap_or("?"),
        n = out.readings.len(),
    );
    if out.preamble > 0 {
        s.push_str(&format!(
            "\n  header on line {}: {} line(s) before it skipped",
            out.preamble + 1,
            out.preamble
        ));
    }
    if !out.missing.is_empty() {
        s.push_str(&format!(
            "\n  {} row(s) without a value (lines {}): unknown, not zero",
            out.missing.len(),
            lines(&out.missing)
        ));
    }
    if !out.duplicates.is_empty() {
        s.push_str(&format!(
            "\n  {} exact duplicate row(s) dropped (lines {}): the same time and value as an \
             earlier row",
            out.duplicates.len(),
            lines(&out.duplicates)
        ));
    }
    if let Some(column) = &out.quality_column {
        let estimated: f64 = out.estimated.iter().map(|e| e.2).sum();
        let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string();
        s.push_str(&format!(
            "\n  quality (column `{column}`): {} estimated, {} actual, {} unflagged row(s) stored",
            out.estimated.len(),
            out.actual,
            out.stored_rows
                .saturating_sub(out.estimated.len() + out.actual)
        ));
        if let (Some(first), Some(last)) = (out.estimated.first(), out.estimated.last()) {
            let ls: Vec<usize> = out.estimated.iter().map(|e| e.0).collect();
            s.push_str(&format!(
                "\n    estimated (stored like the others; readings carry no quality): lines {}, \
                 {} .. {}, {estimated:.3} {}",
                lines(&ls),
                local(first.1),
                local(last.1),
                metric.unit()
            ));
        }
    }
    if !out.rejects.is_empty() {
        s.push_str(&format!(
            "\n  {} dead letter(s) (topic import/{name}):",
            out.rejects.len()
        ));
        for (_, _, r) in out.rejects.iter().take(10) {
            s.push_str(&format!("\n    {}: {}", r.reason.as_str(), r.detail));
        }
        if out.rejects.len() > 10 {
            s.push_str(&format!("\n    … and {} more", out.rejects.len() - 10));
        }
    }
    for n in &out.notes {
        s.push_str(&format!("\n  note: {n}"));
    }
    s
}

use import::lines;
