//! The quarterly energy report as plain data: what every format (HTML,
//! PDF, CSV, JSON) renders. Quantities that cannot be known are `None` and
//! are printed as "missing", never as 0.

use chrono::{DateTime, NaiveDate, Utc};
use estatemon_domain::device::Utility;
use serde::{Deserialize, Serialize};

use super::quarter::Quarter;
use crate::savings::RetrofitSavings;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuarterReport {
    pub site_id: String,
    pub site_name: String,
    pub time_zone: String,
    pub quarter: Quarter,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub generated_at: DateTime<Utc>,
    /// The cover: who or what produced this version (`energy.report.prepared_by`).
    pub prepared_by: String,
    /// The sign-off of this version, recorded by `estatemon report sign`
    /// after generation: none when generated, so a regenerated version is
    /// unsigned until someone signs it again.
    #[serde(default)]
    pub signatures: Vec<Signature>,
    /// 1 for the first generation of this site and quarter, then 2, 3 …
    pub version: i32,
    pub currency: String,
    /// The tariffs the costs come from, with their sources.
    pub tariffs: Vec<estatemon_domain::config::Tariff>,
    /// The factors the CO₂ figures come from, with their source.
    pub emission_factors: estatemon_domain::config::EmissionFactors,
    /// The PDF's font (`energy.report.pdf_font`); not part of the data.
    #[serde(skip)]
    pub pdf_font: String,
    pub floor_area_m2: Option<f64>,
    /// Building ids → names from the registry (tables show names).
    pub building_names: std::collections::BTreeMap<String, String>,
    /// Totals by site, building, area and purpose, per utility.
    pub totals: Vec<TotalRow>,
    /// This quarter against the previous one and the same one last year.
    pub comparisons: Vec<ComparisonRow>,
    /// Electricity per m² of floor area.
    pub intensity: Vec<IntensityRow>,
    /// HVAC use against the degree-days of the site's weather devices,
    /// this quarter and the same quarter last year.
    pub weather: Vec<WeatherRow>,
    /// Which sensor the weather comes from and how complete it is, or why
    /// there is none.
    pub weather_note: String,
    pub demand: Demand,
    /// Use by month and purpose (the first chart).
    pub monthly: Vec<MonthRow>,
    /// Mean electricity demand by local hour (the load-profile chart).
    pub load_profile: Vec<ProfileRow>,
    /// Retrofits in effect during the quarter, measured over the quarter.
    pub savings: Vec<RetrofitSavings>,
    /// Lighting and water together, against the overall targets.
    pub savings_groups: Vec<SavingsGroup>,
    pub lifts: Vec<LiftRow>,
    /// How faults raised during maintenance were counted, in words.
    #[serde(default)]
    pub lift_fault_note: String,
    /// Entrapments of the quarter, alarm to back in service.
    pub incidents: Vec<crate::lifts::incidents::Incident>,
    /// Inspections against each tracked device's cycle.
    pub compliance: Vec<crate::maintenance::compliance::Compliance>,
    /// Lift replacements of the last year, before against after.
    pub lift_replacements: Vec<crate::lifts::stats::Replacement>,
    pub gates: Vec<GateRow>,
    pub alerts: Vec<AlertRow>,
    /// On-call over the quarter: response per severity against the targets
    /// and the pages per person (issue 31).
    #[serde(default)]
    pub oncall: crate::oncall::report::Summary,
    /// Which part of the quarter the rules were evaluated over, live or
    /// replayed, and the spans they were not.
    #[serde(default)]
    pub alert_coverage: estatemon_domain::schema::coverage::Coverage,
    /// Where the report's own tables and its alerts disagree (an
    /// entrapment without an alert), and why.
    #[serde(default)]
    pub alert_notes: Vec<String>,
    pub data_quality: DataQuality,
    /// Events on the meters in the quarter that a baseline model does not
    /// know (a bridged gap, a counter reset or rollover, a replaced meter,
    /// a meter's alert such as a night leak or going offline), each beside
    /// the retrofits whose meters they touch, with its estimated effect.
    #[serde(default)]
    pub non_routine_events: Vec<NonRoutineEvent>,
    pub notes: Vec<String>,
}

/// Who signs a report version, and in which capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum SignRole {
    /// Prepared the report and answers for its data and method.
    Preparer,
    /// Checked it independently.
    Reviewer,
}

