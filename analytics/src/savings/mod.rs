//! Measured savings of retrofits (IPMVP option C, ASHRAE Guideline 14).
//!
//! For each retrofit: the meter group's daily use over the baseline period
//! (local days, from the hourly registers), the drivers of each day (hours
//! of darkness at the site, gate entries, weekend, degree-days), a baseline
//! model fitted on daily data and checked on monthly data ([`model`]), the
//! adjusted baseline over the reporting period (what the group would have
//! used without the retrofit, under the reporting period's conditions),
//! and the savings: kWh or m³, share, money under the configured tariff
//! (time-of-use by the hour the energy was used), CO₂, with the fractional
//! savings uncertainty at 90 % confidence and the target.
//!
//! Days where the group's data cover less than 95 % of the hours are left
//! out of both the fit and the comparison and counted as missing: a hole
//! is never read as zero use.
//!
//! Reads `sites`, `devices`, `retrofits`, `readings_hourly`, `events`;
//! writes nothing.

pub mod hourly;
pub mod model;
pub mod store;

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use estatemon_domain::config::{EnergyConfig, Tariff};
use estatemon_domain::device::Utility;
use estatemon_domain::retrofit::{Driver, Retrofit};
use estatemon_domain::sun;
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::energy::{self, Meter, SiteInfo, Source};
use model::{Fit, Limits};

/// Savings are stated at this two-sided confidence.
pub const CONFIDENCE: f64 = 0.9;
/// A day counts when the group's readings cover this share of its hours.
pub const MIN_DAY_COVERAGE: f64 = 0.95;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Period {
    pub from: NaiveDate,
    /// Exclusive.
    pub to: NaiveDate,
    /// Days with complete data, used.
    pub days_used: usize,
    /// Days without complete data, left out.
    pub days_missing: usize,
}

/// One day of the group, as charts and CSV show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DayPoint {
    pub date: NaiveDate,
    /// Measured use; `None` when the data are incomplete.
    pub actual: Option<f64>,
    /// The model's prediction under that day's drivers; `None` when a
    /// driver is unknown.
    pub predicted: Option<f64>,
    /// Whether the day is in the reporting period (else the baseline).
    pub reporting: bool,
    /// The model's drivers that day (`RetrofitSavings::drivers` order);
    /// `None` where unknown.
    pub drivers: Vec<Option<f64>>,
}

/// A retrofit's measured savings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetrofitSavings {
    pub id: String,
    pub name: String,
    pub purpose: String,
    pub area: Option<String>,
    pub date: NaiveDate,
    pub utility: Utility,
    #[serde(deserialize_with = "crate::static_str::deserialize")]
    pub unit: crate::static_str::Label,
    pub meters: Vec<String>,
    /// Drivers in the model (after dropping those without data or variation).
    pub drivers: Vec<Driver>,
    pub baseline: Period,
    pub reporting: Period,
    /// Fitted on daily data; the savings come from it.
    pub daily_model: Option<Fit>,
    /// The same drivers on monthly means, held to the monthly limits.
    pub monthly_model: Option<Fit>,
    /// Whether both models were fitted and meet ASHRAE 14's limits (NMBE
    /// out of sample); `guideline` says which of pass, fail, not assessed.
    pub meets_guideline: bool,
    /// `pass`, `fail` or `not_assessed` (a model could not be fitted: a
    /// missing model is never a pass).
    #[serde(deserialize_with = "crate::static_str::deserialize")]
    pub guideline: crate::static_str::Label,
    /// CalTRACK's baseline data sufficiency.
    pub baseline_sufficiency: Sufficiency,
    /// The result stands on an insufficient baseline: state it as
    /// provisional.
    pub provisional: bool,
    /// Reporting days whose drivers lie outside the baseline's range.
    pub extrapolation: Extrapolation,
    /// The degree-day form and balance points chosen (where the drivers
    /// include degree-days and the site's weather is known).
    pub temperature_model: Option<TemperatureModel>,
    /// The same saving measured by CalTRACK's hourly time-of-week and
    /// temperature model, where the group has hourly data and the site a
    /// weather station: a second opinion beside the daily model, which the
    /// verdict uses.
    pub hourly: Option<hourly::HourlyResult>,
    pub adjusted_baseline: Option<f64>,
    pub actual: Option<f64>,
    pub savings: Option<f64>,
    /// savings / adjusted baseline.
    pub savings_fraction: Option<f64>,
    /// ± absolute savings uncertainty at 90 % (kWh or m³).
    pub uncertainty: Option<f64>,
    /// uncertainty / savings (ASHRAE 14's fractional savings uncertainty).
    pub fractional_uncertainty: Option<f64>,
    pub cost_saved: Option<f64>,
    pub currency: String,
    pub co2_kg_saved: Option<f64>,
    pub target: Option<f64>,
    /// The target is the retrofit's own, from the registry (its M&V
    /// plan), not the configuration's default for its purpose.
    pub target_registered: bool,
    /// The target judged with the uncertainty: met (the whole 90 %
    /// interval is at or above it), not met (wholly below) or
    /// inconclusive (the interval straddles it).
    pub verdict: Option<Verdict>,
    /// `Some(true)` only when the verdict is met, `Some(false)` when not
    /// met, `None` when inconclusive or not measurable.
    pub meets_target: Option<bool>,
    pub daily: Vec<DayPoint>,
    /// What the reader should know: dropped drivers, failed limits, gaps.
    pub notes: Vec<String>,
}

