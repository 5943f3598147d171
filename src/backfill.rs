//! `estatemon simulate backfill --direct`: history straight into the
//! database, for histories too large to push through a broker in reasonable
//! time. Uses the ingest crate's writer (same COPY, same dedupe, same dead
//! letters), so what lands is what the MQTT path would have stored.
//!
//! The model is split by device across one generator thread per core, each
//! feeding its own writer (its own connection): a device's stream stays in
//! order, and the output is the same whatever the number of threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use estatemon_domain::config::Config;
use estatemon_domain::device::Registry;
use estatemon_domain::pseudonym::Pseudonymiser;
use estatemon_domain::schema;
use estatemon_ingest::batch::Batch;
use estatemon_ingest::metrics::Metrics;
use estatemon_ingest::store::Writer;
use estatemon_simulators::model::SiteModel;
use estatemon_simulators::truth::{DeliveryTruth, GroundTruth};

/// Simulated time: steps of `step` in `(from, to]`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub step: Duration,
}

pub struct Totals {
    pub readings: u64,
    pub events: u64,
    pub steps: u64,
}

/// Generates the window on `threads` threads, handing
/// each batch of at least `batch_readings` readings to `sink` (per thread).
/// Returns the model parts, for the ground truth.
pub fn generate(
    model: SiteModel,
    threads: usize,
    window: Window,
    batch_readings: usize,
    pseudonymiser: Arc<Pseudonymiser>,
    steps_done: Arc<AtomicU64>,
    mut sinks: Vec<tokio::sync::mpsc::Sender<Batch<()>>>,
) -> Vec<std::thread::JoinHandle<SiteModel>> {
    let parts = model.split(threads);
    sinks.truncate(parts.len());
    parts
        .into_iter()
        .zip(sinks)
        .map(|(mut part, sink)| {
            let pseudonymiser = pseudonymiser.clone();
            let steps_done = steps_done.clone();
            let Window { from, to, step } = window;
            std::thread::spawn(move || {
                let mut batch: Batch<()> = Batch::default();
                let mut t = from + step;
                while t <= to {
                    for report in part.reports(t, step) {
                        part.to_domain(
                            &report,
                            &pseudonymiser,
                            &mut batch.readings,
                            &mut batch.events,
                        );
                    }
                    steps_done.fetch_add(1, Ordering::Relaxed);
                    if batch.readings.len() >= batch_readings || t + step > to {
                        batch.seal();
                        if sink.blocking_send(std::mem::take(&mut batch)).is_err() {
                            break;
                        }
                    }
                    t += step;
                }
                part
            })
        })
        .collect()
}

pub async fn run(
    config: &Config,
    registry: &Registry,
    model: SiteModel,
    window: Window,
    threads: usize,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<(Totals, GroundTruth)> {
    let mut client = crate::prepare_database(config).await?;
    schema::registry::upsert(&mut client, registry).await?;
    let mode = schema::recorded_mode(&client).await?;
    let chunk_days = schema::recorded_chunk_days(&client).await?;
    drop(client);
    let key = config
        .ingest
        .pseudonym_key
        .clone()
        .unwrap_or_else(|| "estatemon-development-key-not-for-production".into());
    let pseudonymiser = Arc::new(Pseudonymiser::new(key.as_bytes()));
    let metrics = Arc::new(Metrics::new(
        &mut prometheus_client::registry::Registry::default(),
    ));
    let max_backoff = std::time::Duration::from_secs(config.ingest.db_retry_max_backoff_s.max(1));
    let Window { from, to, step } = window;
    let total_steps = estatemon_simulators::live::steps_between(from, to, step);
    let threads = threads.clamp(1, model.device_ids().len().max(1));
    let started = Instant::now();

    // One writer (one connection) per generator thread.
    let mut sinks = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..threads {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch<()>>(2);
        sinks.push(tx);
        let mut writer = Writer::new(config.database.clone(), mode, chunk_days);
        let metrics = metrics.clone();
        writers.push(tokio::spawn(async move {
            let (_never, shutdown) = tokio::sync::watch::channel(false);
            let (mut readings, mut events) = (0u64, 0u64);
            while let Some(batch) = rx.recv().await {
                readings += batch.readings.len() as u64;
                events += batch.events.len() as u64;
                writer
                    .write_until_committed(&batch, &metrics, max_backoff, &shutdown)
                    .await;
            }
            (readings, events)
        }));
    }
    let steps_done = Arc::new(AtomicU64::new(0));
    let generators = generate(
        model,
        threads,
        window,
        config.ingest.batch_max_readings,
        pseudonymiser,
        steps_done.clone(),
        sinks,
    );
    let mut totals = Totals {
        readings: 0,
        events: 0,
        steps: total_steps,
    };
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(200));
    let mut writers = futures_util::future::join_all(writers);
    loop {
        tokio::select! {
            done = &mut writers => {
                for w in done {
                    let (r, e) = w?;
                    totals.readings += r;
                    totals.events += e;
                }
                break;
            }
            _ = ticker.tick() => {
                progress(steps_done.load(Ordering::Relaxed) / threads as u64, total_steps);
            }
        }
    }
    progress(total_steps, total_steps);
    let parts: Vec<SiteModel> = generators
        .into_iter()
        .map(|g| g.join().expect("generator thread"))
        .collect();
    tracing::info!(
        readings = totals.readings,
        events = totals.events,
        seconds = started.elapsed().as_secs_f64(),
        "direct backfill done"
    );
    // Rollups of the backfilled hours.
    let mut client = schema::connect(&config.database).await?;
    estatemon_ingest::maintenance::round(&mut client, &config.storage, mode, chunk_days).await?;
    let truth = GroundTruth::collect(
        &parts.iter().collect::<Vec<_>>(),
        "direct",
        from,
        to,
        step.num_seconds(),
        DeliveryTruth::default(),
    );
    Ok((totals, truth))
}
