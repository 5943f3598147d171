//! A Sparkplug B host application's state, pure: topics and payloads in,
//! readings, rejections, availability and rebirth requests out.
//!
//! - `spBv1.0/{group}/NBIRTH/{node}` and `…/DBIRTH/{node}/{device}` build
//!   the alias → (name, data type, unit) map of the node and each device,
//!   and record the birth's `bdSeq`; births' values are readings too.
//! - `NDATA` / `DDATA` resolve metrics sent by alias only. `seq` (0–255)
//!   is tracked per node across every message that carries it; a gap
//!   waits [`SparkplugConfig::reorder_wait_ms`] for the missing numbers and
//!   then asks the node to rebirth. A DATA before its BIRTH, or an alias
//!   the birth did not define, asks at once (at most once per wait).
//! - `NDEATH` whose `bdSeq` matches the birth (or when no birth was seen)
//!   marks the node and its devices offline; `DDEATH` marks the device.
//!   An `NDEATH` from an earlier session (another `bdSeq`) is rejected with
//!   that reason, so a late Last Will cannot mark a live node offline.
//! - A death is dated by its payload's `timestamp` when that is plausible:
//!   not after it was received, and for a `DDEATH` not before the device's
//!   (else the node's) birth. An `NDEATH`'s timestamp counts only when it
//!   is later than the node's birth: the one in a Last Will was written at
//!   CONNECT, before the birth, and may be days old when the broker sends
//!   it. Otherwise the death is dated when it was received, and says so
//!   ([`Availability::at_receipt`]).
//! - Device ids are `group/node/device`, a node's own metrics go to
//!   `group/node`. A metric becomes an estatemon metric by
//!   `[[ingest.sparkplug.metric]]` (exact name), or when its last name
//!   segment is one (`Meter/energy_kwh`, `power_w`), with the unit from
//!   the birth's `engUnit` (or `unit`) property where present.
//!   Control metrics (`Node Control/…`, `Device Control/…`, `Properties/…`,
//!   `bdSeq`) are not readings.
//! - Historical metrics (`is_historical`) are stored at their timestamps,
//!   as every metric is (its own timestamp, else the payload's).

pub mod proto;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::device::MAX_ID_LEN;
use crate::metric::{resolve_json_name, resolve_senml, Metric, Resolved};
use crate::units::Unit;
use crate::Reading;

pub const NAMESPACE: &str = "spBv1.0";

/// `[ingest.sparkplug]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SparkplugConfig {
    /// Subscribe to `spBv1.0/#` and act as a host application.
    pub enabled: bool,
    /// The site of every Sparkplug device; without it, the group id is
    /// taken as the site id.
    pub site: Option<String>,
    /// Publish `spBv1.0/STATE/{id}` (retained, with a Last Will) as the
    /// primary host application, so edge nodes that honour it store and
    /// forward while estatemon is away.
    pub primary_host_id: Option<String>,
    /// How long a sequence gap may wait for the missing messages before
    /// the node is asked to rebirth; also the least time between two
    /// rebirth requests to one node.
    pub reorder_wait_ms: u64,
    /// Metric names mapped to estatemon metrics.
    #[serde(rename = "metric", skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricMapping>,
}

impl Default for SparkplugConfig {
    fn default() -> Self {
        SparkplugConfig {
            enabled: false,
            site: None,
            primary_host_id: None,
            reorder_wait_ms: 2000,
            metrics: Vec::new(),
        }
    }
}

/// `[[ingest.sparkplug.metric]]`: a Sparkplug metric name and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricMapping {
    /// The metric's full Sparkplug name (`Meter/Total Energy`).
    pub name: String,
    /// The estatemon metric (`energy_kwh`).
    pub metric: Metric,
    /// The unit values arrive in; else the birth's `engUnit` property, else
    /// the metric's own unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default = "one")]
    pub scale: f64,
}

fn one() -> f64 {
    1.0
}

/// The message types of the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NBirth,
    NDeath,
    DBirth,
    DDeath,
    NData,
    DData,
    NCmd,
    DCmd,
}

/// A parsed Sparkplug topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic<'a> {
    Edge {
        group: &'a str,
        kind: Kind,
        node: &'a str,
        device: Option<&'a str>,
    },
    /// `spBv1.0/STATE/{host}`: a host application's own state.
    State(&'a str),
}

