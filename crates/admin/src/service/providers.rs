//! Providers, their endpoints (one per API format) and their upstream keys. Upstream keys
//! and proxy passwords are sealed before they reach the store and never leave it in clear,
//! except through the audited `reveal` call.

use std::collections::{BTreeMap, HashMap};

use aether_domain::entities::{BillingType, Endpoint, Provider, ProviderKey, ProxyConfig};
use aether_domain::secret::{mask, sha256_hex};
use aether_domain::{ApiFormat, EndpointId, Multiplier, ProviderId, ProviderKeyId, Timestamp, Usd};
use aether_store::{Page, Paged, ProviderFilter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{double_option, set, validate};
use crate::{Actor, Admin, ApiError, ApiResult};

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewProvider {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub website: Option<String>,
    #[serde(default = "pay_as_you_go")]
    pub billing_type: BillingType,
    /// Period quota (`monthly_quota_usd` in the original).
    #[serde(default, alias = "monthly_quota_usd")]
    #[schema(value_type = Option<String>)]
    pub quota_usd: Option<Usd>,
    /// Period length in days (`quota_reset_day` in the original).
    #[serde(default = "thirty", alias = "quota_reset_day")]
    pub quota_period_days: u32,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub rpm_limit: Option<u32>,
    #[serde(default = "hundred")]
    pub provider_priority: i32,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
}

fn pay_as_you_go() -> BillingType {
    BillingType::PayAsYouGo
}
fn thirty() -> u32 {
    30
}
fn hundred() -> i32 {
    100
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct ProviderPatch {
    pub name: Option<String>,
    pub display_name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub website: Option<Option<String>>,
    pub billing_type: Option<BillingType>,
    #[serde(
        default,
        deserialize_with = "double_option",
        alias = "monthly_quota_usd"
    )]
    #[schema(value_type = Option<String>)]
    pub quota_usd: Option<Option<Usd>>,
    #[serde(alias = "quota_reset_day")]
    pub quota_period_days: Option<u32>,
    #[serde(default, deserialize_with = "double_option")]
    pub expires_at: Option<Option<Timestamp>>,
    #[serde(default, deserialize_with = "double_option")]
    pub rpm_limit: Option<Option<u32>>,
    pub provider_priority: Option<i32>,
    pub is_active: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
}

/// A provider with counts for tables.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProviderSummary {
    #[serde(flatten)]
    #[schema(inline, value_type = Object)]
    pub provider: Provider,
    pub total_endpoints: usize,
    pub active_endpoints: usize,
    pub total_keys: usize,
    pub active_keys: usize,
    pub total_models: usize,
    pub api_formats: Vec<ApiFormat>,
}

/// Proxy settings as written by an admin (the password in clear, once).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ProxyInput {
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewEndpoint {
    pub api_format: ApiFormat,
    pub base_url: String,
    #[serde(default)]
    pub custom_path: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Seconds (default 300).
    #[serde(default = "three_hundred")]
    pub timeout: u32,
    #[serde(default = "three")]
    pub max_retries: u32,
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    #[serde(default)]
    pub proxy: Option<ProxyInput>,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
}

fn three_hundred() -> u32 {
    300
}
fn three() -> u32 {
    3
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct EndpointPatch {
    pub base_url: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub custom_path: Option<Option<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub timeout: Option<u32>,
    pub max_retries: Option<u32>,
    #[serde(default, deserialize_with = "double_option")]
    pub max_concurrent: Option<Option<u32>>,
    /// `null` removes the proxy. A proxy without `password` keeps the stored one.
    #[serde(default, deserialize_with = "double_option")]
    pub proxy: Option<Option<ProxyInput>>,
    pub is_active: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewProviderKey {
    /// The upstream credential, in clear (sealed before storage).
    pub api_key: String,
    pub name: String,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default = "one")]
    #[schema(value_type = f64)]
    pub rate_multiplier: Multiplier,
    #[serde(default = "fifty")]
    pub internal_priority: i32,
    #[serde(default)]
    pub global_priority: Option<i32>,
    /// `null` = adaptive.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// Requests per minute.
    #[serde(default)]
    pub rate_limit: Option<u32>,
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default = "five")]
    pub cache_ttl_minutes: u32,
    #[serde(default)]
    pub max_probe_interval_minutes: Option<u32>,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(default = "yes")]
    pub is_active: bool,
}

