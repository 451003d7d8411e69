"""test_admin.py — the admin console: PgBouncer-compatible SHOW columns (checked against a real PgBouncer 1.18), values
against known workloads, access control, PAUSE/RESUME/KILL/RECONNECT/RELOAD/SET/SHUTDOWN and the slow-query log."""

import re
import threading
import time
from contextlib import closing

import psycopg2
import pytest

import harness
from harness import PASSWORDS, Pooler, Target, wait_until, wire_login_error

pytestmark = pytest.mark.usefixtures("pg")

# SHOW commands PgBouncer 1.18 and parley both answer (SHOW STATE is newer than 1.18).
COMMON_SHOW = ["STATS", "STATS_TOTALS", "STATS_AVERAGES", "TOTALS", "POOLS", "CLIENTS", "SERVERS", "DATABASES",
               "USERS", "CONFIG", "LISTS", "MEM", "VERSION"]


def console(pooler, user="postgres", dbname="pgbouncer"):
    """A psycopg2 connection to the admin console (psycopg2 sends simple-protocol queries, as the console needs),
    wrapped in closing() for `with` (psycopg2's own `with connection` would send BEGIN)."""
    conn = psycopg2.connect(host=pooler.host, port=pooler.port, user=user, dbname=dbname,
                            password=PASSWORDS[user], connect_timeout=10, sslmode="disable")
    conn.autocommit = True
    return closing(conn)


def show(conn, what, types=None):
    """(column names, rows as dicts) of SHOW what; types, if a dict, receives {column: type oid}."""
    with conn.cursor() as cur:
        cur.execute(f"SHOW {what}")
        cols = [d[0] for d in cur.description]
        if types is not None:
            types.update((d[0], d[1]) for d in cur.description)
        return cols, [dict(zip(cols, r)) for r in cur.fetchall()]


