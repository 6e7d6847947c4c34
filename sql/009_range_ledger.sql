-- streamproc 009: the exactly-once ledger as ranges of entry ids.
--
-- `applied_entries` took a row and an index entry per event: a fifth of the rows
-- and of the WAL a batch writes. A batch read with XREADGROUP `>` holds
-- consecutive entries of each stream: nothing can enter the stream between two of
-- them later (new ids only ever go after the last one). So one row per run of
-- consecutive counted entries records them all: `ids` is the closed range from the
-- first to the last entry of the run, each entry id `ms-seq` as the exact number
-- ms * 2^64 + seq. A run stops at an entry the batch does not count (one sent to
-- the dead-letter stream), so a range never covers an entry that was not counted.
--
-- The exclusion constraint is what makes this exactly-once: no two rows of a
-- stream may overlap. Like a unique index, it makes a transaction whose range
-- overlaps one still in flight wait for it (INSERT ... ON CONFLICT DO NOTHING),
-- then skip it if it committed. Whatever hands the same entry to two transactions
-- (a reclaim racing a zombie consumer, a retry racing a lost connection's COMMIT,
-- a Redis failover or restart that rewinds the group), their rows overlap, and
-- only one commits. A range that conflicts is retried as one single-entry range per
-- entry, which counts exactly the entries nobody counted; so are batches of
-- redelivered entries (own pending, reclaimed), which need not be consecutive.
--
-- `capped`: some entry of the row was folded with a value capped to "(other)"
-- (see 005). Not partitioned (Postgres 15 has no exclusion constraints on
-- partitioned tables): a row per batch is small, and the daemon prunes it by the
-- same rule as before. btree_gist gives the constraint `=` on stream_id; it ships
-- with Postgres (Debian: in postgresql-NN) and is a trusted extension, so the
-- migrating role needs only CREATE on the database.
CREATE EXTENSION IF NOT EXISTS btree_gist SCHEMA public;

CREATE TABLE applied_ranges (
    stream_id smallint NOT NULL,
    ids       numrange NOT NULL,
    capped    boolean  NOT NULL DEFAULT false,
    CONSTRAINT applied_ranges_no_overlap EXCLUDE USING gist (stream_id WITH =, ids WITH &&)
);

-- Entries applied before this migration, one single-entry range each; the old
-- table is left empty (its partitions are still maintained, nothing writes it).
SET LOCAL statement_timeout = 0;
INSERT INTO applied_ranges (stream_id, ids, capped)
SELECT stream_id, numrange(k, k, '[]'), capped
FROM (SELECT stream_id, entry_ms::numeric * 18446744073709551616 + entry_seq AS k, capped FROM applied_entries) e;
DELETE FROM applied_entries;
