//! Column lineage: for each output column of a statement's result, the source columns
//! (`table.column`) its values are derived from, and the source columns the statement
//! filters, joins, groups or orders on.
//!
//! Invariants:
//! - Lineage follows data, not labels: an alias, an expression, a function or aggregate call,
//!   a subquery, a CTE, a derived table or a set operation passes on every source column that
//!   flows into it. A reference to a table as a value (`SELECT c FROM customers c`,
//!   `to_json(c)`, `ROW(c.*)`) is derived from all of the table's columns.
//! - The only permitted error is over-approximation: an output may list a source column it
//!   does not really derive from, never miss one. Where the code cannot tell which of several
//!   sources a reference means (ambiguous names, case-only matches, unknown tables), it takes
//!   all of them. Where it cannot follow a reference at all, the output is
//!   [`OutputLineage::Unknown`] and [`Lineage::incomplete`] is set.
//! - The outputs must line up with the result the database returned: if the computed count
//!   differs from the real one, every output is `Unknown` (fail closed).
//! - Parsing is the inspector's (see [`super::sql`]): the same dialects, length limit, recursion
//!   limit, refusal of MySQL executable comments, and the same rule for running large input on
//!   its own thread with a stack that grows with the token count.
//! - Column references inside expressions are found by sqlparser's generic visitor, which
//!   walks every node, so an expression form this code does not know cannot hide a column; the
//!   code only adds what the visitor cannot know (which names are fields rather than columns,
//!   which parts of a call are filters, `*` arguments, subquery scopes).
//! - Recursion in this module follows query nesting (subqueries, derived tables, parenthesised
//!   joins), which the parser's recursion limit bounds. Chains the parser builds with loops
//!   (set operations, join lists, VALUES rows) are walked with loops, and expression trees only
//!   by the visitor. Total work is bounded by `WORK_BUDGET`; past it the result is `Unknown`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::ControlFlow;

use serde::Serialize;
use sqlparser::ast::{
    AccessExpr, AssignmentTarget, Cte, Distinct, ExceptSelectItem, ExcludeSelectItem, Expr,
    FromTable, FunctionArg, FunctionArgExpr, FunctionArgumentClause, FunctionArguments,
    GroupByExpr, GroupByWithModifier, HavingBound, Ident, InTarget, JoinConstraint, JoinOperator,
    JsonTableColumn, NamedWindowExpr, ObjectName, OnConflictAction, OnInsert, OrderBy, OrderByKind,
    Query, RenameSelectItem, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr,
    Statement, TableAlias, TableFactor, TableObject, TableWithJoins, UpdateTableFromKind, Value,
    Visit, Visitor, WildcardAdditionalOptions, WindowFrameBound, WindowSpec, WindowType, With,
};

use super::functions::{self, Listing};
use super::sql::{self, MAX_SQL_BYTES};
use crate::config::ConnectionKind;

/// Tables and their columns, as the target reports them (lowercased names for matching).
#[derive(Debug, Clone, Default)]
pub struct SchemaInfo {
    /// "table" and "schema.table" both inserted; column names in order.
    pub tables: HashMap<String, Vec<String>>,
}

/// One column of one table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SourceColumn {
    /// The unqualified table name, normalised like `Facts::tables_read`; `*` for a reference
    /// the inspector could not resolve to a table.
    pub table: String,
    /// Lowercased; `*` when even the column is unknown.
    pub column: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum OutputLineage {
    /// Derived from exactly these source columns (empty: from no column, e.g. a literal or count(*)).
    Known(BTreeSet<SourceColumn>),
    /// The inspector could not follow this output: callers must treat it as protected.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Lineage {
    /// One entry per output column, in result order; empty when the statement returns no rows.
    pub outputs: Vec<OutputLineage>,
    /// Source columns used anywhere outside the projection: WHERE, JOIN ON/USING, GROUP BY,
    /// HAVING, ORDER BY, window PARTITION/ORDER, aggregate FILTER and ORDER BY, function
    /// arguments in those, subqueries in them (their outputs too), LIMIT expressions.
    /// Unresolvable references there appear with table `*` and the column name (`*` too when
    /// not even that is known). Empty for input that could not be parsed: check `incomplete`.
    pub predicate_columns: BTreeSet<SourceColumn>,
    /// Some reference could not be resolved at all (unknown table, unparsed input,
    /// unsupported construct).
    pub incomplete: bool,
}

/// Rounds of a recursive CTE's fixpoint before its lineage is given up as `Unknown`. Each
/// round can only add source columns, so real queries settle in a few.
const FIXPOINT_ROUNDS: usize = 16;
/// Units of work (expression nodes visited, query bodies analysed) per statement. Recursive
/// CTE fixpoints re-analyse their bodies and nested subqueries are walked once per enclosing
/// level, so crafted input could otherwise cost far more than its length suggests.
const WORK_BUDGET: usize = 10_000_000;

/// Computes the lineage of one statement's result. `result_columns` is the number of columns
/// the database actually returned.
pub fn lineage(
    kind: ConnectionKind,
    sql: &str,
    schema: &SchemaInfo,
    result_columns: usize,
) -> Lineage {
    // Same refusals as the inspector: what it cannot account for, lineage does not follow.
    let Some(analysis) = analysis(kind, sql, schema) else {
        return unfollowed(result_columns);
    };
    let mut incomplete = analysis.incomplete;
    let outputs = match analysis.relation {
        Some(Relation::Columns(columns)) if columns.len() == result_columns => {
            columns.into_iter().map(|c| c.lineage).collect()
        }
        // Every output derives from at most the union, whatever their order.
        Some(Relation::Opaque(union)) => {
            incomplete = true;
            vec![union; result_columns]
        }
        _ => {
            incomplete = true;
            vec![OutputLineage::Unknown; result_columns]
        }
    };
    Lineage {
        outputs,
        predicate_columns: analysis.predicates,
        incomplete,
    }
}

/// Lineage before the statement runs, when the number of result columns is not known yet:
/// outputs as the statement itself defines them. Used to refuse, before anything runs, what
/// strict masking would not let through.
pub fn lineage_before_running(kind: ConnectionKind, sql: &str, schema: &SchemaInfo) -> Lineage {
    let Some(analysis) = analysis(kind, sql, schema) else {
        return unfollowed(0);
    };
    let (outputs, opaque) = match analysis.relation {
        Some(Relation::Columns(columns)) => {
            (columns.into_iter().map(|c| c.lineage).collect(), false)
        }
        Some(Relation::Opaque(union)) => (vec![union], true),
        None => (Vec::new(), false),
    };
    Lineage {
        outputs,
        predicate_columns: analysis.predicates,
        incomplete: analysis.incomplete || opaque,
    }
}

/// Parses and analyses, after the same refusals as the inspector.
fn analysis(kind: ConnectionKind, sql: &str, schema: &SchemaInfo) -> Option<Analysis> {
    let refused = sql.len() > MAX_SQL_BYTES
        || sql.trim().is_empty()
        || (kind == ConnectionKind::Mysql && (sql.contains("/*!") || sql.contains("/*M!")));
    if refused {
        return None;
    }
    sql::with_parsed(kind, sql, |statements| analyse(kind, statements, schema)).flatten()
}

/// The lineage of a result nothing could be followed in.
fn unfollowed(result_columns: usize) -> Lineage {
    Lineage {
        outputs: vec![OutputLineage::Unknown; result_columns],
        predicate_columns: BTreeSet::new(),
        incomplete: true,
    }
}

struct Analysis {
    /// `None`: the statement is of a kind whose result is not followed.
    relation: Option<Relation>,
    predicates: BTreeSet<SourceColumn>,
    incomplete: bool,
}

/// Analyses the parsed statements; `None` unless they are exactly one statement.
fn analyse(
    kind: ConnectionKind,
    statements: &[Statement],
    schema: &SchemaInfo,
) -> Option<Analysis> {
    let [statement] = statements else {
        return None;
    };
    let mut ctx = Ctx {
        kind,
        schema,
        predicates: BTreeSet::new(),
        incomplete: false,
        work: WORK_BUDGET,
    };
    let relation = ctx.statement(statement);
    Some(Analysis {
        relation,
        predicates: ctx.predicates,
        incomplete: ctx.incomplete,
    })
}

impl OutputLineage {
    fn none() -> OutputLineage {
        OutputLineage::Known(BTreeSet::new())
    }

    fn column(table: &str, column: &str) -> OutputLineage {
        OutputLineage::Known(BTreeSet::from([SourceColumn {
            table: table.to_string(),
            column: column.to_lowercase(),
        }]))
    }

    /// Adds `other`'s source columns; `Unknown` absorbs everything.
    fn add(&mut self, other: &OutputLineage) {
        match (&mut *self, other) {
            (OutputLineage::Unknown, _) => {}
            (_, OutputLineage::Unknown) => *self = OutputLineage::Unknown,
            (OutputLineage::Known(mine), OutputLineage::Known(theirs)) => {
                mine.extend(theirs.iter().cloned());
            }
        }
    }
}

/// One column of an intermediate result (derived table, CTE, set operation branch).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Col {
    /// The name a reference can use, folded like an identifier; `None` when the code does not
    /// know the name the server gives it (an unaliased expression).
    name: Option<String>,
    lineage: OutputLineage,
}

/// The columns of an intermediate result.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Relation {
    /// Known by position.
    Columns(Vec<Col>),
    /// Neither count nor order known; every column derives from at most this lineage.
    Opaque(OutputLineage),
}

impl Relation {
    fn unknown() -> Relation {
        Relation::Opaque(OutputLineage::Unknown)
    }

    fn empty() -> Relation {
        Relation::Columns(Vec::new())
    }

    /// Everything any column derives from.
    fn whole(&self) -> OutputLineage {
        match self {
            Relation::Columns(columns) => {
                let mut all = OutputLineage::none();
                for c in columns {
                    all.add(&c.lineage);
                }
                all
            }
            Relation::Opaque(lineage) => lineage.clone(),
        }
    }

    /// The columns of `self` followed by those of `other`.
    fn concat(self, other: Relation) -> Relation {
        match (self, other) {
            (Relation::Columns(mut mine), Relation::Columns(theirs)) => {
                mine.extend(theirs);
                Relation::Columns(mine)
            }
            (mine, theirs) => {
                let mut all = mine.whole();
                all.add(&theirs.whole());
                Relation::Opaque(all)
            }
        }
    }

    /// Position-wise union (set operations, fixpoint rounds); names from `self`. Shapes that
    /// do not line up give up positions. Monotone: the result only grows, and `Opaque` and
    /// `Unknown` absorb, which is what makes the recursive-CTE fixpoint terminate.
    fn merge(self, other: &Relation) -> Relation {
        match (self, other) {
            (Relation::Columns(mut mine), Relation::Columns(theirs))
                if mine.len() == theirs.len() =>
            {
                for (m, t) in mine.iter_mut().zip(theirs) {
                    m.lineage.add(&t.lineage);
                }
                Relation::Columns(mine)
            }
            (mine, theirs) => {
                let mut all = mine.whole();
                all.add(&theirs.whole());
                Relation::Opaque(all)
            }
        }
    }

    /// Applies an alias column list (`AS s(a, b)`): it renames the first columns by position.
    fn rename(self, names: &[String]) -> Relation {
        if names.is_empty() {
            return self;
        }
        match self {
            Relation::Columns(mut columns) if names.len() <= columns.len() => {
                for (c, n) in columns.iter_mut().zip(names) {
                    c.name = Some(n.clone());
                }
                Relation::Columns(columns)
            }
            // More names than columns: the server would refuse, so the shape is wrong.
            Relation::Columns(columns) => Relation::Opaque(Relation::Columns(columns).whole()),
            opaque @ Relation::Opaque(_) => opaque,
        }
    }
}

/// How a reference's name compares with a column's or source's name: `Some(true)` when the
/// server compares them equal, `Some(false)` when they differ only by case (the server may or
/// may not tell them apart, e.g. a quoted PostgreSQL name against the lowercased schema).
fn name_match(reference: &str, name: &str) -> Option<bool> {
    if reference == name {
        Some(true)
    } else if reference.to_lowercase() == name.to_lowercase() {
        Some(false)
    } else {
        None
    }
}

/// What a column name found in one source.
enum Hit {
    /// The source has the column.
    Definite(OutputLineage),
    /// The source may have it (unknown columns, unnamed columns, case-only match).
    Maybe(OutputLineage),
    Miss,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    No,
    Yes,
    /// Matches only if the server compares case-insensitively (MySQL table names).
    Maybe,
}

/// Lineage written into a table's columns by the statement itself (INSERT values, UPDATE
/// assignments), which RETURNING then shows.
#[derive(Debug, Clone)]
struct Extra {
    by_name: Vec<(String, OutputLineage)>,
    /// Written into every column (when the target columns cannot be told apart).
    all: OutputLineage,
}

impl Extra {
    fn none() -> Extra {
        Extra {
            by_name: Vec::new(),
            all: OutputLineage::none(),
        }
    }

    fn of(&self, column: &str) -> OutputLineage {
        let mut lineage = self.all.clone();
        for (name, l) in &self.by_name {
            if name_match(column, name).is_some() {
                lineage.add(l);
            }
        }
        lineage
    }
}

