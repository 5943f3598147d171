//! `estatemon dead-letters`: what ingest refused, and running it through
//! ingest again once what refused it is fixed.

use anyhow::Context;
use estatemon_domain::config::Config;
use estatemon_ingest::reprocess::{self, Selection};

#[derive(clap::Subcommand)]
pub enum DeadLettersCommand {
    /// Run open dead letters through ingest again (after a mapping, a
    /// profile, a unit or a limit was fixed), with today's configuration.
    /// Each letter is marked `reprocessed`; `reprocessed: refused again as
    /// <id>` when ingest refuses it again (the new letter, with today's
    /// reason, is the open one); or `reprocessed in part: a row refused by
    /// the database as <id>` when rows of it were refused at storage (each
    /// a new open letter naming it). No immediate alerts: they are history.
    Reprocess(ReprocessArgs),
}

#[derive(clap::Args)]
pub struct ReprocessArgs {
    /// Only letters of this reason (repeatable), e.g. unknown_topic.
    #[arg(long = "reason", value_name = "REASON")]
    reasons: Vec<String>,
    /// Only topics this MQTT filter matches, e.g. `tele/+/SENSOR`.
    #[arg(long, value_name = "FILTER")]
    topic: Option<String>,
    /// Received at or after: RFC 3339, or a span before now (6h, 2d).
    #[arg(long, value_parser = crate::simulate::parse_when)]
    from: Option<chrono::DateTime<chrono::Utc>>,
    /// Received before.
    #[arg(long, value_parser = crate::simulate::parse_when)]
    to: Option<chrono::DateTime<chrono::Utc>>,
    /// Say what would be reprocessed and left alone; change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(config: &Config, cmd: DeadLettersCommand) -> anyhow::Result<()> {
    match cmd {
        DeadLettersCommand::Reprocess(args) => reprocess(config, args).await,
    }
}

async fn reprocess(config: &Config, args: ReprocessArgs) -> anyhow::Result<()> {
    use estatemon_ingest::dead_letter::Reason;
    for r in &args.reasons {
        anyhow::ensure!(
            Reason::ALL.iter().any(|k| k.as_str() == r),
            crate::import::ImportRefused(format!(
                "--reason {r}: not a reason; one of {}",
                Reason::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        );
    }
    if let Some(f) = &args.topic {
        estatemon_domain::mapping::topic::check(f).map_err(|e| {
            crate::import::ImportRefused(format!("--topic `{f}`: not an MQTT topic filter: {e}"))
        })?;
    }
    if let (Some(from), Some(to)) = (args.from, args.to) {
        anyhow::ensure!(
            to > from,
            crate::import::ImportRefused(format!(
                "--to ({}) is not after --from ({})",
                to.to_rfc3339(),
                from.to_rfc3339()
            ))
        );
    }
    let (client, _) = estatemon_domain::schema::prepare(&config.database, &config.storage).await?;
    // One run at a time: two would read the same letters twice.
    let locked: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext('estatemon dead-letters reprocess'))",
            &[],
        )
        .await?
        .get(0);
    anyhow::ensure!(
        locked,
        "another `estatemon dead-letters reprocess` is running on this database"
    );
    let selection = Selection {
        reasons: args.reasons.clone(),
        topic: args.topic.clone(),
        from: args.from,
        to: args.to,
    };
    let discovery = &config.ingest.homeassistant;
    let plan = reprocess::plan(
        &client,
        &selection,
        discovery.enabled.then_some(discovery.prefix.as_str()),
    )
    .await
    .context("reading dead_letters")?;
    let total = plan.messages.len();
    println!(
        "{} open dead letters of {total} messages to reprocess{}",
        plan.letters(),
        if total == 0 { "" } else { ":" }
    );
    for (reason, n) in &plan.by_reason {
        println!("  {reason:<24} {n:>9}");
    }
    for (why, n) in &plan.skipped {
        println!("left alone: {n} ({why})");
    }
    if args.dry_run || total == 0 {
        if args.dry_run {
            println!("--dry-run: nothing changed");
        }
        return Ok(());
    }
    let mut c = config.clone();
    // Its own /metrics on a free port: a live ingestor keeps its own.
    c.ingest.listen = "127.0.0.1:0".into();
    let firsts = plan.messages.iter().map(|m| m[0]).collect();
    let (ingestor, progress) = estatemon_ingest::Ingestor::start_reprocess(c, firsts)
        .await
        .context("starting ingest for the dead letters")?;
    let bar = crate::progress::bar(
        total as u64,
        "{spinner} reprocessing [{bar:30}] {pos}/{len} messages ({eta})",
    );
    let m = ingestor.metrics().clone();
    let interrupted = crate::progress::until(estatemon_ingest::pipeline::wait_for_signal(), || {
        bar.set_position(progress.committed());
        progress.done()
    })
    .await;
    bar.finish_and_clear();
    ingestor.shutdown().await;
    // What committed is marked, even after an interruption.
    let outcome = reprocess::resolve(&client, &progress, &plan)
        .await
        .context("marking the reprocessed letters")?;
    println!(
        "reprocessed {} of {total} messages: {} readings stored, {} already stored, {} events stored; {} letters resolved, {} refused again, {} in part",
        progress.committed(),
        m.readings_stored.get(),
        m.readings_duplicate.get(),
        m.events_stored.get(),
        outcome.resolved,
        outcome.refused_again,
        outcome.in_part,
    );
    for (reason, n) in &outcome.new_reasons {
        println!("  new letter: {reason:<24} {n:>9}");
    }
    if outcome.in_part > 0 {
        println!(
            "warning: {} letter(s) `reprocessed in part`: the database or the inspection ledger \
             refused rows of their messages (new storage_rejected or inspection_refused letters, \
             each naming the letter it came from)",
            outcome.in_part
        );
    }
    if interrupted {
        anyhow::bail!("interrupted: what was committed is marked; run it again for the rest");
    }
    if let Some(why) = progress.error() {
        anyhow::bail!("stopped early: {why}");
    }
    Ok(())
}
