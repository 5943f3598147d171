//! Replay: the rules over stored history, step by step, as the analytics
//! job would have evaluated them, without a database round trip per step.
//!
//! The live cycle reads its window from the database every minute; over a
//! quarter that is 132,480 reads. A replay instead reads the history once,
//! in chunks of [`CHUNK`] plus the rules' lookback (readings, registers,
//! events), and once for the whole period what the `mode`, `expect` and
//! `inspection` rules and the lifts' service modes read. At each step it
//! cuts the [`Window`] the live cycle would have read out of that memory
//! and runs the same pure [`evaluate`] and [`lifecycle`] over it; the open
//! alerts are kept in memory too. Only transitions reach the database,
//! through the same `schema::alerts` calls as the live cycle (an alert
//! opened or resolved, the service-mode silences; not escalation: a replayed
//! alert was never paged, and is stored with `source = 'replay'`), so a
//! replayed alert is the one the live job would have raised: same rule,
//! subject, start and end (`tests/alerts.rs` compares the two).
//!
//! What a step skips when it cannot change anything:
//! - a threshold or rate rule is evaluated only when the rows it reads
//!   changed (its findings depend on nothing else, and the same findings
//!   twice produce no transition);
//! - a stale rule's polars half (each device's last reading in the frame)
//!   is kept while the frame is unchanged, its time half runs every step;
//! - a consumption rule's totals are kept while the registers and the
//!   local midnights are unchanged;
//! - refreshing an open alert's evidence (`last_seen_at`, `value`) is
//!   gathered in memory and written once, before it resolves or at the
//!   end of a chunk: the database keeps the greatest time and the latest
//!   value, so one write of those ends where one write per step would.
//!
//! The files: this one drives the steps, keeps the open alerts and the
//! rules' caches and writes the transitions; [`chunk`] holds a chunk of
//! readings, registers and events and cuts each step's window from it;
//! [`history`] holds the states, expected events and inspections.
//!
//! Not replayed: what is only read live (`devices.last_message_at`,
//! `offline_since`: a replay of the past uses data time only, as the live
//! cycle does for any time more than two minutes from the wall clock).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use estatemon_domain::rules::{Condition, DeviceLabels, RuleSet};
use estatemon_domain::schema::alerts::{self, OpenAlert, Opened};
use tokio_postgres::Client;

use crate::evaluate::{self, Finding, GroupUse, State};
use crate::lifecycle::{self, Action};
use crate::window::{self, History, Lookback, Registers, Window};

mod chunk;
mod history;

use chunk::Chunk;
use history::SlowHistory;

/// `alerts.source` of a replayed alert: it was never paged, and reports
/// show it as replayed, not as unanswered.
pub const REPLAY_SOURCE: &str = "replay";

/// How much history is held in memory at once (plus the lookback).
pub const CHUNK: Duration = Duration::days(2);

/// Service-mode silences last 15 minutes of wall-clock time unless renewed:
/// a replay renews them at least this often.
const SILENCE_RENEW: std::time::Duration = std::time::Duration::from_secs(60);

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct ReplayReport {
    pub steps: u64,
    pub chunks: usize,
    pub opened: usize,
    pub silenced: usize,
    pub resolved: usize,
    pub open_after: usize,
    /// Rows read: readings, events.
    pub readings: usize,
    pub events: usize,
    /// Seconds reading history, evaluating, and writing transitions.
    pub load_s: f64,
    pub evaluate_s: f64,
    pub apply_s: f64,
    /// Of `evaluate_s`, the seconds spent cutting each step's window.
    pub window_s: f64,
    /// Seconds evaluating and reconciling each rule, by rule name.
    pub per_rule_s: Vec<(String, f64)>,
}

/// Number of steps from `from` to `to` (both included) at `step`.
pub fn step_count(from: DateTime<Utc>, to: DateTime<Utc>, step: Duration) -> u64 {
    if to < from || step <= Duration::zero() {
        return 0;
    }
    ((to - from).num_seconds() / step.num_seconds().max(1)) as u64 + 1
}

