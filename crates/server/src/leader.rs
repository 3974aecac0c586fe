//! One leader per cluster for the background jobs that must run once, not once per instance
//! (deleting expired gateway keys, failing stale usage records).
//!
//! - With Redis: the key `<prefix>leader:<database>/<schema>` holds the leader's id, set with
//!   `SET NX PX ttl`; the holder renews it every `renew_every` through a script that extends
//!   it only while it still holds the id, and deletes it (same check) on shutdown.
//! - PostgreSQL without Redis: a session advisory lock (`pg_try_advisory_lock`) on a dedicated
//!   connection, keyed by the schema. PostgreSQL releases it when the connection ends, so a
//!   crashed leader loses it at once; the holder pings the connection every `renew_every`
//!   and steps down if it fails.
//! - SQLite: a single node, always the leader.
//!
//! Whenever the lease cannot be confirmed the instance stops being leader (jobs skip a turn
//! rather than run twice).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::Config;

/// Timing of the lease and of the jobs; the defaults are for production, tests shorten them.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// How long a Redis lease lasts without renewal: another instance takes over at most
    /// this long (plus one `renew_every`) after the leader died.
    pub ttl: Duration,
    /// How often the lease is renewed (Redis) or the lock's connection checked (PostgreSQL),
    /// and how often a follower tries to take over.
    pub renew_every: Duration,
    /// How often the leader runs the cluster-wide jobs.
    pub jobs_every: Duration,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            renew_every: Duration::from_secs(10),
            jobs_every: Duration::from_secs(60),
        }
    }
}

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Takes the lease, or renews it if we hold it: 1 when we hold it afterwards.
const ACQUIRE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
";

/// Deletes the lease only if we hold it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

// The advisory lock's key is one per database schema, so separate deployments (or test
// schemas) on one server do not share a leader.
const PG_LOCK: &str =
    "SELECT pg_try_advisory_lock(hashtextextended('aether-leader:' || current_schema(), 0))";
const PG_UNLOCK: &str =
    "SELECT pg_advisory_unlock(hashtextextended('aether-leader:' || current_schema(), 0))";

enum Method {
    Always,
    Redis { client: redis::Client, key: String },
    Postgres { url: String },
}

/// Whether this instance is the leader; shared by the lease task and the jobs.
#[derive(Clone)]
pub struct Leader {
    state: Arc<State>,
}

struct State {
    leader: AtomicBool,
    stop: Notify,
    /// Stop without releasing the lease (tests: a crashed leader).
    crash: AtomicBool,
}

impl Leader {
    /// True while this instance holds the lease.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.state.leader.load(Ordering::SeqCst)
    }

    /// Makes this instance stop competing without releasing the lease, as a crash would:
    /// the others take over only when the lease lapses (Redis: its TTL; PostgreSQL: when the
    /// lock's session ends). For tests.
    pub fn simulate_crash(&self) {
        self.state.crash.store(true, Ordering::SeqCst);
        self.state.stop.notify_one();
    }

    fn set(&self, v: bool) {
        let was = self.state.leader.swap(v, Ordering::SeqCst);
        if was != v {
            if v {
                tracing::info!("this instance is now the leader for background jobs");
            } else {
                tracing::info!("this instance is no longer the leader for background jobs");
            }
        }
    }
}

/// The running lease task.
pub struct LeaderTask {
    pub leader: Leader,
    task: Option<JoinHandle<()>>,
}

impl LeaderTask {
    /// Starts competing for the lease as configured by `cfg`.
    pub async fn start(cfg: &Config, timing: LeaderConfig) -> Result<Self> {
        let method = if cfg.is_sqlite() {
            Method::Always
        } else if let Some(url) = &cfg.redis_url {
            let client = redis::Client::open(url.as_str())
                .context("setting `redis_url`: not a valid Redis URL")?;
            let scope = database_scope(&cfg.database_url).await?;
            Method::Redis {
                client,
                key: format!("{}leader:{scope}", cfg.redis_prefix),
            }
        } else {
            Method::Postgres {
                url: cfg.database_url.clone(),
            }
        };
        let leader = Leader {
            state: Arc::new(State {
                leader: AtomicBool::new(false),
                stop: Notify::new(),
                crash: AtomicBool::new(false),
            }),
        };
        let task = match method {
            Method::Always => {
                leader.set(true);
                None
            }
            Method::Redis { client, key } => Some(tokio::spawn(run_redis(
                client,
                key,
                instance_id(),
                timing,
                leader.clone(),
            ))),
            Method::Postgres { url } => Some(tokio::spawn(run_pg(url, timing, leader.clone()))),
        };
        Ok(Self { leader, task })
    }

    /// Releases the lease (so another instance takes over at once) and ends the task; waits
    /// at most a few seconds.
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            self.leader.state.stop.notify_one();
            let abort = t.abort_handle();
            if tokio::time::timeout(IO_TIMEOUT, t).await.is_err() {
                abort.abort();
            }
        }
        self.leader.set(false);
    }
}

impl Drop for LeaderTask {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// `<database>/<schema>` of the PostgreSQL URL.
async fn database_scope(url: &str) -> Result<String> {
    let mut conn = tokio::time::timeout(IO_TIMEOUT, PgConnection::connect(url))
        .await
        .context("timed out connecting to the database")?
        .context("cannot connect to the database")?;
    let scope: String = sqlx::query_scalar("SELECT current_database() || '/' || current_schema()")
        .fetch_one(&mut conn)
        .await
        .context("cannot read the database schema")?;
    let _ = conn.close().await;
    Ok(scope)
}

fn instance_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}-{:x}-{:x}",
        std::process::id(),
        nanos,
        rand::random::<u64>()
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

