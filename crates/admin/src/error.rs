//! The management API's error type: one enum, one JSON shape, an exhaustive status table.
//! Bodies look like FastAPI's (`{"detail": …}`) so users of the original Aether recognise
//! them, plus a stable machine-readable `code` and, for validation errors, the `field`.

use aether_store::{SqlxError, StoreError};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Invalid {
        field: Option<&'static str>,
        message: String,
    },
    #[error("authentication required")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("too many attempts; retry in {0} s")]
    Throttled(u64),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("internal error")]
    Internal(String),
    #[error("store unavailable")]
    Unavailable(String),
}

impl ApiError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: Some(field),
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::Invalid {
            field: None,
            message: message.into(),
        }
    }

    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid_request",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Throttled(_) => "throttled",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::Internal(_) => "internal_error",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound("record"),
            StoreError::Conflict(c) => Self::Conflict(conflict_message(&c)),
            StoreError::Database(ref db) if is_unavailable(db) => Self::Unavailable(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

fn is_unavailable(e: &SqlxError) -> bool {
    matches!(
        e,
        SqlxError::PoolTimedOut | SqlxError::Io(_) | SqlxError::PoolClosed
    )
}

/// Turns a constraint name into words a person can act on.
fn conflict_message(constraint: &str) -> String {
    let c = constraint.to_ascii_lowercase();
    let what = if c.contains("email") {
        "a user with this email already exists"
    } else if c.contains("username") {
        "a user with this username already exists"
    } else if c.contains("providers") && c.contains("name") {
        "a provider with this name already exists"
    } else if c.contains("api_format") {
        "this provider already has an endpoint of that API format"
    } else if c.contains("fingerprint") {
        "this key is already configured on the endpoint"
    } else if c.contains("global_models") {
        "a global model with this name already exists"
    } else if c.contains("provider_model_name") {
        "this provider already has a model with that upstream name"
    } else if c.contains("cidr") {
        "an identical IP rule already exists"
    } else if c.starts_with("insufficient balance") || c.starts_with("referenced") {
        return constraint.to_string();
    } else {
        "the change conflicts with an existing record"
    };
    what.to_string()
}

#[derive(Serialize)]
struct Body<'a> {
    detail: String,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Internal(m) | Self::Unavailable(m) => {
                tracing::error!(error = %m, "management API error")
            }
            _ => {}
        }
        let field = match &self {
            Self::Invalid { field, .. } => *field,
            _ => None,
        };
        let detail = match &self {
            // Never leak internals to clients; the log has them.
            Self::Internal(_) => "internal error".to_string(),
            Self::Unavailable(_) => "the database is unavailable; try again".to_string(),
            Self::Unauthenticated(m) if !m.is_empty() => m.clone(),
            other => other.to_string(),
        };
        let mut resp = (
            status,
            Json(Body {
                detail,
                code: self.code(),
                field,
            }),
        )
            .into_response();
        if let Self::Throttled(secs) = self
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
