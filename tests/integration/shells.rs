//! Interactive shells over WebSocket against the real sshd: typing, prompts, resizes, exit
//! codes, vanishing clients, floods, garbage, bad resizes, tickets, terminate, recordings.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::*;
use crate::ssh::Sshd;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn config(sshd: &Sshd, extra: &str) -> String {
    format!(
        r#"{DEV_ISSUER}
{host}
[[rules]]
id = "ops-shell"
action = "allow"
connections = ["host"]
principals = ["group:ops"]
match = {{ shell = true }}

[[rules]]
id = "agents-plain"
action = "allow"
connections = ["host"]
principals = ["group:agents"]

[shells]
ticket_ttl_ms = 400
{extra}
"#,
        host = sshd.connection_toml("host"),
    )
}

async fn connect(a: &Airlock, token: Option<&str>, query: &str) -> Result<Ws, u16> {
    let url = format!(
        "{}/v1/connections/host/shell{query}",
        a.base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("websocket: {e}"),
    }
}

/// Reads until `until` says stop or the timeout passes; returns terminal text and controls.
async fn read_until(
    ws: &mut Ws,
    secs: u64,
    until: impl Fn(&str, &[Value]) -> bool,
) -> (String, Vec<Value>) {
    let mut out = String::new();
    let mut controls = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !until(&out, &controls) {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            _ => break,
        };
        match msg {
            Message::Binary(b) => out.push_str(&String::from_utf8_lossy(&b)),
            Message::Text(t) => {
                controls.push(serde_json::from_str(t.as_str()).unwrap_or(Value::Null))
            }
            Message::Close(_) => {
                controls.push(json!({"type": "closed"}));
                break;
            }
            _ => {}
        }
    }
    (out, controls)
}

fn has(controls: &[Value], kind: &str) -> bool {
    controls
        .iter()
        .any(|c| c["type"] == kind || (c["type"] == "error" && c["problem"]["code"] == kind))
}

#[tokio::test]
async fn type_resize_and_exit_with_a_code() {
    let sshd = Sshd::start(None);
    let a = Airlock::start(&config(&sshd, "")).await;
    let ops = a.token("olga", &["ops"], airlock::config::PrincipalKind::Human);
    // Agents have no shell rule: refused before any upgrade.
    assert_eq!(connect(&a, Some(&a.agent()), "").await.err(), Some(403));
    assert_eq!(connect(&a, None, "").await.err(), Some(401));
    let mut ws = connect(&a, Some(&ops), "?cols=90&rows=20").await.unwrap();
    ws.send(Message::Binary(b"echo hi-there-$((6*7))\n".to_vec().into()))
        .await
        .unwrap();
    let (out, _) = read_until(&mut ws, 10, |o, _| o.contains("hi-there-42")).await;
    assert!(out.contains("hi-there-42"), "{out}");
    ws.send(Message::Text(
        r#"{"type":"resize","cols":101,"rows":33}"#.into(),
    ))
    .await
    .unwrap();
    ws.send(Message::Binary(b"stty size\n".to_vec().into()))
        .await
        .unwrap();
    let (out, _) = read_until(&mut ws, 10, |o, _| o.contains("33 101")).await;
    assert!(out.contains("33 101"), "{out}");
    // Zero and huge sizes are refused without ending the session.
    ws.send(Message::Text(
        r#"{"type":"resize","cols":0,"rows":10}"#.into(),
    ))
    .await
    .unwrap();
    ws.send(Message::Text(
        r#"{"type":"resize","cols":100000,"rows":10}"#.into(),
    ))
    .await
    .unwrap();
    ws.send(Message::Text("not json".into())).await.unwrap();
    let (_, controls) = read_until(&mut ws, 5, |_, c| c.len() >= 3).await;
    assert!(
        has(&controls, "invalid_resize") && has(&controls, "invalid_control"),
        "{controls:?}"
    );
    // Binary garbage, then an interrupt: the shell survives.
    ws.send(Message::Binary(
        vec![0xff, 0xfe, 0x00, 0x1b, 0x5b, 0x99, 0x03].into(),
    ))
    .await
    .unwrap();
    ws.send(Message::Binary(b"\x03\nexit 3\n".to_vec().into()))
        .await
        .unwrap();
    let (_, controls) = read_until(&mut ws, 10, |_, c| has(c, "closed")).await;
    let exit = controls
        .iter()
        .find(|c| c["type"] == "exit")
        .cloned()
        .unwrap_or_default();
    assert_eq!(exit["code"], 3, "{controls:?}");
    a.stop().await;
}

