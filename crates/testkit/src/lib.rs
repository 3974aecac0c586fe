//! Test kit for Aether: a **mock upstream** that speaks the four upstream AI
//! API dialects (Anthropic Messages, OpenAI Chat Completions, OpenAI
//! Responses, Google Gemini) with faults scripted per request.
//!
//! The mock is the only test double in Aether's test suite, standing in for
//! the real providers, so its wire output follows the real APIs exactly:
//! SSE framing (Anthropic and Responses with `event:` lines, OpenAI chat
//! ending in `data: [DONE]`, Gemini `data:` frames or a JSON array), usage in
//! each dialect's own convention, error envelopes, request-id and rate-limit
//! headers.
//!
//! ```no_run
//! # async fn demo() {
//! use aether_testkit::{MockUpstream, Step, Usage};
//!
//! let mock = MockUpstream::start().await;
//! // The first request with this upstream key gets a 429, the next one succeeds.
//! mock.script("sk-upstream-1", [Step::status(429).retry_after(3), Step::ok()]);
//! // Every request without a scripted step replies with this usage.
//! mock.set_default(Step::ok().usage(Usage { input: 100, output: 20, cache_read: 50, ..Default::default() }));
//! let base = mock.url(); // "http://127.0.0.1:PORT"
//! # let _ = base;
//! # }
//! ```
//!
//! # Routes
//!
//! All on one listener, matched by path **suffix** so any prefix works
//! (`/relay/v1/messages` behaves like `/v1/messages`):
//!
//! - Anthropic: `POST …/messages`, `POST …/messages/count_tokens`,
//!   `GET …/v1/models` (when `x-api-key` or `anthropic-version` is present).
//!   Credential: `x-api-key` or `Authorization: Bearer`. `anthropic-version`
//!   is not required; it is recorded with all other headers.
//! - OpenAI: `POST …/chat/completions`, `POST …/responses`, `GET …/models`.
//!   Credential: `Authorization: Bearer`.
//! - Gemini: `POST …/models/{model}:generateContent`,
//!   `:streamGenerateContent` (SSE with `?alt=sse`, otherwise a JSON array
//!   streamed element by element), `:countTokens`, `GET …/v1beta/models`.
//!   Credential: `x-goog-api-key`, `?key=`, or `Authorization: Bearer`.
//! - Control API under `/__mock/`: `POST script` (`{"key", "steps", "replace"}`),
//!   `POST default` (a step), `GET`/`DELETE requests`, `GET stats`,
//!   `POST reset`, `POST recording` (`{"enabled"}`). Steps are [`Step`] as JSON.
//!
//! Only generation requests consume scripted steps; model lists and token
//! counts always answer (after the credential check).
//!
//! A missing credential gets the dialect's auth error (Anthropic/OpenAI 401;
//! Gemini 403 `PERMISSION_DENIED` as the real API does). When
//! [`MockOptions::keys`] is set, any other credential is *unknown*: 401 for
//! Anthropic/OpenAI, 400 `INVALID_ARGUMENT` / `API_KEY_INVALID` for Gemini.
//!
//! # Lifecycle
//!
//! [`MockUpstream::start`] binds before returning, so the URL is usable at
//! once. Dropping the handle stops the server: waiting handlers (`Hang`,
//! delays) and paced streams end immediately and the connections close.

mod control;
mod dialect;
mod render;
mod server;
mod state;
mod step;

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use state::{KeyStats, MockStats, RecordedRequest};
pub use step::{Action, Step, ToolCall, Usage};

/// Installs the process-wide TLS crypto provider (ring) if none is set. The workspace builds
/// reqwest without a default provider (to keep aws-lc out of the build), so any test process
/// that builds an HTTP client needs one; starting a mock installs it. Idempotent.
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How to start a [`MockUpstream`].
#[derive(Clone, Debug)]
pub struct MockOptions {
    /// Address to bind; the default `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// Record every request (turn off for benchmarks).
    pub record: bool,
    /// Keep at most this many recorded requests (oldest dropped first).
    pub max_recorded: usize,
    /// Accepted credentials; `None` accepts any non-empty credential.
    pub keys: Option<Vec<String>>,
    /// Step used when a credential's script is empty.
    pub default_step: Step,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            record: true,
            max_recorded: 10_000,
            keys: None,
            default_step: Step::ok(),
        }
    }
}

