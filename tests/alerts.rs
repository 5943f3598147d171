//! Alerts end to end: the simulator injects faults and records them in its
//! ground truth; the analytics job must raise exactly one alert per fault,
//! with the right labels, and resolve it when the fault is over.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use chrono::{DateTime, Duration, Utc};
use common::*;
use estatemon_simulators::scenario::FaultKind;
use estatemon_simulators::truth::GroundTruth;

/// `estatemon simulate backfill --direct ARGS… --truth TRUTH` into `db`.
fn direct_backfill(db: &TestDb, args: &[&str], truth: &std::path::Path) -> Command {
    let mut c = estatemon(db);
    c.args(["simulate", "backfill", "--direct"])
        .args(args)
        .arg("--truth")
        .arg(truth);
    c
}

const FAULTS: &str = r#"
[scenario]
[[scenario.fault]]
kind = "water_leak"
device = "hv-domestic-water"
start = 2026-06-08T01:00:00
minutes = 300
value = 2.0

[[scenario.fault]]
kind = "door_forced"
device = "hv-a-gate-main"
start = 2026-06-08T02:40:00

[[scenario.fault]]
kind = "low_pressure"
device = "hv-fire-main-pressure"
start = 2026-06-08T05:30:00
minutes = 90
value = 0.42

[[scenario.fault]]
kind = "lift_entrapment"
device = "hv-a-lift-1"
start = 2026-06-08T10:12:00
minutes = 25

[[scenario.fault]]
kind = "door_held_open"
device = "hv-a-gate-main"
start = 2026-06-08T12:00:00
seconds = 90

[[scenario.fault]]
kind = "meter_offline"
device = "hv-gas"
start = 2026-06-08T13:00:00
minutes = 180

[[scenario.fault]]
kind = "lift_fault"
device = "hv-b-lift-1"
start = 2026-06-08T15:00:00
minutes = 90
code = "door_fault"

[[scenario.fault]]
kind = "denied_burst"
device = "hv-b-gate-main"
start = 2026-06-08T19:00:00

[[scenario.fault]]
kind = "door_held_open"
device = "hv-b-gate-main"
start = 2026-06-08T22:15:00
seconds = 420
"#;

#[derive(Debug, Clone)]
struct StoredAlert {
    rule: String,
    labels: BTreeMap<String, String>,
    started_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
}

async fn stored_alerts(db: &TestDb) -> Vec<StoredAlert> {
    db.client()
        .await
        .query(
            "SELECT rule, labels, started_at, last_seen_at, resolved_at FROM alerts ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| StoredAlert {
            rule: r.get(0),
            labels: serde_json::from_value(r.get(1)).unwrap(),
            started_at: r.get(2),
            last_seen_at: r.get(3),
            resolved_at: r.get(4),
        })
        .collect()
}

