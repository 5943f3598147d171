//! Gathering decoded messages into a batch that commits as one transaction.
//! Pure: no clock reads beyond the `Instant` the caller supplies.

use std::collections::BTreeSet;
use std::time::Instant;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use estatemon_domain::event::Event;
use estatemon_domain::Reading;

use crate::dead_letter::DeadLetter;
use crate::decode::Decoded;

/// A device seen for the first time; registered as unassigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    pub device_id: String,
    pub site: Option<String>,
}

/// Everything one transaction stores, and the acknowledgements it releases.
#[derive(Debug)]
pub struct Batch<A> {
    pub readings: Vec<Reading>,
    pub events: Vec<Event>,
    pub dead_letters: Vec<DeadLetter>,
    pub new_devices: Vec<NewDevice>,
    pub acks: Vec<A>,
    pub opened: Option<Instant>,
    /// Readings dropped because the same (device, metric, ts) was already in
    /// this batch.
    pub duplicates_in_batch: usize,
    /// Hour buckets touched, for rollup refresh.
    pub dirty_hours: Vec<DateTime<Utc>>,
    /// Devices that said they went offline (false) or came back (true).
    pub availability: Vec<(String, bool, DateTime<Utc>)>,
    /// The dead letter each reading came from (0: none), while
    /// reprocessing; empty otherwise. In step with `readings`.
    pub origins: Vec<i64>,
    /// The same for `events`.
    pub event_origins: Vec<i64>,
}

impl<A> Default for Batch<A> {
    fn default() -> Self {
        Batch {
            readings: Vec::new(),
            events: Vec::new(),
            dead_letters: Vec::new(),
            new_devices: Vec::new(),
            acks: Vec::new(),
            opened: None,
            duplicates_in_batch: 0,
            dirty_hours: Vec::new(),
            availability: Vec::new(),
            origins: Vec::new(),
            event_origins: Vec::new(),
        }
    }
}

impl<A> Batch<A> {
    pub fn is_empty(&self) -> bool {
        self.acks.is_empty()
            && self.readings.is_empty()
            && self.dead_letters.is_empty()
            && self.availability.is_empty()
    }

    /// Adds one message's results; `ack` is released when the batch commits.
    pub fn push(&mut self, decoded: Decoded, dead_letters: Vec<DeadLetter>, ack: A, now: Instant) {
        self.opened.get_or_insert(now);
        self.readings.extend(decoded.readings);
        self.events.extend(decoded.events);
        self.dead_letters.extend(dead_letters);
        self.acks.push(ack);
    }

    /// [`Batch::push`] of a message read back from dead letter `origin`
    /// (reprocessing): a row of it the database refuses is traced to it.
    pub fn push_from(
        &mut self,
        origin: Option<i64>,
        decoded: Decoded,
        dead_letters: Vec<DeadLetter>,
        ack: A,
        now: Instant,
    ) {
        if origin.is_some() || !self.origins.is_empty() || !self.event_origins.is_empty() {
            let id = origin.unwrap_or(0);
            self.origins.resize(self.readings.len(), 0);
            self.origins
                .resize(self.readings.len() + decoded.readings.len(), id);
            self.event_origins.resize(self.events.len(), 0);
            self.event_origins
                .resize(self.events.len() + decoded.events.len(), id);
        }
        self.push(decoded, dead_letters, ack, now);
    }

    /// The dead letter reading `i` came from, while reprocessing.
    pub fn origin(&self, i: usize) -> Option<i64> {
        self.origins.get(i).copied().filter(|&id| id > 0)
    }

    /// The dead letter event `i` came from, while reprocessing.
    pub fn event_origin(&self, i: usize) -> Option<i64> {
        self.event_origins.get(i).copied().filter(|&id| id > 0)
    }

    /// Sorts readings by key (COPY into the primary-key index is then
    /// sequential), folds duplicates and computes the dirty hours.
    pub fn seal(&mut self) {
        let before = self.readings.len();
        sort_fold(
            &mut self.readings,
            &mut self.origins,
            |a, b| {
                (a.device_id.as_str(), a.metric, a.ts).cmp(&(b.device_id.as_str(), b.metric, b.ts))
            },
            |a, b| a.device_id == b.device_id && a.metric == b.metric && a.ts == b.ts,
        );
        self.duplicates_in_batch = before - self.readings.len();
        sort_fold(
            &mut self.events,
            &mut self.event_origins,
            |a, b| (a.device_id.as_str(), a.ts).cmp(&(b.device_id.as_str(), b.ts)),
            |a, b| {
                a.device_id == b.device_id
                    && a.ts == b.ts
                    && a.detail.event_type() == b.detail.event_type()
                    && a.detail.discriminator() == b.detail.discriminator()
            },
        );
        let hours: BTreeSet<DateTime<Utc>> = self
            .readings
            .iter()
            .filter_map(|r| r.ts.duration_trunc(TimeDelta::hours(1)).ok())
            .collect();
        self.dirty_hours = hours.into_iter().collect();
    }
}

