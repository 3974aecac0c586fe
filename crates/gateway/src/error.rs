//! Gateway errors, always rendered in the caller's own dialect with the right status
//! (SPEC §2). Never a bare 500 with a stack trace.

use aether_domain::format::Dialect;
use aether_protocol::errors::{ErrorKind, error_body};
use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};

/// An error the gateway itself answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GwError {
    pub kind: ErrorKind,
    pub message: String,
    /// Seconds, for 429s.
    pub retry_after: Option<u64>,
}

impl GwError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn auth(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Authentication, m)
    }
    pub fn permission(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, m)
    }
    pub fn invalid(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, m)
    }
    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::RequestTooLarge, m)
    }
    /// Quota or balance exhausted: 429, retry when it renews.
    pub fn quota(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::RateLimited, m)
    }

    #[must_use]
    pub fn retry_after(mut self, secs: Option<u64>) -> Self {
        self.retry_after = secs;
        self
    }

    /// The HTTP response in `dialect`.
    #[must_use]
    pub fn render(&self, dialect: Dialect) -> Response<Body> {
        let (status, body) = error_body(dialect, self.kind, &self.message);
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