impl SignRole {
    pub const ALL: [SignRole; 2] = [SignRole::Preparer, SignRole::Reviewer];

    pub fn as_str(self) -> &'static str {
        match self {
            SignRole::Preparer => "preparer",
            SignRole::Reviewer => "reviewer",
        }
    }

    /// "Prepared by" / "Reviewed by".
    pub fn label(self) -> &'static str {
        match self {
            SignRole::Preparer => "Prepared by",
            SignRole::Reviewer => "Reviewed by",
        }
    }
}

impl std::str::FromStr for SignRole {
    type Err = String;

    fn from_str(s: &str) -> Result<SignRole, String> {
        SignRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim())
            .ok_or_else(|| format!("`{s}` is not a role: preparer or reviewer"))
    }
}

/// One person's signature on one version of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    pub role: SignRole,
    pub name: String,
    /// E.g. "CEng MCIBSE, Registered Energy Assessor (EMSD)".
    pub qualification: String,
    pub signed_at: DateTime<Utc>,
    /// Who recorded it (the CLI's user or the API token).
    pub recorded_by: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Site,
    Building,
    Area,
    Purpose,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Site => "site",
            Scope::Building => "building",
            Scope::Area => "area",
            Scope::Purpose => "purpose",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TotalRow {
    pub scope: Scope,
    pub name: String,
    pub utility: Utility,
    #[serde(deserialize_with = "crate::static_str::deserialize")]
    pub unit: crate::static_str::Label,
    pub meters: usize,
    /// `None`: no meter in the scope has data for the quarter.
    pub quantity: Option<f64>,
    /// Share of the scope's meter-hours with known consumption.
    pub coverage: f64,
    pub cost: Option<f64>,
    pub co2_kg: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComparisonRow {
    pub scope: Scope,
    pub name: String,
    pub utility: Utility,
    #[serde(deserialize_with = "crate::static_str::deserialize")]
    pub unit: crate::static_str::Label,
    pub this_quarter: Option<f64>,
    pub previous_quarter: Option<f64>,
    pub same_quarter_last_year: Option<f64>,
    /// this / previous − 1.
    pub change_vs_previous: Option<f64>,
    pub change_vs_last_year: Option<f64>,
    /// Coverage of each figure (so a partial quarter is visible).
    pub coverage: [f64; 3],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntensityRow {
    pub scope: Scope,
    pub name: String,
    pub floor_area_m2: Option<f64>,
    /// Electricity meters of the scope (the public areas' meters).
    pub meters: usize,
    pub kwh: Option<f64>,
    pub kwh_per_m2: Option<f64>,
    /// Annualised: the quarter's kWh/m² × 365.25 / the quarter's days.
    pub kwh_per_m2_year: Option<f64>,
}

/// A quarter's HVAC use and its weather (degree-days at 18 °C from the
/// site's weather devices, the mean of each day's hourly excesses).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WeatherRow {
    pub quarter: Quarter,
    /// Electricity of the meters whose purpose is HVAC.
    pub hvac_kwh: Option<f64>,
    pub heating_degree_days: Option<f64>,
    pub cooling_degree_days: Option<f64>,
    /// Days with weather data.
    pub weather_days: usize,
    /// hvac_kwh / (HDD + CDD).
    pub kwh_per_degree_day: Option<f64>,
    /// This quarter's use had it had this row's degree-days:
    /// kWh per degree-day × this row's degree-days (the first row: as is).
    pub normalised_kwh: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Demand {
    /// Highest 15-minute electricity demand of the site (kW), over slots
    /// where every reporting meter has a reading.
    pub peak_kw: Option<f64>,
    pub peak_at: Option<DateTime<Utc>>,
    /// Mean site electricity demand in the night hours (kW).
    pub night_base_kw: Option<f64>,
    pub night_hours: (u32, u32),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonthRow {
    /// yyyymm
    pub month: i32,
    pub utility: Utility,
    pub purpose: String,
    pub quantity: Option<f64>,
    pub coverage: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileRow {
    pub hour: u32,
    pub weekday_kw: Option<f64>,
    pub weekend_kw: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavingsGroup {
    pub name: String,
    pub utility: Utility,
    #[serde(deserialize_with = "crate::static_str::deserialize")]
    pub unit: crate::static_str::Label,
    pub retrofits: Vec<String>,
    pub adjusted_baseline: Option<f64>,
    pub actual: Option<f64>,
    pub savings: Option<f64>,
    pub savings_fraction: Option<f64>,
    /// ± at 90 %, the retrofits' uncertainties combined as independent.
    pub uncertainty: Option<f64>,
    pub cost_saved: Option<f64>,
    pub co2_kg_saved: Option<f64>,
    pub target: Option<f64>,
    /// How the target was derived from the retrofits' (registered)
    /// targets, as the report prints it.
    pub target_basis: String,
    /// Judged with the uncertainty: met, not met or inconclusive.
    pub verdict: Option<crate::savings::Verdict>,
    /// `Some(true)` only when met, `Some(false)` when not met.
    pub meets_target: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiftRow {
    /// `lift`, or the totals of a `building`'s lifts or the `site`'s.
    #[serde(default = "lift_scope")]
    pub scope: String,
    /// The lift's id, or the building's or site's for a total.
    pub device_id: String,
    pub name: Option<String>,
    pub building: Option<String>,
    /// Time in normal service over the quarter less planned maintenance
    /// and inspection (`lifts::stats`).
    pub availability: Option<f64>,
    /// Fault, out of service, fire service.
    pub downtime_hours: f64,
    /// Maintenance and inspection.
    pub planned_hours: f64,
    pub faults: i64,
    pub entrapments: i64,
    /// Faults raised during maintenance or inspection.
    #[serde(default)]
    pub faults_in_maintenance: i64,
    /// Trips counted by the lift's register (missing without readings).
    pub trips: Option<f64>,
    pub faults_per_1000_trips: Option<f64>,
    /// Hours in service per fault.
    pub mtbf_hours: Option<f64>,
    /// Per lift and day of the quarter.
    #[serde(default)]
    pub trips_per_day: f64,
    #[serde(default)]
    pub door_cycles: f64,
    #[serde(default)]
    pub door_cycles_per_day: f64,
    /// Lifts in the row (1 for a lift).
    #[serde(default = "one")]
    pub lifts: usize,
}

fn lift_scope() -> String {
    "lift".into()
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateRow {
    pub device_id: String,
    pub name: Option<String>,
    pub building: Option<String>,
    pub granted: i64,
    pub denied: i64,
    pub forced: i64,
    pub held_open: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertRow {
    pub rule: String,
    pub severity: String,
    pub count: usize,
    /// Of `count`, raised by `analytics replay`: never paged, so not in
    /// the acknowledgement figures.
    #[serde(default)]
    pub replayed: usize,
    /// Of the paged (live) alerts.
    pub acknowledged: usize,
    /// Acknowledged by the response deadline.
    pub within_deadline: usize,
    pub median_minutes_to_acknowledge: Option<f64>,
    pub max_minutes_to_acknowledge: Option<f64>,
    pub median_minutes_to_resolve: Option<f64>,
    pub still_open: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DataQuality {
    pub meters: usize,
    /// Meters without a single reading in the quarter.
    pub meters_without_data: Vec<String>,
    /// Known meter-hours / all meter-hours.
    pub coverage: f64,
    /// Meters below 99 % coverage, with theirs.
    pub incomplete_meters: Vec<(String, f64)>,
    /// Intervals bridged over a gap in the readings.
    pub gaps: u64,
    /// Register corrections applied: rollovers, resets, replacements, spikes.
    pub corrections: Vec<(String, u64)>,
    /// Intervals whose consumption could not be known (implausible jumps).
    pub implausible: u64,
    /// Dead letters of the site's topics, by reason.
    pub dead_letters: Vec<(String, i64)>,
}

/// An event a baseline model does not know, on one meter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NonRoutineEvent {
    /// The retrofits whose meters include this one (empty: none).
    pub retrofits: Vec<String>,
    pub meter: String,
    /// `gap bridged`, `reset`, `rollover`, `replacement`, `spike`,
    /// `implausible`, or `alert: <rule>`.
    pub kind: String,
    pub from: DateTime<Utc>,
    /// `None`: still open at the quarter's end.
    pub to: Option<DateTime<Utc>>,
    /// The use in the affected interval where it was estimated (a gap is
    /// interpolated), in `unit`; `None` where the effect is not estimated.
    pub estimated_use: Option<f64>,
    pub unit: String,
    /// What the report did with it.
    pub treatment: String,
}

/// One day for the baseline-vs-actual chart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChartDay {
    pub date: NaiveDate,
    pub actual: Option<f64>,
    pub predicted: Option<f64>,
}
