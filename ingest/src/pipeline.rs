//! Wiring: subscriber → batcher → writers → acks, plus the HTTP endpoint and
//! maintenance. [`Ingestor`] runs it in-process (tests, `estatemon demo`);
//! [`run`] runs it until SIGINT/SIGTERM (`estatemon ingest`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use estatemon_domain::config::Config;
use estatemon_domain::device::Registry as DeviceRegistry;
use estatemon_domain::pseudonym::Pseudonymiser;
use estatemon_domain::schema::{self, MigrationReport, SchemaError};
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;

use crate::batch::{Batch, NewDevice};
use crate::dead_letter::{dead_letters, Reason, Reject};
use crate::decode::{decode, Decoded};
use crate::http::{router, HealthState};
use crate::metrics::{Metrics, ModeLabel, ReasonLabel};
use crate::store::{record, Writer};
use crate::subscribe::{self, AckToken, Acker, Budget, Delivery};
use crate::topic::Topics;
use crate::validate::{validate, Limits};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Config(#[from] estatemon_domain::config::ConfigError),
    #[error("cannot listen on {addr} (ingest.listen): {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("NATS transport ([nats]): {0}")]
    Transport(String),
}

/// Used when no `ingest.pseudonym_key` is configured. Pseudonyms made with
/// it are only as secret as this source file: fine for a demo, not for a site.
const DEVELOPMENT_KEY: &[u8] = b"estatemon-development-key-not-for-production";

/// A running ingest pipeline.
pub struct Ingestor {
    pub http_addr: SocketAddr,
    pub migration: MigrationReport,
    metrics: Metrics,
    health: Arc<HealthState>,
    shutdown: watch::Sender<bool>,
    done: JoinHandle<()>,
    needs_mqtt: bool,
    needs_nats: bool,
}

impl Ingestor {
    /// Prepares the database (create, migrate, load registry) and starts.
    pub async fn start(config: Config) -> Result<Ingestor, IngestError> {
        Ingestor::start_with(config, Mode::Live).await
    }

    /// An ingestor that reads the dead letters `ids` names ([`crate::reprocess`])
    /// instead of a broker, raises no immediate alerts, and stops reading
    /// once they are handed over (`progress.finished`).
    pub async fn start_reprocess(
        mut config: Config,
        ids: Vec<i64>,
    ) -> Result<(Ingestor, Arc<crate::reprocess::Progress>), IngestError> {
        config.ingest.source = estatemon_domain::config::Source::Mqtt;
        let progress = Arc::new(crate::reprocess::Progress::default());
        let ingestor = Ingestor::start_with(config, Mode::Reprocess(progress.clone(), ids)).await?;
        Ok((ingestor, progress))
    }

    /// An ingestor that reads only a replay's range from the NATS stream
    /// ([`crate::nats::replay`]) and raises no immediate alerts; it reads
    /// nothing once the range is done (`progress.finished`).
    pub async fn start_replay(
        mut config: Config,
        window: crate::nats::replay::Window,
    ) -> Result<(Ingestor, Arc<crate::nats::replay::Progress>), IngestError> {
        config.ingest.source = estatemon_domain::config::Source::Nats;
        let progress = Arc::new(crate::nats::replay::Progress::default());
        let ingestor = Ingestor::start_with(config, Mode::Replay(progress.clone(), window)).await?;
        Ok((ingestor, progress))
    }

