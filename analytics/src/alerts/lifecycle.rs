//! From findings to alert transitions: which alerts to open (or refresh)
//! and which to resolve. Pure; [`crate::job`] applies the actions through
//! `estatemon_domain::schema::alerts`, where the database enforces one open
//! alert per fault.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use estatemon_domain::rules::{Condition, Rule};
use estatemon_domain::schema::alerts::OpenAlert;

use crate::evaluate::{Finding, State};

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open an alert for this finding, or refresh the open one's evidence.
    Open(Finding),
    /// Resolve an open alert; `at` is when the condition ended (data time).
    Resolve { id: i64, at: DateTime<Utc> },
}

/// Reconciles one rule's findings with its open alerts.
pub fn reconcile(
    rule: &Rule,
    findings: Vec<Finding>,
    open: &[&OpenAlert],
    now: DateTime<Utc>,
) -> Vec<Action> {
    let by_subject: HashMap<&str, &OpenAlert> =
        open.iter().map(|a| (a.subject.as_str(), *a)).collect();
    let mut seen = std::collections::HashSet::new();
    let mut actions = Vec::new();
    for f in findings {
        seen.insert(f.subject.clone());
        let existing = by_subject.get(f.subject.as_str());
        match (&f.state, existing) {
            (State::Firing { last, .. }, Some(a)) if *last <= a.last_seen_at => {}
            (State::Firing { .. }, _) => actions.push(Action::Open(f)),
            // A clear older than the alert's own evidence is stale (a lift
            // whose clock runs ahead sent its fault before the window shows
            // it; an in-service state from before the fault): it resolves
            // nothing, or the next cycle would open and page it again.
            (State::Clear { at }, Some(a)) if *at < a.last_seen_at => {}
            (State::Clear { at }, Some(a)) => actions.push(Action::Resolve {
                id: a.id,
                at: (*at).max(a.started_at),
            }),
            (State::Clear { .. }, None) => {}
            // Kept as it is: open stays open, nothing is opened.
            (State::Held, _) => {}
        }
    }
    // Event alerts whose events have left the window: quiet for longer than
    // `resolve_after`, so over.
    let resolve_after = match &rule.condition {
        Condition::Event(e) => Some(e.resolve_after),
        Condition::Denied(d) => Some(d.resolve_after),
        _ => None,
    };
    if let Some(after) = resolve_after {
        for a in open {
            let at = a.last_seen_at + after.chrono();
            if !seen.contains(&a.subject) && at <= now {
                actions.push(Action::Resolve { id: a.id, at });
            }
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use estatemon_domain::rules::RuleSet;

    fn rule(name: &str) -> Rule {
        RuleSet::defaults()
            .rules
            .into_iter()
            .find(|r| r.name == name)
            .unwrap()
    }

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_780_000_000, 0).unwrap() + Duration::minutes(minutes)
    }

    fn firing(subject: &str, since: i64, last: i64) -> Finding {
        Finding {
            subject: subject.into(),
            device: None,
            state: State::Firing {
                since: t(since),
                last: t(last),
                value: Some(1.0),
            },
        }
    }

    fn open(id: i64, subject: &str, started: i64, last: i64) -> OpenAlert {
        OpenAlert {
            id,
            rule: "r".into(),
            subject: subject.into(),
            started_at: t(started),
            last_seen_at: t(last),
        }
    }

    #[test]
    fn firing_opens_once_and_refreshes_only_on_new_evidence() {
        let r = rule("lift_motor_hot");
        let f = firing("lift-1", 0, 10);
        assert_eq!(
            reconcile(&r, vec![f.clone()], &[], t(10)),
            [Action::Open(f.clone())]
        );
        let a = open(7, "lift-1", 0, 10);
        assert!(reconcile(&r, vec![f], &[&a], t(11)).is_empty());
        let newer = firing("lift-1", 0, 11);
        assert_eq!(
            reconcile(&r, vec![newer.clone()], &[&a], t(11)),
            [Action::Open(newer)]
        );
    }

    #[test]
    fn clear_resolves_open_alerts_only() {
        let r = rule("lift_motor_hot");
        let clear = Finding {
            subject: "lift-1".into(),
            device: None,
            state: State::Clear { at: t(30) },
        };
        assert!(reconcile(&r, vec![clear.clone()], &[], t(30)).is_empty());
        let a = open(7, "lift-1", 0, 20);
        assert_eq!(
            reconcile(&r, vec![clear], &[&a], t(31)),
            [Action::Resolve { id: 7, at: t(30) }]
        );
    }

    #[test]
    fn event_alerts_resolve_after_their_quiet_time_even_out_of_the_window() {
        let r = rule("door_forced"); // resolve_after 30m
        let a = open(3, "lift-1", 0, 5);
        assert!(reconcile(&r, vec![], &[&a], t(34)).is_empty());
        assert_eq!(
            reconcile(&r, vec![], &[&a], t(36)),
            [Action::Resolve { id: 3, at: t(35) }]
        );
        // Not for gauge rules: no finding means "cannot tell", keep it.
        let g = rule("lift_motor_hot");
        assert!(reconcile(&g, vec![], &[&a], t(600)).is_empty());
    }

    #[test]
    fn a_held_alert_stays_open_and_none_is_opened() {
        let r = rule("lift_fault"); // resolve_after 12h
        let held = Finding {
            subject: "lift-1".into(),
            device: None,
            state: State::Held,
        };
        let a = open(9, "lift-1", 0, 5);
        // 24 h after its last fault, the lift still down: kept open.
        assert!(reconcile(&r, vec![held.clone()], &[&a], t(24 * 60)).is_empty());
        assert!(reconcile(&r, vec![held], &[], t(24 * 60)).is_empty());
        // An in-service state from before its last fault is stale: it
        // resolves nothing (a lift clock ahead would be paged twice).
        let stale = Finding {
            subject: "lift-1".into(),
            device: None,
            state: State::Clear { at: t(2) },
        };
        assert!(reconcile(&r, vec![stale], &[&a], t(30)).is_empty());
        // Back in service after it: over then.
        let back = Finding {
            subject: "lift-1".into(),
            device: None,
            state: State::Clear { at: t(25 * 60) },
        };
        assert_eq!(
            reconcile(&r, vec![back], &[&a], t(25 * 60 + 5)),
            [Action::Resolve {
                id: 9,
                at: t(25 * 60)
            }]
        );
    }
}
