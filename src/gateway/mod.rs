//! The gateway core: one admission path and one execution record for every entry.
//!
//! ```text
//! entry (REST, NDJSON, WebSocket, review-run, ...)
//!   └─► admit::admit        slot ─► resolve + verify ─► limits ─► inspect ─► decide
//!                           ─► strict masking          (every refusal: admit::refuse)
//!         ├─► Held           review::hold (202; may wait and then run through admit again)
//!         └─► Admitted ─► start ─► record::ExecutionRecord::open  (audit begin, durable)
//!                               ─► query.rs | command.rs | shell.rs | schema.rs
//!                               ─► ExecutionRecord::finish         (audit end; drop = interrupted)
//! ```
//!
//! What must stay true:
//! - This module knows nothing of HTTP: entries hand it a [`admit::Request`] and get back a
//!   [`Answer`] or a [`problem::Problem`]; `api/` maps those to the wire.
//! - No entry re-implements a step: a refusal is audited only by [`admit::refuse`], a begin
//!   and end only by [`record::ExecutionRecord`].
//! - Dependencies run one way: `api` → `gateway` → domain modules (`backend`, `inspect`,
//!   `policy`, `mask`, `review`, `audit`, `recording`, `store`) → `config`. Nothing below
//!   imports `gateway` or `api`.

pub(crate) mod admit;
pub(crate) mod check;
pub(crate) mod command;
pub(crate) mod connection;
pub(crate) mod http;
pub(crate) mod jobs;
pub(crate) mod problem;
pub(crate) mod query;
pub(crate) mod record;
pub(crate) mod results;
pub(crate) mod review;
pub(crate) mod schema;
pub(crate) mod shell;
pub(crate) mod slots;

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::audit::writer::AuditWriter;
use crate::config::ShellsConfig;
use crate::identity::Principal;
use crate::mask::plan::Masking;
use crate::policy::Policy;
use crate::review::hub::ReviewHub;
use crate::review::notify::Notifier;
use crate::store::Store;

pub(crate) use admit::{Admission, Request};
pub(crate) use connection::Connection;
pub(crate) use problem::Problem;

/// Everything the core needs, built once at startup.
pub struct Gateway {
    pub(crate) policy: Policy,
    pub(crate) connections: HashMap<String, Arc<Connection>>,
    pub audit: AuditWriter,
    pub(crate) store: Arc<dyn Store>,
    /// Fires when the drain period is over: running executions are cancelled.
    pub shutdown: CancellationToken,
    pub(crate) slots: slots::Slots,
    /// Wakes requests waiting on a review decision.
    pub(crate) reviews: Arc<ReviewHub>,
    pub(crate) notifier: Option<Notifier>,
    pub(crate) masking: Masking,
    /// Running interactive shells, for admin terminate.
    pub(crate) shells: shell::Running,
    pub(crate) shells_config: ShellsConfig,
    /// Executions whose audit `end` is still to be written.
    pub(crate) in_flight: Arc<record::InFlight>,
    /// The bytes requests in flight may hold (`server.memory_budget_bytes`), in KiB permits.
    pub(crate) memory: Arc<tokio::sync::Semaphore>,
    /// The budget's size in KiB permits.
    pub(crate) memory_total: u64,
    /// Jobs running on this instance.
    pub(crate) jobs: jobs::Jobs,
    pub(crate) jobs_config: crate::config::JobsConfig,
}

impl Gateway {
    /// The memory budget as KiB permits (within what a semaphore can count), and their number.
    pub(crate) fn memory_budget(bytes: u64) -> (Arc<tokio::sync::Semaphore>, u64) {
        let kib = usize::try_from(bytes / 1024)
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        (
            Arc::new(tokio::sync::Semaphore::new(kib)),
            u64::try_from(kib).unwrap_or(u64::MAX),
        )
    }
}

/// Who is asking, as every entry knows it.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    /// The transport's request id, kept in the audit record.
    pub(crate) request_id: Option<String>,
}

/// What an admitted request turned into.
pub(crate) enum Answer {
    /// Rows are coming.
    Rows(query::RowsRun),
    /// A command is running; its output is coming.
    Command(command::CommandRun),
    /// An interactive shell is open.
    Shell(Box<shell::ShellSession>),
    /// Tables and columns.
    Schema(schema::SchemaView),
    /// An HTTP API's answer, whole (bodies are capped).
    Http(Box<http::HttpResult>),
    /// Held for human review (202).
    Held(review::HeldView),
}

/// Admits a request and starts what it asked for.
pub(crate) async fn serve(gateway: &Arc<Gateway>, request: Request) -> Result<Answer, Problem> {
    match admit::admit(gateway, request).await? {
        Admission::Held(view) => Ok(Answer::Held(view)),
        Admission::Kept(kept) => kept.into_answer(),
        Admission::Ready(admitted) => start(admitted).await,
    }
}

/// Starts an admitted request on its backend.
pub(crate) async fn start(admitted: Box<admit::Admitted>) -> Result<Answer, Problem> {
    let admitted = *admitted;
    match admitted.work {
        admit::Work::Query { .. } => query::start(admitted).await.map(Answer::Rows),
        admit::Work::Command(_) => command::start(admitted).await.map(Answer::Command),
        admit::Work::Shell(_) => shell::open(admitted)
            .await
            .map(|s| Answer::Shell(Box::new(s))),
        admit::Work::Schema => schema::read(admitted).await.map(Answer::Schema),
        admit::Work::Http(_) => http::run(admitted).await.map(|r| Answer::Http(Box::new(r))),
    }
}

#[cfg(test)]
mod tests;
