//! Meter data as energy engineers have it: a CSV export of a utility, an
//! AMI head-end or a logger, turned into the same readings MQTT brings
//! (pure; `estatemon import` stores them with the ingest writer).
//!
//! - `layout`: the encoding (UTF-8, UTF-16), the preamble before the header
//!   (found, or `skip_lines`), and the columns: a time (or a date and a time
//!   of day, as Green Button CSV has them), a value, its unit (a `UNITS`
//!   column too) and the utility's quality flag (`E` estimated, `A`
//!   actual), named by the caller or found by their headers.
//! - `time`: RFC 3339 with an offset, naive date-times or dates (read in the
//!   site's time zone, or `--time-zone`), or epoch seconds; the hour a
//!   fall-back repeats is told apart by the rows' order.
//! - `register`: **interval** reads (use in each interval) build a register;
//!   **register** reads (the meter's cumulative register) and **gauge**
//!   reads (a temperature, a pressure) are stored as read. Daily or longer
//!   reads are credited to the local day the row names at the site.
//! - A row without a value (empty, `nan`, `NA`) is a hole: the built
//!   register does not bridge it (the consumption engine reads the hole as
//!   unknown, never zero). A row that cannot be read is a dead letter with
//!   its line number; so is a row whose time another row already gave with
//!   another value. Exact duplicates are counted. Columns that would put a
//!   day's intervals on one time are refused: nothing is imported.

mod layout;
mod register;
mod time;

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use chrono_tz::Tz;
use estatemon_domain::metric::MetricKind;
use estatemon_domain::units::Unit;
use estatemon_domain::{Metric, Reading};

use crate::dead_letter::{Reason, Reject};
pub use layout::{decode_text, Quality};
use layout::{normalise, unit_in_header, TimeColumns};
use time::{LocalClock, Stamp};

/// How the values of a file are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Use in each interval (kWh in that hour or day).
    Interval,
    /// The meter's cumulative register.
    Register,
    /// An instantaneous value (temperature, pressure).
    Gauge,
}

impl Reads {
    pub fn as_str(self) -> &'static str {
        match self {
            Reads::Interval => "interval",
            Reads::Register => "register",
            Reads::Gauge => "gauge",
        }
    }
}

