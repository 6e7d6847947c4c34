-- streamproc 002: time-bucketed rollups and the exactly-once ledger become
-- range-partitioned tables (native declarative partitioning).
--
-- Each table keeps its name, columns and primary key; only its storage changes.
-- Every primary key already contains the partition column, which Postgres
-- requires of a unique constraint on a partitioned table, and which keeps each
-- key globally unique: one key always routes to one partition. Writers and
-- readers go through the parent tables unchanged (INSERT ... ON CONFLICT (pk)
-- works on partitioned tables since Postgres 11).
--
--   rollups by `hour` (timestamptz) or `day` (date): monthly partitions <table>_pYYYYMM
--   applied_entries by `entry_ms` (bigint, ms):       daily partitions applied_entries_pYYYYMMDD
--
-- This migration creates only the DEFAULT partition of each table and moves the
-- existing rows into it. `streamproc maintain` (run it right after migrating,
-- then daily) creates the dated partitions, moving rows out of DEFAULT in the
-- same transaction, and drops partitions older than each table's retention.
-- See docs/partitioning.md.
--
-- Left unpartitioned on purpose:
--   sessions          key (site, session) has no time column; first_seen/last_seen
--                     change as events arrive, so a session has no fixed partition.
--   producer_ids      key (site, event_id) must be unique across all time: a
--                     partition key would have to join the primary key and the same
--                     producer id could then be counted once per partition.
--   streams           a small registry (stream name -> id), no time at all.
--   schema_migrations bookkeeping of `streamproc migrate`.

-- The conversion rewrites every table: on a large install it can take longer than
-- the session's 30 s statement timeout. Only for this transaction.
SET LOCAL statement_timeout = 0;

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT * FROM (VALUES
            ('pageviews_hourly', 'hour'),
            ('api_hourly', 'hour'),
            ('api_latency_hourly', 'hour'),
            ('conversions_hourly', 'hour'),
            ('events_hourly', 'hour'),
            ('pageviews_daily', 'day'),
            ('path_visitors_daily', 'day'),
            ('visitors_daily', 'day'),
            ('sessions_daily', 'day'),
            ('dimensions_daily', 'day'),
            ('clicks_grid_daily', 'day'),
            ('clicks_selector_daily', 'day'),
            ('applied_entries', 'entry_ms')
        ) AS v (name, col)
    LOOP
        -- Rename the old table and its primary key index, so the new ones get the old names.
        EXECUTE format('ALTER TABLE %I RENAME TO %I', t.name, t.name || '_unpartitioned');
        EXECUTE format('ALTER INDEX %I RENAME TO %I', t.name || '_pkey', t.name || '_unpartitioned_pkey');
        -- Same columns, defaults, NOT NULLs and primary key; partitioned by the time column.
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING ALL) PARTITION BY RANGE (%I)',
                       t.name, t.name || '_unpartitioned', t.col);
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', t.name || '_default', t.name);
        EXECUTE format('INSERT INTO %I SELECT * FROM %I', t.name, t.name || '_unpartitioned');
        EXECUTE format('DROP TABLE %I', t.name || '_unpartitioned');
    END LOOP;
END
$$;

-- LIKE copies no foreign key: the ledger's reference to its stream, as in 001.
ALTER TABLE applied_entries
    ADD CONSTRAINT applied_entries_stream_id_fkey FOREIGN KEY (stream_id) REFERENCES streams (id);
