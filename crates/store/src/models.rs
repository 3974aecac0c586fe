//! Global models and provider models.

use aether_domain::entities::{GlobalModel, ProviderModel};
use aether_domain::{GlobalModelId, ProviderId, ProviderModelId, Usd};
use async_trait::async_trait;

use crate::SqlStore;
use crate::args;
use crate::db::{Exec, Row};
use crate::error::Result;
use crate::sql::{
    Count, Filter, Page, Paged, j, json, like_pattern, oj, opt_json, opt_usd, parse, ts,
};

#[derive(Debug, Clone, Default)]
pub struct GlobalModelFilter {
    pub search: Option<String>,
    pub is_active: Option<bool>,
}

#[async_trait]
pub trait ModelRepo: Send + Sync {
    async fn insert_global_model(&self, m: &GlobalModel) -> Result<()>;
    async fn update_global_model(&self, m: &GlobalModel) -> Result<()>;
    async fn get_global_model(&self, id: GlobalModelId) -> Result<Option<GlobalModel>>;
    async fn get_global_model_by_name(&self, name: &str) -> Result<Option<GlobalModel>>;
    async fn list_global_models(
        &self,
        f: &GlobalModelFilter,
        page: Page,
    ) -> Result<Paged<GlobalModel>>;
    /// Deletes the model and every provider model implementing it.
    async fn delete_global_model(&self, id: GlobalModelId) -> Result<bool>;
    async fn bump_global_model_usage(&self, id: GlobalModelId, n: i64) -> Result<()>;

    async fn insert_provider_model(&self, m: &ProviderModel) -> Result<()>;
    async fn update_provider_model(&self, m: &ProviderModel) -> Result<()>;
    async fn get_provider_model(&self, id: ProviderModelId) -> Result<Option<ProviderModel>>;
    /// Provider models, optionally only one provider's or one global model's.
    async fn list_provider_models(
        &self,
        provider: Option<ProviderId>,
        global: Option<GlobalModelId>,
    ) -> Result<Vec<ProviderModel>>;
    async fn delete_provider_model(&self, id: ProviderModelId) -> Result<bool>;
}

const G_COLS: &str = "id, name, display_name, description, is_active, capabilities, supported_capabilities, \
    default_tiered_pricing, default_price_per_request, config, usage_count, created_at, updated_at";

fn global_from_row(r: &Row) -> Result<GlobalModel> {
    Ok(GlobalModel {
        id: parse(r, "id")?,
        name: r.text("name")?,
        display_name: r.text("display_name")?,
        description: r.opt_text("description")?,
        is_active: r.bool("is_active")?,
        capabilities: json(r, "capabilities")?,
        supported_capabilities: json(r, "supported_capabilities")?,
        default_tiered_pricing: opt_json(r, "default_tiered_pricing")?,
        default_price_per_request: opt_usd(r, "default_price_per_request")?,
        config: json(r, "config")?,
        usage_count: r.i64("usage_count")?,
        created_at: ts(r, "created_at")?,
        updated_at: ts(r, "updated_at")?,
    })
}

const PM_COLS: &str = "id, provider_id, global_model_id, provider_model_name, provider_model_mappings, \
    tiered_pricing, price_per_request, supports_streaming, supports_vision, supports_function_calling, \
    supports_extended_thinking, supports_image_generation, is_active, config, created_at, updated_at";

fn pm_from_row(r: &Row) -> Result<ProviderModel> {
    Ok(ProviderModel {
        id: parse(r, "id")?,
        provider_id: parse(r, "provider_id")?,
        global_model_id: parse(r, "global_model_id")?,
        provider_model_name: r.text("provider_model_name")?,
        provider_model_mappings: json(r, "provider_model_mappings")?,
        tiered_pricing: opt_json(r, "tiered_pricing")?,
        price_per_request: opt_usd(r, "price_per_request")?,
        supports_streaming: r.opt_bool("supports_streaming")?,
        supports_vision: r.opt_bool("supports_vision")?,
        supports_function_calling: r.opt_bool("supports_function_calling")?,
        supports_extended_thinking: r.opt_bool("supports_extended_thinking")?,
        supports_image_generation: r.opt_bool("supports_image_generation")?,
        is_active: r.bool("is_active")?,
        config: json(r, "config")?,
        created_at: ts(r, "created_at")?,
        updated_at: ts(r, "updated_at")?,
    })
}

