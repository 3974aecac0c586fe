//! The attempt loop (SPEC §3.4–3.5): walk the planned candidates, send, classify the outcome
//! with the one classifier, fail over on key/provider errors, return client errors as they
//! are, and commit a stream only at its first real data event.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_coord::{AffinityKey, AffinityOutcome, Lease, Scope};
use aether_domain::entities::{
    AttemptTrace, GlobalModel, TraceStatus, UsageBodies, UsageRecord, UsageStatus,
};
use aether_domain::format::Dialect;
use aether_domain::net::ClientIp;
use aether_domain::pricing::CostBreakdown;
use aether_domain::{ApiFormat, ProviderKeyId, RequestId, Timestamp, TraceId};
use aether_protocol::classify::{
    ClientErrorKind, FirstEvent, KeyErrorClass, MAX_ERROR_BODY_BYTES, Outcome, RateLimitKind,
    classify_first_element, classify_first_event, classify_http, error_message,
    retry_after_from_body, retry_after_secs,
};
use aether_protocol::errors::ErrorKind;
use aether_protocol::request::{RequestInfo, ensure_include_usage, inspect, replace_model};
use aether_protocol::usage::{StreamUsage, from_response};
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::Gateway;
use crate::admit::admit;
use crate::error::GwError;
use crate::limits::{Reservation, admit_candidate, caller_budget, estimate, provider_budget};
use crate::needs::{client_session, masked_headers, needs};
use crate::plan::{Ask, Candidate, Plan, model_allowed, plan};
use crate::relay::{
    Committed, Decoder, Finish, LogCapture, MAX_EVENT_BYTES, Unit, UpstreamBody, relay,
};
use crate::snapshot::{Caller, Snapshot};
use crate::upstream::{self, Operation};
use crate::usage::UsageEvent;

/// Largest non-stream upstream answer the gateway buffers.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// A client request as the routes hand it over.
pub struct Incoming {
    pub format: ApiFormat,
    pub op: Operation,
    pub parts: Parts,
    pub body: Body,
    /// Gemini: the model named in the URL.
    pub path_model: Option<String>,
}

/// Handles one client request end to end; every error is answered in the caller's dialect.
pub async fn handle(gw: &Gateway, inc: Incoming) -> Response<Body> {
    let dialect = inc.format.dialect();
    match Exchange::prepare(gw, inc).await {
        Ok(x) => {
            let id = x.id;
            let mut shutdown = gw.shutdown_watch();
            // Past the shutdown grace a request still waiting on its upstream is dropped
            // (its `Finish` records it as `server_shutdown`) and answered 503.
            let mut resp = tokio::select! {
                r = x.run() => r,
                _ = shutdown.wait_for(|v| *v) => GwError::new(
                    ErrorKind::Unavailable,
                    "the gateway is shutting down; the request was not finished",
                )
                .render(dialect),
            };
            // Errors decided by the gateway carry the request id too (it names the record).
            if !resp.headers().contains_key("x-aether-request-id")
                && let Ok(v) = HeaderValue::from_str(&id.to_string())
            {
                resp.headers_mut().insert("x-aether-request-id", v);
            }
            resp
        }
        Err(e) => e.render(dialect),
    }
}

/// Why one attempt failed, reduced to what the final answer depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailClass {
    RateLimited,
    Overloaded,
    Timeout,
    Other,
}

struct Failure {
    class: FailClass,
    retry_after: Option<u64>,
    /// The same key may be tried again (affinity retries): not after 401/403/404/429.
    retry_same_key: bool,
    /// An upstream 429, and which limit it reported.
    rate_limit: Option<RateLimitKind>,
}

/// How an attempt that produced the final response went, for the key's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Success,
    /// The request's own fault: no health change.
    ClientError,
}

