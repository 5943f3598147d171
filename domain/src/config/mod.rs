//! Configuration: one struct tree, defaults in code, a TOML file on top, and
//! `ESTATEMON_*` environment variables on top of that.
//!
//! `estatemon.example.toml` at the repository root documents every field and
//! is loaded by the tests, so it cannot drift from this file.
//!
//! Environment variables name a field by its path, sections joined with `_`
//! (`ESTATEMON_DATABASE_URL` → `database.url`, `ESTATEMON_INGEST_BATCH_LINGER_MS`
//! → `ingest.batch_linger_ms`) or, unambiguously, with `__`
//! (`ESTATEMON_MQTT__TOPICS__TELEMETRY`).
//!
//! Errors name the file, the line and the field, because an operator editing
//! a config at 3 a.m. should not have to bisect it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod energy;
pub use energy::*;
mod nats;
pub use nats::{Discard, NatsConfig, Source};

/// Where a configuration problem was found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: field `{field}`: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
    #[error("{}: field `{field}`: {message}", Located(path, *line))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        field: String,
        message: String,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

struct Located<'a>(&'a Path, Option<usize>);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(line) => write!(f, "{}:{line}", self.0.display()),
            None => write!(f, "{}", self.0.display()),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub mqtt: MqttConfig,
    pub nats: NatsConfig,
    pub ingest: IngestConfig,
    pub storage: StorageConfig,
    pub registry: RegistryConfig,
    pub simulate: SimulateConfig,
    pub alerts: AlertsConfig,
    pub energy: EnergyConfig,
    pub lifts: LiftsConfig,
    pub oncall: OncallConfig,
    pub api: ApiConfig,
    pub log: LogConfig,
}

/// On-call (`estatemon oncall`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OncallConfig {
    /// The roster file: people, teams, rotations, overrides, holidays (see
    /// `deploy/oncall.example.toml`). None: no roster.
    pub roster: Option<PathBuf>,
    /// How pages reach a person (`[[oncall.channel]]`), one per format: a
    /// person's `phone` goes by `sms` (and, for emergencies, a `voice`
    /// call first), `email` by `email` (SMTP), `wecom`, `dingtalk` and
    /// `feishu` ids by those group robots (the person @-mentioned), and
    /// `telegram` by the bot. A contact method without its channel is
    /// skipped, and said so in the page's timeline.
    #[serde(rename = "channel")]
    pub channels: Vec<WebhookConfig>,
    /// The address people's phones reach `estatemon api` at, for the
    /// acknowledge / resolve / snooze links in every page (default:
    /// `http://` and `api.listen`).
    pub public_url: Option<String>,
    /// Hours a page's links stay valid.
    pub link_valid_h: u64,
    /// Tries of one contact method (with backoff from 2 s) before the page
    /// falls through to the person's next method.
    pub tries_per_method: u32,
    /// Minutes a snooze link holds the ladder.
    pub snooze_minutes: u32,
    /// Systems that check in (`POST /api/v1/intake/heartbeat/{name}`); one
    /// silent past its interval is an alert (`[[oncall.heartbeat]]`). The
    /// name `estatemon-analytics` watches the analytics job itself, which
    /// checks in on its own; `estatemon api` watches and pages.
    #[serde(rename = "heartbeat")]
    pub heartbeats: Vec<HeartbeatConfig>,
}

/// A heartbeat monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    pub name: String,
    /// Seconds without a check-in before it is an alert.
    pub interval_s: u64,
    /// `emergency`, `ordinary` (default) or `routine`.
    #[serde(default = "ordinary")]
    pub severity: String,
    /// The site whose on-call teams it pages.
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
}

fn ordinary() -> String {
    "ordinary".into()
}

impl Default for OncallConfig {
    fn default() -> Self {
        OncallConfig {
            roster: None,
            channels: Vec::new(),
            public_url: None,
            link_valid_h: 12,
            tries_per_method: 3,
            snooze_minutes: 30,
            heartbeats: Vec::new(),
        }
    }
}

/// Lift statistics (the API, `estatemon lifts` and the quarterly report).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiftsConfig {
    /// Whether a fault raised while the lift is in maintenance or
    /// inspection counts in its faults, MTBF and faults per 1,000 trips:
    /// `exclude` (default: a technician's tests are not breakdowns; they
    /// are counted apart as `faults_in_maintenance`) or `count`.
    pub maintenance_faults: MaintenanceFaults,
}

/// See [`LiftsConfig::maintenance_faults`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceFaults {
    #[default]
    Exclude,
    Count,
}

