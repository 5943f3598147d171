//! Scenarios: what a simulated site goes through, read from the
//! `[scenario]` table of its site file. Retrofits on given dates, faults in
//! given intervals, background incidents at given rates (lift faults, doors
//! held open …), delivery faults (duplicates, out-of-order, malformed
//! messages) and the site's public holidays.
//!
//! ```toml
//! [scenario]
//! holidays = [2026-01-01, 2026-02-17]
//!
//! [[scenario.retrofit]]
//! name = "LED lighting: garage"
//! kind = "lighting"
//! date = 2026-04-01            # site local time
//! saving = 0.45
//! select = { area = "garage", purpose = "public_lighting" }
//!
//! [[scenario.fault]]
//! kind = "lift_entrapment"
//! device = "hv-a-lift-1"
//! start = 2026-02-10T03:12:00  # site local time (or with an offset)
//! minutes = 25
//! ```
//!
//! Times without an offset are the site's local time; a bare date is local
//! midnight. Everything is checked against the site's devices on load, and
//! errors name the file, line and field.

use std::collections::HashSet;
use std::path::Path;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use estatemon_domain::config::{line_of, locate_error, ConfigError};
use estatemon_domain::device::{Device, DeviceKind, Purpose, Registry};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize)]
struct File {
    #[serde(default)]
    scenario: ScenarioFile,
}

/// The `[scenario]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    #[serde(default)]
    holidays: Vec<toml::value::Datetime>,
    #[serde(default)]
    background: Background,
    #[serde(default)]
    delivery: DeliveryFaults,
    #[serde(default, rename = "retrofit")]
    retrofits: Vec<RetrofitSpec>,
    #[serde(default, rename = "fault")]
    faults: Vec<FaultSpec>,
    #[serde(default, rename = "device")]
    devices: Vec<DeviceOverride>,
}

/// One device's own rates, in place of the background's (`[[scenario.device]]`):
/// a busy lift and a quiet one, a lift that fails often, a device whose
/// inspections are often late.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceOverride {
    pub id: String,
    /// A lift's trips relative to the site's (1.0: as busy as the others).
    pub duty: Option<f64>,
    pub lift_faults_per_year: Option<f64>,
    pub entrapments_per_year: Option<f64>,
    pub late_inspection_share: Option<f64>,
    pub missed_inspection_share: Option<f64>,
}

/// Incidents that happen at random, at these rates (per device of the
/// relevant kind). Each one that happens is recorded in the ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Background {
    /// Lift faults (door, levelling, overspeed) per lift per year.
    pub lift_faults_per_year: f64,
    /// Entrapments per lift per year.
    pub entrapments_per_year: f64,
    /// Doors held open per gate per week.
    pub doors_held_open_per_week: f64,
    /// Doors forced per gate per year.
    pub doors_forced_per_year: f64,
    /// Bursts of denied swipes by one credential per gate per year.
    pub denied_bursts_per_year: f64,
    /// Share of swipes that are denied.
    pub denied_share: f64,
    /// Share of swipes by an expired temporary card (always denied).
    pub expired_card_share: f64,
    /// Technicians walk their rounds: every tracked device (a class or an
    /// inspection cycle) is inspected through the patrol app, each window
    /// on time but for the shares below.
    pub patrol_inspections: bool,
    /// Share of a tracked device's inspection windows inspected late
    /// (after the window, within half a window).
    pub late_inspection_share: f64,
    /// Share of its windows nobody inspected.
    pub missed_inspection_share: f64,
}

impl Default for Background {
    fn default() -> Self {
        Background {
            lift_faults_per_year: 0.0,
            entrapments_per_year: 0.0,
            doors_held_open_per_week: 0.0,
            doors_forced_per_year: 0.0,
            denied_bursts_per_year: 0.0,
            denied_share: 0.04,
            expired_card_share: 0.0,
            patrol_inspections: false,
            late_inspection_share: 0.0,
            missed_inspection_share: 0.0,
        }
    }
}

