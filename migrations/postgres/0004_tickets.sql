-- Single-use shell tickets, shared by every instance on the store (a ticket issued by one
-- instance opens a shell on another). Only the SHA-256 of a ticket is kept: the store never
-- holds one that could be used.
CREATE TABLE IF NOT EXISTS airlock_shell_tickets (
    digest     TEXT PRIMARY KEY,
    connection TEXT NOT NULL,
    principal  JSONB NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS airlock_shell_tickets_expiry ON airlock_shell_tickets (expires_at);
