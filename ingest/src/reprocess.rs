//! Dead letters through ingest again (`estatemon dead-letters reprocess`).
//!
//! Once a mapping, a profile, a unit or a limit is fixed, the messages it
//! refused are read back from `dead_letters` and handed to the same
//! pipeline as live ones, on an ingestor of their own with no broker
//! ([`crate::Ingestor::start_reprocess`]). As for a replay, they raise no
//! immediate alerts (they are history) and do not mark their devices as
//! heard from now; they keep the time they were first received.
//!
//! Each letter's outcome is written back once its message is committed
//! ([`resolve`]): `reprocessed` when ingest no longer refuses it, or
//! `reprocessed: refused again as <id>` when it made a new letter (which
//! holds today's reason and is the open one). A letter is reprocessed
//! once: only open letters (`resolved_at IS NULL`) are selected.
//!
//! Not selected, each for a reason [`skipped`] reports:
//! - Sparkplug topics: a host reads a node's data through its births, on
//!   the node's session; a letter alone cannot be read.
//! - Payloads that held a `"credential"`: it was pseudonymised when the
//!   letter was stored, and the card number is not kept.
//! - `payload_too_large` (only the first 4 KiB are kept), `clock_unsynced`
//!   (not a loss: the readings were stored at their receipt) and
//!   `conflicting_duplicate` (a row of an imported file: import it again).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use estatemon_domain::config::DatabaseConfig;
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;
use crate::subscribe::{AckKind, AckToken, Budget, Delivery};

/// Reasons whose letters are not reprocessed, and why.
pub const NOT_REPROCESSED: &[(&str, &str)] = &[
    (
        "payload_too_large",
        "only the first 4 KiB of the payload were kept",
    ),
    (
        "clock_unsynced",
        "not a loss: the readings were stored at their receipt",
    ),
    (
        "conflicting_duplicate",
        "a row of an imported file: import the file again",
    ),
];

/// Which open letters to reprocess.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these reasons (none: every reason but [`NOT_REPROCESSED`]).
    pub reasons: Vec<String>,
    /// Only topics this MQTT filter matches.
    pub topic: Option<String>,
    /// Received from…
    pub from: Option<DateTime<Utc>>,
    /// …until (exclusive).
    pub to: Option<DateTime<Utc>>,
}

/// What a selection holds: the letters to reprocess, and those it leaves.
#[derive(Debug, Default)]
pub struct Plan {
    /// Ids, in order.
    pub ids: Vec<i64>,
    /// Per reason, letters to reprocess.
    pub by_reason: Vec<(String, u64)>,
    /// Letters of the selection left alone, per why.
    pub skipped: Vec<(String, u64)>,
    /// The highest id when the plan was made: letters above it are new.
    pub watermark: i64,
}

const SPARKPLUG_SKIP: &str =
    "Sparkplug: a host reads a node's data through its births, not a letter alone";
const CREDENTIAL_SKIP: &str =
    "held a credential, pseudonymised when stored; the card number is not kept";

/// Reads which open letters `selection` covers.
pub async fn plan(
    client: &tokio_postgres::Client,
    selection: &Selection,
) -> Result<Plan, tokio_postgres::Error> {
    let watermark: i64 = client
        .query_one("SELECT coalesce(max(id), 0) FROM dead_letters", &[])
        .await?
        .get(0);
    let reasons: Option<Vec<String>> =
        (!selection.reasons.is_empty()).then(|| selection.reasons.clone());
    let rows = client
        .query(
            "SELECT id, topic, reason, position('\"credential\"'::bytea IN payload) > 0
               FROM dead_letters
              WHERE resolved_at IS NULL AND id <= $1
                AND ($2::text[] IS NULL OR reason = ANY($2))
                AND ($3::timestamptz IS NULL OR received_at >= $3)
                AND ($4::timestamptz IS NULL OR received_at < $4)
              ORDER BY id",
            &[&watermark, &reasons, &selection.from, &selection.to],
        )
        .await?;
    let mut plan = Plan {
        watermark,
        ..Plan::default()
    };
    let mut by_reason = std::collections::BTreeMap::<String, u64>::new();
    let mut skipped = std::collections::BTreeMap::<String, u64>::new();
    let sparkplug = format!("{}/", estatemon_domain::sparkplug::NAMESPACE);
    for r in rows {
        let (id, topic, reason, credential): (i64, String, String, bool) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if let Some(filter) = &selection.topic {
            if !estatemon_domain::mapping::topic::filter_matches(filter, &topic) {
                continue;
            }
        }
        let skip = if topic.starts_with(&sparkplug) {
            Some(SPARKPLUG_SKIP.to_owned())
        } else if credential {
            Some(CREDENTIAL_SKIP.to_owned())
        } else {
            NOT_REPROCESSED
                .iter()
                .find(|(r, _)| *r == reason)
                .map(|(r, why)| format!("{r}: {why}"))
        };
        match skip {
            Some(why) => *skipped.entry(why).or_default() += 1,
            None => {
                *by_reason.entry(reason).or_default() += 1;
                plan.ids.push(id);
            }
        }
    }
    plan.by_reason = by_reason.into_iter().collect();
    plan.skipped = skipped.into_iter().collect();
    Ok(plan)
}

