//! Test harness: a database per test, unique topics per test, and private
//! PostgreSQL / Mosquitto instances for the tests that kill them.
//!
//! Every test creates its own database (and drops it afterwards) and its own
//! topic prefix, so tests run in parallel against the shared services
//! without seeing each other's data.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use estatemon_domain::config::Config;
use estatemon_simulators::pg_cluster::PostgresNode;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn admin_url() -> String {
    std::env::var("ESTATEMON_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn broker_url() -> String {
    std::env::var("ESTATEMON_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
}

pub fn with_dbname(url: &str, name: &str) -> String {
    let mut u = url::Url::parse(url).expect("test database URL");
    u.set_path(&format!("/{name}"));
    u.to_string()
}

/// A database that exists for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin: String,
}

impl TestDb {
    pub fn new(admin: &str) -> TestDb {
        let name = unique("estatemon_t");
        TestDb {
            url: with_dbname(admin, &name),
            name,
            admin: admin.to_owned(),
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        estatemon_domain::schema::connect_url(&self.url, Duration::from_secs(5))
            .await
            .expect("connect to test database")
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs inside a test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(c) =
                    estatemon_domain::schema::connect_url(&admin, Duration::from_secs(5)).await
                {
                    let _ = c
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A configuration with this test's database, topics and client ids.
pub fn config(db: &TestDb, mqtt_url: &str) -> Config {
    config_at(&db.url, mqtt_url)
}

/// [`config`] for a database URL the test manages itself (several hosts,
/// a private server).
pub fn config_at(database_url: &str, mqtt_url: &str) -> Config {
    let mut c = Config::default();
    c.database.url = database_url.to_owned();
    c.mqtt.url = mqtt_url.to_owned();
    let prefix = unique("t");
    c.mqtt.topics.telemetry = format!("{prefix}/{{site}}/{{device_id}}/telemetry");
    c.mqtt.topics.events = format!("{prefix}/{{site}}/{{device_id}}/events");
    c.mqtt.topics.senml = format!("{prefix}/{{site}}/{{device_id}}/senml");
    c.mqtt.client_id = format!("{prefix}-ingest");
    c.ingest.listen = "127.0.0.1:0".into();
    c.ingest.batch_linger_ms = 20;
    c.ingest.pseudonym_key = Some("test-secret".into());
    c.storage.maintenance_interval_s = 3600;
    c
}

pub fn topic(c: &Config, channel: &str, site: &str, device: &str) -> String {
    let template = match channel {
        "telemetry" => &c.mqtt.topics.telemetry,
        "events" => &c.mqtt.topics.events,
        "senml" => &c.mqtt.topics.senml,
        other => panic!("no channel {other}"),
    };
    template
        .replace("{site}", site)
        .replace("{device_id}", device)
}

/// Publishes at QoS 1 and returns once the broker acknowledged every message.
pub async fn publish_all(mqtt_url: &str, messages: Vec<(String, Vec<u8>)>) {
    let url = url::Url::parse(mqtt_url).unwrap();
    let mut opts = MqttOptions::new(
        unique("pub"),
        url.host_str().unwrap(),
        url.port().unwrap_or(1883),
    );
    opts.set_inflight(200);
    opts.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let total = messages.len();
    let sender = tokio::spawn(async move {
        for (topic, payload) in messages {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked < total {
        assert!(
            Instant::now() < deadline,
            "broker acknowledged {acked} of {total}"
        );
        match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher connection failed: {e}"),
            Err(_) => {}
        }
    }
    let client = sender.await.unwrap();
    let _ = client.disconnect().await;
    for _ in 0..10 {
        match tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await {
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => break,
            _ => {}
        }
    }
}

/// Polls until `f` returns true or the timeout passes; returns the last value.
/// (reason, detail) of the dead letters whose topic is LIKE `topic`, in
/// the order they were stored.
pub async fn dead_letter_reasons(
    client: &tokio_postgres::Client,
    topic: &str,
) -> Vec<(String, String)> {
    client
        .query(
            "SELECT reason, detail FROM dead_letters WHERE topic LIKE $1 ORDER BY id",
            &[&topic],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether something accepts connections on `addr` within `timeout`.
pub async fn listening(addr: &str, timeout: Duration) -> bool {
    eventually(timeout, || async {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await
}

pub async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Value of a metric line such as `estatemon_ingest_readings_stored_total`.
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)
                .and_then(|r| r.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A port nothing listens on, for a server a test starts later.
///
/// Two races made servers fail with "address in use" when a port was found
/// by binding it and letting go: a port from `bind(0)` is in the kernel's
/// ephemeral range, where any outgoing connection may take it meanwhile;
/// and while the probing listener exists, a child process another test
/// forks at that moment holds a copy of it until it execs — the port stays
/// in LISTEN after we closed ours. So ports come from 20000–32767, below the
/// ephemeral range, each handed out once per process, and are probed with a
/// connection (refused: nobody listens), never with a listener of ours.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_768;
    let mut given = GIVEN.lock().unwrap();
    let given = given.get_or_insert_with(HashSet::new);
    // Start where the process id points, so test binaries run one after
    // another try different ports first.
    let mut next = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let port = (LOW + next) as u16;
        next = (next + 1) % SPAN;
        if given.contains(&port) {
            continue;
        }
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let refused = matches!(
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        );
        if refused {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

fn temp_dir(prefix: &str) -> PathBuf {
    let d = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A private PostgreSQL server that a test may stop, crash or promote
/// (`estatemon_simulators::pg_cluster`, with fsync off), panicking on
/// failure as a test should.
pub struct PrivatePostgres(PostgresNode);

impl std::ops::Deref for PrivatePostgres {
    type Target = PostgresNode;
    fn deref(&self) -> &PostgresNode {
        &self.0
    }
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let dir = temp_dir("estatemon-pg-");
        PrivatePostgres(
            PostgresNode::primary(&dir, free_port(), &[("fsync", "off")])
                .expect("a private PostgreSQL"),
        )
    }

    /// A streaming-replication standby of `primary` (pg_basebackup -R),
    /// started: hot standby, read-only until promoted.
    pub fn standby_of(primary: &PrivatePostgres) -> PrivatePostgres {
        let dir = temp_dir("estatemon-pg-standby-");
        PrivatePostgres(
            primary
                .0
                .standby(&dir, free_port())
                .expect("a streaming standby"),
        )
    }

    /// Stops at once, as a crashed primary would (no shutdown checkpoint).
    pub fn crash(&self) {
        self.0.crash().expect("pg_ctl stop -m immediate");
    }

    pub fn ctl(&self, action: &str) {
        self.0.ctl(action).expect("pg_ctl");
    }
}

/// A private Mosquitto that a test may stop and restart, with persistence
/// and an unbounded queue (as in deploy/mosquitto/mosquitto.conf).
pub struct PrivateMosquitto {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateMosquitto {
    pub fn start() -> PrivateMosquitto {
        let dir = temp_dir("estatemon-mqtt-");
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nmax_queued_messages 0\nautosave_interval 1\n\
                 user root\n",
                dir.display()
            ),
        )
        .unwrap();
        let mut m = PrivateMosquitto {
            port,
            dir,
            child: None,
        };
        m.resume();
        m
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops the broker the way an operator's restart does (SIGTERM: it
    /// saves its persistence file first).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    pub fn resume(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto on PATH");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateMosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Environment for running `estatemon ingest` as a child process.
pub fn ingest_env(c: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("ESTATEMON_DATABASE_URL", c.database.url.clone()),
        ("ESTATEMON_MQTT_URL", c.mqtt.url.clone()),
        ("ESTATEMON_MQTT_CLIENT_ID", c.mqtt.client_id.clone()),
        (
            "ESTATEMON_MQTT__TOPICS__TELEMETRY",
            c.mqtt.topics.telemetry.clone(),
        ),
        (
            "ESTATEMON_MQTT__TOPICS__EVENTS",
            c.mqtt.topics.events.clone(),
        ),
        ("ESTATEMON_MQTT__TOPICS__SENML", c.mqtt.topics.senml.clone()),
        ("ESTATEMON_INGEST_LISTEN", "127.0.0.1:0".into()),
        ("ESTATEMON_INGEST_BATCH_LINGER_MS", "20".into()),
        ("ESTATEMON_LOG_FILTER", "warn".into()),
    ]
}

pub fn estatemon_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_estatemon"))
}

/// A telemetry payload with one energy reading at `ms`.
pub fn energy(ms: i64, value: f64) -> Vec<u8> {
    format!(r#"{{"ts":{ms},"metrics":{{"energy_kwh":{value}}}}}"#).into_bytes()
}

/// Milliseconds of a recent, fixed instant (within max_age, before now).
pub fn base_ms() -> i64 {
    chrono::Utc::now().timestamp_millis() / 1000 * 1000 - 3_600_000
}

/// The `estatemon` binary against `db`, with no other ESTATEMON_* settings
/// from the caller's environment.
pub fn estatemon(db: &TestDb) -> Command {
    let mut c = Command::new(estatemon_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("ESTATEMON_") {
            c.env_remove(k);
        }
    }
    c.env("ESTATEMON_DATABASE_URL", &db.url)
        .env("ESTATEMON_LOG_FILTER", "warn");
    c
}

/// Runs a command that must succeed; returns its stdout and stderr.
pub fn run(c: &mut Command) -> String {
    let out = c.output().expect("run estatemon");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{c:?} failed: {text}");
    text
}

/// The shipped site file's ledger (sites, devices, retrofits) followed by
/// `scenario` (a `[scenario]` table of the test's own), as a temporary file.
///
/// The ledger's inspection classes, cycles and checklists are left out: a
/// scenario without the patrol's inspections would otherwise see every
/// tracked device overdue (see [`site_file_tracked`]).
pub fn site_file(scenario: &str) -> PathBuf {
    site_file_with(scenario, false)
}

/// [`site_file`] with the ledger's inspection classes, cycles and
/// checklists kept.
pub fn site_file_tracked(scenario: &str) -> PathBuf {
    site_file_with(scenario, true)
}

fn site_file_with(scenario: &str, tracked: bool) -> PathBuf {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("simulators/sites/harbour-view.toml"),
    )
    .unwrap();
    let ledger = &shipped[..shipped.find("\n[scenario]\n").expect("scenario table") + 1];
    let ledger: String = ledger
        .lines()
        .filter(|l| {
            tracked
                || !["class = ", "inspection_cycle = ", "checklist = "]
                    .iter()
                    .any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let path = std::env::temp_dir().join(format!("{}.toml", unique("site")));
    std::fs::write(&path, format!("{ledger}{scenario}")).unwrap();
    path
}

/// What a local HTTP receiver got: (path, JSON body), in arrival order.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>;

/// Makes a [`receiver`] the configuration's only webhook (`hook`), with
/// the alert job's own listener on any port; returns what it receives.
pub async fn with_webhook(c: &mut Config) -> (Received, tokio::task::JoinHandle<()>) {
    let port = free_port();
    let got: Received = Default::default();
    let task = receiver(port, got.clone()).await;
    c.alerts.listen = "127.0.0.1:0".into();
    c.alerts.webhooks = vec![toml::from_str(&format!(
        "name = \"hook\"\nurl = \"http://127.0.0.1:{port}/hook\"\n"
    ))
    .unwrap()];
    (got, task)
}

/// A receiver on `port` recording every POSTed JSON body by path.
pub async fn receiver(port: u16, got: Received) -> tokio::task::JoinHandle<()> {
    use axum::extract::{Path, State};
    let app = axum::Router::new()
        .route(
            "/{*path}",
            axum::routing::post(
                |State(got): State<Received>, Path(path): Path<String>, body: String| async move {
                    let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
                    got.lock().unwrap().push((path, value));
                    "ok"
                },
            ),
        )
        .with_state(got);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| {
            let holders = Command::new("ss")
                .args(["-tanp"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let mine: Vec<&str> = holders
                .lines()
                .filter(|l| l.contains(&format!(":{port} ")))
                .collect();
            panic!("receiver on 127.0.0.1:{port}: {e}; sockets on it: {mine:#?}")
        });
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

/// A real Prometheus Alertmanager (Debian's prometheus-alertmanager).
pub struct Alertmanager {
    child: std::process::Child,
    dir: std::path::PathBuf,
    pub url: String,
}

impl Alertmanager {
    /// Routing every alert, one group per alert, at once, to `webhook`.
    pub async fn start(webhook: &str) -> Alertmanager {
        Self::with_config(&format!(
            "route:\n  receiver: test\n  group_by: ['...']\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 4h\n\
             receivers:\n  - name: test\n    webhook_configs:\n      - url: {webhook}\n        send_resolved: true\n"
        ))
        .await
    }

    /// With a configuration of the caller's.
    pub async fn with_config(text: &str) -> Alertmanager {
        let dir = std::env::temp_dir().join(unique("am"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("alertmanager.yml");
        std::fs::write(&config, text).unwrap();
        let port = free_port();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager (Debian package prometheus-alertmanager; .ci/run installs it)");
        let url = format!("http://127.0.0.1:{port}");
        let addr = format!("127.0.0.1:{port}");
        let ready = eventually(std::time::Duration::from_secs(20), || {
            let addr = addr.clone();
            async move {
                tokio::net::TcpStream::connect(&addr).await.is_ok()
                    && http_get(&addr, "/-/ready").await.contains("200 OK")
            }
        })
        .await;
        assert!(ready, "Alertmanager did not become ready on {addr}");
        Alertmanager { child, dir, url }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian's Chromium (`scripts/test.sh` installs it).
pub fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("headless Chromium is needed (Debian package `chromium`; .ci/run installs it)")
}

/// Debian's Chromium, headless, offline, with a profile of its own.
pub fn headless_chromium(chromium: &str, profile: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(chromium);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Pixels of a chart colour in a PNG screenshot.
pub fn count_colour(png_path: &std::path::Path, rgb: (u8, u8, u8)) -> usize {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    buf[..info.buffer_size()]
        .chunks(step)
        .filter(|p| {
            (p[0] as i32 - rgb.0 as i32).abs() <= 3
                && (p[1] as i32 - rgb.1 as i32).abs() <= 3
                && (p[2] as i32 - rgb.2 as i32).abs() <= 3
        })
        .count()
}

/// The venv scripts/test.sh fills: its python and nats-server.
pub fn venv_bin(name: &str) -> PathBuf {
    let python = std::env::var("ESTATEMON_TEST_PYTHON")
        .expect("ESTATEMON_TEST_PYTHON (run the tests through scripts/test.sh)");
    let bin = PathBuf::from(&python).parent().unwrap().join(name);
    assert!(
        bin.exists(),
        "{} missing: scripts/test.sh installs it (PyPI)",
        bin.display()
    );
    bin
}

/// A private NATS cluster of `nodes` nodes (nats-server from PyPI), each
/// with its own ports (client, routes, MQTT gateway) and store.
///
/// Started again (with new ports) when a node does not come up: ports are
/// picked free and bound a moment later, and a test running beside it may
/// take one in between. Each failure is printed with the node's log.
pub fn cluster(nodes: usize) -> estatemon_simulators::nats_cluster::NatsCluster {
    let mut failures = Vec::new();
    for _ in 0..3 {
        let dir = std::env::temp_dir().join(unique("estatemon-nats-"));
        match estatemon_simulators::nats_cluster::NatsCluster::start(
            &venv_bin("nats-server"),
            &dir,
            nodes,
        ) {
            Ok(c) => return c,
            Err(e) => {
                println!("NATS cluster not up, starting it again: {e}");
                failures.push(e.to_string());
            }
        }
    }
    panic!("NATS cluster: {failures:#?}")
}

/// Connects an MQTT client to node `i`'s gateway until one gets through
/// (Debian's `mosquitto_pub`, a QoS 0 message on `probe/x`, 10 tries a
/// second apart). The gateway makes its JetStream stores at its first
/// client and may drop that client meanwhile ("The connection was lost",
/// seen with the machine busy); once through, the stores exist.
pub async fn gateway_stores_made(
    cluster: &estatemon_simulators::nats_cluster::NatsCluster,
    i: usize,
) {
    let port = cluster.nodes[i].mqtt_port.to_string();
    for _ in 0..10 {
        let probe = tokio::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(["-V", "mqttv311", "-t", "probe/x", "-n"])
            .status()
            .await
            .expect("mosquitto_pub (Debian mosquitto-clients)");
        if probe.success() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("no MQTT client got through to node {i}'s gateway in 10 tries");
}

/// An ingestor reading the stream of a NATS cluster of its own (the
/// stream with as many replicas as nodes, up to 3), and whatever needs an
/// MQTT session (Sparkplug, discovery) over the first node's gateway.
pub fn nats_config(
    db: &TestDb,
    cluster: &estatemon_simulators::nats_cluster::NatsCluster,
) -> Config {
    let mut c = config(db, &cluster.mqtt_url(0));
    c.ingest.source = estatemon_domain::config::Source::Nats;
    c.nats.url = cluster.url();
    c.nats.replicas = cluster.nodes.len().min(3);
    c.nats.stream = unique("S").replace(['_'], "-");
    c.nats.consumer = unique("ingest").replace(['_'], "-");
    // A killed ingestor's messages go to the other one soon.
    c.nats.ack_wait_s = 5;
    c.ingest.db_retry_max_backoff_s = 1;
    c
}

/// Writes `c` as a configuration file for child processes.
pub fn config_file(c: &Config) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("estatemon-conf-")));
    std::fs::write(&path, toml::to_string(c).unwrap()).unwrap();
    path
}

/// The `estatemon` binary with `file` as its configuration and no other
/// ESTATEMON_* settings from the caller's environment.
pub fn estatemon_with(file: &PathBuf) -> std::process::Command {
    let mut cmd = std::process::Command::new(estatemon_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("ESTATEMON_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("ESTATEMON_CONFIG", file)
        .env("ESTATEMON_LOG_FILTER", "warn");
    cmd
}
