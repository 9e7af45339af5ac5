"""The approver console in a real browser (headless Debian chromium, driven by Playwright),
against a live Airlock, an OIDC provider double and a real sshd (tests/console/run.sh
starts them all and passes their addresses here).

Selectors follow the console's DOM contract: roles, accessible names, labels and test ids,
never CSS classes. Every page is watched: an uncaught JS error or a Content Security Policy
violation fails the scenario it happened in. Each scenario saves full-page screenshots to
the artifacts directory (NN-name.png; NN-name-FAILED.png at a failure).

Scenarios (run in this order; --only picks some):
  double     the OIDC double itself refuses what it must (bad verifier, reused code, ...)
  dev        dev-token sign-in: form (agent and delegated tokens refused, human accepted),
             the session proof in localStorage (kept over a reload, a wrong one dropped), sign out
  link       the one-time sign-in link the server prints: ignored by a signed-in page, signs
             in dev/dba-1 once (fragment removed), refused the second time; #login-error=
             shows fixed wording only
  approve    an agent's held write appears live; approved with the keyboard; the agent's
             ?wait= ends, its run succeeds and it sees the comment
  reject     a held write with hostile/invisible characters, rejected with a reason; the
             agent gets 422 review_rejected with it
  invisible  U+2800 in a string literal is held and shown escaped with the warning (left to
             right, bidi overridden); outside a literal the server refuses the statement
  live       the review event stream is read with fetch() and the session proof, parsed by
             the page (reconnects after the stream ends), aborted when leaving the view
  audit      audit search by subject and connection; one execution's begin/end side by side
  replay     an SSH exec by the agent, replayed in the Sessions view (chain valid, output
             shown; the recording fetched with the session proof and given to the player)
  oidc       "Sign in with corp" through the double (PKCE), the session proof handed over in
             #session= and removed, cookie attributes, groups filtered, a replayed callback
             and a bogus one refused
  idtoken    plain HTTP: the server refuses ID tokens the double spoils on purpose (nonce,
             audience, issuer, expiry, signature, alg none, HS256 keyed with the public key)
  crossport  a page on another loopback port receives the console cookie (browsers send
             cookies to every port of a host); replayed alone it opens nothing
  security   plain HTTP: CSP, CSRF on every call (GET too), the cookie is no API credential,
             a bearer token is no console credential, sign-out kills the session
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

# The server's live update: an event stream read with fetch(), with a 10 s poll behind it.
LIVE_TIMEOUT_MS = 20_000
UI_TIMEOUT_MS = 10_000
# Where the page keeps the session proof (X-Airlock-CSRF), per origin.
CSRF_KEY = "airlock-console-csrf"
# The page's wording for the OIDC callback's error codes (/console/#login-error=CODE).
LOGIN_ERRORS = {
    "provider_error": "The identity provider refused the sign-in.",
    "expired": "This sign-in expired or was already used. Start again.",
    "other_browser": "This sign-in was started in another browser. Start again here.",
    "refused": "The identity provider's answer could not be verified.",
    "agents_not_allowed": "The console is for people; this account is an agent's.",
    "needs_public_url": "Sign-in with the identity provider is not configured for this address (console.public_url).",
    "unavailable": "The identity provider cannot be reached right now.",
    "not_configured": "There is no such sign-in here.",
}
LOGIN_FAILED = "Sign-in failed."


class Failed(Exception):
    pass


# --- plain HTTP (the agent, and the security checks) -----------------------------------------


@dataclass
class Resp:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def header_all(self, name: str) -> list[str]:
        return self.headers.get_all(name) or [] if self.headers is not None else []

    def __str__(self) -> str:
        ctype = self.headers.get("Content-Type", "") if self.headers is not None else ""
        return f"HTTP {self.status} {ctype}: {self.body[:500].decode('utf-8', 'replace')}"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(NoRedirect)


def http(
    method: str,
    url: str,
    *,
    token: str | None = None,
    cookie: str | None = None,
    headers: dict[str, str] | None = None,
    json_body: Any = None,
    form: dict[str, str] | None = None,
    timeout: float = 30,
) -> Resp:
    h = dict(headers or {})
    data = None
    if json_body is not None:
        data = json.dumps(json_body).encode()
        h.setdefault("Content-Type", "application/json")
    elif form is not None:
        data = urlencode(form).encode()
        h.setdefault("Content-Type", "application/x-www-form-urlencoded")
    if token:
        h["Authorization"] = f"Bearer {token}"
    if cookie:
        h["Cookie"] = cookie
    req = urllib.request.Request(url, data=data, headers=h, method=method)
    try:
        with _opener.open(req, timeout=timeout) as r:
            return Resp(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Resp(e.code, e.headers, e.read())


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Ctx:
    base: str
    idp: str
    airlock_bin: str
    config: str
    data_dir: str
    workdir: str
    oidc_client_id: str
    oidc_secret: str
    oidc_redirect: str
    ssh_connection: str
    artifacts: Path
    server_log: Path | None = None
    browser: Browser | None = None
    shot_no: int = 0
    # Errors the watched pages reported (JS errors, CSP violations), drained per scenario.
    page_errors: list[str] = field(default_factory=list)
    # Soft failures within the running scenario (it goes on, then fails).
    problems: list[str] = field(default_factory=list)
    # What one scenario leaves for the next (the signed-in dev page, ids).
    page: Page | None = None
    last_page: Page | None = None  # the page opened last: the one to photograph at a failure
    tokens: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    scenario: str = ""

    # -- tokens (`airlock token`, with the server's config and data directory) -------------------
    def token(self, sub: str, groups: str = "", kind: str = "agent", act: str | None = None) -> str:
        key = f"{sub}/{groups}/{kind}/{act or ''}"
        if key not in self.tokens:
            env = {k: v for k, v in os.environ.items() if k not in ("AIRLOCK_CONFIG", "AIRLOCK_LISTEN")}
            cmd = [self.airlock_bin, "--config", self.config, "--data-dir", self.data_dir, "token",
                   "--sub", sub, "--groups", groups, "--kind", kind]
            if act:
                cmd += ["--act", act]
            out = subprocess.run(cmd, cwd=self.workdir, env=env, capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise Failed(f"`airlock token --sub {sub}` failed: {out.stderr.strip()}")
            self.tokens[key] = out.stdout.strip()
        return self.tokens[key]

    def agent(self) -> str:
        return self.token("agent-1", "agents", "agent")

    # -- checks ---------------------------------------------------------------------------------
    def check(self, cond: bool, message: str) -> bool:
        if not cond:
            self.problems.append(message)
            print(f"    not ok: {message}", flush=True)
        return cond

    def require(self, cond: bool, message: str) -> None:
        if not cond:
            raise Failed(message)

    # -- pages ----------------------------------------------------------------------------------
    def new_context(self) -> BrowserContext:
        assert self.browser is not None
        context = self.browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
        context.set_default_timeout(UI_TIMEOUT_MS)
        # `securitypolicyviolation` also reports violations that print nothing to the console.
        # Init scripts are injected by the browser, not by the page, so the CSP does not stop them.
        context.add_init_script(
            "document.addEventListener('securitypolicyviolation', e => console.error("
            "'Content Security Policy violation: ' + e.violatedDirective + ' blocked ' + e.blockedURI"
            " + ' at ' + e.sourceFile + ':' + e.lineNumber), true);"
        )
        return context

    def new_page(self, context: BrowserContext) -> Page:
        page = context.new_page()

        def on_console(msg: Any) -> None:
            text = msg.text
            if "Content Security Policy" in text or "Content-Security-Policy" in text:
                self.page_errors.append(f"[{self.scenario}] CSP: {text} ({page.url})")

        def on_error(err: Any) -> None:
            self.page_errors.append(f"[{self.scenario}] JS error: {err} ({page.url})")

        page.on("console", on_console)
        page.on("pageerror", on_error)
        self.last_page = page
        return page

    def shot(self, page: Page, name: str) -> None:
        self.shot_no += 1
        path = self.artifacts / f"{self.shot_no:02d}-{name}.png"
        try:
            page.screenshot(path=str(path), full_page=True)
        except Exception as e:  # a screenshot is evidence, not the test
            print(f"    (screenshot {path.name} failed: {e})", flush=True)

    def console_fetch(self, page: Page, path: str, proof: bool = True) -> dict:
        """GET a console API path from inside the page (same origin, the page's cookie and,
        unless proof=False, the session proof the page keeps)."""
        return page.evaluate(
            """async ([path, key, proof]) => {
                const headers = {'Accept': 'application/json'};
                const token = localStorage.getItem(key);
                if (proof && token) headers['X-Airlock-CSRF'] = token;
                const r = await fetch(path, {headers});
                let body = null; try { body = await r.json(); } catch (e) {}
                return {status: r.status, body};
            }""",
            [path, CSRF_KEY, proof],
        )

    @staticmethod
    def stored_proof(page: Page) -> str | None:
        return page.evaluate("key => localStorage.getItem(key)", CSRF_KEY)

    def sign_in_link(self) -> str:
        """The one-time sign-in link the server printed on stderr at startup (its path)."""
        self.require(self.server_log is not None, "no --server-log: the sign-in link cannot be read")
        deadline = time.monotonic() + 15
        while True:
            text = self.server_log.read_text(errors="replace") if self.server_log.exists() else ""
            m = re.search(r"(/console/#sign-in=[A-Za-z0-9_.~%-]+)", text)
            if m:
                return m.group(1)
            if time.monotonic() > deadline:
                raise Failed("the server printed no /console/#sign-in= link (dev issuer and `demo` are configured)")
            time.sleep(0.2)

    def dev_sign_in(self, page: Page, token: str, whoami: str) -> None:
        """Signs in through the sign-in view's Dev token form."""
        page.goto(f"{self.base}/console/")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.get_by_label("Dev token").fill(token)
        page.get_by_role("button", name="Sign in with dev token").click()
        expect(page.get_by_test_id("whoami")).to_have_text(whoami)


