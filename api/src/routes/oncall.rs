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
    let roster = current_roster(&state).await?.ok_or_else(|| {
        ApiError::NotFound(
            "no on-call roster is configured (oncall.roster, or PUT /api/v1/oncall/roster)".into(),
        )
    })?;
    let sites = crate::routes::series::choice(q.site.as_ref());
    let name = |id: &str| roster.name_of(id);
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

/// One moment of an incident (see `estatemon_analytics::oncall::timeline`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// `fired`, `paged`, `sent`, `failed`, `skipped`, `fell_through`,
    /// `unreachable`, `cancelled`, `handover`, `acknowledged`, `snoozed`,
    /// `escalated`, `resolved`.
    pub kind: String,
    /// The person's roster id and name (never a contact detail).
    pub person: Option<String>,
    pub name: Option<String>,
    /// The page (`P{id}` in the messages) and its step (1-based).
    pub page: Option<i64>,
    pub step: Option<i32>,
    pub channel: Option<String>,
    pub detail: String,
}

/// An alert's incident timeline, oldest first: when it fired, each page
/// (who, step, why), each try on each channel (delivered, or failed and
/// why), fall-throughs, hand-overs, acknowledgements, snoozes and the
/// resolution.
#[utoipa::path(get, path = "/api/v1/alerts/{id}/timeline", tag = "on call",
    params(("id" = i64, Path, description = "the alert")),
    responses((status = 200, body = [TimelineEntry]),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn timeline(
    State(state): State<AppState>,
    crate::extract::P(id): crate::extract::P<i64>,
) -> ApiResult<Json<Vec<TimelineEntry>>> {
    let roster = current_roster(&state).await.ok().flatten();
    let client = state.pool.get().await?;
    let rows = estatemon_analytics::oncall::timeline::of(&**client, id, roster.as_ref())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no alert {id}")))?;
    Ok(Json(
        rows.into_iter()
            .map(|e| TimelineEntry {
                at: e.at,
                kind: e.kind,
                person: e.person,
                name: e.name,
                page: e.page,
                step: e.step,
                channel: e.channel,
                detail: e.detail,
            })
            .collect(),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PagesQuery {
    /// Only this site's alerts (a dashboard variable's value; All: every).
    pub site: Option<String>,
    /// Pages due from (epoch ms, RFC 3339 or date); required with `to`.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Only flagged pages (nobody on call, no policy, or a fall-through).
    pub flagged: Option<bool>,
    /// At most this many, newest first (default 500, at most 5,000).
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PageRow {
    /// The page's reference (`P{id}` in its messages).
    pub page: i64,
    pub alert: i64,
    pub summary: String,
    pub severity: String,
    pub site: Option<String>,
    pub due_at: DateTime<Utc>,
    /// The person's name as they write it (never a contact detail).
    pub person: String,
    /// The ladder's step (1-based) and run (1-based).
    pub step: i32,
    pub round: i32,
    pub reason: String,
    /// Paged because nobody was on call, no policy took an emergency, or
    /// every contact method of the step before failed.
    pub flagged: bool,
    /// `sent`, `failed` (every method), `cancelled` (acknowledged or
    /// resolved first) or `waiting` (being tried).
    pub status: String,
    pub channel: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The last failure, if any.
    pub error: Option<String>,
}

/// The pages of a range, newest first: who was paged for what, at which
/// step, on which channel, and whether it went out.
#[utoipa::path(get, path = "/api/v1/oncall/pages", tag = "on call", params(PagesQuery),
    responses((status = 200, body = [PageRow]), (status = 400, body = crate::error::ErrorBody)))]
pub async fn pages(
    State(state): State<AppState>,
    Q(q): Q<PagesQuery>,
) -> ApiResult<Json<Vec<PageRow>>> {
    let (from, to) = crate::params::range(q.from.as_deref(), q.to.as_deref(), 3660)?;
    let limit = q.limit.unwrap_or(500);
    if !(1..=5000).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "`limit` ({limit}) must be 1 to 5000"
        )));
    }
    let sites = crate::routes::series::choice(q.site.as_ref());
    let roster = current_roster(&state).await.ok().flatten();
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT p.id, p.alert_id, a.summary, a.severity, a.site_id, p.due_at, p.person,
                    p.step, p.round, p.reason, p.flagged,
                    CASE WHEN p.delivered_at IS NOT NULL THEN 'sent'
                         WHEN p.failed_at IS NOT NULL THEN 'failed'
                         WHEN p.cancelled_at IS NOT NULL THEN 'cancelled'
                         ELSE 'waiting' END,
                    p.delivered_via, p.delivered_at, p.last_error
               FROM oncall_pages p JOIN alerts a ON a.id = p.alert_id
              WHERE p.due_at >= $1 AND p.due_at < $2
                AND ($3::text[] IS NULL OR a.site_id = ANY($3))
                AND (NOT $4 OR p.flagged)
              ORDER BY p.due_at DESC, p.id DESC
              LIMIT $5",
            &[&from, &to, &sites, &q.flagged.unwrap_or(false), &limit],
        )
        .await?;
    let name = |id: &str| {
        roster
            .as_ref()
            .map_or_else(|| id.to_owned(), |r| r.name_of(id))
    };
    Ok(Json(
        rows.iter()
            .map(|r| PageRow {
                page: r.get(0),
                alert: r.get(1),
                summary: r.get(2),
                severity: r.get(3),
                site: r.get(4),
                due_at: r.get(5),
                person: name(r.get(6)),
                step: r.get::<_, i32>(7) + 1,
                round: r.get::<_, i32>(8) + 1,
                reason: r.get(9),
                flagged: r.get(10),
                status: r.get(11),
                channel: r.get(12),
                delivered_at: r.get(13),
                error: r.get(14),
            })
            .collect(),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResponseQuery {
    /// One site (its time zone for weeks and hours); All: every site, UTC.
    pub site: Option<String>,
    /// Alerts fired from (epoch ms, RFC 3339 or date), required with `to`.
    pub from: Option<String>,
    pub to: Option<String>,
    /// `week` (default: a row per severity and local week) or `period`
    /// (a row per severity over the whole range, as the quarterly report).
    pub by: Option<String>,
}

/// Time to acknowledge and to resolve per severity, against the targets.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ResponseOut {
    pub period_start: DateTime<Utc>,
    pub severity: String,
    /// Alerts that paged (not replayed, not silenced).
    pub alerts: usize,
    pub acknowledged: usize,
    /// Acknowledged within the target (15 min, 2 h, 24 h).
    pub within_target: usize,
    /// `within_target / alerts` (none without alerts).
    pub within_target_share: Option<f64>,
    pub target_minutes: f64,
    pub median_minutes_to_acknowledge: Option<f64>,
    pub p90_minutes_to_acknowledge: Option<f64>,
    pub median_minutes_to_resolve: Option<f64>,
    pub open: usize,
}

/// Pages per person, and those out of their hours.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LoadOut {
    pub person: String,
    /// As they write it.
    pub name: String,
    pub pages: usize,
    pub delivered: usize,
    /// Due outside their working hours, on a weekend or a public holiday.
    pub out_of_hours: usize,
}

