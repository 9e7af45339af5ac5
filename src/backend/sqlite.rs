//! Embedded SQLite target (the zero-setup demo, and local files).
//!
//! Invariants beyond the module contract in `backend/mod.rs`:
//! - Each request opens its own handle (cheap for SQLite), so no session state (temp
//!   tables, PRAGMAs, ATTACHed databases) can pass between requests. `pool_size` bounds the
//!   number of handles open at once.
//! - A `read_only` connection opens the file with `SQLITE_OPEN_READ_ONLY`: the library, not
//!   Airlock, refuses writes.
//! - rusqlite's `prepare` refuses a second statement in the text, so exactly one statement
//!   runs.
//! - Cancellation uses `sqlite3_interrupt` from a watcher task; the blocking producer also
//!   stops as soon as the consumer is gone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{
    BackendContext, BackendError, Column, ColumnInfo, DatabaseError, ForeignKey, QueryPlan,
    RowEvent, RowSender, RowStream, SqlBackend, TableInfo,
};
use crate::config::{ConnectionConfig, ConnectionKind, SqliteConfig};

pub struct SqliteBackend {
    path: PathBuf,
    read_only: bool,
    slots: Arc<Semaphore>,
    pool_wait: Duration,
    store_identity: crate::store::StoreIdentity,
}

impl SqliteBackend {
    pub fn new(
        config: &ConnectionConfig,
        file: &SqliteConfig,
        ctx: &BackendContext,
    ) -> Result<SqliteBackend, String> {
        let path = file.path.clone();
        let path = if path.is_absolute() {
            path
        } else {
            ctx.data_dir.join(path)
        };
        Ok(SqliteBackend {
            path,
            read_only: file.read_only,
            slots: Arc::new(Semaphore::new(config.limits.pool_size)),
            pool_wait: config.limits.pool_wait(),
            store_identity: ctx.store_identity.clone(),
        })
    }

    fn open(&self) -> Result<Connection, BackendError> {
        let flags = if self.read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            // Never create the file: a typo in `path` must not silently yield an empty db.
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn = Connection::open_with_flags(&self.path, flags).map_err(|e| {
            BackendError::Unavailable {
                detail: format!("cannot open {}: {e}", self.path.display()),
                retry_after_secs: 5,
            }
        })?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| BackendError::Internal(e.to_string()))?;
        Ok(conn)
    }

    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, BackendError> {
        match tokio::time::timeout(self.pool_wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(BackendError::Unavailable {
                detail: "all connections of this target are busy".into(),
                retry_after_secs: 1,
            }),
        }
    }
}

fn db_error(e: rusqlite::Error) -> BackendError {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg) => {
            let code = match f.code {
                rusqlite::ErrorCode::ConstraintViolation => "SQLITE_CONSTRAINT",
                rusqlite::ErrorCode::ReadOnly => "SQLITE_READONLY",
                rusqlite::ErrorCode::DatabaseBusy => "SQLITE_BUSY",
                rusqlite::ErrorCode::DatabaseLocked => "SQLITE_LOCKED",
                rusqlite::ErrorCode::TypeMismatch => "SQLITE_MISMATCH",
                rusqlite::ErrorCode::TooBig => "SQLITE_TOOBIG",
                rusqlite::ErrorCode::OperationInterrupted => "SQLITE_INTERRUPT",
                rusqlite::ErrorCode::PermissionDenied => "SQLITE_AUTH",
                _ => "SQLITE_ERROR",
            };
            BackendError::Database(DatabaseError {
                sqlstate: code.into(),
                message: msg.clone().unwrap_or_else(|| f.to_string()),
                ..DatabaseError::default()
            })
        }
        rusqlite::Error::SqlInputError {
            error, msg, offset, ..
        } => BackendError::Database(DatabaseError {
            sqlstate: "SQLITE_ERROR".into(),
            message: msg.clone(),
            position: u32::try_from(*offset + 1).ok(),
            detail: Some(error.to_string()),
            ..DatabaseError::default()
        }),
        rusqlite::Error::MultipleStatement => {
            BackendError::Params("exactly one statement per request".into())
        }
        _ => BackendError::Internal(e.to_string()),
    }
}

fn to_sql_value(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Null => V::Null,
        Value::Bool(b) => V::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => V::Integer(i),
            None => V::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => V::Text(s.clone()),
        other => V::Text(other.to_string()),
    }
}

