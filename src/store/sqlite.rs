//! Embedded SQLite store: one file, WAL, `synchronous=FULL` (a commit survives power loss).
//!
//! Invariants:
//! - Writes go through one connection on blocking threads; `busy_timeout` bounds how long
//!   a write waits for a lock held elsewhere, after which the store reports `Unavailable`
//!   and the request fails closed.
//! - Reads use their own connection so an auditor's query never holds up a commit.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{AuditQuery, Store, StoreError, StoreIdentity};
use crate::audit::AuditEvent;
use crate::config::StoreConfig;

const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../../migrations/sqlite/0001_audit.sql"))];

pub struct SqliteStore {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
}

fn open_conn(path: &Path, busy: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Fixed-width UTC timestamps sort correctly as text.
pub(crate) fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn classify(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy)
        | Some(rusqlite::ErrorCode::DatabaseLocked)
        | Some(rusqlite::ErrorCode::CannotOpen)
        | Some(rusqlite::ErrorCode::DiskFull)
        | Some(rusqlite::ErrorCode::SystemIoFailure)
        | Some(rusqlite::ErrorCode::ReadOnly) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Other(e.to_string()),
    }
}

impl SqliteStore {
    pub fn open(path: &Path, config: &StoreConfig) -> Result<SqliteStore, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let busy = Duration::from_millis(config.busy_timeout_ms);
        let mut writer =
            open_conn(path, busy).map_err(|e| format!("store {}: {e}", path.display()))?;
        migrate(&mut writer).map_err(|e| format!("store {} migration: {e}", path.display()))?;
        let reader = open_conn(path, busy).map_err(|e| format!("store {}: {e}", path.display()))?;
        let path = path
            .canonicalize()
            .map_err(|e| format!("store {}: {e}", path.display()))?;
        Ok(SqliteStore {
            path,
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    async fn with<T: Send + 'static>(
        conn: &Arc<Mutex<Connection>>,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Other("store connection poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Other(format!("store task failed: {e}")))?
    }
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    )?;
    for (version, sql) in MIGRATIONS {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done: Option<i64> = tx
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()?;
        if done.is_none() {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, ts(&Utc::now())],
            )?;
        }
        tx.commit()?;
    }
    Ok(())
}

fn decode(seq: i64, record: &str) -> Result<AuditEvent, StoreError> {
    let mut e: AuditEvent = serde_json::from_str(record)
        .map_err(|e| StoreError::Other(format!("unreadable audit record {seq}: {e}")))?;
    e.seq = Some(seq);
    Ok(e)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let rows: Vec<_> = events
            .iter()
            .map(|e| {
                serde_json::to_string(e)
                    .map(|json| {
                        (
                            e.id.clone(),
                            ts(&e.time),
                            e.phase.as_str(),
                            e.execution_id.clone(),
                            e.principal.as_ref().map(|p| p.issuer.clone()),
                            e.principal.as_ref().map(|p| p.subject.clone()),
                            e.connection.clone(),
                            e.outcome.map(|o| o.as_str()),
                            json,
                        )
                    })
                    .map_err(|e| StoreError::Other(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Self::with(&self.writer, move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(classify)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO audit_events (id, time, phase, execution_id, issuer, subject, connection, outcome, record)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING",
                    )
                    .map_err(classify)?;
                for r in &rows {
                    stmt.execute(params![r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8])
                        .map_err(classify)?;
                }
            }
            tx.commit().map_err(classify)
        })
        .await
    }

    async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let q = q.clone();
        Self::with(&self.reader, move |conn| {
            let mut sql = String::from("SELECT seq, record FROM audit_events WHERE 1=1");
            let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
            let mut add = |clause: &str, v: Box<dyn rusqlite::ToSql>| {
                args.push(v);
                sql.push_str(&format!(" AND {clause} ?{}", args.len()));
            };
            if let Some(v) = q.connection {
                add("connection =", Box::new(v));
            }
            if let Some(v) = q.issuer {
                add("issuer =", Box::new(v));
            }
            if let Some(v) = q.subject {
                add("subject =", Box::new(v));
            }
            if let Some(v) = q.outcome {
                add("outcome =", Box::new(v));
            }
            if let Some(v) = q.execution_id {
                add("execution_id =", Box::new(v));
            }
            if let Some(v) = q.since {
                add("time >=", Box::new(ts(&v)));
            }
            if let Some(v) = q.until {
                add("time <", Box::new(ts(&v)));
            }
            if let Some(v) = q.before_seq {
                add("seq <", Box::new(v));
            }
            sql.push_str(&format!(" ORDER BY seq DESC LIMIT {}", q.limit));
            let mut stmt = conn.prepare(&sql).map_err(classify)?;
            let rows = stmt
                .query_map(
                    rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())),
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                )
                .map_err(classify)?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, record) = row.map_err(classify)?;
                out.push(decode(seq, &record)?);
            }
            Ok(out)
        })
        .await
    }

    async fn unfinished(
        &self,
        started_before: DateTime<Utc>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let cutoff = ts(&started_before);
        Self::with(&self.reader, move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT b.seq, b.record FROM audit_events b
                     WHERE b.phase = 'begin' AND b.time < ?1
                       AND NOT EXISTS (SELECT 1 FROM audit_events e
                                       WHERE e.execution_id = b.execution_id AND e.phase = 'end')
                     ORDER BY b.seq LIMIT 10000",
                )
                .map_err(classify)?;
            let rows = stmt
                .query_map([cutoff], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(classify)?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, record) = row.map_err(classify)?;
                out.push(decode(seq, &record)?);
            }
            Ok(out)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Self::with(&self.reader, |conn| {
            conn.query_row("SELECT 1", [], |_| Ok(())).map_err(classify)
        })
        .await
    }

    fn identity(&self) -> StoreIdentity {
        StoreIdentity::Sqlite(self.path.clone())
    }
}
