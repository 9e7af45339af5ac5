//! Column lineage, part of `lineage.rs`: INSERT, UPDATE, DELETE: what their outputs (RETURNING) and predicates derive from.

use super::*;

impl Ctx<'_> {
    pub(super) fn dml(&mut self, statement: &Statement, outer: &Scope, ctes: &Ctes) -> Relation {
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
    pub(super) fn assignment_targets(
        &mut self,
        target: &AssignmentTarget,
    ) -> Vec<(Vec<Ident>, String)> {
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

    pub(super) fn insert(
        &mut self,
        insert: &sqlparser::ast::Insert,
        outer: &Scope,
        ctes: &Ctes,
    ) -> Relation {
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

    pub(super) fn update(
        &mut self,
        update: &sqlparser::ast::Update,
        outer: &Scope,
        ctes: &Ctes,
    ) -> Relation {
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

    pub(super) fn delete(
        &mut self,
        delete: &sqlparser::ast::Delete,
        outer: &Scope,
        ctes: &Ctes,
    ) -> Relation {
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
