//! estatemon as a Sparkplug B host application, against an edge node made
//! of Eclipse Tahu's own JavaScript client (`tests/sparkplug/edge.js`,
//! npm `sparkplug-client` 3.2.4 and `sparkplug-payload` 1.0.3, installed by
//! scripts/test.sh), through the real broker into the real database:
//! births define aliases that data resolve, units come from the birth's
//! `engUnit`, a historical value lands at its own time, a sequence gap
//! makes the host ask for a rebirth (and the node births again), every bad
//! frame is a dead letter with its reason, a device's death is stored at
//! its own timestamp, the node's death marks the node and its device
//! offline at once, and a clean stop leaves the primary host's retained
//! `STATE` offline, with the online STATE's timestamp.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use estatemon_ingest::Ingestor;

fn node_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sparkplug/edge.js")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tahu_edge_node_births_sends_gaps_rebirths_and_dies() {
    let db = TestDb::new(&admin_url());
    let c = config(&db, &broker_url());
    tahu_edge_node(&db, c, Deaths::AsSent).await;
}

/// The same edge node and the same host over the clustered transport:
/// the node connects to a NATS node's MQTT gateway (3.1.1), and ingest
/// (`source = "nats"`) keeps its Sparkplug session there, beside the
/// stream it reads other devices from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tahu_edge_node_through_a_nats_node() {
    let cluster = cluster(1);
    let db = TestDb::new(&admin_url());
    let c = nats_config(&db, &cluster);
    tahu_edge_node(&db, c, Deaths::StampedByServer).await;
}

/// The host's Sparkplug session outlives the NATS node it is on. With every
/// node in `mqtt.url`, the session moves to the next node when its own is
/// killed (SIGKILL) mid-stream. Tahu's edge node, on another node, keeps
/// sending (QoS 0, as Sparkplug has it): the sequence jumps over what was
/// sent while the host had no session, the host asks for a rebirth, and
/// what follows is stored; the retained STATE says online again, with the
/// time of the new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sparkplug_session_moves_to_another_nats_node_when_its_node_dies() {
    session_moves(Lost::NodeOnly).await;
}

/// The same move when the lost node led everything the session needs: the
/// cluster's metadata and the gateway's stores of sessions
/// (`$MQTT_sess`) and retained messages (`$MQTT_rmsgs`). The session
/// waits for NATS to elect new leaders, then resumes; the edge node's data
/// come through again within the bound below, and the gap is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sparkplug_session_moves_when_its_node_led_the_gateway_stores() {
    session_moves(Lost::NodeAndLeaders).await;
}

/// What the node killed under the session takes with it.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Lost {
    /// The node alone: every JetStream leader was moved off it first.
    NodeOnly,
    /// The node and the leaders of the metadata, `$MQTT_sess` and
    /// `$MQTT_rmsgs`, moved onto it first.
    NodeAndLeaders,
}

impl Lost {
    /// The edge node's data are stored again within this long of the
    /// kill. The node alone: seen 0.005–0.19 s. With its leaders: seen
    /// 6.0–10.2 s; NATS elects new leaders in 4–9 s, and meanwhile a
    /// node's gateway holds a CONNECT and closes it after about 5 s (or
    /// ingest gives up on it after its own 5 s) and the session tries the
    /// next node.
    fn resumed_within(self) -> chrono::Duration {
        match self {
            Lost::NodeOnly => chrono::Duration::seconds(3),
            Lost::NodeAndLeaders => chrono::Duration::seconds(20),
        }
    }
}

