-- When each token (so each instance launch) was issued, and until when the
-- durable ledger has booked the fleet's cost: a restarted scheduler charges
-- an adopted instance from the later of the two, so the time it ran while
-- no scheduler watched is booked too (and never twice).
ALTER TABLE bootstrap_tokens ADD COLUMN issued_at_ms INTEGER;

CREATE TABLE ledger_marks (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    booked_until_ms INTEGER NOT NULL
);
