//! `estatemon simulate live | backfill | load`: the site simulator's modes.
//! Live and backfill runs end by writing the ground truth (what was
//! injected and sent) to `simulate.truth_file` or `--truth`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::{Args, Subcommand};
use estatemon_domain::config::Config;
use estatemon_simulators::model::SiteModel;
use estatemon_simulators::scenario::SiteSpec;
use estatemon_simulators::truth::GroundTruth;

use crate::backfill::{self, Window};

#[derive(Subcommand)]
pub enum SimulateCommand {
    /// Publish the site to MQTT in real time (or --speed times faster) until
    /// interrupted or --steps have run; QoS 1, buffering while the broker is away.
    Live(LiveArgs),
    /// Publish history (a year or more) as fast as the pipeline takes it,
    /// through the broker or straight into the database, with a progress bar.
    Backfill(BackfillArgs),
    /// Publish synthetic readings at a given message rate and batch size
    /// (for benchmarks); prints the rate achieved.
    Load(LoadArgs),
}

#[derive(Args)]
pub struct SiteArgs {
    /// Site file (registry format, with an optional [scenario] table);
    /// the shipped default site when unset.
    #[arg(long, value_name = "FILE")]
    site_file: Option<PathBuf>,
    /// Which site of the file to simulate (the first when unset).
    #[arg(long)]
    site: Option<String>,
    /// Simulate a synthetic estate of this many devices instead of a site
    /// file (towers of lifts, gates, meters; a podium with garage and pump
    /// room; background incidents, no retrofits).
    #[arg(long, conflicts_with = "site_file")]
    devices: Option<usize>,
    /// Drivers and noise only: ignore the site file's scenario (no
    /// retrofits, faults or delivery faults).
    #[arg(long)]
    quiet: bool,
    /// Random seed; the same seed publishes the same data.
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write the ground truth (default: simulate.truth_file).
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
    /// Publish as native (estatemon's JSON), tasmota, shelly, zigbee2mqtt
    /// or sparkplug devices (default: simulate.format). Ingest needs the
    /// matching `[[ingest.profile]]` or `[ingest.sparkplug]`, and the
    /// registry the devices' `source_id` (Shelly: `<id>-switch:0`,
    /// Sparkplug: `<site>/gw-<building>/<id>`); `estatemon demo` sets both.
    #[arg(long, value_name = "FORMAT")]
    format: Option<estatemon_domain::config::SimulateFormat>,
}

#[derive(Args)]
pub struct LiveArgs {
    #[command(flatten)]
    site: SiteArgs,
    /// Simulated seconds per real second.
    #[arg(long)]
    speed: Option<f64>,
    /// Seconds between steps, in simulated time (gauges every step,
    /// registers every simulate.register_interval_s).
    #[arg(long)]
    interval_s: Option<u64>,
    /// Stop after this many steps (runs until interrupted otherwise).
    #[arg(long)]
    steps: Option<u64>,
}

#[derive(Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    site: SiteArgs,
    /// Start: RFC 3339 (`2026-01-01T00:00:00Z`) or a span before now (`365d`, `4h`).
    #[arg(long, value_name = "WHEN")]
    from: String,
    /// End (RFC 3339 or a span before now); now when unset.
    #[arg(long, value_name = "WHEN")]
    to: Option<String>,
    /// Seconds between steps (default: simulate.register_interval_s, 15 min).
    #[arg(long)]
    interval_s: Option<u64>,
    /// Straight into the database (same writer as the ingestor) instead of
    /// through the broker; also loads the site into the registry. Delivery
    /// faults (duplicates, malformed messages) do not apply.
    #[arg(long)]
    direct: bool,
    /// Generator threads for --direct (default: one per core).
    #[arg(long, requires = "direct")]
    threads: Option<usize>,
}

#[derive(Args)]
pub struct LoadArgs {
    /// Messages per second (all publishers together).
    #[arg(long, default_value_t = 5_000.0)]
    rate: f64,
    /// Readings per message.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Publishing MQTT clients.
    #[arg(long, default_value_t = 2)]
    publishers: usize,
}

