//! SQL inspection with sqlparser, in the connection's own dialect.
//!
//! Invariants:
//! - The statement is parsed, never pattern-matched: comments, case and quoting cannot hide
//!   what a statement is.
//! - Every `Statement` variant the code does not classify falls into `Other`; sqlparser's
//!   enum is not `#[non_exhaustive]`, so the catch-all arm is the default-deny arm.
//! - Input the parser rejects, or that carries MySQL/MariaDB executable comments (which the
//!   server executes but the parser treats as comments), is `unparsed`.
//! - Parsing is bounded: the text length by [`MAX_SQL_BYTES`], the nesting by
//!   [`RECURSION_LIMIT`], so a hostile statement cannot exhaust the stack.

use serde::{Deserialize, Serialize};
use sqlparser::ast::{SetExpr, Statement};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

use crate::config::ConnectionKind;

/// Longest statement the inspector accepts; longer ones are refused before parsing.
pub const MAX_SQL_BYTES: usize = 256 * 1024;
/// Deepest expression/query nesting the parser follows before refusing.
pub const RECURSION_LIMIT: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatementKind {
    Select,
    SelectInto,
    Insert,
    Update,
    Delete,
    Merge,
    Create,
    Alter,
    Drop,
    Truncate,
    Privilege,
    Copy,
    Dynamic,
    Set,
    Transaction,
    Explain,
    Lock,
    Maintenance,
    Pragma,
    Attach,
    Show,
    Other,
}

/// What the inspector learned about a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Facts {
    pub statement_count: usize,
    /// The kind of each statement, in order.
    pub kinds: Vec<StatementKind>,
    /// The input could not be fully accounted for.
    pub unparsed: bool,
}

/// Why the inspector refuses to look at a statement at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    #[error("the statement is {0} bytes; the limit is {MAX_SQL_BYTES}")]
    TooLong(usize),
    #[error("the statement is empty")]
    Empty,
}

fn dialect(kind: ConnectionKind) -> Box<dyn Dialect> {
    match kind {
        ConnectionKind::Postgres => Box::new(PostgreSqlDialect {}),
        ConnectionKind::Mysql => Box::new(MySqlDialect {}),
        ConnectionKind::Sqlite => Box::new(SQLiteDialect {}),
    }
}

/// Inspects one request's SQL text.
pub fn inspect(kind: ConnectionKind, sql: &str) -> Result<Facts, InspectError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(InspectError::TooLong(sql.len()));
    }
    if sql.trim().is_empty() {
        return Err(InspectError::Empty);
    }
    let executable_comment =
        kind == ConnectionKind::Mysql && (sql.contains("/*!") || sql.contains("/*M!"));
    let dialect = dialect(kind);
    let parsed = Parser::new(dialect.as_ref())
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements());
    match parsed {
        Ok(statements) if !statements.is_empty() => Ok(Facts {
            statement_count: statements.len(),
            kinds: statements.iter().map(classify).collect(),
            unparsed: executable_comment,
        }),
        // Only comments, or a parse error: count what a server would likely see as one
        // statement so a multi-statement rule cannot be dodged by breaking the parser.
        _ => Ok(Facts {
            statement_count: 1,
            kinds: vec![StatementKind::Other],
            unparsed: true,
        }),
    }
}

