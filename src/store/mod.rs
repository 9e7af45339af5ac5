//! Airlock's own state: the audit log (and, as issues add them, reviews and recordings).
//!
//! Two engines behind one trait: embedded SQLite (default, one instance) and PostgreSQL
//! (shared by any number of stateless instances).

mod identity;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use identity::StoreIdentity;

use crate::audit::AuditEvent;
use crate::audit::chain::{ChainHead, ChainRow};
use crate::config::Config;
use crate::identity::Principal;
use crate::review::{ReviewRecord, ReviewStatus};

/// A recorded session (asciicast v2): metadata; the lines are separate rows.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "0190f5c2-7a4f-7aa0-b1c2-3d4e5f607182", "execution_id": "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21", "kind": "exec", "connection": "web-1", "issuer": "dev", "subject": "agent-1", "command": "df -h /", "started_at": "2025-01-01T12:00:00Z", "ended_at": "2025-01-01T12:00:01Z", "status": "ended", "exit_code": 0}))]
pub struct SessionRecord {
    /// The session id.
    pub id: String,
    /// The execution (audit) the session belongs to.
    pub execution_id: String,
    /// `exec` (a command) or `shell` (an interactive shell).
    #[schema(value_type = SessionKind)]
    pub kind: String,
    /// The connection it ran on.
    pub connection: String,
    /// The owner's configured issuer name.
    pub issuer: String,
    /// The owner's subject (`sub`).
    pub subject: String,
    /// The command as recorded (masked).
    pub command: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended (absent while running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// `running`, `ended`, or `failed` (the command failed or its recording could not be
    /// written).
    #[schema(value_type = SessionStatus)]
    pub status: String,
    /// The command's or shell's exit code, once ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Head of the hash chain after the last line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// What a recorded session was (schema of `SessionRecord.kind`).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase", example = "exec")]
#[allow(dead_code)]
pub enum SessionKind {
    Exec,
    Shell,
}

/// Where a recorded session stands (schema of `SessionRecord.status`).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase", example = "ended")]
#[allow(dead_code)]
pub enum SessionStatus {
    Running,
    Ended,
    Failed,
}

/// Filters for listing sessions; newest first.
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    pub connection: Option<String>,
    pub subject: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
    pub limit: usize,
}

/// How to find a held request.
#[derive(Debug, Clone, Copy)]
pub enum ReviewLookup<'a> {
    Id(&'a str),
    Execution(&'a str),
    /// An agent's retried request: same requester (`issuer/subject`), same key.
    Idempotency {
        requester: &'a str,
        key: &'a str,
    },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot take writes right now (locked, down): fail closed.
    #[error("audit store unavailable: {0}")]
    Unavailable(String),
    #[error("audit store error: {0}")]
    Other(String),
}

/// Filters for reading the audit log; newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub connection: Option<String>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub outcome: Option<String>,
    pub execution_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only events with `seq` below this (the cursor of the previous page).
    pub before_seq: Option<i64>,
    pub limit: usize,
}

/// A single-use shell ticket as the store keeps it: the SHA-256 of the ticket, never the
/// ticket itself.
#[derive(Debug, Clone)]
pub struct TicketRecord {
    pub digest: String,
    pub connection: String,
    pub principal: Principal,
    pub expires_at: DateTime<Utc>,
}

/// A signed-in console session as the store keeps it: the SHA-256 of its cookie, never the
/// cookie itself.
#[derive(Debug, Clone)]
pub struct ConsoleSessionRecord {
    pub digest: String,
    pub principal: Principal,
    pub csrf: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// The absolute end, whatever the activity.
    pub expires_at: DateTime<Utc>,
}

/// A console sign-in in progress, keyed by the SHA-256 of its secret: an OIDC sign-in
/// between the redirect to the identity provider and its callback (keyed by its `state`), or
/// a one-time sign-in link (keyed by its code, `principal` set).
#[derive(Debug, Clone)]
pub struct ConsoleLoginRecord {
    pub digest: String,
    pub issuer: String,
    pub verifier: String,
    pub nonce: String,
    pub redirect_uri: String,
    /// Who a sign-in link signs in; `None` for an OIDC sign-in.
    pub principal: Option<Principal>,
    pub expires_at: DateTime<Utc>,
}

/// A result kept after its run ([`crate::gateway::results`]): only its requester reads it,
/// and only until it expires.
#[derive(Debug, Clone)]
pub struct KeptResult {
    pub execution_id: String,
    /// `issuer/subject` of the requester.
    pub requester: String,
    /// The result as JSON, masked as its requester was shown it.
    pub body: String,
    pub expires_at: DateTime<Utc>,
}

/// One line of a recording as stored: its place in the session and its hash-chain head.
#[derive(Debug, Clone, Copy)]
pub struct SessionLine<'a> {
    pub session_id: &'a str,
    pub seq: i64,
    /// The asciicast v2 event, as JSON text.
    pub line: &'a str,
    /// The hash chain's head after this line.
    pub chain: &'a str,
}

