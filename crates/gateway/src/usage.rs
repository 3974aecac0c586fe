//! The usage writer: usage records, attempt traces, stored bodies and billing leave the
//! request path through a bounded queue and reach the database in batches, one transaction
//! per batch.
//!
//! * Off the hot path: a request only enqueues.
//! * Backpressure, not loss: when the queue is full, enqueuing waits (the request path slows
//!   down); nothing is dropped silently. The detached path used by drop guards spawns a send
//!   instead of blocking a destructor.
//! * A failing database does not lose records: a batch that fails is retried with backoff,
//!   with the next events merged in, until it commits. Retrying is safe: records upsert by id
//!   and billing is applied exactly once (the store's `billed` flag).
//! * Shutdown drains: [`UsageWriter::shutdown`] closes the queue and waits for the last batch.
//! * A killed process does not lose finished requests: [`UsageWriter::finish`] appends the
//!   final record and its billing to the [`Journal`] before enqueuing them; the writer tells
//!   the journal what committed, and a restart replays what had not (see `journal`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aether_domain::RequestId;
use aether_domain::entities::{AttemptTrace, UsageBodies, UsageRecord};
use aether_store::{Billing, DynStore, UsageBatch};

use crate::journal::{Journal, Recovered};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// One thing to persist.
#[derive(Debug)]
pub enum UsageEvent {
    Record(Box<UsageRecord>),
    Traces(Vec<AttemptTrace>),
    Bodies(RequestId, Box<UsageBodies>),
    /// A request's final record and its billing; `segment`: the journal segment holding it.
    Final {
        record: Box<UsageRecord>,
        bill: Option<Billing>,
        segment: Option<u64>,
    },
    /// Answered once everything enqueued before it has committed.
    Flush(oneshot::Sender<()>),
    /// Sent by [`WriterHandle::shutdown`]: write what is queued, then stop.
    Close,
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub queued: AtomicU64,
    pub written_batches: AtomicU64,
    pub written_records: AtomicU64,
    pub failed_attempts: AtomicU64,
    /// Final records that could not be appended to the journal (still queued for the
    /// database, but not crash-safe).
    pub journal_errors: AtomicU64,
}

#[derive(Clone)]
pub struct UsageWriter {
    tx: mpsc::Sender<UsageEvent>,
    journal: Option<Arc<Journal>>,
    pub stats: Arc<WriterStats>,
}

pub struct WriterHandle {
    tx: mpsc::Sender<UsageEvent>,
    task: JoinHandle<()>,
}

/// Events per batch: large enough that a request's `pending` and final records usually meet
/// in one batch (and collapse into one row write) even at high request rates.
const MAX_BATCH: usize = 4096;
const LINGER: Duration = Duration::from_millis(50);
const TICK: Duration = Duration::from_millis(5);

impl UsageWriter {
    /// Starts the writer task. With a journal, what it recovered from an earlier process is
    /// committed first (queued behind nothing, with backpressure like any event).
    pub fn start(
        store: DynStore,
        capacity: usize,
        journal: Option<(Journal, Vec<Recovered>)>,
    ) -> (Self, WriterHandle) {
        let (tx, rx) = mpsc::channel(capacity.max(16));
        let stats = Arc::new(WriterStats::default());
        let (journal, recovered) = match journal {
            Some((j, r)) => (Some(Arc::new(j)), r),
            None => (None, Vec::new()),
        };
        let task = tokio::spawn(run(store, rx, stats.clone(), journal.clone()));
        let writer = Self {
            tx: tx.clone(),
            journal,
            stats,
        };
        if !recovered.is_empty() {
            let w = writer.clone();
            tokio::spawn(async move {
                for r in recovered {
                    w.send(UsageEvent::Final {
                        record: Box::new(r.entry.record),
                        bill: r.entry.bill,
                        segment: Some(r.segment),
                    })
                    .await;
                }
            });
        }
        (writer, WriterHandle { tx, task })
    }

