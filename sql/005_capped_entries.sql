-- streamproc 005: remember which ledger entries were folded with a value capped to "(other)".
--
-- A batch over `max_keys_per_batch` distinct values folds the excess under
-- "(other)". If such an entry comes back later (a lost XACK) in a batch that is
-- not capped, its fold differs from what was counted, so the worker must fold
-- that batch again rather than take the repeat's sums back (see 003). Set only
-- on capped entries; false (the default, no table rewrite) for all others.
ALTER TABLE applied_entries ADD COLUMN capped boolean NOT NULL DEFAULT false;
