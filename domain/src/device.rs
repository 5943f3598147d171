//! Sites, buildings and devices: the equipment ledger (設備台賬) estatemon
//! groups readings by.
//!
//! Every device belongs to one site, building and area and serves one
//! purpose; reports and savings are computed along those lines. A device
//! that publishes before it is registered is stored anyway and registered as
//! *unassigned*, so no reading waits on paperwork.

use std::path::Path;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::config::{locate_error, ConfigError};

/// What a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    ElectricityMeter,
    WaterMeter,
    GasMeter,
    Lift,
    AccessGate,
    /// Pressure gauges, temperature probes, tank level sensors.
    Sensor,
    /// Registered automatically from its first message; kind not yet known.
    Unknown,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::ElectricityMeter => "electricity_meter",
            DeviceKind::WaterMeter => "water_meter",
            DeviceKind::GasMeter => "gas_meter",
            DeviceKind::Lift => "lift",
            DeviceKind::AccessGate => "access_gate",
            DeviceKind::Sensor => "sensor",
            DeviceKind::Unknown => "unknown",
        }
    }
}

/// What a meter measures and a report totals separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Utility {
    Electricity,
    Water,
    Gas,
}

impl Utility {
    pub const ALL: [Utility; 3] = [Utility::Electricity, Utility::Water, Utility::Gas];

    pub fn as_str(self) -> &'static str {
        match self {
            Utility::Electricity => "electricity",
            Utility::Water => "water",
            Utility::Gas => "gas",
        }
    }

    /// kWh or m³.
    pub fn unit(self) -> &'static str {
        match self {
            Utility::Electricity => "kWh",
            Utility::Water | Utility::Gas => "m³",
        }
    }

    /// The register metric its meters report.
    pub fn register(self) -> crate::Metric {
        match self {
            Utility::Electricity => crate::Metric::EnergyKwh,
            Utility::Water | Utility::Gas => crate::Metric::VolumeM3,
        }
    }
}

impl DeviceKind {
    /// What a meter of this kind measures; `None` for non-meters.
    pub fn utility(self) -> Option<Utility> {
        match self {
            DeviceKind::ElectricityMeter => Some(Utility::Electricity),
            DeviceKind::WaterMeter => Some(Utility::Water),
            DeviceKind::GasMeter => Some(Utility::Gas),
            _ => None,
        }
    }
}

/// What the energy or water a device measures is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    PublicLighting,
    Lifts,
    Pumps,
    Hvac,
    General,
    DomesticWater,
    Irrigation,
    FireProtection,
    Security,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::PublicLighting => "public_lighting",
            Purpose::Lifts => "lifts",
            Purpose::Pumps => "pumps",
            Purpose::Hvac => "hvac",
            Purpose::General => "general",
            Purpose::DomesticWater => "domestic_water",
            Purpose::Irrigation => "irrigation",
            Purpose::FireProtection => "fire_protection",
            Purpose::Security => "security",
        }
    }
}

/// Inspection class from the maintenance standard: A daily, B weekly, C monthly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceCycle {
    Daily,
    Weekly,
    Fortnightly,
    Monthly,
    Quarterly,
    Yearly,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub id: String,
    pub name: String,
    /// IANA time zone; quarters and days are cut in it.
    pub time_zone: String,
    pub latitude: f64,
    pub longitude: f64,
    pub floor_area_m2: Option<f64>,
    /// The devices whose `temperature_c` is the outdoor temperature (a
    /// weather station, a shaded outdoor probe): degree-days come from
    /// these only, never from every sensor of the site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weather: Vec<String>,
    /// The electricity supplier (`clp`, `hk-electric`, or an
    /// `[[energy.supplier]]` id of the configuration): the site's tariff
    /// and grid emission factor are its customers'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub electricity_supplier: Option<String>,
    #[serde(default, rename = "building")]
    pub buildings: Vec<Building>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Building {
    pub id: String,
    pub name: String,
    pub floor_area_m2: Option<f64>,
}

/// Longest device or site id accepted from a topic or a payload (ids
/// become primary keys: a key over ~2.7 kB would fail a whole batch).
pub const MAX_ID_LEN: usize = 200;

