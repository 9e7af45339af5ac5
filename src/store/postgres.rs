//! Shared PostgreSQL store: any number of Airlock instances on one database.
//!
//! Invariants:
//! - Nothing that matters lives only in one process: every event is a row here.
//! - A batch of events is one multi-row INSERT in one transaction (one round trip), so group
//!   commit costs one commit for many requests.
//! - Migrations run under a transaction-scoped advisory lock, so instances starting
//!   together do not race.
//! - Audit events are chained ([`crate::audit::chain`]). An append locks the one-row chain
//!   head (`SELECT ... FOR UPDATE`), gives each new event `seq` = head + 1, ... with its
//!   link, and moves the head, in one transaction: instances appending at once queue on
//!   that row, never extend the same head, and `seq` order is commit order.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

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
    (1, include_str!("../../migrations/postgres/0001_audit.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_reviews.sql"),
    ),
    // Recorded sessions: without it, every recorded execution (SSH, Kubernetes exec,
    // shells) on a PostgreSQL store was refused as `recording_unavailable`.
    (
        3,
        include_str!("../../migrations/postgres/0003_sessions.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_tickets.sql"),
    ),
    (
        CHAIN_MIGRATION,
        include_str!("../../migrations/postgres/0005_audit_chain.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres/0006_results.sql"),
    ),
    (
        7,
        include_str!("../../migrations/postgres/0007_console.sql"),
    ),
];
/// The migration that adds the audit hash chain; rows already stored are chained with it.
pub const CHAIN_MIGRATION: i64 = 5;
/// The channel instances NOTIFY on when a review changes; only a hint to wake waiters.
pub const REVIEW_CHANNEL: &str = "airlock_reviews";
/// Arbitrary constant shared by all instances: the migration lock.
const MIGRATION_LOCK: i64 = 0x4169_724c_6f63_6b00;