def held_write(ctx: Ctx, sql: str, key: str | None = None) -> dict:
    """The agent sends a write to demo; it must be held (202 pending_review)."""
    headers = {"Idempotency-Key": key} if key else None
    r = http("POST", f"{ctx.base}/v1/connections/demo/query", token=ctx.agent(), json_body={"sql": sql}, headers=headers)
    ctx.require(r.status == 202, f"the agent's write was not held for review: {r}")
    b = r.json()
    ctx.require(b.get("status") == "pending_review" and b.get("execution_id") and b.get("review_id"),
                f"the 202 lacks status/execution_id/review_id: {b}")
    return b


def open_review(ctx: Ctx, page: Page, row_text: str, review_id: str) -> None:
    """Waits (no reload) for the review's row in the list, then opens it."""
    row = page.get_by_role("row").filter(has_text=row_text)
    expect(row.first, f"the review with {row_text!r} did not appear in the list without a reload").to_be_visible(
        timeout=LIVE_TIMEOUT_MS)
    opener = row.first.get_by_role("button", name=re.compile(r"^Open review")).or_(
        row.first.get_by_role("link", name=re.compile(r"^Open review")))
    expect(opener).to_have_count(1)
    # Keyboard: focus the control, Enter.
    opener.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=f"Review {review_id[-8:]}")).to_be_visible()
    # Short ids of UUIDv7 values share their first 8 characters for about a minute: the
    # full id tells which review is open.
    expect(page.get_by_role("region", name="Review detail")).to_contain_text(review_id)


def tab_to(page: Page, target: Any, what: str, max_tabs: int = 12) -> None:
    """Presses Tab until `target` has the focus (keyboard reachability), else fails."""
    handle = target.element_handle()
    for _ in range(max_tabs):
        if page.evaluate("el => document.activeElement === el", handle):
            return
        page.keyboard.press("Tab")
    if not page.evaluate("el => document.activeElement === el", handle):
        raise Failed(f"{what} is not reachable with Tab (from the previous control, {max_tabs} presses)")


def review_via_api(ctx: Ctx, review_id: str) -> dict:
    r = http("GET", f"{ctx.base}/v1/reviews/{review_id}", token=ctx.token("dana", "dba,auditors", "human"))
    ctx.require(r.status == 200, f"GET /v1/reviews/{review_id} as dana: {r}")
    return r.json()


# --- scenarios ----------------------------------------------------------------------------------


def scenario_double(ctx: Ctx) -> None:
    """The double is honest: it refuses what a real provider refuses."""
    idp = ctx.idp
    disc = http("GET", f"{idp}/.well-known/openid-configuration").json() or {}
    ctx.check(disc.get("issuer") == idp, f"discovery issuer {disc.get('issuer')!r} != {idp!r}")
    ctx.check(disc.get("code_challenge_methods_supported") == ["S256"], f"discovery: {disc}")
    jwks = http("GET", disc.get("jwks_uri", f"{idp}/jwks")).json() or {}
    kids = [k.get("kid") for k in jwks.get("keys", [])]
    ctx.require(len(kids) == 1 and kids[0], f"the JWKS has no single keyed RSA key: {jwks}")

    basic = "Basic " + base64.b64encode(f"{ctx.oidc_client_id}:{ctx.oidc_secret}".encode()).decode()

    def authorize(**over: str) -> tuple[Resp, str, str]:
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        params = {
            "response_type": "code", "client_id": ctx.oidc_client_id, "redirect_uri": ctx.oidc_redirect,
            "scope": "openid groups", "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
            "code_challenge": challenge, "code_challenge_method": "S256",
        }
        params.update(over)
        params = {k: v for k, v in params.items() if v is not None and v != "\x00"}
        return http("GET", f"{idp}/authorize?{urlencode(params)}"), verifier, params.get("nonce", "")

    def code(**over: str) -> tuple[str, str, str]:
        page, verifier, nonce = authorize(**over)
        ctx.require(page.status == 200, f"/authorize refused a good request: {page}")
        txn = re.search(rb'name="txn" value="([^"]+)"', page.body)
        ctx.require(txn is not None, "the login page has no transaction id")
        r = http("POST", f"{idp}/authorize/login", form={"txn": html.unescape(txn.group(1).decode()), "username": "carol"})
        ctx.require(r.status == 302, f"login: {r}")
        loc = urlsplit(r.headers["Location"])
        q = parse_qs(loc.query)
        ctx.require(f"{loc.scheme}://{loc.netloc}{loc.path}" == ctx.oidc_redirect and "code" in q,
                    f"login redirected to {r.headers['Location']}")
        return q["code"][0], verifier, nonce

    def redeem(c: str, verifier: str, redirect: str | None = None, auth: str | None = basic) -> Resp:
        form = {"grant_type": "authorization_code", "code": c, "redirect_uri": redirect or ctx.oidc_redirect,
                "code_verifier": verifier}
        return http("POST", f"{idp}/token", form=form, headers={"Authorization": auth} if auth else None)

    # /authorize: the client and redirect URI are checked before anything is redirected.
    r, _, _ = authorize(client_id="someone-else")
    ctx.check(r.status == 400, f"/authorize with an unknown client_id: {r.status}, want 400")
    r, _, _ = authorize(redirect_uri="http://127.0.0.1:1/evil")
    ctx.check(r.status == 400, f"/authorize with a foreign redirect_uri: {r.status}, want 400")
    for what, over in [("no code_challenge", {"code_challenge": "\x00"}),
                       ("plain PKCE", {"code_challenge_method": "plain"}),
                       ("no nonce", {"nonce": "\x00"}),
                       ("no state", {"state": "\x00"}),
                       ("no openid scope", {"scope": "groups"}),
                       ("response_type token", {"response_type": "token"})]:
        r, _, _ = authorize(**over)
        loc = r.headers.get("Location", "") if r.headers is not None else ""
        ctx.check(r.status == 302 and "error=invalid_request" in loc,
                  f"/authorize with {what}: {r.status} {loc}, want 302 error=invalid_request")

    def is_invalid_grant(r: Resp) -> bool:
        return r.status == 400 and (r.json() or {}).get("error") == "invalid_grant"

    # /token refusals.
    c, verifier, _ = code()
    r = redeem(c, "x" * 43)
    ctx.check(is_invalid_grant(r), f"/token with a wrong code_verifier: {r}, want 400 invalid_grant")
    r = redeem(c, verifier)
    ctx.check(is_invalid_grant(r), f"/token after a failed attempt with the same code: {r}, want 400 invalid_grant")

    c, verifier, _ = code()
    r = redeem(c, verifier, redirect=ctx.oidc_redirect + "x")
    ctx.check(is_invalid_grant(r), f"/token with another redirect_uri: {r}, want 400 invalid_grant")

    c, verifier, _ = code()
    r = redeem(c, verifier, auth=None)
    ctx.check(r.status == 401 and (r.json() or {}).get("error") == "invalid_client",
              f"/token without client authentication: {r}, want 401 invalid_client")
    bad = "Basic " + base64.b64encode(f"{ctx.oidc_client_id}:wrong".encode()).decode()
    r = redeem(c, verifier, auth=bad)
    ctx.check(r.status == 401, f"/token with a wrong client secret: {r}, want 401")

    # The good path (the client failures above did not consume the code), then a reuse.
    r = redeem(c, verifier)
    ctx.require(r.status == 200, f"/token refused a good redemption: {r}")
    body = r.json()
    ctx.check(body.get("token_type") == "Bearer" and body.get("access_token") and body.get("expires_in"), f"{body}")
    header = json.loads(base64.urlsafe_b64decode(body["id_token"].split(".")[0] + "=="))
    claims = json.loads(base64.urlsafe_b64decode(body["id_token"].split(".")[1] + "=="))
    ctx.check(header.get("alg") == "RS256" and header.get("kid") == kids[0], f"id_token header {header}")
    ctx.check(claims.get("iss") == idp and claims.get("aud") == ctx.oidc_client_id and claims.get("sub") == "carol",
              f"id_token claims {claims}")
    ctx.check(all(k in claims for k in ("exp", "iat", "nonce", "groups")), f"id_token claims {claims}")
    try:
        import jwt
        from jwt import PyJWK

        key = PyJWK(jwks["keys"][0])
        jwt.decode(body["id_token"], key.key, algorithms=["RS256"], audience=ctx.oidc_client_id, issuer=idp)
    except Exception as e:
        ctx.check(False, f"the id_token does not verify against the JWKS: {e}")
    r = redeem(c, verifier)
    ctx.check(is_invalid_grant(r), f"/token with a used code: {r}, want 400 invalid_grant")


