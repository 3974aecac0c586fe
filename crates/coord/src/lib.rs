//! Live state shared by every request: what must be seen alike by all requests of one process
//! — and, in cluster mode, of every instance. One trait, [`LiveState`]; this crate's
//! [`Local`] keeps it in memory; [`RedisLive`] backs the same trait in cluster mode,
//! so every operation is shaped to be one atomic round trip (a Lua script there, one mutex
//! section here):
//!
//! * cache affinity (bindings and hit/switch/new counters per API format) and `Retry-After`
//!   cooldowns;
//! * concurrency **leases** per endpoint, upstream key and gateway key — per request, with a
//!   deadline, so a holder that dies cannot leak a slot;
//! * **RPM** sliding windows, checked and counted for several scopes all-or-nothing;
//! * the **circuit breaker** and health of each upstream key ([`breaker`]);
//! * **adaptive concurrency** of upstream keys without a fixed limit ([`adaptive`]);
//! * **budgets**: quota and balance reservations, settled to the actual cost.
//!
//! Time comes from a [`Clock`], so tests can move it.

pub mod adaptive;
pub mod breaker;
pub mod redis;

pub use crate::redis::{RedisConfig, RedisLive};

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aether_domain::{
    ApiFormat, ApiKeyId, EndpointId, GlobalModelId, ProviderId, ProviderKeyId, Timestamp, Usd,
    UserId,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::adaptive::{Adaptive, LimitChange};
use crate::breaker::{Breaker, BreakerView, Gate};

/// Milliseconds since the Unix epoch, from the wall clock or a test's hand.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        Timestamp::now().millis()
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    #[must_use]
    pub fn at(ms: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(ms)))
    }
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(
            i64::try_from(by.as_millis()).unwrap_or(i64::MAX),
            Ordering::SeqCst,
        );
    }
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

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

/// A live cache-affinity binding, as operators see it: who, to which upstream key, and for
/// how much longer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AffinityBinding {
    pub api_key: ApiKeyId,
    pub format: ApiFormat,
    pub model: GlobalModelId,
    pub session: Option<String>,
    pub target: ProviderKeyId,
    /// Whole seconds until the binding lapses.
    pub ttl_secs: u64,
}

/// What cache affinity did for one request that an upstream key served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AffinityOutcome {
    /// A binding existed and its upstream key served the request.
    Hit,
    /// A binding existed but another key served the request (the bound key failed, was
    /// skipped or is gone); the binding moved to that key.
    Switch,
    /// No binding existed; the request made one.
    New,
}

impl AffinityOutcome {
    pub const ALL: [Self; 3] = [Self::Hit, Self::Switch, Self::New];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Switch => "switch",
            Self::New => "new",
        }
    }
}

/// Requests counted per cache-affinity outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AffinityCounts {
    pub hits: u64,
    pub switches: u64,
    pub new: u64,
}

impl AffinityCounts {
    pub fn add(&mut self, outcome: AffinityOutcome, n: u64) {
        let c = match outcome {
            AffinityOutcome::Hit => &mut self.hits,
            AffinityOutcome::Switch => &mut self.switches,
            AffinityOutcome::New => &mut self.new,
        };
        *c = c.saturating_add(n);
    }

    pub fn merge(&mut self, other: &Self) {
        self.hits = self.hits.saturating_add(other.hits);
        self.switches = self.switches.saturating_add(other.switches);
        self.new = self.new.saturating_add(other.new);
    }

    #[must_use]
    pub const fn total(&self) -> u64 {
        self.hits
            .saturating_add(self.switches)
            .saturating_add(self.new)
    }

    /// Share of the counted requests that found their binding and kept it, in [0, 1];
    /// `None` when nothing was counted.
    #[must_use]
    #[allow(clippy::cast_precision_loss)] // a display ratio
    pub fn hit_rate(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| self.hits as f64 / total as f64)
    }
}

/// One API format's counts: since counting began, and inside the asked window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AffinityFormatCounts {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub format: ApiFormat,
    pub total: AffinityCounts,
    pub window: AffinityCounts,
}

/// One bucket of the window (every format together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AffinityBucket {
    /// Start of the bucket, ms since the epoch.
    pub start_ms: i64,
    pub counts: AffinityCounts,
}

/// Width of an affinity-statistics bucket, and how many are kept (one hour).
pub const AFFINITY_BUCKET_SECS: u64 = 60;
pub const AFFINITY_BUCKETS: usize = 60;

/// Cache-affinity outcomes per API format over a recent window of one-minute buckets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AffinityStats {
    /// When counting began (this process's start for [`Local`]), ms since the epoch.
    pub since_ms: i64,
    /// Start of the window's oldest bucket, ms since the epoch.
    pub window_start_ms: i64,
    pub bucket_secs: u64,
    /// Every API format, in [`ApiFormat::ALL`] order.
    pub formats: Vec<AffinityFormatCounts>,
    /// The window's buckets, oldest first, the current (partial) one last.
    pub buckets: Vec<AffinityBucket>,
}

/// What a concurrency lease or an RPM window counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Scope {
    Endpoint(EndpointId),
    ProviderKey(ProviderKeyId),
    Provider(ProviderId),
    ApiKey(ApiKeyId),
}

/// One held concurrency slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId(pub u64);

/// An RPM window refused: the earliest retry, in whole seconds (≥ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpmDenied {
    pub scope: Scope,
    pub retry_after_secs: u64,
}

/// Whose money a reservation is held against. Users' accounts are per quota period (the
/// period's start, ms), so a new period starts from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetAccount {
    User(UserId, Option<i64>),
    Standalone(ApiKeyId),
    Provider(ProviderId, Option<i64>),
}

/// An account's live figures: `used` (settled spend; for a standalone key, minus its
/// balance) and the sum of outstanding reservations. Headroom is `limit − used − reserved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BudgetView {
    pub used: Usd,
    pub reserved: Usd,
}

/// Why a budget reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetRefused {
    /// The account has no headroom left; its live figures.
    Exhausted(BudgetView),
    /// The shared ledger (Redis) could not be reached. Nothing is spent without it — every
    /// instance would otherwise spend the full headroom — but the caller is not out of money:
    /// the request is answered as a service outage, not as an exhausted quota.
    Unavailable,
}

