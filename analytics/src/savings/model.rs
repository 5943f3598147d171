//! Baseline models (ASHRAE Guideline 14, IPMVP option C): ordinary least
//! squares of a meter group's use on its drivers, the model's quality
//! (R², CV(RMSE), NMBE with the guideline's limits) and the fractional
//! savings uncertainty. Pure functions over plain numbers.

use serde::{Deserialize, Serialize};

/// ASHRAE Guideline 14 calibration limits for a data resolution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub cv_rmse: f64,
    pub nmbe: f64,
}

impl Limits {
    /// Monthly data: CV(RMSE) ≤ 15 %, |NMBE| ≤ 5 %.
    pub const MONTHLY: Limits = Limits {
        cv_rmse: 0.15,
        nmbe: 0.05,
    };
    /// Finer than monthly (the guideline states hourly; daily models are
    /// held to the same): CV(RMSE) ≤ 30 %, |NMBE| ≤ 10 %.
    pub const DAILY: Limits = Limits {
        cv_rmse: 0.30,
        nmbe: 0.10,
    };
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("{have} observations are too few for {need} coefficients")]
    TooFewObservations { have: usize, need: usize },
    #[error("the drivers are collinear: the model cannot tell their effects apart")]
    Singular,
    #[error("the baseline's mean use is zero: CV(RMSE) and savings fractions are undefined")]
    ZeroMean,
}

/// A fitted linear model `use = b0 + Σ bi · xi` and its statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// Intercept first, then one per driver column.
    pub coefficients: Vec<f64>,
    /// Observations.
    pub n: usize,
    /// Coefficients (intercept included).
    pub p: usize,
    pub mean: f64,
    pub r2: f64,
    /// sqrt(Σ(y − ŷ)² / (n − p)) / ȳ.
    pub cv_rmse: f64,
    /// Σ(y − ŷ) / ((n − p) · ȳ).
    pub nmbe: f64,
    /// Lag-1 autocorrelation of the residuals (in time order).
    pub autocorrelation: f64,
    /// t statistics of the slopes (one per driver column): the guideline's
    /// and CalTRACK's significance test (|t| ≥ 1.65: p < 0.1).
    pub t_values: Vec<f64>,
    /// Standard errors of the coefficients (intercept first), from
    /// σ² (XᵀX)⁻¹: what an auditor needs to refit and check the model.
    pub standard_errors: Vec<f64>,
    pub limits: Limits,
    /// CV(RMSE) and NMBE of predictions for data the fit did not see
    /// (leave one group out: a month of days, or one month of a monthly
    /// model), set by [`Fit::cross_validate`]. An in-sample least-squares
    /// NMBE is 0 by construction, so this is the NMBE that can fail.
    pub cv_rmse_out_of_sample: Option<f64>,
    pub nmbe_out_of_sample: Option<f64>,
    /// Whether CV(RMSE) and NMBE are within `limits` (NMBE out of sample
    /// when known).
    pub meets_guideline: bool,
}

impl Fit {
    /// R² adjusted for the number of coefficients (CalTRACK's selection).
    pub fn adjusted_r2(&self) -> f64 {
        let (n, p) = (self.n as f64, self.p as f64);
        1.0 - (1.0 - self.r2) * (n - 1.0) / (n - p).max(1.0)
    }

    pub fn predict(&self, x: &[f64]) -> f64 {
        self.coefficients[0]
            + self.coefficients[1..]
                .iter()
                .zip(x)
                .map(|(b, x)| b * x)
                .sum::<f64>()
    }

    /// ASHRAE Guideline 14 (Annex B) fractional savings uncertainty at the
    /// given two-sided confidence, for `m` reporting observations and a
    /// savings fraction `f` (savings / adjusted baseline):
    ///
    /// `t · 1.26 · CV · sqrt((n / n') · (1 + 2/n) · (1/m)) / F`, with the
    /// effective number of observations `n' = n (1 − ρ) / (1 + ρ)`.
    ///
    /// `None` when nothing was saved (the fraction is undefined).
    pub fn fractional_savings_uncertainty(&self, m: usize, f: f64, confidence: f64) -> Option<f64> {
        if m == 0 || f.abs() < 1e-9 {
            return None;
        }
        Some(self.savings_uncertainty_share(m, confidence) / f.abs())
    }

    /// The uncertainty of the savings as a share of the adjusted baseline
    /// (the numerator of the fractional savings uncertainty): multiply by
    /// the adjusted baseline for an absolute ± in kWh or m³.
    pub fn savings_uncertainty_share(&self, m: usize, confidence: f64) -> f64 {
        let n = self.n as f64;
        let rho = self.autocorrelation.clamp(0.0, 0.99);
        let n_eff = (n * (1.0 - rho) / (1.0 + rho)).max(1.0);
        let t = student_t_quantile(0.5 + confidence / 2.0, (self.n - self.p).max(1) as f64);
        t * 1.26 * self.cv_rmse * ((n / n_eff) * (1.0 + 2.0 / n) / m.max(1) as f64).sqrt()
    }
}

