//! PostgreSQL backend: a deadpool of tokio-postgres connections behind [`SqlBackend`].
//!
//! Invariants this module keeps on top of the backend contract:
//! - Agent SQL only ever reaches the server through the extended protocol (Parse/Bind/
//!   Execute) as exactly one prepared statement; the simple-query protocol only carries
//!   Airlock's own fixed text (`START TRANSACTION`, `SET LOCAL ...`, `COMMIT`, `ROLLBACK`).
//! - Parameters are sent in text format so the server's own input functions parse them,
//!   whatever the parameter's type (`params.rs`); results arrive in binary format and are
//!   decoded by `values.rs`.
//! - A connection goes back to the pool only after a clean `COMMIT`/`ROLLBACK`. Any error,
//!   timeout, cancellation or vanished consumer closes it instead (after a server-side cancel
//!   request when a statement may still be running), and the pool's `Clean` recycling resets
//!   whatever session state a finished request might have left.
//! - Every non-null value gets a JSON form: natively decoded when the type is known, else the
//!   server's own text form (`SELECT $1::text` with the raw bytes bound back), never an
//!   error or a null.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use futures::StreamExt as _;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::{DbError, ErrorPosition, SqlState};
use tokio_postgres::types::{Kind, ToSql, Type};
use tokio_postgres::{CancelToken, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use super::deadline_after;
use super::{
    BackendContext, BackendError, Column, ColumnInfo, DatabaseError, ForeignKey, QueryPlan,
    RowEvent, RowSender, RowStream, SqlBackend, TableInfo, bounded,
};
use crate::config::{ConnectionConfig, ConnectionKind, DatabaseConfig, TlsConfig, TlsMode};
use crate::store::StoreIdentity;

mod guard;
mod params;
mod session;
mod values;

use params::JsonParam;
use values::{FallbackTexts, decode_row};

/// Settings that change how the server lexes or renders text, pinned at connection startup
/// so the inspector's view of a statement is the server's view (`standard_conforming_strings`
/// decides what a backslash in a string literal means) and fallback text forms are stable.
/// `client_encoding=UTF8` is sent by tokio-postgres as its own startup parameter, which the
/// server applies after `options`, so a URL cannot override it.
const STARTUP_OPTIONS: &str = "-c standard_conforming_strings=on -c DateStyle=ISO,MDY \
     -c IntervalStyle=postgres -c extra_float_digits=3";

const APPLICATION_NAME: &str = "airlock";

/// Added to the plan's timeout for the server-side `statement_timeout`: the client-side
/// deadline fires first and cancels; the server's timer is only the backstop for a cancel
/// request that never arrives.
const SERVER_TIMEOUT_MARGIN: Duration = Duration::from_secs(1);

/// Rows fetched per `Execute`: small at first so the first rows reach the client quickly,
/// growing to bound round trips. A whole batch is held in memory while it is decoded.
const FIRST_BATCH: u64 = 32;
const MAX_BATCH: u64 = 256;

/// How long a cancel request (a fresh connection to the server) may take.
const CANCEL_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Roles whose members can read or write server files or run programs as the server's OS
/// user: refused like superusers unless the connection says `allow_privileged = true`.
const PRIVILEGED_ROLES_SQL: &str = "\
SELECT pg_catalog.current_database()::text,
       current_user::text,
       r.rolsuper,
       (SELECT pg_catalog.string_agg(g.rolname::text, ', ' ORDER BY g.rolname)
          FROM pg_catalog.pg_roles g
         WHERE g.rolname IN ('pg_read_server_files', 'pg_write_server_files',
                             'pg_execute_server_program')
           AND pg_catalog.pg_has_role(r.oid, g.oid, 'MEMBER'))
  FROM pg_catalog.pg_roles r
 WHERE r.rolname = current_user";

/// Tables, views, materialized views and foreign tables the role can use: USAGE on the
/// schema and some privilege on the relation; columns only where the role has a column
/// privilege. A relation without visible columns still appears (LEFT JOIN).
const SCHEMA_SQL: &str = "\
SELECT n.nspname::text,
       c.relname::text,
       CASE WHEN c.relkind IN ('v', 'm') THEN 'view' ELSE 'table' END,
       a.attname::text,
       pg_catalog.format_type(a.atttypid, a.atttypmod),
       NOT a.attnotnull,
       pg_catalog.obj_description(c.oid, 'pg_class'),
       pg_catalog.col_description(c.oid, a.attnum)
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_attribute a
         ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        AND pg_catalog.has_column_privilege(c.oid, a.attnum, 'SELECT, INSERT, UPDATE, REFERENCES')
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname !~ '^pg_toast'
   AND n.nspname !~ '^pg_temp_'
   AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
   AND (pg_catalog.has_table_privilege(c.oid,
            'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
        OR pg_catalog.has_any_column_privilege(c.oid, 'SELECT, INSERT, UPDATE, REFERENCES'))
 ORDER BY n.nspname, c.relname, a.attnum";

/// Primary and foreign keys, columns in key order (`conkey`/`confkey` are ordered). Rows of
/// tables `SCHEMA_SQL` does not list are ignored by the caller. A foreign key that partition
/// routing cloned (`conparentid <> 0`: one per partition of a referenced partitioned table)
/// is left out; the key as declared is the parent row.
const KEYS_SQL: &str = "\
SELECT n.nspname::text,
       c.relname::text,
       con.contype = 'p',
       con.conname::text,
       ARRAY(SELECT a.attname::text
               FROM pg_catalog.unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_catalog.pg_attribute a
                 ON a.attrelid = con.conrelid AND a.attnum = k.attnum
              ORDER BY k.ord),
       fn.nspname::text,
       fc.relname::text,
       ARRAY(SELECT a.attname::text
               FROM pg_catalog.unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_catalog.pg_attribute a
                 ON a.attrelid = con.confrelid AND a.attnum = k.attnum
              ORDER BY k.ord)
  FROM pg_catalog.pg_constraint con
  JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_class fc ON fc.oid = con.confrelid
  LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
 WHERE (con.contype = 'p' OR (con.contype = 'f' AND con.conparentid = 0))
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname !~ '^pg_toast'
   AND n.nspname !~ '^pg_temp_'
 ORDER BY n.nspname, c.relname, con.conname";

/// The TLS mode shared by the pool's connections and their cancel requests (a cancel
/// request is a new connection and must be as protected as the one it cancels).
#[derive(Clone)]
enum Tls {
    /// Plaintext: the pool opens its own TCP streams (see `guard`), so the driver does not
    /// know the address and cancel requests are sent over a stream opened from this config.
    Disabled(Arc<tokio_postgres::Config>),
    VerifyFull(MakeRustlsConnect),
}

/// Where the URL says the server is, for the "not Airlock's own store" check.
struct Endpoint {
    /// Lower-cased host names, host addresses and socket directories.
    hosts: Vec<(String, u16)>,
    /// What the server will use as the database: `dbname`, else the user name.
    dbname: Option<String>,
}

impl Endpoint {
    fn from_config(pg: &tokio_postgres::Config) -> Endpoint {
        let ports = pg.get_ports();
        // tokio-postgres: one port applies to every host, otherwise one port per host.
        let port_for = |i: usize| match ports {
            [] => 5432,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(5432),
        };
        let mut hosts = Vec::new();
        for (i, host) in pg.get_hosts().iter().enumerate() {
            let name = match host {
                Host::Tcp(h) => h.to_ascii_lowercase(),
                #[cfg(unix)]
                Host::Unix(p) => p.display().to_string(),
            };
            hosts.push((name, port_for(i)));
        }
        for (i, addr) in pg.get_hostaddrs().iter().enumerate() {
            hosts.push((addr.to_string(), port_for(i)));
        }
        Endpoint {
            hosts,
            dbname: pg.get_dbname().or(pg.get_user()).map(str::to_string),
        }
    }

    fn is_store(&self, store: &StoreIdentity, dbname: Option<&str>) -> bool {
        let Some(dbname) = dbname.or(self.dbname.as_deref()) else {
            return false;
        };
        self.hosts
            .iter()
            .any(|(host, port)| store.is_postgres_target(host, *port, dbname))
    }
}

pub struct PostgresBackend {
    name: String,
    pool: Pool,
    tls: Tls,
    read_only: bool,
    allow_privileged: bool,
    endpoint: Endpoint,
    store: StoreIdentity,
    pool_wait: Duration,
    pool_size: usize,
    /// Bound for `schema()`, which has no plan of its own.
    default_timeout: Duration,
}

impl PostgresBackend {
    /// Builds the pool; no connection is opened until the first request or `verify()`.
    pub fn new(
        config: &ConnectionConfig,
        db: &DatabaseConfig,
        ctx: &BackendContext,
    ) -> Result<Self, String> {
        let name = &config.name;
        let url = db.url.as_str();
        let mut pg: tokio_postgres::Config = url.parse().map_err(|e| {
            format!(
                "connection `{name}`: invalid postgres URL: {}",
                describe(&e)
            )
        })?;
        if pg.get_password().is_some() {
            return Err(format!(
                "connection `{name}`: the URL carries a password; put it in `password = \"env:NAME\"` instead"
            ));
        }
        if let Some(secret) = &db.password {
            let password = secret
                .resolve()
                .map_err(|e| format!("connection `{name}`: password: {e}"))?;
            pg.password(password.expose());
        }
        // Ours go last: for a repeated `-c`, the server keeps the last value. The
        // connection's default timeout is the session's `statement_timeout`, which a
        // transaction overrides with `SET LOCAL` only when its own differs (see `session`).
        let default_timeout = Duration::from_millis(config.limits.timeout_ms);
        let ours = format!(
            "{STARTUP_OPTIONS} -c statement_timeout={}",
            server_timeout_ms(default_timeout)
        );
        let options = match pg.get_options().map(str::trim) {
            Some(own) if !own.is_empty() => format!("{own} {ours}"),
            _ => ours,
        };
        pg.options(options);
        pg.application_name(APPLICATION_NAME);
        let pool_wait = config.limits.pool_wait();
        pg.connect_timeout(pool_wait);

        let tls = match db.tls.mode {
            // Never silently downgrade a URL that asked for encryption.
            TlsMode::Disable if pg.get_ssl_mode() == SslMode::Require => {
                return Err(format!(
                    "connection `{name}`: the URL says sslmode=require but tls.mode is disable; \
                     set tls.mode = \"verify-full\" and tls.ca"
                ));
            }
            TlsMode::Disable => {
                pg.ssl_mode(SslMode::Disable);
                // Replaced by the final config below, once every option is set.
                Tls::Disabled(Arc::new(pg.clone()))
            }
            TlsMode::VerifyFull => {
                pg.ssl_mode(SslMode::Require);
                Tls::VerifyFull(rustls_connector(name, &db.tls)?)
            }
        };
        let endpoint = Endpoint::from_config(&pg);

        let manager_config = ManagerConfig {
            // Nothing is sent when a connection is handed out again: every request ends by
            // resetting the session in the same message as its transaction's end, and a
            // connection that did not end cleanly is closed, not pooled (see `session`).
            recycling_method: RecyclingMethod::Fast,
        };
        // Every connection reads through the message guard (see `guard`).
        let max_message = usize::try_from(config.limits.max_value_bytes).unwrap_or(usize::MAX);
        let tls = match tls {
            Tls::Disabled(_) => Tls::Disabled(Arc::new(pg.clone())),
            other => other,
        };
        let manager = match &tls {
            Tls::Disabled(_) => Manager::from_connect(
                pg,
                guard::GuardedConnect::<NoTls>::Plain { max_message },
                manager_config,
            ),
            Tls::VerifyFull(connector) => Manager::from_connect(
                pg,
                guard::GuardedConnect::Tls(guard::GuardedTls::new(connector.clone(), max_message)),
                manager_config,
            ),
        };
        let pool = Pool::builder(manager)
            .max_size(config.limits.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(pool_wait))
            .create_timeout(Some(pool_wait))
            .recycle_timeout(Some(pool_wait))
            .build()
            .map_err(|e| format!("connection `{name}`: cannot build the connection pool: {e}"))?;

        Ok(PostgresBackend {
            name: name.clone(),
            pool,
            tls,
            read_only: db.read_only,
            allow_privileged: db.allow_privileged,
            endpoint,
            store: ctx.store_identity.clone(),
            pool_wait,
            pool_size: config.limits.pool_size,
            default_timeout,
        })
    }

    fn pool_error(&self, e: PoolError) -> BackendError {
        let detail = match e {
            PoolError::Timeout(TimeoutType::Wait) => format!(
                "connection `{}`: all {} pooled connections stayed busy for {} ms",
                self.name,
                self.pool_size,
                self.pool_wait.as_millis()
            ),
            PoolError::Timeout(TimeoutType::Create) => format!(
                "connection `{}`: connecting to the database took longer than {} ms",
                self.name,
                self.pool_wait.as_millis()
            ),
            PoolError::Timeout(TimeoutType::Recycle) => format!(
                "connection `{}`: resetting a pooled connection took longer than {} ms",
                self.name,
                self.pool_wait.as_millis()
            ),
            PoolError::Backend(e) => {
                format!(
                    "connection `{}`: cannot connect to the database: {}",
                    self.name,
                    describe(&e)
                )
            }
            PoolError::Closed => format!("connection `{}`: the pool is closed", self.name),
            PoolError::NoRuntimeSpecified => {
                return BackendError::Internal(format!(
                    "connection `{}`: the pool has no async runtime",
                    self.name
                ));
            }
            PoolError::PostCreateHook(e) => {
                format!(
                    "connection `{}`: a new connection was refused: {}",
                    self.name,
                    describe(&e)
                )
            }
        };
        BackendError::Unavailable {
            detail,
            retry_after_secs: 1,
        }
    }

    fn refuse_store(&self, dbname: Option<&str>) -> Result<(), BackendError> {
        if self.endpoint.is_store(&self.store, dbname) {
            return Err(BackendError::Internal(format!(
                "connection `{}` points at Airlock's own store database; agents must never reach it",
                self.name
            )));
        }
        Ok(())
    }
}

/// rustls with only the configured CA as trust anchor and the aws-lc-rs provider passed
/// explicitly, so no process-wide default provider has to be installed.
fn rustls_connector(name: &str, tls: &TlsConfig) -> Result<MakeRustlsConnect, String> {
    let ca = tls
        .ca
        .as_ref()
        .ok_or_else(|| format!("connection `{name}`: tls mode verify-full needs `tls.ca`"))?
        .resolve()
        .map_err(|e| format!("connection `{name}`: tls.ca: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.expose().as_bytes()) {
        let cert =
            cert.map_err(|e| format!("connection `{name}`: tls.ca is not valid PEM: {e}"))?;
        roots.add(cert).map_err(|e| {
            format!("connection `{name}`: tls.ca holds an unusable certificate: {e}")
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "connection `{name}`: tls.ca contains no PEM certificate"
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("connection `{name}`: TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(client_config))
}

#[async_trait::async_trait]
impl SqlBackend for PostgresBackend {
    async fn verify(&self) -> Result<(), BackendError> {
        // Checked before connecting too: a store-pointing URL is refused even while the
        // target happens to be unreachable.
        self.refuse_store(None)?;
        let client = self.pool.get().await.map_err(|e| match e {
            // The server answered and refused (bad password, unknown database or role):
            // a configuration error to fix, not a transient outage.
            PoolError::Backend(ref pg)
                if pg
                    .as_db_error()
                    .is_some_and(|db| !is_transient_startup_refusal(db.code())) =>
            {
                BackendError::Internal(format!(
                    "connection `{}`: the database refused the connection: {}",
                    self.name,
                    describe(pg)
                ))
            }
            other => self.pool_error(other),
        })?;
        let token = client.cancel_token();
        let row = match tokio::time::timeout(
            self.default_timeout,
            client.query_one(PRIVILEGED_ROLES_SQL, &[]),
        )
        .await
        {
            Ok(Ok(row)) => row,
            Ok(Err(e)) => {
                drop(Object::take(client));
                return Err(BackendError::Internal(format!(
                    "connection `{}`: cannot read the role's privileges: {}",
                    self.name,
                    describe(&e)
                )));
            }
            Err(_) => {
                // The catalog query is still running: a connection in that state must not
                // go back to the pool.
                cancel_on_server(&token, &self.tls).await;
                drop(Object::take(client));
                return Err(BackendError::Unavailable {
                    detail: format!(
                        "connection `{}`: the privilege check did not answer within {} ms",
                        self.name,
                        self.default_timeout.as_millis()
                    ),
                    retry_after_secs: 1,
                });
            }
        };
        drop(client);
        let read = |e: tokio_postgres::Error| {
            BackendError::Internal(format!(
                "connection `{}`: unexpected privilege check result: {}",
                self.name,
                describe(&e)
            ))
        };
        let dbname: String = row.try_get(0).map_err(read)?;
        let role: String = row.try_get(1).map_err(read)?;
        let superuser: bool = row.try_get(2).map_err(read)?;
        let file_roles: Option<String> = row.try_get(3).map_err(read)?;
        self.refuse_store(Some(&dbname))?;

        if self.allow_privileged {
            return Ok(());
        }
        let reason = if superuser {
            Some("is a superuser".to_string())
        } else {
            file_roles.map(|roles| format!("is a member of {roles}"))
        };
        match reason {
            Some(reason) => Err(BackendError::Internal(format!(
                "connection `{}`: database role `{role}` {reason}, which can read or write server \
                 files or run programs on the database host; use a least-privileged role, or set \
                 `allow_privileged = true` on this connection to accept the risk",
                self.name
            ))),
            None => Ok(()),
        }
    }

    async fn query(
        &self,
        plan: QueryPlan,
        cancel: CancellationToken,
    ) -> Result<RowStream, BackendError> {
        let deadline = deadline_after(plan.timeout);
        let client = bounded(self.pool.get(), &cancel, deadline)
            .await?
            .map_err(|e| self.pool_error(e))?;
        let (sender, stream) = RowStream::channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let own_timeout = session::own_timeout_sql(
            server_timeout_ms(plan.timeout),
            server_timeout_ms(self.default_timeout),
        );
        let job = Job {
            plan,
            own_timeout,
            read_only: self.read_only,
            deadline,
            cancel,
            sender,
        };
        // The stream runs the producer while its reader waits: no task of its own. If this
        // future is dropped here, `stream` goes with it, and the producer, handed to a task
        // by the stream, sees the closed channel and cancels on the server.
        let mut stream = stream.with_producer(produce(client, job, ready_tx, self.tls.clone()));
        match stream.drive(ready_rx).await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(BackendError::Internal(
                "the query task ended before reporting whether the statement started".into(),
            )),
        }
    }

    async fn schema(&self) -> Result<Vec<TableInfo>, BackendError> {
        let deadline = deadline_after(self.default_timeout);
        let mut client = tokio::time::timeout_at(deadline, self.pool.get())
            .await
            .map_err(|_| BackendError::Timeout)?
            .map_err(|e| self.pool_error(e))?;
        let token = client.cancel_token();
        let timeout_ms = server_timeout_ms(self.default_timeout);
        let outcome = tokio::time::timeout_at(deadline, async {
            let pg: &mut tokio_postgres::Client = &mut client;
            let txn = pg.build_transaction().read_only(true).start().await?;
            txn.batch_execute(&format!("SET LOCAL statement_timeout = {timeout_ms}"))
                .await?;
            let rows = txn.query(SCHEMA_SQL, &[]).await?;
            let keys = txn.query(KEYS_SQL, &[]).await?;
            txn.rollback().await?;
            Ok::<_, tokio_postgres::Error>((rows, keys))
        })
        .await;
        let (rows, keys) = match outcome {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                drop(Object::take(client));
                return Err(pg_error(e, Stage::BeforeRows));
            }
            Err(_) => {
                cancel_on_server(&token, &self.tls).await;
                drop(Object::take(client));
                return Err(BackendError::Timeout);
            }
        };
        drop(client);

        let read = |e: tokio_postgres::Error| {
            BackendError::Internal(format!("unexpected catalog query result: {}", describe(&e)))
        };
        let mut tables: Vec<TableInfo> = Vec::new();
        for row in rows {
            let schema: String = row.try_get(0).map_err(read)?;
            let name: String = row.try_get(1).map_err(read)?;
            let kind: String = row.try_get(2).map_err(read)?;
            let column: Option<String> = row.try_get(3).map_err(read)?;
            let type_name: Option<String> = row.try_get(4).map_err(read)?;
            let nullable: Option<bool> = row.try_get(5).map_err(read)?;
            let table_comment: Option<String> = row.try_get(6).map_err(read)?;
            let column_comment: Option<String> = row.try_get(7).map_err(read)?;
            let same = tables
                .last()
                .is_some_and(|t| t.name == name && t.schema.as_deref() == Some(schema.as_str()));
            if !same {
                tables.push(TableInfo {
                    schema: Some(schema),
                    name,
                    kind,
                    comment: table_comment,
                    ..TableInfo::default()
                });
            }
            if let (Some(column), Some(table)) = (column, tables.last_mut()) {
                table.columns.push(ColumnInfo {
                    name: column,
                    type_name: type_name.unwrap_or_default(),
                    nullable: nullable.unwrap_or(true),
                    comment: column_comment,
                    ..ColumnInfo::default()
                });
            }
        }
        let mut index: HashMap<(String, String), usize> = HashMap::new();
        for (i, t) in tables.iter().enumerate() {
            index.insert((t.schema.clone().unwrap_or_default(), t.name.clone()), i);
        }
        for row in keys {
            let schema: String = row.try_get(0).map_err(read)?;
            let name: String = row.try_get(1).map_err(read)?;
            let Some(table) = index.get(&(schema, name)).and_then(|&i| tables.get_mut(i)) else {
                continue;
            };
            let primary: bool = row.try_get(2).map_err(read)?;
            let columns: Vec<String> = row.try_get(4).map_err(read)?;
            if primary {
                table.primary_key = columns;
                continue;
            }
            let referenced_table: Option<String> = row.try_get(6).map_err(read)?;
            let Some(referenced_table) = referenced_table else {
                continue;
            };
            table.foreign_keys.push(ForeignKey {
                name: Some(row.try_get(3).map_err(read)?),
                columns,
                referenced_schema: row.try_get(5).map_err(read)?,
                referenced_table,
                referenced_columns: row.try_get(7).map_err(read)?,
            });
        }
        Ok(tables)
    }

    fn kind(&self) -> ConnectionKind {
        ConnectionKind::Postgres
    }
}

/// Startup refusals that say "try again later" rather than "your configuration is wrong".
fn is_transient_startup_refusal(code: &SqlState) -> bool {
    [
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
    ]
    .contains(code)
}

/// tokio-postgres' `Display` names only the kind of error; the cause ("Connection refused",
/// the server's message) is in the source chain. None of it contains the password.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

fn server_timeout_ms(timeout: Duration) -> u64 {
    // statement_timeout is an int4 of milliseconds; 0 would mean "no timeout".
    let ms = timeout.saturating_add(SERVER_TIMEOUT_MARGIN).as_millis();
    u64::try_from(ms)
        .unwrap_or(u64::MAX)
        .clamp(1, i32::MAX as u64)
}

// ---------------------------------------------------------------------------------------
// The producer task
// ---------------------------------------------------------------------------------------

struct Job {
    plan: QueryPlan,
    /// The transaction's `SET LOCAL statement_timeout`, unless it is the connection's default.
    own_timeout: Option<String>,
    read_only: bool,
    deadline: Instant,
    cancel: CancellationToken,
    sender: RowSender,
}

/// Why a run stopped without a database answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancelled,
    Timeout,
    ConsumerGone,
}

/// How a run ended badly. In every case the connection is closed, not pooled.
struct Failure {
    /// `None` when nobody is listening any more.
    error: Option<BackendError>,
    /// A statement may still be executing on the server.
    cancel_on_server: bool,
}

impl From<Stop> for Failure {
    fn from(stop: Stop) -> Failure {
        Failure {
            error: match stop {
                Stop::Cancelled => Some(BackendError::Cancelled),
                Stop::Timeout => Some(BackendError::Timeout),
                Stop::ConsumerGone => None,
            },
            cancel_on_server: true,
        }
    }
}

impl Failure {
    fn error(error: BackendError) -> Failure {
        Failure {
            error: Some(error),
            cancel_on_server: false,
        }
    }
}

/// Where in a run an error happened: before the first row nothing was executed, so a lost
/// connection means "unavailable, retry"; afterwards it is an internal failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    BeforeRows,
    Streaming,
}

fn pg_error(e: tokio_postgres::Error, stage: Stage) -> BackendError {
    if let Some(db) = e.as_db_error() {
        return BackendError::Database(database_error(db));
    }
    match stage {
        Stage::BeforeRows => BackendError::Unavailable {
            detail: format!(
                "the database connection failed before the statement ran: {}",
                describe(&e)
            ),
            retry_after_secs: 1,
        },
        Stage::Streaming => BackendError::Internal(format!(
            "the database connection failed mid-statement: {}",
            describe(&e)
        )),
    }
}

fn database_error(db: &DbError) -> DatabaseError {
    // Results are always requested in binary format (tokio-postgres has no per-column
    // choice), and a few types (`aclitem` in catalog columns) have no binary output.
    let hint = match db.hint() {
        None if db.code() == &SqlState::UNDEFINED_FUNCTION
            && db
                .message()
                .starts_with("no binary output function available") =>
        {
            Some("cast this column to text in the query (`column::text`)".to_string())
        }
        other => other.map(str::to_string),
    };
    DatabaseError {
        sqlstate: db.code().code().to_string(),
        message: db.message().to_string(),
        detail: db.detail().map(str::to_string),
        hint,
        position: match db.position() {
            Some(ErrorPosition::Original(p)) => Some(*p),
            // A position inside an internally generated query means nothing to the agent.
            Some(ErrorPosition::Internal { .. }) | None => None,
        },
        code: None,
    }
}

fn failed(stage: Stage) -> impl Fn(tokio_postgres::Error) -> Failure {
    move |e| Failure::error(pg_error(e, stage))
}

/// Awaits `fut` unless the request is cancelled, its deadline passes or its consumer leaves.
///
/// A streamed result passes through here twice per row, and most of those futures are ready
/// at once (a row already read, room in the channel). Those are taken after the same three
/// conditions are checked directly (two atomic loads and a clock read), which costs a
/// fraction of arming a timer and two notifications. A stop still wins over a ready future,
/// as in the `select!` below, so a fast stream cannot starve a cancel or the deadline.
async fn guard<T>(job: &Job, fut: impl Future<Output = T>) -> Result<T, Stop> {
    if job.cancel.is_cancelled() {
        return Err(Stop::Cancelled);
    }
    if job.sender.is_closed() {
        return Err(Stop::ConsumerGone);
    }
    if Instant::now() >= job.deadline {
        return Err(Stop::Timeout);
    }
    let mut fut = pin!(fut);
    if let std::task::Poll::Ready(out) = futures::poll!(fut.as_mut()) {
        return Ok(out);
    }
    tokio::select! {
        biased;
        _ = job.cancel.cancelled() => Err(Stop::Cancelled),
        _ = job.sender.closed() => Err(Stop::ConsumerGone),
        _ = tokio::time::sleep_until(job.deadline) => Err(Stop::Timeout),
        r = fut => Ok(r),
    }
}

/// Owns the pooled connection for the whole request. Reports on `ready` once the first batch
/// has been fetched (so `query` returns every error found before the first row: connect,
/// prepare, parameters, bind, and execution errors such as a read-only violation), then
/// streams.
async fn produce(
    mut client: Object,
    job: Job,
    ready: oneshot::Sender<Result<(), BackendError>>,
    tls: Tls,
) {
    let token = client.cancel_token();
    let mut ready = Some(ready);
    let outcome = run(&mut client, &job, &mut ready).await;
    // `run` has returned, so its transaction is gone: a clean run ended with COMMIT or
    // ROLLBACK, a failed one has queued tokio-postgres' implicit ROLLBACK.
    let Err(failure) = outcome else {
        return;
    };
    let close = async {
        if failure.cancel_on_server {
            cancel_on_server(&token, &tls).await;
        }
        // `take` detaches the connection from the pool; dropping it closes the socket.
        drop(Object::take(client));
    };
    let report = async {
        let Some(error) = failure.error.clone() else {
            return;
        };
        match ready.take() {
            Some(ready) => {
                let _ = ready.send(Err(error));
            }
            None => {
                let _ = job.sender.send(Err(error)).await;
            }
        }
    };
    tokio::join!(close, report);
}

async fn cancel_on_server(token: &CancelToken, tls: &Tls) {
    let request = async {
        match tls {
            Tls::Disabled(config) => {
                let stream = guard::tcp(config).await.map_err(|e| e.to_string())?;
                token
                    .cancel_query_raw(stream, NoTls)
                    .await
                    .map_err(|e| describe(&e))
            }
            Tls::VerifyFull(connector) => token
                .cancel_query(connector.clone())
                .await
                .map_err(|e| describe(&e)),
        }
    };
    match tokio::time::timeout(CANCEL_REQUEST_TIMEOUT, request).await {
        Ok(Ok(())) => tracing::debug!("cancel request sent to the database server"),
        Ok(Err(e)) => tracing::warn!(
            error = %e,
            "cancel request failed; statement_timeout remains the server-side backstop"
        ),
        Err(_) => tracing::warn!(
            "cancel request timed out; statement_timeout remains the server-side backstop"
        ),
    }
}

async fn run(
    client: &mut Object,
    job: &Job,
    ready: &mut Option<oneshot::Sender<Result<(), BackendError>>>,
) -> Result<(), Failure> {
    let before = failed(Stage::BeforeRows);
    // Prepared outside the transaction (parsing needs none), once per connection.
    let statement = match guard(job, session::prepare(client, &job.plan.sql)).await? {
        Ok(statement) => statement,
        // The server refused to parse it (a typo, an unknown table): nothing began on the
        // connection, which stays in the pool.
        Err(e) if e.as_db_error().is_some() => {
            return refuse_keeping_connection(ready, pg_error(e, Stage::BeforeRows));
        }
        Err(e) => return Err(before(e)),
    };
    let expected = statement.params().len();
    if expected != job.plan.params.len() {
        return refuse_keeping_connection(
            ready,
            BackendError::Params(format!(
                "the statement has {expected} parameter placeholder(s) ($1..${expected}) but {} \
                 value(s) were given",
                job.plan.params.len()
            )),
        );
    }
    let read_only = job.read_only || job.plan.reads_only;
    let streamable = statement
        .columns()
        .iter()
        .all(|c| values::decodes_natively(c.type_()));
    if read_only && streamable {
        run_streamed(client, job, &statement, ready).await
    } else {
        run_in_portal(client, job, &statement, read_only, ready).await
    }
}

/// How many rows past `max_rows` a truncated streamed result may still read to reach its
/// end on the server, and for how long; past either, the statement is cancelled on the
/// server and the connection closed instead.
const DRAIN_ROWS: u64 = 10_000;
const DRAIN_TIME: Duration = Duration::from_millis(100);

/// A read-only request in one round trip: the transaction's start (with its timeout), the
/// statement (Bind/Execute of all rows) and the transaction's end with the session reset
/// are sent together, and rows are decoded as they arrive. Only for read-only transactions:
/// the `ROLLBACK` is queued before the outcome is known, which is right only when there is
/// nothing to commit. Only for columns decoded without the server's help (see
/// `values::decodes_natively`): nothing else may be sent while rows are still arriving.
async fn run_streamed(
    client: &Object,
    job: &Job,
    statement: &tokio_postgres::Statement,
    ready: &mut Option<oneshot::Sender<Result<(), BackendError>>>,
) -> Result<(), Failure> {
    let during = failed(Stage::Streaming);
    let begin_sql = session::begin_sql(true, job.own_timeout.as_deref());
    let params: Vec<JsonParam<'_>> = job.plan.params.iter().map(JsonParam).collect();
    let refs = params.iter().map(|p| p as &(dyn ToSql + Sync));

    // The driver sends a request when its future is first polled, in that order, and the
    // server answers in order: BEGIN, the statement's rows, then the end.
    let mut started = pin!(futures::future::join(
        client.batch_execute(&begin_sql),
        client.query_raw(statement, refs),
    ));
    let early = futures::poll!(started.as_mut());
    let mut end = pin!(client.simple_query(session::READ_ONLY_END));
    // Polled here only to send it; a future that already finished (the connection is
    // gone) must not be polled again, so its answer is kept.
    let end_early = futures::poll!(end.as_mut());
    let (begun, rows) = match early {
        std::task::Poll::Ready(both) => both,
        std::task::Poll::Pending => guard(job, started).await?,
    };
    let rows = match begun.and(rows) {
        Ok(rows) => rows,
        Err(e) => return settle_refused(client, job, ready, end, end_early, e).await,
    };

    send(job, RowEvent::Columns(columns_of(statement))).await?;

    let mut rows = pin!(rows);
    let mut fetched: u64 = 0;
    let mut truncated = false;
    while let Some(row) = guard(job, rows.next()).await? {
        let row = match row {
            Ok(row) => row,
            Err(e) => return settle_refused(client, job, ready, end, end_early, e).await,
        };
        report_started(ready)?;
        if fetched == job.plan.max_rows {
            truncated = true;
            break;
        }
        fetched += 1;
        let values = values::decode_row_natively(&row)?;
        send(job, RowEvent::Row(values)).await?;
    }
    report_started(ready)?;
    if truncated && !drained(job, rows.as_mut()).await? {
        // The statement is still producing rows nobody will read: the result stands, the
        // statement is cancelled on the server and the connection closed.
        let _ = job
            .sender
            .send(Ok(RowEvent::End {
                truncated,
                affected_rows: None,
            }))
            .await;
        return Err(Failure {
            error: None,
            cancel_on_server: true,
        });
    }
    if let Some(max) = job.plan.max_affected_rows
        && (fetched > max || truncated)
    {
        return Err(Failure::error(BackendError::AffectedRowsExceeded {
            affected: fetched,
            max,
        }));
    }
    let messages = match end_early {
        std::task::Poll::Ready(answer) => answer,
        std::task::Poll::Pending => guard(job, end).await?,
    }
    .map_err(&during)?;
    session::clear_leftovers(client, &messages)
        .await
        .map_err(|e| Failure::error(end_error(e)))?;
    let returns_rows = !statement.columns().is_empty();
    let affected_rows = if returns_rows {
        None
    } else {
        rows.rows_affected()
    };
    let _ = job
        .sender
        .send(Ok(RowEvent::End {
            truncated,
            affected_rows,
        }))
        .await;
    Ok(())
}

/// The server refused the streamed statement (a typo, a missing table, a bad parameter, a
/// failure while producing rows): its transaction is aborted, and the end already queued
/// behind it rolls back and resets the session. Once that answer is in, the connection is
/// as clean as after a success and stays in the pool; agents make mistakes often, and a new
/// server connection per mistake would cost more than the request. Anything that is not
/// the server's own refusal closes the connection as usual.
async fn settle_refused<F>(
    client: &Object,
    job: &Job,
    ready: &mut Option<oneshot::Sender<Result<(), BackendError>>>,
    end: std::pin::Pin<&mut F>,
    end_early: std::task::Poll<
        Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>,
    >,
    refusal: tokio_postgres::Error,
) -> Result<(), Failure>
where
    F: Future<Output = Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>>,
{
    // Until the first row, an error means the statement did not run.
    let stage = if ready.is_some() {
        Stage::BeforeRows
    } else {
        Stage::Streaming
    };
    if refusal.as_db_error().is_none() {
        return Err(failed(stage)(refusal));
    }
    let messages = match end_early {
        std::task::Poll::Ready(answer) => answer,
        std::task::Poll::Pending => guard(job, end).await?,
    };
    let error = pg_error(refusal, stage);
    let clean = match messages {
        Ok(messages) => session::clear_leftovers(client, &messages).await.is_ok(),
        Err(_) => false,
    };
    match ready.take() {
        Some(ready) => {
            let _ = ready.send(Err(error));
        }
        None => {
            let _ = job.sender.send(Err(error)).await;
        }
    }
    if clean {
        Ok(())
    } else {
        Err(Failure {
            error: None,
            cancel_on_server: false,
        })
    }
}

/// Reads and drops what a truncated result still sends, within [`DRAIN_ROWS`] and
/// [`DRAIN_TIME`]. `true` when the statement's answer ended.
async fn drained(
    job: &Job,
    mut rows: std::pin::Pin<&mut tokio_postgres::RowStream>,
) -> Result<bool, Failure> {
    let during = failed(Stage::Streaming);
    let drain = async {
        let mut dropped = 0u64;
        while let Some(row) = rows.next().await {
            row.map_err(&during)?;
            dropped += 1;
            if dropped > DRAIN_ROWS {
                return Ok(false);
            }
        }
        Ok(true)
    };
    match guard(job, tokio::time::timeout(DRAIN_TIME, drain)).await? {
        Ok(ended) => ended,
        Err(_) => Ok(false),
    }
}

/// Answers the waiting `query` with a refusal found before anything was sent for the
/// statement's execution; the connection is clean and goes back to the pool.
fn refuse_keeping_connection(
    ready: &mut Option<oneshot::Sender<Result<(), BackendError>>>,
    error: BackendError,
) -> Result<(), Failure> {
    if let Some(ready) = ready.take() {
        let _ = ready.send(Err(error));
    }
    Ok(())
}

/// Tells the waiting `query` that the statement started without error (once).
fn report_started(
    ready: &mut Option<oneshot::Sender<Result<(), BackendError>>>,
) -> Result<(), Failure> {
    if let Some(ready) = ready.take()
        && ready.send(Ok(())).is_err()
    {
        return Err(Stop::ConsumerGone.into());
    }
    Ok(())
}

fn end_error(e: session::EndError) -> BackendError {
    match e {
        session::EndError::Database(e) => pg_error(e, Stage::Streaming),
        session::EndError::Unexpected => BackendError::Internal(
            "the session reset after the statement answered unexpectedly".into(),
        ),
    }
}

/// Everything else (writes, and columns the server must render): the statement runs in a
/// portal fetched in growing batches, so decoding can ask the server for a value's text
/// between batches, and a write commits only once its row count is checked.
async fn run_in_portal(
    client: &mut Object,
    job: &Job,
    statement: &tokio_postgres::Statement,
    read_only: bool,
    ready: &mut Option<oneshot::Sender<Result<(), BackendError>>>,
) -> Result<(), Failure> {
    let before = failed(Stage::BeforeRows);
    let during = failed(Stage::Streaming);
    let params: Vec<JsonParam<'_>> = job.plan.params.iter().map(JsonParam).collect();
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let pg: &mut tokio_postgres::Client = client;
    let txn = if read_only {
        guard(job, pg.build_transaction().read_only(true).start()).await?
    } else {
        guard(job, pg.transaction()).await?
    }
    .map_err(&before)?;
    // Sent together (the driver pipelines concurrent requests): one round trip.
    let set_timeout = async {
        match &job.own_timeout {
            Some(set) => txn.batch_execute(set).await,
            None => Ok(()),
        }
    };
    let (timeout_set, portal) = guard(
        job,
        futures::future::join(set_timeout, txn.bind(statement, &refs)),
    )
    .await?;
    timeout_set.map_err(&before)?;
    let portal = portal.map_err(&before)?;

    let returns_rows = !statement.columns().is_empty();
    send(job, RowEvent::Columns(columns_of(statement))).await?;

    let limit = job.plan.max_rows.saturating_add(1);
    let mut fetched: u64 = 0;
    let mut batch = FIRST_BATCH;
    let mut fallback = FallbackTexts::default();
    let affected = loop {
        let want = batch.min(limit - fetched);
        let want_i32 = i32::try_from(want).unwrap_or(i32::MAX);
        // The whole batch is read before decoding: decoding may run fallback queries on this
        // connection, whose answers queue behind any unread rows.
        let mut rows = Vec::new();
        let affected = {
            let stream = guard(job, txn.query_portal_raw(&portal, want_i32))
                .await?
                .map_err(&during)?;
            let mut stream = pin!(stream);
            while let Some(row) = guard(job, stream.next()).await? {
                rows.push(row.map_err(&during)?);
            }
            stream.rows_affected()
        };
        // The statement has run up to its first rows (or to completion) without error:
        // from here on, errors travel in the stream.
        report_started(ready)?;
        let got = rows.len() as u64;
        for row in rows {
            fetched += 1;
            if fetched > job.plan.max_rows {
                break;
            }
            let values = decode_row(&txn, job, &row, &mut fallback).await?;
            send(job, RowEvent::Row(values)).await?;
        }
        if got < want || fetched >= limit {
            break affected;
        }
        batch = (batch * 2).min(MAX_BATCH);
    };
    let truncated = fetched > job.plan.max_rows;
    drop(portal);
    drop(fallback);

    // A reviewer's affected-rows guard: a write beyond it never commits. Row-returning
    // writes (RETURNING) count their rows; a truncated result is over any guard.
    if let Some(max) = job.plan.max_affected_rows {
        let count = if returns_rows {
            fetched
        } else {
            affected.unwrap_or(0)
        };
        if count > max || truncated {
            guard(job, txn.rollback()).await?.map_err(&during)?;
            return Err(Failure::error(BackendError::AffectedRowsExceeded {
                affected: count,
                max,
            }));
        }
    }
    if read_only {
        guard(job, txn.rollback()).await?.map_err(&during)?;
    } else {
        guard(job, txn.commit()).await?.map_err(&during)?;
    }
    guard(job, session::reset(client))
        .await?
        .map_err(|e| Failure::error(end_error(e)))?;
    // CommandComplete carries a row count for writes; for a row-returning statement it only
    // counts the last batch, so it is not reported.
    let affected_rows = if returns_rows { None } else { affected };
    // The transaction is finished: a consumer gone at this point costs nothing, and the
    // connection is clean for the pool either way.
    let _ = job
        .sender
        .send(Ok(RowEvent::End {
            truncated,
            affected_rows,
        }))
        .await;
    Ok(())
}

async fn send(job: &Job, event: RowEvent) -> Result<(), Failure> {
    if guard(job, job.sender.send(Ok(event))).await? {
        Ok(())
    } else {
        Err(Stop::ConsumerGone.into())
    }
}

/// The result header the agent sees: names and type names.
fn columns_of(statement: &tokio_postgres::Statement) -> Vec<Column> {
    statement
        .columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_string(),
            type_name: type_display_name(c.type_()),
        })
        .collect()
}

/// `int4`, `text`, ... as the wire names them; arrays as `int4[]` rather than `_int4`.
fn type_display_name(ty: &Type) -> String {
    match ty.kind() {
        Kind::Array(element) => format!("{}[]", element.name()),
        _ => ty.name().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timeout_stays_in_int4_range() {
        assert_eq!(server_timeout_ms(Duration::from_millis(500)), 1_500);
        assert_eq!(server_timeout_ms(Duration::MAX), i32::MAX as u64);
    }
}
