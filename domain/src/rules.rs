//! Alert rules: the rules file, its validation, and the pure matching that
//! both the ingest fast path and the analytics job use.
//!
//! A rules file is TOML: an optional `[severity]` table of response deadlines
//! and `[[rule]]` tables. Each rule has a name, a severity, a device
//! selector and exactly one condition table:
//!
//! | table | fires when |
//! |---|---|
//! | `threshold` | a gauge stays `above`/`below` a level for `for`, optionally only in local `hours`; clears at `clear` (hysteresis) |
//! | `rate` | a gauge rises by `rise` or falls by `fall` within `window` |
//! | `stale` | a device has sent nothing for `after` |
//! | `consumption` | a register's use since local midnight (per device, area, building or site) exceeds `above` |
//! | `event` | an event of `type` arrives (fault `codes`, door held open ≥ `min_seconds`, expired credentials) |
//! | `denied` | `count` denied swipes of one credential (or at one gate) within `within` |
//! | `mode` | a device's latest state is one of `states` and has lasted `longer_than` (a lift left in maintenance) |
//! | `expect` | no event of `type` (with `result`) within `every` (EN 81-28's alarm-line test call) |
//! | `inspection` | a device's inspection window (its class's or own cycle) passed without an inspection |
//!
//! Event rules resolve after `resolve_after` without a new matching event.
//! `immediate = true` marks rules that fire from the ingest path (one event
//! or one reading decides), not from the scheduled evaluation.
//!
//! The shipped default set is [`DEFAULT_RULES`], with the figures from the
//! users' own material (0.5 MPa fire main, 15 min / 2 h / 24 h responses).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, IntoDeserializer};
use serde::{Deserialize, Serialize};

use crate::config::{line_of, locate_error, ConfigError};
use crate::device::{DeviceKind, Purpose};
use crate::event::{AccessResult, EventDetail, EventType, LiftState};
use crate::metric::{Metric, MetricKind};

/// The rules shipped with estatemon, used when `alerts.rules_file` is unset.
pub const DEFAULT_RULES: &str = include_str!("../rules/default.toml");

/// A span of time written `30s`, `15m`, `2h` or `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span(pub i64);

impl Span {
    pub fn seconds(self) -> i64 {
        self.0
    }
    pub fn chrono(self) -> chrono::Duration {
        chrono::Duration::seconds(self.0)
    }
    pub fn parse(text: &str) -> Result<Span, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let n: i64 = digits
            .parse()
            .map_err(|_| format!("`{text}` is not a duration like 30s, 15m, 2h or 1d"))?;
        let scale = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(format!("`{text}`: unit must be s, m, h or d")),
        };
        n.checked_mul(scale)
            .filter(|s| *s <= 366 * 86_400)
            .map(Span)
            .ok_or_else(|| format!("`{text}` is longer than a year"))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s != 0 && s % 86_400 == 0 {
            write!(f, "{}d", s / 86_400)
        } else if s != 0 && s % 3600 == 0 {
            write!(f, "{}h", s / 3600)
        } else if s != 0 && s % 60 == 0 {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        let text = String::deserialize(d)?;
        Span::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Local hours `01:00-05:00` (may wrap midnight: `22:00-06:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    /// Minutes after local midnight.
    pub from: u32,
    pub to: u32,
}

impl Hours {
    pub fn parse(text: &str) -> Result<Hours, String> {
        let bad = || format!("`{text}` is not a range of local times like 01:00-05:00");
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        let minutes = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
        };
        let (from, to) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if from == to {
            return Err(format!("`{text}` is an empty range"));
        }
        Ok(Hours { from, to })
    }

    /// Whether a local time of day (minutes after midnight) is inside.
    pub fn contains(&self, minute_of_day: u32) -> bool {
        if self.from < self.to {
            (self.from..self.to).contains(&minute_of_day)
        } else {
            minute_of_day >= self.from || minute_of_day < self.to
        }
    }
}

impl<'de> Deserialize<'de> for Hours {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Hours, D::Error> {
        let text = String::deserialize(d)?;
        Hours::parse(&text).map_err(de::Error::custom)
    }
}

/// One value or a list of them (`kind = "lift"` or `kind = ["lift", …]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(|t| OneOrMany(vec![t]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(t) = seq.next_element()? {
                    out.push(t);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// How urgent an alert is; each carries a response deadline after which an
/// unacknowledged alert escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Emergency repair: trapped passenger, forced door, fire main.
    Emergency,
    /// Ordinary repair.
    Ordinary,
    /// Complaint-grade: look at it within a day.
    Routine,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Emergency => "emergency",
            Severity::Ordinary => "ordinary",
            Severity::Routine => "routine",
        }
    }
    pub fn parse(s: &str) -> Option<Severity> {
        [Severity::Emergency, Severity::Ordinary, Severity::Routine]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// Response deadlines per severity (DOMAIN.md: 15 min, 2 h, 24 h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Deadlines {
    pub emergency: Span,
    pub ordinary: Span,
    pub routine: Span,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            emergency: Span(15 * 60),
            ordinary: Span(2 * 3600),
            routine: Span(24 * 3600),
        }
    }
}

impl Deadlines {
    pub fn of(&self, severity: Severity) -> Span {
        match severity {
            Severity::Emergency => self.emergency,
            Severity::Ordinary => self.ordinary,
            Severity::Routine => self.routine,
        }
    }
}

/// Which devices a rule watches. Every field given must match (lists match
/// any of their values); an empty selector matches every device.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Selector {
    pub kind: OneOrMany<DeviceKind>,
    pub purpose: OneOrMany<Purpose>,
    pub site: OneOrMany<String>,
    pub building: OneOrMany<String>,
    pub area: OneOrMany<String>,
    pub device: OneOrMany<String>,
}

