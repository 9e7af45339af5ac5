//! Queries: the execution task that pulls rows from a SQL backend, masks them by column
//! lineage and detectors, serialises them once, and streams them within the caps.
//!
//! What must stay true:
//! - The backend is pulled only as fast as the client reads (bounded channel); a client
//!   that goes away cancels the statement on the server.
//! - Limits an agent hits (rows, bytes, time) are reported in the trailer, never silent.
//! - Database errors echo values, so they pass the same masking as rows.

use std::time::Instant;

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::admit::{Admitted, Work};
use super::command::outcome_of;
use super::problem::Problem;
use super::record::{Ending, ExecutionRecord};
use crate::audit::Outcome;
use crate::backend::{BackendError, Column, RowEvent};
use crate::mask::plan::{ColumnTreatment, MaskedCounts, RequestMasking};

/// A query as the agent sent it. Unknown fields are refused (400 `malformed_body`).
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"sql": "SELECT id, email FROM customers WHERE city = ?", "params": ["Paris"], "max_rows": 100}))]
pub(crate) struct QueryRequest {
    /// Exactly one SQL statement. Use `$1`.. (PostgreSQL) or `?` (MySQL, SQLite) for params.
    /// Blank text is 400 `invalid_statement`.
    #[schema(
        min_length = 1,
        pattern = "\\S",
        example = "SELECT id, email FROM customers WHERE city = ?"
    )]
    pub(crate) sql: String,
    /// Positional parameters; sent separately from the statement, never interpolated.
    /// Strings, numbers, booleans and null bind as such; arrays and objects bind as their
    /// JSON text. Their number must match the statement's placeholders (400
    /// `invalid_params`).
    #[serde(default)]
    #[schema(example = json!(["Paris"]))]
    pub(crate) params: Vec<serde_json::Value>,
    /// Fewer rows than the connection's default, or more up to its `max_rows_ceiling`
    /// (`GET /v1/connections/{name}`); 0 or above the ceiling is 400 `invalid_limit`.
    #[schema(minimum = 1, example = 100)]
    #[serde(default, deserialize_with = "crate::wire::opt_count")]
    pub(crate) max_rows: Option<u64>,
    /// Byte cap on the serialized rows, 1 up to the connection's `max_bytes_ceiling`.
    #[schema(minimum = 1, example = 1048576)]
    #[serde(default, deserialize_with = "crate::wire::opt_count")]
    pub(crate) max_bytes: Option<u64>,
    /// Statement timeout in milliseconds, 1 up to the connection's `max_timeout_ms`.
    #[schema(minimum = 1, example = 5000)]
    #[serde(default, deserialize_with = "crate::wire::opt_count")]
    pub(crate) timeout_ms: Option<u64>,
}

/// The limits that applied to one execution.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"max_rows": 1000, "max_bytes": 10485760, "timeout_ms": 30000}))]
pub(crate) struct AppliedLimits {
    /// Rows returned at most; more make the result `truncated` (`max_rows`).
    pub(crate) max_rows: u64,
    /// Bytes of serialized rows at most; more make the result `truncated` (`max_bytes`).
    pub(crate) max_bytes: u64,
    /// The statement is cancelled after this many milliseconds (504 `timeout`).
    pub(crate) timeout_ms: u64,
}

/// Why a result stopped early: it hit `max_rows` or `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(example = "max_rows")]
#[serde(rename_all = "snake_case")]
pub(crate) enum Truncation {
    MaxRows,
    MaxBytes,
}

/// The trailer of a result: the NDJSON `{"type":"end",...}` line carries these fields.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"row_count": 2, "truncated": false, "masked": {"columns": {}, "detectors": {}}, "duration_ms": 4}))]
pub(crate) struct Summary {
    /// How many rows were sent.
    pub(crate) row_count: u64,
    /// More rows existed than were sent.
    pub(crate) truncated: bool,
    /// Which cap cut the result, when `truncated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) truncated_reason: Option<Truncation>,
    /// What to do about a truncated result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    /// Rows a write affected (absent for reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) affected_rows: Option<u64>,
    /// How many values were masked, per column and per detector.
    pub(crate) masked: MaskedCounts,
    /// Time from admission to the end of the result, in milliseconds.
    pub(crate) duration_ms: u64,
}

/// What the execution task streams to the API layer after the columns.
pub(crate) enum Output {
    /// One row, already serialized as a JSON array.
    Row(Box<RawValue>),
    End(Summary),
    Error(Problem),
}

