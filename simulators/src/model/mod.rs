//! The site model: given a registry, a scenario and a seed, what each device
//! reports at each step. Pure and reproducible: the same seed and times give
//! the same messages, byte for byte.
//!
//! Every device draws from its own random stream (seeded from the run's seed
//! and its id), so a model split across threads ([`SiteModel::split`])
//! produces exactly what the whole model would.
//!
//! Loads follow their drivers: lighting the dark hours at the site's
//! latitude and longitude (garage and corridors partly lit around the
//! clock), water, lifts and gates the occupancy of the day type (weekday
//! peaks, quiet weekends and holidays), HVAC the outdoor temperature,
//! irrigation the season. A retrofit scales the driver-adjusted load from
//! its date on, as a real one does.

use std::collections::BTreeMap;
use std::f64::consts::PI;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use estatemon_domain::config::TopicsConfig;
use estatemon_domain::device::{Device, DeviceKind, Purpose, Registry, Site};
use estatemon_domain::event::{AccessMethod, Direction, LiftState, RescueStep};
use estatemon_domain::Metric;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

use crate::scenario::{Fault, FaultKind, Origin, Scenario};
use crate::truth::{DeviceTruth, InspectionFate, InspectionTruth, RetrofitTruth};
use estatemon_domain::inspection::ItemResult;

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
        /// A temporary card used after its validity.
        expired: bool,
    },
    State(LiftState),
    Fault {
        code: String,
    },
    DoorForced,
    DoorHeldOpen {
        seconds: f64,
    },
    /// The lift's daily alarm-line test call (EN 81-28).
    AlarmTest {
        passed: bool,
    },
    /// A step of an entrapment's rescue.
    Rescue(RescueStep),
    /// A technician puts the lift in maintenance mode with their card.
    MaintenanceMode {
        credential: String,
    },
    /// A technician's inspection, from the patrol app.
    Inspection {
        by: String,
        results: Vec<(String, ItemResult)>,
    },
}

/// The technicians who walk the estate's rounds (the patrol app's names).
pub const TECHNICIANS: [&str; 4] = ["王伟", "李娜", "张强", "陈静"];

/// The card a lift contractor's technician presents at the maintenance
/// switch: with it, a maintenance-mode visit counts as the lift's check.
pub const TECHNICIAN_CARD: &str = "TECH-0001";

/// The local hour at which every lift's alarm unit places its daily test
/// call (EN 81-28 asks for one at least every three days).
pub const ALARM_TEST_HOUR: u32 = 3;

/// When each step of freeing the passenger of an entrapment `fault`
/// happens: the rescue service acknowledges a minute after the alarm, the
/// rescuer is on site after 40 % of the incident (at most 12 minutes), the
/// passenger is released a minute before the lift is back in service (at
/// the fault's end).
pub fn rescue_timeline(fault: &Fault) -> Vec<(RescueStep, DateTime<Utc>)> {
    let length = fault.end - fault.start;
    if fault.kind == FaultKind::LiftFalseAlarm {
        // Acknowledged, looked at, closed as a false alarm at its end.
        return vec![
            (RescueStep::Acknowledged, fault.start + Duration::minutes(1)),
            (RescueStep::FalseAlarm, fault.end),
        ];
    }
    // A late rescuer: when the scenario says (`seconds` after the alarm).
    let on_site = match fault.seconds {
        Some(s) => Duration::milliseconds((s * 1000.0) as i64),
        None => (length * 2 / 5).min(Duration::minutes(12)),
    };
    vec![
        (RescueStep::Acknowledged, fault.start + Duration::minutes(1)),
        (RescueStep::RescuerOnSite, fault.start + on_site),
        (RescueStep::Released, fault.end - Duration::minutes(1)),
    ]
}

/// One MQTT message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Readings (telemetry) or events carried.
    pub items: usize,
    /// The device that sent it.
    pub device: String,
    /// Part of an ordered session (Sparkplug's `seq`): the delivery faults
    /// neither hold it back nor send it twice.
    pub ordered: bool,
}

/// What the whole model shares: the site, its scenario, the cards in use.
struct Shared {
    site: Site,
    tz: Tz,
    scenario: Scenario,
    credentials: Vec<String>,
    temporary_cards: Vec<String>,
    seed: u64,
    /// Registers are published every this many seconds (gauges every step).
    register_interval_s: i64,
}

