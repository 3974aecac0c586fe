//! The routing snapshot: everything admission and routing read, loaded from the store in one
//! pass and swapped in atomically (`ArcSwap`) whenever configuration changes. A request reads
//! one snapshot from start to end and never touches the database to decide anything.
//!
//! Upstream keys are opened here, once per rebuild, not per request. HTTP clients (and their
//! connection pools) outlive snapshots: they are kept per proxy setting in [`Clients`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_domain::entities::{
    ApiKey, BillingType, Endpoint, GlobalModel, Provider, ProviderKey, ProviderModel, ProxyConfig,
    User,
};
use aether_domain::secret::{Cipher, hash_api_key};
use aether_domain::settings::Settings;
use aether_domain::{GlobalModelId, ProviderKeyId, Timestamp, UserId};
use aether_store::{
    ApiKeyFilter, DynStore, GlobalModelFilter, Page, ProviderFilter, StoreError, UserFilter,
};

/// A gateway key with its owner.
#[derive(Debug)]
pub struct Caller {
    pub key: ApiKey,
    pub user: Option<User>,
}

/// An endpoint with the HTTP client for its proxy setting.
#[derive(Debug)]
pub struct EndpointRt {
    pub endpoint: Endpoint,
    pub client: reqwest::Client,
}

/// An upstream key, opened.
pub struct KeyRt {
    pub key: ProviderKey,
    pub secret: String,
}

impl std::fmt::Debug for KeyRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRt")
            .field("key", &self.key.id)
            .field("secret", &"***")
            .finish()
    }
}

/// One way to serve a model: provider, endpoint, key and the provider's model entry.
#[derive(Debug)]
pub struct Route {
    pub provider: Arc<Provider>,
    pub endpoint: Arc<EndpointRt>,
    pub key: Arc<KeyRt>,
    pub model: Arc<ProviderModel>,
}

impl Route {
    #[must_use]
    pub fn is_free_tier(&self) -> bool {
        self.provider.billing_type == BillingType::FreeTier
    }
}

/// The immutable routing graph.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub settings: Arc<Settings>,
    callers: HashMap<String, Arc<Caller>>,
    /// Any name a client may use for a model (global name, provider model name, mapping
    /// name) → the global model.
    names: HashMap<String, GlobalModelId>,
    globals: HashMap<GlobalModelId, Arc<GlobalModel>>,
    routes: HashMap<GlobalModelId, Vec<Arc<Route>>>,
    pub built_at: Timestamp,
}

impl Snapshot {
    /// The caller presenting a gateway key (looked up by its SHA-256).
    #[must_use]
    pub fn caller(&self, presented_key: &str) -> Option<&Arc<Caller>> {
        self.callers.get(&hash_api_key(presented_key))
    }

    /// Resolves a requested model name to its global model.
    #[must_use]
    pub fn resolve_model(&self, name: &str) -> Option<&Arc<GlobalModel>> {
        self.names.get(name).and_then(|id| self.globals.get(id))
    }

    #[must_use]
    pub fn routes(&self, model: GlobalModelId) -> &[Arc<Route>] {
        self.routes.get(&model).map_or(&[], Vec::as_slice)
    }

    /// Active global models with at least one route, for model listings.
    pub fn listed_models(&self) -> impl Iterator<Item = &Arc<GlobalModel>> {
        self.globals
            .values()
            .filter(|g| self.routes.get(&g.id).is_some_and(|r| !r.is_empty()))
    }

    #[must_use]
    pub fn route_by_key(&self, model: GlobalModelId, key: ProviderKeyId) -> Option<&Arc<Route>> {
        self.routes(model).iter().find(|r| r.key.key.id == key)
    }

