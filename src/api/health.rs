//! Liveness and readiness.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::problem::{Code, Problem};
use super::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    pub(crate) status: String,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Ready to take requests: not shutting down and the audit store answers.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready", body = Health),
              (status = 503, description = "Not ready", body = super::problem::ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Health>, Problem> {
    if !state.ready.load(Ordering::SeqCst) {
        return Err(Problem::new(
            Code::ShuttingDown,
            "this instance is draining; send new requests elsewhere",
        ));
    }
    state
        .gateway
        .store
        .ping()
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    Ok(Json(Health {
        status: "ready".into(),
    }))
}
