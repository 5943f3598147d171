//! Devices that speak their own formats, through the real broker into the
//! real database by configuration alone: the shipped Tasmota, Shelly and
//! Zigbee2MQTT profiles and a custom gateway mapping. Payloads come from
//! each project's documentation (sources beside each), and what a mapping
//! cannot read is a dead letter that names the mapping and the path.

mod common;

use std::time::Duration;

use common::*;
use estatemon_domain::config::ProfileConfig;
use estatemon_ingest::Ingestor;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_and_a_gateway_mapping_store_real_device_payloads() {
    let db = TestDb::new(&admin_url());
    let mut c = config(&db, &broker_url());
    // The documentation's payloads are stamped 2018 and 2021: keep history.
    c.storage.retention_days = 0;
    c.registry.file = Some(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("simulators/sites/harbour-view.toml"),
    );
    for name in ["tasmota", "shelly", "zigbee2mqtt"] {
        c.ingest.profiles.push(ProfileConfig {
            name: name.into(),
            site: Some("harbour-view".into()),
            time_zone: Some("Asia/Hong_Kong".into()),

            ..Default::default()
        });
    }
    let gw = unique("gw");
    c.ingest.mappings.push(
        toml::from_str(&format!(
            r#"
name = "plant-room-gateway"
topic = "{gw}/{{site}}/+/{{device_id}}"
when = [{{ path = "type", equals = "meter" }}]
time_path = "ts"
time_format = "epoch_ms"
  [[value]]
  path = "channels[*].wh"
  metric = "energy_kwh"
  unit = "Wh"
  device = "{{device_id}}-ch{{key}}"
"#
        ))
        .unwrap(),
    );
    c.validate(None, None).expect("a valid configuration");
    let ingestor = Ingestor::start(c.clone()).await.expect("ingestor starts");
    assert!(ingestor.subscribed(Duration::from_secs(10)).await);

    let plug = unique("pow");
    let shelly = unique("shellypro4pm");
    let zb = unique("lobby_plug");
    let messages: Vec<(String, Vec<u8>)> = vec![
        // Tasmota docs, docs/devices/Sonoff-Pow-R2.md ("Telemetry"), tasmota/docs
        // @ 9849ab94: Time is local (SetOption52 off), Total kWh, Power W.
        (
            format!("tele/{plug}/SENSOR"),
            br#"{"Time":"2018-02-15T17:37:10","ENERGY":{"TotalStartTime":"2018-11-14T18:39:40","Total":6.294,"Yesterday":5.340,"Today":0.954,"Period":217,"Power":2635,"ApparentPower":2650,"ReactivePower":282,"Factor":0.99,"Voltage":227,"Current":11.661}}"#.to_vec(),
        ),
        // A SENSOR message of an analog input (no ENERGY): the topic fits
        // the profile, its `when` does not: a dead letter that says so.
        (
            format!("tele/{plug}/SENSOR"),
            br#"{"Time":"2018-02-15T17:37:20","ANALOG":{"A0":17}}"#.to_vec(),
        ),
        // Shelly Gen2 docs, General/Notifications Example 1 (the envelope,
        // verbatim) with a Switch status built from the Switch page's
        // fields: apower W, voltage V, aenergy.total Wh.
        (
            format!("{shelly}/events/rpc"),
            format!(
                r#"{{"src": "{shelly}","dst": "user_1","method": "NotifyStatus","params": {{"ts": 1631186545.04,"switch:0": {{"id": 0,"output": true,"source": "button","apower": 230.4,"voltage": 237.571,"aenergy": {{"total": 14.093,"by_minute": [0,0,0],"minute_ts": 1631186545}}}}}}}}"#
            )
            .into_bytes(),
        ),
        // Zigbee2MQTT, docs/devices/TS011F_plug_1.md exposes: state, power W,
        // current A, voltage V, energy kWh, linkquality.
        (
            format!("zigbee2mqtt/{zb}"),
            br#"{"current":0.05,"energy":10.48,"linkquality":39,"power":11,"state":"ON","voltage":223}"#.to_vec(),
        ),
        // A gateway of our own design: two channels in Wh, epoch ms.
        (
            format!("{gw}/harbour-view/bus1/pump-meter"),
            br#"{"type":"meter","ts":1780272000000,"channels":[{"wh":1500},{"wh":2500}]}"#.to_vec(),
        ),
        // Its Last Will (Tasmota docs/MQTT.md): offline, then the Zigbee
        // plug's availability in the 2.x JSON form.
        (format!("tele/{plug}/LWT"), b"Offline".to_vec()),
        (
            format!("zigbee2mqtt/{zb}/availability"),
            br#"{"state":"online"}"#.to_vec(),
        ),
        (format!("tele/{plug}/LWT"), b"Gone fishing".to_vec()),
        // Failures: a Tasmota SENSOR without ENERGY.Total, a gateway frame
        // whose time cannot be read, a Shelly frame that is not JSON.
        (
            format!("tele/{plug}/SENSOR"),
            br#"{"Time":"2018-02-15T17:38:10","ENERGY":{"Power":2600}}"#.to_vec(),
        ),
        (
            format!("{gw}/harbour-view/bus1/pump-meter"),
            br#"{"type":"meter","ts":"soon","channels":[{"wh":1}]}"#.to_vec(),
        ),
        (format!("{shelly}/events/rpc"), b"{not json".to_vec()),
    ];
    publish_all(&c.mqtt.url, messages).await;
    let client = db.client().await;
    let stored = eventually(Duration::from_secs(20), || async {
        db.count("SELECT count(*) FROM dead_letters").await >= 5
            && db.count("SELECT count(*) FROM readings").await >= 14
    })
    .await;
    if !stored {
        let rows = client
            .query("SELECT topic, reason, detail FROM dead_letters", &[])
            .await
            .unwrap();
        let letters: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2)
                )
            })
            .collect();
        panic!(
            "readings {}; dead letters {letters:#?}",
            db.count("SELECT count(*) FROM readings").await
        );
    }
    let value = |device: String, metric: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(
                    // The first of the device's messages (a later one, without
                    // ENERGY.Total, still stores its power).
                    "SELECT value, ts FROM readings WHERE device_id = $1 AND metric = $2 \
                     ORDER BY ts LIMIT 1",
                    &[&device, &metric],
                )
                .await
                .unwrap_or_else(|e| panic!("{device} {metric}: {e}"))
        }
    };
    let tasmota = value(plug.clone(), "energy_kwh").await;
    assert_eq!(tasmota.get::<_, f64>(0), 6.294);
    // 17:37:10 Hong Kong time is 09:37:10 UTC.
    assert_eq!(
        tasmota
            .get::<_, chrono::DateTime<chrono::Utc>>(1)
            .to_rfc3339(),
        "2018-02-15T09:37:10+00:00"
    );
    assert!((value(plug.clone(), "power_kw").await.get::<_, f64>(0) - 2.635).abs() < 1e-9);
    let sw = value(format!("{shelly}-switch:0"), "energy_kwh").await;
    assert!((sw.get::<_, f64>(0) - 0.014093).abs() < 1e-12, "Wh → kWh");
    assert!((value(zb.clone(), "energy_kwh").await.get::<_, f64>(0) - 10.48).abs() < 1e-12);
    assert!(
        (value("pump-meter-ch1".into(), "energy_kwh")
            .await
            .get::<_, f64>(0)
            - 2.5)
            .abs()
            < 1e-12
    );
    // Devices first seen through a mapping are registered, with the site.
    let site: String = client
        .query_one("SELECT site_id FROM devices WHERE device_id = $1", &[&zb])
        .await
        .unwrap()
        .get(0);
    assert_eq!(site, "harbour-view");
    // Every failure kept, with the mapping and the path in its reason.
    let letters = dead_letter_reasons(&client, "%").await;
    let has = |reason: &str, words: &[&str]| {
        letters
            .iter()
            .any(|(r, d)| r == reason && words.iter().all(|w| d.contains(w)))
    };
    assert!(
        has("unknown_topic", &["tasmota-energy", "meets none's `when`"]),
        "{letters:?}"
    );
    assert!(
        has("missing_field", &["tasmota-energy", "ENERGY.Total"]),
        "{letters:?}"
    );
    assert!(
        has("invalid_timestamp", &["plant-room-gateway", "`ts`"]),
        "{letters:?}"
    );
    assert!(has("invalid_json", &["shelly-rpc"]), "{letters:?}");
    assert!(
        has(
            "invalid_field",
            &["tasmota-energy", "Gone fishing", "Offline"]
        ),
        "{letters:?}"
    );
    // The Will marked the plug offline (the stale rules page at once); the
    // Zigbee plug said it is online.
    let offline = |d: String| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT offline_since IS NOT NULL FROM devices WHERE device_id = $1",
                    &[&d],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };
    assert!(offline(plug.clone()).await);
    assert!(!offline(zb.clone()).await);
    ingestor.shutdown().await;
}

