//! `load` mode: synthetic readings at a given message rate and batch size,
//! for benchmarks. Each message carries `readings_per_message` power
//! readings of one device (a JSON array when more than one), stamped at the
//! publish time with distinct microseconds so every reading is stored.

use std::io::Write;
use std::time::{Duration, Instant};

use chrono::Utc;
use estatemon_domain::config::MqttConfig;
use rumqttc::{AsyncClient, MqttOptions, QoS};

/// Site id the load generator publishes under.
pub const LOAD_SITE: &str = "bench";

pub fn payload(
    device_index: u64,
    readings: usize,
    now: chrono::DateTime<Utc>,
    seq: u64,
) -> Vec<u8> {
    // Distinct microsecond timestamps keep every (device, metric, ts) unique
    // while staying within a millisecond of the publish time.
    let mut out = Vec::with_capacity(readings * 72);
    if readings > 1 {
        out.push(b'[');
    }
    for j in 0..readings {
        if j > 0 {
            out.push(b',');
        }
        let ts = now + chrono::Duration::microseconds(j as i64);
        let _ = write!(
            out,
            r#"{{"ts":"{}","metrics":{{"power_kw":{}.{}}}}}"#,
            ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            seq % 1000,
            device_index % 10
        );
    }
    if readings > 1 {
        out.push(b']');
    }
    out
}

/// A QoS 1 publisher, its event loop's task, and the count of PUBACKs it
/// has received (a message is the broker's only once acknowledged).
pub fn publisher(
    mqtt: &MqttConfig,
    id: String,
) -> (
    AsyncClient,
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let ep = mqtt.endpoint().expect("validated");
    let mut opts = MqttOptions::new(id, ep.host, ep.port);
    opts.set_inflight(1000);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    if let (Some(u), p) = (ep.username, ep.password) {
        opts.set_credentials(u, p.unwrap_or_default());
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = acked.clone();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    (client, task, acked)
}

/// Publishes `messages` messages from `publishers` clients; with a `rate`
/// (messages/s), paced in 10 ms slices.
pub async fn publish(
    mqtt: &MqttConfig,
    tag: &str,
    publishers: usize,
    messages: u64,
    readings_per_message: usize,
    rate: Option<f64>,
    seq_offset: u64,
) -> Duration {
    let template = mqtt.topics.telemetry.clone();
    publish_with(
        mqtt,
        tag,
        publishers,
        messages,
        rate,
        seq_offset,
        std::sync::Arc::new(move |p, device, seq| {
            let topic = template
                .replace("{site}", LOAD_SITE)
                .replace("{device_id}", &format!("dev-{p}-{device}"));
            (
                topic,
                payload(device, readings_per_message, Utc::now(), seq),
            )
        }),
    )
    .await
}

/// Waits until message `i` of a publisher started at `t0` is due at
/// `rate` messages/s (at once when `rate` is `None`).
pub async fn pace(t0: Instant, i: u64, rate: Option<f64>) {
    if let Some(rate) = rate {
        let due = Duration::from_secs_f64(i as f64 / rate);
        let elapsed = t0.elapsed();
        if due > elapsed + Duration::from_millis(10) {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// (publisher, device, sequence number) → (topic, payload).
pub type MakeMessage = std::sync::Arc<dyn Fn(usize, u64, u64) -> (String, Vec<u8>) + Send + Sync>;

/// Publishes `messages` made by `make` from `publishers` clients at QoS 1,
/// at `rate` messages/s in all (or as fast as the broker takes them).
pub async fn publish_with(
    mqtt: &MqttConfig,
    tag: &str,
    publishers: usize,
    messages: u64,
    rate: Option<f64>,
    seq_offset: u64,
    make: MakeMessage,
) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    // Several comma-separated broker URLs: the publishers spread over
    // them (the nodes of a cluster), one each in turn.
    let urls = mqtt.urls();
    for p in 0..publishers {
        let mut mqtt = mqtt.clone();
        mqtt.url = urls[p % urls.len()].clone();
        let tag = tag.to_owned();
        let make = make.clone();
        let share =
            messages / publishers as u64 + u64::from((p as u64) < messages % publishers as u64);
        let rate = rate.map(|r| r / publishers as f64);
        tasks.push(tokio::spawn(async move {
            let (client, poller, acked) = publisher(&mqtt, format!("estatemon-load-{tag}-{p}"));
            let t0 = Instant::now();
            let mut sent = 0u64;
            for i in 0..share {
                pace(t0, i, rate).await;
                let seq = seq_offset + i * publishers as u64 + p as u64;
                let device = seq % 500;
                let (topic, body) = make(p, device, seq);
                if let Err(e) = client.publish(topic, QoS::AtLeastOnce, false, body).await {
                    eprintln!("publisher {p}: stopped after {sent} of {share} messages: {e}");
                    break;
                }
                sent += 1;
            }
            // Disconnect only once the broker has acknowledged every
            // message: up to the request queue's 10,000 could still be on
            // their way, and a disconnect drops them (earlier runs came up
            // 1–5 messages a device short this way).
            let waited = Instant::now();
            while acked.load(std::sync::atomic::Ordering::Relaxed) < sent
                && waited.elapsed() < Duration::from_secs(120)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let acknowledged = acked.load(std::sync::atomic::Ordering::Relaxed);
            if acknowledged < sent {
                eprintln!(
                    "publisher {p}: {} of {sent} messages not acknowledged by the broker in 120 s",
                    sent - acknowledged
                );
            }
            let _ = client.disconnect().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            poller.abort();
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    started.elapsed()
}
