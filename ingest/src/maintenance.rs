//! Periodic upkeep: partitions ahead of time and retention (plain mode),
//! rollup refresh of dirty hours (both modes), and the device list the
//! batcher uses to tell registered devices from unassigned ones (so a
//! registry loaded while ingest runs is seen within a round).

use std::collections::HashMap;
use std::sync::Arc;

/// The ledger as the batcher needs it, from the database.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// device id → assigned (registered in the ledger).
    pub assigned: HashMap<String, bool>,
    /// source id (what a device reports under) → ledger id.
    pub aliases: HashMap<String, String>,
}

pub type KnownDevices = Arc<Ledger>;

use std::time::Duration;

use chrono::Utc;
use estatemon_domain::config::{DatabaseConfig, StorageConfig};
use estatemon_domain::schema::{self, partitions, rollups, StorageMode};
use tokio::sync::watch;

/// Runs until `shutdown`; errors are logged and retried next round.
pub async fn run(
    database: DatabaseConfig,
    storage: StorageConfig,
    mode: StorageMode,
    chunk_days: u32,
    known: watch::Sender<KnownDevices>,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = Duration::from_secs(storage.maintenance_interval_s.max(1));
    let mut client = None;
    loop {
        if client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            client = schema::connect(&database).await.ok();
        }
        if let Some(c) = client.as_mut() {
            if let Err(e) = round(c, &storage, mode, chunk_days).await {
                tracing::warn!(error = %e, "maintenance round failed; retrying next round");
            }
            match known_devices(c).await {
                Ok(devices) => {
                    let _ = known.send(devices);
                }
                Err(e) => tracing::warn!(error = %e, "could not refresh the device list"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            res = shutdown.changed() => if res.is_err() || *shutdown.borrow() { return },
        }
    }
}

/// One round; also called directly by tests.
pub async fn round(
    client: &mut tokio_postgres::Client,
    storage: &StorageConfig,
    mode: StorageMode,
    chunk_days: u32,
) -> Result<(), schema::SchemaError> {
    if mode == StorageMode::Plain {
        let now = Utc::now();
        let current = partitions::chunk_index(now, chunk_days);
        for i in current..=current + storage.partitions_ahead as i64 {
            partitions::ensure_chunk(client, i, chunk_days).await?;
        }
        partitions::drop_expired(client, now, storage.retention_days, chunk_days).await?;
    }
    loop {
        let n = rollups::refresh_dirty(client, mode, 500).await?;
        if n < 500 {
            break;
        }
    }
    Ok(())
}

/// The registry as the database has it now.
pub async fn known_devices(
    client: &tokio_postgres::Client,
) -> Result<KnownDevices, tokio_postgres::Error> {
    let mut ledger = Ledger::default();
    for r in client
        .query("SELECT device_id, assigned, source_id FROM devices", &[])
        .await?
    {
        let id: String = r.get(0);
        if let Some(source) = r.get::<_, Option<String>>(2) {
            ledger.aliases.insert(source, id.clone());
        }
        ledger.assigned.insert(id, r.get(1));
    }
    Ok(Arc::new(ledger))
}
