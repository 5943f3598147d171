//! The `estatemon` binary as an operator meets it: help, configuration
//! errors, exit codes, and the quick start (`estatemon demo`) with an
//! existing broker and with the embedded one.

mod common;

use std::process::Command;

use common::*;
use estatemon_domain::config::SimulateFormat;
use estatemon_simulators::scenario::{FaultKind, Origin};
use estatemon_simulators::truth::GroundTruth;

fn estatemon() -> Command {
    let mut c = Command::new(estatemon_bin());
    // Never pick up a developer's own configuration.
    for (k, _) in std::env::vars() {
        if k.starts_with("ESTATEMON_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["demo", "--help"],
        vec!["ingest", "--help"],
        vec!["simulate", "--help"],
        vec!["simulate", "live", "--help"],
        vec!["simulate", "backfill", "--help"],
        vec!["simulate", "load", "--help"],
        vec!["bench", "simulate", "--help"],
        vec!["migrate", "--help"],
        vec!["config", "--help"],
        vec!["config", "check", "--help"],
        vec!["config", "show", "--help"],
        vec!["registry", "load", "--help"],
        vec!["bench", "ingest", "--help"],
        vec!["consumption", "--help"],
        vec!["inspection", "record", "--help"],
        vec!["inspection", "compliance", "--help"],
    ] {
        let out = estatemon().args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}");
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
    let out = estatemon().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_bad_config_file_exits_3_naming_file_line_and_field() {
    let dir = std::env::temp_dir().join(unique("estatemon-cli-"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("site.toml");
    std::fs::write(
        &path,
        "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n\n[ingest]\nwriters = \"two\"\n",
    )
    .unwrap();
    let out = estatemon()
        .args(["--config", path.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("site.toml:5"), "{err}");
    assert!(err.contains("ingest.writers"), "{err}");

    let out = estatemon()
        .args(["config", "check"])
        .env("ESTATEMON_MQTT_URL", "http://broker")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mqtt.url"));

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/estatemon.example.toml");
    let out = estatemon()
        .args(["--config", example, "config", "check"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreachable_database_exits_4_with_advice() {
    let port = free_port(); // nothing listens there
    let out = estatemon()
        .arg("migrate")
        .env(
            "ESTATEMON_DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{port}/x"),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("cannot connect to PostgreSQL"), "{err}");
    assert!(err.contains("ESTATEMON_DATABASE_URL"), "{err}");
    assert!(err.contains("Start PostgreSQL"), "{err}");
}

#[test]
fn a_role_the_database_refuses_is_named_with_the_servers_reason() {
    // The server answers, and refuses: its own words, not "db error", and
    // advice about the URL rather than about starting PostgreSQL.
    // The test server (which trusts its test roles, as scripts/test.sh
    // sets it up), as a role it does not have.
    let url: tokio_postgres::Config = admin_url().parse().unwrap();
    let tokio_postgres::config::Host::Tcp(host) = &url.get_hosts()[0] else {
        panic!("ESTATEMON_TEST_DATABASE_URL names a TCP host")
    };
    let port = url.get_ports().first().copied().unwrap_or(5432);
    let out = estatemon()
        .arg("migrate")
        .env(
            "ESTATEMON_DATABASE_URL",
            format!("postgres://no_such_role_here@{host}:{port}/postgres"),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains(r#"role "no_such_role_here" does not exist"#),
        "{err}"
    );
    assert!(
        err.contains("Check the user, password and database"),
        "{err}"
    );
    assert!(!err.contains("Start PostgreSQL"), "{err}");
    // Said once, not again by the error's chain.
    assert_eq!(err.matches("does not exist").count(), 1, "{err}");
}

fn run_demo(mqtt_url: &str, db: &TestDb, truth: &std::path::Path) -> (bool, String) {
    run_demo_for(mqtt_url, db, truth, 6, 600)
}

fn run_demo_for(
    mqtt_url: &str,
    db: &TestDb,
    truth: &std::path::Path,
    seconds: u64,
    speed: u64,
) -> (bool, String) {
    let out = estatemon()
        .args(["demo", "--duration", &seconds.to_string()])
        .args(["--speed", &speed.to_string()])
        .env("ESTATEMON_API_LISTEN", "127.0.0.1:0")
        .env("ESTATEMON_ALERTS_EVALUATE_INTERVAL_S", "3")
        .env("ESTATEMON_SIMULATE_TRUTH_FILE", truth)
        .env("ESTATEMON_DATABASE_URL", &db.url)
        .env("ESTATEMON_MQTT_URL", mqtt_url)
        .env("ESTATEMON_MQTT_CLIENT_ID", unique("demo-ingest"))
        .env("ESTATEMON_SIMULATE_CLIENT_ID", unique("demo-sim"))
        .env("ESTATEMON_INGEST_LISTEN", "127.0.0.1:0")
        .env("ESTATEMON_ALERTS_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_with_the_running_broker() {
    let db = TestDb::new(&admin_url());
    let truth = truth_path("demo");
    let (ok, output) = tokio::task::block_in_place(|| run_demo(&broker_url(), &db, &truth));
    assert!(ok, "{output}");
    assert!(output.contains("existing broker"), "{output}");
    // The analytics job runs beside the ingestor.
    assert!(output.contains("open alerts"), "{output}");
    assert!(!output.contains("analytics stopped"), "{output}");
    let truth = GroundTruth::read(&truth).expect("the demo writes its ground truth");
    let readings = db.count("SELECT count(*) FROM readings").await;
    let devices = db
        .count("SELECT count(*) FROM devices WHERE assigned")
        .await;
    println!("demo stored {readings} readings from {devices} registered devices");
    assert!(readings > 20, "{output}");
    assert_eq!(devices as usize, truth.devices.len());
    // Dead letters only for the malformed messages the simulator sent.
    let malformed: u64 = truth.delivery.malformed.values().sum();
    assert_eq!(
        db.count("SELECT count(*) FROM dead_letters").await as u64,
        malformed
    );
    // The API runs too, with a viewer token to try it with.
    assert!(output.contains("/api/v1/health"), "{output}");
    let token = output
        .split_whitespace()
        .find(|w| w.starts_with("emt_"))
        .unwrap_or_else(|| panic!("no token printed: {output}"));
    assert_eq!(
        db.count("SELECT count(*) FROM api_tokens WHERE role = 'viewer' AND name LIKE 'demo-%'")
            .await,
        1,
        "{token}"
    );
}

/// Issue 16: the demo catches up from hours in the past while the rules
/// run at the wall clock; meters that are publishing (old data, but
/// publishing) are not "offline". Every alert the demo opens is one its
/// ground truth injected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_opens_no_false_alerts() {
    let db = TestDb::new(&admin_url());
    let truth_file = truth_path("demo-alerts");
    let (ok, output) =
        tokio::task::block_in_place(|| run_demo_for(&broker_url(), &db, &truth_file, 20, 60));
    assert!(ok, "{output}");
    let truth = GroundTruth::read(&truth_file).expect("the demo writes its ground truth");
    std::fs::remove_file(&truth_file).ok();
    let client = db.client().await;
    let alerts = client
        .query("SELECT rule, coalesce(device_id, '') FROM alerts", &[])
        .await
        .unwrap();
    let injected: Vec<(String, FaultKind)> = truth
        .faults
        .iter()
        .map(|f| (f.device.clone(), f.kind))
        .collect();
    println!(
        "demo: {} alerts, {} injected faults, {} readings",
        alerts.len(),
        injected.len(),
        db.count("SELECT count(*) FROM readings").await
    );
    assert!(
        db.count("SELECT count(*) FROM readings").await > 100,
        "the demo published: {output}"
    );
    for a in &alerts {
        let (rule, device): (String, String) = (a.get(0), a.get(1));
        let explained = injected.iter().any(|(d, kind)| {
            *d == device
                && match rule.as_str() {
                    "meter_offline" => *kind == FaultKind::MeterOffline,
                    "lift_entrapment" => *kind == FaultKind::LiftEntrapment,
                    "lift_fault" => *kind == FaultKind::LiftFault,
                    "door_forced" => *kind == FaultKind::DoorForced,
                    "door_held_open" => *kind == FaultKind::DoorHeldOpen,
                    "night_water_flow" => *kind == FaultKind::WaterLeak,
                    "fire_main_pressure_low" | "fire_main_pressure_falling" => {
                        *kind == FaultKind::LowPressure
                    }
                    "denied_swipes_credential" => *kind == FaultKind::DeniedBurst,
                    _ => true,
                }
        });
        assert!(
            explained,
            "alert {rule} on {device} is not a fault the demo injected ({injected:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_embeds_a_broker_where_none_runs() {
    let db = TestDb::new(&admin_url());
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let truth = truth_path("demo-embedded");
    let (ok, output) = tokio::task::block_in_place(|| run_demo(&url, &db, &truth));
    std::fs::remove_file(&truth).ok();
    assert!(ok, "{output}");
    assert!(output.contains("embedded broker"), "{output}");
    let readings = db.count("SELECT count(*) FROM readings").await;
    println!("demo with the embedded broker stored {readings} readings");
    assert!(readings > 20, "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumption_command_derives_from_stored_registers() {
    let db = TestDb::new(&admin_url());
    let c = config(&db, &broker_url());
    estatemon_domain::schema::ensure_database(&c.database)
        .await
        .unwrap();
    let mut client = db.client().await;
    estatemon_domain::schema::migrate(&mut client, &c.storage)
        .await
        .unwrap();
    let base = chrono::Utc::now() - chrono::Duration::hours(3);
    let ts = |m: i64| base + chrono::Duration::minutes(m);
    let mode = estatemon_domain::schema::recorded_mode(&client)
        .await
        .unwrap();
    if mode == estatemon_domain::schema::StorageMode::Plain {
        for at in [ts(0), ts(45)] {
            let idx = estatemon_domain::schema::partitions::chunk_index(at, 7);
            estatemon_domain::schema::partitions::ensure_chunk(&client, idx, 7)
                .await
                .unwrap();
        }
    }
    // 99990 -> 99998 -> rollover to 3 -> 7: 8 + 5 + 4 = 17 kWh.
    for (m, v) in [(0, 99_990.0), (15, 99_998.0), (30, 3.0), (45, 7.0)] {
        client
            .execute(
                "INSERT INTO readings (device_id, metric, ts, value) VALUES ('m-roll', 'energy_kwh', $1, $2)",
                &[&ts(m), &v],
            )
            .await
            .unwrap();
    }
    let out = tokio::task::block_in_place(|| {
        estatemon()
            .args([
                "consumption",
                "--device",
                "m-roll",
                "--rollover-at",
                "100000",
            ])
            .env("ESTATEMON_DATABASE_URL", &db.url)
            .output()
            .unwrap()
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("consumption: 17.000 kWh"), "{text}");
    assert!(text.contains("rollover: 1 interval"), "{text}");
}

/// Ten days of the default site (15-minute steps) that include configured
/// faults: a duplicate window, late messages, a malformed message and a
/// lift entrapment, plus the background incidents of those days.
fn ten_day_backfill(truth: &std::path::Path) -> Command {
    let mut c = estatemon();
    c.args([
        "simulate",
        "backfill",
        "--from",
        "2026-02-01T00:00:00+08:00",
        "--to",
        "2026-02-11T00:00:00+08:00",
        "--truth",
    ]);
    c.arg(truth);
    c
}

fn truth_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}.json", unique(tag)))
}

/// Stored readings and events per device.
async fn stored_per_device(db: &TestDb, table: &str) -> std::collections::BTreeMap<String, u64> {
    db.client()
        .await
        .query(
            &format!("SELECT device_id, count(*) FROM {table} GROUP BY device_id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
        .collect()
}

/// What the ground truth says each device sent equals what was stored.
async fn assert_stored_matches_truth(db: &TestDb, truth: &GroundTruth) {
    let readings = stored_per_device(db, "readings").await;
    let events = stored_per_device(db, "events").await;
    let inspections = stored_per_device(db, "inspections").await;
    let patrolled: u64 = truth
        .devices
        .values()
        .map(|d| d.inspections.iter().filter(|i| i.at.is_some()).count() as u64)
        .sum();
    assert!(patrolled >= 10, "the patrol app inspected: {patrolled}");
    for (id, d) in &truth.devices {
        assert_eq!(
            inspections.get(id).copied().unwrap_or(0),
            d.inspections.iter().filter(|i| i.at.is_some()).count() as u64,
            "patrol inspections of {id}"
        );
        assert_eq!(
            readings.get(id).copied().unwrap_or(0),
            d.readings,
            "readings of {id}"
        );
        assert_eq!(
            events.get(id).copied().unwrap_or(0),
            d.events,
            "events of {id}"
        );
    }
    // The entrapment is there, at its time, on its lift.
    let entrapment = truth
        .faults
        .iter()
        .find(|f| f.kind == FaultKind::LiftEntrapment && f.origin == Origin::Configured)
        .expect("the configured entrapment is in the window");
    let n = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM events WHERE device_id = $1 AND event_type = 'fault' AND ts = $2",
            &[&entrapment.device, &entrapment.start],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(n, 1, "entrapment event stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_through_the_broker_stores_what_the_ground_truth_says() {
    backfill_through_the_broker(SimulateFormat::Native).await;
}

/// Sparkplug B edge nodes (one per building) and Shelly Gen2 switches:
/// through the Sparkplug host and the shipped profile, under the source
/// ids the registry gives them, what is stored is what the truth says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_published_as_sparkplug_nodes_is_stored_as_the_ground_truth_says() {
    backfill_through_the_broker(SimulateFormat::Sparkplug).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_published_as_shelly_and_tasmota_devices_is_stored_as_the_ground_truth_says() {
    backfill_through_the_broker(SimulateFormat::Shelly).await;
    backfill_through_the_broker(SimulateFormat::Tasmota).await;
}

async fn backfill_through_the_broker(format: SimulateFormat) {
    let broker = PrivateMosquitto::start();
    let db = TestDb::new(&admin_url());
    let mut c = config(&db, &broker.url());
    let mut registry = estatemon_domain::device::Registry::parse(
        estatemon_simulators::DEFAULT_SITE,
        std::path::Path::new("default"),
    )
    .unwrap();
    estatemon_simulators::formats::receive(format, &mut registry, &mut c.ingest);
    {
        let (mut client, _) = estatemon_domain::schema::prepare(&c.database, &c.storage)
            .await
            .unwrap();
        estatemon_domain::schema::registry::upsert(&mut client, &registry)
            .await
            .unwrap();
    }
    let ingestor = estatemon_ingest::Ingestor::start(c.clone()).await.unwrap();
    assert!(
        ingestor
            .subscribed(std::time::Duration::from_secs(10))
            .await
    );
    let path = truth_path("truth-mqtt");
    let format_name = serde_json::to_value(format).unwrap();
    let out = tokio::task::block_in_place(|| {
        ten_day_backfill(&path)
            .args(["--format", format_name.as_str().unwrap()])
            .env("ESTATEMON_MQTT_URL", &c.mqtt.url)
            .env(
                "ESTATEMON_MQTT__TOPICS__TELEMETRY",
                &c.mqtt.topics.telemetry,
            )
            .env("ESTATEMON_MQTT__TOPICS__EVENTS", &c.mqtt.topics.events)
            .env("ESTATEMON_SIMULATE_CLIENT_ID", unique("backfill"))
            .output()
            .unwrap()
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("960 steps"), "{text}");
    assert!(text.contains("ground truth:"), "{text}");
    let truth = GroundTruth::read(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(truth.path, "mqtt");
    assert!(truth.delivery.applied);
    if format == SimulateFormat::Native {
        assert!(truth.delivery.duplicates >= 4, "{:?}", truth.delivery);
        assert!(truth.delivery.late >= 8, "{:?}", truth.delivery);
    }
    let malformed: u64 = truth.delivery.malformed.values().sum();
    assert!(malformed >= 1, "{:?}", truth.delivery);
    let sent: u64 = truth.devices.values().map(|d| d.readings).sum();
    assert!(
        eventually(std::time::Duration::from_secs(60), || async {
            db.count("SELECT count(*) FROM readings").await as u64 == sent
                && db.count("SELECT count(*) FROM dead_letters").await as u64 == malformed
        })
        .await,
        "stored {} of {sent} readings, {} dead letters of {malformed}",
        db.count("SELECT count(*) FROM readings").await,
        db.count("SELECT count(*) FROM dead_letters").await
    );
    assert_stored_matches_truth(&db, &truth).await;
    // Every malformed message became a dead letter with the expected reason.
    for (reason, n) in &truth.delivery.malformed {
        let stored = db
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM dead_letters WHERE reason = $1",
                &[reason],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        assert_eq!(stored as u64, *n, "dead letters for {reason}");
    }
    // Nothing arrived under an id the ledger does not know (a source id
    // left unresolved would be a new, unassigned device).
    assert_eq!(
        db.count("SELECT count(*) FROM devices WHERE NOT assigned")
            .await,
        0,
        "{format:?}"
    );
    ingestor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_straight_into_the_database_stores_what_the_ground_truth_says() {
    let db = TestDb::new(&admin_url());
    let path = truth_path("truth-direct");
    let out = tokio::task::block_in_place(|| {
        ten_day_backfill(&path)
            .arg("--direct")
            .env("ESTATEMON_DATABASE_URL", &db.url)
            .output()
            .unwrap()
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let truth = GroundTruth::read(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(truth.path, "direct");
    assert!(!truth.delivery.applied);
    let sent: u64 = truth.devices.values().map(|d| d.readings).sum();
    assert!(
        text.contains(&format!("backfilled {sent} readings")),
        "{text}"
    );
    assert_eq!(db.count("SELECT count(*) FROM readings").await as u64, sent);
    assert_eq!(db.count("SELECT count(*) FROM dead_letters").await, 0);
    assert_stored_matches_truth(&db, &truth).await;
    assert_eq!(
        db.count("SELECT count(*) FROM devices WHERE assigned")
            .await as usize,
        truth.devices.len()
    );
    // Credentials arrive pseudonymised, as through the ingestor.
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE credential LIKE 'CARD-%'")
            .await,
        0
    );
    // Rollups cover the backfilled hours.
    assert_eq!(
        db.count("SELECT sum(samples)::bigint FROM readings_hourly")
            .await as u64,
        sent
    );
}

/// A rules file without the emergency rules (here: only a comment) would
/// silence every emergency: `rules check` refuses it (exit 3, naming what
/// would stop paging) unless the waiver is explicit.
#[test]
fn rules_check_refuses_a_file_without_the_emergency_rules() {
    let dir = std::env::temp_dir().join(unique("estatemon-rules-"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rules.toml");
    std::fs::write(&path, "# nothing but a comment\n").unwrap();
    let out = estatemon()
        .args(["rules", "check", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("rules.toml"), "{err}");
    for emergency in ["entrapment", "door_forced", "fire_main_pressure_low"] {
        assert!(err.contains(emergency), "{err}");
    }
    let out = estatemon()
        .args([
            "rules",
            "check",
            "--waive-emergencies",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning"), "{err}");
    // The shipped rules pass as they are.
    let out = estatemon().args(["rules", "check"]).output().unwrap();
    assert!(out.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Logs to a pipe or a file carry no colour codes (and NO_COLOR is
/// honoured on a terminal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_pipe_have_no_colour_codes() {
    let db = TestDb::new(&admin_url());
    let out = estatemon()
        .arg("migrate")
        .env("ESTATEMON_DATABASE_URL", &db.url)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("applied migration"), "logged: {err}");
    assert!(
        !err.contains('\u{1b}'),
        "ANSI escape in piped logs: {err:?}"
    );
}

#[test]
fn mapping_test_shows_readings_or_why_not() {
    let ok = Command::new(estatemon_bin())
        .args([
            "mapping",
            "test",
            "--profile",
            "tasmota",
            "--site",
            "harbour-view",
            "--time-zone",
            "Asia/Hong_Kong",
            "--topic",
            "tele/pow1/SENSOR",
            "--payload",
            r#"{"Time":"2018-02-15T17:37:10","ENERGY":{"Total":6.294,"Power":2635}}"#,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{text}");
    assert!(
        text.contains("mapping `tasmota-energy`: device pow1 (site harbour-view)")
            && text.contains("2018-02-15T09:37:10+00:00  pow1  energy_kwh = 6.294 kWh"),
        "{text}"
    );
    let bad = Command::new(estatemon_bin())
        .args([
            "mapping",
            "test",
            "--profile",
            "tasmota",
            "--topic",
            "tele/pow1/SENSOR",
            "--payload",
            r#"{"Time":"2018-02-15T17:37:10","ENERGY":{"Power":2635}}"#,
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no value at `ENERGY.Total`"));
    let none = Command::new(estatemon_bin())
        .args([
            "mapping",
            "test",
            "--profile",
            "shelly",
            "--topic",
            "a/b",
            "--payload",
            "{}",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&none.stderr).contains("no mapping fits topic `a/b`"));
    let shown = Command::new(estatemon_bin())
        .args(["mapping", "show", "zigbee2mqtt"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&shown.stdout).contains("topic = \"zigbee2mqtt/{device_id+}\""));
}

/// Issue 27: `mapping show` prints a profile as the configuration wants it
/// (`[[ingest.mapping]]`), so the way the README gives to adapt a profile
/// round-trips: the shown tables, edited (a custom FullTopic) and loaded
/// as the configuration, read the device's message exactly as the
/// profile does; `--file` prints a mapping file for `--mapping`.
#[test]
fn a_shown_profile_round_trips_through_the_configuration() {
    let dir = std::env::temp_dir().join(unique("estatemon-show-"));
    std::fs::create_dir_all(&dir).unwrap();
    let payload = r#"{"Time":"2026-03-01T10:00:00","ENERGY":{"Total":6.294,"Power":2635}}"#;
    for name in ["tasmota", "shelly", "zigbee2mqtt"] {
        let shown = Command::new(estatemon_bin())
            .args(["mapping", "show", name])
            .output()
            .unwrap();
        assert!(shown.status.success());
        let text = String::from_utf8_lossy(&shown.stdout).into_owned();
        assert!(
            text.contains("[[ingest.mapping]]") && !text.contains("\n[[mapping]]"),
            "{text}"
        );
        let config: estatemon_domain::config::Config = toml::from_str(&text)
            .unwrap_or_else(|e| panic!("{name}: the shown profile is not a configuration: {e}"));
        let profile = estatemon_domain::mapping::default_profile(name, None, Some("UTC")).unwrap();
        assert_eq!(config.ingest.mappings, profile, "{name}");
    }
    // Adapted: Tasmota devices under a custom FullTopic.
    let shown = Command::new(estatemon_bin())
        .args(["mapping", "show", "tasmota"])
        .output()
        .unwrap();
    let edited = String::from_utf8_lossy(&shown.stdout).replace(
        "\"tele/{device_id}/SENSOR\"",
        "\"plant/{device_id}/tele/SENSOR\"",
    );
    let config = dir.join("estatemon.toml");
    std::fs::write(&config, &edited).unwrap();
    let out = Command::new(estatemon_bin())
        .arg("--config")
        .arg(&config)
        .args([
            "mapping",
            "test",
            "--topic",
            "plant/pow1/tele/SENSOR",
            "--payload",
            payload,
        ])
        .env_remove("ESTATEMON_INGEST_PROFILE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("pow1  energy_kwh = 6.294 kWh"), "{text}");
    // As a mapping file.
    let file = Command::new(estatemon_bin())
        .args(["mapping", "show", "tasmota", "--file"])
        .output()
        .unwrap();
    let path = dir.join("tasmota.toml");
    std::fs::write(&path, &file.stdout).unwrap();
    let out = Command::new(estatemon_bin())
        .args(["mapping", "test", "--mapping"])
        .arg(&path)
        .args(["--topic", "tele/pow1/SENSOR", "--payload", payload])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 20: a technician records an inspection from the command line:
/// failed items open work items with their deadlines; an item not on the
/// device's checklist, a malformed result or an unknown device exits 2
/// with the reason and stores nothing; compliance lists the tracked
/// devices with their windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspections_are_recorded_from_the_command_line() {
    let db = TestDb::new(&admin_url());
    let ledger =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("simulators/sites/harbour-view.toml");
    run(common::estatemon(&db)
        .args(["registry", "load"])
        .arg(&ledger));
    let at = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let out = run(common::estatemon(&db).args([
        "inspection",
        "record",
        "--device",
        "hv-fire-main-pressure",
        "--by",
        "王伟",
        "--at",
        &at,
        "--result",
        "pressure_gauge=ok",
        "--result",
        "valves=fail",
        "--result",
        "pump_state=fail_large",
        "--reading",
        "pressure_mpa=0.62",
    ]));
    assert!(out.contains("failed"), "{out}");
    assert!(out.contains("valves (small), due"), "{out}");
    assert!(out.contains("pump_state (large), due"), "{out}");
    assert_eq!(db.count("SELECT count(*) FROM work_items").await, 2);
    // Closed by hand once; a second time is refused (exit 2).
    let id = out
        .lines()
        .find(|l| l.contains("valves (small)"))
        .and_then(|l| l.trim().strip_prefix("work item "))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    let closed = run(common::estatemon(&db).args([
        "inspection",
        "close",
        "--id",
        &id,
        "--by",
        "王伟",
        "--note",
        "valve 3 repacked",
    ]));
    assert!(
        closed.contains(&format!("work item {id} closed")),
        "{closed}"
    );
    let again = common::estatemon(&db)
        .args([
            "inspection",
            "close",
            "--id",
            &id,
            "--by",
            "王伟",
            "--note",
            "again",
        ])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("closed already"));
    assert_eq!(
        db.count("SELECT count(*) FROM work_items WHERE closed_at IS NULL")
            .await,
        1
    );
    assert_eq!(
        db.count("SELECT count(*) FROM inspections WHERE source = 'cli' AND inspector = '王伟'")
            .await,
        1
    );
    for (args, want) in [
        (
            vec!["--device", "hv-fire-main-pressure", "--result", "paint=ok"],
            "not on hv-fire-main-pressure's checklist",
        ),
        (
            vec![
                "--device",
                "hv-fire-main-pressure",
                "--result",
                "valves=maybe",
            ],
            "is not ok, fail or fail_large",
        ),
        (vec!["--device", "nowhere"], "no device `nowhere`"),
        (
            vec![
                "--device",
                "hv-fire-main-pressure",
                "--reading",
                "level=high",
            ],
            "is not a number",
        ),
    ] {
        let out = common::estatemon(&db)
            .args(["inspection", "record", "--by", "李娜"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_eq!(db.count("SELECT count(*) FROM inspections").await, 1);
    let day = chrono::Utc::now().date_naive();
    let table = run(common::estatemon(&db).args([
        "inspection",
        "compliance",
        "--site",
        "harbour-view",
        "--from",
        &format!("{}T00:00:00Z", day - chrono::Duration::days(1)),
        "--to",
        &format!("{}T00:00:00Z", day + chrono::Duration::days(1)),
    ]));
    for want in [
        "hv-fire-main-pressure",
        "hv-pump-power",
        "hv-a-lift-1",
        "15d",
    ] {
        assert!(table.contains(want), "{want}: {table}");
    }
}

/// Issue 31 (first part): the shipped example roster checks; `oncall who`
/// names who is on call and who is next; a person's shifts as iCalendar
/// parse with a real parser (`icalendar` on PyPI) into the same shifts
/// `oncall shifts` lists, with the Chinese name intact; a bad roster exits
/// 3 naming file, line and field.
#[test]
fn the_on_call_roster_answers_who_and_feeds_a_calendar() {
    let roster = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/oncall/roster.example.toml"
    );
    let cli = |args: &[&str]| {
        let out = Command::new(estatemon_bin())
            .args(["oncall"])
            .args(args)
            .args(["--roster", roster])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let check = cli(&["check"]);
    assert!(check.contains("4 people, 2 teams"), "{check}");
    // Wednesday 9 December 20:00 in Hong Kong: Lee's override of Chan's week.
    let who = cli(&[
        "who",
        "--site",
        "harbour-view",
        "--at",
        "2026-12-09T12:00:00Z",
    ]);
    assert!(
        who.contains("Harbour View lifts: 李嘉欣 (override) until 2026-12-10 08:00 HKT")
            && who.contains("next: 陳大文 from 2026-12-10 08:00 HKT"),
        "{who}"
    );
    let ics = cli(&[
        "ical",
        "--person",
        "lee-ka-yan",
        "--from",
        "2026-12-01T00:00:00Z",
        "--days",
        "31",
    ]);
    assert!(ics.contains("\r\n"), "CRLF line ends");
    let python = std::env::var_os("ESTATEMON_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/estatemon-test-venv/bin/python".into());
    let script = r#"
import sys, icalendar
cal = icalendar.Calendar.from_ical(sys.stdin.buffer.read())
print(cal.get("X-WR-CALNAME"))
for e in cal.walk("VEVENT"):
    print(e.decoded("DTSTART").isoformat(), e.decoded("DTEND").isoformat(), e.get("SUMMARY"))
"#;
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), ics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "icalendar refused the feed ({} lacks icalendar? run scripts/test.sh): {}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed = String::from_utf8(out.stdout).unwrap();
    let mut lines = parsed.lines();
    assert_eq!(lines.next(), Some("On call: 李嘉欣"));
    let events: Vec<&str> = lines.collect();
    // Her shifts as `oncall shifts` lists them, one event each.
    let listed = cli(&[
        "shifts",
        "--team",
        "hv-lifts",
        "--from",
        "2026-12-01T00:00:00Z",
        "--days",
        "31",
    ]);
    let hers = listed.lines().filter(|l| l.contains("李嘉欣")).count();
    assert_eq!(events.len(), hers, "{parsed}\n{listed}");
    // Four weekends (Christmas and Boxing Day joined to the last), the
    // override, and New Year's Day up to the range's end.
    assert_eq!(events.len(), 6, "{parsed}");
    assert!(
        events.contains(
            &"2026-12-09T10:00:00+00:00 2026-12-10T00:00:00+00:00 On call: Harbour View lifts"
        ),
        "{parsed}"
    );
    // The escalation ladder of a trapped passenger at 03:00 on a Sunday:
    // the weekend's person at once, the contractor's desk at 2 minutes,
    // the manager at 10, again every 15 minutes.
    let plan = cli(&[
        "plan",
        "--severity",
        "emergency",
        "--site",
        "harbour-view",
        "--kind",
        "lift",
        "--at",
        "2026-12-12T19:00:00Z",
    ]);
    let lines: Vec<&str> = plan.lines().collect();
    assert_eq!(lines[0], "policy hv-lift-emergencies", "{plan}");
    assert!(
        lines[1].starts_with("2026-12-13 03:00 HKT  李嘉欣: on call for Harbour View lifts")
            && lines[2].starts_with("2026-12-13 03:02 HKT  Otis rescue desk")
            && lines[3].starts_with("2026-12-13 03:10 HKT  陳大文: named in the policy")
            && lines[4].starts_with("2026-12-13 03:15 HKT  李嘉欣"),
        "{plan}"
    );
    // An emergency no policy takes (a leak) pages every team at once, flagged.
    let leak = cli(&[
        "plan",
        "--severity",
        "emergency",
        "--site",
        "harbour-view",
        "--kind",
        "water_meter",
    ]);
    assert!(
        leak.contains("NO POLICY")
            && leak.lines().filter(|l| l.ends_with("[FLAGGED]")).count() == 2,
        "{leak}"
    );
    // A bad roster: exit 3, file, line and field.
    let bad = std::env::temp_dir().join(format!("{}.toml", unique("roster")));
    std::fs::write(
        &bad,
        std::fs::read_to_string(roster)
            .unwrap()
            .replace("every = \"1w\"", "every = \"weekly\""),
    )
    .unwrap();
    let out = Command::new(estatemon_bin())
        .args(["oncall", "check", "--roster"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(":43: field `team[0].layer[0].every`"), "{err}");
    let _ = std::fs::remove_file(bad);
}
