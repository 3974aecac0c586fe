//! Provider tools (SPEC §7): **test model** — one small, non-streaming request through an
//! upstream key of a provider — and **fetch upstream models** — the model list the upstream
//! offers that key — plus adding picked upstream models as provider models in one go.
//!
//! This layer decides *what* is probed: the endpoint and key (the first active key unless one
//! is chosen), the upstream model, and it opens the sealed key with the store's cipher. The
//! outbound HTTP — URL per format and custom path, upstream auth per format, the endpoint's
//! proxy client — belongs to the request path, which implements [`UpstreamProbe`]; the server
//! installs it as an axum extension ([`Probe`]) for the JSON API and the console, so this
//! crate never depends on the gateway. A probe writes no usage record and charges nobody; it
//! is noted in the audit log. The key never appears in a result: anything the upstream echoes
//! back is scrubbed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use aether_domain::entities::{Endpoint, ProviderKey, ProviderModel};
use aether_domain::pricing::TokenUsage;
use aether_domain::secret::mask;
use aether_domain::{
    ApiFormat, EndpointId, GlobalModelId, ProviderId, ProviderKeyId, ProviderModelId,
};
use aether_store::{GlobalModelFilter, Page};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::models::NewProviderModel;
use super::validate;
use crate::{Actor, Admin, ApiError, ApiResult};

/// Sends probe requests upstream. Implemented by the request path (the gateway), which owns
/// URL building, upstream authentication and the per-proxy HTTP clients.
#[async_trait::async_trait]
pub trait UpstreamProbe: Send + Sync + 'static {
    /// One minimal non-streaming generation ("Say hi", at most 16 output tokens) in the
    /// endpoint's dialect, with a bounded timeout.
    async fn test_model(
        &self,
        endpoint: &Endpoint,
        secret: &str,
        upstream_model: &str,
    ) -> ProbeResult;

    /// The endpoint's model list in its dialect, following a bounded number of pages.
    async fn list_models(&self, endpoint: &Endpoint, secret: &str) -> ModelListing;
}

/// The probe as the HTTP layers receive it: an axum extension installed by the server.
#[derive(Clone)]
pub struct Probe(pub Arc<dyn UpstreamProbe>);

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
}

/// What one test request amounted to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProbeResult {
    /// The upstream answered successfully.
    pub ok: bool,
    /// HTTP status of the answer; `null` when there was none (timeout, connection refused).
    pub status: Option<u16>,
    /// Until the whole answer was read.
    pub latency_ms: u64,
    /// The URL that was called (no credential in it).
    pub url: String,
    /// The model the upstream says answered.
    pub answered_model: Option<String>,
    /// The start of the answer's text.
    pub excerpt: Option<String>,
    pub usage: Option<TokenUsage>,
    /// `unauthorized`, `billing`, `not_found`, `rate_limited`, `overloaded`, `server_error`,
    /// `invalid_request`, `html_page`, `empty_body`, `malformed_body`, `timeout`, `connect`,
    /// `request`, `proxy`.
    pub error_class: Option<String>,
    pub error: Option<String>,
}

/// One model of an upstream list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpstreamModel {
    /// The id to send as `model` (Gemini: without `models/`).
    pub id: String,
    pub display_name: Option<String>,
}

/// An upstream model list as fetched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelListing {
    /// At least the first page was read.
    pub ok: bool,
    /// HTTP status of the last page requested.
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// The first page's URL.
    pub url: String,
    pub models: Vec<UpstreamModel>,
    /// Pages read.
    pub pages: u32,
    /// More models exist than were read (page or size limit, or a later page failed).
    pub truncated: bool,
    pub error_class: Option<String>,
    pub error: Option<String>,
}

/// What to test. Give a provider model or an upstream model name (the name wins).
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
pub struct TestModelRequest {
    /// A model of this provider; its upstream name is tested.
    #[serde(default)]
    pub provider_model_id: Option<ProviderModelId>,
    /// An upstream model name, e.g. one not configured yet.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// The upstream key to use; default: the first active key (lowest internal priority) of
    /// an endpoint of the provider, active endpoints first.
    #[serde(default)]
    pub key_id: Option<ProviderKeyId>,
    /// Only with the default key: take it from this endpoint.
    #[serde(default)]
    pub endpoint_id: Option<EndpointId>,
}

