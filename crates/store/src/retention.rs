//! Retention per data class, and quota period resets — the leader's housekeeping.
//!
//! Every class ages out on its own setting: request/response bodies are compressed, then
//! dropped; stored headers are dropped; usage records, attempt traces and audit entries are
//! deleted. Each call changes at most `batch` rows and returns how many it changed, so the job
//! loops a bounded number of times per run and no statement holds its locks for long (on
//! PostgreSQL `DELETE … WHERE id IN (SELECT id … LIMIT n)`; SQLite speaks the same).
//!
//! A `usage_bodies` row carries `retention_state` bits (see migration 0006): [`COMPRESSED`],
//! [`BODIES_DROPPED`], [`HEADERS_DROPPED`]. Each step selects its rows by the states it still
//! has to act on, through the `(retention_state, created_at)` index, so a batch reads only the
//! rows it changes.

use std::borrow::Cow;
use std::io::{Read as _, Write as _};

use aether_domain::Timestamp;
use aether_domain::entities::QuotaPeriod;
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;

use crate::SqlStore;
use crate::args;
use crate::db::{Exec, Row};
use crate::error::{Result, StoreError};

/// `retention_state` bit: the body columns hold `base64(deflate(text))`.
pub const COMPRESSED: i64 = 1;
/// `retention_state` bit: the body columns were cleared.
pub const BODIES_DROPPED: i64 = 2;
/// `retention_state` bit: the header columns were cleared.
pub const HEADERS_DROPPED: i64 = 4;

/// Rows compressed per statement round: bodies can be megabytes each, so a round holds only
/// a few of them in memory however large the caller's batch is.
const COMPRESS_CHUNK: u32 = 20;

/// Quota periods moved on by one [`RetentionRepo::reset_quota_periods`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaResets {
    pub users: u64,
    pub providers: u64,
}

#[async_trait]
pub trait RetentionRepo: Send + Sync {
    /// Compresses the bodies of up to `batch` rows stored before `before`; they still read
    /// back as the original text through `get_usage_bodies`.
    async fn compress_bodies(&self, before: Timestamp, batch: u32) -> Result<u64>;
    /// Drops the bodies of up to `batch` rows stored before `before` (the headers stay until
    /// their own retention; a row with nothing left is deleted).
    async fn drop_bodies(&self, before: Timestamp, batch: u32) -> Result<u64>;
    /// Drops the stored headers of up to `batch` rows stored before `before` (the bodies stay
    /// until their own retention; a row with nothing left is deleted).
    async fn drop_headers(&self, before: Timestamp, batch: u32) -> Result<u64>;
    /// Deletes up to `batch` usage records created before `before`, never one still pending
    /// or streaming.
    async fn delete_usage(&self, before: Timestamp, batch: u32) -> Result<u64>;
    /// Deletes up to `batch` attempt traces started before `before`.
    async fn delete_traces(&self, before: Timestamp, batch: u32) -> Result<u64>;
    /// Deletes up to `batch` audit log entries created before `before`.
    async fn delete_audit(&self, before: Timestamp, batch: u32) -> Result<u64>;
    /// Deletes the hourly rollups of the oldest hour that started before `before` (one
    /// bucket per call, so one statement never holds more than an hour's groups); returns the
    /// rows deleted, 0 when no such hour is left. Daily rollups are kept.
    async fn delete_hourly_rollups(&self, before: Timestamp) -> Result<u64>;
    /// Starts the new quota period of every user and provider whose period ended by `now`:
    /// spend in the period back to 0, `period_started_at` to the start of the period `now`
    /// falls in. Idempotent; safe against concurrent billing (see the implementation).
    async fn reset_quota_periods(&self, now: Timestamp) -> Result<QuotaResets>;
}

/// `base64(deflate(text))`: the columns stay TEXT, so both engines store, bind and read them
/// like any other text, and `Arg` needs no byte type. Base64 costs a third on top of the
/// deflated size, small beside what deflate saves on JSON and prose.
pub(crate) fn compress(text: &str) -> Result<String> {
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::default());
    enc.write_all(text.as_bytes())
        .and_then(|()| enc.finish())
        .map(|bytes| STANDARD.encode(bytes))
        .map_err(|e| StoreError::Corrupt(format!("compressing a body: {e}")))
}

/// The inverse of [`compress`].
pub(crate) fn decompress(stored: &str) -> Result<String> {
    let bytes = STANDARD
        .decode(stored)
        .map_err(|e| StoreError::Corrupt(format!("compressed body: {e}")))?;
    let mut text = String::new();
    DeflateDecoder::new(bytes.as_slice())
        .read_to_string(&mut text)
        .map_err(|e| StoreError::Corrupt(format!("compressed body: {e}")))?;
    Ok(text)
}

/// A body column of a `usage_bodies` row selected with its `retention_state`, as text.
pub(crate) fn body_text(r: &Row, col: &str) -> Result<Option<String>> {
    let stored = r.opt_text(col)?;
    if r.i64("retention_state")? & COMPRESSED == 0 {
        return Ok(stored);
    }
    stored.as_deref().map(decompress).transpose()
}

