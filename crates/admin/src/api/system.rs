//! `/api/admin/system/*`, `/api/admin/security/*`, `/api/admin/monitoring/audit-logs` and the
//! admin side of `/api/announcements`.

use aether_domain::entities::{Announcement, AuditEntry, IpRule};
use aether_domain::{AnnouncementId, ApiFormat, IpRuleId, Timestamp, UserId};
use aether_store::AuditFilter;
use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::{Body, List, P, Paging, Q};
use crate::auth::AdminUser;
use crate::service::config_io::{ExportV1, ImportStats, MergeMode};
use crate::service::system::{
    AnnouncementPatch, NewAnnouncement, NewIpRule, SettingView, SystemStats,
};
use crate::{Admin, ApiResult};

/// Configuration imports may be large (the original allows 10 MB).
const IMPORT_LIMIT: usize = 16 * 1024 * 1024;

pub(super) fn routes() -> OpenApiRouter<Admin> {
    OpenApiRouter::new()
        .routes(routes!(list_settings))
        .routes(routes!(get_setting, put_setting, reset_setting))
        .routes(routes!(export_config))
        .routes(routes!(import_config).layer(DefaultBodyLimit::max(IMPORT_LIMIT)))
        .routes(routes!(stats))
        .routes(routes!(api_formats))
        .routes(routes!(list_ip_rules, create_ip_rule))
        .routes(routes!(delete_ip_rule))
        .routes(routes!(audit_logs))
        .routes(routes!(create_announcement))
        .routes(routes!(update_announcement, delete_announcement))
}

/// Every setting with its type, default, help text and current value.
#[utoipa::path(get, path = "/api/admin/system/configs", tag = "system", security(("bearer" = [])), responses((status = 200, body = Vec<SettingView>)))]
async fn list_settings(State(a): State<Admin>, _: AdminUser) -> Json<Vec<SettingView>> {
    Json(a.list_settings())
}

#[utoipa::path(get, path = "/api/admin/system/configs/{key}", tag = "system", security(("bearer" = [])),
    params(("key" = String, Path)), responses((status = 200, body = SettingView), (status = 404)))]
async fn get_setting(
    State(a): State<Admin>,
    _: AdminUser,
    P(key): P<String>,
) -> ApiResult<Json<SettingView>> {
    Ok(Json(a.get_setting(&key)?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SettingValue {
    #[schema(value_type = Object)]
    pub value: Value,
}

/// Set a setting (validated against its declaration; effective at once).
#[utoipa::path(put, path = "/api/admin/system/configs/{key}", tag = "system", security(("bearer" = [])),
    params(("key" = String, Path)), request_body = SettingValue, responses((status = 200, body = SettingView), (status = 400), (status = 404)))]
async fn put_setting(
    State(a): State<Admin>,
    who: AdminUser,
    P(key): P<String>,
    Body(v): Body<SettingValue>,
) -> ApiResult<Json<SettingView>> {
    Ok(Json(a.put_setting(&who.actor(), &key, &v.value).await?))
}

/// Return a setting to its default.
#[utoipa::path(delete, path = "/api/admin/system/configs/{key}", tag = "system", security(("bearer" = [])),
    params(("key" = String, Path)), responses((status = 200, body = SettingView)))]
async fn reset_setting(
    State(a): State<Admin>,
    who: AdminUser,
    P(key): P<String>,
) -> ApiResult<Json<SettingView>> {
    Ok(Json(a.reset_setting(&who.actor(), &key).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Put upstream keys in clear into the file (audited). Default: masked only.
    #[serde(default)]
    pub include_secrets: bool,
}

/// Export providers, endpoints, keys and models in the original Aether's format v1.0.
#[utoipa::path(get, path = "/api/admin/system/config/export", tag = "system", security(("bearer" = [])), params(ExportQuery),
    responses((status = 200, body = ExportV1)))]