/// SQLite values → JSON. Integers are 64-bit, so they are strings (like PostgreSQL int8).
fn to_json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::String(i.to_string()),
        ValueRef::Real(f) if f.is_finite() => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        ValueRef::Real(f) => Value::String(f.to_string()),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Value::String(s.to_string()),
            // Not valid UTF-8: give the bytes rather than a lossy guess, in a shape that
            // cannot be mistaken for text (as the MySQL backend does).
            Err(_) => serde_json::json!({
                "base64": base64::engine::general_purpose::STANDARD.encode(t)
            }),
        },
        ValueRef::Blob(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

/// Runs on a blocking thread; returns when done, interrupted or the consumer is gone.
fn produce(
    conn: Connection,
    plan: QueryPlan,
    read_only: bool,
    tx: &RowSender,
) -> Result<(), BackendError> {
    conn.execute_batch("BEGIN").map_err(db_error)?;
    let result = (|| {
        let mut stmt = conn.prepare(&plan.sql).map_err(db_error)?;
        let expected = stmt.parameter_count();
        if expected != plan.params.len() {
            return Err(BackendError::Params(format!(
                "the statement takes {expected} parameter(s), {} given",
                plan.params.len()
            )));
        }
        let columns: Vec<Column> = stmt
            .columns()
            .map(|c| Column {
                name: c.name().to_string(),
                type_name: c.decl_type().unwrap_or("any").to_ascii_lowercase(),
            })
            .collect();
        let params: Vec<rusqlite::types::Value> = plan.params.iter().map(to_sql_value).collect();
        let width = columns.len();
        if !tx.blocking_send(Ok(RowEvent::Columns(columns))) {
            return Err(BackendError::Cancelled);
        }
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(db_error)?;
        let mut sent: u64 = 0;
        let mut truncated = false;
        while let Some(row) = rows.next().map_err(db_error)? {
            if sent == plan.max_rows {
                truncated = true;
                break;
            }
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(to_json(row.get_ref(i).map_err(db_error)?));
            }
            if !tx.blocking_send(Ok(RowEvent::Row(values))) {
                return Err(BackendError::Cancelled);
            }
            sent += 1;
        }
        drop(rows);
        let affected = conn.changes();
        Ok((truncated, affected))
    })();
    match result {
        Ok((_, affected)) if plan.max_affected_rows.is_some_and(|max| affected > max) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(BackendError::AffectedRowsExceeded {
                affected,
                max: plan.max_affected_rows.unwrap_or_default(),
            })
        }
        Ok((truncated, affected)) => {
            let end = if read_only { "ROLLBACK" } else { "COMMIT" };
            conn.execute_batch(end).map_err(db_error)?;
            tx.blocking_send(Ok(RowEvent::End {
                truncated,
                affected_rows: (affected > 0).then_some(affected),
            }));
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[async_trait::async_trait]
impl SqlBackend for SqliteBackend {
    async fn verify(&self) -> Result<(), BackendError> {
        let canonical = self
            .path
            .canonicalize()
            .map_err(|e| BackendError::Unavailable {
                detail: format!("{}: {e}", self.path.display()),
                retry_after_secs: 5,
            })?;
        if self.store_identity.is_sqlite_target(&canonical) {
            return Err(BackendError::Internal(format!(
                "{} is Airlock's own store; a connection may not point at it",
                self.path.display()
            )));
        }
        let conn = self.open()?;
        conn.query_row("SELECT 1", [], |_| Ok(())).map_err(db_error)
    }

    async fn query(
        &self,
        plan: QueryPlan,
        cancel: CancellationToken,
    ) -> Result<RowStream, BackendError> {
        let permit = self.slot().await?;
        let conn = self.open()?;
        let interrupt = conn.get_interrupt_handle();
        let (tx, stream) = RowStream::channel();
        let deadline = tokio::time::Instant::now() + plan.timeout;
        let finished = CancellationToken::new();
        let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));

        // Watcher: interrupts the statement on timeout, cancellation or a vanished consumer.
        {
            let (tx, finished, cancel, timed_out) = (
                tx.clone(),
                finished.clone(),
                cancel.clone(),
                timed_out.clone(),
            );
            tokio::spawn(async move {
                tokio::select! {
                    _ = finished.cancelled() => return,
                    _ = cancel.cancelled() => {}
                    _ = tx.closed() => {}
                    _ = tokio::time::sleep_until(deadline) => {
                        timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                interrupt.interrupt();
            });
        }
        let read_only = self.read_only;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let result = produce(conn, plan, read_only, &tx);
            finished.cancel();
            if let Err(e) = result {
                let interrupted =
                    matches!(&e, BackendError::Database(d) if d.sqlstate == "SQLITE_INTERRUPT");
                let e = if timed_out.load(std::sync::atomic::Ordering::SeqCst) {
                    BackendError::Timeout
                } else if interrupted {
                    BackendError::Cancelled
                } else {
                    e
                };
                tx.blocking_send(Err(e));
            }
        });
        Ok(stream)
    }

    async fn schema(&self) -> Result<Vec<TableInfo>, BackendError> {
        let conn = self.open()?;
        tokio::task::spawn_blocking(move || {
            let mut tables = Vec::new();
            let mut stmt = conn
                .prepare(
                    "SELECT name, type FROM sqlite_schema
                     WHERE type IN ('table','view') AND name NOT LIKE 'sqlite_%' ORDER BY name",
                )
                .map_err(db_error)?;
            let names: Vec<(String, String)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db_error)?
                .collect::<Result<_, _>>()
                .map_err(db_error)?;
            for (name, kind) in &names {
                let mut cols = conn
                    .prepare(
                        "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1) ORDER BY cid",
                    )
                    .map_err(db_error)?;
                let rows: Vec<(ColumnInfo, i64)> = cols
                    .query_map([name], |r| {
                        let column = ColumnInfo {
                            name: r.get(0)?,
                            type_name: r.get::<_, String>(1)?.to_ascii_lowercase(),
                            nullable: r.get::<_, i64>(2)? == 0,
                            // SQLite keeps no comments.
                            ..ColumnInfo::default()
                        };
                        Ok((column, r.get(3)?))
                    })
                    .map_err(db_error)?
                    .collect::<Result<_, _>>()
                    .map_err(db_error)?;
                let primary_key = key_order(&rows);
                let foreign_keys = foreign_keys(&conn, &names, name)?;
                tables.push(TableInfo {
                    schema: None,
                    name: name.clone(),
                    kind: kind.clone(),
                    primary_key,
                    foreign_keys,
                    columns: rows.into_iter().map(|(c, _)| c).collect(),
                    ..TableInfo::default()
                });
            }
            Ok(tables)
        })
        .await
        .map_err(|e| BackendError::Internal(e.to_string()))?
    }

    fn kind(&self) -> ConnectionKind {
        ConnectionKind::Sqlite
    }
}