/// Backfills two days of the scenario at 5-minute steps straight into the
/// database, replays the default rules over them every 5 minutes, and
/// compares the alerts with the ground truth, fault by fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_rules_raise_one_alert_per_injected_fault_and_resolve_it() {
    let db = TestDb::new(&admin_url());
    let site = site_file(FAULTS);
    let truth_path = std::env::temp_dir().join(format!("{}.json", unique("truth")));
    let step = Duration::minutes(5);
    run(&mut direct_backfill(
        &db,
        &[
            "--site-file",
            site.to_str().unwrap(),
            "--from",
            "2026-06-07T12:00:00+08:00",
            "--to",
            "2026-06-09T12:00:00+08:00",
            "--interval-s",
            "300",
        ],
        &truth_path,
    ));
    let truth = GroundTruth::read(&truth_path).unwrap();
    assert_eq!(truth.faults.len(), 9, "{:?}", truth.faults);
    let out = run(estatemon(&db).args([
        "analytics",
        "replay",
        "--from",
        "2026-06-07T13:00:00+08:00",
        "--to",
        "2026-06-09T12:00:00+08:00",
        "--step",
        "5m",
    ]));
    assert!(
        out.contains("plain mode") || out.contains("timescaledb mode"),
        "{out}"
    );
    let alerts = stored_alerts(&db).await;
    let mut unexplained: Vec<&StoredAlert> = alerts.iter().collect();
    // Deadlines run from the data's time, not from when the replay ran
    // (issue 19: an alert of 7 August was due on 2 December).
    assert_eq!(
        db.count(
            "SELECT count(*) FROM alerts
              WHERE response_deadline > '2026-06-10T00:00:00Z'
                 OR fired_at > '2026-06-10T00:00:00Z'
                 OR response_deadline < started_at"
        )
        .await,
        0,
        "replayed deadlines from data time"
    );

    for fault in &truth.faults {
        // Which rule must fire for this fault (None: below the rule's limit).
        let rule = match fault.kind {
            FaultKind::WaterLeak => Some("night_water_flow"),
            FaultKind::DoorForced => Some("door_forced"),
            FaultKind::LowPressure => Some("fire_main_pressure_low"),
            FaultKind::LiftEntrapment => Some("lift_entrapment"),
            FaultKind::DoorHeldOpen if fault.seconds.unwrap_or(0.0) >= 180.0 => {
                Some("door_held_open")
            }
            FaultKind::DoorHeldOpen => None,
            FaultKind::MeterOffline => Some("meter_offline"),
            FaultKind::LiftFault => Some("lift_fault"),
            FaultKind::DeniedBurst => Some("denied_swipes_credential"),
            other => panic!("the scenario has no {other:?}"),
        };
        let matching: Vec<&StoredAlert> = alerts
            .iter()
            .filter(|a| {
                Some(a.rule.as_str()) == rule
                    && a.labels.get("device") == Some(&fault.device)
                    && a.started_at >= fault.start - Duration::hours(1)
                    && a.started_at <= fault.end + Duration::hours(1)
            })
            .collect();
        let Some(rule) = rule else {
            assert!(
                !alerts
                    .iter()
                    .any(|a| a.rule == "door_held_open"
                        && a.labels.get("device") == Some(&fault.device)),
                "a {} s hold is under the rule's 180 s",
                fault.seconds.unwrap()
            );
            continue;
        };
        assert_eq!(
            matching.len(),
            1,
            "{fault:?} → {matching:?}\nall: {alerts:#?}"
        );
        let a = matching[0];
        unexplained.retain(|u| !std::ptr::eq(*u, a));
        // Labels from the ledger.
        assert_eq!(a.labels["alertname"], rule);
        assert_eq!(a.labels["site"], "harbour-view");
        assert!(a.labels.contains_key("severity") && a.labels.contains_key("area"));
        let resolved = a
            .resolved_at
            .unwrap_or_else(|| panic!("{fault:?} is over but {a:?} is open"));
        // When it began and ended, in data time.
        match fault.kind {
            FaultKind::LiftEntrapment | FaultKind::LiftFault => {
                assert_eq!(a.started_at, fault.start, "{a:?}");
                assert_eq!(resolved, fault.end, "released when back in service");
            }
            FaultKind::LowPressure => {
                assert!(
                    a.started_at >= fault.start && a.started_at <= fault.start + step,
                    "{a:?}"
                );
                assert!(
                    resolved >= fault.end && resolved <= fault.end + step,
                    "{a:?}"
                );
            }
            FaultKind::WaterLeak => {
                // Fires once the night flow has lasted the rule's hour.
                assert!(
                    a.started_at >= fault.start && a.started_at <= fault.start + step,
                    "{a:?}"
                );
                assert!(resolved > fault.end, "{a:?}");
            }
            FaultKind::MeterOffline => {
                assert!(
                    a.started_at <= fault.start && a.started_at >= fault.start - step,
                    "{a:?}"
                );
                assert!(
                    resolved >= fault.end && resolved <= fault.end + step,
                    "{a:?}"
                );
            }
            FaultKind::DoorForced | FaultKind::DoorHeldOpen | FaultKind::DeniedBurst => {
                // A burst's swipes are squeezed into the step it starts in.
                let (early, late) = (Duration::seconds(5), step);
                assert!(
                    a.started_at >= fault.start - early && a.started_at <= fault.start + late,
                    "{a:?}"
                );
                // Quiet for the rule's resolve_after (30 min) since the last event.
                assert_eq!(resolved, a.last_seen_at + Duration::minutes(30), "{a:?}");
            }
            _ => unreachable!(),
        }
    }
    // The fall to 0.42 MPa is also a fast fall (an ordinary early warning,
    // which the shipped Alertmanager route inhibits under the emergency).
    unexplained.retain(|a| a.rule != "fire_main_pressure_falling");
    assert!(
        unexplained.is_empty(),
        "alerts no fault explains: {unexplained:#?}"
    );
    let _ = std::fs::remove_file(site);
    let _ = std::fs::remove_file(truth_path);
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Alertmanager notifications for `alertname` with `status`.
fn am_notifications(got: &Received, alertname: &str, status: &str) -> usize {
    got.lock()
        .unwrap()
        .iter()
        .filter(|(path, body)| path == "am" && body["status"] == status)
        .flat_map(|(_, body)| body["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["labels"]["alertname"] == alertname && a["status"] == status)
        .count()
}

/// Webhook posts (direct from estatemon) of `kind` for `rule`.
fn hook_posts(got: &Received, path: &str, rule: &str, kind: &str) -> usize {
    got.lock()
        .unwrap()
        .iter()
        .filter(|(p, body)| p == path && body["kind"] == kind && body["alert"]["rule"] == rule)
        .count()
}

/// Two `estatemon analytics` processes against one database, a real
/// Alertmanager and two webhooks (one down at first). A forced door and a
/// fire main below 0.5 MPa each reach Alertmanager and the webhooks once;
/// the leader is killed, the other process takes over and resolves the
/// pressure alert when the readings recover; the webhook that was down
/// gets every notification once it is back (retried, not dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_evaluators_page_once_through_alertmanager_and_resolve() {
    let got: Received = Default::default();
    let port = free_port();
    let _receiver = receiver(port, got.clone()).await;
    let late_port = free_port();
    let am = Alertmanager::start(&format!("http://127.0.0.1:{port}/am")).await;
    let db = TestDb::new(&admin_url());

    // An hour of history in which the door was forced 3 minutes ago and
    // the fire-main pressure dropped 20 minutes ago (and is still low).
    let now = Utc::now();
    let faults = format!(
        "[scenario]\n\
         [[scenario.fault]]\nkind = \"door_forced\"\ndevice = \"hv-a-gate-main\"\nstart = {}\n\n\
         [[scenario.fault]]\nkind = \"low_pressure\"\ndevice = \"hv-fire-main-pressure\"\nstart = {}\nminutes = 600\nvalue = 0.42\n",
        rfc3339(now - Duration::minutes(3)),
        rfc3339(now - Duration::minutes(20)),
    );
    let site = site_file(&faults);
    let truth = std::env::temp_dir().join(format!("{}.json", unique("truth")));
    let backfill = |site: &std::path::Path, from: DateTime<Utc>, to: DateTime<Utc>, step: &str| {
        let (from, to) = (rfc3339(from), rfc3339(to));
        let site = site.to_str().unwrap();
        let args = [
            "--interval-s",
            step,
            "--site-file",
            site,
            "--from",
            &from,
            "--to",
            &to,
        ];
        direct_backfill(&db, &args, &truth)
    };
    run(&mut backfill(&site, now - Duration::hours(1), now, "60"));

    let config = std::env::temp_dir().join(format!("{}.toml", unique("cfg")));
    std::fs::write(
        &config,
        format!(
            "[alerts]\nevaluate_interval_s = 1\nresend_interval_s = 1\nretry_max_backoff_s = 2\n\
             alertmanager_url = \"{}\"\n\
             [[alerts.webhooks]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{port}/hook\"\n\
             [[alerts.webhooks]]\nname = \"late\"\nurl = \"http://127.0.0.1:{late_port}/late\"\n",
            am.url
        ),
    )
    .unwrap();
    let health_ports = [free_port(), free_port()];
    let mut evaluators: Vec<tokio::process::Child> = health_ports
        .iter()
        .map(|p| {
            let mut c = tokio::process::Command::from(estatemon(&db));
            c.arg("--config")
                .arg(&config)
                .arg("analytics")
                .env("ESTATEMON_ALERTS_LISTEN", format!("127.0.0.1:{p}"))
                .kill_on_drop(true);
            c.spawn().unwrap()
        })
        .collect();

    let wait = std::time::Duration::from_secs(30);
    let paged = eventually(wait, || async {
        am_notifications(&got, "door_forced", "firing") >= 1
            && am_notifications(&got, "fire_main_pressure_low", "firing") >= 1
            && hook_posts(&got, "hook", "door_forced", "firing") >= 1
            && hook_posts(&got, "hook", "fire_main_pressure_low", "firing") >= 1
    })
    .await;
    assert!(paged, "not paged: {:#?}", got.lock().unwrap());
    // The pages are recorded as delivered (a notifier killed between a
    // receiver's answer and its commit would send that one notification
    // again, with the same notification_id; that is not what this checks).
    let recorded = eventually(wait, || async {
        db.count(
            "SELECT count(*) FROM alert_notifications
              WHERE receiver IN ('alertmanager', 'hook') AND delivered_at IS NULL",
        )
        .await
            == 0
    })
    .await;
    assert!(recorded, "deliveries not recorded");

    // Which one leads? Kill it. Both serve /health once started (the one
    // that does not lead may still be starting on a loaded machine).
    let mut leader = None;
    for (i, p) in health_ports.iter().enumerate() {
        let addr = format!("127.0.0.1:{p}");
        assert!(
            listening(&addr, wait).await,
            "evaluator {i} does not serve /health: {:?}",
            evaluators[i].try_wait()
        );
        let health = http_get(&addr, "/health").await;
        assert!(health.contains("\"storage_mode\""), "{health}");
        if health.contains("\"leader\":true") {
            assert!(leader.is_none(), "two leaders");
            leader = Some(i);
        }
    }
    let leader = leader.expect("one process leads");
    evaluators[leader].kill().await.unwrap();
    let survivor = health_ports[1 - leader];

    // The pressure recovers: the seconds since, second by second, without
    // the fault.
    let recovered = site_file("[scenario]\n");
    let since = now + Duration::seconds(1);
    while Utc::now() < since + Duration::seconds(5) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    run(&mut backfill(&recovered, since, Utc::now(), "1"));
    let resolved = eventually(wait, || async {
        am_notifications(&got, "fire_main_pressure_low", "resolved") >= 1
            && hook_posts(&got, "hook", "fire_main_pressure_low", "resolved") >= 1
    })
    .await;
    assert!(resolved, "not resolved: {:#?}", got.lock().unwrap());
    let health = http_get(&format!("127.0.0.1:{survivor}"), "/health").await;
    assert!(
        health.contains("\"leader\":true"),
        "the survivor took over: {health}"
    );

    // The late webhook comes up; its notifications were kept and retried.
    let _late = receiver(late_port, got.clone()).await;
    let caught_up = eventually(wait, || async {
        hook_posts(&got, "late", "door_forced", "firing") >= 1
            && hook_posts(&got, "late", "fire_main_pressure_low", "resolved") >= 1
    })
    .await;
    assert!(
        caught_up,
        "the late webhook missed notifications: {:#?}",
        got.lock().unwrap()
    );
    // In order: the retried "firing" before the "resolved" queued after it.
    let order: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, b)| p == "late" && b["alert"]["rule"] == "fire_main_pressure_low")
        .map(|(_, b)| b["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        order.first().map(String::as_str),
        Some("firing"),
        "{order:?}"
    );
    let metrics = http_get(&format!("127.0.0.1:{survivor}"), "/metrics").await;
    assert!(
        metrics.contains("estatemon_analytics_alert_deliveries_total{"),
        "{metrics}"
    );

    // Settle, then count pages: once per fault, everywhere.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for rule in ["door_forced", "fire_main_pressure_low"] {
        assert_eq!(
            am_notifications(&got, rule, "firing"),
            1,
            "{rule} paged through Alertmanager"
        );
        for hook in ["hook", "late"] {
            assert_eq!(
                hook_posts(&got, hook, rule, "firing"),
                1,
                "{rule} firing on {hook}"
            );
        }
        assert_eq!(
            db.count(&format!(
                "SELECT count(*) FROM alerts WHERE rule = '{rule}'"
            ))
            .await,
            1
        );
    }
    assert_eq!(
        am_notifications(&got, "fire_main_pressure_low", "resolved"),
        1
    );
    for hook in ["hook", "late"] {
        assert_eq!(
            hook_posts(&got, hook, "fire_main_pressure_low", "resolved"),
            1
        );
    }
    assert_eq!(
        am_notifications(&got, "door_forced", "resolved"),
        0,
        "the door alert is still open"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM alert_notifications WHERE delivered_at IS NULL")
            .await,
        0,
        "nothing left undelivered"
    );
    assert!(
        db.count(
            "SELECT count(*) FROM alert_notifications WHERE receiver = 'late' AND attempts > 1"
        )
        .await
            > 0,
        "the late webhook's notifications were retried"
    );
    for mut e in evaluators {
        let _ = e.kill().await;
    }
    let _ = std::fs::remove_file(site);
    let _ = std::fs::remove_file(recovered);
    let _ = std::fs::remove_file(config);
    let _ = std::fs::remove_file(truth);
}