/// How a reprocessing run is going; shared with the command's progress bar.
#[derive(Debug, Default)]
pub struct Progress {
    /// Letters handed to the pipeline.
    pub forwarded: AtomicU64,
    /// Their ids, once the batch that held each committed.
    committed: Mutex<Vec<i64>>,
    /// Every letter was handed over (or the run stopped: see `error`).
    pub finished: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Progress {
    pub fn committed(&self) -> u64 {
        self.committed.lock().map(|c| c.len() as u64).unwrap_or(0)
    }

    pub(crate) fn commit(&self, id: i64) {
        if let Ok(mut c) = self.committed.lock() {
            c.push(id);
        }
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    fn fail(&self, why: String) {
        if let Ok(mut e) = self.error.lock() {
            e.get_or_insert(why);
        }
        self.finished.store(true, Ordering::Release);
    }

    /// Handed over, and all committed.
    pub fn done(&self) -> bool {
        self.finished.load(Ordering::Acquire)
            && self.committed() >= self.forwarded.load(Ordering::Acquire)
    }
}

/// Reads the letters `ids` names (in pages) and hands them to the
/// pipeline, holding back while the payload budget is spent.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn feed(
    database: DatabaseConfig,
    ids: Vec<i64>,
    tx: mpsc::UnboundedSender<Delivery>,
    budget: Arc<Budget>,
    metrics: Metrics,
    progress: Arc<Progress>,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = match estatemon_domain::schema::connect(&database).await {
        Ok(c) => c,
        Err(e) => return progress.fail(format!("database: {e}")),
    };
    for page in ids.chunks(500) {
        let rows = match client
            .query(
                "SELECT id, topic, payload, received_at FROM dead_letters
                  WHERE id = ANY($1) AND resolved_at IS NULL ORDER BY id",
                &[&page],
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) => return progress.fail(format!("reading dead letters: {e}")),
        };
        for r in rows {
            while budget.spent() {
                tokio::select! {
                    _ = tokio::time::timeout(std::time::Duration::from_millis(50), budget.freed.notified()) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    return progress.fail("interrupted".into());
                }
            }
            if *shutdown.borrow() {
                return progress.fail("interrupted".into());
            }
            let (id, topic, payload, received_at): (i64, String, Vec<u8>, DateTime<Utc>) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            let cost_kib = (payload.len() as u64).div_ceil(1024).max(1);
            budget.charge(cost_kib);
            metrics.buffered_kib.set(budget.used_kib() as i64);
            let delivery = Delivery {
                topic,
                payload: Bytes::from(payload),
                retained: false,
                subscription_ids: Vec::new(),
                received: Instant::now(),
                received_at,
                ack: AckToken {
                    kind: AckKind::Reprocess {
                        id,
                        progress: progress.clone(),
                    },
                    cost_kib,
                },
            };
            if tx.send(delivery).is_err() {
                return progress.fail("the pipeline stopped".into());
            }
            progress.forwarded.fetch_add(1, Ordering::AcqRel);
        }
    }
    progress.finished.store(true, Ordering::Release);
}

/// What [`resolve`] wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Letters ingest no longer refuses.
    pub resolved: u64,
    /// Letters refused again: each has a new open letter.
    pub refused_again: u64,
    /// The new letters' reasons, with counts.
    pub new_reasons: Vec<(String, i64)>,
}

/// Marks each committed letter with its outcome: `reprocessed`, or
/// `reprocessed: refused again as <id>` when the run stored a letter of
/// the same message (same topic, payload and receipt time, above the
/// plan's watermark).
pub async fn resolve(
    client: &tokio_postgres::Client,
    progress: &Progress,
    watermark: i64,
) -> Result<Outcome, tokio_postgres::Error> {
    let ids: Vec<i64> = progress
        .committed
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    let rows = client
        .query(
            "WITH again AS (
                 SELECT d.id, (SELECT min(n.id) FROM dead_letters n
                                WHERE n.id > $2 AND n.topic = d.topic
                                  AND n.payload = d.payload AND n.received_at = d.received_at) AS new_id
                   FROM dead_letters d WHERE d.id = ANY($1) AND d.resolved_at IS NULL)
             UPDATE dead_letters d
                SET resolved_at = now(),
                    resolution = CASE WHEN again.new_id IS NULL THEN 'reprocessed'
                                      ELSE 'reprocessed: refused again as ' || again.new_id END
               FROM again WHERE d.id = again.id
             RETURNING again.new_id",
            &[&ids, &watermark],
        )
        .await?;
    let new_ids: Vec<i64> = rows.iter().filter_map(|r| r.get(0)).collect();
    let refused_again = new_ids.len() as u64;
    let new_reasons = client
        .query(
            "SELECT reason, count(*) FROM dead_letters WHERE id = ANY($1)
              GROUP BY 1 ORDER BY 2 DESC, 1",
            &[&new_ids],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(Outcome {
        resolved: rows.len() as u64 - refused_again,
        refused_again,
        new_reasons,
    })
}
