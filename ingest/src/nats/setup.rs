//! The stream and the durable consumer, as `[nats]` describes them:
//! created when missing, compared when present. A difference is *drift*:
//! reported (by `estatemon transport setup`, and in the ingestor's log),
//! changed only when asked (`transport setup --update`), because a
//! smaller limit or fewer replicas on a live stream can delete messages.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use estatemon_domain::config::{Discard, NatsConfig};

use crate::metrics::NatsMetrics;

/// The stream `[nats]` describes, capturing `subjects`.
pub fn stream_config(config: &NatsConfig, subjects: &[String]) -> stream::Config {
    stream::Config {
        name: config.stream.clone(),
        description: Some("estatemon: device messages, kept for ingest and replay".into()),
        subjects: subjects.to_vec(),
        // Messages stay after they are consumed, until max_age: a time
        // range can be ingested again, and a second consumer (an audit
        // copy, a second site) reads the same messages.
        retention: stream::RetentionPolicy::Limits,
        max_age: Duration::from_secs(config.max_age_h * 3600),
        max_bytes: (config.max_bytes_mb as i64).saturating_mul(1 << 20),
        max_messages: if config.max_messages == 0 {
            -1
        } else {
            config.max_messages
        },
        discard: match config.discard {
            Discard::New => stream::DiscardPolicy::New,
            Discard::Old => stream::DiscardPolicy::Old,
        },
        duplicate_window: Duration::from_secs(config.duplicate_window_s),
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        allow_batch_publish: config.allow_batched,
        ..Default::default()
    }
}

/// The durable pull consumer every ingestor shares.
pub fn consumer_config(config: &NatsConfig) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(config.consumer.clone()),
        description: Some("estatemon ingest: acknowledged after commit".into()),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(config.ack_wait_s),
        // Delivered until acknowledged: a message is never given up on
        // (a poison payload is a dead letter, which is acknowledged).
        max_deliver: -1,
        max_ack_pending: config.max_ack_pending,
        max_batch: config.fetch_batch as i64,
        ..Default::default()
    }
}

/// What [`ensure`] found or did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub stream_created: bool,
    pub consumer_created: bool,
    /// `field: on the server → in the configuration`, one per difference.
    pub drift: Vec<String>,
    /// Differences changed on the server (`update`).
    pub updated: bool,
    /// Cautions that are not drift (`discard = "old"`, one replica).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("NATS JetStream at {servers}: {message}")]
    JetStream { servers: String, message: String },
}

fn err(config: &NatsConfig, what: &str, e: impl std::fmt::Display) -> SetupError {
    SetupError::JetStream {
        servers: config.redacted_servers(),
        message: format!("{what}: {e}"),
    }
}

/// Creates the stream and the consumer if missing; compares them with the
/// configuration if present; with `update`, changes what differs.
pub async fn ensure(
    js: &jetstream::Context,
    config: &NatsConfig,
    subjects: &[String],
    update: bool,
) -> Result<Report, SetupError> {
    let mut report = Report::default();
    let want = stream_config(config, subjects);
    if config.discard == Discard::Old {
        report.warnings.push(
            "discard = \"old\": at a limit the stream deletes its oldest messages, consumed or not; a lagging ingest loses them".into(),
        );
    }
    if config.replicas == 1 {
        report.warnings.push(
            "replicas = 1: the stream lives on one node; losing it loses what it holds".into(),
        );
    }
    let mut stream = match js.get_stream(&config.stream).await {
        Ok(s) => s,
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            report.stream_created = true;
            js.create_stream(want.clone())
                .await
                .map_err(|e| err(config, "creating the stream", e))?
        }
        Err(e) => return Err(err(config, "reading the stream", e)),
    };
    if !report.stream_created {
        let have = stream
            .info()
            .await
            .map_err(|e| err(config, "reading the stream", e))?
            .config
            .clone();
        report.drift.extend(stream_drift(&have, &want));
        if update && !report.drift.is_empty() {
            let mut next = have.clone();
            next.subjects = want.subjects.clone();
            next.max_age = want.max_age;
            next.max_bytes = want.max_bytes;
            next.max_messages = want.max_messages;
            next.discard = want.discard;
            next.duplicate_window = want.duplicate_window;
            next.num_replicas = want.num_replicas;
            js.update_stream(next)
                .await
                .map_err(|e| err(config, "updating the stream", e))?;
            report.updated = true;
        }
    }
    let want_consumer = consumer_config(config);
    match stream
        .get_consumer::<consumer::pull::Config>(&config.consumer)
        .await
    {
        Ok(mut c) => {
            let have = c
                .info()
                .await
                .map_err(|e| err(config, "reading the consumer", e))?
                .config
                .clone();
            let drift = consumer_drift(&have, &want_consumer);
            if update && !drift.is_empty() {
                stream
                    .create_consumer(want_consumer)
                    .await
                    .map_err(|e| err(config, "updating the consumer", e))?;
                report.updated = true;
            }
            report.drift.extend(drift);
        }
        // (get_consumer's error is boxed: the server's description, code
        // 10014, is what tells "not found" from a failed request.)
        Err(e) if e.to_string().contains("consumer not found") => {
            stream
                .create_consumer(want_consumer)
                .await
                .map_err(|e| err(config, "creating the consumer", e))?;
            report.consumer_created = true;
        }
        Err(e) => return Err(err(config, "reading the consumer", e)),
    }
    Ok(report)
}

