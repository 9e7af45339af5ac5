//! The HTTP API: one file per resource, errors as RFC 9457 problem+json.

pub(crate) mod audit;
pub(crate) mod check;
pub(crate) mod connections;
pub(crate) mod contract;
pub(crate) mod exec;
pub(crate) mod executions;
pub(crate) mod extract;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod ndjson;
pub(crate) mod problem;
pub(crate) mod query;
pub(crate) mod reviews;
pub(crate) mod sessions;
pub(crate) mod shell;
pub(crate) mod state;
pub(crate) mod tickets;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use axum::response::IntoResponse;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use problem::{Code, Problem};
pub use state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Airlock",
        description = "Access gateway for autonomous AI agents: authenticated, inspected, audited access to databases.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    // Every error response refers to it (`contract.rs` builds them), none by a handler's
    // own attribute: registered here so the reference resolves.
    components(schemas(problem::ProblemBody)),
    tags(
        (name = "connections", description = "What the caller may use"),
        (name = "query", description = "Run SQL through the pipeline"),
        (name = "audit", description = "The write-ahead audit log"),
        (name = "exec", description = "Run commands on hosts through the pipeline"),
        (name = "http", description = "Call HTTP APIs through the pipeline, with credentials only Airlock holds"),
        (name = "shell", description = "Interactive shells over WebSocket"),
        (name = "sessions", description = "Recorded sessions (asciicast v2)"),
        (name = "reviews", description = "Human approval of held requests"),
        (name = "executions", description = "Held requests and jobs: their state, running an approved one once, a job's result, cancelling it"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

fn api_router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(connections::list))
        .routes(routes!(connections::get))
        .routes(routes!(connections::schema))
        .routes(routes!(check::check))
        .routes(routes!(http::http))
        .routes(routes!(query::query))
        .routes(routes!(audit::list))
        .routes(routes!(reviews::list))
        .routes(routes!(reviews::get))
        .routes(routes!(reviews::approve))
        .routes(routes!(reviews::reject))
        .routes(routes!(executions::execution))
        .routes(routes!(executions::run))
        .routes(routes!(executions::result))
        .routes(routes!(executions::cancel))
        .routes(routes!(exec::exec))
        .routes(routes!(sessions::list))
        .routes(routes!(sessions::get))
        .routes(routes!(sessions::recording))
        .routes(routes!(shell::ticket))
        .routes(routes!(shell::shell))
        .routes(routes!(shell::terminate))
}

/// The OpenAPI document, exactly as served at `/openapi.json` and committed in the repo:
/// what utoipa generates from the handlers, completed by [`contract::complete`].
pub fn openapi() -> serde_json::Value {
    let (_, mut doc) = api_router().split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    contract::complete(&doc)
}

pub fn openapi_json() -> String {
    serde_json::to_string_pretty(&openapi()).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

async fn not_found() -> Problem {
    Problem::not_found("no such endpoint; see /openapi.json")
}

async fn method_not_allowed() -> impl IntoResponse {
    Problem::new(
        Code::MethodNotAllowed,
        "this endpoint does not take that method; see /openapi.json",
    )
}

/// No page of Airlock may be framed by another (the API docs and the console share the
/// origin; the console sets its own, stricter policy).
async fn no_framing(mut resp: axum::response::Response) -> axum::response::Response {
    let h = resp.headers_mut();
    h.entry(axum::http::header::X_FRAME_OPTIONS)
        .or_insert(axum::http::HeaderValue::from_static("DENY"));
    h.entry(axum::http::header::CONTENT_SECURITY_POLICY)
        .or_insert(axum::http::HeaderValue::from_static(
            "frame-ancestors 'none'",
        ));
    resp
}

pub fn router(state: Arc<AppState>) -> Router {
    let (router, _) = api_router().split_for_parts();
    let doc = openapi();
    let request_id = HeaderName::from_static("x-request-id");
    let max_body = state.max_body_bytes;
    router
        .merge(crate::mcp::router(state.clone()))
        .merge(crate::console::router(state.clone()))
        .merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", doc))
        .layer(axum::middleware::map_response(no_framing))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            state.body_read_timeout,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            axum::http::header::COOKIE,
        ]))
        .with_state(state)
}
