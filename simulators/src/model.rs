//! The site model: given a registry and a seed, what each device reports at
//! each step. Pure and reproducible: the same seed and times give the same
//! messages, byte for byte.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use estatemon_domain::config::TopicsConfig;
use estatemon_domain::device::{Device, DeviceKind, Purpose, Registry, Site};
use estatemon_domain::event::{AccessMethod, Direction, LiftState};
use estatemon_domain::Metric;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the registry has no site `{0}`")]
    UnknownSite(String),
    #[error("the registry has no sites")]
    NoSite,
    #[error("site `{site}` has time zone `{tz}`, which is not an IANA zone")]
    BadZone { site: String, tz: String },
}

/// What one device reported in one step, before any wire format.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Telemetry {
        device: usize,
        ts: DateTime<Utc>,
        metrics: Vec<(Metric, f64)>,
    },
    Events {
        device: usize,
        events: Vec<SimEvent>,
    },
}

/// A simulated event, with the credential in clear as a gate sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    pub ts: DateTime<Utc>,
    pub kind: SimEventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SimEventKind {
    Access {
        granted: bool,
        method: AccessMethod,
        credential: String,
        direction: Direction,
    },
    State(LiftState),
}

/// One MQTT message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Readings (telemetry) or events carried.
    pub items: usize,
}

struct DeviceState {
    device: Device,
    /// Cumulative register (kWh or m³), or lift trips.
    register: f64,
    door_cycles: f64,
    /// Rated load: kW for electricity, m³/h for water and gas.
    rated: f64,
    state_moving: bool,
}

/// A simulated site.
pub struct SiteModel {
    site: Site,
    tz: Tz,
    devices: Vec<DeviceState>,
    rng: ChaCha8Rng,
    credentials: Vec<String>,
}

impl SiteModel {
    pub fn new(
        registry: &Registry,
        site: Option<&str>,
        seed: u64,
    ) -> Result<SiteModel, ModelError> {
        let site = match site {
            Some(id) => registry
                .sites
                .iter()
                .find(|s| s.id == id)
                .ok_or_else(|| ModelError::UnknownSite(id.into()))?,
            None => registry.sites.first().ok_or(ModelError::NoSite)?,
        };
        let tz: Tz = site.time_zone.parse().map_err(|_| ModelError::BadZone {
            site: site.id.clone(),
            tz: site.time_zone.clone(),
        })?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let devices = registry
            .devices
            .iter()
            .filter(|d| d.site == site.id)
            .map(|d| DeviceState {
                device: d.clone(),
                register: rng.random_range(1_000.0..50_000.0_f64).round(),
                door_cycles: rng.random_range(10_000.0..90_000.0_f64).round(),
                rated: rated_load(d),
                state_moving: false,
            })
            .collect();
        let credentials = (0..400)
            .map(|i| format!("CARD-{:05}", 10_000 + i * 7))
            .collect();
        Ok(SiteModel {
            site: site.clone(),
            tz,
            devices,
            rng,
            credentials,
        })
    }

    pub fn site(&self) -> &Site {
        &self.site
    }

    pub fn device_ids(&self) -> Vec<&str> {
        self.devices.iter().map(|d| d.device.id.as_str()).collect()
    }

    /// Occupancy 0..1 from local time: weekday morning and evening peaks,
    /// quieter weekends, near zero at night.
    pub fn occupancy(&self, t: DateTime<Utc>) -> f64 {
        let local = t.with_timezone(&self.tz);
        let h = local.hour() as f64 + local.minute() as f64 / 60.0;
        let weekend = matches!(local.weekday(), Weekday::Sat | Weekday::Sun);
        let bump = |centre: f64, width: f64| (-((h - centre) / width).powi(2)).exp();
        let base = if (0.5..6.0).contains(&h) { 0.04 } else { 0.25 };
        if weekend {
            (base + 0.45 * bump(11.0, 3.0) + 0.4 * bump(18.0, 2.5)).min(1.0)
        } else {
            (base + 0.75 * bump(8.3, 1.0) + 0.85 * bump(18.8, 1.3)).min(1.0)
        }
    }

