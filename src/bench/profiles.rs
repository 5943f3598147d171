//! The shipped profiles and Home Assistant discovery as benchmark load:
//! each message in its device's documented form (Tasmota's `tele/…/SENSOR`,
//! a Shelly's `NotifyStatus`, a Zigbee2MQTT plug under a grouped friendly
//! name, four Home Assistant entities over one state topic), with the
//! readings it must store.

use chrono::Utc;
use estatemon_domain::config::Config;
use estatemon_domain::mapping::homeassistant::{discover, Discovery};
use estatemon_domain::mapping::MappingSet;
use estatemon_simulators::load::MakeMessage;

/// The profiles `bench ingest --format all` measures.
pub const NAMES: &[&str] = &["tasmota", "shelly", "zigbee2mqtt", "homeassistant"];

/// Devices per scenario (the load generator's `seq % 500`).
const DEVICES: u64 = 500;

pub struct ProfileLoad {
    /// The configuration file's text that enables the profile.
    pub config: String,
    pub make: MakeMessage,
    pub readings_per_message: usize,
    /// Retained messages to publish first (discovery configs).
    pub setup: Vec<(String, Vec<u8>)>,
}

pub fn load(name: &str, tag: &str) -> ProfileLoad {
    // Device times are the time of publishing (so publish→commit latency
    // is measured from them); a device repeats every 500 messages of its
    // publisher, many milliseconds apart, so every message is its own
    // reading.
    // Per device, never the same millisecond twice: the generator makes
    // messages far faster than the broker takes them.
    let last: std::sync::Arc<Vec<std::sync::atomic::AtomicI64>> = std::sync::Arc::new(
        (0..DEVICES * 64)
            .map(|_| std::sync::atomic::AtomicI64::new(0))
            .collect(),
    );
    let unique_ms = move |p: usize, device: u64| -> i64 {
        let slot = &last[(p as u64 * DEVICES + device) as usize % last.len()];
        let now = Utc::now().timestamp_millis();
        let prev = slot
            .fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |l| Some(now.max(l + 1)),
            )
            .unwrap_or(now);
        now.max(prev + 1)
    };
    let base_ms = Utc::now().timestamp_millis();
    let id = format!("b{}", tag.replace('_', ""));
    match name {
        "tasmota" => {
            let stamp = unique_ms.clone();
            let make: MakeMessage = std::sync::Arc::new(move |p, device, seq| {
                let t =
                    chrono::DateTime::from_timestamp_millis(stamp(p, device)).unwrap_or_default();
                (
                    format!("tele/{id}-{p}-{device}/SENSOR"),
                    format!(
                        r#"{{"Time":"{}","ENERGY":{{"TotalStartTime":"2025-01-01T00:00:00","Total":{}.{},"Yesterday":1.0,"Today":0.5,"Power":{},"Voltage":230,"Factor":0.92}}}}"#,
                        t.format("%Y-%m-%dT%H:%M:%S%.3f"),
                        seq / 10,
                        seq % 10,
                        seq % 1000
                    )
                    .into_bytes(),
                )
            });
            ProfileLoad {
                config: "[[ingest.profile]]\nname = \"tasmota\"\nsite = \"bench\"\ntime_zone = \"UTC\"\n"
                    .into(),
                make,
                readings_per_message: 4,
                setup: Vec::new(),
            }
        }
        "shelly" => {
            let stamp = unique_ms.clone();
            let make: MakeMessage = std::sync::Arc::new(move |p, device, seq| {
                let src = format!("{id}-{p}-{device}");
                let t = stamp(p, device);
                (
                    format!("{src}/events/rpc"),
                    format!(
                        r#"{{"src":"{src}","dst":"user_1","method":"NotifyStatus","params":{{"ts":{}.{:03},"switch:0":{{"id":0,"apower":{}.5,"aenergy":{{"total":{},"by_minute":[0,0,0],"minute_ts":{}}}}}}}}}"#,
                        t / 1000,
                        t % 1000,
                        seq % 1000,
                        seq,
                        base_ms / 1000
                    )
                    .into_bytes(),
                )
            });
            ProfileLoad {
                config: "[[ingest.profile]]\nname = \"shelly\"\nsite = \"bench\"\n".into(),
                make,
                readings_per_message: 2,
                setup: Vec::new(),
            }
        }
        "zigbee2mqtt" => {
            let stamp = unique_ms.clone();
            let make: MakeMessage = std::sync::Arc::new(move |p, device, seq| {
                (
                    format!("zigbee2mqtt/{id}/floor{p}/plug{device}"),
                    format!(
                        r#"{{"current":0.05,"energy":{},"linkquality":120,"power":{},"state":"ON","voltage":230,"last_seen":{}}}"#,
                        seq,
                        seq % 1000,
                        stamp(p, device)
                    )
                    .into_bytes(),
                )
            });
            ProfileLoad {
                config: "[[ingest.profile]]\nname = \"zigbee2mqtt\"\nsite = \"bench\"\n".into(),
                make,
                readings_per_message: 4,
                setup: Vec::new(),
            }
        }
        _ => {
            // Four entities per device over one state topic, as Tasmota's
            // and ESPHome's discovery announce them; the time is the receipt.
            let prefix = format!("hab{id}");
            let mut setup = Vec::new();
            for device in 0..DEVICES {
                for (field, class, unit) in [
                    ("Total", "energy", "kWh"),
                    ("Power", "power", "W"),
                    ("Voltage", "voltage", "V"),
                    ("Current", "current", "A"),
                ] {
                    setup.push((
                        format!("{prefix}/sensor/{id}_{device}_{field}/config"),
                        format!(
                            r#"{{"stat_t":"{prefix}/{device}/SENSOR","uniq_id":"{id}_{device}_{field}","dev":{{"ids":["{id}-{device}"]}},"unit_of_meas":"{unit}","dev_cla":"{class}","val_tpl":"{{{{value_json['ENERGY']['{field}']}}}}"}}"#
                        )
                        .into_bytes(),
                    ));
                }
            }
            let topic_prefix = prefix.clone();
            let make: MakeMessage = std::sync::Arc::new(move |_p, device, seq| {
                (
                    format!("{topic_prefix}/{device}/SENSOR"),
                    format!(
                        r#"{{"ENERGY":{{"Total":{},"Power":{},"Voltage":230,"Current":0.5}}}}"#,
                        seq,
                        seq % 1000
                    )
                    .into_bytes(),
                )
            });
            ProfileLoad {
                config: format!(
                    "[ingest.homeassistant]\nenabled = true\nsite = \"bench\"\nprefix = \"{prefix}\"\n"
                ),
                make,
                readings_per_message: 4,
                setup,
            }
        }
    }
}

/// In-process routing throughput (readings/s on one core): the profile's
/// mappings (and the discovered ones) over the benchmark's own messages.
pub fn route_rate(load: &ProfileLoad) -> f64 {
    let Ok(config) = toml::from_str::<Config>(&load.config) else {
        return f64::NAN;
    };
    let mut set = MappingSet::new(config.ingest.all_mappings());
    let ha = &config.ingest.homeassistant;
    for (topic, payload) in &load.setup {
        if let Ok(Discovery::Sensors { mappings, .. }) = discover(&ha.prefix, topic, payload, None)
        {
            set.update(mappings, |_| true);
        }
    }
    let messages: Vec<(String, Vec<u8>)> = (0..DEVICES).map(|i| (load.make)(0, i, i)).collect();
    let started = std::time::Instant::now();
    let now = Utc::now();
    let mut readings = 0usize;
    while started.elapsed() < std::time::Duration::from_millis(500) {
        for (topic, body) in &messages {
            if let estatemon_domain::mapping::Routed::Mapped { results, .. } =
                set.route(topic, body, now, false)
            {
                readings += results.iter().map(|r| r.readings.len()).sum::<usize>();
            }
        }
    }
    readings as f64 / started.elapsed().as_secs_f64()
}
