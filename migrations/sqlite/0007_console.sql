-- The approvers' console (src/console). Sessions and sign-ins in progress live in the store
-- so that any instance serves any request. Only the SHA-256 of a session cookie or of an
-- OIDC `state` is kept: the store never holds a value that signs someone in.
CREATE TABLE IF NOT EXISTS console_sessions (
    digest       TEXT PRIMARY KEY,
    principal    TEXT NOT NULL,             -- JSON
    csrf         TEXT NOT NULL,             -- sent back in X-Airlock-CSRF; useless without the cookie
    created_at   TEXT NOT NULL,             -- RFC 3339 UTC, fixed width, sorts as text
    last_seen_at TEXT NOT NULL,
    expires_at   TEXT NOT NULL              -- the absolute end; the idle end is last_seen_at + idle
);
CREATE INDEX IF NOT EXISTS console_sessions_expiry ON console_sessions (expires_at);

CREATE TABLE IF NOT EXISTS console_logins (
    digest       TEXT PRIMARY KEY,          -- of the OIDC `state`, or of a sign-in link's code
    issuer       TEXT NOT NULL,             -- the configured issuer's name
    verifier     TEXT NOT NULL,             -- PKCE code_verifier
    nonce        TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    principal    TEXT,                      -- a one-time sign-in link's person (JSON); NULL for OIDC
    expires_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS console_logins_expiry ON console_logins (expires_at);
