-- Executions held for human review. One row per held request; the full record is JSON and
-- every state change is a compare-and-swap on `version`, so two approvers or two runs can
-- never both win.
CREATE TABLE IF NOT EXISTS reviews (
    id              TEXT PRIMARY KEY,
    execution_id    TEXT NOT NULL UNIQUE,
    status          TEXT NOT NULL,
    requester       TEXT NOT NULL,          -- issuer/subject
    idempotency_key TEXT,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    version         INTEGER NOT NULL,
    record          TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS reviews_idempotency ON reviews (requester, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS reviews_status ON reviews (status, created_at);
