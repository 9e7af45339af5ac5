//! Results kept after a run, so that asking again never runs anything again.
//!
//! An approved request runs once. The agent that sent it may not see the answer (its
//! connection dropped, its framework timed out) and retries with the same
//! `Idempotency-Key`; it must then get what the run answered, not a stale "pending" and not
//! a second run. What must stay true:
//! - What is kept is exactly what the requester was sent: rows after masking, the same
//!   header and trailer. Nothing unmasked is ever written here.
//! - Only the requester reads it back (the store matches `issuer/subject`), and only until
//!   it expires; expired results are deleted on the next write.
//! - It is bounded: a result whose rows exceed [`MAX_KEPT_BYTES`] is not kept at all (a
//!   partial result would look complete); the retry is then told the outcome instead.
//! - It is stored before the run is marked done, so a retry that finds the run done finds
//!   its result too (when it was kept).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::Gateway;
use super::query::{AppliedLimits, Output, RowsRun, Summary};
use crate::backend::Column;
use crate::store::KeptResult;

/// Largest result (serialized rows) kept for a retry.
pub(crate) const MAX_KEPT_BYTES: usize = 1024 * 1024;

/// What is kept of a finished execution.
// Externally tagged on purpose: an internally tagged enum buffers its content, and
// `RawValue` rows cannot be read back from a buffer.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kept {
    Rows(KeptRows),
    Command(KeptCommand),
    /// An HTTP API's answer, masked as it was sent.
    Http(Box<super::http::HttpResult>),
    /// It failed (or was cancelled); the problem its requester got, or would have.
    Failed {
        #[serde(default)]
        problem: serde_json::Value,
    },
}

/// A command's whole output as its requester was (or would have been) sent it.
#[derive(Serialize, Deserialize)]
pub(crate) struct KeptCommand {
    pub(crate) execution_id: String,
    pub(crate) session_id: String,
    pub(crate) rule: String,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) summary: super::command::ExecSummary,
}

/// A query result as its requester was sent it.
#[derive(Serialize, Deserialize)]
pub(crate) struct KeptRows {
    pub(crate) execution_id: String,
    pub(crate) rule: String,
    pub(crate) columns: Vec<Column>,
    pub(crate) limits: AppliedLimits,
    pub(crate) rows: Vec<Box<RawValue>>,
    pub(crate) summary: Summary,
}

impl KeptRows {
    /// The kept result as a run the API answers like any other (JSON or NDJSON).
    pub(crate) fn into_run(self) -> RowsRun {
        let (tx, rx) = mpsc::channel(crate::backend::STREAM_BUFFER);
        let KeptRows {
            execution_id,
            rule,
            columns,
            limits,
            rows,
            summary,
        } = self;
        tokio::spawn(async move {
            for row in rows {
                if tx.send(Output::Row(row)).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Output::End(summary)).await;
        });
        RowsRun {
            execution_id,
            rule,
            columns,
            limits,
            rows: rx,
        }
    }
}

impl KeptCommand {
    /// The kept output as a command run the API answers like any other.
    pub(crate) fn into_run(self) -> super::command::CommandRun {
        use super::command::ExecOutput;
        let (tx, rx) = mpsc::channel(4);
        let KeptCommand {
            execution_id,
            session_id,
            rule,
            stdout,
            stderr,
            summary,
        } = self;
        tokio::spawn(async move {
            for out in [ExecOutput::Stdout(stdout), ExecOutput::Stderr(stderr)] {
                if tx.send(out).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(ExecOutput::End(summary)).await;
        });
        super::command::CommandRun {
            execution_id,
            session_id,
            rule,
            output: rx,
        }
    }
}

/// Collects a run's rows as they are sent, up to [`MAX_KEPT_BYTES`].
pub(crate) struct Keeper {
    execution_id: String,
    rule: String,
    requester: String,
    until: DateTime<Utc>,
    columns: Vec<Column>,
    /// `None` once the rows passed the cap: nothing will be kept.
    rows: Option<Vec<Box<RawValue>>>,
    bytes: usize,
}

impl Keeper {
    pub(crate) fn new(
        execution_id: &str,
        rule: &str,
        requester: String,
        until: DateTime<Utc>,
    ) -> Keeper {
        Keeper {
            execution_id: execution_id.to_string(),
            rule: rule.to_string(),
            requester,
            until,
            columns: Vec::new(),
            rows: Some(Vec::new()),
            bytes: 0,
        }
    }

