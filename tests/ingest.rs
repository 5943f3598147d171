//! End-to-end ingest against the real Mosquitto and PostgreSQL on this
//! machine: every payload format, duplicates, out-of-order delivery,
//! malformed messages, unknown devices, health, shared subscriptions.

mod common;

use std::time::Duration;

use common::*;
use estatemon_ingest::Ingestor;

async fn start(db: &TestDb) -> (estatemon_domain::config::Config, Ingestor) {
    let c = config(db, &broker_url());
    let ingestor = Ingestor::start(c.clone()).await.expect("ingestor starts");
    assert!(
        ingestor.subscribed(Duration::from_secs(10)).await,
        "subscribed"
    );
    (c, ingestor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payload_format_is_stored_in_canonical_units() {
    let db = TestDb::new(&admin_url());
    let (c, ingestor) = start(&db).await;
    println!(
        "storage mode: {} ({})",
        ingestor.migration.mode.as_str(),
        ingestor.migration.reason
    );
    let t = base_ms();
    let t_s = t / 1000;
    let iso = chrono::DateTime::from_timestamp_millis(t)
        .unwrap()
        .to_rfc3339();
    let messages = vec![
        // JSON with RFC 3339 time, two metrics, one in W.
        (
            topic(&c, "telemetry", "hv", "m-1"),
            format!(r#"{{"ts":"{iso}","metrics":{{"energy_kwh":1234.5,"power_w":3200}}}}"#).into_bytes(),
        ),
        // Gateway batch with epoch ms.
        (
            topic(&c, "telemetry", "hv", "w-1"),
            format!(
                r#"[{{"ts":{t},"metrics":{{"volume_m3":10.5}}}},{{"ts":{},"metrics":{{"volume_l":10600}}}}]"#,
                t + 60_000
            )
            .into_bytes(),
        ),
        // SenML with base name, time and unit.
        (
            topic(&c, "senml", "hv", "m-2"),
            format!(
                r#"[{{"bn":"urn:dev:m-2:","bt":{t_s},"bu":"Wh","n":"energy","v":5000}},{{"n":"energy","t":60,"v":5500}},{{"n":"pressure","u":"kPa","v":620}}]"#
            )
            .into_bytes(),
        ),
        // Events: access (credential), forced door, held open, lift fault and state.
        (
            topic(&c, "events", "hv", "gate-1"),
            format!(
                r#"[{{"ts":{t},"type":"access","result":"denied","method":"card","credential":"CARD-424242","direction":"in"}},
                    {{"ts":{},"type":"door_forced"}},{{"ts":{},"type":"door_held_open","seconds":95}}]"#,
                t + 1, t + 2
            )
            .into_bytes(),
        ),
        (
            topic(&c, "events", "hv", "lift-1"),
            format!(
                r#"[{{"ts":{t},"type":"fault","code":"entrapment"}},{{"ts":{},"type":"state","state":"fault"}}]"#,
                t + 1
            )
            .into_bytes(),
        ),
    ];
    publish_all(&c.mqtt.url, messages).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            db.count("SELECT count(*) FROM readings").await == 7
                && db.count("SELECT count(*) FROM events").await == 5
        })
        .await,
        "readings {} events {}",
        db.count("SELECT count(*) FROM readings").await,
        db.count("SELECT count(*) FROM events").await
    );
    let client = db.client().await;
    let value = |device: &'static str, metric: &'static str, offset_ms: i64| {
        let client = &client;
        async move {
            let ts = chrono::DateTime::from_timestamp_millis(t + offset_ms).unwrap();
            client
                .query_one(
                    "SELECT value FROM readings WHERE device_id = $1 AND metric = $2 AND ts = $3",
                    &[&device, &metric, &ts],
                )
                .await
                .unwrap_or_else(|e| panic!("{device} {metric}: {e}"))
                .get::<_, f64>(0)
        }
    };
    assert_eq!(value("m-1", "energy_kwh", 0).await, 1234.5);
    assert!((value("m-1", "power_kw", 0).await - 3.2).abs() < 1e-9);
    assert!((value("w-1", "volume_m3", 60_000).await - 10.6).abs() < 1e-9);
    assert!((value("m-2", "energy_kwh", 60_000).await - 5.5).abs() < 1e-9);
    assert!((value("m-2", "pressure_mpa", 0).await - 0.62).abs() < 1e-9);

    let row = client
        .query_one(
            "SELECT result, method, credential, direction FROM events WHERE device_id = 'gate-1' AND event_type = 'access'",
            &[],
        )
        .await
        .unwrap();
    let credential: String = row.get(2);
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(3)
        ),
        ("denied".into(), "card".into(), "in".into())
    );
    assert_eq!(credential.len(), 32);
    assert!(!credential.contains("424242"));
    let held: f64 = client
        .query_one(
            "SELECT duration_s FROM events WHERE event_type = 'door_held_open'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 95.0);
    let code: String = client
        .query_one("SELECT code FROM events WHERE event_type = 'fault'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(code, "entrapment");
    // The raw card number is nowhere in the database.
    let leaks = db
        .count(
            "SELECT (SELECT count(*) FROM events WHERE events::text LIKE '%424242%')
                  + (SELECT count(*) FROM dead_letters WHERE convert_from(payload, 'UTF8') LIKE '%424242%')",
        )
        .await;
    assert_eq!(leaks, 0);
    ingestor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_out_of_order_readings_are_stored_once() {
    let db = TestDb::new(&admin_url());
    let (c, ingestor) = start(&db).await;
    let t = base_ms();
    let tp = topic(&c, "telemetry", "hv", "m-dup");
    // 50 readings, newest first, each published three times, plus a batch
    // repeating ten of them.
    let mut messages = Vec::new();
    for round in 0..3 {
        for i in (0..50).rev() {
            messages.push((tp.clone(), energy(t + i * 60_000, 100.0 + i as f64)));
        }
        if round == 1 {
            let batch: Vec<String> = (0..10)
                .map(|i| {
                    format!(
                        r#"{{"ts":{},"metrics":{{"energy_kwh":{}}}}}"#,
                        t + i * 60_000,
                        100 + i
                    )
                })
                .collect();
            messages.push((tp.clone(), format!("[{}]", batch.join(",")).into_bytes()));
        }
    }
    publish_all(&c.mqtt.url, messages).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            let m = http_get(&ingestor.http_addr.to_string(), "/metrics").await;
            metric(&m, "estatemon_ingest_messages_total{channel=\"telemetry\"}") >= 151.0
                && metric(&m, "estatemon_ingest_inflight_messages") == 0.0
        })
        .await
    );
    assert_eq!(db.count("SELECT count(*) FROM readings").await, 50);
    assert_eq!(
        db.count("SELECT count(DISTINCT ts) FROM readings WHERE device_id = 'm-dup'")
            .await,
        50
    );
    let m = http_get(&ingestor.http_addr.to_string(), "/metrics").await;
    assert_eq!(metric(&m, "estatemon_ingest_readings_stored_total"), 50.0);
    assert_eq!(
        metric(&m, "estatemon_ingest_readings_duplicate_total"),
        110.0
    );
    ingestor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_become_dead_letters_and_neighbours_are_stored() {
    let db = TestDb::new(&admin_url());
    let (c, ingestor) = start(&db).await;
    let t = base_ms();
    let future = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let ancient = chrono::Utc::now().timestamp_millis() - 20 * 365 * 86_400_000;
    let tel = topic(&c, "telemetry", "hv", "m-bad");
    let senml = topic(&c, "senml", "hv", "m-bad");
    let events = topic(&c, "events", "hv", "gate-bad");
    // Topics under the prefix that fit no template: one level short, one
    // level long. The subscription must receive them (issue 16).
    let prefix = tel.split('/').next().unwrap().to_owned();
    let short = format!("{prefix}/hv/telemetry");
    let long = format!("{prefix}/hv/m-bad/telemetry/extra");
    let corpus: Vec<(String, String, &str)> = vec![
        (tel.clone(), "{not json".into(), "invalid_json"),
        (tel.clone(), "".into(), "empty_payload"),
        (
            tel.clone(),
            format!(r#"{{"ts":{t},"metrics":{{"energy_kwh":NaN}}}}"#),
            "non_finite_value",
        ),
        (
            tel.clone(),
            r#"{"metrics":{"energy_kwh":1}}"#.into(),
            "missing_field",
        ),
        (
            tel.clone(),
            format!(r#"{{"ts":{t},"metrics":{{"energy_kwh":"high"}}}}"#),
            "invalid_field",
        ),
        (
            tel.clone(),
            r#"{"ts":"last tuesday","metrics":{"energy_kwh":1}}"#.into(),
            "invalid_timestamp",
        ),
        // A NUL echoed into the reason's detail must not poison the batch.
        (
            tel.clone(),
            r#"{"ts":"\u0000","metrics":{"energy_kwh":1}}"#.into(),
            "invalid_timestamp",
        ),
        (
            tel.clone(),
            format!(r#"{{"ts":{future},"metrics":{{"energy_kwh":1}}}}"#),
            "timestamp_in_future",
        ),
        (
            tel.clone(),
            format!(r#"{{"ts":{ancient},"metrics":{{"energy_kwh":1}}}}"#),
            "timestamp_too_old",
        ),
        (
            tel.clone(),
            format!(r#"{{"ts":{t},"metrics":{{"flux_kwh":1}}}}"#),
            "unknown_metric",
        ),
        (
            tel.clone(),
            format!(r#"{{"ts":{t},"metrics":{{"energy_kwh":-5}}}}"#),
            "invalid_value",
        ),
        (
            senml.clone(),
            format!(r#"[{{"n":"energy","u":"BTU","bt":{},"v":1}}]"#, t / 1000),
            "unknown_unit",
        ),
        (
            events.clone(),
            format!(r#"{{"ts":{t},"type":"party"}}"#),
            "unknown_event_type",
        ),
        (
            events.clone(),
            format!(
                r#"{{"ts":{t},"type":"access","result":"maybe","method":"card","credential":"CARD-999111"}}"#
            ),
            "invalid_field",
        ),
        (
            short.clone(),
            format!(r#"{{"ts":{t},"metrics":{{"energy_kwh":1}}}}"#),
            "unknown_topic",
        ),
        (
            long.clone(),
            format!(r#"{{"ts":{t},"metrics":{{"energy_kwh":1}}}}"#),
            "unknown_topic",
        ),
    ];
    // A good reading before and after every bad message.
    let mut messages = Vec::new();
    let mut good = 0;
    for (i, (topic, payload, _)) in corpus.iter().enumerate() {
        messages.push((tel.clone(), energy(t + 2 * i as i64 * 1000, i as f64)));
        messages.push((topic.clone(), payload.clone().into_bytes()));
        messages.push((
            tel.clone(),
            energy(t + (2 * i as i64 + 1) * 1000, i as f64 + 0.5),
        ));
        good += 2;
    }
    publish_all(&c.mqtt.url, messages).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            db.count("SELECT count(*) FROM dead_letters").await >= corpus.len() as i64
                && db.count("SELECT count(*) FROM readings").await >= good
        })
        .await,
        "dead letters {}, readings {}",
        db.count("SELECT count(*) FROM dead_letters").await,
        db.count("SELECT count(*) FROM readings").await
    );
    assert_eq!(db.count("SELECT count(*) FROM readings").await, good);
    let client = db.client().await;
    let rows = client
        // In arrival order: two writers may commit two batches either way
        // round, so ids alone do not say which came first.
        .query("SELECT topic, convert_from(payload, 'UTF8'), reason, detail FROM dead_letters ORDER BY received_at, id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), corpus.len());
    for (row, (topic, payload, reason)) in rows.iter().zip(&corpus) {
        let (t, p, r, d): (String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!(&t, topic);
        assert_eq!(&r, reason, "payload {payload}: {d}");
        assert!(!d.is_empty());
        if !payload.contains("CARD") {
            assert_eq!(&p, payload);
        } else {
            assert!(
                !p.contains("999111"),
                "credential leaked into dead letters: {p}"
            );
        }
    }
    let m = http_get(&ingestor.http_addr.to_string(), "/metrics").await;
    assert_eq!(
        metric(
            &m,
            "estatemon_ingest_dead_letters_total{reason=\"invalid_field\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "estatemon_ingest_dead_letters_total{reason=\"unknown_unit\"}"
        ),
        1.0
    );
    ingestor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_devices_are_stored_registered_and_counted_and_health_names_the_mode() {
    let db = TestDb::new(&admin_url());
    let (c, ingestor) = start(&db).await;
    let health = http_get(&ingestor.http_addr.to_string(), "/health").await;
    assert!(
        health.contains("\"storage_mode\":\"plain\"")
            || health.contains("\"storage_mode\":\"timescaledb\""),
        "{health}"
    );
    assert!(health.contains("\"mqtt_connected\":true"), "{health}");
    let t = base_ms();
    publish_all(
        &c.mqtt.url,
        (0..5)
            .map(|i| {
                (
                    topic(&c, "telemetry", "north-site", "stranger-7"),
                    energy(t + i * 1000, 1.0 + i as f64),
                )
            })
            .collect(),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            db.count("SELECT count(*) FROM readings WHERE device_id = 'stranger-7'")
                .await
                == 5
        })
        .await
    );
    let row = db
        .client()
        .await
        .query_one(
            "SELECT assigned, site_id, kind FROM devices WHERE device_id = 'stranger-7'",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert_eq!(row.get::<_, String>(1), "north-site");
    assert_eq!(row.get::<_, String>(2), "unknown");
    let m = http_get(&ingestor.http_addr.to_string(), "/metrics").await;
    assert_eq!(
        metric(&m, "estatemon_ingest_unassigned_readings_total"),
        5.0
    );
    assert_eq!(metric(&m, "estatemon_ingest_devices_registered_total"), 1.0);
    assert_eq!(metric(&m, "estatemon_ingest_mqtt_connected"), 1.0);
    ingestor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingestors_on_a_shared_subscription_store_every_reading_once() {
    let db = TestDb::new(&admin_url());
    let mut a = config(&db, &broker_url());
    a.mqtt.shared_group = Some(unique("group"));
    let mut b = a.clone();
    b.mqtt.client_id = format!("{}-b", a.mqtt.client_id);
    let ia = Ingestor::start(a.clone()).await.unwrap();
    let ib = Ingestor::start(b).await.unwrap();
    assert!(
        ia.subscribed(Duration::from_secs(10)).await
            && ib.subscribed(Duration::from_secs(10)).await
    );
    let t = base_ms();
    let n = 3000;
    let messages = (0..n)
        .map(|i| {
            (
                topic(&a, "telemetry", "hv", &format!("m-{}", i % 30)),
                energy(t + i, i as f64),
            )
        })
        .collect();
    publish_all(&a.mqtt.url, messages).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            db.count("SELECT count(*) FROM readings").await == n
        })
        .await,
        "stored {}",
        db.count("SELECT count(*) FROM readings").await
    );
    let ma = http_get(&ia.http_addr.to_string(), "/metrics").await;
    let mb = http_get(&ib.http_addr.to_string(), "/metrics").await;
    let (sa, sb) = (
        metric(&ma, "estatemon_ingest_readings_stored_total"),
        metric(&mb, "estatemon_ingest_readings_stored_total"),
    );
    println!("ingestor a stored {sa}, b stored {sb}");
    assert!(sa > 0.0 && sb > 0.0, "both must take part: {sa} / {sb}");
    assert_eq!(
        sa + sb,
        n as f64,
        "each reading delivered to exactly one ingestor"
    );
    ia.shutdown().await;
    ib.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_and_partitions_follow_the_data() {
    let db = TestDb::new(&admin_url());
    let (c, ingestor) = start(&db).await;
    // Two hours of 15-minute power readings, a week ago (backfill).
    let t0 = (chrono::Utc::now() - chrono::Duration::days(7)).timestamp() / 3600 * 3600 * 1000;
    let tp = topic(&c, "telemetry", "hv", "p-1");
    // And a meter's register over three hours, one kWh per 15 minutes.
    let te = topic(&c, "telemetry", "hv", "e-1");
    let te2 = topic(&c, "telemetry", "hv", "e-2");
    let messages = (0..8)
        .map(|i| {
            (
                tp.clone(),
                format!(
                    r#"{{"ts":{},"metrics":{{"power_kw":{}}}}}"#,
                    t0 + i * 900_000,
                    i + 1
                )
                .into_bytes(),
            )
        })
        .chain((0..12).map(|i| (te.clone(), energy(t0 + i * 900_000, 100.0 + i as f64))))
        // A second meter the later batch touches only hours later: the
        // refresh goes device first and must leave its rows as they are.
        .chain((0..12).map(|i| {
            (
                te2.clone(),
                energy(t0 + i * 900_000, 500.0 + 2.0 * i as f64),
            )
        }))
        .collect();
    publish_all(&c.mqtt.url, messages).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            db.count("SELECT count(*) FROM readings").await == 32
        })
        .await
    );
    let mut client = db.client().await;
    let mode = ingestor.migration.mode;
    estatemon_ingest::maintenance::round(&mut client, &c.storage, mode, 7)
        .await
        .unwrap();
    let rows = client
        .query(
            "SELECT samples, avg, first, last FROM readings_hourly WHERE device_id = 'p-1' ORDER BY bucket",
            &[],
        )
        .await
        .unwrap();
    let hourly: Vec<(i64, f64, f64, f64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(hourly, vec![(4, 2.5, 1.0, 4.0), (4, 6.5, 5.0, 8.0)]);
    let daily: f64 = client
        .query_one(
            "SELECT sum(samples)::float8 FROM readings_daily WHERE device_id = 'p-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(daily, 8.0);
    assert_eq!(db.count("SELECT count(*) FROM rollup_dirty").await, 0);

    // Hourly consumption: an hour counts once readings cover it whole (a
    // reading at or after its end). The next batch makes the third hour
    // known (a dirty hour recomputes the hours before it), then the
    // register falls to near zero (a reset): that hour counts the use after
    // it, as the report's derivation does, never negative and never left
    // out.
    let hour = |h: i64| chrono::DateTime::from_timestamp_millis(t0 + h * 3_600_000).unwrap();
    let dbr = &db;
    let used_by =
        move |meter: &'static str| async move {
            dbr.client()
            .await
            .query(
                "SELECT bucket, used FROM consumption_hourly WHERE device_id = $1 ORDER BY bucket",
                &[&meter],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, chrono::DateTime<chrono::Utc>>(0), r.get::<_, f64>(1)))
            .collect::<Vec<_>>()
        };
    assert_eq!(used_by("e-1").await, vec![(hour(0), 4.0), (hour(1), 4.0)]);
    assert_eq!(used_by("e-2").await, vec![(hour(0), 8.0), (hour(1), 8.0)]);
    publish_all(
        &c.mqtt.url,
        vec![
            (te.clone(), energy(t0 + 3 * 3_600_000, 112.0)),
            (te.clone(), energy(t0 + 4 * 3_600_000, 1.0)),
            // The second meter, hours later: a second dirty range, with
            // another meter than the first one's.
            (te2.clone(), energy(t0 + 6 * 3_600_000, 600.0)),
            (te2.clone(), energy(t0 + 7 * 3_600_000, 610.0)),
        ],
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            db.count("SELECT count(*) FROM readings").await == 36
        })
        .await
    );
    estatemon_ingest::maintenance::round(&mut client, &c.storage, mode, 7)
        .await
        .unwrap();
    assert_eq!(
        used_by("e-1").await,
        vec![
            (hour(0), 4.0),
            (hour(1), 4.0),
            (hour(2), 4.0),
            (hour(3), 1.0)
        ]
    );
    // An outage from 02:45 to 06:00: its 78 kWh are spread over its hours
    // (marked estimated), so the hours add up to the registers: 610 − 500.
    let e2 = used_by("e-2").await;
    assert_eq!(
        e2,
        vec![
            (hour(0), 8.0),
            (hour(1), 8.0),
            (hour(2), 12.0),
            (hour(3), 24.0),
            (hour(4), 24.0),
            (hour(5), 24.0),
            (hour(6), 10.0)
        ]
    );
    assert_eq!(e2.iter().map(|(_, u)| u).sum::<f64>(), 610.0 - 500.0);
    assert_eq!(
        db.count("SELECT count(*) FROM consumption_hourly WHERE device_id = 'e-2' AND estimated")
            .await,
        4,
        "hours 2 to 5 hold estimated use"
    );

    if mode == estatemon_domain::schema::StorageMode::Plain {
        let partitions = db
            .count("SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'readings'")
            .await;
        assert!(
            partitions >= 2,
            "a week-old chunk and the current ones: {partitions}"
        );
    } else {
        println!("TimescaleDB mode: partitions are hypertable chunks, not checked here");
    }
    ingestor.shutdown().await;
}

/// Acknowledgements leave through the MQTT event loop; a pipeline that
/// blocked that loop while acks queued up once deadlocked under load. A tiny
/// receive maximum and a single writer make the queues small enough to hit
/// it quickly. (A private broker: the system Mosquitto's default queue of
/// 1000 messages per client would drop the backlog this test builds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_windows_and_one_writer_do_not_stall() {
    let broker = PrivateMosquitto::start();
    let db = TestDb::new(&admin_url());
    let mut c = config(&db, &broker.url());
    c.mqtt.receive_maximum = 10;
    c.ingest.writers = 1;
    c.ingest.batch_max_readings = 7;
    // 1 MiB of buffered payload = 1024 small messages: the pause path runs.
    c.ingest.max_buffered_mb = 1;
    let ingestor = Ingestor::start(c.clone()).await.unwrap();
    assert!(ingestor.subscribed(Duration::from_secs(10)).await);
    let t = base_ms();
    let n = 3000;
    publish_all(
        &c.mqtt.url,
        (0..n)
            .map(|i| {
                (
                    topic(&c, "telemetry", "hv", &format!("m-{}", i % 7)),
                    energy(t + i, i as f64),
                )
            })
            .collect(),
    )
    .await;
    let done = eventually(Duration::from_secs(60), || async {
        db.count("SELECT count(*) FROM readings").await == n
    })
    .await;
    if !done {
        let m = http_get(&ingestor.http_addr.to_string(), "/metrics").await;
        let interesting: Vec<&str> = m
            .lines()
            .filter(|l| {
                !l.starts_with('#')
                    && (l.contains("inflight")
                        || l.contains("buffered")
                        || l.contains("messages_total")
                        || l.contains("stale")
                        || l.contains("connected")
                        || l.contains("stored_total"))
            })
            .collect();
        panic!(
            "stored {} of {n}\n{}",
            db.count("SELECT count(*) FROM readings").await,
            interesting.join("\n")
        );
    }
    ingestor.shutdown().await;
}

/// A backlog (here: messages queued at the broker while the ingestor was
/// away) is stored in full batches. Each message's linger deadline has long
/// passed when it is taken; flushing on it once committed one message at a
/// time and an ingestor that fell behind never caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_stored_in_full_batches() {
    let broker = PrivateMosquitto::start();
    let db = TestDb::new(&admin_url());
    let mut c = config(&db, &broker.url());
    c.ingest.batch_max_readings = 500;
    // A short linger and one writer: messages wait longer than the linger
    // while the writer commits, as they do under any real backlog.
    c.ingest.batch_linger_ms = 1;
    c.ingest.writers = 1;
    let first = Ingestor::start(c.clone()).await.unwrap();
    assert!(first.subscribed(Duration::from_secs(10)).await);
    first.shutdown().await;
    let t = base_ms();
    let n = 6000;
    publish_all(
        &c.mqtt.url,
        (0..n)
            .map(|i| {
                (
                    topic(&c, "telemetry", "hv", &format!("m-{}", i % 20)),
                    energy(t + i, i as f64),
                )
            })
            .collect(),
    )
    .await;
    // Let the backlog age past the linger before the ingestor returns.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ingestor = Ingestor::start(c.clone()).await.unwrap();
    assert!(
        eventually(Duration::from_secs(60), || async {
            db.count("SELECT count(*) FROM readings").await == n
        })
        .await,
        "stored {} of {n}",
        db.count("SELECT count(*) FROM readings").await
    );
    let m = http_get(&ingestor.http_addr.to_string(), "/metrics").await;
    let batches = metric(&m, "estatemon_ingest_batch_readings_count");
    println!("{n} queued messages stored in {batches} batches");
    assert!(
        batches <= (n / 50) as f64,
        "{batches} batches for {n} readings"
    );
    ingestor.shutdown().await;
}

/// A row every estatemon rule accepts but the database refuses (here a
/// constraint an operator added) must not stall the stream: it becomes a
/// dead letter and the rest of its batch is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_database_refuses_is_dead_lettered_and_its_batch_stored() {
    let db = TestDb::new(&admin_url());
    let (c, ingestor) = start(&db).await;
    db.client()
        .await
        .batch_execute(
            "ALTER TABLE readings ADD CONSTRAINT plausible_power CHECK (metric <> 'power_kw' OR value > -1000)",
        )
        .await
        .unwrap();
    let t = base_ms();
    let tp = topic(&c, "telemetry", "hv", "m-poison");
    let mut messages: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (tp.clone(), energy(t + i * 1000, i as f64)))
        .collect();
    messages.insert(
        10,
        (
            tp.clone(),
            format!(r#"{{"ts":{t},"metrics":{{"power_kw":-5000}}}}"#).into_bytes(),
        ),
    );
    publish_all(&c.mqtt.url, messages).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            db.count("SELECT count(*) FROM readings").await == 20
                && db.count("SELECT count(*) FROM dead_letters").await == 1
        })
        .await,
        "readings {}, dead letters {}",
        db.count("SELECT count(*) FROM readings").await,
        db.count("SELECT count(*) FROM dead_letters").await
    );
    let row = db
        .client()
        .await
        .query_one("SELECT reason, detail FROM dead_letters", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "storage_rejected");
    let detail: String = row.get(1);
    assert!(
        detail.contains("m-poison") && detail.contains("-5000"),
        "{detail}"
    );
    let m = http_get(&ingestor.http_addr.to_string(), "/metrics").await;
    assert_eq!(
        metric(
            &m,
            "estatemon_ingest_dead_letters_total{reason=\"storage_rejected\"}"
        ),
        1.0
    );
    ingestor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_loaded_while_ingest_runs_is_taken_into_account() {
    let db = TestDb::new(&admin_url());
    let mut c = config(&db, &broker_url());
    c.storage.maintenance_interval_s = 1;
    let ingestor = Ingestor::start(c.clone()).await.unwrap();
    assert!(ingestor.subscribed(Duration::from_secs(10)).await);
    let t = base_ms();
    let tp = topic(&c, "telemetry", "hv", "late-meter");
    let unassigned = || async {
        let m = http_get(&ingestor.http_addr.to_string(), "/metrics").await;
        metric(&m, "estatemon_ingest_unassigned_readings_total")
    };
    publish_all(
        &c.mqtt.url,
        (0..3).map(|i| (tp.clone(), energy(t + i, 1.0))).collect(),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            unassigned().await == 3.0
        })
        .await
    );

    let registry = estatemon_domain::device::Registry::parse(
        r#"
[[site]]
id = "hv"
name = "Harbour View"
time_zone = "Asia/Hong_Kong"
latitude = 22.28
longitude = 114.16

[[device]]
id = "late-meter"
kind = "electricity_meter"
site = "hv"
area = "lobby"
purpose = "public_lighting"
"#,
        std::path::Path::new("late.toml"),
    )
    .unwrap();
    estatemon_domain::schema::registry::upsert(&mut db.client().await, &registry)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    publish_all(
        &c.mqtt.url,
        (3..6).map(|i| (tp.clone(), energy(t + i, 1.0))).collect(),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            db.count("SELECT count(*) FROM readings").await == 6
        })
        .await
    );
    assert_eq!(
        unassigned().await,
        3.0,
        "registered devices no longer count as unassigned"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM devices WHERE device_id = 'late-meter' AND assigned")
            .await,
        1
    );
    ingestor.shutdown().await;
}

