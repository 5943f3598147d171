//! `estatemon analytics`, `estatemon rules` and `estatemon alerts`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use estatemon_domain::config::Config;
use estatemon_domain::config::ConfigError;
use estatemon_domain::rules::RuleSet;
use estatemon_domain::schema;

#[derive(Args)]
pub struct AnalyticsArgs {
    #[command(subcommand)]
    command: Option<AnalyticsCommand>,
}

#[derive(Subcommand)]
enum AnalyticsCommand {
    /// Evaluate every rule over the window ending at --at (default now),
    /// apply the transitions and print what changed. Notifications are
    /// queued for the running notifiers, not sent.
    Evaluate {
        /// RFC 3339 time to evaluate at, e.g. 2026-06-08T02:00:00Z.
        #[arg(long)]
        at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Backtest: evaluate the rules at every --step from --from to --to over
    /// stored history, recording the alerts they would have raised (with
    /// their data-time start and end) without paging anyone.
    Replay {
        /// RFC 3339 or a span before now (`7d`).
        #[arg(long)]
        from: String,
        /// RFC 3339 or a span before now; now when unset.
        #[arg(long)]
        to: Option<String>,
        /// Time between evaluations, e.g. 1m or 5m.
        #[arg(long, default_value = "1m")]
        step: String,
        /// Leave the alerts still firing at --to open. By default a replay
        /// of the past (--to more than a day ago, beyond what the live job
        /// reads) resolves them at --to, marked `closed_by=replay_end`:
        /// nothing evaluates them after, and an alert left open would be
        /// drawn from its start to now.
        #[arg(long)]
        leave_open: bool,
    },
}

#[derive(Subcommand)]
pub enum RulesCommand {
    /// Validate a rules file (the configured or shipped one without FILE)
    /// and list its rules; exit 3 with file, line and field on an error,
    /// and exit 3 when the file has no rule for one of the emergencies
    /// (entrapment, forced door, fire-main pressure) unless
    /// --waive-emergencies says that is intended.
    Check {
        file: Option<PathBuf>,
        /// Accept a file that does not page for every emergency.
        #[arg(long)]
        waive_emergencies: bool,
    },
    /// Print the shipped default rules (a starting point for your own file).
    Defaults,
}

#[derive(Subcommand)]
pub enum AlertsCommand {
    /// Alerts, newest first.
    List {
        /// Only alerts not yet resolved.
        #[arg(long)]
        open: bool,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Silence matching alerts for a while (a lift under maintenance):
    /// they are recorded but do not page. Alerts still open when it ends
    /// page then. Emergencies are held only when a matcher names their
    /// rule (alertname=lift_entrapment).
    Silence {
        /// label=value, e.g. device=hv-a-lift-1 or alertname=lift_fault;
        /// repeat for several (all must match).
        #[arg(long = "match", value_name = "LABEL=VALUE", required = true)]
        matchers: Vec<String>,
        /// How long, e.g. 2h.
        #[arg(long = "for")]
        duration: String,
        /// Who asks (recorded).
        #[arg(long)]
        by: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Silences in force.
    Silences,
    /// End a silence now.
    Unsilence { id: i64 },
    /// Acknowledge a firing alert (stops its escalation).
    Ack {
        id: i64,
        /// Who acknowledges (recorded for the report).
        #[arg(long)]
        by: String,
    },
}

pub async fn analytics(config: Config, args: AnalyticsArgs) -> anyhow::Result<()> {
    match args.command {
        None => estatemon_analytics::run(config).await,
        Some(AnalyticsCommand::Evaluate { at }) => {
            let at = at.unwrap_or_else(chrono::Utc::now);
            let (report, migration) = estatemon_analytics::job::evaluate_once(&config, at).await?;
            println!(
                "evaluated at {at} ({} mode): {}",
                migration.mode.as_str(),
                serde_json::to_string(&report)?
            );
            Ok(())
        }
        Some(AnalyticsCommand::Replay {
            from,
            to,
            step,
            leave_open,
        }) => replay(config, from, to, step, leave_open).await,
    }
}

async fn replay(
    config: Config,
    from: String,
    to: Option<String>,
    step: String,
    leave_open: bool,
) -> anyhow::Result<()> {
    let from = crate::simulate::parse_when(&from)?;
    let to = match to {
        Some(t) => crate::simulate::parse_when(&t)?,
        None => chrono::Utc::now(),
    };
    let step =
        estatemon_domain::rules::Span::parse(&step).map_err(|e| anyhow::anyhow!("--step: {e}"))?;
    anyhow::ensure!(step.seconds() > 0, "--step must be positive");
    anyhow::ensure!(from < to, "--from must be before --to");
    let (mut client, migration) = schema::prepare(&config.database, &config.storage).await?;
    let (rules, origin) =
        schema::rule_sets::active(&client, config.alerts.rules_file.as_deref()).await?;
    tracing::info!(from = %origin, rules = rules.rules.len(), "replaying with these rules");
    let steps = estatemon_analytics::replay::step_count(from, to, step.chrono());
    let bar = crate::progress::bar(
        steps,
        "{msg} [{bar:40}] {pos}/{len} steps {per_sec} eta {eta}",
    );
    bar.set_message(format!("replaying {} rules", rules.rules.len()));
    let started = std::time::Instant::now();
    // History pages no one: no receivers.
    let report =
        estatemon_analytics::replay::replay(&mut client, &rules, from, to, step.chrono(), |done| {
            if done % 64 == 0 {
                bar.set_position(done)
            }
        })
        .await?;
    bar.finish_and_clear();
    tracing::info!(
        read_s = report.load_s,
        evaluate_s = report.evaluate_s,
        apply_s = report.apply_s,
        readings = report.readings,
        events = report.events,
        "replay timings"
    );
    // A replay of the past: what still fires at its end is evaluated by
    // nothing after it (the live job reads the last hours only), so it is
    // resolved at the end of what was evaluated, and says so.
    let closed = if !leave_open && to < chrono::Utc::now() - chrono::Duration::days(1) {
        schema::alerts::close_left_by_replay(&client, to).await?
    } else {
        0
    };
    println!(
        "replayed {} steps from {from} to {to} in {:.1} s ({} mode): {} alerts opened, {} resolved, {} still open",
        report.steps,
        started.elapsed().as_secs_f64(),
        migration.mode.as_str(),
        report.opened,
        report.resolved,
        report.open_after - closed as usize
    );
    if closed > 0 {
        println!(
            "{closed} alerts still firing at {to} resolved there (closed_by=replay_end): nothing evaluates them after a replay of the past; --leave-open keeps them open"
        );
    }
    Ok(())
}

pub fn rules(config: Config, command: RulesCommand) -> anyhow::Result<()> {
    match command {
        RulesCommand::Check {
            file,
            waive_emergencies,
        } => {
            let path = file.or(config.alerts.rules_file);
            let set = RuleSet::load(path.as_deref())?;
            if let Some(message) = set.missing_emergencies_message() {
                let shown = path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("<shipped rules>"));
                if !waive_emergencies {
                    return Err(ConfigError::Invalid {
                        path: shown,
                        line: None,
                        field: "rule".into(),
                        message: format!("{message} (--waive-emergencies)"),
                    }
                    .into());
                }
                eprintln!("warning: {}: {message}", shown.display());
            }
            let origin = path
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "shipped default rules".into());
            println!("{origin}: {} rules OK", set.rules.len());
            for r in &set.rules {
                println!(
                    "  {:<32} {:<11} {:<12}{}",
                    r.name,
                    r.severity.as_str(),
                    r.condition.kind(),
                    if r.immediate { " immediate" } else { "" }
                );
            }
            Ok(())
        }
        RulesCommand::Defaults => {
            print!("{}", estatemon_domain::rules::DEFAULT_RULES);
            Ok(())
        }
    }
}

pub async fn alerts(config: Config, command: AlertsCommand) -> anyhow::Result<()> {
    let client = schema::connect(&config.database).await?;
    match command {
        AlertsCommand::List { open, limit } => {
            let rows = client
                .query(
                    "SELECT id, state, severity, rule, subject, started_at, resolved_at, acknowledged_by
                       FROM alerts WHERE NOT $1 OR state <> 'resolved'
                      ORDER BY started_at DESC, id DESC LIMIT $2",
                    &[&open, &limit],
                )
                .await
                .context("listing alerts")?;
            for r in &rows {
                let resolved: Option<chrono::DateTime<chrono::Utc>> = r.get(6);
                let by: Option<String> = r.get(7);
                println!(
                    "{:>6} {:<12} {:<9} {:<28} {:<24} {} → {}{}",
                    r.get::<_, i64>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, String>(3),
                    r.get::<_, String>(4),
                    r.get::<_, chrono::DateTime<chrono::Utc>>(5).to_rfc3339(),
                    resolved
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "open".into()),
                    by.map(|b| format!(" (ack {b})")).unwrap_or_default(),
                );
            }
            Ok(())
        }
        AlertsCommand::Silence {
            matchers,
            duration,
            by,
            comment,
        } => {
            let span = estatemon_domain::rules::Span::parse(&duration)
                .map_err(|e| anyhow::anyhow!("--for: {e}"))?;
            anyhow::ensure!(span.seconds() > 0, "--for must be positive");
            let mut set = std::collections::BTreeMap::new();
            for m in &matchers {
                let (k, v) = m
                    .split_once('=')
                    .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                    .ok_or_else(|| anyhow::anyhow!("--match `{m}`: expected LABEL=VALUE"))?;
                anyhow::ensure!(
                    schema::alerts::SILENCE_LABELS.contains(&k),
                    "--match `{m}`: label must be one of {}",
                    schema::alerts::SILENCE_LABELS.join(", ")
                );
                set.insert(k.to_owned(), v.to_owned());
            }
            let now = chrono::Utc::now();
            let id = schema::alerts::create_silence(
                &client,
                &set,
                now,
                now + span.chrono(),
                &by,
                &comment,
            )
            .await?;
            println!(
                "silence {id}: {set:?} until {}",
                (now + span.chrono()).to_rfc3339()
            );
            Ok(())
        }
        AlertsCommand::Silences => {
            let rows = client
                .query(
                    "SELECT id, matchers::text, starts_at, ends_at, created_by, comment FROM silences
                      WHERE ends_at > now() ORDER BY ends_at",
                    &[],
                )
                .await?;
            for r in &rows {
                println!(
                    "{:>5} {} {} → {} by {} {}",
                    r.get::<_, i64>(0),
                    r.get::<_, String>(1),
                    r.get::<_, chrono::DateTime<chrono::Utc>>(2).to_rfc3339(),
                    r.get::<_, chrono::DateTime<chrono::Utc>>(3).to_rfc3339(),
                    r.get::<_, String>(4),
                    r.get::<_, String>(5),
                );
            }
            Ok(())
        }
        AlertsCommand::Unsilence { id } => {
            anyhow::ensure!(
                schema::alerts::end_silence(&client, id).await?,
                "silence {id} is not in force"
            );
            println!("silence {id} ended");
            Ok(())
        }
        AlertsCommand::Ack { id, by } => {
            if schema::alerts::acknowledge(&client, id, &by).await? {
                println!("alert {id} acknowledged by {by}");
                Ok(())
            } else {
                anyhow::bail!(
                    "alert {id} is not firing (unknown, already acknowledged or resolved)"
                )
            }
        }
    }
}