struct DeviceState {
    device: Device,
    rng: ChaCha8Rng,
    /// For per-day variation that does not depend on the step order.
    key: u64,
    /// What the meter's register shows (kWh, m³, or lift trips).
    register: f64,
    /// Register capacity when a rollover is scheduled.
    capacity: Option<f64>,
    door_cycles: f64,
    /// Rated load: kW for electricity, m³/h for water and gas.
    rated: f64,
    lift_state: LiftState,
    /// Register and gauge frozen by a stuck meter.
    frozen: Option<(f64, f64)>,
    /// Indices into the scenario's retrofits that apply to this device.
    retrofits: Vec<usize>,
    /// Configured and background faults of this device not yet over.
    faults: Vec<Fault>,
    /// Faults that are over (for the ground truth).
    done: Vec<Fault>,
    /// A configured rollover whose register has not wrapped yet.
    rollover_pending: bool,
    initialised: bool,
    /// Start of the first step simulated (no inspection is due before).
    started: DateTime<Utc>,
    /// End of the last step simulated.
    clock: DateTime<Utc>,
    truth: DeviceTruth,
    /// Per applicable retrofit: (counterfactual, actual) since its date.
    retro: Vec<(f64, f64)>,
}

/// A simulated site.
pub struct SiteModel {
    shared: Arc<Shared>,
    devices: Vec<DeviceState>,
}

impl SiteModel {
    /// A quiet site (no scenario): drivers and noise only.
    pub fn new(
        registry: &Registry,
        site: Option<&str>,
        seed: u64,
    ) -> Result<SiteModel, ModelError> {
        SiteModel::with_scenario(registry, site, Scenario::default(), seed, 900)
    }

