//! Column lineage, part of `lineage.rs`: Projections, `*` and `t.*`, and resolving a column reference to what it derives from.

use super::*;

impl Ctx<'_> {
    /// The output columns of a projection (SELECT list or RETURNING).
    pub(super) fn projection(
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
    pub(super) fn output_name(&self, e: &Expr) -> Option<String> {
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
    pub(super) fn qualified_star(&mut self, name: &ObjectName, scope: &Scope) -> Relation {
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
    pub(super) fn wildcard(
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

    pub(super) fn last_key(&self, name: &ObjectName) -> Option<String> {
        name.0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| self.key(i))
    }

    /// What an expression's value derives from.
    pub(super) fn data<V: Visit>(&mut self, node: &V, scope: &Scope, ctes: &Ctes) -> OutputLineage {
        let mut walker = Walker::new(self, scope, ctes, &[], false);
        let _ = node.visit(&mut walker);
        walker.data
    }

    /// Records everything a filtering/ordering clause uses as predicate columns.
    pub(super) fn predicate<V: Visit>(
        &mut self,
        node: &V,
        scope: &Scope,
        ctes: &Ctes,
        aliases: &[Col],
    ) {
        let mut walker = Walker::new(self, scope, ctes, aliases, true);
        let _ = node.visit(&mut walker);
    }

    /// What a column reference (`c`, `t.c`, `s.t.c`, `c.field`) derives from; `None` when no
    /// source in scope can hold it.
    pub(super) fn resolve(&mut self, parts: &[Ident], scope: &Scope) -> Option<OutputLineage> {
        if parts.len() >= 2
            && let Some(lineage) = self.resolve_qualified(parts, scope)
        {
            return Some(lineage);
        }
        // No source has such a qualifier: `a.b` may be column `a`'s field `b`.
        let first = parts.first()?;
        self.resolve_unqualified(first, scope)
    }

    pub(super) fn resolve_qualified(
        &mut self,
        parts: &[Ident],
        scope: &Scope,
    ) -> Option<OutputLineage> {
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

    pub(super) fn resolve_unqualified(
        &mut self,
        ident: &Ident,
        scope: &Scope,
    ) -> Option<OutputLineage> {
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
}
