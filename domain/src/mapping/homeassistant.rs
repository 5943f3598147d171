//! Home Assistant MQTT discovery: a retained config message on
//! `homeassistant/<component>/[<node_id>/]<object_id>/config` becomes a
//! [`Mapping`] of its state topic, so devices that announce themselves
//! (ESPHome, Tasmota, Zigbee2MQTT, most bridges) need no configuration.
//!
//! Read from the config (full keys or Home Assistant's abbreviations, and
//! the `~` base topic): `state_topic`, `value_template` (`{{ value }}`,
//! `{{ value_json.a.b }}`, `{{ value_json['a'] }}`, with an optional
//! `| float` / `| int` / `| round(n)`; anything else is reported, never
//! guessed), `unit_of_measurement` (converted to the metric's unit),
//! `device_class` (which metric), `state_class` (`total_increasing` must
//! be a register), the device's first identifier (its estatemon id), and
//! `availability_topic` with its payloads. Components other than `sensor`
//! are not readings and are ignored (and counted).
//!
//! Device-based discovery (`homeassistant/device/<object_id>/config`, one
//! message with the device and its components under `cmps`, shared
//! options such as `state_topic` at the top) gives one mapping per sensor
//! component. Several entities on one state topic (Tasmota, ESPHome and
//! Zigbee2MQTT announce energy, power, voltage and current as templates
//! over one JSON) are each their own mapping, and each reads its own
//! field: one entity's missing path is that entity's dead letter, not its
//! siblings'.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Availability, Mapping, TimeFormat, ValueMap};
use crate::metric::{Metric, MetricKind};
use crate::units::Unit;

/// `[ingest.homeassistant]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantConfig {
    /// Subscribe to the discovery topics and read what they announce.
    pub enabled: bool,
    /// The discovery prefix (Home Assistant's default).
    pub prefix: String,
    /// The site of every discovered device.
    pub site: Option<String>,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        HomeAssistantConfig {
            enabled: false,
            prefix: "homeassistant".into(),
            site: None,
        }
    }
}

/// What a discovery message asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    /// Sensors to read: the mappings of their state topics (replacing
    /// every mapping whose name starts with `replaces`), and the
    /// components that are not readings or could not be read (component
    /// id, why).
    Sensors {
        replaces: String,
        mappings: Vec<Mapping>,
        skipped: Vec<(String, String)>,
    },
    /// The config was removed (an empty retained payload): drop the
    /// mappings whose names start with this.
    Removed(String),
    /// Not a reading (a switch, a light, a button).
    Ignored,
}

/// The levels of a discovery config topic under `prefix` between the
/// prefix and `config`: `[component, node_id, object_id]` or
/// `[component, object_id]`; `None` for any other topic.
fn config_levels<'t>(prefix: &str, topic: &'t str) -> Option<Vec<&'t str>> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let levels: Vec<&str> = rest.strip_suffix("/config")?.split('/').collect();
    (matches!(levels.len(), 2 | 3) && levels.iter().all(|l| !l.is_empty())).then_some(levels)
}

/// Whether a topic is a discovery config topic under `prefix`.
pub fn is_config_topic(prefix: &str, topic: &str) -> bool {
    config_levels(prefix, topic).is_some()
}

/// The MQTT filters of the discovery topics.
pub fn filters(prefix: &str) -> [String; 2] {
    [
        format!("{prefix}/+/+/config"),
        format!("{prefix}/+/+/+/config"),
    ]
}

const ABBREVIATIONS: &[(&str, &str)] = &[
    ("stat_t", "state_topic"),
    ("val_tpl", "value_template"),
    ("unit_of_meas", "unit_of_measurement"),
    ("dev_cla", "device_class"),
    ("stat_cla", "state_class"),
    ("uniq_id", "unique_id"),
    ("obj_id", "object_id"),
    ("avty_t", "availability_topic"),
    ("pl_avail", "payload_available"),
    ("pl_not_avail", "payload_not_available"),
    ("dev", "device"),
    ("ids", "identifiers"),
    ("p", "platform"),
    ("cmps", "components"),
    ("o", "origin"),
];