async fn export_config(
    State(a): State<Admin>,
    who: AdminUser,
    Q(q): Q<ExportQuery>,
) -> ApiResult<Json<ExportV1>> {
    Ok(Json(
        a.export_config(&who.actor(), q.include_secrets).await?,
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResult {
    pub message: &'static str,
    pub stats: ImportStats,
}

/// Import a v1.0 document (`merge_mode`: `skip` | `overwrite` | `error`). All or nothing.
#[utoipa::path(post, path = "/api/admin/system/config/import", tag = "system", security(("bearer" = [])), request_body = ExportV1,
    responses((status = 200, body = ImportResult), (status = 400), (status = 409)))]
async fn import_config(
    State(a): State<Admin>,
    who: AdminUser,
    Body(doc): Body<ExportV1>,
) -> ApiResult<Json<ImportResult>> {
    let mode = MergeMode::parse(doc.merge_mode.as_deref())?;
    let stats = a.import_config(&who.actor(), doc, mode).await?;
    Ok(Json(ImportResult {
        message: "configuration imported",
        stats,
    }))
}

#[utoipa::path(get, path = "/api/admin/system/stats", tag = "system", security(("bearer" = [])), responses((status = 200, body = SystemStats)))]
async fn stats(State(a): State<Admin>, _: AdminUser) -> ApiResult<Json<SystemStats>> {
    Ok(Json(a.system_stats().await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FormatInfo {
    pub value: ApiFormat,
    pub label: &'static str,
    pub default_path: &'static str,
}

/// The six API formats an endpoint can have.
#[utoipa::path(get, path = "/api/admin/system/api-formats", tag = "system", security(("bearer" = [])), responses((status = 200, body = Vec<FormatInfo>)))]
async fn api_formats(_: AdminUser) -> Json<Vec<FormatInfo>> {
    Json(
        ApiFormat::ALL
            .iter()
            .map(|&f| FormatInfo {
                value: f,
                label: match f {
                    ApiFormat::Claude => "Claude Messages API",
                    ApiFormat::ClaudeCli => "Claude Messages API (Claude Code)",
                    ApiFormat::Openai => "OpenAI Chat Completions",
                    ApiFormat::OpenaiCli => "OpenAI Responses (Codex CLI)",
                    ApiFormat::Gemini => "Gemini generateContent",
                    ApiFormat::GeminiCli => "Gemini generateContent (Gemini CLI)",
                },
                default_path: match f {
                    ApiFormat::Claude | ApiFormat::ClaudeCli => "/v1/messages",
                    ApiFormat::Openai => "/v1/chat/completions",
                    ApiFormat::OpenaiCli => "/v1/responses",
                    ApiFormat::Gemini | ApiFormat::GeminiCli => "/v1beta/models/{model}:{action}",
                },
            })
            .collect(),
    )
}

/// IP allow and block rules (CIDR). Block wins; any allow rule turns on allow-listing.
#[utoipa::path(get, path = "/api/admin/security/ip-rules", tag = "system", security(("bearer" = [])), responses((status = 200, body = Vec<IpRule>)))]
async fn list_ip_rules(State(a): State<Admin>, _: AdminUser) -> ApiResult<Json<Vec<IpRule>>> {
    Ok(Json(a.list_ip_rules().await?))
}

#[utoipa::path(post, path = "/api/admin/security/ip-rules", tag = "system", security(("bearer" = [])), request_body = NewIpRule,
    responses((status = 201, body = IpRule), (status = 400), (status = 409)))]
async fn create_ip_rule(
    State(a): State<Admin>,
    who: AdminUser,
    Body(n): Body<NewIpRule>,
) -> ApiResult<(StatusCode, Json<IpRule>)> {
    Ok((
        StatusCode::CREATED,
        Json(a.create_ip_rule(&who.actor(), n).await?),
    ))
}

#[utoipa::path(delete, path = "/api/admin/security/ip-rules/{rule_id}", tag = "system", security(("bearer" = [])),
    params(("rule_id" = String, Path)), responses((status = 204), (status = 404)))]
async fn delete_ip_rule(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<IpRuleId>,
) -> ApiResult<StatusCode> {
    a.delete_ip_rule(&who.actor(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Action prefix, e.g. `user.` or `auth.login_failed`.
    pub action: Option<String>,
    pub actor_id: Option<UserId>,
    pub search: Option<String>,
    /// Only the last N days.
    pub days: Option<u32>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

/// Admin and security events, newest first.
#[utoipa::path(get, path = "/api/admin/monitoring/audit-logs", tag = "system", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = List<AuditEntry>)))]
async fn audit_logs(
    State(a): State<Admin>,
    _: AdminUser,
    Q(q): Q<AuditQuery>,
) -> ApiResult<Json<List<AuditEntry>>> {
    let f = AuditFilter {
        action_prefix: q.action,
        actor_id: q.actor_id,
        search: q.search,
        since: q
            .days
            .map(|d| Timestamp::now().plus_secs(-i64::from(d) * 86_400)),
    };
    let page = Paging {
        limit: q.limit,
        offset: q.offset,
        skip: None,
    }
    .page();
    Ok(Json(a.list_audit(&f, page).await?.into()))
}

#[utoipa::path(post, path = "/api/announcements", tag = "announcements", security(("bearer" = [])), request_body = NewAnnouncement,
    responses((status = 201, body = Announcement)))]
async fn create_announcement(
    State(a): State<Admin>,
    who: AdminUser,
    Body(n): Body<NewAnnouncement>,
) -> ApiResult<(StatusCode, Json<Announcement>)> {
    Ok((
        StatusCode::CREATED,
        Json(a.create_announcement(&who.actor(), n).await?),
    ))
}

#[utoipa::path(put, path = "/api/announcements/{id}", tag = "announcements", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = AnnouncementPatch, responses((status = 200, body = Announcement)))]
async fn update_announcement(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<AnnouncementId>,
    Body(p): Body<AnnouncementPatch>,
) -> ApiResult<Json<Announcement>> {
    Ok(Json(a.update_announcement(&who.actor(), id, p).await?))
}

#[utoipa::path(delete, path = "/api/announcements/{id}", tag = "announcements", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 204)))]
async fn delete_announcement(
    State(a): State<Admin>,
    who: AdminUser,
    P(id): P<AnnouncementId>,
) -> ApiResult<StatusCode> {
    a.delete_announcement(&who.actor(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}
