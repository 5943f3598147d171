//! Each tracked device's compliance with its inspection cycle over a
//! period: windows due, on time, late, missed, open (the API's
//! `/api/v1/compliance` and the quarterly report).

use chrono::{DateTime, Utc};
use estatemon_domain::inspection::{assess, from_ledger, Status, MAINTENANCE_VISIT_SQL};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Compliance {
    pub device: String,
    pub name: Option<String>,
    pub class: Option<String>,
    pub cycle: String,
    /// Windows due in the range (ended, or open at its end).
    pub due: usize,
    pub on_time: usize,
    pub late: usize,
    pub missed: usize,
    /// Not over and not yet inspected.
    pub open: usize,
    /// The last inspection within the period (never one after it).
    pub last_inspected_at: Option<DateTime<Utc>>,
    /// When the device began to report or was first inspected (its first
    /// data from a window before the period): windows that ended before it
    /// are not its (it was not commissioned), as in the overdue rules.
    /// None: nothing in the period, so no window is due.
    #[serde(default)]
    pub tracked_since: Option<DateTime<Utc>>,
    /// Each window of the period that was late or missed, with what
    /// happened, so a manager can act on it.
    #[serde(default)]
    pub exceptions: Vec<Exception>,
}

/// A late or missed inspection window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Exception {
    /// The window: from its start to when the inspection was due.
    pub window_from: DateTime<Utc>,
    pub due_by: DateTime<Utc>,
    /// `late` or `missed`.
    pub status: String,
    /// Late: when the inspection came. Missed: the first one after the
    /// window, if any (it served the next window).
    pub inspected_at: Option<DateTime<Utc>>,
    /// Who inspected (the inspector recorded, or the technician's card of
    /// a maintenance visit), when there was an inspection.
    pub inspector: Option<String>,
}

/// The site's tracked devices (a class or their own cycle), by class,
/// with their windows in `[from, to)` assessed as of `now` (a window at
/// the period's end inspected just after it is late, not missed; a lift's
/// maintenance-mode visits with a technician's credential count as
/// inspections).
pub async fn site(
    client: &Client,
    site: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<Compliance>, tokio_postgres::Error> {
    let devices = client
        .query(
            "SELECT d.device_id, d.name, d.class, d.inspection_cycle, s.time_zone
               FROM devices d JOIN sites s ON s.site_id = d.site_id
              WHERE d.site_id = $1 AND (d.class IS NOT NULL OR d.inspection_cycle IS NOT NULL)
              ORDER BY d.class NULLS LAST, d.device_id",
            &[&site],
        )
        .await?;
    let mut out = Vec::new();
    for d in &devices {
        let id: String = d.get(0);
        let tracks = from_ledger(d.get(2), d.get(3));
        let Some(longest) = tracks.iter().map(|(_, c)| c.longest()).max() else {
            continue;
        };
        let tz: chrono_tz::Tz = d.get::<_, String>(4).parse().unwrap_or(chrono_tz::UTC);
        let found: Vec<(DateTime<Utc>, String)> = client
            .query(
                &format!(
                    "SELECT inspected_at, inspector FROM inspections
                      WHERE device_id = $1 AND inspected_at >= $2 AND inspected_at < $3
                     UNION ALL
                     SELECT ts, 'technician card ' || credential FROM events
                      WHERE device_id = $1 AND {MAINTENANCE_VISIT_SQL}
                        AND ts >= $2 AND ts < $3"
                ),
                &[&id, &(from - longest), &(to + longest * 2)],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let times: Vec<DateTime<Utc>> = found.iter().map(|(t, _)| *t).collect();
        let since: Option<DateTime<Utc>> = client
            .query_one(
                "SELECT least(
                    (SELECT min(ts) FROM readings WHERE device_id = $1 AND ts >= $2 AND ts < $3),
                    (SELECT min(ts) FROM events WHERE device_id = $1 AND ts >= $2 AND ts < $3),
                    (SELECT min(inspected_at) FROM inspections
                      WHERE device_id = $1 AND inspected_at >= $2 AND inspected_at < $3))",
                &[&id, &(from - longest), &to],
            )
            .await?
            .get(0);
        let by = |at: DateTime<Utc>| {
            let mut who: Vec<&str> = found
                .iter()
                .filter(|(t, _)| *t == at)
                .map(|(_, w)| w.as_str())
                .collect();
            who.dedup();
            (!who.is_empty()).then(|| who.join(", "))
        };
        // Each track (its class's cycle, its own beside it) on its own
        // windows; an inspection serves every track it falls in.
        for (class, cycle) in tracks {
            // The windows starting in the period, assessed with the one after
            // (so an inspection is the next window's own, not also this one's
            // late one, as in the rules), then cut to the period.
            let windows: Vec<_> = cycle
                .windows(from, to + cycle.longest(), tz)
                .into_iter()
                .filter(|(a, _)| *a >= from && *a < now)
                .filter(|(_, end)| since.is_some_and(|s| *end > s))
                .collect();
            let slots: Vec<_> = assess(&windows, &times, now)
                .into_iter()
                .filter(|s| s.start < to)
                .collect();
            let count = |f: fn(&Status) -> bool| slots.iter().filter(|s| f(&s.status)).count();
            out.push(Compliance {
                device: id.clone(),
                name: d.get(1),
                class: class.map(|c| c.as_str().to_owned()),
                cycle: cycle.to_string(),
                due: slots.len(),
                on_time: count(|s| matches!(s, Status::OnTime { .. })),
                late: count(|s| matches!(s, Status::Late { .. })),
                missed: count(|s| matches!(s, Status::Missed { .. })),
                open: count(|s| matches!(s, Status::Open)),
                tracked_since: since,
                last_inspected_at: times
                    .iter()
                    .filter(|t| **t >= from && **t < to && **t <= now)
                    .max()
                    .copied(),
                exceptions: slots
                    .iter()
                    .filter_map(|s| {
                        let (status, at) = match s.status {
                            Status::Late { at } => ("late", Some(at)),
                            Status::Missed { next } => ("missed", next),
                            _ => return None,
                        };
                        Some(Exception {
                            window_from: s.start,
                            due_by: s.end,
                            status: status.into(),
                            inspected_at: at,
                            inspector: at.and_then(&by),
                        })
                    })
                    .collect(),
            });
        }
    }
    Ok(out)
}
