//! The payloads `bench ingest` publishes besides estatemon's own JSON
//! (Sparkplug B DDATA and births, a Tasmota-style message through a
//! mapping), and the in-process decode rates printed beside each scenario.

use std::time::{Duration, Instant};

use chrono::Utc;

/// The metrics of a benchmark Sparkplug device, and how many samples of
/// each a DDATA carries (each at its own timestamp): 10 × 5 = 50 a message.
pub(super) const SPARKPLUG_METRICS: [&str; 10] = [
    "power_kw",
    "voltage_v",
    "current_a",
    "power_factor",
    "temperature_c",
    "humidity_pct",
    "pressure_mpa",
    "flow_m3h",
    "tank_level_pct",
    "motor_temp_c",
];
pub(super) const SPARKPLUG_SAMPLES: usize = 5;
pub(super) const SPARKPLUG_DEVICES: u64 = 500;

/// Sparkplug B messages: each publisher is an edge node
/// (`spBv1.0/bench<tag>/…/node-<p>`) with 500 devices. `births` makes the
/// node's NBIRTH and its devices' DBIRTHs (aliases 0–9, null values);
/// otherwise DDATA by alias only, 50 values a message.
pub(super) fn sparkplug_format(
    tag: &str,
    publishers: usize,
    births: bool,
) -> estatemon_simulators::load::MakeMessage {
    use estatemon_domain::sparkplug::proto::{datatype, Metric, Payload, Value};
    let group = format!("bench{tag}");
    let p_count = publishers as u64;
    let base = (Utc::now().timestamp_millis() - 3_600_000) as u64;
    std::sync::Arc::new(move |p, _device, seq| {
        // The publisher's own message count, so that seq runs unbroken.
        let i = seq / p_count;
        let now = Utc::now().timestamp_millis() as u64;
        if births {
            let (topic, metrics, s) = if i == 0 {
                (
                    format!("spBv1.0/{group}/NBIRTH/node-{p}"),
                    vec![Metric {
                        name: Some("bdSeq".into()),
                        datatype: Some(datatype::UINT64),
                        value: Some(Value::LongValue(0)),
                        ..Default::default()
                    }],
                    0,
                )
            } else {
                (
                    format!("spBv1.0/{group}/DBIRTH/node-{p}/dev-{}", i - 1),
                    SPARKPLUG_METRICS
                        .iter()
                        .enumerate()
                        .map(|(k, name)| Metric {
                            name: Some(format!("Bench/{name}")),
                            alias: Some(k as u64),
                            datatype: Some(datatype::DOUBLE),
                            is_null: Some(true),
                            ..Default::default()
                        })
                        .collect(),
                    i % 256,
                )
            };
            let payload = Payload {
                timestamp: Some(now),
                metrics,
                seq: Some(s),
                ..Default::default()
            };
            return (topic, payload.to_bytes());
        }
        let device = i % SPARKPLUG_DEVICES;
        let metrics = (0..SPARKPLUG_SAMPLES)
            .flat_map(|sample| {
                (0..SPARKPLUG_METRICS.len()).map(move |k| Metric {
                    alias: Some(k as u64),
                    // Five samples a metric, a millisecond apart, each its
                    // own reading.
                    // Each message's samples at their own milliseconds,
                    // from an hour back: two messages of one device
                    // published in the same millisecond would otherwise
                    // be one reading. (So no latency is measured here.)
                    timestamp: Some(base + seq * SPARKPLUG_SAMPLES as u64 + sample as u64),
                    datatype: Some(datatype::DOUBLE),
                    value: Some(Value::DoubleValue(
                        (seq % 1000) as f64 / 10.0 + k as f64 / 100.0,
                    )),
                    ..Default::default()
                })
            })
            .collect();
        let payload = Payload {
            timestamp: Some(now),
            metrics,
            // After the NBIRTH (0) and 500 DBIRTHs (1–500).
            seq: Some((i + SPARKPLUG_DEVICES + 1) % 256),
            ..Default::default()
        };
        (
            format!("spBv1.0/{group}/DDATA/node-{p}/dev-{device}"),
            payload.to_bytes(),
        )
    })
}

/// A Tasmota-style message (`tele/<device>/SENSOR`, `{"Time":…,
/// "ENERGY":{"Power":…}}`) and the mapping that reads it.
pub(super) fn mapped_format(tag: &str) -> (String, estatemon_simulators::load::MakeMessage) {
    let prefix = format!("benchmap{tag}");
    let mapping = format!(
        "[[ingest.mapping]]\nname = \"bench-sensor\"\ntopic = \"{prefix}/{{device_id}}/SENSOR\"\n\
         when = [{{ path = \"ENERGY\" }}]\ntime_path = \"Time\"\n\
         [[ingest.mapping.value]]\npath = \"ENERGY.Power\"\nmetric = \"power_kw\"\nunit = \"W\"\n"
    );
    let make: estatemon_simulators::load::MakeMessage =
        std::sync::Arc::new(move |p, device, seq| {
            let body = format!(
                r#"{{"Time":"{}","ENERGY":{{"Power":{}.{}}}}}"#,
                Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                seq % 1000,
                device % 10
            );
            (
                format!("{prefix}/dev-{p}-{device}/SENSOR"),
                body.into_bytes(),
            )
        });
    (mapping, make)
}

/// In-process Sparkplug decode (protobuf, alias resolution, sequence
/// tracking) throughput, one core, the benchmark's own DDATA.
pub(super) fn sparkplug_decode_rate(tag: &str) -> f64 {
    let mut host =
        estatemon_domain::sparkplug::Host::new(estatemon_domain::sparkplug::SparkplugConfig {
            enabled: true,
            ..Default::default()
        });
    let births = sparkplug_format(tag, 1, true);
    let data = sparkplug_format(tag, 1, false);
    let now = Utc::now();
    for i in 0..=SPARKPLUG_DEVICES {
        let (topic, body) = births(0, 0, i);
        host.handle(&topic, &body, now, 0);
    }
    let messages: Vec<(String, Vec<u8>)> = (0..256).map(|i| data(0, 0, i)).collect();
    let started = Instant::now();
    let mut readings = 0usize;
    while started.elapsed() < Duration::from_millis(500) {
        for (topic, body) in &messages {
            if let Some(out) = host.handle(topic, body, now, 0) {
                readings += out.readings.len();
            }
        }
    }
    readings as f64 / started.elapsed().as_secs_f64()
}

/// In-process decode + validate throughput, one core, same payloads.
pub(super) fn decode_rate(readings_per_message: usize) -> f64 {
    let p = estatemon_domain::pseudonym::Pseudonymiser::new(b"bench");
    let limits = estatemon_ingest::validate::Limits {
        max_future_skew: chrono::Duration::minutes(5),
        max_age: chrono::Duration::days(3650),
    };
    let payloads: Vec<Vec<u8>> = (0..100)
        .map(|i| estatemon_simulators::load::payload(i, readings_per_message, Utc::now(), i))
        .collect();
    let started = Instant::now();
    let mut readings = 0usize;
    while started.elapsed() < Duration::from_millis(500) {
        for body in &payloads {
            let mut d = estatemon_ingest::decode::decode(
                estatemon_ingest::topic::Channel::Telemetry,
                "dev",
                body,
                &p,
            );
            estatemon_ingest::validate::validate(&mut d, Utc::now(), &limits);
            readings += d.readings.len();
        }
    }
    readings as f64 / started.elapsed().as_secs_f64()
}