/// The ingest fast path: an entrapment, a forced door and a fire main below
/// 0.5 MPa arrive over MQTT and reach the webhook within seconds, raised by
/// the ingestor in the transaction that stores them (the analytics job only
/// evaluates once a minute here, so it cannot be the one paging). Each pages
/// once, even though the analytics job evaluates the same rules later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergencies_page_from_the_ingest_path_within_seconds() {
    let got: Received = Default::default();
    let port = free_port();
    let _receiver = receiver(port, got.clone()).await;
    let db = TestDb::new(&admin_url());
    let c = config(&db, &broker_url());
    let ledger =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("simulators/sites/harbour-view.toml");
    run(estatemon(&db).args(["registry", "load"]).arg(&ledger));

    let file = std::env::temp_dir().join(format!("{}.toml", unique("cfg")));
    std::fs::write(
        &file,
        format!(
            "[alerts]\nevaluate_interval_s = 60\n\
             [[alerts.webhooks]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{port}/hook\"\n"
        ),
    )
    .unwrap();
    let (ingest_port, analytics_port) = (free_port(), free_port());
    let spawn = |args: &[&str], listen: (&str, u16)| {
        let mut cmd = tokio::process::Command::from(estatemon(&db));
        cmd.arg("--config").arg(&file).args(args);
        for (k, v) in ingest_env(&c) {
            cmd.env(k, v);
        }
        cmd.env(listen.0, format!("127.0.0.1:{}", listen.1))
            .kill_on_drop(true);
        cmd.spawn().unwrap()
    };
    let _ingest = spawn(&["ingest"], ("ESTATEMON_INGEST_LISTEN", ingest_port));
    let _analytics = spawn(&["analytics"], ("ESTATEMON_ALERTS_LISTEN", analytics_port));
    for port in [ingest_port, analytics_port] {
        let addr = format!("127.0.0.1:{port}");
        let up = eventually(std::time::Duration::from_secs(20), || {
            let addr = addr.clone();
            async move {
                tokio::net::TcpStream::connect(&addr).await.is_ok()
                    && http_get(&addr, "/health").await.contains("200 OK")
            }
        })
        .await;
        assert!(up, "{addr} not healthy");
    }

    let ms = Utc::now().timestamp_millis();
    let messages = vec![
        (
            topic(&c, "events", "harbour-view", "hv-a-lift-1"),
            format!(r#"{{"ts":{ms},"type":"fault","code":"entrapment"}}"#),
        ),
        (
            topic(&c, "events", "harbour-view", "hv-a-gate-main"),
            format!(r#"{{"ts":{ms},"type":"door_forced"}}"#),
        ),
        (
            topic(&c, "telemetry", "harbour-view", "hv-fire-main-pressure"),
            format!(r#"{{"ts":{ms},"metrics":{{"pressure_mpa":0.42}}}}"#),
        ),
        // A lift the registry does not know yet (installed yesterday): its
        // entrapment pages all the same (issue 16).
        (
            topic(&c, "events", "harbour-view", "hv-c-lift-new"),
            format!(r#"{{"ts":{ms},"type":"fault","code":"entrapment"}}"#),
        ),
    ];
    let published = std::time::Instant::now();
    publish_all(
        &c.mqtt.url,
        messages
            .into_iter()
            .map(|(t, p)| (t, p.into_bytes()))
            .collect(),
    )
    .await;
    let rules = ["lift_entrapment", "door_forced", "fire_main_pressure_low"];
    let mut latency = BTreeMap::new();
    while latency.len() < rules.len() && published.elapsed() < std::time::Duration::from_secs(15) {
        for rule in rules {
            if !latency.contains_key(rule) && hook_posts(&got, "hook", rule, "firing") > 0 {
                latency.insert(rule, published.elapsed());
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    println!("publish → webhook: {latency:?}");
    assert_eq!(
        latency.len(),
        3,
        "paged: {latency:?}; got {:#?}",
        got.lock().unwrap()
    );
    for (rule, l) in &latency {
        // The issue's figure is p99 < 2 s (BENCHMARKS.md); this bound only
        // separates the fast path from the one-minute schedule.
        assert!(l.as_secs_f64() < 10.0, "{rule} took {l:?}");
    }
    let unregistered_paged = eventually(std::time::Duration::from_secs(10), || async {
        hook_posts(&got, "hook", "lift_entrapment", "firing") == 2
    })
    .await;
    assert!(
        unregistered_paged,
        "the unregistered lift's entrapment paged"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM alerts WHERE source = 'ingest'")
            .await,
        4,
        "raised by the ingestor"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM alerts WHERE device_id = 'hv-c-lift-new' \
             AND labels->>'registered' = 'false' AND summary LIKE '%not in the registry%'"
        )
        .await,
        1,
        "the page says the device is not in the registry"
    );
    let metrics = http_get(&format!("127.0.0.1:{ingest_port}"), "/metrics").await;
    assert_eq!(
        metric(&metrics, "estatemon_ingest_alerts_raised_total"),
        4.0,
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == "estatemon_ingest_emergency_rules_missing 0"),
        "every emergency has its rule: {metrics}"
    );
    // Redelivery of the same messages does not page again.
    let again = vec![(
        topic(&c, "events", "harbour-view", "hv-a-lift-1"),
        format!(r#"{{"ts":{ms},"type":"fault","code":"entrapment"}}"#).into_bytes(),
    )];
    publish_all(&c.mqtt.url, again).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    for (rule, pages) in [
        ("lift_entrapment", 2),
        ("door_forced", 1),
        ("fire_main_pressure_low", 1),
    ] {
        assert_eq!(hook_posts(&got, "hook", rule, "firing"), pages, "{rule}");
    }
    let _ = std::fs::remove_file(file);
}

/// Silences, acknowledgement and escalation, through the CLI an operator
/// uses and the outbox the notifiers read. Emergencies get a 2-second
/// response deadline here (from a rules file of our own) so escalation can
/// be watched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_hold_pages_and_unacknowledged_alerts_escalate() {
    let db = TestDb::new(&admin_url());
    let now = Utc::now();
    let faults = format!(
        "[scenario]\n\
         [[scenario.fault]]\nkind = \"lift_entrapment\"\ndevice = \"hv-a-lift-1\"\nstart = {}\nminutes = 600\n\n\
         [[scenario.fault]]\nkind = \"lift_entrapment\"\ndevice = \"hv-b-lift-1\"\nstart = {}\nminutes = 600\n\n\
         [[scenario.fault]]\nkind = \"door_forced\"\ndevice = \"hv-a-gate-main\"\nstart = {}\n",
        rfc3339(now - Duration::minutes(4)),
        rfc3339(now - Duration::minutes(4)),
        rfc3339(now - Duration::minutes(3)),
    );
    let site = site_file(&faults);
    let truth = std::env::temp_dir().join(format!("{}.json", unique("truth")));
    run(&mut direct_backfill(
        &db,
        &[
            "--interval-s",
            "60",
            "--site-file",
            site.to_str().unwrap(),
            "--from",
            &rfc3339(now - Duration::minutes(30)),
            "--to",
            &rfc3339(now),
        ],
        &truth,
    ));
    let rules = std::env::temp_dir().join(format!("{}.toml", unique("rules")));
    std::fs::write(
        &rules,
        estatemon_domain::rules::DEFAULT_RULES.replace("emergency = \"15m\"", "emergency = \"2s\""),
    )
    .unwrap();
    let config = std::env::temp_dir().join(format!("{}.toml", unique("cfg")));
    std::fs::write(
        &config,
        format!(
            "[alerts]\nrules_file = \"{}\"\n[[alerts.webhooks]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9/never\"\n",
            rules.display()
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let mut c = estatemon(&db);
        c.arg("--config").arg(&config).args(args);
        run(&mut c)
    };
    // Tower A's lift is under maintenance, and its entrapment alarm is
    // named in the silence on purpose (the contractor tests the alarm).
    let out = cli(&[
        "alerts",
        "silence",
        "--match",
        "device=hv-a-lift-1",
        "--match",
        "alertname=lift_entrapment",
        "--for",
        "1h",
        "--by",
        "lift contractor",
        "--comment",
        "15-day check, alarm test",
    ]);
    assert!(out.contains("silence 1"), "{out}");
    // Tower B's lift too, with a device-wide window that names no rule: it
    // must not keep a trapped passenger from paging.
    let out = cli(&[
        "alerts",
        "silence",
        "--match",
        "device=hv-b-lift-1",
        "--for",
        "1h",
        "--by",
        "lift contractor",
        "--comment",
        "15-day check",
    ]);
    assert!(out.contains("silence 2"), "{out}");
    cli(&["analytics", "evaluate"]);
    let queued = |rule: &str, device: &str, kind: &str| {
        format!(
            "SELECT count(*) FROM alert_notifications n JOIN alerts a ON a.id = n.alert_id
              WHERE a.rule = '{rule}' AND a.device_id = '{device}' AND n.kind = '{kind}'"
        )
    };
    assert_eq!(
        db.count("SELECT count(*) FROM alerts WHERE rule = 'lift_entrapment'")
            .await,
        2
    );
    assert_eq!(
        db.count(&queued("lift_entrapment", "hv-a-lift-1", "firing"))
            .await,
        0,
        "silenced: no page"
    );
    assert_eq!(
        db.count(&queued("lift_entrapment", "hv-b-lift-1", "firing"))
            .await,
        1,
        "an emergency pages through a silence that does not name it"
    );
    assert_eq!(
        db.count(&queued("door_forced", "hv-a-gate-main", "firing"))
            .await,
        1
    );

    // Someone takes the forced door; nobody answers tower B's lift.
    let door: i64 = db
        .client()
        .await
        .query_one("SELECT id FROM alerts WHERE rule = 'door_forced'", &[])
        .await
        .unwrap()
        .get(0);
    let out = cli(&["alerts", "ack", &door.to_string(), "--by", "guard on duty"]);
    assert!(out.contains("acknowledged"), "{out}");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    cli(&["analytics", "evaluate"]);
    assert_eq!(
        db.count(&queued("lift_entrapment", "hv-b-lift-1", "escalated"))
            .await,
        1
    );
    assert_eq!(
        db.count(&queued("door_forced", "hv-a-gate-main", "escalated"))
            .await,
        0,
        "acknowledged in time"
    );
    assert_eq!(
        db.count(&queued("lift_entrapment", "hv-a-lift-1", "escalated"))
            .await,
        0,
        "silenced alerts do not escalate"
    );
    // Escalation happens once.
    cli(&["analytics", "evaluate"]);
    assert_eq!(
        db.count(&queued("lift_entrapment", "hv-b-lift-1", "escalated"))
            .await,
        1
    );

    // The maintenance ends with the passenger still trapped: it pages now.
    cli(&["alerts", "unsilence", "1"]);
    cli(&["analytics", "evaluate"]);
    assert_eq!(
        db.count(&queued("lift_entrapment", "hv-a-lift-1", "firing"))
            .await,
        1
    );
    assert_eq!(
        db.count("SELECT count(*) FROM alerts WHERE rule = 'lift_entrapment'")
            .await,
        2,
        "still one alert per fault"
    );
    let listed = cli(&["alerts", "list", "--open"]);
    assert!(listed.contains("(ack guard on duty)"), "{listed}");

    // A bad matcher is refused with a message.
    let mut bad = estatemon(&db);
    bad.arg("--config").arg(&config).args([
        "alerts", "silence", "--match", "lift=a", "--for", "1h", "--by", "x",
    ]);
    let out = bad.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("label must be one of"));
    for f in [site, truth, rules, config] {
        let _ = std::fs::remove_file(f);
    }
}

/// The analytics job reads only what is new each cycle (a cached window
/// brought forward); what it evaluates must be what a full read sees. A row
/// committed later than the allowed lateness is picked up by the periodic
/// full reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_window_matches_a_full_read() {
    use estatemon_analytics::window::{self, WindowCache, ALLOWED_LATENESS, FULL_RELOAD_EVERY};
    let db = TestDb::new(&admin_url());
    let truth = std::env::temp_dir().join(format!("{}.json", unique("truth")));
    run(&mut direct_backfill(
        &db,
        &[
            "--quiet",
            "--devices",
            "60",
            "--from",
            "30h",
            "--interval-s",
            "300",
        ],
        &truth,
    ));
    std::fs::remove_file(&truth).ok();
    let client = db.client().await;
    let rules = estatemon_domain::rules::RuleSet::load(None).unwrap();
    let now = Utc::now();
    // Across the estate's last local midnight (Hong Kong), where the daily
    // registers restart.
    let tz: chrono_tz::Tz = "Asia/Hong_Kong".parse().unwrap();
    let midnight = now
        .with_timezone(&tz)
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_local_timezone(tz)
        .unwrap()
        .with_timezone(&Utc);
    // Devices stamp readings with milliseconds: put some within the very
    // second of each cycle's boundaries (the lateness cut and the start of
    // the lookback), where whole-second and exact comparisons disagree.
    let lookback = window::Lookback::of(&rules).readings;
    let mut at = midnight - Duration::minutes(60);
    while at <= midnight + Duration::minutes(90) {
        for boundary in [at - ALLOWED_LATENESS, at - lookback] {
            client
                .execute(
                    "INSERT INTO readings (device_id, metric, ts, value)
                     SELECT device_id, 'temperature_c', $1, 22.25 FROM devices ORDER BY device_id LIMIT 1
                     ON CONFLICT DO NOTHING",
                    &[&(boundary + Duration::milliseconds(400))],
                )
                .await
                .unwrap();
        }
        at += Duration::minutes(7);
    }
    let mut cache = WindowCache::default();
    cache
        .load(&client, &rules, midnight - Duration::minutes(67))
        .await
        .unwrap();
    assert!(cache.last_was_full);
    let mut at = midnight - Duration::minutes(60);
    let end = midnight + Duration::minutes(90);
    let mut compared = 0;
    while at <= end {
        let inc = cache.load(&client, &rules, at).await.unwrap().clone();
        let full = window::load(&client, &rules, at).await.unwrap();
        assert!(
            inc.readings_sorted()
                .unwrap()
                .equals(&full.readings_sorted().unwrap()),
            "readings differ at {at}"
        );
        assert!(inc.readings.height() > 0);
        assert_eq!(inc.registers, full.registers, "registers at {at}");
        let key = |e: &window::EventRow| {
            (
                e.ts,
                e.device.clone(),
                e.event_type.clone(),
                e.credential.clone(),
                e.code.clone(),
            )
        };
        let (mut a, mut b) = (inc.events.clone(), full.events.clone());
        a.sort_by_key(key);
        b.sort_by_key(key);
        assert_eq!(a, b, "events at {at}");
        assert_eq!(inc.last_seen_before, full.last_seen_before);
        if !cache.last_was_full {
            compared += 1;
        }
        at += Duration::minutes(7);
    }
    assert!(
        compared >= 10,
        "only {compared} incremental cycles compared"
    );

    // A reading committed after its cycle, later than the allowed lateness:
    // absent from the next incremental window, present after the reload.
    // Past the reload period after the loop's last cycle whatever the
    // hour: between 01:30 and 01:55 Hong Kong time, `now - 10 min` was
    // within 15 minutes of it, and this failed.
    let at = (now - Duration::minutes(10)).max(end + FULL_RELOAD_EVERY);
    cache.load(&client, &rules, at).await.unwrap();
    assert!(
        cache.last_was_full,
        "a jump past the reload period reads all"
    );
    let late_ts = at - ALLOWED_LATENESS - Duration::minutes(1);
    client
        .execute(
            "INSERT INTO readings (device_id, metric, ts, value)
             SELECT device_id, 'temperature_c', $1, 21.5 FROM devices ORDER BY device_id LIMIT 1",
            &[&late_ts],
        )
        .await
        .unwrap();
    let has_late = |w: &window::Window| {
        let ts = w.readings.column("ts").unwrap().i64().unwrap().clone();
        let metric = w.readings.column("metric").unwrap().str().unwrap().clone();
        (0..ts.len()).any(|i| {
            ts.get(i) == Some(late_ts.timestamp()) && metric.get(i) == Some("temperature_c")
        })
    };
    let next = cache
        .load(&client, &rules, at + Duration::minutes(1))
        .await
        .unwrap();
    assert!(!has_late(next), "beyond the lateness until the reload");
    let reloaded = cache
        .load(
            &client,
            &rules,
            at + FULL_RELOAD_EVERY + Duration::minutes(1),
        )
        .await
        .unwrap();
    assert!(has_late(reloaded), "the full reload reads late rows");
    assert!(cache.last_was_full);
}

/// Issue 20: a lift in maintenance or inspection has its ordinary faults
/// recorded, not paged, while a trapped passenger pages all the same; the
/// hold ends when the lift reports normal service, and what is still open
/// pages then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lift_in_maintenance_records_its_faults_and_still_pages_an_entrapment() {
    let db = TestDb::new(&admin_url());
    let now = Utc::now();
    let truth = std::env::temp_dir().join(format!("{}.json", unique("truth")));
    // Half an hour of the shipped site: the registry and the partitions;
    // it ends before the events below (a state it reported after them would
    // be the lift's latest).
    run(&mut direct_backfill(
        &db,
        &[
            "--interval-s",
            "300",
            "--from",
            &rfc3339(now - Duration::minutes(42)),
            "--to",
            &rfc3339(now - Duration::minutes(12)),
        ],
        &truth,
    ));
    let config = std::env::temp_dir().join(format!("{}.toml", unique("cfg")));
    std::fs::write(
        &config,
        "[[alerts.webhooks]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9/never\"\n",
    )
    .unwrap();
    let evaluate = || {
        let mut c = estatemon(&db);
        c.arg("--config")
            .arg(&config)
            .args(["analytics", "evaluate"]);
        run(&mut c)
    };
    let client = db.client().await;
    let event =
        |lift: &'static str, at: chrono::DateTime<Utc>, kind: &'static str, what: &'static str| {
            let client = &client;
            async move {
                let (state, code) = if kind == "state" {
                    (Some(what), None)
                } else {
                    (None, Some(what))
                };
                client
                    .execute(
                        "INSERT INTO events (device_id, ts, event_type, discriminator, state, code)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                        &[&lift, &at, &kind, &what, &state, &code],
                    )
                    .await
                    .unwrap();
            }
        };
    // Tower A's lift goes into maintenance; the technician's work trips a
    // door fault, and a passenger is trapped in tower A's lift all the same.
    event(
        "hv-a-lift-1",
        now - Duration::minutes(10),
        "state",
        "maintenance",
    )
    .await;
    event(
        "hv-a-lift-1",
        now - Duration::minutes(6),
        "fault",
        "door_fault",
    )
    .await;
    event(
        "hv-a-lift-1",
        now - Duration::minutes(5),
        "fault",
        "entrapment",
    )
    .await;
    // Tower B's lift, in normal service, has the same door fault (after
    // the simulated half hour, whose last state would clear it).
    event("hv-b-lift-1", Utc::now(), "fault", "door_fault").await;
    evaluate();
    let pages = |rule: &'static str, lift: &'static str| {
        let db = &db;
        async move {
            db.count(&format!(
                "SELECT count(*) FROM alert_notifications n JOIN alerts a ON a.id = n.alert_id
                  WHERE a.rule = '{rule}' AND a.device_id = '{lift}' AND n.kind = 'firing'"
            ))
            .await
        }
    };
    let recorded = |rule: &'static str, lift: &'static str| {
        let db = &db;
        async move {
            db.count(&format!(
                "SELECT count(*) FROM alerts WHERE rule = '{rule}' AND device_id = '{lift}'"
            ))
            .await
        }
    };
    assert_eq!(recorded("lift_fault", "hv-a-lift-1").await, 1, "recorded");
    assert_eq!(
        pages("lift_fault", "hv-a-lift-1").await,
        0,
        "not paged in maintenance"
    );
    assert_eq!(
        pages("lift_fault", "hv-b-lift-1").await,
        1,
        "paged in service"
    );
    assert_eq!(
        pages("lift_entrapment", "hv-a-lift-1").await,
        1,
        "a trapped passenger pages whatever the lift's mode"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM silences WHERE created_by = 'estatemon (lift service mode)'
               AND matchers = '{\"device\": \"hv-a-lift-1\"}' AND ends_at > now()"
        )
        .await,
        1
    );
    // Evaluated again, still in maintenance: one silence, renewed, no page.
    evaluate();
    assert_eq!(
        db.count(
            "SELECT count(*) FROM silences WHERE created_by = 'estatemon (lift service mode)'"
        )
        .await,
        1
    );
    assert_eq!(pages("lift_fault", "hv-a-lift-1").await, 0);
    // Back in service with the door fault still open: the hold ends and it
    // pages now.
    event("hv-a-lift-1", Utc::now(), "state", "door_open").await;
    evaluate();
    assert_eq!(
        db.count(
            "SELECT count(*) FROM silences WHERE created_by = 'estatemon (lift service mode)'
               AND ends_at > now()"
        )
        .await,
        0
    );
    evaluate();
    assert_eq!(
        pages("lift_fault", "hv-a-lift-1").await,
        1,
        "pages once the hold ends"
    );
    let _ = std::fs::remove_file(truth);
    let _ = std::fs::remove_file(config);
}

