//! `estatemon transport`: the NATS JetStream stream and consumer that
//! `ingest.source = "nats"` reads (`setup`), their state (`status`), and
//! what the stream kept for a time range ingested again (`replay`).

use anyhow::Context;
use estatemon_domain::config::Config;
use estatemon_ingest::nats::{self, setup};

#[derive(clap::Subcommand)]
pub enum TransportCommand {
    /// Create the stream and the durable consumer `[nats]` describes, or
    /// compare the ones on the servers with it. Exit 0: as configured
    /// (or created); 1: they differ (each difference printed; nothing
    /// changed without --update); 5: no server answered.
    Setup {
        /// Change what differs (subjects, limits, replicas, ack wait).
        /// Lowering a limit on a live stream deletes what no longer fits.
        #[arg(long)]
        update: bool,
    },
    /// The stream's messages, bytes and limits, its leader and replicas,
    /// and the consumer's backlog and unacknowledged messages.
    Status,
    /// Ingest again what the stream kept, published from --from (to --to,
    /// or up to now): after a database restore, or once a mapping is fixed
    /// for messages that went to dead letters. Stored readings stay as
    /// they are (counted as duplicates); emergencies are not paged again.
    /// The live ingestors' consumer is not touched. Exit 0 when the range
    /// was read and committed; 1 when the replay stopped early (it says
    /// why); 5 when no server answered.
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Published at or after: RFC 3339, or a span before now (6h, 2d).
    #[arg(long, value_parser = crate::simulate::parse_when)]
    from: chrono::DateTime<chrono::Utc>,
    /// Published at or before (default: up to what the stream holds now).
    #[arg(long, value_parser = crate::simulate::parse_when)]
    to: Option<chrono::DateTime<chrono::Utc>>,
    /// Only these subjects (NATS form, wildcards allowed; repeatable);
    /// default: the stream's.
    #[arg(long = "subject", value_name = "SUBJECT")]
    subjects: Vec<String>,
}