/// Everything about one request, decided before the first attempt.
struct Exchange {
    gw: Gateway,
    snap: Arc<Snapshot>,
    caller: Arc<Caller>,
    format: ApiFormat,
    dialect: Dialect,
    op: Operation,
    stream: bool,
    model: Arc<GlobalModel>,
    requested: String,
    info: RequestInfo,
    body: Bytes,
    headers: HeaderMap,
    query: String,
    id: RequestId,
    started: Instant,
    created: Timestamp,
    affinity_key: AffinityKey,
    record: UsageRecord,
    log_headers: bool,
    log_bodies: usize,
    /// Gemini: the model named in the URL (the body has none).
    path_model: Option<String>,
    /// Gemini clients: an SSE stream (`alt=sse`) rather than a JSON array.
    client_sse: bool,
    /// Endpoints of other dialects may serve this request through conversion.
    cross: bool,
    /// The request in canonical form, parsed once when a converted candidate is first tried.
    canonical: std::sync::OnceLock<Result<aether_convert::Request, String>>,
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

impl Exchange {
    async fn prepare(gw: &Gateway, inc: Incoming) -> Result<Self, GwError> {
        let started = Instant::now();
        let created = Timestamp::now();
        let snap = gw.snapshot();
        let dialect = inc.format.dialect();
        let query_raw = inc.parts.uri.query().map(str::to_string);
        let caller = admit(
            &snap,
            &inc.parts.headers,
            query_raw.as_deref(),
            inc.format,
            created,
        )?;
        let limit = snap.settings.max_request_body_bytes();
        let body = axum::body::to_bytes(inc.body, limit).await.map_err(|_| {
            GwError::too_large(format!("the request body is larger than {limit} bytes"))
        })?;
        let info = inspect(&body).map_err(|e| GwError::invalid(e.to_string()))?;
        let requested = inc
            .path_model
            .clone()
            .or_else(|| info.model.clone())
            .filter(|m| !m.is_empty())
            .ok_or_else(|| GwError::invalid("`model` is required"))?;
        let model = snap.resolve_model(&requested).cloned().ok_or_else(|| {
            GwError::not_found(format!(
                "model `{requested}` does not exist or is not available"
            ))
        })?;
        if !model_allowed(&caller, &model, &requested) {
            return Err(GwError::permission(format!(
                "this API key may not use model `{requested}`"
            )));
        }
        let stream = match inc.op {
            Operation::Generate { stream } => stream,
            Operation::CountTokens => false,
            _ => info.stream.unwrap_or(false),
        };
        let headers = inc.parts.headers;
        let client_ip: Option<IpAddr> = inc.parts.extensions.get::<ClientIp>().map(|c| c.0);
        let id = RequestId::new();
        let session = client_session(&headers, info.prompt_cache_key.as_deref());
        let record = UsageRecord {
            id,
            client_request_id: header_str(&headers, "x-request-id")
                .map(|s| s.chars().take(128).collect()),
            user_id: caller.key.user_id,
            api_key_id: Some(caller.key.id),
            provider_id: None,
            endpoint_id: None,
            provider_key_id: None,
            global_model_id: Some(model.id),
            requested_model: requested.chars().take(200).collect(),
            upstream_model: None,
            api_format: inc.format,
            endpoint_api_format: None,
            is_stream: stream,
            status: UsageStatus::Pending,
            status_code: None,
            error_type: None,
            error_message: None,
            tokens: aether_domain::pricing::TokenUsage::default(),
            cost: CostBreakdown::default(),
            unpriced: false,
            latency_ms: None,
            ttfb_ms: None,
            client_ip: client_ip.map(|i| i.to_string()),
            user_agent: header_str(&headers, "user-agent").map(|s| s.chars().take(300).collect()),
            created_at: created,
            updated_at: created,
        };
        let cross = !matches!(inc.op, Operation::CountTokens)
            && model
                .capabilities
                .allow_cross_format
                .unwrap_or_else(|| snap.settings.allow_cross_format());
        let client_sse = query_raw
            .as_deref()
            .is_some_and(|q| q.split('&').any(|p| p == "alt=sse"));
        let level = snap.settings.log_level().to_string();
        let log_headers = level != "basic";
        let log_bodies = if level == "full" {
            snap.settings.log_body_max_bytes()
        } else {
            0
        };
        Ok(Self {
            gw: gw.clone(),
            affinity_key: AffinityKey {
                api_key: caller.key.id,
                format: inc.format,
                model: model.id,
                session,
            },
            snap,
            caller,
            format: inc.format,
            dialect,
            op: inc.op,
            stream,
            model,
            requested,
            info,
            body,
            headers,
            query: upstream::forwarded_query(query_raw.as_deref()),
            id,
            started,
            created,
            record,
            log_headers,
            log_bodies,
            path_model: inc.path_model,
            client_sse,
            cross,
            canonical: std::sync::OnceLock::new(),
        })
    }

    fn finish(&self) -> Finish {
        let mut f = Finish::new(
            self.gw.usage().clone(),
            self.record.clone(),
            self.model.clone(),
            self.caller.clone(),
            self.started,
            self.dialect,
        );
        f.live = Some(self.gw.live().clone());
        f.metrics = Some(self.gw.metrics().clone());
        f.shutdown = Some(self.gw.shutdown_watch());
        if self.log_headers {
            let extra = self.snap.settings.masked_headers();
            let mut b = UsageBodies {
                request_headers: Some(masked_headers(&self.headers, &extra)),
                ..Default::default()
            };
            if self.log_bodies > 0 {
                let cut = &self.body[..self.body.len().min(self.log_bodies)];
                b.request_body = Some(String::from_utf8_lossy(cut).into_owned());
            }
            f.log = LogCapture::new(Some(b), self.log_bodies);
        }
        f
    }

