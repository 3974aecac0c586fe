//! Providers, their endpoints and their upstream keys.

use aether_domain::entities::{Endpoint, Provider, ProviderKey};
use aether_domain::{EndpointId, Multiplier, ProviderId, ProviderKeyId, Timestamp, Usd};
use async_trait::async_trait;

use crate::SqlStore;
use crate::args;
use crate::db::{Exec, Row};
use crate::error::Result;
use crate::sql::{
    Count, Filter, Page, Paged, i32_, j, json, like_pattern, oj, opt_i32, opt_json, opt_ts,
    opt_u32, opt_usd, parse, ts, u32_, usd,
};

#[derive(Debug, Clone, Default)]
pub struct ProviderFilter {
    pub search: Option<String>,
    pub is_active: Option<bool>,
}

#[async_trait]
pub trait ProviderRepo: Send + Sync {
    async fn insert_provider(&self, p: &Provider) -> Result<()>;
    async fn update_provider(&self, p: &Provider) -> Result<()>;
    async fn get_provider(&self, id: ProviderId) -> Result<Option<Provider>>;
    async fn get_provider_by_name(&self, name: &str) -> Result<Option<Provider>>;
    async fn list_providers(&self, f: &ProviderFilter, page: Page) -> Result<Paged<Provider>>;
    /// Deletes the provider with its endpoints, keys and models.
    async fn delete_provider(&self, id: ProviderId) -> Result<bool>;
    /// Adds actual cost to the provider's period usage.
    async fn add_provider_spend(&self, id: ProviderId, amount: Usd) -> Result<()>;
    async fn reset_provider_quota(&self, id: ProviderId, at: Timestamp) -> Result<bool>;

    async fn insert_endpoint(&self, e: &Endpoint) -> Result<()>;
    async fn update_endpoint(&self, e: &Endpoint) -> Result<()>;
    async fn get_endpoint(&self, id: EndpointId) -> Result<Option<Endpoint>>;
    /// All endpoints, or those of one provider.
    async fn list_endpoints(&self, provider: Option<ProviderId>) -> Result<Vec<Endpoint>>;
    async fn delete_endpoint(&self, id: EndpointId) -> Result<bool>;

    async fn insert_provider_key(&self, k: &ProviderKey) -> Result<()>;
    /// Writes the editable fields; the secret changes only through `replace_provider_key_secret`.
    async fn update_provider_key(&self, k: &ProviderKey) -> Result<()>;
    async fn replace_provider_key_secret(
        &self,
        id: ProviderKeyId,
        sealed: &str,
        fingerprint: &str,
        masked: &str,
    ) -> Result<bool>;
    async fn get_provider_key(&self, id: ProviderKeyId) -> Result<Option<ProviderKey>>;
    /// All keys, or those of one endpoint.
    async fn list_provider_keys(&self, endpoint: Option<EndpointId>) -> Result<Vec<ProviderKey>>;
    async fn delete_provider_key(&self, id: ProviderKeyId) -> Result<bool>;
}

const P_COLS: &str = "id, name, display_name, description, website, billing_type, quota_usd, \
    quota_used_usd, quota_period_days, period_started_at, expires_at, rpm_limit, provider_priority, \
    is_active, config, created_at, updated_at";

fn provider_from_row(r: &Row) -> Result<Provider> {
    Ok(Provider {
        id: parse(r, "id")?,
        name: r.text("name")?,
        display_name: r.text("display_name")?,
        description: r.opt_text("description")?,
        website: r.opt_text("website")?,
        billing_type: parse(r, "billing_type")?,
        quota_usd: opt_usd(r, "quota_usd")?,
        quota_used_usd: usd(r, "quota_used_usd")?,
        quota_period_days: u32_(r, "quota_period_days")?,
        period_started_at: opt_ts(r, "period_started_at")?,
        expires_at: opt_ts(r, "expires_at")?,
        rpm_limit: opt_u32(r, "rpm_limit")?,
        provider_priority: i32_(r, "provider_priority")?,
        is_active: r.bool("is_active")?,
        config: json(r, "config")?,
        created_at: ts(r, "created_at")?,
        updated_at: ts(r, "updated_at")?,
    })
}

const E_COLS: &str = "id, provider_id, api_format, base_url, custom_path, headers, timeout, max_retries, \
    max_concurrent, proxy, is_active, config, created_at, updated_at";

