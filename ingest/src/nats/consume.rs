//! The pull loop: messages from a durable JetStream consumer into the
//! pipeline, acknowledgements back after commit.
//!
//! Two sources can feed one ingestor:
//!
//! - **the stream** (`nats.stream`): what NATS clients publish, and every
//!   MQTT message the servers' gateway passes on. It keeps them for
//!   `max_age_h`.
//! - **the gateway's own store** (`$MQTT_msgs`, with `nats.mqtt_gateway`):
//!   a device's MQTT QoS 1 PUBLISH is acknowledged (PUBACK) once the NATS
//!   server has stored it there, synchronously and replicated; the copy the
//!   stream captures is not acknowledged to anyone (nats-server
//!   `mqttProcessPub`), so with no stream leader, or a full stream, it is
//!   dropped without a trace. Reading QoS 1 messages from the gateway's
//!   store through a durable consumer of our own (whose interest keeps each
//!   message until we acknowledge it) makes a device's PUBACK mean stored
//!   for us too; their stream copies (header `Nmqtt-Pub: 1`) are then
//!   acknowledged and skipped.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use chrono::Utc;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;
use crate::subscribe::{AckKind, AckToken, Budget, Delivery};

/// The gateway's stream of QoS 1 and 2 messages, and its subject prefix.
pub const GATEWAY_STREAM: &str = "$MQTT_msgs";
pub const GATEWAY_PREFIX: &str = "$MQTT.msgs.";
/// The store's own subject: the gateway consumer's one filter.
pub const GATEWAY_FILTER: &str = "$MQTT.msgs.>";
/// The gateway consumer's metadata key for when its filters last widened
/// (Unix ms): the store kept copies of the added subjects for us only
/// from then on, so it counts as the consumer's start (`Gateway::since`).
pub const FILTER_SINCE: &str = "estatemon.filter_since";
/// The header the gateway sets on what it passes on: the QoS.
pub const QOS_HEADER: &str = "Nmqtt-Pub";

/// Copies published this close after the gateway consumer's creation are
/// read from both sources (stored once). The servers' clocks must agree
/// within it (NTP).
pub const GATEWAY_MARGIN_MS: i64 = 2_000;

/// Consecutive pull errors after which the consumer is looked up (and
/// made, if it is gone) again.
const ERRORS_BEFORE_LOOKUP: u32 = 3;

/// An acknowledgement or NAK not handed to the client in this long is
/// given up (the server redelivers after `ack_wait_s`): a NATS outage must
/// not hold up shutdown.
const ACK_SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// What the stream source needs to know of the gateway consumer.
#[derive(Debug)]
pub struct Gateway {
    /// Its creation (Unix ms), `i64::MAX` while it is not pulling.
    since: AtomicI64,
    /// Its subject filters as the server has them, prefix cut.
    filters: std::sync::RwLock<Vec<String>>,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            since: AtomicI64::new(i64::MAX),
            filters: std::sync::RwLock::new(Vec::new()),
        }
    }
}

impl Gateway {
    fn forget(&self) {
        self.since.store(i64::MAX, Ordering::Release);
    }

    /// Whether the gateway consumer reads the copy on `subject` published
    /// at `published_ms`.
    fn reads(&self, subject: &str, published_ms: i64) -> bool {
        let since = self.since.load(Ordering::Acquire);
        published_ms > since.saturating_add(GATEWAY_MARGIN_MS)
            && self
                .filters
                .read()
                .map(|f| {
                    f.iter()
                        .any(|f| estatemon_domain::mapping::subject::matches(f, subject))
                })
                .unwrap_or(false)
    }
}

