//! `estatemon oncall`: who is on call now and next, a team's shifts, a
//! person's shifts as an iCalendar feed, and a check of the roster file.
//! Names only: contact details (personal data) are never printed here.

use std::path::PathBuf;

use chrono::{DateTime, Duration, Utc};
use estatemon_analytics::oncall::{escalation, ical, roster::Roster, schedule};
use estatemon_domain::config::Config;

use crate::import::ImportRefused;

#[derive(clap::Subcommand)]
pub enum OncallCommand {
    /// Check the roster file (people, teams, layers, overrides): exit 3
    /// with file, line and field on an error; print the teams and the gaps
    /// of the next 30 days nobody covers.
    Check(RosterArg),
    /// Who is on call now (or --at) and who is next, for each team of
    /// --site (or one --team).
    Who(WhoArgs),
    /// A team's shifts over --days from --from (default now).
    Shifts(ShiftArgs),
    /// A person's shifts as an iCalendar feed (RFC 5545) on standard output,
    /// for their phone's calendar.
    Ical(IcalArgs),
    /// Whom an alert of --severity at --site (a --kind of device, in a
    /// --building) would page, and when, if it fired --at and nobody
    /// acknowledged: the policy's ladder, gaps paged to its fallback.
    Plan(PlanArgs),
}

#[derive(clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    roster: RosterArg,
    /// emergency, ordinary or routine.
    #[arg(long)]
    severity: String,
    #[arg(long)]
    site: String,
    #[arg(long)]
    building: Option<String>,
    /// The device kind (lift, water_meter, access_gate …).
    #[arg(long)]
    kind: Option<String>,
    /// RFC 3339; default now.
    #[arg(long)]
    at: Option<DateTime<Utc>>,
}

