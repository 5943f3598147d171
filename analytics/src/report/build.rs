//! Gathers a quarter's figures: consumption from the registers (raw
//! readings for the quarter, hourly registers for the comparison quarters
//! and the baselines), aggregated with polars; lifts, gates, alerts and
//! dead letters from their tables. The aggregation steps that decide
//! figures (availability, totals, peak, night base) are pure functions.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use estatemon_domain::config::{EnergyConfig, LiftsConfig};
use estatemon_domain::consumption::Correction;
use estatemon_domain::device::Utility;
use polars::prelude::*;
use tokio_postgres::Client;

use super::model::*;
use super::quarter::Quarter;
use crate::energy::{self, Meter, SiteInfo, Source, Usage};
use crate::savings;

/// What a long step reports, for progress bars.
pub trait Progress: Sync {
    fn step(&self, what: &str);
}

impl Progress for () {
    fn step(&self, _: &str) {}
}

/// Per-meter figures over a period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeterTotal {
    pub used: Option<f64>,
    pub known_hours: f64,
    pub cost: f64,
    /// Electricity used in the night hours, and the hours it covers.
    pub night_used: f64,
    pub night_hours: f64,
}

/// Per group: `used` (sum of the known use), `known` (intervals with a
/// known use: 0 means missing, not zero) and `known_hours` (the hours they
/// cover, for coverage).
fn known_use() -> [Expr; 3] {
    [
        col("used").sum().alias("used"),
        col("used").count().alias("known"),
        col("hours")
            .filter(col("used").is_not_null())
            .sum()
            .alias("known_hours"),
    ]
}

/// Per-meter totals (with time-of-use cost and night use) from a usage
/// frame with `meter`, `hour`, `weekday`, `hours`, `used`.
pub fn meter_totals(
    frame: &DataFrame,
    meters: &[Meter],
    site: &str,
    energy: &EnergyConfig,
) -> PolarsResult<Vec<MeterTotal>> {
    let by_hour = frame
        .clone()
        .lazy()
        .group_by([col("meter"), col("hour"), col("weekday")])
        .agg(known_use())
        .collect()?;
    let mut out = vec![MeterTotal::default(); meters.len()];
    let meter = by_hour.column("meter")?.u32()?;
    let hour = by_hour.column("hour")?.i32()?;
    let weekday = by_hour.column("weekday")?.bool()?;
    let used = by_hour.column("used")?.f64()?;
    let known = by_hour.column("known")?.u32()?;
    let known_hours = by_hour.column("known_hours")?.f64()?;
    for i in 0..by_hour.height() {
        let (Some(m), Some(h)) = (meter.get(i), hour.get(i)) else {
            continue;
        };
        let m = m as usize;
        let t = &mut out[m];
        let u = used.get(i).unwrap_or(0.0);
        if known.get(i).unwrap_or(0) > 0 {
            t.used = Some(t.used.unwrap_or(0.0) + u);
        }
        let kh = known_hours.get(i).unwrap_or(0.0);
        t.known_hours += kh;
        let price = energy.tariff(meters[m].utility, site).map_or(0.0, |tf| {
            tf.price_at(h as u32, weekday.get(i).unwrap_or(true))
        });
        t.cost += u * price;
        if (energy.night_from_hour..energy.night_to_hour).contains(&(h as u32)) {
            t.night_used += u;
            t.night_hours += kh;
        }
    }
    Ok(out)
}

/// Totals per scope (site, building, area, purpose) and utility.
pub fn scope_totals(
    site: &SiteInfo,
    meters: &[Meter],
    totals: &[MeterTotal],
    period_hours: f64,
    energy: &EnergyConfig,
) -> Vec<TotalRow> {
    let mut groups: BTreeMap<(Scope, String, Utility), Vec<usize>> = BTreeMap::new();
    for (i, m) in meters.iter().enumerate() {
        groups
            .entry((Scope::Site, site.name.clone(), m.utility))
            .or_default()
            .push(i);
        let building = m.building.clone().unwrap_or_else(|| "(no building)".into());
        groups
            .entry((Scope::Building, building, m.utility))
            .or_default()
            .push(i);
        groups
            .entry((Scope::Area, m.area.clone(), m.utility))
            .or_default()
            .push(i);
        groups
            .entry((Scope::Purpose, m.purpose_str().to_owned(), m.utility))
            .or_default()
            .push(i);
    }
    groups
        .into_iter()
        .map(|((scope, name, utility), idx)| {
            let quantity = idx
                .iter()
                .filter_map(|&i| totals[i].used)
                .fold(None, |acc: Option<f64>, u| Some(acc.unwrap_or(0.0) + u));
            let known: f64 = idx.iter().map(|&i| totals[i].known_hours).sum();
            // No tariff in the site's currency: cost missing, not 0.
            let cost = quantity
                .filter(|_| energy.tariff(utility, &site.id).is_some())
                .map(|_| idx.iter().map(|&i| totals[i].cost).sum());
            TotalRow {
                scope,
                name,
                utility,
                unit: utility.unit(),
                meters: idx.len(),
                quantity,
                coverage: if period_hours > 0.0 {
                    (known / (period_hours * idx.len() as f64)).min(1.0)
                } else {
                    0.0
                },
                cost,
                co2_kg: quantity.map(|q| q * energy.emission_factors_of(&site.id).of(utility)),
            }
        })
        .collect()
}

/// The usage frame with a boolean `electric` column (the meter measures
/// electricity).
fn electric_rows(frame: &DataFrame, electric: &[bool]) -> PolarsResult<LazyFrame> {
    let meter = frame.column("meter")?.u32()?;
    let mask: Vec<bool> = (0..meter.len())
        .map(|i| meter.get(i).is_some_and(|m| electric[m as usize]))
        .collect();
    Ok(frame.clone().lazy().with_column(
        Column::new("electric".into(), mask)
            .as_materialized_series()
            .clone()
            .lit(),
    ))
}

