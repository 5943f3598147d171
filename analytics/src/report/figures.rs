//! The report's charts as data ([`ChartSpec`]), built once from the
//! report and drawn onto SVG (HTML) or the PDF page alike.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};
use estatemon_domain::device::Utility;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::charts;
use super::model::QuarterReport;

/// A day's (actual, model) use.
type DayPair = (Option<f64>, Option<f64>);

#[derive(Debug, Clone)]
pub enum ChartSpec {
    Bars {
        title: String,
        unit: String,
        months: Vec<String>,
        series: Vec<(String, Vec<Option<f64>>)>,
    },
    Lines {
        title: String,
        unit: String,
        x_labels: Vec<String>,
        series: Vec<(String, Vec<Option<f64>>)>,
        split: Option<(usize, String)>,
    },
}

impl ChartSpec {
    pub fn title(&self) -> &str {
        match self {
            ChartSpec::Bars { title, .. } | ChartSpec::Lines { title, .. } => title,
        }
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        match self {
            ChartSpec::Bars {
                title,
                unit,
                months,
                series,
            } => charts::stacked_bars(root, title, unit, months, series),
            ChartSpec::Lines {
                title,
                unit,
                x_labels,
                series,
                split,
            } => charts::lines(
                root,
                title,
                unit,
                &|i| x_labels.get(i).cloned().unwrap_or_default(),
                series,
                split.as_ref().map(|(i, s)| (*i, s.as_str())),
            ),
        }
    }
}

fn month_name(yyyymm: i32) -> String {
    const NAMES: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {}",
        NAMES[((yyyymm % 100 - 1) as usize).min(11)],
        yyyymm / 100
    )
}

/// Every chart of the report, in reading order.
pub fn chart_specs(report: &QuarterReport) -> Vec<ChartSpec> {
    let mut out = Vec::new();
    let months = report.quarter.months();
    for utility in Utility::ALL {
        let mut by_purpose: BTreeMap<&str, Vec<Option<f64>>> = BTreeMap::new();
        for row in report.monthly.iter().filter(|r| r.utility == utility) {
            let slot = by_purpose
                .entry(row.purpose.as_str())
                .or_insert_with(|| vec![None; 3]);
            if let Some(k) = months.iter().position(|m| *m == row.month) {
                slot[k] = row.quantity;
            }
        }
        if by_purpose.is_empty() {
            continue;
        }
        let name = match utility {
            Utility::Electricity => "Electricity",
            Utility::Water => "Water",
            Utility::Gas => "Gas",
        };
        out.push(ChartSpec::Bars {
            title: format!("{name} by month and purpose"),
            unit: utility.unit().to_owned(),
            months: months.iter().map(|m| month_name(*m)).collect(),
            series: by_purpose
                .into_iter()
                // Words in the legend, as in the tables.
                .map(|(p, v)| (p.replace('_', " "), v))
                .collect(),
        });
    }
    for group in &report.savings_groups {
        let members: Vec<_> = report
            .savings
            .iter()
            .filter(|s| group.retrofits.contains(&s.name))
            .collect();
        let Some(first) = members.iter().map(|s| s.baseline.from).min() else {
            continue;
        };
        let last = members
            .iter()
            .map(|s| s.reporting.to)
            .max()
            .unwrap_or(first);
        let split = members.iter().map(|s| s.date).min().unwrap_or(first);
        let maps: Vec<BTreeMap<NaiveDate, DayPair>> = members
            .iter()
            .map(|s| {
                s.daily
                    .iter()
                    .map(|p| (p.date, (p.actual, p.predicted)))
                    .collect()
            })
            .collect();
        let mut dates = Vec::new();
        let mut d = first;
        while d < last {
            dates.push(d);
            d += Duration::days(1);
        }
        let sum = |d: &NaiveDate, pick: fn(&DayPair) -> Option<f64>| {
            maps.iter()
                .map(|m| m.get(d).and_then(pick))
                .sum::<Option<f64>>()
        };
        let actual: Vec<Option<f64>> = dates.iter().map(|d| sum(d, |p| p.0)).collect();
        let predicted: Vec<Option<f64>> = dates.iter().map(|d| sum(d, |p| p.1)).collect();
        out.push(ChartSpec::Lines {
            title: format!("{}: baseline model vs actual", group.name),
            unit: format!("{} per day", group.unit),
            x_labels: dates
                .iter()
                .map(|d| d.format("%Y-%m-%d").to_string())
                .collect(),
            series: vec![
                ("actual".into(), actual),
                (
                    "baseline model (adjusted baseline after the retrofit)".into(),
                    predicted,
                ),
            ],
            split: dates
                .iter()
                .position(|d| *d == split)
                .map(|i| (i, format!("retrofit {split}"))),
        });
    }
    if report
        .load_profile
        .iter()
        .any(|r| r.weekday_kw.is_some() || r.weekend_kw.is_some())
    {
        out.push(ChartSpec::Lines {
            title: "Electricity load profile (mean demand by local hour)".into(),
            unit: "kW".into(),
            x_labels: (0..24).map(|h| format!("{h:02}:00")).collect(),
            series: vec![
                (
                    "weekdays".into(),
                    report.load_profile.iter().map(|r| r.weekday_kw).collect(),
                ),
                (
                    "weekends".into(),
                    report.load_profile.iter().map(|r| r.weekend_kw).collect(),
                ),
            ],
            split: None,
        });
    }
    out
}
