//! Tables of payloads and what they must decode to.

use super::*;
use crate::dead_letter::Reason;
use estatemon_domain::event::{AccessMethod, AccessResult, Direction, EventDetail, LiftState};
use estatemon_domain::Metric;

fn p() -> Pseudonymiser {
    Pseudonymiser::new(b"test-key")
}

fn run(channel: Channel, payload: &str) -> Decoded {
    decode(channel, "dev-1", payload.as_bytes(), &p())
}

fn reasons(d: &Decoded) -> Vec<Reason> {
    d.rejects.iter().map(|r| r.reason).collect()
}

#[test]
fn telemetry_formats() {
    let d = run(
        Channel::Telemetry,
        r#"{"ts":"2026-03-01T08:00:00+08:00","metrics":{"energy_kwh":1234.5,"power_w":3200}}"#,
    );
    assert!(d.rejects.is_empty(), "{:?}", d.rejects);
    assert_eq!(d.readings.len(), 2);
    let power = d
        .readings
        .iter()
        .find(|r| r.metric == Metric::PowerKw)
        .unwrap();
    assert!((power.value - 3.2).abs() < 1e-12);
    assert_eq!(power.ts.to_rfc3339(), "2026-03-01T00:00:00+00:00");

    let d = run(
        Channel::Telemetry,
        r#"{"ts":1772323200000,"metrics":{"volume_l":1500}}"#,
    );
    assert_eq!(d.readings[0].metric, Metric::VolumeM3);
    assert!((d.readings[0].value - 1.5).abs() < 1e-12);
    assert_eq!(d.readings[0].ts.timestamp_millis(), 1772323200000);

    let d = run(
        Channel::Telemetry,
        r#"[{"ts":1772323200000,"metrics":{"energy_kwh":1}},{"ts":1772323260000,"metrics":{"energy_kwh":2}}]"#,
    );
    assert_eq!(d.readings.len(), 2);
}

#[test]
fn senml_base_resolution() {
    let d = run(
        Channel::Senml,
        r#"[{"bn":"urn:dev:mac:0024:","bt":1772323200,"bu":"Wh","n":"energy","v":1500},
            {"n":"energy","t":60,"v":1600},
            {"n":"power","u":"W","t":60,"v":2500},
            {"n":"volume","u":"l","bv":100,"t":60,"v":5}]"#,
    );
    assert!(d.rejects.is_empty(), "{:?}", d.rejects);
    let got: Vec<(Metric, i64, f64)> = d
        .readings
        .iter()
        .map(|r| (r.metric, r.ts.timestamp(), (r.value * 1e6).round() / 1e6))
        .collect();
    assert_eq!(
        got,
        vec![
            (Metric::EnergyKwh, 1772323200, 1.5),
            (Metric::EnergyKwh, 1772323260, 1.6),
            (Metric::PowerKw, 1772323260, 2.5),
            (Metric::VolumeM3, 1772323260, 0.105),
        ]
    );
}

#[test]
fn events_are_typed_and_credentials_pseudonymised() {
    let d = run(
        Channel::Events,
        r#"[{"ts":1772323200000,"type":"access","result":"denied","method":"face","credential":"CARD-9","direction":"in"},
            {"ts":1772323200001,"type":"door_forced"},
            {"ts":1772323200002,"type":"door_held_open","seconds":95},
            {"ts":1772323200003,"type":"fault","code":"Entrapment"},
            {"ts":1772323200004,"type":"state","state":"maintenance"}]"#,
    );
    assert!(d.rejects.is_empty(), "{:?}", d.rejects);
    let expected_credential = p().pseudonymise("CARD-9");
    assert_eq!(
        d.events[0].detail,
        EventDetail::Access {
            result: AccessResult::Denied,
            method: AccessMethod::Face,
            credential: Some(expected_credential),
            direction: Some(Direction::In),
            credential_expired: false,
        }
    );
    assert_eq!(d.events[1].detail, EventDetail::DoorForced);
    assert_eq!(
        d.events[2].detail,
        EventDetail::DoorHeldOpen { seconds: 95.0 }
    );
    assert_eq!(
        d.events[3].detail,
        EventDetail::Fault {
            code: "entrapment".into()
        }
    );
    assert_eq!(
        d.events[4].detail,
        EventDetail::State {
            state: LiftState::Maintenance,
            credential: None,
        }
    );
}

