//! Column lineage, part of `lineage.rs`: the visitor that collects what one expression
//! derives from.

use super::*;

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
pub(super) struct Walker<'w, 's> {
    ctx: &'w mut Ctx<'s>,
    scope: &'w Scope<'w>,
    ctes: &'w Ctes<'w>,
    /// Output columns the clause may name (GROUP BY, HAVING, ORDER BY).
    aliases: &'w [Col],
    /// Everything found is a predicate column (WHERE, ORDER BY, ...).
    predicate: bool,
    pub(super) data: OutputLineage,
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
    pub(super) fn new(
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
    pub(super) fn wildcard_args(&mut self, args: &[FunctionArg], count: bool) {
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