/// The HTTP API (`estatemon api`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address of the REST API, its OpenAPI document and `/metrics`.
    pub listen: String,
    /// Database connections in the pool.
    pub pool_size: usize,
    /// Most points a series answer may carry; a longer range is coarsened.
    pub max_points: usize,
    /// Audit records are written in batches at least this often.
    pub audit_flush_ms: u64,
    /// Most audit records waiting to be written, in MiB. While the backlog
    /// is at this bound (the database stalls), new requests are refused
    /// with 503 rather than served unaudited or held in memory without end.
    pub audit_max_pending_mb: usize,
    /// Requests without a valid token answered (and audited) per client
    /// address per minute; beyond that they get 429 and are only counted
    /// (`estatemon_api_unauthenticated_refused_total`), with one audit row
    /// per burst. 0 turns the limit off.
    pub unauthenticated_per_minute: u32,
    /// Seconds an answer that changes at most once a day (stored savings, a
    /// retrofit's daily baseline) is kept per query; 0 reads the stored
    /// measurement on every request.
    pub response_cache_s: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8080".into(),
            pool_size: 8,
            max_points: 2000,
            audit_flush_ms: 200,
            audit_max_pending_mb: 16,
            unauthenticated_per_minute: 60,
            response_cache_s: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://user[:password]@host:port/database`.
    /// Several hosts fail over: `postgres://u@primary:5432,standby:5432/db?target_session_attrs=read-write`
    /// connects to whichever takes writes, and every process reconnects
    /// to a promoted standby on its own.
    pub url: String,
    /// A standby for the API's panel and report reads (`estatemon api`):
    /// series, consumption, event counts, lift states and statistics, the
    /// report list and files. Unset: `url`. A read lags the primary by the
    /// replication delay.
    pub read_url: Option<String>,
    /// Create the database if it does not exist (needs CREATEDB).
    pub create_database: bool,
    pub connect_timeout_s: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "postgres://postgres@127.0.0.1:5432/estatemon".into(),
            read_url: None,
            create_database: true,
            connect_timeout_s: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://[user:pass@]host:port`. Several brokers, comma-separated
    /// (`mqtt://n1:1883,mqtt://n2:1883`), are tried in turn: the session
    /// moves to the next when one is lost or refuses. Only with
    /// `ingest.source = "nats"`: the nodes of a NATS cluster share one store
    /// of sessions, where separate brokers would each keep their own queue.
    /// Other tools (the simulator, the demo, benches) use the first.
    pub url: String,
    /// Client id; must be unique per ingest process, and stable across its
    /// restarts so the broker keeps its session (and the messages queued
    /// while it was down).
    pub client_id: String,
    /// When set, subscribe as `$share/{group}/…` so several ingest processes
    /// split one stream.
    pub shared_group: Option<String>,
    pub keep_alive_s: u64,
    /// How long the broker keeps the session (and queues QoS 1 messages)
    /// while the ingestor is away.
    pub session_expiry_s: u32,
    /// How many unacknowledged messages the broker may send us at once; the
    /// throughput ceiling is receive_maximum / commit latency.
    pub receive_maximum: u16,
    pub reconnect_max_backoff_s: u64,
    pub topics: TopicsConfig,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: "estatemon-ingest".into(),
            shared_group: None,
            keep_alive_s: 30,
            session_expiry_s: 7 * 24 * 3600,
            receive_maximum: 4000,
            reconnect_max_backoff_s: 30,
            topics: TopicsConfig::default(),
        }
    }
}

/// Topic templates per payload format. Placeholders are whole topic levels:
/// `{site}` (optional) and `{device_id}` (required).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    pub telemetry: String,
    pub events: String,
    pub senml: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            telemetry: "estatemon/{site}/{device_id}/telemetry".into(),
            events: "estatemon/{site}/{device_id}/events".into(),
            senml: "estatemon/{site}/{device_id}/senml".into(),
        }
    }
}

/// Parsed `mqtt.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttEndpoint {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl MqttConfig {
    /// The first broker of `url`.
    pub fn endpoint(&self) -> Result<MqttEndpoint, String> {
        Ok(self.endpoints()?.swap_remove(0))
    }

    /// Every broker of `url`, in order.
    pub fn endpoints(&self) -> Result<Vec<MqttEndpoint>, String> {
        self.urls().iter().map(|u| endpoint(u)).collect()
    }

    /// Each broker's URL in `url`, as written.
    pub fn urls(&self) -> Vec<String> {
        split_at_schemes(&self.url)
            .iter()
            .map(|u| u.trim().to_owned())
            .collect()
    }
}

