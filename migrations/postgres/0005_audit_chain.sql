-- Tamper evidence: every audit event is a link of a SHA-256 hash chain (src/audit/chain.rs).
-- `hash` covers `prev_hash` (the previous event's hash), `seq` and `record::text`. Rows
-- already here are chained, in `seq` order, by the step that runs with this migration (in
-- its transaction; the ALTERs hold the table until it commits), which then makes both
-- columns NOT NULL: an instance still running an older Airlock fails closed instead of
-- writing an unchained event.
-- `airlock_audit_chain_head` holds the last link. Every append locks it (`FOR UPDATE`),
-- reads it, inserts its batch at `seq` = head + 1, ... and moves it, in one transaction, so
-- two instances never extend the same head and `seq` order is commit order.
ALTER TABLE airlock_audit_events ADD COLUMN IF NOT EXISTS prev_hash TEXT;
ALTER TABLE airlock_audit_events ADD COLUMN IF NOT EXISTS hash TEXT;
CREATE TABLE IF NOT EXISTS airlock_audit_chain_head (
    id   INT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
