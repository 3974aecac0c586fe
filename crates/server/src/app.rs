//! Wiring: store, secrets, services, routes, middleware, background refresh and the HTTP
//! server with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_admin::{Admin, AdminConfig, ChangeNotifier};
use aether_coord::Local;
use aether_domain::Timestamp;
use aether_domain::net::{ClientIp, IpRuleSet, client_ip};
use aether_gateway::Gateway;
use aether_gateway::error::GwError;
use aether_gateway::usage::WriterHandle;
use aether_store::{ConnectOptions, DynStore, SqlStore};
use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::propagate::{Propagator, Publisher, Refresh};
use crate::secrets;

/// Live state shared by the middleware, refreshed when configuration changes.
pub struct Live {
    pub ip_rules: ArcSwap<IpRuleSet>,
    pub trusted_proxies: usize,
}

/// Rebuilds everything the request path keeps in memory: IP rules and the routing snapshot.
/// Reloads are serialized so a slow, older load can never overwrite a newer one.
pub struct Reloader {
    store: DynStore,
    live: Arc<Live>,
    gateway: Gateway,
    lock: tokio::sync::Mutex<()>,
    /// Announces committed changes to the other instances (see `propagate`).
    publisher: Publisher,
}

impl Reloader {
    pub async fn reload(&self) -> Result<()> {
        let _serial = self.lock.lock().await;
        let rules = self.store.list_ip_rules().await?;
        self.live
            .ip_rules
            .store(Arc::new(IpRuleSet::new(&rules, Timestamp::now())));
        self.gateway.reload().await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ChangeNotifier for Reloader {
    async fn config_changed(&self) {
        if let Err(e) = self.reload().await {
            // The periodic reconcile retries; the change itself is committed.
            tracing::error!(error = %e, "configuration changed but the in-memory state could not be rebuilt");
        }
        // The change is committed either way: tell the other instances.
        self.publisher.changed();
    }

    fn live(&self) -> Option<Arc<dyn aether_coord::LiveState>> {
        Some(self.gateway.live().clone())
    }
}

/// What this instance does when another instance changed the configuration: the same as the
/// periodic reconcile, at once.
struct PeerChange {
    admin: Admin,
    reloader: Arc<Reloader>,
}

#[async_trait::async_trait]
impl Refresh for PeerChange {
    async fn refresh(&self) {
        if let Err(e) = self.admin.reload_settings().await {
            tracing::warn!(error = %e, "could not reload settings after a change on another instance");
        }
        if let Err(e) = self.reloader.reload().await {
            tracing::warn!(error = %e, "could not rebuild the in-memory state after a change on another instance");
        }
    }
}

/// A built application, ready to serve.
pub struct App {
    pub admin: Admin,
    pub gateway: Gateway,
    pub store: DynStore,
    pub live: Arc<Live>,
    reloader: Arc<Reloader>,
    tasks: Vec<JoinHandle<()>>,
    writer: Option<WriterHandle>,
    /// The lease that makes one instance of a cluster run the background jobs.
    leader: crate::leader::LeaderTask,
}

/// The live state: in Redis when `redis_url` is set (cluster mode; Redis must answer at
/// start), else in this process.
async fn live_state(cfg: &Config) -> Result<Arc<dyn aether_coord::LiveState>> {
    let Some(url) = &cfg.redis_url else {
        return Ok(Arc::new(Local::default()));
    };
    let mut redis = aether_coord::RedisConfig::new(url.clone());
    redis.prefix.clone_from(&cfg.redis_prefix);
    let live = aether_coord::RedisLive::connect(&redis, Arc::new(aether_coord::SystemClock))
        .await
        .context("setting `redis_url` (--redis-url, AETHER_REDIS_URL): Redis does not answer")?;
    Ok(Arc::new(live))
}

impl App {
    /// Opens the store (applying migrations), loads secrets, builds the services and creates
    /// the first admin on an empty database.
    pub async fn build(cfg: &Config) -> Result<Self> {
        Self::build_with(cfg, crate::leader::LeaderConfig::default()).await
    }

    /// [`App::build`] with the leader lease and job timing given (tests shorten them).
    pub async fn build_with(cfg: &Config, timing: crate::leader::LeaderConfig) -> Result<Self> {
        let store = open_store(cfg).await?;
        let secrets = secrets::load(cfg)?;
        let propagator = Propagator::from_config(cfg)?;
        let journal_dir = cfg.data_dir.join("usage-journal");
        let journal = aether_gateway::journal::Journal::open(&journal_dir).with_context(|| {
            format!("cannot open the usage journal in {}", journal_dir.display())
        })?;
        let (gateway, writer) = Gateway::start(
            store.clone(),
            secrets.cipher.clone(),
            live_state(cfg).await?,
            Some(journal),
        )
        .await
        .context("cannot load the routing snapshot")?;
        let live = Arc::new(Live {
            ip_rules: ArcSwap::from_pointee(IpRuleSet::default()),
            trusted_proxies: cfg.trusted_proxies,
        });
        let reloader = Arc::new(Reloader {
            store: store.clone(),
            live: live.clone(),
            gateway: gateway.clone(),
            lock: tokio::sync::Mutex::new(()),
            publisher: propagator.publisher(),
        });
        let admin = Admin::new(
            store.clone(),
            secrets.cipher,
            AdminConfig::new(secrets.jwt_secret),
            reloader.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the management services: {e}"))?;
        bootstrap_admin(&admin, cfg).await?;
        let jobs_every = timing.jobs_every;
        let leader = crate::leader::LeaderTask::start(cfg, timing).await?;
        let mut app = Self {
            admin,
            gateway,
            store,
            live,
            reloader,
            tasks: Vec::new(),
            writer: Some(writer),
            leader,
        };
        app.reloader.reload().await?;
        app.tasks.push(app.spawn_reconciler());
        app.tasks.push(crate::leader::spawn_jobs(
            app.leader(),
            app.admin.clone(),
            app.store.clone(),
            jobs_every,
        ));
        let peer = Arc::new(PeerChange {
            admin: app.admin.clone(),
            reloader: app.reloader.clone(),
        });
        app.tasks.extend(propagator.start(peer).await);
        Ok(app)
    }

    /// Whether this instance is the cluster's leader for background jobs (see `leader`).
    #[must_use]
    pub fn leader(&self) -> crate::leader::Leader {
        self.leader.leader.clone()
    }

    /// Every 30 s, on every instance, re-reads settings and rebuilds the in-memory state as a
    /// safety net: another process (the CLI, another instance) may have changed the database,
    /// and IP rules expire. Jobs that must run once per cluster (deleting expired keys) run on
    /// the leader only (`leader::spawn_jobs`).
    fn spawn_reconciler(&self) -> JoinHandle<()> {
        let reloader = self.reloader.clone();
        let admin = self.admin.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                if let Err(e) = admin.reload_settings().await {
                    tracing::warn!(error = %e, "could not reload settings");
                }
                if let Err(e) = reloader.reload().await {
                    tracing::warn!(error = %e, "could not rebuild the in-memory state");
                }
            }
        })
    }

