use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn profile_mappings(name: &str) -> Vec<Mapping> {
    default_profile(name, Some("harbour-view"), Some("Asia/Hong_Kong")).unwrap()
}

/// What ingest makes of a message, as one result: every fitting
/// mapping's readings, or the first problem.
fn run(ms: &[Mapping], topic: &str, payload: &str) -> Result<Option<Mapped>, MappingError> {
    match route(
        ms,
        topic,
        payload.as_bytes(),
        at("2026-06-01T00:00:00Z"),
        false,
    ) {
        Routed::Mapped {
            mut results,
            errors,
            ..
        } => {
            if let Some(e) = errors.into_iter().next() {
                return Err(e);
            }
            if results.is_empty() {
                return Ok(None);
            }
            let mut first = results.remove(0);
            for r in results {
                first.readings.extend(r.readings);
                first.problems.extend(r.problems);
            }
            match first.problems.first() {
                Some(p) => Err(p.clone()),
                None => Ok(Some(first)),
            }
        }
        _ => Ok(None),
    }
}

#[test]
fn shipped_profiles_check() {
    for (name, _) in PROFILES {
        for m in profile_mappings(name) {
            m.check()
                .unwrap_or_else(|e| panic!("{name}/{}: {e:?}", m.name));
        }
    }
}

/// Verbatim from Tasmota's docs, docs/devices/Sonoff-Pow-R2.md
/// ("Telemetry"), tasmota/docs @ 9849ab94: `tele/pow1/SENSOR`.
const TASMOTA_POW_R2: &str = r#"{"Time":"2018-02-15T17:37:10","ENERGY":{"TotalStartTime":"2018-11-14T18:39:40","Total":6.294,"Yesterday":5.340,"Today":0.954,"Period":217,"Power":2635,"ApparentPower":2650,"ReactivePower":282,"Factor":0.99,"Voltage":227,"Current":11.661}}"#;

