//! Declarative payload mappings: devices that speak their own JSON on their
//! own topics (Tasmota, Shelly, Zigbee2MQTT, a gateway's format) become
//! estatemon readings by configuration, not code. Pure: a mapping, a topic,
//! a payload and the time of receipt in, readings or a reason out.
//!
//! ```toml
//! [[ingest.mapping]]
//! name = "plant-room-gateway"
//! topic = "gw/{site}/+/{device_id}"      # {site}, {device_id}, + and a final #
//! when = [{ path = "type", equals = "meter" }]
//! time_path = "ts"                         # default: the time of receipt
//! time_format = "epoch_ms"                 # rfc3339 | epoch_s | epoch_ms | epoch | local
//!   [[ingest.mapping.value]]
//!   path = "data[*].kwh"                   # dots, [n], [*] and * fan out
//!   metric = "energy_kwh"
//!   unit = "Wh"                            # converted to the metric's unit
//! ```
//!
//! Paths: `$` (the whole payload, a bare number), `ENERGY.Total`, `params.switch:0.aenergy.total` (a key may hold
//! `:`), `a.b[0]`, `a.b[*].c` (every element), `params.*.aenergy.total`
//! (every key; `{key}` in a value's `device` template names it).

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::device::MAX_ID_LEN;
use crate::metric::Metric;
use crate::units::Unit;
use crate::Reading;

/// One mapping, as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub name: String,
    /// MQTT topic pattern with `{site}` and `{device_id}` captures, `+`
    /// for any one level, and a final `#`.
    pub topic: String,
    /// The device id from the payload instead of the topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    /// Prepended to every device id (e.g. `tasmota-`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device_prefix: String,
    /// The site when the topic has no `{site}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Every condition must hold for the mapping to apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
    /// Where the timestamp is; none: the time of receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_path: Option<String>,
    #[serde(default)]
    pub time_format: TimeFormat,
    /// A payload without a time at `time_path` is read at the time of
    /// receipt (Zigbee2MQTT sends `last_seen` only when it is enabled).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub time_optional: bool,
    /// The zone of naive local times (`time_format = "local"`, as Tasmota
    /// sends them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(rename = "value")]
    pub values: Vec<ValueMap>,
    /// The devices' online/offline topic (an MQTT Last Will): offline
    /// makes the stale rules page at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<Availability>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Availability {
    /// Topic pattern, with `{device_id}` (and `{site}`).
    pub topic: String,
    /// Where the state is in a JSON payload (`state`); a payload that is
    /// not a JSON object is read as plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub online: Vec<String>,
    pub offline: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub path: String,
    /// The value at `path` (a string, or a number or boolean written as
    /// text); without it, the path must merely exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    #[default]
    Rfc3339,
    EpochS,
    EpochMs,
    /// Seconds with a fraction (Shelly's `ts`).
    Epoch,
    /// A naive date-time in `time_zone`.
    Local,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMap {
    pub path: String,
    pub metric: Metric,
    /// The unit the device sends (default: the metric's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub scale: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: f64,
    /// The device of this value: a template over `{device_id}` and `{key}`
    /// (the key or index a `*` matched). Default `{device_id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// A missing path is skipped rather than a dead letter (Shelly's
    /// partial updates carry only what changed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

fn one() -> f64 {
    1.0
}
fn is_one(v: &f64) -> bool {
    *v == 1.0
}
fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// What a mapping made of a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub mapping: String,
    pub site: Option<String>,
    /// The message's device (values may name others through `device`).
    pub device_id: String,
    pub readings: Vec<Reading>,
}

