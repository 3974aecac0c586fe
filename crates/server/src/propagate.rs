//! Change propagation between instances sharing one database.
//!
//! After a configuration write, the instance that made it rebuilds its own state (the
//! `Reloader`) and then announces the change; every other instance re-reads settings and
//! rebuilds its routing snapshot. The transport is Redis pub/sub (channel `<prefix>config`)
//! when a Redis URL is configured, else PostgreSQL `LISTEN/NOTIFY` (channel `aether_config`)
//! on PostgreSQL, else nothing: SQLite is a single node. Messages carry the sender's instance
//! id, so an instance skips its own announcements. Announcements are hints, not data: a
//! missed one is caught up by the reload done after every reconnect and by the 30 s periodic
//! reconcile.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::Config;

/// Redis pub/sub channel, after the deployment's Redis prefix (`aether:config` by default).
pub const REDIS_CHANNEL: &str = "config";
/// PostgreSQL notification channel.
pub const PG_CHANNEL: &str = "aether_config";

/// How long the first subscription may take before the instance starts without it (the
/// subscriber keeps retrying in the background).
const FIRST_SUBSCRIBE: Duration = Duration::from_secs(5);
/// Upper bound of one publish or connect attempt.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Attempts to announce one change before leaving it to the periodic reconcile.
const PUBLISH_TRIES: u32 = 3;

/// What a peer does when another instance changed the configuration.
#[async_trait::async_trait]
pub trait Refresh: Send + Sync + 'static {
    async fn refresh(&self);
}

/// Announces local changes; cheap to clone, never blocks (the announcement is sent by a
/// background task, changes made in a burst are coalesced into one message).
#[derive(Clone, Default)]
pub struct Publisher {
    kick: Option<Arc<Notify>>,
}

impl Publisher {
    /// A publisher that announces nothing (single node).
    #[must_use]
    pub fn none() -> Self {
        Self { kick: None }
    }

    /// Call after the local state has been rebuilt.
    pub fn changed(&self) {
        if let Some(k) = &self.kick {
            k.notify_one();
        }
    }
}

#[derive(Clone)]
enum Transport {
    /// The client and the channel (`<prefix>config`).
    Redis(redis::Client, String),
    /// Database URL (the schema comes from its `search_path`, if any).
    Postgres(String),
}

impl Transport {
    fn name(&self) -> &'static str {
        match self {
            Self::Redis(..) => "redis",
            Self::Postgres(_) => "postgres",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Message {
    /// The sender's instance id.
    from: String,
    /// PostgreSQL: the sender's schema (notifications are per database, not per schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schema: Option<String>,
}

/// The propagation machinery of one instance.
pub struct Propagator {
    instance: String,
    transport: Option<Transport>,
    kick: Arc<Notify>,
}

impl Propagator {
    /// Chooses the transport: Redis when `redis_url` is set, else PostgreSQL when the
    /// database is PostgreSQL, else none.
    pub fn from_config(cfg: &Config) -> Result<Self> {
        let transport = if let Some(url) = &cfg.redis_url {
            Some(Transport::Redis(
                redis::Client::open(url.as_str())
                    .context("setting `redis_url`: not a valid Redis URL")?,
                format!("{}{REDIS_CHANNEL}", cfg.redis_prefix),
            ))
        } else if cfg.is_sqlite() {
            None
        } else {
            Some(Transport::Postgres(cfg.database_url.clone()))
        };
        Ok(Self {
            instance: instance_id(),
            transport,
            kick: Arc::new(Notify::new()),
        })
    }

    /// This instance's id in announcements.
    #[must_use]
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Announces one change and waits until it is sent: for one-shot CLI commands, which run
    /// no background publisher. Without a transport (SQLite) there is nobody to tell.
    pub async fn announce_once(&self) -> Result<()> {
        let Some(transport) = &self.transport else {
            return Ok(());
        };
        let schema = match transport {
            Transport::Postgres(url) => Some(current_schema(url).await?),
            Transport::Redis(..) => None,
        };
        let payload = Me {
            instance: self.instance.clone(),
            schema,
        }
        .payload();
        match transport {
            Transport::Redis(client, channel) => {
                publish_redis(client, channel, &mut None, &payload).await
            }
            Transport::Postgres(url) => {
                let pool = notify_pool(url)?;
                let r = publish_pg(&pool, &payload).await;
                pool.close().await;
                r
            }
        }
    }

    /// The handle the reloader calls after a local change.
    #[must_use]
    pub fn publisher(&self) -> Publisher {
        if self.transport.is_some() {
            Publisher {
                kick: Some(self.kick.clone()),
            }
        } else {
            Publisher::none()
        }
    }

    /// Starts the publisher, the subscriber and the refresh worker. Waits (up to 5 s) for the
    /// first subscription so that an instance that reports ready also hears changes; if
    /// that fails the subscriber keeps retrying with backoff. The returned tasks stop when
    /// aborted.
    pub async fn start(self, target: Arc<dyn Refresh>) -> Vec<JoinHandle<()>> {
        let Some(transport) = self.transport else {
            return Vec::new();
        };
        let schema = match &transport {
            Transport::Postgres(url) => match current_schema(url).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "change propagation: cannot read the current schema");
                    None
                }
            },
            Transport::Redis(..) => None,
        };
        let me = Arc::new(Me {
            instance: self.instance,
            schema,
        });
        let refresh = Arc::new(Notify::new());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let mut tasks = Vec::with_capacity(3);
        tasks.push(tokio::spawn({
            let refresh = refresh.clone();
            async move {
                loop {
                    refresh.notified().await;
                    target.refresh().await;
                }
            }
        }));
        tasks.push(tokio::spawn(subscriber(
            transport.clone(),
            me.clone(),
            refresh,
            ready_tx,
        )));
        tasks.push(tokio::spawn(publisher(transport.clone(), me, self.kick)));
        match tokio::time::timeout(FIRST_SUBSCRIBE, ready_rx).await {
            Ok(Ok(())) => {
                tracing::info!(
                    transport = transport.name(),
                    "change propagation: subscribed"
                );
            }
            _ => tracing::warn!(
                transport = transport.name(),
                "change propagation: not subscribed yet; retrying in the background (changes made on other instances arrive with the 30 s reconcile until then)"
            ),
        }
        tasks
    }
}

