//! The report's tables as data, shared by HTML, PDF and CSV: one
//! definition of what each column holds, so the formats cannot disagree.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::model::{QuarterReport, Scope};

#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    /// `None` is missing data: "missing" in HTML and PDF, empty in CSV.
    Number(Option<f64>, usize),
    /// A fraction, shown as a percentage.
    Percent(Option<f64>),
    Flag(Option<bool>),
    /// A name for people and the id it stands for in the CSV
    /// (`Tower A` / `tower-a`, `public lighting` / `public_lighting`).
    Named {
        shown: String,
        id: String,
    },
}

impl Cell {
    fn text(s: impl Into<String>) -> Cell {
        Cell::Text(s.into())
    }

    fn opt_text(s: Option<&str>) -> Cell {
        Cell::Text(s.unwrap_or("").to_owned())
    }

    /// For people (HTML, PDF).
    pub fn display(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Number(None, _) | Cell::Percent(None) => "missing".into(),
            Cell::Number(Some(v), d) => group_digits(&format!("{v:.d$}", d = *d)),
            Cell::Percent(Some(v)) => {
                let s = format!("{:.1} %", v * 100.0);
                if s == "-0.0 %" {
                    "0.0 %".into()
                } else {
                    s
                }
            }
            Cell::Flag(Some(true)) => "yes".into(),
            Cell::Flag(Some(false)) => "no".into(),
            Cell::Flag(None) => "n/a".into(),
            Cell::Named { shown, .. } => shown.clone(),
        }
    }

    /// For machines (CSV): plain numbers, fractions as fractions.
    pub fn raw(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Number(v, _) | Cell::Percent(v) => v.map(|v| format!("{v}")).unwrap_or_default(),
            Cell::Flag(v) => v.map(|v| v.to_string()).unwrap_or_default(),
            Cell::Named { id, .. } => id.clone(),
        }
    }

    pub fn is_missing(&self) -> bool {
        matches!(self, Cell::Number(None, _) | Cell::Percent(None))
    }

    pub fn is_numeric(&self) -> bool {
        !matches!(self, Cell::Text(_) | Cell::Named { .. })
    }
}

#[derive(Debug, Clone)]
pub struct Table {
    /// File stem of its CSV.
    pub name: &'static str,
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
    /// Shown only in CSV (too long for a page).
    pub csv_only: bool,
    /// Said under the table (and instead of "none this quarter" when it
    /// has no rows): why it is empty, where its figures come from.
    pub note: Option<String>,
}

fn local(ts: Option<DateTime<Utc>>, tz: Tz) -> Cell {
    Cell::Text(
        // With its UTC offset: the same instant is UTC in report.json.
        ts.map(|t| {
            t.with_timezone(&tz)
                .format("%Y-%m-%d %H:%M %:z")
                .to_string()
        })
        .unwrap_or_else(|| "missing".into()),
    )
}

use estatemon_domain::retrofit::Driver;

/// Every driver, in the order the daily CSV gives them.
const ALL_DRIVERS: [Driver; 5] = [
    Driver::DarknessHours,
    Driver::Occupancy,
    Driver::Weekend,
    Driver::CoolingDegreeDays,
    Driver::HeatingDegreeDays,
];

/// What one unit of a driver is.
fn driver_unit(d: Driver) -> &'static str {
    match d {
        Driver::DarknessHours => "h",
        Driver::Occupancy => "gate entry",
        Driver::Weekend => "weekend day (1 or 0)",
        Driver::CoolingDegreeDays | Driver::HeatingDegreeDays => "°C·d",
    }
}

fn headers(h: &[&str]) -> Vec<String> {
    h.iter().map(|s| (*s).to_owned()).collect()
}

