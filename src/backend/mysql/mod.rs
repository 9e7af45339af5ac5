//! MySQL / MariaDB backend (`mysql_async`).
//!
//! How this file keeps the backend contract (see `backend/mod.rs`), and why:
//!
//! - **One statement, binary protocol only.** Agent SQL goes through `COM_STMT_PREPARE` /
//!   `COM_STMT_EXECUTE` (`conn.prep` + `exec_iter`) and never through a text query:
//!   `mysql_async` always advertises `CLIENT_MULTI_STATEMENTS`, so a text query could carry a
//!   second statement, while the server's prepare accepts exactly one. Only our own fixed
//!   statements (`SET ...`, `START TRANSACTION`, `COMMIT`, `ROLLBACK`, `KILL CONNECTION <n>`,
//!   catalog queries) use the text protocol.
//!   `mysql_async` rewrites `:name` tokens into `?` before preparing. A statement it rewrote
//!   can never execute here: we always bind positionally, and the driver refuses positional
//!   values for a rewritten statement (reported as a parameter error).
//! - **Lexing is pinned.** The inspector parses statements with MySQL's default lexical rules,
//!   so every session runs with `SET NAMES utf8mb4` (no multi-byte charset in which a `\` can
//!   hide inside a character) and a fixed `sql_mode` that contains neither `ANSI_QUOTES`
//!   (would turn `"..."` from a string into an identifier), `NO_BACKSLASH_ESCAPES` (would end
//!   a string at `\'`), `PIPES_AS_CONCAT`, `IGNORE_SPACE`, `HIGH_NOT_PRECEDENCE` nor MariaDB's
//!   `ORACLE` (all change how the same text parses). `time_zone = '+00:00'` makes TIMESTAMP
//!   values and `NOW()` UTC.
//!   These statements are `mysql_async` *setup* commands, not *init* commands: setup commands
//!   run on every new connection **and again after every `COM_RESET_CONNECTION`** (see
//!   `Conn::reset` in mysql_async 0.37.1), whereas init commands run only once at connect and
//!   would be wiped by the reset, which restores session variables to the global defaults.
//! - **No session state between requests.** The pool resets every connection it gets back
//!   (`reset_connection = true`): transactions, session variables, user variables, temporary
//!   tables and prepared statements are dropped, then the setup commands run again.
//! - **LOCAL INFILE is never served.** mysql_async 0.37.1 hard-codes `CLIENT_LOCAL_FILES` in
//!   its handshake capabilities (`Opts::get_capabilities`); there is no option to clear it, so
//!   the server believes the client could send files. What keeps files safe is that no infile
//!   handler is installed, neither globally (`local_infile_handler(None)`, set explicitly
//!   below) nor per connection (`Conn::set_infile_handler` is never called): when the server
//!   asks for a local file the driver answers with `LocalInfileError::NoHandler` without
//!   opening anything, and closes the connection. Note that MariaDB 10.11 (verified) accepts
//!   `LOAD DATA LOCAL INFILE` through the prepared-statement protocol, so this refusal is the
//!   guard, not the protocol; the statement is reported as unsupported and its session killed.
//! - **Cancellation is real.** On timeout, cancel, consumer gone, row cap reached, or a failure
//!   while the statement may still run, a *side* connection (a tiny separate pool, because the
//!   main pool may be exhausted) sends `KILL CONNECTION <id>`: the server stops the statement,
//!   rolls its transaction back and closes the session. Our end of the socket is then closed
//!   with `Conn::disconnect`, whose first step marks the connection disconnected, so the
//!   pool's recycler discards it instead of resetting and reusing it. The rest of a result set
//!   is never drained through the socket, with one deliberate exception: a possibly writing
//!   statement (`DELETE ... RETURNING`) over the row cap on a read-write connection is read to
//!   its end so that it commits (see `Job::may_write`). When the server itself ends
//!   the statement with an error, the session is closed without a KILL. A server-side
//!   statement time limit (MariaDB `max_statement_time`, MySQL `max_execution_time`) is set
//!   slightly above the request's deadline as a backstop for when the side connection cannot
//!   be opened (verified on MariaDB: without the KILL, closing the socket alone also ended a
//!   running `SLEEP` and a streaming `SELECT`).
//!
//! What was verified against a server: MariaDB 10.11 only. MySQL-specific branches (the
//! `max_execution_time` backstop, `SHOW GRANTS ... USING` for roles, `JSON` column metadata)
//! follow MySQL 8 documentation and are marked where they appear.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use futures::FutureExt as _;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::{
    Conn, DriverError, Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, Row, SslOpts,
    Statement, Value,
};
use serde_json::Value as Json;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    BackendContext, BackendError, Column, ColumnInfo, DatabaseError, QueryPlan, RowEvent,
    RowSender, RowStream, SqlBackend, TableInfo, bounded,
};
use crate::config::{ConnectionConfig, ConnectionKind, TlsMode};

/// The `sql_mode` every session runs with. Strict, and free of every mode that changes how the
/// statement text is lexed or parsed (see the module comment).
const SQL_MODE: &str = "STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,\
                        ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION";

/// Character set id of `binary`: string/blob columns with it hold bytes, not text.
const BINARY_CHARSET: u16 = 63;

/// MariaDB `ER_STATEMENT_TIMEOUT` (max_statement_time exceeded).
const ER_STATEMENT_TIMEOUT: u16 = 1969;
/// MySQL `ER_QUERY_TIMEOUT` (max_execution_time exceeded).
const ER_QUERY_TIMEOUT: u16 = 3024;
/// `ER_NO_SUCH_THREAD`: the connection we wanted to kill is already gone.
const ER_NO_SUCH_THREAD: u16 = 1094;

/// The server-side statement limit is the request's remaining time plus this margin, so our own
/// deadline normally fires first and the server limit only backs it up.
const SERVER_LIMIT_MARGIN: Duration = Duration::from_secs(1);
/// Longest wait for the side connection and its `KILL`.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait to hand a final error to a consumer that is not reading.
const TERMINAL_SEND_GRACE: Duration = Duration::from_secs(5);
/// Idle pooled connections above the pool minimum (0) are closed after this long.
const IDLE_TTL: Duration = Duration::from_secs(300);
/// Connections of the side pool that only sends `KILL`.
const SIDE_POOL_MAX: usize = 2;
/// Bounds the role graph walked by `verify`.
const MAX_ROLES: usize = 64;

/// URL query parameters accepted in `url`. Everything else is either decided by Airlock (pool
/// size, reset, statement cache, TLS, socket use) or weakens a guarantee
/// (`enable_cleartext_plugin`, `secure_auth`, `verify_ca`, ...), so it is refused instead of
/// silently overridden.
const ALLOWED_URL_PARAMS: &[&str] = &[
    "tcp_keepalive",
    "tcp_nodelay",
    "conn_ttl",
    "max_allowed_packet",
    "wait_timeout",
    "compression",
];

/// Which server family answers; decides the statement-time-limit variable and role handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    MySql,
    MariaDb,
}

/// A MySQL or MariaDB target.
///
/// Deliberately not `Debug`: the pool options hold the resolved password.
pub struct MysqlBackend {
    pool: Pool,
    shared: Arc<Shared>,
    read_only: bool,
    allow_privileged: bool,
    pool_wait: Duration,
    /// Bound for our own catalog work (`verify`, `schema`).
    admin_timeout: Duration,
}

/// What the producer tasks share with the backend.
struct Shared {
    name: String,
    /// Separate pool for `KILL CONNECTION`: the main pool may be exhausted exactly when a
    /// statement has to be stopped.
    side: Pool,
    flavor: OnceLock<Flavor>,
}

impl MysqlBackend {
    pub fn new(config: &ConnectionConfig, _ctx: &BackendContext) -> Result<Self, String> {
        // `_ctx`: Airlock's own store is SQLite or PostgreSQL, so a MySQL target can never be it.
        let name = config.name.as_str();
        let context = |message: String| format!("connection `{name}`: {message}");

        let url = config
            .url
            .as_deref()
            .ok_or_else(|| context("a mysql connection needs `url`".into()))?;
        let base = parse_url(url).map_err(context)?;
        let password = match &config.password {
            Some(reference) => Some(
                reference
                    .resolve()
                    .map_err(|e| context(format!("password: {e}")))?,
            ),
            None => None,
        };
        let ssl = match config.tls.mode {
            TlsMode::Disable => None,
            TlsMode::VerifyFull => Some(ssl_opts(config).map_err(context)?),
        };
        let limits = &config.limits;
        let constraints = PoolConstraints::new(0, limits.pool_size)
            .ok_or_else(|| context("limits.pool_size must be at least 1".into()))?;
        let side_constraints = PoolConstraints::new(0, SIDE_POOL_MAX)
            .ok_or_else(|| context("internal: invalid side pool size".into()))?;

        let common = OptsBuilder::from_opts(base)
            .pass(password.as_ref().map(|p| p.expose().to_string()))
            .ssl_opts(ssl)
            // Connect exactly where the configuration says: `prefer_socket` would query
            // `@@socket` and silently move a loopback connection onto a unix socket.
            .prefer_socket(false)
            .socket(None::<String>)
            // Never serve LOCAL INFILE (see the module comment).
            .local_infile_handler(None::<mysql_async::WhiteListFsHandler>)
            // Never send the password in clear text to a server that asks for it.
            .enable_cleartext_plugin(false)
            .secure_auth(true);

        let main = common
            .clone()
            .setup(vec![setup_sql(config.read_only)])
            .pool_opts(
                PoolOpts::default()
                    .with_constraints(constraints)
                    .with_reset_connection(true)
                    // Non-zero so returned connections are kept (up to the maximum) and only
                    // idle ones are closed; with 0 the pool keeps none above the minimum.
                    .with_inactive_connection_ttl(IDLE_TTL),
            );
        // The side pool runs nothing but `KILL`, so it needs neither setup nor reset.
        let side = common.pool_opts(
            PoolOpts::default()
                .with_constraints(side_constraints)
                .with_reset_connection(false)
                .with_inactive_connection_ttl(IDLE_TTL),
        );

        // `Pool::new` panics only when its argument fails to convert into `Opts`; an `Opts`
        // converts infallibly. Pools connect lazily, so nothing here needs the runtime.
        Ok(MysqlBackend {
            pool: Pool::new(Opts::from(main)),
            shared: Arc::new(Shared {
                name: config.name.clone(),
                side: Pool::new(Opts::from(side)),
                flavor: OnceLock::new(),
            }),
            read_only: config.read_only,
            allow_privileged: config.allow_privileged,
            pool_wait: limits.pool_wait(),
            admin_timeout: Duration::from_millis(limits.timeout_ms),
        })
    }

