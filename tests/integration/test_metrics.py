"""test_metrics.py — the Prometheus endpoint (checked by promtool and scraped by a real Prometheus server), /healthz,
robustness against bad HTTP clients, the contrib alert rules and Grafana dashboard, and the utilization watchdog."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

import harness
from harness import wait_until
from test_admin import metric_value, scrape

PROMTOOL = "/usr/bin/promtool"
PROMETHEUS = "/usr/bin/prometheus"
RULES = os.path.join(harness.SRCDIR, "contrib", "prometheus", "parley-rules.yml")
RULES_TEST = os.path.join(harness.SRCDIR, "contrib", "prometheus", "parley-rules.test.yml")
DASHBOARD = os.path.join(harness.SRCDIR, "contrib", "grafana", "parley.json")


@pytest.fixture(autouse=True)
def parley_only(target):
    if target != "parley":
        pytest.skip("parley's Prometheus endpoint")


def need(path):
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: install Debian's prometheus package (scripts/install-deps.sh)")


def families(text):
    """{family: (help, type)} and the list of sample names of an exposition."""
    helps, types, samples = {}, {}, []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, h = line[7:].partition(" ")
            helps[name] = h
        elif line.startswith("# TYPE "):
            name, _, t = line[7:].partition(" ")
            types[name] = t
        elif line and not line.startswith("#"):
            samples.append(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return helps, types, samples


def family_of(sample, types):
    for suffix in ("_bucket", "_sum", "_count", ""):
        if sample.endswith(suffix) and sample[: len(sample) - len(suffix)] in types:
            return sample[: len(sample) - len(suffix)]
    return None


def workload(p, n=10):
    with p.connect() as conn:
        for i in range(n):
            conn.execute("SELECT v FROM t WHERE id = %s", (i % 10 + 1,))


def test_metrics_pass_promtool_and_have_help_type_and_units(parley):
    need(PROMTOOL)
    port = harness.free_port()
    p = parley(pool_mode="transaction", metrics_port=port, slow_query_threshold="0.2")
    workload(p)
    with p.connect() as conn:
        conn.execute("SELECT pg_sleep(0.25)")
    text = scrape(port)
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert r.returncode == 0, (r.stdout.decode() + r.stderr.decode(), text)
    helps, types, samples = families(text)
    assert set(helps) == set(types)
    for s in samples:
        fam = family_of(s, types)
        assert fam, f"sample {s} has no HELP/TYPE"
        if types[fam] == "counter":
            assert fam.endswith("_total"), fam
    for name in ("parley_client_connections", "parley_server_connections", "parley_pool_utilization_ratio",
                 "parley_pool_waiting_clients", "parley_pool_max_wait_seconds", "parley_client_wait_seconds",
                 "parley_transactions_total", "parley_queries_total", "parley_query_duration_seconds",
                 "parley_slow_queries_total", "parley_received_bytes_total", "parley_sent_bytes_total",
                 "parley_cache_entries", "parley_cache_bytes", "parley_cache_hits_total", "parley_cache_misses_total",
                 "parley_cache_evictions_total", "parley_cache_table_invalidations_total",
                 "parley_config_max_client_conn", "parley_build_info", "parley_uptime_seconds"):
        assert name in types, f"{name} missing"
    assert types["parley_client_wait_seconds"] == "histogram"
    assert types["parley_query_duration_seconds"] == "histogram"


def test_metric_values_match_a_known_workload(parley):
    port = harness.free_port()
    p = parley(pool_mode="transaction", metrics_port=port, default_pool_size=3, max_client_conn=77)
    n = 12
    workload(p, n)
    text = scrape(port)
    labels = 'database="parlant",user="app_md5"'
    assert metric_value(text, "parley_queries_total", labels) == n
    assert metric_value(text, "parley_transactions_total", labels) == n
    assert metric_value(text, "parley_server_assignments_total", labels) == n
    assert metric_value(text, "parley_pool_size", labels) == 3
    assert metric_value(text, "parley_config_max_client_conn") == 77
    assert metric_value(text, "parley_sent_bytes_total", labels) > 0
    assert metric_value(text, "parley_server_connections", labels + ',state="idle"') == 1
    assert metric_value(text, "parley_build_info") == 1
    assert metric_value(text, "parley_uptime_seconds") > 0
    # every request of the workload is in the duration histograms: +Inf buckets sum to n
    total = sum(float(m.group(1)) for m in re.finditer(
        r'^parley_query_duration_seconds_bucket\{shape="[^"]+",le="\+Inf"\} (\S+)$', text, re.M))
    assert total == n


def test_shapes_beyond_the_top_fold_into_other(parley):
    port = harness.free_port()
    p = parley(pool_mode="transaction", metrics_port=port)
    distinct = 30
    with p.connect() as conn:
        for i in range(distinct):
            conn.execute(f"SELECT 1 AS col_{chr(97 + i % 26)}{chr(97 + i // 26)}")  # names, not literals
    text = scrape(port)
    shapes = set(re.findall(r'^parley_query_duration_seconds_count\{shape="([^"]+)"\}', text, re.M))
    assert "other" in shapes
    assert len(shapes) <= 21  # STATS_TOP_SHAPES plus "other"
    assert metric_value(text, "parley_query_duration_seconds_count", 'shape="other"') >= distinct - 20


def test_healthz_and_unknown_paths(parley):
    port = harness.free_port()
    parley(metrics_port=port)
    assert scrape(port, "/healthz") == "ok\n"
    with pytest.raises(urllib.error.HTTPError) as ei:
        scrape(port, "/nothing-here")
    assert ei.value.code == 404
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=10)
    assert ei.value.code in (400, 405, 501)


def test_garbage_and_silent_http_clients_cannot_hang_parley(parley):
    port = harness.free_port()
    p = parley(metrics_port=port)
    silent = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(5)]
    garbage = socket.create_connection(("127.0.0.1", port), timeout=20)
    garbage.sendall(os.urandom(4096) + b"\r\n\r\n")
    huge = socket.create_connection(("127.0.0.1", port), timeout=20)
    huge.sendall(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n")
    # parley keeps serving both protocols meanwhile
    t0 = time.monotonic()
    assert "parley_build_info" in scrape(port)
    with p.connect() as conn:
        assert conn.execute("SELECT 3").fetchone()[0] == 3
    assert time.monotonic() - t0 < 5
    for s in (garbage, huge):
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        assert data == b"" or data.startswith(b"HTTP/1.1 4"), data[:200]
        s.close()
    for s in silent:  # test_silent_http_client_is_disconnected_by_timeout checks that parley closes these
        s.close()
    assert p.running()
    assert "parley_build_info" in scrape(port)


def test_silent_http_client_is_disconnected_by_timeout(parley):
    port = harness.free_port()
    parley(metrics_port=port)
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    t0 = time.monotonic()
    assert s.recv(100) == b""
    assert time.monotonic() - t0 < 15
    s.close()


def test_metrics_listener_moves_on_reload(parley):
    port1, port2 = harness.free_port(), harness.free_port()
    p = parley(metrics_port=port1)
    assert "parley_build_info" in scrape(port1)
    p.write_config(metrics_port=port2)
    p.reload()
    wait_until(lambda: harness.port_accepts("127.0.0.1", port2), 10, what="metrics on the new port")
    assert "parley_build_info" in scrape(port2)
    assert not harness.port_accepts("127.0.0.1", port1)


def test_prometheus_server_scrapes_parley(parley, tmp_base):
    need(PROMETHEUS)
    mport, pport = harness.free_port(), harness.free_port()
    p = parley(metrics_port=mport)
    workload(p, 3)
    d = harness.make_owned_dir(tmp_base, "prometheus-")
    with open(os.path.join(d, "prometheus.yml"), "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {RULES}
scrape_configs:
  - job_name: parley
    static_configs:
      - targets: ['127.0.0.1:{mport}']
""")
    log = open(os.path.join(d, "prometheus.log"), "wb")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/data",
                             f"--web.listen-address=127.0.0.1:{pport}"], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=d, start_new_session=True)
    try:
        def api(path):
            with urllib.request.urlopen(f"http://127.0.0.1:{pport}{path}", timeout=5) as r:
                return json.load(r)

        def target_up():
            try:
                ts = api("/api/v1/targets")["data"]["activeTargets"]
            except OSError:
                return False
            return any(t["health"] == "up" and t["scrapeUrl"].endswith(f":{mport}/metrics") for t in ts)

        wait_until(target_up, 60, interval=0.5, what="Prometheus to report parley up")

        def queried():
            res = api("/api/v1/query?query=parley_queries_total")["data"]["result"]
            return res if res else None

        res = wait_until(queried, 30, interval=0.5, what="parley_queries_total in Prometheus")
        assert res[0]["metric"]["database"] == "parlant" and float(res[0]["value"][1]) == 3
        rules = api("/api/v1/rules")["data"]["groups"]
        assert sum(len(g["rules"]) for g in rules) >= 4
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
        shutil.rmtree(d, ignore_errors=True)