/// A running query: its header and the stream of rows.
pub(crate) struct RowsRun {
    pub(crate) execution_id: String,
    pub(crate) rule: String,
    pub(crate) columns: Vec<Column>,
    pub(crate) limits: AppliedLimits,
    pub(crate) rows: mpsc::Receiver<Output>,
}

/// Commits the `begin` event, then starts the backend in the execution task.
pub(crate) async fn start(admitted: Admitted) -> Result<RowsRun, Problem> {
    let Work::Query {
        plan,
        limits,
        memory,
        ..
    } = admitted.work
    else {
        return Err(Problem::internal("not a query"));
    };
    let (gateway, conn, slot, masking) = (
        admitted.gateway,
        admitted.conn,
        admitted.slot,
        admitted.masking,
    );
    let Some(backend) = conn.sql().cloned() else {
        // Unreachable (admission checked the operation); nothing ran, so a claim goes back.
        if let Some(claim) = admitted.claim {
            super::review::release_claim(&gateway, claim).await;
        }
        return Err(Problem::internal("an admitted query lost its backend"));
    };
    let started = admitted.started;
    // An approved run's result is kept for the run window, for the requester's retry.
    let keeper = admitted.claim.as_ref().map(|claim| {
        let window = chrono::Duration::seconds(claim.run_window_secs as i64);
        super::results::Keeper::new(
            admitted.begin.execution_id.as_str(),
            admitted.begin.rule.as_deref().unwrap_or_default(),
            claim.requester.owner_key(),
            chrono::Utc::now() + window,
        )
    });
    let record =
        ExecutionRecord::open(gateway.clone(), admitted.begin, started, admitted.claim).await?;
    if let Some(opened) = admitted.opened {
        let _ = opened.send(());
    }
    let execution_id = record.execution_id().to_string();
    let rule = record.rule().to_string();
    let (started_tx, started_rx) = oneshot::channel();
    let (out_tx, out_rx) = mpsc::channel(crate::backend::STREAM_BUFFER);
    let cancel = gateway.shutdown.child_token();
    tokio::spawn(async move {
        let sql = plan.sql.clone();
        let stream = tokio::select! {
            r = backend.query(plan, cancel.clone()) => r,
            _ = out_tx.closed() => Err(BackendError::Cancelled),
        };
        let task = Task {
            _memory: memory,
            slot: Some(slot),
            masking,
            limits,
            out: out_tx,
            cancel,
            masked: MaskedCounts::default(),
            keeper,
        };
        let gateway_for_keep = gateway.clone();
        let ending = task
            .run(stream, &conn, &sql, started_tx, started, &gateway_for_keep)
            .await;
        // The handler answered when it read the trailer (or the error) above.
        record.finish_after_answer(ending).await;
    });
    match started_rx.await {
        Ok(Ok(columns)) => Ok(RowsRun {
            execution_id,
            rule,
            columns,
            limits,
            rows: out_rx,
        }),
        Ok(Err(problem)) => Err(problem.with("execution_id", execution_id)),
        Err(_) => Err(Problem::internal("the execution task stopped unexpectedly")
            .with("execution_id", execution_id)),
    }
}

/// The execution task's state: owns the backend stream until the result ends.
struct Task {
    /// Given back as soon as the backend is done, before the client sees the trailer: a
    /// client that sends its next request at once must find its slot free.
    slot: Option<super::slots::Slot>,
    /// The query's memory reservation: released when the task ends.
    _memory: Option<tokio::sync::OwnedSemaphorePermit>,
    masking: RequestMasking,
    limits: AppliedLimits,
    out: mpsc::Sender<Output>,
    cancel: tokio_util::sync::CancellationToken,
    masked: MaskedCounts,
    /// Collects the rows of an approved run, to answer a retry (see `results`).
    keeper: Option<super::results::Keeper>,
}

impl Task {
    /// Database errors echo values (`invalid input syntax: "4111-..."`). Where columns are
    /// protected, a derived value can be made to appear in any error text
    /// (`translate(ssn, ...)::int`), which content detectors cannot recognise: the server's
    /// text is then replaced by a fixed description of the SQLSTATE class, keeping the
    /// SQLSTATE and position. Only syntax and access-rule errors (class 42, SQLite's
    /// `SQLITE_ERROR`), which name the statement's own identifiers and types, keep their
    /// message. Everything left
    /// passes the detectors.
    fn problem(&mut self, e: BackendError) -> Problem {
        let e = match e {
            BackendError::Database(mut db) if self.masking.has_column_rules() => {
                let class = db.sqlstate.get(..2).unwrap_or("");
                if !names_only(&db) {
                    db.message = format!(
                        "{} (SQLSTATE {}; the server's message is withheld on a connection with protected columns)",
                        sqlstate_class(class),
                        db.sqlstate
                    );
                }
                db.detail = None;
                db.hint = None;
                let counts = &mut self.masked.detectors;
                db.message = self.masking.text(&db.message, counts);
                BackendError::Database(db)
            }
            BackendError::Database(mut db) if !self.masking.is_empty() => {
                let counts = &mut self.masked.detectors;
                db.message = self.masking.text(&db.message, counts);
                db.detail = db.detail.map(|d| self.masking.text(&d, counts));
                db.hint = db.hint.map(|h| self.masking.text(&h, counts));
                BackendError::Database(db)
            }
            other => other,
        };
        Problem::from(e)
    }

