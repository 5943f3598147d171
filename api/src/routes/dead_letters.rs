//! Dead letters: messages kept with the reason they were refused.

use crate::extract::Q;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::params;
use crate::{ApiResult, AppState};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: Option<String>,
    /// `true`: only open letters; `false`: only those `estatemon
    /// dead-letters reprocess` resolved; absent: both.
    pub open: Option<bool>,
    /// Default 200, at most 5,000; newest first.
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeadLetterOut {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub topic: String,
    pub reason: String,
    pub detail: String,
    /// The payload as text (lossy UTF-8), at most 2 kB.
    pub payload: String,
    pub payload_bytes: usize,
    /// When `estatemon dead-letters reprocess` ran it through ingest
    /// again; absent while the letter is open.
    pub resolved_at: Option<DateTime<Utc>>,
    /// `reprocessed`, `reprocessed: refused again as <id>` (the new, open
    /// letter), or `reprocessed in part: a row refused by the database as
    /// <id>` (a row of the message refused at storage, in a new open letter).
    pub resolution: Option<String>,
}

/// Dead letters, newest first.
#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "dead letters", params(DeadLetterQuery),
    responses((status = 200, body = [DeadLetterOut]), (status = 400, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Q(q): Q<DeadLetterQuery>,
) -> ApiResult<Json<Vec<DeadLetterOut>>> {
    let (from, to) = params::bounds(q.from.as_deref(), q.to.as_deref())?;
    let limit = params::limit(q.limit, 200)?;
    let client = state.pool.get().await?;
    let rows = crate::query(&client,
            "SELECT id, received_at, topic, reason, detail, payload, resolved_at, resolution FROM dead_letters
              WHERE ($1::timestamptz IS NULL OR received_at >= $1) AND ($2::timestamptz IS NULL OR received_at < $2)
                AND ($3::text IS NULL OR reason = $3)
                AND ($5::bool IS NULL OR (resolved_at IS NULL) = $5)
              ORDER BY received_at DESC, id DESC LIMIT $4",
            &[&from, &to, &q.reason, &limit, &q.open],
        )
        .await?;
    Ok(Json(
        rows.iter()
            .map(|r| {
                let payload: Vec<u8> = r.get(5);
                DeadLetterOut {
                    id: r.get(0),
                    received_at: r.get(1),
                    topic: r.get(2),
                    reason: r.get(3),
                    detail: r.get(4),
                    payload: String::from_utf8_lossy(&payload[..payload.len().min(2048)])
                        .into_owned(),
                    payload_bytes: payload.len(),
                    resolved_at: r.get(6),
                    resolution: r.get(7),
                }
            })
            .collect(),
    ))
}
