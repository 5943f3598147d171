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
    /// An alert's incident timeline: when it fired, each page (who, step,
    /// why), each try on each channel (delivered, or failed and why),
    /// fall-throughs, hand-overs, acknowledgements, snoozes, resolution.
    Timeline(TimelineArgs),
    /// Send a test page through every step of --policy on every contact
    /// method of whoever each step pages now, and print what each receiver
    /// answered. Exit 1 when any method failed.
    Test(TestArgs),
}

#[derive(clap::Args)]
pub struct TimelineArgs {
    /// The alert's id.
    id: i64,
    /// The rows as JSON (the API's `/api/v1/alerts/{id}/timeline`).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct TestArgs {
    #[command(flatten)]
    roster: RosterArg,
    /// The policy's id.
    #[arg(long)]
    policy: String,
    /// Page as if the alert had this severity (default: the policy's
    /// first), which decides the methods (calls only for emergencies).
    #[arg(long)]
    severity: Option<String>,
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
    /// Print the person's calendar URL instead (served by `estatemon api`
    /// at `oncall.public_url`, signed: a phone subscribes without logging
    /// in; it shows shifts only).
    #[arg(long)]
    url: bool,
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

pub async fn run(config: &Config, command: OncallCommand) -> anyhow::Result<()> {
    match command {
        OncallCommand::Timeline(args) => {
            let roster = config
                .oncall
                .roster
                .as_ref()
                .and_then(|p| Roster::load(p).ok());
            let client = crate::prepare_database(config).await?;
            let rows = estatemon_analytics::oncall::timeline::of(&client, args.id, roster.as_ref())
                .await?
                .ok_or_else(|| ImportRefused(format!("no alert {}", args.id)))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            let tz = roster
                .as_ref()
                .and_then(|r| r.teams.first())
                .map_or(chrono_tz::UTC, |t| t.tz);
            for e in rows {
                let who = match (&e.name, &e.person) {
                    (Some(n), _) => n.clone(),
                    (None, Some(p)) => p.clone(),
                    _ => String::new(),
                };
                println!(
                    "{}  {:<13} {:<16} {:<7} {:<10} {}",
                    local(e.at, tz),
                    e.kind,
                    who,
                    e.step.map(|s| format!("step {s}")).unwrap_or_default(),
                    e.channel.unwrap_or_default(),
                    e.detail
                );
            }
            Ok(())
        }
        OncallCommand::Test(args) => {
            let r = load(config, &args.roster)?;
            let policy = r
                .policies
                .iter()
                .find(|p| p.id == args.policy)
                .ok_or_else(|| {
                    ImportRefused(format!("no policy `{}` in the roster", args.policy))
                })?;
            let severity = args
                .severity
                .clone()
                .unwrap_or_else(|| policy.severities[0].clone());
            let now = Utc::now();
            let sender = estatemon_analytics::notify::Sender::new(config.alerts.clone());
            let tz = escalation::site_tz(&r, &policy.site);
            let mut failed = 0;
            let mut steps: Vec<(String, String)> = Vec::new();
            for (k, step) in policy.steps.iter().enumerate() {
                let person = match &step.notify {
                    estatemon_analytics::oncall::roster::Target::Person(p) => Some(p.clone()),
                    estatemon_analytics::oncall::roster::Target::Team(t) => r
                        .team(t)
                        .and_then(|t| schedule::on_call(t, &r.holidays, now))
                        .map(|(p, _)| p),
                };
                match person {
                    Some(p) => steps.push((format!("step {}", k + 1), p)),
                    None => {
                        println!("step {}: NOBODY ON CALL now: the fallback is paged", k + 1);
                        steps.push((
                            format!("step {} (fallback)", k + 1),
                            policy.fallback.clone(),
                        ));
                    }
                }
            }
            for (what, id) in steps {
                let Some(person) = r.person(&id) else {
                    println!("{what}: {id} is not in the roster");
                    failed += 1;
                    continue;
                };
                let (methods, missing) = estatemon_analytics::oncall::deliver::methods(
                    person,
                    &severity,
                    &config.oncall.channels,
                );
                if !missing.is_empty() {
                    println!(
                        "{what}: {} — no channel for {}",
                        person.name,
                        missing.join(", ")
                    );
                }
                if methods.is_empty() {
                    println!("{what}: {} — NO contact method has a channel", person.name);
                    failed += 1;
                }
                let chinese = person.language == estatemon_analytics::oncall::roster::Language::Zh;
                let text = if chinese {
                    format!(
                        "【測試】estatemon 值班測試：{} {what}，無需處理。",
                        policy.id
                    )
                } else {
                    format!(
                        "[TEST] estatemon on-call test of {} {what}; no action needed.",
                        policy.id
                    )
                };
                let message = estatemon_analytics::oncall::channels::PageMessage {
                    chinese,
                    subject: text.clone(),
                    text: format!("{text} ({})", local(now, tz)),
                    spoken: text.clone(),
                    links: None,
                    message_id: format!("<test-{}-{}@estatemon>", policy.id, now.timestamp()),
                };
                for m in methods {
                    let request = estatemon_analytics::oncall::channels::page_request(
                        m.channel,
                        m.value,
                        &person.name,
                        &message,
                        now,
                    );
                    match sender.deliver(&request).await {
                        Ok(()) => println!(
                            "{what}: {} by {} ({}): accepted",
                            person.name, m.channel.name, m.kind
                        ),
                        Err(e) => {
                            failed += 1;
                            println!(
                                "{what}: {} by {} ({}): FAILED: {e}",
                                person.name, m.channel.name, m.kind
                            )
                        }
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} contact methods or steps failed the test");
            }
            Ok(())
        }
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
            if args.url {
                // The URL a phone's calendar subscribes to.
                let client = crate::prepare_database(config).await?;
                let key = estatemon_analytics::oncall::links::key(&client).await?;
                let base = config
                    .oncall
                    .public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{}", config.api.listen));
                println!(
                    "{}/oncall/ical/{}/{}",
                    base.trim_end_matches('/'),
                    args.person,
                    estatemon_analytics::oncall::links::calendar_token(&key, &args.person)
                );
                return Ok(());
            }
            let r = load(config, &args.roster)?;
            let from = args.from.unwrap_or_else(Utc::now);
            let to = from + Duration::days(i64::from(args.days.clamp(1, 366)));
            let feed = ical::person_feed(&r, &args.person, from, to, Utc::now())
                .ok_or_else(|| ImportRefused(format!("no person `{}`", args.person)))?;
            print!("{feed}");
            Ok(())
        }
    }
}
