//! The web console: server-rendered HTML pages over the same management services as the JSON
//! API (never its HTTP routes), compiled into the binary — templates (minijinja), one
//! stylesheet and a little JavaScript. No build toolchain.
//!
//! * Sessions are the management API's own (JWT access token bound to a server-side session,
//!   rotating refresh token), carried in `HttpOnly`, `SameSite=Strict` cookies; an expired
//!   access token is refreshed transparently.
//! * Every form carries the session's anti-CSRF token ([`aether_admin::Admin::csrf_token`]);
//!   a POST without it is refused.
//! * Nothing secret is rendered: upstream keys appear masked, gateway keys only once, on the
//!   page that created them.

mod pages;
mod session;
mod view;

use std::sync::Arc;

use aether_admin::Admin;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

pub use session::{AdminViewer, Viewer};
pub use view::Views;

/// What every console handler gets.
#[derive(Clone)]
pub struct Console {
    pub admin: Admin,
    pub views: Arc<Views>,
}

/// The console's routes (`/`, `/login`, `/admin/...`, `/static/...`).
pub fn router(admin: Admin) -> Router {
    let console = Console {
        admin,
        views: Arc::new(Views::new()),
    };
    Router::new()
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(js))
        .merge(pages::routes())
        .with_state(console)
}

async fn css() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        include_str!("../static/console.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        include_str!("../static/console.js"),
    )
}