fn one() -> Multiplier {
    Multiplier::ONE
}
fn fifty() -> i32 {
    50
}
fn five() -> u32 {
    5
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct ProviderKeyPatch {
    /// A new credential replaces the sealed one.
    pub api_key: Option<String>,
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub note: Option<Option<String>>,
    #[schema(value_type = Option<f64>)]
    pub rate_multiplier: Option<Multiplier>,
    pub internal_priority: Option<i32>,
    #[serde(default, deserialize_with = "double_option")]
    pub global_priority: Option<Option<i32>>,
    #[serde(default, deserialize_with = "double_option")]
    pub max_concurrent: Option<Option<u32>>,
    #[serde(default, deserialize_with = "double_option")]
    pub rate_limit: Option<Option<u32>>,
    #[serde(default, deserialize_with = "double_option")]
    pub allowed_models: Option<Option<Vec<String>>>,
    pub capabilities: Option<Vec<String>>,
    pub cache_ttl_minutes: Option<u32>,
    #[serde(default, deserialize_with = "double_option")]
    pub max_probe_interval_minutes: Option<Option<u32>>,
    #[serde(default, deserialize_with = "double_option")]
    pub expires_at: Option<Option<Timestamp>>,
    pub is_active: Option<bool>,
}

fn object_or_empty(field: &'static str, v: Option<Value>) -> ApiResult<Value> {
    match v {
        None | Some(Value::Null) => Ok(json!({})),
        Some(v @ Value::Object(_)) => Ok(v),
        Some(_) => Err(ApiError::invalid(field, "must be a JSON object")),
    }
}

fn opt_text(field: &'static str, v: Option<String>, max: usize) -> ApiResult<Option<String>> {
    v.filter(|s| !s.trim().is_empty())
        .map(|s| validate::text(field, &s, max))
        .transpose()
}

fn headers(h: BTreeMap<String, String>) -> ApiResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in h {
        let name = k.trim().to_ascii_lowercase();
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if !valid_name || v.contains(['\r', '\n']) {
            return Err(ApiError::invalid(
                "headers",
                format!("`{k}` is not a valid header"),
            ));
        }
        if matches!(
            name.as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection"
        ) {
            return Err(ApiError::invalid(
                "headers",
                format!("`{name}` is set by the gateway"),
            ));
        }
        out.insert(name, v);
    }
    Ok(out)
}

impl Admin {
    // ---- providers ----

    pub async fn create_provider(&self, actor: &Actor, n: NewProvider) -> ApiResult<Provider> {
        let name = validate::slug("name", &n.name)?;
        if n.quota_usd.is_some_and(Usd::is_negative) {
            return Err(ApiError::invalid("quota_usd", "must not be negative"));
        }
        if n.quota_period_days == 0 {
            return Err(ApiError::invalid("quota_period_days", "must be at least 1"));
        }
        let now = Timestamp::now();
        let p = Provider {
            id: ProviderId::new(),
            display_name: match n.display_name {
                Some(d) => validate::text("display_name", &d, 100)?,
                None => name.clone(),
            },
            name,
            description: opt_text("description", n.description, 2000)?,
            website: n
                .website
                .filter(|w| !w.trim().is_empty())
                .map(|w| validate::base_url("website", &w))
                .transpose()?,
            billing_type: n.billing_type,
            quota_usd: n.quota_usd,
            quota_used_usd: Usd::ZERO,
            quota_period_days: n.quota_period_days,
            period_started_at: Some(now),
            expires_at: n.expires_at,
            rpm_limit: validate::positive("rpm_limit", n.rpm_limit)?,
            provider_priority: n.provider_priority,
            is_active: n.is_active,
            config: object_or_empty("config", n.config)?,
            created_at: now,
            updated_at: now,
        };
        self.store().insert_provider(&p).await?;
        self.audit(
            actor,
            "provider.create",
            "provider",
            p.id,
            json!({ "name": p.name }),
        )
        .await;
        self.changed().await;
        Ok(p)
    }

