//! Startup, shared state and graceful shutdown.
//!
//! Invariants:
//! - Nothing listens until the whole configuration is valid, the store is migrated, and
//!   every connection has passed its startup checks (a target that is merely down is
//!   tolerated and checked again on use; a privileged account or Airlock's own store is not).
//! - A dev issuer is refused on a non-loopback listener.
//! - On SIGTERM (or the shutdown future): `/readyz` turns 503 at once, in-flight requests
//!   drain for `drain_timeout_ms`, then are cancelled on their targets; audit ends are
//!   flushed before the process exits.
//! - Shutdown is bounded by `drain_timeout_ms` + [`CLOSE_GRACE`] (+ the audit flush):
//!   connections still writing a response by then (a client too slow to take a cancelled
//!   stream's last rows and trailer) are closed, never waited for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use crate::api::AppState;
use crate::audit::Outcome;
use crate::audit::writer::AuditWriter;
use crate::backend::{self, BackendContext, BackendError};
use crate::config::{Config, TargetConfig};
use crate::gateway::record::{Ending, closing};
use crate::gateway::{Connection, Gateway};
use crate::identity::Authenticator;
use crate::mask::plan::Masking;
use crate::policy::{Policy, PrincipalPattern};
use crate::store::{self, Store};

/// After the drain, how long cancelled responses (an NDJSON trailer, a 503) get to reach
/// their clients before the connections still open are closed.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Everything `serve` needs, built and checked before binding.
pub struct Prepared {
    pub state: Arc<AppState>,
    pub listen: SocketAddr,
    pub drain: Duration,
    pub limits: crate::net::ConnectionLimits,
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// The grace period after which an unfinished `begin` surely belongs to a dead process:
/// longer than any request can run.
fn stale_after(config: &Config) -> Duration {
    let longest = config
        .connections
        .iter()
        .map(|c| c.limits.max_timeout_ms)
        .max()
        .unwrap_or(0)
        // A shell is an execution too, and may live this long.
        .max(config.shells.max_duration_ms);
    Duration::from_millis(longest + config.server.drain_timeout_ms) + Duration::from_secs(60)
}

pub async fn prepare(
    config: Config,
    data_dir: &Path,
    listen_override: Option<SocketAddr>,
) -> Result<Prepared, String> {
    let listen = match listen_override {
        Some(a) => a,
        None => config.listen_addr().map_err(|e| e.to_string())?,
    };
    if config.dev_issuer().is_some() && !is_loopback(&listen) {
        return Err(format!(
            "the dev issuer is configured but the listener {listen} is not loopback; \
             remove the dev issuer or listen on 127.0.0.1"
        ));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    if config
        .connections
        .iter()
        .any(|c| matches!(&c.target, TargetConfig::Sqlite(s) if s.path == Path::new(crate::demo::DEMO_FILE)))
    {
        crate::demo::ensure(data_dir)?;
    }

    let store = store::open(&config, data_dir).await?;
    let audit = AuditWriter::start(store.clone(), data_dir)?;
    match audit.replay_spool().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(events = n, "replayed spooled audit events"),
        Err(e) => tracing::warn!(error = %e, "audit spool not replayed yet; will retry"),
    }
    audit.spawn_spool_replayer(Duration::from_secs(10));
    // SQLite is single-instance: every unfinished begin is from a previous run. A shared
    // PostgreSQL store may have live requests of other instances, so wait them out.
    let grace = if config.store.url.is_some() {
        stale_after(&config)
    } else {
        Duration::ZERO
    };
    close_interrupted(&store, &audit, grace).await;
    spawn_interrupted_sweeper(store.clone(), audit.clone(), stale_after(&config));

    let ctx = BackendContext {
        data_dir: data_dir.to_path_buf(),
        store_identity: store.identity(),
    };
    let mut connections = HashMap::new();
    for c in &config.connections {
        let target =
            backend::build(c, &ctx).map_err(|e| format!("connection `{}`: {e}", c.name))?;
        let connection = Connection::new(c.clone(), target, config.connection_version(&c.name));
        match connection.target.verify().await {
            Ok(()) => {
                let _ = connection.verified.set(());
            }
            Err(BackendError::Unavailable { detail, .. }) => {
                tracing::warn!(connection = %c.name, %detail, "target unreachable at startup; will connect on use")
            }
            Err(e) => return Err(format!("connection `{}`: {e}", c.name)),
        }
        connections.insert(c.name.clone(), Arc::new(connection));
    }

    let audit_readers = config
        .audit
        .readers
        .iter()
        .filter_map(|p| PrincipalPattern::parse(p).ok())
        .collect();
    let drain = Duration::from_millis(config.server.drain_timeout_ms);
    let limits = crate::net::ConnectionLimits {
        write_idle: Duration::from_millis(config.server.write_idle_timeout_ms),
        header_read: Duration::from_millis(config.server.header_read_timeout_ms),
        max_connections: config.server.max_connections,
    };
    let max_concurrent_per_principal = config.server.max_concurrent_per_principal;
    let max_body_bytes = config.server.max_body_bytes;
    let config_body_read_ms = config.server.body_read_timeout_ms;
    let policy = Policy::new(config.rules.clone(), config.policy_version());
    let notifier = match (&config.reviews.webhook_url, &config.reviews.webhook_secret) {
        (Some(url), Some(secret)) => Some(crate::review::notify::Notifier::new(
            url,
            secret
                .resolve()
                .map_err(|e| format!("reviews.webhook_secret: {e}"))?,
        )?),
        _ => None,
    };
    let reviews = Arc::new(crate::review::hub::ReviewHub::default());
    let masking_key = match &config.server.masking_key {
        Some(r) => r
            .resolve()
            .map_err(|e| format!("server.masking_key: {e}"))?
            .expose()
            .as_bytes()
            .to_vec(),
        None => crate::keyfile::load_or_create(
            &data_dir.join("masking.key"),
            "masking pseudonym key",
            || crate::keyfile::random(32),
        )?,
    };
    let masking = Masking::new(&config.masking, masking_key)?;
    store.subscribe_reviews(reviews.clone());
    let run_grace = stale_after(&config);
    let retention_days = config.server.recording_retention_days;
    let (memory, memory_total) =
        crate::gateway::Gateway::memory_budget(config.server.memory_budget_bytes);
    let shells_config = config.shells.clone();
    let jobs_config = config.jobs;
    let console = config.console.clone();
    let auth = Authenticator::new(config, data_dir)?;
    auth.warm_up().await;
    let gateway = Arc::new(Gateway {
        policy,
        connections,
        audit,
        store,
        shutdown: CancellationToken::new(),
        slots: crate::gateway::slots::Slots::new(max_concurrent_per_principal),
        reviews,
        notifier,
        masking,
        shells: crate::gateway::shell::Running::default(),
        shells_config,
        in_flight: Default::default(),
        memory,
        memory_total,
        jobs: Default::default(),
        jobs_config,
    });
    crate::gateway::jobs::spawn_cancel_poller(gateway.clone());
    crate::gateway::review::spawn_sweeper(gateway.clone(), run_grace);
    spawn_retention(gateway.clone(), retention_days);
    let state = Arc::new(AppState {
        gateway,
        auth,
        audit_readers,
        ready: AtomicBool::new(true),
        max_body_bytes,
        body_read_timeout: Duration::from_millis(config_body_read_ms),
        console,
    });
    Ok(Prepared {
        state,
        listen,
        drain,
        limits,
    })
}

async fn close_interrupted(store: &Arc<dyn Store>, audit: &AuditWriter, grace: Duration) {
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default();
    match store.unfinished(cutoff).await {
        Ok(begins) => {
            let interrupted = Ending::with_class(Outcome::Interrupted, "interrupted");
            for b in begins {
                audit.commit_end(closing(&b, &interrupted, None)).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not look for interrupted requests"),
    }
}

fn spawn_interrupted_sweeper(store: Arc<dyn Store>, audit: AuditWriter, grace: Duration) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            close_interrupted(&store, &audit, grace).await;
        }
    });
}

