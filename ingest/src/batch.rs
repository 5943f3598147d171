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

    /// Sorts readings by key (COPY into the primary-key index is then
    /// sequential), folds duplicates and computes the dirty hours.
    pub fn seal(&mut self) {
        self.readings.sort_unstable_by(|a, b| {
            (a.device_id.as_str(), a.metric, a.ts).cmp(&(b.device_id.as_str(), b.metric, b.ts))
        });
        let before = self.readings.len();
        self.readings
            .dedup_by(|b, a| a.device_id == b.device_id && a.metric == b.metric && a.ts == b.ts);
        self.duplicates_in_batch = before - self.readings.len();
        self.events
            .sort_by(|a, b| (a.device_id.as_str(), a.ts).cmp(&(b.device_id.as_str(), b.ts)));
        self.events.dedup_by(|b, a| {
            a.device_id == b.device_id
                && a.ts == b.ts
                && a.detail.event_type() == b.detail.event_type()
                && a.detail.discriminator() == b.detail.discriminator()
        });
        let hours: BTreeSet<DateTime<Utc>> = self
            .readings
            .iter()
            .filter_map(|r| r.ts.duration_trunc(TimeDelta::hours(1)).ok())
            .collect();
        self.dirty_hours = hours.into_iter().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
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