/// Faults of delivery rather than of devices, applied on the way to the
/// broker (never in direct backfills, which bypass MQTT).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryFaults {
    /// Share of messages published twice.
    pub duplicate_share: f64,
    /// Share of messages held back and published a few steps late.
    pub late_share: f64,
    /// Malformed messages per day, spread over the site's devices.
    pub malformed_per_day: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetrofitKind {
    /// LED lighting, zoning, timed dimming: cuts lighting energy.
    Lighting,
    /// Sensor taps, grey water, sprinklers: cuts water use.
    Water,
    /// New lifts: cuts lift energy and faults.
    Lift,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrofitSpec {
    name: String,
    kind: RetrofitKind,
    date: toml::value::Datetime,
    /// Fraction of the driver-adjusted load saved, 0..1.
    saving: f64,
    /// The target the owners set (reports compare savings with it).
    target: Option<f64>,
    /// Lifts only: fraction of faults avoided (0.8 for −80 %).
    fault_reduction: Option<f64>,
    select: Selector,
}

/// Which devices something applies to; every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<DeviceKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub building: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub area: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<Purpose>,
}

impl Selector {
    pub fn matches(&self, d: &Device) -> bool {
        (self.devices.is_empty() || self.devices.contains(&d.id))
            && self.kind.is_none_or(|k| k == d.kind)
            && self
                .building
                .as_ref()
                .is_none_or(|b| d.building.as_ref() == Some(b))
            && self.area.as_ref().is_none_or(|a| *a == d.area)
            && self.purpose.is_none_or(|p| p == d.purpose)
    }
}