async fn run_redis(
    client: redis::Client,
    key: String,
    id: String,
    timing: LeaderConfig,
    leader: Leader,
) {
    let acquire = redis::Script::new(ACQUIRE);
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    loop {
        if conn.is_none() {
            let c = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(IO_TIMEOUT))
                .set_response_timeout(Some(IO_TIMEOUT));
            match client
                .get_multiplexed_async_connection_with_config(&c)
                .await
            {
                Ok(c) => conn = Some(c),
                Err(e) => tracing::warn!(error = %e, "leader lease: cannot connect to Redis"),
            }
        }
        let held = match conn.as_mut() {
            Some(c) => {
                let r: redis::RedisResult<i64> = acquire
                    .key(&key)
                    .arg(&id)
                    .arg(millis(timing.ttl))
                    .invoke_async(c)
                    .await;
                match r {
                    Ok(v) => v == 1,
                    Err(e) => {
                        tracing::warn!(error = %e, "leader lease: Redis did not answer");
                        conn = None;
                        false
                    }
                }
            }
            None => false,
        };
        leader.set(held);
        tokio::select! {
            () = tokio::time::sleep(timing.renew_every) => {}
            () = leader.state.stop.notified() => break,
        }
    }
    if let Some(c) = conn.as_mut()
        && !leader.state.crash.load(Ordering::SeqCst)
    {
        let r: redis::RedisResult<i64> = redis::Script::new(RELEASE)
            .key(&key)
            .arg(&id)
            .invoke_async(c)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "leader lease: could not release it; it expires by itself");
        }
    }
    leader.set(false);
}

async fn run_pg(url: String, timing: LeaderConfig, leader: Leader) {
    let mut conn: Option<PgConnection> = None;
    let mut held = false;
    loop {
        if conn.is_none() {
            held = false;
            match tokio::time::timeout(IO_TIMEOUT, PgConnection::connect(&url)).await {
                Ok(Ok(c)) => conn = Some(c),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "leader lock: cannot connect to PostgreSQL")
                }
                Err(_) => tracing::warn!("leader lock: timed out connecting to PostgreSQL"),
            }
        }
        if let Some(c) = conn.as_mut() {
            // Holding: check the session (and so the lock) is alive. Else: try to take it.
            let r = if held {
                tokio::time::timeout(
                    IO_TIMEOUT,
                    sqlx::query_scalar::<_, bool>("SELECT TRUE").fetch_one(c),
                )
                .await
            } else {
                tokio::time::timeout(
                    IO_TIMEOUT,
                    sqlx::query_scalar::<_, bool>(PG_LOCK).fetch_one(c),
                )
                .await
            };
            match r {
                Ok(Ok(v)) => held = v,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "leader lock: PostgreSQL did not answer");
                    conn = None;
                    held = false;
                }
                Err(_) => {
                    tracing::warn!("leader lock: PostgreSQL timed out");
                    conn = None;
                    held = false;
                }
            }
        }
        leader.set(held);
        tokio::select! {
            () = tokio::time::sleep(timing.renew_every) => {}
            () = leader.state.stop.notified() => break,
        }
    }
    leader.set(false);
    if let Some(mut c) = conn {
        if leader.state.crash.load(Ordering::SeqCst) {
            // Dropped without a word, as if the process died: the server ends the session.
            drop(c);
            return;
        }
        if held {
            let _ = tokio::time::timeout(
                IO_TIMEOUT,
                sqlx::query_scalar::<_, bool>(PG_UNLOCK).fetch_one(&mut c),
            )
            .await;
        }
        // Ending the session releases the lock in any case.
        let _ = tokio::time::timeout(IO_TIMEOUT, c.close()).await;
    }
}

/// Runs the cluster-wide jobs every `every`, on whichever instance is the leader at the time.
pub fn spawn_jobs(
    leader: Leader,
    admin: aether_admin::Admin,
    store: aether_store::DynStore,
    every: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if leader.is_leader() {
                run_jobs(&admin, &store).await;
            }
        }
    })
}

/// How long past the request timeout an in-flight usage record may stay unsettled before it
/// counts as abandoned (the usage writer may lag behind the request).
pub const STALE_MARGIN: Duration = Duration::from_secs(300);

/// One run of the cluster-wide jobs: delete expired gateway keys that asked for it; mark
/// usage records still pending/streaming after `request_timeout_secs` + [`STALE_MARGIN`] as
/// failed (`stale`) — their request died with its instance.
pub async fn run_jobs(admin: &aether_admin::Admin, store: &aether_store::DynStore) {
    match admin.delete_expired_keys().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(deleted = n, "expired gateway keys deleted"),
        Err(e) => tracing::warn!(error = %e, "could not delete expired keys"),
    }
    let timeout = admin.settings().request_timeout_secs() + STALE_MARGIN.as_secs();
    let cutoff =
        aether_domain::Timestamp::now().plus_secs(-i64::try_from(timeout).unwrap_or(i64::MAX));
    match store.fail_stale_usage(cutoff).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(records = n, "stale in-flight usage records marked failed"),
        Err(e) => tracing::warn!(error = %e, "could not fail stale usage records"),
    }
    crate::jobs::rollups::run(admin, store).await;
    crate::jobs::retention::run(admin, store).await;
}
