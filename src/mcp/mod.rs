//! MCP (Model Context Protocol) over Streamable HTTP at `/mcp`: Airlock's tools for agent
//! frameworks that attach tools over MCP.
//!
//! - `server.rs`: the tools, adapters over the gateway core like the REST handlers.
//! - `tools.rs`: the catalog (schemas from the OpenAPI document, honest annotations).
//! - here: mounting, authentication and discovery.
//!
//! What must stay true:
//! - Every request to `/mcp` carries a bearer token verified exactly as for the REST API;
//!   without one the answer is 401 with `WWW-Authenticate: Bearer resource_metadata=...`
//!   pointing at the RFC 9728 metadata, so a client can find where to get a token.
//! - The transport is stateless (no MCP session ids): each request is authenticated on its
//!   own, any instance can serve any request, and no session can be replayed under another
//!   principal's token.

mod server;
mod tools;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;

use crate::api::AppState;
use server::{AirlockMcp, Authenticated};

/// The MCP endpoint.
pub const PATH: &str = "/mcp";
/// RFC 9728 protected-resource metadata (and its form with the resource's path appended).
const METADATA: &str = "/.well-known/oauth-protected-resource";

/// `/mcp` and its discovery document, ready to merge into the API router (whose layers —
/// body limits, timeouts, request ids, tracing — then cover it too).
pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let spec = Arc::new(crate::api::openapi());
    let handler = AirlockMcp {
        state: state.clone(),
        spec,
    };
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(state.max_body_bytes)
        .with_cancellation_token(state.gateway.shutdown.child_token())
        // The Host check guards servers that trust ambient credentials (a browser on
        // localhost); every request here needs a bearer token, which a rebinding page
        // cannot attach.
        .disable_allowed_hosts();
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    let mcp = Router::new()
        .nest_service(PATH, service)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_bearer,
        ));
    Router::new()
        .route(METADATA, get(metadata))
        .route(&format!("{METADATA}{PATH}"), get(metadata))
        .merge(mcp)
}

/// Authenticates the request as the REST API does and hands the principal to the tools.
async fn require_bearer(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).cloned();
    match crate::api::extract::authenticate(&state, header.as_ref()).await {
        Ok(principal) => {
            let request_id = request
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            request.extensions_mut().insert(Authenticated {
                principal,
                request_id,
            });
            next.run(request).await
        }
        Err(problem) => {
            let challenge = format!(
                "Bearer resource_metadata=\"{}{METADATA}{PATH}\"",
                base_url(request.headers())
            );
            let mut response = problem.into_response();
            if response.status() == StatusCode::UNAUTHORIZED
                && let Ok(value) = challenge.parse()
            {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            response
        }
    }
}

/// RFC 9728: what this resource is and where its tokens come from.
async fn metadata(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    (
        [(header::CACHE_CONTROL, "max-age=300")],
        axum::Json(json!({
            "resource": format!("{base}{PATH}"),
            "authorization_servers": state.auth.authorization_servers(),
            "bearer_methods_supported": ["header"],
            "resource_name": "Airlock",
            "resource_documentation": format!("{base}/docs"),
        })),
    )
        .into_response()
}

/// The URL clients reach this server at: the `Host` they used, and the scheme a TLS
/// terminator in front reports (`X-Forwarded-Proto`), http otherwise. Only used to tell
/// clients where things are, never to decide anything.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        // Only what a host (and port, or an IPv6 literal) can be: anything else would let a
        // client write into the challenge header or the discovery document.
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
        })
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}