/// A device and its ledger record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub id: String,
    pub kind: DeviceKind,
    pub site: String,
    pub building: Option<String>,
    /// Lobby, corridor, garage, stairwell, pump_room, landscape…
    pub area: String,
    pub purpose: Purpose,
    pub name: Option<String>,
    pub model: Option<String>,
    #[serde(default, deserialize_with = "toml_date::option")]
    pub install_date: Option<NaiveDate>,
    pub maintenance_cycle: Option<MaintenanceCycle>,
    pub responsible: Option<String>,
    /// The id the device reports under when that is not its ledger id: a
    /// Shelly channel (`shellypro3em-c8f09e8a1b2c-em:0`), a Sparkplug
    /// device (`group/edge node/device`), a gateway's own name. Ingest
    /// stores what arrives under this id as this device's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// Inspection class: A (fire systems, lifts) daily, B (air
    /// conditioning, pumps) weekly, C monthly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<crate::inspection::EquipmentClass>,
    /// An explicit inspection cycle (`15d`, `1w`, `1mo`, `1y`), over the
    /// class's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspection_cycle: Option<crate::inspection::Cycle>,
    /// What an inspection checks (`noise`, `lubricant`, `machine_room_temperature`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checklist: Vec<String>,
}

impl Device {
    /// The shortest cycle the device's inspections are tracked on (its
    /// class's and its own, both tracked: inspecting on the shortest keeps
    /// both); none without either (`maintenance_cycle` is a note in the
    /// ledger, not tracked).
    pub fn cycle(&self) -> Option<crate::inspection::Cycle> {
        crate::inspection::tracks(self.class, self.inspection_cycle)
            .into_iter()
            .map(|(_, c)| c)
            .min_by_key(|c| c.longest())
    }
}

/// The registry file: `[[site]]` tables (with `[[site.building]]`) and
/// `[[device]]` tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    #[serde(default, rename = "site")]
    pub sites: Vec<Site>,
    #[serde(default, rename = "device")]
    pub devices: Vec<Device>,
    /// Retrofits whose savings are measured (`[[retrofit]]`).
    #[serde(default, rename = "retrofit")]
    pub retrofits: Vec<crate::retrofit::Retrofit>,
    /// A site file may also carry the simulator's `[scenario]` table
    /// (retrofits, faults); the registry ignores it.
    #[serde(default, rename = "scenario", skip_serializing)]
    pub scenario: Option<serde::de::IgnoredAny>,
}

impl Registry {
    pub fn load(path: &Path) -> Result<Registry, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks cross-references, naming the line of any problem.
    pub fn parse(text: &str, path: &Path) -> Result<Registry, ConfigError> {
        let registry: Registry = toml::from_str(text).map_err(|e| locate_error(path, text, &e))?;
        registry.check(text, path)?;
        Ok(registry)
    }

    fn check(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let invalid = |needle: &str, field: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: crate::config::line_of(text, needle),
            field: field.to_owned(),
            message,
        };
        let mut seen = std::collections::HashSet::new();
        for site in &self.sites {
            if site.time_zone.parse::<chrono_tz::Tz>().is_err() {
                return Err(invalid(
                    &site.time_zone,
                    "site.time_zone",
                    format!("`{}` is not an IANA time zone", site.time_zone),
                ));
            }
            if !(-90.0..=90.0).contains(&site.latitude) {
                return Err(invalid(
                    "latitude",
                    "site.latitude",
                    format!("{} is outside -90..90", site.latitude),
                ));
            }
            if !(-180.0..=180.0).contains(&site.longitude) {
                return Err(invalid(
                    "longitude",
                    "site.longitude",
                    format!("{} is outside -180..180", site.longitude),
                ));
            }
        }
        for device in &self.devices {
            if !seen.insert(device.id.as_str()) {
                return Err(invalid(
                    &device.id,
                    "device.id",
                    format!("device `{}` is listed twice", device.id),
                ));
            }
            if let Some(source) = &device.source_id {
                let clash = self.devices.iter().any(|o| {
                    o.id != device.id && (&o.id == source || o.source_id.as_ref() == Some(source))
                });
                if source.is_empty() || clash {
                    return Err(invalid(
                        &format!("\"{source}\""),
                        "device.source_id",
                        format!(
                            "device `{}`: source id `{source}` is empty or already names another device",
                            device.id
                        ),
                    ));
                }
            }
            let Some(site) = self.sites.iter().find(|s| s.id == device.site) else {
                return Err(invalid(
                    &format!("\"{}\"", device.id),
                    "device.site",
                    format!(
                        "device `{}` names unknown site `{}`",
                        device.id, device.site
                    ),
                ));
            };
            if let Some(building) = &device.building {
                if !site.buildings.iter().any(|b| &b.id == building) {
                    return Err(invalid(
                        &format!("\"{}\"", device.id),
                        "device.building",
                        format!(
                            "device `{}` names building `{building}`, which site `{}` does not have",
                            device.id, site.id
                        ),
                    ));
                }
            }
        }
        // A named weather device must be one of the site's sensors here.
        for site in &self.sites {
            for w in &site.weather {
                let ok = self
                    .devices
                    .iter()
                    .any(|d| &d.id == w && d.site == site.id && d.kind == DeviceKind::Sensor);
                if !ok {
                    return Err(invalid(
                        &format!("\"{w}\""),
                        "site.weather",
                        format!(
                            "`{w}` is not a sensor of site `{}` in this file: name the \
                             outdoor temperature sensor(s) listed below",
                            site.id
                        ),
                    ));
                }
            }
        }
        let mut ids = std::collections::HashSet::new();
        for r in &self.retrofits {
            let needle = format!("\"{}\"", r.id);
            if !ids.insert((r.site.as_str(), r.id.as_str())) {
                return Err(invalid(
                    &needle,
                    "retrofit.id",
                    format!("retrofit `{}` is listed twice", r.id),
                ));
            }
            if !self.sites.iter().any(|s| s.id == r.site) {
                return Err(invalid(
                    &needle,
                    "retrofit.site",
                    format!("retrofit `{}` names unknown site `{}`", r.id, r.site),
                ));
            }
            r.check().map_err(|(field, message)| {
                invalid(&needle, &format!("retrofit.{field}"), message)
            })?;
        }
        Ok(())
    }
}