/// A saving judged against its target with its uncertainty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    NotMet,
    Inconclusive,
}

impl Verdict {
    /// `fraction` ± `uncertainty` (both as shares of the adjusted
    /// baseline) against `target`: met when even the low end reaches it,
    /// not met when even the high end falls short, else inconclusive. A
    /// saving without an uncertainty cannot be judged.
    pub fn decide(fraction: f64, uncertainty: Option<f64>, target: f64) -> Verdict {
        match uncertainty {
            Some(u) if fraction - u >= target => Verdict::Met,
            Some(u) if fraction + u < target => Verdict::NotMet,
            _ => Verdict::Inconclusive,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "not met",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// CalTRACK's baseline data sufficiency: a baseline of at least 365 days,
/// at least 90 % of its days with complete data, and every calendar month
/// at least half covered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sufficiency {
    pub days: i64,
    pub days_complete: usize,
    /// Calendar months (`2026-03`) with under half their days complete,
    /// and months of the year the baseline never covers.
    pub months_short: Vec<String>,
    pub sufficient: bool,
}

/// The baseline must span this many days (CalTRACK: 12 months).
pub const BASELINE_DAYS: i64 = 365;

impl Sufficiency {
    pub fn assess(from: NaiveDate, to: NaiveDate, complete: &[NaiveDate]) -> Sufficiency {
        let days = (to - from).num_days().max(0);
        let mut per_month: std::collections::BTreeMap<(i32, u32), usize> = Default::default();
        for d in complete.iter().filter(|d| **d >= from && **d < to) {
            *per_month.entry((d.year(), d.month())).or_default() += 1;
        }
        let days_complete = per_month.values().sum();
        let mut months_short = Vec::new();
        // Months of the year the baseline covers, well or badly.
        let mut in_baseline = std::collections::BTreeSet::new();
        let mut m = NaiveDate::from_ymd_opt(from.year(), from.month(), 1).expect("first of month");
        while m < to {
            let next = m
                .checked_add_months(chrono::Months::new(1))
                .expect("a month later");
            let span = (next.min(to) - m.max(from)).num_days().max(0) as usize;
            if span > 0 {
                in_baseline.insert(m.month());
                let have = per_month.get(&(m.year(), m.month())).copied().unwrap_or(0);
                if have * 2 < span {
                    months_short.push(format!("{:04}-{:02}", m.year(), m.month()));
                }
            }
            m = next;
        }
        for month in (1..=12u32).filter(|m| !in_baseline.contains(m)) {
            months_short.push(format!("month {month:02} not in the baseline"));
        }
        let sufficient = days >= BASELINE_DAYS
            && days_complete as f64 >= 0.9 * BASELINE_DAYS as f64
            && months_short.is_empty();
        Sufficiency {
            days,
            days_complete,
            months_short,
            sufficient,
        }
    }
}

/// Reporting days whose drivers lie outside what the baseline saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Extrapolation {
    pub days: usize,
    /// Of the reporting days compared.
    pub share: f64,
    /// The drivers that left the baseline's range.
    pub drivers: Vec<Driver>,
}

/// A day of the meter group with its drivers.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDay {
    pub date: NaiveDate,
    pub used: f64,
    /// Share of the day's meter-hours with known consumption.
    pub coverage: f64,
    /// Cost of the day's use under the tariff.
    pub cost: f64,
    pub drivers: HashMap<Driver, f64>,
    /// Outdoor temperatures (°C, hourly means) of the day from the site's
    /// weather devices; empty when unknown. Degree-days are the day's mean
    /// of the hourly excesses over (or under) the balance point, so a mild
    /// day with a cold night still counts some heating.
    pub temperatures: Vec<f64>,
}

/// The temperature model CalTRACK's search chose: which degree-days, at
/// which balance points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemperatureModel {
    /// `intercept only`, `heating`, `cooling` or `heating and cooling`.
    #[serde(deserialize_with = "crate::static_str::deserialize")]
    pub form: crate::static_str::Label,
    pub heating_base_c: Option<f64>,
    pub cooling_base_c: Option<f64>,
    pub adjusted_r2: f64,
    /// Candidates fitted (forms × balance points).
    pub candidates: usize,
}

