//! The alert lifecycle in the database: open, resolve, acknowledge,
//! escalate, each writing its notifications to the outbox in the same
//! transaction.
//!
//! Both the ingest fast path and the analytics job open alerts here. The
//! partial unique index `alerts_one_open_per_fault` makes "one fault, one
//! alert" a property of the database, not of who got there first: a second
//! opener of the same fingerprint only refreshes `last_seen_at` and writes
//! no notification, so nobody is paged twice.
//!
//! Every transition also sends `NOTIFY estatemon_alerts` (delivered at
//! commit), which wakes the notifiers at once.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use crate::rules::{Deadlines, Rule};

/// The channel notifiers `LISTEN` on.
pub const CHANNEL: &str = "estatemon_alerts";

/// An alert about to be opened.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    pub rule: String,
    pub severity: crate::rules::Severity,
    pub summary: String,
    /// The device id, or the group (`site/area`), or the credential.
    pub subject: String,
    pub labels: BTreeMap<String, String>,
    pub site_id: Option<String>,
    pub device_id: Option<String>,
    pub value: Option<f64>,
    /// When the fault began (data time).
    pub started_at: DateTime<Utc>,
    /// Latest evidence of it.
    pub last_seen_at: DateTime<Utc>,
    /// `ingest` or `analytics`.
    pub source: &'static str,
    /// When the alert is raised, from which its response deadline runs:
    /// the wall clock live, the cycle's (data) time in a replay, so that a
    /// replayed alert from August is not due in December.
    pub raised_at: DateTime<Utc>,
}

impl NewAlert {
    /// The identity of the fault: one open alert per fingerprint.
    pub fn fingerprint(rule: &str, subject: &str) -> String {
        format!("{rule}|{subject}")
    }

    /// Labels every alert carries: `alertname`, `severity`, `subject` and
    /// the device's site, building, area, purpose and kind where known.
    pub fn new(
        rule: &Rule,
        subject: String,
        device: Option<&crate::rules::DeviceLabels>,
        started_at: DateTime<Utc>,
        last_seen_at: DateTime<Utc>,
        value: Option<f64>,
        source: &'static str,
    ) -> NewAlert {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".into(), rule.name.clone());
        if let crate::rules::Condition::Mode(_) = rule.condition {
            // About the service mode itself: the mode's own silence must
            // not hold it (see `open`).
            labels.insert("condition".into(), "mode".into());
        }
        labels.insert("severity".into(), rule.severity.as_str().into());
        labels.insert("subject".into(), subject.clone());
        if let crate::rules::Condition::Consumption(c) = &rule.condition {
            // A consumption alert over an area or a purpose has no device:
            // its metric says which panels it belongs on.
            labels.insert("metric".into(), c.metric.as_str().into());
        }
        let mut site_id = None;
        let mut device_id = None;
        if let Some(d) = device {
            labels.insert("device".into(), d.id.clone());
            labels.insert("kind".into(), d.kind.clone());
            for (key, value) in [
                ("site", &d.site),
                ("building", &d.building),
                ("area", &d.area),
                ("purpose", &d.purpose),
            ] {
                if let Some(v) = value {
                    labels.insert(key.into(), v.clone());
                }
            }
            site_id = d.site.clone();
            device_id = Some(d.id.clone());
            if d.is_unregistered() {
                // Paged on the event alone: say so, so the person paged
                // knows the ledger has no name, place or kind for it yet.
                labels.insert("registered".into(), "false".into());
            }
        }
        let summary = match device {
            Some(d) if d.is_unregistered() => {
                format!("{} (device not in the registry)", rule.summary)
            }
            _ => rule.summary.clone(),
        };
        NewAlert {
            rule: rule.name.clone(),
            severity: rule.severity,
            summary,
            subject,
            labels,
            site_id,
            device_id,
            value,
            started_at,
            last_seen_at,
            source,
            raised_at: Utc::now(),
        }
    }

    /// Raised at `at` (the evaluation's time) rather than now.
    pub fn raised_at(mut self, at: DateTime<Utc>) -> NewAlert {
        self.raised_at = at;
        self
    }
}

/// What [`open`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// A new alert; notifications queued unless a silence matched.
    New { id: i64, silenced: bool },
    /// The fault already had an open alert; its evidence was refreshed.
    Existing { id: i64 },
}

