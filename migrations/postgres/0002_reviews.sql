-- Executions held for human review. One row per held request; the full record is JSON and
-- every state change is a compare-and-swap on `version`, so two approvers or two runs can
-- never both win, across instances.
CREATE TABLE IF NOT EXISTS airlock_reviews (
    id              TEXT PRIMARY KEY,
    execution_id    TEXT NOT NULL UNIQUE,
    status          TEXT NOT NULL,
    requester       TEXT NOT NULL,
    idempotency_key TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    version         BIGINT NOT NULL,
    record          JSONB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS airlock_reviews_idempotency ON airlock_reviews (requester, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS airlock_reviews_status ON airlock_reviews (status, created_at);
