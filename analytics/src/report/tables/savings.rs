//! The savings tables: the groups against their targets, each retrofit's
//! headline, model, terms and uncertainty inputs, and the daily series an
//! auditor refits.

use chrono_tz::Tz;

use super::{driver_unit, headers, local, Cell, Table, ALL_DRIVERS};
use crate::report::model::QuarterReport;

/// Appends the savings tables, in reading order.
pub(super) fn push(r: &QuarterReport, out: &mut Vec<Table>) {
    let tz: Tz = r.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let cur = &r.currency;
    out.push(Table {
        name: "savings_summary",
        title: "Lighting and water savings against the targets (this quarter)".into(),
        headers: headers(&[
            "group",
            "adjusted baseline",
            "actual",
            "savings",
            "unit",
            "savings %",
            "± (90 %)",
            &format!("cost saved ({cur})"),
            "CO₂ saved (kg)",
            "target",
            "verdict (target against the 90 % interval)",
            "target basis",
        ]),
        rows: r
            .savings_groups
            .iter()
            .map(|g| {
                vec![
                    Cell::text(&g.name),
                    Cell::Number(g.adjusted_baseline, 0),
                    Cell::Number(g.actual, 0),
                    Cell::Number(g.savings, 0),
                    Cell::text(g.unit),
                    Cell::Percent(g.savings_fraction),
                    Cell::Number(g.uncertainty, 0),
                    Cell::Number(g.cost_saved, 0),
                    Cell::Number(g.co2_kg_saved, 0),
                    Cell::Percent(g.target),
                    Cell::text(g.verdict.map_or("n/a", |v| v.as_str())),
                    Cell::text(&g.target_basis),
                ]
            })
            .collect(),
        csv_only: false,
        note: None,
    });
    out.push(Table {
        name: "weather",
        title: "HVAC and the weather (degree-days at 18 °C from the site's weather devices)".into(),
        headers: headers(&[
            "quarter",
            "HVAC electricity (kWh)",
            "heating degree-days (°C·d)",
            "cooling degree-days (°C·d)",
            "days with weather",
            "kWh per degree-day",
            "this quarter's HVAC at that weather (kWh)",
        ]),
        rows: r
            .weather
            .iter()
            .map(|w| {
                vec![
                    Cell::Text(w.quarter.to_string()),
                    Cell::Number(w.hvac_kwh, 0),
                    Cell::Number(w.heating_degree_days, 0),
                    Cell::Number(w.cooling_degree_days, 0),
                    Cell::Number(Some(w.weather_days as f64), 0),
                    Cell::Number(w.kwh_per_degree_day, 1),
                    Cell::Number(w.normalised_kwh, 0),
                ]
            })
            .collect(),
        csv_only: false,
        note: Some(r.weather_note.clone()),
    });
    out.push(Table {
        name: "savings_headlines",
        title: "Retrofits: what each achieved this quarter".into(),
        headers: headers(&[
            "retrofit",
            "baseline",
            "reporting (this quarter)",
            "headline",
        ]),
        rows: r
            .savings
            .iter()
            .map(|s| {
                let period = |p: &crate::savings::Period| {
                    format!("{} to {}", p.from, p.to.pred_opt().unwrap_or(p.to))
                };
                vec![
                    Cell::text(&s.name),
                    Cell::Text(period(&s.baseline)),
                    Cell::Text(period(&s.reporting)),
                    Cell::Text(crate::report::narrative::headline(s, cur)),
                ]
            })
            .collect(),
        csv_only: false,
        note: None,
    });
    // The M&V results in three tables that each fit a page and a screen:
    // the models, the savings against their targets, the money and notes.
    out.push(Table {
        name: "savings_models",
        title: "Retrofits: baseline models (ASHRAE Guideline 14, daily data)".into(),
        headers: headers(&[
            "retrofit",
            "date",
            "meters",
            "drivers",
            "baseline days (complete)",
            "baseline (CalTRACK)",
            "R²",
            "CV(RMSE)",
            "NMBE (out of sample)",
            "ASHRAE 14",
            "extrapolated days",
        ]),
        rows: r
            .savings
            .iter()
            .map(|s| {
                let m = s.daily_model.as_ref();
                vec![
                    Cell::text(&s.name),
                    Cell::Text(s.date.to_string()),
                    Cell::Number(Some(s.meters.len() as f64), 0),
                    Cell::Text(
                        s.drivers
                            .iter()
                            .map(|d| d.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    Cell::Number(Some(s.baseline.days_used as f64), 0),
                    Cell::text(if s.baseline_sufficiency.sufficient {
                        "sufficient"
                    } else {
                        "insufficient: provisional"
                    }),
                    Cell::Number(m.map(|m| m.r2), 3),
                    Cell::Percent(m.map(|m| m.cv_rmse)),
                    Cell::Percent(m.map(|m| m.nmbe_out_of_sample.unwrap_or(m.nmbe))),
                    Cell::text(match (s.guideline, s.provisional) {
                        ("pass", false) => "pass",
                        ("pass", true) => "pass (provisional)",
                        ("fail", _) => "FAIL",
                        _ => "not assessed",
                    }),
                    Cell::Percent(Some(s.extrapolation.share)),
                ]
            })
            .collect(),
        csv_only: false,
        note: None,
    });
    // Enough to refit each model in a spreadsheet: its equation's terms,
    // and the inputs of the ± (ASHRAE Guideline 14, Annex B).
    out.push(Table {
        name: "savings_model_terms",
        title: "Retrofits: the daily models' equations (daily use = intercept + Σ coefficient · driver)".into(),
        headers: headers(&[
            "retrofit",
            "term",
            "coefficient",
            "standard error",
            "t value",
        ]),
        rows: r
            .savings
            .iter()
            .filter_map(|s| s.daily_model.as_ref().map(|m| (s, m)))
            .flat_map(|(s, m)| {
                let names = std::iter::once(format!("intercept ({} a day)", s.unit)).chain(
                    s.drivers.iter().map(move |d| {
                        format!("{} ({} per {})", d.as_str(), s.unit, driver_unit(*d))
                    }),
                );
                names.enumerate().map(move |(i, term)| {
                    let b = m.coefficients.get(i).copied();
                    let se = m.standard_errors.get(i).copied();
                    vec![
                        Cell::text(&s.name),
                        Cell::Text(term),
                        Cell::Number(b, 4),
                        Cell::Number(se, 4),
                        Cell::Number(b.zip(se).filter(|(_, e)| *e > 0.0).map(|(b, e)| b / e), 2),
                    ]
                })
            })
            .collect(),
        csv_only: false,
        note: Some(
            "Drivers: darkness_hours, the hours from sunset to sunrise at the site's latitude and \
             longitude (NOAA's simplified solar equations, zenith 90.833°: refraction and the \
             sun's radius); occupancy, the day's gate entries; weekend, 1 on Saturdays and \
             Sundays; cooling and heating degree-days, the day's mean of the hourly excesses of \
             the site's named weather sensors over (under) the balance point the temperature \
             search chose. savings_daily.csv has every baseline and reporting day's drivers \
             beside actual and model use."
                .into(),
        ),
    });
    out.push(Table {
        name: "savings_uncertainty_inputs",
        title: "Retrofits: the inputs of the ± (90 %)".into(),
        headers: headers(&[
            "retrofit",
            "n (baseline days)",
            "p (coefficients)",
            "ρ (lag-1 autocorrelation)",
            "n′ = n(1−ρ)/(1+ρ)",
            "monthly model R²",
            "monthly CV(RMSE)",
            "monthly NMBE (out of sample)",
        ]),
        rows: r
            .savings
            .iter()
            .map(|s| {
                let m = s.daily_model.as_ref();
                let rho = m.map(|m| m.autocorrelation);
                let mm = s.monthly_model.as_ref();
                vec![
                    Cell::text(&s.name),
                    Cell::Number(m.map(|m| m.n as f64), 0),
                    Cell::Number(m.map(|m| m.p as f64), 0),
                    Cell::Number(rho, 3),
                    Cell::Number(
                        m.zip(rho).map(|(m, r)| m.n as f64 * (1.0 - r) / (1.0 + r)),
                        1,
                    ),
                    Cell::Number(mm.map(|m| m.r2), 3),
                    Cell::Percent(mm.map(|m| m.cv_rmse)),
                    Cell::Percent(mm.map(|m| m.nmbe_out_of_sample.unwrap_or(m.nmbe))),
                ]
            })
            .collect(),
        csv_only: false,
        note: None,
    });
    // The hourly model's second opinion, where there is one.
    let hourly: Vec<_> = r
        .savings
        .iter()
        .filter_map(|s| s.hourly.as_ref().map(|h| (s, h)))
        .collect();
    if !hourly.is_empty() {
        out.push(Table {
            name: "savings_hourly",
            title: "Retrofits: the same savings by the hourly model (CalTRACK time of week and \
                    temperature; the daily model decides the verdict)"
                .into(),
            headers: headers(&[
                "retrofit",
                "baseline hours",
                "occupied hours a week",
                "R² (hourly)",
                "CV(RMSE) (hourly)",
                "NMBE (out of sample)",
                "ASHRAE 14 (hourly)",
                "savings % (hourly)",
                "± points (90 %)",
                "savings % (daily)",
                "extrapolated hours",
            ]),
            rows: hourly
                .iter()
                .map(|(s, h)| {
                    vec![
                        Cell::text(&s.name),
                        Cell::Number(Some(h.baseline_hours as f64), 0),
                        Cell::Number(Some(h.occupied_hours_of_week as f64), 0),
                        Cell::Number(Some(h.r2), 3),
                        Cell::Percent(Some(h.cv_rmse)),
                        Cell::Percent(h.nmbe_out_of_sample),
                        Cell::text(if h.meets_guideline { "pass" } else { "FAIL" }),
                        Cell::Percent(h.savings_fraction),
                        Cell::Percent(
                            h.uncertainty
                                .filter(|_| h.adjusted_baseline > 0.0)
                                .map(|u| u / h.adjusted_baseline),
                        ),
                        Cell::Percent(s.savings_fraction),
                        Cell::Number(Some(h.extrapolated_hours as f64), 0),
                    ]
                })
                .collect(),
            csv_only: false,
            note: None,
        });
    }
    out.push(Table {
        name: "savings",
        title: "Retrofits: savings this quarter against their targets".into(),
        headers: headers(&[
            "retrofit",
            "adjusted baseline",
            "actual",
            "savings",
            "unit",
            "savings %",
            "± (90 %)",
            "± points (90 %)",
            "target",
            "verdict (target against the 90 % interval)",
        ]),
        rows: r
            .savings
            .iter()
            .map(|s| {
                vec![
                    Cell::text(&s.name),
                    Cell::Number(s.adjusted_baseline, 0),
                    Cell::Number(s.actual, 0),
                    Cell::Number(s.savings, 0),
                    Cell::text(s.unit),
                    Cell::Percent(s.savings_fraction),
                    Cell::Number(s.uncertainty, 0),
                    Cell::Percent(
                        s.uncertainty
                            .zip(s.adjusted_baseline)
                            .filter(|(_, a)| *a > 0.0)
                            .map(|(u, a)| u / a),
                    ),
                    Cell::Percent(s.target),
                    Cell::text(s.verdict.map_or("n/a", |v| v.as_str())),
                ]
            })
            .collect(),
        csv_only: false,
        note: None,
    });
    out.push(Table {
        name: "savings_value",
        title: "Retrofits: money and CO₂ saved, and what to know".into(),
        headers: headers(&[
            "retrofit",
            &format!("cost saved ({cur})"),
            "CO₂ saved (kg)",
            "FSU",
            "notes",
        ]),
        rows: r
            .savings
            .iter()
            .map(|s| {
                vec![
                    Cell::text(&s.name),
                    Cell::Number(s.cost_saved, 0),
                    Cell::Number(s.co2_kg_saved, 0),
                    Cell::Percent(s.fractional_uncertainty),
                    Cell::Text(s.notes.join("; ")),
                ]
            })
            .collect(),
        csv_only: false,
        note: None,
    });
    out.push(Table {
        name: "savings_daily",
        title: "Retrofits: daily actual and model, with the day's drivers".into(),
        headers: {
            let mut h = headers(&["retrofit", "date", "period", "actual", "model", "unit"]);
            h.extend(
                ALL_DRIVERS
                    .iter()
                    .map(|d| format!("{} ({})", d.as_str(), driver_unit(*d))),
            );
            h
        },
        rows: r
            .savings
            .iter()
            .flat_map(|s| {
                s.daily.iter().map(move |p| {
                    let mut row = vec![
                        Cell::text(&s.id),
                        Cell::Text(p.date.to_string()),
                        Cell::text(if p.reporting { "reporting" } else { "baseline" }),
                        Cell::Number(p.actual, 3),
                        Cell::Number(p.predicted, 3),
                        Cell::text(s.unit),
                    ];
                    // Blank where the model has no such driver.
                    row.extend(ALL_DRIVERS.iter().map(|d| {
                        let v = s
                            .drivers
                            .iter()
                            .position(|x| x == d)
                            .and_then(|i| p.drivers.get(i).copied().flatten());
                        Cell::Number(v, 3)
                    }));
                    row
                })
            })
            .collect(),
        csv_only: true,
        note: None,
    });
    let event_row = |e: &crate::report::model::NonRoutineEvent| {
        vec![
            Cell::Text(if e.retrofits.is_empty() {
                "none".into()
            } else {
                e.retrofits.join("; ")
            }),
            Cell::Text(e.meter.clone()),
            Cell::Text(e.kind.clone()),
            local(Some(e.from), tz),
            e.to.map_or_else(
                || Cell::Text("open at the quarter's end".into()),
                |t| local(Some(t), tz),
            ),
            Cell::Number(e.estimated_use, 3),
            Cell::Text(e.unit.clone()),
            Cell::Text(e.treatment.clone()),
        ]
    };
    let event_headers = headers(&[
        "retrofits",
        "meter",
        "event",
        "from",
        "to",
        "estimated use in the interval",
        "unit",
        "treatment",
    ]);
    let on_retrofits: Vec<_> = r
        .non_routine_events
        .iter()
        .filter(|e| !e.retrofits.is_empty())
        .collect();
    out.push(Table {
        name: "non_routine_events",
        title: "Non-routine events on the retrofits' meters this quarter".into(),
        headers: event_headers.clone(),
        rows: on_retrofits.iter().map(|e| event_row(e)).collect(),
        csv_only: false,
        note: Some(if on_retrofits.is_empty() {
            "None this quarter on any retrofit's meter: no gap bridged, counter corrected or meter \
             alert. No non-routine adjustment was made."
                .into()
        } else {
            format!(
                "{} event(s). No non-routine adjustment was made to any baseline: each stays in \
                 the measured use as its treatment says.",
                on_retrofits.len()
            )
        }),
    });
    out.push(Table {
        name: "corrected_intervals",
        title: "Every corrected interval and meter alert of the quarter".into(),
        headers: event_headers,
        rows: r.non_routine_events.iter().map(event_row).collect(),
        csv_only: true,
        note: None,
    });
}