/// Every table of the report, in reading order.
pub fn tables(r: &QuarterReport) -> Vec<Table> {
    let tz: Tz = r.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let cur = &r.currency;
    let mut out = Vec::new();
    let day = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d").to_string();
    out.push(Table {
        name: "cover",
        title: "Report".into(),
        headers: headers(&["", ""]),
        rows: vec![
            vec![
                Cell::text("Site"),
                Cell::Text(format!("{} ({})", r.site_name, r.site_id)),
            ],
            vec![
                Cell::text("Period"),
                Cell::Text(format!(
                    "{} {} to {} ({}), local dates",
                    r.quarter,
                    day(r.period_start),
                    day(r.period_end - chrono::Duration::days(1)),
                    r.time_zone
                )),
            ],
            vec![Cell::text("Prepared by"), Cell::text(&r.prepared_by)],
            vec![
                Cell::text("Reviewed by"),
                Cell::text(r.reviewed_by.as_deref().unwrap_or("not reviewed")),
            ],
            vec![Cell::text("Version"), Cell::Text(r.version.to_string())],
            vec![
                Cell::text("Generated"),
                Cell::Text(format!("{} UTC", r.generated_at.format("%Y-%m-%d %H:%M"))),
            ],
            vec![Cell::text("Currency"), Cell::text(cur)],
        ],
        csv_only: false,
        note: None,
    });
    let tariff_row = |t: &estatemon_domain::config::Tariff| {
        let periods: Vec<String> = t
            .periods
            .iter()
            .map(|p| {
                format!(
                    "{} {:02}:00–{:02}:00{}: {}",
                    p.name,
                    p.from_hour,
                    p.to_hour,
                    if p.weekdays_only { " Mon–Fri" } else { "" },
                    p.price
                )
            })
            .collect();
        vec![
            Cell::text(t.utility.as_str()),
            Cell::Text(format!("{} {cur}/{}", t.price, t.utility.unit())),
            Cell::Text(if periods.is_empty() {
                "flat".into()
            } else {
                periods.join("; ")
            }),
            Cell::text(if t.source.is_empty() {
                "not stated"
            } else {
                &t.source
            }),
        ]
    };
    out.push(Table {
        name: "tariffs",
        title: format!("Tariffs the costs use ({cur})"),
        headers: headers(&["utility", "price", "time of use (local)", "source"]),
        rows: r.tariffs.iter().map(tariff_row).collect(),
        csv_only: false,
        note: None,
    });
    let f = &r.emission_factors;
    out.push(Table {
        name: "emission_factors",
        title: "Emission factors the CO₂ figures use".into(),
        headers: headers(&["utility", "kg CO₂e per unit", "unit"]),
        rows: vec![
            vec![
                Cell::text("electricity"),
                Cell::Number(Some(f.electricity_kg_per_kwh), 4),
                Cell::text("kWh"),
            ],
            vec![
                Cell::text("water"),
                Cell::Number(Some(f.water_kg_per_m3), 4),
                Cell::text("m³"),
            ],
            vec![
                Cell::text("gas"),
                Cell::Number(Some(f.gas_kg_per_m3), 4),
                Cell::text("m³"),
            ],
        ],
        csv_only: false,
        note: None,
    });
    out.push(Table {
        name: "totals",
        title: "Consumption, cost and CO₂ by site, building, area and purpose".into(),
        headers: headers(&[
            "scope",
            "name",
            "utility",
            "quantity",
            "unit",
            "coverage",
            &format!("cost ({cur})"),
            "CO₂ (kg)",
            "meters",
        ]),
        rows: r
            .totals
            .iter()
            .map(|t| {
                vec![
                    Cell::text(t.scope.as_str()),
                    named(r, t.scope, &t.name),
                    Cell::text(t.utility.as_str()),
                    Cell::Number(t.quantity, 0),
                    Cell::text(t.unit),
                    Cell::Percent(Some(t.coverage)),
                    Cell::Number(t.cost, 0),
                    Cell::Number(t.co2_kg, 0),
                    Cell::Number(Some(t.meters as f64), 0),
                ]
            })
            .collect(),
        csv_only: false,
        note: None,
    });
    out.push(Table {
        name: "comparison",
        title: format!(
            "Against the previous quarter ({}) and the same quarter last year ({})",
            r.quarter.previous(),
            r.quarter.year_before()
        ),
        headers: headers(&[
            "scope",
            "name",
            "utility",
            "this quarter",
            "previous quarter",
            "change from previous quarter",
            "same quarter last year",
            "change from same quarter last year",
            "unit",
        ]),
        rows: r
            .comparisons
            .iter()
            .map(|c| {
                vec![
                    Cell::text(c.scope.as_str()),
                    named(r, c.scope, &c.name),
                    Cell::text(c.utility.as_str()),
                    Cell::Number(c.this_quarter, 0),
                    Cell::Number(c.previous_quarter, 0),
                    Cell::Percent(c.change_vs_previous),
                    Cell::Number(c.same_quarter_last_year, 0),
                    Cell::Percent(c.change_vs_last_year),
                    Cell::text(c.unit),
                ]
            })
            .collect(),
        csv_only: false,
        note: None,
    });
    out.push(Table {
        name: "intensity",
        title: "Energy use intensity (electricity of the registry's meters)".into(),
        headers: headers(&[
            "scope",
            "name",
            "floor area (m²)",
            "meters",
            "electricity (kWh)",
            "kWh/m² (quarter)",
            "kWh/m² per year (annualised)",
        ]),
        rows: r
            .intensity
            .iter()
            .map(|i| {
                vec![
                    Cell::text(i.scope.as_str()),
                    named(r, i.scope, &i.name),
                    Cell::Number(i.floor_area_m2, 0),
                    Cell::Number(Some(i.meters as f64), 0),
                    Cell::Number(i.kwh, 0),
                    Cell::Number(i.kwh_per_m2, 2),
                    Cell::Number(i.kwh_per_m2_year, 1),
                ]
            })
            .collect(),
        csv_only: false,
        note: None,
    });
    out.push(Table {
        name: "demand",
        title: "Peak demand and night base load (electricity)".into(),
        headers: vec![
            "peak 15-min demand (kW)".into(),
            format!("peak at ({tz})"),
            "night base load (kW)".into(),
            format!("night hours ({tz})"),
        ],
        rows: vec![vec![
            Cell::Number(r.demand.peak_kw, 1),
            local(r.demand.peak_at, tz),
            Cell::Number(r.demand.night_base_kw, 1),
            Cell::Text(format!(
                "{:02}:00–{:02}:00",
                r.demand.night_hours.0, r.demand.night_hours.1
            )),
        ]],
        csv_only: false,
        note: None,
    });
    out.push(Table {
        name: "monthly",
        title: "By month and purpose".into(),
        headers: headers(&[
            "month", "utility", "purpose", "quantity", "unit", "coverage",
        ]),
        rows: r
            .monthly
            .iter()
            .map(|m| {
                vec![
                    Cell::Text(format!("{}-{:02}", m.month / 100, m.month % 100)),
                    Cell::text(m.utility.as_str()),
                    named(r, Scope::Purpose, &m.purpose),
                    Cell::Number(m.quantity, 0),
                    Cell::text(m.utility.unit()),
                    Cell::Percent(Some(m.coverage)),
                ]
            })
            .collect(),
        csv_only: false,
        note: None,
    });
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
                    Cell::Text(super::narrative::headline(s, cur)),
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
    out.push(Table {
        name: "load_profile",
        title: "Electricity load profile".into(),
        headers: headers(&["hour", "weekdays (kW)", "weekends (kW)"]),
        rows: r
            .load_profile
            .iter()
            .map(|p| {
                vec![
                    Cell::Text(format!("{:02}:00", p.hour)),
                    Cell::Number(p.weekday_kw, 1),
                    Cell::Number(p.weekend_kw, 1),
                ]
            })
            .collect(),
        csv_only: true,
        note: None,
    });
    out.push(Table {
        name: "lifts",
        title: "Lifts: availability and faults".into(),
        headers: headers(&[
            "lift",
            "name",
            "building",
            "availability",
            "down (h)",
            "maintenance and inspection (h)",
            "faults",
            "entrapments",
            "trips",
            "faults per 1,000 trips",
            "MTBF (h)",
        ]),
        rows: r
            .lifts
            .iter()
            .map(|l| {
                vec![
                    Cell::text(&l.device_id),
                    Cell::opt_text(l.name.as_deref()),
                    l.building
                        .as_deref()
                        .map_or_else(|| Cell::text(""), |b| named(r, Scope::Building, b)),
                    Cell::Percent(l.availability),
                    Cell::Number(Some(l.downtime_hours), 1),
                    Cell::Number(Some(l.planned_hours), 1),
                    Cell::Number(Some(l.faults as f64), 0),
                    Cell::Number(Some(l.entrapments as f64), 0),
                    Cell::Number(l.trips, 0),
                    Cell::Number(l.faults_per_1000_trips, 2),
                    // No fault in the quarter: no time between faults to
                    // speak of, which is not a missing figure.
                    match l.mtbf_hours {
                        None if l.faults == 0 => Cell::text("no faults"),
                        m => Cell::Number(m, 0),
                    },
                ]
            })
            .collect(),
        csv_only: false,
        note: None,
    });
    out.push(Table {
        name: "entrapments",
        title: "Entrapments: from alarm to back in service (target: rescuer on site within 15 min)"
            .into(),
        headers: headers(&[
            "lift",
            "alarm",
            "acknowledged by",
            "rescuer on site (min)",
            "released (min)",
            "back in service",
            "within 15 min",
            "status",
        ]),
        rows: r
            .incidents
            .iter()
            .map(|i| {
                vec![
                    Cell::text(&i.lift),
                    local(Some(i.alarm_at), tz),
                    Cell::opt_text(i.acknowledged_by.as_deref()),
                    Cell::Number(i.response_minutes, 0),
                    Cell::Number(i.release_minutes, 0),
                    local(i.back_in_service_at, tz),
                    Cell::Text(
                        match i.within_target {
                            Some(true) => "yes",
                            Some(false) => "no",
                            None => "",
                        }
                        .into(),
                    ),
                    Cell::text(i.status),
                ]
            })
            .collect(),
        csv_only: false,
        note: None,
    });
    out.push(Table {
        name: "inspections",
        title: "Inspections against their cycles (class A daily, B weekly, C monthly)".into(),
        headers: headers(&[
            "class", "device", "name", "cycle", "due", "on time", "late", "missed", "open",
        ]),
        rows: r
            .compliance
            .iter()
            .map(|c| {
                vec![
                    Cell::text(c.class.as_deref().unwrap_or("own cycle")),
                    Cell::text(&c.device),
                    Cell::opt_text(c.name.as_deref()),
                    Cell::text(&c.cycle),
                    Cell::Number(Some(c.due as f64), 0),
                    Cell::Number(Some(c.on_time as f64), 0),
                    Cell::Number(Some(c.late as f64), 0),
                    Cell::Number(Some(c.missed as f64), 0),
                    Cell::Number(Some(c.open as f64), 0),
                ]
            })
            .collect(),
        csv_only: false,
        note: None,
    });
    let side = |s: Option<&crate::lifts::stats::LiftStats>| {
        (
            s.and_then(|s| s.availability),
            s.and_then(|s| s.faults_per_1000_trips),
            s.map(|s| (s.mtbf_hours, s.faults)),
            s.map(|s| s.trips_per_day),
        )
    };
    out.push(Table {
        name: "lift_replacements",
        title: "Lift replacements: the same lifts before and after".into(),
        headers: headers(&[
            "replacement",
            "date",
            "lifts",
            "days each side",
            "availability before",
            "availability after",
            "faults per 1,000 trips before",
            "faults per 1,000 trips after",
            "MTBF before (h)",
            "MTBF after (h)",
            "trips per lift-day before",
            "trips per lift-day after",
        ]),
        rows: r
            .lift_replacements
            .iter()
            .map(|x| {
                let (a0, f0, m0, t0) = side(Some(&x.before));
                let (a1, f1, m1, t1) = side(x.after.as_ref());
                let mtbf = |m: Option<(Option<f64>, u64)>| match m {
                    Some((None, 0)) => Cell::text("no faults"),
                    m => Cell::Number(m.and_then(|m| m.0), 0),
                };
                vec![
                    Cell::text(&x.name),
                    Cell::text(x.date.to_string()),
                    Cell::Number(Some(x.lifts.len() as f64), 0),
                    Cell::Number(Some(x.days), 0),
                    Cell::Percent(a0),
                    Cell::Percent(a1),
                    Cell::Number(f0, 2),
                    Cell::Number(f1, 2),
                    mtbf(m0),
                    mtbf(m1),
                    Cell::Number(t0, 0),
                    Cell::Number(t1, 0),
                ]
            })
            .collect(),
        csv_only: false,
        note: None,
    });
    out.push(Table {
        name: "gates",
        title: "Access gates: traffic, denied and forced".into(),
        headers: headers(&[
            "gate",
            "name",
            "building",
            "granted",
            "denied",
            "forced",
            "held open",
        ]),
        rows: r
            .gates
            .iter()
            .map(|g| {
                vec![
                    Cell::text(&g.device_id),
                    Cell::opt_text(g.name.as_deref()),
                    g.building
                        .as_deref()
                        .map_or_else(|| Cell::text(""), |b| named(r, Scope::Building, b)),
                    Cell::Number(Some(g.granted as f64), 0),
                    Cell::Number(Some(g.denied as f64), 0),
                    Cell::Number(Some(g.forced as f64), 0),
                    Cell::Number(Some(g.held_open as f64), 0),
                ]
            })
            .collect(),
        csv_only: false,
        note: None,
    });
    out.push(Table {
        name: "alerts",
        title: "Alerts of the quarter and how fast they were answered".into(),
        headers: headers(&[
            "rule",
            "severity",
            "alerts",
            "acknowledged",
            "within deadline",
            "median min to acknowledge",
            "max min to acknowledge",
            "median min to resolve",
            "still open",
        ]),
        rows: r
            .alerts
            .iter()
            .map(|a| {
                vec![
                    Cell::text(&a.rule),
                    Cell::text(&a.severity),
                    Cell::Number(Some(a.count as f64), 0),
                    Cell::Number(Some(a.acknowledged as f64), 0),
                    Cell::Number(Some(a.within_deadline as f64), 0),
                    Cell::Number(a.median_minutes_to_acknowledge, 1),
                    Cell::Number(a.max_minutes_to_acknowledge, 1),
                    Cell::Number(a.median_minutes_to_resolve, 1),
                    Cell::Number(Some(a.still_open as f64), 0),
                ]
            })
            .collect(),
        csv_only: false,
        note: None,
    });
    let q = &r.data_quality;
    let mut rows = vec![
        vec![Cell::text("meters"), Cell::Number(Some(q.meters as f64), 0)],
        vec![
            Cell::text("meter-hours with data"),
            Cell::Percent(Some(q.coverage)),
        ],
        vec![
            Cell::text("meters without any reading"),
            Cell::Text(if q.meters_without_data.is_empty() {
                "none".into()
            } else {
                q.meters_without_data.join(", ")
            }),
        ],
        vec![
            Cell::text("intervals bridged over gaps"),
            Cell::Number(Some(q.gaps as f64), 0),
        ],
        vec![
            Cell::text("intervals with unknown use (implausible)"),
            Cell::Number(Some(q.implausible as f64), 0),
        ],
    ];
    for (kind, n) in &q.corrections {
        rows.push(vec![
            Cell::Text(format!("corrected counters: {kind}")),
            Cell::Number(Some(*n as f64), 0),
        ]);
    }
    for (m, c) in &q.incomplete_meters {
        rows.push(vec![
            Cell::Text(format!("incomplete: {m}")),
            Cell::Percent(Some(*c)),
        ]);
    }
    if q.dead_letters.is_empty() {
        rows.push(vec![Cell::text("dead letters"), Cell::Number(Some(0.0), 0)]);
    }
    for (reason, n) in &q.dead_letters {
        rows.push(vec![
            Cell::Text(format!("dead letters: {reason}")),
            Cell::Number(Some(*n as f64), 0),
        ]);
    }
    out.push(Table {
        name: "data_quality",
        title: "Data quality".into(),
        headers: headers(&["item", "value"]),
        rows,
        csv_only: false,
        note: None,
    });
    out
}