    /// Messages for the interval ending at `t`, `dt` long, as published.
    pub fn step(&mut self, t: DateTime<Utc>, dt: Duration, topics: &TopicsConfig) -> Vec<Message> {
        self.reports(t, dt)
            .iter()
            .map(|r| self.render(r, topics))
            .collect()
    }

    /// Device id of a report's `device` index.
    pub fn device_id(&self, device: usize) -> &str {
        &self.devices[device].device.id
    }

    /// A report as estatemon stores it: readings, and events with the
    /// credential pseudonymised (for backfills straight into the database).
    pub fn to_domain(
        &self,
        report: &Report,
        pseudonymiser: &estatemon_domain::pseudonym::Pseudonymiser,
        readings: &mut Vec<estatemon_domain::Reading>,
        events: &mut Vec<estatemon_domain::event::Event>,
    ) {
        use estatemon_domain::event::{AccessResult, Event, EventDetail};
        match report {
            Report::Telemetry {
                device,
                ts,
                metrics,
            } => {
                for (metric, value) in metrics {
                    readings.push(estatemon_domain::Reading {
                        device_id: self.device_id(*device).to_owned(),
                        metric: *metric,
                        ts: *ts,
                        value: *value,
                    });
                }
            }
            Report::Events {
                device,
                events: list,
            } => {
                for e in list {
                    let detail = match &e.kind {
                        SimEventKind::State(state) => EventDetail::State { state: *state },
                        SimEventKind::Access {
                            granted,
                            method,
                            credential,
                            direction,
                        } => EventDetail::Access {
                            result: if *granted {
                                AccessResult::Granted
                            } else {
                                AccessResult::Denied
                            },
                            method: *method,
                            credential: Some(pseudonymiser.pseudonymise(credential)),
                            direction: Some(*direction),
                            credential_expired: false,
                        },
                    };
                    events.push(Event {
                        device_id: self.device_id(*device).to_owned(),
                        ts: e.ts,
                        detail,
                    });
                }
            }
        }
    }

    /// The JSON message a device publishes for a report.
    pub fn render(&self, report: &Report, topics: &TopicsConfig) -> Message {
        let site = &self.site.id;
        match report {
            Report::Telemetry {
                device,
                ts,
                metrics,
            } => {
                let mut m = Map::new();
                for (metric, v) in metrics {
                    m.insert(metric.as_str().to_owned(), json!(v));
                }
                let body = json!({
                    "ts": ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "metrics": Value::Object(m),
                });
                Message {
                    topic: render(&topics.telemetry, site, self.device_id(*device)),
                    payload: serde_json::to_vec(&body).expect("json"),
                    items: metrics.len(),
                }
            }
            Report::Events { device, events } => {
                let items: Vec<Value> = events
                    .iter()
                    .map(|e| {
                        let ts = e.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                        match &e.kind {
                            SimEventKind::State(state) => {
                                json!({"ts": ts, "type": "state", "state": state.as_str()})
                            }
                            SimEventKind::Access {
                                granted,
                                method,
                                credential,
                                direction,
                            } => json!({
                                "ts": ts,
                                "type": "access",
                                "result": if *granted { "granted" } else { "denied" },
                                "method": method.as_str(),
                                "credential": credential,
                                "direction": direction.as_str(),
                            }),
                        }
                    })
                    .collect();
                Message {
                    topic: render(&topics.events, site, self.device_id(*device)),
                    payload: serde_json::to_vec(&Value::Array(items)).expect("json"),
                    items: events.len(),
                }
            }
        }
    }

