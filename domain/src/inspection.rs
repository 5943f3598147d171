//! Inspection cycles: each ledger device's class (A daily, B weekly, C
//! monthly, after the estate's maintenance standard) or explicit cycle
//! (`15d`, `1w`, `1mo`, `1y`), the windows it must be inspected in on the
//! site's calendar, and how a list of inspections fares against them: on
//! time, late, missed, or still open.
//!
//! Windows are whole local days, weeks (from Monday), months or years; an
//! n-day or n-week cycle counts from Monday 1970-01-05, so the windows of a
//! device never move. An inspection serves one window: the one it falls
//! in, or (when that window already has one, or it is the first after an
//! empty window and within half a window of its end) the empty window
//! before it, as a late one.

use std::fmt;

use crate::calendar::local_midnight as midnight;
use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// The estate's equipment classes: A (fire systems, lifts) inspected
/// daily, B (air conditioning, pumps) weekly, C monthly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EquipmentClass {
    A,
    B,
    C,
}

impl EquipmentClass {
    pub fn as_str(self) -> &'static str {
        match self {
            EquipmentClass::A => "A",
            EquipmentClass::B => "B",
            EquipmentClass::C => "C",
        }
    }

    pub fn parse(s: &str) -> Option<EquipmentClass> {
        match s {
            "A" | "a" => Some(EquipmentClass::A),
            "B" | "b" => Some(EquipmentClass::B),
            "C" | "c" => Some(EquipmentClass::C),
            _ => None,
        }
    }

    /// The class's own cycle.
    pub fn cycle(self) -> Cycle {
        match self {
            EquipmentClass::A => Cycle::new(1, Unit::Day),
            EquipmentClass::B => Cycle::new(1, Unit::Week),
            EquipmentClass::C => Cycle::new(1, Unit::Month),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Day,
    Week,
    Month,
    Year,
}

/// An inspection cycle: `n` days, weeks, months or years.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cycle {
    pub n: u32,
    pub unit: Unit,
}

impl Cycle {
    pub const fn new(n: u32, unit: Unit) -> Cycle {
        Cycle { n, unit }
    }

    /// `1d`, `15d`, `1w`, `2w`, `1mo`, `3mo`, `1y` (1 to 999).
    pub fn parse(text: &str) -> Result<Cycle, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u32 = digits
            .parse()
            .ok()
            .filter(|n| (1..=999).contains(n))
            .ok_or_else(|| format!("`{text}`: expected a cycle like 1d, 15d, 1w, 1mo or 1y"))?;
        let unit = match unit {
            "d" => Unit::Day,
            "w" => Unit::Week,
            "mo" => Unit::Month,
            "y" => Unit::Year,
            _ => return Err(format!("`{text}`: the unit is d, w, mo or y")),
        };
        Ok(Cycle { n, unit })
    }

    /// The windows that overlap `[from, to)`, in the zone's calendar.
    pub fn windows(
        self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        tz: Tz,
    ) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let mut out = Vec::new();
        let mut start = self.start_of(from.with_timezone(&tz).date_naive());
        let mut guard = 0;
        while guard < 100_000 {
            let next = self.after(start);
            let (a, b) = (midnight(start, tz), midnight(next, tz));
            if a >= to {
                break;
            }
            if b > from {
                out.push((a, b));
            }
            start = next;
            guard += 1;
        }
        out
    }

    /// The first day of the window containing `d`.
    fn start_of(self, d: NaiveDate) -> NaiveDate {
        let anchor = NaiveDate::from_ymd_opt(1970, 1, 5).expect("a Monday");
        match self.unit {
            Unit::Day | Unit::Week => {
                let len = self.n as i64 * if self.unit == Unit::Day { 1 } else { 7 };
                let days = (d - anchor).num_days();
                anchor + Duration::days(days - days.rem_euclid(len))
            }
            Unit::Month => {
                let months = (d.year() as i64 - 1970) * 12 + d.month0() as i64;
                let m = months - months.rem_euclid(self.n as i64);
                NaiveDate::from_ymd_opt(
                    1970 + (m.div_euclid(12)) as i32,
                    (m.rem_euclid(12) + 1) as u32,
                    1,
                )
                .expect("a valid month")
            }
            Unit::Year => {
                let y = d.year() as i64 - 1970;
                let y = y - y.rem_euclid(self.n as i64);
                NaiveDate::from_ymd_opt(1970 + y as i32, 1, 1).expect("a valid year")
            }
        }
    }

    fn after(self, start: NaiveDate) -> NaiveDate {
        match self.unit {
            Unit::Day => start + Duration::days(self.n as i64),
            Unit::Week => start + Duration::days(7 * self.n as i64),
            Unit::Month => start + Months::new(self.n),
            Unit::Year => start + Months::new(12 * self.n),
        }
    }
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.unit {
            Unit::Day => "d",
            Unit::Week => "w",
            Unit::Month => "mo",
            Unit::Year => "y",
        };
        write!(f, "{}{unit}", self.n)
    }
}

