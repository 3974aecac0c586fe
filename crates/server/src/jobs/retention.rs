//! The retention job: ages every stored data class out at its own setting, then starts the
//! quota periods that have ended.
//!
//! The leader calls it every minute. Each class is worked in batches of a bounded size and a
//! bounded number of batches per run, so one run stays short and no statement holds its
//! locks for long; a backlog (a first run on a large database, a lowered setting) is worked
//! off over the following runs. Errors are logged and the next class goes on.

use std::future::Future;
use std::time::Duration;

use aether_domain::Timestamp;
use aether_store::StoreError;
use aether_store::rollups::Granularity;

/// Rows one delete/update statement changes at most.
const BATCH: u32 = 5000;
/// Bodies compressed per batch: each is read, deflated and written back by the leader.
const COMPRESS_BATCH: u32 = 500;
/// Batches per class per run.
const MAX_BATCHES: u32 = 20;
/// Hours of hourly rollups deleted per run at most: twice what the rollup job adds in the
/// same minute, so a backlog shrinks.
const MAX_HOURS: u32 = 96;
/// Pause between full batches, so other writers (on SQLite, the one writer) get their turn.
const PAUSE: Duration = Duration::from_millis(20);

/// One run of the retention job.
pub async fn run(admin: &aether_admin::Admin, store: &aether_store::DynStore) {
    let settings = admin.settings();
    let now = Timestamp::now();
    let days = |class: &str| settings.retention_days(class);
    let compress_after = settings
        .get("compress_bodies_after_days")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(1);
    // Bodies and headers are dropped before compressing, so only bodies that are kept get
    // compressed (none at all when compression would come after the drop).
    let bodies = cutoff(now, days("bodies"));
    drain("bodies dropped", BATCH, |n| store.drop_bodies(bodies, n)).await;
    let headers = cutoff(now, days("headers"));
    drain("headers dropped", BATCH, |n| store.drop_headers(headers, n)).await;
    let compress = cutoff(now, compress_after);
    if compress > bodies {
        drain("bodies compressed", COMPRESS_BATCH, |n| {
            store.compress_bodies(compress, n)
        })
        .await;
    }
    let usage = cutoff(now, days("usage"));
    drain("usage records deleted", BATCH, |n| {
        store.delete_usage(usage, n)
    })
    .await;
    // Hourly rollups go with the records they sum, at whole days (a day's hours go
    // together); daily rollups stay, so the dashboards keep their history. An hour whose
    // records are gone can no longer be recomputed anyway.
    let hours = Granularity::Day.floor(usage);
    let mut pruned = 0u64;
    for _ in 0..MAX_HOURS {
        match store.delete_hourly_rollups(hours).await {
            Ok(0) => break,
            Ok(n) => pruned += n,
            Err(e) => {
                tracing::warn!(error = %e, what = "hourly rollups deleted", "retention step failed");
                break;
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
    if pruned > 0 {
        tracing::info!(rows = pruned, what = "hourly rollups deleted", "retention");
    }
    let traces = cutoff(now, days("traces"));
    drain("attempt traces deleted", BATCH, |n| {
        store.delete_traces(traces, n)
    })
    .await;
    let audit = cutoff(now, days("audit"));
    drain("audit entries deleted", BATCH, |n| {
        store.delete_audit(audit, n)
    })
    .await;
    match store.reset_quota_periods(now).await {
        Ok(r) if r.users + r.providers > 0 => {
            tracing::info!(
                users = r.users,
                providers = r.providers,
                "quota periods started"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not reset quota periods"),
    }
}

/// The instant `days` days before `now` (0 days: everything stored so far).
fn cutoff(now: Timestamp, days: i64) -> Timestamp {
    now.plus_secs(-days.max(0).saturating_mul(86_400))
}

/// Runs `step` with batches of `batch` rows until one comes back short (nothing more to do)
/// or [`MAX_BATCHES`] ran; logs the total.
async fn drain<F, Fut>(what: &'static str, batch: u32, mut step: F)
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0u64;
    for i in 0..MAX_BATCHES {
        if i > 0 {
            tokio::time::sleep(PAUSE).await;
        }
        match step(batch).await {
            Ok(n) => {
                total += n;
                if n < u64::from(batch) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, what, "retention step failed");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(rows = total, what, "retention");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs_count_whole_days_back_and_never_forward() {
        let now = Timestamp::from_millis(10 * 86_400_000);
        assert_eq!(cutoff(now, 3), Timestamp::from_millis(7 * 86_400_000));
        assert_eq!(cutoff(now, 0), now);
        assert_eq!(cutoff(now, -5), now);
        assert!(cutoff(now, i64::MAX) < now);
    }
}
