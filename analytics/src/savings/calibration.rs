//! Calibration evidence for the savings uncertainty (issue 17): many
//! simulated retrofits, with different seeds, savings, baseline lengths,
//! noise levels and day-to-day persistence of the noise, each measured by
//! [`super::measure`] and compared with its truth. The stated 90 % interval
//! must cover the truth in 85–95 % of them, and the verdict must be
//! "inconclusive" exactly where the interval straddles the target.
//!
//! `cargo test --workspace --lib calibration -- --nocapture` prints the
//! coverage table recorded in BENCHMARKS.md.

use super::*;

/// A small deterministic generator (splitmix64) and standard normals
/// (Box–Muller): the study is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next(), self.next());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    saving: f64,
    baseline_days: i64,
    /// Standard deviation of the daily noise, as a share of the use.
    noise: f64,
    /// Lag-1 autocorrelation of the noise (weather spells, occupancy runs).
    rho: f64,
}

struct Outcome {
    covered: bool,
    /// Inconclusive exactly where the interval straddles the target.
    verdict_consistent: bool,
    verdict: Option<Verdict>,
}

/// One retrofit: lighting use that follows the hours of darkness and the
/// weekend, with AR(1) noise; from the retrofit date it uses (1 − saving)
/// of what it would have. The truth is what it would have used minus what
/// it used, over the reporting quarter.
fn one(sc: Scenario, cell: u64, seed: u64, target_offset: f64) -> Outcome {
    let date = NaiveDate::from_ymd_opt(2026, 4, 1).unwrap();
    let from = date - Duration::days(sc.baseline_days);
    let to = date + Duration::days(91);
    let mut retrofit: Retrofit = toml::from_str(&format!(
        "id = \"r\"\nname = \"r\"\nsite = \"s\"\npurpose = \"public_lighting\"\n\
         date = {date}\nbaseline_from = {from}\n"
    ))
    .unwrap();
    retrofit.target = Some((sc.saving + target_offset).clamp(0.0, 0.95));
    // Every cell and seed draws its own noise: the cells are independent.
    let mut rng = Rng((cell << 32) ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut e = rng.normal() * sc.noise;
    let innovation = sc.noise * (1.0 - sc.rho * sc.rho).sqrt();
    let mut days = Vec::new();
    let mut truth = 0.0;
    let mut d = from;
    while d < to {
        let dark = sun::darkness_hours(d, 22.28, 114.16);
        let weekend = if crate::energy::is_weekend(d) {
            1.0
        } else {
            0.0
        };
        let would = (120.0 + 40.0 * dark + 25.0 * weekend) * (1.0 + e);
        let used = if d >= date {
            truth += would * sc.saving;
            would * (1.0 - sc.saving)
        } else {
            would
        };
        days.push(GroupDay {
            date: d,
            used,
            coverage: 1.0,
            cost: used,
            temperatures: Vec::new(),
            drivers: HashMap::from([(Driver::DarknessHours, dark), (Driver::Weekend, weekend)]),
        });
        e = sc.rho * e + innovation * rng.normal();
        d += Duration::days(1);
    }
    let s = measure(
        &retrofit,
        &days,
        to,
        Utility::Electricity,
        &EnergyConfig::default(),
    );
    let (saved, u, base) = (
        s.savings.expect("savings"),
        s.uncertainty.expect("uncertainty"),
        s.adjusted_baseline.expect("adjusted baseline"),
    );
    let target = retrofit.target.unwrap();
    let (lo, hi) = ((saved - u) / base, (saved + u) / base);
    let straddles = lo < target && hi >= target;
    Outcome {
        covered: (saved - truth).abs() <= u,
        verdict_consistent: (s.verdict == Some(Verdict::Inconclusive)) == straddles,
        verdict: s.verdict,
    }
}

#[test]
fn the_90_percent_interval_covers_the_truth_90_percent_of_the_time() {
    const SEEDS: u64 = 60;
    let mut rows = Vec::new();
    let (mut all, mut covered_all) = (0usize, 0usize);
    let mut verdicts: HashMap<&'static str, usize> = HashMap::new();
    for noise in [0.03, 0.08, 0.15] {
        for rho in [0.0, 0.5, 0.8] {
            for baseline_days in [365, 540] {
                for saving in [0.10, 0.30] {
                    let sc = Scenario {
                        saving,
                        baseline_days,
                        noise,
                        rho,
                    };
                    let cell = rows.len() as u64 + 1;
                    let mut covered = 0;
                    for seed in 0..SEEDS {
                        // Targets around the truth: the interval sometimes
                        // straddles them, sometimes not.
                        let offset = [-0.02, -0.002, 0.0, 0.002, 0.02][(seed % 5) as usize];
                        let o = one(sc, cell, seed, offset);
                        assert!(o.verdict_consistent, "{sc:?} seed {seed}: {:?}", o.verdict);
                        *verdicts
                            .entry(o.verdict.map_or("none", |v| v.as_str()))
                            .or_default() += 1;
                        covered += o.covered as usize;
                    }
                    all += SEEDS as usize;
                    covered_all += covered;
                    rows.push((sc, covered as f64 / SEEDS as f64));
                }
            }
        }
    }
    println!("| noise (σ/use) | ρ | baseline days | saving | coverage of the 90 % interval |");
    println!("|---|---|---|---|---|");
    for (sc, c) in &rows {
        println!(
            "| {:.0} % | {:.1} | {} | {:.0} % | {:.0} % |",
            sc.noise * 100.0,
            sc.rho,
            sc.baseline_days,
            sc.saving * 100.0,
            c * 100.0
        );
    }
    let overall = covered_all as f64 / all as f64;
    println!(
        "overall: {:.1} % of {all} retrofits; verdicts {verdicts:?}",
        overall * 100.0
    );
    assert!(
        (0.85..=0.95).contains(&overall),
        "the 90 % interval covered the truth in {:.1} % of {all} retrofits",
        overall * 100.0
    );
    // No condition may be badly off, however the others average out
    // (60 runs a cell: a true 90 % falls under 75 % with p < 0.001).
    for (sc, c) in &rows {
        assert!(*c >= 0.75, "{sc:?}: coverage {:.0} %", c * 100.0);
    }
    for v in ["met", "not met", "inconclusive"] {
        assert!(
            verdicts.get(v).copied().unwrap_or(0) > 0,
            "no {v}: {verdicts:?}"
        );
    }
}
