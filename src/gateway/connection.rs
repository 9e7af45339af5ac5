//! A configured target as the core uses it: its config, its backend, its verification state
//! and the schema cache column lineage reads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::http::HttpBackend;
use crate::backend::{BackendError, ExecBackend, SqlBackend, Target};
use crate::config::ConnectionConfig;
use crate::inspect::lineage::SchemaInfo;

/// How long a connection's schema is trusted for lineage before it is read again.
pub(crate) const SCHEMA_TTL: Duration = Duration::from_secs(60);

pub(crate) struct Connection {
    pub(crate) config: ConnectionConfig,
    pub(crate) target: Target,
    /// Digest of the connection's config: approvals are bound to it.
    pub(crate) version: String,
    /// Set once the startup checks (privileges, not the store) have passed. A target that
    /// was down at startup is checked on first use instead, before anything touches it:
    /// admission calls [`Connection::ensure_verified`] before any target I/O.
    pub(crate) verified: tokio::sync::OnceCell<()>,
    /// Tables and columns for column lineage, refreshed after [`SCHEMA_TTL`].
    schema: tokio::sync::Mutex<Option<(Instant, Arc<SchemaInfo>)>>,
}

impl Connection {
    pub(crate) fn new(config: ConnectionConfig, target: Target, version: String) -> Connection {
        Connection {
            config,
            target,
            version,
            verified: tokio::sync::OnceCell::new(),
            schema: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// The schema for lineage. If it cannot be read, an empty schema is returned: lineage
    /// then cannot expand `*`, and those outputs are masked (fail closed). Only called on a
    /// verified connection.
    pub(crate) async fn schema_info(&self) -> Arc<SchemaInfo> {
        let mut cached = self.schema.lock().await;
        if let Some((at, info)) = cached.as_ref()
            && at.elapsed() < SCHEMA_TTL
        {
            return info.clone();
        }
        let Target::Sql(backend) = &self.target else {
            return Arc::new(SchemaInfo::default());
        };
        match backend.schema().await {
            Ok(tables) => {
                let mut info = SchemaInfo::default();
                for t in tables {
                    let columns: Vec<String> =
                        t.columns.iter().map(|c| c.name.to_lowercase()).collect();
                    let name = t.name.to_lowercase();
                    if let Some(schema) = &t.schema {
                        info.tables
                            .insert(format!("{}.{name}", schema.to_lowercase()), columns.clone());
                    }
                    info.tables.entry(name).or_insert(columns);
                }
                let info = Arc::new(info);
                *cached = Some((Instant::now(), info.clone()));
                info
            }
            Err(e) => {
                tracing::warn!(connection = %self.config.name, error = %e, "schema not readable; lineage will mask conservatively");
                Arc::new(SchemaInfo::default())
            }
        }
    }

    /// The SQL backend, or `None` for a command target.
    pub(crate) fn sql(&self) -> Option<&Arc<dyn SqlBackend>> {
        match &self.target {
            Target::Sql(b) => Some(b),
            Target::Exec(_) | Target::Http(_) => None,
        }
    }

    /// The command backend, or `None` for a SQL target.
    pub(crate) fn exec(&self) -> Option<&Arc<dyn ExecBackend>> {
        match &self.target {
            Target::Exec(b) => Some(b),
            Target::Sql(_) | Target::Http(_) => None,
        }
    }

    /// The HTTP API backend, or `None` for a SQL or command target.
    pub(crate) fn http(&self) -> Option<&Arc<HttpBackend>> {
        match &self.target {
            Target::Http(b) => Some(b),
            Target::Sql(_) | Target::Exec(_) => None,
        }
    }

    /// Runs the privilege and own-store checks once; later calls return at once.
    pub(crate) async fn ensure_verified(&self) -> Result<(), BackendError> {
        self.verified
            .get_or_try_init(|| self.target.verify())
            .await
            .map(|_| ())
    }
}