#[test]
fn tasmota_sensor_with_its_local_time() {
    let ms = profile_mappings("tasmota");
    let out = run(&ms, "tele/pow1/SENSOR", TASMOTA_POW_R2)
        .unwrap()
        .unwrap();
    assert_eq!(out.device_id, "pow1");
    assert_eq!(out.site.as_deref(), Some("harbour-view"));
    let get = |m: Metric| out.readings.iter().find(|r| r.metric == m).unwrap();
    assert_eq!(get(Metric::EnergyKwh).value, 6.294);
    assert!((get(Metric::PowerKw).value - 2.635).abs() < 1e-12);
    assert_eq!(get(Metric::VoltageV).value, 227.0);
    assert_eq!(get(Metric::CurrentA).value, 11.661);
    // Tasmota's Time is local (SetOption52 off): 17:37:10 in Hong Kong is
    // 09:37:10 UTC.
    assert_eq!(get(Metric::EnergyKwh).ts, at("2018-02-15T09:37:10Z"));
    // A STATE message on the same device is not energy: not this mapping.
    assert_eq!(
        run(&ms, "tele/pow1/STATE", r#"{"Time":"2021-01-03T10:17:05"}"#).unwrap(),
        None
    );
}

#[test]
fn shelly_channels_are_devices_and_partial_updates_carry_what_changed() {
    // Built from the Gen2 docs: the NotifyFullStatus envelope of
    // General/Notifications with a Switch status of the Switch page's fields
    // (apower W, voltage V, current A, aenergy.total Wh).
    let ms = profile_mappings("shelly");
    let full = r#"{"src":"shellyplus1pm-a8032ab12345","dst":"shellyplus1pm-a8032ab12345/events","method":"NotifyFullStatus","params":{"ts":1631266595.43,"switch:0":{"id":0,"source":"init","output":true,"apower":230.4,"voltage":229.8,"current":1.004,"aenergy":{"total":1234.5,"by_minute":[0,0,0],"minute_ts":1631266595}}}}"#;
    let out = run(&ms, "shellyplus1pm-a8032ab12345/events/rpc", full)
        .unwrap()
        .unwrap();
    let energy = out
        .readings
        .iter()
        .find(|r| r.metric == Metric::EnergyKwh)
        .unwrap();
    assert_eq!(energy.device_id, "shellyplus1pm-a8032ab12345-switch:0");
    assert!((energy.value - 1.2345).abs() < 1e-12, "Wh to kWh");
    assert_eq!(energy.ts, at("2021-09-10T09:36:35.430Z"));
    let partial = r#"{"src":"shellyplus1pm-a8032ab12345","dst":"x","method":"NotifyStatus","params":{"ts":1631266600.1,"switch:0":{"id":0,"apower":11.0}}}"#;
    // The docs' own Example 1 (verbatim): an output change, no energy.
    let example = r#"{"src": "shellypro4pm-f008d1d8b8b8","dst": "user_1","method": "NotifyStatus","params": {"ts": 1631186545.04,"switch:0": {"id": 0,"output": true,"source": "button"}}}"#;
    let out = run(&ms, "shellypro4pm-f008d1d8b8b8/events/rpc", example)
        .unwrap()
        .unwrap();
    assert!(out.readings.is_empty());
    let out = run(&ms, "shellyplus1pm-a8032ab12345/events/rpc", partial)
        .unwrap()
        .unwrap();
    assert_eq!(out.readings.len(), 1);
    assert_eq!(out.readings[0].metric, Metric::PowerKw);
}

#[test]
fn zigbee2mqtt_plugs_and_sensors() {
    let ms = profile_mappings("zigbee2mqtt");
    let out = run(
        &ms,
        "zigbee2mqtt/lobby_plug",
        r#"{"current":0.05,"energy":2.34,"linkquality":120,"power":11,"state":"ON","voltage":230}"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(out.device_id, "lobby_plug");
    assert_eq!(out.readings.len(), 4);
    let out = run(
        &ms,
        "zigbee2mqtt/roof_sensor",
        r#"{"battery":97,"humidity":61.5,"temperature":27.3,"linkquality":80}"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(out.readings[0].metric, Metric::TemperatureC);
    assert_eq!(
        out.readings[0].ts,
        at("2026-06-01T00:00:00Z"),
        "receipt time"
    );
    // With `advanced.last_seen: ISO_8601` (Zigbee2MQTT's docs, "Configuration
    // > Device-specific" / last_seen), the device's own time; a last_seen
    // that is not a time is still an error.
    let out = run(
        &ms,
        "zigbee2mqtt/roof_sensor",
        r#"{"humidity":61.5,"temperature":27.3,"last_seen":"2026-05-31T23:45:00.000Z"}"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(out.readings[0].ts, at("2026-05-31T23:45:00Z"));
    let err = run(
        &ms,
        "zigbee2mqtt/roof_sensor",
        r#"{"temperature":27.3,"last_seen":"yesterday"}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("last_seen"), "{err}");
}

#[test]
fn failures_name_the_mapping_and_the_path() {
    let ms = profile_mappings("tasmota");
    let e = run(
        &ms,
        "tele/t1/SENSOR",
        r#"{"Time":"2021-01-03T10:17:05","ENERGY":{"Power":3}}"#,
    )
    .unwrap_err();
    assert_eq!(e.mapping, "tasmota-energy");
    assert!(e.detail.contains("ENERGY.Total"), "{e}");
    let e = run(
        &ms,
        "tele/t1/SENSOR",
        r#"{"Time":"yesterday","ENERGY":{"Total":1}}"#,
    )
    .unwrap_err();
    assert_eq!(e.kind, MappingErrorKind::InvalidTimestamp);
    assert!(e.to_string().contains("`Time`"), "{e}");
    let e = run(
        &ms,
        "tele/t1/SENSOR",
        r#"{"Time":"2021-01-03T10:17:05","ENERGY":{"Total":"lots"}}"#,
    )
    .unwrap_err();
    assert_eq!(e.kind, MappingErrorKind::InvalidField);
    let e = run(&ms, "tele/t1/SENSOR", "not json").unwrap_err();
    assert_eq!(e.kind, MappingErrorKind::InvalidJson);
    assert_eq!(run(&ms, "other/t1/SENSOR", "{}").unwrap(), None);
}

#[test]
fn patterns_paths_and_checks() {
    let m: Mapping = toml::from_str(
        r#"
name = "gw"
topic = "gw/{site}/+/{device_id}/#"
time_path = "ts"
time_format = "epoch_ms"
[[value]]
path = "data[*].kwh"
metric = "energy_kwh"
device = "{device_id}-{key}"
"#,
    )
    .unwrap();
    m.check().unwrap();
    assert_eq!(m.filter(), "gw/+/+/+/#");
    let out = m
        .apply(
            "gw/hv/bus1/meter-7/up/extra",
            br#"{"ts":1780272000000,"data":[{"kwh":1.5},{"kwh":2.5}]}"#,
            at("2026-06-01T00:00:00Z"),
        )
        .unwrap()
        .unwrap();
    assert_eq!(out.site.as_deref(), Some("hv"));
    let ids: Vec<&str> = out.readings.iter().map(|r| r.device_id.as_str()).collect();
    assert_eq!(ids, ["meter-7-0", "meter-7-1"]);
    assert_eq!(out.readings[1].ts, at("2026-06-01T00:00:00Z"));
    assert!(m
        .apply("gw/hv/meter-7", b"{}", Utc::now())
        .unwrap()
        .is_none());

    let bad = |text: &str| {
        toml::from_str::<Mapping>(text)
            .unwrap()
            .check()
            .unwrap_err()
            .0
    };
    let base = "name = \"x\"\ntopic = \"t/{device_id}\"\n";
    assert_eq!(
        bad(&format!(
            "{base}[[value]]\npath = \"a\"\nmetric = \"energy_kwh\"\nunit = \"W\"\n"
        )),
        "value.unit"
    );
    assert_eq!(
        bad(&format!(
            "{base}[[value]]\npath = \"a[\"\nmetric = \"energy_kwh\"\n"
        )),
        "value.path"
    );
    assert_eq!(
        bad(&format!(
            "{base}time_format = \"local\"\n[[value]]\npath = \"a\"\nmetric = \"energy_kwh\"\n"
        )),
        "time_zone"
    );
    assert_eq!(
        bad("name = \"x\"\ntopic = \"t/#/x\"\n[[value]]\npath = \"a\"\nmetric = \"energy_kwh\"\n"),
        "topic"
    );
}

proptest::proptest! {
    /// Whatever the payload and topic, a mapping answers: readings with
    /// finite values, no match, or a reason.
    #[test]
    fn any_message_maps_or_says_why(topic in "[a-z0-9_/+#:]{0,40}", payload in proptest::collection::vec(proptest::num::u8::ANY, 0..300), json in "\\{(\"[A-Za-z*:.]{1,8}\":(-?[0-9.e]{1,8}|\"[a-z0-9:-]{0,10}\"|\\{\\}|\\[\\]),?){0,6}\\}") {
        for (name, _) in PROFILES {
            for m in profile_mappings(name) {
                for body in [payload.as_slice(), json.as_bytes()] {
                    if let Ok(Some(out)) = m.apply(&topic, body, Utc::now()) {
                        proptest::prop_assert!(out.readings.iter().all(|r| r.value.is_finite()));
                    }
                }
            }
        }
        let _ = select(&serde_json::json!({"a": [1, {"b": 2}]}), &topic);
    }
}

#[test]
fn availability_in_both_zigbee2mqtt_forms_and_tasmota_wills() {
    let z = &profile_mappings("zigbee2mqtt")[0];
    let said = |m: &Mapping, topic: &str, payload: &str| {
        m.apply_availability(topic, payload.as_bytes())
            .map(|r| r.map(|(d, _, online)| (d, online)))
    };
    assert_eq!(
        said(z, "zigbee2mqtt/plug/availability", r#"{"state":"offline"}"#),
        Some(Ok(("plug".into(), false)))
    );
    // 1.x legacy mode: plain text.
    assert_eq!(
        said(z, "zigbee2mqtt/plug/availability", "online"),
        Some(Ok(("plug".into(), true)))
    );
    assert_eq!(said(z, "zigbee2mqtt/plug", "{}"), None);
    let t = &profile_mappings("tasmota")[0];
    assert_eq!(
        said(t, "tele/pow1/LWT", "Offline"),
        Some(Ok(("pow1".into(), false)))
    );
    assert!(said(t, "tele/pow1/LWT", "maybe").unwrap().is_err());
}

#[test]
fn local_times_in_the_hour_clocks_go_back_and_channel_arrays() {
    let m = default_profile("tasmota", None, Some("Europe/London"))
        .unwrap()
        .remove(0);
    let body = br#"{"Time":"2026-10-25T01:30:00","ENERGY":{"Total":1.5,"Power":[12,0]}}"#;
    // 01:30 happens twice in London that night (BST, then GMT): the one
    // nearest the message's arrival is meant.
    let first = m
        .apply("tele/p/SENSOR", body, at("2026-10-25T00:31:00Z"))
        .unwrap()
        .unwrap();
    let second = m
        .apply("tele/p/SENSOR", body, at("2026-10-25T01:31:00Z"))
        .unwrap()
        .unwrap();
    assert_eq!(first.readings[0].ts, at("2026-10-25T00:30:00Z"));
    assert_eq!(second.readings[0].ts, at("2026-10-25T01:30:00Z"));
    // A two-channel device's `"Power":[12,0]`: one device per channel,
    // numbered as Tasmota numbers them (POWER1, POWER2).
    let got: Vec<(&str, Metric, f64)> = first
        .readings
        .iter()
        .map(|r| (r.device_id.as_str(), r.metric, r.value))
        .collect();
    assert_eq!(
        got,
        [
            ("p", Metric::EnergyKwh, 1.5),
            ("p-1", Metric::PowerKw, 0.012),
            ("p-2", Metric::PowerKw, 0.0)
        ]
    );
}

proptest::proptest! {
    /// Whatever a pattern and a topic are: a topic the pattern accepts is
    /// one its subscription filter delivers (nothing it could read is
    /// never received), a filter covering another delivers all it does,
    /// and routing through the shipped profiles never panics.
    #[test]
    fn patterns_filters_and_routing_agree(
        levels in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "+", "{device_id}", "{site}", "{x}", "{device_id+}", "#"]), 1..5),
        topic in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "c", "", "$s"]), 1..7),
        payload in "[ -~]{0,80}",
    ) {
        let pattern = levels.join("/");
        let topic = topic.join("/");
        if topic::check(&pattern).is_ok() {
            let filter = topic::filter_of(&pattern);
            if topic::captures(&pattern, &topic).is_some() && !topic.starts_with('$') {
                proptest::prop_assert!(topic::filter_matches(&filter, &topic), "{pattern} / {filter} / {topic}");
            }
            for other in ["a/#", "#", "a/+", "+/b", "a/b"] {
                if topic::covers(other, &filter) && topic::filter_matches(&filter, &topic) {
                    proptest::prop_assert!(topic::filter_matches(other, &topic), "{other} ⊇ {filter} / {topic}");
                }
            }
        }
        let all: Vec<Mapping> = PROFILES
            .iter()
            .flat_map(|(n, _)| profile_mappings(n))
            .collect();
        let _ = route(&all, &topic, payload.as_bytes(), Utc::now(), true);
        let _ = TimeFormat::Auto.parse(&serde_json::Value::String(payload.clone()), Some("Asia/Hong_Kong"), Utc::now());
    }
}

