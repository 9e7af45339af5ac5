"""A small OpenID Connect provider double for the console's browser test.

It speaks just enough of OIDC (authorization code flow with PKCE S256, RS256 ID tokens,
client_secret_basic) to sign one configured human in, and it is strict about what it
checks, so that the server under test cannot get by with a sloppy client:

  GET  /.well-known/openid-configuration   discovery (issuer, endpoints, jwks_uri, ...)
  GET  /jwks                               the RSA signing key generated at start (with kid)
  GET  /authorize                          checks the request, shows a login page
  POST /authorize/login                    "Continue": 302 to redirect_uri?code=...&state=...
  POST /token                              code -> {access_token, token_type, expires_in, id_token}
  GET  /_log                               what the double saw (JSON), for the test and for debugging
  POST /_tamper?with=KIND                  the next ID token issued is bad in one way (KIND: one of
                                           TAMPERINGS), so the test can check that the server refuses it

/authorize refuses (400 page, no redirect) an unknown client_id or a redirect_uri that is not
the registered one; other bad requests (response_type not `code`, no `openid` scope, no
S256 code_challenge, no state, no nonce) go back to the redirect_uri with
error=invalid_request. /token answers 401 invalid_client when the client does not
authenticate with HTTP Basic (when a secret is configured), and 400 invalid_grant for an
unknown, expired or already used code, a redirect_uri other than the authorization's, or a
code_verifier that does not hash to the code_challenge. A code is single-use: the first
redemption attempt consumes it, whether or not it succeeds (RFC 6749 4.1.2).

Usage:
  oidc_double.py --port-file FILE --client-id ID --redirect-uri URI [--client-secret-env NAME]
                 [--user NAME:GROUP,GROUP ...]
It binds a free loopback port, writes the port to FILE once it is listening, and serves
until killed. The issuer is http://127.0.0.1:PORT.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import html
import json
import os
import re
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

CODE_TTL_SECS = 60
TOKEN_TTL_SECS = 300
# Ways the next ID token can be wrong; a relying party must refuse each.
TAMPERINGS = ("wrong_nonce", "no_nonce", "wrong_aud", "wrong_iss", "expired", "bad_signature", "alg_none",
              "hs256_public_key")
VERIFIER_RE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
CHALLENGE_RE = re.compile(r"^[A-Za-z0-9\-_]{43}$")


def b64url_uint(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class Provider:
    def __init__(self, client_id: str, client_secret: str | None, redirect_uri: str, users: dict[str, list[str]]):
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.users = users
        self.issuer = ""  # set once the port is known
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "double-" + secrets.token_hex(4)
        self.lock = threading.Lock()
        self.transactions: dict[str, dict] = {}  # login page id -> validated /authorize params
        self.codes: dict[str, dict] = {}  # code -> grant
        self.log: list[dict] = []
        self.tamper: str | None = None  # applies to the next ID token only

    def record(self, **event) -> None:
        event["at"] = time.time()
        with self.lock:
            self.log.append(event)
            del self.log[:-200]

    def discovery(self) -> dict:
        i = self.issuer
        return {
            "issuer": i,
            "authorization_endpoint": f"{i}/authorize",
            "token_endpoint": f"{i}/token",
            "jwks_uri": f"{i}/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "scopes_supported": ["openid", "groups"],
            "claims_supported": ["iss", "aud", "sub", "exp", "iat", "nonce", "groups", "preferred_username"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"] if self.client_secret else ["none"],
        }

    def jwks(self) -> dict:
        pub = self.key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "alg": "RS256",
                    "kid": self.kid,
                    "n": b64url_uint(pub.n),
                    "e": b64url_uint(pub.e),
                }
            ]
        }

    def id_token(self, grant: dict) -> str:
        with self.lock:
            tamper, self.tamper = self.tamper, None
        if tamper:
            self.record(endpoint="token", tampered=tamper)
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "sub": grant["user"],
            "iat": now,
            "exp": now + TOKEN_TTL_SECS,
            "auth_time": grant["auth_time"],
            "nonce": grant["nonce"],
            "groups": self.users[grant["user"]],
            "preferred_username": grant["user"],
        }
        key, alg = self.key, "RS256"
        if tamper == "wrong_nonce":
            claims["nonce"] = "not-" + grant["nonce"]
        elif tamper == "no_nonce":
            del claims["nonce"]
        elif tamper == "wrong_aud":
            claims["aud"] = "some-other-client"
        elif tamper == "wrong_iss":
            claims["iss"] = self.issuer + "/elsewhere"
        elif tamper == "expired":
            claims["iat"], claims["exp"] = now - 3600, now - 1800
        elif tamper == "bad_signature":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # same kid, other key
        elif tamper == "alg_none":
            return jwt.encode(claims, None, algorithm="none", headers={"kid": self.kid})
        elif tamper == "hs256_public_key":
            # The classic confusion: HMAC keyed with the RSA public key the JWKS publishes.
            from cryptography.hazmat.primitives import serialization

            pem = self.key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            seg = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
            head = seg(json.dumps({"alg": "HS256", "typ": "JWT", "kid": self.kid}).encode())
            body = seg(json.dumps(claims).encode())
            sig = seg(hmac.new(pem, head + b"." + body, hashlib.sha256).digest())
            return (head + b"." + body + b"." + sig).decode()
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": self.kid})


class Handler(BaseHTTPRequestHandler):
    server_version = "oidc-double"
    provider: Provider  # set on the class by main()

    def log_message(self, fmt, *args):  # quiet; the /_log endpoint says what happened
        pass

    # -- helpers -----------------------------------------------------------------------------
    def send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def json(self, status: int, obj: dict, headers: dict | None = None) -> None:
        self.send(status, json.dumps(obj).encode(), "application/json", headers)

    def page(self, status: int, title: str, body_html: str) -> None:
        doc = (
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{html.escape(title)}</title></head><body><main>"
            f"<h1>{html.escape(title)}</h1>{body_html}</main></body></html>"
        )
        self.send(status, doc.encode(), "text/html; charset=utf-8")

    def redirect(self, location: str) -> None:
        self.send(302, b"", "text/plain", {"Location": location})

    def oauth_error(self, status: int, error: str, description: str, headers: dict | None = None) -> None:
        self.provider.record(endpoint="token", outcome=error, detail=description)
        self.json(status, {"error": error, "error_description": description}, headers)

    def form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return {"__bad_content_type__": ctype}
        parsed = parse_qs(raw, keep_blank_values=True)
        # A parameter sent twice is an error in OAuth (RFC 6749 3.1); keep it visible.
        return {k: (v[0] if len(v) == 1 else "\x00duplicate") for k, v in parsed.items()}

    # -- routes ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        p = self.provider
        if url.path == "/.well-known/openid-configuration":
            self.json(200, p.discovery())
        elif url.path == "/jwks":
            self.json(200, p.jwks())
        elif url.path == "/authorize":
            self.authorize(url.query)
        elif url.path == "/_log":
            with p.lock:
                self.json(200, {"events": list(p.log)})
        else:
            self.json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/authorize/login":
            self.login()
        elif url.path == "/_tamper":
            kind = parse_qs(url.query).get("with", [""])[0]
            if kind not in TAMPERINGS:
                return self.json(400, {"error": f"with= one of {TAMPERINGS}"})
            with self.provider.lock:
                self.provider.tamper = kind
            self.json(200, {"next_id_token": kind})
        elif url.path == "/token":
            self.token()
        else:
            self.json(404, {"error": "not_found"})

    def authorize(self, query: str) -> None:
        p = self.provider
        q = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        p.record(endpoint="authorize", params=q)
        # Errors about the client or its redirect URI are never redirected (RFC 6749 4.1.2.1).
        if q.get("client_id") != p.client_id:
            return self.page(400, "Unknown client", "<p>client_id is not registered here.</p>")
        if q.get("redirect_uri") != p.redirect_uri:
            return self.page(400, "Bad redirect URI", "<p>redirect_uri is not the one registered for this client.</p>")

        def back(description: str) -> None:
            p.record(endpoint="authorize", outcome="invalid_request", detail=description)
            params = {"error": "invalid_request", "error_description": description}
            if q.get("state"):
                params["state"] = q["state"]
            self.redirect(p.redirect_uri + "?" + urlencode(params))

        if q.get("response_type") != "code":
            return back("response_type must be code")
        if "openid" not in q.get("scope", "").split():
            return back("scope must contain openid")
        if q.get("code_challenge_method") != "S256":
            return back("code_challenge_method must be S256")
        if not CHALLENGE_RE.match(q.get("code_challenge", "")):
            return back("code_challenge missing or not a base64url SHA-256")
        if not q.get("state"):
            return back("state is required")
        if not q.get("nonce"):
            return back("nonce is required")
        txn = secrets.token_urlsafe(16)
        with p.lock:
            p.transactions[txn] = {**q, "created": time.time()}
        self.page(
            200,
            "Corp sign-in",
            '<form method="post" action="/authorize/login">'
            f'<input type="hidden" name="txn" value="{html.escape(txn)}">'
            '<p><label for="username">Username</label> '
            '<input id="username" name="username" autocomplete="username" required></p>'
            '<p><button type="submit">Continue</button></p>'
            "</form>",
        )

    def login(self) -> None:
        p = self.provider
        f = self.form()
        with p.lock:
            txn = p.transactions.pop(f.get("txn", ""), None)
        if txn is None or time.time() - txn["created"] > 600:
            return self.page(400, "Sign-in expired", "<p>Start again from the application.</p>")
        user = f.get("username", "")
        if user not in p.users:
            return self.page(403, "Unknown user", f"<p>No account {html.escape(user)!s} here.</p>")
        code = secrets.token_urlsafe(32)
        with p.lock:
            p.codes[code] = {
                "user": user,
                "client_id": txn["client_id"],
                "redirect_uri": txn["redirect_uri"],
                "challenge": txn["code_challenge"],
                "nonce": txn["nonce"],
                "scope": txn["scope"],
                "auth_time": int(time.time()),
                "expires": time.time() + CODE_TTL_SECS,
            }
        p.record(endpoint="login", user=user)
        self.redirect(txn["redirect_uri"] + "?" + urlencode({"code": code, "state": txn["state"]}))

    def client_authenticated(self, form: dict) -> tuple[bool, str]:
        p = self.provider
        auth = self.headers.get("Authorization") or ""
        if p.client_secret is None:
            if auth:
                return False, "this client is public; no client authentication expected"
            if form.get("client_id") != p.client_id:
                return False, "client_id missing or unknown"
            return True, ""
        if "client_secret" in form:
            return False, "client_secret_post is not supported; use HTTP Basic (client_secret_basic)"
        if not auth.lower().startswith("basic "):
            return False, "client authentication required (HTTP Basic)"
        try:
            raw = base64.b64decode(auth[6:].strip(), validate=True).decode()
            cid, secret = raw.split(":", 1)
        except Exception:
            return False, "malformed Basic credentials"
        # RFC 6749 2.3.1: both parts are form-urlencoded before base64.
        cid, secret = unquote_plus(cid), unquote_plus(secret)
        if cid != p.client_id or not secrets.compare_digest(secret, p.client_secret):
            return False, "client authentication failed"
        if "client_id" in form and form["client_id"] != cid:
            return False, "client_id in the body differs from the authenticated client"
        return True, ""

    def token(self) -> None:
        p = self.provider
        f = self.form()
        if "__bad_content_type__" in f:
            return self.oauth_error(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
        if any(v == "\x00duplicate" for v in f.values()):
            return self.oauth_error(400, "invalid_request", "a parameter was sent more than once")
        ok, why = self.client_authenticated(f)
        if not ok:
            return self.oauth_error(401, "invalid_client", why, {"WWW-Authenticate": 'Basic realm="oidc-double"'})
        if f.get("grant_type") != "authorization_code":
            return self.oauth_error(400, "unsupported_grant_type", "only authorization_code")
        with p.lock:
            grant = p.codes.pop(f.get("code", ""), None)  # single use: the first attempt consumes it
        if grant is None:
            return self.oauth_error(400, "invalid_grant", "unknown or already used code")
        if time.time() > grant["expires"]:
            return self.oauth_error(400, "invalid_grant", "code expired")
        if grant["client_id"] != p.client_id:
            return self.oauth_error(400, "invalid_grant", "code was issued to another client")
        if f.get("redirect_uri") != grant["redirect_uri"]:
            return self.oauth_error(400, "invalid_grant", "redirect_uri differs from the authorization request's")
        verifier = f.get("code_verifier", "")
        if not VERIFIER_RE.match(verifier):
            return self.oauth_error(400, "invalid_grant", "code_verifier missing or malformed")
        if not secrets.compare_digest(s256(verifier), grant["challenge"]):
            return self.oauth_error(400, "invalid_grant", "code_verifier does not match the code_challenge")
        p.record(endpoint="token", outcome="ok", user=grant["user"], auth="basic" if p.client_secret else "none")
        self.json(
            200,
            {
                "access_token": secrets.token_urlsafe(32),
                "token_type": "Bearer",
                "expires_in": TOKEN_TTL_SECS,
                "scope": grant["scope"],
                "id_token": p.id_token(grant),
            },
            {"Pragma": "no-cache"},
        )


def parse_user(spec: str) -> tuple[str, list[str]]:
    name, _, groups = spec.partition(":")
    return name, [g for g in groups.split(",") if g]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--redirect-uri", required=True)
    ap.add_argument("--client-secret-env", help="environment variable holding the client secret (none: public client)")
    ap.add_argument("--user", action="append", default=[], help="NAME:GROUP,GROUP (repeatable)")
    args = ap.parse_args()
    secret = None
    if args.client_secret_env:
        secret = os.environ.get(args.client_secret_env)
        if not secret:
            sys.exit(f"oidc_double: ${args.client_secret_env} is empty")
    users = dict(parse_user(u) for u in (args.user or ["carol:dba,auditors"]))
    provider = Provider(args.client_id, secret, args.redirect_uri, users)
    Handler.provider = provider
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    port = httpd.server_address[1]
    provider.issuer = f"http://127.0.0.1:{port}"
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(str(port))
    os.replace(tmp, args.port_file)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