def scenario_dev(ctx: Ctx) -> None:
    context = ctx.new_context()
    page = ctx.new_page(context)
    page.goto(f"{ctx.base}/console/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("main")).to_be_visible()
    expect(page.get_by_role("link", name="Sign in with corp")).to_be_visible()
    ctx.shot(page, "sign-in")

    # An agent's token, and a person's token delegated to an agent (`act`), are refused with
    # the problem's detail in the alert.
    for what, token in (("an agent token", ctx.agent()),
                        ("a delegated human token", ctx.token("xavier", "dba", "human", act="agent-1"))):
        with page.expect_response(lambda r: r.url.endswith("/console/api/login/dev")) as resp:
            page.get_by_label("Dev token").fill(token)
            page.get_by_role("button", name="Sign in with dev token").click()
        r = resp.value
        ctx.check(r.status == 403, f"dev login with {what} answered {r.status}, want 403")
        try:
            problem = r.json() or {}
        except Exception:
            problem = {}
            ctx.check(False, f"dev login with {what}: the answer is not JSON")
        ctx.check(problem.get("code") == "console_humans_only",
                  f"dev login with {what}: code {problem.get('code')!r}, want console_humans_only")
        if problem.get("detail"):
            expect(page.get_by_role("alert")).to_have_text(problem["detail"])
        else:
            expect(page.get_by_role("alert")).to_have_text(re.compile(r"\S"))
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        shown = " ".join(page.get_by_test_id("whoami").all_inner_texts())
        ctx.check("agent-1" not in shown and "xavier" not in shown, f"{what} shows as signed in: {shown!r}")
        ctx.check(ctx.stored_proof(page) is None, f"a session proof was stored after {what} was refused")
    ctx.shot(page, "dev-agent-refused")

    # A human's token signs in.
    page.get_by_label("Dev token").fill(ctx.token("dana", "dba,auditors", "human"))
    page.get_by_role("button", name="Sign in with dev token").click()
    expect(page.get_by_test_id("whoami")).to_have_text("dev/dana")
    nav = page.get_by_role("navigation", name="Console")
    for link in ("Reviews", "Audit", "Sessions"):
        expect(nav.get_by_role("link", name=link)).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    ctx.check(page.get_by_role("alert").filter(has_text=re.compile(r"\S")).count() == 0 or
              not page.get_by_role("alert").filter(has_text=re.compile(r"\S")).first.is_visible(),
              "the agent-token error is still shown after a successful sign-in")
    me = ctx.console_fetch(page, "/console/api/me")
    ctx.check(me["status"] == 200 and me["body"]["principal"]["kind"] == "human", f"/console/api/me: {me}")
    ctx.check(me["body"].get("auditor") is True, f"dana (auditors) is not an auditor: {me}")
    ctx.check(re.match(r"^\d{4}-\d\d-\d\dT", str(me["body"].get("expires_at", ""))) is not None, f"expires_at: {me}")
    ctx.check(ctx.stored_proof(page) == me["body"].get("csrf_token"),
              f"localStorage[{CSRF_KEY!r}] is not the session's csrf_token")
    # The cookie alone, from the page itself, opens nothing.
    bare = ctx.console_fetch(page, "/console/api/me", proof=False)
    ctx.check(bare["status"] == 403 and (bare["body"] or {}).get("code") == "csrf_failed",
              f"/console/api/me without X-Airlock-CSRF: {bare}, want 403 csrf_failed")
    ctx.check(page.evaluate("document.cookie").find("airlock_console") < 0, "the page can read the session cookie")
    ctx.shot(page, "dev-signed-in")
    ctx.page = page  # the signed-in approver for the next scenarios

    # A human in no group: no Audit link. The stored proof keeps the session over a reload;
    # a wrong one is dropped (sign-in view), never sent again.
    ctx2 = ctx.new_context()
    p2 = ctx.new_page(ctx2)
    frank = ctx.token("frank", "", "human")
    ctx.dev_sign_in(p2, frank, "dev/frank")
    nav2 = p2.get_by_role("navigation", name="Console")
    expect(nav2.get_by_role("link", name="Reviews")).to_be_visible()
    expect(nav2.get_by_role("link", name="Audit")).to_be_hidden()
    p2.reload()
    expect(p2.get_by_test_id("whoami")).to_have_text("dev/frank")
    p2.evaluate("key => localStorage.setItem(key, 'not-the-token')", CSRF_KEY)
    p2.reload()
    expect(p2.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(p2.get_by_test_id("whoami")).to_have_text("")
    ctx.check(ctx.stored_proof(p2) is None, "a wrong session proof stayed in localStorage")
    ctx.shot(p2, "dev-wrong-proof")
    # Sign in again, then sign out with the keyboard: back to the sign-in view, the session
    # and the stored proof gone.
    ctx.dev_sign_in(p2, frank, "dev/frank")
    # A second tab shares the cookie and the stored proof, and follows the first's sign-out.
    p3 = ctx.new_page(ctx2)
    p3.goto(f"{ctx.base}/console/")
    expect(p3.get_by_test_id("whoami")).to_have_text("dev/frank")
    p2.get_by_role("button", name="Sign out").focus()
    p2.keyboard.press("Enter")
    expect(p2.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(p2.get_by_role("status")).to_have_text("Signed out")
    expect(p3.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(p3.get_by_role("alert")).to_have_text("You signed out in another tab.")
    ctx.check(ctx.stored_proof(p2) is None, "the session proof stayed in localStorage after sign-out")
    me2 = ctx.console_fetch(p2, "/console/api/me")
    ctx.check(me2["status"] == 401, f"/console/api/me after sign-out: {me2['status']}, want 401")
    ctx2.close()


def scenario_link(ctx: Ctx) -> None:
    link = ctx.sign_in_link()
    code = link.split("#sign-in=", 1)[1]

    # Already signed in (dana): the link is not redeemed, the identity stays.
    page = ctx.page
    ctx.require(page is not None, "no signed-in page (the dev scenario failed)")
    redeemed: list[str] = []
    on_request = lambda req: redeemed.append(req.url) if "/console/api/login/link" in req.url else None  # noqa: E731
    page.on("request", on_request)
    page.goto(ctx.base + link)
    expect(page.get_by_role("status")).to_have_text(
        "You are already signed in as dev/dana; sign out first to use a sign-in link.")
    expect(page.get_by_test_id("whoami")).to_have_text("dev/dana")
    ctx.check(code not in page.url and "sign-in" not in page.url, f"the link stayed in the URL: {page.url}")
    me = ctx.console_fetch(page, "/console/api/me")
    ctx.check(me["status"] == 200 and (me["body"] or {}).get("principal", {}).get("subject") == "dana",
              f"/console/api/me after opening a link while signed in: {me}")
    page.remove_listener("request", on_request)
    ctx.check(not redeemed, f"a signed-in page redeemed the link: {redeemed}")
    ctx.shot(page, "link-while-signed-in")

    # A fresh browser: the link signs in dba-1 (group dba), and leaves the URL at once.
    c1 = ctx.new_context()
    p1 = ctx.new_page(c1)
    p1.goto(ctx.base + link)
    expect(p1.get_by_test_id("whoami")).to_have_text("dev/dba-1")
    ctx.check(urlsplit(p1.url).fragment == "" and code not in p1.url, f"the link stayed in the URL: {p1.url}")
    ctx.check(code not in p1.evaluate("location.href + ' ' + JSON.stringify(history.state)"),
              "the code is still in location or history.state")
    me = ctx.console_fetch(p1, "/console/api/me")
    principal = (me.get("body") or {}).get("principal", {})
    ctx.check(me["status"] == 200 and principal.get("issuer") == "dev" and principal.get("subject") == "dba-1"
              and principal.get("kind") == "human" and principal.get("groups") == ["dba"]
              and not principal.get("actor"), f"signed in by the link: {me}")
    ctx.check(ctx.stored_proof(p1) == (me.get("body") or {}).get("csrf_token"), "the link's session proof is not stored")
    expect(p1.get_by_role("heading", name="Reviews")).to_be_visible()
    ctx.shot(p1, "link-signed-in")
    c1.close()

    # The same link again, in another fresh browser: refused, with the reason in the alert.
    c2 = ctx.new_context()
    p2 = ctx.new_page(c2)
    with p2.expect_response(lambda r: r.url.endswith("/console/api/login/link")) as resp:
        p2.goto(ctx.base + link)
    ctx.check(resp.value.status == 401, f"a used sign-in link answered {resp.value.status}, want 401")
    expect(p2.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(p2.get_by_role("alert")).to_have_text(re.compile(r"\S"))
    expect(p2.get_by_test_id("whoami")).to_have_text("")
    ctx.check(code not in p2.url, f"the used link stayed in the URL: {p2.url}")
    ctx.check(not [k for k in c2.cookies() if k["name"] == "airlock_console"], "a used link set a session cookie")
    ctx.shot(p2, "link-used-twice")

    # #login-error= carries a code: anything else shows the generic wording, never the text.
    p2.goto(f"{ctx.base}/console/#login-error=<script>alert(1)</script>%20approve%20review%20now")
    expect(p2.get_by_role("alert")).to_have_text(LOGIN_FAILED)
    main_text = p2.get_by_role("main").inner_text()
    ctx.check("review now" not in main_text and "alert(1)" not in main_text, "the crafted login error's text is shown")
    ctx.check("login-error" not in p2.url, f"the login error stayed in the URL: {p2.url}")
    expect(p2.get_by_role("heading", name="Sign in")).to_be_visible()
    ctx.shot(p2, "login-error-crafted")
    p2.goto(f"{ctx.base}/console/#login-error=expired")
    expect(p2.get_by_role("alert")).to_have_text(LOGIN_ERRORS["expired"])
    for trap in ("constructor", "__proto__", "toString"):
        p2.goto(f"{ctx.base}/console/#login-error={trap}")
        expect(p2.get_by_role("alert")).to_have_text(LOGIN_FAILED)
    c2.close()


def scenario_approve(ctx: Ctx) -> None:
    page = ctx.page
    ctx.require(page is not None, "no signed-in page (the dev scenario failed)")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Reviews").click()
    expect(page.get_by_role("heading", name="Reviews")).to_be_visible()
    status = page.get_by_label("Status")
    ctx.check(status.evaluate("s => s.value") == "pending_review", "the Status filter does not default to pending")
    options = status.evaluate("s => Array.from(s.options).map(o => o.text.trim())")
    ctx.check(options == ["Pending", "Approved", "Rejected", "Expired", "All"], f"Status options: {options}")
    page.evaluate("window.__consoleTestNoReload = true")

    city = "Lyon"
    sql = f"UPDATE customers SET city = '{city}' WHERE id = 1"
    held = held_write(ctx, sql)
    exec_id, review_id = held["execution_id"], held["review_id"]
    ctx.ids["approved_execution"] = exec_id

    # The agent waits for the decision as docs/agents.md says, then runs it, in a thread.
    agent: dict[str, Any] = {}

    def wait_and_run() -> None:
        try:
            deadline = time.monotonic() + 120
            view: dict = {}
            while time.monotonic() < deadline:
                r = http("GET", f"{ctx.base}/v1/executions/{exec_id}?wait=55", token=ctx.agent(), timeout=75)
                if r.status != 200:
                    agent["error"] = f"GET /v1/executions/{exec_id}?wait=55: {r}"
                    return
                view = r.json()
                agent.setdefault("polls", 0)
                agent["polls"] += 1
                if view.get("status") != "pending_review":
                    break
            agent["decided"] = view
            if view.get("status") == "approved":
                r = http("POST", f"{ctx.base}/v1/executions/{exec_id}/run?wait=30", token=ctx.agent(), timeout=60)
                agent["run"] = r
        except Exception as e:
            agent["error"] = f"{type(e).__name__}: {e}"

    t = threading.Thread(target=wait_and_run, daemon=True)
    t.start()

    open_review(ctx, page, city, review_id)
    ctx.check(page.evaluate("window.__consoleTestNoReload === true"), "the page reloaded to show the review")
    api_view = review_via_api(ctx, review_id)
    expect(page.get_by_test_id("statement")).to_have_text(api_view["statement_visible"])
    expect(page.get_by_test_id("statement")).to_contain_text(sql)
    expect(page.get_by_text("This statement contains invisible or control characters")).to_have_count(0)
    for text in ("agent-1", "demo", "demo-writes-need-review"):
        ctx.check(page.get_by_role("main").get_by_text(text).count() > 0, f"the review detail does not show {text!r}")
    ctx.shot(page, "review-open")

    # Approve with the keyboard only: focus, type, Tab, Enter.
    comment = f"ok, one row only ({secrets.token_hex(3)})"
    page.get_by_label("Max affected rows (optional)").focus()
    page.keyboard.type("1")
    tab_to(page, page.get_by_label("Comment (optional)"), "the Comment field")
    page.keyboard.type(comment)
    tab_to(page, page.get_by_role("button", name="Approve", exact=True), "the Approve button")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status").filter(has_text="Approved").first).to_be_visible()
    expect(page.get_by_role("main").get_by_text("approved", exact=True).first).to_be_visible()
    expect(page.get_by_role("main").get_by_text(comment).first).to_be_visible()
    ctx.shot(page, "review-approved")

    t.join(timeout=90)
    ctx.require(not t.is_alive(), "the agent's ?wait= did not end within 90 s of the approval")
    ctx.require("error" not in agent, f"the agent: {agent.get('error')}")
    decided = agent.get("decided", {})
    ctx.check(decided.get("status") == "approved", f"the agent's wait ended with {decided}")
    approvals = decided.get("approvals") or []
    ctx.check(any(a.get("comment") == comment and a.get("subject") == "dana" and a.get("issuer") == "dev"
                  for a in approvals), f"the agent does not see dana's comment: {approvals}")
    run = agent.get("run")
    ctx.require(run is not None and run.status == 200, f"the agent's run: {run}")
    ctx.check((run.json() or {}).get("affected_rows") == 1, f"the run: {run}")
    r = http("POST", f"{ctx.base}/v1/connections/demo/query", token=ctx.agent(),
             json_body={"sql": "SELECT city FROM customers WHERE id = 1"})
    ctx.check(r.status == 200 and city in r.body.decode(), f"after the run: {r}")


def scenario_reject(ctx: Ctx) -> None:
    page = ctx.page
    ctx.require(page is not None, "no signed-in page (the dev scenario failed)")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Reviews").click()
    page.get_by_label("Status").select_option("pending_review")
    # A statement carrying markup and a zero-width space: shown as text, escaped, with a warning.
    marker = f"Nowhere-{secrets.token_hex(3)}"
    hostile = f"{marker}<img src=x id=console-test-xss>\u200b"
    sql = f"UPDATE customers SET city = '{hostile}' WHERE id = 2"
    held = held_write(ctx, sql, key=f"console-reject-{marker}")
    exec_id, review_id = held["execution_id"], held["review_id"]

    open_review(ctx, page, marker, review_id)
    stmt = page.get_by_test_id("statement")
    expect(stmt).to_contain_text(f"{marker}<img src=x id=console-test-xss>")
    ctx.check(page.locator("#console-test-xss").count() == 0, "the statement's markup became an element")
    api_view = review_via_api(ctx, review_id)
    ctx.check(api_view["statement_visible"] != api_view["statement"],
              f"the server did not escape the zero-width space: {api_view['statement_visible']!r}")
    expect(stmt).to_have_text(api_view["statement_visible"])
    expect(page.get_by_text("This statement contains invisible or control characters (shown escaped)")).to_be_visible()

    reason = f"wrong city ({marker}); use the customer's real address"
    page.get_by_label("Reason").fill(reason)
    page.get_by_role("button", name="Reject", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="Rejected").first).to_be_visible()
    expect(page.get_by_role("main").get_by_text("rejected", exact=True).first).to_be_visible()
    expect(page.get_by_role("main").get_by_text(reason).first).to_be_visible()
    ctx.shot(page, "review-rejected")

    # The agent: its run answers 422 review_rejected with the reason; the execution says why.
    r = http("POST", f"{ctx.base}/v1/executions/{exec_id}/run", token=ctx.agent())
    p = r.json() or {}
    ctx.check(r.status == 422 and p.get("code") == "review_rejected" and reason in p.get("detail", ""),
              f"the agent's run after the rejection: {r}")
    r = http("GET", f"{ctx.base}/v1/executions/{exec_id}", token=ctx.agent())
    v = r.json() or {}
    ctx.check(v.get("status") == "rejected" and v.get("rejection_reason") == reason, f"the execution: {r}")
    # The list's Rejected filter shows it.
    page.get_by_label("Status").select_option(label="Rejected")
    expect(page.get_by_role("row").filter(has_text=marker).first).to_be_visible()
    ctx.check(page.locator("#console-test-xss").count() == 0, "the statement's markup became an element in the list")
    ctx.shot(page, "reviews-rejected-list")


def scenario_invisible(ctx: Ctx) -> None:
    page = ctx.page
    ctx.require(page is not None, "no signed-in page (the dev scenario failed)")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Reviews").click()
    page.get_by_label("Status").select_option("pending_review")
    # U+2800 (BRAILLE PATTERN BLANK) looks like a space. In a string literal it is data: held,
    # and shown to the reviewer escaped, with the warning.
    marker = f"Braille-{secrets.token_hex(3)}"
    sql = f"UPDATE customers SET city = '{marker}\u2800blank' WHERE id = 5"
    held = held_write(ctx, sql, key=f"console-invisible-{marker}")
    review_id = held["review_id"]
    open_review(ctx, page, marker, review_id)
    stmt = page.get_by_test_id("statement")
    expect(stmt).to_contain_text(f"{marker}\\u{{2800}}blank")
    ctx.check("\u2800" not in stmt.inner_text(), "U+2800 is shown raw in the statement")
    api_view = review_via_api(ctx, review_id)
    ctx.check("\\u{2800}" in api_view["statement_visible"],
              f"the server's statement_visible does not escape U+2800: {api_view['statement_visible']!r}")
    expect(stmt).to_have_text(api_view["statement_visible"])
    expect(page.get_by_text("This statement contains invisible or control characters (shown escaped)")).to_be_visible()
    # What will run is laid out left to right in stored order (no bidi reordering).
    style = stmt.evaluate("e => [getComputedStyle(e).unicodeBidi, getComputedStyle(e).direction]")
    ctx.check(style == ["bidi-override", "ltr"], f"the statement's unicode-bidi/direction: {style}")
    row = page.get_by_role("row").filter(has_text=marker).first
    ctx.check("\u2800" not in row.inner_text(), "U+2800 is shown raw in the reviews list")
    ctx.shot(page, "review-invisible")
    page.get_by_label("Reason").fill("console test: U+2800 in a literal")
    page.get_by_role("button", name="Reject", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="Rejected").first).to_be_visible()

    # Outside a literal it could make two statements look alike: the server refuses it.
    for bad in ("UPDATE customers SET city = 'x'\u2800WHERE id = 5",
                "UPDATE\u2800customers SET city = 'x' WHERE id = 5"):
        r = http("POST", f"{ctx.base}/v1/connections/demo/query", token=ctx.agent(), json_body={"sql": bad})
        ctx.check(400 <= r.status < 500, f"the agent's statement with U+2800 outside a literal: {r}, want 4xx (not held)")


def scenario_live(ctx: Ctx) -> None:
    """The review event stream, read with fetch(): EventSource could not send the proof."""
    context = ctx.new_context()
    page = ctx.new_page(context)
    stream_requests: list[Any] = []
    list_requests: list[Any] = []

    def on_request(req: Any) -> None:
        path = urlsplit(req.url).path
        if path == "/console/api/reviews/events":
            stream_requests.append(req)
        elif path == "/console/api/reviews":
            list_requests.append(req)

    page.on("request", on_request)
    with page.expect_response(lambda r: urlsplit(r.url).path == "/console/api/reviews/events") as resp:
        ctx.dev_sign_in(page, ctx.token("erin", "dba", "human"), "dev/erin")
    r = resp.value
    proof = ctx.stored_proof(page)
    ctx.check(r.status == 200 and (r.headers.get("content-type") or "").startswith("text/event-stream"),
              f"the review event stream: {r.status} {r.headers.get('content-type')}")
    sent = r.request.headers
    ctx.check(proof is not None and sent.get("x-airlock-csrf") == proof,
              f"the event stream request did not carry the session proof: {sent}")
    ctx.check(sent.get("x-airlock-background") == "1", f"the event stream request is not marked background: {sent}")
    for req in list_requests:
        ctx.check(req.headers.get("x-airlock-csrf") == proof, f"GET {req.url} without the session proof")

    # Leaving the reviews view aborts the stream.
    with page.expect_event("requestfailed",
                           predicate=lambda req: urlsplit(req.url).path == "/console/api/reviews/events",
                           timeout=5000):
        page.get_by_role("navigation", name="Console").get_by_role("link", name="Sessions").click()
        expect(page.get_by_role("heading", name="Sessions")).to_be_visible()

    # The page parses the stream itself: a stream that says `reviews` and ends makes the
    # page refresh (marked background) and reconnect, far more often than the 10 s poll.
    fakes: list[Any] = []

    def fake_stream(route: Any) -> None:
        fakes.append(route.request)
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"},
                      body=": keep-alive\r\n\r\nevent: reviews\r\ndata: 1\r\n\r\n: bye\n")

    page.route("**/console/api/reviews/events", fake_stream)
    list_requests.clear()
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Reviews").click()
    expect(page.get_by_role("heading", name="Reviews")).to_be_visible()
    deadline = time.monotonic() + 8
    background = []
    while time.monotonic() < deadline:
        background = [q for q in list_requests if q.headers.get("x-airlock-background") == "1"]
        if len(fakes) >= 3 and len(background) >= 2:
            break
        page.wait_for_timeout(250)
    ctx.check(len(fakes) >= 3, f"the page reconnected to the ended stream {len(fakes) - 1} times in 8 s, want >= 2")
    ctx.check(len(background) >= 2,
              f"{len(background)} background refreshes in 8 s of `reviews` events, want >= 2 (events not parsed?)")
    ctx.check(all(f.headers.get("x-airlock-csrf") == proof for f in fakes), "a reconnect lacked the session proof")
    page.unroute("**/console/api/reviews/events")
    ctx.shot(page, "live-stream")
    context.close()


def scenario_audit(ctx: Ctx) -> None:
    page = ctx.page
    ctx.require(page is not None, "no signed-in page (the dev scenario failed)")
    # A plain allowed query: one begin, one end.
    r = http("POST", f"{ctx.base}/v1/connections/demo/query", token=ctx.agent(),
             json_body={"sql": "SELECT id, name, city FROM customers WHERE id = 3"})
    ctx.require(r.status == 200, f"the agent's SELECT: {r}")
    exec_id = r.json()["execution_id"]

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Audit").click()
    expect(page.get_by_role("heading", name="Audit")).to_be_visible()
    outcome = page.get_by_label("Outcome")
    options = outcome.evaluate("s => Array.from(s.options).map(o => [o.value, o.text.trim()])")
    want = [["", "Any"]] + [[o, o] for o in
                            ("ok", "denied", "error", "timeout", "cancelled", "interrupted", "pending_review")]
    ctx.check(options == want, f"Outcome options: {options}")
    for label in ("Issuer", "Execution id", "Since", "Until"):
        expect(page.get_by_label(label, exact=True)).to_be_visible()
    page.get_by_label("Subject", exact=True).fill("agent-1")
    page.get_by_label("Connection", exact=True).fill("demo")
    with page.expect_response(lambda r: "/console/api/audit" in r.url and "subject=agent-1" in r.url) as resp:
        page.get_by_role("button", name="Search").click()
    q = parse_qs(urlsplit(resp.value.url).query)
    ctx.check(q.get("subject") == ["agent-1"] and q.get("connection") == ["demo"], f"the search sent {q}")
    events = (resp.value.json() or {}).get("events", [])
    ctx.check(events and events[0].get("execution_id") == exec_id,
              f"the newest event for agent-1 on demo is not the SELECT just run: {events[:1]}")
    body_rows = page.get_by_role("row").filter(has=page.get_by_role("cell"))
    expect(body_rows.first).to_be_visible()
    n = body_rows.count()
    ctx.check(n >= 2, f"only {n} audit rows for agent-1 on demo")
    texts = body_rows.all_inner_texts()
    ctx.check(all("agent-1" in t and "demo" in t for t in texts),
              f"rows not of agent-1 on demo: {[t for t in texts if 'agent-1' not in t or 'demo' not in t][:3]}")
    approved = ctx.ids.get("approved_execution")
    if approved:
        ctx.check(any(e.get("execution_id") == approved for e in events),
                  "the approved execution from the approve scenario is not in the results")
    ctx.shot(page, "audit-results")

    # The newest row is the SELECT's end; its execution opens with begin and end side by side.
    show = body_rows.first.get_by_role("button", name=re.compile(r"^Show execution "))
    expect(show).to_have_accessible_name(f"Show execution {exec_id[-8:]}")
    show.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=f"Execution {exec_id[-8:]}")).to_be_visible()
    pane = page.get_by_role("region", name="Execution", exact=True)
    expect(pane).to_contain_text(exec_id)
    for col in ("Begin", "End"):
        expect(pane.get_by_role("heading", name=col, exact=True).or_(
            pane.get_by_role("columnheader", name=col, exact=True)).first).to_be_visible()
    pane_text = pane.inner_text()
    for text in ("SELECT id, name, city FROM customers WHERE id = 3", "agents-read-demo", "allow", "ok",
                 "row_count"):
        ctx.check(text in pane_text, f"the execution's side-by-side view does not show {text!r}")
    ctx.check(pane_text.count("begin") >= 1 and pane_text.count("end") >= 1, "no begin/end event cards")
    pane.scroll_into_view_if_needed()
    ctx.shot(page, "audit-execution")

    # The execution id filter: the approved request's events only (held, then its run).
    if approved:
        page.get_by_label("Subject", exact=True).fill("")
        page.get_by_label("Connection", exact=True).fill("")
        page.get_by_label("Execution id", exact=True).fill(approved)
        with page.expect_response(lambda r: "/console/api/audit" in r.url and "execution_id=" in r.url) as resp:
            page.get_by_label("Execution id", exact=True).press("Enter")
        got = (resp.value.json() or {}).get("events", [])
        ctx.check(len(got) >= 2 and all(e.get("execution_id") == approved for e in got),
                  f"execution_id={approved}: {[(e.get('execution_id'), e.get('phase')) for e in got]}")
        results = page.get_by_role("table", name="Audit events")
        expect(results.get_by_role("row").filter(has=page.get_by_role("cell"))).to_have_count(len(got))


