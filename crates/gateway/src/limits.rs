//! Limits on the request path (SPEC §4–5), over the [`LiveState`]:
//!
//! * the caller's own limits before anything is forwarded — its key's RPM window and
//!   concurrency lease, and a **budget reservation** (quota or balance) of an upper estimate
//!   of the cost, settled to the actual cost when the request ends;
//! * per candidate, just before it is tried — the key's circuit breaker, concurrency leases on
//!   the endpoint and the key (fixed or adaptive limit; callers without cache affinity may use
//!   only `limit × (1 − r)`), and the RPM windows of the key and its provider. A candidate
//!   that is full is skipped, not waited for.
//!
//! Leases are per request with a deadline and are held until the response — or the stream —
//! ends (they live in the request's [`Finish`](crate::relay::Finish)).
//!
//! A reservation refused because the shared ledger (Redis) is out of reach is not an
//! exhausted budget: it is answered 503 ([`budget_refusal`]), so a caller is never told to
//! top up because of an outage.

use std::sync::Arc;
use std::time::Duration;

use aether_coord::adaptive::usable_slots;
use aether_coord::breaker::Gate;
use aether_coord::{BudgetAccount, BudgetRefused, Lease, LiveState, Scope};
use aether_domain::entities::{GlobalModel, Provider};
use aether_domain::{Timestamp, Usd};
use aether_protocol::errors::ErrorKind;

use crate::error::GwError;
use crate::plan::Candidate;
use crate::snapshot::Caller;

/// A reservation held against a caller's budget until the request ends.
#[derive(Debug, Clone, Copy)]
pub struct Reservation {
    pub account: BudgetAccount,
    /// The account's settled spend as the snapshot knows it (seeds a fresh account).
    pub seed: Usd,
    pub amount: Usd,
}

/// The caller's budget: a user's quota for the current period, or a standalone key's
/// balance (as `used = −balance` against a limit of 0). `None`: unlimited.
#[must_use]
pub fn caller_budget(caller: &Caller, now: Timestamp) -> Option<(BudgetAccount, Usd, Usd)> {
    match &caller.user {
        Some(user) => {
            let quota = user.quota_usd?;
            let start = user.quota_period.period_start(now).map(Timestamp::millis);
            Some((
                BudgetAccount::User(user.id, start),
                user.period_used(now),
                quota,
            ))
        }
        None if caller.key.is_standalone => Some((
            BudgetAccount::Standalone(caller.key.id),
            -caller.key.balance_usd,
            Usd::ZERO,
        )),
        None => None,
    }
}

/// The usage `error_type` of a request refused because the live state could not be reached.
pub const LIVE_STATE_UNAVAILABLE: &str = "live_state_unavailable";

/// The answer to a refused caller reservation, and the usage record's `error_type`: an
/// exhausted budget is a 429 (`quota_exhausted`) until it renews or is topped up; a ledger out
/// of reach is a 503 (`live_state_unavailable`) with `Retry-After: 1` — the request fails
/// closed (nothing is spent without the shared ledger), but the caller's money is not the
/// problem and a retry after the outage succeeds.
#[must_use]
pub fn budget_refusal(refused: BudgetRefused, standalone: bool) -> (GwError, &'static str) {
    match refused {
        BudgetRefused::Exhausted(_) => (
            GwError::quota(if standalone {
                "balance exhausted; ask for a top-up"
            } else {
                "quota exhausted for this period"
            }),
            "quota_exhausted",
        ),
        BudgetRefused::Unavailable => (
            GwError::new(
                ErrorKind::Unavailable,
                "live state unavailable: the gateway cannot check this key's quota or balance right now; retry shortly",
            )
            .retry_after(Some(1)),
            LIVE_STATE_UNAVAILABLE,
        ),
    }
}

/// A provider's period quota: its account, settled spend and quota. `None`: no quota.
#[must_use]
pub fn provider_budget(p: &Provider, now: Timestamp) -> Option<(BudgetAccount, Usd, Usd)> {
    let quota = p.quota_usd?;
    let start = p.period_start(now).map(Timestamp::millis);
    Some((
        BudgetAccount::Provider(p.id, start),
        p.period_used(now),
        quota,
    ))
}

/// Output tokens assumed when a request does not cap them and the model states no limit.
const DEFAULT_MAX_OUTPUT: u64 = 4096;

