//! The hourly baseline model, CalTRACK's time of week and temperature
//! (TOWT), where a group has hourly data and its site a named weather
//! station. It stands beside the daily model as a second, independent
//! measurement of the same saving: the daily model is the one the report's
//! verdicts use (its interval is the calibrated one), the hourly one says
//! whether a finer model agrees.
//!
//! The model, as CalTRACK 2.0 (section 3) states it:
//! - 168 time-of-week indicators (site-local weekday × hour), no intercept;
//! - outdoor temperature as a piecewise-linear term with knots at 30, 45,
//!   55, 65, 75 and 90 °F (−1.1 … 32.2 °C); a bin with fewer than 20
//!   hours of training data is merged into its neighbour;
//! - separate temperature terms for occupied and unoccupied hours of the
//!   week: an hour of the week is occupied when at least 65 % of its
//!   residuals from a simple degree-hour fit (10 °C and 18.3 °C, i.e. 50
//!   and 65 °F) are positive;
//! - one model per calendar month, fitted on that month's hours at weight
//!   1 and the two neighbouring months' at weight ½ ("three-month
//!   weighted" segmentation).
//!
//! Quality is held to ASHRAE Guideline 14's hourly limits (CV(RMSE) ≤
//! 30 %, |NMBE| ≤ 10 %), the NMBE out of sample: each baseline month is
//! predicted by a model fitted without it. The savings uncertainty uses
//! the guideline's formula on daily sums of those out-of-sample residuals,
//! with their lag-1 autocorrelation: hourly residuals carry a daily cycle
//! that a lag-1 correction at the hourly resolution would understate.
//!
//! Pure: hours in, numbers out.

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use serde::{Deserialize, Serialize};

use super::model::{lag1_autocorrelation, student_t_quantile};

/// CalTRACK's temperature knots, 30, 45, 55, 65, 75 and 90 °F, in °C.
pub const KNOTS_C: [f64; 6] = [-1.111, 7.222, 12.778, 18.333, 23.889, 32.222];
/// A temperature bin needs this many hours of training data.
const MIN_BIN_HOURS: usize = 20;
/// An hour of the week is occupied when this share of its residuals from
/// the degree-hour fit is positive.
const OCCUPIED_SHARE: f64 = 0.65;
/// ASHRAE Guideline 14's limits for hourly models.
const CV_RMSE_LIMIT: f64 = 0.30;
const NMBE_LIMIT: f64 = 0.10;
const HOURS_OF_WEEK: usize = 168;

/// One site-local hour of a meter group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hour {
    /// Site-local start of the hour.
    pub local: NaiveDateTime,
    /// The group's use in the hour; `None` when any meter's is unknown.
    pub used: Option<f64>,
    /// Outdoor temperature, °C, from the site's weather station.
    pub temperature: Option<f64>,
}

impl Hour {
    fn hour_of_week(&self) -> usize {
        self.local.weekday().num_days_from_monday() as usize * 24 + self.local.hour() as usize
    }

    fn known(&self) -> Option<(f64, f64)> {
        self.used.zip(self.temperature)
    }
}

/// The hourly model's measurement of a saving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HourlyResult {
    #[serde(deserialize_with = "crate::static_str::deserialize")]
    pub method: crate::static_str::Label,
    /// Baseline hours with use and temperature, fitted on.
    pub baseline_hours: usize,
    /// Reporting hours compared.
    pub reporting_hours: usize,
    /// Reporting hours left out (use or temperature unknown, or no model
    /// for their month).
    pub reporting_hours_missing: usize,
    /// Hours of the week found occupied (of 168), over the baseline.
    pub occupied_hours_of_week: usize,
    /// In sample, at the hourly resolution.
    pub r2: f64,
    pub cv_rmse: f64,
    /// Each baseline month predicted by a model fitted without it.
    pub cv_rmse_out_of_sample: Option<f64>,
    pub nmbe_out_of_sample: Option<f64>,
    /// Lag-1 autocorrelation of the daily sums of the out-of-sample
    /// residuals (the uncertainty's correction).
    pub autocorrelation: f64,
    /// ASHRAE 14's hourly limits met (CV(RMSE) ≤ 30 %, NMBE out of
    /// sample within ±10 %).
    pub meets_guideline: bool,
    pub adjusted_baseline: f64,
    pub actual: f64,
    pub savings: f64,
    pub savings_fraction: Option<f64>,
    /// ± at 90 %, in the group's unit.
    pub uncertainty: Option<f64>,
    /// Reporting hours whose temperature lies outside the baseline's range.
    pub extrapolated_hours: usize,
}

