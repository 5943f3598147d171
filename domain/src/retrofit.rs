//! Retrofits whose savings are measured (IPMVP option C / ASHRAE
//! Guideline 14): which meters they changed, when, the baseline period
//! before and the reporting period after, the drivers that explain use,
//! and the owners' target.
//!
//! Declared in the registry file as `[[retrofit]]` tables and stored in the
//! `retrofits` table by `registry load`:
//!
//! ```toml
//! [[retrofit]]
//! id = "led-garage"
//! name = "LED lighting: garage"
//! site = "harbour-view"
//! purpose = "public_lighting"   # the meter group: purpose, and optionally
//! area = "garage"               # building, area or a list of devices
//! date = 2026-04-01             # site local date the retrofit took effect
//! target = 0.45                 # fraction saved; [savings] targets when unset
//! # baseline_from = 2025-04-01  # default: 365 days before `date`
//! # reporting_to = 2026-12-31   # default: open (up to the report's end)
//! # drivers = ["darkness_hours"] # default by purpose, see Driver::defaults_for
//! ```

use chrono::{Duration, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::device::Purpose;

/// What explains a meter group's daily use in a baseline model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// Hours between sunset and sunrise at the site (lighting).
    DarknessHours,
    /// Gate entries at the site that day (people in the buildings).
    Occupancy,
    /// 1 on Saturdays and Sundays, 0 otherwise.
    Weekend,
    /// Cooling degree-days above 18 °C from the site's temperature sensors.
    CoolingDegreeDays,
    /// Heating degree-days below 18 °C.
    HeatingDegreeDays,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::DarknessHours => "darkness_hours",
            Driver::Occupancy => "occupancy",
            Driver::Weekend => "weekend",
            Driver::CoolingDegreeDays => "cooling_degree_days",
            Driver::HeatingDegreeDays => "heating_degree_days",
        }
    }

    /// The drivers used when a retrofit names none: what moves that
    /// purpose's load in a residential estate.
    pub fn defaults_for(purpose: Purpose) -> Vec<Driver> {
        match purpose {
            Purpose::PublicLighting => vec![Driver::DarknessHours],
            Purpose::Hvac => vec![
                Driver::CoolingDegreeDays,
                Driver::HeatingDegreeDays,
                Driver::Occupancy,
            ],
            _ => vec![Driver::Occupancy, Driver::Weekend],
        }
    }
}

/// A retrofit as declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retrofit {
    pub id: String,
    pub name: String,
    pub site: String,
    /// The meter group: devices of this purpose (and building, area, or in
    /// `devices`, when given).
    pub purpose: Purpose,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Site-local date the retrofit took effect.
    #[serde(deserialize_with = "crate::device::toml_date::required")]
    pub date: NaiveDate,
    #[serde(
        default,
        deserialize_with = "crate::device::toml_date::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub baseline_from: Option<NaiveDate>,
    /// Exclusive; default `date`.
    #[serde(
        default,
        deserialize_with = "crate::device::toml_date::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub baseline_to: Option<NaiveDate>,
    /// Default `date`.
    #[serde(
        default,
        deserialize_with = "crate::device::toml_date::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub reporting_from: Option<NaiveDate>,
    /// Exclusive; open when unset.
    #[serde(
        default,
        deserialize_with = "crate::device::toml_date::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub reporting_to: Option<NaiveDate>,
    /// Fraction of use the owners expect to save (0.35 for 35 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drivers: Vec<Driver>,
}

/// Default length of a baseline: a full year, so every season is in it.
pub const DEFAULT_BASELINE_DAYS: i64 = 365;

impl Retrofit {
    /// `[from, to)` of the baseline period, site-local dates.
    pub fn baseline(&self) -> (NaiveDate, NaiveDate) {
        let to = self.baseline_to.unwrap_or(self.date);
        let from = self
            .baseline_from
            .unwrap_or(to - Duration::days(DEFAULT_BASELINE_DAYS));
        (from, to)
    }

    /// `[from, to)` of the reporting period; `to` open when unset.
    pub fn reporting(&self) -> (NaiveDate, Option<NaiveDate>) {
        (self.reporting_from.unwrap_or(self.date), self.reporting_to)
    }

