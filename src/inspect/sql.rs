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

/// The kind of a SQL statement, as policy rules match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(example = "select")]
pub enum StatementKind {
    Select,
    /// `SELECT ... FOR UPDATE | FOR SHARE` (with `NOWAIT` / `SKIP LOCKED` too): row locks
    /// that block writers, so not a plain read; `select` alone does not admit it.
    LockingRead,
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
#[schema(example = "file_access")]
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
#[schema(example = json!({"statement_count": 1, "kinds": ["update"], "unparsed": false, "tables_read": ["customers"], "tables_written": ["customers"]}))]
pub struct Facts {
    /// How many statements the input holds (a request must hold exactly one).
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
    /// For requests to HTTP API targets: the normalised request. SQL facts are then empty,
    /// and only rules with HTTP conditions (or none) apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<crate::inspect::HttpFacts>,
}

impl Facts {
    /// Whether the request provably only reads: parsed, every statement kind a plain read
    /// (`select`, `explain` — with ANALYZE the explained statement's kind is listed too —
    /// or `show`), no row locks, nothing written, and every function called a listed one
    /// with no dangerous class (so no sequence, lock, setting or user code). A read-only
    /// transaction would refuse nothing such a request does.
    pub fn reads_only(&self) -> bool {
        !self.unparsed
            && self.command.is_none()
            && self.http.is_none()
            && !self.shell
            && !self.kinds.is_empty()
            && self.kinds.iter().all(|k| {
                matches!(
                    k,
                    StatementKind::Select | StatementKind::Explain | StatementKind::Show
                )
            })
            && self.tables_written.is_empty()
            && !self.nested_write
            && self.function_classes.is_empty()
            && !self.function_unlisted
    }

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
        ConnectionKind::Ssh | ConnectionKind::Kubernetes | ConnectionKind::Http => {
            Box::new(PostgreSqlDialect {})
        }
    }
}

/// What inspection gives admission: the facts, and the statement to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspected {
    pub facts: Facts,
    /// Airlock's rendering of the inspected tree: what is sent to the database, shown to
    /// reviewers, bound by approvals and kept in the audit. `None` when the input is
    /// `unparsed` (there is then no inspected tree to render).
    pub statement: Option<String>,
}

/// Inspects one request's SQL text.
///
/// The statement that runs is rendered from the parsed tree (see `canonical`), and is
/// accepted only if it reads back to the same tree and facts and, on PostgreSQL, the
/// server's own grammar agrees with every fact (see `postgres_grammar`). Anything else is
/// `unparsed`.
pub fn inspect(kind: ConnectionKind, sql: &str) -> Result<Inspected, InspectError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(InspectError::TooLong(sql.len()));
    }
    if sql.trim().is_empty() {
        return Err(InspectError::Empty);
    }
    let unparsed = || Inspected {
        facts: Facts::unparsed(),
        statement: None,
    };
    let Some(tokens) = tokenize(kind, sql) else {
        return Ok(unparsed());
    };
    // MySQL/MariaDB run what sqlparser reads as a comment.
    let executable_comment =
        kind == ConnectionKind::Mysql && (sql.contains("/*!") || sql.contains("/*M!"));
    let strict = lexical::is_strict(kind, sql, &tokens);
    // No thread (resources exhausted), a panic in the parser, or input that is not exactly
    // parsed statements: nothing was accounted for.
    let Some((mut facts, statement)) = with_tokens(kind, tokens, |statements| {
        let facts = analyse(kind, statements);
        (facts, canonical::render(kind, statements))
    }) else {
        return Ok(unparsed());
    };
    facts.unparsed |= executable_comment || !strict;
    if facts.unparsed || !runs_as_inspected(kind, &statement, &facts) {
        facts.unparsed = true;
        return Ok(Inspected {
            facts,
            statement: None,
        });
    }
    Ok(Inspected {
        facts,
        statement: Some(statement),
    })
}

/// Whether `statement` (the rendering of an inspected tree) is what was inspected: it
/// parses back to a tree with the same rendering and the same facts, and on PostgreSQL the
/// server's lexer and grammar agree with sqlparser on it.
fn runs_as_inspected(kind: ConnectionKind, statement: &str, facts: &Facts) -> bool {
    let Some(tokens) = tokenize(kind, statement) else {
        return false;
    };
    let server_check = (kind == ConnectionKind::Postgres).then(|| tokens.clone());
    let top_kinds = with_tokens(kind, tokens, |statements| {
        let same =
            analyse(kind, statements) == *facts && canonical::render(kind, statements) == statement;
        same.then(|| statements.iter().map(classify).collect::<Vec<_>>())
    })
    .flatten();
    match (top_kinds, server_check) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(top_kinds), Some(tokens)) => {
            postgres_grammar::agrees(statement, &tokens, &top_kinds, facts)
        }
    }
}