/// Which endpoint and key a probe used (the key masked).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProbeTarget {
    pub provider_id: ProviderId,
    pub endpoint_id: EndpointId,
    pub api_format: ApiFormat,
    pub key_id: ProviderKeyId,
    pub key_name: String,
    pub key_masked: String,
}

/// The outcome of "test model". No usage record was written and nobody was charged.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TestModelReport {
    pub target: ProbeTarget,
    /// The upstream model name that was sent.
    pub upstream_model: String,
    pub result: ProbeResult,
}

/// One model of a fetched upstream list, compared with the provider's configuration.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UpstreamModelView {
    pub id: String,
    pub display_name: Option<String>,
    /// The provider already has a model with this upstream name (or name mapping).
    pub configured: bool,
    pub provider_model_id: Option<ProviderModelId>,
    /// The global model it is configured under, or else the global model of the same name.
    pub global_model_id: Option<GlobalModelId>,
    pub global_model_name: Option<String>,
}

/// The outcome of "fetch upstream models".
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UpstreamModelList {
    pub target: ProbeTarget,
    pub ok: bool,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub url: String,
    pub pages: u32,
    pub truncated: bool,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub models: Vec<UpstreamModelView>,
}

/// An upstream model to serve as a global model.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct UpstreamModelPick {
    pub upstream_model: String,
    pub global_model_id: GlobalModelId,
}

/// Replaces every occurrence of the secret (an upstream may echo the key back).
fn scrub(s: &mut String, secret: &str) {
    if secret.len() >= 4 && s.contains(secret) {
        *s = s.replace(secret, &mask(secret));
    }
}

fn scrub_opt(s: &mut Option<String>, secret: &str) {
    if let Some(s) = s.as_mut() {
        scrub(s, secret);
    }
}

/// Cuts `s` to at most `max` characters.
fn clip(s: &mut Option<String>, max: usize) {
    if let Some(v) = s.as_mut()
        && v.chars().count() > max
    {
        *v = v.chars().take(max).collect::<String>() + "…";
    }
}

fn upstream_name(field: &'static str, s: &str) -> ApiResult<String> {
    let v = validate::text(field, s, 200)?;
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::invalid(field, "a model name has no spaces"));
    }
    Ok(v)
}

/// Upstream names (and mapping names) the provider already serves → the provider model.
fn configured(models: &[ProviderModel]) -> HashMap<&str, &ProviderModel> {
    let mut out = HashMap::new();
    for m in models {
        out.entry(m.provider_model_name.as_str()).or_insert(m);
        for a in &m.provider_model_mappings {
            out.entry(a.name.as_str()).or_insert(m);
        }
    }
    out
}

impl Admin {
    /// The endpoint and key a probe uses: the chosen key, or the first active key (lowest
    /// internal priority, then oldest) of the provider's endpoints, active endpoints first.
    async fn probe_key(
        &self,
        provider_id: ProviderId,
        endpoint_id: Option<EndpointId>,
        key_id: Option<ProviderKeyId>,
    ) -> ApiResult<(Endpoint, ProviderKey)> {
        self.get_provider(provider_id).await?;
        if let Some(kid) = key_id {
            let k = self
                .store()
                .get_provider_key(kid)
                .await?
                .filter(|k| k.provider_id == provider_id)
                .ok_or_else(|| {
                    ApiError::invalid("key_id", "not an upstream key of this provider")
                })?;
            if endpoint_id.is_some_and(|e| e != k.endpoint_id) {
                return Err(ApiError::invalid(
                    "key_id",
                    "the key belongs to another endpoint",
                ));
            }
            let e = self.get_endpoint(k.endpoint_id).await?;
            return Ok((e, k));
        }
        let mut endpoints = self.store().list_endpoints(Some(provider_id)).await?;
        if let Some(eid) = endpoint_id {
            endpoints.retain(|e| e.id == eid);
            if endpoints.is_empty() {
                return Err(ApiError::invalid(
                    "endpoint_id",
                    "not an endpoint of this provider",
                ));
            }
        }
        endpoints.sort_by_key(|e| !e.is_active);
        for e in endpoints {
            let mut keys = self.store().list_provider_keys(Some(e.id)).await?;
            keys.retain(|k| k.is_active);
            keys.sort_by_key(|k| (k.internal_priority, k.created_at));
            if let Some(k) = keys.into_iter().next() {
                return Ok((e, k));
            }
        }
        Err(ApiError::invalid(
            "key_id",
            "this provider has no active upstream key; add one first",
        ))
    }

