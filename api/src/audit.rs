//! The audit log: every request through the API — who (token name and
//! role), what (method, route and query), when, and how it ended — as the
//! owners' security rules require. Records go through a channel to a task
//! that writes them in batches, so a burst of panel queries costs one
//! INSERT per flush, not one per request; a database outage keeps them
//! buffered (bounded) and retries.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct Record {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub role: Option<String>,
    pub method: String,
    pub path: String,
    pub status: i32,
    pub detail: String,
}

/// Keeps at most this many records while the database is away.
const MAX_BUFFERED: usize = 200_000;

#[derive(Clone)]
pub struct Audit {
    tx: mpsc::UnboundedSender<Record>,
}

impl Audit {
    /// Starts the writer; it ends (after a last flush) when every `Audit`
    /// is dropped.
    pub fn start(
        pool: deadpool_postgres::Pool,
        flush: Duration,
        metrics: crate::metrics::Metrics,
    ) -> (Audit, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(writer(pool, rx, flush, metrics));
        (Audit { tx }, task)
    }

    pub fn record(&self, r: Record) {
        let _ = self.tx.send(r);
    }
}

async fn writer(
    pool: deadpool_postgres::Pool,
    mut rx: mpsc::UnboundedReceiver<Record>,
    flush: Duration,
    metrics: crate::metrics::Metrics,
) {
    let mut buffer: Vec<Record> = Vec::new();
    let mut open = true;
    while open || !buffer.is_empty() {
        if open {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => { buffer.push(r); while let Ok(r) = rx.try_recv() { buffer.push(r); } }
                    None => open = false,
                },
                _ = tokio::time::sleep(flush) => {}
            }
        }
        if buffer.is_empty() {
            continue;
        }
        match write(&pool, &buffer).await {
            Ok(()) => {
                metrics.audit_written.inc_by(buffer.len() as u64);
                buffer.clear();
            }
            Err(e) => {
                tracing::warn!(error = %e, pending = buffer.len(), "audit records not written yet; retrying");
                if buffer.len() > MAX_BUFFERED {
                    let dropped = buffer.len() - MAX_BUFFERED;
                    buffer.drain(..dropped);
                    metrics.audit_dropped.inc_by(dropped as u64);
                    tracing::error!(dropped, "audit buffer full: oldest records dropped");
                }
                if !open {
                    // Shutting down with the database away: say what is lost.
                    tracing::error!(lost = buffer.len(), "audit records lost at shutdown");
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        metrics.audit_pending.set(buffer.len() as i64);
    }
}

async fn write(pool: &deadpool_postgres::Pool, records: &[Record]) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let at: Vec<DateTime<Utc>> = records.iter().map(|r| r.at).collect();
    let actor: Vec<&str> = records.iter().map(|r| r.actor.as_str()).collect();
    let role: Vec<Option<&str>> = records.iter().map(|r| r.role.as_deref()).collect();
    let method: Vec<&str> = records.iter().map(|r| r.method.as_str()).collect();
    let path: Vec<&str> = records.iter().map(|r| r.path.as_str()).collect();
    let status: Vec<i32> = records.iter().map(|r| r.status).collect();
    let detail: Vec<&str> = records.iter().map(|r| r.detail.as_str()).collect();
    client
        .execute(
            "INSERT INTO audit_log (at, actor, role, method, path, status, detail)
             SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::int[], $7::text[])",
            &[&at, &actor, &role, &method, &path, &status, &detail],
        )
        .await?;
    Ok(())
}