thread_local! {
    static BLOCKING_ALLOWED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` on a thread that exists to wait on the store (the audit writer's): a store
/// whose work is blocking (SQLite) does it right there instead of handing it to the
/// blocking pool and waiting to be woken. Everywhere else store work never blocks an async
/// worker thread.
pub fn blocking_allowed<T>(f: impl FnOnce() -> T) -> T {
    BLOCKING_ALLOWED.with(|allowed| allowed.set(true));
    let out = f();
    BLOCKING_ALLOWED.with(|allowed| allowed.set(false));
    out
}

/// Whether this thread is one where store work may block (see [`blocking_allowed`]).
pub(crate) fn may_block() -> bool {
    BLOCKING_ALLOWED.with(|allowed| allowed.get())
}

#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Appends events in one transaction; idempotent by event id. Each new event becomes the
    /// next link of the audit hash chain ([`crate::audit::chain`]), the head read and moved
    /// in that same transaction; a replayed one adds no link.
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError>;

    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;

    /// The audit hash chain's recorded head (its last link); `None` if the record is gone.
    async fn audit_chain_head(&self) -> Result<Option<ChainHead>, StoreError>;

    /// Up to `limit` audit rows with `seq > after`, in `seq` order, with their chain columns
    /// and the record exactly as hashed ([`crate::audit::chain`]).
    async fn audit_chain_page(&self, after: i64, limit: usize)
    -> Result<Vec<ChainRow>, StoreError>;

    /// `begin` events older than `started_before` that have no `end`: the request died
    /// with its process. Returns them so the caller can write `interrupted` ends.
    async fn unfinished(
        &self,
        started_before: DateTime<Utc>,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    async fn ping(&self) -> Result<(), StoreError>;

    fn identity(&self) -> StoreIdentity;

    /// Stores a new held request. `Ok(false)`: the requester already filed one with this
    /// idempotency key (look it up instead).
    async fn insert_review(&self, record: &ReviewRecord) -> Result<bool, StoreError>;

    async fn get_review(&self, by: ReviewLookup<'_>) -> Result<Option<ReviewRecord>, StoreError>;

    /// Reviews with the given status (all when `None`), pending first, then newest first.
    async fn list_reviews(
        &self,
        status: Option<ReviewStatus>,
        limit: usize,
    ) -> Result<Vec<ReviewRecord>, StoreError>;

    /// Starts a session with its first line (the asciicast header).
    /// Stores a new session and its first line (the asciicast header, `seq` 0), at once.
    async fn create_session(
        &self,
        s: &SessionRecord,
        header: &SessionLine<'_>,
    ) -> Result<(), StoreError>;

    /// Appends one event line; `seq` increases by one per line.
    async fn append_session_line(&self, line: &SessionLine<'_>) -> Result<(), StoreError>;

    /// Marks a session ended (or failed) with its final chain head.
    async fn finish_session(&self, s: &SessionRecord) -> Result<(), StoreError>;

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;

    async fn list_sessions(&self, q: &SessionQuery) -> Result<Vec<SessionRecord>, StoreError>;

    /// The lines of a session in order, with their chain values.
    async fn session_lines(&self, id: &str) -> Result<Vec<(String, String)>, StoreError>;

    /// Retention: deletes sessions started before `t`; returns how many.
    async fn delete_sessions_before(&self, t: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Wakes `hub` when another instance changes a review (PostgreSQL LISTEN/NOTIFY). The
    /// embedded store is single-instance: in-process wake-ups are all there is.
    fn subscribe_reviews(&self, _hub: Arc<crate::review::hub::ReviewHub>) {}

    /// Compare-and-swap: writes `record` (with `version = expected + 1`) only if the stored
    /// version is still `expected`. `Ok(false)` means someone else changed it first.
    async fn swap_review(&self, record: &ReviewRecord, expected: i64) -> Result<bool, StoreError>;

    /// Keeps a console session and drops expired ones.
    async fn put_console_session(&self, s: &ConsoleSessionRecord) -> Result<(), StoreError>;
    /// The session with this cookie digest, expired or not (the caller decides).
    async fn console_session(
        &self,
        digest: &str,
    ) -> Result<Option<ConsoleSessionRecord>, StoreError>;
    /// Records activity on a session (for the idle timeout).
    async fn touch_console_session(
        &self,
        digest: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Ends a session (sign-out, expiry).
    async fn delete_console_session(&self, digest: &str) -> Result<(), StoreError>;
    /// Keeps an OIDC sign-in in progress and drops expired ones.
    async fn put_console_login(&self, l: &ConsoleLoginRecord) -> Result<(), StoreError>;
    /// Takes (deletes and returns) a sign-in in progress: each `state` is redeemed once,
    /// even by instances racing on the same callback.
    async fn take_console_login(
        &self,
        digest: &str,
    ) -> Result<Option<ConsoleLoginRecord>, StoreError>;

    /// Keeps a shell ticket (by its digest only) and drops expired ones.
    async fn put_ticket(&self, ticket: &TicketRecord) -> Result<(), StoreError>;

    /// Keeps a run's result (replacing one kept for the same execution) and drops expired
    /// ones.
    async fn put_result(&self, result: &KeptResult) -> Result<(), StoreError>;

    /// Bytes of unexpired results kept for `requester` (its quota's use).
    async fn kept_bytes(&self, requester: &str, now: DateTime<Utc>) -> Result<u64, StoreError>;

    /// The unexpired result of `execution_id` kept for `requester`, if any.
    async fn get_result(
        &self,
        execution_id: &str,
        requester: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError>;

    /// Asks the instance running job `execution_id` to cancel it (it polls for these).
    async fn request_cancel(&self, execution_id: &str, at: DateTime<Utc>)
    -> Result<(), StoreError>;

    /// Of `execution_ids`, those whose cancel was requested; the requests are consumed.
    async fn take_cancels(&self, execution_ids: &[String]) -> Result<Vec<String>, StoreError>;

    /// Takes the unexpired ticket with `digest` for `connection`: across every instance on
    /// the store, at most one caller gets it (the row is deleted by the same statement that
    /// reads it).
    async fn take_ticket(
        &self,
        digest: &str,
        connection: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Principal>, StoreError>;
}

/// Opens the configured store and applies its migrations.
pub async fn open(config: &Config, data_dir: &std::path::Path) -> Result<Arc<dyn Store>, String> {
    match &config.store.url {
        Some(url) => Ok(Arc::new(
            postgres::PostgresStore::open(url, &config.store).await?,
        )),
        None => Ok(Arc::new(sqlite::SqliteStore::open(
            &data_dir.join("airlock.db"),
            &config.store,
        )?)),
    }
}