#[derive(Debug, Clone)]
enum Body {
    /// A base table. `columns` from the schema (lowercase), `None` when the schema lacks it.
    Table {
        table: String,
        columns: Option<Vec<String>>,
        extra: Extra,
    },
    /// A derived table, CTE, function result, etc.
    Derived(Relation),
}

/// One entry of a FROM clause (or a DML target) that references can name.
#[derive(Debug, Clone)]
struct Source {
    /// What a qualified reference must say: the alias, or the table's name as written.
    /// Empty when the source cannot be named (unaliased subquery).
    qualifier: Vec<Ident>,
    /// An alias must be matched whole; a table name may be matched by its trailing parts.
    aliased: bool,
    body: Body,
}

impl Source {
    fn new(name: &[Ident], alias: Option<&TableAlias>, body: Body) -> Source {
        match alias {
            Some(alias) => Source {
                qualifier: vec![alias.name.clone()],
                aliased: true,
                body,
            },
            None => Source {
                qualifier: name.to_vec(),
                aliased: false,
                body,
            },
        }
    }

    fn matches(&self, kind: ConnectionKind, parts: &[Ident]) -> Match {
        if self.qualifier.is_empty() || parts.is_empty() || (self.aliased && parts.len() != 1) {
            return Match::No;
        }
        // Compare the trailing parts both names have: `public.t` and `t` name the same table
        // as far as a successful query is concerned.
        let mut result = Match::Yes;
        for (mine, theirs) in self.qualifier.iter().rev().zip(parts.iter().rev()) {
            if sql::fold(kind, mine) != sql::fold(kind, theirs) {
                return Match::No;
            }
            // MySQL folds for the inspector, but may compare table names and aliases
            // case-sensitively: a case-only match might be a different, outer source.
            if kind == ConnectionKind::Mysql && mine.value != theirs.value {
                result = Match::Maybe;
            }
        }
        result
    }

    /// What `column` (folded) of this source derives from.
    fn column(&self, column: &str) -> Hit {
        match &self.body {
            Body::Table {
                table,
                columns: Some(columns),
                extra,
            } => {
                let mut lineage = OutputLineage::none();
                let mut found = None;
                for c in columns {
                    if let Some(exact) = name_match(column, c) {
                        lineage.add(&OutputLineage::column(table, c));
                        lineage.add(&extra.of(c));
                        found = Some(found.unwrap_or(false) || exact);
                    }
                }
                match found {
                    Some(true) => Hit::Definite(lineage),
                    Some(false) => Hit::Maybe(lineage),
                    None => Hit::Miss,
                }
            }
            Body::Table {
                table,
                columns: None,
                extra,
            } => {
                let mut lineage = OutputLineage::column(table, column);
                lineage.add(&extra.of(column));
                Hit::Maybe(lineage)
            }
            Body::Derived(Relation::Columns(columns)) => {
                let mut lineage = OutputLineage::none();
                let mut found = None;
                for c in columns {
                    if let Some(exact) = c.name.as_deref().and_then(|n| name_match(column, n)) {
                        lineage.add(&c.lineage);
                        found = Some(found.unwrap_or(false) || exact);
                    }
                }
                match found {
                    Some(true) => Hit::Definite(lineage),
                    Some(false) => Hit::Maybe(lineage),
                    None => {
                        // The name may be one the code could not work out for an expression.
                        let mut unnamed = OutputLineage::none();
                        let mut any = false;
                        for c in columns.iter().filter(|c| c.name.is_none()) {
                            unnamed.add(&c.lineage);
                            any = true;
                        }
                        if any { Hit::Maybe(unnamed) } else { Hit::Miss }
                    }
                }
            }
            Body::Derived(Relation::Opaque(lineage)) => Hit::Maybe(lineage.clone()),
        }
    }

    /// A qualified reference to a column this source does not list. For a table the schema
    /// describes, that is no stored column: a system column, or (PostgreSQL) a function
    /// applied to the whole row in attribute notation (`c.f` is `f(c)`), which can return
    /// anything. Not followed.
    fn missing(&self, column: &str) -> OutputLineage {
        match &self.body {
            Body::Table {
                table,
                columns: None,
                extra,
            } => {
                let mut lineage = OutputLineage::column(table, column);
                lineage.add(&extra.of(column));
                lineage
            }
            Body::Table { .. } | Body::Derived(_) => OutputLineage::Unknown,
        }
    }

    /// The whole row, as a value.
    fn whole(&self) -> OutputLineage {
        self.star().whole()
    }

    /// What `source.*` expands to.
    fn star(&self) -> Relation {
        match &self.body {
            Body::Table {
                table,
                columns: Some(columns),
                extra,
            } => Relation::Columns(
                columns
                    .iter()
                    .map(|c| {
                        let mut lineage = OutputLineage::column(table, c);
                        lineage.add(&extra.of(c));
                        Col {
                            name: Some(c.clone()),
                            lineage,
                        }
                    })
                    .collect(),
            ),
            Body::Table { columns: None, .. } => Relation::unknown(),
            Body::Derived(relation) => relation.clone(),
        }
    }
}

/// The sources visible at one query level, and the levels around it (correlated references).
struct Scope<'a> {
    sources: Vec<Source>,
    parent: Option<&'a Scope<'a>>,
}

impl Scope<'_> {
    fn root() -> Scope<'static> {
        Scope {
            sources: Vec::new(),
            parent: None,
        }
    }

    /// This level, then the enclosing ones.
    fn levels(&self) -> impl Iterator<Item = &Scope<'_>> {
        std::iter::successors(Some(self), |s| s.parent)
    }
}

/// CTEs visible at some point: a body sees only the CTEs before it (and itself under
/// RECURSIVE), as in the servers, so `WITH t AS (SELECT * FROM t)` reads table `t`.
struct Ctes<'a> {
    entries: Vec<(Ident, Relation)>,
    parent: Option<&'a Ctes<'a>>,
}

enum CteHit<'a> {
    Found(&'a Relation),
    /// Matches only by case on MySQL, which may or may not fold CTE names.
    Ambiguous,
    Absent,
}

impl Ctes<'_> {
    fn lookup(&self, kind: ConnectionKind, name: &Ident) -> CteHit<'_> {
        let key = sql::fold(kind, name);
        let mut level = Some(self);
        while let Some(ctes) = level {
            for (ident, relation) in ctes.entries.iter().rev() {
                if sql::fold(kind, ident) == key {
                    if kind == ConnectionKind::Mysql && ident.value != name.value {
                        return CteHit::Ambiguous;
                    }
                    return CteHit::Found(relation);
                }
            }
            level = ctes.parent;
        }
        CteHit::Absent
    }
}

/// The identifiers of a name; `None` for a name computed at run time.
fn idents(name: &ObjectName) -> Option<Vec<Ident>> {
    name.0.iter().map(|p| p.as_ident().cloned()).collect()
}

fn addr<T>(node: &T) -> usize {
    std::ptr::from_ref(node).addr()
}

/// The analysis of one statement.
struct Ctx<'s> {
    kind: ConnectionKind,
    schema: &'s SchemaInfo,
    predicates: BTreeSet<SourceColumn>,
    incomplete: bool,
    /// Work left (see [`WORK_BUDGET`]).
    work: usize,
}

