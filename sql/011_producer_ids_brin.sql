-- streamproc 011: a producer id costs one index entry, not two.
--
-- `producer_ids` takes a row per event that carries an `id` (every event, from
-- browser SDKs). Its primary key (site, event_id) is what makes the dedup exact;
-- the btree on entry_ms served only the retention prune (`DELETE ... WHERE
-- entry_ms < $1`, every 10 minutes) and cost a second btree insert per event.
-- Rows arrive in roughly entry_ms order, so a BRIN index (one small summary per
-- 128 pages, kept up as ranges fill: autosummarize) finds the old rows as well
-- for the prune, for a fraction of the writes. Nothing reads producer_ids by
-- entry_ms on the batch path.
DROP INDEX producer_ids_entry_ms;
CREATE INDEX producer_ids_entry_ms ON producer_ids USING brin (entry_ms) WITH (autosummarize = on);