#[derive(Args)]
pub struct AccessReportArgs {
    /// Site id from the registry.
    #[arg(long)]
    site: String,
    /// ISO week in the site's time zone, e.g. 2026-W23 (default: last week).
    #[arg(long)]
    week: Option<String>,
    #[arg(long, value_enum, default_value = "markdown")]
    format: ReportFormat,
    /// Write here instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Markdown,
    Json,
}

pub async fn access_report(config: Config, args: AccessReportArgs) -> anyhow::Result<()> {
    use estatemon_analytics::access_report as report;
    let client = schema::connect(&config.database).await?;
    let week = match args.week {
        Some(w) => w,
        None => {
            let tz: chrono_tz::Tz = client
                .query_opt(
                    "SELECT time_zone FROM sites WHERE site_id = $1",
                    &[&args.site],
                )
                .await?
                .ok_or_else(|| anyhow::anyhow!("no site `{}` in the registry", args.site))?
                .get::<_, String>(0)
                .parse()
                .map_err(|e| anyhow::anyhow!("time zone: {e}"))?;
            report::last_week(chrono::Utc::now(), tz)
        }
    };
    let (tz, bounds, events) = report::load(&client, &args.site, &week).await?;
    let r = report::build(
        &args.site,
        tz,
        &week,
        bounds,
        &events,
        report::Thresholds::default(),
    )?;
    let text = match args.format {
        ReportFormat::Markdown => report::markdown(&r),
        ReportFormat::Json => serde_json::to_string_pretty(&r)? + "\n",
    };
    match args.out {
        Some(path) => {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "access report {} {} written to {}",
                r.site,
                r.week,
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}
