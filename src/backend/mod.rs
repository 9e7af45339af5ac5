//! Backends: one file per target kind, all behind [`SqlBackend`].
//!
//! The contract every backend keeps (the pipeline relies on it):
//! - `query` acquires a pooled connection (waiting at most the pool wait timeout, else
//!   [`BackendError::Unavailable`]), prepares exactly one statement with the server's
//!   prepared/extended protocol, checks the parameter count, opens one transaction (read-only
//!   when the connection is), and returns a [`RowStream`]. Errors found before the first row
//!   are returned directly so the API can answer with a proper status.
//! - Rows are produced into a small bounded channel: the database is read only as fast as
//!   the client consumes (backpressure), memory stays constant. The producer is a task of
//!   its own (SQLite), or a future the stream runs while its reader waits (PostgreSQL,
//!   MySQL; see [`RowStream::with_producer`]), which saves a task hand-off per request.
//! - At most `max_rows + 1` rows are fetched from the server; the extra row only sets
//!   `truncated`.
//! - When the plan's timeout passes, the cancel token fires, or the receiver is dropped
//!   (client gone, byte cap hit), the statement is cancelled *on the server* and the
//!   connection is closed rather than returned to the pool. Session state never passes
//!   from one request to the next.
//! - Every value has a JSON form (see `docs/types.md`); an unknown type falls back to its
//!   text form, never to an error or a silent null.

pub mod http;
pub mod kube;
pub mod mysql;
pub mod postgres;
mod pump;
pub mod sqlite;
pub mod ssh;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{ConnectionConfig, ConnectionKind, TargetConfig};

/// How many events may sit between a backend's producer task and the client.
pub const STREAM_BUFFER: usize = 64;

/// One result column.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema, PartialEq)]
#[schema(example = json!({"name": "email", "type": "text"}))]
pub struct Column {
    /// The column's name in the result (its alias, if any).
    pub name: String,
    /// The database's type name (`int8`, `numeric`, `varchar`, ...).
    #[serde(rename = "type")]
    pub type_name: String,
}

/// What to run: one statement, its parameters and the limits already clamped by the pipeline.
#[derive(Debug, Clone)]
pub struct QueryPlan {
    pub sql: String,
    pub params: Vec<serde_json::Value>,
    pub max_rows: u64,
    pub timeout: Duration,
    /// Set by a reviewer: a write affecting more rows than this is rolled back.
    pub max_affected_rows: Option<u64>,
    /// The inspector proved the statement only reads: every statement kind is a plain read,
    /// nothing nested writes, no row locks, and every function called is a listed one
    /// without side effects. A backend may then run it in a read-only transaction whose end
    /// it sends without waiting for the rows (nothing can be committed either way).
    pub reads_only: bool,
}

#[derive(Debug)]
pub enum RowEvent {
    /// Always the first event.
    Columns(Vec<Column>),
    Row(Vec<serde_json::Value>),
    /// Always the last event of a successful run.
    End {
        /// More rows existed than `max_rows`.
        truncated: bool,
        /// Rows affected by a write statement, when the server reports it.
        affected_rows: Option<u64>,
    },
}

/// The receiving end of a query; dropping it cancels the query on the server.
///
/// What must stay true when the stream runs its producer (`with_producer`):
/// - The producer makes progress whenever its reader waits: in [`RowStream::next`] and in
///   [`RowStream::drive`], which the reader uses for every other wait while the stream is
///   alive (sending a row or an error on to its client, reading the schema for masking), so
///   the producer's deadline, cancel and consumer-gone checks keep running as they would in
///   a task of its own.
/// - A producer never stops half-way: a stream dropped before its producer finished polls
///   it once more and, if it is still not done, hands it to a task of its own. It then sees
///   the closed channel and runs its cleanup (cancel on the server, close the connection).
/// - A producer whose poll panicked is never polled again (that would panic again, and a
///   second panic while unwinding aborts the process): it is taken out before each poll
///   and put back only when the poll returns.
pub struct RowStream {
    rx: mpsc::Receiver<Result<RowEvent, BackendError>>,
    producer: Producer,
}

/// The producer a stream runs, while it runs; resolves once, when it finishes.
struct Producer(Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>);

impl Producer {
    fn running(&self) -> bool {
        self.0.is_some()
    }
}

impl Future for Producer {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        // Out of its slot while polled: if the poll panics, it is dropped, not kept.
        let Some(mut running) = self.0.take() else {
            return std::task::Poll::Pending;
        };
        let polled = running.as_mut().poll(cx);
        if polled.is_pending() {
            self.0 = Some(running);
        }
        polled
    }
}