/// Why a mapping failed on a message (the mapping's name and the path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mapping `{mapping}`: {detail}")]
pub struct MappingError {
    pub mapping: String,
    pub detail: String,
    /// The input could not be read at all (not JSON, no timestamp).
    pub kind: MappingErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingErrorKind {
    InvalidJson,
    MissingField,
    InvalidField,
    InvalidTimestamp,
    UnknownUnit,
}

impl Mapping {
    /// Checks what the configuration loader can: the pattern, the units,
    /// the time settings. `Err((field, message))`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.name.trim().is_empty() {
            return Err(("name", "must not be empty".into()));
        }
        let levels: Vec<&str> = self.topic.split('/').collect();
        if let Some(i) = levels.iter().position(|l| *l == "#") {
            if i + 1 != levels.len() {
                return Err(("topic", format!("`{}`: # must be last", self.topic)));
            }
        }
        if !levels.contains(&"{device_id}") && self.device_path.is_none() {
            return Err((
                "topic",
                format!(
                    "`{}` has no {{device_id}} and no device_path is set",
                    self.topic
                ),
            ));
        }
        for l in &levels {
            if l.contains(['{', '}']) && !matches!(*l, "{site}" | "{device_id}") {
                return Err(("topic", format!("`{l}`: only {{site}} and {{device_id}}")));
            }
        }
        if self.values.is_empty() {
            return Err(("value", "a mapping needs at least one [[value]]".into()));
        }
        for v in &self.values {
            if let Some(u) = &v.unit {
                let unit = Unit::parse(u)
                    .ok_or_else(|| ("value.unit", format!("`{u}` is not a known unit")))?;
                if unit.dimension != v.metric.dimension() {
                    return Err((
                        "value.unit",
                        format!("`{u}` does not measure {} ({})", v.metric, v.metric.unit()),
                    ));
                }
            }
            if !(v.scale.is_finite() && v.offset.is_finite()) {
                return Err(("value.scale", "scale and offset must be finite".into()));
            }
            parse_path(&v.path).map_err(|e| ("value.path", e))?;
        }
        if self.time_format == TimeFormat::Local {
            let tz = self.time_zone.as_deref().unwrap_or("");
            tz.parse::<chrono_tz::Tz>().map_err(|_| {
                (
                    "time_zone",
                    format!("`{tz}`: local times need an IANA time zone"),
                )
            })?;
        }
        Ok(())
    }

    /// The subscription filter: captures and `+` as `+`.
    pub fn filter(&self) -> String {
        filter_of(&self.topic)
    }

    /// The availability topic's filter, if any.
    pub fn availability_filter(&self) -> Option<String> {
        self.availability.as_ref().map(|a| filter_of(&a.topic))
    }

    /// The topic's captures when it fits the pattern.
    pub fn match_topic<'a>(&self, topic: &'a str) -> Option<(Option<&'a str>, Option<&'a str>)> {
        captures(&self.topic, topic)
    }

    /// An availability message: (device, site, online). `None`: not this
    /// mapping's availability topic.
    pub fn apply_availability(
        &self,
        topic: &str,
        payload: &[u8],
    ) -> Option<Result<Said, MappingError>> {
        let a = self.availability.as_ref()?;
        let (site, device) = captures(&a.topic, topic)?;
        let device = format!("{}{}", self.device_prefix, device.unwrap_or_default());
        if !usable_id(&device) {
            return Some(Err(MappingError {
                mapping: self.name.clone(),
                detail: format!("device id `{device}` is empty or over {MAX_ID_LEN} bytes"),
                kind: MappingErrorKind::InvalidField,
            }));
        }
        let text = std::str::from_utf8(payload).unwrap_or("").trim();
        let state = match (&a.path, serde_json::from_str::<Value>(text)) {
            (Some(p), Ok(v @ Value::Object(_))) => {
                select(&v, p).first().and_then(|(x, _)| text_of(x))
            }
            (_, Ok(Value::String(s))) => Some(s),
            _ => Some(text.to_owned()),
        };
        let fail = |detail: String| MappingError {
            mapping: self.name.clone(),
            detail,
            kind: MappingErrorKind::InvalidField,
        };
        Some(match state {
            Some(s) if a.online.contains(&s) => {
                Ok((device, site.map(str::to_owned).or(self.site.clone()), true))
            }
            Some(s) if a.offline.contains(&s) => {
                Ok((device, site.map(str::to_owned).or(self.site.clone()), false))
            }
            other => Err(fail(format!(
                "availability `{}` is neither online ({}) nor offline ({})",
                other.unwrap_or_default(),
                a.online.join(", "),
                a.offline.join(", ")
            ))),
        })
    }
}

/// What an availability message said: (device, site, online).
pub type Said = (String, Option<String>, bool);

fn filter_of(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|l| if l.starts_with('{') { "+" } else { l })
        .collect::<Vec<_>>()
        .join("/")
}

/// `{site}` and `{device_id}` of `topic` when it fits `pattern`.
fn captures<'a>(pattern: &str, topic: &'a str) -> Option<(Option<&'a str>, Option<&'a str>)> {
    {
        let pattern: Vec<&str> = pattern.split('/').collect();
        let parts: Vec<&'a str> = topic.split('/').collect();
        let (mut site, mut device) = (None, None);
        for (i, p) in pattern.iter().enumerate() {
            if *p == "#" {
                return Some((site, device));
            }
            let part = *parts.get(i)?;
            match *p {
                "+" => {}
                "{site}" => site = Some(part),
                "{device_id}" => device = Some(part),
                literal if literal == part => {}
                _ => return None,
            }
        }
        (parts.len() == pattern.len()).then_some((site, device))
    }
}

