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
    /// Apparent power (VA), not to be summed with active power.
    ApparentPower,
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
    (&["VA", "va"], unit("VA", Dimension::ApparentPower, 1e-3)),
    (&["kVA", "kva"], unit("kVA", Dimension::ApparentPower, 1.0)),
    (&["V", "v"], unit("V", Dimension::Voltage, 1.0)),
    (&["mV"], unit("mV", Dimension::Voltage, 1e-3)),
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
    (&["hPa", "mbar"], unit("hPa", Dimension::Pressure, 1e-4)),
    (
        &["psi"],
        unit("psi", Dimension::Pressure, 0.006_894_757_293_168),
    ),
    (&["MJ"], unit("MJ", Dimension::Energy, 1.0 / 3.6)),
    (&["GJ"], unit("GJ", Dimension::Energy, 1e3 / 3.6)),
    (&["gal"], unit("gal", Dimension::Volume, 0.003_785_411_784)),
    (&["ft3"], unit("ft3", Dimension::Volume, 0.028_316_846_592)),
    (
        &["gal/min"],
        unit("gal/min", Dimension::VolumeFlow, 0.227_124_707_04),
    ),
    (
        &["ft3/min"],
        unit("ft3/min", Dimension::VolumeFlow, 1.699_010_795_52),
    ),
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

    /// Looks a unit of `dimension` up as the device ecosystems spell it:
    /// Home Assistant (`L/h`, `m³/h`, `°C`, `mA`, `VA`), Tasmota's
    /// `TempUnit` (`C`, `F`), Zigbee2MQTT, SenML. `Err` names the nearest
    /// unit estatemon knows.
    pub fn parse_for(dimension: Dimension, text: &str) -> Result<Unit, String> {
        let t = text.trim();
        let normal: String = t.replace(['³'], "3").replace("º", "°").replace(" ", "");
        let alias = match (dimension, normal.as_str()) {
            (Dimension::Temperature, "C" | "degC" | "℃") => "Cel",
            (Dimension::Temperature, "F" | "degF" | "℉") => "°F",
            (Dimension::Volume | Dimension::VolumeFlow, n) => {
                return Unit::parse(&n.replace('L', "l"))
                    .or_else(|| Unit::parse(n))
                    .filter(|u| u.dimension == dimension)
                    .ok_or_else(|| nearest(dimension, t));
            }
            (_, n) => n,
        };
        Unit::parse(alias)
            .filter(|u| u.dimension == dimension)
            .ok_or_else(|| nearest(dimension, t))
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

/// The message for a unit that is not one of `dimension`'s: the
/// nearest spelling estatemon knows, and the others.
fn nearest(dimension: Dimension, text: &str) -> String {
    let known: Vec<&str> = UNITS
        .iter()
        .filter(|(_, u)| u.dimension == dimension)
        .map(|(_, u)| u.symbol)
        .collect();
    if let Some(u) = Unit::parse(text) {
        return format!(
            "unit `{text}` measures {:?}, not {dimension:?} (known: {})",
            u.dimension,
            known.join(", ")
        );
    }
    let lower = text.to_lowercase();
    let best = UNITS
        .iter()
        .filter(|(_, u)| u.dimension == dimension)
        .flat_map(|(spellings, u)| spellings.iter().map(move |s| (*s, u.symbol)))
        .min_by_key(|(s, _)| distance(&s.to_lowercase(), &lower))
        .map(|(_, symbol)| symbol)
        .unwrap_or("");
    format!(
        "unit `{text}` is not a unit of {dimension:?} estatemon knows; nearest: `{best}` (known: {})",
        known.join(", ")
    )
}

/// Levenshtein distance, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn units_as_the_ecosystems_spell_them() {
        use Dimension::*;
        // Home Assistant's unit constants (homeassistant/const.py
        // UnitOf*), Tasmota's TempUnit, Zigbee2MQTT's exposes.
        let cases: &[(Dimension, &str, f64, f64)] = &[
            (VolumeFlow, "L/h", 1000.0, 1.0),
            (VolumeFlow, "L/min", 100.0, 6.0),
            (VolumeFlow, "m³/h", 2.5, 2.5),
            (VolumeFlow, "L/s", 1.0, 3.6),
            (Volume, "m³", 2.0, 2.0),
            (Volume, "L", 250.0, 0.25),
            (Energy, "kWh", 2.0, 2.0),
            (Energy, "Wh", 1500.0, 1.5),
            (Current, "mA", 250.0, 0.25),
            (Power, "W", 3200.0, 3.2),
            (ApparentPower, "VA", 2650.0, 2.65),
            (Temperature, "°C", 21.5, 21.5),
            (Temperature, "C", 21.5, 21.5),
            (Temperature, "F", 212.0, 100.0),
            (Temperature, "°F", 212.0, 100.0),
            (Ratio, "%", 45.0, 45.0),
            (Voltage, "mV", 3025.0, 3.025),
        ];
        for (d, text, value, want) in cases {
            let u = Unit::parse_for(*d, text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!((u.to_canonical(*value) - want).abs() < 1e-9, "{text}");
        }
        let e = Unit::parse_for(Energy, "kwH").unwrap_err();
        assert!(e.contains("nearest: `kWh`"), "{e}");
        let e = Unit::parse_for(VolumeFlow, "L/hr").unwrap_err();
        assert!(e.contains("nearest: `l/h`"), "{e}");
        let e = Unit::parse_for(Energy, "W").unwrap_err();
        assert!(e.contains("measures Power"), "{e}");
    }

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
        for symbol in ["BTU", "gallon", "", "kwH", "mw"] {
            assert!(Unit::parse(symbol).is_none(), "{symbol} should be unknown");
        }
    }
}
