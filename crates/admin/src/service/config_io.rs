//! Configuration export and import in the original Aether's format v1.0, so a deployment of
//! the original can move over (and back). Global models, providers with their endpoints and
//! keys, and provider models. Import merges with `skip` (default), `overwrite` or `error`, is
//! planned from one consistent read and applied in one transaction — all or nothing.
//!
//! The format stores money as JSON numbers; they are read through their shortest decimal
//! form, so `3.75` is exactly $3.75. Provider keys are exported in clear only when asked
//! explicitly; otherwise `api_key` is `null` and the masked form is given beside it.

use std::collections::{BTreeMap, HashMap, HashSet};

use aether_domain::entities::{
    BillingType, Endpoint, GlobalModel, ModelCapabilities, ModelMapping, Provider, ProviderKey,
    ProviderModel,
};
use aether_domain::pricing::{PriceTier, TieredPricing};
use aether_domain::secret::{mask, sha256_hex};
use aether_domain::{
    ApiFormat, EndpointId, GlobalModelId, Multiplier, ProviderId, ProviderKeyId, ProviderModelId,
    Timestamp, Usd,
};
use aether_store::{ConfigChange, GlobalModelFilter, Page, ProviderFilter};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::validate;
use crate::{Actor, Admin, ApiError, ApiResult};

/// A USD amount written as a JSON number, as the original format has it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct V1Money(pub Usd);

impl Serialize for V1Money {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0.to_f64_lossy())
    }
}

impl<'de> Deserialize<'de> for V1Money {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Usd::deserialize(d).map(Self)
    }
}

/// The whole export document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExportV1 {
    pub version: String,
    #[serde(default)]
    pub exported_at: Option<String>,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub global_models: Vec<V1GlobalModel>,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub providers: Vec<V1Provider>,
    /// Import only: `skip` (default), `overwrite` or `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_mode: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct V1GlobalModel {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub default_price_per_request: Option<V1Money>,
    #[serde(default)]
    pub default_tiered_pricing: Option<Value>,
    #[serde(default)]
    pub supported_capabilities: Option<Vec<String>>,
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default = "yes")]
    pub is_active: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct V1Provider {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub website: Option<String>,
    #[serde(default)]
    pub billing_type: Option<String>,
    #[serde(default)]
    pub monthly_quota_usd: Option<V1Money>,
    #[serde(default)]
    pub quota_reset_day: Option<u32>,
    #[serde(default)]
    pub rpm_limit: Option<u32>,
    #[serde(default)]
    pub provider_priority: Option<i32>,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default)]
    pub endpoints: Vec<V1Endpoint>,
    #[serde(default)]
    pub models: Vec<V1Model>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct V1Endpoint {
    pub api_format: String,
    pub base_url: String,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub timeout: Option<u32>,
    #[serde(default)]
    pub max_retries: Option<u32>,
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default)]
    pub custom_path: Option<String>,
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default)]
    pub keys: Vec<V1Key>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct V1Key {
    /// In clear; `null` in an export made without secrets.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Our exports only: the masked key, for reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_masked: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub rate_multiplier: Option<Multiplier>,
    #[serde(default)]
    pub internal_priority: Option<i32>,
    #[serde(default)]
    pub global_priority: Option<i32>,
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    #[serde(default)]
    pub rate_limit: Option<u32>,
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
    /// `{"cache_1h": true}` in the original; a list is accepted too.
    #[serde(default)]
    pub capabilities: Option<Value>,
    #[serde(default = "yes")]
    pub is_active: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct V1Model {
    #[serde(default)]
    pub global_model_name: Option<String>,
    pub provider_model_name: String,
    #[serde(default, alias = "provider_model_aliases")]
    pub provider_model_mappings: Option<Vec<ModelMapping>>,
    #[serde(default)]
    pub price_per_request: Option<V1Money>,
    #[serde(default)]
    pub tiered_pricing: Option<Value>,
    #[serde(default)]
    pub supports_vision: Option<bool>,
    #[serde(default)]
    pub supports_function_calling: Option<bool>,
    #[serde(default)]
    pub supports_streaming: Option<bool>,
    #[serde(default)]
    pub supports_extended_thinking: Option<bool>,
    #[serde(default)]
    pub supports_image_generation: Option<bool>,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default)]
    pub config: Option<Value>,
}

