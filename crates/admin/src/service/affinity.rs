//! Cache affinity for operators: the live bindings of callers (gateway key, format, model,
//! session) to the upstream key that last served them, read from the request path's live
//! state, with names resolved for display; clearing them all; and how often a served request
//! kept its binding (hit), moved it (switch) or made its first one (new), per API format.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use aether_coord::{AFFINITY_BUCKETS, AffinityBucket, AffinityCounts};
use aether_domain::{ApiFormat, ApiKeyId, GlobalModelId, ProviderKeyId, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::{Actor, Admin, ApiError, ApiResult};

/// A live binding with what it points at, for display.
#[derive(Debug, Clone, Serialize, ToSchema)]
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

/// Which window the affinity statistics cover.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AffinityStatsQuery {
    /// The window in minutes, 1–60 (default 60), in one-minute buckets.
    pub minutes: Option<u32>,
}

/// One API format's cache-affinity outcomes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FormatAffinityStats {
    pub api_format: ApiFormat,
    /// Since counting began.
    pub total: AffinityCounts,
    /// Inside the window.
    pub window: AffinityCounts,
    /// Hits ÷ counted requests in the window, 0–1; `null` without requests.
    pub hit_rate: Option<f64>,
}

/// Cache-affinity outcomes of served requests: `hits` kept their binding, `switches` were
/// served by another key than the bound one (the binding moved), `new` made a first binding.
/// Counted in this process since `since` (live state, not stored).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AffinityStatsView {
    pub since: Timestamp,
    pub window_minutes: u32,
    pub window_start: Timestamp,
    pub bucket_secs: u64,
    /// Every format together, since counting began and inside the window.
    pub total: AffinityCounts,
    pub window: AffinityCounts,
    pub hit_rate: Option<f64>,
    pub formats: Vec<FormatAffinityStats>,
    /// Oldest first; the last bucket is the current, partial minute.
    pub buckets: Vec<AffinityBucket>,
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

    /// Hit/switch/new counts per API format since counting began and over the last
    /// `minutes` (1–60, default 60).
    pub async fn affinity_stats(&self, minutes: Option<u32>) -> ApiResult<AffinityStatsView> {
        let max = u32::try_from(AFFINITY_BUCKETS).unwrap_or(60);
        let minutes = match minutes {
            None => max,
            Some(m) if (1..=max).contains(&m) => m,
            Some(_) => {
                return Err(ApiError::invalid(
                    "minutes",
                    format!("the window is 1 to {max} minutes"),
                ));
            }
        };
        let st = self
            .affinity_state()?
            .affinity_stats(Duration::from_secs(u64::from(minutes) * 60))
            .await;
        let (mut total, mut window) = (AffinityCounts::default(), AffinityCounts::default());
        let formats = st
            .formats
            .iter()
            .map(|f| {
                total.merge(&f.total);
                window.merge(&f.window);
                FormatAffinityStats {
                    api_format: f.format,
                    total: f.total,
                    window: f.window,
                    hit_rate: f.window.hit_rate(),
                }
            })
            .collect();
        Ok(AffinityStatsView {
            since: Timestamp::from_millis(st.since_ms),
            window_minutes: minutes,
            window_start: Timestamp::from_millis(st.window_start_ms),
            bucket_secs: st.bucket_secs,
            total,
            window,
            hit_rate: window.hit_rate(),
            formats,
            buckets: st.buckets,
        })
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
