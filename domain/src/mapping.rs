//! Declarative payload mappings: devices that speak their own JSON on their
//! own topics (Tasmota, Shelly, Zigbee2MQTT, a gateway's format) become
//! estatemon readings by configuration, not code. Pure: a mapping, a topic,
//! a payload and the time of receipt in, readings and reasons out.
//!
//! ```toml
//! [[ingest.mapping]]
//! name = "plant-room-gateway"
//! topic = "gw/{site}/+/{device_id}"      # {site}, {device_id}, {name}, {device_id+}, + and a final #
//! when = [{ path = "type", equals = "meter" }]
//! time_path = "ts"                         # default: the time of receipt
//! time_format = "epoch_ms"                 # rfc3339 | epoch_s | epoch_ms | epoch | local | auto
//!   [[ingest.mapping.value]]
//!   path = "data[*].kwh"                   # dots, [n], [*] and * fan out
//!   metric = "energy_kwh"
//!   unit = "Wh"                            # converted to the metric's unit
//! ```
//!
//! Every mapping whose topic and conditions fit a message applies (several
//! Home Assistant entities share one state topic; a plug reports energy and
//! temperature). A field that cannot be read is a problem of that field
//! (a dead letter naming the mapping and the path); the message's other
//! fields are stored. Values may be numbers, numeric strings
//! (`"007970903"`), booleans for contacts, or arrays of numbers (one per
//! channel: Tasmota's `"Power":[12,0]` gives `<device>-1`, `<device>-2`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::device::MAX_ID_LEN;
use crate::metric::Metric;
use crate::units::Unit;
use crate::Reading;

mod path;
mod set;
pub mod subject;
mod time;
pub mod topic;

pub use path::select;
use path::{fans_out, parse_path, text_of};
pub use set::{route, MappingSet, Routed};
pub use time::{plausible_since, TimeFormat};