impl Serialize for Cycle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Cycle {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cycle, D::Error> {
        let text = String::deserialize(d)?;
        Cycle::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One cycle a device is inspected on: its class's (`Some(class)`) or its
/// own (`None`).
pub type Track = (Option<EquipmentClass>, Cycle);

/// The cycles a device is inspected on: its class's and, beside it, its own
/// `inspection_cycle` when it has one (a lift's 15-day check on top of its
/// class's daily one: both are tracked, neither replaces the other); one
/// track with only one of them, none with neither.
pub fn tracks(class: Option<EquipmentClass>, cycle: Option<Cycle>) -> Vec<Track> {
    let mut out = Vec::new();
    if let Some(c) = class {
        out.push((Some(c), c.cycle()));
    }
    if let Some(own) = cycle.filter(|own| class.map(EquipmentClass::cycle) != Some(*own)) {
        out.push((None, own));
    }
    out
}

/// A device's tracks from the ledger's `class` and `inspection_cycle`
/// columns (text that does not parse counts as unset).
pub fn from_ledger(class: Option<&str>, cycle: Option<&str>) -> Vec<Track> {
    tracks(
        class.and_then(EquipmentClass::parse),
        cycle.and_then(|c| Cycle::parse(c).ok()),
    )
}

/// The SQL condition on `events` under which a lift's state event is a
/// maintenance-mode visit that counts as its inspection: one a technician's
/// credential came with (the rules and compliance read the same).
pub const MAINTENANCE_VISIT_SQL: &str =
    "event_type = 'state' AND state = 'maintenance' AND credential IS NOT NULL";

impl Cycle {
    /// At least one window's length (31 days for a month, 366 for a year).
    pub fn longest(self) -> Duration {
        let days = match self.unit {
            Unit::Day => 1,
            Unit::Week => 7,
            Unit::Month => 31,
            Unit::Year => 366,
        };
        Duration::days(days * self.n as i64)
    }
}

/// How one window fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    OnTime {
        at: DateTime<Utc>,
    },
    /// Inspected after the window, within half a window.
    Late {
        at: DateTime<Utc>,
    },
    /// No inspection served it (`next`: the first inspection after it).
    Missed {
        next: Option<DateTime<Utc>>,
    },
    /// Not over yet, and not yet inspected.
    Open,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Slot {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    #[serde(flatten)]
    pub status: Status,
}

/// The windows' fate given the inspections (any order) as of `now`.
pub fn assess(
    windows: &[(DateTime<Utc>, DateTime<Utc>)],
    inspections: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Vec<Slot> {
    let mut times: Vec<DateTime<Utc>> = inspections.iter().copied().filter(|t| *t <= now).collect();
    times.sort();
    let mut used = vec![false; times.len()];
    let mut out = Vec::with_capacity(windows.len());
    for (k, &(start, end)) in windows.iter().enumerate() {
        let inside: Vec<usize> = (0..times.len())
            .filter(|&i| !used[i] && times[i] >= start && times[i] < end)
            .collect();
        let status = if let Some(&first) = inside.first() {
            for &i in &inside {
                used[i] = true;
            }
            Status::OnTime { at: times[first] }
        } else if end > now {
            Status::Open
        } else {
            let grace = end + (end - start) / 2;
            let next = (0..times.len()).find(|&i| !used[i] && times[i] >= end);
            // Late: the first inspection after it, within the grace, unless
            // it is the only one the next window has and that window is over
            // (then it is that window's own, and this one was missed).
            let next_window = windows.get(k + 1).copied();
            let late = next.filter(|&i| times[i] < grace).filter(|&i| {
                let others = next_window.is_some_and(|(a, b)| {
                    (0..times.len()).any(|j| j != i && !used[j] && times[j] >= a && times[j] < b)
                });
                others || next_window.is_none_or(|(_, b)| b > now)
            });
            match late {
                Some(i) => {
                    used[i] = true;
                    Status::Late { at: times[i] }
                }
                None => Status::Missed {
                    next: next.map(|i| times[i]),
                },
            }
        };
        out.push(Slot { start, end, status });
    }
    out
}

/// A checklist item's result: `ok`, `fail` (a small issue, not left
/// overnight) or `fail_large` (a large one, not beyond a week).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemResult {
    Ok,
    Fail,
    FailLarge,
}

impl ItemResult {
    pub fn parse(s: &str) -> Option<ItemResult> {
        match s {
            "ok" => Some(ItemResult::Ok),
            "fail" => Some(ItemResult::Fail),
            "fail_large" => Some(ItemResult::FailLarge),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ItemResult::Ok => "ok",
            ItemResult::Fail => "fail",
            ItemResult::FailLarge => "fail_large",
        }
    }
}

/// "Small issues are not left overnight, large ones not beyond a week."
pub const LARGE_WITHIN: Duration = Duration::days(7);

/// An inspection as a technician reports it, by the API, the CLI or a
/// patrol app's MQTT `inspection` event.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub device: String,
    /// Who inspected (a name or staff number).
    pub by: String,
    pub at: DateTime<Utc>,
    pub results: std::collections::BTreeMap<String, ItemResult>,
    /// Readings taken (lubricant level, tank level …), by name.
    pub readings: std::collections::BTreeMap<String, f64>,
    pub note: Option<String>,
}

