-- Retention ages each stored class on its own schedule. `retention_state` records what has
-- happened to a usage_bodies row, as bits: 1 = the body columns hold base64(deflate(text)),
-- 2 = the bodies were dropped, 4 = the headers were dropped (a row with both dropped is
-- deleted instead). Every retention step is then a range scan of one index,
-- (retention_state, created_at): it reads only rows it changes, never the ones an earlier
-- step already handled, which a created_at index alone would make each batch walk again.
-- That index also serves deleting whole rows by age, so the created_at index goes.
ALTER TABLE usage_bodies ADD COLUMN retention_state BIGINT NOT NULL DEFAULT 0;
DROP INDEX usage_bodies_created;
CREATE INDEX usage_bodies_retention ON usage_bodies(retention_state, created_at);
