//! Global models (public names with default prices) and provider models (a provider's
//! upstream name, price overrides and name mappings).

use aether_domain::entities::{GlobalModel, ModelCapabilities, ModelMapping, ProviderModel};
use aether_domain::pricing::TieredPricing;
use aether_domain::{GlobalModelId, ProviderId, ProviderModelId, Timestamp, Usd};
use aether_store::{GlobalModelFilter, Page, Paged};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{double_option, set, validate};
use crate::{Actor, Admin, ApiError, ApiResult};

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewGlobalModel {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub capabilities: Option<ModelCapabilities>,
    #[serde(default)]
    pub supported_capabilities: Vec<String>,
    #[serde(default)]
    pub default_tiered_pricing: Option<TieredPricing>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub default_price_per_request: Option<Usd>,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct GlobalModelPatch {
    pub name: Option<String>,
    pub display_name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
    pub capabilities: Option<ModelCapabilities>,
    pub supported_capabilities: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub default_tiered_pricing: Option<Option<TieredPricing>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub default_price_per_request: Option<Option<Usd>>,
    pub is_active: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewProviderModel {
    pub global_model_id: GlobalModelId,
    /// The name the upstream knows; defaults to the global model's name.
    #[serde(default)]
    pub provider_model_name: Option<String>,
    #[serde(default, alias = "provider_model_aliases")]
    pub provider_model_mappings: Vec<ModelMapping>,
    #[serde(default)]
    pub tiered_pricing: Option<TieredPricing>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub price_per_request: Option<Usd>,
    #[serde(default)]
    pub supports_streaming: Option<bool>,
    #[serde(default)]
    pub supports_vision: Option<bool>,
    #[serde(default)]
    pub supports_function_calling: Option<bool>,
    #[serde(default)]
    pub supports_extended_thinking: Option<bool>,
    #[serde(default)]
    pub supports_image_generation: Option<bool>,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct ProviderModelPatch {
    pub global_model_id: Option<GlobalModelId>,
    pub provider_model_name: Option<String>,
    #[serde(alias = "provider_model_aliases")]
    pub provider_model_mappings: Option<Vec<ModelMapping>>,
    #[serde(default, deserialize_with = "double_option")]
    pub tiered_pricing: Option<Option<TieredPricing>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub price_per_request: Option<Option<Usd>>,
    #[serde(default, deserialize_with = "double_option")]
    pub supports_streaming: Option<Option<bool>>,
    #[serde(default, deserialize_with = "double_option")]
    pub supports_vision: Option<Option<bool>>,
    #[serde(default, deserialize_with = "double_option")]
    pub supports_function_calling: Option<Option<bool>>,
    #[serde(default, deserialize_with = "double_option")]
    pub supports_extended_thinking: Option<Option<bool>>,
    #[serde(default, deserialize_with = "double_option")]
    pub supports_image_generation: Option<Option<bool>>,
    pub is_active: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
}

/// A global model with the number of providers serving it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GlobalModelView {
    #[serde(flatten)]
    #[schema(inline, value_type = Object)]
    pub model: GlobalModel,
    pub provider_count: usize,
}

fn model_name(field: &'static str, s: &str) -> ApiResult<String> {
    let v = validate::text(field, s, 200)?;
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::invalid(field, "a model name has no spaces"));
    }
    Ok(v)
}

fn check_price(
    field: &'static str,
    p: Option<&TieredPricing>,
    per_request: Option<Usd>,
) -> ApiResult<()> {
    if let Some(p) = p {
        validate::pricing(field, p)?;
    }
    if per_request.is_some_and(Usd::is_negative) {
        return Err(ApiError::invalid(
            "price_per_request",
            "must not be negative",
        ));
    }
    Ok(())
}

fn mappings(m: Vec<ModelMapping>) -> ApiResult<Vec<ModelMapping>> {
    m.into_iter()
        .map(|x| {
            Ok(ModelMapping {
                name: model_name("provider_model_mappings", &x.name)?,
                priority: x.priority.max(1),
                api_formats: x.api_formats,
            })
        })
        .collect()
}

fn object(field: &'static str, v: Option<Value>) -> ApiResult<Value> {
    match v {
        None | Some(Value::Null) => Ok(json!({})),
        Some(v @ Value::Object(_)) => Ok(v),
        Some(_) => Err(ApiError::invalid(field, "must be a JSON object")),
    }
}