#[derive(clap::Args)]
pub struct RosterArg {
    /// The roster file (default: oncall.roster of the configuration).
    #[arg(long)]
    roster: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct WhoArgs {
    #[command(flatten)]
    roster: RosterArg,
    #[arg(long)]
    site: Option<String>,
    #[arg(long)]
    team: Option<String>,
    /// RFC 3339; default now.
    #[arg(long)]
    at: Option<DateTime<Utc>>,
}

#[derive(clap::Args)]
pub struct ShiftArgs {
    #[command(flatten)]
    roster: RosterArg,
    #[arg(long)]
    team: String,
    #[arg(long)]
    from: Option<DateTime<Utc>>,
    #[arg(long, default_value_t = 14)]
    days: u32,
}

#[derive(clap::Args)]
pub struct IcalArgs {
    #[command(flatten)]
    roster: RosterArg,
    #[arg(long)]
    person: String,
    #[arg(long)]
    from: Option<DateTime<Utc>>,
    #[arg(long, default_value_t = 60)]
    days: u32,
}

fn load(config: &Config, arg: &RosterArg) -> anyhow::Result<Roster> {
    let path = arg
        .roster
        .clone()
        .or_else(|| config.oncall.roster.clone())
        .ok_or_else(|| {
            ImportRefused(
                "no roster: set oncall.roster in the configuration or pass --roster FILE".into(),
            )
        })?;
    Ok(Roster::load(&path)?)
}

fn local(t: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
}

pub fn run(config: &Config, command: OncallCommand) -> anyhow::Result<()> {
    match command {
        OncallCommand::Check(arg) => {
            let r = load(config, &arg)?;
            let now = Utc::now();
            println!(
                "{} people, {} teams, {} public holidays",
                r.people.len(),
                r.teams.len(),
                r.holidays.len()
            );
            for t in &r.teams {
                let gaps = schedule::gaps(t, &r.holidays, now, now + Duration::days(30));
                println!(
                    "{} ({}, {}, {}): {} layers, {} overrides; {}",
                    t.id,
                    t.site,
                    t.trade.as_str(),
                    t.tz,
                    t.layers.len(),
                    t.overrides.len(),
                    if gaps.is_empty() {
                        "covered for the next 30 days".to_owned()
                    } else {
                        format!(
                            "NOBODY ON CALL {} times in the next 30 days, first {} to {}",
                            gaps.len(),
                            local(gaps[0].0, t.tz),
                            local(gaps[0].1, t.tz)
                        )
                    }
                );
            }
            for p in &r.people {
                let kinds = p.contacts.kinds();
                if kinds.is_empty() {
                    println!("warning: {} ({}) has no contact method", p.name, p.id);
                }
            }
            Ok(())
        }
        OncallCommand::Who(args) => {
            let r = load(config, &args.roster)?;
            let at = args.at.unwrap_or_else(Utc::now);
            let teams: Vec<_> = r
                .teams
                .iter()
                .filter(|t| args.team.as_ref().is_none_or(|id| *id == t.id))
                .filter(|t| args.site.as_ref().is_none_or(|s| *s == t.site))
                .collect();
            if teams.is_empty() {
                return Err(ImportRefused("no team matches --site / --team".into()).into());
            }
            let name = |id: &str| r.person(id).map_or(id.to_owned(), |p| p.name.clone());
            for t in teams {
                let schedule::NowNext {
                    current,
                    until,
                    next,
                } = schedule::now_and_next(t, &r.holidays, at, Duration::days(60));
                match &current {
                    Some((p, source)) => println!(
                        "{}: {} ({source}) until {}",
                        t.name,
                        name(p),
                        until.map_or_else(
                            || "beyond the next 60 days".to_owned(),
                            |u| local(u, t.tz)
                        )
                    ),
                    None => println!("{}: NOBODY ON CALL", t.name),
                }
                if let Some(n) = next {
                    println!("  next: {} from {}", name(&n.person), local(n.from, t.tz));
                }
            }
            Ok(())
        }
        OncallCommand::Shifts(args) => {
            let r = load(config, &args.roster)?;
            let t = r
                .team(&args.team)
                .ok_or_else(|| ImportRefused(format!("no team `{}`", args.team)))?;
            let from = args.from.unwrap_or_else(Utc::now);
            let to = from + Duration::days(i64::from(args.days.clamp(1, 366)));
            let mut at = from;
            for s in schedule::shifts(t, &r.holidays, from, to) {
                if s.from > at {
                    println!(
                        "{} to {}: NOBODY ON CALL",
                        local(at, t.tz),
                        local(s.from, t.tz)
                    );
                }
                let name = r.person(&s.person).map_or(s.person.as_str(), |p| &p.name);
                println!(
                    "{} to {}: {name} ({})",
                    local(s.from, t.tz),
                    local(s.to, t.tz),
                    s.source
                );
                at = s.to;
            }
            Ok(())
        }
        OncallCommand::Plan(args) => {
            if !matches!(args.severity.as_str(), "emergency" | "ordinary" | "routine") {
                return Err(ImportRefused(format!(
                    "--severity {}: expected emergency, ordinary or routine",
                    args.severity
                ))
                .into());
            }
            let r = load(config, &args.roster)?;
            let at = args.at.unwrap_or_else(Utc::now);
            let (policy, pages) = escalation::pages(
                &r,
                &args.severity,
                &args.site,
                args.building.as_deref(),
                args.kind.as_deref(),
                at,
            );
            let tz = r
                .teams
                .iter()
                .find(|t| t.site == args.site)
                .map_or(chrono_tz::UTC, |t| t.tz);
            match policy {
                Some(p) => println!("policy {}", p.id),
                None if pages.is_empty() => println!(
                    "no policy takes this alert and it is not an emergency: it pages nobody (add a [[policy]])"
                ),
                None => println!("NO POLICY takes this emergency: every team of the site is paged at once"),
            }
            for p in &pages {
                let name = r.person(&p.person).map_or(p.person.as_str(), |x| &x.name);
                println!(
                    "{}  {name}: {}{}",
                    local(p.at, tz),
                    p.reason,
                    if p.flagged { "  [FLAGGED]" } else { "" }
                );
            }
            Ok(())
        }
        OncallCommand::Ical(args) => {
            let r = load(config, &args.roster)?;
            let person = r
                .person(&args.person)
                .ok_or_else(|| ImportRefused(format!("no person `{}`", args.person)))?;
            let from = args.from.unwrap_or_else(Utc::now);
            let to = from + Duration::days(i64::from(args.days.clamp(1, 366)));
            let mine: Vec<(String, schedule::Shift)> = r
                .teams
                .iter()
                .flat_map(|t| {
                    schedule::shifts(t, &r.holidays, from, to)
                        .into_iter()
                        .filter(|s| s.person == person.id)
                        .map(|s| (t.name.clone(), s))
                        .collect::<Vec<_>>()
                })
                .collect();
            print!("{}", ical::calendar(&person.name, &mine, Utc::now()));
            Ok(())
        }
    }
}