    /// A pooled connection, waiting at most the pool wait timeout.
    async fn checkout(&self, cancel: Option<&CancellationToken>) -> Result<Conn, BackendError> {
        let name = &self.shared.name;
        let get = tokio::time::timeout(self.pool_wait, self.pool.get_conn());
        let got = match cancel {
            Some(cancel) => tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(BackendError::Cancelled),
                got = get => got,
            },
            None => get.await,
        };
        match got {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(BackendError::Unavailable {
                detail: format!("cannot connect to `{name}`: {e}"),
                retry_after_secs: 1,
            }),
            Err(_) => Err(BackendError::Unavailable {
                detail: format!(
                    "no connection to `{name}` within {} ms (pool exhausted or target unreachable)",
                    self.pool_wait.as_millis()
                ),
                retry_after_secs: 1,
            }),
        }
    }

    /// The server family, asked once per backend.
    async fn flavor(&self, conn: &mut Conn) -> Result<Flavor, BackendError> {
        if let Some(flavor) = self.shared.flavor.get() {
            return Ok(*flavor);
        }
        let rows: Vec<Row> = conn
            .query("SELECT VERSION()")
            .await
            .map_err(|e| admin_error(&self.shared.name, "reading the server version", e))?;
        let version = rows
            .first()
            .and_then(|row| text_value(row.as_ref(0)))
            .unwrap_or_default();
        let flavor = if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        };
        // A concurrent first request may have set it already; both saw the same server.
        let _ = self.shared.flavor.set(flavor);
        Ok(flavor)
    }
}

#[async_trait::async_trait]
impl SqlBackend for MysqlBackend {
    async fn verify(&self) -> Result<(), BackendError> {
        let mut conn = self.checkout(None).await?;
        let name = self.shared.name.as_str();
        let check = async {
            let flavor = self.flavor(&mut conn).await?;
            if self.allow_privileged {
                return Ok(Vec::new());
            }
            privileged_grants(&mut conn, flavor, name).await
        };
        let findings = match tokio::time::timeout(self.admin_timeout, check).await {
            Ok(findings) => findings?,
            Err(_) => {
                self.shared.kill_and_discard(conn).await;
                let waited = self.admin_timeout.as_millis();
                return Err(if self.allow_privileged {
                    BackendError::Unavailable {
                        detail: format!("`{name}` did not answer within {waited} ms"),
                        retry_after_secs: 1,
                    }
                } else {
                    // Fail closed: an unanswered privilege check is not a passed one.
                    BackendError::Internal(format!(
                        "connection `{name}`: checking the account's grants took longer than \
                         {waited} ms, so it cannot be shown to be unprivileged (set \
                         allow_privileged = true to skip this check)"
                    ))
                });
            }
        };
        if findings.is_empty() {
            Ok(())
        } else {
            Err(BackendError::Internal(format!(
                "connection `{name}`: the database account is privileged ({}). FILE reads and \
                 writes files on the server, SUPER and ALL PRIVILEGES bypass server limits; use \
                 a least-privileged account, or set allow_privileged = true on this connection \
                 to accept it",
                findings.join("; ")
            )))
        }
    }

    async fn query(
        &self,
        plan: QueryPlan,
        cancel: CancellationToken,
    ) -> Result<RowStream, BackendError> {
        let deadline = Instant::now() + plan.timeout;
        let mut conn = self.checkout(Some(&cancel)).await?;

        let flavor = match bounded(self.flavor(&mut conn), &cancel, deadline).await {
            Ok(flavor) => flavor?,
            Err(stop) => {
                // Interrupted mid-command: the connection's protocol state is unknown.
                discard(conn);
                return Err(stop);
            }
        };

        // Exactly one statement: the server's prepare refuses anything else. A prepare error
        // leaves the connection healthy; dropping it returns it to the pool, which resets it.
        let stmt = match bounded(conn.prep(plan.sql.as_str()), &cancel, deadline).await {
            Ok(Ok(stmt)) => stmt,
            Ok(Err(e)) => return Err(prepare_error(&self.shared.name, e)),
            Err(stop) => {
                discard(conn);
                return Err(stop);
            }
        };
        let expected = usize::from(stmt.num_params());
        if expected != plan.params.len() {
            return Err(BackendError::Params(format!(
                "the statement has {expected} `?` placeholder(s) but {} parameter(s) were given",
                plan.params.len()
            )));
        }
        let params = if plan.params.is_empty() {
            Params::Empty
        } else {
            Params::Positional(plan.params.iter().map(json_to_mysql).collect())
        };

        let remaining = deadline.saturating_duration_since(Instant::now());
        let job = Job {
            shared: Arc::clone(&self.shared),
            stmt,
            max_rows: plan.max_rows,
            max_affected_rows: plan.max_affected_rows,
            read_only: self.read_only,
            may_write: !self.read_only && !is_read_statement(&plan.sql),
            begin_sql: begin_sql(flavor, self.read_only, remaining),
        };
        let (tx, stream) = RowStream::channel();
        let (started_tx, started_rx) = oneshot::channel();
        let outlet = Outlet {
            stop: Stop {
                cancel,
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
                consumer: tx.clone(),
            },
            tx,
            started: Some(started_tx),
        };
        tokio::spawn(produce(job, conn, params, outlet));

        // The producer reports once the first row (or the end) is in the channel, so errors
        // found before the first row are returned here, not inside the stream. If this future
        // is dropped, `stream` goes with it and the producer sees the consumer gone.
        match started_rx.await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(BackendError::Internal(format!(
                "connection `{}`: the statement task ended without reporting",
                self.shared.name
            ))),
        }
    }

    async fn schema(&self) -> Result<Vec<TableInfo>, BackendError> {
        let mut conn = self.checkout(None).await?;
        let outcome =
            tokio::time::timeout(self.admin_timeout, conn.query::<Row, _>(SCHEMA_SQL)).await;
        match outcome {
            Ok(Ok(rows)) => Ok(tables_from_rows(&rows)),
            Ok(Err(e)) => Err(admin_error(&self.shared.name, "reading the schema", e)),
            Err(_) => {
                self.shared.kill_and_discard(conn).await;
                Err(BackendError::Timeout)
            }
        }
    }

    fn kind(&self) -> ConnectionKind {
        ConnectionKind::Mysql
    }
}

// ---------------------------------------------------------------------------------------------
// Connection setup
// ---------------------------------------------------------------------------------------------

/// Parses the configured URL into driver options, refusing anything Airlock decides itself.
fn parse_url(url: &str) -> Result<Opts, String> {
    let mut parsed = reqwest::Url::parse(url).map_err(|e| format!("url is not valid: {e}"))?;
    match parsed.scheme() {
        "mysql" => {}
        // The driver only knows `mysql://`; `mariadb://` is accepted by the configuration.
        "mariadb" => parsed
            .set_scheme("mysql")
            .map_err(|()| "url: cannot use the `mariadb` scheme".to_string())?,
        other => {
            return Err(format!(
                "url scheme must be mysql or mariadb, got `{other}`"
            ));
        }
    }
    if parsed.password().is_some() {
        return Err("the url carries a password; use `password = \"env:NAME\"` instead".into());
    }
    for (key, _) in parsed.query_pairs() {
        if !ALLOWED_URL_PARAMS.contains(&key.as_ref()) {
            return Err(format!(
                "url parameter `{key}` is not accepted (allowed: {}); TLS is set with `tls`, \
                 pool size with `limits.pool_size`, and connection resets are always on",
                ALLOWED_URL_PARAMS.join(", ")
            ));
        }
    }
    Opts::from_url(parsed.as_str()).map_err(|e| format!("url: {e}"))
}

/// TLS with only the configured CA as trust anchor; hostname verification stays on (the
/// driver's default: neither `skip_domain_validation` nor `accept_invalid_certs` is set).
fn ssl_opts(config: &ConnectionConfig) -> Result<SslOpts, String> {
    let reference = config
        .tls
        .ca
        .as_ref()
        .ok_or_else(|| "tls.mode = verify-full needs tls.ca".to_string())?;
    let pem = reference.resolve().map_err(|e| format!("tls.ca: {e}"))?;
    let bytes = pem.expose().as_bytes().to_vec();
    // Check now, so a wrong file is a startup error and not a failure of every connection
    // (the driver would take a non-PEM buffer for a single DER certificate).
    let mut reader = bytes.as_slice();
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.ca is not a valid PEM bundle: {e}"))?;
    if certs.is_empty() {
        return Err("tls.ca contains no PEM certificate".into());
    }
    Ok(SslOpts::default()
        .with_root_certs(vec![bytes.into()])
        .with_disable_built_in_roots(true))
}

