//! Quarterly reports (list, download) and measured savings.

use std::sync::Arc;

use crate::extract::{P, Q};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use estatemon_analytics::report::{store, Quarter};
use serde::Deserialize;

use crate::params;
use crate::{ApiError, ApiResult, AppState};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    pub site: Option<String>,
}

/// Stored quarterly reports, newest quarter first, with their files and
/// headline figures.
#[utoipa::path(get, path = "/api/v1/reports", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "[{id, site_id, quarter, generated_at, generated_by, files: [[name, bytes]], summary}]")))]
pub async fn list(
    State(state): State<AppState>,
    Q(q): Q<ReportQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let client = state.read_pool.get().await?;
    let reports = store::list(&client, q.site.as_deref()).await?;
    Ok(Json(
        serde_json::to_value(reports).expect("reports serialise"),
    ))
}

/// One file of a stored report: report.html, report.pdf, report.json or a
/// table's CSV.
#[utoipa::path(get, path = "/api/v1/reports/{site}/{quarter}/{file}", tag = "reports",
    params(("site" = String, Path), ("quarter" = String, Path, description = "e.g. 2026Q1"),
           ("file" = String, Path, description = "report.html, report.pdf, report.json, totals.csv …")),
    responses((status = 200, description = "the file"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn file(
    State(state): State<AppState>,
    P((site, quarter, name)): P<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    let quarter: Quarter = quarter.parse().map_err(ApiError::BadRequest)?;
    let client = state.read_pool.get().await?;
    let (content_type, body) = store::file(&client, &site, quarter, &name)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("no `{name}` in the {quarter} report of `{site}`"))
        })?;
    let disposition = format!("inline; filename=\"{site}-{quarter}-{name}\"");
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, content_type),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SavingsQuery {
    pub site: String,
    /// End of the reporting periods: measured now, for this request.
    /// Without it, the stored measurement up to the site's last local
    /// midnight is served (measured by `estatemon analytics` as each day
    /// closes, or here on demand when there is none yet).
    pub until: Option<String>,
    /// Only the fields a table needs (no daily series).
    pub summary: Option<bool>,
    /// Only the retrofits of this purpose (e.g. `public_lighting`).
    pub purpose: Option<String>,
    /// Only this retrofit (its id).
    pub retrofit: Option<String>,
}