fn yes() -> bool {
    true
}

/// Created / updated / skipped counts of one kind of record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Counts {
    pub created: u32,
    pub updated: u32,
    pub skipped: u32,
}

/// What an import did (the original's `stats` shape, plus each record by name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct ImportStats {
    pub global_models: Counts,
    pub providers: Counts,
    pub endpoints: Counts,
    pub keys: Counts,
    pub models: Counts,
    /// Records left out, and why.
    pub errors: Vec<String>,
    /// Every record counted above, in document order.
    pub items: Vec<ImportItem>,
}

/// Which kind of record an [`ImportItem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportKind {
    GlobalModel,
    Provider,
    Endpoint,
    Key,
    Model,
}

/// What the import did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportAction {
    Created,
    Updated,
    Skipped,
}

/// One record of the document and what became of it. Names: a global model's name, a
/// provider's (slug) name, `provider FORMAT` for an endpoint, `provider FORMAT key-name` for a
/// key (its name or masked form — never the secret), `provider/model` for a provider model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ImportItem {
    pub kind: ImportKind,
    pub name: String,
    pub action: ImportAction,
}

impl ImportStats {
    /// Counts a record and remembers its name.
    fn note(&mut self, kind: ImportKind, action: ImportAction, name: String) {
        let counts = match kind {
            ImportKind::GlobalModel => &mut self.global_models,
            ImportKind::Provider => &mut self.providers,
            ImportKind::Endpoint => &mut self.endpoints,
            ImportKind::Key => &mut self.keys,
            ImportKind::Model => &mut self.models,
        };
        let n = match action {
            ImportAction::Created => &mut counts.created,
            ImportAction::Updated => &mut counts.updated,
            ImportAction::Skipped => &mut counts.skipped,
        };
        *n += 1;
        self.items.push(ImportItem { kind, name, action });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeMode {
    Skip,
    Overwrite,
    Error,
}

impl MergeMode {
    pub fn parse(s: Option<&str>) -> ApiResult<Self> {
        match s.unwrap_or("skip") {
            "skip" => Ok(Self::Skip),
            "overwrite" => Ok(Self::Overwrite),
            "error" => Ok(Self::Error),
            other => Err(ApiError::invalid(
                "merge_mode",
                format!("`{other}` is not one of skip, overwrite, error"),
            )),
        }
    }
}

// ---- pricing in the v1 shape ----

fn money_field(t: &Map<String, Value>, key: &str) -> Result<Option<Usd>, String> {
    match t.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value::<Usd>(v.clone())
            .map(Some)
            .map_err(|e| format!("`{key}`: {e}")),
    }
}

/// Reads the original's `{"tiers":[…]}`; the 1-hour cache-write price lives in a tier's
/// `cache_ttl_pricing` entry with `ttl_minutes: 60`.
pub fn pricing_from_v1(v: &Value) -> Result<TieredPricing, String> {
    let tiers = v
        .get("tiers")
        .and_then(Value::as_array)
        .ok_or("`tiers` must be a list")?;
    let mut out = Vec::with_capacity(tiers.len());
    for t in tiers {
        let t = t.as_object().ok_or("a tier must be an object")?;
        let up_to = match t.get("up_to") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or("`up_to` must be a whole number or null")?),
        };
        let one_hour = t
            .get("cache_ttl_pricing")
            .and_then(Value::as_array)
            .and_then(|entries| {
                entries
                    .iter()
                    .find(|e| e.get("ttl_minutes").and_then(Value::as_u64) == Some(60))
            })
            .and_then(Value::as_object)
            .map(|e| money_field(e, "cache_creation_price_per_1m"))
            .transpose()?
            .flatten();
        out.push(PriceTier {
            up_to,
            input_per_m: money_field(t, "input_price_per_1m")?.unwrap_or(Usd::ZERO),
            output_per_m: money_field(t, "output_price_per_1m")?.unwrap_or(Usd::ZERO),
            cache_creation_per_m: money_field(t, "cache_creation_price_per_1m")?,
            cache_creation_1h_per_m: one_hour,
            cache_read_per_m: money_field(t, "cache_read_price_per_1m")?,
        });
    }
    let p = TieredPricing { tiers: out };
    p.validate().map_err(|e| e.to_string())?;
    Ok(p)
}