/// The smallest UUIDv7 text of millisecond `ms`: every v7 id made before `ms` sorts below it
/// (the first 48 bits are the time, and hyphenated lowercase hex sorts like the number).
fn v7_floor(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0).min((1 << 48) - 1);
    let h = format!("{ms:012x}");
    format!("{}-{}-0000-0000-000000000000", &h[..8], &h[8..])
}

fn limit(batch: u32) -> i64 {
    i64::from(batch)
}

impl SqlStore {
    /// Runs a bounded `DELETE`/`UPDATE` and returns the rows it changed.
    async fn run(&self, sql: &'static str, args: Vec<crate::db::Arg>) -> Result<u64> {
        self.db.clone().execute(Cow::Borrowed(sql), args).await
    }

    /// One round of compression: at most `n` rows read, compressed, and written back in one
    /// short transaction. The write is conditional on the state read, so a row another writer
    /// changed meanwhile is left alone.
    async fn compress_round(&self, before: Timestamp, n: u32) -> Result<u64> {
        let rows = self
            .db
            .clone()
            .fetch_all(
                "SELECT request_id, retention_state, request_body, response_body FROM usage_bodies \
                 WHERE retention_state IN (0, 4) AND created_at < $1 LIMIT $2"
                    .into(),
                args![before.millis(), limit(n)],
            )
            .await?;
        let mut updates = Vec::with_capacity(rows.len());
        for r in &rows {
            let zip = |col| r.opt_text(col)?.as_deref().map(compress).transpose();
            updates.push(args![
                r.text("request_id")?,
                r.i64("retention_state")?,
                zip("request_body")?,
                zip("response_body")?,
            ]);
        }
        if updates.is_empty() {
            return Ok(0);
        }
        let mut tx = self.db.begin().await?;
        let mut done = 0;
        for a in updates {
            done += tx
                .execute(
                    "UPDATE usage_bodies SET request_body = $3, response_body = $4, \
                     retention_state = retention_state + 1 WHERE request_id = $1 AND retention_state = $2"
                        .into(),
                    a,
                )
                .await?;
        }
        tx.commit().await?;
        Ok(done)
    }
}

#[async_trait]
impl RetentionRepo for SqlStore {
    async fn compress_bodies(&self, before: Timestamp, batch: u32) -> Result<u64> {
        let mut left = batch;
        let mut done = 0u64;
        while left > 0 {
            let n = left.min(COMPRESS_CHUNK);
            let round = self.compress_round(before, n).await?;
            done += round;
            if round < u64::from(n) {
                break;
            }
            left -= n;
        }
        Ok(done)
    }

    async fn drop_bodies(&self, before: Timestamp, batch: u32) -> Result<u64> {
        // Headers already gone: nothing worth a row is left.
        let deleted = self
            .run(
                "DELETE FROM usage_bodies WHERE request_id IN (SELECT request_id FROM usage_bodies \
                 WHERE retention_state IN (4, 5) AND created_at < $1 LIMIT $2)",
                args![before.millis(), limit(batch)],
            )
            .await?;
        let rest = i64::from(batch).saturating_sub(i64::try_from(deleted).unwrap_or(i64::MAX));
        if rest <= 0 {
            return Ok(deleted);
        }
        let cleared = self
            .run(
                "UPDATE usage_bodies SET request_body = NULL, response_body = NULL, retention_state = 2 \
                 WHERE request_id IN (SELECT request_id FROM usage_bodies \
                 WHERE retention_state IN (0, 1) AND created_at < $1 LIMIT $2)",
                args![before.millis(), rest],
            )
            .await?;
        Ok(deleted + cleared)
    }

    async fn drop_headers(&self, before: Timestamp, batch: u32) -> Result<u64> {
        // Bodies already gone: nothing worth a row is left.
        let deleted = self
            .run(
                "DELETE FROM usage_bodies WHERE request_id IN (SELECT request_id FROM usage_bodies \
                 WHERE retention_state = 2 AND created_at < $1 LIMIT $2)",
                args![before.millis(), limit(batch)],
            )
            .await?;
        let rest = i64::from(batch).saturating_sub(i64::try_from(deleted).unwrap_or(i64::MAX));
        if rest <= 0 {
            return Ok(deleted);
        }
        let cleared = self
            .run(
                "UPDATE usage_bodies SET request_headers = NULL, response_headers = NULL, \
                 retention_state = retention_state + 4 WHERE request_id IN (SELECT request_id \
                 FROM usage_bodies WHERE retention_state IN (0, 1) AND created_at < $1 LIMIT $2)",
                args![before.millis(), rest],
            )
            .await?;
        Ok(deleted + cleared)
    }

    async fn delete_usage(&self, before: Timestamp, batch: u32) -> Result<u64> {
        // In-flight rows this old are stale ones `fail_stale_usage` has not reached yet: they
        // finish as failed (and billed) first, and go in a later run.
        self.run(
            "DELETE FROM usage_records WHERE id IN (SELECT id FROM usage_records \
             WHERE created_at < $1 AND status NOT IN ('pending', 'streaming') LIMIT $2)",
            args![before.millis(), limit(batch)],
        )
        .await
    }