#[tokio::test]
async fn tickets_are_single_use_and_expire() {
    let sshd = Sshd::start(None);
    let a = Airlock::start(&config(&sshd, "")).await;
    let ops = a.token("olga", &["ops"], airlock::config::PrincipalKind::Human);
    let ticket = |a: &Airlock| {
        a.http
            .post(format!("{}/v1/connections/host/shell-tickets", a.base))
            .bearer_auth(&ops)
            .send()
    };
    let t: Value = ticket(&a).await.unwrap().json().await.unwrap();
    let t = t["ticket"].as_str().unwrap().to_string();
    let mut ws = connect(&a, None, &format!("?ticket={t}")).await.unwrap();
    ws.send(Message::Binary(b"exit 0\n".to_vec().into()))
        .await
        .unwrap();
    let _ = read_until(&mut ws, 10, |_, c| has(c, "closed")).await;
    assert_eq!(
        connect(&a, None, &format!("?ticket={t}")).await.err(),
        Some(401),
        "reuse"
    );
    let t: Value = ticket(&a).await.unwrap().json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        connect(
            &a,
            None,
            &format!("?ticket={}", t["ticket"].as_str().unwrap())
        )
        .await
        .err(),
        Some(401),
        "expired"
    );
    a.stop().await;
}

#[tokio::test]
async fn a_vanishing_client_ends_the_remote_shell_and_a_flood_is_back_pressured() {
    let sshd = Sshd::start(None);
    let a = Airlock::start(&config(&sshd, "")).await;
    let ops = a.token("olga", &["ops"], airlock::config::PrincipalKind::Human);
    let mut ws = connect(&a, Some(&ops), "").await.unwrap();
    ws.send(Message::Binary(b"sleep 57.25\n".to_vec().into()))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            std::process::Command::new("pgrep")
                .args(["-f", "sleep 57.25"])
                .status()
                .unwrap()
                .success()
        })
        .await
    );
    drop(ws);
    assert!(
        eventually(Duration::from_secs(10), || async {
            !std::process::Command::new("pgrep")
                .args(["-f", "sleep 57.25"])
                .status()
                .unwrap()
                .success()
        })
        .await,
        "the remote shell outlived its client"
    );
    // A flood of input into a reader: everything goes through, bounded, then the shell exits.
    let mut ws = connect(&a, Some(&ops), "").await.unwrap();
    ws.send(Message::Binary(
        b"stty -echo; echo READY-$((1+1)); cat > /dev/null; exit 5\n"
            .to_vec()
            .into(),
    ))
    .await
    .unwrap();
    let (out, _) = read_until(&mut ws, 10, |o, _| o.contains("READY-2")).await;
    assert!(out.contains("READY-2"), "{out}");
    // Pasted text: lines, as a terminal's line discipline expects them.
    let chunk: Vec<u8> = (0..64)
        .flat_map(|_| {
            let mut line = vec![b'x'; 1023];
            line.push(b'\n');
            line
        })
        .collect();
    for _ in 0..64 {
        ws.send(Message::Binary(chunk.clone().into()))
            .await
            .unwrap();
    }
    ws.send(Message::Binary(b"\n\x04".to_vec().into()))
        .await
        .unwrap();
    let (_, controls) = read_until(&mut ws, 30, |_, c| has(c, "closed")).await;
    // The flood went through and the session ended by itself: the shell's exit status, then
    // a close frame.
    let exit = controls
        .iter()
        .find(|c| c["type"] == "exit")
        .cloned()
        .unwrap_or_default();
    assert_eq!(exit["code"], 5, "{controls:?} {}", out_tail(&a).await);
    assert!(has(&controls, "closed"), "{controls:?}");
    a.stop().await;
}

