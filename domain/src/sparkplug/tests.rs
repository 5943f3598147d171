use super::proto::{datatype, Metric, Payload, PropertyScalar, PropertySet, PropertyValue, Value};
use super::*;
use proptest::prelude::*;

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-30T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn metric(name: Option<&str>, alias: Option<u64>, t: u32, v: Value) -> Metric {
    Metric {
        name: name.map(str::to_owned),
        alias,
        datatype: Some(t),
        value: Some(v),
        ..Default::default()
    }
}

fn with_unit(mut m: Metric, unit: &str) -> Metric {
    m.properties = Some(PropertySet {
        keys: vec!["engUnit".into()],
        values: vec![PropertyValue {
            r#type: Some(datatype::STRING),
            is_null: None,
            value: Some(PropertyScalar::StringValue(unit.into())),
        }],
    });
    m
}

fn payload(seq: Option<u64>, metrics: Vec<Metric>) -> Vec<u8> {
    Payload {
        timestamp: Some(1_764_489_600_000),
        metrics,
        seq,
        ..Default::default()
    }
    .encode_to_vec()
}

fn nbirth(bdseq: u64) -> Vec<u8> {
    payload(
        Some(0),
        vec![
            metric(
                Some("bdSeq"),
                None,
                datatype::INT64,
                Value::LongValue(bdseq),
            ),
            metric(
                Some("Node Control/Rebirth"),
                Some(0),
                datatype::BOOLEAN,
                Value::BooleanValue(false),
            ),
            metric(
                Some("Cabinet/temperature_c"),
                Some(1),
                datatype::FLOAT,
                Value::FloatValue(31.5),
            ),
        ],
    )
}

fn dbirth(seq: u64) -> Vec<u8> {
    payload(
        Some(seq),
        vec![
            with_unit(
                metric(
                    Some("Meter/energy"),
                    Some(10),
                    datatype::DOUBLE,
                    Value::DoubleValue(1_500.0),
                ),
                "Wh",
            ),
            metric(
                Some("power_w"),
                Some(11),
                datatype::INT32,
                Value::IntValue(2_000),
            ),
            metric(
                Some("Fan speed"),
                Some(12),
                datatype::INT16,
                Value::IntValue(3),
            ),
        ],
    )
}

fn ddata(seq: u64, energy_wh: f64) -> Vec<u8> {
    payload(
        Some(seq),
        vec![metric(
            None,
            Some(10),
            datatype::DOUBLE,
            Value::DoubleValue(energy_wh),
        )],
    )
}

const N: &str = "spBv1.0/harbour-view/NBIRTH/gw1";
const D: &str = "spBv1.0/harbour-view/DBIRTH/gw1/meter7";
const DD: &str = "spBv1.0/harbour-view/DDATA/gw1/meter7";

/// Who went offline or came back, without when.
fn said(o: &Outcome) -> Vec<(String, bool)> {
    o.availability
        .iter()
        .map(|a| (a.id.clone(), a.online))
        .collect()
}

fn host() -> Host {
    Host::new(SparkplugConfig {
        enabled: true,
        ..Default::default()
    })
}

#[test]
fn births_define_aliases_that_data_resolve() {
    let mut h = host();
    let o = h.handle(N, &nbirth(7), at(), 0).unwrap();
    assert!(o.problems.is_empty(), "{o:?}");
    assert_eq!(o.site.as_deref(), Some("harbour-view"));
    assert_eq!(said(&o), vec![("harbour-view/gw1".to_owned(), true)]);
    // The node's own metric; bdSeq and the rebirth control are not readings.
    assert_eq!(o.readings.len(), 1);
    assert_eq!(o.readings[0].metric, crate::metric::Metric::TemperatureC);
    assert_eq!(o.readings[0].device_id, "harbour-view/gw1");

    let o = h.handle(D, &dbirth(1), at(), 0).unwrap();
    // Fan speed is no estatemon metric: named once, at the birth.
    assert_eq!(o.readings.len(), 2, "{o:?}");
    assert!(
        matches!(&o.problems[..], [Problem::Unmapped(s)] if s.contains("Fan speed")),
        "{o:?}"
    );
    let energy = o
        .readings
        .iter()
        .find(|r| r.metric == crate::metric::Metric::EnergyKwh)
        .unwrap();
    assert_eq!(energy.value, 1.5, "Wh from the birth's engUnit");
    assert_eq!(energy.device_id, "harbour-view/gw1/meter7");
    let power = o
        .readings
        .iter()
        .find(|r| r.metric == crate::metric::Metric::PowerKw)
        .unwrap();
    assert_eq!(power.value, 2.0);

    // By alias only, with the birth's unit.
    let o = h.handle(DD, &ddata(2, 2_500.0), at(), 10).unwrap();
    assert!(o.problems.is_empty() && o.rebirth.is_none(), "{o:?}");
    assert_eq!(o.readings.len(), 1);
    assert_eq!(o.readings[0].value, 2.5);
    assert_eq!(o.readings[0].ts.timestamp_millis(), 1_764_489_600_000);
}