/// Primary key column names in key order, from `pragma_table_info` rows and their `pk`
/// (1-based position in the key, 0 for a column outside it).
fn key_order(rows: &[(ColumnInfo, i64)]) -> Vec<String> {
    let mut key: Vec<(i64, &str)> = rows
        .iter()
        .filter(|(_, pk)| *pk > 0)
        .map(|(c, pk)| (*pk, c.name.as_str()))
        .collect();
    key.sort_unstable();
    key.into_iter().map(|(_, n)| n.to_string()).collect()
}

/// A table's foreign keys from `pragma_foreign_key_list` (one row per column, `seq` ordering
/// the key's columns). The pragma gives the parent's names as the declaration wrote them;
/// SQLite matches them case-insensitively, so they are replaced by the catalog's spelling
/// (`tables`, the parent's columns). A key declared without parent columns
/// (`REFERENCES customers`) references the parent's primary key.
fn foreign_keys(
    conn: &rusqlite::Connection,
    tables: &[(String, String)],
    table: &str,
) -> Result<Vec<ForeignKey>, BackendError> {
    let mut stmt = conn
        .prepare(
            "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
        )
        .map_err(db_error)?;
    let rows: Vec<(i64, String, String, Option<String>)> = stmt
        .query_map([table], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .map_err(db_error)?
        .collect::<Result<_, _>>()
        .map_err(db_error)?;
    let mut keys: Vec<(i64, ForeignKey)> = Vec::new();
    for (id, parent, from, to) in rows {
        match keys.last_mut() {
            Some((last, fk)) if *last == id => {
                fk.columns.push(from);
                fk.referenced_columns.extend(to);
            }
            _ => keys.push((
                id,
                ForeignKey {
                    name: None,
                    columns: vec![from],
                    referenced_schema: None,
                    referenced_table: parent,
                    referenced_columns: to.into_iter().collect(),
                },
            )),
        }
    }
    let mut out = Vec::with_capacity(keys.len());
    for (_, mut fk) in keys {
        if let Some((parent, _)) = tables
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&fk.referenced_table))
        {
            fk.referenced_table = parent.clone();
        }
        let mut stmt = conn
            .prepare("SELECT name, pk FROM pragma_table_info(?1) ORDER BY cid")
            .map_err(db_error)?;
        let parent: Vec<(String, i64)> = stmt
            .query_map([&fk.referenced_table], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db_error)?
            .collect::<Result<_, _>>()
            .map_err(db_error)?;
        if fk.referenced_columns.is_empty() {
            let mut key: Vec<&(String, i64)> = parent.iter().filter(|(_, pk)| *pk > 0).collect();
            key.sort_unstable_by_key(|(_, pk)| *pk);
            fk.referenced_columns = key.into_iter().map(|(n, _)| n.clone()).collect();
        } else {
            for column in &mut fk.referenced_columns {
                if let Some((n, _)) = parent.iter().find(|(n, _)| n.eq_ignore_ascii_case(column)) {
                    *column = n.clone();
                }
            }
        }
        out.push(fk);
    }
    Ok(out)
}