/// A running mock upstream. Stops when dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<state::Shared>,
    /// Dropping this sender is the shutdown signal.
    shutdown: Option<watch::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockUpstream {
    /// Start with default options on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If the loopback listener cannot be bound (an environment problem, not
    /// a test outcome); use [`MockUpstream::try_start_with`] to handle it.
    pub async fn start() -> Self {
        Self::start_with(MockOptions::default()).await
    }

    /// Start with `options`.
    ///
    /// # Panics
    /// If the listener cannot be bound; see [`MockUpstream::try_start_with`].
    pub async fn start_with(options: MockOptions) -> Self {
        match Self::try_start_with(options).await {
            Ok(mock) => mock,
            Err(e) => panic!("aether-testkit: cannot bind mock upstream: {e}"),
        }
    }

    /// Start with `options`, reporting bind errors.
    pub async fn try_start_with(options: MockOptions) -> io::Result<Self> {
        install_tls();
        let listener = TcpListener::bind(options.listen).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(());
        let state = Arc::new(state::Shared::new(
            options.record,
            options.max_recorded,
            options.keys.map(|k| k.into_iter().collect::<HashSet<_>>()),
            options.default_step,
            rx.clone(),
        ));
        let app = server::router(state.clone());
        // Small SSE frames must leave at once: without TCP_NODELAY, Nagle
        // plus delayed ACKs can hold a paced event back for ~40 ms.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app)
                .with_graceful_shutdown(async move { server::shutdown_signal(&rx).await });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "mock upstream server stopped with an error");
            }
        });
        Ok(MockUpstream {
            addr,
            state,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (no trailing slash, no `/v1`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Append `steps` to the FIFO queue of credential `key`. Each generation
    /// request with that credential consumes one step; an empty queue falls
    /// back to the default step.
    pub fn script(&self, key: impl AsRef<str>, steps: impl IntoIterator<Item = Step>) {
        self.state.push_steps(key.as_ref(), steps, false);
    }

    /// Steps still queued for `key`.
    pub fn pending_steps(&self, key: impl AsRef<str>) -> usize {
        self.state.pending_steps(key.as_ref())
    }

    /// Replace the default step (used when a credential has no scripted step).
    pub fn set_default(&self, step: Step) {
        self.state.set_default(step);
    }

    /// Turn request recording on or off at runtime.
    pub fn set_recording(&self, on: bool) {
        self.state.set_recording(on);
    }

    /// Recorded requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests()
    }

    /// Recorded requests that carried credential `key`.
    pub fn requests_for(&self, key: &str) -> Vec<RecordedRequest> {
        self.state
            .requests()
            .into_iter()
            .filter(|r| r.credential.as_deref() == Some(key))
            .collect()
    }

    /// Forget recorded requests (scripts and counters stay).
    pub fn clear(&self) {
        self.state.clear_requests();
    }

    /// Forget scripts, recorded requests and counters; default step back to `ok`.
    pub fn reset(&self) {
        self.state.reset();
    }

    /// Counters for credential `key` (zero if never seen).
    pub fn key_stats(&self, key: &str) -> KeyStats {
        self.state.key_stats(key)
    }

    /// Highest number of simultaneous in-flight requests seen for `key`.
    pub fn max_concurrency(&self, key: &str) -> u64 {
        self.state.key_stats(key).max_in_flight
    }

    /// Requests for `key` in flight right now.
    pub fn in_flight(&self, key: &str) -> u64 {
        self.state.key_stats(key).in_flight
    }

    /// Requests seen with credential `key`.
    pub fn request_count(&self, key: &str) -> u64 {
        self.state.key_stats(key).requests
    }

    /// Snapshot of all counters.
    pub fn stats(&self) -> MockStats {
        self.state.stats()
    }

    /// Wait until no request is in flight (every response body finished or
    /// was dropped), at most `timeout`. Returns whether the mock went idle.
    ///
    /// A client reading a body to the end can return a moment before the
    /// server drops that body, so assert on in-flight counts after this.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.idle_notify().notified();
            tokio::pin!(notified);
            // Register before checking so a wake-up between check and wait is not lost.
            notified.as_mut().enable();
            if self.state.total_in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.state.total_in_flight() == 0;
            }
        }
    }

    /// Stop the server and wait (at most `timeout`) until it has closed every
    /// connection. Dropping the handle stops it too, without waiting.
    pub async fn shutdown(mut self, timeout: Duration) {
        self.shutdown.take();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(timeout, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        // Dropping the sender wakes every handler, paced body and the
        // graceful-shutdown future of the server task.
        self.shutdown.take();
    }
}
