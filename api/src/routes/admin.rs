//! What admins manage besides devices: API tokens, the alert rules, and
//! retrofits (the savings measurements). Reading rules and retrofits is open
//! to every role; changing anything needs `admin`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use estatemon_domain::retrofit::Retrofit;
use estatemon_domain::rules::RuleSet;
use estatemon_domain::schema::rule_sets;
use serde::{Deserialize, Serialize};

use crate::auth::{Actor, Role};
use crate::extract::{P, Q};
use crate::{ApiError, ApiResult, AppState};

// ---- tokens ---------------------------------------------------------------

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenOut {
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Tokens: names, roles and dates, never the tokens (admins).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "admin", security(("bearer" = ["admin"])),
    responses((status = 200, body = [TokenOut]), (status = 403, body = crate::error::ErrorBody)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<Json<Vec<TokenOut>>> {
    actor.require(Role::Admin, "list tokens")?;
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT name, role, created_at, created_by, revoked_at FROM api_tokens ORDER BY name",
            &[],
        )
        .await?;
    Ok(Json(
        rows.iter()
            .filter_map(|r| {
                Some(TokenOut {
                    name: r.get(0),
                    role: Role::parse(r.get(1))?,
                    created_at: r.get(2),
                    created_by: r.get(3),
                    revoked_at: r.get(4),
                })
            })
            .collect(),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// A name people recognise in the audit log (grafana, alice).
    pub name: String,
    pub role: Role,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub name: String,
    pub role: Role,
    /// Shown only in this response; only its SHA-256 is stored.
    pub token: String,
}

/// Creates a token (admins); the response is the only place it appears.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "admin", request_body = NewToken,
    security(("bearer" = ["admin"])),
    responses((status = 201, body = CreatedToken), (status = 400, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn create_token(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> ApiResult<(
    StatusCode,
    Extension<crate::audit::Detail>,
    Json<CreatedToken>,
)> {
    actor.require(Role::Admin, "create tokens")?;
    let new: NewToken =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("token: {e}")))?;
    let client = state.pool.get().await?;
    let token = crate::create_token(&client, &new.name, new.role, &format!("api:{}", actor.name))
        .await
        .map_err(|e| match e {
            ApiError::Conflict(_) => {
                ApiError::Conflict(format!("a token named `{}` exists", new.name))
            }
            other => other,
        })?;
    state.tokens.invalidate().await;
    // The audit row names the token made (never the token itself).
    let detail = crate::audit::Detail(format!(
        "created token `{}` with role {}",
        new.name,
        new.role.as_str()
    ));
    Ok((
        StatusCode::CREATED,
        Extension(detail),
        Json(CreatedToken {
            name: new.name,
            role: new.role,
            token,
        }),
    ))
}

/// Revokes a token by name (admins); it stops working at once on this
/// process and within seconds on others. The last admin token cannot be
/// revoked here (that would lock admins out; use `estatemon token`).
#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "admin", security(("bearer" = ["admin"])),
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    P(name): P<String>,
) -> ApiResult<StatusCode> {
    actor.require(Role::Admin, "revoke tokens")?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    // Serialise revocations, so two admins cannot revoke the last two
    // admin tokens at once.
    tx.execute("LOCK TABLE api_tokens IN SHARE ROW EXCLUSIVE MODE", &[])
        .await?;
    let row = tx
        .query_opt(
            "SELECT role FROM api_tokens WHERE name = $1 AND revoked_at IS NULL",
            &[&name],
        )
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no active token named `{name}`")))?;
    if row.get::<_, &str>(0) == "admin" {
        let admins: i64 = tx
            .query_one(
                "SELECT count(*) FROM api_tokens WHERE role = 'admin' AND revoked_at IS NULL",
                &[],
            )
            .await?
            .get(0);
        if admins <= 1 {
            return Err(ApiError::Conflict(format!(
                "`{name}` is the last admin token; create another admin token first"
            )));
        }
    }
    tx.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
        &[&name],
    )
    .await?;
    tx.commit().await?;
    state.tokens.invalidate().await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- rules ----------------------------------------------------------------

#[derive(Serialize, utoipa::ToSchema)]
pub struct RuleOut {
    pub name: String,
    pub summary: String,
    /// emergency, ordinary or routine.
    pub severity: String,
    /// threshold, rate, stale, consumption, event or denied.
    pub condition: String,
    /// Raised on the ingest path (one message decides).
    pub immediate: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RulesOut {
    /// `database` (put through this API), `file` (`alerts.rules_file`) or
    /// `shipped`.
    pub origin: &'static str,
    /// The stored rule set's id, when the rules come from the database.
    pub id: Option<i64>,
    pub changed_by: Option<String>,
    pub changed_at: Option<DateTime<Utc>>,
    /// Response deadlines in minutes by severity.
    pub deadlines_min: std::collections::BTreeMap<String, i64>,
    pub rules: Vec<RuleOut>,
    /// Emergencies (entrapment, door_forced, fire_main_pressure_low) these
    /// rules do not page for: empty unless an admin waived them.
    pub missing_emergencies: Vec<String>,
    /// The rules file (TOML) as stored or read.
    pub source: String,
}

fn rules_out(
    set: &RuleSet,
    origin: &'static str,
    stored: Option<&rule_sets::Stored>,
    source: String,
) -> RulesOut {
    RulesOut {
        origin,
        id: stored.map(|s| s.id),
        changed_by: stored.map(|s| s.created_by.clone()),
        changed_at: stored.map(|s| s.created_at),
        deadlines_min: [
            ("emergency", set.deadlines.emergency),
            ("ordinary", set.deadlines.ordinary),
            ("routine", set.deadlines.routine),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.seconds() / 60))
        .collect(),
        rules: set
            .rules
            .iter()
            .map(|r| RuleOut {
                name: r.name.clone(),
                summary: r.summary.clone(),
                severity: r.severity.as_str().to_owned(),
                condition: r.condition.kind().to_owned(),
                immediate: r.immediate,
            })
            .collect(),
        missing_emergencies: set
            .missing_emergencies()
            .iter()
            .map(|e| e.as_str().to_owned())
            .collect(),
        source,
    }
}

/// The alert rules ingest and analytics run (as this API's configuration
/// sees them when no set is stored).
#[utoipa::path(get, path = "/api/v1/rules", tag = "admin",
    responses((status = 200, body = RulesOut)))]
pub async fn rules(State(state): State<AppState>) -> ApiResult<Json<RulesOut>> {
    let client = state.pool.get().await?;
    if let Some(stored) = rule_sets::latest(&**client).await?.filter(|s| !s.reset) {
        let set = RuleSet::parse(&stored.source, std::path::Path::new("rules"))
            .map_err(|e| ApiError::Unavailable(format!("stored rule set {}: {e}", stored.id)))?;
        let source = stored.source.clone();
        return Ok(Json(rules_out(&set, "database", Some(&stored), source)));
    }
    let file = state.config.alerts.rules_file.as_deref();
    let (origin, source) = match file {
        Some(path) => (
            "file",
            std::fs::read_to_string(path).map_err(|e| {
                ApiError::Unavailable(format!("rules file {}: {e}", path.display()))
            })?,
        ),
        None => ("shipped", estatemon_domain::rules::DEFAULT_RULES.to_owned()),
    };
    let set = RuleSet::parse(
        &source,
        file.unwrap_or(std::path::Path::new("<shipped rules>")),
    )
    .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(rules_out(&set, origin, None, source)))
}

