//! `estatemon bench alerts`: the two alert paths the issue sets figures
//! for, on a synthetic estate backfilled into a fresh database.
//!
//! 1. **Evaluation cycle**: the shipped rules' cycle at "now" (window read,
//!    polars, transitions applied), timed in-process.
//! 2. **Fast path**: real `estatemon ingest` and `estatemon analytics`
//!    processes; entrapments and forced doors are published to the broker,
//!    one per lift or gate, and timed from the publish call to the webhook
//!    receiving the page (an upper bound of "broker receives → alert leaves
//!    estatemon").

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Args;
use estatemon_analytics::job::{cycle, CycleReport};
use estatemon_analytics::window::WindowCache;
use estatemon_domain::config::Config;
use estatemon_domain::rules::RuleSet;
use rumqttc::{AsyncClient, MqttOptions, QoS};

use super::{bench_config, drop_database, free_port, http_get, self_peak_rss_mb, IngestProcess};

/// `estatemon bench alerts`.
#[derive(Args, Clone)]
pub struct AlertsBenchArgs {
    /// Devices of the synthetic estate.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Hours of history before now (the consumption rules read since local
    /// midnight, so a day and a bit).
    #[arg(long, default_value_t = 26)]
    hours: u64,
    /// Seconds between simulated steps (gauges every step).
    #[arg(long, default_value_t = 300)]
    interval_s: u64,
    /// Evaluation cycles to time after the first.
    #[arg(long, default_value_t = 5)]
    cycles: usize,
    /// Emergencies to publish for the fast-path latency (one per lift or
    /// gate of the estate, at most that many); 0 skips the measurement.
    #[arg(long, default_value_t = 200)]
    fast_path: usize,
    /// Emergencies published per second.
    #[arg(long, default_value_t = 20)]
    fast_path_rate: u32,
    /// Keep the bench database afterwards.
    #[arg(long)]
    keep: bool,
}

