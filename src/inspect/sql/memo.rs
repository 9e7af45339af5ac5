//! Inspection results remembered by statement text.
//!
//! Agents repeat the same statements with different parameters, and inspecting one (two
//! parses, the rendering's fixpoint check, and on PostgreSQL the server's grammar) costs far
//! more than the rest of admission. What must stay true:
//! - [`inspect`](super::inspect) is a pure function of (dialect, text): nothing about a
//!   connection, a principal or the time goes into it, so a remembered result is the result.
//!   Anything that would make it depend on more (a per-connection setting read at inspection
//!   time) must become part of the key.
//! - Memory stays bounded: at most [`ENTRIES`] results, and only statements up to
//!   [`MAX_TEXT_BYTES`] are kept (the text is stored twice, as key and as rendering).
//! - Refusals ([`InspectError`]) are cheap to recompute and are not kept.

use std::num::NonZeroUsize;
use std::sync::{LazyLock, Mutex};

use lru::LruCache;

use super::{InspectError, Inspected, inspect};
use crate::config::ConnectionKind;

/// Results kept, least recently used evicted first.
const ENTRIES: usize = 2048;
/// Longer statements are inspected every time: they are rare, and keeping them would let
/// the cache hold `ENTRIES` × 256 KiB.
const MAX_TEXT_BYTES: usize = 4 * 1024;

type Key = (ConnectionKind, Box<str>);

static REMEMBERED: LazyLock<Mutex<LruCache<Key, Inspected>>> = LazyLock::new(|| {
    let entries = NonZeroUsize::new(ENTRIES).unwrap_or(NonZeroUsize::MIN);
    Mutex::new(LruCache::new(entries))
});

/// [`inspect`], answered from memory when the same text was inspected for the same dialect.
pub fn inspect_memoized(kind: ConnectionKind, sql: &str) -> Result<Inspected, InspectError> {
    if sql.len() > MAX_TEXT_BYTES {
        return inspect(kind, sql);
    }
    let key: Key = (kind, sql.into());
    // A poisoned lock only means another request panicked while holding it; the map itself
    // is still consistent (every operation on it is a single call).
    if let Some(hit) = REMEMBERED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
    {
        return Ok(hit.clone());
    }
    // Inspected outside the lock: two requests racing on a new text both inspect it, and
    // both get the same answer.
    let inspected = inspect(kind, sql)?;
    REMEMBERED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .put(key, inspected.clone());
    Ok(inspected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_results_equal_fresh_ones() {
        let cases = [
            (ConnectionKind::Postgres, "SELECT * FROM t WHERE id = $1"),
            (
                ConnectionKind::Postgres,
                "select  *  from T /* c */ where id = $1",
            ),
            (ConnectionKind::Mysql, "SELECT * FROM t WHERE id = ?"),
            (ConnectionKind::Mysql, "SELECT 'a\\'b'"),
            (ConnectionKind::Postgres, "SELECT 'a\\'b'"),
            (ConnectionKind::Postgres, "DELETE FROM t"),
            (ConnectionKind::Postgres, "SELEC * FROM t"),
        ];
        for _ in 0..2 {
            for (kind, sql) in cases {
                assert_eq!(inspect_memoized(kind, sql), inspect(kind, sql), "{sql}");
            }
        }
    }

    #[test]
    fn the_dialect_is_part_of_the_key() {
        // The same text means different things to PostgreSQL and MySQL: a backslash escapes
        // a quote only in MySQL, so the PostgreSQL reading is a different statement.
        let sql = "SELECT 'a\\' OR 1=1 -- '";
        let pg = inspect_memoized(ConnectionKind::Postgres, sql);
        let my = inspect_memoized(ConnectionKind::Mysql, sql);
        assert_eq!(pg, inspect(ConnectionKind::Postgres, sql));
        assert_eq!(my, inspect(ConnectionKind::Mysql, sql));
        assert_ne!(pg, my);
    }

    #[test]
    fn refusals_and_long_texts_are_not_kept() {
        assert_eq!(
            inspect_memoized(ConnectionKind::Postgres, "  "),
            Err(InspectError::Empty)
        );
        let long = format!("SELECT {}1", "1, ".repeat(MAX_TEXT_BYTES / 3));
        assert_eq!(
            inspect_memoized(ConnectionKind::Postgres, &long),
            inspect(ConnectionKind::Postgres, &long)
        );
    }
}
