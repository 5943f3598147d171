//! What the report says in words, shared by HTML and PDF: the methodology
//! an auditor reads before signing, and one headline per retrofit.

use super::model::{QuarterReport, Scope};
use super::tables::group_digits;
use crate::savings::{RetrofitSavings, CONFIDENCE, MIN_DAY_COVERAGE};

/// The methodology, one paragraph per item (IPMVP, models and drivers,
/// periods, exclusions, model quality, uncertainty and verdicts, money and
/// carbon, intensity).
pub fn methodology(r: &QuarterReport) -> Vec<String> {
    let pct = |f: f64| format!("{:.0} %", f * 100.0);
    let mut out = vec![
        "Measurement boundary (IPMVP Option B, retrofit isolation): each retrofit is measured at \
         the sub-meters that supply the equipment it changed (the lighting circuits, the water \
         supplies, the lifts of the retrofit's purpose, building and area in the registry). A \
         baseline regression model, fitted on the period before the retrofit, predicts what the \
         group would have used under this quarter's conditions (the adjusted baseline). Savings \
         = adjusted baseline − measured use, both summed over the same days of this quarter."
            .to_owned(),
        "Models and drivers: ordinary least squares on daily use. Drivers are hours of darkness \
         at the site (from its latitude and longitude), gate entries (occupancy; a day without \
         gate data is missing, not zero), a weekend flag (public holidays are not a driver), and \
         degree-days from the site's named weather sensors; a driver without data or without \
         variation in the baseline is dropped and named in the notes. Each retrofit's equation, \
         with coefficients, standard errors and t values, the autocorrelation ρ and effective \
         sample size n′ behind its ±, and every day's drivers beside actual and model use \
         (savings_daily.csv) are given so the model can be refitted."
            .to_owned(),
        format!(
            "Periods: the baseline is each retrofit's registered baseline (by default the 365 \
             days before it); CalTRACK's sufficiency rule applies (at least 365 days, 90 % of \
             them complete, every calendar month at least half covered), and a result on an \
             insufficient baseline is marked provisional. The reporting period is this quarter, \
             {} to {} in {}. Each retrofit's dates are in its headline.",
            r.period_start
                .with_timezone(&tz(r))
                .format("%Y-%m-%d"),
            (r.period_end.with_timezone(&tz(r)) - chrono::Duration::days(1)).format("%Y-%m-%d"),
            r.time_zone
        ),
        format!(
            "Data exclusions: a day enters the fit and the comparison only when its meters \
             cover at least {} of its hours; other days are left out and counted. Register \
             rollovers, resets, meter replacements and spikes are corrected before differencing \
             (see Data quality); an interval whose consumption cannot be known is missing, never \
             zero.",
            pct(MIN_DAY_COVERAGE)
        ),
        "Model quality (ASHRAE Guideline 14): CV(RMSE) ≤ 30 % and |NMBE| ≤ 10 % on daily data, \
         ≤ 15 % and ≤ 5 % on monthly data. NMBE is measured out of sample (each calendar \
         month of the baseline left out in turn: refit without it, predict it), because an \
         in-sample least-squares fit has an NMBE of 0 by construction. A model that could not be fitted is \"not assessed\", never a pass."
            .to_owned(),
        format!(
            "Uncertainty and verdicts: ± figures are Guideline 14's savings uncertainty at {} \
             confidence, with the baseline's observations discounted for the residuals' lag-1 \
             autocorrelation. A target is met when the whole interval is at or above it, not \
             met when the whole interval is below it, and inconclusive when the interval \
             straddles it.",
            pct(CONFIDENCE)
        ),
        "Hourly model: where a temperature-driven group has hourly data and the site names a \
         weather station, the saving is measured a second time with CalTRACK's hourly model \
         (168 time-of-week terms, piecewise-linear outdoor temperature with knots at −1, 7, 13, \
         18, 24 and 32 °C, separate for occupied and unoccupied hours, one model per month \
         fitted on three months' weighted hours). It is held to ASHRAE 14's hourly limits with \
         its NMBE out of sample (each baseline month predicted by a model fitted without it), \
         and its interval comes from the daily sums of those out-of-sample residuals. The daily \
         model's result is the one judged against the target; the hourly one shows whether a \
         finer model agrees."
            .to_owned(),
        format!(
            "Money and carbon: costs are in {} at the tariffs below (time-of-use by the local \
             hour the energy was used); a utility without a tariff in the site's currency has no \
             cost, never a cost of 0. CO₂ uses the emission factors below.",
            r.currency
        ),
        "Weather: HVAC electricity is set against the quarter's heating and cooling degree-days \
         at 18 °C (the mean of each day's hourly excesses, from the weather devices the site \
         names); \"this quarter's HVAC at that weather\" is this quarter's kWh per degree-day \
         times another quarter's degree-days, a first-order normalisation (no base load), for \
         comparing quarters with different weather."
            .to_owned(),
        "Energy use intensity: the electricity of the meters in the registry for each building \
         (public areas and shared services, not tenants) over the building's gross floor area \
         from the registry, annualised as the quarter's kWh/m² × 365.25 / the quarter's days."
            .to_owned(),
    ];
    if r.savings.is_empty() {
        out.push("No retrofit was in effect during this quarter.".to_owned());
    }
    out
}

