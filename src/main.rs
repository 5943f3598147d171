//! `estatemon`: one binary, one subcommand per service.
//!
//! Each subcommand is a thin shell: it loads the configuration, sets up
//! logging and calls into the crate that owns the job (`estatemon-ingest`,
//! `estatemon-simulators`, …). Exit codes say what went wrong so scripts and
//! supervisors can tell a typo from an outage:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | failure at run time |
//! | 2 | bad command line |
//! | 3 | bad configuration (file, line and field are printed) |
//! | 4 | PostgreSQL unreachable or refused |
//! | 5 | MQTT broker unreachable |

mod alerts;
mod api;
mod backfill;
mod bench;
mod broker;
mod consumption;
mod dead_letters;
mod demo;
mod import;
mod inspection;
mod lifts;
mod mapping;
mod oncall;
mod progress;
mod report;
mod simulate;
mod transport;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use estatemon_domain::config::{Config, ConfigError, LogFormat};
use estatemon_domain::device::Registry;
use estatemon_domain::schema::{self, SchemaError};
use estatemon_ingest::pipeline::IngestError;

#[derive(Parser)]
#[command(
    name = "estatemon",
    version,
    about = "Building telemetry for property management: MQTT ingest into TimescaleDB/PostgreSQL",
    after_help = "Configuration: --config FILE (see estatemon.example.toml), overridden by \
                  ESTATEMON_* environment variables such as ESTATEMON_DATABASE_URL and ESTATEMON_MQTT_URL."
)]
struct Cli {
    /// Configuration file (TOML). Defaults apply without one.
    #[arg(
        long,
        short,
        global = true,
        env = "ESTATEMON_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,
    /// Log format (overrides log.format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system on this machine: simulated site → MQTT → ingest → database.
    ///
    /// Uses the broker at mqtt.url if one answers, otherwise starts an embedded
    /// one there; creates and migrates the database at database.url.
    Demo(demo::DemoArgs),
    /// Take readings and events from MQTT and store them (runs until SIGINT/SIGTERM).
    Ingest,
    /// Evaluate alert rules and deliver alerts (runs until SIGINT/SIGTERM),
    /// or evaluate once at a given time.
    Analytics(alerts::AnalyticsArgs),
    /// Check alert rule files.
    #[command(subcommand)]
    Rules(alerts::RulesCommand),
    /// List and acknowledge alerts.
    #[command(subcommand)]
    Alerts(alerts::AlertsCommand),
    /// The weekly access report of a site's gates (denied bursts, forced and
    /// held-open doors, expired cards, unusual hours), pseudonyms only.
    AccessReport(alerts::AccessReportArgs),
    /// The quarterly energy report of a site (HTML, PDF, CSV, JSON), stored
    /// in the database; --list the stored ones; `sign` a version.
    Report(report::ReportArgs),
    /// Measured savings of a site's retrofits (ASHRAE 14 baseline models).
    Savings(report::SavingsArgs),
    /// Import a meter's CSV export (interval use, register reads or a
    /// sensor's values) for a registered device: validated and stored as
    /// MQTT data is, with dead letters by line number.
    Import(import::ImportArgs),
    /// Technicians' inspections: record one (checklist results, readings),
    /// or show a site's compliance with its inspection cycles.
    #[command(subcommand)]
    Inspection(inspection::InspectionCommand),
    /// Lifts: statistics, entrapments and lift replacements of a site.
    #[command(subcommand)]
    Lifts(lifts::LiftsCommand),
    /// On-call: who is on call now and next, a team's shifts, a person's
    /// shifts as an iCalendar feed, a check of the roster file.
    #[command(subcommand)]
    Oncall(oncall::OncallCommand),
    /// Device payload mappings: test one message against them, or show a
    /// shipped profile (tasmota, shelly, zigbee2mqtt).
    #[command(subcommand)]
    Mapping(mapping::MappingCommand),
    /// Serve the HTTP API (REST for Grafana and operators, OpenAPI, /metrics)
    /// until SIGINT/SIGTERM.
    Api,
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(api::TokenCommand),
    /// Simulate a site: live to MQTT, history (backfill), or synthetic load.
    #[command(subcommand)]
    Simulate(simulate::SimulateCommand),
    /// Create the database if needed and apply schema migrations.
    Migrate,
    /// Create or update the read-only role Grafana's PostgreSQL datasource
    /// uses for raw SQL panels (SELECT on the telemetry tables only; every
    /// session read-only). Re-run after upgrades.
    DbReader(DbReaderArgs),
    /// Check or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Consumption of one register per interval, with the corrections applied
    /// (resets, rollovers, gaps, spikes).
    Consumption(consumption::ConsumptionArgs),
    /// Manage the device registry (sites, buildings, devices).
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Benchmarks against the real broker and database.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The NATS JetStream transport (`ingest.source = "nats"`): set up or
    /// check the stream and consumer, show their state.
    #[command(subcommand)]
    Transport(transport::TransportCommand),
    /// Messages ingest refused: run them through ingest again once what
    /// refused them (a mapping, a profile, a limit) is fixed.
    #[command(subcommand)]
    DeadLetters(dead_letters::DeadLettersCommand),
}