/// Why there is no hourly result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HourlyError {
    #[error("the group's meters have no hourly data in the baseline (daily or monthly reads)")]
    NoHourlyData,
    #[error(
        "{have} of the baseline's {of} hours have both use and outdoor temperature; the hourly \
         model needs 90 %"
    )]
    Insufficient { have: usize, of: usize },
    #[error("the baseline's mean use is zero")]
    ZeroMean,
    #[error("no reporting hour could be compared")]
    NoReporting,
}

/// A fitted time-of-week-and-temperature model (one segment).
#[derive(Debug, Clone)]
struct Towt {
    occupied: [bool; HOURS_OF_WEEK],
    knots: Vec<f64>,
    coefficients: Vec<f64>,
}

impl Towt {
    fn bins(&self) -> usize {
        self.knots.len() + 1
    }

    /// The non-zero features of an hour: (column, value).
    fn features(
        occupied: &[bool; HOURS_OF_WEEK],
        knots: &[f64],
        how: usize,
        t: f64,
        out: &mut Vec<(usize, f64)>,
    ) {
        out.clear();
        out.push((how, 1.0));
        let bins = knots.len() + 1;
        let base = HOURS_OF_WEEK + if occupied[how] { 0 } else { bins };
        if knots.is_empty() {
            out.push((base, t));
            return;
        }
        out.push((base, t.min(knots[0])));
        for i in 1..knots.len() {
            let v = (t - knots[i - 1]).clamp(0.0, knots[i] - knots[i - 1]);
            if v != 0.0 {
                out.push((base + i, v));
            }
        }
        let last = (t - knots[knots.len() - 1]).max(0.0);
        if last != 0.0 {
            out.push((base + knots.len(), last));
        }
    }

    fn predict(&self, how: usize, t: f64) -> f64 {
        let mut f = Vec::with_capacity(8);
        Self::features(&self.occupied, &self.knots, how, t, &mut f);
        f.iter().map(|(j, v)| self.coefficients[*j] * v).sum()
    }

    /// Fits on `(hour of week, temperature, use, weight)` rows.
    fn fit(rows: &[(usize, f64, f64, f64)]) -> Option<Towt> {
        let rows: Vec<_> = rows.iter().filter(|r| r.3 > 0.0).copied().collect();
        if rows.len() < 2 * HOURS_OF_WEEK {
            return None;
        }
        let occupied = occupancy(&rows)?;
        let knots = merge_bins(rows.iter().map(|r| r.1));
        let p = HOURS_OF_WEEK + 2 * (knots.len() + 1);
        let mut xtx = vec![0.0; p * p];
        let mut xty = vec![0.0; p];
        let mut f = Vec::with_capacity(8);
        for &(how, t, y, w) in &rows {
            Self::features(&occupied, &knots, how, t, &mut f);
            for &(i, vi) in &f {
                xty[i] += w * vi * y;
                for &(j, vj) in &f {
                    xtx[i * p + j] += w * vi * vj;
                }
            }
        }
        let coefficients = solve_ridge(xtx, xty, p)?;
        Some(Towt {
            occupied,
            knots,
            coefficients,
        })
    }
}

/// CalTRACK's occupancy lookup: a weighted fit of use on heating and
/// cooling degree-hours (10 °C, 18.3 °C); an hour of the week is occupied
/// when ≥ 65 % of its residuals are positive.
fn occupancy(rows: &[(usize, f64, f64, f64)]) -> Option<[bool; HOURS_OF_WEEK]> {
    let mut xtx = vec![0.0; 9];
    let mut xty = vec![0.0; 3];
    let x = |t: f64| [1.0, (10.0 - t).max(0.0), (t - 18.333).max(0.0)];
    for &(_, t, y, w) in rows {
        let v = x(t);
        for i in 0..3 {
            xty[i] += w * v[i] * y;
            for j in 0..3 {
                xtx[i * 3 + j] += w * v[i] * v[j];
            }
        }
    }
    let b = solve_ridge(xtx, xty, 3)?;
    let mut positive = [0.0; HOURS_OF_WEEK];
    let mut total = [0.0; HOURS_OF_WEEK];
    for &(how, t, y, w) in rows {
        let v = x(t);
        let e = y - (b[0] * v[0] + b[1] * v[1] + b[2] * v[2]);
        total[how] += w;
        if e > 0.0 {
            positive[how] += w;
        }
    }
    let mut occupied = [false; HOURS_OF_WEEK];
    for h in 0..HOURS_OF_WEEK {
        occupied[h] = total[h] > 0.0 && positive[h] / total[h] >= OCCUPIED_SHARE;
    }
    Some(occupied)
}

