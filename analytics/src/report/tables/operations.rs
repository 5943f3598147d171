//! The operations tables: lifts, entrapments, inspections, replacements,
//! gates, alerts and data quality.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::{headers, local, named, Cell, Table};
use crate::report::model::{QuarterReport, Scope};

/// Appends the operations tables, in reading order.
pub(super) fn push(r: &QuarterReport, out: &mut Vec<Table>) {
    let tz: Tz = r.time_zone.parse().unwrap_or(chrono_tz::UTC);
    out.push(Table {
        name: "lifts",
        title: "Lifts: availability, use and faults, per lift, building and site".into(),
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
            "trips per lift-day",
            "door cycles",
            "door cycles per lift-day",
            "faults in maintenance",
            "faults per 1,000 trips",
            "MTBF (h)",
        ]),
        rows: r
            .lifts
            .iter()
            .map(|l| {
                let lifts = if l.lifts == 1 {
                    "1 lift".to_owned()
                } else {
                    format!("{} lifts", l.lifts)
                };
                let (id, name) = match l.scope.as_str() {
                    "building" => ("total".to_owned(), Some(format!("building, {lifts}"))),
                    "site" => ("total".to_owned(), Some(format!("site, {lifts}"))),
                    _ => (l.device_id.clone(), l.name.clone()),
                };
                let building = match l.scope.as_str() {
                    "building" => Some(l.device_id.as_str()),
                    "site" => None,
                    _ => l.building.as_deref(),
                };
                vec![
                    Cell::text(id),
                    Cell::opt_text(name.as_deref()),
                    building.map_or_else(|| Cell::text(""), |b| named(r, Scope::Building, b)),
                    Cell::Percent(l.availability),
                    Cell::Number(Some(l.downtime_hours), 1),
                    Cell::Number(Some(l.planned_hours), 1),
                    Cell::Number(Some(l.faults as f64), 0),
                    Cell::Number(Some(l.entrapments as f64), 0),
                    Cell::Number(l.trips, 0),
                    Cell::Number(Some(l.trips_per_day), 0),
                    Cell::Number(Some(l.door_cycles), 0),
                    Cell::Number(Some(l.door_cycles_per_day), 0),
                    Cell::Number(Some(l.faults_in_maintenance as f64), 0),
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
        note: Some(r.lift_fault_note.clone()).filter(|n| !n.is_empty()),
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
    // The title names the cycles its rows have, as the rows give them.
    let mut cycles: Vec<String> = Vec::new();
    for c in &r.compliance {
        let label = match c.class.as_deref() {
            Some(class) => format!("class {class} every {}", c.cycle),
            None => format!("own cycle {}", c.cycle),
        };
        if !cycles.contains(&label) {
            cycles.push(label);
        }
    }
    out.push(Table {
        name: "inspections",
        title: if cycles.is_empty() {
            "Inspections against their cycles".into()
        } else {
            format!("Inspections against their cycles ({})", cycles.join(", "))
        },
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
    out.push(Table {
        name: "inspection_exceptions",
        title: "Late and missed inspections: when due, when inspected, by whom".into(),
        headers: headers(&[
            "device",
            "name",
            "cycle",
            "window from",
            "due by",
            "status",
            "inspected at (missed: the next inspection)",
            "inspector",
        ]),
        rows: r
            .compliance
            .iter()
            .flat_map(|c| {
                c.exceptions.iter().map(move |e| {
                    vec![
                        Cell::text(&c.device),
                        Cell::opt_text(c.name.as_deref()),
                        Cell::text(&c.cycle),
                        local(Some(e.window_from), tz),
                        local(Some(e.due_by), tz),
                        Cell::text(&e.status),
                        // A missed window nobody inspected since: said, not
                        // shown as missing data.
                        e.inspected_at
                            .map_or_else(|| Cell::text("none since"), |t| local(Some(t), tz)),
                        Cell::opt_text(e.inspector.as_deref()),
                    ]
                })
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
            "days with data before",
            "days with data after",
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
                    Cell::Number(Some(x.before_span.days), 1),
                    Cell::Number(x.after_span.as_ref().map(|a| a.days), 1),
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
        note: {
            let notes: Vec<String> = r
                .lift_replacements
                .iter()
                .filter(|x| !x.note.is_empty())
                .map(|x| format!("{}: {}.", x.name, x.note))
                .collect();
            (!notes.is_empty()).then(|| {
                format!(
                    "Each side counts only the time its lifts sent data. {}",
                    notes.join(" ")
                )
            })
        },
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
            "replayed (never paged)",
            "acknowledged (of paged)",
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
                let mut row = vec![
                    Cell::text(&a.rule),
                    Cell::text(&a.severity),
                    Cell::Number(Some(a.count as f64), 0),
                    Cell::Number(Some(a.replayed as f64), 0),
                ];
                // Only replayed alerts: none was paged, so there is no
                // response to measure (not a missing one).
                let paged = |c: Cell| {
                    if a.replayed == a.count {
                        Cell::text("n/a (replayed)")
                    } else {
                        c
                    }
                };
                row.extend([
                    paged(Cell::Number(Some(a.acknowledged as f64), 0)),
                    paged(Cell::Number(Some(a.within_deadline as f64), 0)),
                    paged(Cell::Number(a.median_minutes_to_acknowledge, 1)),
                    paged(Cell::Number(a.max_minutes_to_acknowledge, 1)),
                    Cell::Number(a.median_minutes_to_resolve, 1),
                    Cell::Number(Some(a.still_open as f64), 0),
                ]);
                row
            })
            .collect(),
        csv_only: false,
        note: Some(alert_note(r, tz)),
    });
    out.push(Table {
        name: "oncall_response",
        title: "On-call response against the targets".into(),
        headers: headers(&[
            "severity",
            "alerts paged",
            "acknowledged",
            "within target",
            "target (min)",
            "median min to acknowledge",
            "p90 min to acknowledge",
            "median min to resolve",
            "still open",
        ]),
        rows: r
            .oncall
            .response
            .iter()
            .map(|x| {
                vec![
                    Cell::text(&x.severity),
                    Cell::Number(Some(x.alerts as f64), 0),
                    Cell::Number(Some(x.acknowledged as f64), 0),
                    Cell::Percent((x.alerts > 0).then(|| x.within_target as f64 / x.alerts as f64)),
                    Cell::Number(Some(x.target_minutes), 0),
                    Cell::Number(x.median_minutes_to_acknowledge, 1),
                    Cell::Number(x.p90_minutes_to_acknowledge, 1),
                    Cell::Number(x.median_minutes_to_resolve, 1),
                    Cell::Number(Some(x.open as f64), 0),
                ]
            })
            .collect(),
        csv_only: false,
        note: Some(
            "Alerts that paged (not replayed, not silenced), from firing to the first \
             acknowledgement and to resolution; targets from the estate's response times \
             (emergency 15 min, ordinary 2 h, routine 24 h). An alert never acknowledged \
             is not within its target."
                .into(),
        ),
    });
    out.push(Table {
        name: "oncall_load",
        title: "On-call pages per person".into(),
        headers: headers(&["person", "pages", "delivered", "out of hours"]),
        rows: r
            .oncall
            .load
            .iter()
            .map(|x| {
                vec![
                    Cell::Named {
                        shown: x.name.clone(),
                        id: x.person.clone(),
                    },
                    Cell::Number(Some(x.pages as f64), 0),
                    Cell::Number(Some(x.delivered as f64), 0),
                    Cell::Number(Some(x.out_of_hours as f64), 0),
                ]
            })
            .collect(),
        csv_only: false,
        note: Some(
            "Pages of the escalation ladders (issue 31) due in the quarter; out of hours: \
             outside the person's working hours when the page came due (09:00-18:00 on \
             working days unless the roster said otherwise), on a weekend or a public holiday."
                .into(),
        ),
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
            Cell::text("bridged intervals (meter, local time)"),
            Cell::Text(bridged(r, tz)),
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
}

/// What the alerts table covers: the share of the quarter the rules were
/// evaluated over (live, replayed), the spans they were not, and where the
/// report's own tables disagree with its alerts.
fn alert_note(r: &QuarterReport, tz: Tz) -> String {
    let c = &r.alert_coverage;
    let when = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string();
    let mut out = if c.complete() {
        format!(
            "Rules evaluated over the whole quarter (live {:.1} %, replayed {:.1} %).",
            c.live * 100.0,
            c.replayed * 100.0
        )
    } else {
        let shown: Vec<String> = c
            .gaps
            .iter()
            .take(5)
            .map(|(a, b)| format!("{} to {}", when(*a), when(*b)))
            .collect();
        format!(
            "INCOMPLETE: rules evaluated over {:.1} % of the quarter only (live {:.1} %, \
             replayed {:.1} %); not evaluated {}{} ({}). Alerts of those spans are missing, not \
             absent.",
            c.evaluated * 100.0,
            c.live * 100.0,
            c.replayed * 100.0,
            shown.join(", "),
            if c.gaps.len() > 5 {
                format!(" and {} more spans", c.gaps.len() - 5)
            } else {
                String::new()
            },
            r.time_zone
        )
    };
    if r.alerts.iter().any(|a| a.replayed > 0) {
        out.push_str(
            " Replayed alerts were raised afterwards over stored data and never paged: \
             acknowledgement figures are of paged alerts only.",
        );
    }
    for n in &r.alert_notes {
        out.push(' ');
        out.push_str(&crate::report::narrative::sentence(n));
    }
    out
}

/// The bridged intervals by meter and time (the first ten; every one is in
/// corrected_intervals.csv).
fn bridged(r: &QuarterReport, tz: Tz) -> String {
    let gaps: Vec<_> = r
        .non_routine_events
        .iter()
        .filter(|e| e.kind == "gap bridged")
        .collect();
    if gaps.is_empty() {
        return "none".into();
    }
    let when = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string();
    let mut shown: Vec<String> = gaps
        .iter()
        .take(10)
        .map(|e| {
            format!(
                "{} {} to {}",
                e.meter,
                when(e.from),
                e.to.map_or_else(|| "open".to_owned(), when)
            )
        })
        .collect();
    if gaps.len() > 10 {
        shown.push(format!(
            "and {} more in corrected_intervals.csv",
            gaps.len() - 10
        ));
    }
    shown.join("; ")
}