async fn session_moves(lost: Lost) {
    let mut cluster = cluster(3);
    let mut meta = None;
    for _ in 0..40 {
        meta = meta_leader(&cluster, 0).await;
        if meta.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let meta = meta.expect("the cluster has a meta leader");
    // The node to lose. With `NodeOnly`, one that does not lead the
    // cluster's metadata (only the system account can move that leader);
    // otherwise the one that does. The session starts there; the edge node
    // publishes to another.
    let victim = (0..3)
        .find(|&i| (cluster.nodes[i].name == meta) == (lost == Lost::NodeAndLeaders))
        .unwrap();
    let edge_node = (victim + 1) % 3;
    let db = TestDb::new(&admin_url());
    let mut c = nats_config(&db, &cluster);
    c.mqtt.url = [victim, edge_node, (victim + 2) % 3]
        .iter()
        .map(|&i| cluster.mqtt_url(i))
        .collect::<Vec<_>>()
        .join(",");
    c.mqtt.reconnect_max_backoff_s = 1;
    // A fresh cluster's gateway makes its stores at the first connection,
    // and may drop that client meanwhile: made before the host connects,
    // so that its session stays on the node to lose.
    gateway_stores_made(&cluster, victim).await;
    let (group, ingestor) = sparkplug_host(&mut c, Duration::from_secs(40)).await;

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sparkplug/steady.js");
    let edge = tokio::process::Command::new("node")
        .arg(script)
        .args([&cluster.mqtt_url(edge_node), &group, "gw1", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let meter = format!("{group}/gw1/meter1");
    let stored = |since: chrono::DateTime<chrono::Utc>| {
        let (db, meter) = (&db, meter.clone());
        async move {
            db.count(&format!(
                "SELECT count(*) FROM readings WHERE device_id = '{meter}' \
                 AND metric = 'energy_kwh' AND ts > '{}'",
                since.to_rfc3339()
            ))
            .await
        }
    };
    let start = chrono::Utc::now() - chrono::Duration::minutes(1);
    assert!(
        eventually(Duration::from_secs(20), || async {
            stored(start).await >= 10
        })
        .await,
        "the edge node's data reach the host through the first node's session"
    );

    match lost {
        // The loss of the node the session is on, not of a JetStream
        // leader: the gateway's stores are led from the other nodes first.
        Lost::NodeOnly => assert!(
            leaders_moved_off(&cluster, victim).await,
            "no JetStream leader left on the node to lose"
        ),
        Lost::NodeAndLeaders => {
            for stream in ["$MQTT_sess", "$MQTT_rmsgs"] {
                assert!(
                    leader_moved_to(&cluster, victim, stream).await,
                    "{stream} is led from the node to lose"
                );
            }
            assert_eq!(
                meta_leader(&cluster, edge_node).await.as_deref(),
                Some(cluster.nodes[victim].name.as_str()),
                "the node to lose still leads the metadata"
            );
        }
    }
    let on = |i: usize| session_on(&cluster, i, &c.mqtt.client_id);
    assert!(
        eventually(Duration::from_secs(5), || on(victim)).await,
        "{lost:?}: the host's session is on the node to lose ({})",
        cluster.nodes[victim].name
    );
    cluster.kill(victim);
    let killed_at = chrono::Utc::now();
    let summary = edge_summary(edge.wait_with_output()).await;
    // What the edge node sent last, and most of what it sent after the
    // move (it sends ten a second for the rest of its 30 s), are stored.
    let last_kwh = summary["last_wh"].as_f64().unwrap() / 1000.0;
    let client = db.client().await;
    let has_last = eventually(Duration::from_secs(20), || async {
        client
            .query_one(
                "SELECT count(*) FROM readings WHERE device_id = $1 \
                 AND metric = 'energy_kwh' AND abs(value - $2) < 1e-9",
                &[&meter, &last_kwh],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            >= 1
    })
    .await;
    assert!(
        has_last,
        "{lost:?}: the last reading ({last_kwh} kWh) is stored"
    );
    // The first reading stored of those sent after the kill: how long the
    // host had no session (its readings carry the edge node's own time).
    let first_after: chrono::DateTime<chrono::Utc> = client
        .query_one(
            "SELECT min(ts) FROM readings WHERE device_id = $1 \
             AND metric = 'energy_kwh' AND ts > $2",
            &[&meter, &killed_at],
        )
        .await
        .unwrap()
        .get(0);
    let gap = first_after - killed_at;
    eprintln!("{lost:?}: the edge node's data stored again {gap} after the kill");
    assert!(
        gap < lost.resumed_within(),
        "{lost:?}: data stored again only {gap} after the kill"
    );
    // The edge node ran about 28 s past the kill, ten readings a second.
    let after = stored(killed_at + lost.resumed_within()).await;
    assert!(
        after >= 30,
        "{lost:?}: {after} readings stored after the move"
    );
    // What was sent while the session moved is lost to the host (QoS 0),
    // and the jump in the sequence brings a rebirth. (A move quicker than
    // the node's 100 ms between messages loses nothing.)
    let sent = summary["data"].as_i64().unwrap() + summary["births"].as_i64().unwrap();
    let got = stored(start).await;
    if got < sent {
        assert!(
            summary["rebirths_asked"].as_u64().unwrap() >= 1,
            "{} of {sent} readings lost in the move, and no rebirth asked: {summary}",
            sent - got
        );
    }

    let metrics = http_get(&ingestor.http_addr.to_string(), "/metrics").await;
    assert!(metric(&metrics, "estatemon_ingest_mqtt_reconnects_total") >= 1.0);
    assert_eq!(metric(&metrics, "estatemon_ingest_mqtt_connected"), 1.0);

    // Online again, from the new connection, on the surviving nodes.
    let state_topic = format!(
        "spBv1.0/STATE/{}",
        c.ingest.sparkplug.primary_host_id.as_deref().unwrap()
    );
    let retained = retained_message(&cluster.mqtt_url((victim + 2) % 3), &state_topic).await;
    let online: serde_json::Value =
        serde_json::from_str(retained.as_deref().expect("a retained STATE")).unwrap();
    assert_eq!(online["online"], true, "{online}");
    assert!(
        online["timestamp"].as_i64().unwrap() >= killed_at.timestamp_millis() - 1_000,
        "{lost:?}: the STATE of the new connection: {online}"
    );
    ingestor.shutdown().await;
}

/// Turns `c` into a Sparkplug host (site harbour-view, a 500 ms reorder
/// window, its own primary host id), starts it and waits up to `within` for
/// its subscriptions; returns a fresh group id for the edge node.
async fn sparkplug_host(
    c: &mut estatemon_domain::config::Config,
    within: Duration,
) -> (String, Ingestor) {
    assert!(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/sparkplug/node_modules/sparkplug-client")
            .exists(),
        "Eclipse Tahu's client is missing: run scripts/test.sh (it runs npm ci in tests/sparkplug)"
    );
    c.ingest.sparkplug.enabled = true;
    c.ingest.sparkplug.site = Some("harbour-view".into());
    c.ingest.sparkplug.reorder_wait_ms = 500;
    c.ingest.sparkplug.primary_host_id = Some(unique("estatemon"));
    c.validate(None, None).expect("a valid configuration");
    let ingestor = Ingestor::start(c.clone()).await.expect("ingestor starts");
    assert!(ingestor.subscribed(within).await);
    (unique("plant"), ingestor)
}

/// The JSON line an edge node script prints last, once it exits 0 (within
/// a minute).
async fn edge_summary(
    out: impl std::future::Future<Output = std::io::Result<std::process::Output>>,
) -> serde_json::Value {
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("the edge node finishes")
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(said.trim().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {said}"))
}

/// The name of the node that leads the cluster's metadata, as node `from`
/// sees it.
async fn meta_leader(
    cluster: &estatemon_simulators::nats_cluster::NatsCluster,
    from: usize,
) -> Option<String> {
    let jsz = http_get(
        &format!("127.0.0.1:{}", cluster.nodes[from].http_port),
        "/jsz",
    )
    .await;
    let body = jsz.split_once("\r\n\r\n").map_or(jsz.as_str(), |(_, b)| b);
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["meta_cluster"]["leader"].as_str().map(str::to_owned))
}

/// Steps each of the MQTT gateway's `$MQTT_` streams led from node
/// `victim` down until none is, and checks the meta leader is elsewhere.
async fn leaders_moved_off(
    cluster: &estatemon_simulators::nats_cluster::NatsCluster,
    victim: usize,
) -> bool {
    use futures_util::StreamExt;
    let other = (victim + 1) % cluster.nodes.len();
    let nc = async_nats::connect(cluster.client_url(other))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(nc.clone());
    let name = cluster.nodes[victim].name.clone();
    for _ in 0..20 {
        let mut on_victim = 0;
        let names: Vec<String> = js
            .stream_names()
            .filter_map(|n| async move { n.ok() })
            .collect()
            .await;
        for stream in names.iter().filter(|n| n.starts_with("$MQTT_")) {
            if stream_leader(&js, stream).await.as_deref() == Some(name.as_str()) {
                on_victim += 1;
                let _ = tokio::time::timeout(
                    Duration::from_secs(3),
                    nc.request(
                        format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
                        "".into(),
                    ),
                )
                .await;
            }
        }
        let meta = meta_leader(cluster, other).await;
        if on_victim == 0 && meta.is_some_and(|m| m != name) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// Whether node `i` has the MQTT client `client_id` connected (its
/// monitoring endpoint's `/connz`).
async fn session_on(
    cluster: &estatemon_simulators::nats_cluster::NatsCluster,
    i: usize,
    client_id: &str,
) -> bool {
    let connz = http_get(
        &format!("127.0.0.1:{}", cluster.nodes[i].http_port),
        "/connz?limit=4096",
    )
    .await;
    let body = connz
        .split_once("\r\n\r\n")
        .map_or(connz.as_str(), |(_, b)| b);
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["connections"].as_array().cloned())
        .is_some_and(|cs| cs.iter().any(|c| c["mqtt_client"] == client_id))
}

/// The name of the node leading `stream`, if it exists and has a leader.
async fn stream_leader(js: &async_nats::jetstream::Context, stream: &str) -> Option<String> {
    let mut s = js.get_stream(stream).await.ok()?;
    s.info()
        .await
        .ok()
        .and_then(|i| i.cluster.as_ref().and_then(|c| c.leader.clone()))
}

/// Asks `stream`'s leader to step down in favour of node `to` until `to`
/// leads it.
async fn leader_moved_to(
    cluster: &estatemon_simulators::nats_cluster::NatsCluster,
    to: usize,
    stream: &str,
) -> bool {
    let other = (to + 1) % cluster.nodes.len();
    let nc = async_nats::connect(cluster.client_url(other))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(nc.clone());
    let name = cluster.nodes[to].name.clone();
    let request = serde_json::json!({"placement": {"preferred": name}}).to_string();
    for _ in 0..20 {
        let leader = stream_leader(&js, stream).await;
        if leader.as_deref() == Some(name.as_str()) {
            return true;
        }
        if leader.is_some() {
            let _ = tokio::time::timeout(
                Duration::from_secs(3),
                nc.request(
                    format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
                    request.clone().into(),
                ),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// What a death's timestamp says when it reaches the host.
#[derive(PartialEq)]
enum Deaths {
    /// Mosquitto passes payloads as they are.
    AsSent,
    /// NATS (2.11 and later) is a "Sparkplug Aware" server: it sets the
    /// timestamp of NDEATH and DDEATH to when it delivers them (Sparkplug
    /// 3.0 lets such a server replace the NDEATH's; nats-server 2.15 was
    /// seen doing it to DDEATH too).
    StampedByServer,
}

async fn tahu_edge_node(db: &TestDb, mut c: estatemon_domain::config::Config, deaths: Deaths) {
    let (group, ingestor) = sparkplug_host(&mut c, Duration::from_secs(10)).await;

    let out = tokio::process::Command::new("node")
        .arg(node_script())
        .args([&c.mqtt.url, &group, "gw1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let summary = edge_summary(out).await;
    // The gap made the host ask; the node answered with its births.
    assert!(
        summary["rebirths_asked"].as_u64().unwrap() >= 1,
        "{summary}"
    );
    assert!(summary["births"].as_u64().unwrap() >= 2, "{summary}");

    let node = format!("{group}/gw1");
    let meter = format!("{node}/meter1");
    let client = db.client().await;
    let dead = || async {
        db.count("SELECT count(*) FROM dead_letters WHERE topic LIKE 'spBv1.0/%'")
            .await
    };
    let settled = eventually(Duration::from_secs(20), || async {
        dead().await >= 4
            && db
                .count(&format!(
                    "SELECT count(*) FROM devices WHERE device_id = '{node}' \
                     AND offline_since IS NOT NULL"
                ))
                .await
                == 1
    })
    .await;
    let letters = dead_letter_reasons(&client, "spBv1.0/%").await;
    assert!(settled, "{letters:?}");

    // Energy: the birth's 1,000 Wh, five DDATA by alias (1,100 … 1,500 Wh),
    // the one after the gap (1,600 Wh) and the rebirth's 1,000 Wh again
    // (same value, its own timestamp): in kWh.
    let energy: Vec<f64> = client
        .query(
            "SELECT value FROM readings WHERE device_id = $1 AND metric = 'energy_kwh' ORDER BY ts",
            &[&meter],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for v in [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6] {
        assert!(
            energy.iter().any(|e| (e - v).abs() < 1e-9),
            "{v} kWh missing from {energy:?}"
        );
    }
    // Power by alias, and the historical value at its own hour-old time.
    let power: Vec<(chrono::DateTime<chrono::Utc>, f64)> = client
        .query(
            "SELECT ts, value FROM readings WHERE device_id = $1 AND metric = 'power_kw' ORDER BY ts",
            &[&meter],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(power.len() >= 7, "{power:?}");
    let (old_ts, old) = power[0];
    assert!((old - 0.75).abs() < 1e-6, "{power:?}");
    let age = chrono::Utc::now() - old_ts;
    assert!(
        age > chrono::Duration::minutes(55) && age < chrono::Duration::minutes(70),
        "the historical value is stored at its own time: {old_ts}"
    );
    // The node's own metric.
    assert!(
        db.count(&format!(
            "SELECT count(*) FROM readings WHERE device_id = '{node}' AND metric = 'temperature_c'"
        ))
        .await
            >= 1
    );

    // Each bad frame, with its reason.
    let has =
        |reason: &str, text: &str| letters.iter().any(|(r, d)| r == reason && d.contains(text));
    assert!(
        has("invalid_protobuf", "not a Sparkplug B payload"),
        "{letters:?}"
    );
    assert!(has("sparkplug_out_of_state", "alias(es) 99"), "{letters:?}");
    assert!(
        has("sparkplug_out_of_state", "before its NBIRTH"),
        "{letters:?}"
    );
    assert!(has("unknown_metric", "Fan speed"), "{letters:?}");

    // NDEATH with the birth's bdSeq: the node and its device offline now.
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM devices WHERE device_id IN ('{node}', '{meter}') \
             AND offline_since IS NOT NULL AND site_id = 'harbour-view'"
        ))
        .await,
        2,
        "both offline, both on the configured site"
    );
    // The DDEATH reached the host most of a second after its timestamp:
    // the device is offline since that timestamp, to the millisecond (the
    // node's death after it does not move it).
    let ddeath_ms = summary["ddeath_ms"]
        .as_i64()
        .expect("the DDEATH's timestamp");
    let offline_since_ms = |id: String| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT round(extract(epoch FROM offline_since) * 1000)::bigint \
                       FROM devices WHERE device_id = $1",
                    &[&id],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let offline_ms = offline_since_ms(meter.clone()).await;
    if deaths == Deaths::AsSent {
        assert_eq!(offline_ms, ddeath_ms, "offline since the DDEATH's own time");
    } else {
        // The server's stamp: when it passed the DDEATH on, most of a
        // second after the node wrote it, and before the node's death.
        let node_ms = offline_since_ms(node.clone()).await;
        assert!(
            offline_ms > ddeath_ms + 300 && offline_ms < node_ms,
            "offline since the server's stamp: {offline_ms} (written {ddeath_ms}, node {node_ms})"
        );
    }
    // Dated by the payload either way, not by our receipt.
    assert_eq!(
        ingestor.metrics().sparkplug_deaths_at_receipt.get(),
        0,
        "no death dated at receipt"
    );
    let metrics = http_get(&ingestor.http_addr.to_string(), "/metrics").await;
    assert!(metric(&metrics, "estatemon_ingest_sparkplug_rebirths_total") >= 1.0);

    // The primary host's STATE is retained: online while we run.
    let state_topic = format!(
        "spBv1.0/STATE/{}",
        c.ingest.sparkplug.primary_host_id.as_deref().unwrap()
    );
    let state = |retained: Option<String>| -> serde_json::Value {
        serde_json::from_str(retained.as_deref().expect("a retained STATE"))
            .unwrap_or_else(|e| panic!("{e}: {retained:?}"))
    };
    let online = state(retained_message(&c.mqtt.url, &state_topic).await);
    assert_eq!(online["online"], true, "{online}");
    assert!(online["timestamp"].as_i64().is_some(), "{online}");

    // A clean stop discards the Will: the host says offline itself, with
    // the timestamp of its birth (and Will), before it disconnects.
    ingestor.shutdown().await;
    let offline = state(retained_message(&c.mqtt.url, &state_topic).await);
    assert_eq!(offline["online"], false, "{offline}");
    assert_eq!(
        offline["timestamp"], online["timestamp"],
        "{offline} after {online}"
    );
}

/// The retained message on a topic, if any (waits a second for it).
async fn retained_message(url: &str, topic: &str) -> Option<String> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let u = url::Url::parse(url).unwrap();
    let opts = MqttOptions::new(
        unique("look"),
        u.host_str().unwrap(),
        u.port().unwrap_or(1883),
    );
    let (client, mut events) = AsyncClient::new(opts, 10);
    client.subscribe(topic, QoS::AtMostOnce).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match tokio::time::timeout_at(deadline, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                return Some(String::from_utf8_lossy(&p.payload).into_owned())
            }
            Ok(Ok(_)) => {}
            _ => return None,
        }
    }
}
