#!/usr/bin/env bash
# The console stage of scripts/test: the approver console at /console in a real browser.
#
# Starts, each on a free loopback port in a temporary directory:
#   - an OpenSSH server with keys generated for this run (the `box` connection: an agent's
#     command there leaves a recording to replay);
#   - an OIDC provider double (oidc_double.py: discovery, JWKS, authorize with a login page,
#     token with PKCE S256 and client_secret_basic), the issuer `corp`;
#   - the server, from the binary `cargo build --locked` makes (target/debug/airlock;
#     AIRLOCK_BIN overrides), on console.toml.in filled in with those addresses;
# then runs browser_session.py: headless Debian chromium driven by Playwright through dev,
# one-time link and OIDC sign-in, approving and rejecting held requests, live updates, the
# audit search and a session replay, a cookie leaked to another loopback port, and
# plain-HTTP checks of the security envelope (CSP, CSRF on every call, cookie scope). The
# server's log is passed along: its startup banner has the one-time sign-in link.
# Screenshots land in target/console/artifacts/ (with the server's log after a run).
#
# Tools are pinned (requirements.txt) and installed once into target/console/venv
# (reinstalled when a pin changes). The browser is Debian's chromium, never a download.
#
# Run alone: tests/console/run.sh   (CONSOLE_ONLY=dev,approve runs some scenarios)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
called_from="$PWD"
cd "$repo"
cache="$repo/target/console"
artifacts="$cache/artifacts"
chromium="${CONSOLE_CHROMIUM:-/usr/bin/chromium}"
started=$(date +%s)
say() { echo "-- console [$(( $(date +%s) - started ))s] $*"; }
# A setup problem stops the stage at once, counted as one failure: never a silent skip.
die() {
  echo "error: console stage: $*" >&2
  echo "console: 0 passed, 1 failed"
  exit 1
}

# --- prerequisites -------------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 (3.10 or newer) is needed: apt-get install -y python3 python3-venv"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
  die "python3 is $(python3 -V 2>&1); 3.10 or newer is needed"
python3 -c 'import venv, ensurepip' 2>/dev/null || die "python3 cannot make virtual environments: apt-get install -y python3-venv"
[ -x "$chromium" ] || die "no chromium at $chromium; the stage drives Debian's: apt-get install -y chromium"
[ -x /usr/sbin/sshd ] || die "the OpenSSH server is needed: apt-get install -y openssh-server"
command -v ssh-keygen >/dev/null || die "ssh-keygen is needed: apt-get install -y openssh-client"

# The embedded terminal player must be exactly the pinned npm package (vendor.json).
say "checking the vendored asciinema-player against its pin (scripts/console-vendor)"
scripts/console-vendor >/dev/null || die "src/console/assets differ from the pinned asciinema-player; see scripts/console-vendor"

bin="${AIRLOCK_BIN:-}"
if [ -z "$bin" ]; then
  say "building the server (cargo build --locked)"
  cargo build --locked --quiet --bin airlock || die "cargo build failed"
  bin="$repo/target/debug/airlock"
