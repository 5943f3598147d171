//! The metric catalogue: every quantity a device may report, with its
//! canonical unit and whether it is a cumulative register.
//!
//! JSON telemetry names a metric either canonically (`energy_kwh`) or as a
//! quantity plus another unit (`energy_wh`, `pressure_kpa`); SenML names the
//! quantity (`energy`) and gives the unit separately. Both resolve here, so a
//! reading always reaches storage in the canonical unit.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::units::{Dimension, Unit};

/// Whether successive values add up (a register) or stand alone (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A cumulative register: consumption is the difference of two readings
    /// (see [`crate::consumption`]).
    Cumulative,
    /// An instantaneous value: power, flow, temperature, pressure.
    Gauge,
}

macro_rules! metrics {
    ($($variant:ident => $name:literal, $stem:literal, $dim:ident, $unit:literal, $kind:ident, $doc:literal;)*) => {
        /// A metric estatemon stores. The string form is the canonical name
        /// used in the database, the API and JSON payloads.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Metric {
            $(#[doc = $doc] $variant,)*
        }

        impl Metric {
            pub const ALL: &'static [Metric] = &[$(Metric::$variant,)*];

            /// Canonical name, e.g. `energy_kwh`.
            pub fn as_str(self) -> &'static str {
                match self { $(Metric::$variant => $name,)* }
            }

            /// The quantity name without unit (`energy`), as SenML names it.
            pub fn stem(self) -> &'static str {
                match self { $(Metric::$variant => $stem,)* }
            }

            pub fn dimension(self) -> Dimension {
                match self { $(Metric::$variant => Dimension::$dim,)* }
            }

            /// Symbol of the canonical unit values are stored in.
            pub fn unit(self) -> &'static str {
                match self { $(Metric::$variant => $unit,)* }
            }

            pub fn kind(self) -> MetricKind {
                match self { $(Metric::$variant => MetricKind::$kind,)* }
            }
        }
    };
}

metrics! {
    EnergyKwh => "energy_kwh", "energy", Energy, "kWh", Cumulative, "Active energy register.";
    PowerKw => "power_kw", "power", Power, "kW", Gauge, "Active power.";
    EnergyExportKwh => "energy_export_kwh", "energy_export", Energy, "kWh", Cumulative, "Exported (returned) active energy register.";
    ApparentPowerKva => "apparent_power_kva", "apparent_power", ApparentPower, "kVA", Gauge, "Apparent power.";
    VoltageV => "voltage_v", "voltage", Voltage, "V", Gauge, "Voltage.";
    CurrentA => "current_a", "current", Current, "A", Gauge, "Current.";
    PowerFactor => "power_factor", "power_factor", Ratio, "ratio", Gauge, "Power factor, 0..1.";
    VolumeM3 => "volume_m3", "volume", Volume, "m3", Cumulative, "Water or gas volume register.";
    FlowM3h => "flow_m3h", "flow", VolumeFlow, "m3/h", Gauge, "Water or gas flow.";
    Trips => "trips", "trips", Count, "count", Cumulative, "Lift trips register.";
    DoorCycles => "door_cycles", "door_cycles", Count, "count", Cumulative, "Lift door cycles register.";
    MotorTempC => "motor_temp_c", "motor_temp", Temperature, "Cel", Gauge, "Lift motor temperature.";
    MachineRoomTempC => "machine_room_temp_c", "machine_room_temp", Temperature, "Cel", Gauge, "Lift machine-room temperature.";
    TemperatureC => "temperature_c", "temperature", Temperature, "Cel", Gauge, "Air or water temperature.";
    PressureMpa => "pressure_mpa", "pressure", Pressure, "MPa", Gauge, "Water pressure (fire main, supply).";
    HumidityPct => "humidity_pct", "humidity", Ratio, "%", Gauge, "Relative humidity, 0..100.";
    TankLevelPct => "tank_level_pct", "tank_level", Ratio, "%", Gauge, "Water tank level, 0..100.";
    ContactClosed => "contact_closed", "contact", Ratio, "/", Gauge, "Door or window contact: 1 closed, 0 open.";
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a metric name or unit could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    #[error("unknown metric `{0}`")]
    UnknownMetric(String),
    #[error("unknown unit `{unit}` for metric `{metric}`")]
    UnknownUnit { metric: String, unit: String },
    #[error("unit `{unit}` does not measure {dimension:?} (metric `{metric}`)")]
    IncompatibleUnit {
        metric: String,
        unit: String,
        dimension: Dimension,
    },
}

impl FromStr for Metric {
    type Err = MetricError;

    /// Exact canonical names only; see [`resolve_json_name`] for unit suffixes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .iter()
            .copied()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| MetricError::UnknownMetric(s.to_owned()))
    }
}

/// A metric and the conversion that brings a received value to its canonical
/// unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolved {
    pub metric: Metric,
    pub unit: Option<Unit>,
}

impl Resolved {
    pub fn normalise(&self, value: f64) -> f64 {
        match self.unit {
            Some(unit) => unit.to_canonical(value),
            None => value,
        }
    }
}

fn by_stem(stem: &str) -> Option<Metric> {
    Metric::ALL.iter().copied().find(|m| m.stem() == stem)
}

