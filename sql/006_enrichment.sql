-- streamproc 006: server-side enrichment.
--
-- bots_daily: page views and clicks whose user agent is a bot (crawler, uptime
-- monitor, HTTP library, headless browser), per site, UTC day and bot name. They
-- count here only, never as page views or visitors. Small (one row per site, day
-- and bot) and left unpartitioned.
--
-- visitor_sessions: the state of server-side sessions (docs/sessions.md). One row
-- per derived session: the visitor it belongs to and the time span of its events,
-- so the next event of that visitor joins it (within `session_timeout_s`) or
-- starts a new one. Rows whose last event is older than the ledger retention are
-- pruned with the ledger. No index on the times: they change with every batch,
-- and updates stay HOT.
CREATE TABLE bots_daily (
    site   text   NOT NULL,
    day    date   NOT NULL,
    bot    text   NOT NULL,
    events bigint NOT NULL,
    PRIMARY KEY (site, day, bot)
);

CREATE TABLE visitor_sessions (
    site     text   NOT NULL,
    visitor  bigint NOT NULL,
    session  bigint NOT NULL,
    first_ms bigint NOT NULL,
    last_ms  bigint NOT NULL,
    PRIMARY KEY (site, visitor, session)
) WITH (fillfactor = 70);