    pub(crate) fn columns(&mut self, columns: &[Column]) {
        self.columns = columns.to_vec();
    }

    /// One row exactly as sent.
    pub(crate) fn row(&mut self, row: &RawValue) {
        self.bytes = self.bytes.saturating_add(row.get().len() + 1);
        if self.bytes > MAX_KEPT_BYTES {
            self.rows = None;
        } else if let Some(rows) = &mut self.rows {
            rows.push(row.to_owned());
        }
    }

    /// Stores the result that ended with `summary`, if it fit. A store that cannot take it
    /// costs the retry its result (it is told the outcome instead), never the run.
    pub(crate) async fn keep(self, gateway: &Gateway, summary: &Summary, limits: AppliedLimits) {
        let Some(rows) = self.rows else {
            return;
        };
        let kept = Kept::Rows(KeptRows {
            execution_id: self.execution_id,
            rule: self.rule,
            columns: self.columns,
            limits,
            rows,
            summary: summary.clone(),
        });
        store(gateway, &kept, self.requester, self.until).await;
    }
}

impl Kept {
    /// The kept result as an answer the API sends like any other (JSON or NDJSON).
    pub(crate) fn into_answer(self) -> Result<super::Answer, super::problem::Problem> {
        match self {
            Kept::Rows(rows) => Ok(super::Answer::Rows(rows.into_run())),
            Kept::Command(command) => Ok(super::Answer::Command(command.into_run())),
            Kept::Http(result) => Ok(super::Answer::Http(result)),
            Kept::Failed { problem } => Err(super::problem::Problem::from_body(&problem)),
        }
    }

    pub(crate) fn execution_id(&self) -> Option<&str> {
        match self {
            Kept::Rows(r) => Some(&r.execution_id),
            Kept::Command(c) => Some(&c.execution_id),
            Kept::Http(h) => Some(&h.execution_id),
            Kept::Failed { problem } => problem.get("execution_id").and_then(|v| v.as_str()),
        }
    }

    /// Serialized rows (or output) size, to hold results to a cap.
    pub(crate) fn size(&self) -> usize {
        match self {
            Kept::Rows(r) => r.rows.iter().map(|row| row.get().len() + 1).sum(),
            Kept::Command(c) => c.stdout.len() + c.stderr.len(),
            Kept::Http(h) => h.body.as_ref().map_or(0, |b| b.to_string().len()),
            Kept::Failed { .. } => 0,
        }
    }
}

/// Writes `kept` for `requester` until `until`. A store that cannot take it costs the
/// requester the kept copy (a retry or a job's result fetch is told so), never the run.
pub(crate) async fn store(gateway: &Gateway, kept: &Kept, requester: String, until: DateTime<Utc>) {
    let Some(execution_id) = kept.execution_id().map(str::to_string) else {
        return;
    };
    let body = match serde_json::to_string(kept) {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(error = %e, execution_id = %execution_id, "result not kept");
            return;
        }
    };
    let result = KeptResult {
        execution_id,
        requester,
        body,
        expires_at: until,
    };
    if let Err(e) = gateway.store.put_result(&result).await {
        tracing::warn!(error = %e, execution_id = %result.execution_id, "result not kept");
    }
}

/// The kept result of `execution_id` for `requester`, if it is still kept.
pub(crate) async fn fetch(
    gateway: &Gateway,
    execution_id: &str,
    requester: &str,
) -> Result<Option<Kept>, super::problem::Problem> {
    let body = gateway
        .store
        .get_result(execution_id, requester, Utc::now())
        .await
        .map_err(|_| super::problem::Problem::audit_unavailable())?;
    Ok(body.and_then(|b| match serde_json::from_str(&b) {
        Ok(kept) => Some(kept),
        Err(e) => {
            tracing::warn!(error = %e, execution_id, "a kept result could not be read back");
            None
        }
    }))
}
