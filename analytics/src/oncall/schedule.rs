//! Who is on call: pure functions of a team's schedule and the time.
//!
//! A layer's turns start at its `start` (local) and follow each other every
//! `every`: whole local days hand over at the same local time whatever the
//! clocks do (a turn across a change to summer time is an hour shorter),
//! hours are fixed lengths. A layer restricted to some days covers only
//! instants whose local day is one of them. At any instant the person on
//! call is the last override covering it, else the member of the highest
//! layer covering it, else nobody (a gap, said so).

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::Serialize;

use super::roster::{to_utc, Every, Layer, Team};

/// One stretch of one person on call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shift {
    pub person: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The layer's name, or `override`.
    pub source: String,
}

impl Layer {
    /// The turn holding `t`: (member index, turn start, turn end).
    fn turn(&self, t: DateTime<Utc>, team: &Team) -> (usize, DateTime<Utc>, DateTime<Utc>) {
        let n = self.members.len().max(1) as i64;
        match self.every {
            Every::Hours(h) => {
                let start = to_utc(self.start, team.tz);
                let len = Duration::hours(i64::from(h));
                let k = (t - start).num_seconds().div_euclid(len.num_seconds());
                let a = start + len * k as i32;
                (k.rem_euclid(n) as usize, a, a + len)
            }
            Every::Days(d) => {
                let d = i64::from(d);
                let at = |k: i64| to_utc(self.start + Duration::days(k * d), team.tz);
                // The local-day estimate, corrected by a step either way.
                let local = t.with_timezone(&team.tz).naive_local();
                let mut k = (local - self.start).num_seconds().div_euclid(d * 86_400);
                while at(k) > t {
                    k -= 1;
                }
                while at(k + 1) <= t {
                    k += 1;
                }
                (k.rem_euclid(n) as usize, at(k), at(k + 1))
            }
        }
    }

    /// Whether the layer covers `t` (its days, its holidays).
    fn covers(&self, t: DateTime<Utc>, team: &Team, holidays: &HashSet<NaiveDate>) -> bool {
        if self.days.is_empty() && !self.holidays {
            return true;
        }
        let day = t.with_timezone(&team.tz).date_naive();
        self.days.contains(&day.weekday()) || (self.holidays && holidays.contains(&day))
    }
}

/// Who is on call for `team` at `t`, and from which layer (or `override`);
/// none in a gap.
pub fn on_call(
    team: &Team,
    holidays: &HashSet<NaiveDate>,
    t: DateTime<Utc>,
) -> Option<(String, String)> {
    if let Some(o) = team
        .overrides
        .iter()
        .rev()
        .find(|o| o.from <= t && t < o.to)
    {
        return Some((o.person.clone(), "override".into()));
    }
    team.layers
        .iter()
        .rev()
        .find(|l| l.covers(t, team, holidays))
        .map(|l| (l.members[l.turn(t, team).0].clone(), l.name.clone()))
}

/// The shifts of `team` over `[from, to)`, in order, each a stretch of one
/// person (adjacent turns of the same person joined); gaps left out.
pub fn shifts(
    team: &Team,
    holidays: &HashSet<NaiveDate>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<Shift> {
    if to <= from {
        return Vec::new();
    }
    // Every instant where the answer may change: turn boundaries, local
    // midnights (day-restricted layers), override edges.
    let mut cuts: BTreeSet<DateTime<Utc>> = BTreeSet::from([from, to]);
    for l in &team.layers {
        let mut t = from;
        while t < to {
            let (_, _, end) = l.turn(t, team);
            if end < to {
                cuts.insert(end);
            }
            t = end;
        }
    }
    let mut day = from.with_timezone(&team.tz).date_naive();
    loop {
        let midnight = to_utc(day.and_time(chrono::NaiveTime::MIN), team.tz);
        if midnight >= to {
            break;
        }
        if midnight > from {
            cuts.insert(midnight);
        }
        day = day.succ_opt().unwrap_or(day);
        if cuts.len() > 200_000 {
            break;
        }
    }
    for o in &team.overrides {
        for t in [o.from, o.to] {
            if t > from && t < to {
                cuts.insert(t);
            }
        }
    }
    let cuts: Vec<DateTime<Utc>> = cuts.into_iter().collect();
    let mut out: Vec<Shift> = Vec::new();
    for w in cuts.windows(2) {
        let Some((person, source)) = on_call(team, holidays, w[0]) else {
            continue;
        };
        match out.last_mut() {
            Some(last) if last.person == person && last.to == w[0] => last.to = w[1],
            _ => out.push(Shift {
                person,
                from: w[0],
                to: w[1],
                source,
            }),
        }
    }
    out
}

/// Who is on call at `at` (and from which layer), until when, and who is
/// next, looking `ahead`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NowNext {
    pub current: Option<(String, String)>,
    /// When the current stretch ends; none when nobody is on call or it
    /// lasts beyond `ahead`.
    pub until: Option<DateTime<Utc>>,
    /// The next person's stretch.
    pub next: Option<Shift>,
}

