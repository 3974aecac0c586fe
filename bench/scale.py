#!/usr/bin/env python3
"""Aether at scale: how fast the console's usage queries, the rollup backfill and retention are
when usage_records holds millions of rows (PostgreSQL).

Creates a scratch schema `aether_scale_<pid>`, migrates it with the real binary, bootstraps an
admin through `aether serve`, fills the usage/trace/body/audit tables server-side with
`generate_series` (via `psql`), backfills the rollups with `aether jobs`, times the console's
HTTP queries (median of 5 after one warm-up), times a retention run, saves `EXPLAIN (ANALYZE,
BUFFERS)` of the slowest queries, and writes a markdown table. The schema is dropped and every
process it started is stopped at the end, also on failure.

Python 3 stdlib + the `psql` CLI. Env: AETHER_BIN (the release binary), SCALE_ROWS (default
5000000), SCALE_PG (base URL, default postgres://postgres@127.0.0.1:5432/test).
"""

import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
AETHER = os.environ.get("AETHER_BIN", os.path.join(ROOT, "target", "release", "aether"))
ROWS = int(os.environ.get("SCALE_ROWS", "5000000"))
BASE = os.environ.get("SCALE_PG", "postgres://postgres@127.0.0.1:5432/test")
SCHEMA = f"aether_scale_{os.getpid()}"
URL = f"{BASE}?options=-c%20search_path%3D{SCHEMA}"
DAYS = 90
USERS, KEYS, PROVIDERS, MODELS = 200, 1000, 20, 50
ADMIN_EMAIL, ADMIN_PASSWORD = "scale-admin@example.com", "scale-bench-password-1"
SLOW_MS = 500
# Retention classes other than usage are pushed out of the way while loading and rolling up,
# so every job run before the retention measurement only rolls up.
KEEP_ALL = {
    "retention_days_usage": 36500,
    "retention_days_traces": 3650,
    "retention_days_bodies": 3650,
    "retention_days_headers": 3650,
    "compress_bodies_after_days": 3650,
    "retention_days_audit": 36500,
}

procs = []


def log(msg):
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def psql(sql, url=URL, capture=True):
    """Runs SQL through psql (stops at the first error); returns stdout."""
    r = subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-At", "-f", "-"],
        input=sql, text=True, capture_output=capture,
    )
    if r.returncode != 0:
        raise RuntimeError(f"psql failed: {r.stderr.strip()}\n--- SQL ---\n{sql[:2000]}")
    return r.stdout.strip() if capture else ""


def aether(args, data_dir, env=None):
    """Runs a one-shot aether command; returns (seconds, stderr)."""
    t = time.perf_counter()
    r = subprocess.run(
        [AETHER, "--data-dir", data_dir, "--database-url", URL, *args],
        capture_output=True, text=True, env=env,
    )
    if r.returncode != 0:
        raise RuntimeError(f"aether {' '.join(args)} failed: {r.stderr.strip()[-2000:]}")
    return time.perf_counter() - t, r.stderr


