//! Prometheus metrics: the per-gateway registry (built on `prometheus-client`), the recording
//! hooks the request path calls, and the text exposition (format 0.0.4) served at
//! `GET /metrics`.
//!
//! Counts and money are integer counters (money in nano-USD, so sums are exact); durations
//! are `f64` seconds in fixed-bucket histograms. Labels are bounded: API formats, status
//! classes, outcome and error kinds from fixed code paths, and model names from the
//! configured catalogue (never user ids, key ids or request ids). Figures that describe the
//! present (breaker states, leases held, the usage writer's queue) are read at scrape time
//! and set just before encoding.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aether_coord::breaker::BreakerState;
use aether_coord::{LiveErrors, LiveOp, Scope};
use aether_domain::entities::{UsageRecord, UsageStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::Gateway;

/// The `Content-Type` of the exposition served at `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Histogram bucket upper bounds, in seconds (5 ms … 300 s).
const BUCKETS_S: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(BUCKETS_S)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    api_format: &'static str,
    status_class: &'static str,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FormatLabels {
    api_format: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

type DurationFamily = Family<FormatLabels, Histogram, fn() -> Histogram>;

/// The registry of one gateway and handles to its metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: DurationFamily,
    ttfb: DurationFamily,
    tokens: Family<TokenLabels, Counter>,
    cost_nanos: Family<ModelLabels, Counter>,
    failovers: Family<FormatLabels, Counter>,
    upstream_errors: Family<ClassLabels, Counter>,
    breaker_keys: Family<StateLabels, Gauge<u64, std::sync::atomic::AtomicU64>>,
    leases_held: Family<ScopeLabels, Gauge<u64, std::sync::atomic::AtomicU64>>,
    usage_queue_depth: Gauge<u64, std::sync::atomic::AtomicU64>,
    usage_batches_written: Counter,
    usage_batch_failures: Counter,
    journal_outstanding: Gauge<u64, std::sync::atomic::AtomicU64>,
    journal_errors: Counter,
    live_state_errors: Family<OpLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "aether_requests",
            "Gateway requests by client API format, status class and outcome (success, or the error type).",
            requests.clone(),
        );
        let latency = DurationFamily::new_with_constructor(duration_histogram);
        registry.register(
            "aether_request_duration_seconds",
            "Request latency (until the response or the stream ended) by client API format.",
            latency.clone(),
        );
        let ttfb = DurationFamily::new_with_constructor(duration_histogram);
        registry.register(
            "aether_ttfb_seconds",
            "Time to the first byte sent to the client, by client API format.",
            ttfb.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "aether_tokens",
            "Tokens by kind (input, output, cache_read, cache_write) and model.",
            tokens.clone(),
        );
        let cost_nanos = Family::<ModelLabels, Counter>::default();
        registry.register(
            "aether_cost_nanousd",
            "Charged cost in nano-USD (1e-9 USD), exact, by model.",
            cost_nanos.clone(),
        );
        let failovers = Family::<FormatLabels, Counter>::default();
        registry.register(
            "aether_failovers",
            "Upstream attempts beyond a request's first, by client API format.",
            failovers.clone(),
        );
        let upstream_errors = Family::<ClassLabels, Counter>::default();
        registry.register(
            "aether_upstream_errors",
            "Failed upstream attempts by class (429, 5xx, timeout, connect, transport, html, malformed, client_error, other).",
            upstream_errors.clone(),
        );
        let breaker_keys = Family::default();
        registry.register(
            "aether_breaker_keys",
            "Routed upstream keys per circuit-breaker state.",
            Family::clone(&breaker_keys),
        );
        let leases_held = Family::default();
        registry.register(
            "aether_leases_held",
            "Concurrency leases held now, summed per scope type (endpoint, provider_key).",
            Family::clone(&leases_held),
        );
        let usage_queue_depth = Gauge::default();
        registry.register(
            "aether_usage_queue_depth",
            "Usage events enqueued but not yet committed to the database.",
            Gauge::clone(&usage_queue_depth),
        );
        let usage_batches_written = Counter::default();
        registry.register(
            "aether_usage_batches_written",
            "Usage batches committed.",
            usage_batches_written.clone(),
        );
        let usage_batch_failures = Counter::default();
        registry.register(
            "aether_usage_batch_failures",
            "Usage batch writes that failed (each is retried).",
            usage_batch_failures.clone(),
        );
        let journal_outstanding = Gauge::default();
        registry.register(
            "aether_usage_journal_outstanding",
            "Finished requests in the usage journal not yet committed to the database (what a crash now would replay at the next start).",
            Gauge::clone(&journal_outstanding),
        );
        let journal_errors = Counter::default();
        registry.register(
            "aether_usage_journal_errors",
            "Finished requests that could not be appended to the usage journal (still queued for the database, but not crash-safe); disk full or unwritable data directory.",
            journal_errors.clone(),
        );
        let live_state_errors = Family::<OpLabels, Counter>::default();
        registry.register(
            "aether_live_state_errors",
            "Live-state calls that failed because Redis could not be reached (each fell back to this instance's own state or, for budgets, refused), by kind of call.",
            live_state_errors.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            ttfb,
            tokens,
            cost_nanos,
            failovers,
            upstream_errors,
            breaker_keys,
            leases_held,
            usage_queue_depth,
            usage_batches_written,
            usage_batch_failures,
            journal_outstanding,
            journal_errors,
            live_state_errors,
        }
    }
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
    /// A request's final record (called once, by `Finish`).
    pub fn finished(&self, r: &UsageRecord, model: &str, elapsed: Duration) {
        let format = r.api_format.as_str();
        let code = r.status_code.unwrap_or(0);
        let status_class = match code {
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
        self.requests
            .get_or_create(&RequestLabels {
                api_format: format,
                status_class,
                outcome,
            })
            .inc();
        let fl = FormatLabels { api_format: format };
        self.latency
            .get_or_create(&fl)
            .observe(elapsed.as_secs_f64());
        if let Some(ms) = r.ttfb_ms.and_then(|m| u64::try_from(m).ok()) {
            self.ttfb
                .get_or_create(&fl)
                .observe(Duration::from_millis(ms).as_secs_f64());
        }
        for (kind, n) in [
            ("input", t.input),
            ("output", t.output),
            ("cache_read", t.cache_read),
            ("cache_write", t.cache_creation_5m + t.cache_creation_1h),
        ] {
            if n > 0 {
                self.tokens
                    .get_or_create(&TokenLabels {
                        model: model.to_string(),
                        kind,
                    })
                    .inc_by(n);
            }
        }
        // A counter only grows: charges are never negative, and a zero charge adds nothing.
        if let Ok(nanos) = u64::try_from(r.cost.total.nanos())
            && nanos > 0
        {
            self.cost_nanos
                .get_or_create(&ModelLabels {
                    model: model.to_string(),
                })
                .inc_by(nanos);
        }
    }

    /// An attempt beyond the request's first.
    pub fn failover(&self, format: &'static str) {
        self.failovers
            .get_or_create(&FormatLabels { api_format: format })
            .inc();
    }

    /// A failed upstream attempt.
    pub fn upstream_error(&self, kind: &str, status: Option<u16>) {
        self.upstream_errors
            .get_or_create(&ClassLabels {
                class: error_class(kind, status),
            })
            .inc();
    }

    /// Mirrors the live state's own failure counters (kept by `aether-coord` at no cost to
    /// the request path) into the registry. Every kind is set, zero included, so an alert on
    /// the rate sees the series from the start.
    fn live_state_errors(&self, errors: LiveErrors) {
        for (op, n) in LiveOp::ALL.iter().zip(errors) {
            self.live_state_errors
                .get_or_create(&OpLabels { op: op.as_str() })
                .inner()
                .store(n, Ordering::Relaxed);
        }
    }

    /// The registry in the Prometheus text format (0.0.4), as it stands now.
    fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            // Writing into a String cannot fail; keep whatever was written.
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// The whole exposition: the gauges are first read now from the live state, the snapshot and
/// the usage writer, then the registry is encoded.
pub async fn render(gw: &Gateway) -> String {
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
    let m = gw.metrics();
    m.live_state_errors(live.errors());
    for (state, n) in [("closed", closed), ("open", open), ("half_open", half)] {
        m.breaker_keys.get_or_create(&StateLabels { state }).set(n);
    }
    for (scope, n) in [("endpoint", endpoint_leases), ("provider_key", key_leases)] {
        m.leases_held.get_or_create(&ScopeLabels { scope }).set(n);
    }
    let stats = &gw.usage().stats;
    m.usage_queue_depth
        .set(stats.queued.load(Ordering::Relaxed));
    // The writer's own monotonic counters, mirrored into the registry.
    m.usage_batches_written.inner().store(
        stats.written_batches.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    m.usage_batch_failures.inner().store(
        stats.failed_attempts.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    m.journal_outstanding.set(gw.usage().journal_outstanding());
    m.journal_errors.inner().store(
        stats.journal_errors.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    m.encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
    }

    #[test]
    fn metrics_histogram_buckets_are_cumulative_and_bounds_print_like_prometheus() {
        let m = Metrics::default();
        let h = m.latency.get_or_create(&FormatLabels {
            api_format: "CLAUDE",
        });
        h.observe(Duration::from_millis(5).as_secs_f64());
        h.observe(Duration::from_millis(7).as_secs_f64());
        h.observe(Duration::from_secs(1000).as_secs_f64());
        drop(h);
        let text = m.encode();
        let b = |le: &str| {
            line(
                &text,
                &format!(
                    "aether_request_duration_seconds_bucket{{api_format=\"CLAUDE\",le=\"{le}\"}}"
                ),
            )
        };
        assert_eq!(b("0.005"), Some("1"), "{text}");
        assert_eq!(b("0.01"), Some("2"));
        assert_eq!(b("2.5"), Some("2"));
        assert_eq!(b("300"), Some("2"));
        assert_eq!(b("+Inf"), Some("3"));
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("aether_request_duration_seconds_bucket{"))
                .count(),
            16
        );
        assert_eq!(
            line(
                &text,
                "aether_request_duration_seconds_count{api_format=\"CLAUDE\"}"
            ),
            Some("3")
        );
        let sum: f64 = line(
            &text,
            "aether_request_duration_seconds_sum{api_format=\"CLAUDE\"}",
        )
        .unwrap()
        .parse()
        .unwrap();
        assert!((sum - 1000.012).abs() < 1e-9, "{sum}");
        assert!(text.contains("# TYPE aether_request_duration_seconds histogram"));
        assert!(
            !text.contains("# EOF"),
            "0.0.4 text format has no EOF marker"
        );
    }

    #[test]
    fn metrics_counters_keep_their_names_and_escape_labels() {
        let m = Metrics::default();
        m.failover("OPENAI");
        m.failover("OPENAI");
        m.upstream_error("server_error", Some(503));
        m.cost_nanos
            .get_or_create(&ModelLabels {
                model: "we\"ird\\model".into(),
            })
            .inc_by(12_345_678_901);
        let text = m.encode();
        assert!(
            text.contains("# TYPE aether_failovers_total counter"),
            "{text}"
        );
        assert_eq!(
            line(&text, "aether_failovers_total{api_format=\"OPENAI\"}"),
            Some("2")
        );
        assert_eq!(
            line(&text, "aether_upstream_errors_total{class=\"5xx\"}"),
            Some("1")
        );
        assert_eq!(
            line(
                &text,
                "aether_cost_nanousd_total{model=\"we\\\"ird\\\\model\"}"
            ),
            Some("12345678901")
        );
        assert!(text.contains("# TYPE aether_usage_queue_depth gauge"));
        assert_eq!(line(&text, "aether_usage_queue_depth"), Some("0"));
        assert_eq!(line(&text, "aether_usage_batches_written_total"), Some("0"));
        assert!(line(&text, "aether_requests_total{").is_none());
    }

    #[test]
    fn live_state_errors_are_mirrored_per_kind_of_call() {
        let m = Metrics::default();
        let mut errors = [0; LiveOp::ALL.len()];
        errors[LiveOp::ALL
            .iter()
            .position(|o| *o == LiveOp::Budget)
            .unwrap()] = 3;
        m.live_state_errors(errors);
        let text = m.encode();
        assert!(
            text.contains("# TYPE aether_live_state_errors_total counter"),
            "{text}"
        );
        assert_eq!(
            line(&text, "aether_live_state_errors_total{op=\"budget\"}"),
            Some("3")
        );
        for op in [
            "affinity", "cooldown", "lease", "rpm", "breaker", "adaptive",
        ] {
            let series = format!("aether_live_state_errors_total{{op=\"{op}\"}}");
            assert_eq!(line(&text, &series), Some("0"), "{op}");
        }
        // Mirrored, not added: a second scrape shows the source's figure.
        errors[0] = 2;
        m.live_state_errors(errors);
        let text = m.encode();
        assert_eq!(
            line(&text, "aether_live_state_errors_total{op=\"budget\"}"),
            Some("3")
        );
        assert_eq!(
            line(&text, "aether_live_state_errors_total{op=\"affinity\"}"),
            Some("2")
        );
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