struct Me {
    instance: String,
    schema: Option<String>,
}

impl Me {
    fn payload(&self) -> String {
        serde_json::to_string(&Message {
            from: self.instance.clone(),
            schema: self.schema.clone(),
        })
        .unwrap_or_default()
    }

    /// Whether a received payload announces a change made by another instance of our
    /// deployment. Unreadable payloads count as changes (a reload is always safe).
    fn is_foreign(&self, payload: &str) -> bool {
        match serde_json::from_str::<Message>(payload) {
            Ok(m) => m.from != self.instance && m.schema == self.schema,
            Err(_) => true,
        }
    }
}

/// A process-unique, practically cluster-unique id.
fn instance_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}-{:x}-{}",
        std::process::id(),
        nanos,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn next_backoff(b: Duration) -> Duration {
    (b * 2).min(BACKOFF_MAX)
}

async fn current_schema(url: &str) -> Result<String> {
    let pool = notify_pool(url)?;
    let s: Option<String> = tokio::time::timeout(
        IO_TIMEOUT,
        sqlx::query_scalar("SELECT current_schema()").fetch_one(&pool),
    )
    .await
    .context("timed out")??;
    pool.close().await;
    Ok(s.unwrap_or_default())
}

fn notify_pool(url: &str) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(IO_TIMEOUT)
        .connect_lazy(url)?)
}

/// Sends one announcement per (coalesced) local change.
async fn publisher(transport: Transport, me: Arc<Me>, kick: Arc<Notify>) {
    let payload = me.payload();
    let mut redis_conn: Option<redis::aio::MultiplexedConnection> = None;
    let pg = match &transport {
        Transport::Postgres(url) => match notify_pool(url) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(error = %e, "change propagation: cannot publish on PostgreSQL");
                return;
            }
        },
        Transport::Redis(..) => None,
    };
    loop {
        kick.notified().await;
        let mut backoff = BACKOFF_MIN;
        for attempt in 1..=PUBLISH_TRIES {
            let r = match (&transport, &pg) {
                (Transport::Redis(client, channel), _) => {
                    publish_redis(client, channel, &mut redis_conn, &payload).await
                }
                (Transport::Postgres(_), Some(pool)) => publish_pg(pool, &payload).await,
                (Transport::Postgres(_), None) => return,
            };
            match r {
                Ok(()) => break,
                Err(e) if attempt == PUBLISH_TRIES => {
                    tracing::warn!(error = %e, transport = transport.name(), "change propagation: could not announce a configuration change; other instances pick it up at the next periodic reconcile");
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "change propagation: publish failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = next_backoff(backoff);
                }
            }
        }
    }
}

async fn publish_redis(
    client: &redis::Client,
    channel: &str,
    conn: &mut Option<redis::aio::MultiplexedConnection>,
    payload: &str,
) -> Result<()> {
    if conn.is_none() {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(IO_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT));
        *conn = Some(
            client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await?,
        );
    }
    let Some(c) = conn.as_mut() else {
        return Ok(());
    };
    let r: redis::RedisResult<i64> = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(c)
        .await;
    if r.is_err() {
        // Reconnect on the next attempt.
        *conn = None;
    }
    r?;
    Ok(())
}

async fn publish_pg(pool: &PgPool, payload: &str) -> Result<()> {
    tokio::time::timeout(
        IO_TIMEOUT,
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(PG_CHANNEL)
            .bind(payload)
            .execute(pool),
    )
    .await
    .context("timed out")??;
    Ok(())
}

