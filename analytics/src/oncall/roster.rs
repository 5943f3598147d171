//! The on-call roster file: people (names as themselves, contact methods,
//! language, working hours), teams by site, building and trade, schedules
//! (rotation layers with a hand-over at a local time, overrides) and the
//! estate's public holidays.
//!
//! ```toml
//! holidays = [2026-12-25, 2026-12-26]
//!
//! [[person]]
//! id = "chan-tai-man"
//! name = "陳大文"
//! language = "zh"
//! contacts = { phone = "+852 5555 0101", wecom = "chantaiman" }
//!
//! [[team]]
//! id = "hv-lifts"
//! site = "harbour-view"
//! trade = "lifts"
//! time_zone = "Asia/Hong_Kong"
//!
//! [[team.layer]]
//! name = "weekly"
//! members = ["chan-tai-man", "wong-siu-ming"]
//! start = 2026-01-05T08:00:00     # local: the first hand-over
//! every = "1w"
//!
//! [[team.override]]
//! person = "lee-ka-yan"
//! from = 2026-06-06T08:00:00
//! to = 2026-06-06T20:00:00
//! ```
//!
//! Contact details are personal data: [`Person`]'s `Debug` leaves them out,
//! so no log line carries them.

use std::collections::HashSet;
use std::path::Path;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use estatemon_domain::config::{line_of, locate_error, ConfigError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    holidays: Vec<toml::value::Datetime>,
    #[serde(default, rename = "person")]
    people: Vec<Person>,
    #[serde(default, rename = "team")]
    teams: Vec<TeamSpec>,
    #[serde(default, rename = "policy")]
    policies: Vec<PolicySpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    id: String,
    /// `emergency`, `ordinary`, `routine`: the alerts it takes.
    severities: Vec<String>,
    site: String,
    #[serde(default)]
    building: Option<String>,
    /// Device kinds (`lift`, `water_meter` …); every kind when empty.
    #[serde(default)]
    kinds: Vec<String>,
    /// Whom a step that finds nobody on call pages instead (flagged).
    fallback: String,
    /// How often the whole ladder repeats until acknowledged (default:
    /// the severity's response time: 15 min, 2 h, 24 h).
    #[serde(default)]
    repeat_every: Option<String>,
    /// How many times the ladder runs (default 3).
    #[serde(default)]
    repeat: Option<u32>,
    /// Routine and ordinary alerts wait for the person's working hours
    /// (never an emergency).
    #[serde(default)]
    wait_for_working_hours: bool,
    #[serde(rename = "step")]
    steps: Vec<StepSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    /// After the alert fired, e.g. `0m`, `5m`.
    after: String,
    /// `team:ID` (whoever is on call for it) or `person:ID`.
    notify: String,
}

/// Whom a step pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Whoever is on call for the team at the step's time.
    Team(String),
    Person(String),
}

/// One rung of an escalation ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub after: chrono::Duration,
    pub notify: Target,
}

/// An escalation policy, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub id: String,
    pub severities: Vec<String>,
    pub site: String,
    pub building: Option<String>,
    pub kinds: Vec<String>,
    pub fallback: String,
    pub repeat_every: Option<chrono::Duration>,
    pub repeat: u32,
    pub wait_for_working_hours: bool,
    pub steps: Vec<Step>,
}

/// A span like `5m`, `2h`, `1d`.
fn span(text: &str) -> Result<chrono::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("`{t}`: expected a number and a unit (0m, 5m, 2h, 1d)"))?;
    match unit {
        "m" => Ok(chrono::Duration::minutes(n)),
        "h" => Ok(chrono::Duration::hours(n)),
        "d" => Ok(chrono::Duration::days(n)),
        _ => Err(format!(
            "`{t}`: expected minutes (m), hours (h) or days (d)"
        )),
    }
}

/// Someone who can be on call.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Person {
    pub id: String,
    /// As the person writes it (陳大文, Chan Tai Man).
    pub name: String,
    /// `zh` or `en` (default): the language of their messages.
    #[serde(default)]
    pub language: Language,
    #[serde(default)]
    pub contacts: Contacts,
    /// Local working hours, e.g. `09:00-18:00` (routine alerts wait for
    /// them); none: any time.
    #[serde(default)]
    pub working_hours: Option<String>,
}

impl std::fmt::Debug for Person {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Person")
            .field("id", &self.id)
            .field("language", &self.language)
            .field("contacts", &"[personal data left out]")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    #[default]
    En,
    Zh,
}

