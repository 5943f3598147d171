//! Rule evaluation: a [`Window`] and a rule in, [`Finding`]s out. Pure: no
//! database, no clock (the window carries `now`).
//!
//! Gauge rules (threshold, rate, stale) and the consumption totals run as
//! polars queries over the window's frames; event rules filter the window's
//! events. A subject with no finding keeps whatever state it has: between
//! the trigger and the clear level, or with too little data to decide.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, TimeZone, Utc};
use estatemon_domain::consumption::{derive, RegisterPolicy, RegisterSample};
use estatemon_domain::rules::{
    Condition, Consumption, Denied, DeniedBy, DeviceLabels, EventRule, Expect, GroupBy, Hours,
    InspectionRule, Level, Mode, Rate, Rule, Stale, Threshold,
};
use polars::prelude::*;

use crate::window::{EventRow, Window};

/// What a rule says about one subject (a device, a group, a credential).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub subject: String,
    pub device: Option<DeviceLabels>,
    pub state: State,
}

impl Finding {
    /// The alert the analytics job opens (or refreshes) for a firing
    /// finding, raised at `at`; `None` when the finding is not firing.
    /// The live cycle and the replay both write through this.
    /// The alert a firing finding opens, raised at `at`; `source` is
    /// "analytics" for the live cycle and "replay" for a replay (a replayed
    /// alert was never paged, and reports say so).
    pub fn alert(
        &self,
        rule: &estatemon_domain::rules::Rule,
        at: DateTime<Utc>,
        source: &'static str,
    ) -> Option<estatemon_domain::schema::alerts::NewAlert> {
        let State::Firing { since, last, value } = self.state else {
            return None;
        };
        Some(
            estatemon_domain::schema::alerts::NewAlert::new(
                rule,
                self.subject.clone(),
                self.device.as_ref(),
                since,
                last,
                value,
                source,
            )
            .raised_at(at),
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// The condition holds, since `since` (data time), last seen at `last`.
    Firing {
        since: DateTime<Utc>,
        last: DateTime<Utc>,
        value: Option<f64>,
    },
    /// The condition is over, as of `at`.
    Clear { at: DateTime<Utc> },
    /// Not seen in the window, but not over either: an open alert stays
    /// open as it is (a lift still reporting a fault state after its fault
    /// event left the window); none is opened for it.
    Held,
}

#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error("rule {rule}: {source}")]
    Polars { rule: String, source: PolarsError },
}

/// Evaluates one rule over the window.
pub fn evaluate(rule: &Rule, window: &Window) -> Result<Vec<Finding>, EvaluateError> {
    evaluate_for(rule, window, &selected(rule, window))
}

/// The devices of the window's ledger that `rule` selects.
pub fn selected<'a>(rule: &Rule, window: &'a Window) -> Vec<&'a DeviceLabels> {
    window
        .devices
        .labels
        .values()
        .filter(|d| rule.applies_to(d))
        .collect()
}

/// Evaluates one rule over the window for devices already selected (a
/// replay selects once, not at every step).
pub fn evaluate_for(
    rule: &Rule,
    window: &Window,
    selected: &[&DeviceLabels],
) -> Result<Vec<Finding>, EvaluateError> {
    let wrap = |source| EvaluateError::Polars {
        rule: rule.name.clone(),
        source,
    };
    match &rule.condition {
        Condition::Threshold(t) => threshold(t, window, selected).map_err(wrap),
        Condition::Rate(r) => rate(r, window, selected).map_err(wrap),
        Condition::Stale(s) => stale(s, window, selected).map_err(wrap),
        Condition::Consumption(c) => consumption(c, window, selected).map_err(wrap),
        Condition::Event(e) => Ok(events(e, window, selected)),
        Condition::Denied(d) => Ok(denied(d, window, selected)),
        Condition::Mode(m) => Ok(mode(m, window, selected)),
        Condition::Expect(e) => Ok(expect(&rule.name, e, window, selected)),
        Condition::Inspection(i) => Ok(inspection(i, window, selected)),
    }
}

fn selection(selected: &[&DeviceLabels]) -> PolarsResult<LazyFrame> {
    let ids: Vec<&str> = selected.iter().map(|d| d.id.as_str()).collect();
    Ok(df!("device" => ids)?.lazy())
}