/// A device as rules see it: the ledger's labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct DeviceLabels {
    pub id: String,
    pub kind: String,
    pub site: Option<String>,
    pub building: Option<String>,
    pub area: Option<String>,
    pub purpose: Option<String>,
}

impl DeviceLabels {
    /// A device ingest registered on its own because it published before
    /// the registry knew it: its kind is `unknown` and it has no building,
    /// area or purpose yet.
    pub fn is_unregistered(&self) -> bool {
        self.kind == crate::device::DeviceKind::Unknown.as_str()
    }
}

impl Selector {
    /// Whether every field given matches the device's labels.
    pub fn matches(&self, d: &DeviceLabels) -> bool {
        self.match_labels(d, false)
    }

    /// Like [`Selector::matches`], but a label the registry has not given
    /// the device yet (kind `unknown`, no purpose, building or area) cannot
    /// rule it out. Site and device id still have to match: the topic names
    /// them. Used only for emergencies (see [`Rule::applies_to`]).
    pub fn matches_unless_unknown(&self, d: &DeviceLabels) -> bool {
        self.match_labels(d, true)
    }

    fn match_labels(&self, d: &DeviceLabels, unknown_passes: bool) -> bool {
        fn any<T>(list: &OneOrMany<T>, f: impl Fn(&T) -> bool) -> bool {
            list.0.is_empty() || list.0.iter().any(f)
        }
        // A label the ledger lacks passes only when `unknown_passes`.
        let label = |v: &Option<String>, s: &str| match v {
            Some(v) => v == s,
            None => unknown_passes,
        };
        let kind_unknown = unknown_passes && d.is_unregistered();
        any(&self.kind, |k| kind_unknown || k.as_str() == d.kind)
            && any(&self.purpose, |p| label(&d.purpose, p.as_str()))
            && any(&self.site, |s| d.site.as_deref() == Some(s.as_str()))
            && any(&self.building, |s| label(&d.building, s))
            && any(&self.area, |s| label(&d.area, s))
            && any(&self.device, |s| *s == d.id)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub metric: Metric,
    pub above: Option<f64>,
    pub below: Option<f64>,
    /// The level at which a firing alert resolves; defaults to the trigger
    /// level. Between the two the alert keeps its state (no flapping).
    pub clear: Option<f64>,
    /// How long the breach must last before the alert fires.
    #[serde(default, rename = "for")]
    pub for_: Span,
    /// Only samples at these local hours count (night-time flow).
    pub hours: Option<Hours>,
}

/// Which side of a level is the breach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Level {
    Above(f64),
    Below(f64),
}

