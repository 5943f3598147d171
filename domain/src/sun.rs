//! Sunrise, sunset and hours of darkness (NOAA's simplified solar equations,
//! accurate to a few minutes: enough for lighting loads and baselines).

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};

/// Sunrise and sunset in UTC for `date` at (lat, lon); `None` in polar day
/// or night.
pub fn sunrise_sunset(
    date: NaiveDate,
    lat: f64,
    lon: f64,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let day = date.ordinal() as f64;
    let gamma = 2.0 * std::f64::consts::PI / 365.0 * (day - 1.0);
    let eq_time = 229.18
        * (0.000075 + 0.001868 * gamma.cos()
            - 0.032077 * gamma.sin()
            - 0.014615 * (2.0 * gamma).cos()
            - 0.040849 * (2.0 * gamma).sin());
    let decl = 0.006918 - 0.399912 * gamma.cos() + 0.070257 * gamma.sin()
        - 0.006758 * (2.0 * gamma).cos()
        + 0.000907 * (2.0 * gamma).sin()
        - 0.002697 * (3.0 * gamma).cos()
        + 0.00148 * (3.0 * gamma).sin();
    let lat_r = lat.to_radians();
    let cos_ha =
        (90.833_f64.to_radians().cos() / (lat_r.cos() * decl.cos())) - lat_r.tan() * decl.tan();
    if !(-1.0..=1.0).contains(&cos_ha) {
        return None;
    }
    let ha = cos_ha.acos().to_degrees();
    let midnight = Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?);
    let minutes = |m: f64| midnight + Duration::milliseconds((m * 60_000.0) as i64);
    let sunrise = 720.0 - 4.0 * (lon + ha) - eq_time;
    let sunset = 720.0 - 4.0 * (lon - ha) - eq_time;
    Some((minutes(sunrise), minutes(sunset)))
}

/// Whether the sun is down at `t` (with civil-twilight margin of 20 min,
/// when lighting controllers switch).
pub fn is_dark(t: DateTime<Utc>, lat: f64, lon: f64) -> bool {
    // Solar day around local noon: use the date at the site's longitude.
    let local = t + Duration::minutes((lon * 4.0) as i64);
    match sunrise_sunset(local.date_naive(), lat, lon) {
        Some((rise, set)) => t < rise + Duration::minutes(20) || t > set - Duration::minutes(20),
        None => {
            lat * (if local.month() >= 4 && local.month() <= 9 {
                1.0
            } else {
                -1.0
            }) < 0.0
        }
    }
}

/// Hours of darkness on a date.
pub fn darkness_hours(date: NaiveDate, lat: f64, lon: f64) -> f64 {
    match sunrise_sunset(date, lat, lon) {
        Some((rise, set)) => 24.0 - (set - rise).num_seconds() as f64 / 3600.0,
        None => 12.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hong_kong_solstices() {
        // Hong Kong Observatory: ~05:39 / 19:11 HKT on 21 June, ~07:03 / 17:44 on 21 Dec.
        let (rise, set) =
            sunrise_sunset(NaiveDate::from_ymd_opt(2026, 6, 21).unwrap(), 22.28, 114.16).unwrap();
        let hkt = |t: DateTime<Utc>| (t + Duration::hours(8)).format("%H:%M").to_string();
        assert!(
            ("05:35".."05:45").contains(&hkt(rise).as_str()),
            "{}",
            hkt(rise)
        );
        assert!(
            ("19:05".."19:16").contains(&hkt(set).as_str()),
            "{}",
            hkt(set)
        );
        let winter = darkness_hours(
            NaiveDate::from_ymd_opt(2026, 12, 21).unwrap(),
            22.28,
            114.16,
        );
        let summer = darkness_hours(NaiveDate::from_ymd_opt(2026, 6, 21).unwrap(), 22.28, 114.16);
        assert!(winter > 13.0 && winter < 13.6, "{winter}");
        assert!(summer > 10.3 && summer < 10.8, "{summer}");
    }
}