/// The session setup, re-run by the driver after every connection reset. One text query
/// holding several statements (our own fixed text; the driver allows multi-statements), so it
/// costs one round trip. mysql_async runs its setup list last-to-first, so keeping everything
/// in a single entry also keeps the order.
///
/// For read-only connections the session default is READ ONLY as well: on MariaDB (verified)
/// a DDL statement implicitly commits and then runs outside `START TRANSACTION READ ONLY`,
/// while `SET SESSION TRANSACTION READ ONLY` makes the server refuse it (error 1792).
fn setup_sql(read_only: bool) -> String {
    let mut sql =
        format!("SET NAMES utf8mb4; SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00'");
    if read_only {
        sql.push_str("; SET SESSION TRANSACTION READ ONLY");
    }
    sql
}

/// Per request: the server-side statement time limit (backstop for our own deadline) and the
/// transaction, in one round trip. The reset on return to the pool restores the limit.
fn begin_sql(flavor: Flavor, read_only: bool, remaining: Duration) -> String {
    let limit = remaining + SERVER_LIMIT_MARGIN;
    let set_limit = match flavor {
        // Seconds, fractional; applies to every statement. Verified on MariaDB 10.11.
        Flavor::MariaDb => format!(
            "SET SESSION max_statement_time = {:.3}",
            limit.as_secs_f64()
        ),
        // Milliseconds; MySQL applies it to read-only SELECT only (not verified here).
        Flavor::MySql => format!(
            "SET SESSION max_execution_time = {}",
            limit.as_millis().min(u128::from(u32::MAX))
        ),
    };
    let start = if read_only {
        "START TRANSACTION READ ONLY"
    } else {
        "START TRANSACTION"
    };
    format!("{set_limit}; {start}")
}

/// Closes a connection without returning it to the pool and without draining it.
///
/// `Conn::disconnect` sets the connection's `disconnected` flag before its first await, and the
/// pool's recycler discards (never resets or reuses) a connection with that flag. It is polled
/// once: whatever it could not finish (draining a pending result, `COM_QUIT`) is abandoned and
/// the socket is closed when the connection is dropped, which the server sees as a client gone.
fn discard(conn: Conn) {
    let _ = conn.disconnect().now_or_never();
}

impl Shared {
    /// Stops whatever `conn` is running on the server, then closes it (see [`discard`]).
    ///
    /// The KILL goes first, while we still hold the connection open, so the id cannot have been
    /// handed to another session (ids are also never reused short of a 32-bit wrap).
    async fn kill_and_discard(&self, conn: Conn) {
        self.kill(conn.id()).await;
        discard(conn);
    }

