//! The stats rollup job.

/// One run of the rollup job.
pub async fn run(_admin: &aether_admin::Admin, _store: &aether_store::DynStore) {}