/// CalTRACK's knots with every bin holding at least 20 hours: a sparse bin
/// is merged into its neighbour by dropping the knot between them.
fn merge_bins(temperatures: impl Iterator<Item = f64>) -> Vec<f64> {
    let temps: Vec<f64> = temperatures.collect();
    let mut knots = KNOTS_C.to_vec();
    loop {
        let mut counts = vec![0usize; knots.len() + 1];
        for t in &temps {
            counts[knots.partition_point(|k| k < t)] += 1;
        }
        let Some(sparse) = counts.iter().position(|c| *c < MIN_BIN_HOURS) else {
            return knots;
        };
        if knots.is_empty() {
            return knots;
        }
        // The first bin loses its upper knot, any other its lower one.
        knots.remove(sparse.saturating_sub(1).min(knots.len() - 1));
    }
}

/// Solves the symmetric system `a x = b` (row-major `p × p`) by Cholesky,
/// with a small ridge on the diagonal so that a column with no data (an
/// hour of the week never seen, an occupancy class that is empty) gets a
/// zero coefficient instead of failing the fit.
fn solve_ridge(mut a: Vec<f64>, mut b: Vec<f64>, p: usize) -> Option<Vec<f64>> {
    let scale = (0..p).map(|i| a[i * p + i]).fold(0.0_f64, f64::max);
    if scale <= 0.0 {
        return None;
    }
    for i in 0..p {
        a[i * p + i] += 1e-9 * scale;
    }
    // In place: the lower triangle becomes L.
    for j in 0..p {
        let mut d = a[j * p + j];
        for k in 0..j {
            d -= a[j * p + k] * a[j * p + k];
        }
        if d <= 0.0 {
            return None;
        }
        let d = d.sqrt();
        a[j * p + j] = d;
        for i in j + 1..p {
            let mut s = a[i * p + j];
            for k in 0..j {
                s -= a[i * p + k] * a[j * p + k];
            }
            a[i * p + j] = s / d;
        }
    }
    for i in 0..p {
        let s: f64 = (0..i).map(|k| a[i * p + k] * b[k]).sum();
        b[i] = (b[i] - s) / a[i * p + i];
    }
    for i in (0..p).rev() {
        let s: f64 = (i + 1..p).map(|k| a[k * p + i] * b[k]).sum();
        b[i] = (b[i] - s) / a[i * p + i];
    }
    Some(b)
}

/// The twelve month segments fitted on the baseline's rows; `None` for a
/// month whose window holds too little data.
fn segments(rows: &[(u32, usize, f64, f64)]) -> Vec<Option<Towt>> {
    (1..=12u32)
        .map(|m| {
            let weighted: Vec<(usize, f64, f64, f64)> = rows
                .iter()
                .map(|&(month, how, t, y)| {
                    let d = (month + 12 - m) % 12;
                    let w = match d {
                        0 => 1.0,
                        1 | 11 => 0.5,
                        _ => 0.0,
                    };
                    (how, t, y, w)
                })
                .collect();
            Towt::fit(&weighted)
        })
        .collect()
}

