//! Rendering every format of a report and keeping them in `reports` /
//! `report_files`, where `estatemon report --list` and the API find them.

use chrono::{DateTime, Utc};
use estatemon_domain::config::{EnergyConfig, LiftsConfig};
use serde::Serialize;
use tokio_postgres::Client;

use super::build::{self, Progress};
use super::model::{QuarterReport, Scope};
use super::quarter::Quarter;
use super::tables::{tables, to_csv};

#[derive(Debug, Clone)]
pub struct RenderedFile {
    pub name: String,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// HTML, PDF, JSON and one CSV per table.
pub fn render_all(r: &QuarterReport) -> anyhow::Result<Vec<RenderedFile>> {
    let mut files = vec![
        RenderedFile {
            name: "report.html".into(),
            content_type: "text/html; charset=utf-8",
            body: super::html::render(r).into_bytes(),
        },
        RenderedFile {
            name: "report.pdf".into(),
            content_type: "application/pdf",
            body: super::pdf::render(r),
        },
        RenderedFile {
            name: "report.json".into(),
            content_type: "application/json",
            body: serde_json::to_vec_pretty(r)?,
        },
    ];
    for t in tables(r) {
        files.push(RenderedFile {
            name: format!("{}.csv", t.name),
            content_type: "text/csv; charset=utf-8",
            // A UTF-8 byte-order mark: Excel (the auditors' tool) reads
            // the file as UTF-8 only with it (CO₂, ±, Chinese names).
            body: ["\u{FEFF}", &to_csv(&t)].concat().into_bytes(),
        });
    }
    Ok(files)
}

/// The headline figures kept with the listing.
pub fn summary(r: &QuarterReport) -> serde_json::Value {
    let totals: Vec<_> = r
        .totals
        .iter()
        .filter(|t| t.scope == Scope::Site)
        .map(|t| {
            serde_json::json!({
                "utility": t.utility, "quantity": t.quantity, "unit": t.unit,
                "cost": t.cost, "co2_kg": t.co2_kg, "coverage": t.coverage,
            })
        })
        .collect();
    let savings: Vec<_> = r
        .savings_groups
        .iter()
        .map(|g| {
            serde_json::json!({
                "group": g.name, "savings_fraction": g.savings_fraction,
                "uncertainty": g.uncertainty, "target": g.target, "target_basis": g.target_basis, "meets_target": g.meets_target,
            })
        })
        .collect();
    serde_json::json!({
        "totals": totals,
        "savings": savings,
        "peak_kw": r.demand.peak_kw,
        "data_coverage": r.data_quality.coverage,
        "currency": r.currency,
        "signoff": super::signoff::status(r),
        "signatures": r.signatures,
    })
}

/// Stores a generated report, replacing an earlier generation of the same
/// site and quarter; returns its id.
pub async fn save(
    client: &mut Client,
    r: &QuarterReport,
    files: &[RenderedFile],
    generated_by: &str,
) -> anyhow::Result<i64> {
    let tx = client.transaction().await?;
    let quarter = r.quarter.to_string();
    let id: i64 = tx
        .query_one(
            "INSERT INTO reports (site_id, quarter, period_start, period_end, generated_at, generated_by, summary, version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (site_id, quarter) DO UPDATE SET period_start = EXCLUDED.period_start,
                 period_end = EXCLUDED.period_end, generated_at = EXCLUDED.generated_at,
                 generated_by = EXCLUDED.generated_by, summary = EXCLUDED.summary,
                 version = EXCLUDED.version
             RETURNING id",
            &[
                &r.site_id,
                &quarter,
                &r.period_start,
                &r.period_end,
                &r.generated_at,
                &generated_by,
                &summary(r),
                &r.version,
            ],
        )
        .await?
        .get(0);
    replace_files(&tx, id, files).await?;
    tx.commit().await?;
    Ok(id)
}

/// Replaces a stored report's files (inside the caller's transaction).
pub(crate) async fn replace_files(
    tx: &tokio_postgres::Transaction<'_>,
    id: i64,
    files: &[RenderedFile],
) -> Result<(), tokio_postgres::Error> {
    tx.execute("DELETE FROM report_files WHERE report_id = $1", &[&id])
        .await?;
    for f in files {
        tx.execute(
            "INSERT INTO report_files (report_id, name, content_type, body) VALUES ($1, $2, $3, $4)",
            &[&id, &f.name, &f.content_type, &f.body],
        )
        .await?;
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredReport {
    pub id: i64,
    pub version: i32,
    pub site_id: String,
    pub quarter: String,
    pub generated_at: DateTime<Utc>,
    pub generated_by: String,
    pub files: Vec<(String, i64)>,
    pub summary: serde_json::Value,
}

/// Stored reports, newest quarter first.
pub async fn list(client: &Client, site: Option<&str>) -> anyhow::Result<Vec<StoredReport>> {
    let rows = client
        .query(
            "SELECT r.id, r.site_id, r.quarter, r.generated_at, r.generated_by, r.summary, r.version,
                    coalesce(array_agg(f.name ORDER BY f.name) FILTER (WHERE f.name IS NOT NULL), '{}'),
                    coalesce(array_agg(octet_length(f.body)::bigint ORDER BY f.name) FILTER (WHERE f.name IS NOT NULL), '{}')
               FROM reports r LEFT JOIN report_files f ON f.report_id = r.id
              WHERE $1::text IS NULL OR r.site_id = $1
              GROUP BY r.id ORDER BY r.quarter DESC, r.site_id",
            &[&site],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let names: Vec<String> = r.get(7);
            let sizes: Vec<i64> = r.get(8);
            StoredReport {
                id: r.get(0),
                version: r.get(6),
                site_id: r.get(1),
                quarter: r.get(2),
                generated_at: r.get(3),
                generated_by: r.get(4),
                summary: r.get(5),
                files: names.into_iter().zip(sizes).collect(),
            }
        })
        .collect())
}

/// One stored file: (content type, body).
pub async fn file(
    client: &Client,
    site: &str,
    quarter: Quarter,
    name: &str,
) -> anyhow::Result<Option<(String, Vec<u8>)>> {
    Ok(client
        .query_opt(
            "SELECT f.content_type, f.body FROM report_files f JOIN reports r ON r.id = f.report_id
              WHERE r.site_id = $1 AND r.quarter = $2 AND f.name = $3",
            &[&site, &quarter.to_string(), &name],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

/// Builds, renders and stores the report of a site's quarter.
pub async fn generate(
    client: &mut Client,
    energy: &EnergyConfig,
    lifts: &LiftsConfig,
    site: &str,
    quarter: Quarter,
    generated_by: &str,
    progress: &dyn Progress,
) -> anyhow::Result<(QuarterReport, Vec<RenderedFile>, i64)> {
    let report = build::build(client, energy, lifts, site, quarter, progress).await?;
    progress.step("rendering HTML, PDF, CSV and JSON");
    let files = render_all(&report)?;
    progress.step("storing");
    let id = save(client, &report, &files, generated_by).await?;
    Ok((report, files, id))
}

/// The quarters that have closed at each site (in its time zone) and have
/// no stored report yet: the last closed quarter of every site.
pub async fn due(client: &Client, now: DateTime<Utc>) -> anyhow::Result<Vec<(String, Quarter)>> {
    let rows = client
        .query("SELECT site_id, time_zone FROM sites ORDER BY site_id", &[])
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let site: String = r.get(0);
        let Ok(tz) = r.get::<_, String>(1).parse::<chrono_tz::Tz>() else {
            continue;
        };
        let last_closed = Quarter::containing(now.with_timezone(&tz).date_naive()).previous();
        let exists = client
            .query_opt(
                "SELECT 1 FROM reports WHERE site_id = $1 AND quarter = $2",
                &[&site, &last_closed.to_string()],
            )
            .await?
            .is_some();
        if !exists {
            out.push((site, last_closed));
        }
    }
    Ok(out)
}

/// Arbitrary constant: one process generates scheduled reports at a time.
pub const REPORT_LOCK: i64 = 7_365_629;

/// Generates the reports of quarters that have closed (in each site's time
/// zone) and have none yet; returns what it generated. Takes a session
/// advisory lock so that two analytics processes do not both generate.
pub async fn generate_due_reports(
    client: &mut Client,
    energy: &EnergyConfig,
    lifts: &LiftsConfig,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<(String, Quarter)>> {
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&REPORT_LOCK])
        .await?
        .get(0);
    if !locked {
        return Ok(Vec::new());
    }
    let result = async {
        let mut done = Vec::new();
        for (site, quarter) in due(client, now).await? {
            let started = std::time::Instant::now();
            match generate(client, energy, lifts, &site, quarter, "schedule", &()).await {
                Ok((_, files, id)) => {
                    tracing::info!(
                        %site, %quarter, id, files = files.len(),
                        seconds = started.elapsed().as_secs_f64(),
                        "quarterly report generated"
                    );
                    done.push((site, quarter));
                }
                Err(e) => tracing::error!(%site, %quarter, error = %format!("{e:#}"), "quarterly report failed"),
            }
        }
        anyhow::Ok(done)
    }
    .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&REPORT_LOCK])
        .await?;
    result
}