/// Degree-days of a day's hourly temperatures at a balance point.
pub fn degree_days(temperatures: &[f64], base: f64, heating: bool) -> Option<f64> {
    if temperatures.is_empty() {
        return None;
    }
    let sum: f64 = temperatures
        .iter()
        .map(|t| if heating { base - t } else { t - base }.max(0.0))
        .sum();
    Some(sum / temperatures.len() as f64)
}

/// Balance points searched, °C (CalTRACK: 30–90 °F).
const BALANCE_POINTS_C: std::ops::RangeInclusive<i32> = -1..=32;

/// CalTRACK's daily temperature model selection: over the baseline's
/// complete days, every form the retrofit's drivers allow (intercept only,
/// heating degree-days, cooling degree-days, both) at every balance point
/// (1 °C steps, cooling base ≥ heating base), with the other drivers kept;
/// a degree-day term must have at least 10 days and 10 °C·d of degree-days,
/// a positive slope and |t| ≥ 1.65 (p < 0.1); the highest adjusted R² wins.
pub fn select_temperature_model(
    days: &[&GroupDay],
    others: &[Driver],
    heating: bool,
    cooling: bool,
) -> Option<TemperatureModel> {
    let days: Vec<&GroupDay> = days
        .iter()
        .copied()
        .filter(|d| !d.temperatures.is_empty() && others.iter().all(|k| d.drivers.contains_key(k)))
        .collect();
    if days.len() < 30 {
        return None;
    }
    let y: Vec<f64> = days.iter().map(|d| d.used).collect();
    let dd = |b: f64, heating: bool| -> Vec<f64> {
        days.iter()
            .map(|d| degree_days(&d.temperatures, b, heating).unwrap_or(0.0))
            .collect()
    };
    let mut best: Option<TemperatureModel> = None;
    let mut candidates = 0;
    let mut consider = |h: Option<f64>, c: Option<f64>| {
        let hdd: Vec<f64> = h.map_or(Vec::new(), |b| dd(b, true));
        let cdd: Vec<f64> = c.map_or(Vec::new(), |b| dd(b, false));
        for dd in [&hdd, &cdd] {
            if !dd.is_empty()
                && (dd.iter().filter(|v| **v > 0.0).count() < 10 || dd.iter().sum::<f64>() < 10.0)
            {
                return;
            }
        }
        let x: Vec<Vec<f64>> = (0..days.len())
            .map(|i| {
                let mut row: Vec<f64> = others.iter().map(|k| days[i].drivers[k]).collect();
                row.extend(hdd.get(i));
                row.extend(cdd.get(i));
                row
            })
            .collect();
        candidates += 1;
        let Ok(f) = model::fit(&y, &x, Limits::DAILY) else {
            return;
        };
        let terms = h.is_some() as usize + c.is_some() as usize;
        let k = others.len();
        let significant =
            (k..k + terms).all(|j| f.coefficients[j + 1] > 0.0 && f.t_values[j] >= 1.65);
        if !significant {
            return;
        }
        let adj = f.adjusted_r2();
        if best.as_ref().is_none_or(|b| adj > b.adjusted_r2 + 1e-12) {
            best = Some(TemperatureModel {
                form: match (h, c) {
                    (None, None) => "intercept only",
                    (Some(_), None) => "heating",
                    (None, Some(_)) => "cooling",
                    (Some(_), Some(_)) => "heating and cooling",
                },
                heating_base_c: h,
                cooling_base_c: c,
                adjusted_r2: adj,
                candidates: 0,
            });
        }
    };
    consider(None, None);
    for b in BALANCE_POINTS_C.map(f64::from) {
        if heating {
            consider(Some(b), None);
        }
        if cooling {
            consider(None, Some(b));
        }
    }
    if heating && cooling {
        for h in BALANCE_POINTS_C.map(f64::from) {
            for c in BALANCE_POINTS_C.map(f64::from).filter(|c| *c >= h) {
                consider(Some(h), Some(c));
            }
        }
    }
    best.map(|b| TemperatureModel { candidates, ..b })
}

