//! The one NDJSON writer: a header line, one line per item as the execution produces it,
//! then a trailer. Errors are `{"type":"error","problem":{...}}`, the problem object
//! exactly as problem+json sends it.
//!
//! What must stay true: the body pulls from the execution only as fast as the socket takes
//! bytes (back-pressure), and a stream that ends without a trailer was cut.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::gateway::Problem;

pub(crate) const CONTENT_TYPE: &str = "application/x-ndjson";

/// One JSON value and a newline.
pub(crate) fn line(value: &impl Serialize) -> Bytes {
    let mut v = serde_json::to_vec(value).unwrap_or_else(|_| b"{\"type\":\"error\"}".to_vec());
    v.push(b'\n');
    Bytes::from(v)
}

/// A typed control line: `{"type": kind, ...fields of body}`.
pub(crate) fn typed(kind: &str, body: &impl Serialize) -> Bytes {
    let mut v = serde_json::to_value(body).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut v {
        map.insert("type".into(), kind.into());
    }
    line(&v)
}

/// The error trailer.
pub(crate) fn error(problem: &Problem) -> Bytes {
    line(&json!({"type": "error", "problem": problem.to_body()}))
}

/// Streams `header`, then each item of `rx` as `to_line` renders it.
pub(crate) fn stream<T: Send + 'static>(
    header: Bytes,
    rx: mpsc::Receiver<T>,
    to_line: impl Fn(T) -> Bytes + Send + Sync + 'static,
) -> Response {
    let to_line = std::sync::Arc::new(to_line);
    let rest = futures::stream::unfold(rx, move |mut rx| {
        let to_line = to_line.clone();
        async move {
            let item = rx.recv().await?;
            Some((Ok::<_, std::io::Error>(to_line(item)), rx))
        }
    });
    let body = futures::stream::once(async move { Ok(header) }).chain(rest);
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}
