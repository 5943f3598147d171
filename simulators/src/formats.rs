//! The site as other makers' devices would publish it: Tasmota plugs,
//! Shelly Gen2 switches, Zigbee2MQTT devices, or one Sparkplug B edge node
//! per building. Each device whose report a format can carry is published
//! in it (the shipped profiles and the Sparkplug host read them back); the
//! rest (lift and gate events, metrics the format has no field for) stay in
//! estatemon's own format, as they would in a mixed estate.
//!
//! Payload shapes follow each project's documentation, as the shipped
//! profiles (`domain/src/mapping/*.toml`) do:
//! - Tasmota `tele/<topic>/SENSOR`: `{"Time":"<local>","ENERGY":{"Total":kWh,"Power":W}}`;
//! - Shelly Gen2 `<id>/events/rpc`: `NotifyStatus` with `switch:0.aenergy.total`
//!   (Wh) and `apower` (W), `params.ts` in epoch seconds;
//! - Zigbee2MQTT `zigbee2mqtt/<name>`: `energy` kWh, `power` W,
//!   `temperature` °C, `humidity` %, `last_seen` ISO 8601;
//! - Sparkplug B: `spBv1.0/<site>/NBIRTH|DBIRTH|DDATA/gw-<building>/<device>`,
//!   metrics by alias after the birth, `engUnit` properties, one `seq` per node.
//!
//! Devices reporting under another id than their ledger id (Shelly's
//! `<id>-switch:0`, Sparkplug's `group/node/device`) have it from
//! [`source_id`], for the registry's `source_id`; [`receive`] readies an
//! ingest configuration and registry for a format.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use estatemon_domain::config::TopicsConfig;
use estatemon_domain::config::{IngestConfig, ProfileConfig};
use estatemon_domain::device::{Device, DeviceKind, Registry};
use estatemon_domain::sparkplug::proto::{self, datatype};
use estatemon_domain::Metric;
use serde_json::{json, Map, Value};

use crate::model::{Message, Report, SiteModel};

pub use estatemon_domain::config::SimulateFormat as Format;

/// The Sparkplug edge node a device belongs to: one per building.
fn node(d: &Device) -> String {
    format!("gw-{}", d.building.as_deref().unwrap_or("site"))
}

/// The id `d` reports under in `format`, when not its ledger id: what the
/// registry's `source_id` must say.
pub fn source_id(format: Format, d: &Device) -> Option<String> {
    match format {
        Format::Shelly if d.kind == DeviceKind::ElectricityMeter => {
            Some(format!("{}-switch:0", d.id))
        }
        Format::Sparkplug => Some(format!("{}/{}/{}", d.site, node(d), d.id)),
        _ => None,
    }
}

/// Makes an ingest configuration and a registry ready for devices
/// publishing in `format`: the profile (or the Sparkplug host) enabled for
/// the site, and each device's `source_id` set.
pub fn receive(format: Format, registry: &mut Registry, ingest: &mut IngestConfig) {
    let profile = match format {
        Format::Native => return,
        Format::Sparkplug => {
            ingest.sparkplug.enabled = true;
            None
        }
        Format::Tasmota => Some("tasmota"),
        Format::Shelly => Some("shelly"),
        Format::Zigbee2mqtt => Some("zigbee2mqtt"),
    };
    for site in &registry.sites {
        if let Some(name) = profile {
            ingest.profiles.push(ProfileConfig {
                name: name.into(),
                site: Some(site.id.clone()),
                time_zone: Some(site.time_zone.clone()),

                ..Default::default()
            });
        }
    }
    for d in &mut registry.devices {
        if let Some(source) = source_id(format, d) {
            d.source_id = Some(source);
        }
    }
}

/// Renders reports in a format; keeps the Sparkplug session's state.
pub struct Renderer {
    format: Format,
    /// Sparkplug: per node, the next `seq` (after its NBIRTH).
    seq: HashMap<String, u64>,
    /// Sparkplug: per device, the metrics its last DBIRTH defined (alias =
    /// position).
    born: HashMap<usize, Vec<Metric>>,
}

impl Renderer {
    pub fn new(format: Format) -> Renderer {
        Renderer {
            format,
            seq: HashMap::new(),
            born: HashMap::new(),
        }
    }