fn endpoint_from_row(r: &Row) -> Result<Endpoint> {
    Ok(Endpoint {
        id: parse(r, "id")?,
        provider_id: parse(r, "provider_id")?,
        api_format: parse(r, "api_format")?,
        base_url: r.text("base_url")?,
        custom_path: r.opt_text("custom_path")?,
        headers: json(r, "headers")?,
        timeout: u32_(r, "timeout")?,
        max_retries: u32_(r, "max_retries")?,
        max_concurrent: opt_u32(r, "max_concurrent")?,
        proxy: opt_json(r, "proxy")?,
        is_active: r.bool("is_active")?,
        config: json(r, "config")?,
        created_at: ts(r, "created_at")?,
        updated_at: ts(r, "updated_at")?,
    })
}

const K_COLS: &str = "id, endpoint_id, provider_id, name, note, secret_sealed, secret_fingerprint, \
    api_key_masked, rate_multiplier_ppm, internal_priority, global_priority, max_concurrent, \
    rate_limit, allowed_models, capabilities, cache_ttl_minutes, max_probe_interval_minutes, \
    expires_at, is_active, created_at, updated_at";

fn key_from_row(r: &Row) -> Result<ProviderKey> {
    Ok(ProviderKey {
        id: parse(r, "id")?,
        endpoint_id: parse(r, "endpoint_id")?,
        provider_id: parse(r, "provider_id")?,
        name: r.text("name")?,
        note: r.opt_text("note")?,
        secret_sealed: r.text("secret_sealed")?,
        secret_fingerprint: r.text("secret_fingerprint")?,
        api_key_masked: r.text("api_key_masked")?,
        rate_multiplier: Multiplier::from_ppm(r.i64("rate_multiplier_ppm")?),
        internal_priority: i32_(r, "internal_priority")?,
        global_priority: opt_i32(r, "global_priority")?,
        max_concurrent: opt_u32(r, "max_concurrent")?,
        rate_limit: opt_u32(r, "rate_limit")?,
        allowed_models: opt_json(r, "allowed_models")?,
        capabilities: json(r, "capabilities")?,
        cache_ttl_minutes: u32_(r, "cache_ttl_minutes")?,
        max_probe_interval_minutes: opt_u32(r, "max_probe_interval_minutes")?,
        expires_at: opt_ts(r, "expires_at")?,
        is_active: r.bool("is_active")?,
        created_at: ts(r, "created_at")?,
        updated_at: ts(r, "updated_at")?,
    })
}

