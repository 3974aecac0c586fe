//! Users.

use aether_domain::entities::{Role, User};
use aether_domain::{Timestamp, Usd, UserId};
use async_trait::async_trait;

use crate::SqlStore;
use crate::args;
use crate::db::{Exec, Row};
use crate::error::Result;
use crate::sql::{
    Count, Filter, Page, Paged, j, json, like_pattern, oj, opt_json, opt_ts, opt_usd, parse, ts,
    usd,
};

/// Filters for listing users.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Case-insensitive substring of email or username.
    pub search: Option<String>,
    pub role: Option<Role>,
    pub is_active: Option<bool>,
}

#[async_trait]
pub trait UserRepo: Send + Sync {
    async fn insert_user(&self, u: &User) -> Result<()>;
    /// Writes the editable fields (not the spend counters, which only move atomically).
    async fn update_user(&self, u: &User) -> Result<()>;
    async fn get_user(&self, id: UserId) -> Result<Option<User>>;
    /// Exact, case-insensitive match on email or username (logins accept either).
    async fn find_user_by_login(&self, login: &str) -> Result<Option<User>>;
    async fn list_users(&self, f: &UserFilter, page: Page) -> Result<Paged<User>>;
    async fn delete_user(&self, id: UserId) -> Result<bool>;
    async fn count_users(&self, role: Option<Role>) -> Result<i64>;
    async fn set_last_login(&self, id: UserId, at: Timestamp) -> Result<()>;
    /// Starts a new quota period: `used_usd = 0`.
    async fn reset_user_quota(&self, id: UserId, at: Timestamp) -> Result<bool>;
    /// Adds spend to the period and lifetime counters atomically.
    async fn add_user_spend(&self, id: UserId, amount: Usd) -> Result<()>;
}

const COLS: &str = "id, email, username, password_hash, role, is_active, quota_usd, used_usd, total_usd, \
    quota_period, period_started_at, allowed_providers, allowed_api_formats, allowed_models, \
    model_capability_settings, last_login_at, created_at, updated_at";

fn from_row(r: &Row) -> Result<User> {
    Ok(User {
        id: parse(r, "id")?,
        email: r.text("email")?,
        username: r.text("username")?,
        password_hash: r.text("password_hash")?,
        role: parse(r, "role")?,
        is_active: r.bool("is_active")?,
        quota_usd: opt_usd(r, "quota_usd")?,
        used_usd: usd(r, "used_usd")?,
        total_usd: usd(r, "total_usd")?,
        quota_period: parse(r, "quota_period")?,
        period_started_at: opt_ts(r, "period_started_at")?,
        allowed_providers: opt_json(r, "allowed_providers")?,
        allowed_api_formats: opt_json(r, "allowed_api_formats")?,
        allowed_models: opt_json(r, "allowed_models")?,
        model_capability_settings: json(r, "model_capability_settings")?,
        last_login_at: opt_ts(r, "last_login_at")?,
        created_at: ts(r, "created_at")?,
        updated_at: ts(r, "updated_at")?,
    })
}

