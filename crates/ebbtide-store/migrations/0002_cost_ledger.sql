-- The cost ledger: one line per UTC day, instance (worker) and tenant; the
-- idle share of an instance is the line whose tenant is '' (a NULL would
-- defeat the primary key's upsert). Amounts are in the engine's exact unit
-- (micro-dollar-milliseconds per hour), added up as the engine books them.
CREATE TABLE cost_ledger (
    day            INTEGER NOT NULL,
    worker         INTEGER NOT NULL,
    tenant         TEXT    NOT NULL,
    instance       TEXT,
    pool           TEXT    NOT NULL,
    provider       TEXT    NOT NULL,
    region         TEXT,
    shape          TEXT    NOT NULL,
    market         TEXT    NOT NULL,
    zone           TEXT,
    capacity       INTEGER NOT NULL,
    cost           INTEGER NOT NULL,
    on_demand_cost INTEGER NOT NULL,
    slot_ms        INTEGER NOT NULL,
    idle_ms        INTEGER NOT NULL,
    jobs           INTEGER NOT NULL,
    PRIMARY KEY (day, worker, tenant)
) WITHOUT ROWID;

-- Which days changed since their report was last published: a day is due
-- while revision > reported_revision.
CREATE TABLE cost_days (
    day               INTEGER PRIMARY KEY,
    revision          INTEGER NOT NULL,
    reported_revision INTEGER NOT NULL DEFAULT 0
);