impl Level {
    pub fn breached(self, value: f64) -> bool {
        match self {
            Level::Above(l) => value > l,
            Level::Below(l) => value < l,
        }
    }
    /// Whether `value` is on the safe side of `clear`.
    pub fn cleared(self, clear: f64, value: f64) -> bool {
        match self {
            Level::Above(_) => value <= clear,
            Level::Below(_) => value >= clear,
        }
    }
}

impl Threshold {
    pub fn level(&self) -> Level {
        match (self.above, self.below) {
            (Some(a), _) => Level::Above(a),
            (None, Some(b)) => Level::Below(b),
            (None, None) => unreachable!("validated: above or below"),
        }
    }
    pub fn clear_level(&self) -> f64 {
        self.clear.unwrap_or(match self.level() {
            Level::Above(l) | Level::Below(l) => l,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub metric: Metric,
    pub window: Span,
    pub rise: Option<f64>,
    pub fall: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stale {
    pub after: Span,
}

/// What a consumption rule adds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Device,
    Area,
    Building,
    Site,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumption {
    /// A cumulative register (`energy_kwh`, `volume_m3`).
    pub metric: Metric,
    #[serde(default = "default_per")]
    pub per: GroupBy,
    /// Use since local midnight above this, in the metric's unit.
    pub above: f64,
}

fn default_per() -> GroupBy {
    GroupBy::Area
}

fn default_resolve_after() -> Span {
    Span(30 * 60)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRule {
    #[serde(rename = "type")]
    pub event_type: EventTypeName,
    /// For `fault`: which codes (any when empty).
    #[serde(default)]
    pub codes: Vec<String>,
    /// For `door_held_open`: shortest hold that counts.
    pub min_seconds: Option<f64>,
    /// For `access`: only attempts with an expired credential.
    #[serde(default)]
    pub credential_expired: bool,
    #[serde(default = "default_resolve_after")]
    pub resolve_after: Span,
}

/// [`EventType`] as written in a rules file (with a helpful error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTypeName(pub EventType);

impl<'de> Deserialize<'de> for EventTypeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        EventType::parse(&text).map(EventTypeName).ok_or_else(|| {
            let names: Vec<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            de::Error::custom(format!(
                "unknown event type `{text}`, expected one of {}",
                names.join(", ")
            ))
        })
    }
}

/// Whose denied swipes are counted together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeniedBy {
    Credential,
    Gate,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Denied {
    pub count: u32,
    pub within: Span,
    pub by: DeniedBy,
    #[serde(default = "default_resolve_after")]
    pub resolve_after: Span,
}

/// A state held too long: fires `longer_than` after the device entered
/// one of `states` (its state events say so) and stayed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mode {
    pub states: Vec<LiftStateName>,
    pub longer_than: Span,
}

/// [`LiftState`] as written in a rules file (with a helpful error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiftStateName(pub LiftState);

impl<'de> Deserialize<'de> for LiftStateName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        LiftState::parse(&text).map(LiftStateName).ok_or_else(|| {
            let names: Vec<_> = LiftState::ALL.iter().map(|t| t.as_str()).collect();
            de::Error::custom(format!(
                "unknown state `{text}`, expected one of {}",
                names.join(", ")
            ))
        })
    }
}

/// An event that must keep coming: fires `every` after the last one (or
/// at once for a device that sends events but never this one).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(rename = "type")]
    pub event_type: EventTypeName,
    /// Only events with this `result` count (`passed` for test calls).
    pub result: Option<String>,
    pub every: Span,
}

/// Devices with an inspection cycle (a class or their own) whose window
/// passed without an inspection: one alert per window, from its end until
/// an inspection comes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InspectionRule {
    /// `A`, `B`, `C`, and `none` for devices with only a cycle of their
    /// own; every tracked device when empty.
    #[serde(default)]
    pub classes: Vec<String>,
}

