-- streamproc: least-privilege Postgres roles.
--
-- Three roles, one schema:
--
--   owner  (streamproc_owner)  owns the schema and every table in it; the only role that
--                              changes the schema. Used by `streamproc migrate` / `streamproc setup`.
--   daemon (streamproc_daemon) what `streamproc run` needs and nothing more:
--                                rollup tables    SELECT, INSERT, UPDATE  (INSERT ... ON CONFLICT DO UPDATE)
--                                applied_ranges,
--                                applied_entries,
--                                producer_ids     SELECT, INSERT, DELETE  (the ledger; DELETE = retention prune)
--                                streams          SELECT, INSERT          (+ USAGE on its identity sequence)
--                                visitor_runs     SELECT, INSERT, UPDATE, DELETE (server-side sessions)
--                                sessions,
--                                sessions_daily   + DELETE (a late event that joins two derived sessions
--                                                 moves the absorbed one's rows into the survivor)
--                                schema_migrations SELECT                 (the "is it migrated?" check)
--                              It cannot create, alter, drop or truncate anything, nor DELETE other rollup rows.
--   reader (streamproc_reader) SELECT on the rollups and schema_migrations: `streamproc report`,
--                              dashboards, ad-hoc SQL. Not the ledger (producer ids are the producers' strings).
--
-- Run it as a superuser (or a role with CREATEROLE that may grant on the database), in the database
-- that holds the tables, TWICE on a first install, and it is safe to run again at any time:
--
--   psql -X -v ON_ERROR_STOP=1 -d analytics -v schema=streamproc -f deploy/postgres/roles.sql
--   streamproc setup --database-url postgresql://streamproc_owner@db/analytics ...   # migrations, as the owner
--   psql -X -v ON_ERROR_STOP=1 -d analytics -v schema=streamproc -f deploy/postgres/roles.sql
--
-- The first run creates the roles, the schema (owned by the owner) and the DEFAULT PRIVILEGES; the
-- second one, once the tables exist, narrows them table by table (the ledger gets DELETE instead of
-- UPDATE, schema_migrations SELECT only). Tables that later migrations add get the rollup grants
-- (daemon SELECT/INSERT/UPDATE, reader SELECT) by themselves through the default privileges; run the
-- script again after a migration that adds a table of another kind.
--
-- psql variables (all optional): schema (default streamproc), owner, daemon, reader (role names,
-- default streamproc_owner / streamproc_daemon / streamproc_reader). Several deployments in one
-- cluster use their own role names: roles are cluster-wide, the role-level settings below too.
--
-- Passwords are not set here (they would end up in shell history and `ps`): set them with psql's
-- `\password streamproc_daemon` (sends a SCRAM verifier, never the password), or use certificate
-- or peer authentication in pg_hba.conf. Allow the roles only over `hostssl` lines.

\set ON_ERROR_STOP on

\if :{?schema}
\else
\set schema streamproc
\endif
\if :{?owner}
\else
\set owner streamproc_owner
\endif
\if :{?daemon}
\else
\set daemon streamproc_daemon
\endif
\if :{?reader}
\else
\set reader streamproc_reader
\endif

-- One transaction: a daemon running meanwhile sees the old grants or the new ones, never a gap.
BEGIN;

-- Roles (idempotent) ---------------------------------------------------------------------------

SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') AS create_owner,
       NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'daemon') AS create_daemon,
       NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'reader') AS create_reader \gset
\if :create_owner
CREATE ROLE :"owner";
\endif
\if :create_daemon
CREATE ROLE :"daemon";
\endif
\if :create_reader
CREATE ROLE :"reader";
\endif
ALTER ROLE :"owner" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE :"daemon" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE :"reader" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;

-- The daemon sets these itself through its connection options; the role-level values keep them in
-- force where options are dropped (PgBouncer ignores the `options` startup parameter) and for any
-- other session opened with these credentials. Same values as streamproc/sink.py.
ALTER ROLE :"daemon" SET statement_timeout = '30s';
ALTER ROLE :"daemon" SET lock_timeout = '10s';
ALTER ROLE :"daemon" SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE :"daemon" SET search_path = :"schema";
ALTER ROLE :"reader" SET default_transaction_read_only = on;
ALTER ROLE :"reader" SET statement_timeout = '5min';
ALTER ROLE :"reader" SET search_path = :"schema";

