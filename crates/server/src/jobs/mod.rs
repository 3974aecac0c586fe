//! The cluster-wide background jobs the leader runs (see `leader::run_jobs`).

pub mod retention;
pub mod rollups;
