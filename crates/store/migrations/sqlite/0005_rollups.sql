-- Usage rollups: usage_records summed per hour (`period` = 'hour') and per UTC day ('day'),
-- per combination of the dimensions the dashboards filter and group by. Missing dimensions
-- are stored as '' (never NULL) so the primary key identifies a group and a bucket is
-- replaced atomically (delete its rows, insert them again in one transaction). Every figure
-- is a sum (money in nano-USD, like usage_records), so days are exact sums of their hours and
-- averages are `*_sum / *_count`. The rows hold no run time, so a re-run writes identical rows.
CREATE TABLE usage_rollups (
    period                   TEXT NOT NULL,
    bucket_start             INTEGER NOT NULL,
    user_id                  TEXT NOT NULL,
    api_key_id               TEXT NOT NULL,
    provider_id              TEXT NOT NULL,
    global_model_id          TEXT NOT NULL,
    requested_model          TEXT NOT NULL,
    api_format               TEXT NOT NULL,
    status                   TEXT NOT NULL,
    requests                 INTEGER NOT NULL,
    successes                INTEGER NOT NULL,
    failures                 INTEGER NOT NULL,
    input_tokens             INTEGER NOT NULL,
    output_tokens            INTEGER NOT NULL,
    cache_creation_5m_tokens INTEGER NOT NULL,
    cache_creation_1h_tokens INTEGER NOT NULL,
    cache_read_tokens        INTEGER NOT NULL,
    reasoning_tokens         INTEGER NOT NULL,
    input_cost               INTEGER NOT NULL,
    output_cost              INTEGER NOT NULL,
    cache_creation_5m_cost   INTEGER NOT NULL,
    cache_creation_1h_cost   INTEGER NOT NULL,
    cache_read_cost          INTEGER NOT NULL,
    request_cost             INTEGER NOT NULL,
    total_cost               INTEGER NOT NULL,
    actual_total_cost        INTEGER NOT NULL,
    latency_sum              INTEGER NOT NULL,
    latency_count            INTEGER NOT NULL,
    ttfb_sum                 INTEGER NOT NULL,
    ttfb_count               INTEGER NOT NULL,
    PRIMARY KEY (period, bucket_start, user_id, api_key_id, provider_id, global_model_id,
                 requested_model, api_format, status)
);

-- Progress of the rollup job: `hours_done` = the end (exclusive, ms) of the hours rolled up
-- so far; every earlier hour has been rolled up at least once.
CREATE TABLE rollup_state (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