/// The kinds of live-state call whose failures are counted: the `op` label of
/// `aether_live_state_errors_total`. A fixed set, so the label stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LiveOp {
    Affinity,
    Cooldown,
    Lease,
    Rpm,
    /// Circuit breakers and the health they keep.
    Breaker,
    Adaptive,
    /// Quota and balance reservations, settlements and adjustments.
    Budget,
}

impl LiveOp {
    pub const ALL: [Self; 7] = [
        Self::Affinity,
        Self::Cooldown,
        Self::Lease,
        Self::Rpm,
        Self::Breaker,
        Self::Adaptive,
        Self::Budget,
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Affinity => "affinity",
            Self::Cooldown => "cooldown",
            Self::Lease => "lease",
            Self::Rpm => "rpm",
            Self::Breaker => "breaker",
            Self::Adaptive => "adaptive",
            Self::Budget => "budget",
        }
    }
}

/// Failed live-state calls since start, per [`LiveOp`] (indexed in [`LiveOp::ALL`] order).
pub type LiveErrors = [u64; LiveOp::ALL.len()];

#[async_trait]
pub trait LiveState: Send + Sync + 'static {
    /// The clock every rule of this state is judged by.
    fn now_ms(&self) -> i64;

    /// Calls that failed since start because the shared store could not be reached (each
    /// fell back to per-instance state or failed closed). Read at scrape time, so keeping
    /// it costs the request path nothing. In-process state never fails: all zero.
    fn errors(&self) -> LiveErrors {
        [0; LiveOp::ALL.len()]
    }

    /// Readiness of the shared store: `None` when there is none (in-process state), else
    /// whether it answers a round trip now (`Err` says why not).
    async fn ping(&self) -> Option<Result<(), String>> {
        None
    }

    /// The upstream key that last served this caller, if the binding is still fresh.
    async fn affinity_get(&self, key: &AffinityKey) -> Option<ProviderKeyId>;
    /// Binds (or refreshes) the caller to an upstream key for `ttl`.
    async fn affinity_set(&self, key: AffinityKey, target: ProviderKeyId, ttl: Duration);
    /// Drops the binding (the key failed with a non-client error).
    async fn affinity_drop(&self, key: &AffinityKey);
    /// Up to `limit` live bindings, in no particular order (the console's listing).
    async fn affinity_list(&self, limit: usize) -> Vec<AffinityBinding>;
    /// Drops every binding (admin "clear all").
    async fn affinity_clear(&self);
    /// Counts what affinity did for one served request (once per request, when the serving
    /// key is known). One atomic step: a counter increment in the current minute's bucket (in
    /// Redis: `INCR` on a key named by format, outcome and minute, expiring after an hour, and
    /// `HINCRBY` on the since-start totals).
    async fn affinity_record(&self, format: ApiFormat, outcome: AffinityOutcome);
    /// The counts per format since counting began and over the last `window` (whole minutes,
    /// 1 to [`AFFINITY_BUCKETS`]), with the window's buckets.
    async fn affinity_stats(&self, window: Duration) -> AffinityStats;

    /// Rests an upstream key until `until` (an upstream `Retry-After`).
    async fn cool_down(&self, key: ProviderKeyId, until: Instant);
    /// Which of `keys` are resting now.
    async fn cooling(&self, keys: &[ProviderKeyId]) -> Vec<ProviderKeyId>;

    /// Takes a slot of `scope` if fewer than `limit` live leases hold it; the lease lapses
    /// after `ttl` unless released. Returns the lease and the slots in use including it.
    async fn lease_acquire(
        &self,
        scope: Scope,
        limit: u32,
        ttl: Duration,
    ) -> Option<(LeaseId, u32)>;
    /// Gives a slot back (idempotent). Synchronous so a drop guard can call it.
    fn lease_release(&self, scope: Scope, id: LeaseId);
    /// Live leases of `scope`.
    async fn lease_count(&self, scope: Scope) -> u32;

    /// Counts one request in every window of `scopes` (scope, requests per minute) — or in
    /// none, if any window is full.
    async fn rpm_hit(&self, scopes: &[(Scope, u32)]) -> Result<(), RpmDenied>;

    /// May a request use this upstream key now (takes a probe slot when half-open)?
    async fn breaker_admit(&self, key: ProviderKeyId) -> Gate;
    /// Reports an attempt's result (never for a client error).
    async fn breaker_record(&self, key: ProviderKeyId, ok: bool);
    /// An attempt admitted as a probe ended without a verdict.
    async fn breaker_release_probe(&self, key: ProviderKeyId);
    async fn breaker_view(&self, key: ProviderKeyId) -> BreakerView;
    /// Admin reset: closed and healthy.
    async fn breaker_reset(&self, key: ProviderKeyId);

    /// The learned limit of a key without a fixed one, and the reservation ratio r.
    async fn adaptive_limit(&self, key: ProviderKeyId) -> (u32, f64);
    /// A request started on the key with `in_use` slots taken (itself included).
    async fn adaptive_sample(&self, key: ProviderKeyId, in_use: u32);
    /// A 429 from the key; `concurrency` when the rate-limit headers say it was not a
    /// requests- or tokens-per-minute limit. `in_use`: requests in flight on it then.
    async fn adaptive_429(&self, key: ProviderKeyId, concurrency: bool, in_use: u32);
    /// The result of an attempt on the key (confidence for r).
    async fn adaptive_outcome(&self, key: ProviderKeyId, ok: bool);
    async fn adaptive_history(&self, key: ProviderKeyId) -> Vec<LimitChange>;

    /// Reserves `amount` against `account` if it has headroom left (`used + reserved <
    /// limit`); `seed_used` initialises an account this state has not seen. Overshoot is
    /// therefore bounded by one reservation per concurrent request at the edge.
    ///
    /// # Errors
    /// [`BudgetRefused::Exhausted`] without headroom; [`BudgetRefused::Unavailable`] when the
    /// shared ledger cannot be reached (budgets fail closed).
    async fn budget_reserve(
        &self,
        account: BudgetAccount,
        seed_used: Usd,
        limit: Usd,
        amount: Usd,
    ) -> Result<(), BudgetRefused>;
    /// Replaces a reservation by the actual charge (`reserved` may be zero: a plain charge).
    /// Synchronous so a request's drop guard can settle.
    fn budget_settle(&self, account: BudgetAccount, seed_used: Usd, reserved: Usd, actual: Usd);
    /// Moves `used` by `delta` (admin top-ups and adjustments), if the account is live.
    async fn budget_adjust(&self, account: BudgetAccount, delta: Usd);
    /// Drops the account so the next use seeds it again (admin reset of a user's spend).
    async fn budget_forget(&self, account: BudgetAccount);
    async fn budget_view(&self, account: BudgetAccount, seed_used: Usd) -> BudgetView;
}