/// What can go wrong, and where it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A passenger trapped in a lift (困人): fault event, lift stops.
    LiftEntrapment,
    /// Any other lift fault (`code`, default `door_fault`).
    LiftFault,
    /// A gate's door opened without a valid swipe.
    DoorForced,
    /// A gate's door held open for `seconds`.
    DoorHeldOpen,
    /// Several denied swipes of one credential at one gate in a few minutes.
    DeniedBurst,
    /// Extra flow of `value` m³/h on a water meter (a leak).
    WaterLeak,
    /// The register and the gauge freeze; consumption meanwhile is lost.
    MeterStuck,
    /// The device publishes nothing; its register keeps counting.
    MeterOffline,
    /// The register restarts from zero.
    CounterReset,
    /// The register wraps at its capacity `value` (default 99 999.9);
    /// the simulator starts it so that the wrap falls near `start`.
    Rollover,
    /// A new meter whose register starts at `value` (default 0).
    MeterReplacement,
    /// Fire-main pressure falls to `value` MPa (default 0.42).
    LowPressure,
    /// The device's clock runs `seconds` ahead (negative: behind).
    ClockSkew,
    /// Every message of the device is published twice.
    Duplicate,
    /// The device's messages are held back and published late, out of order.
    OutOfOrder,
    /// The device publishes a malformed message.
    Malformed,
    /// A lift in maintenance (a technician's visit): state `maintenance`
    /// from start to end, no trips meanwhile.
    LiftMaintenance,
    /// A lift's alarm line is down: no test calls (EN 81-28) get through.
    AlarmLineDown,
    /// The lift's test calls get through and fail (`alarm_test` failed).
    AlarmTestFailed,
    /// A lift out of service (state `out_of_service`): down, no trips.
    LiftOutOfService,
    /// A lift under inspection (state `inspection`, a technician's card):
    /// planned, no trips.
    LiftInspection,
    /// An entrapment alarm that was false: the alarm, the rescue service's
    /// acknowledgement, and `false_alarm` at the end; the lift stays in
    /// service.
    LiftFalseAlarm,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::LiftEntrapment => "lift_entrapment",
            FaultKind::LiftFault => "lift_fault",
            FaultKind::DoorForced => "door_forced",
            FaultKind::DoorHeldOpen => "door_held_open",
            FaultKind::DeniedBurst => "denied_burst",
            FaultKind::WaterLeak => "water_leak",
            FaultKind::MeterStuck => "meter_stuck",
            FaultKind::MeterOffline => "meter_offline",
            FaultKind::CounterReset => "counter_reset",
            FaultKind::Rollover => "rollover",
            FaultKind::MeterReplacement => "meter_replacement",
            FaultKind::LowPressure => "low_pressure",
            FaultKind::ClockSkew => "clock_skew",
            FaultKind::Duplicate => "duplicate",
            FaultKind::OutOfOrder => "out_of_order",
            FaultKind::Malformed => "malformed",
            FaultKind::AlarmTestFailed => "alarm_test_failed",
            FaultKind::LiftOutOfService => "lift_out_of_service",
            FaultKind::LiftInspection => "lift_inspection",
            FaultKind::LiftFalseAlarm => "lift_false_alarm",
            FaultKind::LiftMaintenance => "lift_maintenance",
            FaultKind::AlarmLineDown => "alarm_line_down",
        }
    }

    /// Faults that last (and need `minutes`); the others are instants.
    pub fn has_duration(self) -> bool {
        matches!(
            self,
            FaultKind::LiftEntrapment
                | FaultKind::LiftFault
                | FaultKind::WaterLeak
                | FaultKind::MeterStuck
                | FaultKind::MeterOffline
                | FaultKind::LowPressure
                | FaultKind::ClockSkew
                | FaultKind::Duplicate
                | FaultKind::OutOfOrder
                | FaultKind::LiftMaintenance
                | FaultKind::AlarmLineDown
                | FaultKind::AlarmTestFailed
                | FaultKind::LiftOutOfService
                | FaultKind::LiftInspection
                | FaultKind::LiftFalseAlarm
        )
    }

    /// Which devices can have this fault.
    fn fits(self, d: &Device) -> bool {
        use DeviceKind::*;
        match self {
            FaultKind::LiftEntrapment
            | FaultKind::LiftFault
            | FaultKind::LiftMaintenance
            | FaultKind::AlarmLineDown
            | FaultKind::AlarmTestFailed
            | FaultKind::LiftOutOfService
            | FaultKind::LiftInspection
            | FaultKind::LiftFalseAlarm => d.kind == Lift,
            // A lift's trip counter restarts too.
            FaultKind::CounterReset => {
                matches!(d.kind, ElectricityMeter | WaterMeter | GasMeter | Lift)
            }
            FaultKind::DoorForced | FaultKind::DoorHeldOpen | FaultKind::DeniedBurst => {
                d.kind == AccessGate
            }
            FaultKind::WaterLeak => d.kind == WaterMeter,
            FaultKind::MeterStuck | FaultKind::Rollover | FaultKind::MeterReplacement => {
                matches!(d.kind, ElectricityMeter | WaterMeter | GasMeter)
            }
            FaultKind::LowPressure => d.kind == Sensor && d.purpose == Purpose::FireProtection,
            FaultKind::MeterOffline
            | FaultKind::ClockSkew
            | FaultKind::Duplicate
            | FaultKind::OutOfOrder
            | FaultKind::Malformed => d.kind != DeviceKind::Unknown,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    kind: FaultKind,
    device: String,
    start: toml::value::Datetime,
    minutes: Option<f64>,
    seconds: Option<f64>,
    value: Option<f64>,
    code: Option<String>,
}

/// A retrofit, resolved against the site.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retrofit {
    pub name: String,
    pub kind: RetrofitKind,
    pub at: DateTime<Utc>,
    pub saving: f64,
    pub target: Option<f64>,
    pub fault_reduction: f64,
    pub select: Selector,
    /// The devices it applies to.
    pub devices: Vec<String>,
}

/// A fault, resolved against the site: UTC interval, parameters filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub device: String,
    pub start: DateTime<Utc>,
    /// Equal to `start` for instantaneous faults.
    pub end: DateTime<Utc>,
    /// Flow (m³/h), pressure (MPa), capacity or start value, as the kind says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Seconds held open, or clock offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Lift fault code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Configured in the site file, or drawn by the background rates.
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Configured,
    Background,
}

