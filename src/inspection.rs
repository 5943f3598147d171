//! `estatemon inspection`: record a technician's inspection from the
//! command line (the same checks and work items as the API and the patrol
//! app's MQTT event), or list a site's compliance with its cycles.

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use estatemon_domain::config::Config;
use estatemon_domain::inspection::{ItemResult, Report};
use estatemon_domain::schema::inspections::{self, Refused};

use crate::import::ImportRefused;

#[derive(clap::Subcommand)]
pub enum InspectionCommand {
    /// Record an inspection; each failed checklist item opens a work item
    /// (a small issue due by local midnight, a large one within 7 days).
    /// Exit 2 when it is refused (unknown device, an item not on the
    /// checklist, already recorded).
    Record(RecordArgs),
    /// Each tracked device's windows in a period: due, on time, late,
    /// missed, open.
    Compliance(ComplianceArgs),
    /// Close an open work item (fixed, or not to be done) with a note.
    /// Exit 2 when there is no such item or it is closed already.
    Close {
        /// The work item's id (as `record` printed it).
        #[arg(long)]
        id: i64,
        /// What was done.
        #[arg(long)]
        note: String,
        /// Who closed it.
        #[arg(long)]
        by: String,
    },
}

#[derive(clap::Args)]
pub struct RecordArgs {
    /// The device inspected (its ledger id).
    #[arg(long)]
    device: String,
    /// Who inspected (a name or staff number).
    #[arg(long)]
    by: String,
    /// When (RFC 3339); default now.
    #[arg(long)]
    at: Option<DateTime<Utc>>,
    /// A checklist item's result, ITEM=ok|fail|fail_large (repeatable).
    #[arg(long = "result", value_name = "ITEM=RESULT")]
    results: Vec<String>,
    /// A reading taken, NAME=VALUE (repeatable), e.g. lubricant_level=0.8.
    #[arg(long = "reading", value_name = "NAME=VALUE")]
    readings: Vec<String>,
    #[arg(long)]
    note: Option<String>,
}

#[derive(clap::Args)]
pub struct ComplianceArgs {
    #[arg(long)]
    site: String,
    /// Start (RFC 3339).
    #[arg(long)]
    from: DateTime<Utc>,
    /// End (RFC 3339), exclusive.
    #[arg(long)]
    to: DateTime<Utc>,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn pair<'a>(text: &'a str, what: &str) -> Result<(&'a str, &'a str), ImportRefused> {
    text.split_once('=')
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| ImportRefused(format!("`{text}`: expected {what}")))
}

/// The report the arguments describe, or why not.
pub fn report(args: &RecordArgs, now: DateTime<Utc>) -> Result<Report, ImportRefused> {
    let mut results = BTreeMap::new();
    for r in &args.results {
        let (item, value) = pair(r, "ITEM=ok|fail|fail_large")?;
        let v = ItemResult::parse(value).ok_or_else(|| {
            ImportRefused(format!("`{item}`: `{value}` is not ok, fail or fail_large"))
        })?;
        results.insert(item.to_owned(), v);
    }
    let mut readings = BTreeMap::new();
    for r in &args.readings {
        let (name, value) = pair(r, "NAME=VALUE")?;
        let v: f64 = value
            .parse()
            .map_err(|_| ImportRefused(format!("reading `{name}`: `{value}` is not a number")))?;
        readings.insert(name.to_owned(), v);
    }
    let report = Report {
        device: args.device.clone(),
        by: args.by.trim().to_owned(),
        at: args.at.unwrap_or(now),
        results,
        readings,
        note: args.note.clone(),
    };
    report.check(now).map_err(ImportRefused)?;
    Ok(report)
}

pub async fn run(config: &Config, command: InspectionCommand) -> anyhow::Result<()> {
    match command {
        InspectionCommand::Record(args) => {
            let report = report(&args, Utc::now())?;
            let mut client = crate::prepare_database(config).await?;
            let tx = client.transaction().await?;
            let recorded = match inspections::record(&tx, &report, "cli").await? {
                Ok(r) => r,
                Err(
                    e @ (Refused::NoDevice(_)
                    | Refused::NotOnChecklist { .. }
                    | Refused::Duplicate { .. }),
                ) => return Err(ImportRefused(e.to_string()).into()),
            };
            tx.commit().await.context("storing the inspection")?;
            println!(
                "inspection {} of {} by {} at {}: {}",
                recorded.id,
                report.device,
                report.by,
                report.at.to_rfc3339(),
                if recorded.passed { "passed" } else { "failed" }
            );
            for id in &recorded.closed {
                println!("  work item {id} found fixed: closed");
            }
            for w in &recorded.work_items {
                println!(
                    "  work item {}: {} ({}), due {}",
                    w.id,
                    w.item,
                    w.size,
                    w.due_at.to_rfc3339()
                );
            }
            Ok(())
        }
        InspectionCommand::Close { id, note, by } => {
            let (note, by) = (note.trim(), by.trim());
            let fits = |t: &str, max: usize| {
                !t.is_empty() && t.chars().count() <= max && !t.contains('\0')
            };
            if !fits(note, 500) || !fits(by, 100) {
                return Err(ImportRefused(
                    "--note is 1 to 500 characters and --by 1 to 100".into(),
                )
                .into());
            }
            let client = crate::prepare_database(config).await?;
            let text = format!("closed by {by}: {note}");
            match inspections::close(&client, id, Utc::now(), &text).await? {
                Some(true) => {
                    println!("work item {id} closed");
                    Ok(())
                }
                Some(false) => {
                    Err(ImportRefused(format!("work item {id} is closed already")).into())
                }
                None => Err(ImportRefused(format!("no work item {id}")).into()),
            }
        }
        InspectionCommand::Compliance(args) => {
            if args.to <= args.from {
                return Err(ImportRefused("--to must be after --from".into()).into());
            }
            let client = crate::prepare_database(config).await?;
            let rows = estatemon_analytics::maintenance::compliance::site(
                &client,
                &args.site,
                args.from,
                args.to,
                Utc::now(),
            )
            .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!(
                "{:<28} {:<5} {:<5} {:>5} {:>7} {:>5} {:>6} {:>5}",
                "device", "class", "cycle", "due", "on time", "late", "missed", "open"
            );
            for r in &rows {
                println!(
                    "{:<28} {:<5} {:<5} {:>5} {:>7} {:>5} {:>6} {:>5}",
                    r.device,
                    r.class.as_deref().unwrap_or("-"),
                    r.cycle,
                    r.due,
                    r.on_time,
                    r.late,
                    r.missed,
                    r.open
                );
            }
            if rows.is_empty() {
                println!(
                    "(no device of {} has a class or an inspection cycle)",
                    args.site
                );
            }
            // Each late or missed window: what to chase.
            let exceptions: Vec<_> = rows
                .iter()
                .flat_map(|r| r.exceptions.iter().map(move |e| (r, e)))
                .collect();
            if !exceptions.is_empty() {
                println!("\nlate and missed windows:");
                println!(
                    "{:<28} {:<6} {:<22} {:<22} inspector",
                    "device", "status", "due by", "inspected at"
                );
                let when = |t: Option<chrono::DateTime<Utc>>| {
                    t.map_or_else(
                        || "-".to_owned(),
                        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
                    )
                };
                for (r, e) in exceptions {
                    println!(
                        "{:<28} {:<6} {:<22} {:<22} {}",
                        r.device,
                        e.status,
                        when(Some(e.due_by)),
                        when(e.inspected_at),
                        e.inspector.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(())
        }
    }
}
