#!/usr/bin/env bash
# The API-contract stage of scripts/test: checks openapi/openapi.json and the live server
# against each other, with third-party tools that know nothing about Airlock.
#
#   1. spec      openapi-spec-validator on the committed spec; the served /openapi.json must
#                be the same document.
#   2. ts        openapi-typescript generates types; usage.ts must type-check (tsc, strict).
#   3. python    openapi-python-client generates a client; agent_session.py drives a scripted
#                agent session with it against the live server (queries, a typed 403, the
#                review flows, the audit log, an NDJSON stream).
#   4. fuzz      schemathesis, bounded, against the live server: no 5xx, no undeclared status,
#                bodies and content types as declared, invalid input rejected, valid accepted.
#   5. mcp       the official Python MCP client (mcp_session.py) attaches to /mcp as an agent:
#                discovery, tools and annotations, queries, isError results, a review flow,
#                a job past the sync budget, a cancelled job.
#
# The server is the binary `cargo build --locked` makes (target/debug/airlock; AIRLOCK_BIN
# overrides), on the embedded quick-start config with a one-second sync budget (so that a
# job is quick to make), in a temporary directory, on a free loopback port. Tools are pinned (requirements.txt, package-lock.json) and installed once
# into target/contract/ (reinstalled when a pin changes).
#
# Run alone: tests/contract/run.sh   (CONTRACT_FUZZ_EXAMPLES=N changes the fuzzing depth)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
cache="$repo/target/contract"
started=$(date +%s)
say() { echo "-- contract [$(( $(date +%s) - started ))s] $*"; }
# Setup problems stop the stage at once (die); a check that fails is recorded (failed) and
# the later checks still run, so one run shows every problem.
passed=0
failed=()
die() {
  echo "error: contract stage: $*" >&2
  echo "contract: $passed passed, $(( ${#failed[@]} + 1 )) failed"
  exit 1
}
check_failed() {
  echo "error: contract stage: $*" >&2
  failed+=("$*")
}

# --- prerequisites -------------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 (3.10 or newer) is needed: apt-get install -y python3 python3-venv"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
  die "python3 is $(python3 -V 2>&1); 3.10 or newer is needed"
python3 -c 'import venv, ensurepip' 2>/dev/null || die "python3 cannot make virtual environments: apt-get install -y python3-venv"
command -v node >/dev/null && command -v npm >/dev/null || die "node (18 or newer) and npm are needed: apt-get install -y nodejs npm"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 18 ? 1 : 0)' ||
  die "node is $(node --version); 18 or newer is needed"

bin="${AIRLOCK_BIN:-}"
if [ -z "$bin" ]; then
  say "building the server (cargo build --locked)"
  cargo build --locked --quiet --bin airlock || die "cargo build failed"
  bin="$repo/target/debug/airlock"
fi
[ -x "$bin" ] || die "no server binary at $bin"

# --- pinned tools, installed once into target/contract -------------------------------------
# A stamp of the pin files (and the interpreter) says whether the installed copy is current.
mkdir -p "$cache"
stamp() { cat "$@" | sha256sum | cut -c1-16; }
# One install at a time: runs of the stage may overlap in a shared target/.
exec 9>"$cache/.install.lock"
flock 9

