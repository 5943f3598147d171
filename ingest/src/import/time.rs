//! Times as exports write them: one column (RFC 3339, naive date-time, a
//! date, epoch seconds) or a date and a time of day in two (Green Button
//! CSV's `DATE`, `START TIME`). Naive times are the site's local time; the
//! hour a clock change repeats is told apart by the rows' order.

use std::collections::HashMap;

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A time as written: an instant (it had an offset, or was epoch seconds),
/// or a local date-time still to be placed in the site's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stamp {
    Instant(DateTime<Utc>, NaiveDateTime),
    Local(NaiveDateTime),
}

impl Stamp {
    /// The date and time of day as written.
    pub(super) fn written(self) -> NaiveDateTime {
        match self {
            Stamp::Instant(_, n) | Stamp::Local(n) => n,
        }
    }
}

pub(super) fn parse_date(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    ["%Y-%m-%d", "%Y/%m/%d"]
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(s, f).ok())
}

/// `00:15`, `0:15`, `00:15:00`, `12:15 AM`.
pub(super) fn parse_time_of_day(s: &str) -> Option<NaiveTime> {
    let s = s.trim();
    ["%H:%M", "%H:%M:%S", "%I:%M %p", "%I:%M:%S %p"]
        .iter()
        .find_map(|f| NaiveTime::parse_from_str(s, f).ok())
}

/// One column's time.
pub(super) fn parse_stamp(s: &str, tz: Tz) -> Result<Stamp, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Stamp::Instant(t.with_timezone(&Utc), t.naive_local()));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%:z",
        "%Y-%m-%d %H:%M%:z",
        "%Y-%m-%dT%H:%M%:z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Ok(Stamp::Instant(t.with_timezone(&Utc), t.naive_local()));
        }
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(Stamp::Local(n));
        }
    }
    if let Some(d) = parse_date(s) {
        return Ok(Stamp::Local(d.and_time(NaiveTime::MIN)));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = s.parse::<i64>() {
            // Seconds, or milliseconds past 2001-09 in seconds.
            let ms = if n > 100_000_000_000 { n } else { n * 1000 };
            if let Some(t) = DateTime::from_timestamp_millis(ms) {
                return Ok(Stamp::Instant(t, t.with_timezone(&tz).naive_local()));
            }
        }
    }
    Err(format!(
        "`{s}` is not a time (RFC 3339, `YYYY-MM-DD[ HH:MM[:SS]]` in {}, or epoch seconds)",
        tz.name()
    ))
}

/// A date column and a time-of-day column.
pub(super) fn parse_date_and_time(date: &str, time: &str) -> Result<Stamp, String> {
    let d = parse_date(date).ok_or_else(|| format!("`{date}` is not a date (YYYY-MM-DD)"))?;
    let t = parse_time_of_day(time)
        .ok_or_else(|| format!("`{time}` is not a time of day (HH:MM[:SS])"))?;
    Ok(Stamp::Local(d.and_time(t)))
}

/// Places local times in the site's zone, in the file's order. In the hour
/// a clock change repeats (01:00–02:00 twice at a fall-back), the first row
/// of a local time is the first pass and the second row the second pass
/// (reversed in a file written newest first); a third row of the same local
/// time cannot be told apart, and says so.
pub(super) struct LocalClock {
    tz: Tz,
    newest_first: bool,
    seen: HashMap<NaiveDateTime, usize>,
    /// Rows read as the repeated hour's second pass.
    pub(super) second_pass: Vec<usize>,
}

impl LocalClock {
    pub(super) fn new(tz: Tz, newest_first: bool) -> LocalClock {
        LocalClock {
            tz,
            newest_first,
            seen: HashMap::new(),
            second_pass: Vec::new(),
        }
    }

    pub(super) fn place(&mut self, stamp: Stamp, line: usize) -> Result<DateTime<Utc>, String> {
        let n = match stamp {
            Stamp::Instant(t, _) => return Ok(t),
            Stamp::Local(n) => n,
        };
        match self.tz.from_local_datetime(&n) {
            LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(a, b) => {
                let k = self.seen.entry(n).or_insert(0);
                *k += 1;
                let (first, second) = if self.newest_first { (b, a) } else { (a, b) };
                match *k {
                    1 => Ok(first.with_timezone(&Utc)),
                    2 => {
                        self.second_pass.push(line);
                        Ok(second.with_timezone(&Utc))
                    }
                    _ => Err(format!(
                        "{} occurs twice in {} (a clock change) and this is its row number {k}: \
                         which pass it belongs to cannot be told (write the offset, e.g. \
                         `{}`)",
                        n.format("%Y-%m-%d %H:%M"),
                        self.tz.name(),
                        second.to_rfc3339()
                    )),
                }
            }
            LocalResult::None => Err(format!(
                "{} does not exist in {} (a clock change)",
                n.format("%Y-%m-%d %H:%M"),
                self.tz.name()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repeated_hour_is_told_apart_by_order() {
        let tz: Tz = "America/Los_Angeles".parse().unwrap();
        let one = parse_date_and_time("2025-11-02", "01:00").unwrap();
        for newest_first in [false, true] {
            let mut clock = LocalClock::new(tz, newest_first);
            let a = clock.place(one, 10).unwrap();
            let b = clock.place(one, 14).unwrap();
            assert_eq!((b - a).num_hours().abs(), 1);
            assert_eq!(a < b, !newest_first);
            assert_eq!(clock.second_pass, [14]);
            let third = clock.place(one, 18).unwrap_err();
            assert!(third.contains("cannot be told"), "{third}");
        }
        let mut clock = LocalClock::new(tz, false);
        let gap = parse_date_and_time("2025-03-09", "02:30").unwrap();
        assert!(clock.place(gap, 2).unwrap_err().contains("does not exist"));
        assert_eq!(
            parse_time_of_day("12:15 AM"),
            NaiveTime::from_hms_opt(0, 15, 0)
        );
        assert!(parse_date_and_time("2025-11-02", "25:00").is_err());
    }
}