/// A person's contact methods (personal data: admins only).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contacts {
    pub phone: Option<String>,
    pub email: Option<String>,
    pub wecom: Option<String>,
    pub dingtalk: Option<String>,
    pub feishu: Option<String>,
    pub telegram: Option<String>,
}

impl Contacts {
    /// The kinds of contact method given (not their values).
    pub fn kinds(&self) -> Vec<&'static str> {
        [
            ("phone", &self.phone),
            ("email", &self.email),
            ("wecom", &self.wecom),
            ("dingtalk", &self.dingtalk),
            ("feishu", &self.feishu),
            ("telegram", &self.telegram),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k)
        .collect()
    }
}

/// The trades teams are formed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trade {
    Lifts,
    Electrical,
    Plumbing,
    Security,
    LiftContractor,
    Engineering,
}

impl Trade {
    pub fn as_str(self) -> &'static str {
        match self {
            Trade::Lifts => "lifts",
            Trade::Electrical => "electrical",
            Trade::Plumbing => "plumbing",
            Trade::Security => "security",
            Trade::LiftContractor => "lift_contractor",
            Trade::Engineering => "engineering",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamSpec {
    id: String,
    #[serde(default)]
    name: Option<String>,
    site: String,
    #[serde(default)]
    building: Option<String>,
    trade: Trade,
    time_zone: String,
    #[serde(default, rename = "layer")]
    layers: Vec<LayerSpec>,
    #[serde(default, rename = "override")]
    overrides: Vec<OverrideSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerSpec {
    name: String,
    members: Vec<String>,
    start: toml::value::Datetime,
    /// `1d`, `1w`, `3d`, `12h`: each member's turn.
    every: String,
    /// Only on these local days: `mon` … `sun`, `holiday` (a public
    /// holiday of the roster); every day when empty.
    #[serde(default)]
    days: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideSpec {
    person: String,
    from: toml::value::Datetime,
    to: toml::value::Datetime,
}

/// A team and its schedule, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Team {
    pub id: String,
    pub name: String,
    pub site: String,
    pub building: Option<String>,
    pub trade: Trade,
    pub tz: Tz,
    /// Lowest first: a later layer wins where it has a shift.
    pub layers: Vec<Layer>,
    /// Win over every layer; a later one over an earlier one.
    pub overrides: Vec<Override>,
}

/// A rotation: members take turns of `every`, from `start`.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub name: String,
    pub members: Vec<String>,
    /// The first hand-over, local time.
    pub start: NaiveDateTime,
    pub every: Every,
    /// Local days it covers (none: all); `holiday` days apart.
    pub days: Vec<Weekday>,
    pub holidays: bool,
}

/// A turn's length: whole local days (the hand-over at the same local time
/// whatever the clocks do) or a fixed number of hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    Days(u32),
    Hours(u32),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub person: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// The roster: people, teams with their schedules, public holidays.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Roster {
    pub people: Vec<Person>,
    pub teams: Vec<Team>,
    pub holidays: HashSet<NaiveDate>,
    /// In file order: the first that matches an alert takes it.
    pub policies: Vec<Policy>,
}

impl Every {
    pub fn parse(text: &str) -> Result<Every, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("`{t}`: expected a number and a unit (12h, 1d, 1w)"))?;
        let (n, unit) = t.split_at(split);
        if n.is_empty() {
            return Err(format!("`{t}`: expected a number and a unit (12h, 1d, 1w)"));
        }
        let n: u32 = n
            .parse()
            .ok()
            .filter(|n| *n > 0 && *n <= 366 * 24)
            .ok_or_else(|| format!("`{t}`: expected a positive length"))?;
        match unit {
            "h" if n.is_multiple_of(24) => Ok(Every::Days(n / 24)),
            "h" => Ok(Every::Hours(n)),
            "d" if n <= 366 => Ok(Every::Days(n)),
            "w" if n <= 52 => Ok(Every::Days(7 * n)),
            _ => Err(format!("`{t}`: expected hours (h), days (d) or weeks (w)")),
        }
    }
}