#[test]
fn a_removed_discovery_config_takes_exactly_its_own_entities() {
    use homeassistant::{discover, Discovery};
    let mut set = MappingSet::new(Vec::new());
    let apply = |set: &mut MappingSet, topic: &str, payload: &str| match discover(
        "homeassistant",
        topic,
        payload.as_bytes(),
        None,
    )
    .unwrap()
    {
        Discovery::Sensors {
            replaces, mappings, ..
        } => {
            set.discovered(&replaces, mappings);
        }
        Discovery::Removed(name) => set.removed(&name),
        Discovery::Ignored => {}
    };
    let sensor = |t: &str| format!(r#"{{"stat_t":"{t}","dev_cla":"power","unit_of_meas":"W"}}"#);
    apply(
        &mut set,
        "homeassistant/device/kitchen/config",
        r#"{"dev":{"ids":"kitchen"},"stat_t":"k/state","cmps":{"a":{"p":"sensor","dev_cla":"power","unit_of_meas":"W","val_tpl":"{{ value_json.a }}"},"b":{"p":"sensor","dev_cla":"energy","unit_of_meas":"kWh","val_tpl":"{{ value_json.b }}"}}}"#,
    );
    apply(&mut set, "homeassistant/sensor/plug/config", &sensor("p/1"));
    apply(
        &mut set,
        "homeassistant/sensor/plug/energy/config",
        &sensor("p/2"),
    );
    apply(
        &mut set,
        "homeassistant/sensor/plugx/config",
        &sensor("p/3"),
    );
    assert_eq!(set.mappings().len(), 5);
    // The device's components go with it; a sibling config whose name
    // merely starts the same stays.
    apply(&mut set, "homeassistant/device/kitchen/config", "");
    apply(&mut set, "homeassistant/sensor/plug/config", "");
    let left: Vec<&str> = set.mappings().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        left,
        [
            "homeassistant:sensor/plug/energy",
            "homeassistant:sensor/plugx"
        ]
    );
}
