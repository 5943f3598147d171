//! What the `mode`, `expect` and `inspection` rules and the lifts'
//! service modes read, held for the whole replay.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use estatemon_domain::rules::{Condition, RuleSet};
use tokio_postgres::Client;

use crate::window::{self, Commissioned, Devices, History, Inspected};

/// How far back the `mode` rules and the service modes look for a state.
const STATE_HORIZON: Duration = Duration::days(90);
/// How far back the `expect` rules look for the expected event.
const EXPECT_HORIZON: Duration = Duration::days(400);

/// What the `mode`, `expect` and `inspection` rules and the lifts' service
/// modes read, for the whole replay: few rows (state changes, expected
/// events, inspections), read once.
pub(super) struct SlowHistory {
    /// State events per device (lifts and `mode` rule devices), in time
    /// order, with the index where each one's run of the same state began.
    states: HashMap<String, States>,
    /// `mode` rule devices.
    mode_devices: BTreeSet<String>,
    /// Lifts (for the service-mode silences).
    lifts: Vec<String>,
    /// Per `expect` rule, per watched device: the expected events' times.
    expected: HashMap<String, HashMap<String, Vec<DateTime<Utc>>>>,
    /// Per `expect` rule, per watched device: the times its first event
    /// can be, in order (the first after the replay's horizon, or every
    /// event when the horizon passes over some during the replay).
    first_events: HashMap<String, HashMap<String, Vec<DateTime<Utc>>>>,
    /// Tracked devices with every inspection and maintenance visit.
    inspected: HashMap<String, Inspected>,
    /// What each tracked device's entry in the window was built from.
    inspection_keys: HashMap<String, InspectionKey>,
    commissioned: Commissioned,
}

/// A tracked device's inspections in the span (first, end) and its start.
type InspectionKey = (usize, usize, Option<DateTime<Utc>>);

#[derive(Default)]
struct States {
    ts: Vec<DateTime<Utc>>,
    state: Vec<Option<String>>,
    run_start: Vec<usize>,
}

impl States {
    /// Where each event's run of the same state began: after the latest
    /// event of another state (an event without a state, which SQL's `<>`
    /// does not count as another, neither ends a run nor starts one).
    fn index_runs(&mut self) {
        let mut last_of: HashMap<&str, usize> = HashMap::new();
        self.run_start.clear();
        for i in 0..self.ts.len() {
            let start = match self.state[i].as_deref() {
                Some(cur) => last_of
                    .iter()
                    .filter(|(st, _)| **st != cur)
                    .map(|(_, j)| j + 1)
                    .max()
                    .unwrap_or(0),
                None => 0,
            };
            self.run_start.push(start);
            if let Some(cur) = self.state[i].as_deref() {
                last_of.insert(cur, i);
            }
        }
    }

    /// The latest state within the horizon and when its run began, as
    /// `window::fetch_history` reads it.
    fn at(&self, now: DateTime<Utc>) -> Option<(&str, DateTime<Utc>)> {
        let horizon = now - STATE_HORIZON;
        let hi = self.ts.partition_point(|t| *t <= now);
        let cur = hi.checked_sub(1)?;
        if self.ts[cur] <= horizon {
            return None;
        }
        let state = self.state[cur].as_deref()?;
        let lo = self.ts.partition_point(|t| *t <= horizon);
        Some((state, self.ts[self.run_start[cur].max(lo)]))
    }
}

