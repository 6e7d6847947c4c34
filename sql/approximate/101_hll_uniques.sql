-- streamproc 101 (approximate uniques, applied only when `uniques = "approximate"`):
-- one HyperLogLog per site and day (and per path, per dimension value) instead of
-- one row per visitor or session. Sketches merge inside the upsert (hll_union),
-- so each batch updates a handful of rows, and merging is idempotent: adding a
-- visitor twice changes nothing.
--
-- Needs the `hll` extension (Debian/Ubuntu: postgresql-NN-hll; also on most
-- managed Postgres services) in the `public` schema. Creating it takes a
-- superuser, or a role allowed to create extensions; if this statement fails,
-- have an administrator run `CREATE EXTENSION hll SCHEMA public` once per
-- database, then migrate again.
CREATE EXTENSION IF NOT EXISTS hll SCHEMA public;

-- Partitioned by day like the exact sets they replace (see 002 and
-- `streamproc maintain`).
CREATE TABLE visitors_daily_hll (
    site     text NOT NULL,
    day      date NOT NULL,
    visitors hll  NOT NULL,
    PRIMARY KEY (site, day)
) PARTITION BY RANGE (day);
CREATE TABLE visitors_daily_hll_default PARTITION OF visitors_daily_hll DEFAULT;

CREATE TABLE path_visitors_daily_hll (
    site     text NOT NULL,
    day      date NOT NULL,
    path     text NOT NULL,
    visitors hll  NOT NULL,
    PRIMARY KEY (site, day, path)
) PARTITION BY RANGE (day);
CREATE TABLE path_visitors_daily_hll_default PARTITION OF path_visitors_daily_hll DEFAULT;

CREATE TABLE dimension_visitors_daily_hll (
    site      text NOT NULL,
    day       date NOT NULL,
    dimension text NOT NULL,
    value     text NOT NULL,
    visitors  hll  NOT NULL,
    PRIMARY KEY (site, day, dimension, value)
) PARTITION BY RANGE (day);
CREATE TABLE dimension_visitors_daily_hll_default PARTITION OF dimension_visitors_daily_hll DEFAULT;

CREATE TABLE sessions_daily_hll (
    site     text NOT NULL,
    day      date NOT NULL,
    sessions hll  NOT NULL,
    PRIMARY KEY (site, day)
) PARTITION BY RANGE (day);
CREATE TABLE sessions_daily_hll_default PARTITION OF sessions_daily_hll DEFAULT;
