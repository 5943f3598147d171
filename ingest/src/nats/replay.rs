//! Replay: what the stream kept for a time range, ingested again
//! (`estatemon transport replay`). After a database restore, a mapping
//! fixed for messages that went to dead letters, or an ingestor's outage
//! longer than anyone noticed, the stream (limits retention, `max_age_h`)
//! still holds the messages.
//!
//! A replay reads through an ephemeral consumer of its own, from the first
//! message published at or after `from` (the servers' clock), up to what
//! the stream held when the replay began, or to the first message
//! published after `to`. The shared durable consumer of the live
//! ingestors is not touched. Messages go through the same pipeline
//! (decode, mappings, dead letters, COPY with the `(device, metric, ts)`
//! key), so what is stored already stays as it is and is counted as a
//! duplicate. Immediate alerts are not raised again: an entrapment
//! replayed from last week is history, not a page; the alert job sees the
//! stored events as it sees any.
//!
//! MQTT messages reach the stream as the gateway's copies. A copy the
//! server dropped while the stream had no leader or was full (the reason
//! ingest reads QoS 1 messages from the gateway's store) is not there to
//! replay.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::consumer;
use chrono::{DateTime, Utc};

/// The range to replay.
#[derive(Debug, Clone)]
pub struct Window {
    /// Published at or after (the servers' clock).
    pub from: DateTime<Utc>,
    /// Published at or before; `None`: up to what the stream holds now.
    pub to: Option<DateTime<Utc>>,
    /// Subject filters (NATS form); empty: the stream's subjects.
    pub subjects: Vec<String>,
}

/// How far a replay has come.
#[derive(Debug, Default)]
pub struct Progress {
    /// The replay's consumer exists; `pending` is known.
    pub started: AtomicBool,
    /// Messages in range the stream held when the consumer was made.
    pub pending: AtomicU64,
    /// The stream's last sequence then: the end of the replay (what comes
    /// later is live traffic the live ingestors read).
    pub end_sequence: AtomicU64,
    /// Messages handed to the pipeline (first deliveries).
    pub forwarded: AtomicU64,
    /// Read to the end of the range.
    pub finished: AtomicBool,
    /// Why it stopped early.
    pub error: Mutex<Option<String>>,
}

impl Progress {
    pub fn fail(&self, why: String) {
        if let Ok(mut e) = self.error.lock() {
            e.get_or_insert(why);
        }
        self.finished.store(true, Ordering::Release);
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    /// Whether the message at `sequence`, published at `published_ms`,
    /// is past the range (not to be read).
    pub(crate) fn past(&self, window: &Window, sequence: u64, published_ms: i64) -> bool {
        sequence > self.end_sequence.load(Ordering::Acquire)
            || window
                .to
                .is_some_and(|to| published_ms > to.timestamp_millis())
    }

    /// Whether the message at `sequence` is the range's last.
    pub(crate) fn at_end(&self, sequence: u64) -> bool {
        sequence >= self.end_sequence.load(Ordering::Acquire)
    }

    pub(crate) fn finish(&self) {
        self.finished.store(true, Ordering::Release);
    }
}

/// The replay's consumer: ephemeral (the server removes it a minute after
/// the replay stops reading), from `window.from`, acknowledged after
/// commit like the live one.
pub fn consumer_config(
    config: &estatemon_domain::config::NatsConfig,
    window: &Window,
) -> consumer::pull::Config {
    let mut c = super::setup::consumer_config(config);
    c.durable_name = None;
    c.name = Some(format!(
        "{}-replay-{}-{}",
        config.consumer,
        std::process::id(),
        Utc::now().timestamp_millis()
    ));
    c.description = Some(format!(
        "estatemon transport replay from {}",
        window.from.to_rfc3339()
    ));
    c.deliver_policy = consumer::DeliverPolicy::ByStartTime {
        start_time: async_nats::datetime::from_nanos(
            window.from.timestamp_nanos_opt().unwrap_or(0) as i128,
        )
        .unwrap_or_else(|_| async_nats::datetime::now()),
    };
    c.inactive_threshold = Duration::from_secs(60);
    // No subjects named: the whole stream, as the live consumer reads
    // it, with no filter (several filters cost nats-server a walk over
    // every subject in the stream per message; see `gateway_consumer`).
    match window.subjects.as_slice() {
        [] => {}
        [one] => c.filter_subject = one.clone(),
        several => c.filter_subjects = several.to_vec(),
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn a_replay_ends_at_the_streams_last_sequence_or_past_to() {
        let p = Progress::default();
        p.end_sequence.store(100, Ordering::Release);
        let open = Window {
            from: at(0),
            to: None,
            subjects: vec![],
        };
        assert!(!p.past(&open, 100, i64::MAX), "the last message is read");
        assert!(p.at_end(100));
        assert!(!p.at_end(99));
        assert!(p.past(&open, 101, 0), "live traffic after the start is not");
        let closed = Window {
            to: Some(at(5_000)),
            ..open
        };
        assert!(!p.past(&closed, 50, 5_000), "published at --to is in range");
        assert!(p.past(&closed, 50, 5_001));
    }

    #[test]
    fn the_replay_consumer_is_ephemeral_and_starts_at_from() {
        let config = estatemon_domain::config::NatsConfig::default();
        let w = Window {
            from: at(1_700_000_000_000),
            to: None,
            subjects: vec![],
        };
        let c = consumer_config(&config, &w);
        assert!(c.durable_name.is_none());
        assert!(
            c.filter_subjects.is_empty() && c.filter_subject.is_empty(),
            "the whole stream, unfiltered"
        );
        match c.deliver_policy {
            consumer::DeliverPolicy::ByStartTime { start_time } => {
                assert_eq!(start_time.unix_timestamp(), 1_700_000_000)
            }
            other => panic!("{other:?}"),
        }
        let one = Window {
            subjects: vec!["a.x.>".into()],
            ..w
        };
        assert_eq!(consumer_config(&config, &one).filter_subject, "a.x.>");
        let two = Window {
            subjects: vec!["a.x.>".into(), "b.y.>".into()],
            ..w
        };
        assert_eq!(consumer_config(&config, &two).filter_subjects.len(), 2);
    }
}
