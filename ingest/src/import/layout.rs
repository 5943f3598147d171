//! Where a file's data are: its encoding, the preamble utilities put
//! before the header (Green Button CSV's `Name,…`, `Account Number,…`), the
//! delimiter, and which columns hold the time (one column, or a date and a
//! time of day), the value, its unit and the utility's quality flag.

use estatemon_domain::units::Unit;

use super::time::{parse_date, parse_time_of_day};
use super::{FileError, Format};

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
/// Columns that give a time of day its date.
const DATE_NAMES: &[&str] = &[
    "date",
    "start_date",
    "interval_date",
    "read_date",
    "usage_date",
    "day",
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
/// A utility's quality flag (`E` estimated, `A` actual), or notes that may
/// say "estimated".
const QUALITY_NAMES: &[&str] = &[
    "quality",
    "quality_flag",
    "quality_code",
    "flag",
    "flags",
    "qualifier",
    "read_quality",
    "data_quality",
    "estimated",
    "read_type",
    "reading_type",
    "notes",
    "note",
];
const UNIT_NAMES: &[&str] = &["units", "unit", "uom"];

pub(super) fn normalise(h: &str) -> String {
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
pub(super) fn unit_in_header(h: &str) -> Option<Unit> {
    h.split(|c: char| c.is_whitespace() || "()[]_,;:".contains(c))
        .filter(|t| !t.is_empty())
        .find_map(Unit::parse)
}

fn find_column(
    headers: &[String],
    wanted: Option<&str>,
    names: &[&str],
    except: &[usize],
) -> Option<usize> {
    let free = |i: &usize| !except.contains(i);
    match wanted {
        Some(w) => (0..headers.len())
            .filter(free)
            .find(|i| headers[*i].trim() == w || normalise(&headers[*i]) == normalise(w)),
        None => names.iter().find_map(|n| {
            (0..headers.len()).filter(free).find(|i| {
                let h = normalise(&headers[*i]);
                h == *n || h.split('_').next() == Some(n)
            })
        }),
    }
}

/// The text of a file's bytes: UTF-8 (with or without a BOM) or UTF-16
/// (Excel's "Unicode text", with a BOM or recognised by its NULs), and the
/// encoding when it was not UTF-8. Anything else is refused: guessing a
/// code page could turn a value into another one.
pub fn decode_text(bytes: &[u8]) -> Result<(String, Option<&'static str>), FileError> {
    let utf16 = |body: &[u8], le: bool, name: &'static str| {
        if !body.len().is_multiple_of(2) {
            return Err(FileError(format!(
                "{name} text of an odd number of bytes: the file is cut short"
            )));
        }
        let units: Vec<u16> = body
            .chunks_exact(2)
            .map(|c| {
                if le {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16(&units)
            .map(|t| (t, Some(name)))
            .map_err(|_| FileError(format!("not valid {name} text")))
    };
    if let Some(body) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(body, true, "UTF-16LE");
    }
    if let Some(body) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16(body, false, "UTF-16BE");
    }
    let body = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    let head = &body[..body.len().min(200)];
    let nuls = |parity: usize| {
        head.iter()
            .enumerate()
            .filter(|(i, b)| i % 2 == parity && **b == 0)
            .count()
    };
    // ASCII in UTF-16 without a BOM: every other byte is a NUL.
    if head.len() >= 4 && (nuls(1) * 2 >= head.len() / 2 || nuls(0) * 2 >= head.len() / 2) {
        let le = nuls(1) >= nuls(0);
        return utf16(body, le, if le { "UTF-16LE" } else { "UTF-16BE" });
    }
    match std::str::from_utf8(body) {
        Ok(t) if t.contains('\0') => Err(FileError(
            "the file holds NUL bytes: not a text file".into(),
        )),
        Ok(t) => Ok((t.to_owned(), None)),
        Err(e) => Err(FileError(format!(
            "not UTF-8 or UTF-16 text (byte {} is not): save it as CSV (UTF-8)",
            e.valid_up_to()
        ))),
    }
}

/// Where the header is, and how fields are separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    /// Lines before the header (a utility's preamble, blank lines).
    pub lines_before: usize,
    /// Byte offset of the header line.
    pub offset: usize,
    pub delimiter: u8,
}

fn fields(line: &str, delimiter: u8) -> Vec<String> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .delimiter(delimiter)
        .from_reader(line.as_bytes())
        .records()
        .next()
        .and_then(Result::ok)
        .map(|r| r.iter().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Tabs (Excel's "Unicode text") when the line has tabs and no commas.
fn delimiter_of(line: &str) -> u8 {
    if line.contains('\t') && !line.contains(',') {
        b'\t'
    } else {
        b','
    }
}

/// The header: after `skip_lines` when given, else the first of the first
/// 100 lines that names a time and a value column (so a utility's preamble
/// is passed over), else the first line (whose columns then say what is
/// missing).
pub(super) fn find_header(text: &str, format: &Format) -> Result<Header, FileError> {
    let mut offset = 0;
    let mut lines = Vec::new();
    for (k, line) in text.split_inclusive('\n').enumerate() {
        lines.push((k, offset, line.trim_end_matches(['\r', '\n'])));
        offset += line.len();
        if lines.len() > 100 && format.skip_lines.is_none_or(|n| k > n) {
            break;
        }
    }
    let header = |(k, offset, line): (usize, usize, &str)| Header {
        lines_before: k,
        offset,
        delimiter: delimiter_of(line),
    };
    if let Some(n) = format.skip_lines {
        return lines
            .get(n)
            .map(|l| header(*l))
            .ok_or_else(|| FileError(format!("--skip-lines {n}: the file has fewer lines")));
    }
    let names_columns = |line: &str| {
        let h = fields(line, delimiter_of(line));
        let time = find_column(&h, format.time_column.as_deref(), TIME_NAMES, &[])
            .or_else(|| find_column(&h, format.date_column.as_deref(), DATE_NAMES, &[]));
        let value = find_column(
            &h,
            format.value_column.as_deref(),
            VALUE_NAMES,
            &time.into_iter().collect::<Vec<_>>(),
        );
        h.len() >= 2 && time.is_some() && value.is_some()
    };
    Ok(lines
        .iter()
        .find(|(_, _, l)| !l.trim().is_empty() && names_columns(l))
        .or_else(|| lines.iter().find(|(_, _, l)| !l.trim().is_empty()))
        .map_or(
            Header {
                lines_before: 0,
                offset: 0,
                delimiter: b',',
            },
            |l| header(*l),
        ))
}

/// Where a row's time is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimeColumns {
    One(usize),
    /// Green Button CSV: `DATE` and `START TIME`.
    DateAndTime {
        date: usize,
        time: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Columns {
    pub time: TimeColumns,
    pub value: usize,
    pub quality: Option<usize>,
    pub unit: Option<usize>,
}

impl Columns {
    pub(super) fn time_names(&self, headers: &[String]) -> String {
        match self.time {
            TimeColumns::One(c) => headers[c].clone(),
            TimeColumns::DateAndTime { date, time } => {
                format!("{} + {}", headers[date], headers[time])
            }
        }
    }

    fn used(&self) -> Vec<usize> {
        match self.time {
            TimeColumns::One(c) => vec![c, self.value],
            TimeColumns::DateAndTime { date, time } => vec![date, time, self.value],
        }
    }
}

/// The first non-empty value of column `c` in the sample rows.
pub(super) fn sample(rows: &[Vec<String>], c: usize) -> Option<&str> {
    rows.iter()
        .filter_map(|r| r.get(c))
        .map(String::as_str)
        .find(|v| !v.is_empty())
}

fn is_time_of_day(v: Option<&str>) -> bool {
    v.is_some_and(|v| parse_time_of_day(v).is_some())
}

fn is_date_only(v: Option<&str>) -> bool {
    v.is_some_and(|v| parse_date(v).is_some())
}

/// A column other than `except` whose sample is a time of day.
pub(super) fn time_of_day_column(
    headers: &[String],
    rows: &[Vec<String>],
    except: &[usize],
) -> Option<usize> {
    (0..headers.len()).find(|c| !except.contains(c) && is_time_of_day(sample(rows, *c)))
}

/// The columns, named by the caller or found by their headers; `rows` are
/// the first data rows, whose values tell a date from a time of day.
pub(super) fn find_columns(
    headers: &[String],
    rows: &[Vec<String>],
    format: &Format,
) -> Result<Columns, FileError> {
    let no_time = |what: &str| {
        FileError(format!(
            "no time column{what} among {headers:?}: name it with --time-column (and \
             --date-column when the date is apart)"
        ))
    };
    let named = |c: &Option<String>| c.as_deref().map(|c| format!(" `{c}`")).unwrap_or_default();
    let time = match format.date_column.as_deref() {
        Some(d) => {
            let date = find_column(headers, Some(d), &[], &[])
                .ok_or_else(|| FileError(format!("no date column `{d}` among {headers:?}")))?;
            match format.time_column.as_deref() {
                Some(t) => TimeColumns::DateAndTime {
                    date,
                    time: find_column(headers, Some(t), &[], &[date])
                        .ok_or_else(|| no_time(&named(&format.time_column)))?,
                },
                // The time of day: a time column whose values are times of
                // day; without one, the date is the time (daily reads).
                None => find_column(headers, None, TIME_NAMES, &[date])
                    .filter(|t| is_time_of_day(sample(rows, *t)))
                    .map_or(TimeColumns::One(date), |time| TimeColumns::DateAndTime {
                        date,
                        time,
                    }),
            }
        }
        None => {
            let t = find_column(headers, format.time_column.as_deref(), TIME_NAMES, &[])
                .ok_or_else(|| no_time(&named(&format.time_column)))?;
            let s = sample(rows, t);
            if is_time_of_day(s) {
                let date = find_column(headers, None, DATE_NAMES, &[t])
                    .filter(|d| is_date_only(sample(rows, *d)))
                    .ok_or_else(|| {
                        FileError(format!(
                            "column `{}` holds times of day (`{}`) and no column holds their \
                             dates: name it with --date-column",
                            headers[t],
                            s.unwrap_or_default()
                        ))
                    })?;
                TimeColumns::DateAndTime { date, time: t }
            } else if is_date_only(s) && format.time_column.is_none() {
                // `date,time,kwh`: the date was found first.
                match time_of_day_column(headers, rows, &[t]).filter(|c| {
                    let h = normalise(&headers[*c]);
                    TIME_NAMES
                        .iter()
                        .any(|n| h == *n || h.split('_').next() == Some(n))
                }) {
                    Some(time) => TimeColumns::DateAndTime { date: t, time },
                    None => TimeColumns::One(t),
                }
            } else {
                TimeColumns::One(t)
            }
        }
    };
    let mut columns = Columns {
        time,
        value: 0,
        quality: None,
        unit: None,
    };
    let taken = columns.used()[..columns.used().len() - 1].to_vec();
    columns.value = find_column(headers, format.value_column.as_deref(), VALUE_NAMES, &taken)
        .or_else(|| {
            // Two columns: the other one.
            match (format.value_column.is_none(), headers.len(), time) {
                (true, 2, TimeColumns::One(t)) => Some(1 - t),
                _ => None,
            }
        })
        .ok_or_else(|| {
            FileError(format!(
                "no value column{} among {headers:?}: name it with --value-column",
                named(&format.value_column)
            ))
        })?;
    let used = columns.used();
    columns.quality = match format.quality_column.as_deref() {
        Some(q) => Some(
            find_column(headers, Some(q), &[], &used)
                .ok_or_else(|| FileError(format!("no quality column `{q}` among {headers:?}")))?,
        ),
        None => find_column(headers, None, QUALITY_NAMES, &used),
    };
    columns.unit = UNIT_NAMES.iter().find_map(|n| {
        (0..headers.len()).find(|i| !used.contains(i) && normalise(&headers[*i]) == *n)
    });
    Ok(columns)
}

/// A utility's quality flag on a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Estimated,
    Actual,
}

/// `E`/`EST`/`Estimated` (or notes saying "this read was estimated"),
/// `A`/`ACT`/`Actual`; anything else is no flag.
pub(super) fn quality_of(s: &str) -> Option<Quality> {
    let s = s.trim().to_lowercase();
    match s.as_str() {
        "e" | "est" | "estimate" | "estimated" => Some(Quality::Estimated),
        "a" | "act" | "actual" | "measured" => Some(Quality::Actual),
        _ if s.contains("estimat") => Some(Quality::Estimated),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        let text = "start,value\n2026-01-01,1\n";
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(
            decode_text(&le).unwrap(),
            (text.to_owned(), Some("UTF-16LE"))
        );
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(decode_text(&be).unwrap().1, Some("UTF-16BE"));
        assert_eq!(decode_text(b"\xEF\xBB\xBFa,b\n").unwrap().0, "a,b\n");
        let latin1 = decode_text(b"date,temp \xB0F\n").unwrap_err();
        assert!(latin1.0.contains("byte 10"), "{latin1}");
    }

    #[test]
    fn quality_flags() {
        assert_eq!(quality_of("E"), Some(Quality::Estimated));
        assert_eq!(quality_of(" a "), Some(Quality::Actual));
        assert_eq!(
            quality_of("This read was estimated"),
            Some(Quality::Estimated)
        );
        assert_eq!(quality_of("TestNote"), None);
        assert_eq!(quality_of(""), None);
    }
}
