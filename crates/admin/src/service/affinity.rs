//! Cache affinity for operators: the live bindings of callers (gateway key, format, model,
//! session) to the upstream key that last served them, read from the request path's live
//! state, with names resolved for display; and clearing them all.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use aether_domain::{ApiFormat, ApiKeyId, GlobalModelId, ProviderKeyId};
use serde::Serialize;
use serde_json::json;

use crate::{Actor, Admin, ApiError, ApiResult};

/// A live binding with what it points at, for display.
#[derive(Debug, Clone, Serialize)]
pub struct AffinityEntry {
    pub api_key_id: ApiKeyId,
    /// The gateway key's name and masked form, when it still exists.
    pub api_key_name: Option<String>,
    pub api_key_display: Option<String>,
    pub api_format: ApiFormat,
    pub model_id: GlobalModelId,
    pub model_name: Option<String>,
    pub session: Option<String>,
    pub provider_key_id: ProviderKeyId,
    pub provider_key_name: Option<String>,
    /// Whole seconds until the binding lapses.
    pub ttl_secs: u64,
}

impl Admin {
    fn affinity_state(&self) -> ApiResult<Arc<dyn aether_coord::LiveState>> {
        self.live().ok_or_else(|| {
            ApiError::Internal("this process does not serve requests (no live state)".into())
        })
    }

    /// Up to `limit` live bindings, longest-lived first.
    pub async fn list_affinity(&self, limit: usize) -> ApiResult<Vec<AffinityEntry>> {
        let mut bindings = self.affinity_state()?.affinity_list(limit).await;
        bindings.sort_by_key(|b| std::cmp::Reverse(b.ttl_secs));
        let s = self.store();
        let mut keys: HashMap<ApiKeyId, Option<(String, String)>> = HashMap::new();
        let mut models: HashMap<GlobalModelId, Option<String>> = HashMap::new();
        let mut targets: HashMap<ProviderKeyId, Option<String>> = HashMap::new();
        let mut out = Vec::with_capacity(bindings.len());
        for b in bindings {
            if let Entry::Vacant(e) = keys.entry(b.api_key) {
                let k = s.get_api_key(b.api_key).await?;
                e.insert(k.map(|k| (k.name, k.key_display)));
            }
            if let Entry::Vacant(e) = models.entry(b.model) {
                let m = s.get_global_model(b.model).await?;
                e.insert(m.map(|m| m.name));
            }
            if let Entry::Vacant(e) = targets.entry(b.target) {
                let k = s.get_provider_key(b.target).await?;
                e.insert(k.map(|k| k.name));
            }
            let key = keys.get(&b.api_key).cloned().flatten();
            out.push(AffinityEntry {
                api_key_id: b.api_key,
                api_key_name: key.as_ref().map(|k| k.0.clone()),
                api_key_display: key.map(|k| k.1),
                api_format: b.format,
                model_id: b.model,
                model_name: models.get(&b.model).cloned().flatten(),
                session: b.session,
                provider_key_id: b.target,
                provider_key_name: targets.get(&b.target).cloned().flatten(),
                ttl_secs: b.ttl_secs,
            });
        }
        Ok(out)
    }

    /// Drops every binding; the next request of each caller picks a key afresh.
    pub async fn clear_affinity(&self, actor: &Actor) -> ApiResult<()> {
        let live = self.affinity_state()?;
        let before = live.affinity_list(usize::MAX).await.len();
        live.affinity_clear().await;
        self.audit(
            actor,
            "affinity.clear",
            "affinity",
            "all",
            json!({ "bindings": before }),
        )
        .await;
        Ok(())
    }
}
