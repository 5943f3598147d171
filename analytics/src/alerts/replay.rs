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
//! opened or resolved, the service-mode silences, escalation), so a
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
//! Not replayed: what is only read live (`devices.last_message_at`,
//! `offline_since`: a replay of the past uses data time only, as the live
//! cycle does for any time more than two minutes from the wall clock).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use estatemon_domain::rules::{Condition, DeviceLabels, RuleSet};
use estatemon_domain::schema::alerts::{self, NewAlert, OpenAlert, Opened};
use polars::prelude::*;
use tokio_postgres::Client;

use crate::evaluate::{self, Finding, GroupUse, State};
use crate::lifecycle::{self, Action};
use crate::window::{
    self, after_second, Commissioned, Devices, EventRow, History, Inspected, Lookback, Registers,
    Window,
};

/// How much history is held in memory at once (plus the lookback).
pub const CHUNK: Duration = Duration::days(2);

/// How far back the `mode` rules and the service modes look for a state.
const STATE_HORIZON: Duration = Duration::days(90);
/// How far back the `expect` rules look for the expected event.
const EXPECT_HORIZON: Duration = Duration::days(400);
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
            let opened_now = writes.iter().any(|(_, a)| matches!(a, Action::Open(_)));
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
                            let State::Firing { since, last, value } = f.state else {
                                continue;
                            };
                            let alert = NewAlert::new(
                                rule,
                                f.subject.clone(),
                                f.device.as_ref(),
                                since,
                                last,
                                value,
                                "analytics",
                            )
                            .raised_at(at);
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
                // As at the end of every live cycle; only an alert opened
                // or a silence ended can give them anything to do.
                if opened_now || sync || first {
                    alerts::escalate_overdue(&tx, &[]).await?;
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
            evaluate::spans_findings(spans, resolve_after.chrono(), w.now)
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
    let State::Firing { since, last, value } = f.state else {
        return Ok(());
    };
    let rule = &rules.rules[i];
    let alert = NewAlert::new(
        rule,
        f.subject,
        f.device.as_ref(),
        since,
        last,
        value,
        "analytics",
    )
    .raised_at(at);
    alerts::open(tx, &alert, &rules.deadlines, &[]).await?;
    Ok(())
}

/// One chunk of history in memory: the steps from its start to its end
/// read their windows from here.
struct Chunk {
    /// Every reading from the first step's lookback to the last step, in
    /// time order, as the window's frame holds them.
    frame: DataFrame,
    /// The frame's `ts` (whole seconds), for cutting it per step.
    seconds: Vec<i64>,
    /// Register series of the consumption rules over the chunk.
    registers: Registers,
    /// Every register reading's time, sorted: a step sees new registers
    /// when one falls after the previous step.
    register_times: Vec<DateTime<Utc>>,
    /// Events of the rules' types, in time order.
    events: Vec<EventRow>,
    /// Per rule (by its place in the set), the events that can count for
    /// it, by type with that type's lookback: places in `events`. An event
    /// rule's are its matching events of selected devices, and for fault
    /// rules every event with a state (back in service); a denied-swipes
    /// rule's, the denied swipes at its gates.
    relevant: Vec<Vec<(Duration, Vec<usize>)>>,
    /// Each stale-rule device's readings over the chunk, and its last
    /// reading before the chunk (within 30 days).
    device_times: HashMap<String, Vec<DateTime<Utc>>>,
    before_chunk: HashMap<String, DateTime<Utc>>,
    /// The previous step's time, frame rows, local midnights and register
    /// version.
    previous: Option<DateTime<Utc>>,
    frame_key: Option<(usize, usize)>,
    midnights: Vec<DateTime<Utc>>,
    register_version: u64,
}

