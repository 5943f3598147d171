//! `estatemon dead-letters`: what ingest refused, and running it through
//! ingest again once what refused it is fixed.

use anyhow::Context;
use estatemon_domain::config::Config;
use estatemon_ingest::reprocess::{self, Selection};

#[derive(clap::Subcommand)]
pub enum DeadLettersCommand {
    /// Run open dead letters through ingest again (after a mapping, a
    /// profile, a unit or a limit was fixed), with today's configuration.
    /// Each letter is marked `reprocessed`, or `reprocessed: refused again
    /// as <id>` when ingest refuses it again (the new letter, with today's
    /// reason, is the open one). No immediate alerts: they are history.
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
    let selection = Selection {
        reasons: args.reasons.clone(),
        topic: args.topic.clone(),
        from: args.from,
        to: args.to,
    };
    let plan = reprocess::plan(&client, &selection)
        .await
        .context("reading dead_letters")?;
    let total = plan.ids.len();
    println!(
        "{total} open dead letters to reprocess{}",
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
    let (ingestor, progress) = estatemon_ingest::Ingestor::start_reprocess(c, plan.ids)
        .await
        .context("starting ingest for the dead letters")?;
    let bar = indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} reprocessing [{bar:30}] {pos}/{len} dead letters ({eta})",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    if std::env::var_os("CI").is_some() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let m = ingestor.metrics().clone();
    let interrupted = loop {
        bar.set_position(progress.committed());
        if progress.done() {
            break false;
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            _ = tokio::signal::ctrl_c() => break true,
        }
    };
    bar.finish_and_clear();
    ingestor.shutdown().await;
    // What committed is marked, even after an interruption.
    let outcome = reprocess::resolve(&client, &progress, plan.watermark)
        .await
        .context("marking the reprocessed letters")?;
    println!(
        "reprocessed {} of {total} dead letters: {} readings stored, {} already stored, {} events stored; {} resolved, {} refused again",
        progress.committed(),
        m.readings_stored.get(),
        m.readings_duplicate.get(),
        m.events_stored.get(),
        outcome.resolved,
        outcome.refused_again,
    );
    for (reason, n) in &outcome.new_reasons {
        println!("  refused again: {reason:<24} {n:>9}");
    }
    if interrupted {
        anyhow::bail!("interrupted: what was committed is marked; run it again for the rest");
    }
    if let Some(why) = progress.error() {
        anyhow::bail!("stopped early: {why}");
    }
    Ok(())
}