    pub fn with_scenario(
        registry: &Registry,
        site: Option<&str>,
        scenario: Scenario,
        seed: u64,
        register_interval_s: u64,
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
        let devices = registry
            .devices
            .iter()
            .filter(|d| d.site == site.id)
            .map(|d| {
                let key = mix(seed ^ fnv(&d.id));
                let mut rng = ChaCha8Rng::seed_from_u64(key);
                let retrofits: Vec<usize> = scenario
                    .retrofits
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.devices.contains(&d.id))
                    .map(|(i, _)| i)
                    .collect();
                let mut faults: Vec<Fault> = scenario
                    .faults
                    .iter()
                    .filter(|f| f.device == d.id && !crate::delivery::is_delivery(f.kind))
                    .cloned()
                    .collect();
                faults.sort_by_key(|f| f.start);
                let capacity = faults
                    .iter()
                    .find(|f| f.kind == FaultKind::Rollover)
                    .and_then(|f| f.value);
                DeviceState {
                    register: rng.random_range(1_000.0..50_000.0_f64).round(),
                    door_cycles: rng.random_range(10_000.0..90_000.0_f64).round(),
                    rng,
                    key,
                    capacity,
                    rated: rated_load(d),
                    lift_state: LiftState::Idle,
                    frozen: None,
                    retro: vec![(0.0, 0.0); retrofits.len()],
                    retrofits,
                    rollover_pending: capacity.is_some(),
                    faults,
                    done: Vec::new(),
                    initialised: false,
                    started: DateTime::<Utc>::MIN_UTC,
                    clock: DateTime::<Utc>::MIN_UTC,
                    truth: DeviceTruth::new(d),
                    device: d.clone(),
                }
            })
            .collect();
        let credentials = (0..400)
            .map(|i| format!("CARD-{:05}", 10_000 + i * 7))
            .collect();
        let temporary_cards = (0..40).map(|i| format!("TEMP-{:04}", 500 + i)).collect();
        Ok(SiteModel {
            shared: Arc::new(Shared {
                site: site.clone(),
                tz,
                scenario,
                credentials,
                temporary_cards,
                seed,
                register_interval_s: register_interval_s.max(1) as i64,
            }),
            devices,
        })
    }

    /// Splits the model into `n` models over disjoint sets of devices (for
    /// generating on several threads); together they produce what this one
    /// would have.
    pub fn split(self, n: usize) -> Vec<SiteModel> {
        let n = n.clamp(1, self.devices.len().max(1));
        let mut parts: Vec<Vec<DeviceState>> = (0..n).map(|_| Vec::new()).collect();
        for (i, d) in self.devices.into_iter().enumerate() {
            parts[i % n].push(d);
        }
        parts
            .into_iter()
            .map(|devices| SiteModel {
                shared: self.shared.clone(),
                devices,
            })
            .collect()
    }

    pub fn site(&self) -> &Site {
        &self.shared.site
    }

    pub fn scenario(&self) -> &Scenario {
        &self.shared.scenario
    }

    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    pub fn device_ids(&self) -> Vec<&str> {
        self.devices.iter().map(|d| d.device.id.as_str()).collect()
    }

    /// The ledger entry of a report's `device` index.
    pub fn device(&self, device: usize) -> &estatemon_domain::device::Device {
        &self.devices[device].device
    }

    /// The site's time zone.
    pub fn time_zone(&self) -> Tz {
        self.shared.tz
    }

    /// Device id of a report's `device` index.
    pub fn device_id(&self, device: usize) -> &str {
        &self.devices[device].device.id
    }

    /// Occupancy 0..1 from local time: weekday morning and evening peaks,
    /// quieter weekends and public holidays, near zero at night.
    pub fn occupancy(&self, t: DateTime<Utc>) -> f64 {
        self.shared.occupancy(t)
    }

    /// Outdoor air temperature (°C): the season at the site, the hour, and
    /// the day's weather.
    pub fn outdoor_temperature(&self, t: DateTime<Utc>) -> f64 {
        self.shared.outdoor_temperature(t)
    }

    /// Messages for the interval ending at `t`, `dt` long, as published.
    pub fn step(&mut self, t: DateTime<Utc>, dt: Duration, topics: &TopicsConfig) -> Vec<Message> {
        self.reports(t, dt)
            .iter()
            .map(|r| self.render(r, topics))
            .collect()
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
                        SimEventKind::State(state) => EventDetail::State {
                            state: *state,
                            credential: None,
                        },
                        SimEventKind::Fault { code } => EventDetail::Fault { code: code.clone() },
                        SimEventKind::AlarmTest { passed } => {
                            EventDetail::AlarmTest { passed: *passed }
                        }
                        SimEventKind::Rescue(step) => EventDetail::Rescue { step: *step },
                        SimEventKind::MaintenanceMode { credential } => EventDetail::State {
                            state: LiftState::Maintenance,
                            credential: Some(pseudonymiser.pseudonymise(credential)),
                        },
                        SimEventKind::Inspection { by, results } => EventDetail::Inspection(
                            Box::new(estatemon_domain::inspection::Report {
                                device: self.device_id(*device).to_owned(),
                                by: by.clone(),
                                at: e.ts,
                                results: results.iter().cloned().collect(),
                                readings: BTreeMap::new(),
                                note: None,
                            }),
                        ),
                        SimEventKind::DoorForced => EventDetail::DoorForced,
                        SimEventKind::DoorHeldOpen { seconds } => {
                            EventDetail::DoorHeldOpen { seconds: *seconds }
                        }
                        SimEventKind::Access {
                            granted,
                            method,
                            credential,
                            direction,
                            expired,
                        } => EventDetail::Access {
                            result: if *granted {
                                AccessResult::Granted
                            } else {
                                AccessResult::Denied
                            },
                            method: *method,
                            credential: Some(pseudonymiser.pseudonymise(credential)),
                            direction: Some(*direction),
                            credential_expired: *expired,
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
        let site = &self.shared.site.id;
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
                let id = self.device_id(*device);
                Message {
                    topic: render(&topics.telemetry, site, id),
                    payload: serde_json::to_vec(&body).expect("json"),
                    items: metrics.len(),
                    device: id.to_owned(),
                    ordered: false,
                }
            }
            Report::Events { device, events } => {
                let items: Vec<Value> = events.iter().map(event_json).collect();
                let id = self.device_id(*device);
                Message {
                    topic: render(&topics.events, site, id),
                    payload: serde_json::to_vec(&Value::Array(items)).expect("json"),
                    items: events.len(),
                    device: id.to_owned(),
                    ordered: false,
                }
            }
        }
    }

    /// What every device reports for the interval `(t - dt, t]`.
    pub fn reports(&mut self, t: DateTime<Utc>, dt: Duration) -> Vec<Report> {
        let hours = dt.num_milliseconds() as f64 / 3.6e6;
        let shared = self.shared.clone();
        let site = &shared.site;
        let drivers = shared.drivers(t);
        let (occ, local_hour, temp) = (drivers.occ, drivers.local_hour, drivers.temp);
        let day = day_number(t.with_timezone(&shared.tz).date_naive());
        let with_registers = t.timestamp() % shared.register_interval_s == 0
            || dt.num_seconds() >= shared.register_interval_s;
        let mut out = Vec::new();
        for i in 0..self.devices.len() {
            let d = &mut self.devices[i];
            if !d.initialised {
                d.started = t - dt;
                d.initialise(t, &shared);
            }
            d.clock = t;
            d.retire(t - dt);
            d.draw_background(t, dt, hours, &shared);
            let mut events = d.instant_events(t, dt, &shared);
            // The patrol app's, on the technician's phone: not held back
            // by the device's link nor shifted by its clock.
            let patrol = d.inspections(t, dt, &shared);
            if !patrol.is_empty() {
                d.truth.messages += 1;
                out.push(Report::Events {
                    device: i,
                    events: patrol,
                });
            }
            let offline = d.active(t, FaultKind::MeterOffline).is_some();
            let skew = d
                .active(t, FaultKind::ClockSkew)
                .and_then(|f| f.seconds)
                .map(|s| Duration::milliseconds((s * 1000.0) as i64))
                .unwrap_or_default();
            let ts = t + skew;
            let day_factor = 1.0 + 0.06 * (unit(mix(d.key ^ day)) - 0.5);
            let noise = 1.0 + d.rng.random_range(-0.05..0.05);
            let mut metrics: Vec<(Metric, f64)> = Vec::new();
            match d.device.kind {
                DeviceKind::ElectricityMeter => {
                    let base = base_rate(&d.device, d.rated, &drivers, site) * noise * day_factor;
                    let kw = d.retrofitted(base, hours, t, &shared);
                    let (register, gauge) = d.count(kw, hours, t, dt);
                    if with_registers {
                        metrics.push((Metric::EnergyKwh, round3(register)));
                    }
                    metrics.push((Metric::PowerKw, round3(gauge)));
                }
                DeviceKind::WaterMeter | DeviceKind::GasMeter => {
                    let day_factor = match d.device.purpose {
                        Purpose::Irrigation => 1.0,
                        _ => day_factor,
                    };
                    let base = base_rate(&d.device, d.rated, &drivers, site) * noise * day_factor;
                    let mut flow = d.retrofitted(base, hours, t, &shared);
                    if let Some(leak) = d.active(t, FaultKind::WaterLeak) {
                        flow += leak.value.unwrap_or(0.0);
                    }
                    let (register, gauge) = d.count(flow, hours, t, dt);
                    if with_registers {
                        metrics.push((Metric::VolumeM3, round3(register)));
                    }
                    metrics.push((Metric::FlowM3h, round3(gauge)));
                }
                DeviceKind::Sensor if d.device.purpose == Purpose::FireProtection => {
                    let pressure = match d.active(t, FaultKind::LowPressure) {
                        Some(f) => f.value.unwrap_or(0.42) + 0.005 * (noise - 1.0) * 10.0,
                        None => 0.62 + 0.02 * (noise - 1.0) * 10.0,
                    };
                    metrics.push((Metric::PressureMpa, round3(pressure)));
                }
                DeviceKind::Sensor => {
                    let humidity =
                        (78.0 - 1.5 * (temp - 24.0) + 20.0 * (noise - 1.0)).clamp(20.0, 99.0);
                    metrics.push((Metric::TemperatureC, round3(temp + (noise - 1.0) * 4.0)));
                    metrics.push((Metric::HumidityPct, round3(humidity)));
                }
                DeviceKind::Lift => {
                    // A technician's mode (maintenance, inspection) holds the
                    // lift whatever else happens; out of service stops it.
                    let mode = d.active(t, FaultKind::LiftMaintenance).is_some()
                        || d.active(t, FaultKind::LiftInspection).is_some();
                    let faulted = d.lift_stopped(t) && !mode;
                    let stopped =
                        faulted || mode || d.active(t, FaultKind::LiftOutOfService).is_some();
                    let replaced = d.factor(t, &shared);
                    let duty = shared.scenario.duty_of(&d.device.id);
                    let trips = if stopped {
                        0
                    } else {
                        poisson(&mut d.rng, 40.0 * duty * occ * hours)
                    };
                    // The trip counter restarts from zero (the truth keeps
                    // counting trips).
                    if d.faults.iter().any(|f| {
                        f.kind == FaultKind::CounterReset && f.start > t - dt && f.start <= t
                    }) {
                        d.register = 0.0;
                    }
                    d.register += trips as f64;
                    d.door_cycles += 2.0 * trips as f64;
                    d.truth.consumption += trips as f64;
                    // The motor warms with the work it does; a new drive runs cooler.
                    let load = trips as f64 / (40.0 * hours).max(1e-9);
                    let motor = 26.0
                        + 0.15 * (temp - 24.0)
                        + 20.0 * load * replaced
                        + 3.0 * (noise - 1.0) * 10.0;
                    metrics.push((Metric::Trips, d.register));
                    metrics.push((Metric::DoorCycles, d.door_cycles));
                    metrics.push((Metric::MotorTempC, round3(motor)));
                    let state = if faulted {
                        LiftState::Fault
                    } else if stopped {
                        LiftState::Maintenance
                    } else if trips > 0 {
                        LiftState::Moving
                    } else {
                        LiftState::Idle
                    };
                    if state != d.lift_state && !stopped {
                        d.lift_state = state;
                        events.push(SimEvent {
                            ts: t,
                            kind: SimEventKind::State(state),
                        });
                    }
                }
                DeviceKind::AccessGate => {
                    let n = poisson(&mut d.rng, 90.0 * occ * hours).min(500);
                    let morning = local_hour < 13;
                    let bg = &shared.scenario.background;
                    for k in 0..n {
                        let at = t - Duration::milliseconds(
                            (dt.num_milliseconds() as f64 * (k as f64 + 0.5) / n as f64) as i64,
                        );
                        use AccessMethod::*;
                        let (granted, method, credential, expired) =
                            if d.rng.random_bool(bg.expired_card_share) {
                                let c = &shared.temporary_cards
                                    [d.rng.random_range(0..shared.temporary_cards.len())];
                                (false, Card, c.clone(), true)
                            } else {
                                let method =
                                    [Card, Card, Face, Face, Fingerprint, Bluetooth, Visitor]
                                        [d.rng.random_range(0..7)];
                                let c = &shared.credentials
                                    [d.rng.random_range(0..shared.credentials.len())];
                                (
                                    !d.rng.random_bool(bg.denied_share),
                                    method,
                                    c.clone(),
                                    false,
                                )
                            };
                        let direction = if d.rng.random_bool(if morning { 0.3 } else { 0.7 }) {
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
                                expired,
                            },
                        });
                    }
                }
                DeviceKind::Unknown => {}
            }
            if offline {
                continue;
            }
            if !metrics.is_empty() {
                d.truth.readings += metrics.len() as u64;
                d.truth.messages += 1;
                out.push(Report::Telemetry {
                    device: i,
                    ts,
                    metrics,
                });
            }
            if !events.is_empty() {
                events.sort_by_key(|e| e.ts);
                for e in &mut events {
                    e.ts += skew;
                }
                d.truth.events += events.len() as u64;
                d.truth.messages += 1;
                out.push(Report::Events { device: i, events });
            }
        }
        out
    }

    /// Current register values.
    pub fn registers(&self) -> BTreeMap<String, f64> {
        self.devices
            .iter()
            .map(|d| (d.device.id.clone(), d.register))
            .collect()
    }

    /// Every fault that has begun so far (configured and background), with
    /// its device and interval.
    pub fn faults(&self) -> Vec<Fault> {
        self.devices
            .iter()
            .flat_map(|d| {
                d.done.iter().chain(d.faults.iter().filter(|f| {
                    !(f.kind == FaultKind::Rollover && d.rollover_pending) && f.start <= d.clock
                }))
            })
            .cloned()
            .collect()
    }

    /// What each device sent and consumed so far.
    pub fn device_truth(&self) -> BTreeMap<String, DeviceTruth> {
        self.devices
            .iter()
            .map(|d| (d.device.id.clone(), d.truth.clone()))
            .collect()
    }

    /// Per retrofit: what its devices would have used since its date, and
    /// what they used (this model's devices only; see [`crate::truth`]).
    pub fn retrofit_truth(&self) -> Vec<RetrofitTruth> {
        let scenario = &self.shared.scenario;
        scenario
            .retrofits
            .iter()
            .enumerate()
            .map(|(ri, r)| {
                let (mut cf, mut actual) = (0.0, 0.0);
                let mut faults_before = 0u64;
                let mut faults_after = 0u64;
                for d in &self.devices {
                    if let Some(k) = d.retrofits.iter().position(|&x| x == ri) {
                        if matches!(d.device.kind, DeviceKind::Lift) {
                            for f in d.done.iter().chain(&d.faults).filter(|f| {
                                f.start <= d.clock
                                    && matches!(
                                        f.kind,
                                        FaultKind::LiftFault | FaultKind::LiftEntrapment
                                    )
                            }) {
                                if f.start < r.at {
                                    faults_before += 1;
                                } else {
                                    faults_after += 1;
                                }
                            }
                        } else {
                            cf += d.retro[k].0;
                            actual += d.retro[k].1;
                        }
                    }
                }
                RetrofitTruth::new(r, cf, actual, faults_before, faults_after)
            })
            .collect()
    }
}

