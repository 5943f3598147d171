//! Delivery faults: what happens between a device and the broker. Messages
//! published twice, messages held back and published after later ones, and
//! malformed messages (each with the dead-letter reason estatemon should
//! give it). Applied only on the MQTT path; counted in the ground truth.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use estatemon_domain::config::TopicsConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::{Message, SiteModel};
use crate::scenario::{DeliveryFaults, Fault, FaultKind};
use crate::truth::DeliveryTruth;

/// Late messages are published this many steps after their own.
const LATE_BY_STEPS: u64 = 3;

pub(crate) fn is_delivery(kind: FaultKind) -> bool {
    matches!(
        kind,
        FaultKind::Duplicate | FaultKind::OutOfOrder | FaultKind::Malformed
    )
}

pub struct Delivery {
    rng: ChaCha8Rng,
    rates: DeliveryFaults,
    faults: Vec<Fault>,
    devices: Vec<String>,
    site: String,
    topics: TopicsConfig,
    held: VecDeque<(u64, Message)>,
    step: u64,
    truth: DeliveryTruth,
}

impl Delivery {
    pub fn new(model: &SiteModel, topics: &TopicsConfig) -> Delivery {
        let scenario = model.scenario();
        Delivery {
            rng: ChaCha8Rng::seed_from_u64(crate::model::mix(model.seed() ^ 0xde11_4e11)),
            rates: scenario.delivery.clone(),
            faults: scenario
                .faults
                .iter()
                .filter(|f| is_delivery(f.kind))
                .cloned()
                .collect(),
            devices: model.device_ids().iter().map(|s| s.to_string()).collect(),
            site: model.site().id.clone(),
            topics: topics.clone(),
            held: VecDeque::new(),
            step: 0,
            truth: DeliveryTruth {
                applied: true,
                ..DeliveryTruth::default()
            },
        }
    }

    fn active(&self, kind: FaultKind, device: &str, t: DateTime<Utc>) -> bool {
        self.faults
            .iter()
            .any(|f| f.kind == kind && f.device == device && f.active(t))
    }

    /// The messages of the step ending at `t` as they reach the broker.
    pub fn apply(
        &mut self,
        t: DateTime<Utc>,
        dt: Duration,
        messages: Vec<Message>,
    ) -> Vec<Message> {
        self.step += 1;
        let mut out = Vec::with_capacity(messages.len() + 1);
        for m in messages {
            if m.ordered {
                out.push(m);
                continue;
            }
            let late = self.active(FaultKind::OutOfOrder, &m.device, t)
                || (self.rates.late_share > 0.0 && self.rng.random_bool(self.rates.late_share));
            if late {
                self.truth.late += 1;
                self.held.push_back((self.step + LATE_BY_STEPS, m));
                continue;
            }
            let twice = self.active(FaultKind::Duplicate, &m.device, t)
                || (self.rates.duplicate_share > 0.0
                    && self.rng.random_bool(self.rates.duplicate_share));
            if twice {
                self.truth.duplicates += 1;
                out.push(m.clone());
            }
            out.push(m);
        }
        // Malformed messages: the configured ones, and the background rate.
        let within = |x: DateTime<Utc>| x > t - dt && x <= t;
        let mut bad: Vec<String> = self
            .faults
            .iter()
            .filter(|f| f.kind == FaultKind::Malformed && within(f.start))
            .map(|f| f.device.clone())
            .collect();
        let mean = self.rates.malformed_per_day * dt.num_seconds() as f64 / 86_400.0;
        if mean > 0.0 && !self.devices.is_empty() {
            let whole = mean.floor() as usize + usize::from(self.rng.random_bool(mean.fract()));
            for _ in 0..whole {
                bad.push(self.devices[self.rng.random_range(0..self.devices.len())].clone());
            }
        }
        for device in bad {
            let variant = self.rng.random_range(0..MALFORMED.len());
            let (reason, payload) = MALFORMED[variant];
            let payload = payload.replace(
                "{ts}",
                &t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            );
            *self.truth.malformed.entry(reason.to_owned()).or_default() += 1;
            out.push(Message {
                topic: self
                    .topics
                    .telemetry
                    .replace("{site}", &self.site)
                    .replace("{device_id}", &device),
                payload: payload.into_bytes(),
                items: 0,
                device,
                ordered: false,
            });
        }
        // Held messages whose time has come go out after newer ones.
        while self.held.front().is_some_and(|(due, _)| *due <= self.step) {
            out.push(self.held.pop_front().expect("front").1);
        }
        out
    }

    /// Whatever is still held back, at the end of a run.
    pub fn flush(&mut self) -> Vec<Message> {
        self.held.drain(..).map(|(_, m)| m).collect()
    }

    pub fn truth(&self) -> DeliveryTruth {
        self.truth.clone()
    }
}

/// Malformed telemetry, with the dead-letter reason estatemon gives it.
const MALFORMED: &[(&str, &str)] = &[
    ("invalid_json", r#"{"ts":"{ts}","metrics":{"power_kw":1.5"#),
    ("empty_payload", ""),
    (
        "unknown_metric",
        r#"{"ts":"{ts}","metrics":{"flux_capacitance":1.21}}"#,
    ),
    (
        "invalid_timestamp",
        r#"{"ts":"last tuesday","metrics":{"power_kw":1}}"#,
    ),
    (
        "invalid_field",
        r#"{"ts":"{ts}","metrics":{"power_kw":"high"}}"#,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use estatemon_domain::device::Registry;

    #[test]
    fn duplicates_late_and_malformed_are_counted() {
        let registry =
            Registry::parse(crate::DEFAULT_SITE, std::path::Path::new("default")).unwrap();
        let mut model = SiteModel::new(&registry, None, 5).unwrap();
        let topics = TopicsConfig::default();
        let mut delivery = Delivery::new(&model, &topics);
        delivery.rates = DeliveryFaults {
            duplicate_share: 0.1,
            late_share: 0.1,
            malformed_per_day: 96.0,
        };
        let t0 = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
        let dt = Duration::minutes(15);
        let (mut sent, mut published) = (0u64, 0u64);
        for i in 1..=100 {
            let msgs = model.step(t0 + dt * i, dt, &topics);
            sent += msgs.len() as u64;
            published += delivery.apply(t0 + dt * i, dt, msgs).len() as u64;
        }
        published += delivery.flush().len() as u64;
        let truth = delivery.truth();
        let malformed: u64 = truth.malformed.values().sum();
        assert!(
            truth.duplicates > 0 && truth.late > 0 && malformed > 50,
            "{truth:?}"
        );
        assert_eq!(published, sent + truth.duplicates + malformed);
    }
}