impl std::str::FromStr for Reads {
    type Err = String;
    fn from_str(s: &str) -> Result<Reads, String> {
        match s {
            "interval" => Ok(Reads::Interval),
            "register" => Ok(Reads::Register),
            "gauge" => Ok(Reads::Gauge),
            _ => Err(format!("`{s}`: expected interval, register or gauge")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Format {
    pub device_id: String,
    pub metric: Metric,
    pub time_column: Option<String>,
    /// The date when the time column holds times of day (Green Button's
    /// `DATE` beside `START TIME`); found by its header when not named.
    pub date_column: Option<String>,
    pub value_column: Option<String>,
    /// The utility's quality flag (`E`/`A`, or notes saying "estimated").
    pub quality_column: Option<String>,
    /// Lines before the header (`None`: the first line naming a time and a
    /// value column is the header).
    pub skip_lines: Option<usize>,
    /// `None`: gauge for gauge metrics; for registers, `register` when the
    /// value column's header says so (`register`, `reading`, `read`),
    /// else `interval`.
    pub reads: Option<Reads>,
    /// `None`: from the value column's header (`value (kWh)`, `usage_wh`),
    /// else a `UNITS` column, else the metric's own unit.
    pub unit: Option<Unit>,
    /// Naive times and daily reads are in this zone (the site's).
    pub tz: Tz,
    /// Where a built register starts (the meter's last stored register
    /// before the file, or any positive value).
    pub register_base: f64,
    /// Rows stamped outside `[from, to]` are dead letters (the live age
    /// limit, or the retention period when history is accepted).
    pub accept: (DateTime<Utc>, DateTime<Utc>, &'static str),
}

/// What a file gave.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    pub readings: Vec<Reading>,
    /// (line, the line's text, why) for every row that could not be read.
    pub rejects: Vec<(usize, String, Reject)>,
    /// Lines whose value was empty or not a number by intent (`nan`, `NA`).
    pub missing: Vec<usize>,
    /// Lines that repeat an earlier row exactly (time and value): dropped.
    pub duplicates: Vec<usize>,
    pub rows: usize,
    /// Rows whose values went in (one per instant).
    pub stored_rows: usize,
    /// Lines before the header (a utility's preamble).
    pub preamble: usize,
    /// Holes in interval reads (a missing row or a time jump).
    pub holes: usize,
    pub first: Option<DateTime<Utc>>,
    pub last: Option<DateTime<Utc>>,
    /// The spacing of the rows (the median), and whether they are daily or
    /// longer (credited to local days).
    pub cadence: Option<Duration>,
    pub daily: bool,
    pub reads: Option<Reads>,
    pub unit: Option<&'static str>,
    /// The time column(s) (`DATE + START TIME`) and the value column.
    pub columns: (String, String),
    /// The quality column, and the stored rows the utility flagged:
    /// (line, time, value in canonical units) of each estimated one, and
    /// how many are actual. Readings carry no quality: these say which
    /// stored values are estimates.
    pub quality_column: Option<String>,
    pub estimated: Vec<(usize, DateTime<Utc>, f64)>,
    pub actual: usize,
    /// What the reader should know (unit assumed, stamps moved to days…).
    pub notes: Vec<String>,
}

/// A file-level problem (no usable column, no rows): nothing is imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FileError(pub String);

const MISSING: &[&str] = &["", "nan", "na", "n/a", "null", "none", "-"];

/// A row that was read: where, when, how much.
struct Row {
    line: usize,
    at: DateTime<Utc>,
    written: NaiveDateTime,
    value: f64,
    /// The value as written, for messages.
    shown: String,
    raw: String,
    quality: Option<Quality>,
}

/// Reads a CSV text. Rows may come in any order; a time given twice keeps
/// the first row (an exact repeat is counted, another value is a dead
/// letter).
pub fn parse(text: &str, format: &Format) -> Result<Imported, FileError> {
    let header = layout::find_header(text, format)?;
    let body = &text[header.offset..];
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .delimiter(header.delimiter)
        .from_reader(body.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| FileError(format!("cannot read the header line: {e}")))?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut out = Imported {
        preamble: header.lines_before,
        ..Imported::default()
    };

    // Every record with its own line in the file (blank lines, quoted
    // newlines and the preamble count): newlines before the record's first
    // byte, counted incrementally.
    let mut records: Vec<(usize, Result<csv::StringRecord, String>)> = Vec::new();
    let mut counted = (0usize, 0usize);
    for (k, record) in reader.records().enumerate() {
        let line = header.lines_before
            + match record.as_ref().ok().and_then(|r| r.position()) {
                Some(p) => {
                    let bytes = body.as_bytes();
                    let mut b = (p.byte() as usize).min(bytes.len());
                    while b < bytes.len() && matches!(bytes[b], b'\n' | b'\r') {
                        b += 1;
                    }
                    if b >= counted.0 {
                        counted.1 += bytes[counted.0..b].iter().filter(|c| **c == b'\n').count();
                        counted.0 = b;
                    }
                    counted.1 + 1
                }
                None => k + 2,
            };
        match record {
            Ok(r) if r.iter().all(str::is_empty) => {}
            Ok(r) => records.push((line, Ok(r))),
            Err(e) => records.push((line, Err(e.to_string()))),
        }
    }
    let sample: Vec<Vec<String>> = records
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .take(20)
        .map(|r| r.iter().map(str::to_owned).collect())
        .collect();
    let columns = layout::find_columns(&headers, &sample, format)?;
    let value_header = &headers[columns.value];
    out.columns = (columns.time_names(&headers), value_header.clone());
    out.quality_column = columns.quality.map(|q| headers[q].clone());
    // The unit: named, in the value's header, or in a UNITS column (each
    // row's own, checked against the file's).
    let unit_column_unit = columns
        .unit
        .and_then(|c| layout::sample(&sample, c))
        .map(|u| {
            Unit::parse(u).ok_or_else(|| {
                FileError(format!(
                    "unit `{u}` (column `{}`) is unknown: give the values' unit with --unit",
                    headers[columns.unit.expect("a unit column")]
                ))
            })
        })
        .transpose()?;
    let unit = match format
        .unit
        .or_else(|| unit_in_header(value_header))
        .or(unit_column_unit)
    {
        Some(u) => u,
        None => {
            out.notes.push(format!(
                "no unit given or in the header `{value_header}`: read as {}",
                format.metric.unit()
            ));
            Unit::parse(format.metric.unit()).expect("a metric's own unit parses")
        }
    };
    if unit.dimension != format.metric.dimension() {
        return Err(FileError(format!(
            "unit `{}` does not measure {} ({})",
            unit.symbol,
            format.metric,
            format.metric.unit()
        )));
    }
    out.unit = Some(unit.symbol);
    let reads = format.reads.unwrap_or_else(|| {
        if format.metric.kind() == MetricKind::Gauge {
            Reads::Gauge
        } else {
            let h = normalise(value_header);
            if ["register", "reading", "read", "meter_read", "index"]
                .iter()
                .any(|w| h.split('_').any(|t| t == *w))
            {
                Reads::Register
            } else {
                Reads::Interval
            }
        }
    });
    if reads == Reads::Gauge && format.metric.kind() != MetricKind::Gauge {
        return Err(FileError(format!(
            "{} is a register: read the file as interval or register",
            format.metric
        )));
    }
    if reads != Reads::Gauge && format.metric.kind() == MetricKind::Gauge {
        return Err(FileError(format!(
            "{} is not a register: read the file as gauge",
            format.metric
        )));
    }
    out.reads = Some(reads);

    let stamp_of = |r: &csv::StringRecord| -> Option<Result<Stamp, String>> {
        Some(match columns.time {
            TimeColumns::One(c) => time::parse_stamp(r.get(c)?, format.tz),
            TimeColumns::DateAndTime { date, time } => {
                time::parse_date_and_time(r.get(date)?, r.get(time)?)
            }
        })
    };
    // A file written newest first repeats a fall-back hour newest first.
    let written = |r: &(usize, Result<csv::StringRecord, String>)| {
        r.1.as_ref()
            .ok()
            .and_then(|r| stamp_of(r)?.ok())
            .map(Stamp::written)
    };
    let newest_first = match (
        records.iter().find_map(written),
        records.iter().rev().find_map(written),
    ) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    };
    let mut clock = LocalClock::new(format.tz, newest_first);
    let needed = 1 + match columns.time {
        TimeColumns::One(c) => c.max(columns.value),
        TimeColumns::DateAndTime { date, time } => date.max(time).max(columns.value),
    };

    let mut rows: Vec<Row> = Vec::new();
    for (line, record) in records {
        out.rows += 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                out.rejects.push((
                    line,
                    String::new(),
                    Reject::new(Reason::InvalidField, format!("line {line}: {e}")),
                ));
                continue;
            }
        };
        let raw = record.iter().collect::<Vec<_>>().join(",");
        let reject = |reason, detail: String| (line, raw.clone(), Reject::new(reason, detail));
        let (Some(stamp), Some(v)) = (stamp_of(&record), record.get(columns.value)) else {
            out.rejects.push(reject(
                Reason::MissingField,
                format!(
                    "line {line}: {} fields, the time and value columns need {needed}",
                    record.len(),
                ),
            ));
            continue;
        };
        let placed = stamp.and_then(|s| Ok((clock.place(s, line)?, s.written())));
        let (at, written) = match placed {
            Ok(x) => x,
            Err(e) => {
                out.rejects.push(reject(
                    Reason::InvalidTimestamp,
                    format!("line {line}: {e}"),
                ));
                continue;
            }
        };
        let (from, to, why) = format.accept;
        if at < from || at > to {
            out.rejects.push(reject(
                if at < from {
                    Reason::TimestampTooOld
                } else {
                    Reason::TimestampInFuture
                },
                format!(
                    "line {line}: {} is outside {} .. {} ({why})",
                    at.to_rfc3339(),
                    from.format("%Y-%m-%d"),
                    to.format("%Y-%m-%d %H:%M")
                ),
            ));
            continue;
        }
        if MISSING.contains(&v.to_lowercase().as_str()) {
            out.missing.push(line);
            continue;
        }
        // The row's own unit, where a UNITS column gives one.
        let row_unit = match columns
            .unit
            .and_then(|c| record.get(c))
            .filter(|u| !u.is_empty())
        {
            None => unit,
            Some(u) => match Unit::parse(u) {
                Some(ru) if ru.symbol == unit.symbol => unit,
                Some(ru) if format.unit.is_none() && ru.dimension == unit.dimension => ru,
                _ => {
                    out.rejects.push(reject(
                        Reason::UnknownUnit,
                        format!(
                            "line {line}: unit `{u}` is not the file's {} and cannot be read as it",
                            unit.symbol
                        ),
                    ));
                    continue;
                }
            },
        };
        let value = match v.replace(',', "").parse::<f64>() {
            Ok(x) if x.is_finite() => row_unit.to_canonical(x),
            Ok(_) => {
                out.rejects.push(reject(
                    Reason::NonFiniteValue,
                    format!("line {line}: `{v}` is not finite"),
                ));
                continue;
            }
            Err(_) => {
                out.rejects.push(reject(
                    Reason::InvalidValue,
                    format!("line {line}: `{v}` is not a number"),
                ));
                continue;
            }
        };
        if reads != Reads::Gauge && value < 0.0 {
            out.rejects.push(reject(
                Reason::InvalidValue,
                format!(
                    "line {line}: {} {} cannot be negative in {} reads",
                    v,
                    row_unit.symbol,
                    reads.as_str()
                ),
            ));
            continue;
        }
        rows.push(Row {
            line,
            at,
            written,
            value,
            shown: format!("{v} {}", row_unit.symbol),
            quality: columns
                .quality
                .and_then(|c| record.get(c))
                .and_then(layout::quality_of),
            raw,
        });
    }
    if !clock.second_pass.is_empty() {
        out.notes.push(format!(
            "{} row(s) in the hour a clock change repeats (lines {}) read as its second pass, \
             by their order in the file",
            clock.second_pass.len(),
            lines(&clock.second_pass)
        ));
    }
    let rows = one_row_per_instant(rows, &headers, &sample, &columns, format, &mut out)?;
    out.stored_rows = rows.len();
    for r in &rows {
        match r.quality {
            Some(Quality::Estimated) => out.estimated.push((r.line, r.at, r.value)),
            Some(Quality::Actual) => out.actual += 1,
            None => {}
        }
    }
    register::build(rows, reads, format, &mut out);
    Ok(out)
}

/// Lines as a short list: `2, 3, 7 …`.
pub fn lines(l: &[usize]) -> String {
    let shown: Vec<String> = l.iter().take(8).map(usize::to_string).collect();
    if l.len() > 8 {
        format!("{} …", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Sorts the rows and keeps one per instant: a repeat with the same value
/// is counted, one with another value is a dead letter naming both. When
/// repeats are the rule rather than the exception, the time column gives
/// each day (or hour) one time for several intervals: storing the first of
/// each would be a wrong number, so the file is refused.
fn one_row_per_instant(
    mut rows: Vec<Row>,
    headers: &[String],
    sample: &[Vec<String>],
    columns: &layout::Columns,
    format: &Format,
    out: &mut Imported,
) -> Result<Vec<Row>, FileError> {
    rows.sort_by_key(|r| (r.at, r.line));
    let total = rows.len();
    let mut kept: Vec<Row> = Vec::with_capacity(rows.len());
    let mut conflicts: Vec<(Row, usize, String)> = Vec::new();
    let mut largest_group = 1;
    let mut group = 1;
    for r in rows {
        match kept.last() {
            Some(k) if k.at == r.at => {
                group += 1;
                largest_group = largest_group.max(group);
                if (k.value - r.value).abs() <= 1e-9 * k.value.abs().max(1.0) {
                    out.duplicates.push(r.line);
                } else {
                    let (line, shown) = (k.line, k.shown.clone());
                    conflicts.push((r, line, shown));
                }
            }
            _ => {
                group = 1;
                kept.push(r);
            }
        }
    }
    let repeats = out.duplicates.len() + conflicts.len();
    let collapsed = (largest_group >= 3 && repeats * 2 >= total)
        || (conflicts.len() >= 2 && conflicts.len() * 2 >= kept.len());
    if collapsed {
        let time_cols: Vec<usize> = match columns.time {
            TimeColumns::One(c) => vec![c],
            TimeColumns::DateAndTime { date, time } => vec![date, time],
        };
        let example = conflicts
            .first()
            .map(|(r, first, shown)| {
                format!(
                    " (e.g. lines {first} and {}: both {} in {}, with {shown} and {})",
                    r.line,
                    r.written.format("%Y-%m-%d %H:%M"),
                    format.tz.name(),
                    r.shown
                )
            })
            .unwrap_or_default();
        let hint = match (
            columns.time,
            layout::time_of_day_column(headers, sample, &time_cols),
        ) {
            (TimeColumns::One(c), Some(t)) => format!(
                "the time of day is in `{}`: --date-column '{}' --time-column '{}'",
                headers[t], headers[c], headers[t]
            ),
            _ => "name the column that gives each interval its own time with --time-column"
                .to_owned(),
        };
        return Err(FileError(format!(
            "{repeats} of {total} rows have the time of another row{example}: column(s) `{}` \
             give several intervals one time, and storing one of them would be a wrong number; \
             {hint}",
            columns.time_names(headers)
        )));
    }
    for (r, first, shown) in conflicts {
        out.rejects.push((
            r.line,
            r.raw.clone(),
            Reject::new(
                Reason::ConflictingDuplicate,
                format!(
                    "line {}: {} is also line {first}'s time, with {shown}; this row says {}: \
                     line {first}'s is kept",
                    r.line,
                    r.at.to_rfc3339(),
                    r.shown
                ),
            ),
        ));
    }
    out.rejects.sort_by_key(|r| r.0);
    Ok(kept)
}

#[cfg(test)]
mod tests;
