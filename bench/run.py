#!/usr/bin/env python3
"""Aether benchmark: the same requests sent directly to the mock upstream, through Aether, and
through nginx (when installed) proxying to the same mock, in one run on one machine.

Reports requests/s, p50/p99 latency, CPU time per request of the proxy process (Aether or
nginx), Aether's idle and peak RSS, and the ratios. Needs `wrk` and release builds of
`aether` and `aether-mock` (bench/run.sh builds them). Loopback only; every process it starts
is stopped at the end.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
AETHER = os.path.join(TARGET, "release", "aether")
MOCK = os.path.join(TARGET, "release", "aether-mock")
DURATION = int(os.environ.get("BENCH_SECONDS", "10"))
CONNS = int(os.environ.get("BENCH_CONNECTIONS", "50"))
TICK = os.sysconf("SC_CLK_TCK")
UPSTREAM_KEY = "sk-bench-upstream"
MODEL = "claude-sonnet-4-5"

procs = []


def start(cmd, env=None, marker="listening on "):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    procs.append(p)
    deadline = time.time() + 60
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            raise SystemExit(f"{cmd[0]} exited before it listened")
        if marker in line:
            return p, line.strip().split(marker, 1)[1]
    raise SystemExit(f"{cmd[0]} did not start")


def stop_all():
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def call(method, url, token=None, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICK


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def lua(path, headers, body_file):
    script = ["wrk.method = \"POST\"", f"local f = io.open({json.dumps(body_file)}, \"rb\")",
              "wrk.body = f:read(\"*a\")", "f:close()"]
    for k, v in headers.items():
        script.append(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}")
    fd, name = tempfile.mkstemp(suffix=".lua")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(script) + "\n")
    return name


def wrk(url, script):
    out = subprocess.run(["wrk", "-t2", f"-c{CONNS}", f"-d{DURATION}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    return {"rps": rps, "requests": total, "p50": pct(50), "p99": pct(99),
            "errors": int(errors.group(1)) if errors else 0, "socket_errors": sock.group(1) if sock else ""}


def main():
    for tool in [AETHER, MOCK]:
        if not os.path.exists(tool):
            raise SystemExit(f"missing {tool}: run bench/run.sh (it builds the release binaries)")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is required (apt-get install wrk)")
    work = tempfile.mkdtemp(prefix="aether-bench-")
    try:
        _, mock_url = start([MOCK, "--listen", "127.0.0.1:0", "--no-record"])
        env = dict(os.environ, AETHER_ADMIN_EMAIL="bench@example.com", AETHER_ADMIN_PASSWORD="bench-password-1",
                   AETHER_LOG="warn")
        aether, gw_url = start([AETHER, "serve", "--listen", "127.0.0.1:0", "--data-dir", work], env=env,
                               marker="aether listening on ")
        token = call("POST", gw_url + "/api/auth/login", body={"email": "bench@example.com", "password": "bench-password-1"})["access_token"]
        g = call("POST", gw_url + "/api/admin/models/global", token, {
            "name": MODEL, "default_tiered_pricing": {"tiers": [{"up_to": None, "input_per_m": "3", "output_per_m": "15"}]}})
        p = call("POST", gw_url + "/api/admin/providers", token, {"name": "mock"})
        e = call("POST", f"{gw_url}/api/admin/endpoints/providers/{p['id']}/endpoints", token,
                 {"api_format": "CLAUDE_CLI", "base_url": mock_url, "timeout": 60})
        call("POST", f"{gw_url}/api/admin/endpoints/{e['id']}/keys", token, {"api_key": UPSTREAM_KEY, "name": "bench"})
        call("POST", f"{gw_url}/api/admin/providers/{p['id']}/models", token,
             {"global_model_id": g["id"], "provider_model_name": MODEL})
        u = call("POST", gw_url + "/api/admin/users", token, {"email": "load@example.com", "password": "load-password-1", "quota_usd": None})
        gw_key = call("POST", f"{gw_url}/api/admin/users/{u['id']}/api-keys", token, {"name": "load"})["key"]
        # Idle memory of a configured gateway: restart it (the configuration is in its
        # database) so set-up work — password hashing above all — does not count.
        aether.send_signal(signal.SIGTERM)
        aether.wait(timeout=30)
        aether, gw_url = start([AETHER, "serve", "--listen", gw_url.split("//")[1], "--data-dir", work], env=env,
                               marker="aether listening on ")
        time.sleep(2)
        idle_rss = status_kb(aether.pid, "VmRSS")

        nginx_pids, nginx_url = [], None
        if shutil.which("nginx"):
            port = 18000 + os.getpid() % 1000
            conf = os.path.join(work, "nginx.conf")
            with open(conf, "w") as f:
                f.write(f"""worker_processes 2; daemon off; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; client_body_temp_path {work}; proxy_temp_path {work};
  upstream mock {{ server {mock_url.split('//')[1]}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port}; client_max_body_size 1m; client_body_buffer_size 1m;
    location / {{ proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffering off; }} }} }}