impl Fit {
    /// Leave-one-group-out validation: for each group (e.g. the days of one
    /// calendar month), refit without it and predict it. Sets the
    /// out-of-sample CV(RMSE) and NMBE and re-judges the guideline with the
    /// out-of-sample NMBE. Needs at least 3 groups; does nothing otherwise.
    pub fn cross_validate(&mut self, y: &[f64], x: &[Vec<f64>], groups: &[u32]) {
        let mut ids: Vec<u32> = groups.to_vec();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() < 3 || y.len() != groups.len() {
            return;
        }
        let (mut sum_e, mut sum_e2, mut n) = (0.0, 0.0, 0usize);
        for g in ids {
            let (mut ty, mut tx) = (Vec::new(), Vec::new());
            for ((yi, xi), gi) in y.iter().zip(x).zip(groups) {
                if *gi != g {
                    ty.push(*yi);
                    tx.push(xi.clone());
                }
            }
            let Ok(train) = fit(&ty, &tx, self.limits) else {
                return;
            };
            for ((yi, xi), gi) in y.iter().zip(x).zip(groups) {
                if *gi == g {
                    let e = yi - train.predict(xi);
                    sum_e += e;
                    sum_e2 += e * e;
                    n += 1;
                }
            }
        }
        if n == 0 || self.mean.abs() < 1e-12 {
            return;
        }
        let cv = (sum_e2 / n as f64).sqrt() / self.mean;
        let nmbe = sum_e / (n as f64 * self.mean);
        self.cv_rmse_out_of_sample = Some(cv);
        self.nmbe_out_of_sample = Some(nmbe);
        self.meets_guideline =
            self.cv_rmse <= self.limits.cv_rmse && nmbe.abs() <= self.limits.nmbe;
    }
}

/// Ordinary least squares of `y` on the columns of `x` (one row per
/// observation, in time order) with an intercept.
pub fn fit(y: &[f64], x: &[Vec<f64>], limits: Limits) -> Result<Fit, ModelError> {
    let n = y.len();
    let k = x.first().map_or(0, Vec::len);
    let p = k + 1;
    if n < p + 2 {
        return Err(ModelError::TooFewObservations { have: n, need: p });
    }
    // Normal equations XᵀX b = Xᵀy, on centred columns for conditioning.
    let mean_y = y.iter().sum::<f64>() / n as f64;
    if mean_y.abs() < 1e-12 {
        return Err(ModelError::ZeroMean);
    }
    let means: Vec<f64> = (0..k)
        .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n as f64)
        .collect();
    let mut a = vec![vec![0.0; k]; k];
    let mut rhs = vec![0.0; k];
    for (row, &yi) in x.iter().zip(y) {
        for i in 0..k {
            let xi = row[i] - means[i];
            rhs[i] += xi * (yi - mean_y);
            for j in 0..k {
                a[i][j] += xi * (row[j] - means[j]);
            }
        }
    }
    let slopes = solve(a.clone(), rhs).ok_or(ModelError::Singular)?;
    let intercept = mean_y - slopes.iter().zip(&means).map(|(b, m)| b * m).sum::<f64>();
    let mut coefficients = vec![intercept];
    coefficients.extend(slopes);
    let mut fit = Fit {
        coefficients,
        n,
        p,
        mean: mean_y,
        r2: 0.0,
        cv_rmse: 0.0,
        nmbe: 0.0,
        autocorrelation: 0.0,
        t_values: Vec::new(),
        standard_errors: Vec::new(),
        limits,
        cv_rmse_out_of_sample: None,
        nmbe_out_of_sample: None,
        meets_guideline: false,
    };
    let residuals: Vec<f64> = x.iter().zip(y).map(|(r, yi)| yi - fit.predict(r)).collect();
    let ss_res: f64 = residuals.iter().map(|e| e * e).sum();
    let ss_tot: f64 = y.iter().map(|yi| (yi - mean_y).powi(2)).sum();
    let dof = (n - p) as f64;
    fit.r2 = if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else {
        1.0
    };
    fit.cv_rmse = (ss_res / dof).sqrt() / mean_y;
    fit.nmbe = residuals.iter().sum::<f64>() / (dof * mean_y);
    fit.autocorrelation = lag1_autocorrelation(&residuals);
    fit.meets_guideline = fit.cv_rmse <= limits.cv_rmse && fit.nmbe.abs() <= limits.nmbe;
    // Var(b) = σ² (XᵀX)⁻¹ on the centred columns: one solve per column.
    let sigma2 = ss_res / dof;
    let inverse: Vec<Option<Vec<f64>>> = (0..k)
        .map(|j| {
            let mut unit = vec![0.0; k];
            unit[j] = 1.0;
            solve(a.clone(), unit)
        })
        .collect();
    fit.t_values = (0..k)
        .map(|j| {
            inverse[j]
                .as_ref()
                .map(|col| col[j] * sigma2)
                .filter(|v| *v > 0.0)
                .map_or(f64::INFINITY, |v| fit.coefficients[j + 1] / v.sqrt())
        })
        .collect();
    // The intercept of centred columns: Var(b₀) = σ²/n + m̄ᵀ Var(b) m̄.
    let slope_var = |i: usize, j: usize| inverse[i].as_ref().map_or(f64::NAN, |c| c[j] * sigma2);
    let mut var0 = sigma2 / n as f64;
    for i in 0..k {
        for j in 0..k {
            var0 += means[i] * means[j] * slope_var(i, j);
        }
    }
    fit.standard_errors = std::iter::once(var0)
        .chain((0..k).map(|j| slope_var(j, j)))
        .map(|v| v.max(0.0).sqrt())
        .collect();
    Ok(fit)
}