impl Fault {
    pub fn active(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

/// Everything a site goes through, checked against its devices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scenario {
    pub holidays: HashSet<NaiveDate>,
    pub background: Background,
    pub delivery: DeliveryFaults,
    pub retrofits: Vec<Retrofit>,
    pub faults: Vec<Fault>,
    /// Devices with their own rates (`[[scenario.device]]`).
    pub overrides: std::collections::HashMap<String, DeviceOverride>,
}

impl Scenario {
    /// The background of one device: the site's, with its own rates in
    /// place where `[[scenario.device]]` gives them.
    pub fn background_of(&self, device: &str) -> Background {
        let mut b = self.background.clone();
        if let Some(o) = self.overrides.get(device) {
            b.lift_faults_per_year = o.lift_faults_per_year.unwrap_or(b.lift_faults_per_year);
            b.entrapments_per_year = o.entrapments_per_year.unwrap_or(b.entrapments_per_year);
            b.late_inspection_share = o.late_inspection_share.unwrap_or(b.late_inspection_share);
            b.missed_inspection_share = o
                .missed_inspection_share
                .unwrap_or(b.missed_inspection_share);
        }
        b
    }

    /// A lift's duty relative to the site's (1.0 unless overridden).
    pub fn duty_of(&self, device: &str) -> f64 {
        self.overrides
            .get(device)
            .and_then(|o| o.duty)
            .unwrap_or(1.0)
    }
}

impl Scenario {
    /// Reads the `[scenario]` table of a site file (none: a quiet site).
    pub fn parse(
        text: &str,
        path: &Path,
        registry: &Registry,
        site: &str,
    ) -> Result<Scenario, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| locate_error(path, text, &e))?;
        let f = file.scenario;
        let site = registry
            .sites
            .iter()
            .find(|s| s.id == site)
            .ok_or_else(|| ConfigError::Invalid {
                path: path.to_owned(),
                line: None,
                field: "site".into(),
                message: format!("no site `{site}` in the file"),
            })?;
        let tz: Tz = site.time_zone.parse().map_err(|_| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, "time_zone"),
            field: "site.time_zone".into(),
            message: format!("`{}` is not an IANA time zone", site.time_zone),
        })?;
        let devices: Vec<&Device> = registry
            .devices
            .iter()
            .filter(|d| d.site == site.id)
            .collect();
        let invalid = |header: &str, n: usize, field: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: nth_line(text, header, n),
            field: field.to_owned(),
            message,
        };
        let fraction = |x: f64| x.is_finite() && (0.0..1.0).contains(&x);

        let mut holidays = HashSet::new();
        for h in &f.holidays {
            let at =
                resolve_time(h, tz).map_err(|m| invalid("holidays", 0, "scenario.holidays", m))?;
            holidays.insert(at.with_timezone(&tz).date_naive());
        }
        let b = &f.background;
        for (name, v) in [
            ("lift_faults_per_year", b.lift_faults_per_year),
            ("entrapments_per_year", b.entrapments_per_year),
            ("doors_held_open_per_week", b.doors_held_open_per_week),
            ("doors_forced_per_year", b.doors_forced_per_year),
            ("denied_bursts_per_year", b.denied_bursts_per_year),
            ("malformed_per_day", f.delivery.malformed_per_day),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(
                    name,
                    0,
                    &format!("scenario.{name}"),
                    format!("must be a rate of at least 0, not {v}"),
                ));
            }
        }
        for (name, v) in [
            ("denied_share", b.denied_share),
            ("expired_card_share", b.expired_card_share),
            ("duplicate_share", f.delivery.duplicate_share),
            ("late_share", f.delivery.late_share),
            ("late_inspection_share", b.late_inspection_share),
            ("missed_inspection_share", b.missed_inspection_share),
            (
                "late_inspection_share + missed_inspection_share",
                b.late_inspection_share + b.missed_inspection_share,
            ),
        ] {
            if !fraction(v) {
                return Err(invalid(
                    name,
                    0,
                    &format!("scenario.{name}"),
                    format!("must be a fraction in [0, 1), not {v}"),
                ));
            }
        }

        let mut retrofits = Vec::new();
        for (n, r) in f.retrofits.iter().enumerate() {
            let here = |field: &str, m: String| {
                invalid(
                    "[[scenario.retrofit]]",
                    n,
                    &format!("scenario.retrofit[{n}].{field}"),
                    m,
                )
            };
            let at = resolve_time(&r.date, tz).map_err(|m| here("date", m))?;
            if !fraction(r.saving) || r.saving == 0.0 {
                return Err(here(
                    "saving",
                    format!("must be a fraction in (0, 1), not {}", r.saving),
                ));
            }
            let fault_reduction = r.fault_reduction.unwrap_or(0.0);
            if !(0.0..=1.0).contains(&fault_reduction) {
                return Err(here(
                    "fault_reduction",
                    format!("must be a fraction in [0, 1], not {fault_reduction}"),
                ));
            }
            let chosen: Vec<String> = devices
                .iter()
                .filter(|d| r.select.matches(d) && retrofit_applies(r.kind, d))
                .map(|d| d.id.clone())
                .collect();
            if chosen.is_empty() {
                return Err(here(
                    "select",
                    "selects no device this kind of retrofit applies to".into(),
                ));
            }
            retrofits.push(Retrofit {
                name: r.name.clone(),
                kind: r.kind,
                at,
                saving: r.saving,
                target: r.target,
                fault_reduction,
                select: r.select.clone(),
                devices: chosen,
            });
        }

        let mut faults = Vec::new();
        for (n, s) in f.faults.iter().enumerate() {
            let here = |field: &str, m: String| {
                invalid(
                    "[[scenario.fault]]",
                    n,
                    &format!("scenario.fault[{n}].{field}"),
                    m,
                )
            };
            let device = devices
                .iter()
                .find(|d| d.id == s.device)
                .ok_or_else(|| here("device", format!("no device `{}` at this site", s.device)))?;
            if !s.kind.fits(device) {
                return Err(here(
                    "kind",
                    format!(
                        "`{}` cannot happen to `{}`, a {}",
                        s.kind.as_str(),
                        device.id,
                        device.kind.as_str()
                    ),
                ));
            }
            let start = resolve_time(&s.start, tz).map_err(|m| here("start", m))?;
            let end = if s.kind.has_duration() {
                match s.minutes {
                    Some(m) if m.is_finite() && m > 0.0 => {
                        start + chrono::Duration::milliseconds((m * 60_000.0) as i64)
                    }
                    _ => return Err(here("minutes", "a positive duration is required".into())),
                }
            } else {
                start
            };
            let (value, seconds, code) = match s.kind {
                FaultKind::WaterLeak => (Some(s.value.unwrap_or(1.5)), None, None),
                FaultKind::LowPressure => (Some(s.value.unwrap_or(0.42)), None, None),
                FaultKind::Rollover => (Some(s.value.unwrap_or(99_999.9)), None, None),
                FaultKind::MeterReplacement => (Some(s.value.unwrap_or(0.0)), None, None),
                FaultKind::DoorHeldOpen => (None, Some(s.seconds.unwrap_or(120.0)), None),
                FaultKind::ClockSkew => (None, Some(s.seconds.unwrap_or(300.0)), None),
                // `seconds`: when the rescuer reaches the lift after the
                // alarm (a late rescuer), else 40 % of the incident.
                FaultKind::LiftEntrapment => (None, s.seconds, Some("entrapment".to_owned())),
                FaultKind::LiftFalseAlarm => (None, None, Some("entrapment".to_owned())),
                // `code = "no_card"`: a visit without a technician's card
                // (it does not count as the lift's check).
                FaultKind::LiftMaintenance => match s.code.as_deref() {
                    None => (None, None, None),
                    Some("no_card") => (None, None, Some("no_card".to_owned())),
                    Some(other) => {
                        return Err(here(
                            "code",
                            format!("`{other}`: a maintenance visit takes only `no_card`"),
                        ))
                    }
                },
                FaultKind::LiftFault => (
                    None,
                    None,
                    Some(
                        s.code
                            .clone()
                            .unwrap_or_else(|| "door_fault".into())
                            .to_ascii_lowercase(),
                    ),
                ),
                _ => (s.value, s.seconds, None),
            };
            if value.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err(here("value", "must be a number of at least 0".into()));
            }
            if seconds.is_some_and(|v| !v.is_finite()) {
                return Err(here("seconds", "must be a number".into()));
            }
            if s.kind == FaultKind::LiftEntrapment
                && seconds.is_some_and(|v| v <= 0.0 || v >= (end - start).num_seconds() as f64)
            {
                return Err(here(
                    "seconds",
                    "the rescuer arrives after the alarm and before the release".into(),
                ));
            }
            faults.push(Fault {
                kind: s.kind,
                device: device.id.clone(),
                start,
                end,
                value,
                seconds,
                code,
                origin: Origin::Configured,
            });
        }
        let mut overrides = std::collections::HashMap::new();
        for (n, o) in f.devices.into_iter().enumerate() {
            let here = |field: &str, m: String| {
                invalid(
                    "[[scenario.device]]",
                    n,
                    &format!("scenario.device[{n}].{field}"),
                    m,
                )
            };
            if !devices.iter().any(|d| d.id == o.id) {
                return Err(here("id", format!("no device `{}` at this site", o.id)));
            }
            for (name, v) in [
                ("duty", o.duty),
                ("lift_faults_per_year", o.lift_faults_per_year),
                ("entrapments_per_year", o.entrapments_per_year),
            ] {
                if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                    return Err(here(name, "must be at least 0".into()));
                }
            }
            for (name, v) in [
                ("late_inspection_share", o.late_inspection_share),
                ("missed_inspection_share", o.missed_inspection_share),
            ] {
                if v.is_some_and(|v| !fraction(v)) {
                    return Err(here(name, "must be a share from 0 to below 1".into()));
                }
            }
            overrides.insert(o.id.clone(), o);
        }
        Ok(Scenario {
            holidays,
            background: f.background,
            delivery: f.delivery,
            retrofits,
            faults,
            overrides,
        })
    }
}