fn on_device(lf: LazyFrame, other: LazyFrame, how: JoinType) -> LazyFrame {
    lf.join(other, [col("device")], [col("device")], JoinArgs::new(how))
}

/// The readings of one metric from the selected devices.
fn metric_frame(
    window: &Window,
    metric: &str,
    selected: &[&DeviceLabels],
) -> PolarsResult<LazyFrame> {
    Ok(on_device(
        window
            .readings
            .clone()
            .lazy()
            .filter(col("metric").eq(lit(metric))),
        selection(selected)?,
        JoinType::Inner,
    ))
}

fn in_hours(hours: Hours) -> Expr {
    let (from, to) = (hours.from as i32, hours.to as i32);
    if from < to {
        col("minute")
            .gt_eq(lit(from))
            .and(col("minute").lt(lit(to)))
    } else {
        col("minute").gt_eq(lit(from)).or(col("minute").lt(lit(to)))
    }
}

fn ts(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(seconds, 0).single().unwrap_or_default()
}

fn labels_of<'a>(selected: &[&'a DeviceLabels]) -> HashMap<&'a str, &'a DeviceLabels> {
    selected.iter().map(|d| (d.id.as_str(), *d)).collect()
}

fn device_finding(labels: &HashMap<&str, &DeviceLabels>, device: &str, state: State) -> Finding {
    Finding {
        subject: device.to_owned(),
        device: labels.get(device).map(|d| (*d).clone()),
        state,
    }
}

/// Per device: the latest sample, the latest sample on the safe side of the
/// trigger level, and the start of the breach run after it. Fires when the
/// run has lasted `for`; clears when the latest sample is past `clear`.
fn threshold(
    t: &Threshold,
    window: &Window,
    selected: &[&DeviceLabels],
) -> PolarsResult<Vec<Finding>> {
    let mut lf = metric_frame(window, t.metric.as_str(), selected)?;
    if let Some(hours) = t.hours {
        lf = lf.filter(in_hours(hours));
    }
    let level = t.level();
    let breach = match level {
        Level::Above(l) => col("value").gt(lit(l)),
        Level::Below(l) => col("value").lt(lit(l)),
    };
    let latest = lf.clone().group_by([col("device")]).agg([
        col("ts").max().alias("last_ts"),
        col("value")
            .sort_by([col("ts")], SortMultipleOptions::default())
            .last()
            .alias("last_value"),
        col("ts")
            .filter(breach.clone().not())
            .max()
            .alias("last_ok"),
    ]);
    let runs = on_device(lf, latest.clone(), JoinType::Inner)
        .filter(breach.and(col("last_ok").is_null().or(col("ts").gt(col("last_ok")))))
        .group_by([col("device")])
        .agg([col("ts").min().alias("run_start")]);
    let df = on_device(latest, runs, JoinType::Left).collect()?;

    let labels = labels_of(selected);
    let clear = t.clear_level();
    let mut out = Vec::new();
    let (device, last_ts, last_value, run_start) = (
        df.column("device")?.str()?,
        df.column("last_ts")?.i64()?,
        df.column("last_value")?.f64()?,
        df.column("run_start")?.i64()?,
    );
    for i in 0..df.height() {
        let (Some(d), Some(last), Some(value)) = (device.get(i), last_ts.get(i), last_value.get(i))
        else {
            continue;
        };
        let state = match run_start.get(i) {
            Some(start) if last - start >= t.for_.seconds() => State::Firing {
                since: ts(start),
                last: ts(last),
                value: Some(value),
            },
            _ if level.cleared(clear, value) => State::Clear { at: ts(last) },
            _ => continue,
        };
        out.push(device_finding(&labels, d, state));
    }
    Ok(out)
}