/// The pure part: fits the baseline and measures savings over the days of
/// a group (baseline and reporting days, in date order).
pub fn measure(
    retrofit: &Retrofit,
    days: &[GroupDay],
    reporting_to: NaiveDate,
    utility: Utility,
    energy: &EnergyConfig,
) -> RetrofitSavings {
    let (bf, bt) = retrofit.baseline();
    let (rf, _) = retrofit.reporting();
    let mut notes = Vec::new();
    let in_baseline = |d: &GroupDay| d.date >= bf && d.date < bt;
    let in_reporting = |d: &GroupDay| d.date >= rf && d.date < reporting_to;
    let complete = |d: &GroupDay| d.coverage >= MIN_DAY_COVERAGE;

    // Degree-days at the balance points and in the form CalTRACK's search
    // chooses, where the site's weather is known.
    let mut wanted = retrofit.drivers();
    let is_temp = |k: &Driver| matches!(k, Driver::CoolingDegreeDays | Driver::HeatingDegreeDays);
    let heating = wanted.contains(&Driver::HeatingDegreeDays);
    let cooling = wanted.contains(&Driver::CoolingDegreeDays);
    let mut temperature_model = None;
    let recomputed: Vec<GroupDay>;
    let days: &[GroupDay] =
        if (heating || cooling) && days.iter().any(|d| !d.temperatures.is_empty()) {
            let others: Vec<Driver> = wanted.iter().copied().filter(|k| !is_temp(k)).collect();
            let base: Vec<&GroupDay> = days
                .iter()
                .filter(|d| in_baseline(d) && complete(d))
                .collect();
            match select_temperature_model(&base, &others, heating, cooling) {
                Some(m) => {
                    notes.push(format!(
                        "temperature model: {}{}{} (adjusted R² {:.3}; CalTRACK's balance-point \
                     search, {} candidates)",
                        m.form,
                        m.heating_base_c
                            .map(|b| format!(", heating base {b:.0} °C"))
                            .unwrap_or_default(),
                        m.cooling_base_c
                            .map(|b| format!(", cooling base {b:.0} °C"))
                            .unwrap_or_default(),
                        m.adjusted_r2,
                        m.candidates
                    ));
                    recomputed = days
                        .iter()
                        .map(|d| {
                            let mut d = d.clone();
                            d.drivers.retain(|k, _| !is_temp(k));
                            if let Some(v) = m
                                .heating_base_c
                                .and_then(|b| degree_days(&d.temperatures, b, true))
                            {
                                d.drivers.insert(Driver::HeatingDegreeDays, v);
                            }
                            if let Some(v) = m
                                .cooling_base_c
                                .and_then(|b| degree_days(&d.temperatures, b, false))
                            {
                                d.drivers.insert(Driver::CoolingDegreeDays, v);
                            }
                            d
                        })
                        .collect();
                    wanted = others;
                    if m.heating_base_c.is_some() {
                        wanted.push(Driver::HeatingDegreeDays);
                    }
                    if m.cooling_base_c.is_some() {
                        wanted.push(Driver::CoolingDegreeDays);
                    }
                    temperature_model = Some(m);
                    &recomputed
                }
                None => days,
            }
        } else {
            days
        };

    // Drivers with data on every complete baseline day and some variation.
    let mut drivers = Vec::new();
    for driver in wanted {
        let values: Vec<f64> = days
            .iter()
            .filter(|d| in_baseline(d) && complete(d))
            .filter_map(|d| d.drivers.get(&driver).copied())
            .collect();
        let base_days = days
            .iter()
            .filter(|d| in_baseline(d) && complete(d))
            .count();
        if values.is_empty() || values.len() < base_days * 9 / 10 {
            notes.push(format!(
                "driver {} left out: no data for most baseline days",
                driver.as_str()
            ));
            continue;
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
        if var <= 1e-12 * mean.abs().max(1.0) {
            notes.push(format!(
                "driver {} left out: it does not vary over the baseline",
                driver.as_str()
            ));
            continue;
        }
        drivers.push(driver);
    }
    let row = |d: &GroupDay| -> Option<Vec<f64>> {
        drivers.iter().map(|k| d.drivers.get(k).copied()).collect()
    };

    let baseline_days: Vec<(&GroupDay, Vec<f64>)> = days
        .iter()
        .filter(|d| in_baseline(d) && complete(d))
        .filter_map(|d| row(d).map(|x| (d, x)))
        .collect();
    let baseline_len = (bt - bf).num_days().max(0) as usize;
    let reporting_len = (reporting_to - rf).num_days().max(0) as usize;
    let baseline = Period {
        from: bf,
        to: bt,
        days_used: baseline_days.len(),
        days_missing: baseline_len.saturating_sub(baseline_days.len()),
    };
    let y: Vec<f64> = baseline_days.iter().map(|(d, _)| d.used).collect();
    let x: Vec<Vec<f64>> = baseline_days.iter().map(|(_, x)| x.clone()).collect();
    let daily_model = match model::fit(&y, &x, Limits::DAILY) {
        Ok(mut f) => {
            // Out of sample, a calendar month at a time.
            let months: Vec<u32> = baseline_days
                .iter()
                .map(|(d, _)| d.date.year() as u32 * 12 + d.date.month())
                .collect();
            f.cross_validate(&y, &x, &months);
            Some(f)
        }
        Err(e) => {
            notes.push(format!("no baseline model: {e}"));
            None
        }
    };
    let complete_days: Vec<NaiveDate> = baseline_days.iter().map(|(d, _)| d.date).collect();
    let baseline_sufficiency = Sufficiency::assess(bf, bt, &complete_days);
    if !baseline_sufficiency.sufficient {
        notes.push(format!(
            "baseline insufficient (CalTRACK: 365 days, 90 % complete, every month half covered): \
             {} days, {} complete{}; the result is provisional",
            baseline_sufficiency.days,
            baseline_sufficiency.days_complete,
            if baseline_sufficiency.months_short.is_empty() {
                String::new()
            } else {
                format!("; short: {}", baseline_sufficiency.months_short.join(", "))
            }
        ));
    }
    // The range of each driver over the baseline the model was fitted on.
    let ranges: Vec<(f64, f64)> = (0..drivers.len())
        .map(|j| {
            baseline_days
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, x)| {
                    (lo.min(x[j]), hi.max(x[j]))
                })
        })
        .collect();
    let monthly_model = monthly_fit(&baseline_days, &mut notes);

    let mut daily = Vec::new();
    let mut extrapolation = Extrapolation::default();
    let (mut adjusted, mut actual, mut cost_actual, mut used_days) = (0.0, 0.0, 0.0, 0usize);
    for d in days {
        let reporting = in_reporting(d);
        if !reporting && !in_baseline(d) {
            continue;
        }
        let predicted = daily_model
            .as_ref()
            .and_then(|m| row(d).map(|x| m.predict(&x)));
        let known = complete(d).then_some(d.used);
        daily.push(DayPoint {
            date: d.date,
            actual: known,
            predicted,
            reporting,
            drivers: drivers.iter().map(|k| d.drivers.get(k).copied()).collect(),
        });
        if let (true, Some(p), Some(a)) = (reporting, predicted, known) {
            adjusted += p;
            actual += a;
            cost_actual += d.cost;
            used_days += 1;
            if let Some(x) = row(d) {
                let outside: Vec<Driver> = x
                    .iter()
                    .zip(&ranges)
                    .zip(&drivers)
                    .filter(|((v, (lo, hi)), _)| {
                        let margin = (hi - lo).abs() * 0.01;
                        **v < lo - margin || **v > hi + margin
                    })
                    .map(|(_, k)| *k)
                    .collect();
                if !outside.is_empty() {
                    extrapolation.days += 1;
                    for k in outside {
                        if !extrapolation.drivers.contains(&k) {
                            extrapolation.drivers.push(k);
                        }
                    }
                }
            }
        }
    }
    let reporting_period = Period {
        from: rf,
        to: reporting_to,
        days_used: used_days,
        days_missing: reporting_len.saturating_sub(used_days),
    };
    if reporting_period.days_missing > 0 {
        notes.push(format!(
            "{} reporting days without complete data are left out of the comparison",
            reporting_period.days_missing
        ));
    }
    let have = daily_model.is_some() && used_days > 0;
    let savings = have.then_some(adjusted - actual);
    let fraction = savings.filter(|_| adjusted > 0.0).map(|s| s / adjusted);
    let uncertainty = daily_model
        .as_ref()
        .filter(|_| have)
        .map(|m| m.savings_uncertainty_share(used_days, CONFIDENCE) * adjusted);
    let fractional_uncertainty = match (uncertainty, savings) {
        (Some(u), Some(s)) if s.abs() > 1e-9 => Some(u / s.abs()),
        _ => None,
    };
    // Money: the saved units at the average price of the units used in the
    // reporting period (time-of-use weighted by when they were used).
    // No tariff in the site's currency: no money, never a price of 0.
    let priced = energy.tariff(utility, &retrofit.site).is_some();
    let unit_price = if actual > 0.0 && priced {
        Some(cost_actual / actual)
    } else {
        None
    };
    let target = retrofit
        .target
        .or_else(|| energy.target(retrofit.purpose, retrofit.area.as_deref()));
    if retrofit.target.is_none() {
        if let Some(t) = target {
            notes.push(format!(
                "target {:.0} % is the configuration's default for {} ([[energy.target]]): \
                 the registry gives this retrofit none",
                t * 100.0,
                retrofit.purpose.as_str()
            ));
        }
    }
    if used_days > 0 {
        extrapolation.share = extrapolation.days as f64 / used_days as f64;
    }
    if extrapolation.days > 0 {
        let names: Vec<&str> = extrapolation.drivers.iter().map(|d| d.as_str()).collect();
        notes.push(format!(
            "the model extrapolates on {} of {} reporting days ({:.0} %): {} outside the baseline's range",
            extrapolation.days,
            used_days,
            extrapolation.share * 100.0,
            names.join(", ")
        ));
    }
    // A model that could not be fitted is "not assessed", never a pass.
    let guideline = match (&daily_model, &monthly_model) {
        (None, _) => "not_assessed",
        (Some(d), m) if !d.meets_guideline || m.as_ref().is_some_and(|m| !m.meets_guideline) => {
            "fail"
        }
        (Some(_), None) => "not_assessed",
        (Some(_), Some(_)) => "pass",
    };
    let meets_guideline = guideline == "pass";
    let provisional = !baseline_sufficiency.sufficient;
    if let Some(m) = &daily_model {
        if !m.meets_guideline {
            notes.push(format!(
                "daily model fails ASHRAE 14 (CV(RMSE) {:.1} % ≤ {:.0} %, NMBE out of sample {:.2} % within ±{:.0} %)",
                m.cv_rmse * 100.0,
                m.limits.cv_rmse * 100.0,
                m.nmbe_out_of_sample.unwrap_or(m.nmbe) * 100.0,
                m.limits.nmbe * 100.0
            ));
        }
    }
    if let Some(m) = &monthly_model {
        if !m.meets_guideline {
            notes.push(format!(
                "monthly model fails ASHRAE 14 (CV(RMSE) {:.1} % ≤ {:.0} %, NMBE out of sample {:.2} % within ±{:.0} %)",
                m.cv_rmse * 100.0,
                m.limits.cv_rmse * 100.0,
                m.nmbe_out_of_sample.unwrap_or(m.nmbe) * 100.0,
                m.limits.nmbe * 100.0
            ));
        }
    }
    let verdict = fraction.zip(target).map(|(f, t)| {
        Verdict::decide(
            f,
            uncertainty.filter(|_| adjusted > 0.0).map(|u| u / adjusted),
            t,
        )
    });
    RetrofitSavings {
        id: retrofit.id.clone(),
        name: retrofit.name.clone(),
        purpose: retrofit.purpose.as_str().to_owned(),
        area: retrofit.area.clone(),
        date: retrofit.date,
        utility,
        unit: utility.unit(),
        meters: Vec::new(),
        drivers,
        baseline,
        reporting: reporting_period,
        daily_model,
        monthly_model,
        meets_guideline,
        guideline,
        baseline_sufficiency,
        provisional,
        extrapolation,
        temperature_model,
        hourly: None,
        adjusted_baseline: have.then_some(adjusted),
        actual: have.then_some(actual),
        savings,
        savings_fraction: fraction,
        uncertainty,
        fractional_uncertainty,
        cost_saved: savings.zip(unit_price).map(|(s, p)| s * p),
        currency: energy.currency_of(&retrofit.site).to_owned(),
        co2_kg_saved: savings.map(|s| s * energy.emission_factors_of(&retrofit.site).of(utility)),
        target,
        target_registered: retrofit.target.is_some(),
        verdict,
        meets_target: verdict.and_then(|v| match v {
            Verdict::Met => Some(true),
            Verdict::NotMet => Some(false),
            Verdict::Inconclusive => None,
        }),
        daily,
        notes,
    }
}

