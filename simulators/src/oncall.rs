//! On-call people as a simulation: who is on duty when (explicit shifts,
//! written as the roster's overrides so estatemon reads them as given),
//! an escalation ladder, and how each person behaves when paged (answers
//! after a delay, or never). The ground truth says who should be paged
//! when, from this model alone (not from estatemon's own schedule or
//! escalation code), so a test can compare what estatemon paged with it.
//!
//! A person answers (acknowledges) `delay` after a page to them was
//! delivered; the first answer stops the ladder: a page due at or after
//! it is not sent.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// Someone on the roster and how they answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Responder {
    pub id: String,
    pub name: String,
    pub phone: String,
    /// None: never answers.
    pub answers_after: Option<Duration>,
}

/// Whom a step pages.
#[derive(Debug, Clone, PartialEq)]
pub enum Who {
    /// Whoever's shift covers the moment.
    OnDuty,
    Person(String),
}

/// The scenario: people, the duty shifts of one team, the ladder.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub site: String,
    pub people: Vec<Responder>,
    /// (person, from, to): who is on duty when; gaps page the fallback.
    pub shifts: Vec<(String, DateTime<Utc>, DateTime<Utc>)>,
    pub steps: Vec<(Duration, Who)>,
    pub repeat_every: Duration,
    pub repeat: u32,
    pub fallback: String,
}

/// A page the truth expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedPage {
    pub at: DateTime<Utc>,
    pub person: String,
    /// Paged as the fallback (nobody on duty).
    pub fallback: bool,
}

/// What the truth expects of one alert fired at `fired`: the pages, and
/// who answers when (None: nobody).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expected {
    pub pages: Vec<ExpectedPage>,
    pub answered: Option<(String, DateTime<Utc>)>,
}

impl Scenario {
    fn on_duty(&self, at: DateTime<Utc>) -> Option<&str> {
        self.shifts
            .iter()
            .find(|(_, from, to)| *from <= at && at < *to)
            .map(|(p, _, _)| p.as_str())
    }

    fn responder(&self, id: &str) -> Option<&Responder> {
        self.people.iter().find(|p| p.id == id)
    }

    /// The ground truth for an emergency fired at `fired`.
    pub fn expected(&self, fired: DateTime<Utc>) -> Expected {
        use chrono::Datelike;
        assert!(
            fired.with_timezone(&chrono_tz::Asia::Hong_Kong).weekday() != chrono::Weekday::Sun,
            "the scenario's Sundays belong to the roster's fallback layer"
        );
        let mut ladder: Vec<ExpectedPage> = Vec::new();
        for round in 0..self.repeat {
            for (after, who) in &self.steps {
                let at = fired + self.repeat_every * round as i32 + *after;
                let (person, fallback) = match who {
                    Who::Person(p) => (p.clone(), false),
                    Who::OnDuty => match self.on_duty(at) {
                        Some(p) => (p.to_owned(), false),
                        None => (self.fallback.clone(), true),
                    },
                };
                ladder.push(ExpectedPage {
                    at,
                    person,
                    fallback,
                });
            }
        }
        ladder.sort_by_key(|p| p.at);
        let mut pages = Vec::new();
        let mut answered: Option<(String, DateTime<Utc>)> = None;
        for p in ladder {
            if answered.as_ref().is_some_and(|(_, t)| p.at >= *t) {
                break;
            }
            if let Some(delay) = self.responder(&p.person).and_then(|r| r.answers_after) {
                let t = p.at + delay;
                if answered.as_ref().is_none_or(|(_, a)| t < *a) {
                    answered = Some((p.person.clone(), t));
                }
            }
            pages.push(p);
        }
        Expected { pages, answered }
    }