impl Chunk {
    /// The events rule `i` reads at `now`: where they are in each of its
    /// lists (the key of its cache), and the events, in the order the
    /// database gave them (as the live window lists them).
    fn events_for(&self, i: usize, now: DateTime<Utc>) -> (Vec<(usize, usize)>, Vec<&EventRow>) {
        let events = &self.events;
        let key: Vec<(usize, usize)> = self.relevant[i]
            .iter()
            .map(|(d, places)| {
                (
                    places.partition_point(|j| events[*j].ts <= now - *d),
                    places.partition_point(|j| events[*j].ts <= now),
                )
            })
            .collect();
        let mut places: Vec<usize> = self.relevant[i]
            .iter()
            .zip(&key)
            .flat_map(|((_, p), (lo, hi))| p[*lo..*hi].iter().copied())
            .collect();
        if self.relevant[i].len() > 1 {
            places.sort_unstable();
        }
        (key, places.into_iter().map(|j| &events[j]).collect())
    }

    #[allow(clippy::too_many_arguments)]
    async fn load(
        client: &Client,
        rules: &RuleSet,
        selected: &[Vec<&DeviceLabels>],
        ledger: &Devices,
        lookback: &Lookback,
        scope: &window::Scope,
        stale_ids: &[String],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> anyhow::Result<Chunk> {
        let since = start - lookback.readings;
        // As the live window selects them (whole seconds), all at once.
        let rows = client
            .query(
                "SELECT device_id, metric, ts, value FROM readings
                  WHERE ts >= $1 AND ts < $2 ORDER BY ts",
                &[&after_second(since), &after_second(end)],
            )
            .await?;
        let stale: HashSet<&str> = stale_ids.iter().map(String::as_str).collect();
        let mut device_times: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
        for r in &rows {
            let d: &str = r.get(0);
            if stale.contains(d) {
                device_times.entry(d.to_owned()).or_default().push(r.get(2));
            }
        }
        let frame = window::readings_frame(
            ledger,
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))),
        )?;
        drop(rows);
        let seconds: Vec<i64> = frame.column("ts")?.i64()?.into_no_null_iter().collect();
        // The last reading before the chunk, for devices silent through a
        // step's whole frame.
        let mut before_chunk = HashMap::new();
        if !stale_ids.is_empty() {
            for r in client
                .query(
                    "SELECT d.id, (SELECT max(r.ts) FROM readings r
                                    WHERE r.device_id = d.id AND r.ts < $2
                                      AND r.ts > $2 - interval '30 days')
                       FROM unnest($1::text[]) AS d(id)",
                    &[&stale_ids, &after_second(since)],
                )
                .await?
            {
                if let Some(t) = r.get::<_, Option<DateTime<Utc>>>(1) {
                    before_chunk.insert(r.get::<_, String>(0), t);
                }
            }
        }
        let mut registers = Registers::new();
        window::fetch_registers(
            client,
            scope,
            start - Duration::hours(26),
            end,
            &mut registers,
        )
        .await?;
        let mut register_times: Vec<DateTime<Utc>> = registers
            .values()
            .flat_map(|s| s.iter().map(|(t, _)| *t))
            .collect();
        register_times.sort_unstable();
        let events = window::fetch_events_for(client, lookback, None, start, end).await?;
        let relevant = rules
            .rules
            .iter()
            .zip(selected)
            .map(|(rule, selected)| {
                let ids: HashSet<&str> = selected.iter().map(|d| d.id.as_str()).collect();
                // A state counts (back in service) only after a matching
                // event of its device: devices without one need none.
                let faulted: HashSet<&str> = match &rule.condition {
                    Condition::Event(r)
                        if r.event_type.0 == estatemon_domain::event::EventType::Fault =>
                    {
                        events
                            .iter()
                            .filter(|e| evaluate::event_matches(r, e))
                            .map(|e| e.device.as_str())
                            .collect()
                    }
                    _ => HashSet::new(),
                };
                let counts = |e: &EventRow| {
                    ids.contains(e.device.as_str())
                        && match &rule.condition {
                            Condition::Event(r) => {
                                evaluate::event_matches(r, e)
                                    || (e.state.is_some() && faulted.contains(e.device.as_str()))
                            }
                            Condition::Denied(_) => {
                                e.event_type == "access" && e.result.as_deref() == Some("denied")
                            }
                            _ => false,
                        }
                };
                let mut by_type: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
                for (j, e) in events.iter().enumerate().filter(|(_, e)| counts(e)) {
                    by_type.entry(e.event_type.as_str()).or_default().push(j);
                }
                by_type
                    .into_iter()
                    .filter_map(|(t, places)| lookback.events.get(t).map(|d| (*d, places)))
                    .collect()
            })
            .collect();
        Ok(Chunk {
            frame,
            seconds,
            registers,
            register_times,
            events,
            relevant,
            device_times,
            before_chunk,
            previous: None,
            frame_key: None,
            midnights: Vec::new(),
            register_version: 0,
        })
    }

    /// Brings `w` to `now`: the frame, the registers, the events and the
    /// stale devices' last readings the live window would read at `now`.
    fn step(
        &mut self,
        w: &mut Window,
        ledger: &Devices,
        lookback: &Lookback,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Changes> {
        w.now = now;
        let since = now - lookback.readings;
        w.readings_since = since;
        // Readings: whole seconds in (since, now].
        let lo = self.seconds.partition_point(|s| *s <= since.timestamp());
        let hi = self.seconds.partition_point(|s| *s <= now.timestamp());
        if self.frame_key != Some((lo, hi)) {
            w.readings = self.frame.slice(lo as i64, hi - lo);
            self.frame_key = Some((lo, hi));
        }
        // Registers: since each site's local midnight (less half an hour),
        // rebuilt when one arrived or a midnight passed.
        let midnights: Vec<DateTime<Utc>> = std::iter::once(ledger.local_midnight("", now))
            .chain(ledger.zones.values().map(|tz| {
                let date = now.with_timezone(tz).date_naive();
                date.and_hms_opt(0, 0, 0)
                    .and_then(|t| t.and_local_timezone(*tz).earliest())
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or(now)
            }))
            .collect();
        let arrived = match self.previous {
            None => true,
            Some(p) => {
                let i = self.register_times.partition_point(|t| *t <= p);
                self.register_times.get(i).is_some_and(|t| *t <= now)
            }
        };
        if arrived || midnights != self.midnights {
            w.registers.clear();
            for (key, series) in &self.registers {
                let midnight = ledger.local_midnight(&key.0, now);
                let lo = series.partition_point(|(t, _)| *t + Duration::minutes(30) < midnight);
                let hi = series.partition_point(|(t, _)| *t <= now);
                if lo < hi {
                    w.registers.insert(key.clone(), series[lo..hi].to_vec());
                }
            }
            self.midnights = midnights;
            self.register_version += 1;
        }
        // Stale devices' last reading before the frame, within 30 days,
        // for those with none in the frame (as the live window reads it).
        let bound = after_second(since);
        let end = after_second(now);
        w.last_seen_before.clear();
        for (id, times) in &self.device_times {
            let i = times.partition_point(|t| *t < bound);
            if times.get(i).is_some_and(|t| *t < end) {
                continue;
            }
            if let Some(t) = i.checked_sub(1).map(|i| times[i]) {
                if t > bound - Duration::days(30) {
                    w.last_seen_before.insert(id.clone(), t);
                }
                continue;
            }
            if let Some(t) = self
                .before_chunk
                .get(id)
                .filter(|t| **t > bound - Duration::days(30))
            {
                w.last_seen_before.insert(id.clone(), *t);
            }
        }
        for (id, t) in &self.before_chunk {
            if !self.device_times.contains_key(id) && *t > bound - Duration::days(30) {
                w.last_seen_before.insert(id.clone(), *t);
            }
        }
        self.previous = Some(now);
        Ok(Changes {
            frame: (lo, hi),
            registers: self.register_version,
        })
    }
}

/// What the `mode`, `expect` and `inspection` rules and the lifts' service
/// modes read, for the whole replay: few rows (state changes, expected
/// events, inspections), read once.
struct SlowHistory {
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
    async fn load(
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
    fn update(&mut self, h: &mut History, now: DateTime<Utc>) {
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
    fn in_service(&self, now: DateTime<Utc>) -> BTreeSet<String> {
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

    #[test]
    fn steps_count_both_ends() {
        assert_eq!(step_count(t(0), t(10), Duration::minutes(1)), 11);
        assert_eq!(step_count(t(0), t(0), Duration::minutes(1)), 1);
        assert_eq!(step_count(t(1), t(0), Duration::minutes(1)), 0);
    }
}