/// Parses `spBv1.0/{group}/{TYPE}/{node}[/{device}]` and
/// `spBv1.0/STATE/{host}`; `None` for anything else.
pub fn parse_topic(topic: &str) -> Option<Topic<'_>> {
    let rest = topic.strip_prefix(NAMESPACE)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() == 2 && parts[0] == "STATE" {
        return Some(Topic::State(parts[1]));
    }
    let kind = match *parts.get(1)? {
        "NBIRTH" => Kind::NBirth,
        "NDEATH" => Kind::NDeath,
        "DBIRTH" => Kind::DBirth,
        "DDEATH" => Kind::DDeath,
        "NDATA" => Kind::NData,
        "DDATA" => Kind::DData,
        "NCMD" => Kind::NCmd,
        "DCMD" => Kind::DCmd,
        _ => return None,
    };
    let device_level = matches!(kind, Kind::DBirth | Kind::DDeath | Kind::DData | Kind::DCmd);
    let want = if device_level { 4 } else { 3 };
    if parts.len() != want || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(Topic::Edge {
        group: parts[0],
        kind,
        node: parts[2],
        device: device_level.then(|| parts[3]),
    })
}

/// Why a message, or part of it, was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The payload is not a Sparkplug B protobuf.
    Malformed(String),
    /// Out of the protocol's order: DATA before BIRTH, an unknown alias, a
    /// death from an earlier session.
    OutOfState(String),
    /// Metrics that name no estatemon metric (listed once per birth).
    Unmapped(String),
    /// A value that is not a number, a unit that cannot be converted, a
    /// template.
    Value(String),
}

/// A node or device going offline (a death) or coming back (a birth).
#[derive(Debug, Clone, PartialEq)]
pub struct Availability {
    /// `group/node` or `group/node/device`.
    pub id: String,
    pub online: bool,
    /// When it happened: the payload's own timestamp when it is plausible,
    /// else the time the message was received.
    pub at: DateTime<Utc>,
    /// `at` is the receive time: the payload had no timestamp, or one that
    /// could not be believed (after receipt, before the birth, a Last
    /// Will's).
    pub at_receipt: bool,
}

/// What one message did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    pub readings: Vec<Reading>,
    pub problems: Vec<Problem>,
    /// Nodes and devices that went offline or came back, in order.
    pub availability: Vec<Availability>,
    /// The site the message's devices belong to.
    pub site: Option<String>,
    /// Ask the node to rebirth now: `(group, node)`.
    pub rebirth: Option<(String, String)>,
    /// The message is ours or another host's (STATE, commands): nothing to
    /// store, nothing wrong.
    pub ignored: bool,
}

#[derive(Debug, Clone)]
struct Def {
    name: String,
    datatype: u32,
    unit: Option<String>,
}

#[derive(Debug, Default)]
struct Node {
    born: bool,
    bdseq: Option<u64>,
    /// The last `seq` seen.
    seq: Option<u8>,
    /// The NBIRTH's payload timestamp (ms).
    birth_ms: Option<i64>,
    aliases: HashMap<u64, Def>,
    devices: HashMap<String, HashMap<u64, Def>>,
    /// Each DBIRTH's payload timestamp (ms).
    device_birth_ms: HashMap<String, i64>,
    /// Sequence numbers skipped over, and since when (ms).
    missing: Vec<u8>,
    gap_since_ms: Option<i64>,
    last_rebirth_ms: Option<i64>,
}

/// The host application's view of every edge node.
#[derive(Debug, Default)]
pub struct Host {
    config: SparkplugConfig,
    nodes: HashMap<(String, String), Node>,
}

impl Host {
    pub fn new(config: SparkplugConfig) -> Host {
        Host {
            config,
            nodes: HashMap::new(),
        }
    }

