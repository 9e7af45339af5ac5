//! Schema reads (`GET /v1/connections/{name}/schema`): admitted, audited and limited like
//! any request — they touch the target, so they come after its verification.

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
    let record = ExecutionRecord::open(gateway, begin, started, claim).await?;
    match backend.schema().await {
        Ok(tables) => {
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