impl Mapping {
    /// Applies the mapping to a message whose topic fits it. `Ok(None)`:
    /// its conditions do not hold (another mapping may).
    pub fn apply(
        &self,
        topic: &str,
        payload: &[u8],
        received_at: DateTime<Utc>,
    ) -> Result<Option<Mapped>, MappingError> {
        let Some((site, device)) = self.match_topic(topic) else {
            return Ok(None);
        };
        let fail = |kind, detail: String| MappingError {
            mapping: self.name.clone(),
            detail,
            kind,
        };
        let json: Value = serde_json::from_slice(payload).map_err(|e| {
            fail(
                MappingErrorKind::InvalidJson,
                format!("the payload is not JSON: {e}"),
            )
        })?;
        for c in &self.when {
            let found = select(&json, &c.path);
            let holds = match &c.equals {
                None => !found.is_empty(),
                Some(want) => found
                    .iter()
                    .any(|(v, _)| text_of(v).as_deref() == Some(want)),
            };
            if !holds {
                return Ok(None);
            }
        }
        let device_id = match &self.device_path {
            Some(p) => select(&json, p)
                .first()
                .and_then(|(v, _)| text_of(v))
                .ok_or_else(|| {
                    fail(
                        MappingErrorKind::MissingField,
                        format!("no device id at `{p}`"),
                    )
                })?,
            None => device.unwrap_or_default().to_owned(),
        };
        let device_id = format!("{}{device_id}", self.device_prefix);
        if !usable_id(&device_id) {
            return Err(fail(
                MappingErrorKind::InvalidField,
                format!("device id `{device_id}` is empty or over {MAX_ID_LEN} bytes"),
            ));
        }
        let ts = match &self.time_path {
            None => received_at,
            Some(p) => match select(&json, p).first() {
                None if self.time_optional => received_at,
                None => {
                    return Err(fail(
                        MappingErrorKind::MissingField,
                        format!("no timestamp at `{p}`"),
                    ))
                }
                Some((v, _)) => self.parse_time(v, received_at).map_err(|e| {
                    fail(
                        MappingErrorKind::InvalidTimestamp,
                        format!("timestamp at `{p}`: {e}"),
                    )
                })?,
            },
        };
        let mut readings = Vec::new();
        for vm in &self.values {
            let found = select(&json, &vm.path);
            if found.is_empty() {
                if vm.optional {
                    continue;
                }
                return Err(fail(
                    MappingErrorKind::MissingField,
                    format!("no value at `{}` (for {})", vm.path, vm.metric),
                ));
            }
            let unit = match &vm.unit {
                Some(u) => Unit::parse(u).ok_or_else(|| {
                    fail(
                        MappingErrorKind::UnknownUnit,
                        format!("unit `{u}` is unknown"),
                    )
                })?,
                None => Unit::parse(vm.metric.unit()).expect("a metric's own unit parses"),
            };
            for (v, key) in found {
                let Some(x) = v.as_f64().filter(|x| x.is_finite()) else {
                    // An optional value in another shape (Tasmota's
                    // per-channel `"Power":[12,0]`) is skipped, not fatal.
                    if vm.optional {
                        continue;
                    }
                    return Err(fail(
                        MappingErrorKind::InvalidField,
                        format!("`{}` is {v}, not a number", vm.path),
                    ));
                };
                let device = vm.device.as_deref().map_or(device_id.clone(), |t| {
                    t.replace("{device_id}", &device_id)
                        .replace("{key}", key.as_deref().unwrap_or(""))
                });
                if !usable_id(&device) {
                    return Err(fail(
                        MappingErrorKind::InvalidField,
                        format!(
                            "device id `{device}` from `{}` is empty or over {MAX_ID_LEN} bytes",
                            vm.path
                        ),
                    ));
                }
                readings.push(Reading {
                    device_id: device,
                    metric: vm.metric,
                    ts,
                    value: unit.to_canonical(x * vm.scale + vm.offset),
                });
            }
        }
        Ok(Some(Mapped {
            mapping: self.name.clone(),
            site: site.map(str::to_owned).or_else(|| self.site.clone()),
            device_id,
            readings,
        }))
    }