/// Measured savings of the site's retrofits (ASHRAE 14 models, adjusted
/// baseline, savings ± 90 % uncertainty, money, CO₂, target). The header
/// `X-Estatemon-Measured-At` says when the models were fitted.
#[utoipa::path(get, path = "/api/v1/savings", tag = "reports", params(SavingsQuery),
    responses((status = 200, description = "one object per retrofit"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn savings(
    State(state): State<AppState>,
    Q(q): Q<SavingsQuery>,
) -> ApiResult<impl IntoResponse> {
    use estatemon_analytics::savings::store;
    let key = format!(
        "savings|{}|{:?}|{:?}|{:?}",
        q.site, q.purpose, q.retrofit, q.summary
    );
    let header = |stamp: String| {
        [(
            axum::http::HeaderName::from_static("x-estatemon-measured-at"),
            stamp,
        )]
    };
    let generation = state.savings_cache.generation();
    if q.until.is_none() {
        if let Some((body, Some(stamp))) = state.savings_cache.get(&key) {
            return Ok((header(stamp), Json((*body).clone())));
        }
    }
    let mut client = state.pool.get().await?;
    let (results, measured_at) = match q.until.as_deref() {
        Some(v) => {
            let until = params::instant("until", v)?;
            let results = estatemon_analytics::savings::measure_site(
                &mut client,
                &state.config.energy,
                &q.site,
                until,
            )
            .await?;
            (
                serde_json::to_value(results).expect("savings serialise"),
                chrono::Utc::now(),
            )
        }
        None => {
            let s = store::current(&mut client, &state.config.energy, &q.site).await?;
            (s.results, s.computed_at)
        }
    };
    let mut results = results;
    if let Some(rows) = results.as_array_mut() {
        let is = |r: &serde_json::Value, k: &str, v: &Option<String>| {
            v.as_deref()
                .is_none_or(|v| r.get(k).and_then(|x| x.as_str()) == Some(v))
        };
        rows.retain(|r| is(r, "purpose", &q.purpose) && is(r, "id", &q.retrofit));
    }
    if q.summary == Some(true) {
        results = store::summary(&results);
    }
    if q.until.is_none() {
        state.savings_cache.put(
            key,
            Arc::new(results.clone()),
            Some(measured_at.to_rfc3339()),
            generation,
        );
    }
    Ok((header(measured_at.to_rfc3339()), Json(results)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SavingsDailyQuery {
    pub site: String,
    /// Retrofit id from the registry.
    pub retrofit: String,
    pub until: Option<String>,
}

/// One retrofit's daily use and its baseline model (the adjusted baseline
/// after the retrofit date): the baseline-vs-actual panel.
#[utoipa::path(get, path = "/api/v1/savings/daily", tag = "reports", params(SavingsDailyQuery),
    responses((status = 200, description = "[{time, actual, adjusted_baseline, reporting}]"),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn savings_daily(
    State(state): State<AppState>,
    Q(q): Q<SavingsDailyQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let key = format!("daily|{}|{}", q.site, q.retrofit);
    let generation = state.savings_cache.generation();
    if q.until.is_none() {
        if let Some((body, _)) = state.savings_cache.get(&key) {
            return Ok(Json((*body).clone()));
        }
    }
    let mut client = state.pool.get().await?;
    let (tz, daily) = match q.until.as_deref() {
        // The stored measurement (what `/savings` serves, kept by
        // `estatemon analytics` once a day): read, not refitted.
        None => {
            let stored = estatemon_analytics::savings::store::current(
                &mut client,
                &state.config.energy,
                &q.site,
            )
            .await?;
            let found = stored
                .results
                .as_array()
                .and_then(|rows| rows.iter().find(|r| r["id"] == q.retrofit.as_str()))
                .ok_or_else(|| {
                    ApiError::NotFound(format!(
                        "site `{}` has no retrofit `{}`",
                        q.site, q.retrofit
                    ))
                })?;
            let daily: Vec<estatemon_analytics::savings::DayPoint> =
                serde_json::from_value(found["daily"].clone()).map_err(|e| {
                    ApiError::Unavailable(format!("the stored savings cannot be read: {e}"))
                })?;
            let zone: String = client
                .query_one("SELECT time_zone FROM sites WHERE site_id = $1", &[&q.site])
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?
                .get(0);
            let tz = estatemon_analytics::energy::parse_zone(&q.site, zone)?;
            (tz, daily)
        }
        // As of another time: measured for this request.
        Some(v) => {
            let until = params::instant("until", v)?;
            estatemon_analytics::energy::refresh_rollups(&mut client).await?;
            let (site, meters) = estatemon_analytics::energy::load_site(&client, &q.site).await?;
            let retrofit = estatemon_domain::schema::registry::retrofits(&client, &q.site)
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?
                .into_iter()
                .find(|r| r.id == q.retrofit)
                .ok_or_else(|| {
                    ApiError::NotFound(format!(
                        "site `{}` has no retrofit `{}`",
                        q.site, q.retrofit
                    ))
                })?;
            let s = estatemon_analytics::savings::measure_one(
                &client,
                &state.config.energy,
                &site,
                &meters,
                &retrofit,
                until,
            )
            .await?;
            (site.tz, s.daily)
        }
    };
    let rows: Vec<serde_json::Value> = daily
        .iter()
        .map(|p| {
            serde_json::json!({
                "time": estatemon_analytics::energy::midnight_in(tz, p.date),
                "actual": p.actual,
                "adjusted_baseline": p.predicted,
                "reporting": p.reporting,
            })
        })
        .collect();
    let body = serde_json::Value::Array(rows);
    if q.until.is_none() {
        state
            .savings_cache
            .put(key, Arc::new(body.clone()), None, generation);
    }
    Ok(Json(body))
}
