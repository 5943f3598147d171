//! The report's tables as data, shared by HTML, PDF and CSV: one
//! definition of what each column holds, so the formats cannot disagree.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::model::{QuarterReport, Scope};

mod operations;
mod savings;

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
            vec![Cell::text("Produced by"), Cell::text(&r.prepared_by)],
            vec![
                Cell::text("Sign-off"),
                Cell::Text(super::signoff::status(r)),
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
    savings::push(r, &mut out);
    operations::push(r, &mut out);
    out.push(super::signoff::table(r));
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