/// The daily model's drivers on monthly means (months with ≥ 20 complete
/// days), when the baseline has at least 6 such months.
fn monthly_fit(days: &[(&GroupDay, Vec<f64>)], notes: &mut Vec<String>) -> Option<Fit> {
    let mut months: std::collections::BTreeMap<(i32, u32), (f64, Vec<f64>, usize)> =
        Default::default();
    for (d, x) in days {
        let e = months
            .entry((d.date.year(), d.date.month()))
            .or_insert_with(|| (0.0, vec![0.0; x.len()], 0));
        e.0 += d.used;
        for (s, v) in e.1.iter_mut().zip(x) {
            *s += v;
        }
        e.2 += 1;
    }
    let full: Vec<_> = months.values().filter(|(_, _, n)| *n >= 20).collect();
    if full.len() < 6 {
        notes.push(format!(
            "no monthly model: {} complete months in the baseline (6 needed)",
            full.len()
        ));
        return None;
    }
    let y: Vec<f64> = full.iter().map(|(u, _, n)| u / *n as f64).collect();
    let x: Vec<Vec<f64>> = full
        .iter()
        .map(|(_, x, n)| x.iter().map(|v| v / *n as f64).collect())
        .collect();
    match model::fit(&y, &x, Limits::MONTHLY) {
        Ok(mut f) => {
            // Leave one month out.
            let groups: Vec<u32> = (0..y.len() as u32).collect();
            f.cross_validate(&y, &x, &groups);
            Some(f)
        }
        Err(e) => {
            notes.push(format!("no monthly model: {e}"));
            None
        }
    }
}

