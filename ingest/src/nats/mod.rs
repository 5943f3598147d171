//! The clustered transport: device messages from a JetStream stream on a
//! NATS cluster (`ingest.source = "nats"`), one job in two files:
//!
//! - [`setup`]: the stream and the durable consumer `[nats]` describes,
//!   created when missing, compared field by field when present (drift is
//!   reported, never silently changed); the stream's state as metrics.
//! - [`consume`]: the pull loop. Every ingestor pulls from the same
//!   durable consumer, so any number of them share the work and a message
//!   goes to one at a time; each message is acknowledged only after the
//!   batch that holds it committed (the same guarantee as the MQTT path:
//!   what is not acknowledged is delivered again after `ack_wait_s`, and
//!   the `(device, metric, ts)` key makes the second copy a no-op).
//!
//! Devices publish MQTT to any node's MQTT listener (the NATS server's
//! gateway turns `a/b/c` into the subject `a.b.c`, [`subject`]) or NATS
//! directly. Sparkplug and Home Assistant discovery come over ingest's MQTT
//! session to a node's gateway instead (MQTT 3.1.1, the gateway's only
//! version; [`crate::subscribe::protocol`]).
//!
//! [`subject`]: estatemon_domain::mapping::subject

pub mod consume;
pub mod replay;
pub mod setup;

/// Connects to the servers in `[nats]` (with `retry`, in the background
/// until one answers); reconnections are the client's own, with no limit.
pub async fn connect(
    config: &estatemon_domain::config::NatsConfig,
    name: &str,
    metrics: Option<crate::metrics::NatsMetrics>,
    retry: bool,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let servers: Vec<async_nats::ServerAddr> = config
        .servers()
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(std::time::Duration::from_secs(5))
        .request_timeout(Some(std::time::Duration::from_secs(10)))
        .max_reconnects(None);
    if retry {
        options = options.retry_on_initial_connect();
    }
    if let Some(m) = metrics {
        options = options.event_callback(move |event| {
            let m = m.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        m.connected.set(1);
                        tracing::info!("connected to NATS");
                    }
                    async_nats::Event::Disconnected => {
                        m.connected.set(0);
                        m.reconnects.inc();
                        tracing::warn!("NATS connection lost; reconnecting");
                    }
                    other => tracing::info!(event = %other, "NATS"),
                }
            }
        });
    }
    options.connect(servers).await
}

/// The running transport: its deliveries, where acknowledgements go, its
/// tasks.
pub struct Transport {
    pub deliveries: tokio::sync::mpsc::UnboundedReceiver<crate::subscribe::Delivery>,
    pub deliveries_tx: tokio::sync::mpsc::UnboundedSender<crate::subscribe::Delivery>,
    pub acks: tokio::sync::mpsc::UnboundedSender<Vec<crate::subscribe::AckToken>>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The subjects it reads.
    pub subjects: Vec<String>,
}

