-- Single-use shell tickets, shared by every instance on the store (a ticket issued by one
-- instance opens a shell on another). Only the SHA-256 of a ticket is kept: the store never
-- holds one that could be used.
CREATE TABLE IF NOT EXISTS shell_tickets (
    digest     TEXT PRIMARY KEY,
    connection TEXT NOT NULL,
    principal  TEXT NOT NULL,             -- JSON
    expires_at TEXT NOT NULL              -- RFC 3339 UTC, fixed width, sorts as text
);
CREATE INDEX IF NOT EXISTS shell_tickets_expiry ON shell_tickets (expires_at);
