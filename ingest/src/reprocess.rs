//! Dead letters through ingest again (`estatemon dead-letters reprocess`).
//!
//! Once a mapping, a profile, a unit or a limit is fixed, the messages it
//! refused are read back from `dead_letters` and handed to the same
//! pipeline as live ones, on an ingestor of their own with no broker
//! ([`crate::Ingestor::start_reprocess`]). As for a replay, they raise no
//! immediate alerts (they are history) and do not mark their devices as
//! heard from now; they keep the time they were first received.
//!
//! A message refused for several reasons has a letter per reason (same
//! topic, payload and receipt): it is read once ([`Plan::messages`]).
//! Each letter's outcome is written back once its message is committed
//! ([`resolve`]): `reprocessed: refused again as <id>` when ingest refused
//! the message again for the same reason (the new letter holds today's
//! detail and is the open one); `reprocessed in part: a row refused by the
//! database as <id>` when the database (or the inspection ledger) refused
//! rows of it (each such letter names the letter it came from); else
//! `reprocessed`. A letter is reprocessed once: only open letters
//! (`resolved_at IS NULL`) are selected.
//!
//! Left alone, each for a reason the plan counts (`Plan::skipped`):
//! - Sparkplug topics: a host reads a node's data through its births, on
//!   the node's session; a letter alone cannot be read.
//! - Home Assistant discovery configs, and letters of the mappings they
//!   made: read with the configs the live ingestor holds.
//! - Payloads that held a `"credential"`: it was pseudonymised when the
//!   letter was stored, and the card number is not kept.
//! - `storage_rejected` and `inspection_refused`: the letter holds a row,
//!   not the message.
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

/// What a selection holds: the messages to reprocess, and those it leaves.
///
/// A message ingest refused for several reasons has one letter per reason
/// (same topic, payload and receipt): it is read once, and all its open
/// letters are resolved together, whatever `--reason` picked it.
#[derive(Debug, Default)]
pub struct Plan {
    /// Each message's open letters, in order (the first one is read).
    pub messages: Vec<Vec<i64>>,
    /// Per reason, letters to reprocess.
    pub by_reason: Vec<(String, u64)>,
    /// Letters of the selection left alone, per why.
    pub skipped: Vec<(String, u64)>,
    /// The highest id when the plan was made: letters above it are new.
    pub watermark: i64,
}

impl Plan {
    pub fn letters(&self) -> usize {
        self.messages.iter().map(Vec::len).sum()
    }
}

const SPARKPLUG_SKIP: &str =
    "Sparkplug: a host reads a node's data through its births, not a letter alone";
const CREDENTIAL_SKIP: &str =
    "held a credential, pseudonymised when stored; the card number is not kept";
const NO_MESSAGE_SKIP: &str =
    "not a message: a row the database or the inspection ledger refused (its letter holds the row)";
const DISCOVERY_SKIP: &str =
    "Home Assistant discovery: read with the configs the live ingestor holds, not a letter alone";