/// The stream's subjects: configured, or those of the MQTT filters ingest
/// reads over the stream.
pub fn subjects(
    config: &estatemon_domain::config::NatsConfig,
    filters: &[String],
) -> Result<Vec<String>, String> {
    if !config.subjects.is_empty() {
        return Ok(config.subjects.clone());
    }
    let mut out = Vec::new();
    for f in filters {
        // A shared-subscription prefix means nothing here: the consumer
        // is shared.
        let f = match f.strip_prefix("$share/") {
            Some(rest) => rest.split_once('/').map(|(_, f)| f).unwrap_or(rest),
            None => f.as_str(),
        };
        for s in estatemon_domain::mapping::subject::filter_subjects(f)
            .map_err(|e| format!("topic filter {f}: {e}"))?
        {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// The durable consumer of the gateway's store: every QoS 1 message the
/// gateway keeps.
pub fn gateway_consumer(
    config: &estatemon_domain::config::NatsConfig,
) -> async_nats::jetstream::consumer::pull::Config {
    let mut c = setup::consumer_config(config);
    c.durable_name = Some(format!("{}-mqtt", config.consumer));
    c.description =
        Some("estatemon ingest: devices' MQTT QoS 1 messages, acknowledged after commit".into());
    // One filter, the store's own subject, though ingest reads only the
    // stream's subjects (the rest is acknowledged unread,
    // `consume::Captured`): with
    // several filters, or one narrower wildcard, nats-server looks up
    // each next message by walking every subject in the store, which
    // took 78 % of the consumer leader's CPU with 1,000 devices (pprof,
    // nats-server 2.15.1); with the store's own subject it reads on in
    // sequence.
    c.filter_subject = consume::GATEWAY_FILTER.into();
    c
}

/// Connects, makes sure of the stream and the consumer (in the
/// background: the servers may not be up yet), and starts pulling. With
/// `replay`, reads only the replay's range, through its own ephemeral
/// consumer, and sets up nothing.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    config: &estatemon_domain::config::NatsConfig,
    mqtt: &estatemon_domain::config::MqttConfig,
    filters: &[String],
    budget: std::sync::Arc<crate::subscribe::Budget>,
    metrics: crate::metrics::Metrics,
    shutdown: tokio::sync::watch::Receiver<bool>,
    drained: tokio::sync::watch::Receiver<bool>,
    replay: Option<(std::sync::Arc<replay::Progress>, replay::Window)>,
) -> Result<Transport, crate::pipeline::IngestError> {
    let subjects = subjects(config, filters).map_err(crate::pipeline::IngestError::Transport)?;
    let client = connect(config, "estatemon-ingest", Some(metrics.nats.clone()), true)
        .await
        .map_err(|e| crate::pipeline::IngestError::Transport(e.to_string()))?;
    let js = async_nats::jetstream::new(client.clone());
    tracing::info!(stream = %config.stream, ?subjects, consumer = %config.consumer, "reading device messages from NATS JetStream");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (ack_tx, ack_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    let sources = match replay {
        Some((progress, window)) => vec![consume::Source {
            stream: config.stream.clone(),
            consumer: replay::consumer_config(config, &window),
            strip_prefix: None,
            only_captured_by: None,
            skip_for_gateway: None,
            gateway: None,
            label: "replay",
            gauge: metrics.nats.consuming.clone(),
            replay: Some((progress, window)),
        }],
        None => live_sources(
            &js, config, mqtt, &subjects, &metrics, &shutdown, &mut tasks,
        ),
    };
    for source in sources {
        tasks.push(tokio::spawn(consume::run(
            js.clone(),
            source,
            config.fetch_batch,
            tx.clone(),
            budget.clone(),
            metrics.clone(),
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(consume::acknowledge(
        client, ack_rx, metrics, drained,
    )));
    Ok(Transport {
        deliveries: rx,
        deliveries_tx: tx,
        acks: ack_tx,
        tasks,
        subjects,
    })
}

/// The live ingestors' sources: the stream's durable consumer and (with
/// `mqtt_gateway`) the gateway store's; a task that makes or checks them
/// and then watches the stream's state is pushed onto `tasks`.
fn live_sources(
    js: &async_nats::jetstream::Context,
    config: &estatemon_domain::config::NatsConfig,
    mqtt: &estatemon_domain::config::MqttConfig,
    subjects: &[String],
    metrics: &crate::metrics::Metrics,
    shutdown: &tokio::sync::watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Vec<consume::Source> {
    {
        let (js, config, subjects, mut shutdown) = (
            js.clone(),
            config.clone(),
            subjects.to_vec(),
            shutdown.clone(),
        );
        let nats_metrics = metrics.nats.clone();
        let mqtt = mqtt.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match setup::ensure(&js, &config, &subjects, false).await {
                    Ok(report) => {
                        if report.stream_created || report.consumer_created {
                            tracing::info!(stream = %config.stream, stream_created = report.stream_created, consumer_created = report.consumer_created, "JetStream stream and consumer set up");
                        }
                        for d in &report.drift {
                            tracing::warn!(drift = %d, "the stream or consumer on the servers differs from [nats] (`estatemon transport setup --update` changes it)");
                        }
                        for w in &report.warnings {
                            tracing::warn!("{w}");
                        }
                        if !config.mqtt_gateway {
                            break;
                        }
                        match setup::ensure_gateway(&js, &config, &mqtt).await {
                            Ok(created) => {
                                if created {
                                    tracing::info!("consumer of the MQTT gateway's store created");
                                }
                                break;
                            }
                            Err(e) => tracing::warn!(error = %e, "MQTT gateway's store not ready; retrying"),
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "stream not set up yet; retrying"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                    r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
                }
            }
            setup::watch(js, config, nats_metrics, std::time::Duration::from_secs(5), shutdown).await;
        }));
    }
    let gateway = std::sync::Arc::new(consume::Gateway::default());
    let mut sources = vec![consume::Source {
        stream: config.stream.clone(),
        consumer: setup::consumer_config(config),
        strip_prefix: None,
        only_captured_by: None,
        skip_for_gateway: config.mqtt_gateway.then(|| gateway.clone()),
        gateway: None,
        label: "stream",
        gauge: metrics.nats.consuming.clone(),
        replay: None,
    }];
    if config.mqtt_gateway {
        sources.push(consume::Source {
            stream: consume::GATEWAY_STREAM.into(),
            consumer: gateway_consumer(config),
            strip_prefix: Some(consume::GATEWAY_PREFIX),
            only_captured_by: Some(consume::CapturedBy {
                stream: config.stream.clone(),
                configured: subjects.to_vec(),
            }),
            skip_for_gateway: None,
            gateway: Some(gateway),
            label: "mqtt-gateway",
            gauge: metrics.nats.gateway_consuming.clone(),
            replay: None,
        });
    }
    sources
}
