-- streamproc 010: bots_daily (006) and event_props_daily (008) become range-partitioned
-- by `day`, like the other daily rollups (002): monthly partitions <table>_pYYYYMM made
-- ahead by `streamproc maintain` (and `setup`), dropped past the daily retention
-- (400 days; `--retain daily=DAYS`, `--retain event_props_daily=DAYS`). Until then they
-- grew forever.
--
-- Each table keeps its name, columns and primary key (which contains `day`); its rows move
-- into the DEFAULT partition, and the first `maintain` afterwards moves them on into
-- monthly partitions. Owner and privileges of the old table are given to the new one and
-- to its DEFAULT partition, exactly: a deployment whose grants differ from the owner's
-- default privileges (deploy/postgres/roles.sql narrows some) keeps them.
--
-- Live daemons: both tables are locked ACCESS EXCLUSIVE before anything else, in one
-- statement and in the order a batch writes them (streamproc.core.rollups.ALL: bots_daily,
-- then event_props_daily). A batch holding bots_daily that goes on to event_props_daily
-- then never waits on this migration while it waits on that batch (a deadlock that
-- Postgres would end by failing one of them). A batch that waits for the locks writes into
-- the new table once this commits (Postgres looks the name up again after the wait), or
-- times out (`lock_timeout`) and is retried; rows committed before are copied. No row is
-- lost or doubled either way.

-- The copy has no statement limit; a waiting lock still has the session's lock_timeout.
SET LOCAL statement_timeout = 0;

LOCK TABLE bots_daily, event_props_daily IN ACCESS EXCLUSIVE MODE;

DO $$
DECLARE
    t text;
    old_oid oid;
    owner_name text;
    part text;
    g record;
BEGIN
    FOREACH t IN ARRAY ARRAY['bots_daily', 'event_props_daily'] LOOP
        old_oid := to_regclass(t);
        SELECT c.relowner::regrole::text INTO owner_name FROM pg_class c WHERE c.oid = old_oid;
        -- Rename the old table and its primary key index, so the new ones get the old names.
        EXECUTE format('ALTER TABLE %I RENAME TO %I', t, t || '_unpartitioned');
        EXECUTE format('ALTER INDEX %I RENAME TO %I', t || '_pkey', t || '_unpartitioned_pkey');
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING ALL) PARTITION BY RANGE (day)',
                       t, t || '_unpartitioned');
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', t || '_default', t);
        FOREACH part IN ARRAY ARRAY[t, t || '_default'] LOOP
            -- owner_name comes from regrole's output: already quoted where needed.
            EXECUTE format('ALTER TABLE %I OWNER TO %s', part, owner_name);
            -- Exactly the old table's grants: first take away what default privileges gave.
            FOR g IN
                SELECT DISTINCT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS who
                  FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
                 WHERE c.oid = to_regclass(part) AND a.grantee <> c.relowner
            LOOP
                EXECUTE format('REVOKE ALL ON %I FROM %s', part, g.who);
            END LOOP;
            FOR g IN
                SELECT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS who,
                       a.privilege_type AS what, a.is_grantable AS grantable
                  FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
                 WHERE c.oid = old_oid AND a.grantee <> c.relowner
            LOOP
                EXECUTE format('GRANT %s ON %I TO %s%s', g.what, part, g.who,
                               CASE WHEN g.grantable THEN ' WITH GRANT OPTION' ELSE '' END);
            END LOOP;
        END LOOP;
        EXECUTE format('INSERT INTO %I SELECT * FROM %I', t, t || '_unpartitioned');
        EXECUTE format('DROP TABLE %I', t || '_unpartitioned');
    END LOOP;
END
$$;
