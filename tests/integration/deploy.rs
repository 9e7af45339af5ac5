//! The Dockerfile and fly.toml, checked against the binary: no container engine runs here
//! and base images cannot be pulled, so the image itself is never built in the tests. What
//! is checked instead: the stages, user, port, volume and command the Dockerfile declares,
//! the image's exact command line run against the binary the tests built (with the image's
//! environment, on loopback), and fly.toml's port, checks and release command against the
//! same binary.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_airlock");

fn repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One Dockerfile instruction: keyword and arguments, continuation lines joined.
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((keyword.to_ascii_uppercase(), args.trim().to_string()));
        current.clear();
    }
    out
}

/// The instructions of the stage named `name`.
fn stage(all: &[(String, String)], name: &str) -> Vec<(String, String)> {
    let mut in_stage = false;
    let mut out = Vec::new();
    for (keyword, args) in all {
        if keyword == "FROM" {
            in_stage = args.to_ascii_lowercase().ends_with(&format!(" as {name}"));
            continue;
        }
        if in_stage {
            out.push((keyword.clone(), args.clone()));
        }
    }
    out
}

fn values<'a>(stage: &'a [(String, String)], keyword: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|(k, _)| k == keyword)
        .map(|(_, a)| a.as_str())
        .collect()
}

/// `KEY=value` pairs of the stage's ENV instructions.
fn env_of(stage: &[(String, String)]) -> Vec<(String, String)> {
    values(stage, "ENV")
        .iter()
        .flat_map(|args| args.split_whitespace())
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `/readyz` on `port` to answer 200.
async fn ready(port: u16, child: &mut Child) -> bool {
    let http = reqwest::Client::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("airlock exited early: {status}");
        }
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && r.status() == 200
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_unprivileged_in_another() {
    let all = instructions(&repo_file("Dockerfile"));
    let froms = values(&all, "FROM");
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(froms[0].starts_with("rust:") && froms[0].ends_with(" AS builder"));
    assert!(froms[1].contains("-slim") && froms[1].ends_with(" AS runtime"));
    let builder = stage(&all, "builder");
    assert!(
        values(&builder, "RUN")
            .iter()
            .any(|r| r.contains("cargo build --release --locked --bin airlock")),
        "{builder:?}"
    );
    let runtime = stage(&all, "runtime");
    let user = values(&runtime, "USER");
    assert_eq!(user.len(), 1, "{runtime:?}");
    assert!(user[0] != "root" && user[0] != "0", "runs as {}", user[0]);
    assert!(
        values(&runtime, "RUN")
            .iter()
            .any(|r| r.contains("useradd --system") && r.contains(user[0])),
        "the user is created in the image"
    );
    assert_eq!(values(&runtime, "EXPOSE"), ["8080"]);
    assert_eq!(values(&runtime, "VOLUME"), ["[\"/data\"]"]);
    assert_eq!(values(&runtime, "CMD"), ["[\"airlock\", \"serve\"]"]);
    assert!(values(&runtime, "ENTRYPOINT").is_empty());
    let env = env_of(&runtime);
    assert!(
        env.contains(&("AIRLOCK_DATA_DIR".into(), "/data".into())),
        "{env:?}"
    );
    assert!(
        env.contains(&("AIRLOCK_LISTEN".into(), "0.0.0.0:8080".into())),
        "{env:?}"
    );
    // The binary reads each variable the image sets.
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for (key, _) in &env {
        assert!(
            help.contains(key.as_str()),
            "`airlock --help` does not name {key}"
        );
    }
    assert!(help.contains("AIRLOCK_CONFIG"));
}

/// The image's command line with the image's environment, except the listener, which must
/// be loopback here (and must be for the embedded config's dev issuer).
#[tokio::test]
async fn the_image_command_serves_with_the_image_environment() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let all = instructions(&repo_file("Dockerfile"));
    let cmd: Vec<String> = serde_json::from_str(values(&stage(&all, "runtime"), "CMD")[0]).unwrap();
    assert_eq!(cmd[0], "airlock");
    let child = Command::new(BIN)
        .args(&cmd[1..])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AIRLOCK_DATA_DIR", data.path())
        .env("AIRLOCK_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    assert!(ready(port, &mut running.0).await, "no /readyz on {port}");
}

/// A bare `airlock` (no subcommand) is `serve`, and honours `AIRLOCK_LISTEN` too.
#[tokio::test]
async fn a_bare_airlock_honours_airlock_listen() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(BIN)
        .env("AIRLOCK_DATA_DIR", data.path())
        .env("AIRLOCK_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("AIRLOCK_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    assert!(ready(port, &mut running.0).await, "no /readyz on {port}");
}

/// The image's listener with the embedded config fails closed, saying why.
#[test]
fn the_embedded_dev_issuer_is_refused_on_the_image_listener() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .env("AIRLOCK_DATA_DIR", data.path())
        .env("AIRLOCK_LISTEN", "0.0.0.0:0")
        .env_remove("AIRLOCK_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dev issuer") && err.contains("loopback"),
        "{err}"
    );
}