/// An upper estimate of what a request can cost across its candidates: input tokens from the
/// body size (a token is at least ~3 bytes of JSON text), every input token at the dearest of
/// the input and cache-write prices, `max_tokens` of output, the per-request price — at the
/// tier the estimated context falls in, on the dearest candidate.
#[must_use]
pub fn estimate(
    body_len: usize,
    max_tokens: Option<u64>,
    model: &GlobalModel,
    candidates: &[Candidate],
) -> Usd {
    let input = (body_len as u64).div_ceil(3);
    let output = max_tokens
        .or(model.capabilities.output_limit)
        .unwrap_or(DEFAULT_MAX_OUTPUT);
    candidates
        .iter()
        .filter_map(|c| {
            let pricing = c.route.model.effective_pricing(model)?;
            let (_, tier) = pricing.tier_for(input)?;
            let p = tier.unit_prices();
            let input_price = p.input.max(p.cache_creation_5m).max(p.cache_creation_1h);
            let per_request = c
                .route
                .model
                .effective_price_per_request(model)
                .unwrap_or(Usd::ZERO);
            Some(
                Usd::per_million(input, input_price)
                    + Usd::per_million(output, p.output)
                    + per_request,
            )
        })
        .max()
        .unwrap_or(Usd::ZERO)
}

/// Why a candidate was passed over just before its attempt.
#[derive(Debug)]
pub struct Passed {
    pub reason: &'static str,
    /// For limits that free up by themselves: when to retry (seconds).
    pub retry_after: Option<u64>,
    /// Whether the reason is a capacity limit (all such → 429) rather than ill health.
    pub capacity: bool,
}

/// What a candidate holds while it is tried.
pub struct Admitted {
    pub leases: Vec<Lease>,
    /// Admitted as a half-open breaker's probe.
    pub probe: bool,
    /// Requests in flight on the key, this one included.
    pub key_in_use: u32,
}

