//! Embedded SQLite store: one file, WAL, `synchronous=FULL` (a commit survives power loss).
//!
//! Invariants:
//! - Writes go through one connection on blocking threads; `busy_timeout` bounds how long
//!   a write waits for a lock held elsewhere, after which the store reports `Unavailable`
//!   and the request fails closed.
//! - Reads use their own connection so an auditor's query never holds up a commit.
//! - Audit events are chained ([`crate::audit::chain`]): a batch reads the chain head,
//!   inserts each new event at the head's `seq` plus one with its link, and moves the head,
//!   all in the one `IMMEDIATE` transaction that holds the write lock.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    AuditQuery, ConsoleLoginRecord, ConsoleSessionRecord, KeptResult, ReviewLookup, SessionLine,
    SessionQuery, SessionRecord, Store, StoreError, StoreIdentity, TicketRecord,
};
use crate::audit::AuditEvent;
use crate::audit::chain::{ChainHead, ChainRow};
use crate::config::StoreConfig;
use crate::identity::Principal;
use crate::review::{ReviewRecord, ReviewStatus};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_audit.sql")),
    (2, include_str!("../../migrations/sqlite/0002_reviews.sql")),
    (3, include_str!("../../migrations/sqlite/0003_sessions.sql")),
    (4, include_str!("../../migrations/sqlite/0004_tickets.sql")),
    (
        CHAIN_MIGRATION,
        include_str!("../../migrations/sqlite/0005_audit_chain.sql"),
    ),
    (6, include_str!("../../migrations/sqlite/0006_results.sql")),
    (7, include_str!("../../migrations/sqlite/0007_console.sql")),
];
/// The migration that adds the audit hash chain; rows already stored are chained with it.
const CHAIN_MIGRATION: i64 = 5;

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

fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Other(format!("stored timestamp `{s}`: {e}")))
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
        if super::may_block() {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Other("store connection poisoned".into()))?;
            return f(&mut guard);
        }
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
            if *version == CHAIN_MIGRATION {
                chain_existing(&tx)?;
            }
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, ts(&Utc::now())],
            )?;
        }
        tx.commit()?;
    }
    Ok(())
}