/// Makes sure of the durable consumer on the MQTT gateway's store
/// (`$MQTT_msgs`): a device's QoS 1 message is kept there only while some
/// consumer has interest, so this consumer must exist before devices
/// publish. The server creates the store when the first MQTT client
/// connects: if it is missing, we connect once (MQTT 3.1.1, to `mqtt`, a
/// node's MQTT listener) to have it made. True when created now.
pub async fn ensure_gateway(
    js: &jetstream::Context,
    config: &NatsConfig,
    mqtt: &estatemon_domain::config::MqttConfig,
) -> Result<bool, SetupError> {
    use crate::nats::consume::GATEWAY_STREAM;
    let mut stream = js.get_stream(GATEWAY_STREAM).await;
    if stream.is_err() {
        poke_gateway(mqtt).await;
        for _ in 0..25 {
            stream = js.get_stream(GATEWAY_STREAM).await;
            if stream.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let stream = stream.map_err(|e| {
        err(
            config,
            &format!(
                "the MQTT gateway's store {GATEWAY_STREAM} (is mqtt.url, {}, a node's MQTT listener?)",
                estatemon_domain::config::redact_url(&mqtt.url)
            ),
            e,
        )
    })?;
    let want = crate::nats::gateway_consumer(config);
    let name = want.durable_name.clone().unwrap_or_default();
    match stream.get_consumer::<consumer::pull::Config>(&name).await {
        Ok(c) => {
            // Made by an earlier version, with a filter per subject: the
            // server walks every subject per message for those
            // (`gateway_consumer`); one filter, keeping its place. The
            // store kept nothing for us on the subjects it now adds until
            // this moment: their stream copies published before it are
            // read from the stream (`FILTER_SINCE`).
            let have = &c.cached_info().config;
            if have.filter_subject != want.filter_subject || !have.filter_subjects.is_empty() {
                let mut next = have.clone();
                next.filter_subject = want.filter_subject.clone();
                next.filter_subjects = Vec::new();
                // Stamped by this machine's clock, which the servers'
                // publish times are compared with: 5 s later than now, so
                // a clock up to that far behind theirs costs duplicates
                // (stored once), never a skipped copy.
                next.metadata.insert(
                    crate::nats::consume::FILTER_SINCE.into(),
                    (chrono::Utc::now().timestamp_millis() + 5_000).to_string(),
                );
                match stream.update_consumer(next).await {
                    Ok(_) => tracing::info!(
                        consumer = %name,
                        filter = %want.filter_subject,
                        "gateway consumer's filters made one (subjects ingest does not read are acknowledged unread)"
                    ),
                    // Refused (permissions, an older server): it still
                    // works as it is, only slower.
                    Err(e) => tracing::warn!(
                        consumer = %name,
                        error = %e,
                        "gateway consumer's filters not made one; it keeps working, at a higher cost to the servers"
                    ),
                }
            }
            Ok(false)
        }
        Err(e) if e.to_string().contains("consumer not found") => {
            stream
                .create_consumer(want)
                .await
                .map_err(|e| err(config, "creating the gateway consumer", e))?;
            Ok(true)
        }
        Err(e) => Err(err(config, "reading the gateway consumer", e)),
    }
}

/// One MQTT 3.1.1 connection (clean session), closed at once, to the first
/// node of `mqtt.url` that answers.
async fn poke_gateway(mqtt: &estatemon_domain::config::MqttConfig) {
    for ep in mqtt.endpoints().unwrap_or_default() {
        if poke(ep).await {
            return;
        }
    }
}

async fn poke(ep: estatemon_domain::config::MqttEndpoint) -> bool {
    let mut opts = rumqttc::MqttOptions::new(
        format!("estatemon-setup-{}", std::process::id()),
        ep.host.clone(),
        ep.port,
    );
    opts.set_clean_session(true);
    if let (Some(u), p) = (ep.username.clone(), ep.password.clone()) {
        opts.set_credentials(u, p.unwrap_or_default());
    }
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 4);
    let connected = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return true,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, node = %format!("{}:{}", ep.host, ep.port), "MQTT gateway not reached");
                    return false;
                }
            }
        }
    })
    .await
    .unwrap_or(false);
    if connected {
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
    }
    connected
}

