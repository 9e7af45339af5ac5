//! What a pooled connection carries from one request to the next: the statements Airlock
//! prepared on it, and nothing else.
//!
//! What must stay true:
//! - No session state an agent's statement can create survives its request. A request
//!   ends with [`end_sql`]: the transaction's end and the reset, in one message, and the
//!   connection goes back to the pool only if every part succeeded. The reset is
//!   `DISCARD ALL` without its `DEALLOCATE ALL` (which would drop the statement cache) and
//!   without `DISCARD PLANS` (plans are revalidated when `search_path` or the objects they
//!   use change): settings (`SET`, `set_config`, the role), cursors, `LISTEN`, advisory
//!   locks, temporary tables and sequence state (`currval`, `lastval`). SQL-level prepared
//!   statements, the one thing it leaves, are counted in the same message and, if any
//!   exist, deallocated with the cache.
//! - The reset runs after every request, whatever the inspector found. Parsed facts cannot
//!   prove a request leaves the session clean: a view, a row-level security policy or a
//!   domain check runs code the statement does not name, and that code can call
//!   `set_config`, take an advisory lock, `LISTEN` or `PREPARE` (tested in
//!   `tests/integration/session_state.rs`).
//! - The statement cache is bounded ([`MAX_CACHED_STATEMENTS`]) and lives and dies with the
//!   connection; its statements are protocol-level, named by the driver, and never callable
//!   from SQL (`EXECUTE` only reaches SQL-level ones).

use deadpool_postgres::ClientWrapper;
use tokio_postgres::{SimpleQueryMessage, Statement};

/// Statements kept prepared per connection; past it the connection's cache starts over
/// (dropped statements are closed on the server by the driver).
pub(super) const MAX_CACHED_STATEMENTS: usize = 256;

/// Everything `DISCARD ALL` resets except prepared statements and cached plans, then the
/// count of SQL-level prepared statements, which the caller deallocates if there are any.
/// Runs after the transaction's end, as separate statements of one simple query (each in
/// its own implicit transaction block, so `DISCARD TEMP` and `UNLISTEN` take effect).
const RESET: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; \
     SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES; \
     SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql";

/// How a request's transaction starts, with the server-side timeout in the same message.
pub(super) fn begin_sql(read_only: bool, timeout_ms: u64) -> String {
    let start = if read_only {
        "START TRANSACTION READ ONLY"
    } else {
        "START TRANSACTION"
    };
    format!("{start}; SET LOCAL statement_timeout = {timeout_ms}")
}

/// How a request ends: `COMMIT` or `ROLLBACK`, then the session reset.
pub(super) fn end_sql(commit: bool) -> String {
    let end = if commit { "COMMIT" } else { "ROLLBACK" };
    format!("{end}; {RESET}")
}

/// The statement prepared on this connection for `sql`, from the cache when it was
/// prepared here before.
pub(super) async fn prepare(
    client: &ClientWrapper,
    sql: &str,
) -> Result<Statement, tokio_postgres::Error> {
    if client.statement_cache.size() >= MAX_CACHED_STATEMENTS {
        client.statement_cache.clear();
    }
    client.prepare_cached(sql).await
}

/// Resets the session after a transaction that has ended; deallocates SQL-level prepared
/// statements if the request left any. `Err` means the connection must not be reused.
pub(super) async fn reset(client: &ClientWrapper) -> Result<(), EndError> {
    let messages = client
        .simple_query(RESET)
        .await
        .map_err(EndError::Database)?;
    left_prepared_statements(client, &messages).await
}

/// The second half of [`reset`], for a caller that sent [`end_sql`] itself.
pub(super) async fn left_prepared_statements(
    client: &ClientWrapper,
    messages: &[SimpleQueryMessage],
) -> Result<(), EndError> {
    let count = messages
        .iter()
        .rev()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0),
            _ => None,
        })
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or(EndError::Unexpected)?;
    if count > 0 {
        client.statement_cache.clear();
        client
            .batch_execute("DEALLOCATE ALL")
            .await
            .map_err(EndError::Database)?;
    }
    Ok(())
}

/// Why a request's end failed; either way the connection is closed.
#[derive(Debug)]
pub(super) enum EndError {
    Database(tokio_postgres::Error),
    /// The reset's answer did not carry the prepared-statement count.
    Unexpected,
}
