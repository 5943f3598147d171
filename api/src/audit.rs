//! The audit log: every request through the API — who (token name and
//! role), what (method, route and query), when, and how it ended — as the
//! owners' security rules require. Records go through a channel to a task
//! that writes them in batches, so a burst of panel queries costs one
//! INSERT per flush, not one per request.
//!
//! The log must not be turned against the database or the API's memory:
//! - a stored path is cut at [`MAX_PATH_BYTES`] (a 30 kB query string is
//!   kept as its first 2 kB and its length);
//! - the backlog is bounded in bytes (`api.audit_max_pending_mb`): while a
//!   stalled database holds it at the bound, [`Audit::has_room`] is false
//!   and the middleware refuses new requests with 503. Nothing is dropped
//!   to make room, and `estatemon_api_audit_records_pending` /
//!   `…_pending_bytes` show the backlog;
//! - unauthenticated callers are rate-limited per address
//!   ([`AnonymousLimiter`]): beyond the limit they are counted, with one
//!   audit row per burst.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

/// Longest request path (with its query) stored in a record.
pub const MAX_PATH_BYTES: usize = 2048;

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

impl Record {
    /// Roughly what the record holds in memory.
    fn bytes(&self) -> usize {
        96 + self.actor.len()
            + self.role.as_ref().map_or(0, String::len)
            + self.method.len()
            + self.path.len()
            + self.detail.len()
    }
}

/// `path` cut to at most [`MAX_PATH_BYTES`] on a character boundary, with
/// the original length when it was cut.
pub fn truncate_path(path: &str) -> String {
    if path.len() <= MAX_PATH_BYTES {
        return path.to_owned();
    }
    let mut end = MAX_PATH_BYTES;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} bytes]", &path[..end], path.len())
}

/// What a handler adds to its request's audit row (which token it
/// created, what a device became), put in the response's extensions.
#[derive(Debug, Clone)]
pub struct Detail(pub String);

/// Whom a request without a token acted for (`link:{person}`: an
/// on-call link names the person it was sent to), in the audit row.
#[derive(Debug, Clone)]
pub struct LinkActor(pub String);

/// An HTML answer kept as it is whatever its status (the on-call link
/// pages explain a refusal to a person on a phone, not to a program).
#[derive(Debug, Clone, Copy)]
pub struct KeepHtml;

#[derive(Clone)]
pub struct Audit {
    tx: mpsc::UnboundedSender<Record>,
    pending_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    metrics: crate::metrics::Metrics,
}

impl Audit {
    /// Starts the writer; it ends (after a last flush) when every `Audit`
    /// is dropped.
    pub fn start(
        pool: deadpool_postgres::Pool,
        flush: Duration,
        max_bytes: usize,
        metrics: crate::metrics::Metrics,
    ) -> (Audit, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending_bytes = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(writer(
            pool,
            rx,
            flush,
            pending_bytes.clone(),
            metrics.clone(),
        ));
        (
            Audit {
                tx,
                pending_bytes,
                max_bytes: max_bytes.max(64 * 1024),
                metrics,
            },
            task,
        )
    }

    /// Whether a new request may be served: its record will fit in the
    /// backlog's bound.
    pub fn has_room(&self) -> bool {
        self.pending_bytes.load(Ordering::Relaxed) < self.max_bytes
    }

    pub fn record(&self, mut r: Record) {
        // The middleware cuts paths already; this keeps the bound for any
        // other caller without copying every path a second time.
        if r.path.len() > MAX_PATH_BYTES {
            r.path = truncate_path(&r.path);
        }
        let bytes = r.bytes();
        let total = self.pending_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.metrics.audit_pending.inc();
        self.metrics.audit_pending_bytes.set(total as i64);
        let _ = self.tx.send(r);
    }
}

async fn writer(
    pool: deadpool_postgres::Pool,
    mut rx: mpsc::UnboundedReceiver<Record>,
    flush: Duration,
    pending_bytes: Arc<AtomicUsize>,
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
        // In slices: a backlog at its bound (16 MiB) is not encoded into
        // one statement, which would double the memory it holds.
        while !buffer.is_empty() {
            let n = buffer.len().min(WRITE_SLICE);
            match write(&pool, &buffer[..n]).await {
                Ok(()) => {
                    metrics.audit_written.inc_by(n as u64);
                    let bytes: usize = buffer[..n].iter().map(Record::bytes).sum();
                    let left = pending_bytes.fetch_sub(bytes, Ordering::Relaxed) - bytes;
                    metrics.audit_pending.dec_by(n as i64);
                    metrics.audit_pending_bytes.set(left as i64);
                    buffer.drain(..n);
                }
                Err(e) => {
                    tracing::warn!(error = %e, pending = buffer.len(), "audit records not written yet; retrying");
                    if !open {
                        // Shutting down with the database away: say what is lost.
                        metrics.audit_dropped.inc_by(buffer.len() as u64);
                        tracing::error!(lost = buffer.len(), "audit records lost at shutdown");
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
        if buffer.is_empty() && buffer.capacity() > WRITE_SLICE {
            // Give a backlog's memory back, not only its records.
            buffer = Vec::new();
        }
    }
}

/// Records per INSERT.
const WRITE_SLICE: usize = 1000;

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

/// What the limiter says about one more unauthenticated request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answer 401 and audit it.
    Answer,
    /// The first refusal of this burst: 429, audited once.
    RefuseFirst,
    /// 429, counted only.
    Refuse,
}

/// Requests without a valid token, per client address, in one-minute
/// windows.
pub struct AnonymousLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// The window of the limiter.
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked before old windows are pruned.
const MAX_TRACKED: usize = 10_000;

impl AnonymousLimiter {
    /// `per_minute = 0` turns the limit off.
    pub fn new(per_minute: u32) -> AnonymousLimiter {
        AnonymousLimiter {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub fn check(&self, addr: IpAddr, now: Instant) -> Verdict {
        if self.per_minute == 0 {
            return Verdict::Answer;
        }
        let mut windows = self.windows.lock().expect("limiter lock");
        if windows.len() >= MAX_TRACKED {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let (start, count) = windows.entry(addr).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        *count = count.saturating_add(1);
        match (*count).cmp(&(self.per_minute + 1)) {
            std::cmp::Ordering::Less => Verdict::Answer,
            std::cmp::Ordering::Equal => Verdict::RefuseFirst,
            std::cmp::Ordering::Greater => Verdict::Refuse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        let short = "/api/v1/alerts?limit=5";
        assert_eq!(truncate_path(short), short);
        let long = format!("/api/v1/series?x={}", "é".repeat(20_000));
        let cut = truncate_path(&long);
        assert!(cut.len() < MAX_PATH_BYTES + 32, "{}", cut.len());
        assert!(cut.ends_with(&format!("…[{} bytes]", long.len())), "{cut}");
    }

    #[test]
    fn unauthenticated_bursts_are_refused_once_audited() {
        let limiter = AnonymousLimiter::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t = Instant::now();
        let verdicts: Vec<Verdict> = (0..6).map(|_| limiter.check(a, t)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Answer,
                Verdict::Answer,
                Verdict::Answer,
                Verdict::RefuseFirst,
                Verdict::Refuse,
                Verdict::Refuse
            ]
        );
        // Another address has its own budget; a new minute starts afresh.
        assert_eq!(limiter.check(b, t), Verdict::Answer);
        assert_eq!(limiter.check(a, t + WINDOW), Verdict::Answer);
        assert_eq!(AnonymousLimiter::new(0).check(a, t), Verdict::Answer);
    }
}