/// See [`NowNext`].
pub fn now_and_next(
    team: &Team,
    holidays: &HashSet<NaiveDate>,
    at: DateTime<Utc>,
    ahead: Duration,
) -> NowNext {
    let horizon = at + ahead;
    let current = on_call(team, holidays, at);
    let shifts = shifts(team, holidays, at, horizon);
    let until = shifts
        .first()
        .filter(|s| s.from == at && current.is_some() && s.to < horizon)
        .map(|s| s.to);
    let next = shifts
        .into_iter()
        .find(|s| Some(&s.person) != current.as_ref().map(|c| &c.0));
    NowNext {
        current,
        until,
        next,
    }
}

/// The gaps of `[from, to)` with nobody on call.
pub fn gaps(
    team: &Team,
    holidays: &HashSet<NaiveDate>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut at = from;
    for s in shifts(team, holidays, from, to) {
        if s.from > at {
            out.push((at, s.from));
        }
        at = s.to;
    }
    if at < to {
        out.push((at, to));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oncall::roster::Roster;

    const ROSTER: &str = r#"
holidays = [2026-12-25]

[[person]]
id = "chan"
name = "陳大文"
language = "zh"
contacts = { phone = "+852 5555 0101" }
[[person]]
id = "wong"
name = "Wong Siu Ming"
[[person]]
id = "lee"
name = "李嘉欣"
[[person]]
id = "ng"
name = "Ng Ka Yan"

[[team]]
id = "hv-lifts"
site = "harbour-view"
trade = "lifts"
time_zone = "Asia/Hong_Kong"
[[team.layer]]
name = "weekly"
members = ["chan", "wong"]
start = 2026-12-07T08:00:00
every = "1w"
[[team.layer]]
name = "weekends and holidays"
members = ["lee"]
start = 2026-12-05T00:00:00
every = "1d"
days = ["sat", "sun", "holiday"]
[[team.override]]
person = "ng"
from = 2026-12-09T18:00:00
to = 2026-12-10T08:00:00

[[team]]
id = "london"
site = "elsewhere"
trade = "electrical"
time_zone = "Europe/London"
[[team.layer]]
name = "daily"
members = ["chan", "wong"]
start = 2026-03-27T08:00:00
every = "1d"
"#;

    fn roster() -> Roster {
        Roster::parse(ROSTER, std::path::Path::new("oncall.toml")).unwrap()
    }

    use crate::oncall::hk;

    #[test]
    fn weekly_hand_over_weekends_holidays_and_an_override() {
        let r = roster();
        let team = r.team("hv-lifts").unwrap();
        let who = |s: &str| on_call(team, &r.holidays, hk(s)).map(|(p, _)| p);
        // Monday 7 December 08:00: Chan's week; before it, Wong's.
        assert_eq!(who("2026-12-07T07:59:59").as_deref(), Some("wong"));
        assert_eq!(who("2026-12-07T08:00:00").as_deref(), Some("chan"));
        assert_eq!(who("2026-12-14T08:00:00").as_deref(), Some("wong"));
        // Ng covers Wednesday night.
        assert_eq!(who("2026-12-09T19:00:00").as_deref(), Some("ng"));
        assert_eq!(who("2026-12-10T08:00:00").as_deref(), Some("chan"));
        // Lee has the weekends and Christmas (a Friday).
        assert_eq!(who("2026-12-12T10:00:00").as_deref(), Some("lee"));
        assert_eq!(who("2026-12-25T10:00:00").as_deref(), Some("lee"));
        // Christmas Eve is in Chan's third week (from 21 December 08:00).
        assert_eq!(who("2026-12-24T10:00:00").as_deref(), Some("chan"));
        let week = shifts(
            team,
            &r.holidays,
            hk("2026-12-07T08:00:00"),
            hk("2026-12-14T08:00:00"),
        );
        let people: Vec<&str> = week.iter().map(|s| s.person.as_str()).collect();
        assert_eq!(people, ["chan", "ng", "chan", "lee", "chan"], "{week:#?}");
        assert!(gaps(
            team,
            &r.holidays,
            hk("2026-12-01T00:00:00"),
            hk("2027-01-01T00:00:00")
        )
        .is_empty());
    }

    #[test]
    fn a_daily_hand_over_keeps_its_local_time_across_summer_time() {
        let r = roster();
        let team = r.team("london").unwrap();
        // Clocks go forward at 01:00 UTC on Sunday 29 March 2026: 08:00 is
        // 08:00 UTC before, 07:00 UTC from that Sunday on.
        let utc = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let days = shifts(
            team,
            &r.holidays,
            utc("2026-03-28T08:00:00Z"),
            utc("2026-03-31T07:00:00Z"),
        );
        let edges: Vec<String> = days.iter().map(|s| s.from.to_rfc3339()).collect();
        assert_eq!(
            edges,
            [
                "2026-03-28T08:00:00+00:00",
                "2026-03-29T07:00:00+00:00",
                "2026-03-30T07:00:00+00:00"
            ]
        );
        // The turn across the change is an hour short; the next is whole.
        assert_eq!(days[0].to - days[0].from, Duration::hours(23));
        assert_eq!(days[1].to - days[1].from, Duration::hours(24));
    }

    #[test]
    fn roster_errors_name_the_field_and_contacts_stay_out_of_logs() {
        let bad = ROSTER.replace(
            "members = [\"chan\", \"wong\"]\nstart = 2026-12-07",
            "members = [\"chan\", \"nobody\"]\nstart = 2026-12-07",
        );
        let e = Roster::parse(&bad, std::path::Path::new("oncall.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("oncall.toml")
                && e.contains("team[0].layer[0].members")
                && e.contains("nobody"),
            "{e}"
        );
        let bad = ROSTER.replace("every = \"1w\"", "every = \"fortnightly\"");
        let e = Roster::parse(&bad, std::path::Path::new("oncall.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("team[0].layer[0].every"), "{e}");
        let r = roster();
        let shown = format!("{:?}", r.person("chan").unwrap());
        assert!(
            !shown.contains("5555") && shown.contains("left out"),
            "{shown}"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever the rotation: shifts tile the range with no overlap,
            /// each is the person `on_call` names inside it, and a team
            /// with an unrestricted layer has no gap.
            #[test]
            fn shifts_tile_the_range(
                members in 1usize..5,
                every_h in prop_oneof![Just(8u32), Just(12), Just(24), Just(72), Just(168)],
                offset_h in -400i64..400,
                span_h in 1i64..600,
                zone in prop_oneof![Just("Asia/Hong_Kong"), Just("Europe/London"), Just("America/New_York")],
            ) {
                let people: String = (0..members)
                    .map(|i| format!("[[person]]\nid = \"p{i}\"\nname = \"P{i}\"\n"))
                    .collect();
                let list: Vec<String> = (0..members).map(|i| format!("\"p{i}\"")).collect();
                let text = format!(
                    "{people}[[team]]\nid = \"t\"\nsite = \"s\"\ntrade = \"lifts\"\ntime_zone = \"{zone}\"\n[[team.layer]]\nname = \"l\"\nmembers = [{}]\nstart = 2026-03-01T08:30:00\nevery = \"{every_h}h\"\n",
                    list.join(", ")
                );
                let r = Roster::parse(&text, std::path::Path::new("r.toml")).unwrap();
                let team = &r.teams[0];
                let from = DateTime::parse_from_rfc3339("2026-03-20T00:00:00Z").unwrap().with_timezone(&Utc)
                    + Duration::hours(offset_h);
                let to = from + Duration::hours(span_h);
                let s = shifts(team, &r.holidays, from, to);
                prop_assert!(!s.is_empty());
                prop_assert_eq!(s[0].from, from);
                prop_assert_eq!(s.last().unwrap().to, to);
                for w in s.windows(2) {
                    prop_assert_eq!(w[0].to, w[1].from);
                    prop_assert!(members == 1 || w[0].person != w[1].person || w[0].source != w[1].source);
                }
                for x in &s {
                    prop_assert!(x.from < x.to);
                    let mid = x.from + (x.to - x.from) / 2;
                    prop_assert_eq!(on_call(team, &r.holidays, mid).map(|(p, _)| p), Some(x.person.clone()));
                }
            }
        }
    }
}
