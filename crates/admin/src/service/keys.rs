//! Gateway API keys: users' keys (by admins and by users themselves) and standalone keys
//! with a prepaid balance whose every change goes through the ledger.

use aether_domain::entities::{ApiKey, LedgerEntry, LedgerKind};
use aether_domain::secret::{generate_api_key, hash_api_key, mask};
use aether_domain::{ApiFormat, ApiKeyId, ProviderId, Timestamp, Usd, UserId};
use aether_store::{ApiKeyFilter, BalanceChange, Page, Paged, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{double_option, set, validate};
use crate::{Actor, Admin, ApiError, ApiResult};

/// A key to create.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct NewKey {
    pub name: String,
    /// Expiry as a timestamp; alternatively `expire_days` from now.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub expire_days: Option<u32>,
    #[serde(default)]
    pub auto_delete_on_expiry: bool,
    #[serde(default)]
    pub allowed_providers: Option<Vec<ProviderId>>,
    #[serde(default)]
    pub allowed_api_formats: Option<Vec<ApiFormat>>,
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default)]
    pub force_capabilities: Vec<String>,
    /// Requests per minute.
    #[serde(default)]
    pub rate_limit: Option<u32>,
    #[serde(default)]
    pub concurrent_limit: Option<u32>,
    /// Standalone keys only: the opening balance (required, > 0).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub initial_balance_usd: Option<Usd>,
}

/// Changes to a key; absent fields stay, `null` clears.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub is_active: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    pub expires_at: Option<Option<Timestamp>>,
    pub auto_delete_on_expiry: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    pub allowed_providers: Option<Option<Vec<ProviderId>>>,
    #[serde(default, deserialize_with = "double_option")]
    pub allowed_api_formats: Option<Option<Vec<ApiFormat>>>,
    #[serde(default, deserialize_with = "double_option")]
    pub allowed_models: Option<Option<Vec<String>>>,
    pub force_capabilities: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub rate_limit: Option<Option<u32>>,
    #[serde(default, deserialize_with = "double_option")]
    pub concurrent_limit: Option<Option<u32>>,
}

/// A key just created: the only time the full key is ever shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedKey {
    /// The full key. Store it now: it cannot be shown again.
    pub key: String,
    #[serde(flatten)]
    #[schema(inline, value_type = Object)]
    pub api_key: ApiKey,
}

