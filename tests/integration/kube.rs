//! Kubernetes pod exec through Airlock, against the in-test API server double (no real
//! cluster can run here): the real kube client, the real pod-exec WebSocket protocol.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;
use crate::kube_double::{self, FakePod};

fn pod(ns: &str, name: &str, labels: &[(&str, &str)]) -> FakePod {
    FakePod {
        namespace: ns.into(),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        containers: vec!["app".into()],
    }
}

async fn start() -> (kube_double::KubeDouble, Airlock) {
    let double = kube_double::start(vec![
        pod("apps", "web-1", &[("tier", "web")]),
        pod("apps", "db-1", &[("tier", "db")]),
        pod("kube-system", "coredns-1", &[]),
        pod("batch", "web-2", &[("tier", "batch")]),
    ])
    .await;
    let var = format!("AIRLOCK_TEST_KUBE_TOKEN_{}", uuid::Uuid::new_v4().simple());
    // SAFETY: a unique variable set before the server reads it.
    unsafe { std::env::set_var(&var, &double.token) };
    let a = Airlock::start(&format!(
        r#"{DEV_ISSUER}
[[connections]]
name = "k8s"
kind = "kubernetes"
url = "{url}"
token = "env:{var}"
namespaces = ["*"]
pods = ["web-*"]
label_selector = "tier=web"

[[rules]]
builtin = "deny-compound-commands"

[[rules]]
id = "agents-k8s"
action = "allow"
connections = ["k8s"]
principals = ["group:agents"]
match = {{ programs = ["echo", "cat", "ls", "sleep", "printf"] }}

[[rules]]
id = "ops-k8s-shell"
action = "allow"
connections = ["k8s"]
principals = ["group:ops"]
match = {{ shell = true }}
"#,
        url = double.url
    ))
    .await;
    (double, a)
}

async fn exec(a: &Airlock, body: Value) -> (u16, Value) {
    let resp = a
        .http
        .post(format!("{}/v1/connections/k8s/exec", a.base))
        .bearer_auth(a.agent())
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap_or(Value::Null))
}

fn target(ns: &str, pod: &str) -> Value {
    json!({"namespace": ns, "pod": pod})
}

#[tokio::test]
async fn exec_in_a_pod_with_exit_codes_stderr_and_stdin() {
    let (_double, a) = start().await;
    let (s, b) = exec(
        &a,
        json!({"target": target("apps", "web-1"), "argv": ["echo", "from", "the pod"]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["stdout"], "from the pod\n");
    assert_eq!(b["exit_code"], 0);
    let (s, b) = exec(
        &a,
        json!({"target": target("apps", "web-1"), "argv": ["ls", "/definitely/missing"]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_ne!(b["exit_code"], 0, "{b}");
    assert!(!b["stderr"].as_str().unwrap_or("").is_empty(), "{b}");
    let (s, b) = exec(
        &a,
        json!({"target": target("apps", "web-1"), "argv": ["cat"], "stdin": "piped in\n"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["stdout"], "piped in\n");
    // Masking and the recording work as for SSH.
    let (s, b) = exec(
        &a,
        json!({"target": target("apps", "web-1"), "argv": ["echo", "card 4111-1111-1111-1111"]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    a.stop().await;
}

#[tokio::test]
async fn pods_outside_what_is_allowed_are_not_reachable() {
    let (_double, a) = start().await;
    for (ns, pod) in [
        ("apps", "missing-1"),
        ("apps", "web-404"),
        ("kube-system", "coredns-1"),
        ("apps", "db-1"),
        ("batch", "web-2"),
    ] {
        let (s, b) = exec(
            &a,
            json!({"target": target(ns, pod), "argv": ["echo", "x"]}),
        )
        .await;
        assert_eq!(s, 404, "{ns}/{pod}: {b}");
    }
    // A target is required, and compound commands never run.
    let (s, _) = exec(&a, json!({"argv": ["echo", "x"]})).await;
    assert_eq!(s, 400);
    let (s, b) = exec(
        &a,
        json!({"target": target("apps", "web-1"), "command": "echo x; rm -rf /"}),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    a.stop().await;
}

#[tokio::test]
async fn a_timeout_ends_the_command_in_the_pod() {
    let (_double, a) = start().await;
    let (s, b) = exec(
        &a,
        json!({"target": target("apps", "web-1"), "argv": ["sleep", "41.75"], "timeout_ms": 600}),
    )
    .await;
    assert_eq!(s, 504, "{b}");
    let gone = eventually(Duration::from_secs(5), || async {
        !std::process::Command::new("pgrep")
            .args(["-f", "sleep 41.75"])
            .status()
            .unwrap()
            .success()
    })
    .await;
    assert!(gone, "the command kept running after the timeout");
    a.stop().await;
}

#[tokio::test]
async fn an_interactive_shell_in_a_pod() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let (_double, a) = start().await;
    let ops = a.token("olga", &["ops"], airlock::config::PrincipalKind::Human);
    let url = format!(
        "{}/v1/connections/k8s/shell?namespace=apps&pod=web-1",
        a.base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {ops}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    ws.send(Message::Binary(b"echo in-pod-$((2+3))\n".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(b"exit 4\n".to_vec().into()))
        .await
        .unwrap();
    let mut out = String::new();
    let mut exit = Value::Null;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
        match m {
            Message::Binary(b) => out.push_str(&String::from_utf8_lossy(&b)),
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                if v["type"] == "exit" {
                    exit = v;
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(out.contains("in-pod-5"), "{out}");
    assert_eq!(exit["code"], 4, "{out}");
    // Without namespace and pod the shell is refused before the upgrade.
    let url = format!(
        "{}/v1/connections/k8s/shell",
        a.base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {ops}").parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    a.stop().await;
}