/// Evaluates `rules` at every `step` from `from` to `to` over stored
/// history and records the alerts they raise and resolve, with their
/// data-time start and end, paging no one. `progress` is called with the
/// number of steps done.
pub async fn replay(
    client: &mut Client,
    rules: &RuleSet,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: Duration,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<ReplayReport> {
    anyhow::ensure!(step > Duration::zero(), "the step must be positive");
    anyhow::ensure!(from <= to, "the replay must start before it ends");
    let mut report = ReplayReport::default();
    let started = Instant::now();
    let ledger = window::load_devices(client).await?;
    let lookback = Lookback::of(rules);
    let scope = window::consumption_scope(rules, &ledger);
    let selected: Vec<Vec<&DeviceLabels>> = rules
        .rules
        .iter()
        .map(|r| ledger.labels.values().filter(|d| r.applies_to(d)).collect())
        .collect();
    let stale_ids: Vec<String> = window::stale_watched(rules, &ledger)
        .map(str::to_owned)
        .collect();
    let mut slow = SlowHistory::load(client, rules, &ledger, from, to).await?;
    let mut open = OpenAlerts::load(client).await?;
    // History is written as fast as it is evaluated, in many small
    // transactions: not waiting for each commit's flush to disk saves
    // most of their time, and a replay cut short by a crash is run again.
    client.batch_execute("SET synchronous_commit = off").await?;
    // The span this replay evaluates, extended as each chunk finishes.
    let span = estatemon_domain::schema::coverage::start_replay(&*client, from).await?;
    report.load_s += started.elapsed().as_secs_f64();

    let mut w = Window {
        now: from,
        devices: ledger.clone(),
        readings: window::readings_frame(&ledger, std::iter::empty())?,
        registers: Registers::new(),
        events: Vec::new(),
        readings_since: from - lookback.readings,
        last_seen_before: HashMap::new(),
        last_message: HashMap::new(),
        offline: HashMap::new(),
        history: History::default(),
    };
    let mut caches: Vec<Cache> = rules.rules.iter().map(|_| Cache::None).collect();
    let mut per_rule = vec![0.0; rules.rules.len()];
    let mut in_service: Option<BTreeSet<String>> = None;
    let mut last_sync = Instant::now();
    let mut pending = Refreshes::default();
    let mut at = from;
    let mut first = true;
    while at <= to {
        // One chunk: its history read once, then its steps.
        let chunk_end = (at + CHUNK).min(to);
        let t = Instant::now();
        let mut chunk = Chunk::load(
            client, rules, &selected, &ledger, &lookback, &scope, &stale_ids, at, chunk_end,
        )
        .await?;
        report.readings += chunk.frame.height();
        report.events += chunk.events.len();
        report.chunks += 1;
        report.load_s += t.elapsed().as_secs_f64();
        w.events.clear();
        w.registers.clear();
        caches.iter_mut().for_each(|c| *c = Cache::None);
        while at <= chunk_end {
            let t = Instant::now();
            let changes = chunk.step(&mut w, &ledger, &lookback, at)?;
            slow.update(&mut w.history, at);
            report.window_s += t.elapsed().as_secs_f64();
            // Lifts a technician works on: a silence kept in step with
            // their mode, as the live cycle keeps it (only when the set
            // changes, and often enough that the silences do not lapse).
            let now_in_service = slow.in_service(at);
            let sync = in_service.as_ref() != Some(&now_in_service)
                || last_sync.elapsed() >= SILENCE_RENEW;
            let mut planned: Vec<(usize, Action)> = Vec::new();
            for (i, rule) in rules.rules.iter().enumerate() {
                let t = Instant::now();
                let Some(findings) =
                    findings_at(i, rule, &w, &selected[i], &mut caches[i], &changes, &chunk)?
                else {
                    continue;
                };
                let mine = open.of(&rule.name);
                planned.extend(
                    lifecycle::reconcile(rule, findings, &mine, at)
                        .into_iter()
                        .map(|a| (i, a)),
                );
                per_rule[i] += t.elapsed().as_secs_f64();
            }
            report.evaluate_s += t.elapsed().as_secs_f64();
            // A refresh of an open alert's evidence waits in memory; any
            // other transition is written now, in one transaction.
            let t = Instant::now();
            let mut writes = Vec::new();
            for (i, action) in planned {
                match action {
                    Action::Open(f) => match open.id_of(&rules.rules[i].name, &f.subject) {
                        Some(id) => {
                            open.refresh(&rules.rules[i].name, &f);
                            pending.add(id, i, f);
                        }
                        None => writes.push((i, Action::Open(f))),
                    },
                    other => writes.push((i, other)),
                }
            }
            if sync || first || !writes.is_empty() {
                if sync {
                    crate::lifts::service::sync(client, at).await?;
                    in_service = Some(now_in_service);
                    last_sync = Instant::now();
                }
                let tx = client.transaction().await?;
                if first {
                    // Alerts of rules no longer in the set end as the live
                    // cycle ends them.
                    for a in open.orphans(rules) {
                        if alerts::resolve(&tx, a.id, at.max(a.started_at), &[]).await? {
                            report.resolved += 1;
                        }
                    }
                }
                for (i, action) in writes {
                    let rule = &rules.rules[i];
                    match action {
                        Action::Open(f) => {
                            let Some(alert) = f.alert(rule, at, REPLAY_SOURCE) else {
                                continue;
                            };
                            let (since, last) = (alert.started_at, alert.last_seen_at);
                            let opened = alerts::open(&tx, &alert, &rules.deadlines, &[]).await?;
                            let id = match opened {
                                Opened::New { id, silenced } => {
                                    report.opened += 1;
                                    report.silenced += usize::from(silenced);
                                    tracing::debug!(alert = id, rule = %rule.name, subject = %f.subject,
                                        started_at = %since, "replay: alert opened");
                                    id
                                }
                                Opened::Existing { id } => id,
                            };
                            open.insert(OpenAlert {
                                id,
                                rule: rule.name.clone(),
                                subject: f.subject,
                                started_at: since,
                                last_seen_at: last,
                            });
                        }
                        Action::Resolve { id, at: cleared } => {
                            if let Some((i, f)) = pending.take(id) {
                                refresh(&tx, rules, i, f, at).await?;
                            }
                            if alerts::resolve(&tx, id, cleared, &[]).await? {
                                report.resolved += 1;
                                tracing::debug!(alert = id, rule = %rule.name,
                                    cleared_at = %cleared, "replay: alert resolved");
                            }
                            open.remove(id);
                        }
                    }
                }
                // A service-mode silence that ended releases its alerts, as
                // at the end of a live cycle. Escalation is not replayed: a
                // replayed alert was never paged, so it cannot have gone
                // unanswered (the live cycle escalates live alerts).
                if sync || first {
                    alerts::release_ended_silences(&tx, &[]).await?;
                }
                tx.commit().await?;
                first = false;
            }
            report.apply_s += t.elapsed().as_secs_f64();
            report.steps += 1;
            progress(report.steps);
            at += step;
        }
        let t = Instant::now();
        pending.flush(client, rules, chunk_end).await?;
        estatemon_domain::schema::coverage::extend(&*client, span, (at - step).min(to)).await?;
        report.apply_s += t.elapsed().as_secs_f64();
    }
    report.open_after = alerts::open_alerts(&*client).await?.len();
    report.per_rule_s = rules
        .rules
        .iter()
        .map(|r| r.name.clone())
        .zip(per_rule)
        .collect();
    Ok(report)
}

/// What one step changed in the window, for the rules' caches.
struct Changes {
    /// The readings frame's rows (first, end) in the chunk's frame.
    frame: (usize, usize),
    /// Bumped whenever the registers are rebuilt.
    registers: u64,
}

/// What a rule keeps between steps.
enum Cache {
    None,
    /// Threshold and rate: what its findings were computed from.
    Rows((usize, usize, usize)),
    /// Stale: each device's last reading in the frame, for these rows.
    LastSeen((usize, usize), HashMap<String, i64>),
    /// Consumption: the totals for this register version.
    Totals(u64, Vec<GroupUse>),
    /// Event and denied-swipes rules: their spans for these events.
    Spans(Vec<(usize, usize)>, evaluate::Spans),
}

/// One rule's findings at the window's `now`, or `None` when they are the
/// ones it had at the previous step (nothing to reconcile: the same
/// findings twice produce no transition).
fn findings_at(
    i: usize,
    rule: &estatemon_domain::rules::Rule,
    w: &Window,
    selected: &[&DeviceLabels],
    cache: &mut Cache,
    changes: &Changes,
    chunk: &Chunk,
) -> anyhow::Result<Option<Vec<Finding>>> {
    let (lo, hi) = changes.frame;
    let rows_key = match &rule.condition {
        Condition::Threshold(_) => Some((lo, hi, 0)),
        Condition::Rate(r) => {
            // Rows in the rule's own window (ts ≥ now − window) too.
            let from = (w.now - r.window.chrono()).timestamp();
            Some((lo, hi, chunk.seconds.partition_point(|t| *t < from).max(lo)))
        }
        _ => None,
    };
    if let Some(key) = rows_key {
        if matches!(cache, Cache::Rows(k) if *k == key) {
            return Ok(None);
        }
        *cache = Cache::Rows(key);
        return Ok(Some(evaluate::evaluate_for(rule, w, selected)?));
    }
    let wrap = |source| evaluate::EvaluateError::Polars {
        rule: rule.name.clone(),
        source,
    };
    Ok(Some(match &rule.condition {
        Condition::Stale(s) => {
            if !matches!(cache, Cache::LastSeen(k, _) if *k == (lo, hi)) {
                *cache = Cache::LastSeen(
                    (lo, hi),
                    evaluate::last_in_frame(w, selected).map_err(wrap)?,
                );
            }
            let Cache::LastSeen(_, last) = cache else {
                unreachable!("set above")
            };
            evaluate::stale_findings(s, w, selected, last)
        }
        Condition::Consumption(c) => {
            if !matches!(cache, Cache::Totals(v, _) if *v == changes.registers) {
                *cache = Cache::Totals(
                    changes.registers,
                    evaluate::consumption_totals(c, w, selected).map_err(wrap)?,
                );
            }
            let Cache::Totals(_, totals) = cache else {
                unreachable!("set above")
            };
            evaluate::consumption_findings(c, totals, w.now)
        }
        // The event rules read only the chunk's events that can count
        // for them, and again only when those in the window changed.
        Condition::Event(_) | Condition::Denied(_) => {
            let (key, events) = chunk.events_for(i, w.now);
            if !matches!(cache, Cache::Spans(k, _) if *k == key) {
                let spans = match &rule.condition {
                    Condition::Event(e) => evaluate::event_spans(e, events.into_iter(), selected),
                    Condition::Denied(d) => evaluate::denied_spans(d, events.into_iter(), selected),
                    _ => unreachable!("matched above"),
                };
                *cache = Cache::Spans(key, spans);
            }
            let Cache::Spans(_, spans) = cache else {
                unreachable!("set above")
            };
            let resolve_after = match &rule.condition {
                Condition::Event(e) => e.resolve_after,
                Condition::Denied(d) => d.resolve_after,
                _ => unreachable!("matched above"),
            };
            let findings = evaluate::spans_findings(spans, resolve_after.chrono(), w.now);
            match &rule.condition {
                Condition::Event(e) => {
                    evaluate::hold_while_down(e, findings, spans, selected, &w.history.state)
                }
                _ => findings,
            }
        }
        // Mode, expect, inspection: over the history, every step.
        _ => evaluate::evaluate_for(rule, w, selected)?,
    }))
}

/// The open alerts, kept in memory through the replay.
struct OpenAlerts {
    by_rule: HashMap<String, Vec<OpenAlert>>,
}

impl OpenAlerts {
    async fn load(client: &Client) -> anyhow::Result<OpenAlerts> {
        let mut by_rule: HashMap<String, Vec<OpenAlert>> = HashMap::new();
        for a in alerts::open_alerts(client).await? {
            by_rule.entry(a.rule.clone()).or_default().push(a);
        }
        Ok(OpenAlerts { by_rule })
    }

    fn of(&self, rule: &str) -> Vec<&OpenAlert> {
        self.by_rule
            .get(rule)
            .map(|v| v.iter().collect())
            .unwrap_or_default()
    }

    /// As the database's upsert: the greatest evidence time.
    fn refresh(&mut self, rule: &str, f: &Finding) {
        let State::Firing { last, .. } = f.state else {
            return;
        };
        if let Some(a) = self
            .by_rule
            .get_mut(rule)
            .and_then(|v| v.iter_mut().find(|a| a.subject == f.subject))
        {
            a.last_seen_at = a.last_seen_at.max(last);
        }
    }

    fn id_of(&self, rule: &str, subject: &str) -> Option<i64> {
        self.by_rule
            .get(rule)?
            .iter()
            .find(|a| a.subject == subject)
            .map(|a| a.id)
    }

    fn insert(&mut self, a: OpenAlert) {
        let v = self.by_rule.entry(a.rule.clone()).or_default();
        v.retain(|o| o.id != a.id);
        v.push(a);
    }

    fn remove(&mut self, id: i64) {
        for v in self.by_rule.values_mut() {
            v.retain(|a| a.id != id);
        }
    }

    /// Open alerts of rules not in `rules`, removed from the set.
    fn orphans(&mut self, rules: &RuleSet) -> Vec<OpenAlert> {
        let names: HashSet<&str> = rules.rules.iter().map(|r| r.name.as_str()).collect();
        let gone: Vec<String> = self
            .by_rule
            .keys()
            .filter(|r| !names.contains(r.as_str()))
            .cloned()
            .collect();
        gone.into_iter()
            .flat_map(|r| self.by_rule.remove(&r).unwrap_or_default())
            .collect()
    }
}

/// Evidence refreshes not yet written, per alert id: the latest finding
/// with the greatest time and the latest value, as the upsert keeps them.
#[derive(Default)]
struct Refreshes {
    by_id: HashMap<i64, (usize, Finding)>,
}

impl Refreshes {
    fn add(&mut self, id: i64, i: usize, mut f: Finding) {
        if let Some((_, old)) = self.by_id.get(&id) {
            if let (
                State::Firing {
                    last: old_last,
                    value: old_value,
                    ..
                },
                State::Firing { last, value, .. },
            ) = (&old.state, &mut f.state)
            {
                *last = (*last).max(*old_last);
                *value = value.or(*old_value);
            }
        }
        self.by_id.insert(id, (i, f));
    }

    fn take(&mut self, id: i64) -> Option<(usize, Finding)> {
        self.by_id.remove(&id)
    }

    async fn flush(
        &mut self,
        client: &mut Client,
        rules: &RuleSet,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        if self.by_id.is_empty() {
            return Ok(());
        }
        let tx = client.transaction().await?;
        for (_, (i, f)) in self.by_id.drain() {
            refresh(&tx, rules, i, f, at).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Writes a gathered refresh through the same upsert as the live cycle.
async fn refresh(
    tx: &tokio_postgres::Transaction<'_>,
    rules: &RuleSet,
    i: usize,
    f: Finding,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    if let Some(alert) = f.alert(&rules.rules[i], at, REPLAY_SOURCE) {
        alerts::open(tx, &alert, &rules.deadlines, &[]).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_780_000_000, 0).unwrap() + Duration::minutes(minutes)
    }

    #[test]
    fn steps_count_both_ends() {
        assert_eq!(step_count(t(0), t(10), Duration::minutes(1)), 11);
        assert_eq!(step_count(t(0), t(0), Duration::minutes(1)), 1);
        assert_eq!(step_count(t(1), t(0), Duration::minutes(1)), 0);
    }
}
