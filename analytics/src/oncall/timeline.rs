//! An incident's timeline: the alert's own moments (fired, escalated,
//! acknowledged, resolved) and everything on-call did in between: each
//! page that came due (who, step, why), each try on each channel
//! (delivered, or failed and why), fall-throughs, hand-overs, cancelled
//! pages, and each acknowledgement, resolution or snooze from a link. The
//! same rows for the API, the CLI and the dashboard table.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use super::roster::Roster;

/// One moment of an incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub at: DateTime<Utc>,
    /// `fired`, `paged`, `sent`, `failed`, `skipped`, `fell_through`,
    /// `unreachable`, `cancelled`, `handover`, `acknowledged`, `snoozed`,
    /// `escalated`, `resolved`.
    pub kind: String,
    /// The person's roster id, and their name as they write it.
    pub person: Option<String>,
    pub name: Option<String>,
    /// The page (`P{id}` in messages) and its step (1-based).
    pub page: Option<i64>,
    pub step: Option<i32>,
    pub channel: Option<String>,
    pub detail: String,
}

/// The timeline of alert `id`, oldest first; None: no such alert.
pub async fn of(
    client: &impl GenericClient,
    id: i64,
    roster: Option<&Roster>,
) -> Result<Option<Vec<Entry>>, tokio_postgres::Error> {
    let Some(a) = client
        .query_opt(
            "SELECT fired_at, summary, severity, escalated_at, acknowledged_at, acknowledged_by,
                    state, closed_at, resolved_by, response_deadline
               FROM alerts WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut out = vec![Entry {
        at: a.get(0),
        kind: "fired".into(),
        person: None,
        name: None,
        page: None,
        step: None,
        channel: None,
        detail: format!(
            "{} ({}); respond by {}",
            a.get::<_, String>(1),
            a.get::<_, String>(2),
            a.get::<_, DateTime<Utc>>(9).format("%Y-%m-%d %H:%M UTC")
        ),
    }];
    let plain = |at: DateTime<Utc>, kind: &str, detail: String| Entry {
        at,
        kind: kind.into(),
        person: None,
        name: None,
        page: None,
        step: None,
        channel: None,
        detail,
    };
    if let Some(at) = a.get::<_, Option<DateTime<Utc>>>(3) {
        out.push(plain(
            at,
            "escalated",
            "not acknowledged by its deadline".into(),
        ));
    }
    // Acknowledgements and resolutions by link are in the events, with the
    // person; the others (CLI, API, Grafana, the rule clearing) here.
    let by_link =
        |by: &Option<String>| by.as_deref().is_some_and(|b| b.contains("(link in page P"));
    let ack_by: Option<String> = a.get(5);
    if let (Some(at), false) = (a.get::<_, Option<DateTime<Utc>>>(4), by_link(&ack_by)) {
        out.push(plain(
            at,
            "acknowledged",
            format!("by {}", ack_by.unwrap_or_default()),
        ));
    }
    let resolved_by: Option<String> = a.get(8);
    if let (Some(at), "resolved", false) = (
        a.get::<_, Option<DateTime<Utc>>>(7),
        a.get::<_, String>(6).as_str(),
        by_link(&resolved_by),
    ) {
        out.push(plain(
            at,
            "resolved",
            resolved_by.map_or("the condition cleared".into(), |b| format!("by {b}")),
        ));
    }
    for r in client
        .query(
            "SELECT created_at, id, step, person, reason, flagged, due_at
               FROM oncall_pages WHERE alert_id = $1",
            &[&id],
        )
        .await?
    {
        let flagged: bool = r.get(5);
        let due: DateTime<Utc> = r.get(6);
        let created: DateTime<Utc> = r.get(0);
        out.push(Entry {
            at: due,
            kind: "paged".into(),
            person: Some(r.get(3)),
            name: None,
            page: Some(r.get(1)),
            step: Some(r.get::<_, i32>(2) + 1),
            channel: None,
            detail: format!(
                "{}{}{}",
                r.get::<_, String>(4),
                if flagged { " [flagged]" } else { "" },
                if (created - due).num_seconds() > 90 {
                    format!(" (planned late, at {})", created.format("%H:%M:%S UTC"))
                } else {
                    String::new()
                }
            ),
        });
    }
    for r in client
        .query(
            "SELECT e.at, e.kind, e.person, e.page_id, p.step, e.channel, e.detail
               FROM oncall_events e LEFT JOIN oncall_pages p ON p.id = e.page_id
              WHERE e.alert_id = $1",
            &[&id],
        )
        .await?
    {
        out.push(Entry {
            at: r.get(0),
            kind: r.get(1),
            person: r.get(2),
            name: None,
            page: r.get(3),
            step: r.get::<_, Option<i32>>(4).map(|s| s + 1),
            channel: r.get(5),
            detail: r.get(6),
        });
    }
    for e in &mut out {
        e.name = e
            .person
            .as_deref()
            .and_then(|p| roster.and_then(|r| r.person(p)))
            .map(|p| p.name.clone());
    }
    out.sort_by(|x, y| x.at.cmp(&y.at).then(x.page.cmp(&y.page)));
    Ok(Some(out))
}
