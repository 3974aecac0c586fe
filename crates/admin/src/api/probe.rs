//! Provider tools (admin): `POST /api/admin/providers/{id}/test-model` and
//! `GET /api/admin/providers/{id}/upstream-models`. Both call the upstream through the
//! request path's [`Probe`]; neither writes a usage record. An upstream failure is a result
//! (`ok: false` with its status and error class), not an error of this API.

use aether_domain::{EndpointId, ProviderId, ProviderKeyId};
use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Body, P, Q};
use crate::auth::AdminUser;
use crate::service::probe::{Probe, TestModelReport, TestModelRequest, UpstreamModelList};
use crate::{Admin, ApiError, ApiResult};

pub(super) fn routes() -> OpenApiRouter<Admin> {
    OpenApiRouter::new()
        .routes(routes!(test_model))
        .routes(routes!(upstream_models))
}

fn probe(p: Option<Extension<Probe>>) -> ApiResult<Probe> {
    p.map(|Extension(p)| p)
        .ok_or_else(|| ApiError::Internal("no upstream probe is installed in this process".into()))
}

/// Test a model: one small non-streaming request ("Say hi", at most 16 output tokens)
/// through an upstream key of the provider (the first active one unless `key_id` is given).
/// Reports HTTP status, latency, the answering model, an excerpt and token usage, or the
/// error class and message. No usage record is written and nobody is charged; audited.
#[utoipa::path(post, path = "/api/admin/providers/{provider_id}/test-model", tag = "providers", security(("bearer" = [])),
    params(("provider_id" = String, Path)), request_body = TestModelRequest,
    responses((status = 200, body = TestModelReport), (status = 400), (status = 404)))]
async fn test_model(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<ProviderId>,
    p: Option<Extension<Probe>>,
    Body(req): Body<TestModelRequest>,
) -> ApiResult<Json<TestModelReport>> {
    let probe = probe(p)?;
    Ok(Json(
        a.test_model(&who.actor(), probe.0.as_ref(), id, req)
            .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UpstreamModelsQuery {
    /// The upstream key to ask with; default: the first active key of the provider.
    pub key_id: Option<ProviderKeyId>,
    /// Only with the default key: take it from this endpoint.
    pub endpoint_id: Option<EndpointId>,
}

/// Fetch the upstream model list of an endpoint of the provider (Anthropic and OpenAI
/// `/v1/models`, Gemini `/v1beta/models`; up to 5 pages), each model marked as configured or
/// not, with the global model it is served as (or the global model of the same name). Add
/// models with `POST /api/admin/providers/{provider_id}/models`. Audited.
#[utoipa::path(get, path = "/api/admin/providers/{provider_id}/upstream-models", tag = "providers", security(("bearer" = [])),
    params(("provider_id" = String, Path), UpstreamModelsQuery),
    responses((status = 200, body = UpstreamModelList), (status = 400), (status = 404)))]
async fn upstream_models(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<ProviderId>,
    Q(q): Q<UpstreamModelsQuery>,
    p: Option<Extension<Probe>>,
) -> ApiResult<Json<UpstreamModelList>> {
    let probe = probe(p)?;
    Ok(Json(
        a.fetch_upstream_models(&who.actor(), probe.0.as_ref(), id, q.endpoint_id, q.key_id)
            .await?,
    ))
}
