//! Prometheus metrics: the per-gateway registry, the recording hooks the request path calls,
//! and the text exposition served at `GET /metrics`.
//!
//! Everything is accumulated in integers — counts, microseconds, nano-USD — and only turned
//! into decimal text when rendered, so sums are exact. Labels are bounded: API formats,
//! status classes, outcome and error kinds from fixed code paths, and model names from the
//! configured catalogue (never user ids, key ids or request ids). Figures that describe the
//! present (breaker states, leases held, the usage writer's queue) are read at scrape time.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aether_coord::Scope;
use aether_coord::breaker::BreakerState;
use aether_domain::entities::{UsageRecord, UsageStatus};

use crate::Gateway;

/// Histogram bucket upper bounds, in microseconds (5 ms … 300 s).
const BUCKETS_US: [u64; 15] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
    300_000_000,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is `+Inf` only.
    counts: [u64; BUCKETS_US.len() + 1],
    count: u64,
    sum_us: u64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS_US.len());
        self.counts[i] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }
}

#[derive(Debug, Default)]
struct State {
    /// (api_format, status class, outcome) → requests.
    requests: BTreeMap<(&'static str, &'static str, String), u64>,
    latency: BTreeMap<&'static str, Histogram>,
    ttfb: BTreeMap<&'static str, Histogram>,
    /// (model, kind) → tokens.
    tokens: BTreeMap<(String, &'static str), u64>,
    /// model → charged nano-USD.
    cost_nanos: BTreeMap<String, i64>,
    /// api_format → attempts beyond the first.
    failovers: BTreeMap<&'static str, u64>,
    /// error class → failed upstream attempts.
    upstream_errors: BTreeMap<&'static str, u64>,
}

/// The registry of one gateway.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

/// The class of a failed upstream attempt, from its error kind and HTTP status.
#[must_use]
pub fn error_class(kind: &str, status: Option<u16>) -> &'static str {
    match (kind, status) {
        (_, Some(429)) | ("rate_limited", _) => "429",
        (k, _) if k.contains("timeout") => "timeout",
        ("connect_error", _) => "connect",
        ("transport_error", _) => "transport",
        ("html", _) => "html",
        (k, _) if k.starts_with("malformed") || k.starts_with("empty") => "malformed",
        (_, Some(s)) if s >= 500 => "5xx",
        (_, Some(s)) if s >= 400 => "client_error",
        _ => "other",
    }
}