pub(crate) async fn insert_global<E: Exec>(ex: &mut E, m: &GlobalModel) -> Result<()> {
    ex.execute(
        "INSERT INTO global_models (id, name, display_name, description, is_active, capabilities, \
         supported_capabilities, default_tiered_pricing, default_price_per_request, config, \
         usage_count, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)"
            .into(),
        args![
            m.id.to_string(),
            m.name.as_str(),
            m.display_name.as_str(),
            m.description.clone(),
            m.is_active,
            j(&m.capabilities),
            j(&m.supported_capabilities),
            oj(m.default_tiered_pricing.as_ref()),
            m.default_price_per_request.map(Usd::nanos),
            j(&m.config),
            m.usage_count,
            m.created_at.millis(),
            m.updated_at.millis(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn update_global<E: Exec>(ex: &mut E, m: &GlobalModel) -> Result<()> {
    ex.execute(
        "UPDATE global_models SET name = $2, display_name = $3, description = $4, is_active = $5, \
         capabilities = $6, supported_capabilities = $7, default_tiered_pricing = $8, \
         default_price_per_request = $9, config = $10, updated_at = $11 WHERE id = $1"
            .into(),
        args![
            m.id.to_string(),
            m.name.as_str(),
            m.display_name.as_str(),
            m.description.clone(),
            m.is_active,
            j(&m.capabilities),
            j(&m.supported_capabilities),
            oj(m.default_tiered_pricing.as_ref()),
            m.default_price_per_request.map(Usd::nanos),
            j(&m.config),
            m.updated_at.millis(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn insert_pm<E: Exec>(ex: &mut E, m: &ProviderModel) -> Result<()> {
    ex.execute(
        "INSERT INTO provider_models (id, provider_id, global_model_id, provider_model_name, \
         provider_model_mappings, tiered_pricing, price_per_request, supports_streaming, \
         supports_vision, supports_function_calling, supports_extended_thinking, \
         supports_image_generation, is_active, config, created_at, updated_at) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)"
            .into(),
        args![
            m.id.to_string(),
            m.provider_id.to_string(),
            m.global_model_id.to_string(),
            m.provider_model_name.as_str(),
            j(&m.provider_model_mappings),
            oj(m.tiered_pricing.as_ref()),
            m.price_per_request.map(Usd::nanos),
            m.supports_streaming,
            m.supports_vision,
            m.supports_function_calling,
            m.supports_extended_thinking,
            m.supports_image_generation,
            m.is_active,
            j(&m.config),
            m.created_at.millis(),
            m.updated_at.millis(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn update_pm<E: Exec>(ex: &mut E, m: &ProviderModel) -> Result<()> {
    ex.execute(
        "UPDATE provider_models SET global_model_id = $2, provider_model_name = $3, \
         provider_model_mappings = $4, tiered_pricing = $5, price_per_request = $6, \
         supports_streaming = $7, supports_vision = $8, supports_function_calling = $9, \
         supports_extended_thinking = $10, supports_image_generation = $11, is_active = $12, \
         config = $13, updated_at = $14 WHERE id = $1"
            .into(),
        args![
            m.id.to_string(),
            m.global_model_id.to_string(),
            m.provider_model_name.as_str(),
            j(&m.provider_model_mappings),
            oj(m.tiered_pricing.as_ref()),
            m.price_per_request.map(Usd::nanos),
            m.supports_streaming,
            m.supports_vision,
            m.supports_function_calling,
            m.supports_extended_thinking,
            m.supports_image_generation,
            m.is_active,
            j(&m.config),
            m.updated_at.millis(),
        ],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl ModelRepo for SqlStore {
    async fn insert_global_model(&self, m: &GlobalModel) -> Result<()> {
        insert_global(&mut self.db.clone(), m).await
    }

    async fn update_global_model(&self, m: &GlobalModel) -> Result<()> {
        update_global(&mut self.db.clone(), m).await
    }

    async fn get_global_model(&self, id: GlobalModelId) -> Result<Option<GlobalModel>> {
        let mut f = Filter::new();
        f.cond("id = {}", id.to_string());
        f.all(&mut self.db.clone(), G_COLS, "global_models", "id")
            .await?
            .first()
            .map(global_from_row)
            .transpose()
    }

    async fn get_global_model_by_name(&self, name: &str) -> Result<Option<GlobalModel>> {
        let mut f = Filter::new();
        f.cond("name = {}", name);
        f.all(&mut self.db.clone(), G_COLS, "global_models", "id")
            .await?
            .first()
            .map(global_from_row)
            .transpose()
    }

    async fn list_global_models(
        &self,
        gf: &GlobalModelFilter,
        page: Page,
    ) -> Result<Paged<GlobalModel>> {
        let mut f = Filter::new();
        if let Some(s) = gf.search.as_deref().filter(|s| !s.trim().is_empty()) {
            f.cond(
                "(LOWER(name) LIKE {} ESCAPE '\\' OR LOWER(display_name) LIKE {} ESCAPE '\\')",
                like_pattern(s.trim()),
            );
        }
        if let Some(a) = gf.is_active {
            f.cond("is_active = {}", a);
        }
        f.page(
            &mut self.db.clone(),
            G_COLS,
            "global_models",
            "name",
            page,
            Count::Exact,
        )
        .await?
        .decode(global_from_row)
    }

    async fn delete_global_model(&self, id: GlobalModelId) -> Result<bool> {
        let n = self
            .db
            .clone()
            .execute(
                "DELETE FROM global_models WHERE id = $1".into(),
                args![id.to_string()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn bump_global_model_usage(&self, id: GlobalModelId, n: i64) -> Result<()> {
        self.db
            .clone()
            .execute(
                "UPDATE global_models SET usage_count = usage_count + $2 WHERE id = $1".into(),
                args![id.to_string(), n],
            )
            .await?;
        Ok(())
    }

    async fn insert_provider_model(&self, m: &ProviderModel) -> Result<()> {
        insert_pm(&mut self.db.clone(), m).await
    }

    async fn update_provider_model(&self, m: &ProviderModel) -> Result<()> {
        update_pm(&mut self.db.clone(), m).await
    }

    async fn get_provider_model(&self, id: ProviderModelId) -> Result<Option<ProviderModel>> {
        let mut f = Filter::new();
        f.cond("id = {}", id.to_string());
        f.all(&mut self.db.clone(), PM_COLS, "provider_models", "id")
            .await?
            .first()
            .map(pm_from_row)
            .transpose()
    }

    async fn list_provider_models(
        &self,
        provider: Option<ProviderId>,
        global: Option<GlobalModelId>,
    ) -> Result<Vec<ProviderModel>> {
        let mut f = Filter::new();
        if let Some(p) = provider {
            f.cond("provider_id = {}", p.to_string());
        }
        if let Some(g) = global {
            f.cond("global_model_id = {}", g.to_string());
        }
        f.all(
            &mut self.db.clone(),
            PM_COLS,
            "provider_models",
            "provider_id, provider_model_name",
        )
        .await?
        .iter()
        .map(pm_from_row)
        .collect()
    }

    async fn delete_provider_model(&self, id: ProviderModelId) -> Result<bool> {
        let n = self
            .db
            .clone()
            .execute(
                "DELETE FROM provider_models WHERE id = $1".into(),
                args![id.to_string()],
            )
            .await?;
        Ok(n > 0)
    }
}
