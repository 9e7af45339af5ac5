//! SQL inspection with sqlparser, in the connection's own dialect.
//!
//! Invariants:
//! - The statement is parsed, never pattern-matched: comments, case and quoting cannot hide
//!   what a statement is, and SQL inside string literals or comments is not SQL.
//! - Every `Statement` variant the code does not classify falls into `Other`; sqlparser's
//!   enum is not `#[non_exhaustive]`, so the catch-all arm is the default-deny arm.
//! - Input the parser rejects, input it stops reading before the end, and input that carries
//!   MySQL/MariaDB executable comments (which the server executes but the parser treats as
//!   comments) is `unparsed`. So is a parsed construct whose tables or functions the
//!   inspector cannot name.
//! - Tables, functions and nested statements are collected by sqlparser's generic visitor,
//!   which walks every node of every statement, so a construct the code does not know about
//!   cannot hide a table or a function call; the code only adds what the visitor cannot know
//!   (which names are write targets, CTE names, table-valued function names).
//! - Parsing is bounded: the text length by [`MAX_SQL_BYTES`], the parser's recursion by
//!   [`RECURSION_LIMIT`]. Left-associative chains (`1+1+1...`, `UNION` chains, `::int::int`)
//!   are built by loops, not recursion, so the tree can still be as deep as the input has
//!   tokens, and sqlparser's visitor, its `Drop` and its parser recurse over that depth. A
//!   stack overflow aborts the process (it cannot be caught), so input with more than
//!   [`INLINE_MAX_TOKENS`] tokens is inspected on its own thread whose stack grows with the
//!   token count; smaller input needs a bounded stack and runs on the caller's.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};
use sqlparser::ast::{
    BinaryOperator, CopySource, CopyTarget, Expr, FromTable, Ident, ObjectName, ObjectType,
    OnConflict, OnConflictAction, OnInsert, Query, Select, SelectInto, SetExpr, ShowCreateObject,
    Statement, TableFactor, TableObject, TableWithJoins, UnaryOperator, UtilityOption, Value,
    Visit, Visitor,
};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::functions::{self, Listing};
use crate::config::ConnectionKind;

/// Longest statement the inspector accepts; longer ones are refused before parsing.
pub const MAX_SQL_BYTES: usize = 256 * 1024;
/// Deepest expression/query nesting the parser follows before refusing.
pub const RECURSION_LIMIT: usize = 64;

/// Up to this many tokens the inspection runs on the caller's stack: the tree is then at
/// most this deep plus the parser's recursion, which the tests show fits in 512 KiB in an
/// unoptimised build (a tokio worker has 2 MiB). Above it, a thread costs ~50 µs.
pub(crate) const INLINE_MAX_TOKENS: usize = 4096;
/// Stack for the inspection thread before any per-token allowance: room for
/// [`RECURSION_LIMIT`] levels of the parser's recursive descent in an unoptimised build.
pub(crate) const STACK_BASE_BYTES: usize = 8 * 1024 * 1024;
/// Stack per token: a loop-built chain adds at most one tree level per token, and one level
/// of visiting or dropping takes well under this (measured: ~128 bytes unoptimised).
pub(crate) const STACK_PER_TOKEN_BYTES: usize = 512;
/// How deep the constant-`WHERE` check looks; deeper predicates count as real ones.
const CONSTANT_DEPTH: usize = 32;

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

/// Dangerous capabilities a statement reaches through a function call, or through a
/// statement form that grants the same capability (see [`Facts::function_classes`]).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FunctionClass {
    /// Reads, writes or lists files on the database server.
    FileAccess,
    /// Runs an operating-system program or loads native code.
    ProgramExecution,
    /// Opens network connections from the database server.
    Network,
    /// Changes server state: signals backends, reloads configuration, manages replication.
    ServerAdmin,
    /// Changes session settings that outlive the statement.
    SessionState,
    /// Takes or releases advisory/user locks that outlive the statement.
    Locking,
    /// Deliberately waits or burns time.
    Sleep,
    /// Touches large objects (PostgreSQL), which bypass table privileges.
    LargeObject,
    /// Writes something even inside a read-only-looking `SELECT` (sequences, notifications).
    SideEffect,
    /// Runs SQL given as a string, which the inspector cannot see.
    DynamicSql,
}

/// What the inspector learned about a request. `Default` is for building facts in tests
/// and rules; the inspector itself never starts from it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Facts {
    pub statement_count: usize,
    /// Kind of every statement, plus inner statements that execute: the statement under
    /// EXPLAIN ANALYZE (PostgreSQL `EXPLAIN ANALYZE`, `EXPLAIN (ANALYZE)`; MySQL
    /// `EXPLAIN ANALYZE`), a statement under `PREPARE` or in a parsed rule or trigger body
    /// (it runs later, out of the inspector's sight), and writes nested anywhere
    /// (data-modifying CTEs `WITH d AS (DELETE ...) SELECT`, etc.). Deduplicated, in
    /// first-seen order. Plain EXPLAIN (no ANALYZE) is only `explain`. MariaDB's
    /// `ANALYZE <statement>` does not parse, so it is `unparsed`.
    pub kinds: Vec<StatementKind>,
    /// The input could not be fully accounted for.
    pub unparsed: bool,
    /// Tables the request reads (or names without writing), normalised the way the server
    /// resolves names, qualified as written and joined by '.': `public.orders`, `orders`.
    /// - PostgreSQL: unquoted identifiers are lowercased (ASCII only, like the server with a
    ///   multibyte encoding), quoted ones are kept exactly (`"My Table"` is `My Table`), and
    ///   every identifier is cut to 63 bytes as the server does.
    /// - MySQL: every identifier is lowercased, quoted or not: backticks do not change how
    ///   MySQL compares names, and whether it compares table names case-insensitively depends
    ///   on `lower_case_table_names`, which the inspector cannot see. Folding means a rule
    ///   naming `orders` also matches `ORDERS` and `` `Orders` ``; on a case-sensitive server
    ///   those may be a distinct table, so an allow rule is broader by case than the server,
    ///   but no spelling slips past a deny rule.
    /// - SQLite: every identifier is ASCII-lowercased, quoted or not, because SQLite compares
    ///   all identifiers ASCII-case-insensitively.
    ///
    /// A part that contains `.` or `"` after folding is written double-quoted, so a table
    /// named `a.b` cannot pose as schema `a`, table `b`. CTE names are not tables; a CTE
    /// body only sees the CTEs before it (and itself under `RECURSIVE`), as in the servers,
    /// so `WITH t AS (SELECT * FROM t)` reads table `t`. Under a plain EXPLAIN every named
    /// table, including would-be write targets, counts as read. UPDATE, DELETE and MERGE
    /// targets (and upsert targets) are read as well as written: their WHERE clause, row
    /// count and RETURNING disclose the rows. Sorted, deduplicated.
    #[serde(default)]
    pub tables_read: Vec<String>,
    /// Tables the request writes when it runs: INSERT/UPDATE/DELETE/MERGE targets (every
    /// table of a MySQL multi-table UPDATE's join; MySQL multi-table DELETE targets resolved
    /// through their aliases), SELECT INTO, COPY FROM, TRUNCATE, and CREATE/ALTER/DROP/RENAME
    /// of tables and views. Same normalisation as `tables_read`. Sorted, deduplicated.
    #[serde(default)]
    pub tables_written: Vec<String>,
    /// Some UPDATE or DELETE that executes (at any nesting level) has no WHERE clause, or one
    /// that is a literal tautology: `WHERE true`, `WHERE 1`, `WHERE 1=1`, `WHERE 'a'='a'`,
    /// `WHERE NOT false`, `WHERE 2>1`, and AND/OR/parentheses over those. MySQL multi-table
    /// and `DELETE ... USING` count by their WHERE. This guards against accidents, not
    /// against an agent that means harm: any predicate the check does not evaluate
    /// (`WHERE id = id`, `WHERE id > -1`) counts as a real WHERE.
    #[serde(default)]
    pub missing_where: bool,
    /// Functions called anywhere, normalised like table names, as written
    /// (`pg_read_file`, `pg_catalog.pg_read_file`); includes `CALL` targets and table-valued
    /// functions in FROM. Sorted, deduplicated.
    #[serde(default)]
    pub functions: Vec<String>,
    /// Classes of dangerous functions called, looked up by the unqualified, lowercased name,
    /// so `PG_CATALOG.PG_READ_FILE` and a user's `myschema.pg_read_file` count too (fail
    /// closed). Statement forms that grant the same capability add their class as well:
    /// COPY to/from a server file (`file_access`), COPY ... PROGRAM (`program_execution`),
    /// SQLite ATTACH (`file_access`: it opens or creates any file). Counted under a plain
    /// EXPLAIN too. Sorted, deduplicated.
    #[serde(default)]
    pub function_classes: Vec<FunctionClass>,
    /// Some called function is on neither the dialect's known-safe list nor its dangerous
    /// lists. A schema-qualified call counts as listed only when qualified by the system
    /// schema (`pg_catalog` on PostgreSQL); `myschema.lower(x)` is user code and unlisted.
    /// `CALL` targets and user-defined operators (`OPERATOR(myschema.+)`, operators
    /// sqlparser does not know) are unlisted too.
    #[serde(default)]
    pub function_unlisted: bool,
    /// A write (insert/update/delete/merge/select-into/copy) that executes appears nested
    /// inside another statement: a CTE, a subquery, EXPLAIN ANALYZE, PREPARE, a rule or
    /// trigger body. The top-level statement's own write (including `WITH ... DELETE`) is
    /// not nested.
    #[serde(default)]
    pub nested_write: bool,
    /// For command requests (`exec`): what the shell lexer found. SQL facts are then empty,
    /// and only rules with command conditions (or none) apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<crate::inspect::shell::CommandFacts>,
    /// An interactive shell as a whole (it cannot be inspected line by line with certainty).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shell: bool,
}

