//! The database driver layer: the only code that knows there are two backends.
//!
//! Repositories are written once, in the SQL that SQLite and PostgreSQL both speak (`$n`
//! placeholders, `ON CONFLICT`, `RETURNING`, casts on aggregates), against the [`Exec`] trait.
//! This module binds their arguments and decodes their rows for each backend, and owns
//! connection set-up and migrations. Column types are limited to what both decode alike:
//! 64-bit integers, text and booleans.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Postgres, Row as _, Sqlite};

use crate::error::StoreError;

/// Which SQL engine is behind a [`Db`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool to either backend. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: Pool,
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Options for [`Db::connect`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub max_connections: u32,
    /// PostgreSQL only: run every connection with this `search_path` (tests use a schema each).
    pub pg_schema: Option<String>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            pg_schema: None,
        }
    }
}

impl Db {
    /// Connects by URL: `sqlite:` (file created if missing; WAL, 5 s busy timeout, foreign
    /// keys on) or `postgres:`/`postgresql:`.
    pub async fn connect(url: &str, opts: &ConnectOptions) -> Result<Self, StoreError> {
        let pool = if url.starts_with("sqlite:") {
            let o = SqliteConnectOptions::from_str(url)
                .map_err(StoreError::Database)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
                // Hot index pages stay in memory (16 MiB page cache instead of 2 MiB).
                .pragma("cache_size", "-16384")
                .pragma("temp_store", "memory");
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(opts.max_connections.max(1))
                    .connect_with(o)
                    .await
                    .map_err(StoreError::Database)?,
            )
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            // JIT compilation is off for Aether's sessions: it kicks in only for the console's
            // large aggregates, and there it cost 70–280 ms of compile time per query (measured
            // at five million usage rows, bench/results/scale-explain.txt) for no gain.
            let mut o = PgConnectOptions::from_str(url)
                .map_err(StoreError::Database)?
                .options([("jit", "off")]);
            if let Some(schema) = &opts.pg_schema {
                o = o.options([("search_path", schema.as_str())]);
            }
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(opts.max_connections.max(1))
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(o)
                    .await
                    .map_err(StoreError::Database)?,
            )
        } else {
            return Err(StoreError::Config(format!(
                "database URL must start with `sqlite:` or `postgres:` (got `{}`)",
                redact_url(url)
            )));
        };
        Ok(Self { pool })
    }

    #[must_use]
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies the embedded migrations of this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let m = crate::migrations::migrator(self.backend());
        match &self.pool {
            Pool::Sqlite(p) => m.run(p).await,
            Pool::Postgres(p) => m.run(p).await,
        }
        .map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// Begins a transaction. SQLite transactions take the write lock up front
    /// (`BEGIN IMMEDIATE`) so two writers never deadlock upgrading a read lock.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match &self.pool {
            Pool::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut me = self.clone();
        me.fetch_all("SELECT 1 AS one".into(), Vec::new())
            .await
            .map(|_| ())
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }

    /// SQLite only: writes a consistent copy of the database to `path` (`VACUUM INTO`).
    pub async fn sqlite_backup(&self, path: &str) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query("VACUUM INTO $1").bind(path).execute(p).await?;
                Ok(())
            }
            Pool::Postgres(_) => Err(StoreError::Config(
                "backups of PostgreSQL are taken with pg_dump".into(),
            )),
        }
    }
}

/// Hides the password of a database URL in messages.
#[must_use]
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// An open transaction on either backend. Dropped without [`Tx::commit`] = rolled back.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(t) => t.commit().await?,
            Self::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }
}

/// A bound parameter. Every column is one of these three types.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
    Bool(Option<bool>),
}

macro_rules! arg_from {
    ($($t:ty => $v:ident $(as $cast:ty)?),* $(,)?) => {$(
        impl From<$t> for Arg {
            fn from(x: $t) -> Self { Arg::$v(Some(x $(as $cast)?)) }
        }
        impl From<Option<$t>> for Arg {
            fn from(x: Option<$t>) -> Self { Arg::$v(x.map(|x| x $(as $cast)?)) }
        }
    )*};
}

arg_from!(i64 => Int, i32 => Int as i64, u32 => Int as i64, u16 => Int as i64, bool => Bool, String => Text);

impl From<u64> for Arg {
    fn from(x: u64) -> Self {
        Self::Int(Some(i64::try_from(x).unwrap_or(i64::MAX)))
    }
}

impl From<&str> for Arg {
    fn from(x: &str) -> Self {
        Self::Text(Some(x.to_string()))
    }
}

impl From<Option<&str>> for Arg {
    fn from(x: Option<&str>) -> Self {
        Self::Text(x.map(str::to_string))
    }
}

/// Builds an argument list: `args![a, b, c]`.
#[macro_export]
macro_rules! args {
    ($($a:expr),* $(,)?) => { vec![$($crate::db::Arg::from($a)),*] };
}

/// Something SQL runs against: the pool or an open transaction.
pub trait Exec: Send {
    fn backend(&self) -> Backend;

