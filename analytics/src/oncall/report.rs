//! How on-call answered: time to acknowledge and to resolve per severity
//! against the estate's targets (DOMAIN.md: 15 minutes, 2 hours, 24
//! hours), per week or over a whole period, and the load on each person
//! (pages, and those out of their hours). For the API, the alerts
//! dashboard and the quarterly report.
//!
//! Counted: alerts that paged (not replayed, not held by a silence) fired
//! in the period. Time to acknowledge runs from firing to the first
//! acknowledgement (CLI, API, Grafana or a link); an alert resolved
//! unacknowledged counts as not answered within its target. Out of hours:
//! a page due outside the person's `working_hours` in the site's time, or
//! on a weekend or public holiday; without working hours, 09:00–18:00 on
//! working days: judged when the page came due and stored with it, beside
//! the person's name then.

use chrono::{DateTime, Datelike, Duration, NaiveTime, Utc, Weekday};
use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;

use super::escalation::response_time;
use super::roster::{within, Roster};

/// One severity over one period (a week, or the whole range).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseRow {
    /// The period's start (a local Monday for weeks).
    pub period_start: DateTime<Utc>,
    pub severity: String,
    /// Alerts that paged.
    pub alerts: usize,
    pub acknowledged: usize,
    /// Acknowledged within the target.
    pub within_target: usize,
    pub target_minutes: f64,
    pub median_minutes_to_acknowledge: Option<f64>,
    pub p90_minutes_to_acknowledge: Option<f64>,
    pub median_minutes_to_resolve: Option<f64>,
    /// Still open at the end of the range.
    pub open: usize,
}

/// One person's load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadRow {
    pub person: String,
    pub name: String,
    /// Pages that came due for them.
    pub pages: usize,
    /// Of which a channel accepted.
    pub delivered: usize,
    /// Due outside their working hours, on a weekend or a public holiday.
    pub out_of_hours: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub response: Vec<ResponseRow>,
    pub load: Vec<LoadRow>,
}

/// The value at fraction `q` of sorted `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