    fn masked(&self) -> Option<serde_json::Value> {
        (!self.masked.is_empty())
            .then(|| serde_json::to_value(&self.masked).ok())
            .flatten()
    }

    async fn run(
        mut self,
        stream: Result<crate::backend::RowStream, BackendError>,
        conn: &super::Connection,
        sql: &str,
        started_tx: oneshot::Sender<Result<Vec<Column>, Problem>>,
        started: Instant,
        gateway: &super::Gateway,
    ) -> Ending {
        // Until the header is known, a failure goes back to the waiting handler.
        let header = async {
            let mut stream = stream?;
            match stream.next().await {
                Some(Ok(RowEvent::Columns(c))) => Ok((stream, c)),
                Some(Err(e)) => Err(e),
                _ => Err(BackendError::Internal(
                    "the backend ended without a result header".into(),
                )),
            }
        };
        let (mut stream, columns) = match header.await {
            Ok(started) => started,
            Err(e) => {
                let problem = self.problem(e);
                let mut ending = Ending::failed(outcome_of(&problem), &problem);
                ending.masked = self.masked();
                self.slot = None;
                let _ = started_tx.send(Err(problem));
                return ending;
            }
        };
        // Which output column gets what, from where its data comes from.
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        let treatment = if self.masking.is_empty() {
            Vec::new()
        } else if self.masking.has_column_rules() {
            let schema = stream.drive(conn.schema_info()).await;
            let lineage =
                crate::inspect::lineage::lineage(conn.config.kind, sql, &schema, columns.len());
            self.masking.plan(&lineage)
        } else {
            vec![ColumnTreatment::Scan; columns.len()]
        };
        if let Some(keeper) = &mut self.keeper {
            keeper.columns(&columns);
        }
        if started_tx.send(Ok(columns)).is_err() {
            self.cancel.cancel();
            return Ending::with_class(Outcome::Cancelled, "client_gone");
        }

        let mut ending = Ending::ok();
        let mut row_count = 0u64;
        let mut bytes = 0u64;
        let mut truncated: Option<Truncation> = None;
        let mut affected = None;
        loop {
            // A client gone is checked directly first, then the next event taken if it is
            // ready at once (usually so in a stream): waiting on `closed()` for every row
            // would cost a notification per row.
            let event = if self.out.is_closed() {
                None
            } else {
                let mut next = std::pin::pin!(stream.next());
                match futures::poll!(next.as_mut()) {
                    std::task::Poll::Ready(ev) => Some(ev),
                    std::task::Poll::Pending => tokio::select! {
                        biased;
                        _ = self.out.closed() => None,
                        ev = next => Some(ev),
                    },
                }
            };
            let Some(event) = event else {
                self.cancel.cancel();
                ending = Ending::with_class(Outcome::Cancelled, "client_gone");
                break;
            };
            match event {
                Some(Ok(RowEvent::Row(mut values))) => {
                    if !self.masking.is_empty() {
                        self.masking
                            .row(&mut values, &names, &treatment, &mut self.masked);
                    }
                    let raw = match serde_json::value::to_raw_value(&values) {
                        Ok(r) => r,
                        Err(e) => {
                            let problem = self.problem(BackendError::Internal(format!(
                                "cannot serialize a row: {e}"
                            )));
                            ending = Ending::failed(Outcome::Error, &problem);
                            self.cancel.cancel();
                            let _ = stream.drive(self.out.send(Output::Error(problem))).await;
                            break;
                        }
                    };
                    let len = raw.get().len() as u64 + 1;
                    if bytes + len > self.limits.max_bytes {
                        truncated = Some(Truncation::MaxBytes);
                        self.cancel.cancel();
                        break;
                    }
                    bytes += len;
                    row_count += 1;
                    if let Some(keeper) = &mut self.keeper {
                        keeper.row(&raw);
                    }
                    // The backend's producer keeps running while the client is slow.
                    if stream.drive(self.out.send(Output::Row(raw))).await.is_err() {
                        self.cancel.cancel();
                        ending = Ending::with_class(Outcome::Cancelled, "client_gone");
                        break;
                    }
                }
                Some(Ok(RowEvent::End {
                    truncated: t,
                    affected_rows,
                })) => {
                    if t {
                        truncated = Some(Truncation::MaxRows);
                    }
                    affected = affected_rows;
                    break;
                }
                Some(Ok(RowEvent::Columns(_))) => {}
                other => {
                    let e = match other {
                        Some(Err(e)) => e,
                        _ => BackendError::Internal("the backend stream ended early".into()),
                    };
                    let problem = self.problem(e);
                    ending = Ending::failed(outcome_of(&problem), &problem);
                    // The producer may still be cleaning up (a cancel request on its way).
                    let _ = stream.drive(self.out.send(Output::Error(problem))).await;
                    break;
                }
            }
        }
        // Dropping the stream (with the token cancelled on early exits) stops the query on
        // the server and discards its connection.
        drop(stream);
        self.slot = None;
        if ending.outcome == Outcome::Ok {
            let summary = Summary {
                row_count,
                truncated: truncated.is_some(),
                truncated_reason: truncated,
                note: truncated.map(|t| t.note(&self.limits)),
                affected_rows: affected,
                masked: self.masked.clone(),
                duration_ms: started.elapsed().as_millis() as u64,
            };
            // Kept before the trailer is sent and the run is marked done: a retry that
            // finds it done finds its result.
            if let Some(keeper) = self.keeper.take() {
                keeper.keep(gateway, &summary, self.limits).await;
            }
            let _ = self.out.send(Output::End(summary)).await;
        }
        ending.row_count = Some(row_count);
        ending.byte_count = Some(bytes);
        ending.truncated = Some(truncated.is_some());
        ending.masked = self.masked();
        ending
    }
}

