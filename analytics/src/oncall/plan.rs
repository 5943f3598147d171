//! Planning: which pages of each open alert's ladder are due at `now`,
//! written to `oncall_pages` once. The unique index on (alert, step, due
//! time) lets any number of replicas plan at once and still page each step
//! once; the pure ladder is [`super::escalation::pages`], so a hand-over
//! between two steps pages whoever is on call when each step comes due.
//!
//! A ladder runs from the alert's firing, or from the end of its last
//! snooze. When planning was held up (the job was down), each step pages
//! once for its latest due round, not once per round missed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::escalation;
use super::roster::Roster;

/// What one planning pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Planned {
    /// Open alerts looked at.
    pub alerts: usize,
    /// Pages written (due now).
    pub paged: usize,
    /// Of which flagged (a gap in the schedule, no policy).
    pub flagged: usize,
    /// Steps that page someone else than last time (a hand-over).
    pub handovers: usize,
}

/// Writes the pages due at `now` for every firing alert (not acknowledged,
/// silenced or snoozed) and wakes the notifiers.
pub async fn plan(
    client: &impl GenericClient,
    roster: &Roster,
    now: DateTime<Utc>,
) -> Result<Planned, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.id, a.severity, coalesce(a.site_id, a.labels->>'site', ''),
                    coalesce(d.building_id, a.labels->>'building'), d.kind,
                    a.fired_at, a.snoozed_until
               FROM alerts a LEFT JOIN devices d ON d.device_id = a.device_id
              WHERE a.state = 'firing' AND a.silenced_by IS NULL AND a.fired_at <= $1
                AND (a.snoozed_until IS NULL OR a.snoozed_until <= $1)",
            &[&now],
        )
        .await?;
    let mut out = Planned {
        alerts: rows.len(),
        ..Planned::default()
    };
    if rows.is_empty() {
        return Ok(out);
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    // Each alert's latest page per step: (due, person); and the steps a
    // fall-through already paged in a round (not paged again when due).
    let mut last: HashMap<(i64, i32), (DateTime<Utc>, String)> = HashMap::new();
    let mut fallen: std::collections::HashSet<(i64, i32, i32)> = Default::default();
    for r in client
        .query(
            "SELECT alert_id, step, due_at, person, round, fallthrough_of IS NOT NULL
               FROM oncall_pages WHERE alert_id = ANY($1)",
            &[&ids],
        )
        .await?
    {
        let key = (r.get::<_, i64>(0), r.get::<_, i32>(1));
        if r.get::<_, bool>(5) {
            fallen.insert((key.0, key.1, r.get(4)));
            continue;
        }
        let due: DateTime<Utc> = r.get(2);
        if last.get(&key).is_none_or(|(d, _)| *d < due) {
            last.insert(key, (due, r.get(3)));
        }
    }
    let mut new = NewPages::default();
    let mut handovers = Vec::new();
    for r in &rows {
        let id: i64 = r.get(0);
        let severity: String = r.get(1);
        let site: String = r.get(2);
        let building: Option<String> = r.get(3);
        let kind: Option<String> = r.get(4);
        let fired: DateTime<Utc> = r.get(5);
        let snoozed: Option<DateTime<Utc>> = r.get(6);
        let base = snoozed.map_or(fired, |s| s.max(fired));
        let (policy, ladder) = escalation::pages(
            roster,
            &severity,
            &site,
            building.as_deref(),
            kind.as_deref(),
            base,
        );
        // The latest due round of each step.
        let mut due: HashMap<usize, &escalation::Page> = HashMap::new();
        for p in ladder.iter().filter(|p| p.at <= now) {
            due.insert(p.step, p);
        }
        let mut steps: Vec<_> = due.into_values().collect();
        steps.sort_by_key(|p| (p.at, p.step));
        for p in steps {
            let key = (id, p.step as i32);
            if fallen.contains(&(id, p.step as i32, p.round as i32)) {
                // Paged already when the step before it could reach nobody.
                continue;
            }
            match last.get(&key) {
                Some((d, _)) if *d >= p.at => continue,
                Some((_, before)) if *before != p.person && !p.flagged => {
                    handovers.push((id, before.clone(), p.person.clone(), p.step));
                }
                _ => {}
            }
            let tz = escalation::site_tz(roster, &site);
            new.push(id, policy.map(|p| p.id.clone()), p, roster, tz);
        }
    }
    if new.alert.is_empty() {
        return Ok(out);
    }
    let inserted = client
        .query(
            "INSERT INTO oncall_pages (alert_id, policy, round, step, due_at, person, reason, flagged,
                                       person_name, out_of_hours)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::int[],
                                  $5::timestamptz[], $6::text[], $7::text[], $8::bool[],
                                  $9::text[], $10::bool[])
             ON CONFLICT DO NOTHING
             RETURNING alert_id, step, flagged",
            &[
                &new.alert,
                &new.policy,
                &new.round,
                &new.step,
                &new.due,
                &new.person,
                &new.reason,
                &new.flagged,
                &new.name,
                &new.out_of_hours,
            ],
        )
        .await?;
    out.paged = inserted.len();
    out.flagged = inserted.iter().filter(|r| r.get::<_, bool>(2)).count();
    let written: std::collections::HashSet<(i64, i32)> =
        inserted.iter().map(|r| (r.get(0), r.get(1))).collect();
    for (alert, before, after, step) in handovers {
        if !written.contains(&(alert, step as i32)) {
            continue;
        }
        out.handovers += 1;
        client
            .execute(
                "INSERT INTO oncall_events (alert_id, at, kind, person, detail)
                 VALUES ($1, $2, 'handover', $3, $4)",
                &[
                    &alert,
                    &now,
                    &after,
                    &format!("step {}: {before} handed over to {after}", step + 1),
                ],
            )
            .await?;
    }
    if out.paged > 0 {
        client
            .execute(
                "SELECT pg_notify($1, 'pages')",
                &[&estatemon_domain::schema::alerts::CHANNEL],
            )
            .await?;
    }
    Ok(out)
}

/// Pages to write, column by column (one `unnest` insert).
#[derive(Default)]
struct NewPages {
    alert: Vec<i64>,
    policy: Vec<Option<String>>,
    round: Vec<i32>,
    step: Vec<i32>,
    due: Vec<DateTime<Utc>>,
    person: Vec<String>,
    reason: Vec<String>,
    flagged: Vec<bool>,
    name: Vec<String>,
    out_of_hours: Vec<bool>,
}

impl NewPages {
    fn push(
        &mut self,
        alert: i64,
        policy: Option<String>,
        p: &escalation::Page,
        roster: &Roster,
        tz: chrono_tz::Tz,
    ) {
        self.name.push(roster.name_of(&p.person));
        self.out_of_hours.push(super::report::out_of_hours(
            Some(roster),
            &p.person,
            p.at,
            tz,
        ));
        self.alert.push(alert);
        self.policy.push(policy);
        self.round.push(p.round as i32);
        self.step.push(p.step as i32);
        self.due.push(p.at);
        self.person.push(p.person.clone());
        self.reason.push(p.reason.clone());
        self.flagged.push(p.flagged);
    }
}
