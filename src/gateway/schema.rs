//! Schema reads (`GET /v1/connections/{name}/schema`): admitted, audited and limited like
//! any request — they touch the target, so they come after its verification. The answer
//! lists only the tables the caller's policy would let it read (`SELECT` from the table
//! allowed or reviewable): a denied table's name and columns are not handed out either, not
//! even as the target of a foreign key. Each column says whether a masking column rule masks
//! it for this caller, by the same lookup queries use ([`RequestMasking::protecting_rule`]).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::admit::Admitted;
use super::problem::Problem;
use super::record::{Ending, ExecutionRecord};
use crate::backend::TableInfo;
use crate::mask::plan::{ColumnRuleView, RequestMasking};

/// The tables a caller may read on one connection, with keys, comments and masking.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "connection": "demo",
    "tables": [{
        "schema": null,
        "name": "customers",
        "kind": "table",
        "comment": null,
        "primary_key": ["id"],
        "foreign_keys": [],
        "columns": [
            {"name": "id", "type": "integer", "nullable": false, "comment": null, "masked": false, "masking": null},
            {"name": "email", "type": "text", "nullable": false, "comment": null, "masked": true, "masking": {"column": "email", "strategy": "redact"}}
        ]
    }],
    "detectors": ["email", "card", "ssn"]
}))]
pub(crate) struct SchemaView {
    /// The connection's name.
    #[schema(example = "demo")]
    pub(crate) connection: String,
    /// Tables and views, ordered by schema and name.
    pub(crate) tables: Vec<TableInfo>,
    /// Content detectors that scan every value this caller reads from this connection and
    /// that no column rule masks whole; empty when the caller is exempt or none apply.
    #[schema(example = json!(["email", "card", "ssn"]))]
    pub(crate) detectors: Vec<String>,
}

pub(crate) async fn read(admitted: Admitted) -> Result<SchemaView, Problem> {
    let Admitted {
        gateway,
        principal,
        conn,
        begin,
        started,
        slot: _slot,
        claim,
        ..
    } = admitted;
    let Some(backend) = conn.sql() else {
        return Err(Problem::internal(
            "an admitted schema read lost its backend",
        ));
    };
    let record = ExecutionRecord::open(gateway.clone(), begin, started, claim).await?;
    match backend.schema().await {
        Ok(tables) => {
            let mut tables: Vec<TableInfo> = tables
                .into_iter()
                .filter(|t| readable(&gateway, &principal, &conn, t))
                .collect();
            prune_keys(&mut tables);
            let masking = gateway.masking.for_request(&principal, conn.name());
            for table in &mut tables {
                mark_masked(conn.config.kind, &masking, table);
            }
            let mut ending = Ending::ok();
            ending.row_count = Some(tables.len() as u64);
            record.finish(ending).await;
            Ok(SchemaView {
                connection: conn.name().to_string(),
                tables,
                detectors: masking.summary().detectors,
            })
        }
        Err(e) => {
            let problem = Problem::from(e);
            record
                .finish(Ending::failed(
                    super::command::outcome_of(&problem),
                    &problem,
                ))
                .await;
            Err(problem)
        }
    }
}

/// Keeps only keys over columns the listing shows, to tables it shows: a foreign key to a
/// table the caller may not read would name that table and its key columns, and a key over a
/// column the account cannot see would name that column.
fn prune_keys(tables: &mut [TableInfo]) {
    let columns: HashMap<(Option<String>, String), HashSet<String>> = tables
        .iter()
        .map(|t| {
            (
                (t.schema.clone(), t.name.clone()),
                t.columns.iter().map(|c| c.name.clone()).collect(),
            )
        })
        .collect();
    let all_listed = |table: &HashSet<String>, names: &[String]| {
        !names.is_empty() && names.iter().all(|n| table.contains(n))
    };
    for t in tables.iter_mut() {
        let Some(own) = columns.get(&(t.schema.clone(), t.name.clone())) else {
            continue;
        };
        if !all_listed(own, &t.primary_key) {
            t.primary_key.clear();
        }
        t.foreign_keys.retain(|fk| {
            let target = (fk.referenced_schema.clone(), fk.referenced_table.clone());
            fk.columns.len() == fk.referenced_columns.len()
                && all_listed(own, &fk.columns)
                && columns
                    .get(&target)
                    .is_some_and(|theirs| all_listed(theirs, &fk.referenced_columns))
        });
    }
}

/// Sets each column's `masked`/`masking` for the caller. The table is named as a query naming
/// it would resolve it (folded like `Facts::tables_read`), the column lowercased, as lineage
/// names source columns.
fn mark_masked(
    kind: crate::config::ConnectionKind,
    masking: &RequestMasking,
    table: &mut TableInfo,
) {
    let name = sqlparser::ast::Ident::with_quote('"', table.name.as_str());
    let Some(folded) = crate::inspect::sql::render(kind, &[&name]) else {
        return;
    };
    for column in &mut table.columns {
        let source = crate::inspect::lineage::SourceColumn {
            table: folded.clone(),
            column: column.name.to_lowercase(),
        };
        column.masking = masking.protecting_rule(&source).map(|r| ColumnRuleView {
            column: r.column.clone(),
            strategy: r.strategy,
        });
        column.masked = column.masking.is_some();
    }
}

/// Whether `SELECT * FROM` this table would be allowed (or held for review) for `principal`.
fn readable(
    gateway: &super::Gateway,
    principal: &crate::identity::Principal,
    conn: &super::Connection,
    table: &TableInfo,
) -> bool {
    use sqlparser::ast::Ident;
    let kind = conn.config.kind;
    let name = Ident::with_quote('"', table.name.as_str());
    let rendered = match &table.schema {
        Some(schema) => {
            let schema = Ident::with_quote('"', schema.as_str());
            crate::inspect::sql::render(kind, &[&schema, &name])
        }
        None => crate::inspect::sql::render(kind, &[&name]),
    };
    let Some(rendered) = rendered else {
        return false;
    };
    let facts = crate::inspect::Facts {
        statement_count: 1,
        kinds: vec![crate::inspect::StatementKind::Select],
        tables_read: vec![rendered],
        ..crate::inspect::Facts::default()
    };
    !matches!(
        gateway.policy.decide(principal, conn.name(), &facts),
        crate::policy::Decision::Deny { .. }
    )
}
