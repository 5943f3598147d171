//! One chunk of history in memory, and each step's window cut from it.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use estatemon_domain::rules::{Condition, DeviceLabels, RuleSet};
use polars::prelude::*;
use tokio_postgres::Client;

use super::Changes;
use crate::evaluate;
use crate::window::{self, after_second, Devices, EventRow, Lookback, Registers, Window};

/// One chunk of history in memory: the steps from its start to its end
/// read their windows from here.
pub(super) struct Chunk {
    /// Every reading from the first step's lookback to the last step, in
    /// time order, as the window's frame holds them.
    pub(super) frame: DataFrame,
    /// The frame's `ts` (whole seconds), for cutting it per step.
    pub(super) seconds: Vec<i64>,
    /// Register series of the consumption rules over the chunk.
    registers: Registers,
    /// Every register reading's time, sorted: a step sees new registers
    /// when one falls after the previous step.
    register_times: Vec<DateTime<Utc>>,
    /// Events of the rules' types, in time order.
    pub(super) events: Vec<EventRow>,
    /// Per rule (by its place in the set), the events that can count for
    /// it, by type with that type's lookback: places in `events`. An event
    /// rule's are its matching events of selected devices, and for fault
    /// rules every event with a state (back in service); a denied-swipes
    /// rule's, the denied swipes at its gates.
    relevant: Vec<Vec<(Duration, Vec<usize>)>>,
    /// Each stale-rule device's readings over the chunk, and its last
    /// reading before the chunk (within 30 days).
    device_times: HashMap<String, Vec<DateTime<Utc>>>,
    before_chunk: HashMap<String, DateTime<Utc>>,
    /// The previous step's time, frame rows, local midnights and register
    /// version.
    previous: Option<DateTime<Utc>>,
    frame_key: Option<(usize, usize)>,
    midnights: Vec<DateTime<Utc>>,
    register_version: u64,
}

