-- streamproc 006: the exactly-once ledger as one row per batch and stream.
--
-- `applied_entries` took one row (and one index entry) per event: 10-12 us of
-- Postgres time per event, the largest single cost of a batch. A row here holds
-- every entry id a transaction applied from one stream (space-separated, as
-- Redis spells them), with the span of their id times for lookups:
--
--   * a batch read with XREADGROUP `>` (a first delivery to the group) takes a
--     shared per-stream advisory lock, looks for rows whose span overlaps its
--     own (normally none), and inserts one row;
--   * a redelivered batch (own pending entries after a restart, entries
--     reclaimed from another consumer) takes that lock exclusively: it waits
--     for every transaction in flight on the stream, then sees all they
--     committed, so an entry applied by a batch still committing is never
--     applied twice.
--
-- Two transactions that could hold the same entry therefore never claim it
-- at once (first deliveries to one group are disjoint). `capped` is true when
-- any entry of the row was folded with a value capped to "(other)" (see 005).
-- Rows of `applied_entries` written before this migration are still consulted
-- and pruned; nothing writes to it any more.
CREATE TABLE applied_batches (
    stream_id smallint NOT NULL,
    first_ms  bigint   NOT NULL,
    last_ms   bigint   NOT NULL,
    ids       bytea    NOT NULL,
    capped    boolean  NOT NULL DEFAULT false
);
CREATE INDEX applied_batches_span ON applied_batches (stream_id, last_ms);
ALTER TABLE applied_batches ALTER COLUMN ids SET STORAGE EXTERNAL;