/// Price per unit of each interval under a tariff, as a polars expression
/// over `hour` and `weekday` (time-of-use periods first match wins).
pub fn price_expr(tariff: Option<&Tariff>) -> Expr {
    let Some(tariff) = tariff else {
        return lit(0.0);
    };
    let mut expr = lit(tariff.price);
    for p in tariff.periods.iter().rev() {
        let mut cond = col("hour")
            .gt_eq(lit(p.from_hour as i32))
            .and(col("hour").lt(lit(p.to_hour as i32)));
        if p.weekdays_only {
            cond = cond.and(col("weekday"));
        }
        expr = when(cond).then(lit(p.price)).otherwise(expr);
    }
    expr
}

/// Daily totals of a usage frame: `day`, `used`, `known_hours`, `cost`.
pub fn daily_totals(frame: DataFrame, tariff: Option<&Tariff>) -> PolarsResult<DataFrame> {
    frame
        .lazy()
        .with_column((col("used") * price_expr(tariff)).alias("cost"))
        .group_by([col("day")])
        .agg([
            col("used").sum().alias("used"),
            col("hours")
                .filter(col("used").is_not_null())
                .sum()
                .alias("known_hours"),
            col("cost").sum().alias("cost"),
        ])
        .sort(["day"], SortMultipleOptions::default())
        .collect()
}