/// A balance change requested by an admin.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct BalanceAdjust {
    /// Signed: positive adds, negative deducts (never below zero).
    #[schema(value_type = String)]
    pub amount_usd: Usd,
    /// `topup`, `refund` or `adjustment` (default: `topup` when positive, `adjustment` otherwise).
    #[serde(default)]
    pub kind: Option<LedgerKind>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl Admin {
    fn build_key(
        &self,
        owner: Option<UserId>,
        creator: Option<UserId>,
        n: &NewKey,
    ) -> ApiResult<(ApiKey, String)> {
        let name = validate::text("name", &n.name, 100)?;
        let now = Timestamp::now();
        let expires_at = match (n.expires_at, n.expire_days) {
            (Some(t), _) => Some(t),
            (None, Some(d)) if d > 0 => Some(now.plus_secs(i64::from(d) * 86_400)),
            _ => None,
        };
        if expires_at.is_some_and(|t| t <= now) {
            return Err(ApiError::invalid("expires_at", "must be in the future"));
        }
        let plain = generate_api_key(self.settings().api_key_prefix());
        let key = ApiKey {
            id: ApiKeyId::new(),
            user_id: owner,
            key_hash: hash_api_key(&plain),
            key_display: mask(&plain),
            name,
            is_active: true,
            is_standalone: owner.is_none(),
            balance_usd: Usd::ZERO,
            expires_at,
            auto_delete_on_expiry: n.auto_delete_on_expiry,
            allowed_providers: n.allowed_providers.clone(),
            allowed_api_formats: validate::formats(n.allowed_api_formats.clone()),
            allowed_models: n.allowed_models.clone(),
            force_capabilities: validate::capabilities(
                "force_capabilities",
                &n.force_capabilities,
            )?,
            rate_limit: validate::positive("rate_limit", n.rate_limit)?,
            concurrent_limit: validate::positive("concurrent_limit", n.concurrent_limit)?,
            total_requests: 0,
            total_cost_usd: Usd::ZERO,
            last_used_at: None,
            created_by: creator,
            created_at: now,
            updated_at: now,
        };
        Ok((key, plain))
    }

    /// Creates a key for a user (by an admin, or by the user themselves).
    pub async fn create_user_key(
        &self,
        actor: &Actor,
        user_id: UserId,
        n: NewKey,
    ) -> ApiResult<CreatedKey> {
        if !actor.is_admin() && actor.user_id != Some(user_id) {
            return Err(ApiError::Forbidden(
                "you can only create keys for yourself".into(),
            ));
        }
        self.get_user(user_id).await?;
        if n.initial_balance_usd.is_some() {
            return Err(ApiError::invalid(
                "initial_balance_usd",
                "only standalone keys have a balance",
            ));
        }
        let (key, plain) = self.build_key(Some(user_id), actor.user_id, &n)?;
        self.store().insert_api_key(&key).await?;
        self.audit(
            actor,
            "api_key.create",
            "api_key",
            key.id,
            json!({ "user_id": user_id, "name": key.name }),
        )
        .await;
        self.changed().await;
        Ok(CreatedKey {
            key: plain,
            api_key: key,
        })
    }

    /// Creates a standalone key with an opening balance (written to the ledger).
    pub async fn create_standalone_key(&self, actor: &Actor, n: NewKey) -> ApiResult<CreatedKey> {
        let balance = n
            .initial_balance_usd
            .filter(|b| !b.is_negative() && !b.is_zero())
            .ok_or_else(|| {
                ApiError::invalid(
                    "initial_balance_usd",
                    "a standalone key needs a positive opening balance",
                )
            })?;
        let (key, plain) = self.build_key(None, actor.user_id, &n)?;
        self.store().insert_api_key(&key).await?;
        self.store()
            .change_balance(
                key.id,
                BalanceChange {
                    kind: LedgerKind::TopUp,
                    amount: balance,
                    reason: Some("opening balance".into()),
                    request_id: None,
                    actor_id: actor.user_id,
                    forbid_negative: true,
                },
            )
            .await?;
        self.audit(
            actor,
            "api_key.create_standalone",
            "api_key",
            key.id,
            json!({ "name": key.name, "balance_usd": balance }),
        )
        .await;
        self.changed().await;
        let key = self.get_key(key.id).await?;
        Ok(CreatedKey {
            key: plain,
            api_key: key,
        })
    }

    pub async fn get_key(&self, id: ApiKeyId) -> ApiResult<ApiKey> {
        self.store()
            .get_api_key(id)
            .await?
            .ok_or(ApiError::NotFound("API key"))
    }

    /// A key the actor may see: their own, or any for admins.
    pub async fn get_key_for(&self, actor: &Actor, id: ApiKeyId) -> ApiResult<ApiKey> {
        let k = self.get_key(id).await?;
        if actor.is_admin() || (k.user_id.is_some() && k.user_id == actor.user_id) {
            Ok(k)
        } else {
            // Not "forbidden": do not reveal that someone else's key exists.
            Err(ApiError::NotFound("API key"))
        }
    }

    pub async fn list_keys(&self, f: &ApiKeyFilter, page: Page) -> ApiResult<Paged<ApiKey>> {
        Ok(self.store().list_api_keys(f, page).await?)
    }

    pub async fn update_key(&self, actor: &Actor, id: ApiKeyId, p: KeyPatch) -> ApiResult<ApiKey> {
        let mut k = self.get_key_for(actor, id).await?;
        if let Some(n) = &p.name {
            k.name = validate::text("name", n, 100)?;
        }
        if let Some(Some(t)) = p.expires_at
            && t <= Timestamp::now()
        {
            return Err(ApiError::invalid("expires_at", "must be in the future"));
        }
        set(&mut k.is_active, p.is_active);
        set(&mut k.expires_at, p.expires_at);
        set(&mut k.auto_delete_on_expiry, p.auto_delete_on_expiry);
        // Limits and allow-lists are the admin's to set; users may only narrow nothing here.
        if actor.is_admin() {
            set(&mut k.allowed_providers, p.allowed_providers);
            set(
                &mut k.allowed_api_formats,
                p.allowed_api_formats.map(validate::formats),
            );
            set(&mut k.allowed_models, p.allowed_models);
            if let Some(c) = &p.force_capabilities {
                k.force_capabilities = validate::capabilities("force_capabilities", c)?;
            }
            if let Some(r) = p.rate_limit {
                k.rate_limit = validate::positive("rate_limit", r)?;
            }
            if let Some(c) = p.concurrent_limit {
                k.concurrent_limit = validate::positive("concurrent_limit", c)?;
            }
        } else if p.allowed_providers.is_some()
            || p.allowed_api_formats.is_some()
            || p.allowed_models.is_some()
            || p.force_capabilities.is_some()
            || p.rate_limit.is_some()
            || p.concurrent_limit.is_some()
        {
            return Err(ApiError::Forbidden(
                "only an admin can change a key's limits and allow-lists".into(),
            ));
        }
        k.updated_at = Timestamp::now();
        self.store().update_api_key(&k).await?;
        self.audit(
            actor,
            "api_key.update",
            "api_key",
            id,
            json!({ "name": k.name, "is_active": k.is_active }),
        )
        .await;
        self.changed().await;
        Ok(k)
    }

    pub async fn delete_key(&self, actor: &Actor, id: ApiKeyId) -> ApiResult<()> {
        let k = self.get_key_for(actor, id).await?;
        self.store().delete_api_key(id).await?;
        self.audit(
            actor,
            "api_key.delete",
            "api_key",
            id,
            json!({ "name": k.name }),
        )
        .await;
        self.changed().await;
        Ok(())
    }

    /// Deletes expired gateway keys that asked for it (`auto_delete_on_expiry`) when the
    /// `delete_expired_keys` setting is on; other expired keys stay, refused by admission.
    /// Run periodically by the server. Returns how many were deleted.
    pub async fn delete_expired_keys(&self) -> ApiResult<usize> {
        if !self.settings().delete_expired_keys() {
            return Ok(0);
        }
        let now = Timestamp::now();
        let keys = self
            .store()
            .list_api_keys(&ApiKeyFilter::default(), Page::all())
            .await?;
        let mut n = 0;
        for k in keys.items {
            if k.auto_delete_on_expiry
                && k.expires_at.is_some_and(|t| t <= now)
                && self.store().delete_api_key(k.id).await?
            {
                n += 1;
                self.audit(
                    &Actor::system(),
                    "api_key.expired_delete",
                    "api_key",
                    k.id,
                    json!({ "name": k.name, "expired_at": k.expires_at }),
                )
                .await;
            }
        }
        if n > 0 {
            self.changed().await;
        }
        Ok(n)
    }

    /// Moves a standalone key's balance, with a ledger entry.
    pub async fn adjust_balance(
        &self,
        actor: &Actor,
        id: ApiKeyId,
        a: BalanceAdjust,
    ) -> ApiResult<LedgerEntry> {
        if a.amount_usd.is_zero() {
            return Err(ApiError::invalid("amount_usd", "must not be zero"));
        }
        let kind = a.kind.unwrap_or(if a.amount_usd.is_negative() {
            LedgerKind::Adjustment
        } else {
            LedgerKind::TopUp
        });
        match kind {
            LedgerKind::Charge => {
                return Err(ApiError::invalid(
                    "kind",
                    "charges come from usage, not from admins",
                ));
            }
            LedgerKind::TopUp | LedgerKind::Refund if a.amount_usd.is_negative() => {
                return Err(ApiError::invalid(
                    "amount_usd",
                    "top-ups and refunds are positive",
                ));
            }
            _ => {}
        }
        let entry = self
            .store()
            .change_balance(
                id,
                BalanceChange {
                    kind,
                    amount: a.amount_usd,
                    reason: a.reason.map(|r| r.trim().chars().take(500).collect()),
                    request_id: None,
                    actor_id: actor.user_id,
                    forbid_negative: true,
                },
            )
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ApiError::NotFound("standalone key"),
                other => other.into(),
            })?;
        self.audit(
            actor,
            "api_key.balance_adjust",
            "api_key",
            id,
            json!({ "kind": kind, "amount_usd": a.amount_usd, "balance_after_usd": entry.balance_after_usd }),
        )
        .await;
        // A live balance account holds `−balance`: a top-up lowers it.
        if let Some(live) = self.live() {
            live.budget_adjust(aether_coord::BudgetAccount::Standalone(id), -a.amount_usd)
                .await;
        }
        self.changed().await;
        Ok(entry)
    }

    pub async fn ledger(&self, id: ApiKeyId, page: Page) -> ApiResult<Paged<LedgerEntry>> {
        self.get_key(id).await?;
        Ok(self.store().list_ledger(id, page).await?)
    }
}
