-- Console queries at millions of rows (bench/results/scale.md).
-- Failed requests are the ones people filter for; a partial index holds only them, so normal
-- traffic (inserted pending, settled completed) never touches it.
CREATE INDEX usage_failed ON usage_records(created_at) WHERE status = 'failed';
-- The activity heatmap groups by hour of the week. Without statistics on that expression the
-- planner guesses one group per row and sorts every row (an external merge sort on disk at
-- five million rows); with them it hashes 168 groups. Expression statistics need PostgreSQL 14+.
CREATE STATISTICS usage_hour_of_week ON (((created_at / 3600000) + 96) % 168) FROM usage_records;
