-- Aether schema v1 (SQLite). Keep in step with ../postgres/0001_init.sql: the same tables,
-- columns and indexes; only the column types differ. Conventions: ids are UUIDv7 text,
-- timestamps are integer milliseconds since the epoch, money is integer nano-USD,
-- multipliers are integer parts-per-million, JSON is text.

CREATE TABLE users (
    id                        TEXT PRIMARY KEY,
    email                     TEXT NOT NULL UNIQUE,
    username                  TEXT NOT NULL UNIQUE,
    password_hash             TEXT NOT NULL,
    role                      TEXT NOT NULL,
    is_active                 INTEGER NOT NULL DEFAULT 1,
    quota_usd                 INTEGER,
    used_usd                  INTEGER NOT NULL DEFAULT 0,
    total_usd                 INTEGER NOT NULL DEFAULT 0,
    quota_period              TEXT NOT NULL DEFAULT 'none',
    period_started_at         INTEGER,
    allowed_providers         TEXT,
    allowed_api_formats       TEXT,
    allowed_models            TEXT,
    model_capability_settings TEXT NOT NULL DEFAULT '{}',
    last_login_at             INTEGER,
    created_at                INTEGER NOT NULL,
    updated_at                INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id                    TEXT PRIMARY KEY,
    user_id               TEXT REFERENCES users(id) ON DELETE CASCADE,
    key_hash              TEXT NOT NULL UNIQUE,
    key_display           TEXT NOT NULL,
    name                  TEXT NOT NULL,
    is_active             INTEGER NOT NULL DEFAULT 1,
    is_standalone         INTEGER NOT NULL DEFAULT 0,
    balance_usd           INTEGER NOT NULL DEFAULT 0,
    expires_at            INTEGER,
    auto_delete_on_expiry INTEGER NOT NULL DEFAULT 0,
    allowed_providers     TEXT,
    allowed_api_formats   TEXT,
    allowed_models        TEXT,
    force_capabilities    TEXT NOT NULL DEFAULT '[]',
    rate_limit            INTEGER,
    concurrent_limit      INTEGER,
    total_requests        INTEGER NOT NULL DEFAULT 0,
    total_cost_usd        INTEGER NOT NULL DEFAULT 0,
    last_used_at          INTEGER,
    created_by            TEXT,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);
CREATE INDEX api_keys_user ON api_keys(user_id);

CREATE TABLE balance_ledger (
    id                TEXT PRIMARY KEY,
    api_key_id        TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    kind              TEXT NOT NULL,
    amount_usd        INTEGER NOT NULL,
    balance_after_usd INTEGER NOT NULL,
    reason            TEXT,
    request_id        TEXT,
    actor_id          TEXT,
    created_at        INTEGER NOT NULL
);
CREATE INDEX balance_ledger_key ON balance_ledger(api_key_id, created_at);

CREATE TABLE providers (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    display_name      TEXT NOT NULL,
    description       TEXT,
    website           TEXT,
    billing_type      TEXT NOT NULL,
    quota_usd         INTEGER,
    quota_used_usd    INTEGER NOT NULL DEFAULT 0,
    quota_period_days INTEGER NOT NULL DEFAULT 30,
    period_started_at INTEGER,
    expires_at        INTEGER,
    rpm_limit         INTEGER,
    provider_priority INTEGER NOT NULL DEFAULT 100,
    is_active         INTEGER NOT NULL DEFAULT 1,
    config            TEXT NOT NULL DEFAULT '{}',
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);

CREATE TABLE endpoints (
    id             TEXT PRIMARY KEY,
    provider_id    TEXT NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    api_format     TEXT NOT NULL,
    base_url       TEXT NOT NULL,
    custom_path    TEXT,
    headers        TEXT NOT NULL DEFAULT '{}',
    timeout        INTEGER NOT NULL DEFAULT 300,
    max_retries    INTEGER NOT NULL DEFAULT 3,
    max_concurrent INTEGER,
    proxy          TEXT,
    is_active      INTEGER NOT NULL DEFAULT 1,
    config         TEXT NOT NULL DEFAULT '{}',
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    UNIQUE (provider_id, api_format)
);