/// Site electricity demand per 15-minute slot: the peak over slots where
/// every meter that reports at 15-minute detail has an interval.
pub fn peak_demand(frame: &DataFrame, electric: &[bool]) -> PolarsResult<Option<(f64, i64)>> {
    let slots = electric_rows(frame, electric)?
        .filter(
            col("electric")
                .and(col("hours").lt_eq(lit(0.5)))
                .and(col("used").is_not_null()),
        )
        .with_column(((col("start_ms") / lit(900_000i64)) * lit(900_000i64)).alias("slot"))
        .group_by([col("slot")])
        .agg([
            (col("used") / col("hours")).sum().alias("kw"),
            col("meter").count().alias("meters"),
        ])
        .collect()?;
    if slots.height() == 0 {
        return Ok(None);
    }
    let meters = slots.column("meters")?.u32()?;
    let full = meters.max().unwrap_or(0);
    let kw = slots.column("kw")?.f64()?;
    let slot = slots.column("slot")?.i64()?;
    let mut best: Option<(f64, i64)> = None;
    for i in 0..slots.height() {
        if meters.get(i) != Some(full) {
            continue;
        }
        if let (Some(k), Some(s)) = (kw.get(i), slot.get(i)) {
            if best.is_none_or(|(b, bs)| k > b || (k == b && s < bs)) {
                best = Some((k, s));
            }
        }
    }
    Ok(best)
}

/// Monthly use per utility and purpose, with coverage.
pub fn monthly(
    frame: &DataFrame,
    meters: &[Meter],
    quarter: Quarter,
    site: &SiteInfo,
) -> PolarsResult<Vec<MonthRow>> {
    let by = frame
        .clone()
        .lazy()
        .group_by([col("meter"), col("month")])
        .agg(known_use())
        .collect()?;
    let meter = by.column("meter")?.u32()?;
    let month = by.column("month")?.i32()?;
    let used = by.column("used")?.f64()?;
    let known = by.column("known")?.u32()?;
    let known_hours = by.column("known_hours")?.f64()?;
    // (month, utility, purpose) → (used, any known, known hours, meters)
    let mut acc: BTreeMap<(i32, Utility, String), (f64, bool, f64)> = BTreeMap::new();
    let mut group_meters: HashMap<(Utility, String), usize> = HashMap::new();
    for m in meters {
        *group_meters
            .entry((m.utility, m.purpose_str().to_owned()))
            .or_default() += 1;
    }
    for &mo in &quarter.months() {
        for (u, p) in group_meters.keys() {
            acc.entry((mo, *u, p.clone())).or_insert((0.0, false, 0.0));
        }
    }
    for i in 0..by.height() {
        let (Some(m), Some(mo)) = (meter.get(i), month.get(i)) else {
            continue;
        };
        let mt = &meters[m as usize];
        let e = acc
            .entry((mo, mt.utility, mt.purpose_str().to_owned()))
            .or_insert((0.0, false, 0.0));
        e.0 += used.get(i).unwrap_or(0.0);
        e.1 |= known.get(i).unwrap_or(0) > 0;
        e.2 += known_hours.get(i).unwrap_or(0.0);
    }
    Ok(acc
        .into_iter()
        .filter(|((mo, _, _), _)| quarter.months().contains(mo))
        .map(|((mo, utility, purpose), (u, any, kh))| {
            let n = group_meters[&(utility, purpose.clone())] as f64;
            let (y, m) = (mo / 100, (mo % 100) as u32);
            let first = chrono::NaiveDate::from_ymd_opt(y, m, 1).expect("month");
            let next = if m == 12 {
                chrono::NaiveDate::from_ymd_opt(y + 1, 1, 1)
            } else {
                chrono::NaiveDate::from_ymd_opt(y, m + 1, 1)
            }
            .expect("month");
            let hours = (site.midnight(next) - site.midnight(first)).num_minutes() as f64 / 60.0;
            MonthRow {
                month: mo,
                utility,
                purpose,
                quantity: any.then_some(u),
                coverage: (kh / (hours * n)).min(1.0),
            }
        })
        .collect())
}