def test_alert_rules_pass_promtool_check_and_unit_tests():
    need(PROMTOOL)
    r = subprocess.run([PROMTOOL, "check", "rules", RULES], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    r = subprocess.run([PROMTOOL, "test", "rules", RULES_TEST], capture_output=True, timeout=60,
                       cwd=os.path.dirname(RULES_TEST))
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_grafana_dashboard_uses_only_exported_metrics(parley):
    port = harness.free_port()
    parley(metrics_port=port)
    _, types, _ = families(scrape(port))
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = []

    def walk(o):
        if isinstance(o, dict):
            if isinstance(o.get("expr"), str):
                exprs.append(o["expr"])
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(dash)
    assert len(exprs) >= 8
    used = {n for e in exprs for n in re.findall(r"\b(parley_[a-z_]+)", e)}
    unknown = sorted(n for n in used if not family_of(n, types))
    assert not unknown, f"dashboard uses metrics parley does not export: {unknown}"


def test_watchdog_warns_once_per_period_about_a_full_pool(parley):
    p = parley(pool_mode="session", default_pool_size=2, stats_period=1, pool_utilization_warn="0.5")
    holders = [p.connect() for _ in range(2)]
    waiter = p.connect()
    try:
        for h in holders:
            h.execute("SELECT 1")
        t = threading.Thread(target=lambda: waiter.execute("SELECT 1"), daemon=True)
        t.start()
        time.sleep(3.6)
        lines = [ln for ln in harness.read_text(p.log_path).splitlines() if "utilization" in ln and "parlant" in ln]
        assert 2 <= len(lines) <= 5, lines
        assert "utilization 1.00" in lines[-1] and "1 client waiting" in lines[-1], lines[-1]
    finally:
        for h in holders:
            h.close()
        t.join(10)
        waiter.close()