def scenario_replay(ctx: Ctx) -> None:
    page = ctx.page
    ctx.require(page is not None, "no signed-in page (the dev scenario failed)")
    marker = f"console-replay-{secrets.token_hex(4)}"
    r = http("POST", f"{ctx.base}/v1/connections/{ctx.ssh_connection}/exec", token=ctx.agent(),
             json_body={"argv": ["echo", marker]}, timeout=60)
    ctx.require(r.status == 200, f"the agent's SSH exec: {r}")
    b = r.json()
    ctx.require(b.get("stdout") == marker + "\n" and b.get("exit_code") == 0, f"the SSH exec: {b}")
    session_id = b["session_id"]
    ctx.ids["session"] = session_id

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Sessions").click()
    expect(page.get_by_role("heading", name="Sessions")).to_be_visible()
    row = page.get_by_role("row").filter(has_text=marker)
    expect(row, "the sessions table does not show the command").to_have_count(1)
    replay = row.get_by_role("button", name=re.compile(r"^Replay"))
    expect(replay).to_have_accessible_name(f"Replay session {session_id[-8:]}")
    ctx.shot(page, "sessions")
    with page.expect_response(lambda r: urlsplit(r.url).path == f"/console/api/sessions/{session_id}/recording") as rec:
        replay.click()
    proof = ctx.stored_proof(page)
    ctx.check(rec.value.status == 200 and proof is not None and rec.value.request.headers.get("x-airlock-csrf") == proof,
              f"the recording was not fetched with the session proof: {rec.value.status} {rec.value.request.headers}")
    ctx.check(urlsplit(rec.value.url).query == "", f"the recording URL carries a query: {rec.value.url}")
    expect(page.get_by_role("heading", name=f"Session {session_id[-8:]}")).to_be_visible()
    expect(page.get_by_role("region", name="Replay")).to_contain_text(b["execution_id"])
    expect(page.get_by_test_id("chain")).to_have_text("Recording chain valid")
    player = page.get_by_test_id("player")
    expect(player).to_contain_text(marker, timeout=LIVE_TIMEOUT_MS)
    player.scroll_into_view_if_needed()
    ctx.shot(page, "replay")


