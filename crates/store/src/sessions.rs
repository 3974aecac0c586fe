//! Login sessions (refresh-token families).

use aether_domain::entities::Session;
use aether_domain::{SessionId, Timestamp, UserId};
use async_trait::async_trait;

use crate::SqlStore;
use crate::args;
use crate::db::{Exec, Row};
use crate::error::Result;
use crate::sql::{Filter, opt_ts, parse, ts};

/// What a refresh token turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum RefreshLookup {
    /// The session's current token.
    Current(Session),
    /// A token that was already rotated away: someone replayed it.
    Reused(Session),
    Unknown,
}

#[async_trait]
pub trait SessionRepo: Send + Sync {
    async fn insert_session(&self, s: &Session) -> Result<()>;
    async fn get_session(&self, id: SessionId) -> Result<Option<Session>>;
    async fn find_refresh(&self, refresh_hash: &str) -> Result<RefreshLookup>;
    /// Swaps the refresh token if `old_hash` is still current (compare-and-swap), so two
    /// concurrent refreshes with one token cannot both win.
    async fn rotate_session(
        &self,
        id: SessionId,
        old_hash: &str,
        new_hash: &str,
        expires_at: Timestamp,
        at: Timestamp,
    ) -> Result<bool>;
    async fn revoke_session(&self, id: SessionId, at: Timestamp) -> Result<bool>;
    async fn revoke_user_sessions(&self, user: UserId, at: Timestamp) -> Result<u64>;
}

const COLS: &str = "id, user_id, refresh_hash, previous_hash, expires_at, revoked_at, ip, user_agent, \
    created_at, last_refreshed_at";

fn from_row(r: &Row) -> Result<Session> {
    Ok(Session {
        id: parse(r, "id")?,
        user_id: parse(r, "user_id")?,
        refresh_hash: r.text("refresh_hash")?,
        previous_hash: r.opt_text("previous_hash")?,
        expires_at: ts(r, "expires_at")?,
        revoked_at: opt_ts(r, "revoked_at")?,
        ip: r.opt_text("ip")?,
        user_agent: r.opt_text("user_agent")?,
        created_at: ts(r, "created_at")?,
        last_refreshed_at: opt_ts(r, "last_refreshed_at")?,
    })
}

#[async_trait]
impl SessionRepo for SqlStore {
    async fn insert_session(&self, s: &Session) -> Result<()> {
        self.db
            .clone()
            .execute(
                "INSERT INTO auth_sessions (id, user_id, refresh_hash, previous_hash, expires_at, \
                 revoked_at, ip, user_agent, created_at, last_refreshed_at) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"
                    .into(),
                args![
                    s.id.to_string(),
                    s.user_id.to_string(),
                    s.refresh_hash.as_str(),
                    s.previous_hash.clone(),
                    s.expires_at.millis(),
                    s.revoked_at.map(Timestamp::millis),
                    s.ip.clone(),
                    s.user_agent.clone(),
                    s.created_at.millis(),
                    s.last_refreshed_at.map(Timestamp::millis),
                ],
            )
            .await?;
        Ok(())
    }

    async fn get_session(&self, id: SessionId) -> Result<Option<Session>> {
        let mut f = Filter::new();
        f.cond("id = {}", id.to_string());
        f.all(&mut self.db.clone(), COLS, "auth_sessions", "id")
            .await?
            .first()
            .map(from_row)
            .transpose()
    }

    async fn find_refresh(&self, refresh_hash: &str) -> Result<RefreshLookup> {
        let mut f = Filter::new();
        f.cond("(refresh_hash = {} OR previous_hash = {})", refresh_hash);
        let rows = f
            .all(&mut self.db.clone(), COLS, "auth_sessions", "created_at")
            .await?;
        let Some(s) = rows.first().map(from_row).transpose()? else {
            return Ok(RefreshLookup::Unknown);
        };
        Ok(if s.refresh_hash == refresh_hash {
            RefreshLookup::Current(s)
        } else {
            RefreshLookup::Reused(s)
        })
    }

    async fn rotate_session(
        &self,
        id: SessionId,
        old_hash: &str,
        new_hash: &str,
        expires_at: Timestamp,
        at: Timestamp,
    ) -> Result<bool> {
        let n = self
            .db
            .clone()
            .execute(
                "UPDATE auth_sessions SET previous_hash = refresh_hash, refresh_hash = $3, \
                 expires_at = $4, last_refreshed_at = $5 \
                 WHERE id = $1 AND refresh_hash = $2 AND revoked_at IS NULL"
                    .into(),
                args![
                    id.to_string(),
                    old_hash,
                    new_hash,
                    expires_at.millis(),
                    at.millis()
                ],
            )
            .await?;
        Ok(n > 0)
    }

    async fn revoke_session(&self, id: SessionId, at: Timestamp) -> Result<bool> {
        let n = self
            .db
            .clone()
            .execute(
                "UPDATE auth_sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL"
                    .into(),
                args![id.to_string(), at.millis()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn revoke_user_sessions(&self, user: UserId, at: Timestamp) -> Result<u64> {
        self.db
            .clone()
            .execute(
                "UPDATE auth_sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL"
                    .into(),
                args![user.to_string(), at.millis()],
            )
            .await
    }
}
