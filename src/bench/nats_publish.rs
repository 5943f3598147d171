//! Publishers speaking NATS itself for `bench ingest --transport
//! nats-native`: JetStream publishes to the stream, with a window of
//! acknowledgements outstanding per publisher, as a gateway or a
//! NATS-capable device would publish. The same payloads and devices as the
//! MQTT publishers (`estatemon_simulators::load`), on the subjects the
//! NATS MQTT gateway would have made of their topics. The difference it
//! measures: a message stored once (the stream), instead of the gateway's
//! store and the stream's copy.
//!
//! With `fast`, each publisher sends its messages in fast-ingest batches
//! (ADR-50, nats-server 2.14+, the stream's `allow_batched`) through
//! Synadia's `jetstream-extra`: still one message per reading, each stored
//! as it arrives, but the server acknowledges every `FLOW` messages and
//! paces the publisher, instead of one acknowledgement per message.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use estatemon_simulators::load::{pace, payload, LOAD_SITE};

/// Acknowledgements a publisher waits for at most at once.
const WINDOW: usize = 512;
/// Messages of one fast-ingest batch.
const FAST_BATCH: u64 = 1000;
/// The server acknowledges a fast batch every this many messages (at most).
const FLOW: u16 = 100;

/// Publishes `messages` single- or multi-reading messages from
/// `publishers` clients spread over `servers` (comma-separated NATS URLs),
/// at `rate` messages/s in all or as fast as acknowledgements come back.
/// Returns the time until the last acknowledgement.
#[allow(clippy::too_many_arguments)]
pub async fn publish(
    servers: &str,
    template: &str,
    publishers: usize,
    messages: u64,
    readings_per_message: usize,
    rate: Option<f64>,
    seq_offset: u64,
    fast: bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let urls: Vec<String> = servers.split(',').map(|u| u.trim().to_owned()).collect();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let url = urls[p % urls.len()].clone();
        let template = template.to_owned();
        let share =
            messages / publishers as u64 + u64::from((p as u64) < messages % publishers as u64);
        let rate = rate.map(|r| r / publishers as f64);
        tasks.push(tokio::spawn(async move {
            let subject_of = |seq: u64| -> anyhow::Result<(String, Vec<u8>)> {
                let device = seq % 500;
                let topic = template
                    .replace("{site}", LOAD_SITE)
                    .replace("{device_id}", &format!("dev-{p}-{device}"));
                let subject = estatemon_domain::mapping::subject::to_subject(&topic, false)
                    .map_err(|e| anyhow::anyhow!("topic {topic}: {e}"))?;
                Ok((
                    subject,
                    payload(device, readings_per_message, Utc::now(), seq),
                ))
            };
            if fast {
                use jetstream_extra::batch_publish_fast::FastPublishExt;
                let client = async_nats_048::ConnectOptions::new()
                    .name(format!("estatemon-bench-fast-publisher-{p}"))
                    .connect(url.as_str())
                    .await
                    .with_context(|| format!("connecting to {url}"))?;
                let js = async_nats_048::jetstream::new(client.clone());
                let t0 = Instant::now();
                let mut i = 0;
                while i < share {
                    let n = (share - i).min(FAST_BATCH);
                    let mut batch = js
                        .fast_publish()
                        .flow(FLOW)
                        .max_outstanding_acks(3)
                        .build()
                        .map_err(|e| anyhow::anyhow!("fast batch: {e}"))?;
                    for k in 0..n {
                        pace(t0, i + k, rate).await;
                        let (subject, body) =
                            subject_of(seq_offset + (i + k) * publishers as u64 + p as u64)?;
                        if k + 1 == n {
                            batch
                                .commit(subject, body.into())
                                .await
                                .map_err(|e| anyhow::anyhow!("fast batch commit: {e}"))?;
                            break;
                        }
                        batch
                            .add(subject, body.into())
                            .await
                            .map_err(|e| anyhow::anyhow!("fast batch: {e}"))?;
                    }
                    i += n;
                }
                client.flush().await.ok();
                return anyhow::Ok(());
            }
            let client = async_nats::ConnectOptions::new()
                .name(format!("estatemon-bench-publisher-{p}"))
                .connect(url.as_str())
                .await
                .with_context(|| format!("connecting to {url}"))?;
            let js = async_nats::jetstream::new(client.clone());
            let mut window = VecDeque::with_capacity(WINDOW);
            let t0 = Instant::now();
            for i in 0..share {
                pace(t0, i, rate).await;
                let (subject, body) = subject_of(seq_offset + i * publishers as u64 + p as u64)?;
                let ack = js
                    .publish(subject, body.into())
                    .await
                    .context("publishing")?;
                window.push_back(ack);
                if window.len() >= WINDOW {
                    if let Some(a) = window.pop_front() {
                        a.await.context("stream acknowledgement")?;
                    }
                }
            }
            for a in window {
                a.await.context("stream acknowledgement")?;
            }
            client.flush().await.ok();
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}