impl Ctx<'_> {
    fn key(&self, ident: &Ident) -> String {
        sql::fold(self.kind, ident)
    }

    fn keys(&self, idents: &[Ident]) -> Vec<String> {
        idents.iter().map(|i| self.key(i)).collect()
    }

    /// Whether a called function is a built-in whose result derives only from its arguments.
    /// Anything else (user code, and built-ins that read files, other tables through SQL
    /// text, the network or large objects) may return data the lineage cannot see. Follows
    /// the inspector's rule for telling a built-in from user code (see `Facts`).
    fn builtin(&self, name: &ObjectName) -> bool {
        let Some(parts) = idents(name) else {
            return false;
        };
        let Some((last, qualifier)) = parts.split_last() else {
            return false;
        };
        let folded = self.key(last);
        let lowercase = folded.to_ascii_lowercase();
        let system = folded == lowercase
            && match (self.kind, qualifier) {
                (_, []) => true,
                (ConnectionKind::Postgres, [schema]) => self.key(schema) == "pg_catalog",
                _ => false,
            };
        // PostgreSQL session settings can hold whatever an earlier statement stored there.
        if !system || (self.kind == ConnectionKind::Postgres && lowercase == "current_setting") {
            return false;
        }
        // Row and array constructors, which sqlparser parses as calls.
        if qualifier.is_empty() && matches!(lowercase.as_str(), "row" | "array") {
            return true;
        }
        functions::lookup(self.kind, &lowercase) == Listing::Safe
    }

    /// Takes one unit of work; false (and incomplete) once the budget is spent.
    fn spend(&mut self) -> bool {
        if self.work == 0 {
            self.incomplete = true;
            return false;
        }
        self.work -= 1;
        true
    }

    fn add_predicate(&mut self, lineage: &OutputLineage, name: &str) {
        match lineage {
            OutputLineage::Known(columns) => self.predicates.extend(columns.iter().cloned()),
            OutputLineage::Unknown => {
                self.incomplete = true;
                self.predicates.insert(SourceColumn {
                    table: "*".to_string(),
                    column: name.to_lowercase(),
                });
            }
        }
    }

    /// The statement's result; `None` for statements whose rows are not followed.
    fn statement(&mut self, statement: &Statement) -> Option<Relation> {
        let root = Scope::root();
        let ctes = Ctes {
            entries: Vec::new(),
            parent: None,
        };
        match statement {
            Statement::Query(query) => {
                let relation = self.query(query, &root, &ctes);
                // SELECT ... INTO writes a table or variables and returns no rows.
                let into = matches!(query.body.as_ref(), SetExpr::Select(s) if s.into.is_some());
                Some(if into { Relation::empty() } else { relation })
            }
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
                Some(self.dml(statement, &root, &ctes))
            }
            // EXPLAIN, SHOW, PRAGMA, MERGE, ...: rows the code does not follow.
            _ => {
                self.incomplete = true;
                None
            }
        }
    }

    fn query(&mut self, query: &Query, outer: &Scope, ctes: &Ctes) -> Relation {
        if !query.pipe_operators.is_empty()
            || query.for_clause.is_some()
            || query.format_clause.is_some()
        {
            self.incomplete = true;
            return Relation::unknown();
        }
        let local;
        let env = match &query.with {
            Some(with) => {
                local = self.with(with, outer, ctes);
                &local
            }
            None => ctes,
        };
        let relation = self.body(&query.body, outer, env, query.order_by.as_ref());
        // LIMIT/OFFSET/FETCH take constants and subqueries; a subquery there filters rows.
        if let Some(limit) = &query.limit_clause {
            self.predicate(limit, outer, env, &[]);
        }
        if let Some(fetch) = &query.fetch {
            self.predicate(fetch, outer, env, &[]);
        }
        relation
    }

    fn with<'c>(&mut self, with: &With, outer: &Scope, ctes: &'c Ctes<'c>) -> Ctes<'c> {
        let mut local = Ctes {
            entries: Vec::new(),
            parent: Some(ctes),
        };
        for cte in &with.cte_tables {
            let relation = if with.recursive {
                self.recursive_cte(cte, outer, &local)
            } else {
                let names = self.alias_names(Some(&cte.alias));
                self.query(&cte.query, outer, &local).rename(&names)
            };
            local.entries.push((cte.alias.name.clone(), relation));
        }
        local
    }

    /// A CTE that may reference itself: analyse the body assuming a lineage for itself, widen
    /// the assumption by the result, repeat until it no longer changes.
    fn recursive_cte(&mut self, cte: &Cte, outer: &Scope, env: &Ctes) -> Relation {
        let names = self.alias_names(Some(&cte.alias));
        // Nothing known yet: every reference to the CTE derives from nothing.
        let bottom = Relation::Opaque(OutputLineage::none());
        // Start from the column list, or from the anchor (the first branch, which cannot
        // reference the CTE) so that `SELECT * FROM r` in the recursive branch has a shape.
        // Either is part of the final lineage, so starting there keeps the rounds monotone.
        let mut assumed = if !names.is_empty() {
            Relation::Columns(
                names
                    .iter()
                    .map(|n| Col {
                        name: Some(n.clone()),
                        lineage: OutputLineage::none(),
                    })
                    .collect(),
            )
        } else {
            match (&cte.query.with, cte.query.body.as_ref()) {
                (None, SetExpr::SetOperation { left, .. }) => {
                    let mut anchor: &SetExpr = left;
                    while let SetExpr::SetOperation { left, .. } = anchor {
                        anchor = left;
                    }
                    let inner = Ctes {
                        entries: vec![(cte.alias.name.clone(), bottom.clone())],
                        parent: Some(env),
                    };
                    self.leaf(anchor, outer, &inner)
                }
                _ => bottom.clone(),
            }
        };
        for _ in 0..FIXPOINT_ROUNDS {
            let inner = Ctes {
                entries: vec![(cte.alias.name.clone(), assumed.clone())],
                parent: Some(env),
            };
            let found = self.query(&cte.query, outer, &inner).rename(&names);
            let next = if assumed == bottom {
                found
            } else {
                assumed.clone().merge(&found)
            };
            if next == assumed {
                return next;
            }
            assumed = next;
        }
        self.incomplete = true;
        Relation::unknown()
    }

    /// A query body: a SELECT, or a chain of set operations whose output `i` derives from
    /// output `i` of every branch. The chain is as long as the input, so it is flattened with
    /// a loop. `order_by` is the enclosing query's: a lone SELECT resolves it in its own scope.
    fn body(
        &mut self,
        body: &SetExpr,
        outer: &Scope,
        ctes: &Ctes,
        order_by: Option<&OrderBy>,
    ) -> Relation {
        if let SetExpr::Select(select) = body {
            return self.select(select, outer, ctes, order_by);
        }
        let mut leaves: Vec<&SetExpr> = Vec::new();
        let mut stack = vec![body];
        while let Some(node) = stack.pop() {
            match node {
                SetExpr::SetOperation { left, right, .. } => {
                    stack.push(right);
                    stack.push(left);
                }
                other => leaves.push(other),
            }
        }
        let mut combined: Option<Relation> = None;
        for leaf in leaves {
            let relation = self.leaf(leaf, outer, ctes);
            combined = Some(match combined {
                None => relation,
                Some(c) => c.merge(&relation),
            });
        }
        let relation = combined.unwrap_or_else(Relation::unknown);
        if let Some(order_by) = order_by {
            // ORDER BY of a set operation names output columns.
            let scope = Scope {
                sources: vec![Source {
                    qualifier: Vec::new(),
                    aliased: true,
                    body: Body::Derived(relation.clone()),
                }],
                parent: Some(outer),
            };
            self.order_by(order_by, &scope, ctes, &relation);
        }
        relation
    }

    fn leaf(&mut self, leaf: &SetExpr, outer: &Scope, ctes: &Ctes) -> Relation {
        match leaf {
            SetExpr::Select(select) => self.select(select, outer, ctes, None),
            SetExpr::Query(query) => self.query(query, outer, ctes),
            SetExpr::Values(values) => {
                if !self.spend() {
                    return Relation::unknown();
                }
                let mut combined: Option<Relation> = None;
                for row in &values.rows {
                    let columns = row
                        .content
                        .iter()
                        .map(|e| Col {
                            name: None,
                            lineage: self.data(e, outer, ctes),
                        })
                        .collect();
                    let relation = Relation::Columns(columns);
                    combined = Some(match combined {
                        None => relation,
                        Some(c) => c.merge(&relation),
                    });
                }
                combined.unwrap_or_else(Relation::empty)
            }
            SetExpr::Insert(statement)
            | SetExpr::Update(statement)
            | SetExpr::Delete(statement) => self.dml(statement, outer, ctes),
            SetExpr::Table(table) => {
                let Some(name) = &table.table_name else {
                    self.incomplete = true;
                    return Relation::unknown();
                };
                let parts: Vec<Ident> = table
                    .schema_name
                    .iter()
                    .chain(std::iter::once(name))
                    .cloned()
                    .collect();
                let mut sources = Vec::new();
                self.named(&parts, None, &mut sources, ctes)
            }
            // MERGE ... RETURNING, and set operations the flattening already took apart.
            SetExpr::Merge(_) | SetExpr::SetOperation { .. } => {
                self.incomplete = true;
                Relation::unknown()
            }
        }
    }

    fn select(
        &mut self,
        select: &Select,
        outer: &Scope,
        ctes: &Ctes,
        order_by: Option<&OrderBy>,
    ) -> Relation {
        if !self.spend() {
            return Relation::unknown();
        }
        let (sources, star) = self.from(&select.from, outer, ctes);
        let scope = Scope {
            sources,
            parent: Some(outer),
        };
        let mut out = self.projection(&select.projection, &scope, &star, ctes);
        // Select-level EXCLUDE, value tables, Hive LATERAL VIEW, CONNECT BY: not followed.
        if select.exclude.is_some()
            || select.value_table_mode.is_some()
            || !select.lateral_views.is_empty()
            || !select.connect_by.is_empty()
        {
            self.incomplete = true;
            out = Relation::Opaque(out.whole());
        }
        // GROUP BY, HAVING and ORDER BY may name output columns (SQLite even WHERE); taking
        // them everywhere can only add predicate columns.
        let aliases: Vec<Col> = match &out {
            Relation::Columns(columns) => columns.clone(),
            Relation::Opaque(_) => Vec::new(),
        };
        for clause in [
            &select.prewhere,
            &select.selection,
            &select.having,
            &select.qualify,
        ]
        .into_iter()
        .flatten()
        {
            self.predicate(clause, &scope, ctes, &aliases);
        }
        match &select.group_by {
            GroupByExpr::All(modifiers) => {
                self.add_predicate(&out.whole(), "*");
                self.group_modifiers(modifiers, &scope, ctes, &aliases);
            }
            GroupByExpr::Expressions(exprs, modifiers) => {
                for e in exprs {
                    self.ordinal_or_predicate(e, &scope, ctes, &out);
                }
                self.group_modifiers(modifiers, &scope, ctes, &aliases);
            }
        }
        self.predicate(&select.cluster_by, &scope, ctes, &aliases);
        self.predicate(&select.distribute_by, &scope, ctes, &aliases);
        for o in &select.sort_by {
            self.ordinal_or_predicate(&o.expr, &scope, ctes, &out);
        }
        for window in &select.named_window {
            if let NamedWindowExpr::WindowSpec(spec) = &window.1 {
                self.predicate(spec, &scope, ctes, &aliases);
            }
        }
        if let Some(Distinct::On(exprs)) = &select.distinct {
            self.predicate(exprs, &scope, ctes, &aliases);
        }
        if let Some(top) = &select.top {
            self.predicate(top, &scope, ctes, &aliases);
        }
        if let Some(order_by) = order_by {
            self.order_by(order_by, &scope, ctes, &out);
        }
        out
    }

    fn group_modifiers(
        &mut self,
        modifiers: &[GroupByWithModifier],
        scope: &Scope,
        ctes: &Ctes,
        aliases: &[Col],
    ) {
        for m in modifiers {
            if let GroupByWithModifier::GroupingSets(e) = m {
                self.predicate(e, scope, ctes, aliases);
            }
        }
    }

    fn order_by(&mut self, order_by: &OrderBy, scope: &Scope, ctes: &Ctes, out: &Relation) {
        match &order_by.kind {
            OrderByKind::Expressions(items) => {
                for item in items {
                    self.ordinal_or_predicate(&item.expr, scope, ctes, out);
                    if let Some(fill) = &item.with_fill {
                        self.predicate(fill, scope, ctes, &[]);
                    }
                }
            }
            OrderByKind::All(_) => self.add_predicate(&out.whole(), "*"),
        }
        if let Some(interpolate) = &order_by.interpolate {
            self.predicate(interpolate, scope, ctes, &[]);
        }
    }

    /// `ORDER BY 2` / `GROUP BY 2` name an output column by position.
    fn ordinal_or_predicate(&mut self, e: &Expr, scope: &Scope, ctes: &Ctes, out: &Relation) {
        if let Expr::Value(v) = e
            && let Value::Number(n, _) = &v.value
        {
            let position = n.parse::<usize>().ok().and_then(|p| p.checked_sub(1));
            let lineage = match (out, position) {
                (Relation::Columns(columns), Some(p)) => columns.get(p).map(|c| c.lineage.clone()),
                (Relation::Opaque(lineage), _) => Some(lineage.clone()),
                // Not a position: a constant.
                _ => None,
            };
            if let Some(lineage) = lineage {
                self.add_predicate(&lineage, "*");
            }
            return;
        }
        let aliases: &[Col] = match out {
            Relation::Columns(columns) => columns,
            Relation::Opaque(_) => &[],
        };
        self.predicate(e, scope, ctes, aliases);
    }

    /// The FROM clause: its sources, and what `*` expands to.
    fn from(
        &mut self,
        from: &[TableWithJoins],
        outer: &Scope,
        ctes: &Ctes,
    ) -> (Vec<Source>, Relation) {
        let mut sources = Vec::new();
        let mut star = Relation::empty();
        for twj in from {
            let relation = self.joined(twj, &mut sources, outer, ctes);
            star = star.concat(relation);
        }
        (sources, star)
    }

    /// One FROM entry with its joins. Sources are appended to `sources`, which holds the
    /// entries before it too: LATERAL subqueries and functions can see them.
    fn joined(
        &mut self,
        twj: &TableWithJoins,
        sources: &mut Vec<Source>,
        outer: &Scope,
        ctes: &Ctes,
    ) -> Relation {
        let mut left = self.factor(&twj.relation, sources, outer, ctes);
        for join in &twj.joins {
            let right = self.factor(&join.relation, sources, outer, ctes);
            let (constraint, condition) = match &join.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c)
                | JoinOperator::CrossJoin(c)
                | JoinOperator::StraightJoin(c) => (Some(c), None),
                JoinOperator::AsOf {
                    match_condition,
                    constraint,
                } => (Some(constraint), Some(match_condition)),
                JoinOperator::CrossApply | JoinOperator::OuterApply => (None, None),
                // Semi/anti and array joins change which columns come out.
                JoinOperator::Semi(c)
                | JoinOperator::LeftSemi(c)
                | JoinOperator::RightSemi(c)
                | JoinOperator::Anti(c)
                | JoinOperator::LeftAnti(c)
                | JoinOperator::RightAnti(c) => {
                    self.incomplete = true;
                    (Some(c), None)
                }
                JoinOperator::ArrayJoin
                | JoinOperator::LeftArrayJoin
                | JoinOperator::InnerArrayJoin => {
                    self.incomplete = true;
                    (None, None)
                }
            };
            let scope = Scope {
                sources: std::mem::take(sources),
                parent: Some(outer),
            };
            if let Some(condition) = condition {
                self.predicate(condition, &scope, ctes, &[]);
            }
            let mut using_alias = None;
            left = match constraint {
                Some(JoinConstraint::On(e)) => {
                    self.predicate(e, &scope, ctes, &[]);
                    left.concat(right)
                }
                Some(JoinConstraint::Using(names)) => self.using(names, left, right, &scope),
                Some(JoinConstraint::UsingAlias(names, alias)) => {
                    let merged = self.using(names, left, right, &scope);
                    // `JOIN ... USING (id) AS j`: `j` names only the join columns.
                    let count = names.len();
                    let joined = match &merged {
                        Relation::Columns(columns) if self.kind != ConnectionKind::Sqlite => {
                            match columns.get(..count) {
                                Some(first) => Relation::Columns(first.to_vec()),
                                None => Relation::Opaque(merged.whole()),
                            }
                        }
                        other => Relation::Opaque(other.whole()),
                    };
                    using_alias = Some(Source {
                        qualifier: vec![alias.clone()],
                        aliased: true,
                        body: Body::Derived(joined),
                    });
                    merged
                }
                Some(JoinConstraint::Natural) => self.natural(left, right),
                Some(JoinConstraint::None) | None => left.concat(right),
            };
            *sources = scope.sources;
            sources.extend(using_alias);
        }
        left
    }

    /// `JOIN ... USING (a, b)`: the join columns are predicates, and `*` shows each once.
    fn using(
        &mut self,
        names: &[ObjectName],
        left: Relation,
        right: Relation,
        scope: &Scope,
    ) -> Relation {
        let mut keys = Vec::new();
        for name in names {
            let Some(ident) = name.0.last().and_then(|p| p.as_ident()) else {
                self.incomplete = true;
                continue;
            };
            // Both sides' column: resolve it as an unqualified name over the join.
            let lineage = self.resolve(std::slice::from_ref(ident), scope);
            let key = self.key(ident);
            match lineage {
                Some(l) => self.add_predicate(&l, &key),
                None => self.add_predicate(&OutputLineage::Unknown, &key),
            }
            keys.push(key);
        }
        self.merge_join_columns(&keys, left, right)
    }

    /// `NATURAL JOIN`: the columns both sides have by name are the join columns.
    fn natural(&mut self, left: Relation, right: Relation) -> Relation {
        let (Relation::Columns(l), Relation::Columns(r)) = (&left, &right) else {
            self.incomplete = true;
            return left.concat(right);
        };
        let named = |cols: &[Col]| cols.iter().all(|c| c.name.is_some());
        if !named(l) || !named(r) {
            self.incomplete = true;
            return left.concat(right);
        }
        let keys: Vec<String> = l
            .iter()
            .filter_map(|c| c.name.clone())
            .filter(|n| r.iter().any(|c| c.name.as_deref() == Some(n)))
            .collect();
        for key in &keys {
            for c in l.iter().chain(r.iter()) {
                if c.name.as_deref() == Some(key) {
                    self.add_predicate(&c.lineage, key);
                }
            }
        }
        self.merge_join_columns(&keys, left, right)
    }

    /// The `*` of a join that merges `keys`: PostgreSQL and MySQL put the merged columns
    /// first, then the rest of each side; SQLite keeps the left side's order and drops the
    /// right side's copies. A merged column may hold either side's value.
    fn merge_join_columns(&mut self, keys: &[String], left: Relation, right: Relation) -> Relation {
        let (Relation::Columns(l), Relation::Columns(r)) = (&left, &right) else {
            return left.concat(right);
        };
        let position = |cols: &[Col], key: &str| -> Option<usize> {
            let mut found = cols
                .iter()
                .enumerate()
                .filter(|(_, c)| c.name.as_deref() == Some(key));
            match (found.next(), found.next()) {
                (Some((i, _)), None) => Some(i),
                _ => None,
            }
        };
        // (left position, right position, the merged column)
        let mut pairs: Vec<(usize, usize, Col)> = Vec::new();
        for key in keys {
            let found = position(l, key)
                .zip(position(r, key))
                .and_then(|(a, b)| Some((a, b, l.get(a)?, r.get(b)?)));
            let Some((a, b, lc, rc)) = found else {
                // A name the code cannot place exactly once on each side: positions unknown.
                self.incomplete = true;
                return left.concat(right);
            };
            let mut merged = lc.clone();
            merged.lineage.add(&rc.lineage);
            pairs.push((a, b, merged));
        }
        // PostgreSQL lists USING columns in the listed order; MySQL in the left side's order.
        if self.kind == ConnectionKind::Mysql {
            pairs.sort_by_key(|(a, _, _)| *a);
        }
        let mut out = Vec::new();
        if self.kind == ConnectionKind::Sqlite {
            for (i, c) in l.iter().enumerate() {
                match pairs.iter().find(|(a, _, _)| *a == i) {
                    Some((_, _, merged)) => out.push(merged.clone()),
                    None => out.push(c.clone()),
                }
            }
        } else {
            out.extend(pairs.iter().map(|(_, _, merged)| merged.clone()));
            for (i, c) in l.iter().enumerate() {
                if !pairs.iter().any(|(a, _, _)| *a == i) {
                    out.push(c.clone());
                }
            }
        }
        for (i, c) in r.iter().enumerate() {
            if !pairs.iter().any(|(_, b, _)| *b == i) {
                out.push(c.clone());
            }
        }
        Relation::Columns(out)
    }

    fn alias_names(&self, alias: Option<&TableAlias>) -> Vec<String> {
        alias
            .map(|a| a.columns.iter().map(|c| self.key(&c.name)).collect())
            .unwrap_or_default()
    }

    /// A table or CTE named in FROM (or by `TABLE name`). Pushes its source; returns its `*`.
    fn named(
        &mut self,
        parts: &[Ident],
        alias: Option<&TableAlias>,
        sources: &mut Vec<Source>,
        ctes: &Ctes,
    ) -> Relation {
        let names = self.alias_names(alias);
        if let [single] = parts {
            match ctes.lookup(self.kind, single) {
                CteHit::Found(relation) => {
                    let relation = relation.clone().rename(&names);
                    sources.push(Source::new(parts, alias, Body::Derived(relation.clone())));
                    return relation;
                }
                CteHit::Ambiguous => {
                    self.incomplete = true;
                    sources.push(Source::new(
                        parts,
                        alias,
                        Body::Derived(Relation::unknown()),
                    ));
                    return Relation::unknown();
                }
                CteHit::Absent => {}
            }
        }
        // MySQL's `FROM DUAL` is a keyword for "no table", never a real one.
        if let [single] = parts
            && self.kind == ConnectionKind::Mysql
            && single.quote_style.is_none()
            && single.value.eq_ignore_ascii_case("dual")
        {
            return Relation::empty();
        }
        let Some(last) = parts.last() else {
            self.incomplete = true;
            return Relation::unknown();
        };
        let table = sql::render(self.kind, &[last]).unwrap_or_default();
        let columns = self.schema_columns(parts);
        if columns.is_none() {
            self.incomplete = true;
        }
        let mut source = Source::new(
            parts,
            alias,
            Body::Table {
                table,
                columns,
                extra: Extra::none(),
            },
        );
        let mut star = source.star();
        if !names.is_empty() {
            // `customers AS c(a, b)` renames the table's columns by position.
            star = star.rename(&names);
            source.body = Body::Derived(star.clone());
        }
        sources.push(source);
        star
    }

    /// The schema's columns of a table, looked up as written (`schema.table` or `table`).
    fn schema_columns(&self, parts: &[Ident]) -> Option<Vec<String>> {
        let keys = self.keys(parts);
        let start = keys.len().saturating_sub(2);
        let key = keys.get(start..)?.join(".").to_lowercase();
        self.schema.tables.get(&key).cloned()
    }

    fn factor(
        &mut self,
        factor: &TableFactor,
        sources: &mut Vec<Source>,
        outer: &Scope,
        ctes: &Ctes,
    ) -> Relation {
        match factor {
            TableFactor::Table {
                name,
                alias,
                args,
                json_path,
                ..
            } => {
                let Some(parts) = idents(name) else {
                    return self.unfollowed_source(alias.as_ref(), sources);
                };
                if let Some(args) = args {
                    // A table-valued function: its rows derive from its arguments. Functions
                    // in FROM see the entries before them.
                    let mut lineage = self.with_siblings(sources, outer, |ctx, scope| {
                        ctx.function_args(&args.args, scope, ctes)
                    });
                    if !self.builtin(name) {
                        self.incomplete = true;
                        lineage = OutputLineage::Unknown;
                    }
                    return self.function_source(&parts, alias.as_ref(), lineage, sources);
                }
                if json_path.is_some() {
                    return self.unfollowed_source(alias.as_ref(), sources);
                }
                self.named(&parts, alias.as_ref(), sources, ctes)
            }
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                ..
            } => {
                let relation = if *lateral {
                    self.with_siblings(sources, outer, |ctx, scope| {
                        ctx.query(subquery, scope, ctes)
                    })
                } else {
                    self.query(subquery, outer, ctes)
                };
                let relation = relation.rename(&self.alias_names(alias.as_ref()));
                sources.push(Source::new(
                    &[],
                    alias.as_ref(),
                    Body::Derived(relation.clone()),
                ));
                relation
            }
            TableFactor::TableFunction { expr, alias } => {
                let lineage =
                    self.with_siblings(sources, outer, |ctx, scope| ctx.data(expr, scope, ctes));
                self.function_source(&[], alias.as_ref(), lineage, sources)
            }
            TableFactor::Function {
                name, args, alias, ..
            } => {
                let mut lineage = self.with_siblings(sources, outer, |ctx, scope| {
                    ctx.function_args(args, scope, ctes)
                });
                if !self.builtin(name) {
                    self.incomplete = true;
                    lineage = OutputLineage::Unknown;
                }
                let parts = idents(name).unwrap_or_default();
                self.function_source(&parts, alias.as_ref(), lineage, sources)
            }
            TableFactor::UNNEST {
                array_exprs, alias, ..
            } => {
                let lineage = self.with_siblings(sources, outer, |ctx, scope| {
                    ctx.data(array_exprs, scope, ctes)
                });
                self.function_source(&[], alias.as_ref(), lineage, sources)
            }
            TableFactor::JsonTable {
                json_expr,
                columns,
                alias,
                ..
            } => {
                let lineage = self.with_siblings(sources, outer, |ctx, scope| {
                    ctx.data(json_expr, scope, ctes)
                });
                let names = self.json_table_names(columns);
                let relation = Relation::Columns(
                    names
                        .into_iter()
                        .map(|name| Col {
                            name: Some(name),
                            lineage: lineage.clone(),
                        })
                        .collect(),
                )
                .rename(&self.alias_names(alias.as_ref()));
                sources.push(Source::new(
                    &[],
                    alias.as_ref(),
                    Body::Derived(relation.clone()),
                ));
                relation
            }
            TableFactor::OpenJsonTable {
                json_expr, alias, ..
            } => {
                let lineage = self.with_siblings(sources, outer, |ctx, scope| {
                    ctx.data(json_expr, scope, ctes)
                });
                self.function_source(&[], alias.as_ref(), lineage, sources)
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                let start = sources.len();
                let relation = self.joined(table_with_joins, sources, outer, ctes);
                let Some(alias) = alias else {
                    return relation;
                };
                // `(a JOIN b ...) AS j`: only `j` is visible outside.
                sources.truncate(start);
                let relation = relation.rename(&self.alias_names(Some(alias)));
                sources.push(Source::new(
                    &[],
                    Some(alias),
                    Body::Derived(relation.clone()),
                ));
                relation
            }
            TableFactor::Pivot { alias, .. }
            | TableFactor::Unpivot { alias, .. }
            | TableFactor::MatchRecognize { alias, .. }
            | TableFactor::XmlTable { alias, .. }
            | TableFactor::SemanticView { alias, .. } => {
                self.unfollowed_source(alias.as_ref(), sources)
            }
            TableFactor::UnpivotExpr { .. } => self.unfollowed_source(None, sources),
        }
    }

    /// A FROM entry the code does not follow: nameable by its alias, derived from anything.
    fn unfollowed_source(
        &mut self,
        alias: Option<&TableAlias>,
        sources: &mut Vec<Source>,
    ) -> Relation {
        self.incomplete = true;
        sources.push(Source::new(&[], alias, Body::Derived(Relation::unknown())));
        Relation::unknown()
    }

    /// A function's rows in FROM: every column derives from the arguments. With a column
    /// alias list the columns are known by name; otherwise their count is not.
    fn function_source(
        &mut self,
        name: &[Ident],
        alias: Option<&TableAlias>,
        lineage: OutputLineage,
        sources: &mut Vec<Source>,
    ) -> Relation {
        let names = self.alias_names(alias);
        let relation = if names.is_empty() {
            Relation::Opaque(lineage)
        } else {
            Relation::Columns(
                names
                    .into_iter()
                    .map(|n| Col {
                        name: Some(n),
                        lineage: lineage.clone(),
                    })
                    .collect(),
            )
        };
        // Unaliased, PostgreSQL names it after the function.
        let qualifier: Vec<Ident> = name.last().cloned().into_iter().collect();
        let mut source = Source::new(&qualifier, alias, Body::Derived(relation.clone()));
        source.aliased = true;
        sources.push(source);
        relation
    }

    /// Column names of a JSON_TABLE, nested paths flattened in order.
    fn json_table_names(&self, columns: &[JsonTableColumn]) -> Vec<String> {
        let mut names = Vec::new();
        let mut stack: Vec<&JsonTableColumn> = columns.iter().rev().collect();
        while let Some(column) = stack.pop() {
            match column {
                JsonTableColumn::Named(c) => names.push(self.key(&c.name)),
                JsonTableColumn::ForOrdinality(ident) => names.push(self.key(ident)),
                JsonTableColumn::Nested(nested) => stack.extend(nested.columns.iter().rev()),
            }
        }
        names
    }

    /// Runs `f` with the FROM entries so far visible as the innermost level.
    fn with_siblings<R>(
        &mut self,
        sources: &mut Vec<Source>,
        outer: &Scope,
        f: impl FnOnce(&mut Self, &Scope) -> R,
    ) -> R {
        let scope = Scope {
            sources: std::mem::take(sources),
            parent: Some(outer),
        };
        let result = f(self, &scope);
        *sources = scope.sources;
        result
    }

    fn function_args(
        &mut self,
        args: &Vec<FunctionArg>,
        scope: &Scope,
        ctes: &Ctes,
    ) -> OutputLineage {
        let mut walker = Walker::new(self, scope, ctes, &[], false);
        walker.wildcard_args(args, false);
        let _ = args.visit(&mut walker);
        walker.data
    }

    /// The output columns of a projection (SELECT list or RETURNING).
    fn projection(
        &mut self,
        items: &[SelectItem],
        scope: &Scope,
        star: &Relation,
        ctes: &Ctes,
    ) -> Relation {
        let mut out = Relation::empty();
        for item in items {
            let relation = match item {
                SelectItem::UnnamedExpr(e) => Relation::Columns(vec![Col {
                    name: self.output_name(e),
                    lineage: self.data(e, scope, ctes),
                }]),
                SelectItem::ExprWithAlias { expr, alias } => Relation::Columns(vec![Col {
                    name: Some(self.key(alias)),
                    lineage: self.data(expr, scope, ctes),
                }]),
                // One expression, several output columns (Hive): count not followed.
                SelectItem::ExprWithAliases { expr, .. } => {
                    self.incomplete = true;
                    Relation::Opaque(self.data(expr, scope, ctes))
                }
                SelectItem::Wildcard(options) => self.wildcard(star.clone(), options, scope, ctes),
                SelectItem::QualifiedWildcard(kind, options) => {
                    let relation = match kind {
                        SelectItemQualifiedWildcardKind::ObjectName(name) => {
                            self.qualified_star(name, scope)
                        }
                        // `(composite).*`: the fields are not followed one by one.
                        SelectItemQualifiedWildcardKind::Expr(e) => {
                            Relation::Opaque(self.data(e, scope, ctes))
                        }
                    };
                    self.wildcard(relation, options, scope, ctes)
                }
            };
            out = out.concat(relation);
        }
        out
    }

    /// The name the server gives an unaliased output, where the code is sure of it.
    fn output_name(&self, e: &Expr) -> Option<String> {
        let mut e = e;
        while let Expr::Nested(inner) = e {
            e = inner;
        }
        match e {
            Expr::Identifier(ident) => Some(self.key(ident)),
            Expr::CompoundIdentifier(parts) => parts.last().map(|i| self.key(i)),
            Expr::CompoundFieldAccess { access_chain, .. } => match access_chain.last() {
                Some(AccessExpr::Dot(Expr::Identifier(ident))) => Some(self.key(ident)),
                _ => None,
            },
            _ => None,
        }
    }

    /// `source.*`: the innermost level with a source of that name.
    fn qualified_star(&mut self, name: &ObjectName, scope: &Scope) -> Relation {
        let Some(parts) = idents(name) else {
            self.incomplete = true;
            return Relation::unknown();
        };
        let mut maybe: Option<OutputLineage> = None;
        for level in scope.levels() {
            let exact: Vec<&Source> = level
                .sources
                .iter()
                .filter(|s| s.matches(self.kind, &parts) == Match::Yes)
                .collect();
            for s in level
                .sources
                .iter()
                .filter(|s| s.matches(self.kind, &parts) == Match::Maybe)
            {
                maybe
                    .get_or_insert_with(OutputLineage::none)
                    .add(&s.whole());
            }
            match (exact.as_slice(), &maybe) {
                ([only], None) => return only.star(),
                ([], _) => continue,
                (several, _) => {
                    let mut all = maybe.unwrap_or_else(OutputLineage::none);
                    for s in several {
                        all.add(&s.whole());
                    }
                    return Relation::Opaque(all);
                }
            }
        }
        match maybe {
            Some(lineage) => Relation::Opaque(lineage),
            None => {
                self.incomplete = true;
                Relation::unknown()
            }
        }
    }

    /// Applies `* EXCLUDE/EXCEPT/REPLACE/RENAME/ILIKE` options to an expansion. Where the
    /// affected columns cannot be placed exactly, positions are given up.
    fn wildcard(
        &mut self,
        relation: Relation,
        options: &WildcardAdditionalOptions,
        scope: &Scope,
        ctes: &Ctes,
    ) -> Relation {
        if options.opt_ilike.is_some() || options.opt_alias.is_some() {
            return Relation::Opaque(relation.whole());
        }
        let mut removed: Vec<String> = Vec::new();
        match &options.opt_exclude {
            Some(ExcludeSelectItem::Single(name)) => removed.extend(self.last_key(name)),
            Some(ExcludeSelectItem::Multiple(names)) => {
                removed.extend(names.iter().filter_map(|n| self.last_key(n)));
            }
            None => {}
        }
        if let Some(ExceptSelectItem {
            first_element,
            additional_elements,
        }) = &options.opt_except
        {
            removed.push(self.key(first_element));
            removed.extend(additional_elements.iter().map(|i| self.key(i)));
        }
        let Relation::Columns(mut columns) = relation else {
            return relation;
        };
        // Every named column must be placed exactly, or positions are unknown.
        let exact = |columns: &[Col], key: &str| {
            columns.iter().all(|c| match &c.name {
                Some(n) => name_match(key, n) != Some(false),
                None => false,
            })
        };
        for key in &removed {
            if !exact(&columns, key) {
                return Relation::Opaque(Relation::Columns(columns).whole());
            }
            columns.retain(|c| c.name.as_deref() != Some(key.as_str()));
        }
        if let Some(replace) = &options.opt_replace {
            for element in &replace.items {
                let key = self.key(&element.column_name);
                let lineage = self.data(&element.expr, scope, ctes);
                if !exact(&columns, &key) {
                    let mut all = Relation::Columns(columns).whole();
                    all.add(&lineage);
                    return Relation::Opaque(all);
                }
                for c in columns
                    .iter_mut()
                    .filter(|c| c.name.as_deref() == Some(key.as_str()))
                {
                    c.lineage = lineage.clone();
                }
            }
        }
        let renames: Vec<(String, String)> = match &options.opt_rename {
            Some(RenameSelectItem::Single(r)) => vec![(self.key(&r.ident), self.key(&r.alias))],
            Some(RenameSelectItem::Multiple(rs)) => rs
                .iter()
                .map(|r| (self.key(&r.ident), self.key(&r.alias)))
                .collect(),
            None => Vec::new(),
        };
        for (from, to) in renames {
            for c in columns
                .iter_mut()
                .filter(|c| c.name.as_deref() == Some(from.as_str()))
            {
                c.name = Some(to.clone());
            }
        }
        Relation::Columns(columns)
    }

    fn last_key(&self, name: &ObjectName) -> Option<String> {
        name.0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| self.key(i))
    }

    /// What an expression's value derives from.
    fn data<V: Visit>(&mut self, node: &V, scope: &Scope, ctes: &Ctes) -> OutputLineage {
        let mut walker = Walker::new(self, scope, ctes, &[], false);
        let _ = node.visit(&mut walker);
        walker.data
    }

    /// Records everything a filtering/ordering clause uses as predicate columns.
    fn predicate<V: Visit>(&mut self, node: &V, scope: &Scope, ctes: &Ctes, aliases: &[Col]) {
        let mut walker = Walker::new(self, scope, ctes, aliases, true);
        let _ = node.visit(&mut walker);
    }

    /// What a column reference (`c`, `t.c`, `s.t.c`, `c.field`) derives from; `None` when no
    /// source in scope can hold it.
    fn resolve(&mut self, parts: &[Ident], scope: &Scope) -> Option<OutputLineage> {
        if parts.len() >= 2
            && let Some(lineage) = self.resolve_qualified(parts, scope)
        {
            return Some(lineage);
        }
        // No source has such a qualifier: `a.b` may be column `a`'s field `b`.
        let first = parts.first()?;
        self.resolve_unqualified(first, scope)
    }

    fn resolve_qualified(&mut self, parts: &[Ident], scope: &Scope) -> Option<OutputLineage> {
        let mut found: Option<OutputLineage> = None;
        for level in scope.levels() {
            // Longest qualifier first: `s.t.c` before `s.t` with field `c`.
            for split in (1..parts.len()).rev() {
                let (qualifier, rest) = parts.split_at(split);
                let Some(column) = rest.first() else {
                    continue;
                };
                let key = self.key(column);
                let mut definite = false;
                for source in &level.sources {
                    match source.matches(self.kind, qualifier) {
                        Match::No => continue,
                        Match::Yes => definite = true,
                        Match::Maybe => {}
                    }
                    let lineage = match source.column(&key) {
                        Hit::Definite(l) | Hit::Maybe(l) => l,
                        Hit::Miss => {
                            self.incomplete = true;
                            source.missing(&key)
                        }
                    };
                    found.get_or_insert_with(OutputLineage::none).add(&lineage);
                }
                if definite {
                    return found;
                }
            }
        }
        found
    }

    fn resolve_unqualified(&mut self, ident: &Ident, scope: &Scope) -> Option<OutputLineage> {
        let key = self.key(ident);
        let mut found: Option<OutputLineage> = None;
        for level in scope.levels() {
            let mut definite = false;
            for source in &level.sources {
                match source.column(&key) {
                    Hit::Definite(l) => {
                        definite = true;
                        found.get_or_insert_with(OutputLineage::none).add(&l);
                    }
                    Hit::Maybe(l) => found.get_or_insert_with(OutputLineage::none).add(&l),
                    Hit::Miss => {}
                }
            }
            if definite {
                return found;
            }
            // No column of this level has the name: a source's name is its whole row
            // (PostgreSQL `SELECT c FROM customers c`).
            for source in &level.sources {
                match source.matches(self.kind, std::slice::from_ref(ident)) {
                    Match::No => {}
                    Match::Yes => {
                        definite = true;
                        found
                            .get_or_insert_with(OutputLineage::none)
                            .add(&source.whole());
                    }
                    Match::Maybe => {
                        found
                            .get_or_insert_with(OutputLineage::none)
                            .add(&source.whole());
                    }
                }
            }
            if definite {
                return found;
            }
            // Only maybes here: the name may still belong to an enclosing level.
        }
        found
    }

    fn dml(&mut self, statement: &Statement, outer: &Scope, ctes: &Ctes) -> Relation {
        if !self.spend() {
            return Relation::unknown();
        }
        match statement {
            Statement::Insert(insert) => self.insert(insert, outer, ctes),
            Statement::Update(update) => self.update(update, outer, ctes),
            Statement::Delete(delete) => self.delete(delete, outer, ctes),
            _ => {
                self.incomplete = true;
                Relation::unknown()
            }
        }
    }

    /// The columns of an assignment's target (`a`, `t.a`, `(a, b)`) as (qualifier, key).
    fn assignment_targets(&mut self, target: &AssignmentTarget) -> Vec<(Vec<Ident>, String)> {
        let names: Vec<&ObjectName> = match target {
            AssignmentTarget::ColumnName(name) => vec![name],
            AssignmentTarget::Tuple(names) => names.iter().collect(),
        };
        let mut out = Vec::new();
        for name in names {
            match idents(name).and_then(|mut parts| parts.pop().map(|last| (parts, last))) {
                Some((qualifier, last)) => out.push((qualifier, self.key(&last))),
                None => self.incomplete = true,
            }
        }
        out
    }

    fn insert(&mut self, insert: &sqlparser::ast::Insert, outer: &Scope, ctes: &Ctes) -> Relation {
        if insert.output.is_some() {
            self.incomplete = true;
            return Relation::unknown();
        }
        let TableObject::TableName(name) = &insert.table else {
            self.incomplete = true;
            return Relation::unknown();
        };
        let Some(parts) = idents(name) else {
            self.incomplete = true;
            return Relation::unknown();
        };
        let Some(last) = parts.last() else {
            self.incomplete = true;
            return Relation::unknown();
        };
        let table = sql::render(self.kind, &[last]).unwrap_or_default();
        let columns = self.schema_columns(&parts);
        if columns.is_none() {
            self.incomplete = true;
        }
        // What the statement writes into each column.
        let mut written = Extra::none();
        if let Some(source) = &insert.source {
            let relation = self.query(source, outer, ctes);
            let targets: Option<Vec<String>> = if insert.columns.is_empty() {
                columns.clone()
            } else {
                insert.columns.iter().map(|c| self.last_key(c)).collect()
            };
            match (&relation, targets) {
                (Relation::Columns(values), Some(targets)) if values.len() == targets.len() => {
                    for (target, value) in targets.into_iter().zip(values) {
                        written.by_name.push((target, value.lineage.clone()));
                    }
                }
                // Cannot pair values with columns: every column may hold any of them.
                _ => written.all = relation.whole(),
            }
        }
        let qualifier = match &insert.table_alias {
            Some(alias) => vec![alias.alias.clone()],
            None => parts.clone(),
        };
        let target = |extra: Extra| Source {
            qualifier: qualifier.clone(),
            aliased: insert.table_alias.is_some(),
            body: Body::Table {
                table: table.clone(),
                columns: columns.clone(),
                extra,
            },
        };
        // MySQL `INSERT ... SET a = expr`.
        if !insert.assignments.is_empty() {
            let scope = Scope {
                sources: vec![target(Extra::none())],
                parent: Some(outer),
            };
            for assignment in &insert.assignments {
                let lineage = self.data(&assignment.value, &scope, ctes);
                for (_, key) in self.assignment_targets(&assignment.target) {
                    written.by_name.push((key, lineage.clone()));
                }
            }
        }
        // Upserts: the returned row may be the existing one, updated from the inserted one.
        let mut stored = written.clone();
        match &insert.on {
            Some(OnInsert::DuplicateKeyUpdate(assignments)) => {
                // `VALUES(col)` reads the target's column, which carries the inserted value;
                // the row alias (`AS new`) names the inserted row.
                let mut sources = vec![target(written.clone())];
                if let Some(alias) = &insert.insert_alias {
                    let alias_parts = idents(&alias.row_alias).unwrap_or_default();
                    let mut row = target(written.clone());
                    row.qualifier = alias_parts;
                    row.aliased = true;
                    if let Some(names) = &alias.col_aliases {
                        let names: Vec<String> = names.iter().map(|n| self.key(n)).collect();
                        row.body = Body::Derived(row.star().rename(&names));
                    }
                    sources.push(row);
                }
                let scope = Scope {
                    sources,
                    parent: Some(outer),
                };
                for assignment in assignments {
                    let lineage = self.data(&assignment.value, &scope, ctes);
                    for (_, key) in self.assignment_targets(&assignment.target) {
                        stored.by_name.push((key, lineage.clone()));
                    }
                }
            }
            Some(OnInsert::OnConflict(conflict)) => {
                if let OnConflictAction::DoUpdate(update) = &conflict.action {
                    let mut excluded = target(written.clone());
                    excluded.qualifier = vec![Ident::new("excluded")];
                    excluded.aliased = true;
                    let scope = Scope {
                        sources: vec![target(Extra::none()), excluded],
                        parent: Some(outer),
                    };
                    for assignment in &update.assignments {
                        let lineage = self.data(&assignment.value, &scope, ctes);
                        for (_, key) in self.assignment_targets(&assignment.target) {
                            stored.by_name.push((key, lineage.clone()));
                        }
                    }
                    if let Some(selection) = &update.selection {
                        self.predicate(selection, &scope, ctes, &[]);
                    }
                }
                if let Some(target_clause) = &conflict.conflict_target {
                    let scope = Scope {
                        sources: vec![target(Extra::none())],
                        parent: Some(outer),
                    };
                    self.predicate(target_clause, &scope, ctes, &[]);
                }
            }
            None => {}
            // A conflict action this code does not know: the stored row is not followed.
            Some(_) => {
                self.incomplete = true;
                stored.all = OutputLineage::Unknown;
            }
        }
        let Some(returning) = &insert.returning else {
            return Relation::empty();
        };
        let scope = Scope {
            sources: vec![target(stored)],
            parent: Some(outer),
        };
        let star = scope
            .sources
            .iter()
            .fold(Relation::empty(), |acc, s| acc.concat(s.star()));
        self.projection(returning, &scope, &star, ctes)
    }

    fn update(&mut self, update: &sqlparser::ast::Update, outer: &Scope, ctes: &Ctes) -> Relation {
        if update.output.is_some() {
            self.incomplete = true;
            return Relation::unknown();
        }
        let (mut sources, _) = self.from(std::slice::from_ref(&update.table), outer, ctes);
        let targets = sources.len();
        if let Some(UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from)) =
            &update.from
        {
            let (more, _) = self.from(from, outer, ctes);
            sources.extend(more);
        }
        let mut scope = Scope {
            sources,
            parent: Some(outer),
        };
        // Assignments read the old row; collect first, apply after.
        let mut assigned = Vec::new();
        for assignment in &update.assignments {
            let lineage = self.data(&assignment.value, &scope, ctes);
            for (qualifier, key) in self.assignment_targets(&assignment.target) {
                assigned.push((qualifier, key, lineage.clone()));
            }
        }
        if let Some(selection) = &update.selection {
            self.predicate(selection, &scope, ctes, &[]);
        }
        self.predicate(&update.order_by, &scope, ctes, &[]);
        if let Some(limit) = &update.limit {
            self.predicate(limit, &scope, ctes, &[]);
        }
        let kind = self.kind;
        for (qualifier, key, lineage) in assigned {
            // An unqualified column is the target's; with several targets (MySQL), any one's.
            for source in scope.sources.iter_mut().take(targets) {
                if !qualifier.is_empty() && source.matches(kind, &qualifier) == Match::No {
                    continue;
                }
                if let Body::Table { extra, .. } = &mut source.body {
                    extra.by_name.push((key.clone(), lineage.clone()));
                }
            }
        }
        let Some(returning) = &update.returning else {
            return Relation::empty();
        };
        let star = scope
            .sources
            .iter()
            .fold(Relation::empty(), |acc, s| acc.concat(s.star()));
        self.projection(returning, &scope, &star, ctes)
    }

    fn delete(&mut self, delete: &sqlparser::ast::Delete, outer: &Scope, ctes: &Ctes) -> Relation {
        if delete.output.is_some() {
            self.incomplete = true;
            return Relation::unknown();
        }
        let from = match &delete.from {
            FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
        };
        let (mut sources, mut star) = self.from(from, outer, ctes);
        if let Some(using) = &delete.using {
            let (more, more_star) = self.from(using, outer, ctes);
            sources.extend(more);
            star = star.concat(more_star);
        }
        let scope = Scope {
            sources,
            parent: Some(outer),
        };
        if let Some(selection) = &delete.selection {
            self.predicate(selection, &scope, ctes, &[]);
        }
        self.predicate(&delete.order_by, &scope, ctes, &[]);
        if let Some(limit) = &delete.limit {
            self.predicate(limit, &scope, ctes, &[]);
        }
        match &delete.returning {
            Some(returning) => self.projection(returning, &scope, &star, ctes),
            None => Relation::empty(),
        }
    }
}

