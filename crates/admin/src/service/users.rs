//! Users: admin CRUD, quota resets, self-service profile and password, first-admin bootstrap.

use std::collections::BTreeMap;

use aether_domain::entities::{QuotaPeriod, Role, User};
use aether_domain::secret::generate_password;
use aether_domain::{ApiFormat, ProviderId, Timestamp, Usd, UserId};
use aether_store::{Page, Paged, UserFilter};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{double_option, set, validate};
use crate::auth::{hash_password, verify_password};
use crate::{Actor, Admin, ApiError, ApiResult};

/// A new account.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewUser {
    pub email: String,
    /// Defaults to the email's local part.
    #[serde(default)]
    pub username: Option<String>,
    pub password: String,
    #[serde(default = "default_role")]
    pub role: Role,
    /// Absent: the `default_user_quota_usd` setting; `null`: unlimited.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub quota_usd: Option<Option<Usd>>,
    #[serde(default = "default_period")]
    pub quota_period: QuotaPeriod,
    #[serde(default)]
    pub allowed_providers: Option<Vec<ProviderId>>,
    #[serde(default)]
    pub allowed_api_formats: Option<Vec<ApiFormat>>,
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default = "yes")]
    pub is_active: bool,
}

fn default_role() -> Role {
    Role::User
}
fn default_period() -> QuotaPeriod {
    QuotaPeriod::None
}
fn yes() -> bool {
    true
}

/// Changes to an account; absent fields stay, `null` clears.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UserPatch {
    pub email: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub role: Option<Role>,
    pub is_active: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub quota_usd: Option<Option<Usd>>,
    pub quota_period: Option<QuotaPeriod>,
    #[serde(default, deserialize_with = "double_option")]
    pub allowed_providers: Option<Option<Vec<ProviderId>>>,
    #[serde(default, deserialize_with = "double_option")]
    pub allowed_api_formats: Option<Option<Vec<ApiFormat>>>,
    #[serde(default, deserialize_with = "double_option")]
    pub allowed_models: Option<Option<Vec<String>>>,
    pub model_capability_settings: Option<BTreeMap<String, Vec<String>>>,
}

/// What a user may change about themselves.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct ProfilePatch {
    pub email: Option<String>,
    pub username: Option<String>,
}

impl Admin {
    pub async fn create_user(&self, actor: &Actor, n: NewUser) -> ApiResult<User> {
        let email = validate::email("email", &n.email)?;
        let username = match n.username.as_deref() {
            Some(u) => validate::username("username", u)?,
            None => self.derive_username(&email).await?,
        };
        validate::password("password", &n.password)?;
        let quota = match n.quota_usd {
            None => self.settings().default_user_quota(),
            Some(q) => q,
        };
        if quota.is_some_and(Usd::is_negative) {
            return Err(ApiError::invalid("quota_usd", "must not be negative"));
        }
        let now = Timestamp::now();
        let user = User {
            id: UserId::new(),
            email,
            username,
            password_hash: hash_password(n.password).await?,
            role: n.role,
            is_active: n.is_active,
            quota_usd: quota,
            used_usd: Usd::ZERO,
            total_usd: Usd::ZERO,
            quota_period: n.quota_period,
            period_started_at: Some(now),
            allowed_providers: n.allowed_providers,
            allowed_api_formats: validate::formats(n.allowed_api_formats),
            allowed_models: n.allowed_models,
            model_capability_settings: BTreeMap::new(),
            last_login_at: None,
            created_at: now,
            updated_at: now,
        };
        self.store().insert_user(&user).await?;
        self.audit(
            actor,
            "user.create",
            "user",
            user.id,
            json!({ "email": user.email, "role": user.role }),
        )
        .await;
        self.changed().await;
        Ok(user)
    }

