//! Part of `sql.rs`: statement-kind helpers, the tautology check behind `missing_where`,
//! and table-name folding and rendering per dialect.

use super::*;

/// PostgreSQL built-in operators sqlparser has no variant for (range and geometric
/// operators). Any other operator sqlparser does not know may be user-defined.
pub(super) const BUILTIN_CUSTOM_OPERATORS: &[&str] = &[
    "-|-", "&<|", "|&>", "<<|", "|>>", "<^", ">^", "?-", "?|", "?-|", "?||", "@-@", "##", "~=",
];

pub(super) fn is_write(kind: StatementKind) -> bool {
    matches!(
        kind,
        StatementKind::Insert
            | StatementKind::Update
            | StatementKind::Delete
            | StatementKind::Merge
            | StatementKind::SelectInto
            | StatementKind::Copy
    )
}

/// Whether PostgreSQL `EXPLAIN (...)` options turn ANALYZE on. Only an explicit false
/// spelling turns it off; PostgreSQL accepts more (prefixes like `of`), which then count as
/// on (fail closed).
pub(super) fn analyze_option(options: &[UtilityOption]) -> bool {
    options.iter().any(|o| {
        let name = o.name.value.to_ascii_lowercase();
        (name == "analyze" || name == "analyse") && !o.arg.as_ref().is_some_and(is_false_word)
    })
}

pub(super) fn is_false_word(expr: &Expr) -> bool {
    let word = match expr {
        Expr::Value(v) => match &v.value {
            Value::Boolean(b) => return !b,
            Value::Number(n, _) => n.to_string(),
            Value::SingleQuotedString(s) => s.clone(),
            _ => return false,
        },
        Expr::Identifier(ident) => ident.value.clone(),
        _ => return false,
    };
    matches!(
        word.to_ascii_lowercase().as_str(),
        "false" | "off" | "no" | "0"
    )
}

/// The truth value of a WHERE predicate built only from literals, if the check can tell.
/// Depth-bounded: the tree can be as deep as the input is long.
pub(super) fn constant_truth(expr: &Expr, depth: usize) -> Option<bool> {
    let depth = depth.checked_sub(1)?;
    match expr {
        Expr::Nested(inner) | Expr::IsTrue(inner) => constant_truth(inner, depth),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => constant_truth(expr, depth).map(|b| !b),
        Expr::Value(v) => match &v.value {
            Value::Boolean(b) => Some(*b),
            // MySQL and SQLite take a number as a truth value; PostgreSQL refuses it.
            Value::Number(n, _) => n.to_string().parse::<f64>().ok().map(|f| f != 0.0),
            _ => None,
        },
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::And => {
                let (l, r) = (constant_truth(left, depth), constant_truth(right, depth));
                match (l, r) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                }
            }
            BinaryOperator::Or => {
                let (l, r) = (constant_truth(left, depth), constant_truth(right, depth));
                match (l, r) {
                    (Some(true), _) | (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                }
            }
            _ => compare_literals(left, op, right),
        },
        _ => None,
    }
}

pub(super) fn compare_literals(left: &Expr, op: &BinaryOperator, right: &Expr) -> Option<bool> {
    let (Expr::Value(l), Expr::Value(r)) = (left, right) else {
        return None;
    };
    match (&l.value, &r.value) {
        (Value::Number(a, _), Value::Number(b, _)) => {
            let a: f64 = a.to_string().parse().ok()?;
            let b: f64 = b.to_string().parse().ok()?;
            match op {
                BinaryOperator::Eq => Some(a == b),
                BinaryOperator::NotEq => Some(a != b),
                BinaryOperator::Lt => Some(a < b),
                BinaryOperator::LtEq => Some(a <= b),
                BinaryOperator::Gt => Some(a > b),
                BinaryOperator::GtEq => Some(a >= b),
                _ => None,
            }
        }
        // Only equality: collation decides ordering and, in MySQL, case-insensitive equality,
        // so only "identical strings are equal" is certain.
        (Value::SingleQuotedString(a), Value::SingleQuotedString(b))
            if *op == BinaryOperator::Eq && a == b =>
        {
            Some(true)
        }
        _ => None,
    }
}

/// Table factors of FROM-like lists, through parenthesised joins. Iterative: nesting of
/// parenthesised joins is bounded by the parser, but this code does not rely on it.
pub(super) fn table_factors(list: &[TableWithJoins]) -> Vec<&TableFactor> {
    let mut out = Vec::new();
    let mut stack: Vec<&TableWithJoins> = list.iter().rev().collect();
    while let Some(twj) = stack.pop() {
        for factor in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
            match factor {
                TableFactor::NestedJoin {
                    table_with_joins, ..
                } => stack.push(table_with_joins),
                other => out.push(other),
            }
        }
    }
    out
}

/// Names of the plain tables in FROM-like lists: the tables an UPDATE or DELETE can write.
pub(super) fn table_names(list: &[TableWithJoins]) -> Vec<&ObjectName> {
    table_factors(list)
        .into_iter()
        .filter_map(|f| match f {
            TableFactor::Table {
                name, args: None, ..
            } => Some(name),
            _ => None,
        })
        .collect()
}

/// One identifier as the server resolves it (see [`Facts::tables_read`]).
pub(crate) fn fold(kind: ConnectionKind, ident: &Ident) -> String {
    match kind {
        ConnectionKind::Postgres => {
            let mut s = if ident.quote_style.is_some() {
                ident.value.clone()
            } else {
                ident.value.to_ascii_lowercase()
            };
            // NAMEDATALEN - 1; the server cuts at a character boundary.
            let mut end = s.len().min(63);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s
        }
        ConnectionKind::Mysql => ident.value.to_lowercase(),
        ConnectionKind::Sqlite
        | ConnectionKind::Ssh
        | ConnectionKind::Kubernetes
        | ConnectionKind::Http => ident.value.to_ascii_lowercase(),
    }
}

/// A qualified name, parts folded and joined by '.'; `None` for an empty name.
pub(crate) fn render(kind: ConnectionKind, parts: &[&Ident]) -> Option<String> {
    let folded: Vec<String> = parts.iter().map(|ident| fold(kind, ident)).collect();
    join_parts(&folded)
}

/// Folded name parts joined by '.': a part that contains `.` or `"` is written
/// double-quoted, so a table named `a.b` cannot pose as schema `a`, table `b`.
pub(crate) fn join_parts<S: AsRef<str>>(parts: &[S]) -> Option<String> {
    if parts.is_empty() {
        return None;
    }
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        let part = part.as_ref();
        if i > 0 {
            out.push('.');
        }
        if part.contains(['.', '"']) {
            out.push('"');
            out.push_str(&part.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(part);
        }
    }
    Some(out)
}

pub(super) fn classify(statement: &Statement) -> StatementKind {
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
