//! Who is on call now and next, per team, for a Grafana table: names only
//! (contact details are personal data and never leave through here). The
//! roster file is read on each request, so an edit shows at once.

use crate::extract::Q;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use estatemon_analytics::oncall::{roster::Roster, schedule};
use serde::{Deserialize, Serialize};

use crate::{ApiError, ApiResult, AppState};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OnCallQuery {
    /// Only this site's teams (a dashboard variable's value; All: every).
    pub site: Option<String>,
    /// Only this team.
    pub team: Option<String>,
    /// RFC 3339 or epoch ms; default now.
    pub at: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OnCallRow {
    pub team: String,
    pub team_name: String,
    pub site: String,
    pub building: Option<String>,
    pub trade: String,
    /// The person's name, as they write it; none: nobody is on call.
    pub on_call: Option<String>,
    /// The layer, or `override`; `gap` when nobody is on call.
    pub source: String,
    /// When the current stretch ends (none beyond 60 days).
    pub until: Option<DateTime<Utc>>,
    pub next: Option<String>,
    pub next_from: Option<DateTime<Utc>>,
}

/// Who is on call now (or `at`) and who is next, per team of the roster.
#[utoipa::path(get, path = "/api/v1/oncall/now", tag = "on call", params(OnCallQuery),
    responses((status = 200, body = [OnCallRow]),
              (status = 400, body = crate::error::ErrorBody),
              (status = 404, description = "no roster is configured", body = crate::error::ErrorBody)))]
pub async fn now(
    State(state): State<AppState>,
    Q(q): Q<OnCallQuery>,
) -> ApiResult<Json<Vec<OnCallRow>>> {
    let at = match q.at.as_deref() {
        Some(v) => crate::params::instant("at", v)?,
        None => Utc::now(),
    };
    let path = state.config.oncall.roster.clone().ok_or_else(|| {
        ApiError::NotFound("no on-call roster is configured (oncall.roster)".into())
    })?;
    let roster = tokio::task::spawn_blocking(move || Roster::load(&path))
        .await
        .map_err(anyhow::Error::from)?
        .map_err(|e| ApiError::Unavailable(format!("the on-call roster cannot be read: {e}")))?;
    let sites = crate::routes::series::choice(q.site.as_ref());
    let name = |id: &str| roster.person(id).map_or(id.to_owned(), |p| p.name.clone());
    let mut out = Vec::new();
    for t in &roster.teams {
        if sites.as_ref().is_some_and(|s| !s.contains(&t.site))
            || q.team.as_ref().is_some_and(|id| *id != t.id)
        {
            continue;
        }
        let schedule::NowNext {
            current,
            until,
            next,
        } = schedule::now_and_next(t, &roster.holidays, at, Duration::days(60));
        out.push(OnCallRow {
            team: t.id.clone(),
            team_name: t.name.clone(),
            site: t.site.clone(),
            building: t.building.clone(),
            trade: t.trade.as_str().into(),
            on_call: current.as_ref().map(|(p, _)| name(p)),
            source: current.map_or_else(|| "gap".into(), |(_, s)| s),
            until,
            next_from: next.as_ref().map(|n| n.from),
            next: next.map(|n| name(&n.person)),
        });
    }
    Ok(Json(out))
}
