//! Storing a batch: one transaction, binary COPY, retried until it commits.
//!
//! Readings are COPYed straight into `readings` inside a savepoint. In the
//! rare batch that repeats an already stored reading (a redelivery after a
//! crash), the COPY fails on the primary key; the savepoint is rolled back
//! and the batch goes through a temporary staging table and
//! `INSERT … ON CONFLICT DO NOTHING`. The common case thus pays for one COPY,
//! and the same reading is still stored exactly once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use estatemon_domain::config::DatabaseConfig;
use estatemon_domain::event::{Event, EventDetail};
use estatemon_domain::schema::inspections::{self, Refused};
use estatemon_domain::schema::{self, partitions, SchemaError, StorageMode};
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, GenericClient, Transaction};

use crate::batch::Batch;
use crate::dead_letter::{DeadLetter, Reason};
use crate::immediate::Immediate;
use crate::metrics::{Metrics, ReasonLabel};

/// What a committed batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub readings: u64,
    pub duplicates: u64,
    pub events: u64,
    pub dead_letters: u64,
    pub devices: u64,
    /// Rows the database refused, stored as dead letters instead.
    pub refused: u64,
    /// Patrol-app inspections the ledger refused (unknown device, item not
    /// on the checklist), stored as dead letters.
    pub inspections_refused: u64,
    /// Immediate alerts opened by this batch.
    pub alerts: u64,
}

/// Longest a single batch write may take before the connection is
/// dropped, unless set (`ingest.write_timeout_s`).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("batch write did not finish within {0:?}; reconnecting")]
    Timeout(Duration),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// One database connection and what it knows about existing partitions.
pub struct Writer {
    database: DatabaseConfig,
    mode: StorageMode,
    chunk_days: u32,
    client: Option<Client>,
    ensured_chunks: HashSet<i64>,
    immediate: Option<Arc<Immediate>>,
    /// When this writer last recorded each device's `last_message_at`.
    heard: std::collections::HashMap<String, std::time::Instant>,
    write_timeout: Duration,
    /// A replay's writer: old messages say nothing of whether a device is
    /// heard from or online now.
    replaying: bool,
}

/// How often a device's `last_message_at` is written: the stale rules
/// count in hours, so a minute of resolution costs one small UPDATE per
/// device per half minute, not one per reading.
const HEARD_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

impl Writer {
    pub fn new(database: DatabaseConfig, mode: StorageMode, chunk_days: u32) -> Writer {
        Writer {
            database,
            mode,
            chunk_days,
            client: None,
            ensured_chunks: HashSet::new(),
            immediate: None,
            heard: std::collections::HashMap::new(),
            write_timeout: WRITE_TIMEOUT,
            replaying: false,
        }
    }

    /// Abandons a batch write after `timeout` (at least 1 s).
    pub fn with_write_timeout(mut self, timeout: Duration) -> Writer {
        self.write_timeout = timeout.max(Duration::from_secs(1));
        self
    }

    /// Raise the immediate alert rules' alerts in each batch's transaction.
    pub fn with_immediate(mut self, immediate: Option<Arc<Immediate>>) -> Writer {
        self.immediate = immediate;
        self
    }

    /// For `transport replay`: neither `last_message_at` nor a device's
    /// availability is written (they describe now, and the messages are
    /// old).
    pub fn replaying(mut self, replaying: bool) -> Writer {
        self.replaying = replaying;
        self
    }