fn endpoint(url: &str) -> Result<MqttEndpoint, String> {
    let shown = redact_url(url);
    let url = url::Url::parse(url).map_err(|e| format!("`{shown}`: {e}"))?;
    if !matches!(url.scheme(), "mqtt" | "tcp") {
        return Err(format!(
            "`{shown}`: scheme must be mqtt:// (TLS: terminate at the broker's local listener)"
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("`{shown}` has no host"))?
        .to_owned();
    if host.contains(',') {
        return Err(format!(
            "`{shown}`: a host with a comma; name each broker as a URL of its own \
             (`mqtt://n1:1883,mqtt://n2:1883`), with nothing after the last"
        ));
    }
    // Userinfo is percent-encoded (RFC 3986): `+` is a plus, not a space.
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    Ok(MqttEndpoint {
        host,
        port: url.port().unwrap_or(1883),
        username: (!url.username().is_empty()).then(|| decode(url.username())),
        password: url.password().map(decode),
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Where device messages come from: `mqtt` (the broker at `mqtt.url`)
    /// or `nats` (the JetStream stream of `[nats]`; `mqtt.url` then names a
    /// NATS node's MQTT listener, which ingest connects to once so the
    /// server makes its MQTT store; with Sparkplug or Home Assistant
    /// discovery on, ingest keeps an MQTT 3.1.1 session there for them).
    pub source: Source,
    /// A batch is committed when it holds this many readings…
    pub batch_max_readings: usize,
    /// …or when its oldest message has waited this long.
    pub batch_linger_ms: u64,
    /// Parallel database writers (each one connection, one batch at a time).
    pub writers: usize,
    /// Readings stamped further than this in the future are dead letters
    /// (a device clock gone wrong would otherwise poison "latest" queries).
    pub max_future_skew_s: u64,
    /// Readings older than this are dead letters (a clock reset to 1970).
    pub max_age_days: u64,
    pub max_payload_bytes: usize,
    /// Payload held in memory between receipt and commit; past it the
    /// ingestor stops reading from the broker until a batch commits.
    pub max_buffered_mb: u64,
    /// Address of `/metrics` and `/health`.
    pub listen: String,
    /// Secret for pseudonymising access credentials. Set it in production
    /// (`ESTATEMON_INGEST_PSEUDONYM_KEY`); without it a built-in development
    /// key is used and a warning is logged.
    pub pseudonym_key: Option<String>,
    pub db_retry_max_backoff_s: u64,
    /// A batch write (COPY and commit) not finished in this long is
    /// abandoned and retried on a new connection: a commit waiting for a
    /// synchronous standby that is gone, or on a host that vanished
    /// without closing its connections, would otherwise wait for TCP to
    /// give up. A retry stores nothing twice (the readings' key).
    pub write_timeout_s: u64,
    /// Payload mappings for devices that speak their own JSON on their own
    /// topics (`[[ingest.mapping]]`, see `domain::mapping`).
    #[serde(rename = "mapping", skip_serializing_if = "Vec::is_empty")]
    pub mappings: Vec<crate::mapping::Mapping>,
    /// Shipped profiles to enable: tasmota, shelly, zigbee2mqtt
    /// (`[[ingest.profile]]`).
    #[serde(rename = "profile", skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<ProfileConfig>,
    /// Sparkplug B host application (`[ingest.sparkplug]`).
    pub sparkplug: crate::sparkplug::SparkplugConfig,
    /// Home Assistant MQTT discovery (`[ingest.homeassistant]`).
    pub homeassistant: crate::mapping::homeassistant::HomeAssistantConfig,
}

/// A shipped mapping profile, enabled for a site.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// `tasmota`, `shelly` or `zigbee2mqtt`.
    pub name: String,
    /// The site its devices belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The zone of naive local times (Tasmota's `Time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Tasmota: the devices' FullTopic when it is not the default
    /// `%prefix%/%topic%/` (e.g. `tasmota/%topic%/%prefix%/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_topic: Option<String>,
    /// Shelly: the devices' `mqtt.topic_prefix` as a pattern when it is
    /// not the device id (e.g. `home/{device_id+}`, `shellies/{device_id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_prefix: Option<String>,
    /// Zigbee2MQTT: its `mqtt.base_topic` when it is not `zigbee2mqtt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_topic: Option<String>,
}

impl IngestConfig {
    /// Every mapping in force: the enabled profiles' first, then the
    /// configured ones (every one whose topic and conditions fit applies).
    pub fn all_mappings(&self) -> Vec<crate::mapping::Mapping> {
        self.profiles
            .iter()
            .filter_map(crate::mapping::profile)
            .flatten()
            .chain(self.mappings.iter().cloned())
            .collect()
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            source: Source::Mqtt,
            batch_max_readings: 5000,
            batch_linger_ms: 50,
            writers: 2,
            max_future_skew_s: 300,
            max_age_days: 3650,
            max_payload_bytes: 1 << 20,
            max_buffered_mb: 16,
            listen: "127.0.0.1:9464".into(),
            pseudonym_key: None,
            db_retry_max_backoff_s: 10,
            write_timeout_s: 60,
            mappings: Vec::new(),
            profiles: Vec::new(),
            sparkplug: Default::default(),
            homeassistant: Default::default(),
        }
    }
}

/// Alert rules, their evaluation and delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Rules file; the shipped defaults (`domain/rules/default.toml`) when unset.
    pub rules_file: Option<PathBuf>,
    /// Seconds between evaluations of the windowed rules.
    pub evaluate_interval_s: u64,
    /// Prometheus Alertmanager base URL (`http://127.0.0.1:9093`); alerts go
    /// to its API v2. Unset: no Alertmanager delivery.
    pub alertmanager_url: Option<String>,
    /// Generic webhooks, each receiving every alert transition as JSON.
    pub webhooks: Vec<WebhookConfig>,
    /// Longest pause between delivery retries.
    pub retry_max_backoff_s: u64,
    /// Seconds between re-sending open alerts to Alertmanager (which forgets
    /// alerts not re-sent within its `resolve_timeout`).
    pub resend_interval_s: u64,
    /// Address of the analytics job's `/metrics` and `/health`.
    pub listen: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    pub url: String,
    /// `estatemon` (default: the alert as JSON), `dingtalk` (custom robot),
    /// `feishu` (custom bot), `wecom` (group robot) or `slack` (incoming
    /// webhook): the body and signature as each channel documents them.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Signs what is sent: DingTalk's and Feishu's robot secret, or the
    /// HMAC key of estatemon's `X-Estatemon-Signature`. Shown as `***`.
    #[serde(default)]
    pub secret: Option<String>,
    /// `en` (default) or `zh`: the message's language.
    #[serde(default)]
    pub language: Option<String>,
    /// Messages a minute at most (default: the channel's documented limit,
    /// 20 for DingTalk and WeCom robots; none for `estatemon`). Beyond it a
    /// message waits for the outbox's retry, never dropped.
    #[serde(default)]
    pub rate_per_minute: Option<u32>,
    /// `telegram`: the chat (or group) the bot writes to.
    #[serde(default)]
    pub chat_id: Option<String>,
    /// `sms` (a Twilio-compatible gateway): the account (user of Basic
    /// authentication, whose password is `secret`), and the numbers.
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
}

/// See [`WebhookConfig::format`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    #[default]
    Estatemon,
    Dingtalk,
    Feishu,
    Wecom,
    Slack,
    /// Telegram Bot API `sendMessage` (url: `https://api.telegram.org/bot<token>/sendMessage`).
    Telegram,
    /// A Twilio-compatible SMS API (`…/Accounts/<account>/Messages.json`):
    /// form-encoded To, From, Body with Basic authentication.
    Sms,
    /// A Twilio-compatible voice call (`…/Accounts/<account>/Calls.json`):
    /// form-encoded To, From and the TwiML that reads the message aloud.
    Voice,
    /// E-mail over SMTP: `url = "smtp://host:port"` (a local relay; user
    /// `account` and password `secret` when it asks), `from`, and `to` for
    /// a broadcast receiver.
    Email,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            rules_file: None,
            evaluate_interval_s: 60,
            alertmanager_url: None,
            webhooks: Vec::new(),
            retry_max_backoff_s: 300,
            resend_interval_s: 60,
            listen: "127.0.0.1:9465".into(),
        }
    }
}

