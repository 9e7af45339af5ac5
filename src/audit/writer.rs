//! The write-ahead audit writer with group commit and a durable spool.
//!
//! Invariants (what must stay true):
//! - `commit` returns `Ok` only after the store has committed the event. A queued event
//!   does not count. Callers run nothing before that.
//! - Concurrent events are batched into one store transaction (group commit): requests
//!   never queue behind one another's individual writes.
//! - `commit_end` never loses an event: on store failure it appends the event to an
//!   fsynced spool file, replayed into the store (idempotently, by event id) at startup and
//!   periodically.
//! - An `end` whose request was answered already (`commit_end_after_answer`) rides with the
//!   next commit: it is held for at most [`END_DELAY`], and committed at once with any event
//!   that must be durable now.
//!   One agent's back-to-back requests then cost one store commit each (its previous end
//!   with its next begin), not two in a row. A crash in that window loses nothing: the
//!   begin is durable, and the startup sweep closes it as `interrupted`.
//! - The batching loop runs on a thread of its own, where a store may block (see
//!   [`crate::store::blocking_allowed`]): commits are serial, so every hand-off between
//!   threads on their path (a blocking-pool thread, then the loop's task) would delay every
//!   request waiting for its `begin`; under load they took a quarter of each commit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::AuditEvent;
use crate::store::{Store, StoreError};

/// Largest number of events written in one store transaction.
const MAX_BATCH: usize = 512;
/// How long an `end` may wait for a commit it can ride with.
const END_DELAY: Duration = Duration::from_millis(20);
const SPOOL_FILE: &str = "audit-spool.ndjson";

struct Pending {
    event: AuditEvent,
    done: oneshot::Sender<Result<(), StoreError>>,
    /// Someone runs nothing until this is stored (a `begin`, a review event).
    urgent: bool,
}

#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Pending>,
    spool: Arc<Spool>,
    store: Arc<dyn Store>,
}

impl AuditWriter {
    /// Starts the batching loop on its own thread. The thread ends when every `AuditWriter`
    /// clone is dropped, after committing what it holds.
    pub fn start(store: Arc<dyn Store>, data_dir: &Path) -> Result<AuditWriter, String> {
        let (tx, rx) = mpsc::channel::<Pending>(4 * MAX_BATCH);
        // Its own runtime: a store's client (PostgreSQL) needs timers and I/O.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the audit writer's runtime: {e}"))?;
        let loop_store = store.clone();
        std::thread::Builder::new()
            .name("airlock-audit".into())
            .spawn(move || {
                crate::store::blocking_allowed(|| runtime.block_on(batch_loop(loop_store, rx)))
            })
            .map_err(|e| format!("cannot start the audit writer's thread: {e}"))?;
        Ok(AuditWriter {
            tx,
            spool: Arc::new(Spool {
                path: data_dir.join(SPOOL_FILE),
                lock: Mutex::new(()),
            }),
            store,
        })
    }

    /// Durably stores one event; `Err` means it is not stored and the caller must fail closed.
    pub async fn commit(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.store_event(event, true).await
    }

    async fn store_event(&self, event: AuditEvent, urgent: bool) -> Result<(), StoreError> {
        let event = event.without_nul();
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Pending {
                event,
                done,
                urgent,
            })
            .await
            .map_err(|_| StoreError::Unavailable("audit writer stopped".into()))?;
        wait.await
            .map_err(|_| StoreError::Unavailable("audit writer stopped".into()))?
    }

    /// Stores an end event, falling back to the spool. Errors only if both fail, which is
    /// logged loudly: the disk under the data directory is gone.
    pub async fn commit_end(&self, event: AuditEvent) {
        self.store_end(event, true).await
    }

    /// [`Self::commit_end`] for an end whose request has been answered already: it may wait
    /// up to [`END_DELAY`] to ride with the next commit.
    pub async fn commit_end_after_answer(&self, event: AuditEvent) {
        self.store_end(event, false).await
    }

    async fn store_end(&self, event: AuditEvent, urgent: bool) {
        let id = event.id.clone();
        if let Err(e) = self.store_event(event.clone(), urgent).await {
            tracing::warn!(error = %e, event = %id, "audit store refused an end event; spooling it");
            if let Err(e) = self.spool.append(&event).await {
                tracing::error!(error = %e, event = %id, "AUDIT EVENT NOT PERSISTED: spool write failed");
            }
        }
    }

    /// Moves spooled events into the store. Safe to call at any time.
    pub async fn replay_spool(&self) -> Result<usize, String> {
        self.spool.replay(self.store.as_ref()).await
    }

    /// Replays the spool periodically until the process ends.
    pub fn spawn_spool_replayer(&self, every: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = me.replay_spool().await {
                    tracing::warn!(error = %e, "audit spool replay failed; will retry");
                }
            }
        });
    }
}

