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
    /// Per output, whether it is a stored value passed through unchanged: a bare column of a
    /// table named in the FROM list of a plain `SELECT` (no set operation, no CTE, no
    /// derived table, no function in FROM). Anything else — any function, operator, cast,
    /// aggregate, `RETURNING`, `UNION` with other values — may be a value the agent chose or
    /// shaped, so `partial` and `hash` do not apply to it (see `mask::plan`). Conservative:
    /// `false` wherever this cannot be shown; missing entries count as `false`.
    pub unchanged: Vec<bool>,
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
    let unchanged = analysis.unchanged.resolve(result_columns);
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
        unchanged,
    }
}

/// Lineage before the statement runs, when the number of result columns is not known yet:
/// outputs as the statement itself defines them. Used to refuse, before anything runs, what
/// strict masking would not let through.
pub fn lineage_before_running(kind: ConnectionKind, sql: &str, schema: &SchemaInfo) -> Lineage {
    let Some(analysis) = analysis(kind, sql, schema) else {
        return unfollowed(0);
    };
    let (outputs, opaque): (Vec<OutputLineage>, bool) = match analysis.relation {
        Some(Relation::Columns(columns)) => {
            (columns.into_iter().map(|c| c.lineage).collect(), false)
        }
        Some(Relation::Opaque(union)) => (vec![union], true),
        None => (Vec::new(), false),
    };
    let unchanged = analysis.unchanged.resolve(outputs.len());
    Lineage {
        outputs,
        predicate_columns: analysis.predicates,
        incomplete: analysis.incomplete || opaque,
        unchanged,
    }
}

/// References to columns that may be protected, for strict masking: how many identifiers
/// anywhere in the statement name such a column (`protected` is asked by the column name
/// alone, folded like an identifier), and how many of those are bare columns projected by a
/// plain top-level `SELECT` (see [`Lineage::unchanged`]). `None`: not one parsed statement.
/// Syntactic on purpose: a reference in a subquery, a FROM function, an expression or a
/// clause counts whatever the lineage makes of it.
pub fn protected_references(
    kind: ConnectionKind,
    sql: &str,
    protected: &(dyn Fn(&str) -> bool + Sync),
) -> Option<(usize, usize)> {
    sql::with_parsed(kind, sql, |statements| {
        let [statement] = statements else {
            return None;
        };
        let mut counter = References {
            kind,
            protected,
            total: 0,
        };
        let _ = statement.visit(&mut counter);
        let mut direct = 0;
        if let (Statement::Query(query), Unchanged::All | Unchanged::Each(_)) =
            (statement, Unchanged::of(statement))
            && let SetExpr::Select(select) = query.body.as_ref()
        {
            for item in &select.projection {
                if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item
                    && counter.names(e)
                {
                    direct += 1;
                }
            }
        }
        Some((counter.total, direct))
    })
    .flatten()
}

struct References<'a> {
    kind: ConnectionKind,
    protected: &'a (dyn Fn(&str) -> bool + Sync),
    total: usize,
}

impl References<'_> {
    /// Whether `expr` is a bare reference to a column that may be protected.
    fn names(&self, expr: &Expr) -> bool {
        let last = match expr {
            Expr::Identifier(ident) => ident,
            Expr::CompoundIdentifier(parts) => match parts.last() {
                Some(last) => last,
                None => return false,
            },
            _ => return false,
        };
        (self.protected)(&sql::fold(self.kind, last))
    }
}

impl sqlparser::ast::Visitor for References<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &Expr) -> std::ops::ControlFlow<()> {
        if self.names(expr) {
            self.total += 1;
        }
        std::ops::ControlFlow::Continue(())
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
        unchanged: Vec::new(),
    }
}

struct Analysis {
    /// `None`: the statement is of a kind whose result is not followed.
    relation: Option<Relation>,
    predicates: BTreeSet<SourceColumn>,
    incomplete: bool,
    unchanged: Unchanged,
}

/// Which outputs pass a stored value through unchanged (see [`Lineage::unchanged`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unchanged {
    /// Every output, however many a wildcard expands to.
    All,
    /// Per projection item, when no wildcard makes the count unknown.
    Each(Vec<bool>),
    None,
}

impl Unchanged {
    /// Aligned to `outputs` outputs; a count that does not match is not trusted.
    fn resolve(&self, outputs: usize) -> Vec<bool> {
        match self {
            Unchanged::All => vec![true; outputs],
            Unchanged::Each(each) if each.len() == outputs => each.clone(),
            Unchanged::Each(_) | Unchanged::None => vec![false; outputs],
        }
    }

    /// For one statement.
    fn of(statement: &Statement) -> Unchanged {
        let Statement::Query(query) = statement else {
            return Unchanged::None;
        };
        let SetExpr::Select(select) = query.body.as_ref() else {
            return Unchanged::None;
        };
        let plain_from = select.from.iter().all(|twj| {
            std::iter::once(&twj.relation)
                .chain(twj.joins.iter().map(|j| &j.relation))
                .all(|f| matches!(f, TableFactor::Table { args: None, .. }))
        });
        if query.with.is_some() || !plain_from || select.into.is_some() {
            return Unchanged::None;
        }
        let mut each = Vec::new();
        let mut wildcard = false;
        for item in &select.projection {
            match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    each.push(matches!(
                        e,
                        Expr::Identifier(_) | Expr::CompoundIdentifier(_)
                    ));
                }
                // `* REPLACE (expr AS col)` puts an expression under a column's name.
                SelectItem::Wildcard(options) | SelectItem::QualifiedWildcard(_, options)
                    if options.opt_replace.is_some() =>
                {
                    return Unchanged::None;
                }
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => wildcard = true,
                // One expression under several names: its output count is not one.
                SelectItem::ExprWithAliases { .. } => return Unchanged::None,
            }
        }
        match (wildcard, each.iter().all(|b| *b)) {
            (true, true) => Unchanged::All,
            (true, false) => Unchanged::None,
            (false, _) => Unchanged::Each(each),
        }
    }
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
        unchanged: Unchanged::of(statement),
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
/// A column of a table whose columns the schema does not list: the column itself, plus
/// whatever the source adds to every column it yields.
fn unlisted(table: &str, column: &str, extra: &Extra) -> OutputLineage {
    let mut lineage = OutputLineage::column(table, column);
    lineage.add(&extra.of(column));
    lineage
}

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
            } => Hit::Maybe(unlisted(table, column, extra)),
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
            } => unlisted(table, column, extra),
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
}

mod columns;
mod dml;
mod from;
mod walker;
use walker::Walker;

#[cfg(test)]
#[path = "lineage_tests.rs"]
mod tests;
