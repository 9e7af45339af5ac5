-- Recorded sessions (command executions, later interactive shells) in asciicast v2.
-- Every event line is its own row, written as it arrives, chained by SHA-256 so a
-- changed or missing line is detectable; the final digest goes into the audit end record.
CREATE TABLE IF NOT EXISTS sessions (
    id           TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    kind         TEXT NOT NULL,
    connection   TEXT NOT NULL,
    issuer       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    ended_at     TEXT,
    status       TEXT NOT NULL,             -- running | ended | interrupted
    exit_code    INTEGER,
    digest       TEXT,                      -- chain head after the last line
    record       TEXT NOT NULL              -- JSON: command, principal, sizes
);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions (started_at);
CREATE TABLE IF NOT EXISTS session_lines (
    session_id TEXT NOT NULL REFERENCES sessions (id),
    seq        INTEGER NOT NULL,
    line       TEXT NOT NULL,
    chain      TEXT NOT NULL,               -- hex SHA-256(previous chain || line)
    PRIMARY KEY (session_id, seq)
);
