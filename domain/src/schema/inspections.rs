//! Storing an inspection and the work items its failed checklist items
//! open: one place for the API, the CLI and ingest's patrol-app events, so
//! each is checked against the device's checklist the same way.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use crate::inspection::Report;

/// A stored work item.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkItemRow {
    pub id: i64,
    pub item: String,
    /// `small` (not left overnight) or `large` (not beyond a week).
    pub size: &'static str,
    pub due_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub id: i64,
    pub passed: bool,
    pub work_items: Vec<WorkItemRow>,
    /// Open work items of the device this inspection found fixed (their
    /// item `ok`): closed at its time.
    pub closed: Vec<i64>,
}

/// Why an inspection was not stored, in words for the person who sent it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refused {
    #[error("no device `{0}` in the ledger")]
    NoDevice(String),
    #[error("`{item}` is not on {device}'s checklist ({checklist})")]
    NotOnChecklist {
        item: String,
        device: String,
        checklist: String,
    },
    #[error("{by} already recorded an inspection of {device} at {at}")]
    Duplicate {
        by: String,
        device: String,
        at: String,
    },
}

/// Stores `report` (already [`Report::check`]ed) from `source` (`api`,
/// `cli`, `mqtt`), with a work item per failed item, due by the end of the
/// site's local day (small) or within a week (large). Run it inside the
/// caller's transaction: a refusal writes nothing.
pub async fn record(
    tx: &impl GenericClient,
    report: &Report,
    source: &str,
) -> Result<Result<Recorded, Refused>, tokio_postgres::Error> {
    let Some(row) = tx
        .query_opt(
            "SELECT d.checklist, s.time_zone FROM devices d
               LEFT JOIN sites s ON s.site_id = d.site_id
              WHERE d.device_id = $1",
            &[&report.device],
        )
        .await?
    else {
        return Ok(Err(Refused::NoDevice(report.device.clone())));
    };
    let checklist: Vec<String> = serde_json::from_value(row.get(0)).unwrap_or_default();
    if let Some(item) = report
        .results
        .keys()
        .find(|item| !checklist.is_empty() && !checklist.contains(item))
    {
        return Ok(Err(Refused::NotOnChecklist {
            item: item.clone(),
            device: report.device.clone(),
            checklist: checklist.join(", "),
        }));
    }
    let tz: chrono_tz::Tz = row
        .get::<_, Option<String>>(1)
        .and_then(|z| z.parse().ok())
        .unwrap_or(chrono_tz::UTC);
    let results: serde_json::Map<String, serde_json::Value> = report
        .results
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().into()))
        .collect();
    let passed = report.passed();
    let by = report.by.trim();
    let Some(id) = tx
        .query_opt(
            "INSERT INTO inspections (device_id, inspected_at, inspector, source, results, readings,
                                      note, passed)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (device_id, inspected_at, inspector) DO NOTHING RETURNING id",
            &[
                &report.device,
                &report.at,
                &by,
                &source,
                &serde_json::Value::Object(results),
                &serde_json::json!(report.readings),
                &report.note,
                &passed,
            ],
        )
        .await?
    else {
        return Ok(Err(Refused::Duplicate {
            by: by.to_owned(),
            device: report.device.clone(),
            at: report.at.to_rfc3339(),
        }));
    };
    let id: i64 = id.get(0);
    let mut work_items = Vec::new();
    for (item, size, due) in report.work_items(tz) {
        let wid: i64 = tx
            .query_one(
                "INSERT INTO work_items (device_id, inspection_id, item, size, opened_at, due_at)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[&report.device, &id, &item, &size, &report.at, &due],
            )
            .await?
            .get(0);
        work_items.push(WorkItemRow {
            id: wid,
            item: item.to_owned(),
            size,
            due_at: due,
        });
    }
    // An item found ok closes what earlier inspections opened for it.
    let fixed: Vec<&str> = report
        .results
        .iter()
        .filter(|(_, r)| **r == crate::inspection::ItemResult::Ok)
        .map(|(item, _)| item.as_str())
        .collect();
    let closed = if fixed.is_empty() {
        Vec::new()
    } else {
        tx.query(
            "UPDATE work_items SET closed_at = $3,
                    note = coalesce(note || '; ', '') || 'found ok by inspection ' || $4::bigint
              WHERE device_id = $1 AND item = ANY($2) AND closed_at IS NULL AND opened_at < $3
             RETURNING id",
            &[&report.device, &fixed, &report.at, &id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    Ok(Ok(Recorded {
        id,
        passed,
        work_items,
        closed,
    }))
}

/// Closes an open work item (fixed, or not to be done), with a note.
/// `None` when there is no such item; `Some(false)` when it was closed
/// already.
pub async fn close(
    client: &impl GenericClient,
    id: i64,
    at: DateTime<Utc>,
    note: &str,
) -> Result<Option<bool>, tokio_postgres::Error> {
    let closed = client
        .execute(
            "UPDATE work_items SET closed_at = $2,
                    note = coalesce(note || '; ', '') || $3
              WHERE id = $1 AND closed_at IS NULL",
            &[&id, &at, &note],
        )
        .await?;
    if closed == 1 {
        return Ok(Some(true));
    }
    let exists = client
        .query_opt("SELECT 1 FROM work_items WHERE id = $1", &[&id])
        .await?
        .is_some();
    Ok(exists.then_some(false))
}