/// Per device over the rule's window: the fall from the window's highest
/// sample to the latest, or the rise from its lowest.
fn rate(r: &Rate, window: &Window, selected: &[&DeviceLabels]) -> PolarsResult<Vec<Finding>> {
    let from = (window.now - r.window.chrono()).timestamp();
    let df = metric_frame(window, r.metric.as_str(), selected)?
        .filter(col("ts").gt_eq(lit(from)))
        .group_by([col("device")])
        .agg([
            col("ts").min().alias("first_ts"),
            col("ts").max().alias("last_ts"),
            col("value")
                .sort_by([col("ts")], SortMultipleOptions::default())
                .last()
                .alias("last_value"),
            col("value").max().alias("high"),
            col("value").min().alias("low"),
        ])
        .collect()?;
    let labels = labels_of(selected);
    let (device, first, last, last_value, high, low) = (
        df.column("device")?.str()?,
        df.column("first_ts")?.i64()?,
        df.column("last_ts")?.i64()?,
        df.column("last_value")?.f64()?,
        df.column("high")?.f64()?,
        df.column("low")?.f64()?,
    );
    let mut out = Vec::new();
    for i in 0..df.height() {
        let (Some(d), Some(first), Some(last), Some(v), Some(high), Some(low)) = (
            device.get(i),
            first.get(i),
            last.get(i),
            last_value.get(i),
            high.get(i),
            low.get(i),
        ) else {
            continue;
        };
        let moved = match (r.fall, r.rise) {
            (Some(fall), _) => high - v >= fall,
            (None, Some(rise)) => v - low >= rise,
            (None, None) => false,
        };
        let state = if moved {
            State::Firing {
                since: ts(first),
                last: ts(last),
                value: Some(v),
            }
        } else {
            State::Clear { at: ts(last) }
        };
        out.push(device_finding(&labels, d, state));
    }
    Ok(out)
}

/// Per device: the last reading of any metric, in the window or, for a
/// device silent through all of it, before it.
fn stale(s: &Stale, window: &Window, selected: &[&DeviceLabels]) -> PolarsResult<Vec<Finding>> {
    Ok(stale_findings(
        s,
        window,
        selected,
        &last_in_frame(window, selected)?,
    ))
}

/// The polars half of a stale rule: each selected device's latest reading
/// (epoch seconds) in the readings frame. It depends on the frame alone, so
/// a replay keeps it while the frame does not change.
pub fn last_in_frame(
    window: &Window,
    selected: &[&DeviceLabels],
) -> PolarsResult<HashMap<String, i64>> {
    let df = on_device(
        window.readings.clone().lazy(),
        selection(selected)?,
        JoinType::Inner,
    )
    .group_by([col("device")])
    .agg([col("ts").max().alias("last_ts")])
    .collect()?;
    let mut last_seen = HashMap::new();
    let (device, last_ts) = (df.column("device")?.str()?, df.column("last_ts")?.i64()?);
    for i in 0..df.height() {
        if let (Some(d), Some(t)) = (device.get(i), last_ts.get(i)) {
            last_seen.insert(d.to_owned(), t);
        }
    }
    Ok(last_seen)
}

/// The rest of a stale rule, at the window's `now`, given
/// [`last_in_frame`].
pub fn stale_findings(
    s: &Stale,
    window: &Window,
    selected: &[&DeviceLabels],
    last_seen: &HashMap<String, i64>,
) -> Vec<Finding> {
    let now = window.now.timestamp();
    let after = s.after.seconds();
    let mut out = Vec::new();
    for d in selected {
        let by_data = match last_seen.get(d.id.as_str()) {
            Some(t) => Some(*t),
            None => window.last_seen_before.get(&d.id).map(|t| t.timestamp()),
        };
        // Heard from recently, even if with old data (a meter catching up
        // on buffered history): it is sending, not offline.
        // Heard after `now` (while the cycle read): heard at `now`.
        let heard = window
            .last_message
            .get(&d.id)
            .map(|t| t.timestamp().min(now));
        let last = match (by_data, heard) {
            (Some(a), Some(b)) => a.max(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            // Never reported: not commissioned, not stale.
            (None, None) => continue,
        };
        // It said it went offline (a Last Will) and has sent nothing since:
        // stale now, not `after` later.
        let offline = window
            .offline
            .get(&d.id)
            .map(|t| t.timestamp())
            .filter(|t| *t >= last);
        let state = if let Some(at) = offline {
            State::Firing {
                since: ts(at),
                last: ts(now),
                value: None,
            }
        } else if now - last >= after {
            State::Firing {
                since: ts(last),
                last: ts(now),
                value: None,
            }
        } else {
            State::Clear { at: ts(last) }
        };
        out.push(Finding {
            subject: d.id.clone(),
            device: Some((*d).clone()),
            state,
        });
    }
    out
}

/// The group a device's use is added to.
fn group_key(d: &DeviceLabels, per: GroupBy) -> String {
    let part = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    match per {
        GroupBy::Device => d.id.clone(),
        GroupBy::Area => format!("{}/{}", part(&d.site), part(&d.area)),
        GroupBy::Building => format!("{}/{}", part(&d.site), part(&d.building)),
        GroupBy::Site => part(&d.site),
    }
}

/// Use since local midnight per group: registers turned into consumption by
/// the domain's one derivation (rollovers, resets, spikes), summed by group
/// in polars.
fn consumption(
    c: &Consumption,
    window: &Window,
    selected: &[&DeviceLabels],
) -> PolarsResult<Vec<Finding>> {
    Ok(consumption_findings(
        c,
        &consumption_totals(c, window, selected)?,
        window.now,
    ))
}

/// One group's use since its local midnight.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupUse {
    pub group: String,
    pub used: f64,
    /// The earliest local midnight of its members.
    pub since: DateTime<Utc>,
    /// The device, for a per-device group.
    pub device: Option<DeviceLabels>,
}