/// Backfills the synthetic estate, times the evaluation cycle, then the
/// fast path.
pub async fn run(config: Config, args: AlertsBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (6..=100_000).contains(&args.devices),
        "--devices must be between 6 and 100000"
    );
    anyhow::ensure!(args.fast_path_rate > 0, "--fast-path-rate must be positive");
    let c = bench_config(&config, &format!("alerts_{}", args.devices));
    let mut client = super::fresh_run(&config, &c, "alerts").await?;
    let started = Instant::now();
    super::backfill_direct(
        &c.database.url,
        &[
            "--devices",
            &args.devices.to_string(),
            "--from",
            &format!("{}h", args.hours),
            "--interval-s",
            &args.interval_s.to_string(),
        ],
    )?;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM readings", &[])
        .await?
        .get(0);
    let events: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await?
        .get(0);
    println!(
        "history: {} devices, {} h at {} s steps: {rows} readings, {events} events (backfilled in {:.0} s)",
        args.devices,
        args.hours,
        args.interval_s,
        started.elapsed().as_secs_f64()
    );

    // Every device tracked for inspections (issue 20): classes A, B and C
    // in turn, twelve days of daily inspections with about one day in
    // twenty missed, so the inspection rules assess every device's windows.
    let inspections = client
        .execute(
            "WITH c AS (UPDATE devices SET class = (ARRAY['A','B','C'])[1 + abs(hashtext(device_id)) % 3]
                         WHERE assigned RETURNING device_id)
             INSERT INTO inspections (device_id, inspected_at, inspector, source, passed)
             SELECT c.device_id, g + interval '9 hours', 'bench', 'bench', true
               FROM c, generate_series(date_trunc('day', now()) - interval '12 days',
                                       date_trunc('day', now()), interval '1 day') g
              WHERE abs(hashtext(c.device_id || g::text)) % 20 <> 0",
            &[],
        )
        .await?;
    println!("inspections: {inspections} over 12 days, every device classed A, B or C");
    let rules = RuleSet::load(config.alerts.rules_file.as_deref())?;
    println!("\n## evaluation cycle ({} rules)", rules.rules.len());
    // As the analytics job runs: the first cycle reads the whole window,
    // the next ones what is new (the clock moves on between them as it does
    // between the job's cycles, only faster).
    let mut cache = WindowCache::default();
    let mut runs: Vec<(f64, CycleReport)> = Vec::new();
    let mut full: Vec<f64> = Vec::new();
    for i in 0..=args.cycles {
        let t = Instant::now();
        let report = cycle(&mut client, &rules, &[], Utc::now(), None, Some(&mut cache)).await?;
        let total = t.elapsed().as_secs_f64();
        println!(
            "cycle {i} ({}): {:.0} ms (window {:.0} ms, polars {:.0} ms, apply {:.0} ms): {} findings, {} firing, {} opened, {} open",
            if cache.last_was_full { "full window" } else { "incremental" },
            total * 1e3,
            report.load_s * 1e3,
            report.evaluate_s * 1e3,
            report.apply_s * 1e3,
            report.findings,
            report.firing,
            report.opened,
            report.open_after
        );
        if cache.last_was_full {
            full.push(total);
        } else {
            runs.push((total, report));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The full reload every 15 minutes, and the cycle without a cache
    // (`analytics evaluate`).
    for _ in 0..2 {
        let t = Instant::now();
        cycle(&mut client, &rules, &[], Utc::now(), None, None).await?;
        full.push(t.elapsed().as_secs_f64());
    }
    full.sort_by(f64::total_cmp);
    println!(
        "full-window cycles: {}",
        full.iter()
            .map(|s| format!("{:.0} ms", s * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut totals: Vec<f64> = runs.iter().map(|r| r.0).collect();
    totals.sort_by(f64::total_cmp);
    if let (Some(best), Some(worst)) = (totals.first(), totals.last()) {
        println!(
            "incremental cycles: median {:.0} ms, best {:.0} ms, worst {:.0} ms; bench process peak RSS {:.0} MB",
            totals[totals.len() / 2] * 1e3,
            best * 1e3,
            worst * 1e3,
            self_peak_rss_mb()
        );
    }

    if args.fast_path > 0 {
        fast_path(&c, &client, &args).await?;
    }
    if !args.keep {
        drop(client);
        drop_database(&config, &c.database.url).await;
    }
    Ok(())
}

/// When each page reached the receiver, by `rule/device`.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn receiver(arrivals: Arrivals) -> anyhow::Result<(u16, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let sms = arrivals.clone();
    let app = axum::Router::new()
        .route(
            "/sms",
            // An on-call page (Twilio-shaped): keyed `page:` and its text;
            // matched to the device it names afterwards.
            axum::routing::post(move |body: String| {
                let sms = sms.clone();
                async move {
                    let now = Instant::now();
                    let text: String = url::form_urlencoded::parse(body.as_bytes())
                        .find(|(k, _)| k == "Body")
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default();
                    sms.lock()
                        .unwrap()
                        .entry(format!("page:{text}"))
                        .or_insert(now);
                    r#"{"sid":"SM1"}"#
                }
            }),
        )
        .route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let arrivals = arrivals.clone();
                async move {
                    let now = Instant::now();
                    if body["kind"] == "firing" {
                        let alert = &body["alert"];
                        let key = format!(
                            "{}/{}",
                            alert["rule"].as_str().unwrap_or_default(),
                            alert["labels"]["device"].as_str().unwrap_or_default()
                        );
                        arrivals.lock().unwrap().entry(key).or_insert(now);
                    }
                    "ok"
                }
            }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((port, task))
}

async fn fast_path(
    c: &Config,
    client: &tokio_postgres::Client,
    args: &AlertsBenchArgs,
) -> anyhow::Result<()> {
    // Lifts and gates with no alert yet (an open one would absorb the page).
    let targets: Vec<(String, String, String)> = client
        .query(
            "SELECT d.device_id, d.site_id, d.kind FROM devices d \
             WHERE d.kind IN ('lift', 'access_gate') AND d.site_id IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.device_id = d.device_id) \
             ORDER BY d.device_id LIMIT $1",
            &[&(args.fast_path as i64)],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    anyhow::ensure!(!targets.is_empty(), "the estate has no lifts or gates");

    let arrivals: Arrivals = Default::default();
    let (hook_port, _hook) = receiver(arrivals.clone()).await?;
    let file = std::env::temp_dir().join(format!(
        "estatemon-bench-alerts-{}.toml",
        std::process::id()
    ));
    // On call: each site's team, one engineer always on call, paged by SMS
    // for any emergency (the first page of the ladder).
    let mut sites: Vec<&str> = targets.iter().map(|t| t.1.as_str()).collect();
    sites.sort();
    sites.dedup();
    let mut roster = String::from(
        "[[person]]\nid = \"engineer\"\nname = \"Engineer\"\ncontacts = { phone = \"+85255550101\" }\n",
    );
    for (i, site) in sites.iter().enumerate() {
        roster.push_str(&format!(
            "[[team]]\nid = \"t{i}\"\nsite = \"{site}\"\ntrade = \"security\"\ntime_zone = \"Asia/Hong_Kong\"\n\
             [[team.layer]]\nname = \"always\"\nmembers = [\"engineer\"]\nstart = 2026-01-05T08:00:00\nevery = \"1w\"\n\
             [[policy]]\nid = \"p{i}\"\nseverities = [\"emergency\"]\nsite = \"{site}\"\nfallback = \"engineer\"\n\
             [[policy.step]]\nafter = \"0m\"\nnotify = \"team:t{i}\"\n"
        ));
    }
    let roster_file = file.with_extension("roster.toml");
    std::fs::write(&roster_file, roster)?;
    std::fs::write(
        &file,
        format!(
            "[alerts]\nevaluate_interval_s = 60\n\
             [[alerts.webhooks]]\nname = \"bench\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n\
             [oncall]\nroster = \"{}\"\n\
             [[oncall.channel]]\nname = \"sms\"\nformat = \"sms\"\nurl = \"http://127.0.0.1:{hook_port}/sms\"\n\
             account = \"AC1\"\nsecret = \"t\"\nfrom = \"+85230000000\"\nrate_per_minute = 1000000\n",
            roster_file.display()
        ),
    )?;
    let ingest = IngestProcess::start(c, Some(&file)).await?;
    let analytics_http = format!("127.0.0.1:{}", free_port()?);
    let _analytics = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--config")
        .arg(&file)
        .arg("analytics")
        .env("ESTATEMON_DATABASE_URL", &c.database.url)
        .env("ESTATEMON_ALERTS_LISTEN", &analytics_http)
        // Each emergency is a WARN line; the bench prints its own summary.
        .env("ESTATEMON_LOG_FILTER", "error")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the analytics job")?;
    let up = Instant::now();
    while !http_get(&analytics_http, "/health")
        .await
        .is_ok_and(|b| b.contains("200 OK"))
    {
        anyhow::ensure!(
            up.elapsed() < Duration::from_secs(30),
            "the analytics job did not become healthy within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let its first evaluation cycle (which may open alerts of the history)
    // pass, so it does not compete with the measurement.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let ep = c.mqtt.endpoint().map_err(anyhow::Error::msg)?;
    let mut opts = MqttOptions::new(
        format!("estatemon-bench-alerts-{}", std::process::id()),
        ep.host,
        ep.port,
    );
    if let (Some(u), Some(p)) = (ep.username.as_deref(), ep.password.as_deref()) {
        opts.set_credentials(u, p);
    }
    let (mqtt, mut eventloop) = AsyncClient::new(opts, 100);
    let poller = tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let mut published: HashMap<String, Instant> = HashMap::new();
    let gap = Duration::from_secs_f64(1.0 / args.fast_path_rate as f64);
    let mut tick = tokio::time::interval(gap);
    for (device, site, kind) in &targets {
        tick.tick().await;
        let ms = Utc::now().timestamp_millis();
        let (rule, payload) = if kind == "lift" {
            (
                "lift_entrapment",
                format!(r#"{{"ts":{ms},"type":"fault","code":"entrapment"}}"#),
            )
        } else {
            (
                "door_forced",
                format!(r#"{{"ts":{ms},"type":"door_forced"}}"#),
            )
        };
        let topic = c
            .mqtt
            .topics
            .events
            .replace("{site}", site)
            .replace("{device_id}", device);
        published.insert(format!("{rule}/{device}"), Instant::now());
        mqtt.publish(topic, QoS::AtLeastOnce, false, payload)
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    // A webhook copy and a page per emergency.
    while arrivals.lock().unwrap().len() < 2 * published.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    poller.abort();
    let arrived = arrivals.lock().unwrap().clone();
    let mut latencies: Vec<f64> = published
        .iter()
        .filter_map(|(key, at)| {
            arrived
                .get(key)
                .map(|got| got.duration_since(*at).as_secs_f64())
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    // The first page of each emergency's ladder, by the device its text
    // names ("… / {device}. Respond by …").
    let pages: Vec<(String, Instant)> = arrived
        .iter()
        .filter_map(|(k, t)| k.strip_prefix("page:").map(|b| (b.to_owned(), *t)))
        .collect();
    let mut paged: Vec<f64> = published
        .iter()
        .filter_map(|(key, at)| {
            let device = key.split('/').nth(1)?;
            pages
                .iter()
                .filter(|(b, _)| b.contains(&format!("/ {device}. ")))
                .map(|(_, t)| t.duration_since(*at).as_secs_f64())
                .reduce(f64::min)
        })
        .collect();
    paged.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        let i = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] * 1e3
    };
    println!(
        "\n## fast path: {} emergencies published at {}/s (entrapments and forced doors)",
        published.len(),
        args.fast_path_rate
    );
    if latencies.is_empty() {
        anyhow::bail!("no page reached the webhook within 30 s");
    }
    println!(
        "publish → webhook: p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} of {} paged, ingestor peak RSS {:.0} MB",
        pct(0.50),
        pct(0.95),
        pct(0.99),
        pct(1.0),
        latencies.len(),
        published.len(),
        ingest.peak_rss_mb()
    );
    if !paged.is_empty() {
        let q = |p: f64| {
            paged[((p * paged.len() as f64).ceil() as usize).clamp(1, paged.len()) - 1] * 1e3
        };
        println!(
            "publish → first on-call page accepted (SMS gateway): p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} of {} paged",
            q(0.5),
            q(0.95),
            q(0.99),
            q(1.0),
            paged.len(),
            published.len()
        );
    }
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&roster_file);
    anyhow::ensure!(
        latencies.len() == published.len(),
        "{} emergencies were not paged within 30 s",
        published.len() - latencies.len()
    );
    Ok(())
}
