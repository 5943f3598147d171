//! `estatemon simulate --direct`: backfill straight into the database, for
//! histories too large to push through a broker in reasonable time. Uses
//! the ingest crate's writer (same COPY, same dedupe, same dead letters), so
//! what lands is what the MQTT path would have stored.

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

pub struct Totals {
    pub readings: u64,
    pub events: u64,
    pub steps: u64,
}

pub async fn run(
    config: &Config,
    registry: &Registry,
    mut model: SiteModel,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: Duration,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<Totals> {
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
    let pseudonymiser = Pseudonymiser::new(key.as_bytes());
    let mut writer = Writer::new(config.database.clone(), mode, chunk_days);
    let metrics = Metrics::new(&mut prometheus_client::registry::Registry::default());
    let (_never, shutdown) = tokio::sync::watch::channel(false);
    let max_backoff = std::time::Duration::from_secs(config.ingest.db_retry_max_backoff_s.max(1));
    let total_steps = estatemon_simulators::live::steps_between(from, to, step);
    let mut totals = Totals {
        readings: 0,
        events: 0,
        steps: 0,
    };
    let mut batch: Batch<()> = Batch::default();
    let started = Instant::now();
    let mut t = from + step;
    while t <= to {
        for report in model.reports(t, step) {
            model.to_domain(
                &report,
                &pseudonymiser,
                &mut batch.readings,
                &mut batch.events,
            );
        }
        totals.steps += 1;
        if batch.readings.len() >= config.ingest.batch_max_readings || t + step > to {
            batch.seal();
            totals.readings += batch.readings.len() as u64;
            totals.events += batch.events.len() as u64;
            writer
                .write_until_committed(&batch, &metrics, max_backoff, &shutdown)
                .await;
            batch = Batch::default();
        }
        progress(totals.steps, total_steps);
        t += step;
    }
    tracing::info!(
        readings = totals.readings,
        seconds = started.elapsed().as_secs_f64(),
        "direct backfill done"
    );
    // Rollups of the backfilled hours.
    let mut client = schema::connect(&config.database).await?;
    estatemon_ingest::maintenance::round(&mut client, &config.storage, mode, chunk_days).await?;
    Ok(totals)
}