fn median(v: &[f64]) -> Option<f64> {
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The local Monday 00:00 of `t`'s week.
fn week_of(t: DateTime<Utc>, tz: chrono_tz::Tz) -> DateTime<Utc> {
    let local = t.with_timezone(&tz).date_naive();
    let monday = local - Duration::days(local.weekday().num_days_from_monday() as i64);
    estatemon_domain::calendar::local_midnight(monday, tz)
}

/// Whether a page due at `at` is out of `person`'s hours.
pub fn out_of_hours(
    roster: Option<&Roster>,
    person: &str,
    at: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> bool {
    let local = at.with_timezone(&tz);
    let holiday = roster.is_some_and(|r| r.holidays.contains(&local.date_naive()));
    if holiday || matches!(local.weekday(), Weekday::Sat | Weekday::Sun) {
        return true;
    }
    let hours = roster.and_then(|r| r.hours_of(person)).unwrap_or((
        NaiveTime::from_hms_opt(9, 0, 0).expect("time"),
        NaiveTime::from_hms_opt(18, 0, 0).expect("time"),
    ));
    !within(hours, local.time())
}

/// The summary of `[from, to)` for `site` (every site: None), by week
/// (`weekly`) or over the whole range, weeks and hours in `tz`.
pub async fn summary(
    client: &impl GenericClient,
    roster: Option<&Roster>,
    site: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    weekly: bool,
    tz: chrono_tz::Tz,
) -> Result<Summary, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT severity, fired_at, acknowledged_at, closed_at, state FROM alerts
              WHERE fired_at >= $1 AND fired_at < $2 AND source <> 'replay'
                AND silenced_by IS NULL AND ($3::text IS NULL OR site_id = $3)",
            &[&from, &to, &site],
        )
        .await?;
    type Key = (DateTime<Utc>, usize);
    let order = |s: &str| match s {
        "emergency" => 0,
        "ordinary" => 1,
        _ => 2,
    };
    #[derive(Default)]
    struct Acc {
        severity: String,
        ack: Vec<f64>,
        res: Vec<f64>,
        alerts: usize,
        within: usize,
        open: usize,
    }
    let mut groups: std::collections::BTreeMap<Key, Acc> = Default::default();
    for r in &rows {
        let severity: String = r.get(0);
        let fired: DateTime<Utc> = r.get(1);
        let ack: Option<DateTime<Utc>> = r.get(2);
        let closed: Option<DateTime<Utc>> = r.get(3);
        let state: String = r.get(4);
        let period = if weekly { week_of(fired, tz) } else { from };
        let g = groups
            .entry((period, order(&severity)))
            .or_insert_with(|| Acc {
                severity: severity.clone(),
                ..Acc::default()
            });
        g.alerts += 1;
        if let Some(a) = ack {
            g.ack.push((a - fired).num_milliseconds() as f64 / 60_000.0);
            if a - fired <= response_time(&severity) {
                g.within += 1;
            }
        }
        match (state.as_str(), closed) {
            ("resolved", Some(c)) => g.res.push((c - fired).num_milliseconds() as f64 / 60_000.0),
            ("resolved", None) => {}
            _ => g.open += 1,
        }
    }
    let response = groups
        .into_iter()
        .map(|((period, _), mut g)| {
            g.ack.sort_by(f64::total_cmp);
            g.res.sort_by(f64::total_cmp);
            ResponseRow {
                period_start: period,
                target_minutes: response_time(&g.severity).num_minutes() as f64,
                alerts: g.alerts,
                acknowledged: g.ack.len(),
                within_target: g.within,
                median_minutes_to_acknowledge: median(&g.ack),
                p90_minutes_to_acknowledge: quantile(&g.ack, 0.9),
                median_minutes_to_resolve: median(&g.res),
                open: g.open,
                severity: g.severity,
            }
        })
        .collect();
    let pages = client
        .query(
            "SELECT p.person, p.due_at, p.delivered_at IS NOT NULL, p.person_name, p.out_of_hours
               FROM oncall_pages p JOIN alerts a ON a.id = p.alert_id
              WHERE p.due_at >= $1 AND p.due_at < $2 AND ($3::text IS NULL OR a.site_id = $3)",
            &[&from, &to, &site],
        )
        .await?;
    let mut load: std::collections::BTreeMap<String, LoadRow> = Default::default();
    for r in &pages {
        let person: String = r.get(0);
        let due: DateTime<Utc> = r.get(1);
        let stored: String = r.get(3);
        let row = load.entry(person.clone()).or_insert_with(|| LoadRow {
            name: if stored.is_empty() {
                roster.map_or_else(|| person.clone(), |x| x.name_of(&person))
            } else {
                stored
            },
            person: person.clone(),
            pages: 0,
            delivered: 0,
            out_of_hours: 0,
        });
        row.pages += 1;
        if r.get::<_, bool>(2) {
            row.delivered += 1;
        }
        // As judged when the page came due (the roster of the time).
        let _ = (due, tz);
        if r.get::<_, bool>(4) {
            row.out_of_hours += 1;
        }
    }
    let mut load: Vec<LoadRow> = load.into_values().collect();
    load.sort_by(|a, b| b.pages.cmp(&a.pages).then(a.person.cmp(&b.person)));
    Ok(Summary { response, load })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oncall::hk;

    #[test]
    fn nights_weekends_and_holidays_are_out_of_hours() {
        let tz = chrono_tz::Asia::Hong_Kong;
        let roster = Roster::parse(
            "holidays = [2026-12-25]\n[[person]]\nid = \"w\"\nname = \"W\"\nworking_hours = \"08:00-20:00\"\n",
            std::path::Path::new("r.toml"),
        )
        .unwrap();
        let r = Some(&roster);
        assert!(
            !out_of_hours(r, "w", hk("2026-12-08T19:00:00"), tz),
            "a Tuesday evening in hours"
        );
        assert!(out_of_hours(r, "w", hk("2026-12-08T03:00:00"), tz), "03:00");
        assert!(
            out_of_hours(r, "w", hk("2026-12-12T10:00:00"), tz),
            "Saturday"
        );
        assert!(
            out_of_hours(r, "w", hk("2026-12-25T10:00:00"), tz),
            "Christmas"
        );
        assert!(
            out_of_hours(r, "x", hk("2026-12-08T18:30:00"), tz),
            "default 09:00-18:00"
        );
        assert_eq!(
            week_of(hk("2026-12-10T01:00:00"), tz),
            hk("2026-12-07T00:00:00")
        );
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(quantile(&v, 0.9), Some(9.0));
        assert_eq!(median(&v), Some(5.5));
    }
}