fn tz(r: &QuarterReport) -> chrono_tz::Tz {
    r.time_zone.parse().unwrap_or(chrono_tz::UTC)
}

/// One sentence on what a retrofit achieved this quarter, or why nothing
/// can be said.
pub fn headline(s: &RetrofitSavings, currency: &str) -> String {
    let num = |v: f64| group_digits(&format!("{v:.0}"));
    match (s.savings, s.savings_fraction) {
        (Some(saved), Some(fraction)) => {
            let mut h = format!("{} {} saved ({:.1} %", num(saved), s.unit, fraction * 100.0);
            if let Some((u, a)) = s
                .uncertainty
                .zip(s.adjusted_baseline)
                .filter(|(_, a)| *a > 0.0)
            {
                h.push_str(&format!(" ± {:.1} points at 90 %", u / a * 100.0));
            }
            h.push(')');
            let money: Vec<String> = [
                s.cost_saved.map(|c| format!("{} {currency}", num(c))),
                s.co2_kg_saved.map(|c| format!("{} kg CO₂", num(c))),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !money.is_empty() {
                h.push_str(&format!(", {}", money.join(" and ")));
            }
            if let Some(t) = s.target {
                h.push_str(&format!(
                    "; target {:.0} %: {}",
                    t * 100.0,
                    s.verdict.map_or("not judged", |v| v.as_str())
                ));
            }
            if s.provisional {
                h.push_str(" (provisional: the baseline is insufficient)");
            }
            h.push('.');
            h
        }
        _ => {
            let why = if s.daily_model.is_none() {
                "no baseline model could be fitted"
            } else if s.actual.is_none() {
                "no complete day of data this quarter"
            } else {
                "the savings could not be computed"
            };
            let detail = s
                .notes
                .first()
                .map(|n| format!(": {n}"))
                .unwrap_or_default();
            format!("No saving measured this quarter: {why}{detail}.")
        }
    }
}

/// `s` as a sentence: capitalised, ending in a full stop.
pub fn sentence(s: &str) -> String {
    let mut c = s.chars();
    let mut out: String = match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => return String::new(),
    };
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// The headline figures (label, value with its unit), as the HTML page's
/// tiles and the PDF's first table show them.
pub fn key_figures(r: &QuarterReport) -> Vec<(String, String)> {
    use estatemon_domain::device::Utility;
    let num = super::charts::format_number;
    let or_missing = |v: Option<String>| v.unwrap_or_else(|| "missing".into());
    let site_rows = || r.totals.iter().filter(|t| t.scope == Scope::Site);
    let mut out = Vec::new();
    for u in Utility::ALL {
        if let Some(t) = site_rows().find(|t| t.utility == u) {
            out.push((
                format!("{} this quarter", u.as_str()),
                or_missing(t.quantity.map(|q| format!("{} {}", num(q), t.unit))),
            ));
        }
    }
    let cost: Option<f64> = site_rows().map(|t| t.cost).sum();
    out.push((
        "cost".into(),
        or_missing(cost.map(|c| format!("{} {}", num(c), r.currency))),
    ));
    let co2: Option<f64> = site_rows().map(|t| t.co2_kg).sum();
    out.push((
        "CO₂".into(),
        or_missing(co2.map(|c| format!("{} t", num(c / 1000.0)))),
    ));
    out.push((
        "peak demand (15 min)".into(),
        or_missing(r.demand.peak_kw.map(|k| format!("{} kW", num(k)))),
    ));
    out.push((
        "night base load".into(),
        or_missing(r.demand.night_base_kw.map(|k| format!("{} kW", num(k)))),
    ));
    let alerts: usize = r.alerts.iter().map(|a| a.count).sum();
    let c = &r.alert_coverage;
    out.push((
        "alerts".into(),
        if c.complete() {
            format!("{alerts}")
        } else {
            format!(
                "{alerts}, incomplete: rules evaluated over {:.1} % of the quarter",
                c.evaluated * 100.0
            )
        },
    ));
    for g in &r.savings_groups {
        out.push((
            format!("{} savings", g.name.to_lowercase()),
            or_missing(g.savings_fraction.map(|f| {
                format!(
                    "{:.1} %{}",
                    f * 100.0,
                    g.target
                        .map(|t| {
                            // The whole basis is in the savings table.
                            let from = if g.target_basis.starts_with("the retrofits") {
                                ", from its retrofits' registered targets"
                            } else if g.target_basis.starts_with("the configuration") {
                                ", the configuration's default"
                            } else {
                                ""
                            };
                            format!(" (target {:.0} %{from})", t * 100.0)
                        })
                        .unwrap_or_default()
                )
            })),
        ));
    }
    out
}