CREATE TABLE provider_keys (
    id                         TEXT PRIMARY KEY,
    endpoint_id                TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    provider_id                TEXT NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    name                       TEXT NOT NULL,
    note                       TEXT,
    secret_sealed              TEXT NOT NULL,
    secret_fingerprint         TEXT NOT NULL,
    api_key_masked             TEXT NOT NULL,
    rate_multiplier_ppm        INTEGER NOT NULL DEFAULT 1000000,
    internal_priority          INTEGER NOT NULL DEFAULT 50,
    global_priority            INTEGER,
    max_concurrent             INTEGER,
    rate_limit                 INTEGER,
    allowed_models             TEXT,
    capabilities               TEXT NOT NULL DEFAULT '[]',
    cache_ttl_minutes          INTEGER NOT NULL DEFAULT 5,
    max_probe_interval_minutes INTEGER,
    expires_at                 INTEGER,
    is_active                  INTEGER NOT NULL DEFAULT 1,
    created_at                 INTEGER NOT NULL,
    updated_at                 INTEGER NOT NULL,
    UNIQUE (endpoint_id, secret_fingerprint)
);
CREATE INDEX provider_keys_provider ON provider_keys(provider_id);

CREATE TABLE global_models (
    id                        TEXT PRIMARY KEY,
    name                      TEXT NOT NULL UNIQUE,
    display_name              TEXT NOT NULL,
    description               TEXT,
    is_active                 INTEGER NOT NULL DEFAULT 1,
    capabilities              TEXT NOT NULL DEFAULT '{}',
    supported_capabilities    TEXT NOT NULL DEFAULT '[]',
    default_tiered_pricing    TEXT,
    default_price_per_request INTEGER,
    config                    TEXT NOT NULL DEFAULT '{}',
    usage_count               INTEGER NOT NULL DEFAULT 0,
    created_at                INTEGER NOT NULL,
    updated_at                INTEGER NOT NULL
);

CREATE TABLE provider_models (
    id                          TEXT PRIMARY KEY,
    provider_id                 TEXT NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    global_model_id             TEXT NOT NULL REFERENCES global_models(id) ON DELETE CASCADE,
    provider_model_name         TEXT NOT NULL,
    provider_model_mappings     TEXT NOT NULL DEFAULT '[]',
    tiered_pricing              TEXT,
    price_per_request           INTEGER,
    supports_streaming          INTEGER,
    supports_vision             INTEGER,
    supports_function_calling   INTEGER,
    supports_extended_thinking  INTEGER,
    supports_image_generation   INTEGER,
    is_active                   INTEGER NOT NULL DEFAULT 1,
    config                      TEXT NOT NULL DEFAULT '{}',
    created_at                  INTEGER NOT NULL,
    updated_at                  INTEGER NOT NULL,
    UNIQUE (provider_id, provider_model_name)
);
CREATE INDEX provider_models_global ON provider_models(global_model_id);

