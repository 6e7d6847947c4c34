-- streamproc 011: a producer session's runs kept on its own `sessions` row.
--
-- Since 007 each producer session id had a `visitor_runs` row (its runs: ids and spans),
-- written beside its `sessions` row: on traffic where most sessions are new that was one
-- more row, and about 300 bytes of WAL, per event. Now the first run of a producer session
-- id is stored under the id's own hash (as before 007, and as with session_timeout_s = 0):
-- that row is the id's lock, and holds the id's other runs, if any, in these columns
-- (parallel arrays: run id, first and last event time in ms; NULL when the id has one run,
-- which costs a row nothing). `visitor_runs` keeps the runs of sessionless visitors.
-- See docs/sessions.md.
ALTER TABLE sessions
    ADD COLUMN run_ids    bigint[],
    ADD COLUMN run_firsts bigint[],
    ADD COLUMN run_lasts  bigint[];