impl SlowHistory {
    pub(super) async fn load(
        client: &Client,
        rules: &RuleSet,
        ledger: &Devices,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<SlowHistory> {
        let mut mode_devices = BTreeSet::new();
        let mut tracked = BTreeSet::new();
        let mut expects = Vec::new();
        for rule in &rules.rules {
            match &rule.condition {
                Condition::Mode(_) => mode_devices
                    .extend(window::watched(rule, ledger).into_iter().map(str::to_owned)),
                // A fault alert stays open while its lift reports a down
                // state (as the live window reads it).
                Condition::Event(e) if crate::evaluate::follows_state(e) => mode_devices
                    .extend(window::watched(rule, ledger).into_iter().map(str::to_owned)),
                Condition::Inspection(_) => tracked.extend(window::watched(rule, ledger)),
                Condition::Expect(e) => expects.push((rule, e)),
                _ => {}
            }
        }
        let lifts: Vec<String> = ledger
            .labels
            .values()
            .filter(|d| d.kind == "lift")
            .map(|d| d.id.clone())
            .collect();
        let state_ids: Vec<&str> = mode_devices
            .iter()
            .map(String::as_str)
            .chain(lifts.iter().map(String::as_str))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut states: HashMap<String, States> = HashMap::new();
        if !state_ids.is_empty() {
            for r in client
                .query(
                    "SELECT device_id, ts, state FROM events
                      WHERE device_id = ANY($1) AND event_type = 'state'
                        AND ts > $2 AND ts <= $3
                      ORDER BY device_id, ts",
                    &[&state_ids, &(from - STATE_HORIZON), &to],
                )
                .await?
            {
                let s = states.entry(r.get(0)).or_default();
                s.ts.push(r.get(1));
                s.state.push(r.get(2));
            }
        }
        for s in states.values_mut() {
            s.index_runs();
        }
        let mut expected = HashMap::new();
        let mut first_events = HashMap::new();
        for (rule, e) in expects {
            let ids = window::watched(rule, ledger);
            let mut mine: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
            let mut firsts: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
            if !ids.is_empty() {
                for r in client
                    .query(
                        "SELECT device_id, ts FROM events
                          WHERE device_id = ANY($1) AND event_type = $2
                            AND ($3::text IS NULL OR result = $3)
                            AND ts > $4 AND ts <= $5
                          ORDER BY device_id, ts",
                        &[
                            &ids,
                            &e.event_type.0.as_str(),
                            &e.result,
                            &(from - EXPECT_HORIZON),
                            &to,
                        ],
                    )
                    .await?
                {
                    mine.entry(r.get(0)).or_default().push(r.get(1));
                }
                // A device's first event within the horizon: the first
                // after the replay's earliest horizon, unless the horizon
                // passes over it during the replay (then every event).
                let mut passed = Vec::new();
                for r in client
                    .query(
                        "SELECT d.id, (SELECT min(e.ts) FROM events e WHERE e.device_id = d.id
                                         AND e.ts > $2 AND e.ts <= $3)
                           FROM unnest($1::text[]) AS d(id)",
                        &[&ids, &(from - EXPECT_HORIZON), &to],
                    )
                    .await?
                {
                    let id: String = r.get(0);
                    match r.get::<_, Option<DateTime<Utc>>>(1) {
                        Some(t) if t <= to - EXPECT_HORIZON => passed.push(id),
                        Some(t) => {
                            firsts.insert(id, vec![t]);
                        }
                        None => {}
                    }
                }
                if !passed.is_empty() {
                    for r in client
                        .query(
                            "SELECT device_id, ts FROM events
                              WHERE device_id = ANY($1) AND ts > $2 AND ts <= $3
                              ORDER BY device_id, ts",
                            &[&passed, &(from - EXPECT_HORIZON), &to],
                        )
                        .await?
                    {
                        firsts.entry(r.get(0)).or_default().push(r.get(1));
                    }
                }
            }
            expected.insert(rule.name.clone(), mine);
            first_events.insert(rule.name.clone(), firsts);
        }
        // Inspections: the ledger's tracked devices, every inspection and
        // visit from the first step's span to the last step, and when each
        // began to report (found once, kept, as the live job keeps it).
        let mut inspected = HashMap::new();
        let mut commissioned = Commissioned::new();
        if !tracked.is_empty() {
            inspected = window::tracked_devices(client, ledger, tracked).await?;
            let (ids, since): (Vec<String>, Vec<DateTime<Utc>>) = inspected
                .iter()
                .map(|(id, i)| (id.clone(), window::inspection_span_start(i, from)))
                .unzip();
            for (id, t) in window::inspection_times(client, &ids, &since, to).await? {
                if let Some(i) = inspected.get_mut(&id) {
                    i.times.push(t);
                }
            }
            for i in inspected.values_mut() {
                i.times.sort_unstable();
            }
            let refs: Vec<&String> = ids.iter().collect();
            let since_refs: Vec<&DateTime<Utc>> = since.iter().collect();
            window::probe_commissioned(client, &refs, &since_refs, to, &mut commissioned).await?;
        }
        Ok(SlowHistory {
            states,
            mode_devices,
            lifts,
            expected,
            first_events,
            inspected,
            inspection_keys: HashMap::new(),
            commissioned,
        })
    }