pub async fn run(config: &Config, cmd: TransportCommand) -> anyhow::Result<()> {
    // Checked here whatever ingest.source says: this command is about NATS.
    if let Err((field, message)) = config.nats.check() {
        anyhow::bail!("{field}: {message}");
    }
    let client = nats::connect(&config.nats, "estatemon-transport", None, false)
        .await
        .map_err(|e| {
            crate::BrokerUnreachable(format!(
                "no NATS server of nats.url answered ({}): {e}",
                config.nats.redacted_servers()
            ))
        })?;
    let js = async_nats::jetstream::new(client);
    match cmd {
        TransportCommand::Replay(args) => replay(config, &js, args).await,
        TransportCommand::Setup { update } => {
            let filters = estatemon_ingest::pipeline::filters(config);
            let (mqtt, stream) = estatemon_ingest::pipeline::split_for_nats(config, filters);
            let subjects = nats::subjects(&config.nats, &stream)
                .map_err(|m| anyhow::anyhow!("nats.subjects: {m}"))?;
            let report = setup::ensure(&js, &config.nats, &subjects, update)
                .await
                .context("setting up the stream")?;
            println!(
                "stream {} ({}): {}",
                config.nats.stream,
                subjects.join(" "),
                if report.stream_created {
                    "created"
                } else {
                    "present"
                }
            );
            println!(
                "consumer {}: {}",
                config.nats.consumer,
                if report.consumer_created {
                    "created"
                } else {
                    "present"
                }
            );
            if config.nats.mqtt_gateway {
                match setup::ensure_gateway(&js, &config.nats, &config.mqtt).await {
                    Ok(created) => println!(
                        "consumer {}-mqtt of the MQTT gateway's store: {}",
                        config.nats.consumer,
                        if created { "created" } else { "present" }
                    ),
                    Err(e) => println!(
                        "warning: {e}; devices' QoS 1 messages are not kept for ingest until it exists"
                    ),
                }
            }
            let mut left_behind = 0;
            if !config.nats.mqtt_gateway {
                // A gateway consumer left from mqtt_gateway = true: its
                // interest keeps every device QoS 1 message in the
                // gateway's store, unread, until the server's storage
                // refuses devices.
                let name = format!("{}-mqtt", config.nats.consumer);
                if let Ok(store) = js
                    .get_stream(estatemon_ingest::nats::consume::GATEWAY_STREAM)
                    .await
                {
                    if store
                        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name)
                        .await
                        .is_ok()
                    {
                        if update {
                            store
                                .delete_consumer(&name)
                                .await
                                .context("deleting the gateway consumer")?;
                            println!("consumer {name} of the MQTT gateway's store: deleted (nats.mqtt_gateway = false)");
                        } else {
                            println!(
                                "differs: consumer {name} of the MQTT gateway's store remains with nats.mqtt_gateway = false: \
                                 it keeps every device QoS 1 message in the server's store, unread (--update deletes it)"
                            );
                            left_behind = 1;
                        }
                    }
                }
            }
            if !mqtt.is_empty() {
                println!(
                    "over an MQTT session to a node's listener (mqtt.url): {}",
                    mqtt.join(" ")
                );
            }
            for w in &report.warnings {
                println!("warning: {w}");
            }
            for d in &report.drift {
                println!("differs: {d}");
            }
            if (!report.drift.is_empty() && !report.updated) || left_behind > 0 {
                anyhow::bail!(
                    "{} difference(s) from [nats]; run with --update to change them",
                    report.drift.len() + left_behind
                );
            }
            if report.updated {
                println!("updated to match [nats]");
            }
            Ok(())
        }
        TransportCommand::Status => {
            let s = setup::state(&js, &config.nats)
                .await
                .context("reading the stream")?;
            let limit = |v: i64, unit: &str| {
                if v < 0 {
                    "none".to_owned()
                } else {
                    format!("{v} {unit}")
                }
            };
            println!("stream {}", config.nats.stream);
            println!(
                "  messages   {} (limit {})",
                s.messages,
                limit(s.max_messages, "messages")
            );
            println!(
                "  size       {:.1} MiB (limit {})",
                s.bytes as f64 / (1u64 << 20) as f64,
                if s.max_bytes < 0 {
                    "none".into()
                } else {
                    format!("{:.0} MiB", s.max_bytes as f64 / (1u64 << 20) as f64)
                }
            );
            println!(
                "  full       {}",
                if s.full() {
                    "YES: publishers are refused"
                } else {
                    "no"
                }
            );
            println!(
                "  leader     {}",
                s.leader.as_deref().unwrap_or("NONE: publishes are refused")
            );
            for (name, current, offline) in &s.replicas {
                println!(
                    "  replica    {name}: {}",
                    if *offline {
                        "offline"
                    } else if *current {
                        "current"
                    } else {
                        "catching up"
                    }
                );
            }
            let readers = |waiting: usize| {
                if waiting == 0 {
                    "NONE: no ingestor is pulling".to_owned()
                } else {
                    format!("{waiting} pull requests waiting")
                }
            };
            println!("consumer {}", config.nats.consumer);
            println!("  backlog    {} messages", s.consumer_pending);
            println!("  unacked    {} messages", s.consumer_ack_pending);
            println!("  redelivered {} messages", s.consumer_redelivered);
            println!("  readers    {}", readers(s.consumer_waiting));
            if let Some(g) = &s.gateway {
                println!(
                    "consumer {}-mqtt (the MQTT gateway's store{})",
                    config.nats.consumer,
                    if config.nats.mqtt_gateway {
                        ""
                    } else {
                        "; LEFT BEHIND: nats.mqtt_gateway = false, `transport setup --update` deletes it"
                    }
                );
                println!("  backlog    {} messages", g.pending);
                println!("  unacked    {} messages", g.ack_pending);
                println!("  readers    {}", readers(g.waiting));
                println!(
                    "  store      {} messages, {:.1} MiB kept while a consumer has interest",
                    g.store_messages,
                    g.store_bytes as f64 / (1u64 << 20) as f64
                );
                if g.waiting == 0 && g.pending > 0 {
                    println!(
                        "  warning    devices' QoS 1 messages pile up in the server's store with no ingestor reading them"
                    );
                }
            }
            Ok(())
        }
    }
}

