//! On-call: who answers an alert, and when. The roster ([`roster`]: people,
//! teams by site, building and trade, rotation layers with a hand-over at a
//! local time, overrides, public holidays) and the pure questions asked of
//! it ([`schedule`]: who is on call now and next, the shifts of a range,
//! the gaps nobody covers), and each person's shifts as an iCalendar feed
//! ([`ical`]), the escalation ladder an alert follows ([`escalation`]), and
//! the chat channels a webhook may speak ([`channels`]: DingTalk, Feishu,
//! WeCom, Slack, estatemon's signed JSON).
//!
//! Files: `roster` reads and checks the roster file, `schedule` answers from
//! it, `escalation` plans an alert's pages, `ical` renders a person's
//! calendar, `plan` writes the pages that came due (once per step, across
//! replicas), `deliver` sends them on each person's contact methods with
//! fall-through, `links` signs the acknowledge / resolve / snooze links.

pub mod channels;
pub mod deliver;
pub mod escalation;
pub mod ical;
pub mod intake;
pub mod links;
pub mod plan;
pub mod replies;
pub mod report;
pub mod roster;
pub mod schedule;
pub mod source;
pub mod timeline;
pub mod watch;

/// A Hong Kong local time (`2026-12-08T03:00:00`) in UTC, for the tests.
#[cfg(test)]
pub(crate) fn hk(local: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(&format!("{local}+08:00"))
        .expect("a local time")
        .with_timezone(&chrono::Utc)
}
