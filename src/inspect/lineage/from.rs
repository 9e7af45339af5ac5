//! Column lineage, part of `lineage.rs`: FROM clauses: joins (USING, NATURAL), named tables and their schema columns, derived
//! tables, table-valued functions.

use super::*;

impl Ctx<'_> {
    /// The FROM clause: its sources, and what `*` expands to.
    pub(super) fn from(
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
    pub(super) fn joined(
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
    pub(super) fn using(
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
    pub(super) fn natural(&mut self, left: Relation, right: Relation) -> Relation {
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
    pub(super) fn merge_join_columns(
        &mut self,
        keys: &[String],
        left: Relation,
        right: Relation,
    ) -> Relation {
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

    pub(super) fn alias_names(&self, alias: Option<&TableAlias>) -> Vec<String> {
        alias
            .map(|a| a.columns.iter().map(|c| self.key(&c.name)).collect())
            .unwrap_or_default()
    }

    /// A table or CTE named in FROM (or by `TABLE name`). Pushes its source; returns its `*`.
    pub(super) fn named(
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
    pub(super) fn schema_columns(&self, parts: &[Ident]) -> Option<Vec<String>> {
        let keys = self.keys(parts);
        let start = keys.len().saturating_sub(2);
        let key = keys.get(start..)?.join(".").to_lowercase();
        self.schema.tables.get(&key).cloned()
    }

    pub(super) fn factor(
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
    pub(super) fn unfollowed_source(
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
    pub(super) fn function_source(
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
    pub(super) fn json_table_names(&self, columns: &[JsonTableColumn]) -> Vec<String> {
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
    pub(super) fn with_siblings<R>(
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

    pub(super) fn function_args(
        &mut self,
        args: &Vec<FunctionArg>,
        scope: &Scope,
        ctes: &Ctes,
    ) -> OutputLineage {
        let mut walker = Walker::new(self, scope, ctes, &[], false);
        walker.wildcard_args(args, false);
        let _ = args.visit(&mut walker);
        let data = walker.data;
        // A function in FROM decides how many rows there are (`generate_series(1,
        // ascii(ssn))`): what its arguments read shapes the result like a predicate.
        if let OutputLineage::Known(columns) = &data {
            self.predicates.extend(columns.iter().cloned());
        }
        data
    }
}
