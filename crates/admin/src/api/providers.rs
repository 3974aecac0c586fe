//! `/api/admin/providers/*` and `/api/admin/endpoints/*`: providers, endpoints, upstream keys
//! and provider models (admin). Upstream keys are shown masked; `reveal` is explicit and audited.

use aether_domain::entities::{Endpoint, Provider, ProviderKey, ProviderModel};
use aether_domain::{EndpointId, ProviderId, ProviderKeyId, ProviderModelId};
use aether_store::ProviderFilter;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Body, List, P, Paging, Q};
use crate::auth::AdminUser;
use crate::service::models::{NewProviderModel, ProviderModelPatch};
use crate::service::providers::{
    EndpointPatch, NewEndpoint, NewProvider, NewProviderKey, ProviderKeyPatch, ProviderPatch,
    ProviderSummary,
};
use crate::{Admin, ApiResult};

pub(super) fn routes() -> OpenApiRouter<Admin> {
    OpenApiRouter::new()
        .routes(routes!(list_providers, create_provider))
        .routes(routes!(get_provider, update_provider, delete_provider))
        .routes(routes!(reset_provider_quota))
        .routes(routes!(list_endpoints, create_endpoint))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(get_key, update_key, delete_key))
        .routes(routes!(reveal_key))
        .routes(routes!(list_models, create_model))
        .routes(routes!(get_model, update_model, delete_model))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProviderQuery {
    pub search: Option<String>,
    pub is_active: Option<bool>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    pub skip: Option<u32>,
}

/// Providers by priority, with endpoint/key/model counts.
#[utoipa::path(get, path = "/api/admin/providers", tag = "providers", security(("bearer" = [])), params(ProviderQuery),
    responses((status = 200, body = List<ProviderSummary>)))]
async fn list_providers(
    State(a): State<Admin>,
    _: AdminUser,
    Q(q): Q<ProviderQuery>,
) -> ApiResult<Json<List<ProviderSummary>>> {
    let f = ProviderFilter {
        search: q.search,
        is_active: q.is_active,
    };
    let page = Paging {
        limit: q.limit,
        offset: q.offset,
        skip: q.skip,
    }
    .page();
    Ok(Json(a.list_providers(&f, page).await?.into()))
}

#[utoipa::path(post, path = "/api/admin/providers", tag = "providers", security(("bearer" = [])), request_body = NewProvider,
    responses((status = 201, body = Provider), (status = 409)))]
async fn create_provider(
    State(a): State<Admin>,
    who: AdminUser,
    Body(n): Body<NewProvider>,
) -> ApiResult<(StatusCode, Json<Provider>)> {
    Ok((
        StatusCode::CREATED,
        Json(a.create_provider(&who.actor(), n).await?),
    ))
}

#[utoipa::path(get, path = "/api/admin/providers/{provider_id}", tag = "providers", security(("bearer" = [])),
    params(("provider_id" = String, Path)), responses((status = 200, body = Provider), (status = 404)))]
async fn get_provider(
    State(a): State<Admin>,
    _: AdminUser,
    P(id): P<ProviderId>,
) -> ApiResult<Json<Provider>> {
    Ok(Json(a.get_provider(id).await?))
}

#[utoipa::path(put, path = "/api/admin/providers/{provider_id}", tag = "providers", security(("bearer" = [])),
    params(("provider_id" = String, Path)), request_body = ProviderPatch, responses((status = 200, body = Provider)))]
async fn update_provider(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<ProviderId>,
    Body(p): Body<ProviderPatch>,
) -> ApiResult<Json<Provider>> {
    Ok(Json(a.update_provider(&who.actor(), id, p).await?))
}

/// Delete a provider with its endpoints, keys and models.
#[utoipa::path(delete, path = "/api/admin/providers/{provider_id}", tag = "providers", security(("bearer" = [])),
    params(("provider_id" = String, Path)), responses((status = 204)))]
async fn delete_provider(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<ProviderId>,
) -> ApiResult<StatusCode> {
    a.delete_provider(&who.actor(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start a new quota period for the provider now.
#[utoipa::path(patch, path = "/api/admin/providers/{provider_id}/quota", tag = "providers", security(("bearer" = [])),
    params(("provider_id" = String, Path)), responses((status = 200, body = Provider)))]
async fn reset_provider_quota(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<ProviderId>,
) -> ApiResult<Json<Provider>> {
    Ok(Json(a.reset_provider_quota(&who.actor(), id).await?))
}

#[utoipa::path(get, path = "/api/admin/endpoints/providers/{provider_id}/endpoints", tag = "providers", security(("bearer" = [])),
    params(("provider_id" = String, Path)), responses((status = 200, body = Vec<Endpoint>)))]
