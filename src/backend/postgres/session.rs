//! What a pooled connection carries from one request to the next: the statements Airlock
//! prepared on it, and nothing else.
//!
//! What must stay true:
//! - No session state an agent's statement can create survives its request. A request
//!   ends with its transaction's end and the reset, sent together for a streamed read
//!   ([`end_read_only`]) and right after it otherwise ([`reset`]), and the
//!   connection goes back to the pool only if every part succeeded. The reset is
//!   `DISCARD ALL` without its `DEALLOCATE ALL` (which would drop the statement cache) and
//!   without `DISCARD PLANS` (plans are revalidated when `search_path` or the objects they
//!   use change): settings (`SET`, `set_config`, the role), cursors, `LISTEN`, advisory
//!   locks, temporary tables and sequence state (`currval`, `lastval`). Whether SQL-level
//!   prepared statements exist is answered in the same round trip and, if some do, they are
//!   deallocated (with the statement cache) in a second one.
//! - The server-side `statement_timeout` a request runs under is the connection's default
//!   (a startup option, which `RESET ALL` returns to and a rolled-back `set_config` never
//!   leaves) or the request's own, `SET LOCAL` in its transaction.
//! - The reset runs after every request, whatever the inspector found. Parsed facts cannot
//!   prove a request leaves the session clean: a view, a row-level security policy or a
//!   domain check runs code the statement does not name, and that code can call
//!   `set_config`, take an advisory lock, `LISTEN` or `PREPARE` (tested by
//!   `views_that_change_the_session_leave_nothing_for_the_next_agent`).
//! - The statement cache is bounded ([`MAX_CACHED_STATEMENTS`]) and lives and dies with the
//!   connection; its statements are protocol-level, named by the driver, and never callable
//!   from SQL (`EXECUTE` only reaches SQL-level ones).

use deadpool_postgres::ClientWrapper;
use tokio_postgres::Statement;

/// Statements kept prepared per connection; past it the connection's cache starts over
/// (dropped statements are closed on the server by the driver).
pub(super) const MAX_CACHED_STATEMENTS: usize = 256;

/// What no reset statement clears without also dropping the statement cache: releases
/// session advisory locks and answers whether SQL-level prepared statements exist, so the
/// rare session that has some pays for `DEALLOCATE ALL` (see [`clear_leftovers`]) and the
/// common one does not. (The set-returning function rather than its view: a third of the
/// cost.) Prepared once per connection like any statement ([`prepare`]) and run through
/// Bind/Execute: parsing and planning it on every request cost the server more than the
/// agent's own lookup.
const LEFTOVERS: &str = "SELECT pg_catalog.pg_advisory_unlock_all(), \
     EXISTS (SELECT FROM pg_catalog.pg_prepared_statement() p WHERE p.from_sql)";

/// Everything `DISCARD ALL` resets except prepared statements and cached plans; the
/// [`LEFTOVERS`] check follows it. Runs after the transaction's end, as separate statements
/// of one simple query (one implicit transaction block, so `DISCARD TEMP` takes effect at
/// its end). `RESET ALL` returns `statement_timeout` to the connection's default, which is
/// a startup option (see `PostgresBackend::new`), not a session `SET`.
const RESET: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; \
     DISCARD TEMP; DISCARD SEQUENCES";

/// How a request's transaction starts. The server-side timeout is the session's (the
/// connection's default, set at startup) unless the request asked for another, which is
/// then set for this transaction only, in the same message.
pub(super) fn begin_sql(read_only: bool, timeout_ms: Option<u64>) -> String {
    let start = if read_only {
        "START TRANSACTION READ ONLY"
    } else {
        "START TRANSACTION"
    };
    match timeout_ms {
        Some(ms) => format!("{start}; SET LOCAL statement_timeout = {ms}"),
        None => start.to_string(),
    }
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

/// The [`LEFTOVERS`] check, prepared on this connection. Prepared before the request's
/// transaction starts, so that ending it needs no round trip of its own.
pub(super) async fn leftovers(client: &ClientWrapper) -> Result<Statement, tokio_postgres::Error> {
    prepare(client, LEFTOVERS).await
}

/// How a read-only transaction ends: `ROLLBACK`, then the [`LEFTOVERS`] check, sent
/// together when this future is first polled. A rollback undoes settings (`SET`,
/// `set_config`, the role and session user), `LISTEN`, held cursors and temp tables created
/// in it, and a read-only transaction refuses `nextval` and `setval`; what survives a
/// rollback is session advisory locks and SQL-level prepared statements, both of which a
/// function behind a view can create (each case is tried in the tests). The answer says
/// whether SQL-level prepared statements are left, for [`clear_leftovers`].
pub(super) async fn end_read_only(
    client: &ClientWrapper,
    leftovers: &Statement,
) -> Result<bool, EndError> {
    let (rolled_back, found) = futures::future::join(
        client.simple_query("ROLLBACK"),
        client.query(leftovers, &[]),
    )
    .await;
    rolled_back.map_err(EndError::Database)?;
    prepared_left(&found.map_err(EndError::Database)?)
}

/// Resets the session after a transaction that has ended; deallocates SQL-level prepared
/// statements if the request left any. `Err` means the connection must not be reused.
pub(super) async fn reset(client: &ClientWrapper, leftovers: &Statement) -> Result<(), EndError> {
    let (reset, found) =
        futures::future::join(client.simple_query(RESET), client.query(leftovers, &[])).await;
    reset.map_err(EndError::Database)?;
    let prepared = prepared_left(&found.map_err(EndError::Database)?)?;
    clear_leftovers(client, prepared).await
}

/// Reads the [`LEFTOVERS`] answer: whether SQL-level prepared statements exist.
fn prepared_left(rows: &[tokio_postgres::Row]) -> Result<bool, EndError> {
    match rows {
        [row] => row.try_get::<_, bool>(1).map_err(|_| EndError::Unexpected),
        _ => Err(EndError::Unexpected),
    }
}

/// Deallocates SQL-level prepared statements when the [`LEFTOVERS`] check found some (and
/// with them the statement cache, which `DEALLOCATE ALL` empties on the server too).
pub(super) async fn clear_leftovers(
    client: &ClientWrapper,
    prepared: bool,
) -> Result<(), EndError> {
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