/// Opens an alert (or refreshes the open one for the same fault) and queues
/// a `firing` notification per receiver. Call inside the transaction that
/// stored the evidence, so the two commit together.
pub async fn open(
    tx: &impl GenericClient,
    alert: &NewAlert,
    deadlines: &Deadlines,
    receivers: &[String],
) -> Result<Opened, tokio_postgres::Error> {
    let labels = serde_json::to_value(&alert.labels).expect("string map");
    let deadline = deadlines.of(alert.severity).seconds() as f64;
    let row = tx
        .query_one(
            "INSERT INTO alerts (rule, subject, fingerprint, severity, summary, labels, site_id,
                                 device_id, value, source, started_at, last_seen_at,
                                 fired_at, response_deadline, silenced_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                     $14::timestamptz, $14::timestamptz + make_interval(secs => $13),
                     -- An emergency is held only by a silence that names its
                     -- rule: a maintenance window on a lift must not keep a
                     -- trapped passenger from paging.
                     -- A lift's service-mode silence does not hold the
                     -- alert that the mode has lasted too long.
                     (SELECT id FROM silences
                       WHERE starts_at <= now() AND ends_at > now() AND $6::jsonb @> matchers
                         AND ($4 <> 'emergency' OR matchers ? 'alertname')
                         AND NOT (created_by = $15 AND $6::jsonb @> '{\"condition\": \"mode\"}')
                       ORDER BY id LIMIT 1))
             ON CONFLICT (fingerprint) WHERE state <> 'resolved'
             DO UPDATE SET last_seen_at = greatest(alerts.last_seen_at, EXCLUDED.last_seen_at),
                           value = coalesce(EXCLUDED.value, alerts.value)
             RETURNING id, (xmax = 0) AS inserted, silenced_by",
            &[
                &alert.rule,
                &alert.subject,
                &NewAlert::fingerprint(&alert.rule, &alert.subject),
                &alert.severity.as_str(),
                &alert.summary,
                &labels,
                &alert.site_id,
                &alert.device_id,
                &alert.value,
                &alert.source,
                &alert.started_at,
                &alert.last_seen_at,
                &deadline,
                &alert.raised_at,
                &SERVICE_MODE_SILENCE,
            ],
        )
        .await?;
    let id: i64 = row.get(0);
    if !row.get::<_, bool>(1) {
        return Ok(Opened::Existing { id });
    }
    let silenced = row.get::<_, Option<i64>>(2).is_some();
    if !silenced {
        queue(tx, id, "firing", receivers).await?;
    }
    Ok(Opened::New { id, silenced })
}

/// Resolves an open alert at `cleared_at` (data time); queues `resolved`
/// notifications if it had paged. Returns false if it was not open.
pub async fn resolve(
    tx: &impl GenericClient,
    id: i64,
    cleared_at: DateTime<Utc>,
    receivers: &[String],
) -> Result<bool, tokio_postgres::Error> {
    let row = tx
        .query_opt(
            "UPDATE alerts SET state = 'resolved', resolved_at = $2, closed_at = now()
              WHERE id = $1 AND state <> 'resolved'
              RETURNING silenced_by",
            &[&id, &cleared_at],
        )
        .await?;
    match row {
        None => Ok(false),
        Some(row) => {
            if row.get::<_, Option<i64>>(0).is_none() {
                queue(tx, id, "resolved", receivers).await?;
            }
            Ok(true)
        }
    }
}

/// Resolves at `end` the replayed alerts (`source = 'replay'`) still open
/// when a replay of the past ended at `end`, labelled
/// `closed_by=replay_end` so that lists, annotations and reports say the
/// condition still held when evaluation stopped. Nothing is notified: a
/// replayed alert was never paged. Returns how many were closed.
pub async fn close_left_by_replay(
    client: &impl GenericClient,
    end: DateTime<Utc>,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "UPDATE alerts SET state = 'resolved', resolved_at = greatest(started_at, $1), closed_at = now(),
                    labels = labels || '{\"closed_by\": \"replay_end\"}'::jsonb
              WHERE source = 'replay' AND state <> 'resolved' AND started_at <= $1",
            &[&end],
        )
        .await
}

/// Marks a firing alert acknowledged by `who`. Returns false if it was not
/// firing (already acknowledged or resolved, or unknown).
pub async fn acknowledge(
    client: &impl GenericClient,
    id: i64,
    who: &str,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            "UPDATE alerts SET state = 'acknowledged', acknowledged_at = now(), acknowledged_by = $2
              WHERE id = $1 AND state = 'firing'",
            &[&id, &who],
        )
        .await?;
    Ok(n == 1)
}