/// A site to simulate: its devices and what it goes through.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    pub registry: Registry,
    pub scenario: Scenario,
    /// The site of the registry to simulate.
    pub site: String,
}

impl SiteSpec {
    /// A site file (the shipped default site when `None`); `quiet` drops
    /// its scenario (drivers and noise only).
    pub fn load(
        path: Option<&Path>,
        site: Option<&str>,
        quiet: bool,
    ) -> Result<SiteSpec, ConfigError> {
        let (text, path) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Io {
                    path: p.to_owned(),
                    source,
                })?,
                p.to_owned(),
            ),
            None => (
                crate::DEFAULT_SITE.to_owned(),
                Path::new(crate::DEFAULT_SITE_NAME).to_owned(),
            ),
        };
        let registry = Registry::parse(&text, &path)?;
        let site = match site {
            Some(s) => s.to_owned(),
            None => registry
                .sites
                .first()
                .map(|s| s.id.clone())
                .ok_or_else(|| ConfigError::Invalid {
                    path: path.clone(),
                    line: None,
                    field: "site".into(),
                    message: "the file has no [[site]]".into(),
                })?,
        };
        let scenario = if quiet {
            Scenario::default()
        } else {
            Scenario::parse(&text, &path, &registry, &site)?
        };
        Ok(SiteSpec {
            registry,
            scenario,
            site,
        })
    }

    /// A synthetic estate of `devices` devices, with the default site's
    /// background incident rates (lift faults, doors held open …) and no
    /// retrofits or delivery faults.
    pub fn synthetic(devices: usize) -> SiteSpec {
        let registry = crate::site::synthetic_estate(devices);
        let default = SiteSpec::load(None, None, false).expect("the shipped site is valid");
        SiteSpec {
            site: registry.sites[0].id.clone(),
            registry,
            scenario: Scenario {
                background: default.scenario.background,
                ..Scenario::default()
            },
        }
    }
}

