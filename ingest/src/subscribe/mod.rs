//! The MQTT session: the only module that talks to the broker.
//!
//! MQTT v5 with a persistent session (`clean_start = false`, a session
//! expiry), QoS 1 subscriptions and manual acknowledgements. The broker keeps
//! every message we have not acknowledged, redelivers it after a reconnect,
//! and queues new ones while we are away.
//!
//! (3.1.1 only to a NATS node's MQTT gateway, which speaks nothing else:
//! [`protocol`].)
//!
//! v5 rather than 3.1.1 for one reason: the *receive maximum*. With 3.1.1
//! the broker decides how many unacknowledged messages it sends us
//! (Mosquitto's default is 20), and since we acknowledge only after commit,
//! that would cap throughput at 20 messages per commit. With v5 we announce
//! how many we can hold.
//!
//! The receive maximum alone does not bound our memory: Mosquitto 2.0 was
//! seen sending over 8,000 unacknowledged messages to a client that asked for
//! 1,000. So the session also keeps a [`Budget`] of buffered payload: when
//! it is spent, the event loop is not polled, TCP backpressure holds the
//! rest in the broker, and polling resumes as soon as a batch commits. (If
//! that takes longer than the keep-alive, the broker drops the connection and
//! redelivers on reconnect: slower, never lossy.)
//!
//! Every connection gets a new *epoch*, which ends the moment the connection
//! fails. Acknowledgements are handed to this task, which queues them to the
//! event loop only while connected in the message's own epoch: after a
//! reconnect, packet ids can be reused and an old ack could acknowledge a
//! different, uncommitted message. rumqttc drops acks still queued when a
//! connection fails, and this task queues none between that failure and
//! the new epoch, so no old ack can reach a new connection.
//!
//! `mqtt.url` may name several brokers (the nodes of a NATS cluster, which
//! share one store of sessions): every reconnection goes to the next one,
//! so the session outlives the node it was on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use estatemon_domain::config::MqttConfig;
use tokio::sync::{mpsc, watch};

pub mod protocol;

pub use protocol::{Client, Version};
use protocol::{Ev, EventLoop, Slim, Will};

use crate::metrics::Metrics;

/// A message as received, with what is needed to acknowledge it later.
#[derive(Debug)]
pub struct Delivery {
    pub topic: String,
    pub payload: Bytes,
    /// Delivered from the broker's retained store (at subscription).
    pub retained: bool,
    /// The identifiers of our subscriptions this copy was delivered for
    /// (each filter has its own, 1-based in subscription order); empty
    /// when the broker sends none.
    pub subscription_ids: Vec<usize>,
    pub received: Instant,
    pub received_at: DateTime<Utc>,
    pub ack: AckToken,
}

/// Identifies a message to acknowledge, and what it costs against the
/// [`Budget`].
#[derive(Debug, Clone)]
pub struct AckToken {
    pub(crate) kind: AckKind,
    pub(crate) cost_kib: u64,
}

/// How a message is acknowledged: on its MQTT connection, or to JetStream.
/// (The MQTT variant keeps the slimmed PUBLISH inline, as before NATS: no
/// allocation per message on the default path.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(crate) enum AckKind {
    /// Its packet id, in its connection's epoch.
    Mqtt { epoch: u64, publish: Slim },
    /// Its JetStream acknowledgement, and its stream sequence.
    Nats {
        acker: Arc<async_nats::jetstream::message::Acker>,
        sequence: u64,
    },
    /// A dead letter read again (`crate::reprocess`): its row, marked
    /// once committed.
    Reprocess {
        id: i64,
        progress: Arc<crate::reprocess::Progress>,
    },
}

impl std::fmt::Debug for AckKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AckKind::Mqtt { epoch, publish } => f
                .debug_struct("Mqtt")
                .field("epoch", epoch)
                .field("pkid", &publish.pkid())
                .finish(),
            AckKind::Nats { sequence, .. } => {
                f.debug_struct("Nats").field("sequence", sequence).finish()
            }
            AckKind::Reprocess { id, .. } => f.debug_struct("Reprocess").field("id", id).finish(),
        }
    }
}