pub(crate) async fn insert<E: Exec>(ex: &mut E, u: &User) -> Result<()> {
    ex.execute(
        "INSERT INTO users (id, email, username, password_hash, role, is_active, quota_usd, used_usd, \
         total_usd, quota_period, period_started_at, allowed_providers, allowed_api_formats, \
         allowed_models, model_capability_settings, last_login_at, created_at, updated_at) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18)"
            .into(),
        args![
            u.id.to_string(),
            u.email.as_str(),
            u.username.as_str(),
            u.password_hash.as_str(),
            u.role.as_str(),
            u.is_active,
            u.quota_usd.map(Usd::nanos),
            u.used_usd.nanos(),
            u.total_usd.nanos(),
            u.quota_period.as_str(),
            u.period_started_at.map(Timestamp::millis),
            oj(u.allowed_providers.as_ref()),
            oj(u.allowed_api_formats.as_ref()),
            oj(u.allowed_models.as_ref()),
            j(&u.model_capability_settings),
            u.last_login_at.map(Timestamp::millis),
            u.created_at.millis(),
            u.updated_at.millis(),
        ],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl UserRepo for SqlStore {
    async fn insert_user(&self, u: &User) -> Result<()> {
        insert(&mut self.db.clone(), u).await
    }

    async fn update_user(&self, u: &User) -> Result<()> {
        self.db
            .clone()
            .execute(
                "UPDATE users SET email = $2, username = $3, password_hash = $4, role = $5, \
                 is_active = $6, quota_usd = $7, quota_period = $8, period_started_at = $9, \
                 allowed_providers = $10, allowed_api_formats = $11, allowed_models = $12, \
                 model_capability_settings = $13, updated_at = $14 WHERE id = $1"
                    .into(),
                args![
                    u.id.to_string(),
                    u.email.as_str(),
                    u.username.as_str(),
                    u.password_hash.as_str(),
                    u.role.as_str(),
                    u.is_active,
                    u.quota_usd.map(Usd::nanos),
                    u.quota_period.as_str(),
                    u.period_started_at.map(Timestamp::millis),
                    oj(u.allowed_providers.as_ref()),
                    oj(u.allowed_api_formats.as_ref()),
                    oj(u.allowed_models.as_ref()),
                    j(&u.model_capability_settings),
                    u.updated_at.millis(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>> {
        let mut f = Filter::new();
        f.cond("id = {}", id.to_string());
        f.all(&mut self.db.clone(), COLS, "users", "id")
            .await?
            .first()
            .map(from_row)
            .transpose()
    }

    async fn find_user_by_login(&self, login: &str) -> Result<Option<User>> {
        let mut f = Filter::new();
        f.cond(
            "(LOWER(email) = {} OR LOWER(username) = {})",
            login.trim().to_lowercase(),
        );
        f.all(&mut self.db.clone(), COLS, "users", "created_at")
            .await?
            .first()
            .map(from_row)
            .transpose()
    }

    async fn list_users(&self, uf: &UserFilter, page: Page) -> Result<Paged<User>> {
        let mut f = Filter::new();
        if let Some(s) = uf.search.as_deref().filter(|s| !s.trim().is_empty()) {
            f.cond(
                "(LOWER(email) LIKE {} ESCAPE '\\' OR LOWER(username) LIKE {} ESCAPE '\\')",
                like_pattern(s.trim()),
            );
        }
        if let Some(role) = uf.role {
            f.cond("role = {}", role.as_str());
        }
        if let Some(a) = uf.is_active {
            f.cond("is_active = {}", a);
        }
        f.page(
            &mut self.db.clone(),
            COLS,
            "users",
            "created_at DESC, id DESC",
            page,
            Count::Exact,
        )
        .await?
        .decode(from_row)
    }

    async fn delete_user(&self, id: UserId) -> Result<bool> {
        let n = self
            .db
            .clone()
            .execute(
                "DELETE FROM users WHERE id = $1".into(),
                args![id.to_string()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn count_users(&self, role: Option<Role>) -> Result<i64> {
        let mut f = Filter::new();
        if let Some(role) = role {
            f.cond("role = {}", role.as_str());
        }
        let rows = f
            .all(
                &mut self.db.clone(),
                "CAST(COUNT(*) AS BIGINT) AS n",
                "users",
                "1",
            )
            .await?;
        rows.first().map_or(Ok(0), |r| r.i64("n"))
    }

    async fn set_last_login(&self, id: UserId, at: Timestamp) -> Result<()> {
        self.db
            .clone()
            .execute(
                "UPDATE users SET last_login_at = $2 WHERE id = $1".into(),
                args![id.to_string(), at.millis()],
            )
            .await?;
        Ok(())
    }

    async fn reset_user_quota(&self, id: UserId, at: Timestamp) -> Result<bool> {
        let n = self
            .db
            .clone()
            .execute(
                "UPDATE users SET used_usd = 0, period_started_at = $2, updated_at = $2 WHERE id = $1"
                    .into(),
                args![id.to_string(), at.millis()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn add_user_spend(&self, id: UserId, amount: Usd) -> Result<()> {
        self.db
            .clone()
            .execute(
                "UPDATE users SET used_usd = used_usd + $2, total_usd = total_usd + $2 WHERE id = $1"
                    .into(),
                args![id.to_string(), amount.nanos()],
            )
            .await?;
        Ok(())
    }
}
