//! A PostgreSQL primary and a streaming standby (issue 32, the database
//! part): the API reads its panels from the standby (`database.read_url`);
//! ingest writes through a URL that names both hosts with
//! `target_session_attrs=read-write`; the primary crashes mid-ingest, the
//! standby is promoted, and ingest carries on into it by itself. With
//! synchronous replication nothing ingest acknowledged is lost: every
//! reading published is stored exactly once. The gap in commits is
//! measured and printed. The second test does the same under
//! pg_auto_failover, which detects the loss and promotes by itself.

mod common;

use std::time::{Duration, Instant};

use common::*;
use estatemon_ingest::Ingestor;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_standby_takes_the_writes_and_the_panels_read_a_standby() {
    let primary = PrivatePostgres::start();
    let standby = PrivatePostgres::standby_of(&primary);
    let admin = estatemon_domain::schema::connect_url(&primary.admin_url(), Duration::from_secs(5))
        .await
        .unwrap();
    // Synchronous: a commit returns once the standby has it.
    for sql in [
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
        "SELECT pg_reload_conf()",
    ] {
        admin.execute(sql, &[]).await.unwrap();
    }
    let name = unique("estatemon_failover");
    let both = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{name}?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let mut c = failover_config(&both);
    // Alerts go to a webhook (ingest queues them, analytics delivers).
    let (got, _hook) = with_webhook(&mut c).await;
    let ingestor = Ingestor::start(c.clone()).await.unwrap();
    assert!(ingestor.subscribed(Duration::from_secs(10)).await);
    let on = |port: u16| format!("postgres://postgres@127.0.0.1:{port}/{name}");
    let count = |url: String| async move {
        match estatemon_domain::schema::connect_url(&url, Duration::from_secs(2)).await {
            Ok(client) => client
                .query_one("SELECT count(*) FROM readings", &[])
                .await
                .map(|r| r.get::<_, i64>(0))
                .unwrap_or(-1),
            Err(_) => -1,
        }
    };

    // The API: writes (tokens, audit) to the primary, panels from the standby.
    let primary_client =
        estatemon_domain::schema::connect_url(&on(primary.port), Duration::from_secs(5))
            .await
            .unwrap();
    let token = estatemon_api::create_token(
        &primary_client,
        "panel",
        estatemon_api::auth::Role::Viewer,
        "t",
    )
    .await
    .unwrap();
    let mut api_config = c.clone();
    api_config.database.url = on(primary.port);
    api_config.database.read_url = Some(on(standby.port));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(estatemon_api::serve_on(listener, api_config, async {
        let _ = stopped.await;
    }));

    // The alert job, on the same two-host URL.
    let analytics = tokio::spawn(estatemon_analytics::alerts::job::run(c.clone()));

    // First half, on the primary.
    let t = base_ms();
    let n = 3000i64;
    let half: Vec<(String, Vec<u8>)> = (0..n / 2)
        .map(|i| {
            (
                topic(&c, "telemetry", "hv", &format!("m-{}", i % 20)),
                energy(t + i * 1000, i as f64),
            )
        })
        .collect();
    publish_all(&c.mqtt.url, half).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            count(on(primary.port)).await == n / 2
        })
        .await,
        "first half stored on the primary"
    );
    // The panel reads come from the standby: its only client backend on
    // this database is the API's.
    let r = reqwest::Client::new()
        .get(format!(
            "http://{api}/api/v1/series?device=m-1&metric=energy_kwh&from={}&to={}",
            t - 1000,
            t + n * 1000
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let standby_admin =
        estatemon_domain::schema::connect_url(&standby.admin_url(), Duration::from_secs(5))
            .await
            .unwrap();
    let readers: i64 = standby_admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(readers >= 1, "the API's panel read went to the standby");
    let _ = stop.send(());
    let _ = server.await;

    // The second half is published in a paced stream; the primary crashes
    // while ingest is committing it; a second later (a failover manager's
    // detection time) the standby is promoted, and ingest carries on into
    // whichever host takes writes.
    let publisher = tokio::spawn({
        let c = c.clone();
        async move {
            for chunk in (n / 2..n).collect::<Vec<i64>>().chunks(100) {
                let msgs: Vec<(String, Vec<u8>)> = chunk
                    .iter()
                    .map(|&i| {
                        (
                            topic(&c, "telemetry", "hv", &format!("m-{}", i % 20)),
                            energy(t + i * 1000, i as f64),
                        )
                    })
                    .collect();
                publish_all(&c.mqtt.url, msgs).await;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
    });
    assert!(
        eventually(Duration::from_secs(30), || async {
            count(on(primary.port)).await > n / 2 + 300
        })
        .await,
        "the stream is being committed"
    );
    primary.crash();
    let crashed = Instant::now();
    // What the standby has at the crash: with synchronous replication,
    // every commit the primary acknowledged.
    let at_crash = count(on(standby.port)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    standby.ctl("promote");
    println!("primary crashed with {at_crash} readings on the standby; standby promoted 1 s later");
    let mut first_commit = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stored = 0;
    while Instant::now() < deadline {
        stored = count(on(standby.port)).await;
        if stored > at_crash && first_commit.is_none() {
            first_commit = Some(crashed.elapsed());
        }
        if stored == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = stored == n;
    publisher.await.unwrap();
    assert!(
        done,
        "every reading stored on the promoted standby: {}",
        count(on(standby.port)).await
    );
    println!(
        "no commits for {:.1} s between the primary's crash and the first commit on the promoted standby",
        first_commit.unwrap().as_secs_f64()
    );
    // Exactly once: the readings are all there and none twice (the
    // primary key would refuse a second copy; the count says none is missing).
    let promoted = estatemon_domain::schema::connect_url(&on(standby.port), Duration::from_secs(5))
        .await
        .unwrap();
    let distinct: i64 = promoted
        .query_one(
            "SELECT count(DISTINCT (device_id, metric, ts)) FROM readings",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct, n);
    // The alert job keeps paging after the promotion: an entrapment
    // published now is opened by ingest on the new primary and delivered
    // by the analytics notifier, reconnected there by itself.
    let paged = entrapment_pages(&c, &got, "lift-after-failover").await;
    assert!(
        paged,
        "the entrapment paged after the promotion: {:?}",
        got.lock().unwrap()
    );
    analytics.abort();
    ingestor.shutdown().await;
}

/// pg_auto_failover (Debian's postgresql-15-auto-failover): a monitor and
/// two data nodes in private directories, run as the `postgres` user by
/// the script docker-compose.cluster.yml runs, `deploy/postgres/pg-node.sh`.
/// The nodes name each other by this machine's network address, not
/// loopback (where initdb trusts everyone), so every connection between
/// them, and estatemon's, authenticates with a password (scram-sha-256).
struct AutoFailover {
    dir: std::path::PathBuf,
    /// The address the nodes name each other and estatemon connects to.
    host: String,
    monitor_port: u16,
    ports: [u16; 2],
    children: Vec<std::process::Child>,
}

/// Passwords with the characters a password file and SQL must escape.
const AUTOCTL_NODE_PASSWORD: &str = "mon:it\\or pw";
const REPLICATION_PASSWORD: &str = "re'pl:ica";
const APP_PASSWORD: &str = "app pw'1";

impl AutoFailover {
    /// Runs `pg-node.sh role` for the node in `name` (its data directory,
    /// password file and log), with `env`; returns once it says it is
    /// ready (its settings made, PostgreSQL up).
    fn run_node(&mut self, role: &str, name: &str, port: u16, env: &[(&str, String)]) {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("pg_ctl").exists())
            .max()
            .unwrap();
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/postgres/pg-node.sh");
        let log_path = self.dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--", "env"])
            .arg(format!(
                "PATH={}:/usr/local/bin:/usr/bin:/bin",
                bin.display()
            ))
            .arg(format!("XDG_CONFIG_HOME={}/cfg", self.dir.display()))
            .arg(format!("XDG_DATA_HOME={}/data", self.dir.display()))
            .arg(format!("XDG_RUNTIME_DIR={}/run", self.dir.display()))
            .arg(format!("PGDATA={}", self.dir.join(name).display()))
            .arg(format!("PGPORT={port}"))
            .arg(format!("PG_NODE_HOSTNAME={}", self.host))
            .arg(format!("AUTOCTL_NODE_PASSWORD={AUTOCTL_NODE_PASSWORD}"));
        for (k, v) in env {
            c.arg(format!("{k}={v}"));
        }
        let child = c
            .arg("sh")
            .arg(&script)
            .arg(role)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("runuser and deploy/postgres/pg-node.sh");
        self.children.push(child);
        let ready = format!("({role}, {}:{port}): ready", self.host);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains(&ready) {
                return;
            }
            let exited = self.children.last_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "pg-node.sh {role} {name} did not become ready ({exited:?}): {text}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn start() -> AutoFailover {
        let dir = std::env::temp_dir().join(unique("estatemon-paf-"));
        for sub in ["", "cfg", "data", "run"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        let mut paf = AutoFailover {
            dir,
            host: lan_address(),
            monitor_port: free_port(),
            ports: [free_port(), free_port()],
            children: Vec::new(),
        };
        let port = paf.monitor_port;
        paf.run_node("monitor", "monitor", port, &[]);
        paf
    }

    fn add_node(&mut self, i: usize) {
        let name = ["a", "b"][i];
        let env = [
            ("PG_NODE_NAME", name.to_owned()),
            ("PG_MONITOR_HOST", self.host.clone()),
            ("PG_MONITOR_PORT", self.monitor_port.to_string()),
            ("REPLICATION_PASSWORD", REPLICATION_PASSWORD.to_owned()),
            ("ESTATEMON_DB_PASSWORD", APP_PASSWORD.to_owned()),
            (
                "PGPASSFILE",
                self.dir
                    .join(format!("{name}.pgpass"))
                    .display()
                    .to_string(),
            ),
        ];
        self.run_node("postgres", name, self.ports[i], &env);
    }

    /// estatemon's URL: both nodes, role `estatemon` with its password.
    fn app_url(&self) -> String {
        format!(
            "postgres://estatemon@{host}:{},{host}:{}/estatemon?target_session_attrs=read-write&password={}",
            self.ports[0],
            self.ports[1],
            APP_PASSWORD.replace('%', "%25").replace(' ', "%20").replace('\'', "%27"),
            host = self.host,
        )
    }

    /// (name, reported state, assigned state) of each data node.
    async fn states(&self) -> Vec<(String, String, String)> {
        let url = format!(
            "postgres://postgres@127.0.0.1:{}/pg_auto_failover",
            self.monitor_port
        );
        let Ok(c) = estatemon_domain::schema::connect_url(&url, Duration::from_secs(2)).await
        else {
            return Vec::new();
        };
        c.query(
            "SELECT nodename, reportedstate::text, goalstate::text FROM pgautofailover.node ORDER BY nodeid",
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
        .unwrap_or_default()
    }

    /// SIGKILL every process of a data node at once (its pg_autoctl, the
    /// services pg_autoctl supervises, PostgreSQL and its backends), as a
    /// machine that died would: killing pg_autoctl alone leaves its
    /// supervisor to restart PostgreSQL, a second primary.
    fn kill_node(&self, i: usize) {
        kill_tree(self.children[i + 1].id());
    }
}

/// This machine's first IPv4 address that is not loopback (`hostname -I`);
/// loopback when it has none, said on stderr (the nodes then trust each
/// other, as initdb does on loopback, and passwords go untested).
fn lan_address() -> String {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    match out.split_whitespace().find(|a| {
        a.parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| !ip.is_loopback())
    }) {
        Some(a) => a.to_owned(),
        None => {
            eprintln!("no network address besides loopback: pg_auto_failover's passwords are not exercised");
            "127.0.0.1".to_owned()
        }
    }
}

/// SIGKILL `root` and every process under it, all at once (so no
/// supervisor among them starts anything again).
fn kill_tree(root: u32) {
    let mut tree = vec![root];
    loop {
        let before = tree.len();
        for entry in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid …; comm may hold spaces.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid.is_some_and(|p| tree.contains(&p)) && !tree.contains(&pid) {
                tree.push(pid);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    let mut kill = std::process::Command::new("kill");
    kill.arg("-9");
    for pid in &tree {
        kill.arg(pid.to_string());
    }
    let _ = kill.stderr(std::process::Stdio::null()).status();
}

impl Drop for AutoFailover {
    fn drop(&mut self) {
        // Every process of every node at once: pg_autoctl's supervisor
        // would otherwise start PostgreSQL again over a removed directory.
        for c in &self.children {
            kill_tree(c.id());
        }
        let _ = std::process::Command::new("pkill")
            .args(["-9", "-f"])
            .arg(self.dir.display().to_string())
            .status();
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The issue's failover manager: pg_auto_failover promotes the standby
/// when the primary is killed mid-ingest; synchronous replication (its
/// default, `ANY 1`) keeps every acknowledged reading; the commit gap is
/// printed; the alert job keeps paging after the promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_auto_failover_promotes_the_standby_and_nothing_acknowledged_is_lost() {
    let mut paf = AutoFailover::start();
    // Faster than the defaults (a 20 s unhealthy timeout, 30 s for the old
    // primary to demote itself): the figures are the monitor's settings.
    let deadline = Instant::now() + Duration::from_secs(60);
    let monitor_admin = loop {
        let url = format!(
            "postgres://postgres@127.0.0.1:{}/pg_auto_failover",
            paf.monitor_port
        );
        if let Ok(c) = estatemon_domain::schema::connect_url(&url, Duration::from_secs(2)).await {
            break c;
        }
        assert!(Instant::now() < deadline, "the monitor did not start");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for (k, v) in [
        ("health_check_period", "1000"),
        ("health_check_timeout", "1000"),
        ("health_check_retry_delay", "500"),
        ("health_check_max_retries", "1"),
        ("node_considered_unhealthy_timeout", "2000"),
        ("primary_demote_timeout", "3000"),
    ] {
        monitor_admin
            .batch_execute(&format!("ALTER SYSTEM SET pgautofailover.{k} = {v}"))
            .await
            .unwrap();
    }
    monitor_admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    paf.add_node(0);
    paf.add_node(1);
    let ready = eventually(Duration::from_secs(120), || async {
        let s = paf.states().await;
        s.len() == 2 && s[0].1 == "primary" && s[1].1 == "secondary"
    })
    .await;
    assert!(ready, "states: {:?}", paf.states().await);

    // estatemon as it runs in docker-compose.cluster.yml: its own role and
    // password, over the network, to whichever node takes writes. Without
    // the password it is refused: the nodes do not trust the network.
    let both = paf.app_url();
    if paf.host != "127.0.0.1" {
        let no_password = format!(
            "postgres://estatemon@{}:{}/estatemon",
            paf.host, paf.ports[0]
        );
        let refused = estatemon_domain::schema::connect_url(&no_password, Duration::from_secs(5))
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(refused.contains("password missing"), "{refused}");
    }
    let primary = estatemon_domain::schema::connect_url(
        &format!("postgres://postgres@127.0.0.1:{}/estatemon", paf.ports[0]),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let sync: String = primary
        .query_one("SHOW synchronous_standby_names", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        !sync.is_empty(),
        "pg_auto_failover runs synchronous replication"
    );
    println!("synchronous_standby_names = {sync}");

    let mut c = failover_config(&both);
    // pg_autoctl made the database.
    c.database.create_database = false;
    let (got, _hook) = with_webhook(&mut c).await;
    let ingestor = Ingestor::start(c.clone()).await.unwrap();
    assert!(ingestor.subscribed(Duration::from_secs(10)).await);
    let analytics = tokio::spawn(estatemon_analytics::alerts::job::run(c.clone()));

    // Count what is stored, through the two-host URL, every 100 ms.
    let sampler = {
        let url = both.clone();
        tokio::spawn(async move {
            let mut samples: Vec<(Instant, i64)> = Vec::new();
            let mut client = None;
            let end = Instant::now() + Duration::from_secs(180);
            while Instant::now() < end {
                if client.is_none() {
                    client = estatemon_domain::schema::connect_url(&url, Duration::from_secs(1))
                        .await
                        .ok();
                }
                if let Some(cl) = &client {
                    match cl.query_one("SELECT count(*) FROM readings", &[]).await {
                        Ok(r) => {
                            let n: i64 = r.get(0);
                            samples.push((Instant::now(), n));
                            if n >= 3000 {
                                break;
                            }
                        }
                        Err(_) => client = None,
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        })
    };

    let t = base_ms();
    let n = 3000i64;
    let publisher = {
        let c = c.clone();
        tokio::spawn(async move {
            for k in 0..30 {
                let messages = (k * 100..(k + 1) * 100)
                    .map(|i| {
                        (
                            topic(&c, "telemetry", "hv", &format!("m-{}", i % 20)),
                            energy(t + i * 1000, i as f64),
                        )
                    })
                    .collect();
                publish_all(&c.mqtt.url, messages).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    assert!(
        eventually(Duration::from_secs(30), || async {
            count_at(&both, "SELECT count(*) FROM readings").await > 800
        })
        .await
    );
    let at_kill = count_at(&both, "SELECT count(*) FROM readings").await;
    let killed = Instant::now();
    paf.kill_node(0);
    println!("killed the primary (node a) with {at_kill} readings stored");
    let promoted = eventually(Duration::from_secs(90), || async {
        let s = paf.states().await;
        s.iter().any(|(name, reported, _)| {
            name == "b" && (reported == "wait_primary" || reported == "primary")
        })
    })
    .await;
    assert!(promoted, "states: {:?}", paf.states().await);
    println!(
        "pg_auto_failover made node b the primary {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    publisher.await.unwrap();
    let samples = sampler.await.unwrap();
    let stored = count_at(&both, "SELECT count(*) FROM readings").await;
    assert_eq!(stored, n, "every acknowledged reading, once");
    assert_eq!(
        count_at(
            &both,
            "SELECT count(*) FROM (SELECT DISTINCT device_id, metric, ts FROM readings) d"
        )
        .await,
        n
    );
    // The longest time between one change of the stored count and the
    // next (samples every 100 ms; none while no host takes the query).
    let mut longest = Duration::ZERO;
    let mut last_change = samples.first().map(|s| s.0);
    for w in samples.windows(2) {
        if w[1].1 != w[0].1 {
            if let Some(from) = last_change {
                longest = longest.max(w[1].0.duration_since(from));
            }
            last_change = Some(w[1].0);
        }
    }
    println!(
        "longest stretch without a new commit: {:.1} s ({} samples)",
        longest.as_secs_f64(),
        samples.len()
    );
    assert!(
        longest >= Duration::from_secs(1),
        "the primary's loss shows as a gap in commits"
    );

    // Paging after the promotion.
    let paged = entrapment_pages(&c, &got, "lift-after-paf").await;
    assert!(paged, "the entrapment paged after the promotion");
    analytics.abort();
    ingestor.shutdown().await;
}

/// A count through `url`; -1 while no host takes the query.
async fn count_at(url: &str, sql: &str) -> i64 {
    match estatemon_domain::schema::connect_url(url, Duration::from_secs(2)).await {
        Ok(c) => c
            .query_one(sql, &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(-1),
        Err(_) => -1,
    }
}

/// A test configuration writing through `url` (both hosts), connecting
/// and retrying fast so a failover shows in seconds.
fn failover_config(url: &str) -> estatemon_domain::config::Config {
    let mut c = config_at(url, &broker_url());
    c.database.connect_timeout_s = 2;
    c.ingest.db_retry_max_backoff_s = 1;
    c
}

/// Publishes an entrapment of `device` now; whether the webhook got its
/// page (firing, `lift_entrapment`) within 30 s.
async fn entrapment_pages(
    c: &estatemon_domain::config::Config,
    got: &Received,
    device: &str,
) -> bool {
    let ms = chrono::Utc::now().timestamp_millis();
    publish_all(
        &c.mqtt.url,
        vec![(
            topic(c, "events", "hv", device),
            format!(r#"{{"ts":{ms},"type":"fault","code":"entrapment"}}"#).into_bytes(),
        )],
    )
    .await;
    eventually(Duration::from_secs(30), || async {
        got.lock().unwrap().iter().any(|(_, b)| {
            b["kind"] == "firing"
                && b["alert"]["rule"] == "lift_entrapment"
                && b["alert"]["labels"]["device"] == device
        })
    })
    .await
}
