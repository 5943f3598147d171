//! Meter data as energy engineers have it: a CSV export of a utility, an
//! AMI head-end or a logger, turned into the same readings MQTT brings
//! (pure; `estatemon import` stores them with the ingest writer).
//!
//! - Columns: a time and a value, named by the caller or found by their
//!   headers (`start`, `timestamp`, `date`…; `value`, `kwh`, `usage`…).
//! - Times: RFC 3339 with an offset, naive date-times or dates (read in
//!   the site's time zone, or `--time-zone`), or epoch seconds.
//! - Reads: **interval** (use in each interval: a register is built from
//!   them), **register** (the meter's cumulative register as read), or
//!   **gauge** (a temperature, a pressure: stored as is).
//! - Daily or longer reads are credited to the local day the row names at
//!   the site: a read stamped `2016-01-01T00:00:00Z` at a Chicago site is
//!   1 January there, not 31 December; the summary says when the stamps
//!   were not the site's local midnight.
//! - A row without a value (empty, `nan`, `NA`) is a hole: the built
//!   register does not bridge it (the consumption engine reads the hole as
//!   unknown, never zero). A row that cannot be read is a dead letter with
//!   its line number; the others are kept.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use estatemon_domain::metric::MetricKind;
use estatemon_domain::units::Unit;
use estatemon_domain::{Metric, Reading};

use crate::dead_letter::{Reason, Reject};

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
    pub value_column: Option<String>,
    /// `None`: gauge for gauge metrics; for registers, `register` when the
    /// value column's header says so (`register`, `reading`, `read`),
    /// else `interval`.
    pub reads: Option<Reads>,
    /// `None`: from the value column's header (`value (kWh)`, `usage_wh`),
    /// else the metric's own unit.
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
    pub rows: usize,
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
    pub columns: (String, String),
    /// What the reader should know (unit assumed, stamps moved to days…).
    pub notes: Vec<String>,
}

/// A file-level problem (no usable column, no rows): nothing is imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FileError(pub String);

const TIME_NAMES: &[&str] = &[
    "start",
    "timestamp",
    "time",
    "datetime",
    "date_time",
    "date",
    "start_time",
    "interval_start",
    "read_time",
    "reading_time",
    "dt",
    "ts",
];
const VALUE_NAMES: &[&str] = &[
    "value",
    "kwh",
    "usage",
    "consumption",
    "energy",
    "reading",
    "register",
    "read",
    "volume",
    "m3",
    "temperature",
    "temp",
    "tempf",
    "tempc",
];
const MISSING: &[&str] = &["", "nan", "na", "n/a", "null", "none", "-"];

fn normalise(h: &str) -> String {
    h.trim()
        .trim_start_matches('\u{feff}')
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .trim_matches('_')
        .to_owned()
}

/// A unit named in a header: `value (kWh)`, `usage [Wh]`, `energy_wh`.
fn unit_in_header(h: &str) -> Option<Unit> {
    h.split(|c: char| c.is_whitespace() || "()[]_,;:".contains(c))
        .filter(|t| !t.is_empty())
        .find_map(Unit::parse)
}

fn find_column(headers: &[String], wanted: Option<&str>, names: &[&str]) -> Option<usize> {
    match wanted {
        Some(w) => headers
            .iter()
            .position(|h| h.trim() == w || normalise(h) == normalise(w)),
        None => names.iter().find_map(|n| {
            headers.iter().position(|h| {
                let h = normalise(h);
                h == *n || h.split('_').next() == Some(n)
            })
        }),
    }
}

/// A timestamp as written: an instant, and the date and time of day as
/// written (for daily reads credited to the day they name).
fn parse_time(s: &str, tz: Tz) -> Result<(DateTime<Utc>, NaiveDateTime), String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok((t.with_timezone(&Utc), t.naive_local()));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%:z",
        "%Y-%m-%d %H:%M%:z",
        "%Y-%m-%dT%H:%M%:z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Ok((t.with_timezone(&Utc), t.naive_local()));
        }
    }
    let local = |n: NaiveDateTime| -> Result<(DateTime<Utc>, NaiveDateTime), String> {
        tz.from_local_datetime(&n)
            .earliest()
            .map(|t| (t.with_timezone(&Utc), n))
            .ok_or_else(|| format!("`{s}` does not exist in {} (a clock change)", tz.name()))
    };
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return local(n);
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return local(d.and_hms_opt(0, 0, 0).expect("midnight"));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = s.parse::<i64>() {
            // Seconds, or milliseconds past 2001-09 in seconds.
            let ms = if n > 100_000_000_000 { n } else { n * 1000 };
            if let Some(t) = DateTime::from_timestamp_millis(ms) {
                return Ok((t, t.with_timezone(&tz).naive_local()));
            }
        }
    }
    Err(format!(
        "`{s}` is not a time (RFC 3339, `YYYY-MM-DD[ HH:MM[:SS]]` in {}, or epoch seconds)",
        tz.name()
    ))
}