/// `PUT /rules` options.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PutRulesParams {
    /// `true` stores a set that lacks a rule for one of the emergencies
    /// (entrapment, forced door, fire-main pressure). Without it such a set
    /// is refused; with it the waiver is stored with the set, audited, and
    /// shown by `/health` and the `estatemon_ingest_emergency_rules_missing`
    /// metric until a complete set replaces it.
    #[serde(default)]
    pub waive_emergencies: bool,
}

/// Replaces the alert rules (admins). The body is a rules file (TOML, the
/// same as `alerts.rules_file`); it is validated first, and a bad one is a
/// 400 naming the line and the field. A set that would stop paging for a
/// trapped passenger, a forced door or low fire-main pressure is a 400
/// unless `waive_emergencies=true`. Ingest picks the new set up within
/// seconds, analytics at its next evaluation.
#[utoipa::path(put, path = "/api/v1/rules", tag = "admin", params(PutRulesParams),
    security(("bearer" = ["admin"])),
    request_body(content = String, content_type = "application/toml",
        description = "a rules file: [severity] and [[rule]] tables"),
    responses((status = 200, body = RulesOut), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)))]
pub async fn put_rules(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Q(params): Q<PutRulesParams>,
    body: axum::body::Bytes,
) -> ApiResult<Json<RulesOut>> {
    actor.require(Role::Admin, "change alert rules")?;
    let source = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the rules must be UTF-8 TOML".into()))?;
    let client = state.pool.get().await?;
    let (id, set) = rule_sets::put(&**client, source, &actor.name, params.waive_emergencies)
        .await?
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let missing = set.missing_emergencies();
    if missing.is_empty() {
        tracing::info!(id, by = %actor.name, rules = set.rules.len(), "alert rules replaced");
    } else {
        let missing: Vec<&str> = missing.iter().map(|e| e.as_str()).collect();
        tracing::warn!(id, by = %actor.name, rules = set.rules.len(), waived = ?missing,
            "alert rules replaced WITHOUT emergency rules (waived explicitly)");
    }
    let stored = rule_sets::latest(&**client)
        .await?
        .filter(|s| s.id == id)
        .ok_or_else(|| ApiError::Conflict("the rules changed again meanwhile".into()))?;
    Ok(Json(rules_out(
        &set,
        "database",
        Some(&stored),
        source.to_owned(),
    )))
}

