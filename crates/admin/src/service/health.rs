//! Health of upstream keys for the console: the circuit breaker, the learned concurrency
//! limit and its history, requests in flight — read from the request path's live state — and
//! the health timeline, counted from stored usage and attempt traces.

use aether_coord::Scope;
use aether_coord::adaptive::LimitChange;
use aether_coord::breaker::BreakerView;
use aether_domain::{ApiFormat, EndpointId, ProviderKeyId, Timestamp};
use aether_store::{HealthBucket, HealthQuery};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::{Actor, Admin, ApiError, ApiResult};

/// An upstream key's live state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyHealth {
    pub key_id: ProviderKeyId,
    pub breaker: BreakerView,
    /// The fixed limit, when the key has one.
    pub max_concurrent: Option<u32>,
    /// The limit learned for a key without a fixed one.
    pub learned_limit: u32,
    /// Requests holding a slot of the key now.
    pub in_flight: u32,
    /// Changes of the learned limit, oldest first.
    pub limit_history: Vec<LimitChange>,
}

/// Which attempts a health timeline counts.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimelineQuery {
    /// Look-back in hours: 1, 6, 12, 24 or 48 (default 24).
    pub hours: Option<u32>,
    pub api_format: Option<ApiFormat>,
    pub endpoint_id: Option<EndpointId>,
    pub key_id: Option<ProviderKeyId>,
}

/// 100 buckets over the look-back.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Timeline {
    pub since: Timestamp,
    pub until: Timestamp,
    pub buckets: Vec<HealthBucket>,
}

impl Admin {
    fn live_state(&self) -> ApiResult<std::sync::Arc<dyn aether_coord::LiveState>> {
        self.live().ok_or_else(|| {
            ApiError::Internal("this process does not serve requests (no live state)".into())
        })
    }

    pub async fn key_health(&self, id: ProviderKeyId) -> ApiResult<KeyHealth> {
        let key = self.get_provider_key(id).await?;
        let live = self.live_state()?;
        Ok(KeyHealth {
            key_id: id,
            breaker: live.breaker_view(id).await,
            max_concurrent: key.max_concurrent,
            learned_limit: live.adaptive_limit(id).await.0,
            in_flight: live.lease_count(Scope::ProviderKey(id)).await,
            limit_history: live.adaptive_history(id).await,
        })
    }

    /// Closes a key's circuit breaker and restores its health.
    pub async fn reset_breaker(&self, actor: &Actor, id: ProviderKeyId) -> ApiResult<KeyHealth> {
        let before = self.key_health(id).await?;
        self.live_state()?.breaker_reset(id).await;
        self.audit(
            actor,
            "provider_key.breaker_reset",
            "provider_key",
            id,
            json!({ "state": before.breaker.state, "health": before.breaker.health }),
        )
        .await;
        self.key_health(id).await
    }

    pub async fn health_timeline(&self, q: TimelineQuery) -> ApiResult<Timeline> {
        let hours = q.hours.unwrap_or(24);
        if ![1, 6, 12, 24, 48].contains(&hours) {
            return Err(ApiError::invalid("hours", "one of 1, 6, 12, 24, 48"));
        }
        let until = Timestamp::now();
        let since = Timestamp::from_millis(until.millis() - i64::from(hours) * 3_600_000);
        let buckets = self
            .store()
            .health_timeline(&HealthQuery {
                since,
                until,
                buckets: 100,
                api_format: q.api_format,
                endpoint_id: q.endpoint_id,
                provider_key_id: q.key_id,
            })
            .await?;
        Ok(Timeline {
            since,
            until,
            buckets,
        })
    }
}
