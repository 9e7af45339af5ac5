-- Tamper evidence: every audit event is a link of a SHA-256 hash chain (src/audit/chain.rs).
-- `hash` covers `prev_hash` (the previous event's hash), `seq` and `record` exactly as
-- stored. Rows already here are chained, in `seq` order, by the step that runs with this
-- migration. `audit_chain_head` holds the last link; appends read and extend it in their
-- own transaction, and a new event's `seq` is the head's plus one.
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;
CREATE TABLE IF NOT EXISTS audit_chain_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
