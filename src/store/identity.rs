//! What Airlock's own store is, so no connection can be pointed at it.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreIdentity {
    /// Canonical path of the SQLite store file.
    Sqlite(PathBuf),
    /// Host (lower-cased), port and database of the PostgreSQL store.
    Postgres {
        host: String,
        port: u16,
        dbname: String,
    },
}

impl StoreIdentity {
    /// True when a PostgreSQL target at (host, port, dbname) is this store.
    pub fn is_postgres_target(&self, host: &str, port: u16, dbname: &str) -> bool {
        match self {
            StoreIdentity::Postgres {
                host: h,
                port: p,
                dbname: d,
            } => *p == port && d == dbname && same_host(h, host),
            StoreIdentity::Sqlite(_) => false,
        }
    }

    /// True when a SQLite target file is this store's file.
    pub fn is_sqlite_target(&self, canonical: &std::path::Path) -> bool {
        matches!(self, StoreIdentity::Sqlite(p) if p == canonical)
    }
}

fn same_host(a: &str, b: &str) -> bool {
    let loopback = |h: &str| matches!(h, "localhost" | "127.0.0.1" | "::1" | "[::1]");
    a.eq_ignore_ascii_case(b) || (loopback(a) && loopback(b))
}