/// Measures every retrofit of a site, with reporting periods cut at `until`.
pub async fn measure_site(
    client: &mut Client,
    energy_config: &EnergyConfig,
    site: &str,
    until: DateTime<Utc>,
) -> anyhow::Result<Vec<RetrofitSavings>> {
    energy::refresh_rollups(client).await?;
    let (info, meters) = energy::load_site(client, site).await?;
    let energy_config = &energy_config.for_site(&info.id, info.electricity_supplier.as_deref())?;
    let retrofits = estatemon_domain::schema::registry::retrofits(client, site).await?;
    let mut out = Vec::new();
    for r in &retrofits {
        out.push(measure_one(client, energy_config, &info, &meters, r, until).await?);
    }
    Ok(out)
}

/// Measures one retrofit.
pub async fn measure_one(
    client: &Client,
    energy_config: &EnergyConfig,
    site: &SiteInfo,
    meters: &[Meter],
    retrofit: &Retrofit,
    until: DateTime<Utc>,
) -> anyhow::Result<RetrofitSavings> {
    // The site's supplier's tariff and factor (a no-op when resolved).
    let energy_config = &energy_config.for_site(&site.id, site.electricity_supplier.as_deref())?;
    let group: Vec<Meter> = meters
        .iter()
        .filter(|m| retrofit.covers(&m.id, m.purpose, m.building.as_deref(), &m.area))
        .cloned()
        .collect();
    let utility = group.first().map_or(Utility::Electricity, |m| m.utility);
    let (bf, _) = retrofit.baseline();
    let (_, rt) = retrofit.reporting();
    let last_day = site.local_date(until);
    let reporting_to = rt.map_or(last_day, |t| t.min(last_day));
    let mut days = if group.is_empty() {
        Vec::new()
    } else {
        group_days(
            client,
            energy_config,
            site,
            &group,
            bf,
            reporting_to,
            retrofit,
        )
        .await?
    };
    days.sort_by_key(|d| d.date);
    let mut result = measure(retrofit, &days, reporting_to, utility, energy_config);
    let temperature_driven = retrofit
        .drivers()
        .iter()
        .any(|d| matches!(d, Driver::CoolingDegreeDays | Driver::HeatingDegreeDays));
    if temperature_driven && !group.is_empty() && !site.weather_devices.is_empty() {
        let (bf, bt) = retrofit.baseline();
        let (rf, _) = retrofit.reporting();
        let hours = group_hours(client, site, &group, bf, reporting_to).await?;
        match hourly::measure(&hours, (bf, bt), (rf, reporting_to), CONFIDENCE) {
            Ok(h) => {
                result.notes.push(format!(
                    "hourly model (CalTRACK time of week and temperature): saving {}{},                      CV(RMSE) {:.1} % hourly, NMBE out of sample {}; the daily model's {} is the                      one judged against the target",
                    h.savings_fraction
                        .map_or("not defined".into(), |f| format!("{:.1} %", f * 100.0)),
                    h.uncertainty
                        .filter(|_| h.adjusted_baseline > 0.0)
                        .map(|u| format!(" ± {:.1} points", u / h.adjusted_baseline * 100.0))
                        .unwrap_or_default(),
                    h.cv_rmse * 100.0,
                    h.nmbe_out_of_sample
                        .map_or("not assessed".into(), |v| format!("{:.2} %", v * 100.0)),
                    result
                        .savings_fraction
                        .map_or("result".into(), |f| format!("{:.1} %", f * 100.0)),
                ));
                result.hourly = Some(h);
            }
            Err(e) => result.notes.push(format!("no hourly model: {e}")),
        }
    }
    if group.is_empty() {
        result
            .notes
            .push("no meters match the retrofit's purpose, building, area and devices".into());
    }
    if retrofit
        .drivers()
        .iter()
        .any(|d| matches!(d, Driver::CoolingDegreeDays | Driver::HeatingDegreeDays))
    {
        result.notes.push(if site.weather_devices.is_empty() {
            "no outdoor temperature sensor is named for the site (`weather = [...]` in its \
             [[site]] table): degree-days are left out, never guessed from other sensors"
                .into()
        } else {
            format!(
                "outdoor temperature from {}",
                site.weather_devices.join(", ")
            )
        });
    }
    if group.iter().any(|m| m.utility != utility) {
        result
            .notes
            .push("the group mixes utilities: totals add unlike units".into());
    }
    result.meters = group.into_iter().map(|m| m.id).collect();
    Ok(result)
}