pub(crate) fn lag1_autocorrelation(e: &[f64]) -> f64 {
    let denom: f64 = e.iter().map(|v| v * v).sum();
    if denom <= 0.0 || e.len() < 3 {
        return 0.0;
    }
    e.windows(2).map(|w| w[0] * w[1]).sum::<f64>() / denom
}

/// Gaussian elimination with partial pivoting; `None` when singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let k = b.len();
    let scale = a
        .iter()
        .flat_map(|r| r.iter())
        .fold(0.0_f64, |m, v| m.max(v.abs()))
        .max(1e-300);
    for col in 0..k {
        let pivot = (col..k).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-10 * scale {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (upper, lower) = a.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        for (offset, row) in lower.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            for (x, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[col + 1 + offset] -= f * b[col];
        }
    }
    let mut x = vec![0.0; k];
    for row in (0..k).rev() {
        let s: f64 = (row + 1..k).map(|c| a[row][c] * x[c]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// Quantile of the standard normal distribution (Acklam's rational
/// approximation, relative error < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Quantile of Student's t with `dof` degrees of freedom (Cornish–Fisher
/// expansion about the normal quantile, Abramowitz & Stegun 26.7.5; within
/// 0.1 % for dof ≥ 5, and baselines have dozens to hundreds).
pub fn student_t_quantile(p: f64, dof: f64) -> f64 {
    let z = normal_quantile(p);
    let (z3, z5, z7, z9) = (z.powi(3), z.powi(5), z.powi(7), z.powi(9));
    z + (z3 + z) / (4.0 * dof)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * dof.powi(2))
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * dof.powi(3))
        + (79.0 * z9 + 776.0 * z7 + 1482.0 * z5 - 1920.0 * z3 - 945.0 * z) / (92160.0 * dof.powi(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_line_exactly() {
        let x: Vec<Vec<f64>> = (0..20).map(|i| vec![i as f64, (i % 7) as f64]).collect();
        let y: Vec<f64> = x.iter().map(|r| 5.0 + 2.0 * r[0] - 3.0 * r[1]).collect();
        let f = fit(&y, &x, Limits::DAILY).unwrap();
        for (got, want) in f.coefficients.iter().zip([5.0, 2.0, -3.0]) {
            assert!((got - want).abs() < 1e-9, "{:?}", f.coefficients);
        }
        assert!((f.r2 - 1.0).abs() < 1e-12);
        assert!(f.cv_rmse < 1e-9 && f.nmbe.abs() < 1e-9);
        assert!(f.meets_guideline);
    }

    #[test]
    fn statistics_follow_the_guideline_definitions() {
        // y = 10 + x with residuals +1, −1, +1, −1 … : RMSE over n − p.
        let x: Vec<Vec<f64>> = (0..10).map(|i| vec![i as f64]).collect();
        let y: Vec<f64> = (0..10)
            .map(|i| 10.0 + i as f64 + if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let f = fit(&y, &x, Limits::MONTHLY).unwrap();
        let residuals: Vec<f64> = x.iter().zip(&y).map(|(r, y)| y - f.predict(r)).collect();
        let ss: f64 = residuals.iter().map(|e| e * e).sum();
        let mean = y.iter().sum::<f64>() / 10.0;
        assert!((f.cv_rmse - (ss / 8.0).sqrt() / mean).abs() < 1e-12);
        assert!((f.nmbe - residuals.iter().sum::<f64>() / (8.0 * mean)).abs() < 1e-12);
        assert!(
            f.autocorrelation < -0.5,
            "alternating residuals: {}",
            f.autocorrelation
        );
        assert!(f.r2 > 0.8 && f.r2 < 1.0);
    }

    #[test]
    fn standard_errors_are_the_textbook_ones() {
        // One driver: SE(b) = σ / √Sxx, SE(b₀) = σ √(1/n + x̄²/Sxx), with
        // σ² = SSE / (n − 2).
        let x: Vec<Vec<f64>> = (0..12).map(|i| vec![(i * 3 % 11) as f64]).collect();
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, r)| 4.0 + 1.5 * r[0] + [0.7, -1.1, 0.4, 0.9, -0.6, 0.2][i % 6])
            .collect();
        let f = fit(&y, &x, Limits::DAILY).unwrap();
        let n = x.len() as f64;
        let mean = x.iter().map(|r| r[0]).sum::<f64>() / n;
        let sxx: f64 = x.iter().map(|r| (r[0] - mean).powi(2)).sum();
        let sse: f64 = x
            .iter()
            .zip(&y)
            .map(|(r, yi)| (yi - f.predict(r)).powi(2))
            .sum();
        let sigma = (sse / (n - 2.0)).sqrt();
        let want = [
            sigma * (1.0 / n + mean * mean / sxx).sqrt(),
            sigma / sxx.sqrt(),
        ];
        for (got, want) in f.standard_errors.iter().zip(want) {
            assert!(
                (got - want).abs() < 1e-9,
                "{:?} vs {want}",
                f.standard_errors
            );
        }
        assert!((f.t_values[0] - f.coefficients[1] / f.standard_errors[1]).abs() < 1e-9);
    }

    #[test]
    fn a_noisy_model_fails_the_limits() {
        let x: Vec<Vec<f64>> = (0..40).map(|i| vec![(i % 5) as f64]).collect();
        let y: Vec<f64> = (0..40)
            .map(|i| if i % 2 == 0 { 2.0 } else { 20.0 })
            .collect();
        let f = fit(&y, &x, Limits::DAILY).unwrap();
        assert!(f.cv_rmse > 0.3);
        assert!(!f.meets_guideline);
    }

    #[test]
    fn refuses_what_it_cannot_fit() {
        let x: Vec<Vec<f64>> = (0..10).map(|i| vec![i as f64, 2.0 * i as f64]).collect();
        let y: Vec<f64> = (0..10).map(|i| i as f64 + 1.0).collect();
        assert_eq!(fit(&y, &x, Limits::DAILY), Err(ModelError::Singular));
        assert!(matches!(
            fit(&y[..3], &x[..3], Limits::DAILY),
            Err(ModelError::TooFewObservations { .. })
        ));
        assert_eq!(
            fit(&[0.0; 10], &x, Limits::DAILY).unwrap_err(),
            ModelError::ZeroMean
        );
    }

    #[test]
    fn quantiles_match_tables() {
        assert!((normal_quantile(0.95) - 1.644854).abs() < 1e-5);
        assert!((normal_quantile(0.025) + 1.959964).abs() < 1e-5);
        // t tables: t(0.95; 10) = 1.812, t(0.95; 30) = 1.697, t(0.95; 120) = 1.658.
        for (dof, want) in [(10.0, 1.8125), (30.0, 1.6973), (120.0, 1.6577)] {
            let got = student_t_quantile(0.95, dof);
            assert!((got - want).abs() < 2e-3, "dof {dof}: {got}");
        }
    }

    #[test]
    fn savings_uncertainty_shrinks_with_more_reporting_days_and_larger_savings() {
        let x: Vec<Vec<f64>> = (0..365).map(|i| vec![(i % 30) as f64]).collect();
        let y: Vec<f64> = (0..365)
            .map(|i| 100.0 + (i % 30) as f64 + ((i * 7919) % 13) as f64 - 6.0)
            .collect();
        let f = fit(&y, &x, Limits::DAILY).unwrap();
        let u90 = f.fractional_savings_uncertainty(90, 0.3, 0.9).unwrap();
        let u180 = f.fractional_savings_uncertainty(180, 0.3, 0.9).unwrap();
        let u_big = f.fractional_savings_uncertainty(90, 0.6, 0.9).unwrap();
        assert!(u180 < u90 && (u90 / u180 - 2f64.sqrt()).abs() < 1e-9);
        assert!((u90 / u_big - 2.0).abs() < 1e-9);
        assert!(f.fractional_savings_uncertainty(90, 0.0, 0.9).is_none());
        // By hand: t · 1.26 · CV · sqrt(n/n' · (1 + 2/n) / m) / F.
        let rho = f.autocorrelation.clamp(0.0, 0.99);
        let n = 365.0;
        let want = student_t_quantile(0.95, 363.0)
            * 1.26
            * f.cv_rmse
            * ((n / (n * (1.0 - rho) / (1.0 + rho))) * (1.0 + 2.0 / n) / 90.0).sqrt()
            / 0.3;
        assert!((u90 - want).abs() < 1e-12);
    }
}
