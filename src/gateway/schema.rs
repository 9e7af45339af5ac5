//! Schema reads (`GET /v1/connections/{name}/schema`): admitted, audited and limited like
//! any request — they touch the target, so they come after its verification. The answer
//! lists only the tables the caller's policy would let it read (`SELECT` from the table
//! allowed or reviewable): a denied table's name and columns are not handed out either.

use serde::Serialize;

use super::admit::Admitted;
use super::problem::Problem;
use super::record::{Ending, ExecutionRecord};
use crate::backend::TableInfo;

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SchemaView {
    pub(crate) connection: String,
    pub(crate) tables: Vec<TableInfo>,
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
            let tables: Vec<TableInfo> = tables
                .into_iter()
                .filter(|t| readable(&gateway, &principal, &conn, t))
                .collect();
            let mut ending = Ending::ok();
            ending.row_count = Some(tables.len() as u64);
            record.finish(ending).await;
            Ok(SchemaView {
                connection: conn.name().to_string(),
                tables,
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