async fn list_endpoints(
    State(a): State<Admin>,
    _: AdminUser,
    P(id): P<ProviderId>,
) -> ApiResult<Json<Vec<Endpoint>>> {
    Ok(Json(a.list_endpoints(id).await?))
}

/// Add an endpoint (one per API format) to a provider.
#[utoipa::path(post, path = "/api/admin/endpoints/providers/{provider_id}/endpoints", tag = "providers", security(("bearer" = [])),
    params(("provider_id" = String, Path)), request_body = NewEndpoint, responses((status = 201, body = Endpoint), (status = 409)))]
async fn create_endpoint(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<ProviderId>,
    Body(n): Body<NewEndpoint>,
) -> ApiResult<(StatusCode, Json<Endpoint>)> {
    Ok((
        StatusCode::CREATED,
        Json(a.create_endpoint(&who.actor(), id, n).await?),
    ))
}

#[utoipa::path(get, path = "/api/admin/endpoints/{endpoint_id}", tag = "providers", security(("bearer" = [])),
    params(("endpoint_id" = String, Path)), responses((status = 200, body = Endpoint), (status = 404)))]
async fn get_endpoint(
    State(a): State<Admin>,
    _: AdminUser,
    P(id): P<EndpointId>,
) -> ApiResult<Json<Endpoint>> {
    Ok(Json(a.get_endpoint(id).await?))
}

#[utoipa::path(put, path = "/api/admin/endpoints/{endpoint_id}", tag = "providers", security(("bearer" = [])),
    params(("endpoint_id" = String, Path)), request_body = EndpointPatch, responses((status = 200, body = Endpoint)))]
async fn update_endpoint(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<EndpointId>,
    Body(p): Body<EndpointPatch>,
) -> ApiResult<Json<Endpoint>> {
    Ok(Json(a.update_endpoint(&who.actor(), id, p).await?))
}

#[utoipa::path(delete, path = "/api/admin/endpoints/{endpoint_id}", tag = "providers", security(("bearer" = [])),
    params(("endpoint_id" = String, Path)), responses((status = 204)))]
async fn delete_endpoint(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<EndpointId>,
) -> ApiResult<StatusCode> {
    a.delete_endpoint(&who.actor(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The endpoint's upstream keys (masked).
#[utoipa::path(get, path = "/api/admin/endpoints/{endpoint_id}/keys", tag = "providers", security(("bearer" = [])),
    params(("endpoint_id" = String, Path)), responses((status = 200, body = Vec<ProviderKey>)))]
async fn list_keys(
    State(a): State<Admin>,
    _: AdminUser,
    P(id): P<EndpointId>,
) -> ApiResult<Json<Vec<ProviderKey>>> {
    Ok(Json(a.list_provider_keys(id).await?))
}

/// Add an upstream key; it is sealed (AES-256-GCM) before storage.
#[utoipa::path(post, path = "/api/admin/endpoints/{endpoint_id}/keys", tag = "providers", security(("bearer" = [])),
    params(("endpoint_id" = String, Path)), request_body = NewProviderKey, responses((status = 201, body = ProviderKey), (status = 409, description = "the key is already on this endpoint")))]
async fn create_key(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<EndpointId>,
    Body(n): Body<NewProviderKey>,
) -> ApiResult<(StatusCode, Json<ProviderKey>)> {
    Ok((
        StatusCode::CREATED,
        Json(a.create_provider_key(&who.actor(), id, n).await?),
    ))
}

#[utoipa::path(get, path = "/api/admin/endpoints/keys/{key_id}", tag = "providers", security(("bearer" = [])),
    params(("key_id" = String, Path)), responses((status = 200, body = ProviderKey), (status = 404)))]
async fn get_key(
    State(a): State<Admin>,
    _: AdminUser,
    P(id): P<ProviderKeyId>,
) -> ApiResult<Json<ProviderKey>> {
    Ok(Json(a.get_provider_key(id).await?))
}