/// Chains the audit rows stored before the chain existed, in `seq` order from the genesis,
/// a page at a time, and records the head. Deterministic: the same rows give the same chain.
fn chain_existing(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let mut head = ChainHead::genesis();
    let mut page =
        tx.prepare("SELECT seq, record FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
    let mut link =
        tx.prepare("UPDATE audit_events SET prev_hash = ?1, hash = ?2 WHERE seq = ?3")?;
    loop {
        let rows = page
            .query_map(
                params![head.seq, crate::audit::chain::VERIFY_PAGE as i64],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (seq, record) in &rows {
            let hash = crate::audit::chain::link_hash(&head.hash, *seq, record);
            link.execute(params![head.hash, hash, seq])?;
            head = ChainHead { seq: *seq, hash };
        }
        if rows.len() < crate::audit::chain::VERIFY_PAGE {
            break;
        }
    }
    tx.execute(
        "INSERT INTO audit_chain_head (id, seq, hash) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        params![head.seq, head.hash],
    )?;
    Ok(())
}

/// The chain head as recorded; `None` if its row is gone.
fn read_head(conn: &Connection) -> Result<Option<ChainHead>, StoreError> {
    // Cached: every group commit reads the head.
    let mut stmt = conn
        .prepare_cached("SELECT seq, hash FROM audit_chain_head WHERE id = 1")
        .map_err(classify)?;
    stmt.query_row([], |r| {
        Ok(ChainHead {
            seq: r.get(0)?,
            hash: r.get(1)?,
        })
    })
    .optional()
    .map_err(classify)
}

fn decode_session(record: &str) -> Result<SessionRecord, StoreError> {
    serde_json::from_str(record).map_err(|e| StoreError::Other(format!("unreadable session: {e}")))
}

fn decode_review(record: &str) -> Result<ReviewRecord, StoreError> {
    serde_json::from_str(record).map_err(|e| StoreError::Other(format!("unreadable review: {e}")))
}

fn encode_review(r: &ReviewRecord) -> Result<String, StoreError> {
    serde_json::to_string(r).map_err(|e| StoreError::Other(e.to_string()))
}

/// Audit events from rows of `(seq, record)`.
fn decode_events(mut rows: rusqlite::Rows<'_>) -> Result<Vec<AuditEvent>, StoreError> {
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(classify)? {
        let seq: i64 = row.get(0).map_err(classify)?;
        let record: String = row.get(1).map_err(classify)?;
        out.push(decode(seq, &record)?);
    }
    Ok(out)
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
            let start = read_head(&tx)?.ok_or_else(|| {
                StoreError::Other(
                    "the audit chain head is missing: the store was altered (run `airlock audit verify`)"
                        .into(),
                )
            })?;
            let mut head = start.clone();
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO audit_events (seq, id, time, phase, execution_id, issuer, subject, connection, outcome, record, prev_hash, hash)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT (id) DO NOTHING",
                    )
                    .map_err(classify)?;
                for r in &rows {
                    let next = head.extend(&r.8);
                    let n = stmt
                        .execute(params![
                            next.seq, r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, head.hash,
                            next.hash
                        ])
                        .map_err(classify)?;
                    // 0: a replayed event, already a link of the chain.
                    if n == 1 {
                        head = next;
                    }
                }
            }
            if head != start {
                tx.prepare_cached("UPDATE audit_chain_head SET seq = ?1, hash = ?2 WHERE id = 1")
                    .and_then(|mut stmt| stmt.execute(params![head.seq, head.hash]))
                    .map_err(classify)?;
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
                .query(rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())))
                .map_err(classify)?;
            decode_events(rows)
        })
        .await
    }

    async fn audit_chain_head(&self) -> Result<Option<ChainHead>, StoreError> {
        Self::with(&self.reader, |conn| read_head(conn)).await
    }

    async fn audit_chain_page(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ChainRow>, StoreError> {
        Self::with(&self.reader, move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, id, prev_hash, hash, record FROM audit_events
                     WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(classify)?;
            let rows = stmt
                .query_map(params![after, limit as i64], |r| {
                    Ok(ChainRow {
                        seq: r.get(0)?,
                        id: r.get(1)?,
                        prev_hash: r.get(2)?,
                        hash: r.get(3)?,
                        record: r.get(4)?,
                    })
                })
                .map_err(classify)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(classify)
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
                                       WHERE e.execution_id = b.execution_id AND e.phase = 'end' AND e.seq > b.seq)
                     ORDER BY b.seq LIMIT 10000",
                )
                .map_err(classify)?;
            let rows = stmt.query([cutoff]).map_err(classify)?;
            decode_events(rows)
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

    async fn insert_review(&self, r: &ReviewRecord) -> Result<bool, StoreError> {
        let json = encode_review(r)?;
        let row = (
            r.id.clone(),
            r.execution_id.clone(),
            r.status.as_str(),
            r.requester_key(),
            r.idempotency_key.clone(),
            ts(&r.created_at),
            ts(&r.expires_at),
            r.version,
        );
        Self::with(&self.writer, move |conn| {
            let n = conn
                .execute(
                    "INSERT INTO reviews (id, execution_id, status, requester, idempotency_key, created_at, expires_at, version, record)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (requester, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
                    params![row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, json],
                )
                .map_err(classify)?;
            Ok(n == 1)
        })
        .await
    }

    async fn get_review(&self, by: ReviewLookup<'_>) -> Result<Option<ReviewRecord>, StoreError> {
        let (sql, a, b): (&str, String, Option<String>) = match by {
            ReviewLookup::Id(id) => ("SELECT record FROM reviews WHERE id = ?1", id.into(), None),
            ReviewLookup::Execution(id) => (
                "SELECT record FROM reviews WHERE execution_id = ?1",
                id.into(),
                None,
            ),
            ReviewLookup::Idempotency { requester, key } => (
                "SELECT record FROM reviews WHERE requester = ?1 AND idempotency_key = ?2",
                requester.into(),
                Some(key.into()),
            ),
        };
        // The writer connection: a waiter must see a decision the moment it is committed.
        Self::with(&self.writer, move |conn| {
            let record: Option<String> = match b {
                None => conn.query_row(sql, [a], |r| r.get(0)).optional(),
                Some(b) => conn.query_row(sql, [a, b], |r| r.get(0)).optional(),
            }
            .map_err(classify)?;
            record.as_deref().map(decode_review).transpose()
        })
        .await
    }

    async fn list_reviews(
        &self,
        status: Option<ReviewStatus>,
        limit: usize,
    ) -> Result<Vec<ReviewRecord>, StoreError> {
        let status = status.map(|s| s.as_str().to_string());
        Self::with(&self.reader, move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT record FROM reviews WHERE (?1 IS NULL OR status = ?1)
                     ORDER BY (status = 'pending') DESC, created_at DESC LIMIT ?2",
                )
                .map_err(classify)?;
            let rows = stmt
                .query_map(params![status, limit as i64], |r| r.get::<_, String>(0))
                .map_err(classify)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(decode_review(&row.map_err(classify)?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn swap_review(&self, r: &ReviewRecord, expected: i64) -> Result<bool, StoreError> {
        let mut next = r.clone();
        next.version = expected + 1;
        let json = encode_review(&next)?;
        let (id, status) = (next.id.clone(), next.status.as_str());
        Self::with(&self.writer, move |conn| {
            let n = conn
                .execute(
                    "UPDATE reviews SET record = ?1, status = ?2, version = ?3 WHERE id = ?4 AND version = ?5",
                    params![json, status, expected + 1, id, expected],
                )
                .map_err(classify)?;
            Ok(n == 1)
        })
        .await
    }

    async fn put_console_session(&self, c: &ConsoleSessionRecord) -> Result<(), StoreError> {
        let principal =
            serde_json::to_string(&c.principal).map_err(|e| StoreError::Other(e.to_string()))?;
        let row = (
            c.digest.clone(),
            principal,
            c.csrf.clone(),
            ts(&c.created_at),
            ts(&c.last_seen_at),
            ts(&c.expires_at),
            ts(&Utc::now()),
        );
        Self::with(&self.writer, move |conn| {
            conn.execute(
                "DELETE FROM console_sessions WHERE expires_at <= ?1",
                params![row.6],
            )
            .map_err(classify)?;
            conn.execute(
                "INSERT INTO console_sessions (digest, principal, csrf, created_at, last_seen_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![row.0, row.1, row.2, row.3, row.4, row.5],
            )
            .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn console_session(
        &self,
        digest: &str,
    ) -> Result<Option<ConsoleSessionRecord>, StoreError> {
        let digest = digest.to_string();
        let row = Self::with(&self.reader, move |conn| {
            conn.query_row(
                "SELECT digest, principal, csrf, created_at, last_seen_at, expires_at FROM console_sessions WHERE digest = ?1",
                params![digest],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(classify)
        })
        .await?;
        let Some((digest, principal, csrf, created, seen, expires)) = row else {
            return Ok(None);
        };
        Ok(Some(ConsoleSessionRecord {
            digest,
            principal: serde_json::from_str(&principal)
                .map_err(|e| StoreError::Other(e.to_string()))?,
            csrf,
            created_at: parse_ts(&created)?,
            last_seen_at: parse_ts(&seen)?,
            expires_at: parse_ts(&expires)?,
        }))
    }

    async fn touch_console_session(
        &self,
        digest: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (digest, at) = (digest.to_string(), ts(&at));
        Self::with(&self.writer, move |conn| {
            conn.execute(
                "UPDATE console_sessions SET last_seen_at = ?2 WHERE digest = ?1 AND last_seen_at < ?2",
                params![digest, at],
            )
            .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn delete_console_session(&self, digest: &str) -> Result<(), StoreError> {
        let digest = digest.to_string();
        Self::with(&self.writer, move |conn| {
            conn.execute(
                "DELETE FROM console_sessions WHERE digest = ?1",
                params![digest],
            )
            .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn put_console_login(&self, l: &ConsoleLoginRecord) -> Result<(), StoreError> {
        let principal = l
            .principal
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Other(e.to_string()))?;
        let l = l.clone();
        let now = ts(&Utc::now());
        Self::with(&self.writer, move |conn| {
            conn.execute(
                "DELETE FROM console_logins WHERE expires_at <= ?1",
                params![now],
            )
            .map_err(classify)?;
            conn.execute(
                "INSERT INTO console_logins (digest, issuer, verifier, nonce, redirect_uri, principal, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![l.digest, l.issuer, l.verifier, l.nonce, l.redirect_uri, principal, ts(&l.expires_at)],
            )
            .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn take_console_login(
        &self,
        digest: &str,
    ) -> Result<Option<ConsoleLoginRecord>, StoreError> {
        let digest = digest.to_string();
        let row = Self::with(&self.writer, move |conn| {
            conn.query_row(
                "DELETE FROM console_logins WHERE digest = ?1 RETURNING digest, issuer, verifier, nonce, redirect_uri, expires_at, principal",
                params![digest],
                |r| {
                    Ok((
                        (
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, String>(5)?,
                        ),
                        r.get::<_, Option<String>>(6)?,
                    ))
                },
            )
            .optional()
            .map_err(classify)
        })
        .await?;
        let Some(((digest, issuer, verifier, nonce, redirect_uri, expires), principal)) = row
        else {
            return Ok(None);
        };
        Ok(Some(ConsoleLoginRecord {
            digest,
            issuer,
            verifier,
            nonce,
            redirect_uri,
            principal: principal
                .map(|p| serde_json::from_str(&p))
                .transpose()
                .map_err(|e| StoreError::Other(e.to_string()))?,
            expires_at: parse_ts(&expires)?,
        }))
    }

    async fn put_ticket(&self, t: &TicketRecord) -> Result<(), StoreError> {
        let principal =
            serde_json::to_string(&t.principal).map_err(|e| StoreError::Other(e.to_string()))?;
        let row = (
            t.digest.clone(),
            t.connection.clone(),
            principal,
            ts(&t.expires_at),
            ts(&Utc::now()),
        );
        Self::with(&self.writer, move |conn| {
            conn.execute("DELETE FROM shell_tickets WHERE expires_at <= ?1", params![row.4])
                .map_err(classify)?;
            conn.execute(
                "INSERT INTO shell_tickets (digest, connection, principal, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![row.0, row.1, row.2, row.3],
            )
            .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn put_result(&self, r: &KeptResult) -> Result<(), StoreError> {
        let row = (
            r.execution_id.clone(),
            r.requester.clone(),
            r.body.clone(),
            ts(&r.expires_at),
            ts(&Utc::now()),
        );
        Self::with(&self.writer, move |conn| {
            conn.execute("DELETE FROM kept_results WHERE expires_at <= ?1", params![row.4])
                .map_err(classify)?;
            conn.execute(
                "INSERT OR REPLACE INTO kept_results (execution_id, requester, body, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![row.0, row.1, row.2, row.3],
            )
            .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn kept_bytes(&self, requester: &str, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let (requester, now) = (requester.to_string(), ts(&now));
        Self::with(&self.reader, move |conn| {
            conn.query_row(
                "SELECT coalesce(sum(length(body)), 0) FROM kept_results WHERE requester = ?1 AND expires_at > ?2",
                params![requester, now],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(classify)
        })
        .await
    }

    async fn get_result(
        &self,
        execution_id: &str,
        requester: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let (id, requester, now) = (execution_id.to_string(), requester.to_string(), ts(&now));
        Self::with(&self.reader, move |conn| {
            conn.query_row(
                "SELECT body FROM kept_results WHERE execution_id = ?1 AND requester = ?2 AND expires_at > ?3",
                params![id, requester, now],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(classify)
        })
        .await
    }

    async fn request_cancel(
        &self,
        execution_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (id, at, stale) = (
            execution_id.to_string(),
            ts(&at),
            ts(&(at - chrono::Duration::days(1))),
        );
        Self::with(&self.writer, move |conn| {
            // A cancel nobody took within a day was for a job that is long gone.
            conn.execute(
                "DELETE FROM job_cancels WHERE requested_at < ?1",
                params![stale],
            )
            .map_err(classify)?;
            conn.execute(
                "INSERT OR REPLACE INTO job_cancels (execution_id, requested_at) VALUES (?1, ?2)",
                params![id, at],
            )
            .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn take_cancels(&self, execution_ids: &[String]) -> Result<Vec<String>, StoreError> {
        let ids = execution_ids.to_vec();
        Self::with(&self.writer, move |conn| {
            let mut taken = Vec::new();
            for id in ids {
                let n = conn
                    .execute(
                        "DELETE FROM job_cancels WHERE execution_id = ?1",
                        params![id],
                    )
                    .map_err(classify)?;
                if n > 0 {
                    taken.push(id);
                }
            }
            Ok(taken)
        })
        .await
    }

    async fn take_ticket(
        &self,
        digest: &str,
        connection: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Principal>, StoreError> {
        let (digest, connection, now) = (digest.to_string(), connection.to_string(), ts(&now));
        let principal: Option<String> = Self::with(&self.writer, move |conn| {
            conn.query_row(
                "DELETE FROM shell_tickets WHERE digest = ?1 RETURNING connection, principal, expires_at",
                params![digest],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)),
            )
            .optional()
            .map_err(classify)
            .map(|row| {
                row.filter(|(c, _, expires)| *c == connection && *expires > now)
                    .map(|(_, p, _)| p)
            })
        })
        .await?;
        principal
            .map(|p| serde_json::from_str(&p).map_err(|e| StoreError::Other(e.to_string())))
            .transpose()
    }

    async fn create_session(
        &self,
        r: &SessionRecord,
        h: &SessionLine<'_>,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(r).map_err(|e| StoreError::Other(e.to_string()))?;
        let row = (
            r.id.clone(),
            r.execution_id.clone(),
            r.kind.clone(),
            r.connection.clone(),
            r.issuer.clone(),
            r.subject.clone(),
            ts(&r.started_at),
            r.status.clone(),
        );
        let (seq, header, chain) = (h.seq, h.line.to_string(), h.chain.to_string());
        Self::with(&self.writer, move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(classify)?;
            tx.execute(
                "INSERT INTO sessions (id, execution_id, kind, connection, issuer, subject, started_at, status, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, json],
            )
            .map_err(classify)?;
            tx.execute(
                "INSERT INTO session_lines (session_id, seq, line, chain) VALUES (?1, ?2, ?3, ?4)",
                params![row.0, seq, header, chain],
            )
            .map_err(classify)?;
            tx.commit().map_err(classify)
        })
        .await
    }

    async fn append_session_line(&self, l: &SessionLine<'_>) -> Result<(), StoreError> {
        let (id, seq) = (l.session_id.to_string(), l.seq);
        let (line, chain) = (l.line.to_string(), l.chain.to_string());
        Self::with(&self.writer, move |conn| {
            conn.execute(
                "INSERT INTO session_lines (session_id, seq, line, chain) VALUES (?1, ?2, ?3, ?4)",
                params![id, seq, line, chain],
            )
            .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn finish_session(&self, r: &SessionRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(r).map_err(|e| StoreError::Other(e.to_string()))?;
        let row = (
            r.id.clone(),
            r.ended_at.as_ref().map(ts),
            r.status.clone(),
            r.exit_code,
            r.digest.clone(),
        );
        Self::with(&self.writer, move |conn| {
            conn.execute(
                "UPDATE sessions SET ended_at = ?2, status = ?3, exit_code = ?4, digest = ?5, record = ?6 WHERE id = ?1",
                params![row.0, row.1, row.2, row.3, row.4, json],
            )
            .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let id = id.to_string();
        Self::with(&self.reader, move |conn| {
            let record: Option<String> = conn
                .query_row("SELECT record FROM sessions WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(classify)?;
            record.as_deref().map(decode_session).transpose()
        })
        .await
    }

    async fn list_sessions(&self, q: &SessionQuery) -> Result<Vec<SessionRecord>, StoreError> {
        let q = q.clone();
        Self::with(&self.reader, move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT record FROM sessions
                     WHERE (?1 IS NULL OR connection = ?1) AND (?2 IS NULL OR subject = ?2)
                       AND (?3 IS NULL OR started_at >= ?3) AND (?4 IS NULL OR started_at < ?4)
                     ORDER BY started_at DESC LIMIT ?5",
                )
                .map_err(classify)?;
            let rows = stmt
                .query_map(
                    params![
                        q.connection,
                        q.subject,
                        q.since.as_ref().map(ts),
                        q.before.as_ref().map(ts),
                        q.limit as i64
                    ],
                    |r| r.get::<_, String>(0),
                )
                .map_err(classify)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(decode_session(&row.map_err(classify)?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn session_lines(&self, id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let id = id.to_string();
        Self::with(&self.reader, move |conn| {
            let mut stmt = conn
                .prepare("SELECT line, chain FROM session_lines WHERE session_id = ?1 ORDER BY seq")
                .map_err(classify)?;
            let rows = stmt
                .query_map([id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(classify)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(classify)
        })
        .await
    }

    async fn delete_sessions_before(&self, t: DateTime<Utc>) -> Result<u64, StoreError> {
        let cutoff = ts(&t);
        Self::with(&self.writer, move |conn| {
            let tx = conn.transaction().map_err(classify)?;
            tx.execute(
                "DELETE FROM session_lines WHERE session_id IN (SELECT id FROM sessions WHERE started_at < ?1)",
                [&cutoff],
            )
            .map_err(classify)?;
            let n = tx
                .execute("DELETE FROM sessions WHERE started_at < ?1", [&cutoff])
                .map_err(classify)?;
            tx.commit().map_err(classify)?;
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Phase;
    use crate::audit::chain::{self, Verdict};

    fn config() -> StoreConfig {
        StoreConfig {
            busy_timeout_ms: 2_000,
            ..StoreConfig::default()
        }
    }

    fn events(n: usize) -> Vec<AuditEvent> {
        (0..n)
            .map(|i| AuditEvent::new(Phase::Begin, &format!("exec-{i}"), "query"))
            .collect()
    }

    async fn verdict(store: &SqliteStore) -> Verdict {
        chain::verify(store, None).await.unwrap()
    }

    fn broken_at(v: Verdict) -> (i64, Option<String>) {
        match v {
            Verdict::Broken(b) => (b.seq, b.id),
            Verdict::Intact { .. } => panic!("tampering went unnoticed"),
        }
    }

    #[tokio::test]
    async fn store_chains_every_appended_event_and_a_replay_adds_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("airlock.db"), &config()).unwrap();
        assert_eq!(
            verdict(&store).await,
            Verdict::Intact {
                events: 0,
                head: ChainHead::genesis()
            }
        );
        let first = events(3);
        store.append_audit(&first).await.unwrap();
        let mut second = events(2);
        second.push(first[1].clone());
        store.append_audit(&second).await.unwrap();
        store.append_audit(&first).await.unwrap();
        let Verdict::Intact { events, head } = verdict(&store).await else {
            panic!("chain broken");
        };
        assert_eq!((events, head.seq), (5, 5));
        assert_eq!(store.audit_chain_head().await.unwrap(), Some(head));
    }

    #[tokio::test]
    async fn store_tampering_is_found_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("airlock.db");
        let store = SqliteStore::open(&path, &config()).unwrap();
        store.append_audit(&events(6)).await.unwrap();
        let raw = Connection::open(&path).unwrap();
        let id = |seq: i64| -> String {
            raw.query_row("SELECT id FROM audit_events WHERE seq = ?1", [seq], |r| {
                r.get(0)
            })
            .unwrap()
        };

        // An edited record.
        let original: String = raw
            .query_row("SELECT record FROM audit_events WHERE seq = 3", [], |r| {
                r.get(0)
            })
            .unwrap();
        raw.execute(
            "UPDATE audit_events SET record = json_set(record, '$.operation', 'edited') WHERE seq = 3",
            [],
        )
        .unwrap();
        assert_eq!(broken_at(verdict(&store).await), (3, Some(id(3))));
        raw.execute(
            "UPDATE audit_events SET record = ?1 WHERE seq = 3",
            [&original],
        )
        .unwrap();
        assert!(matches!(verdict(&store).await, Verdict::Intact { .. }));

        // Two rows swapped.
        let (a, b) = (id(3), id(4));
        let swap = "UPDATE audit_events SET seq = -1 WHERE seq = 3;
                    UPDATE audit_events SET seq = 3 WHERE seq = 4;
                    UPDATE audit_events SET seq = 4 WHERE seq = -1;";
        raw.execute_batch(swap).unwrap();
        assert_eq!(broken_at(verdict(&store).await), (3, Some(b)));
        raw.execute_batch(swap).unwrap();
        assert_eq!(id(3), a);
        assert!(matches!(verdict(&store).await, Verdict::Intact { .. }));

        // A deleted row: the next one no longer chains.
        raw.execute_batch(
            "CREATE TABLE saved AS SELECT * FROM audit_events WHERE seq = 2;
             DELETE FROM audit_events WHERE seq = 2;",
        )
        .unwrap();
        assert_eq!(broken_at(verdict(&store).await), (3, Some(id(3))));
        raw.execute_batch("INSERT INTO audit_events SELECT * FROM saved; DROP TABLE saved;")
            .unwrap();
        assert!(matches!(verdict(&store).await, Verdict::Intact { .. }));

        // The last row deleted: the recorded head names it.
        raw.execute("DELETE FROM audit_events WHERE seq = 6", [])
            .unwrap();
        assert_eq!(broken_at(verdict(&store).await), (6, None));
        // ... and the head moved back with it: undetectable without a pin.
        let pin = store.audit_chain_head().await.unwrap().unwrap();
        let (seq5, hash5): (i64, String) = raw
            .query_row(
                "SELECT seq, hash FROM audit_events WHERE seq = 5",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        raw.execute(
            "UPDATE audit_chain_head SET seq = ?1, hash = ?2",
            params![seq5, hash5],
        )
        .unwrap();
        assert!(matches!(verdict(&store).await, Verdict::Intact { .. }));
        let pinned = chain::verify(&store, Some(pin)).await.unwrap();
        assert_eq!(broken_at(pinned), (6, None));
    }

    #[tokio::test]
    async fn store_rows_from_before_the_chain_are_chained_by_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("airlock.db");
        // A store as the previous release left it: every migration before the chain, and
        // events written the old way.
        {
            let conn = open_conn(&path, Duration::from_secs(2)).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
            )
            .unwrap();
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v < CHAIN_MIGRATION) {
                conn.execute_batch(sql).unwrap();
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 'then')",
                    [version],
                )
                .unwrap();
            }
            for e in events(4) {
                conn.execute(
                    "INSERT INTO audit_events (id, time, phase, execution_id, record) VALUES (?1, ?2, 'begin', ?3, ?4)",
                    params![e.id, ts(&e.time), e.execution_id, serde_json::to_string(&e).unwrap()],
                )
                .unwrap();
            }
            // Gaps in `seq` are fine.
            conn.execute("DELETE FROM audit_events WHERE seq = 2", [])
                .unwrap();
        }
        let store = SqliteStore::open(&path, &config()).unwrap();
        let Verdict::Intact { events: n, head } = verdict(&store).await else {
            panic!("the upgraded store does not verify");
        };
        assert_eq!((n, head.seq), (3, 4));
        drop(store);
        // Opening again changes nothing; new events extend the same chain.
        let store = SqliteStore::open(&path, &config()).unwrap();
        store.append_audit(&events(2)).await.unwrap();
        let Verdict::Intact { events: n, head } = verdict(&store).await else {
            panic!("chain broken after the upgrade");
        };
        assert_eq!((n, head.seq), (5, 6));
    }
}