    async fn run(self) -> Response<Body> {
        if self.op == Operation::CountTokens {
            return self.count_tokens().await;
        }
        let mut fin = self.finish();
        self.gw
            .usage()
            .send(UsageEvent::Record(Box::new(self.record.clone())))
            .await;
        let live = self.gw.live().clone();
        let lease_ttl = Duration::from_secs(self.snap.settings.request_timeout_secs() + 600);
        if let Err(e) = self.caller_limits(&mut fin, lease_ttl).await {
            fin.complete(
                UsageStatus::Failed,
                e.kind.status_for(self.dialect),
                None,
                Some(("rate_limited", e.message.clone())),
            );
            return e.render(self.dialect);
        }

        let needs = needs(
            &self.caller,
            &self.model,
            &self.headers,
            self.stream,
            self.info.has_cache_ttl_1h,
        );
        let affinity = if self.snap.settings.cache_affinity() {
            self.gw.live().affinity_get(&self.affinity_key).await
        } else {
            None
        };
        let keys: Vec<_> = self
            .snap
            .routes(self.model.id)
            .iter()
            .map(|r| r.key.key.id)
            .collect();
        let cooling = live.cooling(&keys).await;
        let mut exhausted = Vec::new();
        for r in self.snap.routes(self.model.id) {
            if let Some((account, seed, quota)) = provider_budget(&r.provider, self.created)
                && !exhausted.contains(&r.provider.id)
                && live.budget_view(account, seed).await.used >= quota
            {
                exhausted.push(r.provider.id);
            }
        }
        let ask = Ask {
            format: self.format,
            needs: &needs,
            affinity,
            cooling: &cooling,
            exhausted: &exhausted,
            now: self.created,
            convert: self.cross,
        };
        let Plan {
            candidates,
            skipped,
        } = plan(&self.snap, &self.caller, &self.model, &ask);
        let now = Timestamp::now();
        for (i, s) in skipped.iter().enumerate() {
            fin.traces.push(AttemptTrace {
                id: TraceId::new(),
                request_id: self.id,
                candidate_index: u32::try_from(candidates.len() + i).unwrap_or(u32::MAX),
                retry_index: 0,
                provider_id: Some(s.route.provider.id),
                endpoint_id: Some(s.route.endpoint.endpoint.id),
                provider_key_id: Some(s.route.key.key.id),
                status: TraceStatus::Skipped,
                skip_reason: Some(s.reason.clone()),
                status_code: None,
                error_type: None,
                error_message: None,
                latency_ms: None,
                concurrency: None,
                conversion: None,
                started_at: now,
                finished_at: Some(now),
            });
        }
        if candidates.is_empty() {
            let why = if skipped.is_empty() {
                format!(
                    "no upstream serves model `{}` in the {} format",
                    self.requested, self.format
                )
            } else {
                let mut reasons: Vec<&str> = skipped.iter().map(|s| s.reason.as_str()).collect();
                reasons.sort_unstable();
                reasons.dedup();
                format!(
                    "no upstream can take this request for `{}` ({})",
                    self.requested,
                    reasons.join("; ")
                )
            };
            let e = GwError::new(ErrorKind::Unavailable, why);
            fin.complete(
                UsageStatus::Failed,
                503,
                None,
                Some(("no_candidate", e.message.clone())),
            );
            return e.render(self.dialect);
        }
        if let Some((account, seed, limit)) = caller_budget(&self.caller, self.created) {
            let amount = estimate(
                self.body.len(),
                self.info.max_tokens,
                &self.model,
                &candidates,
            );
            if let Err(refused) = live.budget_reserve(account, seed, limit, amount).await {
                let (e, error_type) =
                    crate::limits::budget_refusal(refused, self.caller.key.is_standalone);
                fin.complete(
                    UsageStatus::Failed,
                    e.kind.status_for(self.dialect),
                    None,
                    Some((error_type, e.message.clone())),
                );
                return e.render(self.dialect);
            }
            fin.reservation = Some(Reservation {
                account,
                seed,
                amount,
            });
        }

        let deadline =
            self.started + Duration::from_secs(self.snap.settings.request_timeout_secs());
        let mut bodies: HashMap<String, Bytes> = HashMap::new();
        let mut failures: Vec<Failure> = Vec::new();
        let mut tried = 0usize;
        'candidates: for (ci, cand) in candidates.iter().enumerate() {
            let retries = if cand.affinity {
                cand.route.endpoint.endpoint.max_retries
            } else {
                0
            };
            for ri in 0..=retries {
                if Instant::now() >= deadline {
                    failures.push(Failure {
                        class: FailClass::Timeout,
                        retry_after: None,
                        retry_same_key: false,
                        rate_limit: None,
                    });
                    break 'candidates;
                }
                let admitted = match admit_candidate(&live, cand, lease_ttl).await {
                    Ok(a) => a,
                    Err(passed) => {
                        let mut t = self.trace(cand, ci, ri, Timestamp::now());
                        t.status = TraceStatus::Skipped;
                        t.skip_reason = Some(passed.reason.to_string());
                        t.finished_at = Some(t.started_at);
                        fin.traces.push(t);
                        failures.push(Failure {
                            class: if passed.capacity {
                                FailClass::RateLimited
                            } else {
                                FailClass::Overloaded
                            },
                            retry_after: passed.retry_after,
                            retry_same_key: false,
                            rate_limit: None,
                        });
                        break;
                    }
                };
                let key_id = cand.route.key.key.id;
                let adaptive = cand.route.key.key.max_concurrent.is_none();
                let held = fin.holds.len();
                fin.holds.extend(admitted.leases);
                tried += 1;
                if tried > 1 {
                    self.gw.metrics().failover(self.format.as_str());
                }
                let body = match self.upstream_body(cand, &mut bodies) {
                    Ok(b) => b,
                    Err(e) => {
                        if admitted.probe {
                            live.breaker_release_probe(key_id).await;
                        }
                        fin.complete(
                            UsageStatus::Failed,
                            400,
                            None,
                            Some(("invalid_request", e.message.clone())),
                        );
                        return e.render(self.dialect);
                    }
                };
                match self.attempt(cand, ci, ri, body, deadline, &mut fin).await {
                    Ok((response, Verdict::Success)) => {
                        live.breaker_record(key_id, true).await;
                        live.adaptive_outcome(key_id, true).await;
                        self.count_affinity(affinity, cand).await;
                        return response;
                    }
                    Ok((response, Verdict::ClientError)) => {
                        if admitted.probe {
                            live.breaker_release_probe(key_id).await;
                        }
                        return response;
                    }
                    Err(f) => {
                        fin.holds.truncate(held);
                        live.breaker_record(key_id, false).await;
                        live.adaptive_outcome(key_id, false).await;
                        if let Some(kind) = f.rate_limit
                            && adaptive
                        {
                            let concurrency =
                                matches!(kind, RateLimitKind::Concurrency | RateLimitKind::Unknown);
                            live.adaptive_429(key_id, concurrency, admitted.key_in_use)
                                .await;
                        }
                        let again = f.retry_same_key;
                        failures.push(f);
                        if !again {
                            break;
                        }
                    }
                }
            }
        }
        let e = self.exhausted(&failures, tried);
        let code = e.kind.status_for(self.dialect);
        fin.complete(
            UsageStatus::Failed,
            code,
            None,
            Some(("upstream_exhausted", e.message.clone())),
        );
        e.render(self.dialect)
    }