pub struct PostgresStore {
    pool: Pool,
    /// For the LISTEN connection, which lives outside the pool.
    config: tokio_postgres::Config,
    identity: StoreIdentity,
    busy: Duration,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl PostgresStore {
    pub async fn open(url: &str, config: &StoreConfig) -> Result<PostgresStore, String> {
        let mut pg: tokio_postgres::Config = url.parse().map_err(|e| format!("store.url: {e}"))?;
        if let Some(p) = &config.password {
            let secret = p.resolve().map_err(|e| format!("store.password: {e}"))?;
            pg.password(secret.expose());
        }
        pg.application_name("airlock-store");
        pg.connect_timeout(Duration::from_secs(5));
        let host = match pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.to_ascii_lowercase(),
            _ => "localhost".to_string(),
        };
        let port = pg.get_ports().first().copied().unwrap_or(5432);
        let dbname = pg
            .get_dbname()
            .map(str::to_string)
            .or_else(|| pg.get_user().map(str::to_string))
            .unwrap_or_default();
        let listen_config = pg.clone();
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let busy = Duration::from_millis(config.busy_timeout_ms);
        let pool = Pool::builder(manager)
            .max_size(8)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(busy))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| format!("store pool: {e}"))?;
        let store = PostgresStore {
            pool,
            config: listen_config,
            identity: StoreIdentity::Postgres { host, port, dbname },
            busy,
        };
        store
            .migrate()
            .await
            .map_err(|e| format!("store migration: {e}"))?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS airlock_schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .await
            .map_err(unavailable)?;
        for (version, sql) in MIGRATIONS {
            let tx = client.transaction().await.map_err(unavailable)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(unavailable)?;
            let done = tx
                .query_opt(
                    "SELECT 1 FROM airlock_schema_migrations WHERE version = $1",
                    &[version],
                )
                .await
                .map_err(unavailable)?;
            if done.is_none() {
                tx.batch_execute(sql).await.map_err(unavailable)?;
                if *version == CHAIN_MIGRATION {
                    chain_existing(&tx).await?;
                }
                tx.execute(
                    "INSERT INTO airlock_schema_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(unavailable)?;
            }
            tx.commit().await.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn rows_to_events(rows: Vec<tokio_postgres::Row>) -> Result<Vec<AuditEvent>, StoreError> {
        rows.into_iter()
            .map(|r| {
                let seq: i64 = r.get(0);
                let record: serde_json::Value = r.get(1);
                let mut e: AuditEvent = serde_json::from_value(record).map_err(|e| {
                    StoreError::Other(format!("unreadable audit record {seq}: {e}"))
                })?;
                e.seq = Some(seq);
                Ok(e)
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        // One link per event id, in time order (ties keep the batch's order).
        let mut ordered: Vec<&AuditEvent> = Vec::with_capacity(events.len());
        let mut seen = std::collections::HashSet::new();
        for e in events {
            if seen.insert(e.id.as_str()) {
                ordered.push(e);
            }
        }
        ordered.sort_by_key(|e| e.time);
        if ordered.is_empty() {
            return Ok(());
        }
        let records = ordered
            .iter()
            .map(|e| serde_json::to_value(e).map_err(|e| StoreError::Other(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let mut client = self.pool.get().await.map_err(unavailable)?;
        match tokio::time::timeout(self.busy, append_linked(&mut client, &ordered, &records)).await
        {
            Ok(r) => r,
            Err(_) => {
                // The write may still commit later; its outcome is unknown, so the caller
                // fails closed. The connection may be mid-transaction or waiting on the head:
                // it is closed, not returned to the pool.
                drop(deadpool_postgres::Object::take(client));
                Err(StoreError::Unavailable("audit write timed out".into()))
            }
        }
    }

    async fn audit_chain_head(&self) -> Result<Option<ChainHead>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let row = client
            .query_opt(
                "SELECT seq, hash FROM airlock_audit_chain_head WHERE id = 1",
                &[],
            )
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| ChainHead {
            seq: r.get(0),
            hash: r.get(1),
        }))
    }

    async fn audit_chain_page(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ChainRow>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query(
                "SELECT seq, id, prev_hash, hash, record::text FROM airlock_audit_events
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &(limit as i64)],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|r| ChainRow {
                seq: r.get(0),
                id: r.get(1),
                prev_hash: r.get(2),
                hash: r.get(3),
                record: r.get(4),
            })
            .collect())
    }

    async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query(
                "SELECT seq, record FROM airlock_audit_events
                 WHERE ($1::text IS NULL OR connection = $1)
                   AND ($2::text IS NULL OR issuer = $2)
                   AND ($3::text IS NULL OR subject = $3)
                   AND ($4::text IS NULL OR outcome = $4)
                   AND ($5::text IS NULL OR execution_id = $5)
                   AND ($6::timestamptz IS NULL OR time >= $6)
                   AND ($7::timestamptz IS NULL OR time < $7)
                   AND ($8::bigint IS NULL OR seq < $8)
                 ORDER BY seq DESC LIMIT $9",
                &[
                    &q.connection,
                    &q.issuer,
                    &q.subject,
                    &q.outcome,
                    &q.execution_id,
                    &q.since,
                    &q.until,
                    &q.before_seq,
                    &(q.limit as i64),
                ],
            )
            .await
            .map_err(unavailable)?;
        Self::rows_to_events(rows).await
    }

    async fn unfinished(
        &self,
        started_before: DateTime<Utc>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query(
                "SELECT b.seq, b.record FROM airlock_audit_events b
                 WHERE b.phase = 'begin' AND b.time < $1
                   AND NOT EXISTS (SELECT 1 FROM airlock_audit_events e
                                   WHERE e.execution_id = b.execution_id AND e.phase = 'end' AND e.seq > b.seq)
                 ORDER BY b.seq LIMIT 10000",
                &[&started_before],
            )
            .await
            .map_err(unavailable)?;
        Self::rows_to_events(rows).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        client.simple_query("SELECT 1").await.map_err(unavailable)?;
        Ok(())
    }

    fn identity(&self) -> StoreIdentity {
        self.identity.clone()
    }

    async fn put_console_session(&self, c: &ConsoleSessionRecord) -> Result<(), StoreError> {
        let principal =
            serde_json::to_value(&c.principal).map_err(|e| StoreError::Other(e.to_string()))?;
        let client = self.pool.get().await.map_err(unavailable)?;
        client
            .execute(
                "DELETE FROM airlock_console_sessions WHERE expires_at <= now()",
                &[],
            )
            .await
            .map_err(unavailable)?;
        client
            .execute(
                "INSERT INTO airlock_console_sessions (digest, principal, csrf, created_at, last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&c.digest, &principal, &c.csrf, &c.created_at, &c.last_seen_at, &c.expires_at],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn console_session(
        &self,
        digest: &str,
    ) -> Result<Option<ConsoleSessionRecord>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let Some(row) = client
            .query_opt(
                "SELECT digest, principal, csrf, created_at, last_seen_at, expires_at FROM airlock_console_sessions WHERE digest = $1",
                &[&digest],
            )
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let bad = |e: tokio_postgres::Error| StoreError::Other(e.to_string());
        let principal: serde_json::Value = row.try_get(1).map_err(bad)?;
        Ok(Some(ConsoleSessionRecord {
            digest: row.try_get(0).map_err(bad)?,
            principal: serde_json::from_value(principal)
                .map_err(|e| StoreError::Other(e.to_string()))?,
            csrf: row.try_get(2).map_err(bad)?,
            created_at: row.try_get(3).map_err(bad)?,
            last_seen_at: row.try_get(4).map_err(bad)?,
            expires_at: row.try_get(5).map_err(bad)?,
        }))
    }

    async fn touch_console_session(
        &self,
        digest: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        client
            .execute(
                "UPDATE airlock_console_sessions SET last_seen_at = $2 WHERE digest = $1 AND last_seen_at < $2",
                &[&digest, &at],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn delete_console_session(&self, digest: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        client
            .execute(
                "DELETE FROM airlock_console_sessions WHERE digest = $1",
                &[&digest],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn put_console_login(&self, l: &ConsoleLoginRecord) -> Result<(), StoreError> {
        let principal = l
            .principal
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| StoreError::Other(e.to_string()))?;
        let client = self.pool.get().await.map_err(unavailable)?;
        client
            .execute(
                "DELETE FROM airlock_console_logins WHERE expires_at <= now()",
                &[],
            )
            .await
            .map_err(unavailable)?;
        client
            .execute(
                "INSERT INTO airlock_console_logins (digest, issuer, verifier, nonce, redirect_uri, principal, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&l.digest, &l.issuer, &l.verifier, &l.nonce, &l.redirect_uri, &principal, &l.expires_at],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn take_console_login(
        &self,
        digest: &str,
    ) -> Result<Option<ConsoleLoginRecord>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        // One statement deletes and reads: a `state` is redeemed once across instances.
        let Some(row) = client
            .query_opt(
                "DELETE FROM airlock_console_logins WHERE digest = $1 RETURNING digest, issuer, verifier, nonce, redirect_uri, expires_at, principal",
                &[&digest],
            )
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let bad = |e: tokio_postgres::Error| StoreError::Other(e.to_string());
        let principal: Option<serde_json::Value> = row.try_get(6).map_err(bad)?;
        Ok(Some(ConsoleLoginRecord {
            principal: principal
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| StoreError::Other(e.to_string()))?,
            digest: row.try_get(0).map_err(bad)?,
            issuer: row.try_get(1).map_err(bad)?,
            verifier: row.try_get(2).map_err(bad)?,
            nonce: row.try_get(3).map_err(bad)?,
            redirect_uri: row.try_get(4).map_err(bad)?,
            expires_at: row.try_get(5).map_err(bad)?,
        }))
    }

    async fn put_ticket(&self, t: &TicketRecord) -> Result<(), StoreError> {
        let principal =
            serde_json::to_value(&t.principal).map_err(|e| StoreError::Other(e.to_string()))?;
        let client = self.pool.get().await.map_err(unavailable)?;
        client
            .execute(
                "DELETE FROM airlock_shell_tickets WHERE expires_at <= now()",
                &[],
            )
            .await
            .map_err(unavailable)?;
        client
            .execute(
                "INSERT INTO airlock_shell_tickets (digest, connection, principal, expires_at) VALUES ($1, $2, $3, $4)",
                &[&t.digest, &t.connection, &principal, &t.expires_at],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn put_result(&self, r: &KeptResult) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        client
            .execute(
                "DELETE FROM airlock_kept_results WHERE expires_at <= now()",
                &[],
            )
            .await
            .map_err(unavailable)?;
        client
            .execute(
                "INSERT INTO airlock_kept_results (execution_id, requester, body, expires_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (execution_id) DO UPDATE SET requester = EXCLUDED.requester, body = EXCLUDED.body, expires_at = EXCLUDED.expires_at",
                &[&r.execution_id, &r.requester, &r.body, &r.expires_at],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn kept_bytes(&self, requester: &str, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let row = client
            .query_one(
                "SELECT coalesce(sum(octet_length(body)), 0)::int8 FROM airlock_kept_results WHERE requester = $1 AND expires_at > $2",
                &[&requester, &now],
            )
            .await
            .map_err(unavailable)?;
        row.try_get::<_, i64>(0)
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| StoreError::Other(e.to_string()))
    }

    async fn get_result(
        &self,
        execution_id: &str,
        requester: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let row = client
            .query_opt(
                "SELECT body FROM airlock_kept_results WHERE execution_id = $1 AND requester = $2 AND expires_at > $3",
                &[&execution_id, &requester, &now],
            )
            .await
            .map_err(unavailable)?;
        row.map(|r| r.try_get::<_, String>(0))
            .transpose()
            .map_err(|e| StoreError::Other(e.to_string()))
    }

    async fn request_cancel(
        &self,
        execution_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        // A cancel nobody took within a day was for a job that is long gone.
        client
            .execute(
                "DELETE FROM airlock_job_cancels WHERE requested_at < now() - interval '1 day'",
                &[],
            )
            .await
            .map_err(unavailable)?;
        client
            .execute(
                "INSERT INTO airlock_job_cancels (execution_id, requested_at) VALUES ($1, $2) \
                 ON CONFLICT (execution_id) DO UPDATE SET requested_at = EXCLUDED.requested_at",
                &[&execution_id, &at],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn take_cancels(&self, execution_ids: &[String]) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query(
                "DELETE FROM airlock_job_cancels WHERE execution_id = ANY($1) RETURNING execution_id",
                &[&execution_ids],
            )
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Other(e.to_string()))
    }

    async fn take_ticket(
        &self,
        digest: &str,
        connection: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Principal>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        // One statement deletes and reads: two instances redeeming the same ticket at once
        // cannot both get a row.
        let row = client
            .query_opt(
                "DELETE FROM airlock_shell_tickets WHERE digest = $1 RETURNING connection, principal, expires_at",
                &[&digest],
            )
            .await
            .map_err(unavailable)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let bad = |e: tokio_postgres::Error| StoreError::Other(e.to_string());
        let stored_for: String = row.try_get(0).map_err(bad)?;
        let principal: serde_json::Value = row.try_get(1).map_err(bad)?;
        let expires_at: DateTime<Utc> = row.try_get(2).map_err(bad)?;
        if stored_for != connection || expires_at <= now {
            return Ok(None);
        }
        serde_json::from_value(principal)
            .map(Some)
            .map_err(|e| StoreError::Other(e.to_string()))
    }

    async fn create_session(
        &self,
        r: &SessionRecord,
        h: &SessionLine<'_>,
    ) -> Result<(), StoreError> {
        let record = serde_json::to_value(r).map_err(|e| StoreError::Other(e.to_string()))?;
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        tx.execute(
            "INSERT INTO airlock_sessions (id, execution_id, kind, connection, issuer, subject, started_at, status, record)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[&r.id, &r.execution_id, &r.kind, &r.connection, &r.issuer, &r.subject, &r.started_at, &r.status, &record],
        )
        .await
        .map_err(unavailable)?;
        tx.execute(
            "INSERT INTO airlock_session_lines (session_id, seq, line, chain) VALUES ($1, $2, $3, $4)",
            &[&h.session_id, &h.seq, &h.line, &h.chain],
        )
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn append_session_line(&self, l: &SessionLine<'_>) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        client
            .execute(
                "INSERT INTO airlock_session_lines (session_id, seq, line, chain) VALUES ($1, $2, $3, $4)",
                &[&l.session_id, &l.seq, &l.line, &l.chain],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn finish_session(&self, r: &SessionRecord) -> Result<(), StoreError> {
        let record = serde_json::to_value(r).map_err(|e| StoreError::Other(e.to_string()))?;
        let client = self.pool.get().await.map_err(unavailable)?;
        client
            .execute(
                "UPDATE airlock_sessions SET ended_at = $2, status = $3, exit_code = $4, digest = $5, record = $6 WHERE id = $1",
                &[&r.id, &r.ended_at, &r.status, &r.exit_code, &r.digest, &record],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let row = client
            .query_opt("SELECT record FROM airlock_sessions WHERE id = $1", &[&id])
            .await
            .map_err(unavailable)?;
        row.map(|r| {
            serde_json::from_value::<SessionRecord>(r.get(0))
                .map_err(|e| StoreError::Other(format!("unreadable session: {e}")))
        })
        .transpose()
    }

    async fn list_sessions(&self, q: &SessionQuery) -> Result<Vec<SessionRecord>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query(
                "SELECT record FROM airlock_sessions
                 WHERE ($1::text IS NULL OR connection = $1) AND ($2::text IS NULL OR subject = $2)
                   AND ($3::timestamptz IS NULL OR started_at >= $3)
                   AND ($4::timestamptz IS NULL OR started_at < $4)
                 ORDER BY started_at DESC LIMIT $5",
                &[
                    &q.connection,
                    &q.subject,
                    &q.since,
                    &q.before,
                    &(q.limit as i64),
                ],
            )
            .await
            .map_err(unavailable)?;
        rows.into_iter()
            .map(|r| {
                serde_json::from_value::<SessionRecord>(r.get(0))
                    .map_err(|e| StoreError::Other(format!("unreadable session: {e}")))
            })
            .collect()
    }

    async fn session_lines(&self, id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query(
                "SELECT line, chain FROM airlock_session_lines WHERE session_id = $1 ORDER BY seq",
                &[&id],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn delete_sessions_before(&self, t: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        tx.execute(
            "DELETE FROM airlock_session_lines WHERE session_id IN (SELECT id FROM airlock_sessions WHERE started_at < $1)",
            &[&t],
        )
        .await
        .map_err(unavailable)?;
        let n = tx
            .execute("DELETE FROM airlock_sessions WHERE started_at < $1", &[&t])
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(n)
    }

    fn subscribe_reviews(&self, hub: std::sync::Arc<crate::review::hub::ReviewHub>) {
        let config = self.config.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = listen_once(&config, &hub).await {
                    tracing::warn!(error = %e, "review LISTEN connection lost; waiters fall back to polling");
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }

    async fn insert_review(&self, r: &ReviewRecord) -> Result<bool, StoreError> {
        let record = serde_json::to_value(r).map_err(|e| StoreError::Other(e.to_string()))?;
        let client = self.pool.get().await.map_err(unavailable)?;
        let n = client
            .execute(
                "INSERT INTO airlock_reviews (id, execution_id, status, requester, idempotency_key, created_at, expires_at, version, record)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (requester, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
                &[
                    &r.id,
                    &r.execution_id,
                    &r.status.as_str(),
                    &r.requester_key(),
                    &r.idempotency_key,
                    &r.created_at,
                    &r.expires_at,
                    &r.version,
                    &record,
                ],
            )
            .await
            .map_err(unavailable)?;
        if n == 1 {
            let _ = client
                .execute(
                    "SELECT pg_notify($1, $2)",
                    &[&REVIEW_CHANNEL, &r.execution_id],
                )
                .await;
        }
        Ok(n == 1)
    }

    async fn get_review(&self, by: ReviewLookup<'_>) -> Result<Option<ReviewRecord>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let row = match by {
            ReviewLookup::Id(id) => {
                client
                    .query_opt("SELECT record FROM airlock_reviews WHERE id = $1", &[&id])
                    .await
            }
            ReviewLookup::Execution(id) => {
                client
                    .query_opt("SELECT record FROM airlock_reviews WHERE execution_id = $1", &[&id])
                    .await
            }
            ReviewLookup::Idempotency { requester, key } => {
                client
                    .query_opt(
                        "SELECT record FROM airlock_reviews WHERE requester = $1 AND idempotency_key = $2",
                        &[&requester, &key],
                    )
                    .await
            }
        }
        .map_err(unavailable)?;
        row.map(|r| {
            serde_json::from_value::<ReviewRecord>(r.get(0))
                .map_err(|e| StoreError::Other(format!("unreadable review: {e}")))
        })
        .transpose()
    }

    async fn list_reviews(
        &self,
        status: Option<ReviewStatus>,
        limit: usize,
    ) -> Result<Vec<ReviewRecord>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let status = status.map(|s| s.as_str());
        let rows = client
            .query(
                "SELECT record FROM airlock_reviews WHERE ($1::text IS NULL OR status = $1)
                 ORDER BY (status = 'pending') DESC, created_at DESC LIMIT $2",
                &[&status, &(limit as i64)],
            )
            .await
            .map_err(unavailable)?;
        rows.into_iter()
            .map(|r| {
                serde_json::from_value::<ReviewRecord>(r.get(0))
                    .map_err(|e| StoreError::Other(format!("unreadable review: {e}")))
            })
            .collect()
    }

    async fn swap_review(&self, r: &ReviewRecord, expected: i64) -> Result<bool, StoreError> {
        let mut next = r.clone();
        next.version = expected + 1;
        let record = serde_json::to_value(&next).map_err(|e| StoreError::Other(e.to_string()))?;
        let client = self.pool.get().await.map_err(unavailable)?;
        let n = client
            .execute(
                "UPDATE airlock_reviews SET record = $1, status = $2, version = $3 WHERE id = $4 AND version = $5",
                &[&record, &next.status.as_str(), &(expected + 1), &next.id, &expected],
            )
            .await
            .map_err(unavailable)?;
        if n == 1 {
            // Wake waiters on every instance; they re-read the row, so a lost hint is harmless.
            let _ = client
                .execute(
                    "SELECT pg_notify($1, $2)",
                    &[&REVIEW_CHANNEL, &next.execution_id],
                )
                .await;
        }
        Ok(n == 1)
    }
}

/// Appends `events` (distinct ids, in order) as links of the chain, in one transaction.
async fn append_linked(
    client: &mut deadpool_postgres::Client,
    events: &[&AuditEvent],
    records: &[serde_json::Value],
) -> Result<(), StoreError> {
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let tx = client.transaction().await.map_err(unavailable)?;
    // Every appender queues here until the holder commits; then this reads its head.
    let lock = tx
        .prepare_cached("SELECT seq, hash FROM airlock_audit_chain_head WHERE id = 1 FOR UPDATE")
        .await
        .map_err(unavailable)?;
    let start = tx
        .query_opt(&lock, &[])
        .await
        .map_err(unavailable)?
        .map(|r| ChainHead {
            seq: r.get(0),
            hash: r.get(1),
        })
        .ok_or_else(|| {
            StoreError::Other(
                "the audit chain head is missing: the store was altered (run `airlock audit verify`)"
                    .into(),
            )
        })?;
    // Under the lock (a new statement, so a fresh snapshot: the previous holder's rows are
    // visible): which events are new (a replayed one is already a link), and each record's
    // text exactly as the store will keep it.
    let new_events = tx
        .prepare_cached(
            "SELECT u.n, u.r::text FROM unnest($1::text[], $2::jsonb[]) WITH ORDINALITY AS u(id, r, n)
             WHERE NOT EXISTS (SELECT 1 FROM airlock_audit_events e WHERE e.id = u.id)
             ORDER BY u.n",
        )
        .await
        .map_err(unavailable)?;
    let fresh = tx
        .query(&new_events, &[&ids, &records])
        .await
        .map_err(unavailable)?;
    if fresh.is_empty() {
        return tx.commit().await.map_err(unavailable);
    }
    let n = fresh.len();
    let mut cols = Columns::with_capacity(n);
    let mut head = start;
    for row in &fresh {
        let ordinal: i64 = row.get(0);
        let text: String = row.get(1);
        let e = usize::try_from(ordinal - 1)
            .ok()
            .and_then(|i| events.get(i))
            .ok_or_else(|| StoreError::Other(format!("audit batch has no event {ordinal}")))?;
        let next = head.extend(&text);
        cols.push(e, next.seq, text, head.hash.clone(), next.hash.clone());
        head = next;
    }
    let insert = tx
        .prepare_cached(
            "WITH linked AS (
                 INSERT INTO airlock_audit_events
                     (seq, id, time, phase, execution_id, issuer, subject, connection, outcome,
                      record, prev_hash, hash)
                 SELECT s, i, t, ph, ex, iss, sub, con, o, r::jsonb, p, h
                 FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
                             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                             $11::text[], $12::text[])
                      AS u(s, i, t, ph, ex, iss, sub, con, o, r, p, h)
                 ON CONFLICT (id) DO NOTHING
                 RETURNING 1
             ), moved AS (
                 UPDATE airlock_audit_chain_head SET seq = $13, hash = $14 WHERE id = 1
             )
             SELECT count(*) FROM linked",
        )
        .await
        .map_err(unavailable)?;
    let inserted: i64 = tx
        .query_one(
            &insert,
            &[
                &cols.seqs,
                &cols.ids,
                &cols.times,
                &cols.phases,
                &cols.executions,
                &cols.issuers,
                &cols.subjects,
                &cols.connections,
                &cols.outcomes,
                &cols.records,
                &cols.prevs,
                &cols.hashes,
                &head.seq,
                &head.hash,
            ],
        )
        .await
        .map_err(unavailable)?
        .get(0);
    if usize::try_from(inserted).ok() != Some(n) {
        // Only an appender that skipped the head lock can get here; the links computed
        // above would not hold, so nothing is written (the transaction rolls back).
        return Err(StoreError::Other(format!(
            "audit chain: {inserted} of {n} events inserted; batch not written"
        )));
    }
    tx.commit().await.map_err(unavailable)
}

/// The columns of a batch of new links, as arrays for `unnest`.
struct Columns {
    seqs: Vec<i64>,
    ids: Vec<String>,
    times: Vec<DateTime<Utc>>,
    phases: Vec<String>,
    executions: Vec<String>,
    issuers: Vec<Option<String>>,
    subjects: Vec<Option<String>>,
    connections: Vec<Option<String>>,
    outcomes: Vec<Option<String>>,
    records: Vec<String>,
    prevs: Vec<String>,
    hashes: Vec<String>,
}

impl Columns {
    fn with_capacity(n: usize) -> Columns {
        Columns {
            seqs: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
            times: Vec::with_capacity(n),
            phases: Vec::with_capacity(n),
            executions: Vec::with_capacity(n),
            issuers: Vec::with_capacity(n),
            subjects: Vec::with_capacity(n),
            connections: Vec::with_capacity(n),
            outcomes: Vec::with_capacity(n),
            records: Vec::with_capacity(n),
            prevs: Vec::with_capacity(n),
            hashes: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, e: &AuditEvent, seq: i64, record: String, prev: String, hash: String) {
        self.seqs.push(seq);
        self.ids.push(e.id.clone());
        self.times.push(e.time);
        self.phases.push(e.phase.as_str().to_string());
        self.executions.push(e.execution_id.clone());
        self.issuers
            .push(e.principal.as_ref().map(|p| p.issuer.clone()));
        self.subjects
            .push(e.principal.as_ref().map(|p| p.subject.clone()));
        self.connections.push(e.connection.clone());
        self.outcomes
            .push(e.outcome.map(|o| o.as_str().to_string()));
        self.records.push(record);
        self.prevs.push(prev);
        self.hashes.push(hash);
    }
}

/// Chains the audit rows stored before the chain existed, in `seq` order from the genesis,
/// a page at a time, records the head, and makes the chain columns required. Runs in the
/// migration's transaction. Deterministic: the same rows give the same chain.
async fn chain_existing(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
    let page_size = crate::audit::chain::VERIFY_PAGE;
    let mut head = ChainHead::genesis();
    loop {
        let rows = tx
            .query(
                "SELECT seq, record::text FROM airlock_audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&head.seq, &(page_size as i64)],
            )
            .await
            .map_err(unavailable)?;
        let (mut seqs, mut prevs, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
        for r in &rows {
            let seq: i64 = r.get(0);
            let record: String = r.get(1);
            let hash = crate::audit::chain::link_hash(&head.hash, seq, &record);
            seqs.push(seq);
            prevs.push(head.hash.clone());
            hashes.push(hash.clone());
            head = ChainHead { seq, hash };
        }
        tx.execute(
            "UPDATE airlock_audit_events e SET prev_hash = u.p, hash = u.h
             FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(s, p, h) WHERE e.seq = u.s",
            &[&seqs, &prevs, &hashes],
        )
        .await
        .map_err(unavailable)?;
        if rows.len() < page_size {
            break;
        }
    }
    tx.execute(
        "INSERT INTO airlock_audit_chain_head (id, seq, hash) VALUES (1, $1, $2)
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        &[&head.seq, &head.hash],
    )
    .await
    .map_err(unavailable)?;
    tx.batch_execute(
        "ALTER TABLE airlock_audit_events ALTER COLUMN prev_hash SET NOT NULL,
                                          ALTER COLUMN hash SET NOT NULL",
    )
    .await
    .map_err(unavailable)?;
    Ok(())
}

/// Holds one LISTEN connection and turns notifications into wake-ups until it breaks.
async fn listen_once(
    config: &tokio_postgres::Config,
    hub: &crate::review::hub::ReviewHub,
) -> Result<(), String> {
    use futures::StreamExt;
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {REVIEW_CHANNEL}");
    {
        let listen = client.batch_execute(&statement);
        // The connection must be polled for LISTEN to complete; drive both.
        tokio::pin!(listen);
        loop {
            tokio::select! {
                r = &mut listen => { r.map_err(|e| e.to_string())?; break; }
                m = messages.next() => match m {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => hub.wake(n.payload()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("connection closed".into()),
                },
            }
        }
    }
    while let Some(m) = messages.next().await {
        match m {
            Ok(tokio_postgres::AsyncMessage::Notification(n)) => hub.wake(n.payload()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    drop(client);
    Err("connection closed".into())
}