impl InspectionRule {
    pub fn covers(&self, class: Option<crate::inspection::EquipmentClass>) -> bool {
        self.classes.is_empty()
            || self
                .classes
                .iter()
                .any(|c| class.map_or(c == "none", |k| k.as_str() == c))
    }
}

/// What a rule watches for.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Threshold(Threshold),
    Rate(Rate),
    Stale(Stale),
    Consumption(Consumption),
    Event(EventRule),
    Denied(Denied),
    Mode(Mode),
    Expect(Expect),
    Inspection(InspectionRule),
}

impl Condition {
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::Inspection(_) => "inspection",
            Condition::Mode(_) => "mode",
            Condition::Expect(_) => "expect",
            Condition::Threshold(_) => "threshold",
            Condition::Rate(_) => "rate",
            Condition::Stale(_) => "stale",
            Condition::Consumption(_) => "consumption",
            Condition::Event(_) => "event",
            Condition::Denied(_) => "denied",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub summary: String,
    pub severity: Severity,
    pub select: Selector,
    pub immediate: bool,
    pub condition: Condition,
}

impl Rule {
    /// Whether this rule watches this device. An emergency rule (severity
    /// `emergency`, raised on the ingest path) also watches a device the
    /// registry does not know yet, whenever the selector's only objection
    /// would be a label the device lacks: a trapped passenger reported by a
    /// lift that was installed yesterday must page, not wait for the ledger.
    pub fn applies_to(&self, d: &DeviceLabels) -> bool {
        self.select.matches(d)
            || (self.severity == Severity::Emergency
                && self.immediate
                && d.is_unregistered()
                && self.select.matches_unless_unknown(d))
    }

    /// Which of the always-on emergencies this rule covers, if any.
    pub fn covers(&self) -> Option<Emergency> {
        if !self.immediate || self.severity != Severity::Emergency {
            return None;
        }
        match &self.condition {
            Condition::Event(e) if e.event_type.0 == EventType::Fault => (e.codes.is_empty()
                || e.codes.iter().any(|c| c == "entrapment"))
            .then_some(Emergency::Entrapment),
            Condition::Event(e) if e.event_type.0 == EventType::DoorForced => {
                Some(Emergency::DoorForced)
            }
            Condition::Threshold(t)
                if t.metric == Metric::PressureMpa && matches!(t.level(), Level::Below(_)) =>
            {
                Some(Emergency::FireMainPressureLow)
            }
            _ => None,
        }
    }
}

/// The events that must page whatever else is misconfigured (DOMAIN.md:
/// a trapped passenger is the most urgent event in the building; forced
/// doors; the fire main below 0.5 MPa). A rule set that lacks an immediate
/// emergency rule for one of them is refused unless an admin waives it
/// explicitly (see [`RuleSet::missing_emergencies`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Emergency {
    Entrapment,
    DoorForced,
    FireMainPressureLow,
}

impl Emergency {
    pub const ALL: [Emergency; 3] = [
        Emergency::Entrapment,
        Emergency::DoorForced,
        Emergency::FireMainPressureLow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Emergency::Entrapment => "entrapment",
            Emergency::DoorForced => "door_forced",
            Emergency::FireMainPressureLow => "fire_main_pressure_low",
        }
    }

    /// What a rule covering it looks like, for the error message.
    pub fn needs(self) -> &'static str {
        match self {
            Emergency::Entrapment => {
                "an immediate emergency event rule of type `fault` with code `entrapment`"
            }
            Emergency::DoorForced => "an immediate emergency event rule of type `door_forced`",
            Emergency::FireMainPressureLow => {
                "an immediate emergency threshold rule on `pressure_mpa` with `below`"
            }
        }
    }
}