impl RowStream {
    pub fn channel() -> (RowSender, RowStream) {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        (
            RowSender { tx },
            RowStream {
                rx,
                producer: Producer(None),
            },
        )
    }

    /// This stream runs `producer` (which feeds its channel) whenever its reader waits,
    /// instead of the producer running as a task of its own.
    pub fn with_producer(mut self, producer: impl Future<Output = ()> + Send + 'static) -> Self {
        self.producer = Producer(Some(Box::pin(producer)));
        self
    }

    pub async fn next(&mut self) -> Option<Result<RowEvent, BackendError>> {
        if self.producer.running() {
            tokio::select! {
                biased;
                event = self.rx.recv() => return event,
                () = &mut self.producer => {}
            }
        }
        self.rx.recv().await
    }

    /// Awaits `work` while running the producer, if the stream has one.
    pub async fn drive<T>(&mut self, work: impl Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        if self.producer.running() {
            tokio::select! {
                biased;
                out = &mut work => return out,
                () = &mut self.producer => {}
            }
        }
        work.await
    }
}

impl Drop for RowStream {
    fn drop(&mut self) {
        let Some(mut producer) = self.producer.0.take() else {
            return;
        };
        // Unwinding from a panic (perhaps the producer's own): polling now could panic
        // again and abort. Without a runtime (process teardown) there is nothing left to
        // clean up for, and the producer's timers could not run.
        if std::thread::panicking() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Usually one step from its end (it sent the last event): finishing it here gives
        // its connection back to the pool before the reader moves on.
        if futures::FutureExt::now_or_never(producer.as_mut()).is_some() {
            return;
        }
        runtime.spawn(producer);
    }
}

/// The producing end, held by a backend's task.
#[derive(Clone)]
pub struct RowSender {
    tx: mpsc::Sender<Result<RowEvent, BackendError>>,
}

impl RowSender {
    /// Sends one event; `false` means the consumer is gone and the producer must cancel.
    pub async fn send(&self, event: Result<RowEvent, BackendError>) -> bool {
        self.tx.send(event).await.is_ok()
    }

    /// For producers on a blocking thread (SQLite).
    pub fn blocking_send(&self, event: Result<RowEvent, BackendError>) -> bool {
        self.tx.blocking_send(event).is_ok()
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the consumer drops the stream.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A database error as the server reported it; values it echoes are masked by the pipeline.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"sqlstate": "42P01", "message": "relation \"custmers\" does not exist", "position": 15}))]
pub struct DatabaseError {
    /// SQLSTATE (PostgreSQL, MySQL) or the SQLite result-code name.
    pub sqlstate: String,
    /// The server's message (masked like rows; withheld on connections with protected columns
    /// except for syntax and access errors).
    pub message: String,
    /// The server's detail, if any (masked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The server's hint, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// 1-based character position in the statement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// MySQL/MariaDB numeric error code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u32>,
}

impl DatabaseError {
    /// Serialization failures and deadlocks: the same request may succeed when retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self.sqlstate.as_str(), "40001" | "40P01")
            || matches!(self.code, Some(1213) | Some(1205))
    }

    /// The server refused a write inside a read-only transaction.
    pub fn is_read_only_violation(&self) -> bool {
        self.sqlstate == "25006" || self.code == Some(1792) || self.sqlstate == "SQLITE_READONLY"
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// Pool exhausted or target unreachable: nothing ran.
    #[error("backend unavailable: {detail}")]
    Unavailable {
        detail: String,
        retry_after_secs: u64,
    },
    #[error("database error {}: {}", .0.sqlstate, .0.message)]
    Database(DatabaseError),
    #[error("statement timed out and was cancelled")]
    Timeout,
    #[error("bad parameters: {0}")]
    Params(String),
    #[error("cancelled")]
    Cancelled,
    /// The target (pod, container) does not exist or is not allowed: nothing ran.
    #[error("{0}")]
    NotFound(String),
    /// The write affected more rows than its reviewer allowed; it was rolled back.
    #[error(
        "the statement affected {affected} rows, more than the {max} its approval allows; rolled back"
    )]
    AffectedRowsExceeded { affected: u64, max: u64 },
    #[error("backend failure: {0}")]
    Internal(String),
}