    async fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let client = schema::connect(&self.database).await?;
            client
                .batch_execute(
                    "SET synchronous_commit = on;
                     CREATE TEMP TABLE IF NOT EXISTS readings_stage
                         (device_id text, metric text, ts timestamptz, value float8)
                         ON COMMIT DELETE ROWS",
                )
                .await?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("just connected"))
    }

    /// Connects now (a batch would connect on demand anyway).
    pub async fn connect(&mut self) -> Result<(), StoreError> {
        self.client().await.map(|_| ())
    }

    pub fn is_connected(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// Writes the batch, retrying with backoff until it commits. Returns
    /// `None` only if a write fails after shutdown was requested: the batch
    /// stays unacknowledged and the broker redelivers it to the next run.
    pub async fn write_until_committed<A>(
        &mut self,
        batch: &Batch<A>,
        metrics: &Metrics,
        max_backoff: Duration,
        shutdown: &tokio::sync::watch::Receiver<bool>,
    ) -> Option<Stored> {
        let mut shutdown = shutdown.clone();
        let mut backoff = Duration::from_millis(100);
        let mut was_connected = self.is_connected();
        let mut isolate = false;
        loop {
            let started = Instant::now();
            // A batch commits in tens of milliseconds; a minute means the
            // connection is gone without telling us.
            let attempt =
                match tokio::time::timeout(self.write_timeout, self.write(batch, isolate)).await {
                    Ok(result) => result,
                    Err(_) => {
                        self.client = None;
                        Err(StoreError::Timeout(self.write_timeout))
                    }
                };
            match attempt {
                Ok(stored) => {
                    if !was_connected {
                        metrics.db_connected.inc();
                    }
                    metrics
                        .commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    return Some(stored);
                }
                Err(e) if !isolate && is_permanent(&e) => {
                    // The same batch would fail the same way forever.
                    tracing::warn!(
                        error = %e,
                        "the database refused part of a batch; storing it row by row to isolate the refused rows"
                    );
                    metrics.db_errors.inc();
                    isolate = true;
                }
                Err(e) => {
                    metrics.db_errors.inc();
                    if was_connected && !self.is_connected() {
                        metrics.db_connected.dec();
                    }
                    was_connected = self.is_connected();
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = backoff.as_millis() as u64,
                        readings = batch.readings.len(),
                        "batch not stored; holding its acknowledgements and retrying"
                    );
                    if *shutdown.borrow() {
                        tracing::warn!(
                            "shutting down with the database unavailable: leaving this batch to the broker"
                        );
                        return None;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        }
    }

    /// One attempt. With `isolate`, every row (devices, readings, events,
    /// dead letters) is inserted on its own in a savepoint, and a reading or
    /// event the database refuses becomes a dead letter instead of failing
    /// the batch: one poison row must not stop the stream (see [`is_permanent`]).
    pub async fn write<A>(
        &mut self,
        batch: &Batch<A>,
        isolate: bool,
    ) -> Result<Stored, StoreError> {
        if self.mode == StorageMode::Plain {
            self.ensure_partitions(batch).await?;
        }
        let immediate = self.immediate.clone();
        let replaying = self.replaying;
        let heard_due: Vec<String> = if isolate || self.replaying {
            Vec::new()
        } else {
            batch
                .readings
                .iter()
                .map(|r| r.device_id.as_str())
                .chain(
                    batch
                        .events
                        .iter()
                        // A technician's inspection says nothing of whether
                        // the device itself is reporting.
                        .filter(|e| !matches!(e.detail, EventDetail::Inspection(_)))
                        .map(|e| e.device_id.as_str()),
                )
                .filter(|id| {
                    self.heard
                        .get(*id)
                        .is_none_or(|t| t.elapsed() >= HEARD_EVERY)
                })
                .collect::<HashSet<&str>>()
                .into_iter()
                .map(str::to_owned)
                .collect()
        };
        let client = self.client().await?;
        let tx = client.transaction().await?;
        let mut stored = Stored::default();
        if !batch.new_devices.is_empty() {
            let ids: Vec<&str> = batch
                .new_devices
                .iter()
                .map(|d| d.device_id.as_str())
                .collect();
            let sites: Vec<Option<&str>> = batch
                .new_devices
                .iter()
                .map(|d| d.site.as_deref())
                .collect();
            const REGISTER: &str =
                "INSERT INTO devices (device_id, site_id, kind, assigned, first_seen)
                 SELECT d, s, 'unknown', false, now() FROM unnest($1::text[], $2::text[]) AS t(d, s)
                 ON CONFLICT (device_id) DO NOTHING";
            if isolate {
                // Registration is a courtesy; readings are stored without it.
                for (id, site) in ids.iter().zip(&sites) {
                    match in_savepoint(&tx, tx.execute(REGISTER, &[&vec![*id], &vec![*site]]))
                        .await?
                    {
                        Ok(n) => stored.devices += n,
                        Err(e) => {
                            tracing::warn!(error = %e, "could not register a device; its readings are kept")
                        }
                    }
                }
            } else {
                stored.devices = tx.execute(REGISTER, &[&ids, &sites]).await?;
            }
        }
        let mut refused = Vec::new();
        if !batch.readings.is_empty() {
            stored.readings = if isolate {
                insert_readings_one_by_one(&tx, batch, &mut refused).await?
            } else {
                copy_readings(&tx, batch).await?
            };
            stored.duplicates =
                batch.readings.len() as u64 - stored.readings - refused.len() as u64;
        }
        let (inspections, events): (Vec<_>, Vec<_>) = batch
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| (batch.event_origin(i), e))
            .partition(|(_, e)| matches!(e.detail, EventDetail::Inspection(_)));
        if !events.is_empty() {
            stored.events = if isolate {
                insert_events_one_by_one(&tx, &events, &mut refused).await?
            } else {
                let events: Vec<&Event> = events.iter().map(|(_, e)| *e).collect();
                insert_events(&tx, &events).await?
            };
        }
        for (origin, e) in inspections {
            let EventDetail::Inspection(report) = &e.detail else {
                continue;
            };
            // A redelivered inspection is a duplicate, stored once; one the
            // ledger refuses (an unknown device, an item not on its
            // checklist) is a dead letter saying why.
            // A database error fails the batch (retried; isolated rows
            // when it recurs), as for any other row.
            let outcome = if isolate {
                match in_savepoint(&tx, inspections::record(&tx, report, "mqtt")).await? {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        // Kept whole (who, results, readings), with the
                        // database's reason.
                        let mut letter = inspection_refused(report, String::new());
                        let what = refusal(&report.device, "an inspection".into(), &e);
                        letter.reason = what.reason;
                        letter.detail = what.detail;
                        refused.push(traced(letter, origin));
                        continue;
                    }
                }
            } else {
                inspections::record(&tx, report, "mqtt").await?
            };
            match outcome {
                Ok(_) => stored.events += 1,
                Err(Refused::Duplicate { .. }) => {}
                Err(why) => {
                    stored.inspections_refused += 1;
                    refused.push(traced(inspection_refused(report, why.to_string()), origin));
                }
            }
        }
        if !heard_due.is_empty() {
            // When each device was last heard from, whatever the time its
            // data carries: a meter catching up on hours of history is
            // sending, not offline (the stale rules read this live).
            tx.execute(
                "UPDATE devices SET last_message_at = now()
                  WHERE device_id = ANY($1)
                    AND (last_message_at IS NULL OR last_message_at < now())",
                &[&heard_due],
            )
            .await?;
        }
        if !batch.dead_letters.is_empty() || !refused.is_empty() {
            let all: Vec<&DeadLetter> = batch.dead_letters.iter().chain(refused.iter()).collect();
            stored.dead_letters = if isolate {
                insert_dead_letters_one_by_one(&tx, &all).await?
            } else {
                insert_dead_letters(&tx, &all).await?
            };
            stored.refused = refused.len() as u64 - stored.inspections_refused;
        }
        for (device, online, at) in batch.availability.iter().filter(|_| !replaying) {
            // In arrival order: the last word of the batch stands.
            // The device and its channels (`<id>-switch:0` of a Shelly),
            // or a Sparkplug node and its devices (`group/node/device`).
            tx.execute(
                "UPDATE devices SET offline_since = CASE WHEN $2 THEN NULL
                     ELSE coalesce(offline_since, $3) END
                  WHERE device_id = $1 OR starts_with(device_id, $1 || '-')
                     OR starts_with(device_id, $1 || '/')
                     OR source_id = $1 OR starts_with(source_id, $1 || '-')
                     OR starts_with(source_id, $1 || '/')",
                &[device, online, at],
            )
            .await?;
        }
        if !batch.dirty_hours.is_empty() {
            tx.execute(
                // DO UPDATE (not DO NOTHING) locks an existing mark, so a
                // concurrent refresh cannot consume it before these rows commit.
                "INSERT INTO rollup_dirty (bucket) SELECT unnest($1::timestamptz[])
                 ON CONFLICT (bucket) DO UPDATE SET bucket = EXCLUDED.bucket",
                &[&batch.dirty_hours],
            )
            .await?;
        }
        if let Some(immediate) = immediate.filter(|i| i.count() > 0) {
            // An alerting failure must not stop storage: the analytics job
            // evaluates the same rules a minute later.
            match in_savepoint(&tx, immediate.raise(&tx, batch)).await? {
                Ok(n) => stored.alerts = n,
                Err(e) => tracing::error!(error = %e,
                    "immediate alerts not raised; the analytics job will raise them"),
            }
        }
        tx.commit().await?;
        let now = std::time::Instant::now();
        if self.heard.len() > 100_000 {
            self.heard.retain(|_, t| t.elapsed() < HEARD_EVERY);
        }
        for id in heard_due {
            self.heard.insert(id, now);
        }
        Ok(stored)
    }

    async fn ensure_partitions<A>(&mut self, batch: &Batch<A>) -> Result<(), StoreError> {
        let chunk_days = self.chunk_days;
        let needed: HashSet<i64> = batch
            .readings
            .iter()
            .map(|r| r.ts)
            .chain(batch.events.iter().map(|e| e.ts))
            .map(|ts| partitions::chunk_index(ts, chunk_days))
            .filter(|i| !self.ensured_chunks.contains(i))
            .collect();
        if needed.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        for &index in &needed {
            partitions::ensure_chunk(client, index, chunk_days).await?;
        }
        self.ensured_chunks.extend(needed);
        Ok(())
    }
}

