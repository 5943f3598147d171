//! Escalation: whom an alert pages and when, until someone acknowledges.
//!
//! The first policy of the roster matching the alert's severity, site,
//! building and device kind takes it. Its steps page, in order and each at
//! its delay after the alert fired: whoever is on call for a team at that
//! moment, or a named person; the ladder repeats every `repeat_every`
//! (default: the severity's response time, 15 min, 2 h or 24 h) up to
//! `repeat` times. A step that finds nobody on call pages the policy's
//! fallback instead and is flagged: a schedule gap never holds a page. An
//! emergency no policy takes pages whoever is on call for every team of its
//! site at once, flagged. Ordinary and routine alerts may wait for the
//! person's working hours where the policy says so; an emergency never
//! waits.

use chrono::{DateTime, Duration, NaiveTime, Utc};
use serde::Serialize;

use super::roster::{Policy, Roster, Target};
use super::schedule::on_call;

/// One page of the ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page {
    pub at: DateTime<Utc>,
    /// The ladder's run (0: the first).
    pub round: u32,
    /// The step (0-based); for an emergency without a policy, the team's
    /// place among the site's teams.
    pub step: usize,
    /// The person's id.
    pub person: String,
    /// Why them: on call for a team (and the layer), named, or fallback.
    pub reason: String,
    /// Paged because nobody was on call (or no policy took the alert).
    pub flagged: bool,
}

/// The response time of a severity (DOMAIN.md: 15 minutes, 2 hours, 24
/// hours).
pub fn response_time(severity: &str) -> Duration {
    match severity {
        "emergency" => Duration::minutes(15),
        "ordinary" => Duration::hours(2),
        _ => Duration::hours(24),
    }
}

/// The policy that takes an alert: the first matching in file order.
pub fn policy_for<'a>(
    roster: &'a Roster,
    severity: &str,
    site: &str,
    building: Option<&str>,
    kind: Option<&str>,
) -> Option<&'a Policy> {
    roster.policies.iter().find(|p| {
        p.severities.iter().any(|s| s == severity)
            && p.site == site
            && p.building.as_deref().is_none_or(|b| Some(b) == building)
            && (p.kinds.is_empty() || kind.is_some_and(|k| p.kinds.iter().any(|x| x == k)))
    })
}

/// The pages of an alert fired at `fired`, until acknowledged: the policy
/// that takes it (none for an emergency no policy takes, then every team
/// of the site, flagged), and the ladder.
pub fn pages<'a>(
    roster: &'a Roster,
    severity: &str,
    site: &str,
    building: Option<&str>,
    kind: Option<&str>,
    fired: DateTime<Utc>,
) -> (Option<&'a Policy>, Vec<Page>) {
    let Some(policy) = policy_for(roster, severity, site, building, kind) else {
        if severity != "emergency" {
            return (None, Vec::new());
        }
        let pages = roster
            .teams
            .iter()
            .filter(|t| t.site == site)
            .enumerate()
            .filter_map(|(k, t)| {
                on_call(t, &roster.holidays, fired).map(|(person, _)| Page {
                    at: fired,
                    round: 0,
                    step: k,
                    person,
                    reason: format!("no policy takes this emergency: on call for {}", t.name),
                    flagged: true,
                })
            })
            .collect();
        return (None, pages);
    };
    let last = policy.steps.last().map_or(Duration::zero(), |s| s.after);
    let every = policy
        .repeat_every
        .unwrap_or_else(|| response_time(severity))
        .max(last + Duration::minutes(1));
    let site_tz = site_tz(roster, site);
    let mut out = Vec::new();
    for round in 0..policy.repeat {
        for (k, step) in policy.steps.iter().enumerate() {
            let at = fired + every * round as i32 + step.after;
            let (person, reason, flagged) = match &step.notify {
                Target::Person(p) => (p.clone(), "named in the policy".to_owned(), false),
                Target::Team(id) => {
                    let team = roster.team(id).expect("checked on load");
                    match on_call(team, &roster.holidays, at) {
                        Some((p, layer)) => {
                            (p, format!("on call for {} ({layer})", team.name), false)
                        }
                        None => (
                            policy.fallback.clone(),
                            format!("fallback: nobody on call for {}", team.name),
                            true,
                        ),
                    }
                }
            };
            let at = if policy.wait_for_working_hours && severity != "emergency" {
                next_working_time(roster, &person, at, site_tz)
            } else {
                at
            };
            out.push(Page {
                at,
                round,
                step: k,
                person,
                reason,
                flagged,
            });
        }
    }
    (Some(policy), out)
}

/// A site's time zone: its teams' (UTC when it has none).
pub fn site_tz(roster: &Roster, site: &str) -> chrono_tz::Tz {
    roster
        .teams
        .iter()
        .find(|t| t.site == site)
        .map_or(chrono_tz::UTC, |t| t.tz)
}

/// Whom a page that could not reach `failed` (every contact method
/// failed) goes to now: the policy's next step (whoever it names at
/// `at`), the fallback after the last step, nobody once the fallback
/// itself failed. With the reason.
pub fn fall_through(
    roster: &Roster,
    policy: Option<&Policy>,
    step: usize,
    failed: &str,
    at: DateTime<Utc>,
) -> Option<(usize, String, String)> {
    let policy = policy?;
    let why = format!("every contact method of {failed} failed");
    for (k, s) in policy.steps.iter().enumerate().skip(step + 1) {
        let person = match &s.notify {
            Target::Person(p) => Some(p.clone()),
            Target::Team(id) => roster
                .team(id)
                .and_then(|t| on_call(t, &roster.holidays, at))
                .map(|(p, _)| p),
        };
        if let Some(p) = person.filter(|p| p != failed) {
            return Some((k, p, format!("{why}: step {} now", k + 1)));
        }
    }
    (policy.fallback != failed).then(|| {
        (
            policy.steps.len(),
            policy.fallback.clone(),
            format!("{why}: the policy's fallback"),
        )
    })
}