/// Deletes recordings past their retention, hourly.
fn spawn_retention(state: Arc<Gateway>, days: u64) {
    tokio::spawn(async move {
        loop {
            let cutoff = chrono::Utc::now() - chrono::Duration::days(days.min(365_000) as i64);
            match state.store.delete_sessions_before(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, "deleted recordings past retention"),
                Err(e) => tracing::warn!(error = %e, "recording retention sweep failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = state.shutdown.cancelled() => return,
            }
        }
    });
}

/// A running server; dropping it does not stop it, `shutdown` does.
pub struct Running {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the server has stopped (after a signal, with `signals` set).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// Starts the same shutdown SIGTERM starts and waits for it to finish.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Binds and serves until `stop` fires (or SIGTERM/SIGINT when `signals` is set).
pub async fn start(prepared: Prepared, signals: bool) -> Result<Running, String> {
    let Prepared {
        state,
        listen,
        drain,
        limits,
    } = prepared;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("listener address: {e}"))?;
    let app = crate::api::router(state.clone());
    let stop = CancellationToken::new();
    if signals {
        let stop = stop.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            stop.cancel();
        });
    }
    let graceful = {
        let (stop, state) = (stop.clone(), state.clone());
        async move {
            stop.cancelled().await;
            state.ready.store(false, Ordering::SeqCst);
            tracing::info!(
                drain_ms = drain.as_millis() as u64,
                "shutting down: draining in-flight requests"
            );
            // After the drain period, cancel whatever still runs; the server future then
            // completes as their streams end.
            let state = state.clone();
            tokio::spawn(async move {
                tokio::time::sleep(drain).await;
                state.gateway.shutdown.cancel();
            });
        }
    };
    let cut = {
        let stop = stop.clone();
        async move {
            stop.cancelled().await;
            tokio::time::sleep(drain + CLOSE_GRACE).await;
        }
    };
    let task = {
        let state = state.clone();
        tokio::spawn(async move {
            crate::net::serve(listener, app, limits, graceful, cut).await;
            // Let execution tasks record their end events before the process exits.
            state.gateway.shutdown.cancel();
            state
                .gateway
                .in_flight
                .settled(Duration::from_secs(10))
                .await;
            if let Err(e) = state.gateway.audit.replay_spool().await {
                tracing::warn!(error = %e, "audit spool left for the next start");
            }
        })
    };
    Ok(Running {
        addr,
        state,
        stop,
        task,
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Resolves the data directory relative to the working directory.
pub fn data_dir(arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(|| PathBuf::from("airlock-data"))
}