/// `2026-01-01T00:00:00Z`, or a span before now: `400d`, `4h`, `90m`,
/// `30s` (up to 100 years: backfills of a year or more are the point).
pub fn parse_when(s: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    const HINT: &str = "expected RFC 3339 or a span like 400d, 4h";
    let t = s.trim();
    if t.starts_with(|c: char| c.is_ascii_digit()) && t.ends_with(['d', 'h', 'm', 's']) {
        let (digits, unit) = t.split_at(t.len() - 1);
        let n: i64 = digits
            .parse()
            .map_err(|_| anyhow::anyhow!("`{s}`: {HINT}"))?;
        let per: i64 = match unit {
            "d" => 86_400,
            "h" => 3600,
            "m" => 60,
            _ => 1,
        };
        const MAX_S: i64 = 100 * 366 * 86_400;
        let seconds = n
            .checked_mul(per)
            .filter(|v| *v <= MAX_S)
            .ok_or_else(|| anyhow::anyhow!("`{s}` is longer than 100 years"))?;
        return Ok(chrono::Utc::now() - chrono::Duration::seconds(seconds));
    }
    Ok(chrono::DateTime::parse_from_rfc3339(t)
        .map_err(|e| anyhow::anyhow!("`{s}`: {e} ({HINT})"))?
        .with_timezone(&chrono::Utc))
}

/// The site and its model, from the arguments and configuration.
fn model(config: &mut Config, args: &SiteArgs) -> anyhow::Result<(SiteSpec, SiteModel)> {
    if let Some(seed) = args.seed {
        config.simulate.seed = seed;
    }
    if let Some(t) = &args.truth {
        config.simulate.truth_file = t.clone();
    }
    if let Some(f) = args.format {
        config.simulate.format = f;
    }
    let spec = match args.devices {
        Some(n) => {
            anyhow::ensure!(
                (6..=100_000).contains(&n),
                "--devices must be between 6 and 100000"
            );
            SiteSpec::synthetic(n)
        }
        None => SiteSpec::load(
            args.site_file
                .as_deref()
                .or(config.simulate.site_file.as_deref()),
            args.site.as_deref(),
            args.quiet,
        )?,
    };
    let scenario = if args.quiet {
        Default::default()
    } else {
        spec.scenario.clone()
    };
    let model = SiteModel::with_scenario(
        &spec.registry,
        Some(&spec.site),
        scenario,
        config.simulate.seed,
        config.simulate.register_interval_s,
    )?;
    tracing::info!(
        site = %model.site().id,
        devices = model.device_ids().len(),
        retrofits = model.scenario().retrofits.len(),
        faults = model.scenario().faults.len(),
        broker = %estatemon_domain::config::redact_url(&config.mqtt.url),
        "simulating"
    );
    Ok((spec, model))
}

pub fn write_truth(config: &Config, truth: &GroundTruth) -> anyhow::Result<()> {
    let path = &config.simulate.truth_file;
    truth
        .write(path)
        .map_err(|e| anyhow::anyhow!("writing the ground truth to {}: {e}", path.display()))?;
    println!(
        "ground truth: {} ({} faults, {} retrofits, {} devices)",
        path.display(),
        truth.faults.len(),
        truth.retrofits.len(),
        truth.devices.len()
    );
    Ok(())
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} backfill [{bar:40}] {pos}/{len} steps  {per_sec}  ETA {eta}",
        )
        .expect("progress template")
        .progress_chars("=> "),
    );
    bar
}