    pub async fn get_provider(&self, id: ProviderId) -> ApiResult<Provider> {
        self.store()
            .get_provider(id)
            .await?
            .ok_or(ApiError::NotFound("provider"))
    }

    /// Providers with endpoint/key/model counts.
    pub async fn list_providers(
        &self,
        f: &ProviderFilter,
        page: Page,
    ) -> ApiResult<Paged<ProviderSummary>> {
        let providers = self.store().list_providers(f, page).await?;
        let endpoints = self.store().list_endpoints(None).await?;
        let keys = self.store().list_provider_keys(None).await?;
        let models = self.store().list_provider_models(None, None).await?;
        let mut eps: HashMap<ProviderId, Vec<&Endpoint>> = HashMap::new();
        for e in &endpoints {
            eps.entry(e.provider_id).or_default().push(e);
        }
        let mut ks: HashMap<ProviderId, (usize, usize)> = HashMap::new();
        for k in &keys {
            let c = ks.entry(k.provider_id).or_default();
            c.0 += 1;
            c.1 += usize::from(k.is_active);
        }
        let mut ms: HashMap<ProviderId, usize> = HashMap::new();
        for m in &models {
            *ms.entry(m.provider_id).or_default() += 1;
        }
        let items = providers
            .items
            .into_iter()
            .map(|p| {
                let e = eps.get(&p.id).map(Vec::as_slice).unwrap_or_default();
                let (total_keys, active_keys) = ks.get(&p.id).copied().unwrap_or_default();
                ProviderSummary {
                    total_endpoints: e.len(),
                    active_endpoints: e.iter().filter(|e| e.is_active).count(),
                    api_formats: e.iter().map(|e| e.api_format).collect(),
                    total_keys,
                    active_keys,
                    total_models: ms.get(&p.id).copied().unwrap_or_default(),
                    provider: p,
                }
            })
            .collect();
        Ok(Paged {
            items,
            total: providers.total,
            total_capped: providers.total_capped,
        })
    }

    pub async fn update_provider(
        &self,
        actor: &Actor,
        id: ProviderId,
        p: ProviderPatch,
    ) -> ApiResult<Provider> {
        let mut v = self.get_provider(id).await?;
        if let Some(n) = &p.name {
            v.name = validate::slug("name", n)?;
        }
        if let Some(d) = &p.display_name {
            v.display_name = validate::text("display_name", d, 100)?;
        }
        if let Some(d) = p.description {
            v.description = opt_text("description", d, 2000)?;
        }
        if let Some(w) = p.website {
            v.website = w
                .filter(|w| !w.trim().is_empty())
                .map(|w| validate::base_url("website", &w))
                .transpose()?;
        }
        if let Some(Some(q)) = p.quota_usd
            && q.is_negative()
        {
            return Err(ApiError::invalid("quota_usd", "must not be negative"));
        }
        if p.quota_period_days == Some(0) {
            return Err(ApiError::invalid("quota_period_days", "must be at least 1"));
        }
        if let Some(r) = p.rpm_limit {
            v.rpm_limit = validate::positive("rpm_limit", r)?;
        }
        set(&mut v.billing_type, p.billing_type);
        set(&mut v.quota_usd, p.quota_usd);
        set(&mut v.quota_period_days, p.quota_period_days);
        set(&mut v.expires_at, p.expires_at);
        set(&mut v.provider_priority, p.provider_priority);
        set(&mut v.is_active, p.is_active);
        if p.config.is_some() {
            v.config = object_or_empty("config", p.config)?;
        }
        v.updated_at = Timestamp::now();
        self.store().update_provider(&v).await?;
        self.audit(
            actor,
            "provider.update",
            "provider",
            id,
            json!({ "name": v.name, "is_active": v.is_active }),
        )
        .await;
        self.changed().await;
        Ok(v)
    }

