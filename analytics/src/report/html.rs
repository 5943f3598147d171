//! The report as one self-contained HTML page: inline CSS, charts as
//! inline SVG drawn by [`super::charts`], no script, no external resource
//! (it opens from a mail attachment or an archive years later).

use std::fmt::Write;

use super::figures::{chart_specs, ChartSpec};
use super::model::QuarterReport;
use super::tables::{tables, Table};

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "
body { font-family: 'DejaVu Sans', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 2px solid #999; padding-bottom: 0.2em; }
.meta { color: #555; }
.kpis { display: flex; flex-wrap: wrap; gap: 1em; margin: 1.2em 0; }
.kpi { border: 1px solid #ccc; border-radius: 6px; padding: 0.6em 1em; min-width: 11em; }
.kpi .v { font-size: 1.5em; font-weight: bold; } .kpi .l { color: #555; font-size: 0.85em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; } th { background: #f0f4f8; text-align: left; }
.scroll { overflow-x: auto; } table.wide { font-size: 0.72em; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.missing { color: #c62828; font-style: italic; }
.fail { color: #c62828; font-weight: bold; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; border: 1px solid #eee; }
.notes li { color: #8a4b00; }
table.signoff td { height: 2.6em; min-width: 9em; vertical-align: bottom; }
@media print {
  body { max-width: none; margin: 0; font-size: 10pt; }
  .scroll { overflow: visible; }
  h2 { break-after: avoid; } table, figure { break-inside: avoid; }
}
";

/// A CSS string literal of `s`: quotes and backslashes escaped, and `<`
/// too, so that nothing closes the style element.
fn css_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' | '<' | '>' | '&' | '\n' | '\r' => {
                let _ = write!(out, "\\{:x} ", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The printed page: A4, and "site · quarter · version · page n of N" at
/// the foot of every page (CSS page margin boxes, as Chromium prints them).
fn page_style(r: &QuarterReport) -> String {
    format!(
        "@page {{ size: A4; margin: 14mm 12mm 16mm; \
         @bottom-center {{ content: {} counter(page) \" of \" counter(pages); \
         font: 8pt 'DejaVu Sans', Helvetica, sans-serif; color: #555; }} }}",
        css_string(&footer_prefix(r))
    )
}

/// "Harbour View (harbour-view) · 2026Q3 · version 2 · page ": what every
/// printed and PDF page carries before its number.
pub fn footer_prefix(r: &QuarterReport) -> String {
    format!(
        "{} ({}) · {} · version {} · page ",
        r.site_name, r.site_id, r.quarter, r.version
    )
}

fn table_html(out: &mut String, t: &Table) {
    let _ = write!(
        out,
        "<h3>{}</h3>\n<div class=\"scroll\"><table class=\"{}\">\n",
        escape(&t.title),
        t.name
    );
    // A key/value table (the cover) has no header row.
    if t.headers.iter().any(|h| !h.is_empty()) {
        out.push_str("<tr>");
        for h in &t.headers {
            let _ = write!(out, "<th>{}</th>", escape(h));
        }
        out.push_str("</tr>\n");
    }
    if t.rows.is_empty() {
        let _ = writeln!(
            out,
            "<tr><td colspan=\"{}\">{}</td></tr>",
            t.headers.len(),
            escape(t.note.as_deref().unwrap_or("none this quarter"))
        );
    }
    for row in &t.rows {
        out.push_str("<tr>");
        for c in row {
            let text = escape(&c.display());
            let class = if c.is_missing() {
                " class=\"n missing\""
            } else if text == "FAIL" {
                " class=\"fail\""
            } else if c.is_numeric() {
                " class=\"n\""
            } else {
                ""
            };
            let _ = write!(out, "<td{class}>{text}</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table></div>\n");
    if let Some(note) = t.note.as_deref().filter(|_| !t.rows.is_empty()) {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(note));
    }
}

fn chart_html(out: &mut String, spec: &ChartSpec) {
    match super::charts::svg(|root| spec.draw(root)) {
        Ok(svg) => {
            let _ = writeln!(
                out,
                "<figure class=\"chart\" data-title=\"{}\">{svg}</figure>",
                escape(spec.title())
            );
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "<p class=\"missing\">chart not drawn: {}</p>",
                escape(&e)
            );
        }
    }
}

fn kpi(out: &mut String, value: String, label: &str) {
    let missing = value == "missing";
    let _ = write!(
        out,
        "<div class=\"kpi\"><div class=\"v{}\">{}</div><div class=\"l\">{}</div></div>",
        if missing { " missing" } else { "" },
        escape(&value),
        escape(label)
    );
}

/// The whole page.
pub fn render(r: &QuarterReport) -> String {
    let tz: chrono_tz::Tz = r.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let specs = chart_specs(r);
    let tabs = tables(r);
    let table = |name: &str| tabs.iter().find(|t| t.name == name);
    let mut out = String::with_capacity(256 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{site} — energy report {q}</title><style>{STYLE}{page}</style></head><body>\n\
         <h1>{site}: quarterly energy report {q}</h1>\n\
         <p class=\"meta\">{from} to {to} ({tz}), generated {gen} UTC. Costs in {cur}.</p>\n",
        site = escape(&r.site_name),
        q = r.quarter,
        from = r.period_start.with_timezone(&tz).format("%Y-%m-%d"),
        to = (r.period_end.with_timezone(&tz) - chrono::Duration::days(1)).format("%Y-%m-%d"),
        tz = escape(&r.time_zone),
        gen = r.generated_at.format("%Y-%m-%d %H:%M"),
        cur = escape(&r.currency),
        page = page_style(r),
    );
    if let Some(t) = table("cover") {
        table_html(&mut out, t);
    }
    out.push_str("<div class=\"kpis\">");
    for (label, value) in super::narrative::key_figures(r) {
        kpi(&mut out, value, &label);
    }
    out.push_str("</div>\n");
    if !r.notes.is_empty() {
        out.push_str("<ul class=\"notes\">");
        for n in &r.notes {
            let _ = write!(out, "<li>{}</li>", escape(n));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<h2>1. Consumption</h2>\n");
    for spec in specs.iter().filter(|s| matches!(s, ChartSpec::Bars { .. })) {
        chart_html(&mut out, spec);
    }
    for name in ["totals", "comparison", "intensity", "weather", "monthly"] {
        if let Some(t) = table(name) {
            table_html(&mut out, t);
        }
    }
    out.push_str("<h2>2. Demand</h2>\n");
    for spec in specs.iter().filter(|s| s.title().contains("load profile")) {
        chart_html(&mut out, spec);
    }
    if let Some(t) = table("demand") {
        table_html(&mut out, t);
    }
    out.push_str(
        "<h2>3. Savings (IPMVP, ASHRAE Guideline 14)</h2>\n<p>Savings are the adjusted \
         baseline (the baseline model under this quarter's conditions) minus the measured use, \
         with their uncertainty at 90 % confidence; section 7 states the method.</p>\n",
    );
    for name in [
        "savings_summary",
        "savings_headlines",
        "savings_models",
        "savings_model_terms",
        "savings_uncertainty_inputs",
        "non_routine_events",
        "savings",
        "savings_value",
    ] {
        if let Some(t) = table(name) {
            table_html(&mut out, t);
        }
    }
    for spec in specs
        .iter()
        .filter(|s| s.title().contains("baseline model"))
    {
        chart_html(&mut out, spec);
    }
    out.push_str("<h2>4. Lifts and access gates</h2>\n");
    for name in [
        "lifts",
        "lift_replacements",
        "entrapments",
        "inspections",
        "inspection_exceptions",
        "gates",
    ] {
        if let Some(t) = table(name) {
            table_html(&mut out, t);
        }
    }
    out.push_str("<h2>5. Alerts</h2>\n");
    if let Some(t) = table("alerts") {
        table_html(&mut out, t);
    }
    out.push_str("<h2>6. Data quality</h2>\n");
    if let Some(t) = table("data_quality") {
        table_html(&mut out, t);
    }
    out.push_str("<h2>7. Methodology, tariffs and emission factors</h2>\n");
    for p in super::narrative::methodology(r) {
        let _ = writeln!(out, "<p>{}</p>", escape(&p));
    }
    for name in ["tariffs", "emission_factors"] {
        if let Some(t) = table(name) {
            table_html(&mut out, t);
        }
    }
    let _ = writeln!(
        out,
        "<p class=\"meta\">Emission factors: {}</p>",
        escape(&r.emission_factors.source)
    );
    out.push_str("<h2>8. Responsibility, limitations and sign-off</h2>\n");
    for p in super::signoff::responsibility(r) {
        let _ = writeln!(out, "<p>{}</p>", escape(&p));
    }
    if let Some(t) = table("signoff") {
        table_html(&mut out, t);
    }
    out.push_str("</body></html>\n");
    out
}
