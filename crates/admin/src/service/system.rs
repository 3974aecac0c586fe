//! System settings, the audit log, announcements, IP rules and overview counts.

use aether_domain::entities::{Announcement, AnnouncementKind, AuditEntry, IpAction, IpRule, Role};
use aether_domain::settings::{self, SettingDef};
use aether_domain::{AnnouncementId, IpRuleId, Timestamp};
use aether_store::{AuditFilter, Page, Paged, ProviderFilter};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{double_option, set, validate};
use crate::{Actor, Admin, ApiError, ApiResult};

/// A setting with its declaration and current value.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SettingView {
    pub key: &'static str,
    pub group: &'static str,
    #[schema(value_type = Object)]
    pub kind: settings::SettingKind,
    pub help: &'static str,
    #[schema(value_type = Object)]
    pub value: Value,
    #[schema(value_type = Object)]
    pub default: Value,
    pub is_default: bool,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewAnnouncement {
    pub title: String,
    pub content: String,
    #[serde(default = "info", rename = "type")]
    pub kind: AnnouncementKind,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub is_pinned: bool,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default)]
    pub start_time: Option<Timestamp>,
    #[serde(default)]
    pub end_time: Option<Timestamp>,
}

fn info() -> AnnouncementKind {
    AnnouncementKind::Info
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct AnnouncementPatch {
    pub title: Option<String>,
    pub content: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<AnnouncementKind>,
    pub priority: Option<i32>,
    pub is_pinned: Option<bool>,
    pub is_active: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    pub start_time: Option<Option<Timestamp>>,
    #[serde(default, deserialize_with = "double_option")]
    pub end_time: Option<Option<Timestamp>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewIpRule {
    /// An address or a CIDR block (`203.0.113.7`, `10.0.0.0/8`, `2001:db8::/32`).
    pub cidr: String,
    pub action: IpAction,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
}

/// Counts for the overview.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SystemStats {
    pub users: i64,
    pub admins: i64,
    pub providers: i64,
    pub active_providers: i64,
    pub global_models: i64,
    pub api_keys: i64,
}

fn check_window(start: Option<Timestamp>, end: Option<Timestamp>) -> ApiResult<()> {
    match (start, end) {
        (Some(s), Some(e)) if e <= s => {
            Err(ApiError::invalid("end_time", "must be after start_time"))
        }
        _ => Ok(()),
    }
}

impl Admin {
    // ---- settings ----

    pub fn list_settings(&self) -> Vec<SettingView> {
        let current = self.settings();
        settings::SETTINGS
            .iter()
            .map(|d: &SettingDef| {
                let value = current
                    .get(d.key)
                    .cloned()
                    .unwrap_or_else(|| d.default_value());
                SettingView {
                    key: d.key,
                    group: d.group,
                    kind: d.kind,
                    help: d.help,
                    is_default: value == d.default_value(),
                    default: d.default_value(),
                    value,
                }
            })
            .collect()
    }

    pub fn get_setting(&self, key: &str) -> ApiResult<SettingView> {
        self.list_settings()
            .into_iter()
            .find(|s| s.key == key)
            .ok_or(ApiError::NotFound("setting"))
    }

    /// Validates and stores a setting; it takes effect at once.
    pub async fn put_setting(
        &self,
        actor: &Actor,
        key: &str,
        value: &Value,
    ) -> ApiResult<SettingView> {
        let def = settings::def(key).ok_or(ApiError::NotFound("setting"))?;
        let v = def
            .validate(value)
            .map_err(|m| ApiError::invalid("value", m))?;
        self.store().put_setting(key, &v, actor.user_id).await?;
        self.reload_settings().await?;
        self.audit(
            actor,
            "setting.update",
            "setting",
            key,
            json!({ "value": v }),
        )
        .await;
        self.changed().await;
        self.get_setting(key)
    }

    /// Returns a setting to its default.
    pub async fn reset_setting(&self, actor: &Actor, key: &str) -> ApiResult<SettingView> {
        settings::def(key).ok_or(ApiError::NotFound("setting"))?;
        self.store().delete_setting(key).await?;
        self.reload_settings().await?;
        self.audit(actor, "setting.reset", "setting", key, json!({}))
            .await;
        self.changed().await;
        self.get_setting(key)
    }

    // ---- audit log ----

    pub async fn list_audit(&self, f: &AuditFilter, page: Page) -> ApiResult<Paged<AuditEntry>> {
        Ok(self.store().list_audit(f, page).await?)
    }

    // ---- announcements ----

    pub async fn create_announcement(
        &self,
        actor: &Actor,
        n: NewAnnouncement,
    ) -> ApiResult<Announcement> {
        check_window(n.start_time, n.end_time)?;
        let now = Timestamp::now();
        let a = Announcement {
            id: AnnouncementId::new(),
            title: validate::text("title", &n.title, 200)?,
            content: validate::text("content", &n.content, 20_000)?,
            kind: n.kind,
            priority: n.priority,
            is_active: n.is_active,
            is_pinned: n.is_pinned,
            start_time: n.start_time,
            end_time: n.end_time,
            author_id: actor.user_id,
            created_at: now,
            updated_at: now,
        };
        self.store().insert_announcement(&a).await?;
        self.audit(
            actor,
            "announcement.create",
            "announcement",
            a.id,
            json!({ "title": a.title }),
        )
        .await;
        Ok(a)
    }

    /// Announcements for a reader: users see the visible ones, admins may ask for all.
    pub async fn list_announcements(
        &self,
        actor: &Actor,
        all: bool,
        page: Page,
    ) -> ApiResult<Paged<Announcement>> {
        let visible_at = if all && actor.role == Role::Admin {
            None
        } else {
            Some(Timestamp::now())
        };
        Ok(self.store().list_announcements(visible_at, page).await?)
    }

    pub async fn get_announcement(
        &self,
        actor: &Actor,
        id: AnnouncementId,
    ) -> ApiResult<Announcement> {
        self.store()
            .get_announcement(id)
            .await?
            .filter(|a| actor.is_admin() || a.is_visible_at(Timestamp::now()))
            .ok_or(ApiError::NotFound("announcement"))
    }

    pub async fn update_announcement(
        &self,
        actor: &Actor,
        id: AnnouncementId,
        p: AnnouncementPatch,
    ) -> ApiResult<Announcement> {
        let mut a = self.get_announcement(actor, id).await?;
        if let Some(t) = &p.title {
            a.title = validate::text("title", t, 200)?;
        }
        if let Some(c) = &p.content {
            a.content = validate::text("content", c, 20_000)?;
        }
        set(&mut a.kind, p.kind);
        set(&mut a.priority, p.priority);
        set(&mut a.is_pinned, p.is_pinned);
        set(&mut a.is_active, p.is_active);
        set(&mut a.start_time, p.start_time);
        set(&mut a.end_time, p.end_time);
        check_window(a.start_time, a.end_time)?;
        a.updated_at = Timestamp::now();
        self.store().update_announcement(&a).await?;
        self.audit(
            actor,
            "announcement.update",
            "announcement",
            id,
            json!({ "title": a.title }),
        )
        .await;
        Ok(a)
    }

    pub async fn delete_announcement(&self, actor: &Actor, id: AnnouncementId) -> ApiResult<()> {
        let a = self.get_announcement(actor, id).await?;
        self.store().delete_announcement(id).await?;
        self.audit(
            actor,
            "announcement.delete",
            "announcement",
            id,
            json!({ "title": a.title }),
        )
        .await;
        Ok(())
    }

    // ---- IP rules ----

    pub async fn create_ip_rule(&self, actor: &Actor, n: NewIpRule) -> ApiResult<IpRule> {
        let text = n.cidr.trim();
        let cidr: IpNet = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                ApiError::invalid(
                    "cidr",
                    format!("`{text}` is neither an IP address nor a CIDR block"),
                )
            })?
            .trunc();
        let r = IpRule {
            id: IpRuleId::new(),
            cidr,
            action: n.action,
            note: n
                .note
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().chars().take(200).collect()),
            expires_at: n.expires_at,
            created_by: actor.user_id,
            created_at: Timestamp::now(),
        };
        self.store().insert_ip_rule(&r).await?;
        self.audit(
            actor,
            "ip_rule.create",
            "ip_rule",
            r.id,
            json!({ "cidr": r.cidr.to_string(), "action": r.action }),
        )
        .await;
        self.changed().await;
        Ok(r)
    }

    pub async fn list_ip_rules(&self) -> ApiResult<Vec<IpRule>> {
        Ok(self.store().list_ip_rules().await?)
    }

    pub async fn delete_ip_rule(&self, actor: &Actor, id: IpRuleId) -> ApiResult<()> {
        if !self.store().delete_ip_rule(id).await? {
            return Err(ApiError::NotFound("IP rule"));
        }
        self.audit(actor, "ip_rule.delete", "ip_rule", id, json!({}))
            .await;
        self.changed().await;
        Ok(())
    }

    // ---- overview ----

    pub async fn system_stats(&self) -> ApiResult<SystemStats> {
        let s = self.store();
        let providers = s
            .list_providers(&ProviderFilter::default(), Page::new(1, 0))
            .await?;
        let active = s
            .list_providers(
                &ProviderFilter {
                    is_active: Some(true),
                    ..Default::default()
                },
                Page::new(1, 0),
            )
            .await?;
        let models = s
            .list_global_models(&Default::default(), Page::new(1, 0))
            .await?;
        let keys = s
            .list_api_keys(&Default::default(), Page::new(1, 0))
            .await?;
        Ok(SystemStats {
            users: s.count_users(None).await?,
            admins: s.count_users(Some(Role::Admin)).await?,
            providers: providers.total,
            active_providers: active.total,
            global_models: models.total,
            api_keys: keys.total,
        })
    }
}
