-- Console queries at millions of rows (bench/results/scale.md).
-- Failed requests are the ones people filter for; a partial index holds only them, so normal
-- traffic (inserted pending, settled completed) never touches it. (PostgreSQL also gets
-- statistics for the heatmap's hour-of-week expression; SQLite has no such statistics.)
CREATE INDEX usage_failed ON usage_records(created_at) WHERE status = 'failed';
