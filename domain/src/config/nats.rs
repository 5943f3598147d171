//! `[nats]`: the clustered transport (`ingest.source = "nats"`).
//!
//! Devices publish MQTT to any node of a NATS cluster (or NATS directly);
//! a JetStream stream keeps what they publish, replicated over the nodes;
//! every ingestor pulls from one durable consumer and acknowledges a
//! message only after its batch committed. `estatemon transport setup`
//! creates the stream and consumer from this section, or reports how the
//! ones on the servers differ from it.

use serde::{Deserialize, Serialize};

/// Where ingest takes device messages from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// An MQTT broker (`[mqtt]`; Mosquitto, or the embedded one).
    #[default]
    Mqtt,
    /// A JetStream stream on a NATS cluster (`[nats]`).
    Nats,
}

/// What the stream does when a limit (`max_bytes_mb`, `max_messages`) is
/// reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Discard {
    /// Refuse new messages: a JetStream publisher gets an error and
    /// `estatemon_transport_stream_full` turns 1. Nothing stored is lost.
    /// (A device's MQTT QoS 1 message still reaches ingest through the
    /// gateway's own store; a QoS 0 one, which only the stream carries, is
    /// dropped by the server.)
    #[default]
    New,
    /// Delete the oldest messages, consumed or not. Loses data silently
    /// when ingest lags; `transport setup` warns about it.
    Old,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Servers of the cluster, comma-separated
    /// (`nats://[user:pass@]host:4222,nats://host2:4222`); one that answers
    /// is enough, the client learns the rest and fails over among them.
    pub url: String,
    /// The JetStream stream that keeps device messages.
    pub stream: String,
    /// NATS subjects the stream captures. Empty: derived from the MQTT
    /// topics ingest reads (`mqtt.topics`, the payload mappings), as the
    /// NATS MQTT gateway names them (`estatemon/+/+/telemetry` →
    /// `estatemon.*.*.telemetry`).
    pub subjects: Vec<String>,
    /// The durable pull consumer every ingestor shares.
    pub consumer: String,
    /// Copies of the stream and the consumer (1, 3 or 5; one per node at
    /// most). 3 survives the loss of one node.
    pub replicas: usize,
    /// How long the stream keeps a message, consumed or not: the window
    /// `transport replay` can re-ingest.
    pub max_age_h: u64,
    /// The stream's size limit on each node.
    pub max_bytes_mb: u64,
    /// The stream's message-count limit; 0 is none.
    pub max_messages: i64,
    pub discard: Discard,
    /// A message published twice with the same `Nats-Msg-Id` within this
    /// long is stored once.
    pub duplicate_window_s: u64,
    /// A message not acknowledged this long after delivery is delivered
    /// again (to any ingestor): longer than a commit that retries through
    /// a database failover.
    pub ack_wait_s: u64,
    /// Messages delivered and not yet acknowledged, over all ingestors.
    pub max_ack_pending: i64,
    /// Messages asked for in one pull.
    pub fetch_batch: usize,
    /// Read devices' MQTT QoS 1 messages from the NATS MQTT gateway's own
    /// store (`$MQTT_msgs`), where each is stored before the device gets
    /// its PUBACK, rather than from the stream's copy, which nobody
    /// acknowledges (lost without a trace while the stream has no leader
    /// or is full). Off only for a cluster without MQTT devices.
    pub mqtt_gateway: bool,
    /// Let publishers send fast-ingest batches (JetStream's `allow_batched`,
    /// nats-server 2.14 or later): a gateway streams many messages with
    /// the server's flow control instead of waiting for each one's
    /// acknowledgement. Each message is stored as it arrives, as before.
    pub allow_batched: bool,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            stream: "ESTATEMON".into(),
            subjects: Vec::new(),
            consumer: "estatemon-ingest".into(),
            replicas: 1,
            max_age_h: 7 * 24,
            max_bytes_mb: 10 * 1024,
            max_messages: 0,
            discard: Discard::New,
            duplicate_window_s: 120,
            ack_wait_s: 60,
            max_ack_pending: 50_000,
            fetch_batch: 2_000,
            mqtt_gateway: true,
            allow_batched: false,
        }
    }
}

impl NatsConfig {
    /// The servers in `url`.
    pub fn servers(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The servers, passwords masked, comma-separated: for messages.
    pub fn redacted_servers(&self) -> String {
        self.servers()
            .iter()
            .map(|s| redact(s))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Checks beyond types: (field, message) of the first problem.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let servers = self.servers();
        if servers.is_empty() {
            return Err(("nats.url", "names no server".into()));
        }
        for s in &servers {
            let parsed =
                url::Url::parse(s).map_err(|e| ("nats.url", format!("`{}`: {e}", redact(s))))?;
            if !matches!(parsed.scheme(), "nats" | "tls") || parsed.host_str().is_none() {
                return Err((
                    "nats.url",
                    format!("`{}` must be nats://host:port", redact(s)),
                ));
            }
        }
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !name_ok(&self.stream) {
            return Err((
                "nats.stream",
                format!("`{}`: letters, digits, - and _ only", self.stream),
            ));
        }
        if !name_ok(&self.consumer) {
            return Err((
                "nats.consumer",
                format!("`{}`: letters, digits, - and _ only", self.consumer),
            ));
        }
        if !matches!(self.replicas, 1 | 3 | 5) {
            return Err((
                "nats.replicas",
                format!("{}: 1, 3 or 5 (a quorum of an odd number)", self.replicas),
            ));
        }
        for s in &self.subjects {
            crate::mapping::subject::check_subject(s).map_err(|m| ("nats.subjects", m))?;
        }
        for (field, v) in [
            ("nats.max_age_h", self.max_age_h),
            ("nats.max_bytes_mb", self.max_bytes_mb),
            ("nats.ack_wait_s", self.ack_wait_s),
            ("nats.fetch_batch", self.fetch_batch as u64),
            ("nats.max_ack_pending", self.max_ack_pending.max(0) as u64),
        ] {
            if v == 0 {
                return Err((field, "must be above 0".into()));
            }
        }
        if self.max_messages < 0 {
            return Err(("nats.max_messages", "must be 0 (none) or above".into()));
        }
        if (self.fetch_batch as i64) > self.max_ack_pending {
            return Err((
                "nats.fetch_batch",
                format!(
                    "{} exceeds max_ack_pending {}: a pull could never be filled",
                    self.fetch_batch, self.max_ack_pending
                ),
            ));
        }
        Ok(())
    }
}

/// `nats://user:secret@host` → `nats://user:***@host`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