fn weekday(text: &str) -> Option<Weekday> {
    Some(match text {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

/// A TOML local date-time (or date: midnight), as written.
fn local(dt: &toml::value::Datetime) -> Result<NaiveDateTime, String> {
    let text = dt.to_string();
    if dt.offset.is_some() {
        return Err(format!(
            "`{text}`: write the team's local time, without an offset"
        ));
    }
    NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M"))
        .or_else(|_| {
            NaiveDate::parse_from_str(&text, "%Y-%m-%d").map(|d| d.and_time(NaiveTime::MIN))
        })
        .map_err(|_| format!("`{text}`: expected a local date and time"))
}

/// A local time in `tz` as UTC (the later instant of a repeated hour, the
/// first after a skipped one).
pub fn to_utc(t: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&t) {
        chrono::LocalResult::Single(x) => x.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(_, later) => later.with_timezone(&Utc),
        chrono::LocalResult::None => (1..=4)
            .find_map(|h| {
                tz.from_local_datetime(&(t + chrono::Duration::minutes(30 * h)))
                    .earliest()
            })
            .map(|x| x.with_timezone(&Utc))
            .unwrap_or_else(|| t.and_utc()),
    }
}

impl Roster {
    /// Reads and checks a roster file; errors name the file, line and field.
    pub fn load(path: &Path) -> Result<Roster, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Roster::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Roster, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| locate_error(path, text, &e))?;
        let invalid = |needle: &str, field: String, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, needle),
            field,
            message,
        };
        let mut holidays = HashSet::new();
        for h in &file.holidays {
            let d = local(h).map_err(|m| invalid("holidays", "holidays".into(), m))?;
            holidays.insert(d.date());
        }
        let mut ids = HashSet::new();
        for (i, p) in file.people.iter().enumerate() {
            if p.id.trim().is_empty() || p.name.trim().is_empty() {
                return Err(invalid(
                    "[[person]]",
                    format!("person[{i}]"),
                    "`id` and `name` must not be empty".into(),
                ));
            }
            if !ids.insert(p.id.clone()) {
                return Err(invalid(
                    &format!("\"{}\"", p.id),
                    format!("person[{i}].id"),
                    format!("`{}` is given twice", p.id),
                ));
            }
            if let Some(h) = &p.working_hours {
                working_hours(h)
                    .map_err(|m| invalid(h, format!("person[{i}].working_hours"), m))?;
            }
        }
        let mut teams = Vec::new();
        for (t, spec) in file.teams.iter().enumerate() {
            let field = |f: &str| format!("team[{t}].{f}");
            let tz: Tz = spec.time_zone.parse().map_err(|_| {
                invalid(
                    &format!("time_zone = \"{}\"", spec.time_zone),
                    field("time_zone"),
                    format!("`{}` is not an IANA time zone", spec.time_zone),
                )
            })?;
            let known = |who: &str, f: String| {
                if ids.contains(who) {
                    Ok(())
                } else {
                    Err(invalid(
                        &format!("\"{who}\""),
                        f,
                        format!("no [[person]] `{who}`"),
                    ))
                }
            };
            let mut layers = Vec::new();
            for (l, ls) in spec.layers.iter().enumerate() {
                let lf = |f: &str| field(&format!("layer[{l}].{f}"));
                if ls.members.is_empty() {
                    return Err(invalid(&ls.name, lf("members"), "no members".into()));
                }
                for m in &ls.members {
                    known(m, lf("members"))?;
                }
                let every = Every::parse(&ls.every)
                    .map_err(|m| invalid(&format!("every = \"{}\"", ls.every), lf("every"), m))?;
                let start = local(&ls.start).map_err(|m| invalid(&ls.name, lf("start"), m))?;
                let mut days = Vec::new();
                let mut on_holidays = false;
                for d in &ls.days {
                    match (d.as_str(), weekday(d)) {
                        ("holiday", _) => on_holidays = true,
                        (_, Some(w)) => days.push(w),
                        _ => {
                            return Err(invalid(
                                d,
                                lf("days"),
                                format!("`{d}`: expected mon … sun or holiday"),
                            ))
                        }
                    }
                }
                layers.push(Layer {
                    name: ls.name.clone(),
                    members: ls.members.clone(),
                    start,
                    every,
                    days,
                    holidays: on_holidays,
                });
            }
            if layers.is_empty() {
                return Err(invalid(
                    &spec.id,
                    field("layer"),
                    "a team needs at least one [[team.layer]]".into(),
                ));
            }
            let mut overrides = Vec::new();
            for (o, os) in spec.overrides.iter().enumerate() {
                let of = |f: &str| field(&format!("override[{o}].{f}"));
                known(&os.person, of("person"))?;
                let from = local(&os.from).map_err(|m| invalid(&os.person, of("from"), m))?;
                let to = local(&os.to).map_err(|m| invalid(&os.person, of("to"), m))?;
                if to <= from {
                    return Err(invalid(&os.person, of("to"), "must be after `from`".into()));
                }
                overrides.push(Override {
                    person: os.person.clone(),
                    from: to_utc(from, tz),
                    to: to_utc(to, tz),
                });
            }
            teams.push(Team {
                id: spec.id.clone(),
                name: spec.name.clone().unwrap_or_else(|| spec.id.clone()),
                site: spec.site.clone(),
                building: spec.building.clone(),
                trade: spec.trade,
                tz,
                layers,
                overrides,
            });
        }
        let team_ids: HashSet<&str> = teams.iter().map(|t| t.id.as_str()).collect();
        let mut policies = Vec::new();
        for (i, ps) in file.policies.iter().enumerate() {
            let field = |f: &str| format!("policy[{i}].{f}");
            let here = |f: &str, m: String| invalid(&format!("\"{}\"", ps.id), field(f), m);
            for s in &ps.severities {
                if !matches!(s.as_str(), "emergency" | "ordinary" | "routine") {
                    return Err(here(
                        "severities",
                        format!("`{s}`: expected emergency, ordinary or routine"),
                    ));
                }
            }
            if ps.severities.is_empty() {
                return Err(here("severities", "names no severity".into()));
            }
            if ps.wait_for_working_hours && ps.severities.iter().any(|s| s == "emergency") {
                return Err(here(
                    "wait_for_working_hours",
                    "an emergency never waits for working hours".into(),
                ));
            }
            if !ids.contains(&ps.fallback) {
                return Err(here("fallback", format!("no [[person]] `{}`", ps.fallback)));
            }
            if ps.steps.is_empty() {
                return Err(here(
                    "step",
                    "a policy needs at least one [[policy.step]]".into(),
                ));
            }
            let mut steps = Vec::new();
            for (k, ss) in ps.steps.iter().enumerate() {
                let sf = format!("step[{k}]");
                let after = span(&ss.after).map_err(|m| here(&format!("{sf}.after"), m))?;
                let notify = match ss.notify.split_once(':') {
                    Some(("team", t)) if team_ids.contains(t) => Target::Team(t.to_owned()),
                    Some(("person", p)) if ids.contains(p) => Target::Person(p.to_owned()),
                    _ => {
                        return Err(here(
                            &format!("{sf}.notify"),
                            format!(
                                "`{}`: expected team:ID or person:ID of this roster",
                                ss.notify
                            ),
                        ))
                    }
                };
                if steps.last().is_some_and(|s: &Step| s.after > after) {
                    return Err(here(
                        &format!("{sf}.after"),
                        "steps go in time order".into(),
                    ));
                }
                steps.push(Step { after, notify });
            }
            let repeat_every = ps
                .repeat_every
                .as_deref()
                .map(span)
                .transpose()
                .map_err(|m| here("repeat_every", m))?;
            policies.push(Policy {
                id: ps.id.clone(),
                severities: ps.severities.clone(),
                site: ps.site.clone(),
                building: ps.building.clone(),
                kinds: ps.kinds.clone(),
                fallback: ps.fallback.clone(),
                repeat_every,
                repeat: ps.repeat.unwrap_or(3).clamp(1, 20),
                wait_for_working_hours: ps.wait_for_working_hours,
                steps,
            });
        }
        Ok(Roster {
            people: file.people,
            teams,
            holidays,
            policies,
        })
    }

    pub fn person(&self, id: &str) -> Option<&Person> {
        self.people.iter().find(|p| p.id == id)
    }

    /// A person's name as they write it; the id when the roster does not
    /// know them (any more).
    pub fn name_of(&self, id: &str) -> String {
        self.person(id)
            .map_or_else(|| id.to_owned(), |p| p.name.clone())
    }

    /// A person's working hours, when the roster gives them.
    pub fn hours_of(&self, id: &str) -> Option<(NaiveTime, NaiveTime)> {
        self.person(id)
            .and_then(|p| p.working_hours.as_deref())
            .and_then(|h| working_hours(h).ok())
    }

    pub fn team(&self, id: &str) -> Option<&Team> {
        self.teams.iter().find(|t| t.id == id)
    }
}

/// Whether a local time of day falls in working hours `(from, to)`; a span
/// past midnight (`22:00-06:00`) wraps.
pub fn within((from, to): (NaiveTime, NaiveTime), time: NaiveTime) -> bool {
    if from < to {
        time >= from && time < to
    } else {
        time >= from || time < to
    }
}

/// `HH:MM-HH:MM`, local.
pub fn working_hours(text: &str) -> Result<(NaiveTime, NaiveTime), String> {
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| format!("`{text}`: expected HH:MM-HH:MM"))?;
    let t = |s: &str| {
        NaiveTime::parse_from_str(s.trim(), "%H:%M")
            .map_err(|_| format!("`{text}`: expected HH:MM-HH:MM"))
    };
    let (a, b) = (t(a)?, t(b)?);
    if a == b {
        return Err(format!("`{text}`: an empty span"));
    }
    Ok((a, b))
}