    pub async fn delete_provider(&self, actor: &Actor, id: ProviderId) -> ApiResult<()> {
        let p = self.get_provider(id).await?;
        self.store().delete_provider(id).await?;
        self.audit(
            actor,
            "provider.delete",
            "provider",
            id,
            json!({ "name": p.name }),
        )
        .await;
        self.changed().await;
        Ok(())
    }

    pub async fn reset_provider_quota(&self, actor: &Actor, id: ProviderId) -> ApiResult<Provider> {
        let p = self.get_provider(id).await?;
        let now = Timestamp::now();
        self.store().reset_provider_quota(id, now).await?;
        self.audit(
            actor,
            "provider.quota_reset",
            "provider",
            id,
            json!({ "used_usd": p.quota_used_usd }),
        )
        .await;
        self.changed().await;
        if let Some(live) = self.live() {
            let start = p.period_start(now).map(Timestamp::millis);
            live.budget_forget(aether_coord::BudgetAccount::Provider(id, start))
                .await;
        }
        self.get_provider(id).await
    }

    // ---- endpoints ----

    fn seal_proxy(&self, input: ProxyInput, keep: Option<&ProxyConfig>) -> ApiResult<ProxyConfig> {
        let url = validate::proxy_url("proxy.url", &input.url)?;
        let password_sealed = match input.password {
            Some(p) if !p.is_empty() => Some(
                self.cipher()
                    .seal(&p)
                    .map_err(|e| ApiError::Internal(e.to_string()))?,
            ),
            Some(_) => None,
            None => keep.and_then(|k| k.password_sealed.clone()),
        };
        Ok(ProxyConfig {
            url,
            username: input.username.filter(|u| !u.is_empty()),
            password_sealed,
        })
    }

    pub async fn create_endpoint(
        &self,
        actor: &Actor,
        provider_id: ProviderId,
        n: NewEndpoint,
    ) -> ApiResult<Endpoint> {
        self.get_provider(provider_id).await?;
        if !(1..=3600).contains(&n.timeout) {
            return Err(ApiError::invalid("timeout", "between 1 and 3600 seconds"));
        }
        if n.max_retries > 10 {
            return Err(ApiError::invalid("max_retries", "at most 10"));
        }
        let now = Timestamp::now();
        let e = Endpoint {
            id: EndpointId::new(),
            provider_id,
            api_format: n.api_format,
            base_url: validate::base_url("base_url", &n.base_url)?,
            custom_path: n
                .custom_path
                .filter(|p| !p.trim().is_empty())
                .map(|p| validate::path("custom_path", &p))
                .transpose()?,
            headers: headers(n.headers)?,
            timeout: n.timeout,
            max_retries: n.max_retries,
            max_concurrent: validate::positive("max_concurrent", n.max_concurrent)?,
            proxy: n.proxy.map(|p| self.seal_proxy(p, None)).transpose()?,
            is_active: n.is_active,
            config: object_or_empty("config", n.config)?,
            created_at: now,
            updated_at: now,
        };
        self.store().insert_endpoint(&e).await?;
        self.audit(
            actor,
            "endpoint.create",
            "endpoint",
            e.id,
            json!({ "provider_id": provider_id, "api_format": e.api_format }),
        )
        .await;
        self.changed().await;
        Ok(e)
    }

    pub async fn get_endpoint(&self, id: EndpointId) -> ApiResult<Endpoint> {
        self.store()
            .get_endpoint(id)
            .await?
            .ok_or(ApiError::NotFound("endpoint"))
    }

    pub async fn list_endpoints(&self, provider_id: ProviderId) -> ApiResult<Vec<Endpoint>> {
        self.get_provider(provider_id).await?;
        Ok(self.store().list_endpoints(Some(provider_id)).await?)
    }

