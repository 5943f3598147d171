//! Units and their normalisation to each metric's canonical unit.
//!
//! Devices send `Wh`, `kWh`, `l`, `kPa`, `°F`…; estatemon stores one unit per
//! metric (kWh, m³, MPa, °C…). A unit that is not in this table, or that
//! measures another quantity than the metric (`W` for energy), is rejected:
//! guessing would silently corrupt a year of consumption figures.

use serde::{Deserialize, Serialize};

/// The physical dimension a unit measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Energy,
    Power,
    Voltage,
    Current,
    Volume,
    VolumeFlow,
    Temperature,
    Pressure,
    /// Ratios and percentages (power factor, humidity, tank level).
    Ratio,
    /// Plain counts (lift trips, door cycles).
    Count,
}

/// A unit estatemon understands, with its conversion to the canonical unit of
/// its dimension: `canonical = value * scale + offset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unit {
    pub symbol: &'static str,
    pub dimension: Dimension,
    pub scale: f64,
    pub offset: f64,
}

const fn unit(symbol: &'static str, dimension: Dimension, scale: f64) -> Unit {
    Unit {
        symbol,
        dimension,
        scale,
        offset: 0.0,
    }
}

/// Canonical units: kWh, kW, V, A, m³, m³/h, °C, MPa, ratio 0..1 (percent
/// metrics keep 0..100), count.
///
/// Each entry lists the spellings accepted for it: SenML symbols (RFC 8428 and
/// RFC 8798 registries) and the lower-case suffixes used in JSON metric names
/// such as `energy_wh` or `pressure_kpa`.
const UNITS: &[(&[&str], Unit)] = &[
    (&["kWh", "kwh"], unit("kWh", Dimension::Energy, 1.0)),
    (&["Wh", "wh"], unit("Wh", Dimension::Energy, 1e-3)),
    (&["MWh"], unit("MWh", Dimension::Energy, 1e3)),
    (&["J"], unit("J", Dimension::Energy, 1.0 / 3.6e6)),
    (&["kJ"], unit("kJ", Dimension::Energy, 1.0 / 3.6e3)),
    (&["kW", "kw"], unit("kW", Dimension::Power, 1.0)),
    (&["W", "w"], unit("W", Dimension::Power, 1e-3)),
    (&["MW"], unit("MW", Dimension::Power, 1e3)),
    (&["V", "v"], unit("V", Dimension::Voltage, 1.0)),
    (&["kV", "kv"], unit("kV", Dimension::Voltage, 1e3)),
    (&["A", "a"], unit("A", Dimension::Current, 1.0)),
    (&["mA", "ma"], unit("mA", Dimension::Current, 1e-3)),
    (&["m3", "m³"], unit("m3", Dimension::Volume, 1.0)),
    (&["l", "L"], unit("l", Dimension::Volume, 1e-3)),
    (&["m3/h", "m3h"], unit("m3/h", Dimension::VolumeFlow, 1.0)),
    (
        &["m3/s", "m3s"],
        unit("m3/s", Dimension::VolumeFlow, 3600.0),
    ),
    (&["l/s", "lps"], unit("l/s", Dimension::VolumeFlow, 3.6)),
    (
        &["l/min", "lpm"],
        unit("l/min", Dimension::VolumeFlow, 0.06),
    ),
    (&["l/h", "lph"], unit("l/h", Dimension::VolumeFlow, 1e-3)),
    (
        &["Cel", "c", "°C"],
        unit("Cel", Dimension::Temperature, 1.0),
    ),
    (
        &["K", "k"],
        Unit {
            symbol: "K",
            dimension: Dimension::Temperature,
            scale: 1.0,
            offset: -273.15,
        },
    ),
    (
        &["°F", "f"],
        Unit {
            symbol: "°F",
            dimension: Dimension::Temperature,
            scale: 5.0 / 9.0,
            offset: -32.0 * 5.0 / 9.0,
        },
    ),
    (&["MPa", "mpa"], unit("MPa", Dimension::Pressure, 1.0)),
    (&["kPa", "kpa"], unit("kPa", Dimension::Pressure, 1e-3)),
    (&["Pa", "pa"], unit("Pa", Dimension::Pressure, 1e-6)),
    (&["bar"], unit("bar", Dimension::Pressure, 0.1)),
    (&["%", "pct", "%RH"], unit("%", Dimension::Ratio, 1.0)),
    (&["/", "ratio"], unit("/", Dimension::Ratio, 1.0)),
    (&["count", "1"], unit("count", Dimension::Count, 1.0)),
];

impl Unit {
    /// Looks a unit up by any of its accepted spellings (case-sensitive, as
    /// SenML is: `mW` and `MW` differ by a factor of a billion).
    pub fn parse(symbol: &str) -> Option<Unit> {
        UNITS
            .iter()
            .find(|(spellings, _)| spellings.contains(&symbol))
            .map(|(_, u)| *u)
    }

    /// Converts a value in this unit to its dimension's canonical unit. A
    /// decimal submultiple (W → kW) divides by its whole divisor, so that
    /// 207 W is 0.207 kW to the bit (× 0.001 gives 0.20700000000000002).
    pub fn to_canonical(&self, value: f64) -> f64 {
        let divisor = (1.0 / self.scale).round();
        if self.scale < 1.0 && divisor * self.scale == 1.0 {
            value / divisor + self.offset
        } else {
            value * self.scale + self.offset
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submultiples_convert_to_the_nearest_value() {
        let w = Unit::parse("W").unwrap();
        assert_eq!(w.to_canonical(207.0), 0.207);
        assert_eq!(
            Unit::parse("Wh").unwrap().to_canonical(1_234_567.0),
            1234.567
        );
        assert_eq!(Unit::parse("l").unwrap().to_canonical(15.0), 0.015);
        assert_eq!(
            Unit::parse("°F").map(|f| f.to_canonical(212.0).round()),
            Some(100.0)
        );
    }

    #[test]
    fn conversions_to_canonical_units() {
        let cases: &[(&str, f64, f64)] = &[
            ("Wh", 1500.0, 1.5),
            ("kWh", 2.0, 2.0),
            ("MWh", 0.5, 500.0),
            ("W", 3200.0, 3.2),
            ("l", 250.0, 0.25),
            ("l/s", 1.0, 3.6),
            ("l/min", 100.0, 6.0),
            ("kPa", 500.0, 0.5),
            ("bar", 5.0, 0.5),
            ("K", 293.15, 20.0),
            ("°F", 212.0, 100.0),
        ];
        for (symbol, value, expected) in cases {
            let unit = Unit::parse(symbol).unwrap_or_else(|| panic!("{symbol} unknown"));
            let got = unit.to_canonical(*value);
            assert!(
                (got - expected).abs() < 1e-9,
                "{value} {symbol} -> {got}, expected {expected}"
            );
        }
    }

    #[test]
    fn unknown_and_case_confused_units_are_rejected() {
        for symbol in ["BTU", "gal", "", "kwH", "mw"] {
            assert!(Unit::parse(symbol).is_none(), "{symbol} should be unknown");
        }
    }
}