/// Sorts `items` (stable: the first of equals is the earliest) and folds
/// each run that `same` calls equal into its first; `origins`, empty or one
/// per item (items pushed after the last origin count as 0), stays in step.
/// While reprocessing, copies from different letters are not folded: each
/// goes to the database (which stores one), so a copy it refuses is traced
/// to every letter that held it, not to the first alone.
fn sort_fold<T>(
    items: &mut Vec<T>,
    origins: &mut Vec<i64>,
    cmp: impl Fn(&T, &T) -> std::cmp::Ordering,
    same: impl Fn(&T, &T) -> bool,
) {
    if origins.is_empty() {
        items.sort_by(&cmp);
        items.dedup_by(|b, a| same(a, b));
        return;
    }
    origins.resize(items.len(), 0);
    let mut pairs: Vec<(T, i64)> = std::mem::take(items)
        .into_iter()
        .zip(std::mem::take(origins))
        .collect();
    pairs.sort_by(|a, b| cmp(&a.0, &b.0).then(a.1.cmp(&b.1)));
    pairs.dedup_by(|b, a| a.1 == b.1 && same(&a.0, &b.0));
    (*items, *origins) = pairs.into_iter().unzip();
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike};
    use estatemon_domain::Metric;

    fn r(device: &str, minute: u32, value: f64) -> Reading {
        Reading {
            device_id: device.into(),
            metric: Metric::EnergyKwh,
            ts: Utc.with_ymd_and_hms(2026, 1, 1, 10, minute, 0).unwrap(),
            value,
        }
    }

    #[test]
    fn origins_follow_their_readings_through_sorting_and_folding() {
        let mut b: Batch<u32> = Batch::default();
        let now = Instant::now();
        let of = |readings| Decoded {
            readings,
            ..Default::default()
        };
        b.push_from(
            Some(7),
            of(vec![r("b", 5, 1.0), r("a", 5, 1.0)]),
            vec![],
            1,
            now,
        );
        // A message not read back from a letter, between two that were.
        b.push(of(vec![r("c", 1, 3.0)]), vec![], 2, now);
        b.push_from(
            Some(9),
            of(vec![r("a", 5, 1.0), r("a", 59, 2.0), r("a", 59, 2.5)]),
            vec![],
            3,
            now,
        );
        b.seal();
        let got: Vec<_> = (0..b.readings.len())
            .map(|i| {
                (
                    b.readings[i].device_id.as_str(),
                    b.readings[i].ts.minute(),
                    b.origin(i),
                )
            })
            .collect();
        // a:59 twice in letter 9 folds into its first (2.0); a:05 from
        // letters 7 and 9 stays twice, so a refusal of it names both.
        assert_eq!(
            got,
            [
                ("a", 5, Some(7)),
                ("a", 5, Some(9)),
                ("a", 59, Some(9)),
                ("b", 5, Some(7)),
                ("c", 1, None)
            ]
        );
        assert_eq!(b.readings[2].value, 2.0);
        assert_eq!(b.duplicates_in_batch, 1);
        // Without letters, nothing is kept.
        let mut plain: Batch<u32> = Batch::default();
        plain.push(of(vec![r("a", 1, 1.0)]), vec![], 1, now);
        plain.seal();
        assert!(plain.origins.is_empty() && plain.origin(0).is_none());
    }

    #[test]
    fn seal_sorts_folds_duplicates_and_marks_hours() {
        let mut b: Batch<u32> = Batch::default();
        let now = Instant::now();
        b.push(
            Decoded {
                readings: vec![r("b", 5, 1.0), r("a", 5, 1.0)],
                ..Default::default()
            },
            vec![],
            1,
            now,
        );
        b.push(
            Decoded {
                readings: vec![r("a", 5, 1.0), r("a", 59, 2.0)],
                ..Default::default()
            },
            vec![],
            2,
            now,
        );
        b.seal();
        assert_eq!(b.readings.len(), 3);
        assert_eq!(b.duplicates_in_batch, 1);
        assert_eq!(b.readings[0].device_id, "a");
        assert_eq!(b.dirty_hours.len(), 1);
        assert_eq!(b.acks, vec![1, 2]);
    }
}