impl Report {
    /// What is wrong with it whatever the device: who is blank or too
    /// long, a reading is not a number, a name is blank, the time is in
    /// the future or over 400 days ago.
    pub fn check(&self, now: DateTime<Utc>) -> Result<(), String> {
        self.check_fields()?;
        if self.at > now + Duration::minutes(5) || self.at < now - Duration::days(400) {
            return Err(format!(
                "the inspection time ({}) is in the future or over 400 days ago",
                self.at.to_rfc3339()
            ));
        }
        Ok(())
    }

    /// [`Report::check`] but for the time (ingest checks an event's time
    /// with every other event's).
    pub fn check_fields(&self) -> Result<(), String> {
        let by = self.by.trim();
        if by.is_empty() || by.chars().count() > 100 || by.contains('\0') {
            return Err("`by`: 1 to 100 characters".into());
        }
        if let Some((k, v)) = self.readings.iter().find(|(_, v)| !v.is_finite()) {
            return Err(format!("reading `{k}` = {v} is not a number"));
        }
        let names = self.results.keys().chain(self.readings.keys());
        if let Some(k) = names
            .into_iter()
            .find(|k| k.trim().is_empty() || k.chars().count() > 100 || k.contains('\0'))
        {
            return Err(format!(
                "`{k}`: a checklist item or reading name is 1 to 100 characters"
            ));
        }
        if self
            .note
            .as_ref()
            .is_some_and(|n| n.chars().count() > 2000 || n.contains('\0'))
        {
            return Err("`note`: at most 2,000 characters".into());
        }
        Ok(())
    }

    pub fn passed(&self) -> bool {
        self.results.values().all(|r| *r == ItemResult::Ok)
    }

    /// The work items its failed items open: (item, size, due).
    pub fn work_items(&self, tz: Tz) -> Vec<(&str, &'static str, DateTime<Utc>)> {
        self.results
            .iter()
            .filter_map(|(item, r)| match r {
                ItemResult::Ok => None,
                ItemResult::Fail => Some((item.as_str(), "small", end_of_local_day(self.at, tz))),
                ItemResult::FailLarge => Some((item.as_str(), "large", self.at + LARGE_WITHIN)),
            })
            .collect()
    }
}