def serve(data_dir):
    """Starts `aether serve` on a free loopback port; returns (process, base URL)."""
    env = dict(os.environ, AETHER_ADMIN_EMAIL=ADMIN_EMAIL, AETHER_ADMIN_PASSWORD=ADMIN_PASSWORD,
               AETHER_LOG="warn")
    p = subprocess.Popen(
        [AETHER, "--data-dir", data_dir, "--database-url", URL, "serve", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    procs.append(p)
    deadline = time.time() + 60
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            raise RuntimeError("aether serve exited before it listened")
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            return p, m.group(1)
    raise RuntimeError("aether serve did not start")


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Client:
    """A keep-alive HTTP client with the admin's bearer token (and console cookie)."""

    def __init__(self, base):
        u = urllib.parse.urlparse(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
        self.token = None

    def call(self, method, path, body=None, cookie=False):
        headers = {}
        if body is not None:
            headers["content-type"] = "application/json"
            body = json.dumps(body)
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
            if cookie:
                headers["cookie"] = f"aether_access={self.token}"
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, data

    def json(self, method, path, body=None):
        s, data = self.call(method, path, body)
        if s >= 400:
            raise RuntimeError(f"{method} {path} -> {s}: {data[:300]!r}")
        return json.loads(data) if data else None

    def login(self):
        t = self.json("POST", "/api/auth/login", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        self.token = t["access_token"]


def set_settings(c, values):
    for k, v in values.items():
        c.json("PUT", f"/api/admin/system/configs/{k}", {"value": v})


# ---------------------------------------------------------------------------------------------
# Data. Ids are UUIDv7 built from the row's own timestamp (the trace retention ages rows out by
# id range, so time order must match id order as in production); everything else is derived
# from md5 of the row number, so a run is reproducible and every column of a row is consistent.

def uuid7(ms, seed):
    """SQL for a UUIDv7 text with timestamp `ms` (SQL bigint) and randomness from md5(seed)."""
    t = f"lpad(to_hex({ms}), 12, '0')"
    h = f"md5({seed})"
    return (f"(substr({t},1,8)||'-'||substr({t},9,4)||'-7'||substr({h},1,3)||'-8'||substr({h},4,3)"
            f"||'-'||substr({h},7,12))")


def ref_id(kind, n):
    """SQL for the deterministic UUID of users/api_keys/providers/models row `n`."""
    return f"(md5('{kind}'||({n})::text)::uuid::text)"


def load_sql(now_ms):
    start = now_ms - DAYS * 86_400_000
    step = DAYS * 86_400_000 / ROWS
    return f"""
SET work_mem = '256MB';
SET maintenance_work_mem = '1GB';
SET synchronous_commit = off;
-- The bootstrap `serve` may already have run the rollup job over the empty table (moving the
-- watermark to now): start the rollups afresh, as on a database that had this data already.
DELETE FROM usage_rollups;
DELETE FROM rollup_state;
INSERT INTO users (id, email, username, password_hash, role, created_at, updated_at)
SELECT {ref_id('u', 'i')}, 'user'||i||'@scale.test', 'scale_user_'||i, 'x', 'user', {start}, {start}
FROM generate_series(0, {USERS - 1}) i;
INSERT INTO api_keys (id, user_id, key_hash, key_display, name, created_at, updated_at)
SELECT {ref_id('k', 'i')}, {ref_id('u', f'i % {USERS}')}, md5('hash'||i), 'sk-...'||i, 'key '||i, {start}, {start}
FROM generate_series(0, {KEYS - 1}) i;
INSERT INTO providers (id, name, display_name, billing_type, created_at, updated_at)
SELECT {ref_id('p', 'i')}, 'provider-'||i, 'Provider '||i, 'pay_as_you_go', {start}, {start}
FROM generate_series(0, {PROVIDERS - 1}) i;
INSERT INTO global_models (id, name, display_name, created_at, updated_at)
SELECT {ref_id('m', 'i')}, 'model-'||i, 'Model '||i, {start}, {start}
FROM generate_series(0, {MODELS - 1}) i;

-- Secondary indexes are dropped for the bulk load and rebuilt with their exact definitions.
CREATE TABLE scale_saved_indexes AS
SELECT indexname, indexdef FROM pg_indexes
WHERE schemaname = current_schema()
  AND tablename IN ('usage_records', 'attempt_traces', 'usage_bodies', 'audit_log')
  AND indexname NOT LIKE '%_pkey';
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT indexname FROM scale_saved_indexes LOOP EXECUTE 'DROP INDEX ' || quote_ident(r.indexname); END LOOP;
END $$;

INSERT INTO usage_records (id, client_request_id, user_id, api_key_id, provider_id, endpoint_id,
  provider_key_id, global_model_id, requested_model, upstream_model, api_format, endpoint_api_format,
  is_stream, status, status_code, error_type, error_message, input_tokens, output_tokens,
  cache_creation_5m_tokens, cache_creation_1h_tokens, cache_read_tokens, reasoning_tokens,
  input_cost, output_cost, cache_creation_5m_cost, cache_creation_1h_cost, cache_read_cost,
  request_cost, total_cost, actual_total_cost, rate_multiplier_ppm, unpriced, latency_ms, ttfb_ms,
  client_ip, user_agent, created_at, updated_at, billed)
SELECT {uuid7('ts', 'i::text')}, NULL, {ref_id('u', f'k % {USERS}')}, {ref_id('k', 'k')},
  {ref_id('p', 'p')}, NULL, NULL, {ref_id('m', 'm')}, 'model-'||m, 'upstream-model-'||m,
  fmt, fmt, (r1 % 3) <> 0, st,
  CASE st WHEN 'completed' THEN 200 WHEN 'failed' THEN (ARRAY[429, 500, 502, 529])[1 + r2 % 4] END,
  CASE WHEN st = 'failed' THEN (ARRAY['rate_limited', 'upstream_error', 'timeout', 'overloaded'])[1 + r2 % 4] END,
  CASE WHEN st = 'failed' THEN 'upstream said no' END,
  inp, outp, c5, 0, cr, 0,
  inp * 3000, outp * 15000, c5 * 3750, 0, cr * 300, 0,
  inp * 3000 + outp * 15000 + c5 * 3750 + cr * 300,
  (inp * 3000 + outp * 15000 + c5 * 3750 + cr * 300) * 4 / 5, 800000, false,
  CASE WHEN st <> 'pending' THEN 200 + r2 % 20000 END, CASE WHEN st = 'completed' THEN 50 + r2 % 2000 END,
  '10.0.'||(k % 250)||'.'||(r1 % 250), 'scale-bench/1.0', ts, ts + 200 + r2 % 20000, st <> 'pending'
FROM (
  SELECT i, ts, r1, r2,
    (r1 >> 4) % {KEYS} AS k,
    (r1 >> 14) % {PROVIDERS} AS p,
    -- skewed: low model numbers are the popular ones
    floor({MODELS} * power(((r2 >> 3) % 10000) / 10000.0, 2))::int AS m,
    (ARRAY['CLAUDE', 'OPENAI', 'OPENAI_CLI', 'GEMINI'])[1 + r1 % 4] AS fmt,
    CASE WHEN i > {ROWS} - 40 THEN 'pending'
         WHEN r2 % 1000 < 70 THEN 'failed' ELSE 'completed' END AS st,
    100 + (r1 >> 8) % 8000 AS inp,
    CASE WHEN r2 % 1000 < 70 THEN 0 ELSE 20 + (r2 >> 9) % 2000 END AS outp,
    CASE WHEN r1 % 5 = 0 THEN (r1 >> 11) % 4000 ELSE 0 END AS c5,
    CASE WHEN r1 % 3 = 0 THEN (r1 >> 13) % 20000 ELSE 0 END AS cr
  FROM (
    SELECT i, {start} + floor((i - 1) * {step})::bigint + (abs(hashint4(i)) % 1000) AS ts,
      abs(hashint4(i * 7 + 1))::bigint AS r1, abs(hashint4(i * 13 + 5))::bigint AS r2
    FROM generate_series(1, {ROWS}) i
  ) s
) d;
"""


def load_children_sql(now_ms):
    # ~10 % of requests have a 2-row trace (a failed first attempt, then a success), ~2 % have
    # stored bodies; chosen by the id's random tail.
    pick = "('x' || right(id, 2))::bit(8)::int"
    start = now_ms - DAYS * 86_400_000
    audit = 100_000
    return f"""
SET work_mem = '256MB';
SET maintenance_work_mem = '1GB';
SET synchronous_commit = off;
INSERT INTO attempt_traces (id, request_id, candidate_index, retry_index, provider_id, status,
  status_code, error_type, error_message, latency_ms, started_at, finished_at)
SELECT {uuid7('created_at + c', "id||c")}, id, c, 0, provider_id,
  CASE WHEN c = 0 THEN 'failed' ELSE 'success' END,
  CASE WHEN c = 0 THEN 529 ELSE 200 END,
  CASE WHEN c = 0 THEN 'overloaded' END, CASE WHEN c = 0 THEN 'upstream overloaded' END,
  CASE WHEN c = 0 THEN 150 ELSE latency_ms END, created_at + c, created_at + c + 150
FROM usage_records, generate_series(0, 1) c
WHERE {pick} < 26 AND status = 'completed';
INSERT INTO usage_bodies (request_id, request_headers, request_body, response_headers, response_body, created_at)
SELECT id, '{{"content-type":"application/json","user-agent":"scale-bench/1.0"}}',
  '{{"model":"'||requested_model||'","max_tokens":1024,"messages":[{{"role":"user","content":"Summarise request '||id||' in one paragraph, please."}}]}}',
  '{{"content-type":"application/json"}}',
  '{{"id":"msg_'||left(md5(id), 16)||'","type":"message","content":[{{"type":"text","text":"A short answer for the benchmark."}}],"usage":{{"input_tokens":'||input_tokens||',"output_tokens":'||output_tokens||'}}}}',
  created_at
FROM usage_records WHERE {pick} >= 26 AND {pick} < 31;
INSERT INTO audit_log (id, actor_id, actor_email, action, target_type, target_id, details, ip, created_at)
SELECT {uuid7('ts', "'a'||i")}, {ref_id('u', f'i % {USERS}')}, 'user'||(i % {USERS})||'@scale.test',
  (ARRAY['auth.login', 'api_key.create', 'provider.update', 'user.update', 'auth.login_failed'])[1 + i % 5],
  'user', {ref_id('u', f'(i * 7) % {USERS}')}, '{{}}', '10.1.0.'||(i % 250), ts
FROM (SELECT i, {start} + (i::bigint * {DAYS * 86_400_000 // audit}) AS ts
      FROM generate_series(1, {audit}) i) s;
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT indexdef FROM scale_saved_indexes LOOP EXECUTE r.indexdef; END LOOP;
END $$;
DROP TABLE scale_saved_indexes;
"""


COUNT_SQL = """SELECT 'usage_records', count(*) FROM usage_records UNION ALL
SELECT 'attempt_traces', count(*) FROM attempt_traces UNION ALL
SELECT 'usage_bodies', count(*) FROM usage_bodies UNION ALL
SELECT 'audit_log', count(*) FROM audit_log UNION ALL
SELECT 'usage_rollups', count(*) FROM usage_rollups;"""


def counts():
    return {k: int(v) for k, v in (line.split("|") for line in psql(COUNT_SQL).splitlines())}


# ---------------------------------------------------------------------------------------------
# Queries: the HTTP request, and the SQL it runs (reproduced from crates/store/src/usage.rs and
# sql.rs) for EXPLAIN. `ids` holds a sample user, model and request.

USAGE_COLS = """id, client_request_id, user_id, api_key_id, provider_id, endpoint_id, provider_key_id,
 global_model_id, requested_model, upstream_model, api_format, endpoint_api_format, is_stream, status,
 status_code, error_type, error_message, input_tokens, output_tokens, cache_creation_5m_tokens,
 cache_creation_1h_tokens, cache_read_tokens, reasoning_tokens, input_cost, output_cost,
 cache_creation_5m_cost, cache_creation_1h_cost, cache_read_cost, request_cost, total_cost,
 actual_total_cost, rate_multiplier_ppm, pricing, unpriced, latency_ms, ttfb_ms, client_ip,
 user_agent, created_at, updated_at"""
SUMS = """CAST(COUNT(*) AS BIGINT) AS requests, CAST(COALESCE(SUM(u.input_tokens), 0) AS BIGINT) AS input_sum,
 CAST(COALESCE(SUM(u.output_tokens), 0) AS BIGINT) AS output_sum,
 CAST(COALESCE(SUM(u.cache_read_tokens), 0) AS BIGINT) AS cache_read_sum,
 CAST(COALESCE(SUM(u.total_cost), 0) AS BIGINT) AS cost_sum,
 CAST(COALESCE(SUM(u.actual_total_cost), 0) AS BIGINT) AS actual_sum"""


def lit(v):
    return str(v) if isinstance(v, int) else "'" + str(v).replace("'", "''") + "'"


def list_sql(where, offset=0):
    """The listing's two statements (crates/store/src/sql.rs `Filter::page_capped`): the count
    stops 1000 rows past the page (one more row tells "more")."""
    w = f" WHERE {where}" if where else ""
    cap = offset + 50 + 1000 + 1
    return [f"SELECT CAST(COUNT(*) AS BIGINT) AS n FROM (SELECT 1 AS one FROM usage_records{w} LIMIT {cap}) capped",
            f"SELECT {USAGE_COLS} FROM usage_records{w} ORDER BY created_at DESC, id DESC LIMIT 50 OFFSET {offset}"]


def summary_sql(where):
    return [f"""SELECT {SUMS},
 CAST(COALESCE(SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END), 0) AS BIGINT) AS successes,
 CAST(COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT) AS failures,
 CAST(COALESCE(SUM(cache_creation_5m_tokens), 0) AS BIGINT) AS cache_5m,
 CAST(COALESCE(SUM(cache_creation_1h_tokens), 0) AS BIGINT) AS cache_1h,
 CAST(COALESCE(SUM(latency_ms), 0) AS BIGINT) AS latency_sum, CAST(COUNT(latency_ms) AS BIGINT) AS latency_n,
 CAST(COALESCE(SUM(ttfb_ms), 0) AS BIGINT) AS ttfb_sum, CAST(COUNT(ttfb_ms) AS BIGINT) AS ttfb_n
 FROM usage_records u WHERE {where}"""]


def model_where(m):
    return (f"(requested_model = {lit(m)} OR global_model_id IN "
            f"(SELECT id FROM global_models WHERE name = {lit(m)} OR id = {lit(m)}))")


def dashboard_sql(now_ms, days=30):
    """A summary over whole days as the dashboard reads it (crates/store/src/rollups.rs
    `source`, trimmed to the summed columns): the cluster-wide day rollups (`day_all`) before
    today, today's records live."""
    today = now_ms // 86_400_000 * 86_400_000
    since = today - (days - 1) * 86_400_000
    return f"""SELECT CAST(COALESCE(SUM(u.requests), 0) AS BIGINT) AS requests,
 CAST(COALESCE(SUM(u.total_cost), 0) AS BIGINT) AS cost_sum, CAST(COALESCE(SUM(u.input_tokens), 0) AS BIGINT) AS input_sum
 FROM (SELECT bucket_start, requests, total_cost, input_tokens FROM usage_rollups
   WHERE period = 'day_all' AND bucket_start >= {since} AND bucket_start < {today}
 UNION ALL SELECT (created_at / 86400000) * 86400000, 1, total_cost, input_tokens FROM usage_records
   WHERE created_at >= {today} AND created_at < {today + 86_400_000}) u"""


def queries(now_ms, ids):
    def rfc(ms):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))

    d1, d7, d30 = (now_ms - n * 86_400_000 for n in (1, 7, 30))
    q = urllib.parse.quote
    return [
        ("list newest 50", "/api/admin/usage?limit=50", list_sql("")),
        ("list by user_id", f"/api/admin/usage?limit=50&user_id={ids['user']}",
         list_sql(f"user_id = {lit(ids['user'])}")),
        ("list by model", f"/api/admin/usage?limit=50&model={ids['model']}",
         list_sql(model_where(ids['model']))),
        ("list by unknown model (no match: every row read)", "/api/admin/usage?limit=50&model=no-such-model",
         list_sql(model_where("no-such-model"))),
        ("list status=failed", "/api/admin/usage?limit=50&status=failed", list_sql("status = 'failed'")),
        ("list offset 5000", "/api/admin/usage?limit=50&offset=5000", list_sql("", 5000)),
        ("summary 24 h", f"/api/admin/usage/summary?since={q(rfc(d1))}", summary_sql(f"created_at >= {d1}")),
        ("summary 30 d", f"/api/admin/usage/summary?since={q(rfc(d30))}", summary_sql(f"created_at >= {d30}")),
        ("summary 30 d, whole days (rollups)", f"/api/admin/usage/summary?since={q(rfc(d30))}&whole_days=true",
         [dashboard_sql(now_ms, 31)]),
        ("breakdown by model 30 d, whole days (rollups)",
         f"/api/admin/usage/breakdown?by=model&since={q(rfc(d30))}&whole_days=true", []),
        ("breakdown by model 7 d", f"/api/admin/usage/breakdown?by=model&since={q(rfc(d7))}",
         [f"""SELECT COALESCE(g.name, u.requested_model) AS group_key, MAX(g.display_name) AS group_label, {SUMS},
 CAST(COALESCE(SUM(u.cache_creation_5m_tokens + u.cache_creation_1h_tokens), 0) AS BIGINT) AS cache_creation_sum
 FROM (SELECT * FROM usage_records WHERE created_at >= {d7}) u LEFT JOIN global_models g ON g.id = u.global_model_id
 GROUP BY group_key ORDER BY cost_sum DESC, requests DESC, group_key"""]),
        ("heatmap (all time)", "/api/admin/usage/heatmap",
         ["""SELECT ((created_at / 3600000) + 96) % 168 AS hour_of_week, CAST(COUNT(*) AS BIGINT) AS n
 FROM usage_records GROUP BY ((created_at / 3600000) + 96) % 168 ORDER BY hour_of_week"""]),
        ("detail with traces", f"/api/admin/usage/{ids['request']}",
         [f"SELECT {USAGE_COLS} FROM usage_records WHERE id = {lit(ids['request'])} ORDER BY id",
          f"SELECT * FROM attempt_traces WHERE request_id = {lit(ids['request'])} "
          "ORDER BY candidate_index, retry_index, started_at"]),
        ("console /admin dashboard", "/admin", [dashboard_sql(now_ms)]),
        ("console /admin/usage (last 7 days: list, totals, heatmap, breakdowns)", "/admin/usage", []),
    ]


def time_query(c, path, page):
    samples = []
    for i in range(6):
        t = time.perf_counter()
        s, body = c.call("GET", path, cookie=page)
        ms = (time.perf_counter() - t) * 1000
        if s != 200:
            log(f"GET {path} -> {s}: {body[:300]!r}")
            return float("nan"), float("nan")
        if i > 0:
            samples.append(ms)
    return statistics.median(samples), max(samples)


# ---------------------------------------------------------------------------------------------

def main():
    if not os.path.exists(AETHER):
        sys.exit(f"no aether binary at {AETHER} (set AETHER_BIN; bench/scale.sh builds it)")
    os.makedirs(RESULTS, exist_ok=True)
    data_dir = tempfile.mkdtemp(prefix="aether-scale-")
    report, explain = [], []
    t_start = time.perf_counter()
    psql(f"CREATE SCHEMA {SCHEMA}", url=BASE)
    log(f"schema {SCHEMA}, {ROWS} usage rows")
    try:
        aether(["migrate"], data_dir)
        # An empty database: serve bootstraps the admin from the environment; the retention
        # of every class is pushed out so the job runs before the measurement only roll up.
        p, base = serve(data_dir)
        c = Client(base)
        c.login()
        set_settings(c, KEEP_ALL)
        stop(p)

        now_ms = int(time.time() * 1000)
        t0 = time.perf_counter()
        psql(load_sql(now_ms))
        t_usage = time.perf_counter() - t0
        psql(load_children_sql(now_ms))
        t_load = time.perf_counter() - t0
        t1 = time.perf_counter()
        psql("VACUUM (ANALYZE) usage_records; VACUUM (ANALYZE) attempt_traces; "
             "VACUUM (ANALYZE) usage_bodies; VACUUM (ANALYZE) audit_log;")
        t_vacuum = time.perf_counter() - t1
        n = counts()
        size = psql("SELECT pg_size_pretty(pg_total_relation_size('usage_records'))")
        log(f"loaded in {t_load:.0f}s (usage_records {t_usage:.0f}s), vacuum+analyze {t_vacuum:.0f}s: {n}, usage_records {size}")

        # Rollup backfill: each `aether jobs` run rolls up at most 48 hours.
        t0, roll_runs = time.perf_counter(), 0
        while roll_runs < 80:
            _, err = aether(["jobs"], data_dir, env=dict(os.environ, AETHER_LOG="info"))
            roll_runs += 1
            if "catching up" not in err:
                break
        t_rollup = time.perf_counter() - t0
        n_roll = counts()["usage_rollups"]
        log(f"rollup backfill: {roll_runs} runs, {t_rollup:.0f}s, {n_roll} rollup rows")

        ids = {
            "user": psql(f"SELECT {ref_id('u', 17)}"),
            "model": "model-3",
            "request": psql("SELECT request_id FROM attempt_traces ORDER BY request_id DESC LIMIT 1"),
        }
        p, base = serve(data_dir)
        c = Client(base)
        c.login()
        timed = []
        for name, path, sql in queries(now_ms, ids):
            med, worst = time_query(c, path, page=not path.startswith("/api/"))
            timed.append((name, path, sql, med, worst))
            log(f"{name}: median {med:.1f} ms, max {worst:.1f} ms")

        # EXPLAIN the slowest queries (every one over SLOW_MS, at least the three slowest).
        ranked = sorted((t for t in timed if t[2]), key=lambda t: -t[3])
        for name, path, sqls, med, _ in [t for t in ranked if t[3] > SLOW_MS] or ranked[:3]:
            for sql in sqls:
                # Aether's sessions run with JIT off (crates/store/src/db.rs); so does this.
                plan = psql(f"SET jit = off; EXPLAIN (ANALYZE, BUFFERS) {sql}")
                explain.append(f"### {name} (GET {path}, median {med:.0f} ms)\n\n{sql}\n\n{plan}\n")

        # Retention: usage kept 60 days; each job run deletes at most 20 batches of 5000.
        set_settings(c, {"retention_days_usage": 60})
        stop(p)
        before = counts()["usage_records"]
        hour_rows = "SELECT count(*) FROM usage_rollups WHERE period = 'hour'"
        hours_before = int(psql(hour_rows))
        prev, runs, t_ret, first = before, 0, 0.0, None
        while runs < 40 and t_ret < 150:
            s, _ = aether(["jobs"], data_dir)
            runs += 1
            t_ret += s
            left = counts()["usage_records"]
            if first is None:
                first = (prev - left, s)
            # A run deletes at most 20 batches of 5000; fewer means the backlog is gone (the
            # cutoff moves with the clock, so later runs always find a few new rows).
            drained = prev - left < 100_000
            prev = left
            if drained:
                break
        after = prev
        cutoff = int(time.time() * 1000) - 60 * 86_400_000
        backlog = int(psql(f"SELECT count(*) FROM usage_records WHERE created_at < {cutoff}"))
        psql("DELETE FROM system_settings WHERE key = 'retention_days_usage'")
        total_deleted = before - after
        hours_deleted = hours_before - int(psql(hour_rows))
        log(f"retention: {total_deleted} rows in {runs} runs, {t_ret:.1f}s")

        lines = [
            f"# Aether usage tables at scale ({time.strftime('%Y-%m-%d')})", "",
            f"PostgreSQL, schema loaded by bench/scale.py: {n['usage_records']:,} usage_records over "
            f"{DAYS} days ({size}), {n['attempt_traces']:,} attempt_traces, {n['usage_bodies']:,} "
            f"usage_bodies, {n['audit_log']:,} audit_log rows; {USERS} users, {KEYS} keys, "
            f"{PROVIDERS} providers, {MODELS} models.", "",
            f"- load (generate_series, indexes rebuilt after): {t_load:.0f} s "
            f"(usage_records alone {t_usage:.0f} s); VACUUM ANALYZE {t_vacuum:.0f} s",
            f"- rollup backfill (`aether jobs` x {roll_runs}, 48 h each): "
            f"{t_rollup:.0f} s, {n_roll:,} rollup rows",
            f"- retention (`retention_days_usage` 365 -> 60): {total_deleted:,} usage rows deleted in "
            f"{runs} `aether jobs` runs, {t_ret:.1f} s of job time = {total_deleted / max(t_ret, 1e-3):,.0f} "
            f"rows/s; the first run deleted {first[0]:,} rows in {first[1]:.1f} s "
            f"({first[0] / max(first[1], 1e-3):,.0f} rows/s); {backlog:,} rows past the cutoff left "
            "(the script stops after 150 s of job time); the same runs deleted "
            f"{hours_deleted:,} hourly rollup rows (96 hours per run, 20 ms pause after each hour)",
            f"- whole script: {time.perf_counter() - t_start:.0f} s", "",
            "Query times: wall clock of the HTTP request on loopback, median of 5 after 1 warm-up.", "",
            "| rows | query | request | median ms | max ms |", "|---:|---|---|---:|---:|",
        ]
        for name, path, _, med, worst in timed:
            flag = " **slow**" if med > SLOW_MS else ""
            lines.append(f"| {n['usage_records']:,} | {name}{flag} | `GET {path}` | {med:.1f} | {worst:.1f} |")
        report = lines
    finally:
        for p in procs:
            stop(p)
        try:
            psql(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE", url=BASE)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    text = "\n".join(report) + "\n"
    with open(os.path.join(RESULTS, "scale.md"), "w") as f:
        f.write(text)
    with open(os.path.join(RESULTS, "scale-explain.txt"), "w") as f:
        f.write("\n".join(explain))
    print(text)


if __name__ == "__main__":
    main()