fn stream_drift(have: &stream::Config, want: &stream::Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut hs = have.subjects.clone();
    let mut ws = want.subjects.clone();
    hs.sort();
    ws.sort();
    if hs != ws {
        out.push(format!("stream subjects: {hs:?} → {ws:?}"));
    }
    if have.retention != want.retention {
        out.push(format!(
            "stream retention: {:?} → {:?} (cannot be changed; recreate the stream)",
            have.retention, want.retention
        ));
    }
    let mut cmp = |name: &str, h: String, w: String| differs(&mut out, "stream", name, h, w);
    cmp("max_age", secs(have.max_age), secs(want.max_age));
    cmp(
        "max_bytes",
        have.max_bytes.to_string(),
        want.max_bytes.to_string(),
    );
    cmp(
        "max_messages",
        have.max_messages.to_string(),
        want.max_messages.to_string(),
    );
    cmp(
        "discard",
        format!("{:?}", have.discard),
        format!("{:?}", want.discard),
    );
    cmp(
        "duplicate_window",
        secs(have.duplicate_window),
        secs(want.duplicate_window),
    );
    cmp(
        "replicas",
        have.num_replicas.to_string(),
        want.num_replicas.to_string(),
    );
    cmp(
        "allow_batched",
        have.allow_batch_publish.to_string(),
        want.allow_batch_publish.to_string(),
    );
    cmp(
        "storage",
        format!("{:?}", have.storage),
        format!("{:?}", want.storage),
    );
    out
}

fn consumer_drift(have: &consumer::Config, want: &consumer::pull::Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |name: &str, h: String, w: String| differs(&mut out, "consumer", name, h, w);
    cmp(
        "ack_policy",
        format!("{:?}", have.ack_policy),
        format!("{:?}", want.ack_policy),
    );
    cmp("ack_wait", secs(have.ack_wait), secs(want.ack_wait));
    cmp(
        "max_ack_pending",
        have.max_ack_pending.to_string(),
        want.max_ack_pending.to_string(),
    );
    cmp(
        "max_batch",
        have.max_batch.to_string(),
        want.max_batch.to_string(),
    );
    cmp(
        "max_deliver",
        have.max_deliver.to_string(),
        want.max_deliver.to_string(),
    );
    cmp(
        "filter_subject",
        have.filter_subject.clone(),
        want.filter_subject.clone(),
    );
    out
}

/// One drift line, `{what} {field}: {on the server} → {configured}`,
/// when the two differ.
fn differs(out: &mut Vec<String>, what: &str, field: &str, have: String, want: String) {
    if have != want {
        out.push(format!("{what} {field}: {have} → {want}"));
    }
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs())
}

/// The stream's and the consumer's state, for `transport status` and the
/// metrics.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub messages: u64,
    pub bytes: u64,
    pub max_bytes: i64,
    pub max_messages: i64,
    pub discard_new: bool,
    pub leader: Option<String>,
    /// (server, current, offline) of each replica but the leader.
    pub replicas: Vec<(String, bool, bool)>,
    pub consumer_pending: u64,
    pub consumer_ack_pending: usize,
    pub consumer_redelivered: usize,
    /// Pull requests waiting on the consumer: 0 when no ingestor reads it.
    pub consumer_waiting: usize,
    /// The gateway consumer (`{consumer}-mqtt`), when it exists.
    pub gateway: Option<GatewayState>,
}