def admin_cmd(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.statusmessage


def is_subsequence(small, big):
    it = iter(big)
    return all(any(x == y for y in it) for x in small)


def pool_row(conn, db="parlant", user="app_md5"):
    _, rows = show(conn, "POOLS")
    for r in rows:
        if r["database"] == db and r["user"] == user:
            return r
    return None


def stats_row(conn, what="STATS", db="parlant"):
    _, rows = show(conn, what)
    return next((r for r in rows if r["database"] == db), None)


# ---------------------------------------------------------------------------------------------------------------


def test_show_columns_include_pgbouncer_1_18_columns_in_its_order(parley, pg, tmp_base, target):
    if target != "parley":
        pytest.skip("compares parley with PgBouncer")
    p = parley()
    bt = Target.__new__(Target)
    bt.name, bt.binary, bt.as_pg = "pgbouncer", harness.PGBOUNCER, True
    bouncer = Pooler(bt, pg, harness.make_owned_dir(tmp_base, "pgbouncer-ref-"))
    bouncer.start()
    try:
        # a pool, a client and a server on both, so every list has rows
        with p.connect() as a, bouncer.connect() as b:
            a.execute("SELECT 1")
            b.execute("SELECT 1")
            with console(p) as pc, console(bouncer) as bc:
                for cmd in COMMON_SHOW:
                    ptypes, btypes = {}, {}
                    pcols, prows = show(pc, cmd, ptypes)
                    bcols, brows = show(bc, cmd, btypes)
                    assert is_subsequence(bcols, pcols), \
                        f"SHOW {cmd}: PgBouncer's columns {bcols} are not all in parley's {pcols} in that order"
                    # same wire types (text, int4, numeric), so drivers hand scripts the same Python types
                    wrong = {c: (ptypes[c], btypes[c]) for c in bcols if ptypes[c] != btypes[c]}
                    assert not wrong, f"SHOW {cmd}: column types (parley, PgBouncer) differ: {wrong}"
                    if cmd in ("LISTS", "TOTALS"):
                        names = {r[bcols[0]] for r in prows}
                        missing = [r[bcols[0]] for r in brows if r[bcols[0]] not in names]
                        assert not missing, f"SHOW {cmd}: rows {missing} of PgBouncer are missing in parley"
                    if cmd == "CONFIG":
                        keys = {r["key"] for r in prows}
                        for k in ("max_client_conn", "default_pool_size", "pool_mode", "listen_port",
                                  "stats_period"):
                            assert k in keys
    finally:
        bouncer.stop()


def test_show_stats_counts_exactly_the_queries_run(parley, target):
    p = parley(pool_mode="transaction")
    n_fast, n_slow = 20, 4
    with console(p) as adm:
        assert stats_row(adm) is None  # no pool yet
        with p.connect() as conn:
            for i in range(n_fast):
                conn.execute("SELECT %s::int", (i,))
            for _ in range(n_slow):
                conn.execute("SELECT pg_sleep(0.05)")
        row = stats_row(adm)
        if target != "parley":
            pytest.skip("PgBouncer 1.18 counts one request more here; the rest is parley's")
        assert int(row["total_query_count"]) == n_fast + n_slow
        assert int(row["total_xact_count"]) == n_fast + n_slow
        if target == "parley":  # newer than PgBouncer 1.18: transaction pooling assigns once per transaction
            assert int(row["total_server_assignment_count"]) == n_fast + n_slow
        # microseconds: four 50 ms sleeps are at least 200000
        assert int(row["total_query_time"]) >= n_slow * 50000
        assert int(row["total_query_time"]) < 60 * 1000000
        assert int(row["total_xact_time"]) >= int(row["total_query_time"]) * 0.5
        assert int(row["total_sent"]) > 0
        tot = stats_row(adm, "STATS_TOTALS")
        assert int(tot["query_count"]) == n_fast + n_slow
        assert int(tot["xact_count"]) == n_fast + n_slow
        totals = dict((r["name"], r["value"]) for r in show(adm, "TOTALS")[1])
        assert int(totals["total_query_count"]) == n_fast + n_slow


def test_show_stats_averages_cover_the_last_stats_period(parley, target):
    if target != "parley":
        pytest.skip("PgBouncer's stats_period minimum and timing differ")
    p = parley(pool_mode="transaction", stats_period=1)
    with console(p) as adm, p.connect() as conn:
        def averages():
            for _ in range(3):
                conn.execute("SELECT pg_sleep(0.06)")
            row = stats_row(adm, "STATS_AVERAGES")
            return row if row and int(row["query_count"]) > 0 and int(row["query_time"]) >= 60000 else None
        row = wait_until(averages, 15, interval=0.2, what="SHOW STATS_AVERAGES to cover the sleeps")
        # per query: about 60 ms (the sleep plus the round trip), in microseconds
        assert 60000 <= int(row["query_time"]) < 2000000
        assert int(row["xact_count"]) >= 1


def test_show_pools_and_metric_show_clients_blocked_on_a_full_pool(parley, target):
    size, extra = 2, 3
    settings = dict(pool_mode="session", default_pool_size=size)
    if target == "parley":
        settings["metrics_port"] = harness.free_port()
    p = parley(**settings)
    holders = [p.connect() for _ in range(size)]
    for h in holders:
        h.execute("SELECT 1")  # session pooling: each holds a server now
    waiters = [p.connect() for _ in range(extra)]
    done = []

    def run(conn):
        conn.execute("SELECT 1")
        done.append(conn)
        conn.close()  # session pooling: give the server to the next waiter

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in waiters]
    try:
        for t in threads:
            t.start()
        with console(p) as adm:
            row = wait_until(lambda: (r := pool_row(adm)) and int(r["cl_waiting"]) == extra and r,
                             10, what=f"{extra} waiting clients in SHOW POOLS")
            assert int(row["sv_active"]) == size
            assert int(row["cl_active"]) == size
            time.sleep(1.1)
            row = pool_row(adm)
            assert int(row["maxwait"]) >= 1 or int(row["maxwait_us"]) > 0
            _, clients = show(adm, "CLIENTS")
            assert sum(1 for c in clients if c["database"] == "parlant" and c["state"] == "waiting") == extra
            if target == "parley":
                assert float(row["utilization"]) == 1.0
                text = scrape(settings["metrics_port"])
                labels = 'database="parlant",user="app_md5"'
                assert metric_value(text, "parley_pool_waiting_clients", labels) == extra
                assert metric_value(text, "parley_client_connections", labels + ',state="waiting"') == extra
                assert metric_value(text, "parley_pool_utilization_ratio", labels) == 1.0
                assert metric_value(text, "parley_pool_max_wait_seconds", labels) >= 1.0
            assert not done
            for h in holders:
                h.close()
            for t in threads:
                t.join(10)
            assert len(done) == extra
            wait_row = stats_row(adm)
            # the waiters waited over a second each, in microseconds
            assert int(wait_row["total_wait_time"]) >= extra * 1000000
            if target == "parley":
                text = scrape(settings["metrics_port"])
                assert metric_value(text, "parley_client_wait_seconds_count", labels) == size + extra
                assert metric_value(text, "parley_client_wait_seconds_bucket", labels + ',le="0.5"') == size
                assert metric_value(text, "parley_client_wait_seconds_bucket", labels + ',le="+Inf"') == size + extra
    finally:
        for c in holders + waiters:
            c.close()