    pub async fn update_endpoint(
        &self,
        actor: &Actor,
        id: EndpointId,
        p: EndpointPatch,
    ) -> ApiResult<Endpoint> {
        let mut e = self.get_endpoint(id).await?;
        if let Some(u) = &p.base_url {
            e.base_url = validate::base_url("base_url", u)?;
        }
        if let Some(c) = p.custom_path {
            e.custom_path = c
                .filter(|p| !p.trim().is_empty())
                .map(|p| validate::path("custom_path", &p))
                .transpose()?;
        }
        if let Some(h) = p.headers {
            e.headers = headers(h)?;
        }
        if let Some(t) = p.timeout {
            if !(1..=3600).contains(&t) {
                return Err(ApiError::invalid("timeout", "between 1 and 3600 seconds"));
            }
            e.timeout = t;
        }
        if let Some(r) = p.max_retries {
            if r > 10 {
                return Err(ApiError::invalid("max_retries", "at most 10"));
            }
            e.max_retries = r;
        }
        if let Some(m) = p.max_concurrent {
            e.max_concurrent = validate::positive("max_concurrent", m)?;
        }
        if let Some(proxy) = p.proxy {
            e.proxy = proxy
                .map(|x| self.seal_proxy(x, e.proxy.as_ref()))
                .transpose()?;
        }
        set(&mut e.is_active, p.is_active);
        if p.config.is_some() {
            e.config = object_or_empty("config", p.config)?;
        }
        e.updated_at = Timestamp::now();
        self.store().update_endpoint(&e).await?;
        self.audit(
            actor,
            "endpoint.update",
            "endpoint",
            id,
            json!({ "api_format": e.api_format, "is_active": e.is_active }),
        )
        .await;
        self.changed().await;
        Ok(e)
    }

    pub async fn delete_endpoint(&self, actor: &Actor, id: EndpointId) -> ApiResult<()> {
        let e = self.get_endpoint(id).await?;
        self.store().delete_endpoint(id).await?;
        self.audit(
            actor,
            "endpoint.delete",
            "endpoint",
            id,
            json!({ "provider_id": e.provider_id, "api_format": e.api_format }),
        )
        .await;
        self.changed().await;
        Ok(())
    }

    // ---- provider keys ----

    /// Seals an upstream credential: (sealed, fingerprint, masked).
    pub(crate) fn seal_secret(&self, plain: &str) -> ApiResult<(String, String, String)> {
        let plain = plain.trim();
        if plain.len() < 4 || plain.len() > 4096 || plain.chars().any(char::is_control) {
            return Err(ApiError::invalid("api_key", "4–4096 printable characters"));
        }
        let sealed = self
            .cipher()
            .seal(plain)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok((sealed, sha256_hex(plain.as_bytes()), mask(plain)))
    }

    pub async fn create_provider_key(
        &self,
        actor: &Actor,
        endpoint_id: EndpointId,
        n: NewProviderKey,
    ) -> ApiResult<ProviderKey> {
        let e = self.get_endpoint(endpoint_id).await?;
        let (secret_sealed, secret_fingerprint, api_key_masked) = self.seal_secret(&n.api_key)?;
        if n.cache_ttl_minutes > 1440 {
            return Err(ApiError::invalid("cache_ttl_minutes", "at most 1440"));
        }
        let now = Timestamp::now();
        let k = ProviderKey {
            id: ProviderKeyId::new(),
            endpoint_id,
            provider_id: e.provider_id,
            name: validate::text("name", &n.name, 100)?,
            note: opt_text("note", n.note, 500)?,
            secret_sealed,
            secret_fingerprint,
            api_key_masked,
            rate_multiplier: n.rate_multiplier,
            internal_priority: n.internal_priority,
            global_priority: n.global_priority,
            max_concurrent: validate::positive("max_concurrent", n.max_concurrent)?,
            rate_limit: validate::positive("rate_limit", n.rate_limit)?,
            allowed_models: n.allowed_models,
            capabilities: validate::capabilities("capabilities", &n.capabilities)?,
            cache_ttl_minutes: n.cache_ttl_minutes,
            max_probe_interval_minutes: n.max_probe_interval_minutes,
            expires_at: n.expires_at,
            is_active: n.is_active,
            created_at: now,
            updated_at: now,
        };
        self.store().insert_provider_key(&k).await?;
        self.audit(
            actor,
            "provider_key.create",
            "provider_key",
            k.id,
            json!({ "endpoint_id": endpoint_id, "name": k.name, "key": k.api_key_masked }),
        )
        .await;
        self.changed().await;
        Ok(k)
    }