-- Database and schema ----------------------------------------------------------------------------

-- The schema is created here, owned by the owner, so `streamproc migrate` (which only creates a
-- schema that does not exist yet) needs no CREATE on the database.
GRANT CONNECT ON DATABASE :"DBNAME" TO :"owner";
GRANT CONNECT ON DATABASE :"DBNAME" TO :"daemon", :"reader";

-- The range ledger (migration 009) needs btree_gist for its exclusion constraint. Created here,
-- by the superuser running this script, so the owner needs no CREATE on the database either.
CREATE EXTENSION IF NOT EXISTS btree_gist SCHEMA public;

CREATE SCHEMA IF NOT EXISTS :"schema" AUTHORIZATION :"owner";
ALTER SCHEMA :"schema" OWNER TO :"owner";
REVOKE ALL ON SCHEMA :"schema" FROM PUBLIC;
GRANT USAGE ON SCHEMA :"schema" TO :"daemon", :"reader";   -- USAGE, not CREATE: no new tables

-- Tables and sequences the owner creates from now on (later migrations): rollup grants.
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA :"schema"
    GRANT SELECT, INSERT, UPDATE ON TABLES TO :"daemon";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA :"schema"
    GRANT USAGE ON SEQUENCES TO :"daemon";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA :"schema"
    GRANT SELECT ON TABLES TO :"reader";

-- Tables that exist now ----------------------------------------------------------------------------

SELECT to_regclass(format('%I.%I', :'schema', 'applied_entries')) IS NOT NULL AS migrated \gset
\if :migrated
-- Every table of the schema is a rollup unless named below.
REVOKE ALL ON ALL TABLES IN SCHEMA :"schema" FROM :"daemon", :"reader";
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA :"schema" TO :"daemon";
GRANT USAGE ON ALL SEQUENCES IN SCHEMA :"schema" TO :"daemon";
GRANT SELECT ON ALL TABLES IN SCHEMA :"schema" TO :"reader";

-- The exactly-once ledger: rows are claimed (INSERT ... ON CONFLICT DO NOTHING RETURNING) and pruned.
REVOKE UPDATE ON :"schema".applied_entries, :"schema".producer_ids FROM :"daemon";
GRANT DELETE ON :"schema".applied_entries, :"schema".producer_ids TO :"daemon";
REVOKE SELECT ON :"schema".applied_entries, :"schema".producer_ids FROM :"reader";
-- Since migration 009 the ledger is applied_ranges (applied_entries is kept empty): the same rules.
SELECT format('REVOKE UPDATE ON %I.applied_ranges FROM %I; GRANT DELETE ON %I.applied_ranges TO %I;'
              ' REVOKE SELECT ON %I.applied_ranges FROM %I;',
              :'schema', :'daemon', :'schema', :'daemon', :'schema', :'reader')
 WHERE to_regclass(format('%I.%I', :'schema', 'applied_ranges')) IS NOT NULL \gexec
-- The ledger's partitions (migration 002) got the table-wide grants above: give them the parent's.
SELECT format('REVOKE UPDATE ON %I.%I FROM %I; REVOKE SELECT ON %I.%I FROM %I;',
              :'schema', c.relname, :'daemon', :'schema', c.relname, :'reader')
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = to_regclass(format('%I.%I', :'schema', 'applied_entries')) \gexec
-- Server-side sessions (migrations 006-007, docs/sessions.md): the per-visitor state is pruned with
-- the ledger, and a late event that joins two derived sessions moves the absorbed one's rows.
SELECT format('GRANT DELETE ON %I.visitor_runs, %I.sessions, %I.sessions_daily TO %I;',
              :'schema', :'schema', :'schema', :'daemon')
 WHERE to_regclass(format('%I.%I', :'schema', 'visitor_runs')) IS NOT NULL \gexec
-- Stream names -> small ids: registered once, never changed.
REVOKE UPDATE ON :"schema".streams FROM :"daemon";
-- Written by `streamproc migrate` only; the daemon and reports just check the version.
REVOKE INSERT, UPDATE ON :"schema".schema_migrations FROM :"daemon";
\echo streamproc roles: grants applied to the tables of schema :"schema"
\else
\echo streamproc roles: schema :"schema" has no tables yet: run "streamproc setup" (or migrate) as :"owner", then run this script again
\endif

COMMIT;