/// Reads a discovery config on `topic` under `prefix`. `Err` says what
/// cannot be understood.
pub fn discover(
    prefix: &str,
    topic: &str,
    payload: &[u8],
    site: Option<&str>,
) -> Result<Discovery, String> {
    let levels = config_levels(prefix, topic)
        .ok_or_else(|| format!("`{topic}` is not a discovery config topic under `{prefix}`"))?;
    let component = levels[0];
    let name = format!("homeassistant:{}", levels.join("/"));
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(Discovery::Removed(name));
    }
    if component != "sensor" && component != "device" {
        return Ok(Discovery::Ignored);
    }
    let config: Value =
        serde_json::from_slice(payload).map_err(|e| format!("the config is not JSON: {e}"))?;
    let Value::Object(raw) = config else {
        return Err("the config is not a JSON object".into());
    };
    let shared = raw.clone();
    let config = expand(raw);
    if component == "sensor" {
        let m = sensor(&config, &name, &levels, site)?;
        return Ok(Discovery::Sensors {
            replaces: name,
            mappings: vec![m],
            skipped: Vec::new(),
        });
    }
    // Device-based discovery: the shared options, then each component's.
    let Some(Value::Object(components)) = config.get("components") else {
        return Err("a device discovery without `cmps` (components)".into());
    };
    let mut mappings = Vec::new();
    let mut skipped = Vec::new();
    for (id, c) in components {
        let Value::Object(own) = c else {
            skipped.push((id.clone(), "not a JSON object".into()));
            continue;
        };
        // The shared options under the component's own, then `~` (the
        // device's or the component's) expanded over both.
        let mut raw = shared.clone();
        raw.remove("cmps");
        raw.remove("components");
        raw.extend(own.clone());
        let merged = expand(raw);
        let platform = merged.get("platform").and_then(Value::as_str).unwrap_or("");
        if platform != "sensor" {
            skipped.push((
                id.clone(),
                if platform.is_empty() {
                    "no platform (`p`): removed or not announced".into()
                } else {
                    format!("platform `{platform}` is not a reading")
                },
            ));
            continue;
        }
        let mut entity_levels = levels.clone();
        entity_levels.push(id);
        match sensor(&merged, &format!("{name}#{id}"), &entity_levels, site) {
            Ok(m) => mappings.push(m),
            Err(e) => skipped.push((id.clone(), e)),
        }
    }
    Ok(Discovery::Sensors {
        replaces: name,
        mappings,
        skipped,
    })
}

/// The mapping of one sensor entity's (expanded) config.
fn sensor(
    config: &Map<String, Value>,
    name: &str,
    levels: &[&str],
    site: Option<&str>,
) -> Result<Mapping, String> {
    let text = |key: &str| config.get(key).and_then(Value::as_str).map(str::to_owned);
    let state_topic = text("state_topic").ok_or("no state_topic")?;
    if state_topic.contains(['+', '#', '{', '}']) {
        return Err(format!("state_topic `{state_topic}` is not a plain topic"));
    }
    let template = match text("value_template") {
        None => Template {
            path: "$".into(),
            round: None,
            truncate: false,
            scale: 1.0,
        },
        Some(t) => template(&t)?,
    };
    let class = text("device_class").unwrap_or_default();
    let unit = text("unit_of_measurement");
    let metric = metric_of(&class, unit.as_deref())?;
    if let Some(u) = &unit {
        Unit::parse_for(metric.dimension(), u).map_err(|e| format!("{e} (for {metric})"))?;
    }
    if text("state_class").as_deref() == Some("total_increasing")
        && metric.kind() != MetricKind::Cumulative
    {
        return Err(format!(
            "state_class total_increasing (a register) on {metric}, which is not one"
        ));
    }
    let device = config
        .get("device")
        .and_then(|d| d.get("identifiers"))
        .and_then(|i| match i {
            Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_owned),
            Value::String(s) => Some(s.clone()),
            _ => None,
        })
        .or_else(|| text("unique_id"))
        .unwrap_or_else(|| levels[1..].join("-"));
    let device: String = device
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Some(t) = text("availability_topic") {
        if t.contains(['+', '#', '{', '}']) || t.is_empty() {
            return Err(format!("availability_topic `{t}` is not a plain topic"));
        }
    }
    let availability = text("availability_topic").map(|t| Availability {
        topic: t,
        path: None,
        online: vec![text("payload_available").unwrap_or_else(|| "online".into())],
        offline: vec![text("payload_not_available").unwrap_or_else(|| "offline".into())],
    });
    Ok(Mapping {
        name: name.to_owned(),
        topic: state_topic,
        device_path: None,
        // The topic carries no id: the whole id is the prefix.
        device_prefix: device,
        site: site.map(str::to_owned),
        when: Vec::new(),
        ignore: Vec::new(),
        time_path: None,
        time_format: TimeFormat::Rfc3339,
        time_optional: false,
        time_zone: None,
        values: vec![ValueMap {
            path: template.path,
            metric,
            unit,
            unit_path: None,
            scale: template.scale,
            offset: 0.0,
            round: template.round,
            truncate: template.truncate,
            except: Vec::new(),
            device: None,
            optional: false,
        }],
        availability,
    })
}