""")
            ng = subprocess.Popen(["nginx", "-c", conf], stderr=subprocess.DEVNULL)
            procs.append(ng)
            time.sleep(1)
            nginx_url = f"http://127.0.0.1:{port}"
            master = int(open(os.path.join(work, "nginx.pid")).read())
            workers = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
            nginx_pids = [master] + [int(x) for x in workers]

        capture = json.load(open(os.path.join(ROOT, "fixtures", "clients", "claude-code-2.1.328.messages.json")))
        bodies = {
            "small": {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": "Hello there"}]},
            "small-stream": {"model": MODEL, "max_tokens": 256, "stream": True, "messages": [{"role": "user", "content": "Hello there"}]},
            "claude-code-87k": capture["body"],
        }
        only = os.environ.get("BENCH_SCENARIOS")
        if only:
            bodies = {k: v for k, v in bodies.items() if k in only.split(",")}
        rows = []
        for name, body in bodies.items():
            body_file = os.path.join(work, f"{name}.json")
            with open(body_file, "w") as f:
                json.dump(body, f)
            size = os.path.getsize(body_file)
            base = {"anthropic-version": "2023-06-01", "content-type": "application/json", "x-app": "cli"}
            path = "/v1/messages" + ("?beta=true" if name == "claude-code-87k" else "")
            targets = [("direct", mock_url, dict(base, **{"authorization": f"Bearer {UPSTREAM_KEY}"}), [])]
            if nginx_url:
                targets.append(("nginx", nginx_url, dict(base, **{"authorization": f"Bearer {UPSTREAM_KEY}"}), nginx_pids))
            targets.append(("aether", gw_url, dict(base, **{"x-api-key": gw_key}), [aether.pid]))
            for label, url, headers, pids in targets:
                script = lua(path, headers, body_file)
                wrk(url + path, script)  # warm-up
                before = cpu_seconds(pids) if pids else 0
                perf = None
                if label == "aether" and os.environ.get("BENCH_PERF"):
                    # Developer aid: BENCH_PERF=DIR records a CPU profile of Aether per scenario.
                    perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "1999", "-g", "-p",
                                             str(aether.pid), "-o", os.path.join(os.environ["BENCH_PERF"], f"{name}.data")],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                r = wrk(url + path, script)
                after = cpu_seconds(pids) if pids else 0
                if perf:
                    perf.send_signal(signal.SIGINT)
                    perf.wait(timeout=60)
                r.update(scenario=name, target=label, bytes=size,
                         cpu_us=(after - before) / max(r["requests"], 1) * 1e6 if pids else None)
                rows.append(r)
                os.unlink(script)
        peak_rss = status_kb(aether.pid, "VmHWM")
    finally:
        stop_all()
        shutil.rmtree(work, ignore_errors=True)

    lines = [f"Load: wrk, 2 threads, {CONNS} connections, {DURATION} s per run, after a warm-up run; "
             f"{os.cpu_count()} CPUs shared by wrk, the mock and the proxy.", "",
             "| scenario | target | req/s | p50 ms | p99 ms | proxy CPU µs/req | non-2xx |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        cpu = f"{r['cpu_us']:.1f}" if r["cpu_us"] is not None else "–"
        lines.append(f"| {r['scenario']} ({r['bytes']} B) | {r['target']} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {cpu} | {r['errors']} |")
    lines += ["", "| scenario | Aether/direct req/s | Aether/nginx req/s | Aether/nginx CPU per request |", "|---|---:|---:|---:|"]
    for name in bodies:
        by = {r["target"]: r for r in rows if r["scenario"] == name}
        a, d, n = by["aether"], by["direct"], by.get("nginx")
        lines.append(f"| {name} | {a['rps'] / d['rps']:.2f} | "
                     + (f"{a['rps'] / n['rps']:.2f} | {a['cpu_us'] / n['cpu_us']:.2f} |" if n else "– | – |"))
    lines += ["", f"Aether RSS: idle {idle_rss / 1024:.1f} MB, peak {peak_rss / 1024:.1f} MB."]
    report = "\n".join(lines)
    print(report)
    if os.environ.get("BENCH_SCENARIOS"):
        return  # a partial run does not replace the recorded results
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "latest.md"), "w") as f:
        f.write(report + "\n")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