/// Where the walker sends what it finds below a marked expression.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// A filter or ordering inside a data expression (window PARTITION/ORDER BY, FILTER,
    /// aggregate ORDER BY): predicate columns.
    Predicate,
    /// Not a column reference (a field name after a dot, a named argument's name).
    Skip,
}

/// Collects what one expression (or clause) derives from, driven by sqlparser's visitor so
/// every node is seen. Subqueries are analysed when the visitor reaches them, in this scope,
/// and their insides are then passed over. Nodes are identified by address, which is stable
/// because the tree outlives the walk.
struct Walker<'w, 's> {
    ctx: &'w mut Ctx<'s>,
    scope: &'w Scope<'w>,
    ctes: &'w Ctes<'w>,
    /// Output columns the clause may name (GROUP BY, HAVING, ORDER BY).
    aliases: &'w [Col],
    /// Everything found is a predicate column (WHERE, ORDER BY, ...).
    predicate: bool,
    data: OutputLineage,
    /// Depth inside a subquery already analysed.
    inside_query: usize,
    marks: HashMap<usize, Route>,
    /// Marked expressions on the visitor's path.
    open: Vec<(usize, Route)>,
    skipping: usize,
    diverted: usize,
    /// EXISTS subqueries: only their predicates matter, not their outputs.
    exists: HashSet<usize>,
}