    /// The caller key's own limits: its requests-per-minute window and its concurrency (a
    /// lease held until the request ends).
    async fn caller_limits(&self, fin: &mut Finish, lease_ttl: Duration) -> Result<(), GwError> {
        let live = self.gw.live();
        let key = &self.caller.key;
        if let Some(n) = key.rate_limit
            && let Err(d) = live.rpm_hit(&[(Scope::ApiKey(key.id), n)]).await
        {
            return Err(GwError::new(
                ErrorKind::RateLimited,
                format!("this API key is limited to {n} requests per minute"),
            )
            .retry_after(Some(d.retry_after_secs)));
        }
        if let Some(n) = key.concurrent_limit {
            match Lease::acquire(live, Scope::ApiKey(key.id), n, lease_ttl).await {
                Some(l) => fin.holds.push(l),
                None => {
                    return Err(GwError::new(
                        ErrorKind::RateLimited,
                        format!("this API key already has {n} requests in flight"),
                    )
                    .retry_after(Some(1)));
                }
            }
        }
        Ok(())
    }

    /// The upstream body for a candidate: the model replaced by the upstream name (Gemini has
    /// it in the URL), and for OpenAI Chat streams usage requested. Cached per upstream name.
    fn upstream_body(
        &self,
        cand: &Candidate,
        cache: &mut HashMap<String, Bytes>,
    ) -> Result<Bytes, GwError> {
        if cand.converted {
            return self.converted_body(cand, cache);
        }
        if let Some(b) = cache.get(&cand.upstream_model) {
            return Ok(b.clone());
        }
        let mut body = self.body.clone();
        if self.stream
            && self.op == Operation::ChatCompletions
            && self.info.stream_include_usage != Some(true)
        {
            body = Bytes::from(
                ensure_include_usage(&body)
                    .map_err(|e| GwError::invalid(e.to_string()))?
                    .0,
            );
        }
        if !matches!(self.op, Operation::Generate { .. })
            && self.info.model.as_deref() != Some(cand.upstream_model.as_str())
        {
            body = Bytes::from(
                replace_model(&body, &cand.upstream_model)
                    .map_err(|e| GwError::invalid(e.to_string()))?,
            );
        }
        cache.insert(cand.upstream_model.clone(), body.clone());
        Ok(body)
    }

    /// The upstream body for a candidate of another dialect: the request parsed once into the
    /// canonical form, the upstream model and the stream flag set, rendered in the endpoint's
    /// dialect. Cached per dialect and upstream name.
    fn converted_body(
        &self,
        cand: &Candidate,
        cache: &mut HashMap<String, Bytes>,
    ) -> Result<Bytes, GwError> {
        let target = cand.route.endpoint.endpoint.api_format.dialect();
        let key = format!("{target:?}\u{0}{}", cand.upstream_model);
        if let Some(b) = cache.get(&key) {
            return Ok(b.clone());
        }
        let parsed = self.canonical.get_or_init(|| {
            let ctx = aether_convert::RequestContext {
                model: self.path_model.clone(),
                stream: self.stream,
            };
            aether_convert::parse_request(self.dialect, &self.body, &ctx).map_err(|e| e.to_string())
        });
        let mut req = parsed.clone().map_err(GwError::invalid)?;
        req.model.clone_from(&cand.upstream_model);
        req.stream = self.stream;
        let body = Bytes::from(aether_convert::render_request(target, &req));
        cache.insert(key, body.clone());
        Ok(body)
    }

    fn trace(&self, cand: &Candidate, ci: usize, ri: u32, started_at: Timestamp) -> AttemptTrace {
        AttemptTrace {
            id: TraceId::new(),
            request_id: self.id,
            candidate_index: u32::try_from(ci).unwrap_or(u32::MAX),
            retry_index: ri,
            provider_id: Some(cand.route.provider.id),
            endpoint_id: Some(cand.route.endpoint.endpoint.id),
            provider_key_id: Some(cand.route.key.key.id),
            status: TraceStatus::Pending,
            skip_reason: None,
            status_code: None,
            error_type: None,
            error_message: None,
            latency_ms: None,
            concurrency: None,
            conversion: cand.converted.then(|| {
                format!(
                    "{}→{}",
                    self.format, cand.route.endpoint.endpoint.api_format
                )
            }),
            started_at,
            finished_at: None,
        }
    }

