//! Shared mutable state of one mock: scripts, recorded requests, counters.
//!
//! Everything here sits on the request hot path, so it uses short critical
//! sections on `std::sync::Mutex` (never held across an `.await`) and atomics
//! for the counters.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::step::Step;

/// Lock a mutex, ignoring poisoning: the data guarded here stays consistent
/// even if a holder panicked (every update is a single push/pop/insert).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One request as the mock received it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Arrival order, starting at 1 (not reset by `clear`).
    pub seq: u64,
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// All headers in arrival order, names lower-cased, values lossily UTF-8.
    pub headers: Vec<(String, String)>,
    /// Raw body. In JSON it is a (lossy UTF-8) string.
    #[serde(with = "body_as_string")]
    pub body: Bytes,
    /// The upstream credential the request carried, if any.
    pub credential: Option<String>,
    /// Which route matched, e.g. `anthropic.messages` (None: no route).
    pub endpoint: Option<String>,
    /// Arrival time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

mod body_as_string {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(b))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        Ok(Bytes::from(String::deserialize(d)?))
    }
}

/// Counters for one credential.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStats {
    /// Requests seen with this credential.
    pub requests: u64,
    /// Requests currently in flight (until their body finished or was dropped).
    pub in_flight: u64,
    /// Highest `in_flight` observed.
    pub max_in_flight: u64,
}

/// Snapshot of the mock's counters (`GET /__mock/stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockStats {
    /// Every request received (control API excluded).
    pub total_requests: u64,
    /// Requests in flight right now, all credentials.
    pub in_flight: u64,
    /// Per-credential counters.
    pub keys: BTreeMap<String, KeyStats>,
}

#[derive(Default)]
pub(crate) struct KeyCounters {
    requests: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

/// State shared by the server tasks and the [`crate::MockUpstream`] handle.
pub(crate) struct Shared {
    scripts: Mutex<HashMap<String, VecDeque<Arc<Step>>>>,
    default_step: Mutex<Arc<Step>>,
    record: AtomicBool,
    max_recorded: usize,
    recorded: Mutex<VecDeque<RecordedRequest>>,
    seq: AtomicU64,
    keys: Mutex<HashMap<String, Arc<KeyCounters>>>,
    total_in_flight: AtomicU64,
    idle: Notify,
    /// Credentials accepted by the mock; `None` accepts any non-empty one.
    pub(crate) accepted_keys: Option<HashSet<String>>,
    /// Resolves (with an error) once the owning handle is dropped: every
    /// waiting handler and body stream selects on it so shutdown is prompt.
    pub(crate) shutdown: watch::Receiver<()>,
}

impl Shared {
    pub(crate) fn new(
        record: bool,
        max_recorded: usize,
        accepted_keys: Option<HashSet<String>>,
        default_step: Step,
        shutdown: watch::Receiver<()>,
    ) -> Self {
        Shared {
            scripts: Mutex::new(HashMap::new()),
            default_step: Mutex::new(Arc::new(default_step)),
            record: AtomicBool::new(record),
            max_recorded: max_recorded.max(1),
            recorded: Mutex::new(VecDeque::new()),
            seq: AtomicU64::new(0),
            keys: Mutex::new(HashMap::new()),
            total_in_flight: AtomicU64::new(0),
            idle: Notify::new(),
            accepted_keys,
            shutdown,
        }
    }

    /// Next request sequence number (also used to make ids unique).
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn push_steps(
        &self,
        key: &str,
        steps: impl IntoIterator<Item = Step>,
        replace: bool,
    ) -> usize {
        let mut scripts = lock(&self.scripts);
        let queue = scripts.entry(key.to_owned()).or_default();
        if replace {
            queue.clear();
        }
        queue.extend(steps.into_iter().map(Arc::new));
        queue.len()
    }

    pub(crate) fn pending_steps(&self, key: &str) -> usize {
        lock(&self.scripts).get(key).map_or(0, VecDeque::len)
    }

    /// Pop the next scripted step for `key`, or the default step.
    pub(crate) fn next_step(&self, key: &str) -> Arc<Step> {
        {
            let mut scripts = lock(&self.scripts);
            if let Some(queue) = scripts.get_mut(key)
                && let Some(step) = queue.pop_front()
            {
                return step;
            }
        }
        lock(&self.default_step).clone()
    }

    pub(crate) fn set_default(&self, step: Step) {
        *lock(&self.default_step) = Arc::new(step);
    }

    pub(crate) fn recording(&self) -> bool {
        self.record.load(Ordering::Relaxed)
    }

    pub(crate) fn set_recording(&self, on: bool) {
        self.record.store(on, Ordering::Relaxed);
    }

    pub(crate) fn record(&self, req: RecordedRequest) {
        let mut recorded = lock(&self.recorded);
        // Bounded: drop the oldest so a long benchmark cannot grow memory forever.
        while recorded.len() >= self.max_recorded {
            recorded.pop_front();
        }
        recorded.push_back(req);
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.recorded).iter().cloned().collect()
    }

    pub(crate) fn clear_requests(&self) {
        lock(&self.recorded).clear();
    }

    /// Forget scripts, recorded requests and counters; restore the default step.
    pub(crate) fn reset(&self) {
        lock(&self.scripts).clear();
        self.set_default(Step::ok());
        self.clear_requests();
        // Counters of requests still in flight stay alive through their guards;
        // dropping the map only detaches them from future snapshots.
        lock(&self.keys).clear();
    }

    fn counters(&self, key: &str) -> Arc<KeyCounters> {
        let mut keys = lock(&self.keys);
        if let Some(c) = keys.get(key) {
            return c.clone();
        }
        let c = Arc::new(KeyCounters::default());
        keys.insert(key.to_owned(), c.clone());
        c
    }

    /// Count a request for `key` and mark it in flight until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>, key: Option<&str>) -> InFlight {
        let counters = key.map(|k| {
            let c = self.counters(k);
            c.requests.fetch_add(1, Ordering::Relaxed);
            let now = c.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
            c.max_in_flight.fetch_max(now, Ordering::AcqRel);
            c
        });
        self.total_in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            shared: self.clone(),
            counters,
        }
    }

    pub(crate) fn total_in_flight(&self) -> u64 {
        self.total_in_flight.load(Ordering::Acquire)
    }

    pub(crate) fn idle_notify(&self) -> &Notify {
        &self.idle
    }

    pub(crate) fn key_stats(&self, key: &str) -> KeyStats {
        lock(&self.keys)
            .get(key)
            .map(|c| snapshot(c))
            .unwrap_or_default()
    }

    pub(crate) fn stats(&self) -> MockStats {
        let keys = lock(&self.keys)
            .iter()
            .map(|(k, c)| (k.clone(), snapshot(c)))
            .collect();
        MockStats {
            total_requests: self.seq.load(Ordering::Relaxed),
            in_flight: self.total_in_flight(),
            keys,
        }
    }
}

fn snapshot(c: &KeyCounters) -> KeyStats {
    KeyStats {
        requests: c.requests.load(Ordering::Relaxed),
        in_flight: c.in_flight.load(Ordering::Acquire),
        max_in_flight: c.max_in_flight.load(Ordering::Acquire),
    }
}

/// Marks one request as in flight; dropped when its response body finished
/// or was dropped (it travels inside the body).
pub(crate) struct InFlight {
    shared: Arc<Shared>,
    counters: Option<Arc<KeyCounters>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(c) = &self.counters {
            c.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        if self.shared.total_in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.idle.notify_waiters();
        }
    }
}
