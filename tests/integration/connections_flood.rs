//! HTTP-layer limits against a hostile client without a token: idle and half-sent
//! connections are closed after the header timeout, a cap on open connections answers 503
//! past it, and a body that trickles in is cut — while normal requests keep being served.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

async fn demo(server: &str) -> Airlock {
    let embedded = airlock::config::EMBEDDED_DEFAULT
        .replace("listen = \"127.0.0.1:8080\"", "")
        .replace("[server]\n", "");
    Airlock::start_with(server, &embedded).await
}

fn addr(a: &Airlock) -> String {
    a.base.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection or `limit` passes; true when it closed.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn idle_and_half_sent_connections_do_not_stop_service_and_are_closed() {
    let a = demo("header_read_timeout_ms = 1500").await;
    let mut idle = Vec::new();
    for i in 0..2000 {
        let mut s = TcpStream::connect(addr(&a)).await.unwrap();
        if i % 2 == 0 {
            // Half-sent: a request line and a header, never the blank line.
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        idle.push(s);
    }
    // A normal request is served while they hang.
    let started = Instant::now();
    let (status, body) = a.get(&a.agent(), "/v1/connections").await;
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // Every one of them is closed by the server within the header timeout (plus slack).
    for s in &mut idle {
        assert!(closed_within(s, Duration::from_secs(4)).await);
    }
    // A fresh client: the first request's pooled connection was idle past the header
    // timeout too, so the server closed it as well (as it must).
    let status = reqwest::Client::new()
        .get(format!("{}/v1/connections", a.base))
        .bearer_auth(a.agent())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    a.stop().await;
}

#[tokio::test]
async fn connections_past_the_cap_get_a_503_and_service_resumes() {
    let a = demo("max_connections = 8\nheader_read_timeout_ms = 60000").await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(addr(&a)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(addr(&a)).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("too_many_connections"), "{answer}");
    drop(held);
    let mut served = false;
    for _ in 0..50 {
        if a.get(&a.agent(), "/v1/connections").await.0 == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "service resumes once connections close");
    a.stop().await;
}

#[tokio::test]
async fn a_body_that_trickles_in_is_cut_with_408() {
    let a = demo("body_read_timeout_ms = 500").await;
    let mut s = TcpStream::connect(addr(&a)).await.unwrap();
    let head = format!(
        "POST /v1/connections/demo/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"sql\":",
        a.agent()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_read_timeout"), "{answer}");
    a.stop().await;
}