    /// The complete HTTP application.
    pub fn router(&self) -> Router {
        let health = Router::new()
            .route(
                "/health",
                get(|| async { axum::Json(json!({ "status": "ok" })) }),
            )
            .route("/ready", get(ready))
            .with_state((self.store.clone(), self.gateway.live().clone()));
        let metrics = Router::new()
            .route("/metrics", get(metrics))
            .with_state(self.gateway.clone());
        Router::new()
            .merge(health)
            .merge(metrics)
            .merge(aether_admin::api::router(self.admin.clone()))
            .merge(aether_gateway::routes::router(self.gateway.clone()))
            .merge(aether_console::router(self.admin.clone()))
            .fallback(not_found)
            .layer(crate::probe::layer(&self.gateway))
            .layer(middleware::from_fn(access_log))
            .layer(middleware::from_fn_with_state(
                self.live.clone(),
                client_guard,
            ))
    }

    /// Serves on `listener` until `shutdown` resolves, then lets in-flight requests finish for
    /// up to `grace`.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> Result<()> {
        let router = self.router();
        let (tx, rx) = tokio::sync::watch::channel(false);
        // Streams are many small writes: without TCP_NODELAY, Nagle's algorithm and delayed
        // ACKs hold each one back for tens of milliseconds.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let mut rx = rx;
            let _ = rx.wait_for(|v| *v).await;
        });
        let mut server = std::pin::pin!(server.into_future());
        tokio::select! {
            r = &mut server => r.context("server error")?,
            () = shutdown => {
                tracing::info!(grace_secs = grace.as_secs(), "shutting down: no new connections; finishing in-flight requests");
                let _ = tx.send(true);
                if tokio::time::timeout(grace, &mut server).await.is_err() {
                    // Cut what is left (each recorded as failed, `server_shutdown`, and told
                    // so in its own dialect) before the usage writer drains, so no record is
                    // left pending or streaming.
                    tracing::warn!("in-flight requests did not finish within the grace period; cutting them");
                    self.gateway.abort_in_flight();
                    if tokio::time::timeout(CUT_GRACE, &mut server).await.is_err() {
                        tracing::warn!("connections still open after cutting the in-flight requests");
                    }
                }
            }
        }
        for t in &self.tasks {
            t.abort();
        }
        // Hand the lease over at once rather than after its TTL.
        self.leader.stop().await;
        if let Some(w) = self.writer.take() {
            w.shutdown(grace.max(Duration::from_secs(5))).await;
        }
        Ok(())
    }
}