/// Gives each new entity a device id of its own when another discovered
/// entity (of another config) already stores the same metric under the
/// same device: two temperature sensors of one ESPHome node, or a
/// device's `temperature` and `device_temperature`, would otherwise write
/// one series. The later entity's id gets its object id appended.
pub fn disambiguate(existing: &[Mapping], new: &mut [Mapping], replaces: &str) {
    let inner = format!("{replaces}#");
    let others: Vec<(&str, crate::metric::Metric)> = existing
        .iter()
        .filter(|m| {
            m.name.starts_with("homeassistant:")
                && m.name != replaces
                && !m.name.starts_with(&inner)
        })
        .flat_map(|m| {
            m.values
                .iter()
                .map(move |v| (m.device_prefix.as_str(), v.metric))
        })
        .collect();
    let mut taken: Vec<(String, crate::metric::Metric)> =
        others.iter().map(|(d, m)| ((*d).to_owned(), *m)).collect();
    for m in new.iter_mut() {
        let metric = m.values[0].metric;
        if taken
            .iter()
            .any(|(d, x)| *d == m.device_prefix && *x == metric)
        {
            let object = m
                .name
                .rsplit(['/', '#'])
                .next()
                .unwrap_or_default()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>();
            m.device_prefix = format!("{}-{object}", m.device_prefix);
        }
        taken.push((m.device_prefix.clone(), metric));
    }
}

/// Full keys for abbreviated ones, and `~` expanded in topics.
fn expand(raw: Map<String, Value>) -> Map<String, Value> {
    let long = |k: &str| {
        ABBREVIATIONS
            .iter()
            .find(|(a, _)| *a == k)
            .map_or(k.to_owned(), |(_, l)| (*l).to_owned())
    };
    let base = raw.get("~").and_then(Value::as_str).map(str::to_owned);
    raw.into_iter()
        .map(|(k, v)| {
            let k = long(&k);
            let v = match (v, &base) {
                (Value::String(s), Some(b)) if k.ends_with("_topic") => {
                    Value::String(if let Some(rest) = s.strip_prefix('~') {
                        format!("{b}{rest}")
                    } else if let Some(rest) = s.strip_suffix('~') {
                        format!("{rest}{b}")
                    } else {
                        s
                    })
                }
                (Value::Object(m), _) => Value::Object(expand(m)),
                (v, _) => v,
            };
            (k, v)
        })
        .collect()
}

/// What a value template does: the payload path it reads, then a scale
/// (`* 1000`, `/ 1000`), then rounding or truncation.
#[derive(Debug, Clone, PartialEq)]
struct Template {
    path: String,
    scale: f64,
    round: Option<u32>,
    truncate: bool,
}

/// The common value templates: `{{ value }}`, `{{ value_json.a.b }}`,
/// `{{ value_json['a'] }}`, with filters `| float`, `| int`,
/// `| round(n)` and a constant factor (`* 1000`, `/ 1000`).
fn template(template: &str) -> Result<Template, String> {
    let not = || {
        format!("value_template `{template}` is not understood (only `{{{{ value }}}}` and `{{{{ value_json.a.b }}}}`, with | float, | int, | round(n), * n or / n)")
    };
    let inner = template
        .trim()
        .strip_prefix("{{")
        .and_then(|t| t.strip_suffix("}}"))
        .ok_or_else(not)?
        .trim();
    let mut out = Template {
        path: String::new(),
        scale: 1.0,
        round: None,
        truncate: false,
    };
    let mut parts = inner.split('|').map(str::trim);
    let head = parts.next().unwrap_or_default();
    // A factor after the reference, or after `| float`.
    let factor = |text: &str, out: &mut Template| -> Result<(), String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(());
        }
        let (op, n) = text.split_at(1);
        let n: f64 = n.trim().parse().map_err(|_| not())?;
        match op {
            "*" if n.is_finite() => out.scale *= n,
            "/" if n.is_finite() && n != 0.0 => out.scale /= n,
            _ => return Err(not()),
        }
        Ok(())
    };
    let (expr, rest) = match head.find(['*', '/']) {
        Some(i) => head.split_at(i),
        None => (head, ""),
    };
    factor(rest, &mut out)?;
    for filter in parts {
        let (name, rest) = match filter.find(['*', '/']) {
            Some(i) => filter.split_at(i),
            None => (filter, ""),
        };
        match name.trim() {
            "float" | "float(0)" => {}
            "int" | "int(0)" => out.truncate = true,
            "round" => out.round = Some(0),
            r if r.starts_with("round(") && r.ends_with(')') => {
                let n = &r["round(".len()..r.len() - 1];
                out.round = Some(n.trim().parse().ok().filter(|n| *n <= 12).ok_or_else(not)?);
            }
            _ => return Err(not()),
        }
        if !rest.is_empty() && (out.round.is_some() || out.truncate) {
            // `round(1) * 10`: the order matters and is not kept.
            return Err(not());
        }
        factor(rest, &mut out)?;
    }
    let expr = expr.trim();
    if expr == "value" {
        out.path = "$".into();
        return Ok(out);
    }
    let rest = expr.strip_prefix("value_json").ok_or_else(not)?;
    let mut path = Vec::new();
    let mut rest = rest;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if key.is_empty() || !key.chars().all(|c| c.is_alphanumeric() || c == '_') {
                return Err(not());
            }
            path.push(key.to_owned());
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("['").or_else(|| rest.strip_prefix("[\"")) {
            let end = r.find(['\'', '"']).ok_or_else(not)?;
            path.push(r[..end].to_owned());
            rest = r[end + 1..].strip_prefix(']').ok_or_else(not)?;
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(not)?;
            let i: usize = r[..end].trim().parse().map_err(|_| not())?;
            match path.last_mut() {
                Some(last) => last.push_str(&format!("[{i}]")),
                None => return Err(not()),
            }
            rest = &r[end + 1..];
        } else {
            return Err(not());
        }
    }
    out.path = if path.is_empty() {
        "$".into()
    } else {
        path.join(".")
    };
    Ok(out)
}