    /// The messages of `reports`, in order (Sparkplug births first).
    pub fn render(
        &mut self,
        model: &SiteModel,
        reports: &[Report],
        topics: &TopicsConfig,
    ) -> Vec<Message> {
        let mut out = Vec::with_capacity(reports.len());
        for r in reports {
            if let Report::Telemetry {
                device,
                ts,
                metrics,
            } = r
            {
                if self.telemetry(model, *device, *ts, metrics, &mut out) {
                    continue;
                }
            }
            out.push(model.render(r, topics));
        }
        out
    }

    /// Pushes the report in this format; false when the format cannot
    /// carry it (the caller publishes it natively).
    fn telemetry(
        &mut self,
        model: &SiteModel,
        device: usize,
        ts: DateTime<Utc>,
        metrics: &[(Metric, f64)],
        out: &mut Vec<Message>,
    ) -> bool {
        let d = model.device(device);
        let get = |m: Metric| metrics.iter().find(|(k, _)| *k == m).map(|(_, v)| *v);
        let only = |allowed: &[Metric]| metrics.iter().all(|(m, _)| allowed.contains(m));
        let id = d.id.as_str();
        let message = |topic: String, body: Value| Message {
            topic,
            payload: serde_json::to_vec(&body).expect("json"),
            items: metrics.len(),
            device: id.to_owned(),
            ordered: false,
        };
        let electricity =
            d.kind == DeviceKind::ElectricityMeter && only(&[Metric::EnergyKwh, Metric::PowerKw]);
        match self.format {
            Format::Native => false,
            Format::Tasmota => {
                // Tasmota always sends its register, in whole local seconds.
                let (Some(total), true) = (get(Metric::EnergyKwh), electricity) else {
                    return false;
                };
                let Some(local) = local_seconds(ts, model.time_zone()) else {
                    return false;
                };
                let mut energy = Map::new();
                energy.insert("Total".into(), json!(total));
                if let Some(kw) = get(Metric::PowerKw) {
                    energy.insert("Power".into(), json!(milli(kw)));
                }
                out.push(message(
                    format!("tele/{id}/SENSOR"),
                    json!({"Time": local, "ENERGY": energy}),
                ));
                true
            }
            Format::Shelly => {
                if !electricity {
                    return false;
                }
                let mut channel = Map::new();
                channel.insert("id".into(), json!(0));
                if let Some(kw) = get(Metric::PowerKw) {
                    channel.insert("apower".into(), json!(milli(kw)));
                }
                if let Some(kwh) = get(Metric::EnergyKwh) {
                    channel.insert("aenergy".into(), json!({"total": milli(kwh)}));
                }
                let epoch = ts.timestamp_millis() as f64 / 1000.0;
                out.push(message(
                    format!("{id}/events/rpc"),
                    json!({"src": id, "dst": "estatemon", "method": "NotifyStatus",
                           "params": {"ts": epoch, "switch:0": channel}}),
                ));
                true
            }
            Format::Zigbee2mqtt => {
                let climate = d.kind == DeviceKind::Sensor
                    && get(Metric::TemperatureC).is_some()
                    && only(&[Metric::TemperatureC, Metric::HumidityPct]);
                let metering = electricity && get(Metric::EnergyKwh).is_some();
                if !(climate || metering) {
                    return false;
                }
                let mut body = Map::new();
                for (m, v) in metrics {
                    let (key, value) = match m {
                        Metric::EnergyKwh => ("energy", json!(v)),
                        Metric::PowerKw => ("power", json!(milli(*v))),
                        Metric::TemperatureC => ("temperature", json!(v)),
                        _ => ("humidity", json!(v)),
                    };
                    body.insert(key.into(), value);
                }
                body.insert(
                    "last_seen".into(),
                    json!(ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                );
                out.push(message(format!("zigbee2mqtt/{id}"), Value::Object(body)));
                true
            }
            Format::Sparkplug => {
                self.sparkplug(model, device, ts, metrics, out);
                true
            }
        }
    }

    fn sparkplug(
        &mut self,
        model: &SiteModel,
        device: usize,
        ts: DateTime<Utc>,
        metrics: &[(Metric, f64)],
        out: &mut Vec<Message>,
    ) {
        let d = model.device(device);
        let group = &d.site;
        let node = node(d);
        let ms = ts.timestamp_millis() as u64;
        let mut publish = |seq: &mut HashMap<String, u64>,
                           kind: &str,
                           device: Option<&str>,
                           metrics: Vec<proto::Metric>,
                           items: usize| {
            let next = seq.entry(node.clone()).or_insert(0);
            let payload = proto::Payload {
                timestamp: Some(ms),
                metrics,
                seq: Some(*next % 256),
                ..Default::default()
            };
            *next += 1;
            let tail = device.map(|x| format!("/{x}")).unwrap_or_default();
            out.push(Message {
                topic: format!("spBv1.0/{group}/{kind}/{node}{tail}"),
                payload: payload.to_bytes(),
                items,
                device: d.id.clone(),
                ordered: true,
            });
        };
        if !self.seq.contains_key(&node) {
            let bd_seq = proto::Metric {
                name: Some("bdSeq".into()),
                datatype: Some(datatype::UINT64),
                value: Some(proto::Value::LongValue(0)),
                ..Default::default()
            };
            publish(&mut self.seq, "NBIRTH", None, vec![bd_seq], 0);
        }
        // A (re)birth when the device reports a metric its birth lacks.
        let defined = self.born.entry(device).or_default();
        if metrics.iter().any(|(m, _)| !defined.contains(m)) {
            for (m, _) in metrics {
                if !defined.contains(m) {
                    defined.push(*m);
                }
            }
            let births = defined
                .iter()
                .enumerate()
                .map(|(alias, m)| proto::Metric {
                    name: Some(format!("Meter/{}", m.as_str())),
                    alias: Some(alias as u64),
                    datatype: Some(datatype::DOUBLE),
                    is_null: Some(true),
                    properties: Some(proto::PropertySet::units(m.unit())),
                    ..Default::default()
                })
                .collect();
            publish(&mut self.seq, "DBIRTH", Some(&d.id), births, 0);
        }
        let data = metrics
            .iter()
            .map(|(m, v)| proto::Metric {
                alias: defined.iter().position(|k| k == m).map(|a| a as u64),
                timestamp: Some(ms),
                datatype: Some(datatype::DOUBLE),
                value: Some(proto::Value::DoubleValue(*v)),
                ..Default::default()
            })
            .collect();
        publish(&mut self.seq, "DDATA", Some(&d.id), data, metrics.len());
    }
}

/// kW → W, kWh → Wh, kept exact for values of three decimals.
fn milli(v: f64) -> f64 {
    (v * 1000.0).round()
}

/// A naive local time of whole seconds, when `ts` has no fraction and is
/// not in an hour the clocks repeat (Tasmota's `Time` cannot say which).
fn local_seconds(ts: DateTime<Utc>, tz: chrono_tz::Tz) -> Option<String> {
    use chrono::TimeZone;
    if ts.timestamp_subsec_millis() != 0 {
        return None;
    }
    let local = ts.with_timezone(&tz).naive_local();
    let single = tz.from_local_datetime(&local).single()?;
    (single == ts).then(|| local.format("%Y-%m-%dT%H:%M:%S").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use estatemon_domain::sparkplug::Host;
    use estatemon_domain::Reading;

    /// A day of the default site in `format` (15-minute steps, so with
    /// registers), read back by the shipped profile or the Sparkplug host,
    /// with the registry's source ids: every reading the format carried is
    /// the reading the model made, to the bit. Returns how many devices
    /// the format carried.
    fn round_trip(format: Format) -> usize {
        let mut registry =
            Registry::parse(crate::DEFAULT_SITE, std::path::Path::new("default")).unwrap();
        let mut ingest = IngestConfig::default();
        receive(format, &mut registry, &mut ingest);
        let aliases: HashMap<String, String> = registry
            .devices
            .iter()
            .filter_map(|d| Some((d.source_id.clone()?, d.id.clone())))
            .collect();
        let mappings = ingest.all_mappings();
        let mut host = Host::new(ingest.sparkplug.clone());
        let mut model = SiteModel::new(&registry, None, 11).unwrap();
        let topics = TopicsConfig::default();
        let pseudonymiser = estatemon_domain::pseudonym::Pseudonymiser::new(b"simulator test key");
        let mut renderer = Renderer::new(format);
        let t0 = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
        let dt = Duration::minutes(15);
        let mut carried = std::collections::BTreeSet::new();
        for i in 1..=96 {
            for report in model.reports(t0 + dt * i, dt) {
                let mut want = Vec::new();
                model.to_domain(&report, &pseudonymiser, &mut want, &mut Vec::new());
                let messages = renderer.render(&model, std::slice::from_ref(&report), &topics);
                let mut got: Vec<Reading> = Vec::new();
                let mut native = false;
                for m in &messages {
                    if m.topic.starts_with("estatemon/") {
                        native = true;
                    } else if format == Format::Sparkplug {
                        let out = host
                            .handle(&m.topic, &m.payload, t0, 0)
                            .expect("a Sparkplug topic");
                        assert!(out.problems.is_empty(), "{}: {:?}", m.topic, out.problems);
                        assert!(out.rebirth.is_none(), "{}", m.topic);
                        got.extend(out.readings);
                    } else {
                        // As ingest routes it: every fitting mapping applies.
                        match estatemon_domain::mapping::route(
                            &mappings, &m.topic, &m.payload, t0, false,
                        ) {
                            estatemon_domain::mapping::Routed::Mapped {
                                results, errors, ..
                            } => {
                                assert!(errors.is_empty(), "{}: {errors:?}", m.topic);
                                assert!(!results.is_empty(), "no mapping for {}", m.topic);
                                for r in results {
                                    assert!(r.problems.is_empty(), "{}: {:?}", m.topic, r.problems);
                                    got.extend(r.readings);
                                }
                            }
                            other => panic!("{}: {other:?}", m.topic),
                        }
                    }
                }
                if native {
                    continue;
                }
                for r in &mut got {
                    if let Some(own) = aliases.get(&r.device_id) {
                        r.device_id.clone_from(own);
                    }
                }
                let key = |r: &Reading| (r.device_id.clone(), r.metric, r.ts);
                got.sort_by_key(key);
                want.sort_by_key(key);
                assert_eq!(got, want, "{format:?}");
                carried.extend(want.into_iter().map(|r| r.device_id));
            }
        }
        carried.len()
    }

    #[test]
    fn every_format_reads_back_as_the_model_sent_it() {
        let meters = Registry::parse(crate::DEFAULT_SITE, std::path::Path::new("default"))
            .unwrap()
            .devices
            .iter()
            .filter(|d| d.kind == DeviceKind::ElectricityMeter)
            .count();
        assert!(meters >= 4);
        assert_eq!(round_trip(Format::Tasmota), meters);
        assert_eq!(round_trip(Format::Shelly), meters);
        assert!(
            round_trip(Format::Zigbee2mqtt) > meters,
            "meters and climate sensors"
        );
        // Sparkplug carries every device's telemetry.
        assert!(round_trip(Format::Sparkplug) >= 15);
        assert_eq!(round_trip(Format::Native), 0);
    }

    #[test]
    fn tasmota_time_is_naive_local_seconds_or_the_report_stays_native() {
        let tz: chrono_tz::Tz = "Asia/Hong_Kong".parse().unwrap();
        let t = Utc.with_ymd_and_hms(2026, 3, 2, 0, 15, 0).unwrap();
        assert_eq!(local_seconds(t, tz).as_deref(), Some("2026-03-02T08:15:00"));
        assert_eq!(local_seconds(t + Duration::milliseconds(5), tz), None);
        // The hour New York's clocks repeat cannot be said in Tasmota's Time.
        let ny: chrono_tz::Tz = "America/New_York".parse().unwrap();
        let repeated = Utc.with_ymd_and_hms(2026, 11, 1, 5, 30, 0).unwrap();
        assert_eq!(local_seconds(repeated, ny), None);
        assert!("modbus".parse::<Format>().is_err());
        assert_eq!("sparkplug".parse::<Format>(), Ok(Format::Sparkplug));
    }
}