#[test]
fn malformed_corpus_each_with_its_reason() {
    use Channel::*;
    let cases: &[(Channel, &str, &[Reason], usize)] = &[
        (Telemetry, "", &[Reason::EmptyPayload], 0),
        (Telemetry, "{not json", &[Reason::InvalidJson], 0),
        (Telemetry, "\u{0}\u{1}binary", &[Reason::InvalidJson], 0),
        (
            Telemetry,
            r#"{"ts":1772323200000,"metrics":{"energy_kwh":NaN}}"#,
            &[Reason::NonFiniteValue],
            0,
        ),
        (
            Telemetry,
            r#"{"ts":1772323200000,"metrics":{"energy_kwh":"NaN"}}"#,
            &[Reason::NonFiniteValue],
            0,
        ),
        (
            Telemetry,
            r#"{"metrics":{"energy_kwh":1}}"#,
            &[Reason::MissingField],
            0,
        ),
        (
            Telemetry,
            r#"{"ts":1772323200000}"#,
            &[Reason::MissingField],
            0,
        ),
        (
            Telemetry,
            r#"{"ts":"yesterday","metrics":{"energy_kwh":1}}"#,
            &[Reason::InvalidTimestamp],
            0,
        ),
        (
            Telemetry,
            r#"{"ts":true,"metrics":{"energy_kwh":1}}"#,
            &[Reason::InvalidTimestamp],
            0,
        ),
        (
            Telemetry,
            r#"{"ts":1772323200000,"metrics":{"energy_btu":1,"power_kw":2}}"#,
            &[Reason::UnknownUnit],
            1,
        ),
        (
            Telemetry,
            r#"{"ts":1772323200000,"metrics":{"flux_kwh":1}}"#,
            &[Reason::UnknownMetric],
            0,
        ),
        (
            Telemetry,
            r#"{"ts":1772323200000,"metrics":{"energy_kwh":"lots"}}"#,
            &[Reason::InvalidField],
            0,
        ),
        (
            Telemetry,
            r#"[1, {"ts":1772323200000,"metrics":{"energy_kwh":1}}]"#,
            &[Reason::InvalidField],
            1,
        ),
        (Telemetry, "[]", &[Reason::EmptyPayload], 0),
        (Senml, r#"{"n":"energy"}"#, &[Reason::InvalidField], 0),
        (
            Senml,
            r#"[{"n":"energy","u":"Wh","v":1}]"#,
            &[Reason::MissingField],
            0,
        ),
        (
            Senml,
            r#"[{"n":"energy","u":"Wh","t":-5,"v":1}]"#,
            &[Reason::InvalidTimestamp],
            0,
        ),
        (
            Senml,
            r#"[{"n":"energy","u":"BTU","bt":1772323200,"v":1}]"#,
            &[Reason::UnknownUnit],
            0,
        ),
        (
            Senml,
            r#"[{"n":"energy","bt":1772323200,"v":1}]"#,
            &[Reason::UnknownUnit],
            0,
        ),
        (
            Senml,
            r#"[{"n":"mood","u":"%","bt":1772323200,"v":1}]"#,
            &[Reason::UnknownMetric],
            0,
        ),
        (
            Senml,
            r#"[{"n":"power","u":"W","bt":1772323200,"vs":"high"}]"#,
            &[Reason::InvalidField],
            0,
        ),
        (
            Events,
            r#"{"ts":1772323200000,"type":"party"}"#,
            &[Reason::UnknownEventType],
            0,
        ),
        (
            Events,
            r#"{"ts":1772323200000}"#,
            &[Reason::MissingField],
            0,
        ),
        (
            Events,
            r#"{"ts":1772323200000,"type":"access","result":"maybe","method":"card"}"#,
            &[Reason::InvalidField],
            0,
        ),
        (
            Events,
            r#"{"ts":1772323200000,"type":"access","result":"granted"}"#,
            &[Reason::MissingField],
            0,
        ),
        (
            Events,
            r#"{"ts":1772323200000,"type":"door_held_open","seconds":-3}"#,
            &[Reason::InvalidValue],
            0,
        ),
        (
            Events,
            r#"{"ts":1772323200000,"type":"state","state":"flying"}"#,
            &[Reason::InvalidField],
            0,
        ),
        (
            Events,
            r#"{"ts":1772323200000,"type":"fault"}"#,
            &[Reason::MissingField],
            0,
        ),
    ];
    for (channel, payload, want, good) in cases {
        let d = run(*channel, payload);
        assert_eq!(reasons(&d), *want, "{channel:?} {payload}: {:?}", d.rejects);
        assert_eq!(
            d.readings.len() + d.events.len(),
            *good,
            "{channel:?} {payload}"
        );
        for r in &d.rejects {
            assert!(!r.detail.is_empty());
        }
    }
}

#[test]
fn rejects_never_echo_credentials() {
    let d = run(
        Channel::Events,
        r#"{"ts":1772323200000,"type":"access","result":"sideways","method":"card","credential":"CARD-31337"}"#,
    );
    assert_eq!(reasons(&d), vec![Reason::InvalidField]);
    assert!(!d.rejects[0].detail.contains("31337"));
}

/// Every prefix and a few mutations of valid payloads: decoding may reject,
/// but must never panic, and everything must be accounted for.
#[test]
fn truncated_and_mutated_payloads_never_panic() {
    let samples = [
        (
            Channel::Telemetry,
            r#"[{"ts":"2026-03-01T08:00:00Z","metrics":{"energy_kwh":1234.5,"power_w":3}}]"#,
        ),
        (
            Channel::Senml,
            r#"[{"bn":"x:","bt":1772323200,"bu":"Wh","n":"energy","v":1500},{"n":"power","u":"W","t":1,"v":2}]"#,
        ),
        (
            Channel::Events,
            r#"[{"ts":1772323200000,"type":"access","result":"denied","method":"card","credential":"C1"}]"#,
        ),
    ];
    for (channel, sample) in samples {
        let bytes = sample.as_bytes();
        for cut in 0..bytes.len() {
            let d = decode(channel, "d", &bytes[..cut], &p());
            assert!(!d.rejects.is_empty() || !d.readings.is_empty() || !d.events.is_empty());
        }
        for i in 0..bytes.len() {
            for replacement in [b'0', b'"', b'}', b'-', b'x'] {
                let mut m = bytes.to_vec();
                m[i] = replacement;
                let _ = decode(channel, "d", &m, &p());
            }
        }
    }
}
