//! Shared PostgreSQL store: any number of Airlock instances on one database.
//!
//! Invariants:
//! - Nothing that matters lives only in one process: every event is a row here.
//! - A batch of events is one multi-row INSERT in one transaction (one round trip), so group
//!   commit costs one commit for many requests.
//! - Migrations run under a transaction-scoped advisory lock, so instances starting
//!   together do not race.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::{AuditQuery, Store, StoreError, StoreIdentity};
use crate::audit::AuditEvent;
use crate::config::StoreConfig;

const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../../migrations/postgres/0001_audit.sql"))];
/// Arbitrary constant shared by all instances: the migration lock.
const MIGRATION_LOCK: i64 = 0x4169_724c_6f63_6b00;

pub struct PostgresStore {
    pool: Pool,
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
        let mut ids = Vec::with_capacity(events.len());
        let mut times = Vec::with_capacity(events.len());
        let mut phases = Vec::with_capacity(events.len());
        let mut executions = Vec::with_capacity(events.len());
        let mut issuers = Vec::with_capacity(events.len());
        let mut subjects = Vec::with_capacity(events.len());
        let mut connections = Vec::with_capacity(events.len());
        let mut outcomes = Vec::with_capacity(events.len());
        let mut records = Vec::with_capacity(events.len());
        for e in events {
            ids.push(e.id.clone());
            times.push(e.time);
            phases.push(e.phase.as_str().to_string());
            executions.push(e.execution_id.clone());
            issuers.push(e.principal.as_ref().map(|p| p.issuer.clone()));
            subjects.push(e.principal.as_ref().map(|p| p.subject.clone()));
            connections.push(e.connection.clone());
            outcomes.push(e.outcome.map(|o| o.as_str().to_string()));
            records.push(serde_json::to_value(e).map_err(|e| StoreError::Other(e.to_string()))?);
        }
        let client = self.pool.get().await.map_err(unavailable)?;
        let insert = async {
            client
                .execute(
                    "INSERT INTO airlock_audit_events
                        (id, time, phase, execution_id, issuer, subject, connection, outcome, record)
                     SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[],
                                          $5::text[], $6::text[], $7::text[], $8::text[], $9::jsonb[])
                     ORDER BY 2
                     ON CONFLICT (id) DO NOTHING",
                    &[
                        &ids,
                        &times,
                        &phases,
                        &executions,
                        &issuers,
                        &subjects,
                        &connections,
                        &outcomes,
                        &records,
                    ],
                )
                .await
        };
        match tokio::time::timeout(self.busy, insert).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => {
                // The write may still commit later; its outcome is unknown, so the pooled
                // client is dropped with the timed-out future and the caller fails closed.
                Err(StoreError::Unavailable("audit write timed out".into()))
            }
        }
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
                                   WHERE e.execution_id = b.execution_id AND e.phase = 'end')
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
}