/// Listens for announcements and wakes the refresh worker for foreign ones. Reconnects with
/// backoff; after a reconnect it refreshes once, since announcements may have been missed.
async fn subscriber(
    transport: Transport,
    me: Arc<Me>,
    refresh: Arc<Notify>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut backoff = BACKOFF_MIN;
    loop {
        let r = match &transport {
            Transport::Redis(client, channel) => {
                listen_redis(client, channel, &me, &refresh, &mut ready, &mut backoff).await
            }
            Transport::Postgres(url) => {
                listen_pg(url, &me, &refresh, &mut ready, &mut backoff).await
            }
        };
        match r {
            Ok(()) => tracing::warn!(
                transport = transport.name(),
                "change propagation: subscription closed; reconnecting"
            ),
            Err(e) => {
                tracing::warn!(error = %e, transport = transport.name(), retry_ms = backoff.as_millis() as u64, "change propagation: cannot subscribe; retrying")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = next_backoff(backoff);
    }
}

/// Marks the subscription live: the first time, unblocks `start`; later, refreshes once.
fn subscribed(
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
    refresh: &Notify,
    backoff: &mut Duration,
) {
    *backoff = BACKOFF_MIN;
    match ready.take() {
        Some(tx) => {
            let _ = tx.send(());
        }
        None => refresh.notify_one(),
    }
}

async fn listen_redis(
    client: &redis::Client,
    channel: &str,
    me: &Me,
    refresh: &Notify,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
    backoff: &mut Duration,
) -> Result<()> {
    let mut pubsub = tokio::time::timeout(IO_TIMEOUT, client.get_async_pubsub())
        .await
        .context("timed out connecting")??;
    tokio::time::timeout(IO_TIMEOUT, pubsub.subscribe(channel))
        .await
        .context("timed out subscribing")??;
    subscribed(ready, refresh, backoff);
    let mut messages = pubsub.into_on_message();
    while let Some(msg) = messages.next().await {
        let payload = String::from_utf8_lossy(msg.get_payload_bytes());
        if me.is_foreign(&payload) {
            refresh.notify_one();
        }
    }
    Ok(())
}

async fn listen_pg(
    url: &str,
    me: &Me,
    refresh: &Notify,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
    backoff: &mut Duration,
) -> Result<()> {
    let mut listener = tokio::time::timeout(IO_TIMEOUT, PgListener::connect(url))
        .await
        .context("timed out connecting")??;
    tokio::time::timeout(IO_TIMEOUT, listener.listen(PG_CHANNEL))
        .await
        .context("timed out subscribing")??;
    subscribed(ready, refresh, backoff);
    loop {
        // `None`: the connection was lost; the next call reconnects, and what was sent
        // meanwhile is lost, so refresh.
        match listener.try_recv().await? {
            Some(n) => {
                if me.is_foreign(n.payload()) {
                    refresh.notify_one();
                }
            }
            None => {
                tracing::warn!("change propagation: PostgreSQL listener reconnecting");
                refresh.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_and_other_schema_announcements_are_skipped() {
        let me = Me {
            instance: "a".into(),
            schema: Some("s1".into()),
        };
        assert!(!me.is_foreign(&me.payload()));
        let other = Me {
            instance: "b".into(),
            schema: Some("s1".into()),
        };
        assert!(me.is_foreign(&other.payload()));
        let elsewhere = Me {
            instance: "b".into(),
            schema: Some("s2".into()),
        };
        assert!(!me.is_foreign(&elsewhere.payload()));
        assert!(me.is_foreign("not json"));
    }

    struct Count(AtomicU64);

    #[async_trait::async_trait]
    impl Refresh for Count {
        async fn refresh(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn redis_propagator(url: &str) -> Propagator {
        Propagator {
            instance: instance_id(),
            transport: Some(Transport::Redis(
                redis::Client::open(url).unwrap(),
                format!("aether:{REDIS_CHANNEL}"),
            )),
            kick: Arc::new(Notify::new()),
        }
    }

    #[tokio::test]
    async fn an_unreachable_redis_delays_start_by_at_most_the_first_subscribe_wait() {
        // Nothing listens on port 1: connections are refused at once.
        let p = redis_propagator("redis://127.0.0.1:1");
        let publisher = p.publisher();
        let count = Arc::new(Count(AtomicU64::new(0)));
        let started = std::time::Instant::now();
        let tasks = p.start(count.clone()).await;
        let took = started.elapsed();
        assert!(took >= FIRST_SUBSCRIBE && took < FIRST_SUBSCRIBE + Duration::from_secs(2));
        assert_eq!(tasks.len(), 3);
        // Announcing never blocks the caller, whatever the transport's state.
        let t = std::time::Instant::now();
        publisher.changed();
        publisher.changed();
        assert!(t.elapsed() < Duration::from_millis(50));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            assert!(t.await.unwrap_err().is_cancelled());
        }
    }

    #[test]
    fn without_a_transport_nothing_is_started() {
        let p = Propagator {
            instance: instance_id(),
            transport: None,
            kick: Arc::new(Notify::new()),
        };
        assert!(p.publisher().kick.is_none());
    }

    #[test]
    fn instance_ids_differ() {
        assert_ne!(instance_id(), instance_id());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(next_backoff(BACKOFF_MIN), Duration::from_millis(200));
        assert_eq!(next_backoff(BACKOFF_MAX), BACKOFF_MAX);
    }
}
