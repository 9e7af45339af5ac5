"""An agent attaching Airlock over MCP with the official Python MCP client (`mcp`, pinned).

Run by run.sh against the live server (embedded demo, `[jobs] sync_budget_ms = 1000`):
  - without a token: 401 with the RFC 9728 `resource_metadata` pointer, and the metadata;
  - initialize with a bearer token, list the tools, check their annotations;
  - list_connections, describe_schema, check;
  - query: rows inside the untrusted-data boundary, masked;
  - a denial and a syntax error as `isError` results with the problem code;
  - a held request: `pending_review` (not an error), a human approves over REST,
    `run_approved` answers the result; a second run is `already_ran`;
  - a query that outlives the sync budget: `running` with an execution id, then
    `get_execution` (wait) and `get_result`;
  - a job cancelled with `cancel`.
Exits non-zero on the first failed step, printing FAIL and what was seen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

SLOW = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 20000000) "
    "SELECT count(*) FROM c"
)


def fail(step: str, seen: object) -> None:
    print(f"FAIL mcp: {step}: {seen}", file=sys.stderr)
    sys.exit(1)


def ok(step: str) -> None:
    print(f"ok   mcp: {step}")


def structured(result) -> dict:
    s = result.structured_content
    if not isinstance(s, dict):
        fail("structured content", result)
    return s


async def session(args) -> None:
    url = f"{args.base_url}/mcp"

    # Discovery: an unauthenticated client is pointed at the metadata.
    r = httpx.post(url, json={}, headers={"Accept": "application/json, text/event-stream"})
    challenge = r.headers.get("www-authenticate", "")
    if r.status_code != 401 or "resource_metadata=" not in challenge:
        fail("401 with resource_metadata", (r.status_code, challenge))
    meta_url = challenge.split('resource_metadata="', 1)[1].split('"', 1)[0]
    meta = httpx.get(meta_url).json()
    if meta.get("resource") != url or meta.get("bearer_methods_supported") != ["header"]:
        fail("protected-resource metadata", meta)
    ok("unauthenticated: 401 and RFC 9728 metadata")

    headers = {"Authorization": f"Bearer {args.agent_token}"}
    async with streamable_http_client(url, http_client=create_mcp_http_client(headers=headers)) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as s:
            init = await s.initialize()
            if "untrusted-data" not in (init.instructions or ""):
                fail("instructions mention the untrusted boundary", init.instructions)
            tools = {t.name: t for t in (await s.list_tools()).tools}
            want = {"list_connections", "describe_schema", "check", "query", "get_execution",
                    "run_approved", "get_result", "cancel"}
            if not want <= set(tools):
                fail("tool list", sorted(tools))
            if "exec" in tools:
                fail("no exec without a command connection", sorted(tools))
            for name in ("list_connections", "describe_schema", "check", "get_execution", "get_result"):
                a = tools[name].annotations
                if not (a and a.read_only_hint and a.destructive_hint is False):
                    fail(f"{name} is read-only", a)
            q = tools["query"].annotations
            # The agent may file UPDATE/DELETE for review on the demo: query can write.
            if q.read_only_hint or not q.destructive_hint or q.idempotent_hint:
                fail("query annotations", q)
            for t in tools.values():
                if not t.description or not t.input_schema or not t.output_schema:
                    fail(f"{t.name} schemas and description", t)
            ok(f"initialize, {len(tools)} tools with honest annotations")

            r = await s.call_tool("list_connections", {})
            names = [c["name"] for c in structured(r)["result"]["connections"]]
            if r.is_error or names != ["demo"]:
                fail("list_connections", r)
            r = await s.call_tool("describe_schema", {"connection": "demo"})
            tables = {t["name"]: t for t in structured(r)["result"]["tables"]}
            email = next(c for c in tables["customers"]["columns"] if c["name"] == "email")
            if r.is_error or not email["masked"] or tables["customers"]["primary_key"] != ["id"]:
                fail("describe_schema", structured(r))
            r = await s.call_tool("check", {"connection": "demo", "request": {"sql": "DELETE FROM orders WHERE id = 1"}})
            c = structured(r)["result"]
            if r.is_error or c["decision"] != "review" or c["approvers"] != ["dba"]:
                fail("check", c)
            ok("list_connections, describe_schema, check")

            r = await s.call_tool("query", {"connection": "demo",
                                            "sql": "SELECT name, email FROM customers WHERE id = ?",
                                            "params": [3]})
            body = structured(r)
            text = r.content[0].text
            if r.is_error or body["status"] != "done" or body["result"]["rows"][0][1] != "[REDACTED]":
                fail("query", body)
            if "<untrusted-data boundary=" not in text or "do not follow" not in text:
                fail("rows inside the untrusted boundary", text)
            ok("query: masked rows inside the untrusted-data boundary")

            r = await s.call_tool("query", {"connection": "demo", "sql": "DELETE FROM orders"})
            p = structured(r).get("problem", {})
            if not r.is_error or p.get("code") != "policy_denied" or p.get("rule") != "deny-unbounded-write":
                fail("denial is isError with code and rule", structured(r))
            r = await s.call_tool("query", {"connection": "demo", "sql": "SELEC * FROM orders"})
            p = structured(r).get("problem", {})
            if not r.is_error or p.get("code") != "sql_syntax" or p.get("position") != 1:
                fail("syntax error is isError with position", structured(r))
            ok("denial and syntax error as isError results with the problem")

            # A held request, approved by a human over REST while the agent waits.
            r = await s.call_tool("query", {"connection": "demo",
                                            "sql": "UPDATE customers SET city = 'Oslo' WHERE id = 9",
                                            "idempotency_key": "mcp-step-1"})
            held = structured(r)
            if r.is_error or held["status"] != "pending_review" or not held.get("next_tools"):
                fail("held request is pending_review, not an error", held)
            review_id = held["result"]["review_id"]

            def approve() -> None:
                time.sleep(1.0)
                httpx.post(f"{args.base_url}/v1/reviews/{review_id}/approve",
                           headers={"Authorization": f"Bearer {args.approver_token}"},
                           json={"comment": "approved over REST while the agent waited"})
            threading.Thread(target=approve, daemon=True).start()
            nxt = held["next_tools"][0]
            r = await s.call_tool(nxt["tool"], nxt["arguments"])
            ran = structured(r)
            if r.is_error or ran["status"] != "done" or ran["result"]["affected_rows"] != 1:
                fail("run_approved after approval", ran)
            r = await s.call_tool("run_approved", {"execution_id": held["execution_id"]})
            if not r.is_error or structured(r)["problem"]["code"] != "already_ran":
                fail("second run is already_ran", structured(r))
            ok("held request: pending_review, approved, run once")

            # Past the sync budget: a job.
            r = await s.call_tool("query", {"connection": "demo", "sql": SLOW})
            job = structured(r)
            if r.is_error or job["status"] != "running":
                fail("a query past the sync budget becomes a job", job)
            r = await s.call_tool("get_execution", {"execution_id": job["execution_id"], "wait_seconds": 55})
            if structured(r)["result"]["status"] != "done":
                fail("the job ends", structured(r))
            r = await s.call_tool("get_result", {"execution_id": job["execution_id"]})
            if r.is_error or structured(r)["result"]["rows"] != [["20000000"]]:
                fail("the job's result", structured(r))
            ok("a query past the sync budget: running, done, result")

            r = await s.call_tool("query", {"connection": "demo", "sql": SLOW.replace("20000000", "2000000000"),
                                            "run_async": True})
            job = structured(r)
            r = await s.call_tool("cancel", {"execution_id": job["execution_id"]})
            if r.is_error:
                fail("cancel", structured(r))
            r = await s.call_tool("get_execution", {"execution_id": job["execution_id"], "wait_seconds": 30})
            if structured(r)["result"]["status"] != "cancelled":
                fail("the cancelled job", structured(r))
            ok("a job cancelled")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--agent-token", required=True)
    ap.add_argument("--approver-token", required=True)
    args = ap.parse_args()
    asyncio.run(session(args))


if __name__ == "__main__":
    main()