impl<'w, 's> Walker<'w, 's> {
    fn new(
        ctx: &'w mut Ctx<'s>,
        scope: &'w Scope<'w>,
        ctes: &'w Ctes<'w>,
        aliases: &'w [Col],
        predicate: bool,
    ) -> Walker<'w, 's> {
        Walker {
            ctx,
            scope,
            ctes,
            aliases,
            predicate,
            data: OutputLineage::none(),
            inside_query: 0,
            marks: HashMap::new(),
            open: Vec::new(),
            skipping: 0,
            diverted: 0,
            exists: HashSet::new(),
        }
    }

    fn mark(&mut self, expr: &Expr, route: Route) {
        self.marks.insert(addr(expr), route);
    }

    fn emit(&mut self, lineage: &OutputLineage, name: &str) {
        if self.predicate || self.diverted > 0 {
            self.ctx.add_predicate(lineage, name);
        } else {
            if *lineage == OutputLineage::Unknown {
                self.ctx.incomplete = true;
            }
            self.data.add(lineage);
        }
    }

    fn reference(&mut self, parts: &[Ident]) {
        let name = parts
            .last()
            .map(|p| self.ctx.key(p))
            .unwrap_or_else(|| "*".to_string());
        let mut found = self.ctx.resolve(parts, self.scope);
        if let [single] = parts {
            let key = self.ctx.key(single);
            for c in self.aliases {
                if c.name
                    .as_deref()
                    .and_then(|n| name_match(&key, n))
                    .is_some()
                {
                    found
                        .get_or_insert_with(OutputLineage::none)
                        .add(&c.lineage);
                }
            }
        }
        match found {
            Some(lineage) => self.emit(&lineage, &name),
            None => {
                self.ctx.incomplete = true;
                self.emit(&OutputLineage::Unknown, &name);
            }
        }
    }