/// `transport replay`: an ingestor of the range alone, until it is read
/// and committed.
async fn replay(
    config: &Config,
    js: &async_nats::jetstream::Context,
    args: ReplayArgs,
) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    if let Some(to) = args.to {
        anyhow::ensure!(
            to >= args.from,
            "--to ({}) is before --from ({})",
            to.to_rfc3339(),
            args.from.to_rfc3339()
        );
    }
    for s in &args.subjects {
        anyhow::ensure!(
            !s.is_empty() && !s.split('.').any(str::is_empty) && !s.contains(char::is_whitespace),
            "--subject `{s}` is not a NATS subject (tokens separated by dots, no spaces)"
        );
        anyhow::ensure!(
            !s.contains(['/', '+', '#']),
            "--subject `{s}` looks like an MQTT topic filter: give the subject (`a/+/b/#` is `a.*.b.>`)"
        );
    }
    // The stream first: a clear message when it does not exist or has
    // nothing that old.
    let mut stream = js.get_stream(&config.nats.stream).await.with_context(|| {
        format!(
            "stream {} (estatemon transport setup creates it)",
            config.nats.stream
        )
    })?;
    let info = stream.info().await.context("stream info")?;
    let first_ms = (info.state.first_timestamp.unix_timestamp_nanos() / 1_000_000) as i64;
    let first = chrono::DateTime::from_timestamp_millis(first_ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| "?".into());
    println!(
        "stream {}: {} messages, the oldest published {first}",
        config.nats.stream, info.state.messages,
    );
    if info.state.messages > 0 && first_ms > args.from.timestamp_millis() {
        println!(
            "warning: the stream's oldest message was published {first}, after --from {}: nothing older is left to replay (the stream keeps messages max_age_h = {} h)",
            args.from.to_rfc3339(),
            config.nats.max_age_h
        );
    }
    let mut c = config.clone();
    // Its own /metrics on a free port: the live ingestor keeps its own.
    c.ingest.listen = "127.0.0.1:0".into();
    let window = estatemon_ingest::nats::replay::Window {
        from: args.from,
        to: args.to,
        subjects: args.subjects,
    };
    let (ingestor, progress) = estatemon_ingest::Ingestor::start_replay(c, window)
        .await
        .context("starting the replay")?;
    let bar = crate::progress::bar(
        0,
        "{spinner} replaying [{bar:30}] {pos}/{len} messages ({eta})",
    );
    let m = ingestor.metrics().clone();
    let interrupted = crate::progress::until(tokio::signal::ctrl_c(), || {
        bar.set_length(progress.pending.load(Ordering::Acquire));
        bar.set_position(progress.forwarded.load(Ordering::Acquire));
        // Done when the range is read and everything read is committed
        // and acknowledged.
        progress.finished.load(Ordering::Acquire) && m.inflight_messages.get() <= 0
    })
    .await;
    bar.finish_and_clear();
    ingestor.shutdown().await;
    if progress.started.load(Ordering::Acquire) && progress.pending.load(Ordering::Acquire) == 0 {
        println!("nothing to replay: the stream holds no message of these subjects published since --from");
    }
    let dead: u64 = estatemon_ingest::dead_letter::Reason::ALL
        .iter()
        .map(|r| {
            m.dead_letters
                .get_or_create(&estatemon_ingest::metrics::ReasonLabel { reason: r.as_str() })
                .get()
        })
        .sum();
    println!(
        "replayed {} of {} messages published from {}{}: {} readings stored, {} already stored, {} events stored, {} dead letters",
        progress.forwarded.load(Ordering::Acquire),
        progress.pending.load(Ordering::Acquire),
        args.from.to_rfc3339(),
        args.to.map(|t| format!(" to {}", t.to_rfc3339())).unwrap_or_default(),
        m.readings_stored.get(),
        m.readings_duplicate.get(),
        m.events_stored.get(),
        dead
    );
    if interrupted {
        anyhow::bail!("interrupted: what was read is stored; run the replay again for the rest");
    }
    if let Some(why) = progress.error() {
        anyhow::bail!("the replay stopped early: {why}");
    }
    Ok(())
}