CREATE TABLE usage_records (
    id                       TEXT PRIMARY KEY,
    client_request_id        TEXT,
    user_id                  TEXT,
    api_key_id               TEXT,
    provider_id              TEXT,
    endpoint_id              TEXT,
    provider_key_id          TEXT,
    global_model_id          TEXT,
    requested_model          TEXT NOT NULL,
    upstream_model           TEXT,
    api_format               TEXT NOT NULL,
    endpoint_api_format      TEXT,
    is_stream                INTEGER NOT NULL,
    status                   TEXT NOT NULL,
    status_code              INTEGER,
    error_type               TEXT,
    error_message            TEXT,
    input_tokens             INTEGER NOT NULL DEFAULT 0,
    output_tokens            INTEGER NOT NULL DEFAULT 0,
    cache_creation_5m_tokens INTEGER NOT NULL DEFAULT 0,
    cache_creation_1h_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens        INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens         INTEGER NOT NULL DEFAULT 0,
    input_cost               INTEGER NOT NULL DEFAULT 0,
    output_cost              INTEGER NOT NULL DEFAULT 0,
    cache_creation_5m_cost   INTEGER NOT NULL DEFAULT 0,
    cache_creation_1h_cost   INTEGER NOT NULL DEFAULT 0,
    cache_read_cost          INTEGER NOT NULL DEFAULT 0,
    request_cost             INTEGER NOT NULL DEFAULT 0,
    total_cost               INTEGER NOT NULL DEFAULT 0,
    actual_total_cost        INTEGER NOT NULL DEFAULT 0,
    rate_multiplier_ppm      INTEGER NOT NULL DEFAULT 1000000,
    pricing                  TEXT,
    unpriced                 INTEGER NOT NULL DEFAULT 0,
    latency_ms               INTEGER,
    ttfb_ms                  INTEGER,
    client_ip                TEXT,
    user_agent               TEXT,
    created_at               INTEGER NOT NULL,
    updated_at               INTEGER NOT NULL
);
CREATE INDEX usage_created ON usage_records(created_at);
CREATE INDEX usage_user_created ON usage_records(user_id, created_at);
CREATE INDEX usage_key_created ON usage_records(api_key_id, created_at);
CREATE INDEX usage_provider_created ON usage_records(provider_id, created_at);
CREATE INDEX usage_status ON usage_records(status, created_at);

CREATE TABLE usage_bodies (
    request_id       TEXT PRIMARY KEY,
    request_headers  TEXT,
    request_body     TEXT,
    response_headers TEXT,
    response_body    TEXT,
    created_at       INTEGER NOT NULL
);
CREATE INDEX usage_bodies_created ON usage_bodies(created_at);

CREATE TABLE attempt_traces (
    id              TEXT PRIMARY KEY,
    request_id      TEXT NOT NULL,
    candidate_index INTEGER NOT NULL,
    retry_index     INTEGER NOT NULL,
    provider_id     TEXT,
    endpoint_id     TEXT,
    provider_key_id TEXT,
    status          TEXT NOT NULL,
    skip_reason     TEXT,
    status_code     INTEGER,
    error_type      TEXT,
    error_message   TEXT,
    latency_ms      INTEGER,
    concurrency     INTEGER,
    conversion      TEXT,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX attempt_traces_request ON attempt_traces(request_id, candidate_index, retry_index);
CREATE INDEX attempt_traces_started ON attempt_traces(started_at);

CREATE TABLE system_settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_by TEXT,
    updated_at INTEGER NOT NULL
);

CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    actor_id    TEXT,
    actor_email TEXT,
    action      TEXT NOT NULL,
    target_type TEXT,
    target_id   TEXT,
    details     TEXT NOT NULL DEFAULT '{}',
    ip          TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX audit_log_created ON audit_log(created_at);
CREATE INDEX audit_log_action ON audit_log(action, created_at);

CREATE TABLE announcements (
    id         TEXT PRIMARY KEY,
    title      TEXT NOT NULL,
    content    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    priority   INTEGER NOT NULL DEFAULT 0,
    is_active  INTEGER NOT NULL DEFAULT 1,
    is_pinned  INTEGER NOT NULL DEFAULT 0,
    start_time INTEGER,
    end_time   INTEGER,
    author_id  TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE ip_rules (
    id         TEXT PRIMARY KEY,
    cidr       TEXT NOT NULL,
    action     TEXT NOT NULL,
    note       TEXT,
    expires_at INTEGER,
    created_by TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (cidr, action)
);

CREATE TABLE auth_sessions (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    refresh_hash      TEXT NOT NULL UNIQUE,
    previous_hash     TEXT,
    expires_at        INTEGER NOT NULL,
    revoked_at        INTEGER,
    ip                TEXT,
    user_agent        TEXT,
    created_at        INTEGER NOT NULL,
    last_refreshed_at INTEGER
);
CREATE INDEX auth_sessions_user ON auth_sessions(user_id);
CREATE INDEX auth_sessions_previous ON auth_sessions(previous_hash);