#[test]
fn a_sequence_gap_waits_then_asks_for_a_rebirth_and_a_late_message_closes_it() {
    let mut h = host();
    h.handle(N, &nbirth(1), at(), 0);
    h.handle(D, &dbirth(1), at(), 0);
    h.handle(DD, &ddata(2, 1.0), at(), 0);
    // 3 is missing.
    let o = h.handle(DD, &ddata(4, 1.0), at(), 100).unwrap();
    assert_eq!(o.readings.len(), 1, "data after a gap are still good data");
    assert!(h.due_rebirths(1_000).is_empty(), "inside the reorder wait");
    // 3 arrives late: no rebirth.
    h.handle(DD, &ddata(3, 1.0), at(), 1_200);
    assert!(h.due_rebirths(5_000).is_empty());
    // 5 and 6 never come.
    h.handle(DD, &ddata(7, 1.0), at(), 6_000);
    assert!(h.due_rebirths(7_000).is_empty());
    assert_eq!(
        h.due_rebirths(8_000),
        vec![("harbour-view".to_owned(), "gw1".to_owned())]
    );
    assert!(h.due_rebirths(20_000).is_empty(), "asked once");
}

#[test]
fn the_sequence_wraps_at_256() {
    let mut h = host();
    h.handle(N, &nbirth(1), at(), 0);
    h.handle(D, &dbirth(1), at(), 0);
    for s in 2..600u64 {
        h.handle(DD, &ddata(s % 256, 1.0), at(), 0);
    }
    assert!(h.due_rebirths(1_000_000).is_empty());
}

#[test]
fn data_before_birth_and_unknown_aliases_ask_for_a_rebirth_at_most_once_per_wait() {
    let mut h = host();
    let o = h.handle(DD, &ddata(5, 1.0), at(), 0).unwrap();
    assert!(o.readings.is_empty());
    assert!(matches!(&o.problems[..], [Problem::OutOfState(s)] if s.contains("before its NBIRTH")));
    assert_eq!(o.rebirth, Some(("harbour-view".into(), "gw1".into())));
    let o = h.handle(DD, &ddata(6, 1.0), at(), 500).unwrap();
    assert_eq!(o.rebirth, None, "throttled");

    h.handle(N, &nbirth(1), at(), 3_000);
    h.handle(D, &dbirth(1), at(), 3_000);
    let bad = payload(
        Some(2),
        vec![
            metric(None, Some(99), datatype::DOUBLE, Value::DoubleValue(1.0)),
            metric(None, Some(11), datatype::INT32, Value::IntValue(500)),
        ],
    );
    let o = h.handle(DD, &bad, at(), 6_000).unwrap();
    assert_eq!(o.readings.len(), 1, "the known alias is kept");
    assert!(matches!(&o.problems[..], [Problem::OutOfState(s)] if s.contains("alias(es) 99")));
    assert!(o.rebirth.is_some());
}

#[test]
fn a_death_marks_offline_only_with_its_own_births_bdseq() {
    let mut h = host();
    h.handle(N, &nbirth(4), at(), 0);
    let death = |b: u64| {
        payload(
            None,
            vec![metric(
                Some("bdSeq"),
                None,
                datatype::INT64,
                Value::LongValue(b),
            )],
        )
    };
    let nd = "spBv1.0/harbour-view/NDEATH/gw1";
    let o = h.handle(nd, &death(3), at(), 0).unwrap();
    assert!(o.availability.is_empty());
    assert!(matches!(&o.problems[..], [Problem::OutOfState(s)] if s.contains("bdSeq 3")));
    let o = h.handle(nd, &death(4), at(), 0).unwrap();
    assert_eq!(said(&o), vec![("harbour-view/gw1".to_owned(), false)]);
    // Dead: data now come before a birth.
    assert!(h
        .handle(DD, &ddata(1, 1.0), at(), 0)
        .unwrap()
        .rebirth
        .is_some());
    let o = h
        .handle(
            "spBv1.0/harbour-view/DDEATH/gw1/meter7",
            &payload(Some(1), vec![]),
            at(),
            0,
        )
        .unwrap();
    assert!(
        o.availability.is_empty(),
        "a DDEATH of a dead node is out of state"
    );
}

