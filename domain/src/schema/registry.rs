//! Loading the registry file (sites, buildings, devices, retrofits) into the
//! database, and reading retrofits back.

use tokio_postgres::Client;

use super::SchemaError;
use crate::device::Registry;
use crate::rules::DeviceLabels;

/// The `devices` columns rules see, in the order [`labels`] reads them.
pub const LABEL_COLUMNS: &str = "device_id, kind, site_id, building_id, area, purpose";

/// A device's labels from a row that selected [`LABEL_COLUMNS`].
pub fn labels(r: &tokio_postgres::Row) -> DeviceLabels {
    DeviceLabels {
        id: r.get(0),
        kind: r.get(1),
        site: r.get(2),
        building: r.get(3),
        area: r.get(4),
        purpose: r.get(5),
    }
}

/// Upserts everything in the registry in one transaction. Devices that were
/// auto-registered as unassigned become assigned.
pub async fn upsert(client: &mut Client, registry: &Registry) -> Result<(), SchemaError> {
    let tx = client.transaction().await?;
    let zones_before = device_zones(&tx).await?;
    for site in &registry.sites {
        // A reloaded registry may change retrofits, meters or weather: the
        // stored savings are measured again.
        tx.execute(
            "DELETE FROM savings_results WHERE site_id = $1",
            &[&site.id],
        )
        .await?;
        tx.execute(
            "INSERT INTO sites (site_id, name, time_zone, latitude, longitude, floor_area_m2, weather_devices,
                                electricity_supplier)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (site_id) DO UPDATE SET name = EXCLUDED.name, time_zone = EXCLUDED.time_zone,
                 latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude,
                 floor_area_m2 = EXCLUDED.floor_area_m2,
                 weather_devices = EXCLUDED.weather_devices,
                 electricity_supplier = EXCLUDED.electricity_supplier, updated_at = now()",
            &[
                &site.id,
                &site.name,
                &site.time_zone,
                &site.latitude,
                &site.longitude,
                &site.floor_area_m2,
                &site.weather,
                &site.electricity_supplier,
            ],
        )
        .await?;
        for b in &site.buildings {
            tx.execute(
                "INSERT INTO buildings (site_id, building_id, name, floor_area_m2) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (site_id, building_id) DO UPDATE SET name = EXCLUDED.name,
                     floor_area_m2 = EXCLUDED.floor_area_m2",
                &[&site.id, &b.id, &b.name, &b.floor_area_m2],
            )
            .await?;
        }
    }
    for d in &registry.devices {
        let cycle = d.maintenance_cycle.map(|c| {
            toml::Value::try_from(c)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        });
        tx.execute(
            "INSERT INTO devices (device_id, kind, site_id, building_id, area, purpose, name, model,
                                  install_date, maintenance_cycle, responsible, source_id, class,
                                  inspection_cycle, checklist, assigned)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, true)
             ON CONFLICT (device_id) DO UPDATE SET kind = EXCLUDED.kind, site_id = EXCLUDED.site_id,
                 building_id = EXCLUDED.building_id, area = EXCLUDED.area, purpose = EXCLUDED.purpose,
                 name = EXCLUDED.name, model = EXCLUDED.model, install_date = EXCLUDED.install_date,
                 maintenance_cycle = EXCLUDED.maintenance_cycle, responsible = EXCLUDED.responsible,
                 source_id = EXCLUDED.source_id, class = EXCLUDED.class,
                 inspection_cycle = EXCLUDED.inspection_cycle, checklist = EXCLUDED.checklist,
                 assigned = true, updated_at = now()",
            &[
                &d.id,
                &d.kind.as_str(),
                &d.site,
                &d.building,
                &d.area,
                &d.purpose.as_str(),
                &d.name,
                &d.model,
                &d.install_date,
                &cycle,
                &d.responsible,
                &d.source_id,
                &d.class.map(|c| c.as_str()),
                &d.inspection_cycle.map(|c| c.to_string()),
                &serde_json::json!(d.checklist),
            ],
        )
        .await?;
    }
    for r in &registry.retrofits {
        let spec = serde_json::to_value(r).expect("a retrofit serialises");
        tx.execute(
            "INSERT INTO retrofits (site_id, retrofit_id, spec) VALUES ($1, $2, $3)
             ON CONFLICT (site_id, retrofit_id) DO UPDATE SET spec = EXCLUDED.spec, updated_at = now()",
            &[&r.site, &r.id, &spec],
        )
        .await?;
    }
    // A device that joined a site (or whose site changed time zone) has
    // its daily registers computed anew: they are local midnights.
    let moved: Vec<String> = device_zones(&tx)
        .await?
        .into_iter()
        .filter(|(id, zone)| zone.is_some() && zones_before.get(id) != Some(zone))
        .map(|(id, _)| id)
        .collect();
    if !moved.is_empty() {
        let n = super::rollups::rebuild_registers_daily(&tx, &moved).await?;
        tracing::info!(
            devices = moved.len(),
            days = n,
            "daily registers rebuilt for devices with a new site or time zone"
        );
    }
    tx.commit().await?;
    Ok(())
}

/// Each device's site time zone (None while unassigned).
async fn device_zones(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<std::collections::HashMap<String, Option<String>>, SchemaError> {
    Ok(tx
        .query(
            "SELECT d.device_id, s.time_zone FROM devices d LEFT JOIN sites s ON s.site_id = d.site_id",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// The retrofits declared for a site, oldest first.
pub async fn retrofits(
    client: &Client,
    site: &str,
) -> Result<Vec<crate::retrofit::Retrofit>, SchemaError> {
    let rows = client
        .query(
            "SELECT spec FROM retrofits WHERE site_id = $1 ORDER BY spec->>'date', retrofit_id",
            &[&site],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let spec: serde_json::Value = row.get(0);
        match serde_json::from_value(spec) {
            Ok(r) => out.push(r),
            Err(e) => {
                tracing::warn!(site, error = %e, "skipping a retrofit row that no longer parses")
            }
        }
    }
    Ok(out)
}