/// The subjects the stream captures, as the server last had them, and
/// the gateway's messages on other subjects held until the next reading.
/// The gateway source reads a QoS 1 message only on a subject the stream
/// captures (the stream source skips that message's copy,
/// [`Gateway::reads`]); a message on another subject is acknowledged
/// unread only once a reading made after it arrived still leaves it out.
/// So a subject added to the stream meanwhile (`transport setup
/// --update`) is read, not skipped by an ingestor that had not seen it.
/// (A subject removed from the stream between a message's publication
/// and that reading is skipped: its copy in the stream was skipped too.
/// Remove subjects from the stream only with its publishers stopped.)
pub struct Captured {
    stream: String,
    /// Until the first reading: ingest's own configured subjects.
    subjects: Vec<String>,
    /// Stream sequence → (received, subject with the prefix cut,
    /// message): a redelivery replaces its earlier copy.
    held: std::collections::BTreeMap<u64, (Instant, String, jetstream::Message)>,
}

/// A message held this long without a reading of the stream's subjects
/// (the stream has no leader) is read instead: a topic ingest does not
/// know becomes a dead letter, found and reprocessable, not a silent
/// acknowledgement.
const HOLD_AT_MOST: Duration = Duration::from_secs(10);

impl Captured {
    pub fn new(by: &CapturedBy) -> Captured {
        Captured {
            stream: by.stream.clone(),
            subjects: by.configured.clone(),
            held: Default::default(),
        }
    }

    fn matches(&self, subject: &str) -> bool {
        self.subjects
            .iter()
            .any(|f| estatemon_domain::mapping::subject::matches(f, subject))
    }

    fn hold(&mut self, sequence: u64, subject: String, message: jetstream::Message) {
        self.held
            .insert(sequence, (Instant::now(), subject, message));
    }

    /// Reads the stream's subjects (one request); false when the server
    /// did not answer.
    async fn read(&mut self, js: &jetstream::Context) -> bool {
        match js.get_stream(&self.stream).await {
            Ok(s) => {
                self.subjects = s.cached_info().config.subjects.clone();
                true
            }
            Err(e) => {
                tracing::warn!(stream = %self.stream, error = %e, "stream's subjects not read");
                false
            }
        }
    }

    /// Reads the subjects again and settles what is held, all of which
    /// arrived before this reading (holding and settling run in the same
    /// pull loop): the messages to read are returned, the rest
    /// acknowledged unread. With no answer, what was held longer than
    /// [`HOLD_AT_MOST`] is read.
    async fn settle(
        &mut self,
        js: &jetstream::Context,
        metrics: &Metrics,
    ) -> Vec<jetstream::Message> {
        let answered = self.read(js).await;
        let mut read = Vec::new();
        for (sequence, (received, subject, message)) in std::mem::take(&mut self.held) {
            if !answered {
                if received.elapsed() > HOLD_AT_MOST {
                    read.push(message);
                } else {
                    self.held.insert(sequence, (received, subject, message));
                }
            } else if self.matches(&subject) {
                read.push(message);
            } else {
                // Another MQTT subscriber's: our acknowledgement removes
                // only our interest in it.
                metrics.nats.gateway_skipped.inc();
                if !bounded(message.ack(), "ack of another subscriber's message").await {
                    metrics.nats.ack_errors.inc();
                }
            }
        }
        read
    }
}

/// A stream, and ingest's own subjects: what it is taken to capture until
/// the server has been asked.
#[derive(Debug, Clone)]
pub struct CapturedBy {
    pub stream: String,
    pub configured: Vec<String>,
}

/// One durable consumer to pull from.
#[derive(Debug, Clone)]
pub struct Source {
    pub stream: String,
    pub consumer: consumer::pull::Config,
    /// Cut from each subject before it is read as a topic.
    pub strip_prefix: Option<&'static str>,
    /// Read only the subjects (prefix cut) this stream captures, as the
    /// server has them ([`Captured`]); acknowledge the rest unread and
    /// count it (`gateway_skipped`). None: read everything.
    pub only_captured_by: Option<CapturedBy>,
    /// Acknowledge and skip MQTT QoS ≥ 1 copies the gateway consumer
    /// reads instead: stored after it was created, on a subject its
    /// filters (as the server has them) cover. Anything else is read
    /// here, since the gateway's store kept a message only while someone
    /// had interest in it.
    pub skip_for_gateway: Option<Arc<Gateway>>,
    /// Where the gateway source records its consumer's creation and
    /// filters while it pulls (and forgets them when it does not).
    pub gateway: Option<Arc<Gateway>>,
    /// Names the source in logs.
    pub label: &'static str,
    /// 1 while pulling from this source.
    pub gauge: prometheus_client::metrics::gauge::Gauge,
    /// A replay's range and progress: the consumer is ephemeral, made
    /// once; reading stops at the end of the range.
    pub replay: Option<(Arc<super::replay::Progress>, super::replay::Window)>,
}