/// One table or view the caller may read, as the connection's database account sees it:
/// its columns, keys and comments. Backends fill the catalog facts; the gateway fills each
/// column's `masked`/`masking` for the caller and drops keys that would name what the caller
/// may not see (see `gateway::schema`).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "schema": "public",
    "name": "orders",
    "kind": "table",
    "comment": "One row per order",
    "primary_key": ["id"],
    "foreign_keys": [{"name": "orders_customer_id_fkey", "columns": ["customer_id"], "referenced_schema": "public", "referenced_table": "customers", "referenced_columns": ["id"]}],
    "columns": [
        {"name": "id", "type": "bigint", "nullable": false, "comment": null, "masked": false, "masking": null},
        {"name": "customer_id", "type": "bigint", "nullable": false, "comment": "Who ordered", "masked": false, "masking": null}
    ]
}))]
pub struct TableInfo {
    /// The PostgreSQL schema or MySQL database holding the table; null on SQLite.
    #[schema(example = "public")]
    pub schema: Option<String>,
    /// The name as the catalog spells it (quote it in SQL if it is not all lower case).
    #[schema(example = "orders")]
    pub name: String,
    /// `table` or `view`.
    #[schema(example = "table")]
    pub kind: String,
    /// The table's comment (PostgreSQL `COMMENT ON TABLE`, MySQL `COMMENT=`); null when it
    /// has none (SQLite tables never have one).
    #[schema(example = "One row per order")]
    pub comment: Option<String>,
    /// The primary key's columns in key order; empty when the table has none (views,
    /// tables without one) or when the account cannot see one of its columns.
    #[schema(example = json!(["id"]))]
    pub primary_key: Vec<String>,
    /// This table's foreign keys. A key to a table the caller may not read, or over a
    /// column the account cannot see, is left out, like that table.
    pub foreign_keys: Vec<ForeignKey>,
    /// Columns in table order.
    pub columns: Vec<ColumnInfo>,
}

/// A foreign key: `columns` of this table reference `referenced_columns` of
/// `referenced_schema.referenced_table`, position by position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"name": "orders_customer_id_fkey", "columns": ["customer_id"], "referenced_schema": "public", "referenced_table": "customers", "referenced_columns": ["id"]}))]
pub struct ForeignKey {
    /// The constraint's name; null where the catalog names none (SQLite).
    #[schema(example = "orders_customer_id_fkey")]
    pub name: Option<String>,
    /// This table's columns, in key order.
    #[schema(example = json!(["customer_id"]))]
    pub columns: Vec<String>,
    /// The referenced table's schema (PostgreSQL) or database (MySQL); null on SQLite.
    #[schema(example = "public")]
    pub referenced_schema: Option<String>,
    /// The referenced table, as the catalog spells it.
    #[schema(example = "customers")]
    pub referenced_table: String,
    /// The referenced columns, matching `columns` position by position.
    #[schema(example = json!(["id"]))]
    pub referenced_columns: Vec<String>,
}

/// One column, and how the caller would receive its values.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"name": "email", "type": "text", "nullable": false, "comment": "Contact address", "masked": true, "masking": {"column": "customers.email", "strategy": "redact"}}))]
pub struct ColumnInfo {
    /// The name as the catalog spells it.
    #[schema(example = "email")]
    pub name: String,
    /// The database's type name (`bigint`, `varchar(255)`, `text`, ...).
    #[serde(rename = "type")]
    #[schema(example = "text")]
    pub type_name: String,
    /// Whether the column accepts NULL.
    #[schema(example = false)]
    pub nullable: bool,
    /// The column's comment (PostgreSQL `COMMENT ON COLUMN`, MySQL `COMMENT`); null when it
    /// has none (SQLite columns never have one).
    #[schema(example = "Contact address")]
    pub comment: Option<String>,
    /// Whether a masking column rule masks this column's values whole for this caller.
    /// False for a caller exempt from masking (a human in an exempt group), and for a column
    /// only the content detectors scan (see the schema's `detectors`).
    #[schema(example = true)]
    pub masked: bool,
    /// How, when `masked`: the column rule (glob over `column` or `table.column`) and its
    /// strategy. `partial` and `hash` apply to the column selected as stored; any
    /// expression over it comes back redacted. Null when not masked.
    pub masking: Option<crate::mask::plan::ColumnRuleView>,
}