async fn batch_loop(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::new();
    // When the oldest held `end` must be committed, whatever else arrives.
    let mut hold_until: Option<tokio::time::Instant> = None;
    loop {
        let received = match hold_until {
            None => rx.recv().await,
            Some(deadline) => tokio::select! {
                p = rx.recv() => p,
                _ = tokio::time::sleep_until(deadline) => {
                    commit(store.as_ref(), std::mem::take(&mut batch)).await;
                    hold_until = None;
                    continue;
                }
            },
        };
        let Some(first) = received else {
            // Every writer is gone: what is held is committed before the task ends.
            commit(store.as_ref(), batch).await;
            return;
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if batch.len() < MAX_BATCH && !batch.iter().any(|p| p.urgent) {
            hold_until.get_or_insert_with(|| tokio::time::Instant::now() + END_DELAY);
            continue;
        }
        commit(store.as_ref(), std::mem::take(&mut batch)).await;
        hold_until = None;
    }
}

/// One group commit: every waiter learns the same result.
async fn commit(store: &dyn Store, batch: Vec<Pending>) {
    if batch.is_empty() {
        return;
    }
    let (events, waiters): (Vec<AuditEvent>, Vec<_>) =
        batch.into_iter().map(|p| (p.event, p.done)).unzip();
    let started = std::time::Instant::now();
    let result = store.append_audit(&events).await;
    crate::metrics::audit_batch(events.len(), started.elapsed(), result.is_ok());
    // A store that refuses the batch for what is in it (not for being unavailable) is
    // asked again event by event: one event it cannot take fails its own request, never
    // the others' that rode in the same commit.
    if let Err(StoreError::Other(_)) = &result
        && events.len() > 1
    {
        for (event, done) in events.iter().zip(waiters) {
            let one = store.append_audit(std::slice::from_ref(event)).await;
            let _ = done.send(one);
        }
        return;
    }
    for done in waiters {
        // A waiter that gave up (request cancelled) is fine: the event is stored anyway.
        let _ = done.send(result.clone());
    }
}

struct Spool {
    path: PathBuf,
    /// Serialises appends and replays so a replay never truncates an unreplayed append.
    lock: Mutex<()>,
}

impl Spool {
    async fn append(&self, event: &AuditEvent) -> Result<(), String> {
        let _guard = self.lock.lock().await;
        let mut line = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        f.write_all(&line).await.map_err(|e| e.to_string())?;
        f.sync_all().await.map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn replay(&self, store: &dyn Store) -> Result<usize, String> {
        let _guard = self.lock.lock().await;
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        };
        let mut events = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<AuditEvent>(line) {
                Ok(e) => events.push(e),
                // A torn last line (crash mid-append) is the only way to get here; the event
                // it held was never acknowledged as spooled.
                Err(e) => {
                    tracing::warn!(line = n + 1, error = %e, "skipping unreadable spool line")
                }
            }
        }
        if events.is_empty() {
            let _ = tokio::fs::remove_file(&self.path).await;
            return Ok(0);
        }
        for chunk in events.chunks(MAX_BATCH) {
            store.append_audit(chunk).await.map_err(|e| e.to_string())?;
        }
        tokio::fs::remove_file(&self.path)
            .await
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        Ok(events.len())
    }
}