fn classify(statement: &Statement) -> StatementKind {
    use StatementKind as K;
    match statement {
        Statement::Query(q) => match q.body.as_ref() {
            SetExpr::Select(s) if s.into.is_some() => K::SelectInto,
            SetExpr::Insert(_) => K::Insert,
            SetExpr::Update(_) => K::Update,
            SetExpr::Delete(_) => K::Delete,
            SetExpr::Merge(_) => K::Merge,
            _ => K::Select,
        },
        Statement::Insert(_) => K::Insert,
        Statement::Update { .. } => K::Update,
        Statement::Delete(_) => K::Delete,
        Statement::Merge { .. } => K::Merge,
        Statement::Truncate { .. } => K::Truncate,
        Statement::Copy { .. } | Statement::LoadData { .. } | Statement::Unload { .. } => K::Copy,
        Statement::Call(_)
        | Statement::Execute { .. }
        | Statement::Prepare { .. }
        | Statement::Deallocate { .. } => K::Dynamic,
        Statement::Set(_) | Statement::Reset(_) | Statement::Discard { .. } => K::Set,
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => K::Transaction,
        Statement::Explain { .. } | Statement::ExplainTable { .. } => K::Explain,
        Statement::Lock(_) | Statement::LockTables { .. } | Statement::UnlockTables => K::Lock,
        Statement::Vacuum(_) | Statement::Analyze(_) | Statement::OptimizeTable { .. } => {
            K::Maintenance
        }
        Statement::Pragma { .. } => K::Pragma,
        Statement::AttachDatabase { .. } => K::Attach,
        Statement::Grant(_)
        | Statement::GrantRole(_)
        | Statement::Revoke(_)
        | Statement::RevokeRole(_)
        | Statement::Deny(_)
        | Statement::AlterDefaultPrivileges(_)
        | Statement::CreateRole(_)
        | Statement::AlterRole { .. }
        | Statement::CreateUser(_)
        | Statement::AlterUser(_) => K::Privilege,
        Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. } => K::Show,
        Statement::Drop { .. }
        | Statement::DropFunction(_)
        | Statement::DropDomain(_)
        | Statement::DropProcedure { .. }
        | Statement::DropTrigger(_)
        | Statement::DropExtension(_)
        | Statement::DropPolicy(_) => K::Drop,
        Statement::AlterTable(_)
        | Statement::AlterIndex { .. }
        | Statement::AlterView { .. }
        | Statement::AlterSchema(_)
        | Statement::AlterType(_)
        | Statement::RenameTable(_) => K::Alter,
        Statement::CreateTable(_)
        | Statement::CreateView(_)
        | Statement::CreateIndex(_)
        | Statement::CreateSchema { .. }
        | Statement::CreateDatabase { .. }
        | Statement::CreateFunction(_)
        | Statement::CreateProcedure { .. }
        | Statement::CreateTrigger(_)
        | Statement::CreateSequence { .. }
        | Statement::CreateType { .. }
        | Statement::CreateDomain(_)
        | Statement::CreateExtension(_)
        | Statement::CreateVirtualTable { .. } => K::Create,
        // Default-deny arm: every statement the code does not know is `Other`.
        _ => K::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(kind: ConnectionKind, sql: &str) -> Facts {
        inspect(kind, sql).unwrap()
    }

    #[test]
    fn classifies_basic_statements() {
        let pg = ConnectionKind::Postgres;
        assert_eq!(kinds(pg, "select 1").kinds, vec![StatementKind::Select]);
        assert_eq!(
            kinds(pg, "/* hi */ DeLeTe FROM t").kinds,
            vec![StatementKind::Delete]
        );
        assert_eq!(kinds(pg, "select 1; select 2").statement_count, 2);
        assert!(kinds(pg, "selec 1").unparsed);
        assert_eq!(
            kinds(pg, "select * into t2 from t").kinds,
            vec![StatementKind::SelectInto]
        );
    }

    #[test]
    fn mysql_executable_comments_are_unparsed() {
        let f = kinds(ConnectionKind::Mysql, "select 1 /*! , sleep(10) */");
        assert!(f.unparsed);
        assert!(kinds(ConnectionKind::Mysql, "select 1 /*M! , 2 */").unparsed);
        assert!(!kinds(ConnectionKind::Postgres, "select 1 /* ! */").unparsed);
    }

    #[test]
    fn bounds_are_enforced() {
        let deep = format!("select {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(kinds(ConnectionKind::Postgres, &deep).unparsed);
        let long = format!("select '{}'", "x".repeat(MAX_SQL_BYTES));
        assert!(matches!(
            inspect(ConnectionKind::Postgres, &long),
            Err(InspectError::TooLong(_))
        ));
        assert_eq!(
            inspect(ConnectionKind::Postgres, "  "),
            Err(InspectError::Empty)
        );
    }
}