/// Reads which open letters `selection` covers, grouped by message.
pub async fn plan(
    client: &tokio_postgres::Client,
    selection: &Selection,
    discovery_prefix: Option<&str>,
) -> Result<Plan, tokio_postgres::Error> {
    let watermark: i64 = client
        .query_one("SELECT coalesce(max(id), 0) FROM dead_letters", &[])
        .await?
        .get(0);
    // Every open letter in the time range: a message's letters of other
    // reasons go with it.
    let rows = client
        .query(
            "SELECT id, topic, reason, position('\"credential\"'::bytea IN payload) > 0,
                    md5(payload), received_at, position('mapping `homeassistant:' IN detail) > 0
               FROM dead_letters
              WHERE resolved_at IS NULL AND id <= $1
                AND ($2::timestamptz IS NULL OR received_at >= $2)
                AND ($3::timestamptz IS NULL OR received_at < $3)
              ORDER BY id",
            &[&watermark, &selection.from, &selection.to],
        )
        .await?;
    struct Message {
        topic: String,
        letters: Vec<(i64, String)>,
        credential: bool,
        discovered: bool,
    }
    let mut messages: Vec<Message> = Vec::new();
    let mut index = std::collections::HashMap::<(String, String, DateTime<Utc>), usize>::new();
    for r in rows {
        let (id, topic, reason, credential, md5, received_at, discovered): (
            i64,
            String,
            String,
            bool,
            String,
            DateTime<Utc>,
            bool,
        ) = (
            r.get(0),
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
            r.get(6),
        );
        let i = *index
            .entry((topic.clone(), md5, received_at))
            .or_insert_with(|| {
                messages.push(Message {
                    topic,
                    letters: Vec::new(),
                    credential: false,
                    discovered: false,
                });
                messages.len() - 1
            });
        let m = &mut messages[i];
        m.letters.push((id, reason));
        m.credential |= credential;
        m.discovered |= discovered;
    }
    let mut plan = Plan {
        watermark,
        ..Plan::default()
    };
    let mut by_reason = std::collections::BTreeMap::<String, u64>::new();
    let mut skipped = std::collections::BTreeMap::<String, u64>::new();
    let sparkplug = format!("{}/", estatemon_domain::sparkplug::NAMESPACE);
    let discovery = discovery_prefix.map(|p| format!("{p}/"));
    for m in messages {
        if !selection.reasons.is_empty()
            && !m.letters.iter().any(|(_, r)| selection.reasons.contains(r))
        {
            continue;
        }
        if let Some(filter) = &selection.topic {
            if !estatemon_domain::mapping::topic::filter_matches(filter, &m.topic) {
                continue;
            }
        }
        let skip = if m.topic.is_empty()
            || m.letters
                .iter()
                .any(|(_, r)| r == "storage_rejected" || r == "inspection_refused")
        {
            Some(NO_MESSAGE_SKIP.to_owned())
        } else if m.topic.starts_with(&sparkplug) {
            Some(SPARKPLUG_SKIP.to_owned())
        } else if m.credential {
            Some(CREDENTIAL_SKIP.to_owned())
        } else if m.discovered || discovery.as_deref().is_some_and(|d| m.topic.starts_with(d)) {
            Some(DISCOVERY_SKIP.to_owned())
        } else {
            m.letters.iter().find_map(|(_, reason)| {
                NOT_REPROCESSED
                    .iter()
                    .find(|(r, _)| r == reason)
                    .map(|(r, why)| format!("{r}: {why}"))
            })
        };
        match skip {
            Some(why) => *skipped.entry(why).or_default() += m.letters.len() as u64,
            None => {
                for (_, reason) in &m.letters {
                    *by_reason.entry(reason.clone()).or_default() += 1;
                }
                plan.messages
                    .push(m.letters.iter().map(|(id, _)| *id).collect());
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
    /// Messages handed to the pipeline.
    pub forwarded: AtomicU64,
    /// The ids of their first letters, once the batch that held each
    /// committed.
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

/// Reads the letters `ids` names (each message's first, in pages) and
/// hands them to the pipeline, holding back while the payload budget is
/// spent.
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
                if !budget.wait_for_room(&mut shutdown).await {
                    return progress.fail("interrupted".into());
                }
            }
            if *shutdown.borrow() {
                return progress.fail("interrupted".into());
            }
            let (id, topic, payload, received_at): (i64, String, Vec<u8>, DateTime<Utc>) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            let cost_kib = budget.charge(payload.len(), &metrics);
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
    /// Letters whose reason ingest no longer gives.
    pub resolved: u64,
    /// Letters refused again for the same reason: each has a new open letter.
    pub refused_again: u64,
    /// Letters whose message was stored but for rows the database (or the
    /// inspection ledger) refused: each row is a new open letter naming
    /// the letter it came from.
    pub in_part: u64,
    /// The reasons of the letters the run made, with counts.
    pub new_reasons: Vec<(String, i64)>,
}

/// Marks the letters of each committed message with their outcome:
/// `reprocessed: refused again as <id>` when the run stored a letter of the
/// same message for the same reason (same topic, payload and receipt time,
/// above the plan's watermark); `reprocessed in part: a row refused by the
/// database as <id>` when rows of it were refused at storage; else
/// `reprocessed`.
pub async fn resolve(
    client: &tokio_postgres::Client,
    progress: &Progress,
    plan: &Plan,
) -> Result<Outcome, tokio_postgres::Error> {
    let watermark = plan.watermark;
    let committed: std::collections::HashSet<i64> = progress
        .committed
        .lock()
        .map(|c| c.iter().copied().collect())
        .unwrap_or_default();
    let (ids, firsts): (Vec<i64>, Vec<i64>) = plan
        .messages
        .iter()
        .filter(|m| m.first().is_some_and(|first| committed.contains(first)))
        .flat_map(|m| m.iter().map(|id| (*id, m[0])))
        .unzip();
    // A row of the message the database (or the inspection ledger)
    // refused is a new letter whose detail names the letter that was read
    // (`store::traced`). It takes that letter's topic and receipt, so the
    // loss counts where and when the message was (the quarterly report
    // reads open letters by topic and time).
    client
        .execute(
            r"UPDATE dead_letters n SET topic = d.topic, received_at = d.received_at
                FROM dead_letters d
               WHERE n.id > $1 AND n.topic = ''
                 AND n.reason IN ('storage_rejected', 'inspection_refused')
                 AND n.detail ~ $2::text
                 AND d.id = substring(n.detail FROM $2::text)::bigint",
            &[&watermark, &crate::store::TRACED],
        )
        .await?;
    let rows = client
        .query(
            r"WITH m AS (SELECT * FROM unnest($1::bigint[], $3::bigint[]) AS m(id, first)),
             part AS (
                 SELECT substring(n.detail FROM $4::text)::bigint AS first,
                        min(n.id) AS new_id
                   FROM dead_letters n
                  WHERE n.id > $2 AND n.reason IN ('storage_rejected', 'inspection_refused')
                    AND n.detail ~ $4::text
                  GROUP BY 1),
             again AS (
                 SELECT d.id, part.new_id AS part_id,
                        (SELECT min(n.id) FROM dead_letters n
                          WHERE n.id > $2 AND n.topic = d.topic AND n.reason = d.reason
                            AND n.received_at = d.received_at
                            AND md5(n.payload) = md5(d.payload) AND n.payload = d.payload) AS new_id
                   FROM dead_letters d JOIN m ON m.id = d.id
                   LEFT JOIN part ON part.first = m.first
                  WHERE d.resolved_at IS NULL)
             UPDATE dead_letters d
                SET resolved_at = now(),
                    resolution = CASE
                        WHEN again.new_id IS NOT NULL THEN 'reprocessed: refused again as ' || again.new_id
                        WHEN again.part_id IS NOT NULL
                            THEN 'reprocessed in part: a row refused by the database as ' || again.part_id
                        ELSE 'reprocessed' END
               FROM again WHERE d.id = again.id
             RETURNING again.new_id, again.part_id",
            &[&ids, &watermark, &firsts, &crate::store::TRACED],
        )
        .await?;
    let refused_again = rows
        .iter()
        .filter(|r| r.get::<_, Option<i64>>(0).is_some())
        .count() as u64;
    let in_part = rows
        .iter()
        .filter(|r| r.get::<_, Option<i64>>(0).is_none() && r.get::<_, Option<i64>>(1).is_some())
        .count() as u64;
    let new_reasons = client
        .query(
            r"SELECT n.reason, count(*) FROM dead_letters n
              WHERE n.id > $2 AND (EXISTS (
                    SELECT 1 FROM dead_letters d
                     WHERE d.id = ANY($1) AND d.topic = n.topic AND d.received_at = n.received_at
                       AND md5(d.payload) = md5(n.payload) AND d.payload = n.payload)
                 OR substring(n.detail FROM $4::text)::bigint = ANY($3))
              GROUP BY 1 ORDER BY 2 DESC, 1",
            &[&ids, &watermark, &firsts, &crate::store::TRACED],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(Outcome {
        resolved: rows.len() as u64 - refused_again - in_part,
        refused_again,
        in_part,
        new_reasons,
    })
}
