//! Local days in UTC, one rule for every caller: a day starts at its local
//! midnight, or at the first instant after it where a clock change skips
//! midnight; never a panic (a zone that skipped a whole day falls back to
//! UTC midnight).

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// Local midnight of `day` in `tz`, in UTC.
pub fn local_midnight(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let naive = day.and_hms_opt(0, 0, 0).expect("midnight");
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(naive + Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| naive.and_utc())
}