    /// Records a finished request: appends its final record and billing to the journal (so a
    /// crash from here on loses nothing), then enqueues them. Call it before the client is
    /// handed the end of the response; it does not wait for the database.
    pub fn finish(&self, record: UsageRecord, bill: Option<Billing>) {
        let segment = self.journal.as_ref().and_then(|j| {
            j.append(&record, bill.as_ref())
                .map_err(|e| {
                    self.stats.journal_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, request_id = %record.id, "usage journal append failed; the record is queued but not crash-safe");
                })
                .ok()
        });
        self.send_detached(UsageEvent::Final {
            record: Box::new(record),
            bill,
            segment,
        });
    }

    /// Final records journaled but not yet committed to the database.
    #[must_use]
    pub fn journal_outstanding(&self) -> u64 {
        self.journal.as_ref().map_or(0, |j| j.outstanding())
    }

    /// Enqueues an event; waits when the queue is full.
    pub async fn send(&self, e: UsageEvent) {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(e).await.is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("usage writer is gone; a usage event was not recorded");
        }
    }

    /// Enqueues without waiting (for destructors): if the queue is full, a task finishes the
    /// send so the event is still not lost.
    pub fn send_detached(&self, e: UsageEvent) {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(e) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(e)) => {
                let tx = self.tx.clone();
                let stats = self.stats.clone();
                tokio::spawn(async move {
                    if tx.send(e).await.is_err() {
                        stats.queued.fetch_sub(1, Ordering::Relaxed);
                        tracing::error!("usage writer is gone; a usage event was not recorded");
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                tracing::error!("usage writer is gone; a usage event was not recorded");
            }
        }
    }

    /// Waits until everything enqueued so far has committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(UsageEvent::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

impl WriterHandle {
    /// Writes everything enqueued so far, then stops the writer; waits up to `deadline`.
    pub async fn shutdown(self, deadline: Duration) {
        let _ = self.tx.send(UsageEvent::Close).await;
        if tokio::time::timeout(deadline, self.task).await.is_err() {
            tracing::error!("usage writer did not drain before the shutdown deadline");
        }
    }
}

/// Folds events into a batch; the latest state of a record wins.
#[derive(Default)]
struct Pending {
    records: HashMap<RequestId, UsageRecord>,
    order: Vec<RequestId>,
    traces: Vec<AttemptTrace>,
    bodies: Vec<(RequestId, UsageBodies)>,
    billing: Vec<Billing>,
    /// Journal entries in this batch, per segment.
    segments: HashMap<u64, u64>,
    flushes: Vec<oneshot::Sender<()>>,
    events: u64,
    close: bool,
}

impl Pending {
    fn add(&mut self, e: UsageEvent) {
        self.events += 1;
        match e {
            UsageEvent::Record(r) => self.record(*r),
            UsageEvent::Final {
                record,
                bill,
                segment,
            } => {
                self.record(*record);
                self.billing.extend(bill);
                if let Some(n) = segment {
                    *self.segments.entry(n).or_default() += 1;
                }
            }
            UsageEvent::Traces(t) => self.traces.extend(t),
            UsageEvent::Bodies(id, b) => self.bodies.push((id, *b)),
            UsageEvent::Flush(tx) => {
                self.events -= 1;
                self.flushes.push(tx);
            }
            UsageEvent::Close => {
                self.events -= 1;
                self.close = true;
            }
        }
    }

    fn record(&mut self, r: UsageRecord) {
        if !self.records.contains_key(&r.id) {
            self.order.push(r.id);
        }
        self.records.insert(r.id, r);
    }

    fn len(&self) -> usize {
        self.records.len() + self.traces.len() + self.bodies.len() + self.billing.len()
    }

    fn batch(&self) -> UsageBatch {
        UsageBatch {
            records: self
                .order
                .iter()
                .filter_map(|id| self.records.get(id).cloned())
                .collect(),
            traces: self.traces.clone(),
            bodies: self.bodies.clone(),
            billing: self.billing.clone(),
        }
    }
}

async fn run(
    store: DynStore,
    mut rx: mpsc::Receiver<UsageEvent>,
    stats: Arc<WriterStats>,
    journal: Option<Arc<Journal>>,
) {
    let mut pending = Pending::default();
    let mut closed = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        if pending.len() == 0 && pending.flushes.is_empty() {
            match rx.recv().await {
                Some(e) => pending.add(e),
                None => return,
            }
            closed |= pending.close;
        }
        // Gather what arrives within the linger window, up to a batch. The queue is drained
        // on a short tick rather than waking this task for every event.
        let started = tokio::time::Instant::now();
        while !closed && pending.len() < MAX_BATCH {
            loop {
                match rx.try_recv() {
                    Ok(e) => {
                        pending.add(e);
                        closed |= pending.close;
                        if closed || pending.len() >= MAX_BATCH {
                            break;
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed || pending.len() >= MAX_BATCH || started.elapsed() >= LINGER {
                break;
            }
            tokio::time::sleep(TICK).await;
        }
        let batch = pending.batch();
        match store.write_batch(&batch).await {
            Ok(_) => {
                stats.written_batches.fetch_add(1, Ordering::Relaxed);
                stats
                    .written_records
                    .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
                stats.queued.fetch_sub(pending.events, Ordering::Relaxed);
                if let Some(j) = &journal {
                    j.committed(&pending.segments);
                }
                for f in pending.flushes.drain(..) {
                    let _ = f.send(());
                }
                pending = Pending::default();
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, records = batch.records.len(), retry_in_ms = backoff.as_millis() as u64,
                    "usage batch not written; will retry");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        if closed && pending.len() == 0 {
            for f in pending.flushes.drain(..) {
                let _ = f.send(());
            }
            return;
        }
    }
}
