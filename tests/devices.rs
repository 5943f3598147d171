//! A real fleet's messages in the forms their projects document, through
//! the real broker (Mosquitto) into the real database, one class of
//! message per case: Zigbee2MQTT, Tasmota, Shelly Gen2/Gen3 and Home
//! Assistant discovery, plus a gateway mapping of our own. Each case says
//! where its payload comes from and what must be stored; every message
//! either stores its readings or leaves a reason (a dead letter or a
//! counter) naming the mapping and the field. `estatemon mapping test`
//! must print exactly what ingest stored for the same topic and payload.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use estatemon_domain::config::ProfileConfig;
use estatemon_ingest::Ingestor;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// One documented message and what it must give.
struct Case {
    source: &'static str,
    topic: String,
    payload: String,
    /// Published retained before the ingestor subscribes.
    retained: bool,
    /// (device, metric, value, time when the message has its own).
    want: Vec<(String, &'static str, f64, Option<&'static str>)>,
    /// Dead letters on this topic: (reason, words its detail holds).
    letters: Vec<(&'static str, Vec<String>)>,
    /// Home Assistant configs the CLI must read first (topic, payload).
    discovery: Vec<(String, String)>,
}

fn case(source: &'static str, topic: String, payload: impl Into<String>) -> Case {
    Case {
        source,
        topic,
        payload: payload.into(),
        retained: false,
        want: Vec::new(),
        letters: Vec::new(),
        discovery: Vec::new(),
    }
}

impl Case {
    fn gives(mut self, device: &str, metric: &'static str, value: f64) -> Case {
        self.want.push((device.to_owned(), metric, value, None));
        self
    }
    fn at(mut self, ts: &'static str) -> Case {
        for w in &mut self.want {
            w.3 = Some(ts);
        }
        self
    }
    fn letter(mut self, reason: &'static str, words: &[&str]) -> Case {
        self.letters
            .push((reason, words.iter().map(|w| w.to_string()).collect()));
        self
    }
    fn retained(mut self) -> Case {
        self.retained = true;
        self
    }
}

/// Publishes at QoS 1 with the retain flag as asked; returns once the
/// broker acknowledged every message.
async fn publish(url: &str, messages: &[(String, Vec<u8>, bool)]) {
    let url = url::Url::parse(url).unwrap();
    let opts = MqttOptions::new(
        unique("pubr"),
        url.host_str().unwrap(),
        url.port().unwrap_or(1883),
    );
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let total = messages.len();
    let list = messages.to_vec();
    let sender = tokio::spawn(async move {
        for (topic, payload, retain) in list {
            client
                .publish(topic, QoS::AtLeastOnce, retain, payload)
                .await
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    while acked < total {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            other => panic!("publisher: {other:?} after {acked} of {total}"),
        }
    }
    let client = sender.await.unwrap();
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await;
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_form_is_stored_or_reported() {
    let db = TestDb::new(&admin_url());
    let mut c = config(&db, &broker_url());
    // The documentation's payloads are stamped 2021 and 2026: keep history.
    c.storage.retention_days = 0;
    let hk = || Some("Asia/Hong_Kong".to_owned());
    let site = || Some("harbour-view".to_owned());
    for name in ["tasmota", "shelly", "zigbee2mqtt"] {
        c.ingest.profiles.push(ProfileConfig {
            name: name.into(),
            site: site(),
            time_zone: hk(),
            ..Default::default()
        });
    }
    // A Tasmota fleet with a custom FullTopic, and Shellies under a
    // multi-level topic_prefix.
    let ft = unique("tasmotaft");
    c.ingest.profiles.push(ProfileConfig {
        name: "tasmota".into(),
        site: site(),
        time_zone: hk(),
        full_topic: Some(format!("{ft}/%topic%/%prefix%/")),
        ..Default::default()
    });
    let home = unique("home");
    c.ingest.profiles.push(ProfileConfig {
        name: "shelly".into(),
        site: site(),
        time_zone: hk(),
        topic_prefix: Some(format!("{home}/{{device_id+}}")),
        ..Default::default()
    });
    let ha = unique("ha");
    c.ingest.homeassistant.enabled = true;
    c.ingest.homeassistant.prefix = ha.clone();
    c.ingest.homeassistant.site = site();
    let g = unique("gw");
    for text in [
        format!(
            r#"name = "numbers"
topic = "{g}/{{device_id}}/up"
  [[value]]
  path = "reading"
  metric = "energy_kwh"
  unit = "Wh"
  [[value]]
  path = "v"
  metric = "voltage_v"
  [[value]]
  path = "s"
  metric = "apparent_power_kva"
  unit = "VA"
  optional = true"#
        ),
        format!(
            r#"name = "said-unit"
topic = "{g}/{{device_id}}/unit"
  [[value]]
  path = "value"
  metric = "energy_kwh"
  unit_path = "unit""#
        ),
        format!(
            r#"name = "three-fields"
topic = "{g}/{{device_id}}/multi"
  [[value]]
  path = "e"
  metric = "energy_kwh"
  [[value]]
  path = "p"
  metric = "power_kw"
  unit = "W"
  [[value]]
  path = "q"
  metric = "voltage_v""#
        ),
        // Two mappings whose filters overlap without one covering the
        // other: `{g}/fixed/ovl` fits both.
        format!(
            r#"name = "overlap-a"
topic = "{g}/{{device_id}}/ovl"
  [[value]]
  path = "x"
  metric = "power_kw""#
        ),
        format!(
            r#"name = "overlap-b"
topic = "{g}/fixed/{{device_id}}"
  [[value]]
  path = "x"
  metric = "power_kw""#
        ),
    ] {
        c.ingest.mappings.push(toml::from_str(&text).unwrap());
    }
    c.validate(None, None).expect("a valid configuration");

    let k = |p: &str| unique(p);
    let mut cases: Vec<Case> = Vec::new();

    // ---- Zigbee2MQTT (zigbee2mqtt.io: "MQTT topics and messages",
    // "Configuration > Devices and groups" friendly names with `/`,
    // advanced.last_seen, and the devices pages named below).
    let z1 = k("zfloor3");
    let grouped = format!("{z1}/corridor/plug");
    // devices/TS011F_plug_1.md exposes: state, power W, current A,
    // voltage V, energy kWh, linkquality.
    cases.push(
        case(
            "Z2M TS011F plug under a grouped friendly name",
            format!("zigbee2mqtt/{grouped}"),
            r#"{"current":0.05,"energy":2.34,"linkquality":120,"power":11,"state":"ON","voltage":230}"#,
        )
        .gives(&grouped, "energy_kwh", 2.34)
        .gives(&grouped, "power_kw", 0.011)
        .gives(&grouped, "current_a", 0.05)
        .gives(&grouped, "voltage_v", 230.0),
    );
    let z2 = k("zepoch");
    cases.push(
        case(
            "Z2M advanced.last_seen: epoch (milliseconds)",
            format!("zigbee2mqtt/{z2}"),
            r#"{"energy":5.1,"power":100,"last_seen":1772330400000}"#,
        )
        .gives(&z2, "energy_kwh", 5.1)
        .gives(&z2, "power_kw", 0.1)
        .at("2026-03-01T02:00:00Z"),
    );
    let z3 = k("zlocal");
    cases.push(
        case(
            "Z2M advanced.last_seen: ISO_8601_local (with its offset)",
            format!("zigbee2mqtt/{z3}"),
            r#"{"energy":5.2,"last_seen":"2026-03-01T10:00:00+08:00"}"#,
        )
        .gives(&z3, "energy_kwh", 5.2)
        .at("2026-03-01T02:00:00Z"),
    );
    let z4 = k("zdoor");
    // devices/MCCGQ11LM.md exposes: battery, voltage (mV), device_temperature,
    // power_outage_count, contact (true: closed), linkquality.
    cases.push(
        case(
            "Z2M Aqara door sensor MCCGQ11LM: contact, battery voltage in mV",
            format!("zigbee2mqtt/{z4}"),
            r#"{"battery":100,"contact":false,"device_temperature":24,"linkquality":87,"power_outage_count":5,"voltage":3045}"#,
        )
        .gives(&z4, "contact_closed", 0.0),
    );
    let z5 = k("zclimate");
    // devices/WSDCGQ11LM.md exposes: battery, voltage, temperature,
    // humidity, pressure (hPa, air), linkquality.
    cases.push(
        case(
            "Z2M Aqara WSDCGQ11LM temperature and humidity",
            format!("zigbee2mqtt/{z5}"),
            r#"{"battery":91,"humidity":55.1,"linkquality":120,"pressure":1001.5,"temperature":23.41,"voltage":2995}"#,
        )
        .gives(&z5, "temperature_c", 23.41)
        .gives(&z5, "humidity_pct", 55.1),
    );
    cases.push(case(
        "Z2M: a command to a device (zigbee2mqtt/<name>/set) carries no reading",
        format!("zigbee2mqtt/{grouped}/set"),
        r#"{"state":"ON"}"#,
    ));
    let z6 = k("zretained");
    cases.push(
        case(
            "Z2M retained state without last_seen, re-delivered at subscription",
            format!("zigbee2mqtt/{z6}"),
            r#"{"energy":9.9,"power":1}"#,
        )
        .retained(),
    );
    let z7 = k("zretainedts");
    cases.push(
        case(
            "Z2M retained state with last_seen: stored at its own time",
            format!("zigbee2mqtt/{z7}"),
            r#"{"energy":9.8,"last_seen":"2026-03-01T10:00:00+08:00"}"#,
        )
        .retained()
        .gives(&z7, "energy_kwh", 9.8)
        .at("2026-03-01T02:00:00Z"),
    );

    // ---- Tasmota (tasmota.github.io: "MQTT", "Commands" TimeZone and
    // SetOption52, "Full Topic", the device and sensor pages named).
    let t1 = k("toffset");
    cases.push(
        case(
            "Tasmota Pow R2 telemetry with Time carrying its offset (SetOption52 1)",
            format!("tele/{t1}/SENSOR"),
            r#"{"Time":"2026-03-01T10:00:00+08:00","ENERGY":{"TotalStartTime":"2025-01-01T00:00:00","Total":12.5,"Yesterday":1.0,"Today":0.5,"Power":120,"ApparentPower":130,"ReactivePower":50,"Factor":0.92,"Voltage":230,"Current":0.565}}"#,
        )
        .gives(&t1, "energy_kwh", 12.5)
        .gives(&t1, "power_kw", 0.12)
        .gives(&t1, "apparent_power_kva", 0.13)
        .gives(&t1, "power_factor", 0.92)
        .gives(&t1, "voltage_v", 230.0)
        .gives(&t1, "current_a", 0.565)
        .at("2026-03-01T02:00:00Z"),
    );
    let t2 = k("tnontp");
    cases.push(
        case(
            "Tasmota before NTP: Time in 1970",
            format!("tele/{t2}/SENSOR"),
            r#"{"Time":"1970-01-01T00:01:12","ENERGY":{"Total":3.1,"Power":5}}"#,
        )
        .gives(&t2, "energy_kwh", 3.1)
        .gives(&t2, "power_kw", 0.005)
        .letter("clock_unsynced", &["tasmota-energy", "1970", "receipt"]),
    );
    let t3 = k("tshelly25");
    let (t3a, t3b) = (format!("{t3}-1"), format!("{t3}-2"));
    // devices/Shelly-2.5.md telemetry: per-channel arrays, the board's
    // ANALOG temperature.
    cases.push(
        case(
            "Tasmota Shelly 2.5: per-channel arrays and the board's temperature",
            format!("tele/{t3}/SENSOR"),
            r#"{"Time":"2021-01-03T10:17:05","Switch1":"OFF","Switch2":"OFF","ANALOG":{"Temperature":43.1},"ENERGY":{"TotalStartTime":"2020-12-20T13:15:43","Total":0.030,"Yesterday":0.000,"Today":0.000,"Period":[0,0],"Power":[12,0],"ApparentPower":[20,0],"ReactivePower":[16,0],"Factor":[0.58,0.00],"Frequency":50,"Voltage":233,"Current":[0.085,0.000]},"TempUnit":"C"}"#,
        )
        .gives(&t3, "energy_kwh", 0.03)
        .gives(&t3, "voltage_v", 233.0)
        .gives(&t3a, "power_kw", 0.012)
        .gives(&t3b, "power_kw", 0.0)
        .gives(&t3a, "apparent_power_kva", 0.02)
        .gives(&t3b, "apparent_power_kva", 0.0)
        .gives(&t3a, "power_factor", 0.58)
        .gives(&t3b, "power_factor", 0.0)
        .gives(&t3a, "current_a", 0.085)
        .gives(&t3b, "current_a", 0.0)
        .at("2021-01-03T02:17:05Z"),
    );
    let t4 = k("tam2301");
    let t4s = format!("{t4}-AM2301");
    cases.push(
        case(
            "Tasmota AM2301 with TempUnit F (SetOption8 1)",
            format!("tele/{t4}/SENSOR"),
            r#"{"Time":"2026-03-01T10:00:00","AM2301":{"Temperature":71.6,"Humidity":45.0,"DewPoint":49.2},"TempUnit":"F"}"#,
        )
        .gives(&t4s, "temperature_c", 22.0)
        .gives(&t4s, "humidity_pct", 45.0)
        .at("2026-03-01T02:00:00Z"),
    );
    let t5 = k("tds18");
    let (t5a, t5b) = (format!("{t5}-DS18B20-1"), format!("{t5}-DS18B20-2"));
    cases.push(
        case(
            "Tasmota two DS18B20 sensors on one device",
            format!("tele/{t5}/SENSOR"),
            r#"{"Time":"2026-03-01T10:00:00","DS18B20-1":{"Id":"01131B8A4D6C","Temperature":21.3},"DS18B20-2":{"Id":"0113202F3DE4","Temperature":19.8},"TempUnit":"C"}"#,
        )
        .gives(&t5a, "temperature_c", 21.3)
        .gives(&t5b, "temperature_c", 19.8)
        .at("2026-03-01T02:00:00Z"),
    );
    let t6 = k("tfull");
    cases.push(
        case(
            "Tasmota with FullTopic %topic%-first (custom layout)",
            format!("{ft}/{t6}/tele/SENSOR"),
            r#"{"Time":"2026-03-01T10:00:00","ENERGY":{"Total":7.25,"Power":60}}"#,
        )
        .gives(&t6, "energy_kwh", 7.25)
        .gives(&t6, "power_kw", 0.06)
        .at("2026-03-01T02:00:00Z"),
    );
    let t7 = k("tnototal");
    cases.push(
        case(
            "Tasmota SENSOR without ENERGY.Total: the rest still stored",
            format!("tele/{t7}/SENSOR"),
            r#"{"Time":"2026-03-01T10:00:00","ENERGY":{"Power":60,"Voltage":231}}"#,
        )
        .gives(&t7, "power_kw", 0.06)
        .gives(&t7, "voltage_v", 231.0)
        .at("2026-03-01T02:00:00Z")
        .letter("missing_field", &["tasmota-energy", "ENERGY.Total"]),
    );

    // ---- Shelly Gen2/Gen3 (shelly-api-docs.shelly.cloud/gen2: General >
    // Notifications, Components > Switch, EM, EMData, Temperature,
    // Humidity; Plus H&T).
    let s1 = k("shellyplus1pm");
    let s1c = format!("{s1}-switch:0");
    // Switch.GetStatus example, published with mqtt.status_ntf.
    cases.push(
        case(
            "Shelly status notification <prefix>/status/switch:0",
            format!("{s1}/status/switch:0"),
            r#"{"id":0,"source":"timer","output":false,"apower":0,"voltage":225.9,"current":0,"aenergy":{"total":11.679,"by_minute":[0,0,0],"minute_ts":1654511972},"temperature":{"tC":53.3,"tF":127.9}}"#,
        )
        .gives(&s1c, "power_kw", 0.0)
        .gives(&s1c, "voltage_v", 225.9)
        .gives(&s1c, "current_a", 0.0)
        .gives(&s1c, "energy_kwh", 0.011679),
    );
    let s2 = k("kitchen");
    let s2src = k("shellyplus1pm");
    let s2c = format!("{s2src}-switch:0");
    cases.push(
        case(
            "Shelly with a custom multi-level topic_prefix: the device from src",
            format!("{home}/{s2}/plug/events/rpc"),
            format!(
                r#"{{"src":"{s2src}","dst":"user_1","method":"NotifyStatus","params":{{"ts":1772330400.5,"switch:0":{{"id":0,"apower":230.4,"aenergy":{{"total":1234.5,"by_minute":[0,0,0],"minute_ts":1772330400}}}}}}}}"#
            ),
        )
        .gives(&s2c, "power_kw", 0.2304)
        .gives(&s2c, "energy_kwh", 1.2345)
        .at("2026-03-01T02:00:00.500Z"),
    );
    let s3 = k("pro3em");
    let (em, ema, emb, emc) = (
        format!("{s3}-em:0"),
        format!("{s3}-em:0-a"),
        format!("{s3}-em:0-b"),
        format!("{s3}-em:0-c"),
    );
    // EM.GetStatus example (Pro 3EM).
    cases.push(
        case(
            "Shelly Pro 3EM em:0: per phase and totals",
            format!("{s3}/status/em:0"),
            r#"{"id":0,"a_current":4.029,"a_voltage":236.1,"a_act_power":951.2,"a_aprt_power":951.9,"a_pf":1,"b_current":4.027,"b_voltage":236.2,"b_act_power":-951.1,"b_aprt_power":951.9,"b_pf":1,"c_current":3.03,"c_voltage":236.3,"c_act_power":715.4,"c_aprt_power":715.8,"c_pf":1,"n_current":null,"total_current":11.087,"total_act_power":715.532,"total_aprt_power":2619.6}"#,
        )
        .gives(&ema, "current_a", 4.029)
        .gives(&ema, "voltage_v", 236.1)
        .gives(&ema, "power_kw", 0.9512)
        .gives(&ema, "apparent_power_kva", 0.9519)
        .gives(&ema, "power_factor", 1.0)
        .gives(&emb, "current_a", 4.027)
        .gives(&emb, "voltage_v", 236.2)
        .gives(&emb, "power_kw", -0.9511)
        .gives(&emb, "apparent_power_kva", 0.9519)
        .gives(&emb, "power_factor", 1.0)
        .gives(&emc, "current_a", 3.03)
        .gives(&emc, "voltage_v", 236.3)
        .gives(&emc, "power_kw", 0.7154)
        .gives(&emc, "apparent_power_kva", 0.7158)
        .gives(&emc, "power_factor", 1.0)
        .gives(&em, "current_a", 11.087)
        .gives(&em, "power_kw", 0.715532)
        .gives(&em, "apparent_power_kva", 2.6196),
    );
    let (ed, eda, edb, edc) = (
        format!("{s3}-emdata:0"),
        format!("{s3}-emdata:0-a"),
        format!("{s3}-emdata:0-b"),
        format!("{s3}-emdata:0-c"),
    );
    // EMData.GetStatus example: returned (exported) energy per phase.
    cases.push(
        case(
            "Shelly Pro 3EM emdata:0: energy and returned energy",
            format!("{s3}/status/emdata:0"),
            r#"{"id":0,"a_total_act_energy":1196.03,"a_total_act_ret_energy":0,"b_total_act_energy":0,"b_total_act_ret_energy":1153.78,"c_total_act_energy":862.49,"c_total_act_ret_energy":0,"total_act":2058.52,"total_act_ret":1153.78}"#,
        )
        .gives(&eda, "energy_kwh", 1.19603)
        .gives(&eda, "energy_export_kwh", 0.0)
        .gives(&edb, "energy_kwh", 0.0)
        .gives(&edb, "energy_export_kwh", 1.15378)
        .gives(&edc, "energy_kwh", 0.86249)
        .gives(&edc, "energy_export_kwh", 0.0)
        .gives(&ed, "energy_kwh", 2.05852)
        .gives(&ed, "energy_export_kwh", 1.15378),
    );
    let s4 = k("shellyplusht");
    let (s4t, s4h) = (format!("{s4}-temperature:0"), format!("{s4}-humidity:0"));
    cases.push(
        case(
            "Shelly Plus H&T NotifyFullStatus: temperature:0 and humidity:0",
            format!("{s4}/events/rpc"),
            format!(
                r#"{{"src":"{s4}","dst":"{s4}/events","method":"NotifyFullStatus","params":{{"ts":1772330400.12,"temperature:0":{{"id":0,"tC":21.6,"tF":70.9}},"humidity:0":{{"id":0,"rh":48.9}},"devicepower:0":{{"id":0,"battery":{{"V":5.9,"percent":100}},"external":{{"present":false}}}}}}}}"#
            ),
        )
        .gives(&s4t, "temperature_c", 21.6)
        .gives(&s4h, "humidity_pct", 48.9)
        .at("2026-03-01T02:00:00.120Z"),
    );
    let s5 = k("shellyplusht");
    let s5t = format!("{s5}-temperature:0");
    cases.push(
        case(
            "Shelly Plus H&T waking before its clock is set: ts in seconds since boot",
            format!("{s5}/events/rpc"),
            format!(
                r#"{{"src":"{s5}","dst":"{s5}/events","method":"NotifyStatus","params":{{"ts":34.5,"temperature:0":{{"id":0,"tC":20.1,"tF":68.2}}}}}}"#
            ),
        )
        .gives(&s5t, "temperature_c", 20.1)
        .letter("clock_unsynced", &["shelly-rpc", "34.5"]),
    );

    // ---- Home Assistant MQTT discovery (home-assistant.io/integrations/
    // mqtt: "Discovery messages", device-based discovery example; Tasmota's
    // legacy SetOption19 discovery for one SENSOR topic).
    let h1 = k("tasmotaha");
    let h1dev = format!("{h1}MAC");
    // A state topic no profile reads (Tasmota's own is read by its
    // profile, see the next case).
    let h1state = format!("{h1}/tele/SENSOR");
    let entity = |name: &str, class: &str, unit: &str, state_class: &str| {
        (
            format!("{ha}/sensor/{h1}_ENERGY_{name}/config"),
            format!(
                r#"{{"name":"Tasmota ENERGY {name}","stat_t":"{h1state}","avty_t":"tele/{h1}/LWT","pl_avail":"Online","pl_not_avail":"Offline","uniq_id":"{h1}_ENERGY_{name}","dev":{{"ids":["{h1dev}"]}},"unit_of_meas":"{unit}","dev_cla":"{class}"{state_class},"frc_upd":true,"val_tpl":"{{{{value_json['ENERGY']['{name}']}}}}"}}"#
            ),
        )
    };
    let h1configs = vec![
        entity(
            "Total",
            "energy",
            "kWh",
            r#","stat_cla":"total_increasing""#,
        ),
        entity("Power", "power", "W", ""),
        entity("Voltage", "voltage", "V", ""),
        entity("Current", "current", "A", ""),
    ];
    let mut h1case = case(
        "Home Assistant: four Tasmota entities over one state topic",
        h1state.clone(),
        r#"{"Time":"2026-03-01T10:00:00","ENERGY":{"Total":1.25,"Power":30,"Voltage":229,"Current":0.13}}"#,
    )
    .gives(&h1dev, "energy_kwh", 1.25)
    .gives(&h1dev, "power_kw", 0.03)
    .gives(&h1dev, "voltage_v", 229.0)
    .gives(&h1dev, "current_a", 0.13);
    h1case.discovery = h1configs.clone();
    // One entity's field missing: its dead letter, the siblings stored.
    let h6 = k("tasmotaha");
    let h6dev = format!("{h6}MAC");
    let h6state = format!("{h6}/tele/SENSOR");
    let mut h6case = case(
        "Home Assistant: one of two entities on a topic misses its field",
        h6state.clone(),
        r#"{"Time":"2026-03-01T10:05:00","ENERGY":{"Total":1.3,"Power":30}}"#,
    )
    .gives(&h6dev, "energy_kwh", 1.3)
    .letter("missing_field", &["ENERGY_Voltage", "ENERGY.Voltage"]);
    h6case.discovery = [("Total", "energy", "kWh"), ("Voltage", "voltage", "V")]
        .iter()
        .map(|(name, class, unit)| {
            (
                format!("{ha}/sensor/{h6}_ENERGY_{name}/config"),
                format!(
                    r#"{{"stat_t":"{h6state}","uniq_id":"{h6}_ENERGY_{name}","dev":{{"ids":["{h6dev}"]}},"unit_of_meas":"{unit}","dev_cla":"{class}","val_tpl":"{{{{value_json['ENERGY']['{name}']}}}}"}}"#
                ),
            )
        })
        .collect();
    // Tasmota's legacy discovery (SetOption19) announces its own SENSOR
    // topic, which the Tasmota profile already reads: read once, not
    // twice under two device ids.
    let h7 = k("tasmotaboth");
    let h7state = format!("tele/{h7}/SENSOR");
    let mut h7case = case(
        "Home Assistant entity on a topic the Tasmota profile reads: stored once",
        h7state.clone(),
        r#"{"Time":"2026-03-01T10:00:00","ENERGY":{"Total":2.5}}"#,
    )
    .gives(&h7, "energy_kwh", 2.5)
    .at("2026-03-01T02:00:00Z");
    h7case.discovery = vec![(
        format!("{ha}/sensor/{h7}_ENERGY_Total/config"),
        format!(
            r#"{{"stat_t":"{h7state}","uniq_id":"{h7}_ENERGY_Total","dev":{{"ids":["{h7}MAC"]}},"unit_of_meas":"kWh","dev_cla":"energy","val_tpl":"{{{{value_json['ENERGY']['Total']}}}}"}}"#
        ),
    )];
    let h2 = k("kitchenha");
    let h2state = format!("{h2}/sensorBedroom/state");
    let mut h2case = case(
        "Home Assistant device-based discovery (cmps): the docs' example",
        h2state.clone(),
        r#"{"temperature":23.20,"humidity":43.70}"#,
    )
    .gives(&h2, "temperature_c", 23.2)
    .gives(&h2, "humidity_pct", 43.7);
    h2case.discovery = vec![(
        format!("{ha}/device/{h2}/config"),
        format!(
            r#"{{"dev":{{"ids":"{h2}","name":"Kitchen","mf":"Bla electronics","mdl":"xya","sw":"1.0","sn":"ea334450945afc","hw":"1.0rev2"}},"o":{{"name":"bla2mqtt","sw":"2.1","url":"https://bla2mqtt.example.com/support"}},"cmps":{{"some_unique_component_id1":{{"p":"sensor","device_class":"temperature","unit_of_measurement":"°C","value_template":"{{{{ value_json.temperature}}}}","unique_id":"temp01ae_t"}},"some_unique_id2":{{"p":"sensor","device_class":"humidity","unit_of_measurement":"%","value_template":"{{{{ value_json.humidity}}}}","unique_id":"temp01ae_h"}},"some_unique_id3":{{"p":"binary_sensor","device_class":"door","value_template":"{{{{ value_json.door}}}}"}}}},"state_topic":"{h2state}","qos":2}}"#
        ),
    )];
    let h3 = k("plugha");
    let h3state = format!("{h3}/plug/state");
    let mut h3case = case(
        "Home Assistant templates with | round(1) and | float / 1000",
        h3state.clone(),
        r#"{"power":12.345,"energy_wh":1234}"#,
    )
    .gives(&h3, "power_kw", 0.0123)
    .gives(&h3, "energy_kwh", 1.234);
    h3case.discovery = vec![
        (
            format!("{ha}/sensor/{h3}/power/config"),
            format!(
                r#"{{"dev_cla":"power","unit_of_meas":"W","val_tpl":"{{{{ value_json.power | round(1) }}}}","stat_t":"{h3state}","dev":{{"ids":["{h3}"]}}}}"#
            ),
        ),
        (
            format!("{ha}/sensor/{h3}/energy/config"),
            format!(
                r#"{{"dev_cla":"energy","unit_of_meas":"kWh","stat_cla":"total_increasing","val_tpl":"{{{{ value_json.energy_wh | float / 1000 }}}}","stat_t":"{h3state}","dev":{{"ids":["{h3}"]}}}}"#
            ),
        ),
    ];
    let h4 = k("unitsha");
    let h4state = format!("{h4}/meter/state");
    let mut h4case = case(
        "Home Assistant units as it writes them: L/h, mA, m³/h",
        h4state.clone(),
        r#"{"flow":120,"ma":250,"m3h":2.5}"#,
    )
    .gives(&format!("{h4}-lh"), "flow_m3h", 0.12)
    .gives(&format!("{h4}-ma"), "current_a", 0.25)
    .gives(&format!("{h4}-m3h"), "flow_m3h", 2.5);
    h4case.discovery = [
        ("lh", "volume_flow_rate", "L/h", "flow"),
        ("ma", "current", "mA", "ma"),
        ("m3h", "volume_flow_rate", "m³/h", "m3h"),
    ]
    .iter()
    .map(|(id, class, unit, key)| {
        (
            format!("{ha}/sensor/{h4}/{id}/config"),
            format!(
                r#"{{"dev_cla":"{class}","unit_of_meas":"{unit}","val_tpl":"{{{{ value_json.{key} }}}}","stat_t":"{h4state}","dev":{{"ids":["{h4}-{id}"]}}}}"#
            ),
        )
    })
    .collect();
    cases.extend([h1case, h2case, h3case, h4case, h6case, h7case]);

    // ---- A gateway of our own (the issue's own examples).
    let g1 = k("meter");
    cases.push(
        case(
            "numeric strings with leading zeros, and apparent power in VA",
            format!("{g}/{g1}/up"),
            r#"{"reading":"007970903","v":"230.1","s":2650}"#,
        )
        .gives(&g1, "energy_kwh", 7970.903)
        .gives(&g1, "voltage_v", 230.1)
        .gives(&g1, "apparent_power_kva", 2.65),
    );
    let g2 = k("meter");
    cases.push(
        case(
            "the unit read from the payload",
            format!("{g}/{g2}/unit"),
            r#"{"value":12.5,"unit":"Wh"}"#,
        )
        .gives(&g2, "energy_kwh", 0.0125),
    );
    let g3 = k("meter");
    cases.push(
        case(
            "one field not a number, one missing: the third stored",
            format!("{g}/{g3}/multi"),
            r#"{"e":1.5,"p":"n/a"}"#,
        )
        .gives(&g3, "energy_kwh", 1.5)
        .letter("invalid_field", &["three-fields", "`p`", "n/a"])
        .letter("missing_field", &["three-fields", "`q`"]),
    );
    cases.push(
        case(
            "a message two of our subscriptions match is handled once",
            format!("{g}/fixed/ovl"),
            "not json",
        )
        .letter("invalid_json", &["overlap-a", "overlap-b"]),
    );

    // Retained messages first (the broker hands them over at subscription).
    let retained: Vec<(String, Vec<u8>, bool)> = cases
        .iter()
        .filter(|c| c.retained)
        .map(|c| (c.topic.clone(), c.payload.clone().into_bytes(), true))
        .collect();
    publish(&c.mqtt.url, &retained).await;
    let ingestor = Ingestor::start(c.clone()).await.expect("ingestor starts");
    assert!(ingestor.subscribed(Duration::from_secs(10)).await);
    let configs: Vec<(String, Vec<u8>, bool)> = cases
        .iter()
        .flat_map(|c| c.discovery.iter())
        .map(|(t, p)| (t.clone(), p.clone().into_bytes(), false))
        .collect();
    publish(&c.mqtt.url, &configs).await;
    // The discovered state topics are subscribed as their configs are
    // read; wait until the last one's mapping works.
    let h4probe = (h4state.clone(), b"{\"flow\":1}".to_vec(), false);
    assert!(
        eventually(Duration::from_secs(20), || {
            let (url, probe, db) = (c.mqtt.url.clone(), h4probe.clone(), &db);
            let dev = format!("{h4}-lh");
            async move {
                publish(&url, &[probe]).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                db.count(&format!(
                    "SELECT count(*) FROM readings WHERE device_id = '{dev}'"
                ))
                .await
                    > 0
            }
        })
        .await,
        "discovered topics subscribed"
    );
    // The probe's own readings and dead letters are not the case's.
    let cleanup = db.client().await;
    cleanup
        .execute(
            "DELETE FROM readings WHERE device_id LIKE $1",
            &[&format!("{h4}%")],
        )
        .await
        .unwrap();
    cleanup
        .execute("DELETE FROM dead_letters WHERE topic = $1", &[&h4state])
        .await
        .unwrap();
    let live: Vec<(String, Vec<u8>, bool)> = cases
        .iter()
        .filter(|c| !c.retained)
        .map(|c| (c.topic.clone(), c.payload.clone().into_bytes(), false))
        .collect();
    publish(&c.mqtt.url, &live).await;
    // Then the grouped plug goes offline (its availability topic).
    publish(
        &c.mqtt.url,
        &[(
            format!("zigbee2mqtt/{grouped}/availability"),
            br#"{"state":"offline"}"#.to_vec(),
            false,
        )],
    )
    .await;
    let expected: usize = cases.iter().map(|c| c.want.len()).sum();
    let client = db.client().await;
    let devices: Vec<String> = cases
        .iter()
        .flat_map(|c| c.want.iter().map(|w| w.0.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let stored = eventually(Duration::from_secs(30), || async {
        db.count(&format!(
            "SELECT count(*) FROM readings WHERE device_id IN ({})",
            devices
                .iter()
                .map(|d| format!("'{d}'"))
                .collect::<Vec<_>>()
                .join(",")
        ))
        .await as usize
            >= expected
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // What was stored, per case: exactly the readings it must give.
    let mut failures = Vec::new();
    let mut config_file = tempfile(&toml::to_string(&c).unwrap());
    for case in &cases {
        let mut devices: Vec<String> = case.want.iter().map(|w| w.0.clone()).collect();
        devices.sort();
        devices.dedup();
        let rows = client
            .query(
                "SELECT device_id, metric, value, ts FROM readings WHERE device_id = ANY($1) \
                 ORDER BY device_id, metric",
                &[&devices],
            )
            .await
            .unwrap();
        let got: Vec<(String, String, f64, chrono::DateTime<chrono::Utc>)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        for (device, metric, value, ts) in &case.want {
            let found = got
                .iter()
                .filter(|g| &g.0 == device && g.1 == *metric)
                .collect::<Vec<_>>();
            let ok = found.len() == 1
                && close(found[0].2, *value)
                && ts.is_none_or(|t| {
                    found[0].3.to_rfc3339()
                        == chrono::DateTime::parse_from_rfc3339(t)
                            .unwrap()
                            .with_timezone(&chrono::Utc)
                            .to_rfc3339()
                });
            if !ok {
                failures.push(format!(
                    "{}: want {device} {metric} = {value} at {ts:?}; got {found:?}",
                    case.source
                ));
            }
        }
        if got.len() != case.want.len() {
            failures.push(format!(
                "{}: {} readings stored for its devices, {} expected: {got:?}",
                case.source,
                got.len(),
                case.want.len()
            ));
        }
        let letters = dead_letter_reasons(&client, &case.topic).await;
        for (reason, words) in &case.letters {
            if !letters
                .iter()
                .any(|(r, d)| r == reason && words.iter().all(|w| d.contains(w.as_str())))
            {
                failures.push(format!(
                    "{}: no {reason} dead letter with {words:?}: {letters:?}",
                    case.source
                ));
            }
        }
        if letters.len() != case.letters.len() {
            failures.push(format!(
                "{}: {} dead letters, {} expected: {letters:?}",
                case.source,
                letters.len(),
                case.letters.len()
            ));
        }
        // `estatemon mapping test` prints what ingest stored.
        let mut cmd = estatemon(&db);
        cmd.arg("--config")
            .arg(config_file.path())
            .args(["mapping", "test", "--topic", &case.topic, "--payload"])
            .arg(&case.payload);
        if case.retained {
            cmd.arg("--retained");
        }
        for (t, p) in &case.discovery {
            cmd.arg("--discovery").arg(format!("{t}={p}"));
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let printed: BTreeSet<(String, String, String)> = text
            .lines()
            .filter_map(|l| {
                let l = l.strip_prefix("  ")?;
                let mut parts = l.split("  ");
                let (_ts, device, rest) = (parts.next()?, parts.next()?, parts.next()?);
                let (metric, value) = rest.split_once(" = ")?;
                let value: f64 = value.split(' ').next()?.parse().ok()?;
                Some((device.to_owned(), metric.to_owned(), format!("{value:.9}")))
            })
            .collect();
        let want: BTreeSet<(String, String, String)> = case
            .want
            .iter()
            .map(|(d, m, v, _)| (d.clone(), m.to_string(), format!("{v:.9}")))
            .collect();
        // Exit 0 only when every field was read (a clock report is not a
        // loss).
        let clean = case.letters.iter().all(|(r, _)| *r == "clock_unsynced");
        if printed != want || out.status.success() != (!case.want.is_empty() && clean) {
            failures.push(format!(
                "{}: `mapping test` printed {printed:?} (exit {:?}), ingest must store {want:?}\n{text}{}",
                case.source,
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    config_file.remove();
    assert!(stored && failures.is_empty(), "{}", failures.join("\n"));

    // The retained state without a time of its own was not stored.
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM readings WHERE device_id = '{z6}'"
        ))
        .await,
        0
    );
    // The entity on the Tasmota profile's own topic was not read again.
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM readings WHERE device_id = '{h7}MAC'"
        ))
        .await,
        0
    );
    // The grouped plug's availability reached it.
    let offline: bool = client
        .query_one(
            "SELECT offline_since IS NOT NULL FROM devices WHERE device_id = $1",
            &[&grouped],
        )
        .await
        .unwrap()
        .get(0);
    assert!(offline, "zigbee2mqtt/{grouped}/availability");
    // What stored nothing is counted, by mapping and outcome.
    let metrics = http_get(&ingestor.http_addr.to_string(), "/metrics").await;
    for (labels, min) in [
        (
            r#"estatemon_ingest_mapping_outcomes_total{mapping="zigbee2mqtt-metering",outcome="ignored"}"#,
            1.0,
        ),
        (
            r#"estatemon_ingest_mapping_outcomes_total{mapping="zigbee2mqtt-metering",outcome="retained_without_time"}"#,
            1.0,
        ),
        (
            r#"estatemon_ingest_mapping_outcomes_total{mapping="tasmota-sensors",outcome="no_readings"}"#,
            1.0,
        ),
        (
            r#"estatemon_ingest_mapping_outcomes_total{mapping="tasmota-energy",outcome="clock_unsynced"}"#,
            1.0,
        ),
        ("estatemon_ingest_overlapping_copies_total", 1.0),
        (
            r#"estatemon_ingest_mapping_outcomes_total{mapping="tasmota-energy",outcome="discovery_skipped"}"#,
            1.0,
        ),
    ] {
        assert!(metric(&metrics, labels) >= min, "{labels}\n{metrics}");
    }
    ingestor.shutdown().await;
    // Leave no retained message behind on the shared broker.
    let clear: Vec<(String, Vec<u8>, bool)> = cases
        .iter()
        .filter(|c| c.retained)
        .map(|c| (c.topic.clone(), Vec::new(), true))
        .chain(
            cases
                .iter()
                .flat_map(|c| c.discovery.iter())
                .map(|(t, _)| (t.clone(), Vec::new(), true)),
        )
        .collect();
    publish(&c.mqtt.url, &clear).await;
}

/// A file removed when asked (the configuration the CLI reads).
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
    fn remove(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tempfile(text: &str) -> TempFile {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("estatemon-devices")));
    std::fs::write(&path, text).unwrap();
    TempFile(path)
}

/// Home Assistant configs are retained: an ingestor that restarts on its
/// persistent session reads them again (they are sent on every subscribe)
/// and its discovered state topics keep being read, not turned into
/// `unknown_topic` dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_survives_a_restart_of_the_ingestor() {
    let db = TestDb::new(&admin_url());
    let c = config(&db, &broker_url());
    discovery_survives_a_restart(&db, c).await;
}

/// The same over the clustered transport: the config is retained by a
/// NATS node's MQTT gateway, ingest (`source = "nats"`) reads configs and
/// the discovered state topic over its MQTT 3.1.1 session there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_through_a_nats_node_survives_a_restart_of_the_ingestor() {
    let cluster = cluster(1);
    let db = TestDb::new(&admin_url());
    let c = nats_config(&db, &cluster);
    discovery_survives_a_restart(&db, c).await;
}

async fn discovery_survives_a_restart(db: &TestDb, mut c: estatemon_domain::config::Config) {
    let ha = unique("ha");
    c.ingest.homeassistant.enabled = true;
    c.ingest.homeassistant.prefix = ha.clone();
    let dev = unique("restart");
    let state = format!("{dev}/sensor/state");
    let config_topic = format!("{ha}/sensor/{dev}/power/config");
    publish(
        &c.mqtt.url,
        &[(
            config_topic.clone(),
            format!(
                r#"{{"stat_t":"{state}","dev_cla":"power","unit_of_meas":"W","val_tpl":"{{{{ value_json.p }}}}","dev":{{"ids":["{dev}"]}}}}"#
            )
            .into_bytes(),
            true,
        )],
    )
    .await;
    for round in 1..=2 {
        let ingestor = Ingestor::start(c.clone()).await.expect("ingestor starts");
        assert!(ingestor.subscribed(Duration::from_secs(10)).await);
        let stored = eventually(Duration::from_secs(20), || {
            let (url, state, db, dev) = (c.mqtt.url.clone(), state.clone(), db, dev.clone());
            async move {
                publish(
                    &url,
                    &[(state, format!(r#"{{"p":{round}00}}"#).into_bytes(), false)],
                )
                .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                db.count(&format!(
                    "SELECT count(*) FROM readings WHERE device_id = '{dev}' AND value = 0.{round}"
                ))
                .await
                    > 0
            }
        })
        .await;
        ingestor.shutdown().await;
        assert!(stored, "round {round}: the discovered topic is read");
    }
    let client = db.client().await;
    let letters = dead_letter_reasons(&client, &state).await;
    assert!(letters.is_empty(), "{letters:?}");
    publish(&c.mqtt.url, &[(config_topic, Vec::new(), true)]).await;
}