/// A label value made safe and bounded: `[a-z0-9_]`, at most 48 characters.
fn bounded(s: &str) -> String {
    s.chars()
        .take(48)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl Metrics {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A request's final record (called once, by `Finish`).
    pub fn finished(&self, r: &UsageRecord, model: &str, elapsed: Duration) {
        let format = r.api_format.as_str();
        let code = r.status_code.unwrap_or(0);
        let class = match code {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        };
        let outcome = match r.status {
            UsageStatus::Completed => "success".to_string(),
            _ => r
                .error_type
                .as_deref()
                .map_or_else(|| "error".to_string(), bounded),
        };
        let t = &r.tokens;
        let mut s = self.state();
        *s.requests.entry((format, class, outcome)).or_default() += 1;
        s.latency.entry(format).or_default().observe(elapsed);
        if let Some(ms) = r.ttfb_ms.and_then(|m| u64::try_from(m).ok()) {
            s.ttfb
                .entry(format)
                .or_default()
                .observe(Duration::from_millis(ms));
        }
        for (kind, n) in [
            ("input", t.input),
            ("output", t.output),
            ("cache_read", t.cache_read),
            ("cache_write", t.cache_creation_5m + t.cache_creation_1h),
        ] {
            if n > 0 {
                *s.tokens.entry((model.to_string(), kind)).or_default() += n;
            }
        }
        let nanos = r.cost.total.nanos();
        if nanos != 0 {
            let c = s.cost_nanos.entry(model.to_string()).or_default();
            *c = c.saturating_add(nanos);
        }
    }

    /// An attempt beyond the request's first.
    pub fn failover(&self, format: &'static str) {
        *self.state().failovers.entry(format).or_default() += 1;
    }

    /// A failed upstream attempt.
    pub fn upstream_error(&self, kind: &str, status: Option<u16>) {
        *self
            .state()
            .upstream_errors
            .entry(error_class(kind, status))
            .or_default() += 1;
    }

    /// The counters and histograms in the text exposition format.
    fn render_counters(&self, out: &mut String) {
        let s = self.state();
        header(
            out,
            "aether_requests_total",
            "counter",
            "Gateway requests by client API format, status class and outcome (success, or the error type).",
        );
        for ((f, c, o), n) in &s.requests {
            let _ = writeln!(
                out,
                "aether_requests_total{{api_format=\"{f}\",status_class=\"{c}\",outcome=\"{o}\"}} {n}"
            );
        }
        histogram(
            out,
            "aether_request_duration_seconds",
            "Request latency (until the response or the stream ended) by client API format.",
            &s.latency,
        );
        histogram(
            out,
            "aether_ttfb_seconds",
            "Time to the first byte sent to the client, by client API format.",
            &s.ttfb,
        );
        header(
            out,
            "aether_tokens_total",
            "counter",
            "Tokens by kind (input, output, cache_read, cache_write) and model.",
        );
        for ((m, k), n) in &s.tokens {
            let _ = writeln!(
                out,
                "aether_tokens_total{{model=\"{}\",kind=\"{k}\"}} {n}",
                escape(m)
            );
        }
        header(
            out,
            "aether_cost_nanousd_total",
            "counter",
            "Charged cost in nano-USD (1e-9 USD), exact, by model.",
        );
        for (m, n) in &s.cost_nanos {
            let _ = writeln!(
                out,
                "aether_cost_nanousd_total{{model=\"{}\"}} {n}",
                escape(m)
            );
        }
        header(
            out,
            "aether_failovers_total",
            "counter",
            "Upstream attempts beyond a request's first, by client API format.",
        );
        for (f, n) in &s.failovers {
            let _ = writeln!(out, "aether_failovers_total{{api_format=\"{f}\"}} {n}");
        }
        header(
            out,
            "aether_upstream_errors_total",
            "counter",
            "Failed upstream attempts by class (429, 5xx, timeout, connect, transport, html, malformed, client_error, other).",
        );
        for (c, n) in &s.upstream_errors {
            let _ = writeln!(out, "aether_upstream_errors_total{{class=\"{c}\"}} {n}");
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Microseconds as exact decimal seconds.
fn seconds(us: u64) -> String {
    let frac = us % 1_000_000;
    if frac == 0 {
        format!("{}", us / 1_000_000)
    } else {
        let f = format!("{frac:06}");
        format!("{}.{}", us / 1_000_000, f.trim_end_matches('0'))
    }
}

fn histogram(out: &mut String, name: &str, help: &str, hs: &BTreeMap<&'static str, Histogram>) {
    header(out, name, "histogram", help);
    for (f, h) in hs {
        let mut cum = 0;
        for (i, b) in BUCKETS_US.iter().enumerate() {
            cum += h.counts[i];
            let _ = writeln!(
                out,
                "{name}_bucket{{api_format=\"{f}\",le=\"{}\"}} {cum}",
                seconds(*b)
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{api_format=\"{f}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "{name}_sum{{api_format=\"{f}\"}} {}",
            seconds(h.sum_us)
        );
        let _ = writeln!(out, "{name}_count{{api_format=\"{f}\"}} {}", h.count);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition: counters, then the gauges read now from the live state, the
/// snapshot and the usage writer.
pub async fn render(gw: &Gateway) -> String {
    let mut out = String::with_capacity(8 * 1024);
    gw.metrics().render_counters(&mut out);

    let snap = gw.snapshot();
    let mut keys = HashSet::new();
    let mut endpoints = HashSet::new();
    for m in snap.listed_models() {
        for r in snap.routes(m.id) {
            keys.insert(r.key.key.id);
            endpoints.insert(r.endpoint.endpoint.id);
        }
    }
    let live = gw.live();
    let (mut closed, mut open, mut half) = (0u64, 0u64, 0u64);
    let mut key_leases = 0u64;
    for k in &keys {
        match live.breaker_view(*k).await.state {
            BreakerState::Closed => closed += 1,
            BreakerState::Open => open += 1,
            BreakerState::HalfOpen => half += 1,
        }
        key_leases += u64::from(live.lease_count(Scope::ProviderKey(*k)).await);
    }
    let mut endpoint_leases = 0u64;
    for e in &endpoints {
        endpoint_leases += u64::from(live.lease_count(Scope::Endpoint(*e)).await);
    }
    header(
        &mut out,
        "aether_breaker_keys",
        "gauge",
        "Routed upstream keys per circuit-breaker state.",
    );
    for (state, n) in [("closed", closed), ("open", open), ("half_open", half)] {
        let _ = writeln!(out, "aether_breaker_keys{{state=\"{state}\"}} {n}");
    }
    header(
        &mut out,
        "aether_leases_held",
        "gauge",
        "Concurrency leases held now, summed per scope type (endpoint, provider_key).",
    );
    let _ = writeln!(
        out,
        "aether_leases_held{{scope=\"endpoint\"}} {endpoint_leases}"
    );
    let _ = writeln!(
        out,
        "aether_leases_held{{scope=\"provider_key\"}} {key_leases}"
    );
    let stats = &gw.usage().stats;
    header(
        &mut out,
        "aether_usage_queue_depth",
        "gauge",
        "Usage events enqueued but not yet committed to the database.",
    );
    let _ = writeln!(
        out,
        "aether_usage_queue_depth {}",
        stats.queued.load(Ordering::Relaxed)
    );
    header(
        &mut out,
        "aether_usage_batches_written_total",
        "counter",
        "Usage batches committed.",
    );
    let _ = writeln!(
        out,
        "aether_usage_batches_written_total {}",
        stats.written_batches.load(Ordering::Relaxed)
    );
    header(
        &mut out,
        "aether_usage_batch_failures_total",
        "counter",
        "Usage batch writes that failed (each is retried).",
    );
    let _ = writeln!(
        out,
        "aether_usage_batch_failures_total {}",
        stats.failed_attempts.load(Ordering::Relaxed)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(5_000), "0.005");
        assert_eq!(seconds(1_000_000), "1");
        assert_eq!(seconds(2_500_000), "2.5");
        assert_eq!(seconds(1_234_567), "1.234567");
    }

    #[test]
    fn histogram_puts_observations_in_the_first_bucket_that_holds_them() {
        let mut h = Histogram::default();
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(7));
        h.observe(Duration::from_secs(1000));
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[BUCKETS_US.len()], 1);
        assert_eq!(h.count, 3);
        assert_eq!(h.sum_us, 1_000_012_000);
    }

    #[test]
    fn error_classes() {
        assert_eq!(error_class("rate_limited", Some(429)), "429");
        assert_eq!(error_class("server_error", Some(500)), "5xx");
        assert_eq!(error_class("overloaded", Some(529)), "5xx");
        assert_eq!(error_class("first_byte_timeout", Some(200)), "timeout");
        assert_eq!(error_class("connect_error", None), "connect");
        assert_eq!(error_class("html", Some(200)), "html");
        assert_eq!(error_class("malformed_stream", Some(200)), "malformed");
        assert_eq!(error_class("unauthorized", Some(401)), "client_error");
        assert_eq!(bounded("Quota-Exhausted!"), "quota_exhausted_");
    }
}