/// The data half of a consumption rule: each group's use since local
/// midnight. It depends on the registers and the local midnights only, so
/// a replay keeps it until either changes.
pub fn consumption_totals(
    c: &Consumption,
    window: &Window,
    selected: &[&DeviceLabels],
) -> PolarsResult<Vec<GroupUse>> {
    let policy = RegisterPolicy::default();
    let (mut groups, mut used, mut since) = (Vec::new(), Vec::new(), Vec::new());
    let mut members: BTreeMap<String, Vec<&DeviceLabels>> = BTreeMap::new();
    for d in selected {
        let Some(series) = window
            .registers
            .get(&(d.id.clone(), c.metric.as_str().to_owned()))
        else {
            continue;
        };
        let midnight = window.devices.local_midnight(&d.id, window.now);
        let samples: Vec<RegisterSample> = series
            .iter()
            .map(|&(ts, value)| RegisterSample { ts, value })
            .collect();
        // Intervals ending after midnight; one straddling it counts pro rata.
        let mut total = 0.0;
        for i in derive(&samples, &policy) {
            let (Some(v), true) = (i.consumption, i.end > midnight) else {
                continue;
            };
            let span = (i.end - i.start).num_seconds().max(1) as f64;
            let inside = (i.end - i.start.max(midnight)).num_seconds() as f64;
            total += v * (inside / span).clamp(0.0, 1.0);
        }
        let key = group_key(d, c.per);
        members.entry(key.clone()).or_default().push(d);
        groups.push(key);
        used.push(total);
        since.push(midnight.timestamp());
    }
    let df = df!("group" => groups, "used" => used, "since" => since)?
        .lazy()
        .group_by([col("group")])
        .agg([col("used").sum(), col("since").min()])
        .collect()?;
    let (group, used, since) = (
        df.column("group")?.str()?,
        df.column("used")?.f64()?,
        df.column("since")?.i64()?,
    );
    let mut out = Vec::new();
    for i in 0..df.height() {
        let (Some(g), Some(u), Some(s)) = (group.get(i), used.get(i), since.get(i)) else {
            continue;
        };
        // A per-device group names its device; larger groups name none.
        let device = match (c.per, members.get(g)) {
            (GroupBy::Device, Some(m)) => m.first().map(|d| (*d).clone()),
            _ => None,
        };
        out.push(GroupUse {
            group: g.to_owned(),
            used: u,
            since: ts(s),
            device,
        });
    }
    Ok(out)
}

/// Consumption findings at `now` from [`consumption_totals`].
pub fn consumption_findings(
    c: &Consumption,
    totals: &[GroupUse],
    now: DateTime<Utc>,
) -> Vec<Finding> {
    totals
        .iter()
        .map(|g| Finding {
            subject: g.group.clone(),
            device: g.device.clone(),
            state: if g.used > c.above {
                State::Firing {
                    since: g.since,
                    last: now,
                    value: Some(g.used),
                }
            } else {
                State::Clear { at: now }
            },
        })
        .collect()
}