    /// Handles one message; `None` when the topic is not Sparkplug B's.
    /// `now_ms` is the host's clock (for the reorder wait).
    pub fn handle(
        &mut self,
        topic: &str,
        payload: &[u8],
        received_at: DateTime<Utc>,
        now_ms: i64,
    ) -> Option<Outcome> {
        let parsed = parse_topic(topic)?;
        let Topic::Edge {
            group,
            kind,
            node,
            device,
        } = parsed
        else {
            return Some(Outcome {
                ignored: true,
                ..Outcome::default()
            });
        };
        if matches!(kind, Kind::NCmd | Kind::DCmd) {
            return Some(Outcome {
                ignored: true,
                ..Outcome::default()
            });
        }
        let mut out = Outcome {
            site: Some(self.config.site.clone().unwrap_or_else(|| group.to_owned())),
            ..Outcome::default()
        };
        let node_id = format!("{group}/{node}");
        let device_id = device.map(|d| format!("{node_id}/{d}"));
        let id = device_id.clone().unwrap_or_else(|| node_id.clone());
        if id.len() > MAX_ID_LEN {
            out.problems.push(Problem::Malformed(format!(
                "device id `{id}` is over {MAX_ID_LEN} bytes"
            )));
            return Some(out);
        }
        let payload = match proto::Payload::decode(payload) {
            Ok(p) => p,
            Err(e) => {
                out.problems.push(Problem::Malformed(format!(
                    "not a Sparkplug B payload (protobuf: {e})"
                )));
                return Some(out);
            }
        };
        let wait = self.config.reorder_wait_ms as i64;
        let key = (group.to_owned(), node.to_owned());
        let state = self.nodes.entry(key.clone()).or_default();
        let mut want_rebirth = false;

        match kind {
            Kind::NBirth => {
                *state = Node {
                    born: true,
                    bdseq: bdseq(&payload),
                    seq: payload.seq.map(|s| s as u8),
                    birth_ms: payload_ms(&payload),
                    last_rebirth_ms: state.last_rebirth_ms,
                    ..Node::default()
                };
                state.aliases = definitions(&payload);
                out.availability
                    .push(dated(&node_id, true, &payload, None, received_at));
            }
            Kind::NDeath => {
                let death = bdseq(&payload);
                match (state.bdseq, death) {
                    (Some(b), Some(d)) if state.born && b != d => {
                        out.problems.push(Problem::OutOfState(format!(
                            "NDEATH with bdSeq {d} does not match the birth's bdSeq {b}: the \
                             Last Will of an earlier session, ignored"
                        )));
                    }
                    _ => {
                        // Only a timestamp later than the birth is the
                        // death's own: a Last Will's was written at CONNECT.
                        let after = match (state.born, state.birth_ms) {
                            (true, Some(b)) => Some(b.saturating_add(1)),
                            _ => None,
                        };
                        let mut a = dated(&node_id, false, &payload, after, received_at);
                        if after.is_none() {
                            a.at = received_at;
                            a.at_receipt = true;
                        }
                        state.born = false;
                        state.seq = None;
                        state.missing.clear();
                        state.gap_since_ms = None;
                        out.availability.push(a);
                    }
                }
                return Some(out);
            }
            Kind::DBirth | Kind::DDeath | Kind::NData | Kind::DData => {
                if !state.born {
                    out.problems.push(Problem::OutOfState(format!(
                        "{kind:?} from {node_id} before its NBIRTH: the host cannot know its \
                         aliases or sequence; a rebirth is requested"
                    )));
                    want_rebirth = true;
                } else {
                    track_seq(state, payload.seq, now_ms);
                }
            }
            Kind::NCmd | Kind::DCmd => unreachable!("returned above"),
        }
        if want_rebirth {
            out.rebirth = rebirth_due(state, now_ms, wait).then(|| key.clone());
            return Some(out);
        }
        let device = device.map(str::to_owned);
        match kind {
            Kind::DBirth => {
                let d = device.clone().expect("device-level topic");
                state.devices.insert(d.clone(), definitions(&payload));
                match payload_ms(&payload) {
                    Some(ms) => state.device_birth_ms.insert(d, ms),
                    None => state.device_birth_ms.remove(&d),
                };
                out.availability
                    .push(dated(&id, true, &payload, None, received_at));
            }
            Kind::DDeath => {
                let d = device.as_deref().unwrap_or("");
                let born = state.device_birth_ms.get(d).copied().or(state.birth_ms);
                out.availability
                    .push(dated(&id, false, &payload, born, received_at));
                return Some(out);
            }
            Kind::DData if !state.devices.contains_key(device.as_deref().unwrap_or("")) => {
                out.problems.push(Problem::OutOfState(format!(
                    "DDATA from {id} before its DBIRTH: a rebirth is requested"
                )));
                out.rebirth = rebirth_due(state, now_ms, wait).then(|| key.clone());
                return Some(out);
            }
            _ => {}
        }
        let birth = matches!(kind, Kind::NBirth | Kind::DBirth);
        let no_aliases = HashMap::new();
        let aliases = match &device {
            Some(d) => state.devices.get(d).unwrap_or(&no_aliases),
            None => &state.aliases,
        };
        let mut unmapped = Vec::new();
        let mut unknown_alias = Vec::new();
        for m in &payload.metrics {
            // By alias (DATA): the birth's definition, borrowed.
            let def = match (&m.name, m.alias) {
                (Some(name), _) => {
                    let known = m.alias.and_then(|a| aliases.get(&a));
                    std::borrow::Cow::Owned(Def {
                        name: name.clone(),
                        datatype: m.datatype.or(known.map(|k| k.datatype)).unwrap_or(0),
                        unit: unit_property(m).or_else(|| known.and_then(|k| k.unit.clone())),
                    })
                }
                (None, Some(a)) => match aliases.get(&a) {
                    Some(d) => std::borrow::Cow::Borrowed(d),
                    None => {
                        unknown_alias.push(a);
                        continue;
                    }
                },
                (None, None) => {
                    out.problems.push(Problem::Malformed(
                        "a metric with neither name nor alias".into(),
                    ));
                    continue;
                }
            };
            if is_control(&def.name) {
                continue;
            }
            let Some(resolved) = resolve(&self.config.metrics, &def) else {
                if birth {
                    unmapped.push(def.name.clone());
                }
                continue;
            };
            let value = match m.number_as(def.datatype) {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e) => {
                    out.problems
                        .push(Problem::Value(format!("metric `{}`: {e}", def.name)));
                    continue;
                }
            };
            let (resolved, scale) = match resolved {
                Ok(r) => r,
                Err(e) => {
                    out.problems
                        .push(Problem::Value(format!("metric `{}`: {e}", def.name)));
                    continue;
                }
            };
            let ms = m.timestamp.or(payload.timestamp);
            let ts = ms
                .and_then(|t| i64::try_from(t).ok())
                .and_then(DateTime::<Utc>::from_timestamp_millis)
                .unwrap_or(received_at);
            out.readings.push(Reading {
                device_id: id.clone(),
                metric: resolved.metric,
                ts,
                value: resolved.normalise(value * scale),
            });
        }
        if !unknown_alias.is_empty() {
            out.problems.push(Problem::OutOfState(format!(
                "alias(es) {} not defined by {}'s birth: a rebirth is requested",
                unknown_alias
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                id
            )));
            out.rebirth = rebirth_due(state, now_ms, wait).then(|| key.clone());
        }
        if !unmapped.is_empty() {
            out.problems.push(Problem::Unmapped(format!(
                "{}'s birth has metric(s) with no estatemon metric, not stored: {} (name them in \
                 [[ingest.sparkplug.metric]], or end their names in a metric such as energy_kwh)",
                id,
                unmapped.join(", ")
            )));
        }
        Some(out)
    }

    /// Nodes whose sequence gap has waited out the reorder window: ask each
    /// to rebirth. Clears the gap (the rebirth restarts the sequence).
    pub fn due_rebirths(&mut self, now_ms: i64) -> Vec<(String, String)> {
        let wait = self.config.reorder_wait_ms as i64;
        let mut due = Vec::new();
        for (key, node) in self.nodes.iter_mut() {
            if let Some(since) = node.gap_since_ms {
                if now_ms - since >= wait && !node.missing.is_empty() {
                    node.missing.clear();
                    node.gap_since_ms = None;
                    if rebirth_due(node, now_ms, 0) {
                        due.push(key.clone());
                    }
                }
            }
        }
        due.sort();
        due
    }
}

