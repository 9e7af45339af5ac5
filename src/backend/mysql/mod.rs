//! MySQL / MariaDB backend (`mysql_async`).
//!
//! How this module keeps the backend contract (see `backend/mod.rs`), and why:
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
//!   Every request sends these statements in the same text query as its `START TRANSACTION`,
//!   *before* its statement is prepared (the server's prepare parses with the session's
//!   `sql_mode` and character set); the administrative paths (grants, schema) send them first
//!   on their own. They are not driver setup commands: the driver would run those in a round
//!   trip of their own after every reset, and a request needs its own round trip anyway.
//! - **No session state between requests.** The pool resets every connection it gets back
//!   (`reset_connection = true`, `COM_RESET_CONNECTION`): the open transaction is rolled back,
//!   and session variables, user variables, temporary tables, locks and prepared statements
//!   are dropped. A read-only connection's transaction is therefore not rolled back by a
//!   `ROLLBACK` of its own (there is nothing to undo, and the reset does it anyway); a
//!   read-write one commits before the connection goes back.
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

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::FutureExt as _;
use mysql_async::prelude::Queryable;
use mysql_async::{
    Conn, DriverError, Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, Row, Statement,
};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    BackendError, Column, ColumnInfo, DatabaseError, ForeignKey, QueryPlan, RowEvent, RowSender,
    RowStream, SqlBackend, TableInfo, bounded,
};
use crate::config::{ConnectionConfig, ConnectionKind, DatabaseConfig, TlsMode};

mod grants;
mod session;
mod values;

use grants::privileged_grants;
use session::{begin_sql, parse_url, setup_sql, ssl_opts};
use values::{json_to_mysql, row_to_json, text_value, type_name};

/// Character set id of `binary`: string/blob columns with it hold bytes, not text.
const BINARY_CHARSET: u16 = 63;