/// The estatemon metric of a Home Assistant sensor class (and unit, where
/// the class alone does not say).
fn metric_of(class: &str, unit: Option<&str>) -> Result<Metric, String> {
    Ok(match class {
        "energy" => Metric::EnergyKwh,
        "power" => Metric::PowerKw,
        "voltage" => Metric::VoltageV,
        "current" => Metric::CurrentA,
        "power_factor" => Metric::PowerFactor,
        "temperature" => Metric::TemperatureC,
        "humidity" => Metric::HumidityPct,
        "pressure" => Metric::PressureMpa,
        "water" | "gas" => Metric::VolumeM3,
        "volume_flow_rate" => Metric::FlowM3h,
        "apparent_power" => Metric::ApparentPowerKva,
        "" => {
            return Err(format!(
                "no device_class{}: which metric it is cannot be known",
                unit.map(|u| format!(" (unit `{u}`)")).unwrap_or_default()
            ))
        }
        other => return Err(format!("device_class `{other}` has no estatemon metric")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    /// Home Assistant's MQTT discovery docs, "Sensors" example (a bedroom
    /// sensor announcing temperature and humidity on one state topic).
    const HA_TEMPERATURE: &str = r#"{"device_class":"temperature","state_topic":"homeassistant/sensor/sensorBedroom/state","unit_of_measurement":"°C","value_template":"{{ value_json.temperature}}","unique_id":"temp01ae","device":{"identifiers":["bedroom01ae"],"name":"Bedroom"}}"#;

    fn sensor(d: Discovery) -> Mapping {
        match d {
            Discovery::Sensors { mut mappings, .. } if mappings.len() == 1 => mappings.remove(0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_docs_example_reads_its_state() {
        let m = sensor(
            discover(
                "homeassistant",
                "homeassistant/sensor/sensorBedroomT/config",
                HA_TEMPERATURE.as_bytes(),
                Some("harbour-view"),
            )
            .unwrap(),
        );
        assert_eq!(m.topic, "homeassistant/sensor/sensorBedroom/state");
        let got = m
            .apply(
                &m.topic.clone(),
                br#"{ "temperature": 23.20, "humidity": 43.70 }"#,
                Utc::now(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(got.device_id, "bedroom01ae");
        assert_eq!(got.site.as_deref(), Some("harbour-view"));
        assert_eq!(got.readings[0].metric, Metric::TemperatureC);
        assert_eq!(got.readings[0].value, 23.2);
    }

    #[test]
    fn abbreviations_base_topic_bare_values_and_units() {
        // ESPHome's abbreviated form: ~ base, a bare number, Wh.
        let m = sensor(
            discover(
                "homeassistant",
                "homeassistant/sensor/plug1/energy/config",
                br#"{"~":"plug1/sensor/energy","stat_t":"~/state","dev_cla":"energy","stat_cla":"total_increasing","unit_of_meas":"Wh","uniq_id":"plug1-energy","dev":{"ids":["plug1"]},"avty_t":"plug1/status"}"#,
                None,
            )
            .unwrap(),
        );
        assert_eq!(m.topic, "plug1/sensor/energy/state");
        assert_eq!(m.availability.as_ref().unwrap().topic, "plug1/status");
        let got = m
            .apply(&m.topic.clone(), b"2500", Utc::now())
            .unwrap()
            .unwrap();
        assert_eq!(got.device_id, "plug1");
        assert_eq!(got.readings[0].metric, Metric::EnergyKwh);
        assert_eq!(got.readings[0].value, 2.5);
    }

    #[test]
    fn what_is_not_understood_is_said() {
        let cases = [
            (
                r#"{"stat_t":"a/b","dev_cla":"power","unit_of_meas":"W","val_tpl":"{{ value_json.p + 1000 }}"}"#,
                "is not understood",
            ),
            (
                r#"{"stat_t":"a/b","dev_cla":"illuminance","unit_of_meas":"lx"}"#,
                "no estatemon metric",
            ),
            (r#"{"stat_t":"a/b","unit_of_meas":"W"}"#, "no device_class"),
            (
                r#"{"stat_t":"a/b","dev_cla":"power","unit_of_meas":"horsepower"}"#,
                "estatemon knows; nearest",
            ),
            (
                r#"{"stat_t":"a/b","dev_cla":"power","unit_of_meas":"kWh"}"#,
                "measures Energy, not Power",
            ),
            (
                r#"{"stat_t":"a/b","dev_cla":"power","stat_cla":"total_increasing"}"#,
                "not one",
            ),
            (r#"{"dev_cla":"power"}"#, "no state_topic"),
            ("not json", "not JSON"),
        ];
        for (config, want) in cases {
            let e = discover(
                "homeassistant",
                "homeassistant/sensor/x/config",
                config.as_bytes(),
                None,
            )
            .unwrap_err();
            assert!(e.contains(want), "{config}: {e}");
        }
    }

    #[test]
    fn device_discovery_shares_its_base_topic_and_refuses_wildcard_availability() {
        let d = discover(
            "homeassistant",
            "homeassistant/device/kitchen/config",
            r#"{"~":"esp/kitchen","dev":{"ids":"kitchen"},"cmps":{"t":{"p":"sensor","dev_cla":"temperature","unit_of_meas":"°C","stat_t":"~/state","val_tpl":"{{ value_json.t }}"},"b":{"p":"binary_sensor","stat_t":"~/door"}}}"#.as_bytes(),
            None,
        )
        .unwrap();
        let Discovery::Sensors {
            mappings, skipped, ..
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(mappings.len(), 1);
        assert_eq!(mappings[0].topic, "esp/kitchen/state");
        assert_eq!(mappings[0].name, "homeassistant:device/kitchen#t");
        assert_eq!(skipped.len(), 1);
        let e = discover(
            "homeassistant",
            "homeassistant/sensor/x/config",
            br##"{"stat_t":"a/b","dev_cla":"power","avty_t":"#"}"##,
            None,
        )
        .unwrap_err();
        assert!(e.contains("availability_topic"), "{e}");
    }

    #[test]
    fn removal_other_components_and_templates() {
        assert_eq!(
            discover(
                "homeassistant",
                "homeassistant/sensor/n/o/config",
                b"",
                None
            )
            .unwrap(),
            Discovery::Removed("homeassistant:sensor/n/o".into())
        );
        assert_eq!(
            discover(
                "homeassistant",
                "homeassistant/switch/x/config",
                b"{}",
                None
            )
            .unwrap(),
            Discovery::Ignored
        );
        // A prefix of two levels, and topics that would once have panicked.
        assert!(is_config_topic("ha/home", "ha/home/sensor/n/o/config"));
        assert_eq!(
            discover("ha/home", "ha/home/switch/x/config", b"{}", None).unwrap(),
            Discovery::Ignored
        );
        for t in ["x", "homeassistant/config", "homeassistant//x/config", ""] {
            assert!(discover("homeassistant", t, b"{}", None).is_err(), "{t}");
        }
        assert!(is_config_topic(
            "homeassistant",
            "homeassistant/sensor/n/o/config"
        ));
        assert!(!is_config_topic(
            "homeassistant",
            "homeassistant/sensor/config"
        ));
        for (t, p) in [
            ("{{ value }}", "$"),
            ("{{ value_json.ENERGY.Total }}", "ENERGY.Total"),
            ("{{ value_json['a']['b c'] | float }}", "a.b c"),
            ("{{value_json.power|round(1)}}", "power"),
        ] {
            assert_eq!(template(t).unwrap().path, p, "{t}");
        }
    }
}