/// The estatemon metric of a Sparkplug metric, and the scale its values
/// take first; `None` when it names none.
#[allow(clippy::type_complexity)]
fn resolve(metrics: &[MetricMapping], def: &Def) -> Option<Result<(Resolved, f64), String>> {
    if let Some(m) = metrics.iter().find(|m| m.name == def.name) {
        let unit = m.unit.as_deref().or(def.unit.as_deref());
        return Some(match unit {
            None => Ok((
                Resolved {
                    metric: m.metric,
                    unit: None,
                },
                m.scale,
            )),
            Some(u) => match Unit::parse(u) {
                Some(unit) if unit.dimension == m.metric.dimension() => Ok((
                    Resolved {
                        metric: m.metric,
                        unit: Some(unit),
                    },
                    m.scale,
                )),
                Some(_) => Err(format!(
                    "unit `{u}` cannot be converted to {}",
                    m.metric.unit()
                )),
                None => Err(format!("unknown unit `{u}`")),
            },
        });
    }
    let leaf = def.name.rsplit('/').next().unwrap_or(&def.name);
    let resolved = match &def.unit {
        Some(u) => resolve_senml(leaf, Some(u)),
        None => resolve_json_name(leaf),
    };
    match resolved {
        Ok(r) => Some(Ok((r, 1.0))),
        Err(crate::metric::MetricError::UnknownMetric(_)) => None,
        Err(e) => Some(Err(e.to_string())),
    }
}

