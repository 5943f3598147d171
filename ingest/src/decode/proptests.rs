//! Property tests of the decoders and the topic parser: arbitrary bytes or
//! JSON never panic (they become rejects with a reason); valid payloads
//! and topics round-trip. Case count: proptest's (`PROPTEST_CASES` for a
//! long run; BENCHMARKS.md records one).

use chrono::{DateTime, Utc};
use estatemon_domain::config::TopicsConfig;
use estatemon_domain::event::EventDetail;
use estatemon_domain::metric::MetricKind;
use estatemon_domain::pseudonym::Pseudonymiser;
use estatemon_domain::Metric;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::decode;
use crate::topic::{Channel, Topics, MAX_ID_LEN};
use crate::validate::{validate, Limits};

fn limits() -> Limits {
    Limits {
        max_future_skew: chrono::Duration::minutes(5),
        max_age: chrono::Duration::days(730),
    }
}

fn p() -> Pseudonymiser {
    Pseudonymiser::new(b"prop-key")
}

fn channel() -> impl Strategy<Value = Channel> {
    prop_oneof![
        Just(Channel::Telemetry),
        Just(Channel::Events),
        Just(Channel::Senml)
    ]
}

/// Arbitrary JSON, biased towards the shapes the decoders look at.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|v| json!(v)),
        any::<u64>().prop_map(|v| json!(v)),
        any::<f64>().prop_map(|v| json!(v)),
        prop_oneof![
            Just("ts"),
            Just("metrics"),
            Just("energy_kwh"),
            Just("fault"),
            Just("access"),
            Just("2026-03-01T08:00:00+08:00"),
            Just("9999-99-99T99:99:99Z"),
            Just("-262143-01-01T00:00:00Z"),
        ]
        .prop_map(|s| json!(s)),
        ".{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        let key = prop_oneof![
            Just("ts".to_owned()),
            Just("metrics".to_owned()),
            Just("type".to_owned()),
            Just("code".to_owned()),
            Just("seconds".to_owned()),
            Just("result".to_owned()),
            Just("credential".to_owned()),
            Just("bn".to_owned()),
            Just("bt".to_owned()),
            Just("bu".to_owned()),
            Just("bv".to_owned()),
            Just("bs".to_owned()),
            Just("n".to_owned()),
            Just("u".to_owned()),
            Just("v".to_owned()),
            Just("t".to_owned()),
            Just("energy_wh".to_owned()),
            Just("pressure_kpa".to_owned()),
            "[a-z_]{1,10}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 2001 .. 2100, to the millisecond.
    (978_307_200_000i64..4_102_444_800_000)
        .prop_map(|ms| DateTime::from_timestamp_millis(ms).unwrap())
}

fn id() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9_-]{0,30}"
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(channel in channel(), bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let d = decode(channel, "dev", &bytes, &p());
        // Something is said about every message: data or a reason.
        prop_assert!(!d.readings.is_empty() || !d.events.is_empty() || !d.rejects.is_empty()
            || matches!(serde_json::from_slice::<Value>(&bytes), Ok(Value::Array(ref a)) if a.is_empty()));
    }

    #[test]
    fn arbitrary_json_never_panics_and_validates(channel in channel(), value in json_value(), now in any_instant()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        let mut d = decode(channel, "dev", &bytes, &p());
        validate(&mut d, now, &limits());
        for r in &d.readings {
            prop_assert!(r.value.is_finite());
        }
    }

    #[test]
    fn telemetry_round_trips(
        device in id(),
        ts in any_instant(),
        values in proptest::collection::btree_map(
            proptest::sample::select(Metric::ALL.to_vec()),
            -1.0e9f64..1.0e9,
            1..6,
        ),
    ) {
        let metrics: serde_json::Map<String, Value> =
            values.iter().map(|(m, v)| (m.as_str().to_owned(), json!(v))).collect();
        let payload = json!({"ts": ts.timestamp_millis(), "metrics": metrics});
        let d = decode(Channel::Telemetry, &device, payload.to_string().as_bytes(), &p());
        prop_assert!(d.rejects.is_empty(), "{:?}", d.rejects);
        prop_assert_eq!(d.readings.len(), values.len());
        for r in &d.readings {
            prop_assert_eq!(&r.device_id, &device);
            prop_assert_eq!(r.ts, ts);
            prop_assert_eq!(Some(&r.value), values.get(&r.metric));
        }
    }

    #[test]
    fn telemetry_that_validates_keeps_registers_non_negative(
        ts in any_instant(),
        value in -1.0e6f64..1.0e6,
        metric in proptest::sample::select(Metric::ALL.to_vec()),
    ) {
        let payload = json!({"ts": ts.timestamp_millis(), "metrics": {metric.as_str(): value}});
        let mut d = decode(Channel::Telemetry, "dev", payload.to_string().as_bytes(), &p());
        validate(&mut d, ts, &limits());
        for r in &d.readings {
            if r.metric.kind() == MetricKind::Cumulative {
                prop_assert!(r.value >= 0.0);
            }
        }
    }

    #[test]
    fn events_round_trip(
        device in id(),
        ts in any_instant(),
        kind in 0u8..3,
        seconds in 0.0f64..100_000.0,
        code in prop_oneof![Just("entrapment"), Just("door_fault"), Just("overspeed")],
    ) {
        let (payload, want) = match kind {
            0 => (json!({"ts": ts.to_rfc3339(), "type": "door_forced"}), EventDetail::DoorForced),
            1 => (
                json!({"ts": ts.timestamp_millis(), "type": "door_held_open", "seconds": seconds}),
                EventDetail::DoorHeldOpen { seconds },
            ),
            _ => (
                json!({"ts": ts.timestamp_millis(), "type": "fault", "code": code}),
                EventDetail::Fault { code: code.to_owned() },
            ),
        };
        let d = decode(Channel::Events, &device, payload.to_string().as_bytes(), &p());
        prop_assert!(d.rejects.is_empty(), "{:?}", d.rejects);
        prop_assert_eq!(d.events.len(), 1);
        prop_assert_eq!(&d.events[0].device_id, &device);
        prop_assert_eq!(d.events[0].ts, ts);
        prop_assert_eq!(&d.events[0].detail, &want);
    }

    #[test]
    fn any_topic_is_matched_or_not_without_panicking(topic in "[a-z/+#$]{0,40}|.{0,60}") {
        let topics = Topics::new(&TopicsConfig::default());
        if let Some(m) = topics.matches(&topic) {
            prop_assert!(!m.device_id.is_empty() && m.device_id.len() <= MAX_ID_LEN);
        }
    }

    #[test]
    fn topics_round_trip(site in id(), device in id(), channel in channel()) {
        let config = TopicsConfig::default();
        let template = match channel {
            Channel::Telemetry => &config.telemetry,
            Channel::Events => &config.events,
            Channel::Senml => &config.senml,
        };
        let topic = template.replace("{site}", &site).replace("{device_id}", &device);
        let topics = Topics::new(&config);
        let m = topics.matches(&topic).expect("a topic built from its template matches");
        prop_assert_eq!(m.channel, channel);
        prop_assert_eq!(m.site, Some(site.as_str()));
        prop_assert_eq!(m.device_id, device.as_str());
        // And the wide subscription receives it.
        let filter = &topics.filters(None)[0];
        prop_assert!(topic.starts_with(filter.trim_end_matches('#')));
    }
}