    /// Loads everything from the store.
    pub async fn load(
        store: &DynStore,
        cipher: &Cipher,
        clients: &Clients,
    ) -> Result<Self, StoreError> {
        let stored = store.get_settings().await?;
        let settings = Arc::new(Settings::from_stored(&stored));
        let users: HashMap<UserId, User> = store
            .list_users(&UserFilter::default(), Page::all())
            .await?
            .items
            .into_iter()
            .map(|u| (u.id, u))
            .collect();
        let mut callers = HashMap::new();
        for key in store
            .list_api_keys(&ApiKeyFilter::default(), Page::all())
            .await?
            .items
        {
            let user = key.user_id.and_then(|u| users.get(&u).cloned());
            if key.user_id.is_some() && user.is_none() {
                continue; // owner deleted; the key goes with it
            }
            callers.insert(key.key_hash.clone(), Arc::new(Caller { key, user }));
        }

        let globals: HashMap<GlobalModelId, Arc<GlobalModel>> = store
            .list_global_models(
                &GlobalModelFilter {
                    search: None,
                    is_active: Some(true),
                },
                Page::all(),
            )
            .await?
            .items
            .into_iter()
            .map(|g| (g.id, Arc::new(g)))
            .collect();
        let providers: HashMap<_, _> = store
            .list_providers(
                &ProviderFilter {
                    search: None,
                    is_active: Some(true),
                },
                Page::all(),
            )
            .await?
            .items
            .into_iter()
            .map(|p| (p.id, Arc::new(p)))
            .collect();
        let endpoints: Vec<Arc<EndpointRt>> = store
            .list_endpoints(None)
            .await?
            .into_iter()
            .filter(|e| e.is_active && providers.contains_key(&e.provider_id))
            .filter_map(|e| match clients.for_proxy(e.proxy.as_ref(), cipher) {
                Ok(client) => Some(Arc::new(EndpointRt { endpoint: e, client })),
                Err(err) => {
                    tracing::error!(endpoint = %e.id, error = %err, "endpoint left out: its proxy is unusable");
                    None
                }
            })
            .collect();
        let mut keys_by_endpoint: HashMap<_, Vec<Arc<KeyRt>>> = HashMap::new();
        for k in store.list_provider_keys(None).await? {
            if !k.is_active {
                continue;
            }
            match cipher.open(&k.secret_sealed) {
                Ok(secret) => keys_by_endpoint
                    .entry(k.endpoint_id)
                    .or_default()
                    .push(Arc::new(KeyRt { key: k, secret })),
                Err(err) => {
                    tracing::error!(key = %k.id, error = %err, "upstream key left out: it cannot be opened")
                }
            }
        }
        let models: Vec<Arc<ProviderModel>> = store
            .list_provider_models(None, None)
            .await?
            .into_iter()
            .filter(|m| m.is_active && globals.contains_key(&m.global_model_id))
            .map(Arc::new)
            .collect();

        // Names: exact global names win over provider names and mappings; among those, the
        // first global model by name wins, so resolution is deterministic.
        let mut names: HashMap<String, GlobalModelId> = HashMap::new();
        let mut sorted: Vec<&Arc<GlobalModel>> = globals.values().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        for g in &sorted {
            names.insert(g.name.clone(), g.id);
        }
        let mut aliases: Vec<(String, GlobalModelId, String)> = Vec::new();
        for m in &models {
            let gname = globals
                .get(&m.global_model_id)
                .map(|g| g.name.clone())
                .unwrap_or_default();
            aliases.push((
                m.provider_model_name.clone(),
                m.global_model_id,
                gname.clone(),
            ));
            for mapping in &m.provider_model_mappings {
                aliases.push((mapping.name.clone(), m.global_model_id, gname.clone()));
            }
        }
        aliases.sort_by(|a, b| (&a.0, &a.2).cmp(&(&b.0, &b.2)));
        for (alias, id, _) in aliases {
            names.entry(alias).or_insert(id);
        }

        let mut routes: HashMap<GlobalModelId, Vec<Arc<Route>>> = HashMap::new();
        for m in &models {
            let Some(provider) = providers.get(&m.provider_id) else {
                continue;
            };
            for e in endpoints
                .iter()
                .filter(|e| e.endpoint.provider_id == m.provider_id)
            {
                for k in keys_by_endpoint
                    .get(&e.endpoint.id)
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    routes
                        .entry(m.global_model_id)
                        .or_default()
                        .push(Arc::new(Route {
                            provider: provider.clone(),
                            endpoint: e.clone(),
                            key: k.clone(),
                            model: m.clone(),
                        }));
                }
            }
        }
        Ok(Self {
            settings,
            callers,
            names,
            globals,
            routes,
            built_at: Timestamp::now(),
        })
    }
}

/// HTTP clients per outbound proxy setting. A client owns a connection pool, so clients are
/// reused across snapshot rebuilds.
#[derive(Default)]
pub struct Clients {
    by_proxy: Mutex<HashMap<String, reqwest::Client>>,
}

impl Clients {
    fn build(proxy: Option<reqwest::Proxy>) -> reqwest::Result<reqwest::Client> {
        let mut b = reqwest::Client::builder()
            // A gateway relays what the upstream said; following a redirect could send the
            // caller's request (and our key) somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(30))
            .http2_adaptive_window(true)
            .no_proxy();
        if let Some(p) = proxy {
            b = b.proxy(p);
        }
        b.build()
    }

    /// The client for a proxy setting (none = direct).
    pub fn for_proxy(
        &self,
        proxy: Option<&ProxyConfig>,
        cipher: &Cipher,
    ) -> Result<reqwest::Client, String> {
        let password = match proxy.and_then(|p| p.password_sealed.as_deref()) {
            Some(sealed) => Some(
                cipher
                    .open(sealed)
                    .map_err(|e| format!("proxy password: {e}"))?,
            ),
            None => None,
        };
        let id = proxy.map_or_else(String::new, |p| {
            format!(
                "{}|{}|{}",
                p.url,
                p.username.as_deref().unwrap_or(""),
                password.as_deref().unwrap_or("")
            )
        });
        let mut map = self
            .by_proxy
            .lock()
            .map_err(|_| "client pool poisoned".to_string())?;
        if let Some(c) = map.get(&id) {
            return Ok(c.clone());
        }
        let p = match proxy {
            None => None,
            Some(cfg) => {
                // Credentials ride in the URL: reqwest turns them into Basic auth for HTTP
                // proxies and into the SOCKS5 username/password exchange for SOCKS.
                let mut url =
                    reqwest::Url::parse(&cfg.url).map_err(|e| format!("proxy URL: {e}"))?;
                if let Some(user) = &cfg.username {
                    url.set_username(user)
                        .map_err(|()| "proxy URL cannot carry a username".to_string())?;
                    url.set_password(password.as_deref())
                        .map_err(|()| "proxy URL cannot carry a password".to_string())?;
                }
                Some(reqwest::Proxy::all(url).map_err(|e| format!("proxy URL: {e}"))?)
            }
        };
        let client = Self::build(p).map_err(|e| format!("HTTP client: {e}"))?;
        map.insert(id, client.clone());
        Ok(client)
    }
}