/// Whether a database error's message can only name what the statement itself says (its
/// tokens, tables and columns), never a value. Only a few exact errors qualify: a class
/// (42, or SQLite's catch-all SQLITE_ERROR) is not enough, since casting a value to a
/// name (`::regclass`, `::regproc`) or handing one to a function that quotes its argument
/// (`json_extract` paths) puts the value in the message of an "undefined object" or a
/// generic error.
fn names_only(db: &crate::backend::DatabaseError) -> bool {
    match db.sqlstate.as_str() {
        // PostgreSQL: syntax error, undefined column (a column reference is never built
        // from a value at run time).
        "42601" | "42703" => true,
        // MySQL/MariaDB: syntax error; unknown table, unknown column.
        "42000" => db.code == Some(1064),
        "42S02" | "42S22" => true,
        // SQLite reports every error as SQLITE_ERROR: only its prepare-time complaints
        // about the statement's own text are kept.
        "SQLITE_ERROR" => [
            "no such table:",
            "no such column:",
            "near \"",
            "incomplete input",
            "ambiguous column name:",
        ]
        .iter()
        .any(|p| db.message.starts_with(p)),
        _ => false,
    }
}

/// A fixed, value-free description of a SQLSTATE class (the first two characters).
fn sqlstate_class(class: &str) -> &'static str {
    match class {
        "42" => "the statement names something that does not exist, or is not allowed",
        "0A" => "feature not supported",
        "21" => "cardinality violation",
        "22" => "data exception: a value could not be converted, or is out of range",
        "23" => "integrity constraint violation",
        "25" => "invalid transaction state",
        "28" => "invalid authorization",
        "2B" | "2D" | "3B" | "40" => "transaction rolled back",
        "39" | "38" => "error in a function",
        "53" => "insufficient resources",
        "54" => "statement too complex",
        "55" => "object not in prerequisite state",
        "57" => "operator intervention",
        "P0" => "error raised by a procedure",
        "XX" => "internal error",
        "HY" | "S1" => "general error",
        _ => "the statement failed",
    }
}

impl Truncation {
    /// What to do about a truncated result.
    fn note(self, limits: &AppliedLimits) -> String {
        match self {
            Truncation::MaxRows => format!(
                "more rows exist than max_rows = {}; filter (WHERE), aggregate, or page with ORDER BY ... LIMIT/OFFSET",
                limits.max_rows
            ),
            Truncation::MaxBytes => format!(
                "the result exceeded max_bytes = {}; select fewer or narrower columns, or filter",
                limits.max_bytes
            ),
        }
    }
}