impl Shared {
    fn is_day_off(&self, date: NaiveDate) -> bool {
        matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
            || self.scenario.holidays.contains(&date)
    }

    /// Occupancy 0..1 from local time: weekday morning and evening peaks,
    /// quieter weekends and public holidays, near zero at night.
    fn occupancy(&self, t: DateTime<Utc>) -> f64 {
        let local = t.with_timezone(&self.tz);
        let h = local.hour() as f64 + local.minute() as f64 / 60.0;
        let bump = |centre: f64, width: f64| (-((h - centre) / width).powi(2)).exp();
        let base = if (0.5..6.0).contains(&h) { 0.04 } else { 0.25 };
        if self.is_day_off(local.date_naive()) {
            (base + 0.45 * bump(11.0, 3.0) + 0.4 * bump(18.0, 2.5)).min(1.0)
        } else {
            (base + 0.75 * bump(8.3, 1.0) + 0.85 * bump(18.8, 1.3)).min(1.0)
        }
    }

    /// Outdoor air temperature (°C): the season at the site, the hour, and
    /// the day's weather.
    fn outdoor_temperature(&self, t: DateTime<Utc>) -> f64 {
        let local = t.with_timezone(&self.tz);
        let doy = local.ordinal() as f64;
        let h = local.hour() as f64 + local.minute() as f64 / 60.0;
        let lat = self.site.latitude;
        // Hotter and less seasonal near the equator; seasons flip south of it.
        let mean = 28.0 - 0.3 * lat.abs();
        let swing = (0.2 * lat.abs()).min(12.0) * lat.signum();
        let weather = 3.0 * (unit(mix(self.seed ^ day_number(local.date_naive()))) - 0.5);
        mean + swing * (2.0 * PI * (doy - 200.0) / 365.25).cos()
            + 2.5 * (2.0 * PI * (h - 15.0) / 24.0).cos()
            + weather
    }