/// Runs `attempt` inside a savepoint: kept on success, rolled back on
/// failure, with the transaction usable either way. The outer `Result` is a
/// failure of the savepoint commands themselves (a broken connection).
async fn in_savepoint<T>(
    tx: &Transaction<'_>,
    attempt: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<Result<T, tokio_postgres::Error>, tokio_postgres::Error> {
    tx.batch_execute("SAVEPOINT attempt").await?;
    match attempt.await {
        Ok(v) => {
            tx.batch_execute("RELEASE SAVEPOINT attempt").await?;
            Ok(Ok(v))
        }
        Err(e) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT attempt").await?;
            Ok(Err(e))
        }
    }
}

/// Errors that retrying the same rows cannot fix: data exceptions (22…),
/// integrity violations other than the duplicate key handled by the COPY
/// fallback (23…), program limits (54…).
pub fn is_permanent(e: &StoreError) -> bool {
    let StoreError::Db(e) = e else { return false };
    match e.code().map(|c| c.code()) {
        Some(code) if code == SqlState::UNIQUE_VIOLATION.code() => false,
        Some(code) => code.starts_with("22") || code.starts_with("23") || code.starts_with("54"),
        None => false,
    }
}

fn refusal(device_id: &str, what: String, e: &tokio_postgres::Error) -> DeadLetter {
    let why = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string());
    DeadLetter {
        received_at: Utc::now(),
        topic: String::new(),
        payload: serde_json::to_vec(&serde_json::json!({ "device_id": device_id, "row": what }))
            .unwrap_or_default(),
        reason: Reason::StorageRejected,
        detail: format!("the database refused {what} of device {device_id}: {why}"),
        // Refused again when its batch is redelivered: one row, not two.
        fingerprint: None,
    }
}

