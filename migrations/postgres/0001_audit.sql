-- Append-only audit log. One row per event (a request has a `begin` and an `end`).
-- `record` holds the full event as JSON; the other columns exist to filter and paginate.
CREATE TABLE IF NOT EXISTS airlock_audit_events (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    time         TIMESTAMPTZ NOT NULL,
    phase        TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    issuer       TEXT,
    subject      TEXT,
    connection   TEXT,
    outcome      TEXT,
    record       JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS airlock_audit_events_execution ON airlock_audit_events (execution_id, phase);
CREATE INDEX IF NOT EXISTS airlock_audit_events_time ON airlock_audit_events (time);
