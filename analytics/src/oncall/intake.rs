//! One intake for everything that is not estatemon's own rule: alerts
//! from Prometheus Alertmanager (its webhook, version 4), a generic JSON
//! alert, and heartbeats. All become alerts like any other (the same
//! escalations, pages, links and timeline), with `source` = `intake` or
//! `heartbeat`, so the evaluator never resolves them as rules it does not
//! know.
//!
//! - Alertmanager: each alert's `fingerprint` is its identity; a re-sent
//!   group refreshes the open alert rather than opening another, and
//!   `status = resolved` resolves it.
//! - Generic: `key` is the identity, `status` `firing` or `resolved`.
//! - Heartbeats: a monitored system (a fire panel gateway, a BMS,
//!   estatemon's own analytics job) checks in; one that has not within its
//!   interval is an alert, resolved by its next check-in. The API process
//!   watches them ([`check_heartbeats`]) and runs the pager too, so a dead
//!   analytics job still pages.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use estatemon_domain::rules::{Deadlines, Severity};
use estatemon_domain::schema::alerts::{self, NewAlert, Opened};
use serde::Deserialize;
use tokio_postgres::GenericClient;

/// The analytics job's own heartbeat (written by every analytics process
/// while its pager runs).
pub const ANALYTICS_HEARTBEAT: &str = "estatemon-analytics";

/// A severity from what Prometheus and other systems write: `critical`,
/// `page` and `emergency` page as emergencies; `warning`, `error`, `major`
/// and `ordinary` as ordinary; `info`, `minor`, `none` and `routine` as
/// routine. Anything else: ordinary, and the label is kept.
pub fn severity(label: Option<&str>) -> Severity {
    match label.map(str::to_ascii_lowercase).as_deref() {
        Some("critical" | "page" | "emergency" | "fatal") => Severity::Emergency,
        Some("info" | "minor" | "none" | "routine" | "low") => Severity::Routine,
        _ => Severity::Ordinary,
    }
}

/// Alertmanager's webhook body (version 4), as its documentation gives
/// it; fields estatemon does not use are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerWebhook {
    pub version: String,
    #[serde(default)]
    pub receiver: String,
    pub alerts: Vec<AlertmanagerAlert>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerAlert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    pub fingerprint: String,
}

/// A generic alert.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericAlert {
    /// The system that raised it (`bms-tower-a`).
    pub source: String,
    /// Its identity at the source: one open alert per source and key.
    pub key: String,
    /// `firing` (default) or `resolved`.
    #[serde(default)]
    pub status: Option<String>,
    /// `emergency`, `ordinary`, `routine` (or critical, warning, info).
    #[serde(default)]
    pub severity: Option<String>,
    pub summary: String,
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub building: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
}

/// What one intake call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Taken {
    pub opened: usize,
    /// Already open: refreshed (a re-sent group, a repeat).
    pub refreshed: usize,
    pub resolved: usize,
    /// Resolved at the source but not open here (nothing to do).
    pub unknown: usize,
}

/// One external alert, firing or resolved.
#[allow(clippy::too_many_arguments)]
async fn take(
    tx: &impl GenericClient,
    rule: &str,
    subject: &str,
    severity: Severity,
    summary: &str,
    mut labels: BTreeMap<String, String>,
    firing: bool,
    at: DateTime<Utc>,
    source: &'static str,
    receivers: &[String],
    taken: &mut Taken,
) -> Result<(), tokio_postgres::Error> {
    if !firing {
        let row = tx
            .query_opt(
                "SELECT id FROM alerts WHERE fingerprint = $1 AND state <> 'resolved'",
                &[&NewAlert::fingerprint(rule, subject)],
            )
            .await?;
        match row {
            Some(r) if alerts::resolve(tx, r.get(0), at, receivers).await? => taken.resolved += 1,
            _ => taken.unknown += 1,
        }
        return Ok(());
    }
    labels.insert("alertname".into(), rule.to_owned());
    labels.insert("severity".into(), severity.as_str().into());
    labels.insert("source".into(), source.into());
    let site_id = labels.get("site").cloned();
    let device_id = labels.get("device").cloned();
    let alert = NewAlert {
        rule: rule.to_owned(),
        severity,
        summary: summary.to_owned(),
        subject: subject.to_owned(),
        labels,
        site_id,
        device_id,
        value: None,
        started_at: at,
        last_seen_at: Utc::now().max(at),
        source,
        raised_at: Utc::now(),
    };
    match alerts::open(tx, &alert, &Deadlines::default(), receivers).await? {
        Opened::New { .. } => taken.opened += 1,
        Opened::Existing { .. } => taken.refreshed += 1,
    }
    Ok(())
}