pub(crate) async fn insert_provider<E: Exec>(ex: &mut E, p: &Provider) -> Result<()> {
    ex.execute(
        "INSERT INTO providers (id, name, display_name, description, website, billing_type, quota_usd, \
         quota_used_usd, quota_period_days, period_started_at, expires_at, rpm_limit, \
         provider_priority, is_active, config, created_at, updated_at) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)"
            .into(),
        args![
            p.id.to_string(),
            p.name.as_str(),
            p.display_name.as_str(),
            p.description.clone(),
            p.website.clone(),
            p.billing_type.as_str(),
            p.quota_usd.map(Usd::nanos),
            p.quota_used_usd.nanos(),
            p.quota_period_days,
            p.period_started_at.map(Timestamp::millis),
            p.expires_at.map(Timestamp::millis),
            p.rpm_limit,
            p.provider_priority,
            p.is_active,
            j(&p.config),
            p.created_at.millis(),
            p.updated_at.millis(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn update_provider<E: Exec>(ex: &mut E, p: &Provider) -> Result<()> {
    ex.execute(
        "UPDATE providers SET name = $2, display_name = $3, description = $4, website = $5, \
         billing_type = $6, quota_usd = $7, quota_period_days = $8, expires_at = $9, rpm_limit = $10, \
         provider_priority = $11, is_active = $12, config = $13, updated_at = $14 WHERE id = $1"
            .into(),
        args![
            p.id.to_string(),
            p.name.as_str(),
            p.display_name.as_str(),
            p.description.clone(),
            p.website.clone(),
            p.billing_type.as_str(),
            p.quota_usd.map(Usd::nanos),
            p.quota_period_days,
            p.expires_at.map(Timestamp::millis),
            p.rpm_limit,
            p.provider_priority,
            p.is_active,
            j(&p.config),
            p.updated_at.millis(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn insert_endpoint<E: Exec>(ex: &mut E, e: &Endpoint) -> Result<()> {
    ex.execute(
        "INSERT INTO endpoints (id, provider_id, api_format, base_url, custom_path, headers, timeout, \
         max_retries, max_concurrent, proxy, is_active, config, created_at, updated_at) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)"
            .into(),
        args![
            e.id.to_string(),
            e.provider_id.to_string(),
            e.api_format.as_str(),
            e.base_url.as_str(),
            e.custom_path.clone(),
            j(&e.headers),
            e.timeout,
            e.max_retries,
            e.max_concurrent,
            e.proxy.as_ref().map(proxy_json),
            e.is_active,
            j(&e.config),
            e.created_at.millis(),
            e.updated_at.millis(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn update_endpoint<E: Exec>(ex: &mut E, e: &Endpoint) -> Result<()> {
    let proxy = e.proxy.as_ref().map(proxy_json);
    ex.execute(
        "UPDATE endpoints SET api_format = $2, base_url = $3, custom_path = $4, headers = $5, \
         timeout = $6, max_retries = $7, max_concurrent = $8, proxy = $9, is_active = $10, \
         config = $11, updated_at = $12 WHERE id = $1"
            .into(),
        args![
            e.id.to_string(),
            e.api_format.as_str(),
            e.base_url.as_str(),
            e.custom_path.clone(),
            j(&e.headers),
            e.timeout,
            e.max_retries,
            e.max_concurrent,
            proxy,
            e.is_active,
            j(&e.config),
            e.updated_at.millis(),
        ],
    )
    .await?;
    Ok(())
}

/// The stored form of a proxy. `ProxyConfig` skips the sealed password when serialized for
/// clients, so the column is written field by field to keep it.
fn proxy_json(p: &aether_domain::entities::ProxyConfig) -> String {
    j(&serde_json::json!({
        "url": p.url,
        "username": p.username,
        "password_sealed": p.password_sealed,
    }))
}

pub(crate) async fn insert_key<E: Exec>(ex: &mut E, k: &ProviderKey) -> Result<()> {
    ex.execute(
        "INSERT INTO provider_keys (id, endpoint_id, provider_id, name, note, secret_sealed, \
         secret_fingerprint, api_key_masked, rate_multiplier_ppm, internal_priority, global_priority, \
         max_concurrent, rate_limit, allowed_models, capabilities, cache_ttl_minutes, \
         max_probe_interval_minutes, expires_at, is_active, created_at, updated_at) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21)"
            .into(),
        args![
            k.id.to_string(),
            k.endpoint_id.to_string(),
            k.provider_id.to_string(),
            k.name.as_str(),
            k.note.clone(),
            k.secret_sealed.as_str(),
            k.secret_fingerprint.as_str(),
            k.api_key_masked.as_str(),
            k.rate_multiplier.ppm(),
            k.internal_priority,
            k.global_priority,
            k.max_concurrent,
            k.rate_limit,
            oj(k.allowed_models.as_ref()),
            j(&k.capabilities),
            k.cache_ttl_minutes,
            k.max_probe_interval_minutes,
            k.expires_at.map(Timestamp::millis),
            k.is_active,
            k.created_at.millis(),
            k.updated_at.millis(),
        ],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl ProviderRepo for SqlStore {
    async fn insert_provider(&self, p: &Provider) -> Result<()> {
        insert_provider(&mut self.db.clone(), p).await
    }

    async fn update_provider(&self, p: &Provider) -> Result<()> {
        update_provider(&mut self.db.clone(), p).await
    }

    async fn get_provider(&self, id: ProviderId) -> Result<Option<Provider>> {
        let mut f = Filter::new();
        f.cond("id = {}", id.to_string());
        f.all(&mut self.db.clone(), P_COLS, "providers", "id")
            .await?
            .first()
            .map(provider_from_row)
            .transpose()
    }

    async fn get_provider_by_name(&self, name: &str) -> Result<Option<Provider>> {
        let mut f = Filter::new();
        f.cond("name = {}", name);
        f.all(&mut self.db.clone(), P_COLS, "providers", "id")
            .await?
            .first()
            .map(provider_from_row)
            .transpose()
    }

    async fn list_providers(&self, pf: &ProviderFilter, page: Page) -> Result<Paged<Provider>> {
        let mut f = Filter::new();
        if let Some(s) = pf.search.as_deref().filter(|s| !s.trim().is_empty()) {
            f.cond(
                "(LOWER(name) LIKE {} ESCAPE '\\' OR LOWER(display_name) LIKE {} ESCAPE '\\')",
                like_pattern(s.trim()),
            );
        }
        if let Some(a) = pf.is_active {
            f.cond("is_active = {}", a);
        }
        f.page(
            &mut self.db.clone(),
            P_COLS,
            "providers",
            "provider_priority, name",
            page,
            Count::Exact,
        )
        .await?
        .decode(provider_from_row)
    }

    async fn delete_provider(&self, id: ProviderId) -> Result<bool> {
        let n = self
            .db
            .clone()
            .execute(
                "DELETE FROM providers WHERE id = $1".into(),
                args![id.to_string()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn add_provider_spend(&self, id: ProviderId, amount: Usd) -> Result<()> {
        self.db
            .clone()
            .execute(
                "UPDATE providers SET quota_used_usd = quota_used_usd + $2 WHERE id = $1".into(),
                args![id.to_string(), amount.nanos()],
            )
            .await?;
        Ok(())
    }

    async fn reset_provider_quota(&self, id: ProviderId, at: Timestamp) -> Result<bool> {
        let n = self
            .db
            .clone()
            .execute(
                "UPDATE providers SET quota_used_usd = 0, period_started_at = $2 WHERE id = $1"
                    .into(),
                args![id.to_string(), at.millis()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn insert_endpoint(&self, e: &Endpoint) -> Result<()> {
        insert_endpoint(&mut self.db.clone(), e).await
    }

    async fn update_endpoint(&self, e: &Endpoint) -> Result<()> {
        update_endpoint(&mut self.db.clone(), e).await
    }

    async fn get_endpoint(&self, id: EndpointId) -> Result<Option<Endpoint>> {
        let mut f = Filter::new();
        f.cond("id = {}", id.to_string());
        f.all(&mut self.db.clone(), E_COLS, "endpoints", "id")
            .await?
            .first()
            .map(endpoint_from_row)
            .transpose()
    }

    async fn list_endpoints(&self, provider: Option<ProviderId>) -> Result<Vec<Endpoint>> {
        let mut f = Filter::new();
        if let Some(p) = provider {
            f.cond("provider_id = {}", p.to_string());
        }
        f.all(
            &mut self.db.clone(),
            E_COLS,
            "endpoints",
            "provider_id, api_format",
        )
        .await?
        .iter()
        .map(endpoint_from_row)
        .collect()
    }

    async fn delete_endpoint(&self, id: EndpointId) -> Result<bool> {
        let n = self
            .db
            .clone()
            .execute(
                "DELETE FROM endpoints WHERE id = $1".into(),
                args![id.to_string()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn insert_provider_key(&self, k: &ProviderKey) -> Result<()> {
        insert_key(&mut self.db.clone(), k).await
    }

    async fn update_provider_key(&self, k: &ProviderKey) -> Result<()> {
        self.db
            .clone()
            .execute(
                "UPDATE provider_keys SET name = $2, note = $3, rate_multiplier_ppm = $4, \
                 internal_priority = $5, global_priority = $6, max_concurrent = $7, rate_limit = $8, \
                 allowed_models = $9, capabilities = $10, cache_ttl_minutes = $11, \
                 max_probe_interval_minutes = $12, expires_at = $13, is_active = $14, updated_at = $15 \
                 WHERE id = $1"
                    .into(),
                args![
                    k.id.to_string(),
                    k.name.as_str(),
                    k.note.clone(),
                    k.rate_multiplier.ppm(),
                    k.internal_priority,
                    k.global_priority,
                    k.max_concurrent,
                    k.rate_limit,
                    oj(k.allowed_models.as_ref()),
                    j(&k.capabilities),
                    k.cache_ttl_minutes,
                    k.max_probe_interval_minutes,
                    k.expires_at.map(Timestamp::millis),
                    k.is_active,
                    k.updated_at.millis(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn replace_provider_key_secret(
        &self,
        id: ProviderKeyId,
        sealed: &str,
        fingerprint: &str,
        masked: &str,
    ) -> Result<bool> {
        let n = self
            .db
            .clone()
            .execute(
                "UPDATE provider_keys SET secret_sealed = $2, secret_fingerprint = $3, \
                 api_key_masked = $4, updated_at = $5 WHERE id = $1"
                    .into(),
                args![
                    id.to_string(),
                    sealed,
                    fingerprint,
                    masked,
                    Timestamp::now().millis()
                ],
            )
            .await?;
        Ok(n > 0)
    }

    async fn get_provider_key(&self, id: ProviderKeyId) -> Result<Option<ProviderKey>> {
        let mut f = Filter::new();
        f.cond("id = {}", id.to_string());
        f.all(&mut self.db.clone(), K_COLS, "provider_keys", "id")
            .await?
            .first()
            .map(key_from_row)
            .transpose()
    }

    async fn list_provider_keys(&self, endpoint: Option<EndpointId>) -> Result<Vec<ProviderKey>> {
        let mut f = Filter::new();
        if let Some(e) = endpoint {
            f.cond("endpoint_id = {}", e.to_string());
        }
        f.all(
            &mut self.db.clone(),
            K_COLS,
            "provider_keys",
            "endpoint_id, internal_priority, created_at",
        )
        .await?
        .iter()
        .map(key_from_row)
        .collect()
    }

    async fn delete_provider_key(&self, id: ProviderKeyId) -> Result<bool> {
        let n = self
            .db
            .clone()
            .execute(
                "DELETE FROM provider_keys WHERE id = $1".into(),
                args![id.to_string()],
            )
            .await?;
        Ok(n > 0)
    }
}
