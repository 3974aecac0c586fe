//! Gateway API keys and the balance ledger of standalone keys.

use aether_domain::entities::{ApiKey, LedgerEntry, LedgerKind};
use aether_domain::{ApiKeyId, LedgerId, RequestId, Timestamp, Usd, UserId};
use async_trait::async_trait;

use crate::SqlStore;
use crate::args;
use crate::db::{Exec, Row};
use crate::error::{Result, StoreError};
use crate::sql::{
    Count, Filter, Page, Paged, j, json, like_pattern, oj, opt_json, opt_parse, opt_ts, opt_u32,
    parse, ts, usd,
};

/// Filters for listing keys.
#[derive(Debug, Clone, Default)]
pub struct ApiKeyFilter {
    pub user_id: Option<UserId>,
    pub standalone: Option<bool>,
    pub is_active: Option<bool>,
    pub search: Option<String>,
}

/// A balance movement to apply.
#[derive(Debug, Clone)]
pub struct BalanceChange {
    pub kind: LedgerKind,
    /// Signed amount added to the balance.
    pub amount: Usd,
    pub reason: Option<String>,
    pub request_id: Option<RequestId>,
    pub actor_id: Option<UserId>,
    /// Refuse the change if the balance would fall below zero (manual adjustments); usage
    /// charges settle regardless — their overshoot is bounded by reservation upstream.
    pub forbid_negative: bool,
}

#[async_trait]
pub trait ApiKeyRepo: Send + Sync {
    async fn insert_api_key(&self, k: &ApiKey) -> Result<()>;
    /// Writes the editable fields (not counters or balance).
    async fn update_api_key(&self, k: &ApiKey) -> Result<()>;
    async fn get_api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>>;
    async fn get_api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>>;
    async fn list_api_keys(&self, f: &ApiKeyFilter, page: Page) -> Result<Paged<ApiKey>>;
    async fn delete_api_key(&self, id: ApiKeyId) -> Result<bool>;
    /// Applies a balance change and writes its ledger entry in one transaction.
    async fn change_balance(&self, id: ApiKeyId, c: BalanceChange) -> Result<LedgerEntry>;
    async fn list_ledger(&self, id: ApiKeyId, page: Page) -> Result<Paged<LedgerEntry>>;
    /// Adds one request and its cost to the key's counters.
    async fn record_key_use(&self, id: ApiKeyId, cost: Usd, at: Timestamp) -> Result<()>;
}

const COLS: &str = "id, user_id, key_hash, key_display, name, is_active, is_standalone, balance_usd, \
    expires_at, auto_delete_on_expiry, allowed_providers, allowed_api_formats, allowed_models, \
    force_capabilities, rate_limit, concurrent_limit, total_requests, total_cost_usd, last_used_at, \
    created_by, created_at, updated_at";

fn from_row(r: &Row) -> Result<ApiKey> {
    Ok(ApiKey {
        id: parse(r, "id")?,
        user_id: opt_parse(r, "user_id")?,
        key_hash: r.text("key_hash")?,
        key_display: r.text("key_display")?,
        name: r.text("name")?,
        is_active: r.bool("is_active")?,
        is_standalone: r.bool("is_standalone")?,
        balance_usd: usd(r, "balance_usd")?,
        expires_at: opt_ts(r, "expires_at")?,
        auto_delete_on_expiry: r.bool("auto_delete_on_expiry")?,
        allowed_providers: opt_json(r, "allowed_providers")?,
        allowed_api_formats: opt_json(r, "allowed_api_formats")?,
        allowed_models: opt_json(r, "allowed_models")?,
        force_capabilities: json(r, "force_capabilities")?,
        rate_limit: opt_u32(r, "rate_limit")?,
        concurrent_limit: opt_u32(r, "concurrent_limit")?,
        total_requests: r.i64("total_requests")?,
        total_cost_usd: usd(r, "total_cost_usd")?,
        last_used_at: opt_ts(r, "last_used_at")?,
        created_by: opt_parse(r, "created_by")?,
        created_at: ts(r, "created_at")?,
        updated_at: ts(r, "updated_at")?,
    })
}