/// The consumer of the MQTT gateway's store, and the store.
#[derive(Debug, Default, Clone)]
pub struct GatewayState {
    pub pending: u64,
    pub ack_pending: usize,
    pub waiting: usize,
    /// Messages and bytes in `$MQTT_msgs` (every consumer's interest).
    pub store_messages: u64,
    pub store_bytes: u64,
}

impl State {
    /// At a limit with `discard = new`: publishers are refused.
    pub fn full(&self) -> bool {
        self.discard_new
            && ((self.max_bytes > 0 && self.bytes as f64 >= self.max_bytes as f64 * 0.999)
                || (self.max_messages > 0 && self.messages >= self.max_messages as u64))
    }
}

pub async fn state(js: &jetstream::Context, config: &NatsConfig) -> Result<State, SetupError> {
    let mut stream = js
        .get_stream(&config.stream)
        .await
        .map_err(|e| err(config, "reading the stream", e))?;
    let info = stream
        .info()
        .await
        .map_err(|e| err(config, "reading the stream", e))?
        .clone();
    let mut s = State {
        messages: info.state.messages,
        bytes: info.state.bytes,
        max_bytes: info.config.max_bytes,
        max_messages: info.config.max_messages,
        discard_new: info.config.discard == stream::DiscardPolicy::New,
        ..Default::default()
    };
    if let Some(cluster) = &info.cluster {
        s.leader = cluster.leader.clone();
        s.replicas = cluster
            .replicas
            .iter()
            .map(|p| (p.name.clone(), p.current, p.offline))
            .collect();
    } else {
        s.leader = Some("(single server)".into());
    }
    if let Ok(mut c) = stream
        .get_consumer::<consumer::pull::Config>(&config.consumer)
        .await
    {
        if let Ok(ci) = c.info().await {
            s.consumer_pending = ci.num_pending;
            s.consumer_ack_pending = ci.num_ack_pending;
            s.consumer_redelivered = ci.num_redelivered;
            s.consumer_waiting = ci.num_waiting;
        }
    }
    // Left behind by retired ingestors, its interest keeps every device
    // QoS 1 message in the server's store: shown whether or not
    // mqtt_gateway is on.
    if let Ok(mut store) = js.get_stream(super::consume::GATEWAY_STREAM).await {
        if let Ok(mut c) = store
            .get_consumer::<consumer::pull::Config>(&format!("{}-mqtt", config.consumer))
            .await
        {
            if let Ok(ci) = c.info().await {
                let mut g = GatewayState {
                    pending: ci.num_pending,
                    ack_pending: ci.num_ack_pending,
                    waiting: ci.num_waiting,
                    ..Default::default()
                };
                if let Ok(info) = store.info().await {
                    g.store_messages = info.state.messages;
                    g.store_bytes = info.state.bytes;
                }
                s.gateway = Some(g);
            }
        }
    }
    Ok(s)
}

/// Reads the state every `every` and sets the transport gauges, until
/// `shutdown`.
pub async fn watch(
    js: jetstream::Context,
    config: NatsConfig,
    metrics: NatsMetrics,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut was_full = false;
    loop {
        match state(&js, &config).await {
            Ok(s) => {
                metrics.stream_bytes.set(s.bytes as i64);
                metrics.stream_messages.set(s.messages as i64);
                metrics.stream_max_bytes.set(s.max_bytes);
                metrics.stream_max_messages.set(s.max_messages);
                metrics.consumer_pending.set(s.consumer_pending as i64);
                metrics
                    .consumer_ack_pending
                    .set(s.consumer_ack_pending as i64);
                metrics.stream_leader.set(i64::from(s.leader.is_some()));
                metrics.stream_replicas_current.set(
                    i64::from(s.leader.is_some())
                        + s.replicas.iter().filter(|(_, current, _)| *current).count() as i64,
                );
                let full = s.full();
                metrics.stream_full.set(i64::from(full));
                if full && !was_full {
                    tracing::error!(
                        stream = %config.stream,
                        bytes = s.bytes,
                        messages = s.messages,
                        "the stream is full: publishers are refused until ingest catches up or max_age passes (raise nats.max_bytes_mb or nats.max_messages)"
                    );
                } else if was_full && !full {
                    tracing::info!(stream = %config.stream, "the stream takes messages again");
                }
                was_full = full;
            }
            Err(e) => {
                metrics.stream_leader.set(0);
                tracing::warn!(error = %e, "stream state not read");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
    }
}