/// Drops the stored rules (admins): every process goes back to its rules
/// file or the shipped rules. The history stays in `rule_sets`.
#[utoipa::path(delete, path = "/api/v1/rules", tag = "admin", security(("bearer" = ["admin"])),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody)))]
pub async fn reset_rules(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<StatusCode> {
    actor.require(Role::Admin, "change alert rules")?;
    let client = state.pool.get().await?;
    let id = rule_sets::reset(&**client, &actor.name).await?;
    tracing::info!(id, by = %actor.name, "alert rules reset to file or shipped rules");
    Ok(StatusCode::NO_CONTENT)
}

// ---- retrofits ------------------------------------------------------------

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetrofitFilter {
    pub site: Option<String>,
}

/// Retrofits, as declared in the registry file or put here.
#[utoipa::path(get, path = "/api/v1/retrofits", tag = "savings", params(RetrofitFilter),
    responses((status = 200, body = [serde_json::Value])))]
pub async fn retrofits(
    State(state): State<AppState>,
    Q(f): Q<RetrofitFilter>,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT spec FROM retrofits WHERE $1::text IS NULL OR site_id = $1
              ORDER BY site_id, spec->>'date', retrofit_id",
            &[&f.site],
        )
        .await?;
    Ok(Json(rows.iter().map(|r| r.get(0)).collect()))
}

/// Creates or replaces a retrofit (admins). The body is a registry
/// `[[retrofit]]` table as JSON; ids in the path and body must agree, the
/// site must exist, the periods must make sense.
#[utoipa::path(put, path = "/api/v1/retrofits/{site}/{id}", tag = "savings",
    security(("bearer" = ["admin"])),
    params(("site" = String, Path), ("id" = String, Path)),
    request_body(content = serde_json::Value, description = "id, name, site, purpose, building, area, devices, date, baseline_from, baseline_to, reporting_from, reporting_to, target, drivers"),
    responses((status = 200, body = serde_json::Value), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)))]
pub async fn put_retrofit(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    P((site, id)): P<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    actor.require(Role::Admin, "change retrofits")?;
    let retrofit: Retrofit = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("retrofit: {e}")))?;
    if retrofit.id != id || retrofit.site != site {
        return Err(ApiError::BadRequest(format!(
            "the path names `{site}/{id}` but the body `{}/{}`",
            retrofit.site, retrofit.id
        )));
    }
    retrofit
        .check()
        .map_err(|(field, message)| ApiError::BadRequest(format!("field `{field}`: {message}")))?;
    let client = state.pool.get().await?;
    if client
        .query_opt("SELECT 1 FROM sites WHERE site_id = $1", &[&site])
        .await?
        .is_none()
    {
        return Err(ApiError::BadRequest(format!(
            "site `{site}` does not exist"
        )));
    }
    let spec = serde_json::to_value(&retrofit).expect("a retrofit serialises");
    client
        .execute(
            "INSERT INTO retrofits (site_id, retrofit_id, spec) VALUES ($1, $2, $3)
             ON CONFLICT (site_id, retrofit_id) DO UPDATE SET spec = EXCLUDED.spec, updated_at = now()",
            &[&site, &id, &spec],
        )
        .await?;
    // The stored savings no longer describe the site's retrofits.
    client
        .execute("DELETE FROM savings_results WHERE site_id = $1", &[&site])
        .await?;
    state.savings_cache.clear();
    Ok(Json(spec))
}

/// Removes a retrofit (admins); its readings and past reports stay.
#[utoipa::path(delete, path = "/api/v1/retrofits/{site}/{id}", tag = "savings",
    security(("bearer" = ["admin"])),
    params(("site" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_retrofit(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    P((site, id)): P<(String, String)>,
) -> ApiResult<StatusCode> {
    actor.require(Role::Admin, "remove retrofits")?;
    let client = state.pool.get().await?;
    let n = client
        .execute(
            "DELETE FROM retrofits WHERE site_id = $1 AND retrofit_id = $2",
            &[&site, &id],
        )
        .await?;
    if n == 0 {
        return Err(ApiError::NotFound(format!(
            "no retrofit `{id}` at `{site}`"
        )));
    }
    client
        .execute("DELETE FROM savings_results WHERE site_id = $1", &[&site])
        .await?;
    state.savings_cache.clear();
    Ok(StatusCode::NO_CONTENT)
}