const LEDGER_COLS: &str =
    "id, api_key_id, kind, amount_usd, balance_after_usd, reason, request_id, actor_id, created_at";

fn ledger_from_row(r: &Row) -> Result<LedgerEntry> {
    Ok(LedgerEntry {
        id: parse(r, "id")?,
        api_key_id: parse(r, "api_key_id")?,
        kind: parse(r, "kind")?,
        amount_usd: usd(r, "amount_usd")?,
        balance_after_usd: usd(r, "balance_after_usd")?,
        reason: r.opt_text("reason")?,
        request_id: opt_parse(r, "request_id")?,
        actor_id: opt_parse(r, "actor_id")?,
        created_at: ts(r, "created_at")?,
    })
}

pub(crate) async fn insert<E: Exec>(ex: &mut E, k: &ApiKey) -> Result<()> {
    ex.execute(
        "INSERT INTO api_keys (id, user_id, key_hash, key_display, name, is_active, is_standalone, \
         balance_usd, expires_at, auto_delete_on_expiry, allowed_providers, allowed_api_formats, \
         allowed_models, force_capabilities, rate_limit, concurrent_limit, total_requests, \
         total_cost_usd, last_used_at, created_by, created_at, updated_at) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22)"
            .into(),
        args![
            k.id.to_string(),
            k.user_id.map(|u| u.to_string()),
            k.key_hash.as_str(),
            k.key_display.as_str(),
            k.name.as_str(),
            k.is_active,
            k.is_standalone,
            k.balance_usd.nanos(),
            k.expires_at.map(Timestamp::millis),
            k.auto_delete_on_expiry,
            oj(k.allowed_providers.as_ref()),
            oj(k.allowed_api_formats.as_ref()),
            oj(k.allowed_models.as_ref()),
            j(&k.force_capabilities),
            k.rate_limit,
            k.concurrent_limit,
            k.total_requests,
            k.total_cost_usd.nanos(),
            k.last_used_at.map(Timestamp::millis),
            k.created_by.map(|u| u.to_string()),
            k.created_at.millis(),
            k.updated_at.millis(),
        ],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl ApiKeyRepo for SqlStore {
    async fn insert_api_key(&self, k: &ApiKey) -> Result<()> {
        insert(&mut self.db.clone(), k).await
    }

    async fn update_api_key(&self, k: &ApiKey) -> Result<()> {
        self.db
            .clone()
            .execute(
                "UPDATE api_keys SET name = $2, is_active = $3, expires_at = $4, \
                 auto_delete_on_expiry = $5, allowed_providers = $6, allowed_api_formats = $7, \
                 allowed_models = $8, force_capabilities = $9, rate_limit = $10, \
                 concurrent_limit = $11, updated_at = $12 WHERE id = $1"
                    .into(),
                args![
                    k.id.to_string(),
                    k.name.as_str(),
                    k.is_active,
                    k.expires_at.map(Timestamp::millis),
                    k.auto_delete_on_expiry,
                    oj(k.allowed_providers.as_ref()),
                    oj(k.allowed_api_formats.as_ref()),
                    oj(k.allowed_models.as_ref()),
                    j(&k.force_capabilities),
                    k.rate_limit,
                    k.concurrent_limit,
                    k.updated_at.millis(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn get_api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>> {
        let mut f = Filter::new();
        f.cond("id = {}", id.to_string());
        f.all(&mut self.db.clone(), COLS, "api_keys", "id")
            .await?
            .first()
            .map(from_row)
            .transpose()
    }

    async fn get_api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        let mut f = Filter::new();
        f.cond("key_hash = {}", hash);
        f.all(&mut self.db.clone(), COLS, "api_keys", "id")
            .await?
            .first()
            .map(from_row)
            .transpose()
    }

    async fn list_api_keys(&self, kf: &ApiKeyFilter, page: Page) -> Result<Paged<ApiKey>> {
        let mut f = Filter::new();
        if let Some(u) = kf.user_id {
            f.cond("user_id = {}", u.to_string());
        }
        if let Some(s) = kf.standalone {
            f.cond("is_standalone = {}", s);
        }
        if let Some(a) = kf.is_active {
            f.cond("is_active = {}", a);
        }
        if let Some(s) = kf.search.as_deref().filter(|s| !s.trim().is_empty()) {
            f.cond("LOWER(name) LIKE {} ESCAPE '\\'", like_pattern(s.trim()));
        }
        f.page(
            &mut self.db.clone(),
            COLS,
            "api_keys",
            "created_at DESC, id DESC",
            page,
            Count::Exact,
        )
        .await?
        .decode(from_row)
    }

    async fn delete_api_key(&self, id: ApiKeyId) -> Result<bool> {
        let n = self
            .db
            .clone()
            .execute(
                "DELETE FROM api_keys WHERE id = $1".into(),
                args![id.to_string()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn change_balance(&self, id: ApiKeyId, c: BalanceChange) -> Result<LedgerEntry> {
        let mut tx = self.db.begin().await?;
        let sql = if c.forbid_negative {
            "UPDATE api_keys SET balance_usd = balance_usd + $2, updated_at = $3 \
             WHERE id = $1 AND is_standalone = TRUE AND balance_usd + $2 >= 0 RETURNING balance_usd"
        } else {
            "UPDATE api_keys SET balance_usd = balance_usd + $2, updated_at = $3 \
             WHERE id = $1 AND is_standalone = TRUE RETURNING balance_usd"
        };
        let now = Timestamp::now();
        let row = tx
            .fetch_optional(
                sql.into(),
                args![id.to_string(), c.amount.nanos(), now.millis()],
            )
            .await?;
        let Some(row) = row else {
            // Tell "no such standalone key" from "would go negative".
            let exists = tx
                .fetch_optional(
                    "SELECT balance_usd FROM api_keys WHERE id = $1 AND is_standalone = TRUE"
                        .into(),
                    args![id.to_string()],
                )
                .await?;
            return Err(match exists {
                None => StoreError::NotFound,
                Some(r) => StoreError::Conflict(format!(
                    "insufficient balance: {} available",
                    usd(&r, "balance_usd")?
                )),
            });
        };
        let entry = LedgerEntry {
            id: LedgerId::new(),
            api_key_id: id,
            kind: c.kind,
            amount_usd: c.amount,
            balance_after_usd: usd(&row, "balance_usd")?,
            reason: c.reason,
            request_id: c.request_id,
            actor_id: c.actor_id,
            created_at: now,
        };
        tx.execute(
            "INSERT INTO balance_ledger (id, api_key_id, kind, amount_usd, balance_after_usd, reason, \
             request_id, actor_id, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"
                .into(),
            args![
                entry.id.to_string(),
                id.to_string(),
                entry.kind.as_str(),
                entry.amount_usd.nanos(),
                entry.balance_after_usd.nanos(),
                entry.reason.clone(),
                entry.request_id.map(|r| r.to_string()),
                entry.actor_id.map(|a| a.to_string()),
                now.millis(),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(entry)
    }

    async fn list_ledger(&self, id: ApiKeyId, page: Page) -> Result<Paged<LedgerEntry>> {
        let mut f = Filter::new();
        f.cond("api_key_id = {}", id.to_string());
        f.page(
            &mut self.db.clone(),
            LEDGER_COLS,
            "balance_ledger",
            "created_at DESC, id DESC",
            page,
            Count::Exact,
        )
        .await?
        .decode(ledger_from_row)
    }

    async fn record_key_use(&self, id: ApiKeyId, cost: Usd, at: Timestamp) -> Result<()> {
        self.db
            .clone()
            .execute(
                "UPDATE api_keys SET total_requests = total_requests + 1, \
                 total_cost_usd = total_cost_usd + $2, last_used_at = $3 WHERE id = $1"
                    .into(),
                args![id.to_string(), cost.nanos(), at.millis()],
            )
            .await?;
        Ok(())
    }
}