/// Control and information metrics: not readings.
fn is_control(name: &str) -> bool {
    name == "bdSeq"
        || name.starts_with("Node Control/")
        || name.starts_with("Device Control/")
        || name.starts_with("Properties/")
        || name.starts_with("Node Info/")
}

/// The payload's timestamp in ms, when it has one that fits a date.
fn payload_ms(p: &proto::Payload) -> Option<i64> {
    p.timestamp
        .and_then(|t| i64::try_from(t).ok())
        .filter(|ms| DateTime::<Utc>::from_timestamp_millis(*ms).is_some())
}

/// A birth or death dated by its payload's timestamp when that is no
/// later than its receipt and no earlier than `not_before` (ms); else by
/// its receipt.
fn dated(
    id: &str,
    online: bool,
    p: &proto::Payload,
    not_before: Option<i64>,
    received_at: DateTime<Utc>,
) -> Availability {
    let own = payload_ms(p)
        .filter(|ms| not_before.is_none_or(|b| *ms >= b))
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .filter(|t| *t <= received_at);
    Availability {
        id: id.to_owned(),
        online,
        at: own.unwrap_or(received_at),
        at_receipt: own.is_none(),
    }
}

fn bdseq(p: &proto::Payload) -> Option<u64> {
    p.metrics
        .iter()
        .find(|m| m.name.as_deref() == Some("bdSeq"))
        .and_then(|m| m.number().ok().flatten())
        .map(|v| v as u64)
}

fn unit_property(m: &proto::Metric) -> Option<String> {
    m.property("engUnit")
        .or_else(|| m.property("unit"))
        .map(str::to_owned)
}

fn definitions(p: &proto::Payload) -> HashMap<u64, Def> {
    p.metrics
        .iter()
        .filter_map(|m| {
            Some((
                m.alias?,
                Def {
                    name: m.name.clone()?,
                    datatype: m.datatype.unwrap_or(0),
                    unit: unit_property(m),
                },
            ))
        })
        .collect()
}

/// Follows the node's `seq`: a message that fills a gap closes it; one
/// that skips numbers opens (or widens) it.
fn track_seq(node: &mut Node, seq: Option<u64>, now_ms: i64) {
    let Some(seq) = seq.map(|s| (s % 256) as u8) else {
        return;
    };
    if let Some(i) = node.missing.iter().position(|m| *m == seq) {
        // A late message: the gap it left is filled.
        node.missing.remove(i);
        if node.missing.is_empty() {
            node.gap_since_ms = None;
        }
        return;
    }
    if let Some(last) = node.seq {
        let expected = last.wrapping_add(1);
        let skipped = seq.wrapping_sub(expected);
        // A skip of more than half the ring is a duplicate or a very late
        // message, not a gap.
        if skipped != 0 && skipped < 128 {
            for k in 0..skipped {
                node.missing.push(expected.wrapping_add(k));
            }
            node.gap_since_ms.get_or_insert(now_ms);
        }
        if skipped >= 128 {
            return;
        }
    }
    node.seq = Some(seq);
}

/// Whether a rebirth may be asked now (at most one per `wait`).
fn rebirth_due(node: &mut Node, now_ms: i64, wait: i64) -> bool {
    if node.last_rebirth_ms.is_some_and(|t| now_ms - t < wait) {
        return false;
    }
    node.last_rebirth_ms = Some(now_ms);
    true
}

/// The NCMD that asks a node to rebirth: `Node Control/Rebirth = true`.
pub fn rebirth_command(now_ms: i64) -> Vec<u8> {
    let payload = proto::Payload {
        timestamp: Some(now_ms.max(0) as u64),
        metrics: vec![proto::Metric {
            name: Some("Node Control/Rebirth".into()),
            datatype: Some(proto::datatype::BOOLEAN),
            value: Some(proto::Value::BooleanValue(true)),
            ..Default::default()
        }],
        ..Default::default()
    };
    payload.encode_to_vec()
}

/// The topic of a node's commands.
pub fn ncmd_topic(group: &str, node: &str) -> String {
    format!("{NAMESPACE}/{group}/NCMD/{node}")
}

/// The primary host's STATE topic and its payload (Sparkplug 3.0: JSON
/// `{"online": bool, "timestamp": ms}`, retained, QoS 1).
pub fn state_message(host_id: &str, online: bool, timestamp_ms: i64) -> (String, Vec<u8>) {
    (
        format!("{NAMESPACE}/STATE/{host_id}"),
        format!("{{\"online\":{online},\"timestamp\":{timestamp_ms}}}").into_bytes(),
    )
}