/// The group's hourly use over `[from, to)` local dates.
async fn group_usage(
    client: &Client,
    site: &SiteInfo,
    group: &[Meter],
    from: NaiveDate,
    to: NaiveDate,
) -> anyhow::Result<energy::Usage> {
    Ok(energy::load_usage(
        client,
        group,
        site.midnight(from),
        site.midnight(to),
        Source::Hourly,
    )
    .await?)
}

/// The group's hours over `[from, to)` local dates with the site's outdoor
/// temperature: an hour's use is known only when every meter's is, and
/// only from hourly intervals (a daily-read meter gives no hours).
async fn group_hours(
    client: &Client,
    site: &SiteInfo,
    group: &[Meter],
    from: NaiveDate,
    to: NaiveDate,
) -> anyhow::Result<Vec<hourly::Hour>> {
    let usage = group_usage(client, site, group, from, to).await?;
    let temps = energy::temperatures_by_hour(client, site, from, to).await?;
    let mut by_hour: std::collections::BTreeMap<i64, (f64, usize, bool)> = Default::default();
    for i in 0..usage.len() {
        let e = by_hour.entry(usage.start_ms[i]).or_default();
        match usage.used[i] {
            Some(v) if (usage.hours[i] - 1.0).abs() < 1e-6 => {
                e.0 += v;
                e.1 += 1;
            }
            _ => e.2 = true,
        }
    }
    let mut out = Vec::with_capacity(by_hour.len());
    let (start, end) = (
        site.midnight(from).timestamp_millis(),
        site.midnight(to).timestamp_millis(),
    );
    let mut ms = start;
    while ms < end {
        let (used, meters, unknown) = by_hour.get(&ms).copied().unwrap_or((0.0, 0, true));
        let local = DateTime::<Utc>::from_timestamp_millis(ms)
            .expect("a valid instant")
            .with_timezone(&site.tz)
            .naive_local();
        out.push(hourly::Hour {
            local,
            used: (!unknown && meters == group.len()).then_some(used),
            temperature: temps.get(&ms).copied(),
        });
        ms += 3_600_000;
    }
    Ok(out)
}

async fn group_days(
    client: &Client,
    energy_config: &EnergyConfig,
    site: &SiteInfo,
    group: &[Meter],
    from: NaiveDate,
    to: NaiveDate,
    retrofit: &Retrofit,
) -> anyhow::Result<Vec<GroupDay>> {
    let usage = group_usage(client, site, group, from, to).await?;
    let tariff = energy_config.tariff(group[0].utility, &site.id);
    let totals = daily_totals(energy::usage_frame(usage, site.tz)?, tariff)?;
    let wanted = retrofit.drivers();
    let entries = if wanted.contains(&Driver::Occupancy) {
        energy::gate_entries_by_day(client, site, from, to).await?
    } else {
        HashMap::new()
    };
    let temps = if wanted
        .iter()
        .any(|d| matches!(d, Driver::CoolingDegreeDays | Driver::HeatingDegreeDays))
    {
        energy::temperatures_by_day(client, site, from, to).await?
    } else {
        HashMap::new()
    };
    let day = totals.column("day")?.i32()?;
    let used = totals.column("used")?.f64()?;
    let known = totals.column("known_hours")?.f64()?;
    let cost = totals.column("cost")?.f64()?;
    let mut out = Vec::with_capacity(totals.height());
    for i in 0..totals.height() {
        let Some(d) = day.get(i) else { continue };
        let date = energy::date_of(d);
        let day_hours = (site.midnight(date + Duration::days(1)) - site.midnight(date))
            .num_minutes() as f64
            / 60.0;
        let mut drivers = HashMap::new();
        for driver in &wanted {
            let v = match driver {
                Driver::DarknessHours => {
                    Some(sun::darkness_hours(date, site.latitude, site.longitude))
                }
                // No gate data that day: unknown, not zero (the day is
                // left out of the fit and the comparison, with a note).
                Driver::Occupancy => entries.get(&date).copied(),
                Driver::Weekend => Some(if energy::is_weekend(date) { 1.0 } else { 0.0 }),
                // At 18 °C until the balance-point search moves them.
                Driver::CoolingDegreeDays => {
                    temps.get(&date).and_then(|t| degree_days(t, 18.0, false))
                }
                Driver::HeatingDegreeDays => {
                    temps.get(&date).and_then(|t| degree_days(t, 18.0, true))
                }
            };
            if let Some(v) = v {
                drivers.insert(*driver, v);
            }
        }
        out.push(GroupDay {
            date,
            used: used.get(i).unwrap_or(0.0),
            coverage: known.get(i).unwrap_or(0.0) / (day_hours * group.len() as f64),
            cost: cost.get(i).unwrap_or(0.0),
            drivers,
            temperatures: temps.get(&date).cloned().unwrap_or_default(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod calibration;
#[cfg(test)]
mod tests;