/// A payload stamped `ms` (ms since the epoch), or with no timestamp.
fn stamped(ms: Option<u64>, seq: Option<u64>, metrics: Vec<Metric>) -> Vec<u8> {
    Payload {
        timestamp: ms,
        metrics,
        seq,
        ..Default::default()
    }
    .encode_to_vec()
}

fn ms(t: DateTime<Utc>) -> u64 {
    t.timestamp_millis() as u64
}

#[test]
fn a_death_is_dated_by_its_own_timestamp_when_plausible() {
    let received = at();
    let minutes = |m: i64| received - chrono::Duration::minutes(m);
    let bd = |b: u64| metric(Some("bdSeq"), None, datatype::INT64, Value::LongValue(b));
    let dd = "spBv1.0/harbour-view/DDEATH/gw1/meter7";
    let nd = "spBv1.0/harbour-view/NDEATH/gw1";
    let mut h = host();
    // Born an hour ago (the node) and 50 minutes ago (the device).
    h.handle(
        N,
        &stamped(Some(ms(minutes(60))), Some(0), vec![bd(2)]),
        received,
        0,
    );
    h.handle(
        D,
        &stamped(Some(ms(minutes(50))), Some(1), vec![]),
        received,
        0,
    );

    // A DDEATH five minutes before it arrived (a store-and-forward
    // backlog): offline since then, not since its arrival.
    let o = h
        .handle(
            dd,
            &stamped(Some(ms(minutes(5))), Some(2), vec![]),
            received,
            0,
        )
        .unwrap();
    assert_eq!(
        o.availability,
        vec![Availability {
            id: "harbour-view/gw1/meter7".into(),
            online: false,
            at: minutes(5),
            at_receipt: false,
        }]
    );
    // No timestamp, one after its receipt, one before the device's birth:
    // the receive time, and it says so.
    for (seq, ts) in [
        (3, None),
        (4, Some(ms(received) + 60_000)),
        (5, Some(ms(minutes(55)))),
    ] {
        let o = h
            .handle(dd, &stamped(ts, Some(seq), vec![]), received, 0)
            .unwrap();
        let a = &o.availability[0];
        assert!(
            !a.online && a.at == received && a.at_receipt,
            "{ts:?}: {a:?}"
        );
    }
    // The DBIRTH's time counts, not only the NBIRTH's: 55 minutes ago is
    // after the node's birth but before the device's.

    // An NDEATH later than the birth (the node said goodbye): its own time.
    let o = h
        .handle(
            nd,
            &stamped(Some(ms(minutes(2))), None, vec![bd(2)]),
            received,
            0,
        )
        .unwrap();
    assert_eq!(o.availability[0].at, minutes(2), "{o:?}");
    assert!(!o.availability[0].at_receipt);

    // A Last Will: stamped at CONNECT, before the birth it ends. The
    // broker sends it when the node is lost, so the receipt is the time.
    h.handle(
        N,
        &stamped(Some(ms(minutes(30))), Some(0), vec![bd(3)]),
        received,
        0,
    );
    let will = stamped(Some(ms(minutes(31))), None, vec![bd(3)]);
    let o = h.handle(nd, &will, received, 0).unwrap();
    assert_eq!(said(&o), vec![("harbour-view/gw1".to_owned(), false)]);
    assert!(
        o.availability[0].at == received && o.availability[0].at_receipt,
        "{o:?}"
    );
    // Nor in the very millisecond of the birth.
    h.handle(
        N,
        &stamped(Some(ms(minutes(20))), Some(0), vec![bd(4)]),
        received,
        0,
    );
    let o = h
        .handle(
            nd,
            &stamped(Some(ms(minutes(20))), None, vec![bd(4)]),
            received,
            0,
        )
        .unwrap();
    assert!(o.availability[0].at_receipt, "{o:?}");
    // An NDEATH with no birth seen: nothing to judge its timestamp by.
    let o = h
        .handle(
            nd,
            &stamped(Some(ms(minutes(1))), None, vec![bd(4)]),
            received,
            0,
        )
        .unwrap();
    assert!(
        o.availability[0].at == received && o.availability[0].at_receipt,
        "{o:?}"
    );
}

