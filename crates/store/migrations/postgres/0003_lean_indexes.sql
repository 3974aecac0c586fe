-- Every usage row and trace row pays for each index on insert, and these are the hottest
-- tables. In-flight requests are a handful of rows: index only those (stale-request cleanup).
-- Ids are UUIDv7, so traces can be aged out by id range instead of a time index; provider
-- filters over time ranges use the created_at index (rollups serve the dashboards).
DROP INDEX usage_status;
CREATE INDEX usage_in_flight ON usage_records(created_at) WHERE status IN ('pending', 'streaming');
DROP INDEX usage_provider_created;
DROP INDEX attempt_traces_started;