/// Change an upstream key. Sending `max_concurrent: null` makes its concurrency adaptive.
#[utoipa::path(put, path = "/api/admin/endpoints/keys/{key_id}", tag = "providers", security(("bearer" = [])),
    params(("key_id" = String, Path)), request_body = ProviderKeyPatch, responses((status = 200, body = ProviderKey)))]
async fn update_key(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<ProviderKeyId>,
    Body(p): Body<ProviderKeyPatch>,
) -> ApiResult<Json<ProviderKey>> {
    Ok(Json(a.update_provider_key(&who.actor(), id, p).await?))
}

#[utoipa::path(delete, path = "/api/admin/endpoints/keys/{key_id}", tag = "providers", security(("bearer" = [])),
    params(("key_id" = String, Path)), responses((status = 204)))]
async fn delete_key(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<ProviderKeyId>,
) -> ApiResult<StatusCode> {
    a.delete_provider_key(&who.actor(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevealedKey {
    pub api_key: String,
}

/// The upstream key in clear. Audited.
#[utoipa::path(get, path = "/api/admin/endpoints/keys/{key_id}/reveal", tag = "providers", security(("bearer" = [])),
    params(("key_id" = String, Path)), responses((status = 200, body = RevealedKey)))]
async fn reveal_key(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<ProviderKeyId>,
) -> ApiResult<Json<RevealedKey>> {
    Ok(Json(RevealedKey {
        api_key: a.reveal_provider_key(&who.actor(), id).await?,
    }))
}

#[utoipa::path(get, path = "/api/admin/providers/{provider_id}/models", tag = "providers", security(("bearer" = [])),
    params(("provider_id" = String, Path)), responses((status = 200, body = Vec<ProviderModel>)))]
async fn list_models(
    State(a): State<Admin>,
    _: AdminUser,
    P(id): P<ProviderId>,
) -> ApiResult<Json<Vec<ProviderModel>>> {
    Ok(Json(a.list_provider_models(id).await?))
}

/// Let the provider serve a global model, under an upstream name, with optional price overrides.
#[utoipa::path(post, path = "/api/admin/providers/{provider_id}/models", tag = "providers", security(("bearer" = [])),
    params(("provider_id" = String, Path)), request_body = NewProviderModel, responses((status = 201, body = ProviderModel), (status = 409)))]
async fn create_model(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<ProviderId>,
    Body(n): Body<NewProviderModel>,
) -> ApiResult<(StatusCode, Json<ProviderModel>)> {
    Ok((
        StatusCode::CREATED,
        Json(a.create_provider_model(&who.actor(), id, n).await?),
    ))
}

#[utoipa::path(get, path = "/api/admin/providers/{provider_id}/models/{model_id}", tag = "providers", security(("bearer" = [])),
    params(("provider_id" = String, Path), ("model_id" = String, Path)), responses((status = 200, body = ProviderModel), (status = 404)))]
async fn get_model(
    State(a): State<Admin>,
    _: AdminUser,
    P((p, m)): P<(ProviderId, ProviderModelId)>,
) -> ApiResult<Json<ProviderModel>> {
    Ok(Json(a.get_provider_model(p, m).await?))
}

#[utoipa::path(patch, path = "/api/admin/providers/{provider_id}/models/{model_id}", tag = "providers", security(("bearer" = [])),
    params(("provider_id" = String, Path), ("model_id" = String, Path)), request_body = ProviderModelPatch, responses((status = 200, body = ProviderModel)))]
async fn update_model(
    State(a): State<Admin>,
    who: AdminUser,
    P((p, m)): P<(ProviderId, ProviderModelId)>,
    Body(patch): Body<ProviderModelPatch>,
) -> ApiResult<Json<ProviderModel>> {
    Ok(Json(
        a.update_provider_model(&who.actor(), p, m, patch).await?,
    ))
}

#[utoipa::path(delete, path = "/api/admin/providers/{provider_id}/models/{model_id}", tag = "providers", security(("bearer" = [])),
    params(("provider_id" = String, Path), ("model_id" = String, Path)), responses((status = 204)))]
async fn delete_model(
    State(a): State<Admin>,
    who: AdminUser,
    P((p, m)): P<(ProviderId, ProviderModelId)>,
) -> ApiResult<StatusCode> {
    a.delete_provider_model(&who.actor(), p, m).await?;
    Ok(StatusCode::NO_CONTENT)
}