/// Measures a saving with the hourly model: fits on the baseline's hours
/// (`[baseline.0, baseline.1)` local dates) and compares the reporting
/// period's (`[reporting.0, reporting.1)`).
pub fn measure(
    hours: &[Hour],
    baseline: (NaiveDate, NaiveDate),
    reporting: (NaiveDate, NaiveDate),
    confidence: f64,
) -> Result<HourlyResult, HourlyError> {
    let in_range = |h: &Hour, (a, b): (NaiveDate, NaiveDate)| {
        let d = h.local.date();
        d >= a && d < b
    };
    let base: Vec<&Hour> = hours
        .iter()
        .filter(|h| in_range(h, baseline) && h.known().is_some())
        .collect();
    let expected = ((baseline.1 - baseline.0).num_days().max(0) * 24) as usize;
    if !hours
        .iter()
        .any(|h| in_range(h, baseline) && h.used.is_some())
    {
        return Err(HourlyError::NoHourlyData);
    }
    if base.len() * 10 < expected * 9 || base.len() < 2 * HOURS_OF_WEEK {
        return Err(HourlyError::Insufficient {
            have: base.len(),
            of: expected,
        });
    }
    let rows: Vec<(u32, usize, f64, f64)> = base
        .iter()
        .map(|h| {
            let (y, t) = h.known().expect("known");
            (h.local.month(), h.hour_of_week(), t, y)
        })
        .collect();
    let n = rows.len();
    let mean = rows.iter().map(|r| r.3).sum::<f64>() / n as f64;
    if mean.abs() < 1e-12 {
        return Err(HourlyError::ZeroMean);
    }
    let models = segments(&rows);

    // In sample.
    let (mut sse, mut sst) = (0.0, 0.0);
    let mut fitted = 0usize;
    for &(month, how, t, y) in &rows {
        if let Some(m) = &models[month as usize - 1] {
            let e = y - m.predict(how, t);
            sse += e * e;
            sst += (y - mean).powi(2);
            fitted += 1;
        }
    }
    let p = models
        .iter()
        .flatten()
        .map(|m| HOURS_OF_WEEK + 2 * m.bins())
        .max()
        .unwrap_or(HOURS_OF_WEEK);
    let dof = fitted.saturating_sub(p).max(1) as f64;
    let cv_rmse = (sse / dof).sqrt() / mean;
    let r2 = if sst > 0.0 { 1.0 - sse / sst } else { 1.0 };

    // Out of sample: each baseline month predicted without it; the daily
    // sums of those residuals carry the uncertainty.
    let mut months: Vec<(i32, u32)> = base
        .iter()
        .map(|h| (h.local.year(), h.local.month()))
        .collect();
    months.sort_unstable();
    months.dedup();
    let mut daily: std::collections::BTreeMap<NaiveDate, (f64, usize)> = Default::default();
    let (mut oos_e, mut oos_e2, mut oos_n) = (0.0, 0.0, 0usize);
    if months.len() >= 3 {
        for ym in &months {
            let train: Vec<(usize, f64, f64, f64)> = base
                .iter()
                .filter(|h| (h.local.year(), h.local.month()) != *ym)
                .map(|h| {
                    let (y, t) = h.known().expect("known");
                    (h.hour_of_week(), t, y, 1.0)
                })
                .collect();
            let Some(m) = Towt::fit(&train) else { continue };
            for h in base
                .iter()
                .filter(|h| (h.local.year(), h.local.month()) == *ym)
            {
                let (y, t) = h.known().expect("known");
                let e = y - m.predict(h.hour_of_week(), t);
                oos_e += e;
                oos_e2 += e * e;
                oos_n += 1;
                let day = daily.entry(h.local.date()).or_default();
                day.0 += e;
                day.1 += 1;
            }
        }
    }
    let (cv_rmse_out_of_sample, nmbe_out_of_sample) = if oos_n > 0 {
        (
            Some((oos_e2 / oos_n as f64).sqrt() / mean),
            Some(oos_e / (oos_n as f64 * mean)),
        )
    } else {
        (None, None)
    };
    // Whole days only, in date order.
    let day_errors: Vec<f64> = daily
        .values()
        .filter(|(_, n)| *n == 24)
        .map(|(e, _)| *e)
        .collect();
    let autocorrelation = lag1_autocorrelation(&day_errors);

    // The reporting period.
    let (t_lo, t_hi) = rows
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |a, r| {
            (a.0.min(r.2), a.1.max(r.2))
        });
    let (mut adjusted, mut actual, mut compared, mut missing, mut extrapolated) =
        (0.0, 0.0, 0usize, 0usize, 0usize);
    for h in hours.iter().filter(|h| in_range(h, reporting)) {
        let model = models[h.local.month() as usize - 1].as_ref();
        match (h.known(), model) {
            (Some((y, t)), Some(m)) => {
                adjusted += m.predict(h.hour_of_week(), t);
                actual += y;
                compared += 1;
                if t < t_lo || t > t_hi {
                    extrapolated += 1;
                }
            }
            _ => missing += 1,
        }
    }
    let expected_reporting = ((reporting.1 - reporting.0).num_days().max(0) * 24) as usize;
    missing = missing.max(expected_reporting.saturating_sub(compared));
    if compared == 0 {
        return Err(HourlyError::NoReporting);
    }
    let savings = adjusted - actual;
    // ASHRAE 14 on daily sums: n baseline days, m reporting days.
    let uncertainty = (day_errors.len() >= 30 && adjusted > 0.0).then(|| {
        let nd = day_errors.len() as f64;
        let daily_mean = mean * 24.0;
        let cv = (day_errors.iter().map(|e| e * e).sum::<f64>() / (nd - 1.0)).sqrt() / daily_mean;
        let rho = autocorrelation.clamp(0.0, 0.99);
        let n_eff = (nd * (1.0 - rho) / (1.0 + rho)).max(1.0);
        let m = (compared as f64 / 24.0).max(1.0);
        let t = student_t_quantile(0.5 + confidence / 2.0, (nd - 1.0).max(1.0));
        t * 1.26 * cv * ((nd / n_eff) * (1.0 + 2.0 / nd) / m).sqrt() * adjusted
    });
    Ok(HourlyResult {
        method: "CalTRACK hourly: time of week and temperature, occupancy, three-month weighted \
                 segments",
        baseline_hours: n,
        reporting_hours: compared,
        reporting_hours_missing: missing,
        occupied_hours_of_week: {
            // Over the whole baseline, as a reader would count them.
            let all: Vec<(usize, f64, f64, f64)> =
                rows.iter().map(|r| (r.1, r.2, r.3, 1.0)).collect();
            occupancy(&all).map_or(0, |o| o.iter().filter(|x| **x).count())
        },
        r2,
        cv_rmse,
        cv_rmse_out_of_sample,
        nmbe_out_of_sample,
        autocorrelation,
        meets_guideline: cv_rmse <= CV_RMSE_LIMIT
            && nmbe_out_of_sample.is_some_and(|v| v.abs() <= NMBE_LIMIT),
        adjusted_baseline: adjusted,
        actual,
        savings,
        savings_fraction: (adjusted > 0.0).then(|| savings / adjusted),
        uncertainty,
        extrapolated_hours: extrapolated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    /// Two years of an office's hourly electricity: a weekday 08–19 load,
    /// heating below 12 °C and cooling above 22 °C on an annual and daily
    /// temperature cycle, AR(1) noise; from `cut` on, use is cut by
    /// `saving`.
    fn office(seed: u64, saving: f64, noise: f64, rho: f64) -> Vec<Hour> {
        let start = NaiveDate::from_ymd_opt(2024, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let cut = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        let mut k = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut normal = move || {
            // Sum of 12 uniforms − 6: a serviceable normal.
            (0..12)
                .map(|_| {
                    k ^= k << 13;
                    k ^= k >> 7;
                    k ^= k << 17;
                    (k >> 11) as f64 / (1u64 << 53) as f64
                })
                .sum::<f64>()
                - 6.0
        };
        let mut e = 0.0;
        (0..(366 + 365) * 24)
            .map(|i| {
                let local = start + Duration::hours(i);
                let doy = local.ordinal() as f64;
                let hour = local.hour() as f64;
                let t = 15.0 - 12.0 * (std::f64::consts::TAU * (doy + 10.0) / 365.0).cos()
                    + 4.0 * (std::f64::consts::TAU * (hour - 15.0) / 24.0).cos()
                    + 2.0 * normal();
                let working =
                    local.weekday().num_days_from_monday() < 5 && (8..19).contains(&local.hour());
                let base = if working { 80.0 } else { 30.0 }
                    + 3.0 * (12.0 - t).max(0.0)
                    + if working { 5.0 } else { 1.0 } * (t - 22.0).max(0.0);
                e = rho * e + (1.0 - rho * rho).sqrt() * normal();
                let used = base * (1.0 + noise * e);
                let used = if local.date() >= cut {
                    used * (1.0 - saving)
                } else {
                    used
                };
                Hour {
                    local,
                    used: Some(used),
                    temperature: Some(t),
                }
            })
            .collect()
    }

    fn d(y: i32, m: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, 1).unwrap()
    }

    #[test]
    fn recovers_a_known_saving_and_finds_the_working_hours() {
        let hours = office(1, 0.2, 0.08, 0.6);
        let r = measure(
            &hours,
            (d(2024, 1), d(2025, 1)),
            (d(2025, 1), d(2026, 1)),
            0.9,
        )
        .unwrap();
        let f = r.savings_fraction.unwrap();
        assert!((f - 0.2).abs() < 0.01, "{r:?}");
        // 5 days × 11 working hours.
        assert!((50..=60).contains(&r.occupied_hours_of_week), "{r:?}");
        assert!(r.meets_guideline && r.cv_rmse < 0.15, "{r:?}");
        assert!(r.nmbe_out_of_sample.unwrap().abs() < 0.03, "{r:?}");
        let u = r.uncertainty.unwrap();
        assert!(u > 0.0 && u < 0.2 * r.savings, "{r:?}");
        assert_eq!(r.baseline_hours, 366 * 24);
        assert_eq!(r.reporting_hours, 365 * 24);
        assert_eq!(r.reporting_hours_missing, 0);
    }

    #[test]
    fn the_interval_covers_the_truth_at_about_its_rate() {
        // 40 retrofits; the 90 % interval should cover the truth in most.
        let mut covered = 0;
        let runs = 40;
        for seed in 0..runs {
            let saving = [0.1, 0.3][seed as usize % 2];
            let rho = [0.0, 0.7][(seed as usize / 2) % 2];
            let hours = office(100 + seed, saving, 0.12, rho);
            let r = measure(
                &hours,
                (d(2024, 1), d(2025, 1)),
                (d(2025, 1), d(2026, 1)),
                0.9,
            )
            .unwrap();
            // The truth: what the baseline would have been, × the saving.
            let truth = r.actual / (1.0 - saving) * saving;
            if (r.savings - truth).abs() <= r.uncertainty.unwrap() {
                covered += 1;
            }
        }
        let share = covered as f64 / runs as f64;
        assert!((0.8..=1.0).contains(&share), "covered {covered} of {runs}");
    }

    #[test]
    fn too_little_baseline_is_refused_with_the_count() {
        let mut hours = office(2, 0.2, 0.05, 0.0);
        for h in hours.iter_mut().step_by(5) {
            h.temperature = None;
        }
        let e = measure(
            &hours,
            (d(2024, 1), d(2025, 1)),
            (d(2025, 1), d(2026, 1)),
            0.9,
        )
        .unwrap_err();
        assert!(matches!(e, HourlyError::Insufficient { .. }), "{e}");
        assert!(
            e.to_string().contains("of the baseline's 8784 hours"),
            "{e}"
        );
    }

    #[test]
    fn sparse_temperature_bins_are_merged() {
        // Nothing below 10 °C: the bins under −1.1 and 7.2 °C merge away.
        let temps = (0..1000).map(|i| 10.0 + (i % 25) as f64);
        let knots = merge_bins(temps);
        assert!(knots.iter().all(|k| *k > 7.0), "{knots:?}");
        assert!(!knots.is_empty());
        // All at one temperature: no knot left, one linear bin.
        assert!(merge_bins(std::iter::repeat_n(20.0, 500)).len() <= 1);
    }

    #[test]
    fn unknown_hours_are_missing_not_zero() {
        let mut hours = office(3, 0.2, 0.05, 0.0);
        let cut = d(2025, 1);
        let mut blanked = 0;
        for h in hours
            .iter_mut()
            .filter(|h| h.local.date() >= cut)
            .step_by(10)
        {
            h.used = None;
            blanked += 1;
        }
        let r = measure(&hours, (d(2024, 1), cut), (cut, d(2026, 1)), 0.9).unwrap();
        assert_eq!(r.reporting_hours_missing, blanked);
        assert!((r.savings_fraction.unwrap() - 0.2).abs() < 0.015, "{r:?}");
    }
}