fi
case "$bin" in /*) ;; *) bin="$called_from/$bin" ;; esac # the server runs in a temporary directory
[ -x "$bin" ] || die "no server binary at $bin"

# --- pinned tools, installed once into target/console --------------------------------------
mkdir -p "$cache"
stamp() { cat "$@" | sha256sum | cut -c1-16; }
exec 9>"$cache/.install.lock"
flock 9
venv="$cache/venv"
want="$(stamp "$here/requirements.txt" <(python3 -VV))"
if [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python tools (requirements.txt) into target/console/venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv failed"
  # Playwright's own browser downloads are never used (executable_path is Debian's chromium).
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$here/requirements.txt" || die "pip could not install tests/console/requirements.txt"
  echo "$want" > "$venv/.stamp"
fi
flock -u 9
py="$venv/bin/python"

# --- the services --------------------------------------------------------------------------
tmp="$(mktemp -d "${TMPDIR:-/tmp}/airlock-console.XXXXXX")"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  # What the services said, for reading after a run (the dev token in the server's banner
  # is signed by this run's key, and its sign-in link lived in this run's store: both go
  # with the temporary directory).
  mkdir -p "$artifacts"
  for f in server.log sshd.log oidc.log; do
    [ -f "$tmp/$f" ] && cp "$tmp/$f" "$artifacts/$f"
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { # name port pid
  local i
  for i in $(seq 1 100); do
    kill -0 "$3" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# sshd, logging in as the user running the stage, with keys made for this run.
say "starting sshd"
ssh_dir="$tmp/ssh"
mkdir -p "$ssh_dir"
ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/host_key" || die "ssh-keygen failed"
ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/client_key" || die "ssh-keygen failed"
cp "$ssh_dir/client_key.pub" "$ssh_dir/authorized_keys"
ssh_port="$(free_port)"
cat >"$ssh_dir/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $ssh_dir/host_key
PidFile $ssh_dir/sshd.pid
AuthorizedKeysFile $ssh_dir/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
LogLevel VERBOSE
EOF
mkdir -p /run/sshd 2>/dev/null || true
/usr/sbin/sshd -D -f "$ssh_dir/sshd_config" -E "$tmp/sshd.log" &
pids+=($!)
wait_port sshd "$ssh_port" "${pids[-1]}" || die "sshd did not start (see $artifacts/sshd.log)"
read -r key_type key_b64 _ <"$ssh_dir/host_key.pub"
known_host="[127.0.0.1]:$ssh_port $key_type $key_b64"

# The OIDC provider double; the server's port is chosen first (the redirect URI names it).
airlock_port="$(free_port)"
base="http://127.0.0.1:$airlock_port"
AIRLOCK_TEST_OIDC_SECRET="$("$py" -c 'import secrets; print(secrets.token_urlsafe(24))')"
export AIRLOCK_TEST_OIDC_SECRET
say "starting the OIDC provider double"
"$py" "$here/oidc_double.py" --port-file "$tmp/oidc.port" --client-id airlock-console \
  --redirect-uri "$base/console/callback" --client-secret-env AIRLOCK_TEST_OIDC_SECRET \
  --user 'carol:dba,auditors,staff' >"$tmp/oidc.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  [ -s "$tmp/oidc.port" ] && break
  kill -0 "${pids[-1]}" 2>/dev/null || break
  sleep 0.1
done
[ -s "$tmp/oidc.port" ] || { cat "$tmp/oidc.log" >&2; die "the OIDC double did not start"; }
oidc_port="$(cat "$tmp/oidc.port")"
idp="http://127.0.0.1:$oidc_port"

# The server's configuration.
"$py" - "$here/console.toml.in" "$tmp/config.toml" <<EOF || die "could not write the configuration"
import sys
text = open(sys.argv[1]).read()
for k, v in {
    "@AIRLOCK_PORT@": "$airlock_port",
    "@OIDC_PORT@": "$oidc_port",
    "@SSH_PORT@": "$ssh_port",
    "@SSH_USER@": "$(whoami)",
    "@SSH_KEY@": "$ssh_dir/client_key",
    "@SSH_KNOWN_HOST@": "$known_host",
}.items():
    text = text.replace(k, v)
import re
assert not re.search(r"@[A-Z_]+@", text), "unfilled placeholder"
open(sys.argv[2], "w").write(text)
EOF

say "starting the server on $base"
(cd "$tmp" && exec env -u AIRLOCK_CONFIG -u AIRLOCK_LISTEN RUST_LOG=warn "$bin" --config "$tmp/config.toml" \
  --data-dir "$tmp/data" --listen "127.0.0.1:$airlock_port" serve >"$tmp/server.log" 2>&1) &
pids+=($!)
server_pid="${pids[-1]}"
server_log() {
  echo "---- server log (warnings and errors, last 40) ----" >&2
  grep -E 'WARN|ERROR|panicked' "$tmp/server.log" | tail -n 40 >&2 || true
}
"$py" - "$base" "$server_pid" <<'EOF' || { server_log; tail -n 20 "$tmp/server.log" >&2; die "the server did not become ready"; }
import os, sys, time, urllib.request
base, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("the server exited")
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit("no 200 from /readyz within 60 s")
EOF

# --- the browser session -------------------------------------------------------------------
say "browser session (headless $("$chromium" --version 2>/dev/null | head -n1))"
mkdir -p "$artifacts"
status=0
"$py" "$here/browser_session.py" --base-url "$base" --idp-url "$idp" --airlock-bin "$bin" \
  --config "$tmp/config.toml" --data-dir "$tmp/data" --workdir "$tmp" --ssh-connection box \
  --artifacts "$artifacts" --chromium "$chromium" --results "$tmp/results.json" --server-log "$tmp/server.log" \
  ${CONSOLE_ONLY:+--only "$CONSOLE_ONLY"} || status=$?

if [ ! -s "$tmp/results.json" ]; then
  server_log
  die "browser_session.py ended (exit $status) without results"
fi
read -r passed failed names < <("$py" -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(len(r["passed"]), len(r["failed"]), ",".join(r["failed"]) or "-")' "$tmp/results.json")
if [ "$failed" -eq 0 ] && [ "$status" -ne 0 ]; then
  server_log
  die "browser_session.py exited $status with no failed scenario"
fi
if [ "$failed" -gt 0 ]; then
  server_log
  say "FAILED: $names (screenshots and logs in target/console/artifacts/)"
  echo "console: $passed passed, $failed failed"
  exit 1
fi
say "done (screenshots in target/console/artifacts/)"
echo "console: $passed passed, 0 failed"
