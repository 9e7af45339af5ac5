//! The HTTP listener: connection limits (header-read timeout, a cap on open connections)
//! and connections whose writes fail when they make no progress for too long.
//!
//! Why the write limit: a client that stops reading a streamed result would otherwise hold its database
//! query (and a pooled connection) open until TCP gives up, hours later. With this, a write
//! that stays blocked for `idle` errors out, hyper drops the connection, the response body
//! is dropped, and the pipeline cancels the query on the server.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

/// The limits the listener enforces before a request reaches the router.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A write that makes no progress for this long fails (see the module comment).
    pub write_idle: Duration,
    /// Complete request headers must arrive within this, from the first byte the server
    /// waits for (a fresh connection, or one idle between keep-alive requests).
    pub header_read: Duration,
    /// Open connections; past it a connection gets a 503 and is closed.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish
/// their in-flight requests and returns when every one has closed, or when `cut` resolves:
/// then the connections still open are closed where they stand.
///
/// What must stay true:
/// - A connection that sends nothing, or never finishes its headers, is closed after
///   `header_read` (hyper's HTTP/1 header timer, which also runs between keep-alive
///   requests): idle and half-sent connections cannot pile up without a token.
/// - At most `max_connections` are open; one more is accepted, told 503 with
///   `Retry-After`, and closed — `accept` itself never stalls or spins.
/// - Once `shutdown` resolves nothing new is accepted and the listening socket is closed,
///   so new connections are refused rather than queued unanswered.
/// - Once `cut` resolves (after shutdown), this returns promptly whatever the clients do: a
///   response a slow client has not taken by then is dropped (an NDJSON stream without its
///   trailer is a cut stream), which also releases the execution waiting to write it, so
///   the process exits within the drain instead of within the write-idle timeout.
/// - Served as HTTP/1.1 (with WebSocket upgrades). HTTP/2 cleartext is not offered: its
///   preface sniffing would run before any header timer, and TLS terminators in front of
///   Airlock speak HTTP/1.1 to it.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send,
    cut: impl std::future::Future<Output = ()> + Send,
) {
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (phase, _) = tokio::sync::watch::channel(Phase::Serving);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tokio::spawn(refuse_over_capacity(stream));
            continue;
        };
        let io = hyper_util::rt::TokioIo::new(IdleWriteStream {
            inner: stream,
            idle: limits.write_idle,
            stalled: None,
        });
        // The peer's address, for what only a loopback caller may do (the console's dev
        // sign-in); axum's `ConnectInfo` reads it.
        let app = tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            },
        );
        let service = hyper_util::service::TowerToHyperService::new(app);
        let mut phase = phase.subscribe();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .keep_alive(true);
            let conn = builder.serve_connection(io, service).with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = phase.wait_for(|p| *p != Phase::Serving) => conn.as_mut().graceful_shutdown(),
            }
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                _ = phase.wait_for(|p| *p == Phase::Cut) => {
                    tracing::info!("connection closed at shutdown with its response unfinished");
                }
            }
        });
    }
    // Close the listening socket at once: a connection the kernel queued but nobody will
    // accept would hang until the process exits (a load balancer's probe or a new request
    // stuck for the whole drain); refused, it goes elsewhere at once.
    drop(listener);
    let _ = phase.send(Phase::Closing);
    // Every connection holds a permit until it closes: all of them back means all closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = open.acquire_many(all) => return,
        _ = cut => {}
    }
    let _ = phase.send(Phase::Cut);
    let _ = open.acquire_many(all).await;
}

/// Where the listener is in its life; connections watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Finish the request in progress, then close.
    Closing,
    /// Close now.
    Cut,
}

/// Answers a connection past `max_connections` with a 503 and closes it.
async fn refuse_over_capacity(mut stream: TcpStream) {
    use crate::gateway::problem::{Code, Problem};
    use tokio::io::AsyncWriteExt;
    let body = Problem::new(
        Code::TooManyConnections,
        "the server has as many open connections as it takes; retry shortly",
    )
    .to_body()
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

pub struct IdleWriteStream {
    inner: TcpStream,
    idle: Duration,
    /// Armed when a write returns Pending; cleared by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl IdleWriteStream {
    /// A write that made progress resets the stall timer; one that cannot is an error once
    /// the peer has taken nothing for the idle period.
    fn settle<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => match self.check_stall(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn check_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let idle = self.idle;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "client stopped reading",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

use std::future::Future;

impl AsyncRead for IdleWriteStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for IdleWriteStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.settle(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.settle(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.settle(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