async fn summary(
    state: &AppState,
    q: &ResponseQuery,
) -> ApiResult<estatemon_analytics::oncall::report::Summary> {
    let (from, to) = crate::params::range(q.from.as_deref(), q.to.as_deref(), 3660)?;
    let weekly = match q.by.as_deref() {
        None | Some("week") => true,
        Some("period") => false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`by={other}`: `week` or `period`"
            )))
        }
    };
    let site = crate::routes::series::choice(q.site.as_ref())
        .filter(|s| s.len() == 1)
        .map(|mut s| s.remove(0));
    let roster = current_roster(state).await.ok().flatten();
    let tz = match (&roster, &site) {
        (Some(r), Some(s)) => estatemon_analytics::oncall::escalation::site_tz(r, s),
        _ => chrono_tz::UTC,
    };
    let client = state.pool.get().await?;
    Ok(estatemon_analytics::oncall::report::summary(
        &**client,
        roster.as_ref(),
        site.as_deref(),
        from,
        to,
        weekly,
        tz,
    )
    .await?)
}

/// How fast alerts were acknowledged and resolved, per severity, by week
/// or over the range, against the estate's targets.
#[utoipa::path(get, path = "/api/v1/oncall/response", tag = "on call", params(ResponseQuery),
    responses((status = 200, body = [ResponseOut]), (status = 400, body = crate::error::ErrorBody)))]
pub async fn response(
    State(state): State<AppState>,
    Q(q): Q<ResponseQuery>,
) -> ApiResult<Json<Vec<ResponseOut>>> {
    let s = summary(&state, &q).await?;
    Ok(Json(
        s.response
            .into_iter()
            .map(|r| ResponseOut {
                within_target_share: (r.alerts > 0)
                    .then(|| r.within_target as f64 / r.alerts as f64),
                period_start: r.period_start,
                severity: r.severity,
                alerts: r.alerts,
                acknowledged: r.acknowledged,
                within_target: r.within_target,
                target_minutes: r.target_minutes,
                median_minutes_to_acknowledge: r.median_minutes_to_acknowledge,
                p90_minutes_to_acknowledge: r.p90_minutes_to_acknowledge,
                median_minutes_to_resolve: r.median_minutes_to_resolve,
                open: r.open,
            })
            .collect(),
    ))
}

/// Pages per person in the range, and how many were out of their hours.
#[utoipa::path(get, path = "/api/v1/oncall/load", tag = "on call", params(ResponseQuery),
    responses((status = 200, body = [LoadOut]), (status = 400, body = crate::error::ErrorBody)))]