#[test]
fn fly_toml_matches_the_image_and_the_binary() {
    let fly: toml::Table = toml::from_str(&repo_file("fly.toml")).unwrap();
    let service = fly["http_service"].as_table().unwrap();
    let port = service["internal_port"].as_integer().unwrap();
    let all = instructions(&repo_file("Dockerfile"));
    assert_eq!(
        values(&stage(&all, "runtime"), "EXPOSE"),
        [port.to_string().as_str()]
    );
    let env = fly["env"].as_table().unwrap();
    assert_eq!(
        env["AIRLOCK_LISTEN"].as_str(),
        Some(format!("0.0.0.0:{port}").as_str())
    );
    // Scale to zero, with request-based concurrency.
    assert_eq!(service["min_machines_running"].as_integer(), Some(0));
    assert_eq!(service["auto_stop_machines"].as_str(), Some("stop"));
    assert_eq!(service["auto_start_machines"].as_bool(), Some(true));
    let concurrency = service["concurrency"].as_table().unwrap();
    assert_eq!(concurrency["type"].as_str(), Some("requests"));
    assert!(
        concurrency["soft_limit"].as_integer() <= concurrency["hard_limit"].as_integer(),
        "{concurrency:?}"
    );
    let checks = service["checks"].as_array().unwrap();
    assert!(checks.iter().any(|c| c["path"].as_str() == Some("/readyz")));
    // The readiness path is a route of the API.
    let spec: serde_json::Value = serde_json::from_str(&airlock::api::openapi_json()).unwrap();
    assert!(spec["paths"]["/readyz"]["get"].is_object());
    // The release command is a command of this binary.
    let release = fly["deploy"]["release_command"].as_str().unwrap();
    let argv: Vec<&str> = release.split_whitespace().collect();
    assert_eq!(argv, ["airlock", "migrate"]);
    let help = Command::new(BIN)
        .args(&argv[1..])
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success(), "`{release} --help` failed");
    // The config file fly ships is the one AIRLOCK_CONFIG names.
    let files = fly["files"].as_array().unwrap();
    assert!(
        files
            .iter()
            .any(|f| f["guest_path"].as_str() == env["AIRLOCK_CONFIG"].as_str())
    );
}

/// `/metrics` answers without a token, counts executions by outcome, and names no
/// principal or statement.
#[tokio::test]
async fn metrics_count_executions_and_name_no_one() {
    let embedded = airlock::config::EMBEDDED_DEFAULT
        .replace("listen = \"127.0.0.1:8080\"", "")
        .replace("[server]\n", "");
    let a = crate::common::Airlock::start(&embedded).await;
    let agent = a.token(
        "metrics-agent-7",
        &["agents"],
        airlock::config::PrincipalKind::Agent,
    );
    let (s, b) = a
        .query(
            &agent,
            "demo",
            serde_json::json!({"sql": "SELECT 1 AS secret_marker"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = a
        .query(
            &agent,
            "demo",
            serde_json::json!({"sql": "DROP TABLE customers"}),
        )
        .await;
    assert_eq!(s, 403);
    let resp = a
        .http
        .get(format!("{}/metrics", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.unwrap();
    let count = |labels: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(&format!("airlock_executions_total{{{labels}}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("operation=\"query\",outcome=\"ok\"") >= 1, "{text}");
    assert!(
        count("operation=\"query\",outcome=\"denied\"") >= 1,
        "{text}"
    );
    assert!(text.contains("airlock_ready 1"), "{text}");
    assert!(text.contains("# TYPE airlock_audit_batches_total counter"));
    assert!(!text.contains("metrics-agent-7") && !text.contains("secret_marker"));
    a.stop().await;
}