/// Home Assistant MQTT discovery: devices that announce themselves are read
/// without a mapping of ours. The first config is the Home Assistant docs'
/// own "Sensors" example (MQTT discovery page: a bedroom sensor announcing
/// temperature on a JSON state topic); the second is an ESPHome-style
/// abbreviated config (`~`, `stat_t`, `dev_cla`, Wh, a bare-number state)
/// built from the keys the same page lists; the third has a template
/// estatemon does not understand and must be a dead letter saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_discovery_reads_what_devices_announce() {
    let db = TestDb::new(&admin_url());
    let mut c = config(&db, &broker_url());
    let prefix = unique("ha");
    c.ingest.homeassistant.enabled = true;
    c.ingest.homeassistant.prefix = prefix.clone();
    c.ingest.homeassistant.site = Some("harbour-view".into());
    c.validate(None, None).expect("a valid configuration");
    let ingestor = Ingestor::start(c.clone()).await.expect("ingestor starts");
    assert!(ingestor.subscribed(Duration::from_secs(10)).await);

    let bedroom = unique("bedroom");
    let plug = unique("plug");
    let state = format!("{prefix}/sensor/{bedroom}/state");
    publish_all(
        &c.mqtt.url,
        vec![
            (
                format!("{prefix}/sensor/{bedroom}T/config"),
                format!(
                    r#"{{"device_class":"temperature","state_topic":"{state}","unit_of_measurement":"°C","value_template":"{{{{ value_json.temperature}}}}","unique_id":"temp01ae","device":{{"identifiers":["{bedroom}"],"name":"Bedroom"}}}}"#
                )
                .into_bytes(),
            ),
            (
                format!("{prefix}/sensor/{plug}/energy/config"),
                format!(
                    r#"{{"~":"{plug}/sensor/energy","stat_t":"~/state","dev_cla":"energy","stat_cla":"total_increasing","unit_of_meas":"Wh","uniq_id":"{plug}-energy","dev":{{"ids":["{plug}"]}},"avty_t":"{plug}/status"}}"#
                )
                .into_bytes(),
            ),
            (
                format!("{prefix}/sensor/{plug}/power/config"),
                format!(
                    r#"{{"stat_t":"{plug}/sensor/power/state","dev_cla":"power","unit_of_meas":"W","val_tpl":"{{{{ value_json.p + 1000 }}}}","dev":{{"ids":["{plug}"]}}}}"#
                )
                .into_bytes(),
            ),
        ],
    )
    .await;
    // The state topics are subscribed when their configs are read: send
    // the states until they are stored.
    let stored = eventually(Duration::from_secs(20), || {
        let url = c.mqtt.url.clone();
        let (state, plug) = (state.clone(), plug.clone());
        let db = &db;
        async move {
            publish_all(
                &url,
                vec![
                    (
                        state,
                        br#"{ "temperature": 23.20, "humidity": 43.70 }"#.to_vec(),
                    ),
                    (format!("{plug}/sensor/energy/state"), b"2500".to_vec()),
                ],
            )
            .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            db.count("SELECT count(DISTINCT device_id) FROM readings")
                .await
                >= 2
        }
    })
    .await;
    let client = db.client().await;
    let letters = dead_letter_reasons(&client, "%").await;
    assert!(stored, "{letters:?}");
    let one = |device: String, metric: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT min(value) FROM readings WHERE device_id = $1 AND metric = $2",
                    &[&device, &metric],
                )
                .await
                .unwrap()
                .get::<_, Option<f64>>(0)
        }
    };
    assert_eq!(one(bedroom.clone(), "temperature_c").await, Some(23.2));
    assert_eq!(one(plug.clone(), "energy_kwh").await, Some(2.5), "Wh → kWh");
    assert!(
        letters.iter().any(|(r, d)| r == "invalid_field"
            && d.contains("Home Assistant discovery")
            && d.contains("is not understood")),
        "{letters:?}"
    );
    // The announced availability topic works as a Last Will does.
    publish_all(
        &c.mqtt.url,
        vec![(format!("{plug}/status"), b"offline".to_vec())],
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            db.count(&format!(
                "SELECT count(*) FROM devices WHERE device_id = '{plug}' AND offline_since IS NOT NULL"
            ))
            .await
                == 1
        })
        .await
    );
    let site: String = client
        .query_one(
            "SELECT site_id FROM devices WHERE device_id = $1",
            &[&bedroom],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(site, "harbour-view");
    ingestor.shutdown().await;
}