impl fmt::Display for Emergency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    pub deadlines: Deadlines,
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    severity: Deadlines,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    summary: Option<String>,
    severity: Severity,
    #[serde(default)]
    select: Selector,
    #[serde(default)]
    immediate: bool,
    #[serde(default = "yes")]
    enabled: bool,
    threshold: Option<Threshold>,
    rate: Option<Rate>,
    stale: Option<Stale>,
    consumption: Option<Consumption>,
    event: Option<EventRule>,
    denied: Option<Denied>,
    mode: Option<Mode>,
    expect: Option<Expect>,
    inspection: Option<InspectionRule>,
}

fn yes() -> bool {
    true
}

impl RuleSet {
    /// The shipped default rules.
    pub fn defaults() -> RuleSet {
        RuleSet::parse(DEFAULT_RULES, Path::new("<default rules>"))
            .expect("the shipped rules are valid (tested)")
    }

    /// Reads a rules file, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<RuleSet, ConfigError> {
        match path {
            None => Ok(RuleSet::defaults()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                    path: path.to_owned(),
                    source,
                })?;
                RuleSet::parse(&text, path)
            }
        }
    }

    /// Parses and validates; errors name the file, the line and the field
    /// (`rule[night_water_flow].threshold.clear`).
    pub fn parse(text: &str, path: &Path) -> Result<RuleSet, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| locate_error(path, text, &e))?;
        for (name, span) in [
            ("emergency", file.severity.emergency),
            ("ordinary", file.severity.ordinary),
            ("routine", file.severity.routine),
        ] {
            if span.seconds() <= 0 {
                return Err(ConfigError::Invalid {
                    path: PathBuf::from(path),
                    line: line_of(text, &format!("{name} =")),
                    field: format!("severity.{name}"),
                    message: "a response deadline must be positive".into(),
                });
            }
        }
        let mut seen = HashSet::new();
        let mut rules = Vec::new();
        for raw in file.rules {
            let name = raw.name.clone();
            let fail = |field: &str, needle: &str, message: String| ConfigError::Invalid {
                path: PathBuf::from(path),
                line: rule_line(text, &name, needle),
                field: format!("rule[{name}].{field}"),
                message,
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(fail(
                    "name",
                    "name",
                    "must be lower-case letters, digits and _".into(),
                ));
            }
            if !seen.insert(name.clone()) {
                return Err(fail("name", "name", "two rules have this name".into()));
            }
            let mut conditions = Vec::new();
            if let Some(t) = raw.threshold {
                conditions.push(Condition::Threshold(t));
            }
            if let Some(r) = raw.rate {
                conditions.push(Condition::Rate(r));
            }
            if let Some(s) = raw.stale {
                conditions.push(Condition::Stale(s));
            }
            if let Some(c) = raw.consumption {
                conditions.push(Condition::Consumption(c));
            }
            if let Some(e) = raw.event {
                conditions.push(Condition::Event(e));
            }
            if let Some(d) = raw.denied {
                conditions.push(Condition::Denied(d));
            }
            if let Some(m) = raw.mode {
                conditions.push(Condition::Mode(m));
            }
            if let Some(e) = raw.expect {
                conditions.push(Condition::Expect(e));
            }
            if let Some(i) = raw.inspection {
                conditions.push(Condition::Inspection(i));
            }
            if conditions.len() != 1 {
                return Err(fail(
                    "condition",
                    "name",
                    format!(
                        "needs exactly one of threshold, rate, stale, consumption, event, denied, mode, expect, inspection (found {})",
                        conditions.len()
                    ),
                ));
            }
            let condition = conditions.pop().expect("one");
            validate_condition(&condition, raw.immediate).map_err(|(field, message)| {
                fail(field, field.rsplit('.').next().unwrap_or(field), message)
            })?;
            if !raw.enabled {
                continue;
            }
            let summary = raw.summary.unwrap_or_else(|| name.replace('_', " "));
            rules.push(Rule {
                name,
                summary,
                severity: raw.severity,
                select: raw.select,
                immediate: raw.immediate,
                condition,
            });
        }
        Ok(RuleSet {
            deadlines: file.severity,
            rules,
        })
    }

    /// The emergencies no enabled rule of this set pages for. Empty for the
    /// shipped rules; anything else must be waived explicitly.
    pub fn missing_emergencies(&self) -> Vec<Emergency> {
        let covered: HashSet<Emergency> = self.rules.iter().filter_map(Rule::covers).collect();
        Emergency::ALL
            .into_iter()
            .filter(|e| !covered.contains(e))
            .collect()
    }

    /// A sentence naming what is missing, or `None` when nothing is.
    pub fn missing_emergencies_message(&self) -> Option<String> {
        let missing = self.missing_emergencies();
        if missing.is_empty() {
            return None;
        }
        let list: Vec<String> = missing
            .iter()
            .map(|e| format!("{e} (needs {})", e.needs()))
            .collect();
        Some(format!(
            "these rules would stop paging for: {}; keep the shipped emergency rules \
             (`estatemon rules defaults`), or waive them explicitly",
            list.join("; ")
        ))
    }

    /// Immediate rules that this event sets off on this device.
    pub fn immediate_for_event<'a>(
        &'a self,
        device: &'a DeviceLabels,
        event: &'a EventDetail,
    ) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |r| {
            r.immediate
                && r.applies_to(device)
                && matches!(&r.condition, Condition::Event(e) if e.matches(event))
        })
    }

    /// Immediate threshold rules that this reading breaches.
    pub fn immediate_for_reading<'a>(
        &'a self,
        device: &'a DeviceLabels,
        metric: Metric,
        value: f64,
    ) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |r| {
            r.immediate
                && r.applies_to(device)
                && matches!(&r.condition, Condition::Threshold(t)
                    if t.metric == metric && t.level().breached(value))
        })
    }
}