impl AlertsConfig {
    /// Receiver names, as the outbox records them: `alertmanager` and each
    /// webhook's name.
    pub fn receivers(&self) -> Vec<String> {
        self.alertmanager_url
            .iter()
            .map(|_| "alertmanager".to_owned())
            .chain(self.webhooks.iter().map(|w| w.name.clone()))
            .collect()
    }
}

/// Which storage engine to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageModeSetting {
    /// TimescaleDB when the extension can be created, plain PostgreSQL otherwise.
    Auto,
    Plain,
    Timescaledb,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub mode: StorageModeSetting,
    /// Partition / chunk width.
    pub chunk_days: u32,
    /// Raw readings older than this are dropped (0 keeps them forever);
    /// hourly and daily rollups are kept.
    pub retention_days: u32,
    /// TimescaleDB compresses chunks older than this.
    pub compress_after_days: u32,
    /// Plain mode: partitions created ahead of the current time.
    pub partitions_ahead: u32,
    /// How often the maintenance task refreshes rollups and partitions.
    pub maintenance_interval_s: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            mode: StorageModeSetting::Auto,
            chunk_days: 7,
            retention_days: 730,
            compress_after_days: 7,
            partitions_ahead: 2,
            maintenance_interval_s: 30,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Sites, buildings and devices loaded into the database at start.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulateConfig {
    /// Site definition; the shipped default site when unset.
    pub site_file: Option<PathBuf>,
    /// Seconds between steps in simulated time: gauges (power, flow,
    /// temperatures) are published every step.
    pub interval_s: u64,
    /// Seconds between cumulative register readings (kWh, m³), in
    /// simulated time; steps at least this long publish them every time.
    pub register_interval_s: u64,
    /// Where each run writes its ground truth (faults, retrofits, totals).
    pub truth_file: PathBuf,
    /// Simulated seconds per real second.
    pub speed: f64,
    pub seed: u64,
    pub client_id: String,
    /// How the simulated devices publish: `native` (estatemon's own JSON),
    /// `tasmota`, `shelly`, `zigbee2mqtt` (through the shipped profiles) or
    /// `sparkplug` (one Sparkplug B edge node per building).
    pub format: SimulateFormat,
}

/// The payload format of simulated devices (`simulate.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimulateFormat {
    #[default]
    Native,
    Tasmota,
    Shelly,
    Zigbee2mqtt,
    Sparkplug,
}

impl std::str::FromStr for SimulateFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<SimulateFormat, String> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
            format!("`{s}`: expected native, tasmota, shelly, zigbee2mqtt or sparkplug")
        })
    }
}

