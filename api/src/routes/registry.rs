//! Sites with their buildings, and devices (the equipment ledger): read by
//! everyone, written by admins.

use crate::extract::{P, Q};
use axum::extract::State;
use axum::{Extension, Json};
use estatemon_domain::device::{Device, Registry};
use serde::{Deserialize, Serialize};

use super::series::choice;
use crate::auth::{Actor, Role};
use crate::{ApiError, ApiResult, AppState};

#[derive(Serialize, utoipa::ToSchema)]
pub struct SiteOut {
    pub id: String,
    pub name: String,
    pub time_zone: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub floor_area_m2: Option<f64>,
    pub buildings: Vec<BuildingOut>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BuildingOut {
    pub id: String,
    pub name: String,
    pub floor_area_m2: Option<f64>,
}

/// Sites and their buildings (template variables for site and building).
#[utoipa::path(get, path = "/api/v1/sites", tag = "registry",
    responses((status = 200, body = [SiteOut]), (status = 401, body = crate::error::ErrorBody)))]
pub async fn sites(State(state): State<AppState>) -> ApiResult<Json<Vec<SiteOut>>> {
    let client = state.pool.get().await?;
    let sites = crate::query(&client,
            "SELECT site_id, name, time_zone, latitude, longitude, floor_area_m2 FROM sites ORDER BY site_id",
            &[],
        )
        .await?;
    let buildings = crate::query(
        &client,
        "SELECT site_id, building_id, name, floor_area_m2 FROM buildings ORDER BY building_id",
        &[],
    )
    .await?;
    Ok(Json(
        sites
            .iter()
            .map(|s| {
                let id: String = s.get(0);
                SiteOut {
                    buildings: buildings
                        .iter()
                        .filter(|b| b.get::<_, &str>(0) == id)
                        .map(|b| BuildingOut {
                            id: b.get(1),
                            name: b.get(2),
                            floor_area_m2: b.get(3),
                        })
                        .collect(),
                    id,
                    name: s.get(1),
                    time_zone: s.get(2),
                    latitude: s.get(3),
                    longitude: s.get(4),
                    floor_area_m2: s.get(5),
                }
            })
            .collect(),
    ))
}

/// Each filter but `site` takes one value, several comma-separated (as a
/// dashboard's multi-select sends them), or `All`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceFilter {
    pub site: Option<String>,
    pub building: Option<String>,
    pub area: Option<String>,
    pub purpose: Option<String>,
    pub kind: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeviceOut {
    pub id: String,
    pub kind: String,
    pub site: Option<String>,
    pub building: Option<String>,
    pub area: Option<String>,
    pub purpose: Option<String>,
    pub name: Option<String>,
    pub model: Option<String>,
    pub install_date: Option<chrono::NaiveDate>,
    pub maintenance_cycle: Option<String>,
    pub responsible: Option<String>,
    /// The id the device reports under, when not its own (a Shelly channel,
    /// a Sparkplug `group/node/device`).
    pub source_id: Option<String>,
    /// False for devices that published before anyone registered them.
    pub assigned: bool,
}

/// Devices, filtered by any of site, building, area, purpose, kind.
#[utoipa::path(get, path = "/api/v1/devices", tag = "registry", params(DeviceFilter),
    responses((status = 200, body = [DeviceOut])))]