/// `at`, or the start of the person's next working hours when `at` is
/// outside them (in `tz`, the site's).
fn next_working_time(
    roster: &Roster,
    person: &str,
    at: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> DateTime<Utc> {
    let Some((from, to)) = roster.hours_of(person) else {
        return at;
    };
    let local = at.with_timezone(&tz);
    let time = local.time();
    if super::roster::within((from, to), time) {
        return at;
    }
    let day = if time < from || from > to && time < to {
        local.date_naive()
    } else {
        local.date_naive() + Duration::days(1)
    };
    super::roster::to_utc(
        day.and_time(from.min(NaiveTime::from_hms_opt(23, 59, 0).expect("time"))),
        tz,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROSTER: &str = r#"
[[person]]
id = "chan"
name = "陳大文"
[[person]]
id = "wong"
name = "Wong Siu Ming"
working_hours = "09:00-18:00"
[[person]]
id = "boss"
name = "Engineering manager"
[[person]]
id = "desk"
name = "Control room"

[[team]]
id = "lifts"
site = "hv"
trade = "lifts"
time_zone = "Asia/Hong_Kong"
[[team.layer]]
name = "days"
members = ["chan"]
start = 2026-12-07T08:00:00
every = "1d"
days = ["mon", "tue", "wed", "thu", "fri"]

[[team]]
id = "plumbing"
site = "hv"
trade = "plumbing"
time_zone = "Asia/Hong_Kong"
[[team.layer]]
name = "weekly"
members = ["wong"]
start = 2026-12-07T08:00:00
every = "1w"

[[policy]]
id = "lift-emergencies"
severities = ["emergency"]
site = "hv"
kinds = ["lift"]
fallback = "desk"
[[policy.step]]
after = "0m"
notify = "team:lifts"
[[policy.step]]
after = "5m"
notify = "person:boss"

[[policy]]
id = "routine-plumbing"
severities = ["routine"]
site = "hv"
fallback = "desk"
wait_for_working_hours = true
[[policy.step]]
after = "0m"
notify = "team:plumbing"
"#;

    fn roster() -> Roster {
        Roster::parse(ROSTER, std::path::Path::new("oncall.toml")).unwrap()
    }

    use crate::oncall::hk;

    #[test]
    fn an_entrapment_pages_the_lift_team_then_the_manager_and_repeats() {
        let r = roster();
        let fired = hk("2026-12-08T03:00:00");
        let (policy, pages) = pages(&r, "emergency", "hv", None, Some("lift"), fired);
        assert_eq!(policy.unwrap().id, "lift-emergencies");
        let ladder: Vec<(DateTime<Utc>, &str, bool)> = pages
            .iter()
            .map(|p| (p.at, p.person.as_str(), p.flagged))
            .collect();
        // Every 15 minutes (the emergency's response time), three times.
        assert_eq!(
            ladder,
            vec![
                (fired, "chan", false),
                (fired + Duration::minutes(5), "boss", false),
                (fired + Duration::minutes(15), "chan", false),
                (fired + Duration::minutes(20), "boss", false),
                (fired + Duration::minutes(30), "chan", false),
                (fired + Duration::minutes(35), "boss", false),
            ]
        );
    }

    #[test]
    fn a_gap_pages_the_fallback_flagged_and_emergencies_never_wait() {
        let r = roster();
        // Saturday: the lift team's layer covers weekdays only.
        let (_, ladder) = pages(
            &r,
            "emergency",
            "hv",
            None,
            Some("lift"),
            hk("2026-12-12T03:00:00"),
        );
        assert_eq!(ladder[0].person, "desk");
        assert!(
            ladder[0].flagged && ladder[0].reason.contains("nobody on call"),
            "{ladder:?}"
        );
        assert_eq!(ladder[0].at, hk("2026-12-12T03:00:00"));
        // An emergency no policy takes (a leak): every team of the site now.
        let (policy, ladder) = pages(
            &r,
            "emergency",
            "hv",
            None,
            Some("water_meter"),
            hk("2026-12-08T03:00:00"),
        );
        assert!(policy.is_none());
        let people: Vec<&str> = ladder.iter().map(|p| p.person.as_str()).collect();
        assert_eq!(people, ["chan", "wong"]);
        assert!(ladder
            .iter()
            .all(|p| p.flagged && p.at == hk("2026-12-08T03:00:00")));
        // A routine leak at 03:00 waits for Wong's 09:00.
        let (_, ladder) = pages(
            &r,
            "routine",
            "hv",
            None,
            Some("water_meter"),
            hk("2026-12-08T03:00:00"),
        );
        assert_eq!(ladder[0].at, hk("2026-12-08T09:00:00"));
        // A policy may not make an emergency wait.
        let bad = ROSTER.replace(
            "severities = [\"routine\"]",
            "severities = [\"routine\", \"emergency\"]",
        );
        let e = Roster::parse(&bad, std::path::Path::new("oncall.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("policy[1].wait_for_working_hours"), "{e}");
    }
}