impl Admin {
    pub async fn create_global_model(
        &self,
        actor: &Actor,
        n: NewGlobalModel,
    ) -> ApiResult<GlobalModel> {
        let name = model_name("name", &n.name)?;
        check_price(
            "default_tiered_pricing",
            n.default_tiered_pricing.as_ref(),
            n.default_price_per_request,
        )?;
        let now = Timestamp::now();
        let m = GlobalModel {
            id: GlobalModelId::new(),
            display_name: match n.display_name {
                Some(d) => validate::text("display_name", &d, 200)?,
                None => name.clone(),
            },
            name,
            description: n.description.filter(|d| !d.trim().is_empty()),
            is_active: n.is_active,
            capabilities: n.capabilities.unwrap_or_default(),
            supported_capabilities: validate::capabilities(
                "supported_capabilities",
                &n.supported_capabilities,
            )?,
            default_tiered_pricing: n.default_tiered_pricing,
            default_price_per_request: n.default_price_per_request,
            config: object("config", n.config)?,
            usage_count: 0,
            created_at: now,
            updated_at: now,
        };
        self.store().insert_global_model(&m).await?;
        self.audit(
            actor,
            "global_model.create",
            "global_model",
            m.id,
            json!({ "name": m.name }),
        )
        .await;
        self.changed().await;
        Ok(m)
    }

    pub async fn get_global_model(&self, id: GlobalModelId) -> ApiResult<GlobalModel> {
        self.store()
            .get_global_model(id)
            .await?
            .ok_or(ApiError::NotFound("global model"))
    }

    pub async fn list_global_models(
        &self,
        f: &GlobalModelFilter,
        page: Page,
    ) -> ApiResult<Paged<GlobalModelView>> {
        let models = self.store().list_global_models(f, page).await?;
        let pms = self.store().list_provider_models(None, None).await?;
        Ok(Paged {
            items: models
                .items
                .into_iter()
                .map(|m| GlobalModelView {
                    provider_count: pms.iter().filter(|p| p.global_model_id == m.id).count(),
                    model: m,
                })
                .collect(),
            total: models.total,
            total_capped: models.total_capped,
        })
    }

    pub async fn update_global_model(
        &self,
        actor: &Actor,
        id: GlobalModelId,
        p: GlobalModelPatch,
    ) -> ApiResult<GlobalModel> {
        let mut m = self.get_global_model(id).await?;
        if let Some(n) = &p.name {
            m.name = model_name("name", n)?;
        }
        if let Some(d) = &p.display_name {
            m.display_name = validate::text("display_name", d, 200)?;
        }
        if let Some(c) = &p.supported_capabilities {
            m.supported_capabilities = validate::capabilities("supported_capabilities", c)?;
        }
        check_price(
            "default_tiered_pricing",
            p.default_tiered_pricing.as_ref().and_then(Option::as_ref),
            p.default_price_per_request.flatten(),
        )?;
        set(&mut m.description, p.description);
        set(&mut m.capabilities, p.capabilities);
        set(&mut m.default_tiered_pricing, p.default_tiered_pricing);
        set(
            &mut m.default_price_per_request,
            p.default_price_per_request,
        );
        set(&mut m.is_active, p.is_active);
        if p.config.is_some() {
            m.config = object("config", p.config)?;
        }
        m.updated_at = Timestamp::now();
        self.store().update_global_model(&m).await?;
        self.audit(
            actor,
            "global_model.update",
            "global_model",
            id,
            json!({ "name": m.name }),
        )
        .await;
        self.changed().await;
        Ok(m)
    }

    pub async fn delete_global_model(&self, actor: &Actor, id: GlobalModelId) -> ApiResult<()> {
        let m = self.get_global_model(id).await?;
        self.store().delete_global_model(id).await?;
        self.audit(
            actor,
            "global_model.delete",
            "global_model",
            id,
            json!({ "name": m.name }),
        )
        .await;
        self.changed().await;
        Ok(())
    }