def test_console_access_admin_stats_and_others(parley, target):
    p = parley(admin_users="postgres", stats_users="app_scram")
    # neither admin_users nor stats_users: refused at login with 42501 (PgBouncer 1.18 says 08P01)
    err = wire_login_error(p, "app_md5", PASSWORDS["app_md5"], database="pgbouncer")
    assert err.sqlstate == ("42501" if target == "parley" else "08P01"), err
    # a stats user may SHOW but nothing else
    with console(p, user="app_scram") as st:
        cols, _ = show(st, "POOLS")
        assert "cl_waiting" in cols
        for cmd in ("PAUSE", "RESUME", "RELOAD", "RECONNECT", "SET default_pool_size = 5", "KILL parlant",
                    "SHUTDOWN"):
            with pytest.raises(psycopg2.Error) as ei:
                admin_cmd(st, cmd)
            assert ei.value.pgcode == ("42501" if target == "parley" else "08P01"), (cmd, ei.value)
        if target == "parley":
            with pytest.raises(psycopg2.Error) as ei:
                admin_cmd(st, "CACHE FLUSH")
            assert ei.value.pgcode == "42501"
    # an admin may
    with console(p) as adm:
        assert admin_cmd(adm, "PAUSE") == "PAUSE"
        assert admin_cmd(adm, "RESUME") == "RESUME"
    assert p.running()


def test_console_answers_to_the_parley_name_and_rejects_unknown_commands(parley, target):
    if target != "parley":
        pytest.skip("the parley alias and parley's commands")
    p = parley()
    with console(p, dbname="parley") as adm:
        _, rows = show(adm, "VERSION")
        assert rows[0]["version"].startswith("parley ")
        _, rows = show(adm, "STATE")
        assert {r["key"]: r["value"] for r in rows}["active"] == "yes"
        with pytest.raises(psycopg2.Error) as ei:
            admin_cmd(adm, "SHOW NOSUCHTHING")
        assert ei.value.pgcode == "42601" and "SHOW HELP" in str(ei.value)
        with pytest.raises(psycopg2.Error) as ei:
            admin_cmd(adm, "DROP TABLE t")
        assert ei.value.pgcode == "42601"
        adm.notices.clear()
        admin_cmd(adm, "SHOW HELP")
        assert any("SHOW" in n and "PAUSE" in n for n in adm.notices)
        for what in ("CACHE", "CACHE_TABLES", "SHAPES", "SLOW_QUERIES", "MEM", "LISTS"):
            show(adm, what)


def test_show_clients_servers_databases_users_describe_live_connections(parley, pg, target):
    p = parley(pool_mode="session")
    with p.connect() as conn, console(p) as adm:
        backend_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        _, clients = show(adm, "CLIENTS")
        app = [c for c in clients if c["database"] == "parlant"]
        assert len(app) == 1
        assert app[0]["user"] == "app_md5" and app[0]["addr"] == "127.0.0.1" and app[0]["type"] == "C"
        assert int(app[0]["local_port"]) == p.port
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", app[0]["connect_time"])
        _, servers = show(adm, "SERVERS")
        assert [int(s["remote_pid"]) for s in servers if s["database"] == "parlant"] == [backend_pid]
        assert servers[0]["state"] == "active" and servers[0]["link"] == app[0]["ptr"]
        assert int(servers[0]["port"]) == pg.port
        _, dbs = show(adm, "DATABASES")
        d = next(r for r in dbs if r["name"] == "parlant")
        assert d["host"] == pg.host and int(d["port"]) == pg.port and d["database"] == "parlant"
        assert int(d["current_connections"]) == 1
        _, users = show(adm, "USERS")
        assert any(u["name"] == "app_md5" for u in users)
        if target == "parley":
            u = next(u for u in users if u["name"] == "app_md5")
            assert int(u["current_connections"]) == 1 and int(u["current_client_connections"]) == 1
        lists = {r["list"]: int(r["items"]) for r in show(adm, "LISTS")[1]}
        assert lists["pools"] >= 1 and lists["used_servers"] == 1


def test_pause_waits_for_servers_then_resume_lets_queued_clients_run(parley, pg, target):
    p = parley(pool_mode="transaction")
    with p.connect() as conn, console(p) as adm:
        conn.execute("SELECT 1")
        pg.wait_backends("app_md5", lambda n: n == 1)
        assert admin_cmd(adm, "PAUSE parlant") == "PAUSE"
        pg.wait_backends("app_md5", lambda n: n == 0, what="servers closed by PAUSE")
        if target == "parley":
            assert {r["key"]: r["value"] for r in show(adm, "STATE")[1]}["paused"] == "yes"
        result = []
        t = threading.Thread(target=lambda: result.append(conn.execute("SELECT 42").fetchone()[0]), daemon=True)
        t.start()
        time.sleep(0.7)
        assert not result, "a query ran while the database was paused"
        assert admin_cmd(adm, "RESUME parlant") == "RESUME"
        t.join(10)
        assert result == [42]