/// MariaDB `ER_STATEMENT_TIMEOUT` (max_statement_time exceeded).
const ER_STATEMENT_TIMEOUT: u16 = 1969;
/// MySQL `ER_QUERY_TIMEOUT` (max_execution_time exceeded).
const ER_QUERY_TIMEOUT: u16 = 3024;
/// `ER_NO_SUCH_THREAD`: the connection we wanted to kill is already gone.
const ER_NO_SUCH_THREAD: u16 = 1094;

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
    /// Airlock's own store is SQLite or PostgreSQL, so a MySQL target can never be it.
    pub fn new(config: &ConnectionConfig, db: &DatabaseConfig) -> Result<Self, String> {
        let name = config.name.as_str();
        let context = |message: String| format!("connection `{name}`: {message}");

        let url = db.url.as_str();
        let base = parse_url(url).map_err(context)?;
        let password = match &db.password {
            Some(reference) => Some(
                reference
                    .resolve()
                    .map_err(|e| context(format!("password: {e}")))?,
            ),
            None => None,
        };
        let ssl = match db.tls.mode {
            TlsMode::Disable => None,
            TlsMode::VerifyFull => Some(ssl_opts(&db.tls).map_err(context)?),
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
            .secure_auth(true)
            // The driver refuses a packet (so a row) larger than this at its header, before
            // buffering it (`limits.max_value_bytes`; the config bounds it to 1 KiB..1 GiB).
            .max_allowed_packet(Some(
                usize::try_from(limits.max_value_bytes).unwrap_or(usize::MAX),
            ));

        let main = common.clone().pool_opts(
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
            read_only: db.read_only,
            allow_privileged: db.allow_privileged,
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
            conn.query_drop(setup_sql(self.read_only))
                .await
                .map_err(|e| admin_error(name, "setting up the session", e))?;
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

        // The session setup and the transaction first: the prepare below parses with the
        // session's `sql_mode` and character set. A server error here leaves the connection
        // healthy; dropping it returns it to the pool, which resets it.
        let remaining = deadline.saturating_duration_since(Instant::now());
        let begin = conn.query_drop(begin_sql(flavor, self.read_only, remaining));
        match bounded(begin, &cancel, deadline).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(admin_error(
                    &self.shared.name,
                    "starting the transaction",
                    e,
                ));
            }
            Err(stop) => {
                discard(conn);
                return Err(stop);
            }
        }

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

        let job = Job {
            shared: Arc::clone(&self.shared),
            stmt,
            max_rows: plan.max_rows,
            max_affected_rows: plan.max_affected_rows,
            read_only: self.read_only,
            may_write: !self.read_only && !is_read_statement(&plan.sql),
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
        // The stream runs the producer while its reader waits: no task of its own. It
        // reports once the first row (or the end) is in the channel, so errors found before
        // the first row are returned here, not inside the stream. If this future is dropped,
        // `stream` goes with it, and the producer, handed to a task by the stream, sees the
        // consumer gone.
        let mut stream = stream.with_producer(produce(job, conn, params, outlet));
        match stream.drive(started_rx).await {
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
        let outcome = tokio::time::timeout(self.admin_timeout, async {
            conn.query_drop(setup_sql(self.read_only)).await?;
            let rows = conn.query::<Row, _>(SCHEMA_SQL).await?;
            let keys = conn.query::<Row, _>(KEYS_SQL).await?;
            Ok::<_, mysql_async::Error>((rows, keys))
        })
        .await;
        match outcome {
            Ok(Ok((rows, keys))) => {
                let mut tables = tables_from_rows(&rows);
                add_keys(&mut tables, &keys);
                Ok(tables)
            }
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
// Closing and killing sessions
// ---------------------------------------------------------------------------------------------

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
}

/// How a successful run leaves the connection.
enum Finish {
    /// The statement ran to its end (and committed, on a read-write connection); the
    /// connection goes back to the pool, which resets it.
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

    // A read-only connection's transaction has nothing to undo: the pool's reset rolls it
    // back (see the module comment), one round trip fewer per request.
    if !job.read_only {
        out.stop
            .guard(conn.query_drop("COMMIT"))
            .await?
            .map_err(|e| exec_failure(name, e))?;
    }
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
        // A row over `limits.max_value_bytes`, refused by the driver at its packet header.
        mysql_async::Error::Io(mysql_async::IoError::Io(e))
            if e.to_string().contains("larger than max_allowed_packet") =>
        {
            Failure::kill(BackendError::Database(DatabaseError {
                // SQLSTATE "program limit exceeded", as PostgreSQL reports it.
                sqlstate: "54000".into(),
                message: "the database sent a row larger than this connection's max_value_bytes; Airlock refused it before reading it".into(),
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
// Schema
// ---------------------------------------------------------------------------------------------

/// Tables, views and their columns in the current database; with no database selected, in all
/// non-system schemas.
const SCHEMA_SQL: &str = "\
SELECT t.TABLE_SCHEMA, t.TABLE_NAME, t.TABLE_TYPE, c.COLUMN_NAME, c.COLUMN_TYPE, c.IS_NULLABLE, \
       t.TABLE_COMMENT, c.COLUMN_COMMENT \
FROM information_schema.TABLES AS t \
LEFT JOIN information_schema.COLUMNS AS c \
  ON c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME \
WHERE t.TABLE_SCHEMA = DATABASE() \
   OR (DATABASE() IS NULL AND t.TABLE_SCHEMA NOT IN \
       ('mysql', 'information_schema', 'performance_schema', 'sys')) \
ORDER BY t.TABLE_SCHEMA, t.TABLE_NAME, c.ORDINAL_POSITION";

/// Primary and foreign keys of the same tables, one row per key column in key order. The
/// primary key's constraint is always named `PRIMARY`.
const KEYS_SQL: &str = "\
SELECT k.TABLE_SCHEMA, k.TABLE_NAME, k.CONSTRAINT_NAME, tc.CONSTRAINT_TYPE, k.COLUMN_NAME, \
       k.REFERENCED_TABLE_SCHEMA, k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME \
FROM information_schema.TABLE_CONSTRAINTS AS tc \
JOIN information_schema.KEY_COLUMN_USAGE AS k \
  ON k.CONSTRAINT_SCHEMA = tc.CONSTRAINT_SCHEMA AND k.CONSTRAINT_NAME = tc.CONSTRAINT_NAME \
 AND k.TABLE_SCHEMA = tc.TABLE_SCHEMA AND k.TABLE_NAME = tc.TABLE_NAME \
WHERE tc.CONSTRAINT_TYPE IN ('PRIMARY KEY', 'FOREIGN KEY') \
  AND (tc.TABLE_SCHEMA = DATABASE() \
   OR (DATABASE() IS NULL AND tc.TABLE_SCHEMA NOT IN \
       ('mysql', 'information_schema', 'performance_schema', 'sys'))) \
ORDER BY k.TABLE_SCHEMA, k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION";

/// A catalog comment, or `None` for none: MySQL reports a missing comment as `''`, and a
/// view's table comment as `VIEW`.
fn comment(value: Option<String>, view: bool) -> Option<String> {
    value.filter(|c| !(c.is_empty() || (view && c == "VIEW")))
}

/// Attaches the ordered `KEYS_SQL` rows to the tables they belong to.
fn add_keys(tables: &mut [TableInfo], rows: &[Row]) {
    let index: std::collections::HashMap<(Option<String>, String), usize> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| ((t.schema.clone(), t.name.clone()), i))
        .collect();
    // The foreign key the previous row added to, so its later columns join it.
    let mut open: Option<(usize, String)> = None;
    for row in rows {
        let (Some(name), Some(constraint), Some(kind), Some(column)) = (
            text_value(row.as_ref(1)),
            text_value(row.as_ref(2)),
            text_value(row.as_ref(3)),
            text_value(row.as_ref(4)),
        ) else {
            continue;
        };
        let Some(&i) = index.get(&(text_value(row.as_ref(0)), name)) else {
            continue;
        };
        let Some(table) = tables.get_mut(i) else {
            continue;
        };
        if kind.eq_ignore_ascii_case("PRIMARY KEY") {
            table.primary_key.push(column);
            continue;
        }
        let Some(referenced_table) = text_value(row.as_ref(6)) else {
            continue;
        };
        let referenced_column = text_value(row.as_ref(7)).unwrap_or_default();
        let same = open.as_ref() == Some(&(i, constraint.clone()));
        match table.foreign_keys.last_mut() {
            Some(fk) if same => {
                fk.columns.push(column);
                fk.referenced_columns.push(referenced_column);
            }
            _ => {
                table.foreign_keys.push(ForeignKey {
                    name: Some(constraint.clone()),
                    columns: vec![column],
                    referenced_schema: text_value(row.as_ref(5)),
                    referenced_table,
                    referenced_columns: vec![referenced_column],
                });
                open = Some((i, constraint));
            }
        }
    }
}

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
        // 'VIEW' and 'SYSTEM VIEW' are views; base tables, MariaDB's 'SYSTEM VERSIONED'
        // and 'SEQUENCE' are queried like tables.
        let view = table_type.to_ascii_uppercase().contains("VIEW");
        if !same {
            tables.push(TableInfo {
                schema,
                name: table,
                kind: if view { "view".into() } else { "table".into() },
                comment: comment(text_value(row.as_ref(6)), view),
                ..TableInfo::default()
            });
        }
        // A table without visible columns has one row with NULL column fields (LEFT JOIN).
        if let (Some(column), Some(entry)) = (text_value(row.as_ref(3)), tables.last_mut()) {
            entry.columns.push(ColumnInfo {
                name: column,
                type_name: text_value(row.as_ref(4)).unwrap_or_default(),
                nullable: text_value(row.as_ref(5)).is_some_and(|n| n.eq_ignore_ascii_case("YES")),
                comment: comment(text_value(row.as_ref(7)), false),
                ..ColumnInfo::default()
            });
        }
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
