//! `estatemon transport`: the NATS JetStream stream and consumer that
//! `ingest.source = "nats"` reads (`setup`), and their state (`status`).

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
                match setup::ensure_gateway(&js, &config.nats, &subjects, &config.mqtt).await {
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
            println!("consumer {}", config.nats.consumer);
            println!("  backlog    {} messages", s.consumer_pending);
            println!("  unacked    {} messages", s.consumer_ack_pending);
            println!("  redelivered {} messages", s.consumer_redelivered);
            Ok(())
        }
    }
}
