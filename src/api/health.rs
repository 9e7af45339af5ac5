//! Liveness, readiness and metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use serde::Serialize;

use super::problem::{Code, Problem};
use super::state::AppState;

/// Liveness or readiness.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub(crate) struct Health {
    /// `ok` from `/healthz`, `ready` from `/readyz`.
    #[schema(value_type = HealthStatus)]
    pub(crate) status: String,
}

/// What `/healthz` (`ok`) and `/readyz` (`ready`) answer when they succeed.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase", example = "ok")]
#[allow(dead_code)]
pub(crate) enum HealthStatus {
    Ok,
    Ready,
}

/// Liveness
///
/// No token. Answers 200 while the process is up, even when it cannot serve (see
/// `/readyz`): restart the process only when this fails.
#[utoipa::path(get, path = "/healthz", tag = "health", operation_id = "healthz",
    security(()),
    responses((status = 200, description = "The process is up.", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness
///
/// No token. 200 when this instance takes requests: not shutting down and the audit store
/// answers. 503 `shutting_down` (draining: send requests to another instance) or
/// `audit_unavailable` (nothing can run until the store answers). For load balancers.
#[utoipa::path(get, path = "/readyz", tag = "health", operation_id = "readyz",
    security(()),
    responses((status = 200, description = "Ready to take requests.", body = Health, example = json!({"status": "ready"}))))]
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

/// Prometheus metrics
///
/// No token. Process metrics in the Prometheus text format: executions by operation and
/// outcome, audit group commits, executions in flight, the memory budget, readiness. Labels
/// carry no principal, statement or value.
#[utoipa::path(get, path = "/metrics", tag = "health", operation_id = "metrics",
    security(()),
    responses((status = 200, description = "Prometheus text exposition format.", body = String, content_type = "text/plain; version=0.0.4",
               example = json!("# TYPE airlock_ready gauge\nairlock_ready 1\n"))))]
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
