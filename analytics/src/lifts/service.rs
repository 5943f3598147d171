//! Lift service modes. A lift reports its mode in its state events:
//! `idle` / `moving` / `door_open` (normal service), `inspection`,
//! `maintenance`, `fire_service`, `out_of_service`, `fault`. While a lift
//! is in inspection or maintenance, a technician is working on it: its
//! ordinary faults and stale alerts are recorded, not paged. This is done
//! with a silence the analytics job keeps in step with the lift's latest
//! state (created by [`CREATED_BY`], extended every cycle while the mode
//! lasts, ended when it does), so the operator sees it beside their own
//! silences and an alert still open when the mode ends pages then.
//!
//! A silence never holds an emergency unless it names the rule
//! (`domain::schema::alerts::open`): a passenger trapped during an
//! inspection pages like any other. Nor does this silence hold a `mode`
//! rule's alert (`lift_maintenance_overrun`): a lift left in maintenance
//! too long pages although it is in maintenance.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use estatemon_domain::schema::alerts;
use tokio_postgres::Client;

/// The author of the service-mode silences.
pub const CREATED_BY: &str = alerts::SERVICE_MODE_SILENCE;
/// Modes in which a technician works on the lift.
pub const TECHNICIAN_MODES: &[&str] = &["inspection", "maintenance"];
/// How far ahead a service-mode silence reaches; renewed every cycle, so a
/// stopped analytics job lets it lapse instead of silencing for ever.
const LEASE: Duration = Duration::minutes(15);

/// What one synchronisation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModeSync {
    /// Lifts in inspection or maintenance at `now`.
    pub in_service_mode: usize,
    pub silences_opened: usize,
    pub silences_ended: usize,
}

/// Keeps one silence per lift in inspection or maintenance as of `now`
/// (data time: a replay sees the modes of its own past).
pub async fn sync(client: &Client, now: DateTime<Utc>) -> Result<ModeSync, tokio_postgres::Error> {
    let modes: HashMap<String, (String, DateTime<Utc>)> = client
        .query(
            "SELECT d.device_id, s.state, s.ts
               FROM devices d
               CROSS JOIN LATERAL (SELECT e.state, e.ts FROM events e
                                    WHERE e.device_id = d.device_id AND e.event_type = 'state'
                                      AND e.ts <= $1 AND e.ts > $1 - interval '90 days'
                                    ORDER BY e.ts DESC LIMIT 1) s
              WHERE d.kind = 'lift'",
            &[&now],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let open: HashMap<String, i64> = client
        .query(
            "SELECT matchers->>'device', id FROM silences
              WHERE created_by = $1 AND ends_at > now()",
            &[&CREATED_BY],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut out = ModeSync::default();
    for (lift, (mode, since)) in &modes {
        if !TECHNICIAN_MODES.contains(&mode.as_str()) {
            continue;
        }
        out.in_service_mode += 1;
        match open.get(lift) {
            Some(id) => {
                client
                    .execute(
                        "UPDATE silences SET ends_at = greatest(ends_at, now() + make_interval(secs => $2))
                          WHERE id = $1",
                        &[id, &(LEASE.num_seconds() as f64)],
                    )
                    .await?;
            }
            None => {
                let matchers = BTreeMap::from([("device".to_owned(), lift.clone())]);
                let start = (*since).min(Utc::now());
                let id = alerts::create_silence(
                    client,
                    &matchers,
                    start,
                    Utc::now() + LEASE,
                    CREATED_BY,
                    &format!("{lift} reported {mode} at {since}: ordinary faults and stale alerts are recorded, not paged"),
                )
                .await?;
                tracing::info!(lift = %lift, mode = %mode, since = %since, silence = id,
                    "lift in service mode: its ordinary alerts are recorded, not paged");
                out.silences_opened += 1;
            }
        }
    }
    for (lift, id) in &open {
        let still = modes
            .get(lift)
            .is_some_and(|(m, _)| TECHNICIAN_MODES.contains(&m.as_str()));
        if !still && alerts::end_silence(client, *id).await? {
            tracing::info!(lift = %lift, silence = id, "lift back from service mode: its alerts page again");
            out.silences_ended += 1;
        }
    }
    Ok(out)
}