/// sqlparser's tokens of `sql` in the connection's dialect, literals unescaped.
fn tokenize(kind: ConnectionKind, sql: &str) -> Option<Vec<TokenWithSpan>> {
    Tokenizer::new(dialect(kind).as_ref(), sql)
        .with_unescape(true)
        .tokenize_with_location()
        .ok()
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
    with_tokens(kind, tokenize(kind, sql)?, |statements| walk(statements))
}

/// [`with_parsed`] from tokens already made; `walk` may rewrite the tree (the rendering does).
fn with_tokens<R, F>(kind: ConnectionKind, tokens: Vec<TokenWithSpan>, walk: F) -> Option<R>
where
    R: Send,
    F: FnOnce(&mut [Statement]) -> R + Send,
{
    let weight = weight(&tokens);
    let parse_and_walk = move || {
        let dialect = dialect(kind);
        let mut parser = Parser::new(dialect.as_ref())
            .with_recursion_limit(RECURSION_LIMIT)
            .with_tokens_with_locations(tokens);
        let mut statements = parser.parse_statements().ok()?;
        // `parse_statements` stops without error at an `END` keyword where it expects a
        // statement delimiter, so `SELECT 1 END DELETE FROM t` would parse as one SELECT.
        if statements.is_empty() || parser.peek_token_ref().token != Token::EOF {
            return None;
        }
        // The tree is dropped at the end of this closure, on the same stack as the walk.
        Some(walk(&mut statements))
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

/// CTE names visible from some point of the tree. Lookups are by hash and a body shares
/// its WITH clause's names, so a statement of thousands of CTEs costs linear time.
#[derive(Debug)]
enum Scope {
    /// A WITH clause: each CTE name and the position it first appears at.
    With(HashMap<String, usize>),
    /// The body of the CTE at `visible` (or `visible - 1` under RECURSIVE) of the WITH
    /// scope at index `of`: it sees only the names before `visible`, and replaces that
    /// scope, whose full list only the main query sees.
    Body { of: usize, visible: usize },
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
    /// CTE body (query address) → (scope index of its WITH, how many of its names the
    /// body sees).
    cte_bodies: HashMap<usize, (usize, usize)>,
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
            http: None,
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
            let seen = match scope {
                Scope::With(names) => names.contains_key(&key),
                Scope::Body { of, visible } => {
                    hidden.push(*of);
                    matches!(
                        self.scopes.get(*of),
                        Some(Scope::With(names)) if names.get(&key).is_some_and(|p| p < visible)
                    )
                }
            };
            if seen {
                return true;
            }
        }
        false
    }

    /// Write targets, WHERE checks and statement-level capabilities of one statement.
    fn record_statement(&mut self, statement: &Statement, executes: bool) {
        let hinted = match statement {
            Statement::Insert(s) => !s.optimizer_hints.is_empty(),
            Statement::Update(s) => !s.optimizer_hints.is_empty(),
            Statement::Delete(s) => !s.optimizer_hints.is_empty(),
            Statement::Merge(s) => !s.optimizer_hints.is_empty(),
            _ => false,
        };
        self.unparsed |= hinted;
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
        if let Some((of, visible)) = self.cte_bodies.remove(&addr(query)) {
            self.scopes.push(Scope::Body { of, visible });
            pushed += 1;
        }
        if let Some(with) = &query.with {
            let mut names: HashMap<String, usize> = HashMap::new();
            for (i, cte) in with.cte_tables.iter().enumerate() {
                names.entry(self.cte_key(&cte.alias.name)).or_insert(i);
            }
            let index = self.scopes.len();
            for (i, cte) in with.cte_tables.iter().enumerate() {
                // Non-recursive: only earlier CTEs. SQLite may also let a CTE refer to
                // itself without RECURSIVE; reporting that name as a table is the safe side.
                let visible = if with.recursive { i + 1 } else { i };
                self.cte_bodies
                    .insert(addr(cte.query.as_ref()), (index, visible));
            }
            self.scopes.push(Scope::With(names));
            pushed += 1;
        }
        self.query_scopes.push(pushed);
        if !query.locks.is_empty() && self.executing() {
            self.kinds.push(StatementKind::LockingRead);
        }
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
        // MySQL optimizer hints (`/*+ SET_VAR(...) MAX_EXECUTION_TIME(0) */`) are comments
        // sqlparser keeps and prints back: they would reach the server and change its
        // settings for the statement.
        if !select.optimizer_hints.is_empty() {
            self.unparsed = true;
        }
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

mod canonical;
mod helpers;
mod lexical;
mod memo;
mod postgres_grammar;
mod syntax;
use helpers::*;
pub(crate) use helpers::{fold, render};
pub(crate) use lexical::invisible;
pub use memo::inspect_memoized;
pub use syntax::{SyntaxError, syntax_error};

#[cfg(test)]
#[path = "sql_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "sql_props.rs"]
mod props;
