//! [`LiveState`] in Redis, shared by every instance of a cluster.
//!
//! Every operation that must be atomic is one Lua script (EVALSHA, loaded on `NOSCRIPT`), given
//! the time of this instance's [`Clock`] as an argument — never Redis `TIME` — so tests can move
//! time. The breaker and adaptive-limit state machines ([`breaker`](crate::breaker),
//! [`adaptive`](crate::adaptive)) are too intricate to mirror in Lua: their state is kept as
//! JSON and changed by a compare-and-set loop (read, apply the Rust rule, write only if the value
//! is still the one read — a Lua script), so each step is still atomic across instances.
//!
//! Key layout (`P` is the configured prefix):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P aff:b:{api_key}\|{format}\|{model}\|{-\|=session}` | string, `PX` = binding TTL | upstream key id |
//! | `P aff:t` / `P aff:m:{minute}` | hash `{format}:{outcome}` → count | totals / one-minute bucket (expires after 2 h) |
//! | `P aff:since` | string | when counting began (ms) |
//! | `P cool:{provider_key}` | string | rest deadline (ms) |
//! | `P lease:{scope}` | zset lease id → deadline (ms) | live leases; `P lease:seq` hands out ids |
//! | `P rpm:{scope}` | zset hit id → time (ms) | the last minute's hits; `P rpm:seq` |
//! | `P brk:{provider_key}` / `P adp:{provider_key}` | string (JSON) | breaker / adaptive state |
//! | `P bud:{account}` | hash `used`, `reserved` (integer nanodollars) | budget account |
//!
//! When Redis cannot be reached, or does not answer within the configured timeout, a call fails
//! fast (and for one second afterwards skips Redis altogether) and then: budgets fail
//! **closed** (a reservation is refused), everything else fails **open** to this instance's own
//! in-process state ([`Local`]), so limits still hold per instance. A refused reservation says
//! [`BudgetRefused::Unavailable`], not "exhausted": the caller is told of an outage, not that
//! its money ran out. Each failure is counted, in total ([`RedisLive::failures`]) and per kind
//! of call ([`LiveState::errors`], the `aether_live_state_errors_total` metric), and logged, at
//! most once per 10 s.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aether_domain::{ApiFormat, ProviderKeyId, Usd};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, RedisResult, Script};
use tokio::sync::{mpsc, oneshot};

use crate::adaptive::{Adaptive, LimitChange};
use crate::breaker::{Breaker, BreakerView, Gate};
use crate::{
    AFFINITY_BUCKET_MS, AFFINITY_BUCKET_SECS, AFFINITY_BUCKETS, AffinityBinding, AffinityBucket,
    AffinityCounts, AffinityFormatCounts, AffinityKey, AffinityOutcome, AffinityStats,
    BudgetAccount, BudgetRefused, BudgetView, Clock, LeaseId, LiveErrors, LiveOp, LiveState, Local,
    RpmDenied, Scope, lock,
};

/// Lease ids handed out by the in-process fallback carry this bit, so a release goes to the
/// state that made the lease.
const LOCAL_LEASE: u64 = 1 << 63;
/// How long Redis is skipped after a failed call.
const BACKOFF_MS: u64 = 1_000;
/// At most one warning per this many ms.
const WARN_EVERY_MS: u64 = 10_000;
/// Idle expiry of breaker, adaptive and budget state (a budget account is re-seeded from the
/// database afterwards).
const KEEP_MS: i64 = 7 * 24 * 3_600_000;
/// Expiry of a one-minute affinity bucket.
const BUCKET_KEEP_MS: i64 = 2 * 3_600_000;
/// Compare-and-set attempts before a contended breaker/adaptive step gives up.
const CAS_TRIES: usize = 16;

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// Every key starts with it (e.g. `aether:`); several deployments can share one Redis.
    pub prefix: String,
    /// Bound on each call (connection attempts included).
    pub timeout: Duration,
}

impl RedisConfig {
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "aether:".into(),
            timeout: Duration::from_millis(250),
        }
    }
}

const LIMBS_LUA: &str = r"
local function limbs(s)
  local neg = string.sub(s, 1, 1) == '-'
  if neg then s = string.sub(s, 2) end
  local n = string.len(s)
  local hi, lo = 0, tonumber(s)
  if n > 9 then hi = tonumber(string.sub(s, 1, n - 9)); lo = tonumber(string.sub(s, n - 8)) end
  if neg then
    if lo > 0 then return -hi - 1, 1e9 - lo end
    return -hi, 0
  end
  return hi, lo
end
";

const ACQUIRE_LUA: &str = r"
for i = 5, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[3]) then return {0, n} end
local id = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], ARGV[2], id)
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return {id, n + 1}
";

const COUNT_LUA: &str = r"
for i = 2, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
return redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf')
";

const RPM_LUA: &str = r"
local now = tonumber(ARGV[1])
local n = #KEYS - 1
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[i + 1]) then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    local t = now
    if oldest[2] then t = tonumber(oldest[2]) end
    local wait = t + 60000 - now
    if wait < 1 then wait = 1 end
    return {i, wait}
  end