    /// Every column of the innermost level (`f(*)`, a bare `*` in an expression).
    fn level_whole(&mut self) {
        let mut all = OutputLineage::none();
        for source in &self.scope.sources {
            all.add(&source.whole());
        }
        self.emit(&all, "*");
    }

    /// A source's whole row (`f(c.*)`, `ROW(c.*)`).
    fn whole_named(&mut self, name: &ObjectName) {
        let Some(parts) = idents(name) else {
            self.ctx.incomplete = true;
            self.emit(&OutputLineage::Unknown, "*");
            return;
        };
        let mut found: Option<OutputLineage> = None;
        for level in self.scope.levels() {
            let mut definite = false;
            for source in &level.sources {
                match source.matches(self.ctx.kind, &parts) {
                    Match::No => continue,
                    Match::Yes => definite = true,
                    Match::Maybe => {}
                }
                found
                    .get_or_insert_with(OutputLineage::none)
                    .add(&source.whole());
            }
            if definite {
                break;
            }
        }
        match found {
            Some(lineage) => self.emit(&lineage, "*"),
            None => {
                self.ctx.incomplete = true;
                self.emit(&OutputLineage::Unknown, "*");
            }
        }
    }

    /// `*` arguments, which are no expressions: `count(*)` reads no column, any other
    /// function given `*` or `t.*` gets whole rows.
    fn wildcard_args(&mut self, args: &[FunctionArg], count: bool) {
        for arg in args {
            let value = match arg {
                FunctionArg::Named { arg, .. } => arg,
                FunctionArg::ExprNamed { name, arg, .. } => {
                    self.mark(name, Route::Skip);
                    arg
                }
                FunctionArg::Unnamed(arg) => arg,
            };
            match value {
                FunctionArgExpr::Expr(_) => {}
                FunctionArgExpr::Wildcard if count => {}
                FunctionArgExpr::Wildcard | FunctionArgExpr::WildcardWithOptions(_) => {
                    self.level_whole();
                }
                FunctionArgExpr::QualifiedWildcard(name) => self.whole_named(name),
            }
        }
    }

    fn window(&mut self, spec: &WindowSpec) {
        for e in &spec.partition_by {
            self.mark(e, Route::Predicate);
        }
        for o in &spec.order_by {
            self.mark(&o.expr, Route::Predicate);
        }
        if let Some(frame) = &spec.window_frame {
            for bound in std::iter::once(&frame.start_bound).chain(frame.end_bound.as_ref()) {
                if let WindowFrameBound::Preceding(Some(e)) | WindowFrameBound::Following(Some(e)) =
                    bound
                {
                    self.mark(e, Route::Predicate);
                }
            }
        }
    }