venv="$cache/venv"
want="$(stamp "$here/requirements.txt" <(python3 -VV))"
if [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python tools (requirements.txt) into target/contract/venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv failed"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" ||
    die "pip could not install tests/contract/requirements.txt"
  echo "$want" > "$venv/.stamp"
fi

node_dir="$cache/node"
want="$(stamp "$here/package.json" "$here/package-lock.json" <(node --version))"
if [ "$(cat "$node_dir/.stamp" 2>/dev/null)" != "$want" ]; then
  say "installing npm tools (package-lock.json) into target/contract/node"
  rm -rf "$node_dir"
  mkdir -p "$node_dir"
  cp "$here/package.json" "$here/package-lock.json" "$here/.npmrc" "$node_dir/"
  (cd "$node_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null) ||
    die "npm ci failed in target/contract/node"
  echo "$want" > "$node_dir/.stamp"
fi
flock -u 9
py="$venv/bin/python"
nbin="$node_dir/node_modules/.bin"

# --- the server ----------------------------------------------------------------------------
# Its data directory (store, demo database, dev signing key) lives in a temporary directory,
# never in the repo; `airlock token` reads the same key through the same --data-dir.
tmp="$(mktemp -d "${TMPDIR:-/tmp}/airlock-contract.XXXXXX")"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
# The quick-start configuration, with a sync budget a test can outlive in seconds.
{ cat "$repo/src/default_config.toml"; printf '\n[jobs]\nsync_budget_ms = 1000\n'; } >"$tmp/config.toml"
airlock() { (cd "$tmp" && env -u AIRLOCK_CONFIG -u AIRLOCK_LISTEN "$bin" --config "$tmp/config.toml" --data-dir "$tmp/data" "$@"); }

say "starting the server on $base"
(cd "$tmp" && exec env -u AIRLOCK_CONFIG RUST_LOG=warn "$bin" --config "$tmp/config.toml" --data-dir "$tmp/data" --listen "127.0.0.1:$port" serve \
  >"$tmp/server.log" 2>&1) &
server_pid=$!
server_log() { # its warnings and errors, without the start-up banner
  echo "---- server log (warnings and errors, last 40) ----" >&2
  grep -E 'WARN|ERROR|panicked' "$tmp/server.log" | tail -n 40 >&2 || true
}
"$py" - "$base" "$server_pid" <<'EOF' || { server_log; die "the server did not become ready"; }
import os, sys, time, httpx
base, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("the server exited")
    try:
        if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
            sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(0.2)
sys.exit("no 200 from /readyz within 60 s")
EOF

agent_token="$(airlock token --sub agent-1 --groups agents)"
approver_token="$(airlock token --sub alice --groups dba --kind human)"
auditor_token="$(airlock token --sub carol --groups auditors --kind human)"

# --- 1. the spec ---------------------------------------------------------------------------
spec="$repo/openapi/openapi.json"
say "1/5 spec: openapi-spec-validator"
if ! "$venv/bin/openapi-spec-validator" --validation-errors all "$spec"; then
  check_failed "spec: openapi/openapi.json is not a valid OpenAPI document (see above)"
elif ! "$py" - "$base" "$spec" <<'EOF'; then
import json, sys, httpx
served = httpx.get(f"{sys.argv[1]}/openapi.json", timeout=10).json()
committed = json.load(open(sys.argv[2]))
def diff(a, b, at=""):  # the JSON pointers where the two documents differ
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            yield from diff(a.get(k), b.get(k), f"{at}/{k}") if k in a and k in b else [f"{at}/{k}"]
    elif a != b:
        yield at or "/"
where = list(diff(served, committed))
for w in where[:10]:
    print(f"  differs at {w}", file=sys.stderr)
sys.exit(1 if where else 0)
EOF
  check_failed "spec: the served /openapi.json differs from openapi/openapi.json; regenerate it: AIRLOCK_UPDATE_OPENAPI=1 cargo test --locked --test integration openapi"
else
  passed=$((passed + 1))
fi

# --- 2. TypeScript -------------------------------------------------------------------------
say "2/5 ts: openapi-typescript, then tsc --noEmit (strict) on usage.ts"
# Generated code goes to this run's temporary directory (runs may overlap); the outputs are
# copied to target/contract/last/ at the end, to read after a failure.
ts="$tmp/ts"
mkdir -p "$ts"
cp "$here/usage.ts" "$here/tsconfig.json" "$ts/"
ln -s "$node_dir/node_modules" "$ts/node_modules"
if ! "$nbin/openapi-typescript" "$spec" --output "$ts/airlock.ts" --silent; then
  check_failed "ts: openapi-typescript could not generate types from openapi/openapi.json"
elif ! (cd "$ts" && "$nbin/tsc" -p tsconfig.json); then
  check_failed "ts: usage.ts does not type-check against the generated types (target/contract/last/ts/airlock.ts)"
else
  passed=$((passed + 1))
fi

# --- 3. Python client and the agent session ------------------------------------------------
say "3/5 python: openapi-python-client, then the agent session"
gen="$tmp/python-client"
mkdir -p "$gen"
if ! "$venv/bin/openapi-python-client" generate --path "$spec" --meta none --output-path "$gen/airlock_client" \
  --config "$here/openapi-python-client.yaml" --overwrite --fail-on-warning >"$tmp/generate.log" 2>&1; then
  cat "$tmp/generate.log" >&2
  check_failed "python: openapi-python-client could not generate a client without warnings"
elif ! "$py" "$here/agent_session.py" --base-url "$base" --client-dir "$gen" \
  --agent-token "$agent_token" --approver-token "$approver_token" --auditor-token "$auditor_token" \
  --ids-out "$tmp/ids.json"; then
  server_log
  check_failed "python: the agent session failed (see FAIL above)"
else
  passed=$((passed + 1))
fi

# --- 4. schemathesis -----------------------------------------------------------------------
# Two passes: every operation as the agent; then, as the auditor, the operations that only
# administrators get past 403 with (audit log, all reviews, sessions). Checks and the few
# per-operation expectations are in schemathesis.toml. `timeout` is a hard cap.
fuzz_failed=()
fuzz() { # name token [schemathesis filters...]
  local name="$1" token="$2"; shift 2
  local status=0
  # From the temporary directory, so that nothing it writes lands in the work tree.
  (cd "$tmp" && timeout 120 "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run "$spec" \
    --url "$base" -H "Authorization: Bearer $token" "$@" \
    --max-examples "${CONTRACT_FUZZ_EXAMPLES:-50}" --seed "${CONTRACT_FUZZ_SEED:-1}" \
    --report junit --report-dir "$tmp/schemathesis/$name" --no-color) || status=$?
  if [ "$status" -eq 124 ]; then
    fuzz_failed+=("$name: did not finish within 120 s")
  elif [ "$status" -ne 0 ]; then
    fuzz_failed+=("$name: contract violations (listed above, each with a curl to reproduce)")
  fi
}
# schemathesis.toml points the id-taking operations at the session's reviewed run (ids that
# do not exist, if the session did not get that far).
[ -s "$tmp/ids.json" ] || echo '{"execution_id": "no-such-execution", "review_id": "no-such-review"}' >"$tmp/ids.json"
CONTRACT_EXECUTION_ID="$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["execution_id"])' "$tmp/ids.json")"
CONTRACT_REVIEW_ID="$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["review_id"])' "$tmp/ids.json")"
export CONTRACT_EXECUTION_ID CONTRACT_REVIEW_ID
say "4/5 fuzz: schemathesis as the agent, every operation"
fuzz agent "$agent_token"
say "4/5 fuzz: schemathesis as the auditor, audit/reviews/sessions"
fuzz auditor "$auditor_token" --include-tag audit --include-tag reviews --include-tag sessions
if [ ${#fuzz_failed[@]} -gt 0 ]; then
  server_log
  for f in "${fuzz_failed[@]}"; do check_failed "fuzz: schemathesis as the $f"; done
else
  passed=$((passed + 1))
fi

# --- 5. MCP ---------------------------------------------------------------------------------
say "5/5 mcp: the Python MCP client against /mcp"
if "$py" "$here/mcp_session.py" --base-url "$base" --agent-token "$agent_token" \
  --approver-token "$approver_token"; then
  passed=$((passed + 1))
else
  server_log
  check_failed "mcp: the MCP session failed (see FAIL above)"
fi

# What this run generated, for reading after it: TypeScript types, the Python client,
# schemathesis's JUnit reports.
rm -rf "$cache/last" && mkdir -p "$cache/last"
cp -r "$ts" "$gen" "$tmp/schemathesis" "$cache/last/" 2>/dev/null || true
rm -f "$cache/last/ts/node_modules"

if [ ${#failed[@]} -gt 0 ]; then
  say "FAILED"
  printf '  - %s\n' "${failed[@]}" >&2
  echo "contract: $passed passed, ${#failed[@]} failed"
  exit 1
fi
say "done"
echo "contract: $passed passed, 0 failed"