/// A gateway's messages refused by a mapping that read the wrong field
/// are stored once the mapping is fixed and `estatemon dead-letters
/// reprocess` runs them through ingest again, at their own times; a
/// message that is still bad is refused again under a new letter; a
/// payload whose credential was pseudonymised is left alone, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_reprocessed_once_the_mapping_is_fixed() {
    let db = TestDb::new(&admin_url());
    let mut c = config(&db, &broker_url());
    let gw = unique("gw");
    let mapping = |field: &str| {
        toml::from_str::<estatemon_domain::mapping::Mapping>(&format!(
            r#"
name = "plant-room-gateway"
topic = "{gw}/{{site}}/+/{{device_id}}"
time_path = "ts"
time_format = "epoch_ms"
  [[value]]
  path = "channels[*].{field}"
  metric = "energy_kwh"
  unit = "Wh"
  device = "{{device_id}}-ch{{key}}"
"#
        ))
        .unwrap()
    };
    // The mapping as first written: the gateway calls the field `energy_wh`.
    c.ingest.mappings.push(mapping("wh"));
    c.validate(None, None).expect("a valid configuration");
    let ingestor = Ingestor::start(c.clone()).await.expect("ingestor starts");
    assert!(ingestor.subscribed(Duration::from_secs(10)).await);
    let t0 = base_ms();
    let mut messages: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| {
            (
                format!("{gw}/harbour-view/meters/m{}", i % 4),
                format!(
                    r#"{{"ts":{},"channels":[{{"energy_wh":{}}},{{"energy_wh":{}}}]}}"#,
                    t0 + i * 60_000,
                    1000 + i * 10,
                    5000 + i * 20
                )
                .into_bytes(),
            )
        })
        .collect();
    // Still bad after the fix: not JSON.
    messages.push((
        format!("{gw}/harbour-view/meters/m9"),
        b"{\"ts\": 17, channels".to_vec(),
    ));
    // An access event of a type nobody knows, with a card number: the
    // letter keeps its pseudonym, not the number.
    messages.push((
        topic(&c, "events", "hv", "gate-7"),
        format!(r#"{{"ts":{t0},"type":"teleport","credential":"CARD-777","result":"granted"}}"#)
            .into_bytes(),
    ));
    // Two problems in one message (a unit and a metric nobody knows): two
    // letters, one message to read again.
    let two = topic(&c, "telemetry", "hv", "m-two");
    messages.push((
        two.clone(),
        format!(r#"{{"ts":{t0},"metrics":{{"energy_btu":5,"flux_capacitance":1.21}}}}"#)
            .into_bytes(),
    ));
    publish_all(&c.mqtt.url, messages).await;
    let open = "SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL";
    let of_two = format!("SELECT count(*) FROM dead_letters WHERE topic = '{two}'");
    assert!(
        eventually(Duration::from_secs(20), || async {
            db.count(open).await >= 24 && db.count(&of_two).await >= 2
        })
        .await,
        "{:?}",
        dead_letter_reasons(&db.client().await, "%").await
    );
    ingestor.shutdown().await;
    let before = db.count(open).await;
    let mut two_reasons: Vec<String> = dead_letter_reasons(&db.client().await, &two)
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    two_reasons.sort();
    assert_eq!(two_reasons, ["unknown_metric", "unknown_unit"]);
    let readings = format!(
        "SELECT count(*) FROM readings WHERE device_id LIKE 'm%-ch%' AND ts >= to_timestamp({t0} / 1000.0)"
    );
    assert_eq!(
        db.count(&readings).await,
        0,
        "nothing read by the wrong path"
    );

    // The fix, in the configuration file the command reads.
    let mut fixed = c.clone();
    fixed.ingest.mappings = vec![mapping("energy_wh")];
    let file = config_file(&fixed);

    let dry = run(estatemon_with(&file).args(["dead-letters", "reprocess", "--dry-run"]));
    assert!(
        dry.contains(&format!(
            "{} open dead letters of {} messages to reprocess",
            before - 1,
            before - 2
        )),
        "{dry}"
    );
    assert!(dry.contains("left alone: 1 (held a credential"), "{dry}");
    assert!(dry.contains("--dry-run: nothing changed"), "{dry}");
    assert_eq!(db.count(open).await, before, "a dry run changes nothing");

    // The database refuses one reading of the eighth message (1,070 Wh on
    // channel 0), as a constraint a DBA added would.
    let client = db.client().await;
    client
        .batch_execute(
            "ALTER TABLE readings ADD CONSTRAINT refuses_one CHECK (value NOT BETWEEN 1.0699 AND 1.0701)",
        )
        .await
        .unwrap();
    let eighth: i64 = client
        .query_one(
            "SELECT id FROM dead_letters WHERE position($1::bytea IN payload) > 0",
            &[&format!(r#""ts":{},"#, t0 + 7 * 60_000).into_bytes()],
        )
        .await
        .unwrap()
        .get(0);

    let out = run(estatemon_with(&file).args(["dead-letters", "reprocess"]));
    // 20 messages × 2 channels, at the gateway's own times, but the one
    // the database refused.
    assert_eq!(db.count(&readings).await, 39, "{out}");
    // That row is a new open letter naming the letter it came from, and
    // the original says it was stored in part.
    let (refused_id, detail, from): (i64, String, serde_json::Value) = client
        .query_one(
            "SELECT id, detail, convert_from(payload, 'UTF8')::jsonb FROM dead_letters
              WHERE reason = 'storage_rejected' AND resolved_at IS NULL",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .unwrap();
    assert!(
        detail.ends_with(&format!("(reprocessing dead letter {eighth})")),
        "{detail}"
    );
    assert_eq!(from["from_dead_letter"], eighth, "{from}");
    // Counted where and when the message was: its topic and receipt.
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM dead_letters n JOIN dead_letters d ON d.id = {eighth}
              WHERE n.id = {refused_id} AND n.topic = d.topic AND n.received_at = d.received_at
                AND n.topic <> ''"
        ))
        .await,
        1
    );
    let resolution: String = client
        .query_one(
            "SELECT resolution FROM dead_letters WHERE id = $1",
            &[&eighth],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        resolution,
        format!("reprocessed in part: a row refused by the database as {refused_id}")
    );
    assert!(out.contains("new letter: storage_rejected"), "{out}");
    assert!(out.contains("1 letter(s) `reprocessed in part`"), "{out}");
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM readings WHERE device_id LIKE 'm%-ch%' AND ts = to_timestamp({t0} / 1000.0)"
        ))
        .await,
        2,
        "the first message at its own time: {out}"
    );
    assert!(
        out.contains("19 letters resolved, 3 refused again, 1 in part"),
        "{out}"
    );
    assert!(out.contains("new letter: invalid_json"), "{out}");
    // The two-problem message was read once: two new letters, not four.
    assert_eq!(db.count(&of_two).await, 4, "{out}");
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM dead_letters WHERE topic = '{two}' AND resolved_at IS NULL"
        ))
        .await,
        2
    );
    let rows = client
        .query(
            "SELECT reason, resolution FROM dead_letters WHERE resolved_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len() as i64, before - 1);
    let again: Vec<String> = rows
        .iter()
        .filter(|r| r.get::<_, String>(0) == "invalid_json")
        .map(|r| r.get(1))
        .collect();
    assert_eq!(again.len(), 1);
    let new_id: i64 = again[0]
        .strip_prefix("reprocessed: refused again as ")
        .unwrap_or_else(|| panic!("{again:?}"))
        .parse()
        .unwrap();
    let (reason, open_now): (String, bool) = client
        .query_one(
            "SELECT reason, resolved_at IS NULL FROM dead_letters WHERE id = $1",
            &[&new_id],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((reason.as_str(), open_now), ("invalid_json", true));
    // Open now: the new letters (the refused row's included) and the card's.
    assert_eq!(db.count(open).await, 5);

    // Each letter once: the stored ones are not read again.
    let twice = run(estatemon_with(&file).args([
        "dead-letters",
        "reprocess",
        "--topic",
        &format!("{gw}/+/meters/+"),
        "--reason",
        "invalid_field",
        "--reason",
        "missing_field",
    ]));
    assert!(
        twice.contains("0 open dead letters of 0 messages to reprocess"),
        "{twice}"
    );
    assert_eq!(db.count(&readings).await, 39);

    // A reason that does not exist is refused with the list.
    let bad = estatemon_with(&file)
        .args(["dead-letters", "reprocess", "--reason", "lost"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown_topic"));
}