async fn insert_readings_one_by_one<A>(
    tx: &Transaction<'_>,
    batch: &Batch<A>,
    refused: &mut Vec<DeadLetter>,
) -> Result<u64, tokio_postgres::Error> {
    let insert = tx
        .prepare(
            "INSERT INTO readings (device_id, metric, ts, value) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .await?;
    let mut stored = 0;
    for (i, r) in batch.readings.iter().enumerate() {
        let row: [&(dyn ToSql + Sync); 4] = [&r.device_id, &r.metric.as_str(), &r.ts, &r.value];
        match in_savepoint(tx, tx.execute(&insert, &row)).await? {
            Ok(n) => stored += n,
            Err(e) => refused.push(traced(
                refusal(
                    &r.device_id,
                    format!("{} = {} at {}", r.metric, r.value, r.ts.to_rfc3339()),
                    &e,
                ),
                batch.origin(i),
            )),
        }
    }
    Ok(stored)
}

/// A patrol app's inspection the ledger refused, kept with its reason.
fn inspection_refused(report: &estatemon_domain::inspection::Report, why: String) -> DeadLetter {
    DeadLetter {
        received_at: Utc::now(),
        topic: String::new(),
        payload: serde_json::to_vec(&serde_json::json!({
            "device_id": report.device,
            "type": "inspection",
            "by": report.by,
            "ts": report.at,
            "results": report.results,
            "readings": report.readings,
            "note": report.note,
        }))
        .unwrap_or_default(),
        reason: Reason::InspectionRefused,
        detail: format!("inspection by {} refused: {why}", report.by),
        fingerprint: None,
    }
}

async fn insert_events_one_by_one(
    tx: &Transaction<'_>,
    events: &[(Option<i64>, &Event)],
    refused: &mut Vec<DeadLetter>,
) -> Result<u64, tokio_postgres::Error> {
    let mut stored = 0;
    for (origin, event) in events {
        match in_savepoint(tx, insert_events(tx, std::slice::from_ref(event))).await? {
            Ok(n) => stored += n,
            Err(e) => refused.push(traced(
                refusal(
                    &event.device_id,
                    format!(
                        "{} event at {}",
                        event.detail.event_type(),
                        event.ts.to_rfc3339()
                    ),
                    &e,
                ),
                *origin,
            )),
        }
    }
    Ok(stored)
}

/// How a traced letter's detail names its origin: `… (reprocessing dead
/// letter <id>)`.
const TRACE_MARK: &str = " (reprocessing dead letter ";
/// The same last words as a PostgreSQL regex, capturing the origin's id
/// (at most 18 digits, a bigint): `reprocess::resolve` reads it back.
pub(crate) const TRACED: &str = r"\(reprocessing dead letter (\d{1,18})\)$";

/// A letter for a row of a message read back from dead letter `origin`
/// (reprocessing): its payload says `from_dead_letter` and its detail names
/// the letter, so the original is resolved as refused in part, not as
/// stored.
fn traced(mut letter: DeadLetter, origin: Option<i64>) -> DeadLetter {
    // `reprocess::resolve` reads the id back from these last words.
    let Some(id) = origin else { return letter };
    if let Ok(serde_json::Value::Object(mut o)) =
        serde_json::from_slice::<serde_json::Value>(&letter.payload)
    {
        o.insert("from_dead_letter".into(), id.into());
        letter.payload = serde_json::to_vec(&o).unwrap_or(letter.payload);
    }
    letter.detail = format!("{}{TRACE_MARK}{id})", letter.detail);
    letter
}

/// Last line of defence: a dead letter the database refuses is replaced by
/// a minimal one (reason, error, no payload), and if even that fails it is
/// logged and dropped rather than stalling every message behind it.
async fn insert_dead_letters_one_by_one(
    tx: &Transaction<'_>,
    letters: &[&DeadLetter],
) -> Result<u64, tokio_postgres::Error> {
    let mut n = 0;
    for letter in letters {
        let e =
            match in_savepoint(tx, insert_dead_letters(tx, std::slice::from_ref(letter))).await? {
                Ok(k) => {
                    n += k;
                    continue;
                }
                Err(e) => e,
            };
        // A reprocessed row's letter keeps naming the letter it came from
        // (the detail's last words), so that letter is resolved as such.
        let trace = letter
            .detail
            .rfind(TRACE_MARK)
            .map(|i| &letter.detail[i..])
            .filter(|t| t.ends_with(')'));
        let minimal = DeadLetter {
            received_at: letter.received_at,
            topic: String::new(),
            payload: Vec::new(),
            reason: letter.reason,
            detail: format!(
                "the original dead letter could not be stored: {}{}",
                e.as_db_error()
                    .map(|d| d.message())
                    .unwrap_or("database error"),
                trace.unwrap_or_default()
            ),
            fingerprint: letter.fingerprint.clone(),
        };
        match in_savepoint(tx, insert_dead_letters(tx, &[&minimal])).await? {
            Ok(k) => n += k,
            Err(e) => {
                tracing::error!(error = %e, reason = letter.reason.as_str(), "dead letter dropped")
            }
        }
    }
    Ok(n)
}

const READING_TYPES: &[Type] = &[Type::TEXT, Type::TEXT, Type::TIMESTAMPTZ, Type::FLOAT8];

async fn copy_into<A>(
    tx: &Transaction<'_>,
    table: &str,
    batch: &Batch<A>,
) -> Result<(), tokio_postgres::Error> {
    let sink = tx
        .copy_in(&format!(
            "COPY {table} (device_id, metric, ts, value) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, READING_TYPES);
    pin_mut!(writer);
    for r in &batch.readings {
        writer
            .as_mut()
            .write(&[&r.device_id, &r.metric.as_str(), &r.ts, &r.value])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

/// Returns how many readings were new.
async fn copy_readings<A>(
    tx: &Transaction<'_>,
    batch: &Batch<A>,
) -> Result<u64, tokio_postgres::Error> {
    match in_savepoint(tx, copy_into(tx, "readings", batch)).await? {
        Ok(()) => Ok(batch.readings.len() as u64),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            copy_into(tx, "readings_stage", batch).await?;
            let inserted = tx
                .execute(
                    "INSERT INTO readings (device_id, metric, ts, value)
                     SELECT device_id, metric, ts, value FROM readings_stage
                     ON CONFLICT DO NOTHING",
                    &[],
                )
                .await?;
            tx.batch_execute("TRUNCATE readings_stage").await?;
            Ok(inserted)
        }
        Err(e) => Err(e),
    }
}

async fn insert_events(
    tx: &impl GenericClient,
    events: &[&Event],
) -> Result<u64, tokio_postgres::Error> {
    let n = events.len();
    let mut device = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut disc = Vec::with_capacity(n);
    let mut result: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut method: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut credential: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut expired: Vec<Option<bool>> = Vec::with_capacity(n);
    let mut direction: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut code: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut state: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut duration: Vec<Option<f64>> = Vec::with_capacity(n);
    for e in events {
        device.push(e.device_id.as_str());
        ts.push(e.ts);
        kind.push(e.detail.event_type().as_str());
        disc.push(e.detail.discriminator());
        let (mut r, mut m, mut c, mut x, mut d, mut co, mut s, mut du) =
            (None, None, None, None, None, None, None, None);
        match &e.detail {
            EventDetail::Access {
                result,
                method,
                credential,
                direction,
                credential_expired,
            } => {
                r = Some(result.as_str());
                m = Some(method.as_str());
                c = credential.as_ref().map(|p| p.as_str());
                d = direction.map(|d| d.as_str());
                x = Some(*credential_expired);
            }
            EventDetail::DoorHeldOpen { seconds } => du = Some(*seconds),
            EventDetail::Fault { code } => co = Some(code.as_str()),
            EventDetail::State { state, credential } => {
                s = Some(state.as_str());
                c = credential.as_ref().map(|p| p.as_str());
            }
            EventDetail::AlarmTest { passed } => {
                r = Some(if *passed { "passed" } else { "failed" })
            }
            EventDetail::Rescue { step } => co = Some(step.as_str()),
            EventDetail::DoorForced | EventDetail::Tamper | EventDetail::Inspection(_) => {}
        }
        result.push(r);
        method.push(m);
        credential.push(c);
        expired.push(x);
        direction.push(d);
        code.push(co);
        state.push(s);
        duration.push(du);
    }
    tx.execute(
        "INSERT INTO events (device_id, ts, event_type, discriminator, result, method, credential,
                             credential_expired, direction, code, state, duration_s)
         SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::text[], $8::bool[], $9::text[], $10::text[],
                              $11::text[], $12::float8[])
         ON CONFLICT DO NOTHING",
        &[
            &device,
            &ts,
            &kind,
            &disc,
            &result,
            &method,
            &credential,
            &expired,
            &direction,
            &code,
            &state,
            &duration,
        ],
    )
    .await
}

async fn insert_dead_letters(
    tx: &impl GenericClient,
    d: &[&DeadLetter],
) -> Result<u64, tokio_postgres::Error> {
    let received: Vec<_> = d.iter().map(|x| x.received_at).collect();
    let topic: Vec<&str> = d.iter().map(|x| x.topic.as_str()).collect();
    let payload: Vec<&[u8]> = d.iter().map(|x| x.payload.as_slice()).collect();
    let reason: Vec<&str> = d.iter().map(|x| x.reason.as_str()).collect();
    let detail: Vec<&str> = d.iter().map(|x| x.detail.as_str()).collect();
    let fingerprint: Vec<Option<&[u8]>> = d.iter().map(|x| x.fingerprint.as_deref()).collect();
    // A redelivered message (same fingerprint within the window) is skipped.
    tx.execute(
        "INSERT INTO dead_letters (received_at, topic, payload, reason, detail, fingerprint)
         SELECT n.* FROM unnest($1::timestamptz[], $2::text[], $3::bytea[], $4::text[],
                                $5::text[], $6::bytea[])
                      AS n(received_at, topic, payload, reason, detail, fingerprint)
          WHERE n.fingerprint IS NULL
             OR NOT EXISTS (SELECT 1 FROM dead_letters d
                             WHERE d.fingerprint = n.fingerprint
                               AND d.received_at > n.received_at - make_interval(secs => $7))",
        &[
            &received,
            &topic,
            &payload,
            &reason,
            &detail,
            &fingerprint,
            &(crate::dead_letter::REDELIVERY_WINDOW_S as f64),
        ],
    )
    .await
}

/// Updates counters after a commit.
pub fn record<A>(metrics: &Metrics, batch: &Batch<A>, stored: Stored) {
    let now = Utc::now();
    metrics.readings_stored.inc_by(stored.readings);
    metrics
        .readings_duplicate
        .inc_by(stored.duplicates + batch.duplicates_in_batch as u64);
    metrics.events_stored.inc_by(stored.events);
    metrics.alerts_raised.inc_by(stored.alerts);
    metrics.devices_registered.inc_by(stored.devices);
    metrics.batch_readings.observe(batch.readings.len() as f64);
    for r in &batch.readings {
        let lag = (now - r.ts).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
        metrics.lag_seconds.observe(lag.max(0.0));
    }
    for dl in &batch.dead_letters {
        metrics
            .dead_letters
            .get_or_create(&ReasonLabel {
                reason: dl.reason.as_str(),
            })
            .inc();
    }
    for (reason, n) in [
        (Reason::StorageRejected, stored.refused),
        (Reason::InspectionRefused, stored.inspections_refused),
    ] {
        metrics
            .dead_letters
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc_by(n);
    }
}