    /// One attempt: `Ok` is the final response (success, committed stream, or a client error
    /// relayed as-is); `Err` means fail over.
    #[allow(clippy::too_many_lines)] // the attempt reads best as one sequence
    async fn attempt(
        &self,
        cand: &Candidate,
        ci: usize,
        ri: u32,
        body: Bytes,
        deadline: Instant,
        fin: &mut Finish,
    ) -> Result<(Response<Body>, Verdict), Failure> {
        let route = &cand.route;
        let ep = &route.endpoint.endpoint;
        let t0 = Instant::now();
        let mut trace = self.trace(cand, ci, ri, Timestamp::now());
        // The dialect the upstream speaks: errors, streams and usage are read in its terms.
        let up = ep.api_format.dialect();
        let url = if cand.converted {
            let op = upstream_operation(up, self.stream);
            let query = if up == Dialect::Gemini && self.stream {
                "alt=sse"
            } else {
                ""
            };
            upstream::url(ep, op, &cand.upstream_model, query)
        } else {
            upstream::url(ep, self.op, &cand.upstream_model, &self.query)
        };
        let headers = if cand.converted {
            // Only dialect-neutral client headers cross to another dialect.
            let mut neutral = HeaderMap::new();
            if let Some(ua) = self.headers.get(header::USER_AGENT) {
                neutral.insert(header::USER_AGENT, ua.clone());
            }
            upstream::headers(&neutral, ep, &route.key.secret)
        } else {
            upstream::headers(&self.headers, ep, &route.key.secret)
        };
        let remaining = deadline.saturating_duration_since(t0);
        let first_byte = Duration::from_secs(self.snap.settings.stream_first_byte_timeout_secs());
        let endpoint_timeout = Duration::from_secs(u64::from(ep.timeout));
        let wait = if self.stream {
            first_byte.min(endpoint_timeout)
        } else {
            endpoint_timeout
        }
        .min(remaining);
        let wait_deadline = t0 + wait;

        let sent = tokio::time::timeout(
            wait,
            route
                .endpoint
                .client
                .post(&url)
                .headers(headers)
                .body(body)
                .send(),
        )
        .await;
        let resp = match sent {
            Err(_) => {
                return Err(self
                    .failed(
                        cand,
                        trace,
                        fin,
                        None,
                        "timeout",
                        format!("no response within {} s", wait.as_secs()),
                        FailClass::Timeout,
                        None,
                        true,
                    )
                    .await);
            }
            Ok(Err(e)) => {
                let (kind, class) = if e.is_timeout() {
                    ("timeout", FailClass::Timeout)
                } else if e.is_connect() {
                    ("connect_error", FailClass::Other)
                } else {
                    ("transport_error", FailClass::Other)
                };
                return Err(self
                    .failed(
                        cand,
                        trace,
                        fin,
                        None,
                        kind,
                        format!("{e}"),
                        class,
                        None,
                        true,
                    )
                    .await);
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        let resp_headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_string(), v.to_string()))
            })
            .collect();
        let hdr_refs: Vec<(&str, &str)> = resp_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let is_sse = content_type.starts_with("text/event-stream");
        let gemini_array =
            self.stream && up == Dialect::Gemini && !is_sse && content_type.contains("json");

        let success_status = (200..300).contains(&status);
        if !(success_status && self.stream && (is_sse || gemini_array)) {
            // Whole-body path: non-stream answers and every error answer.
            let cap = if success_status {
                MAX_RESPONSE_BYTES
            } else {
                MAX_ERROR_BODY_BYTES
            };
            let left = wait_deadline
                .max(t0 + endpoint_timeout.min(remaining))
                .saturating_duration_since(Instant::now());
            let read =
                tokio::time::timeout(left, read_capped(resp.bytes_stream().boxed(), cap)).await;
            let bytes = match read {
                Err(_) => {
                    return Err(self
                        .failed(
                            cand,
                            trace,
                            fin,
                            Some(status),
                            "timeout",
                            "the response body did not arrive in time".into(),
                            FailClass::Timeout,
                            None,
                            true,
                        )
                        .await);
                }
                Ok(Err(e)) => {
                    return Err(self
                        .failed(
                            cand,
                            trace,
                            fin,
                            Some(status),
                            "transport_error",
                            e,
                            FailClass::Other,
                            None,
                            true,
                        )
                        .await);
                }
                Ok(Ok(b)) => b,
            };
            let outcome = classify_http(up, status, &hdr_refs, &bytes);
            // Usage in the upstream's own terms, read before any conversion.
            let up_usage = if matches!(outcome, Outcome::Success) {
                from_response(up, &bytes)
            } else {
                None
            };
            // A converted success is rendered in the client's dialect; a body that does not
            // parse as the upstream's dialect is a broken upstream (fail over).
            let (bytes, hdr_refs) = match (&outcome, cand.converted) {
                (Outcome::Success, true) => match self.convert_success(up, &bytes) {
                    Ok(b) => (b, converted_headers(&hdr_refs, self.content_type())),
                    Err(e) => {
                        return Err(self
                            .failed(
                                cand,
                                trace,
                                fin,
                                Some(status),
                                "malformed_response",
                                e,
                                FailClass::Other,
                                None,
                                true,
                            )
                            .await);
                    }
                },
                (Outcome::ClientError { .. }, true) => {
                    let (_, b) = aether_convert::convert_error(self.dialect, status, &bytes);
                    (
                        Bytes::from(b),
                        converted_headers(&hdr_refs, "application/json"),
                    )
                }
                _ => (bytes, hdr_refs),
            };
            return match outcome {
                Outcome::Success => {
                    if self.stream {
                        // A stream was asked for and a 200 JSON body came back: relay it as the
                        // upstream sent it (some relays answer small streams whole).
                        tracing::debug!("stream answered with a whole body");
                    }
                    trace.status = TraceStatus::Success;
                    trace.status_code = Some(status);
                    trace.latency_ms = Some(ms(t0));
                    trace.finished_at = Some(Timestamp::now());
                    fin.traces.push(trace);
                    self.bind(cand, fin).await;
                    fin.record.ttfb_ms = Some(ms(self.started));
                    let usage = up_usage;
                    if let Some(b) = fin.log.bodies.as_mut() {
                        b.response_headers = Some(relayed_json(&hdr_refs));
                    }
                    fin.log.capture(&bytes);
                    fin.complete(UsageStatus::Completed, status, usage, None);
                    Ok((
                        self.response(status, &hdr_refs, Body::from(bytes)),
                        Verdict::Success,
                    ))
                }
                Outcome::ClientError { kind } => {
                    let message = error_message(&bytes)
                        .unwrap_or_else(|| format!("upstream answered {status}"));
                    trace.status = TraceStatus::Failed;
                    trace.status_code = Some(status);
                    trace.error_type = Some(client_error_name(kind).into());
                    trace.error_message = Some(message.chars().take(500).collect());
                    trace.latency_ms = Some(ms(t0));
                    trace.finished_at = Some(Timestamp::now());
                    fin.traces.push(trace);
                    fin.route = None;
                    self.note_route(cand, fin);
                    fin.complete(
                        UsageStatus::Failed,
                        status,
                        None,
                        Some((client_error_name(kind), message)),
                    );
                    Ok((
                        self.response(status, &hdr_refs, Body::from(bytes)),
                        Verdict::ClientError,
                    ))
                }
                other => {
                    let retry_after =
                        retry_after_secs(&hdr_refs).or_else(|| retry_after_from_body(&bytes));
                    let message = error_message(&bytes)
                        .unwrap_or_else(|| format!("upstream answered {status}"));
                    let rate_limit = match other {
                        Outcome::KeyError {
                            class: KeyErrorClass::RateLimited { kind },
                        } => Some(kind),
                        _ => None,
                    };
                    let (kind, class, same_key) = outcome_class(other);
                    let mut f = self
                        .failed(
                            cand,
                            trace,
                            fin,
                            Some(status),
                            kind,
                            message,
                            class,
                            retry_after,
                            same_key,
                        )
                        .await;
                    f.rate_limit = rate_limit;
                    Err(f)
                }
            };
        }

        // Stream: read ahead to the first real data event before committing.
        let mut upstream: UpstreamBody = resp.bytes_stream().boxed();
        let mut decoder = Decoder::for_stream(gemini_array);
        let mut preread: Vec<Bytes> = Vec::new();
        let mut units: Vec<Unit> = Vec::new();
        loop {
            let left = wait_deadline.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(left, upstream.next()).await;
            let chunk = match next {
                Err(_) => {
                    return Err(self
                        .failed(
                            cand,
                            trace,
                            fin,
                            Some(status),
                            "first_byte_timeout",
                            format!("no data within {} s", wait.as_secs()),
                            FailClass::Timeout,
                            None,
                            true,
                        )
                        .await);
                }
                Ok(None) => {
                    units.extend(decoder.end());
                    if let Some(verdict) = first_verdict(up, &units) {
                        if let FirstEvent::Error { outcome, message } = verdict {
                            let (kind, class, same) = outcome_class(outcome);
                            return Err(self
                                .failed(
                                    cand,
                                    trace,
                                    fin,
                                    Some(status),
                                    kind,
                                    message,
                                    class,
                                    None,
                                    same,
                                )
                                .await);
                        }
                        break;
                    }
                    return Err(self
                        .failed(
                            cand,
                            trace,
                            fin,
                            Some(status),
                            "empty_stream",
                            "the stream ended before any data".into(),
                            FailClass::Other,
                            None,
                            true,
                        )
                        .await);
                }
                Ok(Some(Err(e))) => {
                    return Err(self
                        .failed(
                            cand,
                            trace,
                            fin,
                            Some(status),
                            "transport_error",
                            format!("{e}"),
                            FailClass::Other,
                            None,
                            true,
                        )
                        .await);
                }
                Ok(Some(Ok(c))) => c,
            };
            if preread.is_empty() && looks_like_html(&chunk) {
                return Err(self
                    .failed(
                        cand,
                        trace,
                        fin,
                        Some(status),
                        "html",
                        "an HTML page instead of a stream".into(),
                        FailClass::Other,
                        None,
                        true,
                    )
                    .await);
            }
            match decoder.push(&chunk) {
                Ok(u) => units.extend(u),
                Err(e) => {
                    return Err(self
                        .failed(
                            cand,
                            trace,
                            fin,
                            Some(status),
                            "malformed_stream",
                            e,
                            FailClass::Other,
                            None,
                            true,
                        )
                        .await);
                }
            }
            preread.push(chunk);
            match first_verdict(up, &units) {
                None => {}
                Some(FirstEvent::Error { outcome, message }) => {
                    let (kind, class, same) = outcome_class(outcome);
                    return Err(self
                        .failed(
                            cand,
                            trace,
                            fin,
                            Some(status),
                            kind,
                            message,
                            class,
                            None,
                            same,
                        )
                        .await);
                }
                Some(_) => break,
            }
        }

        // Committed.
        trace.status = TraceStatus::Streaming;
        trace.status_code = Some(status);
        fin.traces.push(trace);
        self.bind(cand, fin).await;
        fin.record.status = UsageStatus::Streaming;
        fin.record.ttfb_ms = Some(ms(self.started));
        fin.record.updated_at = Timestamp::now();
        self.gw
            .usage()
            .send_detached(UsageEvent::Record(Box::new(fin.record.clone())));
        if let Some(b) = fin.log.bodies.as_mut() {
            b.response_headers = Some(relayed_json(&hdr_refs));
        }
        let strip = !cand.converted
            && self.op == Operation::ChatCompletions
            && self.info.stream_include_usage != Some(true);
        let transcoder = cand.converted.then(|| {
            fin.usage = StreamUsage::new(up);
            let t =
                aether_convert::Transcoder::new(up, self.dialect, self.framing(), MAX_EVENT_BYTES);
            if self.info.stream_include_usage == Some(true) {
                t
            } else {
                t.without_usage_chunk()
            }
        });
        let committed = Committed {
            upstream,
            decoder,
            preread,
            preread_units: units,
            strip_usage_chunk: strip,
            idle_timeout: endpoint_timeout,
            dialect: self.dialect,
            upstream_dialect: up,
            transcoder,
            shutdown: self.gw.shutdown_watch(),
        };
        let owned = std::mem::replace(fin, self.finish());
        // The placeholder left behind must not record anything when it is dropped.
        fin.disarm();
        let stream = relay(committed, owned);
        let hdr_refs = if cand.converted {
            converted_headers(&hdr_refs, self.content_type())
        } else {
            hdr_refs
        };
        Ok((
            self.response(status, &hdr_refs, Body::from_stream(stream)),
            Verdict::Success,
        ))
    }

    /// How a streaming client of this request wants its stream framed.
    fn framing(&self) -> aether_convert::Framing {
        if self.dialect == Dialect::Gemini && !self.client_sse {
            aether_convert::Framing::JsonArray
        } else {
            aether_convert::Framing::Sse
        }
    }

    /// The content type of a converted answer to this client.
    fn content_type(&self) -> &'static str {
        if self.stream && self.framing() == aether_convert::Framing::Sse {
            "text/event-stream"
        } else {
            "application/json"
        }
    }

    /// A converted upstream's whole success body in the client's dialect: a response, or —
    /// when the client asked for a stream and the upstream answered whole — the equivalent
    /// stream.
    fn convert_success(&self, up: Dialect, bytes: &[u8]) -> Result<Bytes, String> {
        let resp = aether_convert::parse_response(up, bytes).map_err(|e| e.to_string())?;
        Ok(Bytes::from(if self.stream {
            aether_convert::stream_of_response(self.dialect, self.framing(), &resp).to_vec()
        } else {
            aether_convert::render_response(self.dialect, &resp)
        }))
    }

    /// Marks the route on the record (the request is being served by it).
    fn note_route(&self, cand: &Candidate, fin: &mut Finish) {
        let r = &mut fin.record;
        r.provider_id = Some(cand.route.provider.id);
        r.endpoint_id = Some(cand.route.endpoint.endpoint.id);
        r.provider_key_id = Some(cand.route.key.key.id);
        r.endpoint_api_format = Some(cand.route.endpoint.endpoint.api_format);
        r.upstream_model = Some(cand.upstream_model.clone());
    }

    /// Success: remember the route on the record and refresh cache affinity.
    async fn bind(&self, cand: &Candidate, fin: &mut Finish) {
        self.note_route(cand, fin);
        fin.route = Some(cand.route.clone());
        let ttl = cand.route.key.key.cache_ttl_minutes;
        if self.snap.settings.cache_affinity() && ttl > 0 {
            self.gw
                .live()
                .affinity_set(
                    self.affinity_key.clone(),
                    cand.route.key.key.id,
                    Duration::from_secs(u64::from(ttl) * 60),
                )
                .await;
        }
    }

    /// Counts what cache affinity did for this request, once, now that a key serves it:
    /// the bound key (hit), another one (switch: the binding moved), or a first binding.
    async fn count_affinity(&self, bound: Option<ProviderKeyId>, served: &Candidate) {
        let key = &served.route.key.key;
        let outcome = match bound {
            _ if !self.snap.settings.cache_affinity() => return,
            Some(b) if b == key.id => AffinityOutcome::Hit,
            Some(_) => AffinityOutcome::Switch,
            None if key.cache_ttl_minutes > 0 => AffinityOutcome::New,
            None => return, // the key keeps no bindings: affinity played no part
        };
        self.gw.live().affinity_record(self.format, outcome).await;
    }

    /// Records a failed attempt and turns it into a [`Failure`].
    #[allow(clippy::too_many_arguments)]
    async fn failed(
        &self,
        cand: &Candidate,
        mut trace: AttemptTrace,
        fin: &mut Finish,
        status: Option<u16>,
        kind: &str,
        message: String,
        class: FailClass,
        retry_after: Option<u64>,
        retry_same_key: bool,
    ) -> Failure {
        tracing::info!(request = %self.id, provider = %cand.route.provider.name, key = %cand.route.key.key.name,
            status = ?status, kind, message = %message, "upstream attempt failed");
        self.gw.metrics().upstream_error(kind, status);
        trace.status = TraceStatus::Failed;
        trace.status_code = status;
        trace.error_type = Some(kind.to_string());
        trace.error_message = Some(message.chars().take(500).collect());
        trace.latency_ms = Some(now_ms_since(trace.started_at));
        trace.finished_at = Some(Timestamp::now());
        fin.traces.push(trace);
        let live = self.gw.live();
        live.affinity_drop(&self.affinity_key).await;
        if let Some(secs) = retry_after.filter(|s| *s > 0) {
            live.cool_down(
                cand.route.key.key.id,
                Instant::now() + Duration::from_secs(secs.min(3600)),
            )
            .await;
        }
        Failure {
            class,
            retry_after,
            retry_same_key,
            rate_limit: None,
        }
    }

    /// The answer when every candidate failed: the status that tells the client what to do.
    fn exhausted(&self, failures: &[Failure], tried: usize) -> GwError {
        let all = |c: FailClass| !failures.is_empty() && failures.iter().all(|f| f.class == c);
        let n = format!(
            "{tried} upstream attempt{}",
            if tried == 1 { "" } else { "s" }
        );
        if all(FailClass::RateLimited) {
            let wait = failures.iter().filter_map(|f| f.retry_after).min();
            GwError::new(
                ErrorKind::RateLimited,
                format!("every upstream is rate limited ({n})"),
            )
            .retry_after(wait.or(Some(1)))
        } else if all(FailClass::Overloaded) {
            GwError::new(
                ErrorKind::Overloaded,
                format!("every upstream is overloaded ({n})"),
            )
        } else if all(FailClass::Timeout) {
            GwError::new(
                ErrorKind::Timeout,
                format!("no upstream answered in time ({n})"),
            )
        } else {
            GwError::new(
                ErrorKind::UpstreamError,
                format!("all upstreams failed ({n})"),
            )
        }
    }

    fn response(
        &self,
        status: u16,
        upstream_headers: &[(&str, &str)],
        body: Body,
    ) -> Response<Body> {
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        let h = resp.headers_mut();
        for (k, v) in upstream_headers {
            if upstream::relayed(k)
                && let (Ok(name), Ok(value)) = (
                    axum::http::HeaderName::try_from(*k),
                    HeaderValue::from_str(v),
                )
            {
                h.append(name, value);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&self.id.to_string()) {
            h.insert("x-aether-request-id", v);
        }
        if self.stream {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        resp
    }

    /// `count_tokens`: forwarded to an Anthropic upstream that can answer it, else estimated.
    async fn count_tokens(&self) -> Response<Body> {
        let needs = needs(&self.caller, &self.model, &self.headers, false, false);
        let ask = Ask {
            format: self.format,
            needs: &needs,
            affinity: None,
            cooling: &[],
            exhausted: &[],
            now: self.created,
            convert: false,
        };
        let Plan { candidates, .. } = plan(&self.snap, &self.caller, &self.model, &ask);
        let mut cache = HashMap::new();
        for cand in candidates.iter().take(2) {
            let Ok(body) = self.upstream_body(cand, &mut cache) else {
                break;
            };
            let ep = &cand.route.endpoint.endpoint;
            let url = upstream::url(
                ep,
                Operation::CountTokens,
                &cand.upstream_model,
                &self.query,
            );
            let headers = upstream::headers(&self.headers, ep, &cand.route.key.secret);
            let sent = tokio::time::timeout(
                Duration::from_secs(15),
                cand.route
                    .endpoint
                    .client
                    .post(&url)
                    .headers(headers)
                    .body(body)
                    .send(),
            )
            .await;
            if let Ok(Ok(resp)) = sent
                && resp.status().is_success()
                && let Ok(bytes) = resp.bytes().await
                && serde_json::from_slice::<serde_json::Value>(&bytes)
                    .is_ok_and(|v| v.get("input_tokens").is_some())
            {
                let mut r = Response::new(Body::from(bytes));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                return r;
            }
        }
        let n = aether_protocol::tokens::estimate_input_tokens(self.dialect, &self.body);
        let mut r = Response::new(Body::from(
            serde_json::json!({ "input_tokens": n }).to_string(),
        ));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.headers_mut()
            .insert("x-aether-estimated", HeaderValue::from_static("true"));
        r
    }
}

/// The verdict of the read-ahead so far: `None` while only ignorable events arrived.
fn first_verdict(dialect: Dialect, units: &[Unit]) -> Option<FirstEvent> {
    for u in units {
        let v = match u {
            Unit::Event(ev) => classify_first_event(dialect, ev),
            Unit::Element(el) => classify_first_element(el),
        };
        if v != FirstEvent::Ignorable {
            return Some(v);
        }
    }
    None
}

/// (error type for the trace, failure class, may the same key be retried).
fn outcome_class(o: Outcome) -> (&'static str, FailClass, bool) {
    match o {
        Outcome::KeyError {
            class: KeyErrorClass::RateLimited { .. },
        } => ("rate_limited", FailClass::RateLimited, false),
        Outcome::KeyError {
            class: KeyErrorClass::Unauthorized,
        } => ("unauthorized", FailClass::Other, false),
        Outcome::KeyError {
            class: KeyErrorClass::Billing,
        } => ("billing", FailClass::Other, false),
        Outcome::KeyError {
            class: KeyErrorClass::NotFound,
        } => ("model_not_found", FailClass::Other, false),
        Outcome::Overloaded => ("overloaded", FailClass::Overloaded, true),
        Outcome::Server { status } if status == 504 || status == 408 => {
            ("upstream_timeout", FailClass::Timeout, true)
        }
        Outcome::Server { .. } => ("server_error", FailClass::Other, true),
        Outcome::Html { .. } => ("html", FailClass::Other, true),
        Outcome::EmptyBody { .. } => ("empty_body", FailClass::Other, true),
        Outcome::Malformed { .. } => ("malformed", FailClass::Other, true),
        // Not failures; listed for exhaustiveness.
        Outcome::Success | Outcome::ClientError { .. } => ("unexpected", FailClass::Other, false),
    }
}

fn client_error_name(k: ClientErrorKind) -> &'static str {
    match k {
        ClientErrorKind::InvalidRequest => "invalid_request",
        ClientErrorKind::ContextLengthExceeded => "context_length_exceeded",
        ClientErrorKind::ContentPolicy => "content_policy",
        ClientErrorKind::RequestTooLarge => "request_too_large",
    }
}