/// Escalates every paging alert left unacknowledged past its response
/// deadline (once), queueing `escalated` notifications. Returns their ids.
pub async fn escalate_overdue(
    tx: &impl GenericClient,
    receivers: &[String],
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let rows = tx
        .query(
            "UPDATE alerts SET escalated_at = now()
              WHERE state = 'firing' AND escalated_at IS NULL AND silenced_by IS NULL
                AND response_deadline <= now()
              RETURNING id",
            &[],
        )
        .await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    for &id in &ids {
        queue(tx, id, "escalated", receivers).await?;
    }
    Ok(ids)
}

/// Alerts recorded under a silence that has since ended, still open: they
/// page now, with their full response time from now.
pub async fn release_ended_silences(
    tx: &impl GenericClient,
    receivers: &[String],
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let rows = tx
        .query(
            "UPDATE alerts a
                SET silenced_by = NULL,
                    response_deadline = now() + (a.response_deadline - a.fired_at),
                    -- the on-call ladder starts from the release, not from
                    -- the firing hours ago (every step at once)
                    snoozed_until = now()
               FROM silences s
              WHERE a.silenced_by = s.id AND s.ends_at <= now() AND a.state <> 'resolved'
              RETURNING a.id",
            &[],
        )
        .await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    for &id in &ids {
        queue(tx, id, "firing", receivers).await?;
    }
    Ok(ids)
}

/// The author of the silences the analytics job keeps while a lift is in
/// inspection or maintenance.
pub const SERVICE_MODE_SILENCE: &str = "estatemon (lift service mode)";

/// Label names a silence may match on.
pub const SILENCE_LABELS: &[&str] = &[
    "alertname",
    "severity",
    "subject",
    "device",
    "kind",
    "site",
    "building",
    "area",
    "purpose",
];

/// A maintenance window: alerts whose labels include every matcher, opened
/// between `starts_at` and `ends_at`, are recorded but do not page. An
/// emergency (entrapment, forced door, fire main) is held only when the
/// matchers name its rule (`alertname`): a window on a device or a
/// building never silences one by accident.
pub async fn create_silence(
    client: &impl GenericClient,
    matchers: &BTreeMap<String, String>,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    created_by: &str,
    comment: &str,
) -> Result<i64, tokio_postgres::Error> {
    let matchers = serde_json::to_value(matchers).expect("string map");
    Ok(client
        .query_one(
            "INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&matchers, &starts_at, &ends_at, &created_by, &comment],
        )
        .await?
        .get(0))
}

/// Ends a silence now; its open alerts page at the next evaluation.
pub async fn end_silence(
    client: &impl GenericClient,
    id: i64,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .execute(
            "UPDATE silences SET ends_at = greatest(starts_at + interval '1 microsecond', now())
              WHERE id = $1 AND ends_at > now()",
            &[&id],
        )
        .await?
        == 1)
}

async fn queue(
    tx: &impl GenericClient,
    id: i64,
    kind: &str,
    receivers: &[String],
) -> Result<(), tokio_postgres::Error> {
    if !receivers.is_empty() {
        tx.execute(
            "INSERT INTO alert_notifications (alert_id, kind, receiver)
             SELECT $1, $2, unnest($3::text[])",
            &[&id, &kind, &receivers],
        )
        .await?;
    }
    // Also without receivers: the on-call pager plans on this wake-up.
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &id.to_string()])
        .await?;
    Ok(())
}

/// An open alert, as the evaluator reconciles it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAlert {
    pub id: i64,
    pub rule: String,
    pub subject: String,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// Every alert of estatemon's own rules not yet resolved (those from the
/// intake and heartbeats are resolved by their sources).
pub async fn open_alerts(
    client: &impl GenericClient,
) -> Result<Vec<OpenAlert>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id, rule, subject, started_at, last_seen_at FROM alerts
              WHERE state <> 'resolved' AND source NOT IN ('intake', 'heartbeat')",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| OpenAlert {
            id: r.get(0),
            rule: r.get(1),
            subject: r.get(2),
            started_at: r.get(3),
            last_seen_at: r.get(4),
        })
        .collect())
}