/// The next local midnight after `at`: a small issue is not left overnight.
pub fn end_of_local_day(at: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    midnight(at.with_timezone(&tz).date_naive() + Duration::days(1), tz)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hk() -> Tz {
        "Asia/Hong_Kong".parse().unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Issue 30: a lift with class A and its 15-day check is tracked on
    /// both; neither replaces the other.
    #[test]
    fn a_class_and_an_own_cycle_are_both_tracked() {
        let own = Cycle::parse("15d").unwrap();
        let a = EquipmentClass::A;
        assert_eq!(
            tracks(Some(a), Some(own)),
            vec![(Some(a), a.cycle()), (None, own)]
        );
        assert_eq!(tracks(Some(a), None), vec![(Some(a), a.cycle())]);
        assert_eq!(tracks(None, Some(own)), vec![(None, own)]);
        // The class's own cycle named again is one track, not two.
        assert_eq!(tracks(Some(a), Some(a.cycle())), vec![(Some(a), a.cycle())]);
        assert!(tracks(None, None).is_empty());
        assert_eq!(from_ledger(Some("A"), Some("15d")).len(), 2);
    }

    #[test]
    fn cycles_parse_and_windows_follow_the_local_calendar() {
        assert_eq!(Cycle::parse("15d"), Ok(Cycle::new(15, Unit::Day)));
        assert_eq!(Cycle::parse("1mo").unwrap().to_string(), "1mo");
        assert!(
            Cycle::parse("0d").is_err() && Cycle::parse("3x").is_err() && Cycle::parse("").is_err()
        );
        let days = EquipmentClass::A.cycle().windows(
            at("2026-06-01T10:00:00+08:00"),
            at("2026-06-04T00:00:00+08:00"),
            hk(),
        );
        assert_eq!(days.len(), 3);
        assert_eq!(days[0].0, at("2026-06-01T00:00:00+08:00"));
        let weeks = EquipmentClass::B.cycle().windows(
            at("2026-06-03T00:00:00+08:00"),
            at("2026-06-10T00:00:00+08:00"),
            hk(),
        );
        assert_eq!(weeks[0].0, at("2026-06-01T00:00:00+08:00"), "from Monday");
        let months = Cycle::parse("3mo").unwrap().windows(
            at("2026-05-15T00:00:00+08:00"),
            at("2026-05-16T00:00:00+08:00"),
            hk(),
        );
        assert_eq!(
            months,
            vec![(
                at("2026-04-01T00:00:00+08:00"),
                at("2026-07-01T00:00:00+08:00")
            )]
        );
        // 15-day windows do not move with the query.
        let a = Cycle::parse("15d").unwrap().windows(
            at("2026-06-01T00:00:00Z"),
            at("2026-06-02T00:00:00Z"),
            hk(),
        );
        let b = Cycle::parse("15d").unwrap().windows(
            at("2026-06-02T00:00:00Z"),
            at("2026-06-03T00:00:00Z"),
            hk(),
        );
        assert_eq!(a[0], b[0]);
        assert_eq!((a[0].1 - a[0].0).num_days(), 15);
    }

    #[test]
    fn on_time_late_missed_and_open() {
        let w = EquipmentClass::A.cycle().windows(
            at("2026-06-01T00:00:00+08:00"),
            at("2026-06-06T00:00:00+08:00"),
            hk(),
        );
        let ins = [
            at("2026-06-01T09:00:00+08:00"), // day 1 on time
            // day 2 nothing; 02:00 on day 3 is day 2's late one …
            at("2026-06-03T02:00:00+08:00"),
            at("2026-06-03T10:00:00+08:00"), // … and day 3 has its own
            // day 4 nothing, day 5 nothing until 14:00 on day 5
            at("2026-06-05T14:00:00+08:00"),
        ];
        let slots = assess(&w, &ins, at("2026-06-05T20:00:00+08:00"));
        let s: Vec<&str> = slots
            .iter()
            .map(|s| match s.status {
                Status::OnTime { .. } => "on_time",
                Status::Late { .. } => "late",
                Status::Missed { .. } => "missed",
                Status::Open => "open",
            })
            .collect();
        assert_eq!(s, ["on_time", "late", "on_time", "missed", "on_time"]);
        assert_eq!(slots[1].status, Status::Late { at: ins[1] });
        assert_eq!(slots[3].status, Status::Missed { next: Some(ins[3]) });
        // Day 5 not over and not inspected yet: open.
        let slots = assess(&w, &ins[..3], at("2026-06-05T08:00:00+08:00"));
        assert_eq!(slots[4].status, Status::Open);
        assert_eq!(slots[3].status, Status::Missed { next: None });
    }

    #[test]
    fn reports_are_checked_and_open_work_items_with_their_deadlines() {
        let now = at("2026-06-01T12:00:00Z");
        let mut r = Report {
            device: "lift-1".into(),
            by: "Wang Wei".into(),
            at: at("2026-06-01T10:00:00+08:00"),
            results: [
                ("noise".to_owned(), ItemResult::Ok),
                ("lubricant".to_owned(), ItemResult::Fail),
                ("brake".to_owned(), ItemResult::FailLarge),
            ]
            .into(),
            readings: [("lubricant_level".to_owned(), 0.4)].into(),
            note: None,
        };
        assert_eq!(r.check(now), Ok(()));
        assert!(!r.passed());
        let items = r.work_items(hk());
        assert_eq!(
            items,
            vec![
                ("brake", "large", at("2026-06-08T10:00:00+08:00")),
                ("lubricant", "small", at("2026-06-02T00:00:00+08:00")),
            ]
        );
        r.readings.insert("tank".into(), f64::NAN);
        assert!(r.check(now).unwrap_err().contains("tank"));
        r.readings.clear();
        r.by = "  ".into();
        assert!(r.check(now).unwrap_err().contains("`by`"));
        r.by = "W".into();
        r.at = now + Duration::hours(1);
        assert!(r.check(now).unwrap_err().contains("future"));
        assert_eq!(ItemResult::parse("fail_large"), Some(ItemResult::FailLarge));
        assert_eq!(ItemResult::parse("bad"), None);
    }
}
