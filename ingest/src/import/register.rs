//! Rows (sorted, one per instant) into readings: daily reads credited to
//! the local day they name, interval use built into a register whose holes
//! read as unknown use, registers and gauges stored as read.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use estatemon_domain::Reading;

use super::{Format, Imported, Reads, Row};

/// The site's local midnight of a date (`fallback` where a clock change
/// skips it).
fn midnight(format: &Format, day: chrono::NaiveDate, fallback: DateTime<Utc>) -> DateTime<Utc> {
    format
        .tz
        .from_local_datetime(&day.and_time(NaiveTime::MIN))
        .earliest()
        .map_or(fallback, |t| t.with_timezone(&Utc))
}

pub(super) fn build(mut rows: Vec<Row>, reads: Reads, format: &Format, out: &mut Imported) {
    if rows.is_empty() {
        return;
    }
    // The cadence: the shortest spacing of the rows (an export's interval;
    // holes only lengthen spacings). Daily reads vary by a clock change.
    let cadence = rows.windows(2).map(|w| w[1].at - w[0].at).min();
    out.cadence = cadence;
    out.daily = cadence.is_some_and(|c| c >= Duration::hours(20));
    // A register read is a reading at its instant (an end-of-day read at
    // 23:59 belongs to that day's end): only use and gauge rows move.
    if out.daily && reads != Reads::Register {
        // Daily and longer reads: the day the row names, at the site's
        // local midnight.
        let mut moved = 0;
        let mut example = None;
        for r in &mut rows {
            let day = r.written.date();
            let at = midnight(format, day, r.at);
            if at != r.at {
                moved += 1;
                example.get_or_insert((r.line, r.at, day));
            }
            r.at = at;
        }
        if let Some((line, at, day)) = example {
            out.notes.push(format!(
                "{moved} daily read(s) were not stamped at the site's local midnight (e.g. line \
                 {line}: {} is {} in {}): each is credited to the day it names ({day} there)",
                at.to_rfc3339(),
                at.with_timezone(&format.tz).format("%Y-%m-%d %H:%M"),
                format.tz.name()
            ));
        }
    }
    out.first = rows.first().map(|r| r.at);
    let reading = |ts, value| Reading {
        device_id: format.device_id.clone(),
        metric: format.metric,
        ts,
        value,
    };
    match reads {
        Reads::Gauge | Reads::Register => {
            out.last = rows.last().map(|r| r.at);
            out.readings = rows.iter().map(|r| reading(r.at, r.value)).collect();
        }
        Reads::Interval => {
            let step = cadence.unwrap_or(Duration::days(1));
            // The end of a row's interval: the next row's start when it
            // follows on (within 1.5 steps: billing months vary), else one
            // step (a local day for daily reads) later: a hole follows.
            let one_step = |r: &Row| {
                if out.daily {
                    let day = r.written.date() + Duration::days(step.num_days().max(1));
                    midnight(format, day, r.at + step)
                } else {
                    r.at + step
                }
            };
            let end_of = |i: usize| match rows.get(i + 1) {
                Some(next) if next.at - rows[i].at <= step * 3 / 2 => next.at,
                _ => one_step(&rows[i]),
            };
            let mut register = format.register_base.max(1.0);
            let mut readings = vec![reading(rows[0].at, register)];
            let mut holes = Vec::new();
            let mut end = end_of(0);
            for (i, r) in rows.iter().enumerate() {
                if i > 0 && r.at != end {
                    // A hole (or an overlap): the register restarts at half
                    // its value, a fall the consumption engine reads as
                    // unknown use, never as none.
                    holes.push((rows[i - 1].line, end, r.line, r.at));
                    register *= 0.5;
                    readings.push(reading(r.at, register));
                }
                register += r.value;
                end = end_of(i);
                readings.push(reading(end, register));
            }
            out.readings = readings;
            out.last = Some(end);
            out.holes = holes.len();
            if !holes.is_empty() {
                let local = |t: DateTime<Utc>| {
                    t.with_timezone(&format.tz)
                        .format("%Y-%m-%d %H:%M")
                        .to_string()
                };
                let shown: Vec<String> = holes
                    .iter()
                    .take(5)
                    .map(|(before, from, after, to)| {
                        format!(
                            "{} .. {} (between lines {before} and {after})",
                            local(*from),
                            local(*to)
                        )
                    })
                    .collect();
                out.notes.push(format!(
                    "{} hole(s) in the intervals (missing rows or time jumps), their use unknown, \
                     not zero: {}{}",
                    holes.len(),
                    shown.join(", "),
                    if holes.len() > 5 { ", …" } else { "" }
                ));
            }
        }
    }
}
