//! What a pooled connection carries from one request to the next: the statements Airlock
//! prepared on it, and nothing else.
//!
//! What must stay true:
//! - No session state an agent's statement can create survives its request. A request
//!   ends with its transaction's end and the reset, in one message for a streamed read
//!   ([`READ_ONLY_END`]) and right after it otherwise ([`reset`]), and the
//!   connection goes back to the pool only if every part succeeded. The reset is
//!   `DISCARD ALL` without its `DEALLOCATE ALL` (which would drop the statement cache) and
//!   without `DISCARD PLANS` (plans are revalidated when `search_path` or the objects they
//!   use change): settings (`SET`, `set_config`, the role), cursors, `LISTEN`, advisory
//!   locks, temporary tables and sequence state (`currval`, `lastval`). Whether SQL-level
//!   prepared statements exist is answered in the same message and, if some do, they are
//!   deallocated (with the statement cache) in a second one. That check is text the server
//!   parses every time, never a prepared statement an agent's code could replace.
//! - Every transaction runs under a server-side `statement_timeout`, a backstop for the
//!   client-side deadline: the connection's default (a startup option, which a client
//!   option keeps above any role or database setting), or its own `SET LOCAL` when the
//!   request's timeout differs. The default holds at every request's start because nothing
//!   a request sets survives its end: `ROLLBACK` undoes every setting made in the
//!   transaction, and after a `COMMIT` the reset's `RESET ALL` returns each to its startup
//!   value.
//! - The reset runs after every request, whatever the inspector found. Parsed facts cannot
//!   prove a request leaves the session clean: a view, a row-level security policy or a
//!   domain check runs code the statement does not name, and that code can call
//!   `set_config`, take an advisory lock, `LISTEN` or `PREPARE` (tested by
//!   `views_that_change_the_session_leave_nothing_for_the_next_agent`).
//! - The statement cache is bounded ([`MAX_CACHED_STATEMENTS`]) and lives and dies with the
//!   connection; its statements are protocol-level, named by the driver, and never callable
//!   from SQL (`EXECUTE` only reaches SQL-level ones).

use deadpool_postgres::ClientWrapper;
use tokio_postgres::{SimpleQueryMessage, Statement};

/// Statements kept prepared per connection; past it the connection's cache starts over
/// (dropped statements are closed on the server by the driver).
pub(super) const MAX_CACHED_STATEMENTS: usize = 256;

/// What no reset statement clears without also dropping the statement cache: releases
/// session advisory locks and answers whether SQL-level prepared statements exist, so the
/// rare session that has some pays for `DEALLOCATE ALL` (see [`clear_leftovers`]) and the
/// common one does not. (The set-returning function rather than its view: a third of the
/// cost.)
///
/// It is sent as text, parsed by the server every time, never as a prepared statement:
/// code an agent's statement runs (a function behind a view) can `DEALLOCATE` a named
/// statement of this session and `PREPARE` another under its name, and a replaced check
/// would answer "clean" and run whatever it was replaced with after every later request.
/// Text cannot be replaced; a replaced cached statement of the agent's own is SQL-level,
/// which this check finds and deallocates.
macro_rules! leftovers {
    () => {
        "SELECT pg_catalog.pg_advisory_unlock_all(), \
         EXISTS (SELECT FROM pg_catalog.pg_prepared_statement() p WHERE p.from_sql)"
    };
}

/// Everything `DISCARD ALL` resets except prepared statements and cached plans, then
/// `leftovers!`. Runs after the transaction's end, as separate statements of one simple
/// query (one implicit transaction block, so `DISCARD TEMP` takes effect at its end).
/// `RESET ALL` returns `statement_timeout` to the connection's default, a startup option
/// (see `PostgresBackend::new`).
const RESET: &str = concat!(
    "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; DISCARD TEMP; \
     DISCARD SEQUENCES; ",
    leftovers!()
);

/// How a request's transaction starts, with its own server-side timeout in the same
/// message when it has one (see [`own_timeout_sql`]).
pub(super) fn begin_sql(read_only: bool, own_timeout: Option<&str>) -> String {
    let start = if read_only {
        "START TRANSACTION READ ONLY"
    } else {
        "START TRANSACTION"
    };
    match own_timeout {
        Some(set) => format!("{start}; {set}"),
        None => start.to_string(),
    }
}

/// The `SET LOCAL` a transaction needs when its server-side timeout is not the connection's
/// default; `None` when it is, which saves the server a statement per request.
pub(super) fn own_timeout_sql(timeout_ms: u64, default_ms: u64) -> Option<String> {
    (timeout_ms != default_ms).then(|| format!("SET LOCAL statement_timeout = {timeout_ms}"))
}

/// How a read-only transaction ends: `ROLLBACK`, then the part of [`RESET`] a rolled-back
/// transaction can need. A rollback undoes settings (`SET`, `set_config`, the role and
/// session user), `LISTEN`, held cursors and temp tables created in it, and a read-only
/// transaction refuses `nextval` and `setval`; what survives a rollback is session advisory
/// locks and SQL-level prepared statements, both of which a function behind a view can
/// create (each case is tried in the tests).
pub(super) const READ_ONLY_END: &str = concat!("ROLLBACK; ", leftovers!());

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
    clear_leftovers(client, &messages).await
}

/// The second half of [`reset`], for a caller that sent [`READ_ONLY_END`] itself: reads
/// the `leftovers!` row (the last row answered) and clears what it found.
pub(super) async fn clear_leftovers(
    client: &ClientWrapper,
    messages: &[SimpleQueryMessage],
) -> Result<(), EndError> {
    let row = messages
        .iter()
        .rev()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .ok_or(EndError::Unexpected)?;
    let prepared = match row.get(1) {
        Some("t") => true,
        Some("f") => false,
        _ => return Err(EndError::Unexpected),
    };
    if prepared {
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
    /// The reset's answer did not say whether prepared statements are left.
    Unexpected,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_sets_its_timeout_only_when_it_is_not_the_default() {
        assert_eq!(own_timeout_sql(31_000, 31_000), None);
        let own = own_timeout_sql(2_000, 31_000);
        assert_eq!(own.as_deref(), Some("SET LOCAL statement_timeout = 2000"));
        assert_eq!(
            begin_sql(true, own.as_deref()),
            "START TRANSACTION READ ONLY; SET LOCAL statement_timeout = 2000"
        );
        assert_eq!(begin_sql(true, None), "START TRANSACTION READ ONLY");
    }
}