/// A held lease; dropping it gives the slot back.
pub struct Lease {
    live: Arc<dyn LiveState>,
    pub scope: Scope,
    pub id: LeaseId,
    /// Slots in use when it was taken (itself included).
    pub in_use: u32,
}

impl Lease {
    /// Takes a slot, or `None` when the scope is full.
    pub async fn acquire(
        live: &Arc<dyn LiveState>,
        scope: Scope,
        limit: u32,
        ttl: Duration,
    ) -> Option<Self> {
        let (id, in_use) = live.lease_acquire(scope, limit, ttl).await?;
        Some(Self {
            live: live.clone(),
            scope,
            id,
            in_use,
        })
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("scope", &self.scope)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.live.lease_release(self.scope, self.id);
    }
}

#[derive(Debug, Clone, Copy)]
struct Account {
    used: i64,
    reserved: i64,
}

/// In-process affinity counters: totals per format and a ring of one-minute buckets (slot =
/// minute mod [`AFFINITY_BUCKETS`]; a slot holding an older minute is stale and reset on use).
struct AffinityTally {
    since_ms: i64,
    total: [AffinityCounts; ApiFormat::ALL.len()],
    ring: Vec<(i64, [AffinityCounts; ApiFormat::ALL.len()])>,
}

impl AffinityTally {
    fn new(since_ms: i64) -> Self {
        Self {
            since_ms,
            total: Default::default(),
            ring: vec![(i64::MIN, Default::default()); AFFINITY_BUCKETS],
        }
    }
}

const AFFINITY_BUCKET_MS: i64 = 60_000;

fn format_slot(format: ApiFormat) -> usize {
    ApiFormat::ALL
        .iter()
        .position(|f| *f == format)
        .unwrap_or_default()
}

fn ring_slot(minute: i64) -> usize {
    usize::try_from(minute.rem_euclid(AFFINITY_BUCKETS as i64)).unwrap_or_default()
}

/// In-process live state.
pub struct Local {
    clock: Arc<dyn Clock>,
    affinity: moka::sync::Cache<AffinityKey, (ProviderKeyId, Instant)>,
    affinity_tally: Mutex<AffinityTally>,
    cooldowns: moka::sync::Cache<ProviderKeyId, Instant>,
    next_lease: AtomicU64,
    leases: Mutex<HashMap<Scope, HashMap<LeaseId, i64>>>,
    windows: Mutex<HashMap<Scope, VecDeque<i64>>>,
    breakers: Mutex<HashMap<ProviderKeyId, Breaker>>,
    adaptive: Mutex<HashMap<ProviderKeyId, Adaptive>>,
    budgets: Mutex<HashMap<BudgetAccount, Account>>,
}

impl Default for Local {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these cannot leave a half-applied rule behind (every
    // section is a few field updates), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

const RPM_WINDOW_MS: i64 = 60_000;

impl Local {
    #[must_use]
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let now = clock.now_ms();
        Self {
            clock,
            affinity_tally: Mutex::new(AffinityTally::new(now)),
            affinity: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                // Bindings carry their own TTL (the key's cache TTL); this bounds stale memory.
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
            cooldowns: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
            next_lease: AtomicU64::new(1),
            leases: Mutex::default(),
            windows: Mutex::default(),
            breakers: Mutex::default(),
            adaptive: Mutex::default(),
            budgets: Mutex::default(),
        }
    }
}

#[async_trait]
impl LiveState for Local {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

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

    async fn affinity_list(&self, limit: usize) -> Vec<AffinityBinding> {
        let now = Instant::now();
        self.affinity
            .iter()
            .filter(|(_, (_, until))| now < *until)
            .take(limit)
            .map(|(k, (target, until))| AffinityBinding {
                api_key: k.api_key,
                format: k.format,
                model: k.model,
                session: k.session.clone(),
                target,
                ttl_secs: until.duration_since(now).as_secs(),
            })
            .collect()
    }

    async fn affinity_clear(&self) {
        self.affinity.invalidate_all();
    }

    async fn affinity_record(&self, format: ApiFormat, outcome: AffinityOutcome) {
        let minute = self.now_ms().div_euclid(AFFINITY_BUCKET_MS);
        let f = format_slot(format);
        let mut t = lock(&self.affinity_tally);
        t.total[f].add(outcome, 1);
        let slot = &mut t.ring[ring_slot(minute)];
        if slot.0 != minute {
            *slot = (minute, Default::default());
        }
        slot.1[f].add(outcome, 1);
    }