impl Facts {
    /// The facts for input the inspector could not account for: one statement of unknown
    /// kind, so a multi-statement rule cannot be dodged by breaking the parser.
    fn unparsed() -> Facts {
        Facts {
            statement_count: 1,
            kinds: vec![StatementKind::Other],
            unparsed: true,
            ..Facts::default()
        }
    }
}

/// Why the inspector refuses to look at a statement at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    #[error("the statement is {0} bytes; the limit is {MAX_SQL_BYTES}")]
    TooLong(usize),
    #[error("the statement is empty")]
    Empty,
}

pub(crate) fn dialect(kind: ConnectionKind) -> Box<dyn Dialect> {
    match kind {
        ConnectionKind::Postgres => Box::new(PostgreSqlDialect {}),
        ConnectionKind::Mysql => Box::new(MySqlDialect {}),
        ConnectionKind::Sqlite => Box::new(SQLiteDialect {}),
        // Never reached with SQL (the pipeline refuses `query` on an ssh connection); the
        // strictest parse is the safe answer if it ever were.
        ConnectionKind::Ssh | ConnectionKind::Kubernetes => Box::new(PostgreSqlDialect {}),
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
    // No thread (resources exhausted), a panic in the parser, or input that is not exactly
    // parsed statements: nothing was accounted for.
    let mut facts = with_parsed(kind, sql, |statements| analyse(kind, statements))
        .unwrap_or_else(Facts::unparsed);
    facts.unparsed |= executable_comment;
    Ok(facts)
}

/// The one way SQL is parsed here, shared by the inspector and lineage: tokenize (a loop,
/// safe on any stack), parse with [`RECURSION_LIMIT`], and hand the statements to `walk`.
/// Input of more than [`INLINE_MAX_TOKENS`] tokens is parsed, walked and dropped on its own
/// thread whose stack grows with the input, since the tree can be as deep as the input has
/// tokens. `None`: the input is not one or more completely parsed statements.
pub(crate) fn with_parsed<R, F>(kind: ConnectionKind, sql: &str, walk: F) -> Option<R>
where
    R: Send,
    F: FnOnce(&[Statement]) -> R + Send,
{
    let tokens = Tokenizer::new(dialect(kind).as_ref(), sql)
        .with_unescape(true)
        .tokenize_with_location()
        .ok()?;
    let weight = weight(&tokens);
    let parse_and_walk = move || {
        let dialect = dialect(kind);
        let mut parser = Parser::new(dialect.as_ref())
            .with_recursion_limit(RECURSION_LIMIT)
            .with_tokens_with_locations(tokens);
        let statements = parser.parse_statements().ok()?;
        // `parse_statements` stops without error at an `END` keyword where it expects a
        // statement delimiter, so `SELECT 1 END DELETE FROM t` would parse as one SELECT.
        if statements.is_empty() || parser.peek_token_ref().token != Token::EOF {
            return None;
        }
        // The tree is dropped at the end of this closure, on the same stack as the walk.
        Some(walk(&statements))
    };
    if weight <= INLINE_MAX_TOKENS {
        parse_and_walk()
    } else {
        let stack = STACK_BASE_BYTES.saturating_add(weight.saturating_mul(STACK_PER_TOKEN_BYTES));
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("sql-parse".into())
                .stack_size(stack)
                .spawn_scoped(scope, parse_and_walk)
                .ok()
                .and_then(|handle| handle.join().ok())
                .flatten()
        })
    }
}

/// Tokens that can add a level to the tree: all but whitespace and comments.
pub(crate) fn weight(tokens: &[TokenWithSpan]) -> usize {
    tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .count()
}

/// Walks parsed statements into facts.
fn analyse(kind: ConnectionKind, statements: &[Statement]) -> Facts {
    let mut walker = Walker::new(kind);
    for statement in statements {
        walker.main_statements.clear();
        walker.main_selects.clear();
        walker.collect_main(statement);
        // The walker never breaks, so the flow result carries nothing.
        let _ = statement.visit(&mut walker);
    }
    walker.into_facts(statements.len())
}

/// One statement on the visitor's path.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// This statement runs when the request runs.
    executes: bool,
    /// Statements nested in this one run (false under a plain EXPLAIN).
    children_execute: bool,
}

/// CTE names visible from some point of the tree.
#[derive(Debug)]
struct Scope {
    names: Vec<String>,
    /// Index of an enclosing scope this one replaces: a CTE body sees only the CTEs before
    /// it, not the full list its WITH clause makes visible to the main query.
    hides: Option<usize>,
}

/// Collects facts while sqlparser's visitor walks a statement. Nodes are identified by
/// address, which is stable because the whole tree stays alive for the walk.
struct Walker {
    kind: ConnectionKind,
    kinds: Vec<StatementKind>,
    read: BTreeSet<String>,
    written: BTreeSet<String>,
    functions: BTreeSet<String>,
    classes: BTreeSet<FunctionClass>,
    function_unlisted: bool,
    missing_where: bool,
    nested_write: bool,
    unparsed: bool,
    frames: Vec<Frame>,
    /// The top-level statement's own work: it, and the DML/SELECT bodies of its query.
    main_statements: Vec<usize>,
    main_selects: Vec<usize>,
    /// Relation names that are not reads: write-only targets, table-valued function names.
    not_read: HashSet<usize>,
    scopes: Vec<Scope>,
    /// CTE body (query address) → (scope index of its WITH, CTE names the body sees).
    cte_bodies: HashMap<usize, (usize, Vec<String>)>,
    /// Scopes pushed per query on the visitor's path, popped when it leaves the query.
    query_scopes: Vec<usize>,
}

fn addr<T>(node: &T) -> usize {
    std::ptr::from_ref(node).addr()
}

impl Walker {
    fn new(kind: ConnectionKind) -> Walker {
        Walker {
            kind,
            kinds: Vec::new(),
            read: BTreeSet::new(),
            written: BTreeSet::new(),
            functions: BTreeSet::new(),
            classes: BTreeSet::new(),
            function_unlisted: false,
            missing_where: false,
            nested_write: false,
            unparsed: false,
            frames: Vec::new(),
            main_statements: Vec::new(),
            main_selects: Vec::new(),
            not_read: HashSet::new(),
            scopes: Vec::new(),
            cte_bodies: HashMap::new(),
            query_scopes: Vec::new(),
        }
    }