def test_pause_blocks_until_a_transaction_finishes(parley, pg, target):
    p = parley(pool_mode="transaction")
    with p.connect(autocommit=False) as conn, console(p) as adm:
        conn.execute("SELECT 1")  # transaction open: its server stays linked
        replied = []
        t = threading.Thread(target=lambda: replied.append(admin_cmd(adm, "PAUSE")), daemon=True)
        t.start()
        time.sleep(0.8)
        assert not replied, "PAUSE returned while a transaction still held a server"
        conn.commit()
        t.join(10)
        assert replied == ["PAUSE"]
        assert pg.backend_count("app_md5") == 0
        admin_cmd(adm, "RESUME")
        assert conn.execute("SELECT 7").fetchone()[0] == 7


def test_reconnect_replaces_server_connections(parley, pg):
    p = parley(pool_mode="transaction")
    with p.connect() as conn, console(p) as adm:
        pid1 = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert admin_cmd(adm, "RECONNECT parlant") == "RECONNECT"
        pid2 = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert pid1 != pid2


def test_kill_drops_clients_and_servers_until_resume(parley, pg):
    p = parley(pool_mode="session")
    conn = p.connect()
    conn.execute("SELECT 1")
    with console(p) as adm:
        assert admin_cmd(adm, "KILL parlant") == "KILL"
        with pytest.raises(Exception):
            conn.execute("SELECT 1")
        pg.wait_backends("app_md5", lambda n: n == 0)
        assert admin_cmd(adm, "RESUME parlant") == "RESUME"
    with p.connect() as fresh:
        assert fresh.execute("SELECT 5").fetchone()[0] == 5
    conn.close()


def test_set_and_reload_change_settings(parley, target):
    p = parley(default_pool_size=20)
    with console(p) as adm:
        assert admin_cmd(adm, "SET default_pool_size = 7").startswith("SET")
        cfg = {r["key"]: r for r in show(adm, "CONFIG")[1]}
        assert cfg["default_pool_size"]["value"] == "7"
        assert cfg["default_pool_size"]["changeable"] == "yes"
        with pytest.raises(psycopg2.Error) as ei:
            admin_cmd(adm, "SET default_pool_size = lots")
        if target == "parley":
            assert "default_pool_size" in str(ei.value)
        with pytest.raises(psycopg2.Error):
            admin_cmd(adm, "SET no_such_setting = 1")
        p.write_config(default_pool_size=9)
        assert admin_cmd(adm, "RELOAD") == "RELOAD"
        cfg = {r["key"]: r for r in show(adm, "CONFIG")[1]}
        assert cfg["default_pool_size"]["value"] == "9"


def test_shutdown_stops_the_process(parley):
    p = parley()
    p.expected_exit = True
    adm = console(p).thing
    try:
        admin_cmd(adm, "SHUTDOWN")
    except psycopg2.Error:
        pass  # the reply may race with the close
    assert p.wait_exit(10) is not None
    adm.close()


def test_slow_query_in_log_console_and_metric_without_literals(parley, target):
    if target != "parley":
        pytest.skip("parley's slow-query log")
    port = harness.free_port()
    p = parley(pool_mode="transaction", slow_query_threshold="0.5", metrics_port=port)
    with p.connect() as conn:
        conn.execute("SELECT 1")
        conn.execute("SELECT pg_sleep(0.7)")
    with console(p) as adm:
        _, rows = show(adm, "SLOW_QUERIES")
    assert len(rows) == 1, rows
    r = rows[0]
    assert "pg_sleep" in r["query"] and "0.7" not in r["query"]
    assert 700000 <= int(r["duration"]) < 5000000
    assert r["database"] == "parlant" and r["user"] == "app_md5" and r["client_addr"] == "127.0.0.1"
    log = harness.read_text(p.log_path)
    lines = [ln for ln in log.splitlines() if "slow query" in ln]
    # the literal must not be logged; the line's own timestamp ("date time pid ...") may contain the digits
    assert len(lines) == 1 and "pg_sleep" in lines[0] and "0.7" not in lines[0].split(" ", 3)[3], lines
    assert r["shape_id"] in lines[0]
    text = scrape(port)
    assert metric_value(text, "parley_slow_queries_total", f'shape="{r["shape_id"]}"') == 1
    assert metric_value(text, "parley_slow_queries_by_pool_total", 'database="parlant",user="app_md5"') == 1


# ---------------------------------------------------------------------------------------------------------------
# small metrics helpers shared with test_metrics.py


def scrape(port, path="/metrics"):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.read().decode()


def metric_value(text, name, labels=None):
    """The value of the sample name{labels...} (labels: a comma-separated subset, in the order written), or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        if labels and not all(part in (m.group(3) or "") for part in labels.split(",")):
            continue
        return float(m.group(4))
    return None