/// Accepts TOML's native dates (`2019-05-01`) as well as quoted ones.
pub(crate) mod toml_date {
    use chrono::NaiveDate;
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Native(toml::value::Datetime),
        Text(String),
    }

    pub fn required<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
        option(d)?.ok_or_else(|| serde::de::Error::custom("a date (YYYY-MM-DD) is required"))
    }

    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDate>, D::Error> {
        let text = match Option::<Repr>::deserialize(d)? {
            None => return Ok(None),
            Some(Repr::Native(dt)) => dt.to_string(),
            Some(Repr::Text(s)) => s,
        };
        NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map(Some)
            .map_err(|e| {
                serde::de::Error::custom(format!("`{text}` is not a date (YYYY-MM-DD): {e}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[site]]
id = "harbour-view"
name = "Harbour View"
time_zone = "Asia/Hong_Kong"
latitude = 22.28
longitude = 114.16

  [[site.building]]
  id = "tower-a"
  name = "Tower A"

[[device]]
id = "hv-a-lobby-light"
kind = "electricity_meter"
site = "harbour-view"
building = "tower-a"
area = "lobby"
purpose = "public_lighting"
install_date = 2019-05-01
maintenance_cycle = "monthly"
"#;

    #[test]
    fn parses_a_registry() {
        let r = Registry::parse(GOOD, Path::new("sites.toml")).unwrap();
        assert_eq!(r.sites[0].buildings[0].id, "tower-a");
        assert_eq!(r.devices[0].purpose, Purpose::PublicLighting);
    }

    #[test]
    fn errors_name_line_and_field() {
        let bad = GOOD.replace("purpose = \"public_lighting\"", "purpose = \"disco\"");
        let err = Registry::parse(&bad, Path::new("sites.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sites.toml:19"), "{err}");
        assert!(err.contains("purpose"), "{err}");

        let bad = GOOD.replace("Asia/Hong_Kong", "Mars/Olympus");
        let err = Registry::parse(&bad, Path::new("sites.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sites.toml:5") && err.contains("time_zone"),
            "{err}"
        );

        let bad = GOOD.replace("building = \"tower-a\"", "building = \"tower-z\"");
        let err = Registry::parse(&bad, Path::new("sites.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tower-z") && err.contains("device.building"),
            "{err}"
        );

        // The weather device must be one of the site's sensors: a meter
        // (or a typo) is refused, with its line.
        let bad = GOOD.replace(
            "longitude = 114.16\n",
            "longitude = 114.16\nweather = [\"hv-a-lobby-light\"]\n",
        );
        let err = Registry::parse(&bad, Path::new("sites.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("site.weather") && err.contains("sites.toml:8"),
            "{err}"
        );
        let good = format!(
            "{}\n[[device]]\nid = \"roof\"\nkind = \"sensor\"\nsite = \"harbour-view\"\narea = \"roof\"\npurpose = \"general\"\n",
            GOOD.replace(
                "longitude = 114.16\n",
                "longitude = 114.16\nweather = [\"roof\"]\n"
            )
        );
        let r = Registry::parse(&good, Path::new("sites.toml")).unwrap();
        assert_eq!(r.sites[0].weather, ["roof"]);
    }
}