    fn open_key(&self, k: &ProviderKey) -> ApiResult<String> {
        self.cipher()
            .open(&k.secret_sealed)
            .map_err(|e| ApiError::Internal(format!("cannot open key {}: {e}", k.id)))
    }

    fn target(e: &Endpoint, k: &ProviderKey) -> ProbeTarget {
        ProbeTarget {
            provider_id: e.provider_id,
            endpoint_id: e.id,
            api_format: e.api_format,
            key_id: k.id,
            key_name: k.name.clone(),
            key_masked: k.api_key_masked.clone(),
        }
    }

    /// Test model: sends one small request through a key of the provider and reports status,
    /// latency, the answering model, an excerpt and the token usage — or the error. Writes
    /// no usage record; audited.
    pub async fn test_model(
        &self,
        actor: &Actor,
        probe: &dyn UpstreamProbe,
        provider_id: ProviderId,
        req: TestModelRequest,
    ) -> ApiResult<TestModelReport> {
        self.get_provider(provider_id).await?;
        let typed = req
            .upstream_model
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let upstream_model = match (typed, req.provider_model_id) {
            (Some(name), _) => upstream_name("upstream_model", name)?,
            (None, Some(id)) => {
                self.store()
                    .get_provider_model(id)
                    .await?
                    .filter(|m| m.provider_id == provider_id)
                    .ok_or_else(|| {
                        ApiError::invalid("provider_model_id", "not a model of this provider")
                    })?
                    .provider_model_name
            }
            (None, None) => {
                return Err(ApiError::invalid(
                    "upstream_model",
                    "choose a model of this provider or type an upstream model name",
                ));
            }
        };
        let (e, k) = self
            .probe_key(provider_id, req.endpoint_id, req.key_id)
            .await?;
        let secret = self.open_key(&k)?;
        let mut result = probe.test_model(&e, &secret, &upstream_model).await;
        scrub(&mut result.url, &secret);
        scrub_opt(&mut result.answered_model, &secret);
        scrub_opt(&mut result.excerpt, &secret);
        scrub_opt(&mut result.error, &secret);
        clip(&mut result.excerpt, 300);
        clip(&mut result.error, 600);
        self.audit(
            actor,
            "provider.test_model",
            "provider",
            provider_id,
            json!({
                "endpoint_id": e.id, "api_format": e.api_format, "key": k.api_key_masked,
                "model": upstream_model, "ok": result.ok, "status": result.status,
                "error_class": result.error_class,
            }),
        )
        .await;
        Ok(TestModelReport {
            target: Self::target(&e, &k),
            upstream_model,
            result,
        })
    }

    /// Fetch upstream models: the endpoint's model list as the key sees it, each marked
    /// configured or not, with the global model it is (or would naturally be) served as.
    pub async fn fetch_upstream_models(
        &self,
        actor: &Actor,
        probe: &dyn UpstreamProbe,
        provider_id: ProviderId,
        endpoint_id: Option<EndpointId>,
        key_id: Option<ProviderKeyId>,
    ) -> ApiResult<UpstreamModelList> {
        let (e, k) = self.probe_key(provider_id, endpoint_id, key_id).await?;
        let secret = self.open_key(&k)?;
        let mut listing = probe.list_models(&e, &secret).await;
        scrub(&mut listing.url, &secret);
        scrub_opt(&mut listing.error, &secret);
        clip(&mut listing.error, 600);
        let models = self.upstream_views(provider_id, listing.models).await?;
        self.audit(
            actor,
            "provider.fetch_models",
            "provider",
            provider_id,
            json!({
                "endpoint_id": e.id, "api_format": e.api_format, "key": k.api_key_masked,
                "ok": listing.ok, "status": listing.status, "count": models.len(),
            }),
        )
        .await;
        Ok(UpstreamModelList {
            target: Self::target(&e, &k),
            ok: listing.ok,
            status: listing.status,
            latency_ms: listing.latency_ms,
            url: listing.url,
            pages: listing.pages,
            truncated: listing.truncated,
            error_class: listing.error_class,
            error: listing.error,
            models,
        })
    }