    /// `KILL CONNECTION <id>` from the side pool: terminates the running statement, rolls back
    /// its transaction and ends the session. An account may always kill its own sessions.
    async fn kill(&self, id: u32) {
        let name = &self.name;
        let attempt = async {
            let mut side = self.side.get_conn().await?;
            side.query_drop(format!("KILL CONNECTION {id}")).await
        };
        match tokio::time::timeout(KILL_TIMEOUT, attempt).await {
            Ok(Ok(())) => tracing::debug!(connection = %name, thread_id = id, "killed session"),
            Ok(Err(mysql_async::Error::Server(e))) if e.code == ER_NO_SUCH_THREAD => {}
            Ok(Err(e)) => tracing::warn!(
                connection = %name,
                thread_id = id,
                error = %e,
                "could not kill the session; closing it and relying on the server's statement \
                 time limit"
            ),
            Err(_) => tracing::warn!(
                connection = %name,
                thread_id = id,
                "timed out killing the session; closing it and relying on the server's \
                 statement time limit"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Statement execution (producer task)
// ---------------------------------------------------------------------------------------------

/// Everything the producer needs besides the connection, parameters and outlet.
struct Job {
    shared: Arc<Shared>,
    stmt: Statement,
    max_rows: u64,
    /// A reviewer's limit: a write affecting more rows never commits.
    max_affected_rows: Option<u64>,
    read_only: bool,
    /// A statement that may write on a read-write connection (anything but a recognised read,
    /// e.g. MariaDB `DELETE ... RETURNING`). When it returns more rows than the cap, the extra
    /// rows are read and thrown away so the statement completes and commits, as PostgreSQL and
    /// SQLite complete such a statement before the first row; cancelling it instead would roll
    /// the write back while the response said it succeeded (truncated). Its returned rows are
    /// what `max_affected_rows` counts.
    may_write: bool,
    begin_sql: String,
}

/// How a successful run leaves the connection.
enum Finish {
    /// Transaction ended; the connection goes back to the pool (which resets it).
    Clean,
    /// Stopped early on purpose (row cap): kill and close.
    Kill,
}

/// What to do with the connection after a failure.
enum Cleanup {
    /// The statement may still be running: kill the session, then close.
    Kill,
    /// The statement is over (the server reported an error): close.
    Close,
    /// We rolled the transaction back ourselves; the connection is clean for the pool.
    Release,
}

struct Failure {
    error: BackendError,
    cleanup: Cleanup,
}

impl Failure {
    fn kill(error: BackendError) -> Self {
        Failure {
            error,
            cleanup: Cleanup::Kill,
        }
    }
}

/// The producer task: owns the connection until the end, then returns it to the pool only if
/// the statement ran to completion and its transaction ended.
async fn produce(job: Job, mut conn: Conn, params: Params, mut out: Outlet) {
    let outcome = drive(&mut conn, &job, params, &mut out).await;
    match outcome {
        Ok(Finish::Clean) => drop(conn),
        Ok(Finish::Kill) => job.shared.kill_and_discard(conn).await,
        Err(failure) => {
            // Clean up first: when the client sees the error, the statement is already dead.
            match failure.cleanup {
                Cleanup::Kill => job.shared.kill_and_discard(conn).await,
                Cleanup::Close => discard(conn),
                Cleanup::Release => drop(conn),
            }
            out.fail(failure.error).await;
        }
    }
}

async fn drive(
    conn: &mut Conn,
    job: &Job,
    params: Params,
    out: &mut Outlet,
) -> Result<Finish, Failure> {
    let name = job.shared.name.as_str();
    out.stop
        .guard(conn.query_drop(job.begin_sql.as_str()))
        .await?
        .map_err(|e| exec_failure(name, e))?;

    let mut result = out
        .stop
        .guard(conn.exec_iter(&job.stmt, params))
        .await?
        .map_err(|e| exec_failure(name, e))?;
    let columns = result.columns().unwrap_or_default();
    let meta = columns
        .iter()
        .map(|c| Column {
            name: c.name_str().into_owned(),
            type_name: type_name(c),
        })
        .collect();
    out.send(RowEvent::Columns(meta)).await?;

    // Rows read from the server (sent, the extra one, drained); for a statement that may
    // write, the rows its reviewer's limit counts.
    let mut fetched: u64 = 0;
    let over_limit = |fetched: u64| {
        job.max_affected_rows
            .filter(|max| job.may_write && fetched > *max)
            .map(|max| {
                // Stop it where it is: killing the session rolls the write back.
                Failure::kill(BackendError::AffectedRowsExceeded {
                    affected: fetched,
                    max,
                })
            })
    };
    let mut truncated = false;
    if !columns.is_empty() {
        // At most `max_rows + 1` rows are read; the extra one only proves truncation.
        while let Some(row) = out
            .stop
            .guard(result.next())
            .await?
            .map_err(|e| exec_failure(name, e))?
        {
            fetched += 1;
            if let Some(failure) = over_limit(fetched) {
                return Err(failure);
            }
            if fetched > job.max_rows {
                truncated = true;
                break;
            }
            let values = row_to_json(row).map_err(Failure::kill)?;
            out.send(RowEvent::Row(values)).await?;
            out.start();
        }
    }

    if truncated {
        if !job.may_write {
            // Nothing to commit (read-only connection, or a statement that does not write):
            // answer now, then kill the rest of the result set instead of reading it.
            out.send(RowEvent::End {
                truncated: true,
                affected_rows: None,
            })
            .await?;
            out.start();
            return Ok(Finish::Kill);
        }
        while out
            .stop
            .guard(result.next())
            .await?
            .map_err(|e| exec_failure(name, e))?
            .is_some()
        {
            fetched += 1;
            if let Some(failure) = over_limit(fetched) {
                return Err(failure);
            }
        }
    }

    // Further result sets only come from `CALL`: its final status set has no columns; a second
    // set with rows cannot be represented in one response.
    while !result.is_empty() {
        let more_rows = !result.columns_ref().is_empty()
            || out
                .stop
                .guard(result.next())
                .await?
                .map_err(|e| exec_failure(name, e))?
                .is_some();
        if more_rows {
            return Err(Failure::kill(BackendError::Internal(format!(
                "connection `{name}`: the statement returned more than one result set, which \
                 is not supported"
            ))));
        }
    }
    let affected_rows = columns.is_empty().then(|| result.affected_rows());
    drop(result);

    // A reviewer's limit on a write without result set: the server's count decides, and an
    // excess is rolled back before anything is committed.
    if let (Some(max), Some(affected)) = (job.max_affected_rows, affected_rows)
        && affected > max
        && !job.read_only
    {
        out.stop
            .guard(conn.query_drop("ROLLBACK"))
            .await?
            .map_err(|e| exec_failure(name, e))?;
        return Err(Failure {
            error: BackendError::AffectedRowsExceeded { affected, max },
            cleanup: Cleanup::Release,
        });
    }

    let end = if job.read_only { "ROLLBACK" } else { "COMMIT" };
    out.stop
        .guard(conn.query_drop(end))
        .await?
        .map_err(|e| exec_failure(name, e))?;
    out.send(RowEvent::End {
        truncated,
        affected_rows,
    })
    .await?;
    out.start();
    Ok(Finish::Clean)
}

/// The producer's side of the stream plus the "started" signal `query` waits for.
struct Outlet {
    tx: RowSender,
    /// Taken once the first row or the end is in the channel; until then a failure is reported
    /// through it, so `query` can return it directly.
    started: Option<oneshot::Sender<Result<(), BackendError>>>,
    stop: Stop,
}

impl Outlet {
    /// Sends one event, giving up (with a kill) when the consumer is gone or a stop fires.
    async fn send(&mut self, event: RowEvent) -> Result<(), Failure> {
        if self.stop.guard(self.tx.send(Ok(event))).await? {
            Ok(())
        } else {
            Err(Failure::kill(BackendError::Cancelled))
        }
    }

    /// The stream is worth returning: the first row or the end has been queued.
    fn start(&mut self) {
        if let Some(started) = self.started.take() {
            let _ = started.send(Ok(()));
        }
    }

    /// Reports the final error: directly to `query` if it is still waiting, else as the last
    /// stream event (bounded, since the consumer may not be reading).
    async fn fail(mut self, error: BackendError) {
        if let Some(started) = self.started.take() {
            let _ = started.send(Err(error));
        } else if !self.tx.is_closed() {
            let _ = tokio::time::timeout(TERMINAL_SEND_GRACE, self.tx.send(Err(error))).await;
        }
    }
}

/// The three reasons to stop a statement that is still working.
struct Stop {
    cancel: CancellationToken,
    /// One timer for the whole request (not one per row).
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// A clone of the sender, only to notice the receiver being dropped.
    consumer: RowSender,
}

impl Stop {
    /// Awaits `fut` unless the request is cancelled, its deadline passes or the consumer goes
    /// away first. Stops win ties, so a fast stream of ready rows cannot starve them.
    async fn guard<F: Future>(&mut self, fut: F) -> Result<F::Output, Failure> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(Failure::kill(BackendError::Cancelled)),
            () = self.deadline.as_mut() => Err(Failure::kill(BackendError::Timeout)),
            () = self.consumer.closed() => Err(Failure::kill(BackendError::Cancelled)),
            output = fut => Ok(output),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn database_error(e: mysql_async::ServerError) -> BackendError {
    if e.code == ER_STATEMENT_TIMEOUT || e.code == ER_QUERY_TIMEOUT {
        return BackendError::Timeout;
    }
    BackendError::Database(DatabaseError {
        sqlstate: e.state,
        message: e.message,
        code: Some(u32::from(e.code)),
        ..DatabaseError::default()
    })
}

/// Errors of `prepare`: nothing has run yet.
fn prepare_error(name: &str, e: mysql_async::Error) -> BackendError {
    match e {
        mysql_async::Error::Server(e) => database_error(e),
        mysql_async::Error::Driver(DriverError::MixedParams | DriverError::Params(_)) => {
            BackendError::Params(
                "use `?` placeholders; `:name` placeholders are not supported".into(),
            )
        }
        mysql_async::Error::Io(e) => BackendError::Unavailable {
            detail: format!("connection `{name}` failed while preparing: {e}"),
            retry_after_secs: 1,
        },
        other => BackendError::Internal(format!("connection `{name}`: preparing failed: {other}")),
    }
}

/// Errors while the statement runs or streams.
fn exec_failure(name: &str, e: mysql_async::Error) -> Failure {
    match e {
        // The server ended the statement itself; the session is intact but is closed anyway
        // (a failed request never hands its connection to the next one).
        mysql_async::Error::Server(e) => Failure {
            error: database_error(e),
            cleanup: Cleanup::Close,
        },
        // Only reachable when the driver rewrote `:name` tokens (see the module comment).
        mysql_async::Error::Driver(DriverError::MixedParams | DriverError::Params(_)) => {
            Failure::kill(BackendError::Params(
                "use `?` placeholders; `:name` placeholders are not supported".into(),
            ))
        }
        // The server asked for a client-side file (`LOAD DATA LOCAL INFILE`) and the driver,
        // having no handler, refused without reading anything and closed the connection.
        mysql_async::Error::Driver(DriverError::LocalInfile(_)) => {
            Failure::kill(BackendError::Database(DatabaseError {
                // SQLSTATE "feature not supported"; the message says who refused.
                sqlstate: "0A000".into(),
                message: "LOAD DATA LOCAL INFILE is not supported: Airlock never sends files \
                          from its host to the database"
                    .into(),
                ..DatabaseError::default()
            }))
        }
        // Protocol or I/O trouble: the statement may still run; a kill of a dead session is
        // harmless (`ER_NO_SUCH_THREAD`).
        other => Failure::kill(BackendError::Internal(format!(
            "connection `{name}` failed during the statement: {other}"
        ))),
    }
}

/// Errors of our own catalog queries.
fn admin_error(name: &str, what: &str, e: mysql_async::Error) -> BackendError {
    match e {
        mysql_async::Error::Server(e) => database_error(e),
        mysql_async::Error::Io(e) => BackendError::Unavailable {
            detail: format!("connection `{name}` failed while {what}: {e}"),
            retry_after_secs: 1,
        },
        other => BackendError::Internal(format!("connection `{name}`: {what} failed: {other}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Statement classification
// ---------------------------------------------------------------------------------------------

/// True when the statement surely does not write: its first keyword (after whitespace, plain
/// comments and opening parentheses) starts a read. Anything unrecognised counts as a possible
/// write, which only costs reading a truncated result to its end (see `Job::may_write`).
/// `WITH` may precede `UPDATE`/`DELETE` in MySQL 8, but those return no rows, so they are
/// never truncated.
fn is_read_statement(sql: &str) -> bool {
    matches!(
        leading_keyword(sql).as_deref(),
        Some("SELECT" | "WITH" | "SHOW" | "DESCRIBE" | "DESC" | "EXPLAIN" | "VALUES" | "TABLE")
    )
}

fn leading_keyword(sql: &str) -> Option<String> {
    let bytes = sql.as_bytes();
    let mut i = 0;
    loop {
        while bytes
            .get(i)
            .is_some_and(|b| b.is_ascii_whitespace() || *b == b'(')
        {
            i += 1;
        }
        let rest = bytes.get(i..)?;
        if rest.starts_with(b"/*") {
            // Executable comments (`/*!`, MariaDB `/*M!`) and hints are part of the statement.
            if rest.starts_with(b"/*!") || rest.starts_with(b"/*M!") || rest.starts_with(b"/*+") {
                return None;
            }
            let end = rest.windows(2).skip(2).position(|w| w == b"*/")?;
            i += end + 4;
        } else if rest.starts_with(b"--")
            && rest
                .get(2)
                .is_none_or(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            i += rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        } else if rest.starts_with(b"#") {
            i += rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        } else {
            let word: String = rest
                .iter()
                .take_while(|b| b.is_ascii_alphabetic())
                .map(|b| char::from(b.to_ascii_uppercase()))
                .collect();
            return (!word.is_empty()).then_some(word);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

/// A JSON request parameter as a MySQL value (bound through the binary protocol, so it is never
/// part of the statement text).
fn json_to_mysql(value: &Json) -> Value {
    match value {
        Json::Null => Value::NULL,
        Json::Bool(b) => Value::Int(i64::from(*b)),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                match n.as_f64() {
                    Some(f) => Value::Double(f),
                    None => Value::Bytes(n.to_string().into_bytes()),
                }
            }
        }
        Json::String(s) => Value::Bytes(s.as_bytes().to_vec()),
        // Arrays and objects travel as JSON text (what JSON columns and functions accept).
        Json::Array(_) | Json::Object(_) => Value::Bytes(value.to_string().into_bytes()),
    }
}

fn row_to_json(row: Row) -> Result<Vec<Json>, BackendError> {
    let columns = row.columns();
    let values = row.unwrap_raw();
    if values.len() != columns.len() {
        return Err(BackendError::Internal(format!(
            "row has {} values for {} columns",
            values.len(),
            columns.len()
        )));
    }
    values
        .into_iter()
        .zip(columns.iter())
        .map(|(value, column)| match value {
            Some(value) => Ok(value_to_json(value, column)),
            // Values are only missing after `Row::take`, which is never called here.
            None => Err(BackendError::Internal(format!(
                "value of column `{}` is missing",
                column.name_str()
            ))),
        })
        .collect()
}

/// The JSON form of one value:
///
/// - integers of 32 bits or fewer (TINYINT..INT, MEDIUMINT, YEAR): numbers; BIGINT (signed or
///   unsigned) and any other integer: decimal strings, because JSON readers lose precision
///   above 2^53;
/// - FLOAT/DOUBLE: numbers (FLOAT via its shortest decimal form, so 0.1 stays 0.1); NaN and
///   infinities: the strings `NaN`, `Infinity`, `-Infinity`;
/// - DECIMAL: the exact decimal string;
/// - DATE: `YYYY-MM-DD`; DATETIME and TIMESTAMP: `YYYY-MM-DD HH:MM:SS[.ffffff]` (space, no zone;
///   TIMESTAMP is UTC because sessions use `time_zone = '+00:00'`); TIME: `[-]HH:MM:SS[.ffffff]`
///   with days folded into the hours (`838:59:59`). Fractions show the column's declared
///   digits, or all six when the value needs them;
/// - JSON (MySQL's JSON type): the parsed document, or its text if it does not parse. MariaDB
///   sends JSON columns as LONGTEXT, so they arrive as strings;
/// - text (character set not `binary`), ENUM, SET: strings. Text that is not valid UTF-8 (the
///   session asks for utf8mb4, so only mislabelled data) becomes `{"base64": "..."}`: never
///   a lossy string, and never mistaken for a real string value;
/// - binary strings and BLOBs (character set `binary`), BIT, VECTOR: base64 strings;
/// - GEOMETRY: base64 of the WKB, without MySQL's 4-byte SRID prefix (use `ST_SRID()`);
/// - anything else: its text form (the same rule as text).
fn value_to_json(value: Value, column: &mysql_async::Column) -> Json {
    match value {
        Value::NULL => Json::Null,
        Value::Int(i) if is_small_integer(column.column_type()) => Json::from(i),
        Value::Int(i) => Json::String(i.to_string()),
        Value::UInt(u) if is_small_integer(column.column_type()) => Json::from(u),
        Value::UInt(u) => Json::String(u.to_string()),
        Value::Float(f) => float_json(shortest_f32(f)),
        Value::Double(d) => float_json(d),
        Value::Date(year, month, day, hour, minute, second, micros) => {
            let date_only = matches!(
                column.column_type(),
                ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE
            ) && (hour, minute, second, micros) == (0, 0, 0, 0);
            if date_only {
                Json::String(format!("{year:04}-{month:02}-{day:02}"))
            } else {
                Json::String(format!(
                    "{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}{}",
                    fraction(micros, column.decimals())
                ))
            }
        }
        Value::Time(negative, days, hours, minutes, seconds, micros) => {
            let hours = u64::from(days) * 24 + u64::from(hours);
            Json::String(format!(
                "{}{hours:02}:{minutes:02}:{seconds:02}{}",
                if negative { "-" } else { "" },
                fraction(micros, column.decimals())
            ))
        }
        Value::Bytes(bytes) => bytes_to_json(bytes, column),
    }
}

fn bytes_to_json(bytes: Vec<u8>, column: &mysql_async::Column) -> Json {
    let binary_charset = column.character_set() == BINARY_CHARSET
        && !column
            .flags()
            .intersects(ColumnFlags::ENUM_FLAG | ColumnFlags::SET_FLAG);
    match column.column_type() {
        // MySQL 8 reports JSON columns with the binary character set; they are text.
        ColumnType::MYSQL_TYPE_JSON => match serde_json::from_slice::<Json>(&bytes) {
            Ok(document) => document,
            Err(_) => text_json(bytes),
        },
        ColumnType::MYSQL_TYPE_GEOMETRY => {
            let wkb = bytes.get(4..).filter(|_| bytes.len() > 4).unwrap_or(&bytes);
            Json::String(base64_encode(wkb))
        }
        ColumnType::MYSQL_TYPE_BIT | ColumnType::MYSQL_TYPE_VECTOR => {
            Json::String(base64_encode(&bytes))
        }
        ColumnType::MYSQL_TYPE_STRING
        | ColumnType::MYSQL_TYPE_VAR_STRING
        | ColumnType::MYSQL_TYPE_VARCHAR
        | ColumnType::MYSQL_TYPE_TINY_BLOB
        | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
        | ColumnType::MYSQL_TYPE_LONG_BLOB
        | ColumnType::MYSQL_TYPE_BLOB
            if binary_charset =>
        {
            Json::String(base64_encode(&bytes))
        }
        _ => text_json(bytes),
    }
}

/// Text as a JSON string, or `{"base64": ...}` when it is not valid UTF-8.
fn text_json(bytes: Vec<u8>) -> Json {
    match String::from_utf8(bytes) {
        Ok(text) => Json::String(text),
        Err(e) => serde_json::json!({ "base64": base64_encode(e.as_bytes()) }),
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn is_small_integer(column_type: ColumnType) -> bool {
    matches!(
        column_type,
        ColumnType::MYSQL_TYPE_TINY
            | ColumnType::MYSQL_TYPE_SHORT
            | ColumnType::MYSQL_TYPE_INT24
            | ColumnType::MYSQL_TYPE_LONG
            | ColumnType::MYSQL_TYPE_YEAR
    )
}

/// An f32 widened through its shortest decimal form, so `0.1f32` becomes `0.1` and not
/// `0.10000000149011612`.
fn shortest_f32(f: f32) -> f64 {
    f.to_string().parse::<f64>().unwrap_or(f64::from(f))
}

fn float_json(d: f64) -> Json {
    match serde_json::Number::from_f64(d) {
        Some(n) => Json::Number(n),
        None if d.is_nan() => Json::String("NaN".into()),
        None if d > 0.0 => Json::String("Infinity".into()),
        None => Json::String("-Infinity".into()),
    }
}

/// `.ffffff` for a temporal value: the column's declared fractional digits (1..=6), or all six
/// whenever fewer would drop a non-zero digit (also for columns declared without fraction or
/// with an undetermined scale, e.g. 31 for expressions).
fn fraction(micros: u32, decimals: u8) -> String {
    let declared = match decimals {
        1..=6 => usize::from(decimals),
        _ => 0,
    };
    let digits = format!("{micros:06}");
    let needed = digits.trim_end_matches('0').len();
    let shown = if micros == 0 {
        declared
    } else if needed > declared {
        digits.len()
    } else {
        declared
    };
    match shown {
        0 => String::new(),
        n => format!(".{}", digits.get(..n).unwrap_or(&digits)),
    }
}

/// The type name reported for a result column: MySQL's own names, ` unsigned` where it
/// applies. Binary and text variants of the string types share wire types and are told apart
/// by the character set.
fn type_name(column: &mysql_async::Column) -> String {
    let binary = column.character_set() == BINARY_CHARSET;
    let flags = column.flags();
    let unsigned = flags.contains(ColumnFlags::UNSIGNED_FLAG);
    let pick = |b: &'static str, t: &'static str| if binary { b } else { t };
    let base = match column.column_type() {
        ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL => "decimal",
        ColumnType::MYSQL_TYPE_TINY => "tinyint",
        ColumnType::MYSQL_TYPE_SHORT => "smallint",
        ColumnType::MYSQL_TYPE_INT24 => "mediumint",
        ColumnType::MYSQL_TYPE_LONG => "int",
        ColumnType::MYSQL_TYPE_LONGLONG => "bigint",
        ColumnType::MYSQL_TYPE_FLOAT => "float",
        ColumnType::MYSQL_TYPE_DOUBLE => "double",
        ColumnType::MYSQL_TYPE_NULL => "null",
        ColumnType::MYSQL_TYPE_TIMESTAMP | ColumnType::MYSQL_TYPE_TIMESTAMP2 => "timestamp",
        ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE => "date",
        ColumnType::MYSQL_TYPE_TIME | ColumnType::MYSQL_TYPE_TIME2 => "time",
        ColumnType::MYSQL_TYPE_DATETIME | ColumnType::MYSQL_TYPE_DATETIME2 => "datetime",
        ColumnType::MYSQL_TYPE_YEAR => "year",
        ColumnType::MYSQL_TYPE_BIT => "bit",
        ColumnType::MYSQL_TYPE_JSON => "json",
        ColumnType::MYSQL_TYPE_ENUM => "enum",
        ColumnType::MYSQL_TYPE_SET => "set",
        ColumnType::MYSQL_TYPE_GEOMETRY => "geometry",
        ColumnType::MYSQL_TYPE_VECTOR => "vector",
        ColumnType::MYSQL_TYPE_STRING if flags.contains(ColumnFlags::ENUM_FLAG) => "enum",
        ColumnType::MYSQL_TYPE_STRING if flags.contains(ColumnFlags::SET_FLAG) => "set",
        ColumnType::MYSQL_TYPE_STRING => pick("binary", "char"),
        ColumnType::MYSQL_TYPE_VAR_STRING | ColumnType::MYSQL_TYPE_VARCHAR => {
            pick("varbinary", "varchar")
        }
        ColumnType::MYSQL_TYPE_TINY_BLOB => pick("tinyblob", "tinytext"),
        ColumnType::MYSQL_TYPE_MEDIUM_BLOB => pick("mediumblob", "mediumtext"),
        ColumnType::MYSQL_TYPE_LONG_BLOB => pick("longblob", "longtext"),
        ColumnType::MYSQL_TYPE_BLOB => pick("blob", "text"),
        ColumnType::MYSQL_TYPE_TYPED_ARRAY | ColumnType::MYSQL_TYPE_UNKNOWN => "unknown",
    };
    let numeric = matches!(
        column.column_type(),
        ColumnType::MYSQL_TYPE_TINY
            | ColumnType::MYSQL_TYPE_SHORT
            | ColumnType::MYSQL_TYPE_INT24
            | ColumnType::MYSQL_TYPE_LONG
            | ColumnType::MYSQL_TYPE_LONGLONG
            | ColumnType::MYSQL_TYPE_DECIMAL
            | ColumnType::MYSQL_TYPE_NEWDECIMAL
            | ColumnType::MYSQL_TYPE_FLOAT
            | ColumnType::MYSQL_TYPE_DOUBLE
    );
    if unsigned && numeric {
        format!("{base} unsigned")
    } else {
        base.to_string()
    }
}

/// A text column of our own catalog queries (text protocol: every value arrives as bytes).
fn text_value(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Bytes(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------

/// Tables, views and their columns in the current database; with no database selected, in all
/// non-system schemas.
const SCHEMA_SQL: &str = "\
SELECT t.TABLE_SCHEMA, t.TABLE_NAME, t.TABLE_TYPE, c.COLUMN_NAME, c.COLUMN_TYPE, c.IS_NULLABLE \
FROM information_schema.TABLES AS t \
LEFT JOIN information_schema.COLUMNS AS c \
  ON c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME \
WHERE t.TABLE_SCHEMA = DATABASE() \
   OR (DATABASE() IS NULL AND t.TABLE_SCHEMA NOT IN \
       ('mysql', 'information_schema', 'performance_schema', 'sys')) \
ORDER BY t.TABLE_SCHEMA, t.TABLE_NAME, c.ORDINAL_POSITION";

/// Groups the ordered `SCHEMA_SQL` rows into tables.
fn tables_from_rows(rows: &[Row]) -> Vec<TableInfo> {
    let mut tables: Vec<TableInfo> = Vec::new();
    for row in rows {
        let schema = text_value(row.as_ref(0));
        let Some(table) = text_value(row.as_ref(1)) else {
            continue;
        };
        let table_type = text_value(row.as_ref(2)).unwrap_or_default();
        let same = tables
            .last()
            .is_some_and(|t| t.name == table && t.schema == schema);
        if !same {
            tables.push(TableInfo {
                schema,
                name: table,
                // 'VIEW' and 'SYSTEM VIEW' are views; base tables, MariaDB's 'SYSTEM VERSIONED'
                // and 'SEQUENCE' are queried like tables.
                kind: if table_type.to_ascii_uppercase().contains("VIEW") {
                    "view".into()
                } else {
                    "table".into()
                },
                columns: Vec::new(),
            });
        }
        // A table without visible columns has one row with NULL column fields (LEFT JOIN).
        if let (Some(column), Some(entry)) = (text_value(row.as_ref(3)), tables.last_mut()) {
            entry.columns.push(ColumnInfo {
                name: column,
                type_name: text_value(row.as_ref(4)).unwrap_or_default(),
                nullable: text_value(row.as_ref(5)).is_some_and(|n| n.eq_ignore_ascii_case("YES")),
            });
        }
    }
    tables
}

// ---------------------------------------------------------------------------------------------
// Privilege check
// ---------------------------------------------------------------------------------------------

/// The account's dangerous privileges (FILE, SUPER, ALL PRIVILEGES on `*.*`), including those
/// of every role granted to it, active or not (the agent could `SET ROLE`).
///
/// MariaDB (verified): `SHOW GRANTS FOR CURRENT_USER()` lists role grants as
/// ``GRANT `r` TO `u`@`h` `` but not the roles' privileges; `SHOW GRANTS FOR r` is allowed for a
/// role granted to the account and also lists the grants of the roles granted to `r`.
/// MySQL 8 (not verified here): `SHOW GRANTS FOR` another account or role needs SELECT on
/// `mysql`, so the roles are expanded with `SHOW GRANTS FOR CURRENT_USER() USING r1, r2`,
/// which reports the privileges the account would have with those roles active.
/// A grant list that cannot be read refuses the account: the check fails closed.
async fn privileged_grants(
    conn: &mut Conn,
    flavor: Flavor,
    name: &str,
) -> Result<Vec<String>, BackendError> {
    let refuse = |what: &str, e: mysql_async::Error| {
        BackendError::Internal(format!(
            "connection `{name}`: cannot read {what} ({e}), so the account cannot be shown to be \
             unprivileged; grant it access to its own grants or set allow_privileged = true"
        ))
    };
    let mut lines = show_grants(conn, "SHOW GRANTS FOR CURRENT_USER()")
        .await
        .map_err(|e| refuse("the account's grants", e))?;
    let mut inspected: HashSet<Account> = HashSet::new();
    loop {
        let grants: Vec<Grant> = lines.iter().filter_map(|l| parse_grant(l)).collect();
        let described: HashSet<&Account> = grants.iter().filter_map(Grant::grantee).collect();
        let mut pending: Vec<Account> = Vec::new();
        for role in grants.iter().flat_map(Grant::roles) {
            if !described.contains(role) && !inspected.contains(role) && !pending.contains(role) {
                pending.push(role.clone());
            }
        }
        if pending.is_empty() {
            break;
        }
        if inspected.len() + pending.len() > MAX_ROLES {
            return Err(BackendError::Internal(format!(
                "connection `{name}`: the account has more than {MAX_ROLES} roles; cannot check \
                 them (set allow_privileged = true to skip this check)"
            )));
        }
        inspected.extend(pending.iter().cloned());
        match flavor {
            Flavor::MariaDb => {
                for role in &pending {
                    let sql = format!("SHOW GRANTS FOR {}", role.quoted());
                    let more = show_grants(conn, &sql)
                        .await
                        .map_err(|e| refuse(&format!("the grants of role {}", role.quoted()), e))?;
                    lines.extend(more);
                }
            }
            Flavor::MySql => {
                let roles: Vec<String> = pending.iter().map(Account::quoted).collect();
                let sql = format!("SHOW GRANTS FOR CURRENT_USER() USING {}", roles.join(", "));
                let more = show_grants(conn, &sql)
                    .await
                    .map_err(|e| refuse("the grants of the account's roles", e))?;
                lines.extend(more);
                // USING already expands roles granted to those roles; its lines name the
                // account, so asking again could only repeat them.
                break;
            }
        }
    }
    let mut findings = Vec::new();
    for grant in lines.iter().filter_map(|l| parse_grant(l)) {
        if let Grant::Privileges {
            privileges,
            object,
            grantee,
        } = &grant
        {
            for privilege in dangerous_privileges(privileges, object) {
                let to = grantee
                    .as_ref()
                    .map(Account::quoted)
                    .unwrap_or_else(|| "?".into());
                let finding = format!("{privilege} ON {object} granted to {to}");
                if !findings.contains(&finding) {
                    findings.push(finding);
                }
            }
        }
    }
    Ok(findings)
}

async fn show_grants(conn: &mut Conn, sql: &str) -> Result<Vec<String>, mysql_async::Error> {
    let rows: Vec<Row> = conn.query(sql).await?;
    Ok(rows
        .iter()
        .filter_map(|row| text_value(row.as_ref(0)))
        .collect())
}

/// `FILE` and `SUPER` exist only globally; `ALL [PRIVILEGES]` matters on `*.*`.
fn dangerous_privileges<'a>(privileges: &'a [String], object: &str) -> Vec<&'a str> {
    let global = object == "*.*";
    privileges
        .iter()
        .map(String::as_str)
        .filter(|p| {
            matches!(*p, "FILE" | "SUPER") || (global && matches!(*p, "ALL" | "ALL PRIVILEGES"))
        })
        .collect()
}

/// A user or role as SHOW GRANTS prints it: `name`, or `name`@`host`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Account {
    name: String,
    host: Option<String>,
}

impl Account {
    /// Backquoted again for a statement of ours (a backquote inside is doubled).
    fn quoted(&self) -> String {
        let quote = |s: &str| format!("`{}`", s.replace('`', "``"));
        match &self.host {
            Some(host) => format!("{}@{}", quote(&self.name), quote(host)),
            None => quote(&self.name),
        }
    }
}

#[derive(Debug, PartialEq)]
enum Grant {
    /// `GRANT <privileges> ON <object> TO <grantee>`
    Privileges {
        privileges: Vec<String>,
        object: String,
        grantee: Option<Account>,
    },
    /// `GRANT <roles> TO <grantee>`
    Roles {
        roles: Vec<Account>,
        grantee: Option<Account>,
    },
}

impl Grant {
    fn grantee(&self) -> Option<&Account> {
        match self {
            Grant::Privileges { grantee, .. } | Grant::Roles { grantee, .. } => grantee.as_ref(),
        }
    }

    fn roles(&self) -> &[Account] {
        match self {
            Grant::Roles { roles, .. } => roles,
            Grant::Privileges { .. } => &[],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Punct(char),
}

const GRANT_PUNCT: &str = ",()@.*;=";

/// Splits a SHOW GRANTS line into words, quoted names (`` ` ``, `'`, `"`; doubled quotes and
/// backslash escapes undone) and punctuation.
fn lex_grant(line: &str) -> Vec<Tok> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '`' | '\'' | '"' => {
                let mut text = String::new();
                while let Some(ch) = chars.next() {
                    if ch == c {
                        if chars.peek() == Some(&c) {
                            chars.next();
                            text.push(c);
                        } else {
                            break;
                        }
                    } else if ch == '\\' && c != '`' {
                        if let Some(escaped) = chars.next() {
                            text.push(escaped);
                        }
                    } else {
                        text.push(ch);
                    }
                }
                tokens.push(Tok::Quoted(text));
            }
            c if GRANT_PUNCT.contains(c) => tokens.push(Tok::Punct(c)),
            c => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if next.is_whitespace() || GRANT_PUNCT.contains(next) || "`'\"".contains(next) {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                tokens.push(Tok::Word(word));
            }
        }
    }
    tokens
}

fn is_keyword(token: &Tok, keyword: &str) -> bool {
    matches!(token, Tok::Word(w) if w.eq_ignore_ascii_case(keyword))
}

/// Parses one SHOW GRANTS line; lines that are not grants (`SET DEFAULT ROLE`, MySQL partial
/// `REVOKE`s) give `None`.
fn parse_grant(line: &str) -> Option<Grant> {
    let tokens = lex_grant(line);
    if !is_keyword(tokens.first()?, "GRANT") {
        return None;
    }
    let mut depth = 0usize;
    let mut on = None;
    let mut to = None;
    for (i, token) in tokens.iter().enumerate().skip(1) {
        match token {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            t if depth == 0 && on.is_none() && is_keyword(t, "ON") => on = Some(i),
            t if depth == 0 && is_keyword(t, "TO") => {
                to = Some(i);
                break;
            }
            _ => {}
        }
    }
    let to = to?;
    let grantee = tokens.get(to + 1..).and_then(parse_account);
    match on {
        Some(on) => {
            let privileges = split_top_level(tokens.get(1..on)?)
                .into_iter()
                .map(privilege_name)
                .filter(|p| !p.is_empty())
                .collect();
            let object = tokens.get(on + 1..to)?.iter().map(render).collect();
            Some(Grant::Privileges {
                privileges,
                object,
                grantee,
            })
        }
        None => {
            let roles = split_top_level(tokens.get(1..to)?)
                .into_iter()
                .filter_map(parse_account)
                .collect();
            Some(Grant::Roles { roles, grantee })
        }
    }
}

/// Splits at commas outside parentheses.
fn split_top_level(tokens: &[Tok]) -> Vec<&[Tok]> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            Tok::Punct(',') if depth == 0 => {
                parts.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&tokens[start..]);
    parts
}

/// `SELECT (a, b)` → `SELECT`; `ALL PRIVILEGES` → `ALL PRIVILEGES`; upper case.
fn privilege_name(tokens: &[Tok]) -> String {
    let mut depth = 0usize;
    let mut words = Vec::new();
    for token in tokens {
        match token {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            Tok::Word(w) if depth == 0 => words.push(w.to_ascii_uppercase()),
            _ => {}
        }
    }
    words.join(" ")
}

/// `name` or `name`@`host` at the start of `tokens`.
fn parse_account(tokens: &[Tok]) -> Option<Account> {
    let name = match tokens.first()? {
        Tok::Quoted(s) | Tok::Word(s) => s.clone(),
        Tok::Punct(_) => return None,
    };
    let host = match (tokens.get(1), tokens.get(2)) {
        (Some(Tok::Punct('@')), Some(Tok::Quoted(h) | Tok::Word(h))) => Some(h.clone()),
        _ => None,
    };
    Some(Account { name, host })
}

fn render(token: &Tok) -> String {
    match token {
        Tok::Word(w) => w.clone(),
        Tok::Quoted(q) => format!("`{q}`"),
        Tok::Punct(c) => c.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UTF8MB4: u16 = 45;

    fn col(column_type: ColumnType) -> mysql_async::Column {
        mysql_async::Column::new(column_type).with_character_set(BINARY_CHARSET)
    }

    fn text_col(column_type: ColumnType) -> mysql_async::Column {
        mysql_async::Column::new(column_type).with_character_set(UTF8MB4)
    }

    fn json_of(value: Value, column: &mysql_async::Column) -> Json {
        value_to_json(value, column)
    }

    #[test]
    fn small_integers_are_numbers_bigints_are_strings() {
        use ColumnType::*;
        for t in [
            MYSQL_TYPE_TINY,
            MYSQL_TYPE_SHORT,
            MYSQL_TYPE_INT24,
            MYSQL_TYPE_LONG,
            MYSQL_TYPE_YEAR,
        ] {
            assert_eq!(json_of(Value::Int(-7), &col(t)), json!(-7), "{t:?}");
            assert_eq!(
                json_of(Value::UInt(4_294_967_295), &col(t)),
                json!(4_294_967_295u64)
            );
        }
        let bigint = col(MYSQL_TYPE_LONGLONG);
        assert_eq!(
            json_of(Value::Int(i64::MIN), &bigint),
            json!("-9223372036854775808")
        );
        let unsigned = col(MYSQL_TYPE_LONGLONG).with_flags(ColumnFlags::UNSIGNED_FLAG);
        assert_eq!(
            json_of(Value::UInt(u64::MAX), &unsigned),
            json!("18446744073709551615")
        );
        assert_eq!(json_of(Value::NULL, &bigint), Json::Null);
    }

    #[test]
    fn floats_keep_their_shortest_form_and_non_finite_become_strings() {
        let float = col(ColumnType::MYSQL_TYPE_FLOAT);
        assert_eq!(json_of(Value::Float(0.1), &float), json!(0.1));
        assert_eq!(json_of(Value::Float(f32::NAN), &float), json!("NaN"));
        let double = col(ColumnType::MYSQL_TYPE_DOUBLE);
        assert_eq!(json_of(Value::Double(1.5e300), &double), json!(1.5e300));
        assert_eq!(
            json_of(Value::Double(f64::INFINITY), &double),
            json!("Infinity")
        );
        assert_eq!(
            json_of(Value::Double(f64::NEG_INFINITY), &double),
            json!("-Infinity")
        );
    }

    #[test]
    fn decimals_are_exact_strings() {
        let decimal = col(ColumnType::MYSQL_TYPE_NEWDECIMAL);
        assert_eq!(
            json_of(
                Value::Bytes(b"12345678901234567890.0100".to_vec()),
                &decimal
            ),
            json!("12345678901234567890.0100")
        );
    }

    #[test]
    fn dates_and_datetimes() {
        let date = col(ColumnType::MYSQL_TYPE_DATE);
        assert_eq!(
            json_of(Value::Date(2024, 2, 29, 0, 0, 0, 0), &date),
            json!("2024-02-29")
        );
        assert_eq!(
            json_of(Value::Date(0, 0, 0, 0, 0, 0, 0), &date),
            json!("0000-00-00")
        );
        let datetime = col(ColumnType::MYSQL_TYPE_DATETIME);
        assert_eq!(
            json_of(Value::Date(2024, 2, 29, 13, 5, 9, 0), &datetime),
            json!("2024-02-29 13:05:09")
        );
        // Declared without fraction but carrying one: shown, never dropped.
        assert_eq!(
            json_of(Value::Date(2024, 2, 29, 13, 5, 9, 5), &datetime),
            json!("2024-02-29 13:05:09.000005")
        );
        let ms = col(ColumnType::MYSQL_TYPE_TIMESTAMP).with_decimals(3);
        assert_eq!(
            json_of(Value::Date(1999, 12, 31, 23, 59, 59, 120_000), &ms),
            json!("1999-12-31 23:59:59.120")
        );
        assert_eq!(
            json_of(Value::Date(1999, 12, 31, 23, 59, 59, 0), &ms),
            json!("1999-12-31 23:59:59.000")
        );
    }

    #[test]
    fn times_fold_days_into_hours() {
        let time = col(ColumnType::MYSQL_TYPE_TIME);
        assert_eq!(
            json_of(Value::Time(false, 0, 0, 0, 0, 0), &time),
            json!("00:00:00")
        );
        assert_eq!(
            json_of(Value::Time(true, 1, 2, 3, 4, 0), &time),
            json!("-26:03:04")
        );
        assert_eq!(
            json_of(Value::Time(false, 34, 22, 59, 59, 0), &time),
            json!("838:59:59")
        );
        let micro = col(ColumnType::MYSQL_TYPE_TIME).with_decimals(6);
        assert_eq!(
            json_of(Value::Time(true, 0, 1, 2, 3, 4), &micro),
            json!("-01:02:03.000004")
        );
    }

    #[test]
    fn fraction_rules() {
        assert_eq!(fraction(0, 0), "");
        assert_eq!(fraction(0, 31), "");
        assert_eq!(fraction(0, 2), ".00");
        assert_eq!(fraction(500_000, 1), ".5");
        assert_eq!(fraction(500_001, 1), ".500001");
        assert_eq!(fraction(123_456, 31), ".123456");
    }

    #[test]
    fn json_columns_are_parsed_with_fallbacks() {
        let json_col = col(ColumnType::MYSQL_TYPE_JSON);
        assert_eq!(
            json_of(Value::Bytes(br#"{"a":[1,2,null]}"#.to_vec()), &json_col),
            json!({"a": [1, 2, null]})
        );
        assert_eq!(
            json_of(Value::Bytes(b"not json".to_vec()), &json_col),
            json!("not json")
        );
        assert_eq!(
            json_of(Value::Bytes(vec![0xff, 0xfe]), &json_col),
            json!({"base64": "//4="})
        );
    }

    #[test]
    fn text_versus_binary_strings() {
        use ColumnType::*;
        let varchar = text_col(MYSQL_TYPE_VAR_STRING);
        assert_eq!(
            json_of(Value::Bytes("héllo".into()), &varchar),
            json!("héllo")
        );
        assert_eq!(
            json_of(Value::Bytes(vec![b'a', 0xc3]), &varchar),
            json!({"base64": "YcM="})
        );
        assert_eq!(json_of(Value::Bytes(b"".to_vec()), &varchar), json!(""));
        for t in [MYSQL_TYPE_VAR_STRING, MYSQL_TYPE_STRING, MYSQL_TYPE_BLOB] {
            assert_eq!(
                json_of(Value::Bytes(b"\x00\x01ab".to_vec()), &col(t)),
                json!("AAFhYg==")
            );
        }
        assert_eq!(
            json_of(Value::Bytes(b"long".to_vec()), &text_col(MYSQL_TYPE_BLOB)),
            json!("long")
        );
        let enum_col = text_col(MYSQL_TYPE_STRING).with_flags(ColumnFlags::ENUM_FLAG);
        assert_eq!(
            json_of(Value::Bytes(b"red".to_vec()), &enum_col),
            json!("red")
        );
        let set_col = col(MYSQL_TYPE_STRING).with_flags(ColumnFlags::SET_FLAG);
        assert_eq!(
            json_of(Value::Bytes(b"a,b".to_vec()), &set_col),
            json!("a,b")
        );
    }

    #[test]
    fn bits_and_geometry_are_base64() {
        assert_eq!(
            json_of(Value::Bytes(vec![1]), &col(ColumnType::MYSQL_TYPE_BIT)),
            json!("AQ==")
        );
        // SRID 4326 (little endian) followed by a WKB point.
        let mut value = 4326u32.to_le_bytes().to_vec();
        let wkb = [
            1u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 240, 63, 0, 0, 0, 0, 0, 0, 0, 64,
        ];
        value.extend_from_slice(&wkb);
        assert_eq!(
            json_of(Value::Bytes(value), &col(ColumnType::MYSQL_TYPE_GEOMETRY)),
            json!(base64_encode(&wkb))
        );
    }

    #[test]
    fn type_names() {
        use ColumnType::*;
        let unsigned = ColumnFlags::UNSIGNED_FLAG;
        assert_eq!(type_name(&col(MYSQL_TYPE_LONG)), "int");
        assert_eq!(type_name(&col(MYSQL_TYPE_LONGLONG)), "bigint");
        assert_eq!(
            type_name(&col(MYSQL_TYPE_LONGLONG).with_flags(unsigned)),
            "bigint unsigned"
        );
        assert_eq!(type_name(&col(MYSQL_TYPE_NEWDECIMAL)), "decimal");
        assert_eq!(type_name(&text_col(MYSQL_TYPE_VAR_STRING)), "varchar");
        assert_eq!(type_name(&col(MYSQL_TYPE_VAR_STRING)), "varbinary");
        assert_eq!(type_name(&text_col(MYSQL_TYPE_BLOB)), "text");
        assert_eq!(type_name(&col(MYSQL_TYPE_BLOB)), "blob");
        assert_eq!(type_name(&col(MYSQL_TYPE_DATETIME)), "datetime");
        assert_eq!(type_name(&col(MYSQL_TYPE_JSON)), "json");
        let enum_col = text_col(MYSQL_TYPE_STRING).with_flags(ColumnFlags::ENUM_FLAG);
        assert_eq!(type_name(&enum_col), "enum");
        // UNSIGNED only qualifies numbers.
        assert_eq!(
            type_name(&col(MYSQL_TYPE_DATE).with_flags(unsigned)),
            "date"
        );
    }

    #[test]
    fn parameters_map_to_mysql_values() {
        assert_eq!(json_to_mysql(&json!(null)), Value::NULL);
        assert_eq!(json_to_mysql(&json!(true)), Value::Int(1));
        assert_eq!(json_to_mysql(&json!(false)), Value::Int(0));
        assert_eq!(json_to_mysql(&json!(-5)), Value::Int(-5));
        assert_eq!(json_to_mysql(&json!(u64::MAX)), Value::UInt(u64::MAX));
        assert_eq!(json_to_mysql(&json!(2.5)), Value::Double(2.5));
        assert_eq!(json_to_mysql(&json!("x'y")), Value::Bytes(b"x'y".to_vec()));
        assert_eq!(
            json_to_mysql(&json!({"a": [1]})),
            Value::Bytes(br#"{"a":[1]}"#.to_vec())
        );
    }

    #[test]
    fn read_statements_are_recognised() {
        for sql in [
            "SELECT 1",
            "  (select 1) union (select 2)",
            "/* why */ select 1",
            "-- note\nSELECT 1",
            "--\tnote\nSELECT 1",
            "# note\nshow tables",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "explain select 1",
        ] {
            assert!(is_read_statement(sql), "{sql}");
        }
        for sql in [
            "DELETE FROM t RETURNING *",
            "insert into t values (1) returning id",
            "/*! SELECT */ 1",
            "/*M!100000 DELETE FROM t */",
            "--x\nSELECT 1",
            "CALL p()",
            "",
            "/* unterminated",
        ] {
            assert!(!is_read_statement(sql), "{sql}");
        }
    }

    #[test]
    fn session_setup_pins_lexing() {
        let setup = setup_sql(false);
        assert!(setup.starts_with("SET NAMES utf8mb4;"));
        assert!(setup.contains("time_zone = '+00:00'"));
        for mode in [
            "ANSI",
            "NO_BACKSLASH_ESCAPES",
            "PIPES_AS_CONCAT",
            "ORACLE",
            "IGNORE_SPACE",
        ] {
            assert!(!SQL_MODE.contains(mode), "{mode}");
        }
        assert!(!setup.contains("READ ONLY"));
        assert!(setup_sql(true).ends_with("; SET SESSION TRANSACTION READ ONLY"));
    }

    #[test]
    fn begin_sets_the_server_limit_and_the_transaction() {
        assert_eq!(
            begin_sql(Flavor::MariaDb, true, Duration::from_millis(2500)),
            "SET SESSION max_statement_time = 3.500; START TRANSACTION READ ONLY"
        );
        assert_eq!(
            begin_sql(Flavor::MySql, false, Duration::from_secs(2)),
            "SET SESSION max_execution_time = 3000; START TRANSACTION"
        );
    }

    #[test]
    fn url_parameters_are_allow_listed() {
        assert!(parse_url("mysql://agent@db.example:3306/shop").is_ok());
        let opts = parse_url("mariadb://agent@db.example/shop?tcp_keepalive=10000");
        assert_eq!(
            opts.map(|o| o.db_name().map(str::to_string)),
            Ok(Some("shop".into()))
        );
        let e = parse_url("mysql://agent@db.example/shop?require_ssl=false").unwrap_err();
        assert!(e.contains("require_ssl"), "{e}");
        let e = parse_url("mysql://agent@db.example/shop?reset_connection=false").unwrap_err();
        assert!(e.contains("reset_connection"), "{e}");
        assert!(parse_url("postgres://agent@db.example/shop").is_err());
        let e = parse_url("mysql://agent:hunter2@db.example/shop").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    fn account(name: &str, host: Option<&str>) -> Account {
        Account {
            name: name.into(),
            host: host.map(str::to_string),
        }
    }

    #[test]
    fn grant_lines_are_parsed() {
        // MariaDB 10.11 output.
        assert_eq!(
            parse_grant("GRANT ALL PRIVILEGES ON *.* TO `root`@`127.0.0.1` WITH GRANT OPTION"),
            Some(Grant::Privileges {
                privileges: vec!["ALL PRIVILEGES".into()],
                object: "*.*".into(),
                grantee: Some(account("root", Some("127.0.0.1"))),
            })
        );
        assert_eq!(
            parse_grant("GRANT SELECT (`a`), INSERT (`a`, `b`) ON `test`.`al_x` TO `al_r1`"),
            Some(Grant::Privileges {
                privileges: vec!["SELECT".into(), "INSERT".into()],
                object: "`test`.`al_x`".into(),
                grantee: Some(account("al_r1", None)),
            })
        );
        assert_eq!(
            parse_grant("GRANT `al_r1` TO `al_role`@`%`"),
            Some(Grant::Roles {
                roles: vec![account("al_r1", None)],
                grantee: Some(account("al_role", Some("%"))),
            })
        );
        assert_eq!(
            parse_grant("SET DEFAULT ROLE `al_r1` FOR `al_role`@`%`"),
            None
        );
        // MySQL 8 output.
        assert_eq!(
            parse_grant("GRANT `r1`@`%`,`r2`@`localhost` TO `u`@`%` WITH ADMIN OPTION"),
            Some(Grant::Roles {
                roles: vec![account("r1", Some("%")), account("r2", Some("localhost"))],
                grantee: Some(account("u", Some("%"))),
            })
        );
        let Some(Grant::Privileges { privileges, .. }) = parse_grant(
            "GRANT APPLICATION_PASSWORD_ADMIN,AUDIT_ABORT_EXEMPT ON *.* TO `root`@`localhost`",
        ) else {
            panic!("not parsed");
        };
        assert_eq!(
            privileges,
            ["APPLICATION_PASSWORD_ADMIN", "AUDIT_ABORT_EXEMPT"]
        );
        // A quote inside a name survives the round trip.
        let Some(Grant::Roles { roles, .. }) = parse_grant("GRANT `we``ird` TO 'u'@'%'") else {
            panic!("not parsed");
        };
        assert_eq!(roles[0].quoted(), "`we``ird`");
    }

    fn dangerous(line: &str) -> Vec<String> {
        match parse_grant(line) {
            Some(Grant::Privileges {
                privileges, object, ..
            }) => dangerous_privileges(&privileges, &object)
                .into_iter()
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn dangerous_privileges_are_found() {
        assert_eq!(
            dangerous("GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"),
            ["ALL PRIVILEGES"]
        );
        assert_eq!(dangerous("GRANT FILE ON *.* TO `al_r2`"), ["FILE"]);
        assert_eq!(
            dangerous(
                "GRANT SELECT, RELOAD, FILE, SUPER ON *.* TO 'u'@'%' IDENTIFIED BY PASSWORD '*AB'"
            ),
            ["FILE", "SUPER"]
        );
        assert!(dangerous("GRANT ALL PRIVILEGES ON `shop`.* TO `u`@`%`").is_empty());
        assert!(dangerous("GRANT USAGE ON *.* TO `u`@`%` IDENTIFIED BY PASSWORD '*B2'").is_empty());
        assert!(
            dangerous("GRANT PROXY ON ''@'%' TO 'root'@'localhost' WITH GRANT OPTION").is_empty()
        );
        assert!(dangerous("GRANT SELECT (`file`) ON `db`.`t` TO `u`@`%`").is_empty());
    }
}