    /// A free username from the email's local part (`ann@x.io` → `ann`, then `ann-2`, …).
    async fn derive_username(&self, email: &str) -> ApiResult<String> {
        let local: String = email
            .split('@')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "_.-".contains(*c))
            .take(40)
            .collect();
        let base = if local.chars().count() < 2 {
            format!("user-{local}")
        } else {
            local
        };
        for n in 1..=50 {
            let candidate = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            if self.store().find_user_by_login(&candidate).await?.is_none() {
                return Ok(candidate);
            }
        }
        Err(ApiError::invalid("username", "choose a username"))
    }

    pub async fn get_user(&self, id: UserId) -> ApiResult<User> {
        self.store()
            .get_user(id)
            .await?
            .ok_or(ApiError::NotFound("user"))
    }

    pub async fn list_users(&self, f: &UserFilter, page: Page) -> ApiResult<Paged<User>> {
        Ok(self.store().list_users(f, page).await?)
    }

    pub async fn update_user(&self, actor: &Actor, id: UserId, p: UserPatch) -> ApiResult<User> {
        let mut u = self.get_user(id).await?;
        let before_role = u.role;
        if let Some(e) = &p.email {
            u.email = validate::email("email", e)?;
        }
        if let Some(n) = &p.username {
            u.username = validate::username("username", n)?;
        }
        let password_changed = p.password.is_some();
        if let Some(pw) = p.password {
            validate::password("password", &pw)?;
            u.password_hash = hash_password(pw).await?;
        }
        if let Some(Some(q)) = p.quota_usd
            && q.is_negative()
        {
            return Err(ApiError::invalid("quota_usd", "must not be negative"));
        }
        set(&mut u.role, p.role);
        set(&mut u.is_active, p.is_active);
        set(&mut u.quota_usd, p.quota_usd);
        set(&mut u.quota_period, p.quota_period);
        set(&mut u.allowed_providers, p.allowed_providers);
        set(
            &mut u.allowed_api_formats,
            p.allowed_api_formats.map(validate::formats),
        );
        set(&mut u.allowed_models, p.allowed_models);
        set(
            &mut u.model_capability_settings,
            p.model_capability_settings,
        );
        if before_role == Role::Admin && (u.role != Role::Admin || !u.is_active) {
            self.ensure_other_admin(id).await?;
        }
        if actor.user_id == Some(id) && !u.is_active {
            return Err(ApiError::Conflict(
                "you cannot deactivate your own account".into(),
            ));
        }
        u.updated_at = Timestamp::now();
        self.store().update_user(&u).await?;
        if password_changed || !u.is_active {
            self.store().revoke_user_sessions(id, u.updated_at).await?;
        }
        let mut details = json!({ "email": u.email, "role": u.role, "is_active": u.is_active });
        if password_changed {
            details["password_changed"] = json!(true);
        }
        self.audit(actor, "user.update", "user", id, details).await;
        self.changed().await;
        Ok(u)
    }

    /// The last active admin can be neither deleted, demoted nor deactivated.
    async fn ensure_other_admin(&self, id: UserId) -> ApiResult<()> {
        let admins = self
            .store()
            .list_users(
                &UserFilter {
                    role: Some(Role::Admin),
                    is_active: Some(true),
                    ..Default::default()
                },
                Page::new(2, 0),
            )
            .await?;
        if admins.items.iter().any(|a| a.id != id) {
            Ok(())
        } else {
            Err(ApiError::Conflict(
                "this is the last active admin; promote another admin first".into(),
            ))
        }
    }

    pub async fn delete_user(&self, actor: &Actor, id: UserId) -> ApiResult<()> {
        let u = self.get_user(id).await?;
        if actor.user_id == Some(id) {
            return Err(ApiError::Conflict(
                "you cannot delete your own account".into(),
            ));
        }
        if u.role == Role::Admin {
            self.ensure_other_admin(id).await?;
        }
        self.store().delete_user(id).await?;
        self.audit(
            actor,
            "user.delete",
            "user",
            id,
            json!({ "email": u.email }),
        )
        .await;
        self.changed().await;
        Ok(())
    }

    /// Starts a new quota period for the user now.
    pub async fn reset_user_quota(&self, actor: &Actor, id: UserId) -> ApiResult<User> {
        let before = self.get_user(id).await?;
        let now = Timestamp::now();
        self.store().reset_user_quota(id, now).await?;
        self.audit(
            actor,
            "user.quota_reset",
            "user",
            id,
            json!({ "used_usd": before.used_usd }),
        )
        .await;
        self.changed().await;
        // The live account of this period starts again from the (now reset) stored spend.
        if let Some(live) = self.live() {
            let start = before.quota_period.period_start(now).map(Timestamp::millis);
            live.budget_forget(aether_coord::BudgetAccount::User(id, start))
                .await;
        }
        self.get_user(id).await
    }

    pub async fn update_profile(&self, me: &Actor, p: ProfilePatch) -> ApiResult<User> {
        let id = me.user_id.ok_or(ApiError::NotFound("user"))?;
        let mut u = self.get_user(id).await?;
        if let Some(e) = &p.email {
            u.email = validate::email("email", e)?;
        }
        if let Some(n) = &p.username {
            u.username = validate::username("username", n)?;
        }
        u.updated_at = Timestamp::now();
        self.store().update_user(&u).await?;
        self.changed().await;
        Ok(u)
    }

    /// Changes one's own password; every session of the account ends (sign in again).
    pub async fn change_password(&self, me: &Actor, old: Option<&str>, new: &str) -> ApiResult<()> {
        let id = me.user_id.ok_or(ApiError::NotFound("user"))?;
        let mut u = self.get_user(id).await?;
        let old = old
            .ok_or_else(|| ApiError::invalid("old_password", "the current password is required"))?;
        if !verify_password(old.to_string(), u.password_hash.clone()).await {
            return Err(ApiError::invalid(
                "old_password",
                "the current password is wrong",
            ));
        }
        validate::password("new_password", new)?;
        u.password_hash = hash_password(new.to_string()).await?;
        u.updated_at = Timestamp::now();
        self.store().update_user(&u).await?;
        self.store().revoke_user_sessions(id, u.updated_at).await?;
        self.audit(me, "user.password_change", "user", id, json!({}))
            .await;
        Ok(())
    }

    pub async fn set_model_capabilities(
        &self,
        me: &Actor,
        settings: BTreeMap<String, Vec<String>>,
    ) -> ApiResult<User> {
        let id = me.user_id.ok_or(ApiError::NotFound("user"))?;
        let mut u = self.get_user(id).await?;
        let mut clean = BTreeMap::new();
        for (model, caps) in settings {
            let model = validate::text("model_capability_settings", &model, 200)?;
            clean.insert(
                model,
                validate::capabilities("model_capability_settings", &caps)?,
            );
        }
        u.model_capability_settings = clean;
        u.updated_at = Timestamp::now();
        self.store().update_user(&u).await?;
        self.changed().await;
        Ok(u)
    }

    /// On an empty database, creates the first admin. Returns the account and, when no
    /// password was configured, the generated one (to be printed once).
    pub async fn bootstrap_admin(
        &self,
        email: &str,
        password: Option<&str>,
    ) -> ApiResult<Option<(User, Option<String>)>> {
        if self.store().count_users(None).await? > 0 {
            return Ok(None);
        }
        let (pw, generated) = match password {
            Some(p) => (p.to_string(), None),
            None => {
                let p = generate_password();
                (p.clone(), Some(p))
            }
        };
        let user = self
            .create_user(
                &Actor::cli(),
                NewUser {
                    email: email.to_string(),
                    username: Some("admin".to_string()),
                    password: pw,
                    role: Role::Admin,
                    quota_usd: Some(None),
                    quota_period: QuotaPeriod::None,
                    allowed_providers: None,
                    allowed_api_formats: None,
                    allowed_models: None,
                    is_active: true,
                },
            )
            .await?;
        Ok(Some((user, generated)))
    }
}
