-- Results kept after a run, for a bounded time, so that an agent that retries the request
-- (same Idempotency-Key) or asks later gets what the run answered instead of running it
-- again. The body is the result exactly as its requester was shown it: already masked.
CREATE TABLE IF NOT EXISTS kept_results (
    execution_id TEXT PRIMARY KEY,
    requester    TEXT NOT NULL,           -- issuer/subject
    body         TEXT NOT NULL,           -- JSON
    expires_at   TEXT NOT NULL            -- RFC 3339 UTC, fixed width, sorts as text
);
CREATE INDEX IF NOT EXISTS kept_results_expiry ON kept_results (expires_at);

-- Cancels of running jobs, for the instance running them (it polls for its own).
CREATE TABLE IF NOT EXISTS job_cancels (
    execution_id TEXT PRIMARY KEY,
    requested_at TEXT NOT NULL
);