def scenario_oidc(ctx: Ctx) -> None:
    context = ctx.new_context()
    page = ctx.new_page(context)
    callbacks: list[str] = []
    landed: list[str] = []  # where the callback sent the browser
    page.on("request", lambda req: callbacks.append(req.url) if "/console/callback" in req.url else None)
    page.on("response", lambda r: landed.append(r.headers.get("location", ""))
            if urlsplit(r.url).path == "/console/callback" else None)
    page.goto(f"{ctx.base}/console/")
    page.get_by_role("link", name="Sign in with corp").click()
    page.wait_for_url(f"{ctx.idp}/authorize?*")
    q = parse_qs(urlsplit(page.url).query)
    ctx.check(q.get("code_challenge_method") == ["S256"] and q.get("client_id") == [ctx.oidc_client_id]
              and q.get("redirect_uri") == [ctx.oidc_redirect] and "groups" in q.get("scope", [""])[0].split(),
              f"the authorization request: {q}")
    expect(page.get_by_role("heading", name="Corp sign-in")).to_be_visible()
    binding = [k for k in context.cookies(ctx.base + "/console/callback") if k["name"] == "airlock_console_login"]
    ctx.check(len(binding) == 1 and binding[0]["httpOnly"] and binding[0]["sameSite"] == "Lax",
              f"the sign-in binding cookie: {binding}")
    page.get_by_label("Username").fill("carol")
    ctx.shot(page, "idp-login")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(re.escape(ctx.base) + r"/console/"))
    expect(page.get_by_test_id("whoami")).to_have_text("corp/carol")
    # The callback handed the session proof over in the fragment; the page kept it and
    # took it out of the URL.
    ctx.check(len(landed) == 1 and landed[0].startswith("/console/#session="),
              f"the callback redirected to {landed}, want /console/#session=...")
    proof = ctx.stored_proof(page)
    handed = landed[0].split("#session=", 1)[1] if landed and "#session=" in landed[0] else None
    ctx.check(proof is not None and proof == handed, "the page did not keep the proof from #session=")
    ctx.check("session=" not in page.url and (not proof or proof not in page.url), f"the proof stayed in the URL: {page.url}")
    ctx.check(not proof or proof not in page.evaluate("location.href + ' ' + JSON.stringify(history.state)"),
              "the proof is still in location or history.state")
    ctx.shot(page, "oidc-signed-in")

    cookies = [c for c in context.cookies(ctx.base + "/console/") if c["name"] == "airlock_console"]
    ctx.require(len(cookies) == 1, f"no airlock_console cookie after OIDC sign-in: {context.cookies()}")
    c = cookies[0]
    ctx.check(c["httpOnly"] is True, f"the cookie is not HttpOnly: {c}")
    ctx.check(c["sameSite"] == "Strict", f"the cookie is not SameSite=Strict: {c}")
    ctx.check(c["path"] == "/console", f"the cookie's path is {c['path']!r}, want /console")
    me = ctx.console_fetch(page, "/console/api/me")
    ctx.check(me["status"] == 200, f"/console/api/me: {me}")
    principal = (me.get("body") or {}).get("principal", {})
    ctx.check(principal.get("issuer") == "corp" and principal.get("subject") == "carol"
              and principal.get("kind") == "human", f"principal {principal}")
    ctx.check(sorted(principal.get("groups", [])) == ["auditors", "dba"],
              f"groups {principal.get('groups')}: `staff` must be dropped (allowed_groups)")
    log = http("GET", f"{ctx.idp}/_log").json()["events"]
    ctx.check(any(e.get("endpoint") == "token" and e.get("outcome") == "ok" and e.get("auth") == "basic" for e in log),
              "the double saw no successful client_secret_basic token request")
    # carol (dba) sees the reviews list.
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Reviews").click()
    expect(page.get_by_role("heading", name="Reviews")).to_be_visible()
    # A crafted #session= link with someone else's (or no real) proof does not cost carol
    # her session: the page keeps the proof that works.
    page.goto(f"{ctx.base}/console/#session=not-a-real-proof")
    expect(page.get_by_role("heading", name="Reviews")).to_be_visible()
    expect(page.get_by_test_id("whoami")).to_have_text("corp/carol")
    ctx.check(ctx.stored_proof(page) == proof, "a crafted #session= link replaced the stored proof")
    ctx.check("session=" not in page.url, f"the crafted proof stayed in the URL: {page.url}")
    context.close()

    # The callback URL (code + state) is single-use: replayed with the same browser's
    # binding cookie, or in a fresh browser, it starts no session.
    ctx.check(len(callbacks) >= 1, "the browser never reached /console/callback")
    if callbacks and binding:
        r = http("GET", callbacks[0], cookie=f"airlock_console_login={binding[0]['value']}")
        loc = r.headers.get("Location", "") if r.headers is not None else ""
        ctx.check(r.status in (302, 303) and "#login-error=" in loc, f"a replayed callback: {r.status} -> {loc}")
        ctx.check(loc.split("#login-error=", 1)[-1] in LOGIN_ERRORS, f"a replayed callback: unknown code in {loc}")
        ctx.check(not any(s.startswith("airlock_console=") and not s.startswith("airlock_console=;")
                          for s in r.header_all("Set-Cookie")), f"a replayed callback set {r.header_all('Set-Cookie')}")
    if callbacks:
        c2 = ctx.new_context()
        p2 = ctx.new_page(c2)
        p2.goto(callbacks[0])
        expect(p2.get_by_role("heading", name="Sign in")).to_be_visible()
        expect(p2.get_by_role("alert")).to_have_text(re.compile(r"\S"))
        ctx.check(p2.get_by_role("alert").inner_text() in LOGIN_ERRORS.values(),
                  f"a replayed callback: the alert says {p2.get_by_role('alert').inner_text()!r}, want a mapped code")
        ctx.check(not [k for k in c2.cookies() if k["name"] == "airlock_console"],
                  "a replayed callback URL set a session cookie")
        ctx.shot(p2, "oidc-callback-replayed")
        c2.close()
    # A forged callback: error shown on the sign-in view, no cookie.
    c3 = ctx.new_context()
    p3 = ctx.new_page(c3)
    p3.goto(f"{ctx.base}/console/callback?code=forged&state=forged")
    expect(p3.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(p3.get_by_role("alert")).to_have_text(re.compile(r"\S"))
    ctx.check(p3.get_by_role("alert").inner_text() in LOGIN_ERRORS.values(),
              f"a forged callback: the alert says {p3.get_by_role('alert').inner_text()!r}, want a mapped code")
    ctx.check("login-error" not in p3.url, f"the login error stayed in the URL: {p3.url}")
    ctx.check(not [k for k in c3.cookies() if k["name"] == "airlock_console"], "a forged callback set a cookie")
    c3.close()


def oidc_signin_http(ctx: Ctx) -> Resp:
    """An OIDC sign-in as carol with plain HTTP, the way a browser does it; the callback's answer."""
    r = http("GET", f"{ctx.base}/console/login/corp")
    ctx.require(r.status in (302, 303), f"GET /console/login/corp: {r}")
    binding = next((c.split(";")[0] for c in r.header_all("Set-Cookie") if c.startswith("airlock_console_login=")), None)
    ctx.require(binding is not None, f"/console/login/corp set no binding cookie: {r.header_all('Set-Cookie')}")
    page = http("GET", r.headers["Location"])
    ctx.require(page.status == 200, f"the double's /authorize: {page}")
    txn = re.search(rb'name="txn" value="([^"]+)"', page.body)
    ctx.require(txn is not None, "the double's login page has no transaction id")
    back = http("POST", f"{ctx.idp}/authorize/login", form={"txn": html.unescape(txn.group(1).decode()), "username": "carol"})
    ctx.require(back.status == 302, f"the double's login: {back}")
    return http("GET", back.headers["Location"], cookie=binding)


def scenario_idtoken(ctx: Ctx) -> None:
    """The server verifies the ID token: each way the double can spoil it is refused."""
    def session_cookie(r: Resp) -> str | None:
        return next((c for c in r.header_all("Set-Cookie")
                     if c.startswith("airlock_console=") and not c.startswith("airlock_console=;")), None)

    r = oidc_signin_http(ctx)
    loc = r.headers.get("Location", "") if r.headers is not None else ""
    ctx.require(r.status in (302, 303) and "login-error" not in loc and session_cookie(r),
                f"a good sign-in over plain HTTP: {r.status} -> {loc}, cookies {r.header_all('Set-Cookie')}")
    ctx.check(re.fullmatch(r"/console/#session=[A-Za-z0-9_.~-]+", loc) is not None,
              f"a good sign-in redirects to {loc}, want /console/#session=<proof>")
    for kind in ("wrong_nonce", "no_nonce", "wrong_aud", "wrong_iss", "expired", "bad_signature", "alg_none",
                 "hs256_public_key"):
        t = http("POST", f"{ctx.idp}/_tamper?with={kind}", form={})
        ctx.require(t.status == 200, f"the double would not tamper: {t}")
        r = oidc_signin_http(ctx)
        loc = r.headers.get("Location", "") if r.headers is not None else ""
        ctx.check(r.status in (302, 303) and "#login-error=" in loc and not session_cookie(r),
                  f"an ID token with {kind}: {r.status} -> {loc}, cookies {r.header_all('Set-Cookie')}; want a login error")
        code = loc.split("#login-error=", 1)[-1]
        ctx.check(code in LOGIN_ERRORS, f"an ID token with {kind}: the error code {code!r} is not one the page words")
    log = http("GET", f"{ctx.idp}/_log").json()["events"]
    seen = {e.get("tampered") for e in log if e.get("tampered")}
    ctx.check(len(seen) == 8, f"the double issued only these spoiled tokens: {sorted(seen)}")


class CookieRecorder:
    """A page on another loopback port: what a local app or a hostile local page would be.
    It records the Cookie header of every request it gets."""

    def __init__(self) -> None:
        seen: list[dict[str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                seen.append({"path": self.path, "cookie": self.headers.get("Cookie", "")})
                body = b"<!doctype html><title>elsewhere</title><p>another port</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.seen = seen
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def scenario_crossport(ctx: Ctx) -> None:
    """Browsers send a host's cookies to all its ports: the console cookie leaks to any local
    web server the approver's browser visits. Alone, it must open nothing."""
    recorder = CookieRecorder()
    context = ctx.new_context()
    try:
        page = ctx.new_page(context)
        ctx.dev_sign_in(page, ctx.token("hank", "dba,auditors", "human"), "dev/hank")
        own = [c for c in context.cookies(ctx.base + "/console/") if c["name"] == "airlock_console"]
        ctx.require(len(own) == 1, f"no airlock_console cookie in the signed-in browser: {context.cookies()}")
        # The approver's browser visits the other port (a link, a redirect: any navigation).
        other = ctx.new_page(context)
        other.goto(f"{recorder.url}/console/elsewhere")
        expect(other.get_by_text("another port")).to_be_visible()
        got = next((c.strip() for r in recorder.seen for c in r["cookie"].split(";")
                    if c.strip().startswith("airlock_console=")), None)
        if got is None:
            # Not sent (a browser that binds cookies to ports): the leak this guards against
            # did not happen here; the cookie is replayed from the browser's jar instead.
            print(f"    note: the browser sent no console cookie to another port ({recorder.seen})", flush=True)
            got = f"airlock_console={own[0]['value']}"
        else:
            ctx.check(got == f"airlock_console={own[0]['value']}", "the other port got a different cookie")
        other.close()

        held = held_write(ctx, f"UPDATE customers SET city = 'Port-{secrets.token_hex(2)}' WHERE id = 6")
        rid = held["review_id"]
        origin = {"Origin": recorder.url}
        for method, path, body in (("GET", "/console/api/me", None), ("GET", "/console/api/reviews", None),
                                   ("GET", "/console/api/reviews/events", None),
                                   ("GET", f"/console/api/reviews/{rid}", None),
                                   ("POST", f"/console/api/reviews/{rid}/approve", {}),
                                   ("POST", "/console/api/logout", {})):
            for label, hdrs in (("alone", {}), ("from the other origin", origin)):
                r = http(method, ctx.base + path, cookie=got, headers=hdrs, json_body=body, timeout=10)
                ctx.check(r.status == 403, f"{method} {path} with the leaked cookie {label}: {r}, want 403")
        v = review_via_api(ctx, rid)
        ctx.check(v.get("status") == "pending_review" and not v.get("approvals"),
                  f"the review after the leaked-cookie attempts: {v.get('status')} {v.get('approvals')}")
        # The approver's own page still works (the attempts did not end the session).
        me = ctx.console_fetch(page, "/console/api/me")
        ctx.check(me["status"] == 200 and (me["body"] or {}).get("principal", {}).get("subject") == "hank",
                  f"the approver's session after the attempts: {me}")
        r = http("POST", f"{ctx.base}/v1/reviews/{rid}/reject", token=ctx.token("dana", "dba,auditors", "human"),
                 json_body={"reason": "console test: cross-port cookie check"})
        ctx.check(r.status == 200, f"cleaning up the review: {r}")
    finally:
        context.close()
        recorder.close()


def scenario_security(ctx: Ctx) -> None:
    base = ctx.base
    # CSP on the console's responses.
    for path, want in (("/console/", 200), ("/console", 200), ("/console/assets/app.js", 200),
                       ("/console/api/login-options", 200), ("/console/api/me", 401),
                       ("/console/assets/no-such-file.js", 404)):
        r = http("GET", base + path)
        csp = r.headers.get("Content-Security-Policy", "") if r.headers is not None else ""
        ctx.check(r.status == want, f"GET {path}: {r.status}, want {want}")
        ctx.check("default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp,
                  f"GET {path}: CSP {csp!r}")
    index = http("GET", base + "/console/").body.decode()
    ctx.check(re.search(r"<script(?![^>]*\bsrc=)[^>]*>", index) is None, "index.html has an inline <script>")
    ctx.check(re.search(r"\son[a-z]+\s*=", index) is None, "index.html has an inline event handler")
    ctx.check(re.search(r"\sstyle\s*=", index) is None, "index.html has a style attribute")

    # A session over plain HTTP, the way the page gets one.
    human = ctx.token("gina", "dba,auditors", "human")
    r = http("POST", base + "/console/api/login/dev", json_body={"token": human}, headers={"Origin": base})
    ctx.require(r.status == 200, f"dev login over HTTP: {r}")
    set_cookies = r.header_all("Set-Cookie")
    sc = next((s for s in set_cookies if s.startswith("airlock_console=")), "")
    ctx.require(sc, f"no airlock_console cookie set: {set_cookies}")
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in sc.split(";")[1:]}
    ctx.check("httponly" in attrs and attrs.get("samesite", "").lower() == "samesite=strict"
              and attrs.get("path", "").lower() == "path=/console", f"Set-Cookie {sc}")
    cookie = sc.split(";")[0]
    # The proof comes with the sign-in's answer; every console call needs it, GET included.
    csrf = (r.json() or {}).get("csrf_token")
    ctx.require(bool(csrf), f"the dev login's answer has no csrf_token: {r}")
    proof = {"X-Airlock-CSRF": csrf}
    for path in ("/console/api/me", "/console/api/reviews", "/console/api/reviews/events", "/console/api/audit",
                 "/console/api/sessions"):
        r = http("GET", base + path, cookie=cookie, timeout=10)
        ctx.check(r.status == 403 and (r.json() or {}).get("code") == "csrf_failed",
                  f"GET {path} with only the cookie: {r}, want 403 csrf_failed")
        r = http("GET", base + path, cookie=cookie, headers={"X-Airlock-CSRF": "wrong-" + csrf[:4]}, timeout=10)
        ctx.check(r.status == 403 and (r.json() or {}).get("code") == "csrf_failed",
                  f"GET {path} with a wrong X-Airlock-CSRF: {r}, want 403 csrf_failed")
    me = http("GET", base + "/console/api/me", cookie=cookie, headers=proof)
    ctx.require(me.status == 200, f"/console/api/me with the cookie and X-Airlock-CSRF: {me}")
    ctx.check(me.json().get("csrf_token") == csrf, f"/me's csrf_token differs from the sign-in's: {me}")

    # Sign-in links: a wrong code is refused, a cross-site redemption too.
    r = http("POST", base + "/console/api/login/link", json_body={"code": "no-such-code"}, headers={"Origin": base})
    ctx.check(r.status == 401 and not r.header_all("Set-Cookie"), f"a sign-in link with a wrong code: {r}, want 401")
    r = http("POST", base + "/console/api/login/link", json_body={"code": "no-such-code"},
             headers={"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "cross-site"})
    ctx.check(r.status == 403, f"a cross-site sign-in link: {r}, want 403")

    # A cross-site dev login: refused, no cookie.
    r = http("POST", base + "/console/api/login/dev", json_body={"token": human},
             headers={"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "cross-site"})
    ctx.check(r.status == 403 and not any(s.startswith("airlock_console=") for s in r.header_all("Set-Cookie")),
              f"a cross-site dev login: {r}, want 403 and no cookie")

    # CSRF: a held write, approval attempts without / with a wrong header, then a proper reject.
    held = held_write(ctx, f"UPDATE customers SET city = 'Csrf-{secrets.token_hex(2)}' WHERE id = 4")
    rid = held["review_id"]
    for label, hdrs in (("no CSRF header", {}), ("a wrong CSRF header", {"X-Airlock-CSRF": "wrong-" + csrf[:4]})):
        r = http("POST", f"{base}/console/api/reviews/{rid}/approve", cookie=cookie, json_body={}, headers=hdrs)
        ctx.check(r.status == 403 and (r.json() or {}).get("code") == "csrf_failed",
                  f"approve with {label}: {r}, want 403 csrf_failed")
        ctx.check((r.headers.get("Content-Type") or "").startswith("application/problem+json"),
                  f"approve with {label}: Content-Type {r.headers.get('Content-Type')}")
    r = http("POST", base + "/console/api/logout", cookie=cookie)
    ctx.check(r.status == 403 and (r.json() or {}).get("code") == "csrf_failed", f"logout without CSRF: {r}")
    r = http("POST", f"{base}/console/api/reviews/{rid}/approve", cookie=cookie,
             headers={"X-Airlock-CSRF": csrf, "Content-Type": "text/plain"}, json_body={})
    ctx.check(r.status in (403, 415), f"approve with text/plain: {r}, want 403 or 415")
    v = http("GET", f"{base}/console/api/reviews/{rid}", cookie=cookie, headers=proof)
    ctx.check(v.status == 200 and v.json().get("status") == "pending_review", f"after the refused approvals: {v}")
    r = http("POST", f"{base}/console/api/reviews/{rid}/reject", cookie=cookie,
             headers={"X-Airlock-CSRF": csrf}, json_body={"reason": "console test: CSRF check"})
    ctx.check(r.status == 200 and r.json().get("status") == "rejected", f"reject with the CSRF header: {r}")

    # The cookie is no API credential; a bearer token is no console credential.
    r = http("GET", base + "/v1/connections", cookie=cookie)
    ctx.check(r.status == 401, f"/v1/connections with only the console cookie: {r}, want 401")
    r = http("GET", base + "/console/api/me", token=ctx.agent())
    ctx.check(r.status == 401, f"/console/api/me with an agent bearer token: {r}, want 401")
    r = http("GET", base + "/console/api/reviews", token=ctx.agent())
    ctx.check(r.status == 401, f"/console/api/reviews with an agent bearer token: {r}, want 401")

    # No cookie, no console; a human who is no auditor reads no audit log or recordings.
    for path in ("/console/api/me", "/console/api/reviews", "/console/api/reviews/events", "/console/api/audit",
                 "/console/api/sessions"):
        r = http("GET", base + path, timeout=10)
        ctx.check(r.status == 401, f"GET {path} without a session: {r.status}, want 401")
    r = http("POST", base + "/console/api/login/dev", json_body={"token": ctx.token("frank", "", "human")},
             headers={"Origin": base})
    ctx.require(r.status == 200, f"dev login as frank: {r}")
    frank = next(s.split(";")[0] for s in r.header_all("Set-Cookie") if s.startswith("airlock_console="))
    frank_proof = {"X-Airlock-CSRF": (r.json() or {}).get("csrf_token", "")}
    r = http("GET", base + "/console/api/audit", cookie=frank, headers=frank_proof)
    ctx.check(r.status == 403 and (r.json() or {}).get("code") == "not_an_admin",
              f"/console/api/audit as a human in no group: {r}, want 403 not_an_admin")
    sid = ctx.ids.get("session")
    if sid:
        for path in (f"/console/api/sessions/{sid}", f"/console/api/sessions/{sid}/recording"):
            r = http("GET", base + path, cookie=frank, headers=frank_proof)
            ctx.check(r.status in (403, 404) and (r.json() or {}).get("code") != "csrf_failed",
                      f"GET {path} as a human in no group: {r}, want 403 or 404")
            r = http("GET", base + path, cookie=cookie)
            ctx.check(r.status == 403, f"GET {path} as an auditor with only the cookie: {r.status}, want 403")
            r = http("GET", base + path, cookie=cookie, headers=proof)
            ctx.check(r.status == 200, f"GET {path} as an auditor: {r.status}, want 200")

    # Sign-out: the old cookie is worth nothing afterwards.
    r = http("POST", base + "/console/api/logout", cookie=cookie, headers={"X-Airlock-CSRF": csrf},
             json_body={})
    ctx.check(r.status == 204, f"logout: {r}, want 204")
    for path in ("/console/api/me", "/console/api/reviews"):
        r = http("GET", base + path, cookie=cookie, headers=proof)
        ctx.check(r.status == 401, f"GET {path} with the signed-out cookie: {r}, want 401")


SCENARIOS: list[tuple[str, Callable[[Ctx], None]]] = [
    ("double", scenario_double),
    ("dev", scenario_dev),
    ("link", scenario_link),
    ("approve", scenario_approve),
    ("reject", scenario_reject),
    ("invisible", scenario_invisible),
    ("live", scenario_live),
    ("audit", scenario_audit),
    ("replay", scenario_replay),
    ("oidc", scenario_oidc),
    ("idtoken", scenario_idtoken),
    ("crossport", scenario_crossport),
    ("security", scenario_security),
]


def main() -> int:
    ap = argparse.ArgumentParser(description="the approver console in a real browser")
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--idp-url", required=True)
    ap.add_argument("--airlock-bin", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--oidc-client-id", default="airlock-console")
    ap.add_argument("--oidc-secret-env", default="AIRLOCK_TEST_OIDC_SECRET")
    ap.add_argument("--ssh-connection", default="box")
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--server-log", help="the server's stderr (its startup banner has the sign-in link)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--results", help="write {passed, failed: [names]} here (JSON)")
    ap.add_argument("--only", help="comma-separated scenario names")
    args = ap.parse_args()

    artifacts = Path(args.artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    for old in artifacts.glob("*.png"):
        old.unlink()
    ctx = Ctx(
        base=args.base_url.rstrip("/"), idp=args.idp_url.rstrip("/"), airlock_bin=args.airlock_bin,
        config=args.config, data_dir=args.data_dir, workdir=args.workdir, oidc_client_id=args.oidc_client_id,
        oidc_secret=os.environ.get(args.oidc_secret_env, ""),
        oidc_redirect=args.base_url.rstrip("/") + "/console/callback",
        ssh_connection=args.ssh_connection, artifacts=artifacts,
        server_log=Path(args.server_log) if args.server_log else None,
    )
    only = set(args.only.split(",")) if args.only else None
    unknown = (only or set()) - {n for n, _ in SCENARIOS}
    if unknown:
        print(f"unknown scenarios: {sorted(unknown)}", file=sys.stderr)
        return 2
    expect.set_options(timeout=UI_TIMEOUT_MS)
    passed: list[str] = []
    failed: list[str] = []
    with sync_playwright() as pw:
        # Debian's chromium; Playwright never downloads a browser here.
        ctx.browser = pw.chromium.launch(executable_path=args.chromium, headless=True)
        for name, fn in SCENARIOS:
            if only and name not in only:
                continue
            ctx.scenario = name
            ctx.problems = []
            ctx.last_page = ctx.page
            ctx.page_errors.clear()
            started = time.monotonic()
            print(f"-- {name}", flush=True)
            error = None
            try:
                fn(ctx)
            except Exception as e:  # Failed, Playwright's assertion and timeout errors, anything
                error = f"{type(e).__name__}: {e}"
                if not isinstance(e, (Failed, AssertionError)):
                    error += "\n" + "".join(traceback.format_exc(limit=4))
            problems = list(ctx.problems) + list(ctx.page_errors)
            if error:
                problems.append(error)
            took = time.monotonic() - started
            if problems:
                failed.append(name)
                print(f"FAIL {name} ({took:.1f}s)", flush=True)
                for p in problems:
                    print("    " + p.replace("\n", "\n    "), flush=True)
                for candidate in (ctx.last_page, ctx.page):
                    if candidate is not None and not candidate.is_closed():
                        ctx.shot(candidate, f"{name}-FAILED")
                        break
            else:
                passed.append(name)
                print(f"ok   {name} ({took:.1f}s)", flush=True)
        ctx.browser.close()
    if args.results:
        Path(args.results).write_text(json.dumps({"passed": passed, "failed": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
