//! `estatemon lifts`: a site's lift statistics, entrapments and lift
//! replacements from the command line, the same figures as the API
//! (`/api/v1/lifts/stats`, `/incidents`, `/replacements`) and the report.

use chrono::{DateTime, Utc};
use estatemon_domain::config::Config;

use crate::import::ImportRefused;

#[derive(clap::Subcommand)]
pub enum LiftsCommand {
    /// Per lift, per building and for the site over a period: availability,
    /// hours in service, planned and down, trips and door cycles (per day),
    /// faults, entrapments, faults per 1,000 trips, MTBF.
    Stats(PeriodArgs),
    /// Entrapments in a period: alarm, who acknowledged (the rescue company
    /// or the on-call name), rescuer on site, released, back in service,
    /// within the 15-minute target.
    Incidents(PeriodArgs),
    /// Each lift replacement of the site: its lifts before against after,
    /// over equal spans of --days (limited to the time with data).
    Replacements(ReplacementArgs),
}

#[derive(clap::Args)]
pub struct PeriodArgs {
    #[arg(long)]
    site: String,
    /// Start (RFC 3339, or a span before now such as 30d).
    #[arg(long)]
    from: String,
    /// End (RFC 3339 or a span before now), exclusive; now when unset.
    #[arg(long)]
    to: Option<String>,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ReplacementArgs {
    #[arg(long)]
    site: String,
    /// Days each side of the replacement date (1 to 400).
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl PeriodArgs {
    fn period(&self) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
        let from = crate::simulate::parse_when(&self.from)?;
        let to = match &self.to {
            Some(t) => crate::simulate::parse_when(t)?,
            None => Utc::now(),
        };
        if to <= from {
            return Err(ImportRefused("--to must be after --from".into()).into());
        }
        Ok((from, to))
    }
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

pub async fn run(config: &Config, command: LiftsCommand) -> anyhow::Result<()> {
    use estatemon_analytics::lifts::{incidents, stats};
    match command {
        LiftsCommand::Stats(args) => {
            let (from, to) = args.period()?;
            let client = crate::prepare_database(config).await?;
            let rows = stats::site(
                &client,
                &args.site,
                None,
                from,
                to,
                config.lifts.maintenance_faults,
            )
            .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!(
                "{:<9} {:<20} {:>13} {:>10} {:>9} {:>10} {:>13} {:>6} {:>11} {:>15} {:>9}",
                "scope",
                "id",
                "availability",
                "down (h)",
                "trips",
                "trips/day",
                "door cycles/d",
                "faults",
                "entrapments",
                "faults/1k trips",
                "MTBF (h)"
            );
            for r in &rows {
                println!(
                    "{:<9} {:<20} {:>13} {:>10.1} {:>9.0} {:>10.0} {:>13.0} {:>6} {:>11} {:>15} {:>9}",
                    r.scope,
                    r.id,
                    r.availability
                        .map_or_else(|| "-".into(), |a| format!("{:.2} %", a * 100.0)),
                    r.down_hours,
                    r.trips,
                    r.trips_per_day,
                    r.door_cycles_per_day,
                    r.faults,
                    r.entrapments,
                    num(r.faults_per_1000_trips, 2),
                    num(r.mtbf_hours, 0)
                );
            }
            if rows.is_empty() {
                println!("(site {} has no lifts)", args.site);
            }
        }
        LiftsCommand::Incidents(args) => {
            let (from, to) = args.period()?;
            let client = crate::prepare_database(config).await?;
            let rows = incidents::site(&client, &args.site, from, to).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            for i in &rows {
                println!(
                    "{} {} alarm {}; acknowledged {} by {}; rescuer on site {} ({} min, {}); released {}; back in service {}; {}",
                    i.lift,
                    i.building.as_deref().unwrap_or("-"),
                    when(Some(i.alarm_at)),
                    when(i.acknowledged_at),
                    i.acknowledged_by.as_deref().unwrap_or("nobody"),
                    when(i.rescuer_on_site_at),
                    num(i.response_minutes, 0),
                    match i.within_target {
                        Some(true) => "within 15 min",
                        Some(false) => "OVER 15 min",
                        None => "nobody on site yet",
                    },
                    when(i.released_at),
                    when(i.back_in_service_at),
                    i.status
                );
            }
            println!("{} entrapments", rows.len());
        }
        LiftsCommand::Replacements(args) => {
            if !(1..=400).contains(&args.days) {
                return Err(ImportRefused("--days must be 1 to 400".into()).into());
            }
            let client = crate::prepare_database(config).await?;
            let rows = stats::replacements(
                &client,
                &args.site,
                args.days,
                Utc::now(),
                config.lifts.maintenance_faults,
            )
            .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            for r in &rows {
                println!(
                    "{} ({}), {} lifts, on {}:",
                    r.name,
                    r.retrofit,
                    r.lifts.len(),
                    r.date
                );
                for (side, s, span) in [
                    ("before", Some(&r.before), Some(&r.before_span)),
                    ("after", r.after.as_ref(), r.after_span.as_ref()),
                ] {
                    let (Some(s), Some(span)) = (s, span) else {
                        println!("  {side}: not yet");
                        continue;
                    };
                    println!(
                        "  {side:<6} {:.1} days with data ({} to {}): availability {}, faults {}, per 1,000 trips {}, MTBF {} h, trips per lift-day {:.0}",
                        span.days,
                        when(Some(span.from)),
                        when(Some(span.to)),
                        s.availability
                            .map_or_else(|| "-".into(), |a| format!("{:.2} %", a * 100.0)),
                        s.faults,
                        num(s.faults_per_1000_trips, 2),
                        num(s.mtbf_hours, 0),
                        s.trips_per_day
                    );
                }
                if !r.note.is_empty() {
                    println!("  note: {}", r.note);
                }
            }
            if rows.is_empty() {
                println!("(site {} has no lift replacement)", args.site);
            }
        }
    }
    Ok(())
}
