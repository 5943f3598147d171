//! One error type for every handler: a status the caller can act on and a
//! message saying what to change. Database failures are 503 (try again),
//! never a bare 500 with a stack trace.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or malformed bearer token (Authorization: Bearer <token>)")]
    Unauthenticated,
    #[error("the token's role `{have}` may not {what}; it needs `{need}`")]
    Forbidden {
        have: &'static str,
        need: &'static str,
        what: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("too many requests without a valid token from this address; wait a minute")]
    TooManyRequests,
    #[error("the server failed on this request; it is logged")]
    Internal,
    /// What axum refused before a handler ran (a body over the limit, a
    /// method the route lacks), in the same shape as every other error.
    #[error("{message}")]
    Rejected {
        status: StatusCode,
        kind: &'static str,
        message: String,
    },
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable kind: bad_request, unauthenticated, forbidden,
    /// not_found, conflict, unavailable, too_many_requests, internal,
    /// payload_too_large, method_not_allowed, unsupported_media_type.
    pub error: &'static str,
    /// What went wrong, in words.
    pub message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Rejected { status, .. } => *status,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::TooManyRequests => "too_many_requests",
            ApiError::Internal => "internal",
            ApiError::Rejected { kind, .. } => kind,
        }
    }

    /// The JSON body every error answers with.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.kind(),
            message: self.to_string(),
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        // Constraint violations are the caller's (a duplicate name …).
        if let Some(db) = e.as_db_error() {
            if db.code().code().starts_with("23") {
                return ApiError::Conflict(db.message().to_owned());
            }
            if db.code().code().starts_with("22") {
                return ApiError::BadRequest(db.message().to_owned());
            }
        }
        // The server's message and SQLSTATE, not just "db error".
        match e.as_db_error() {
            Some(db) => tracing::warn!(sqlstate = db.code().code(), error = %db, "database error"),
            None => tracing::warn!(error = %e, "database error"),
        }
        ApiError::Unavailable(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        tracing::warn!(error = %e, "no database connection");
        ApiError::Unavailable(e.to_string())
    }
}

impl From<estatemon_analytics::energy::EnergyError> for ApiError {
    fn from(e: estatemon_analytics::energy::EnergyError) -> Self {
        use estatemon_analytics::energy::EnergyError;
        match e {
            EnergyError::UnknownSite(_) => ApiError::NotFound(e.to_string()),
            EnergyError::Db(db) => db.into(),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        // The analytics crate's typed errors say what went wrong (an unknown
        // site is the caller's 404); only the rest is the server's.
        let e = match e.downcast::<estatemon_analytics::energy::EnergyError>() {
            Ok(energy) => return energy.into(),
            Err(e) => e,
        };
        let text = format!("{e:#}");
        tracing::warn!(error = %text, "request failed");
        ApiError::Unavailable(text)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if matches!(self, ApiError::TooManyRequests) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("60"),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
