//! The stats rollup job: keeps the hourly and daily usage rollups (what the dashboards read)
//! up to date.
//!
//! The leader calls it every minute. Each run rolls up, from the usage records, the hours
//! after the store's watermark that have settled — a record settles at most
//! `request_timeout_secs` + [`STALE_MARGIN`] after it started (then the stale sweep fails
//! it), plus a slack for the sweep's own period — at most [`MAX_HOURS`] per run; then the days
//! those hours fall in. So each hour is aggregated once, when it can no longer change (an
//! earlier design recomputed every unsettled hour each minute, which stalled the single
//! SQLite writer under heavy load); newer hours are read live from the records. Buckets are
//! replaced whole, so a run repeated (or run twice by two leaders in turn) gives the same rows.

use std::time::Duration;

use aether_domain::Timestamp;
use aether_store::StoreError;
use aether_store::rollups::RollupRun;

use crate::leader::STALE_MARGIN;

/// Hours one run recomputes at most: a first run on a large database catches up over several
/// runs instead of holding one long transaction.
pub const MAX_HOURS: u32 = 48;

/// Added to the settle window: the stale sweep runs once a minute, so a record may turn
/// `failed` somewhat after its deadline; also absorbs small clock differences between
/// instances.
const SLACK: Duration = Duration::from_secs(300);

/// One run of the rollup job.
pub async fn run(admin: &aether_admin::Admin, store: &aether_store::DynStore) {
    match roll(
        store,
        admin.settings().request_timeout_secs(),
        Timestamp::now(),
    )
    .await
    {
        Ok(r) if r.behind => tracing::info!(
            from = %r.from,
            to = %r.to,
            rows = r.rows,
            "usage rollups catching up"
        ),
        Ok(r) => tracing::debug!(from = %r.from, to = %r.to, rows = r.rows, "usage rolled up"),
        Err(e) => tracing::warn!(error = %e, "could not roll up usage"),
    }
}

/// The work of one run at `now`, for a request timeout of `request_timeout_secs`.
pub async fn roll(
    store: &aether_store::DynStore,
    request_timeout_secs: u64,
    now: Timestamp,
) -> Result<RollupRun, StoreError> {
    store
        .run_rollups(now, settle_window(request_timeout_secs), MAX_HOURS)
        .await
}

/// How long after its hour ends an hour's records may still change.
#[must_use]
pub fn settle_window(request_timeout_secs: u64) -> Duration {
    Duration::from_secs(request_timeout_secs)
        .saturating_add(STALE_MARGIN)
        .saturating_add(SLACK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settle_window_covers_the_stale_deadline() {
        let w = settle_window(600);
        assert!(w >= Duration::from_secs(600) + STALE_MARGIN);
        assert_eq!(settle_window(u64::MAX), Duration::MAX);
    }
}