impl EventRule {
    /// Whether one event is what this rule watches for.
    pub fn matches(&self, event: &EventDetail) -> bool {
        if event.event_type() != self.event_type.0 {
            return false;
        }
        match event {
            EventDetail::Fault { code } => {
                self.codes.is_empty() || self.codes.iter().any(|c| c == code)
            }
            EventDetail::DoorHeldOpen { seconds } => {
                self.min_seconds.is_none_or(|min| *seconds >= min)
            }
            EventDetail::Access {
                credential_expired, ..
            } => !self.credential_expired || *credential_expired,
            _ => true,
        }
    }
}

impl Denied {
    /// Whether this event counts towards a denied burst.
    pub fn counts(event: &EventDetail) -> bool {
        matches!(
            event,
            EventDetail::Access {
                result: AccessResult::Denied,
                ..
            }
        )
    }
}

fn validate_condition(c: &Condition, immediate: bool) -> Result<(), (&'static str, String)> {
    let finite = |v: f64| v.is_finite();
    match c {
        Condition::Threshold(t) => {
            if t.metric.kind() != MetricKind::Gauge {
                return Err((
                    "threshold.metric",
                    format!(
                        "{} is a register; thresholds watch gauges (use consumption)",
                        t.metric
                    ),
                ));
            }
            let level = match (t.above, t.below) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(("threshold.above", "give exactly one of above, below".into()))
                }
                (Some(a), None) if finite(a) => Level::Above(a),
                (None, Some(b)) if finite(b) => Level::Below(b),
                _ => return Err(("threshold.above", "must be a finite number".into())),
            };
            if let Some(clear) = t.clear {
                let ok = finite(clear)
                    && match level {
                        Level::Above(a) => clear <= a,
                        Level::Below(b) => clear >= b,
                    };
                if !ok {
                    return Err((
                        "threshold.clear",
                        "must be on the safe side of the trigger level (≤ above, ≥ below)".into(),
                    ));
                }
            }
            if immediate && (t.for_.0 != 0 || t.hours.is_some()) {
                return Err((
                    "threshold.for",
                    "an immediate rule decides on one reading: no `for` or `hours`".into(),
                ));
            }
        }
        Condition::Rate(r) => {
            if r.metric.kind() != MetricKind::Gauge {
                return Err(("rate.metric", format!("{} is not a gauge", r.metric)));
            }
            if r.window.0 <= 0 {
                return Err(("rate.window", "must be positive".into()));
            }
            match (r.rise, r.fall) {
                (Some(v), None) | (None, Some(v)) if finite(v) && v > 0.0 => {}
                _ => return Err(("rate.rise", "give one positive rise or fall".into())),
            }
        }
        Condition::Stale(s) => {
            if s.after.0 < 60 {
                return Err(("stale.after", "must be at least 1m".into()));
            }
        }
        Condition::Consumption(c) => {
            if c.metric.kind() != MetricKind::Cumulative {
                return Err((
                    "consumption.metric",
                    format!("{} is not a register (energy_kwh, volume_m3)", c.metric),
                ));
            }
            if !finite(c.above) || c.above <= 0.0 {
                return Err(("consumption.above", "must be positive".into()));
            }
        }
        Condition::Event(e) => {
            if !e.codes.is_empty() && e.event_type.0 != EventType::Fault {
                return Err(("event.codes", "codes apply to fault events".into()));
            }
            if e.min_seconds.is_some() && e.event_type.0 != EventType::DoorHeldOpen {
                return Err((
                    "event.min_seconds",
                    "applies to door_held_open events".into(),
                ));
            }
            if e.credential_expired && e.event_type.0 != EventType::Access {
                return Err((
                    "event.credential_expired",
                    "applies to access events".into(),
                ));
            }
            if e.resolve_after.0 < 60 {
                return Err(("event.resolve_after", "must be at least 1m".into()));
            }
        }
        Condition::Mode(m) => {
            if m.states.is_empty() {
                return Err(("mode.states", "name at least one state".into()));
            }
            if m.longer_than.0 < 60 {
                return Err(("mode.longer_than", "must be at least 1m".into()));
            }
        }
        Condition::Expect(e) => {
            if e.every.0 < 60 {
                return Err(("expect.every", "must be at least 1m".into()));
            }
            if e.result.is_some() && e.event_type.0 != EventType::AlarmTest {
                return Err(("expect.result", "applies to alarm_test events".into()));
            }
            if let Some(r) = e
                .result
                .as_deref()
                .filter(|r| !matches!(*r, "passed" | "failed"))
            {
                return Err(("expect.result", format!("`{r}` is not passed or failed")));
            }
        }
        Condition::Inspection(i) => {
            if let Some(c) = i
                .classes
                .iter()
                .find(|c| !matches!(c.as_str(), "A" | "B" | "C" | "none"))
            {
                return Err((
                    "inspection.classes",
                    format!("`{c}` is not A, B, C or none"),
                ));
            }
        }
        Condition::Denied(d) => {
            if d.count < 2 {
                return Err(("denied.count", "must be at least 2".into()));
            }
            if d.within.0 <= 0 {
                return Err(("denied.within", "must be positive".into()));
            }
            if immediate {
                return Err((
                    "immediate",
                    "denied bursts are counted by the analytics job".into(),
                ));
            }
        }
    }
    if immediate
        && matches!(
            c,
            Condition::Rate(_)
                | Condition::Stale(_)
                | Condition::Consumption(_)
                | Condition::Mode(_)
                | Condition::Expect(_)
                | Condition::Inspection(_)
        )
    {
        return Err((
            "immediate",
            format!(
                "{} rules need a window; only event and threshold rules can be immediate",
                c.kind()
            ),
        ));
    }
    Ok(())
}

/// The line of `needle` inside the `[[rule]]` whose name is `name`.
fn rule_line(text: &str, name: &str, needle: &str) -> Option<usize> {
    let start = line_of(text, &format!("\"{name}\""))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut block_start = start;
    while block_start > 1 && !lines[block_start - 1].trim_start().starts_with("[[rule]]") {
        block_start -= 1;
    }
    for (i, l) in lines.iter().enumerate().skip(block_start) {
        if i + 1 > block_start && l.trim_start().starts_with("[[rule]]") {
            break;
        }
        if l.contains(needle) {
            return Some(i + 1);
        }
    }
    Some(start)
}

#[cfg(test)]
mod tests;