end
local id = redis.call('INCR', KEYS[#KEYS])
for i = 1, n do
  redis.call('ZADD', KEYS[i], now, id)
  redis.call('PEXPIRE', KEYS[i], 61000)
end
return {0, 0}
";

const COOL_LUA: &str = r"
local old = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > old then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return 1
";

const CAS_LUA: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == false then cur = '' end
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

const RECORD_LUA: &str = r"
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[2], 'NX')
return 1
";

/// Reserve: seed the account if new, refuse if `used + reserved >= limit` (exact: compared in
/// 10⁹ limbs, since Lua numbers are doubles), else add to `reserved` (`HINCRBY`, exact).
const RESERVE_BODY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('HSET', KEYS[1], 'used', ARGV[1], 'reserved', '0') end
local used = redis.call('HGET', KEYS[1], 'used')
local res = redis.call('HGET', KEYS[1], 'reserved')
local uh, ul = limbs(used)
local rh, rl = limbs(res)
local h, l = uh + rh, ul + rl
if l >= 1e9 then l = l - 1e9; h = h + 1 end
local mh, ml = limbs(ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if h > mh or (h == mh and l >= ml) then return {0, used, res} end
redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[3])
return {1, used, res}
";

const SETTLE_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('HSET', KEYS[1], 'used', ARGV[1], 'reserved', '0') end
if redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[2]) < 0 then redis.call('HSET', KEYS[1], 'reserved', '0') end
redis.call('HINCRBY', KEYS[1], 'used', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";

const ADJUST_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'used', ARGV[1]) end
return 1
";

struct Scripts {
    acquire: Script,
    count: Script,
    rpm: Script,
    cool: Script,
    cas: Script,
    record: Script,
    reserve: Script,
    settle: Script,
    adjust: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            acquire: Script::new(ACQUIRE_LUA),
            count: Script::new(COUNT_LUA),
            rpm: Script::new(RPM_LUA),
            cool: Script::new(COOL_LUA),
            cas: Script::new(CAS_LUA),
            record: Script::new(RECORD_LUA),
            reserve: Script::new(&format!("{LIMBS_LUA}{RESERVE_BODY}")),
            settle: Script::new(SETTLE_LUA),
            adjust: Script::new(ADJUST_LUA),
        }
    }
}

/// Work a synchronous method (a drop guard) hands to the background worker, in order.
enum Deferred {
    Release { key: String, id: u64 },
    Settle { key: String, args: [String; 4] },
    Flush(oneshot::Sender<()>),
}

struct Health {
    born: Instant,
    timeout: Duration,
    /// Ms since `born` until which Redis is skipped.
    down_until: AtomicU64,
    last_warn: AtomicU64,
    failures: AtomicU64,
    /// `failures` split by kind of call, in [`LiveOp::ALL`] order.
    by_op: [AtomicU64; LiveOp::ALL.len()],
}

/// The kind of call an operation name (`what`, also logged) belongs to: the names start with
/// the trait method's family.
fn op_of(what: &str) -> Option<LiveOp> {
    const FAMILIES: [(&str, LiveOp); 7] = [
        ("affinity_", LiveOp::Affinity),
        ("cool", LiveOp::Cooldown),
        ("lease_", LiveOp::Lease),
        ("rpm_", LiveOp::Rpm),
        ("breaker_", LiveOp::Breaker),
        ("adaptive_", LiveOp::Adaptive),
        ("budget_", LiveOp::Budget),
    ];
    FAMILIES
        .iter()
        .find(|(family, _)| what.starts_with(family))
        .map(|&(_, op)| op)
}

impl Health {
    /// Counts one failed (or skipped) call.
    fn count(&self, what: &str) -> u64 {
        if let Some(i) = op_of(what).and_then(|op| LiveOp::ALL.iter().position(|o| *o == op))
            && let Some(c) = self.by_op.get(i)
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_down(&self) -> bool {
        self.elapsed_ms() < self.down_until.load(Ordering::Relaxed)
    }

    fn failed(&self, what: &str, why: &dyn std::fmt::Display) {
        let n = self.count(what);
        let now = self.elapsed_ms();
        self.down_until
            .store(now.saturating_add(BACKOFF_MS), Ordering::Relaxed);
        let last = self.last_warn.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= WARN_EVERY_MS)
            && self
                .last_warn
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                op = what,
                error = %why,
                failures = n,
                "live state: Redis unavailable; budgets fail closed, other limits use this instance's own state"
            );
        }
    }

    /// Runs one Redis call within the timeout; `None` (counted, logged) when Redis is down.
    async fn run<T>(
        &self,
        what: &'static str,
        limit: Duration,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> Option<T> {
        if self.is_down() {
            self.count(what);
            return None;
        }
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(what, &e);
                None
            }
            Err(_) => {
                self.failed(what, &"timed out");
                None
            }
        }
    }
}