    async fn delete_traces(&self, before: Timestamp, batch: u32) -> Result<u64> {
        // attempt_traces has no time index (0003: every trace row would pay for it), but trace
        // ids are UUIDv7, so the primary key orders them by time: the id bound makes this a
        // range scan of the key. `started_at` guards against an id that is not time-ordered.
        self.run(
            "DELETE FROM attempt_traces WHERE id IN (SELECT id FROM attempt_traces \
             WHERE id < $1 AND started_at < $2 LIMIT $3)",
            args![v7_floor(before.millis()), before.millis(), limit(batch)],
        )
        .await
    }

    async fn delete_audit(&self, before: Timestamp, batch: u32) -> Result<u64> {
        self.run(
            "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log \
             WHERE created_at < $1 LIMIT $2)",
            args![before.millis(), limit(batch)],
        )
        .await
    }

    async fn delete_hourly_rollups(&self, before: Timestamp) -> Result<u64> {
        // The primary key starts with (period, bucket_start): both the MIN and the delete are
        // range reads of it.
        self.run(
            "DELETE FROM usage_rollups WHERE period = 'hour' AND bucket_start < $1 \
             AND bucket_start = (SELECT MIN(bucket_start) FROM usage_rollups WHERE period = 'hour')",
            args![before.millis()],
        )
        .await
    }

    /// One conditional `UPDATE` per table. Each row is re-checked under its row lock (a
    /// PostgreSQL `UPDATE` re-evaluates its `WHERE` on the row a concurrent writer committed;
    /// SQLite has one writer at a time), so against billing (`apply_billings`):
    /// - a charge of the new period that committed first already restarted the count with
    ///   itself and moved `period_started_at` to the new start: the row no longer matches, the
    ///   charge is kept;
    /// - a charge of the new period after the reset accumulates onto 0;
    /// - a late charge of the old period after the reset counts in lifetime spend only, as
    ///   billing treats it whenever a newer period has begun.
    ///
    /// Users' periods are calendar ones (`QuotaPeriod::period_start`); a missing start counts
    /// as an earlier period, as in billing. Providers' periods are `quota_period_days` long and
    /// anchored at `period_started_at` (`Provider::period_start`); without a quota, a length
    /// or a start they are not tracked and are left alone.
    async fn reset_quota_periods(&self, now: Timestamp) -> Result<QuotaResets> {
        let day = QuotaPeriod::Daily.period_start(now).map(Timestamp::millis);
        let month = QuotaPeriod::Monthly
            .period_start(now)
            .map(Timestamp::millis);
        let users = self
            .run(
                "UPDATE users SET used_usd = 0, \
                 period_started_at = CASE WHEN quota_period = 'monthly' THEN $2 ELSE $1 END, \
                 updated_at = $3 \
                 WHERE quota_period IN ('daily', 'monthly') AND (period_started_at IS NULL \
                 OR period_started_at < (CASE WHEN quota_period = 'monthly' THEN $2 ELSE $1 END))",
                args![day, month, now.millis()],
            )
            .await?;
        let providers = self
            .run(
                "UPDATE providers SET quota_used_usd = 0, \
                 period_started_at = period_started_at + ($1 - period_started_at) \
                   / (quota_period_days * 86400000) * (quota_period_days * 86400000) \
                 WHERE quota_usd IS NOT NULL AND quota_period_days > 0 \
                 AND period_started_at IS NOT NULL \
                 AND period_started_at + quota_period_days * 86400000 <= $1",
                args![now.millis()],
            )
            .await?;
        Ok(QuotaResets { users, providers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_round_trips() {
        let text = "{\"messages\":[{\"role\":\"user\",\"content\":\"héllo ✓\"}]}".repeat(50);
        let packed = compress(&text).unwrap();
        assert!(packed.len() < text.len());
        assert_eq!(decompress(&packed).unwrap(), text);
        assert_eq!(decompress(&compress("").unwrap()).unwrap(), "");
    }

    #[test]
    fn junk_is_an_error_not_a_panic() {
        assert!(decompress("not base64!").is_err());
        assert!(decompress(&STANDARD.encode(b"not deflate")).is_err());
    }

    #[test]
    fn v7_floor_sorts_between_ids_of_neighbouring_milliseconds() {
        use uuid::{NoContext, Timestamp as UuidTs, Uuid};
        let at = |ms: u64| {
            Uuid::new_v7(UuidTs::from_unix(
                NoContext,
                ms / 1000,
                (ms % 1000) as u32 * 1_000_000,
            ))
            .to_string()
        };
        let ms = 1_767_225_600_123u64;
        let floor = v7_floor(i64::try_from(ms).unwrap());
        assert!(at(ms - 1) < floor);
        assert!(at(ms) >= floor);
        assert!(at(ms + 1) > floor);
        assert_eq!(v7_floor(-5), "00000000-0000-0000-0000-000000000000");
    }
}