    fn function(&mut self, function: &sqlparser::ast::Function) {
        if !self.ctx.builtin(&function.name) {
            self.emit(&OutputLineage::Unknown, "*");
        }
        let count = function
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .is_some_and(|i| i.value.eq_ignore_ascii_case("count"));
        if let FunctionArguments::List(list) = &function.args {
            self.wildcard_args(&list.args, count);
            for clause in &list.clauses {
                match clause {
                    FunctionArgumentClause::Where(e)
                    | FunctionArgumentClause::Limit(e)
                    | FunctionArgumentClause::Having(HavingBound(_, e)) => {
                        self.mark(e, Route::Predicate);
                    }
                    FunctionArgumentClause::OrderBy(items) => {
                        for o in items {
                            self.mark(&o.expr, Route::Predicate);
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(filter) = &function.filter {
            self.mark(filter, Route::Predicate);
        }
        if let Some(WindowType::WindowSpec(spec)) = &function.over {
            self.window(spec);
        }
        // WITHIN GROUP (ORDER BY x) is the data of an ordered-set aggregate: left as data.
    }

    fn expr(&mut self, expr: &Expr) {
        match expr {
            Expr::Identifier(ident) => self.reference(std::slice::from_ref(ident)),
            Expr::CompoundIdentifier(parts) => self.reference(parts),
            Expr::CompoundFieldAccess { root, access_chain } => {
                // `(c).email`, `t.col.field`: the leading dotted names form one reference;
                // names after a dot are fields, never columns of their own.
                let mut inner: &Expr = root;
                while let Expr::Nested(e) = inner {
                    inner = e;
                }
                let mut parts = match inner {
                    Expr::Identifier(ident) => Some(vec![ident.clone()]),
                    Expr::CompoundIdentifier(idents) => Some(idents.clone()),
                    _ => None,
                };
                if parts.is_some() {
                    self.mark(root, Route::Skip);
                }
                let mut leading = true;
                for access in access_chain {
                    match access {
                        AccessExpr::Dot(field @ Expr::Identifier(ident)) => {
                            self.mark(field, Route::Skip);
                            if leading && let Some(parts) = &mut parts {
                                parts.push(ident.clone());
                            }
                        }
                        _ => leading = false,
                    }
                }
                if let Some(parts) = parts {
                    self.reference(&parts);
                }
            }
            Expr::Function(function) => self.function(function),
            Expr::Exists { subquery, .. } => {
                self.exists.insert(addr(subquery.as_ref()));
            }
            Expr::MatchAgainst { columns, .. } => {
                for column in columns {
                    match idents(column) {
                        Some(parts) => self.reference(&parts),
                        None => {
                            self.ctx.incomplete = true;
                            self.emit(&OutputLineage::Unknown, "*");
                        }
                    }
                }
            }
            Expr::Wildcard(_) => self.level_whole(),
            Expr::QualifiedWildcard(name, _) => self.whole_named(name),
            // ClickHouse `x IN table`.
            Expr::In {
                target: InTarget::Table { .. },
                ..
            } => {
                self.ctx.incomplete = true;
                self.emit(&OutputLineage::Unknown, "*");
            }
            _ => {}
        }
    }
}

impl Visitor for Walker<'_, '_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if !self.ctx.spend() {
            self.emit(&OutputLineage::Unknown, "*");
            return ControlFlow::Break(());
        }
        if self.inside_query == 0 && self.skipping == 0 {
            let relation = self.ctx.query(query, self.scope, self.ctes);
            if !self.exists.contains(&addr(query)) {
                self.emit(&relation.whole(), "*");
            }
        }
        self.inside_query += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.inside_query = self.inside_query.saturating_sub(1);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if !self.ctx.spend() {
            self.emit(&OutputLineage::Unknown, "*");
            return ControlFlow::Break(());
        }
        if self.inside_query > 0 {
            return ControlFlow::Continue(());
        }
        let at = addr(expr);
        if let Some(route) = self.marks.remove(&at) {
            self.open.push((at, route));
            match route {
                Route::Skip => self.skipping += 1,
                Route::Predicate => self.diverted += 1,
            }
        }
        if self.skipping == 0 {
            self.expr(expr);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if self.inside_query > 0 {
            return ControlFlow::Continue(());
        }
        if let Some(&(at, route)) = self.open.last()
            && at == addr(expr)
        {
            self.open.pop();
            match route {
                Route::Skip => self.skipping = self.skipping.saturating_sub(1),
                Route::Predicate => self.diverted = self.diverted.saturating_sub(1),
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::sql::RECURSION_LIMIT;
    use sqlparser::tokenizer::Tokenizer;

    fn schema() -> SchemaInfo {
        let mut tables = HashMap::new();
        for (name, columns) in [
            ("customers", &["id", "email", "name", "ssn", "card"][..]),
            ("orders", &["id", "customer_id", "total", "note"][..]),
            ("users", &["id", "email", "name"][..]),
            ("staging", &["email", "ssn"][..]),
            ("docs", &["id", "data"][..]),
        ] {
            let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
            tables.insert(name.to_string(), columns.clone());
            tables.insert(format!("public.{name}"), columns);
        }
        SchemaInfo { tables }
    }

    fn col(spec: &str) -> SourceColumn {
        let (table, column) = spec.split_once('.').unwrap();
        SourceColumn {
            table: table.to_string(),
            column: column.to_string(),
        }
    }

    fn k(specs: &[&str]) -> OutputLineage {
        OutputLineage::Known(specs.iter().map(|s| col(s)).collect())
    }

    fn set(specs: &[&str]) -> BTreeSet<SourceColumn> {
        specs.iter().map(|s| col(s)).collect()
    }

    fn run(kind: ConnectionKind, sql: &str, n: usize) -> Lineage {
        lineage(kind, sql, &schema(), n)
    }
    fn pg(sql: &str, n: usize) -> Lineage {
        run(ConnectionKind::Postgres, sql, n)
    }
    fn my(sql: &str, n: usize) -> Lineage {
        run(ConnectionKind::Mysql, sql, n)
    }
    fn lite(sql: &str, n: usize) -> Lineage {
        run(ConnectionKind::Sqlite, sql, n)
    }

    /// Asserts the outputs, and that everything was followed.
    fn outputs(l: &Lineage, expected: &[OutputLineage], sql: &str) {
        assert_eq!(l.outputs, expected, "{sql}");
        assert!(!l.incomplete, "{sql}");
    }

    #[test]
    fn aliases_and_expressions() {
        for sql in [
            "SELECT email AS e, c.name n, lower(email), substr(c.email, 1, 3) || 'x' FROM customers c",
            "SELECT email e, customers.name, LOWER(EMAIL), SUBSTR(email, 1, 3) || 'x' FROM public.customers",
        ] {
            outputs(
                &pg(sql, 4),
                &[
                    k(&["customers.email"]),
                    k(&["customers.name"]),
                    k(&["customers.email"]),
                    k(&["customers.email"]),
                ],
                sql,
            );
        }
        let sql = "SELECT CASE WHEN ssn LIKE '1%' THEN 'a' ELSE name END, \
                   CAST(card AS text), id + 1, data->>'x', coalesce(email, name), 42, now() \
                   FROM customers, docs";
        outputs(
            &pg(sql, 7),
            &[
                k(&["customers.name", "customers.ssn"]),
                k(&["customers.card"]),
                // `id` is in both tables: either may be meant.
                k(&["customers.id", "docs.id"]),
                k(&["docs.data"]),
                k(&["customers.email", "customers.name"]),
                k(&[]),
                k(&[]),
            ],
            sql,
        );
    }

    #[test]
    fn aggregates_and_windows() {
        let sql = "SELECT count(*), count(ssn), string_agg(email, ',' ORDER BY ssn), max(card), \
                   count(*) FILTER (WHERE name = 'x'), \
                   row_number() OVER (PARTITION BY ssn ORDER BY email), \
                   sum(id) OVER w, \
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY id) \
                   FROM customers WINDOW w AS (ORDER BY card)";
        let l = pg(sql, 8);
        outputs(
            &l,
            &[
                k(&[]),
                k(&["customers.ssn"]),
                k(&["customers.email"]),
                k(&["customers.card"]),
                k(&[]),
                k(&[]),
                k(&["customers.id"]),
                k(&["customers.id"]),
            ],
            sql,
        );
        assert_eq!(
            l.predicate_columns,
            set(&[
                "customers.card",
                "customers.email",
                "customers.name",
                "customers.ssn"
            ])
        );
    }

    #[test]
    fn ctes_and_derived_tables() {
        let sql = "WITH a AS (SELECT email AS e, id FROM customers), \
                        b AS (SELECT upper(e) AS u, id FROM a) \
                   SELECT u, b.id FROM b";
        outputs(
            &pg(sql, 2),
            &[k(&["customers.email"]), k(&["customers.id"])],
            sql,
        );
        let sql = "SELECT x, s2.z FROM (SELECT y AS x, z FROM \
                     (SELECT ssn AS y, 'lit' AS z FROM customers) s1) s2";
        outputs(&pg(sql, 2), &[k(&["customers.ssn"]), k(&[])], sql);
        // Alias column lists rename by position.
        let sql = "SELECT b, a FROM (SELECT ssn, email FROM customers) AS s(a, b)";
        outputs(
            &pg(sql, 2),
            &[k(&["customers.email"]), k(&["customers.ssn"])],
            sql,
        );
        // sqlparser 0.64 does not parse PostgreSQL's `TABLE name`: fail closed.
        assert_eq!(
            pg("TABLE orders", 4).outputs,
            vec![OutputLineage::Unknown; 4]
        );
        let sql = "WITH c(x) AS (SELECT card FROM customers) SELECT * FROM c";
        outputs(&pg(sql, 1), &[k(&["customers.card"])], sql);
        // A CTE body does not see itself without RECURSIVE: `customers` is the table.
        let sql = "WITH customers AS (SELECT id FROM customers) SELECT * FROM customers";
        outputs(&pg(sql, 1), &[k(&["customers.id"])], sql);
        // An unaliased expression's name is not known: a reference to it takes every
        // unnamed column.
        let sql = "SELECT lower FROM (SELECT lower(email), id FROM customers) s";
        outputs(&pg(sql, 1), &[k(&["customers.email"])], sql);
    }

    #[test]
    fn recursive_cte() {
        let sql = "WITH RECURSIVE r(a, b) AS ( \
                     SELECT id, email FROM customers \
                     UNION ALL SELECT b, ssn FROM r JOIN customers ON customers.id = r.a) \
                   SELECT a, b FROM r";
        let l = pg(sql, 2);
        // `a` is fed from `b` in the recursive step: the fixpoint carries email into it.
        outputs(
            &l,
            &[
                k(&["customers.email", "customers.id", "customers.ssn"]),
                k(&["customers.email", "customers.ssn"]),
            ],
            sql,
        );
        assert!(l.predicate_columns.contains(&col("customers.id")));
        // `SELECT *` from the CTE in its own recursive branch takes the anchor's shape.
        let sql = "WITH RECURSIVE r AS (SELECT id, email FROM customers \
                   UNION ALL SELECT * FROM r WHERE id < 0) SELECT * FROM r";
        outputs(
            &pg(sql, 2),
            &[k(&["customers.id"]), k(&["customers.email"])],
            sql,
        );
        let sql = "WITH RECURSIVE n AS (SELECT 1 AS x UNION ALL SELECT x + 1 FROM n WHERE x < 5) \
                   SELECT x FROM n";
        for l in [pg(sql, 1), my(sql, 1), lite(sql, 1)] {
            outputs(&l, &[k(&[])], sql);
        }
    }

    #[test]
    fn functions_that_read_other_data_are_unknown() {
        let sql = "SELECT my_lookup(id), public.lower(email), \"LOWER\"(email), \
                   query_to_xml('select ssn from customers', true, false, ''), \
                   pg_catalog.lower(email), ROW(id, email) FROM customers";
        let l = pg(sql, 6);
        assert_eq!(
            l.outputs,
            vec![
                OutputLineage::Unknown,
                OutputLineage::Unknown,
                OutputLineage::Unknown,
                OutputLineage::Unknown,
                k(&["customers.email"]),
                k(&["customers.email", "customers.id"]),
            ]
        );
        assert!(l.incomplete);
        let l = pg("SELECT * FROM my_rows(1) r(a, b)", 2);
        assert_eq!(l.outputs, vec![OutputLineage::Unknown; 2]);
        let l = my(
            "SELECT LOAD_FILE('/etc/passwd'), UPPER(name) FROM customers",
            2,
        );
        assert_eq!(
            l.outputs,
            vec![OutputLineage::Unknown, k(&["customers.name"])]
        );
        // Attribute notation: `c.f` may be a function of the whole row.
        let l = pg("SELECT c.leak, c.id FROM customers c", 2);
        assert_eq!(
            l.outputs,
            vec![OutputLineage::Unknown, k(&["customers.id"])]
        );
        assert!(l.incomplete);
        let l = pg("SELECT current_setting('my.var')", 1);
        assert_eq!(l.outputs, vec![OutputLineage::Unknown]);
        let l = pg("SELECT id FROM customers WHERE my_check(ssn)", 1);
        assert_eq!(l.outputs, vec![k(&["customers.id"])]);
        assert_eq!(l.predicate_columns, set(&["*.*", "customers.ssn"]));
    }

    #[test]
    fn stars() {
        let sql = "SELECT * FROM customers";
        outputs(
            &pg(sql, 5),
            &[
                k(&["customers.id"]),
                k(&["customers.email"]),
                k(&["customers.name"]),
                k(&["customers.ssn"]),
                k(&["customers.card"]),
            ],
            sql,
        );
        let sql = "SELECT c.*, o.total FROM customers c JOIN orders o ON o.customer_id = c.id";
        let l = pg(sql, 6);
        assert_eq!(l.outputs[3], k(&["customers.ssn"]));
        assert_eq!(l.outputs[5], k(&["orders.total"]));
        assert_eq!(
            l.predicate_columns,
            set(&["customers.id", "orders.customer_id"])
        );
        // USING shows the join column once, first, from either side.
        let sql = "SELECT * FROM customers JOIN users USING (email)";
        let l = pg(sql, 7);
        assert_eq!(l.outputs[0], k(&["customers.email", "users.email"]));
        assert_eq!(l.outputs[1], k(&["customers.id"]));
        assert_eq!(l.outputs[6], k(&["users.name"]));
        assert_eq!(
            l.predicate_columns,
            set(&["customers.email", "users.email"])
        );
        assert!(!l.incomplete);
        let sql = "SELECT * FROM users NATURAL JOIN staging";
        let l = pg(sql, 4);
        outputs(
            &l,
            &[
                k(&["staging.email", "users.email"]),
                k(&["users.id"]),
                k(&["users.name"]),
                k(&["staging.ssn"]),
            ],
            sql,
        );
        assert_eq!(l.predicate_columns, set(&["staging.email", "users.email"]));
        // The count the database returned disagrees: nothing can be trusted.
        let l = pg("SELECT * FROM customers", 4);
        assert_eq!(l.outputs, vec![OutputLineage::Unknown; 4]);
        assert!(l.incomplete);
    }

    #[test]
    fn whole_row_references() {
        let all = k(&[
            "customers.card",
            "customers.email",
            "customers.id",
            "customers.name",
            "customers.ssn",
        ]);
        let sql = "SELECT c, to_json(c), row_to_json(c), c::text, ROW(c.*), (c).ssn, \
                   json_agg(c.*) FROM customers c";
        outputs(
            &pg(sql, 7),
            &[
                all.clone(),
                all.clone(),
                all.clone(),
                all.clone(),
                all.clone(),
                k(&["customers.ssn"]),
                all.clone(),
            ],
            sql,
        );
        // A column of the same name wins over the table.
        let sql = "SELECT orders FROM orders, (SELECT 1 AS orders) s";
        outputs(&pg(sql, 1), &[k(&[])], sql);
    }

    #[test]
    fn set_operations() {
        let sql = "SELECT email, 1 FROM customers UNION SELECT name, id FROM users \
                   EXCEPT SELECT note, total FROM orders ORDER BY 2";
        let l = pg(sql, 2);
        outputs(
            &l,
            &[
                k(&["customers.email", "orders.note", "users.name"]),
                k(&["orders.total", "users.id"]),
            ],
            sql,
        );
        assert_eq!(l.predicate_columns, set(&["orders.total", "users.id"]));
    }

    #[test]
    fn joins_and_ambiguity() {
        let sql = "SELECT email, ssn, total FROM customers JOIN users ON customers.id = users.id \
                   JOIN orders ON orders.customer_id = customers.id";
        let l = pg(sql, 3);
        outputs(
            &l,
            &[
                k(&["customers.email", "users.email"]),
                k(&["customers.ssn"]),
                k(&["orders.total"]),
            ],
            sql,
        );
        assert_eq!(
            l.predicate_columns,
            set(&["customers.id", "orders.customer_id", "users.id"])
        );
        // A table the schema does not know may hold any unqualified column.
        let l = pg("SELECT email FROM customers, mystery", 1);
        assert_eq!(l.outputs, vec![k(&["customers.email", "mystery.email"])]);
        assert!(l.incomplete);
    }

    #[test]
    fn subqueries() {
        let sql = "SELECT (SELECT max(o.total) FROM orders o WHERE o.customer_id = c.id) AS m, \
                   EXISTS (SELECT ssn FROM staging s WHERE s.email = c.email) \
                   FROM customers c WHERE c.id IN (SELECT customer_id FROM orders)";
        let l = pg(sql, 2);
        outputs(&l, &[k(&["orders.total"]), k(&[])], sql);
        assert_eq!(
            l.predicate_columns,
            set(&[
                "customers.email",
                "customers.id",
                "orders.customer_id",
                "staging.email"
            ])
        );
        // Correlated: `ssn` is not in orders, so it is the outer customers' column.
        let sql = "SELECT (SELECT ssn FROM orders LIMIT 1) FROM customers";
        outputs(&pg(sql, 1), &[k(&["customers.ssn"])], sql);
        let sql = "SELECT s.x FROM customers c, LATERAL (SELECT c.card AS x) s";
        outputs(&pg(sql, 1), &[k(&["customers.card"])], sql);
    }

    #[test]
    fn predicate_columns() {
        let cases: [(&str, &[&str]); 6] = [
            (
                "SELECT id FROM customers WHERE ssn LIKE '1%'",
                &["customers.ssn"],
            ),
            ("SELECT id FROM customers ORDER BY ssn", &["customers.ssn"]),
            (
                "SELECT a.id FROM customers a JOIN customers b ON a.ssn = b.ssn",
                &["customers.ssn"],
            ),
            (
                "SELECT count(*) FROM customers GROUP BY card",
                &["customers.card"],
            ),
            (
                "SELECT name FROM customers GROUP BY name HAVING max(ssn) > '5'",
                &["customers.name", "customers.ssn"],
            ),
            // An output alias or position in ORDER BY is the column behind it.
            (
                "SELECT ssn AS s, id FROM customers ORDER BY s, 2",
                &["customers.id", "customers.ssn"],
            ),
        ];
        for (sql, expected) in cases {
            for l in [pg(sql, 1), my(sql, 1), lite(sql, 1)] {
                assert_eq!(l.predicate_columns, set(expected), "{sql}");
            }
        }
        let l = pg("SELECT id FROM customers WHERE nosuch = 1", 1);
        assert_eq!(l.predicate_columns, set(&["*.nosuch"]));
        assert!(l.incomplete);
        assert_eq!(l.outputs, vec![k(&["customers.id"])]);
    }

    #[test]
    fn returning() {
        let sql = "INSERT INTO customers (email, ssn) SELECT email, ssn FROM staging \
                   WHERE email LIKE '%x' RETURNING id, ssn";
        let l = pg(sql, 2);
        outputs(
            &l,
            &[k(&["customers.id"]), k(&["customers.ssn", "staging.ssn"])],
            sql,
        );
        assert_eq!(l.predicate_columns, set(&["staging.email"]));
        let sql = "INSERT INTO customers (id, email) VALUES (1, 'a') \
                   ON CONFLICT (id) DO UPDATE SET email = excluded.email || customers.name \
                   RETURNING email";
        outputs(
            &pg(sql, 1),
            &[k(&["customers.email", "customers.name"])],
            sql,
        );
        let sql = "UPDATE customers SET name = o.note FROM orders o \
                   WHERE o.customer_id = customers.id RETURNING name, customers.ssn";
        let l = pg(sql, 2);
        outputs(
            &l,
            &[k(&["customers.name", "orders.note"]), k(&["customers.ssn"])],
            sql,
        );
        assert_eq!(
            l.predicate_columns,
            set(&["customers.id", "orders.customer_id"])
        );
        let sql = "DELETE FROM customers WHERE ssn = '1' RETURNING *";
        let l = lite(sql, 5);
        assert_eq!(l.outputs[3], k(&["customers.ssn"]));
        assert_eq!(l.predicate_columns, set(&["customers.ssn"]));
        let sql = "WITH d AS (DELETE FROM customers RETURNING card) SELECT card FROM d";
        outputs(&pg(sql, 1), &[k(&["customers.card"])], sql);
        // No RETURNING: no rows.
        outputs(&pg("INSERT INTO orders (id) VALUES (1)", 0), &[], "insert");
    }

    #[test]
    fn unknown_and_unparsed_fail_closed() {
        let l = pg("SELECT * FROM mystery", 3);
        assert_eq!(l.outputs, vec![OutputLineage::Unknown; 3]);
        assert!(l.incomplete);
        let l = pg("SELECT m.* , c.id FROM mystery m, customers c", 4);
        assert_eq!(l.outputs, vec![OutputLineage::Unknown; 4]);
        let l = pg("SELECT to_json(m) FROM mystery m", 1);
        assert_eq!(l.outputs, vec![OutputLineage::Unknown]);
        // A qualified column of an unknown table is still that table's column.
        let l = pg("SELECT m.ssn FROM mystery m", 1);
        assert_eq!(l.outputs, vec![k(&["mystery.ssn"])]);
        assert!(l.incomplete);
        for sql in [
            "selec garbage from",
            "SELECT 1; SELECT 2",
            "",
            "EXPLAIN SELECT * FROM customers",
            "SELECT 1 END DELETE FROM t",
        ] {
            let l = pg(sql, 2);
            assert_eq!(l.outputs, vec![OutputLineage::Unknown; 2], "{sql}");
            assert!(l.incomplete, "{sql}");
        }
        let l = pg("SELECT nosuch FROM customers", 1);
        assert_eq!(l.outputs, vec![OutputLineage::Unknown]);
        assert!(l.incomplete);
        // An unknown CTE/derived name in a star keeps the positions of the rest honest.
        let l = pg("SELECT f.* FROM generate_series(1, 3) f", 1);
        assert_eq!(l.outputs, vec![k(&[])]);
        assert!(l.incomplete);
    }

    #[test]
    fn mysql_dialect() {
        let sql = "SELECT `email`, CONCAT(c.name, '@'), GROUP_CONCAT(ssn SEPARATOR ','), \
                   \"literal\" FROM Customers AS c GROUP BY 1, 2";
        let l = my(sql, 4);
        outputs(
            &l,
            &[
                k(&["customers.email"]),
                k(&["customers.name"]),
                k(&["customers.ssn"]),
                k(&[]),
            ],
            sql,
        );
        assert_eq!(
            l.predicate_columns,
            set(&["customers.email", "customers.name"])
        );
        // Session variables may carry data from earlier statements.
        let l = my("SELECT @v, id FROM customers", 2);
        assert_eq!(
            l.outputs,
            vec![OutputLineage::Unknown, k(&["customers.id"])]
        );
        assert!(l.incomplete);
        // Executable comments are refused, as by the inspector.
        let l = my("SELECT id /*!, ssn */ FROM customers", 2);
        assert_eq!(l.outputs, vec![OutputLineage::Unknown; 2]);
        // MySQL may compare alias case-sensitively: `C.id` might be the outer `C`.
        let l = my(
            "SELECT (SELECT C.id FROM orders AS c LIMIT 1) FROM customers AS C",
            1,
        );
        assert_eq!(l.outputs, vec![k(&["customers.id", "orders.id"])]);
        // MySQL lists USING columns in the left table's order, not the USING list's.
        let l = my("SELECT * FROM users JOIN customers USING (name, id)", 6);
        assert_eq!(l.outputs[0], k(&["customers.id", "users.id"]));
        assert_eq!(l.outputs[1], k(&["customers.name", "users.name"]));
        assert_eq!(l.outputs[2], k(&["users.email"]));
        assert!(!l.incomplete);
        let l = pg("SELECT * FROM users JOIN customers USING (name, id)", 6);
        assert_eq!(l.outputs[0], k(&["customers.name", "users.name"]));
        let l = my("SELECT 1, CURRENT_USER() FROM DUAL", 2);
        outputs(&l, &[k(&[]), k(&[])], "dual");
        let sql = "INSERT INTO orders (id, note) SELECT id, ssn FROM customers \
                   ON DUPLICATE KEY UPDATE note = VALUES(note)";
        let l = my(sql, 0);
        assert!(l.outputs.is_empty() && !l.incomplete);
    }

    #[test]
    fn sqlite_dialect() {
        let sql = "SELECT \"ssn\", [email], substr(name, 1, 1) || '.' FROM customers";
        outputs(
            &lite(sql, 3),
            &[
                k(&["customers.ssn"]),
                k(&["customers.email"]),
                k(&["customers.name"]),
            ],
            sql,
        );
        // SQLite keeps the left side's order and drops the right side's copy.
        let l = lite("SELECT * FROM users JOIN customers USING (id)", 7);
        assert_eq!(l.outputs[0], k(&["customers.id", "users.id"]));
        assert_eq!(l.outputs[1], k(&["users.email"]));
        assert_eq!(l.outputs[3], k(&["customers.email"]));
        assert!(!l.incomplete);
        let sql = "INSERT INTO orders (customer_id, note) VALUES (1, 'x') RETURNING note";
        outputs(&lite(sql, 1), &[k(&["orders.note"])], sql);
    }

    #[test]
    fn identifiers_are_normalised_per_dialect() {
        // PostgreSQL: quoted names keep their case and so may be another column than the
        // lowercased schema's; both are taken.
        let l = pg("SELECT \"SSN\" FROM customers", 1);
        assert_eq!(l.outputs, vec![k(&["customers.ssn"])]);
        let l = pg("SELECT C.Email FROM Customers c", 1);
        assert_eq!(l.outputs, vec![k(&["customers.email"])]);
        // A quoted alias is another name.
        let l = pg("SELECT \"C\".email FROM customers c", 1);
        assert_eq!(l.outputs, vec![OutputLineage::Unknown]);
    }

    #[test]
    fn big_input_runs_on_its_own_thread() {
        let n = (MAX_SQL_BYTES - 100) / " UNION SELECT ssn FROM customers".len();
        let sql = format!(
            "SELECT email FROM customers{}",
            " UNION SELECT ssn FROM customers".repeat(n)
        );
        let l = pg(&sql, 1);
        assert_eq!(l.outputs, vec![k(&["customers.email", "customers.ssn"])]);
        let sql = format!("SELECT email{} FROM customers", " || email".repeat(25_000));
        assert_eq!(pg(&sql, 1).outputs, vec![k(&["customers.email"])]);
        let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert_eq!(pg(&deep, 1).outputs, vec![OutputLineage::Unknown]);
    }

    #[test]
    fn inline_analysis_fits_in_a_small_stack() {
        let w = |sql: &str| {
            sql::weight(
                &Tokenizer::new(&sqlparser::dialect::PostgreSqlDialect {}, sql)
                    .tokenize_with_location()
                    .unwrap(),
            )
        };
        // As in the inspector's test: the deepest trees the inline path can meet, chains as
        // long as the inline budget allows inside nesting at the parser's recursion limit,
        // here under a projection, a WHERE and a derived table so every walk is exercised.
        let open = "(".repeat(RECURSION_LIMIT / 2);
        let close = ")".repeat(RECURSION_LIMIT / 2);
        let shapes = [
            (
                format!("SELECT {open}ssn"),
                " || 'x'",
                format!("{close} FROM customers"),
            ),
            (
                format!("SELECT {open}ssn"),
                "::text",
                format!("{close} FROM customers"),
            ),
            (
                format!("SELECT {open}card"),
                "[1]",
                format!("{close} FROM customers"),
            ),
            (
                format!("SELECT id FROM customers WHERE {open}ssn = 1"),
                " OR ssn = 1",
                close.clone(),
            ),
            (
                "SELECT s.x FROM (SELECT ssn AS x FROM customers".to_string(),
                " UNION SELECT 1",
                ") s".to_string(),
            ),
            (
                format!("SELECT {open}ssn"),
                " IS NULL",
                format!("{close} FROM customers"),
            ),
        ];
        let mut inputs = Vec::new();
        for (head, link, tail) in &shapes {
            let n = (sql::INLINE_MAX_TOKENS - w(head) - w(tail)) / w(link);
            let sql = format!("{head}{}{tail}", link.repeat(n));
            let weight = w(&sql);
            assert!(
                weight <= sql::INLINE_MAX_TOKENS && weight + 2 * w(link) > sql::INLINE_MAX_TOKENS
            );
            inputs.push(sql);
        }
        inputs.push(format!(
            "SELECT {}ssn{} FROM customers",
            "(SELECT ".repeat(20),
            " FROM customers)".repeat(20)
        ));
        inputs.push(format!(
            "SELECT s.ssn FROM {}customers{}",
            "(SELECT * FROM ".repeat(20),
            ") s".repeat(20)
        ));
        let handle = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                let mut followed = 0;
                for sql in &inputs {
                    for kind in [
                        ConnectionKind::Postgres,
                        ConnectionKind::Mysql,
                        ConnectionKind::Sqlite,
                    ] {
                        let l = lineage(kind, sql, &schema(), 1);
                        followed += usize::from(l.outputs != vec![OutputLineage::Unknown]);
                    }
                }
                followed
            })
            .unwrap();
        // The deep shapes were really analysed, not refused (SQLite and MySQL do not parse
        // some of the PostgreSQL-only chains).
        assert!(handle.join().unwrap() >= 20);
    }

    #[test]
    fn garbage_never_panics() {
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let words = [
            "select",
            "from",
            "where",
            "with",
            "recursive",
            "as",
            "(",
            ")",
            "union",
            "join",
            "using",
            "on",
            "lateral",
            "returning",
            "insert",
            "into",
            "values",
            "update",
            "set",
            "delete",
            "c",
            "customers",
            "orders",
            "c.*",
            "*",
            "ssn",
            "email",
            ",",
            "1",
            "=",
            "count(*)",
            "to_json(c)",
            "order",
            "by",
            "group",
            "exists",
            "over",
            "partition",
        ];
        for _ in 0..2000 {
            let len = (next() % 40) as usize;
            let sql = (0..len)
                .map(|_| words[(next() % words.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ");
            for kind in [
                ConnectionKind::Postgres,
                ConnectionKind::Mysql,
                ConnectionKind::Sqlite,
            ] {
                let l = lineage(kind, &sql, &schema(), 2);
                assert_eq!(l.outputs.len(), 2, "{sql}");
            }
        }
    }
}