    /// The roster estatemon is given: the people, one team whose duty is
    /// the shifts (as overrides: no rotation to interpret), one emergency
    /// policy with the ladder.
    pub fn roster_toml(&self) -> String {
        let mut t = String::new();
        for p in &self.people {
            t.push_str(&format!(
                "[[person]]\nid = \"{}\"\nname = \"{}\"\ncontacts = {{ phone = \"{}\" }}\n",
                p.id, p.name, p.phone
            ));
        }
        let local = |d: DateTime<Utc>| {
            d.with_timezone(&chrono_tz::Asia::Hong_Kong)
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string()
        };
        t.push_str(&format!(
            "[[team]]\nid = \"duty\"\nsite = \"{}\"\ntrade = \"security\"\ntime_zone = \"Asia/Hong_Kong\"\n",
            self.site
        ));
        // estatemon wants a rotation layer in every team: the fallback on
        // Sundays, a day the scenario's times avoid (checked in
        // `expected`), so every other moment is the shifts or a gap.
        t.push_str(&format!(
            "[[team.layer]]\nname = \"sundays\"\nmembers = [\"{}\"]\nstart = 2026-01-04T00:00:00\n\
             every = \"1w\"\ndays = [\"sun\"]\n",
            self.fallback
        ));
        for (p, from, to) in &self.shifts {
            t.push_str(&format!(
                "[[team.override]]\nperson = \"{p}\"\nfrom = {}\nto = {}\n",
                local(*from),
                local(*to)
            ));
        }
        t.push_str(&format!(
            "[[policy]]\nid = \"duty-emergencies\"\nseverities = [\"emergency\"]\nsite = \"{}\"\n\
             fallback = \"{}\"\nrepeat_every = \"{}m\"\nrepeat = {}\n",
            self.site,
            self.fallback,
            self.repeat_every.num_minutes(),
            self.repeat
        ));
        for (after, who) in &self.steps {
            let notify = match who {
                Who::OnDuty => "team:duty".to_owned(),
                Who::Person(p) => format!("person:{p}"),
            };
            t.push_str(&format!(
                "[[policy.step]]\nafter = \"{}m\"\nnotify = \"{notify}\"\n",
                after.num_minutes()
            ));
        }
        t
    }

    /// Whether `person`, paged (delivered) at `paged_at`, answers by `now`.
    pub fn answers_by(&self, person: &str, paged_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.responder(person)
            .and_then(|r| r.answers_after)
            .is_some_and(|d| paged_at + d <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn scenario() -> Scenario {
        let person = |id: &str, after: Option<i64>| Responder {
            id: id.into(),
            name: id.into(),
            phone: format!("+852{}", id.len()),
            answers_after: after.map(Duration::minutes),
        };
        Scenario {
            site: "s".into(),
            people: vec![
                person("slow", Some(20)),
                person("never", None),
                person("quick", Some(3)),
                person("desk", None),
            ],
            shifts: vec![
                (
                    "never".into(),
                    at("2026-12-08T00:00:00Z"),
                    at("2026-12-08T00:10:00Z"),
                ),
                (
                    "slow".into(),
                    at("2026-12-08T00:10:00Z"),
                    at("2026-12-08T01:00:00Z"),
                ),
            ],
            steps: vec![
                (Duration::zero(), Who::OnDuty),
                (Duration::minutes(5), Who::Person("quick".into())),
            ],
            repeat_every: Duration::minutes(15),
            repeat: 3,
            fallback: "desk".into(),
        }
    }

    #[test]
    fn the_first_answer_stops_the_ladder() {
        let s = scenario();
        let e = s.expected(at("2026-12-08T00:00:00Z"));
        let people: Vec<&str> = e.pages.iter().map(|p| p.person.as_str()).collect();
        // "never" is on duty, does not answer; "quick" at +5 answers at +8.
        assert_eq!(people, ["never", "quick"]);
        assert_eq!(
            e.answered,
            Some(("quick".into(), at("2026-12-08T00:08:00Z")))
        );
        // Before any duty: the fallback, who never answers; quick answers.
        let e = s.expected(at("2026-12-07T23:00:00Z"));
        assert!(e.pages[0].fallback && e.pages[0].person == "desk");
        assert_eq!(e.pages.len(), 2);
        assert!(s
            .roster_toml()
            .contains("[[team.override]]\nperson = \"never\"\nfrom = 2026-12-08T08:00:00"));
    }
}