    pub async fn create_provider_model(
        &self,
        actor: &Actor,
        provider_id: ProviderId,
        n: NewProviderModel,
    ) -> ApiResult<ProviderModel> {
        self.get_provider(provider_id).await?;
        let g = self.get_global_model(n.global_model_id).await?;
        check_price(
            "tiered_pricing",
            n.tiered_pricing.as_ref(),
            n.price_per_request,
        )?;
        let now = Timestamp::now();
        let m = ProviderModel {
            id: ProviderModelId::new(),
            provider_id,
            global_model_id: g.id,
            provider_model_name: match n.provider_model_name {
                Some(x) => model_name("provider_model_name", &x)?,
                None => g.name.clone(),
            },
            provider_model_mappings: mappings(n.provider_model_mappings)?,
            tiered_pricing: n.tiered_pricing,
            price_per_request: n.price_per_request,
            supports_streaming: n.supports_streaming,
            supports_vision: n.supports_vision,
            supports_function_calling: n.supports_function_calling,
            supports_extended_thinking: n.supports_extended_thinking,
            supports_image_generation: n.supports_image_generation,
            is_active: n.is_active,
            config: object("config", n.config)?,
            created_at: now,
            updated_at: now,
        };
        self.store().insert_provider_model(&m).await?;
        self.audit(
            actor,
            "provider_model.create",
            "provider_model",
            m.id,
            json!({ "provider_id": provider_id, "global_model": g.name, "upstream": m.provider_model_name }),
        )
        .await;
        self.changed().await;
        Ok(m)
    }

    pub async fn get_provider_model(
        &self,
        provider_id: ProviderId,
        id: ProviderModelId,
    ) -> ApiResult<ProviderModel> {
        self.store()
            .get_provider_model(id)
            .await?
            .filter(|m| m.provider_id == provider_id)
            .ok_or(ApiError::NotFound("provider model"))
    }

    pub async fn list_provider_models(
        &self,
        provider_id: ProviderId,
    ) -> ApiResult<Vec<ProviderModel>> {
        self.get_provider(provider_id).await?;
        Ok(self
            .store()
            .list_provider_models(Some(provider_id), None)
            .await?)
    }

    /// The provider models implementing a global model.
    pub async fn global_model_providers(&self, id: GlobalModelId) -> ApiResult<Vec<ProviderModel>> {
        self.get_global_model(id).await?;
        Ok(self.store().list_provider_models(None, Some(id)).await?)
    }

    pub async fn update_provider_model(
        &self,
        actor: &Actor,
        provider_id: ProviderId,
        id: ProviderModelId,
        p: ProviderModelPatch,
    ) -> ApiResult<ProviderModel> {
        let mut m = self.get_provider_model(provider_id, id).await?;
        if let Some(g) = p.global_model_id {
            m.global_model_id = self.get_global_model(g).await?.id;
        }
        if let Some(n) = &p.provider_model_name {
            m.provider_model_name = model_name("provider_model_name", n)?;
        }
        if let Some(x) = p.provider_model_mappings {
            m.provider_model_mappings = mappings(x)?;
        }
        check_price(
            "tiered_pricing",
            p.tiered_pricing.as_ref().and_then(Option::as_ref),
            p.price_per_request.flatten(),
        )?;
        set(&mut m.tiered_pricing, p.tiered_pricing);
        set(&mut m.price_per_request, p.price_per_request);
        set(&mut m.supports_streaming, p.supports_streaming);
        set(&mut m.supports_vision, p.supports_vision);
        set(
            &mut m.supports_function_calling,
            p.supports_function_calling,
        );
        set(
            &mut m.supports_extended_thinking,
            p.supports_extended_thinking,
        );
        set(
            &mut m.supports_image_generation,
            p.supports_image_generation,
        );
        set(&mut m.is_active, p.is_active);
        if p.config.is_some() {
            m.config = object("config", p.config)?;
        }
        m.updated_at = Timestamp::now();
        self.store().update_provider_model(&m).await?;
        self.audit(
            actor,
            "provider_model.update",
            "provider_model",
            id,
            json!({ "upstream": m.provider_model_name }),
        )
        .await;
        self.changed().await;
        Ok(m)
    }

    pub async fn delete_provider_model(
        &self,
        actor: &Actor,
        provider_id: ProviderId,
        id: ProviderModelId,
    ) -> ApiResult<()> {
        let m = self.get_provider_model(provider_id, id).await?;
        self.store().delete_provider_model(id).await?;
        self.audit(
            actor,
            "provider_model.delete",
            "provider_model",
            id,
            json!({ "upstream": m.provider_model_name }),
        )
        .await;
        self.changed().await;
        Ok(())
    }
}