/// Whether `e` is one of the events `rule` fires on.
pub fn event_matches(rule: &EventRule, e: &EventRow) -> bool {
    if e.event_type != rule.event_type.0.as_str() {
        return false;
    }
    let code_ok = rule.codes.is_empty()
        || e.code
            .as_deref()
            .is_some_and(|c| rule.codes.iter().any(|r| r == c));
    let held_ok = rule
        .min_seconds
        .is_none_or(|min| e.duration_s.is_some_and(|s| s >= min));
    let expired_ok = !rule.credential_expired || e.credential_expired;
    code_ok && held_ok && expired_ok
}

/// Per device: the matching events; firing until `resolve_after` has passed
/// since the last one or, for faults, until the device reports it is back in
/// service (an `idle` or `moving` state after the last fault).
fn events(rule: &EventRule, window: &Window, selected: &[&DeviceLabels]) -> Vec<Finding> {
    let spans = event_spans(rule, window.events.iter(), selected);
    let findings = spans_findings(&spans, rule.resolve_after.chrono(), window.now);
    hold_while_down(rule, findings, &spans, selected, &window.history.state)
}

/// A fault rule: its alerts follow the lift's reported state
/// ([`hold_while_down`]), so its devices' states are read with the window.
pub fn follows_state(rule: &EventRule) -> bool {
    rule.event_type.0 == estatemon_domain::event::EventType::Fault
}

/// The lift states in which a lift is out of service.
pub const DOWN_STATES: [&str; 3] = ["fault", "out_of_service", "fire_service"];

/// Fault rules over devices that report their state: a fault alert is
/// over when the device is back in service, never before. A finding that
/// `resolve_after` would clear, or a device whose fault event has left the
/// window, is held open while its latest state is a down one; a device
/// whose latest state is back in service clears at that state's start.
/// (`resolve_after` stays the fallback for devices that never report a
/// state.)
pub fn hold_while_down(
    rule: &EventRule,
    mut findings: Vec<Finding>,
    spans: &Spans,
    selected: &[&DeviceLabels],
    states: &HashMap<String, (String, DateTime<Utc>)>,
) -> Vec<Finding> {
    if !follows_state(rule) {
        return findings;
    }
    let down = |id: &str| {
        states
            .get(id)
            .is_some_and(|(s, _)| DOWN_STATES.contains(&s.as_str()))
    };
    for f in &mut findings {
        let quiet = matches!(f.state, State::Clear { .. })
            && !spans.back_in_service.contains_key(f.subject.as_str());
        if quiet && down(&f.subject) {
            f.state = State::Held;
        }
    }
    let seen: std::collections::HashSet<String> =
        findings.iter().map(|f| f.subject.clone()).collect();
    for d in selected {
        if seen.contains(d.id.as_str()) {
            continue;
        }
        let Some((state, since)) = states.get(&d.id) else {
            continue;
        };
        findings.push(Finding {
            subject: d.id.clone(),
            device: Some((*d).clone()),
            state: if DOWN_STATES.contains(&state.as_str()) {
                State::Held
            } else {
                State::Clear { at: *since }
            },
        });
    }
    findings
}

/// The data half of an event or denied-swipes rule: per subject, its first
/// and last matching event, when it was back in service after them, and
/// the device it names. It depends on the events alone, so a replay keeps
/// it while they are unchanged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spans {
    pub span: BTreeMap<String, (DateTime<Utc>, DateTime<Utc>)>,
    pub back_in_service: HashMap<String, DateTime<Utc>>,
    pub device: HashMap<String, DeviceLabels>,
}