    fn into_facts(self, statement_count: usize) -> Facts {
        let mut kinds = Vec::new();
        for k in self.kinds {
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        Facts {
            statement_count,
            kinds,
            unparsed: self.unparsed,
            tables_read: self.read.into_iter().collect(),
            tables_written: self.written.into_iter().collect(),
            missing_where: self.missing_where,
            functions: self.functions.into_iter().collect(),
            function_classes: self.classes.into_iter().collect(),
            function_unlisted: self.function_unlisted,
            nested_write: self.nested_write,
            command: None,
            shell: false,
        }
    }

    /// Marks the top-level statement and the bodies of its query (through set operations)
    /// as its own work, so they do not count as nested. Iterative: set-operation chains are
    /// as long as the input.
    fn collect_main(&mut self, statement: &Statement) {
        self.main_statements.push(addr(statement));
        let Statement::Query(query) = statement else {
            return;
        };
        let mut stack: Vec<&SetExpr> = vec![query.body.as_ref()];
        while let Some(body) = stack.pop() {
            match body {
                SetExpr::SetOperation { left, right, .. } => {
                    stack.push(left);
                    stack.push(right);
                }
                SetExpr::Select(select) => self.main_selects.push(addr(select.as_ref())),
                SetExpr::Insert(s)
                | SetExpr::Update(s)
                | SetExpr::Delete(s)
                | SetExpr::Merge(s) => {
                    self.main_statements.push(addr(s));
                }
                SetExpr::Query(_) | SetExpr::Values(_) | SetExpr::Table(_) => {}
            }
        }
    }

    /// Whether the innermost statement on the path runs.
    fn executing(&self) -> bool {
        self.frames.last().is_none_or(|f| f.executes)
    }

    fn name(&mut self, name: &ObjectName) -> Option<String> {
        let parts: Option<Vec<&Ident>> = name.0.iter().map(|p| p.as_ident()).collect();
        let rendered = parts.and_then(|parts| render(self.kind, &parts));
        if rendered.is_none() {
            // A name computed at run time (`IDENTIFIER('...')`) or an empty one.
            self.unparsed = true;
        }
        rendered
    }

    fn add_read(&mut self, name: &ObjectName) {
        if let Some(n) = self.name(name) {
            self.read.insert(n);
        }
    }

    /// A write target. Outside execution it is only named, so it counts as read.
    fn add_target(&mut self, name: &ObjectName, executes: bool, also_read: bool) {
        let Some(n) = self.name(name) else { return };
        if executes {
            self.written.insert(n.clone());
            if also_read {
                self.read.insert(n);
            } else {
                self.not_read.insert(addr(name));
            }
        } else {
            self.read.insert(n);
        }
    }

    fn add_class(&mut self, class: FunctionClass) {
        self.classes.insert(class);
    }

    fn add_function(&mut self, name: &ObjectName) {
        let Some(rendered) = self.name(name) else {
            return;
        };
        self.functions.insert(rendered);
        let folded: Option<Vec<String>> = name
            .0
            .iter()
            .map(|p| p.as_ident().map(|i| fold(self.kind, i)))
            .collect();
        let Some((last, qualifier)) = folded.as_deref().and_then(<[String]>::split_last) else {
            return;
        };
        // Built-ins are lowercase: a quoted PostgreSQL `"PG_SLEEP"` is some user's function.
        let lowercase = last.to_ascii_lowercase();
        let system = *last == lowercase
            && match (self.kind, qualifier) {
                (_, []) => true,
                (ConnectionKind::Postgres, [schema]) => schema == "pg_catalog",
                _ => false,
            };
        // Listed by the bare lowercase name whatever the qualifier or quoting: a user's
        // `myschema.pg_read_file` or `"PG_SLEEP"` is treated as the built-in it imitates.
        match functions::lookup(self.kind, &lowercase) {
            Listing::Safe => self.function_unlisted |= !system,
            Listing::Dangerous(classes) => {
                self.classes.extend(classes.iter().copied());
                self.function_unlisted |= !system;
            }
            Listing::Unlisted => self.function_unlisted = true,
        }
    }

    /// The key a single-part relation name is compared with CTE names by. MySQL compares
    /// exactly: whether it folds case depends on server settings, and a reference that is
    /// wrongly taken for a CTE would hide a table.
    fn cte_key(&self, ident: &Ident) -> String {
        match self.kind {
            ConnectionKind::Mysql => ident.value.clone(),
            _ => fold(self.kind, ident),
        }
    }

    fn is_cte(&self, name: &ObjectName) -> bool {
        let [part] = name.0.as_slice() else {
            return false;
        };
        let Some(ident) = part.as_ident() else {
            return false;
        };
        let key = self.cte_key(ident);
        let mut hidden: Vec<usize> = Vec::new();
        for (i, scope) in self.scopes.iter().enumerate().rev() {
            if hidden.contains(&i) {
                continue;
            }
            if let Some(h) = scope.hides {
                hidden.push(h);
            }
            if scope.names.contains(&key) {
                return true;
            }
        }
        false
    }

    /// Write targets, WHERE checks and statement-level capabilities of one statement.
    fn record_statement(&mut self, statement: &Statement, executes: bool) {
        match statement {
            Statement::Insert(insert) => match &insert.table {
                TableObject::TableName(name) => {
                    let upsert = matches!(
                        insert.on,
                        Some(OnInsert::DuplicateKeyUpdate(_))
                            | Some(OnInsert::OnConflict(OnConflict {
                                action: OnConflictAction::DoUpdate(_),
                                ..
                            }))
                    );
                    self.add_target(name, executes, upsert);
                }
                // Table functions and subqueries as INSERT targets (ClickHouse, Oracle).
                _ => self.unparsed = true,
            },
            Statement::Update(update) => {
                for name in table_names(std::slice::from_ref(&update.table)) {
                    self.add_target(name, executes, true);
                }
                self.check_where(update.selection.as_ref(), executes);
            }
            Statement::Delete(delete) => {
                let from = match &delete.from {
                    FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
                };
                if delete.tables.is_empty() {
                    for name in table_names(from) {
                        self.add_target(name, executes, true);
                    }
                } else {
                    self.multi_delete_targets(delete, from, executes);
                }
                self.check_where(delete.selection.as_ref(), executes);
            }
            Statement::Merge(merge) => match &merge.table {
                TableFactor::Table { name, .. } => self.add_target(name, executes, true),
                _ => self.unparsed = true,
            },
            Statement::Copy {
                source, to, target, ..
            } => {
                if let CopySource::Table { table_name, .. } = source {
                    if *to {
                        self.add_read(table_name);
                    } else {
                        self.add_target(table_name, executes, false);
                    }
                }
                if executes {
                    match target {
                        CopyTarget::File { .. } => self.add_class(FunctionClass::FileAccess),
                        CopyTarget::Program { .. } => {
                            self.add_class(FunctionClass::ProgramExecution)
                        }
                        CopyTarget::Stdin | CopyTarget::Stdout => {}
                    }
                }
            }
            Statement::LoadData { table_name, .. } => {
                self.add_target(table_name, executes, false);
                if executes {
                    self.add_class(FunctionClass::FileAccess);
                }
            }
            Statement::Truncate(truncate) => {
                for t in &truncate.table_names {
                    self.add_target(&t.name, executes, false);
                }
            }
            Statement::CreateTable(create) => self.add_target(&create.name, executes, false),
            Statement::CreateView(create) => self.add_target(&create.name, executes, false),
            Statement::AlterTable(alter) => self.add_target(&alter.name, executes, false),
            Statement::Drop {
                object_type: ObjectType::Table | ObjectType::View | ObjectType::MaterializedView,
                names,
                ..
            } => {
                for name in names {
                    self.add_target(name, executes, false);
                }
            }
            Statement::RenameTable(renames) => {
                for r in renames {
                    self.add_target(&r.old_name, executes, false);
                    self.add_target(&r.new_name, executes, false);
                }
            }
            Statement::Call(function) => self.add_function(&function.name),
            Statement::AttachDatabase { .. } if executes => {
                self.add_class(FunctionClass::FileAccess);
            }
            Statement::LockTables { tables } => {
                for t in tables {
                    self.add_read(&ObjectName::from(vec![t.table.clone()]));
                }
            }
            Statement::Vacuum(vacuum) => {
                if let Some(name) = &vacuum.table_name {
                    self.add_read(name);
                }
            }
            Statement::ShowCreate {
                obj_type: ShowCreateObject::Table | ShowCreateObject::View,
                obj_name,
            } => self.add_read(obj_name),
            _ => {}
        }
    }

    /// MySQL `DELETE t1, a FROM t1 JOIN t2 AS a ...`: each target is a table or an alias of
    /// one in FROM/USING. Every table it could mean is a target (fail closed); a target
    /// that matches nothing is taken as a table name.
    fn multi_delete_targets(
        &mut self,
        delete: &sqlparser::ast::Delete,
        from: &[TableWithJoins],
        executes: bool,
    ) {
        let mut sources: Vec<(&ObjectName, Option<&Ident>)> = Vec::new();
        let using = delete.using.as_deref().unwrap_or_default();
        for factor in table_factors(from).into_iter().chain(table_factors(using)) {
            if let TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } = factor
            {
                sources.push((name, alias.as_ref().map(|a| &a.name)));
            }
        }
        for target in &delete.tables {
            let Some(wanted) = self.name(target) else {
                continue;
            };
            let mut matched = false;
            for (name, alias) in &sources {
                let by_alias =
                    alias.is_some_and(|a| target.0.len() == 1 && fold(self.kind, a) == wanted);
                let by_name = alias.is_none() && self.name(name).as_deref() == Some(&wanted);
                if by_alias || by_name {
                    matched = true;
                    self.add_target(name, executes, true);
                }
            }
            if !matched {
                if executes {
                    self.written.insert(wanted.clone());
                }
                self.read.insert(wanted);
            }
        }
    }