    /// What every device reports for the interval ending at `t`, `dt` long.
    pub fn reports(&mut self, t: DateTime<Utc>, dt: Duration) -> Vec<Report> {
        let hours = dt.num_milliseconds() as f64 / 3.6e6;
        let occ = self.occupancy(t);
        let dark = crate::sun::is_dark(t, self.site.latitude, self.site.longitude);
        let local_hour = t.with_timezone(&self.tz).hour();
        let mut out = Vec::new();
        for i in 0..self.devices.len() {
            let noise = 1.0 + self.rng.random_range(-0.05..0.05);
            let kind = self.devices[i].device.kind;
            let telemetry = |metrics: Vec<(Metric, f64)>| Report::Telemetry {
                device: i,
                ts: t,
                metrics,
            };
            match kind {
                DeviceKind::ElectricityMeter => {
                    let d = &mut self.devices[i];
                    let kw = electric_load(&d.device, d.rated, occ, dark, noise);
                    d.register += kw * hours;
                    out.push(telemetry(vec![
                        (Metric::EnergyKwh, round3(d.register)),
                        (Metric::PowerKw, round3(kw)),
                    ]));
                }
                DeviceKind::WaterMeter | DeviceKind::GasMeter => {
                    let d = &mut self.devices[i];
                    let flow = match d.device.purpose {
                        Purpose::Irrigation if (6..7).contains(&local_hour) => d.rated,
                        Purpose::Irrigation => 0.0,
                        _ => d.rated * (0.08 + 0.92 * occ) * noise,
                    };
                    d.register += flow * hours;
                    out.push(telemetry(vec![
                        (Metric::VolumeM3, round3(d.register)),
                        (Metric::FlowM3h, round3(flow)),
                    ]));
                }
                DeviceKind::Sensor => {
                    let pressure = 0.62 + 0.02 * (noise - 1.0) * 10.0;
                    out.push(telemetry(vec![(Metric::PressureMpa, round3(pressure))]));
                }
                DeviceKind::Lift => {
                    let trips = poisson(&mut self.rng, 40.0 * occ * hours);
                    let d = &mut self.devices[i];
                    d.register += trips as f64;
                    d.door_cycles += 2.0 * trips as f64;
                    let motor = 28.0 + 18.0 * occ + 3.0 * (noise - 1.0) * 10.0;
                    out.push(telemetry(vec![
                        (Metric::Trips, d.register),
                        (Metric::DoorCycles, d.door_cycles),
                        (Metric::MotorTempC, round3(motor)),
                    ]));
                    let moving = trips > 0;
                    if moving != d.state_moving {
                        d.state_moving = moving;
                        let state = if moving {
                            LiftState::Moving
                        } else {
                            LiftState::Idle
                        };
                        out.push(Report::Events {
                            device: i,
                            events: vec![SimEvent {
                                ts: t,
                                kind: SimEventKind::State(state),
                            }],
                        });
                    }
                }
                DeviceKind::AccessGate => {
                    let n = poisson(&mut self.rng, 90.0 * occ * hours).min(500);
                    let morning = local_hour < 13;
                    let mut events = Vec::with_capacity(n);
                    for k in 0..n {
                        let at = t - Duration::milliseconds(
                            (dt.num_milliseconds() as f64 * (k as f64 + 0.5) / n as f64) as i64,
                        );
                        let granted = self.rng.random_bool(0.96);
                        use AccessMethod::*;
                        let method = [Card, Card, Face, Face, Fingerprint, Bluetooth, Visitor]
                            [self.rng.random_range(0..7)];
                        let credential = self.credentials
                            [self.rng.random_range(0..self.credentials.len())]
                        .clone();
                        let direction = if self.rng.random_bool(if morning { 0.3 } else { 0.7 }) {
                            Direction::In
                        } else {
                            Direction::Out
                        };
                        events.push(SimEvent {
                            ts: at,
                            kind: SimEventKind::Access {
                                granted,
                                method,
                                credential,
                                direction,
                            },
                        });
                    }
                    if !events.is_empty() {
                        out.push(Report::Events { device: i, events });
                    }
                }
                DeviceKind::Unknown => {}
            }
        }
        out
    }

    /// Current register values (ground truth for tests).
    pub fn registers(&self) -> HashMap<String, f64> {
        self.devices
            .iter()
            .map(|d| (d.device.id.clone(), d.register))
            .collect()
    }
}

