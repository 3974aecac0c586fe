//! Live state shared by every request: what must be seen alike by all requests of one process
//! — and, in cluster mode, of every instance. One trait, [`LiveState`]; this crate's
//! [`Local`] keeps it in memory. A Redis implementation backs the same trait in cluster mode.

use std::time::{Duration, Instant};

use aether_domain::{ApiFormat, ApiKeyId, GlobalModelId, ProviderKeyId};
use async_trait::async_trait;

/// Who a cache-affinity binding belongs to: a gateway key, the API format and the model —
/// and, when the client names one, its session (Claude Code, Codex), so parallel sessions of
/// one key can each keep their own prompt cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    pub api_key: ApiKeyId,
    pub format: ApiFormat,
    pub model: GlobalModelId,
    pub session: Option<String>,
}

#[async_trait]
pub trait LiveState: Send + Sync + 'static {
    /// The upstream key that last served this caller, if the binding is still fresh.
    async fn affinity_get(&self, key: &AffinityKey) -> Option<ProviderKeyId>;
    /// Binds (or refreshes) the caller to an upstream key for `ttl`.
    async fn affinity_set(&self, key: AffinityKey, target: ProviderKeyId, ttl: Duration);
    /// Drops the binding (the key failed with a non-client error).
    async fn affinity_drop(&self, key: &AffinityKey);

    /// Rests an upstream key until `until` (an upstream `Retry-After`).
    async fn cool_down(&self, key: ProviderKeyId, until: Instant);
    /// Which of `keys` are resting now.
    async fn cooling(&self, keys: &[ProviderKeyId]) -> Vec<ProviderKeyId>;
}

/// In-process live state.
pub struct Local {
    affinity: moka::sync::Cache<AffinityKey, (ProviderKeyId, Instant)>,
    cooldowns: moka::sync::Cache<ProviderKeyId, Instant>,
}

impl Default for Local {
    fn default() -> Self {
        Self {
            affinity: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                // Bindings carry their own TTL (the key's cache TTL); this bounds stale memory.
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
            cooldowns: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
        }
    }
}

#[async_trait]
impl LiveState for Local {
    async fn affinity_get(&self, key: &AffinityKey) -> Option<ProviderKeyId> {
        match self.affinity.get(key) {
            Some((target, until)) if Instant::now() < until => Some(target),
            Some(_) => {
                self.affinity.invalidate(key);
                None
            }
            None => None,
        }
    }

    async fn affinity_set(&self, key: AffinityKey, target: ProviderKeyId, ttl: Duration) {
        self.affinity.insert(key, (target, Instant::now() + ttl));
    }

    async fn affinity_drop(&self, key: &AffinityKey) {
        self.affinity.invalidate(key);
    }

    async fn cool_down(&self, key: ProviderKeyId, until: Instant) {
        let later = self.cooldowns.get(&key).map_or(until, |old| old.max(until));
        self.cooldowns.insert(key, later);
    }

    async fn cooling(&self, keys: &[ProviderKeyId]) -> Vec<ProviderKeyId> {
        let now = Instant::now();
        keys.iter()
            .copied()
            .filter(|k| self.cooldowns.get(k).is_some_and(|until| now < until))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bindings_expire_and_can_be_dropped() {
        let s = Local::default();
        let k = AffinityKey {
            api_key: ApiKeyId::new(),
            format: ApiFormat::Claude,
            model: GlobalModelId::new(),
            session: None,
        };
        let target = ProviderKeyId::new();
        assert_eq!(s.affinity_get(&k).await, None);
        s.affinity_set(k.clone(), target, Duration::from_secs(60))
            .await;
        assert_eq!(s.affinity_get(&k).await, Some(target));
        let other_session = AffinityKey {
            session: Some("s2".into()),
            ..k.clone()
        };
        assert_eq!(
            s.affinity_get(&other_session).await,
            None,
            "sessions are bound separately"
        );
        s.affinity_drop(&k).await;
        assert_eq!(s.affinity_get(&k).await, None);
        s.affinity_set(k.clone(), target, Duration::from_millis(1))
            .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(s.affinity_get(&k).await, None, "expired");
    }

    #[tokio::test]
    async fn cooldowns_keep_the_latest_deadline() {
        let s = Local::default();
        let (a, b) = (ProviderKeyId::new(), ProviderKeyId::new());
        assert!(s.cooling(&[a, b]).await.is_empty());
        s.cool_down(a, Instant::now() + Duration::from_secs(60))
            .await;
        s.cool_down(a, Instant::now()).await;
        assert_eq!(
            s.cooling(&[a, b]).await,
            vec![a],
            "a shorter Retry-After does not shorten the rest"
        );
        s.cool_down(b, Instant::now()).await;
        assert_eq!(s.cooling(&[b]).await, Vec::<ProviderKeyId>::new());
    }
}
