//! The retention job.

/// One run of the retention job.
pub async fn run(_admin: &aether_admin::Admin, _store: &aether_store::DynStore) {}