    pub async fn get_provider_key(&self, id: ProviderKeyId) -> ApiResult<ProviderKey> {
        self.store()
            .get_provider_key(id)
            .await?
            .ok_or(ApiError::NotFound("provider key"))
    }

    pub async fn list_provider_keys(&self, endpoint_id: EndpointId) -> ApiResult<Vec<ProviderKey>> {
        self.get_endpoint(endpoint_id).await?;
        Ok(self.store().list_provider_keys(Some(endpoint_id)).await?)
    }

    pub async fn update_provider_key(
        &self,
        actor: &Actor,
        id: ProviderKeyId,
        p: ProviderKeyPatch,
    ) -> ApiResult<ProviderKey> {
        let mut k = self.get_provider_key(id).await?;
        if let Some(n) = &p.name {
            k.name = validate::text("name", n, 100)?;
        }
        if let Some(n) = p.note {
            k.note = opt_text("note", n, 500)?;
        }
        if let Some(c) = &p.capabilities {
            k.capabilities = validate::capabilities("capabilities", c)?;
        }
        if let Some(m) = p.max_concurrent {
            k.max_concurrent = validate::positive("max_concurrent", m)?;
        }
        if let Some(r) = p.rate_limit {
            k.rate_limit = validate::positive("rate_limit", r)?;
        }
        if p.cache_ttl_minutes.is_some_and(|t| t > 1440) {
            return Err(ApiError::invalid("cache_ttl_minutes", "at most 1440"));
        }
        set(&mut k.rate_multiplier, p.rate_multiplier);
        set(&mut k.internal_priority, p.internal_priority);
        set(&mut k.global_priority, p.global_priority);
        set(&mut k.allowed_models, p.allowed_models);
        set(&mut k.cache_ttl_minutes, p.cache_ttl_minutes);
        set(
            &mut k.max_probe_interval_minutes,
            p.max_probe_interval_minutes,
        );
        set(&mut k.expires_at, p.expires_at);
        set(&mut k.is_active, p.is_active);
        k.updated_at = Timestamp::now();
        if let Some(plain) = &p.api_key {
            let (sealed, fp, masked) = self.seal_secret(plain)?;
            self.store()
                .replace_provider_key_secret(id, &sealed, &fp, &masked)
                .await?;
            k.secret_sealed = sealed;
            k.secret_fingerprint = fp;
            k.api_key_masked = masked;
        }
        self.store().update_provider_key(&k).await?;
        self.audit(
            actor,
            "provider_key.update",
            "provider_key",
            id,
            json!({ "name": k.name, "is_active": k.is_active, "secret_replaced": p.api_key.is_some() }),
        )
        .await;
        self.changed().await;
        Ok(k)
    }

    pub async fn delete_provider_key(&self, actor: &Actor, id: ProviderKeyId) -> ApiResult<()> {
        let k = self.get_provider_key(id).await?;
        self.store().delete_provider_key(id).await?;
        self.audit(
            actor,
            "provider_key.delete",
            "provider_key",
            id,
            json!({ "name": k.name, "key": k.api_key_masked }),
        )
        .await;
        self.changed().await;
        Ok(())
    }

    /// The upstream credential in clear, for an admin who explicitly asks. Audited.
    pub async fn reveal_provider_key(&self, actor: &Actor, id: ProviderKeyId) -> ApiResult<String> {
        let k = self.get_provider_key(id).await?;
        let plain = self
            .cipher()
            .open(&k.secret_sealed)
            .map_err(|e| ApiError::Internal(format!("cannot open key {id}: {e}")))?;
        self.audit(
            actor,
            "provider_key.reveal",
            "provider_key",
            id,
            json!({ "name": k.name }),
        )
        .await;
        Ok(plain)
    }
}