/// Takes what trying `cand` needs, or says why not.
pub async fn admit_candidate(
    live: &Arc<dyn LiveState>,
    cand: &Candidate,
    lease_ttl: Duration,
) -> Result<Admitted, Passed> {
    let route = &cand.route;
    let key = &route.key.key;
    let ep = &route.endpoint.endpoint;
    let probe = match live.breaker_admit(key.id).await {
        Gate::Pass => false,
        Gate::Probe => true,
        Gate::Blocked { .. } => {
            return Err(Passed {
                reason: "circuit breaker open",
                retry_after: None,
                capacity: false,
            });
        }
    };
    let give_back = |p: Passed| async move {
        if probe {
            live.breaker_release_probe(key.id).await;
        }
        Err(p)
    };
    let mut leases = Vec::with_capacity(2);
    if let Some(limit) = ep.max_concurrent {
        match Lease::acquire(live, Scope::Endpoint(ep.id), limit, lease_ttl).await {
            Some(l) => leases.push(l),
            None => {
                return give_back(Passed {
                    reason: "endpoint at its concurrency limit",
                    retry_after: Some(1),
                    capacity: true,
                })
                .await;
            }
        }
    }
    let (learned, r) = live.adaptive_limit(key.id).await;
    let limit = key.max_concurrent.unwrap_or(learned);
    let usable = usable_slots(limit, r, cand.affinity);
    let Some(lease) = Lease::acquire(live, Scope::ProviderKey(key.id), usable, lease_ttl).await
    else {
        return give_back(Passed {
            reason: if usable < limit {
                "upstream key at its concurrency limit for new callers"
            } else {
                "upstream key at its concurrency limit"
            },
            retry_after: Some(1),
            capacity: true,
        })
        .await;
    };
    let key_in_use = lease.in_use;
    leases.push(lease);
    let mut windows = Vec::with_capacity(2);
    if let Some(n) = key.rate_limit {
        windows.push((Scope::ProviderKey(key.id), n));
    }
    if let Some(n) = route.provider.rpm_limit {
        windows.push((Scope::Provider(route.provider.id), n));
    }
    if !windows.is_empty()
        && let Err(d) = live.rpm_hit(&windows).await
    {
        return give_back(Passed {
            reason: if matches!(d.scope, Scope::Provider(_)) {
                "provider requests-per-minute limit reached"
            } else {
                "upstream key requests-per-minute limit reached"
            },
            retry_after: Some(d.retry_after_secs),
            capacity: true,
        })
        .await;
    }
    if key.max_concurrent.is_none() {
        live.adaptive_sample(key.id, key_in_use).await;
    }
    Ok(Admitted {
        leases,
        probe,
        key_in_use,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use aether_coord::{Clock as _, Local, ManualClock};
    use aether_domain::entities::{ApiKey, QuotaPeriod, Role, User};
    use aether_domain::{ApiKeyId, UserId};

    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn caller(quota: &str, used: &str, period_started: Timestamp) -> Caller {
        let user = User {
            id: UserId::new(),
            email: "u@example.com".into(),
            username: "u".into(),
            password_hash: String::new(),
            role: Role::User,
            is_active: true,
            quota_usd: Some(quota.parse().unwrap()),
            used_usd: used.parse().unwrap(),
            total_usd: used.parse().unwrap(),
            quota_period: QuotaPeriod::Daily,
            period_started_at: Some(period_started),
            allowed_providers: None,
            allowed_api_formats: None,
            allowed_models: None,
            model_capability_settings: BTreeMap::new(),
            last_login_at: None,
            created_at: period_started,
            updated_at: period_started,
        };
        let key = ApiKey {
            id: ApiKeyId::new(),
            user_id: Some(user.id),
            key_hash: String::new(),
            key_display: String::new(),
            name: "k".into(),
            is_active: true,
            is_standalone: false,
            balance_usd: Usd::ZERO,
            expires_at: None,
            auto_delete_on_expiry: false,
            allowed_providers: None,
            allowed_api_formats: None,
            allowed_models: None,
            force_capabilities: Vec::new(),
            rate_limit: None,
            concurrent_limit: None,
            total_requests: 0,
            total_cost_usd: Usd::ZERO,
            last_used_at: None,
            created_by: None,
            created_at: period_started,
            updated_at: period_started,
        };
        Caller {
            key,
            user: Some(user),
        }
    }

    /// The daily quota renews at the UTC day boundary: the same caller, exhausted at 23:59,
    /// is admitted again at 00:00 — by the live state alone, before any job resets the
    /// stored spend.
    #[tokio::test]
    async fn a_daily_quota_resets_at_the_period_boundary() {
        let clock = ManualClock::at(at("2026-03-01T23:59:00Z").millis());
        let live: Arc<dyn LiveState> = Arc::new(Local::with_clock(clock.clone()));
        let c = caller("1", "0.99", at("2026-03-01T08:00:00Z"));
        let cost = "0.02".parse::<Usd>().unwrap();

        let now = Timestamp::from_millis(clock.now_ms());
        let (account, seed, limit) = caller_budget(&c, now).unwrap();
        assert_eq!(seed, "0.99".parse().unwrap());
        live.budget_reserve(account, seed, limit, cost)
            .await
            .unwrap();
        live.budget_settle(account, seed, cost, cost);
        assert!(
            live.budget_reserve(account, seed, limit, cost)
                .await
                .is_err(),
            "1.01 of 1 used"
        );

        clock.set(at("2026-03-02T00:00:00Z").millis());
        let now = Timestamp::from_millis(clock.now_ms());
        let (next, seed, limit) = caller_budget(&c, now).unwrap();
        assert_ne!(next, account, "a new period is a new account");
        assert_eq!(seed, Usd::ZERO, "nothing spent yet this period");
        assert!(live.budget_reserve(next, seed, limit, cost).await.is_ok());
        assert_eq!(
            c.user.as_ref().unwrap().quota_period.period_start(now),
            Some(at("2026-03-02T00:00:00Z"))
        );
    }

    /// An outage of the ledger is a 503 in every dialect, distinct from an exhausted quota
    /// (429) — never "quota exhausted" or "ask for a top-up".
    #[test]
    fn an_unreachable_ledger_is_a_503_not_an_exhausted_quota() {
        use aether_domain::format::Dialect;

        let (e, error_type) = budget_refusal(BudgetRefused::Unavailable, true);
        assert_eq!(error_type, LIVE_STATE_UNAVAILABLE);
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(
            e.message.starts_with("live state unavailable"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("exhausted") && !e.message.contains("top-up"));
        for d in [
            Dialect::AnthropicMessages,
            Dialect::OpenaiChat,
            Dialect::OpenaiResponses,
            Dialect::Gemini,
        ] {
            assert_eq!(e.render(d).status(), 503, "{d:?}");
        }
        assert_eq!(
            e.render(Dialect::AnthropicMessages).headers()["retry-after"],
            "1"
        );

        let view = aether_coord::BudgetView::default();
        let (e, error_type) = budget_refusal(BudgetRefused::Exhausted(view), false);
        assert_eq!(
            (e.kind, e.message.as_str(), error_type),
            (
                ErrorKind::RateLimited,
                "quota exhausted for this period",
                "quota_exhausted"
            )
        );
        let (e, _) = budget_refusal(BudgetRefused::Exhausted(view), true);
        assert_eq!(e.message, "balance exhausted; ask for a top-up");
    }

    #[test]
    fn a_standalone_key_spends_its_balance() {
        let mut c = caller("1", "0", at("2026-03-01T00:00:00Z"));
        c.user = None;
        c.key.is_standalone = true;
        c.key.balance_usd = "2.5".parse().unwrap();
        let (account, seed, limit) = caller_budget(&c, Timestamp::now()).unwrap();
        assert_eq!(account, BudgetAccount::Standalone(c.key.id));
        assert_eq!((seed, limit), ("-2.5".parse().unwrap(), Usd::ZERO));
    }
}