/// Live state in Redis (cluster mode). See the module docs for the key layout and failure modes.
pub struct RedisLive {
    conn: ConnectionManager,
    prefix: String,
    clock: Arc<dyn Clock>,
    scripts: Arc<Scripts>,
    health: Arc<Health>,
    fallback: Local,
    deferred: mpsc::UnboundedSender<Deferred>,
    pending: Arc<AtomicUsize>,
    /// Releases not yet applied, per lease key: applied first by the next acquire or count.
    unreleased: Mutex<Vec<(String, u64)>>,
}

impl std::fmt::Debug for RedisLive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLive")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLive {
    /// Connects and checks that Redis answers (`PING`) — for start-up, where an unreachable
    /// Redis is an error.
    ///
    /// # Errors
    /// A bad URL, or Redis not answering within the timeout.
    pub async fn connect(cfg: &RedisConfig, clock: Arc<dyn Clock>) -> RedisResult<Self> {
        let live = Self::lazy(cfg, clock)?;
        let mut conn = live.conn.clone();
        match tokio::time::timeout(
            cfg.timeout.max(Duration::from_secs(2)),
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        {
            Ok(r) => r.map(|_| live),
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "Redis did not answer PING in time",
            ))),
        }
    }

    /// Connects on first use; a Redis that is down shows as the documented failure modes.
    /// Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// A bad URL, or no Tokio runtime.
    pub fn lazy(cfg: &RedisConfig, clock: Arc<dyn Clock>) -> RedisResult<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Client, "no Tokio runtime")))?;
        let client = redis::Client::open(cfg.url.as_str())?;
        let conn_cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, conn_cfg)?;
        let scripts = Arc::new(Scripts::new());
        let health = Arc::new(Health {
            born: Instant::now(),
            timeout: cfg.timeout,
            down_until: AtomicU64::new(0),
            last_warn: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            by_op: Default::default(),
        });
        let pending = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(worker(
            rx,
            conn.clone(),
            scripts.clone(),
            health.clone(),
            pending.clone(),
        ));
        Ok(Self {
            conn,
            prefix: cfg.prefix.clone(),
            fallback: Local::with_clock(clock.clone()),
            clock,
            scripts,
            health,
            deferred: tx,
            pending,
            unreleased: Mutex::new(Vec::new()),
        })
    }

    /// Redis calls that failed or were skipped since start (each fell back or failed closed).
    #[must_use]
    pub fn failures(&self) -> u64 {
        self.health.failures.load(Ordering::Relaxed)
    }

    /// Deletes every key under this instance's prefix (tests; operators changing the prefix).
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn delete_all(&self) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        for key in self
            .scan(&format!("{}*", glob_escape(&self.prefix)), usize::MAX)
            .await?
        {
            let _: i64 = conn.del(key).await?;
        }
        Ok(())
    }

    async fn scan(&self, pattern: &str, limit: usize) -> RedisResult<Vec<String>> {
        let mut conn = self.conn.clone();
        let mut cursor = 0_u64;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await?;
            out.extend(keys);
            if next == 0 || out.len() >= limit {
                out.truncate(limit);
                return Ok(out);
            }
            cursor = next;
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn affinity_key(&self, k: &AffinityKey) -> String {
        let session = k
            .session
            .as_deref()
            .map_or_else(|| "-".into(), |s| format!("={s}"));
        self.key(&format!(
            "aff:b:{}|{}|{}|{session}",
            k.api_key, k.format, k.model
        ))
    }

    fn parse_affinity(&self, key: &str) -> Option<(ApiKeyIdModel, Option<String>)> {
        let rest = key.strip_prefix(&self.key("aff:b:"))?;
        let mut parts = rest.splitn(4, '|');
        let api_key = parts.next()?.parse().ok()?;
        let format = parts.next()?.parse().ok()?;
        let model = parts.next()?.parse().ok()?;
        let session = match parts.next()? {
            "-" => None,
            s => Some(s.strip_prefix('=')?.to_string()),
        };
        Some(((api_key, format, model), session))
    }

    fn lease_key(&self, scope: Scope) -> String {
        self.key(&format!("lease:{}", scope_name(scope)))
    }

    fn budget_key(&self, account: BudgetAccount) -> String {
        let period = |p: Option<i64>| p.map_or_else(|| "-".into(), |p| p.to_string());
        self.key(&match account {
            BudgetAccount::User(u, p) => format!("bud:u:{u}:{}", period(p)),
            BudgetAccount::Standalone(k) => format!("bud:s:{k}"),
            BudgetAccount::Provider(p, per) => format!("bud:p:{p}:{}", period(per)),
        })
    }

    /// Waits until the deferred work handed over so far (releases, settlements) is applied.
    async fn flush(&self) {
        if self.pending.load(Ordering::SeqCst) == 0 {
            return;
        }
        let (tx, rx) = oneshot::channel();
        if self.deferred.send(Deferred::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(self.health.timeout * 4, rx).await;
        }
    }

    fn defer(&self, work: Deferred) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.deferred.send(work).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn take_unreleased(&self, key: &str) -> Vec<u64> {
        let mut all = lock(&self.unreleased);
        let mut ids = Vec::new();
        all.retain(|(k, id)| {
            if k == key {
                ids.push(*id);
                false
            } else {
                true
            }
        });
        ids
    }

    /// One compare-and-set step on a JSON-kept state machine: read, apply `f` (to the stored
    /// state, or to `new()` when there is none and `create`), write if changed and still as read.
    /// `None` when Redis fails.
    async fn cas<S, R>(
        &self,
        what: &'static str,
        key: &str,
        create: bool,
        new: impl Fn() -> S,
        f: impl Fn(&mut S) -> R,
    ) -> Option<Option<R>>
    where
        S: serde::Serialize + serde::de::DeserializeOwned,
    {
        let scripts = self.scripts.clone();
        let conn = self.conn.clone();
        let limit = self.health.timeout * 2;
        self.health
            .run(what, limit, async move {
                let mut conn = conn;
                for _ in 0..CAS_TRIES {
                    let old: Option<String> = conn.get(key).await?;
                    let mut state = match old.as_deref().map(serde_json::from_str::<S>) {
                        Some(Ok(s)) => s,
                        // An unreadable value (an older layout) starts over.
                        Some(Err(_)) | None if create => new(),
                        _ => return Ok(None),
                    };
                    let r = f(&mut state);
                    let new_json = serde_json::to_string(&state).map_err(|e| {
                        redis::RedisError::from((
                            redis::ErrorKind::Client,
                            "serialize",
                            e.to_string(),
                        ))
                    })?;
                    if old.as_deref() == Some(new_json.as_str()) {
                        return Ok(Some(r));
                    }
                    let done: i64 = scripts
                        .cas
                        .key(key)
                        .arg(old.unwrap_or_default())
                        .arg(new_json)
                        .arg(KEEP_MS)
                        .invoke_async(&mut conn)
                        .await?;
                    if done == 1 {
                        return Ok(Some(r));
                    }
                }
                Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "compare-and-set contended",
                )))
            })
            .await
    }

    async fn read_json<S: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        key: &str,
    ) -> Option<Option<S>> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = self
            .health
            .run(
                what,
                self.health.timeout,
                async move { conn.get(key).await },
            )
            .await?;
        Some(raw.and_then(|s| serde_json::from_str(&s).ok()))
    }
}