impl Chunk {
    /// The events rule `i` reads at `now`: where they are in each of its
    /// lists (the key of its cache), and the events, in the order the
    /// database gave them (as the live window lists them).
    pub(super) fn events_for(
        &self,
        i: usize,
        now: DateTime<Utc>,
    ) -> (Vec<(usize, usize)>, Vec<&EventRow>) {
        let events = &self.events;
        let key: Vec<(usize, usize)> = self.relevant[i]
            .iter()
            .map(|(d, places)| {
                (
                    places.partition_point(|j| events[*j].ts <= now - *d),
                    places.partition_point(|j| events[*j].ts <= now),
                )
            })
            .collect();
        let mut places: Vec<usize> = self.relevant[i]
            .iter()
            .zip(&key)
            .flat_map(|((_, p), (lo, hi))| p[*lo..*hi].iter().copied())
            .collect();
        if self.relevant[i].len() > 1 {
            places.sort_unstable();
        }
        (key, places.into_iter().map(|j| &events[j]).collect())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn load(
        client: &Client,
        rules: &RuleSet,
        selected: &[Vec<&DeviceLabels>],
        ledger: &Devices,
        lookback: &Lookback,
        scope: &window::Scope,
        stale_ids: &[String],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> anyhow::Result<Chunk> {
        let since = start - lookback.readings;
        // As the live window selects them (whole seconds), all at once.
        let rows = client
            .query(
                "SELECT device_id, metric, ts, value FROM readings
                  WHERE ts >= $1 AND ts < $2 ORDER BY ts",
                &[&after_second(since), &after_second(end)],
            )
            .await?;
        let stale: HashSet<&str> = stale_ids.iter().map(String::as_str).collect();
        let mut device_times: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
        for r in &rows {
            let d: &str = r.get(0);
            if stale.contains(d) {
                device_times.entry(d.to_owned()).or_default().push(r.get(2));
            }
        }
        let frame = window::readings_frame(
            ledger,
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))),
        )?;
        drop(rows);
        let seconds: Vec<i64> = frame.column("ts")?.i64()?.into_no_null_iter().collect();
        // The last reading before the chunk, for devices silent through a
        // step's whole frame.
        let mut before_chunk = HashMap::new();
        if !stale_ids.is_empty() {
            for r in client
                .query(
                    "SELECT d.id, (SELECT max(r.ts) FROM readings r
                                    WHERE r.device_id = d.id AND r.ts < $2
                                      AND r.ts > $2 - interval '30 days')
                       FROM unnest($1::text[]) AS d(id)",
                    &[&stale_ids, &after_second(since)],
                )
                .await?
            {
                if let Some(t) = r.get::<_, Option<DateTime<Utc>>>(1) {
                    before_chunk.insert(r.get::<_, String>(0), t);
                }
            }
        }
        let mut registers = Registers::new();
        window::fetch_registers(
            client,
            scope,
            start - Duration::hours(26),
            end,
            &mut registers,
        )
        .await?;
        let mut register_times: Vec<DateTime<Utc>> = registers
            .values()
            .flat_map(|s| s.iter().map(|(t, _)| *t))
            .collect();
        register_times.sort_unstable();
        let events = window::fetch_events_for(client, lookback, None, start, end).await?;
        let relevant = rules
            .rules
            .iter()
            .zip(selected)
            .map(|(rule, selected)| {
                let ids: HashSet<&str> = selected.iter().map(|d| d.id.as_str()).collect();
                // A state counts (back in service) only after a matching
                // event of its device: devices without one need none.
                let faulted: HashSet<&str> = match &rule.condition {
                    Condition::Event(r)
                        if r.event_type.0 == estatemon_domain::event::EventType::Fault =>
                    {
                        events
                            .iter()
                            .filter(|e| evaluate::event_matches(r, e))
                            .map(|e| e.device.as_str())
                            .collect()
                    }
                    _ => HashSet::new(),
                };
                let counts = |e: &EventRow| {
                    ids.contains(e.device.as_str())
                        && match &rule.condition {
                            Condition::Event(r) => {
                                evaluate::event_matches(r, e)
                                    || (e.state.is_some() && faulted.contains(e.device.as_str()))
                            }
                            Condition::Denied(_) => {
                                e.event_type == "access" && e.result.as_deref() == Some("denied")
                            }
                            _ => false,
                        }
                };
                let mut by_type: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
                for (j, e) in events.iter().enumerate().filter(|(_, e)| counts(e)) {
                    by_type.entry(e.event_type.as_str()).or_default().push(j);
                }
                by_type
                    .into_iter()
                    .filter_map(|(t, places)| lookback.events.get(t).map(|d| (*d, places)))
                    .collect()
            })
            .collect();
        Ok(Chunk {
            frame,
            seconds,
            registers,
            register_times,
            events,
            relevant,
            device_times,
            before_chunk,
            previous: None,
            frame_key: None,
            midnights: Vec::new(),
            register_version: 0,
        })
    }

    /// Brings `w` to `now`: the frame, the registers, the events and the
    /// stale devices' last readings the live window would read at `now`.
    pub(super) fn step(
        &mut self,
        w: &mut Window,
        ledger: &Devices,
        lookback: &Lookback,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Changes> {
        w.now = now;
        let since = now - lookback.readings;
        w.readings_since = since;
        // Readings: whole seconds in (since, now].
        let lo = self.seconds.partition_point(|s| *s <= since.timestamp());
        let hi = self.seconds.partition_point(|s| *s <= now.timestamp());
        if self.frame_key != Some((lo, hi)) {
            w.readings = self.frame.slice(lo as i64, hi - lo);
            self.frame_key = Some((lo, hi));
        }
        // Registers: since each site's local midnight (less half an hour),
        // rebuilt when one arrived or a midnight passed.
        let midnights: Vec<DateTime<Utc>> = std::iter::once(ledger.local_midnight("", now))
            .chain(ledger.zones.values().map(|tz| {
                let date = now.with_timezone(tz).date_naive();
                date.and_hms_opt(0, 0, 0)
                    .and_then(|t| t.and_local_timezone(*tz).earliest())
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or(now)
            }))
            .collect();
        let arrived = match self.previous {
            None => true,
            Some(p) => {
                let i = self.register_times.partition_point(|t| *t <= p);
                self.register_times.get(i).is_some_and(|t| *t <= now)
            }
        };
        if arrived || midnights != self.midnights {
            w.registers.clear();
            for (key, series) in &self.registers {
                let midnight = ledger.local_midnight(&key.0, now);
                let lo = series.partition_point(|(t, _)| *t + Duration::minutes(30) < midnight);
                let hi = series.partition_point(|(t, _)| *t <= now);
                if lo < hi {
                    w.registers.insert(key.clone(), series[lo..hi].to_vec());
                }
            }
            self.midnights = midnights;
            self.register_version += 1;
        }
        // Stale devices' last reading before the frame, within 30 days,
        // for those with none in the frame (as the live window reads it).
        let bound = after_second(since);
        let end = after_second(now);
        w.last_seen_before.clear();
        for (id, times) in &self.device_times {
            let i = times.partition_point(|t| *t < bound);
            if times.get(i).is_some_and(|t| *t < end) {
                continue;
            }
            if let Some(t) = i.checked_sub(1).map(|i| times[i]) {
                if t > bound - Duration::days(30) {
                    w.last_seen_before.insert(id.clone(), t);
                }
                continue;
            }
            if let Some(t) = self
                .before_chunk
                .get(id)
                .filter(|t| **t > bound - Duration::days(30))
            {
                w.last_seen_before.insert(id.clone(), *t);
            }
        }
        for (id, t) in &self.before_chunk {
            if !self.device_times.contains_key(id) && *t > bound - Duration::days(30) {
                w.last_seen_before.insert(id.clone(), *t);
            }
        }
        self.previous = Some(now);
        Ok(Changes {
            frame: (lo, hi),
            registers: self.register_version,
        })
    }
}