    /// Runs a statement, returning the number of affected rows.
    fn execute(
        &mut self,
        sql: Cow<'static, str>,
        args: Vec<Arg>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    fn fetch_all(
        &mut self,
        sql: Cow<'static, str>,
        args: Vec<Arg>,
    ) -> impl Future<Output = Result<Vec<Row>, StoreError>> + Send;

    fn fetch_optional(
        &mut self,
        sql: Cow<'static, str>,
        args: Vec<Arg>,
    ) -> impl Future<Output = Result<Option<Row>, StoreError>> + Send;
}

macro_rules! bind_all {
    ($sql:expr, $args:expr) => {{
        let mut q = sqlx::query(AssertSqlSafe($sql));
        for a in $args {
            q = match a {
                Arg::Int(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
                Arg::Bool(v) => q.bind(v),
            };
        }
        q
    }};
}

macro_rules! run_on {
    ($conn:expr, $sql:expr, $args:expr, execute) => {
        bind_all!($sql, $args)
            .execute($conn)
            .await
            .map(|r| r.rows_affected())
            .map_err(StoreError::from)
    };
    ($conn:expr, $sql:expr, $args:expr, fetch_all, $wrap:path) => {
        bind_all!($sql, $args)
            .fetch_all($conn)
            .await
            .map(|rows| rows.into_iter().map(|r| Row($wrap(r))).collect())
            .map_err(StoreError::from)
    };
    ($conn:expr, $sql:expr, $args:expr, fetch_optional, $wrap:path) => {
        bind_all!($sql, $args)
            .fetch_optional($conn)
            .await
            .map(|r| r.map(|r| Row($wrap(r))))
            .map_err(StoreError::from)
    };
}

impl Exec for Db {
    fn backend(&self) -> Backend {
        Self::backend(self)
    }

    async fn execute(&mut self, sql: Cow<'static, str>, args: Vec<Arg>) -> Result<u64, StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => run_on!(p, sql, args, execute),
            Pool::Postgres(p) => run_on!(p, sql, args, execute),
        }
    }

    async fn fetch_all(
        &mut self,
        sql: Cow<'static, str>,
        args: Vec<Arg>,
    ) -> Result<Vec<Row>, StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => run_on!(p, sql, args, fetch_all, RowInner::Sqlite),
            Pool::Postgres(p) => run_on!(p, sql, args, fetch_all, RowInner::Postgres),
        }
    }

    async fn fetch_optional(
        &mut self,
        sql: Cow<'static, str>,
        args: Vec<Arg>,
    ) -> Result<Option<Row>, StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => run_on!(p, sql, args, fetch_optional, RowInner::Sqlite),
            Pool::Postgres(p) => run_on!(p, sql, args, fetch_optional, RowInner::Postgres),
        }
    }
}

impl Exec for Tx {
    fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    async fn execute(&mut self, sql: Cow<'static, str>, args: Vec<Arg>) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(t) => run_on!(&mut **t, sql, args, execute),
            Self::Postgres(t) => run_on!(&mut **t, sql, args, execute),
        }
    }

    async fn fetch_all(
        &mut self,
        sql: Cow<'static, str>,
        args: Vec<Arg>,
    ) -> Result<Vec<Row>, StoreError> {
        match self {
            Self::Sqlite(t) => run_on!(&mut **t, sql, args, fetch_all, RowInner::Sqlite),
            Self::Postgres(t) => run_on!(&mut **t, sql, args, fetch_all, RowInner::Postgres),
        }
    }

    async fn fetch_optional(
        &mut self,
        sql: Cow<'static, str>,
        args: Vec<Arg>,
    ) -> Result<Option<Row>, StoreError> {
        match self {
            Self::Sqlite(t) => run_on!(&mut **t, sql, args, fetch_optional, RowInner::Sqlite),
            Self::Postgres(t) => run_on!(&mut **t, sql, args, fetch_optional, RowInner::Postgres),
        }
    }
}

/// A result row of either backend.
pub struct Row(RowInner);

enum RowInner {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

macro_rules! get {
    ($self:ident, $col:ident, $t:ty) => {
        match &$self.0 {
            RowInner::Sqlite(r) => r.try_get::<$t, _>($col),
            RowInner::Postgres(r) => r.try_get::<$t, _>($col),
        }
        .map_err(|e| StoreError::Corrupt(format!("column `{}`: {e}", $col)))
    };
}

impl Row {
    pub fn i64(&self, col: &str) -> Result<i64, StoreError> {
        get!(self, col, i64)
    }
    pub fn opt_i64(&self, col: &str) -> Result<Option<i64>, StoreError> {
        get!(self, col, Option<i64>)
    }
    pub fn text(&self, col: &str) -> Result<String, StoreError> {
        get!(self, col, String)
    }
    pub fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        get!(self, col, Option<String>)
    }
    pub fn bool(&self, col: &str) -> Result<bool, StoreError> {
        get!(self, col, bool)
    }
    pub fn opt_bool(&self, col: &str) -> Result<Option<bool>, StoreError> {
        get!(self, col, Option<bool>)
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://aether:s3cret@db:5432/aether"),
            "postgres://aether:***@db:5432/aether"
        );
        assert_eq!(
            redact_url("sqlite://data/aether.db"),
            "sqlite://data/aether.db"
        );
    }
}