    /// Upstream models compared with the provider's configuration (also used to show a
    /// submitted list again).
    pub async fn upstream_views(
        &self,
        provider_id: ProviderId,
        models: Vec<UpstreamModel>,
    ) -> ApiResult<Vec<UpstreamModelView>> {
        let mine = self
            .store()
            .list_provider_models(Some(provider_id), None)
            .await?;
        let done = configured(&mine);
        let globals = self
            .store()
            .list_global_models(&GlobalModelFilter::default(), Page::all())
            .await?
            .items;
        let by_id: HashMap<GlobalModelId, &str> =
            globals.iter().map(|g| (g.id, g.name.as_str())).collect();
        let by_name: HashMap<&str, GlobalModelId> =
            globals.iter().map(|g| (g.name.as_str(), g.id)).collect();
        Ok(models
            .into_iter()
            .map(|m| {
                let pm = done.get(m.id.as_str());
                let global = pm
                    .map(|pm| pm.global_model_id)
                    .or_else(|| by_name.get(m.id.as_str()).copied());
                UpstreamModelView {
                    configured: pm.is_some(),
                    provider_model_id: pm.map(|pm| pm.id),
                    global_model_id: global,
                    global_model_name: global.and_then(|g| by_id.get(&g)).map(|s| (*s).to_string()),
                    id: m.id,
                    display_name: m.display_name,
                }
            })
            .collect())
    }

    /// Adds picked upstream models as provider models, each served as its chosen global
    /// model. Names the provider already serves are skipped; everything is checked before
    /// anything is written. Returns the models created.
    pub async fn add_upstream_models(
        &self,
        actor: &Actor,
        provider_id: ProviderId,
        picks: Vec<UpstreamModelPick>,
    ) -> ApiResult<Vec<ProviderModel>> {
        self.get_provider(provider_id).await?;
        if picks.is_empty() {
            return Err(ApiError::invalid(
                "models",
                "select at least one model to add",
            ));
        }
        let mine = self
            .store()
            .list_provider_models(Some(provider_id), None)
            .await?;
        let done: BTreeSet<String> = configured(&mine).into_keys().map(str::to_string).collect();
        let mut todo = Vec::new();
        let mut seen = BTreeSet::new();
        for p in picks {
            let name = upstream_name("upstream_model", &p.upstream_model)?;
            if done.contains(&name) || !seen.insert(name.clone()) {
                continue;
            }
            if self
                .store()
                .get_global_model(p.global_model_id)
                .await?
                .is_none()
            {
                return Err(ApiError::invalid(
                    "global_model_id",
                    format!("no such global model for {name}"),
                ));
            }
            todo.push((name, p.global_model_id));
        }
        let mut created = Vec::with_capacity(todo.len());
        for (name, global_model_id) in todo {
            let n = NewProviderModel {
                global_model_id,
                provider_model_name: Some(name),
                provider_model_mappings: Vec::new(),
                tiered_pricing: None,
                price_per_request: None,
                supports_streaming: None,
                supports_vision: None,
                supports_function_calling: None,
                supports_extended_thinking: None,
                supports_image_generation: None,
                is_active: true,
                config: None,
            };
            created.push(self.create_provider_model(actor, provider_id, n).await?);
        }
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_and_clip() {
        let mut s = "bad key sk-ant-api03-SECRET-0123456789 given".to_string();
        scrub(&mut s, "sk-ant-api03-SECRET-0123456789");
        assert!(!s.contains("SECRET"), "{s}");
        assert!(s.contains("sk-ant…6789"), "{s}");
        let mut o = Some("é".repeat(10));
        clip(&mut o, 4);
        assert_eq!(o.as_deref(), Some("éééé…"));
    }
}
