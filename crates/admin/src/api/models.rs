//! `/api/admin/models/global/*`: global models and their default pricing (admin).

use aether_domain::GlobalModelId;
use aether_domain::entities::{GlobalModel, ProviderModel};
use aether_store::GlobalModelFilter;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Body, List, P, Paging, Q};
use crate::auth::AdminUser;
use crate::service::models::{GlobalModelPatch, GlobalModelView, NewGlobalModel};
use crate::{Admin, ApiResult};

pub(super) fn routes() -> OpenApiRouter<Admin> {
    OpenApiRouter::new()
        .routes(routes!(list_models, create_model))
        .routes(routes!(get_model, update_model, delete_model))
        .routes(routes!(model_providers))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ModelQuery {
    pub search: Option<String>,
    pub is_active: Option<bool>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    pub skip: Option<u32>,
}

#[utoipa::path(get, path = "/api/admin/models/global", tag = "models", security(("bearer" = [])), params(ModelQuery),
    responses((status = 200, body = List<GlobalModelView>)))]
async fn list_models(
    State(a): State<Admin>,
    _: AdminUser,
    Q(q): Q<ModelQuery>,
) -> ApiResult<Json<List<GlobalModelView>>> {
    let f = GlobalModelFilter {
        search: q.search,
        is_active: q.is_active,
    };
    let page = Paging {
        limit: q.limit,
        offset: q.offset,
        skip: q.skip,
    }
    .page();
    Ok(Json(a.list_global_models(&f, page).await?.into()))
}

/// Create a global model. Tiers must ascend and end with an unbounded tier.
#[utoipa::path(post, path = "/api/admin/models/global", tag = "models", security(("bearer" = [])), request_body = NewGlobalModel,
    responses((status = 201, body = GlobalModel), (status = 400), (status = 409)))]
async fn create_model(
    State(a): State<Admin>,
    who: AdminUser,
    Body(n): Body<NewGlobalModel>,
) -> ApiResult<(StatusCode, Json<GlobalModel>)> {
    Ok((
        StatusCode::CREATED,
        Json(a.create_global_model(&who.actor(), n).await?),
    ))
}

#[utoipa::path(get, path = "/api/admin/models/global/{model_id}", tag = "models", security(("bearer" = [])),
    params(("model_id" = String, Path)), responses((status = 200, body = GlobalModel), (status = 404)))]
async fn get_model(
    State(a): State<Admin>,
    _: AdminUser,
    P(id): P<GlobalModelId>,
) -> ApiResult<Json<GlobalModel>> {
    Ok(Json(a.get_global_model(id).await?))
}

/// Change a global model; price changes apply to the next request.
#[utoipa::path(patch, path = "/api/admin/models/global/{model_id}", tag = "models", security(("bearer" = [])),
    params(("model_id" = String, Path)), request_body = GlobalModelPatch, responses((status = 200, body = GlobalModel)))]
async fn update_model(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<GlobalModelId>,
    Body(p): Body<GlobalModelPatch>,
) -> ApiResult<Json<GlobalModel>> {
    Ok(Json(a.update_global_model(&who.actor(), id, p).await?))
}

/// Delete a global model and every provider model implementing it.
#[utoipa::path(delete, path = "/api/admin/models/global/{model_id}", tag = "models", security(("bearer" = [])),
    params(("model_id" = String, Path)), responses((status = 204)))]
async fn delete_model(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<GlobalModelId>,
) -> ApiResult<StatusCode> {
    a.delete_global_model(&who.actor(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The provider models serving a global model.
#[utoipa::path(get, path = "/api/admin/models/global/{model_id}/providers", tag = "models", security(("bearer" = [])),
    params(("model_id" = String, Path)), responses((status = 200, body = Vec<ProviderModel>)))]
async fn model_providers(
    State(a): State<Admin>,
    _: AdminUser,
    P(id): P<GlobalModelId>,
) -> ApiResult<Json<Vec<ProviderModel>>> {
    Ok(Json(a.global_model_providers(id).await?))
}
