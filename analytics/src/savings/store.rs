//! Stored savings: each site's retrofits measured once its local day has
//! closed (by `estatemon analytics`) or on demand, kept in
//! `savings_results`, so that dashboards read a row instead of fitting
//! every baseline model on each refresh.

use chrono::{DateTime, NaiveDate, Utc};
use estatemon_domain::config::EnergyConfig;
use tokio_postgres::Client;

use crate::energy;

/// A site's stored measurement.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Reporting periods end at the local midnight starting this day.
    pub measured_until: NaiveDate,
    pub computed_at: DateTime<Utc>,
    /// The `RetrofitSavings` of every retrofit, as JSON.
    pub results: serde_json::Value,
}

/// The stored measurement of a site, if any.
pub async fn stored(client: &Client, site: &str) -> anyhow::Result<Option<Stored>> {
    Ok(client
        .query_opt(
            "SELECT measured_until, computed_at, results FROM savings_results WHERE site_id = $1",
            &[&site],
        )
        .await?
        .map(|r| Stored {
            measured_until: r.get(0),
            computed_at: r.get(1),
            results: r.get(2),
        }))
}

/// The site's local date now: what a fresh measurement runs up to.
pub async fn today(client: &Client, site: &str) -> anyhow::Result<NaiveDate> {
    // The site's zone alone: this is on every stored-savings request.
    let tz = client
        .query_opt("SELECT time_zone FROM sites WHERE site_id = $1", &[&site])
        .await?
        .ok_or_else(|| energy::EnergyError::UnknownSite(site.to_owned()))?
        .get(0);
    let tz = energy::parse_zone(site, tz)?;
    Ok(Utc::now().with_timezone(&tz).date_naive())
}

/// The stored measurement if it reaches the site's last local midnight,
/// else a fresh one, measured and stored now (what the savings panels
/// read).
pub async fn current(
    client: &mut Client,
    energy_config: &EnergyConfig,
    site: &str,
) -> anyhow::Result<Stored> {
    let today = today(client, site).await?;
    match stored(client, site)
        .await?
        .filter(|s| s.measured_until >= today)
    {
        Some(s) => Ok(s),
        None => refresh(client, energy_config, site).await,
    }
}

/// Measures a site's retrofits up to its last local midnight and stores
/// the result.
pub async fn refresh(
    client: &mut Client,
    energy_config: &EnergyConfig,
    site: &str,
) -> anyhow::Result<Stored> {
    let (info, _) = energy::load_site(client, site).await?;
    let day = info.local_date(Utc::now());
    let results = super::measure_site(client, energy_config, site, info.midnight(day)).await?;
    let results = serde_json::to_value(results)?;
    let computed_at = Utc::now();
    client
        .execute(
            "INSERT INTO savings_results (site_id, measured_until, computed_at, results)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (site_id) DO UPDATE SET measured_until = EXCLUDED.measured_until,
                 computed_at = EXCLUDED.computed_at, results = EXCLUDED.results",
            &[&site, &day, &computed_at, &results],
        )
        .await?;
    Ok(Stored {
        measured_until: day,
        computed_at,
        results,
    })
}

/// Refreshes every site with retrofits whose stored measurement predates
/// its local today; returns how many were measured.
pub async fn refresh_due(
    client: &mut Client,
    energy_config: &EnergyConfig,
) -> anyhow::Result<usize> {
    let sites: Vec<String> = client
        .query("SELECT DISTINCT site_id FROM retrofits ORDER BY 1", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut n = 0;
    for site in sites {
        // One site's failure (no meters yet, a bad zone) leaves the others.
        let result: anyhow::Result<bool> = async {
            let fresh = match stored(client, &site).await? {
                Some(s) => s.measured_until >= today(client, &site).await?,
                None => false,
            };
            if !fresh {
                refresh(client, energy_config, &site).await?;
            }
            Ok(!fresh)
        }
        .await;
        match result {
            Ok(true) => n += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(site, error = %format!("{e:#}"), "measuring a site's savings failed")
            }
        }
    }
    Ok(n)
}

/// The fields a savings table needs (no daily series): what
/// `GET /api/v1/savings?summary=true` serves.
pub const SUMMARY_FIELDS: &[&str] = &[
    "id",
    "name",
    "purpose",
    "area",
    "date",
    "utility",
    "unit",
    "adjusted_baseline",
    "actual",
    "savings",
    "savings_fraction",
    "uncertainty",
    "fractional_uncertainty",
    "cost_saved",
    "currency",
    "co2_kg_saved",
    "target",
    "verdict",
    "meets_target",
    "meets_guideline",
    "guideline",
    "provisional",
];

/// A result's verdict and ASHRAE 14 assessment in words, as a table shows
/// them to people: "not met", "not assessed (baseline too short)", and
/// "provisional" where the baseline is shorter than CalTRACK's year.
pub fn words(r: &serde_json::Value) -> (String, String) {
    let provisional = r["provisional"].as_bool().unwrap_or(false);
    let short = r["baseline_sufficiency"]["sufficient"].as_bool() == Some(false);
    let tail = if provisional {
        ", provisional (baseline under a year)"
    } else {
        ""
    };
    let verdict = match r["verdict"].as_str() {
        Some("met") => format!("met{tail}"),
        Some("not_met") => format!("not met{tail}"),
        Some("inconclusive") => format!("inconclusive: the ± straddles the target{tail}"),
        _ if r["target"].is_null() => "no target".to_owned(),
        _ => "not judged (no saving measured)".to_owned(),
    };
    let guideline = match r["guideline"].as_str() {
        Some("pass") => format!("pass{tail}"),
        Some("fail") => format!("fail{tail}"),
        _ if short => "not assessed (baseline too short)".to_owned(),
        _ => "not assessed (no model could be fitted)".to_owned(),
    };
    (verdict, guideline)
}

/// Each result cut to [`SUMMARY_FIELDS`], with the verdict and the
/// assessment in words (`verdict_text`, `guideline_text`).
pub fn summary(results: &serde_json::Value) -> serde_json::Value {
    let rows = results.as_array().cloned().unwrap_or_default();
    serde_json::Value::Array(
        rows.into_iter()
            .map(|r| {
                let mut out = serde_json::Map::new();
                for f in SUMMARY_FIELDS {
                    if let Some(v) = r.get(*f) {
                        out.insert((*f).to_owned(), v.clone());
                    }
                }
                // The ± as a share of the adjusted baseline, beside the
                // savings share (a table shows both as percentages).
                let share = r["uncertainty"]
                    .as_f64()
                    .zip(r["adjusted_baseline"].as_f64())
                    .filter(|(_, b)| *b > 0.0)
                    .map(|(u, b)| u / b);
                out.insert("uncertainty_fraction".into(), serde_json::json!(share));
                let (verdict, guideline) = words(&r);
                out.insert("verdict_text".into(), verdict.into());
                out.insert("guideline_text".into(), guideline.into());
                serde_json::Value::Object(out)
            })
            .collect(),
    )
}