fn with_unit(metric: Metric, name: &str, symbol: &str) -> Result<Resolved, MetricError> {
    let unit = Unit::parse(symbol).ok_or_else(|| MetricError::UnknownUnit {
        metric: name.to_owned(),
        unit: symbol.to_owned(),
    })?;
    if unit.dimension != metric.dimension() {
        return Err(MetricError::IncompatibleUnit {
            metric: name.to_owned(),
            unit: symbol.to_owned(),
            dimension: metric.dimension(),
        });
    }
    Ok(Resolved {
        metric,
        unit: Some(unit),
    })
}

/// Resolves a JSON telemetry metric name: canonical (`energy_kwh`) or
/// `<quantity>_<unit>` (`energy_wh`, `volume_l`, `pressure_kpa`).
pub fn resolve_json_name(name: &str) -> Result<Resolved, MetricError> {
    if let Ok(metric) = name.parse::<Metric>() {
        return Ok(Resolved { metric, unit: None });
    }
    // Try every split point from the right so that multi-word stems such as
    // `machine_room_temp_f` resolve.
    for (idx, _) in name.match_indices('_').rev() {
        let (stem, suffix) = (&name[..idx], &name[idx + 1..]);
        if let Some(metric) = by_stem(stem) {
            return with_unit(metric, name, suffix);
        }
    }
    Err(MetricError::UnknownMetric(name.to_owned()))
}

/// Resolves a SenML record's name and unit. The name is the last segment of
/// the resolved SenML name (after `:` or `/`), either a quantity (`energy`)
/// or a canonical metric name.
pub fn resolve_senml(name: &str, unit: Option<&str>) -> Result<Resolved, MetricError> {
    let leaf = name.rsplit([':', '/']).next().unwrap_or(name);
    if let Ok(metric) = leaf.parse::<Metric>() {
        return match unit {
            None => Ok(Resolved { metric, unit: None }),
            Some(symbol) => with_unit(metric, leaf, symbol),
        };
    }
    let metric = by_stem(leaf).ok_or_else(|| MetricError::UnknownMetric(leaf.to_owned()))?;
    match unit {
        Some(symbol) => with_unit(metric, leaf, symbol),
        // A bare quantity with no unit is a guess waiting to happen.
        None => Err(MetricError::UnknownUnit {
            metric: leaf.to_owned(),
            unit: String::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_round_trip() {
        for m in Metric::ALL {
            assert_eq!(m.as_str().parse::<Metric>().unwrap(), *m);
            let json = serde_json_like(*m);
            assert_eq!(json, m.as_str());
        }
    }

    fn serde_json_like(m: Metric) -> String {
        // The serde name must equal the canonical name: the database and the
        // API rely on one spelling.
        toml::Value::try_from(m)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn json_names_with_unit_suffixes() {
        let cases: &[(&str, Metric, f64, f64)] = &[
            ("energy_kwh", Metric::EnergyKwh, 12.5, 12.5),
            ("energy_wh", Metric::EnergyKwh, 12500.0, 12.5),
            ("power_w", Metric::PowerKw, 3200.0, 3.2),
            ("volume_l", Metric::VolumeM3, 1500.0, 1.5),
            ("pressure_kpa", Metric::PressureMpa, 450.0, 0.45),
            ("machine_room_temp_c", Metric::MachineRoomTempC, 31.0, 31.0),
            ("motor_temp_f", Metric::MotorTempC, 212.0, 100.0),
            ("flow_lpm", Metric::FlowM3h, 10.0, 0.6),
        ];
        for (name, metric, raw, canonical) in cases {
            let r = resolve_json_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(r.metric, *metric, "{name}");
            assert!((r.normalise(*raw) - canonical).abs() < 1e-9, "{name}");
        }
    }

    #[test]
    fn json_name_errors() {
        assert!(matches!(
            resolve_json_name("energy_btu"),
            Err(MetricError::UnknownUnit { .. })
        ));
        assert!(matches!(
            resolve_json_name("energy_kw"),
            Err(MetricError::IncompatibleUnit { .. })
        ));
        assert!(matches!(
            resolve_json_name("frobs_kwh"),
            Err(MetricError::UnknownMetric(_))
        ));
        assert!(matches!(
            resolve_json_name("energy"),
            Err(MetricError::UnknownMetric(_))
        ));
    }

    #[test]
    fn senml_names() {
        let r = resolve_senml("urn:dev:mac:0024befffe804ff1:energy", Some("Wh")).unwrap();
        assert_eq!(r.metric, Metric::EnergyKwh);
        assert!((r.normalise(1000.0) - 1.0).abs() < 1e-12);
        let r = resolve_senml("meter-7/volume", Some("l")).unwrap();
        assert_eq!(r.metric, Metric::VolumeM3);
        assert_eq!(
            resolve_senml("power_kw", None).unwrap().metric,
            Metric::PowerKw
        );
        assert!(matches!(
            resolve_senml("energy", Some("furlong")),
            Err(MetricError::UnknownUnit { .. })
        ));
        assert!(matches!(
            resolve_senml("energy", None),
            Err(MetricError::UnknownUnit { .. })
        ));
        assert!(matches!(
            resolve_senml("energy", Some("W")),
            Err(MetricError::IncompatibleUnit { .. })
        ));
    }
}