pub async fn run(mut config: Config, command: SimulateCommand) -> anyhow::Result<()> {
    match command {
        SimulateCommand::Live(args) => {
            if let Some(s) = args.speed {
                anyhow::ensure!(s > 0.0 && s.is_finite(), "--speed must be positive");
                config.simulate.speed = s;
            }
            if let Some(i) = args.interval_s {
                anyhow::ensure!(i > 0, "--interval-s must be at least 1");
                config.simulate.interval_s = i;
            }
            let (_, model) = model(&mut config, &args.site)?;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                estatemon_ingest::pipeline::wait_for_signal().await;
                let _ = stop_tx.send(true);
            });
            let (total, truth) = estatemon_simulators::live::run(
                model,
                &config.mqtt,
                &config.simulate,
                args.steps,
                stop_rx,
            )
            .await;
            println!(
                "published {} messages ({} readings and events) in {} steps",
                total.messages, total.items, total.steps
            );
            write_truth(&config, &truth)
        }
        SimulateCommand::Backfill(args) => {
            let (spec, model) = model(&mut config, &args.site)?;
            let from = parse_when(&args.from)?;
            let to = match &args.to {
                Some(t) => parse_when(t)?,
                None => chrono::Utc::now(),
            };
            anyhow::ensure!(from < to, "--from must be before --to");
            let interval = args
                .interval_s
                .unwrap_or(config.simulate.register_interval_s);
            anyhow::ensure!(interval > 0, "--interval-s must be at least 1");
            let step = chrono::Duration::seconds(interval as i64);
            let bar = progress_bar();
            let started = std::time::Instant::now();
            let set = |done: u64, total: u64| {
                bar.set_length(total);
                bar.set_position(done);
            };
            if args.direct {
                anyhow::ensure!(
                    config.simulate.format == Default::default(),
                    "--direct writes to the database, not in a device format: drop --format"
                );
                let threads = args.threads.unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(2)
                });
                anyhow::ensure!(
                    (1..=64).contains(&threads),
                    "--threads must be between 1 and 64"
                );
                let (totals, truth) = backfill::run(
                    &config,
                    &spec.registry,
                    model,
                    Window { from, to, step },
                    threads,
                    set,
                )
                .await?;
                bar.finish_and_clear();
                println!(
                    "backfilled {} readings and {} events ({} steps) into the database in {:.1} s",
                    totals.readings,
                    totals.events,
                    totals.steps,
                    started.elapsed().as_secs_f64()
                );
                return write_truth(&config, &truth);
            }
            let (total, truth) = estatemon_simulators::live::backfill(
                model,
                &config.mqtt,
                &config.simulate,
                from,
                to,
                step,
                set,
            )
            .await;
            bar.finish_and_clear();
            println!(
                "backfilled {} messages ({} readings and events, {} steps) in {:.1} s",
                total.messages,
                total.items,
                total.steps,
                started.elapsed().as_secs_f64()
            );
            write_truth(&config, &truth)
        }
        SimulateCommand::Load(args) => {
            anyhow::ensure!(
                args.rate > 0.0 && args.rate.is_finite(),
                "--rate must be positive"
            );
            anyhow::ensure!(
                (1..=10_000).contains(&args.batch),
                "--batch must be between 1 and 10000"
            );
            anyhow::ensure!(
                (1..=64).contains(&args.publishers),
                "--publishers must be between 1 and 64"
            );
            let messages = (args.rate * args.seconds as f64).round() as u64;
            static RUN: AtomicU64 = AtomicU64::new(0);
            let tag = format!(
                "{}-{}",
                std::process::id(),
                RUN.fetch_add(1, Ordering::Relaxed)
            );
            let elapsed = estatemon_simulators::load::publish(
                &config.mqtt,
                &tag,
                args.publishers,
                messages,
                args.batch,
                Some(args.rate),
                0,
            )
            .await;
            let secs = elapsed.as_secs_f64();
            println!(
                "published {messages} messages ({} readings) in {secs:.1} s: {:.0} messages/s, {:.0} readings/s (asked {:.0} messages/s)",
                messages * args.batch as u64,
                messages as f64 / secs,
                (messages * args.batch as u64) as f64 / secs,
                args.rate
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_when;

    #[test]
    fn backfill_spans_of_a_year_or_more_are_accepted() {
        let now = chrono::Utc::now();
        let t = parse_when("400d").unwrap();
        assert!((now - t).num_days() >= 399 && (now - t).num_days() <= 400);
        assert!(parse_when("36500d").is_ok());
        assert!(parse_when("99999999999999999d").is_err());
        assert!(parse_when("9223372036854775807s").is_err());
        assert!(parse_when("4x").is_err());
        assert_eq!(
            parse_when("2026-01-01T00:00:00Z").unwrap().to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
    }
}
