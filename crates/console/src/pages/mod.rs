//! The pages, one module per area. Each module exports `routes()` and the `TEMPLATES` it
//! renders (compiled into the binary); this file only assembles them.

use axum::Router;

use crate::Console;

mod admin_keys;
mod admin_models;
mod admin_provider_tools;
mod admin_providers;
mod admin_system;
mod admin_users;
mod core;
mod usage;
mod user;

/// Every template of every page module, by name.
pub const TEMPLATES: &[&[(&str, &str)]] = &[
    core::TEMPLATES,
    admin_providers::TEMPLATES,
    admin_provider_tools::TEMPLATES,
    admin_models::TEMPLATES,
    admin_keys::TEMPLATES,
    admin_system::TEMPLATES,
    admin_users::TEMPLATES,
    usage::TEMPLATES,
    user::TEMPLATES,
];

pub fn routes() -> Router<Console> {
    Router::new()
        .merge(core::routes())
        .merge(admin_providers::routes())
        .merge(admin_provider_tools::routes())
        .merge(admin_models::routes())
        .merge(admin_keys::routes())
        .merge(admin_system::routes())
        .merge(admin_users::routes())
        .merge(usage::routes())
        .merge(user::routes())
}