    fn drivers(&self, t: DateTime<Utc>) -> Drivers {
        let local = t.with_timezone(&self.tz);
        Drivers {
            occ: self.occupancy(t),
            dark: crate::sun::is_dark(t, self.site.latitude, self.site.longitude),
            local_hour: local.hour(),
            month: local.month(),
            temp: self.outdoor_temperature(t),
        }
    }
}

/// The drivers of one step, shared by all devices.
struct Drivers {
    occ: f64,
    dark: bool,
    local_hour: u32,
    month: u32,
    temp: f64,
}

mod device;
#[cfg(test)]
mod tests;

fn rated_load(d: &Device) -> f64 {
    match (d.kind, d.purpose, d.area.as_str()) {
        (DeviceKind::ElectricityMeter, Purpose::PublicLighting, "garage") => 16.0,
        (DeviceKind::ElectricityMeter, Purpose::PublicLighting, "corridor") => 8.0,
        (DeviceKind::ElectricityMeter, Purpose::PublicLighting, "stairwell") => 3.0,
        (DeviceKind::ElectricityMeter, Purpose::PublicLighting, "landscape") => 6.0,
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

/// What a meter's load would be now without retrofits or noise: kW, or
/// m³/h for water and gas.
fn base_rate(d: &Device, rated: f64, x: &Drivers, site: &Site) -> f64 {
    match (d.kind, d.purpose) {
        (DeviceKind::ElectricityMeter, _) => electric_load(d, rated, x),
        (_, Purpose::Irrigation) if (6..7).contains(&x.local_hour) => {
            rated * irrigation_season(x.month, site.latitude)
        }
        (_, Purpose::Irrigation) => 0.0,
        _ => rated * (0.08 + 0.92 * x.occ),
    }
}

/// Fraction of rated power drawn now. Garage, corridor and stairwell lights
/// are partly on around the clock (safety lighting); lobby lights follow
/// darkness; landscape lights are on from dusk to 23:00.
fn electric_load(d: &Device, rated: f64, x: &Drivers) -> f64 {
    let dark = if x.dark { 1.0 } else { 0.0 };
    let share = match (d.purpose, d.area.as_str()) {
        (Purpose::PublicLighting, "garage") => 0.55 + 0.45 * dark,
        (Purpose::PublicLighting, "corridor") => 0.3 + 0.7 * dark,
        (Purpose::PublicLighting, "stairwell") => 0.2 + 0.8 * dark,
        (Purpose::PublicLighting, "landscape") => {
            if x.dark && x.local_hour >= 12 && x.local_hour < 23 {
                1.0
            } else {
                0.0
            }
        }
        (Purpose::PublicLighting, _) => 0.05 + 0.95 * dark,
        (Purpose::Lifts, _) => 0.1 + 0.9 * x.occ,
        (Purpose::Pumps, _) => 0.35 + 0.65 * x.occ,
        (Purpose::Hvac, _) => {
            let cooling = ((x.temp - 18.0) / 14.0).clamp(0.0, 1.0);
            0.08 + 0.92 * cooling * (0.4 + 0.6 * x.occ)
        }
        _ => 0.3 + 0.7 * x.occ,
    };
    rated * share
}

/// Irrigation runs longer in the dry season: the cooler half of the year
/// in the northern subtropics (mirrored south of the equator).
fn irrigation_season(month: u32, latitude: f64) -> f64 {
    let m = if latitude < 0.0 {
        (month + 5) % 12 + 1
    } else {
        month
    };
    match m {
        11 | 12 | 1 | 2 | 3 => 1.0,
        4 | 10 => 0.7,
        _ => 0.35,
    }
}

fn event_json(e: &SimEvent) -> Value {
    let ts = e.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    match &e.kind {
        SimEventKind::State(state) => json!({"ts": ts, "type": "state", "state": state.as_str()}),
        SimEventKind::Fault { code } => json!({"ts": ts, "type": "fault", "code": code}),
        SimEventKind::DoorForced => json!({"ts": ts, "type": "door_forced"}),
        SimEventKind::AlarmTest { passed } => json!({"ts": ts, "type": "alarm_test",
            "result": if *passed { "passed" } else { "failed" }}),
        SimEventKind::Rescue(step) => json!({"ts": ts, "type": "rescue", "step": step.as_str()}),
        SimEventKind::MaintenanceMode { credential } => json!({"ts": ts, "type": "state",
            "state": "maintenance", "credential": credential}),
        SimEventKind::Inspection { by, results } => {
            let results: Map<String, Value> = results
                .iter()
                .map(|(k, r)| (k.clone(), json!(r.as_str())))
                .collect();
            json!({"ts": ts, "type": "inspection", "by": by, "results": results})
        }
        SimEventKind::DoorHeldOpen { seconds } => {
            json!({"ts": ts, "type": "door_held_open", "seconds": seconds})
        }
        SimEventKind::Access {
            granted,
            method,
            credential,
            direction,
            expired,
        } => {
            let mut v = json!({
                "ts": ts,
                "type": "access",
                "result": if *granted { "granted" } else { "denied" },
                "method": method.as_str(),
                "credential": credential,
                "direction": direction.as_str(),
            });
            if *expired {
                v["credential_expired"] = json!(true);
            }
            v
        }
    }
}

fn render(template: &str, site: &str, device: &str) -> String {
    template
        .replace("{site}", site)
        .replace("{device_id}", device)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Days since 1970-01-01 of a local date.
fn day_number(d: NaiveDate) -> u64 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as u64
}

/// FNV-1a of a device id.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// SplitMix64 finaliser: a well-spread hash of a 64-bit key.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hash mapped to [0, 1).
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Poisson sample (Knuth for small means, normal approximation above 30).
fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> usize {
    if mean <= 0.0 {
        return 0;
    }
    if mean > 30.0 {
        let u1: f64 = rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos();
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
