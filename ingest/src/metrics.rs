//! Prometheus metrics of the ingest path, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    pub mode: &'static str,
}

/// What a mapping did with a message that stored no reading, or stored
/// it differently from what the message said.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MappingLabel {
    pub mapping: String,
    /// `ignored` (a topic the profile knows carries no readings),
    /// `no_readings` (the message held none of the mapping's fields),
    /// `retained_without_time` (a retained state re-delivered at
    /// subscription with no time of its own: not stored again),
    /// `clock_unsynced` (placed at the receive time).
    pub outcome: &'static str,
}

/// Every metric the ingestor exports. Cheap to clone (shared atomics).
#[derive(Clone)]
pub struct Metrics {
    pub messages: Family<ChannelLabel, Counter>,
    pub readings_received: Counter,
    pub readings_stored: Counter,
    pub mapping_outcomes: Family<MappingLabel, Counter>,
    /// Copies of one message delivered again for another of our
    /// overlapping subscriptions, handled once.
    pub overlapping_copies: Counter,
    pub readings_duplicate: Counter,
    pub events_stored: Counter,
    pub alerts_raised: Counter,
    pub dead_letters: Family<ReasonLabel, Counter>,
    pub devices_registered: Counter,
    pub unassigned_readings: Counter,
    pub batch_readings: Histogram,
    pub commit_seconds: Histogram,
    pub lag_seconds: Histogram,
    pub mqtt_connected: Gauge,
    pub mqtt_subscribed: Gauge,
    pub mqtt_reconnects: Counter,
    /// Rebirth commands sent to Sparkplug edge nodes.
    pub sparkplug_rebirths: Counter,
    /// Sparkplug deaths dated when received: no timestamp of their own,
    /// or one that could not be believed (a Last Will's, after receipt).
    pub sparkplug_deaths_at_receipt: Counter,
    /// Offline STATEs of the primary host not acknowledged before its
    /// intentional disconnect.
    pub sparkplug_state_offline_failed: Counter,
    pub db_connected: Gauge,
    pub db_errors: Counter,
    pub inflight_messages: Gauge,
    pub buffered_kib: Gauge,
    pub stale_acks: Counter,
    pub storage_mode: Family<ModeLabel, Gauge>,
    pub emergency_rules_missing: Gauge,
    /// The JetStream transport (`ingest.source = "nats"`).
    pub nats: NatsMetrics,
}

/// The JetStream transport's state, as this ingestor sees it.
#[derive(Clone, Default)]
pub struct NatsMetrics {
    /// 1 while connected to a NATS server.
    pub connected: Gauge,
    /// 1 while pulling from the durable consumer of the stream, and of
    /// the MQTT gateway's store.
    pub consuming: Gauge,
    pub gateway_consuming: Gauge,
    pub reconnects: Counter,
    /// Errors of the pull (missed heartbeats, a consumer deleted, no
    /// responders while the stream elects a leader).
    pub pull_errors: Counter,
    /// Acknowledgements that could not be sent (the message is delivered
    /// again after `nats.ack_wait_s`; its second copy stores nothing).
    pub ack_errors: Counter,
    /// Messages handed back (NAK) at shutdown, for another ingestor.
    pub naks: Counter,
    /// QoS 1 messages in the MQTT gateway's store on subjects ingest does
    /// not read (kept there for other MQTT subscribers): acknowledged
    /// unread, which removes only ingest's interest.
    pub gateway_skipped: Counter,
    /// The stream's bytes, messages and limits, read every few seconds.
    pub stream_bytes: Gauge,
    pub stream_messages: Gauge,
    pub stream_max_bytes: Gauge,
    pub stream_max_messages: Gauge,
    /// 1 when the stream is at a limit with `discard = "new"`: publishers
    /// are being refused.
    pub stream_full: Gauge,
    /// Messages the consumer has not delivered yet (the backlog), and
    /// those delivered and not acknowledged (all ingestors).
    pub consumer_pending: Gauge,
    pub consumer_ack_pending: Gauge,
    /// Replicas of the stream that are current, and whether it has a
    /// leader (writes are refused without one).
    pub stream_replicas_current: Gauge,
    pub stream_leader: Gauge,
}