/// The upstream operation that serves a converted request in dialect `d`.
const fn upstream_operation(d: Dialect, stream: bool) -> Operation {
    match d {
        Dialect::AnthropicMessages => Operation::Messages,
        Dialect::OpenaiChat => Operation::ChatCompletions,
        Dialect::OpenaiResponses => Operation::Responses,
        Dialect::Gemini => Operation::Generate { stream },
    }
}

/// Upstream response headers for a converted answer: the upstream's content type and length
/// no longer describe the body, so the content type is the converted one.
fn converted_headers<'a>(
    upstream: &[(&'a str, &'a str)],
    content_type: &'static str,
) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> = upstream
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("content-type"))
        .copied()
        .collect();
    out.push(("content-type", content_type));
    out
}

fn looks_like_html(chunk: &[u8]) -> bool {
    let t = chunk
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(&chunk[..0], |i| &chunk[i..]);
    let head = &t[..t.len().min(15)];
    head.eq_ignore_ascii_case(b"<!doctype html")
        || head.len() >= 5 && head[..5].eq_ignore_ascii_case(b"<html")
}

fn relayed_json(headers: &[(&str, &str)]) -> serde_json::Value {
    serde_json::Value::Object(
        headers
            .iter()
            .filter(|(k, _)| upstream::relayed(k) || *k == "content-length")
            .map(|(k, v)| {
                (
                    (*k).to_string(),
                    serde_json::Value::String((*v).to_string()),
                )
            })
            .collect(),
    )
}

async fn read_capped(mut s: UpstreamBody, cap: usize) -> Result<Bytes, String> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if buf.len() + chunk.len() > cap {
            return Err(format!("the upstream answer is larger than {cap} bytes"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn ms(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX)
}

fn now_ms_since(t: Timestamp) -> i64 {
    Timestamp::now().millis() - t.millis()
}