struct Row {
    line: usize,
    at: DateTime<Utc>,
    written: NaiveDateTime,
    value: f64,
}

/// Reads a CSV text. Rows may come in any order; duplicates by time keep
/// the first.
pub fn parse(text: &str, format: &Format) -> Result<Imported, FileError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| FileError(format!("cannot read the header line: {e}")))?
        .iter()
        .map(str::to_owned)
        .collect();
    let time_col =
        find_column(&headers, format.time_column.as_deref(), TIME_NAMES).ok_or_else(|| {
            FileError(format!(
                "no time column{} among {headers:?}: name it with --time-column",
                format
                    .time_column
                    .as_deref()
                    .map(|c| format!(" `{c}`"))
                    .unwrap_or_default()
            ))
        })?;
    let value_col = find_column(&headers, format.value_column.as_deref(), VALUE_NAMES)
        .filter(|c| *c != time_col)
        .or_else(|| {
            // Two columns: the other one.
            (format.value_column.is_none() && headers.len() == 2).then_some(1 - time_col)
        })
        .ok_or_else(|| {
            FileError(format!(
                "no value column among {headers:?}: name it with --value-column"
            ))
        })?;
    let value_header = &headers[value_col];
    let mut out = Imported {
        columns: (headers[time_col].clone(), value_header.clone()),
        ..Imported::default()
    };
    let unit = match format.unit.or_else(|| unit_in_header(value_header)) {
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

    let mut rows: Vec<Row> = Vec::new();
    // (byte offset, newlines before it) of the last record's start.
    let mut counted = (0usize, 0usize);
    for (k, record) in reader.records().enumerate() {
        // The record's own line (blank lines and quoted newlines count):
        // newlines before the record's first byte, counted incrementally.
        let line = match record.as_ref().ok().and_then(|r| r.position()) {
            Some(p) => {
                let bytes = text.as_bytes();
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
        let raw = |r: &csv::StringRecord| r.iter().collect::<Vec<_>>().join(",");
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
        if record.iter().all(str::is_empty) {
            continue;
        }
        out.rows += 1;
        let reject = |reason, detail: String| (line, raw(&record), Reject::new(reason, detail));
        let (Some(t), Some(v)) = (record.get(time_col), record.get(value_col)) else {
            out.rejects.push(reject(
                Reason::MissingField,
                format!(
                    "line {line}: {} fields, the time and value columns need {}",
                    record.len(),
                    time_col.max(value_col) + 1
                ),
            ));
            continue;
        };
        let (at, written) = match parse_time(t, format.tz) {
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
        let value = match v.replace(',', "").parse::<f64>() {
            Ok(x) if x.is_finite() => unit.to_canonical(x),
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
                    unit.symbol,
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
        });
    }
    rows.sort_by_key(|r| (r.at, r.line));
    rows.dedup_by_key(|r| r.at);
    if rows.is_empty() {
        return Ok(out);
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
            let midnight = format
                .tz
                .from_local_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight"))
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(r.at);
            if midnight != r.at {
                moved += 1;
                example.get_or_insert((r.line, r.at, day));
            }
            r.at = midnight;
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
    match reads {
        Reads::Gauge | Reads::Register => {
            out.last = rows.last().map(|r| r.at);
            out.readings = rows
                .iter()
                .map(|r| Reading {
                    device_id: format.device_id.clone(),
                    metric: format.metric,
                    ts: r.at,
                    value: r.value,
                })
                .collect();
        }
        Reads::Interval => {
            let step = cadence.unwrap_or(Duration::days(1));
            // The end of a row's interval: the next row's start when it
            // follows on (within 1.5 steps: billing months vary), else one
            // step (a local day for daily reads) later: a hole follows.
            let one_step = |r: &Row| {
                if out.daily {
                    let day = r.written.date() + Duration::days(step.num_days().max(1));
                    format
                        .tz
                        .from_local_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight"))
                        .earliest()
                        .map_or(r.at + step, |t| t.with_timezone(&Utc))
                } else {
                    r.at + step
                }
            };
            let end_of = |i: usize| match rows.get(i + 1) {
                Some(next) if next.at - rows[i].at <= step * 3 / 2 => next.at,
                _ => one_step(&rows[i]),
            };
            let reading = |ts, value| Reading {
                device_id: format.device_id.clone(),
                metric: format.metric,
                ts,
                value,
            };
            let mut register = format.register_base.max(1.0);
            out.readings.push(reading(rows[0].at, register));
            let mut end = end_of(0);
            for (i, r) in rows.iter().enumerate() {
                if i > 0 && r.at != end {
                    // A hole (or an overlap): the register restarts at half
                    // its value, a fall the consumption engine reads as
                    // unknown use, never as none.
                    out.holes += 1;
                    register *= 0.5;
                    out.readings.push(reading(r.at, register));
                }
                register += r.value;
                end = end_of(i);
                out.readings.push(reading(end, register));
            }
            out.last = Some(end);
            if out.holes > 0 {
                out.notes.push(format!(
                    "{} hole(s) in the intervals (missing rows or time jumps): their use is \
                     unknown, not zero",
                    out.holes
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(reads: Option<Reads>, tz: &str) -> Format {
        Format {
            device_id: "m".into(),
            metric: Metric::EnergyKwh,
            time_column: None,
            value_column: None,
            reads,
            unit: None,
            tz: tz.parse().unwrap(),
            register_base: 1_000_000.0,
            accept: (
                DateTime::from_timestamp(0, 0).unwrap(),
                DateTime::from_timestamp(4_000_000_000, 0).unwrap(),
                "test",
            ),
        }
    }

    /// The first rows of OpenEEmeter's bundled sample
    /// `eemeter/samples/il-electricity-cdd-hdd-daily.csv.gz` (eemeter 4.1.1
    /// on PyPI, Apache-2.0): daily kWh stamped at Chicago's local midnight.
    const EEMETER_DAILY: &str = "start,value\n\
        2015-11-22T00:00:00-06:00,32.34\n\
        2015-11-23T00:00:00-06:00,23.8\n\
        2015-11-24T00:00:00-06:00,26.26\n\
        2015-11-25T00:00:00-06:00,21.32\n";

    #[test]
    fn daily_interval_reads_become_a_register_on_local_midnights() {
        let out = parse(EEMETER_DAILY, &format(None, "America/Chicago")).unwrap();
        assert_eq!(out.reads, Some(Reads::Interval));
        assert!(out.daily && out.rejects.is_empty() && out.holes == 0);
        assert_eq!(out.readings.len(), 5, "a start and one end per day");
        let use_of = |k: usize| out.readings[k + 1].value - out.readings[k].value;
        assert!((use_of(0) - 32.34).abs() < 1e-9 && (use_of(3) - 21.32).abs() < 1e-9);
        assert_eq!(
            out.readings[0].ts,
            DateTime::parse_from_rfc3339("2015-11-22T06:00:00Z").unwrap()
        );
        assert_eq!(
            out.readings[4].ts,
            DateTime::parse_from_rfc3339("2015-11-26T06:00:00Z").unwrap()
        );
        assert!(out.notes.iter().any(|n| n.contains("read as kWh")));
    }

    #[test]
    fn daily_reads_stamped_at_utc_midnight_are_credited_to_the_day_they_name() {
        let text = EEMETER_DAILY.replace("T00:00:00-06:00", "T00:00:00Z");
        let out = parse(&text, &format(None, "America/Chicago")).unwrap();
        // 00:00Z is 18:00 the day before in Chicago; the read is still 22
        // November's, at Chicago's midnight.
        assert_eq!(
            out.readings[0].ts,
            DateTime::parse_from_rfc3339("2015-11-22T06:00:00Z").unwrap()
        );
        assert!(
            out.notes
                .iter()
                .any(|n| n.contains("4 daily read(s)") && n.contains("line 2")),
            "{:?}",
            out.notes
        );
    }

    #[test]
    fn holes_bad_lines_and_units() {
        let text = "Interval Start,Usage (Wh)\n\
            2026-03-01 00:00,1000\n\
            2026-03-01 01:00,nan\n\
            2026-03-01 02:00,2000\n\
            2026-03-01 03:00,abc\n\
            yesterday,5\n\
            2026-03-01 04:00,-3\n\
            2026-03-01 05:00,500\n\
            2026-03-01 06:00,1000\n";
        let out = parse(text, &format(None, "Asia/Hong_Kong")).unwrap();
        assert_eq!(out.unit, Some("Wh"));
        assert_eq!(out.missing, [3]);
        let lines: Vec<usize> = out.rejects.iter().map(|r| r.0).collect();
        assert_eq!(lines, [5, 6, 7]);
        assert!(out.rejects[1].2.detail.contains("line 6"));
        assert_eq!(out.rejects[0].1, "2026-03-01 03:00,abc");
        // Hours 1, 3 and 4 are missing: two holes, each a fall (unknown).
        assert_eq!(out.holes, 2);
        let v: Vec<f64> = out.readings.iter().map(|r| r.value).collect();
        assert_eq!(
            v,
            [
                1e6,
                1e6 + 1.0,
                500_000.5,
                500_002.5,
                250_001.25,
                250_001.75,
                250_002.75
            ]
        );
        // Naive times are the site's: 00:00 in Hong Kong is 16:00 UTC.
        assert_eq!(
            out.readings[0].ts,
            DateTime::parse_from_rfc3339("2026-02-28T16:00:00Z").unwrap()
        );
    }

    #[test]
    fn line_numbers_count_blank_lines_and_daily_registers_keep_their_instants() {
        let text = "start,value\n2026-03-01,1\n\n2026-03-02,bad\n";
        let out = parse(text, &format(None, "UTC")).unwrap();
        assert_eq!(out.rejects[0].0, 4, "{:?}", out.rejects);
        let regs = "date,meter reading (kWh)\n2026-01-05 23:59:59,100\n2026-01-06 23:59:59,110\n2026-01-07 23:59:59,125\n";
        let out = parse(regs, &format(None, "Asia/Hong_Kong")).unwrap();
        assert_eq!(out.reads, Some(Reads::Register));
        assert!(out.daily);
        assert_eq!(
            out.readings[0].ts,
            DateTime::parse_from_rfc3339("2026-01-05T15:59:59Z").unwrap(),
            "an end-of-day read stays at the day's end"
        );
    }

    proptest::proptest! {
        /// Whatever the bytes, parsing answers (rows, rejects or a file
        /// error) and every reading it gives is finite.
        #[test]
        fn any_text_parses_or_says_why(text in "(?s).{0,400}", lines in proptest::collection::vec("[-0-9T:. ,a-zZ+]{0,30}", 0..20)) {
            for body in [text.clone(), format!("start,value\n{}", lines.join("\n"))] {
                if let Ok(out) = parse(&body, &format(None, "Europe/London")) {
                    proptest::prop_assert!(out.readings.iter().all(|r| r.value.is_finite()));
                    proptest::prop_assert!(out.rejects.len() + out.missing.len() <= out.rows);
                }
            }
        }
    }

    #[test]
    fn registers_gauges_and_refusals() {
        let regs =
            "timestamp,meter reading [kWh]\n2026-01-01T00:00:00Z,100\n2026-01-01T00:15:00Z,101.5\n";
        let out = parse(regs, &format(None, "UTC")).unwrap();
        assert_eq!(out.reads, Some(Reads::Register));
        assert_eq!(out.readings[1].value, 101.5);

        let temps = "dt,tempF\n2015-11-22T00:00:00-06:00,21.01\n2015-11-22T01:00:00-06:00,20.35\n";
        let mut f = format(None, "America/Chicago");
        f.metric = Metric::TemperatureC;
        f.unit = Unit::parse("°F");
        let out = parse(temps, &f).unwrap();
        assert_eq!(out.reads, Some(Reads::Gauge));
        assert!((out.readings[0].value - (21.01 - 32.0) * 5.0 / 9.0).abs() < 1e-9);

        let mut recent = format(None, "UTC");
        recent.accept.0 = DateTime::from_timestamp(1_767_225_600, 0).unwrap(); // 2026-01-01
        let old = parse("start,value\n2015-11-22,1\n2026-02-01,2\n", &recent).unwrap();
        assert_eq!(old.rejects.len(), 1);
        assert_eq!(old.rejects[0].2.reason, Reason::TimestampTooOld);
        assert!(old.rejects[0].2.detail.starts_with("line 2:"));

        let e = parse("when,what\n1,2\n", &format(None, "UTC")).unwrap_err();
        assert!(e.0.contains("--time-column"), "{e}");
        let e = parse("start,value (W)\n2026-01-01,1\n", &format(None, "UTC")).unwrap_err();
        assert!(e.0.contains("does not measure"), "{e}");
    }
}