#[tokio::test]
async fn terminate_shutdown_and_the_recording() {
    let sshd = Sshd::start(None);
    let a = Airlock::start(&config(&sshd, "")).await;
    let ops = a.token("olga", &["ops"], airlock::config::PrincipalKind::Human);
    let auditor = a.token("aud", &["auditors"], airlock::config::PrincipalKind::Human);
    let mut ws = connect(&a, Some(&ops), "").await.unwrap();
    ws.send(Message::Binary(b"echo typed-secret-xyz\n".to_vec().into()))
        .await
        .unwrap();
    let _ = read_until(&mut ws, 10, |o, _| {
        o.matches("typed-secret-xyz").count() >= 2
    })
    .await;
    let (_, list) = a.get(&auditor, "/v1/sessions?limit=5").await;
    let id = list["sessions"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(list["sessions"][0]["kind"], "shell");
    let r = a
        .http
        .post(format!("{}/v1/sessions/{id}/terminate", a.base))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "only administrators terminate");
    let r = a
        .http
        .post(format!("{}/v1/sessions/{id}/terminate", a.base))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, controls) = read_until(&mut ws, 10, |_, c| has(c, "closed")).await;
    assert!(has(&controls, "terminated"), "{controls:?}");
    // The recording: output only (no input events), replayable.
    assert!(
        eventually(Duration::from_secs(5), || async {
            let (_, s) = a.get(&auditor, &format!("/v1/sessions/{id}")).await;
            s["status"] != "running"
        })
        .await
    );
    let cast = a.recording(&auditor, &id).await;
    assert!(
        cast.lines().skip(1).all(|l| !l.contains("\"i\"")),
        "input is not recorded by default"
    );
    let file = a.data.path().join("shell.cast");
    std::fs::write(&file, &cast).unwrap();
    let play = std::process::Command::new("asciinema")
        .args(["play", "-s", "100"])
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        play.status.success(),
        "{}",
        String::from_utf8_lossy(&play.stderr)
    );
    // Shutdown tells the client why before the close frame.
    let mut ws = connect(&a, Some(&ops), "").await.unwrap();
    let running = a.running.as_ref().unwrap().state.clone();
    running.gateway.shutdown.cancel();
    let (_, controls) = read_until(&mut ws, 10, |_, c| has(c, "closed")).await;
    assert!(has(&controls, "shutting_down"), "{controls:?}");
    a.stop().await;
}

async fn out_tail(a: &Airlock) -> String {
    let auditor = a.token("aud", &["auditors"], airlock::config::PrincipalKind::Human);
    let (_, page) = a.get(&auditor, "/v1/audit?limit=5").await;
    page.to_string()
}

/// An agent's keystrokes are recorded (masked) whatever `shells.record_input` says:
/// `stty -echo` must not hide from the auditor what an agent typed.
#[tokio::test]
async fn an_agents_keystrokes_are_recorded_masked_even_without_echo() {
    let sshd = Sshd::start(None);
    let rules = r#"
[[rules]]
id = "agent-shell"
action = "allow"
connections = ["host"]
principals = ["sub:dev/bot-1"]
match = { shell = true }

[[masking]]
connections = ["host"]
detectors = ["all"]
"#;
    let a = Airlock::start(&format!("{}\n{rules}", config(&sshd, ""))).await;
    let bot = a.token("bot-1", &[], airlock::config::PrincipalKind::Agent);
    let auditor = a.token("aud", &["auditors"], airlock::config::PrincipalKind::Human);
    let mut ws = connect(&a, Some(&bot), "").await.unwrap();
    for chunk in [
        &b"stty -echo\n"[..],
        b"echo hidden-",
        b"from-echo 4111-1111-",
        b"1111-1111 > /dev/null\n",
        b"exit 0\n",
    ] {
        ws.send(Message::Binary(chunk.to_vec().into()))
            .await
            .unwrap();
    }
    let _ = read_until(&mut ws, 10, |_, c| has(c, "closed")).await;
    let (_, list) = a.get(&auditor, "/v1/sessions?limit=5").await;
    let id = list["sessions"][0]["id"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(5), || async {
            let (_, s) = a.get(&auditor, &format!("/v1/sessions/{id}")).await;
            s["status"] != "running"
        })
        .await
    );
    let cast = a.recording(&auditor, &id).await;
    let typed: String = cast
        .lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e[1] == "i")
        .map(|e| e[2].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(typed.contains("stty -echo"), "{typed:?}");
    assert!(typed.contains("hidden-from-echo"), "{typed:?}");
    assert!(!typed.contains("4111-1111-1111-1111"), "{typed:?}");
    a.stop().await;
}