type ApiKeyIdModel = (
    aether_domain::ApiKeyId,
    ApiFormat,
    aether_domain::GlobalModelId,
);

fn scope_name(scope: Scope) -> String {
    match scope {
        Scope::Endpoint(id) => format!("e:{id}"),
        Scope::ProviderKey(id) => format!("k:{id}"),
        Scope::Provider(id) => format!("p:{id}"),
        Scope::ApiKey(id) => format!("a:{id}"),
    }
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn field(format: ApiFormat, outcome: AffinityOutcome) -> String {
    format!("{format}:{}", outcome.as_str())
}

fn add_fields(counts: &mut [AffinityCounts], fields: &[(String, u64)]) {
    for (f, n) in fields {
        let Some((format, outcome)) = f.split_once(':') else {
            continue;
        };
        let Some(slot) = ApiFormat::ALL.iter().position(|x| x.to_string() == format) else {
            continue;
        };
        let Some(outcome) = AffinityOutcome::ALL.iter().find(|o| o.as_str() == outcome) else {
            continue;
        };
        if let Some(c) = counts.get_mut(slot) {
            c.add(*outcome, *n);
        }
    }
}

async fn worker(
    mut rx: mpsc::UnboundedReceiver<Deferred>,
    conn: ConnectionManager,
    scripts: Arc<Scripts>,
    health: Arc<Health>,
    pending: Arc<AtomicUsize>,
) {
    while let Some(work) = rx.recv().await {
        let mut conn = conn.clone();
        match work {
            Deferred::Release { key, id } => {
                health
                    .run("lease_release", health.timeout, async {
                        conn.zrem::<_, _, i64>(&key, id).await
                    })
                    .await;
                pending.fetch_sub(1, Ordering::SeqCst);
            }
            Deferred::Settle { key, args } => {
                let [seed, reserved, actual, keep] = args;
                health
                    .run("budget_settle", health.timeout, async {
                        scripts
                            .settle
                            .key(&key)
                            .arg(seed)
                            .arg(reserved)
                            .arg(actual)
                            .arg(keep)
                            .invoke_async::<i64>(&mut conn)
                            .await
                    })
                    .await;
                pending.fetch_sub(1, Ordering::SeqCst);
            }
            Deferred::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

#[async_trait]
impl LiveState for RedisLive {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    async fn ping(&self) -> Option<Result<(), String>> {
        let mut conn = self.conn.clone();
        let r = tokio::time::timeout(
            Duration::from_secs(1),
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        Some(match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        })
    }

    fn errors(&self) -> LiveErrors {
        let mut out = [0; LiveOp::ALL.len()];
        for (o, c) in out.iter_mut().zip(&self.health.by_op) {
            *o = c.load(Ordering::Relaxed);
        }
        out
    }

    async fn affinity_get(&self, key: &AffinityKey) -> Option<ProviderKeyId> {
        let k = self.affinity_key(key);
        let mut conn = self.conn.clone();
        match self
            .health
            .run("affinity_get", self.health.timeout, async move {
                conn.get::<_, Option<String>>(k).await
            })
            .await
        {
            Some(v) => v.and_then(|s| s.parse().ok()),
            None => self.fallback.affinity_get(key).await,
        }
    }

    async fn affinity_set(&self, key: AffinityKey, target: ProviderKeyId, ttl: Duration) {
        let k = self.affinity_key(&key);
        let mut conn = self.conn.clone();
        let px = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let ok = self
            .health
            .run("affinity_set", self.health.timeout, async move {
                conn.pset_ex::<_, _, ()>(k, target.to_string(), px).await
            })
            .await;
        if ok.is_none() {
            self.fallback.affinity_set(key, target, ttl).await;
        }
    }

    async fn affinity_drop(&self, key: &AffinityKey) {
        let k = self.affinity_key(key);
        let mut conn = self.conn.clone();
        self.health
            .run("affinity_drop", self.health.timeout, async move {
                conn.del::<_, i64>(k).await
            })
            .await;
        self.fallback.affinity_drop(key).await;
    }

    async fn affinity_list(&self, limit: usize) -> Vec<AffinityBinding> {
        let pattern = format!("{}*", glob_escape(&self.key("aff:b:")));
        let mut conn = self.conn.clone();
        let listed = self
            .health
            .run("affinity_list", self.health.timeout * 8, async {
                let keys = self.scan(&pattern, limit).await?;
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.get(k).pttl(k);
                }
                let vals: Vec<(Option<String>, i64)> = if keys.is_empty() {
                    Vec::new()
                } else {
                    pipe.query_async(&mut conn).await?
                };
                Ok(keys.into_iter().zip(vals).collect::<Vec<_>>())
            })
            .await;
        let Some(listed) = listed else {
            return self.fallback.affinity_list(limit).await;
        };
        listed
            .into_iter()
            .filter_map(|(k, (target, pttl))| {
                let ((api_key, format, model), session) = self.parse_affinity(&k)?;
                let target = target?.parse().ok()?;
                (pttl > 0).then(|| AffinityBinding {
                    api_key,
                    format,
                    model,
                    session,
                    target,
                    ttl_secs: u64::try_from(pttl / 1000).unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn affinity_clear(&self) {
        let pattern = format!("{}*", glob_escape(&self.key("aff:b:")));
        let mut conn = self.conn.clone();
        self.health
            .run("affinity_clear", self.health.timeout * 8, async {
                for chunk in self.scan(&pattern, usize::MAX).await?.chunks(500) {
                    conn.del::<_, i64>(chunk).await?;
                }
                Ok(())
            })
            .await;
        self.fallback.affinity_clear().await;
    }

    async fn affinity_record(&self, format: ApiFormat, outcome: AffinityOutcome) {
        let now = self.now_ms();
        let minute = now.div_euclid(AFFINITY_BUCKET_MS);
        let (total, bucket, since) = (
            self.key("aff:t"),
            self.key(&format!("aff:m:{minute}")),
            self.key("aff:since"),
        );
        let mut conn = self.conn.clone();
        let ok = self
            .health
            .run("affinity_record", self.health.timeout, async {
                self.scripts
                    .record
                    .key(total)
                    .key(bucket)
                    .key(since)
                    .arg(field(format, outcome))
                    .arg(now)
                    .arg(BUCKET_KEEP_MS)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await;
        if ok.is_none() {
            self.fallback.affinity_record(format, outcome).await;
        }
    }

    async fn affinity_stats(&self, window: Duration) -> AffinityStats {
        let minutes = i64::try_from(window.as_secs() / AFFINITY_BUCKET_SECS)
            .unwrap_or(i64::MAX)
            .clamp(1, AFFINITY_BUCKETS as i64);
        let now = self.now_ms();
        let now_minute = now.div_euclid(AFFINITY_BUCKET_MS);
        let first = now_minute - minutes + 1;
        let mut pipe = redis::pipe();
        pipe.get(self.key("aff:since")).hgetall(self.key("aff:t"));
        for minute in first..=now_minute {
            pipe.hgetall(self.key(&format!("aff:m:{minute}")));
        }
        let mut conn = self.conn.clone();
        type Raw = (Option<i64>, Vec<(String, u64)>, Vec<Vec<(String, u64)>>);
        let raw: Option<Raw> = self
            .health
            .run("affinity_stats", self.health.timeout * 2, async move {
                let mut v: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
                let mut it = v.drain(..);
                let since: Option<i64> = match it.next() {
                    Some(x) => redis::from_redis_value(x)?,
                    None => None,
                };
                let total: Vec<(String, u64)> = match it.next() {
                    Some(x) => redis::from_redis_value(x)?,
                    None => Vec::new(),
                };
                let buckets = it
                    .map(redis::from_redis_value)
                    .collect::<Result<Vec<Vec<(String, u64)>>, _>>()?;
                Ok((since, total, buckets))
            })
            .await;
        let Some((since, total_raw, buckets_raw)) = raw else {
            return self.fallback.affinity_stats(window).await;
        };
        let n = ApiFormat::ALL.len();
        let mut total = vec![AffinityCounts::default(); n];
        add_fields(&mut total, &total_raw);
        let mut window_counts = vec![AffinityCounts::default(); n];
        let mut buckets = Vec::with_capacity(buckets_raw.len());
        for (minute, fields) in (first..=now_minute).zip(buckets_raw) {
            let mut per_format = vec![AffinityCounts::default(); n];
            add_fields(&mut per_format, &fields);
            let mut counts = AffinityCounts::default();
            for (w, c) in window_counts.iter_mut().zip(&per_format) {
                w.merge(c);
                counts.merge(c);
            }
            buckets.push(AffinityBucket {
                start_ms: minute.saturating_mul(AFFINITY_BUCKET_MS),
                counts,
            });
        }
        AffinityStats {
            since_ms: since.unwrap_or(now),
            window_start_ms: first.saturating_mul(AFFINITY_BUCKET_MS),
            bucket_secs: AFFINITY_BUCKET_SECS,
            formats: ApiFormat::ALL
                .iter()
                .zip(total.into_iter().zip(window_counts))
                .map(|(&format, (total, window))| AffinityFormatCounts {
                    format,
                    total,
                    window,
                })
                .collect(),
            buckets,
        }
    }

    async fn cool_down(&self, key: ProviderKeyId, until: Instant) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return; // an elapsed deadline never lengthens a rest
        }
        {
            let until_ms = self.now_ms().saturating_add(ms(left));
            let k = self.key(&format!("cool:{key}"));
            let mut conn = self.conn.clone();
            let ok = self
                .health
                .run("cool_down", self.health.timeout, async {
                    self.scripts
                        .cool
                        .key(k)
                        .arg(until_ms)
                        .arg(ms(left).saturating_add(1_000))
                        .invoke_async::<i64>(&mut conn)
                        .await
                })
                .await;
            if ok.is_some() {
                return;
            }
        }
        self.fallback.cool_down(key, until).await;
    }

    async fn cooling(&self, keys: &[ProviderKeyId]) -> Vec<ProviderKeyId> {
        if keys.is_empty() {
            return Vec::new();
        }
        let names: Vec<String> = keys
            .iter()
            .map(|k| self.key(&format!("cool:{k}")))
            .collect();
        let mut conn = self.conn.clone();
        let until: Option<Vec<Option<i64>>> = self
            .health
            .run("cooling", self.health.timeout, async move {
                redis::cmd("MGET").arg(&names).query_async(&mut conn).await
            })
            .await;
        let Some(until) = until else {
            return self.fallback.cooling(keys).await;
        };
        let now = self.now_ms();
        keys.iter()
            .zip(until)
            .filter(|(_, u)| u.is_some_and(|u| now < u))
            .map(|(k, _)| *k)
            .collect()
    }

    async fn lease_acquire(
        &self,
        scope: Scope,
        limit: u32,
        ttl: Duration,
    ) -> Option<(LeaseId, u32)> {
        self.flush().await;
        let now = self.now_ms();
        let key = self.lease_key(scope);
        let unreleased = self.take_unreleased(&key);
        let mut conn = self.conn.clone();
        let got: Option<(u64, u32)> = self
            .health
            .run("lease_acquire", self.health.timeout, async {
                self.scripts
                    .acquire
                    .key(&key)
                    .key(self.key("lease:seq"))
                    .arg(now)
                    .arg(now.saturating_add(ms(ttl)))
                    .arg(limit)
                    .arg(ms(ttl).saturating_add(60_000))
                    .arg(&unreleased)
                    .invoke_async(&mut conn)
                    .await
            })
            .await;
        match got {
            Some((0, _)) => None,
            Some((id, n)) => Some((LeaseId(id), n)),
            None => {
                let (id, n) = self.fallback.lease_acquire(scope, limit, ttl).await?;
                Some((LeaseId(id.0 | LOCAL_LEASE), n))
            }
        }
    }

    fn lease_release(&self, scope: Scope, id: LeaseId) {
        if id.0 & LOCAL_LEASE != 0 {
            self.fallback
                .lease_release(scope, LeaseId(id.0 & !LOCAL_LEASE));
            return;
        }
        let key = self.lease_key(scope);
        lock(&self.unreleased).push((key.clone(), id.0));
        self.defer(Deferred::Release { key, id: id.0 });
    }

    async fn lease_count(&self, scope: Scope) -> u32 {
        self.flush().await;
        let key = self.lease_key(scope);
        let unreleased = self.take_unreleased(&key);
        let now = self.now_ms();
        let mut conn = self.conn.clone();
        let n: Option<u32> = self
            .health
            .run("lease_count", self.health.timeout, async {
                self.scripts
                    .count
                    .key(&key)
                    .arg(now)
                    .arg(&unreleased)
                    .invoke_async(&mut conn)
                    .await
            })
            .await;
        match n {
            Some(n) => n,
            None => self.fallback.lease_count(scope).await,
        }
    }

    async fn rpm_hit(&self, scopes: &[(Scope, u32)]) -> Result<(), RpmDenied> {
        if scopes.is_empty() {
            return Ok(());
        }
        let now = self.now_ms();
        let mut inv = self.scripts.rpm.prepare_invoke();
        for (scope, _) in scopes {
            inv.key(self.key(&format!("rpm:{}", scope_name(*scope))));
        }
        inv.key(self.key("rpm:seq")).arg(now);
        for (_, limit) in scopes {
            inv.arg(*limit);
        }
        let mut conn = self.conn.clone();
        let r: Option<(usize, i64)> = self
            .health
            .run("rpm_hit", self.health.timeout, async move {
                inv.invoke_async(&mut conn).await
            })
            .await;
        match r {
            Some((0, _)) => Ok(()),
            Some((i, wait_ms)) => match scopes.get(i.saturating_sub(1)) {
                Some(&(scope, _)) => Err(RpmDenied {
                    scope,
                    retry_after_secs: u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1),
                }),
                None => Ok(()),
            },
            None => self.fallback.rpm_hit(scopes).await,
        }
    }

    async fn breaker_admit(&self, key: ProviderKeyId) -> Gate {
        let now = self.now_ms();
        let k = self.key(&format!("brk:{key}"));
        match self
            .cas("breaker_admit", &k, true, Breaker::default, |b| {
                b.admit(now)
            })
            .await
        {
            Some(Some(g)) => g,
            Some(None) => Gate::Pass,
            None => self.fallback.breaker_admit(key).await,
        }
    }

    async fn breaker_record(&self, key: ProviderKeyId, ok: bool) {
        let now = self.now_ms();
        let k = self.key(&format!("brk:{key}"));
        if self
            .cas("breaker_record", &k, true, Breaker::default, |b| {
                b.record(now, ok);
            })
            .await
            .is_none()
        {
            self.fallback.breaker_record(key, ok).await;
        }
    }

    async fn breaker_release_probe(&self, key: ProviderKeyId) {
        let k = self.key(&format!("brk:{key}"));
        if self
            .cas("breaker_release_probe", &k, false, Breaker::default, |b| {
                b.release_probe();
            })
            .await
            .is_none()
        {
            self.fallback.breaker_release_probe(key).await;
        }
    }

    async fn breaker_view(&self, key: ProviderKeyId) -> BreakerView {
        let now = self.now_ms();
        let k = self.key(&format!("brk:{key}"));
        match self.read_json::<Breaker>("breaker_view", &k).await {
            Some(b) => b.unwrap_or_default().view(now),
            None => self.fallback.breaker_view(key).await,
        }
    }

    async fn breaker_reset(&self, key: ProviderKeyId) {
        let k = self.key(&format!("brk:{key}"));
        let mut conn = self.conn.clone();
        self.health
            .run("breaker_reset", self.health.timeout, async move {
                conn.del::<_, i64>(k).await
            })
            .await;
        self.fallback.breaker_reset(key).await;
    }

    async fn adaptive_limit(&self, key: ProviderKeyId) -> (u32, f64) {
        let now = self.now_ms();
        let k = self.key(&format!("adp:{key}"));
        match self
            .cas(
                "adaptive_limit",
                &k,
                true,
                || Adaptive::new(now),
                |a| (a.limit, a.reserve_ratio(now)),
            )
            .await
        {
            Some(Some(v)) => v,
            Some(None) => {
                let a = Adaptive::new(now);
                (a.limit, a.reserve_ratio(now))
            }
            None => self.fallback.adaptive_limit(key).await,
        }
    }

    async fn adaptive_sample(&self, key: ProviderKeyId, in_use: u32) {
        let now = self.now_ms();
        let k = self.key(&format!("adp:{key}"));
        if self
            .cas(
                "adaptive_sample",
                &k,
                true,
                || Adaptive::new(now),
                |a| {
                    a.sample(now, in_use);
                },
            )
            .await
            .is_none()
        {
            self.fallback.adaptive_sample(key, in_use).await;
        }
    }

    async fn adaptive_429(&self, key: ProviderKeyId, concurrency: bool, in_use: u32) {
        let now = self.now_ms();
        let k = self.key(&format!("adp:{key}"));
        if self
            .cas(
                "adaptive_429",
                &k,
                true,
                || Adaptive::new(now),
                |a| {
                    if concurrency {
                        a.on_concurrency_429(now, in_use);
                    } else {
                        a.on_other_429(now);
                    }
                },
            )
            .await
            .is_none()
        {
            self.fallback.adaptive_429(key, concurrency, in_use).await;
        }
    }

    async fn adaptive_outcome(&self, key: ProviderKeyId, ok: bool) {
        let now = self.now_ms();
        let k = self.key(&format!("adp:{key}"));
        if self
            .cas(
                "adaptive_outcome",
                &k,
                true,
                || Adaptive::new(now),
                |a| {
                    a.on_outcome(ok);
                },
            )
            .await
            .is_none()
        {
            self.fallback.adaptive_outcome(key, ok).await;
        }
    }

    async fn adaptive_history(&self, key: ProviderKeyId) -> Vec<LimitChange> {
        let k = self.key(&format!("adp:{key}"));
        match self.read_json::<Adaptive>("adaptive_history", &k).await {
            Some(a) => a
                .map(|a| a.history.into_iter().collect())
                .unwrap_or_default(),
            None => self.fallback.adaptive_history(key).await,
        }
    }

    async fn budget_reserve(
        &self,
        account: BudgetAccount,
        seed_used: Usd,
        limit: Usd,
        amount: Usd,
    ) -> Result<(), BudgetRefused> {
        self.flush().await;
        let k = self.budget_key(account);
        let mut conn = self.conn.clone();
        let r: Option<(i64, String, String)> = self
            .health
            .run("budget_reserve", self.health.timeout, async {
                self.scripts
                    .reserve
                    .key(k)
                    .arg(seed_used.nanos())
                    .arg(limit.nanos())
                    .arg(amount.nanos())
                    .arg(KEEP_MS)
                    .invoke_async(&mut conn)
                    .await
            })
            .await;
        match r {
            Some((1, _, _)) => Ok(()),
            Some((_, used, reserved)) => Err(BudgetRefused::Exhausted(BudgetView {
                used: Usd::from_nanos(used.parse().unwrap_or_default()),
                reserved: Usd::from_nanos(reserved.parse().unwrap_or_default()),
            })),
            // Fail closed: no unbounded spend while the shared ledger is out of reach.
            None => Err(BudgetRefused::Unavailable),
        }
    }

    fn budget_settle(&self, account: BudgetAccount, seed_used: Usd, reserved: Usd, actual: Usd) {
        self.defer(Deferred::Settle {
            key: self.budget_key(account),
            args: [
                seed_used.nanos().to_string(),
                reserved.nanos().saturating_neg().to_string(),
                actual.nanos().to_string(),
                KEEP_MS.to_string(),
            ],
        });
    }

    async fn budget_adjust(&self, account: BudgetAccount, delta: Usd) {
        self.flush().await;
        let k = self.budget_key(account);
        let mut conn = self.conn.clone();
        self.health
            .run("budget_adjust", self.health.timeout, async {
                self.scripts
                    .adjust
                    .key(k)
                    .arg(delta.nanos())
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await;
    }

    async fn budget_forget(&self, account: BudgetAccount) {
        self.flush().await;
        let k = self.budget_key(account);
        let mut conn = self.conn.clone();
        self.health
            .run("budget_forget", self.health.timeout, async move {
                conn.del::<_, i64>(k).await
            })
            .await;
    }

    async fn budget_view(&self, account: BudgetAccount, seed_used: Usd) -> BudgetView {
        self.flush().await;
        let k = self.budget_key(account);
        let mut conn = self.conn.clone();
        let r: Option<(Option<i64>, Option<i64>)> = self
            .health
            .run("budget_view", self.health.timeout, async move {
                redis::cmd("HMGET")
                    .arg(k)
                    .arg("used")
                    .arg("reserved")
                    .query_async(&mut conn)
                    .await
            })
            .await;
        match r {
            Some((Some(used), reserved)) => BudgetView {
                used: Usd::from_nanos(used),
                reserved: Usd::from_nanos(reserved.unwrap_or_default()),
            },
            _ => BudgetView {
                used: seed_used,
                reserved: Usd::ZERO,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation name passed to `Health::run` belongs to a kind of call, so no failure
    /// is left out of the per-kind counts.
    #[test]
    fn every_operation_name_has_a_kind() {
        let kinds = |names: &[&str]| names.iter().map(|n| op_of(n)).collect::<Vec<_>>();
        assert!(
            kinds(&[
                "affinity_get",
                "affinity_set",
                "affinity_drop",
                "affinity_list",
                "affinity_clear",
                "affinity_record",
                "affinity_stats",
            ])
            .iter()
            .all(|k| *k == Some(LiveOp::Affinity))
        );
        assert_eq!(
            kinds(&["cool_down", "cooling"]),
            [Some(LiveOp::Cooldown); 2]
        );
        assert_eq!(
            kinds(&["lease_acquire", "lease_release", "lease_count"]),
            [Some(LiveOp::Lease); 3]
        );
        assert_eq!(kinds(&["rpm_hit"]), [Some(LiveOp::Rpm)]);
        assert_eq!(
            kinds(&[
                "breaker_admit",
                "breaker_record",
                "breaker_release_probe",
                "breaker_view",
                "breaker_reset",
            ]),
            [Some(LiveOp::Breaker); 5]
        );
        assert_eq!(
            kinds(&[
                "adaptive_limit",
                "adaptive_sample",
                "adaptive_429",
                "adaptive_outcome",
                "adaptive_history",
            ]),
            [Some(LiveOp::Adaptive); 5]
        );
        assert_eq!(
            kinds(&[
                "budget_reserve",
                "budget_settle",
                "budget_adjust",
                "budget_forget",
                "budget_view",
            ]),
            [Some(LiveOp::Budget); 5]
        );
        assert_eq!(op_of("something_else"), None);
    }
}