#[derive(clap::Args)]
struct DbReaderArgs {
    /// Role name (lower-case letters, digits, _).
    #[arg(long, default_value = "grafana_reader")]
    role: String,
    /// Environment variable holding the role's password (not set: the
    /// password is left as it is; a new role then cannot log in with one).
    #[arg(long, value_name = "VAR", default_value = "ESTATEMON_READER_PASSWORD")]
    password_env: String,
    /// Statement timeout of the role's sessions, seconds.
    #[arg(long, default_value_t = 30)]
    statement_timeout_s: u32,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load the file and environment, and report the first problem (exit 3) or OK.
    Check,
    /// Print the effective configuration (file + environment + defaults) as TOML.
    Show,
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Load sites, buildings and devices from a registry file into the database.
    Load {
        /// Registry file, e.g. simulators/sites/harbour-view.toml.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Ingest throughput, publish→commit latency and peak memory, against
    /// the configured broker and a fresh database.
    Ingest(bench::BenchArgs),
    /// How fast the simulator generates history (no broker, no database):
    /// readings and events per second, on one thread per core.
    Simulate(bench::SimulateBenchArgs),
    /// Evaluation time of the alert rules per cycle for a synthetic estate
    /// (a day of history backfilled into a fresh database first).
    Alerts(bench::AlertsBenchArgs),
    /// `analytics replay` over a quarter (--days) of backfilled history:
    /// wall time, steps per second and peak memory, against the floors
    /// (the shipped site under a minute, 1,000 devices under ten).
    Replay(bench::replay::ReplayBenchArgs),
    /// Quarterly report time and peak memory for a synthetic estate of N
    /// meters (15-minute registers for the quarter, a year of hourly history).
    Report(bench::report::ReportBenchArgs),
    /// Rollup refresh time after late data, API latency (a year of hourly
    /// data for a building) and throughput of mixed panel queries under wrk,
    /// against a real `estatemon api`.
    Api(bench::api::ApiBenchArgs),
    /// On-call: one escalation pass over 10,000 open alerts across 50
    /// schedules (first, steady and second-step passes), and page delivery
    /// to a local SMS receiver.
    Oncall(bench::oncall::OncallBenchArgs),
    /// A portfolio (200 sites, 20,000 meters, two years of 15-minute data)
    /// in a private primary and standby, on plain PostgreSQL and on
    /// TimescaleDB with compression: bytes per reading, a year-long
    /// panel's p95, the API mix from primary and standby, every site's
    /// quarterly report and one alert cycle.
    Portfolio(bench::portfolio::PortfolioBenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(3);
        }
    };
    init_logging(&config, cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(dispatch(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = exit_code(&e);
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn init_logging(config: &Config, format: Option<LogFormatArg>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.filter));
    let json = match format {
        Some(LogFormatArg::Json) => true,
        Some(LogFormatArg::Text) => false,
        None => config.log.format == LogFormat::Json,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_logs(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything
/// non-empty (<https://no-color.org>): a log file or a pipe gets plain text.
fn colour_logs(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Broker unreachable at start (where waiting would not help the user).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BrokerUnreachable(pub String);

fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<ConfigError>().is_some() {
            return 3;
        }
        let schema = cause.downcast_ref::<SchemaError>().or_else(|| {
            match cause.downcast_ref::<IngestError>() {
                Some(IngestError::Schema(s)) => Some(s),
                _ => None,
            }
        });
        if let Some(SchemaError::Unreachable { .. } | SchemaError::BadUrl { .. }) = schema {
            return 4;
        }
        if let Some(SchemaError::Invalid(_)) = schema {
            return 2;
        }
        if matches!(
            cause.downcast_ref::<IngestError>(),
            Some(IngestError::Config(_))
        ) {
            return 3;
        }
        if cause.downcast_ref::<BrokerUnreachable>().is_some() {
            return 5;
        }
        if cause.downcast_ref::<import::ImportRefused>().is_some() {
            return 2;
        }
        if cause
            .downcast_ref::<estatemon_analytics::report::signoff::SignError>()
            .is_some_and(|e| {
                !matches!(e, estatemon_analytics::report::signoff::SignError::Other(_))
            })
        {
            return 2;
        }
    }
    1
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Demo(args) => demo::run(config, args).await,
        Command::Ingest => Ok(estatemon_ingest::run(config).await?),
        Command::Simulate(cmd) => simulate::run(config, cmd).await,
        Command::Analytics(args) => alerts::analytics(config, args).await,
        Command::Rules(cmd) => alerts::rules(config, cmd),
        Command::Alerts(cmd) => alerts::alerts(config, cmd).await,
        Command::AccessReport(args) => alerts::access_report(config, args).await,
        Command::Report(args) => report::run(config, args).await,
        Command::Api => api::serve(config).await,
        Command::Token(cmd) => api::token(config, cmd).await,
        Command::Savings(args) => report::savings(config, args).await,
        Command::Import(args) => import::run(config, args).await,
        Command::Mapping(cmd) => mapping::run(&config, cmd),
        Command::Inspection(cmd) => inspection::run(&config, cmd).await,
        Command::Lifts(cmd) => lifts::run(&config, cmd).await,
        Command::Oncall(cmd) => oncall::run(&config, cmd).await,
        Command::Transport(cmd) => transport::run(&config, cmd).await,
        Command::DeadLetters(cmd) => dead_letters::run(&config, cmd).await,
        Command::Migrate => migrate(&config).await,
        Command::DbReader(args) => {
            let client = prepare_database(&config).await?;
            let password = std::env::var(&args.password_env)
                .ok()
                .filter(|p| !p.is_empty());
            let granted = schema::reader::grant(
                &client,
                &args.role,
                password.as_deref(),
                args.statement_timeout_s,
            )
            .await?;
            println!(
                "role {} {}: read-only sessions, SELECT on {}{}",
                args.role,
                if granted.created {
                    "created"
                } else {
                    "updated"
                },
                granted.relations.join(", "),
                if password.is_some() {
                    format!("; password set from {}", args.password_env)
                } else {
                    format!("; password unchanged ({} not set)", args.password_env)
                }
            );
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            println!("configuration OK");
            Ok(())
        }
        Command::Config(ConfigCommand::Show) => {
            let mut shown = config.clone();
            shown.database.url = estatemon_domain::config::redact_url(&shown.database.url);
            shown.mqtt.url = estatemon_domain::config::redact_url(&shown.mqtt.url);
            shown.nats.url = estatemon_domain::config::redact_url(&shown.nats.url);
            shown.database.read_url = shown
                .database
                .read_url
                .as_deref()
                .map(estatemon_domain::config::redact_url);
            for hook in &mut shown.alerts.webhooks {
                if hook.secret.is_some() {
                    hook.secret = Some("***".into());
                }
            }
            if shown.ingest.pseudonym_key.is_some() {
                shown.ingest.pseudonym_key = Some("***".into());
            }
            print!(
                "{}",
                toml::to_string_pretty(&shown).context("serialising configuration")?
            );
            Ok(())
        }
        Command::Registry(RegistryCommand::Load { file }) => {
            let registry = Registry::load(&file)?;
            let mut client = prepare_database(&config).await?;
            schema::registry::upsert(&mut client, &registry).await?;
            println!(
                "loaded {} site(s) and {} device(s) from {}",
                registry.sites.len(),
                registry.devices.len(),
                file.display()
            );
            Ok(())
        }
        Command::Bench(BenchCommand::Ingest(args)) => bench::run(config, args).await,
        Command::Bench(BenchCommand::Simulate(args)) => bench::simulate(config, args),
        Command::Bench(BenchCommand::Alerts(args)) => bench::alerts(config, args).await,
        Command::Bench(BenchCommand::Replay(args)) => bench::replay::run(config, args).await,
        Command::Bench(BenchCommand::Report(args)) => bench::report::run(config, args).await,
        Command::Bench(BenchCommand::Api(args)) => bench::api::run(config, args).await,
        Command::Bench(BenchCommand::Oncall(args)) => bench::oncall::run(config, args).await,
        Command::Bench(BenchCommand::Portfolio(args)) => bench::portfolio::run(config, args).await,
        Command::Consumption(args) => consumption::run(config, args).await,
    }
}

/// Creates (if allowed) and migrates the database; returns a connection.
pub async fn prepare_database(config: &Config) -> Result<tokio_postgres::Client, SchemaError> {
    Ok(schema::prepare(&config.database, &config.storage).await?.0)
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let (_client, report) = schema::prepare(&config.database, &config.storage).await?;
    println!("storage mode: {} ({})", report.mode.as_str(), report.reason);
    println!("schema version: {}", report.schema_version);
    if report.applied.is_empty() {
        println!("no pending migrations");
    }
    for m in &report.applied {
        println!("applied {m}");
    }
    Ok(())
}