/// One SQL target. Implementations: [`postgres::PostgresBackend`], [`mysql::MysqlBackend`],
/// [`sqlite::SqliteBackend`].
#[async_trait::async_trait]
pub trait SqlBackend: Send + Sync {
    /// Startup check: reachable, not privileged (unless allowed), not Airlock's own store.
    /// `Err(Unavailable)` is tolerated at startup (target down); anything else refuses.
    async fn verify(&self) -> Result<(), BackendError>;

    /// Runs one statement; see the module contract.
    async fn query(
        &self,
        plan: QueryPlan,
        cancel: CancellationToken,
    ) -> Result<RowStream, BackendError>;

    /// Tables and columns visible to the connection's database account.
    async fn schema(&self) -> Result<Vec<TableInfo>, BackendError>;

    /// The sqlparser dialect to inspect statements with.
    fn kind(&self) -> ConnectionKind;
}

/// What backends need from the outside world besides their own config.
pub struct BackendContext {
    /// Where relative SQLite paths live.
    pub data_dir: std::path::PathBuf,
    /// Identity of Airlock's own store, so a connection can never point at it.
    pub store_identity: crate::store::StoreIdentity,
}

/// A connection's target: SQL (`query`), commands (`exec`) or an HTTP API (one backend
/// type, so no trait: see [`http::HttpBackend`]).
#[derive(Clone)]
pub enum Target {
    Sql(Arc<dyn SqlBackend>),
    Exec(Arc<dyn ExecBackend>),
    Http(Arc<http::HttpBackend>),
}

impl Target {
    pub async fn verify(&self) -> Result<(), BackendError> {
        match self {
            Target::Sql(b) => b.verify().await,
            Target::Exec(b) => b.verify().await,
            Target::Http(b) => b.verify().await,
        }
    }
}

pub fn build(config: &ConnectionConfig, ctx: &BackendContext) -> Result<Target, String> {
    Ok(match (&config.target, config.kind) {
        (TargetConfig::Database(db), ConnectionKind::Postgres) => {
            Target::Sql(Arc::new(postgres::PostgresBackend::new(config, db, ctx)?))
        }
        (TargetConfig::Database(db), _) => {
            Target::Sql(Arc::new(mysql::MysqlBackend::new(config, db)?))
        }
        (TargetConfig::Sqlite(file), _) => {
            Target::Sql(Arc::new(sqlite::SqliteBackend::new(config, file, ctx)?))
        }
        (TargetConfig::Ssh(ssh), _) => Target::Exec(Arc::new(ssh::SshBackend::new(config, ssh)?)),
        (TargetConfig::Kubernetes(kube), _) => {
            Target::Exec(Arc::new(kube::KubeBackend::new(config, kube)?))
        }
        (TargetConfig::Http(http), _) => {
            Target::Http(Arc::new(http::HttpBackend::new(config, http)?))
        }
    })
}