fn rated_load(d: &Device) -> f64 {
    match (d.kind, d.purpose, d.area.as_str()) {
        (DeviceKind::ElectricityMeter, Purpose::PublicLighting, "garage") => 18.0,
        (DeviceKind::ElectricityMeter, Purpose::PublicLighting, "corridor") => 9.0,
        (DeviceKind::ElectricityMeter, Purpose::PublicLighting, _) => 4.0,
        (DeviceKind::ElectricityMeter, Purpose::Lifts, _) => 22.0,
        (DeviceKind::ElectricityMeter, Purpose::Pumps, _) => 15.0,
        (DeviceKind::ElectricityMeter, Purpose::Hvac, _) => 60.0,
        (DeviceKind::ElectricityMeter, _, _) => 10.0,
        (DeviceKind::WaterMeter, Purpose::Irrigation, _) => 3.0,
        (DeviceKind::WaterMeter, _, _) => 12.0,
        (DeviceKind::GasMeter, _, _) => 2.5,
        _ => 1.0,
    }
}

/// kW drawn now. Garage and corridor lights are partly on around the clock
/// (safety lighting); lobby lights follow darkness.
fn electric_load(d: &Device, rated: f64, occ: f64, dark: bool, noise: f64) -> f64 {
    let dark = if dark { 1.0 } else { 0.0 };
    let share = match (d.purpose, d.area.as_str()) {
        (Purpose::PublicLighting, "garage") => 0.55 + 0.45 * dark,
        (Purpose::PublicLighting, "corridor") => 0.3 + 0.7 * dark,
        (Purpose::PublicLighting, _) => 0.05 + 0.95 * dark,
        (Purpose::Lifts, _) => 0.1 + 0.9 * occ,
        (Purpose::Pumps, _) => 0.35 + 0.65 * occ,
        _ => 0.3 + 0.7 * occ,
    };
    rated * share * noise
}

fn render(template: &str, site: &str, device: &str) -> String {
    template
        .replace("{site}", site)
        .replace("{device_id}", device)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Poisson sample (Knuth for small means, normal approximation above 30).
fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> usize {
    if mean <= 0.0 {
        return 0;
    }
    if mean > 30.0 {
        let u1: f64 = rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        return (mean + z * mean.sqrt()).round().max(0.0) as usize;
    }
    let limit = (-mean).exp();
    let mut p = 1.0;
    let mut k = 0;
    loop {
        p *= rng.random::<f64>();
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn model(seed: u64) -> SiteModel {
        let registry =
            Registry::parse(crate::DEFAULT_SITE, std::path::Path::new("default")).unwrap();
        SiteModel::new(&registry, None, seed).unwrap()
    }

    #[test]
    fn same_seed_same_messages() {
        let topics = TopicsConfig::default();
        let t = Utc.with_ymd_and_hms(2026, 3, 2, 1, 0, 0).unwrap();
        let (mut a, mut b) = (model(7), model(7));
        for i in 0..20 {
            let at = t + Duration::minutes(15 * i);
            assert_eq!(
                a.step(at, Duration::minutes(15), &topics),
                b.step(at, Duration::minutes(15), &topics)
            );
        }
    }

    #[test]
    fn lobby_lighting_follows_darkness_and_registers_only_rise() {
        let topics = TopicsConfig::default();
        let mut m = model(1);
        let start = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap(); // 08:00 HKT
        let lobby_kw = |msgs: &[Message]| -> f64 {
            let msg = msgs
                .iter()
                .find(|m| m.topic.contains("hv-a-lobby-light"))
                .unwrap();
            let v: Value = serde_json::from_slice(&msg.payload).unwrap();
            v["metrics"]["power_kw"].as_f64().unwrap()
        };
        let noon = lobby_kw(&m.step(start + Duration::hours(4), Duration::minutes(15), &topics));
        let night = lobby_kw(&m.step(start + Duration::hours(15), Duration::minutes(15), &topics));
        assert!(night > 5.0 * noon, "night {night} noon {noon}");
        let before = m.registers();
        m.step(start + Duration::hours(16), Duration::minutes(15), &topics);
        for (id, v) in m.registers() {
            assert!(v >= before[&id], "{id}");
        }
    }

    #[test]
    fn weekday_peaks() {
        let m = model(1);
        let monday = |h| Utc.with_ymd_and_hms(2026, 3, 2, h, 0, 0).unwrap() - Duration::hours(8);
        assert!(m.occupancy(monday(8) + Duration::minutes(20)) > 3.0 * m.occupancy(monday(3)));
        assert!(m.occupancy(monday(19)) > m.occupancy(monday(14)));
    }
}