#[test]
fn values_signed_types_templates_and_units() {
    let mut h = Host::new(SparkplugConfig {
        enabled: true,
        site: Some("site-1".into()),
        metrics: vec![
            MetricMapping {
                name: "Supply pressure".into(),
                metric: crate::metric::Metric::PressureMpa,
                unit: Some("kPa".into()),
                scale: 1.0,
            },
            MetricMapping {
                name: "Total".into(),
                metric: crate::metric::Metric::EnergyKwh,
                unit: Some("°C".into()),
                scale: 1.0,
            },
        ],
        ..Default::default()
    });
    let p = payload(
        Some(0),
        vec![
            metric(Some("bdSeq"), None, datatype::INT64, Value::LongValue(0)),
            metric(
                Some("Supply pressure"),
                Some(1),
                datatype::INT8,
                Value::IntValue(0xFFFF_FF9C),
            ),
            metric(
                Some("Total"),
                Some(2),
                datatype::DOUBLE,
                Value::DoubleValue(1.0),
            ),
            Metric {
                name: Some("Pump/temperature_c".into()),
                alias: Some(3),
                datatype: Some(datatype::TEMPLATE),
                ..Default::default()
            },
            metric(
                Some("Label/temperature_c"),
                Some(4),
                datatype::STRING,
                Value::StringValue("x".into()),
            ),
            Metric {
                name: Some("Null/temperature_c".into()),
                alias: Some(5),
                datatype: Some(datatype::FLOAT),
                is_null: Some(true),
                ..Default::default()
            },
        ],
    );
    let o = h.handle(N, &p, at(), 0).unwrap();
    assert_eq!(o.site.as_deref(), Some("site-1"));
    // −100 kPa as an Int8 (sign-extended), in MPa.
    assert_eq!(o.readings.len(), 1, "{o:?}");
    assert!((o.readings[0].value + 0.1).abs() < 1e-12, "{o:?}");
    let text: Vec<String> = o.problems.iter().map(|p| format!("{p:?}")).collect();
    assert!(
        text.iter().any(|p| p.contains("`°C` cannot be converted")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|p| p.contains("Template values are not understood")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|p| p.contains("String value is not a number")),
        "{text:?}"
    );
    assert_eq!(o.problems.len(), 3, "a null is no problem: {text:?}");
}

#[test]
fn garbage_topics_and_payloads() {
    let mut h = host();
    assert!(h.handle("tele/x/SENSOR", b"{}", at(), 0).is_none());
    assert!(h.handle("spBv1.0/g/NBIRTH", b"", at(), 0).is_none());
    assert!(
        h.handle("spBv1.0/g/DDATA/n", b"", at(), 0).is_none(),
        "device type without device"
    );
    assert!(
        h.handle("spBv1.0/STATE/other-host", b"{\"online\":true}", at(), 0)
            .unwrap()
            .ignored
    );
    assert!(h.handle("spBv1.0/g/NCMD/n", b"", at(), 0).unwrap().ignored);
    let o = h
        .handle(N, b"\xff\xff\xff\xff not protobuf", at(), 0)
        .unwrap();
    assert!(
        matches!(&o.problems[..], [Problem::Malformed(s)] if s.contains("protobuf")),
        "{o:?}"
    );
}

#[test]
fn the_rebirth_command_decodes_as_tahu_expects() {
    let p = Payload::decode(&rebirth_command(42)[..]).unwrap();
    assert_eq!(p.timestamp, Some(42));
    assert_eq!(p.metrics[0].name.as_deref(), Some("Node Control/Rebirth"));
    assert_eq!(p.metrics[0].value, Some(Value::BooleanValue(true)));
    assert_eq!(ncmd_topic("g", "n"), "spBv1.0/g/NCMD/n");
}

proptest! {
    #[test]
    fn any_bytes_on_any_sparkplug_topic_never_panic(
        kind in prop::sample::select(vec!["NBIRTH", "NDATA", "NDEATH", "DBIRTH/n/d", "DDATA/n/d", "DDEATH/n/d"]),
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        seq in any::<u64>(),
    ) {
        let mut h = host();
        let topic = if kind.contains('/') {
            let (k, rest) = kind.split_once('/').unwrap();
            format!("spBv1.0/g/{k}/{rest}")
        } else {
            format!("spBv1.0/g/{kind}/n")
        };
        h.handle("spBv1.0/g/NBIRTH/n", &nbirth(1), at(), 0);
        let _ = h.handle(&topic, &bytes, at(), 0);
        // And a structurally valid payload with any sequence number.
        let _ = h.handle(&topic, &ddata(seq, f64::from_bits(seq)), at(), 0);
        let _ = h.due_rebirths(i64::MAX / 2);
    }
}
