//! Aether's persistent store.
//!
//! Narrow repository traits per aggregate ([`UserRepo`], [`ApiKeyRepo`], [`ProviderRepo`],
//! [`ModelRepo`], [`UsageRepo`], [`AdminRepo`], [`SessionRepo`], [`ConfigRepo`]) and their
//! implementation [`SqlStore`] over SQLite or PostgreSQL, chosen at runtime from the database
//! URL. The repositories are written once in SQL both engines speak; `db` confines every
//! backend difference (connection set-up, argument binding, row decoding, migrations). One
//! contract test suite (`tests/contract.rs`) runs every operation against both.

pub mod admin;
pub mod api_keys;
pub mod config;
pub mod db;
pub mod error;
mod migrations;
pub mod models;
pub mod providers;
pub mod retention;
pub mod rollups;
pub mod sessions;
mod sql;
pub mod testing;
pub mod usage;
pub mod users;

use std::sync::Arc;

pub use admin::{AdminRepo, AuditFilter};
pub use api_keys::{ApiKeyFilter, ApiKeyRepo, BalanceChange};
pub use config::{ConfigChange, ConfigRepo};
pub use db::{Backend, ConnectOptions, Db};
pub use error::StoreError;
pub use models::{GlobalModelFilter, ModelRepo};
pub use providers::{ProviderFilter, ProviderRepo};
pub use retention::RetentionRepo;
pub use rollups::RollupRepo;
pub use sessions::{RefreshLookup, SessionRepo};
pub use sql::{COUNT_AHEAD, Page, Paged};
pub use sqlx::Error as SqlxError;
pub use usage::{
    Billing, HealthBucket, HealthQuery, HealthState, HeatCell, MAX_HEALTH_BUCKETS, UsageBatch,
    UsageFilter, UsageGroup, UsageGroupRow, UsageRepo, UsageSummary,
};
pub use users::{UserFilter, UserRepo};

/// Everything the services need from storage.
#[async_trait::async_trait]
pub trait Store:
    UserRepo
    + ApiKeyRepo
    + ProviderRepo
    + ModelRepo
    + UsageRepo
    + RollupRepo
    + RetentionRepo
    + AdminRepo
    + SessionRepo
    + ConfigRepo
{
    fn backend(&self) -> Backend;
    /// A round trip to the database (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// SQLite: a consistent copy of the database file at `path`.
    async fn backup_to(&self, path: &str) -> Result<(), StoreError>;
}

pub type DynStore = Arc<dyn Store>;

/// The SQL implementation of every repository.
#[derive(Clone, Debug)]
pub struct SqlStore {
    db: Db,
}

impl SqlStore {
    /// Connects and applies migrations.
    pub async fn open(url: &str, opts: &ConnectOptions) -> Result<Self, StoreError> {
        let db = Db::connect(url, opts).await?;
        db.migrate().await?;
        Ok(Self { db })
    }

    #[must_use]
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn close(&self) {
        self.db.close().await;
    }
}

#[async_trait::async_trait]
impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.db.backend()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await
    }

    async fn backup_to(&self, path: &str) -> Result<(), StoreError> {
        self.db.sqlite_backup(path).await
    }
}