/// Lag buckets reach a day: a backfill's readings are legitimately old.
const LAG_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86400.0,
];

impl Metrics {
    /// One message taken from the broker on `channel`.
    pub fn message(&self, channel: &'static str) {
        self.messages.get_or_create(&ChannelLabel { channel }).inc();
    }

    /// One mapped message's outcome (see [`MappingLabel`]).
    pub fn mapping_outcome(&self, mapping: &str, outcome: &'static str) {
        self.mapping_outcomes
            .get_or_create(&MappingLabel {
                mapping: mapping.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            messages: Family::default(),
            readings_received: Counter::default(),
            readings_stored: Counter::default(),
            mapping_outcomes: Family::default(),
            overlapping_copies: Counter::default(),
            readings_duplicate: Counter::default(),
            events_stored: Counter::default(),
            alerts_raised: Counter::default(),
            dead_letters: Family::default(),
            devices_registered: Counter::default(),
            unassigned_readings: Counter::default(),
            batch_readings: Histogram::new([
                1.0, 10.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 25000.0,
            ]),
            commit_seconds: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            lag_seconds: Histogram::new(LAG_BUCKETS.iter().copied()),
            mqtt_connected: Gauge::default(),
            mqtt_subscribed: Gauge::default(),
            mqtt_reconnects: Counter::default(),
            sparkplug_rebirths: Counter::default(),
            sparkplug_deaths_at_receipt: Counter::default(),
            sparkplug_state_offline_failed: Counter::default(),
            db_connected: Gauge::default(),
            db_errors: Counter::default(),
            inflight_messages: Gauge::default(),
            buffered_kib: Gauge::default(),
            stale_acks: Counter::default(),
            storage_mode: Family::default(),
            emergency_rules_missing: Gauge::default(),
            nats: NatsMetrics::default(),
        };
        let r = registry.sub_registry_with_prefix("estatemon_ingest");
        r.register(
            "messages",
            "MQTT messages received, by payload format",
            m.messages.clone(),
        );
        r.register(
            "readings_received",
            "Readings decoded and validated",
            m.readings_received.clone(),
        );
        r.register(
            "readings_stored",
            "Readings committed to the database",
            m.readings_stored.clone(),
        );
        r.register(
            "readings_duplicate",
            "Readings already stored (redelivery or repeated publish), not stored again",
            m.readings_duplicate.clone(),
        );
        r.register(
            "events_stored",
            "Events committed to the database",
            m.events_stored.clone(),
        );
        r.register(
            "emergency_rules_missing",
            "Emergencies (entrapment, forced door, fire-main pressure) the running alert rules do not page for; 0 unless an admin waived them",
            m.emergency_rules_missing.clone(),
        );
        r.register(
            "alerts_raised",
            "Immediate alerts (entrapment, forced door, fire main) opened on the ingest path",
            m.alerts_raised.clone(),
        );
        r.register(
            "dead_letters",
            "Dead letters stored, by reason",
            m.dead_letters.clone(),
        );
        r.register(
            "devices_registered",
            "Unknown devices registered as unassigned on first message",
            m.devices_registered.clone(),
        );
        r.register(
            "unassigned_readings",
            "Readings from devices not (yet) in the registry",
            m.unassigned_readings.clone(),
        );
        r.register(
            "batch_readings",
            "Readings per committed batch",
            m.batch_readings.clone(),
        );
        r.register(
            "commit_seconds",
            "Time to store and commit one batch",
            m.commit_seconds.clone(),
        );
        r.register(
            "lag_seconds",
            "End-to-end lag: commit time minus reading time",
            m.lag_seconds.clone(),
        );
        r.register(
            "mqtt_connected",
            "1 while connected to the broker",
            m.mqtt_connected.clone(),
        );
        r.register(
            "mqtt_subscribed",
            "1 once the broker has granted every subscription on the current connection",
            m.mqtt_subscribed.clone(),
        );
        r.register(
            "mqtt_reconnects",
            "Broker connection losses",
            m.mqtt_reconnects.clone(),
        );
        r.register(
            "sparkplug_rebirths",
            "Rebirth commands (NCMD Node Control/Rebirth) sent to Sparkplug edge nodes",
            m.sparkplug_rebirths.clone(),
        );
        r.register(
            "sparkplug_deaths_at_receipt",
            "Sparkplug NDEATH/DDEATH dated when received, not by their own timestamp (none, a Last Will's, or not plausible)",
            m.sparkplug_deaths_at_receipt.clone(),
        );
        r.register(
            "sparkplug_state_offline_failed",
            "Intentional disconnects whose offline STATE the broker did not acknowledge in time",
            m.sparkplug_state_offline_failed.clone(),
        );
        r.register(
            "db_connected",
            "Writers currently connected to the database",
            m.db_connected.clone(),
        );
        r.register(
            "db_errors",
            "Failed batch writes (each retried)",
            m.db_errors.clone(),
        );
        r.register(
            "inflight_messages",
            "Messages received and not yet acknowledged",
            m.inflight_messages.clone(),
        );
        r.register(
            "buffered_kib",
            "Payload received and not yet committed (KiB); reading pauses at ingest.max_buffered_mb",
            m.buffered_kib.clone(),
        );
        r.register(
            "mapping_outcomes",
            "Mapped messages that stored nothing or not as sent, by mapping and outcome (ignored, no_readings, retained_without_time, clock_unsynced)",
            m.mapping_outcomes.clone(),
        );
        r.register(
            "overlapping_copies",
            "Second copies of a message delivered for another of our overlapping subscriptions (handled once)",
            m.overlapping_copies.clone(),
        );
        r.register(
            "stale_acks",
            "Acknowledgements skipped because the connection they belonged to was lost (the broker redelivers)",
            m.stale_acks.clone(),
        );
        r.register(
            "storage_mode",
            "Storage engine in use (1 for the active mode)",
            m.storage_mode.clone(),
        );
        let n = registry.sub_registry_with_prefix("estatemon_transport");
        for (name, help, metric) in [
            ("nats_connected", "1 while connected to a NATS server", &m.nats.connected),
            ("nats_consuming", "1 while pulling from the durable JetStream consumer of the stream", &m.nats.consuming),
            ("nats_gateway_consuming", "1 while pulling devices' MQTT QoS 1 messages from the NATS MQTT gateway's store", &m.nats.gateway_consuming),
            ("stream_bytes", "Bytes the JetStream stream holds", &m.nats.stream_bytes),
            ("stream_messages", "Messages the JetStream stream holds", &m.nats.stream_messages),
            ("stream_max_bytes", "The stream's byte limit (-1: none)", &m.nats.stream_max_bytes),
            ("stream_max_messages", "The stream's message limit (-1: none)", &m.nats.stream_max_messages),
            ("stream_full", "1 when the stream is at a limit with discard=new: publishers are refused, nothing stored is lost", &m.nats.stream_full),
            ("consumer_pending", "Messages in the stream the consumer has not delivered yet (backlog)", &m.nats.consumer_pending),
            ("consumer_ack_pending", "Messages delivered to ingestors and not yet acknowledged", &m.nats.consumer_ack_pending),
            ("stream_replicas_current", "Replicas of the stream (the leader included) that are current", &m.nats.stream_replicas_current),
            ("stream_leader", "1 while the stream has a leader (without one, publishes are refused)", &m.nats.stream_leader),
        ] {
            n.register(name, help, metric.clone());
        }
        for (name, help, metric) in [
            ("nats_reconnects", "NATS connection losses", &m.nats.reconnects),
            ("pull_errors", "Errors of the JetStream pull (missed heartbeats, consumer deleted, no leader)", &m.nats.pull_errors),
            ("ack_errors", "JetStream acknowledgements not sent (the message is redelivered; its copy stores nothing)", &m.nats.ack_errors),
            ("naks", "Messages handed back to the stream at shutdown, for another ingestor", &m.nats.naks),
            ("gateway_skipped", "QoS 1 messages in the MQTT gateway's store on subjects ingest does not read (for other MQTT subscribers): acknowledged unread", &m.nats.gateway_skipped),
        ] {
            n.register(name, help, metric.clone());
        }
        m
    }
}