    async fn start_with(mut config: Config, mode: Mode) -> Result<Ingestor, IngestError> {
        // History read again: no immediate alerts, no `last_message_at`,
        // and no MQTT session (Sparkplug and discovery need the live one).
        let replaying = !matches!(mode, Mode::Live);
        if replaying {
            config.ingest.sparkplug.enabled = false;
            config.ingest.homeassistant.enabled = false;
        }
        let (replay, reprocess) = match mode {
            Mode::Live => (None, None),
            Mode::Replay(progress, window) => (Some((progress, window)), None),
            Mode::Reprocess(progress, ids) => (None, Some((progress, ids))),
        };
        let (mut client, migration) = schema::prepare(&config.database, &config.storage).await?;
        let chunk_days = schema::recorded_chunk_days(&client).await?;
        if let Some(path) = &config.registry.file {
            let registry = DeviceRegistry::load(path)?;
            schema::registry::upsert(&mut client, &registry).await?;
            tracing::info!(
                file = %path.display(),
                sites = registry.sites.len(),
                devices = registry.devices.len(),
                "registry loaded"
            );
        }
        let known = crate::maintenance::known_devices(&client)
            .await
            .map_err(SchemaError::from)?;
        let rules_seen = schema::rule_sets::latest_id(&client)
            .await
            .map_err(SchemaError::from)?;
        let (rules, rules_origin) =
            match schema::rule_sets::active(&client, config.alerts.rules_file.as_deref()).await {
                Ok(r) => r,
                Err(schema::rule_sets::LoadError::Config(e)) => return Err(e.into()),
                Err(schema::rule_sets::LoadError::Db(e)) => return Err(SchemaError::from(e).into()),
            };
        drop(client);

        let pseudonymiser = match &config.ingest.pseudonym_key {
            Some(key) if !key.is_empty() => Pseudonymiser::new(key.as_bytes()),
            _ => {
                tracing::warn!(
                    "ingest.pseudonym_key is not set: access credentials are pseudonymised with \
                     the built-in development key. Set ESTATEMON_INGEST_PSEUDONYM_KEY in production."
                );
                Pseudonymiser::new(DEVELOPMENT_KEY)
            }
        };

        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics
            .storage_mode
            .get_or_create(&ModeLabel {
                mode: migration.mode.as_str(),
            })
            .set(1);
        for reason in Reason::ALL {
            // Export every reason at zero so alerts on rate() work from the start.
            let _ = metrics.dead_letters.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (drained_tx, drained_rx) = watch::channel(false);

        let nats_source = config.ingest.source == estatemon_domain::config::Source::Nats;
        // Over NATS, an MQTT session (to a NATS node's listener) carries
        // only what needs one: Sparkplug's host STATE and per-node order,
        // Home Assistant's retained discovery configs.
        let needs_mqtt = reprocess.is_none()
            && (!nats_source
                || config.ingest.sparkplug.enabled
                || config.ingest.homeassistant.enabled);
        let health = Arc::new(HealthState {
            registry,
            metrics: metrics.clone(),
            migration: migration.clone(),
            draining: false.into(),
            needs_mqtt,
            needs_nats: nats_source,
            needs_gateway: nats_source && config.nats.mqtt_gateway,
        });
        let listener = tokio::net::TcpListener::bind(&config.ingest.listen)
            .await
            .map_err(|source| IngestError::Bind {
                addr: config.ingest.listen.clone(),
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| IngestError::Bind {
            addr: config.ingest.listen.clone(),
            source,
        })?;
        let health_handle = health.clone();
        let mut http_shutdown = drained_rx.clone();
        let http = tokio::spawn(async move {
            let _ = axum::serve(listener, router(health.clone()))
                .with_graceful_shutdown(async move {
                    let _ = http_shutdown.wait_for(|d| *d).await;
                })
                .await;
        });
        tracing::info!(%http_addr, "serving /metrics and /health");

        let topics = Topics::new(&config.mqtt.topics);
        let mappings = config.ingest.all_mappings();
        let filters = filters(&config);
        let discovery = config.ingest.homeassistant.clone();
        let sparkplug = &config.ingest.sparkplug;
        let presence = sparkplug
            .primary_host_id
            .clone()
            .filter(|_| sparkplug.enabled)
            .map(|host_id| subscribe::Presence { host_id });
        let replay_retained = if discovery.enabled {
            estatemon_domain::mapping::homeassistant::filters(&discovery.prefix).to_vec()
        } else {
            Vec::new()
        };
        let budget = Budget::new(config.ingest.max_buffered_mb * 1024);
        // Over NATS, the topics the stream carries (as MQTT filters): a
        // discovered state topic among them is not subscribed on the
        // session as well.
        let mut carried = Vec::new();
        let (filters, transport) = if nats_source {
            let (mqtt_filters, stream_filters) = split_for_nats(&config, filters);
            let transport = crate::nats::start(
                &config.nats,
                &config.mqtt,
                &stream_filters,
                budget.clone(),
                metrics.clone(),
                shutdown_rx.clone(),
                drained_rx.clone(),
                replay,
            )
            .await?;
            carried = transport
                .subjects
                .iter()
                .map(|s| estatemon_domain::mapping::subject::to_filter(s))
                .collect();
            (mqtt_filters, Some(transport))
        } else {
            (filters, None)
        };
        let subscriber = if needs_mqtt {
            tracing::info!(?filters, client_id = %config.mqtt.client_id, "subscribing");
            subscribe::start(
                &config.mqtt,
                // A NATS node's MQTT gateway speaks 3.1.1 only.
                if nats_source {
                    subscribe::Version::V311
                } else {
                    subscribe::Version::V5
                },
                filters.clone(),
                config.ingest.max_payload_bytes.saturating_mul(4),
                budget.clone(),
                metrics.clone(),
                shutdown_rx.clone(),
                drained_rx.clone(),
                presence,
                replay_retained,
            )
        } else {
            subscribe::idle(budget.clone())
        };
        let mut subscriber = subscriber;
        let mut transport_tasks = Vec::new();
        if let Some((progress, ids)) = reprocess {
            let (tx, rx) = mpsc::unbounded_channel();
            subscriber.deliveries = rx;
            transport_tasks.push(tokio::spawn(crate::reprocess::feed(
                config.database.clone(),
                ids,
                tx,
                budget.clone(),
                metrics.clone(),
                progress,
                shutdown_rx.clone(),
            )));
        }
        if let Some(t) = transport {
            // One stream of deliveries: the MQTT session's (if any) join
            // the JetStream consumer's.
            let nats_tx = t.deliveries_tx.clone();
            let mut mqtt_rx = std::mem::replace(&mut subscriber.deliveries, t.deliveries);
            transport_tasks.push(tokio::spawn(async move {
                while let Some(d) = mqtt_rx.recv().await {
                    if nats_tx.send(d).is_err() {
                        break;
                    }
                }
            }));
            drop(t.deliveries_tx);
            subscriber.acker.nats = Some(t.acks);
            transport_tasks.extend(t.tasks);
        }

        let (batch_tx, batch_rx) = mpsc::channel::<Batch<AckToken>>(config.ingest.writers);
        let batch_rx = Arc::new(Mutex::new(batch_rx));
        let immediate = crate::immediate::Immediate::new(
            Arc::new(rules),
            config.alerts.receivers(),
            metrics.emergency_rules_missing.clone(),
        );
        tracing::info!(
            rules = immediate.count(),
            from = %rules_origin,
            "immediate alert rules (entrapment, forced door, fire main) raised on the ingest path"
        );
        let rules_watch = tokio::spawn(crate::immediate::watch_rules(
            immediate.clone(),
            config.database.clone(),
            config.alerts.rules_file.clone(),
            rules_seen,
            shutdown_rx.clone(),
        ));
        // A replay's emergencies are history, not pages.
        let immediate = (!replaying).then_some(immediate);
        let mut writers = Vec::new();
        for _ in 0..config.ingest.writers {
            let writer = Writer::new(config.database.clone(), migration.mode, chunk_days)
                .with_immediate(immediate.clone())
                .replaying(replaying)
                .with_write_timeout(Duration::from_secs(config.ingest.write_timeout_s));
            writers.push(tokio::spawn(write_loop(
                writer,
                batch_rx.clone(),
                subscriber.acker.clone(),
                subscriber.budget.clone(),
                metrics.clone(),
                Duration::from_secs(config.ingest.db_retry_max_backoff_s.max(1)),
                shutdown_rx.clone(),
            )));
        }

        let (known_tx, known_updates) = watch::channel(known.clone());
        let batcher = Batcher {
            known: known.assigned.clone(),
            aliases: known.aliases.clone(),
            known_updates,
            topics,
            mappings: estatemon_domain::mapping::MappingSet::new(mappings),
            overlap_possible: filters.iter().enumerate().any(|(i, a)| {
                filters[i + 1..]
                    .iter()
                    .any(|b| estatemon_domain::mapping::topic::intersect(a, b))
            }),
            filters,
            discovered: HashMap::new(),
            carried,
            ids_supported: subscriber.ids_supported.clone(),
            recent: std::collections::VecDeque::new(),
            sparkplug: sparkplug
                .enabled
                .then(|| estatemon_domain::sparkplug::Host::new(sparkplug.clone())),
            publisher: subscriber.client.clone(),
            discovery: discovery.enabled.then_some(discovery),
            pseudonymiser,
            limits: Limits::from_config(&config.ingest, &config.storage),
            metrics: metrics.clone(),
            max_readings: config.ingest.batch_max_readings,
            max_payload: config.ingest.max_payload_bytes,
            linger: Duration::from_millis(config.ingest.batch_linger_ms),
        };
        let batcher = tokio::spawn(batcher.run(subscriber.deliveries, batch_tx));
        let maintenance = tokio::spawn(crate::maintenance::run(
            config.database.clone(),
            config.storage.clone(),
            migration.mode,
            chunk_days,
            known_tx,
            shutdown_rx.clone(),
        ));
        let subscriber_task = subscriber.task;
        let done = tokio::spawn(async move {
            let _ = batcher.await;
            for w in writers {
                let _ = w.await;
            }
            let _ = drained_tx.send(true);
            let _ = subscriber_task.await;
            for t in transport_tasks {
                let _ = t.await;
            }
            let _ = maintenance.await;
            let _ = rules_watch.await;
            let _ = http.await;
        });
        Ok(Ingestor {
            http_addr,
            migration,
            needs_mqtt,
            needs_nats: nats_source,
            metrics: metrics.clone(),
            health: health_handle,
            shutdown: shutdown_tx,
            done,
        })
    }

    /// The ingestor's own counters (those /metrics serves).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Waits until the broker has granted every subscription and (over
    /// NATS) the consumer is pulling, so messages published from now on
    /// reach this ingestor, or its session or consumer.
    pub async fn subscribed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mqtt = !self.needs_mqtt || self.metrics.mqtt_subscribed.get() > 0;
            let nats = !self.needs_nats || self.metrics.nats.consuming.get() > 0;
            if mqtt && nats {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Stops taking messages, commits and acknowledges what is in hand, and
    /// closes the MQTT session.
    pub async fn shutdown(self) {
        self.health
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        let _ = self.done.await;
    }
}

/// Where an ingestor's messages come from.
enum Mode {
    /// The broker or the NATS stream, as configured.
    Live,
    /// A time range of the NATS stream again (`transport replay`).
    Replay(
        Arc<crate::nats::replay::Progress>,
        crate::nats::replay::Window,
    ),
    /// Dead letters again (`dead-letters reprocess`).
    Reprocess(Arc<crate::reprocess::Progress>, Vec<i64>),
}

/// The MQTT topic filters ingest reads: the topic templates, the payload
/// mappings (and their availability topics), Home Assistant discovery,
/// Sparkplug; none covered by another.
pub fn filters(config: &Config) -> Vec<String> {
    let topics = Topics::new(&config.mqtt.topics);
    let mappings = config.ingest.all_mappings();
    let mut filters = topics.filters(config.mqtt.shared_group.as_deref());
    for filter in mappings
        .iter()
        .flat_map(|m| std::iter::once(m.filter()).chain(m.availability_filter()))
    {
        let f = match config.mqtt.shared_group.as_deref() {
            Some(group) => format!("$share/{group}/{filter}"),
            None => filter,
        };
        if !filters.contains(&f) {
            filters.push(f);
        }
    }
    let discovery = &config.ingest.homeassistant;
    if discovery.enabled {
        filters.extend(estatemon_domain::mapping::homeassistant::filters(
            &discovery.prefix,
        ));
    }
    if config.ingest.sparkplug.enabled {
        // Never a shared subscription: a host follows each node's
        // sequence, so one ingestor must see all of a node's messages.
        filters.push(format!("{}/#", estatemon_domain::sparkplug::NAMESPACE));
    }
    // A filter another one covers would have the broker deliver its
    // messages twice.
    estatemon_domain::mapping::topic::minimal(&filters)
}

/// Over NATS: (what stays on an MQTT session — Sparkplug, discovery
/// configs —, what the stream carries).
pub fn split_for_nats(config: &Config, filters: Vec<String>) -> (Vec<String>, Vec<String>) {
    let sparkplug = format!("{}/#", estatemon_domain::sparkplug::NAMESPACE);
    let discovery = &config.ingest.homeassistant;
    let retained: Vec<String> = if discovery.enabled {
        estatemon_domain::mapping::homeassistant::filters(&discovery.prefix).to_vec()
    } else {
        Vec::new()
    };
    filters
        .into_iter()
        .partition(|f| *f == sparkplug || retained.contains(f))
}

/// Runs until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(config: Config) -> Result<(), IngestError> {
    let ingestor = Ingestor::start(config).await?;
    wait_for_signal().await;
    tracing::info!("shutting down: committing and acknowledging messages in hand");
    ingestor.shutdown().await;
    Ok(())
}

pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

struct Batcher {
    topics: Topics,
    /// Payload mappings (profiles, `[[ingest.mapping]]`, discovered), in
    /// order, indexed by their literal topics.
    mappings: estatemon_domain::mapping::MappingSet,
    /// Our static subscriptions, in subscription-identifier order
    /// (1-based).
    filters: Vec<String>,
    /// Discovered state and availability topics and their identifiers
    /// (after the static ones).
    discovered: HashMap<String, usize>,
    /// Topics another source delivers (the NATS stream), as MQTT filters.
    carried: Vec<String>,
    /// Whether the broker takes subscription identifiers.
    ids_supported: subscribe::IdsSupported,
    /// Whether two of the static filters can match one topic (else no
    /// message can arrive twice, and the check is skipped).
    overlap_possible: bool,
    /// Recent messages (topic, payload hash, the subscription ids their
    /// copies came with, when): a copy for another of our overlapping
    /// subscriptions is handled once.
    recent: std::collections::VecDeque<(String, u64, Vec<usize>, Instant)>,
    /// The Sparkplug B host's state, when `[ingest.sparkplug]` is enabled.
    sparkplug: Option<estatemon_domain::sparkplug::Host>,
    /// Publishes rebirth commands on the ingest session (and subscribes
    /// to discovered state topics).
    publisher: subscribe::Client,
    /// Home Assistant discovery, when enabled.
    discovery: Option<estatemon_domain::mapping::homeassistant::HomeAssistantConfig>,
    pseudonymiser: Pseudonymiser,
    limits: Limits,
    /// device id → assigned (registered in the ledger).
    known: HashMap<String, bool>,
    /// source id → ledger id (`devices.source_id`).
    aliases: HashMap<String, String>,
    /// The database's view, refreshed by maintenance.
    known_updates: watch::Receiver<crate::maintenance::KnownDevices>,
    metrics: Metrics,
    max_readings: usize,
    max_payload: usize,
    linger: Duration,
}

impl Batcher {
    async fn run(
        mut self,
        mut deliveries: mpsc::UnboundedReceiver<Delivery>,
        out: mpsc::Sender<Batch<AckToken>>,
    ) {
        let mut batch: Batch<AckToken> = Batch::default();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let deadline = batch
                .opened
                .map(|o| tokio::time::Instant::from_std(o + self.linger));
            // Messages already waiting go into the batch before the linger
            // deadline is looked at: under a backlog the first message's
            // deadline has long passed, and flushing on it would commit one
            // message at a time just when throughput matters most. The
            // deadline fires as soon as nothing more is waiting.
            tokio::select! {
                biased;
                delivery = deliveries.recv() => match delivery {
                    Some(d) => {
                        self.process(d, &mut batch);
                        if batch.readings.len() >= self.max_readings {
                            Self::flush(&mut batch, &out).await;
                        }
                    }
                    None => {
                        Self::flush(&mut batch, &out).await;
                        return;
                    }
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    Self::flush(&mut batch, &out).await;
                }
                _ = tick.tick(), if self.sparkplug.is_some() => {
                    let now = chrono::Utc::now().timestamp_millis();
                    let due = self.sparkplug.as_mut().map(|h| h.due_rebirths(now)).unwrap_or_default();
                    for (group, node) in due {
                        self.rebirth(&group, &node, "a sequence gap the reorder wait did not fill");
                    }
                }
            }
        }
    }

    async fn flush(batch: &mut Batch<AckToken>, out: &mpsc::Sender<Batch<AckToken>>) {
        if batch.is_empty() {
            return;
        }
        let mut full = std::mem::take(batch);
        full.seal();
        // Blocks while every writer is busy: backpressure reaches the broker
        // through the receive maximum.
        let _ = out.send(full).await;
    }

    /// Asks a Sparkplug edge node to publish its births again.
    fn rebirth(&self, group: &str, node: &str, why: &str) {
        use estatemon_domain::sparkplug::{ncmd_topic, rebirth_command};
        let topic = ncmd_topic(group, node);
        let payload = rebirth_command(chrono::Utc::now().timestamp_millis());
        tracing::warn!(%topic, why, "asking a Sparkplug node to rebirth");
        self.metrics.sparkplug_rebirths.inc();
        if let Err(e) = self
            .publisher
            .try_publish(topic.clone(), false, false, payload)
        {
            tracing::error!(%topic, error = %e, "rebirth request not queued");
        }
    }

    /// A message on a Sparkplug B topic, when the host is enabled; gives
    /// the delivery back when the topic is not one of Sparkplug's.
    fn sparkplug(&mut self, d: Delivery, batch: &mut Batch<AckToken>) -> Option<Delivery> {
        use estatemon_domain::sparkplug::Problem;
        let Some(host) = self.sparkplug.as_mut() else {
            return Some(d);
        };
        let now = chrono::Utc::now().timestamp_millis();
        let Some(out) = host.handle(&d.topic, &d.payload, d.received_at, now) else {
            return Some(d);
        };
        self.metrics.message("sparkplug");
        if let Some((group, node)) = &out.rebirth {
            self.rebirth(group, node, "out of state");
        }
        for a in out.availability {
            // Each birth and death at its own time where it has a
            // believable one: a DDEATH forwarded late is offline since then.
            if a.at_receipt && !a.online {
                self.metrics.sparkplug_deaths_at_receipt.inc();
            }
            batch.availability.push((a.id, a.online, a.at));
        }
        let rejects = out
            .problems
            .into_iter()
            .map(|p| match p {
                Problem::Malformed(s) => Reject::new(Reason::InvalidProtobuf, s),
                Problem::OutOfState(s) => Reject::new(Reason::SparkplugOutOfState, s),
                Problem::Unmapped(s) => Reject::new(Reason::UnknownMetric, s),
                Problem::Value(s) => Reject::new(Reason::InvalidValue, s),
            })
            .collect();
        let decoded = Decoded {
            readings: out.readings,
            rejects,
            ..Decoded::default()
        };
        self.store(d, decoded, out.site, batch);
        None
    }

    /// A Home Assistant discovery config: a mapping of its state topic is
    /// added (or replaced, or removed), and the state topic subscribed.
    fn discover(
        &mut self,
        ha: &estatemon_domain::mapping::homeassistant::HomeAssistantConfig,
        d: Delivery,
        batch: &mut Batch<AckToken>,
    ) {
        use estatemon_domain::mapping::homeassistant::{discover, Discovery};
        self.metrics.message("discovery");
        let mut rejects = Vec::new();
        match discover(&ha.prefix, &d.topic, &d.payload, ha.site.as_deref()) {
            Ok(Discovery::Sensors {
                replaces,
                mappings,
                skipped,
            }) => {
                for (component, why) in skipped {
                    if why.contains("not a reading") {
                        self.metrics.mapping_outcome(&replaces, "ignored");
                    } else {
                        rejects.push(Reject::new(
                            Reason::InvalidField,
                            format!("Home Assistant discovery, component `{component}`: {why}"),
                        ));
                    }
                }
                let done = self.mappings.discovered(&replaces, mappings);
                for (entity, reader) in &done.read_elsewhere {
                    tracing::info!(%entity, mapping = %reader, "Home Assistant entity not read: its state topic is read by a configured mapping");
                    self.metrics.mapping_outcome(reader, "discovery_skipped");
                }
                for (name, topic, availability) in done.added {
                    tracing::info!(mapping = %name, %topic, "Home Assistant discovery: a sensor");
                    self.subscribe_discovered(topic);
                    if let Some(a) = availability {
                        self.subscribe_discovered(a);
                    }
                }
            }
            Ok(Discovery::Removed(name)) => self.mappings.removed(&name),
            Ok(Discovery::Ignored) => {
                self.metrics.mapping_outcome("homeassistant", "ignored");
            }
            Err(e) => rejects.push(Reject::new(
                Reason::InvalidField,
                format!("Home Assistant discovery: {e}"),
            )),
        }
        let dl = dead_letters(
            &d.topic,
            &d.payload,
            d.received_at,
            &rejects,
            &self.pseudonymiser,
            d.ack.redelivery_id(),
        );
        batch.push(Default::default(), dl, d.ack, d.received);
    }

    /// Subscribes a discovered topic under its own identifier, unless a
    /// subscription of ours already covers it (which would deliver its
    /// messages twice).
    fn subscribe_discovered(&mut self, t: String) {
        use estatemon_domain::mapping::topic::covers;
        if self
            .filters
            .iter()
            .chain(&self.carried)
            .any(|f| covers(f, &t))
        {
            return;
        }
        // Subscribed again whenever its config is read (configs are sent
        // again on every connection): a session the broker lost is
        // restored this way; an existing subscription is merely replaced.
        let next = self.filters.len() + self.discovered.len() + 1;
        let id = *self.discovered.entry(t.clone()).or_insert(next);
        let id = self
            .ids_supported
            .load(std::sync::atomic::Ordering::Acquire)
            .then_some(id);
        let client = self.publisher.clone();
        tokio::spawn(async move {
            if let Err(e) = client.subscribe(t.clone(), id, false).await {
                tracing::error!(topic = %t, error = %e, "discovered topic not subscribed");
            }
        });
    }

    /// Whether this delivery is a second copy of a message just handled,
    /// sent again for another of our overlapping subscriptions (its
    /// subscription identifiers differ from every earlier copy's).
    fn overlapping_copy(&mut self, d: &Delivery) -> bool {
        use std::hash::{Hash, Hasher};
        if d.subscription_ids.is_empty() || !self.overlap_possible {
            return false;
        }
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|(_, _, _, at)| now.duration_since(*at) > Duration::from_secs(10))
            || self.recent.len() > 4096
        {
            self.recent.pop_front();
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        d.payload.hash(&mut h);
        d.retained.hash(&mut h);
        let hash = h.finish();
        let earlier = self.recent.iter_mut().rev().find(|(t, x, ids, _)| {
            *x == hash && *t == d.topic && !ids.iter().any(|i| d.subscription_ids.contains(i))
        });
        match earlier {
            Some((_, _, ids, _)) => {
                ids.extend(&d.subscription_ids);
                true
            }
            None => {
                self.recent
                    .push_back((d.topic.clone(), hash, d.subscription_ids.clone(), now));
                false
            }
        }
    }

    fn process(&mut self, d: Delivery, batch: &mut Batch<AckToken>) {
        if self.overlapping_copy(&d) {
            self.metrics.overlapping_copies.inc();
            batch.push(Default::default(), Vec::new(), d.ack, d.received);
            return;
        }
        let Some(d) = self.sparkplug(d, batch) else {
            return;
        };
        // Cloned only for a config topic: the check alone is on every message.
        if let Some(ha) = self
            .discovery
            .as_ref()
            .filter(|h| {
                estatemon_domain::mapping::homeassistant::is_config_topic(&h.prefix, &d.topic)
            })
            .cloned()
        {
            self.discover(&ha, d, batch);
            return;
        }
        let native = self.topics.matches(&d.topic);
        let channel = native.map_or("mapped", |m| m.channel.as_str());
        if native.is_none() {
            use estatemon_domain::mapping::Routed;
            if d.payload.len() > self.max_payload {
                self.metrics.message(channel);
                self.too_large(d, batch);
                return;
            }
            match self
                .mappings
                .route(&d.topic, &d.payload, d.received_at, d.retained)
            {
                Routed::NoMapping => {
                    self.metrics.message("unknown");
                    let dl = dead_letters(
                        &d.topic,
                        &d.payload,
                        d.received_at,
                        &[Reject::new(
                            Reason::UnknownTopic,
                            "topic matches no template in mqtt.topics and no [[ingest.mapping]] \
                             (or enabled [[ingest.profile]])",
                        )],
                        &self.pseudonymiser,
                        d.ack.redelivery_id(),
                    );
                    batch.push(Default::default(), dl, d.ack, d.received);
                }
                Routed::Availability(said) => {
                    self.metrics.message("availability");
                    match said {
                        Ok((device, _site, online)) => {
                            // Marks the devices it has readings for (and
                            // their channels); registers nothing on its own.
                            batch.availability.push((device, online, d.received_at));
                            batch.push(Default::default(), Vec::new(), d.ack, d.received);
                        }
                        Err(e) => {
                            let dl = dead_letters(
                                &d.topic,
                                &d.payload,
                                d.received_at,
                                &[Reject::new(Reason::InvalidField, e.to_string())],
                                &self.pseudonymiser,
                                d.ack.redelivery_id(),
                            );
                            batch.push(Default::default(), dl, d.ack, d.received);
                        }
                    }
                }
                Routed::Ignored(mapping) => {
                    self.metrics.message(channel);
                    self.metrics.mapping_outcome(&mapping, "ignored");
                    batch.push(Default::default(), Vec::new(), d.ack, d.received);
                }
                routed @ Routed::Mapped { .. } => {
                    self.metrics.message(channel);
                    let (decoded, site) = self.mapped(routed);
                    self.store(d, decoded, site, batch);
                }
            }
            return;
        }
        self.metrics.message(channel);
        if d.payload.len() > self.max_payload {
            self.too_large(d, batch);
            return;
        }
        let m = native.expect("mapped topics returned above");
        let decoded = decode(m.channel, m.device_id, &d.payload, &self.pseudonymiser);
        let site = m.site.map(str::to_owned);
        self.store(d, decoded, site, batch);
    }

    /// A payload over `ingest.max_payload_bytes`: its first bytes kept.
    fn too_large(&self, d: Delivery, batch: &mut Batch<AckToken>) {
        let reject = Reject::new(
            Reason::PayloadTooLarge,
            format!(
                "{} bytes exceeds ingest.max_payload_bytes = {}; first bytes kept",
                d.payload.len(),
                self.max_payload
            ),
        );
        let mut dl = dead_letters(
            &d.topic,
            &d.payload,
            d.received_at,
            &[reject],
            &self.pseudonymiser,
            d.ack.redelivery_id(),
        );
        for letter in &mut dl {
            letter.payload.truncate(4096);
        }
        batch.push(Default::default(), dl, d.ack, d.received);
    }

    /// Validates a decoded message, registers the devices it names for the
    /// first time, and adds it to the batch with its dead letters.
    fn store(
        &mut self,
        d: Delivery,
        mut decoded: Decoded,
        site: Option<String>,
        batch: &mut Batch<AckToken>,
    ) {
        if self.known_updates.has_changed().unwrap_or(false) {
            let fresh = self.known_updates.borrow_and_update().clone();
            for (id, assigned) in fresh.assigned.iter() {
                self.known.insert(id.clone(), *assigned);
            }
            self.aliases.clone_from(&fresh.aliases);
        }
        if !self.aliases.is_empty() {
            let ids = decoded
                .readings
                .iter_mut()
                .map(|r| &mut r.device_id)
                .chain(decoded.events.iter_mut().map(|e| &mut e.device_id));
            for id in ids {
                if let Some(own) = self.aliases.get(id.as_str()) {
                    id.clone_from(own);
                }
            }
        }
        validate(&mut decoded, d.received_at, &self.limits);
        let dl = dead_letters(
            &d.topic,
            &d.payload,
            d.received_at,
            &decoded.rejects,
            &self.pseudonymiser,
            d.ack.redelivery_id(),
        );
        self.metrics
            .readings_received
            .inc_by(decoded.readings.len() as u64);
        // A technician's inspection is not the device speaking: it neither
        // registers an unknown id (a typo must be refused, not become a
        // device with an empty checklist) nor counts as traffic.
        let spoken = |e: &&estatemon_domain::event::Event| {
            !matches!(
                e.detail,
                estatemon_domain::event::EventDetail::Inspection(_)
            )
        };
        let mut devices: Vec<&str> = decoded
            .readings
            .iter()
            .map(|r| r.device_id.as_str())
            .chain(
                decoded
                    .events
                    .iter()
                    .filter(spoken)
                    .map(|e| e.device_id.as_str()),
            )
            .collect();
        devices.sort_unstable();
        devices.dedup();
        for device in devices {
            let useful = decoded
                .readings
                .iter()
                .filter(|r| r.device_id == device)
                .count()
                + decoded
                    .events
                    .iter()
                    .filter(spoken)
                    .filter(|e| e.device_id == device)
                    .count();
            match self.known.get(device) {
                Some(true) => {}
                Some(false) => {
                    self.metrics.unassigned_readings.inc_by(useful as u64);
                }
                None => {
                    tracing::info!(device, site = ?site, "unknown device: registering as unassigned");
                    self.known.insert(device.to_owned(), false);
                    batch.new_devices.push(NewDevice {
                        device_id: device.to_owned(),
                        site: site.clone(),
                    });
                    self.metrics.unassigned_readings.inc_by(useful as u64);
                }
            }
        }
        batch.push_from(d.ack.letter(), decoded, dl, d.ack, d.received);
    }

    /// What the mappings made of a message: every fitting mapping's
    /// readings; each field or mapping that failed a reject naming the
    /// mapping and the path; what stored nothing counted by mapping.
    fn mapped(&self, routed: estatemon_domain::mapping::Routed) -> (Decoded, Option<String>) {
        use estatemon_domain::mapping::{MappingError, MappingErrorKind as K, Routed};
        let Routed::Mapped {
            results,
            errors,
            unmet,
            retained_without_time,
        } = routed
        else {
            return (Decoded::default(), None);
        };
        let reject = |e: &MappingError| {
            let reason = match e.kind {
                K::InvalidJson => Reason::InvalidJson,
                K::MissingField => Reason::MissingField,
                K::InvalidField => Reason::InvalidField,
                K::InvalidTimestamp => Reason::InvalidTimestamp,
                K::UnknownUnit => Reason::UnknownUnit,
            };
            Reject::new(reason, e.to_string())
        };
        let applied = !results.is_empty() || !errors.is_empty();
        let mut decoded = Decoded::default();
        let mut site = None;
        for m in &retained_without_time {
            self.metrics.mapping_outcome(m, "retained_without_time");
        }
        for out in results {
            decoded.rejects.extend(out.problems.iter().map(reject));
            if let Some(why) = &out.clock_unsynced {
                self.metrics.mapping_outcome(&out.mapping, "clock_unsynced");
                decoded.rejects.push(Reject::new(
                    Reason::ClockUnsynced,
                    format!(
                        "mapping `{}`, device {}: {why} ({} reading(s) stored)",
                        out.mapping,
                        out.device_id,
                        out.readings.len()
                    ),
                ));
            }
            if out.readings.is_empty()
                && out.problems.is_empty()
                && !retained_without_time.contains(&out.mapping)
            {
                self.metrics.mapping_outcome(&out.mapping, "no_readings");
            }
            site = site.or(out.site);
            decoded.readings.extend(out.readings);
        }
        decoded.rejects.extend(errors.iter().map(reject));
        if !applied {
            decoded.rejects.push(Reject::new(
                Reason::UnknownTopic,
                format!(
                    "the topic fits mapping(s) {} but the payload meets none's `when`",
                    unmet.join(", ")
                ),
            ));
        }
        (decoded, site)
    }
}

async fn write_loop(
    mut writer: Writer,
    batches: Arc<Mutex<mpsc::Receiver<Batch<AckToken>>>>,
    acker: Acker,
    budget: Arc<Budget>,
    metrics: Metrics,
    max_backoff: Duration,
    shutdown: watch::Receiver<bool>,
) {
    // Connect before the first batch, so /health tells the truth at start.
    if writer.connect().await.is_ok() {
        metrics.db_connected.inc();
    }
    loop {
        let next = batches.lock().await.recv().await;
        let Some(batch) = next else { break };
        let Some(stored) = writer
            .write_until_committed(&batch, &metrics, max_backoff, &shutdown)
            .await
        else {
            // Not committed: not acknowledged; the broker keeps it.
            budget.release(&batch.acks);
            continue;
        };
        record(&metrics, &batch, stored);
        // Committed: the subscriber may read more, and now, only now, the
        // broker may forget these messages.
        budget.release(&batch.acks);
        metrics.buffered_kib.set(budget.used_kib() as i64);
        acker.ack(&batch.acks);
    }
    if writer.is_connected() {
        metrics.db_connected.dec();
    }
}
