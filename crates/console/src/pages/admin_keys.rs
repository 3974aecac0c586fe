//! (pages of this area are added here)

use axum::Router;

use crate::Console;

/// Templates rendered by this module: (name, source).
pub const TEMPLATES: &[(&str, &str)] = &[];

pub fn routes() -> Router<Console> {
    Router::new()
}