/// Which devices a retrofit of this kind changes.
fn retrofit_applies(kind: RetrofitKind, d: &Device) -> bool {
    match kind {
        RetrofitKind::Lighting => {
            d.kind == DeviceKind::ElectricityMeter && d.purpose == Purpose::PublicLighting
        }
        RetrofitKind::Water => d.kind == DeviceKind::WaterMeter,
        RetrofitKind::Lift => {
            d.purpose == Purpose::Lifts
                && matches!(d.kind, DeviceKind::ElectricityMeter | DeviceKind::Lift)
        }
    }
}

/// A TOML date or date-time: with an offset it is exact; without one it is
/// the site's local time; a bare date is local midnight.
fn resolve_time(dt: &toml::value::Datetime, tz: Tz) -> Result<DateTime<Utc>, String> {
    let text = dt.to_string();
    if let Ok(t) = DateTime::parse_from_rfc3339(&text) {
        return Ok(t.with_timezone(&Utc));
    }
    let local = NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S"))
        .or_else(|_| {
            NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight"))
        })
        .map_err(|_| format!("`{text}` is not a date or date-time"))?;
    tz.from_local_datetime(&local)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| format!("`{text}` does not exist in {tz}"))
}

/// Line of the `n`-th (0-based) line containing `needle`.
fn nth_line(text: &str, needle: &str, n: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(n)
        .map(|(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry::parse(crate::DEFAULT_SITE, Path::new("default")).unwrap()
    }

    #[test]
    fn the_default_site_scenario_resolves() {
        let s = Scenario::parse(
            crate::DEFAULT_SITE,
            Path::new("default"),
            &registry(),
            "harbour-view",
        )
        .unwrap();
        assert!(s.retrofits.len() >= 4, "{:?}", s.retrofits);
        let garage = s
            .retrofits
            .iter()
            .find(|r| r.devices == ["hv-garage-light"])
            .expect("garage retrofit");
        assert_eq!(garage.saving, 0.45);
        assert!(s.faults.iter().any(|f| f.kind == FaultKind::LiftEntrapment));
        assert!(!s.holidays.is_empty());
    }

    #[test]
    fn local_times_are_site_time() {
        let tz: Tz = "Asia/Hong_Kong".parse().unwrap();
        let dt: toml::value::Datetime = "2026-02-10T03:12:00".parse().unwrap();
        assert_eq!(
            resolve_time(&dt, tz).unwrap().to_rfc3339(),
            "2026-02-09T19:12:00+00:00"
        );
        let d: toml::value::Datetime = "2026-04-01".parse().unwrap();
        assert_eq!(
            resolve_time(&d, tz).unwrap().to_rfc3339(),
            "2026-03-31T16:00:00+00:00"
        );
    }

    #[test]
    fn errors_name_line_and_field() {
        let text = format!(
            "{}\n[[scenario.fault]]\nkind = \"lift_entrapment\"\ndevice = \"hv-gas\"\nstart = 2026-01-01T00:00:00\nminutes = 5\n",
            crate::DEFAULT_SITE
        );
        let err = Scenario::parse(&text, Path::new("site.toml"), &registry(), "harbour-view")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kind"), "{err}");
        assert!(err.contains("cannot happen to `hv-gas`"), "{err}");
        assert!(err.contains("site.toml:"), "{err}");

        let text = format!(
            "{}\n[[scenario.fault]]\nkind = \"melt\"\n",
            crate::DEFAULT_SITE
        );
        let err = Scenario::parse(&text, Path::new("site.toml"), &registry(), "harbour-view")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kind"), "{err}");
        assert!(err.contains("melt"), "{err}");
    }
}
