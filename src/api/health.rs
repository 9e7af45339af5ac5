//! Liveness, readiness and metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
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

/// Process metrics in the Prometheus text format: executions by operation and outcome,
/// audit group commits, executions in flight, the memory budget, readiness. Labels carry
/// no principal, statement or value, so scrapers need no token.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain; version=0.0.4")))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let gateway = &state.gateway;
    let kib_free = gateway.memory.available_permits() as u64;
    let text = crate::metrics::render(&crate::metrics::Gauges {
        ready: state.ready.load(Ordering::SeqCst),
        in_flight: gateway.in_flight.count() as u64,
        memory_budget_bytes: gateway.memory_total.saturating_mul(1024),
        memory_reserved_bytes: gateway
            .memory_total
            .saturating_sub(kib_free)
            .saturating_mul(1024),
    });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
