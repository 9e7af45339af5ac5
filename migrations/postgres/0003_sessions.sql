-- Recorded sessions (command executions, later interactive shells) in asciicast v2.
-- Every event line is its own row, written as it arrives, chained by SHA-256 so a
-- changed or missing line is detectable; the final digest goes into the audit end record.
CREATE TABLE IF NOT EXISTS airlock_sessions (
    id           TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    kind         TEXT NOT NULL,
    connection   TEXT NOT NULL,
    issuer       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    ended_at     TIMESTAMPTZ,
    status       TEXT NOT NULL,
    exit_code    BIGINT,
    digest       TEXT,
    record       JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS airlock_sessions_started ON airlock_sessions (started_at);
CREATE TABLE IF NOT EXISTS airlock_session_lines (
    session_id TEXT NOT NULL REFERENCES airlock_sessions (id),
    seq        BIGINT NOT NULL,
    line       TEXT NOT NULL,
    chain      TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