    async fn affinity_stats(&self, window: Duration) -> AffinityStats {
        let minutes = i64::try_from(window.as_secs() / AFFINITY_BUCKET_SECS)
            .unwrap_or(i64::MAX)
            .clamp(1, AFFINITY_BUCKETS as i64);
        let now_minute = self.now_ms().div_euclid(AFFINITY_BUCKET_MS);
        let first = now_minute - minutes + 1;
        let t = lock(&self.affinity_tally);
        let mut window_counts: [AffinityCounts; ApiFormat::ALL.len()] = Default::default();
        let mut buckets = Vec::with_capacity(usize::try_from(minutes).unwrap_or_default());
        for minute in first..=now_minute {
            let (at, per_format) = &t.ring[ring_slot(minute)];
            let mut counts = AffinityCounts::default();
            if *at == minute {
                for (w, c) in window_counts.iter_mut().zip(per_format) {
                    w.merge(c);
                    counts.merge(c);
                }
            }
            buckets.push(AffinityBucket {
                start_ms: minute.saturating_mul(AFFINITY_BUCKET_MS),
                counts,
            });
        }
        AffinityStats {
            since_ms: t.since_ms,
            window_start_ms: first.saturating_mul(AFFINITY_BUCKET_MS),
            bucket_secs: AFFINITY_BUCKET_SECS,
            formats: ApiFormat::ALL
                .iter()
                .zip(t.total.iter().zip(window_counts))
                .map(|(&format, (&total, window))| AffinityFormatCounts {
                    format,
                    total,
                    window,
                })
                .collect(),
            buckets,
        }
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

    async fn lease_acquire(
        &self,
        scope: Scope,
        limit: u32,
        ttl: Duration,
    ) -> Option<(LeaseId, u32)> {
        let now = self.now_ms();
        let mut all = lock(&self.leases);
        let held = all.entry(scope).or_default();
        held.retain(|_, deadline| *deadline > now);
        if held.len() >= limit as usize {
            return None;
        }
        let id = LeaseId(self.next_lease.fetch_add(1, Ordering::Relaxed));
        held.insert(
            id,
            now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
        );
        Some((id, u32::try_from(held.len()).unwrap_or(u32::MAX)))
    }

    fn lease_release(&self, scope: Scope, id: LeaseId) {
        let mut all = lock(&self.leases);
        if let Some(held) = all.get_mut(&scope) {
            held.remove(&id);
            if held.is_empty() {
                all.remove(&scope);
            }
        }
    }

    async fn lease_count(&self, scope: Scope) -> u32 {
        let now = self.now_ms();
        lock(&self.leases).get(&scope).map_or(0, |held| {
            u32::try_from(held.values().filter(|d| **d > now).count()).unwrap_or(u32::MAX)
        })
    }

    async fn rpm_hit(&self, scopes: &[(Scope, u32)]) -> Result<(), RpmDenied> {
        let now = self.now_ms();
        let mut all = lock(&self.windows);
        for (scope, limit) in scopes {
            let w = all.entry(*scope).or_default();
            while w.front().is_some_and(|t| now - *t >= RPM_WINDOW_MS) {
                w.pop_front();
            }
            if w.len() >= *limit as usize {
                let oldest = w.front().copied().unwrap_or(now);
                let wait_ms = (oldest + RPM_WINDOW_MS - now).max(1);
                return Err(RpmDenied {
                    scope: *scope,
                    retry_after_secs: u64::try_from((wait_ms + 999) / 1000).unwrap_or(1),
                });
            }
        }
        for (scope, _) in scopes {
            all.entry(*scope).or_default().push_back(now);
        }
        Ok(())
    }

    async fn breaker_admit(&self, key: ProviderKeyId) -> Gate {
        let now = self.now_ms();
        lock(&self.breakers).entry(key).or_default().admit(now)
    }

    async fn breaker_record(&self, key: ProviderKeyId, ok: bool) {
        let now = self.now_ms();
        lock(&self.breakers).entry(key).or_default().record(now, ok);
    }

    async fn breaker_release_probe(&self, key: ProviderKeyId) {
        if let Some(b) = lock(&self.breakers).get_mut(&key) {
            b.release_probe();
        }
    }

    async fn breaker_view(&self, key: ProviderKeyId) -> BreakerView {
        let now = self.now_ms();
        lock(&self.breakers)
            .get(&key)
            .cloned()
            .unwrap_or_default()
            .view(now)
    }

    async fn breaker_reset(&self, key: ProviderKeyId) {
        lock(&self.breakers).remove(&key);
    }

    async fn adaptive_limit(&self, key: ProviderKeyId) -> (u32, f64) {
        let now = self.now_ms();
        let mut all = lock(&self.adaptive);
        let a = all.entry(key).or_insert_with(|| Adaptive::new(now));
        (a.limit, a.reserve_ratio(now))
    }

    async fn adaptive_sample(&self, key: ProviderKeyId, in_use: u32) {
        let now = self.now_ms();
        lock(&self.adaptive)
            .entry(key)
            .or_insert_with(|| Adaptive::new(now))
            .sample(now, in_use);
    }

    async fn adaptive_429(&self, key: ProviderKeyId, concurrency: bool, in_use: u32) {
        let now = self.now_ms();
        let mut all = lock(&self.adaptive);
        let a = all.entry(key).or_insert_with(|| Adaptive::new(now));
        if concurrency {
            a.on_concurrency_429(now, in_use);
        } else {
            a.on_other_429(now);
        }
    }

    async fn adaptive_outcome(&self, key: ProviderKeyId, ok: bool) {
        let now = self.now_ms();
        lock(&self.adaptive)
            .entry(key)
            .or_insert_with(|| Adaptive::new(now))
            .on_outcome(ok);
    }

    async fn adaptive_history(&self, key: ProviderKeyId) -> Vec<LimitChange> {
        lock(&self.adaptive)
            .get(&key)
            .map(|a| a.history.iter().cloned().collect())
            .unwrap_or_default()
    }

    async fn budget_reserve(
        &self,
        account: BudgetAccount,
        seed_used: Usd,
        limit: Usd,
        amount: Usd,
    ) -> Result<(), BudgetRefused> {
        let mut all = lock(&self.budgets);
        let a = all.entry(account).or_insert(Account {
            used: seed_used.nanos(),
            reserved: 0,
        });
        if a.used.saturating_add(a.reserved) >= limit.nanos() {
            return Err(BudgetRefused::Exhausted(BudgetView {
                used: Usd::from_nanos(a.used),
                reserved: Usd::from_nanos(a.reserved),
            }));
        }
        a.reserved = a.reserved.saturating_add(amount.nanos());
        Ok(())
    }

    fn budget_settle(&self, account: BudgetAccount, seed_used: Usd, reserved: Usd, actual: Usd) {
        let mut all = lock(&self.budgets);
        let a = all.entry(account).or_insert(Account {
            used: seed_used.nanos(),
            reserved: 0,
        });
        a.reserved = (a.reserved - reserved.nanos()).max(0);
        a.used = a.used.saturating_add(actual.nanos());
    }

    async fn budget_adjust(&self, account: BudgetAccount, delta: Usd) {
        if let Some(a) = lock(&self.budgets).get_mut(&account) {
            a.used = a.used.saturating_add(delta.nanos());
        }
    }

    async fn budget_forget(&self, account: BudgetAccount) {
        lock(&self.budgets).remove(&account);
    }

    async fn budget_view(&self, account: BudgetAccount, seed_used: Usd) -> BudgetView {
        lock(&self.budgets).get(&account).map_or(
            BudgetView {
                used: seed_used,
                reserved: Usd::ZERO,
            },
            |a| BudgetView {
                used: Usd::from_nanos(a.used),
                reserved: Usd::from_nanos(a.reserved),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerState;

    /// Makes the state under test with a manual clock at the given ms.
    type Make<'a> = &'a dyn Fn(i64) -> (Arc<ManualClock>, Arc<dyn LiveState>);

    async fn bindings_expire_and_can_be_dropped(mk: Make<'_>) {
        let (_, s) = mk(0);
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

    async fn bindings_can_be_listed_and_cleared(mk: Make<'_>) {
        let (_, s) = mk(0);
        let key = |session: Option<&str>| AffinityKey {
            api_key: ApiKeyId::new(),
            format: ApiFormat::OpenaiCli,
            model: GlobalModelId::new(),
            session: session.map(str::to_string),
        };
        let (a, b, gone) = (key(None), key(Some("s1")), key(None));
        let (ta, tb) = (ProviderKeyId::new(), ProviderKeyId::new());
        s.affinity_set(a.clone(), ta, Duration::from_secs(300))
            .await;
        s.affinity_set(b.clone(), tb, Duration::from_secs(60)).await;
        s.affinity_set(gone, ta, Duration::from_millis(1)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut list = s.affinity_list(10).await;
        list.sort_by_key(|b| std::cmp::Reverse(b.ttl_secs));
        assert_eq!(list.len(), 2, "the expired binding is left out: {list:?}");
        assert_eq!(
            (
                list[0].api_key,
                list[0].format,
                list[0].model,
                list[0].target
            ),
            (a.api_key, a.format, a.model, ta)
        );
        assert!(
            (295..=300).contains(&list[0].ttl_secs),
            "{}",
            list[0].ttl_secs
        );
        assert_eq!(list[1].session.as_deref(), Some("s1"));
        assert_eq!(list[1].target, tb);
        assert_eq!(s.affinity_list(1).await.len(), 1, "limited");
        s.affinity_clear().await;
        assert!(s.affinity_list(10).await.is_empty());
        assert_eq!(s.affinity_get(&a).await, None);
        assert_eq!(s.affinity_get(&b).await, None);
    }

    async fn affinity_outcomes_are_counted_per_format_and_minute(mk: Make<'_>) {
        let (clock, s) = mk(1_000 * 60_000 + 30_000); // half-way into minute 1000
        let empty = s.affinity_stats(Duration::from_secs(3600)).await;
        assert_eq!(empty.since_ms, 1_000 * 60_000 + 30_000);
        assert_eq!(empty.buckets.len(), 60);
        assert_eq!(empty.formats.len(), 6);
        assert!(empty.formats.iter().all(|f| f.total.total() == 0));
        assert_eq!(empty.formats[0].total.hit_rate(), None);

        s.affinity_record(ApiFormat::Claude, AffinityOutcome::New)
            .await;
        s.affinity_record(ApiFormat::Claude, AffinityOutcome::Hit)
            .await;
        s.affinity_record(ApiFormat::Claude, AffinityOutcome::Hit)
            .await;
        s.affinity_record(ApiFormat::Openai, AffinityOutcome::Switch)
            .await;
        clock.advance(Duration::from_secs(60)); // minute 1001
        s.affinity_record(ApiFormat::Claude, AffinityOutcome::Hit)
            .await;

        let st = s.affinity_stats(Duration::from_secs(3600)).await;
        let claude = st.formats.iter().find(|f| f.format == ApiFormat::Claude);
        let claude = claude.unwrap();
        let want = AffinityCounts {
            hits: 3,
            switches: 0,
            new: 1,
        };
        assert_eq!((claude.total, claude.window), (want, want));
        assert_eq!(claude.window.hit_rate(), Some(0.75));
        let openai = st.formats.iter().find(|f| f.format == ApiFormat::Openai);
        assert_eq!(openai.unwrap().window.switches, 1);
        // The last two buckets are minutes 1000 and 1001; the window ends with the current one.
        let n = st.buckets.len();
        assert_eq!(st.buckets[n - 1].start_ms, 1_001 * 60_000);
        assert_eq!(st.buckets[n - 1].counts.hits, 1);
        assert_eq!(st.buckets[n - 2].counts.total(), 4, "every format together");
        assert_eq!(st.window_start_ms, (1_001 - 59) * 60_000);

        // A one-minute window holds only the current minute.
        let st = s.affinity_stats(Duration::from_secs(60)).await;
        assert_eq!(st.buckets.len(), 1);
        assert_eq!(st.formats[0].window.total(), 1);
        assert_eq!(st.formats[0].total.total(), 4, "totals ignore the window");

        // An hour later the old minutes have left the window (and their ring slots are reused
        // without leaking old counts); the totals since start remain.
        clock.advance(Duration::from_secs(3600));
        s.affinity_record(ApiFormat::Claude, AffinityOutcome::Switch)
            .await;
        let st = s.affinity_stats(Duration::from_secs(3600)).await;
        let claude = st.formats[0];
        assert_eq!(
            claude.window,
            AffinityCounts {
                hits: 0,
                switches: 1,
                new: 0
            }
        );
        assert_eq!(claude.total.total(), 5);
        assert_eq!(
            st.buckets.iter().map(|b| b.counts.total()).sum::<u64>(),
            1,
            "{:?}",
            st.buckets
        );
        assert_eq!(
            s.affinity_stats(Duration::ZERO).await.buckets.len(),
            1,
            "a window is at least one minute"
        );
    }

    async fn cooldowns_keep_the_latest_deadline(mk: Make<'_>) {
        let (_, s) = mk(0);
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

    fn local_at(ms: i64) -> (Arc<ManualClock>, Arc<dyn LiveState>) {
        let clock = ManualClock::at(ms);
        (clock.clone(), Arc::new(Local::with_clock(clock)))
    }

    async fn leases_cap_a_scope_and_come_back_on_drop(mk: Make<'_>) {
        let (_, live) = mk(0);
        let scope = Scope::ProviderKey(ProviderKeyId::new());
        let ttl = Duration::from_secs(60);
        let a = Lease::acquire(&live, scope, 2, ttl).await.unwrap();
        let b = Lease::acquire(&live, scope, 2, ttl).await.unwrap();
        assert_eq!((a.in_use, b.in_use), (1, 2));
        assert!(Lease::acquire(&live, scope, 2, ttl).await.is_none(), "full");
        drop(a);
        assert_eq!(live.lease_count(scope).await, 1);
        assert!(Lease::acquire(&live, scope, 2, ttl).await.is_some());
        let other = Scope::Endpoint(EndpointId::new());
        assert!(
            Lease::acquire(&live, other, 1, ttl).await.is_some(),
            "scopes are separate"
        );
    }

    async fn a_lease_whose_holder_died_lapses_at_its_deadline(mk: Make<'_>) {
        let (clock, live) = mk(0);
        let scope = Scope::ApiKey(ApiKeyId::new());
        let held = Lease::acquire(&live, scope, 1, Duration::from_secs(30))
            .await
            .unwrap();
        std::mem::forget(held); // the holder never releases (a crashed request or instance)
        assert!(
            Lease::acquire(&live, scope, 1, Duration::from_secs(30))
                .await
                .is_none()
        );
        clock.advance(Duration::from_secs(31));
        assert_eq!(live.lease_count(scope).await, 0);
        assert!(
            Lease::acquire(&live, scope, 1, Duration::from_secs(30))
                .await
                .is_some()
        );
    }

    async fn rpm_windows_admit_exactly_n_per_minute_and_all_or_nothing(mk: Make<'_>) {
        let (clock, live) = mk(1_000_000);
        let key = Scope::ApiKey(ApiKeyId::new());
        for _ in 0..5 {
            assert!(live.rpm_hit(&[(key, 5)]).await.is_ok());
            clock.advance(Duration::from_secs(10));
        }
        // Five requests at t = 0, 10, …, 40 s; now t = 50 s.
        let denied = live.rpm_hit(&[(key, 5)]).await.unwrap_err();
        assert_eq!(
            denied.retry_after_secs, 10,
            "the first request leaves at t = 60 s"
        );
        clock.advance(Duration::from_secs(10));
        assert!(
            live.rpm_hit(&[(key, 5)]).await.is_ok(),
            "sliding, not fixed"
        );
        assert!(live.rpm_hit(&[(key, 5)]).await.is_err());

        let provider = Scope::Provider(ProviderId::new());
        let pkey = Scope::ProviderKey(ProviderKeyId::new());
        assert!(live.rpm_hit(&[(provider, 1)]).await.is_ok());
        let d = live
            .rpm_hit(&[(pkey, 10), (provider, 1)])
            .await
            .unwrap_err();
        assert_eq!(d.scope, provider);
        assert!(
            live.rpm_hit(&[(pkey, 1)]).await.is_ok(),
            "the refused hit counted nowhere"
        );
    }

    /// The figures of a reservation refused for want of headroom (not for an outage).
    fn exhausted(r: Result<(), BudgetRefused>) -> BudgetView {
        match r {
            Err(BudgetRefused::Exhausted(v)) => v,
            other => panic!("expected an exhausted budget, got {other:?}"),
        }
    }

    async fn budgets_reserve_settle_and_bound_overshoot(mk: Make<'_>) {
        let (_, live) = mk(0);
        let user = BudgetAccount::User(UserId::new(), Some(0));
        let limit = Usd::dollars(1);
        let seed = "0.90".parse::<Usd>().unwrap();
        let r = "0.06".parse::<Usd>().unwrap();
        assert!(live.budget_reserve(user, seed, limit, r).await.is_ok());
        assert!(live.budget_reserve(user, seed, limit, r).await.is_ok());
        // used 0.90 + reserved 0.12 ≥ 1: no headroom.
        let v = exhausted(live.budget_reserve(user, seed, limit, r).await);
        assert_eq!(v.reserved, "0.12".parse().unwrap());
        live.budget_settle(user, seed, r, "0.01".parse().unwrap());
        live.budget_settle(user, seed, r, "0.02".parse().unwrap());
        let v = live.budget_view(user, seed).await;
        assert_eq!((v.used, v.reserved), ("0.93".parse().unwrap(), Usd::ZERO));
        // A top-up of a standalone key moves `used` (minus the balance) down.
        let key = BudgetAccount::Standalone(ApiKeyId::new());
        let balance = "0.05".parse::<Usd>().unwrap();
        let seed = Usd::ZERO - balance;
        assert!(live.budget_reserve(key, seed, Usd::ZERO, r).await.is_ok());
        assert!(live.budget_reserve(key, seed, Usd::ZERO, r).await.is_err());
        live.budget_adjust(key, Usd::ZERO - Usd::dollars(1)).await;
        assert!(live.budget_reserve(key, seed, Usd::ZERO, r).await.is_ok());
    }

    async fn breakers_open_admit_probes_and_reset(mk: Make<'_>) {
        let (clock, live) = mk(0);
        let k = ProviderKeyId::new();
        for _ in 0..5 {
            live.breaker_record(k, false).await;
        }
        assert_eq!(
            live.breaker_admit(k).await,
            Gate::Blocked { until_ms: 60_000 }
        );
        assert_eq!(live.breaker_view(k).await.state, BreakerState::Open);
        clock.set(60_000);
        assert_eq!(live.breaker_admit(k).await, Gate::Probe);
        assert_eq!(live.breaker_admit(k).await, Gate::Probe);
        assert!(
            matches!(live.breaker_admit(k).await, Gate::Blocked { .. }),
            "two probes at a time"
        );
        live.breaker_release_probe(k).await;
        assert_eq!(
            live.breaker_admit(k).await,
            Gate::Probe,
            "a released probe frees its slot"
        );
        for _ in 0..3 {
            live.breaker_record(k, true).await;
        }
        let v = live.breaker_view(k).await;
        assert_eq!(v.state, BreakerState::Closed);
        assert!((v.health - 1.0).abs() < 1e-9, "{}", v.health);
        live.breaker_record(k, false).await;
        assert_eq!(live.breaker_view(k).await.consecutive_failures, 1);
        live.breaker_reset(k).await;
        let v = live.breaker_view(k).await;
        assert_eq!(
            (v.state, v.consecutive_failures, v.window_results),
            (BreakerState::Closed, 0, 0)
        );
        assert_eq!(
            live.breaker_admit(ProviderKeyId::new()).await,
            Gate::Pass,
            "unknown keys pass"
        );
    }

    async fn adaptive_limits_learn_from_429s_and_utilisation(mk: Make<'_>) {
        let (clock, live) = mk(0);
        let k = ProviderKeyId::new();
        assert_eq!(live.adaptive_limit(k).await.0, adaptive::START);
        live.adaptive_429(k, true, 20).await;
        assert_eq!(
            live.adaptive_limit(k).await.0,
            17,
            "85 % of the 20 in flight"
        );
        live.adaptive_429(k, false, 5).await;
        live.adaptive_outcome(k, true).await;
        assert_eq!(
            live.adaptive_limit(k).await.0,
            17,
            "a rate 429 leaves the limit"
        );
        clock.advance(Duration::from_millis(
            u64::try_from(adaptive::COOLDOWN_MS).unwrap() + 1,
        ));
        for _ in 0..5 {
            live.adaptive_sample(k, 17).await;
        }
        assert_eq!(live.adaptive_limit(k).await.0, 19, "busy: +2");
        let h = live.adaptive_history(k).await;
        let h: Vec<_> = h
            .iter()
            .map(|c| (c.from, c.to, c.reason.as_str()))
            .collect();
        assert_eq!(
            h,
            vec![(50, 17, "concurrency_429"), (17, 19, "high_utilisation")]
        );
        assert!(live.adaptive_history(ProviderKeyId::new()).await.is_empty());
    }

    async fn budgets_stay_exact_beyond_double_precision(mk: Make<'_>) {
        let (_, live) = mk(0);
        let p = BudgetAccount::Provider(ProviderId::new(), None);
        // 2^53 nanodollars: doubles cannot tell it from 2^53 + 1.
        let seed = Usd::from_nanos(1 << 53);
        let limit = Usd::from_nanos((1 << 53) + 1);
        let one = Usd::from_nanos(1);
        assert!(
            live.budget_reserve(p, seed, limit, one).await.is_ok(),
            "one nanodollar left"
        );
        let v = exhausted(live.budget_reserve(p, seed, limit, one).await);
        assert_eq!((v.used, v.reserved), (seed, one));
        live.budget_settle(p, seed, one, Usd::from_nanos(3));
        let v = live.budget_view(p, seed).await;
        assert_eq!(
            (v.used, v.reserved),
            (Usd::from_nanos((1 << 53) + 3), Usd::ZERO)
        );
        live.budget_forget(p).await;
        assert_eq!(
            live.budget_view(p, Usd::ZERO).await.used,
            Usd::ZERO,
            "forgotten: seeded anew"
        );
    }

    /// Runs each contract test against [`Local`] and against [`RedisLive`].
    macro_rules! contract {
        ($($name:ident),* $(,)?) => {
            mod local_impl {
                $(#[tokio::test]
                async fn $name() {
                    super::$name(&super::local_at).await;
                })*
            }
            mod redis_impl {
                $(#[tokio::test]
                async fn $name() {
                    let fx = super::RedisFixture::new();
                    super::$name(&|ms| fx.make(ms)).await;
                    fx.finish().await;
                })*
            }
        };
    }

    contract!(
        bindings_expire_and_can_be_dropped,
        bindings_can_be_listed_and_cleared,
        affinity_outcomes_are_counted_per_format_and_minute,
        cooldowns_keep_the_latest_deadline,
        leases_cap_a_scope_and_come_back_on_drop,
        a_lease_whose_holder_died_lapses_at_its_deadline,
        rpm_windows_admit_exactly_n_per_minute_and_all_or_nothing,
        budgets_reserve_settle_and_bound_overshoot,
        breakers_open_admit_probes_and_reset,
        adaptive_limits_learn_from_429s_and_utilisation,
        budgets_stay_exact_beyond_double_precision,
    );

    const REDIS: &str = "redis://127.0.0.1:6379";

    /// Instances of [`RedisLive`] under one random prefix; `finish` checks that none fell back
    /// to its local state (so the contract really ran against Redis) and deletes the keys.
    struct RedisFixture {
        cfg: RedisConfig,
        made: Mutex<Vec<Arc<RedisLive>>>,
    }

    impl RedisFixture {
        fn new() -> Self {
            let mut cfg = RedisConfig::new(REDIS);
            cfg.prefix = format!("aether-test:{}:", uuid::Uuid::now_v7());
            cfg.timeout = Duration::from_secs(2);
            Self {
                cfg,
                made: Mutex::default(),
            }
        }

        fn live(&self, clock: Arc<ManualClock>) -> Arc<RedisLive> {
            let live = Arc::new(RedisLive::lazy(&self.cfg, clock).unwrap());
            self.made.lock().unwrap().push(live.clone());
            live
        }

        fn make(&self, ms: i64) -> (Arc<ManualClock>, Arc<dyn LiveState>) {
            let clock = ManualClock::at(ms);
            (clock.clone(), self.live(clock))
        }

        async fn finish(self) {
            let made = std::mem::take(&mut *self.made.lock().unwrap());
            for live in &made {
                assert_eq!(live.failures(), 0, "a call fell back to local state");
            }
            if let Some(live) = made.first() {
                live.delete_all().await.unwrap();
            }
        }
    }

    #[tokio::test]
    async fn redis_leases_hold_across_instances_under_contention() {
        let fx = RedisFixture::new();
        let clock = ManualClock::at(0);
        let (a, b) = (fx.live(clock.clone()), fx.live(clock));
        let (a, b): (Arc<dyn LiveState>, Arc<dyn LiveState>) = (a, b);
        let scope = Scope::Endpoint(EndpointId::new());
        let holding = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let granted = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for i in 0..50 {
            let live = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (holding, most, granted) = (holding.clone(), most.clone(), granted.clone());
            tasks.push(tokio::spawn(async move {
                let Some(lease) = Lease::acquire(&live, scope, 3, Duration::from_secs(60)).await
                else {
                    return;
                };
                assert!(lease.in_use <= 3, "{}", lease.in_use);
                granted.fetch_add(1, Ordering::SeqCst);
                let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                holding.fetch_sub(1, Ordering::SeqCst);
                drop(lease);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!(
            (1..=3).contains(&most),
            "at most 3 held at once, saw {most}"
        );
        assert!(granted.load(Ordering::SeqCst) >= 3);
        // Releases are applied in the background; a count waits for its own instance's.
        b.lease_count(scope).await;
        assert_eq!(a.lease_count(scope).await, 0, "every lease came back");
        assert_eq!(b.lease_count(scope).await, 0);
        fx.finish().await;
    }

    #[tokio::test]
    async fn redis_unreachable_fails_open_per_instance_but_budgets_fail_closed() {
        let mut cfg = RedisConfig::new("redis://127.0.0.1:1");
        cfg.prefix = "aether-test-down:".into();
        let started = Instant::now();
        assert!(
            RedisLive::connect(&cfg, ManualClock::at(0)).await.is_err(),
            "start-up refuses an unreachable Redis"
        );
        let live = Arc::new(RedisLive::lazy(&cfg, ManualClock::at(0)).unwrap());
        let dyn_live: Arc<dyn LiveState> = live.clone();
        let scope = Scope::ProviderKey(ProviderKeyId::new());
        let ttl = Duration::from_secs(60);
        // Leases: this instance's own limit still holds, and leases come back.
        let l1 = Lease::acquire(&dyn_live, scope, 2, ttl)
            .await
            .expect("fail open");
        let _l2 = Lease::acquire(&dyn_live, scope, 2, ttl)
            .await
            .expect("fail open");
        assert!(
            Lease::acquire(&dyn_live, scope, 2, ttl).await.is_none(),
            "bounded locally"
        );
        drop(l1);
        assert_eq!(live.lease_count(scope).await, 1);
        // RPM: served, counted locally.
        let key = Scope::ApiKey(ApiKeyId::new());
        assert!(live.rpm_hit(&[(key, 1)]).await.is_ok());
        assert!(live.rpm_hit(&[(key, 1)]).await.is_err());
        // Breaker, adaptive, cooldowns, affinity: local state.
        let k = ProviderKeyId::new();
        assert_eq!(live.breaker_admit(k).await, Gate::Pass);
        assert_eq!(live.adaptive_limit(k).await.0, adaptive::START);
        live.cool_down(k, Instant::now() + Duration::from_secs(30))
            .await;
        assert_eq!(live.cooling(&[k]).await, vec![k]);
        let ak = AffinityKey {
            api_key: ApiKeyId::new(),
            format: ApiFormat::Claude,
            model: GlobalModelId::new(),
            session: None,
        };
        live.affinity_set(ak.clone(), k, ttl).await;
        assert_eq!(live.affinity_get(&ak).await, Some(k));
        // Budgets: closed, and said to be out of reach rather than exhausted.
        let user = BudgetAccount::User(UserId::new(), None);
        assert_eq!(
            live.budget_reserve(user, Usd::ZERO, Usd::dollars(100), Usd::dollars(1))
                .await,
            Err(BudgetRefused::Unavailable),
            "no spend without the shared ledger"
        );
        live.budget_settle(user, Usd::ZERO, Usd::ZERO, Usd::dollars(1));
        assert_eq!(live.budget_view(user, Usd::ZERO).await.used, Usd::ZERO);
        assert!(live.failures() > 0, "failures are counted");
        // … per kind of call, every kind touched above, and adding up to the total.
        let errors = live.errors();
        for (op, n) in LiveOp::ALL.iter().zip(errors) {
            assert!(n > 0, "{} failures not counted", op.as_str());
        }
        assert_eq!(errors.iter().sum::<u64>(), live.failures());
        assert_eq!(Local::default().errors(), [0; LiveOp::ALL.len()]);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    /// A TCP proxy to the test Redis that can be cut and restored on the same port.
    struct Proxy {
        port: u16,
        tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    }

    impl Proxy {
        async fn start(port: u16) -> Self {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            let port = listener.local_addr().unwrap().port();
            let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
            let inner = tasks.clone();
            let accept = tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let conn = tokio::spawn(async move {
                        if let Ok(mut server) =
                            tokio::net::TcpStream::connect("127.0.0.1:6379").await
                        {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    inner.lock().unwrap().push(conn);
                }
            });
            tasks.lock().unwrap().push(accept);
            Self { port, tasks }
        }

        fn cut(&self) {
            for t in self.tasks.lock().unwrap().drain(..) {
                t.abort();
            }
        }
    }

    #[tokio::test]
    async fn redis_comes_back_after_an_outage() {
        let proxy = Proxy::start(0).await;
        let mut cfg = RedisConfig::new(format!("redis://127.0.0.1:{}", proxy.port));
        cfg.prefix = format!("aether-test:{}:", uuid::Uuid::now_v7());
        cfg.timeout = Duration::from_secs(1);
        let live = RedisLive::connect(&cfg, ManualClock::at(0)).await.unwrap();
        let user = BudgetAccount::User(UserId::new(), None);
        let reserve = || live.budget_reserve(user, Usd::ZERO, Usd::dollars(100), Usd::dollars(1));
        assert!(reserve().await.is_ok());
        assert_eq!(live.failures(), 0);

        proxy.cut();
        assert_eq!(
            reserve().await,
            Err(BudgetRefused::Unavailable),
            "closed while Redis is away"
        );
        assert!(live.failures() > 0);
        let budget = LiveOp::ALL.iter().position(|o| *o == LiveOp::Budget);
        assert!(live.errors()[budget.unwrap()] > 0);

        let proxy = Proxy::start(proxy.port).await;
        let started = Instant::now();
        loop {
            if reserve().await.is_ok() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "Redis not used again"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let v = live.budget_view(user, Usd::ZERO).await;
        assert_eq!(
            v.reserved,
            Usd::dollars(2),
            "the ledger from before the outage"
        );
        live.delete_all().await.unwrap();
        proxy.cut();
    }
}