/// Pulls from `source` until `shutdown`, forwarding deliveries to `tx`.
/// Messages pulled and not forwarded at shutdown are handed back (NAK) so
/// another ingestor takes them at once.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    js: jetstream::Context,
    source: Source,
    fetch_batch: usize,
    tx: mpsc::UnboundedSender<Delivery>,
    budget: Arc<Budget>,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let nm = metrics.nats.clone();
    let mut backoff = Duration::from_millis(200);
    let mut told = false;
    let mut captured = source.only_captured_by.as_ref().map(Captured::new);
    let mut settle = tokio::time::interval(Duration::from_millis(500));
    settle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    'outer: loop {
        // Not pulling: the stream reads every copy.
        if let Some(g) = &source.gateway {
            g.forget();
        }
        if *shutdown.borrow() {
            break;
        }
        if let Some((progress, _)) = &source.replay {
            if progress.started.load(Ordering::Acquire) {
                // Made anew it would start over: stop and say so.
                progress.fail(
                    "the replay's consumer was lost (a server restarted?); what was read is stored, run the replay again for the rest".into(),
                );
                break;
            }
        }
        // The consumer (the stream's is made by setup; created here too,
        // so a fresh estate needs no extra step).
        let consumer = match consumer_of(&js, &source).await {
            Ok(mut c) => {
                if let Some(g) = &source.gateway {
                    match c.info().await {
                        Ok(info) => {
                            let mut filters: Vec<String> = info
                                .config
                                .filter_subjects
                                .iter()
                                .chain(Some(&info.config.filter_subject).filter(|f| !f.is_empty()))
                                .map(|f| f.strip_prefix(GATEWAY_PREFIX).unwrap_or(f).to_owned())
                                .collect();
                            if filters.is_empty() {
                                filters.push(">".into());
                            }
                            if let Ok(mut w) = g.filters.write() {
                                *w = filters;
                            }
                            let created = (info.created.unix_timestamp_nanos() / 1_000_000) as i64;
                            let widened = info
                                .config
                                .metadata
                                .get(FILTER_SINCE)
                                .and_then(|v| v.parse::<i64>().ok())
                                .unwrap_or(created);
                            g.since.store(created.max(widened), Ordering::Release);
                        }
                        Err(e) => {
                            tracing::warn!(source = source.label, error = %e, "consumer info not read");
                            tokio::time::sleep(backoff).await;
                            continue;
                        }
                    }
                }
                c
            }
            Err(e) => {
                nm.pull_errors.inc();
                if let Some((progress, _)) = &source.replay {
                    progress.fail(e);
                    break 'outer;
                }
                if !told {
                    tracing::warn!(source = source.label, error = %e, "JetStream consumer not ready; retrying (told once)");
                    if source.gateway.is_some() {
                        tracing::warn!("until the NATS MQTT gateway's store exists (an MQTT client connects), devices' QoS 1 messages are read from the stream's copies");
                    }
                    told = true;
                } else {
                    tracing::debug!(source = source.label, error = %e, "JetStream consumer not ready");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { break 'outer },
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let mut messages = match pull(&consumer, fetch_batch).await {
            Ok(m) => m,
            Err(e) => {
                nm.pull_errors.inc();
                tracing::warn!(source = source.label, error = %e, "pull not started");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Some((progress, _)) = &source.replay {
            // The end: the stream's last message now. Reading stops there
            // (or past --to), or once the consumer has nothing left to
            // deliver (messages in range may expire meanwhile).
            let last = match js.get_stream(&source.stream).await {
                Ok(mut stream) => stream
                    .info()
                    .await
                    .map(|i| i.state.last_sequence)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let info = consumer.clone().info().await.map(|i| i.num_pending);
            match (last, info) {
                (Ok(last), Ok(pending)) => {
                    progress.end_sequence.store(last, Ordering::Release);
                    progress.pending.store(pending, Ordering::Release);
                    progress.started.store(true, Ordering::Release);
                    if pending == 0 {
                        progress.finish();
                        break 'outer;
                    }
                }
                (Err(e), _) => {
                    progress.fail(format!("reading the stream: {e}"));
                    break 'outer;
                }
                (_, Err(e)) => {
                    progress.fail(format!("replay consumer: {e}"));
                    break 'outer;
                }
            }
        }
        if let Some(c) = captured.as_mut() {
            c.read(&js).await;
        }
        backoff = Duration::from_millis(200);
        let mut errors_in_a_row = 0u32;
        source.gauge.set(1);
        tracing::info!(source = source.label, stream = %source.stream, "pulling from JetStream");
        loop {
            if budget.spent() {
                // Wait for a commit instead of reading more; the server
                // holds the rest (max_ack_pending bounds what it sends).
                if !budget.wait_for_room(&mut shutdown).await {
                    break 'outer;
                }
                continue;
            }
            let next = tokio::select! {
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        hand_back(&mut messages, &metrics).await;
                        break 'outer;
                    }
                    continue;
                }
                m = messages.next() => Some(m),
                _ = settle.tick(), if captured.as_ref().is_some_and(|c| !c.held.is_empty()) => {
                    let read = match captured.as_mut() {
                        Some(c) => c.settle(&js, &metrics).await,
                        None => Vec::new(),
                    };
                    for message in read {
                        if !forward(message, &source, None, &tx, &budget, &metrics).await {
                            break 'outer;
                        }
                    }
                    continue;
                }
                // A replay with nothing coming: done when the consumer has
                // delivered everything it had.
                _ = tokio::time::sleep(Duration::from_secs(1)), if source.replay.is_some() => None,
            };
            let Some(next) = next else {
                if let Some((progress, _)) = &source.replay {
                    match consumer.clone().info().await {
                        Ok(info) if info.num_pending == 0 => {
                            progress.finish();
                            break 'outer;
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "replay consumer info not read"),
                    }
                }
                continue;
            };
            match next {
                Some(Ok(message)) => {
                    errors_in_a_row = 0;
                    // (sequence, published ms, deliveries) of a replay's message.
                    let replayed = source.replay.as_ref().map(|_| {
                        message
                            .info()
                            .map(|i| {
                                (
                                    i.stream_sequence,
                                    (i.published.unix_timestamp_nanos() / 1_000_000) as i64,
                                    i.delivered,
                                )
                            })
                            .unwrap_or((u64::MAX, i64::MAX, 1))
                    });
                    if let (Some((progress, window)), Some((seq, published, _))) =
                        (&source.replay, replayed)
                    {
                        if progress.past(window, seq, published) {
                            progress.finish();
                            break 'outer;
                        }
                    }
                    if !forward(message, &source, captured.as_mut(), &tx, &budget, &metrics).await {
                        break 'outer;
                    }
                    if let (Some((progress, _)), Some((seq, _, delivered))) =
                        (&source.replay, replayed)
                    {
                        if delivered <= 1 {
                            progress.forwarded.fetch_add(1, Ordering::AcqRel);
                        }
                        if progress.at_end(seq) {
                            progress.finish();
                            break 'outer;
                        }
                    }
                }
                Some(Err(e)) => {
                    nm.pull_errors.inc();
                    errors_in_a_row += 1;
                    use consumer::pull::MessagesErrorKind as K;
                    let unusable = matches!(
                        e.kind(),
                        K::ConsumerDeleted | K::PushBasedConsumer | K::RequestLimitExceeded
                    );
                    if unusable || errors_in_a_row >= ERRORS_BEFORE_LOOKUP {
                        // Gone, refused, or silent (deleted while no pull
                        // was pending, a server lost): look it up again,
                        // made anew if it no longer exists.
                        tracing::error!(source = source.label, error = %e, "consumer unusable; setting it up again");
                        source.gauge.set(0);
                        if let Some(g) = &source.gateway {
                            g.forget();
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { break 'outer },
                        }
                        continue 'outer;
                    }
                    if e.kind() == K::MissingHeartbeat {
                        // The client waits on a pull the server may no
                        // longer hold (expired or dropped while a node was
                        // busy or gone) and asks for no more: without a
                        // new pull, ingest stalls until the third miss.
                        tracing::warn!(source = source.label, error = %e, "no heartbeat from the consumer; pulling again");
                        match pull(&consumer, fetch_batch).await {
                            Ok(m) => messages = m,
                            Err(e) => {
                                tracing::warn!(source = source.label, error = %e, "pull not started");
                                continue 'outer;
                            }
                        }
                        continue;
                    }
                    tracing::warn!(source = source.label, error = %e, "pull error (retried)");
                }
                None => {
                    source.gauge.set(0);
                    tracing::warn!(source = source.label, "pull ended; starting again");
                    continue 'outer;
                }
            }
        }
    }
    // Held messages go back at once rather than after ack_wait_s.
    for (_, _, m) in captured
        .map(|c| c.held.into_values().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        if !nak(&m, &metrics).await {
            break;
        }
    }
    source.gauge.set(0);
}

/// A pull that keeps asking for `fetch_batch` messages at a time, with
/// the server's heartbeat every 3 s while it has none to send.
async fn pull(
    consumer: &consumer::Consumer<consumer::pull::Config>,
    fetch_batch: usize,
) -> Result<consumer::pull::Stream, consumer::StreamError> {
    consumer
        .stream()
        .max_messages_per_batch(fetch_batch)
        .expires(Duration::from_secs(10))
        .heartbeat(Duration::from_secs(3))
        .messages()
        .await
}

async fn consumer_of(
    js: &jetstream::Context,
    source: &Source,
) -> Result<consumer::Consumer<consumer::pull::Config>, String> {
    let stream = js
        .get_stream(&source.stream)
        .await
        .map_err(|e| format!("stream {}: {e}", source.stream))?;
    let Some(name) = source.consumer.durable_name.clone() else {
        // Ephemeral (a replay's): made, never looked up.
        return stream
            .create_consumer(source.consumer.clone())
            .await
            .map_err(|e| format!("consumer: {e}"));
    };
    match stream.get_consumer(&name).await {
        Ok(c) => Ok(c),
        // Made only when it does not exist: one that could not be read
        // (a timeout, no leader) is not overwritten with this process's
        // configuration, which may be stale.
        Err(e) if e.to_string().contains("consumer not found") => stream
            .create_consumer(source.consumer.clone())
            .await
            .map_err(|e| format!("consumer {name}: {e}")),
        Err(e) => Err(format!("consumer {name}: {e}")),
    }
}

/// Forwards one message; false when the pipeline is gone.
async fn forward(
    message: jetstream::Message,
    source: &Source,
    captured: Option<&mut Captured>,
    tx: &mpsc::UnboundedSender<Delivery>,
    budget: &Budget,
    metrics: &Metrics,
) -> bool {
    // (sequence, published in Unix ms) from the reply subject, parsed once.
    let info = message.info().ok().map(|i| {
        (
            i.stream_sequence,
            (i.published.unix_timestamp_nanos() / 1_000_000) as i64,
        )
    });
    let sequence = info.map(|(seq, _)| seq).unwrap_or(0);
    let qos = message
        .headers
        .as_ref()
        .and_then(|h| h.get(QOS_HEADER))
        .map(|v| v.as_str().to_owned());
    let gateway_reads_it = source.skip_for_gateway.as_ref().is_some_and(|g| {
        qos.as_deref().is_some_and(|q| q != "0")
            && info.is_some_and(|(_, published)| g.reads(message.subject.as_str(), published))
    });
    if gateway_reads_it {
        // Read from the gateway's store, which acknowledged the device.
        if !bounded(message.ack(), "ack of a gateway copy").await {
            metrics.nats.ack_errors.inc();
        }
        return true;
    }
    let subject = message.subject.as_str();
    let subject = source
        .strip_prefix
        .and_then(|p| subject.strip_prefix(p))
        .unwrap_or(subject);
    if let Some(captured) = captured {
        if !captured.matches(subject) {
            // Decided at the next reading of the stream's subjects.
            let subject = subject.to_owned();
            captured.hold(sequence, subject, message);
            return true;
        }
    }
    let topic = estatemon_domain::mapping::subject::to_topic(subject);
    let (message, acker) = message.split();
    let payload = message.payload;
    let cost_kib = budget.charge(payload.len(), metrics);
    metrics.inflight_messages.inc();
    // A replayed message was received when the stream stored it: readings
    // whose payload carries no time get that time again, not the replay's.
    let received_at = match (&source.replay, info) {
        (Some(_), Some((_, published))) => {
            chrono::DateTime::from_timestamp_millis(published).unwrap_or_else(Utc::now)
        }
        _ => Utc::now(),
    };
    let delivery = Delivery {
        topic,
        payload,
        retained: false,
        subscription_ids: Vec::new(),
        received: Instant::now(),
        received_at,
        ack: AckToken::nats(acker, sequence, cost_kib),
    };
    tx.send(delivery).is_ok()
}

/// NAKs what the client already pulled, so another ingestor gets it now
/// rather than after `ack_wait_s`.
async fn hand_back(messages: &mut consumer::pull::Stream, metrics: &Metrics) {
    while let Some(Some(Ok(m))) = messages.next().now_or_never() {
        if !nak(&m, metrics).await {
            // The server cannot be reached: stop; it redelivers after ack_wait_s.
            break;
        }
    }
}

/// Hands `m` back to the stream (NAK) for another ingestor, counted;
/// false when the server could not be told.
async fn nak(m: &jetstream::Message, metrics: &Metrics) -> bool {
    let sent = bounded(m.ack_with(jetstream::AckKind::Nak(None)), "NAK").await;
    if sent {
        metrics.nats.naks.inc();
    }
    sent
}

/// Sends an acknowledgement (or NAK) within [`ACK_SEND_TIMEOUT`]; false
/// when it failed or the client could not take it in time (the server
/// then redelivers after `ack_wait_s`).
async fn bounded(
    send: impl std::future::Future<Output = Result<(), async_nats::Error>>,
    what: &str,
) -> bool {
    match tokio::time::timeout(ACK_SEND_TIMEOUT, send).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "{what} not sent (redelivered after ack_wait)");
            false
        }
        Err(_) => {
            tracing::debug!("{what} not handed to the client in time (redelivered after ack_wait)");
            false
        }
    }
}

/// Sends acknowledgements of committed messages until `drained`, then
/// flushes them to the server.
pub async fn acknowledge(
    client: async_nats::Client,
    mut acks: mpsc::UnboundedReceiver<Vec<AckToken>>,
    metrics: Metrics,
    mut drained: watch::Receiver<bool>,
) {
    let send = |tokens: Vec<AckToken>| {
        let metrics = metrics.clone();
        async move {
            for t in tokens {
                if let AckKind::Nats { acker, .. } = &t.kind {
                    if !bounded(acker.ack(), "ack").await {
                        metrics.nats.ack_errors.inc();
                    }
                    metrics.inflight_messages.dec();
                }
            }
        }
    };
    loop {
        tokio::select! {
            biased;
            Some(tokens) = acks.recv() => send(tokens).await,
            r = drained.changed() => {
                if r.is_err() || *drained.borrow() {
                    while let Ok(tokens) = acks.try_recv() {
                        send(tokens).await;
                    }
                    if let Err(e) = tokio::time::timeout(Duration::from_secs(2), client.flush()).await {
                        tracing::warn!(error = %e, "last acknowledgements not flushed");
                    }
                    return;
                }
            }
        }
    }
}