pub async fn devices(
    State(state): State<AppState>,
    Q(f): Q<DeviceFilter>,
) -> ApiResult<Json<Vec<DeviceOut>>> {
    let client = state.pool.get().await?;
    let rows = crate::query(
        &client,
        "SELECT device_id, kind, site_id, building_id, area, purpose, name, model, install_date,
                    maintenance_cycle, responsible, assigned, source_id
               FROM devices
              WHERE ($1::text IS NULL OR site_id = $1)
                AND ($2::text[] IS NULL OR building_id = ANY($2))
                AND ($3::text[] IS NULL OR area = ANY($3))
                AND ($4::text[] IS NULL OR purpose = ANY($4))
                AND ($5::text[] IS NULL OR kind = ANY($5))
              ORDER BY device_id",
        &[
            &f.site,
            &choice(f.building.as_ref()),
            &choice(f.area.as_ref()),
            &choice(f.purpose.as_ref()),
            &choice(f.kind.as_ref()),
        ],
    )
    .await?;
    Ok(Json(
        rows.iter()
            .map(|r| DeviceOut {
                id: r.get(0),
                kind: r.get(1),
                site: r.get(2),
                building: r.get(3),
                area: r.get(4),
                purpose: r.get(5),
                name: r.get(6),
                model: r.get(7),
                install_date: r.get(8),
                maintenance_cycle: r.get(9),
                responsible: r.get(10),
                assigned: r.get(11),
                source_id: r.get(12),
            })
            .collect(),
    ))
}

/// Creates or replaces a device (admins). The body is a registry
/// `[[device]]` table as JSON; its site (and building) must exist.
#[utoipa::path(put, path = "/api/v1/devices/{id}", tag = "registry",
    security(("bearer" = ["admin"])),
    params(("id" = String, Path, description = "device id; must equal the body's id")),
    request_body(content = serde_json::Value, description = "a device as in the registry file: id, kind, site, building, area, purpose, name, model, install_date, maintenance_cycle, responsible, source_id"),
    responses((status = 200, body = DeviceOut), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)))]
pub async fn put_device(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    P(id): P<String>,
    body: axum::body::Bytes,
) -> ApiResult<(
    axum::Extension<crate::audit::Detail>,
    Json<serde_json::Value>,
)> {
    actor.require(Role::Admin, "change devices")?;
    let device: Device =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("device: {e}")))?;
    if device.id != id {
        return Err(ApiError::BadRequest(format!(
            "the path names `{id}` but the body `{}`",
            device.id
        )));
    }
    let mut client = state.pool.get().await?;
    let site_ok = client
        .query_opt("SELECT 1 FROM sites WHERE site_id = $1", &[&device.site])
        .await?
        .is_some();
    if !site_ok {
        return Err(ApiError::BadRequest(format!(
            "site `{}` does not exist",
            device.site
        )));
    }
    if let Some(b) = &device.building {
        let ok = client
            .query_opt(
                "SELECT 1 FROM buildings WHERE site_id = $1 AND building_id = $2",
                &[&device.site, b],
            )
            .await?
            .is_some();
        if !ok {
            return Err(ApiError::BadRequest(format!(
                "site `{}` has no building `{b}`",
                device.site
            )));
        }
    }
    let registry = Registry {
        devices: vec![device.clone()],
        ..Registry::default()
    };
    estatemon_domain::schema::registry::upsert(&mut client, &registry)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    state.ledger_cache.clear();
    state.savings_cache.clear();
    let mut out = serde_json::to_value(&device).expect("device serialises");
    // Put by an admin: assigned, as `GET /devices` will say.
    out["assigned"] = serde_json::Value::Bool(true);
    // The audit row keeps what the device became.
    let detail = crate::audit::Detail(format!("device is now {out}"));
    Ok((axum::Extension(detail), Json(out)))
}

/// Removes a device from the ledger (admins); its readings stay.
#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "registry",
    security(("bearer" = ["admin"])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)))]
pub async fn delete_device(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    P(id): P<String>,
) -> ApiResult<axum::http::StatusCode> {
    actor.require(Role::Admin, "remove devices")?;
    let client = state.pool.get().await?;
    let n = client
        .execute("DELETE FROM devices WHERE device_id = $1", &[&id])
        .await?;
    if n == 0 {
        return Err(ApiError::NotFound(format!("no device `{id}`")));
    }
    state.ledger_cache.clear();
    state.savings_cache.clear();
    Ok(axum::http::StatusCode::NO_CONTENT)
}