/// How long connections get to deliver the error that ends a cut request or stream.
const CUT_GRACE: Duration = Duration::from_secs(2);

impl Drop for App {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub async fn open_store(cfg: &Config) -> Result<DynStore> {
    if cfg.is_sqlite() {
        std::fs::create_dir_all(&cfg.data_dir).with_context(|| {
            format!(
                "setting `data_dir`: cannot create {}",
                cfg.data_dir.display()
            )
        })?;
    }
    let store = SqlStore::open(&cfg.database_url, &ConnectOptions::default())
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                aether_store::db::redact_url(&cfg.database_url)
            )
        })?;
    Ok(Arc::new(store))
}

#[allow(clippy::print_stdout)] // the generated password is shown once, on the console
async fn bootstrap_admin(admin: &Admin, cfg: &Config) -> Result<()> {
    let email = cfg
        .admin_email
        .clone()
        .unwrap_or_else(|| "admin@aether.local".to_string());
    let created = admin
        .bootstrap_admin(&email, cfg.admin_password.as_deref())
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create the first admin (AETHER_ADMIN_EMAIL / AETHER_ADMIN_PASSWORD): {e}"
            )
        })?;
    if let Some((user, generated)) = created {
        match generated {
            Some(pw) => println!(
                "Created the first admin account.\n  email:    {}\n  password: {pw}\nThis password is shown only once. Sign in and change it.",
                user.email
            ),
            None => tracing::info!(email = %user.email, "created the first admin account"),
        }
    }
    Ok(())
}

/// Ready when the database answers and, in cluster mode, Redis does too (503 otherwise, with
/// which one failed). `/health` is the liveness check that ignores both.
async fn ready(
    State((store, live)): State<(DynStore, Arc<dyn aether_coord::LiveState>)>,
) -> Response {
    let database = match tokio::time::timeout(Duration::from_secs(3), store.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            "error"
        }
        Err(_) => "timeout",
    };
    let redis = match live.ping().await {
        None => None,
        Some(Ok(())) => Some("ok"),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "readiness: Redis unreachable");
            Some("error")
        }
    };
    let ok = database == "ok" && redis.is_none_or(|r| r == "ok");
    let mut body = json!({
        "status": if ok { "ready" } else { "unavailable" },
        "database": database,
    });
    if let Some(r) = redis {
        body["redis"] = json!(r);
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Prometheus text exposition (unauthenticated; IP rules apply like on every route).
async fn metrics(State(gw): State<Gateway>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(aether_gateway::metrics::CONTENT_TYPE),
        )],
        aether_gateway::metrics::render(&gw).await,
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({ "detail": "no such route", "code": "not_found" })),
    )
        .into_response()
}

/// Decides the client address once, enforces IP rules on every route.
async fn client_guard(State(live): State<Arc<Live>>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
    let xff = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let ip = client_ip(peer, xff, live.trusted_proxies);
    if !live.ip_rules.load().admits(ip) {
        return match aether_gateway::routes::dialect_for_path(req.uri().path()) {
            Some(d) => GwError::permission("your address is not allowed").render(d),
            None => (
                StatusCode::FORBIDDEN,
                axum::Json(json!({ "detail": "your address is not allowed", "code": "forbidden" })),
            )
                .into_response(),
        };
    }
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

/// One line per request: request id (the gateway's `x-aether-request-id`, or one generated
/// here and returned in that header), method, path (never the query: `?key=` is a secret),
/// status and latency to the response head. Probes (`/health`, `/ready`, `/metrics`) log at
/// debug level.
async fn access_log(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let ip = req.extensions().get::<ClientIp>().map(|c| c.0);
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16();
    let request_id = match resp.headers().get("x-aether-request-id") {
        Some(v) => v.to_str().unwrap_or_default().to_string(),
        None => {
            let id = aether_domain::RequestId::new().to_string();
            if let Ok(v) = HeaderValue::from_str(&id) {
                resp.headers_mut().insert("x-aether-request-id", v);
            }
            id
        }
    };
    let latency_ms = started.elapsed().as_millis() as u64;
    let ip = ip.map(tracing::field::display);
    if matches!(path.as_str(), "/health" | "/ready" | "/metrics") {
        tracing::debug!(request_id, %method, %path, status, latency_ms, ip, "request");
    } else {
        tracing::info!(request_id, %method, %path, status, latency_ms, ip, "request");
    }
    if !resp.headers().contains_key(header::CACHE_CONTROL) && path.starts_with("/api/") {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
