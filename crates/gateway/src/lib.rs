//! The request path. A client request is admitted against the in-memory [`Snapshot`], planned
//! into ordered candidates, tried one upstream at a time with one outcome classifier for
//! streams and non-streams alike, relayed back untouched (streams byte by byte as they arrive),
//! and accounted through the batched [`usage`] writer.
//!
//! Module map, in request order: `routes` (the client-facing HTTP routes) → `admit` →
//! `needs` → `plan` → `forward` (the attempt loop) → `upstream` (URL and headers) → `relay`
//! (streaming with a side parser and a drop guard) → `usage` (the writer).

pub mod admit;
pub mod error;
pub mod forward;
pub mod journal;
pub mod limits;
pub mod metrics;
pub mod models;
pub mod needs;
pub mod plan;
pub mod probe;
pub mod relay;
pub mod routes;
pub mod snapshot;
pub mod upstream;
pub mod usage;

use std::sync::Arc;

use aether_coord::LiveState;
use aether_domain::secret::Cipher;
use aether_store::{DynStore, StoreError};
use arc_swap::ArcSwap;

use crate::snapshot::{Clients, Snapshot};
use crate::usage::{UsageWriter, WriterHandle};

/// Installs the TLS crypto provider (ring) for outbound HTTPS. reqwest is built without a
/// default provider to keep aws-lc out of the build; every process that builds an HTTP
/// client calls this first. Idempotent.
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The gateway. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    store: DynStore,
    cipher: Cipher,
    snapshot: ArcSwap<Snapshot>,
    clients: Clients,
    live: Arc<dyn LiveState>,
    usage: UsageWriter,
    metrics: Arc<metrics::Metrics>,
    /// Set when the server's shutdown grace has run out: requests and streams still in
    /// flight end at once (see [`Gateway::abort_in_flight`]).
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Gateway {
    /// Builds the gateway and its first snapshot, and starts the usage writer (journaling final
    /// records in `journal`, if given, and committing what it recovered). The returned handle
    /// drains the writer on shutdown.
    pub async fn start(
        store: DynStore,
        cipher: Cipher,
        live: Arc<dyn LiveState>,
        journal: Option<(journal::Journal, Vec<journal::Recovered>)>,
    ) -> Result<(Self, WriterHandle), StoreError> {
        install_tls();
        let clients = Clients::default();
        let snapshot = Snapshot::load(&store, &cipher, &clients).await?;
        let (usage, handle) = UsageWriter::start(store.clone(), 10_000, journal);
        Ok((
            Self {
                inner: Arc::new(Inner {
                    store,
                    cipher,
                    snapshot: ArcSwap::from_pointee(snapshot),
                    clients,
                    live,
                    usage,
                    metrics: Arc::default(),
                    shutdown: tokio::sync::watch::Sender::new(false),
                }),
            },
            handle,
        ))
    }

    /// Rebuilds the snapshot from the store and swaps it in. Requests in flight keep the
    /// snapshot they started with.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let s = Snapshot::load(&self.inner.store, &self.inner.cipher, &self.inner.clients).await?;
        self.inner.snapshot.store(Arc::new(s));
        Ok(())
    }

    #[must_use]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.load_full()
    }

    /// Ends every request and stream still in flight: a stream gets an error event in its
    /// client's dialect, a request still waiting on its upstream a 503; each is recorded as
    /// failed (`server_shutdown`). Called when the shutdown grace has run out, before the usage
    /// writer drains, so nothing is left `pending`/`streaming`.
    pub fn abort_in_flight(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Resolves once [`Gateway::abort_in_flight`] has been called.
    pub(crate) fn shutdown_watch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    #[must_use]
    pub fn usage(&self) -> &UsageWriter {
        &self.inner.usage
    }

    /// The Prometheus registry of this gateway (see [`metrics::render`]).
    #[must_use]
    pub fn metrics(&self) -> &Arc<metrics::Metrics> {
        &self.inner.metrics
    }

    #[must_use]
    pub fn live(&self) -> &Arc<dyn LiveState> {
        &self.inner.live
    }

    #[must_use]
    pub fn store(&self) -> &DynStore {
        &self.inner.store
    }
}