impl AckToken {
    /// What stays the same when this message is delivered again: the
    /// packet id a broker keeps when it redelivers (QoS 1 and 2; `None`
    /// for QoS 0, which is never redelivered), or the JetStream stream
    /// sequence.
    pub fn redelivery_id(&self) -> Option<u64> {
        match &self.kind {
            AckKind::Mqtt { publish, .. } => {
                publish.acknowledged().then_some(u64::from(publish.pkid()))
            }
            AckKind::Nats { sequence, .. } => Some(*sequence),
            // Every letter it makes again is kept.
            AckKind::Reprocess { .. } => None,
        }
    }

    /// The dead letter this message was read back from (reprocessing).
    pub fn letter(&self) -> Option<i64> {
        match &self.kind {
            AckKind::Reprocess { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// A token acknowledged to JetStream.
    pub(crate) fn nats(
        acker: async_nats::jetstream::message::Acker,
        sequence: u64,
        cost_kib: u64,
    ) -> AckToken {
        AckToken {
            kind: AckKind::Nats {
                acker: Arc::new(acker),
                sequence,
            },
            cost_kib,
        }
    }
}

/// Payload held in the process (received, not yet committed), in KiB.
#[derive(Debug)]
pub struct Budget {
    used: AtomicU64,
    limit: u64,
    pub(crate) freed: tokio::sync::Notify,
}

impl Budget {
    pub fn new(limit_kib: u64) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicU64::new(0),
            limit: limit_kib.max(1),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// Charges a received payload (at least 1 KiB) and shows what is held
    /// in `metrics`; returns the charge, which its [`AckToken`] carries.
    pub(crate) fn charge(&self, payload_bytes: usize, metrics: &Metrics) -> u64 {
        let kib = (payload_bytes as u64).div_ceil(1024).max(1);
        self.used.fetch_add(kib, Ordering::AcqRel);
        metrics.buffered_kib.set(self.used_kib() as i64);
        kib
    }

    /// While the budget is spent: waits for a commit to free some (at
    /// most 50 ms, which covers a release between the check and the
    /// wait). False once `shutdown` says stop (or its sender is gone).
    pub(crate) async fn wait_for_room(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        tokio::select! {
            _ = tokio::time::timeout(Duration::from_millis(50), self.freed.notified()) => true,
            r = shutdown.changed() => !(r.is_err() || *shutdown.borrow()),
        }
    }

    /// Gives back what committed messages held.
    pub fn release(&self, tokens: &[AckToken]) {
        let kib: u64 = tokens.iter().map(|t| t.cost_kib).sum();
        self.used
            .fetch_sub(kib.min(self.used.load(Ordering::Acquire)), Ordering::AcqRel);
        self.freed.notify_waiters();
    }

    pub(crate) fn spent(&self) -> bool {
        self.used.load(Ordering::Acquire) >= self.limit
    }

    pub fn used_kib(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// Hands acknowledgements of committed messages to the task of their
/// transport (the MQTT session, the JetStream consumer). Never blocks.
#[derive(Clone)]
pub struct Acker {
    pub(crate) mqtt: Option<mpsc::UnboundedSender<Vec<AckToken>>>,
    pub(crate) nats: Option<mpsc::UnboundedSender<Vec<AckToken>>>,
}

impl Acker {
    pub fn ack(&self, tokens: &[AckToken]) {
        // If a transport's task is gone, its server redelivers: nothing to do.
        let (nats, mqtt): (Vec<AckToken>, Vec<AckToken>) = tokens
            .iter()
            .filter(|t| match &t.kind {
                AckKind::Reprocess { id, progress } => {
                    progress.commit(*id);
                    false
                }
                _ => true,
            })
            .cloned()
            .partition(|t| matches!(t.kind, AckKind::Nats { .. }));
        for (tokens, tx) in [(mqtt, &self.mqtt), (nats, &self.nats)] {
            if let (false, Some(tx)) = (tokens.is_empty(), tx) {
                let _ = tx.send(tokens);
            }
        }
    }
}

/// Queues acks of the current epoch to the event loop; counts the others.
fn send_acks(
    client: &Client,
    tokens: Vec<AckToken>,
    epoch: u64,
    connected: bool,
    metrics: &Metrics,
) {
    for t in tokens {
        let AckKind::Mqtt { epoch: e, publish } = &t.kind else {
            continue;
        };
        if connected && *e == epoch {
            if let Err(e) = client.try_ack(publish) {
                tracing::debug!(error = %e, "ack not queued (event loop stopped)");
            }
        } else {
            metrics.stale_acks.inc();
        }
        metrics.inflight_messages.dec();
    }
}

/// Whether the broker said it supports subscription identifiers (MQTT v5
/// CONNACK; absent means yes). Shared with the batcher, which subscribes
/// discovered topics.
pub type IdsSupported = Arc<std::sync::atomic::AtomicBool>;

/// Sparkplug's primary host `STATE` (3.0, host application section): each
/// CONNECT carries `{"online":false,"timestamp":T}` as its Last Will, with
/// T the time of that connection attempt; once connected the host publishes
/// `{"online":true,"timestamp":T}` (the same T), retained, QoS 1; before
/// an intentional disconnect, which discards the Will, it publishes the
/// Will's payload itself.
#[derive(Debug, Clone)]
pub struct Presence {
    pub host_id: String,
}

impl Presence {
    fn message(&self, online: bool, stamp: i64) -> (String, Vec<u8>) {
        estatemon_domain::sparkplug::state_message(&self.host_id, online, stamp)
    }

    fn will(&self, stamp: i64) -> Will {
        let (topic, payload) = self.message(false, stamp);
        Will { topic, payload }
    }
}

/// How long an intentional disconnect waits for the broker to acknowledge
/// the offline `STATE` before it disconnects anyway.
const OFFLINE_STATE_TIMEOUT: Duration = Duration::from_secs(2);

/// The online STATE goes out again this long after a connection (NATS
/// elects a lost node's leaders in 4–9 s).
const REPUBLISH_ONLINE_AFTER: Duration = Duration::from_secs(10);

/// A connection lost sooner than this after its CONNACK is a refusal:
/// the next attempt waits the backoff, whichever broker it goes to.
const STABLE_AFTER: Duration = Duration::from_secs(2);

/// Queues the online `STATE` of the connection stamped `stamp` (retained,
/// QoS 1); a queue that cannot take it is logged.
fn publish_online(client: &Client, p: &Presence, stamp: i64) {
    let (topic, online) = p.message(true, stamp);
    if let Err(e) = client.try_publish(topic.clone(), true, true, online) {
        tracing::error!(%topic, error = %e, "presence not published");
    }
}

/// Publishes the offline `STATE` (the Will's own payload, so its timestamp
/// is the online STATE's) and waits, at most [`OFFLINE_STATE_TIMEOUT`],
/// for the broker's PUBACK: a DISCONNECT sent earlier could reach a broker
/// that has not stored it yet. True when acknowledged.
async fn publish_offline(
    client: &Client,
    eventloop: &mut EventLoop,
    presence: &Presence,
    stamp: i64,
) -> bool {
    let (topic, offline) = presence.message(false, stamp);
    if let Err(e) = client.try_publish(topic.clone(), true, true, offline) {
        tracing::error!(%topic, error = %e, "offline STATE not queued");
        return false;
    }
    let deadline = tokio::time::sleep(OFFLINE_STATE_TIMEOUT);
    tokio::pin!(deadline);
    // Nothing else publishes at QoS 1 once the writers are done (rebirth
    // commands are QoS 0), so the first QoS 1 PUBLISH that leaves from now
    // on is this one, short of an online STATE queued by a connection made
    // in the last instant; the requests leave in order, so that one would
    // only be acknowledged first.
    let mut ours = None;
    loop {
        tokio::select! {
            _ = &mut deadline => {
                tracing::warn!(%topic, "offline STATE not acknowledged in time; disconnecting anyway");
                return false;
            }
            ev = eventloop.poll() => match ev {
                Ok(Ev::SentPublish(pkid)) if pkid != 0 && ours.is_none() => {
                    ours = Some(pkid);
                }
                Ok(Ev::PubAck { pkid, refused }) if Some(pkid) == ours => {
                    match &refused {
                        None => tracing::info!(%topic, "offline STATE published"),
                        Some(reason) => tracing::error!(%topic, %reason, "broker refused the offline STATE"),
                    }
                    return refused.is_none();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%topic, error = %e, "connection lost before the offline STATE was acknowledged");
                    return false;
                }
            }
        }
    }
}

/// A running subscription.
pub struct Subscriber {
    pub acker: Acker,
    /// Publishes on the session (Sparkplug rebirth commands).
    pub client: Client,
    pub budget: Arc<Budget>,
    pub deliveries: mpsc::UnboundedReceiver<Delivery>,
    /// Whether the broker takes subscription identifiers.
    pub ids_supported: IdsSupported,
    /// Filters whose retained messages are sent on every subscribe.
    pub replay_retained: Vec<String>,
    pub task: tokio::task::JoinHandle<()>,
}

/// One broker of `mqtt.url`.
struct Broker {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

/// Connects and forwards deliveries until `shutdown` turns true; then stops
/// forwarding (unforwarded messages stay with the broker) and disconnects
/// once `drained` turns true, so the last acknowledgements still go out.
#[allow(clippy::too_many_arguments)]
pub fn start(
    config: &MqttConfig,
    version: Version,
    filters: Vec<String>,
    max_packet: usize,
    budget: Arc<Budget>,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
    drained: watch::Receiver<bool>,
    presence: Option<Presence>,
    replay_retained: Vec<String>,
) -> Subscriber {
    // The Will's timestamp, renewed before every reconnection attempt.
    let stamp = Utc::now().timestamp_millis();
    let brokers: Vec<Broker> = config
        .endpoints()
        .expect("validated by config loading")
        .into_iter()
        .map(|e| Broker {
            host: e.host,
            port: e.port,
            credentials: e
                .username
                .map(|user| (user, e.password.unwrap_or_default())),
        })
        .collect();
    let options = protocol::Options {
        version,
        client_id: config.client_id.clone(),
        host: brokers[0].host.clone(),
        port: brokers[0].port,
        keep_alive: Duration::from_secs(config.keep_alive_s.max(5)),
        session_expiry_s: config.session_expiry_s,
        receive_maximum: config.receive_maximum,
        max_packet,
        credentials: brokers[0].credentials.clone(),
        will: presence.as_ref().map(|p| p.will(stamp)),
        // The request queue carries our acknowledgements. A writer must
        // never wait on it: this task stops polling (and so stops draining
        // the queue) while the budget is spent, and only commits free the
        // budget. flume grows the queue on demand, so a large bound costs
        // nothing up front; what is queued is bounded by the messages the
        // budget let in.
        capacity: 1 << 22,
    };
    let (client, eventloop) = protocol::new(options.clone());
    tracing::info!(
        version = version.as_str(),
        brokers = brokers.len(),
        "MQTT session"
    );
    // Unbounded on purpose: this task must never wait on the pipeline, since
    // the pipeline's acknowledgements leave through this task's event loop
    // (waiting here deadlocks once the ack queue fills). The broker bounds
    // what can be in flight to us by our receive maximum.
    let (tx, rx) = mpsc::unbounded_channel();
    let epoch = Arc::new(AtomicU64::new(0));
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let acker = Acker {
        mqtt: Some(ack_tx),
        nats: None,
    };
    let max_backoff = Duration::from_secs(config.reconnect_max_backoff_s.max(1));
    let publisher = client.clone();
    let ids_supported: IdsSupported = Arc::new(true.into());
    let task = tokio::spawn(run(
        client,
        eventloop,
        (filters, replay_retained.clone(), ids_supported.clone()),
        tx,
        ack_rx,
        epoch,
        budget.clone(),
        metrics,
        shutdown,
        drained,
        max_backoff,
        presence,
        stamp,
        (options, brokers),
    ));
    Subscriber {
        acker,
        client: publisher,
        budget,
        deliveries: rx,
        ids_supported,
        replay_retained,
        task,
    }
}

/// No MQTT session (a NATS ingestor with neither Sparkplug nor discovery):
/// a client never connected, whose publishes fail, and no deliveries.
pub fn idle(budget: Arc<Budget>) -> Subscriber {
    let (client, eventloop) = protocol::new(protocol::Options {
        version: Version::V5,
        client_id: "estatemon-idle".into(),
        host: "127.0.0.1".into(),
        port: 1,
        keep_alive: Duration::from_secs(60),
        session_expiry_s: 0,
        receive_maximum: 1,
        max_packet: 1 << 10,
        credentials: None,
        will: None,
        capacity: 16,
    });
    drop(eventloop);
    let (_tx, rx) = mpsc::unbounded_channel();
    Subscriber {
        acker: Acker {
            mqtt: None,
            nats: None,
        },
        client,
        budget,
        deliveries: rx,
        ids_supported: Arc::new(true.into()),
        replay_retained: Vec::new(),
        task: tokio::spawn(async {}),
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    client: Client,
    mut eventloop: EventLoop,
    (filters, replay_retained, ids_supported): (Vec<String>, Vec<String>, IdsSupported),
    tx: mpsc::UnboundedSender<Delivery>,
    mut acks: mpsc::UnboundedReceiver<Vec<AckToken>>,
    epoch: Arc<AtomicU64>,
    budget: Arc<Budget>,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
    mut drained: watch::Receiver<bool>,
    max_backoff: Duration,
    presence: Option<Presence>,
    mut stamp: i64,
    (mut options, brokers): (protocol::Options, Vec<Broker>),
) {
    let mut backoff = Duration::from_millis(100);
    // The broker of the current (or next) connection, in `brokers`.
    let mut at = 0usize;
    // Attempts failed since the last connection or the last wait: with
    // several brokers, each is tried once before waiting `backoff` (a
    // node that refuses at once, being down, costs no wait).
    let mut failed_in_round = 0usize;
    // When the current connection's CONNACK came: one lost sooner than
    // STABLE_AFTER waits the backoff (a broker that accepts and drops at
    // once, or two ingestors sharing a client id, must not spin).
    let mut connected_at: Option<Instant> = None;
    // The online STATE once more, this long after each connection: a NATS
    // gateway whose store of retained messages had no leader when the
    // first went out (its node was just lost) acknowledged it without
    // keeping it. Same timestamp, so edge nodes see nothing new.
    let republish = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(republish);
    let mut republish_pending = false;
    let mut tx = Some(tx);
    let mut connected = false;
    let mut granted = 0usize;
    loop {
        tokio::select! {
            biased;
            res = shutdown.changed(), if tx.is_some() => {
                if res.is_err() || *shutdown.borrow() {
                    // Closing the channel lets the batcher flush and finish.
                    tx = None;
                }
            }
            Some(tokens) = acks.recv() => {
                send_acks(&client, tokens, epoch.load(Ordering::Acquire), connected, &metrics);
            }
            res = drained.changed() => {
                if res.is_err() || *drained.borrow() {
                    // Writers are done: queue their last acks before DISCONNECT.
                    while let Ok(tokens) = acks.try_recv() {
                        send_acks(&client, tokens, epoch.load(Ordering::Acquire), connected, &metrics);
                    }
                    // A DISCONNECT discards the Will: say offline first.
                    // (Not connected: the broker has sent the Will already.)
                    if let (Some(p), true) = (&presence, connected) {
                        if !publish_offline(&client, &mut eventloop, p, stamp).await {
                            metrics.sparkplug_state_offline_failed.inc();
                        }
                    }
                    let _ = client.try_disconnect();
                    // Let the event loop send queued acks and the DISCONNECT.
                    let deadline = tokio::time::sleep(Duration::from_secs(2));
                    tokio::pin!(deadline);
                    loop {
                        tokio::select! {
                            _ = &mut deadline => break,
                            ev = eventloop.poll() => if ev.is_err() { break },
                        }
                    }
                    metrics.mqtt_connected.set(0);
                    tracing::info!("MQTT session closed");
                    return;
                }
            }
            // (Not once shutdown began: the offline STATE's wait for its
            // acknowledgement must not meet this one's.)
            () = &mut republish, if republish_pending && connected && tx.is_some() => {
                republish_pending = false;
                if let Some(p) = &presence {
                    publish_online(&client, p, stamp);
                }
            }
            // Budget spent: wait for a commit instead of reading more.
            // (The timeout covers a release between the check and the wait.)
            _ = tokio::time::timeout(Duration::from_millis(50), budget.freed.notified()),
                if budget.spent() && tx.is_some() => {}
            event = eventloop.poll(), if !budget.spent() || tx.is_none() => match event {
                Ok(Ev::ConnAck { session_present, ids_available }) => {
                    let e = epoch.fetch_add(1, Ordering::AcqRel) + 1;
                    connected = true;
                    failed_in_round = 0;
                    connected_at = Some(Instant::now());
                    metrics.mqtt_connected.set(1);
                    metrics.mqtt_subscribed.set(0);
                    granted = 0;
                    tracing::info!(
                        epoch = e,
                        session_present,
                        broker = %format!("{}:{}", options.host, options.port),
                        "connected to MQTT broker"
                    );
                    if let Some(p) = &presence {
                        // The timestamp of this connection's Will.
                        publish_online(&client, p, stamp);
                        republish.as_mut().reset(tokio::time::Instant::now() + REPUBLISH_ONLINE_AFTER);
                        republish_pending = true;
                    }
                    // A broker that does not take subscription identifiers
                    // says so in CONNACK (3.1.1 has none); sending one
                    // would be a protocol error.
                    let with_ids = ids_available;
                    ids_supported.store(with_ids, Ordering::Release);
                    if !with_ids {
                        tracing::warn!("the broker takes no subscription identifiers: a message two of our filters match may be handled twice");
                    }
                    let client = client.clone();
                    let filters = filters.clone();
                    let replay = replay_retained.clone();
                    tokio::spawn(async move {
                        for (i, f) in filters.into_iter().enumerate() {
                            let id = with_ids.then_some(i + 1);
                            if let Err(e) = client.subscribe(f.clone(), id, replay.contains(&f)).await {
                                tracing::error!(filter = %f, error = %e, "subscribe failed");
                            }
                        }
                    });
                }
                Ok(Ev::SubAck { granted: g, refused }) => {
                    granted += g;
                    for code in refused {
                        tracing::error!(%code, "broker refused a subscription");
                    }
                    if granted >= filters.len() {
                        metrics.mqtt_subscribed.set(1);
                    }
                }
                Ok(Ev::Publish(protocol::Incoming { topic, payload, retain: retained, subscription_ids, slim })) => {
                    let Some(sender) = &tx else { continue };
                    metrics.inflight_messages.inc();
                    let cost_kib = budget.charge(payload.len(), &metrics);
                    let delivery = Delivery {
                        topic,
                        payload,
                        retained,
                        subscription_ids,
                        received: Instant::now(),
                        received_at: Utc::now(),
                        ack: AckToken {
                            kind: AckKind::Mqtt {
                                epoch: epoch.load(Ordering::Acquire),
                                publish: slim,
                            },
                            cost_kib,
                        },
                    };
                    if sender.send(delivery).is_err() {
                        tx = None;
                    }
                }
                Ok(Ev::Disconnect(reason)) => {
                    tracing::warn!(%reason, "broker sent DISCONNECT");
                }
                Ok(_) => {}
                Err(e) => {
                    republish_pending = false;
                    if connected {
                        metrics.mqtt_reconnects.inc();
                        connected = false;
                        // The epoch ends with the connection: acks of its
                        // messages must not go out on the next one.
                        epoch.fetch_add(1, Ordering::AcqRel);
                    }
                    metrics.mqtt_connected.set(0);
                    metrics.mqtt_subscribed.set(0);
                    // With several brokers (a NATS cluster's nodes, which
                    // share one store of sessions), the next attempt goes
                    // to the next one.
                    let lost = format!("{}:{}", options.host, options.port);
                    if brokers.len() > 1 {
                        at = (at + 1) % brokers.len();
                        let b = &brokers[at];
                        options.host = b.host.clone();
                        options.port = b.port;
                        options.credentials = b.credentials.clone();
                        // (The Will is set below, for any reconnection.)
                        eventloop.move_to(&options);
                    }
                    failed_in_round += 1;
                    // A connection that lasted starts the backoff afresh;
                    // one dropped at once keeps doubling it.
                    let lasted = connected_at.take().map(|t| t.elapsed());
                    let brief = lasted.is_some_and(|d| d < STABLE_AFTER);
                    if lasted.is_some_and(|d| d >= STABLE_AFTER) {
                        backoff = Duration::from_millis(100);
                    }
                    let wait = if brief || failed_in_round >= brokers.len().max(1) {
                        failed_in_round = 0;
                        backoff
                    } else {
                        Duration::ZERO
                    };
                    tracing::warn!(
                        error = %e,
                        broker = %lost,
                        next = %format!("{}:{}", options.host, options.port),
                        retry_in_ms = wait.as_millis() as u64,
                        "MQTT connection lost or refused; reconnecting"
                    );
                    if let Some(p) = &presence {
                        // The next CONNECT's Will, and the online STATE
                        // after it, carry the time of that attempt (never
                        // earlier than the last: edge nodes ignore a STATE
                        // older than one they have seen).
                        stamp = Utc::now().timestamp_millis().max(stamp);
                        eventloop.set_last_will(p.will(stamp));
                    }
                    if !wait.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            res = drained.changed() => {
                                if res.is_err() || *drained.borrow() { return; }
                            }
                        }
                        backoff = (backoff * 2).min(max_backoff);
                    }
                }
            }
        }
    }
}
