//! Management: the service layer every management surface shares (JSON API, CLI, console),
//! and the JSON API itself under `/api`, documented by an OpenAPI document at
//! `/api/openapi.json`.
//!
//! A handler parses input, calls one [`Admin`] method, renders the result. The methods check
//! input, write through the store, record the audit log, and tell the [`ChangeNotifier`] when
//! routing-relevant configuration changed so the gateway can swap in a new snapshot.

pub mod api;
pub mod auth;
pub mod error;
pub mod service;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use aether_domain::UserId;
use aether_domain::entities::Role;
use aether_domain::secret::Cipher;
use aether_domain::settings::Settings;
use aether_store::DynStore;
use arc_swap::ArcSwap;

pub use error::{ApiError, ApiResult};

/// Told about configuration changes (providers, keys, models, users, settings, IP rules).
/// Management calls await it, so when an admin call returns, the request path already uses
/// the new configuration (read-your-writes for operators).
#[async_trait::async_trait]
pub trait ChangeNotifier: Send + Sync + 'static {
    async fn config_changed(&self);

    /// The request path's live state (breakers, learned limits, budgets), when this process
    /// serves requests; `None` for one-shot CLI commands.
    fn live(&self) -> Option<Arc<dyn aether_coord::LiveState>> {
        None
    }
}

/// A notifier that does nothing (CLI one-shot commands, tests).
pub struct NoopNotifier;

#[async_trait::async_trait]
impl ChangeNotifier for NoopNotifier {
    async fn config_changed(&self) {}
}

/// Static settings of the management layer.
#[derive(Clone)]
pub struct AdminConfig {
    /// HS256 signing key for access tokens (≥ 32 bytes).
    pub jwt_secret: Vec<u8>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("jwt_secret", &"***")
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .finish()
    }
}

impl AdminConfig {
    #[must_use]
    pub fn new(jwt_secret: Vec<u8>) -> Self {
        Self {
            jwt_secret,
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Who performs a management action (for permission checks and the audit log).
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: Option<UserId>,
    pub email: Option<String>,
    pub role: Role,
    pub ip: Option<IpAddr>,
}

impl Actor {
    /// The local operator using the `aether` CLI on the machine.
    #[must_use]
    pub fn cli() -> Self {
        Self {
            user_id: None,
            email: Some("cli".to_string()),
            role: Role::Admin,
            ip: None,
        }
    }

    /// The server's own background work.
    #[must_use]
    pub fn system() -> Self {
        Self {
            user_id: None,
            email: Some("system".to_string()),
            role: Role::Admin,
            ip: None,
        }
    }

    #[must_use]
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// The management services. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

struct Inner {
    store: DynStore,
    cipher: Cipher,
    config: AdminConfig,
    settings: ArcSwap<Settings>,
    notifier: Arc<dyn ChangeNotifier>,
    /// Failed logins per client IP in the current one-minute window.
    login_failures: moka::sync::Cache<IpAddr, Arc<AtomicU32>>,
}

impl Admin {
    /// Builds the services and loads the current settings.
    pub async fn new(
        store: DynStore,
        cipher: Cipher,
        config: AdminConfig,
        notifier: Arc<dyn ChangeNotifier>,
    ) -> ApiResult<Self> {
        if config.jwt_secret.len() < 32 {
            return Err(ApiError::Internal(
                "the JWT secret must be at least 32 bytes".into(),
            ));
        }
        let stored = store.get_settings().await?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                cipher,
                config,
                settings: ArcSwap::from_pointee(Settings::from_stored(&stored)),
                notifier,
                login_failures: moka::sync::Cache::builder()
                    .time_to_live(Duration::from_secs(60))
                    .max_capacity(100_000)
                    .build(),
            }),
        })
    }

    #[must_use]
    pub fn store(&self) -> &DynStore {
        &self.inner.store
    }

    #[must_use]
    pub fn cipher(&self) -> &Cipher {
        &self.inner.cipher
    }

    /// The settings in force.
    #[must_use]
    pub fn settings(&self) -> Arc<Settings> {
        self.inner.settings.load_full()
    }

    /// Re-reads settings from the store (another instance may have changed them).
    pub async fn reload_settings(&self) -> ApiResult<()> {
        let stored = self.inner.store.get_settings().await?;
        self.inner
            .settings
            .store(Arc::new(Settings::from_stored(&stored)));
        Ok(())
    }

    async fn changed(&self) {
        self.inner.notifier.config_changed().await;
    }

    /// The request path's live state, when this process serves requests.
    pub(crate) fn live(&self) -> Option<Arc<dyn aether_coord::LiveState>> {
        self.inner.notifier.live()
    }
}
