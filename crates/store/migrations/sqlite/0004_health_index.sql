-- The health timeline counts failed attempts over a time range. 0003 dropped the time index
-- of attempt_traces (every trace row paid for it); failed attempts are the few that need one.
CREATE INDEX attempt_traces_failed_started ON attempt_traces(started_at) WHERE status = 'failed';