    fn check_where(&mut self, selection: Option<&Expr>, executes: bool) {
        if executes && selection.is_none_or(|e| constant_truth(e, CONSTANT_DEPTH) == Some(true)) {
            self.missing_where = true;
        }
    }

    fn select_into(&mut self, into: &SelectInto, executes: bool) {
        for target in &into.targets {
            match (self.kind, target) {
                (ConnectionKind::Postgres, Expr::Identifier(ident)) => {
                    self.add_target(&ObjectName::from(vec![ident.clone()]), executes, false);
                }
                (ConnectionKind::Postgres, Expr::CompoundIdentifier(idents)) => {
                    self.add_target(&ObjectName::from(idents.clone()), executes, false);
                }
                // MySQL `SELECT ... INTO @var` sets a user variable, not a table.
                (ConnectionKind::Mysql, Expr::Identifier(ident))
                    if ident.quote_style.is_none() && ident.value.starts_with('@') => {}
                // Anything else (MySQL procedure variables, SQLite, expressions) is not a
                // form the inspector can name the effect of.
                _ => self.unparsed = true,
            }
        }
    }

    /// Reads in `TABLE name` query bodies, whose name sqlparser keeps as bare identifiers
    /// that its visitor does not report as a relation.
    fn table_bodies(&mut self, query: &Query) {
        let mut stack: Vec<&SetExpr> = vec![query.body.as_ref()];
        while let Some(body) = stack.pop() {
            match body {
                SetExpr::SetOperation { left, right, .. } => {
                    stack.push(left);
                    stack.push(right);
                }
                SetExpr::Table(table) => {
                    let parts: Vec<Ident> = table
                        .schema_name
                        .iter()
                        .chain(table.table_name.iter())
                        .cloned()
                        .collect();
                    let name = ObjectName::from(parts);
                    if table.table_name.is_none() {
                        self.unparsed = true;
                    } else if !self.is_cte(&name) {
                        self.add_read(&name);
                    }
                }
                _ => {}
            }
        }
    }
}