/// One mapping, as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub name: String,
    /// MQTT topic pattern with `{site}`, `{device_id}` and `{name}`
    /// captures of one level, one `{device_id+}` capture of one or more
    /// levels, `+` for any one level, and a final `#`.
    pub topic: String,
    /// The device id from the payload instead of the topic (the topic's
    /// `{device_id}` when the payload has none).
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
    /// Topics under this mapping's filter that carry no readings (a
    /// bridge's own topics, commands to devices): counted, not dead letters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    /// Where the timestamp is; none: the time of receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_path: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
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

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
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
    /// The path must not exist (Zigbee2MQTT's battery devices are not
    /// meters).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMap {
    pub path: String,
    pub metric: Metric,
    /// The unit the device sends (default: the metric's own), as the
    /// ecosystems spell it (`kWh`, `Wh`, `L/h`, `m³/h`, `°C`, `mA`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Where the payload says its unit (`{"value": 12.5, "unit": "Wh"}`;
    /// Tasmota's `TempUnit`). Elements of a `[*]` fan-out pair with the
    /// units at the same positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_path: Option<String>,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub scale: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: f64,
    /// Rounded to this many decimals in the device's unit (Home
    /// Assistant's `| round(n)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
    /// Truncated to an integer (Home Assistant's `| int`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncate: bool,
    /// The device of this value: a template over `{device_id}`, `{key}`
    /// (the key or index a `*` matched, or the 1-based channel of an
    /// array) and the topic's captures. Default `{device_id}`, and
    /// `{device_id}-{key}` for a channel array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Keys a `*` in the path must not match (Tasmota's `ANALOG` and
    /// `ESP32` temperatures are the device's own, not the room's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
    /// A missing path is skipped rather than reported (Shelly's partial
    /// updates carry only what changed).
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
    /// Fields that could not be read; the readings of the others stand.
    pub problems: Vec<MappingError>,
    /// The device's clock is not set (a time before 2010): the readings
    /// are placed at their receipt, and this says what the device sent.
    pub clock_unsynced: Option<String>,
    /// No time in the message: the readings are placed at their receipt.
    pub time_from_receipt: bool,
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
        topic::check(&self.topic).map_err(|e| ("topic", e))?;
        let has_device = self
            .topic
            .split('/')
            .any(|l| matches!(l, "{device_id}" | "{device_id+}"));
        if !has_device && self.device_path.is_none() && self.device_prefix.is_empty() {
            return Err((
                "topic",
                format!(
                    "`{}` has no {{device_id}} and no device_path is set",
                    self.topic
                ),
            ));
        }
        for i in &self.ignore {
            topic::check(i).map_err(|e| ("ignore", e))?;
        }
        if let Some(a) = &self.availability {
            topic::check(&a.topic).map_err(|e| ("availability.topic", e))?;
        }
        if self.values.is_empty() {
            return Err(("value", "a mapping needs at least one [[value]]".into()));
        }
        for v in &self.values {
            if let Some(u) = &v.unit {
                Unit::parse_for(v.metric.dimension(), u).map_err(|e| {
                    (
                        "value.unit",
                        format!("{e} ({} is in {})", v.metric, v.metric.unit()),
                    )
                })?;
            }
            if !(v.scale.is_finite() && v.offset.is_finite()) {
                return Err(("value.scale", "scale and offset must be finite".into()));
            }
            if v.round.is_some_and(|r| r > 12) {
                return Err(("value.round", "at most 12 decimals".into()));
            }
            parse_path(&v.path).map_err(|e| ("value.path", e))?;
            if let Some(p) = &v.unit_path {
                parse_path(p).map_err(|e| ("value.unit_path", e))?;
            }
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
        if let Some(tz) = &self.time_zone {
            tz.parse::<chrono_tz::Tz>()
                .map_err(|_| ("time_zone", format!("`{tz}` is not an IANA time zone")))?;
        }
        Ok(())
    }

    /// The subscription filter: captures and `+` as `+`.
    pub fn filter(&self) -> String {
        topic::filter_of(&self.topic)
    }

    /// The availability topic's filter, if any.
    pub fn availability_filter(&self) -> Option<String> {
        self.availability
            .as_ref()
            .map(|a| topic::filter_of(&a.topic))
    }

    /// The topic's captures when it fits the pattern.
    pub fn match_topic(&self, t: &str) -> Option<topic::Captures> {
        topic::captures(&self.topic, t)
    }

    /// Whether the topic is one this mapping knows carries no readings.
    pub fn ignores(&self, t: &str) -> bool {
        self.ignore.iter().any(|p| topic::captures(p, t).is_some())
    }

    /// An availability message: (device, site, online). `None`: not this
    /// mapping's availability topic.
    pub fn apply_availability(
        &self,
        t: &str,
        payload: &[u8],
    ) -> Option<Result<Said, MappingError>> {
        let a = self.availability.as_ref()?;
        let caps = topic::captures(&a.topic, t)?;
        let site = caps.get("site").map(str::to_owned).or(self.site.clone());
        let device = format!(
            "{}{}",
            self.device_prefix,
            caps.get("device_id").unwrap_or_default()
        );
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
            (_, Ok(Value::Bool(b))) => Some(b.to_string()),
            _ => Some(text.to_owned()),
        };
        let fail = |detail: String| MappingError {
            mapping: self.name.clone(),
            detail,
            kind: MappingErrorKind::InvalidField,
        };
        Some(match state {
            Some(s) if a.online.contains(&s) => Ok((device, site, true)),
            Some(s) if a.offline.contains(&s) => Ok((device, site, false)),
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

/// A value as a number: a JSON number, a numeric string, or a boolean for
/// a contact. `Err` says what it is instead.
fn number_of(v: &Value, metric: Metric) -> Result<f64, String> {
    let x = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        Value::Bool(b) if metric == Metric::ContactClosed => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    };
    match x {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(format!("{v} is not a number")),
    }
}

impl Mapping {
    /// Applies the mapping to a message whose topic fits it. `Ok(None)`:
    /// its conditions do not hold (another mapping may). `Err`: the
    /// message as a whole cannot be read (not JSON, no device, no time).
    pub fn apply(
        &self,
        t: &str,
        payload: &[u8],
        received_at: DateTime<Utc>,
    ) -> Result<Option<Mapped>, MappingError> {
        let Some(caps) = self.match_topic(t) else {
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
                None if c.missing => found.is_empty(),
                None => !found.is_empty(),
                Some(want) => found
                    .iter()
                    .any(|(v, _)| text_of(v).as_deref() == Some(want)),
            };
            if !holds {
                return Ok(None);
            }
        }
        let from_topic = caps.get("device_id");
        let device_id = match &self.device_path {
            Some(p) => select(&json, p)
                .first()
                .and_then(|(v, _)| text_of(v))
                .or_else(|| from_topic.map(str::to_owned))
                .ok_or_else(|| {
                    fail(
                        MappingErrorKind::MissingField,
                        format!("no device id at `{p}` nor in the topic"),
                    )
                })?,
            None => from_topic.unwrap_or_default().to_owned(),
        };
        let device_id = format!("{}{device_id}", self.device_prefix);
        if !usable_id(&device_id) {
            return Err(fail(
                MappingErrorKind::InvalidField,
                format!("device id `{device_id}` is empty or over {MAX_ID_LEN} bytes"),
            ));
        }
        let mut clock_unsynced = None;
        let mut time_from_receipt = false;
        let ts = match &self.time_path {
            None => {
                time_from_receipt = true;
                received_at
            }
            Some(p) => match select(&json, p).first() {
                None if self.time_optional => {
                    time_from_receipt = true;
                    received_at
                }
                None => {
                    return Err(fail(
                        MappingErrorKind::MissingField,
                        format!("no timestamp at `{p}`"),
                    ))
                }
                Some((v, _)) => {
                    let t = self
                        .time_format
                        .parse(v, self.time_zone.as_deref(), received_at)
                        .map_err(|e| {
                            fail(
                                MappingErrorKind::InvalidTimestamp,
                                format!("timestamp at `{p}`: {e}"),
                            )
                        })?;
                    if t < plausible_since() {
                        clock_unsynced = Some(format!(
                            "`{p}` = {v}: the device's clock is not set; its readings are placed at their receipt"
                        ));
                        received_at
                    } else {
                        t
                    }
                }
            },
        };
        let mut readings = Vec::new();
        let mut problems = Vec::new();
        for vm in &self.values {
            let mut found = select(&json, &vm.path);
            if !vm.except.is_empty() {
                found.retain(|(_, k)| k.as_ref().is_none_or(|k| !vm.except.contains(k)));
            }
            if found.is_empty() {
                if !vm.optional {
                    problems.push(fail(
                        MappingErrorKind::MissingField,
                        format!("no value at `{}` (for {})", vm.path, vm.metric),
                    ));
                }
                continue;
            }
            let fanned: usize = found
                .iter()
                .map(|(v, _)| match v {
                    Value::Array(a) if !fans_out(&vm.path) => a.len(),
                    _ => 1,
                })
                .sum();
            if fanned > MAX_FAN_OUT {
                problems.push(fail(
                    MappingErrorKind::InvalidField,
                    format!(
                        "`{}` gives {fanned} values; at most {MAX_FAN_OUT} a message are read",
                        vm.path
                    ),
                ));
                continue;
            }
            let units = match self.units_of(vm, &json, found.len()) {
                Ok(u) => u,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            for (i, (v, key)) in found.into_iter().enumerate() {
                let unit = units[i.min(units.len() - 1)];
                // A channel array where one value was expected.
                let channels: Vec<(&Value, Option<String>)> = match v {
                    Value::Array(items) if !fans_out(&vm.path) => items
                        .iter()
                        .enumerate()
                        .map(|(n, x)| (x, Some((n + 1).to_string())))
                        .collect(),
                    _ => vec![(v, key)],
                };
                let array = matches!(v, Value::Array(_)) && !fans_out(&vm.path);
                for (x, key) in channels {
                    if x.is_null() {
                        continue;
                    }
                    let x = match number_of(x, vm.metric) {
                        Ok(x) => x,
                        Err(e) => {
                            problems.push(fail(
                                MappingErrorKind::InvalidField,
                                format!("`{}`: {e} (for {})", vm.path, vm.metric),
                            ));
                            continue;
                        }
                    };
                    let template = match (&vm.device, array) {
                        (Some(t), _) => t.as_str(),
                        (None, true) => "{device_id}-{key}",
                        (None, false) => "{device_id}",
                    };
                    let device = caps.fill(
                        &template
                            .replace("{device_id}", &device_id)
                            .replace("{key}", key.as_deref().unwrap_or("")),
                    );
                    if !usable_id(&device) {
                        problems.push(fail(
                            MappingErrorKind::InvalidField,
                            format!(
                                "device id `{device}` from `{}` is empty or over {MAX_ID_LEN} bytes",
                                vm.path
                            ),
                        ));
                        continue;
                    }
                    let mut x = x * vm.scale + vm.offset;
                    if let Some(d) = vm.round {
                        let f = 10f64.powi(d as i32);
                        x = (x * f).round() / f;
                    }
                    if vm.truncate {
                        x = x.trunc();
                    }
                    let value = unit.to_canonical(x);
                    if !value.is_finite() {
                        problems.push(fail(
                            MappingErrorKind::InvalidField,
                            format!("`{}`: {x} {} is out of range", vm.path, unit.symbol),
                        ));
                        continue;
                    }
                    readings.push(Reading {
                        device_id: device,
                        metric: vm.metric,
                        ts,
                        value,
                    });
                }
            }
        }
        Ok(Some(Mapped {
            mapping: self.name.clone(),
            site: caps
                .get("site")
                .map(str::to_owned)
                .or_else(|| self.site.clone()),
            device_id,
            readings,
            problems,
            clock_unsynced,
            time_from_receipt,
        }))
    }

    /// The unit of each of `n` values found for `vm` (one for all, or one
    /// per position from `unit_path`).
    fn units_of(&self, vm: &ValueMap, json: &Value, n: usize) -> Result<Vec<Unit>, MappingError> {
        let fail = |kind, detail: String| MappingError {
            mapping: self.name.clone(),
            detail,
            kind,
        };
        let parse = |u: &str| {
            Unit::parse_for(vm.metric.dimension(), u)
                .map(|unit| {
                    // A power factor in percent (Home Assistant allows it)
                    // is stored as the ratio.
                    if vm.metric == Metric::PowerFactor && unit.symbol == "%" {
                        Unit {
                            scale: 0.01,
                            ..unit
                        }
                    } else {
                        unit
                    }
                })
                .map_err(|e| {
                    fail(
                        MappingErrorKind::UnknownUnit,
                        format!("`{}`: {e} (for {})", vm.path, vm.metric),
                    )
                })
        };
        if let Some(p) = &vm.unit_path {
            let said: Vec<String> = select(json, p)
                .into_iter()
                .filter_map(|(v, _)| text_of(v))
                .collect();
            if said.is_empty() && vm.unit.is_none() {
                return Err(fail(
                    MappingErrorKind::MissingField,
                    format!("no unit at `{p}` (for `{}`)", vm.path),
                ));
            }
            if said.len() == n || said.len() == 1 {
                return said.iter().map(|u| parse(u)).collect();
            }
            if !said.is_empty() {
                return Err(fail(
                    MappingErrorKind::InvalidField,
                    format!(
                        "{} units at `{p}` for {n} values at `{}`",
                        said.len(),
                        vm.path
                    ),
                ));
            }
        }
        Ok(vec![match &vm.unit {
            Some(u) => parse(u)?,
            None => Unit::parse(vm.metric.unit()).expect("a metric's own unit parses"),
        }])
    }
}

/// The most readings one value of a mapping may give from one message
/// (channels of an array, keys a `*` matches): a hostile payload must not
/// register thousands of devices.
pub const MAX_FAN_OUT: usize = 256;

/// A device id that can be a primary key.
fn usable_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN
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

/// A shipped profile's mappings, as `[[ingest.profile]]` enables them:
/// for a site, its time zone (devices that send naive local times), and
/// the topic layout the devices were set to (Tasmota's FullTopic, a
/// Shelly's topic_prefix, Zigbee2MQTT's base_topic). `None`: no such
/// profile.
pub fn profile(p: &crate::config::ProfileConfig) -> Option<Vec<Mapping>> {
    let (_, text) = PROFILES.iter().find(|(n, _)| *n == p.name)?;
    let file: MappingFile = toml::from_str(text).expect("shipped profiles parse");
    let relayout = |t: &str| -> String {
        match p.name.as_str() {
            "tasmota" => match (&p.full_topic, t.split_once("/{device_id}/")) {
                (Some(full), Some((prefix, rest))) => {
                    let mut device = "{device_id}";
                    let mut layout = full.trim_end_matches('/').to_owned();
                    for token in ["%topic%", "%hostname%", "%id%"] {
                        if layout.contains(token) {
                            layout = layout.replace(token, device);
                            device = "+";
                        }
                    }
                    format!("{}/{rest}", layout.replace("%prefix%", prefix))
                }
                _ => t.to_owned(),
            },
            "shelly" => match (&p.topic_prefix, t.strip_prefix("{device_id}")) {
                (Some(prefix), Some(rest)) => format!("{}{rest}", prefix.trim_end_matches('/')),
                _ => t.to_owned(),
            },
            "zigbee2mqtt" => match (&p.base_topic, t.strip_prefix("zigbee2mqtt")) {
                (Some(base), Some(rest)) => format!("{}{rest}", base.trim_end_matches('/')),
                _ => t.to_owned(),
            },
            _ => t.to_owned(),
        }
    };
    Some(
        file.mappings
            .into_iter()
            .map(|mut m| {
                if m.site.is_none() {
                    m.site.clone_from(&p.site);
                }
                if matches!(m.time_format, TimeFormat::Local | TimeFormat::Auto) {
                    m.time_zone = p.time_zone.clone().or(m.time_zone);
                }
                m.topic = relayout(&m.topic);
                m.ignore = m.ignore.iter().map(|t| relayout(t)).collect();
                if let Some(a) = &mut m.availability {
                    a.topic = relayout(&a.topic);
                }
                m
            })
            .collect(),
    )
}

/// A shipped profile's mappings with its default layout.
pub fn default_profile(
    name: &str,
    site: Option<&str>,
    time_zone: Option<&str>,
) -> Option<Vec<Mapping>> {
    profile(&crate::config::ProfileConfig {
        name: name.to_owned(),
        site: site.map(str::to_owned),
        time_zone: time_zone.map(str::to_owned),
        ..Default::default()
    })
}

pub mod homeassistant;
#[cfg(test)]
mod tests;
