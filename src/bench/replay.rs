//! `estatemon bench replay`: `analytics replay` over a quarter (or any
//! number of days) of history backfilled into a fresh database, against
//! the floors: the shipped site's quarter in under a minute, 1,000
//! devices' in under ten.
//!
//! It also times a few steps of the per-step path (the live cycle reading
//! its whole window from the database, as replays ran before) so the two
//! can be read side by side.

use std::process::Stdio;
use std::time::Instant;

use chrono::{Duration, DurationRound, Utc};
use clap::Args;
use estatemon_analytics::job::cycle;
use estatemon_analytics::replay::{replay, step_count};
use estatemon_domain::config::Config;
use estatemon_domain::rules::{RuleSet, Span};

use super::{bench_config, drop_database, self_peak_rss_mb};

/// `estatemon bench replay`.
#[derive(Args, Clone)]
pub struct ReplayBenchArgs {
    /// Devices of a synthetic estate; the shipped site (with its scenario)
    /// when unset.
    #[arg(long)]
    devices: Option<usize>,
    /// Days of history to replay.
    #[arg(long, default_value_t = 92)]
    days: i64,
    /// Seconds between simulated steps of the history.
    #[arg(long, default_value_t = 900)]
    interval_s: u64,
    /// Time between evaluations (the replay's default).
    #[arg(long, default_value = "1m")]
    step: String,
    /// Steps of the per-step path to time for comparison (0: none).
    #[arg(long, default_value_t = 30)]
    per_step_sample: u64,
    /// Keep the bench database afterwards.
    #[arg(long)]
    keep: bool,
}

pub async fn run(config: Config, args: ReplayBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.days > 0, "--days must be positive");
    if let Some(n) = args.devices {
        anyhow::ensure!(
            (6..=100_000).contains(&n),
            "--devices must be between 6 and 100000"
        );
    }
    let step = Span::parse(&args.step).map_err(|e| anyhow::anyhow!("--step: {e}"))?;
    anyhow::ensure!(step.seconds() > 0, "--step must be positive");
    let tag = match args.devices {
        Some(n) => format!("replay_{n}"),
        None => "replay_site".to_owned(),
    };
    let c = bench_config(&config, &tag);
    let mut client = super::fresh_run(&config, &c, "replay").await?;
    // History ending at the last whole hour, so the run is the same quarter
    // whatever minute it starts.
    let to = Utc::now().duration_trunc(Duration::hours(1))?;
    let from = to - Duration::days(args.days);
    let started = Instant::now();
    let mut backfill = std::process::Command::new(std::env::current_exe()?);
    backfill
        .args(["simulate", "backfill", "--direct"])
        .args(["--from", &from.to_rfc3339(), "--to", &to.to_rfc3339()])
        .args(["--interval-s", &args.interval_s.to_string()]);
    if let Some(n) = args.devices {
        backfill.args(["--devices", &n.to_string()]);
    }
    let truth = std::env::temp_dir().join(format!(
        "estatemon-bench-replay-truth-{}.json",
        std::process::id()
    ));
    let status = backfill
        .arg("--truth")
        .arg(&truth)
        .env("ESTATEMON_DATABASE_URL", &c.database.url)
        .env("ESTATEMON_LOG_FILTER", "warn")
        .stdout(Stdio::null())
        .status()?;
    let _ = std::fs::remove_file(&truth);
    anyhow::ensure!(status.success(), "backfill failed");
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.map(|r| r.get::<_, i64>(0)) }
    };
    let (devices, readings, events) = (
        count("SELECT count(*) FROM devices").await?,
        count("SELECT count(*) FROM readings").await?,
        count("SELECT count(*) FROM events").await?,
    );
    println!(
        "history: {} ({devices} devices), {} days at {} s steps: {readings} readings, {events} events (backfilled in {:.0} s)",
        match args.devices {
            Some(_) => "synthetic estate",
            None => "the shipped site",
        },
        args.days,
        args.interval_s,
        started.elapsed().as_secs_f64()
    );
    let rules = RuleSet::load(config.alerts.rules_file.as_deref())?;
    // The first hour is the rules' lookback.
    let start = from + Duration::hours(1);
    let steps = step_count(start, to, step.chrono());

    if args.per_step_sample > 0 {
        let t = Instant::now();
        let mut at = start;
        for _ in 0..args.per_step_sample {
            cycle(&mut client, &rules, &[], at, None, None).await?;
            at += step.chrono();
        }
        let per_step = t.elapsed().as_secs_f64() / args.per_step_sample as f64;
        println!(
            "per-step path (window read from the database at every step): {:.1} ms a step over {} steps, {:.0} s for the {steps} steps",
            per_step * 1e3,
            args.per_step_sample,
            per_step * steps as f64
        );
        client
            .batch_execute("TRUNCATE alerts, silences CASCADE")
            .await?;
    }

    let t = Instant::now();
    let report = replay(&mut client, &rules, start, to, step.chrono(), |_| {}).await?;
    let wall = t.elapsed().as_secs_f64();
    println!(
        "\n## replay: {} rules every {} over {} days ({} steps)",
        rules.rules.len(),
        args.step,
        args.days,
        report.steps
    );
    println!(
        "wall {wall:.1} s: {:.0} steps/s, {:.1} simulated days/s; read {:.1} s ({} chunks, {} readings, {} events), evaluate {:.1} s, write {:.1} s",
        report.steps as f64 / wall,
        args.days as f64 / wall,
        report.load_s,
        report.chunks,
        report.readings,
        report.events,
        report.evaluate_s,
        report.apply_s
    );
    println!(
        "alerts: {} opened ({} silenced), {} resolved, {} open at the end; bench process peak RSS {:.0} MB",
        report.opened,
        report.silenced,
        report.resolved,
        report.open_after,
        self_peak_rss_mb()
    );
    let mut by_rule = report.per_rule_s.clone();
    by_rule.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!(
        "evaluation: cutting windows {:.1} s; by rule: {}",
        report.window_s,
        by_rule
            .iter()
            .take(8)
            .map(|(r, s)| format!("{r} {s:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The floors, for a quarter at the default step.
    let floor = match args.devices {
        None => Some(60.0),
        Some(n) if n <= 1000 => Some(600.0),
        Some(_) => None,
    };
    if let (Some(floor), true) = (floor, args.days >= 92 && step.seconds() == 60) {
        println!(
            "floor: under {floor:.0} s for the quarter — {} ({wall:.1} s{})",
            if wall < floor { "met" } else { "NOT met" },
            if cfg!(debug_assertions) {
                ", debug build: take the figure from a release build"
            } else {
                ""
            }
        );
    }
    if !args.keep {
        drop(client);
        drop_database(&config, &c.database.url).await;
    }
    Ok(())
}
