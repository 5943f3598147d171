use super::*;

fn retrofit(date: &str) -> Retrofit {
    toml::from_str(&format!(
        r#"
id = "led-garage"
name = "LED lighting: garage"
site = "harbour-view"
purpose = "public_lighting"
area = "garage"
date = {date}
"#
    ))
    .unwrap()
}

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// A year of garage lighting before and half a year after: use follows the
/// hours of darkness, times (1 − saving) from `cut`, with a little noise.
fn days(from: &str, to: &str, cut: &str, saving: f64) -> Vec<GroupDay> {
    let (mut date, to, cut) = (d(from), d(to), d(cut));
    let mut out = Vec::new();
    let mut k = 0u64;
    while date < to {
        let dark = sun::darkness_hours(date, 22.28, 114.16);
        k = k
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let noise = 1.0 + ((k >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.04;
        let base = (120.0 + 40.0 * dark) * noise;
        let used = if date >= cut {
            base * (1.0 - saving)
        } else {
            base
        };
        out.push(GroupDay {
            date,
            used,
            coverage: 1.0,
            cost: used * 0.8,
            temperatures: Vec::new(),
            drivers: HashMap::from([
                (Driver::DarknessHours, dark),
                (
                    Driver::Weekend,
                    if energy::is_weekend(date) { 1.0 } else { 0.0 },
                ),
            ]),
        });
        date += Duration::days(1);
    }
    out
}

#[test]
fn measures_a_known_saving_within_its_uncertainty() {
    let r = retrofit("2026-04-01");
    let series = days("2025-04-01", "2026-10-01", "2026-04-01", 0.45);
    let s = measure(
        &r,
        &series,
        d("2026-10-01"),
        Utility::Electricity,
        &EnergyConfig::default(),
    );
    let f = s.savings_fraction.unwrap();
    assert!((f - 0.45).abs() < 0.01, "{f}");
    let m = s.daily_model.as_ref().unwrap();
    assert!(m.r2 > 0.8 && m.meets_guideline, "{m:?}");
    assert!(s.monthly_model.as_ref().unwrap().meets_guideline);
    assert!(s.meets_guideline);
    assert_eq!(s.baseline.days_used, 365);
    assert_eq!(s.reporting.days_used, 183);
    // 90 % band around the savings, small with a good model.
    let u = s.uncertainty.unwrap();
    assert!(u > 0.0 && u < 0.05 * s.savings.unwrap(), "{u}");
    assert!((s.cost_saved.unwrap() - s.savings.unwrap() * 0.8).abs() < 1e-6);
    assert_eq!(s.target, Some(0.45), "the garage target from [energy]");
    // The saving is the target: the interval straddles it, so the verdict
    // is inconclusive, not "no" (or "yes") by the point estimate's luck.
    let share = u / s.adjusted_baseline.unwrap();
    assert!((f - 0.45).abs() < share, "{f} ± {share}");
    assert_eq!(s.verdict, Some(Verdict::Inconclusive));
    assert_eq!(s.meets_target, None);
    assert_eq!(s.guideline, "pass");
    assert!(s.baseline_sufficiency.sufficient && !s.provisional);
    // Out of sample, the NMBE is no longer 0 by construction.
    let nmbe = m.nmbe_out_of_sample.unwrap();
    assert!(nmbe != 0.0 && nmbe.abs() < 0.10, "{nmbe}");
    assert_eq!(s.extrapolation.days, 0, "{:?}", s.extrapolation);
}

#[test]
fn verdicts_use_the_uncertainty() {
    assert_eq!(Verdict::decide(0.30, Some(0.02), 0.25), Verdict::Met);
    assert_eq!(
        Verdict::decide(0.26, Some(0.02), 0.25),
        Verdict::Inconclusive
    );
    assert_eq!(
        Verdict::decide(0.249, Some(0.0064), 0.25),
        Verdict::Inconclusive
    );
    assert_eq!(Verdict::decide(0.20, Some(0.02), 0.25), Verdict::NotMet);
    assert_eq!(Verdict::decide(0.40, None, 0.25), Verdict::Inconclusive);
}

/// Issue 17: five winter months of baseline were marked "ASHRAE 14: pass"
/// and the summer savings extrapolated without a word.
#[test]
fn a_five_month_winter_baseline_is_provisional_and_never_a_pass() {
    let mut r = retrofit("2026-04-01");
    r.baseline_from = Some(d("2025-11-01"));
    let series = days("2025-11-01", "2026-10-01", "2026-04-01", 0.35);
    let s = measure(
        &r,
        &series,
        d("2026-10-01"),
        Utility::Electricity,
        &EnergyConfig::default(),
    );
    assert!(!s.baseline_sufficiency.sufficient);
    assert!(s.provisional);
    assert_eq!(s.baseline_sufficiency.days, 151);
    assert!(
        s.baseline_sufficiency
            .months_short
            .iter()
            .any(|m| m.contains("07")),
        "{:?}",
        s.baseline_sufficiency
    );
    assert_ne!(s.guideline, "pass", "no monthly model: not assessed");
    assert!(!s.meets_guideline);
    // Summer nights are shorter than any winter night the model saw.
    assert!(s.extrapolation.days > 100, "{:?}", s.extrapolation);
    assert!(s.extrapolation.drivers.contains(&Driver::DarknessHours));
    assert!(
        s.notes.iter().any(|n| n.contains("provisional")),
        "{:?}",
        s.notes
    );
    assert!(
        s.notes.iter().any(|n| n.contains("extrapolates")),
        "{:?}",
        s.notes
    );
}

#[test]
fn sufficiency_follows_caltrack() {
    let all: Vec<NaiveDate> = (0..365)
        .map(|i| d("2025-01-01") + Duration::days(i))
        .collect();
    let s = Sufficiency::assess(d("2025-01-01"), d("2026-01-01"), &all);
    assert!(s.sufficient, "{s:?}");
    // March mostly missing: flagged by name.
    let holes: Vec<NaiveDate> = all
        .iter()
        .copied()
        .filter(|x| !(x.month() == 3 && x.day() > 10))
        .collect();
    let s = Sufficiency::assess(d("2025-01-01"), d("2026-01-01"), &holes);
    assert!(!s.sufficient);
    assert_eq!(s.months_short, vec!["2025-03".to_owned()]);
}

#[test]
fn a_season_shift_without_a_retrofit_is_no_saving() {
    // Baseline April–September (short nights), "reporting" October–March
    // (long nights), nothing changed: the darkness driver must absorb the
    // season, where a before/after comparison would show a large increase.
    let mut r = retrofit("2025-10-01");
    r.baseline_from = Some(d("2025-04-01"));
    let series = days("2025-04-01", "2026-04-01", "2099-01-01", 0.0);
    let s = measure(
        &r,
        &series,
        d("2026-04-01"),
        Utility::Electricity,
        &EnergyConfig::default(),
    );
    let f = s.savings_fraction.unwrap();
    assert!(f.abs() < 0.01, "season artefact: {f}");
    let mean = |sel: &dyn Fn(&GroupDay) -> bool| {
        let v: Vec<f64> = series.iter().filter(|x| sel(x)).map(|x| x.used).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let naive = 1.0 - mean(&|x| x.date >= d("2025-10-01")) / mean(&|x| x.date < d("2025-10-01"));
    assert!(
        naive < -0.05,
        "the test needs a real seasonal swing: {naive}"
    );
}

#[test]
fn incomplete_days_are_missing_not_zero() {
    let r = retrofit("2026-04-01");
    let mut series = days("2025-04-01", "2026-07-01", "2026-04-01", 0.3);
    for day in series
        .iter_mut()
        .filter(|x| x.date.month() == 5 && x.date.year() == 2026)
    {
        day.coverage = 0.5;
        day.used *= 0.5;
    }
    let s = measure(
        &r,
        &series,
        d("2026-07-01"),
        Utility::Electricity,
        &EnergyConfig::default(),
    );
    assert_eq!(s.reporting.days_missing, 31);
    assert!((s.savings_fraction.unwrap() - 0.3).abs() < 0.01);
    let may = s.daily.iter().find(|p| p.date == d("2026-05-10")).unwrap();
    assert_eq!(may.actual, None);
    assert!(s.notes.iter().any(|n| n.contains("31 reporting days")));
}

#[test]
fn a_driver_without_variation_is_dropped_and_said() {
    let mut r = retrofit("2026-04-01");
    r.drivers = vec![Driver::DarknessHours, Driver::Occupancy];
    let mut series = days("2025-04-01", "2026-06-01", "2026-04-01", 0.3);
    for x in series.iter_mut() {
        x.drivers.insert(Driver::Occupancy, 0.0);
    }
    let s = measure(
        &r,
        &series,
        d("2026-06-01"),
        Utility::Electricity,
        &EnergyConfig::default(),
    );
    assert_eq!(s.drivers, vec![Driver::DarknessHours]);
    assert!(s.notes.iter().any(|n| n.contains("occupancy left out")));
}

#[test]
fn time_of_use_prices_follow_the_hour() {
    let tariff = Tariff {
        utility: Utility::Electricity,
        site: None,
        price: 0.5,
        periods: vec![estatemon_domain::config::TouPeriod {
            name: "peak".into(),
            from_hour: 8,
            to_hour: 20,
            price: 1.5,
            weekdays_only: true,
        }],
        source: String::new(),
    };
    let frame = df!(
        "day" => [1i32, 1, 1, 2],
        "hour" => [7i32, 8, 19, 9],
        "weekday" => [true, true, true, false],
        "hours" => [1.0, 1.0, 1.0, 1.0],
        "used" => [Some(2.0), Some(2.0), None, Some(4.0)],
    )
    .unwrap();
    let totals = daily_totals(frame, Some(&tariff)).unwrap();
    let values = |name: &str| -> Vec<Option<f64>> {
        let ca = totals.column(name).unwrap().f64().unwrap().clone();
        (0..ca.len()).map(|i| ca.get(i)).collect()
    };
    let cost = values("cost");
    assert_eq!(cost, vec![Some(2.0 * 0.5 + 2.0 * 1.5), Some(4.0 * 0.5)]);
    let known = values("known_hours");
    assert_eq!(
        known,
        vec![Some(2.0), Some(1.0)],
        "unknown hours do not count"
    );
}

/// Days whose use follows hourly temperatures through known balance
/// points (heating below 15 °C, cooling above 20 °C), or none.
fn temperature_days(heating: Option<f64>, cooling: Option<f64>) -> Vec<GroupDay> {
    let mut k = 7u64;
    let mut noise = || {
        k = k
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((k >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 6.0
    };
    (0..365)
        .map(|i| {
            let date = d("2025-01-01") + Duration::days(i);
            let season = 16.0 - 14.0 * (i as f64 / 365.0 * std::f64::consts::TAU).cos();
            let temperatures: Vec<f64> = (0..24)
                .map(|h| season + 4.0 * ((h as f64 - 9.0) / 24.0 * std::f64::consts::TAU).sin())
                .collect();
            let used = 100.0
                + heating.map_or(0.0, |b| 6.0 * degree_days(&temperatures, b, true).unwrap())
                + cooling.map_or(0.0, |b| 9.0 * degree_days(&temperatures, b, false).unwrap())
                + noise();
            GroupDay {
                date,
                used,
                coverage: 1.0,
                cost: used,
                temperatures,
                drivers: HashMap::new(),
            }
        })
        .collect()
}

#[test]
fn the_balance_point_search_finds_the_buildings_own() {
    let both = temperature_days(Some(15.0), Some(20.0));
    let refs: Vec<&GroupDay> = both.iter().collect();
    let m = select_temperature_model(&refs, &[], true, true).unwrap();
    assert_eq!(m.form, "heating and cooling", "{m:?}");
    assert!((m.heating_base_c.unwrap() - 15.0).abs() <= 1.0, "{m:?}");
    assert!((m.cooling_base_c.unwrap() - 20.0).abs() <= 1.0, "{m:?}");
    assert!(m.candidates > 500);

    let cooling = temperature_days(None, Some(22.0));
    let refs: Vec<&GroupDay> = cooling.iter().collect();
    let m = select_temperature_model(&refs, &[], true, true).unwrap();
    assert_eq!(m.form, "cooling", "{m:?}");
    assert!((m.cooling_base_c.unwrap() - 22.0).abs() <= 1.0, "{m:?}");

    // Use that ignores the weather: no degree-day term is significant.
    let flat = temperature_days(None, None);
    let refs: Vec<&GroupDay> = flat.iter().collect();
    let m = select_temperature_model(&refs, &[], true, true).unwrap();
    assert_eq!(m.form, "intercept only", "{m:?}");
}