const LIFTS: &str = r#"
[scenario]
[[scenario.fault]]
kind = "lift_maintenance"
device = "hv-b-lift-1"
start = 2026-06-02T09:00:00
minutes = 600

[[scenario.fault]]
kind = "lift_maintenance"
device = "hv-a-lift-1"
start = 2026-06-03T09:00:00
minutes = 240

[[scenario.fault]]
kind = "lift_fault"
device = "hv-a-lift-1"
start = 2026-06-03T10:00:00
minutes = 30
code = "door_fault"

[[scenario.fault]]
kind = "alarm_line_down"
device = "hv-a-lift-1"
start = 2026-06-04T00:00:00
minutes = 4320

[[scenario.fault]]
kind = "lift_entrapment"
device = "hv-b-lift-1"
start = 2026-06-05T10:12:00
minutes = 25
"#;

/// A week of two lifts: a maintenance visit that runs 10 hours (past the
/// 8-hour rule) and one of 4; a door fault during the short one; three
/// days in which tower A's alarm line lets no test call through; an
/// entrapment with its rescue. Replayed, the rules raise exactly one
/// overrun alert (not held by the visit's own silence), exactly one
/// alarm-line alert from the third day after the last passed test until the
/// next, and the entrapment's rescue steps are stored as the truth says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lift_left_in_maintenance_and_a_silent_alarm_line_raise_one_alert_each() {
    use estatemon_simulators::model::rescue_timeline;
    let db = TestDb::new(&admin_url());
    let site = site_file(LIFTS);
    let truth_path = std::env::temp_dir().join(format!("{}.json", unique("truth")));
    run(&mut direct_backfill(
        &db,
        &[
            "--site-file",
            site.to_str().unwrap(),
            "--from",
            "2026-06-01T00:00:00+08:00",
            "--to",
            "2026-06-08T00:00:00+08:00",
            "--interval-s",
            "900",
        ],
        &truth_path,
    ));
    let truth = GroundTruth::read(&truth_path).unwrap();
    run(estatemon(&db).args([
        "analytics",
        "replay",
        "--from",
        "2026-06-01T01:00:00+08:00",
        "--to",
        "2026-06-08T00:00:00+08:00",
        "--step",
        "15m",
    ]));
    let alerts = stored_alerts(&db).await;
    let of =
        |rule: &str| -> Vec<&StoredAlert> { alerts.iter().filter(|a| a.rule == rule).collect() };
    let local = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);

    let overrun = of("lift_maintenance_overrun");
    assert_eq!(overrun.len(), 1, "{overrun:#?}");
    assert_eq!(overrun[0].labels["device"], "hv-b-lift-1");
    assert_eq!(
        overrun[0].started_at,
        local("2026-06-02T17:00:00+08:00"),
        "8 h after it began"
    );
    assert_eq!(
        overrun[0].resolved_at,
        Some(local("2026-06-02T19:00:00+08:00")),
        "when it ended"
    );
    // The visit's own silence held neither this alert nor was it needed.
    assert_eq!(
        db.count("SELECT count(*) FROM alerts WHERE rule = 'lift_maintenance_overrun' AND silenced_by IS NOT NULL")
            .await,
        0,
        "a service-mode silence never holds the overrun alert"
    );
    // The door fault during the short visit: recorded, held by that visit's silence.
    let door = of("lift_fault");
    assert_eq!(door.len(), 1, "{door:#?}");
    assert_eq!(
        db.count(
            "SELECT count(*) FROM alerts WHERE rule = 'lift_fault' AND silenced_by IS NOT NULL"
        )
        .await,
        1,
        "a fault during maintenance is recorded, not paged"
    );

    let line = of("lift_alarm_line_untested");
    assert_eq!(line.len(), 1, "{line:#?}");
    assert_eq!(line[0].labels["device"], "hv-a-lift-1");
    // Last passed test 3 June 03:00; none on 4, 5, 6 June; 7 June passes.
    assert_eq!(line[0].started_at, local("2026-06-06T03:00:00+08:00"));
    assert_eq!(
        line[0].resolved_at,
        Some(local("2026-06-07T03:00:00+08:00"))
    );

    // The entrapment's rescue, step by step, as the truth has it.
    let entrapment = truth
        .faults
        .iter()
        .find(|f| f.kind == FaultKind::LiftEntrapment)
        .unwrap();
    let steps: Vec<(String, DateTime<Utc>)> = db
        .client()
        .await
        .query(
            "SELECT code, ts FROM events WHERE device_id = 'hv-b-lift-1' AND event_type = 'rescue'
              ORDER BY ts",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let want: Vec<(String, DateTime<Utc>)> = rescue_timeline(entrapment)
        .into_iter()
        .map(|(s, t)| (s.as_str().to_owned(), t))
        .collect();
    assert_eq!(steps, want);
    // As an incident: alarm to back in service, the response time against
    // the 15-minute target.
    let incidents = estatemon_analytics::lifts::incidents::site(
        &db.client().await,
        "harbour-view",
        local("2026-06-01T00:00:00+08:00"),
        local("2026-06-08T00:00:00+08:00"),
    )
    .await
    .unwrap();
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    let i = &incidents[0];
    assert_eq!(i.lift, "hv-b-lift-1");
    assert_eq!(i.alarm_at, entrapment.start);
    assert_eq!(i.acknowledged_at, Some(want[0].1));
    assert_eq!(i.rescuer_on_site_at, Some(want[1].1));
    assert_eq!(i.released_at, Some(want[2].1));
    assert_eq!(i.back_in_service_at, Some(entrapment.end));
    assert_eq!(i.response_minutes, Some(10.0), "40 % of 25 minutes");
    assert_eq!((i.within_target, i.status), (Some(true), "closed"));
    // Issue 30: the incident names the company that acknowledged, the
    // lift's contractor in the registry.
    assert_eq!(
        i.acknowledged_by.as_deref(),
        Some("rescue service: Lift contractor: Otis")
    );
    assert_eq!(i.rescue_company.as_deref(), Some("Lift contractor: Otis"));
    // Tower A's passed tests: every day but the three the line was down.
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE device_id = 'hv-a-lift-1' AND event_type = 'alarm_test' AND result = 'passed'")
            .await,
        7 - 3
    );
    let _ = std::fs::remove_file(site);
    let _ = std::fs::remove_file(truth_path);
}

