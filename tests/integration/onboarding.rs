//! First steps with the dev issuer: `airlock token` signs only with the server's own key and
//! says where it looked when there is none; a token signed by another key gets a 401 that
//! says so; groups the issuer would drop are named when the token is minted; an issuer
//! without `allowed_groups` is called out at startup.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use airlock::config::PrincipalKind;
use airlock::identity::dev::DevIssuer;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_airlock");

fn demo_config() -> String {
    airlock::config::EMBEDDED_DEFAULT
        .replace("listen = \"127.0.0.1:8080\"", "")
        .replace("[server]\n", "")
}

/// `airlock token` with the embedded config, whatever the environment says.
fn token_command(data: &Path, groups: &str) -> Output {
    Command::new(BIN)
        .env_remove("AIRLOCK_CONFIG")
        .env_remove("AIRLOCK_DATA_DIR")
        .env("RUST_LOG", "warn")
        .args(["token", "--sub", "agent-7", "--groups", groups])
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

#[test]
fn token_never_creates_a_key_and_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("elsewhere");
    let out = token_command(&data, "agents");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no token is printed");
    let err = String::from_utf8_lossy(&out.stderr);
    let key = DevIssuer::key_path(&data);
    assert!(
        err.contains(&format!("no dev issuer key at {}", key.display())),
        "{err}"
    );
    assert!(
        err.contains("--data-dir") && err.contains("AIRLOCK_DATA_DIR"),
        "{err}"
    );
    assert!(err.contains("start the server"), "{err}");
    assert!(!key.exists() && !data.exists(), "nothing was created");
}

#[tokio::test]
async fn a_token_signed_with_another_data_dirs_key_gets_a_401_that_says_why() {
    let a = Airlock::start(&demo_config()).await;
    // A key of its own, as `airlock token` run elsewhere used to create.
    let elsewhere = tempfile::tempdir().unwrap();
    let stray = mint(
        elsewhere.path(),
        "agent-1",
        &["agents"],
        PrincipalKind::Agent,
        None,
    );
    let (status, body) = a.get(&stray, "/v1/connections").await;
    assert_eq!(status, 401, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("different dev key"), "{detail}");
    assert!(
        detail.contains("airlock token") && detail.contains("data dir"),
        "{detail}"
    );
    assert!(
        !detail.contains(&elsewhere.path().display().to_string())
            && !detail.contains(&a.data.path().display().to_string()),
        "no path is disclosed: {detail}"
    );

    // The command, given the server's data directory, signs with the server's key.
    let out = token_command(a.data.path(), "agents");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (status, body) = a.get(&token, "/v1/connections").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connections"][0]["name"], "demo");
    a.stop().await;
}

#[tokio::test]
async fn token_names_the_groups_the_issuer_would_drop() {
    let a = Airlock::start(&demo_config()).await;
    // The embedded dev issuer allows agents, dba and auditors.
    let out = token_command(a.data.path(), "agents,wizards,dba,root-*");
    assert!(out.status.success(), "a warning, not a refusal");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("group(s) wizards, root-* from"), "{err}");
    assert!(
        err.contains("allows only agents, dba, auditors") && err.contains("allowed_groups"),
        "{err}"
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(
        token.split('.').count(),
        3,
        "a JWT is still printed: {token}"
    );
    // The warning is right: the server keeps only the allowed groups (the demo's agents may
    // read it; a principal left with no allowed group could not see it).
    let (status, body) = a.get(&token, "/v1/connections").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connections"][0]["name"], "demo");
    let out = token_command(a.data.path(), "wizards");
    let dropped_all = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (_, body) = a.get(&dropped_all, "/v1/connections").await;
    assert_eq!(body["connections"].as_array().unwrap().len(), 0, "{body}");

    // Only allowed groups: nothing to say.
    let out = token_command(a.data.path(), "agents,dba");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("warning"), "{err}");
    a.stop().await;
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_issuer_without_allowed_groups_is_called_out_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("airlock.toml");
    let no_groups = DEV_ISSUER.replace("allowed_groups = [\"*\"]\n", "");
    assert!(!no_groups.contains("allowed_groups"));
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n{no_groups}"),
    )
    .unwrap();
    let mut child = Child(
        Command::new(BIN)
            .env_remove("AIRLOCK_LISTEN")
            .env("RUST_LOG", "warn")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    // Read on a thread: a server that never logs must not hang the test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut seen = Vec::new();
    let warning = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no warning: {seen:#?}"
        );
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains("has no allowed_groups") => break line,
            Ok(line) => seen.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("airlock exited without the warning: {seen:#?}")
            }
        }
    };
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains("issuer `dev`") && warning.contains("will be ignored"),
        "{warning}"
    );
    assert!(warning.contains("`allowed_groups`"), "{warning}");
}
