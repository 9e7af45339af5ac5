-- Append-only audit log. One row per event (a request has a `begin` and an `end`).
-- `record` holds the full event as JSON; the other columns exist to filter and paginate.
CREATE TABLE IF NOT EXISTS audit_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    time         TEXT NOT NULL,             -- RFC 3339 UTC, fixed width, sorts as text
    phase        TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    issuer       TEXT,
    subject      TEXT,
    connection   TEXT,
    outcome      TEXT,
    record       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_events_execution ON audit_events (execution_id, phase);
CREATE INDEX IF NOT EXISTS audit_events_time ON audit_events (time);
