-- streamproc 007: server-side session state, one row per visitor instead of one per session.
--
-- 006 kept one visitor_sessions row per derived session and serialised workers on a
-- visitor with a transaction-level advisory lock per visitor: a batch of thousands of
-- sessionless visitors took thousands of entries of Postgres's shared lock table
-- (max_locks_per_transaction x max_connections, 6 400 by default) and could exhaust it.
-- Now each visitor has one row holding its runs (parallel arrays: session id, first and
-- last event time in ms), locked with SELECT ... FOR UPDATE (a row lock lives in the
-- row, not in the lock table) or created with INSERT ... ON CONFLICT DO NOTHING; and a
-- batch writes one row per visitor. `last_ms` (the latest event of any run) drives the
-- pruning with the ledger. See docs/sessions.md.
DROP TABLE visitor_sessions;

CREATE TABLE visitor_runs (
    site     text     NOT NULL,
    visitor  bigint   NOT NULL,
    sessions bigint[] NOT NULL,
    firsts   bigint[] NOT NULL,
    lasts    bigint[] NOT NULL,
    last_ms  bigint   NOT NULL,
    PRIMARY KEY (site, visitor)
) WITH (fillfactor = 70);