/// Issue 20: a patrol app's `inspection` event over MQTT is stored as the
/// device's inspection (checked against its checklist, work items opened
/// for failed items); one naming an item not on the checklist, or an
/// unknown result, is a dead letter with its reason while its neighbours
/// are stored; a redelivered one is stored once. A technician's card at a
/// lift's maintenance switch is pseudonymised like any credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patrol_app_inspections_arrive_over_mqtt_with_their_work_items() {
    let db = TestDb::new(&admin_url());
    // Started first: it creates and migrates the database.
    let (c, ingestor) = start(&db).await;
    let registry = estatemon_domain::device::Registry::parse(
        r#"
[[site]]
id = "hv"
name = "Harbour View"
time_zone = "Asia/Hong_Kong"
latitude = 22.28
longitude = 114.16

[[device]]
id = "pump-1"
kind = "electricity_meter"
site = "hv"
area = "pump_room"
purpose = "pumps"
class = "B"
checklist = ["pump_state", "valves", "tank_level"]

[[device]]
id = "lift-9"
kind = "lift"
site = "hv"
area = "lift_shaft"
purpose = "lifts"
inspection_cycle = "15d"
"#,
        std::path::Path::new("patrol.toml"),
    )
    .unwrap();
    estatemon_domain::schema::registry::upsert(&mut db.client().await, &registry)
        .await
        .unwrap();
    let t = base_ms();
    let pump = topic(&c, "events", "hv", "pump-1");
    let good = format!(
        r#"{{"ts":{t},"type":"inspection","by":"王伟","results":{{"pump_state":"ok","valves":"fail","tank_level":"fail_large"}},"readings":{{"tank_level_pct":62.5}},"note":"valve 3 weeps"}}"#
    );
    publish_all(
        &c.mqtt.url,
        vec![
            (pump.clone(), good.clone().into_bytes()),
            // The same again (a redelivery): stored once.
            (pump.clone(), good.into_bytes()),
            (
                pump.clone(),
                format!(
                    r#"{{"ts":{},"type":"inspection","by":"李娜","results":{{"paint":"ok"}}}}"#,
                    t + 1
                )
                .into_bytes(),
            ),
            (
                pump.clone(),
                format!(
                    r#"{{"ts":{},"type":"inspection","by":"李娜","results":{{"valves":"maybe"}}}}"#,
                    t + 2
                )
                .into_bytes(),
            ),
            (
                pump.clone(),
                format!(r#"{{"ts":{},"type":"inspection","results":{{}}}}"#, t + 3).into_bytes(),
            ),
            // A typo'd device id: refused, and no device is made of it.
            (
                topic(&c, "events", "hv", "pmup-1"),
                format!(
                    r#"{{"ts":{},"type":"inspection","by":"李娜","results":{{"valves":"ok"}}}}"#,
                    t + 5
                )
                .into_bytes(),
            ),
            (
                topic(&c, "events", "hv", "lift-9"),
                format!(
                    r#"{{"ts":{},"type":"state","state":"maintenance","credential":"TECH-0042"}}"#,
                    t + 4
                )
                .into_bytes(),
            ),
        ],
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            db.count("SELECT count(*) FROM dead_letters").await == 4
                && db.count("SELECT count(*) FROM events").await == 1
        })
        .await,
        "dead letters {} events {}",
        db.count("SELECT count(*) FROM dead_letters").await,
        db.count("SELECT count(*) FROM events").await
    );
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT inspector, source, passed, readings->>'tank_level_pct', note FROM inspections
              WHERE device_id = 'pump-1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "王伟");
    assert_eq!(row.get::<_, String>(1), "mqtt");
    assert!(!row.get::<_, bool>(2));
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("62.5"));
    assert_eq!(
        row.get::<_, Option<String>>(4).as_deref(),
        Some("valve 3 weeps")
    );
    let items: Vec<(String, String, i64)> = client
        .query(
            "SELECT item, size, extract(epoch FROM due_at - opened_at)::bigint FROM work_items
              ORDER BY item",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(
        (items[0].0.as_str(), items[0].1.as_str()),
        ("tank_level", "large")
    );
    assert_eq!(items[0].2, 7 * 86_400, "not beyond a week");
    assert_eq!(
        (items[1].0.as_str(), items[1].1.as_str()),
        ("valves", "small")
    );
    assert!(
        items[1].2 > 0 && items[1].2 <= 86_400,
        "not left overnight: {}",
        items[1].2
    );
    // A refused inspection has no topic: the ledger refused it, not ingest.
    let letters = dead_letter_reasons(&client, "%").await;
    let has =
        |reason: &str, text: &str| letters.iter().any(|(r, d)| r == reason && d.contains(text));
    assert!(
        has("inspection_refused", "`paint` is not on pump-1's checklist"),
        "{letters:?}"
    );
    assert!(
        has(
            "invalid_value",
            "results.valves must be ok, fail or fail_large"
        ),
        "{letters:?}"
    );
    assert!(has("missing_field", "by is missing"), "{letters:?}");
    assert!(
        has("inspection_refused", "no device `pmup-1`"),
        "{letters:?}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM devices WHERE device_id = 'pmup-1'")
            .await,
        0
    );
    // Counted under their own reason, not as rows the database refused.
    let m = http_get(&ingestor.http_addr.to_string(), "/metrics").await;
    assert_eq!(
        metric(
            &m,
            r#"estatemon_ingest_dead_letters_total{reason="inspection_refused"}"#
        ),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"estatemon_ingest_dead_letters_total{reason="storage_rejected"}"#
        ),
        0.0
    );
    // The technician's card, pseudonymised, on the maintenance event.
    let credential: String = client
        .query_one(
            "SELECT credential FROM events WHERE device_id = 'lift-9'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !credential.is_empty() && !credential.contains("0042"),
        "{credential}"
    );
    ingestor.shutdown().await;
}