    /// Brings `h` to the history the live window reads at `now`. A tracked
    /// device's entry is rebuilt only when its inspections in the span or
    /// its start changed (a thousand of them, at every step, otherwise).
    pub(super) fn update(&mut self, h: &mut History, now: DateTime<Utc>) {
        h.state.clear();
        h.last.clear();
        h.first.clear();
        for id in &self.mode_devices {
            if let Some((state, since)) = self.states.get(id).and_then(|s| s.at(now)) {
                h.state.insert(id.clone(), (state.to_owned(), since));
            }
        }
        let horizon = now - EXPECT_HORIZON;
        for (rule, per_device) in &self.expected {
            let last = h.last.entry(rule.clone()).or_default();
            for (id, times) in per_device {
                let i = times.partition_point(|t| *t <= now);
                if let Some(t) = i.checked_sub(1).map(|i| times[i]).filter(|t| *t > horizon) {
                    last.insert(id.clone(), t);
                }
            }
        }
        for (rule, per_device) in &self.first_events {
            let first = h.first.entry(rule.clone()).or_default();
            for (id, times) in per_device {
                let i = times.partition_point(|t| *t <= horizon);
                if let Some(t) = times.get(i).filter(|t| **t <= now) {
                    first.insert(id.clone(), *t);
                }
            }
        }
        let SlowHistory {
            inspected,
            inspection_keys,
            commissioned,
            ..
        } = self;
        for (id, i) in inspected.iter() {
            let span = window::inspection_span_start(i, now);
            let lo = i.times.partition_point(|t| *t <= span);
            let hi = i.times.partition_point(|t| *t <= now);
            let first = [
                commissioned.get(id).copied(),
                i.times[lo..hi].first().copied(),
            ];
            let since = first.into_iter().flatten().filter(|t| *t <= now).min();
            if inspection_keys.get(id) == Some(&(lo, hi, since)) {
                continue;
            }
            inspection_keys.insert(id.clone(), (lo, hi, since));
            h.inspections.insert(
                id.clone(),
                Inspected {
                    times: i.times[lo..hi].to_vec(),
                    since,
                    ..i.clone()
                },
            );
        }
    }

    /// Lifts whose latest state at `now` is a technician's mode.
    pub(super) fn in_service(&self, now: DateTime<Utc>) -> BTreeSet<String> {
        self.lifts
            .iter()
            .filter(|id| {
                self.states
                    .get(*id)
                    .and_then(|s| s.at(now))
                    .is_some_and(|(state, _)| {
                        crate::lifts::service::TECHNICIAN_MODES.contains(&state)
                    })
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_780_000_000, 0).unwrap() + Duration::minutes(minutes)
    }

    #[test]
    fn a_state_run_starts_after_the_latest_other_state() {
        let mut s = States::default();
        for (m, st) in [
            (0, "idle"),
            (10, "maintenance"),
            (20, "maintenance"),
            (30, "idle"),
        ] {
            s.ts.push(t(m));
            s.state.push(Some(st.to_owned()));
        }
        s.state.insert(2, None);
        s.ts.insert(2, t(15));
        // idle, maintenance, (none), maintenance, idle
        s.index_runs();
        assert_eq!(s.at(t(25)), Some(("maintenance", t(10))));
        assert_eq!(s.at(t(30)), Some(("idle", t(30))));
        assert_eq!(s.at(t(-1)), None);
        assert_eq!(s.at(t(30) + STATE_HORIZON), None, "beyond the horizon");
    }
}