/// Alertmanager's alerts, de-duplicated by their fingerprint.
pub async fn alertmanager(
    tx: &impl GenericClient,
    body: &AlertmanagerWebhook,
    receivers: &[String],
) -> Result<Taken, tokio_postgres::Error> {
    let mut taken = Taken::default();
    for a in &body.alerts {
        let name = a
            .labels
            .get("alertname")
            .cloned()
            .unwrap_or_else(|| "prometheus_alert".into());
        let summary = a
            .annotations
            .get("summary")
            .or_else(|| a.annotations.get("description"))
            .cloned()
            .unwrap_or_else(|| {
                let on = a.labels.get("instance").map(|i| format!(" on {i}"));
                format!("{name}{}", on.unwrap_or_default())
            });
        let firing = a.status != "resolved";
        let at = if firing {
            a.starts_at
        } else {
            a.ends_at.unwrap_or_else(Utc::now)
        };
        take(
            tx,
            &name,
            &format!("am:{}", a.fingerprint),
            severity(a.labels.get("severity").map(String::as_str)),
            &summary,
            a.labels.clone(),
            firing,
            at,
            "intake",
            receivers,
            &mut taken,
        )
        .await?;
    }
    Ok(taken)
}

/// A generic alert.
pub async fn generic(
    tx: &impl GenericClient,
    a: &GenericAlert,
    receivers: &[String],
) -> Result<Taken, tokio_postgres::Error> {
    let mut taken = Taken::default();
    let mut labels = a.labels.clone();
    for (k, v) in [
        ("site", &a.site),
        ("building", &a.building),
        ("device", &a.device),
    ] {
        if let Some(v) = v {
            labels.insert(k.into(), v.clone());
        }
    }
    labels.insert("origin".into(), a.source.clone());
    let firing = a.status.as_deref() != Some("resolved");
    take(
        tx,
        &format!("{}:{}", a.source, a.key),
        &a.key,
        severity(a.severity.as_deref()),
        &a.summary,
        labels,
        firing,
        a.at.unwrap_or_else(Utc::now),
        "intake",
        receivers,
        &mut taken,
    )
    .await?;
    Ok(taken)
}

/// A check-in: the monitor's last time is now, and its alert (if it had
/// gone quiet) resolves. Returns false for a name no monitor has.
pub async fn beat(
    tx: &impl GenericClient,
    name: &str,
    receivers: &[String],
) -> Result<bool, tokio_postgres::Error> {
    let n = tx
        .execute(
            "UPDATE heartbeats SET last_at = now() WHERE name = $1",
            &[&name],
        )
        .await?;
    if n == 0 {
        return Ok(false);
    }
    resolve_missed(tx, name, receivers).await?;
    Ok(true)
}

/// Resolves the missed-heartbeat alert of monitor `name`, if one is open.
async fn resolve_missed(
    client: &impl GenericClient,
    name: &str,
    receivers: &[String],
) -> Result<(), tokio_postgres::Error> {
    take(
        client,
        "heartbeat_missed",
        name,
        Severity::Routine,
        "",
        BTreeMap::new(),
        false,
        Utc::now(),
        "heartbeat",
        receivers,
        &mut Taken::default(),
    )
    .await
}