/// `1234567.891` → `1,234,567.891`.
pub fn group_digits(s: &str) -> String {
    let (int, frac) = s.split_once('.').map_or((s, None), |(i, f)| (i, Some(f)));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut out = String::from(sign);
    for (k, ch) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// What a person reads for a scope's id: the building's name from the
/// registry, areas and purposes in words; the CSV keeps the id.
fn named(r: &QuarterReport, scope: Scope, id: &str) -> Cell {
    let shown = match scope {
        Scope::Building => r
            .building_names
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_owned()),
        Scope::Area | Scope::Purpose => id.replace(['_', '-'], " "),
        _ => id.to_owned(),
    };
    Cell::Named {
        shown,
        id: id.to_owned(),
    }
}

/// A table as CSV (RFC 4180 quoting). Machines read it: a percentage
/// column holds fractions (0.35 for 35 %) and its header says so, and a
/// column of named things (devices, retrofits) carries the name the HTML
/// and PDF show and, beside it, the id.
pub fn to_csv(t: &Table) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let column_is =
        |i: usize, f: &dyn Fn(&Cell) -> bool| t.rows.iter().any(|r| r.get(i).is_some_and(f));
    let percent: Vec<bool> = (0..t.headers.len())
        .map(|i| column_is(i, &|c| matches!(c, Cell::Percent(_))))
        .collect();
    let named: Vec<bool> = (0..t.headers.len())
        .map(|i| column_is(i, &|c| matches!(c, Cell::Named { .. })))
        .collect();
    let mut head = Vec::new();
    for (i, h) in t.headers.iter().enumerate() {
        if percent[i] {
            head.push(quote(&csv_fraction_header(h)));
        } else {
            head.push(quote(h));
        }
        if named[i] {
            head.push(quote(&if h == "name" {
                "id".to_owned()
            } else {
                format!("{h} id")
            }));
        }
    }
    let mut out = head.join(",");
    out.push_str("\r\n");
    for row in &t.rows {
        let mut cells = Vec::new();
        for (i, c) in row.iter().enumerate() {
            match c {
                Cell::Named { shown, id } => {
                    cells.push(quote(shown));
                    cells.push(quote(id));
                }
                other => {
                    cells.push(quote(&other.raw()));
                    if named.get(i).copied().unwrap_or(false) {
                        cells.push(String::new());
                    }
                }
            }
        }
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// A percentage column's CSV header: its values are fractions.
fn csv_fraction_header(h: &str) -> String {
    let h = h.replace("± points", "±").replace(" points", "");
    let h = h.strip_suffix(" %").unwrap_or(&h).trim().to_owned();
    format!("{h} (fraction: 0.10 = 10 %)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_missing_in_every_format() {
        let c = Cell::Number(None, 0);
        assert_eq!(c.display(), "missing");
        assert_eq!(c.raw(), "");
        assert_eq!(Cell::Number(Some(0.0), 0).display(), "0");
        assert_eq!(Cell::Number(Some(13.0), 0).display(), "13");
        assert_eq!(Cell::Number(Some(-1234567.4), 0).display(), "-1,234,567");
        assert_eq!(Cell::Number(Some(1234.567), 2).display(), "1,234.57");
        assert_eq!(Cell::Percent(Some(0.4512)).display(), "45.1 %");
        assert_eq!(Cell::Percent(Some(-0.00001)).display(), "0.0 %");
        assert_eq!(Cell::Percent(Some(0.4512)).raw(), "0.4512");
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let t = Table {
            name: "t",
            title: "t".into(),
            headers: vec!["a".into(), "b".into()],
            rows: vec![vec![Cell::text("x, \"y\""), Cell::Number(None, 0)]],
            csv_only: false,
            note: None,
        };
        assert_eq!(to_csv(&t), "a,b\r\n\"x, \"\"y\"\"\",\r\n");
    }

    #[test]
    fn csv_headers_say_fractions_and_names_keep_their_ids() {
        let t = Table {
            name: "t",
            title: "t".into(),
            headers: vec!["name".into(), "savings %".into(), "± points (90 %)".into()],
            rows: vec![
                vec![
                    Cell::Named {
                        shown: "Tower A 第一座".into(),
                        id: "tower-a".into(),
                    },
                    Cell::Percent(Some(0.35)),
                    Cell::Percent(Some(0.02)),
                ],
                vec![Cell::text("site"), Cell::Percent(None), Cell::Percent(None)],
            ],
            csv_only: false,
            note: None,
        };
        assert_eq!(
            to_csv(&t),
            "name,id,savings (fraction: 0.10 = 10 %),± (90 %) (fraction: 0.10 = 10 %)\r\n\
             Tower A 第一座,tower-a,0.35,0.02\r\nsite,,,\r\n"
        );
    }
}