    fn parse_time(&self, v: &Value, received_at: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
        let number = || {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        };
        let t = match self.time_format {
            TimeFormat::Rfc3339 => v
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc)),
            TimeFormat::EpochS | TimeFormat::Epoch => number()
                .filter(|n| n.is_finite() && n.abs() < 1e11)
                .and_then(|n| DateTime::from_timestamp_millis((n * 1000.0).round() as i64)),
            TimeFormat::EpochMs => number()
                .filter(|n| n.is_finite() && n.abs() < 1e14)
                .and_then(|n| DateTime::from_timestamp_millis(n.round() as i64)),
            TimeFormat::Local => {
                let tz: chrono_tz::Tz = self
                    .time_zone
                    .as_deref()
                    .unwrap_or("UTC")
                    .parse()
                    .unwrap_or(chrono_tz::UTC);
                v.as_str()
                    .and_then(|s| {
                        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                            .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
                            .ok()
                    })
                    // In the hour clocks go back, the reading nearest its
                    // arrival (the other is an hour away from it).
                    .and_then(|n| {
                        let r = tz.from_local_datetime(&n);
                        match (r.earliest(), r.latest()) {
                            (Some(a), Some(b)) => {
                                let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                                Some(if (a - received_at).abs() <= (b - received_at).abs() {
                                    a
                                } else {
                                    b
                                })
                            }
                            (a, b) => a.or(b).map(|t| t.with_timezone(&Utc)),
                        }
                    })
            }
        };
        let format = match self.time_format {
            TimeFormat::Rfc3339 => "an RFC 3339",
            TimeFormat::EpochS => "an epoch-seconds",
            TimeFormat::EpochMs => "an epoch-milliseconds",
            TimeFormat::Epoch => "an epoch (seconds with a fraction)",
            TimeFormat::Local => "a local (naive date-time)",
        };
        t.ok_or_else(|| format!("{v} is not {format} time"))
    }
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    /// Every element or value.
    All,
}

fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    // The whole payload (a bare number: `21.5`).
    if path == "$" {
        return Ok(steps);
    }
    for part in path.split('.') {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        match key {
            "" if rest.is_empty() => return Err(format!("`{path}`: an empty step")),
            "" => {}
            "*" => steps.push(Step::All),
            k => steps.push(Step::Key(k.to_owned())),
        }
        let mut rest = rest;
        while !rest.is_empty() {
            let end = rest
                .find(']')
                .ok_or_else(|| format!("`{path}`: unclosed ["))?;
            let inner = &rest[1..end];
            steps.push(match inner {
                "*" => Step::All,
                n => Step::Index(
                    n.parse()
                        .map_err(|_| format!("`{path}`: `[{n}]` is not an index"))?,
                ),
            });
            rest = &rest[end + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(format!("`{path}`: text after ]"));
            }
        }
    }
    Ok(steps)
}

/// The values a path reaches, each with the key or index its last `*`
/// matched. A path that does not parse reaches nothing.
pub fn select<'v>(json: &'v Value, path: &str) -> Vec<(&'v Value, Option<String>)> {
    let Ok(steps) = parse_path(path) else {
        return Vec::new();
    };
    let mut current: Vec<(&Value, Option<String>)> = vec![(json, None)];
    for step in &steps {
        let mut next = Vec::new();
        for (v, key) in current {
            match (step, v) {
                (Step::Key(k), Value::Object(m)) => {
                    if let Some(x) = m.get(k) {
                        next.push((x, key));
                    }
                }
                (Step::Index(i), Value::Array(a)) => {
                    if let Some(x) = a.get(*i) {
                        next.push((x, key));
                    }
                }
                (Step::All, Value::Array(a)) => {
                    next.extend(a.iter().enumerate().map(|(i, x)| (x, Some(i.to_string()))));
                }
                (Step::All, Value::Object(m)) => {
                    next.extend(m.iter().map(|(k, x)| (x, Some(k.clone()))));
                }
                _ => {}
            }
        }
        current = next;
    }
    current.into_iter().filter(|(v, _)| !v.is_null()).collect()
}

/// A device id that can be a primary key.
fn usable_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The profiles shipped with the project, as mapping files.
pub const PROFILES: &[(&str, &str)] = &[
    ("tasmota", include_str!("mapping/tasmota.toml")),
    ("shelly", include_str!("mapping/shelly.toml")),
    ("zigbee2mqtt", include_str!("mapping/zigbee2mqtt.toml")),
];

/// A mapping file: `[[mapping]]` tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    #[serde(rename = "mapping")]
    pub mappings: Vec<Mapping>,
}

/// A shipped profile's mappings, for a site (and its time zone, for
/// devices that send naive local times).
pub fn profile(name: &str, site: Option<&str>, time_zone: Option<&str>) -> Option<Vec<Mapping>> {
    let (_, text) = PROFILES.iter().find(|(n, _)| *n == name)?;
    let file: MappingFile = toml::from_str(text).expect("shipped profiles parse");
    Some(
        file.mappings
            .into_iter()
            .map(|mut m| {
                if m.site.is_none() {
                    m.site = site.map(str::to_owned);
                }
                if m.time_format == TimeFormat::Local {
                    m.time_zone = time_zone.map(str::to_owned).or(m.time_zone);
                }
                m
            })
            .collect(),
    )
}

pub mod homeassistant;
#[cfg(test)]
mod tests;