/// Keeps `heartbeats` in step with the configured monitors (new ones start
/// counting now); a monitor no longer configured is dropped, and its
/// missed-heartbeat alert resolved (nothing checks in for it any more).
pub async fn declare(
    client: &impl GenericClient,
    monitors: &[estatemon_domain::config::HeartbeatConfig],
    receivers: &[String],
) -> Result<(), tokio_postgres::Error> {
    let names: Vec<&str> = monitors.iter().map(|m| m.name.as_str()).collect();
    let dropped = client
        .query(
            "DELETE FROM heartbeats WHERE name <> ALL($1) RETURNING name",
            &[&names],
        )
        .await?;
    for r in dropped {
        let name: String = r.get(0);
        resolve_missed(client, &name, receivers).await?;
        tracing::info!(monitor = %name, "heartbeat monitor no longer configured: dropped");
    }
    for m in monitors {
        client
            .execute(
                "INSERT INTO heartbeats (name, interval_s, severity, site, summary, last_at)
                 VALUES ($1, $2, $3, $4, $5, now())
                 ON CONFLICT (name) DO UPDATE SET interval_s = EXCLUDED.interval_s,
                        severity = EXCLUDED.severity, site = EXCLUDED.site,
                        summary = EXCLUDED.summary",
                &[
                    &m.name,
                    &(m.interval_s as i64),
                    &m.severity,
                    &m.site,
                    &m.summary
                        .clone()
                        .unwrap_or_else(|| format!("{} stopped checking in", m.name)),
                ],
            )
            .await?;
    }
    Ok(())
}

/// Opens an alert for every monitor silent past its interval (once: the
/// open alert is refreshed while it stays silent). Returns how many opened.
pub async fn check_heartbeats(
    tx: &impl GenericClient,
    now: DateTime<Utc>,
    receivers: &[String],
) -> Result<usize, tokio_postgres::Error> {
    let rows = tx
        .query(
            // Locked: a check-in committing meanwhile waits, then resolves
            // what this opened (rather than this reopening what it resolved).
            "SELECT name, severity, site, summary, last_at, interval_s FROM heartbeats
              WHERE last_at + make_interval(secs => interval_s) < $1
              FOR UPDATE",
            &[&now],
        )
        .await?;
    let mut taken = Taken::default();
    for r in rows {
        let name: String = r.get(0);
        let severity_label: String = r.get(1);
        let site: Option<String> = r.get(2);
        let summary: String = r.get(3);
        let last: DateTime<Utc> = r.get(4);
        let interval: i64 = r.get(5);
        let mut labels = BTreeMap::new();
        if let Some(s) = site {
            labels.insert("site".into(), s);
        }
        labels.insert("device".into(), name.clone());
        labels.insert("last_check_in".into(), last.to_rfc3339());
        take(
            tx,
            "heartbeat_missed",
            &name,
            Severity::parse(&severity_label).unwrap_or(Severity::Ordinary),
            &format!("{summary} (no check-in for over {interval} s)"),
            labels,
            true,
            last + chrono::Duration::seconds(interval),
            "heartbeat",
            receivers,
            &mut taken,
        )
        .await?;
    }
    Ok(taken.opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alertmanager's documented webhook example (prometheus.io, "webhook_config").
    #[test]
    fn alertmanagers_documented_webhook_body_parses() {
        let body = r#"{
          "version": "4",
          "groupKey": "{}:{alertname=\"HighLatency\"}",
          "truncatedAlerts": 0,
          "status": "firing",
          "receiver": "estatemon",
          "groupLabels": {"alertname": "HighLatency"},
          "commonLabels": {"alertname": "HighLatency", "severity": "critical"},
          "commonAnnotations": {},
          "externalURL": "http://alertmanager:9093",
          "alerts": [{
            "status": "firing",
            "labels": {"alertname": "HighLatency", "severity": "critical", "instance": "bms:9100"},
            "annotations": {"summary": "BMS exporter latency high"},
            "startsAt": "2026-12-06T03:00:00.000Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph",
            "fingerprint": "c5f1a9e8b4d2e7f0"
          }]
        }"#;
        let w: AlertmanagerWebhook = serde_json::from_str(body).unwrap();
        assert_eq!(w.version, "4");
        assert_eq!(w.alerts[0].fingerprint, "c5f1a9e8b4d2e7f0");
        assert_eq!(
            severity(w.alerts[0].labels.get("severity").map(String::as_str)),
            Severity::Emergency
        );
        assert_eq!(severity(Some("warning")), Severity::Ordinary);
        assert_eq!(severity(Some("info")), Severity::Routine);
        assert_eq!(severity(None), Severity::Ordinary);
    }
}