pub async fn load(
    State(state): State<AppState>,
    Q(q): Q<ResponseQuery>,
) -> ApiResult<Json<Vec<LoadOut>>> {
    let s = summary(&state, &q).await?;
    Ok(Json(
        s.load
            .into_iter()
            .map(|r| LoadOut {
                person: r.person,
                name: r.name,
                pages: r.pages,
                delivered: r.delivered,
                out_of_hours: r.out_of_hours,
            })
            .collect(),
    ))
}

/// The roster the API answers from: the newest one stored through the API,
/// else the file `oncall.roster` names (read on each request, so an edit
/// shows at once). Err: it does not load (503).
pub(crate) async fn current_roster(state: &AppState) -> ApiResult<Option<Roster>> {
    let client = state.pool.get().await?;
    if let Some((id, text, _)) = estatemon_analytics::oncall::source::stored(&**client).await? {
        return Roster::parse(&text, std::path::Path::new(&format!("stored roster #{id}")))
            .map(Some)
            .map_err(|e| {
                ApiError::Unavailable(format!("the stored on-call roster does not load: {e}"))
            });
    }
    let Some(path) = state.config.oncall.roster.clone() else {
        return Ok(None);
    };
    tokio::task::spawn_blocking(move || Roster::load(&path))
        .await
        .map_err(anyhow::Error::from)?
        .map(Some)
        .map_err(|e| ApiError::Unavailable(format!("the on-call roster cannot be read: {e}")))
}

/// The roster as TOML, contact details included.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RosterOut {
    /// `stored` (through this API) or `file`.
    pub origin: String,
    pub stored_id: Option<i64>,
    pub stored_by: Option<String>,
    pub text: String,
}

/// The roster, contact details included: admins only, and every read is
/// audited as a read of personal data.
#[utoipa::path(get, path = "/api/v1/oncall/roster", tag = "on call",
    security(("bearer" = ["admin"])),
    responses((status = 200, body = RosterOut), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_roster(
    State(state): State<AppState>,
    axum::Extension(actor): axum::Extension<crate::auth::Actor>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    actor.require(crate::auth::Role::Admin, "read contact details")?;
    let client = state.pool.get().await?;
    let out =
        match estatemon_analytics::oncall::source::stored(&**client).await? {
            Some((id, text, by)) => RosterOut {
                origin: "stored".into(),
                stored_id: Some(id),
                stored_by: Some(by),
                text,
            },
            None => {
                let path =
                    state.config.oncall.roster.clone().ok_or_else(|| {
                        ApiError::NotFound("no on-call roster is configured".into())
                    })?;
                let text = tokio::fs::read_to_string(&path)
                    .await
                    .map_err(|e| ApiError::Unavailable(format!("{}: {e}", path.display())))?;
                RosterOut {
                    origin: "file".into(),
                    stored_id: None,
                    stored_by: None,
                    text,
                }
            }
        };
    let people = Roster::parse(&out.text, std::path::Path::new("roster"))
        .map(|r| r.people.len())
        .unwrap_or(0);
    let mut r = Json(out).into_response();
    r.extensions_mut().insert(crate::audit::Detail(format!(
        "read the on-call roster: contact details of {people} people (personal data)"
    )));
    Ok(r)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RosterStored {
    pub id: i64,
    pub people: usize,
    pub teams: usize,
    pub policies: usize,
}

/// Replaces the roster (TOML, as the file): checked first, with the line
/// and field of any error (400); every process pages with it from its next
/// pass. Admins only, audited.
#[utoipa::path(put, path = "/api/v1/oncall/roster", tag = "on call",
    request_body(content = String, content_type = "application/toml"),
    security(("bearer" = ["admin"])),
    responses((status = 200, body = RosterStored), (status = 400, body = crate::error::ErrorBody)))]
pub async fn put_roster(
    State(state): State<AppState>,
    axum::Extension(actor): axum::Extension<crate::auth::Actor>,
    body: axum::body::Bytes,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    actor.require(crate::auth::Role::Admin, "change the roster")?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the roster must be UTF-8 TOML".into()))?;
    let roster = Roster::parse(text, std::path::Path::new("request body"))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if roster.people.is_empty() || roster.teams.is_empty() {
        // Nothing silences an alarm by accident: an empty body would page
        // nobody.
        return Err(ApiError::BadRequest(
            "a roster without people or teams would page nobody; refused".into(),
        ));
    }
    let client = state.pool.get().await?;
    let id: i64 = client
        .query_one(
            "INSERT INTO oncall_rosters (text, created_by) VALUES ($1, $2) RETURNING id",
            &[&text, &actor.name],
        )
        .await?
        .get(0);
    let mut r = Json(RosterStored {
        id,
        people: roster.people.len(),
        teams: roster.teams.len(),
        policies: roster.policies.len(),
    })
    .into_response();
    r.extensions_mut().insert(crate::audit::Detail(format!(
        "changed the on-call roster (stored #{id}: {} people, {} teams, {} policies; personal data)",
        roster.people.len(),
        roster.teams.len(),
        roster.policies.len()
    )));
    Ok(r)
}