    /// The drivers of its baseline model.
    pub fn drivers(&self) -> Vec<Driver> {
        if self.drivers.is_empty() {
            Driver::defaults_for(self.purpose)
        } else {
            self.drivers.clone()
        }
    }

    /// Whether a meter of the retrofit's site belongs to its meter group:
    /// its purpose, and building, area or id where the retrofit names them.
    pub fn covers(
        &self,
        id: &str,
        purpose: Option<Purpose>,
        building: Option<&str>,
        area: &str,
    ) -> bool {
        purpose == Some(self.purpose)
            && self.building.as_deref().is_none_or(|b| building == Some(b))
            && self.area.as_deref().is_none_or(|a| area == a)
            && (self.devices.is_empty() || self.devices.iter().any(|d| d == id))
    }

    /// Checks beyond types: (field, message).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.id.is_empty() || self.id.contains(['/', ' ']) {
            return Err((
                "id",
                format!("`{}` must be non-empty, without / or spaces", self.id),
            ));
        }
        let (bf, bt) = self.baseline();
        if bf >= bt {
            return Err((
                "baseline_from",
                format!("retrofit `{}`: the baseline {bf} .. {bt} is empty", self.id),
            ));
        }
        if bt > self.date {
            return Err((
                "baseline_to",
                format!(
                    "retrofit `{}`: the baseline must end by the retrofit date {}",
                    self.id, self.date
                ),
            ));
        }
        let (rf, rt) = self.reporting();
        if rf < self.date {
            return Err((
                "reporting_from",
                format!(
                    "retrofit `{}`: the reporting period must start on or after {}",
                    self.id, self.date
                ),
            ));
        }
        if rt.is_some_and(|rt| rt <= rf) {
            return Err((
                "reporting_to",
                format!("retrofit `{}`: the reporting period is empty", self.id),
            ));
        }
        if let Some(t) = self.target {
            if !(0.0..1.0).contains(&t) {
                return Err((
                    "target",
                    format!("{t} must be a fraction in 0..1 (0.35 for 35 %)"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn garage() -> Retrofit {
        toml::from_str(
            r#"
id = "led-garage"
name = "LED lighting: garage"
site = "harbour-view"
purpose = "public_lighting"
area = "garage"
date = 2026-04-01
target = 0.45
"#,
        )
        .unwrap()
    }

    #[test]
    fn periods_default_to_a_year_before_and_open_after() {
        let r = garage();
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(r.baseline(), (d("2025-04-01"), d("2026-04-01")));
        assert_eq!(r.reporting(), (d("2026-04-01"), None));
        assert_eq!(r.drivers(), vec![Driver::DarknessHours]);
        assert!(r.check().is_ok());
    }

    #[test]
    fn json_round_trip_keeps_the_spec() {
        let r = garage();
        let back: Retrofit = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn the_meter_group_is_purpose_and_what_else_is_named() {
        let r = garage();
        let lighting = Some(Purpose::PublicLighting);
        assert!(r.covers("m1", lighting, Some("podium"), "garage"));
        assert!(!r.covers("m1", lighting, Some("podium"), "lobby"));
        assert!(!r.covers("m1", Some(Purpose::Pumps), Some("podium"), "garage"));
        assert!(!r.covers("m1", None, Some("podium"), "garage"));
        let mut listed = garage();
        listed.area = None;
        listed.devices = vec!["m2".into()];
        assert!(listed.covers("m2", lighting, None, "lobby"));
        assert!(!listed.covers("m1", lighting, None, "lobby"));
    }

    #[test]
    fn bad_periods_and_targets_name_the_field() {
        let mut r = garage();
        r.baseline_to = Some(r.date + Duration::days(1));
        assert_eq!(r.check().unwrap_err().0, "baseline_to");
        let mut r = garage();
        r.reporting_from = Some(r.date - Duration::days(1));
        assert_eq!(r.check().unwrap_err().0, "reporting_from");
        let mut r = garage();
        r.target = Some(45.0);
        assert_eq!(r.check().unwrap_err().0, "target");
    }
}