/// One alert as the comparison of two runs sees it.
type AlertKey = (
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    Option<f64>,
    bool,
);

async fn alert_keys(db: &TestDb) -> Vec<AlertKey> {
    let mut keys: Vec<AlertKey> = db
        .client()
        .await
        .query(
            "SELECT rule, subject, started_at, resolved_at, last_seen_at, value,
                    silenced_by IS NOT NULL
               FROM alerts",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect();
    keys.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
    keys
}

/// Issue 28: a replay reads history once and evaluates in memory; what it
/// records must be what the live job records stepping through the same
/// data, alert for alert (rule, subject, start, end, evidence, silenced).
/// The live side is the analytics job's own cycle with its cached window,
/// at every step.
async fn live_and_replay_agree(
    site: std::path::PathBuf,
    backfill: [&str; 2],
    interval_s: &str,
    replay: [&str; 2],
    step: Duration,
    rules_seen: &[&str],
) {
    use estatemon_analytics::job::cycle;
    use estatemon_analytics::window::WindowCache;
    let db = TestDb::new(&admin_url());
    let truth = std::env::temp_dir().join(format!("{}.json", unique("truth")));
    run(&mut direct_backfill(
        &db,
        &[
            "--site-file",
            site.to_str().unwrap(),
            "--from",
            backfill[0],
            "--to",
            backfill[1],
            "--interval-s",
            interval_s,
        ],
        &truth,
    ));
    let parse = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    let (from, to) = (parse(replay[0]), parse(replay[1]));
    let rules = estatemon_domain::rules::RuleSet::load(None).unwrap();
    let mut client = db.client().await;
    let mut cache = WindowCache::default();
    let mut at = from;
    while at <= to {
        cycle(&mut client, &rules, &[], at, None, Some(&mut cache))
            .await
            .unwrap();
        at += step;
    }
    let live = alert_keys(&db).await;
    client
        .batch_execute("TRUNCATE alerts, silences CASCADE")
        .await
        .unwrap();
    let out = run(estatemon(&db).args([
        "analytics",
        "replay",
        "--from",
        replay[0],
        "--to",
        replay[1],
        "--step",
        &format!("{}m", step.num_minutes()),
        // The live side leaves what still fires at its last step open.
        "--leave-open",
    ]));
    let replayed = alert_keys(&db).await;
    assert!(live.len() >= 5, "too few alerts to compare: {live:#?}");
    for rule in rules_seen {
        assert!(
            live.iter().any(|a| a.0.starts_with(rule)),
            "no {rule} alert to compare: {live:#?}"
        );
    }
    for (a, b) in live.iter().zip(&replayed) {
        assert_eq!(a, b, "live (left) and replay (right) differ\n{out}");
    }
    assert_eq!(
        live.len(),
        replayed.len(),
        "live {live:#?}\nreplay {replayed:#?}"
    );
    let _ = std::fs::remove_file(site);
    let _ = std::fs::remove_file(truth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_records_the_alerts_the_live_job_records() {
    // Leaks, a forced door, the fire main, an entrapment, held doors, a
    // silent meter, a lift fault and a burst of denied swipes, stepped at
    // 7 minutes (not a multiple of the 5-minute data).
    live_and_replay_agree(
        site_file(FAULTS),
        ["2026-06-07T12:00:00+08:00", "2026-06-09T12:00:00+08:00"],
        "300",
        ["2026-06-07T13:00:00+08:00", "2026-06-09T12:00:00+08:00"],
        Duration::minutes(7),
        &[
            "night_water_flow",
            "door_forced",
            "fire_main_pressure_low",
            "fire_main_pressure_falling",
            "lift_entrapment",
            "meter_offline",
            "lift_fault",
            "denied_swipes",
            "door_held_open",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_lifts_and_inspections_records_what_the_live_job_records() {
    // Maintenance visits (service-mode silences, the overrun rule), a
    // silent alarm line (expect), an entrapment, and the ledger's tracked
    // devices with no patrol (inspection windows missed).
    live_and_replay_agree(
        site_file_tracked(LIFTS),
        ["2026-06-01T00:00:00+08:00", "2026-06-08T00:00:00+08:00"],
        "900",
        ["2026-06-01T01:00:00+08:00", "2026-06-08T00:00:00+08:00"],
        Duration::minutes(15),
        &[
            "lift_maintenance_overrun",
            "lift_alarm_line_untested",
            "lift_fault",
            "inspection_overdue",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_at_the_default_step_records_the_alerts_the_live_job_records() {
    // Every minute (the replay's default, where it reuses the most between
    // steps) through the night's leak, the forced door and the entrapment.
    live_and_replay_agree(
        site_file(FAULTS),
        ["2026-06-07T12:00:00+08:00", "2026-06-09T12:00:00+08:00"],
        "300",
        ["2026-06-08T00:00:00+08:00", "2026-06-08T12:00:00+08:00"],
        Duration::minutes(1),
        &["night_water_flow", "door_forced", "lift_entrapment"],
    )
    .await;
}

/// Issue 31: the chat channels estates use, each checked by a local
/// receiver against its public documentation, the signatures recomputed
/// by Python's standard library (not by the code that made them):
/// DingTalk's custom robot (`timestamp` in ms and `sign` in the query:
/// Base64 of HMAC-SHA256 keyed by the secret over "timestamp\nsecret",
/// URL-encoded), Feishu's custom bot (`timestamp` in s and `sign` in the
/// body: HMAC-SHA256 keyed by "timestamp\nsecret" over nothing), WeCom's
/// group robot and Slack's incoming webhook (their text bodies), and
/// estatemon's own JSON with `X-Estatemon-Signature: sha256=<hex>` over
/// the raw body. Each message names the severity, the place and the
/// deadline, in Chinese where asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_channels_get_their_documented_bodies_and_signatures() {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Uri};
    type Got = std::sync::Arc<std::sync::Mutex<Vec<(String, HeaderMap, Vec<u8>)>>>;
    let got: Got = Default::default();
    let app = axum::Router::new()
        .fallback(
            |axum::extract::State(got): axum::extract::State<Got>,
             uri: Uri,
             headers: HeaderMap,
             body: Bytes| async move {
                got.lock()
                    .unwrap()
                    .push((uri.to_string(), headers, body.to_vec()));
                r#"{"errcode":0,"errmsg":"ok"}"#
            },
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let hook = |name: &str, format: &str, secret: Option<&str>, language: Option<&str>| {
        let mut t = format!(
            "name = \"{name}\"\nurl = \"{base}/{name}?access_token=abc\"\nformat = \"{format}\"\n"
        );
        if let Some(s) = secret {
            t.push_str(&format!("secret = \"{s}\"\n"));
        }
        if let Some(l) = language {
            t.push_str(&format!("language = \"{l}\"\n"));
        }
        if format == "telegram" {
            t.push_str("chat_id = \"-1001234567890\"\n");
        }
        if format == "sms" {
            t.push_str("account = \"AC0123\"\nfrom = \"+85255550000\"\nto = \"+85255550101\"\n");
        }
        toml::from_str::<estatemon_domain::config::WebhookConfig>(&t).unwrap()
    };
    let config = estatemon_domain::config::AlertsConfig {
        webhooks: vec![
            hook(
                "ding",
                "dingtalk",
                Some("SECdingtalk0123456789"),
                Some("zh"),
            ),
            hook("feishu", "feishu", Some("feishu-secret"), None),
            hook("wecom", "wecom", None, Some("zh")),
            hook("slack", "slack", None, None),
            hook("own", "estatemon", Some("own-secret"), None),
            hook("telegram", "telegram", None, None),
            hook("sms", "sms", Some("sms-token"), Some("zh")),
        ],
        ..Default::default()
    };
    let mut labels = serde_json::Map::new();
    for (k, v) in [
        ("site", "harbour-view"),
        ("building", "tower-a"),
        ("device", "hv-a-lift-1"),
    ] {
        labels.insert(k.into(), serde_json::json!(v));
    }
    let now = Utc::now();
    let alert = estatemon_analytics::notify::AlertView {
        id: 42,
        rule: "lift_entrapment".into(),
        subject: "hv-a-lift-1".into(),
        severity: "emergency".into(),
        summary: "Passenger trapped in a lift".into(),
        labels,
        value: None,
        state: "firing".into(),
        started_at: now,
        resolved_at: None,
        fired_at: now,
        response_deadline: now + Duration::minutes(15),
        escalated_at: None,
    };
    let sender = estatemon_analytics::notify::Sender::new(config);
    for name in ["ding", "feishu", "wecom", "slack", "own", "telegram", "sms"] {
        sender.send(name, 7, "firing", &alert).await.unwrap();
    }
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 7);
    let of = |name: &str| {
        got.iter()
            .find(|(u, _, _)| u.starts_with(&format!("/{name}?")))
            .unwrap()
    };
    let json = |b: &[u8]| -> serde_json::Value { serde_json::from_slice(b).unwrap() };
    let python = |script: &str, args: &[&str]| {
        let out = Command::new("python3")
            .args(["-c", script])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    // DingTalk.
    let (uri, _, body) = of("ding");
    let query: std::collections::HashMap<String, String> =
        url::Url::parse(&format!("http://x{uri}"))
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
    assert_eq!(query["access_token"], "abc");
    let ts: i64 = query["timestamp"].parse().unwrap();
    assert!(
        (now.timestamp_millis() - ts).abs() < 60_000,
        "within an hour, as DingTalk asks"
    );
    let want = python(
        "import sys,hmac,hashlib,base64\nts,secret=sys.argv[1],sys.argv[2]\nprint(base64.b64encode(hmac.new(secret.encode(),f'{ts}\\n{secret}'.encode(),hashlib.sha256).digest()).decode())",
        &[&query["timestamp"], "SECdingtalk0123456789"],
    );
    assert_eq!(query["sign"], want, "DingTalk's sign");
    let b = json(body);
    assert_eq!(b["msgtype"], "text");
    let text = b["text"]["content"].as_str().unwrap();
    assert!(
        text.contains("【緊急】")
            && text.contains("hv-a-lift-1")
            && text.contains("tower-a")
            && text.contains("42"),
        "{text}"
    );
    // Feishu.
    let (_, _, body) = of("feishu");
    let b = json(body);
    let want = python(
        "import sys,hmac,hashlib,base64\nts,secret=sys.argv[1],sys.argv[2]\nprint(base64.b64encode(hmac.new(f'{ts}\\n{secret}'.encode(),b'',hashlib.sha256).digest()).decode())",
        &[b["timestamp"].as_str().unwrap(), "feishu-secret"],
    );
    assert_eq!(b["sign"], want, "Feishu's sign");
    assert_eq!(b["msg_type"], "text");
    assert!(
        b["content"]["text"]
            .as_str()
            .unwrap()
            .starts_with("[EMERGENCY] Passenger trapped"),
        "{b}"
    );
    // WeCom and Slack.
    let b = json(&of("wecom").2);
    assert_eq!(b["msgtype"], "text");
    assert!(
        b["text"]["content"].as_str().unwrap().contains("請於"),
        "{b}"
    );
    let b = json(&of("slack").2);
    assert!(b["text"].as_str().unwrap().contains("Respond by"), "{b}");
    // estatemon's own JSON, its body signed.
    let (_, headers, body) = of("own");
    let raw = std::env::temp_dir().join(unique("body"));
    std::fs::write(&raw, body).unwrap();
    let want = python(
        "import sys,hmac,hashlib\nprint('sha256='+hmac.new(sys.argv[1].encode(),open(sys.argv[2],'rb').read(),hashlib.sha256).hexdigest())",
        &["own-secret", raw.to_str().unwrap()],
    );
    let _ = std::fs::remove_file(&raw);
    assert_eq!(headers["x-estatemon-signature"], want.as_str());
    assert_eq!(json(body)["alert"]["id"], 42);
    // Telegram's sendMessage: chat_id and text as JSON.
    let b = json(&of("telegram").2);
    assert_eq!(b["chat_id"], "-1001234567890");
    assert!(b["text"].as_str().unwrap().contains("hv-a-lift-1"), "{b}");
    // A Twilio-compatible SMS: To, From, Body form-encoded, Basic
    // authentication of account and token.
    let (_, headers, body) = of("sms");
    assert_eq!(headers["content-type"], "application/x-www-form-urlencoded");
    let auth = headers["authorization"].to_str().unwrap();
    let decoded = python(
        "import sys,base64\nprint(base64.b64decode(sys.argv[1].split()[1]).decode())",
        &[auth],
    );
    assert_eq!(decoded, "AC0123:sms-token");
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body).into_owned().collect();
    assert_eq!(
        (form["To"].as_str(), form["From"].as_str()),
        ("+85255550101", "+85255550000")
    );
    assert!(form["Body"].starts_with("【緊急】"), "{form:?}");
    // DingTalk takes 20 a minute: the 20th goes, the 21st is refused for
    // the outbox to retry (an error, never a silent drop).
    for n in 2..=20 {
        sender.send("ding", n, "firing", &alert).await.unwrap();
    }
    let e = sender.send("ding", 21, "firing", &alert).await.unwrap_err();
    assert!(e.contains("limit of 20 messages a minute"), "{e}");
}