/// [`Spans`] of an event rule over `events` (in time order; those of
/// other types are passed over).
pub fn event_spans<'e>(
    rule: &EventRule,
    events: impl Iterator<Item = &'e EventRow>,
    selected: &[&DeviceLabels],
) -> Spans {
    let labels = labels_of(selected);
    let mut span: BTreeMap<&str, (DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
    let mut back_in_service: HashMap<&str, DateTime<Utc>> = HashMap::new();
    let faults = follows_state(rule);
    // Events are in time order.
    for e in events.filter(|e| labels.contains_key(e.device.as_str())) {
        if event_matches(rule, e) {
            // A fault after the lift was back in service is a new fault:
            // its alert starts here, not at the earlier one.
            let returned = back_in_service.remove(e.device.as_str()).is_some();
            let s = span.entry(e.device.as_str()).or_insert((e.ts, e.ts));
            if returned {
                *s = (e.ts, e.ts);
            }
            s.0 = s.0.min(e.ts);
            s.1 = s.1.max(e.ts);
        } else if faults && e.state.is_some() && span.contains_key(e.device.as_str()) {
            back_in_service.entry(e.device.as_str()).or_insert(e.ts);
        }
    }
    Spans {
        device: span
            .keys()
            .filter_map(|d| labels.get(d).map(|l| ((*d).to_owned(), (*l).clone())))
            .collect(),
        span: span.into_iter().map(|(d, s)| (d.to_owned(), s)).collect(),
        back_in_service: back_in_service
            .into_iter()
            .map(|(d, t)| (d.to_owned(), t))
            .collect(),
    }
}

/// The time half: firing until `resolve_after` after the last event, or
/// clear from when the subject was back in service.
pub fn spans_findings(spans: &Spans, resolve_after: Duration, now: DateTime<Utc>) -> Vec<Finding> {
    let mut out = quiet_after(&spans.span, resolve_after, now, |d| {
        spans.device.get(d).cloned()
    });
    for f in &mut out {
        if let Some(at) = spans.back_in_service.get(f.subject.as_str()) {
            if matches!(f.state, State::Firing { .. }) {
                f.state = State::Clear { at: *at };
            }
        }
    }
    out
}

fn quiet_after(
    span: &BTreeMap<String, (DateTime<Utc>, DateTime<Utc>)>,
    resolve_after: Duration,
    now: DateTime<Utc>,
    device: impl Fn(&str) -> Option<DeviceLabels>,
) -> Vec<Finding> {
    span.iter()
        .map(|(subject, &(first, last))| Finding {
            subject: subject.clone(),
            device: device(subject),
            state: if now - last < resolve_after {
                State::Firing {
                    since: first,
                    last,
                    value: None,
                }
            } else {
                State::Clear {
                    at: last + resolve_after,
                }
            },
        })
        .collect()
}

/// Devices whose latest state is one of the rule's and has lasted
/// `longer_than`: firing from the moment it had (value: hours in it);
/// clear once the device reports another state.
fn mode(m: &Mode, window: &Window, selected: &[&DeviceLabels]) -> Vec<Finding> {
    let limit = m.longer_than.chrono();
    selected
        .iter()
        .filter_map(|d| {
            let (state, since) = window.history.state.get(&d.id)?;
            let held = m.states.iter().any(|s| s.0.as_str() == state);
            let state = if held && window.now - *since >= limit {
                State::Firing {
                    since: *since + limit,
                    last: window.now,
                    value: Some((window.now - *since).num_minutes() as f64 / 60.0),
                }
            } else {
                State::Clear { at: *since }
            };
            Some(Finding {
                subject: d.id.clone(),
                device: Some((*d).clone()),
                state,
            })
        })
        .collect()
}

/// Devices whose expected event is overdue: firing `every` after the last
/// one (value: days since it), or `every` after a device that never sent
/// it began to report anything.
fn expect(rule: &str, e: &Expect, window: &Window, selected: &[&DeviceLabels]) -> Vec<Finding> {
    let every = e.every.chrono();
    let get =
        |m: Option<&HashMap<String, DateTime<Utc>>>, id: &str| m.and_then(|m| m.get(id)).copied();
    selected
        .iter()
        .filter_map(|d| {
            let last = get(window.history.last.get(rule), &d.id);
            let first = get(window.history.first.get(rule), &d.id);
            let from = last.or(first)?;
            let state = if window.now - from < every {
                State::Clear { at: from }
            } else {
                State::Firing {
                    since: from + every,
                    last: window.now,
                    value: last.map(|t| (window.now - t).num_hours() as f64 / 24.0),
                }
            };
            Some(Finding {
                subject: d.id.clone(),
                device: Some((*d).clone()),
                state,
            })
        })
        .collect()
}

/// One finding per inspection window of a tracked device that ended
/// without its inspection (subject `device@local date of the window`):
/// firing from the window's end, clear when an inspection came (late, or
/// the first after a missed window). On-time and open windows say nothing.
fn inspection(rule: &InspectionRule, window: &Window, selected: &[&DeviceLabels]) -> Vec<Finding> {
    let mut out = Vec::new();
    for d in selected {
        let Some(i) = window.history.inspections.get(&d.id) else {
            continue;
        };
        let Some(since) = i.since else {
            continue;
        };
        for (class, cycle) in i.tracks.iter().filter(|(c, _)| rule.covers(*c)) {
            // Its own cycle beside its class's: named apart, so the two
            // tracks' windows never share a subject.
            let suffix = if class.is_none() && i.tracks.len() > 1 {
                format!(" ({cycle} cycle)")
            } else {
                String::new()
            };
            let from = window.now - cycle.longest() * crate::alerts::window::INSPECTION_WINDOWS;
            let windows: Vec<_> = cycle
                .windows(from.max(since), window.now, i.zone)
                .into_iter()
                .filter(|(_, end)| *end > since)
                .collect();
            out.extend(track_findings(d, i, &windows, window.now, &suffix));
        }
    }
    out
}

/// The findings of one track's windows (see [`inspection`]): an inspection
/// serves every track whose window it falls in.
fn track_findings(
    d: &DeviceLabels,
    i: &crate::alerts::window::Inspected,
    windows: &[(DateTime<Utc>, DateTime<Utc>)],
    now: DateTime<Utc>,
    suffix: &str,
) -> Vec<Finding> {
    use estatemon_domain::inspection::{assess, Status};
    let mut out = Vec::new();
    for slot in assess(windows, &i.times, now) {
        let state = match slot.status {
            Status::OnTime { .. } | Status::Open => continue,
            Status::Late { at } | Status::Missed { next: Some(at) } => State::Clear { at },
            Status::Missed { next: None } => State::Firing {
                since: slot.end,
                last: now,
                value: Some((now - slot.end).num_hours() as f64),
            },
        };
        let date = slot.start.with_timezone(&i.zone).format("%Y-%m-%d");
        out.push(Finding {
            subject: format!("{}@{date}{suffix}", d.id),
            device: Some(d.clone()),
            state,
        });
    }
    out
}

/// Bursts of denied swipes: `count` within `within`, by credential or by
/// gate. The burst's subject is the (pseudonymised) credential or the gate.
fn denied(rule: &Denied, window: &Window, selected: &[&DeviceLabels]) -> Vec<Finding> {
    spans_findings(
        &denied_spans(rule, window.events.iter(), selected),
        rule.resolve_after.chrono(),
        window.now,
    )
}

/// [`Spans`] of a denied-swipes rule over `events` (other types passed
/// over): per credential or gate, its first burst's start and its last
/// denied swipe, and the gate it was last at.
pub fn denied_spans<'e>(
    rule: &Denied,
    events: impl Iterator<Item = &'e EventRow>,
    selected: &[&DeviceLabels],
) -> Spans {
    let labels = labels_of(selected);
    let mut by_key: BTreeMap<&str, Vec<&EventRow>> = BTreeMap::new();
    for e in events.filter(|e| {
        e.event_type == "access"
            && e.result.as_deref() == Some("denied")
            && labels.contains_key(e.device.as_str())
    }) {
        let key = match rule.by {
            DeniedBy::Credential => match e.credential.as_deref() {
                Some(c) => c,
                None => continue,
            },
            DeniedBy::Gate => e.device.as_str(),
        };
        by_key.entry(key).or_default().push(e);
    }
    let within = rule.within.chrono();
    let need = rule.count as usize;
    let mut out = Spans::default();
    for (key, mut rows) in by_key {
        rows.sort_by_key(|e| e.ts);
        // Sliding window: the first burst's start, the last denied swipe.
        let mut start = 0;
        let mut burst: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
        for end in 0..rows.len() {
            while rows[end].ts - rows[start].ts > within {
                start += 1;
            }
            if end + 1 - start >= need {
                let b = burst.get_or_insert((rows[start].ts, rows[end].ts));
                b.1 = rows[end].ts;
            }
        }
        if let Some(b) = burst {
            let gate = rows.last().map(|e| e.device.as_str()).unwrap_or("");
            if let Some(l) = labels.get(gate) {
                out.device.insert(key.to_owned(), (*l).clone());
            }
            out.span.insert(key.to_owned(), b);
        }
    }
    out
}

#[cfg(test)]
mod tests;
