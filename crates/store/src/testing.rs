//! Fresh databases for tests: a temporary SQLite file, or a new PostgreSQL schema on the
//! server named by `AETHER_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! Each test gets its own, so tests run in parallel without seeing each other's rows.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::SqlStore;
use crate::db::{Backend, ConnectOptions, Db, Exec};
use crate::error::StoreError;

/// The PostgreSQL server tests use.
#[must_use]
pub fn pg_url() -> String {
    std::env::var("AETHER_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A store on a fresh database, removed again by [`TestStore::teardown`] (or, for SQLite,
/// when dropped).
pub struct TestStore {
    pub store: SqlStore,
    /// A URL another process can open to reach the same database.
    pub url: String,
    dir: Option<PathBuf>,
    schema: Option<String>,
}

impl TestStore {
    pub async fn new(backend: Backend) -> Result<Self, StoreError> {
        match backend {
            Backend::Sqlite => Self::sqlite().await,
            Backend::Postgres => Self::postgres().await,
        }
    }

    pub async fn sqlite() -> Result<Self, StoreError> {
        let dir =
            std::env::temp_dir().join(format!("aether-test-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Config(e.to_string()))?;
        let url = format!("sqlite://{}", dir.join("aether.db").display());
        let store = SqlStore::open(&url, &ConnectOptions::default()).await?;
        Ok(Self {
            store,
            url,
            dir: Some(dir),
            schema: None,
        })
    }

    pub async fn postgres() -> Result<Self, StoreError> {
        let base = pg_url();
        let admin = Db::connect(
            &base,
            &ConnectOptions {
                max_connections: 1,
                pg_schema: None,
            },
        )
        .await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        sweep_stale_schemas(&admin, now).await?;
        let schema = format!(
            "aether_t_{now}_{}",
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        );
        admin
            .clone()
            .execute(format!("CREATE SCHEMA {schema}").into(), Vec::new())
            .await?;
        admin.close().await;
        let opts = ConnectOptions {
            max_connections: 8,
            pg_schema: Some(schema.clone()),
        };
        let store = SqlStore::open(&base, &opts).await?;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        Ok(Self {
            store,
            url,
            dir: None,
            schema: Some(schema),
        })
    }

    /// Closes the pool and drops the database.
    pub async fn teardown(mut self) {
        self.store.close().await;
        if let Some(schema) = self.schema.take()
            && let Ok(admin) = Db::connect(
                &pg_url(),
                &ConnectOptions {
                    max_connections: 1,
                    pg_schema: None,
                },
            )
            .await
        {
            let _ = admin
                .clone()
                .execute(
                    format!("DROP SCHEMA IF EXISTS {schema} CASCADE").into(),
                    Vec::new(),
                )
                .await;
            admin.close().await;
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Drops schemas of earlier runs older than an hour (a failed test cannot tear down).
async fn sweep_stale_schemas(admin: &Db, now: u64) -> Result<(), StoreError> {
    let rows = admin
        .clone()
        .fetch_all(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'aether\\_t\\_%'".into(),
            Vec::new(),
        )
        .await?;
    for r in rows {
        let name = r.text("schema_name")?;
        let created: u64 = name
            .split('_')
            .nth(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(now);
        if now.saturating_sub(created) > 3600
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            let _ = admin
                .clone()
                .execute(
                    format!("DROP SCHEMA IF EXISTS {name} CASCADE").into(),
                    Vec::new(),
                )
                .await;
        }
    }
    Ok(())
}