/// Mean electricity demand by local hour on weekdays and weekends: the
/// use in that hour over the days of that type, summed over meters
/// (each meter's mean over the hours it reported).
pub fn load_profile(frame: &DataFrame, electric: &[bool]) -> PolarsResult<Vec<ProfileRow>> {
    let by = electric_rows(frame, electric)?
        .filter(col("electric").and(col("used").is_not_null()))
        .group_by([col("meter"), col("hour"), col("weekday")])
        .agg([
            col("used").sum().alias("used"),
            col("hours").sum().alias("hours"),
        ])
        .collect()?;
    let hour = by.column("hour")?.i32()?;
    let weekday = by.column("weekday")?.bool()?;
    let used = by.column("used")?.f64()?;
    let hours = by.column("hours")?.f64()?;
    let mut kw = [[None::<f64>; 2]; 24];
    for i in 0..by.height() {
        let (Some(h), Some(w), Some(u), Some(hs)) =
            (hour.get(i), weekday.get(i), used.get(i), hours.get(i))
        else {
            continue;
        };
        if hs <= 0.0 || !(0..24).contains(&h) {
            continue;
        }
        let slot = &mut kw[h as usize][usize::from(!w)];
        *slot = Some(slot.unwrap_or(0.0) + u / hs);
    }
    Ok((0..24)
        .map(|h| ProfileRow {
            hour: h as u32,
            weekday_kw: kw[h][0],
            weekend_kw: kw[h][1],
        })
        .collect())
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One alert of the quarter, as the report reads it.
#[derive(Debug, Clone)]
pub struct AlertData {
    pub rule: String,
    pub severity: String,
    pub device: Option<String>,
    pub started: DateTime<Utc>,
    pub acknowledged: Option<DateTime<Utc>>,
    pub resolved: Option<DateTime<Utc>>,
    pub fired: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    /// Raised by `analytics replay`: never paged, so never acknowledged.
    pub replayed: bool,
}

/// Alerts of the quarter by rule and severity: how fast they were
/// answered. Replayed alerts are counted apart: they were never paged, so
/// their acknowledgement is not a response time.
pub fn alert_rows(alerts: &[AlertData]) -> Vec<AlertRow> {
    let mut by: BTreeMap<(String, String), Vec<&AlertData>> = BTreeMap::new();
    for a in alerts {
        by.entry((a.rule.clone(), a.severity.clone()))
            .or_default()
            .push(a);
    }
    by.into_iter()
        .map(|((rule, severity), all)| {
            let live: Vec<&AlertData> = all.iter().copied().filter(|a| !a.replayed).collect();
            let mut ack: Vec<f64> = live
                .iter()
                .filter_map(|a| {
                    a.acknowledged
                        .map(|t| (t - a.fired).num_seconds() as f64 / 60.0)
                })
                .collect();
            let mut res: Vec<f64> = all
                .iter()
                .filter_map(|a| {
                    a.resolved
                        .map(|r| (r - a.started).num_seconds() as f64 / 60.0)
                })
                .collect();
            AlertRow {
                rule,
                severity,
                count: all.len(),
                replayed: all.len() - live.len(),
                acknowledged: ack.len(),
                within_deadline: live
                    .iter()
                    .filter(|a| a.acknowledged.is_some_and(|t| t <= a.deadline))
                    .count(),
                max_minutes_to_acknowledge: ack.iter().copied().reduce(f64::max),
                median_minutes_to_acknowledge: median(&mut ack),
                median_minutes_to_resolve: median(&mut res),
                still_open: all.iter().filter(|a| a.resolved.is_none()).count(),
            }
        })
        .collect()
}

/// The quarter's events on meters that no baseline model knows: every
/// corrected interval (a bridged gap, a reset, a rollover, a replaced
/// meter, a spike) and every alert on a meter, each beside the retrofits
/// whose meters include it. No non-routine adjustment is made: each says
/// how it entered the measured use.
fn non_routine_events(
    meters: &[Meter],
    corrected: &[energy::Corrected],
    alerts: &[AlertData],
    savings: &[crate::savings::RetrofitSavings],
) -> Vec<NonRoutineEvent> {
    let retrofits = |meter: &str| -> Vec<String> {
        savings
            .iter()
            .filter(|s| s.meters.iter().any(|m| m == meter))
            .map(|s| s.name.clone())
            .collect()
    };
    let mut out: Vec<NonRoutineEvent> = corrected
        .iter()
        .map(|c| {
            let m = &meters[c.meter as usize];
            let (kind, treatment) = match c.correction {
                Correction::Gap => (
                    "gap bridged",
                    "use interpolated across the gap and counted as measured; no adjustment",
                ),
                Correction::Reset | Correction::Rollover | Correction::Replacement => (
                    c.correction.as_str(),
                    "register corrected (use before plus use after); no adjustment",
                ),
                Correction::Spike | Correction::Implausible | Correction::None => (
                    c.correction.as_str(),
                    "use unknown for the interval (missing, never zero); a day under the coverage \
                     floor is left out of the savings; no adjustment",
                ),
            };
            NonRoutineEvent {
                retrofits: retrofits(&m.id),
                meter: m.id.clone(),
                kind: kind.to_owned(),
                from: c.start,
                to: Some(c.end),
                estimated_use: c.used.filter(|_| c.correction == Correction::Gap),
                unit: m.utility.unit().to_owned(),
                treatment: treatment.to_owned(),
            }
        })
        .collect();
    for a in alerts {
        let Some(m) = a
            .device
            .as_deref()
            .and_then(|d| meters.iter().find(|m| m.id == d))
        else {
            continue;
        };
        out.push(NonRoutineEvent {
            retrofits: retrofits(&m.id),
            meter: m.id.clone(),
            kind: format!("alert: {}", a.rule),
            from: a.started,
            to: a.resolved,
            estimated_use: None,
            unit: m.utility.unit().to_owned(),
            treatment: "in the measured use, its effect not estimated; no adjustment".to_owned(),
        });
    }
    out.sort_by(|a, b| (&a.meter, a.from).cmp(&(&b.meter, b.from)));
    out
}

/// Entrapments of the quarter with no alert on their lift near the alarm,
/// as notes: not evaluated then (a coverage gap), or evaluated and still
/// without an alert (the rules do not page for it).
fn unalerted_entrapments(
    incidents: &[crate::lifts::incidents::Incident],
    alerts: &[AlertData],
    coverage: &estatemon_domain::schema::coverage::Coverage,
    tz: chrono_tz::Tz,
) -> Vec<String> {
    incidents
        .iter()
        .filter(|i| !i.false_alarm)
        .filter(|i| {
            !alerts.iter().any(|a| {
                a.device.as_deref() == Some(i.lift.as_str())
                    && a.started >= i.alarm_at - chrono::Duration::minutes(15)
                    && a.started <= i.alarm_at + chrono::Duration::minutes(15)
            })
        })
        .map(|i| {
            let at = i.alarm_at.with_timezone(&tz).format("%Y-%m-%d %H:%M %:z");
            let evaluated = !coverage
                .gaps
                .iter()
                .any(|(a, b)| *a <= i.alarm_at && i.alarm_at < *b);
            if evaluated {
                format!(
                    "the entrapment on {} at {at} has no alert although the rules were evaluated                      then: check that the rules file pages for entrapments",
                    i.lift
                )
            } else {
                format!(
                    "the entrapment on {} at {at} has no alert: the rules were not evaluated                      then (see the alerts' coverage)",
                    i.lift
                )
            }
        })
        .collect()
}

/// Groups the retrofits' savings: all lighting, all water.
pub fn savings_groups(
    savings: &[savings::RetrofitSavings],
    energy: &EnergyConfig,
) -> Vec<SavingsGroup> {
    let mut out = Vec::new();
    for (name, purposes, target_purpose) in [
        (
            "Public lighting",
            &["public_lighting"][..],
            estatemon_domain::device::Purpose::PublicLighting,
        ),
        (
            "Water",
            &["domestic_water", "irrigation"][..],
            estatemon_domain::device::Purpose::DomesticWater,
        ),
    ] {
        let members: Vec<&savings::RetrofitSavings> = savings
            .iter()
            .filter(|s| purposes.contains(&s.purpose.as_str()))
            .collect();
        if members.is_empty() {
            continue;
        }
        let sum = |f: &dyn Fn(&savings::RetrofitSavings) -> Option<f64>| -> Option<f64> {
            let v: Vec<f64> = members.iter().filter_map(|s| f(s)).collect();
            (!v.is_empty()).then(|| v.iter().sum())
        };
        let complete = members.iter().all(|s| s.savings.is_some());
        let adjusted = sum(&|s| s.adjusted_baseline).filter(|_| complete);
        let actual = sum(&|s| s.actual).filter(|_| complete);
        let saved = sum(&|s| s.savings).filter(|_| complete);
        let fraction = saved
            .zip(adjusted)
            .filter(|(_, a)| *a > 0.0)
            .map(|(s, a)| s / a);
        let (target, target_basis) = group_target(&members, energy, target_purpose);
        let uncertainty = sum(&|s| s.uncertainty.map(|u| u * u))
            .filter(|_| complete)
            .map(f64::sqrt);
        let verdict = fraction.zip(target).map(|(f, t)| {
            let share = uncertainty
                .zip(adjusted)
                .filter(|(_, a)| *a > 0.0)
                .map(|(u, a)| u / a);
            savings::Verdict::decide(f, share, t)
        });
        out.push(SavingsGroup {
            name: name.to_owned(),
            utility: members[0].utility,
            unit: members[0].unit,
            retrofits: members.iter().map(|s| s.name.clone()).collect(),
            adjusted_baseline: adjusted,
            actual,
            savings: saved,
            savings_fraction: fraction,
            uncertainty,
            cost_saved: sum(&|s| s.cost_saved).filter(|_| complete),
            co2_kg_saved: sum(&|s| s.co2_kg_saved).filter(|_| complete),
            target,
            target_basis,
            verdict,
            meets_target: verdict.and_then(|v| match v {
                savings::Verdict::Met => Some(true),
                savings::Verdict::NotMet => Some(false),
                savings::Verdict::Inconclusive => None,
            }),
        });
    }
    out
}

/// A group's target, from its retrofits' own (each registered with its
/// M&V plan, or the configuration's default where the registry gives
/// none), weighted by adjusted baseline; and how it was derived, in words
/// the report prints beside it. A default never overrides a registered
/// target: the configuration's group default is used only for a group
/// whose retrofits have no target at all.
fn group_target(
    members: &[&savings::RetrofitSavings],
    energy: &EnergyConfig,
    purpose: estatemon_domain::device::Purpose,
) -> (Option<f64>, String) {
    let with: Vec<(&savings::RetrofitSavings, f64)> = members
        .iter()
        .filter_map(|s| s.target.map(|t| (*s, t)))
        .collect();
    if with.is_empty() {
        return match energy.target(purpose, None) {
            Some(t) => (
                Some(t),
                format!(
                    "the configuration's default for {} ({:.0} %): no retrofit in the group has a target",
                    purpose.as_str(),
                    t * 100.0
                ),
            ),
            None => (None, "no target: none registered or configured".into()),
        };
    }
    let registered = with.iter().filter(|(s, _)| s.target_registered).count();
    let source = if registered == with.len() {
        "registered".to_owned()
    } else {
        format!(
            "{registered} of {} registered, the others the configuration's default",
            with.len()
        )
    };
    let listed = with
        .iter()
        .map(|(s, t)| format!("{} {:.0} %", s.name, t * 100.0))
        .collect::<Vec<_>>()
        .join(", ");
    if with.len() < members.len() {
        return (
            None,
            format!(
                "not derived: {} of {} retrofits have a target ({listed})",
                with.len(),
                members.len()
            ),
        );
    }
    let weights: Option<Vec<f64>> = with
        .iter()
        .map(|(s, _)| s.adjusted_baseline.filter(|a| *a > 0.0))
        .collect();
    match weights {
        Some(w) if with.len() > 1 => {
            let total: f64 = w.iter().sum();
            let t = with.iter().zip(&w).map(|((_, t), w)| t * w).sum::<f64>() / total;
            (
                Some(t),
                format!("the retrofits' targets ({source}: {listed}) weighted by adjusted baseline"),
            )
        }
        _ if with.iter().all(|(_, t)| (*t - with[0].1).abs() < 1e-12) => (
            Some(with[0].1),
            format!("the retrofits' target ({source}: {listed})"),
        ),
        _ => (
            None,
            format!("not derived: the retrofits' targets differ ({listed}) and an adjusted baseline is missing"),
        ),
    }
}

fn add_corrections(into: &mut BTreeMap<String, u64>, usage: &Usage) -> (u64, u64) {
    let (mut gaps, mut implausible) = (0, 0);
    for per_meter in &usage.corrections {
        for (c, n) in per_meter {
            match c {
                Correction::Gap => gaps += *n as u64,
                Correction::Implausible => implausible += *n as u64,
                Correction::None => {}
                other => *into.entry(other.as_str().to_owned()).or_default() += *n as u64,
            }
        }
    }
    (gaps, implausible)
}

/// A note when the grid factor is older than the latest its supplier would
/// have published for the report's year (the year before it), or its year
/// is not stated.
fn factor_year_note(
    f: &estatemon_domain::config::EmissionFactors,
    supplier: Option<&str>,
    quarter: Quarter,
) -> Option<String> {
    let latest = quarter.year - 1;
    let whose = supplier.map_or_else(
        || "the site's grid".to_owned(),
        |s| format!("supplier `{s}`"),
    );
    match f.year {
        Some(y) if y >= latest => None,
        Some(y) => Some(format!(
            "the grid emission factor ({} kg CO₂e/kWh, {whose}) is for {y}, older than {latest}, \
             the latest a supplier would have published for a {} report: check its latest \
             sustainability report and set `emission_factors.year` with the figure",
            f.electricity_kg_per_kwh, quarter.year
        )),
        None => Some(format!(
            "the grid emission factor ({} kg CO₂e/kWh, {whose}) states no year: set \
             `emission_factors.year` so that the report can tell whether it is the latest",
            f.electricity_kg_per_kwh
        )),
    }
}

/// Builds the report of `quarter` for `site`.
pub async fn build(
    client: &mut Client,
    energy_config: &EnergyConfig,
    lifts_config: &LiftsConfig,
    site_id: &str,
    quarter: Quarter,
    progress: &dyn Progress,
) -> anyhow::Result<QuarterReport> {
    progress.step("refreshing rollups");
    energy::refresh_rollups(client).await?;
    let (site, meters) = energy::load_site(client, site_id).await?;
    // Tariff and grid factor of the site's electricity supplier.
    let energy_config = &energy_config.for_site(&site.id, site.electricity_supplier.as_deref())?;
    let (start, end) = (site.midnight(quarter.start()), site.midnight(quarter.end()));
    let period_hours = (end - start).num_minutes() as f64 / 60.0;
    let mut notes = Vec::new();

    progress.step("reading the quarter's registers");
    let mut usage = energy::load_usage(client, &meters, start, end, Source::Raw).await?;
    progress.step("aggregating the quarter");
    let mut corrections = BTreeMap::new();
    let (gaps, implausible) = add_corrections(&mut corrections, &usage);
    let corrected = std::mem::take(&mut usage.corrected);
    let frame = energy::usage_frame(usage, site.tz)?;
    let totals = meter_totals(&frame, &meters, &site.id, energy_config)?;
    let electric: Vec<bool> = meters
        .iter()
        .map(|m| m.utility == Utility::Electricity)
        .collect();
    let peak = peak_demand(&frame, &electric)?;
    let monthly_rows = monthly(&frame, &meters, quarter, &site)?;
    let profile = load_profile(&frame, &electric)?;
    drop(frame);
    let night: Option<f64> = {
        let per_meter: Vec<f64> = meters
            .iter()
            .zip(&totals)
            .filter(|(m, t)| m.utility == Utility::Electricity && t.night_hours > 0.0)
            .map(|(_, t)| t.night_used / t.night_hours)
            .collect();
        (!per_meter.is_empty()).then(|| per_meter.iter().sum())
    };
    let scope_rows = scope_totals(&site, &meters, &totals, period_hours, energy_config);

    progress.step("reading the comparison quarters");
    let mut comparison_totals = Vec::new();
    for q in [quarter.previous(), quarter.year_before()] {
        let (s, e) = (site.midnight(q.start()), site.midnight(q.end()));
        let u = energy::load_usage(client, &meters, s, e, Source::Hourly).await?;
        let f = energy::usage_frame(u, site.tz)?;
        let t = meter_totals(&f, &meters, &site.id, energy_config)?;
        let hours = (e - s).num_minutes() as f64 / 60.0;
        comparison_totals.push(scope_totals(&site, &meters, &t, hours, energy_config));
    }
    // HVAC against the weather: this quarter and the same one last year.
    let hvac_of = |rows: &[TotalRow]| {
        rows.iter()
            .find(|r| {
                r.scope == Scope::Purpose && r.name == "hvac" && r.utility == Utility::Electricity
            })
            .and_then(|r| r.quantity)
    };
    let mut weather = Vec::new();
    let quarter_days = (quarter.end() - quarter.start()).num_days().max(1);
    let mut weather_note = if site.weather_devices.is_empty() {
        "no outdoor sensor named: the site's [[site]] table in the registry names none \
         (`weather = [\"<device id>\"]`), so the HVAC use is not set against the weather"
            .to_owned()
    } else if hvac_of(&scope_rows).is_none() {
        format!(
            "no HVAC electricity this quarter (no meter of purpose `hvac` reported); the \
             weather comes from {}",
            site.weather_devices.join(", ")
        )
    } else {
        String::new()
    };
    if !site.weather_devices.is_empty() && hvac_of(&scope_rows).is_some() {
        for (q, rows) in [
            (quarter, &scope_rows),
            (quarter.year_before(), &comparison_totals[1]),
        ] {
            let temps = energy::temperatures_by_day(client, &site, q.start(), q.end()).await?;
            let dd = |heating| {
                (!temps.is_empty()).then(|| {
                    temps
                        .values()
                        .filter_map(|t| crate::savings::degree_days(t, 18.0, heating))
                        .sum::<f64>()
                })
            };
            let (hdd, cdd) = (dd(true), dd(false));
            let kwh = hvac_of(rows);
            weather.push(WeatherRow {
                quarter: q,
                hvac_kwh: kwh,
                heating_degree_days: hdd,
                cooling_degree_days: cdd,
                weather_days: temps.len(),
                kwh_per_degree_day: kwh
                    .zip(hdd.zip(cdd))
                    .filter(|(_, (h, c))| h + c > 0.0)
                    .map(|(k, (h, c))| k / (h + c)),
                normalised_kwh: None,
            });
        }
        weather_note = format!(
            "degree-days from {}: {} of {} days of this quarter with temperatures ({:.0} %)",
            site.weather_devices.join(", "),
            weather[0].weather_days,
            quarter_days,
            weather[0].weather_days as f64 * 100.0 / quarter_days as f64
        );
        // This quarter's intensity applied to each row's weather.
        let rate = weather[0].kwh_per_degree_day;
        for w in &mut weather {
            w.normalised_kwh = rate
                .zip(w.heating_degree_days.zip(w.cooling_degree_days))
                .map(|(r, (h, c))| r * (h + c));
        }
    }
    let comparisons = scope_rows
        .iter()
        .filter(|r| matches!(r.scope, Scope::Site | Scope::Building | Scope::Purpose))
        .map(|r| {
            let find = |rows: &[TotalRow]| {
                rows.iter()
                    .find(|o| o.scope == r.scope && o.name == r.name && o.utility == r.utility)
                    .map(|o| (o.quantity, o.coverage))
                    .unwrap_or((None, 0.0))
            };
            let (prev, prev_cov) = find(&comparison_totals[0]);
            let (last, last_cov) = find(&comparison_totals[1]);
            let change = |other: Option<f64>| {
                r.quantity
                    .zip(other)
                    .filter(|(_, o)| *o > 0.0)
                    .map(|(t, o)| t / o - 1.0)
            };
            ComparisonRow {
                scope: r.scope,
                name: r.name.clone(),
                utility: r.utility,
                unit: r.unit,
                this_quarter: r.quantity,
                previous_quarter: prev,
                same_quarter_last_year: last,
                change_vs_previous: change(prev),
                change_vs_last_year: change(last),
                coverage: [r.coverage, prev_cov, last_cov],
            }
        })
        .collect();

    let mut intensity = Vec::new();
    let electricity_of = |scope: Scope, name: &str| {
        scope_rows
            .iter()
            .find(|r| r.scope == scope && r.name == name && r.utility == Utility::Electricity)
            .map(|r| (r.quantity, r.meters))
    };
    let year_share = 365.25 / (period_hours / 24.0).max(1.0);
    let mut intensity_row = |scope: Scope, name: &str, area: Option<f64>| {
        let (kwh, meters) = electricity_of(scope, name).unwrap_or((None, 0));
        let per_m2 = kwh.zip(area).filter(|(_, a)| *a > 0.0).map(|(k, a)| k / a);
        intensity.push(IntensityRow {
            scope,
            name: name.to_owned(),
            floor_area_m2: area,
            meters,
            kwh,
            kwh_per_m2: per_m2,
            kwh_per_m2_year: per_m2.map(|v| v * year_share),
        });
    };
    intensity_row(Scope::Site, &site.name, site.floor_area_m2);
    for b in &site.buildings {
        intensity_row(Scope::Building, &b.id, b.floor_area_m2);
    }

    progress.step("measuring savings");
    let retrofits = estatemon_domain::schema::registry::retrofits(client, &site.id).await?;
    let mut savings_rows = Vec::new();
    for r in retrofits {
        if r.date >= quarter.end() {
            continue;
        }
        let (rf, rt) = r.reporting();
        if rt.is_some_and(|t| t <= quarter.start()) {
            continue;
        }
        // The quarter's share of the reporting period.
        let mut in_quarter = r.clone();
        in_quarter.reporting_from = Some(rf.max(quarter.start()));
        in_quarter.reporting_to = Some(rt.map_or(quarter.end(), |t| t.min(quarter.end())));
        let s =
            savings::measure_one(client, energy_config, &site, &meters, &in_quarter, end).await?;
        savings_rows.push(s);
    }
    let groups = savings_groups(&savings_rows, energy_config);

    progress.step("lifts, gates, alerts and data quality");
    let lifts = lift_rows(client, &site, start, end, lifts_config).await?;
    let in_maintenance: i64 = lifts
        .iter()
        .filter(|l| l.scope == "lift")
        .map(|l| l.faults_in_maintenance)
        .sum();
    let lift_fault_note = match lifts_config.maintenance_faults {
        estatemon_domain::config::MaintenanceFaults::Exclude => format!(
            "Faults raised while a lift was in maintenance or inspection ({in_maintenance} this quarter) \
             are a technician's tests, not breakdowns: they are not counted in faults, MTBF or faults \
             per 1,000 trips (setting lifts.maintenance_faults = \"exclude\")."
        ),
        estatemon_domain::config::MaintenanceFaults::Count => format!(
            "Faults raised while a lift was in maintenance or inspection ({in_maintenance} this quarter) \
             are counted in faults, MTBF and faults per 1,000 trips (setting \
             lifts.maintenance_faults = \"count\")."
        ),
    };
    let incidents = crate::lifts::incidents::site(client, &site.id, start, end).await?;
    let compliance =
        crate::maintenance::compliance::site(client, &site.id, start, end, Utc::now()).await?;
    // Replacements of the year to the quarter's end, judged on up to 90
    // days each side as of the quarter's end.
    let lift_replacements = crate::lifts::stats::replacements(
        client,
        &site.id,
        90,
        end,
        lifts_config.maintenance_faults,
    )
    .await?
    .into_iter()
    .filter(|r| r.after.is_some() && r.at > end - chrono::Duration::days(365))
    .collect();
    let gates: Vec<GateRow> = client
        .query(
            "SELECT d.device_id, d.name, d.building_id,
                    count(*) FILTER (WHERE e.event_type = 'access' AND e.result = 'granted'),
                    count(*) FILTER (WHERE e.event_type = 'access' AND e.result = 'denied'),
                    count(*) FILTER (WHERE e.event_type = 'door_forced'),
                    count(*) FILTER (WHERE e.event_type = 'door_held_open')
               FROM devices d LEFT JOIN events e
                    ON e.device_id = d.device_id AND e.ts >= $2 AND e.ts < $3
              WHERE d.site_id = $1 AND d.kind = 'access_gate'
              GROUP BY 1, 2, 3 ORDER BY 1",
            &[&site.id, &start, &end],
        )
        .await?
        .iter()
        .map(|r| GateRow {
            device_id: r.get(0),
            name: r.get(1),
            building: r.get(2),
            granted: r.get(3),
            denied: r.get(4),
            forced: r.get(5),
            held_open: r.get(6),
        })
        .collect();
    let alert_data: Vec<AlertData> = client
        .query(
            "SELECT rule, severity, device_id, started_at, acknowledged_at, resolved_at, fired_at,
                    response_deadline, source = 'replay'
               FROM alerts WHERE site_id = $1 AND started_at >= $2 AND started_at < $3",
            &[&site.id, &start, &end],
        )
        .await?
        .iter()
        .map(|r| AlertData {
            rule: r.get(0),
            severity: r.get(1),
            device: r.get(2),
            started: r.get(3),
            acknowledged: r.get(4),
            resolved: r.get(5),
            fired: r.get(6),
            deadline: r.get(7),
            replayed: r.get(8),
        })
        .collect();
    let alerts = alert_rows(&alert_data);
    let alert_coverage = estatemon_domain::schema::coverage::summarise(
        &estatemon_domain::schema::coverage::spans(&*client, start, end).await?,
        start,
        end,
    );
    let dead_letters = client
        .query(
            // Open letters only: one `dead-letters reprocess` stored is no
            // longer a loss, and one it refused again is counted once,
            // by its new letter.
            "SELECT reason, count(*) FROM dead_letters
              WHERE received_at >= $2 AND received_at < $3 AND resolved_at IS NULL
                AND position('/' || $1 || '/' IN '/' || topic || '/') > 0
              GROUP BY 1 ORDER BY 2 DESC",
            &[&site.id, &start, &end],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let known: f64 = totals.iter().map(|t| t.known_hours).sum();
    let quality = DataQuality {
        meters: meters.len(),
        meters_without_data: meters
            .iter()
            .zip(&totals)
            .filter(|(_, t)| t.used.is_none())
            .map(|(m, _)| m.id.clone())
            .collect(),
        coverage: if meters.is_empty() {
            0.0
        } else {
            (known / (period_hours * meters.len() as f64)).min(1.0)
        },
        incomplete_meters: meters
            .iter()
            .zip(&totals)
            .map(|(m, t)| (m.id.clone(), (t.known_hours / period_hours).min(1.0)))
            .filter(|(_, c)| *c < 0.99)
            .collect(),
        gaps,
        corrections: corrections.into_iter().collect(),
        implausible,
        dead_letters,
    };
    if !quality.meters_without_data.is_empty() {
        notes.push(format!(
            "{} meter(s) sent no readings this quarter; their use is missing, not zero",
            quality.meters_without_data.len()
        ));
    }
    if meters.is_empty() {
        notes.push("the site has no meters in the registry".into());
    }
    if let Some(note) = factor_year_note(
        energy_config.emission_factors_of(&site.id),
        site.electricity_supplier.as_deref(),
        quarter,
    ) {
        notes.push(note);
    }
    // Alerts exist only where the rules were evaluated (live, or by
    // `analytics replay` over backfilled data): a partly evaluated quarter
    // is said to be one, with the spans nobody evaluated.
    if !alert_coverage.complete() {
        notes.push(format!(
            "the alert rules were evaluated over {:.1} % of this quarter only, so its alerts are \
             incomplete (section 5 lists the spans not evaluated); run `estatemon analytics \
             replay --from {} --to {}` and generate the report again",
            alert_coverage.evaluated * 100.0,
            alert_coverage
                .gaps
                .first()
                .map_or(start, |g| g.0)
                .to_rfc3339(),
            alert_coverage.gaps.last().map_or(end, |g| g.1).to_rfc3339()
        ));
    }
    let alert_notes = unalerted_entrapments(&incidents, &alert_data, &alert_coverage, site.tz);
    // The version this generation will be stored as.
    let version: i32 = client
        .query_opt(
            "SELECT version FROM reports WHERE site_id = $1 AND quarter = $2",
            &[&site.id, &quarter.to_string()],
        )
        .await?
        .map_or(1, |r| r.get::<_, i32>(0) + 1);
    let settings = &energy_config.report;
    let pdf_font = match crate::report::font::find(&settings.pdf_font) {
        Ok(Some(_)) => settings.pdf_font.clone(),
        Ok(None) => {
            notes.push(
                "no font with Chinese glyphs was found for the PDF (install fonts-wqy-microhei or \
                 set energy.report.pdf_font): Chinese text prints there as `?`"
                    .into(),
            );
            settings.pdf_font.clone()
        }
        Err(e) => {
            notes.push(format!(
                "energy.report.pdf_font cannot be used ({e}); the PDF falls back"
            ));
            String::new()
        }
    };
    let mut tariffs: Vec<_> = Utility::ALL
        .into_iter()
        .filter_map(|u| energy_config.tariff(u, &site.id).cloned())
        .collect();
    tariffs.sort_by_key(|t| t.utility.as_str());
    let oncall =
        crate::oncall::report::summary(&*client, None, Some(&site.id), start, end, false, site.tz)
            .await?;
    Ok(QuarterReport {
        site_id: site.id.clone(),
        site_name: site.name.clone(),
        time_zone: site.tz.name().to_owned(),
        quarter,
        period_start: start,
        period_end: end,
        generated_at: Utc::now(),
        prepared_by: settings.prepared_by.clone(),
        signatures: Vec::new(),
        version,
        currency: energy_config.currency_of(&site.id).to_owned(),
        tariffs,
        emission_factors: energy_config.emission_factors_of(&site.id).clone(),
        pdf_font,
        floor_area_m2: site.floor_area_m2,
        building_names: site
            .buildings
            .iter()
            .map(|b| (b.id.clone(), b.name.clone()))
            .collect(),
        totals: scope_rows,
        comparisons,
        intensity,
        weather,
        weather_note,
        demand: Demand {
            peak_kw: peak.map(|p| p.0),
            peak_at: peak.and_then(|p| DateTime::from_timestamp_millis(p.1)),
            night_base_kw: night,
            night_hours: (energy_config.night_from_hour, energy_config.night_to_hour),
        },
        monthly: monthly_rows,
        load_profile: profile,
        non_routine_events: non_routine_events(&meters, &corrected, &alert_data, &savings_rows),
        savings: savings_rows,
        savings_groups: groups,
        lift_fault_note,
        lifts,
        incidents,
        compliance,
        lift_replacements,
        gates,
        alerts,
        oncall,
        alert_coverage,
        alert_notes,
        data_quality: quality,
        notes,
    })
}

async fn lift_rows(
    client: &Client,
    site: &SiteInfo,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    lifts_config: &LiftsConfig,
) -> anyhow::Result<Vec<LiftRow>> {
    let names: std::collections::HashMap<String, Option<String>> = client
        .query(
            "SELECT device_id, name FROM devices WHERE site_id = $1 AND kind = 'lift'",
            &[&site.id],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let stats = crate::lifts::stats::site(
        client,
        &site.id,
        None,
        start,
        end,
        lifts_config.maintenance_faults,
    )
    .await?;
    // Each lift, then each building's lifts and the site's, summed.
    Ok(stats
        .into_iter()
        .map(|s| LiftRow {
            scope: s.scope.to_owned(),
            name: names.get(&s.id).cloned().flatten(),
            trips_per_day: s.trips_per_day,
            door_cycles: s.door_cycles,
            door_cycles_per_day: s.door_cycles_per_day,
            lifts: s.lifts,
            device_id: s.id,
            building: s.building,
            availability: s.availability,
            downtime_hours: s.down_hours,
            planned_hours: s.planned_hours,
            faults: s.faults as i64,
            faults_in_maintenance: s.faults_in_maintenance as i64,
            entrapments: s.entrapments as i64,
            trips: (s.trips > 0.0).then_some(s.trips),
            faults_per_1000_trips: s.faults_per_1000_trips,
            mtbf_hours: s.mtbf_hours,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + h * 3600, 0).unwrap()
    }

    #[test]
    fn alerts_are_summarised_by_rule_with_response_times() {
        let a = |ack: Option<i64>, res: Option<i64>, deadline: i64| AlertData {
            rule: "lift_entrapment".to_owned(),
            severity: "emergency".to_owned(),
            device: None,
            started: t(0),
            acknowledged: ack.map(|m| t(0) + Duration::minutes(m)),
            resolved: res.map(|m| t(0) + Duration::minutes(m)),
            fired: t(0),
            deadline: t(0) + Duration::minutes(deadline),
            replayed: false,
        };
        let rows = alert_rows(&[
            a(Some(5), Some(30), 15),
            a(Some(20), Some(50), 15),
            a(None, None, 15),
        ]);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.count, r.acknowledged, r.within_deadline, r.still_open),
            (3, 2, 1, 1)
        );
        assert_eq!(r.median_minutes_to_acknowledge, Some(12.5));
        assert_eq!(r.max_minutes_to_acknowledge, Some(20.0));
        assert_eq!(r.median_minutes_to_resolve, Some(40.0));
        assert_eq!(r.replayed, 0);
        // Replayed alerts were never paged: counted apart, not as answered
        // late or never.
        let mut replayed = a(None, Some(30), 15);
        replayed.replayed = true;
        let rows = alert_rows(&[a(Some(5), Some(30), 15), replayed]);
        let r = &rows[0];
        assert_eq!(
            (r.count, r.replayed, r.acknowledged, r.within_deadline),
            (2, 1, 1, 1)
        );
    }

    fn meter(
        id: &str,
        utility: Utility,
        building: &str,
        purpose: estatemon_domain::device::Purpose,
    ) -> Meter {
        Meter {
            id: id.into(),
            name: None,
            utility,
            building: Some(building.into()),
            area: "lobby".into(),
            purpose: Some(purpose),
        }
    }

    #[test]
    fn totals_peak_and_profile_from_a_small_frame() {
        use estatemon_domain::device::Purpose;
        let meters = vec![
            meter(
                "a",
                Utility::Electricity,
                "tower-a",
                Purpose::PublicLighting,
            ),
            meter(
                "b",
                Utility::Electricity,
                "tower-b",
                Purpose::PublicLighting,
            ),
            meter("w", Utility::Water, "tower-a", Purpose::DomesticWater),
            meter("silent", Utility::Electricity, "tower-b", Purpose::Lifts),
        ];
        // Two 15-minute slots for a and b, one hour for w.
        let frame = df!(
            "meter" => [0u32, 0, 1, 1, 2],
            "start_ms" => [0i64, 900_000, 0, 900_000, 0],
            "day" => [0i32; 5],
            "month" => [197001i32; 5],
            "hour" => [9i32, 9, 9, 9, 9],
            "weekday" => [true; 5],
            "hours" => [0.25, 0.25, 0.25, 0.25, 1.0],
            "used" => [Some(1.0), Some(2.0), Some(0.5), None, Some(3.0)],
        )
        .unwrap();
        let energy = EnergyConfig::default();
        let totals = meter_totals(&frame, &meters, "s", &energy).unwrap();
        assert_eq!(totals[0].used, Some(3.0));
        assert_eq!(totals[1].used, Some(0.5));
        assert_eq!(totals[1].known_hours, 0.25);
        assert_eq!(totals[3].used, None, "no data is missing, not zero");
        // 09:00 is in the default peak period (0.98 per kWh).
        assert!((totals[0].cost - 3.0 * 0.98).abs() < 1e-9);
        // Slot 0: a 4 kW + b 2 kW; slot 1 has only a (b missing): not full.
        let (kw, at) = peak_demand(&frame, &[true, true, false, true])
            .unwrap()
            .unwrap();
        assert!((kw - 6.0).abs() < 1e-9 && at == 0, "{kw} at {at}");
        let profile = load_profile(&frame, &[true, true, false, true]).unwrap();
        // a: 3 kWh over 0.5 h = 6 kW; b: 0.5 over 0.25 = 2 kW.
        assert_eq!(profile[9].weekday_kw, Some(8.0));
        assert_eq!(profile[9].weekend_kw, None);
        let site = SiteInfo {
            id: "s".into(),
            name: "Site".into(),
            tz: chrono_tz::UTC,
            latitude: 0.0,
            longitude: 0.0,
            floor_area_m2: None,
            buildings: vec![],
            weather_devices: vec![],
            electricity_supplier: None,
        };
        let rows = scope_totals(&site, &meters, &totals, 1.0, &energy);
        let find = |scope, name: &str, u| {
            rows.iter()
                .find(|r| r.scope == scope && r.name == name && r.utility == u)
                .unwrap()
        };
        assert_eq!(
            find(Scope::Site, "Site", Utility::Electricity).quantity,
            Some(3.5)
        );
        assert_eq!(
            find(Scope::Purpose, "lifts", Utility::Electricity).quantity,
            None
        );
        assert_eq!(
            find(Scope::Building, "tower-a", Utility::Water).quantity,
            Some(3.0)
        );
        let lifts = find(Scope::Purpose, "lifts", Utility::Electricity);
        assert_eq!((lifts.cost, lifts.co2_kg), (None, None));
    }
}