impl Default for SimulateConfig {
    fn default() -> Self {
        SimulateConfig {
            site_file: None,
            interval_s: 60,
            register_interval_s: 900,
            truth_file: PathBuf::from("estatemon-truth.json"),
            speed: 1.0,
            seed: 42,
            client_id: "estatemon-simulator".into(),
            format: SimulateFormat::Native,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `tracing` filter, e.g. `info` or `estatemon_ingest=debug,info`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

pub const ENV_PREFIX: &str = "ESTATEMON_";

impl Config {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                    path: path.to_owned(),
                    source,
                })?;
                Config::from_toml(&text, path, env)
            }
            None => {
                let config = apply_env(Config::default(), env)?;
                config.validate(None, None)?;
                Ok(config)
            }
        }
    }

    /// The configuration in `text` (read from `path`), then the
    /// environment; errors name the file, line and field. Never panics,
    /// whatever the text (property-tested).
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| locate_error(path, text, &e))?;
        let config = apply_env(config, env)?;
        config.validate(Some(path), Some(text))?;
        Ok(config)
    }

    /// Checks that go beyond types, naming the field and, when the value came
    /// from the file, its line.
    pub fn validate(&self, path: Option<&Path>, text: Option<&str>) -> Result<(), ConfigError> {
        let fail = |field: &str, message: String| {
            let key = field.rsplit('.').next().unwrap_or(field);
            ConfigError::Invalid {
                path: path
                    .map(Path::to_owned)
                    .unwrap_or_else(|| PathBuf::from("<defaults and environment>")),
                line: text.and_then(|t| line_of(t, &format!("{key} ="))),
                field: field.to_owned(),
                message,
            }
        };
        let brokers = self.mqtt.endpoints().map_err(|m| fail("mqtt.url", m))?;
        if brokers.len() > 1 && self.ingest.source != Source::Nats {
            return Err(fail(
                "mqtt.url",
                format!(
                    "names {} brokers: several are for the nodes of a NATS cluster \
                     (ingest.source = \"nats\"), which share one store of sessions; \
                     separate brokers each keep their own queue, and what one held \
                     would wait there unread",
                    brokers.len()
                ),
            ));
        }
        if self.ingest.write_timeout_s == 0 {
            return Err(fail("ingest.write_timeout_s", "must be above 0".into()));
        }
        if self.ingest.source == Source::Nats {
            self.nats.check().map_err(|(field, m)| fail(field, m))?;
            // Sparkplug and discovery configs come over ingest's MQTT
            // session to a NATS node (one view of each node's sequence,
            // retained STATE and configs); a stream that captured them
            // too would hand them over twice.
            let mut session = Vec::new();
            if self.ingest.sparkplug.enabled {
                session.push(format!("{}/#", crate::sparkplug::NAMESPACE));
            }
            if self.ingest.homeassistant.enabled {
                session.extend(crate::mapping::homeassistant::filters(
                    &self.ingest.homeassistant.prefix,
                ));
            }
            for s in &self.nats.subjects {
                let filter = crate::mapping::subject::to_filter(s);
                if let Some(f) = session
                    .iter()
                    .find(|f| crate::mapping::topic::intersect(&filter, f))
                {
                    return Err(fail(
                        "nats.subjects",
                        format!(
                            "`{s}` captures topics of {f}, which ingest reads over its MQTT \
                             session (Sparkplug, Home Assistant discovery): each message would \
                             be read twice; leave them out of the stream's subjects"
                        ),
                    ));
                }
            }
        }
        self.database
            .url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| {
                fail(
                    "database.url",
                    format!("`{}`: {e}", redact_url(&self.database.url)),
                )
            })?;
        if let Some(read) = &self.database.read_url {
            read.parse::<tokio_postgres::Config>()
                .map_err(|e| fail("database.read_url", format!("`{}`: {e}", redact_url(read))))?;
        }
        for (field, template) in [
            ("mqtt.topics.telemetry", &self.mqtt.topics.telemetry),
            ("mqtt.topics.events", &self.mqtt.topics.events),
            ("mqtt.topics.senml", &self.mqtt.topics.senml),
        ] {
            check_topic_template(template).map_err(|m| fail(field, m))?;
        }
        if let Some(group) = &self.mqtt.shared_group {
            if group.is_empty() || group.contains(['/', '+', '#']) {
                return Err(fail(
                    "mqtt.shared_group",
                    format!("`{group}` must be a non-empty name without / + #"),
                ));
            }
        }
        if self.mqtt.receive_maximum == 0 {
            return Err(fail("mqtt.receive_maximum", "must be at least 1".into()));
        }
        if self.ingest.batch_max_readings == 0 {
            return Err(fail(
                "ingest.batch_max_readings",
                "must be at least 1".into(),
            ));
        }
        if self.ingest.max_buffered_mb == 0 || self.ingest.max_buffered_mb > 4096 {
            return Err(fail(
                "ingest.max_buffered_mb",
                "must be between 1 and 4096".into(),
            ));
        }
        if self.ingest.writers == 0 || self.ingest.writers > 16 {
            return Err(fail("ingest.writers", "must be between 1 and 16".into()));
        }
        self.ingest
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| fail("ingest.listen", format!("`{}`: {e}", self.ingest.listen)))?;
        if self.storage.chunk_days == 0 {
            return Err(fail("storage.chunk_days", "must be at least 1".into()));
        }
        // Upper bounds: every span below becomes a time computation; none
        // may overflow one (a century is more than any of them needs).
        const CENTURY_DAYS: u64 = 36_500;
        const CENTURY_S: u64 = CENTURY_DAYS * 86_400;
        for (field, value, max) in [
            (
                "ingest.max_age_days",
                self.ingest.max_age_days,
                CENTURY_DAYS,
            ),
            (
                "ingest.max_future_skew_s",
                self.ingest.max_future_skew_s,
                CENTURY_S,
            ),
            (
                "storage.retention_days",
                self.storage.retention_days as u64,
                CENTURY_DAYS,
            ),
            ("storage.chunk_days", self.storage.chunk_days as u64, 366),
            (
                "storage.compress_after_days",
                self.storage.compress_after_days as u64,
                CENTURY_DAYS,
            ),
            (
                "storage.maintenance_interval_s",
                self.storage.maintenance_interval_s,
                CENTURY_S,
            ),
            (
                "alerts.evaluate_interval_s",
                self.alerts.evaluate_interval_s,
                CENTURY_S,
            ),
            ("simulate.interval_s", self.simulate.interval_s, CENTURY_S),
            (
                "simulate.register_interval_s",
                self.simulate.register_interval_s,
                CENTURY_S,
            ),
        ] {
            if value > max {
                return Err(fail(field, format!("{value} is over the limit of {max}")));
            }
        }
        if !self.simulate.speed.is_finite() || self.simulate.speed <= 0.0 {
            return Err(fail("simulate.speed", "must be positive and finite".into()));
        }
        if self.simulate.interval_s == 0 {
            return Err(fail("simulate.interval_s", "must be at least 1".into()));
        }
        if self.alerts.evaluate_interval_s == 0 {
            return Err(fail(
                "alerts.evaluate_interval_s",
                "must be at least 1".into(),
            ));
        }
        if let Some(url) = &self.alerts.alertmanager_url {
            check_http_url(url).map_err(|m| fail("alerts.alertmanager_url", m))?;
        }
        let mut names = std::collections::HashSet::new();
        for w in &self.alerts.webhooks {
            check_channel(w, true).map_err(|(f, m)| fail(&format!("alerts.webhooks.{f}"), m))?;
            if w.name.is_empty() || w.name == "alertmanager" || !names.insert(&w.name) {
                return Err(fail(
                    "alerts.webhooks.name",
                    format!(
                        "`{}` must be unique, non-empty and not `alertmanager`",
                        w.name
                    ),
                ));
            }
        }
        let mut formats = std::collections::HashSet::new();
        for c in &self.oncall.channels {
            check_channel(c, false).map_err(|(f, m)| fail(&format!("oncall.channel.{f}"), m))?;
            if matches!(c.format, WebhookFormat::Estatemon | WebhookFormat::Slack) {
                return Err(fail(
                    "oncall.channel.format",
                    format!(
                        "channel `{}`: a person is paged by sms, voice, email, wecom, dingtalk, feishu or telegram",
                        c.name
                    ),
                ));
            }
            if !formats.insert(c.format) {
                return Err(fail(
                    "oncall.channel.format",
                    format!("channel `{}`: one channel per format", c.name),
                ));
            }
        }
        if let Some(u) = &self.oncall.public_url {
            check_http_url(u).map_err(|m| fail("oncall.public_url", m))?;
        }
        for (i, h) in self.oncall.heartbeats.iter().enumerate() {
            if h.name.trim().is_empty()
                || self.oncall.heartbeats[..i].iter().any(|o| o.name == h.name)
            {
                return Err(fail(
                    "oncall.heartbeat.name",
                    format!("`{}` must be non-empty and listed once", h.name),
                ));
            }
            if h.interval_s == 0 {
                return Err(fail(
                    "oncall.heartbeat.interval_s",
                    format!("heartbeat `{}`: at least 1 second", h.name),
                ));
            }
            if !matches!(h.severity.as_str(), "emergency" | "ordinary" | "routine") {
                return Err(fail(
                    "oncall.heartbeat.severity",
                    format!(
                        "heartbeat `{}`: emergency, ordinary or routine, not `{}`",
                        h.name, h.severity
                    ),
                ));
            }
        }
        if self.oncall.tries_per_method == 0 || self.oncall.link_valid_h == 0 {
            return Err(fail(
                "oncall.tries_per_method",
                "tries_per_method and link_valid_h must be at least 1".into(),
            ));
        }
        self.alerts
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| fail("alerts.listen", format!("`{}`: {e}", self.alerts.listen)))?;
        for (i, s) in self.energy.suppliers.iter().enumerate() {
            if s.id.trim().is_empty() || self.energy.suppliers[..i].iter().any(|o| o.id == s.id) {
                return Err(fail(
                    "energy.supplier.id",
                    format!("`{}` must be non-empty and listed once", s.id),
                ));
            }
            if s.currency.trim().is_empty() {
                return Err(fail(
                    "energy.supplier.currency",
                    "must not be empty".to_owned(),
                ));
            }
            if let Some(t) = s.tariffs.iter().find(|t| t.site.is_some()) {
                return Err(fail(
                    "energy.supplier.tariff.site",
                    format!(
                        "supplier `{}`: a supplier's tariff applies to every site it supplies; \
                         put a site's own tariff under [[energy.tariffs]] (site = {:?})",
                        s.id,
                        t.site.as_deref().unwrap_or_default()
                    ),
                ));
            }
        }
        for t in self
            .energy
            .tariffs
            .iter()
            .chain(self.energy.suppliers.iter().flat_map(|s| &s.tariffs))
        {
            if !(t.price.is_finite() && t.price >= 0.0) {
                return Err(fail(
                    "energy.tariffs.price",
                    format!("{} must be ≥ 0", t.price),
                ));
            }
            for p in &t.periods {
                if p.from_hour >= p.to_hour || p.to_hour > 24 {
                    return Err(fail(
                        "energy.tariffs.period.to_hour",
                        format!(
                            "period `{}`: {}..{} must satisfy from_hour < to_hour ≤ 24",
                            p.name, p.from_hour, p.to_hour
                        ),
                    ));
                }
                if !(p.price.is_finite() && p.price >= 0.0) {
                    return Err(fail(
                        "energy.tariffs.period.price",
                        format!("{} must be ≥ 0", p.price),
                    ));
                }
            }
        }
        for p in &self.ingest.profiles {
            if !crate::mapping::PROFILES.iter().any(|(n, _)| *n == p.name) {
                return Err(fail(
                    "ingest.profile.name",
                    format!(
                        "`{}`: the shipped profiles are tasmota, shelly, zigbee2mqtt",
                        p.name
                    ),
                ));
            }
            for (field, set, owner) in [
                ("full_topic", p.full_topic.is_some(), "tasmota"),
                ("topic_prefix", p.topic_prefix.is_some(), "shelly"),
                ("base_topic", p.base_topic.is_some(), "zigbee2mqtt"),
            ] {
                if set && p.name != owner {
                    return Err(fail(
                        &format!("ingest.profile.{field}"),
                        format!(
                            "`{field}` is a setting of the {owner} profile, not {}",
                            p.name
                        ),
                    ));
                }
            }
            if let Some(f) = &p.full_topic {
                if !f.contains("%prefix%")
                    || !["%topic%", "%hostname%", "%id%"]
                        .iter()
                        .any(|t| f.contains(t))
                {
                    return Err(fail(
                        "ingest.profile.full_topic",
                        format!("`{f}` needs %prefix% and one of %topic%, %hostname%, %id%"),
                    ));
                }
            }
            if let Some(t) = &p.topic_prefix {
                if !t
                    .split('/')
                    .any(|l| matches!(l, "{device_id}" | "{device_id+}"))
                {
                    return Err(fail(
                        "ingest.profile.topic_prefix",
                        format!("`{t}` needs {{device_id}} or {{device_id+}} where the device's prefix is"),
                    ));
                }
            }
        }
        for m in self.ingest.all_mappings() {
            if let Err((field, message)) = m.check() {
                return Err(fail(
                    &format!("ingest.mapping.{field}"),
                    format!("mapping `{}`: {message}", m.name),
                ));
            }
        }
        for (i, site) in self.energy.sites.iter().enumerate() {
            if site.site.is_empty() || self.energy.sites[..i].iter().any(|s| s.site == site.site) {
                return Err(fail(
                    "energy.site.site",
                    format!("`{}` must be non-empty and listed once", site.site),
                ));
            }
            if site.currency.trim().is_empty() {
                return Err(fail("energy.site.currency", "must not be empty".to_owned()));
            }
        }
        for f in std::iter::once(&self.energy.emission_factors)
            .chain(
                self.energy
                    .sites
                    .iter()
                    .filter_map(|s| s.emission_factors.as_ref()),
            )
            .chain(self.energy.suppliers.iter().map(|s| &s.emission_factors))
        {
            for (field, v) in [
                ("electricity_kg_per_kwh", f.electricity_kg_per_kwh),
                ("water_kg_per_m3", f.water_kg_per_m3),
                ("gas_kg_per_m3", f.gas_kg_per_m3),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(fail(
                        &format!("energy.emission_factors.{field}"),
                        format!("{v} must be ≥ 0"),
                    ));
                }
            }
        }
        for t in &self.energy.targets {
            if !(0.0..1.0).contains(&t.saving) {
                return Err(fail(
                    "energy.targets.saving",
                    format!("{} must be a fraction in 0..1 (0.35 for 35 %)", t.saving),
                ));
            }
        }
        if self.energy.night_from_hour >= self.energy.night_to_hour
            || self.energy.night_to_hour > 24
        {
            return Err(fail(
                "energy.night_to_hour",
                "night_from_hour < night_to_hour ≤ 24 is required".into(),
            ));
        }
        self.api
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| fail("api.listen", format!("`{}`: {e}", self.api.listen)))?;
        if self.api.pool_size == 0 || self.api.pool_size > 256 {
            return Err(fail("api.pool_size", "must be between 1 and 256".into()));
        }
        if self.api.max_points < 10 {
            return Err(fail("api.max_points", "must be at least 10".into()));
        }
        if self.simulate.register_interval_s == 0 {
            return Err(fail(
                "simulate.register_interval_s",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// A receiver's URL and the fields its format needs (`to` only for a
/// broadcast receiver: a page goes to the person's own number, address or
/// chat). Err: the field and why.
fn check_channel(w: &WebhookConfig, broadcast: bool) -> Result<(), (&'static str, String)> {
    if w.format == WebhookFormat::Email {
        match url::Url::parse(&w.url) {
            Ok(u) if u.scheme() == "smtp" && u.host().is_some() => {}
            _ => {
                return Err((
                    "url",
                    format!(
                        "`{}`: an e-mail channel needs smtp://host:port",
                        redact_url(&w.url)
                    ),
                ))
            }
        }
    } else {
        check_http_url(&w.url).map_err(|m| ("url", m))?;
    }
    let phone = matches!(w.format, WebhookFormat::Sms | WebhookFormat::Voice);
    let missing = match w.format {
        WebhookFormat::Telegram if broadcast && w.chat_id.is_none() => Some("chat_id"),
        _ if phone && w.account.is_none() => Some("account"),
        _ if phone && w.secret.is_none() => Some("secret"),
        _ if (phone || w.format == WebhookFormat::Email) && w.from.is_none() => Some("from"),
        _ if (phone || w.format == WebhookFormat::Email) && broadcast && w.to.is_none() => {
            Some("to")
        }
        _ => None,
    };
    match missing {
        Some(field) => Err((
            field,
            format!("`{}` of this format needs `{field}`", w.name),
        )),
        None => Ok(()),
    }
}

fn check_http_url(url: &str) -> Result<(), String> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(format!("`{}` must be an http(s) URL", redact_url(url))),
        Err(e) => Err(format!("`{}`: {e}", redact_url(url))),
    }
}

/// Hides passwords in a URL (`user:pw@`, `?password=`), a comma-separated
/// list of them, a multi-host PostgreSQL URL, or a key=value connection
/// string (`password=…`) for logs and errors.
pub fn redact_url(url: &str) -> String {
    let urls = split_at_schemes(url);
    let shown = if urls.len() > 1 {
        urls.iter()
            .map(|u| redact_one(u))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        redact_one(url)
    };
    // Whatever the shape, no `password=` value survives.
    redact_password_params(&shown)
}

/// Every `password=<value>` (any case), the value up to `&`, `,`, `;` or
/// whitespace, as `password=***`.
fn redact_password_params(s: &str) -> String {
    const KEY: &str = "password=";
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    while let Some(found) = lower[at..].find(KEY) {
        let value = at + found + KEY.len();
        out.push_str(&s[at..value]);
        let end = s[value..]
            .find(|c: char| c == '&' || c == ',' || c == ';' || c.is_whitespace())
            .map_or(s.len(), |e| value + e);
        if end > value {
            out.push_str("***");
        }
        at = end;
    }
    out.push_str(&s[at..]);
    out
}

/// `s` split at each comma followed by `scheme://`.
fn split_at_schemes(s: &str) -> Vec<&str> {
    let starts_url = |t: &str| {
        t.split_once("://").is_some_and(|(scheme, _)| {
            let mut c = scheme.chars();
            c.next().is_some_and(|f| f.is_ascii_alphabetic())
                && c.all(|ch| ch.is_ascii_alphanumeric() || "+.-".contains(ch))
        })
    };
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in s.match_indices(',') {
        if starts_url(s[i + 1..].trim_start()) {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// A URL the `url` crate cannot parse (`postgres://u:pw@h1:5432,h2:5432/db`,
/// or a password with a raw `/` or `@`): everything between the first `:`
/// of the userinfo and its last `@` (before any `?`), and any `password=`
/// query value, become `***`.
fn redact_unparsed(s: &str) -> String {
    let mut out = s.to_owned();
    if let Some(i) = s.find("://") {
        let rest = &s[i + 3..];
        let authority = rest.split('?').next().unwrap_or(rest);
        if let Some(at) = authority.rfind('@') {
            let userinfo = &rest[..at];
            if let Some(c) = userinfo.find(':') {
                out = format!("{}{}:***{}", &s[..i + 3], &userinfo[..c], &rest[at..]);
            }
        }
    }
    if let Some((base, query)) = out.clone().split_once('?') {
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{base}?{}", query.join("&"));
    }
    out
}

fn redact_one(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if u.query_pairs()
                .any(|(k, _)| k.eq_ignore_ascii_case("password"))
            {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k.eq_ignore_ascii_case("password") {
                            "***".into()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) if url.contains("://") => redact_unparsed(url),
        Err(_) => url
            .split_whitespace()
            .map(|part| match part.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => part.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// A topic template is valid when placeholders fill whole levels, `{device_id}`
/// appears once, and no MQTT wildcard is used.
pub fn check_topic_template(template: &str) -> Result<(), String> {
    let mut device = 0;
    for level in template.split('/') {
        match level {
            "{device_id}" => device += 1,
            "{site}" => {}
            l if l.contains(['{', '}']) => {
                return Err(format!(
                    "`{template}`: `{l}` — placeholders are {{site}} and {{device_id}} and must fill a whole level"
                ))
            }
            l if l.contains(['+', '#']) => {
                return Err(format!("`{template}`: wildcards are not allowed in templates"))
            }
            _ => {}
        }
    }
    if device != 1 {
        return Err(format!(
            "`{template}` must contain {{device_id}} exactly once"
        ));
    }
    Ok(())
}

/// First 1-based line containing `needle`.
pub fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// Turns a TOML error into one that names file, line, column and field.
pub fn locate_error(path: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    let offset = err.span().map(|s| s.start).unwrap_or(0).min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = offset - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        field: inline_key(field_at(text, line), text.lines().nth(line - 1), column),
        message: err.message().trim().to_owned(),
    }
}

/// Inside an inline table (`select = { kind = "lifts" }`), the key the
/// error's column points at is appended: `rule.select.kind`.
fn inline_key(field: String, line: Option<&str>, column: usize) -> String {
    let Some(line) = line else { return field };
    let before: String = line.chars().take(column.saturating_sub(1)).collect();
    let Some(open) = before.find('{') else {
        return field;
    };
    let inner = &before[open + 1..];
    let key = inner
        .rsplit(',')
        .next()
        .and_then(|part| part.split_once('='))
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.contains(['{', '}', '[']));
    match key {
        Some(k) => format!("{field}.{k}"),
        None => field,
    }
}

/// Dotted path of the key on `line` (1-based), from the nearest table header.
fn field_at(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let here = lines
        .get(line.saturating_sub(1))
        .copied()
        .unwrap_or("")
        .trim();
    let mut section = String::new();
    for l in lines.iter().take(line.saturating_sub(1)).rev() {
        let l = l.trim();
        if l.starts_with('[') {
            section = l.trim_matches(|c| c == '[' || c == ']').trim().to_owned();
            break;
        }
    }
    let key = here
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .unwrap_or_default();
    if here.starts_with('[') {
        return here
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_owned();
    }
    match (section.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => section,
        (false, false) => format!("{section}.{key}"),
    }
}

/// Overlays `ESTATEMON_*` variables on the configuration.
fn apply_env(
    config: Config,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut tree = toml::Value::try_from(&config).expect("config serialises");
    let mut applied = Vec::new();
    for (var, raw) in env {
        let Some(name) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let name = name.to_ascii_lowercase();
        let Some(path) = env_path(&tree, &name) else {
            // Test harnesses and wrappers use ESTATEMON_* names of their own.
            tracing::debug!(%var, "environment variable names no configuration field");
            continue;
        };
        set_path(&mut tree, &path, &raw);
        applied.push((var, path.join(".")));
    }
    let text = toml::to_string(&tree).expect("config tree serialises");
    toml::from_str(&text).map_err(|e: toml::de::Error| {
        let field = e.message().to_owned();
        let var = applied
            .iter()
            .find(|(_, path)| text_mentions(&e, &text, path))
            .map(|(v, _)| v.clone())
            .unwrap_or_else(|| {
                applied
                    .iter()
                    .map(|(v, _)| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            });
        ConfigError::Env {
            var,
            message: field,
        }
    })
}

fn text_mentions(err: &toml::de::Error, text: &str, path: &str) -> bool {
    let Some(span) = err.span() else { return false };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    field_at(text, line) == path
}

/// Resolves `database_url` to `["database", "url"]` against the config tree.
fn env_path(tree: &toml::Value, name: &str) -> Option<Vec<String>> {
    if name.contains("__") {
        let path: Vec<String> = name.split("__").map(str::to_owned).collect();
        return Some(path);
    }
    let table = tree.as_table()?;
    if table.contains_key(name) && !table[name].is_table() {
        return Some(vec![name.to_owned()]);
    }
    for (key, value) in table {
        if let Some(rest) = name.strip_prefix(&format!("{key}_")) {
            if value.is_table() {
                if let Some(mut tail) = env_path(value, rest) {
                    tail.insert(0, key.clone());
                    return Some(tail);
                }
            }
        }
    }
    // Option fields that are unset do not appear in the tree: accept a leaf
    // under a known section and let deserialisation judge it.
    let (section, rest) = name.split_once('_')?;
    table
        .get(section)
        .filter(|v| v.is_table())
        .map(|_| vec![section.to_owned(), rest.to_owned()])
}

fn set_path(tree: &mut toml::Value, path: &[String], raw: &str) {
    let mut node = tree;
    for key in &path[..path.len() - 1] {
        let table = node.as_table_mut().expect("path walks tables");
        node = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    let leaf = path.last().expect("non-empty path").clone();
    let table = node.as_table_mut().expect("leaf parent is a table");
    let typed = match table.get(&leaf) {
        // Unset optional fields are all text (keys, paths, group names): a
        // numeric secret must not become an integer and be echoed in an error.
        Some(toml::Value::String(_)) | None => toml::Value::String(raw.to_owned()),
        _ => parse_scalar(raw),
    };
    table.insert(leaf, typed);
}

fn parse_scalar(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(f) = raw.parse::<f64>() {
        toml::Value::Float(f)
    } else if let Ok(b) = raw.parse::<bool>() {
        toml::Value::Boolean(b)
    } else {
        toml::Value::String(raw.to_owned())
    }
}

#[cfg(test)]
mod tests;