impl Visitor for Walker {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        let (executes, nested) = match self.frames.last() {
            None => (true, false),
            Some(parent) => (parent.children_execute, true),
        };
        if executes {
            let kind = classify(statement);
            self.kinds.push(kind);
            if nested && is_write(kind) && !self.main_statements.contains(&addr(statement)) {
                self.nested_write = true;
            }
        }
        self.record_statement(statement, executes);
        let children_execute = executes
            && match statement {
                Statement::Explain {
                    analyze, options, ..
                } => *analyze || options.as_deref().is_some_and(analyze_option),
                _ => true,
            };
        self.frames.push(Frame {
            executes,
            children_execute,
        });
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _statement: &Statement) -> ControlFlow<()> {
        self.frames.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        let mut pushed = 0;
        if let Some((with_scope, names)) = self.cte_bodies.remove(&addr(query)) {
            self.scopes.push(Scope {
                names,
                hides: Some(with_scope),
            });
            pushed += 1;
        }
        if let Some(with) = &query.with {
            let names: Vec<String> = with
                .cte_tables
                .iter()
                .map(|cte| self.cte_key(&cte.alias.name))
                .collect();
            let index = self.scopes.len();
            for (i, cte) in with.cte_tables.iter().enumerate() {
                // Non-recursive: only earlier CTEs. SQLite may also let a CTE refer to
                // itself without RECURSIVE; reporting that name as a table is the safe side.
                let visible = if with.recursive { i + 1 } else { i };
                let seen = names.get(..visible).unwrap_or_default().to_vec();
                self.cte_bodies
                    .insert(addr(cte.query.as_ref()), (index, seen));
            }
            self.scopes.push(Scope { names, hides: None });
            pushed += 1;
        }
        self.query_scopes.push(pushed);
        if !query.pipe_operators.is_empty() {
            self.unparsed = true;
        }
        self.table_bodies(query);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        let pushed = self.query_scopes.pop().unwrap_or_default();
        self.scopes
            .truncate(self.scopes.len().saturating_sub(pushed));
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        if let Some(into) = &select.into {
            let executes = self.executing();
            if executes {
                self.kinds.push(StatementKind::SelectInto);
                if !self.main_selects.contains(&addr(select)) {
                    self.nested_write = true;
                }
            }
            self.select_into(into, executes);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            // `FROM pg_ls_dir('.')`: sqlparser keeps a table-valued call as a table with
            // arguments, and visits its name as a relation.
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => {
                self.not_read.insert(addr(name));
                self.add_function(name);
            }
            TableFactor::Function { name, .. } => self.add_function(name),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if !self.not_read.contains(&addr(relation)) && !self.is_cte(relation) {
            self.add_read(relation);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Function(function) => self.add_function(&function.name),
            Expr::BinaryOp {
                op: BinaryOperator::PGCustomBinaryOperator(parts),
                ..
            } => {
                // `OPERATOR(pg_catalog.+)` pins the built-in; any other schema is user code.
                let builtin = matches!(
                    parts.as_slice(),
                    [schema, _] if schema.eq_ignore_ascii_case("pg_catalog")
                );
                self.function_unlisted |= !builtin;
            }
            Expr::BinaryOp {
                op: BinaryOperator::Custom(op),
                ..
            } => {
                self.function_unlisted |= !BUILTIN_CUSTOM_OPERATORS.contains(&op.as_str());
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// PostgreSQL built-in operators sqlparser has no variant for (range and geometric
/// operators). Any other operator sqlparser does not know may be user-defined.
const BUILTIN_CUSTOM_OPERATORS: &[&str] = &[
    "-|-", "&<|", "|&>", "<<|", "|>>", "<^", ">^", "?-", "?|", "?-|", "?||", "@-@", "##", "~=",
];

fn is_write(kind: StatementKind) -> bool {
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
fn analyze_option(options: &[UtilityOption]) -> bool {
    options.iter().any(|o| {
        let name = o.name.value.to_ascii_lowercase();
        (name == "analyze" || name == "analyse") && !o.arg.as_ref().is_some_and(is_false_word)
    })
}

fn is_false_word(expr: &Expr) -> bool {
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
fn constant_truth(expr: &Expr, depth: usize) -> Option<bool> {
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

fn compare_literals(left: &Expr, op: &BinaryOperator, right: &Expr) -> Option<bool> {
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
fn table_factors(list: &[TableWithJoins]) -> Vec<&TableFactor> {
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
fn table_names(list: &[TableWithJoins]) -> Vec<&ObjectName> {
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
        ConnectionKind::Sqlite | ConnectionKind::Ssh | ConnectionKind::Kubernetes => {
            ident.value.to_ascii_lowercase()
        }
    }
}

/// A qualified name, parts folded and joined by '.'; `None` for an empty name.
pub(crate) fn render(kind: ConnectionKind, parts: &[&Ident]) -> Option<String> {
    if parts.is_empty() {
        return None;
    }
    let mut out = String::new();
    for (i, ident) in parts.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        let part = fold(kind, ident);
        if part.contains(['.', '"']) {
            out.push('"');
            out.push_str(&part.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&part);
        }
    }
    Some(out)
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
    use FunctionClass as F;
    use StatementKind as K;

    fn facts(kind: ConnectionKind, sql: &str) -> Facts {
        inspect(kind, sql).unwrap()
    }
    fn pg(sql: &str) -> Facts {
        facts(ConnectionKind::Postgres, sql)
    }
    fn my(sql: &str) -> Facts {
        facts(ConnectionKind::Mysql, sql)
    }
    fn lite(sql: &str) -> Facts {
        facts(ConnectionKind::Sqlite, sql)
    }
    fn all(sql: &str) -> [Facts; 3] {
        [pg(sql), my(sql), lite(sql)]
    }
    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// A plain read of nothing: what SQL hidden in literals and comments must look like.
    fn assert_plain_select(f: &Facts, sql: &str) {
        assert_eq!(f.kinds, vec![K::Select], "{sql}");
        assert_eq!(f.statement_count, 1, "{sql}");
        assert!(!f.unparsed, "{sql}");
        assert!(f.tables_read.is_empty(), "{sql}: {:?}", f.tables_read);
        assert!(f.tables_written.is_empty(), "{sql}");
        assert!(f.functions.is_empty(), "{sql}: {:?}", f.functions);
        assert!(!f.nested_write && !f.missing_where, "{sql}");
    }

    #[test]
    fn classifies_basic_statements() {
        assert_eq!(pg("select 1").kinds, vec![K::Select]);
        assert_eq!(pg("/* hi */ DeLeTe FROM t").kinds, vec![K::Delete]);
        assert_eq!(pg("select 1; select 2").statement_count, 2);
        assert!(pg("selec 1").unparsed);
        assert_eq!(pg("select * into t2 from t").kinds, vec![K::SelectInto]);
        let f = pg("SELECT 1; DELETE FROM t WHERE id = 1");
        assert_eq!(f.kinds, vec![K::Select, K::Delete]);
        assert_eq!(f.statement_count, 2);
    }

    #[test]
    fn mysql_executable_comments_are_unparsed() {
        let f = my("select 1 /*! , sleep(10) */");
        assert!(f.unparsed);
        assert!(my("select 1 /*M! , 2 */").unparsed);
        assert!(my("/*!50000 DELETE FROM t */").unparsed);
        assert!(!pg("select 1 /* ! */").unparsed);
        // Optimizer hints only steer the planner.
        let f = my("SELECT /*+ BKA(t) */ a FROM t");
        assert!(!f.unparsed);
        assert_eq!(f.tables_read, v(&["t"]));
    }

    #[test]
    fn bounds_are_enforced() {
        let deep = format!("select {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(pg(&deep).unparsed);
        let long = format!("select '{}'", "x".repeat(MAX_SQL_BYTES));
        assert!(matches!(
            inspect(ConnectionKind::Postgres, &long),
            Err(InspectError::TooLong(_))
        ));
        assert_eq!(
            inspect(ConnectionKind::Postgres, "  "),
            Err(InspectError::Empty)
        );
        assert!(pg("-- only a comment").unparsed);
    }

    #[test]
    fn loop_built_chains_at_the_size_limit_do_not_overflow() {
        // Each of these makes a tree as deep as the input is long.
        let chains: [(&str, &str); 8] = [
            ("select 1", "+1"),
            ("select 1", " union select 1"),
            ("select 1", "::int"),
            ("select 1", " is null"),
            ("select a", "[1]"),
            ("select 1 where a=1", " or a=1"),
            ("select a", " collate \"C\""),
            ("delete from t where 1=1", " and 1=1"),
        ];
        for (head, link) in chains {
            let n = (MAX_SQL_BYTES - head.len()) / link.len();
            let sql = format!("{head}{}", link.repeat(n));
            for kind in [
                ConnectionKind::Postgres,
                ConnectionKind::Mysql,
                ConnectionKind::Sqlite,
            ] {
                let f = facts(kind, &sql);
                assert_eq!(f.statement_count, 1, "{head}{link}...");
            }
        }
        let f = pg(&format!(
            "DELETE FROM t WHERE 1=1{}",
            " AND 1=1".repeat(20_000)
        ));
        assert!(!f.unparsed);
        // Deeper than the constant check looks: counted as a real WHERE.
        assert!(!f.missing_where);
    }

    #[test]
    fn inline_inspection_fits_in_a_small_stack() {
        let w = |sql: &str| {
            weight(
                &Tokenizer::new(&PostgreSqlDialect {}, sql)
                    .tokenize_with_location()
                    .unwrap(),
            )
        };
        // The deepest trees the inline path can meet: chains as long as the inline budget
        // allows, inside nesting at the parser's recursion limit.
        let open = "(".repeat(RECURSION_LIMIT / 2);
        let close = ")".repeat(RECURSION_LIMIT / 2);
        let shapes = [
            (format!("select {open}1"), "+1", close.clone()),
            ("select 1".to_string(), " union select 1", String::new()),
            (format!("select {open}1"), "::int", close.clone()),
            (format!("select {open}a"), "[1]", close.clone()),
            (
                format!("delete from t where {open}a=1"),
                " or a=1",
                close.clone(),
            ),
            (format!("select {open}a"), " is null", close),
        ];
        let mut inputs = Vec::new();
        for (head, link, tail) in &shapes {
            let n = (INLINE_MAX_TOKENS - w(head) - w(tail)) / w(link);
            let sql = format!("{head}{}{tail}", link.repeat(n));
            let weight = w(&sql);
            assert!(weight <= INLINE_MAX_TOKENS && weight + 2 * w(link) > INLINE_MAX_TOKENS);
            inputs.push(sql);
        }
        inputs.push(format!(
            "select {}1{}",
            "(select ".repeat(40),
            ")".repeat(40)
        ));
        std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                for sql in &inputs {
                    for kind in [
                        ConnectionKind::Postgres,
                        ConnectionKind::Mysql,
                        ConnectionKind::Sqlite,
                    ] {
                        let _ = inspect(kind, sql);
                    }
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn garbage_never_panics() {
        // xorshift: deterministic, no dependency.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet: Vec<char> = "()[]{};:,.'\"`$@#!?*/+-=<>|&^~%\\ \n\tabcSELECTfromWHEREé€\u{0}"
            .chars()
            .collect();
        let words = [
            "select",
            "from",
            "where",
            "with",
            "as",
            "(",
            ")",
            "delete",
            "update",
            "set",
            "insert",
            "into",
            "values",
            "union",
            "explain",
            "analyze",
            "t",
            "1",
            "'x'",
            ",",
            ";",
            "*",
            "=",
            "and",
            "or",
            "not",
            "case",
            "when",
            "then",
            "end",
            "join",
            "on",
            "$$",
            "/*",
            "*/",
            "--",
            "\n",
            "::",
            "[",
            "]",
            "lateral",
            "returning",
            "merge",
            "using",
        ];
        for round in 0..600 {
            let len = (next() % 400) as usize;
            let sql: String = if round % 2 == 0 {
                (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect()
            } else {
                (0..len)
                    .map(|_| words[(next() % words.len() as u64) as usize])
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            for kind in [
                ConnectionKind::Postgres,
                ConnectionKind::Mysql,
                ConnectionKind::Sqlite,
            ] {
                if let Ok(f) = inspect(kind, &sql) {
                    assert!(f.statement_count >= 1);
                    assert!(!f.kinds.is_empty());
                }
            }
        }
        let nests = [
            format!("select {}1", "not ".repeat(20_000)),
            format!("select {}1", "-".repeat(100_000)),
            format!("select {}1{}", "(select ".repeat(3000), ")".repeat(3000)),
            format!(
                "select {}1{}",
                "case when 1 then ".repeat(3000),
                " end".repeat(3000)
            ),
            format!(
                "select * from {}t{}",
                "(".repeat(20_000),
                ")".repeat(20_000)
            ),
            format!("select 1 /* {} */", "/* ".repeat(50_000)),
            format!("select '{}'", "'".repeat(100_000)),
            format!("select \"{}\" from t", "x".repeat(100_000)),
            "é".repeat(50_000),
        ];
        for sql in &nests {
            for kind in [
                ConnectionKind::Postgres,
                ConnectionKind::Mysql,
                ConnectionKind::Sqlite,
            ] {
                let _ = inspect(kind, sql);
            }
        }
    }

    #[test]
    fn comments_and_case_do_not_hide_statements() {
        for f in all("DeLeTe/**/FROM t") {
            assert_eq!(f.kinds, vec![K::Delete]);
            assert_eq!(f.tables_written, v(&["t"]));
            assert!(f.missing_where);
        }
        for f in all("/* x */ uPdAtE\n\tT/* y */SET a=1 -- z") {
            assert_eq!(f.kinds, vec![K::Update]);
            assert_eq!(f.tables_written, v(&["t"]));
        }
    }

    #[test]
    fn sql_in_literals_and_comments_is_not_sql() {
        for sql in [
            "SELECT 'DROP TABLE x'",
            "SELECT 1 -- ; DELETE FROM t",
            "SELECT 1 /* ; DELETE FROM t */",
            "SELECT 'a''; DELETE FROM t; --'",
            "/* DELETE FROM t; */ SELECT 1",
        ] {
            for f in all(sql) {
                assert_plain_select(&f, sql);
            }
        }
        for sql in [
            "SELECT $$; DELETE FROM t; $$",
            "SELECT $x$; DELETE FROM t; $x$",
            "SELECT 1 /* /* */ ; DELETE FROM t */",
            "SELECT E'\\'; DELETE FROM t; --'",
        ] {
            assert_plain_select(&pg(sql), sql);
        }
        for sql in [
            "SELECT 1 # ; DELETE FROM t",
            "SELECT 'a\\'; DELETE FROM t; --'",
            "SELECT \"DELETE FROM t\"",
        ] {
            assert_plain_select(&my(sql), sql);
        }
        // With standard strings a backslash does not escape in PostgreSQL: this is two
        // statements and a comment there.
        let f = pg("SELECT 'a\\'; DELETE FROM t; --'");
        assert_eq!(f.kinds, vec![K::Select, K::Delete]);
        // MySQL needs whitespace after `--`, so this is no comment there.
        let f = my("SELECT 1 --; DELETE FROM t");
        assert!(f.unparsed || f.kinds.contains(&K::Delete));
    }

    #[test]
    fn trailing_input_after_end_is_unparsed() {
        assert!(pg("SELECT 1 END DELETE FROM t").unparsed);
        assert!(my("SELECT 1 END DELETE FROM t").unparsed);
    }

    #[test]
    fn cte_writes_are_nested_writes() {
        let f = pg("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d");
        assert_eq!(f.kinds, vec![K::Select, K::Delete]);
        assert!(f.nested_write);
        assert!(f.missing_where);
        assert_eq!(f.tables_written, v(&["t"]));
        assert_eq!(f.tables_read, v(&["t"]));

        let f = pg("WITH d AS (UPDATE t SET a = 1 WHERE id = 2 RETURNING *) SELECT * FROM d");
        assert_eq!(f.kinds, vec![K::Select, K::Update]);
        assert!(f.nested_write && !f.missing_where);

        let f = pg("INSERT INTO a WITH d AS (DELETE FROM b WHERE x RETURNING *) SELECT * FROM d");
        assert_eq!(f.kinds, vec![K::Insert, K::Delete]);
        assert!(f.nested_write);
        assert_eq!(f.tables_written, v(&["a", "b"]));
        assert_eq!(f.tables_read, v(&["b"]));

        // The statement's own write after a WITH is not nested.
        for f in [
            pg("WITH x AS (SELECT id FROM s) DELETE FROM t WHERE id IN (SELECT id FROM x)"),
            my("WITH x AS (SELECT id FROM s) DELETE FROM t WHERE id IN (SELECT id FROM x)"),
        ] {
            assert_eq!(f.kinds, vec![K::Delete]);
            assert!(!f.nested_write);
            assert_eq!(f.tables_read, v(&["s", "t"]));
            assert_eq!(f.tables_written, v(&["t"]));
        }
    }

    #[test]
    fn cte_names_are_scoped_like_the_server() {
        for f in all("WITH a AS (SELECT 1) SELECT * FROM a") {
            assert!(f.tables_read.is_empty());
        }
        // A non-recursive CTE body reads the real table of the same name.
        for f in all("WITH t AS (SELECT * FROM t) SELECT * FROM t") {
            assert_eq!(f.tables_read, v(&["t"]));
        }
        // ... and cannot see later CTEs.
        for f in all("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a, b") {
            assert_eq!(f.tables_read, v(&["b"]));
        }
        for f in all("WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b") {
            assert!(f.tables_read.is_empty());
        }
        for f in all(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) \
             SELECT * FROM c",
        ) {
            assert!(f.tables_read.is_empty());
        }
        // Visible in subqueries, not in the next statement, not under a schema.
        for f in all("WITH a AS (SELECT 1) SELECT * FROM (SELECT * FROM a) s, public.a") {
            assert_eq!(f.tables_read, v(&["public.a"]));
        }
        for f in all("WITH a AS (SELECT 1) SELECT * FROM a; SELECT * FROM a") {
            assert_eq!(f.tables_read, v(&["a"]));
        }
        // Names compare as the server compares them.
        assert_eq!(
            pg("WITH \"A\" AS (SELECT 1) SELECT * FROM a").tables_read,
            v(&["a"])
        );
        assert!(
            pg("WITH A AS (SELECT 1) SELECT * FROM a")
                .tables_read
                .is_empty()
        );
        assert!(
            lite("WITH \"A\" AS (SELECT 1) SELECT * FROM a")
                .tables_read
                .is_empty()
        );
        // MySQL: compared exactly, so a differently cased name may be reported as a table.
        assert_eq!(
            my("WITH A AS (SELECT 1) SELECT * FROM a").tables_read,
            v(&["a"])
        );
    }

    #[test]
    fn explain_vs_explain_analyze() {
        let f = pg("EXPLAIN DELETE FROM t");
        assert_eq!(f.kinds, vec![K::Explain]);
        assert!(f.tables_written.is_empty());
        assert_eq!(f.tables_read, v(&["t"]));
        assert!(!f.missing_where && !f.nested_write);

        for sql in [
            "EXPLAIN ANALYZE DELETE FROM t",
            "EXPLAIN (ANALYZE) DELETE FROM t",
            "explain (costs off, analyse, buffers) DELETE FROM t",
            "EXPLAIN (ANALYZE true) DELETE FROM t",
            "EXPLAIN (ANALYZE on) DELETE FROM t",
        ] {
            let f = pg(sql);
            assert_eq!(f.kinds, vec![K::Explain, K::Delete], "{sql}");
            assert_eq!(f.tables_written, v(&["t"]), "{sql}");
            assert!(f.missing_where && f.nested_write, "{sql}");
        }
        for sql in [
            "EXPLAIN (ANALYZE false) DELETE FROM t",
            "EXPLAIN (ANALYZE off) DELETE FROM t",
            "EXPLAIN (ANALYZE 0) DELETE FROM t",
            "EXPLAIN (BUFFERS) DELETE FROM t",
            "EXPLAIN WITH d AS (DELETE FROM t RETURNING 1) SELECT * FROM d",
        ] {
            let f = pg(sql);
            assert_eq!(f.kinds, vec![K::Explain], "{sql}");
            assert!(f.tables_written.is_empty(), "{sql}");
        }
        let f = pg("EXPLAIN ANALYZE WITH d AS (DELETE FROM t RETURNING 1) SELECT * FROM d");
        assert_eq!(f.kinds, vec![K::Explain, K::Select, K::Delete]);

        let f = my("EXPLAIN ANALYZE SELECT * FROM t");
        assert_eq!(f.kinds, vec![K::Explain, K::Select]);
        assert_eq!(my("EXPLAIN SELECT * FROM t").kinds, vec![K::Explain]);
        assert_eq!(my("DESCRIBE SELECT * FROM t").kinds, vec![K::Explain]);
        let f = my("DESC t");
        assert_eq!(f.kinds, vec![K::Explain]);
        assert_eq!(f.tables_read, v(&["t"]));
        assert_eq!(
            lite("EXPLAIN QUERY PLAN DELETE FROM t").kinds,
            vec![K::Explain]
        );
        assert_eq!(lite("EXPLAIN DELETE FROM t").kinds, vec![K::Explain]);
    }

    #[test]
    fn mariadb_analyze_statement_is_unparsed() {
        // sqlparser 0.64 does not parse MariaDB's `ANALYZE <dml>` (which executes it).
        assert!(my("ANALYZE DELETE FROM t").unparsed);
        assert!(my("ANALYZE FORMAT=JSON SELECT 1").unparsed);
        let f = my("ANALYZE TABLE t");
        assert_eq!(f.kinds, vec![K::Maintenance]);
        assert!(!f.unparsed);
    }

    #[test]
    fn select_into() {
        let f = pg("SELECT * INTO t2 FROM t");
        assert_eq!(f.kinds, vec![K::SelectInto]);
        assert_eq!(f.tables_written, v(&["t2"]));
        assert_eq!(f.tables_read, v(&["t"]));
        assert!(!f.nested_write);
        let f = pg("SELECT * INTO TEMP public.\"T2\" FROM t");
        assert_eq!(f.tables_written, v(&["public.T2"]));

        let f = my("SELECT a INTO @v FROM t");
        assert_eq!(f.kinds, vec![K::SelectInto]);
        assert!(f.tables_written.is_empty() && !f.unparsed);
        // sqlparser 0.64 does not parse INTO OUTFILE/DUMPFILE.
        assert!(my("SELECT * INTO OUTFILE '/tmp/x' FROM t").unparsed);
        assert!(my("SELECT * FROM t INTO OUTFILE '/tmp/x'").unparsed);
        assert!(my("SELECT * INTO DUMPFILE '/tmp/x' FROM t").unparsed);
    }

    #[test]
    fn insert_select_reads_and_writes() {
        for f in all("INSERT INTO a (x) SELECT x FROM b JOIN c ON b.id = c.id") {
            assert_eq!(f.kinds, vec![K::Insert]);
            assert_eq!(f.tables_written, v(&["a"]));
            assert_eq!(f.tables_read, v(&["b", "c"]));
            assert!(!f.nested_write);
        }
        let f = pg("INSERT INTO a VALUES (1) ON CONFLICT (id) DO UPDATE SET x = 1");
        assert_eq!(f.tables_read, v(&["a"]));
        assert!(
            pg("INSERT INTO a VALUES (1) ON CONFLICT DO NOTHING")
                .tables_read
                .is_empty()
        );
        let f = my("INSERT INTO a VALUES (1) ON DUPLICATE KEY UPDATE x = 2");
        assert_eq!(f.tables_read, v(&["a"]));
        let f = my("REPLACE INTO a VALUES (1)");
        assert_eq!(f.kinds, vec![K::Insert]);
        assert_eq!(f.tables_written, v(&["a"]));
        assert_eq!(
            lite("INSERT OR REPLACE INTO a VALUES (1)").tables_written,
            v(&["a"])
        );
    }

    #[test]
    fn update_from_and_multi_table() {
        for f in [
            pg("UPDATE t SET a = u.a FROM u WHERE t.id = u.id"),
            lite("UPDATE t SET a = u.a FROM u WHERE t.id = u.id"),
        ] {
            assert_eq!(f.kinds, vec![K::Update]);
            assert_eq!(f.tables_written, v(&["t"]));
            assert_eq!(f.tables_read, v(&["t", "u"]));
            assert!(!f.missing_where);
        }
        let f = my("UPDATE t1 JOIN t2 ON t1.id = t2.id SET t1.a = 1");
        assert_eq!(f.tables_written, v(&["t1", "t2"]));
        assert!(f.missing_where);
        // sqlparser 0.64 does not parse the comma form of a MySQL multi-table UPDATE.
        assert!(my("UPDATE t1, t2 SET t1.a = t2.b WHERE t1.id = t2.id").unparsed);
    }

    #[test]
    fn delete_using_and_multi_table() {
        let f = pg("DELETE FROM t USING u WHERE t.id = u.id");
        assert_eq!(f.kinds, vec![K::Delete]);
        assert_eq!(f.tables_written, v(&["t"]));
        assert_eq!(f.tables_read, v(&["t", "u"]));
        assert!(!f.missing_where);
        assert!(pg("DELETE FROM t USING u").missing_where);

        let f = my("DELETE a FROM orders a JOIN items i ON a.id = i.oid WHERE i.x = 1");
        assert_eq!(f.tables_written, v(&["orders"]));
        assert_eq!(f.tables_read, v(&["items", "orders"]));
        assert!(!f.missing_where);
        let f = my("DELETE t1 FROM t1 JOIN t2 ON t1.id = t2.id");
        assert_eq!(f.tables_written, v(&["t1"]));
        assert!(f.missing_where);
        let f = my("DELETE FROM t1, t2 USING t1 JOIN t2 ON t1.id = t2.id WHERE t1.x = 1");
        assert_eq!(f.tables_written, v(&["t1", "t2"]));
        assert!(!f.missing_where);
    }

    #[test]
    fn merge() {
        let f = pg("MERGE INTO t USING s ON t.id = s.id \
                    WHEN MATCHED THEN UPDATE SET a = s.a \
                    WHEN NOT MATCHED THEN INSERT (id) VALUES (s.id)");
        assert_eq!(f.kinds, vec![K::Merge]);
        assert_eq!(f.tables_written, v(&["t"]));
        assert_eq!(f.tables_read, v(&["s", "t"]));
    }

    #[test]
    fn copy() {
        let f = pg("COPY t TO PROGRAM 'rm -rf /'");
        assert_eq!(f.kinds, vec![K::Copy]);
        assert_eq!(f.tables_read, v(&["t"]));
        assert_eq!(f.function_classes, vec![F::ProgramExecution]);
        let f = pg("COPY t FROM '/etc/passwd'");
        assert_eq!(f.tables_written, v(&["t"]));
        assert!(f.tables_read.is_empty());
        assert_eq!(f.function_classes, vec![F::FileAccess]);
        let f = pg("COPY (SELECT * FROM s) TO '/tmp/x'");
        assert_eq!(f.tables_read, v(&["s"]));
        assert_eq!(f.function_classes, vec![F::FileAccess]);
        let f = pg("COPY t TO STDOUT");
        assert!(f.function_classes.is_empty());
        // sqlparser 0.64 does not parse MySQL LOAD DATA INFILE.
        assert!(my("LOAD DATA INFILE '/etc/passwd' INTO TABLE t").unparsed);
    }

    #[test]
    fn dynamic_statements() {
        // sqlparser 0.64 does not parse DO blocks.
        assert!(pg("DO $$ BEGIN DELETE FROM t; END $$").unparsed);
        let f = pg("PREPARE p AS DELETE FROM t");
        assert_eq!(f.kinds, vec![K::Dynamic, K::Delete]);
        assert!(f.nested_write && f.missing_where);
        assert_eq!(f.tables_written, v(&["t"]));
        assert_eq!(pg("EXECUTE p(1)").kinds, vec![K::Dynamic]);
        assert_eq!(pg("DEALLOCATE p").kinds, vec![K::Dynamic]);
        let f = pg("CALL myproc(1)");
        assert_eq!(f.kinds, vec![K::Dynamic]);
        assert_eq!(f.functions, v(&["myproc"]));
        assert!(f.function_unlisted);
        assert_eq!(my("CALL p()").kinds, vec![K::Dynamic]);
        // sqlparser 0.64 only parses `PREPARE name AS stmt`, not MySQL's `FROM 'text'`.
        assert!(my("PREPARE s FROM 'DELETE FROM t'").unparsed);
        assert_eq!(my("EXECUTE s").kinds, vec![K::Dynamic]);
    }

    #[test]
    fn postgres_functions() {
        let f = pg("SELECT PG_CATALOG.PG_READ_FILE('/etc/passwd')");
        assert_eq!(f.functions, v(&["pg_catalog.pg_read_file"]));
        assert_eq!(f.function_classes, vec![F::FileAccess]);
        assert!(!f.function_unlisted);

        let f = pg("SELECT myschema.pg_read_file('x')");
        assert_eq!(f.function_classes, vec![F::FileAccess]);
        assert!(f.function_unlisted);
        let f = pg("SELECT \"PG_SLEEP\"(1)");
        assert_eq!(f.functions, v(&["PG_SLEEP"]));
        assert_eq!(f.function_classes, vec![F::Sleep]);
        assert!(f.function_unlisted);
        assert!(pg("SELECT myschema.lower('x')").function_unlisted);
        assert!(!pg("SELECT pg_catalog.lower('x')").function_unlisted);

        let f = pg(
            "SELECT lower(name), count(*), now(), current_user, current_timestamp, \
                    coalesce(a, 1), row_number() OVER (ORDER BY a) FROM t",
        );
        assert!(!f.function_unlisted, "{:?}", f.functions);
        assert!(f.function_classes.is_empty());
        assert!(pg("SELECT myfunc(1)").function_unlisted);

        let cases: [(&str, &[F]); 12] = [
            ("SELECT nextval('s')", &[F::SideEffect]),
            ("SELECT * FROM pg_ls_dir('.')", &[F::FileAccess]),
            (
                "SELECT * FROM t, LATERAL pg_ls_dir('.') AS x",
                &[F::FileAccess],
            ),
            ("SELECT set_config('a', 'b', false)", &[F::SessionState]),
            ("SELECT Pg_Advisory_Lock(1)", &[F::Locking]),
            ("SELECT pg_sleep_for('1 minute')", &[F::Sleep]),
            (
                "SELECT lo_import('/etc/passwd')",
                &[F::FileAccess, F::LargeObject, F::SideEffect],
            ),
            (
                "SELECT dblink_exec('host=x', 'DROP TABLE t')",
                &[F::Network, F::DynamicSql],
            ),
            (
                "SELECT query_to_xml('select * from secret', true, false, '')",
                &[F::DynamicSql],
            ),
            ("SELECT pg_terminate_backend(1)", &[F::ServerAdmin]),
            ("SELECT pg_notify('c', 'x')", &[F::SideEffect]),
            (
                "SELECT a FROM t WHERE b IN (SELECT pg_sleep(1)) ORDER BY coalesce(a, 1)",
                &[F::Sleep],
            ),
        ];
        for (sql, classes) in cases {
            assert_eq!(pg(sql).function_classes, classes.to_vec(), "{sql}");
        }
        let f = pg("SELECT * FROM t, LATERAL pg_ls_dir('.') AS x");
        assert_eq!(f.tables_read, v(&["t"]));
        assert_eq!(f.functions, v(&["pg_ls_dir"]));
        let f = pg("SELECT * FROM generate_series(1, 10) g");
        assert!(f.tables_read.is_empty() && !f.function_unlisted);

        assert!(pg("SELECT a OPERATOR(myschema.+) b FROM t").function_unlisted);
        assert!(!pg("SELECT a OPERATOR(pg_catalog.+) b FROM t").function_unlisted);
        assert!(!pg("SELECT a -|- b, a @> b, a && b FROM t").function_unlisted);
        // A user-defined operator runs a user function. (sqlparser splits some operator
        // spellings PostgreSQL lexes as one, e.g. `@@@` as `@@ @`; those go unnoticed.)
        assert!(pg("SELECT a ~~~ b FROM t").function_unlisted);
    }

    #[test]
    fn mysql_functions() {
        let cases: [(&str, &[F]); 7] = [
            ("SELECT SLEEP(1)", &[F::Sleep]),
            ("SELECT BeNcHmArK(1000000, md5('a'))", &[F::Sleep]),
            ("SELECT LOAD_FILE('/etc/passwd')", &[F::FileAccess]),
            ("SELECT GET_LOCK('a', 1), RELEASE_LOCK('a')", &[F::Locking]),
            ("SELECT sys_exec('id')", &[F::ProgramExecution]),
            ("SELECT MASTER_POS_WAIT('f', 1)", &[F::Sleep]),
            ("SET @a = (SELECT sleep(1))", &[F::Sleep]),
        ];
        for (sql, classes) in cases {
            let f = my(sql);
            assert_eq!(f.function_classes, classes.to_vec(), "{sql}");
            assert!(!f.function_unlisted, "{sql}");
        }
        let f = my("SELECT mydb.sleep(1)");
        assert_eq!(f.function_classes, vec![F::Sleep]);
        assert!(f.function_unlisted);
        let f = my(
            "SELECT IF(a, 1, 2), IFNULL(a, 0), CONCAT(a, b), DATE_FORMAT(NOW(), '%Y'), \
                    GROUP_CONCAT(a), JSON_EXTRACT(j, '$.x'), COUNT(*) FROM t",
        );
        assert!(!f.function_unlisted, "{:?}", f.functions);
        assert!(f.function_classes.is_empty());
    }

    #[test]
    fn sqlite_functions() {
        let cases: [(&str, &[F]); 4] = [
            ("SELECT load_extension('x')", &[F::ProgramExecution]),
            ("SELECT readfile('/etc/passwd')", &[F::FileAccess]),
            ("SELECT WriteFile('x', 'y')", &[F::FileAccess]),
            (
                "SELECT fts3_tokenizer('simple')",
                &[F::ProgramExecution, F::ServerAdmin],
            ),
        ];
        for (sql, classes) in cases {
            assert_eq!(lite(sql).function_classes, classes.to_vec(), "{sql}");
        }
        let f = lite(
            "SELECT randomblob(16), zeroblob(4), json_extract(a, '$.x'), \
                      group_concat(b), strftime('%Y', 'now') FROM t",
        );
        assert!(!f.function_unlisted && f.function_classes.is_empty());
        let f = lite("SELECT * FROM pragma_table_info('t')");
        assert!(f.tables_read.is_empty() && !f.function_unlisted);
    }

    #[test]
    fn identifiers_are_normalised_per_dialect() {
        let f = pg("SELECT * FROM \"Orders\", ORDERS, \"orders\", Public.\"My Table\", \"a.b\"");
        assert_eq!(
            f.tables_read,
            v(&["\"a.b\"", "Orders", "orders", "public.My Table"])
        );
        let long = "x".repeat(70);
        assert_eq!(
            pg(&format!("SELECT * FROM {long}")).tables_read,
            v(&[&long[..63]])
        );
        let f = my("SELECT * FROM `Orders`, ORDERS, orders, MyDb.`T`");
        assert_eq!(f.tables_read, v(&["mydb.t", "orders"]));
        let f = lite("SELECT * FROM \"Orders\", [ORDERS], `orders`, main.T");
        assert_eq!(f.tables_read, v(&["main.t", "orders"]));
    }

    #[test]
    fn other_statement_kinds() {
        let f = pg("TRUNCATE t, public.u");
        assert_eq!(f.kinds, vec![K::Truncate]);
        assert_eq!(f.tables_written, v(&["public.u", "t"]));
        assert!(f.tables_read.is_empty());
        assert_eq!(pg("GRANT SELECT ON t TO bob").kinds, vec![K::Privilege]);
        assert_eq!(pg("SET search_path = x").kinds, vec![K::Set]);
        assert_eq!(my("SET @a = 1").kinds, vec![K::Set]);
        for f in all("BEGIN; COMMIT") {
            assert_eq!(f.kinds, vec![K::Transaction]);
            assert_eq!(f.statement_count, 2);
        }
        let f = pg("LOCK TABLE t IN ACCESS EXCLUSIVE MODE");
        assert_eq!(f.kinds, vec![K::Lock]);
        assert_eq!(f.tables_read, v(&["t"]));
        let f = my("SHOW CREATE TABLE Secret");
        assert_eq!(f.kinds, vec![K::Show]);
        assert_eq!(f.tables_read, v(&["secret"]));
        assert_eq!(my("SHOW COLUMNS FROM secret").tables_read, v(&["secret"]));
        let f = my("LOCK TABLES T WRITE");
        assert_eq!(f.kinds, vec![K::Lock]);
        assert_eq!(f.tables_read, v(&["t"]));
        assert_eq!(pg("VACUUM t").kinds, vec![K::Maintenance]);
        assert_eq!(lite("VACUUM").kinds, vec![K::Maintenance]);
        assert_eq!(lite("PRAGMA writable_schema = 1").kinds, vec![K::Pragma]);
        let f = lite("ATTACH DATABASE '/tmp/x.db' AS x");
        assert_eq!(f.kinds, vec![K::Attach]);
        assert_eq!(f.function_classes, vec![F::FileAccess]);
        let f = pg("DROP TABLE t, u");
        assert_eq!(f.kinds, vec![K::Drop]);
        assert_eq!(f.tables_written, v(&["t", "u"]));
        let f = pg("CREATE TABLE x AS SELECT * FROM y");
        assert_eq!(f.kinds, vec![K::Create]);
        assert_eq!(f.tables_written, v(&["x"]));
        assert_eq!(f.tables_read, v(&["y"]));
        let f = pg("ALTER TABLE t ADD COLUMN c int");
        assert_eq!(f.kinds, vec![K::Alter]);
        assert_eq!(f.tables_written, v(&["t"]));
        assert_eq!(pg("SELECT * FROM t FOR UPDATE").kinds, vec![K::Select]);
    }

    #[test]
    fn missing_where() {
        for sql in [
            "DELETE FROM t",
            "DELETE FROM t WHERE 1=1",
            "DELETE FROM t WHERE true",
            "DELETE FROM t WHERE (1)",
            "DELETE FROM t WHERE 'a' = 'a'",
            "DELETE FROM t WHERE 2 > 1",
            "DELETE FROM t WHERE id = 1 OR 1 = 1",
            "UPDATE t SET a = 1 WHERE NOT false",
            "UPDATE t SET a = 1 WHERE 1 AND (true)",
            "UPDATE t SET a = 1",
        ] {
            for f in all(sql) {
                assert!(f.missing_where, "{sql}");
            }
        }
        for sql in [
            "DELETE FROM t WHERE id = 1",
            "DELETE FROM t WHERE 1 = 1 AND id = 2",
            "DELETE FROM t WHERE 'a' = 'A'",
            "DELETE FROM t WHERE id = id",
            "UPDATE t SET a = 1 WHERE a IS NULL",
            "SELECT * FROM t",
            "INSERT INTO t VALUES (1)",
        ] {
            for f in all(sql) {
                assert!(!f.missing_where, "{sql}");
            }
        }
        assert!(pg("SELECT 1; DELETE FROM t WHERE 0 = 0").missing_where);
    }

    #[test]
    fn old_audit_json_still_deserialises() {
        let f: Facts =
            serde_json::from_str(r#"{"statement_count":1,"kinds":["select"],"unparsed":false}"#)
                .unwrap();
        assert!(f.tables_read.is_empty() && !f.missing_where && !f.function_unlisted);
        let round: Facts =
            serde_json::from_str(&serde_json::to_string(&pg("SELECT pg_sleep(1) FROM t")).unwrap())
                .unwrap();
        assert_eq!(round.function_classes, vec![F::Sleep]);
        assert_eq!(
            serde_json::to_value(F::ProgramExecution).unwrap(),
            serde_json::json!("program_execution")
        );
    }
}