/// The instant `timeout` from now — the one way backends compute deadlines. An absurd
/// timeout must not overflow the clock; a year is "no deadline" in practice.
pub(crate) fn deadline_after(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// Runs `fut` but gives up when `cancel` fires or `deadline` passes.
pub async fn bounded<T>(
    fut: impl std::future::Future<Output = T>,
    cancel: &CancellationToken,
    deadline: tokio::time::Instant,
) -> Result<T, BackendError> {
    tokio::select! {
        r = fut => Ok(r),
        _ = cancel.cancelled() => Err(BackendError::Cancelled),
        _ = tokio::time::sleep_until(deadline) => Err(BackendError::Timeout),
    }
}

/// A command to run on a host: the argv Airlock inspected, already re-quoted for a POSIX
/// shell into `command` (the remote login shell parses it; see `inspect::shell`).
#[derive(Debug, Clone)]
pub struct ExecPlan {
    /// What is sent as the SSH `exec` request: argv, each argument quoted.
    pub command: String,
    /// The argv itself (Kubernetes runs it directly, with no shell).
    pub argv: Vec<String>,
    /// Kubernetes: the pod (and container) to run in. `None` for SSH.
    pub target: Option<PodTarget>,
    /// Bytes written to the command's stdin, then EOF. `None`: EOF at once.
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
}

#[derive(Debug)]
pub enum ExecEvent {
    Stdout(bytes::Bytes),
    Stderr(bytes::Bytes),
    /// Always the last event of a command that ended by itself.
    Exit {
        /// `None` when the command died of a signal.
        code: Option<u32>,
        signal: Option<String>,
    },
}

/// The receiving end of a command's output; dropping it stops the command (signal, then
/// channel close) — the same contract as [`RowStream`].
pub struct ExecStream {
    rx: mpsc::Receiver<Result<ExecEvent, BackendError>>,
}

impl ExecStream {
    pub fn channel() -> (ExecSender, ExecStream) {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        (ExecSender { tx }, ExecStream { rx })
    }

    pub async fn next(&mut self) -> Option<Result<ExecEvent, BackendError>> {
        self.rx.recv().await
    }
}

#[derive(Clone)]
pub struct ExecSender {
    tx: mpsc::Sender<Result<ExecEvent, BackendError>>,
}

impl ExecSender {
    /// `false`: the consumer is gone and the producer must stop the command.
    pub async fn send(&self, event: Result<ExecEvent, BackendError>) -> bool {
        self.tx.send(event).await.is_ok()
    }

    pub async fn closed(&self) {
        self.tx.closed().await
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A command target (SSH). The contract every implementation keeps:
/// - `exec` connects (bounded by the connect/handshake timeouts, else `Unavailable` or
///   `Timeout`), authenticates with credentials only Airlock holds, verifies the pinned host
///   key (unknown or changed → refused, `Unavailable` with a clear detail), opens one
///   channel, sends `plan.command` as the exec request, writes stdin, and streams output.
///   Errors before the command started are returned directly.
/// - Output is pulled from the remote only as fast as the consumer reads (bounded channel).
/// - When `plan.timeout` passes, `cancel` fires, or the consumer drops the stream, the remote
///   process is killed (SSH `signal` KILL, then channel close) and, for a timeout,
///   `Err(BackendError::Timeout)` is the last event.
#[async_trait::async_trait]
pub trait ExecBackend: Send + Sync {
    /// Startup check: reachable, host key matches, authentication works.
    async fn verify(&self) -> Result<(), BackendError>;

    async fn exec(
        &self,
        plan: ExecPlan,
        cancel: CancellationToken,
    ) -> Result<ExecStream, BackendError>;

    /// An interactive login shell on a PTY (`pty-req` + `shell`). Same connection contract as
    /// `exec`. Input goes through `ShellSession::input` (bounded: a client typing faster
    /// than the host reads is back-pressured, never buffered without bound); output (stdout
    /// and stderr merged by the PTY) and the final `Exit` come through `output`. Dropping
    /// the session, sending `ShellInput::Close`, or `cancel` ends it: the remote side is
    /// killed as for `exec`.
    async fn shell(
        &self,
        plan: ShellPlan,
        cancel: CancellationToken,
    ) -> Result<ShellSession, BackendError>;
}

/// Where a command runs in a Kubernetes cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"namespace": "shop", "pod": "api-7d9f8b6c5-x2x4q", "container": "api"}))]
pub struct PodTarget {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// Default: the pod's only (or default) container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// Terminal of an interactive shell.
#[derive(Debug, Clone)]
pub struct ShellPlan {
    /// Kubernetes: the pod (and container). `None` for SSH.
    pub target: Option<PodTarget>,
    pub cols: u32,
    pub rows: u32,
    /// `TERM` for the remote PTY.
    pub term: String,
}

#[derive(Debug)]
pub enum ShellInput {
    /// Keystrokes / bytes for the PTY.
    Data(bytes::Bytes),
    /// Window change (already bounded by the caller).
    Resize { cols: u32, rows: u32 },
    /// End the session (the client left or an admin terminated it).
    Close,
}

/// A running interactive shell.
pub struct ShellSession {
    pub input: mpsc::Sender<ShellInput>,
    pub output: ExecStream,
}

#[cfg(test)]
mod tests {
    use super::RowStream;

    /// A producer bug fails the request whose stream runs it, never the process: the
    /// panicked producer is not polled again when its stream is dropped while unwinding.
    #[tokio::test]
    async fn a_producer_that_panics_fails_its_reader_not_the_process() {
        let (tx, stream) = RowStream::channel();
        let mut stream = stream.with_producer(async move {
            let _sender = tx;
            panic!("a producer bug");
        });
        let reader = tokio::spawn(async move { stream.next().await.is_none() });
        assert!(
            reader.await.is_err(),
            "the reader's task ends with the panic"
        );
        // And a stream dropped with its producer still running hands it to a task, which
        // finishes it.
        let (tx, stream) = RowStream::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let stream = stream.with_producer(async move {
            tx.closed().await;
            let _ = done_tx.send(());
        });
        drop(stream);
        assert!(done_rx.await.is_ok(), "the producer ran to its end");
    }
}
