//! Calendar quarters, cut in the site's local time zone.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quarter {
    pub year: i32,
    /// 1..=4
    pub q: u32,
}

impl Quarter {
    pub fn new(year: i32, q: u32) -> Option<Quarter> {
        (1..=4).contains(&q).then_some(Quarter { year, q })
    }

    /// The quarter a date falls in.
    pub fn containing(date: NaiveDate) -> Quarter {
        Quarter {
            year: date.year(),
            q: (date.month() - 1) / 3 + 1,
        }
    }

    /// First day.
    pub fn start(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, (self.q - 1) * 3 + 1, 1).expect("a quarter's first day")
    }

    /// The day after the last day.
    pub fn end(self) -> NaiveDate {
        self.next().start()
    }

    pub fn next(self) -> Quarter {
        if self.q == 4 {
            Quarter {
                year: self.year + 1,
                q: 1,
            }
        } else {
            Quarter {
                year: self.year,
                q: self.q + 1,
            }
        }
    }

    pub fn previous(self) -> Quarter {
        if self.q == 1 {
            Quarter {
                year: self.year - 1,
                q: 4,
            }
        } else {
            Quarter {
                year: self.year,
                q: self.q - 1,
            }
        }
    }

    pub fn year_before(self) -> Quarter {
        Quarter {
            year: self.year - 1,
            q: self.q,
        }
    }

    /// The three months, as yyyymm.
    pub fn months(self) -> [i32; 3] {
        let m0 = ((self.q - 1) * 3 + 1) as i32;
        [0, 1, 2].map(|k| self.year * 100 + m0 + k)
    }
}

impl fmt::Display for Quarter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}Q{}", self.year, self.q)
    }
}

impl Serialize for Quarter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Quarter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Quarter, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Quarter {
    type Err = String;

    /// `2026Q1`, `2026-Q1`, `2026q1`.
    fn from_str(s: &str) -> Result<Quarter, String> {
        let bad = || format!("`{s}` is not a quarter: write it as 2026Q1 (Q1..Q4)");
        let upper = s.trim().to_ascii_uppercase();
        let (year, q) = upper.split_once('Q').ok_or_else(bad)?;
        let year: i32 = year.trim_end_matches('-').parse().map_err(|_| bad())?;
        let q: u32 = q.parse().map_err(|_| bad())?;
        if !(1970..=9999).contains(&year) {
            return Err(bad());
        }
        Quarter::new(year, q).ok_or_else(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_walks_quarters() {
        let q: Quarter = "2026Q1".parse().unwrap();
        assert_eq!(q, Quarter { year: 2026, q: 1 });
        assert_eq!("2026-q4".parse::<Quarter>().unwrap().to_string(), "2026Q4");
        assert_eq!(q.start(), NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
        assert_eq!(q.end(), NaiveDate::from_ymd_opt(2026, 4, 1).unwrap());
        assert_eq!(q.previous().to_string(), "2025Q4");
        assert_eq!(q.year_before().to_string(), "2025Q1");
        assert_eq!(q.previous().next(), q);
        assert_eq!(q.months(), [202601, 202602, 202603]);
        assert_eq!(
            Quarter::containing(NaiveDate::from_ymd_opt(2026, 12, 31).unwrap()).to_string(),
            "2026Q4"
        );
        for bad in ["2026Q5", "2026", "Q1", "26Q0", "2026Q1x"] {
            assert!(bad.parse::<Quarter>().is_err(), "{bad}");
        }
    }
}