pub fn pricing_to_v1(p: &TieredPricing) -> Value {
    let num = |u: Usd| json!(u.to_f64_lossy());
    json!({
        "tiers": p.tiers.iter().map(|t| {
            let mut o = json!({
                "up_to": t.up_to,
                "input_price_per_1m": num(t.input_per_m),
                "output_price_per_1m": num(t.output_per_m),
                "cache_creation_price_per_1m": t.cache_creation_per_m.map(num),
                "cache_read_price_per_1m": t.cache_read_per_m.map(num),
            });
            if let Some(h) = t.cache_creation_1h_per_m {
                o["cache_ttl_pricing"] = json!([{ "ttl_minutes": 60, "cache_creation_price_per_1m": num(h) }]);
            }
            o
        }).collect::<Vec<_>>()
    })
}

const CAPABILITY_KEYS: [&str; 7] = [
    "streaming",
    "vision",
    "function_calling",
    "extended_thinking",
    "image_generation",
    "context_limit",
    "output_limit",
];

/// The original keeps a model's capabilities inside `config`; ours are a field of their own.
fn split_model_config(config: Option<Value>) -> (ModelCapabilities, Value) {
    let mut rest = match config {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut caps = Map::new();
    for k in CAPABILITY_KEYS {
        if let Some(v) = rest.remove(k) {
            caps.insert(k.to_string(), v);
        }
    }
    let caps = serde_json::from_value(Value::Object(caps)).unwrap_or_default();
    (caps, Value::Object(rest))
}

fn join_model_config(m: &GlobalModel) -> Value {
    let mut out = match &m.config {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    if let Ok(Value::Object(c)) = serde_json::to_value(&m.capabilities) {
        for (k, v) in c {
            if !v.is_null() {
                out.insert(k, v);
            }
        }
    }
    Value::Object(out)
}

fn capabilities_from_v1(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Object(m)) => m
            .iter()
            .filter(|(_, on)| on.as_bool() == Some(true))
            .map(|(k, _)| k.clone())
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn object(v: Option<Value>) -> Value {
    match v {
        Some(o @ Value::Object(_)) => o,
        _ => json!({}),
    }
}

/// Turns a name of the original (free text) into our slug form.
fn slugify(name: &str) -> String {
    let s: String = name
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() { "provider".into() } else { s }
}

impl Admin {
    /// Exports the provider/model configuration. Provider keys are in clear only with
    /// `include_secrets`, which is audited.
    pub async fn export_config(&self, actor: &Actor, include_secrets: bool) -> ApiResult<ExportV1> {
        let s = self.store();
        let globals = s
            .list_global_models(&GlobalModelFilter::default(), Page::all())
            .await?
            .items;
        let providers = s
            .list_providers(&ProviderFilter::default(), Page::all())
            .await?
            .items;
        let endpoints = s.list_endpoints(None).await?;
        let keys = s.list_provider_keys(None).await?;
        let pms = s.list_provider_models(None, None).await?;
        let gname: HashMap<GlobalModelId, &str> =
            globals.iter().map(|g| (g.id, g.name.as_str())).collect();

        let mut out_providers = Vec::with_capacity(providers.len());
        for p in &providers {
            let mut eps = Vec::new();
            for e in endpoints.iter().filter(|e| e.provider_id == p.id) {
                let mut ks = Vec::new();
                for k in keys.iter().filter(|k| k.endpoint_id == e.id) {
                    let api_key = if include_secrets {
                        Some(self.cipher().open(&k.secret_sealed).map_err(|err| {
                            ApiError::Internal(format!("cannot open key {}: {err}", k.id))
                        })?)
                    } else {
                        None
                    };
                    ks.push(V1Key {
                        api_key,
                        api_key_masked: (!include_secrets).then(|| k.api_key_masked.clone()),
                        name: Some(k.name.clone()),
                        note: k.note.clone(),
                        rate_multiplier: Some(k.rate_multiplier),
                        internal_priority: Some(k.internal_priority),
                        global_priority: k.global_priority,
                        max_concurrent: k.max_concurrent,
                        rate_limit: k.rate_limit,
                        allowed_models: k.allowed_models.clone(),
                        capabilities: Some(Value::Object(
                            k.capabilities
                                .iter()
                                .map(|c| (c.clone(), json!(true)))
                                .collect(),
                        )),
                        is_active: k.is_active,
                    });
                }
                eps.push(V1Endpoint {
                    api_format: e.api_format.as_str().to_string(),
                    base_url: e.base_url.clone(),
                    headers: Some(e.headers.clone()),
                    timeout: Some(e.timeout),
                    max_retries: Some(e.max_retries),
                    max_concurrent: e.max_concurrent,
                    is_active: e.is_active,
                    custom_path: e.custom_path.clone(),
                    config: Some(e.config.clone()),
                    keys: ks,
                });
            }
            let models = pms
                .iter()
                .filter(|m| m.provider_id == p.id)
                .map(|m| V1Model {
                    global_model_name: gname.get(&m.global_model_id).map(|s| (*s).to_string()),
                    provider_model_name: m.provider_model_name.clone(),
                    provider_model_mappings: Some(m.provider_model_mappings.clone()),
                    price_per_request: m.price_per_request.map(V1Money),
                    tiered_pricing: m.tiered_pricing.as_ref().map(pricing_to_v1),
                    supports_vision: m.supports_vision,
                    supports_function_calling: m.supports_function_calling,
                    supports_streaming: m.supports_streaming,
                    supports_extended_thinking: m.supports_extended_thinking,
                    supports_image_generation: m.supports_image_generation,
                    is_active: m.is_active,
                    config: Some(m.config.clone()),
                })
                .collect();
            out_providers.push(V1Provider {
                name: p.name.clone(),
                display_name: Some(p.display_name.clone()),
                description: p.description.clone(),
                website: p.website.clone(),
                billing_type: Some(p.billing_type.as_str().to_string()),
                monthly_quota_usd: p.quota_usd.map(V1Money),
                quota_reset_day: Some(p.quota_period_days),
                rpm_limit: p.rpm_limit,
                provider_priority: Some(p.provider_priority),
                is_active: p.is_active,
                config: Some(p.config.clone()),
                endpoints: eps,
                models,
            });
        }
        let doc = ExportV1 {
            version: "1.0".into(),
            exported_at: Some(Timestamp::now().to_string()),
            global_models: globals
                .iter()
                .map(|g| V1GlobalModel {
                    name: g.name.clone(),
                    display_name: Some(g.display_name.clone()),
                    default_price_per_request: g.default_price_per_request.map(V1Money),
                    default_tiered_pricing: g.default_tiered_pricing.as_ref().map(pricing_to_v1),
                    supported_capabilities: Some(g.supported_capabilities.clone()),
                    config: Some(join_model_config(g)),
                    is_active: g.is_active,
                })
                .collect(),
            providers: out_providers,
            merge_mode: None,
        };
        self.audit(
            actor,
            "config.export",
            "config",
            "v1.0",
            json!({ "include_secrets": include_secrets }),
        )
        .await;
        Ok(doc)
    }

    /// Imports an export document. Nothing is written unless the whole plan applies.
    #[allow(clippy::too_many_lines)] // one linear pass over the document reads best whole
    pub async fn import_config(
        &self,
        actor: &Actor,
        doc: ExportV1,
        mode: MergeMode,
    ) -> ApiResult<ImportStats> {
        if doc.version != "1.0" {
            return Err(ApiError::invalid(
                "version",
                format!(
                    "unsupported configuration version `{}` (expected 1.0)",
                    doc.version
                ),
            ));
        }
        let s = self.store();
        let now = Timestamp::now();
        let mut stats = ImportStats::default();
        let mut plan: Vec<ConfigChange> = Vec::new();

        let existing_globals: HashMap<String, GlobalModel> = s
            .list_global_models(&GlobalModelFilter::default(), Page::all())
            .await?
            .items
            .into_iter()
            .map(|g| (g.name.clone(), g))
            .collect();
        let existing_providers: HashMap<String, Provider> = s
            .list_providers(&ProviderFilter::default(), Page::all())
            .await?
            .items
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        let existing_endpoints = s.list_endpoints(None).await?;
        let existing_keys = s.list_provider_keys(None).await?;
        let existing_models = s.list_provider_models(None, None).await?;

        // Global models first: provider models refer to them by name.
        let mut global_ids: HashMap<String, GlobalModelId> = existing_globals
            .iter()
            .map(|(n, g)| (n.clone(), g.id))
            .collect();
        for g in doc.global_models {
            let pricing = match g.default_tiered_pricing.as_ref().filter(|v| !v.is_null()) {
                None => None,
                Some(v) => match pricing_from_v1(v) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        stats
                            .errors
                            .push(format!("global model `{}`: pricing: {e}; skipped", g.name));
                        continue;
                    }
                },
            };
            let (capabilities, config) = split_model_config(g.config);
            let supported = validate::capabilities(
                "supported_capabilities",
                &g.supported_capabilities.unwrap_or_default(),
            )
            .unwrap_or_default();
            match existing_globals.get(&g.name) {
                Some(old) => match mode {
                    MergeMode::Skip => {
                        stats.note(
                            ImportKind::GlobalModel,
                            ImportAction::Skipped,
                            g.name.clone(),
                        );
                    }
                    MergeMode::Error => {
                        return Err(ApiError::Conflict(format!(
                            "global model `{}` already exists",
                            g.name
                        )));
                    }
                    MergeMode::Overwrite => {
                        let mut m = old.clone();
                        m.display_name = g.display_name.unwrap_or(m.display_name);
                        m.default_price_per_request = g.default_price_per_request.map(|x| x.0);
                        m.default_tiered_pricing = pricing;
                        m.supported_capabilities = supported;
                        m.capabilities = capabilities;
                        m.config = config;
                        m.is_active = g.is_active;
                        m.updated_at = now;
                        plan.push(ConfigChange::UpdateGlobalModel(m));
                        stats.note(
                            ImportKind::GlobalModel,
                            ImportAction::Updated,
                            g.name.clone(),
                        );
                    }
                },
                None => {
                    if global_ids.contains_key(&g.name) {
                        stats.errors.push(format!(
                            "global model `{}` appears twice; the second was skipped",
                            g.name
                        ));
                        continue;
                    }
                    let m = GlobalModel {
                        id: GlobalModelId::new(),
                        display_name: g.display_name.unwrap_or_else(|| g.name.clone()),
                        name: g.name.clone(),
                        description: None,
                        is_active: g.is_active,
                        capabilities,
                        supported_capabilities: supported,
                        default_tiered_pricing: pricing,
                        default_price_per_request: g.default_price_per_request.map(|x| x.0),
                        config,
                        usage_count: 0,
                        created_at: now,
                        updated_at: now,
                    };
                    global_ids.insert(m.name.clone(), m.id);
                    plan.push(ConfigChange::InsertGlobalModel(m));
                    stats.note(
                        ImportKind::GlobalModel,
                        ImportAction::Created,
                        g.name.clone(),
                    );
                }
            }
        }

        let mut seen_providers: HashSet<String> = HashSet::new();
        for p in doc.providers {
            let name = validate::slug("name", &p.name).unwrap_or_else(|_| slugify(&p.name));
            if !seen_providers.insert(name.clone()) {
                stats.errors.push(format!(
                    "provider `{}` appears twice; the second was skipped",
                    p.name
                ));
                continue;
            }
            let billing_type = match p.billing_type.as_deref() {
                None => BillingType::PayAsYouGo,
                Some(b) => match b.parse() {
                    Ok(b) => b,
                    Err(e) => {
                        stats
                            .errors
                            .push(format!("provider `{}`: {e}; skipped", p.name));
                        continue;
                    }
                },
            };
            let provider_id = match existing_providers.get(&name) {
                Some(old) => {
                    match mode {
                        MergeMode::Error => {
                            return Err(ApiError::Conflict(format!(
                                "provider `{name}` already exists"
                            )));
                        }
                        MergeMode::Skip => {
                            stats.note(ImportKind::Provider, ImportAction::Skipped, name.clone());
                        }
                        MergeMode::Overwrite => {
                            let mut v = old.clone();
                            v.display_name = p.display_name.clone().unwrap_or(v.display_name);
                            v.description = p.description.clone();
                            v.website = p.website.clone();
                            v.billing_type = billing_type;
                            v.quota_usd = p.monthly_quota_usd.map(|x| x.0);
                            v.quota_period_days = p.quota_reset_day.unwrap_or(30).max(1);
                            v.rpm_limit = p.rpm_limit.filter(|r| *r > 0);
                            v.provider_priority = p.provider_priority.unwrap_or(100);
                            v.is_active = p.is_active;
                            v.config = object(p.config.clone());
                            v.updated_at = now;
                            plan.push(ConfigChange::UpdateProvider(v));
                            stats.note(ImportKind::Provider, ImportAction::Updated, name.clone());
                        }
                    }
                    // As in the original: a skipped provider's endpoints, keys and models are
                    // still merged.
                    old.id
                }
                None => {
                    let v = Provider {
                        id: ProviderId::new(),
                        display_name: p.display_name.clone().unwrap_or_else(|| p.name.clone()),
                        name: name.clone(),
                        description: p.description.clone(),
                        website: p.website.clone(),
                        billing_type,
                        quota_usd: p.monthly_quota_usd.map(|x| x.0),
                        quota_used_usd: Usd::ZERO,
                        quota_period_days: p.quota_reset_day.unwrap_or(30).max(1),
                        period_started_at: Some(now),
                        expires_at: None,
                        rpm_limit: p.rpm_limit.filter(|r| *r > 0),
                        provider_priority: p.provider_priority.unwrap_or(100),
                        is_active: p.is_active,
                        config: object(p.config.clone()),
                        created_at: now,
                        updated_at: now,
                    };
                    let id = v.id;
                    plan.push(ConfigChange::InsertProvider(v));
                    stats.note(ImportKind::Provider, ImportAction::Created, name.clone());
                    id
                }
            };

            let mut seen_formats: HashSet<ApiFormat> = HashSet::new();
            for e in p.endpoints {
                let Ok(format) = e.api_format.parse::<ApiFormat>() else {
                    stats.errors.push(format!(
                        "provider `{name}`: unknown API format `{}`; endpoint skipped",
                        e.api_format
                    ));
                    continue;
                };
                if !seen_formats.insert(format) {
                    stats.errors.push(format!(
                        "provider `{name}`: endpoint {format} appears twice; the second was skipped"
                    ));
                    continue;
                }
                let base_url = match validate::base_url("base_url", &e.base_url) {
                    Ok(u) => u,
                    Err(err) => {
                        stats.errors.push(format!(
                            "provider `{name}` endpoint {format}: {err}; skipped"
                        ));
                        continue;
                    }
                };
                let old = existing_endpoints
                    .iter()
                    .find(|x| x.provider_id == provider_id && x.api_format == format);
                let endpoint_id = match old {
                    Some(old) => {
                        match mode {
                            MergeMode::Error => {
                                return Err(ApiError::Conflict(format!(
                                    "provider `{name}` already has a {format} endpoint"
                                )));
                            }
                            MergeMode::Skip => {
                                stats.note(
                                    ImportKind::Endpoint,
                                    ImportAction::Skipped,
                                    format!("{name} {format}"),
                                );
                            }
                            MergeMode::Overwrite => {
                                let mut v = old.clone();
                                v.base_url = base_url;
                                v.headers = e.headers.clone().unwrap_or_default();
                                v.timeout = e.timeout.unwrap_or(300).clamp(1, 3600);
                                v.max_retries = e.max_retries.unwrap_or(3).min(10);
                                v.max_concurrent = e.max_concurrent.filter(|m| *m > 0);
                                v.is_active = e.is_active;
                                v.custom_path =
                                    e.custom_path.clone().filter(|c| c.starts_with('/'));
                                v.config = object(e.config.clone());
                                v.updated_at = now;
                                plan.push(ConfigChange::UpdateEndpoint(v));
                                stats.note(
                                    ImportKind::Endpoint,
                                    ImportAction::Updated,
                                    format!("{name} {format}"),
                                );
                            }
                        }
                        old.id
                    }
                    None => {
                        let v = Endpoint {
                            id: EndpointId::new(),
                            provider_id,
                            api_format: format,
                            base_url,
                            custom_path: e.custom_path.clone().filter(|c| c.starts_with('/')),
                            headers: e.headers.clone().unwrap_or_default(),
                            timeout: e.timeout.unwrap_or(300).clamp(1, 3600),
                            max_retries: e.max_retries.unwrap_or(3).min(10),
                            max_concurrent: e.max_concurrent.filter(|m| *m > 0),
                            proxy: None,
                            is_active: e.is_active,
                            config: object(e.config.clone()),
                            created_at: now,
                            updated_at: now,
                        };
                        let id = v.id;
                        plan.push(ConfigChange::InsertEndpoint(v));
                        stats.note(
                            ImportKind::Endpoint,
                            ImportAction::Created,
                            format!("{name} {format}"),
                        );
                        id
                    }
                };

                // Keys are matched by value (fingerprint) and never overwritten.
                let mut fingerprints: HashSet<String> = existing_keys
                    .iter()
                    .filter(|k| k.endpoint_id == endpoint_id)
                    .map(|k| k.secret_fingerprint.clone())
                    .collect();
                for k in e.keys {
                    let Some(plain) = k
                        .api_key
                        .as_deref()
                        .map(str::trim)
                        .filter(|x| !x.is_empty())
                    else {
                        stats.errors.push(format!("provider `{name}` endpoint {format}: a key has no `api_key` (exported without secrets?); skipped"));
                        continue;
                    };
                    let key_name = k
                        .name
                        .clone()
                        .filter(|n| !n.trim().is_empty())
                        .unwrap_or_else(|| mask(plain));
                    if !fingerprints.insert(sha256_hex(plain.as_bytes())) {
                        stats.note(
                            ImportKind::Key,
                            ImportAction::Skipped,
                            format!("{name} {format} {key_name}"),
                        );
                        continue;
                    }
                    let (secret_sealed, secret_fingerprint, api_key_masked) = match self
                        .seal_secret(plain)
                    {
                        Ok(sealed) => sealed,
                        Err(ApiError::Invalid { message, .. }) => {
                            stats.errors.push(format!(
                                    "provider `{name}` endpoint {format} key `{key_name}`: {message}; skipped"
                                ));
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    stats.note(
                        ImportKind::Key,
                        ImportAction::Created,
                        format!("{name} {format} {key_name}"),
                    );
                    plan.push(ConfigChange::InsertProviderKey(ProviderKey {
                        id: ProviderKeyId::new(),
                        endpoint_id,
                        provider_id,
                        name: k
                            .name
                            .clone()
                            .filter(|n| !n.trim().is_empty())
                            .unwrap_or_else(|| api_key_masked.clone()),
                        note: k.note.clone(),
                        secret_sealed,
                        secret_fingerprint,
                        api_key_masked,
                        rate_multiplier: k.rate_multiplier.unwrap_or(Multiplier::ONE),
                        internal_priority: k.internal_priority.unwrap_or(50),
                        global_priority: k.global_priority,
                        max_concurrent: k.max_concurrent.filter(|m| *m > 0),
                        rate_limit: k.rate_limit.filter(|m| *m > 0),
                        allowed_models: k.allowed_models.clone(),
                        capabilities: capabilities_from_v1(k.capabilities.as_ref()),
                        cache_ttl_minutes: 5,
                        max_probe_interval_minutes: None,
                        expires_at: None,
                        is_active: k.is_active,
                        created_at: now,
                        updated_at: now,
                    }));
                }
            }

            let mut seen_models: HashSet<String> = HashSet::new();
            for m in p.models {
                let Some(gname) = m.global_model_name.as_deref() else {
                    stats.errors.push(format!(
                        "provider `{name}`: model `{}` has no global_model_name; skipped",
                        m.provider_model_name
                    ));
                    continue;
                };
                let Some(&global_model_id) = global_ids.get(gname) else {
                    stats.errors.push(format!(
                        "provider `{name}`: global model `{gname}` does not exist; model skipped"
                    ));
                    continue;
                };
                if !seen_models.insert(m.provider_model_name.clone()) {
                    stats.errors.push(format!(
                        "provider `{name}`: model `{}` appears twice; the second was skipped",
                        m.provider_model_name
                    ));
                    continue;
                }
                let pricing = match m.tiered_pricing.as_ref().filter(|v| !v.is_null()) {
                    None => None,
                    Some(v) => match pricing_from_v1(v) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            stats.errors.push(format!(
                                "provider `{name}` model `{}`: pricing: {e}; skipped",
                                m.provider_model_name
                            ));
                            continue;
                        }
                    },
                };
                let old = existing_models.iter().find(|x| {
                    x.provider_id == provider_id && x.provider_model_name == m.provider_model_name
                });
                let fill = |pm: &mut ProviderModel| {
                    pm.global_model_id = global_model_id;
                    pm.provider_model_mappings =
                        m.provider_model_mappings.clone().unwrap_or_default();
                    pm.tiered_pricing = pricing.clone();
                    pm.price_per_request = m.price_per_request.map(|x| x.0);
                    pm.supports_vision = m.supports_vision;
                    pm.supports_function_calling = m.supports_function_calling;
                    pm.supports_streaming = m.supports_streaming;
                    pm.supports_extended_thinking = m.supports_extended_thinking;
                    pm.supports_image_generation = m.supports_image_generation;
                    pm.is_active = m.is_active;
                    pm.config = object(m.config.clone());
                    pm.updated_at = now;
                };
                match old {
                    Some(old) => match mode {
                        MergeMode::Error => {
                            return Err(ApiError::Conflict(format!(
                                "provider `{name}` already has model `{}`",
                                m.provider_model_name
                            )));
                        }
                        MergeMode::Skip => {
                            stats.note(
                                ImportKind::Model,
                                ImportAction::Skipped,
                                format!("{name}/{}", m.provider_model_name),
                            );
                        }
                        MergeMode::Overwrite => {
                            let mut pm = old.clone();
                            fill(&mut pm);
                            plan.push(ConfigChange::UpdateProviderModel(pm));
                            stats.note(
                                ImportKind::Model,
                                ImportAction::Updated,
                                format!("{name}/{}", m.provider_model_name),
                            );
                        }
                    },
                    None => {
                        let mut pm = ProviderModel {
                            id: ProviderModelId::new(),
                            provider_id,
                            global_model_id,
                            provider_model_name: m.provider_model_name.clone(),
                            provider_model_mappings: Vec::new(),
                            tiered_pricing: None,
                            price_per_request: None,
                            supports_streaming: None,
                            supports_vision: None,
                            supports_function_calling: None,
                            supports_extended_thinking: None,
                            supports_image_generation: None,
                            is_active: true,
                            config: json!({}),
                            created_at: now,
                            updated_at: now,
                        };
                        fill(&mut pm);
                        plan.push(ConfigChange::InsertProviderModel(pm));
                        stats.note(
                            ImportKind::Model,
                            ImportAction::Created,
                            format!("{name}/{}", m.provider_model_name),
                        );
                    }
                }
            }
        }

        s.apply_config(&plan).await?;
        self.audit(
            actor,
            "config.import",
            "config",
            "v1.0",
            json!({ "stats": &stats }),
        )
        .await;
        self.changed().await;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pricing_round_trips_through_the_v1_shape_exactly() {
        let v = json!({"tiers": [
            {"up_to": 200000, "input_price_per_1m": 3, "output_price_per_1m": 15.0,
             "cache_creation_price_per_1m": 3.75, "cache_read_price_per_1m": 0.3,
             "cache_ttl_pricing": [{"ttl_minutes": 5, "cache_creation_price_per_1m": 3.75},
                                    {"ttl_minutes": 60, "cache_creation_price_per_1m": 6}]},
            {"up_to": null, "input_price_per_1m": 6, "output_price_per_1m": 22.5}
        ]});
        let p = pricing_from_v1(&v).unwrap();
        assert_eq!(p.tiers[0].cache_creation_1h_per_m, Some(Usd::dollars(6)));
        assert_eq!(p.tiers[0].cache_read_per_m.unwrap().to_string(), "0.3");
        assert_eq!(p.tiers[1].output_per_m.to_string(), "22.5");
        assert_eq!(pricing_from_v1(&pricing_to_v1(&p)).unwrap(), p);
        assert!(pricing_from_v1(&json!({"tiers": []})).is_err());
        assert!(pricing_from_v1(&json!({"tiers": [{"up_to": 10, "input_price_per_1m": 1, "output_price_per_1m": 1}]})).is_err());
    }

    #[test]
    fn model_config_splits_capabilities_from_metadata() {
        let (caps, rest) = split_model_config(Some(
            json!({"vision": true, "context_limit": 200000, "family": "claude"}),
        ));
        assert!(caps.vision && caps.streaming);
        assert_eq!(caps.context_limit, Some(200_000));
        assert_eq!(rest, json!({"family": "claude"}));
        assert_eq!(
            capabilities_from_v1(Some(&json!({"cache_1h": true, "context_1m": false}))),
            vec!["cache_1h"]
        );
        assert_eq!(slugify("Anthropic Official!"), "anthropic-official");
    }
}
