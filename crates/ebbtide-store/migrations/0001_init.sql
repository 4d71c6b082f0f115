-- Jobs: every accepted submission, from queued to a final outcome.
CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant          TEXT    NOT NULL,
    class           TEXT    NOT NULL,
    requirements    TEXT    NOT NULL,          -- JSON
    command         TEXT    NOT NULL,
    timeout_ms      INTEGER NOT NULL,
    max_attempts    INTEGER NOT NULL,
    state           TEXT    NOT NULL,          -- queued|assigned|running|succeeded|failed|cancelled|lost|rejected
    submitted_at_ms INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    worker          INTEGER,
    exit_code       INTEGER,
    reason          TEXT,
    cost_micros     INTEGER NOT NULL DEFAULT 0,
    finished_at_ms  INTEGER
);
CREATE INDEX jobs_by_tenant ON jobs (tenant, id);
CREATE INDEX jobs_live ON jobs (state) WHERE state IN ('queued', 'assigned', 'running');

-- Job output, in the order the agent streamed it.
CREATE TABLE job_logs (
    job   INTEGER NOT NULL REFERENCES jobs (id),
    seq   INTEGER NOT NULL,
    chunk BLOB    NOT NULL,
    PRIMARY KEY (job, seq)
);

-- One-time worker credentials: only a hash is stored, never the token.
CREATE TABLE bootstrap_tokens (
    token_hash    BLOB    PRIMARY KEY,
    worker        INTEGER NOT NULL,
    pool          TEXT    NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_at_ms    INTEGER
);
